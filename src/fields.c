/* fields.c: the client's request fields beyond the conversation. Which of them an approach's
 * upstream calls carry (every generation field on every call; response_format and the tools
 * group on answer calls only), which approaches can honour them (a request the route cannot
 * honour is a 400, never a 200 with the field dropped), and tool calls as values: a canonical
 * key for voting and a readable rendering for prompts.
 *
 * Approaches never copy client JSON: the engine's call builder calls fields_copy(). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "chat.h"
#include "internal.h"

/* Members the approach (or the engine) decides per call: never copied from the client. */
static const char *const own_fields[] = {
    "model",
    "messages",
    "n",
    "stream",
    "stream_options",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "spl_learning", /* OptiLLM's per-request switch of its spl plugin (ours too) */
    NULL,
};

/* Members only calls whose output can become the answer carry (llm_params.answer). */
static const char *const answer_fields[] = {
    "response_format", "tools", "tool_choice", "parallel_tool_calls", NULL,
};

/* The deprecated function-calling members: refused on approach routes (chat_check_fields). */
static const char *const legacy_fields[] = {"functions", "function_call", NULL};

static bool in_list(const char *const *list, const char *k)
{
    for (; *list; list++)
        if (strcmp(*list, k) == 0)
            return true;
    return false;
}

void fields_copy(cJSON *out, const cJSON *body, bool answer)
{
    const cJSON *it;

    if (!cJSON_IsObject(body))
        return;
    cJSON_ArrayForEach(it, body)
    {
        const char *k = it->string;

        if (!k || strncmp(k, "optillm_", 8) == 0 || in_list(own_fields, k) ||
            in_list(legacy_fields, k) || (!answer && in_list(answer_fields, k)))
            continue;
        if (cJSON_GetObjectItemCaseSensitive(out, k))
            continue; /* set by the stage, or a repeated key: the first one wins */
        cJSON_AddItemToObject(out, k, cJSON_Duplicate(it, 1));
    }
}

static bool present(const cJSON *body, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, k);

    return v && !cJSON_IsNull(v);
}

/* A tools member that offers tools: not null, not an empty array. */
static bool offers_tools(const cJSON *body)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "tools");

    return v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0);
}

bool chat_has_tools(const struct chat_request *req)
{
    return req && offers_tools(req->body);
}

/* A response_format that asks for more than plain text. */
static bool structured(const cJSON *body)
{
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");

    if (!rf || cJSON_IsNull(rf))
        return false;
    return !(cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0);
}

