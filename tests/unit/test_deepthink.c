/* test_deepthink.c: deepthink on the fake upstream: the three SELF-DISCOVER rounds and their
 * parsers, the k samples in one call, the confidence routing (majority sample or greedy final),
 * fallbacks, partial failure and usage. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "script_env.h"

extern const struct approach approach_deepthink;

#define SELECT    "[3, 5, 28]"
#define ADAPTED   "1. Split 6*7 into 6*5 + 6*2.\n2. Recall the table of sevens.\n3. Check by 7*6."
#define PLAN_JSON "{\"Understand\": \"what is asked\", \"Compute\": {\"Split\": \"6*5 + 6*2\"}}"
#define IMPLEMENT "Here is the plan:\n```json\n" PLAN_JSON "\n```\nDone."
#define S42_SHORT "<think>6*7</think>The final answer is: 42"
#define S42_LONG                                                                                   \
    "<think>6*5 = 30, 6*2 = 12, 30+12 = 42</think>So 6*7 = 42.\nThe final answer is: 42"
#define S42_PLAIN "The answer is 42."
#define S41       "<think>6*7 = 41?</think>The final answer is: 41"
#define S40       "<think>hmm</think>The final answer is: 40"
#define GREEDY    "<think>careful</think>The final answer is: 42"

/* The 1-based line i of the strategy list, in the arena. */
static const char *module_line(struct arena *a, int i)
{
    const char *p = prompt_get("deepthink/modules");

    for (int n = 1; n < i; n++)
        p = strchr(p, '\n') + 1;
    return arena_strndup(a, p, strcspn(p, "\n"));
}

/* "1. <module a>\n2. <module b>..." for the given strategies (0-terminated). */
static const char *listed(struct arena *a, const int *mods)
{
    const char *s = "";

    for (int i = 0; mods[i]; i++)
        s = arena_printf(a, "%s%s%d. %s", s, i ? "\n" : "", i + 1, module_line(a, mods[i]));
    return s;
}

static void discover_rows(struct row *rows, const char *select, const char *adapt,
                          const char *implement, const char *const *samples, size_t nsamples,
                          const char *final)
{
    size_t n = 0;

    rows[n++] = (struct row){"deepthink/select", NULL, select, NULL};
    rows[n++] = (struct row){"deepthink/adapt", NULL, adapt, NULL};
    rows[n++] = (struct row){"deepthink/implement", NULL, implement, NULL};
    for (size_t i = 0; i < nsamples; i++)
        rows[n++] = (struct row){"deepthink/sample", NULL, samples[i], NULL};
    rows[n++] = (struct row){"deepthink/final", NULL, final, NULL};
    rows[n] = (struct row){NULL, NULL, NULL, NULL};
}

static void test_descriptor(void **state)
{
    const char *mods = prompt_get("deepthink/modules");

    (void)state;
    check_descriptor(&approach_deepthink, "deepthink", 5, 5);
    assert_true(fake_count(mods, "\n") >= 20);
    assert_non_null(strstr(prompt_get("deepthink/solve"), "{{structure}}"));
    assert_non_null(strstr(prompt_get("deepthink/solve"), "{{system}}"));
    assert_non_null(strstr(prompt_get("deepthink/select"), "{{modules}}"));
    assert_non_null(strstr(prompt_get("deepthink/adapt"), "{{selected}}"));
    assert_non_null(strstr(prompt_get("deepthink/implement"), "{{adapted}}"));
}

