/* itest_doors.c: the real proxy's front doors and plain passthrough paths over loopback:
 * POST /v1/embeddings and /v1/completions forwarded with the body untouched (JSON and SSE),
 * /v1/messages and /v1/responses routing (with and without /v1), x-api-key under the gate,
 * door-shaped errors, count_tokens, and the method rules. The SDK-level behaviour is in
 * tests/sdk_doors; the translations themselves in tests/unit/test_door.c. */
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
#include <unistd.h>

#include "harness.h"

#define SERVER_KEY "server-doors-LEAKCHECK-77aa"
#define GATE_KEY   "gate-doors-LEAKCHECK-88bb"

static struct proc mock, proxy, gated;

static int setup(void **state)
{
    static const char *const env[] = {"OPENAI_API_KEY=" SERVER_KEY, NULL};
    static const char *const genv[] = {"OPENAI_API_KEY=" SERVER_KEY, "OPTILLM_API_KEY=" GATE_KEY,
                                       NULL};

    static const char *const args[] = {"--sse-keepalive", "0.2", NULL};

    (void)state;
    harness_deadline(120);
    if (mock_start(&mock, NULL) < 0 || proxy_start(&proxy, mock.port, args, env) < 0 ||
        proxy_start(&gated, mock.port, NULL, genv) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (gated.pid > 0)
        proc_stop(&gated);
    if (proxy.pid > 0)
        proc_stop(&proxy);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

/* The last request the mock saw. */
static cJSON *last_request(void)
{
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    int n = cJSON_GetArraySize(reqs);
    cJSON *last;

    assert_true(n > 0);
    last = cJSON_Duplicate(cJSON_GetArrayItem(reqs, n - 1), 1);
    cJSON_Delete(reqs);
    return last;
}

static void test_embeddings_untouched(void **state)
{
    /* Odd spacing, key order, a field we do not know and an optillm_-looking one: all kept. */
    const char *body = "{ \"input\" : [\"alpha\", \"beta\"],\n \"model\":\"text-embed-x\","
                       "\"encoding_format\":\"float\", \"dimensions\": 3, \"zz_unknown\": {\"a\":1}"
                       " }";
    struct http_resp r;
    cJSON *j, *last;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", proxy.port, "/v1/embeddings", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    j = http_json(&r);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "mock_raw_body")->valuestring, body);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "list");
    cJSON_Delete(j);
    http_resp_free(&r);
    last = last_request();
    assert_string_equal(cJSON_GetObjectItem(last, "auth")->valuestring, "Bearer " SERVER_KEY);
    cJSON_Delete(last);

    /* A duplicate key (cJSON would read the first, the upstream the last): 400, not sent. */
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", proxy.port, "/v1/embeddings",
                              "{\"model\":\"a\",\"input\":\"x\",\"model\":\"b\"}", NULL, &r),
                     0);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);

    /* Without /v1 too; an upstream error keeps its status and body. */
    assert_int_equal(http_req("POST", proxy.port, "/embeddings",
                              "{\"model\":\"e@status=429\",\"input\":\"x\"}", NULL, &r),
                     0);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.body, "mock error 429"));
    http_resp_free(&r);
}

