/* door.c: the front doors (door.h): the door object, request dispatch, count_tokens, error
 * bodies, the SSE machine that turns chat.completion.chunk streams into either door's events
 * (the events themselves are written by door_anthropic.c and door_responses.c), and the
 * exchange's side (exchange_out). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "door_internal.h"
#include "internal.h"
#include "json_check.h"

/* ---- the door object, requests, errors ---------------------------------------------------- */

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

char *door__print(cJSON *o, size_t *len)
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

/* Usage on streams: a passthrough asks the upstream for it (server_passthrough_body, with its
 * fallback for upstreams that refuse stream_options) and keeps the usage event for the door;
 * an approach stream ends with it (do_chat sets include_usage). */
static void add_stream(cJSON *chat, const cJSON *req)
{
    if (cJSON_IsTrue(get(req, "stream")))
        cJSON_AddTrueToObject(chat, "stream");
}

int door__number_field(cJSON *chat, const char *dk, const cJSON *req, const char *sk,
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

int door_request(struct door *d, const char *body, size_t len, char **chat, size_t *chat_len,
                 struct px_error *err)
{
    cJSON *req;
    cJSON *out;
    const char *model;
    int rc;

    *chat = NULL;
    if (!(req = json_parse_strict(body, len, err)))
        return PX_EINVAL; /* not JSON, duplicate keys, trailing bytes, NULs */
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
    d->stream = cJSON_IsTrue(get(req, "stream"));
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "model", model);
    rc = d->kind == DOOR_MESSAGES ? door__anth_request(d, req, out, err)
                                  : door__resp_request(d, req, out, err);
    if (rc == PX_OK) {
        add_stream(out, req);
        copy_optillm(out, req);
        *chat = door__print(out, chat_len);
    }
    cJSON_Delete(out);
    cJSON_Delete(req);
    return rc;
}

int door_count_tokens(const char *body, size_t len, long *tokens, struct px_error *err)
{
    cJSON *req = json_parse_strict(body, len, err);
    size_t bytes = 0;
    static const char *const keys[] = {"system", "messages", "tools", NULL};

    if (!req)
        return PX_EINVAL;
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
        o = door__anth_error(status, msg);
    }
    s = door__print(o, out_len);
    cJSON_Delete(o);
    cJSON_Delete(root);
    free(msg);
    return s;
}

/* ---- reply helpers both doors use --------------------------------------------------------- */

void door__take_usage(struct door *d, const cJSON *u)
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

const cJSON *door__first_choice(const cJSON *root)
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

const char *door__static_finish(const char *f)
{
    static const char *const known[] = {"stop",          "length",         "tool_calls",
                                        "function_call", "content_filter", NULL};

    for (const char *const *k = known; f && *k; k++)
        if (strcmp(f, *k) == 0)
            return *k;
    return f ? "stop" : NULL;
}

/* "event: NAME\ndata: {"type":NAME, ...}\n\n"; obj is taken. */
void door__emit(struct door *d, struct buf *out, const char *name, cJSON *obj)
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

/* ---- the SSE machine: chat.completion.chunk events in, door events out -------------------- */

static void sse_text(struct door *d, struct buf *out, const char *text)
{
    if (d->kind == DOOR_MESSAGES)
        door__anth_text(d, out, text);
    else
        door__resp_text(d, out, text);
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
    int oai = cJSON_IsNumber(idx) ? (int)px_clamp_long(idx->valuedouble, -1, INT_MAX) : -1;
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
            door__anth_tool_start(d, out, k);
        else
            door__resp_tool_start(d, out, k);
    }
    if (k < 0 || !args || !*args)
        return;
    buf_puts(&d->tools[k].args, args);
    if (d->kind == DOOR_MESSAGES)
        door__anth_tool_args(d, out, k, args);
    else
        door__resp_tool_args(d, out, k, args);
}

