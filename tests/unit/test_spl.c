/* test_spl.c: system-prompt learning on the scripted fake transport and the in-memory store:
 * the classification call and its parser, inference mode (no strategy applied until one has
 * 5 attempts at a success rate of 0.4 or more), learning mode (a strategy written for a new
 * type, applied at once, judged after the answer; verdicts counted), pruning of a strategy
 * that keeps failing, tenants kept apart, the body's spl_learning over the server's default,
 * and exact usage. */
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
#include "spl_store.h"

extern const struct approach approach_spl;
#define THE_APPROACH approach_spl

#include "script_env.h"

#define STRATEGY "1. Write both numbers down.\n2. Multiply them digit by digit."

static const struct row yes_rows[] = {
    {"spl/classify", NULL, "arithmetic", NULL},
    {"spl/create", NULL, "<think>how?</think>" STRATEGY, NULL},
    {"spl/final", NULL, "42", NULL},
    {"spl/judge", NULL, "YES", NULL},
    {NULL, NULL, NULL, NULL},
};
static const struct row no_rows[] = {
    {"spl/classify", NULL, "arithmetic", NULL},
    {"spl/create", NULL, STRATEGY, NULL},
    {"spl/final", NULL, "42", NULL},
    {"spl/judge", NULL, "No.", NULL},
    {NULL, NULL, NULL, NULL},
};

static int setup(void **state)
{
    char why[256];

    (void)state;
    spl_store_close(); /* a fresh in-memory store per test */
    assert_int_equal(spl_store_open(NULL, why, sizeof(why)), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    spl_store_close();
    return 0;
}

/* One run of spl for 'tenant' on 'body' with 'rows'; returns the env (caller cleans up). */
static void run(struct env *e, const char *body, const struct row *rows, const char *tenant)
{
    env_init(e, body, rows);
    e->ctx.tenant = tenant;
    assert_int_equal(env_run(e, &approach_spl), PX_OK);
    assert_int_equal(e->script.unexpected, 0);
    check_usage(e);
}

static const struct fake_record *stage_call(const struct env *e, const char *stage)
{
    for (size_t i = 0; i < e->fake.ncalls; i++)
        if (strcmp(e->fake.calls[i].stage, stage) == 0)
            return &e->fake.calls[i];
    return NULL;
}

static void test_descriptor(void **state)
{
    (void)state;
    check_descriptor(&approach_spl, "spl", 2, 2);
    assert_false(approach_spl.offload); /* the store offloads its own calls */
    assert_true(approach_spl.tools && approach_spl.response_format);
}

static void test_parse_type(void **state)
{
    (void)state;
    assert_string_equal(spl_parse_type("arithmetic"), "arithmetic");
    assert_string_equal(spl_parse_type("  Coding."), "coding");
    assert_string_equal(spl_parse_type("<think>maybe logic</think>\n**algebra**"), "algebra");
    assert_string_equal(spl_parse_type("It is a word_problem, some arithmetic"), "word_problem");
    assert_string_equal(spl_parse_type("no idea"), "general");
    assert_string_equal(spl_parse_type("programming"), "general"); /* not a type's word */
    assert_string_equal(spl_parse_type(""), "general");
}

/* Inference on an empty store: classify, answer; nothing applied, nothing learnt. */
static void test_inference_empty(void **state)
{
    struct env e;

    (void)state;
    run(&e, BODY(""), yes_rows, "");
    assert_int_equal(e.fake.ncalls, 2);
    check_call(call_at(&e, 0), "spl/classify", 1, 0, 16, false);
    assert_non_null(strstr(call_at(&e, 0)->text, Q));
    assert_non_null(strstr(call_at(&e, 0)->text, "word_problem"));
    assert_string_equal(call_at(&e, 1)->stage, "spl/final");
    assert_null(strstr(call_at(&e, 1)->text, "Strategy 1"));
    assert_string_equal(e.out.text, "42");
    assert_int_equal(spl_count(""), 0);
    env_cleanup(&e);
}

/* Learning: a strategy written for the new type, applied to this very answer, then judged. */
static void test_learning_creates_and_judges(void **state)
{
    struct env e;
    struct spl_strategy s[3];
    struct arena *a = arena_create();

    (void)state;
    run(&e, BODY(",\"spl_learning\":true"), yes_rows, "");
    assert_int_equal(e.fake.ncalls, 4);
    assert_string_equal(call_at(&e, 1)->stage, "spl/create");
    assert_non_null(strstr(call_at(&e, 1)->text, "arithmetic problems"));
    assert_non_null(
        strstr(stage_call(&e, "spl/final")->text, "Strategy 1 for arithmetic problems"));
    assert_non_null(strstr(stage_call(&e, "spl/final")->text, "digit by digit"));
    assert_null(strstr(stage_call(&e, "spl/final")->text, "<think>"));
    assert_non_null(strstr(stage_call(&e, "spl/judge")->text, "digit by digit"));
    assert_non_null(strstr(stage_call(&e, "spl/judge")->text, "Response:\n42"));
    env_cleanup(&e);
    assert_int_equal(spl_count(""), 1);
    assert_int_equal(spl_select(a, "", "arithmetic", true, s, 3), 1);
    assert_int_equal(s[0].attempts, 1);
    assert_int_equal(s[0].successes, 1);
    assert_string_equal(s[0].text, STRATEGY);
    assert_string_equal(s[0].example, Q);
    /* not yet for inference: fewer than 5 attempts */
    assert_int_equal(spl_select(a, "", "arithmetic", false, s, 3), 0);
    arena_destroy(a);
}

/* Five judged successes make the strategy an inference one; a second learner does not
 * write another for the same type. */
static void test_learnt_strategy_applied(void **state)
{
    struct env e;

    (void)state;
    for (int i = 0; i < 5; i++) {
        run(&e, BODY(",\"spl_learning\":true"), yes_rows, "");
        assert_int_equal(e.fake.ncalls, i == 0 ? 4 : 3); /* create only the first time */
        env_cleanup(&e);
    }
    assert_int_equal(spl_count(""), 1);
    run(&e, BODY(""), yes_rows, "");
    assert_int_equal(e.fake.ncalls, 2);
    assert_non_null(strstr(call_at(&e, 1)->text, "Strategy 1 for arithmetic problems"));
    assert_non_null(strstr(call_at(&e, 1)->text, "It helped with: " Q));
    env_cleanup(&e);
}

/* A strategy judged "no" five times is removed. */
static void test_failing_strategy_pruned(void **state)
{
    struct env e;

    (void)state;
    for (int i = 0; i < 5; i++) {
        run(&e, BODY(",\"spl_learning\":true"), no_rows, "");
        env_cleanup(&e);
        assert_int_equal(spl_count(""), i < 4 ? 1 : 0);
    }
}

static void test_tenants_apart(void **state)
{
    struct env e;

    (void)state;
    for (int i = 0; i < 5; i++) {
        run(&e, BODY(",\"spl_learning\":true"), yes_rows, "alpha");
        env_cleanup(&e);
    }
    assert_int_equal(spl_count("alpha"), 1);
    run(&e, BODY(""), yes_rows, "beta");
    assert_null(strstr(call_at(&e, 1)->text, "Strategy 1"));
    env_cleanup(&e);
    run(&e, BODY(""), yes_rows, "alpha");
    assert_non_null(strstr(call_at(&e, 1)->text, "Strategy 1"));
    env_cleanup(&e);
    assert_int_equal(spl_count("beta"), 0);
}

/* --spl-learning 1 learns unless the body says false; a non-bool field is a 400. */
static void test_learning_switch(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""), yes_rows);
    env_option(&e, "spl_learning", 1);
    assert_int_equal(env_run(&e, &approach_spl), PX_OK);
    assert_int_equal(e.fake.ncalls, 4);
    env_cleanup(&e);

    env_init(&e, BODY(",\"spl_learning\":false"), yes_rows);
    env_option(&e, "spl_learning", 1);
    assert_int_equal(env_run(&e, &approach_spl), PX_OK);
    assert_int_equal(e.fake.ncalls, 2);
    env_cleanup(&e);

    env_init(&e, BODY(",\"spl_learning\":\"yes\""), yes_rows);
    assert_int_equal(env_run(&e, &approach_spl), PX_EINVAL);
    assert_string_equal(e.err.param, "spl_learning");
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
}

