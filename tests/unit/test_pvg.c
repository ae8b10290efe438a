/* test_pvg.c: the prover-verifier game on the fake upstream: rounds and their parallel calls,
 * parameters, score parsing, that only helpful solutions can win, n fallback, partial
 * failure and usage sums. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "log.h"
#include "prompt.h"

extern const struct approach approach_pvg;

/* The scripted fake upstream and the request environment (tests/unit/script_env.h). */
#define THE_APPROACH approach_pvg
#include "script_env.h"

/* ---- the scripted game ---------------------------------------------------------------------- */

/* Round 1: H1 and H2 agree on 42, H3 says 43; the sneaky ones say 43, 36, 48. */
#define H1 "Seven added six times: 7+7+7+7+7+7 = 42. The answer is 42."
#define H2 "Multiply: 6*7 = 42. The answer is 42."
#define H3 "6 times 7 is 6*6+7 = 43. The answer is 43."
#define S1 "Since 6*7 = 6*6+6+1 = 43, the answer is 43."
#define S2 "Six times six is 36, so the answer is 36."
#define S3 "Eight sixes make 48. The answer is 48."
/* Round 2 */
#define H4    "Round two: 6*7 = 42, checked as 7*6 = 42. The answer is 42."
#define H5    "Round two: 42. The answer is 42."
#define H6    "Round two: 6*7 = 40 + 2 = 42. The answer is 42."
#define S4    "Round two sneaky: 6*7 = 44. The answer is 44."
#define S5    "Round two sneaky: 6*7 = 41. The answer is 41."
#define S6    "Round two sneaky: 6*7 = 45. The answer is 45."
#define NOTES "- Check 6*6+6 style decompositions: 6*7 is 6*6+6, not +7."

static const struct row game_rows[] = {
    {"pvg/helpful", NULL, H1, NULL},
    {"pvg/helpful", NULL, H2, NULL},
    {"pvg/helpful", NULL, H3, NULL},
    {"pvg/sneaky", NULL, S1, NULL},
    {"pvg/sneaky", NULL, S2, NULL},
    {"pvg/sneaky", NULL, S3, NULL},
    {"pvg/helpful", NULL, H4, NULL},
    {"pvg/helpful", NULL, H5, NULL},
    {"pvg/helpful", NULL, H6, NULL},
    {"pvg/sneaky", NULL, S4, NULL},
    {"pvg/sneaky", NULL, S5, NULL},
    {"pvg/sneaky", NULL, S6, NULL},
    {"pvg/verify", "Seven added six", "Score: 7\nExplanation: fine.", NULL},
    {"pvg/verify", "Multiply: 6*7", "Score: 8\nExplanation: fine.", NULL},
    {"pvg/verify", "6*6+7 = 43", "Score: 2\nExplanation: wrong.", NULL},
    {"pvg/verify", "6*6+6+1", "Score: 9\nExplanation: fooled.", NULL},
    {"pvg/verify", "Six times six", "Score: 1\nExplanation: wrong.", NULL},
    {"pvg/verify", "Eight sixes", "Score: 0\nExplanation: wrong.", NULL},
    {"pvg/verify", "checked as 7*6", "Score: 9\nExplanation: sound.", NULL},
    {"pvg/verify", "Round two: 42.", "Score: 6\nExplanation: terse.", NULL},
    {"pvg/verify", "40 + 2", "Score: 8\nExplanation: fine.", NULL},
    {"pvg/verify", "Round two sneaky", "Score: 1\nExplanation: caught.", NULL},
    {"pvg/refine", NULL, NOTES, NULL},
    {NULL, NULL, NULL, NULL},
};

/* The solution quoted by a verification prompt. */
static const char *quoted_solution(const struct fake_record *r)
{
    static const char *const all[] = {H1, H2, H3, S1, S2, S3, H4, H5, H6, S4, S5, S6};
    const char *user = fake_record_last(r);
    const char *found = NULL;

    for (size_t i = 0; i < PX_ARRAY_LEN(all); i++) {
        if (strstr(user, all[i])) {
            assert_null(found); /* exactly one solution per verification */
            found = all[i];
        }
    }
    assert_non_null(found);
    return found;
}

