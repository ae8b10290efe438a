/* test_plansearch.c: plansearch on the fake upstream: the four stages and their parameters,
 * observation list parsing, options, tolerated and fatal failures, usage. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

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

extern const struct approach approach_plansearch;
#define THE_APPROACH approach_plansearch

#define SCRIPT_ENV_OWN_BODY
#include "script_env.h"

/* ---- plansearch --------------------------------------------------------------------------- */

#define Q   "Given n numbers, print the largest sum of two of them."
#define SYS "Use Python 3."
#define BODY(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS "\"},"                \
    "{\"role\":\"user\",\"content\":\"" Q "\"}]" extra "}"

#define OBS                                                                                        \
    "Here are three observations:\n\n1. Only the two largest numbers matter.\n2. Sorting is "      \
    "not needed.\n3. Negative numbers can be the answer.\n\nHope this helps!"
#define DERIVED                                                                                    \
    "1. One pass keeping the top two values is enough.\n2. Start both at minus infinity."
#define PLAN    "Keep the two largest values in one pass, then print their sum."
#define PROGRAM "```python\nprint(sum(sorted(map(int, input().split()))[-2:]))\n```"

static const struct row chain[] = {
    {"plansearch/observations", NULL, OBS, NULL},
    {"plansearch/derived", NULL, DERIVED, NULL},
    {"plansearch/solution", NULL, PLAN, NULL},
    {"plansearch/implement", NULL, PROGRAM, NULL},
    {NULL, NULL, NULL, NULL},
};

static void test_row(void **state)
{
    const struct approach_option *o = approach_plansearch.options;

    (void)state;
    assert_string_equal(approach_plansearch.slug, "plansearch");
    assert_int_equal(approach_plansearch.calls, 4);
    assert_int_equal(approach_plansearch.rounds, 4);
    assert_null(strchr(approach_plansearch.summary, '\n'));
    for (const char *const *p = approach_plansearch.prompts; *p; p++)
        assert_non_null(prompt_get(*p));
    assert_string_equal(o[0].name, "plansearch_observations");
    assert_true(o[0].def == 3 && o[0].min == 1 && o[0].max == 16 && o[0].integer);
    assert_string_equal(o[1].name, "plansearch_derived");
    assert_true(o[1].def == 2 && o[1].min == 0 && o[1].max == 16 && o[1].integer);
    assert_null(o[2].name);
    if (approach_find("plansearch", 10))
        assert_int_equal(registry_check(), 0);
}