/* Samples that agree: 4 rounds, no greedy call, the agreeing sample with most reasoning. */
static void test_confident(void **state)
{
    static const char *const samples[] = {S42_SHORT, S42_LONG, S42_PLAIN};
    static const int chosen[] = {3, 5, 28, 0};
    struct row rows[16];
    struct env e;
    const struct fake_record *r;
    const char *user;

    (void)state;
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, samples, 3, GREEDY);
    env_init(&e, BODY(""), rows);
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, S42_LONG);
    assert_string_equal(e.out.finish_reason, "stop");
    assert_int_equal(e.fake.rounds, 4);
    check_round(&e, 0, 1, "deepthink/select", 1, 0.3, 1024);
    check_round(&e, 1, 1, "deepthink/adapt", 1, 0.3, 2048);
    check_round(&e, 2, 1, "deepthink/implement", 1, 0.3, 2048);
    check_round(&e, 3, 1, "deepthink/sample", 3, 0.7, -1);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "deepthink/final"), 0);

    /* SELECT: the task and the numbered list, no system message */
    r = fake_llm_call(&e.fake, 0, 0);
    assert_int_equal(r->nmsgs, 1);
    user = fake_record_last(r);
    assert_non_null(strstr(user, Q));
    assert_non_null(strstr(user, SYS));
    assert_non_null(strstr(user, arena_printf(e.arena, "28. %s", module_line(e.arena, 28))));
    /* ADAPT: the chosen strategies, renumbered */
    user = fake_record_last(fake_llm_call(&e.fake, 1, 0));
    assert_non_null(strstr(user, listed(e.arena, chosen)));
    assert_non_null(strstr(user, Q));
    /* IMPLEMENT: the adapted list */
    user = fake_record_last(fake_llm_call(&e.fake, 2, 0));
    assert_non_null(strstr(user, ADAPTED));
    /* the samples: one system message (the client's, then the plan), the client's turns */
    r = fake_llm_call(&e.fake, 3, 0);
    assert_int_equal(r->nmsgs, 2);
    assert_string_equal(r->msgs[0].role, "system");
    assert_ptr_equal(strstr(r->msgs[0].content, SYS), r->msgs[0].content);
    assert_int_equal(fake_count(r->text, SYS), 1);
    assert_non_null(strstr(r->msgs[0].content, "\"Compute\":"));
    assert_non_null(strstr(r->msgs[0].content, "\"Split\":"));
    assert_null(strstr(r->msgs[0].content, "```"));
    assert_null(strstr(r->msgs[0].content, "{{"));
    assert_string_equal(r->msgs[1].content, Q);
    assert_true(r->raw_last);
    assert_int_equal(e.script.unexpected, 0);
    assert_int_equal(e.ctx.usage.calls, 4);
    check_usage(&e);
    env_cleanup(&e);
}

/* Samples that disagree (2 of 3 < 0.7): one greedy call at T=0 is the answer, streamed when
 * asked, with the same messages as the samples. A lower threshold accepts the 2 of 3. */
static void test_not_confident(void **state)
{
    static const char *const samples[] = {S42_SHORT, S41, S42_PLAIN};
    struct row rows[16];

    (void)state;
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, samples, 3, GREEDY);
    for (int stream = 0; stream < 2; stream++) {
        struct env e;
        const struct fake_record *r;

        env_init(&e, BODY(",\"temperature\":0.4"), rows);
        e.ctx.stream_final = stream;
        assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
        assert_string_equal(e.out.text, GREEDY);
        assert_int_equal(e.fake.rounds, 5);
        check_round(&e, 0, 1, "deepthink/select", 1, 0.3, 1024);
        check_round(&e, 3, 1, "deepthink/sample", 3, 0.4, -1);
        assert_int_equal(fake_llm_round_calls(&e.fake, 4), 1);
        r = fake_llm_call(&e.fake, 4, 0);
        check_call(r, "deepthink/final", 1, 0.0, -1, stream);
        assert_int_equal(r->filter, LLM_FILTER_NONE);
        assert_string_equal(r->text, fake_llm_call(&e.fake, 3, 0)->text);
        check_usage(&e);
        env_cleanup(&e);
    }

    {
        struct env e;

        env_init(&e, BODY(""), rows);
        env_option(&e, "deepthink_confidence", 0.6);
        assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
        assert_string_equal(e.out.text, S42_SHORT); /* more reasoning than S42_PLAIN */
        assert_int_equal(e.fake.rounds, 4);
        env_cleanup(&e);
    }
}

/* What votes: the answer after </think> (not one inside the reasoning); cut-off and empty
 * samples do not vote but count as disagreeing; a single sample is never confident. */
