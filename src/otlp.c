/* otlp.c: OpenTelemetry trace export (OTLP/HTTP, protobuf-JSON mapping).
 *
 * A request thread encodes a span to JSON and queues the string (a mutex held for a push,
 * never a wait); the exporter thread wakes when a batch is full or the oldest span has waited
 * OTLP_FLUSH_MS, and posts the batch with its own curl handle and short timeouts. Failures
 * drop the batch: tracing never slows or fails a request. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "arena.h"
#include "internal.h"
#include "log.h"
#include "otlp.h"

#define OTLP_FLUSH_MS      1000       /* a span waits at most this long for its batch */
#define OTLP_TIMEOUT_MS    2000       /* one export POST */
#define OTLP_CONNECT_MS    500        /* connecting to the receiver */
#define OTLP_WARN_EVERY_US 10000000LL /* one warning of a kind per 10 s */

bool otlp_on;

static struct {
    pthread_mutex_t mu; /* guards the ring, oldest_ns and stopping */
    pthread_cond_t cv;
    char *ring[OTLP_QUEUE_MAX];
    size_t head, n;
    long long oldest_ns; /* when the oldest queued span was queued */
    bool stopping;
    pthread_t thread;
    char *url;
} q = {.mu = PTHREAD_MUTEX_INITIALIZER};

static unsigned long long dropped, exported, failed_exports;
static long long last_warn_full, last_warn_export;

/* ---- ids and trace context --------------------------------------------------------------------
 */

