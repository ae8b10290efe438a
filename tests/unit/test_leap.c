/* test_leap.c: leap on the fake upstream: the five stages (parallel where independent) and
 * their parameters, example extraction from odd replies, mistakes judged with answer_equal,
 * the no-example and no-mistake shortcuts, tolerated and fatal failures, usage. */
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

extern const struct approach approach_leap;
#define THE_APPROACH approach_leap

#define SCRIPT_ENV_OWN_BODY
#include "script_env.h"

/* ---- leap --------------------------------------------------------------------------------- */

#define Q                                                                                          \
    "Q: What is 2+2? A: 4\\nQ: What is the capital of Italy? A: Rome\\nQ: What is 3*3? A: 9\\n"    \
    "Q: What is 6*7? A:"
#define SYS "Be brief."
#define BODY(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS "\"},"                \
    "{\"role\":\"user\",\"content\":\"" Q "\"}]" extra "}"

#define EXAMPLES                                                                                   \
    "<output>\n[{\"question\": \"What is 2+2?\", \"answer\": \"4\"},\n"                            \
    " {\"question\": \"What is the capital of Italy?\", \"answer\": \"Rome\"},\n"                  \
    " {\"question\": \"What is 3*3?\", \"answer\": 9}]\n</output>"
#define MERGED "1. Verify facts.\n2. Multiply carefully."
#define FINAL  "The answer is 42."

static const struct row full[] = {
    {"leap/extract", NULL, EXAMPLES, NULL},
    {"leap/mistake", "2+2", "2+2 makes 4.0, surely. <output>4.0</output>", NULL},
    {"leap/mistake", "Italy", "Italy's capital is Milan. <output>Milan</output>", NULL},
    {"leap/mistake", "3*3", "3*3 = 3+3 = 6 <output>6</output>", NULL},
    {"leap/principles", "Milan", "It is Rome. <output>Check facts about capitals.</output>", NULL},
    {"leap/principles", "3*3", "Wrong operation. <output>Multiply, do not add.</output>", NULL},
    {"leap/merge", NULL, "Merged: <output>\n" MERGED "\n</output>", NULL},
    {"leap/final", NULL, FINAL, NULL},
    {NULL, NULL, NULL, NULL},
};

static void test_row(void **state)
{
    const struct approach_option *o = approach_leap.options;

    (void)state;
    assert_string_equal(approach_leap.slug, "leap");
    assert_int_equal(approach_leap.calls, 2);
    assert_int_equal(approach_leap.rounds, 2);
    assert_null(strchr(approach_leap.summary, '\n'));
    for (const char *const *p = approach_leap.prompts; *p; p++)
        assert_non_null(prompt_get(*p));
    assert_string_equal(o[0].name, "leap_max_examples");
    assert_true(o[0].def == 16 && o[0].min == 1 && o[0].max == 64 && o[0].integer);
    assert_null(o[1].name);
    assert_non_null(strstr(prompt_get("leap/extract"), "<output>"));
    if (approach_find("leap", 4))
        assert_int_equal(registry_check(), 0);
}

/* 3 examples, 2 real mistakes ("4.0" equals "4"): extract, 3 mistakes at once, 2 principle
 * calls at once, the merge, the final answer (streamed): 8 calls in 5 rounds. */
