/* test_cepo.c: cepo on the fake upstream: plan (one n call) -> execute -> consolidate ->
 * final -> ratings in 5 rounds; retries of rejected chains, the direct fallback, step 4
 * skipped, plan diversity, the three rating types and their parsers, partial failure, usage. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "script_env.h"

extern const struct approach approach_cepo;

#define FINAL_A "FINAL-A: 6*7 = 42. The answer is 42."
#define FINAL_B "FINAL-B: The answer is 41."
#define FINAL_C "FINAL-C: six sevens, 42. The answer is 42."

static const char *const plans[9] = {"PLAN-1", "PLAN-2", "PLAN-3", "PLAN-4", "PLAN-5",
                                     "PLAN-6", "PLAN-7", "PLAN-8", "PLAN-9"};
static const char *const execs[9] = {"EXEC-1 done", "EXEC-2 done", "EXEC-3 done",
                                     "EXEC-4 done", "EXEC-5 done", "EXEC-6 done",
                                     "EXEC-7 done", "EXEC-8 done", "EXEC-9 done"};

struct script_rows {
    struct row r[ROWS_MAX];
    size_t n;
};

static void add(struct script_rows *s, const char *stage, const char *match, const char *text,
                const char *finish)
{
    assert_true(s->n + 1 < ROWS_MAX);
    s->r[s->n++] = (struct row){stage, match, text, finish};
    s->r[s->n] = (struct row){NULL, NULL, NULL, NULL};
}

/* The default script: 9 plans (chain i goes to candidate i % 3), their executions, one
 * consolidation per candidate (A: EXEC-1/4/7, B: 2/5/8, C: 3/6/9), the finals, the ratings. */
static void std_rows(struct script_rows *s, const char *ra, const char *rb, const char *rc)
{
    s->n = 0;
    for (int i = 0; i < 9; i++)
        add(s, "cepo/plan", NULL, plans[i], NULL);
    for (int i = 0; i < 9; i++)
        add(s, "cepo/execute", plans[i], execs[i], NULL);
    add(s, "cepo/consolidate", "EXEC-1", "SOLUTION-A", NULL);
    add(s, "cepo/consolidate", "EXEC-2", "SOLUTION-B", NULL);
    add(s, "cepo/consolidate", "EXEC-3", "SOLUTION-C", NULL);
    add(s, "cepo/final", "SOLUTION-A", FINAL_A, NULL);
    add(s, "cepo/final", "SOLUTION-B", FINAL_B, NULL);
    add(s, "cepo/final", "SOLUTION-C", FINAL_C, NULL);
    add(s, "cepo/rate", "FINAL-A", ra, NULL);
    add(s, "cepo/rate", "FINAL-B", rb, NULL);
    add(s, "cepo/rate", "FINAL-C", rc, NULL);
}

static void test_descriptor(void **state)
{
    static const char *const names[] = {
        "cepo_bestofn_n",
        "cepo_bestofn_temperature",
        "cepo_bestofn_max_tokens",
        "cepo_bestofn_rating_type",
        "cepo_planning_n",
        "cepo_planning_m",
        "cepo_planning_temperature_step1",
        "cepo_planning_temperature_step2",
        "cepo_planning_temperature_step3",
        "cepo_planning_temperature_step4",
        "cepo_planning_temperature_direct_resp",
        "cepo_planning_max_tokens_step1",
        "cepo_planning_max_tokens_step2",
        "cepo_planning_max_tokens_step3",
        "cepo_planning_max_tokens_step4",
        "cepo_planning_max_tokens_direct_resp",
        "cepo_use_plan_diversity",
    };
    static const double defs[] = {3, 0.1, 4096, 0,    3,    6,    0.55, 0.25, 0.1,
                                  0, 0.1, 4096, 4096, 4096, 4096, 4096, 0};
    const struct approach_option *o = approach_cepo.options;

    (void)state;
    check_descriptor(&approach_cepo, "cepo", 19, 5);
    for (size_t i = 0; i < PX_ARRAY_LEN(names); i++) {
        assert_non_null(o[i].name);
        assert_string_equal(o[i].name, names[i]);
        assert_true(fabs(o[i].def - defs[i]) < 1e-12);
    }
    assert_null(o[PX_ARRAY_LEN(names)].name);
    assert_true(o[14].min == 0); /* step 4 can be switched off */
    assert_non_null(strstr(prompt_get("cepo/rate_system"), "Rating: [[1]]"));
    assert_non_null(strstr(prompt_get("cepo/pairwise_system"), "[[A]]"));
}

