/* itest_web_search.c: web_search through the real proxy with the mock as a fake SearxNG
 * (GET /search?q=&format=json): the results reach the upstream call as a system message; a
 * proxy without --search-url answers 400 naming the flag; a backend that answers junk, the
 * wrong shape, or too late has a clear status (502, 502, 504) and never a 500; zero results
 * go on; with optillm_web_search_fetch the top pages' text is added (fetched through the SSRF
 * guard: refused without --readurls-allow for these loopback pages). */
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

static struct proc mock, px, bare_px, guarded_px;
static const char *const key_env[] = {"OPENAI_API_KEY=sk-test", NULL};

static int setup(void **state)
{
    static char url[128];
    static const char *args[] = {"--search-url", url, "--readurls-allow", "127.0.0.0/8", NULL};
    static const char *guarded_args[] = {"--search-url", url, NULL};

    (void)state;
    harness_deadline(120);
    if (mock_start(&mock, NULL) != 0)
        return -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/search", mock.port);
    if (proxy_start(&px, mock.port, args, key_env) != 0)
        return -1;
    if (proxy_start(&guarded_px, mock.port, guarded_args, key_env) != 0)
        return -1;
    return proxy_start(&bare_px, mock.port, NULL, key_env);
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&px);
    proc_stop(&bare_px);
    proc_stop(&guarded_px);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

/* The messages of the last upstream call, malloc'd. */
static char *last_upstream(void)
{
    cJSON *log = mock_get(mock.port, "/mock/requests");
    cJSON *req = cJSON_GetArrayItem(log, cJSON_GetArraySize(log) - 1);
    cJSON *msgs =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(req, "body"), "messages");
    char *s = cJSON_PrintUnformatted(msgs ? msgs : cJSON_CreateNull());

    cJSON_Delete(log);
    return s;
}

static long ask(const struct proc *p, const char *q, const char *extra, struct http_resp *r)
{
    char *body = chat_body("web_search-gpt-4o-mini", q, extra);

    assert_int_equal(http_req("POST", p->port, "/v1/chat/completions", body, NULL, r), 0);
    free(body);
    return r->status;
}

static void test_results_reach_upstream(void **state)
{
    struct http_resp r;
    char *t;

    (void)state;
    mock_reset(mock.port);
    ask(&px, "Who wrote SEARCHME & why?", NULL, &r);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    t = last_upstream();
    assert_non_null(strstr(t, "SEARCH-TITLE-1 for Who wrote SEARCHME & why?"));
    assert_non_null(strstr(t, "SEARCH-SNIPPET-3"));
    assert_non_null(strstr(t, "/page/article"));
    assert_non_null(strstr(t, "[3] SEARCH-TITLE-3"));
    free(t);
    /* the result cap, per request */
    assert_int_equal(ask(&px, "capped", "\"optillm_web_search_results\":1", &r), 200);
    http_resp_free(&r);
    t = last_upstream();
    assert_non_null(strstr(t, "[1] SEARCH-TITLE-1"));
    assert_null(strstr(t, "SEARCH-TITLE-2"));
    free(t);
    /* web_search_fetch: the first result's page fetched through the guard (--readurls-allow
     * opens loopback here), its article text under the result, nav/script dropped */
    mock_reset(mock.port);
    assert_int_equal(ask(&px, "fetch the top page", "\"optillm_web_search_fetch\":1", &r), 200);
    http_resp_free(&r);
    t = last_upstream();
    assert_non_null(strstr(t, "Page: Zebras"));
    assert_non_null(strstr(t, "ZEBRA-STRIPES-42"));
    assert_null(strstr(t, "NAV-TEXT"));
    assert_null(strstr(t, "SCRIPT-TEXT"));
    free(t);
    {
        cJSON *pages = mock_get(mock.port, "/mock/pages");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(pages, "fetches");

        assert_true(cJSON_IsNumber(n) && n->valueint == 1); /* only the first result's page */
        cJSON_Delete(pages);
    }
    /* without --readurls-allow the guard refuses loopback pages: snippets only, still 200 */
    assert_int_equal(ask(&guarded_px, "fetch the top page", "\"optillm_web_search_fetch\":3", &r),
                     200);
    http_resp_free(&r);
    t = last_upstream();
    assert_non_null(strstr(t, "SEARCH-SNIPPET-3"));
    assert_null(strstr(t, "Page:"));
    free(t);
    /* zero results: goes on */
    assert_int_equal(ask(&px, "EMPTY please", NULL, &r), 200);
    http_resp_free(&r);
    t = last_upstream();
    assert_non_null(strstr(t, "(no results)"));
    free(t);
}

static void test_bad_backends(void **state)
{
    struct http_resp r;

    (void)state;
    assert_int_equal(ask(&bare_px, "anything", NULL, &r), 400);
    assert_non_null(strstr(r.body, "--search-url"));
    http_resp_free(&r);
    assert_int_equal(ask(&px, "JUNK", NULL, &r), 502);
    assert_non_null(strstr(r.body, "not JSON"));
    http_resp_free(&r);
    assert_int_equal(ask(&px, "SHAPE", NULL, &r), 502);
    assert_non_null(strstr(r.body, "results"));
    http_resp_free(&r);
    assert_int_equal(ask(&px, "SLOW", "\"optillm_web_search_timeout\":1", &r), 504);
    assert_true(r.total_s < 4.5 + harness_slack());
    http_resp_free(&r);
}

/* deep_research end to end: within its call bound, the report call carries the numbered
 * sources from the fake SearxNG; without --search-url a 400. */
static void test_deep_research(void **state)
{
    struct http_resp r;
    char *body, *t;
    long calls;

    (void)state;
    mock_reset(mock.port);
    body = chat_body("deep_research-gpt-4o-mini", "Research DEEPQ", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    calls = mock_stat(mock.port, "calls");
    assert_true(calls >= 4 && calls <= 7);
    t = last_upstream();
    assert_non_null(strstr(t, "[1] SEARCH-TITLE-1 for "));
    assert_non_null(strstr(t, "/page/article"));
    assert_non_null(strstr(t, "[3] SEARCH-TITLE-3"));
    free(t);
    assert_int_equal(http_req("POST", bare_px.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "--search-url"));
    http_resp_free(&r);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results_reach_upstream),
        cmocka_unit_test(test_bad_backends),
        cmocka_unit_test(test_deep_research),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