static void test_completions_untouched(void **state)
{
    const char *body = "{\"model\":\"legacy-x\",\"prompt\":\"Say hi\",\"max_tokens\":5,"
                       "\"logprobs\":null,\"echo\":false}";
    const char *sbody = "{\"model\":\"legacy-x\",\"prompt\":\"Say hi\",\"stream\":true}";
    struct http_resp r;
    cJSON *j, *last;
    char ct[128];

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", proxy.port, "/v1/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    j = http_json(&r);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "mock_raw_body")->valuestring, body);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "text")
            ->valuestring,
        "mock completion: Say hi");
    cJSON_Delete(j);
    http_resp_free(&r);

    /* A stream is relayed as SSE, and the body went upstream byte for byte. */
    assert_int_equal(http_req("POST", proxy.port, "/v1/completions", sbody, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(http_header(&r, "Content-Type", ct, sizeof(ct)));
    assert_non_null(strstr(ct, "text/event-stream"));
    assert_non_null(strstr(r.body, "\"text_completion\""));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
    last = last_request();
    char *seen = cJSON_PrintUnformatted(cJSON_GetObjectItem(last, "body"));
    cJSON *a = cJSON_Parse(seen), *b = cJSON_Parse(sbody);
    assert_true(cJSON_Compare(a, b, 1));
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_free(seen);
    cJSON_Delete(last);

    /* GET is not allowed on these paths. */
    assert_int_equal(http_req("GET", proxy.port, "/v1/completions", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    http_resp_free(&r);
}

static void test_doors_route(void **state)
{
    struct http_resp r;
    cJSON *j;
    char allow[64];

    (void)state;
    /* /messages without /v1 (Claude Code style base URLs), and /v1/responses. */
    assert_int_equal(http_req("POST", proxy.port, "/messages",
                              "{\"model\":\"mock-model\",\"max_tokens\":50,\"messages\":[{\"role\":"
                              "\"user\",\"content\":\"hi there\"}]}",
                              (const char *const[]){"anthropic-version: 2023-06-01", NULL}, &r),
                     0);
    assert_int_equal(r.status, 200);
    j = http_json(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "message");
    cJSON_Delete(j);
    http_resp_free(&r);

    assert_int_equal(http_req("POST", proxy.port, "/v1/responses",
                              "{\"model\":\"mock-model\",\"input\":\"hi\"}", NULL, &r),
                     0);
    assert_int_equal(r.status, 200);
    j = http_json(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "response");
    cJSON_Delete(j);
    http_resp_free(&r);

    /* A malformed door request: 400 in the door's shape, nothing upstream. */
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", proxy.port, "/v1/messages", "{\"model\":", NULL, &r), 0);
    assert_int_equal(r.status, 400);
    j = http_json(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "error");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring,
                        "invalid_request_error");
    cJSON_Delete(j);
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);

    /* A wrong method: 405, in the door's shape too. */
    assert_int_equal(http_req("GET", proxy.port, "/v1/messages", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_true(http_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "POST");
    j = http_json(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "error");
    cJSON_Delete(j);
    http_resp_free(&r);

    /* count_tokens answers locally. */
    assert_int_equal(http_req("POST", proxy.port, "/v1/messages/count_tokens",
                              "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                              "\"hello\"}]}",
                              NULL, &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"input_tokens\":9}");
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
}

static void test_x_api_key_gate(void **state)
{
    const char *body = "{\"model\":\"mock-model\",\"max_tokens\":50,\"messages\":[{\"role\":"
                       "\"user\",\"content\":\"hi\"}]}";
    struct http_resp r;
    cJSON *j, *last;

    (void)state;
    mock_reset(mock.port);
    /* No key: 401 in Anthropic's shape. */
    assert_int_equal(http_req("POST", gated.port, "/v1/messages", body, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    j = http_json(&r);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring,
                        "authentication_error");
    assert_null(strstr(r.body, GATE_KEY));
    cJSON_Delete(j);
    http_resp_free(&r);
    /* The gate key as x-api-key passes; the server key goes upstream, never the gate key. */
    assert_int_equal(http_req("POST", gated.port, "/v1/messages", body,
                              (const char *const[]){"x-api-key: " GATE_KEY, NULL}, &r),
                     0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    last = last_request();
    assert_string_equal(cJSON_GetObjectItem(last, "auth")->valuestring, "Bearer " SERVER_KEY);
    cJSON_Delete(last);
    /* x-api-key works on the other paths as the Bearer does (models, embeddings). */
    assert_int_equal(http_req("GET", gated.port, "/v1/models", NULL,
                              (const char *const[]){"x-api-key: " GATE_KEY, NULL}, &r),
                     0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(http_req("POST", gated.port, "/v1/embeddings", "{\"model\":\"e\",\"input\":1}",
                              (const char *const[]){"x-api-key: wrong", NULL}, &r),
                     0);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    assert_false(file_contains(gated.log, GATE_KEY));
    assert_false(file_contains(gated.log, SERVER_KEY));
}

/* Tenants through the doors: the tenant key as x-api-key, its model and approach rules on
 * /v1/messages and /v1/responses, and on the embeddings passthrough (model checked, 403). */
static void test_tenants(void **state)
{
    static const char key[] = "tenant-doors-LEAKCHECK-99cc";
    char path[64], hex[65], tenants[512];
    unsigned char dg[32];
    struct proc tp;
    struct http_resp r;
    cJSON *j;
    FILE *f;
    const char *const hk[] = {"x-api-key: tenant-doors-LEAKCHECK-99cc", NULL};
    static const char *const env[] = {"OPENAI_API_KEY=" SERVER_KEY, NULL};

    (void)state;
    SHA256((const unsigned char *)key, strlen(key), dg);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dg[i]);
    snprintf(path, sizeof(path), "/tmp/itest_doors_tenants_%d.json", (int)getpid());
    snprintf(tenants, sizeof(tenants),
             "{\"tenants\": [{\"name\": \"dora\", \"key_sha256\": \"%s\", \"approaches\": "
             "[\"none\", \"bon\"], \"models\": [\"mock-model\"]}]}",
             hex);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(tenants, f);
    fclose(f);
    const char *args[] = {"--tenants", path, NULL};
    assert_int_equal(proxy_start(&tp, mock.port, args, env), 0);

    mock_reset(mock.port);
    assert_int_equal(http_req("POST", tp.port, "/v1/messages",
                              "{\"model\":\"bon-mock-model\",\"max_tokens\":50,\"messages\":[{"
                              "\"role\":\"user\",\"content\":\"hi\"}]}",
                              hk, &r),
                     0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_true(mock_stat(mock.port, "calls") >= 2);
    /* moa is not hers: 403 in Anthropic's shape (permission_error), before any call. */
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", tp.port, "/v1/messages",
                              "{\"model\":\"moa-mock-model\",\"max_tokens\":50,\"messages\":[{"
                              "\"role\":\"user\",\"content\":\"hi\"}]}",
                              hk, &r),
                     0);
    assert_int_equal(r.status, 403);
    j = http_json(&r);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring,
                        "permission_error");
    cJSON_Delete(j);
    http_resp_free(&r);
    /* Another model on the Responses door and on embeddings: 403. */
    assert_int_equal(http_req("POST", tp.port, "/v1/responses",
                              "{\"model\":\"other-model\",\"input\":\"hi\"}", hk, &r),
                     0);
    assert_int_equal(r.status, 403);
    http_resp_free(&r);
    assert_int_equal(http_req("POST", tp.port, "/v1/embeddings",
                              "{\"model\":\"other-model\",\"input\":\"hi\"}", hk, &r),
                     0);
    assert_int_equal(r.status, 403);
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
    assert_int_equal(http_req("POST", tp.port, "/v1/embeddings",
                              "{\"model\":\"mock-model\",\"input\":\"hi\"}", hk, &r),
                     0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_false(file_contains(tp.log, key));
    assert_int_equal(proc_stop(&tp), 0);
    remove(path);
}

/* Streams through both doors: a relayed tool call, an approach's stream, an upstream error
 * before the stream (a status) and after it began (an in-band error event). */
static void test_streams(void **state)
{
    struct http_resp r;

    (void)state;
    assert_int_equal(
        http_req("POST", proxy.port, "/v1/messages",
                 "{\"model\":\"mock-model@tool=get_weather\",\"max_tokens\":50,"
                 "\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"w\"}]}",
                 NULL, &r),
        0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "event: message_start\n"));
    assert_non_null(strstr(r.body, "\"type\":\"input_json_delta\""));
    assert_non_null(strstr(r.body, "\"stop_reason\":\"tool_use\""));
    assert_non_null(strstr(r.body, "event: message_stop\n"));
    assert_null(strstr(r.body, "[DONE]"));
    http_resp_free(&r);

    /* An upstream that refuses stream_options: the stream comes again without it (no usage). */
    assert_int_equal(
        http_req("POST", proxy.port, "/v1/messages",
                 "{\"model\":\"mock-model@reject_stream_options=1\",\"max_tokens\":50,"
                 "\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"w\"}]}",
                 NULL, &r),
        0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "event: message_stop\n"));
    assert_non_null(strstr(r.body, "\"text_delta\""));
    http_resp_free(&r);

    assert_int_equal(http_req("POST", proxy.port, "/v1/responses",
                              "{\"model\":\"bon-mock-model\",\"stream\":true,\"input\":\"6*7?\"}",
                              NULL, &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "event: response.created\n"));
    assert_non_null(strstr(r.body, "event: response.output_text.delta\n"));
    assert_non_null(strstr(r.body, "event: response.completed\n"));
    http_resp_free(&r);

    assert_int_equal(
        http_req("POST", proxy.port, "/v1/messages",
                 "{\"model\":\"mock-model@status=400\",\"max_tokens\":5,"
                 "\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"w\"}]}",
                 NULL, &r),
        0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"invalid_request_error\""));
    assert_non_null(strstr(r.body, "mock error 400"));
    http_resp_free(&r);

    assert_int_equal(
        http_req("POST", proxy.port, "/v1/messages",
                 "{\"model\":\"bon-mock-model@status=400,latency=600\",\"max_tokens\":5,"
                 "\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"w\"}]}",
                 NULL, &r),
        0);
    /* The approach's stream began (keep-alives: message_start, ping) before its calls failed. */
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "event: message_start\n"));
    assert_non_null(strstr(r.body, "event: ping\n"));
    assert_non_null(strstr(r.body, "event: error\n"));
    assert_null(strstr(r.body, "message_stop"));
    http_resp_free(&r);
}

/* Both proxies exit 0 on SIGTERM (under valgrind: no memory errors or leaks). */
static void test_clean_exit(void **state)
{
    (void)state;
    assert_int_equal(proc_stop(&gated), 0);
    assert_int_equal(proc_stop(&proxy), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embeddings_untouched),
        cmocka_unit_test(test_completions_untouched),
        cmocka_unit_test(test_doors_route),
        cmocka_unit_test(test_x_api_key_gate),
        cmocka_unit_test(test_streams),
        cmocka_unit_test(test_tenants),
        cmocka_unit_test(test_clean_exit),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
