/* chat.c: client request parsing, approach selection (model prefix, optillm_approach, tags)
 * and per-request options. */
#include "chat.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "config.h"
#include "json_check.h"

#define TAG_OPEN  "<optillm_approach>"
#define TAG_CLOSE "</optillm_approach>"

static void json_delete(void *p)
{
    cJSON_Delete(p);
}

/* ---- route parsing ------------------------------------------------------------------------ */

/* Matches the longest approach name (slug, alias, or "none") at s that ends at a separator.
 * Returns its length and sets *out (NULL for "none"), or 0 when nothing matches. */
static size_t match_name(const char *s, const struct approach **out)
{
    size_t best = 0;

    for (size_t i = 0; i < approach_registry_len; i++) {
        const struct approach *a = approach_registry[i];
        const char *names[16];
        size_t nn = 0;

        names[nn++] = a->slug;
        for (const char *const *al = a->aliases; al && *al && nn < 16; al++)
            names[nn++] = *al;
        for (size_t j = 0; j < nn; j++) {
            size_t len = strlen(names[j]);

            /* strncmp first: s may be shorter than the name. */
            if (len > best && strncmp(s, names[j], len) == 0 &&
                (s[len] == '-' || s[len] == '&' || s[len] == '|' || s[len] == '\0')) {
                best = len;
                *out = a;
            }
        }
    }
    if (best == 0 && strncmp(s, "none", 4) == 0 &&
        (s[4] == '-' || s[4] == '&' || s[4] == '|' || s[4] == '\0')) {
        *out = NULL;
        best = 4;
    }
    return best;
}

static int unknown(const char *s, struct px_error *err, const char *param)
{
    size_t len = strcspn(s, "-&|");

    return px_fail(err, PX_EINVAL, param, "unknown approach '%.*s'; known approaches: %s, none",
                   (int)(len > 64 ? 64 : len), s, approach_slug_list());
}

/* Parses approach names separated by & or | starting at *s. 'first' means a failure to match
 * the very first name is "not an approach" (returns 0) rather than an error. On success the
 * names are added to 'r' and *s points past them (at '-' or '\0'). Returns 1 when it parsed a
 * token, 0 when s does not start with an approach name, or a negative px_status. */
static int parse_token(const char **s, struct route *r, bool *has_none, struct px_error *err,
                       const char *param)
{
    const char *p = *s;
    char sep = 0;
    int names = 0;

    for (;;) {
        const struct approach *a = NULL;
        size_t len = match_name(p, &a);

        if (len == 0) {
            if (names == 0)
                return 0;
            return unknown(p, err, param);
        }
        if (r->count >= ROUTE_MAX)
            return px_fail(err, PX_EINVAL, param, "too many approaches (at most %d)", ROUTE_MAX);
        if (a)
            r->steps[r->count++] = a;
        else
            *has_none = true;
        names++;
        p += len;
        if (*p == '&' || *p == '|') {
            if (sep && *p != sep)
                return px_fail(err, PX_EINVAL, param,
                               "'&' and '|' cannot be mixed in one approach combination");
            sep = *p;
            r->op = sep == '&' ? ROUTE_AND : ROUTE_OR;
            p++;
            continue;
        }
        break;
    }
    *s = p;
    return 1;
}

static int route_finish(struct route *r, bool has_none, struct px_error *err, const char *param)
{
    if (has_none && r->count > 0)
        return px_fail(err, PX_EINVAL, param, "'none' cannot be combined with other approaches");
    if (r->count <= 1)
        r->op = ROUTE_SINGLE;
    return PX_OK;
}