static void test_votes(void **state)
{
    static const char *const hidden[] = {
        "<think>maybe the answer is 41</think>The final answer is: 42",
        "<think>the answer is 40</think>The final answer is: 42",
        "<think>or 39</think>It is \\boxed{42}.",
    };
    static const char *const cut[] = {S42_SHORT, S42_PLAIN, "The answer is 42"};
    static const char *const one[] = {S42_SHORT};
    struct row rows[16];
    struct env e;

    (void)state;
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, hidden, 3, GREEDY);
    env_init(&e, BODY(""), rows);
    env_option(&e, "deepthink_confidence", 1.0);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_int_equal(e.fake.rounds, 4);         /* all three say 42 */
    assert_string_equal(e.out.text, hidden[0]); /* the longest reasoning */
    env_cleanup(&e);

    /* the third sample is cut off: 2 of 3 agree, below 0.7 */
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, cut, 3, GREEDY);
    rows[5].finish = "length";
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, GREEDY);
    env_cleanup(&e);

    /* an empty sample counts the same way */
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, cut, 3, GREEDY);
    rows[5].text = "  ";
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, GREEDY);
    assert_int_equal(e.fake.rounds, 5);
    env_cleanup(&e);

    /* deepthink_samples=1: one plain call, then the greedy one */
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, one, 1, GREEDY);
    env_init(&e, BODY(""), rows);
    env_option(&e, "deepthink_samples", 1);
    env_option(&e, "deepthink_confidence", 0);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, GREEDY);
    check_round(&e, 3, 1, "deepthink/sample", 1, 0.7, -1);
    check_call(fake_llm_call(&e.fake, 4, 0), "deepthink/final", 1, 0.0, -1, false);
    check_usage(&e);
    env_cleanup(&e);
}

