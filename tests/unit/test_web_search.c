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

static int fake_fetch(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                      const struct fetch_limits *lim)
{
    (void)ctx;
    g_batches++;
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
        cmocka_unit_test(test_bad_backends),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