static void test_structure(void **state)
{
    struct script_rows s;
    struct env e;
    const struct fake_record *r;

    (void)state;
    std_rows(&s, "Checked. Rating: [[0]]", "Rating: [[1]]", "Rating: [[0]]");
    env_init(&e, BODY(",\"temperature\":1.5,\"max_tokens\":99"), s.r);
    e.ctx.stream_final = true; /* nothing streams: the answer is a chosen candidate */
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_B);
    assert_string_equal(e.out.finish_reason, "stop");
    assert_int_equal(e.fake.rounds, 5);
    /* round 0: every plan in one n call; the client's temperature and limit do not apply */
    check_round(&e, 0, 1, "cepo/plan", 9, 0.55, 4096);
    r = fake_llm_call(&e.fake, 0, 0);
    assert_int_equal(r->nmsgs, 2);
    assert_string_equal(r->msgs[0].content, SYS);
    assert_int_equal(fake_count(r->msgs[1].content, Q), 2); /* the question twice */
    /* round 1: the 9 executions, each continuing its plan's conversation */
    check_round(&e, 1, 9, "cepo/execute", 1, 0.25, 4096);
    for (size_t i = 0; i < 9; i++) {
        r = fake_llm_call(&e.fake, 1, i);
        assert_int_equal(r->nmsgs, 4);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_string_equal(r->msgs[1].content, fake_llm_call(&e.fake, 0, 0)->msgs[1].content);
        assert_string_equal(r->msgs[2].role, "assistant");
        assert_string_equal(r->msgs[2].content, plans[i]);
        assert_string_equal(r->msgs[3].role, "user");
    }
    /* round 2: one consolidation per candidate, its executions in byte order */
    check_round(&e, 2, 3, "cepo/consolidate", 1, 0.1, 4096);
    for (size_t i = 0; i < 3; i++) {
        const char *user;
        const char *e1;
        const char *e2;
        const char *e3;

        r = fake_llm_call(&e.fake, 2, i);
        user = fake_record_last(r);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_non_null(strstr(user, Q));
        e1 = strstr(user, execs[i]);
        e2 = strstr(user, execs[i + 3]);
        e3 = strstr(user, execs[i + 6]);
        assert_true(e1 && e2 && e3 && e1 < e2 && e2 < e3);
        assert_non_null(strstr(user, "Response 3:"));
        assert_null(strstr(user, "Response 4:"));
    }
    /* round 3: the final answers; round 4: the ratings */
    check_round(&e, 3, 3, "cepo/final", 1, 0.0, 4096);
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 3, 0)), "SOLUTION-A"));
    check_round(&e, 4, 3, "cepo/rate", 1, 0.1, 4096);
    for (size_t i = 0; i < 3; i++) {
        r = fake_llm_call(&e.fake, 4, i);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].role, "system");
        assert_non_null(strstr(r->msgs[1].content, Q));
        assert_non_null(strstr(r->msgs[1].content, SYS));
        assert_int_equal(fake_count(r->msgs[1].content, "FINAL-"), 1);
    }
    assert_int_equal(e.script.unexpected, 0);
    assert_int_equal(e.ctx.usage.calls, 19);
    check_usage(&e);
    env_cleanup(&e);
}