static void test_pvg_structure(void **state)
{
    static const char *const round1_order[] = {H3, H2, H1, S3, S1, S2};
    struct env e;

    (void)state;
    env_init(&e, BODY(""), game_rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    /* H4 has the top score (9) of all helpful solutions; S1 (9 in round 1) cannot win. */
    assert_string_equal(e.out.text, H4);
    assert_string_equal(e.out.finish_reason, "stop");
    assert_int_equal(e.script.unexpected, 0);

    /* 5 rounds, 17 calls: provers || -> verify || -> refine -> provers || -> verify ||. */
    assert_int_equal(e.fake.rounds, 5);
    assert_int_equal(e.fake.ncalls, 17);
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 2);
    check_call(fake_llm_call(&e.fake, 0, 0), "pvg/helpful", 3, 0.7, 4096, false);
    check_call(fake_llm_call(&e.fake, 0, 1), "pvg/sneaky", 3, 0.7, 4096, false);
    for (size_t i = 0; i < 2; i++) {
        const struct fake_record *r = fake_llm_call(&e.fake, 0, i);

        /* our system prompt, then the client's conversation as sent */
        assert_int_equal(r->nmsgs, 3);
        assert_string_equal(r->msgs[0].role, "system");
        assert_non_null(strstr(r->msgs[0].content, i == 0 ? "HELPFUL" : "SNEAKY"));
        assert_null(strstr(r->msgs[0].content, "earlier round"));
        assert_string_equal(r->msgs[1].content, SYS);
        assert_string_equal(r->msgs[2].content, Q);
        assert_true(r->raw_last);
    }
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 6);
    for (size_t i = 0; i < 6; i++) {
        const struct fake_record *r = fake_llm_call(&e.fake, 1, i);

        check_call(r, "pvg/verify", 1, 0.2, 1024, false);
        assert_int_equal(r->nmsgs, 2);
        assert_non_null(strstr(r->msgs[0].content, "Score:"));
        assert_non_null(strstr(fake_record_last(r), Q));
        assert_non_null(strstr(fake_record_last(r), SYS));
        assert_non_null(strstr(fake_record_last(r), "(none yet)"));
        /* helpful first, then sneaky, each in byte order */
        assert_string_equal(quoted_solution(r), round1_order[i]);
    }
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 1);
    {
        const struct fake_record *r = fake_llm_call(&e.fake, 2, 0);

        check_call(r, "pvg/refine", 1, 0.5, 1024, false);
        /* the best helpful so far (H2, 8) and the best-scored sneaky solution (S1, 9) */
        assert_non_null(strstr(fake_record_last(r), H2));
        assert_non_null(strstr(fake_record_last(r), S1));
        assert_non_null(strstr(fake_record_last(r), "8/10"));
        assert_non_null(strstr(fake_record_last(r), "9/10"));
        assert_null(strstr(fake_record_last(r), H1));
    }
    assert_int_equal(fake_llm_round_calls(&e.fake, 3), 2);
    check_call(fake_llm_call(&e.fake, 3, 0), "pvg/helpful", 3, 0.6, 4096, false);
    check_call(fake_llm_call(&e.fake, 3, 1), "pvg/sneaky", 3, 0.6, 4096, false);
    for (size_t i = 0; i < 2; i++) /* the coach's notes reach both provers... */
        assert_non_null(strstr(fake_llm_call(&e.fake, 3, i)->msgs[0].content, NOTES));
    assert_int_equal(fake_llm_round_calls(&e.fake, 4), 6);
    for (size_t i = 0; i < 6; i++) { /* ...and the verifier, as pitfalls; the problem is Q */
        const struct fake_record *r = fake_llm_call(&e.fake, 4, i);

        check_call(r, "pvg/verify", 1, 0.2, 1024, false);
        assert_non_null(strstr(fake_record_last(r), NOTES));
        assert_non_null(strstr(fake_record_last(r), Q));
    }
    assert_int_equal(e.fake.n_support, 1);
    check_usage(&e);
    env_cleanup(&e);
}

/* Whatever the scores, a sneaky solution is never returned. */
static void test_pvg_sneaky_never_wins(void **state)
{
    static const struct row rows[] = {
        {"pvg/helpful", NULL, H1, NULL},
        {"pvg/helpful", NULL, H3, NULL},
        {"pvg/sneaky", NULL, S1, NULL},
        {"pvg/sneaky", NULL, S2, NULL},
        {"pvg/verify", "Seven added six", "Score: 3", NULL},
        {"pvg/verify", "6*6+7 = 43", "Score: 4", NULL},
        {"pvg/verify", "6*6+6+1", "Score: 10", NULL},
        {"pvg/verify", "Six times six", "Score: 10", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "pvg_rounds", 1);
    env_option(&e, "pvg_solutions", 2);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, H3);
    /* 1 round: provers, then verify; no refinement */
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(e.fake.ncalls, 6);
    check_call(fake_llm_call(&e.fake, 0, 0), "pvg/helpful", 2, 0.7, 4096, false);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "pvg/refine"), 0);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

