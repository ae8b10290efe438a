/* test_otlp.c: unit tests of the trace exporter's pure parts (otlp.c): W3C traceparent parsing
 * and formatting, ids, the export URL, and the OTLP/HTTP JSON encoding of spans and batches. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "otlp.h"
#include "px.h"

static void test_traceparent_valid(void **state)
{
    struct otlp_ctx c = {0};
    char out[64];

    (void)state;
    assert_true(
        otlp_traceparent_parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &c));
    assert_string_equal(c.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_string_equal(c.parent_id, "b7ad6b7169203331");
    assert_int_equal(c.flags, 1);
    /* surrounding blanks, flags 00 */
    assert_true(
        otlp_traceparent_parse(" 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00 ", &c));
    assert_int_equal(c.flags, 0);
    /* a later version may carry more fields after the flags */
    assert_true(otlp_traceparent_parse(
        "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds", &c));
    assert_true(
        otlp_traceparent_parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09", &c));
    assert_int_equal(c.flags, 9);

    /* formatting: our span id replaces the parent */
    snprintf(c.span_id, sizeof(c.span_id), "00f067aa0ba902b7");
    otlp_traceparent_format(&c, out, sizeof(out));
    assert_string_equal(out, "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-09");
    assert_int_equal(strlen(out), 55);
}

static void test_traceparent_invalid(void **state)
{
    static const char *const bad[] = {
        NULL,
        "",
        "garbage",
        /* all-zero trace id, all-zero span id */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        /* upper-case hex */
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        /* version ff, bad version, version 00 with extra fields */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        /* short ids, wrong separators, bad flags, truncated */
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-",
        /* a later version whose next field is not separated by '-' */
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
    };
    struct otlp_ctx c = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (otlp_traceparent_parse(bad[i], &c))
            fail_msg("accepted: %s", bad[i]);
    }
}

static bool lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return strspn(s, "0") < n;
}

