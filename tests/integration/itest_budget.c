/* itest_budget.c: per-request budgets (optillm_max_calls, optillm_max_tokens, --max-calls)
 * through the real proxy, the calls counted by the mock (/mock/stats): every approach that
 * degrades stays within the budget and says how in X-Optillm-Budget; one that cannot is
 * refused with 400 before any upstream call. */
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

#define KEY "sk-budget-test"

static struct proc mock;
static struct proc px;
static const char *const auth[] = {"Authorization: Bearer " KEY, NULL};

static int setup(void **state)
{
    static const char *const env[] = {"OPENAI_API_KEY=" KEY, NULL};

    (void)state;
    harness_deadline(240);
    if (mock_start(&mock, NULL) != 0)
        return -1;
    return proxy_start(&px, mock.port, NULL, env);
}

static int teardown(void **state)
{
    (void)state;
    return proc_stop(&px) == 0 && proc_stop(&mock) == 0 ? 0 : -1;
}

/* One request; returns the mock's call count; *header gets X-Optillm-Budget ("" if none). */
static long ask(int port, const char *model, const char *extra, long want_status, char *header,
                size_t hlen)
{
    struct http_resp r;
    char *body = chat_body(model, "What is 2 + 3?", extra);

    mock_reset(mock.port);
    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, auth, &r), 0);
    if (r.status != want_status)
        fprintf(stderr, "%s %s: %ld %.300s\n", model, extra, r.status, r.body);
    assert_int_equal(r.status, want_status);
    if (!http_header(&r, "X-Optillm-Budget", header, hlen))
        header[0] = '\0';
    http_resp_free(&r);
    free(body);
    return mock_stat(mock.port, "calls");
}

static void degrades(const char *model, const char *extra, long max_calls, const char *note)
{
    char h[256], want[64];
    long calls = ask(px.port, model, extra, 200, h, sizeof(h));

    fprintf(stderr, "%-40s %-45s %ld calls | %s\n", model, extra, calls, h);
    assert_true(calls <= max_calls);
    snprintf(want, sizeof(want), "calls=%ld/%ld", calls, max_calls);
    assert_non_null(strstr(h, want));
    if (note)
        assert_non_null(strstr(h, note));
}

static void test_degrade_within_budget(void **state)
{
    (void)state;
    /* with n: a contested vote gets one round per call */
    degrades("self_consistency-mock@words=2", "\"optillm_max_calls\":1", 1, "samples=2/5");
    /* bon: 2 samples and their 2 ratings; 1 sample alone needs no rating */
    degrades("bon-mock@noisy=1", "\"optillm_max_calls\":3", 3, "samples=2/3");
    degrades("bon-mock@noisy=1", "\"optillm_max_calls\":1", 1, "samples=1/3");
    /* moa: no critique at 2 calls; fewer drafts without n */
    degrades("moa-mock@noisy=1", "\"optillm_max_calls\":2", 2, "critique=0");
    /* mcts: fewer simulations (6 calls each at depth 1) */
    degrades("mcts-mock@noisy=1", "\"optillm_max_calls\":7", 7, "simulations=1/2");
    degrades("mcts-mock@noisy=1", "\"optillm_max_calls\":12,\"optillm_simulations\":3", 12,
             "simulations=2/3");
    /* a budget that is not reached: the header without a note */
    degrades("bon-mock@noisy=1", "\"optillm_max_calls\":10", 10, NULL);
}

/* An upstream without n (a proxy of its own: n support is remembered for the process's life):
 * samples are single calls, as many as the budget allows. */
