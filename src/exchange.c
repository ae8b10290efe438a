/* exchange.c: the client exchange: reference counting, replies and the resume protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "internal.h"
#include "log.h"

static bool id_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

struct exchange *exchange_create(struct MHD_Connection *conn, const char *method, const char *url)
{
    struct exchange *ex = xcalloc(1, sizeof(*ex));
    const char *rid =
        conn ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id") : NULL;
    const union MHD_ConnectionInfo *ci =
        conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD) : NULL;
    size_t i;

    pthread_mutex_init(&ex->mu, NULL);
    metrics_inflight(1);
    ex->refs = 1; /* the MHD side; dropped in notify_completed */
    ex->conn = conn;
    ex->fd = ci ? ci->connect_fd : -1;
    ex->start_us = px_now_us();
    ex->arena = arena_create();
    /* Copies: the access line is written after libmicrohttpd has let go of the request. */
    ex->method = arena_strndup(ex->arena, method, 16);
    ex->url = arena_strndup(ex->arena, url, 512);
    ex->status = 0;
    buf_init(&ex->body, 0);
    buf_init(&ex->out, 0);
    buf_init(&ex->up_headers, 8192);
    buf_init(&ex->calls_log, 0);
    /* The client's request id when it is sane (<= 64 of [A-Za-z0-9._-]), else ours. */
    for (i = 0; rid && rid[i] && i < 64 && id_char_ok(rid[i]); i++)
        ;
    if (rid && i > 0 && rid[i] == '\0') {
        snprintf(ex->id, sizeof(ex->id), "%s", rid);
    } else {
        px_random_id(ex->id, sizeof(ex->id), "req_", 1);
    }
    if (otlp_on && conn)
        otlp_exchange_begin(ex);
    return ex;
}

const char *exchange_forward_headers(struct exchange *ex, bool own_key)
{
    static const char *const names[] = {"OpenAI-Beta", "OpenAI-Organization", "OpenAI-Project"};
    struct buf b;
    const char *out = NULL;

    if (!ex->conn)
        return NULL;
    buf_init(&b, 4096);
    for (size_t i = 0; i < PX_ARRAY_LEN(names); i++) {
        const char *v = MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND, names[i]);
        size_t k;

        if (!v || !*v || (i > 0 && !own_key)) /* never pick an org of the server's key */
            continue;
        for (k = 0; v[k] && k < 256 && (unsigned char)v[k] >= 0x20 && v[k] != 0x7f; k++)
            ;
        if (v[k] == '\0')
            buf_printf(&b, "%s: %s\n", names[i], v);
    }
    if (b.len)
        out = arena_strndup(ex->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return out;
}

void exchange_ref(struct exchange *ex)
{
    pthread_mutex_lock(&ex->mu);
    ex->refs++;
    pthread_mutex_unlock(&ex->mu);
}

void exchange_done(struct exchange *ex)
{
    bool first;

    pthread_mutex_lock(&ex->mu);
    first = !ex->inflight_done;
    ex->inflight_done = true;
    pthread_mutex_unlock(&ex->mu);
    if (first)
        metrics_inflight(-1);
}

void exchange_unref(struct exchange *ex)
{
    int left;

    if (!ex)
        return;
    pthread_mutex_lock(&ex->mu);
    left = --ex->refs;
    pthread_mutex_unlock(&ex->mu);
    if (left > 0)
        return;
    if (ex->completed_us && !ex->accounted)
        server_account(ex);
    if (!ex->inflight_done)
        metrics_inflight(-1);
    tenants_release(ex->tenant_hold);
    arena_destroy(ex->arena);
    buf_free(&ex->body);
    server_body_release(ex);
    buf_free(&ex->out);
    buf_free(&ex->up_headers);
    buf_free(&ex->calls_log);
    door_free(ex->door);
    pthread_mutex_destroy(&ex->mu);
    free(ex);
}

void exchange_do_resume(struct exchange *ex)
{
    if (ex->suspended && !ex->closed) {
        ex->suspended = false;
        MHD_resume_connection(ex->conn);
        io_http_kick(ex->home); /* a loop's daemon has no wake-up channel of its own */
    }
}

