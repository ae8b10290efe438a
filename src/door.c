/* door.c: the front doors (door.h): request translation into chat completions, and the
 * translation of the chat path's output (JSON, SSE chunks, errors) back into Anthropic
 * Messages or OpenAI Responses shapes. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "door.h"
#include "internal.h"

#define DOOR_MAX_TOOLS 128
#define DOOR_LINE_MAX  (64u << 20)

enum door_mode { MODE_NONE = 0, MODE_SSE, MODE_BUFFER };

struct tcall {
    char *id;
    char *name;
    struct buf args;
    int index;     /* Anthropic content block index / Responses output_index */
    int oai_index; /* the chunk's tool_calls[].index (-1 when it sent none) */
    char item_id[48];
};

struct door {
    enum door_kind kind;
    char *model; /* the model string the client sent */
    cJSON *echo; /* Responses: request fields the response object echoes */
    int status;  /* reply status (door_begin) */
    enum door_mode mode;
    struct buf in;   /* MODE_BUFFER: the body; MODE_SSE: the partial line */
    struct buf data; /* MODE_SSE: data lines of the current event */
    char id[64];
    long long created;

    /* SSE translation state. */
    bool started;    /* the start events were written */
    bool ended;      /* [DONE] handled, or an error ended the stream */
    int next_index;  /* next Anthropic block index / Responses output index */
    int open;        /* open block: -1 none, 0 text, 1 + k tool call k */
    struct buf text; /* Responses: text of the open message item */
    char msg_item[48];
    int msg_index;
    struct tcall tools[DOOR_MAX_TOOLS];
    int ntools;
    const char *finish; /* chat finish_reason (static string) */
    long in_tokens, out_tokens, reasoning_tokens;
    long seq;      /* Responses sequence_number */
    cJSON *output; /* Responses: finished output items */
};

/* ---- small helpers ---------------------------------------------------------------------------
 */

struct door *door_create(enum door_kind kind)
{
    struct door *d = xcalloc(1, sizeof(*d));

    d->kind = kind;
    d->open = -1;
    buf_init(&d->in, DOOR_LINE_MAX);
    buf_init(&d->data, DOOR_LINE_MAX);
    buf_init(&d->text, 0);
    d->created = (long long)time(NULL);
    px_random_id(d->id, sizeof(d->id), kind == DOOR_RESPONSES ? "resp_" : "msg_", 2);
    return d;
}

void door_free(struct door *d)
{
    if (!d)
        return;
    free(d->model);
    cJSON_Delete(d->echo);
    cJSON_Delete(d->output);
    buf_free(&d->in);
    buf_free(&d->data);
    buf_free(&d->text);
    for (int i = 0; i < d->ntools; i++) {
        free(d->tools[i].id);
        free(d->tools[i].name);
        buf_free(&d->tools[i].args);
    }
    free(d);
}

