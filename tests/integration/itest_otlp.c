/* itest_otlp.c: OpenTelemetry traces (--otlp-endpoint) through the real proxy, with the mock as
 * the upstream and as the OTLP/HTTP receiver (POST /v1/traces, GET /mock/traces): the OTLP JSON
 * shape, one server span per request and one client span per upstream attempt as its
 * children, the client's traceparent continued and a traceparent sent upstream on every call;
 * a dead or hanging receiver neither slows nor fails requests, and its spans are counted as
 * dropped. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct proc mock;

static int setup(void **state)
{
    (void)state;
    harness_deadline(240);
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static const char *const key_env[] = {"OPENAI_API_KEY=sk-otlp-test", NULL};

static void sleep_ms(long ms)
{
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

static bool hex_ok(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return strspn(s, "0") < n;
}

static bool digits(const char *s)
{
    return s && *s && strspn(s, "0123456789") == strlen(s);
}

/* The string form of attribute 'key' of a span (stringValue or intValue), or NULL. */
static const char *attr(const cJSON *span, const char *key)
{
    const cJSON *a;

    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(span, "attributes"))
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(a, "key");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, "value");

        if (!cJSON_IsString(k) || strcmp(k->valuestring, key) != 0)
            continue;
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(v, "stringValue");
        const cJSON *iv = cJSON_GetObjectItemCaseSensitive(v, "intValue");
        return cJSON_IsString(sv) ? sv->valuestring : cJSON_IsString(iv) ? iv->valuestring : NULL;
    }
    return NULL;
}

/* Checks one span's OTLP shape: ids, name, kind, nanosecond strings, status. */
static void check_span(const cJSON *s)
{
    const char *start =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "startTimeUnixNano"));
    const char *end = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "endTimeUnixNano"));
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(s, "kind");
    const cJSON *parent = cJSON_GetObjectItemCaseSensitive(s, "parentSpanId");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(s, "status");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(st, "code");

    assert_true(hex_ok(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "traceId")), 32));
    assert_true(hex_ok(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "spanId")), 16));
    assert_true(!parent || hex_ok(cJSON_GetStringValue(parent), 16));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(s, "name")));
    assert_true(cJSON_IsNumber(kind) && (kind->valueint == 2 || kind->valueint == 3));
    assert_true(digits(start) && digits(end));
    assert_true(strlen(start) >= 19); /* nanoseconds since 1970: 19 digits today */
    assert_true(strtoull(end, NULL, 10) >= strtoull(start, NULL, 10));
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(s, "attributes")));
    assert_true(cJSON_IsNumber(code) && (code->valueint == 1 || code->valueint == 2));
}

/* Every span of trace 'trace_id' received so far (a new array of references' copies); checks
 * the shape of every export on the way. */
static cJSON *spans_of(int port, const char *trace_id)
{
    cJSON *out = cJSON_CreateArray();
    cJSON *all = mock_get(port, "/mock/traces");
    const cJSON *e;

    assert_non_null(all);
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(all, "exports"))
    {
        const cJSON *rs, *ss, *s;

        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "path")),
                            "/v1/traces");
        cJSON_ArrayForEach(rs, cJSON_GetObjectItemCaseSensitive(
                                   cJSON_GetObjectItemCaseSensitive(e, "body"), "resourceSpans"))
        {
            const cJSON *res = cJSON_GetObjectItemCaseSensitive(rs, "resource");

            assert_string_equal(attr(res, "service.name"), "optillm-c");
            cJSON_ArrayForEach(ss, cJSON_GetObjectItemCaseSensitive(rs, "scopeSpans"))
            {
                assert_non_null(cJSON_GetObjectItemCaseSensitive(ss, "scope"));
                cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(ss, "spans"))
                {
                    check_span(s);
                    if (!trace_id || !strcmp(cJSON_GetStringValue(
                                                 cJSON_GetObjectItemCaseSensitive(s, "traceId")),
                                             trace_id))
                        cJSON_AddItemToArray(out, cJSON_Duplicate(s, true));
                }
            }
        }
    }
    cJSON_Delete(all);
    return out;
}

static int kind_of(const cJSON *s)
{
    return cJSON_GetObjectItemCaseSensitive(s, "kind")->valueint;
}

static const char *str(const cJSON *s, const char *k)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, k));
}

