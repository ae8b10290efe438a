/* test_web_search.c: the web_search plugin on a fake fetch transport: the query sent (the last
 * user message, percent-encoded, format=json), the operator's backend trusted (allow all), the
 * results added as one system message before the last user message, the result cap, no
 * upstream call; and each bad backend a clear outcome: no --search-url (400 naming the flag),
 * timed out (504), an error status, not JSON, the wrong shape (502), zero results (goes on). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "fetch.h"

extern const struct approach approach_web_search;
#define THE_APPROACH approach_web_search

#include "script_env.h"

static int g_batches;
static char g_url[2048];
static struct fetch_limits g_lim;
static int g_status;
static const char *g_body;

static struct fetch_limits g_page_lim;
static size_t g_pages;

/* The second batch (web_search_fetch): result pages; a URL with "fail" in it fails, one with
 * "bin" is binary, the others are HTML naming their URL. */
static int fake_pages(struct fetch_req *reqs, size_t n, const struct fetch_limits *lim)
{
    g_page_lim = *lim;
    g_pages = n;
    for (size_t i = 0; i < n; i++) {
        bool fail = strstr(reqs[i].url, "fail") != NULL, bin = strstr(reqs[i].url, "bin") != NULL;

        reqs[i].status = fail ? PX_EHTTP : PX_OK;
        reqs[i].http_status = fail ? 404 : 200;
        reqs[i].error = fail ? "HTTP 404" : NULL;
        reqs[i].content_type = bin ? "application/octet-stream" : "text/html";
        reqs[i].body = bin ? "\x01\x02"
                           : "<html><body><nav>menu</nav><p>Body of the page.</p>"
                             "<p>Second\nparagraph.</p></body></html>";
        reqs[i].len = strlen(reqs[i].body);
    }
    return 0;
}

static int fake_fetch(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                      const struct fetch_limits *lim)
{
    (void)ctx;
    g_batches++;
    if (g_batches > 1)
        return fake_pages(reqs, n, lim);
    g_lim = *lim;
    assert_int_equal(n, 1);
    snprintf(g_url, sizeof(g_url), "%s", reqs[0].url);
    reqs[0].status = g_status;
    reqs[0].error = g_status == PX_OK ? NULL : g_status == PX_ETIMEDOUT ? "timed out" : "HTTP 500";
    reqs[0].http_status = g_status == PX_OK ? 200 : g_status == PX_ETIMEDOUT ? 0 : 500;
    reqs[0].content_type = "application/json";
    reqs[0].body = g_body;
    reqs[0].len = strlen(g_body);
    return g_status == PX_OK;
}

