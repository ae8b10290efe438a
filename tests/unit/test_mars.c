/* test_mars.c: mars on the fake upstream: agents at their temperatures in one round, cross-
 * verification by other agents in one round, improvement with the reviews, early stop, the
 * call budget, majority and synthesis endings, verdict parsing, partial failure and usage. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "script_env.h"

extern const struct approach approach_mars;

#define A1    "[A1] 6*7 = 42. The answer is 42."
#define B1    "[B1] Six sevens: \\boxed{41}"
#define C1    "[C1] Seven sixes are 42, so \\boxed{42}."
#define A2    "[A2] Rechecked: 6*7 = 42. \\boxed{42}"
#define B2    "[B2] Rechecked: \\boxed{42}"
#define C2    "[C2] Rechecked: seven sixes, \\boxed{42}"
#define OK    "All steps check out.\nVERDICT: CORRECT"
#define BAD   "Step 2 is wrong: the product is miscounted.\nVERDICT: INCORRECT"
#define SYNTH "Combining the work: \\boxed{42}"

/* The number after 'label' in s (skipping white space), or -1. */
static int number_after(const char *s, const char *label)
{
    const char *p = strstr(s, label);

    if (!p)
        return -1;
    p += strlen(label);
    while (*p == ' ' || *p == '\n')
        p++;
    return (int)strtol(p, NULL, 10);
}

static void test_descriptor(void **state)
{
    static const struct {
        const char *name;
        double def;
    } opts[] = {{"mars_agents", 3},
                {"mars_verify_passes", 2},
                {"mars_max_iterations", 3},
                {"mars_max_calls", 40}};
    const struct approach_option *o = approach_mars.options;

    (void)state;
    check_descriptor(&approach_mars, "mars", 37, 9);
    for (size_t i = 0; i < PX_ARRAY_LEN(opts); i++) {
        assert_string_equal(o[i].name, opts[i].name);
        assert_true(o[i].def == opts[i].def && o[i].integer);
    }
    assert_null(o[PX_ARRAY_LEN(opts)].name);
    assert_non_null(strstr(prompt_get("mars/verify"), "VERDICT: CORRECT"));
}

/* A first solution passes both checks: 2 rounds, 9 calls, no improvement or synthesis. Every
 * check is by an agent other than the author, and the two checks of a solution by different
 * agents. */
static void test_structure(void **state)
{
    static const struct row rows[] = {
        {"mars/explore", NULL, A1, NULL},   {"mars/explore", NULL, B1, NULL},
        {"mars/explore", NULL, C1, NULL},   {"mars/verify", "[A1]", OK, NULL},
        {"mars/verify", "[B1]", BAD, NULL}, {"mars/verify", "[C1]", OK, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const double temps[] = {0.3, 0.6, 1.0};
    struct env e;
    int seen[3][2];

    (void)state;
    env_init(&e, BODY(",\"temperature\":1.7,\"max_tokens\":300"), rows);
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    /* A and C are verified and agree; A is shorter */
    assert_string_equal(e.out.text, A1);
    assert_string_equal(e.out.finish_reason, "stop");
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 3);
    for (size_t i = 0; i < 3; i++) {
        const struct fake_record *r = fake_llm_call(&e.fake, 0, i);

        /* the agents' own temperatures; the client's max_tokens is left to the transport */
        check_call(r, "mars/explore", 1, temps[i], -1, false);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].role, "system");
        assert_int_equal(number_after(r->msgs[1].content, "You are agent"), (int)i + 1);
        assert_non_null(strstr(r->msgs[1].content, Q));
        assert_non_null(strstr(r->msgs[1].content, SYS)); /* the client's instructions */
    }
    check_round(&e, 1, 6, "mars/verify", 1, 0.1, -1);
    memset(seen, -1, sizeof(seen));
    for (size_t i = 0; i < 6; i++) {
        const char *user = fake_record_last(fake_llm_call(&e.fake, 1, i));
        int verifier = number_after(user, "You are agent");
        int author = number_after(user, "Review the solution that agent");
        int pass = seen[author - 1][0] < 0 ? 0 : 1;

        assert_true(author >= 1 && author <= 3);
        assert_true(verifier >= 1 && verifier <= 3);
        assert_int_not_equal(verifier, author);
        assert_non_null(strstr(user, (const char *[]){A1, B1, C1}[author - 1]));
        seen[author - 1][pass] = verifier;
    }
    for (int a = 0; a < 3; a++) {
        assert_true(seen[a][0] > 0 && seen[a][1] > 0);
        assert_int_not_equal(seen[a][0], seen[a][1]);
    }
    assert_int_equal(e.ctx.usage.calls, 9);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* With 4 agents and 3 checks per solution, the three checkers are the three other agents. */
