/* itest_secure.c: issue 10 (adversarial review), items 6 and 12 through the real proxy and the
 * mock: a 401 to the proxy's own key becomes a 502 for the operator (passthrough, stream and
 * approach), a 401 to the client's own key stays 401, masked keys in upstream messages are
 * redacted from responses and logs, 405 carries Allow, the access line quotes client text. */
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

#include "harness.h"

#define SERVER_KEY "sk-SERVE-LEAKCHECK-0123"
#define CLIENT_KEY "client-own-LEAKCHECK-4567"
/* What the upstream says about the server key: its masked form (mock errmsg, %-encoded). */
#define MASKED_MSG "Incorrect%20API%20key%20provided%3A%20sk-SERVE********-123."
#define FRAGMENT   "SERVE*"

static struct proc mock;

static int setup(void **state)
{
    (void)state;
    harness_deadline(180);
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static long post(int port, const char *model, const char *extra, const char *const *headers,
                 struct http_resp *r)
{
    char *body = chat_body(model, "What is 2 + 2?", extra);

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, headers, r), 0);
    free(body);
    return r->status;
}

static const char *err_field(cJSON *j, const char *name)
{
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), name);

    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The proxy's key refused upstream: 502 upstream_key_rejected with a message for the operator,
 * the masked key redacted from the answer and from the log. */
static void expect_key_rejected(struct http_resp *r)
{
    cJSON *j = http_json(r);
    char v[16];

    assert_int_equal(r->status, 502);
    /* The OpenAI SDKs retry a 5xx unless told not to: a retry cannot fix the operator's key. */
    assert_true(http_header(r, "x-should-retry", v, sizeof(v)));
    assert_string_equal(v, "false");
    assert_non_null(j);
    assert_string_equal(err_field(j, "code"), "upstream_key_rejected");
    assert_string_equal(err_field(j, "type"), "server_error");
    assert_non_null(strstr(err_field(j, "message"), "the proxy's upstream key was rejected"));
    assert_non_null(strstr(err_field(j, "message"), "Incorrect API key provided: [redacted]"));
    assert_null(strstr(r->body, FRAGMENT));
    cJSON_Delete(j);
}

static void test_server_key_rejected(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *env[] = {"OPENAI_API_KEY=" SERVER_KEY, NULL};
    const char *args[] = {"--client-keys", NULL};
    const char *own[] = {"X-Upstream-Api-Key: " CLIENT_KEY, NULL};

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, env), 0);
    mock_reset(mock.port);

    /* Passthrough, plain and streamed, and an approach: all 502 for the operator. */
    post(px.port, "gpt-x@status=401,errmsg=" MASKED_MSG, NULL, NULL, &r);
    expect_key_rejected(&r);
    http_resp_free(&r);
    post(px.port, "gpt-x@status=403,errmsg=" MASKED_MSG, "\"stream\":true", NULL, &r);
    expect_key_rejected(&r);
    http_resp_free(&r);
    post(px.port, "re2-gpt-x@status=401,errmsg=" MASKED_MSG, NULL, NULL, &r);
    expect_key_rejected(&r);
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 3);

    /* The client's own key (X-Upstream-Api-Key): its 401 stays a 401. */
    post(px.port, "gpt-x@status=401", NULL, own, &r);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    post(px.port, "re2-gpt-x@status=401,errmsg=" MASKED_MSG, NULL, own, &r);
    assert_int_equal(r.status, 401);
    assert_null(strstr(r.body, FRAGMENT)); /* redacted on the approach path all the same */
    http_resp_free(&r);

    assert_int_equal(proc_stop(&px), 0);
    assert_true(file_contains(px.log, "the proxy's upstream key was rejected"));
    assert_false(file_contains(px.log, FRAGMENT));
    assert_false(file_contains(px.log, "LEAKCHECK"));
}

static void test_allow_header(void **state)
{
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"GET", "/v1/chat/completions", "POST"},
        {"DELETE", "/v1/models", "GET"},
        {"POST", "/health", "GET, HEAD"},
        {"PUT", "/v1/approaches", "GET"},
    };
    struct proc px;
    struct http_resp r;
    char v[64];

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, NULL, NULL), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(http_req(cases[i].method, px.port, cases[i].path, NULL, NULL, &r), 0);
        assert_int_equal(r.status, 405);
        assert_true(http_header(&r, "Allow", v, sizeof(v)));
        assert_string_equal(v, cases[i].allow);
        http_resp_free(&r);
    }
    assert_int_equal(proc_stop(&px), 0);
}

/* A model name cannot forge fields of the access line. */
static void test_access_line_quoted(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *env[] = {"OPENAI_API_KEY=" SERVER_KEY, NULL};

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, NULL, env), 0);
    assert_int_equal(post(px.port, "x\" status=999 calls=0 \\\nfake", NULL, NULL, &r), 200);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&px), 0);
    assert_true(file_contains(px.log, "model=\"x\\\" status=999 calls=0 \\\\?fake\" status=200"));
    assert_false(file_contains(px.log, "status=999 calls=0 \\?fake status=200"));
    assert_true(file_contains(px.log, "POST\" \"/v1/chat/completions\" tenant=\"-\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_key_rejected),
        cmocka_unit_test(test_allow_header),
        cmocka_unit_test(test_access_line_quoted),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