int route_parse_model(const char *model, struct route *out, const char **rest, struct px_error *err)
{
    const char *p = model;
    bool has_none = false;
    int rc;

    memset(out, 0, sizeof(*out));
    *rest = model;
    rc = parse_token(&p, out, &has_none, err, "model");
    if (rc == 0) {
        /* A first part with '&' or '|' is a combination (as in OptiLLM): an unknown name in
         * it is an error, not a model name. */
        size_t first = strcspn(model, "-");

        if (memchr(model, '&', first) || memchr(model, '|', first))
            return unknown(model, err, "model");
        return 0;
    }
    if (rc < 0)
        return rc;
    if (*p == '\0') /* "moa" alone: the approach with the server's default model */
        return px_fail(
            err, PX_EINVAL, "model",
            "model '%.200s' names an approach but no model; use e.g. '%.100s-gpt-4o-mini'", model,
            model);
    p++; /* the '-' */
    if (*p == '\0')
        return px_fail(err, PX_EINVAL, "model", "model '%.200s' names an approach but no model",
                       model);
    {
        /* A second plain prefix ("moa-bon-gpt-4o") would be silently dropped by OptiLLM. */
        const char *q = p;
        struct route extra = {0};
        bool extra_none = false;
        struct px_error ignore;

        if (parse_token(&q, &extra, &extra_none, &ignore, "model") > 0 && *q == '-')
            return px_fail(err, PX_EINVAL, "model",
                           "model '%.200s' has several approach prefixes; combine approaches "
                           "with '&' (pipeline) or '|' (parallel), e.g. 'moa&bon-gpt-4o'",
                           model);
    }
    *rest = p;
    rc = route_finish(out, has_none, err, "model");
    return rc < 0 ? rc : 1;
}

int route_parse_value(const char *value, struct route *out, struct px_error *err)
{
    const char *p = value;
    bool has_none = false;
    int rc;

    memset(out, 0, sizeof(*out));
    if (*value == '\0' || strcmp(value, "auto") == 0)
        return PX_OK;
    rc = parse_token(&p, out, &has_none, err, "optillm_approach");
    if (rc < 0)
        return rc;
    if (rc == 0 || *p != '\0')
        return unknown(p, err, "optillm_approach");
    return route_finish(out, has_none, err, "optillm_approach");
}

void route_name(const struct route *r, char *buf, size_t len)
{
    size_t pos = 0;

    if (len == 0)
        return;
    buf[0] = '\0';
    if (r->count == 0) {
        snprintf(buf, len, "none");
        return;
    }
    for (int i = 0; i < r->count && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%s",
                                i ? (r->op == ROUTE_AND ? "&" : "|") : "", r->steps[i]->slug);
}

/* ---- tags --------------------------------------------------------------------------------- */

/* Removes every <optillm_approach>..</optillm_approach> from s. Returns a new string in 'a'
 * (or NULL when s has no tag) and the first tag's value in *value (in 'a'). The result is
 * trimmed, as OptiLLM does. */
static char *strip_tags(struct arena *a, const char *s, char **value)
{
    const char *open = strstr(s, TAG_OPEN);
    struct buf b;

    if (!open)
        return NULL;
    buf_init(&b, 0);
    while (open) {
        const char *v = open + strlen(TAG_OPEN);
        const char *close = strstr(v, TAG_CLOSE);

        if (!close)
            break;
        if (value && !*value) {
            const char *vs = v;
            const char *ve = close;

            while (vs < ve && (*vs == ' ' || *vs == '\t' || *vs == '\n' || *vs == '\r'))
                vs++;
            while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\n' || ve[-1] == '\r'))
                ve--;
            *value = arena_strndup(a, vs, (size_t)(ve - vs));
        }
        buf_append(&b, s, (size_t)(open - s));
        s = close + strlen(TAG_CLOSE);
        open = strstr(s, TAG_OPEN);
    }
    buf_puts(&b, s);
    const char *t = buf_cstr(&b);
    size_t len = b.len;
    while (*t == ' ' || *t == '\n' || *t == '\t' || *t == '\r') {
        t++;
        len--;
    }
    while (len &&
           (t[len - 1] == ' ' || t[len - 1] == '\n' || t[len - 1] == '\t' || t[len - 1] == '\r'))
        len--;
    char *res = arena_strndup(a, t, len);
    buf_free(&b);
    return res;
}

/* ---- messages ----------------------------------------------------------------------------- */

