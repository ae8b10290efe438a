/* itest_proxy.c: the real build/optillm against the mock upstream over loopback: endpoints,
 * passthrough (body, streaming chunk timing), the key tables row by row, every error row. */
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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define CLIENT_KEY_A "sk-clientA-LEAKCHECK-7f3a9c21"
#define CLIENT_KEY_B "sk-clientB-LEAKCHECK-90be44d7"
#define SERVER_KEY   "sk-server-LEAKCHECK-51c0ffee"
#define GATE_KEY     "gate-LEAKCHECK-2bd6a1e0"
#define OWN_KEY      "own-LEAKCHECK-c4f00d11"

static struct proc mock;
static char logs[32][512]; /* every proxy log, grepped for keys at the end */
static int nlogs;

static void start_proxy(struct proc *p, const char *const *args, const char *const *env)
{
    assert_int_equal(proxy_start(p, mock.port, args, env), 0);
    if (nlogs < 32)
        snprintf(logs[nlogs++], sizeof(logs[0]), "%s", p->log);
}

static void stop_proxy(struct proc *p)
{
    assert_int_equal(proc_stop(p), 0); /* a clean exit 0 on SIGTERM */
}

static int setup(void **state)
{
    (void)state;
    harness_deadline(300);
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    return proc_stop(&mock) == 0 ? 0 : -1;
}

/* Checks the OpenAI error shape and status; returns the parsed body (caller deletes). */
static cJSON *expect_error(struct http_resp *r, long status)
{
    cJSON *j = http_json(r);
    cJSON *e;

    if (r->status != status)
        fprintf(stderr, "unexpected status %ld (want %ld): %s\n", r->status, status, r->body);
    assert_int_equal(r->status, status);
    assert_non_null(j);
    e = cJSON_GetObjectItemCaseSensitive(j, "error");
    assert_true(cJSON_IsObject(e));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type")));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(e, "param"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(e, "code"));
    return j;
}

static const char *err_message(cJSON *j)
{
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "message")
        ->valuestring;
}

/* The Authorization value the mock saw on its last chat request. */
static char *last_auth(void)
{
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    int n = cJSON_GetArraySize(reqs);
    cJSON *last = cJSON_GetArrayItem(reqs, n - 1);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(last, "auth");
    char *s = strdup(cJSON_IsString(a) ? a->valuestring : "<none>");

    cJSON_Delete(reqs);
    return s;
}

/* ---- endpoints ---------------------------------------------------------------------------------
 */

static void test_health_and_keepalive(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *args[] = {"--optillm-api-key", GATE_KEY, NULL};
    char v[64];

    (void)state;
    start_proxy(&px, args, NULL);
    /* /health needs no key even behind a gate. */
    assert_int_equal(http_req("GET", px.port, "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_false(http_header(&r, "Connection", v, sizeof(v)) && strcasecmp(v, "close") == 0);
    assert_true(http_header(&r, "X-Request-Id", v, sizeof(v)));
    http_resp_free(&r);
    /* A sane client request id is kept. */
    const char *h[] = {"X-Request-Id: my-trace.42", NULL};
    assert_int_equal(http_req("GET", px.port, "/health", NULL, h, &r), 0);
    assert_true(http_header(&r, "X-Request-Id", v, sizeof(v)));
    assert_string_equal(v, "my-trace.42");
    http_resp_free(&r);
    stop_proxy(&px);
}

static void test_models_passthrough(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};

    (void)state;
    start_proxy(&px, NULL, NULL);
    mock_reset(mock.port);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(http_req("GET", px.port, i ? "/models" : "/v1/models", NULL, h, &r), 0);
        assert_int_equal(r.status, 200);
        cJSON *j = http_json(&r);
        cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
        assert_int_equal(cJSON_GetArraySize(data), 2);
        assert_string_equal(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(data, 0), "id")->valuestring,
            "mock-model");
        cJSON_Delete(j);
        http_resp_free(&r);
    }
    assert_int_equal(mock_stat(mock.port, "models_calls"), 2);
    /* Our own list of approaches. */
    assert_int_equal(http_req("GET", px.port, "/v1/approaches", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"id\":\"moa\""));
    assert_non_null(strstr(r.body, "\"id\":\"self_consistency\""));
    http_resp_free(&r);
    stop_proxy(&px);
}

/* ---- passthrough -------------------------------------------------------------------------------
 */

