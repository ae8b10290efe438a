/* test_longcepo.c: longcepo on the fake upstream: the stages and their rounds (normalize, plan,
 * summaries at once, map at once per question, collapse by levels, reduce), the QA history,
 * answer tags, chunking in estimated tokens, a 1 MB context, tolerated and fatal failures,
 * usage. */
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
#include "buf.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "log.h"
#include "prompt.h"

extern const struct approach approach_longcepo;
#define THE_APPROACH approach_longcepo

#include "script_env.h"

#define PLAN "Plan:\n<SUB-QUESTIONS>\n1. Who built it?\n2. When?\n</SUB-QUESTIONS>\n"

/* "<parts paragraphs of about bytes each, PART-i><CONTEXT_END>question" as a body; heap. */
static char *long_body(int parts, size_t bytes, const char *tail)
{
    struct buf b;

    buf_init(&b, 0);
    buf_puts(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"SYS\"},"
                 "{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < parts; i++) {
        size_t start = b.len;

        buf_printf(&b, "PART-%d", i);
        while (b.len - start < bytes)
            buf_puts(&b, " lorem ipsum.");
        buf_puts(&b, "\\n");
    }
    buf_printf(&b, "%s\"}]}", tail);
    return buf_take(&b, NULL);
}

static void test_stages(void **state)
{
    const struct row rows[] = {
        {"longcepo/normalize", NULL, "Who built the bridge and when?", NULL},
        {"longcepo/plan", NULL, PLAN, NULL},
        {"longcepo/summary", NULL, "S-one", NULL},
        {"longcepo/summary", NULL, "S-two", NULL},
        {"longcepo/summary", NULL, "S-three", NULL},
        {"longcepo/map", "PART-1", "Extracted Information: none\nAnswer: [No Information]", NULL},
        {"longcepo/map", "PART-0", "Extracted Information: F0\nAnswer: Ann\nConfidence Score: 4",
         NULL},
        {"longcepo/map", "PART-2", "Extracted Information: F2\nAnswer: 1901\nConfidence Score: 5",
         NULL},
        {"longcepo/reduce", "Question: Who built it?", "Rationale: r\nAnswer: Ann", NULL},
        {"longcepo/reduce", "Question: When?", "Rationale: r\n**Answer**: 1901", NULL},
        {"longcepo/reduce", "Question: Q?", "Rationale: r\nAnswer: Ann in 1901", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char *body = long_body(3, 3000, "<CONTEXT_END>Q?");
    struct env e;

    (void)state;
    env_init(&e, body, rows);
    env_option(&e, "longcepo_chunk_tokens", 1000); /* 4000 bytes: one paragraph per chunk */
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "Ann in 1901");
    assert_int_equal(e.script.unexpected, 0);
    /* normalize, plan, summaries, then (map, reduce) for 2 sub-questions and the question */
    assert_int_equal(e.fake.rounds, 3 + 3 * 2);
    assert_int_equal(e.fake.ncalls, 1 + 1 + 3 + 3 * (3 + 1));
    check_call(fake_llm_call(&e.fake, 0, 0), "longcepo/normalize", 1, 0.7, 1024, false);
    assert_string_equal(fake_llm_call(&e.fake, 0, 0)->msgs[0].content, "SYS");
    assert_non_null(strstr(fake_llm_call(&e.fake, 0, 0)->text, "Q?"));
    check_call(fake_llm_call(&e.fake, 1, 0), "longcepo/plan", 1, 0.7, 1024, false);
    assert_non_null(strstr(fake_llm_call(&e.fake, 1, 0)->text, "Who built the bridge and when?"));
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 3);
    for (size_t i = 0; i < 3; i++)
        check_call(fake_llm_call(&e.fake, 2, i), "longcepo/summary", 1, 0.7, 300, false);
    for (int q = 0; q < 3; q++) {
        assert_int_equal(fake_llm_round_calls(&e.fake, 3 + 2 * q), 3);
        for (size_t i = 0; i < 3; i++)
            check_call(fake_llm_call(&e.fake, 3 + 2 * q, i), "longcepo/map", 1, 0.7, 1024, false);
        check_call(fake_llm_call(&e.fake, 4 + 2 * q, 0), "longcepo/reduce", 1, 0.7, 1024, false);
    }
    /* chunk 1's map call sees its neighbours' summaries, not its own */
    const char *m1 = fake_llm_call(&e.fake, 3, 1)->text;

    assert_non_null(strstr(m1, "S-one"));
    assert_non_null(strstr(m1, "S-three"));
    assert_null(strstr(m1, "S-two"));
    assert_non_null(strstr(m1, "Question: Who built it?"));
    /* the reduce drops [NO INFORMATION] (any case) and keeps the others */
    const char *r = fake_llm_call(&e.fake, 4, 0)->text;

    assert_non_null(strstr(r, "F0"));
    assert_non_null(strstr(r, "F2"));
    assert_null(strstr(r, "none"));
    /* the history grows: the last stages see both earlier answers */
    const char *fin = fake_llm_call(&e.fake, 8, 0)->text;

    assert_non_null(strstr(fin, "- Previous question: Who built it?\n\n- Previous answer: Ann"));
    assert_non_null(strstr(fin, "- Previous question: When?\n\n- Previous answer: 1901"));
    assert_non_null(strstr(fake_llm_call(&e.fake, 7, 0)->text, "Previous answer: 1901"));
    check_usage(&e);
    env_cleanup(&e);
    free(body);
}