static void sse_error(struct door *d, struct buf *out, const cJSON *root)
{
    char *msg = error_message(root, "", 0, 500);
    const cJSON *e = get(root, "error");
    cJSON *o;

    if (d->kind == DOOR_MESSAGES) {
        cJSON *full = door__anth_error(500, msg);

        o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "error", cJSON_DetachItemFromObject(full, "error"));
        cJSON_Delete(full);
        door__emit(d, out, "error", o);
    } else {
        o = cJSON_CreateObject();
        cJSON_AddItemToObject(
            o, "code", str(e, "code") ? cJSON_CreateString(str(e, "code")) : cJSON_CreateNull());
        cJSON_AddStringToObject(o, "message", msg);
        cJSON_AddItemToObject(
            o, "param", str(e, "param") ? cJSON_CreateString(str(e, "param")) : cJSON_CreateNull());
        door__emit(d, out, "error", o);
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
        door__anth_finish(d, out);
    else
        door__resp_finish(d, out);
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
    door__take_usage(d, get(root, "usage"));
    ch = door__first_choice(root);
    delta = get(ch, "delta");
    if (str(delta, "content") && *str(delta, "content"))
        sse_text(d, out, str(delta, "content"));
    cJSON_ArrayForEach(tc, get(delta, "tool_calls"))
    {
        sse_tool_call(d, out, tc);
    }
    if ((f = str(ch, "finish_reason")))
        d->finish = door__static_finish(f);
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
            door__emit(d, out, "ping", NULL);
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

/* ---- output entry points ------------------------------------------------------------------ */

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
    if (d->kind != DOOR_MODELS && d->stream && streaming && status == 200) {
        d->mode = MODE_SYNTH;
        snprintf(ctype, ctype_cap, "text/event-stream");
        return;
    }
    d->mode = MODE_BUFFER;
    snprintf(ctype, ctype_cap, "application/json");
}

void door_feed(struct door *d, const char *data, size_t len, struct buf *out)
{
    if (d->mode == MODE_BUFFER || d->mode == MODE_SYNTH) {
        buf_append(&d->in, data, len);
        return;
    }
    if (d->mode != MODE_SSE)
        return;
    if (!d->started) { /* first bytes: the start events */
        d->started = true;
        if (d->kind == DOOR_MESSAGES)
            door__anth_start(d, out);
        else
            door__resp_start(d, out);
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

/* MODE_SYNTH: the complete answer as the events a stream of it would have given. */
static void synth_end(struct door *d, struct buf *out)
{
    cJSON *root = cJSON_ParseWithLength(buf_cstr(&d->in), d->in.len);
    const cJSON *ch = door__first_choice(root), *m = get(ch, "message"), *tc;

    d->started = true;
    if (d->kind == DOOR_MESSAGES)
        door__anth_start(d, out);
    else
        door__resp_start(d, out);
    if (!ch) {
        cJSON *e = cJSON_CreateObject();

        if (get(root, "error")) {
            sse_error(d, out, root);
        } else {
            cJSON_AddStringToObject(cJSON_AddObjectToObject(e, "error"), "message",
                                    "the upstream answered the stream request with no choices");
            sse_error(d, out, e);
        }
        cJSON_Delete(e);
        cJSON_Delete(root);
        return;
    }
    if (str(m, "content") && *str(m, "content"))
        sse_text(d, out, str(m, "content"));
    cJSON_ArrayForEach(tc, get(m, "tool_calls"))
    {
        sse_tool_call(d, out, tc);
    }
    if (str(ch, "finish_reason"))
        d->finish = door__static_finish(str(ch, "finish_reason"));
    door__take_usage(d, get(root, "usage"));
    sse_done(d, out);
    cJSON_Delete(root);
}

void door_end(struct door *d, struct buf *out)
{
    if (d->mode == MODE_SYNTH) {
        synth_end(d, out);
        buf_reset(&d->in);
        return;
    }
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
        s = door__models_list(root, &len);
    } else if (cJSON_IsObject(root) && get(root, "choices")) {
        s = d->kind == DOOR_MESSAGES ? door__anth_message(d, root, &len)
                                     : door__resp_response(d, root, &len);
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

/* ---- the exchange's side ------------------------------------------------------------------ */

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
    int ret = http_queue_error_body(ex->conn, err, door, dlen, ex->id);

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
    if (len == 0)
        return;
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
