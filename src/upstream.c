/* upstream.c: the I/O loops. Each loop is one thread with its own curl multi handles and
 * connection pool (curl 7.88 cannot share a connection cache across threads) plus a pool of the
 * lean HTTP/1.1 client (h1.c) for calls and whole-answer relays to a plain-http upstream at an
 * IP address, carrying many transfers at once, and watching suspended clients' sockets for
 * hang-ups. */
#define _GNU_SOURCE /* POLLRDHUP */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "arena.h"
#include "h1.h"
#include "internal.h"
#include "log.h"
#include "providers.h"

/* A loop's transfers run on up to SHARDS_MAX curl multi handles, filled in order, at most
 * SHARD_CAP each; a spill shard (index > 0) is closed after SHARD_IDLE_US without transfers.
 * libcurl 7.88 walks every connection of a multi handle when a transfer starts (looking for one to
 * reuse) and when one is removed (connect-only clean-up): with thousands of HTTP/1.1 transfers on
 * one handle that walk was 17 % of the loop's CPU (bench/RESULTS.md). A light load stays on shard 0
 * and keeps all its connection reuse. */
#define SHARD_CAP  256
#define SHARDS_MAX 64

#define SHARD_IDLE_US 5000000LL /* a spill shard empty this long is closed, connections and all */

/* The epoll tag of the lean client's sockets (h1.c); shards are 1..SHARDS_MAX. */
#define H1_TAG 0xFFFFu

struct shard {
    CURLM *multi; /* NULL: a spill shard closed after its burst (made again when needed) */
    struct io_loop *loop;
    unsigned index;
    size_t nxfer;   /* transfers on it */
    bool timer_set; /* libcurl's timer: socket_action(TIMEOUT) due at timer_due */
    long long timer_due;
    long long empty_since; /* px_now_us when nxfer last fell to 0 */
};

struct io_loop {
    pthread_t thread;
    struct shard shards[SHARDS_MAX]; /* loop thread only after io_start (shard 0 made there) */
    unsigned nshards;
    struct h1_pool *h1; /* the lean client's connections (loop thread only), or NULL: none */
    unsigned index;

    pthread_mutex_t mu; /* guards q_head, q_tail, watch_q, unwatch_q (and counts), stopping,
                         * http, http_fd, quiesce, quiesced, drained, exit */
    struct xfer *q_head, *q_tail;
    struct exchange **watch_q;
    size_t nwatch_q, cap_watch_q;
    struct exchange **unwatch_q; /* closed exchanges to drop from the watch list */
    size_t nunwatch_q, cap_unwatch_q;
    struct exchange **unwatch_spare; /* loop thread only: the other buffer for unwatch_q */
    size_t cap_unwatch_spare;
    bool stopping;
    struct MHD_Daemon *http; /* io_serve: the daemon this loop runs, or NULL */
    int http_fd;             /* its epoll fd */
    bool quiesce, quiesced;  /* io_quiesce_http asked; this loop did it */
    bool drained;            /* stopping, and no transfer is left (io_stop waits for it) */
    bool exit;               /* io_join: leave the loop */
    int epfd;                /* set up before the thread starts, read-only after */
    int evfd;                /* wake-up eventfd, in epfd (written by any thread) */
    bool kick;               /* atomic: a connection was resumed, run the daemon */
    bool scan;               /* atomic: sweep the transfers (a cancel, a relay to unpause) */

    /* Loop thread only. */
    long long next_sweep; /* px_now_us of the next unasked sweep */
    bool http_added;      /* the daemon's epoll fd is in epfd */
    struct xfer **to_unpause;
    size_t cap_unpause;
    struct pollfd *pfd; /* sweep_watched's poll set, and whose each entry is */
    struct exchange **pfd_ex;
    size_t cap_pfd;
    struct xfer *active;
    size_t nactive;
    struct xfer *delayed;                 /* retries waiting for their due time */
    struct xfer *waiting, **waiting_tail; /* --providers: transfers waiting for a slot */
    uint64_t rng;                         /* jitter */
    struct exchange **watched;
    size_t nwatched, cap_watched;
};

#define RELAY_MAX_LINE (1u << 20) /* a longer stream line is relayed without a look */

static struct io_loop *loops;
static unsigned nloops;
static bool serving; /* some loop runs HTTP: io_stop leaves the threads to io_join (atomic) */
static bool joined;
static __thread struct io_loop *cur_loop;
static unsigned rr; /* round-robin cursor (atomic builtins) */
static const struct config *io_cfg;

static void loop_wake(struct io_loop *l, bool scan);
static struct shard *shard_pick(struct io_loop *l);

/* ---- transfers ------------------------------------------------------------------------------- */

/* Appends the key header (cfg's auth header) to h. */
static struct curl_slist *add_key(const struct config *cfg, struct curl_slist *h, const char *key)
{
    /* The only place a key is formatted; the string lives in the slist and is freed with
     * the transfer. CURLOPT_VERBOSE is never set, so curl does not print it. */
    bool bearer = strcasecmp(cfg->auth_header, "Authorization") == 0;
    size_t hl = strlen(cfg->auth_header) + strlen(key) + 16;
    char *hdr = xmalloc(hl);

    snprintf(hdr, hl, "%s: %s%s", cfg->auth_header, bearer ? "Bearer " : "", key);
    h = curl_slist_append(h, hdr);
    explicit_bzero(hdr, hl);
    free(hdr);
    return h;
}

/* --providers: requests under the server's key (or none) and no tenant upstream go to the
 * providers; a client's or a tenant's own key goes to --base-url (or the tenant's) only. */
static void prov_setup(const struct config *cfg, struct xfer *x, const char *key)
{
    x->prov = x->prov_wait = x->prov_pin = -1;
    if (!providers_enabled() || (x->ex && x->ex->base_url) || (key && key != cfg->upstream_key))
        return;
    x->use_prov = true;
    x->server_key = key;
    if (x->ex && x->ex->tenant)
        x->prov_pin = x->ex->tenant->provider;
    if (x->body) {
        cJSON *j = cJSON_ParseWithLength(x->body, x->body_len);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");

        if (cJSON_IsString(m))
            x->model = xstrdup(m->valuestring);
        cJSON_Delete(j);
    }
}

struct xfer *xfer_create(const struct config *cfg, enum xfer_kind kind, struct exchange *ex,
                         const char *path, const char *key, char *body, size_t body_len)
{
    struct xfer *x = xcalloc(1, sizeof(*x));
    const char *base = ex && ex->base_url ? ex->base_url : cfg->base_url;
    size_t ulen = strlen(base) + strlen(path) + 1;

    x->kind = kind;
    x->ex = ex;
    if (ex)
        exchange_ref(ex);
    x->url = xmalloc(ulen);
    snprintf(x->url, ulen, "%s%s", base, path);
    x->path = xstrdup(path);
    x->body = body;
    x->body_len = body_len;
    buf_init(&x->resp, PX_MAX_UPSTREAM_REPLY);
    buf_init(&x->resp_headers, 8192);
    buf_init(&x->line, RELAY_MAX_LINE);
    if (body)
        x->headers = curl_slist_append(x->headers, "Content-Type: application/json");
    x->headers = curl_slist_append(x->headers, "Expect:");
    x->headers = curl_slist_append(x->headers, "User-Agent: optillm-c/" PX_VERSION);
    for (const char *h = ex ? ex->fwd_headers : NULL; h && *h;) { /* OpenAI-Organization, ... */
        const char *nl = strchr(h, '\n');
        char *line = xstrndup(h, (size_t)(nl - h));

        x->headers = curl_slist_append(x->headers, line);
        free(line);
        h = nl + 1;
    }
    prov_setup(cfg, x, key);
    if (key && !x->use_prov) /* a provider's key is added per attempt */
        x->headers = add_key(cfg, x->headers, key);
    if (otlp_on && ex)
        otlp_xfer_headers(x);
    return x;
}

void xfer_destroy(struct xfer *x)
{
    if (!x)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    free(x->url);
    free(x->path);
    free(x->body);
    free(x->plain_body);
    free(x->model);
    curl_slist_free_all(x->prov_headers);
    curl_slist_free_all(x->headers);
    buf_free(&x->resp);
    buf_free(&x->resp_headers);
    buf_free(&x->line);
    sse_parser_destroy(x->sse);
    exchange_unref(x->ex);
    free(x);
}

