/* jsonschema.c: JSON Schema validation (include/jsonschema.h). A direct interpreter over the
 * cJSON schema tree: no compilation step beyond indexing $id's, so a schema sent with a request
 * costs nothing until an answer is checked. $ref is resolved against base URIs (RFC 3986,
 * without dot-segment removal), JSON pointers and plain-name fragments; "pattern" uses pcre2. */
#define _GNU_SOURCE /* strchrnul */
#include "jsonschema.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "px.h"

#define JS_MAX_DEPTH 128

struct js_doc {
    char *uri; /* absolute, without fragment; "#name" anchors are stored as "uri#name" */
    const cJSON *node;
};

struct jsonschema {
    const cJSON *root;
    char *root_uri;
    struct js_doc *docs;
    size_t ndocs, cap;
};

/* ---- URIs ------------------------------------------------------------------------------------ */

static bool has_scheme(const char *u)
{
    const char *p = u;

    if (!isalpha((unsigned char)*p))
        return false;
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    return *p == ':';
}

/* ref resolved against base; malloc'd. */
static char *uri_resolve(const char *base, const char *ref)
{
    size_t bl;
    char *out;

    if (has_scheme(ref) || !base || !*base)
        return xstrdup(ref);
    bl = strcspn(base, "#");
    if (*ref == '#' || *ref == '\0') {
        out = xmalloc(bl + strlen(ref) + 1);
        memcpy(out, base, bl);
        memcpy(out + bl, ref, strlen(ref) + 1);
        return out;
    }
    if (*ref == '/') {
        const char *auth = strstr(base, "://");
        size_t keep = bl;

        if (auth) {
            const char *slash = strchr(auth + 3, '/');
            keep = slash ? (size_t)(slash - base) : bl;
        }
        out = xmalloc(keep + strlen(ref) + 1);
        memcpy(out, base, keep);
        memcpy(out + keep, ref, strlen(ref) + 1);
        return out;
    }
    {
        size_t dir = bl;

        while (dir > 0 && base[dir - 1] != '/')
            dir--;
        out = xmalloc(dir + strlen(ref) + 1);
        memcpy(out, base, dir);
        memcpy(out + dir, ref, strlen(ref) + 1);
    }
    return out;
}

static void add_doc(struct jsonschema *s, const char *uri, const cJSON *node)
{
    if (s->ndocs == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->docs = xrealloc(s->docs, s->cap * sizeof(*s->docs));
    }
    s->docs[s->ndocs].uri = xstrdup(uri);
    s->docs[s->ndocs++].node = node;
}

/* Indexes every "$id" under node (base: the URI in force above it). */
static void index_ids(struct jsonschema *s, const cJSON *node, const char *base, int depth)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(node, "$id");
    char *mine = NULL;

    if (depth > JS_MAX_DEPTH)
        return;
    if (cJSON_IsObject(node) && cJSON_IsString(id) && !cJSON_HasObjectItem(node, "$ref")) {
        mine = uri_resolve(base, id->valuestring);
        add_doc(s, mine, node);
        base = mine;
    }
    for (const cJSON *c = node->child; c; c = c->next)
        if (cJSON_IsObject(c) || cJSON_IsArray(c))
            index_ids(s, c, base, depth + 1);
    free(mine);
}

static const struct js_doc *find_doc(const struct jsonschema *s, const char *uri)
{
    for (size_t i = 0; i < s->ndocs; i++)
        if (strcmp(s->docs[i].uri, uri) == 0)
            return &s->docs[i];
    return NULL;
}