bool exchange_cancelled(struct exchange *ex)
{
    bool c;

    pthread_mutex_lock(&ex->mu);
    c = ex->cancelled;
    pthread_mutex_unlock(&ex->mu);
    return c;
}

void exchange_do_append(struct exchange *ex, const char *data, size_t len)
{
    if (len == 0)
        return;
    exchange_out(ex, data, len); /* a front door translates the chat stream (door.c) */
    ex->tail[0] = len >= 2 ? data[len - 2] : ex->tail[1];
    ex->tail[1] = data[len - 1];
}

void exchange_do_note_tail(struct exchange *ex, size_t before)
{
    size_t n = ex->out.len;

    if (n <= before)
        return;
    ex->tail[0] = n - before >= 2 ? ex->out.data[n - 2] : ex->tail[1];
    ex->tail[1] = ex->out.data[n - 1];
}

/* Ends a partial SSE event of a stream (a relay cut mid-line). Caller holds ex->mu. */
static void do_end_event(struct exchange *ex)
{
    if (ex->tail[1] == '\0')
        return; /* nothing sent yet */
    if (ex->tail[1] != '\n')
        exchange_do_append(ex, "\n\n", 2);
    else if (ex->tail[0] != '\n')
        exchange_do_append(ex, "\n", 1);
}

void exchange_reply(struct exchange *ex, int status, const char *ctype, const char *body,
                    size_t len)
{
    pthread_mutex_lock(&ex->mu);
    if (ex->phase < EX_REPLY) {
        ex->status = status;
        snprintf(ex->content_type, sizeof(ex->content_type), "%s", ctype ? ctype : "");
        buf_reset(&ex->out);
        ex->streaming = false;
        ex->phase = EX_REPLY;
        exchange_out(ex, body, len);
        exchange_out_end(ex);
    } else if (ex->streaming && !ex->out_done) {
        /* A stream is under way: an error can only go in-band, as an event of its own. */
        do_end_event(ex);
        exchange_do_append(ex, "data: ", 6);
        exchange_do_append(ex, body, len);
        exchange_do_append(ex, "\n\ndata: [DONE]\n\n", 16);
        exchange_out_end(ex);
    }
    exchange_do_resume(ex);
    pthread_mutex_unlock(&ex->mu);
}

void exchange_reply_error(struct exchange *ex, const struct px_error *err)
{
    size_t len;
    char *body = http_error_json(err, &len);
    int status = px_http_status(err);

    if (status == 503) {
        pthread_mutex_lock(&ex->mu);
        if (ex->retry_after == 0) /* the upstream's own wins */
            ex->retry_after = 1;
        pthread_mutex_unlock(&ex->mu);
    }
    if (strcmp(err->err_code, "upstream_key_rejected") == 0) {
        pthread_mutex_lock(&ex->mu); /* SDKs retry a 502; the operator's key will not change */
        ex->no_retry = true;
        pthread_mutex_unlock(&ex->mu);
    }
    exchange_reply(ex, status, "application/json", body, len);
    free(body);
}

bool exchange_stream(struct exchange *ex, int status, const char *ctype, const char *data,
                     size_t len, bool done)
{
    bool ok;

    pthread_mutex_lock(&ex->mu);
    ok = !ex->cancelled;
    if (ex->phase < EX_REPLY) {
        ex->status = status;
        snprintf(ex->content_type, sizeof(ex->content_type), "%s", ctype);
        ex->streaming = true;
        ex->phase = EX_REPLY;
    }
    if (ok && ex->streaming && !ex->out_done && ex->out.len + len > PX_STREAM_OUT_CAP) {
        /* A reader slower than the upstream: an approach stream cannot pause its producer
         * (as relays do), so the client is dropped rather than buffered without bound (as
         * redis caps a client's output buffer). Its upstream work is cancelled. */
        log_at(LOG_WARN, ex->id, "client reads too slowly: %zu bytes unsent; dropping it",
               ex->out.len);
        buf_free(&ex->out);
        ex->out_done = true;
        ex->out_error = true;
        ex->cancelled = true;
        ok = false;
        io_wake_all();
    }
    if (ok && ex->streaming && !ex->out_done) {
        exchange_do_append(ex, data, len);
        if (done)
            exchange_out_end(ex);
    }
    exchange_do_resume(ex);
    pthread_mutex_unlock(&ex->mu);
    return ok;
}