enum door_kind door_kind_of(const struct door *d)
{
    return d->kind;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = get(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void copy_field(cJSON *dst, const char *dk, const cJSON *src, const char *sk)
{
    const cJSON *v = get(src, sk);

    if (v && !cJSON_IsNull(v))
        cJSON_AddItemToObject(dst, dk, cJSON_Duplicate(v, 1));
}

/* Text of an Anthropic/Responses content value: a string, or the text of its text blocks
 * (types listed in 'types', NULL-terminated) joined by "\n". NULL when another block type is
 * present and 'strict'. */
static bool is_text_type(const char *t, const char *const *types)
{
    for (; t && *types; types++)
        if (strcmp(t, *types) == 0)
            return true;
    return false;
}

static void join_text(struct buf *b, const char *t)
{
    if (b->len)
        buf_puts(b, "\n");
    buf_puts(b, t);
}

static char *print(cJSON *o, size_t *len)
{
    char *s = cJSON_PrintUnformatted(o);
    char *r;

    *len = strlen(s);
    r = xstrndup(s, *len);
    cJSON_free(s);
    return r;
}

/* Our own fields (optillm_approach, optillm_<option>) go through to the chat path. */
static void copy_optillm(cJSON *chat, const cJSON *req)
{
    for (const cJSON *it = req->child; it; it = it->next)
        if (it->string && strncmp(it->string, "optillm_", 8) == 0)
            cJSON_AddItemToObject(chat, it->string, cJSON_Duplicate(it, 1));
}

static void add_stream(cJSON *chat, const cJSON *req)
{
    if (cJSON_IsTrue(get(req, "stream"))) {
        cJSON_AddTrueToObject(chat, "stream");
        cJSON *so = cJSON_AddObjectToObject(chat, "stream_options");
        cJSON_AddTrueToObject(so, "include_usage");
    }
}

static int number_field(cJSON *chat, const char *dk, const cJSON *req, const char *sk,
                        struct px_error *err)
{
    const cJSON *v = get(req, sk);

    if (!v || cJSON_IsNull(v))
        return PX_OK;
    if (!cJSON_IsNumber(v))
        return px_fail(err, PX_EINVAL, sk, "'%s' must be a number", sk);
    cJSON_AddNumberToObject(chat, dk, v->valuedouble);
    return PX_OK;
}

/* ---- Anthropic Messages: request -------------------------------------------------------------
 */

static const char *const anth_text_types[] = {"text", NULL};

/* An Anthropic image block as an OpenAI image_url part. */
static cJSON *anth_image(const cJSON *blk, struct px_error *err)
{
    const cJSON *src = get(blk, "source");
    const char *type = str(src, "type");
    cJSON *part;
    char *url = NULL;

    if (type && strcmp(type, "base64") == 0 && str(src, "media_type") && str(src, "data")) {
        size_t n = strlen(str(src, "media_type")) + strlen(str(src, "data")) + 16;

        url = xmalloc(n);
        snprintf(url, n, "data:%s;base64,%s", str(src, "media_type"), str(src, "data"));
    } else if (type && strcmp(type, "url") == 0 && str(src, "url")) {
        url = xstrdup(str(src, "url"));
    } else {
        px_fail(err, PX_EINVAL, "messages", "image blocks need a base64 or url source");
        return NULL;
    }
    part = cJSON_CreateObject();
    cJSON_AddStringToObject(part, "type", "image_url");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(part, "image_url"), "url", url);
    free(url);
    return part;
}

/* A tool_result's content as text. */
static void anth_result_text(const cJSON *c, struct buf *b)
{
    const cJSON *blk;

    if (cJSON_IsString(c)) {
        buf_puts(b, c->valuestring);
        return;
    }
    cJSON_ArrayForEach(blk, c)
    {
        if (is_text_type(str(blk, "type"), anth_text_types) && str(blk, "text"))
            join_text(b, str(blk, "text"));
    }
}

static int anth_user(cJSON *out, const cJSON *content, struct px_error *err)
{
    cJSON *parts = cJSON_CreateArray();
    struct buf text;
    bool only_text = true;
    const cJSON *blk;
    int rc = PX_OK;

    buf_init(&text, 0);
    cJSON_ArrayForEach(blk, content)
    {
        const char *t = str(blk, "type");

        if (!t) {
            rc = px_fail(err, PX_EINVAL, "messages", "every content block needs a 'type'");
            break;
        }
        if (strcmp(t, "tool_result") == 0) {
            cJSON *m = cJSON_CreateObject();
            struct buf r;

            buf_init(&r, 0);
            if (cJSON_IsTrue(get(blk, "is_error")))
                buf_puts(&r, "Error: ");
            anth_result_text(get(blk, "content"), &r);
            cJSON_AddStringToObject(m, "role", "tool");
            cJSON_AddStringToObject(m, "tool_call_id",
                                    str(blk, "tool_use_id") ? str(blk, "tool_use_id") : "");
            cJSON_AddStringToObject(m, "content", buf_cstr(&r));
            buf_free(&r);
            cJSON_AddItemToArray(out, m);
        } else if (strcmp(t, "text") == 0) {
            cJSON *p = cJSON_CreateObject();

            cJSON_AddStringToObject(p, "type", "text");
            cJSON_AddStringToObject(p, "text", str(blk, "text") ? str(blk, "text") : "");
            cJSON_AddItemToArray(parts, p);
            join_text(&text, str(blk, "text") ? str(blk, "text") : "");
        } else if (strcmp(t, "image") == 0) {
            cJSON *p = anth_image(blk, err);

            if (!p) {
                rc = PX_EINVAL;
                break;
            }
            cJSON_AddItemToArray(parts, p);
            only_text = false;
        } else {
            rc = px_fail(err, PX_EINVAL, "messages",
                         "content blocks of type '%.40s' are not supported by this proxy", t);
            break;
        }
    }
    if (rc == PX_OK && cJSON_GetArraySize(parts) > 0) {
        cJSON *m = cJSON_CreateObject();

        cJSON_AddStringToObject(m, "role", "user");
        if (only_text) {
            cJSON_AddStringToObject(m, "content", buf_cstr(&text));
            cJSON_Delete(parts);
        } else {
            cJSON_AddItemToObject(m, "content", parts);
        }
        parts = NULL;
        cJSON_AddItemToArray(out, m);
    }
    cJSON_Delete(parts);
    buf_free(&text);
    return rc;
}

static int anth_assistant(cJSON *out, const cJSON *content, struct px_error *err)
{
    cJSON *m = cJSON_CreateObject();
    cJSON *calls = cJSON_CreateArray();
    struct buf text;
    const cJSON *blk;
    int rc = PX_OK;

    buf_init(&text, 0);
    cJSON_ArrayForEach(blk, content)
    {
        const char *t = str(blk, "type");

        if (t && strcmp(t, "text") == 0) {
            join_text(&text, str(blk, "text") ? str(blk, "text") : "");
        } else if (t && strcmp(t, "tool_use") == 0) {
            cJSON *c = cJSON_CreateObject();
            cJSON *f;
            const cJSON *input = get(blk, "input");
            char *args = input ? cJSON_PrintUnformatted(input) : NULL;

            cJSON_AddStringToObject(c, "id", str(blk, "id") ? str(blk, "id") : "");
            cJSON_AddStringToObject(c, "type", "function");
            f = cJSON_AddObjectToObject(c, "function");
            cJSON_AddStringToObject(f, "name", str(blk, "name") ? str(blk, "name") : "");
            cJSON_AddStringToObject(f, "arguments", args ? args : "{}");
            cJSON_free(args);
            cJSON_AddItemToArray(calls, c);
        } else if (t && (strcmp(t, "thinking") == 0 || strcmp(t, "redacted_thinking") == 0)) {
            continue; /* the upstream cannot verify Anthropic's thinking signatures */
        } else {
            rc = px_fail(err, PX_EINVAL, "messages",
                         "assistant content blocks of type '%.40s' are not supported", t ? t : "?");
            break;
        }
    }
    cJSON_AddStringToObject(m, "role", "assistant");
    if (text.len || cJSON_GetArraySize(calls) == 0)
        cJSON_AddStringToObject(m, "content", buf_cstr(&text));
    else
        cJSON_AddNullToObject(m, "content");
    if (cJSON_GetArraySize(calls) > 0) {
        cJSON_AddItemToObject(m, "tool_calls", calls);
        calls = NULL;
    }
    cJSON_Delete(calls);
    buf_free(&text);
    if (rc == PX_OK)
        cJSON_AddItemToArray(out, m);
    else
        cJSON_Delete(m);
    return rc;
}

static int anth_tools(cJSON *chat, const cJSON *req, struct px_error *err)
{
    const cJSON *tools = get(req, "tools"), *t, *tc = get(req, "tool_choice");

    if (tools && !cJSON_IsNull(tools)) {
        cJSON *arr;

        if (!cJSON_IsArray(tools))
            return px_fail(err, PX_EINVAL, "tools", "'tools' must be an array");
        arr = cJSON_AddArrayToObject(chat, "tools");
        cJSON_ArrayForEach(t, tools)
        {
            const char *type = str(t, "type");
            cJSON *o, *f;

            if (!str(t, "name") || (type && strcmp(type, "custom") != 0))
                return px_fail(err, PX_EINVAL, "tools",
                               "only client tools {name, description, input_schema} are "
                               "supported (not server tools such as '%.40s')",
                               type ? type : "?");
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "function");
            f = cJSON_AddObjectToObject(o, "function");
            cJSON_AddStringToObject(f, "name", str(t, "name"));
            copy_field(f, "description", t, "description");
            if (get(t, "input_schema"))
                copy_field(f, "parameters", t, "input_schema");
            else
                cJSON_AddItemToObject(f, "parameters", cJSON_Parse("{\"type\":\"object\"}"));
            cJSON_AddItemToArray(arr, o);
        }
    }
    if (cJSON_IsObject(tc)) {
        const char *type = str(tc, "type");

        if (type && strcmp(type, "auto") == 0) {
            cJSON_AddStringToObject(chat, "tool_choice", "auto");
        } else if (type && strcmp(type, "any") == 0) {
            cJSON_AddStringToObject(chat, "tool_choice", "required");
        } else if (type && strcmp(type, "none") == 0) {
            cJSON_AddStringToObject(chat, "tool_choice", "none");
        } else if (type && strcmp(type, "tool") == 0 && str(tc, "name")) {
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "type", "function");
            cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "function"), "name",
                                    str(tc, "name"));
            cJSON_AddItemToObject(chat, "tool_choice", o);
        } else {
            return px_fail(err, PX_EINVAL, "tool_choice", "unknown tool_choice type");
        }
        if (cJSON_IsTrue(get(tc, "disable_parallel_tool_use")))
            cJSON_AddFalseToObject(chat, "parallel_tool_calls");
    } else if (tc && !cJSON_IsNull(tc)) {
        return px_fail(err, PX_EINVAL, "tool_choice", "'tool_choice' must be an object");
    }
    return PX_OK;
}

static int anth_request(struct door *d, const cJSON *req, cJSON *chat, struct px_error *err)
{
    const cJSON *sys = get(req, "system"), *msgs = get(req, "messages"), *m, *v;
    cJSON *out;
    int rc;

    (void)d;
    out = cJSON_AddArrayToObject(chat, "messages");
    if (cJSON_IsString(sys) || cJSON_IsArray(sys)) {
        struct buf b;
        const cJSON *blk;
        cJSON *sm = cJSON_CreateObject();

        buf_init(&b, 0);
        if (cJSON_IsString(sys))
            buf_puts(&b, sys->valuestring);
        cJSON_ArrayForEach(blk, sys)
        {
            if (str(blk, "text"))
                join_text(&b, str(blk, "text"));
        }
        cJSON_AddStringToObject(sm, "role", "system");
        cJSON_AddStringToObject(sm, "content", buf_cstr(&b));
        cJSON_AddItemToArray(out, sm);
        buf_free(&b);
    } else if (sys && !cJSON_IsNull(sys)) {
        return px_fail(err, PX_EINVAL, "system", "'system' must be a string or text blocks");
    }
    if (!cJSON_IsArray(msgs))
        return px_fail(err, PX_EINVAL, "messages", "'messages' must be an array");
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = str(m, "role");
        const cJSON *c = get(m, "content");

        if (!role || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
            return px_fail(err, PX_EINVAL, "messages",
                           "each message needs role 'user' or 'assistant'");
        if (cJSON_IsString(c)) {
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "role", role);
            cJSON_AddStringToObject(o, "content", c->valuestring);
            cJSON_AddItemToArray(out, o);
            continue;
        }
        if (!cJSON_IsArray(c))
            return px_fail(err, PX_EINVAL, "messages",
                           "message content must be a string or an array of blocks");
        rc = strcmp(role, "user") == 0 ? anth_user(out, c, err) : anth_assistant(out, c, err);
        if (rc < 0)
            return rc;
    }
    v = get(req, "max_tokens");
    if (!cJSON_IsNumber(v))
        return px_fail(err, PX_EINVAL, "max_tokens", "'max_tokens' is required (a number)");
    cJSON_AddNumberToObject(chat, "max_tokens", v->valuedouble);
    if ((rc = number_field(chat, "temperature", req, "temperature", err)) < 0 ||
        (rc = number_field(chat, "top_p", req, "top_p", err)) < 0)
        return rc;
    v = get(req, "stop_sequences");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0)
        cJSON_AddItemToObject(chat, "stop", cJSON_Duplicate(v, 1));
    if (str(get(req, "metadata"), "user_id"))
        cJSON_AddStringToObject(chat, "user", str(get(req, "metadata"), "user_id"));
    return anth_tools(chat, req, err);
}

