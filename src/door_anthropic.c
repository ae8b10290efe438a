/* door_anthropic.c: the Anthropic Messages door: a Messages request as chat completions, a
 * chat.completion as a message, stream events, error types, the models list. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "door_internal.h"
#include "internal.h"

/* ---- request ------------------------------------------------------------------------------ */

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

int door__anth_request(struct door *d, const cJSON *req, cJSON *chat, struct px_error *err)
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
    if ((rc = door__number_field(chat, "temperature", req, "temperature", err)) < 0 ||
        (rc = door__number_field(chat, "top_p", req, "top_p", err)) < 0)
        return rc;
    v = get(req, "stop_sequences");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0)
        cJSON_AddItemToObject(chat, "stop", cJSON_Duplicate(v, 1));
    if (str(get(req, "metadata"), "user_id"))
        cJSON_AddStringToObject(chat, "user", str(get(req, "metadata"), "user_id"));
    return anth_tools(chat, req, err);
}

/* ---- errors and complete replies ---------------------------------------------------------- */

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

cJSON *door__anth_error(int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e;

    cJSON_AddStringToObject(o, "type", "error");
    e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "type", anth_error_type(status));
    cJSON_AddStringToObject(e, "message", msg);
    return o;
}

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

char *door__anth_message(struct door *d, const cJSON *root, size_t *len)
{
    const cJSON *ch = door__first_choice(root), *m = get(ch, "message"), *tc;
    cJSON *o = cJSON_CreateObject(), *content;
    const char *text = str(m, "content");
    bool tools = false;
    char *s;

    door__take_usage(d, get(root, "usage"));
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
    s = door__print(o, len);
    cJSON_Delete(o);
    return s;
}

/* GET /v1/models for an Anthropic client: {data:[{type:"model", id, display_name,
 * created_at}], has_more, first_id, last_id} (the OpenAI fields stay too). */
char *door__models_list(cJSON *root, size_t *len)
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
    return door__print(root, len);
}

/* ---- stream events ------------------------------------------------------------------------ */

void door__anth_start(struct door *d, struct buf *out)
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
    door__emit(d, out, "message_start", e);
}

static void anth_close_block(struct door *d, struct buf *out)
{
    cJSON *e;

    if (d->open < 0)
        return;
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", d->next_index - 1);
    door__emit(d, out, "content_block_stop", e);
    d->open = -1;
}

void door__anth_text(struct door *d, struct buf *out, const char *text)
{
    cJSON *e, *b;

    if (d->open != 0) {
        anth_close_block(d, out);
        e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "index", d->next_index++);
        b = cJSON_AddObjectToObject(e, "content_block");
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", "");
        door__emit(d, out, "content_block_start", e);
        d->open = 0;
    }
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", d->next_index - 1);
    b = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(b, "type", "text_delta");
    cJSON_AddStringToObject(b, "text", text);
    door__emit(d, out, "content_block_delta", e);
}

void door__anth_tool_start(struct door *d, struct buf *out, int k)
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
    door__emit(d, out, "content_block_start", e);
    d->open = 1 + k;
}

void door__anth_tool_args(struct door *d, struct buf *out, int k, const char *frag)
{
    cJSON *e, *b;

    if (d->open != 1 + k)
        return; /* an earlier call's late fragment: its block is closed (kept in the args) */
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", d->tools[k].index);
    b = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(b, "type", "input_json_delta");
    cJSON_AddStringToObject(b, "partial_json", frag);
    door__emit(d, out, "content_block_delta", e);
}

void door__anth_finish(struct door *d, struct buf *out)
{
    cJSON *e = cJSON_CreateObject(), *dl;

    anth_close_block(d, out);
    dl = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(dl, "stop_reason", anth_stop_reason(d->finish, d->ntools > 0));
    cJSON_AddNullToObject(dl, "stop_sequence");
    cJSON_AddItemToObject(e, "usage", anth_usage(d));
    door__emit(d, out, "message_delta", e);
    door__emit(d, out, "message_stop", NULL);
}