static void test_passthrough_body_unchanged(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    /* Unknown fields, tools, big seed, n: everything must reach the upstream byte for byte. */
    const char *body =
        "{\"model\":\"gpt-x\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},{\"type\":"
        "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],"
        "\"response_format\":{\"type\":\"json_object\"},\"seed\":12345678901234567890,"
        "\"user\":\"u1\",\"logprobs\":true,\"n\":2,\"temperature\":0.25,\"x_vendor\":[1,2.50]}";

    (void)state;
    start_proxy(&px, NULL, NULL);
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *j = http_json(&r);
    /* The upstream's body as is: its id, its usage, n choices. */
    assert_non_null(strstr(cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring, "mockcmpl-"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "choices")), 2);
    cJSON_Delete(j);
    http_resp_free(&r);
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    cJSON *sent = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "body");
    cJSON *orig = cJSON_Parse(body);
    assert_true(cJSON_Compare(sent, orig, 1));
    cJSON_Delete(orig);
    cJSON_Delete(reqs);
    stop_proxy(&px);
}

static void test_passthrough_rewrites_only_model_and_ours(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    char *body = chat_body("none-gpt-x", "hello <optillm_approach>none</optillm_approach>",
                           "\"optillm_approach\":\"none\",\"top_p\":0.5");

    (void)state;
    start_proxy(&px, NULL, NULL);
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", px.port, "/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    cJSON *sent = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "body");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(sent, "model")->valuestring, "gpt-x");
    assert_null(cJSON_GetObjectItemCaseSensitive(sent, "optillm_approach"));
    assert_true(cJSON_GetObjectItemCaseSensitive(sent, "top_p")->valuedouble == 0.5);
    cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(sent, "messages"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m0, "content")->valuestring, "hello");
    cJSON_Delete(reqs);
    free(body);
    stop_proxy(&px);
}

static void test_passthrough_stream_chunk_by_chunk(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    /* 10 words, 100 ms apart: the upstream needs >= 1.1 s to finish. */
    char *body = chat_body("gpt-x@chunk_delay=100,words=10", "stream me",
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true}");

    (void)state;
    start_proxy(&px, NULL, NULL);
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_true(http_header(&r, "Content-Type", ct, sizeof(ct)));
    assert_non_null(strstr(ct, "text/event-stream"));
    /* The first chunk reached us long before the upstream finished. */
    assert_true(r.total_s > 1.0);
    assert_true(r.first_s < 0.5 + harness_slack());
    assert_true(r.chunks >= 8);
    /* Chunks arrived spread over the stream, not in one burst at the end. */
    assert_true(r.chunk_t[r.chunks / 2] < r.total_s - 0.3);
    assert_non_null(strstr(r.body, "\"usage\":{"));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
    free(body);
    stop_proxy(&px);
}

static void test_upstream_errors_pass_through(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    static const long codes[] = {400, 404, 429, 500, 503};

    (void)state;
    start_proxy(&px, NULL, NULL);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char model[64];

        snprintf(model, sizeof(model), "gpt-x@status=%ld", codes[i]);
        char *body = chat_body(model, "hi", NULL);
        assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
        cJSON *j = expect_error(&r, codes[i]);
        char want[64];
        snprintf(want, sizeof(want), "mock error %ld", codes[i]);
        assert_string_equal(err_message(j), want);
        cJSON_Delete(j);
        http_resp_free(&r);
        free(body);
    }
    /* The same through a stream request. */
    char *body = chat_body("gpt-x@status=429", "hi", "\"stream\":true");
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    cJSON_Delete(expect_error(&r, 429));
    http_resp_free(&r);
    free(body);
    stop_proxy(&px);
}