static int parse_message(struct arena *a, cJSON *m, size_t idx, bool scan_tags, char **tag,
                         bool *tags_removed, struct chat_msg *out, struct px_error *err)
{
    char param[48];
    cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    bool taggable;

    snprintf(param, sizeof(param), "messages.[%zu]", idx);
    if (!cJSON_IsObject(m))
        return px_fail(err, PX_EINVAL, param, "each message must be an object");
    if (!cJSON_IsString(role) || !role->valuestring[0])
        return px_fail(err, PX_EINVAL, param, "message %zu has no 'role' string", idx);
    out->role = role->valuestring;
    out->raw = m;
    taggable = scan_tags && (strcmp(out->role, "system") == 0 || strcmp(out->role, "user") == 0 ||
                             strcmp(out->role, "developer") == 0);
    if (!content || cJSON_IsNull(content)) {
        out->content = "";
    } else if (cJSON_IsString(content)) {
        char *stripped = taggable ? strip_tags(a, content->valuestring, tag) : NULL;

        if (stripped) {
            *tags_removed = true;
            cJSON_ReplaceItemInObjectCaseSensitive(m, "content", cJSON_CreateString(stripped));
            content = cJSON_GetObjectItemCaseSensitive(m, "content");
        }
        out->content = content->valuestring;
    } else if (cJSON_IsArray(content)) {
        struct buf b;
        cJSON *part;
        size_t pi = 0;

        buf_init(&b, 0);
        cJSON_ArrayForEach(part, content)
        {
            cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");

            if (!cJSON_IsObject(part) || !cJSON_IsString(type)) {
                buf_free(&b);
                return px_fail(err, PX_EINVAL, param,
                               "message %zu: content part %zu must be an object with a 'type'", idx,
                               pi);
            }
            if (strcmp(type->valuestring, "text") == 0) {
                if (!cJSON_IsString(text)) {
                    buf_free(&b);
                    return px_fail(err, PX_EINVAL, param,
                                   "message %zu: text part %zu has no 'text' string", idx, pi);
                }
                char *stripped = taggable ? strip_tags(a, text->valuestring, tag) : NULL;
                if (stripped) {
                    *tags_removed = true;
                    cJSON_ReplaceItemInObjectCaseSensitive(part, "text",
                                                           cJSON_CreateString(stripped));
                    text = cJSON_GetObjectItemCaseSensitive(part, "text");
                }
                if (b.len)
                    buf_puts(&b, "\n");
                buf_puts(&b, text->valuestring);
            }
            pi++;
        }
        out->content = arena_strndup(a, buf_cstr(&b), b.len);
        buf_free(&b);
    } else {
        return px_fail(err, PX_EINVAL, param,
                       "message %zu: 'content' must be a string, an array of parts or null", idx);
    }
    return PX_OK;
}

/* ---- options ------------------------------------------------------------------------------ */

static int check_options(cJSON *root, struct px_error *err)
{
    cJSON *it;

    cJSON_ArrayForEach(it, root)
    {
        const char *k = it->string;
        const struct approach_option *o;

        if (!k || strncmp(k, "optillm_", 8) != 0 || strcmp(k, "optillm_approach") == 0)
            continue;
        o = approach_option_find(k + 8);
        if (!o)
            return px_fail(err, PX_EINVAL, k, "unknown option '%.64s'", k);
        double max = o->client_max > 0 ? o->client_max : o->max; /* a request's ceiling */

        if (!cJSON_IsNumber(it) || isnan(it->valuedouble) || it->valuedouble < o->min ||
            it->valuedouble > max || (o->integer && it->valuedouble != floor(it->valuedouble)))
            return px_fail(err, PX_EINVAL, k, "'%s' must be %s between %g and %g", k,
                           o->integer ? "an integer" : "a number", o->min, max);
    }
    return PX_OK;
}