static void test_degrade_without_n(void **state)
{
    static const char *const env[] = {"OPENAI_API_KEY=" KEY, NULL};
    struct proc keep = px;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, NULL, env), 0);
    /* the first: 1 refused n call + 1 single call of the 2 of the first round */
    degrades("self_consistency-mock@n_mode=refuse,words=2", "\"optillm_max_calls\":2", 2,
             "samples=1/5");
    degrades("self_consistency-mock@n_mode=refuse,words=2",
             "\"optillm_max_calls\":4,\"optillm_adaptive\":0", 4, "samples=4/5");
    /* every single call is choice 0, so the 2 agree and the vote ends within the budget */
    degrades("self_consistency-mock@n_mode=refuse,words=2", "\"optillm_max_calls\":4", 4, NULL);
    degrades("majority_voting-mock@n_mode=refuse,words=2", "\"optillm_max_calls\":1", 1,
             "samples=1/6");
    degrades("moa-mock@noisy=1,n_mode=refuse", "\"optillm_max_calls\":4", 4, "candidates=2/3");
    degrades("bon-mock@noisy=1,n_mode=refuse", "\"optillm_max_calls\":5", 5, "samples=2/3");
    degrades("mcts-mock@noisy=1,n_mode=refuse", "\"optillm_max_calls\":9", 9, "simulations=1/2");
    assert_int_equal(proc_stop(&px), 0);
    px = keep;
}

static void test_token_budget(void **state)
{
    char h[256];
    long calls;

    (void)state;
    /* a contested vote stops after the first round once the tokens are spent */
    calls = ask(px.port, "self_consistency-mock@words=2", "\"optillm_max_tokens\":10", 200, h,
                sizeof(h));
    fprintf(stderr, "max_tokens 10: %ld calls | %s\n", calls, h);
    assert_int_equal(calls, 1);
    assert_non_null(strstr(h, "tokens="));
    assert_non_null(strstr(h, "samples=2/5"));
    /* a roomy budget: the whole vote (rounds of 2, 2 and 1: every sample differs) */
    calls = ask(px.port, "self_consistency-mock@words=2", "\"optillm_max_tokens\":100000", 200, h,
                sizeof(h));
    assert_int_equal(calls, 3);
    assert_null(strstr(h, "samples="));
    /* no budget: no header */
    ask(px.port, "self_consistency-mock@words=2", NULL, 200, h, sizeof(h));
    assert_string_equal(h, "");
}

static void test_refused_up_front(void **state)
{
    char h[256];

    (void)state;
    /* cepo cannot degrade: 19 calls do not fit in 5 */
    assert_int_equal(
        ask(px.port, "cepo-mock@noisy=1", "\"optillm_max_calls\":5", 400, h, sizeof(h)), 0);
    assert_int_equal(ask(px.port, "moa-mock@noisy=1", "\"optillm_max_calls\":1", 400, h, sizeof(h)),
                     0);
    assert_int_equal(
        ask(px.port, "mcts-mock@noisy=1", "\"optillm_max_calls\":4", 400, h, sizeof(h)), 0);
    /* re2 fits in 1 */
    assert_int_equal(ask(px.port, "re2-mock@noisy=1", "\"optillm_max_calls\":1", 200, h, sizeof(h)),
                     1);
}

static void test_server_flag(void **state)
{
    static const char *const env[] = {"OPENAI_API_KEY=" KEY, NULL};
    static const char *const args[] = {"--max-calls", "2", NULL};
    struct proc p2;
    char h[256];

    (void)state;
    assert_int_equal(proxy_start(&p2, mock.port, args, env), 0);
    assert_true(ask(p2.port, "bon-mock@noisy=1", NULL, 200, h, sizeof(h)) <= 2);
    assert_non_null(strstr(h, "calls="));
    /* the body may lower it per request */
    assert_int_equal(ask(p2.port, "bon-mock@noisy=1", "\"optillm_max_calls\":1", 200, h, sizeof(h)),
                     1);
    assert_int_equal(proc_stop(&p2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_degrade_within_budget), cmocka_unit_test(test_token_budget),
        cmocka_unit_test(test_degrade_without_n),     cmocka_unit_test(test_refused_up_front),
        cmocka_unit_test(test_server_flag),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