/* ---- OpenAI Responses: request ---------------------------------------------------------------
 */

static const char *const resp_text_types[] = {"input_text", "output_text", "text", "refusal", NULL};

static int resp_message(cJSON *out, const cJSON *item, struct px_error *err)
{
    const char *role = str(item, "role");
    const cJSON *c = get(item, "content"), *p;
    cJSON *m, *parts;
    struct buf text;
    bool only_text = true;

    if (!role || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
                  strcmp(role, "system") != 0 && strcmp(role, "developer") != 0))
        return px_fail(err, PX_EINVAL, "input",
                       "input messages need role user, assistant, system or developer");
    m = cJSON_CreateObject();
    /* developer -> system: most chat-completions upstreams know only system. */
    cJSON_AddStringToObject(m, "role", strcmp(role, "developer") == 0 ? "system" : role);
    if (cJSON_IsString(c)) {
        cJSON_AddStringToObject(m, "content", c->valuestring);
        cJSON_AddItemToArray(out, m);
        return PX_OK;
    }
    if (!cJSON_IsArray(c)) {
        cJSON_Delete(m);
        return px_fail(err, PX_EINVAL, "input", "message content must be a string or an array");
    }
    buf_init(&text, 0);
    parts = cJSON_CreateArray();
    cJSON_ArrayForEach(p, c)
    {
        const char *t = str(p, "type");

        if (is_text_type(t, resp_text_types)) {
            const char *s = str(p, "text") ? str(p, "text") : str(p, "refusal");
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "type", "text");
            cJSON_AddStringToObject(o, "text", s ? s : "");
            cJSON_AddItemToArray(parts, o);
            join_text(&text, s ? s : "");
        } else if (t && strcmp(t, "input_image") == 0 && str(p, "image_url")) {
            cJSON *o = cJSON_CreateObject();
            cJSON *iu;

            cJSON_AddStringToObject(o, "type", "image_url");
            iu = cJSON_AddObjectToObject(o, "image_url");
            cJSON_AddStringToObject(iu, "url", str(p, "image_url"));
            copy_field(iu, "detail", p, "detail");
            cJSON_AddItemToArray(parts, o);
            only_text = false;
        } else {
            cJSON_Delete(parts);
            cJSON_Delete(m);
            buf_free(&text);
            return px_fail(err, PX_EINVAL, "input",
                           "content parts of type '%.40s' are not supported by this proxy "
                           "(input_text, input_image with image_url, output_text)",
                           t ? t : "?");
        }
    }
    if (only_text || strcmp(role, "user") != 0) {
        cJSON_AddStringToObject(m, "content", buf_cstr(&text));
        cJSON_Delete(parts);
    } else {
        cJSON_AddItemToObject(m, "content", parts);
    }
    buf_free(&text);
    cJSON_AddItemToArray(out, m);
    return PX_OK;
}

static int resp_input(cJSON *out, const cJSON *input, struct px_error *err)
{
    const cJSON *item;
    cJSON *last_calls = NULL; /* tool_calls of the assistant message function_calls join */

    if (cJSON_IsString(input)) {
        cJSON *m = cJSON_CreateObject();

        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(out, m);
        return PX_OK;
    }
    if (!cJSON_IsArray(input))
        return px_fail(err, PX_EINVAL, "input", "'input' must be a string or an array of items");
    cJSON_ArrayForEach(item, input)
    {
        const char *t = str(item, "type");
        int rc;

        if (!t || strcmp(t, "message") == 0) {
            if ((rc = resp_message(out, item, err)) < 0)
                return rc;
            last_calls = NULL;
            continue;
        }
        if (strcmp(t, "function_call") == 0) {
            cJSON *c = cJSON_CreateObject(), *f;

            if (!last_calls) {
                cJSON *prev = cJSON_GetArrayItem(out, cJSON_GetArraySize(out) - 1);
                const char *pr = str(prev, "role");

                if (pr && strcmp(pr, "assistant") == 0 && !get(prev, "tool_calls")) {
                    last_calls = cJSON_AddArrayToObject(prev, "tool_calls");
                } else {
                    cJSON *m = cJSON_CreateObject();

                    cJSON_AddStringToObject(m, "role", "assistant");
                    cJSON_AddNullToObject(m, "content");
                    last_calls = cJSON_AddArrayToObject(m, "tool_calls");
                    cJSON_AddItemToArray(out, m);
                }
            }
            cJSON_AddStringToObject(c, "id", str(item, "call_id") ? str(item, "call_id") : "");
            cJSON_AddStringToObject(c, "type", "function");
            f = cJSON_AddObjectToObject(c, "function");
            cJSON_AddStringToObject(f, "name", str(item, "name") ? str(item, "name") : "");
            cJSON_AddStringToObject(f, "arguments",
                                    str(item, "arguments") ? str(item, "arguments") : "{}");
            cJSON_AddItemToArray(last_calls, c);
            continue;
        }
        last_calls = NULL;
        if (strcmp(t, "function_call_output") == 0) {
            cJSON *m = cJSON_CreateObject();
            const cJSON *o = get(item, "output");
            struct buf b;

            buf_init(&b, 0);
            if (cJSON_IsString(o)) {
                buf_puts(&b, o->valuestring);
            } else {
                const cJSON *p;

                cJSON_ArrayForEach(p, o)
                {
                    if (str(p, "text"))
                        join_text(&b, str(p, "text"));
                }
            }
            cJSON_AddStringToObject(m, "role", "tool");
            cJSON_AddStringToObject(m, "tool_call_id",
                                    str(item, "call_id") ? str(item, "call_id") : "");
            cJSON_AddStringToObject(m, "content", buf_cstr(&b));
            buf_free(&b);
            cJSON_AddItemToArray(out, m);
        } else if (strcmp(t, "reasoning") == 0) {
            continue; /* encrypted reasoning of another model: not for the upstream */
        } else if (strcmp(t, "item_reference") == 0) {
            return px_fail(err, PX_EINVAL, "input",
                           "item_reference is not supported: this proxy stores no responses "
                           "(store: false); send the items themselves");
        } else {
            return px_fail(err, PX_EINVAL, "input",
                           "input items of type '%.40s' are not supported by this proxy", t);
        }
    }
    return PX_OK;
}