static void test_full(void **state)
{
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        struct env e;
        const struct fake_record *r;
        const char *user;

        env_init(&e, BODY(""), full);
        e.ctx.stream_final = stream;
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        assert_string_equal(e.out.text, FINAL);
        assert_string_equal(e.out.finish_reason, "stop");
        assert_int_equal(e.fake.rounds, 5);
        assert_int_equal(e.fake.ncalls, 8);

        r = fake_llm_call(&e.fake, 0, 0);
        check_call(r, "leap/extract", 1, NAN, 4096, false);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_non_null(strstr(r->msgs[1].content, "What is 6*7? A:"));

        assert_int_equal(fake_llm_round_calls(&e.fake, 1), 3);
        for (size_t i = 0; i < 3; i++)
            check_call(fake_llm_call(&e.fake, 1, i), "leap/mistake", 1, 0.7, 4096, false);
        assert_non_null(strstr(fake_llm_call(&e.fake, 1, 0)->msgs[1].content, "What is 2+2?"));
        assert_non_null(strstr(fake_llm_call(&e.fake, 1, 2)->msgs[1].content, "What is 3*3?"));

        assert_int_equal(fake_llm_round_calls(&e.fake, 2), 2);
        r = fake_llm_call(&e.fake, 2, 0);
        check_call(r, "leap/principles", 1, NAN, 4096, false);
        user = r->msgs[1].content;
        assert_non_null(strstr(user, "What is the capital of Italy?"));
        assert_non_null(strstr(user, "Italy's capital is Milan."));
        assert_non_null(strstr(user, "Answer given: Milan"));
        assert_non_null(strstr(user, "Correct answer: Rome"));
        user = fake_llm_call(&e.fake, 2, 1)->msgs[1].content;
        assert_non_null(strstr(user, "Answer given: 6\n"));
        assert_non_null(strstr(user, "Correct answer: 9\n"));

        r = fake_llm_call(&e.fake, 3, 0);
        check_call(r, "leap/merge", 1, NAN, 4096, false);
        assert_non_null(
            strstr(r->msgs[1].content, "Check facts about capitals.\nMultiply, do not add."));

        r = fake_llm_call(&e.fake, 4, 0);
        check_call(r, "leap/final", 1, NAN, 4096, stream);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].role, "system");
        assert_ptr_equal(strstr(r->msgs[0].content, SYS), r->msgs[0].content);
        assert_non_null(strstr(r->msgs[0].content, MERGED));
        assert_null(strstr(r->msgs[0].content, "{{"));
        assert_int_equal(fake_count(r->text, SYS), 1); /* the client's system prompt once */
        assert_string_equal(r->msgs[1].role, "user");
        assert_true(r->raw_last);
        assert_int_equal(e.script.unexpected, 0);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* No examples: extract, then the client's conversation as it is; the client's max_tokens
 * bounds the answer. */
static void test_no_examples(void **state)
{
    static const struct row rows[] = {
        {"leap/extract", NULL, "None here.\n<output>\n[]\n</output>", NULL},
        {"leap/final", NULL, FINAL, "length"},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, BODY(",\"max_tokens\":50,\"temperature\":0.3"), rows);
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, FINAL);
    assert_string_equal(e.out.finish_reason, "length");
    check_sequential(&e, 2);
    check_call(call_at(&e, 0), "leap/extract", 1, NAN, 4096, false);
    r = call_at(&e, 1);
    check_call(r, "leap/final", 1, NAN, 50, true);
    assert_int_equal(r->nmsgs, 2);
    assert_string_equal(r->msgs[0].content, SYS);
    assert_string_equal(r->msgs[1].content, "Q: What is 2+2? A: 4\nQ: What is the capital of "
                                            "Italy? A: Rome\nQ: What is 3*3? A: 9\nQ: What is "
                                            "6*7? A:");
    assert_true(r->raw_last);
    check_usage(&e);
    env_cleanup(&e);
}