/* Absolute ratings in several shapes; ties go to the shared answer, then the shorter text. */
static void test_absolute_ratings(void **state)
{
    static const struct {
        const char *ra, *rb, *rc;
        const char *want;
    } cases[] = {
        {"Rating: [[1]]", "Rating: [[1]]", "Rating: [[1]]", FINAL_A}, /* A, C share 42 */
        {"Rating: [[0]]", "Rating: 1", "no verdict", FINAL_B},
        {"[[ 1 ]]", "Rating: [[0]]", "**Rating:** [[1]]", FINAL_A},
        {"Rating: [[0]] at first... Rating: [[1]]", "Rating: [[0]]", "[[0]]", FINAL_A},
        {"garbage", "", NULL, FINAL_A}, /* nothing rated: majority, then shorter */
        {"Rating: [[1]]", "Rating: [[7]]", "Rating: 9/10", FINAL_C},
        {"Rating: [[-3]]", "rating 0", "none", FINAL_A},       /* -3 is 0: tie with B, majority */
        {"Rating: -2", "Rating: 0", "Rating: [[0]]", FINAL_A}, /* all 0: A, C share 42 */
        {"Rating: 1", "Rating: -5", "Rating: 0.5", FINAL_A},
        {"<think>Rating: [[0]]</think>Rating: [[1]]", "Rating: [[0]]", "Rating: [[0]]", FINAL_A},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        struct script_rows s;
        struct env e;

        std_rows(&s, cases[i].ra, cases[i].rb, cases[i].rc);
        env_init(&e, BODY(""), s.r);
        assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
        if (strcmp(e.out.text, cases[i].want) != 0)
            fail_msg("case %zu: got '%s', want '%s'", i, e.out.text, cases[i].want);
        assert_int_equal(e.fake.rounds, 5);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Pairwise: every ordered pair in one round of 6 calls; most wins is best; an unparseable
 * verdict credits nobody. */
static void test_pairwise(void **state)
{
    struct script_rows s;
    struct env e;

    (void)state;
    std_rows(&s, NULL, NULL, NULL);
    s.n -= 3; /* no absolute ratings */
    s.r[s.n] = (struct row){NULL, NULL, NULL, NULL};
    add(&s, "cepo/pairwise", "RESPONSE A:\nFINAL-B", "B is wrong. Better response: [[B]]", NULL);
    add(&s, "cepo/pairwise", "RESPONSE B:\nFINAL-B", "Better response: [[A]]", NULL);
    add(&s, "cepo/pairwise", "RESPONSE A:\nFINAL-C", "**Better response:** A", NULL);
    add(&s, "cepo/pairwise", "RESPONSE B:\nFINAL-C", "undecided", NULL);
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_bestofn_rating_type", 1);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    /* (A,B) A, (A,C) none, (B,A) A, (B,C) C, (C,A) C, (C,B) C: C has 3 wins, A 2, B 0 */
    assert_string_equal(e.out.text, FINAL_C);
    assert_int_equal(e.fake.rounds, 5);
    check_round(&e, 4, 6, "cepo/pairwise", 1, 0.1, 4096);
    for (size_t i = 0; i < 6; i++) {
        const struct fake_record *r = fake_llm_call(&e.fake, 4, i);

        assert_int_equal(fake_count(r->msgs[1].content, "FINAL-"), 2);
        assert_non_null(strstr(r->msgs[0].content, "[[B]]"));
    }
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Majority: no rating calls; the answer most candidates share wins. */
static void test_majority(void **state)
{
    struct script_rows s;
    struct env e;

    (void)state;
    std_rows(&s, NULL, NULL, NULL);
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_bestofn_rating_type", 2);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_A); /* A and C say 42; A is shorter */
    assert_int_equal(e.fake.rounds, 4);
    assert_int_equal(e.ctx.usage.calls, 16);
    check_usage(&e);
    env_cleanup(&e);
}

/* A plan and an execution are rejected (cut off / empty): one more plan+execute pass for the
 * candidates that lack executions, with only as many chains as missing. */
static void test_rejected_chains(void **state)
{
    struct script_rows s;
    struct env e;

    (void)state;
    std_rows(&s, "Rating: [[1]]", "Rating: [[0]]", "Rating: [[0]]");
    s.r[3].finish = "length";               /* PLAN-4 (candidate A) is cut off */
    s.r[9 + 4].text = "<think>x</think>  "; /* EXEC-5 (candidate B) is empty */
    add(&s, "cepo/plan", NULL, "<think>again</think>PLAN-R1", NULL);
    add(&s, "cepo/plan", NULL, "PLAN-R2", NULL);
    add(&s, "cepo/execute", "PLAN-R1", "EXEC-R1 done", NULL);
    add(&s, "cepo/execute", "PLAN-R2", "EXEC-R2 done", NULL);
    env_init(&e, BODY(""), s.r);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_A);
    assert_int_equal(e.fake.rounds, 7);
    check_round(&e, 0, 1, "cepo/plan", 9, 0.55, 4096);
    check_round(&e, 1, 8, "cepo/execute", 1, 0.25, 4096);
    check_round(&e, 2, 1, "cepo/plan", 2, 0.55, 4096);
    check_round(&e, 3, 2, "cepo/execute", 1, 0.25, 4096);
    /* the <think> part of a plan is not shown back to the model */
    assert_string_equal(fake_llm_call(&e.fake, 3, 0)->msgs[2].content, "PLAN-R1");
    check_round(&e, 4, 3, "cepo/consolidate", 1, 0.1, 4096);
    /* A got R1 (round robin: A first), B got R2 */
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 4, 0)), "EXEC-R1"));
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 4, 1)), "EXEC-R2"));
    assert_null(strstr(fake_record_last(fake_llm_call(&e.fake, 4, 0)), "EXEC-4"));
    assert_null(strstr(fake_record_last(fake_llm_call(&e.fake, 4, 1)), "EXEC-5"));
    check_usage(&e);
    env_cleanup(&e);
}