/* Waits (up to 6 s) for the server span with optillm.request_id 'rid'; returns it (a copy). */
static cJSON *server_span(int port, const char *rid)
{
    for (int i = 0; i < 60; i++) {
        cJSON *all = spans_of(port, NULL);
        const cJSON *s;

        cJSON_ArrayForEach(s, all)
        {
            const char *r = attr(s, "optillm.request_id");

            if (kind_of(s) == 2 && r && !strcmp(r, rid)) {
                cJSON *c = cJSON_Duplicate(s, true);

                cJSON_Delete(all);
                return c;
            }
        }
        cJSON_Delete(all);
        sleep_ms(100);
    }
    fail_msg("no server span for request %s", rid);
    return NULL;
}

/* The client spans (kind 3) of a trace, waiting until there are at least 'want' of them. */
static cJSON *client_spans(int port, const char *trace_id, int want)
{
    for (int i = 0;; i++) {
        cJSON *all = spans_of(port, trace_id);
        cJSON *out = cJSON_CreateArray();
        const cJSON *s;

        cJSON_ArrayForEach(s, all)
        {
            if (kind_of(s) == 3)
                cJSON_AddItemToArray(out, cJSON_Duplicate(s, true));
        }
        cJSON_Delete(all);
        if (cJSON_GetArraySize(out) >= want || i >= 30)
            return out;
        cJSON_Delete(out);
        sleep_ms(100);
    }
}

static void chat(int port, const char *model, const char *rid, const char *traceparent,
                 struct http_resp *r)
{
    char id[128], tp[160];
    const char *h[4] = {id, NULL, NULL, NULL};
    char *body = chat_body(model, "trace me", NULL);

    snprintf(id, sizeof(id), "X-Request-Id: %s", rid);
    if (traceparent) {
        snprintf(tp, sizeof(tp), "traceparent: %s", traceparent);
        h[1] = tp;
        h[2] = "tracestate: vendor=opaque-1";
    }
    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, h, r), 0);
    free(body);
}

/* The traceparent headers the mock received, oldest first (a new array of strings). */
static cJSON *upstream_traceparents(int port, const char *want_state)
{
    cJSON *reqs = mock_get(port, "/mock/requests");
    cJSON *out = cJSON_CreateArray();
    const cJSON *r;

    assert_non_null(reqs);
    const cJSON *list =
        cJSON_IsArray(reqs) ? reqs : cJSON_GetObjectItemCaseSensitive(reqs, "requests");
    cJSON_ArrayForEach(r, list)
    {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(r, "headers");
        const char *tp = str(h, "traceparent");

        assert_non_null(tp);
        if (want_state)
            assert_string_equal(str(h, "tracestate"), want_state);
        cJSON_AddItemToArray(out, cJSON_CreateString(tp));
    }
    cJSON_Delete(reqs);
    return out;
}

/* bon: one server span continuing the client's trace, one client span per upstream call (as
 * many as the mock counted), each the parent of the traceparent the upstream received. */