static int resp_tools(cJSON *chat, const cJSON *req, struct px_error *err)
{
    const cJSON *tools = get(req, "tools"), *t, *tc = get(req, "tool_choice");

    if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0) {
        cJSON *arr = cJSON_AddArrayToObject(chat, "tools");

        cJSON_ArrayForEach(t, tools)
        {
            const char *type = str(t, "type");
            cJSON *o, *f;

            if (!type || strcmp(type, "function") != 0 || !str(t, "name"))
                return px_fail(err, PX_EINVAL, "tools",
                               "only function tools are supported by this proxy (not '%.40s')",
                               type ? type : "?");
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "function");
            f = cJSON_AddObjectToObject(o, "function");
            cJSON_AddStringToObject(f, "name", str(t, "name"));
            copy_field(f, "description", t, "description");
            copy_field(f, "parameters", t, "parameters");
            copy_field(f, "strict", t, "strict");
            cJSON_AddItemToArray(arr, o);
        }
    } else if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools)) {
        return px_fail(err, PX_EINVAL, "tools", "'tools' must be an array");
    }
    if (cJSON_IsString(tc)) {
        cJSON_AddStringToObject(chat, "tool_choice", tc->valuestring);
    } else if (cJSON_IsObject(tc)) {
        const char *type = str(tc, "type");
        cJSON *o;

        if (!type || strcmp(type, "function") != 0 || !str(tc, "name"))
            return px_fail(err, PX_EINVAL, "tool_choice",
                           "tool_choice must be none, auto, required or {type: function, name}");
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "function"), "name", str(tc, "name"));
        cJSON_AddItemToObject(chat, "tool_choice", o);
    }
    if (cJSON_IsBool(get(req, "parallel_tool_calls")))
        copy_field(chat, "parallel_tool_calls", req, "parallel_tool_calls");
    return PX_OK;
}

static int resp_format(cJSON *chat, const cJSON *req, struct px_error *err)
{
    const cJSON *f = get(get(req, "text"), "format");
    const char *type = str(f, "type");

    if (!f || !type || strcmp(type, "text") == 0)
        return PX_OK;
    if (strcmp(type, "json_object") == 0) {
        cJSON_AddStringToObject(cJSON_AddObjectToObject(chat, "response_format"), "type",
                                "json_object");
        return PX_OK;
    }
    if (strcmp(type, "json_schema") == 0) {
        cJSON *rf = cJSON_AddObjectToObject(chat, "response_format");
        cJSON *js;

        cJSON_AddStringToObject(rf, "type", "json_schema");
        js = cJSON_AddObjectToObject(rf, "json_schema");
        cJSON_AddStringToObject(js, "name", str(f, "name") ? str(f, "name") : "response");
        copy_field(js, "description", f, "description");
        copy_field(js, "schema", f, "schema");
        copy_field(js, "strict", f, "strict");
        return PX_OK;
    }
    return px_fail(err, PX_EINVAL, "text.format", "unknown text.format type '%.40s'", type);
}

static int resp_request(struct door *d, const cJSON *req, cJSON *chat, struct px_error *err)
{
    const cJSON *v;
    cJSON *out;
    int rc;
    static const char *const echoed[] = {"instructions", "max_output_tokens",
                                         "metadata",     "parallel_tool_calls",
                                         "temperature",  "top_p",
                                         "tool_choice",  "tools",
                                         "text",         "user",
                                         "reasoning",    NULL};

    v = get(req, "previous_response_id");
    if (v && !cJSON_IsNull(v))
        return px_fail(err, PX_EINVAL, "previous_response_id",
                       "previous_response_id is not supported: this proxy stores no responses "
                       "(every response is store: false). Send the whole conversation in "
                       "'input' instead.");
    v = get(req, "conversation");
    if (v && !cJSON_IsNull(v))
        return px_fail(err, PX_EINVAL, "conversation",
                       "conversations are not supported: this proxy stores no state");
    if (cJSON_IsTrue(get(req, "background")))
        return px_fail(err, PX_EINVAL, "background", "background responses are not supported");
    if (get(req, "prompt") && !cJSON_IsNull(get(req, "prompt")))
        return px_fail(err, PX_EINVAL, "prompt", "stored prompts are not supported");
    out = cJSON_AddArrayToObject(chat, "messages");
    v = get(req, "instructions");
    if (cJSON_IsString(v)) {
        cJSON *m = cJSON_CreateObject();

        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", v->valuestring);
        cJSON_AddItemToArray(out, m);
    }
    if ((rc = resp_input(out, get(req, "input"), err)) < 0)
        return rc;
    if ((rc = number_field(chat, "max_tokens", req, "max_output_tokens", err)) < 0 ||
        (rc = number_field(chat, "temperature", req, "temperature", err)) < 0 ||
        (rc = number_field(chat, "top_p", req, "top_p", err)) < 0)
        return rc;
    if (str(get(req, "reasoning"), "effort"))
        cJSON_AddStringToObject(chat, "reasoning_effort", str(get(req, "reasoning"), "effort"));
    if (str(req, "user"))
        copy_field(chat, "user", req, "user");
    if ((rc = resp_tools(chat, req, err)) < 0 || (rc = resp_format(chat, req, err)) < 0)
        return rc;
    d->echo = cJSON_CreateObject();
    for (const char *const *k = echoed; *k; k++)
        copy_field(d->echo, *k, req, *k);
    return PX_OK;
}

/* ---- request entry points --------------------------------------------------------------------
 */

int door_request(struct door *d, const char *body, size_t len, char **chat, size_t *chat_len,
                 struct px_error *err)
{
    cJSON *req = cJSON_ParseWithLength(body, len);
    cJSON *out;
    const char *model;
    int rc;

    *chat = NULL;
    if (!cJSON_IsObject(req)) {
        cJSON_Delete(req);
        return px_fail(err, PX_EINVAL, NULL, "the request body is not a JSON object");
    }
    model = str(req, "model");
    if (!model || !*model) {
        cJSON_Delete(req);
        return px_fail(err, PX_EINVAL, "model", "'model' is required (a string)");
    }
    free(d->model);
    d->model = xstrdup(model);
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "model", model);
    rc = d->kind == DOOR_MESSAGES ? anth_request(d, req, out, err) : resp_request(d, req, out, err);
    if (rc == PX_OK) {
        add_stream(out, req);
        copy_optillm(out, req);
        *chat = print(out, chat_len);
    }
    cJSON_Delete(out);
    cJSON_Delete(req);
    return rc;
}

int door_count_tokens(const char *body, size_t len, long *tokens, struct px_error *err)
{
    cJSON *req = cJSON_ParseWithLength(body, len);
    size_t bytes = 0;
    static const char *const keys[] = {"system", "messages", "tools", NULL};

    if (!cJSON_IsObject(req) || !cJSON_IsArray(get(req, "messages"))) {
        cJSON_Delete(req);
        return px_fail(err, PX_EINVAL, "messages", "'messages' must be an array");
    }
    for (const char *const *k = keys; *k; k++) {
        const cJSON *v = get(req, *k);

        if (cJSON_IsString(v)) {
            bytes += strlen(v->valuestring);
        } else if (v) {
            char *s = cJSON_PrintUnformatted(v);

            bytes += strlen(s);
            cJSON_free(s);
        }
    }
    cJSON_Delete(req);
    *tokens = 1 + (long)(bytes / 4);
    return PX_OK;
}

/* ---- errors ----------------------------------------------------------------------------------
 */

static const char *anth_error_type(int status)
{
    switch (status) {
    case 400:
    case 405:
    case 422:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
    }
}

