/* test_eval_dataset.c: unit tests of the evaluation dataset reader: our layout, the GSM8K,
 * MATH and multiple-choice layouts, malformed lines with their line numbers, --strict, JSON
 * arrays, --limit and --shard. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../eval/dataset.c"

static int group_setup(void **state)
{
    (void)state;
    return answer_init();
}

static int group_teardown(void **state)
{
    (void)state;
    answer_cleanup();
    return 0;
}

/* Reads a fixture, expecting no malformed line. */
static void read_file(const char *path, struct dataset *ds)
{
    FILE *f = fopen(path, "rb");
    char *errs = NULL;
    size_t errs_len = 0;
    FILE *e = open_memstream(&errs, &errs_len);

    assert_non_null(f);
    assert_int_equal(dataset_read(f, path, true, e, ds), 0);
    fclose(e);
    if (errs_len)
        fprintf(stderr, "unexpected: %s", errs);
    assert_int_equal(errs_len, 0);
    free(errs);
    fclose(f);
}

/* Parses one line; asserts it parses and returns the item (caller cleans up). */
static struct item parse_ok(const char *json)
{
    struct item it;
    char why[256] = "";

    if (dataset_parse_item(json, strlen(json), 7, &it, why, sizeof(why)) != 0)
        fprintf(stderr, "%s: %s\n", json, why);
    assert_string_equal(why, "");
    return it;
}

static void parse_bad(const char *json, const char *reason_part)
{
    struct item it;
    char why[256] = "";

    assert_int_equal(dataset_parse_item(json, strlen(json), 7, &it, why, sizeof(why)), -1);
    if (!strstr(why, reason_part))
        fprintf(stderr, "reason '%s' lacks '%s'\n", why, reason_part);
    assert_non_null(strstr(why, reason_part));
    assert_null(it.id);
}

static void test_native(void **state)
{
    struct item it;

    (void)state;
    it = parse_ok("{\"id\":\"q1\",\"question\":\"What is 2+2?\",\"answer\":4}");
    assert_string_equal(it.id, "q1");
    assert_int_equal(it.line, 7);
    assert_int_equal(it.type, ANSWER_NUMBER);
    assert_string_equal(it.expected, "4");
    assert_true(it.expected_num == 4);
    dataset_item_cleanup(&it);

    /* no id: the line number; a string number is a number; thousands separators */
    it = parse_ok("{\"question\":\"How many?\",\"answer\":\"1,234\"}");
    assert_string_equal(it.id, "7");
    assert_int_equal(it.type, ANSWER_NUMBER);
    assert_string_equal(it.expected, "1234");
    dataset_item_cleanup(&it);

    /* numeric id; decimal answer */
    it = parse_ok("{\"id\":12,\"question\":\"Half of 3?\",\"answer\":1.5}");
    assert_string_equal(it.id, "12");
    assert_string_equal(it.expected, "1.5");
    dataset_item_cleanup(&it);

    /* text answers are normalised; type aliases */
    it = parse_ok("{\"question\":\"Largest animal?\",\"answer\":\"  The Blue Whale. \"}");
    assert_int_equal(it.type, ANSWER_TEXT);
    assert_string_equal(it.expected, "the blue whale");
    dataset_item_cleanup(&it);
    it = parse_ok("{\"question\":\"Code?\",\"answer\":\"42\",\"type\":\"string\"}");
    assert_int_equal(it.type, ANSWER_TEXT);
    assert_string_equal(it.expected, "42");
    dataset_item_cleanup(&it);

    /* choices with a letter, an index, "(b)", and the choice's text */
    it = parse_ok("{\"question\":\"Pick\",\"choices\":[\"x\",\"y\",\"z\"],\"answer\":\"C\"}");
    assert_int_equal(it.type, ANSWER_CHOICE);
    assert_int_equal(it.nchoices, 3);
    assert_string_equal(it.choices[1], "y");
    assert_string_equal(it.expected, "C");
    dataset_item_cleanup(&it);
    it = parse_ok("{\"question\":\"Pick\",\"choices\":[\"x\",\"y\"],\"answer\":1}");
    assert_string_equal(it.expected, "B");
    dataset_item_cleanup(&it);
    it = parse_ok("{\"question\":\"Pick\",\"choices\":[\"x\",\"y\"],\"answer\":\"(b)\"}");
    assert_string_equal(it.expected, "B");
    dataset_item_cleanup(&it);
    it = parse_ok("{\"question\":\"Pick\",\"choices\":[\"Red\",\"Green\"],\"answer\":\"green\"}");
    assert_string_equal(it.expected, "B");
    dataset_item_cleanup(&it);
    /* type choice without listed choices: the letter is the answer */
    it = parse_ok("{\"question\":\"A) x B) y\",\"answer\":\"b\",\"type\":\"choice\"}");
    assert_int_equal(it.type, ANSWER_CHOICE);
    assert_int_equal(it.nchoices, 0);
    assert_string_equal(it.expected, "B");
    dataset_item_cleanup(&it);
}