/* "self_consistency, majority_voting, ..." : the registered approaches with a capability. */
static const char *capable(struct arena *a, bool tools)
{
    struct buf b;
    char *s;

    buf_init(&b, 0);
    for (size_t i = 0; i < approach_registry_len; i++) {
        const struct approach *ap = approach_registry[i];

        if (tools ? ap->tools : ap->response_format)
            buf_printf(&b, "%s%s", b.len ? ", " : "", ap->slug);
    }
    s = arena_strndup(a, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

int chat_check_fields(struct arena *a, const struct chat_request *req, struct px_error *err)
{
    const struct route *r = &req->route;
    bool tools = offers_tools(req->body);
    bool rf = structured(req->body);

    for (int i = 0; i < r->count; i++) {
        const struct approach *ap = r->steps[i];

        for (const char *const *l = legacy_fields; *l; l++)
            if (present(req->body, *l))
                return px_fail(err, PX_EINVAL, *l,
                               "'%s' is not supported with approach '%s'; send 'tools' instead "
                               "(approaches that support tools: %s)",
                               *l, ap->slug, capable(a, true));
        if (tools && !ap->tools)
            return px_fail(err, PX_EINVAL, "tools",
                           "approach '%s' does not support tools; approaches that do: %s (or "
                           "send the request without an approach)",
                           ap->slug, capable(a, true));
        if (rf && !ap->response_format)
            return px_fail(err, PX_EINVAL, "response_format",
                           "approach '%s' does not support response_format; approaches that do: "
                           "%s (or send the request without an approach)",
                           ap->slug, capable(a, false));
    }
    return PX_OK;
}

/* ---- tool calls as values ------------------------------------------------------------------ */

static int key_cmp(const void *pa, const void *pb)
{
    const cJSON *a = *(const cJSON *const *)pa;
    const cJSON *b = *(const cJSON *const *)pb;

    return strcmp(a->string ? a->string : "", b->string ? b->string : "");
}

static void put_json(struct buf *b, const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);

    buf_puts(b, s ? s : "null");
    cJSON_free(s);
}

/* v serialised with every object's keys in byte order, no white space. */
static void canon(struct buf *b, const cJSON *v)
{
    const cJSON *c;

    if (cJSON_IsObject(v)) {
        size_t n = 0;
        size_t i = 0;
        const cJSON **kids;

        cJSON_ArrayForEach(c, v) n++;
        kids = xcalloc(n ? n : 1, sizeof(*kids));
        cJSON_ArrayForEach(c, v) kids[i++] = c;
        qsort(kids, n, sizeof(*kids), key_cmp);
        buf_puts(b, "{");
        for (i = 0; i < n; i++) {
            cJSON *k = cJSON_CreateString(kids[i]->string ? kids[i]->string : "");

            if (i)
                buf_puts(b, ",");
            put_json(b, k);
            cJSON_Delete(k);
            buf_puts(b, ":");
            canon(b, kids[i]);
        }
        buf_puts(b, "}");
        free(kids);
    } else if (cJSON_IsArray(v)) {
        bool first = true;

        buf_puts(b, "[");
        cJSON_ArrayForEach(c, v)
        {
            if (!first)
                buf_puts(b, ",");
            first = false;
            canon(b, c);
        }
        buf_puts(b, "]");
    } else {
        put_json(b, v);
    }
}

/* name(arguments) of one tool call, arguments canonical when they parse. Heap string. */
static char *call_key(const cJSON *call)
{
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    struct buf b;

    buf_init(&b, 0);
    buf_puts(&b, cJSON_IsString(name) ? name->valuestring : "?");
    buf_puts(&b, "(");
    if (cJSON_IsString(args)) {
        cJSON *parsed = cJSON_Parse(args->valuestring);

        if (parsed)
            canon(&b, parsed);
        else
            buf_puts(&b, args->valuestring);
        cJSON_Delete(parsed);
    } else if (args) {
        canon(&b, args);
    }
    buf_puts(&b, ")");
    return buf_take(&b, NULL);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The calls' keys, sorted (sort) or in order, joined by 'sep'. NULL when there are none. */
static const char *join_calls(struct arena *a, const char *tool_calls, const char *prefix,
                              const char *sep, bool sort)
{
    cJSON *arr = tool_calls ? cJSON_Parse(tool_calls) : NULL;
    const cJSON *c;
    char **keys;
    size_t n = 0;
    struct buf b;
    const char *s;

    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
        cJSON_Delete(arr);
        return "";
    }
    keys = xcalloc((size_t)cJSON_GetArraySize(arr), sizeof(*keys));
    cJSON_ArrayForEach(c, arr) keys[n++] = call_key(c);
    cJSON_Delete(arr);
    if (sort)
        qsort(keys, n, sizeof(*keys), str_cmp);
    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        buf_printf(&b, "%s%s%s", i ? sep : "", prefix, keys[i]);
        free(keys[i]);
    }
    free(keys);
    s = arena_strndup(a, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

const char *llm_tool_calls_key(struct arena *a, const char *tool_calls)
{
    return join_calls(a, tool_calls, "", ";", true);
}

const char *llm_tool_calls_text(struct arena *a, const char *tool_calls)
{
    return join_calls(a, tool_calls, "Tool call: ", "\n", false);
}