static void test_upstream_down_and_timeout(void **state)
{
    struct proc px, dead;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    const char *args[] = {"--upstream-timeout", "0.5", NULL};

    (void)state;
    /* A port where nothing listens: start a mock, learn its port, stop it. */
    assert_int_equal(mock_start(&dead, NULL), 0);
    int dead_port = dead.port;
    assert_int_equal(proc_stop(&dead), 0);
    assert_int_equal(proxy_start(&px, dead_port, NULL, NULL), 0);
    snprintf(logs[nlogs++], sizeof(logs[0]), "%s", px.log);
    char *body = chat_body("gpt-x", "hi", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    cJSON *j = expect_error(&r, 502);
    assert_non_null(strstr(err_message(j), "unreachable"));
    cJSON_Delete(j);
    http_resp_free(&r);
    char *sbody = chat_body("moa-gpt-x", "hi", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", sbody, h, &r), 0);
    cJSON_Delete(expect_error(&r, 502));
    http_resp_free(&r);
    free(sbody);
    stop_proxy(&px);

    start_proxy(&px, args, NULL);
    free(body);
    body = chat_body("gpt-x@latency=3000", "hi", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    j = expect_error(&r, 504);
    assert_true(r.total_s < 2.0 + harness_slack());
    cJSON_Delete(j);
    http_resp_free(&r);
    free(body);
    stop_proxy(&px);
}

/* ---- client errors ------------------------------------------------------------------------------
 */

static void test_bad_requests(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    const char *args[] = {"--max-body", "64k", NULL};
    static const struct {
        const char *body;
        const char *param; /* expected error.param, or NULL for null */
    } bad[] = {
        {"{\"model\":\"gpt-x\",\"messages\":[", NULL},
        {"not json at all", NULL},
        {"[1,2,3]", NULL},
        {"{\"model\":\"gpt-x\"}", "messages"},
        {"{\"model\":\"gpt-x\",\"messages\":\"hi\"}", "messages"},
        {"{\"model\":\"gpt-x\",\"messages\":[]}", "messages"},
        {"{\"model\":\"gpt-x\",\"messages\":[{\"content\":\"x\"}]}", "messages.[0]"},
        {"{\"model\":\"gpt-x\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages.[0]"},
        {"{\"model\":7,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model"},
        {"{\"model\":\"x\",\"n\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "n"},
        {"{\"model\":\"x\",\"n\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "n"},
        {"{\"model\":\"x\",\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
         "}",
         "stream"},
        {"{\"model\":\"x\",\"temperature\":\"hot\",\"messages\":[{\"role\":\"user\",\"content\":"
         "\"x\"}]}",
         "temperature"},
        {"{\"model\":\"x\",\"max_tokens\":-3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "max_tokens"},
        {"{\"model\":\"moa&nosuch-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "model"},
        {"{\"model\":\"x\",\"optillm_approach\":\"nosuch\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "optillm_approach"},
        {"{\"model\":\"x\",\"optillm_best_of_n\":\"three\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "optillm_best_of_n"},
        {"{\"model\":\"x\",\"deep\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
         "[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"
         "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         NULL},
    };

    (void)state;
    start_proxy(&px, args, NULL);
    mock_reset(mock.port);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", bad[i].body, h, &r), 0);
        cJSON *j = expect_error(&r, 400);
        const cJSON *p =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "param");
        if (bad[i].param) {
            if (!cJSON_IsString(p) || strcmp(p->valuestring, bad[i].param) != 0)
                fprintf(stderr, "case %zu: param %s, want %s\n", i,
                        cJSON_IsString(p) ? p->valuestring : "null", bad[i].param);
            assert_true(cJSON_IsString(p));
            assert_string_equal(p->valuestring, bad[i].param);
        } else {
            assert_true(cJSON_IsNull(p));
        }
        cJSON_Delete(j);
        http_resp_free(&r);
    }
    /* The unknown-approach message lists the known ones. */
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", bad[15].body, h, &r), 0);
    cJSON *j = http_json(&r);
    assert_non_null(strstr(err_message(j), "self_consistency"));
    cJSON_Delete(j);
    http_resp_free(&r);
    /* None of these reached the upstream. */
    assert_int_equal(mock_stat(mock.port, "calls"), 0);

    /* Too large: 100 KiB against a 64 KiB limit. */
    size_t big = 100 * 1024;
    char *huge = malloc(big + 128);
    int n = snprintf(huge, 128, "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    memset(huge + n, 'a', big);
    snprintf(huge + n + big, 64, "\"}]}");
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", huge, h, &r), 0);
    cJSON_Delete(expect_error(&r, 413));
    http_resp_free(&r);
    free(huge);

    /* Unknown path, wrong method. */
    assert_int_equal(http_req("GET", px.port, "/v1/nothing", NULL, h, &r), 0);
    cJSON_Delete(expect_error(&r, 404));
    http_resp_free(&r);
    assert_int_equal(http_req("GET", px.port, "/v1/chat/completions", NULL, h, &r), 0);
    cJSON_Delete(expect_error(&r, 405));
    http_resp_free(&r);
    assert_int_equal(http_req("DELETE", px.port, "/v1/models", NULL, h, &r), 0);
    cJSON_Delete(expect_error(&r, 405));
    http_resp_free(&r);

    /* Still up. */
    assert_int_equal(http_req("GET", px.port, "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    stop_proxy(&px);
}

static void test_slow_client_timeout(void **state)
{
    struct proc px;
    const char *args[] = {"--idle-timeout", "1", NULL};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char buf[64];

    (void)state;
    start_proxy(&px, args, NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_port = htons((uint16_t)px.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    /* Half a request line, then nothing: the server must drop us after ~1 s. */
    assert_true(write(fd, "POST /v1/chat/comp", 18) == 18);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t got = read(fd, buf, sizeof(buf));
    assert_true(got <= 0); /* closed (0) or reset, not a 5 s receive timeout */
    close(fd);
    stop_proxy(&px);
}

/* ---- keys
 * ------------------------------------------------------------------------------------------ */

struct key_case {
    const char *name;
    const char *args[6];
    const char *env[3];
    const char *headers[3];
    long status;          /* expected proxy status */
    const char *upstream; /* the credential the mock must see, or NULL (no upstream call) */
};

static void test_key_table(void **state)
{
    static const struct key_case cases[] = {
        {"no gate, no server key: the client's Bearer goes upstream",
         {NULL},
         {NULL},
         {"Authorization: Bearer " CLIENT_KEY_A, NULL},
         200,
         "Bearer " CLIENT_KEY_A},
        {"no gate, no server key, no Bearer: 401", {NULL}, {NULL}, {NULL}, 401, NULL},
        {"server key from OPENAI_API_KEY wins over a placeholder Bearer",
         {NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {"Authorization: Bearer sk-no-key", NULL},
         200,
         "Bearer " SERVER_KEY},
        {"server key from --upstream-key, no client header",
         {"--upstream-key", SERVER_KEY, NULL},
         {NULL},
         {NULL},
         200,
         "Bearer " SERVER_KEY},
        {"empty OPENAI_API_KEY counts as unset",
         {NULL},
         {"OPENAI_API_KEY=", NULL},
         {NULL},
         401,
         NULL},
        {"--client-keys without a gate: the client's Bearer wins over the server key",
         {"--client-keys", NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {"Authorization: Bearer " CLIENT_KEY_B, NULL},
         200,
         "Bearer " CLIENT_KEY_B},
        {"--client-keys without a gate, no Bearer: the server key",
         {"--client-keys", NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {NULL},
         200,
         "Bearer " SERVER_KEY},
        {"gate: no key is 401",
         {"--optillm-api-key", GATE_KEY, NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {NULL},
         401,
         NULL},
        {"gate: a wrong key is 401",
         {"--optillm-api-key", GATE_KEY, NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {"Authorization: Bearer " GATE_KEY "x", NULL},
         401,
         NULL},
        {"gate from OPTILLM_API_KEY: the gate key is never forwarded; the server key is",
         {NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, "OPTILLM_API_KEY=" GATE_KEY, NULL},
         {"Authorization: Bearer " GATE_KEY, NULL},
         200,
         "Bearer " SERVER_KEY},
        {"gate + --client-keys: X-Upstream-Api-Key goes upstream",
         {"--optillm-api-key", GATE_KEY, "--client-keys", NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {"Authorization: Bearer " GATE_KEY, "X-Upstream-Api-Key: " OWN_KEY, NULL},
         200,
         "Bearer " OWN_KEY},
        {"gate without --client-keys: X-Upstream-Api-Key is ignored",
         {"--optillm-api-key", GATE_KEY, NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {"Authorization: Bearer " GATE_KEY, "X-Upstream-Api-Key: " OWN_KEY, NULL},
         200,
         "Bearer " SERVER_KEY},
        {"gate, no server key, no X-Upstream-Api-Key: 401 (the gate key is not a provider key)",
         {"--optillm-api-key", GATE_KEY, "--client-keys", NULL},
         {NULL},
         {"Authorization: Bearer " GATE_KEY, NULL},
         401,
         NULL},
        {"Azure-style header",
         {"--upstream-auth-header", "api-key", NULL},
         {"OPENAI_API_KEY=" SERVER_KEY, NULL},
         {NULL},
         200,
         "api-key: " SERVER_KEY},
        {"no sk- heuristics: any Bearer is forwarded",
         {NULL},
         {NULL},
         {"Authorization: Bearer tok-without-prefix-LEAKCHECK", NULL},
         200,
         "Bearer tok-without-prefix-LEAKCHECK"},
    };
    char *body = chat_body("gpt-x", "keys", NULL);
    char *abody = chat_body("re2-gpt-x", "keys", NULL);

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct key_case *c = &cases[i];
        struct proc px;
        struct http_resp r;

        fprintf(stderr, "key case %zu: %s\n", i, c->name);
        start_proxy(&px, c->args, c->env);
        /* Both the passthrough and an approach follow the same rules. */
        for (int k = 0; k < 2; k++) {
            mock_reset(mock.port);
            assert_int_equal(
                http_req("POST", px.port, "/v1/chat/completions", k ? abody : body, c->headers, &r),
                0);
            if (r.status != c->status)
                fprintf(stderr, "  got %ld: %s\n", r.status, r.body);
            assert_int_equal(r.status, c->status);
            if (c->upstream) {
                char *a = last_auth();
                assert_string_equal(a, c->upstream);
                free(a);
            } else {
                cJSON *j = expect_error(&r, c->status);
                assert_int_equal(mock_stat(mock.port, "calls"), 0); /* refused before upstream */
                if (c->status == 401 && !c->args[0] && !c->env[0])
                    assert_non_null(strstr(err_message(j), "OPENAI_API_KEY"));
                cJSON_Delete(j);
            }
            http_resp_free(&r);
        }
        stop_proxy(&px);
    }
    free(body);
    free(abody);
}

struct user_req {
    int port;
    const char *key;
    const char *content;
    const char *model;
    long status;
    bool retry_after;
};

static void *user_thread(void *arg)
{
    struct user_req *u = arg;
    char auth[128];
    const char *h[] = {auth, NULL};
    char *body = chat_body(u->model ? u->model : "gpt-x@latency=300", u->content, NULL);
    struct http_resp r;
    char v[32];

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", u->key);
    if (http_req("POST", u->port, "/v1/chat/completions", body, h, &r) == 0) {
        u->status = r.status;
        u->retry_after = http_header(&r, "Retry-After", v, sizeof(v));
    }
    http_resp_free(&r);
    free(body);
    return NULL;
}

static void test_two_users_two_keys_at_once(void **state)
{
    struct proc px;
    pthread_t t[8];
    struct user_req u[8];
    const char *args[] = {"--log", "debug", NULL}; /* no key at any level (checked at the end) */

    (void)state;
    start_proxy(&px, args, NULL);
    mock_reset(mock.port);
    for (int i = 0; i < 8; i++) {
        u[i].port = px.port;
        u[i].key = i % 2 ? CLIENT_KEY_B : CLIENT_KEY_A;
        u[i].content = i % 2 ? "I am user B" : "I am user A";
        u[i].model = NULL;
        u[i].status = 0;
        pthread_create(&t[i], NULL, user_thread, &u[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(u[i].status, 200);
    }
    /* The requests overlapped at the upstream, and each carried its own user's key. */
    assert_true(mock_stat(mock.port, "peak_concurrency") >= 2);
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    cJSON *it;
    int seen = 0;
    cJSON_ArrayForEach(it, reqs)
    {
        const char *auth = cJSON_GetObjectItemCaseSensitive(it, "auth")->valuestring;
        cJSON *msgs = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "body"),
                                                       "messages");
        const char *content =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 0), "content")->valuestring;
        if (strstr(content, "user A"))
            assert_string_equal(auth, "Bearer " CLIENT_KEY_A);
        else
            assert_string_equal(auth, "Bearer " CLIENT_KEY_B);
        seen++;
    }
    assert_int_equal(seen, 8);
    cJSON_Delete(reqs);
    stop_proxy(&px);
}

static void test_client_disconnect_cancels_upstream(void **state)
{
    struct proc px;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    char *body = chat_body("gpt-x@chunk_delay=200,words=30", "long stream", "\"stream\":true");
    char *slow = chat_body("gpt-x@latency=3000", "slow", NULL);

    (void)state;
    start_proxy(&px, NULL, NULL);
    mock_reset(mock.port);
    /* Mid-stream and while waiting for the first byte. */
    assert_int_equal(http_req_abort("POST", px.port, "/v1/chat/completions", body, h, 0.5), 0);
    assert_int_equal(http_req_abort("POST", px.port, "/v1/chat/completions", slow, h, 0.3), 0);
    nanosleep(&(struct timespec){0, 300000000L}, NULL);
    assert_int_equal(mock_stat(mock.port, "aborted"), 2);
    assert_int_equal(mock_stat(mock.port, "in_flight"), 0);
    /* An approach: every in-flight call of the fan-out is aborted within 100 ms. */
    char *fan = chat_body("re2|cot_reflection|moa-gpt-x@latency=3000", "fan out", NULL);
    const char *fh[] = {"Authorization: Bearer " CLIENT_KEY_A, "X-Request-Id: fan-abort", NULL};
    mock_reset(mock.port);
    assert_int_equal(http_req_abort("POST", px.port, "/v1/chat/completions", fan, fh, 0.3), 0);
    nanosleep(&(struct timespec){0, 100000000L}, NULL);
    /* Three approaches in parallel: three calls in flight, all aborted. */
    assert_int_equal(mock_stat(mock.port, "aborted"), 3);
    assert_int_equal(mock_stat(mock.port, "in_flight"), 0);
    free(fan);
    stop_proxy(&px);
    /* The access line of the abandoned request counts the calls it made. */
    assert_true(file_contains(px.log, "req=fan-abort"));
    assert_true(file_contains(px.log, "status=499 (connection closed) calls=3"));
    free(body);
    free(slow);
}

static void test_queue_full_503(void **state)
{
    struct proc px;
    const char *args[] = {"--workers", "1", "--queue", "1", NULL};
    pthread_t t[6];
    struct user_req u[6];
    int ok = 0, busy = 0;

    (void)state;
    start_proxy(&px, args, NULL);
    for (int i = 0; i < 6; i++) {
        u[i].port = px.port;
        u[i].key = CLIENT_KEY_A;
        u[i].content = "queue";
        u[i].model = "re2-gpt-x@latency=1000";
        u[i].status = 0;
    }
    /* Approach requests of 1 s each against 1 thread and a queue of 1: the first runs, one
     * waits, the others are refused at once with 503 and Retry-After. */
    for (int i = 0; i < 6; i++)
        pthread_create(&t[i], NULL, user_thread, &u[i]);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 6; i++) {
        ok += u[i].status == 200;
        if (u[i].status == 503) {
            busy++;
            assert_true(u[i].retry_after);
        }
    }
    assert_true(ok >= 1);
    assert_true(busy >= 1);
    assert_int_equal(ok + busy, 6);
    stop_proxy(&px);
}

/* ---- retries, fallback, deadline, metrics ---------------------------------------------------- */

static void test_retries_and_fallback(void **state)
{
    struct proc px, dead;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    const char *args[] = {"--retries", "2", "--retry-base-delay", "0.05", NULL};

    (void)state;
    start_proxy(&px, args, NULL);
    /* Two 500s, then an answer: the client sees only the answer. */
    mock_reset(mock.port);
    char *body = chat_body("gpt-x@fail_first=2", "retry me", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(mock_stat(mock.port, "calls"), 3);
    http_resp_free(&r);
    free(body);
    /* Three 500s: the retries are spent and the upstream's error reaches the client. */
    mock_reset(mock.port);
    body = chat_body("gpt-x@fail_first=3", "retry me", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    cJSON_Delete(expect_error(&r, 500));
    assert_int_equal(mock_stat(mock.port, "calls"), 3);
    http_resp_free(&r);
    free(body);
    /* A stream: the failed attempt is held back, the retry is relayed chunk by chunk. */
    mock_reset(mock.port);
    body = chat_body("gpt-x@fail_first=1", "retry a stream", "\"stream\":true");
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "data: [DONE]"));
    assert_null(strstr(r.body, "mock error"));
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    http_resp_free(&r);
    free(body);
    /* An approach's calls are retried too. */
    mock_reset(mock.port);
    body = chat_body("re2-gpt-x@fail_first=1", "retry an approach", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    http_resp_free(&r);
    free(body);
    /* 4xx other than 429 is not retried. */
    mock_reset(mock.port);
    body = chat_body("gpt-x@status=400", "no retry", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    cJSON_Delete(expect_error(&r, 400));
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    http_resp_free(&r);
    free(body);
    /* Retry-After is honoured: 429 with Retry-After: 1 waits at least a second. */
    mock_reset(mock.port);
    body = chat_body("gpt-x@status=429,retry_after=1", "slow down", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    cJSON_Delete(expect_error(&r, 429));
    assert_int_equal(mock_stat(mock.port, "calls"), 3);
    assert_true(r.total_s >= 2.0); /* two retries, each after >= 1 s */
    http_resp_free(&r);
    free(body);
    stop_proxy(&px);

    /* Fallback: the primary is down; the fallback answers. */
    assert_int_equal(mock_start(&dead, NULL), 0);
    int dead_port = dead.port;
    assert_int_equal(proc_stop(&dead), 0);
    char fallback[64];
    snprintf(fallback, sizeof(fallback), "http://127.0.0.1:%d/v1", mock.port);
    const char *fargs[] = {"--retries", "1", "--retry-base-delay", "0.05", "--fallback-base-url",
                           fallback,    NULL};
    assert_int_equal(proxy_start(&px, dead_port, fargs, NULL), 0);
    snprintf(logs[nlogs++], sizeof(logs[0]), "%s", px.log);
    mock_reset(mock.port);
    body = chat_body("gpt-x", "fall back", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    http_resp_free(&r);
    free(body);
    stop_proxy(&px);
}

static void test_request_deadline(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    const char *args[] = {"--request-timeout", "0.5", NULL};

    (void)state;
    start_proxy(&px, args, NULL);
    char *body = chat_body("moa-gpt-x@latency=2000", "too slow", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    cJSON_Delete(expect_error(&r, 504));
    assert_true(r.total_s < 1.0 + harness_slack());
    http_resp_free(&r);
    free(body);
    stop_proxy(&px);
}

/* The value of a series, matched at the start of a line (not in a HELP comment). */
static long metric(const char *text, const char *series)
{
    for (const char *p = strstr(text, series); p; p = strstr(p + 1, series))
        if (p == text || p[-1] == '\n')
            return strtol(p + strlen(series), NULL, 10);
    return -1;
}

static void test_metrics(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " GATE_KEY, NULL};
    const char *args[] = {"--optillm-api-key",  GATE_KEY, "--retries", "1",
                          "--retry-base-delay", "0.01",   NULL};
    const char *env[] = {"OPENAI_API_KEY=" SERVER_KEY, NULL};

    (void)state;
    start_proxy(&px, args, env);
    /* Behind the gate. */
    assert_int_equal(http_req("GET", px.port, "/metrics", NULL, NULL, &r), 0);
    cJSON_Delete(expect_error(&r, 401));
    http_resp_free(&r);
    for (int i = 0; i < 3; i++) {
        char *body = chat_body("gpt-x", "count me", NULL);

        assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
        http_resp_free(&r);
        free(body);
    }
    char *body = chat_body("re2-gpt-x@reasoning=2", "count me", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    http_resp_free(&r);
    free(body);
    body = chat_body("gpt-x@status=503", "fail me", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    http_resp_free(&r);
    free(body);
    /* A request is counted when libmicrohttpd reports it complete, which can be just after
     * the client has its answer: poll until the last one is in. */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(http_req("GET", px.port, "/metrics", NULL, h, &r), 0);
        if (metric(r.body, "optillm_requests_total{approach=\"none\",status=\"503\"} ") == 1)
            break;
        http_resp_free(&r);
        nanosleep(&(struct timespec){0, 20000000L}, NULL);
    }
    assert_int_equal(r.status, 200);
    assert_int_equal(metric(r.body, "optillm_requests_total{approach=\"none\",status=\"200\"} "),
                     3);
    assert_int_equal(metric(r.body, "optillm_requests_total{approach=\"re2\",status=\"200\"} "), 1);
    assert_int_equal(metric(r.body, "optillm_requests_total{approach=\"none\",status=\"503\"} "),
                     1);
    assert_int_equal(metric(r.body, "optillm_upstream_calls_total{status=\"503\"} "), 2);
    assert_int_equal(metric(r.body, "optillm_upstream_calls_total{status=\"200\"} "), 4);
    assert_int_equal(metric(r.body, "optillm_retries_total "), 1);
    assert_true(metric(r.body, "optillm_tokens_total{tenant=\"-\",kind=\"reasoning\"} ") >= 2);
    assert_true(metric(r.body, "optillm_tokens_total{tenant=\"-\",kind=\"prompt\"} ") > 0);
    assert_non_null(strstr(r.body, "optillm_request_duration_seconds_bucket{le=\"+Inf\"}"));
    assert_non_null(strstr(r.body, "optillm_proxy_overhead_seconds_count"));
    assert_non_null(strstr(r.body, "optillm_in_flight_requests "));
    assert_non_null(strstr(r.body, "optillm_queue_depth 0"));
    assert_null(strstr(r.body, "LEAKCHECK"));
    http_resp_free(&r);
    stop_proxy(&px);
}

struct slow_req {
    int port;
    const char *model;
    long status;
};

static void *slow_thread(void *arg)
{
    struct slow_req *q = arg;
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, NULL};
    char *body = chat_body(q->model, "drain me", NULL);
    struct http_resp r;

    if (http_req("POST", q->port, "/v1/chat/completions", body, h, &r) == 0)
        q->status = r.status;
    http_resp_free(&r);
    free(body);
    return NULL;
}

/* SIGTERM: requests in flight finish (passthrough and approach); past --drain-timeout the
 * rest get 503; the process exits 0 either way. */
static void test_graceful_drain(void **state)
{
    struct proc px;
    pthread_t t[2];
    struct slow_req q[2];

    (void)state;
    start_proxy(&px, NULL, NULL);
    q[0] = (struct slow_req){px.port, "gpt-x@latency=800", 0};
    q[1] = (struct slow_req){px.port, "re2-gpt-x@latency=800", 0};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, slow_thread, &q[i]);
    nanosleep(&(struct timespec){0, 200000000L}, NULL);
    kill(px.pid, SIGTERM);
    /* New connections are refused at once. */
    nanosleep(&(struct timespec){0, 100000000L}, NULL);
    struct http_resp r;
    assert_int_equal(http_req("GET", px.port, "/health", NULL, NULL, &r), -1);
    http_resp_free(&r);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(q[i].status, 200);
    }
    assert_int_equal(proc_wait(&px, 5), 0);

    const char *args[] = {"--drain-timeout", "0.3", NULL};
    start_proxy(&px, args, NULL);
    q[0] = (struct slow_req){px.port, "gpt-x@latency=3000", 0};
    q[1] = (struct slow_req){px.port, "re2-gpt-x@latency=3000", 0};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, slow_thread, &q[i]);
    nanosleep(&(struct timespec){0, 200000000L}, NULL);
    kill(px.pid, SIGTERM);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(q[i].status, 503);
    }
    assert_int_equal(proc_wait(&px, 5), 0);
}

/* --log-format json: every line of the log is a JSON object with ts, level and msg; the access
 * line carries the request id. */
static void test_json_log(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *args[] = {"--log-format", "json", NULL};
    const char *h[] = {"Authorization: Bearer " CLIENT_KEY_A, "X-Request-Id: json-log-check", NULL};
    char line[8192];
    int lines = 0, access = 0;

    (void)state;
    start_proxy(&px, args, NULL);
    char *body = chat_body("gpt-x", "log me", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    free(body);
    stop_proxy(&px);
    FILE *f = fopen(px.log, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        cJSON *j = cJSON_Parse(line);

        assert_non_null(j);
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "ts")));
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "level")));
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "msg")));
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(j, "req");
        if (cJSON_IsString(req) && strcmp(req->valuestring, "json-log-check") == 0)
            access++;
        cJSON_Delete(j);
        lines++;
    }
    fclose(f);
    assert_true(lines >= 3);
    assert_int_equal(access, 1);
}

/* No key, full or partial, in any captured output of any proxy run above. */
static void test_no_key_in_logs(void **state)
{
    static const char *const keys[] = {CLIENT_KEY_A, CLIENT_KEY_B, SERVER_KEY,
                                       GATE_KEY,     OWN_KEY,      "LEAKCHECK"};

    (void)state;
    assert_true(nlogs > 5);
    for (int i = 0; i < nlogs; i++) {
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            if (file_contains(logs[i], keys[k]))
                fprintf(stderr, "%s contains %s\n", logs[i], keys[k]);
            assert_false(file_contains(logs[i], keys[k]));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_and_keepalive),
        cmocka_unit_test(test_models_passthrough),
        cmocka_unit_test(test_passthrough_body_unchanged),
        cmocka_unit_test(test_passthrough_rewrites_only_model_and_ours),
        cmocka_unit_test(test_passthrough_stream_chunk_by_chunk),
        cmocka_unit_test(test_upstream_errors_pass_through),
        cmocka_unit_test(test_upstream_down_and_timeout),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_slow_client_timeout),
        cmocka_unit_test(test_key_table),
        cmocka_unit_test(test_two_users_two_keys_at_once),
        cmocka_unit_test(test_client_disconnect_cancels_upstream),
        cmocka_unit_test(test_queue_full_503),
        cmocka_unit_test(test_retries_and_fallback),
        cmocka_unit_test(test_request_deadline),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_graceful_drain),
        cmocka_unit_test(test_json_log),
        cmocka_unit_test(test_no_key_in_logs),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
