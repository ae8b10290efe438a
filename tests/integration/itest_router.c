/* itest_router.c: the router through the real proxy. A routes file sends the classification
 * to a classifier model (the mock's fixed reply "code") and "code" to re2: the upstream sees
 * one classification call (temperature 0, max_tokens 16, the classifier model, no tools) then
 * re2's call on the client's model; X-Optillm-Route names the route; the same prompt again
 * costs one call (cached); a stream is answered through the chosen approach; a request with
 * tools routed to an approach that does not keep them gets the plain completion with its tool
 * call; --approach router routes requests that name no approach; a classifier that fails
 * leaves the default to answer; a tenant's approach list holds for the router's choice; the
 * /metrics series; bad routes files stop the start-up with the reason. */
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
#include <unistd.h>

#include <openssl/sha.h>

#include "harness.h"

static struct proc mock, px, dflt_px;
static const char *const key_env[] = {"OPENAI_API_KEY=sk-test", NULL};
static char cfg_path[] = "/tmp/itest_router_XXXXXX";
static char bad_path[] = "/tmp/itest_router_bad_XXXXXX";

static int write_file(char *tmpl, const char *text)
{
    int fd = mkstemp(tmpl);
    ssize_t n;

    if (fd < 0)
        return -1;
    n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int setup(void **state)
{
    static const char *args[] = {"--router-config", cfg_path, NULL};
    static const char *dargs[] = {"--approach", "router", NULL};

    (void)state;
    harness_deadline(120);
    if (write_file(cfg_path,
                   "{\"classifier_model\": \"classifier@reply=code\","
                   " \"default\": \"none\","
                   " \"routes\": {\"code\": {\"approach\": \"re2\", \"description\":"
                   " \"programs\"}, \"plans\": \"plansearch\", \"chat\": \"none\"}}") != 0)
        return -1;
    if (mock_start(&mock, NULL) != 0 || proxy_start(&px, mock.port, args, key_env) != 0)
        return -1;
    return proxy_start(&dflt_px, mock.port, dargs, key_env);
}

static int teardown(void **state)
{
    (void)state;
    unlink(cfg_path);
    proc_stop(&px);
    proc_stop(&dflt_px);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static const cJSON *field(const cJSON *o, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(o, name);
}

static void test_routes_and_caches(void **state)
{
    struct http_resp r;
    char h[256];
    char *body = chat_body("router-mock-model", "Write a sort function ROUTE-1", NULL);
    cJSON *bodies, *j;
    const cJSON *c0, *c1;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(http_header(&r, "X-Optillm-Route", h, sizeof(h)));
    assert_string_equal(h, "code: re2 (classified)");
    assert_true(http_header(&r, "X-Optillm-Upstream-Calls", h, sizeof(h)));
    assert_string_equal(h, "2");
    j = http_json(&r);
    assert_int_equal(field(field(j, "usage"), "prompt_tokens")->valueint > 0, 1);
    cJSON_Delete(j);
    http_resp_free(&r);

    bodies = mock_bodies(mock.port);
    assert_int_equal(cJSON_GetArraySize(bodies), 2);
    c0 = cJSON_GetArrayItem(bodies, 0);
    c1 = cJSON_GetArrayItem(bodies, 1);
    assert_string_equal(field(c0, "model")->valuestring, "classifier@reply=code");
    assert_true(field(c0, "temperature")->valuedouble == 0);
    assert_int_equal(field(c0, "max_tokens")->valueint, 16);
    {
        char *t = cJSON_PrintUnformatted(field(c0, "messages"));

        assert_non_null(strstr(t, "- code: programs"));
        assert_non_null(strstr(t, "- plans"));
        assert_non_null(strstr(t, "ROUTE-1"));
        free(t);
        t = cJSON_PrintUnformatted(field(c1, "messages"));
        assert_non_null(strstr(t, "ROUTE-1"));
        assert_non_null(strstr(t, "read the question once more")); /* re2's prompt */
        free(t);
    }
    assert_string_equal(field(c1, "model")->valuestring, "mock-model");
    cJSON_Delete(bodies);

    /* the same prompt: no classification call */
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(http_header(&r, "X-Optillm-Route", h, sizeof(h)));
    assert_string_equal(h, "code: re2 (cached)");
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    free(body);
}

static void test_stream(void **state)
{
    struct http_resp r;
    char *body = chat_body("router-mock-model", "Stream me a program ROUTE-2", "\"stream\":true");

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "chat.completion.chunk"));
    assert_non_null(strstr(r.body, "ROUTE-2"));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    assert_null(strstr(r.body, "\"error\""));
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    http_resp_free(&r);
    free(body);
}