/* A failed classification still answers (type "general"); failed judgements record nothing. */
static void test_failures_degrade(void **state)
{
    static const struct row rows[] = {
        {"spl/classify", NULL, NULL, NULL}, {"spl/create", NULL, STRATEGY, NULL},
        {"spl/final", NULL, "42", NULL},    {"spl/judge", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;
    struct spl_strategy s[3];
    struct arena *a = arena_create();

    (void)state;
    env_init(&e, BODY(",\"spl_learning\":true"), rows);
    assert_int_equal(env_run(&e, &approach_spl), PX_OK);
    assert_string_equal(e.out.text, "42");
    assert_int_equal(e.err.code, 0);
    check_usage(&e);
    env_cleanup(&e);
    assert_int_equal(spl_select(a, "", "general", true, s, 3), 1);
    assert_int_equal(s[0].attempts, 0);
    arena_destroy(a);
}

/* A file store: survives closing, and a bad path is a start-up error naming --spl-db. */
static void test_file_store(void **state)
{
    char dir[] = "/tmp/test_spl_XXXXXX", path[256], why[512];
    struct arena *a = arena_create();
    struct spl_strategy s[3];

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/spl.db", dir);
    assert_int_equal(spl_store_open(path, why, sizeof(why)), 0);
    assert_int_equal(spl_add_first("t", "logic", "think"), 1);
    assert_int_equal(spl_add_first("t", "logic", "other"), 0);
    for (int i = 0; i < SPL_MAX_PER_TYPE + 3; i++)
        assert_int_equal(spl_add("t", "logic", "more"), 0);
    assert_int_equal(spl_count("t"), SPL_MAX_PER_TYPE);
    spl_store_close();
    assert_int_equal(spl_store_open(path, why, sizeof(why)), 0);
    assert_int_equal(spl_select(a, "t", "logic", true, s, 3), 3);
    spl_store_close();
    assert_int_equal(spl_store_open("/nonexistent/dir/spl.db", why, sizeof(why)), -1);
    assert_non_null(strstr(why, "--spl-db"));
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
    arena_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),
        cmocka_unit_test(test_parse_type),
        cmocka_unit_test_setup_teardown(test_inference_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_learning_creates_and_judges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_learnt_strategy_applied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_strategy_pruned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenants_apart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_learning_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_degrade, setup, teardown),
        cmocka_unit_test(test_file_store),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
