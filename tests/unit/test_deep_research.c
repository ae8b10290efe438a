/* test_deep_research.c: deep_research on a fake fetch transport and a scripted upstream: the
 * stages in order (plan, draft, gaps, denoise, gaps ending the loop, report), each step's
 * searches in one batch (parallel), sources numbered and deduplicated into the report prompt,
 * the iteration bound, junk and failed searches tolerated, no --search-url a 400, usage. */
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

extern const struct approach approach_deep_research;
#define THE_APPROACH approach_deep_research

#include "script_env.h"

static int g_batches;
static size_t g_sizes[8];

static int fake_fetch(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                      const struct fetch_limits *lim)
{
    (void)ctx;
    assert_string_equal(lim->allow, "0.0.0.0/0,::/0");
    if (g_batches < 8)
        g_sizes[g_batches] = n;
    g_batches++;
    for (size_t i = 0; i < n; i++) {
        const char *q = strstr(reqs[i].url, "q=") + 2;

        reqs[i].status = PX_OK;
        reqs[i].content_type = "application/json";
        if (!strncmp(q, "junk", 4)) {
            reqs[i].body = "<html>";
        } else if (!strncmp(q, "down", 4)) {
            reqs[i].status = PX_ETIMEDOUT;
            reqs[i].error = "timed out";
            reqs[i].body = "";
        } else {
            char u[64];

            snprintf(u, sizeof(u), "%.*s", (int)strcspn(q, "&"), q);
            reqs[i].body = arena_printf(
                ctx->arena,
                "{\"results\":[{\"title\":\"T-%s\",\"url\":\"https://x.test/%s\",\"content\":"
                "\"S-%s\"},{\"title\":\"shared\",\"url\":\"https://x.test/shared\"}]}",
                u, u, u);
        }
        reqs[i].len = strlen(reqs[i].body);
    }
    return (int)n;
}

static void test_loop(void **state)
{
    const struct row rows[] = {
        {"deep_research/plan", NULL, "Plan: a, b.\nQUERY: alpha\nQUERY: \"beta\"\nQUERY: junk1",
         NULL},
        {"deep_research/draft", NULL, "DRAFT-1 [1]", NULL},
        {"deep_research/gaps", "DRAFT-1", "Missing gamma.\nQUERY: gamma\nQUERY: down", NULL},
        {"deep_research/denoise", NULL, "DRAFT-2 [1][4]", NULL},
        {"deep_research/gaps", "DRAFT-2", "QUERY: NONE", NULL},
        {"deep_research/report", NULL, "REPORT [1]\nReferences\n[1] T-alpha", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    g_batches = 0;
    fetch_set_transport(fake_fetch);
    env_init(&e, BODY(""), rows);
    snprintf(e.cfg.search_url, sizeof(e.cfg.search_url), "http://s.test/search");
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "REPORT [1]\nReferences\n[1] T-alpha");
    check_sequential(&e, 6);
    assert_string_equal(call_at(&e, 0)->stage, "deep_research/plan");
    assert_string_equal(call_at(&e, 1)->stage, "deep_research/draft");
    assert_string_equal(call_at(&e, 2)->stage, "deep_research/gaps");
    assert_string_equal(call_at(&e, 3)->stage, "deep_research/denoise");
    assert_string_equal(call_at(&e, 4)->stage, "deep_research/gaps");
    assert_string_equal(call_at(&e, 5)->stage, "deep_research/report");
    assert_int_equal(e.script.unexpected, 0);
    /* two steps of searches, each one batch */
    assert_int_equal(g_batches, 2);
    assert_int_equal(g_sizes[0], 3);
    assert_int_equal(g_sizes[1], 2);
    check_usage(&e);
    env_cleanup(&e);
    fetch_set_transport(NULL);
}

/* The report prompt holds the numbered, distinct sources. */
static void test_sources_and_bounds(void **state)
{
    const struct row rows[] = {
        {"deep_research/plan", NULL, "QUERY: alpha\nQUERY: beta", NULL},
        {"deep_research/draft", NULL, "D", NULL},
        {"deep_research/gaps", NULL, "QUERY: gamma", NULL},
        {"deep_research/denoise", NULL, "D", NULL},
        {"deep_research/report",
         "[1] T-alpha - https://x.test/alpha\n    S-alpha\n[2] shared - https://x.test/shared\n"
         "    \n[3] T-beta - https://x.test/beta",
         "OK", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    g_batches = 0;
    fetch_set_transport(fake_fetch);
    env_init(&e, BODY(""), rows);
    env_option(&e, "deep_research_iterations", 1); /* the loop stops at the bound */
    snprintf(e.cfg.search_url, sizeof(e.cfg.search_url), "http://s.test/search");
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "OK");
    check_sequential(&e, 5);
    assert_int_equal(g_batches, 2);
    check_usage(&e);
    env_cleanup(&e);

    /* no --search-url: 400 naming the flag, no call */
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EINVAL);
    assert_non_null(strstr(e.err.message, "--search-url"));
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
    fetch_set_transport(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop),
        cmocka_unit_test(test_sources_and_bounds),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