static void test_bad_items(void **state)
{
    (void)state;
    parse_bad("{\"question\":\"x\"", "not valid JSON");
    parse_bad("[1,2]", "not a JSON object");
    parse_bad("{\"question\":\"x\",\"answer\":1} trailing", "text after");
    parse_bad("{\"answer\":1}", "no question");
    parse_bad("{\"question\":\"   \",\"answer\":1}", "no question");
    parse_bad("{\"question\":\"x\"}", "no answer");
    parse_bad("{\"question\":\"x\",\"answer\":\"\"}", "empty");
    parse_bad("{\"question\":\"x\",\"answer\":[1]}", "string or a number");
    parse_bad("{\"question\":\"x\",\"answer\":\"abc\",\"type\":\"number\"}", "not a number");
    parse_bad("{\"question\":\"x\",\"answer\":1,\"type\":\"numbr\"}", "unknown type");
    parse_bad("{\"question\":\"x\",\"choices\":[\"a\"],\"answer\":\"A\"}", "fewer than 2");
    parse_bad("{\"question\":\"x\",\"choices\":[\"a\",\"b\"],\"answer\":\"C\"}", "none of the");
    parse_bad("{\"question\":\"x\",\"choices\":[\"a\",\"b\"],\"answer\":5}", "none of the");
    parse_bad("{\"question\":\"x\",\"choices\":[\"a\",\"\"],\"answer\":\"A\"}", "empty");
    parse_bad("{\"question\":\"x\",\"choices\":[\"a\",\"b\"],\"answer\":\"A\",\"type\":\"text\"}",
              "type choice");
    parse_bad("{\"question\":\"x\",\"choices\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\","
              "\"9\",\"10\",\"11\"],\"answer\":\"A\"}",
              "more than 10");
    parse_bad("{\"id\":\"\",\"question\":\"x\",\"answer\":1}", "id");
    parse_bad("{\"id\":true,\"question\":\"x\",\"answer\":1}", "id");
}

static void test_gsm8k(void **state)
{
    struct dataset ds;

    (void)state;
    read_file("tests/data/eval_gsm8k.jsonl", &ds);
    assert_int_equal(ds.nitems, 3);
    assert_int_equal(ds.items[0].type, ANSWER_NUMBER);
    assert_string_equal(ds.items[0].expected, "29");
    assert_string_equal(ds.items[0].id, "1");
    assert_string_equal(ds.items[1].expected, "1250");
    assert_string_equal(ds.items[2].expected, "-4");
    assert_non_null(strstr(ds.items[0].question, "Ann has 3 boxes"));
    dataset_cleanup(&ds);
}

static void test_math(void **state)
{
    struct dataset ds;

    (void)state;
    read_file("tests/data/eval_math.jsonl", &ds);
    assert_int_equal(ds.nitems, 4);
    /* \boxed{\frac{3}{4}} is a number; MATH's "type" (the subject) is ignored */
    assert_int_equal(ds.items[0].type, ANSWER_NUMBER);
    assert_string_equal(ds.items[0].expected, "0.75");
    assert_non_null(strstr(ds.items[0].question, "\\frac{1}{2}"));
    /* an ordered pair is text */
    assert_int_equal(ds.items[1].type, ANSWER_TEXT);
    assert_string_equal(ds.items[1].expected, "(2, -1)");
    /* MATH-500: answer and unique_id */
    assert_string_equal(ds.items[2].id, "test/prealgebra/1.json");
    assert_string_equal(ds.items[2].expected, "12");
    /* \text{} is stripped by normalisation */
    assert_int_equal(ds.items[3].type, ANSWER_TEXT);
    assert_string_equal(ds.items[3].expected, "tuesday");
    dataset_cleanup(&ds);
}