static void first_bytes(struct xfer *x)
{
    if (x->http_status == 0) {
        const char *ct = NULL;

        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->http_status);
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(x->content_type, sizeof(x->content_type), "%s", ct ? ct : "application/json");
    }
}

void xfer_header_allowed(struct buf *out, const char *line, size_t len)
{
    static const char *const names[] = {"retry-after", "openai-processing-ms", "x-request-id"};
    const char *colon = memchr(line, ':', len);
    const char *v;
    size_t nl, vl, k;
    bool ok = false;

    if (!colon)
        return;
    nl = (size_t)(colon - line);
    for (size_t i = 0; i < PX_ARRAY_LEN(names) && !ok; i++)
        ok = nl == strlen(names[i]) && strncasecmp(line, names[i], nl) == 0;
    ok = ok || (nl > 12 && nl < 64 && strncasecmp(line, "x-ratelimit-", 12) == 0);
    for (k = 0; ok && k < nl; k++) /* a token: letters, digits and '-' */
        ok = (line[k] >= 'a' && line[k] <= 'z') || (line[k] >= 'A' && line[k] <= 'Z') ||
             (line[k] >= '0' && line[k] <= '9') || line[k] == '-';
    if (!ok)
        return;
    v = colon + 1;
    vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if (vl == 0 || vl > 200)
        return;
    for (k = 0; k < vl; k++)
        if ((unsigned char)v[k] < 0x20 || v[k] == 0x7f)
            return;
    if (nl == 12 && strncasecmp(line, "x-request-id", 12) == 0)
        buf_printf(out, "X-Upstream-Request-Id: %.*s\n", (int)vl, v); /* ours stays ours */
    else
        buf_printf(out, "%.*s: %.*s\n", (int)nl, line, (int)vl, v);
}

static size_t header_cb(char *data, size_t size, size_t nitems, void *userp)
{
    struct xfer *x = userp;
    size_t n = size * nitems;

    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        buf_reset(&x->resp_headers); /* a new response (after 100 Continue or a redirect) */
    else
        xfer_header_allowed(&x->resp_headers, data, n);
    return n;
}

/* The upstream's allow-listed headers go with its answer to the client. Caller holds ex->mu. */
static void do_relay_headers(struct xfer *x)
{
    buf_reset(&x->ex->up_headers);
    buf_append(&x->ex->up_headers, buf_cstr(&x->resp_headers), x->resp_headers.len);
}

/* One complete line of a relayed stream (with its line ending) into 'out'. The usage event
 * is read; unless the client asked for usage it is dropped (with the blank line ending it),
 * or, when it also carries choices, relayed without its "usage" member. */
static void relay_line(struct xfer *x, const char *l, size_t len, struct buf *out)
{
    size_t n = len;

    if (n && l[n - 1] == '\n')
        n--;
    if (n && l[n - 1] == '\r')
        n--;
    if (x->skip_blank) {
        x->skip_blank = false;
        if (n == 0)
            return;
    }
    /* OpenAI puts "usage":null, last, in every chunk of a stream that asked for usage. */
    static const char null_tail[] = ",\"usage\":null}";
    size_t nt = sizeof(null_tail) - 1;
    if (x->strip_usage && n > 5 + nt && memcmp(l, "data:", 5) == 0 &&
        memcmp(l + n - nt, null_tail, nt) == 0) {
        buf_append(out, l, n - nt);
        buf_append(out, l + n - 1, len - n + 1); /* the '}' and the line ending */
        return;
    }
    if (n > 5 && memcmp(l, "data:", 5) == 0 && memmem(l, n, "\"usage\"", 7)) {
        cJSON *root = cJSON_ParseWithLength(l + 5, n - 5);
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");

        if (cJSON_IsObject(u)) {
            x->relay_usage = (struct usage){0};
            llm_usage_parse(u, &x->relay_usage); /* cumulative: the last event counts */
        }
        if (cJSON_IsObject(u) && x->strip_usage) {
            const cJSON *ch = cJSON_GetObjectItemCaseSensitive(root, "choices");

            if (!cJSON_IsArray(ch) || cJSON_GetArraySize(ch) == 0) {
                x->skip_blank = true;
            } else {
                cJSON_DeleteItemFromObjectCaseSensitive(root, "usage");
                char *j = cJSON_PrintUnformatted(root);

                buf_puts(out, "data: ");
                buf_puts(out, j);
                buf_append(out, l + n, len - n);
                cJSON_free(j);
            }
            cJSON_Delete(root);
            return;
        }
        cJSON_Delete(root);
    }
    buf_append(out, l, len);
}

/* Splits relayed bytes into lines for relay_line; a line is held until it ends (a usage
 * event may arrive in pieces), except one longer than RELAY_MAX_LINE, relayed as it comes. */
static void relay_scan(struct xfer *x, const char *data, size_t n, struct buf *out)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) + 1 : n;

        if (x->line_long) {
            buf_append(out, data, take);
            x->line_long = !nl;
        } else if (x->line.len == 0 && nl) {
            relay_line(x, data, take, out); /* a whole line: no copy */
        } else if (buf_append(&x->line, data, take) < 0) {
            buf_append(out, x->line.data, x->line.len);
            buf_append(out, data, take);
            buf_reset(&x->line);
            x->line_long = !nl;
        } else if (nl) {
            relay_line(x, x->line.data, x->line.len, out);
            buf_reset(&x->line);
        }
        data += take;
        n -= take;
    }
}

static size_t relay_stream(struct xfer *x, const char *data, size_t n)
{
    struct exchange *ex = x->ex;

    pthread_mutex_lock(&ex->mu);
    if (ex->cancelled) {
        pthread_mutex_unlock(&ex->mu);
        return 0; /* aborts the transfer */
    }
    if (ex->phase < EX_REPLY) {
        ex->status = (int)x->http_status;
        snprintf(ex->content_type, sizeof(ex->content_type), "%s", x->content_type);
        ex->streaming = true;
        ex->phase = EX_REPLY;
        do_relay_headers(x);
    }
    if (ex->out.len > PX_STREAM_HIGH_WATER) {
        ex->relay_paused = true;
        pthread_mutex_unlock(&ex->mu);
        return CURL_WRITEFUNC_PAUSE;
    }
    if (ex->door) { /* a front door translates what the scan lets through (door.c) */
        struct buf t;

        buf_init(&t, 0);
        relay_scan(x, data, n, &t);
        exchange_do_append(ex, t.data, t.len);
        buf_free(&t);
    } else {
        size_t before = ex->out.len;

        relay_scan(x, data, n, &ex->out);
        exchange_do_note_tail(ex, before);
    }
    exchange_do_resume(ex);
    pthread_mutex_unlock(&ex->mu);
    return n;
}

bool xfer_json_reply(const struct xfer *x)
{
    return strncasecmp(x->content_type, "application/json", 16) == 0;
}

/* The upstream refused a key the proxy attached to a relay: the client gets 502 for the
 * operator (http_key_rejected), not the upstream's 401/403 as if its own key were wrong. */
static bool proxy_key_refused(const struct xfer *x)
{
    return x->kind == XFER_RELAY && x->ex && x->ex->proxy_key &&
           (x->http_status == 401 || x->http_status == 403);
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct xfer *x = userp;
    size_t n = size * nmemb;

    if (x->http_status == 0) {
        first_bytes(x);
        /* A stream is relayed as it arrives. An error answer is held back whole: it may
         * still be retried, and a body that is not OpenAI-shaped is rewritten (relay_done). */
        x->relaying = x->kind == XFER_RELAY && x->stream_relay && x->http_status < 400;
    }
    if (x->relaying)
        return relay_stream(x, data, n);
    if (x->kind == XFER_STREAM && x->http_status < 300 && !xfer_json_reply(x)) {
        if (x->ex && exchange_cancelled(x->ex))
            return 0;
        if (sse_parser_feed(x->sse, data, n, x->on_delta, x->sink) < 0)
            return 0;
        return n;
    }
    if (buf_append(&x->resp, data, n) < 0)
        return 0; /* over the cap: aborts with CURLE_WRITE_ERROR */
    return n;
}