long long otlp_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void otlp_new_id(char *out, size_t hexlen)
{
    char tmp[40];

    do {
        px_random_id(tmp, sizeof(tmp), "", hexlen > 16 ? 2 : 1);
    } while (strspn(tmp, "0") >= hexlen); /* an all-zero id is invalid */
    memcpy(out, tmp, hexlen);
    out[hexlen] = '\0';
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

/* Lower-case hex and not all zeros. */
static bool id_ok(const char *s, size_t n)
{
    return is_hex(s, n) && strspn(s, "0") < n;
}

bool otlp_traceparent_parse(const char *h, struct otlp_ctx *c)
{
    if (!h)
        return false;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t len = strcspn(h, " \t");
    /* Version 00 is exactly 55 chars; a later version may append "-..." after the flags. */
    if (len < 55 || !is_hex(h, 2) || memcmp(h, "ff", 2) == 0 || h[2] != '-' || h[35] != '-' ||
        h[52] != '-' || !is_hex(h + 53, 2))
        return false;
    if (memcmp(h, "00", 2) == 0 ? len != 55 : (len > 55 && h[55] != '-'))
        return false;
    if (!id_ok(h + 3, 32) || !id_ok(h + 36, 16))
        return false;
    char fl[3] = {h[53], h[54], '\0'};
    memcpy(c->trace_id, h + 3, 32);
    c->trace_id[32] = '\0';
    memcpy(c->parent_id, h + 36, 16);
    c->parent_id[16] = '\0';
    c->flags = (uint8_t)strtoul(fl, NULL, 16);
    return true;
}

void otlp_traceparent_format(const struct otlp_ctx *c, char *out, size_t len)
{
    snprintf(out, len, "00-%s-%s-%02x", c->trace_id, c->span_id, c->flags);
}

char *otlp_traces_url(const char *endpoint)
{
    static const char tail[] = "/v1/traces";
    size_t n = strlen(endpoint), t = sizeof(tail) - 1;
    char *u;

    while (n > 0 && endpoint[n - 1] == '/')
        n--;
    if (n >= t && memcmp(endpoint + n - t, tail, t) == 0)
        n -= t; /* re-appended below */
    u = xmalloc(n + t + 1);
    memcpy(u, endpoint, n);
    memcpy(u + n, tail, t + 1);
    return u;
}

/* ---- span encoding ----------------------------------------------------------------------------
 */

struct otlp_span {
    cJSON *obj;
    cJSON *attrs;
};

struct otlp_span *otlp_span_begin(const struct otlp_ctx *c, const char *name, enum otlp_kind kind,
                                  long long start_ns, long long end_ns)
{
    struct otlp_span *s = xmalloc(sizeof(*s));
    char ns[24];

    s->obj = cJSON_CreateObject();
    cJSON_AddStringToObject(s->obj, "traceId", c->trace_id);
    cJSON_AddStringToObject(s->obj, "spanId", c->span_id);
    if (c->parent_id[0])
        cJSON_AddStringToObject(s->obj, "parentSpanId", c->parent_id);
    cJSON_AddStringToObject(s->obj, "name", name);
    cJSON_AddNumberToObject(s->obj, "kind", (int)kind);
    snprintf(ns, sizeof(ns), "%lld", start_ns);
    cJSON_AddStringToObject(s->obj, "startTimeUnixNano", ns);
    snprintf(ns, sizeof(ns), "%lld", end_ns < start_ns ? start_ns : end_ns);
    cJSON_AddStringToObject(s->obj, "endTimeUnixNano", ns);
    s->attrs = cJSON_AddArrayToObject(s->obj, "attributes");
    return s;
}

static cJSON *attr(struct otlp_span *s, const char *key)
{
    cJSON *a = cJSON_CreateObject();

    cJSON_AddStringToObject(a, "key", key);
    cJSON_AddItemToArray(s->attrs, a);
    return cJSON_AddObjectToObject(a, "value");
}

void otlp_attr_str(struct otlp_span *s, const char *key, const char *val)
{
    if (val)
        cJSON_AddStringToObject(attr(s, key), "stringValue", val);
}

void otlp_attr_int(struct otlp_span *s, const char *key, long long val)
{
    char v[24];

    snprintf(v, sizeof(v), "%lld", val); /* int64 is a string in the JSON mapping */
    cJSON_AddStringToObject(attr(s, key), "intValue", v);
}

void otlp_attr_double(struct otlp_span *s, const char *key, double val)
{
    cJSON_AddNumberToObject(attr(s, key), "doubleValue", val);
}

void otlp_attr_bool(struct otlp_span *s, const char *key, bool val)
{
    cJSON_AddBoolToObject(attr(s, key), "boolValue", val);
}

void otlp_span_status(struct otlp_span *s, int code, const char *message)
{
    cJSON *st = cJSON_AddObjectToObject(s->obj, "status");

    cJSON_AddNumberToObject(st, "code", code);
    if (message && *message)
        cJSON_AddStringToObject(st, "message", message);
}

char *otlp_span_json(struct otlp_span *s)
{
    char *j = cJSON_PrintUnformatted(s->obj);

    cJSON_Delete(s->obj);
    free(s);
    return j;
}

char *otlp_batch_json(char *const *spans, size_t n)
{
    struct buf b;

    buf_init(&b, 0);
    buf_puts(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":["
                 "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"optillm-c\"}},"
                 "{\"key\":\"service.version\",\"value\":{\"stringValue\":\"" PX_VERSION "\"}}]},"
                 "\"scopeSpans\":[{\"scope\":{\"name\":\"optillm-c\",\"version\":\"" PX_VERSION
                 "\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(&b, ",");
        buf_puts(&b, spans[i]);
    }
    buf_puts(&b, "]}]}]}");
    return buf_take(&b, NULL);
}

/* ---- queue and exporter -----------------------------------------------------------------------
 */

static bool warn_due(long long *last)
{
    long long now = px_now_us(), prev = __atomic_load_n(last, __ATOMIC_RELAXED);

    if (prev && now - prev < OTLP_WARN_EVERY_US)
        return false;
    return __atomic_compare_exchange_n(last, &prev, now, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

void otlp_span_end(struct otlp_span *s)
{
    char *j = otlp_span_json(s);
    bool full;

    if (!otlp_on || !j) {
        cJSON_free(j);
        return;
    }
    pthread_mutex_lock(&q.mu);
    full = q.n == OTLP_QUEUE_MAX || q.stopping;
    if (!full) {
        if (q.n == 0)
            q.oldest_ns = otlp_now_ns();
        q.ring[(q.head + q.n) % OTLP_QUEUE_MAX] = j;
        q.n++;
        if (q.n == 1 || q.n == OTLP_BATCH_MAX) /* starts the flush clock, or a full batch */
            pthread_cond_signal(&q.cv);
    }
    pthread_mutex_unlock(&q.mu);
    if (full) {
        cJSON_free(j);
        __atomic_fetch_add(&dropped, 1, __ATOMIC_RELAXED);
        if (warn_due(&last_warn_full))
            log_warn("otlp: the span queue is full (%d): spans dropped", OTLP_QUEUE_MAX);
    }
}

static size_t discard_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    (void)data;
    (void)userp;
    return size * nmemb;
}

static void export_batch(CURL *e, char **spans, size_t n)
{
    char *body = otlp_batch_json(spans, n);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    long status = 0;
    CURLcode rc;

    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, q.url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)OTLP_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)OTLP_CONNECT_MS);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "optillm-c/" PX_VERSION);
    rc = curl_easy_perform(e);
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status >= 200 && status < 300) {
        __atomic_fetch_add(&exported, n, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(&dropped, n, __ATOMIC_RELAXED);
        __atomic_fetch_add(&failed_exports, 1, __ATOMIC_RELAXED);
        if (warn_due(&last_warn_export)) {
            if (rc != CURLE_OK)
                log_warn("otlp: export to %s failed: %s; %zu span(s) dropped", q.url,
                         curl_easy_strerror(rc), n);
            else
                log_warn("otlp: export to %s failed: HTTP %ld; %zu span(s) dropped", q.url, status,
                         n);
        }
    }
    curl_slist_free_all(h);
    free(body);
}