/* Reports too long for the reduce call are merged pairwise, all pairs of a level at once. */
static void test_collapse(void **state)
{
    static char longmap[2600];
    char *body = long_body(4, 1000, "<CONTEXT_END>Q?");
    struct env e;

    (void)state;
    memset(longmap, 'x', sizeof(longmap) - 1);
    memcpy(longmap, "Extracted Information: ", 23);
    const struct row rows[] = {
        {"longcepo/normalize", NULL, "Q?", NULL},
        {"longcepo/plan", NULL, "<SUB-QUESTIONS>\n</SUB-QUESTIONS>", NULL},
        {"longcepo/summary", "PART", "sum", NULL},
        {"longcepo/map", "PART", longmap, NULL},
        {"longcepo/collapse", NULL, "Extracted Information: M1\nAnswer: a", NULL},
        {"longcepo/collapse", NULL, "[NO INFORMATION]", NULL},
        {"longcepo/reduce", NULL, "Answer: merged", NULL},
        {NULL, NULL, NULL, NULL},
    };

    env_init(&e, body, rows);
    env_option(&e, "longcepo_chunk_tokens", 300);
    env_option(&e, "longcepo_context_window", 2048);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "merged");
    /* normalize, plan, summaries, map, one collapse level (2 calls), reduce */
    assert_int_equal(e.fake.rounds, 6);
    assert_int_equal(fake_llm_round_calls(&e.fake, 3), 4);
    assert_int_equal(fake_llm_round_calls(&e.fake, 4), 2);
    assert_string_equal(fake_llm_call(&e.fake, 4, 0)->stage, "longcepo/collapse");
    assert_int_equal(fake_count(fake_llm_call(&e.fake, 4, 0)->text, "Information of Chunk"), 2);
    const char *r = fake_llm_call(&e.fake, 5, 0)->text;

    assert_non_null(strstr(r, "M1"));
    assert_null(strstr(r, "xxxx"));
    check_usage(&e);
    env_cleanup(&e);
    free(body);
}

/* Failures: normalize and plan fall back, a reduce without a tag is retried then used whole,
 * every map call failing fails the request. */
static void test_failures(void **state)
{
    const struct row tolerant[] = {
        {"longcepo/normalize", NULL, NULL, NULL},
        {"longcepo/normalize", NULL, NULL, NULL},
        {"longcepo/normalize", NULL, NULL, NULL},
        {"longcepo/plan", NULL, "no tags", NULL},
        {"longcepo/plan", NULL, NULL, NULL},
        {"longcepo/plan", NULL, "still none", NULL},
        {"longcepo/summary", "PART-0", NULL, NULL},
        {"longcepo/summary", "PART-1", "S1", NULL},
        {"longcepo/map", "PART-0", NULL, NULL},
        {"longcepo/map", "PART-1", "Answer: yes", NULL},
        {"longcepo/reduce", NULL, "just text", NULL},
        {NULL, NULL, NULL, NULL},
    };
    const struct row fatal[] = {
        {"longcepo/normalize", NULL, "Q?", NULL},
        {"longcepo/plan", NULL, PLAN, NULL},
        {"longcepo/summary", "PART", "S", NULL},
        {"longcepo/map", "PART", NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    char *body = long_body(2, 3000, "<CONTEXT_END>Q?");
    struct env e;

    (void)state;
    env_init(&e, body, tolerant);
    env_option(&e, "longcepo_chunk_tokens", 1000);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "just text");
    assert_int_equal(fake_llm_stage_calls(&e.fake, "longcepo/normalize"), 3);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "longcepo/plan"), 3);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "longcepo/map"), 2); /* the question only */
    assert_int_equal(fake_llm_stage_calls(&e.fake, "longcepo/reduce"), 3);
    /* the plan saw the question itself */
    assert_non_null(strstr(fake_llm_call(&e.fake, 3, 0)->text, "The question is: Q?"));
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, body, fatal);
    env_option(&e, "longcepo_chunk_tokens", 1000);
    e.fake.fail_status = 502;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 502);
    check_usage(&e);
    env_cleanup(&e);
    free(body);
}