/* The examples are found in odd replies; malformed items are skipped, never fatal. */
static void test_example_parsing(void **state)
{
    static const struct {
        const char *reply;
        size_t examples;
    } cases[] = {
        {"<output>\n```json\n[{\"question\": \"q1\", \"answer\": \"a\"},\n"
         "{\"question\": \"q2\", \"answer\": \"b\"}]\n```\n</output>",
         2},
        {"Sure. The examples are: [{\"question\": \"q1\", \"answer\": \"a\"}] and that's all.", 1},
        {"<output>{\"examples\": [{\"question\": \"q1\", \"answer\": \"a\"}, "
         "{\"question\": \"q2\", \"answer\": \"b\"}]}</output>",
         2},
        {"<output>not json</output>", 0},
        {"<output>[1, \"x\", {\"question\": \"q1\", \"answer\": \"a\"}]</output>", 1},
        {"<output>[note] [{\"Question\": \"q1\", \"Answer\": 4}]</output>", 1},
        {"<output>[{\"question\": \"q1\"}, {\"question\": \"q2\", \"answer\": \"\"}]</output>", 0},
        /* a cut array: its complete items are still read, one by one */
        {"<output>[{\"question\": \"q1\", \"answer\": \"a\"},</output>", 1},
        {"<output>[{\"question\": \"q1\", \"answer\": \"a\"}, {\"question\": \"q2\", "
         "\"answer\": \"b\"}, {\"question\": \"q3\", \"ans",
         2},
        {"{\"question\": \"q1\", \"answer\": \"a\"}\n{\"question\": \"q2\", \"answer\": \"b\"}", 2},
        {"<output>\n{\"question\": \"q1\", \"answer\": \"a\"}\n</output>", 1},
        {"<output></output> [{\"question\": \"q1\", \"answer\": \"a\"}]", 1},
        {"<output>[{\"input\": \"q1\", \"output\": [1, 2]}, {\"question\": \"q2\", \"answer\": "
         "true}]",
         2},
        {"", 0},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"leap/extract", NULL, cases[i].reply, NULL},
            {"leap/mistake", "", "Wrong on purpose. <output>zzz</output>", NULL},
            {"leap/principles", "", "<output>Be careful.</output>", NULL},
            {"leap/merge", NULL, "<output>1. Be careful.</output>", NULL},
            {"leap/final", NULL, FINAL, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        assert_string_equal(e.out.text, FINAL);
        if (fake_llm_stage_calls(&e.fake, "leap/mistake") != cases[i].examples)
            fail_msg("case %zu: %zu examples, want %zu", i,
                     fake_llm_stage_calls(&e.fake, "leap/mistake"), cases[i].examples);
        assert_int_equal(e.ctx.usage.calls, cases[i].examples ? 3 + 2 * cases[i].examples : 2);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* A mistake is an answer that differs from the correct one by answer_equal. */
static void test_mistake_detection(void **state)
{
    static const struct {
        const char *answer; /* JSON */
        const char *reply;
        bool mistake;
    } cases[] = {
        {"\"4\"", "<output>4.0</output>", false},
        {"\"4\"", "<output>four</output>", true},
        {"\"1,000\"", "<output>1000</output>", false},
        {"\"Rome\"", "<output> rome. </output>", false},
        {"9", "<output>9</output>", false},
        {"9.5", "<output>9.50</output>", false},
        {"\"5\"", "so the result is 5", false},
        {"\"5\"", "I refuse.", true},
        {"\"\\\\frac{1}{2}\"", "<output>0.5</output>", false},
        {"\"B\"", "<output>(B)</output>", false},
        {"\"Rome\"", "<output></output>", true},
        {"\"4\"", "<output>5", true},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        char extract[256];
        const struct row rows[] = {
            {"leap/extract", NULL, extract, NULL},
            {"leap/mistake", NULL, cases[i].reply, NULL},
            {"leap/principles", NULL, "<output>Be careful.</output>", NULL},
            {"leap/merge", NULL, "<output>1. Be careful.</output>", NULL},
            {"leap/final", NULL, FINAL, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        snprintf(extract, sizeof(extract),
                 "<output>[{\"question\": \"q1\", \"answer\": %s}]</output>", cases[i].answer);
        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        if ((fake_llm_stage_calls(&e.fake, "leap/principles") == 1) != cases[i].mistake)
            fail_msg("case %zu: mistake %d expected", i, cases[i].mistake);
        assert_int_equal(e.fake.rounds, cases[i].mistake ? 5 : 3);
        /* no mistake: no principles, the conversation as it is */
        if (!cases[i].mistake)
            assert_true(fake_llm_call(&e.fake, 2, 0)->raw_last &&
                        fake_llm_call(&e.fake, 2, 0)->nmsgs == 2 &&
                        !strcmp(fake_llm_call(&e.fake, 2, 0)->msgs[0].content, SYS));
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Earlier turns reach the extraction, labelled; the final call keeps them as messages. */
static void test_multi_turn(void **state)
{
    static const char body[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"},"
        "{\"role\":\"assistant\",\"content\":\"4\"},"
        "{\"role\":\"user\",\"content\":\"What is 6*7?\"}]}";
    static const struct row rows[] = {
        {"leap/extract", NULL,
         "<output>[{\"question\":\"What is 2+2?\",\"answer\":\"4\"}]</output>", NULL},
        {"leap/mistake", NULL, "<output>5</output>", NULL},
        {"leap/principles", NULL, "<output>Add carefully.</output>", NULL},
        {"leap/merge", NULL, NULL, NULL},
        {"leap/final", NULL, FINAL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, body, rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_non_null(strstr(call_at(&e, 0)->msgs[0].content,
                           "User: What is 2+2?\n\nAssistant: 4\n\nUser: What is 6*7?"));
    assert_int_equal(call_at(&e, 0)->nmsgs, 1); /* no system prompt: none sent */
    /* the merge failed: the low-level principles guide the answer */
    r = call_at(&e, 4);
    assert_int_equal(r->nmsgs, 4);
    assert_string_equal(r->msgs[0].role, "system");
    assert_non_null(strstr(r->msgs[0].content, "Add carefully."));
    assert_false(r->msgs[0].content[0] == '\n');
    assert_string_equal(r->msgs[2].content, "4");
    check_usage(&e);
    env_cleanup(&e);
}

/* Partial failures are dropped; a stage with nothing at all fails the request. */
static void test_failures(void **state)
{
    static const struct row extract_fails[] = {
        {"leap/extract", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row mistakes_fail[] = {
        {"leap/extract", NULL, EXAMPLES, NULL},
        {"leap/mistake", "", NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row one_mistake_fails[] = {
        {"leap/extract", NULL, EXAMPLES, NULL},
        {"leap/mistake", "Italy", NULL, NULL},
        {"leap/mistake", "", "<output>6</output>", NULL},
        {"leap/principles", "", "<output>Multiply.</output>", NULL},
        {"leap/merge", NULL, "<output>1. Multiply.</output>", NULL},
        {"leap/final", NULL, FINAL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row principles_fail[] = {
        {"leap/extract", NULL, EXAMPLES, NULL},
        {"leap/mistake", "", "<output>6</output>", NULL},
        {"leap/principles", "", NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row principles_blank[] = {
        {"leap/extract", NULL, EXAMPLES, NULL},
        {"leap/mistake", "", "<output>6</output>", NULL},
        {"leap/principles", "", "<output> </output>\n", NULL},
        {"leap/final", NULL, FINAL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row final_fails[] = {
        {"leap/extract", NULL, "<output>[]</output>", NULL},
        {"leap/final", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), extract_fails);
    e.fake.fail_status = 502;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 502);
    check_sequential(&e, 1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), mistakes_fail);
    e.fake.fail_status = 0;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_ETIMEDOUT);
    assert_int_equal(e.fake.rounds, 2);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), one_mistake_fails);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, FINAL);
    /* 2+2 answered 6 and 3*3 answered 6 are mistakes; Italy failed */
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 2);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), principles_fail);
    e.fake.fail_status = 500;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EHTTP);
    assert_int_equal(e.fake.rounds, 3);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), principles_blank);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_int_equal(e.fake.rounds, 4); /* no merge of nothing */
    assert_true(call_at(&e, 3)->raw_last && call_at(&e, 3)->nmsgs == 2);
    assert_string_equal(call_at(&e, 3)->msgs[0].content, SYS);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), final_fails);
    e.fake.fail_status = 400;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 400);
    check_usage(&e);
    env_cleanup(&e);
}

/* At most leap_max_examples examples are used. */
static void test_max_examples(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""), full);
    env_option(&e, "leap_max_examples", 2);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "leap/mistake"), 2);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "leap/principles"), 1);
    check_usage(&e);
    env_cleanup(&e);

    if (!approach_option_find("leap_max_examples"))
        return;
    env_init(&e, BODY(",\"optillm_leap_max_examples\":1"), full);
    e.cfg.noptions = 0;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "leap/mistake"), 1);
    env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_no_examples),
        cmocka_unit_test(test_example_parsing),
        cmocka_unit_test(test_mistake_detection),
        cmocka_unit_test(test_multi_turn),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_max_examples),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