/* Percent-decodes then unescapes ~1 and ~0 of one pointer token, in place. */
static void pointer_token(char *t)
{
    char *w = t;

    for (char *r = t; *r; r++) {
        if (*r == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            char hex[3] = {r[1], r[2], 0};

            *w++ = (char)strtol(hex, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    w = t;
    for (char *r = t; *r; r++) {
        if (*r == '~' && r[1] == '1') {
            *w++ = '/';
            r++;
        } else if (*r == '~' && r[1] == '0') {
            *w++ = '~';
            r++;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* Resolves ref against base: the target node, and its base URI in *tbase (malloc'd). */
static const cJSON *resolve_ref(const struct jsonschema *s, const char *base, const char *ref,
                                char **tbase)
{
    char *abs = uri_resolve(base, ref);
    char *hash = strchr(abs, '#');
    const char *frag = "";
    const struct js_doc *d;
    const cJSON *node;

    if (hash) {
        *hash = '\0';
        frag = hash + 1;
    }
    if (*frag && *frag != '/') { /* plain-name fragment: an anchor "$id": "#name" */
        size_t kl = strlen(abs) + strlen(frag) + 2;
        char *key = xmalloc(kl);

        snprintf(key, kl, "%s#%s", abs, frag);
        d = find_doc(s, key);
        free(key);
        if (!d) {
            free(abs);
            return NULL;
        }
        *tbase = abs;
        return d->node;
    }
    d = find_doc(s, abs);
    if (!d && !*abs)
        node = s->root;
    else if (d)
        node = d->node;
    else {
        free(abs);
        return NULL;
    }
    char *cur_base = abs;
    if (*frag == '/') {
        char *ptr = xstrdup(frag + 1);
        char *save = NULL;

        for (char *tok = ptr; tok; tok = save) {
            char *slash = strchr(tok, '/');

            save = slash ? slash + 1 : NULL;
            if (slash)
                *slash = '\0';
            pointer_token(tok);
            if (cJSON_IsArray(node)) {
                char *end;
                long i = strtol(tok, &end, 10);

                node = *tok && *end == '\0' ? cJSON_GetArrayItem(node, (int)i) : NULL;
            } else if (cJSON_IsObject(node)) {
                node = cJSON_GetObjectItemCaseSensitive(node, tok);
            } else {
                node = NULL;
            }
            if (!node)
                break;
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(node, "$id");
            if (cJSON_IsObject(node) && cJSON_IsString(id)) {
                char *nb = uri_resolve(cur_base, id->valuestring);

                free(cur_base);
                cur_base = nb;
            }
        }
        free(ptr);
    }
    if (!node) {
        free(cur_base);
        return NULL;
    }
    *tbase = cur_base;
    return node;
}

/* ---- formats --------------------------------------------------------------------------------- */

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int num(const char *s, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* full-date: returns the length consumed (10) or 0. */
static int rfc3339_date(const char *s)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, m, d;

    if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2))
        return 0;
    y = num(s, 4);
    m = num(s + 5, 2);
    d = num(s + 8, 2);
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return 0;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 0;
    return 10;
}

/* full-time with offset: the length consumed or 0. */
static int rfc3339_time(const char *s)
{
    const char *p = s;

    if (!digits(p, 2) || p[2] != ':' || !digits(p + 3, 2) || p[5] != ':' || !digits(p + 6, 2))
        return 0;
    if (num(p, 2) > 23 || num(p + 3, 2) > 59 || num(p + 6, 2) > 60)
        return 0;
    p += 8;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z' || *p == 'z')
        return (int)(p + 1 - s);
    if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2) &&
        num(p + 1, 2) <= 23 && num(p + 4, 2) <= 59)
        return (int)(p + 6 - s);
    return 0;
}

static bool email_ok(const char *v)
{
    const char *at = strchr(v, '@');
    const char *p;

    if (!at || at == v || strchr(at + 1, '@') || !at[1])
        return false;
    for (p = v; p < at; p++) /* dot-atom local part */
        if ((unsigned char)*p <= ' ' || strchr("()<>[]:;,\\\"", *p) ||
            (*p == '.' && (p == v || p + 1 == at || p[1] == '.')))
            return false;
    for (p = at + 1; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '.' || (unsigned char)*p >= 0x80))
            return false;
    return at[1] != '.' && p[-1] != '.' && !strstr(at, "..");
}

static bool uuid_ok(const char *v)
{
    static const int groups[] = {8, 4, 4, 4, 12};
    const char *p = v;

    for (int g = 0; g < 5; g++) {
        for (int i = 0; i < groups[g]; i++, p++)
            if (!isxdigit((unsigned char)*p))
                return false;
        if (g < 4 && *p++ != '-')
            return false;
    }
    return *p == '\0';
}

static bool ipv4_ok(const char *v)
{
    const char *p = v;

    for (int part = 0; part < 4; part++) {
        int n = 0, val = 0;

        while (isdigit((unsigned char)p[n]) && n < 4)
            val = val * 10 + (p[n++] - '0');
        if (n == 0 || n > 3 || val > 255 || (n > 1 && p[0] == '0'))
            return false;
        p += n;
        if (part < 3 && *p++ != '.')
            return false;
    }
    return *p == '\0';
}

bool jsonschema_format_ok(const char *format, const char *v)
{
    if (strcmp(format, "date-time") == 0) {
        int d = rfc3339_date(v);

        return d && (v[d] == 'T' || v[d] == 't') && rfc3339_time(v + d + 1) &&
               v[d + 1 + rfc3339_time(v + d + 1)] == '\0';
    }
    if (strcmp(format, "date") == 0)
        return rfc3339_date(v) && v[10] == '\0';
    if (strcmp(format, "time") == 0)
        return rfc3339_time(v) && v[rfc3339_time(v)] == '\0';
    if (strcmp(format, "email") == 0)
        return email_ok(v);
    if (strcmp(format, "uuid") == 0)
        return uuid_ok(v);
    if (strcmp(format, "ipv4") == 0)
        return ipv4_ok(v);
    return true;
}

/* ---- validation ------------------------------------------------------------------------------ */

struct vstate {
    const struct jsonschema *s;
    struct jsonschema_error *errs;
    size_t maxerrs;
    int nerr;
    bool quiet; /* inside anyOf/oneOf/not/if/contains probes: count, do not record */
};

/* The instance path as a linked list, rendered only when an error is recorded. */
struct path {
    const struct path *up;
    const char *key; /* object member, or NULL for an index */
    int index;
};

static void render_path(const struct path *p, char *buf, size_t len)
{
    const struct path *stack[64];
    int n = 0;
    size_t pos;

    for (; p && n < 64; p = p->up)
        stack[n++] = p;
    pos = (size_t)snprintf(buf, len, "$");
    while (n-- > 0 && pos < len) {
        if (stack[n]->key)
            pos += (size_t)snprintf(buf + pos, len - pos, ".%s", stack[n]->key);
        else
            pos += (size_t)snprintf(buf + pos, len - pos, "[%d]", stack[n]->index);
    }
}

static void fail(struct vstate *st, const struct path *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct vstate *st, const struct path *p, const char *fmt, ...)
{
    st->nerr++;
    if (st->quiet || !st->errs || (size_t)st->nerr > st->maxerrs)
        return;
    struct jsonschema_error *e = &st->errs[st->nerr - 1];
    va_list ap;

    render_path(p, e->path, sizeof(e->path));
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "boolean";
    if (cJSON_IsNumber(v))
        return v->valuedouble == floor(v->valuedouble) && isfinite(v->valuedouble) ? "integer"
                                                                                   : "number";
    if (cJSON_IsString(v))
        return "string";
    if (cJSON_IsArray(v))
        return "array";
    return "object";
}

static bool type_is(const cJSON *v, const char *t)
{
    const char *have = type_name(v);

    return strcmp(have, t) == 0 || (strcmp(t, "number") == 0 && strcmp(have, "integer") == 0);
}

static size_t utf8_len(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* ECMA-262 patterns through pcre2 (UTF mode, unanchored search). -1: the pattern is invalid. */
static int pattern_match(const char *pattern, const char *subject)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    pcre2_match_data *md;
    int rc;

    if (!re)
        return -1;
    md = pcre2_match_data_create_from_pattern(re, NULL);
    rc = pcre2_match(re, (PCRE2_SPTR)subject, strlen(subject), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0 ? 1 : 0;
}

static void validate_ex(struct vstate *st, const cJSON *schema, const char *base, const cJSON *inst,
                        const struct path *p, int depth, bool base_is_own);

static void validate(struct vstate *st, const cJSON *schema, const char *base, const cJSON *inst,
                     const struct path *p, int depth)
{
    validate_ex(st, schema, base, inst, p, depth, false);
}

/* Runs a sub-validation quietly; returns whether inst is valid against schema. */
static bool probe(struct vstate *st, const cJSON *schema, const char *base, const cJSON *inst,
                  const struct path *p, int depth)
{
    struct vstate sub = *st;

    sub.nerr = 0;
    sub.quiet = true;
    validate(&sub, schema, base, inst, p, depth);
    return sub.nerr == 0;
}

static double num_kw(const cJSON *schema, const char *k, bool *present)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(schema, k);

    *present = cJSON_IsNumber(v);
    return *present ? v->valuedouble : 0;
}

static void check_number(struct vstate *st, const cJSON *schema, const cJSON *inst,
                         const struct path *p)
{
    double x = inst->valuedouble, v;
    bool has;

    v = num_kw(schema, "minimum", &has);
    if (has && x < v)
        fail(st, p, "%g is less than the minimum %g", x, v);
    v = num_kw(schema, "maximum", &has);
    if (has && x > v)
        fail(st, p, "%g is greater than the maximum %g", x, v);
    v = num_kw(schema, "exclusiveMinimum", &has);
    if (has && x <= v)
        fail(st, p, "%g must be greater than %g", x, v);
    v = num_kw(schema, "exclusiveMaximum", &has);
    if (has && x >= v)
        fail(st, p, "%g must be less than %g", x, v);
    v = num_kw(schema, "multipleOf", &has);
    if (has && v > 0) {
        double q = x / v;

        if (!isfinite(q) || fabs(q - nearbyint(q)) > 1e-9 * fmax(1.0, fabs(q)))
            fail(st, p, "%g is not a multiple of %g", x, v);
    }
}

static void check_string(struct vstate *st, const cJSON *schema, const cJSON *inst,
                         const struct path *p)
{
    const char *s = inst->valuestring;
    size_t len = utf8_len(s);
    const cJSON *k;
    double v;
    bool has;

    v = num_kw(schema, "minLength", &has);
    if (has && (double)len < v)
        fail(st, p, "string is shorter than %g characters", v);
    v = num_kw(schema, "maxLength", &has);
    if (has && (double)len > v)
        fail(st, p, "string is longer than %g characters", v);
    k = cJSON_GetObjectItemCaseSensitive(schema, "pattern");
    if (cJSON_IsString(k) && pattern_match(k->valuestring, s) == 0)
        fail(st, p, "string does not match the pattern %.120s", k->valuestring);
    k = cJSON_GetObjectItemCaseSensitive(schema, "format");
    if (cJSON_IsString(k) && !jsonschema_format_ok(k->valuestring, s))
        fail(st, p, "string is not a valid %.40s", k->valuestring);
}

static void check_array(struct vstate *st, const cJSON *schema, const char *base, const cJSON *inst,
                        const struct path *p, int depth)
{
    int n = cJSON_GetArraySize(inst);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(schema, "items");
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(schema, "prefixItems");
    const cJSON *additional = cJSON_GetObjectItemCaseSensitive(schema, "additionalItems");
    const cJSON *contains = cJSON_GetObjectItemCaseSensitive(schema, "contains");
    const cJSON *tuple = cJSON_IsArray(prefix) ? prefix : (cJSON_IsArray(items) ? items : NULL);
    /* With prefixItems (2020-12), "items" is the schema for the rest. */
    const cJSON *rest = tuple == prefix && prefix ? items : (tuple ? additional : items);
    int ntuple = tuple ? cJSON_GetArraySize(tuple) : 0;
    double v;
    bool has;
    int i = 0;

    v = num_kw(schema, "minItems", &has);
    if (has && n < v)
        fail(st, p, "array has fewer than %g items", v);
    v = num_kw(schema, "maxItems", &has);
    if (has && n > v)
        fail(st, p, "array has more than %g items", v);
    for (const cJSON *it = inst->child; it; it = it->next, i++) {
        struct path ip = {.up = p, .key = NULL, .index = i};

        if (i < ntuple)
            validate(st, cJSON_GetArrayItem(tuple, i), base, it, &ip, depth + 1);
        else if (rest)
            validate(st, rest, base, it, &ip, depth + 1);
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(schema, "uniqueItems"))) {
        i = 0;
        for (const cJSON *a = inst->child; a; a = a->next, i++) {
            for (const cJSON *b = a->next; b; b = b->next) {
                if (cJSON_Compare(a, b, true)) {
                    fail(st, p, "array items are not unique (item %d repeats)", i);
                    goto unique_done;
                }
            }
        }
    }
unique_done:
    if (contains) {
        bool found = false;

        i = 0;
        for (const cJSON *it = inst->child; it && !found; it = it->next, i++) {
            struct path ip = {.up = p, .key = NULL, .index = i};

            found = probe(st, contains, base, it, &ip, depth + 1);
        }
        if (!found)
            fail(st, p, "array contains no item matching 'contains'");
    }
}

static void check_object(struct vstate *st, const cJSON *schema, const char *base,
                         const cJSON *inst, const struct path *p, int depth)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
    const cJSON *pprops = cJSON_GetObjectItemCaseSensitive(schema, "patternProperties");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(schema, "additionalProperties");
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(schema, "propertyNames");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(schema, "required");
    const cJSON *deps = cJSON_GetObjectItemCaseSensitive(schema, "dependencies");
    const cJSON *dreq = cJSON_GetObjectItemCaseSensitive(schema, "dependentRequired");
    const cJSON *dsch = cJSON_GetObjectItemCaseSensitive(schema, "dependentSchemas");
    int n = cJSON_GetArraySize(inst);
    double v;
    bool has;

    v = num_kw(schema, "minProperties", &has);
    if (has && n < v)
        fail(st, p, "object has fewer than %g properties", v);
    v = num_kw(schema, "maxProperties", &has);
    if (has && n > v)
        fail(st, p, "object has more than %g properties", v);
    if (cJSON_IsArray(req)) {
        const cJSON *r;

        cJSON_ArrayForEach(r, req)
        {
            if (cJSON_IsString(r) && !cJSON_GetObjectItemCaseSensitive(inst, r->valuestring))
                fail(st, p, "required property '%.80s' is missing", r->valuestring);
        }
    }
    for (const cJSON *m = inst->child; m; m = m->next) {
        struct path mp = {.up = p, .key = m->string, .index = 0};
        const cJSON *ps =
            cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
        bool matched = ps != NULL;

        if (ps)
            validate(st, ps, base, m, &mp, depth + 1);
        if (cJSON_IsObject(pprops)) {
            for (const cJSON *pp = pprops->child; pp; pp = pp->next) {
                if (pattern_match(pp->string, m->string) == 1) {
                    matched = true;
                    validate(st, pp, base, m, &mp, depth + 1);
                }
            }
        }
        if (!matched && addl) {
            if (cJSON_IsFalse(addl))
                fail(st, p, "property '%.80s' is not allowed", m->string);
            else
                validate(st, addl, base, m, &mp, depth + 1);
        }
        if (names) {
            cJSON *key = cJSON_CreateString(m->string);

            if (!probe(st, names, base, key, &mp, depth + 1))
                fail(st, p, "property name '%.80s' does not match 'propertyNames'", m->string);
            cJSON_Delete(key);
        }
    }
    const cJSON *dep_lists[] = {deps, dreq, dsch};
    for (size_t d = 0; d < 3; d++) {
        if (!cJSON_IsObject(dep_lists[d]))
            continue;
        for (const cJSON *dp = dep_lists[d]->child; dp; dp = dp->next) {
            if (!cJSON_GetObjectItemCaseSensitive(inst, dp->string))
                continue;
            if (cJSON_IsArray(dp)) {
                const cJSON *r;

                cJSON_ArrayForEach(r, dp)
                {
                    if (cJSON_IsString(r) &&
                        !cJSON_GetObjectItemCaseSensitive(inst, r->valuestring))
                        fail(st, p, "property '%.60s' requires property '%.60s'", dp->string,
                             r->valuestring);
                }
            } else {
                validate(st, dp, base, inst, p, depth + 1);
            }
        }
    }
}

