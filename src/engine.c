/* engine.c: runs a request's route (one approach, a&b pipeline, a|b fan-out, n runs in
 * parallel) on a coroutine, provides the upstream transport behind llm_*, streams the
 * final stage to the client, and writes the OpenAI response. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "internal.h"
#include "log.h"
#include "redact.h"
#include "redis.h"
#include "scheduler.h"

#define ENGINE_MAX_RUNS 16 /* n x parallel approaches per approach request (a client maximum) */

/* ---- SSE sink -------------------------------------------------------------------------------- */

enum { F_BEFORE, F_INSIDE, F_AFTER };

struct sink {
    pthread_mutex_t mu; /* guards everything below */
    struct exchange *ex;
    char id[48];
    long created;
    const char *model;
    bool head_sent;
    bool call_streamed; /* the current streamed call emitted content */
    long long last_send_us;
    enum llm_filter filter;
    int fstate;
    bool fstarted; /* inside <output>: leading blanks skipped */
    struct buf hold;
    /* Plugins' stream restorers (privacy), applied last-registered first to streamed text. */
    struct approach_post post[ROUTE_MAX];
    int npost;
    struct arena *post_arena;
};

void response_new_id(char *buf, size_t len)
{
    px_random_id(buf, len, "chatcmpl-", 2);
}

static cJSON *chunk_new(struct sink *s)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "id", s->id);
    cJSON_AddStringToObject(o, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(o, "created", (double)s->created);
    cJSON_AddStringToObject(o, "model", s->model);
    return o;
}

/* Sends a chunk (and frees it). Caller holds s->mu. */
static void do_send(struct sink *s, cJSON *chunk)
{
    char *j = cJSON_PrintUnformatted(chunk);
    size_t jl = strlen(j);
    char *line = xmalloc(jl + 9);

    memcpy(line, "data: ", 6);
    memcpy(line + 6, j, jl);
    memcpy(line + 6 + jl, "\n\n", 3);
    exchange_stream(s->ex, 200, "text/event-stream", line, jl + 8, false);
    s->last_send_us = px_now_us();
    free(line);
    cJSON_free(j);
    cJSON_Delete(chunk);
}

static cJSON *choice_obj(cJSON *chunk, int index)
{
    cJSON *choices = cJSON_AddArrayToObject(chunk, "choices");
    cJSON *c = cJSON_CreateObject();

    cJSON_AddNumberToObject(c, "index", index);
    cJSON_AddItemToArray(choices, c);
    return c;
}

static void do_head(struct sink *s, int index)
{
    cJSON *chunk = chunk_new(s);
    cJSON *c = choice_obj(chunk, index);
    cJSON *d = cJSON_AddObjectToObject(c, "delta");

    cJSON_AddStringToObject(d, "role", "assistant");
    cJSON_AddStringToObject(d, "content", "");
    cJSON_AddNullToObject(c, "finish_reason");
    do_send(s, chunk);
}

static void do_content(struct sink *s, int index, const char *text, size_t len)
{
    cJSON *chunk, *c, *d;
    char *t;

    if (len == 0)
        return;
    if (!s->head_sent) {
        do_head(s, 0);
        s->head_sent = true;
    }
    chunk = chunk_new(s);
    c = choice_obj(chunk, index);
    d = cJSON_AddObjectToObject(c, "delta");
    t = xstrndup(text, len);
    cJSON_AddStringToObject(d, "content", t);
    free(t);
    cJSON_AddNullToObject(c, "finish_reason");
    do_send(s, chunk);
    s->call_streamed = true;
}

/* Streams through the <output> filter: holds back a possible partial tag. */
static void filter_feed(struct sink *s, const char *text, size_t len, bool end)
{
    static const char open[] = "<output>";
    static const char close[] = "</output>";

    buf_append(&s->hold, text, len);
    for (;;) {
        const char *h = buf_cstr(&s->hold);
        if (s->fstate == F_BEFORE) {
            const char *p = strstr(h, open);

            if (!p) {
                if (s->hold.len > sizeof(open))
                    buf_consume(&s->hold, s->hold.len - (sizeof(open) - 1));
                return;
            }
            buf_consume(&s->hold, (size_t)(p - h) + sizeof(open) - 1);
            s->fstate = F_INSIDE;
            continue;
        }
        if (s->fstate == F_INSIDE) {
            const char *p = strstr(h, close);
            size_t emit;

            if (!s->fstarted) { /* skip blanks right after <output> */
                size_t k = 0;
                while (k < s->hold.len && (h[k] == '\n' || h[k] == ' ' || h[k] == '\r'))
                    k++;
                buf_consume(&s->hold, k);
                h = buf_cstr(&s->hold);
                p = strstr(h, close);
                if (s->hold.len == 0)
                    return;
                s->fstarted = true;
            }
            if (p) {
                emit = (size_t)(p - h);
                do_content(s, 0, h, emit);
                buf_reset(&s->hold);
                s->fstate = F_AFTER;
                return;
            }
            emit = end ? s->hold.len
                       : (s->hold.len > sizeof(close) - 1 ? s->hold.len - (sizeof(close) - 1) : 0);
            do_content(s, 0, h, emit);
            buf_consume(&s->hold, emit);
            return;
        }
        buf_reset(&s->hold);
        return;
    }
}

/* Runs streamed text through the plugins' restorers (caller holds s->mu). */
static const char *post_stream(struct sink *s, const char *text, size_t *len, bool end)
{
    for (int i = s->npost; i-- > 0;) {
        if (!s->post[i].stream)
            continue;
        text = s->post[i].stream(s->post[i].state, s->post_arena, text, *len, end);
        *len = strlen(text);
    }
    return text;
}

static void sink_delta(void *sinkp, const char *text, size_t len)
{
    struct sink *s = sinkp;

    pthread_mutex_lock(&s->mu);
    if (s->npost > 0)
        text = post_stream(s, text, &len, false);
    if (s->filter == LLM_FILTER_OUTPUT)
        filter_feed(s, text, len, false);
    else
        do_content(s, 0, text, len);
    pthread_mutex_unlock(&s->mu);
}

