/* test_genselect.c: genselect on the fake upstream: one n=k sampling call then one comparison,
 * the verdict parser, the majority fallback, order independence, partial failure and usage. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "script_env.h"

extern const struct approach approach_genselect;

/* Four candidates; in byte order: B42, A42, D40, C41. 42 is the majority answer. */
#define A42 "Six times seven is 42. The answer is 42."
#define B42 "6*7 = 42. The answer is 42."
#define C41 "The answer is 41."
#define D40 "The answer is 40."

#define VERDICT(n) "COMPARISON: they differ.\nBEST CANDIDATE: " n "\nREASONING: it is right."

static const struct row base_rows[] = {
    {"genselect/candidate", NULL, C41, NULL},        {"genselect/candidate", NULL, A42, NULL},
    {"genselect/candidate", NULL, D40, NULL},        {"genselect/candidate", NULL, B42, NULL},
    {"genselect/compare", NULL, VERDICT("2"), NULL}, {NULL, NULL, NULL, NULL},
};

static void test_descriptor(void **state)
{
    const struct approach_option *o = approach_genselect.options;

    (void)state;
    check_descriptor(&approach_genselect, "genselect", 2, 2);
    assert_string_equal(o[0].name, "genselect_candidates");
    assert_true(o[0].def == 4 && o[0].min == 2 && o[0].integer);
    assert_null(o[1].name);
    assert_non_null(strstr(prompt_get("genselect/compare"), "BEST CANDIDATE:"));
    assert_non_null(strstr(prompt_get("genselect/compare"), "{{candidates}}"));
}

static void test_structure(void **state)
{
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        struct env e;
        const struct fake_record *r;
        const char *user;
        const char *order[] = {B42, A42, D40, C41};
        const char *prev;

        env_init(&e, BODY(""), base_rows);
        e.ctx.stream_final = stream; /* nothing streams: the answer is a chosen sample */
        assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
        assert_string_equal(e.out.text, A42); /* candidate 2 in byte order */
        assert_string_equal(e.out.finish_reason, "stop");
        assert_int_equal(e.fake.rounds, 2);
        check_round(&e, 0, 1, "genselect/candidate", 4, 0.7, 4096);
        r = fake_llm_call(&e.fake, 0, 0);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_string_equal(r->msgs[1].content, Q);
        assert_true(r->raw_last);
        check_round(&e, 1, 1, "genselect/compare", 1, 0.3, 2048);
        r = fake_llm_call(&e.fake, 1, 0);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].role, "system");
        user = fake_record_last(r);
        assert_non_null(strstr(user, Q));
        assert_non_null(strstr(user, SYS));
        assert_non_null(strstr(user, "=== Candidate 4 ==="));
        assert_null(strstr(user, "=== Candidate 5"));
        assert_null(strstr(user, "cut off"));
        assert_non_null(strstr(user, "from 1 to 4"));
        prev = user;
        for (size_t i = 0; i < 4; i++) {
            const char *at = strstr(user, order[i]);

            assert_non_null(at);
            assert_true(at > prev);
            assert_int_equal(fake_count(user, order[i]), 1);
            prev = at;
        }
        assert_int_equal(e.script.unexpected, 0);
        assert_int_equal(e.ctx.usage.calls, 2);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The verdict in its many shapes; an unusable one falls back to the majority answer (42),
 * whose first member in display order is B42. */
