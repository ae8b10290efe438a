/* json_check.c: strict parsing of client JSON bodies (see json_check.h). */
#include "json_check.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_OBJECT 16 /* up to this many keys: pairwise comparison, no allocation */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first key that occurs twice among o's members, or NULL. */
static const char *repeated_key(const cJSON *o)
{
    const char *small[SMALL_OBJECT];
    const char **names = small;
    const char *dup = NULL;
    size_t n = 0, cap = SMALL_OBJECT;

    for (const cJSON *c = o->child; c; c = c->next) {
        if (n == cap) {
            cap *= 4;
            if (names == small) {
                names = xmalloc(cap * sizeof(*names));
                memcpy(names, small, sizeof(small));
            } else {
                names = xrealloc(names, cap * sizeof(*names));
            }
        }
        names[n++] = c->string ? c->string : "";
    }
    if (n <= SMALL_OBJECT) {
        for (size_t i = 0; i < n && !dup; i++)
            for (size_t j = i + 1; j < n && !dup; j++)
                if (strcmp(names[i], names[j]) == 0)
                    dup = names[i];
    } else {
        qsort(names, n, sizeof(*names), cmp_names);
        for (size_t i = 1; i < n && !dup; i++)
            if (strcmp(names[i - 1], names[i]) == 0)
                dup = names[i];
    }
    if (names != small)
        free(names);
    return dup;
}

/* Appends ".key" (or "key" at the top) / ".[i]" to path[..*pos]; the path is cut short when
 * long, never the check. */
static void path_key(char *path, size_t cap, size_t *pos, const char *key)
{
    int w = snprintf(path + *pos, cap - *pos, "%s%.100s", *pos ? "." : "", key ? key : "");

    if (w > 0)
        *pos = *pos + (size_t)w < cap ? *pos + (size_t)w : cap - 1;
}

static void path_index(char *path, size_t cap, size_t *pos, int i)
{
    int w = snprintf(path + *pos, cap - *pos, "%s[%d]", *pos ? "." : "", i);

    if (w > 0)
        *pos = *pos + (size_t)w < cap ? *pos + (size_t)w : cap - 1;
}

static int walk(const cJSON *v, char *path, size_t cap, size_t pos, struct px_error *err)
{
    if (cJSON_IsObject(v)) {
        const char *dup = repeated_key(v);

        if (dup) {
            size_t p = pos;

            path_key(path, cap, &p, dup);
            return px_fail(err, PX_EINVAL, path,
                           "the request body repeats the key '%.100s' (at '%.200s'); each key may "
                           "appear once per object",
                           dup, path);
        }
        for (const cJSON *c = v->child; c; c = c->next) {
            size_t p = pos;
            int rc;

            path_key(path, cap, &p, c->string);
            if ((rc = walk(c, path, cap, p, err)) < 0)
                return rc;
            path[pos] = '\0';
        }
    } else if (cJSON_IsArray(v)) {
        int i = 0;

        for (const cJSON *c = v->child; c; c = c->next, i++) {
            size_t p = pos;
            int rc;

            path_index(path, cap, &p, i);
            if ((rc = walk(c, path, cap, p, err)) < 0)
                return rc;
            path[pos] = '\0';
        }
    }
    return PX_OK;
}

int json_check_duplicates(const cJSON *root, struct px_error *err)
{
    char path[256] = "";

    return walk(root, path, sizeof(path), 0, err);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A "\u0000" escape in valid JSON text (escapes occur only inside strings; "\\u0000" is an
 * escaped backslash followed by plain text). */
static bool has_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && i + 5 < len && hexv(s[i + 2]) == 0 && hexv(s[i + 3]) == 0 &&
            hexv(s[i + 4]) == 0 && hexv(s[i + 5]) == 0)
            return true;
        i++; /* skip the escaped character */
    }
    return false;
}

cJSON *json_parse_strict(const char *body, size_t len, struct px_error *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    size_t used;

    if (!root) {
        px_fail(err, PX_EINVAL, NULL,
                "We could not parse the JSON body of your request: it is not valid JSON");
        return NULL;
    }
    used = end && end >= body && end <= body + len ? (size_t)(end - body) : len;
    for (size_t i = used; i < len; i++) {
        if (!is_ws(body[i])) {
            px_fail(err, PX_EINVAL, NULL,
                    "the request body has data after the JSON value (at byte %zu); send exactly "
                    "one JSON object",
                    i);
            goto fail;
        }
    }
    if (memchr(body, '\0', used)) {
        px_fail(err, PX_EINVAL, NULL, "the request body contains a NUL byte");
        goto fail;
    }
    if (has_nul_escape(body, used)) {
        px_fail(err, PX_EINVAL, NULL,
                "the request body contains the escape \\u0000 (NUL), which is not supported in "
                "strings");
        goto fail;
    }
    if (json_check_duplicates(root, err) < 0)
        goto fail;
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}