/* No delimiter: the text after "Query:" is the question. A 1 MB context: 4096-token chunks
 * (16384 bytes), about 64, all summarised in one round. */
static void test_input_and_size(void **state)
{
    const struct row rows[] = {
        {"longcepo/normalize", NULL, "Which?", NULL},
        {"longcepo/plan", NULL, "<SUB-QUESTIONS>\n</SUB-QUESTIONS>", NULL},
        {"longcepo/summary", "PART", "s", NULL},
        {"longcepo/map", "PART", "[NO INFORMATION]", NULL},
        {"longcepo/reduce", NULL, "Answer: never", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char *body = long_body(1000, 1000, "Query: Which?");
    struct env e;

    (void)state;
    env_init(&e, body, rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "No information"); /* every chunk said so: no reduce */
    assert_int_equal(fake_llm_stage_calls(&e.fake, "longcepo/reduce"), 0);
    size_t n = fake_llm_round_calls(&e.fake, 2);

    assert_true(n >= 60 && n <= 70);
    for (size_t i = 0; i < n; i++) {
        const struct fake_record *r = fake_llm_call(&e.fake, 2, i);

        assert_true(strlen(r->text) <= 16384 + 1000);
        assert_null(strstr(r->text, "Which?"));
    }
    assert_non_null(strstr(fake_llm_call(&e.fake, 0, 0)->text, "Which?"));
    assert_int_equal(e.fake.rounds, 4);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, body, rows);
    env_option(&e, "longcepo_max_chunks", 5);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 5);
    env_cleanup(&e);
    free(body);
}

/* Chunking: paragraphs packed up to the size; a short last chunk is rebalanced with the one
 * before it (both within the size). */
static void test_rebalance(void **state)
{
    const struct row rows[] = {
        {"longcepo/normalize", NULL, "Q?", NULL},
        {"longcepo/plan", NULL, "<SUB-QUESTIONS>\n</SUB-QUESTIONS>", NULL},
        {"longcepo/summary", NULL, "s", NULL},
        {"longcepo/summary", NULL, "s", NULL},
        {"longcepo/map", NULL, "[NO INFORMATION]", NULL},
        {"longcepo/map", NULL, "[NO INFORMATION]", NULL},
        {NULL, NULL, NULL, NULL},
    };
    /* 3 paragraphs of ~1000 bytes, chunks of 2048 bytes: 2000 + 1000 before rebalancing */
    char *body = long_body(3, 1000, "<CONTEXT_END>Q?");
    struct env e;

    (void)state;
    env_init(&e, body, rows);
    env_option(&e, "longcepo_chunk_tokens", 512);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 2);
    const char *c0 = strstr(fake_llm_call(&e.fake, 2, 0)->text, "Passage:\n");
    const char *c1 = strstr(fake_llm_call(&e.fake, 2, 1)->text, "Passage:\n");
    size_t l0 = strlen(c0), l1 = strlen(c1);

    /* about 1500 bytes each instead of 2000 and 1000 */
    assert_true(l0 > 1300 && l0 < 1700);
    assert_true(l1 > 1300 && l1 < 1700);
    env_cleanup(&e);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stages),    cmocka_unit_test(test_collapse),
        cmocka_unit_test(test_failures),  cmocka_unit_test(test_input_and_size),
        cmocka_unit_test(test_rebalance),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