/* Every plan cut off, planning_m attempts used: each candidate answers directly, and the
 * direct answers are rated (no consolidation or final step for them). */
static void test_direct_fallback(void **state)
{
    struct script_rows s = {0};
    struct env e;

    (void)state;
    add(&s, "cepo/plan", "", "1. Think about", "length");
    add(&s, "cepo/direct", "", FINAL_B, NULL);
    add(&s, "cepo/rate", "", "Rating: [[1]]", NULL);
    env_init(&e, BODY(""), s.r);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_B);
    assert_int_equal(e.fake.rounds, 4);
    check_round(&e, 0, 1, "cepo/plan", 9, 0.55, 4096);
    check_round(&e, 1, 1, "cepo/plan", 9, 0.55, 4096); /* 3 more per candidate: 6 = m */
    check_round(&e, 2, 3, "cepo/direct", 1, 0.1, 4096);
    assert_true(fake_llm_call(&e.fake, 2, 0)->raw_last); /* the client's conversation */
    assert_string_equal(fake_llm_call(&e.fake, 2, 0)->msgs[0].content, SYS);
    check_round(&e, 3, 3, "cepo/rate", 1, 0.1, 4096);
    check_usage(&e);
    env_cleanup(&e);

    /* a cut-off direct answer is kept (the last resort) and marked */
    s.n = 0;
    add(&s, "cepo/plan", "", "", NULL);
    add(&s, "cepo/direct", "", "The answer is 4", "length");
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_bestofn_n", 1);
    env_option(&e, "cepo_planning_m", 1); /* fewer attempts than planning_n: one chain */
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, "The answer is 4");
    assert_string_equal(e.out.finish_reason, "length");
    check_round(&e, 0, 1, "cepo/plan", 1, 0.55, 4096);
    assert_int_equal(e.fake.rounds, 2);
    check_usage(&e);
    env_cleanup(&e);

    /* the direct answers fail too: the request fails */
    s.n = 0;
    add(&s, "cepo/plan", "", "x", "length");
    add(&s, "cepo/direct", "", NULL, NULL);
    env_init(&e, BODY(""), s.r);
    e.fake.fail_status = 503;
    assert_int_equal(env_run(&e, &approach_cepo), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 503);
    check_usage(&e);
    env_cleanup(&e);
}

/* Failed consolidation: the first execution (byte order); failed or cut-off final: the
 * consolidated solution; planning_max_tokens_step4=0: no final step at all. */
