/* test_jsonschema.c: the JSON Schema validator against the official JSON-Schema-Test-Suite
 * (Debian package json-schema-test-suite, draft 7: every keyword file we claim, each at 100 %)
 * and our own cases for what draft 7 lacks ($defs, prefixItems, uuid) and for error paths. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cjson/cJSON.h>

#include "jsonschema.h"

#define SUITE    "/usr/share/json-schema-test-suite"
#define META_DIR "/usr/lib/python3/dist-packages/jsonschema/schemas"

/* The keyword files of draft 7 we claim to support, every case of each must pass. */
static const char *const claimed[] = {
    "additionalItems",
    "additionalProperties",
    "allOf",
    "anyOf",
    "boolean_schema",
    "const",
    "contains",
    "default",
    "definitions",
    "dependencies",
    "enum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "if-then-else",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "multipleOf",
    "not",
    "oneOf",
    "pattern",
    "patternProperties",
    "properties",
    "propertyNames",
    "ref",
    "refRemote",
    "required",
    "type",
    "uniqueItems",
    "optional/format/date-time",
    "optional/format/date",
    "optional/format/time",
    "optional/format/email",
    "optional/format/ipv4",
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n)
        n = 0;
    s[n] = '\0';
    fclose(f);
    return s;
}

static cJSON *load(const char *path)
{
    char *s = slurp(path);
    cJSON *j = s ? cJSON_Parse(s) : NULL;

    free(s);
    return j;
}

/* The suite's remotes (served at http://localhost:1234/ by its own runners) and the draft-07
 * meta-schema, as documents the validator can resolve. */
struct remotes {
    cJSON *docs[16];
    char uris[16][256];
    int n;
};

static void add_remote(struct remotes *r, const char *file, const char *uri)
{
    cJSON *d = load(file);

    if (!d || r->n == 16) {
        cJSON_Delete(d);
        return;
    }
    r->docs[r->n] = d;
    snprintf(r->uris[r->n++], 256, "%s", uri);
}

static void remotes_load(struct remotes *r)
{
    memset(r, 0, sizeof(*r));
    add_remote(r, SUITE "/remotes/integer.json", "http://localhost:1234/integer.json");
    add_remote(r, SUITE "/remotes/subSchemas.json", "http://localhost:1234/subSchemas.json");
    add_remote(r, SUITE "/remotes/name.json", "http://localhost:1234/name.json");
    add_remote(r, SUITE "/remotes/folder/folderInteger.json",
               "http://localhost:1234/folder/folderInteger.json");
    add_remote(r, META_DIR "/draft7.json", "http://json-schema.org/draft-07/schema");
}

static void remotes_free(struct remotes *r)
{
    for (int i = 0; i < r->n; i++)
        cJSON_Delete(r->docs[i]);
}

/* Runs one suite file; returns the number of failing cases and prints each. */
static int run_file(const char *name, const struct remotes *rem, int *total)
{
    char path[512];
    cJSON *groups;
    const cJSON *g;
    int failed = 0;

    snprintf(path, sizeof(path), SUITE "/tests/draft7/%s.json", name);
    groups = load(path);
    if (!groups) {
        print_error("cannot read %s (is json-schema-test-suite installed?)\n", path);
        *total += 1;
        return 1;
    }
    cJSON_ArrayForEach(g, groups)
    {
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(g, "schema");
        const cJSON *tests = cJSON_GetObjectItemCaseSensitive(g, "tests");
        const cJSON *t;
        char err[128];
        struct jsonschema *s = jsonschema_create(schema, err, sizeof(err));

        assert_non_null(s);
        for (int i = 0; i < rem->n; i++)
            jsonschema_add_document(s, rem->uris[i], rem->docs[i]);
        cJSON_ArrayForEach(t, tests)
        {
            const cJSON *data = cJSON_GetObjectItemCaseSensitive(t, "data");
            bool want = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "valid"));
            struct jsonschema_error e[1];
            int n = jsonschema_validate(s, data, e, 1);

            (*total)++;
            if ((n == 0) != want) {
                failed++;
                print_message("FAIL %s: %s / %s: expected %s, got %d error(s)%s%s\n", name,
                              cJSON_GetObjectItemCaseSensitive(g, "description")->valuestring,
                              cJSON_GetObjectItemCaseSensitive(t, "description")->valuestring,
                              want ? "valid" : "invalid", n, n ? ": " : "", n ? e[0].message : "");
            }
        }
        jsonschema_destroy(s);
    }
    cJSON_Delete(groups);
    return failed;
}

