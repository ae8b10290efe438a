/* itest_hostile.c: the real build/optillm against a hostile upstream (the mock's cut,
 * ignore_stream, errbody200, nolastnl, hdr, ratelimit and usage_huge options): broken streams
 * are not taken for answers, headers are relayed, ceilings hold. One test per defect of the
 * adversarial review (issue 10, items 3, 4, 7, 8, 9, 10 and 12's back-pressure). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define KEY "sk-hostile-test-key"

static struct proc mock;
static struct proc proxy;
static const char *const auth[] = {"Authorization: Bearer " KEY, NULL};
static const char *const client_keys[] = {"--client-keys", "--retries", "0", NULL};

static int setup(void **state)
{
    (void)state;
    harness_deadline(300);
    if (mock_start(&mock, NULL) != 0)
        return -1;
    return proxy_start(&proxy, mock.port, client_keys, NULL);
}

static int teardown(void **state)
{
    (void)state;
    int a = proc_stop(&proxy), b = proc_stop(&mock);

    return a == 0 && b == 0 ? 0 : -1;
}

/* POST /v1/chat/completions to the shared proxy. */
static void chat(const char *model, const char *extra, struct http_resp *r)
{
    char *body = chat_body(model, "hello hostile world", extra);

    assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, auth, r), 0);
    free(body);
}

static const char stream_usage[] = "\"stream\":true,\"stream_options\":{\"include_usage\":true}";

/* ---- item 7: an approach's streamed final stage ---- */

/* A stream cut after a few events (cleanly, or mid-line) is an error, never an answer. */
static void test_final_stream_cut_is_error(void **state)
{
    static const char *const models[] = {"re2-mock@cut=3", "re2-mock@cut=3,cut_mid=1",
                                         "re2-mock@cut=3,cut_abort=1"};
    (void)state;
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        struct http_resp r;

        chat(models[i], stream_usage, &r);
        assert_int_equal(r.status, 200); /* the stream had begun */
        if (!strstr(r.body, "upstream stream interrupted"))
            fprintf(stderr, "%s: %s\n", models[i], r.body);
        assert_non_null(strstr(r.body, "upstream stream interrupted"));
        assert_null(strstr(r.body, "\"finish_reason\":\"stop\""));
        http_resp_free(&r);
    }
}

/* An upstream that ignores stream:true and answers JSON: the answer is used. */
static void test_final_stream_json_answer(void **state)
{
    struct http_resp r;

    (void)state;
    chat("re2-mock@ignore_stream=1", stream_usage, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "mock reply 0"));
    assert_non_null(strstr(r.body, "\"finish_reason\":\"stop\""));
    assert_non_null(strstr(r.body, "\"prompt_tokens\":"));
    assert_null(strstr(r.body, "\"prompt_tokens\":0"));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
}

/* 200 with an error body: an error, streamed or not. */
static void test_final_error_body_200(void **state)
{
    struct http_resp r;

    (void)state;
    chat("re2-mock@errbody200=1", stream_usage, &r);
    assert_non_null(strstr(r.body, "mock error in a 200 body"));
    assert_null(strstr(r.body, "\"finish_reason\":\"stop\""));
    http_resp_free(&r);
    chat("re2-mock@errbody200=1", NULL, &r);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(r.body, "mock error in a 200 body"));
    http_resp_free(&r);
}

/* The last line without a newline (and no [DONE]): kept, so the usage is not lost. */
static void test_final_stream_last_line_kept(void **state)
{
    struct http_resp r;

    (void)state;
    chat("re2-mock@nolastnl=1", stream_usage, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"finish_reason\":\"stop\""));
    assert_null(strstr(r.body, "\"error\""));
    /* re2 makes one call: the client's usage is that call's, not 0 */
    assert_non_null(strstr(r.body, "\"usage\":{\"prompt_tokens\":"));
    assert_null(strstr(r.body, "\"prompt_tokens\":0"));
    http_resp_free(&r);
}

/* ---- item 9: a passthrough stream cut mid-line ---- */