/* On the proxy with the built-in table (the classifier is the request's model): an answer
 * naming no label leaves the default (none) to answer, with the client's tools; "code" ->
 * plansearch, which does not carry tools, so with tools the plain completion answers with the
 * (mock's) tool call. The classification call never carries the client's tools. */
static void test_tools_fall_back(void **state)
{
    struct http_resp r;
    char h[256];
    char *body = chat_body("router-mock-model@reply=plans", "Plan a trip ROUTE-3",
                           "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"book\","
                           "\"parameters\":{\"type\":\"object\"}}}]");
    cJSON *bodies;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", dflt_px.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(http_header(&r, "X-Optillm-Route", h, sizeof(h)));
    /* built-in table on dflt_px: "plans" is no label there, so the default (none) answers */
    assert_string_equal(h, "default: none (unrecognised)");
    assert_non_null(strstr(r.body, "\"tool_calls\""));
    http_resp_free(&r);
    bodies = mock_bodies(mock.port);
    assert_int_equal(cJSON_GetArraySize(bodies), 2);
    assert_null(field(cJSON_GetArrayItem(bodies, 0), "tools")); /* the classifier gets none */
    assert_non_null(field(cJSON_GetArrayItem(bodies, 1), "tools"));
    cJSON_Delete(bodies);
    free(body);

    /* built-in "code" -> plansearch; with tools: the plain completion keeps them */
    body = chat_body("mock-model@reply=code", "Write code ROUTE-4",
                     "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"run\","
                     "\"parameters\":{\"type\":\"object\"}}}]");
    mock_reset(mock.port);
    assert_int_equal(http_req("POST", dflt_px.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(http_header(&r, "X-Optillm-Route", h, sizeof(h)));
    assert_string_equal(h, "code: none (classified)");
    assert_non_null(strstr(r.body, "\"tool_calls\""));
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    http_resp_free(&r);
    free(body);
}

/* --approach router: a plain model name is routed; a name with another approach is not. */
static void test_default_approach(void **state)
{
    struct http_resp r;
    char h[256];

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(chat_as(dflt_px.port, "sk-client", "mock-model@reply=factual",
                             "Capital of France? ROUTE-5", &r),
                     200);
    assert_true(http_header(&r, "X-Optillm-Route", h, sizeof(h)));
    assert_string_equal(h, "factual: re2 (classified)");
    http_resp_free(&r);
    mock_reset(mock.port);
    assert_int_equal(chat_as(dflt_px.port, "sk-client", "moa-mock-model", "Q ROUTE-6", &r), 200);
    assert_false(http_header(&r, "X-Optillm-Route", h, sizeof(h)));
    http_resp_free(&r);
    {
        cJSON *bodies = mock_bodies(mock.port);
        char *t = cJSON_PrintUnformatted(bodies);

        assert_non_null(strstr(t, "ROUTE-6"));
        assert_null(strstr(t, "Sort the request")); /* no classification call */
        free(t);
        cJSON_Delete(bodies);
    }
}

/* The classification call fails (the mock answers 503 to every call with this model): the
 * default route runs with the same model, fails too, and the client gets the upstream's 503
 * as an OpenAI error (not a 500, not a hang). */
static void test_classifier_down(void **state)
{
    struct http_resp r;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(chat_as(dflt_px.port, "sk-client", "mock-model@status=503", "ROUTE-7", &r),
                     503);
    assert_non_null(strstr(r.body, "\"error\""));
    http_resp_free(&r);
    assert_true(mock_stat(mock.port, "calls") >= 2); /* classification, then the default */
}

/* /metrics of the routes-file proxy after the two tests above (3 requests routed code -> re2,
 * the second one from the cache). */
static void test_metrics(void **state)
{
    struct http_resp r;

    (void)state;
    assert_int_equal(http_req("GET", px.port, "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(
        strstr(r.body, "optillm_router_decisions_total{route=\"code\",approach=\"re2\"} 3\n"));
    assert_non_null(strstr(r.body, "optillm_router_cache_total{result=\"hit\"} 1\n"));
    assert_non_null(strstr(r.body, "optillm_router_cache_total{result=\"miss\"} 2\n"));
    assert_non_null(
        strstr(r.body, "optillm_router_fallbacks_total{reason=\"classifier_failed\"} 0\n"));
    http_resp_free(&r);
    /* the built-in proxy: one unrecognised ("plans"), one failed classifier (status=503) */
    assert_int_equal(http_req("GET", dflt_px.port, "/metrics", NULL, NULL, &r), 0);
    assert_non_null(strstr(r.body, "optillm_router_fallbacks_total{reason=\"unrecognised\"} 1\n"));
    assert_non_null(
        strstr(r.body, "optillm_router_fallbacks_total{reason=\"classifier_failed\"} 1\n"));
    assert_non_null(
        strstr(r.body, "optillm_router_decisions_total{route=\"code\",approach=\"none\"} 1\n"));
    http_resp_free(&r);
}

/* A tenant allowed "router" but not re2: the route's approach is replaced by the plain
 * completion (a tenant's approach list holds for what the router picks). */
static void test_tenant_approaches(void **state)
{
    char tpath[] = "/tmp/itest_router_tenants_XXXXXX";
    char text[512], hex[65], h[256];
    unsigned char d[SHA256_DIGEST_LENGTH];
    const char *args[] = {"--router-config", cfg_path, "--tenants", tpath, NULL};
    struct proc p;
    struct http_resp r;

    (void)state;
    SHA256((const unsigned char *)"sk-tenant-r", strlen("sk-tenant-r"), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    snprintf(text, sizeof(text),
             "{\"tenants\": [{\"name\": \"r\", \"key_sha256\": \"%s\","
             " \"approaches\": [\"router\"]}]}",
             hex);
    assert_int_equal(write_file(tpath, text), 0);
    assert_int_equal(proxy_start(&p, mock.port, args, key_env), 0);
    mock_reset(mock.port);
    assert_int_equal(chat_as(p.port, "sk-tenant-r", "router-mock-model", "Code it ROUTE-8", &r),
                     200);
    assert_true(http_header(&r, "X-Optillm-Route", h, sizeof(h)));
    assert_string_equal(h, "code: none (classified)");
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    assert_int_equal(chat_as(p.port, "sk-tenant-r", "re2-mock-model", "ROUTE-9", &r), 403);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&p), 0);
    unlink(tpath);
}

static void test_bad_configs(void **state)
{
    static const struct {
        const char *json;
        const char *why;
    } bad[] = {
        {"{\"routes\": {\"x\": \"privacy\"}}", "is a plugin"},
        {"{\"routes\": {\"x\": \"nosuch\"}}", "unknown approach 'nosuch'"},
        {"{\"routes\": {\"x\": \"coc\"}}", "--enable-code-execution"},
        {"{\"routes\": \"x\"}", "non-empty object"},
    };
    struct proc p;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[sizeof(bad_path)];
        const char *args[] = {"--router-config", path, NULL};

        memcpy(path, bad_path, sizeof(path));
        assert_int_equal(write_file(path, bad[i].json), 0);
        assert_int_equal(proxy_start(&p, mock.port, args, key_env), -1);
        if (!file_contains(p.log, bad[i].why))
            fail_msg("%s: the log does not say '%s'", bad[i].json, bad[i].why);
        assert_true(file_contains(p.log, "--router-config"));
        unlink(path);
    }
    {
        const char *args[] = {"--router-config", "/nonexistent/routes.json", NULL};

        assert_int_equal(proxy_start(&p, mock.port, args, key_env), -1);
        assert_true(file_contains(p.log, "cannot read"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_caches), cmocka_unit_test(test_stream),
        cmocka_unit_test(test_tools_fall_back),   cmocka_unit_test(test_default_approach),
        cmocka_unit_test(test_classifier_down),   cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_tenant_approaches), cmocka_unit_test(test_bad_configs),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