static void test_multiple_choice(void **state)
{
    struct dataset ds;
    static const char *const want[] = {"C", "D", "B", "E", "B", "A", "J", "B"};
    static const size_t nchoices[] = {4, 4, 4, 5, 3, 4, 10, 3};

    (void)state;
    read_file("tests/data/eval_mc.jsonl", &ds);
    assert_int_equal(ds.nitems, 8);
    for (size_t i = 0; i < ds.nitems; i++) {
        assert_int_equal(ds.items[i].type, ANSWER_CHOICE);
        assert_string_equal(ds.items[i].expected, want[i]);
        assert_int_equal(ds.items[i].nchoices, nchoices[i]);
    }
    assert_string_equal(ds.items[1].id, "arc-1");
    assert_string_equal(ds.items[1].choices[3], "copper");
    /* AQuA's "E)25" loses its letter */
    assert_string_equal(ds.items[3].choices[4], "25");
    /* CommonsenseQA: the stem is the question */
    assert_string_equal(ds.items[4].question, "Where would you keep milk cold?");
    assert_string_equal(ds.items[4].choices[1], "fridge");
    assert_string_equal(ds.items[5].choices[0], "Heart");
    assert_string_equal(ds.items[6].id, "70");
    dataset_cleanup(&ds);
}

static void test_malformed_lines(void **state)
{
    static const long bad_lines[] = {2, 4, 6, 9, 10, 11, 12};
    static const char *const ids[] = {"m1", "m3", "m7", "x1", "m13"};
    FILE *f = fopen("tests/data/eval_malformed.jsonl", "rb");
    char *errs = NULL;
    size_t errs_len = 0;
    FILE *e = open_memstream(&errs, &errs_len);
    struct dataset ds;

    (void)state;
    assert_non_null(f);
    assert_int_equal(dataset_read(f, "bad.jsonl", false, e, &ds), 0);
    fclose(e);
    fclose(f);
    assert_int_equal(ds.nitems, 5);
    for (size_t i = 0; i < ds.nitems; i++)
        assert_string_equal(ds.items[i].id, ids[i]);
    assert_int_equal(ds.nbad, PX_ARRAY_LEN(bad_lines));
    for (size_t i = 0; i < PX_ARRAY_LEN(bad_lines); i++) {
        char want[32];

        assert_int_equal(ds.bad_lines[i], bad_lines[i]);
        snprintf(want, sizeof(want), "bad.jsonl:%ld: skipped: ", bad_lines[i]);
        assert_non_null(strstr(errs, want));
    }
    assert_non_null(strstr(errs, "bad.jsonl:9: skipped: duplicate id 'x1' (first on line 8)"));
    assert_null(strstr(errs, "bad.jsonl:5:")); /* a blank line is not an error */
    free(errs);
    dataset_cleanup(&ds);

    /* --strict: the first malformed line stops the read */
    f = fopen("tests/data/eval_malformed.jsonl", "rb");
    errs = NULL;
    e = open_memstream(&errs, &errs_len);
    assert_int_equal(dataset_read(f, "bad.jsonl", true, e, &ds), -1);
    fclose(e);
    fclose(f);
    assert_int_equal(ds.nitems, 1);
    assert_non_null(strstr(errs, "bad.jsonl:2: skipped: not valid JSON"));
    assert_null(strstr(errs, "bad.jsonl:4:"));
    free(errs);
    dataset_cleanup(&ds);
}

static void read_string(const char *text, size_t len, struct dataset *ds, char **errs)
{
    FILE *f = fmemopen((void *)text, len, "rb");
    size_t errs_len = 0;
    FILE *e = open_memstream(errs, &errs_len);

    assert_non_null(f);
    assert_int_equal(dataset_read(f, "mem", false, e, ds), 0);
    fclose(e);
    fclose(f);
}

static void test_file_forms(void **state)
{
    static const char crlf[] = "\xef\xbb\xbf{\"question\":\"a\",\"answer\":1}\r\n\r\n"
                               "{\"question\":\"b\",\"answer\":2}"; /* BOM, CRLF, no final LF */
    static const char array[] = " [ {\"id\":\"a\",\"question\":\"q\",\"answer\":1},\n"
                                "   {\"question\":\"r\"},\n"
                                "   {\"id\":\"c\",\"question\":\"s\",\"answer\":\"B\","
                                "\"choices\":[\"x\",\"y\"]} ]\n";
    struct dataset ds;
    char *errs = NULL;

    (void)state;
    read_string(crlf, sizeof(crlf) - 1, &ds, &errs);
    assert_int_equal(ds.nitems, 2);
    assert_string_equal(ds.items[0].id, "1");
    assert_string_equal(ds.items[1].id, "3");
    assert_string_equal(ds.items[1].expected, "2");
    assert_string_equal(errs, "");
    free(errs);
    dataset_cleanup(&ds);

    /* a JSON array: positions count as line numbers */
    read_string(array, sizeof(array) - 1, &ds, &errs);
    assert_int_equal(ds.nitems, 2);
    assert_string_equal(ds.items[1].id, "c");
    assert_string_equal(ds.items[1].expected, "B");
    assert_int_equal(ds.nbad, 1);
    assert_int_equal(ds.bad_lines[0], 2);
    assert_non_null(strstr(errs, "mem:2: skipped: no answer"));
    free(errs);
    dataset_cleanup(&ds);
}