/* The partial event is ended before the in-band error, which says what happened. */
static void test_passthrough_cut_mid_line(void **state)
{
    static const char *const models[] = {"mock@cut=3,cut_mid=1,cut_abort=1",
                                         "mock@cut=3,cut_mid=1"};
    (void)state;
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        struct http_resp r;
        const char *err;

        chat(models[i], stream_usage, &r);
        assert_int_equal(r.status, 200);
        err = strstr(r.body, "data: {\"error\"");
        if (!err)
            fprintf(stderr, "%s: %s\n", models[i], r.body);
        assert_non_null(err);
        assert_true(err - r.body >= 2 && err[-1] == '\n' && err[-2] == '\n');
        assert_non_null(strstr(err, "upstream stream interrupted"));
        /* every event the client sees is whole JSON or [DONE] (the cut one is ended) */
        assert_non_null(strstr(r.body, "\n\ndata: {\"error\""));
        http_resp_free(&r);
    }
}

/* A relayed stream that ends properly is untouched (no error event). */
static void test_passthrough_stream_intact(void **state)
{
    struct http_resp r;

    (void)state;
    chat("mock", stream_usage, &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"error\""));
    assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
    http_resp_free(&r);
}

/* ---- item 8: n support ---- */

/* How many of the mock's logged requests asked for n = want. */
static int mock_calls_with_n(int want)
{
    cJSON *log = mock_get(mock.port, "/mock/requests");
    const cJSON *e;
    int count = 0;

    assert_non_null(log);
    cJSON_ArrayForEach(e, log)
    {
        const cJSON *n =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "body"), "n");

        if (cJSON_IsNumber(n) && n->valueint == want)
            count++;
    }
    cJSON_Delete(log);
    return count;
}

/* A 400 about tool_choice is not a refusal of n: the next request still asks for n=3. A real
 * refusal (llama.cpp's message) is remembered for this upstream. */
static void test_n_support_not_switched_off_by_tool_choice(void **state)
{
    struct http_resp r;

    (void)state;
    mock_reset(mock.port);
    chat("bon-mock@status=400,errmsg=Invalid%20value%20for%20tool_choice", NULL, &r);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    mock_reset(mock.port);
    chat("bon-mock", NULL, &r);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(mock_calls_with_n(3), 1); /* one n=3 call, not 3 single calls */
}

/* n support learnt by one instance reaches another through Redis (--redis-url): the second
 * instance's first request to an upstream that refuses n makes no n=3 call. */
static void test_n_support_shared_through_redis(void **state)
{
    struct proc redis, a, b;
    struct http_resp r;
    char url[128], prefix[64];
    const char *env[] = {url, NULL};
    const char *args[] = {"--client-keys", "--retries", "0", "--redis-prefix", prefix, NULL};
    char *body = chat_body("bon-mock@n_mode=refuse", "What is 2 + 2?", NULL);

    (void)state;
    if (access("/usr/bin/redis-server", X_OK) != 0 || redis_start(&redis, 0, NULL) != 0)
        skip();
    snprintf(url, sizeof(url), "OPTILLM_REDIS_URL=redis://127.0.0.1:%d/3", redis.port);
    snprintf(prefix, sizeof(prefix), "hostile%d:", (int)getpid());
    assert_int_equal(proxy_start(&a, mock.port, args, env), 0);
    assert_int_equal(proxy_start(&b, mock.port, args, env), 0);
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", a.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(mock_calls_with_n(3), 1); /* A asked, was refused, and learnt it */
    for (int i = 0; i < 20; i++) {             /* the shared write is asynchronous */
        struct timespec ts = {0, 50 * 1000000L};

        nanosleep(&ts, NULL);
    }
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", b.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(mock_calls_with_n(3), 0); /* B knew it from A */
    free(body);
    assert_int_equal(proc_stop(&a), 0);
    assert_int_equal(proc_stop(&b), 0);
    proc_stop(&redis);
}

/* ---- item 3: amplification ceilings ---- */

/* The review's request: n=8 x mars with optillm_mars_max_calls=200. The option is over the
 * client maximum (64): 400, and no upstream call is made. */