struct score_case {
    const char *r1, *r3; /* the verifier's replies for H1 and H3 (S1 and S2 get "Score: 5") */
    const char *winner;
};

static void test_pvg_score_formats(void **state)
{
    static const struct score_case cases[] = {
        {"Score: 6\nExplanation: ok", "Score: 7\nExplanation: ok", H3},
        {"**Score:** 8/10", "Score: 7", H1},
        {"Score = 7.5", "Score: 7", H1},
        {"score: 60/100", "Score: 7", H3},
        {"I would give this 9/10.", "Score: 8", H1},
        {"9", "Score: 8", H1},
        {"Score: 15", "Score: 10", H3}, /* clamped: a tie, and H3 is shorter */
        {"Score: 4\nA score of 10 would need more.", "Score: 5", H3}, /* the first score */
        {"garbage", "", H3},                    /* both unscored: the shorter wins */
        {"Score: -3", "no score here", H1},     /* -3 is 0, above unscored */
        {"Score: 0", "Explanation only", H1},   /* 0 is above unscored */
        {"Score: 3 out of 10", "Score: 2", H1}, /* "out of" scale */
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"pvg/helpful", NULL, H1, NULL},
            {"pvg/helpful", NULL, H3, NULL},
            {"pvg/sneaky", NULL, S2, NULL},
            {"pvg/sneaky", NULL, S3, NULL},
            {"pvg/verify", "Seven added six", cases[i].r1, NULL},
            {"pvg/verify", "6*6+7 = 43", cases[i].r3, NULL},
            {"pvg/verify", "answer is", "Score: 5", NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        env_option(&e, "pvg_rounds", 1);
        env_option(&e, "pvg_solutions", 2);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        if (strcmp(e.out.text, cases[i].winner) != 0)
            fail_msg("case %zu: got '%s', want '%s'", i, e.out.text, cases[i].winner);
        env_cleanup(&e);
    }
}

/* Equal scores: a helpful answer other helpful solutions share wins; one a sneaky prover
 * also reached loses; the result does not depend on the order replies arrive in. */
static void test_pvg_tie_breaks(void **state)
{
    /* H1 and H2 agree on 42; H3 says 43, which sneaky S1 also says. H3 is the shortest... */
    static const char *const helpful[3] = {H1, H2, H3};
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};

    (void)state;
    for (size_t p = 0; p < 6; p++) {
        const struct row rows[] = {
            {"pvg/helpful", NULL, helpful[perms[p][0]], NULL},
            {"pvg/helpful", NULL, helpful[perms[p][1]], NULL},
            {"pvg/helpful", NULL, helpful[perms[p][2]], NULL},
            {"pvg/sneaky", NULL, p % 2 ? S3 : S1, NULL},
            {"pvg/sneaky", NULL, p % 2 ? S1 : S2, NULL},
            {"pvg/sneaky", NULL, S2, NULL},
            {"pvg/verify", "answer is", "Score: 8", NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        env_option(&e, "pvg_rounds", 1);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        /* ...but H1 and H2 have agreement 2, H3 has 1 - 1 = 0; H2 is shorter than H1. */
        assert_string_equal(e.out.text, H2);
        env_cleanup(&e);
    }
}

/* An upstream that refuses n: the n=k calls fail with 400, the 2k single calls follow in one
 * round; from then on the provers are 2k single calls in one round. */
static void test_pvg_n_refused(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""), game_rows);
    e.fake.n_mode = FAKE_N_REFUSE;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, H4);
    assert_int_equal(e.fake.n_support, 0);
    assert_int_equal(e.fake.rounds, 6);
    check_call(fake_llm_call(&e.fake, 0, 0), "pvg/helpful", 3, 0.7, 4096, false);
    assert_int_equal(fake_llm_call(&e.fake, 0, 0)->http_status, 400);
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 6);
    for (size_t i = 0; i < 6; i++)
        check_call(fake_llm_call(&e.fake, 1, i), i < 3 ? "pvg/helpful" : "pvg/sneaky", 1, 0.7, 4096,
                   false);
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 6); /* verify */
    assert_int_equal(fake_llm_round_calls(&e.fake, 3), 1); /* refine */
    assert_int_equal(fake_llm_round_calls(&e.fake, 4), 6); /* singles straight away */
    for (size_t i = 0; i < 6; i++)
        check_call(fake_llm_call(&e.fake, 4, i), i < 3 ? "pvg/helpful" : "pvg/sneaky", 1, 0.6, 4096,
                   false);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* An upstream that ignores n (one choice back): the rest comes from single calls. */