static void test_step_fallbacks(void **state)
{
    struct script_rows s;
    struct env e;

    (void)state;
    std_rows(&s, "Rating: [[1]]", "Rating: [[0]]", "Rating: [[0]]");
    s.r[18].text = NULL;       /* consolidation of A fails */
    s.r[22].finish = "length"; /* final of B is cut off */
    s.r[23].text = NULL;       /* final of C fails */
    s.r[24].match = "EXEC-1";  /* rate A's fallback text */
    s.r[25].match = "SOLUTION-B";
    s.r[26].match = "SOLUTION-C";
    env_init(&e, BODY(""), s.r);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    /* A: no solution, so its first execution; its final call (from that execution) has no
     * scripted reply and fails, so the execution stays its answer */
    assert_string_equal(e.out.text, "EXEC-1 done");
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 3, 0)), "EXEC-1 done"));
    assert_int_equal(e.fake.rounds, 5);
    check_usage(&e);
    env_cleanup(&e);

    std_rows(&s, "Rating: [[0]]", "Rating: [[0]]", "Rating: [[1]]");
    s.r[24].match = "SOLUTION-A";
    s.r[25].match = "SOLUTION-B";
    s.r[26].match = "SOLUTION-C";
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_planning_max_tokens_step4", 0);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, "SOLUTION-C");
    assert_int_equal(e.fake.rounds, 4);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "cepo/final"), 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Per-step settings are honoured (OptiLLM used step 1's for every step). */
static void test_step_options(void **state)
{
    struct script_rows s;
    struct env e;

    (void)state;
    std_rows(&s, "Rating: [[1]]", "Rating: [[0]]", "Rating: [[0]]");
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_planning_temperature_step1", 0.9);
    env_option(&e, "cepo_planning_max_tokens_step1", 100);
    env_option(&e, "cepo_planning_temperature_step2", 0.8);
    env_option(&e, "cepo_planning_max_tokens_step2", 200);
    env_option(&e, "cepo_planning_temperature_step3", 0.7);
    env_option(&e, "cepo_planning_max_tokens_step3", 300);
    env_option(&e, "cepo_planning_temperature_step4", 0.6);
    env_option(&e, "cepo_planning_max_tokens_step4", 400);
    env_option(&e, "cepo_bestofn_temperature", 0.5);
    env_option(&e, "cepo_bestofn_max_tokens", 500);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    check_round(&e, 0, 1, "cepo/plan", 9, 0.9, 100);
    check_round(&e, 1, 9, "cepo/execute", 1, 0.8, 200);
    check_round(&e, 2, 3, "cepo/consolidate", 1, 0.7, 300);
    check_round(&e, 3, 3, "cepo/final", 1, 0.6, 400);
    check_round(&e, 4, 3, "cepo/rate", 1, 0.5, 500);
    env_cleanup(&e);

    /* bestofn_n=2, planning_n=1: n=2 plans, 2 executions, 2 of each later step */
    std_rows(&s, "Rating: [[1]]", "Rating: [[0]]", "Rating: [[0]]");
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_bestofn_n", 2);
    env_option(&e, "cepo_planning_n", 1);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    check_round(&e, 0, 1, "cepo/plan", 2, 0.55, 4096);
    check_round(&e, 1, 2, "cepo/execute", 1, 0.25, 4096);
    check_round(&e, 2, 2, "cepo/consolidate", 1, 0.1, 4096);
    check_round(&e, 4, 2, "cepo/rate", 1, 0.1, 4096);
    assert_string_equal(e.out.text, FINAL_A);
    assert_int_equal(e.ctx.usage.calls, 9);
    check_usage(&e);
    env_cleanup(&e);

    /* bestofn_n=1: nothing to rate */
    std_rows(&s, NULL, NULL, NULL);
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_bestofn_n", 1);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_A);
    assert_int_equal(e.fake.rounds, 4);
    check_round(&e, 0, 1, "cepo/plan", 3, 0.55, 4096);
    check_usage(&e);
    env_cleanup(&e);
}

/* Plan diversity: one call for the approaches (a JSON array), then each candidate's plans
 * follow its approach (different prompts: a batch of single calls). 6 rounds. */
static void test_plan_diversity(void **state)
{
    static const char *const ways[] = {"Use the distributive law", "Count groups of seven",
                                       "Recall the times table"};
    struct script_rows s;
    struct env e;

    (void)state;
    std_rows(&s, "Rating: [[0]]", "Rating: [[0]]", "Rating: [[1]]");
    add(&s, "cepo/approaches", NULL,
        "Sure:\n```json\n[\"Use the distributive law\", \"Count groups of seven\", "
        "\"Recall the times table\"]\n```",
        NULL);
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_use_plan_diversity", 1);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_C);
    assert_int_equal(e.fake.rounds, 6);
    check_round(&e, 0, 1, "cepo/approaches", 1, 0.55, 4096);
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 0, 0)), "3 "));
    check_round(&e, 1, 9, "cepo/plan", 1, 0.55, 4096);
    for (size_t i = 0; i < 9; i++) {
        const char *user = fake_record_last(fake_llm_call(&e.fake, 1, i));

        assert_non_null(strstr(user, ways[i % 3]));
        assert_int_equal(fake_count(user, Q), 2);
    }
    check_round(&e, 2, 9, "cepo/execute", 1, 0.25, 4096);
    check_usage(&e);
    env_cleanup(&e);

    /* lines instead of JSON still work; an empty reply means no diversity (one n call) */
    std_rows(&s, "Rating: [[0]]", "Rating: [[0]]", "Rating: [[1]]");
    add(&s, "cepo/approaches", NULL, "1. Use the distributive law\n2. Count groups of seven", NULL);
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_use_plan_diversity", 1);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 1, 2)), ways[0]));
    env_cleanup(&e);

    std_rows(&s, "Rating: [[0]]", "Rating: [[0]]", "Rating: [[1]]");
    add(&s, "cepo/approaches", NULL, NULL, NULL);
    env_init(&e, BODY(""), s.r);
    env_option(&e, "cepo_use_plan_diversity", 1);
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_C);
    check_round(&e, 1, 1, "cepo/plan", 9, 0.55, 4096);
    check_usage(&e);
    env_cleanup(&e);
}