/* The request's deadline (--request-timeout) in monotonic microseconds, or 0. */
static long long request_deadline(const struct xfer *x)
{
    if (io_cfg->request_timeout <= 0 || !x->ex)
        return 0;
    return x->ex->start_us + (long long)(io_cfg->request_timeout * 1e6);
}

/* Base URL number i of a transfer: its tenant's or the server's, then the fallbacks. */
static const char *base_url(const struct xfer *x, int i)
{
    if (i == 0)
        return x->ex && x->ex->base_url ? x->ex->base_url : io_cfg->base_url;
    return io_cfg->fallback_urls[i - 1];
}

static void complete(struct xfer *x);

/* --providers: takes a slot of the provider this attempt goes to and points the URL at it.
 * False when x waits for a slot (on l->waiting) or was completed as failed (no provider). */
static bool prov_choose(struct io_loop *l, struct xfer *x)
{
    int i = -1;
    enum prov_pick r = providers_acquire(x->model, x->prov_pin, x->prov_tried, &i, &x->prov_wait);

    if (r == PROV_BUSY) {
        x->next = NULL;
        *l->waiting_tail = x;
        l->waiting_tail = &x->next;
        return false;
    }
    if (r == PROV_NONE) {
        x->result = CURLE_COULDNT_CONNECT;
        x->http_status = 0;
        snprintf(x->errbuf, sizeof(x->errbuf),
                 "no provider available (all down, at capacity, or not serving %s)",
                 x->model ? x->model : "this model");
        if (x->attempts == 0)
            x->start_us = px_now_us();
        x->end_us = px_now_us();
        complete(x);
        return false;
    }
    x->prov = i;
    free(x->url);
    size_t ulen = strlen(providers_base_url(i)) + strlen(x->path) + 1;
    x->url = xmalloc(ulen);
    snprintf(x->url, ulen, "%s%s", providers_base_url(i), x->path);
    return true;
}

/* The headers of a provider attempt: x->headers (as otlp left them) and the provider's key,
 * else the server's. */
static struct curl_slist *prov_headers(struct xfer *x)
{
    const char *key = providers_key(x->prov) ? providers_key(x->prov) : x->server_key;

    curl_slist_free_all(x->prov_headers);
    x->prov_headers = NULL;
    for (struct curl_slist *h = x->headers; h; h = h->next)
        x->prov_headers = curl_slist_append(x->prov_headers, h->data);
    if (key)
        x->prov_headers = add_key(io_cfg, x->prov_headers, key);
    return x->prov_headers;
}