/* The message of an error body: error.message, a string error plus message, or the text. */
static char *error_message(const cJSON *root, const char *body, size_t len, int status)
{
    const cJSON *e = get(root, "error");
    char buf[1200];

    if (str(e, "message"))
        return xstrdup(str(e, "message"));
    if (cJSON_IsString(e)) {
        snprintf(buf, sizeof(buf), "%.200s%s%.900s", e->valuestring,
                 str(root, "message") ? ": " : "",
                 str(root, "message") ? str(root, "message") : "");
        return xstrdup(buf);
    }
    if (str(root, "message"))
        return xstrdup(str(root, "message"));
    if (len > 0 && !root) {
        size_t n = len < 900 ? len : 900;

        return xstrndup(body, n);
    }
    snprintf(buf, sizeof(buf), "upstream error (HTTP %d)", status);
    return xstrdup(buf);
}

static cJSON *anth_error_obj(int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e;

    cJSON_AddStringToObject(o, "type", "error");
    e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "type", anth_error_type(status));
    cJSON_AddStringToObject(e, "message", msg);
    return o;
}

char *door_error_body(const struct door *d, int status, const char *body, size_t len,
                      size_t *out_len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    char *msg = error_message(root, body, len, status);
    cJSON *o;
    char *s;

    if (d->kind == DOOR_RESPONSES) {
        if (str(get(root, "error"), "message")) { /* already the OpenAI shape */
            cJSON_Delete(root);
            free(msg);
            *out_len = len;
            return xstrndup(body, len);
        }
        o = cJSON_CreateObject();
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddStringToObject(e, "type",
                                status >= 500 ? "server_error" : "invalid_request_error");
        cJSON_AddNullToObject(e, "param");
        cJSON_AddNullToObject(e, "code");
    } else {
        o = anth_error_obj(status, msg);
    }
    s = print(o, out_len);
    cJSON_Delete(o);
    cJSON_Delete(root);
    free(msg);
    return s;
}

/* ---- shared output helpers -------------------------------------------------------------------
 */

static const char *anth_stop_reason(const char *finish, bool tools)
{
    if (finish && strcmp(finish, "length") == 0)
        return "max_tokens";
    if (tools ||
        (finish && (strcmp(finish, "tool_calls") == 0 || strcmp(finish, "function_call") == 0)))
        return "tool_use";
    if (finish && strcmp(finish, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

static void take_usage(struct door *d, const cJSON *u)
{
    const cJSON *v;

    if (!cJSON_IsObject(u))
        return;
    if (cJSON_IsNumber(v = get(u, "prompt_tokens")))
        d->in_tokens = px_count(v->valuedouble);
    if (cJSON_IsNumber(v = get(u, "completion_tokens")))
        d->out_tokens = px_count(v->valuedouble);
    v = get(get(u, "completion_tokens_details"), "reasoning_tokens");
    if (cJSON_IsNumber(v))
        d->reasoning_tokens = px_count(v->valuedouble);
}

/* Tool-call arguments as a JSON object for Anthropic's input. */
static cJSON *tool_input(const char *args)
{
    cJSON *v = args && *args ? cJSON_Parse(args) : cJSON_CreateObject();

    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "arguments", args ? args : "");
    }
    return v;
}

static cJSON *anth_usage(const struct door *d)
{
    cJSON *u = cJSON_CreateObject();

    cJSON_AddNumberToObject(u, "input_tokens", (double)d->in_tokens);
    cJSON_AddNumberToObject(u, "output_tokens", (double)d->out_tokens);
    return u;
}

static cJSON *resp_usage(const struct door *d)
{
    cJSON *u = cJSON_CreateObject();

    cJSON_AddNumberToObject(u, "input_tokens", (double)d->in_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "input_tokens_details"), "cached_tokens", 0);
    cJSON_AddNumberToObject(u, "output_tokens", (double)d->out_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "output_tokens_details"), "reasoning_tokens",
                            (double)d->reasoning_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(d->in_tokens + d->out_tokens));
    return u;
}

/* The Responses object; 'output' is taken (NULL: an empty array). */
static cJSON *resp_object(const struct door *d, const char *status, cJSON *output, bool with_usage)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *e = d->echo;
    static const char *const echoed[] = {
        "instructions", "max_output_tokens", "temperature", "top_p", "user", NULL};

    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)d->created);
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddNullToObject(o, "error");
    if (strcmp(status, "incomplete") == 0) {
        cJSON *inc = cJSON_AddObjectToObject(o, "incomplete_details");

        cJSON_AddStringToObject(inc, "reason",
                                d->finish && strcmp(d->finish, "content_filter") == 0
                                    ? "content_filter"
                                    : "max_output_tokens");
    } else {
        cJSON_AddNullToObject(o, "incomplete_details");
    }
    for (const char *const *k = echoed; *k; k++) {
        const cJSON *v = get(e, *k);

        cJSON_AddItemToObject(o, *k, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
    }
    cJSON_AddStringToObject(o, "model", d->model ? d->model : "");
    cJSON_AddItemToObject(o, "output", output ? output : cJSON_CreateArray());
    cJSON_AddItemToObject(o, "parallel_tool_calls",
                          get(e, "parallel_tool_calls")
                              ? cJSON_Duplicate(get(e, "parallel_tool_calls"), 1)
                              : cJSON_CreateTrue());
    cJSON_AddNullToObject(o, "previous_response_id");
    cJSON_AddItemToObject(o, "reasoning",
                          get(e, "reasoning") ? cJSON_Duplicate(get(e, "reasoning"), 1)
                                              : cJSON_CreateObject());
    cJSON_AddFalseToObject(o, "store");
    cJSON_AddItemToObject(o, "text",
                          get(e, "text") ? cJSON_Duplicate(get(e, "text"), 1)
                                         : cJSON_Parse("{\"format\":{\"type\":\"text\"}}"));
    cJSON_AddItemToObject(o, "tool_choice",
                          get(e, "tool_choice") ? cJSON_Duplicate(get(e, "tool_choice"), 1)
                                                : cJSON_CreateString("auto"));
    cJSON_AddItemToObject(
        o, "tools", get(e, "tools") ? cJSON_Duplicate(get(e, "tools"), 1) : cJSON_CreateArray());
    cJSON_AddStringToObject(o, "truncation", "disabled");
    cJSON_AddItemToObject(o, "usage", with_usage ? resp_usage(d) : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "metadata",
                          get(e, "metadata") ? cJSON_Duplicate(get(e, "metadata"), 1)
                                             : cJSON_CreateObject());
    return o;
}

static const char *resp_status(const char *finish)
{
    if (finish && (strcmp(finish, "length") == 0 || strcmp(finish, "content_filter") == 0))
        return "incomplete";
    return "completed";
}

static cJSON *resp_message_item(const char *id, const char *text, const char *status)
{
    cJSON *it = cJSON_CreateObject();
    cJSON *parts, *p;

    cJSON_AddStringToObject(it, "id", id);
    cJSON_AddStringToObject(it, "type", "message");
    cJSON_AddStringToObject(it, "status", status);
    cJSON_AddStringToObject(it, "role", "assistant");
    parts = cJSON_AddArrayToObject(it, "content");
    if (text) {
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "output_text");
        cJSON_AddStringToObject(p, "text", text);
        cJSON_AddArrayToObject(p, "annotations");
        cJSON_AddArrayToObject(p, "logprobs");
        cJSON_AddItemToArray(parts, p);
    }
    return it;
}

static cJSON *resp_call_item(const char *id, const char *call_id, const char *name,
                             const char *args, const char *status)
{
    cJSON *it = cJSON_CreateObject();

    cJSON_AddStringToObject(it, "id", id);
    cJSON_AddStringToObject(it, "type", "function_call");
    cJSON_AddStringToObject(it, "status", status);
    cJSON_AddStringToObject(it, "arguments", args);
    cJSON_AddStringToObject(it, "call_id", call_id);
    cJSON_AddStringToObject(it, "name", name);
    return it;
}