/* SELECT replies in many shapes: the strategies named in the ADAPT prompt. */
static void test_select_parsing(void **state)
{
    static const struct {
        const char *reply;
        const char *finish;
        int want[8];
    } cases[] = {
        {"[2, 4, 6]", NULL, {2, 4, 6}},
        {"I would use strategies 3, 12 and 30.", NULL, {3, 12, 30}},
        {"Chosen: [0, 99, 5, 7]", NULL, {5, 7}},
        {"[1.5, 2] or so", NULL, {2}},
        {"[7,7,7,8]", NULL, {7, 8}},
        {"1,2,3,4,5,6,7,8,9", NULL, {1, 2, 3, 4, 5, 6, 7}},
        {"See [a, b]. Then [4, 9, 1", "length", {4, 9, 1}},
        {"Strategy list: 10-12 are best [11, 12]", NULL, {11, 12}},
        {"nothing useful", NULL, {1, 2, 3, 4, 5}},
        {"", NULL, {1, 2, 3, 4, 5}},
        {NULL, NULL, {1, 2, 3, 4, 5}},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        static const char *const samples[] = {S42_SHORT, S42_SHORT, S42_SHORT};
        struct row rows[16];
        struct env e;
        const char *user;
        const char *want;

        discover_rows(rows, cases[i].reply, ADAPTED, IMPLEMENT, samples, 3, GREEDY);
        rows[0].finish = cases[i].finish;
        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
        assert_string_equal(e.out.text, S42_SHORT);
        user = fake_record_last(fake_llm_call(&e.fake, 1, 0));
        want = arena_printf(e.arena, "%s\n\n", listed(e.arena, cases[i].want));
        if (!strstr(user, want))
            fail_msg("case %zu: ADAPT prompt lacks\n%s\nin\n%s", i, want, user);
        assert_null(strstr(user, arena_printf(e.arena, "%d. ", cases[i].want[0] ? 8 : 1)));
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* ADAPT replies: numbered lines renumbered; otherwise the reply as it is; a failed or cut-off
 * one keeps the strategies as written. IMPLEMENT replies: the plan found and re-printed, a
 * block that is not JSON as written, else the generic plan. */
static void test_adapt_implement_parsing(void **state)
{
    static const int chosen[] = {3, 5, 28, 0};
    static const struct {
        const char *adapt;
        const char *adapt_finish;
        const char *want_adapted; /* NULL: the chosen strategies as listed */
        const char *implement;
        const char *implement_finish;
        const char *want_plan; /* in the sample prompt; NULL: the default plan */
        const char *not_plan;  /* must not be there */
    } cases[] = {
        {"Here:\n1. Alpha\n2) Beta\n - 3. Gamma\nnot numbered\n4:", NULL,
         "1. Alpha\n2. Beta\n3. Gamma\n\n", "{\"a\": \"b\"}", NULL, "\"a\":\t\"b\"", NULL},
        {"Just think hard.", NULL, "Just think hard.\n\n", "{} and then {\"real\": \"plan\"}", NULL,
         "\"real\":\t\"plan\"", NULL},
        {"1. Alpha\n2. Be", "length", NULL, "{stage one: do x, {nested: 1}}", NULL,
         "{stage one: do x, {nested: 1}}", NULL},
        {NULL, NULL, NULL, "no braces here", NULL, NULL, NULL},
        {"1. Alpha", NULL, "1. Alpha\n\n", "{\"a\": {\"b\": \"c\"}, \"d\": ", "length", NULL,
         "\"b\""},
        {"1. Alpha", NULL, "1. Alpha\n\n", "{\"s\": \"a } in a string\", \"t\": \"{\"}", NULL,
         "\"a } in a string\"", NULL},
        {"1. Alpha", NULL, "1. Alpha\n\n", NULL, NULL, NULL, NULL},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        static const char *const samples[] = {S42_SHORT, S42_SHORT, S42_SHORT};
        struct row rows[16];
        struct env e;
        const char *impl;
        const char *solve;
        const char *plan;

        discover_rows(rows, SELECT, cases[i].adapt, cases[i].implement, samples, 3, GREEDY);
        rows[1].finish = cases[i].adapt_finish;
        rows[2].finish = cases[i].implement_finish;
        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
        assert_int_equal(e.fake.rounds, 4);
        impl = fake_record_last(fake_llm_call(&e.fake, 2, 0));
        if (cases[i].want_adapted) {
            if (!strstr(impl, cases[i].want_adapted))
                fail_msg("case %zu: IMPLEMENT prompt lacks '%s'", i, cases[i].want_adapted);
        } else {
            assert_non_null(strstr(impl, listed(e.arena, chosen)));
        }
        solve = fake_llm_call(&e.fake, 3, 0)->msgs[0].content;
        plan = cases[i].want_plan ? cases[i].want_plan : "\"Plan the approach\"";
        if (!strstr(solve, plan))
            fail_msg("case %zu: sample prompt lacks '%s' in\n%s", i, plan, solve);
        if (cases[i].not_plan)
            assert_null(strstr(solve, cases[i].not_plan));
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Failed SELF-DISCOVER calls do not fail the request: the defaults stand in. */
static void test_discover_failures(void **state)
{
    static const char *const samples[] = {S42_SHORT, S42_LONG, S42_PLAIN};
    static const int first5[] = {1, 2, 3, 4, 5, 0};
    struct row rows[16];
    struct env e;

    (void)state;
    discover_rows(rows, NULL, NULL, NULL, samples, 3, GREEDY);
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, S42_LONG);
    assert_int_equal(e.fake.rounds, 4);
    assert_non_null(
        strstr(fake_record_last(fake_llm_call(&e.fake, 2, 0)), listed(e.arena, first5)));
    assert_non_null(strstr(fake_llm_call(&e.fake, 3, 0)->msgs[0].content, "\"Final answer\""));
    check_usage(&e);
    env_cleanup(&e);
}

/* deepthink_self_discover=0: the generic plan, no planning calls. */
static void test_no_self_discover(void **state)
{
    static const struct row rows[] = {
        {"deepthink/sample", NULL, S42_SHORT, NULL},
        {"deepthink/sample", NULL, S41, NULL},
        {"deepthink/sample", NULL, S40, NULL},
        {"deepthink/final", NULL, GREEDY, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "deepthink_self_discover", 0);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, GREEDY);
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 0, 1, "deepthink/sample", 3, 0.7, -1);
    assert_non_null(strstr(fake_llm_call(&e.fake, 0, 0)->msgs[0].content, "\"Plan the approach\""));
    check_usage(&e);
    env_cleanup(&e);
}

/* A failed greedy call: the best sample when nothing streamed (the majority's, else a tie
 * broken by the smaller answer), the error when streaming; no samples and no greedy: error. */
static void test_final_failures(void **state)
{
    static const char *const split[] = {S42_SHORT, S41, S40};
    static const char *const two[] = {S41, S42_LONG, S42_SHORT};
    static const char *const none[] = {NULL, NULL, NULL};
    struct row rows[16];
    struct env e;

    (void)state;
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, split, 3, NULL);
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, S40); /* one vote each: the smallest answer */
    assert_int_equal(e.fake.rounds, 5);
    check_usage(&e);
    env_cleanup(&e);

    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, two, 3, NULL);
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, S42_LONG);
    env_cleanup(&e);

    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, two, 3, NULL);
    env_init(&e, BODY(""), rows);
    e.ctx.stream_final = true;
    e.fake.fail_status = 502;
    assert_int_equal(env_run(&e, &approach_deepthink), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 502);
    check_usage(&e);
    env_cleanup(&e);

    /* the samples all fail (parallel single calls), the greedy answer still comes */
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, none, 3, GREEDY);
    env_init(&e, BODY(""), rows);
    e.fake.n_mode = FAKE_N_REFUSE;
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_string_equal(e.out.text, GREEDY);
    assert_int_equal(e.fake.rounds, 6); /* the refused n call, the singles, the greedy call */
    check_round(&e, 4, 3, "deepthink/sample", 1, 0.7, -1);
    check_usage(&e);
    env_cleanup(&e);

    /* nothing works */
    discover_rows(rows, NULL, NULL, NULL, none, 3, NULL);
    env_init(&e, BODY(""), rows);
    e.fake.fail_status = 0;
    assert_int_equal(env_run(&e, &approach_deepthink), PX_ETIMEDOUT);
    assert_int_equal(e.fake.rounds, 5);
    check_usage(&e);
    env_cleanup(&e);
}

