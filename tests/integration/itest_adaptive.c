/* itest_adaptive.c: adaptive sampling through the real proxy against the mock upstream, the
 * calls and choices counted by the mock (/mock/stats):
 *   - an easy prompt (every sample the same: reply=) ends after one n=3 call (sc) / n=4 (mv);
 *   - a contested one (every sample different) draws the whole budget, 3 then 2;
 *   - on 60 noisy questions (right with p = 0.8) adaptive sc draws fewer samples than fixed k
 *     and nearly always picks the fixed run's answer (the mock's draws per question are the
 *     same sequence in both runs, so adaptive sees a prefix of what fixed k sees).
 * The statistical bounds: adaptive draws 3, 4 or 5 samples per question, 3.65 on average at
 * p = 0.8 (the rule on this mock, simulated); "total < 4.5 per question" fails with
 * probability <= exp(-2 * 60 * 0.85^2 / 2^2) = 4e-10 (Hoeffding). The adaptive and fixed
 * answers differ with probability <= 0.05 per question by the rule (0.001 simulated);
 * "more than 12 of 60 differ" has probability < 1e-6 under Binomial(60, 0.05). The mock's
 * seed is fixed, so the test is deterministic anyway; the bounds say it is not tuned to it. */
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

#define KEY       "sk-adaptive-test"
#define QUESTIONS 60

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

/* POSTs and returns the answer text (malloc'd). */
static char *ask(const char *model, const char *q, const char *extra)
{
    struct http_resp r;
    char *body = chat_body(model, q, extra);
    char *text = NULL;

    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, auth, &r), 0);
    if (r.status != 200)
        fprintf(stderr, "%s: %ld %.300s\n", model, r.status, r.body);
    assert_int_equal(r.status, 200);
    cJSON *j = http_json(&r);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *t =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "message"), "content");
    assert_true(cJSON_IsString(t));
    text = strdup(t->valuestring);
    cJSON_Delete(j);
    http_resp_free(&r);
    free(body);
    return text;
}

static void expect(const char *model, const char *extra, long want_calls, long want_choices)
{
    mock_reset(mock.port);
    free(ask(model, "Which colour is the sky?", extra));
    assert_int_equal(mock_stat(mock.port, "calls"), want_calls);
    assert_int_equal(mock_stat(mock.port, "choices"), want_choices);
}

static void test_easy_and_contested(void **state)
{
    (void)state;
    /* easy: an agreeing first batch of 2 */
    expect("self_consistency-mock@reply=The%20answer%20is%20blue.", NULL, 1, 2);
    expect("majority_voting-mock@reply=The%20answer%20is%20blue.", NULL, 1, 2);
    /* contested: all different ("mock reply <i>: ..."), the whole budget in 3 or 4 rounds */
    expect("self_consistency-mock@words=2", NULL, 3, 5);                    /* 2, 2, 1 */
    expect("majority_voting-mock@words=2", NULL, 3, 6);                     /* 2, 3, 1 */
    expect("self_consistency-mock@words=2", "\"optillm_samples\":9", 4, 9); /* 2, 4, 2, 1 */
    /* the stricter risk of 0.05: a first batch of 3 (two agreeing of 5 are not enough) */
    expect("self_consistency-mock@reply=The%20answer%20is%20blue.",
           "\"optillm_adaptive_risk\":0.05", 1, 3);
    /* optillm_adaptive 0: fixed k in one call, easy or not */
    expect("self_consistency-mock@reply=The%20answer%20is%20blue.", "\"optillm_adaptive\":0", 1, 5);
    /* an upstream without n: the rounds are parallel single calls */
    expect("self_consistency-mock@reply=blue,n_mode=refuse", NULL, 3, 2); /* 1 refused + 2 */
}

static void test_noisy_savings(void **state)
{
    static char *fixed[QUESTIONS], *adaptive[QUESTIONS];
    long choices[2];
    int differ = 0;

    (void)state;
    for (int run = 0; run < 2; run++) {
        mock_reset(mock.port);
        for (int i = 0; i < QUESTIONS; i++) {
            char q[64];

            snprintf(q, sizeof(q), "What is %d + %d * %d?", 10 + i, 2 + i % 7, 3 + i % 5);
            (run ? fixed : adaptive)[i] = ask("self_consistency-mock@noisy=1,p=0.8", q,
                                              run ? "\"optillm_adaptive\":0" : NULL);
        }
        choices[run] = mock_stat(mock.port, "choices");
    }
    for (int i = 0; i < QUESTIONS; i++) {
        differ += strcmp(fixed[i], adaptive[i]) != 0;
        free(fixed[i]);
        free(adaptive[i]);
    }
    fprintf(stderr, "adaptive %ld samples, fixed %ld, %d of %d answers differ\n", choices[0],
            choices[1], differ, QUESTIONS);
    assert_int_equal(choices[1], 5 * QUESTIONS);
    /* at p = 0.8 about 2.75 samples per question are expected (bench/adaptive.sh); each
     * question takes 2..5, so 3.5 on average over 60 is several standard deviations away */
    assert_true(choices[0] >= 2 * QUESTIONS);
    assert_true(choices[0] * 2 < 7 * QUESTIONS); /* < 3.5 per question */
    assert_true(differ <= 12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_easy_and_contested),
        cmocka_unit_test(test_noisy_savings),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