double chat_option(const struct chat_request *req, const struct config *cfg, const char *name)
{
    char key[96];
    const struct approach_option *o = approach_option_find(name);
    double def = o ? o->def : 0;

    if (o)
        name = o->name; /* an alias reads the same value */
    if (req && req->body) {
        const cJSON *v;

        snprintf(key, sizeof(key), "optillm_%s", name);
        v = cJSON_GetObjectItemCaseSensitive(req->body, key);
        if (!cJSON_IsNumber(v) && o && o->alias) {
            snprintf(key, sizeof(key), "optillm_%s", o->alias);
            v = cJSON_GetObjectItemCaseSensitive(req->body, key);
        }
        if (cJSON_IsNumber(v) && o && o->client_lowers_only) {
            double server = cfg ? config_option(cfg, name, def) : def;

            return v->valuedouble < server ? v->valuedouble : server;
        }
        if (cJSON_IsNumber(v))
            return v->valuedouble;
    }
    return cfg ? config_option(cfg, name, def) : def;
}

/* ---- the request -------------------------------------------------------------------------- */

#define CHAT_MAX_DEPTH    64 /* JSON nesting: OpenAI bodies need about 8 */
#define CHAT_MAX_MESSAGES 4096

/* Nesting depth of a JSON value, stopping as soon as it exceeds the limit. */
static int json_depth(const cJSON *v, int depth)
{
    int max = depth;

    if (depth > CHAT_MAX_DEPTH)
        return depth;
    for (const cJSON *c = v->child; c; c = c->next) {
        int d = json_depth(c, depth + 1);

        if (d > max)
            max = d;
        if (max > CHAT_MAX_DEPTH)
            break;
    }
    return max;
}

static int get_int(cJSON *root, const char *name, long min, long max, long *out,
                   struct px_error *err)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);

    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < min ||
        v->valuedouble > max)
        return px_fail(err, PX_EINVAL, name, "'%s' must be an integer between %ld and %ld", name,
                       min, max);
    *out = (long)v->valuedouble;
    return 1;
}

int chat_request_parse(struct arena *a, const char *body, size_t len, const struct config *cfg,
                       struct chat_request *out, struct px_error *err)
{
    cJSON *root;
    cJSON *msgs, *v;
    char *tag = NULL;
    long lv;
    int rc;
    bool chosen = false;

    memset(out, 0, sizeof(*out));
    out->temperature = NAN;
    out->max_tokens = -1;
    /* Duplicate keys, trailing bytes and NULs are refused: a passthrough forwards the raw
     * bytes, which must mean to the upstream what they meant here. */
    root = json_parse_strict(body, len, err);
    if (!root)
        return PX_EINVAL;
    arena_defer(a, json_delete, root);
    out->body = root;
    if (!cJSON_IsObject(root))
        return px_fail(err, PX_EINVAL, NULL, "the request body must be a JSON object");
    if (json_depth(root, 0) > CHAT_MAX_DEPTH)
        return px_fail(err, PX_EINVAL, NULL, "the request body nests deeper than %d levels",
                       CHAT_MAX_DEPTH);

    v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (cJSON_IsNull(v))
        v = NULL;
    if (v && !cJSON_IsString(v))
        return px_fail(err, PX_EINVAL, "model", "'model' must be a string");
    /* Copied: the passthrough rewrites 'model' in the tree. */
    out->model = arena_strdup(a, v && v->valuestring[0] ? v->valuestring : cfg->model);

    msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs)
        return px_fail(err, PX_EINVAL, "messages", "'messages' is a required property");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return px_fail(err, PX_EINVAL, "messages", "'messages' must be a non-empty array");
    if (cJSON_GetArraySize(msgs) > CHAT_MAX_MESSAGES)
        return px_fail(err, PX_EINVAL, "messages", "'messages' has more than %d entries",
                       CHAT_MAX_MESSAGES);
    out->nmsgs = (size_t)cJSON_GetArraySize(msgs);
    out->msgs = arena_calloc(a, out->nmsgs, sizeof(*out->msgs));
    {
        size_t i = 0;
        cJSON *m;

        cJSON_ArrayForEach(m, msgs)
        {
            rc = parse_message(a, m, i, true, &tag, &out->tags_removed, &out->msgs[i], err);
            if (rc < 0)
                return rc;
            i++;
        }
    }

    lv = cfg->n > 0 ? cfg->n : 1;
    if ((rc = get_int(root, "n", 1, 128, &lv, err)) < 0)
        return rc;
    out->n = (int)lv;
    v = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (v && !cJSON_IsNull(v) && !cJSON_IsBool(v))
        return px_fail(err, PX_EINVAL, "stream", "'stream' must be a boolean");
    out->stream = cJSON_IsTrue(v);
    v = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsObject(v))
            return px_fail(err, PX_EINVAL, "stream_options", "'stream_options' must be an object");
        out->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "include_usage"));
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "temperature");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2)
            return px_fail(err, PX_EINVAL, "temperature",
                           "'temperature' must be a number between 0 and 2");
        out->temperature = v->valuedouble;
    }
    if ((rc = get_int(root, "max_completion_tokens", 1, 100000000, &lv, err)) < 0)
        return rc;
    if (rc == 1) {
        out->max_tokens = lv;
        out->max_is_completion = true;
    } else {
        if ((rc = get_int(root, "max_tokens", 1, 100000000, &lv, err)) < 0)
            return rc;
        if (rc == 1)
            out->max_tokens = lv;
    }
    if ((rc = check_options(root, err)) < 0)
        return rc;

    /* Approach selection: model prefix, then the body field, then a tag, then the server. */
    out->upstream_model = out->model;
    rc = route_parse_model(out->model, &out->route, &out->upstream_model, err);
    if (rc < 0)
        return rc;
    chosen = rc > 0;
    v = cJSON_GetObjectItemCaseSensitive(root, "optillm_approach");
    if (v && !cJSON_IsNull(v) && !cJSON_IsString(v))
        return px_fail(err, PX_EINVAL, "optillm_approach", "'optillm_approach' must be a string");
    if (!chosen && cJSON_IsString(v)) {
        if ((rc = route_parse_value(v->valuestring, &out->route, err)) < 0)
            return rc;
        chosen = true;
    }
    if (!chosen && tag && !cfg->no_approach_tags) {
        if ((rc = route_parse_value(tag, &out->route, err)) < 0)
            return rc;
        chosen = true;
    }
    if (!chosen && (rc = route_parse_value(cfg->approach, &out->route, err)) < 0)
        return rc;
    {
        char name[256];

        route_name(&out->route, name, sizeof(name));
        out->route_name = arena_strdup(a, name);
    }
    for (int i = 0; i < out->route.count; i++)
        if (out->route.steps[i]->code_execution && !cfg->enable_code_execution)
            return px_fail(err, PX_EINVAL, "model",
                           "approach '%s' runs code, and code execution is disabled on this "
                           "server (start it with --enable-code-execution or "
                           "OPTILLM_ENABLE_CODE_EXECUTION=1)",
                           out->route.steps[i]->slug);
    return chat_check_fields(a, out, err);
}