static void test_pvg_n_ignored(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""), game_rows);
    e.fake.n_mode = FAKE_N_IGNORE;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, H4);
    assert_int_equal(e.fake.n_support, 0);
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 2);
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 4); /* 2 + 2 more */
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 6);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* A failed helpful call in round 1 and a failed refinement: the game goes on, and round 2's
 * helpful solutions (scored without notes) compete. */
static void test_pvg_partial_failure(void **state)
{
    static const struct row rows[] = {
        {"pvg/helpful", NULL, NULL, NULL}, /* round 1's n=3 call fails */
        {"pvg/sneaky", NULL, S1, NULL},
        {"pvg/sneaky", NULL, S2, NULL},
        {"pvg/sneaky", NULL, S3, NULL},
        {"pvg/helpful", NULL, H4, NULL},
        {"pvg/helpful", NULL, H5, NULL},
        {"pvg/helpful", NULL, H6, NULL},
        {"pvg/sneaky", NULL, S4, NULL},
        {"pvg/sneaky", NULL, S5, NULL},
        {"pvg/sneaky", NULL, S6, NULL},
        {"pvg/verify", "checked as 7*6", NULL, NULL}, /* fails: unscored */
        {"pvg/verify", "Round two: 42.", "Score: 6", NULL},
        {"pvg/verify", "40 + 2", "Score: 5", NULL},
        {"pvg/verify", "answer is", "Score: 2", NULL},
        {"pvg/refine", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, H5);
    assert_int_equal(e.fake.rounds, 5);
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 3); /* only the sneaky solutions */
    /* round 2's provers get no notes: the refinement failed */
    assert_null(strstr(fake_llm_call(&e.fake, 3, 0)->msgs[0].content, "earlier round"));
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 4, 0)), "(none yet)"));
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Nothing but failures: the upstream's error, after one round (no point going on). */
static void test_pvg_all_fail(void **state)
{
    static const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.fake.fail_status = 503;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EHTTP);
    assert_int_equal(e.err.http_status, 503);
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    /* The helpful prover always fails, the sneaky one works: still an error, never a sneaky
     * answer. */
    {
        static const struct row sneaky_only[] = {
            {"pvg/sneaky", NULL, S1, NULL},
            {"pvg/sneaky", NULL, S2, NULL},
            {"pvg/sneaky", NULL, S3, NULL},
            {"pvg/sneaky", NULL, S4, NULL},
            {"pvg/sneaky", NULL, S5, NULL},
            {"pvg/sneaky", NULL, S6, NULL},
            {"pvg/verify", "answer is", "Score: 9", NULL},
            {"pvg/refine", NULL, NOTES, NULL},
            {NULL, NULL, NULL, NULL},
        };

        env_init(&e, BODY(""), sneaky_only);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_EHTTP);
        assert_int_equal(e.err.http_status, 500);
        /* round 2 has no helpful solution and no next round: its sneaky ones go unverified */
        assert_int_equal(e.fake.rounds, 4);
        assert_int_equal(fake_llm_stage_calls(&e.fake, "pvg/verify"), 3);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Empty and whitespace solutions are neither verified nor returned; when the helpful prover
 * only says nothing, neither does the answer. */
static void test_pvg_odd_outputs(void **state)
{
    static const struct row rows[] = {
        {"pvg/helpful", NULL, "", NULL},
        {"pvg/helpful", NULL, "  \n", NULL},
        {"pvg/helpful", NULL, "No tags, no numbers, just prose.", "length"},
        {"pvg/sneaky", NULL, "", NULL},
        {"pvg/sneaky", NULL, S1, NULL},
        {"pvg/sneaky", NULL, S2, NULL},
        {"pvg/verify", "just prose", "Explanation: I cannot tell.", NULL},
        {"pvg/verify", "answer is", "Score: 9", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row empty[] = {
        {"pvg/helpful", NULL, "", NULL},
        {"pvg/sneaky", NULL, S1, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "pvg_rounds", 1);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "No tags, no numbers, just prose.");
    assert_string_equal(e.out.finish_reason, "length");
    assert_int_equal(fake_llm_stage_calls(&e.fake, "pvg/verify"), 3);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), empty);
    env_option(&e, "pvg_rounds", 1);
    env_option(&e, "pvg_solutions", 1);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "");
    /* k=1: the two provers are single calls in one round; nothing worth verifying */
    assert_int_equal(e.fake.rounds, 1);
    check_call(fake_llm_call(&e.fake, 0, 0), "pvg/helpful", 1, 0.7, 4096, false);
    check_call(fake_llm_call(&e.fake, 0, 1), "pvg/sneaky", 1, 0.7, 4096, false);
    check_usage(&e);
    env_cleanup(&e);
}