#define TWO_TURNS                                                                                  \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"              \
    "{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"},"       \
    "{\"role\":\"user\",\"content\":\"Who won? a&b\"}]}"

static int prepare(struct env *e, struct chat_request *next, const char *url, int status,
                   const char *body)
{
    struct approach_post post = {0};

    g_batches = 0;
    g_status = status;
    g_body = body;
    g_url[0] = '\0';
    snprintf(e->cfg.search_url, sizeof(e->cfg.search_url), "%s", url ? url : "");
    *next = e->req;
    return THE_APPROACH.prepare(&e->ctx, next, &post);
}

static void test_results(void **state)
{
    const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct chat_request next;
    struct env e;

    (void)state;
    fetch_set_transport(fake_fetch);
    env_init(&e, TWO_TURNS, rows);
    env_option(&e, "web_search_results", 2);
    assert_int_equal(
        prepare(&e, &next, "http://10.1.2.3:8888/search", PX_OK,
                "{\"results\":[{\"title\":\"T1\",\"url\":\"https://a.test/1\","
                "\"content\":\"first\\nsnippet\"},{\"title\":\"no url\"},"
                "{\"title\":\"T2\",\"url\":\"https://b.test/2\",\"content\":\"s2\"},"
                "{\"title\":\"T3\",\"url\":\"https://c.test/3\",\"content\":\"s3\"}]}"),
        PX_OK);
    assert_int_equal(g_batches, 1);
    assert_string_equal(g_url, "http://10.1.2.3:8888/search?q=Who%20won%3F%20a%26b&format=json");
    assert_string_equal(g_lim.allow, "0.0.0.0/0,::/0"); /* the operator's backend, as set */
    assert_true(g_lim.timeout > 9.9 && g_lim.timeout < 10.1);
    assert_int_equal(next.nmsgs, 5);
    assert_string_equal(next.msgs[3].role, "system");
    assert_string_equal(next.msgs[3].content, "Web search results for \"Who won? a&b\":\n"
                                              "[1] T1\n    https://a.test/1\n    first snippet\n"
                                              "[2] T2\n    https://b.test/2\n    s2\n\n"
                                              "Cite these sources as [n] where you use them.");
    assert_string_equal(next.msgs[4].content, "Who won? a&b");
    assert_string_equal(next.msgs[0].content, "Be brief.");
    assert_int_equal(e.fake.ncalls, 0);
    assert_int_equal(e.ctx.usage.calls, 0);
    /* a URL that has a query already gets '&' */
    assert_int_equal(prepare(&e, &next, "http://s.test/s?lang=en", PX_OK, "{\"results\":[]}"),
                     PX_OK);
    assert_string_equal(g_url, "http://s.test/s?lang=en&q=Who%20won%3F%20a%26b&format=json");
    assert_non_null(strstr(next.msgs[3].content, "(no results)"));
    env_cleanup(&e);
    fetch_set_transport(NULL);
}

/* web_search_fetch: the first N results' pages fetched in one batch under the SSRF guard
 * (the operator's --readurls-allow, not allow-all), their readable text under each result; a
 * failed or unreadable page keeps its snippet only. */
static void test_fetch_pages(void **state)
{
    const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct chat_request next;
    struct env e;
    const char *results = "{\"results\":[{\"title\":\"T1\",\"url\":\"https://a.test/1\","
                          "\"content\":\"s1\"},{\"title\":\"T2\",\"url\":\"https://fail.test/\","
                          "\"content\":\"s2\"},{\"title\":\"T3\",\"url\":\"https://bin.test/\","
                          "\"content\":\"s3\"},{\"title\":\"T4\",\"url\":\"https://d.test/\","
                          "\"content\":\"s4\"}]}";

    (void)state;
    fetch_set_transport(fake_fetch);
    env_init(&e, TWO_TURNS, rows);
    env_option(&e, "web_search_fetch", 3);
    env_option(&e, "web_search_page_bytes", 14);
    assert_int_equal(prepare(&e, &next, "http://s.test/", PX_OK, results), PX_OK);
    assert_int_equal(g_batches, 2);
    assert_int_equal(g_pages, 3);  /* the first 3 of 4 */
    assert_null(g_page_lim.allow); /* the guard with the operator's allow list */
    assert_int_equal(g_page_lim.max_redirects, 5);
    assert_string_equal(next.msgs[3].content,
                        "Web search results for \"Who won? a&b\":\n"
                        "[1] T1\n    https://a.test/1\n    s1\n    Page: Body of the pa\n"
                        "[2] T2\n    https://fail.test/\n    s2\n"
                        "[3] T3\n    https://bin.test/\n    s3\n"
                        "[4] T4\n    https://d.test/\n    s4\n\n"
                        "Cite these sources as [n] where you use them.");
    assert_int_equal(e.fake.ncalls, 0);
    /* off by default: one batch, snippets only */
    env_option(&e, "web_search_fetch", 0);
    assert_int_equal(prepare(&e, &next, "http://s.test/", PX_OK, results), PX_OK);
    assert_int_equal(g_batches, 1);
    assert_null(strstr(next.msgs[3].content, "Page:"));
    env_cleanup(&e);
    fetch_set_transport(NULL);
}

static void test_bad_backends(void **state)
{
    const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct chat_request next;
    struct env e;

    (void)state;
    fetch_set_transport(fake_fetch);
    env_init(&e, TWO_TURNS, rows);
    assert_int_equal(prepare(&e, &next, NULL, PX_OK, "{}"), PX_EINVAL);
    assert_non_null(strstr(e.err.message, "--search-url"));
    assert_int_equal(g_batches, 0);
    assert_int_equal(prepare(&e, &next, "http://s.test/", PX_ETIMEDOUT, ""), PX_ETIMEDOUT);
    assert_non_null(strstr(e.err.message, "timed out"));
    assert_int_equal(prepare(&e, &next, "http://s.test/", PX_EHTTP, "oops"), PX_EUPSTREAM);
    assert_non_null(strstr(e.err.message, "HTTP 500"));
    assert_int_equal(prepare(&e, &next, "http://s.test/", PX_OK, "<html>not json"), PX_EUPSTREAM);
    assert_non_null(strstr(e.err.message, "not JSON"));
    assert_int_equal(prepare(&e, &next, "http://s.test/", PX_OK, "{\"results\":{}}"), PX_EUPSTREAM);
    assert_non_null(strstr(e.err.message, "not {\"results\""));
    assert_int_equal(prepare(&e, &next, "http://s.test/", PX_OK, "[1,2]"), PX_EUPSTREAM);
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
    fetch_set_transport(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results),
        cmocka_unit_test(test_fetch_pages),
        cmocka_unit_test(test_bad_backends),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