static void test_amplification_option_refused(void **state)
{
    struct http_resp r;

    (void)state;
    mock_reset(mock.port);
    chat("mars-mock", "\"n\":8,\"optillm_mars_max_calls\":200", &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "optillm_mars_max_calls"));
    http_resp_free(&r);
    chat("re2-mock", "\"n\":17", &r); /* n x approaches above 16 */
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
    chat("z3-mock", "\"optillm_z3_timeout_ms\":60000", &r); /* accepted, but only lowers */
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
}

/* Within the client maxima, the request's call ceiling holds over all n runs. */
static void test_amplification_call_ceiling(void **state)
{
    static const char *const args[] = {"--client-keys", "--max-request-calls", "20", NULL};
    struct proc p;
    struct http_resp r;
    char *body = chat_body("mars-mock", "What is 2 + 3?", "\"n\":8,\"optillm_mars_max_calls\":64");

    (void)state;
    assert_int_equal(proxy_start(&p, mock.port, args, NULL), 0);
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", p.port, "/v1/chat/completions", body, auth, &r), 0);
    free(body);
    fprintf(stderr, "n=8 x mars, ceiling 20: status %ld, %ld upstream calls\n", r.status,
            mock_stat(mock.port, "calls"));
    assert_true(mock_stat(mock.port, "calls") <= 20);
    assert_true(mock_stat(mock.port, "calls") >= 8);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&p), 0);
}

/* The token ceiling (set by environment): once the calls finished report more tokens than
 * allowed, no further call begins. */
static void test_amplification_token_ceiling(void **state)
{
    static const char *const env[] = {"OPTILLM_MAX_REQUEST_TOKENS=1000", NULL};
    struct proc p;
    struct http_resp r;
    char *body = chat_body("bon-mock@usage_huge=600", "hello", NULL);

    (void)state;
    assert_int_equal(proxy_start(&p, mock.port, client_keys, env), 0);
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", p.port, "/v1/chat/completions", body, auth, &r), 0);
    free(body);
    /* bon: one n=3 sampling call reports 1200 tokens; its 3 rating calls never begin */
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&p), 0);
}

/* ---- item 10: upstream headers ---- */

static void expect_header(const struct http_resp *r, const char *name, const char *want)
{
    char v[256];

    if (!http_header(r, name, v, sizeof(v)))
        fprintf(stderr, "missing %s in:\n%s\n", name, r->headers);
    assert_true(http_header(r, name, v, sizeof(v)));
    if (want)
        assert_string_equal(v, want);
}

/* A passthrough 429 keeps the upstream's Retry-After and rate-limit headers; the upstream's
 * request id comes as X-Upstream-Request-Id, ours stays X-Request-Id; other headers stay out. */
static void test_headers_passthrough_429(void **state)
{
    struct http_resp r;
    char v[128];

    (void)state;
    chat("mock@status=429,retry_after=7,ratelimit=1,hdr=X-Evil:1,hdr=Set-Cookie:a%3Db", NULL, &r);
    assert_int_equal(r.status, 429);
    expect_header(&r, "Retry-After", "7");
    expect_header(&r, "x-ratelimit-remaining-requests", "99");
    expect_header(&r, "x-ratelimit-reset-tokens", "6ms");
    expect_header(&r, "openai-processing-ms", "5");
    expect_header(&r, "X-Upstream-Request-Id", NULL);
    assert_true(http_header(&r, "X-Upstream-Request-Id", v, sizeof(v)));
    assert_true(strncmp(v, "mock-req-", 9) == 0);
    assert_true(http_header(&r, "X-Request-Id", v, sizeof(v)));
    assert_true(strncmp(v, "mock-req-", 9) != 0);
    assert_false(http_header(&r, "X-Evil", v, sizeof(v)));
    assert_false(http_header(&r, "Set-Cookie", v, sizeof(v)));
    http_resp_free(&r);
}

/* Successful answers, JSON and streamed, carry the rate-limit headers too. */
static void test_headers_passthrough_ok(void **state)
{
    struct http_resp r;

    (void)state;
    chat("mock@ratelimit=1", NULL, &r);
    assert_int_equal(r.status, 200);
    expect_header(&r, "x-ratelimit-limit-requests", "100");
    http_resp_free(&r);
    chat("mock@ratelimit=1", stream_usage, &r);
    assert_int_equal(r.status, 200);
    expect_header(&r, "x-ratelimit-limit-tokens", "50000");
    expect_header(&r, "X-Upstream-Request-Id", NULL);
    http_resp_free(&r);
}