static void sink_begin_call(struct sink *s, enum llm_filter filter)
{
    pthread_mutex_lock(&s->mu);
    s->filter = filter;
    s->fstate = F_BEFORE;
    s->fstarted = false;
    s->call_streamed = false;
    buf_reset(&s->hold);
    pthread_mutex_unlock(&s->mu);
}

/* Ends a streamed call; returns whether it streamed any content. */
static bool sink_end_call(struct sink *s)
{
    bool streamed;

    pthread_mutex_lock(&s->mu);
    if (s->npost > 0) { /* release what the restorers held back */
        size_t len = 0;
        const char *rest = post_stream(s, "", &len, true);

        if (s->filter == LLM_FILTER_OUTPUT)
            filter_feed(s, rest, len, false);
        else
            do_content(s, 0, rest, len);
    }
    if (s->filter == LLM_FILTER_OUTPUT && s->fstate == F_INSIDE)
        filter_feed(s, "", 0, true);
    streamed = s->call_streamed;
    pthread_mutex_unlock(&s->mu);
    return streamed;
}

static void sink_keepalive(struct sink *s, double interval)
{
    static const char ka[] = ": keep-alive\n\n";

    pthread_mutex_lock(&s->mu);
    if (px_now_us() - s->last_send_us >= (long long)(interval * 1e6) - 1000) {
        exchange_stream(s->ex, 200, "text/event-stream", ka, sizeof(ka) - 1, false);
        s->last_send_us = px_now_us();
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- transport --------------------------------------------------------------------------------
 */

struct transport {
    struct exchange *ex;
    struct sink *ka; /* the client's stream, for keep-alives while waiting; NULL if none */
};

/* n support, remembered per upstream base URL (the tenant's or the server's). */
static const char *t_base(struct llm *llm)
{
    struct transport *t = llm->impl;

    return t->ex->base_url ? t->ex->base_url : px_config->base_url;
}

static int t_get_n(struct llm *llm)
{
    int v = nsupport_get(t_base(llm), px_now_us());

    /* Unknown here: another instance may have learnt it (--redis; -1 without Redis). */
    if (v < 0 && (v = redis_nsupport_get(t_base(llm))) >= 0)
        nsupport_set(t_base(llm), v, px_now_us());
    return v;
}

static void t_set_n(struct llm *llm, int v)
{
    nsupport_set(t_base(llm), v, px_now_us());
    if (v >= 0)
        redis_nsupport_set(t_base(llm), v == 1);
}

static char *call_body(struct approach_ctx *ctx, const struct llm_call *c, bool stream, size_t *len)
{
    const struct chat_request *req = ctx->req;
    cJSON *o = cJSON_CreateObject();
    cJSON *msgs;
    double t = c->params.temperature;
    long mt = c->params.max_tokens;
    char *s;

    cJSON_AddStringToObject(o, "model", c->params.model ? c->params.model : req->upstream_model);
    msgs = cJSON_AddArrayToObject(o, "messages");
    for (size_t i = 0; i < c->nmsgs; i++) {
        const struct llm_msg *m = &c->msgs[i];

        if (m->raw) {
            cJSON_AddItemToArray(msgs, cJSON_Duplicate(m->raw, 1));
        } else {
            cJSON *mo = cJSON_CreateObject();

            cJSON_AddStringToObject(mo, "role", m->role ? m->role : "user");
            cJSON_AddStringToObject(mo, "content", m->content ? m->content : "");
            cJSON_AddItemToArray(msgs, mo);
        }
    }
    if (isnan(t))
        t = req->temperature;
    if (!isnan(t))
        cJSON_AddNumberToObject(o, "temperature", t);
    if (mt < 0)
        mt = req->max_tokens;
    if (mt >= 0)
        cJSON_AddNumberToObject(o, req->max_is_completion ? "max_completion_tokens" : "max_tokens",
                                (double)mt);
    if (c->params.n > 1)
        cJSON_AddNumberToObject(o, "n", c->params.n);
    if (stream) {
        cJSON_AddTrueToObject(o, "stream");
        cJSON *so = cJSON_AddObjectToObject(o, "stream_options");
        cJSON_AddTrueToObject(so, "include_usage");
    }
    if (c->params.tools_json) { /* the approach's tools (mcp), then the client's on answers */
        cJSON *tools = cJSON_Parse(c->params.tools_json);
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(req->body, "tools");
        const cJSON *ti;

        if (cJSON_IsArray(tools)) {
            if (c->params.answer && cJSON_IsArray(ct))
                cJSON_ArrayForEach(ti, ct) cJSON_AddItemToArray(tools, cJSON_Duplicate(ti, 1));
            cJSON_AddItemToObject(o, "tools", tools);
        } else {
            cJSON_Delete(tools);
        }
    }
    fields_copy(o, req->body, c->params.answer); /* the client's other fields, unchanged */
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    *len = strlen(s);
    return s;
}

/* The upstream's error: error.message (type, code) of an OpenAI-shaped body, else the text. */
static void error_fields(struct arena *a, const char *body, size_t len, struct llm_reply *r)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    char *msg = NULL;

    if (root) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");

        if (cJSON_IsString(m))
            msg = arena_strndup(a, m->valuestring, 1000);
        if (cJSON_IsString(t))
            r->error_type = arena_strndup(a, t->valuestring, 40);
        if (cJSON_IsString(c))
            r->error_code = arena_strndup(a, c->valuestring, 40);
        cJSON_Delete(root);
    }
    if (!msg) { /* not OpenAI-shaped: {"error":"TypeError","message":..}, text, HTML */
        char *t = http_upstream_text(body, len, 1000);

        msg = arena_strdup(a, t[0] ? t : "upstream error");
        cJSON_free(t);
    }
    redact_secrets(msg);
    r->error = msg;
}