static void start(struct io_loop *l, struct xfer *x)
{
    if (x->use_prov && !prov_choose(l, x))
        return;
    /* An approach call or a whole-answer relay to a plain-http upstream at an IP address takes
     * the lean client (h1.c); a streamed relay needs libcurl's pause (backpressure). */
    bool lean = l->h1 && (x->kind == XFER_CALL || (x->kind == XFER_RELAY && !x->stream_relay));

    x->loop = l;
    if (x->attempts == 0)
        x->start_us = px_now_us();
    x->attempts++;
    x->http_status = 0;
    x->relaying = false;
    x->errbuf[0] = '\0';
    buf_reset(&x->resp);
    buf_reset(&x->resp_headers);
    buf_reset(&x->line);
    x->skip_blank = x->line_long = false;
    x->relay_usage = (struct usage){0};
    x->retry_after_s = 0;
    if (otlp_on)
        otlp_xfer_start(x);
    long timeout_ms = (long)(io_cfg->upstream_timeout * 1000);
    long long deadline = request_deadline(x);
    if (deadline) {
        long left = (long)((deadline - px_now_us()) / 1000);

        timeout_ms = left < timeout_ms ? (left > 1 ? left : 1) : timeout_ms;
    }
    x->prev = NULL;
    x->next = l->active;
    if (l->active)
        l->active->prev = x;
    l->active = x;
    l->nactive++;
    struct curl_slist *headers = x->prov >= 0 ? prov_headers(x) : x->headers;
    if (lean && h1_start(l->h1, x, headers, timeout_ms, (long)(io_cfg->connect_timeout * 1000)))
        return;
    CURL *e = curl_easy_init();

    if (!e) {
        log_error("curl_easy_init failed");
        abort();
    }
    x->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(io_cfg->connect_timeout * 1000));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    /* An approach call's reply is read once, whole: libcurl's smallest receive buffer (1 KiB,
     * not 16) lets several share a page; 3,000 waiting bon requests (9,000 transfers) are
     * ~35 MB smaller resident (bench/RESULTS.md, peak). Relays and streams keep 16 KiB. */
    if (x->kind == XFER_CALL)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 1024L);
    if (io_cfg->upstream_h2c) {
        /* Streams share one connection per loop rather than opening one each. */
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        /* A burst of calls to an https:// upstream waits for the first connection's ALPN
         * instead of each opening its own: HTTP/2 carries them all on it (an HTTP/1.1
         * upstream then gets connections of their own). */
        if (strncasecmp(x->url, "https:", 6) == 0)
            curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    }
    if (io_cfg->upstream_ca[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, io_cfg->upstream_ca);
    if (x->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    struct shard *sh = shard_pick(l);
    x->shard = sh->index;
    sh->nxfer++;
    curl_multi_add_handle(sh->multi, e);
}

static void unlink_active(struct io_loop *l, struct xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->next = x->prev = NULL;
    l->nactive--;
}

/* Usage of a relayed answer (the stream's usage event, or the JSON's "usage"), for the
 * access log, metrics, conversation log and the tenant's daily tokens. */
static void relay_usage(struct xfer *x)
{
    struct usage u = {0};

    if (x->relaying) {
        u = x->relay_usage;
    } else if (x->http_status == 200 && x->resp.len) {
        cJSON *root = cJSON_ParseWithLength(buf_cstr(&x->resp), x->resp.len);

        llm_usage_parse(root ? cJSON_GetObjectItemCaseSensitive(root, "usage") : NULL, &u);
        cJSON_Delete(root);
    }
    if (!u.reported && x->body && x->result == CURLE_OK && x->http_status < 300 &&
        strcmp(x->path, "/chat/completions") == 0)
        log_at(LOG_INFO, x->ex->id, "the upstream reported no usage: tokens not counted");
    u.calls = x->attempts;
    if (x->ex->tenant) /* before the answer leaves: the tenant's next request sees it */
        tenants_charge(x->ex->tenant, u.prompt_tokens + u.completion_tokens);
    pthread_mutex_lock(&x->ex->mu);
    x->ex->usage = u;
    x->ex->upstream_us = x->end_us - x->start_us;
    pthread_mutex_unlock(&x->ex->mu);
}

/* A relayed stream that ended cleanly with an unterminated last line (held in x->line): a
 * whole "data: [DONE]" or "data: {json}" only lacked its newline; anything else was cut in the
 * middle of an event. */
static bool relay_last_line_cut(const struct xfer *x)
{
    const char *l = x->line.data;
    size_t n = x->line.len;
    cJSON *j;

    if (n == 0 || x->line_long)
        return false;
    while (n && (l[n - 1] == '\r' || l[n - 1] == ' '))
        n--;
    if (n < 5 || memcmp(l, "data:", 5) != 0)
        return false; /* a comment or a field of its own */
    l += 5;
    n -= 5;
    while (n && *l == ' ')
        l++, n--;
    if (n == 6 && memcmp(l, "[DONE]", 6) == 0)
        return false;
    j = cJSON_ParseWithLength(l, n);
    cJSON_Delete(j);
    return j == NULL;
}

static void relay_done(struct xfer *x)
{
    struct exchange *ex = x->ex;
    struct px_error err;

    relay_usage(x);
    if (otlp_on) {
        pthread_mutex_lock(&ex->mu);
        struct usage u = ex->usage;
        pthread_mutex_unlock(&ex->mu);
        otlp_xfer_end(x, &u);
    }
    if (io_cfg->log_conversations) {
        struct usage u;

        pthread_mutex_lock(&ex->mu);
        u = ex->usage;
        pthread_mutex_unlock(&ex->mu);
        convlog_call(ex, "passthrough", (x->end_us - x->start_us) / 1000,
                     x->result == CURLE_OK && x->http_status < 400 ? PX_OK : PX_EUPSTREAM,
                     (int)x->http_status, &u);
    }
    if (x->aborted) {
        pthread_mutex_lock(&ex->mu);
        /* Cancelled (the client left): nobody to answer. Else the loop is stopping. */
        bool replied = ex->phase >= EX_REPLY || ex->cancelled;
        if (replied) {
            ex->out_done = true;
            ex->out_error = true;
            exchange_do_resume(ex);
        }
        pthread_mutex_unlock(&ex->mu);
        if (!replied) {
            px_fail(&err, PX_ECANCELLED, NULL, "the server is shutting down");
            exchange_reply_error(ex, &err);
        }
        return;
    }
    if (x->result != CURLE_OK) {
        if (x->result == CURLE_OPERATION_TIMEDOUT)
            px_fail(&err, PX_ETIMEDOUT, NULL, "the upstream did not answer within %g s",
                    io_cfg->upstream_timeout);
        else if (x->result == CURLE_WRITE_ERROR && x->resp.len >= PX_MAX_UPSTREAM_REPLY - 65536)
            px_fail(&err, PX_EUPSTREAM, NULL, "the upstream's answer exceeds %u bytes",
                    PX_MAX_UPSTREAM_REPLY);
        else
            px_fail(&err, PX_EUPSTREAM, NULL, "%s: %s",
                    x->relaying ? "upstream stream interrupted" : "upstream unreachable",
                    x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
        log_at(LOG_WARN, ex->id, "upstream %s: %s", x->url, err.message);
        exchange_reply_error(ex, &err); /* in-band if a stream was under way */
        return;
    }
    if (proxy_key_refused(x)) {
        http_key_rejected(&err, (int)x->http_status, buf_cstr(&x->resp), x->resp.len);
        log_at(LOG_WARN, ex->id, "upstream %s: %s", x->url, err.message);
        exchange_reply_error(ex, &err);
        return;
    }
    if (x->relaying && relay_last_line_cut(x)) {
        /* Cut mid-event: the fragment is dropped, the client gets whole events and then the
         * error as an event of its own. */
        px_fail(&err, PX_EUPSTREAM, NULL, "upstream stream interrupted");
        log_at(LOG_WARN, ex->id, "upstream %s: the stream ended in the middle of an event", x->url);
        exchange_reply_error(ex, &err);
        return;
    }
    if (x->relaying || (x->stream_relay && x->resp.len == 0 && x->http_status < 400)) {
        pthread_mutex_lock(&ex->mu);
        if (x->line.len) { /* a last line without its line ending */
            struct buf t;
            size_t before = ex->out.len;

            buf_init(&t, 0);
            relay_line(x, x->line.data, x->line.len, ex->door ? &t : &ex->out);
            if (ex->door)
                exchange_do_append(ex, t.data, t.len);
            else
                exchange_do_note_tail(ex, before);
            buf_free(&t);
        }
        if (ex->phase < EX_REPLY) { /* an empty body */
            do_relay_headers(x);
            ex->status = (int)x->http_status;
            snprintf(ex->content_type, sizeof(ex->content_type), "%s", x->content_type);
            ex->streaming = true;
            ex->phase = EX_REPLY;
        }
        exchange_out_end(ex);
        exchange_do_resume(ex);
        pthread_mutex_unlock(&ex->mu);
        return;
    }
    pthread_mutex_lock(&ex->mu);
    if (ex->phase < EX_REPLY)
        do_relay_headers(x);
    pthread_mutex_unlock(&ex->mu);
    if (x->http_status >= 400) {
        size_t elen;
        char *e = http_upstream_error((int)x->http_status, buf_cstr(&x->resp), x->resp.len, &elen);

        if (e) { /* not OpenAI-shaped: rewritten so that SDKs can read it */
            exchange_reply(ex, (int)x->http_status, "application/json", e, elen);
            cJSON_free(e);
            return;
        }
    }
    exchange_reply(ex, (int)x->http_status, x->content_type, buf_cstr(&x->resp), x->resp.len);
}

static bool is_connect_error(CURLcode r)
{
    return r == CURLE_COULDNT_CONNECT || r == CURLE_COULDNT_RESOLVE_HOST ||
           r == CURLE_COULDNT_RESOLVE_PROXY || r == CURLE_GOT_NOTHING || r == CURLE_SEND_ERROR ||
           r == CURLE_RECV_ERROR || r == CURLE_SSL_CONNECT_ERROR;
}

static uint64_t next_rand(struct io_loop *l)
{
    l->rng ^= l->rng << 13;
    l->rng ^= l->rng >> 7;
    l->rng ^= l->rng << 17;
    return l->rng;
}

/* Decides whether a failed attempt is tried again (429, 5xx, connect errors; before anything
 * reached the client; within the retries, the fallbacks and the request's deadline). When it
 * is, x is queued on l->delayed and true returned. */
static bool schedule_retry(struct io_loop *l, struct xfer *x, long retry_after_s)
{
    bool conn = is_connect_error(x->result);
    bool s5xx = x->result == CURLE_OK && x->http_status >= 500;
    bool s429 = x->result == CURLE_OK && x->http_status == 429;
    long long delay_us, now = px_now_us(), deadline = request_deadline(x);

    if (x->aborted || x->probe || !(conn || s5xx || s429) || x->relaying)
        return false;
    if (x->kind == XFER_STREAM && x->sse) {
        size_t streamed;

        sse_parser_text(x->sse, &streamed);
        if (streamed > 0)
            return false;
    }
    if (x->use_prov && (conn || s5xx) &&
        providers_available(x->model, x->prov_pin, x->prov_tried)) {
        delay_us = 0; /* another provider, at once */
    } else if (x->retries_used < io_cfg->retries) {
        double base = io_cfg->retry_base * (double)(1 << x->retries_used);
        double jitter = (double)(next_rand(l) >> 11) / 9007199254740992.0;

        x->retries_used++;
        delay_us = (long long)((base / 2 + jitter * base / 2) * 1e6);
        if (retry_after_s > 60)
            return false; /* the upstream asks for a long pause: let the client decide */
        if (retry_after_s > 0 && retry_after_s * 1000000LL > delay_us)
            delay_us = retry_after_s * 1000000LL;
        x->prov_tried = 0; /* a new round over the providers */
    } else if ((conn || s5xx) && !x->use_prov && x->base_index < io_cfg->nfallback &&
               !(x->ex && x->ex->base_url)) { /* a tenant's own upstream has no fallback */
        x->base_index++;
        x->retries_used = 0;
        delay_us = 0;
        free(x->url);
        size_t ulen = strlen(base_url(x, x->base_index)) + strlen(x->path) + 1;
        x->url = xmalloc(ulen);
        snprintf(x->url, ulen, "%s%s", base_url(x, x->base_index), x->path);
    } else {
        return false;
    }
    if (deadline && now + delay_us >= deadline)
        return false;
    if (x->sse) {
        sse_parser_destroy(x->sse);
        x->sse = sse_parser_create();
    }
    log_at(LOG_WARN, x->ex ? x->ex->id : NULL, "upstream %s: %s; retrying in %lld ms (%s %d)",
           x->base_index ? "fallback" : "call",
           conn ? (x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result))
                : (s429 ? "HTTP 429" : "HTTP 5xx"),
           delay_us / 1000, delay_us ? "retry" : "fallback",
           delay_us ? x->retries_used : x->base_index);
    metrics_retry();
    x->due_us = now + delay_us;
    x->next = l->delayed;
    l->delayed = x;
    if (delay_us == 0)
        loop_wake(l, false); /* the loop's next wait must not sleep on it */
    return true;
}

/* An upstream that refuses the stream_options we added (400 naming it, before anything reached
 * the client): the client's own body goes once more, and the stream is relayed without usage.
 * Returns true when x was queued for that. */
static bool without_stream_options(struct io_loop *l, struct xfer *x)
{
    if (!x->plain_body || x->aborted || x->result != CURLE_OK || x->http_status != 400 ||
        !memmem(x->resp.data ? x->resp.data : "", x->resp.len, "stream_options", 14))
        return false;
    free(x->body);
    x->body = x->plain_body;
    x->body_len = x->plain_len;
    x->plain_body = NULL;
    x->strip_usage = false;
    log_at(LOG_INFO, x->ex ? x->ex->id : NULL,
           "the upstream refuses stream_options: streamed again without usage");
    x->due_us = px_now_us();
    x->next = l->delayed;
    l->delayed = x;
    return true;
}

/* Completes a transfer: a relay answers its client and is freed; a call signals its group. */
static void complete(struct xfer *x)
{
    if (x->probe) {
        bool ok = x->result == CURLE_OK && x->http_status > 0 && x->http_status < 500;

        providers_probe_result(x->probe_of, ok, px_now_us());
        if (ok)
            log_warn("provider %s is back up", providers_name(x->probe_of));
        xfer_destroy(x);
        return;
    }
    if (x->kind == XFER_RELAY) {
        relay_done(x);
        xfer_destroy(x);
        return;
    }
    sched_group_done(x->group); /* x may be freed by its owner from here on */
}

static void finish(struct io_loop *l, struct xfer *x, CURLcode result)
{
    curl_off_t retry_after = x->retry_after_s; /* the lean client's, as sent */

    x->result = result;
    x->end_us = px_now_us();
    if (x->h1) /* cancelled or stopped: the lean client's attempt is dropped */
        h1_abort(l->h1, x);
    if (x->easy) {
        first_bytes(x);
        curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &retry_after);
        struct shard *sh = &l->shards[x->shard];

        curl_multi_remove_handle(sh->multi, x->easy);
        if (--sh->nxfer == 0)
            sh->empty_since = px_now_us();
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    x->retry_after_s = retry_after > 0 && retry_after < 86400 ? (long)retry_after : 0;
    unlink_active(l, x);
    if (x->prov >= 0) { /* the provider's slot back, and its health */
        bool failed = !x->aborted &&
                      (is_connect_error(result) || (result == CURLE_OK && x->http_status >= 500));
        bool was_down = providers_is_down(x->prov);

        if (providers_release(x->prov, failed, x->end_us))
            io_wake_all();
        if (!was_down && providers_is_down(x->prov))
            log_warn("provider %s is down (failures in a row); probing it",
                     providers_name(x->prov));
        if (failed)
            x->prov_tried |= 1ull << x->prov;
        x->prov = -1;
    }
    metrics_upstream(result == CURLE_OK ? (int)x->http_status : 0);
    if (without_stream_options(l, x) || schedule_retry(l, x, (long)retry_after)) {
        if (otlp_on) /* this attempt's span; the next attempt gets its own */
            otlp_xfer_end(x, NULL);
        return;
    }
    complete(x);
}

/* The lean client's callbacks (h1.c): the same ends as libcurl's. */
static void h1_done(void *ctx, struct xfer *x, CURLcode rc)
{
    finish(ctx, x, rc);
}

static bool h1_body(struct xfer *x, const char *data, size_t n)
{
    return write_cb((char *)data, 1, n, x) == n;
}

static void h1_header(struct xfer *x, const char *line, size_t len)
{
    (void)header_cb((char *)line, 1, len, x);
}

/* A proxy libcurl would take from the environment for an http:// URL: then every call goes
 * through libcurl, which honours it (and no_proxy). */
static const char *proxy_env(void)
{
    static const char *const names[] = {"http_proxy", "all_proxy", "ALL_PROXY"};

    for (size_t i = 0; i < PX_ARRAY_LEN(names); i++)
        if (getenv(names[i]) && *getenv(names[i]))
            return names[i];
    return NULL;
}

/* Aborts a transfer that never started (queued at shutdown). */
static void finish_unstarted(struct xfer *x)
{
    x->aborted = true;
    x->result = CURLE_ABORTED_BY_CALLBACK;
    complete(x);
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* How often a loop sweeps its lists (cancelled transfers, relays to unpause, suspended clients'
 * hang-ups, finished exchanges) without being asked: the bound on a missed notification, and on
 * how long a hang-up of a waiting client goes unseen. */
#define SWEEP_US 100000LL

/* Wakes loop l from its wait (an eventfd in its epoll set); scan: sweep the transfers too. */
static void loop_wake(struct io_loop *l, bool scan)
{
    uint64_t one = 1;

    if (scan)
        __atomic_store_n(&l->scan, true, __ATOMIC_RELEASE);
    if (write(l->evfd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so the loop is awake anyway */
    }
}

/* libcurl's socket callback: its sockets are in the loop's epoll set (level-triggered) with the
 * events it asks for, tagged with the shard (epoll data: shard index + 1 above the fd; 0 tags the
 * loop's own fds). The registered mark (socketp) tells ADD from MOD; a socket libcurl closed
 * left the set by itself, so EEXIST and ENOENT only switch the operation. */
static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct shard *sh = userp;
    struct io_loop *l = sh->loop;
    struct epoll_event ev = {.data.u64 = ((uint64_t)(sh->index + 1) << 32) | (uint32_t)s};

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (socketp)
            (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(l->epfd, op, s, &ev) != 0) {
        op = errno == EEXIST ? EPOLL_CTL_MOD : errno == ENOENT ? EPOLL_CTL_ADD : -1;
        if (op < 0 || epoll_ctl(l->epfd, op, s, &ev) != 0)
            log_error("epoll_ctl of an upstream socket: %s", strerror(errno));
    }
    if (!socketp)
        curl_multi_assign(sh->multi, s, sh); /* any non-NULL mark */
    return 0;
}

/* libcurl's timer callback: when curl_multi_socket_action(CURL_SOCKET_TIMEOUT) is due. */
static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    struct shard *sh = userp;

    (void)m;
    sh->timer_due = timeout_ms < 0 ? 0 : px_now_us() + timeout_ms * 1000LL;
    sh->timer_set = timeout_ms >= 0;
    return 0;
}

static bool shard_init(struct io_loop *l, unsigned i)
{
    struct shard *sh = &l->shards[i];

    sh->multi = curl_multi_init();
    if (!sh->multi)
        return false;
    sh->loop = l;
    sh->index = i;
    /* Shard 0 keeps the connections a light load reuses; a spill shard's idle ones are few. */
    curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, i == 0 ? 4096L : (long)SHARD_CAP);
    curl_multi_setopt(sh->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
    if (i + 1 > l->nshards)
        l->nshards = i + 1;
    return true;
}

/* The first shard with room (made again if it was closed; a new one when all are full), else
 * the least loaded. */
static struct shard *shard_pick(struct io_loop *l)
{
    struct shard *least = &l->shards[0];

    for (unsigned i = 0; i < l->nshards; i++) {
        struct shard *sh = &l->shards[i];

        if (!sh->multi && shard_init(l, i))
            return sh;
        if (sh->multi && sh->nxfer < SHARD_CAP)
            return sh;
        if (sh->multi && sh->nxfer < least->nxfer)
            least = sh;
    }
    if (l->nshards < SHARDS_MAX && shard_init(l, l->nshards))
        return &l->shards[l->nshards - 1];
    return least;
}

/* Closes the spill shards that have carried nothing for SHARD_IDLE_US: the idle connections of
 * a burst do not stay open, and a later burst starts on fresh handles. */
static void shards_trim(struct io_loop *l, long long now)
{
    for (unsigned i = 1; i < l->nshards; i++) {
        struct shard *sh = &l->shards[i];

        if (sh->multi && sh->nxfer == 0 && now - sh->empty_since > SHARD_IDLE_US) {
            curl_multi_cleanup(sh->multi); /* may call sock_cb to remove its sockets */
            sh->multi = NULL;
            sh->timer_set = false;
        }
    }
}

/* Ends the transfers libcurl reports done. */
static void reap(struct io_loop *l)
{
    for (unsigned i = 0; i < l->nshards; i++) {
        CURLMsg *msg;
        int left;

        while (l->shards[i].multi && (msg = curl_multi_info_read(l->shards[i].multi, &left))) {
            if (msg->msg == CURLMSG_DONE) {
                struct xfer *x;

                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
                finish(l, x, msg->data.result);
            }
        }
    }
}

static void watch_add(struct io_loop *l, struct exchange *ex)
{
    if (l->nwatched == l->cap_watched) {
        l->cap_watched = l->cap_watched ? l->cap_watched * 2 : 64;
        l->watched = xrealloc(l->watched, l->cap_watched * sizeof(*l->watched));
    }
    ex->watch_slot = l->nwatched;
    l->watched[l->nwatched++] = ex;
}

/* Removes l->watched[i] (swap with the last). */
static void watch_remove(struct io_loop *l, size_t i)
{
    l->watched[i] = l->watched[--l->nwatched];
    l->watched[i]->watch_slot = i;
}

/* Drops closed exchanges from the watch list (io_unwatch), with both references. */
static void unwatch(struct io_loop *l, struct exchange **q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct exchange *ex = q[i];
        bool drop;

        pthread_mutex_lock(&ex->mu);
        drop = ex->watched && ex->watch_slot < l->nwatched && l->watched[ex->watch_slot] == ex;
        if (drop)
            ex->watched = false;
        pthread_mutex_unlock(&ex->mu);
        if (drop) {
            watch_remove(l, ex->watch_slot);
            exchange_unref(ex); /* the watch list's */
        }
        exchange_unref(ex); /* io_unwatch's */
    }
}