/* An approach whose calls get 429 answers 429 with the upstream's Retry-After. */
static void test_headers_approach_429(void **state)
{
    struct http_resp r;

    (void)state;
    chat("re2-mock@status=429,retry_after=7", NULL, &r);
    assert_int_equal(r.status, 429);
    expect_header(&r, "Retry-After", "7");
    http_resp_free(&r);
}

/* The body field "headers" of the mock's request log entry 'i' (from the end). */
static char *logged_header(int back, const char *name)
{
    cJSON *log = mock_get(mock.port, "/mock/requests");
    int n = cJSON_GetArraySize(log);
    const cJSON *h =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(log, n - 1 - back), "headers");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(h, name);
    char *out = cJSON_IsString(v) ? strdup(v->valuestring) : NULL;

    cJSON_Delete(log);
    return out;
}

/* OpenAI-Organization and OpenAI-Project go upstream with the client's own key (never to pick
 * an organisation of the server's key); OpenAI-Beta always; passthrough and approach calls. */
static void test_headers_forwarded_upstream(void **state)
{
    static const char *const hdrs[] = {"Authorization: Bearer " KEY, "OpenAI-Organization: org-1",
                                       "OpenAI-Project: proj-1", "OpenAI-Beta: assistants=v2",
                                       NULL};
    static const char *const env[] = {"OPENAI_API_KEY=sk-server-hostile", NULL};
    static const char *const args[] = {"--retries", "0", NULL};
    const char *models[] = {"mock", "re2-mock"};
    struct http_resp r;
    struct proc p;
    char *v;

    (void)state;
    for (int i = 0; i < 2; i++) {
        char *body = chat_body(models[i], "hi", NULL);

        assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, hdrs, &r), 0);
        assert_int_equal(r.status, 200);
        http_resp_free(&r);
        free(body);
        assert_non_null(v = logged_header(0, "openai-organization"));
        assert_string_equal(v, "org-1");
        free(v);
        assert_non_null(v = logged_header(0, "openai-project"));
        assert_string_equal(v, "proj-1");
        free(v);
        assert_non_null(v = logged_header(0, "openai-beta"));
        free(v);
    }
    /* the server's key: no organisation or project from the client */
    assert_int_equal(proxy_start(&p, mock.port, args, env), 0);
    {
        char *body = chat_body("mock", "hi", NULL);

        assert_int_equal(http_req("POST", p.port, "/v1/chat/completions", body, hdrs + 1, &r), 0);
        free(body);
    }
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_null(logged_header(0, "openai-organization"));
    assert_null(logged_header(0, "openai-project"));
    assert_non_null(v = logged_header(0, "openai-beta"));
    free(v);
    assert_int_equal(proc_stop(&p), 0);
}

/* ---- item 12 (last point): an approach stream to a reader that does not read ---- */

/* A client that sends its request and then reads nothing: the proxy's buffer for it is capped
 * (8 MiB), then the client is dropped and its upstream work cancelled. */
static void test_slow_reader_dropped(void **state)
{
    char *body = chat_body("re2-mock@words=100000", "hello", "\"stream\":true");
    char req[1024];
    int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)proxy.port)};
    bool dropped = false;
    size_t got = 0;
    char buf[65536];
    ssize_t n;

    (void)state;
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    snprintf(req, sizeof(req),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " KEY
             "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
             strlen(body));
    assert_true(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    assert_true(write(fd, body, strlen(body)) == (ssize_t)strlen(body));
    free(body);
    for (int i = 0; i < 300 && !dropped; i++) { /* up to 30 s */
        struct timespec ts = {0, 100 * 1000000L};

        nanosleep(&ts, NULL);
        dropped = file_contains(proxy.log, "client reads too slowly");
    }
    assert_true(dropped);
    /* what the client can still read is far less than the whole answer (19 MB), no [DONE] */
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        got += (size_t)n;
    close(fd);
    fprintf(stderr, "slow reader: dropped, %zu bytes reached it\n", got);
    assert_true(got < 14u << 20);
}