/* 4 sequential calls; what each prompt carries; only the program is streamed. */
static void test_chain(void **state)
{
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        struct env e;
        const struct fake_record *r;
        const char *user;

        env_init(&e, BODY(""), chain);
        e.ctx.stream_final = stream;
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        assert_string_equal(e.out.text, PROGRAM);
        assert_string_equal(e.out.finish_reason, "stop");
        check_sequential(&e, 4);

        r = call_at(&e, 0);
        check_call(r, "plansearch/observations", 1, NAN, 4096, false);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].role, "system");
        assert_string_equal(r->msgs[0].content, SYS);
        user = r->msgs[1].content;
        assert_non_null(strstr(user, Q));
        assert_non_null(strstr(user, "exactly 3 observations"));

        r = call_at(&e, 1);
        check_call(r, "plansearch/derived", 1, NAN, 4096, false);
        user = r->msgs[1].content;
        assert_non_null(strstr(user, Q));
        assert_non_null(strstr(user, "1. Only the two largest numbers matter.\n"
                                     "2. Sorting is not needed.\n"
                                     "3. Negative numbers can be the answer.\n"));
        assert_null(strstr(user, "Hope this helps"));
        assert_null(strstr(user, "Here are"));
        assert_non_null(strstr(user, "exactly 2 new observations"));

        r = call_at(&e, 2);
        check_call(r, "plansearch/solution", 1, NAN, 4096, false);
        user = r->msgs[1].content;
        assert_non_null(strstr(user, "Observation 1: Only the two largest numbers matter.\n"
                                     "Observation 2: Sorting is not needed.\n"
                                     "Observation 3: Negative numbers can be the answer.\n"
                                     "Observation 4: One pass keeping the top two values is "
                                     "enough.\n"
                                     "Observation 5: Start both at minus infinity.\n"));
        assert_null(strstr(user, "Observation 6"));

        r = call_at(&e, 3);
        check_call(r, "plansearch/implement", 1, NAN, 4096, stream);
        assert_string_equal(r->msgs[0].content, SYS);
        user = r->msgs[1].content;
        assert_non_null(strstr(user, Q));
        assert_non_null(strstr(user, PLAN));
        assert_null(strstr(user, "{{"));
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The list parser: markers, continuations, sub-items, labels, headings, code, paragraphs. */
static void test_lists(void **state)
{
    static const struct {
        const char *reply;
        const char *want; /* the observations as the plan prompt lists them */
    } cases[] = {
        {"1. First.\n2. Second\n   continues here.\n3. **Third:** bold.",
         "Observation 1: First.\nObservation 2: Second continues here.\n"
         "Observation 3: **Third:** bold.\n"},
        {"- a\n- b\n  - detail of b\n* c\n\nIn short: a, b, c.",
         "Observation 1: a\nObservation 2: b detail of b\nObservation 3: c\n"},
        {"### Observation 1\nSorting helps.\n\n### Observation 2\n\nUse a heap.\n",
         "Observation 1: Sorting helps.\nObservation 2: Use a heap.\n"},
        {"**Observation 1:** Sorting helps.\n**Observation 2:** Use a heap.",
         "Observation 1: Sorting helps.\nObservation 2: Use a heap.\n"},
        {"- **Hint 1:** Sorting helps.\n- **Hint 2** - Use a heap.",
         "Observation 1: Sorting helps.\nObservation 2: Use a heap.\n"},
        {"Observations:\n\nSorting the input helps.\n\nA heap gives\nthe minimum fast.\n",
         "Observation 1: Sorting the input helps.\nObservation 2: A heap gives the minimum "
         "fast.\n"},
        {"1) one\n2) two\n(3) three",
         "Observation 1: one\nObservation 2: two\nObservation 3: three\n"},
        {"1. one\n```python\nx = 1\n- not an item\n```\n2. two",
         "Observation 1: one\nObservation 2: two\n"},
        {"\xe2\x80\xa2 first\n\xe2\x80\xa2 second",
         "Observation 1: first\nObservation 2: second\n"},
        {"## Key observations\n---\n**1.** The sum of 3.5 and 2 matters.\n**2.** Ten.",
         "Observation 1: The sum of 3.5 and 2 matters.\nObservation 2: Ten.\n"},
        {"1.\n\n   Indented text of one.\n2. two", "Observation 1: Indented text of one.\n"
                                                   "Observation 2: two\n"},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"plansearch/observations", NULL, cases[i].reply, NULL},
            {"plansearch/solution", NULL, PLAN, NULL},
            {"plansearch/implement", NULL, PROGRAM, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;
        const char *user;
        char want[1024];

        env_init(&e, BODY(""), rows);
        env_option(&e, "plansearch_derived", 0);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        check_sequential(&e, 3);
        user = call_at(&e, 1)->msgs[1].content;
        snprintf(want, sizeof(want), "The observations:\n%s\n", cases[i].want);
        if (!strstr(user, want))
            fail_msg("case %zu: want\n%s\nin\n%s", i, want, user);
        env_cleanup(&e);
    }
}

/* Options: how many observations are asked for; no derivation at 0. An empty or cut list: the
 * derivation is skipped (nothing to derive from) or uses what the cut reply holds. */