/* Without n: the 9 plans are 9 parallel single calls, still one round. */
static void test_n_refused(void **state)
{
    struct script_rows s;
    struct env e;

    (void)state;
    std_rows(&s, "Rating: [[1]]", "Rating: [[0]]", "Rating: [[0]]");
    env_init(&e, BODY(""), s.r);
    e.fake.n_mode = FAKE_N_REFUSE;
    e.fake.n_support = 0;
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_string_equal(e.out.text, FINAL_A);
    assert_int_equal(e.fake.rounds, 5);
    check_round(&e, 0, 9, "cepo/plan", 1, 0.55, 4096);
    assert_int_equal(e.ctx.usage.calls, 27);
    check_usage(&e);
    env_cleanup(&e);
}

/* A stage that yields nothing fails the request; partial failures are tolerated. */
static void test_failures(void **state)
{
    static const struct row none[] = {{NULL, NULL, NULL, NULL}};
    struct script_rows s;
    struct env e;

    (void)state;
    env_init(&e, BODY(""), none);
    e.fake.fail_status = 401;
    assert_int_equal(env_run(&e, &approach_cepo), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 401);
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    /* all executions fail */
    std_rows(&s, NULL, NULL, NULL);
    for (int i = 9; i < 18; i++)
        s.r[i].text = NULL;
    env_init(&e, BODY(""), s.r);
    e.fake.fail_status = 0;
    assert_int_equal(env_run(&e, &approach_cepo), PX_ETIMEDOUT);
    assert_int_equal(e.fake.rounds, 2);
    check_usage(&e);
    env_cleanup(&e);

    /* two plans and one execution fail (single calls), the retry pass has no plans (its
     * calls fail: tolerated, the candidates keep 2 executions each), every rating fails */
    std_rows(&s, NULL, NULL, NULL);
    s.r[0].text = NULL;
    s.r[4].text = NULL;
    s.r[9 + 8].text = NULL;
    env_init(&e, BODY(""), s.r);
    e.fake.n_support = 0;
    assert_int_equal(env_run(&e, &approach_cepo), PX_OK);
    assert_int_equal(e.fake.rounds, 6);
    check_round(&e, 0, 9, "cepo/plan", 1, 0.55, 4096);
    check_round(&e, 1, 7, "cepo/execute", 1, 0.25, 4096);
    check_round(&e, 2, 3, "cepo/plan", 1, 0.55, 4096);
    check_round(&e, 3, 3, "cepo/consolidate", 1, 0.1, 4096);
    /* A (EXEC-4, EXEC-7) has no scripted solution: its first execution; all unrated and no
     * shared answer: the shortest text */
    assert_string_equal(e.out.text, "EXEC-4 done");
    assert_int_equal(fake_llm_stage_calls(&e.fake, "cepo/rate"), 3);
    check_usage(&e);
    env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),       cmocka_unit_test(test_structure),
        cmocka_unit_test(test_absolute_ratings), cmocka_unit_test(test_pairwise),
        cmocka_unit_test(test_majority),         cmocka_unit_test(test_rejected_chains),
        cmocka_unit_test(test_direct_fallback),  cmocka_unit_test(test_step_fallbacks),
        cmocka_unit_test(test_step_options),     cmocka_unit_test(test_plan_diversity),
        cmocka_unit_test(test_n_refused),        cmocka_unit_test(test_failures),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