static void parse_reply(struct approach_ctx *ctx, struct xfer *x, struct llm_reply *r)
{
    struct arena *a = ctx->arena;

    r->latency_ms = (x->end_us - x->start_us) / 1000;
    r->http_status = (int)x->http_status;
    r->usage.calls = x->attempts; /* retries and fallbacks included */
    if (x->aborted) {
        r->status = PX_ECANCELLED;
        r->error = "the request was cancelled";
        return;
    }
    if (x->result != CURLE_OK) {
        r->status = x->result == CURLE_OPERATION_TIMEDOUT ? PX_ETIMEDOUT : PX_EUPSTREAM;
        r->error = x->result == CURLE_OPERATION_TIMEDOUT
                       ? arena_printf(a, "the upstream did not answer within %g s",
                                      px_config->upstream_timeout)
                       : arena_printf(a, "upstream unreachable: %s",
                                      x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
        if (x->kind == XFER_STREAM && x->sse) {
            size_t got;

            sse_parser_usage(x->sse, &r->usage);
            r->usage.calls = x->attempts;
            if (sse_parser_text(x->sse, &got) && got > 0 && x->result != CURLE_OPERATION_TIMEDOUT)
                r->error = arena_printf(a, "upstream stream interrupted: %s",
                                        x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
        }
        return;
    }
    if (x->http_status >= 400 || x->http_status < 200) {
        r->status = PX_EHTTP;
        error_fields(a, buf_cstr(&x->resp), x->resp.len, r);
        if (x->ex && x->ex->proxy_key && (x->http_status == 401 || x->http_status == 403)) {
            struct px_error ke; /* the operator's key, not the client's: 502 */

            http_key_rejected(&ke, (int)x->http_status, r->error, strlen(r->error));
            r->http_status = 502;
            r->error = arena_strdup(a, ke.message);
            r->error_type = "server_error";
            r->error_code = "upstream_key_rejected";
        }
        return;
    }
    if (x->kind == XFER_STREAM && !xfer_json_reply(x)) {
        size_t len;
        const char *text;
        /* A last line without a newline still counts; then the stream must have ended. */
        bool complete = sse_parser_end(x->sse, x->on_delta, x->sink) == 0;

        text = sse_parser_text(x->sse, &len);
        sse_parser_usage(x->sse, &r->usage);
        r->usage.calls = x->attempts;
        if (sse_parser_error(x->sse)) {
            r->status = PX_EUPSTREAM;
            char *msg = arena_strdup(a, sse_parser_error(x->sse));

            redact_secrets(msg);
            r->error = msg;
            return;
        }
        if (!complete) { /* cut short: neither [DONE] nor a finish_reason */
            r->status = PX_EUPSTREAM;
            r->error = "upstream stream interrupted";
            return;
        }
        r->choices = arena_calloc(a, 1, sizeof(*r->choices));
        r->choices[0].text = arena_strndup(a, text, len);
        r->choices[0].finish_reason = arena_strdup(a, sse_parser_finish(x->sse));
        r->nchoices = 1;
        r->status = PX_OK;
        return;
    }
    cJSON *root = cJSON_ParseWithLength(buf_cstr(&x->resp), x->resp.len);
    const cJSON *choices = root ? cJSON_GetObjectItemCaseSensitive(root, "choices") : NULL;
    if (!cJSON_IsArray(choices) && cJSON_GetObjectItemCaseSensitive(root, "error")) {
        r->status = PX_EUPSTREAM; /* a 2xx whose body is an error */
        error_fields(a, buf_cstr(&x->resp), x->resp.len, r);
        cJSON_Delete(root);
        return;
    }
    if (!cJSON_IsArray(choices)) {
        r->status = PX_EUPSTREAM;
        r->error = "the upstream's answer is not a chat completion";
        cJSON_Delete(root);
        return;
    }
    llm_usage_parse(cJSON_GetObjectItemCaseSensitive(root, "usage"), &r->usage);
    int n = cJSON_GetArraySize(choices);
    r->choices = arena_calloc(a, (size_t)(n > 0 ? n : 1), sizeof(*r->choices));
    const cJSON *c;
    cJSON_ArrayForEach(c, choices)
    {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c, "message");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(c, "logprobs");
        struct llm_choice *ch = &r->choices[r->nchoices++];

        ch->text = cJSON_IsString(content) ? arena_strdup(a, content->valuestring) : "";
        ch->finish_reason = cJSON_IsString(fr) ? arena_strdup(a, fr->valuestring) : "";
        if (cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0) {
            char *j = cJSON_PrintUnformatted(tc);

            ch->tool_calls = arena_strdup(a, j);
            cJSON_free(j);
        }
        if (cJSON_IsObject(lp)) {
            char *j = cJSON_PrintUnformatted(lp);

            ch->logprobs = arena_strdup(a, j);
            cJSON_free(j);
        }
    }
    r->status = PX_OK;
    cJSON_Delete(root);
}

/* The request's ceilings, checked before each call begins: calls begun (--max-request-calls,
 * lowered by a tenant's max_calls, never raised) and tokens used by the calls finished so far
 * (--max-request-tokens). NULL when the call may begin (it is counted), else the reason. */
static const char *ceiling_check(struct exchange *ex)
{
    long max_calls = px_config->max_request_calls;
    bool tenant = ex->tenant && ex->tenant->max_calls > 0 &&
                  (max_calls <= 0 || ex->tenant->max_calls <= max_calls);
    const char *why = NULL;

    if (tenant)
        max_calls = ex->tenant->max_calls;
    pthread_mutex_lock(&ex->mu);
    if (max_calls > 0 && ex->calls_started >= max_calls)
        why = tenant ? "the tenant's limit of upstream calls per request is spent"
                     : "the request's ceiling of upstream calls (--max-request-calls) is spent";
    else if (px_config->max_request_tokens > 0 && ex->tokens_used >= px_config->max_request_tokens)
        why = "the request's ceiling of tokens (--max-request-tokens) is spent";
    else
        ex->calls_started++;
    pthread_mutex_unlock(&ex->mu);
    return why;
}

static void t_run(struct llm *llm, struct approach_ctx *ctx, struct llm_call *calls, size_t m)
{
    struct transport *t = llm->impl;
    struct exchange *ex = t->ex;
    struct sink *sink = ctx->sink;
    struct sched_group g;
    struct xfer **xs = arena_calloc(ctx->arena, m ? m : 1, sizeof(*xs));
    bool streaming_call = false;
    int to_submit = 0;

    for (size_t i = 0; i < m; i++) {
        struct llm_call *c = &calls[i];
        bool stream = c->stream_to_client && sink && !streaming_call;
        size_t len;
        char *body;

        memset(&c->reply, 0, sizeof(c->reply));
        if (exchange_cancelled(ex)) {
            c->reply.status = PX_ECANCELLED;
            c->reply.error = "the request was cancelled";
            continue;
        }
        if ((c->reply.error = ceiling_check(ex)) != NULL) {
            c->reply.status = PX_ELIMIT;
            c->reply.http_status = 429;
            continue;
        }
        body = call_body(ctx, c, stream, &len);
        xs[i] = xfer_create(px_config, stream ? XFER_STREAM : XFER_CALL, ex, "/chat/completions",
                            ex->upstream_key, body, len);
        xs[i]->group = &g;
        xs[i]->stage = c->stage;
        if (stream) {
            streaming_call = true;
            xs[i]->sse = sse_parser_create();
            xs[i]->on_delta = sink_delta;
            xs[i]->sink = sink;
            sink_begin_call(sink, c->params.filter);
        }
        to_submit++;
        log_at(LOG_DEBUG, ex->id, "upstream call %s%s", c->stage ? c->stage : "?",
               stream ? " (streamed)" : "");
    }
    sched_group_init(&g, to_submit);
    long long wait_start = px_now_us();
    for (size_t i = 0; i < m; i++) {
        if (xs[i] && io_submit(xs[i]) < 0) {
            xs[i]->aborted = true;
            sched_group_done(&g);
        }
    }
    /* Wait for the stage (a coroutine parks; a plain thread blocks), sending SSE keep-alives
     * to a streaming client meanwhile. */
    if (t->ka && px_config->sse_keepalive > 0) {
        while (sched_group_wait(&g, px_config->sse_keepalive) == 1)
            sink_keepalive(t->ka, px_config->sse_keepalive);
    } else {
        sched_group_wait(&g, 0);
    }
    if (to_submit > 0) {
        pthread_mutex_lock(&ex->mu);
        ex->upstream_us += px_now_us() - wait_start;
        pthread_mutex_unlock(&ex->mu);
    }
    for (size_t i = 0; i < m; i++) {
        if (!xs[i])
            continue;
        parse_reply(ctx, xs[i], &calls[i].reply);
        pthread_mutex_lock(&ex->mu); /* the token ceiling counts finished calls */
        ex->tokens_used +=
            calls[i].reply.usage.prompt_tokens + calls[i].reply.usage.completion_tokens;
        if ((xs[i]->http_status == 429 || xs[i]->http_status == 503) && xs[i]->retry_after_s > 0 &&
            xs[i]->retry_after_s > ex->retry_after)
            ex->retry_after = (int)xs[i]->retry_after_s; /* sent with an error answer only */
        pthread_mutex_unlock(&ex->mu);
        if (otlp_on)
            otlp_xfer_end(xs[i], &calls[i].reply.usage);
        if (xs[i]->kind == XFER_STREAM && sink_end_call(sink) && calls[i].reply.status == PX_OK)
            ctx->streamed = true;
        convlog_call(ex, calls[i].stage, calls[i].reply.latency_ms, calls[i].reply.status,
                     calls[i].reply.http_status, &calls[i].reply.usage);
        if (calls[i].reply.status != PX_OK && calls[i].reply.status != PX_ECANCELLED)
            log_at(LOG_WARN, ex->id, "upstream call %s failed: HTTP %d: %s",
                   calls[i].stage ? calls[i].stage : "?", calls[i].reply.http_status,
                   calls[i].reply.error);
        xfer_destroy(xs[i]);
    }
    sched_group_cleanup(&g);
}

static const struct llm_ops transport_ops = {.run = t_run, .get_n = t_get_n, .set_n = t_set_n};

/* ---- running a route --------------------------------------------------------------------------
 */

struct run {
    struct exchange *ex;
    const struct route *route;
    const struct chat_request *req;
    struct sink *sink; /* NULL unless this run streams its final stage */
    struct sink *ka;   /* the client's stream (every run of a stream request): keep-alives */
    struct arena *arena;
    /* results */
    int nresults;
    int rc[ROUTE_MAX];
    const char *text[ROUTE_MAX];
    const char *finish[ROUTE_MAX];
    const char *tools[ROUTE_MAX];    /* tool_calls JSON, or NULL */
    const char *logprobs[ROUTE_MAX]; /* logprobs JSON, or NULL */
    bool streamed;
    struct usage usage;
    struct px_error err;
    /* What the plugins of this run leave to be done to its answer (privacy). */
    struct approach_post post[ROUTE_MAX];
    int npost;
};

static int run_prepare(struct run *r, const struct approach *a, const struct chat_request *req,
                       const struct chat_request **next);
static const struct approach approach_plain;

/* Per-request budgets (optillm_max_calls / optillm_max_tokens), approach-facing: an approach
 * that cannot degrade to fit is refused before its first call (400). */
static int budget_check(struct approach_ctx *ctx, const struct approach *a)
{
    long left = llm_budget_calls_left(ctx);
    int need = a->min_calls > 0 ? a->min_calls : a->calls;

    if (left == LONG_MAX || need <= left)
        return PX_OK;
    return px_fail(ctx->err, PX_EINVAL, "optillm_max_calls",
                   "approach '%s' needs at least %d upstream calls; the request's budget leaves "
                   "%ld",
                   a->slug, need, left < 0 ? 0 : left);
}

/* "X-Optillm-Budget: calls=U/L tokens=U/L[; how it degraded]" for a request with a budget. */
static void budget_header(struct exchange *ex, const struct approach_ctx *ctx,
                          const struct usage *u)
{
    long cl = llm_budget_calls_left(ctx), tl = llm_budget_tokens_left(ctx);
    long tok = u->prompt_tokens + u->completion_tokens;
    char calls[48] = "", tokens[48] = "";
    const char *h;

    if (cl == LONG_MAX && tl == LONG_MAX)
        return;
    if (cl != LONG_MAX)
        snprintf(calls, sizeof(calls), "calls=%ld/%ld", u->calls, u->calls + cl);
    if (tl != LONG_MAX)
        snprintf(tokens, sizeof(tokens), "%stokens=%ld/%ld", *calls ? " " : "", tok, tok + tl);
    h = arena_printf(ex->arena, "%s%s%s%s", calls, tokens, ctx->budget_note ? "; " : "",
                     ctx->budget_note ? ctx->budget_note : "");
    pthread_mutex_lock(&ex->mu);
    ex->budget_header = h;
    pthread_mutex_unlock(&ex->mu);
}

struct offloaded {
    const struct approach *a;
    struct approach_ctx *ctx;
    struct chat_result *res;
    int rc;
};

static void offloaded_main(void *arg)
{
    struct offloaded *o = arg;

    o->rc = o->a->run(o->ctx, o->res);
}

/* An approach that calls deep library code (libz3) runs on a helper thread, not on a small
 * coroutine stack; its llm_* calls then block that thread. */
static int run_offloadable(const struct approach *a, struct approach_ctx *ctx,
                           struct chat_result *res)
{
    struct offloaded o = {.a = a, .ctx = ctx, .res = res};

    if (!a->offload)
        return a->run(ctx, res);
    sched_offload(offloaded_main, &o);
    return o.rc;
}

/* The context every approach step of a run starts from: the run's arena, error and id, the
 * configured options, calls through 'llm'. */
static struct approach_ctx run_ctx(struct run *r, const struct chat_request *req, struct llm *llm)
{
    return (struct approach_ctx){
        .arena = r->arena,
        .req = req,
        .opts = approach_opts_of(px_config),
        .llm = llm,
        .err = &r->err,
        .req_id = r->ex->id,
        .tenant = r->ex->tenant ? arena_strdup(r->arena, r->ex->tenant->name) : "",
    };
}

/* One approach on one request. */
static int run_approach(struct run *r, const struct approach *a, const struct chat_request *req,
                        bool stream_final, const char **text, const char **finish,
                        const char **tools, const char **logprobs)
{
    if (a->prepare) { /* a plugin at the end of a route or in a '|' branch */
        const struct chat_request *next;
        int rc = run_prepare(r, a, req, &next);

        if (rc < 0)
            return rc;
        a = &approach_plain;
        req = next;
    }
    struct transport t = {.ex = r->ex, .ka = r->ka};
    struct llm llm = {.ops = &transport_ops, .impl = &t};
    struct chat_result res = {0};
    struct approach_ctx ctx = run_ctx(r, req, &llm);

    ctx.stream_final = stream_final && r->sink;
    ctx.sink = stream_final ? r->sink : NULL;
    ctx.budget_tenant_calls = r->ex->tenant ? r->ex->tenant->max_calls : 0;
    ctx.budget_spent = r->usage;
    int rc = budget_check(&ctx, a);

    if (rc == PX_OK)
        rc = run_offloadable(a, &ctx, &res);
    llm_usage_add(&r->usage, &ctx.usage);
    budget_header(r->ex, &ctx, &r->usage);
    if (ctx.route_note) {
        pthread_mutex_lock(&r->ex->mu);
        r->ex->route_header = arena_strdup(r->ex->arena, ctx.route_note);
        pthread_mutex_unlock(&r->ex->mu);
    }
    if (rc < 0)
        return rc;
    if (exchange_cancelled(r->ex))
        return px_fail(&r->err, PX_ECANCELLED, NULL, "the request was cancelled");
    *text = res.text ? res.text : "";
    *finish = res.finish_reason ? res.finish_reason : "stop";
    *tools = res.tool_calls;
    *logprobs = res.logprobs;
    if (ctx.streamed)
        r->streamed = true;
    return PX_OK;
}

/* A plugin's step: *next is the request the following steps see; its post (if any) is kept
 * for the answer, and its stream restorer given to the sink when this run streams. */
struct offloaded_prep {
    const struct approach *a;
    struct approach_ctx *ctx;
    struct chat_request *next;
    struct approach_post *post;
    int rc;
};

static void offloaded_prep_main(void *arg)
{
    struct offloaded_prep *o = arg;

    o->rc = o->a->prepare(o->ctx, o->next, o->post);
}

static int run_prepare(struct run *r, const struct approach *a, const struct chat_request *req,
                       const struct chat_request **next)
{
    struct transport t = {.ex = r->ex, .ka = r->ka};
    struct llm llm = {.ops = &transport_ops, .impl = &t};
    struct chat_request *q = arena_alloc(r->arena, sizeof(*q));
    struct approach_post post = {0};
    struct approach_ctx ctx = run_ctx(r, req, &llm);
    int rc;

    *q = *req;
    if (a->offload) { /* blocking work (readurls' fetches): a helper thread, not a coroutine */
        struct offloaded_prep o = {.a = a, .ctx = &ctx, .next = q, .post = &post};

        sched_offload(offloaded_prep_main, &o);
        rc = o.rc;
    } else {
        rc = a->prepare(&ctx, q, &post);
    }
    llm_usage_add(&r->usage, &ctx.usage);
    if (rc < 0)
        return rc;
    if (exchange_cancelled(r->ex))
        return px_fail(&r->err, PX_ECANCELLED, NULL, "the request was cancelled");
    if ((post.answer || post.stream) && r->npost < ROUTE_MAX) {
        r->post[r->npost++] = post;
        if (post.stream && r->sink) {
            pthread_mutex_lock(&r->sink->mu);
            if (r->sink->npost < ROUTE_MAX)
                r->sink->post[r->sink->npost++] = post;
            r->sink->post_arena = r->arena;
            pthread_mutex_unlock(&r->sink->mu);
        }
    }
    *next = q;
    return PX_OK;
}

/* The completion that follows a plugin at the end of a route ("privacy-x", "moa&readurls-x"):
 * the prepared conversation, as one answer call (streamed when the client streams). */
static int plain_run(struct approach_ctx *ctx, struct chat_result *out)
{
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    struct llm_params p = llm_params_default();
    struct llm_choice c;
    int rc = llm_final(ctx, msgs, nmsgs, &p, "plugin/final", &c);

    if (rc < 0)
        return rc;
    out->text = c.text;
    out->finish_reason = c.finish_reason && *c.finish_reason ? c.finish_reason : "stop";
    out->tool_calls = c.tool_calls;
    out->logprobs = c.logprobs;
    return PX_OK;
}

static const struct approach approach_plain = {
    .slug = "plain",
    .run = plain_run,
    .summary = "one completion of the request a plugin prepared",
    .calls = 1,
    .rounds = 1,
    .tools = true,
    .response_format = true,
};

/* Can 'a' run ctx's request here: an answering approach, code execution when it needs it,
 * the request's tools and response_format, the call budget? */
static bool delegate_fits(struct approach_ctx *ctx, const struct approach *a)
{
    const struct config *cfg = (const struct config *)(const void *)ctx->opts;
    struct chat_request q = *ctx->req;
    struct px_error e = {0};
    long left = llm_budget_calls_left(ctx);
    int need = a->min_calls > 0 ? a->min_calls : a->calls;

    if (!a->run || a->prepare || (a->code_execution && !(cfg && cfg->enable_code_execution)))
        return false;
    if (left != LONG_MAX && need > left)
        return false;
    q.route.op = ROUTE_SINGLE;
    q.route.count = 1;
    q.route.steps[0] = a;
    if (chat_check_fields(ctx->arena, &q, &e) != PX_OK)
        return false;
    /* A tenant's approach list and per-request call limit hold for what the router picks
     * too (the fake transport of unit tests has no tenant). */
    if (ctx->llm && ctx->llm->ops == &transport_ops) {
        const struct exchange *ex = ((const struct transport *)ctx->llm->impl)->ex;

        if (ex->tenant && tenants_allow(ex->tenant, &q, &e) != PX_OK)
            return false;
    }
    return true;
}

int approach_delegate(struct approach_ctx *ctx, const struct approach *a, const char **ran,
                      struct chat_result *out)
{
    int rc;

    if (!a || !delegate_fits(ctx, a))
        a = &approach_plain;
    *ran = a == &approach_plain ? "none" : a->slug;
    if ((rc = budget_check(ctx, a)) < 0)
        return rc;
    return run_offloadable(a, ctx, out);
}

/* Every string value of a JSON tree through fn (in place). */
static void json_map_strings(cJSON *j, struct arena *a, const struct approach_post *p)
{
    for (cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (cJSON_IsString(c)) {
            const char *v = p->answer(p->state, a, c->valuestring);

            if (strcmp(v, c->valuestring) != 0)
                cJSON_SetValuestring(c, v);
        } else {
            json_map_strings(c, a, p);
        }
    }
}

/* The tool calls' arguments (JSON texts inside JSON) restored string by string, so that a
 * restored value with quotes or newlines stays valid JSON. */
static const char *post_tool_calls(struct arena *a, const char *tools,
                                   const struct approach_post *p)
{
    cJSON *arr = cJSON_Parse(tools);
    cJSON *call;
    char *s;
    const char *res;

    if (!arr)
        return tools;
    cJSON_ArrayForEach(call, arr)
    {
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        cJSON *parsed = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;

        if (parsed) {
            char *printed;

            if (cJSON_IsString(parsed))
                cJSON_SetValuestring(parsed, p->answer(p->state, a, parsed->valuestring));
            else
                json_map_strings(parsed, a, p);
            printed = cJSON_PrintUnformatted(parsed);
            cJSON_SetValuestring(args, printed);
            cJSON_free(printed);
            cJSON_Delete(parsed);
        }
    }
    s = cJSON_PrintUnformatted(arr);
    res = arena_strdup(a, s);
    cJSON_free(s);
    cJSON_Delete(arr);
    return res;
}

/* Applies the run's plugin posts, last plugin first, to its answer. */
static void apply_posts(struct run *r, const char **text, const char **tools)
{
    for (int i = r->npost; i-- > 0;) {
        const struct approach_post *p = &r->post[i];

        if (!p->answer)
            continue;
        if (*text)
            *text = p->answer(p->state, r->arena, *text);
        if (*tools)
            *tools = post_tool_calls(r->arena, *tools, p);
    }
}

/* The request b of a pipeline step: the original system prompt, a's answer as the query. */
static const struct chat_request *pipeline_request(struct arena *a, const struct chat_request *orig,
                                                   const char *answer)
{
    struct chat_request *q = arena_alloc(a, sizeof(*q));
    const char *sys = chat_system(a, orig);
    size_t n = 0;

    *q = *orig;
    q->msgs = arena_calloc(a, 2, sizeof(*q->msgs));
    if (*sys) {
        q->msgs[n].role = "system";
        q->msgs[n++].content = sys;
    }
    q->msgs[n].role = "user";
    q->msgs[n++].content = answer;
    q->nmsgs = n;
    q->prev_answer = answer;
    return q;
}

struct branch {
    struct run *parent;
    const struct approach *a;
    struct run sub;
    int rc;
    const char *text;
    const char *finish;
    const char *tools;
    const char *logprobs;
};

static void branch_main(void *arg)
{
    struct branch *b = arg;

    b->rc = run_approach(&b->sub, b->a, b->sub.req, false, &b->text, &b->finish, &b->tools,
                         &b->logprobs);
    if (b->rc == PX_OK)
        apply_posts(&b->sub, &b->text, &b->tools);
}

static void arena_destroy_cb(void *p)
{
    arena_destroy(p);
}

/* Runs the route once: fills r->text[]/r->rc[] (one result, or one per '|' approach). */
static void run_route(struct run *r)
{
    const struct route *rt = r->route;

    if (rt->op == ROUTE_OR) {
        /* In the arena, not on this frame: ROUTE_MAX branches are 15 KiB, and a frame that size
         * would push every approach's calls 15 KiB further down each coroutine's stack, resident
         * in every waiting request (bench/RESULTS.md, peak memory). */
        struct branch *br = arena_calloc(r->arena, (size_t)rt->count, sizeof(*br));
        bool *started = arena_calloc(r->arena, (size_t)rt->count, sizeof(*started));
        struct sched_group kids;

        sched_group_init(&kids, rt->count);
        for (int i = 0; i < rt->count; i++) {
            br[i].parent = r;
            br[i].a = rt->steps[i];
            br[i].sub.ex = r->ex;
            br[i].sub.ka = r->ka;
            br[i].sub.req = r->req;
            br[i].sub.arena = arena_create();
            arena_defer(r->arena, arena_destroy_cb, br[i].sub.arena);
            /* Each branch is a coroutine beside this one (inline if none can start). */
            started[i] = sched_spawn(branch_main, &br[i], &kids, SCHED_CHILD) == 0;
            if (!started[i]) {
                branch_main(&br[i]);
                sched_group_done(&kids);
            }
        }
        sched_group_wait(&kids, 0);
        sched_group_cleanup(&kids);
        for (int i = 0; i < rt->count; i++) {
            llm_usage_add(&r->usage, &br[i].sub.usage);
            r->rc[i] = br[i].rc;
            r->text[i] = br[i].text;
            r->finish[i] = br[i].finish;
            r->tools[i] = br[i].tools;
            r->logprobs[i] = br[i].logprobs;
            if (br[i].rc < 0 && r->err.code == 0)
                r->err = br[i].sub.err;
        }
        r->nresults = rt->count;
        return;
    }
    const struct chat_request *req = r->req;
    const struct chat_request *base = r->req; /* what a step after an answer builds on */
    const char *text = NULL, *finish = NULL, *tools = NULL, *logprobs = NULL;
    bool answered = false; /* the previous step answered (not a plugin) */
    int rc = PX_OK;
    /* A step that answers with tool calls ends the pipeline: the client runs the tools. */
    for (int i = 0; i < rt->count && rc == PX_OK && !tools; i++) {
        const struct approach *a = rt->steps[i];

        if (answered)
            req = pipeline_request(r->arena, base, text);
        if (a->prepare && i < rt->count - 1) { /* a plugin shapes the request for the rest */
            rc = run_prepare(r, a, req, &req);
            base = req;
            answered = false;
            continue;
        }
        rc = run_approach(r, a, req, i == rt->count - 1, &text, &finish, &tools, &logprobs);
        answered = true;
    }
    if (rc == PX_OK)
        apply_posts(r, &text, &tools);
    r->nresults = 1;
    r->rc[0] = rc;
    r->text[0] = text;
    r->finish[0] = finish;
    r->tools[0] = tools;
    r->logprobs[0] = logprobs;
}

static void run_main(void *arg)
{
    run_route(arg);
}

/* ---- the response -----------------------------------------------------------------------------
 */

static cJSON *usage_json(const struct usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *d;

    cJSON_AddNumberToObject(o, "prompt_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(u->prompt_tokens + u->completion_tokens));
    d = cJSON_AddObjectToObject(o, "completion_tokens_details");
    cJSON_AddNumberToObject(d, "reasoning_tokens", (double)u->reasoning_tokens);
    return o;
}

struct choice_out {
    const char *text;
    const char *finish;
    const char *tools;    /* tool_calls JSON array text, or NULL */
    const char *logprobs; /* the answer's logprobs object, or NULL */
};

static void reply_json(struct exchange *ex, struct sink *s, const struct choice_out *ch, int nch,
                       const struct usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *choices;
    char *body;

    cJSON_AddStringToObject(o, "id", s->id);
    cJSON_AddStringToObject(o, "object", "chat.completion");
    cJSON_AddNumberToObject(o, "created", (double)s->created);
    cJSON_AddStringToObject(o, "model", ex->req.model);
    choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < nch; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON *m = cJSON_AddObjectToObject(c, "message");

        cJSON_AddNumberToObject(c, "index", i);
        cJSON_AddStringToObject(m, "role", "assistant");
        if (ch[i].tools && !*ch[i].text)
            cJSON_AddNullToObject(m, "content"); /* as OpenAI answers a pure tool call */
        else
            cJSON_AddStringToObject(m, "content", ch[i].text);
        if (ch[i].tools)
            cJSON_AddItemToObject(m, "tool_calls", cJSON_Parse(ch[i].tools));
        if (ch[i].logprobs)
            cJSON_AddItemToObject(c, "logprobs", cJSON_Parse(ch[i].logprobs));
        cJSON_AddStringToObject(c, "finish_reason", ch[i].finish);
        cJSON_AddItemToArray(choices, c);
    }
    if (u->reported) /* no upstream call reported usage: none is invented */
        cJSON_AddItemToObject(o, "usage", usage_json(u));
    body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    exchange_reply(ex, 200, "application/json", body, strlen(body));
    cJSON_free(body);
}

/* Sends a choice's tool calls as one delta.tool_calls chunk: each call whole, with its
 * "index" (the position in the list), id, type and function {name, arguments}. Clients
 * accumulate fragments by index, so a complete call in one fragment is what they expect.
 * Caller holds s->mu. */
static void do_tool_calls(struct sink *s, int index, const char *tools)
{
    cJSON *arr = cJSON_Parse(tools);
    cJSON *chunk, *c, *d, *tc;
    int k = 0;

    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return;
    }
    cJSON_ArrayForEach(tc, arr)
    {
        cJSON_DeleteItemFromObjectCaseSensitive(tc, "index");
        cJSON_AddNumberToObject(tc, "index", k++);
    }
    chunk = chunk_new(s);
    c = choice_obj(chunk, index);
    d = cJSON_AddObjectToObject(c, "delta");
    cJSON_AddItemToObject(d, "tool_calls", arr);
    cJSON_AddNullToObject(c, "finish_reason");
    do_send(s, chunk);
}