static void test_options_and_odd_lists(void **state)
{
    static const struct row empty[] = {
        {"plansearch/observations", NULL, "  \n", NULL},
        {"plansearch/solution", NULL, PLAN, NULL},
        {"plansearch/implement", NULL, PROGRAM, "length"},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row cut[] = {
        {"plansearch/observations", NULL, "1. Only the two largest\n2. Sorting is", "length"},
        {"plansearch/derived", NULL, DERIVED, NULL},
        {"plansearch/solution", NULL, PLAN, "length"},
        {"plansearch/implement", NULL, PROGRAM, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), chain);
    env_option(&e, "plansearch_observations", 5);
    env_option(&e, "plansearch_derived", 0);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    check_sequential(&e, 3);
    assert_non_null(strstr(call_at(&e, 0)->msgs[1].content, "exactly 5 observations"));
    assert_int_equal(fake_llm_stage_calls(&e.fake, "plansearch/derived"), 0);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), empty);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, PROGRAM);
    assert_string_equal(e.out.finish_reason, "length");
    check_sequential(&e, 3);
    assert_null(strstr(call_at(&e, 1)->msgs[1].content, "Observation 1"));
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), cut);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    check_sequential(&e, 4);
    assert_non_null(strstr(call_at(&e, 2)->msgs[1].content, "Observation 2: Sorting is\n"));
    assert_non_null(strstr(call_at(&e, 3)->msgs[1].content, PLAN)); /* a cut plan is used */
    check_usage(&e);
    env_cleanup(&e);
}

/* The client's temperature is left to the transport everywhere; its max_tokens bounds the
 * program only. */
static void test_client_params(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.2,\"max_tokens\":200"), chain);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    check_call(call_at(&e, 0), "plansearch/observations", 1, NAN, 4096, false);
    check_call(call_at(&e, 1), "plansearch/derived", 1, NAN, 4096, false);
    check_call(call_at(&e, 2), "plansearch/solution", 1, NAN, 4096, false);
    check_call(call_at(&e, 3), "plansearch/implement", 1, NAN, 200, false);
    check_usage(&e);
    env_cleanup(&e);
}

/* A failed derivation is tolerated; any other failed stage fails the request. */
static void test_failures(void **state)
{
    static const struct {
        const char *obs, *derived, *plan, *program;
        int rc, rounds;
    } cases[] = {
        {NULL, DERIVED, PLAN, PROGRAM, PX_EHTTP, 1},
        {OBS, NULL, PLAN, PROGRAM, PX_OK, 4},
        {OBS, DERIVED, NULL, PROGRAM, PX_EHTTP, 3},
        {OBS, DERIVED, PLAN, NULL, PX_EHTTP, 4},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"plansearch/observations", NULL, cases[i].obs, NULL},
            {"plansearch/derived", NULL, cases[i].derived, NULL},
            {"plansearch/solution", NULL, cases[i].plan, NULL},
            {"plansearch/implement", NULL, cases[i].program, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        e.fake.fail_status = 429;
        assert_int_equal(env_run(&e, &THE_APPROACH), cases[i].rc);
        if (cases[i].rc == PX_OK) {
            assert_string_equal(e.out.text, PROGRAM);
            assert_non_null(strstr(call_at(&e, 2)->msgs[1].content, "Observation 3:"));
            assert_null(strstr(call_at(&e, 2)->msgs[1].content, "Observation 4:"));
        } else {
            assert_int_equal(px_http_status(&e.err), 429);
        }
        check_sequential(&e, cases[i].rounds);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Per-request options, once the registry lists plansearch. */
static void test_request_options(void **state)
{
    struct env e;

    (void)state;
    if (!approach_option_find("plansearch_derived"))
        skip();
    env_init(&e, BODY(",\"optillm_plansearch_derived\":0"), chain);
    e.cfg.noptions = 0;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    check_sequential(&e, 3);
    env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_options_and_odd_lists),
        cmocka_unit_test(test_client_params),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_request_options),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