/* Checks a suspended client for a hang-up (caller holds ex->mu, ex->suspended is set, so the
 * fd is valid: MHD cannot close a suspended connection). */
static void check_hangup(struct exchange *ex)
{
    struct pollfd p = {.fd = ex->fd, .events = POLLIN | POLLRDHUP};

    if (poll(&p, 1, 0) <= 0)
        return;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) {
        ex->client_gone = true;
        ex->cancelled = true;
        if (ex->phase < EX_REPLY)
            ex->status = 499; /* for the access log: the client closed the request */
        log_at(LOG_INFO, ex->id, "client disconnected; cancelling its upstream work");
        io_wake_all();          /* an approach's calls may run on every loop: abort them now */
        exchange_do_resume(ex); /* MHD then drops the connection */
    } else if (p.revents & POLLIN) {
        ex->pipelined = true; /* a pipelined request, not EOF: re-checked each sweep (P3) */
    }
}

/* --providers, each loop turn: transfers waiting for a provider's slot try again (or end:
 * cancelled, past their deadline, shutting down); loop 0 starts the health probes due. */
static void prov_tick(struct io_loop *l, bool stopping, long long now)
{
    struct xfer *w = l->waiting;

    l->waiting = NULL;
    l->waiting_tail = &l->waiting;
    while (w) {
        struct xfer *x = w;
        long long deadline = request_deadline(x);

        w = x->next;
        if (stopping || (x->ex && exchange_cancelled(x->ex))) {
            providers_unwait(&x->prov_wait);
            x->aborted = true;
            x->result = CURLE_ABORTED_BY_CALLBACK;
            complete(x);
        } else if (deadline && now >= deadline) {
            providers_unwait(&x->prov_wait);
            x->result = CURLE_OPERATION_TIMEDOUT;
            snprintf(x->errbuf, sizeof(x->errbuf), "timed out waiting for a provider slot");
            complete(x);
        } else {
            start(l, x); /* back on l->waiting when still busy */
        }
    }
    if (l->index != 0 || stopping)
        return;
    for (int i; (i = providers_probe_due(now)) >= 0;) {
        struct xfer *p = xcalloc(1, sizeof(*p));
        const char *key = providers_key(i) ? providers_key(i) : io_cfg->upstream_key;
        size_t ulen = strlen(providers_base_url(i)) + sizeof("/models");

        p->kind = XFER_CALL;
        p->probe = true;
        p->probe_of = i;
        p->prov = p->prov_wait = p->prov_pin = -1;
        p->path = xstrdup("/models");
        p->url = xmalloc(ulen);
        snprintf(p->url, ulen, "%s/models", providers_base_url(i));
        buf_init(&p->resp, 65536);
        buf_init(&p->line, RELAY_MAX_LINE);
        p->headers = curl_slist_append(NULL, "User-Agent: optillm-c/" PX_VERSION);
        if (key)
            p->headers = add_key(io_cfg, p->headers, key);
        start(l, p);
    }
}