/* Ends a stream: content of choices not streamed yet, finish chunks, usage, [DONE]. */
static void reply_stream(struct exchange *ex, struct sink *s, const struct choice_out *ch, int nch,
                         bool streamed, const struct usage *u)
{
    static const char done[] = "data: [DONE]\n\n";

    pthread_mutex_lock(&s->mu);
    if (!s->head_sent) {
        do_head(s, 0);
        s->head_sent = true;
    }
    for (int i = 0; i < nch; i++) {
        cJSON *chunk, *c;

        if (!streamed) {
            if (i > 0)
                do_head(s, i);
            do_content(s, i, ch[i].text, strlen(ch[i].text));
            if (ch[i].tools)
                do_tool_calls(s, i, ch[i].tools);
            if (ch[i].logprobs) { /* one chunk with the whole answer's logprobs */
                chunk = chunk_new(s);
                c = choice_obj(chunk, i);
                cJSON_AddObjectToObject(c, "delta");
                cJSON_AddItemToObject(c, "logprobs", cJSON_Parse(ch[i].logprobs));
                cJSON_AddNullToObject(c, "finish_reason");
                do_send(s, chunk);
            }
        }
        chunk = chunk_new(s);
        c = choice_obj(chunk, i);
        cJSON_AddObjectToObject(c, "delta");
        cJSON_AddStringToObject(c, "finish_reason", ch[i].finish);
        do_send(s, chunk);
    }
    if (ex->req.include_usage && u->reported) {
        cJSON *chunk = chunk_new(s);

        cJSON_AddArrayToObject(chunk, "choices");
        cJSON_AddItemToObject(chunk, "usage", usage_json(u));
        do_send(s, chunk);
    }
    exchange_stream(ex, 200, "text/event-stream", done, sizeof(done) - 1, true);
    pthread_mutex_unlock(&s->mu);
}