static void test_bon_tree(void **state)
{
    static const char tid[] = "4bf92f3577b34da6a3ce929d0e0e4736";
    static const char client_span[] = "00f067aa0ba902b7";
    char tp[64], ep[64];
    struct proc px;
    struct http_resp r;

    (void)state;
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", mock.port);
    const char *args[] = {"--otlp-endpoint", ep, NULL};
    assert_int_equal(proxy_start(&px, mock.port, args, key_env), 0);
    mock_reset(mock.port);
    snprintf(tp, sizeof(tp), "00-%s-%s-01", tid, client_span);
    chat(px.port, "bon-mock-model", "otlp-bon-1", tp, &r);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    long calls = mock_stat(mock.port, "calls");
    assert_true(calls >= 2);

    cJSON *srv = server_span(mock.port, "otlp-bon-1");
    assert_string_equal(str(srv, "traceId"), tid);
    assert_string_equal(str(srv, "parentSpanId"), client_span);
    assert_string_equal(str(srv, "name"), "chat bon");
    assert_string_equal(attr(srv, "optillm.approach"), "bon");
    assert_string_equal(attr(srv, "gen_ai.request.model"), "mock-model");
    assert_string_equal(attr(srv, "http.response.status_code"), "200");
    assert_int_equal(atol(attr(srv, "optillm.upstream_calls")), calls);
    assert_true(atol(attr(srv, "gen_ai.usage.input_tokens")) > 0);
    assert_true(atol(attr(srv, "gen_ai.usage.output_tokens")) > 0);
    assert_int_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(srv, "status"), "code")
            ->valueint,
        1);
    const char *srv_id = str(srv, "spanId");
    assert_string_not_equal(srv_id, client_span);

    cJSON *cl = client_spans(mock.port, tid, (int)calls);
    assert_int_equal(cJSON_GetArraySize(cl), calls);
    long in = 0, out = 0;
    bool rate = false, sample = false;
    const cJSON *s;
    cJSON_ArrayForEach(s, cl)
    {
        const char *stage = attr(s, "optillm.stage");

        assert_string_equal(str(s, "traceId"), tid);
        assert_string_equal(str(s, "parentSpanId"), srv_id);
        assert_string_equal(str(s, "name"), "chat mock-model");
        assert_string_equal(attr(s, "gen_ai.system"), "openai");
        assert_string_equal(attr(s, "gen_ai.operation.name"), "chat");
        assert_string_equal(attr(s, "server.address"), "127.0.0.1");
        assert_string_equal(attr(s, "optillm.attempt"), "1");
        assert_string_equal(attr(s, "http.response.status_code"), "200");
        assert_non_null(stage);
        assert_true(strncmp(stage, "bon/", 4) == 0);
        rate |= strcmp(stage, "bon/rate") == 0;
        sample |= strcmp(stage, "bon/sample") == 0;
        in += atol(attr(s, "gen_ai.usage.input_tokens"));
        out += atol(attr(s, "gen_ai.usage.output_tokens"));
        /* a child lies within its parent */
        assert_true(strtoull(str(s, "startTimeUnixNano"), NULL, 10) >=
                    strtoull(str(srv, "startTimeUnixNano"), NULL, 10));
        assert_true(strtoull(str(s, "endTimeUnixNano"), NULL, 10) <=
                    strtoull(str(srv, "endTimeUnixNano"), NULL, 10));
    }
    assert_true(rate && sample);
    assert_int_equal(in, atol(attr(srv, "gen_ai.usage.input_tokens")));
    assert_int_equal(out, atol(attr(srv, "gen_ai.usage.output_tokens")));

    /* Every upstream call carried the trace and its own client span's id; tracestate too. */
    cJSON *tps = upstream_traceparents(mock.port, "vendor=opaque-1");
    assert_int_equal(cJSON_GetArraySize(tps), calls);
    const cJSON *t;
    cJSON_ArrayForEach(t, tps)
    {
        char want_prefix[40];
        bool found = false;

        snprintf(want_prefix, sizeof(want_prefix), "00-%s-", tid);
        assert_int_equal(strlen(t->valuestring), 55);
        assert_memory_equal(t->valuestring, want_prefix, 36);
        cJSON_ArrayForEach(s, cl) found |= !strncmp(t->valuestring + 36, str(s, "spanId"), 16);
        assert_true(found);
        assert_string_equal(t->valuestring + 52, "-01");
    }
    cJSON_Delete(tps);
    cJSON_Delete(cl);
    cJSON_Delete(srv);
    assert_int_equal(proc_stop(&px), 0);
}

/* Passthrough: without a (valid) traceparent a new trace starts; the relay's client span and
 * the upstream's traceparent belong to it. A retried call gets one span per attempt. */