/* A long task is cut (at a character boundary) for the planning calls only. */
static void test_long_task(void **state)
{
    static const char *const samples[] = {S42_SHORT, S42_SHORT, S42_SHORT};
    struct row rows[16];
    struct env e;
    char *body;
    char *q = xmalloc(9001);

    (void)state;
    for (size_t i = 0; i < 9000; i += 3)
        memcpy(q + i, "\xc3\xa9x", 3); /* "éx" */
    q[9000] = '\0';
    body = xmalloc(9200);
    snprintf(body, 9200, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
             q);
    discover_rows(rows, SELECT, ADAPTED, IMPLEMENT, samples, 3, GREEDY);
    env_init(&e, body, rows);
    assert_int_equal(env_run(&e, &approach_deepthink), PX_OK);
    assert_null(strstr(fake_record_last(fake_llm_call(&e.fake, 0, 0)), q));
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 0, 0)), "\xc3\xa9x\n[...]"));
    /* no client system prompt: ours starts with the instructions */
    assert_string_equal(fake_llm_call(&e.fake, 3, 0)->msgs[0].role, "system");
    assert_ptr_equal(strstr(fake_llm_call(&e.fake, 3, 0)->msgs[0].content, "Solve the user's"),
                     fake_llm_call(&e.fake, 3, 0)->msgs[0].content);
    assert_string_equal(fake_llm_call(&e.fake, 3, 0)->msgs[1].content, q);
    check_usage(&e);
    env_cleanup(&e);
    free(q);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),        cmocka_unit_test(test_confident),
        cmocka_unit_test(test_not_confident),     cmocka_unit_test(test_votes),
        cmocka_unit_test(test_select_parsing),    cmocka_unit_test(test_adapt_implement_parsing),
        cmocka_unit_test(test_discover_failures), cmocka_unit_test(test_no_self_discover),
        cmocka_unit_test(test_final_failures),    cmocka_unit_test(test_long_task),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