static void *exporter_main(void *arg)
{
    CURL *e = curl_easy_init();
    char **batch = xmalloc(OTLP_BATCH_MAX * sizeof(*batch));
    bool last_failed = false;

    (void)arg;
    for (;;) {
        size_t n = 0;
        bool stopping;

        pthread_mutex_lock(&q.mu);
        for (;;) {
            if (q.stopping || q.n >= OTLP_BATCH_MAX)
                break;
            if (q.n == 0) {
                pthread_cond_wait(&q.cv, &q.mu);
                continue;
            }
            long long due = q.oldest_ns + OTLP_FLUSH_MS * 1000000LL;
            if (otlp_now_ns() >= due)
                break;
            struct timespec ts = {.tv_sec = due / 1000000000LL, .tv_nsec = due % 1000000000LL};
            pthread_cond_timedwait(&q.cv, &q.mu, &ts); /* the cond uses CLOCK_REALTIME */
        }
        stopping = q.stopping;
        while (n < OTLP_BATCH_MAX && q.n > 0) {
            batch[n++] = q.ring[q.head];
            q.head = (q.head + 1) % OTLP_QUEUE_MAX;
            q.n--;
        }
        if (q.n > 0)
            q.oldest_ns = otlp_now_ns();
        pthread_mutex_unlock(&q.mu);
        if (n == 0 && stopping)
            break;
        if (stopping && last_failed) { /* shutting down with a dead receiver: drop the rest */
            __atomic_fetch_add(&dropped, n, __ATOMIC_RELAXED);
        } else if (n > 0 && e) {
            unsigned long long before = __atomic_load_n(&failed_exports, __ATOMIC_RELAXED);

            export_batch(e, batch, n);
            last_failed = __atomic_load_n(&failed_exports, __ATOMIC_RELAXED) != before;
        } else {
            __atomic_fetch_add(&dropped, n, __ATOMIC_RELAXED);
        }
        for (size_t i = 0; i < n; i++)
            cJSON_free(batch[i]);
    }
    free(batch);
    if (e)
        curl_easy_cleanup(e);
    return NULL;
}