static void test_passthrough_and_retries(void **state)
{
    char ep[64];
    struct proc px;
    struct http_resp r;
    const cJSON *s;

    (void)state;
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d/v1/traces", mock.port); /* used as is */
    const char *args[] = {"--otlp-endpoint", ep, "--retry-base-delay", "0.01", NULL};
    assert_int_equal(proxy_start(&px, mock.port, args, key_env), 0);

    static const char *const rids[] = {"otlp-pass-none", "otlp-pass-bad"};
    static const char *const tps[] = {NULL,
                                      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"};
    for (int k = 0; k < 2; k++) {
        mock_reset(mock.port);
        chat(px.port, "mock-model", rids[k], tps[k], &r);
        assert_int_equal(r.status, 200);
        http_resp_free(&r);
        cJSON *srv = server_span(mock.port, rids[k]);
        const char *tid = str(srv, "traceId");
        assert_string_not_equal(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_null(cJSON_GetObjectItemCaseSensitive(srv, "parentSpanId"));
        assert_string_equal(attr(srv, "optillm.upstream_calls"), "1");
        cJSON *cl = client_spans(mock.port, tid, 1);
        assert_int_equal(cJSON_GetArraySize(cl), 1);
        s = cJSON_GetArrayItem(cl, 0);
        assert_string_equal(attr(s, "optillm.stage"), "passthrough");
        assert_string_equal(str(s, "parentSpanId"), str(srv, "spanId"));
        assert_true(atol(attr(s, "gen_ai.usage.output_tokens")) > 0);
        cJSON *up = upstream_traceparents(mock.port, NULL);
        assert_int_equal(cJSON_GetArraySize(up), 1);
        char want[64];
        snprintf(want, sizeof(want), "00-%s-%s-01", tid, str(s, "spanId"));
        assert_string_equal(cJSON_GetArrayItem(up, 0)->valuestring, want);
        cJSON_Delete(up);
        cJSON_Delete(cl);
        cJSON_Delete(srv);
    }

    /* The first attempt fails (500), the retry succeeds: two client spans, attempts 1 and 2. */
    mock_reset(mock.port);
    chat(px.port, "mock-model@fail_first=1", "otlp-retry", NULL, &r);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    cJSON *srv = server_span(mock.port, "otlp-retry");
    cJSON *cl = client_spans(mock.port, str(srv, "traceId"), 2);
    assert_int_equal(cJSON_GetArraySize(cl), 2);
    int seen = 0;
    cJSON_ArrayForEach(s, cl)
    {
        const cJSON *code =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s, "status"), "code");

        assert_string_equal(str(s, "parentSpanId"), str(srv, "spanId"));
        if (!strcmp(attr(s, "optillm.attempt"), "1")) {
            assert_string_equal(attr(s, "http.response.status_code"), "500");
            assert_int_equal(code->valueint, 2);
            seen |= 1;
        } else {
            assert_string_equal(attr(s, "optillm.attempt"), "2");
            assert_string_equal(attr(s, "http.response.status_code"), "200");
            assert_int_equal(code->valueint, 1);
            seen |= 2;
        }
    }
    assert_int_equal(seen, 3);
    /* each attempt told the upstream its own span */
    cJSON *up = upstream_traceparents(mock.port, NULL);
    assert_int_equal(cJSON_GetArraySize(up), 2);
    assert_string_not_equal(cJSON_GetArrayItem(up, 0)->valuestring,
                            cJSON_GetArrayItem(up, 1)->valuestring);
    cJSON_Delete(up);
    cJSON_Delete(cl);
    cJSON_Delete(srv);
    assert_int_equal(proc_stop(&px), 0);
}

/* Streamed answers (an approach's final stage streamed, a streamed relay): every call still
 * has its client span with its tokens; probes and scrapes get no span. The endpoint comes
 * from $OTEL_EXPORTER_OTLP_ENDPOINT. */
static void test_streams(void **state)
{
    char ep[64], id[64];
    struct proc px;
    struct http_resp r;
    const char *h[] = {id, NULL};
    static const char *const models[] = {"bon-mock-model", "mock-model"};

    (void)state;
    /* The OpenTelemetry variable instead of the flag: /v1/traces appended. */
    snprintf(ep, sizeof(ep), "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d/", mock.port);
    const char *env[] = {key_env[0], ep, NULL};
    assert_int_equal(proxy_start(&px, mock.port, NULL, env), 0);
    for (int k = 0; k < 2; k++) {
        char *body = chat_body(models[k], "stream me",
                               "\"stream\":true,\"stream_options\":{\"include_usage\":true}");

        mock_reset(mock.port);
        snprintf(id, sizeof(id), "X-Request-Id: otlp-stream-%d", k);
        assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "[DONE]"));
        http_resp_free(&r);
        free(body);
        long calls = mock_stat(mock.port, "calls");
        snprintf(id, sizeof(id), "otlp-stream-%d", k);
        cJSON *srv = server_span(mock.port, id);
        assert_string_equal(attr(srv, "http.response.status_code"), "200");
        cJSON *cl = client_spans(mock.port, str(srv, "traceId"), (int)calls);
        assert_int_equal(cJSON_GetArraySize(cl), calls);
        const cJSON *s;
        cJSON_ArrayForEach(s, cl)
        {
            assert_string_equal(str(s, "parentSpanId"), str(srv, "spanId"));
            assert_non_null(attr(s, "gen_ai.usage.output_tokens"));
        }
        cJSON_Delete(cl);
        cJSON_Delete(srv);
    }
    /* /health and /metrics: no span (their request ids never show up) */
    snprintf(id, sizeof(id), "X-Request-Id: otlp-probe");
    assert_int_equal(http_req("GET", px.port, "/health", NULL, h, &r), 0);
    http_resp_free(&r);
    assert_int_equal(http_req("GET", px.port, "/metrics", NULL, h, &r), 0);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&px), 0); /* exports what is queued */
    cJSON *all = spans_of(mock.port, NULL);
    const cJSON *s;
    cJSON_ArrayForEach(s, all)
    {
        const char *rid = attr(s, "optillm.request_id");

        assert_true(!rid || strcmp(rid, "otlp-probe") != 0);
    }
    cJSON_Delete(all);
}