static void test_long_line(void **state)
{
    size_t big = DATASET_MAX_LINE + 100;
    char *text = malloc(big + 200);
    struct dataset ds;
    char *errs = NULL;
    size_t pos;

    (void)state;
    pos = (size_t)snprintf(text, 200, "{\"question\":\"");
    memset(text + pos, 'x', big);
    pos += big;
    pos +=
        (size_t)snprintf(text + pos, 200, "\",\"answer\":1}\n{\"question\":\"q\",\"answer\":2}\n");
    read_string(text, pos, &ds, &errs);
    assert_int_equal(ds.nitems, 1);
    assert_string_equal(ds.items[0].id, "2");
    assert_int_equal(ds.nbad, 1);
    assert_non_null(strstr(errs, "mem:1: skipped: line longer than"));
    free(errs);
    free(text);
    dataset_cleanup(&ds);
}

static void test_select(void **state)
{
    struct dataset all, a, b;
    size_t seen = 0;

    (void)state;
    /* FNV-1a 64 reference values */
    assert_true(dataset_fnv1a("") == 0xcbf29ce484222325ULL);
    assert_true(dataset_fnv1a("a") == 0xaf63dc4c8601ec8cULL);
    assert_true(dataset_fnv1a("foobar") == 0x85944171f73967e8ULL);

    read_file("datasets/arithmetic.jsonl", &all);
    assert_true(all.nitems >= 50);
    read_file("datasets/arithmetic.jsonl", &a);
    read_file("datasets/arithmetic.jsonl", &b);
    dataset_select(&a, 100, 0, 2);
    dataset_select(&b, 100, 1, 2);
    /* disjoint, together the first 100, each in dataset order, each hash-chosen */
    assert_true(a.nitems > 20 && b.nitems > 20);
    assert_int_equal(a.nitems + b.nitems, 100);
    for (size_t i = 0; i < 100; i++) {
        const char *id = all.items[i].id;
        bool in_a = false, in_b = false;

        for (size_t k = 0; k < a.nitems; k++)
            in_a = in_a || strcmp(a.items[k].id, id) == 0;
        for (size_t k = 0; k < b.nitems; k++)
            in_b = in_b || strcmp(b.items[k].id, id) == 0;
        assert_true(in_a != in_b);
        assert_int_equal(in_a ? 0 : 1, (int)(dataset_fnv1a(id) % 2));
        seen += in_a || in_b;
    }
    assert_int_equal(seen, 100);
    dataset_cleanup(&a);
    dataset_cleanup(&b);
    /* --limit alone */
    dataset_select(&all, 10, 0, 1);
    assert_int_equal(all.nitems, 10);
    assert_string_equal(all.items[9].id, "arith-010");
    dataset_select(&all, -1, 0, 1);
    assert_int_equal(all.nitems, 10);
    dataset_cleanup(&all);
}

static void test_sample_datasets(void **state)
{
    static const char *const files[] = {"datasets/arithmetic.jsonl", "datasets/word_problems.jsonl",
                                        "datasets/multiple_choice.jsonl"};
    static const size_t min_items[] = {50, 20, 10};
    static const enum answer_kind kinds[] = {ANSWER_NUMBER, ANSWER_NUMBER, ANSWER_CHOICE};

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(files); i++) {
        struct dataset ds;

        read_file(files[i], &ds);
        assert_true(ds.nitems >= min_items[i]);
        for (size_t k = 0; k < ds.nitems; k++)
            assert_int_equal(ds.items[k].type, kinds[i]);
        dataset_cleanup(&ds);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_native),          cmocka_unit_test(test_bad_items),
        cmocka_unit_test(test_gsm8k),           cmocka_unit_test(test_math),
        cmocka_unit_test(test_multiple_choice), cmocka_unit_test(test_malformed_lines),
        cmocka_unit_test(test_file_forms),      cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_select),          cmocka_unit_test(test_sample_datasets),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