void engine_run(void *arg)
{
    struct exchange *ex = arg;
    const struct chat_request *req = &ex->req;
    int nruns = req->n;
    int per = req->route.op == ROUTE_OR ? req->route.count : 1;
    struct sink sink;
    struct usage total = {0};
    struct run *runs;
    struct px_error err = {0};

    memset(&sink, 0, sizeof(sink));
    pthread_mutex_init(&sink.mu, NULL);
    sink.ex = ex;
    response_new_id(sink.id, sizeof(sink.id));
    sink.created = (long)time(NULL);
    sink.model = req->model;
    sink.last_send_us = px_now_us();
    buf_init(&sink.hold, 0);

    if (nruns * per > ENGINE_MAX_RUNS) {
        px_fail(&err, PX_EINVAL, "n", "n x approaches must be at most %d for approach requests",
                ENGINE_MAX_RUNS);
        exchange_reply_error(ex, &err);
        goto out;
    }
    runs = arena_calloc(ex->arena, (size_t)nruns, sizeof(*runs));
    {
        struct sched_group kids;
        bool *started = arena_calloc(ex->arena, (size_t)nruns, sizeof(*started));
        /* With tools, the final stage is not streamed token by token: its answer may be tool
         * calls, whose arguments only mean something whole, and clients accumulate them anyway.
         * It is buffered and sent in the closing chunks (content or delta.tool_calls);
         * keep-alives still flow meanwhile. This keeps tool-call fragments out of the SSE
         * parser and the sink. */
        bool stream_final =
            req->stream && nruns == 1 && req->route.op != ROUTE_OR && !chat_has_tools(req);

        for (int i = 0; i < nruns; i++) {
            runs[i].ex = ex;
            runs[i].route = &req->route;
            runs[i].req = req;
            runs[i].sink = req->stream ? &sink : NULL;
            runs[i].ka = req->stream ? &sink : NULL;
            if (!stream_final)
                runs[i].sink = NULL;
            runs[i].arena = i == 0 ? ex->arena : arena_create();
            if (i > 0)
                arena_defer(ex->arena, arena_destroy_cb, runs[i].arena);
        }
        /* Run 0 here, the others on coroutines beside it (in turn here if none can start). */
        sched_group_init(&kids, nruns - 1);
        for (int i = 1; i < nruns; i++) {
            started[i] = sched_spawn(run_main, &runs[i], &kids, SCHED_CHILD) == 0;
            if (!started[i])
                sched_group_done(&kids);
        }
        run_route(&runs[0]);
        sched_group_wait(&kids, 0);
        sched_group_cleanup(&kids);
        for (int i = 1; i < nruns; i++) {
            if (!started[i])
                run_route(&runs[i]);
        }
    }
    /* Choices from every successful result; failed runs are left out (never padded). */
    struct choice_out *ch = arena_calloc(ex->arena, (size_t)(nruns * per), sizeof(*ch));
    int nch = 0;
    bool streamed = false;
    for (int i = 0; i < nruns; i++) {
        llm_usage_add(&total, &runs[i].usage);
        for (int j = 0; j < runs[i].nresults; j++) {
            if (runs[i].rc[j] == PX_OK) {
                ch[nch].text = runs[i].text[j];
                ch[nch].tools = runs[i].tools[j];
                ch[nch].logprobs = runs[i].logprobs[j];
                ch[nch++].finish = runs[i].finish[j];
            } else if (err.code == 0) {
                err = runs[i].err;
            }
        }
        streamed = streamed || runs[i].streamed;
    }
    /* Charged before the answer leaves, so the tenant's next request already sees it. */
    if (ex->tenant)
        tenants_charge(ex->tenant, total.prompt_tokens + total.completion_tokens);
    pthread_mutex_lock(&ex->mu);
    ex->usage = total;
    if (nch > 0 && px_config->log_conversations) {
        struct buf all;

        buf_init(&all, 0);
        for (int i = 0; i < nch; i++) {
            if (i)
                buf_puts(&all, "\n\n---\n\n");
            buf_puts(&all, ch[i].text);
            if (ch[i].tools)
                buf_puts(&all, ch[i].tools);
        }
        ex->answer = arena_strndup(ex->arena, buf_cstr(&all), all.len);
        buf_free(&all);
    }
    pthread_mutex_unlock(&ex->mu);
    if (exchange_cancelled(ex))
        goto out;
    if (nch == 0) {
        if (err.code == 0)
            px_fail(&err, PX_EUPSTREAM, NULL, "the approach produced no answer");
        exchange_reply_error(ex, &err); /* in-band when the stream has begun */
    } else if (req->stream) {
        reply_stream(ex, &sink, ch, nch, streamed, &total);
    } else {
        reply_json(ex, &sink, ch, nch, &total);
    }
out:
    buf_free(&sink.hold);
    pthread_mutex_destroy(&sink.mu);
    exchange_unref(ex);
}