/* base_is_own: 'base' already includes this schema's own $id (a $ref target). */
static void validate_ex(struct vstate *st, const cJSON *schema, const char *base, const cJSON *inst,
                        const struct path *p, int depth, bool base_is_own)
{
    const cJSON *k;
    char *own_base = NULL;

    if (depth > JS_MAX_DEPTH) {
        fail(st, p, "schema nesting or $ref recursion deeper than %d levels", JS_MAX_DEPTH);
        return;
    }
    if (cJSON_IsBool(schema)) {
        if (cJSON_IsFalse(schema))
            fail(st, p, "no value is allowed here (schema false)");
        return;
    }
    if (!cJSON_IsObject(schema))
        return; /* not a schema: ignored, as validators do */
    k = cJSON_GetObjectItemCaseSensitive(schema, "$ref");
    if (cJSON_IsString(k)) { /* draft 7: $ref alone decides, siblings are ignored */
        char *tbase = NULL;
        const cJSON *target = resolve_ref(st->s, base, k->valuestring, &tbase);

        if (!target)
            fail(st, p, "cannot resolve $ref %.120s", k->valuestring);
        else
            validate_ex(st, target, tbase, inst, p, depth + 1, true);
        free(tbase);
        return;
    }
    k = cJSON_GetObjectItemCaseSensitive(schema, "$id");
    if (cJSON_IsString(k) && !base_is_own) {
        own_base = uri_resolve(base, k->valuestring);
        base = own_base;
    }

    k = cJSON_GetObjectItemCaseSensitive(schema, "type");
    if (cJSON_IsString(k) && !type_is(inst, k->valuestring)) {
        fail(st, p, "expected %.20s, got %s", k->valuestring, type_name(inst));
    } else if (cJSON_IsArray(k)) {
        bool ok = false;
        const cJSON *t;

        cJSON_ArrayForEach(t, k)
        {
            if (cJSON_IsString(t) && type_is(inst, t->valuestring))
                ok = true;
        }
        if (!ok)
            fail(st, p, "value of type %s is not one of the allowed types", type_name(inst));
    }
    k = cJSON_GetObjectItemCaseSensitive(schema, "enum");
    if (cJSON_IsArray(k)) {
        bool ok = false;
        const cJSON *e;

        cJSON_ArrayForEach(e, k)
        {
            if (cJSON_Compare(e, inst, true))
                ok = true;
        }
        if (!ok)
            fail(st, p, "value is not one of the enumerated values");
    }
    k = cJSON_GetObjectItemCaseSensitive(schema, "const");
    if (k && !cJSON_Compare(k, inst, true))
        fail(st, p, "value is not the required constant");

    if (cJSON_IsNumber(inst))
        check_number(st, schema, inst, p);
    else if (cJSON_IsString(inst))
        check_string(st, schema, inst, p);
    else if (cJSON_IsArray(inst))
        check_array(st, schema, base, inst, p, depth);
    else if (cJSON_IsObject(inst))
        check_object(st, schema, base, inst, p, depth);

    k = cJSON_GetObjectItemCaseSensitive(schema, "allOf");
    if (cJSON_IsArray(k)) {
        const cJSON *sub;

        cJSON_ArrayForEach(sub, k) validate(st, sub, base, inst, p, depth + 1);
    }
    k = cJSON_GetObjectItemCaseSensitive(schema, "anyOf");
    if (cJSON_IsArray(k)) {
        bool ok = false;
        const cJSON *sub;

        cJSON_ArrayForEach(sub, k)
        {
            if (!ok && probe(st, sub, base, inst, p, depth + 1))
                ok = true;
        }
        if (!ok)
            fail(st, p, "value matches none of the 'anyOf' schemas");
    }
    k = cJSON_GetObjectItemCaseSensitive(schema, "oneOf");
    if (cJSON_IsArray(k)) {
        int matches = 0;
        const cJSON *sub;

        cJSON_ArrayForEach(sub, k)
        {
            if (probe(st, sub, base, inst, p, depth + 1))
                matches++;
        }
        if (matches != 1)
            fail(st, p, "value matches %d of the 'oneOf' schemas (exactly one required)", matches);
    }
    k = cJSON_GetObjectItemCaseSensitive(schema, "not");
    if (k && probe(st, k, base, inst, p, depth + 1))
        fail(st, p, "value matches the 'not' schema");
    k = cJSON_GetObjectItemCaseSensitive(schema, "if");
    if (k) {
        const cJSON *then = cJSON_GetObjectItemCaseSensitive(schema, "then");
        const cJSON *els = cJSON_GetObjectItemCaseSensitive(schema, "else");

        if (probe(st, k, base, inst, p, depth + 1)) {
            if (then)
                validate(st, then, base, inst, p, depth + 1);
        } else if (els) {
            validate(st, els, base, inst, p, depth + 1);
        }
    }
    free(own_base);
}