static void test_verifiers_distinct(void **state)
{
    static const struct row rows[] = {
        {"mars/explore", NULL, A1, NULL}, {"mars/explore", NULL, B1, NULL},
        {"mars/explore", NULL, C1, NULL}, {"mars/explore", NULL, A2, NULL},
        {"mars/verify", "", OK, NULL},    {NULL, NULL, NULL, NULL},
    };
    struct env e;
    int mask[5] = {0};

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "mars_agents", 4);
    env_option(&e, "mars_verify_passes", 3);
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 4);
    assert_true(fabs(fake_llm_call(&e.fake, 0, 3)->temperature - 0.3) < 1e-9); /* 4th: 0.3 */
    check_round(&e, 1, 12, "mars/verify", 1, 0.1, -1);
    for (size_t i = 0; i < 12; i++) {
        const char *user = fake_record_last(fake_llm_call(&e.fake, 1, i));
        int verifier = number_after(user, "You are agent");
        int author = number_after(user, "Review the solution that agent");

        assert_int_not_equal(verifier, author);
        assert_int_equal(mask[author] & (1 << verifier), 0);
        mask[author] |= 1 << verifier;
    }
    for (int a = 1; a <= 4; a++)
        assert_int_equal(mask[a], 0x1e & ~(1 << a));
    check_usage(&e);
    env_cleanup(&e);
}

/* No solution passes: the authors rewrite them with the reviews (most passed checks first),
 * the new versions are checked, and the loop stops once one passes. */
static void test_improvement(void **state)
{
    static const struct row rows[] = {
        {"mars/explore", NULL, A1, NULL},
        {"mars/explore", NULL, B1, NULL},
        {"mars/explore", NULL, C1, NULL},
        /* round 1, pass-major: A B C, then A B C */
        {"mars/verify", NULL, BAD, NULL},
        {"mars/verify", NULL, "Wrong base case.\nVERDICT: INCORRECT", NULL},
        {"mars/verify", NULL, OK, NULL},
        {"mars/verify", NULL, "A second error in step 3.\nVERDICT: INCORRECT", NULL},
        {"mars/verify", NULL, "I cannot tell.", NULL},
        {"mars/verify", NULL, "Misses a case.\nVERDICT: INCOMPLETE", NULL},
        {"mars/improve", "[A1]", A2, NULL},
        {"mars/improve", "[B1]", B2, NULL},
        {"mars/improve", "[C1]", C2, NULL},
        /* round 3, for C2 A2 B2 (C had a passed check, so it comes first) */
        {"mars/verify", NULL, OK, NULL},
        {"mars/verify", NULL, BAD, NULL},
        {"mars/verify", NULL, OK, NULL},
        {"mars/verify", NULL, OK, NULL},
        {"mars/verify", NULL, OK, NULL},
        {"mars/verify", NULL, BAD, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    assert_string_equal(e.out.text, C2);
    assert_int_equal(e.fake.rounds, 4);
    check_round(&e, 1, 6, "mars/verify", 1, 0.1, -1);
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 3);
    /* C (agent 3, T=1.0) first, then A (0.3), then B (0.6) */
    r = fake_llm_call(&e.fake, 2, 0);
    check_call(r, "mars/improve", 1, 1.0, -1, false);
    assert_non_null(strstr(r->msgs[1].content, C1));
    assert_non_null(strstr(r->msgs[1].content, "Misses a case."));
    assert_null(strstr(r->msgs[1].content, "All steps check out")); /* passed checks: no */
    r = fake_llm_call(&e.fake, 2, 1);
    check_call(r, "mars/improve", 1, 0.3, -1, false);
    assert_int_equal(number_after(r->msgs[1].content, "You are agent"), 1);
    assert_non_null(strstr(r->msgs[1].content, "Step 2 is wrong"));
    assert_non_null(strstr(r->msgs[1].content, "A second error in step 3."));
    assert_int_equal(fake_count(r->msgs[1].content, "Review by agent"), 2);
    r = fake_llm_call(&e.fake, 2, 2);
    check_call(r, "mars/improve", 1, 0.6, -1, false);
    assert_non_null(strstr(r->msgs[1].content, "I cannot tell.")); /* no verdict: not a pass */
    check_round(&e, 3, 6, "mars/verify", 1, 0.1, -1);
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 3, 0)), C2));
    assert_null(strstr(fake_record_last(fake_llm_call(&e.fake, 3, 0)), C1));
    assert_int_equal(e.ctx.usage.calls, 18);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Nothing verified, no iterations: the answer 2 of 3 solutions share, without a call. */