/* A tenant's request: its name on the server span. */
static void test_tenant(void **state)
{
    static const char key[] = "sk-otlp-tenant-key-1234";
    char ep[64], path[512], hex[65];
    unsigned char d[32];
    struct proc px;
    struct http_resp r;

    (void)state;
    SHA256((const unsigned char *)key, strlen(key), d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    snprintf(path, sizeof(path), "%s/logs/otlp-tenants-%d.json", harness_build_dir(),
             (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"tenants\": [{\"name\": \"acme\", \"key_sha256\": \"%s\"}]}\n", hex);
    fclose(f);
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", mock.port);
    const char *args[] = {"--otlp-endpoint", ep, "--tenants", path, NULL};
    assert_int_equal(proxy_start(&px, mock.port, args, key_env), 0);
    const char *h[] = {"Authorization: Bearer sk-otlp-tenant-key-1234", "X-Request-Id: otlp-tenant",
                       NULL};
    char *body = chat_body("moa-mock-model", "tenant", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    free(body);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    cJSON *srv = server_span(mock.port, "otlp-tenant");
    assert_string_equal(attr(srv, "optillm.tenant"), "acme");
    assert_string_equal(attr(srv, "optillm.approach"), "moa");
    assert_string_equal(str(srv, "name"), "chat moa");
    cJSON_Delete(srv);
    assert_int_equal(proc_stop(&px), 0);
    remove(path);
}

static long dropped(int port)
{
    struct http_resp r;
    const char *p;
    long n = -1;

    assert_int_equal(http_req("GET", port, "/metrics", NULL, NULL, &r), 0);
    p = strstr(r.body, "\noptillm_otlp_spans_dropped_total ");
    if (p)
        n = atol(p + 35);
    http_resp_free(&r);
    return n;
}

static int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* A receiver that refuses connections, and one that hangs past the export timeout: requests
 * are as fast as without tracing, spans are dropped and counted, one warning per 10 s. */
static void test_dead_receiver(void **state)
{
    char ep[64];
    struct proc px, base;
    struct http_resp r;
    double slack = harness_slack();

    (void)state;
    /* Baseline latency without tracing. */
    assert_int_equal(proxy_start(&base, mock.port, NULL, key_env), 0);
    double base_max = 0;
    for (int i = 0; i < 10; i++) {
        chat(base.port, "mock-model", "otlp-base", NULL, &r);
        assert_int_equal(r.status, 200);
        if (r.total_s > base_max)
            base_max = r.total_s;
        http_resp_free(&r);
    }
    assert_int_equal(proc_stop(&base), 0);

    static const char *const kinds[] = {"refused", "/slow"};
    for (int k = 0; k < 2; k++) {
        if (k == 0)
            snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", harness_free_port());
        else
            snprintf(ep, sizeof(ep), "http://127.0.0.1:%d/slow", mock.port);
        const char *args[] = {"--otlp-endpoint", ep, NULL};
        assert_int_equal(proxy_start(&px, mock.port, args, key_env), 0);
        /* ~3.5 s of requests: the exporter fails (or hangs 2 s) meanwhile. */
        double worst = 0;
        int n = 0;
        for (long long t0 = (long long)time(NULL); time(NULL) - t0 < 4; n++) {
            chat(px.port, "mock-model", "otlp-dead", NULL, &r);
            assert_int_equal(r.status, 200);
            if (r.total_s > worst)
                worst = r.total_s;
            http_resp_free(&r);
            sleep_ms(50);
        }
        printf("# %s receiver: %d requests, worst %.1f ms (no tracing: worst %.1f ms)\n", kinds[k],
               n, worst * 1000, base_max * 1000);
        assert_true(worst < base_max + 0.25 + slack);
        /* the spans of those requests are dropped and counted */
        long d = 0;
        for (int i = 0; i < 80 && (d = dropped(px.port)) < 2; i++)
            sleep_ms(100);
        printf("# %s receiver: %ld span(s) dropped\n", kinds[k], d);
        assert_true(d >= 2);
        assert_int_equal(proc_stop(&px), 0);
        /* rate-limited: one warning for several failed exports within 10 s */
        int warns = count_in_file(px.log, "otlp: export to");
        assert_true(warns >= 1);
        assert_true(warns <= 2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bon_tree),      cmocka_unit_test(test_passthrough_and_retries),
        cmocka_unit_test(test_streams),       cmocka_unit_test(test_tenant),
        cmocka_unit_test(test_dead_receiver),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