/* ---- complete replies ------------------------------------------------------------------------
 */

static const cJSON *first_choice(const cJSON *root)
{
    const cJSON *c;

    cJSON_ArrayForEach(c, get(root, "choices"))
    {
        const cJSON *i = get(c, "index");

        if (!cJSON_IsNumber(i) || i->valuedouble == 0)
            return c;
    }
    return NULL;
}

static const char *static_finish(const char *f)
{
    static const char *const known[] = {"stop",          "length",         "tool_calls",
                                        "function_call", "content_filter", NULL};

    for (const char *const *k = known; f && *k; k++)
        if (strcmp(f, *k) == 0)
            return *k;
    return f ? "stop" : NULL;
}

static char *anth_message(struct door *d, const cJSON *root, size_t *len)
{
    const cJSON *ch = first_choice(root), *m = get(ch, "message"), *tc;
    cJSON *o = cJSON_CreateObject(), *content;
    const char *text = str(m, "content");
    bool tools = false;
    char *s;

    take_usage(d, get(root, "usage"));
    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "type", "message");
    cJSON_AddStringToObject(o, "role", "assistant");
    cJSON_AddStringToObject(o, "model", d->model ? d->model : "");
    content = cJSON_AddArrayToObject(o, "content");
    if (text && *text) {
        cJSON *b = cJSON_CreateObject();

        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", text);
        cJSON_AddItemToArray(content, b);
    }
    cJSON_ArrayForEach(tc, get(m, "tool_calls"))
    {
        const cJSON *f = get(tc, "function");
        cJSON *b = cJSON_CreateObject();

        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", str(tc, "id") ? str(tc, "id") : "");
        cJSON_AddStringToObject(b, "name", str(f, "name") ? str(f, "name") : "");
        cJSON_AddItemToObject(b, "input", tool_input(str(f, "arguments")));
        cJSON_AddItemToArray(content, b);
        tools = true;
    }
    cJSON_AddStringToObject(o, "stop_reason", anth_stop_reason(str(ch, "finish_reason"), tools));
    cJSON_AddNullToObject(o, "stop_sequence");
    cJSON_AddItemToObject(o, "usage", anth_usage(d));
    s = print(o, len);
    cJSON_Delete(o);
    return s;
}

static char *resp_response(struct door *d, const cJSON *root, size_t *len)
{
    const cJSON *ch = first_choice(root), *m = get(ch, "message"), *tc;
    cJSON *output = cJSON_CreateArray(), *o;
    const char *text = str(m, "content");
    char id[48];
    char *s;

    take_usage(d, get(root, "usage"));
    d->finish = static_finish(str(ch, "finish_reason"));
    if (text && *text) {
        px_random_id(id, sizeof(id), "msg_", 2);
        cJSON_AddItemToArray(output, resp_message_item(id, text, "completed"));
    }
    cJSON_ArrayForEach(tc, get(m, "tool_calls"))
    {
        const cJSON *f = get(tc, "function");

        px_random_id(id, sizeof(id), "fc_", 2);
        cJSON_AddItemToArray(output, resp_call_item(id, str(tc, "id") ? str(tc, "id") : "",
                                                    str(f, "name") ? str(f, "name") : "",
                                                    str(f, "arguments") ? str(f, "arguments") : "",
                                                    "completed"));
    }
    o = resp_object(d, resp_status(d->finish), output, true);
    s = print(o, len);
    cJSON_Delete(o);
    return s;
}

/* GET /v1/models for an Anthropic client: {data:[{type:"model", id, display_name,
 * created_at}], has_more, first_id, last_id} (the OpenAI fields stay too). */
static char *models_list(cJSON *root, size_t *len)
{
    cJSON *data = (cJSON *)get(root, "data"), *m;
    const char *first = NULL, *last = NULL;

    cJSON_ArrayForEach(m, data)
    {
        const cJSON *c = get(m, "created");
        time_t t = cJSON_IsNumber(c) ? (time_t)c->valuedouble : 0;
        struct tm tm;
        char ts[32];

        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (!get(m, "type"))
            cJSON_AddStringToObject(m, "type", "model");
        if (!get(m, "display_name") && str(m, "id"))
            cJSON_AddStringToObject(m, "display_name", str(m, "id"));
        if (!get(m, "created_at"))
            cJSON_AddStringToObject(m, "created_at", ts);
        if (!first)
            first = str(m, "id");
        last = str(m, "id");
    }
    if (!get(root, "has_more"))
        cJSON_AddFalseToObject(root, "has_more");
    if (!get(root, "first_id"))
        cJSON_AddItemToObject(root, "first_id",
                              first ? cJSON_CreateString(first) : cJSON_CreateNull());
    if (!get(root, "last_id"))
        cJSON_AddItemToObject(root, "last_id",
                              last ? cJSON_CreateString(last) : cJSON_CreateNull());
    return print(root, len);
}

/* ---- SSE output ------------------------------------------------------------------------------
 */

/* "event: NAME\ndata: {"type":NAME, ...}\n\n"; obj is taken. */
static void emit(struct door *d, struct buf *out, const char *name, cJSON *obj)
{
    cJSON *o = cJSON_CreateObject();
    char *s;

    cJSON_AddStringToObject(o, "type", name);
    if (d->kind == DOOR_RESPONSES)
        cJSON_AddNumberToObject(o, "sequence_number", (double)d->seq++);
    for (cJSON *it = obj ? obj->child : NULL, *next; it; it = next) {
        next = it->next;
        cJSON_AddItemToObject(o, it->string, cJSON_DetachItemViaPointer(obj, it));
    }
    cJSON_Delete(obj);
    s = cJSON_PrintUnformatted(o);
    buf_printf(out, "event: %s\ndata: %s\n\n", name, s);
    cJSON_free(s);
    cJSON_Delete(o);
}

/* Anthropic ---------------------------------------------------------------------------------- */

static void anth_start(struct door *d, struct buf *out)
{
    cJSON *e = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(e, "message");

    cJSON_AddStringToObject(m, "id", d->id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "model", d->model ? d->model : "");
    cJSON_AddArrayToObject(m, "content");
    cJSON_AddNullToObject(m, "stop_reason");
    cJSON_AddNullToObject(m, "stop_sequence");
    cJSON_AddItemToObject(m, "usage", anth_usage(d));
    emit(d, out, "message_start", e);
}

static void anth_close_block(struct door *d, struct buf *out)
{
    cJSON *e;

    if (d->open < 0)
        return;
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", d->next_index - 1);
    emit(d, out, "content_block_stop", e);
    d->open = -1;
}

static void anth_text(struct door *d, struct buf *out, const char *text)
{
    cJSON *e, *b;

    if (d->open != 0) {
        anth_close_block(d, out);
        e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "index", d->next_index++);
        b = cJSON_AddObjectToObject(e, "content_block");
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", "");
        emit(d, out, "content_block_start", e);
        d->open = 0;
    }
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", d->next_index - 1);
    b = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(b, "type", "text_delta");
    cJSON_AddStringToObject(b, "text", text);
    emit(d, out, "content_block_delta", e);
}

static void anth_tool_start(struct door *d, struct buf *out, int k)
{
    cJSON *e = cJSON_CreateObject(), *b;

    anth_close_block(d, out);
    d->tools[k].index = d->next_index++;
    cJSON_AddNumberToObject(e, "index", d->tools[k].index);
    b = cJSON_AddObjectToObject(e, "content_block");
    cJSON_AddStringToObject(b, "type", "tool_use");
    cJSON_AddStringToObject(b, "id", d->tools[k].id ? d->tools[k].id : "");
    cJSON_AddStringToObject(b, "name", d->tools[k].name ? d->tools[k].name : "");
    cJSON_AddObjectToObject(b, "input");
    emit(d, out, "content_block_start", e);
    d->open = 1 + k;
}