int otlp_start(const char *endpoint)
{
    const char *e;
    char *url;

    if (endpoint && *endpoint)
        url = otlp_traces_url(endpoint);
    else if ((e = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && *e)
        url = xstrdup(e);
    else if ((e = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")) && *e)
        url = otlp_traces_url(e);
    else
        return 0;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        log_error("--otlp-endpoint must be an http:// or https:// URL");
        free(url);
        return -1;
    }
    q.url = url;
    q.stopping = false;
    pthread_cond_init(&q.cv, NULL);
    if (pthread_create(&q.thread, NULL, exporter_main, NULL) != 0) {
        log_error("otlp: cannot start the exporter thread");
        free(q.url);
        q.url = NULL;
        return -1;
    }
    otlp_on = true;
    log_info("otlp: exporting traces to %s", url);
    return 0;
}

void otlp_stop(void)
{
    if (!otlp_on)
        return;
    pthread_mutex_lock(&q.mu);
    q.stopping = true;
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
    pthread_join(q.thread, NULL);
    otlp_on = false;
    free(q.url);
    q.url = NULL;
}

unsigned long long otlp_dropped(void)
{
    return __atomic_load_n(&dropped, __ATOMIC_RELAXED);
}

void otlp_metrics_render(struct buf *b)
{
    buf_printf(b,
               "# HELP optillm_otlp_spans_dropped_total Trace spans dropped (queue full or export "
               "failed).\n"
               "# TYPE optillm_otlp_spans_dropped_total counter\n"
               "optillm_otlp_spans_dropped_total %llu\n"
               "# HELP optillm_otlp_spans_exported_total Trace spans accepted by the receiver.\n"
               "# TYPE optillm_otlp_spans_exported_total counter\n"
               "optillm_otlp_spans_exported_total %llu\n",
               otlp_dropped(), __atomic_load_n(&exported, __ATOMIC_RELAXED));
}

/* ---- hooks: the server span and the upstream calls' client spans ------------------------------
 */

void otlp_exchange_begin(struct exchange *ex)
{
    const char *tp = MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND, "traceparent");
    const char *ts = MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND, "tracestate");

    /* Probes and scrapes would drown the traces: only API requests get spans. */
    if (!strcmp(ex->url, "/health") || !strcmp(ex->url, "/metrics") ||
        !strcmp(ex->url, "/v1/health") || !strcmp(ex->url, "/v1/metrics"))
        return;
    ex->start_ns = otlp_now_ns();
    if (otlp_traceparent_parse(tp, &ex->trace)) {
        size_t n = ts ? strlen(ts) : 0;
        bool ok = n > 0 && n <= 512;

        for (size_t i = 0; ok && i < n; i++)
            ok = ts[i] >= 0x20 && ts[i] < 0x7f;
        if (ok)
            ex->tracestate = arena_strndup(ex->arena, ts, n);
    } else {
        otlp_new_id(ex->trace.trace_id, 32);
        ex->trace.parent_id[0] = '\0';
        ex->trace.flags = 1;
    }
    otlp_new_id(ex->trace.span_id, 16);
}

void otlp_exchange_end(struct exchange *ex)
{
    char name[160];
    const struct usage *u = &ex->usage;
    long long end_ns = ex->start_ns + (ex->completed_us - ex->start_us) * 1000;
    const char *model = ex->req.upstream_model ? ex->req.upstream_model : ex->req.model;

    if (!ex->trace.span_id[0])
        return;
    if (ex->req.route_name)
        snprintf(name, sizeof(name), "chat %s", ex->req.route_name);
    else
        snprintf(name, sizeof(name), "%s %.*s", ex->method, (int)strcspn(ex->url, "?"), ex->url);
    struct otlp_span *s = otlp_span_begin(&ex->trace, name, OTLP_SERVER, ex->start_ns, end_ns);
    otlp_attr_str(s, "http.request.method", ex->method);
    char path[520];
    snprintf(path, sizeof(path), "%.*s", (int)strcspn(ex->url, "?"), ex->url);
    otlp_attr_str(s, "url.path", path);
    otlp_attr_str(s, "optillm.request_id", ex->id);
    if (ex->req.route_name) {
        otlp_attr_str(s, "gen_ai.operation.name", "chat");
        otlp_attr_str(s, "optillm.approach", ex->req.route_name);
    }
    otlp_attr_str(s, "gen_ai.request.model", model);
    if (ex->tenant)
        otlp_attr_str(s, "optillm.tenant", ex->tenant->name);
    otlp_attr_int(s, "http.response.status_code", ex->status);
    otlp_attr_int(s, "optillm.upstream_calls", u->calls);
    if (u->reported) {
        otlp_attr_int(s, "gen_ai.usage.input_tokens", u->prompt_tokens);
        otlp_attr_int(s, "gen_ai.usage.output_tokens", u->completion_tokens);
    }
    if (ex->closed_early)
        otlp_attr_bool(s, "optillm.closed_early", true);
    if (ex->status >= 400 || ex->status == 0) {
        char msg[32];

        snprintf(msg, sizeof(msg), "HTTP %d", ex->status);
        otlp_span_status(s, 2, msg);
    } else {
        otlp_span_status(s, 1, NULL);
    }
    otlp_span_end(s);
}