/* Aborts the transfers of cancelled requests (all of them when stopping) and resumes relays
 * whose client has drained its output. Returns whether a paused relay was resumed. */
static bool sweep_active(struct io_loop *l, bool stopping)
{
    size_t nun = 0;

    for (struct xfer *x = l->active, *next; x; x = next) {
        bool abort_it, unpause = false;

        next = x->next;
        if (!x->ex) {
            if (stopping) {
                x->aborted = true;
                finish(l, x, CURLE_ABORTED_BY_CALLBACK);
            }
            continue;
        }
        pthread_mutex_lock(&x->ex->mu);
        abort_it = x->ex->cancelled || stopping;
        if (!abort_it && x->kind == XFER_RELAY && x->ex->relay_paused &&
            x->ex->out.len < PX_STREAM_LOW_WATER) {
            x->ex->relay_paused = false;
            unpause = true;
        }
        pthread_mutex_unlock(&x->ex->mu);
        if (abort_it) {
            x->aborted = true;
            finish(l, x, CURLE_ABORTED_BY_CALLBACK);
        } else if (unpause) {
            if (nun == l->cap_unpause) {
                l->cap_unpause = l->cap_unpause ? l->cap_unpause * 2 : 16;
                l->to_unpause = xrealloc(l->to_unpause, l->cap_unpause * sizeof(*l->to_unpause));
            }
            l->to_unpause[nun++] = x;
        }
    }
    for (size_t i = 0; i < nun; i++) /* outside ex->mu: this re-enters write_cb (I6) */
        curl_easy_pause(l->to_unpause[i]->easy, CURLPAUSE_CONT);
    return nun > 0;
}

/* Drops finished exchanges from the watch list and looks at the suspended clients' sockets, all
 * in one poll: a hang-up cancels the request's work. */
static void sweep_watched(struct io_loop *l, bool stopping)
{
    size_t n = 0;

    for (size_t i = 0; i < l->nwatched;) {
        struct exchange *ex = l->watched[i];
        bool drop;

        pthread_mutex_lock(&ex->mu);
        drop = ex->closed || stopping;
        if (!drop && ex->suspended) {
            if (ex->pipelined) {
                check_hangup(ex);
            } else if (ex->fd >= 0) {
                if (n == l->cap_pfd) {
                    l->cap_pfd = l->cap_pfd ? l->cap_pfd * 2 : 64;
                    l->pfd = xrealloc(l->pfd, l->cap_pfd * sizeof(*l->pfd));
                    l->pfd_ex = xrealloc(l->pfd_ex, l->cap_pfd * sizeof(*l->pfd_ex));
                }
                l->pfd[n] = (struct pollfd){.fd = ex->fd, .events = POLLIN | POLLRDHUP};
                l->pfd_ex[n++] = ex;
            }
        }
        if (drop)
            ex->watched = false;
        pthread_mutex_unlock(&ex->mu);
        if (drop) {
            watch_remove(l, i);
            exchange_unref(ex);
            continue;
        }
        i++;
    }
    if (n == 0 || poll(l->pfd, n, 0) <= 0)
        return;
    for (size_t i = 0; i < n; i++) {
        struct exchange *ex = l->pfd_ex[i]; /* still referenced by the watch list */

        if (!l->pfd[i].revents)
            continue;
        /* The fd was polled unlocked: look again only while the connection is still suspended
         * (so still open, and the same socket). */
        pthread_mutex_lock(&ex->mu);
        if (ex->suspended && !ex->closed)
            check_hangup(ex);
        pthread_mutex_unlock(&ex->mu);
    }
}

/* One loop per thread. A turn: start what was queued and what is due, sweep when asked or every
 * SWEEP_US, then wait in epoll for libcurl's sockets, the wake-up eventfd and the daemon's epoll
 * fd, handing only the sockets that are ready to libcurl (curl_multi_socket_action): a turn costs
 * what happened, not how many transfers are open. */