/* ---- item 4: z3 solves in a sandboxed child ---- */

/* "z3-mock@reply=<a fenced SMT-LIB script factoring a 16000-bit number>", URL-encoded: a
 * problem that grows without bound in memory and time. Malloc'd. */
static char *z3_hard_model(void)
{
    struct {
        char *p;
        size_t len;
    } s = {malloc(20000), 0};
    char *model = malloc(80000);
    size_t m;
    unsigned x = 12345;

    s.len = (size_t)sprintf(s.p, "```smt2\n(declare-const a (_ BitVec 16000))\n"
                                 "(declare-const b (_ BitVec 16000))\n(assert (= (bvmul a b) #x");
    for (int i = 0; i < 4000; i++) {
        x = x * 1103515245u + 12345u;
        s.p[s.len++] = "0123456789abcdef"[i == 3999 ? 1 : (x >> 16) & 15];
    }
    s.len += (size_t)sprintf(s.p + s.len, "))\n(assert (bvugt a (_ bv1 16000)))\n"
                                          "(assert (bvugt b (_ bv1 16000)))\n(check-sat)\n```");
    m = (size_t)sprintf(model, "z3-mock@reply=");
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            model[m++] = (char)c;
        else
            m += (size_t)sprintf(model + m, "%%%02X", c);
    }
    model[m] = '\0';
    free(s.p);
    return model;
}

/* The final prompt the mock received last (the solver's result is in it). */
static char *last_user_content(void)
{
    cJSON *log = mock_get(mock.port, "/mock/requests");
    const cJSON *last = cJSON_GetArrayItem(log, cJSON_GetArraySize(log) - 1);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(last, "body"), "messages");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1), "content");
    char *out = strdup(cJSON_IsString(c) ? c->valuestring : "");

    cJSON_Delete(log);
    return out;
}

/* A ThreadSanitizer build runs sandboxed work in-process, without limits (src/forkrun.c). */
static void skip_without_fork(void)
{
    const char *b = getenv("PX_BUILD");
    const char *w = getenv("PX_WRAPPER");

    if (b && strstr(b, "thread"))
        skip();
    if (w && *w) /* valgrind: its own address space counts against RLIMIT_AS */
        skip();
}

/* Runs the hard script on a proxy started with 'args'; returns seconds taken. */
static double z3_hard_run(const char *const *args, const char *extra)
{
    struct proc p;
    struct http_resp r;
    char *model = z3_hard_model();
    char *body = chat_body(model, "factor it", extra);
    char *final;
    double secs;

    assert_int_equal(proxy_start(&p, mock.port, args, NULL), 0);
    assert_int_equal(http_req("POST", p.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200); /* answered, the check reported as failed */
    secs = r.total_s;
    http_resp_free(&r);
    final = last_user_content();
    if (!strstr(final, "result: unknown"))
        fprintf(stderr, "final prompt: %.3000s\n", final);
    assert_non_null(strstr(final, "result: unknown"));
    free(final);
    assert_int_equal(http_req("GET", p.port, "/health", NULL, NULL, &r), 0); /* alive */
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&p), 0);
    free(body);
    free(model);
    return secs;
}

/* A problem that needs more memory than the solve may have: stopped by the memory limit long
 * before its time limit; the request is answered and the proxy stays up. */
static void test_z3_memory_contained(void **state)
{
    static const char *const args[] = {
        "--client-keys", "--z3-timeout-ms", "20000", "--z3-memory-mb", "48", NULL};
    double secs;

    (void)state;
    skip_without_fork();
    secs = z3_hard_run(args, NULL);
    fprintf(stderr, "z3 at a 48 MiB limit: answered in %.2f s (time limit 20 s)\n", secs);
    assert_true(secs < 15);
}

/* The time limit is the server's: a request asking for 60 s gets the server's 1 s. */
static void test_z3_timeout_server_side(void **state)
{
    static const char *const args[] = {"--client-keys", "--z3-timeout-ms", "1000", NULL};
    double secs;

    (void)state;
    skip_without_fork();
    secs = z3_hard_run(args, "\"optillm_z3_timeout_ms\":60000");
    fprintf(stderr, "z3 at a 1 s server limit, 60 s asked: answered in %.2f s\n", secs);
    assert_true(secs < 10);
}