static void test_ids_and_url(void **state)
{
    char a[33], b[33], s[17];
    char *u;

    (void)state;
    otlp_new_id(a, 32);
    otlp_new_id(b, 32);
    otlp_new_id(s, 16);
    assert_true(lower_hex(a, 32));
    assert_true(lower_hex(b, 32));
    assert_true(lower_hex(s, 16));
    assert_string_not_equal(a, b);

    static const char *const cases[][2] = {
        {"http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"},
        {"http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"},
        {"http://collector/otlp", "http://collector/otlp/v1/traces"},
        {"http://collector/v1/traces", "http://collector/v1/traces"},
        {"https://collector/v1/traces/", "https://collector/v1/traces"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        u = otlp_traces_url(cases[i][0]);
        assert_string_equal(u, cases[i][1]);
        free(u);
    }
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    if (!v)
        fail_msg("missing %s", k);
    return v;
}

/* The value object of attribute 'key' in an OTLP attribute list, or NULL. */
static const cJSON *attr_value(const cJSON *attrs, const char *key)
{
    const cJSON *a;

    cJSON_ArrayForEach(a, attrs)
    {
        if (!strcmp(cJSON_GetStringValue(get(a, "key")), key))
            return get(a, "value");
    }
    return NULL;
}

static void test_span_json(void **state)
{
    struct otlp_ctx c = {.trace_id = "0af7651916cd43dd8448eb211c80319c",
                         .span_id = "00f067aa0ba902b7",
                         .parent_id = "b7ad6b7169203331",
                         .flags = 1};
    long long t0 = 1700000000123456789LL;

    (void)state;
    struct otlp_span *s = otlp_span_begin(&c, "chat \"moa\"", OTLP_SERVER, t0, t0 + 5000);
    otlp_attr_str(s, "optillm.approach", "moa");
    otlp_attr_str(s, "skipped", NULL);
    otlp_attr_int(s, "gen_ai.usage.input_tokens", 9007199254740993LL); /* > 2^53: a string */
    otlp_attr_double(s, "x.ratio", 0.25);
    otlp_attr_bool(s, "x.flag", true);
    otlp_span_status(s, 2, "HTTP 502");
    char *j1 = otlp_span_json(s);

    /* a root client span: no parentSpanId; an end before the start is clamped */
    struct otlp_ctx r = {.trace_id = "0af7651916cd43dd8448eb211c80319c",
                         .span_id = "1111111111111111"};
    s = otlp_span_begin(&r, "chat gpt-4o", OTLP_CLIENT, t0, t0 - 1);
    otlp_span_status(s, 1, NULL);
    char *j2 = otlp_span_json(s);

    char *const spans[] = {j1, j2};
    char *batch = otlp_batch_json(spans, 2);
    cJSON *root = cJSON_Parse(batch);
    assert_non_null(root);

    const cJSON *rs = cJSON_GetArrayItem(get(root, "resourceSpans"), 0);
    const cJSON *res_attrs = get(get(rs, "resource"), "attributes");
    assert_string_equal(
        cJSON_GetStringValue(get(attr_value(res_attrs, "service.name"), "stringValue")),
        "optillm-c");
    const cJSON *ss = cJSON_GetArrayItem(get(rs, "scopeSpans"), 0);
    assert_string_equal(cJSON_GetStringValue(get(get(ss, "scope"), "name")), "optillm-c");
    const cJSON *arr = get(ss, "spans");
    assert_int_equal(cJSON_GetArraySize(arr), 2);

    const cJSON *a = cJSON_GetArrayItem(arr, 0);
    assert_string_equal(cJSON_GetStringValue(get(a, "traceId")), c.trace_id);
    assert_string_equal(cJSON_GetStringValue(get(a, "spanId")), c.span_id);
    assert_string_equal(cJSON_GetStringValue(get(a, "parentSpanId")), c.parent_id);
    assert_string_equal(cJSON_GetStringValue(get(a, "name")), "chat \"moa\"");
    assert_int_equal(get(a, "kind")->valueint, 2);
    assert_string_equal(cJSON_GetStringValue(get(a, "startTimeUnixNano")), "1700000000123456789");
    assert_string_equal(cJSON_GetStringValue(get(a, "endTimeUnixNano")), "1700000000123461789");
    const cJSON *attrs = get(a, "attributes");
    assert_int_equal(cJSON_GetArraySize(attrs), 4); /* the NULL string was skipped */
    assert_string_equal(
        cJSON_GetStringValue(get(attr_value(attrs, "optillm.approach"), "stringValue")), "moa");
    assert_string_equal(
        cJSON_GetStringValue(get(attr_value(attrs, "gen_ai.usage.input_tokens"), "intValue")),
        "9007199254740993");
    assert_true(get(attr_value(attrs, "x.ratio"), "doubleValue")->valuedouble == 0.25);
    assert_true(cJSON_IsTrue(get(attr_value(attrs, "x.flag"), "boolValue")));
    assert_int_equal(get(get(a, "status"), "code")->valueint, 2);
    assert_string_equal(cJSON_GetStringValue(get(get(a, "status"), "message")), "HTTP 502");

    const cJSON *b = cJSON_GetArrayItem(arr, 1);
    assert_null(cJSON_GetObjectItemCaseSensitive(b, "parentSpanId"));
    assert_int_equal(get(b, "kind")->valueint, 3);
    assert_string_equal(cJSON_GetStringValue(get(b, "endTimeUnixNano")), "1700000000123456789");
    assert_int_equal(get(get(b, "status"), "code")->valueint, 1);
    assert_null(cJSON_GetObjectItemCaseSensitive(get(b, "status"), "message"));

    cJSON_Delete(root);
    free(batch);
    cJSON_free(j1);
    cJSON_free(j2);

    /* an empty batch is still a valid request */
    batch = otlp_batch_json(NULL, 0);
    root = cJSON_Parse(batch);
    assert_non_null(root);
    rs = cJSON_GetArrayItem(get(root, "resourceSpans"), 0);
    ss = cJSON_GetArrayItem(get(rs, "scopeSpans"), 0);
    assert_int_equal(cJSON_GetArraySize(get(ss, "spans")), 0);
    cJSON_Delete(root);
    free(batch);
}

/* Off (no otlp_start): ending a span frees it and counts nothing. */
static void test_off(void **state)
{
    struct otlp_ctx c = {.trace_id = "0af7651916cd43dd8448eb211c80319c",
                         .span_id = "00f067aa0ba902b7"};

    (void)state;
    assert_false(otlp_on);
    otlp_span_end(otlp_span_begin(&c, "x", OTLP_SERVER, 1, 2));
    assert_int_equal(otlp_dropped(), 0);
}

/* A receiver that accepts connections (the kernel's backlog) but never answers: the exporter
 * hangs in its 2 s timeout with one batch while requests keep ending spans. The queue keeps
 * 4096, drops the rest at once (counted, without waiting), and at shutdown what the dead
 * receiver could not take is dropped too. */
static void test_queue_full(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char ep[64];
    struct otlp_ctx c = {.trace_id = "0af7651916cd43dd8448eb211c80319c",
                         .span_id = "00f067aa0ba902b7"};

    (void)state;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", ntohs(sa.sin_port));
    assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), 0);
    assert_int_equal(otlp_start(ep), 0);
    assert_true(otlp_on);

    unsigned long long d0 = otlp_dropped();
    otlp_span_end(otlp_span_begin(&c, "first", OTLP_SERVER, 1, 2));
    nanosleep(&(struct timespec){1, 300000000L}, NULL); /* taken at 1 s, now hanging */
    long long t0 = px_now_us();
    for (int i = 0; i < OTLP_QUEUE_MAX + 100; i++)
        otlp_span_end(otlp_span_begin(&c, "more", OTLP_CLIENT, 1, 2));
    long long took = px_now_us() - t0;
    printf("# %d spans ended in %.1f ms with the exporter stuck\n", OTLP_QUEUE_MAX + 100,
           (double)took / 1000);
    assert_int_equal(otlp_dropped() - d0, 100);
    assert_true(took < 600000); /* never waits for the exporter (generous for slow machines) */

    struct buf m;
    buf_init(&m, 0);
    otlp_metrics_render(&m);
    assert_non_null(strstr(buf_cstr(&m), "\noptillm_otlp_spans_dropped_total 100\n"));
    buf_free(&m);

    otlp_stop(); /* the hung batch times out; the rest is dropped, not sent one by one */
    assert_false(otlp_on);
    assert_int_equal(otlp_dropped() - d0, OTLP_QUEUE_MAX + 101);
    close(fd);
    curl_global_cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_valid),
        cmocka_unit_test(test_traceparent_invalid),
        cmocka_unit_test(test_ids_and_url),
        cmocka_unit_test(test_span_json),
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_queue_full),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