/* The client's temperature starts the schedule (floored at 0.2) and its max_tokens bounds
 * the provers; the verifier and coach keep theirs. Nothing streams: no final completion. */
static void test_pvg_client_params(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.25,\"max_tokens\":300"), game_rows);
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, H4);
    check_call(fake_llm_call(&e.fake, 0, 0), "pvg/helpful", 3, 0.25, 300, false);
    check_call(fake_llm_call(&e.fake, 1, 0), "pvg/verify", 1, 0.2, 1024, false);
    check_call(fake_llm_call(&e.fake, 2, 0), "pvg/refine", 1, 0.5, 1024, false);
    check_call(fake_llm_call(&e.fake, 3, 1), "pvg/sneaky", 3, 0.2, 300, false);
    assert_false(e.ctx.streamed);
    check_usage(&e);
    env_cleanup(&e);
}

/* More rounds: 3R-1 rounds and R(2+2k)+R-1 calls. */
static void test_pvg_rounds_option(void **state)
{
    static const struct row rows[] = {
        {"pvg/helpful", "HELPFUL", H2, NULL},
        {"pvg/sneaky", "SNEAKY", S2, NULL},
        {"pvg/verify", "answer is", "Score: 5", NULL},
        {"pvg/refine", "coach", NOTES, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "pvg_rounds", 3);
    env_option(&e, "pvg_solutions", 2);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, H2);
    assert_int_equal(e.fake.rounds, 8);
    assert_int_equal(e.fake.ncalls, 3 * (2 + 4) + 2);
    check_call(fake_llm_call(&e.fake, 6, 0), "pvg/helpful", 2, 0.5, 4096, false);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);

    /* Per request (once the registry row exists): the body's optillm_ fields win. */
    if (approach_option_find("pvg_rounds") == &approach_pvg.options[0]) {
        env_init(&e, BODY(",\"optillm_pvg_rounds\":1,\"optillm_pvg_solutions\":2"), rows);
        env_option(&e, "pvg_rounds", 3);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        assert_int_equal(e.fake.rounds, 2);
        assert_int_equal(e.fake.ncalls, 6);
        env_cleanup(&e);
    }
}

/* ---- registry row and prompts ----------------------------------------------------------- */

static void test_pvg_row(void **state)
{
    const struct approach *a = &approach_pvg;

    (void)state;
    assert_string_equal(a->slug, "pvg");
    assert_int_equal(a->calls, 17);
    assert_int_equal(a->rounds, 5);
    assert_non_null(a->summary);
    assert_null(strchr(a->summary, '\n'));
    assert_string_equal(a->options[0].name, "pvg_rounds");
    assert_true(a->options[0].def == 2 && a->options[0].integer);
    assert_string_equal(a->options[1].name, "pvg_solutions");
    assert_true(a->options[1].def == 3 && a->options[1].integer);
    assert_null(a->options[2].name);
    for (const char *const *p = a->prompts; *p; p++) {
        assert_non_null(prompt_get(*p));
        assert_false(has_answer_digit(prompt_get(*p)));
    }
    assert_non_null(strstr(prompt_get("pvg/verify"), "{{solution}}"));
    assert_non_null(strstr(prompt_get("pvg/verify"), "{{pitfalls}}"));
    assert_non_null(strstr(prompt_get("pvg/notes"), "{{notes}}"));
    /* once the lead registered the row, the registry is consistent */
    if (approach_find("pvg", 3))
        assert_int_equal(registry_check(), 0);
}

static int group_setup(void **state)
{
    (void)state;
    log_level = LOG_ERROR;
    if (prompt_init(NULL) != 0 || answer_init() != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    answer_cleanup();
    prompt_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pvg_row),
        cmocka_unit_test(test_pvg_structure),
        cmocka_unit_test(test_pvg_sneaky_never_wins),
        cmocka_unit_test(test_pvg_score_formats),
        cmocka_unit_test(test_pvg_tie_breaks),
        cmocka_unit_test(test_pvg_n_refused),
        cmocka_unit_test(test_pvg_n_ignored),
        cmocka_unit_test(test_pvg_partial_failure),
        cmocka_unit_test(test_pvg_all_fail),
        cmocka_unit_test(test_pvg_odd_outputs),
        cmocka_unit_test(test_pvg_client_params),
        cmocka_unit_test(test_pvg_rounds_option),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