static void test_majority(void **state)
{
    static const struct row rows[] = {
        {"mars/explore", NULL, C1, NULL}, {"mars/explore", NULL, B1, NULL},
        {"mars/explore", NULL, A1, NULL}, {"mars/verify", "", BAD, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "mars_max_iterations", 0);
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    assert_string_equal(e.out.text, A1); /* 42 twice; A1 is the shorter */
    assert_int_equal(e.fake.rounds, 2);
    check_usage(&e);
    env_cleanup(&e);
}

/* Three different answers and no verified solution: one synthesis (streamed when asked) with
 * every solution and its checks; when it fails, the best solution (or the error if it
 * streamed). A's first check passes, every other one fails (checks in pass-major order). */
static void test_synthesis(void **state)
{
    static const char *const texts[] = {A1, B1, "[D1] It is \\boxed{40}"};

    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        const struct row rows[] = {
            {"mars/explore", NULL, texts[0], NULL},
            {"mars/explore", NULL, texts[1], NULL},
            {"mars/explore", NULL, texts[2], NULL},
            {"mars/verify", NULL, OK, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/synthesize", NULL, SYNTH, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;
        const struct fake_record *r;

        env_init(&e, BODY(""), rows);
        env_option(&e, "mars_max_iterations", 0);
        e.ctx.stream_final = stream;
        assert_int_equal(env_run(&e, &approach_mars), PX_OK);
        assert_string_equal(e.out.text, SYNTH);
        assert_int_equal(e.fake.rounds, 3);
        r = fake_llm_call(&e.fake, 2, 0);
        check_call(r, "mars/synthesize", 1, 0.3, -1, stream);
        for (size_t i = 0; i < 3; i++)
            assert_non_null(strstr(r->msgs[1].content, texts[i]));
        /* A passed one of its two checks: listed first */
        assert_non_null(strstr(r->msgs[1].content, "<solution 1: 1 of 2 checks passed>\n" A1));
        assert_non_null(strstr(r->msgs[1].content, SYS));
        assert_int_equal(e.ctx.usage.calls, 10);
        check_usage(&e);
        env_cleanup(&e);
    }

    for (int stream = 0; stream < 2; stream++) {
        const struct row rows[] = {
            {"mars/explore", NULL, texts[0], NULL},
            {"mars/explore", NULL, texts[1], NULL},
            {"mars/explore", NULL, texts[2], NULL},
            {"mars/verify", NULL, OK, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/verify", NULL, BAD, NULL},
            {"mars/synthesize", NULL, NULL, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        env_option(&e, "mars_max_iterations", 0);
        e.ctx.stream_final = stream;
        e.fake.fail_status = 500;
        if (stream) {
            assert_int_equal(env_run(&e, &approach_mars), PX_EHTTP);
        } else {
            assert_int_equal(env_run(&e, &approach_mars), PX_OK);
            assert_string_equal(e.out.text, A1); /* one passed check */
        }
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The budget bounds every run; the stages shrink to fit it. */
static void test_budget(void **state)
{
    static const struct row rows[] = {
        {"mars/explore", NULL, A1, NULL},
        {"mars/explore", NULL, B1, NULL},
        {"mars/explore", NULL, "[D1] It is \\boxed{40}", NULL},
        {"mars/verify", "", BAD, NULL},
        {"mars/improve", "[A1]", A2, NULL},
        {"mars/improve", "[B1]", "[B2] \\boxed{39}", NULL},
        {"mars/improve", "[D1]", "[D2] \\boxed{38}", NULL},
        {"mars/improve", "[A2]", "[A3] \\boxed{37}", NULL},
        {"mars/improve", "[B2]", "[B3] \\boxed{36}", NULL},
        {"mars/improve", "[D2]", "[D3] \\boxed{35}", NULL},
        {"mars/improve", "[A3]", "[A4] \\boxed{34}", NULL},
        {"mars/improve", "[B3]", "[B4] \\boxed{33}", NULL},
        {"mars/improve", "[D3]", "[D4] \\boxed{32}", NULL},
        {"mars/synthesize", NULL, SYNTH, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct {
        int max_calls;
        int calls;
        int rounds;
        bool synthesis;
    } cases[] = {
        {40, 37, 9, true}, /* the default: 3 full iterations */
        {10, 10, 3, true}, /* explore 3, verify 6, synthesis */
        {12, 12, 5, true}, /* + one improvement with one check */
        {3, 3, 1, false},  /* explore 3, nothing left: the best of three */
        {2, 2, 1, false},  /* two agents, nothing left: the better of two */
        {1, 1, 1, false},  /* one agent: its solution */
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        struct env e;

        env_init(&e, BODY(""), rows);
        env_option(&e, "mars_max_calls", cases[i].max_calls);
        assert_int_equal(env_run(&e, &approach_mars), PX_OK);
        if (e.ctx.usage.calls != cases[i].calls || e.fake.rounds != cases[i].rounds)
            fail_msg("max_calls %d: %ld calls in %d rounds, want %d in %d", cases[i].max_calls,
                     e.ctx.usage.calls, e.fake.rounds, cases[i].calls, cases[i].rounds);
        assert_int_equal(fake_llm_stage_calls(&e.fake, "mars/synthesize"), cases[i].synthesis);
        if (cases[i].synthesis)
            assert_string_equal(e.out.text, SYNTH);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* A solution cut off by the length limit is not sent for checks; its author is asked for a
 * shorter one. */
static void test_cut_off(void **state)
{
    static const struct row rows[] = {
        {"mars/explore", NULL, "[A1] Let me expand 6*7 as", "length"},
        {"mars/explore", NULL, B1, NULL},
        {"mars/explore", NULL, C1, NULL},
        {"mars/verify", "[B1]", BAD, NULL},
        {"mars/verify", "[C1]", BAD, NULL},
        {"mars/improve", "[A1]", A2, NULL},
        {"mars/improve", "[B1]", B2, NULL},
        {"mars/improve", "[C1]", C2, NULL},
        {"mars/verify", "[A2]", OK, NULL},
        {"mars/verify", "", BAD, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r = NULL;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    assert_string_equal(e.out.text, A2);
    check_round(&e, 1, 4, "mars/verify", 1, 0.1, -1);
    for (size_t i = 0; i < 3; i++)
        if (strstr(fake_llm_call(&e.fake, 2, i)->msgs[1].content, "[A1]"))
            r = fake_llm_call(&e.fake, 2, i);
    assert_non_null(r);
    assert_non_null(strstr(r->msgs[1].content, "cut off at the length limit"));
    check_round(&e, 3, 6, "mars/verify", 1, 0.1, -1);
    check_usage(&e);
    env_cleanup(&e);
}

/* Verdicts: X's single check decides; a pass makes X the answer (2 rounds), anything else
 * leads to the synthesis (42 vs 41, 3 rounds). */
static void test_verdicts(void **state)
{
    static const struct {
        const char *reply;
        bool pass;
    } cases[] = {
        {"VERDICT: CORRECT", true},
        {"**Verdict:** correct", true},
        {"Overall verdict = Correct.", true},
        {"The solution is CORRECT.", true},
        {"Verdict: CORRECT\nOn reflection...\nVerdict: INCORRECT", false},
        {"VERDICT: INCORRECT", false},
        {"Verdict: not correct", false},
        {"Verdict: partially correct", false},
        {"Everything is correct, but VERDICT: INCOMPLETE", false},
        {"It is correct.", false},
        {"CORRECTNESS: fine", false},
        {"INCORRECT", false},
        {"", false},
        {NULL, false},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"mars/explore", NULL, "[X] so \\boxed{42}", NULL},
            {"mars/explore", NULL, "[Y] so \\boxed{41}", NULL},
            {"mars/verify", "[X]", cases[i].reply, NULL},
            {"mars/verify", "[Y]", "VERDICT: INCORRECT", NULL},
            {"mars/synthesize", NULL, SYNTH, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        env_option(&e, "mars_agents", 2);
        env_option(&e, "mars_verify_passes", 1);
        env_option(&e, "mars_max_iterations", 0);
        assert_int_equal(env_run(&e, &approach_mars), PX_OK);
        if (strcmp(e.out.text, cases[i].pass ? "[X] so \\boxed{42}" : SYNTH) != 0)
            fail_msg("case %zu ('%s'): got '%s'", i, cases[i].reply ? cases[i].reply : "(fails)",
                     e.out.text);
        assert_int_equal(e.fake.rounds, cases[i].pass ? 2 : 3);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Failed agents are dropped; no solution at all fails the request; empty ones give "". */
static void test_failures(void **state)
{
    static const struct row one_fails[] = {
        {"mars/explore", NULL, A1, NULL}, {"mars/explore", NULL, NULL, NULL},
        {"mars/explore", NULL, C1, NULL}, {"mars/verify", "", OK, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row none[] = {{NULL, NULL, NULL, NULL}};
    static const struct row empty[] = {{"mars/explore", "", " ", NULL}, {NULL, NULL, NULL, NULL}};
    static const struct row checks_fail[] = {
        {"mars/explore", NULL, A1, NULL}, {"mars/explore", NULL, B1, NULL},
        {"mars/explore", NULL, C1, NULL}, {"mars/verify", "", NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), one_fails);
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    assert_string_equal(e.out.text, A1);
    check_round(&e, 1, 4, "mars/verify", 1, 0.1, -1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), none);
    e.fake.fail_status = 429;
    assert_int_equal(env_run(&e, &approach_mars), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 429);
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), empty);
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    assert_string_equal(e.out.text, "");
    assert_int_equal(e.fake.rounds, 1);
    env_cleanup(&e);

    /* every check fails: nothing to improve with, the majority answer (42) */
    env_init(&e, BODY(""), checks_fail);
    assert_int_equal(env_run(&e, &approach_mars), PX_OK);
    assert_string_equal(e.out.text, A1);
    assert_int_equal(e.fake.rounds, 2);
    check_usage(&e);
    env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_verifiers_distinct),
        cmocka_unit_test(test_improvement),
        cmocka_unit_test(test_majority),
        cmocka_unit_test(test_synthesis),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_cut_off),
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_failures),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