/* A tenant's max_calls_per_request may lower the request's call ceiling, never raise it. */
static void test_amplification_tenant_cannot_raise(void **state)
{
    static const char tkey[] = "tenant-hostile-key-1";
    char path[256], dig[65], args_path[300];
    unsigned char d[32];
    struct proc p;
    struct http_resp r;
    FILE *f;
    const char *hdr[] = {"Authorization: Bearer tenant-hostile-key-1", NULL};
    char *body = chat_body("mars-mock", "What is 2 + 3?", NULL);

    (void)state;
    SHA256((const unsigned char *)tkey, strlen(tkey), d);
    for (int i = 0; i < 32; i++)
        snprintf(dig + 2 * i, 3, "%02x", d[i]);
    snprintf(path, sizeof(path), "/tmp/itest_hostile_tenants_%d.json", (int)getpid());
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"tenants\":[{\"name\":\"big\",\"key_sha256\":\"%s\","
            "\"limits\":{\"max_calls_per_request\":500}}]}",
            dig);
    fclose(f);
    snprintf(args_path, sizeof(args_path), "%s", path);
    const char *args[] = {"--tenants", args_path, "--max-request-calls", "10", NULL};
    static const char *const env[] = {"OPENAI_API_KEY=sk-server-hostile", NULL};

    assert_int_equal(proxy_start(&p, mock.port, args, env), 0);
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", p.port, "/v1/chat/completions", body, hdr, &r), 0);
    free(body);
    assert_true(mock_stat(mock.port, "calls") <= 10);
    assert_true(mock_stat(mock.port, "calls") >= 3);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&p), 0);
    unlink(path);
}

/* The client header allowance (PX_MAX_HEADER_BYTES, 8 KiB): a 7.6 KB block of 100 headers is
 * served; 200 of them (15 KB) are refused with 431 and the connection closed, and the proxy
 * answers the next request. libmicrohttpd's per-connection pool (twice the allowance) is what
 * enforces this: a 10 KiB pool refused the first block. */
static void test_header_allowance(void **state)
{
    static char lines[200][96];
    const char *hdrs[202];
    struct http_resp r;
    char *body = chat_body("gpt-x", "hello hostile world", NULL);

    (void)state;
    hdrs[0] = auth[0];
    for (int i = 0; i < 200; i++) {
        snprintf(lines[i], sizeof(lines[i]), "X-Filler-%03d: %060d", i, 0);
        hdrs[i + 1] = lines[i];
    }
    hdrs[101] = NULL; /* 100 of them */
    assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, hdrs, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    hdrs[101] = lines[100];
    hdrs[201] = NULL; /* all 200 */
    assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, hdrs, &r), 0);
    assert_int_equal(r.status, 431);
    assert_non_null(strstr(r.headers, "Connection: close"));
    http_resp_free(&r);
    assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_final_stream_cut_is_error),
        cmocka_unit_test(test_final_stream_json_answer),
        cmocka_unit_test(test_final_error_body_200),
        cmocka_unit_test(test_final_stream_last_line_kept),
        cmocka_unit_test(test_passthrough_cut_mid_line),
        cmocka_unit_test(test_passthrough_stream_intact),
        cmocka_unit_test(test_n_support_not_switched_off_by_tool_choice),
        cmocka_unit_test(test_n_support_shared_through_redis),
        cmocka_unit_test(test_amplification_option_refused),
        cmocka_unit_test(test_amplification_call_ceiling),
        cmocka_unit_test(test_amplification_token_ceiling),
        cmocka_unit_test(test_amplification_tenant_cannot_raise),
        cmocka_unit_test(test_headers_passthrough_429),
        cmocka_unit_test(test_headers_passthrough_ok),
        cmocka_unit_test(test_headers_approach_429),
        cmocka_unit_test(test_headers_forwarded_upstream),
        cmocka_unit_test(test_slow_reader_dropped),
        cmocka_unit_test(test_header_allowance),
        cmocka_unit_test(test_z3_memory_contained),
        cmocka_unit_test(test_z3_timeout_server_side),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