static void anth_tool_args(struct door *d, struct buf *out, int k, const char *frag)
{
    cJSON *e, *b;

    if (d->open != 1 + k)
        return; /* an earlier call's late fragment: its block is closed (kept in the args) */
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", d->tools[k].index);
    b = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(b, "type", "input_json_delta");
    cJSON_AddStringToObject(b, "partial_json", frag);
    emit(d, out, "content_block_delta", e);
}

static void anth_finish(struct door *d, struct buf *out)
{
    cJSON *e = cJSON_CreateObject(), *dl;

    anth_close_block(d, out);
    dl = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(dl, "stop_reason", anth_stop_reason(d->finish, d->ntools > 0));
    cJSON_AddNullToObject(dl, "stop_sequence");
    cJSON_AddItemToObject(e, "usage", anth_usage(d));
    emit(d, out, "message_delta", e);
    emit(d, out, "message_stop", NULL);
}

/* Responses ---------------------------------------------------------------------------------- */

static void resp_start(struct door *d, struct buf *out)
{
    cJSON *e = cJSON_CreateObject();

    cJSON_AddItemToObject(e, "response", resp_object(d, "in_progress", NULL, false));
    emit(d, out, "response.created", e);
    e = cJSON_CreateObject();
    cJSON_AddItemToObject(e, "response", resp_object(d, "in_progress", NULL, false));
    emit(d, out, "response.in_progress", e);
}

static cJSON *item_event(const char *item_id, int output_index)
{
    cJSON *e = cJSON_CreateObject();

    if (item_id)
        cJSON_AddStringToObject(e, "item_id", item_id);
    cJSON_AddNumberToObject(e, "output_index", output_index);
    return e;
}

static cJSON *text_part(const char *text)
{
    cJSON *p = cJSON_CreateObject();

    cJSON_AddStringToObject(p, "type", "output_text");
    cJSON_AddStringToObject(p, "text", text);
    cJSON_AddArrayToObject(p, "annotations");
    cJSON_AddArrayToObject(p, "logprobs");
    return p;
}

static void resp_close_item(struct door *d, struct buf *out)
{
    cJSON *e, *item;

    if (d->open < 0)
        return;
    if (d->open == 0) {
        const char *text = buf_cstr(&d->text);

        e = item_event(d->msg_item, d->msg_index);
        cJSON_AddNumberToObject(e, "content_index", 0);
        cJSON_AddStringToObject(e, "text", text);
        cJSON_AddArrayToObject(e, "logprobs");
        emit(d, out, "response.output_text.done", e);
        e = item_event(d->msg_item, d->msg_index);
        cJSON_AddNumberToObject(e, "content_index", 0);
        cJSON_AddItemToObject(e, "part", text_part(text));
        emit(d, out, "response.content_part.done", e);
        item = resp_message_item(d->msg_item, text, "completed");
    } else {
        struct tcall *t = &d->tools[d->open - 1];

        e = item_event(t->item_id, t->index);
        cJSON_AddStringToObject(e, "arguments", buf_cstr(&t->args));
        emit(d, out, "response.function_call_arguments.done", e);
        item = resp_call_item(t->item_id, t->id ? t->id : "", t->name ? t->name : "",
                              buf_cstr(&t->args), "completed");
    }
    if (!d->output)
        d->output = cJSON_CreateArray();
    cJSON_AddItemToArray(d->output, cJSON_Duplicate(item, 1));
    e = item_event(NULL, d->open == 0 ? d->msg_index : d->tools[d->open - 1].index);
    cJSON_AddItemToObject(e, "item", item);
    emit(d, out, "response.output_item.done", e);
    d->open = -1;
}

static void resp_text(struct door *d, struct buf *out, const char *text)
{
    cJSON *e;

    if (d->open != 0) {
        resp_close_item(d, out);
        px_random_id(d->msg_item, sizeof(d->msg_item), "msg_", 2);
        d->msg_index = d->next_index++;
        buf_reset(&d->text);
        e = item_event(NULL, d->msg_index);
        cJSON_AddItemToObject(e, "item", resp_message_item(d->msg_item, NULL, "in_progress"));
        emit(d, out, "response.output_item.added", e);
        e = item_event(d->msg_item, d->msg_index);
        cJSON_AddNumberToObject(e, "content_index", 0);
        cJSON_AddItemToObject(e, "part", text_part(""));
        emit(d, out, "response.content_part.added", e);
        d->open = 0;
    }
    buf_puts(&d->text, text);
    e = item_event(d->msg_item, d->msg_index);
    cJSON_AddNumberToObject(e, "content_index", 0);
    cJSON_AddStringToObject(e, "delta", text);
    cJSON_AddArrayToObject(e, "logprobs");
    emit(d, out, "response.output_text.delta", e);
}

static void resp_tool_start(struct door *d, struct buf *out, int k)
{
    struct tcall *t = &d->tools[k];
    cJSON *e;

    resp_close_item(d, out);
    px_random_id(t->item_id, sizeof(t->item_id), "fc_", 2);
    t->index = d->next_index++;
    e = item_event(NULL, t->index);
    cJSON_AddItemToObject(
        e, "item",
        resp_call_item(t->item_id, t->id ? t->id : "", t->name ? t->name : "", "", "in_progress"));
    emit(d, out, "response.output_item.added", e);
    d->open = 1 + k;
}

static void resp_tool_args(struct door *d, struct buf *out, int k, const char *frag)
{
    cJSON *e;

    if (d->open != 1 + k)
        return;
    e = item_event(d->tools[k].item_id, d->tools[k].index);
    cJSON_AddStringToObject(e, "delta", frag);
    emit(d, out, "response.function_call_arguments.delta", e);
}

static void resp_finish(struct door *d, struct buf *out)
{
    cJSON *e = cJSON_CreateObject();
    cJSON *output;

    resp_close_item(d, out);
    output = d->output ? d->output : cJSON_CreateArray();
    d->output = NULL;
    const char *st = resp_status(d->finish);
    cJSON_AddItemToObject(e, "response", resp_object(d, st, output, true));
    emit(d, out, strcmp(st, "incomplete") == 0 ? "response.incomplete" : "response.completed", e);
}

/* Both ---------------------------------------------------------------------------------------- */

static void sse_text(struct door *d, struct buf *out, const char *text)
{
    if (d->kind == DOOR_MESSAGES)
        anth_text(d, out, text);
    else
        resp_text(d, out, text);
}

/* The call a tool_calls fragment belongs to: the last one with its index (or the last one when
 * the upstream sends no index), unless it names another id (some servers reuse index 0 for
 * every call; some repeat the id on every fragment). -1: a new call. */
static int tool_slot(const struct door *d, int oai_index, const char *id)
{
    for (int k = d->ntools - 1; k >= 0; k--) {
        if (oai_index >= 0 && d->tools[k].oai_index != oai_index)
            continue;
        if (id && *id && d->tools[k].id && *d->tools[k].id && strcmp(id, d->tools[k].id) != 0)
            return -1;
        return k;
    }
    return -1;
}