static void *loop_main(void *arg)
{
    struct io_loop *l = arg;
    struct epoll_event evs[256];

    cur_loop = l;
    for (;;) {
        bool stopping, more_queued = false, quiesce, leave, unpaused = false, run_http = false;
        struct xfer *q;
        struct MHD_Daemon *http;
        int running, http_fd;

        pthread_mutex_lock(&l->mu);
        q = l->q_head;
        l->q_head = l->q_tail = NULL;
        for (size_t i = 0; i < l->nwatch_q; i++)
            watch_add(l, l->watch_q[i]);
        l->nwatch_q = 0;
        struct exchange **uq = l->unwatch_q; /* swapped with the spare buffer */
        size_t nuq = l->nunwatch_q, cap_uq = l->cap_unwatch_q;
        l->unwatch_q = l->unwatch_spare;
        l->cap_unwatch_q = l->cap_unwatch_spare;
        l->nunwatch_q = 0;
        stopping = l->stopping;
        http = l->http;
        http_fd = l->http_fd;
        quiesce = l->quiesce && !l->quiesced;
        leave = l->exit;
        pthread_mutex_unlock(&l->mu);
        unwatch(l, uq, nuq);
        l->unwatch_spare = uq;
        l->cap_unwatch_spare = cap_uq;
        if (quiesce) {
            /* The listening socket is shared: the server closes it once every loop is done. */
            (void)MHD_quiesce_daemon(http);
            pthread_mutex_lock(&l->mu);
            l->quiesced = true;
            pthread_mutex_unlock(&l->mu);
        }

        while (q) {
            struct xfer *next = q->next;

            if (stopping)
                finish_unstarted(q);
            else
                start(l, q);
            q = next;
        }
        /* Retries that are due (or cancelled meanwhile). */
        long long now = px_now_us(), next_due = 0;
        for (struct xfer **pp = &l->delayed; *pp;) {
            struct xfer *x = *pp;
            bool cancel = stopping || (x->ex && exchange_cancelled(x->ex));

            if (cancel || x->due_us <= now) {
                *pp = x->next;
                if (cancel) {
                    x->aborted = true;
                    x->result = CURLE_ABORTED_BY_CALLBACK;
                    complete(x);
                } else {
                    start(l, x);
                }
                continue;
            }
            if (!next_due || x->due_us < next_due)
                next_due = x->due_us;
            pp = &x->next;
        }
        if (providers_enabled())
            prov_tick(l, stopping, now);
        /* The lean client's failed starts, deadlines and idle connections. */
        if (l->h1 && (h1_pending(l->h1) || now >= l->next_sweep))
            h1_tick(l->h1, now);
        bool timed_out = false;
        for (unsigned i = 0; i < l->nshards; i++) {
            struct shard *sh = &l->shards[i];

            if (sh->timer_set && sh->timer_due <= now) {
                sh->timer_set = false;
                curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
                timed_out = true;
            }
        }
        if (timed_out)
            reap(l);

        bool sweep = stopping || now >= l->next_sweep;
        if (__atomic_exchange_n(&l->scan, false, __ATOMIC_ACQ_REL) || sweep)
            unpaused = sweep_active(l, stopping);
        if (sweep) {
            sweep_watched(l, stopping);
            shards_trim(l, now);
            l->next_sweep = now + SWEEP_US;
        }

        if (stopping && l->nactive == 0 && l->nwatched == 0 && !l->delayed && !l->waiting) {
            pthread_mutex_lock(&l->mu);
            more_queued = l->q_head != NULL;
            if (!more_queued)
                l->drained = true;
            pthread_mutex_unlock(&l->mu);
            if (more_queued)
                continue;
            if (!http || leave)
                break;
            /* Serving HTTP: libmicrohttpd still writes the answers of the aborted requests. */
        }
        pthread_mutex_lock(&l->mu);
        more_queued = l->q_head != NULL || l->nwatch_q > 0 || l->stopping != stopping ||
                      l->exit != leave || (l->quiesce && !l->quiesced);
        pthread_mutex_unlock(&l->mu);

        /* How long to wait: not at all with work queued here (P15); otherwise until the first
         * of libcurl's timer, a retry due, the daemon's timeout and the next sweep (while there
         * is something to sweep). */
        long long wait_us = 1000000LL;
        now = px_now_us();
        for (unsigned i = 0; i < l->nshards; i++) {
            const struct shard *sh = &l->shards[i];

            if (sh->timer_set && sh->timer_due - now < wait_us)
                wait_us = sh->timer_due - now;
        }
        if (next_due)
            wait_us = next_due - now < wait_us ? next_due - now : wait_us;
        if ((l->nactive || l->nwatched || l->waiting) && l->next_sweep - now < wait_us)
            wait_us = l->next_sweep - now;
        long long http_at = 0; /* when the daemon has work due without an event (0: none) */
        if (http) {
            MHD_UNSIGNED_LONG_LONG mt;

            if (MHD_get_timeout(http, &mt) == MHD_YES) {
                http_at = now + (long long)mt * 1000;
                if ((long long)mt * 1000 < wait_us)
                    wait_us = (long long)mt * 1000;
            }
        }
        int timeout = wait_us <= 0 ? 0 : (int)((wait_us + 999) / 1000);
        if (unpaused || more_queued || (http && __atomic_load_n(&l->kick, __ATOMIC_ACQUIRE)))
            timeout = 0;
        if (http && !l->http_added) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint32_t)http_fd}; /* tag 0 */

            if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, http_fd, &ev) != 0)
                log_error("epoll_ctl of the HTTP daemon: %s", strerror(errno));
            l->http_added = true;
        }

        int nev = epoll_wait(l->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
        for (int i = 0; i < nev; i++) {
            unsigned tag = (unsigned)(evs[i].data.u64 >> 32);
            int fd = (int)(uint32_t)evs[i].data.u64;
            uint32_t e = evs[i].events;

            if (tag == H1_TAG) {
                h1_event(l->h1, fd, e);
            } else if (tag > 0) { /* a libcurl socket; one of a shard closed meanwhile is stale */
                if (tag > l->nshards || !l->shards[tag - 1].multi)
                    continue;
                int mask = ((e & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                           ((e & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                           ((e & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);

                curl_multi_socket_action(l->shards[tag - 1].multi, fd, mask, &running);
            } else if (fd == l->evfd) {
                uint64_t v;

                if (read(l->evfd, &v, sizeof(v)) < 0) {
                    /* EAGAIN: another read took it */
                }
            } else if (http && fd == http_fd) {
                run_http = true;
            }
        }
        reap(l);
        /* The daemon runs when its epoll fd is ready, a connection was resumed, its timeout (a
         * connection timing out, data it has already read) is due, or the wait timed out: some
         * of its work has no event (below its connection limit again, 0.9.75 puts the listening
         * socket back in its epoll set only at the start of its next run). Not after a busy
         * turn's 0 ms wait: that run would find nothing. Handlers run here and may queue
         * transfers on this loop. */
        if (http && (__atomic_exchange_n(&l->kick, false, __ATOMIC_ACQ_REL) | run_http ||
                     (nev == 0 && timeout > 0) || (http_at && px_now_us() >= http_at)))
            MHD_run(http);
    }
    return NULL;
}

/* ---- public ---------------------------------------------------------------------------------- */

int io_start(const struct config *cfg)
{
    /* libcurl before 8.0.0 fails every prior-knowledge stream on a reused connection with
     * "Error in the HTTP2 framing layer" (curl issue 10634, fixed by PR 10643): only the
     * first request per connection would work. */
    if (cfg->upstream_h2c && curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
        log_error("--upstream-h2c needs libcurl >= 8.0.0 (this is %s: HTTP/2 prior-knowledge "
                  "connections fail when reused)",
                  curl_version_info(CURLVERSION_NOW)->version);
        return -1;
    }
    io_cfg = cfg;
    bool lean = !cfg->upstream_h2c && !cfg->upstream_curl_only;
    if (lean && proxy_env()) {
        log_info("%s is set: every upstream call goes through libcurl", proxy_env());
        lean = false;
    }
    char probe[sizeof(cfg->base_url) + 32];
    snprintf(probe, sizeof(probe), "%s/chat/completions", cfg->base_url);
    if (lean && h1_url_ok(probe))
        log_info("approach calls and whole answers from %s go through the lean HTTP/1.1 client "
                 "(--upstream-curl-only: libcurl)",
                 cfg->base_url);
    else if (lean && strncasecmp(cfg->base_url, "http://localhost", 16) == 0)
        log_info("%s goes through libcurl (it resolves names); with the address instead "
                 "(http://127.0.0.1...), approach calls take the lean HTTP/1.1 client",
                 cfg->base_url);
    nloops = cfg->io_loops;
    loops = xcalloc(nloops, sizeof(*loops));
    for (unsigned i = 0; i < nloops; i++) {
        struct io_loop *l = &loops[i];

        l->index = i;
        l->waiting_tail = &l->waiting;
        l->rng = (uint64_t)px_now_us() * 2654435761u + i + 1;
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (l->epfd < 0 || l->evfd < 0 || !shard_init(l, 0)) {
            log_error("cannot set up I/O loop %u: %s", i, strerror(errno));
            return -1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint32_t)l->evfd}; /* tag 0 */
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) != 0) {
            log_error("cannot set up I/O loop %u: %s", i, strerror(errno));
            return -1;
        }
        if (lean) {
            struct h1_ops ops = {.ctx = l, .done = h1_done, .body = h1_body, .header = h1_header};

            l->h1 = h1_pool_create(l->epfd, H1_TAG, &ops);
        }
        pthread_mutex_init(&l->mu, NULL);
        if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
            log_error("cannot start I/O loop %u", i);
            return -1;
        }
    }
    return 0;
}