const char *chat_system(struct arena *a, const struct chat_request *req)
{
    struct buf b;

    buf_init(&b, 0);
    for (size_t i = 0; i < req->nmsgs; i++) {
        if (strcmp(req->msgs[i].role, "system") != 0 && strcmp(req->msgs[i].role, "developer") != 0)
            continue;
        if (b.len)
            buf_puts(&b, "\n\n");
        buf_puts(&b, req->msgs[i].content);
    }
    char *s = arena_strndup(a, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

int chat_bool_field(const struct chat_request *req, const char *name, bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req->body, name);

    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return -1;
    *out = cJSON_IsTrue(v);
    return 1;
}

const char *chat_last_user(const struct chat_request *req)
{
    for (size_t i = req->nmsgs; i > 0; i--)
        if (strcmp(req->msgs[i - 1].role, "user") == 0)
            return req->msgs[i - 1].content;
    return "";
}

/* ---- plugins: rewritten copies and read-only views ----------------------------------------- */

typedef const char *map_fn(void *arg, struct arena *a, const char *text);

/* Replaces the string item 'it' (a member of a cloned tree) with fn(its text). */
static void map_string(cJSON *it, struct arena *a, map_fn *fn, void *arg)
{
    const char *v;

    if (!cJSON_IsString(it) || !it->valuestring)
        return;
    v = fn(arg, a, it->valuestring);
    if (v != it->valuestring && strcmp(v, it->valuestring) != 0)
        cJSON_SetValuestring(it, v);
}

/* Every string value of a JSON tree through fn (in place). */
static void map_tree(cJSON *j, struct arena *a, map_fn *fn, void *arg)
{
    for (cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (cJSON_IsString(c))
            map_string(c, a, fn, arg);
        else
            map_tree(c, a, fn, arg);
    }
}

/* Tool-call arguments are JSON text: their string values are mapped one by one (a value with
 * newlines or quotes is seen unescaped, and the result stays valid JSON); arguments that do not
 * parse are mapped as text. */
static void map_arguments(cJSON *args, struct arena *a, map_fn *fn, void *arg)
{
    cJSON *parsed;
    char *before, *after;

    if (!cJSON_IsString(args))
        return;
    parsed = cJSON_ParseWithOpts(args->valuestring, NULL, 1);
    if (!cJSON_IsObject(parsed) && !cJSON_IsArray(parsed)) {
        cJSON_Delete(parsed);
        map_string(args, a, fn, arg);
        return;
    }
    before = cJSON_PrintUnformatted(parsed);
    map_tree(parsed, a, fn, arg);
    after = cJSON_PrintUnformatted(parsed);
    if (before && after && strcmp(before, after) != 0) /* else the client's text stays */
        cJSON_SetValuestring(args, after);
    cJSON_free(before);
    cJSON_free(after);
    cJSON_Delete(parsed);
}

int chat_request_map_text(struct arena *a, const struct chat_request *in, struct chat_request *out,
                          map_fn *fn, void *arg)
{
    struct chat_msg *msgs = arena_calloc(a, in->nmsgs ? in->nmsgs : 1, sizeof(*msgs));

    *out = *in;
    for (size_t i = 0; i < in->nmsgs; i++) {
        msgs[i].role = in->msgs[i].role;
        msgs[i].content = fn(arg, a, in->msgs[i].content ? in->msgs[i].content : "");
        if (in->msgs[i].raw) {
            cJSON *m = cJSON_Duplicate(in->msgs[i].raw, 1);
            cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            cJSON *it;

            arena_defer(a, json_delete, m);
            if (cJSON_IsString(content)) {
                map_string(content, a, fn, arg);
            } else if (cJSON_IsArray(content)) {
                cJSON_ArrayForEach(it, content)
                {
                    cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");

                    if (cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0)
                        map_string(cJSON_GetObjectItemCaseSensitive(it, "text"), a, fn, arg);
                }
            }
            cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(m, "tool_calls"))
            {
                cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "function");

                map_arguments(cJSON_GetObjectItemCaseSensitive(f, "arguments"), a, fn, arg);
            }
            map_string(cJSON_GetObjectItemCaseSensitive(m, "refusal"), a, fn, arg);
            msgs[i].raw = m;
        }
    }
    out->msgs = msgs;
    if (in->prev_answer)
        out->prev_answer = fn(arg, a, in->prev_answer);
    return PX_OK;
}

const char *chat_response_format(const struct chat_request *req, const struct cJSON **schema)
{
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(req->body, "response_format");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");

    if (schema)
        *schema = NULL;
    if (!cJSON_IsObject(rf) || !cJSON_IsString(type))
        return NULL;
    if (schema && strcmp(type->valuestring, "json_schema") == 0) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");

        *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    }
    return type->valuestring;
}

const char *chat_msg_tool_calls(struct arena *a, const struct chat_msg *m)
{
    const cJSON *tc = m->raw ? cJSON_GetObjectItemCaseSensitive(m->raw, "tool_calls") : NULL;
    char *s;
    const char *res;

    if (!cJSON_IsArray(tc) || cJSON_GetArraySize(tc) == 0)
        return NULL;
    s = cJSON_PrintUnformatted(tc);
    res = arena_strdup(a, s);
    cJSON_free(s);
    return res;
}