static void test_suite_draft7(void **state)
{
    struct remotes rem;
    int total_failed = 0, total = 0;

    (void)state;
    remotes_load(&rem);
    assert_int_equal(rem.n, 5);
    for (size_t i = 0; i < sizeof(claimed) / sizeof(claimed[0]); i++) {
        int n = 0;
        int f = run_file(claimed[i], &rem, &n);

        print_message("  %-28s %3d/%3d\n", claimed[i], n - f, n);
        total_failed += f;
        total += n;
    }
    print_message("  draft7 claimed keywords: %d/%d cases pass\n", total - total_failed, total);
    assert_true(total > 400);
    assert_int_equal(total_failed, 0);
    remotes_free(&rem);
}

/* Validates text against a schema text; returns the error count, first message in msg. */
static int check(const char *schema_text, const char *data_text, char *path, char *msg)
{
    cJSON *schema = cJSON_Parse(schema_text);
    cJSON *data = cJSON_Parse(data_text);
    char err[128];
    struct jsonschema *s;
    struct jsonschema_error e[2];
    int n;

    assert_non_null(schema);
    assert_non_null(data);
    s = jsonschema_create(schema, err, sizeof(err));
    assert_non_null(s);
    memset(e, 0, sizeof(e));
    n = jsonschema_validate(s, data, e, 2);
    if (path)
        snprintf(path, 192, "%s", e[0].path);
    if (msg)
        snprintf(msg, 256, "%s", e[0].message);
    jsonschema_destroy(s);
    cJSON_Delete(schema);
    cJSON_Delete(data);
    return n;
}

static void test_defs_and_prefix_items(void **state)
{
    const char *schema = "{\"$defs\":{\"p\":{\"type\":\"object\",\"required\":[\"x\"]}},"
                         "\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},"
                         "{\"$ref\":\"#/$defs/p\"}],\"items\":false}";
    char path[192], msg[256];

    (void)state;
    assert_int_equal(check(schema, "[\"a\",{\"x\":1}]", NULL, NULL), 0);
    assert_int_equal(check(schema, "[\"a\",{\"y\":1}]", path, msg), 1);
    assert_string_equal(path, "$[1]");
    assert_non_null(strstr(msg, "'x'"));
    /* items false after the prefix: a third item is refused */
    assert_int_equal(check(schema, "[\"a\",{\"x\":1},3]", path, NULL), 1);
    assert_string_equal(path, "$[2]");
}

static void test_formats(void **state)
{
    (void)state;
    assert_true(jsonschema_format_ok("uuid", "123e4567-e89b-12d3-a456-426614174000"));
    assert_false(jsonschema_format_ok("uuid", "123e4567-e89b-12d3-a456-42661417400"));
    assert_false(jsonschema_format_ok("uuid", "123e4567e89b12d3a456426614174000"));
    assert_true(jsonschema_format_ok("date-time", "2024-02-29T23:59:60Z"));
    assert_false(jsonschema_format_ok("date-time", "2023-02-29T10:00:00Z"));
    assert_false(jsonschema_format_ok("email", "a b@example.com"));
    assert_false(jsonschema_format_ok("email", ".a@example.com"));
    assert_true(jsonschema_format_ok("unknown-format", "anything"));
}

static void test_error_paths_and_recursion(void **state)
{
    char path[192], msg[256];

    (void)state;
    assert_int_equal(
        check("{\"properties\":{\"a\":{\"properties\":{\"b\":{\"type\":\"integer\"}}}}}",
              "{\"a\":{\"b\":\"x\"}}", path, msg),
        1);
    assert_string_equal(path, "$.a.b");
    assert_non_null(strstr(msg, "expected integer"));
    /* a schema that refers to itself without consuming the instance is stopped, not looped */
    assert_true(check("{\"$ref\":\"#\"}", "1", NULL, msg) >= 1);
    assert_non_null(strstr(msg, "deeper"));
    /* an unresolvable $ref is an error, not a pass */
    assert_int_equal(check("{\"$ref\":\"#/definitions/none\"}", "1", NULL, msg), 1);
    assert_non_null(strstr(msg, "cannot resolve"));
    /* recursive data structures validate to any depth within the limit */
    assert_int_equal(check("{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#\"}}}",
                           "{\"next\":{\"next\":{\"next\":{}}}}", NULL, NULL),
                     0);
}

static void test_not_a_schema(void **state)
{
    char err[128];
    cJSON *j = cJSON_Parse("[1,2]");

    (void)state;
    assert_null(jsonschema_create(j, err, sizeof(err)));
    assert_non_null(strstr(err, "object or a boolean"));
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_draft7), cmocka_unit_test(test_defs_and_prefix_items),
        cmocka_unit_test(test_formats),      cmocka_unit_test(test_error_paths_and_recursion),
        cmocka_unit_test(test_not_a_schema),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