/* Sets a flag of every loop (under its mu) and wakes it. */
static void flag_all(size_t off)
{
    for (unsigned i = 0; i < nloops; i++) {
        pthread_mutex_lock(&loops[i].mu);
        *(bool *)((char *)&loops[i] + off) = true;
        pthread_mutex_unlock(&loops[i].mu);
        loop_wake(&loops[i], false);
    }
}

/* Waits until every loop has set the flag at off (or has no daemon, for the HTTP flags). */
static void wait_all(size_t off, bool http_only)
{
    for (unsigned i = 0; i < nloops; i++) {
        for (;;) {
            bool done;

            pthread_mutex_lock(&loops[i].mu);
            done = *(bool *)((char *)&loops[i] + off) || (http_only && !loops[i].http);
            pthread_mutex_unlock(&loops[i].mu);
            if (done)
                break;
            nanosleep(&(struct timespec){0, 1000000L}, NULL);
        }
    }
}

void io_stop(void)
{
    flag_all(offsetof(struct io_loop, stopping));
    if (__atomic_load_n(&serving, __ATOMIC_ACQUIRE)) {
        wait_all(offsetof(struct io_loop, drained), false);
        return;
    }
    io_join();
}

void io_join(void)
{
    if (joined || !loops)
        return;
    flag_all(offsetof(struct io_loop, exit));
    for (unsigned i = 0; i < nloops; i++)
        pthread_join(loops[i].thread, NULL);
    joined = true;
}

void io_serve(unsigned i, struct MHD_Daemon *d, int epoll_fd)
{
    struct io_loop *l = &loops[i];

    pthread_mutex_lock(&l->mu);
    l->http = d;
    l->http_fd = epoll_fd;
    __atomic_store_n(&serving, true, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&l->mu);
    loop_wake(l, false);
}

void io_quiesce_http(void)
{
    if (!__atomic_load_n(&serving, __ATOMIC_ACQUIRE))
        return;
    flag_all(offsetof(struct io_loop, quiesce));
    wait_all(offsetof(struct io_loop, quiesced), true);
}

void io_http_kick(struct io_loop *l)
{
    if (!__atomic_load_n(&serving, __ATOMIC_ACQUIRE))
        return;
    if (!l) {
        io_wake_all();
        return;
    }
    __atomic_store_n(&l->kick, true, __ATOMIC_RELEASE);
    if (l != cur_loop) /* on its own thread the loop looks at the flag before it sleeps */
        loop_wake(l, false);
}

struct io_loop *io_current(void)
{
    return cur_loop;
}

unsigned io_count(void)
{
    return nloops;
}

void io_free(void)
{
    for (unsigned i = 0; i < nloops; i++) {
        struct io_loop *l = &loops[i];

        /* Transfers submitted after the loop stopped were refused by io_submit. */
        for (size_t j = 0; j < l->nwatch_q; j++)
            exchange_unref(l->watch_q[j]);
        free(l->watch_q);
        for (size_t j = 0; j < l->nunwatch_q; j++)
            exchange_unref(l->unwatch_q[j]);
        free(l->unwatch_q);
        free(l->unwatch_spare);
        free(l->watched);
        free(l->to_unpause);
        free(l->pfd);
        free(l->pfd_ex);
        for (unsigned j = 0; j < l->nshards; j++)
            if (l->shards[j].multi)
                curl_multi_cleanup(l->shards[j].multi);
        h1_pool_free(l->h1);
        close(l->evfd);
        close(l->epfd);
        pthread_mutex_destroy(&l->mu);
    }
    free(loops);
    loops = NULL;
    nloops = 0;
    serving = joined = false;
}

struct io_loop *io_pick(void)
{
    unsigned i = __atomic_fetch_add(&rr, 1, __ATOMIC_RELAXED);

    return &loops[i % nloops];
}

/* Caller holds l->mu. Takes a reference for the watch list. */
static void do_watch(struct io_loop *l, struct exchange *ex)
{
    pthread_mutex_lock(&ex->mu);
    if (ex->watched) {
        pthread_mutex_unlock(&ex->mu);
        return;
    }
    ex->watched = true;
    ex->refs++;
    pthread_mutex_unlock(&ex->mu);
    if (l->nwatch_q == l->cap_watch_q) {
        l->cap_watch_q = l->cap_watch_q ? l->cap_watch_q * 2 : 64;
        l->watch_q = xrealloc(l->watch_q, l->cap_watch_q * sizeof(*l->watch_q));
    }
    l->watch_q[l->nwatch_q++] = ex;
}

int io_submit(struct xfer *x)
{
    /* A relay runs on its exchange's home loop, which also watches the client: one loop,
     * one wake-up per request. Approach calls spread over all loops. */
    bool relay = x->kind == XFER_RELAY && x->ex && x->ex->home;
    struct io_loop *l = relay ? x->ex->home : io_pick();

    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        pthread_mutex_unlock(&l->mu);
        return PX_ECANCELLED;
    }
    x->next = NULL;
    if (l->q_tail)
        l->q_tail->next = x;
    else
        l->q_head = x;
    l->q_tail = x;
    if (relay) {
        pthread_mutex_lock(&x->ex->mu);
        x->ex->relay_loop = l;
        pthread_mutex_unlock(&x->ex->mu);
        do_watch(l, x->ex);
    }
    pthread_mutex_unlock(&l->mu);
    if (cur_loop != l) /* on its own thread the loop drains its queue before it sleeps */
        loop_wake(l, false);
    return PX_OK;
}

void io_watch(struct exchange *ex)
{
    struct io_loop *l = ex->home;

    pthread_mutex_lock(&l->mu);
    do_watch(l, ex);
    pthread_mutex_unlock(&l->mu);
    if (cur_loop != l)
        loop_wake(l, false);
}

void io_unwatch(struct exchange *ex)
{
    struct io_loop *l = ex->home;

    pthread_mutex_lock(&l->mu);
    if (l->nunwatch_q == l->cap_unwatch_q) {
        l->cap_unwatch_q = l->cap_unwatch_q ? l->cap_unwatch_q * 2 : 64;
        l->unwatch_q = xrealloc(l->unwatch_q, l->cap_unwatch_q * sizeof(*l->unwatch_q));
    }
    l->unwatch_q[l->nunwatch_q++] = ex;
    pthread_mutex_unlock(&l->mu);
}

void io_wake_all(void)
{
    for (unsigned i = 0; i < nloops; i++)
        loop_wake(&loops[i], true);
}

void io_wake(struct io_loop *l)
{
    if (l) /* on its own thread too: the flag makes the next turn sweep */
        loop_wake(l, true);
}