static void sse_tool_call(struct door *d, struct buf *out, const cJSON *tc)
{
    const cJSON *idx = get(tc, "index"), *f = get(tc, "function");
    int oai = cJSON_IsNumber(idx) ? (int)idx->valuedouble : -1;
    int k = tool_slot(d, oai, str(tc, "id"));
    const char *args = str(f, "arguments");

    if (k < 0) { /* a new call */
        if (d->ntools >= DOOR_MAX_TOOLS)
            return;
        k = d->ntools++;
        d->tools[k].oai_index = oai;
        d->tools[k].id = xstrdup(str(tc, "id") ? str(tc, "id") : "");
        d->tools[k].name = xstrdup(str(f, "name") ? str(f, "name") : "");
        buf_init(&d->tools[k].args, 0);
        if (d->kind == DOOR_MESSAGES)
            anth_tool_start(d, out, k);
        else
            resp_tool_start(d, out, k);
    }
    if (k < 0 || !args || !*args)
        return;
    buf_puts(&d->tools[k].args, args);
    if (d->kind == DOOR_MESSAGES)
        anth_tool_args(d, out, k, args);
    else
        resp_tool_args(d, out, k, args);
}

static void sse_error(struct door *d, struct buf *out, const cJSON *root)
{
    char *msg = error_message(root, "", 0, 500);
    const cJSON *e = get(root, "error");
    cJSON *o;

    if (d->kind == DOOR_MESSAGES) {
        cJSON *full = anth_error_obj(500, msg);

        o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "error", cJSON_DetachItemFromObject(full, "error"));
        cJSON_Delete(full);
        emit(d, out, "error", o);
    } else {
        o = cJSON_CreateObject();
        cJSON_AddItemToObject(
            o, "code", str(e, "code") ? cJSON_CreateString(str(e, "code")) : cJSON_CreateNull());
        cJSON_AddStringToObject(o, "message", msg);
        cJSON_AddItemToObject(
            o, "param", str(e, "param") ? cJSON_CreateString(str(e, "param")) : cJSON_CreateNull());
        emit(d, out, "error", o);
    }
    free(msg);
    d->ended = true;
}

static void sse_done(struct door *d, struct buf *out)
{
    if (d->ended)
        return;
    d->ended = true;
    if (d->kind == DOOR_MESSAGES)
        anth_finish(d, out);
    else
        resp_finish(d, out);
}

static void sse_chunk(struct door *d, struct buf *out, const char *data, size_t len)
{
    cJSON *root;
    const cJSON *ch, *delta, *tc;
    const char *f;

    if (d->ended)
        return;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        sse_done(d, out);
        return;
    }
    root = cJSON_ParseWithLength(data, len);
    if (!root)
        return;
    if (get(root, "error")) {
        sse_error(d, out, root);
        cJSON_Delete(root);
        return;
    }
    take_usage(d, get(root, "usage"));
    ch = first_choice(root);
    delta = get(ch, "delta");
    if (str(delta, "content") && *str(delta, "content"))
        sse_text(d, out, str(delta, "content"));
    cJSON_ArrayForEach(tc, get(delta, "tool_calls"))
    {
        sse_tool_call(d, out, tc);
    }
    if ((f = str(ch, "finish_reason")))
        d->finish = static_finish(f);
    cJSON_Delete(root);
}

static void sse_line(struct door *d, struct buf *out, char *line, size_t len)
{
    if (len && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0) {
        if (d->data.len)
            sse_chunk(d, out, buf_cstr(&d->data), d->data.len);
        buf_reset(&d->data);
        return;
    }
    if (line[0] == ':') {
        /* Our keep-alive comment: Anthropic's ping event; a Responses stream keeps it. */
        if (d->ended)
            return;
        if (d->kind == DOOR_MESSAGES)
            emit(d, out, "ping", NULL);
        else
            buf_puts(out, ": keep-alive\n\n");
        return;
    }
    if (len >= 5 && memcmp(line, "data:", 5) == 0) {
        size_t skip = len > 5 && line[5] == ' ' ? 6 : 5;

        if (d->data.len)
            buf_puts(&d->data, "\n");
        buf_append(&d->data, line + skip, len - skip);
    }
}

/* ---- output entry points ---------------------------------------------------------------------
 */

void door_begin(struct door *d, int status, char *ctype, size_t ctype_cap, bool streaming)
{
    if (d->mode != MODE_NONE)
        return;
    d->status = status;
    if (d->kind != DOOR_MODELS && streaming && status == 200 &&
        strncasecmp(ctype, "text/event-stream", 17) == 0) {
        d->mode = MODE_SSE;
        snprintf(ctype, ctype_cap, "text/event-stream");
        return;
    }
    d->mode = MODE_BUFFER;
    snprintf(ctype, ctype_cap, "application/json");
}

void door_feed(struct door *d, const char *data, size_t len, struct buf *out)
{
    if (d->mode == MODE_BUFFER) {
        buf_append(&d->in, data, len);
        return;
    }
    if (d->mode != MODE_SSE)
        return;
    if (!d->started) { /* first bytes: the start events */
        d->started = true;
        if (d->kind == DOOR_MESSAGES)
            anth_start(d, out);
        else
            resp_start(d, out);
    }
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t span = nl ? (size_t)(nl - data) : len;

        buf_append(&d->in, data, span);
        if (!nl)
            break;
        size_t n;
        char *line = buf_take(&d->in, &n);

        sse_line(d, out, line, n);
        free(line);
        data += span + 1;
        len -= span + 1;
    }
}

void door_end(struct door *d, struct buf *out)
{
    if (d->mode == MODE_SSE) {
        door_feed(d, "\n\n", 2, out); /* a last event without its blank line */
        sse_done(d, out);
        return;
    }
    if (d->mode != MODE_BUFFER)
        return;
    size_t len = 0;
    char *s = NULL;
    cJSON *root = cJSON_ParseWithLength(buf_cstr(&d->in), d->in.len);

    if (d->status >= 400 || (d->status != 200 && d->kind != DOOR_RESPONSES)) {
        s = door_error_body(d, d->status, buf_cstr(&d->in), d->in.len, &len);
    } else if (d->kind == DOOR_MODELS && cJSON_IsObject(root)) {
        s = models_list(root, &len);
    } else if (cJSON_IsObject(root) && get(root, "choices")) {
        s = d->kind == DOOR_MESSAGES ? anth_message(d, root, &len) : resp_response(d, root, &len);
    }
    if (s) {
        buf_append(out, s, len);
        free(s);
    } else {
        buf_append(out, d->in.data, d->in.len);
    }
    cJSON_Delete(root);
    buf_reset(&d->in);
}

/* ---- the exchange's side ---------------------------------------------------------------------
 */

int door_translate(struct exchange *ex, struct px_error *err)
{
    char *chat;
    size_t len;
    int rc = door_request(ex->door, buf_cstr(&ex->body), ex->body.len, &chat, &len, err);

    if (rc < 0)
        return rc;
    buf_reset(&ex->body);
    buf_append(&ex->body, chat, len);
    free(chat);
    return PX_OK;
}

int door_queue_error(struct exchange *ex, const struct px_error *err)
{
    size_t len, dlen;
    char *body = http_error_json(err, &len);
    int status = px_http_status(err);
    char *door = door_error_body(ex->door, status, body, len, &dlen);
    int retry_after = err->retry_after > 0 ? err->retry_after : (status == 503 ? 1 : 0);
    int ret = http_queue(ex->conn, status, "application/json", door, dlen, ex->id, retry_after);

    free(body);
    free(door);
    return ret;
}

static void out_begin(struct exchange *ex)
{
    door_begin(ex->door, ex->status, ex->content_type, sizeof(ex->content_type), ex->streaming);
}

void exchange_out(struct exchange *ex, const char *data, size_t len)
{
    if (!ex->door) {
        buf_append(&ex->out, data, len);
        return;
    }
    out_begin(ex);
    door_feed(ex->door, data, len, &ex->out);
}

void exchange_out_end(struct exchange *ex)
{
    if (ex->door && !ex->out_done) {
        out_begin(ex);
        door_end(ex->door, &ex->out);
    }
    ex->out_done = true;
}