void otlp_xfer_headers(struct xfer *x)
{
    char h[96];

    if (!x->ex->trace.span_id[0])
        return;
    otlp_traceparent_format(&x->ex->trace, h + 13, sizeof(h) - 13); /* replaced per attempt */
    memcpy(h, "traceparent: ", 13);
    x->headers = curl_slist_append(x->headers, h);
    for (x->tp_header = x->headers; x->tp_header->next;)
        x->tp_header = x->tp_header->next;
    if (x->ex->tracestate) {
        size_t n = strlen(x->ex->tracestate) + 16;
        char *t = xmalloc(n);

        snprintf(t, n, "tracestate: %s", x->ex->tracestate);
        x->headers = curl_slist_append(x->headers, t);
        free(t);
    }
}

void otlp_xfer_start(struct xfer *x)
{
    char h[96];

    if (!x->tp_header)
        return;
    x->span = x->ex->trace;
    memcpy(x->span.parent_id, x->ex->trace.span_id, sizeof(x->span.parent_id));
    otlp_new_id(x->span.span_id, 16);
    x->span_start_ns = otlp_now_ns();
    x->span_start_us = px_now_us();
    x->span_open = true;
    memcpy(h, "traceparent: ", 13);
    otlp_traceparent_format(&x->span, h + 13, sizeof(h) - 13);
    memcpy(x->tp_header->data, h, strlen(h) + 1); /* same length as the placeholder */
}

/* The host of a URL ("http://host:port/path" -> "host"). */
static void url_host(const char *url, char *out, size_t len, long *port)
{
    const char *p = strstr(url, "://");
    size_t n;

    p = p ? p + 3 : url;
    if (*p == '[') { /* IPv6 literal */
        p++;
        n = strcspn(p, "]");
    } else {
        n = strcspn(p, ":/?#");
    }
    snprintf(out, len, "%.*s", (int)n, p);
    const char *c = p + n + (p[n] == ']');
    *port = *c == ':' ? strtol(c + 1, NULL, 10) : (strncmp(url, "https", 5) == 0 ? 443 : 80);
}

void otlp_xfer_end(struct xfer *x, const struct usage *u)
{
    struct exchange *ex = x->ex;
    const char *model = ex->req.upstream_model ? ex->req.upstream_model : ex->req.model;
    long long end_us = x->end_us >= x->span_start_us ? x->end_us : px_now_us();
    char name[300], host[256];
    long port;

    if (!x->span_open)
        return;
    x->span_open = false;
    snprintf(name, sizeof(name), "chat %s", model ? model : "");
    struct otlp_span *s = otlp_span_begin(&x->span, name, OTLP_CLIENT, x->span_start_ns,
                                          x->span_start_ns + (end_us - x->span_start_us) * 1000);
    otlp_attr_str(s, "gen_ai.system", "openai");
    otlp_attr_str(s, "gen_ai.operation.name", "chat");
    otlp_attr_str(s, "gen_ai.request.model", model);
    otlp_attr_str(s, "optillm.stage", x->stage ? x->stage : "passthrough");
    otlp_attr_int(s, "optillm.attempt", x->attempts);
    url_host(x->url, host, sizeof(host), &port);
    otlp_attr_str(s, "server.address", host);
    otlp_attr_int(s, "server.port", port);
    if (x->http_status > 0)
        otlp_attr_int(s, "http.response.status_code", x->http_status);
    if (u && u->reported) {
        otlp_attr_int(s, "gen_ai.usage.input_tokens", u->prompt_tokens);
        otlp_attr_int(s, "gen_ai.usage.output_tokens", u->completion_tokens);
    }
    if (x->aborted) {
        otlp_span_status(s, 2, "cancelled");
    } else if (x->result != CURLE_OK) {
        otlp_span_status(s, 2, x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
    } else if (x->http_status >= 400) {
        char msg[32];

        snprintf(msg, sizeof(msg), "HTTP %ld", x->http_status);
        otlp_span_status(s, 2, msg);
    } else {
        otlp_span_status(s, 1, NULL);
    }
    otlp_span_end(s);
}