static void test_verdict_formats(void **state)
{
    static const struct {
        const char *reply;
        const char *want;
    } cases[] = {
        {VERDICT("3"), D40},
        {"COMPARISON: ...\n**BEST CANDIDATE:** 4\n**REASONING:** ...", C41},
        {"**Best candidate:** Candidate 1", B42},
        {"best candidate: #2", A42},
        {"BEST CANDIDATE: [3]", D40},
        {"BEST CANDIDATE:\n\n**4**\n", C41},
        {"Best Candidate: Candidate number 3.", D40},
        {"Candidate 1 is fine but candidate 4 is the best.", C41},
        {"After checking, I would choose Candidate 3 for its accuracy.", D40},
        {"I select candidate #2.", A42},
        {"The winner is Candidate 4.", C41},
        {"3", D40},
        {"  **4**.\n", C41},
        {"Candidate 2", A42},
        {"The best candidate is 1, no wait.\nBEST CANDIDATE: 3", D40}, /* the last verdict */
        {VERDICT("9"), B42},                                           /* out of range */
        {VERDICT("0"), B42},
        {VERDICT("2.5"), B42},
        {VERDICT("two"), B42},
        {"", B42},
        {"I cannot decide between 14 and 2 of them.", B42},
        {"Combining the candidates. The answer is 42.", B42},
        {"Candidate 3 is wrong; candidate 4 is wrong too.", B42},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"genselect/candidate", NULL, C41, NULL},
            {"genselect/candidate", NULL, A42, NULL},
            {"genselect/candidate", NULL, D40, NULL},
            {"genselect/candidate", NULL, B42, NULL},
            {"genselect/compare", NULL, cases[i].reply, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
        if (strcmp(e.out.text, cases[i].want) != 0)
            fail_msg("case %zu: got '%s', want '%s'", i, e.out.text, cases[i].want);
        assert_int_equal(e.fake.rounds, 2);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The same samples in any arrival order: the same comparison prompt and the same answer. */
static void test_order_independent(void **state)
{
    static const int perms[4][4] = {{0, 1, 2, 3}, {3, 2, 1, 0}, {2, 0, 3, 1}, {1, 3, 0, 2}};
    static const char *const texts[4] = {A42, B42, C41, D40};
    char *prompt0 = NULL;

    (void)state;
    for (size_t p = 0; p < 4; p++) {
        const struct row rows[] = {
            {"genselect/candidate", NULL, texts[perms[p][0]], NULL},
            {"genselect/candidate", NULL, texts[perms[p][1]], NULL},
            {"genselect/candidate", NULL, texts[perms[p][2]], NULL},
            {"genselect/candidate", NULL, texts[perms[p][3]], NULL},
            {"genselect/compare", NULL, VERDICT("4"), NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
        assert_string_equal(e.out.text, C41);
        if (p == 0)
            prompt0 = xstrdup(fake_llm_call(&e.fake, 1, 0)->text);
        else
            assert_string_equal(fake_llm_call(&e.fake, 1, 0)->text, prompt0);
        env_cleanup(&e);
    }
    free(prompt0);
}

/* A failed comparison: the majority answer's first candidate, still 2 rounds and no error. */
static void test_compare_fails(void **state)
{
    static const struct row rows[] = {
        {"genselect/candidate", NULL, C41, NULL}, {"genselect/candidate", NULL, A42, NULL},
        {"genselect/candidate", NULL, D40, NULL}, {"genselect/candidate", NULL, B42, NULL},
        {"genselect/compare", NULL, NULL, NULL},  {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.fake.fail_status = 503;
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    assert_string_equal(e.out.text, B42);
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(fake_llm_call(&e.fake, 1, 0)->http_status, 503);
    check_usage(&e);
    env_cleanup(&e);
}

/* Without any extractable answer, the fallback is the first complete candidate shown. */
static void test_fallback_without_answers(void **state)
{
    static const struct row rows[] = {
        {"genselect/candidate", NULL, "Paris, clearly.", NULL},
        {"genselect/candidate", NULL, "Lyon", "length"},
        {"genselect/candidate", NULL, "It is Paris", NULL},
        {"genselect/candidate", NULL, "Bordeaux", NULL},
        {"genselect/compare", NULL, "They are all fine.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    assert_string_equal(e.out.text, "Bordeaux"); /* 'B' < 'I' < 'L' < 'P' */
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 1, 0)),
                           "=== Candidate 3 (cut off at the length limit) ===\nLyon"));
    check_usage(&e);
    env_cleanup(&e);
}

/* Cut-off candidates do not vote while a complete one exists; a chosen cut-off candidate is
 * returned with finish_reason "length". */
static void test_truncated(void **state)
{
    static const struct row rows[] = {
        {"genselect/candidate", NULL, "So far 6*7 = 40", "length"},
        {"genselect/candidate", NULL, "Then 6*7 = 40", "length"},
        {"genselect/candidate", NULL, C41, NULL},
        {"genselect/candidate", NULL, "Hmm, 6*7 is 40 and", "length"},
        {"genselect/compare", NULL, "no idea", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row pick_cut[] = {
        {"genselect/candidate", NULL, "So far 6*7 = 40", "length"},
        {"genselect/candidate", NULL, C41, NULL},
        {"genselect/compare", NULL, VERDICT("1"), NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    assert_string_equal(e.out.text, C41);
    assert_string_equal(e.out.finish_reason, "stop");
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), pick_cut);
    env_option(&e, "genselect_candidates", 2);
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    assert_string_equal(e.out.text, "So far 6*7 = 40");
    assert_string_equal(e.out.finish_reason, "length");
    check_round(&e, 0, 1, "genselect/candidate", 2, 0.7, 4096);
    check_usage(&e);
    env_cleanup(&e);
}

/* The client's temperature and max_tokens drive the candidates, never the comparison. */
static void test_client_params(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.2,\"max_tokens\":100"), base_rows);
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    check_round(&e, 0, 1, "genselect/candidate", 4, 0.2, 100);
    check_round(&e, 1, 1, "genselect/compare", 1, 0.3, 2048);
    check_usage(&e);
    env_cleanup(&e);
}

/* genselect_candidates=6 asks for six; out-of-range server values are clamped. */
static void test_option(void **state)
{
    static const struct row rows[] = {
        {"genselect/candidate", "", C41, NULL},
        {"genselect/compare", NULL, VERDICT("1"), NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "genselect_candidates", 6);
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    check_round(&e, 0, 1, "genselect/candidate", 6, 0.7, 4096);
    assert_int_equal(fake_count(fake_record_last(fake_llm_call(&e.fake, 1, 0)), C41), 6);
    assert_string_equal(e.out.text, C41);
    env_cleanup(&e);

    env_init(&e, BODY(""), rows);
    env_option(&e, "genselect_candidates", 1000);
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    check_round(&e, 0, 1, "genselect/candidate", 16, 0.7, 4096);
    env_cleanup(&e);
}

/* An upstream that refuses n: parallel single calls in one round; failed and empty samples
 * are dropped; one usable candidate needs no comparison. */
static void test_partial_samples(void **state)
{
    static const struct row rows[] = {
        {"genselect/candidate", NULL, NULL, NULL},
        {"genselect/candidate", NULL, "  \n", NULL},
        {"genselect/candidate", NULL, C41, NULL},
        {"genselect/candidate", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row two[] = {
        {"genselect/candidate", NULL, NULL, NULL},       {"genselect/candidate", NULL, C41, NULL},
        {"genselect/candidate", NULL, "", NULL},         {"genselect/candidate", NULL, A42, NULL},
        {"genselect/compare", NULL, VERDICT("2"), NULL}, {NULL, NULL, NULL, NULL},
    };
    struct env e;
    const char *user;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.fake.n_mode = FAKE_N_REFUSE;
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    assert_string_equal(e.out.text, C41);
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(fake_llm_call(&e.fake, 0, 0)->http_status, 400);
    check_round(&e, 1, 4, "genselect/candidate", 1, 0.7, 4096);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "genselect/compare"), 0);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), two);
    e.fake.n_support = 0;
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    assert_string_equal(e.out.text, C41); /* candidate 2 of [A42, C41] */
    user = fake_record_last(fake_llm_call(&e.fake, 1, 0));
    assert_non_null(strstr(user, "=== Candidate 2 ==="));
    assert_null(strstr(user, "=== Candidate 3"));
    assert_non_null(strstr(user, "from 1 to 2"));
    check_usage(&e);
    env_cleanup(&e);
}

static void test_failures(void **state)
{
    static const struct row none[] = {{NULL, NULL, NULL, NULL}};
    static const struct row empty[] = {
        {"genselect/candidate", "", "", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), none);
    e.fake.fail_status = 429;
    assert_int_equal(env_run(&e, &approach_genselect), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 429);
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), none);
    e.fake.n_support = 0;
    e.fake.fail_status = 0;
    assert_int_equal(env_run(&e, &approach_genselect), PX_ETIMEDOUT);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), empty);
    assert_int_equal(env_run(&e, &approach_genselect), PX_OK);
    assert_string_equal(e.out.text, "");
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),      cmocka_unit_test(test_structure),
        cmocka_unit_test(test_verdict_formats), cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_compare_fails),   cmocka_unit_test(test_fallback_without_answers),
        cmocka_unit_test(test_truncated),       cmocka_unit_test(test_client_params),
        cmocka_unit_test(test_option),          cmocka_unit_test(test_partial_samples),
        cmocka_unit_test(test_failures),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