/* ---- public ---------------------------------------------------------------------------------- */

struct jsonschema *jsonschema_create(const cJSON *schema, char *err, size_t errlen)
{
    struct jsonschema *s;
    const cJSON *id;

    if (!cJSON_IsObject(schema) && !cJSON_IsBool(schema)) {
        snprintf(err, errlen, "a JSON schema must be an object or a boolean");
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    s->root = schema;
    id = cJSON_GetObjectItemCaseSensitive(schema, "$id");
    s->root_uri = xstrdup(cJSON_IsString(id) ? id->valuestring : "");
    *strchrnul(s->root_uri, '#') = '\0';
    add_doc(s, s->root_uri, schema);
    if (cJSON_IsObject(schema))
        index_ids(s, schema, "", 0);
    return s;
}

void jsonschema_add_document(struct jsonschema *s, const char *uri, const cJSON *doc)
{
    char *u = xstrdup(uri);

    *strchrnul(u, '#') = '\0';
    add_doc(s, u, doc);
    if (cJSON_IsObject(doc))
        index_ids(s, doc, u, 0);
    free(u);
}

int jsonschema_validate(const struct jsonschema *s, const cJSON *instance,
                        struct jsonschema_error *errs, size_t maxerrs)
{
    struct vstate st = {.s = s, .errs = errs, .maxerrs = maxerrs};

    validate(&st, s->root, s->root_uri, instance, NULL, 0);
    return st.nerr;
}

void jsonschema_destroy(struct jsonschema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ndocs; i++)
        free(s->docs[i].uri);
    free(s->docs);
    free(s->root_uri);
    free(s);
}
