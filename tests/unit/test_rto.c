/* test_rto.c: rto on the fake upstream: the sequential stages and their parameters, code
 * extraction and comparison, the final reconciliation, tolerated and fatal failures, usage. */
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

extern const struct approach approach_rto;
#define THE_APPROACH approach_rto

#define SCRIPT_ENV_OWN_BODY
#include "script_env.h"

/* ---- rto ---------------------------------------------------------------------------------- */

#define Q   "Write a Python function add(a, b)."
#define SYS "Be brief."
#define BODY(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS "\"},"                \
    "{\"role\":\"user\",\"content\":\"" Q "\"}]" extra "}"

#define CODE  "def add(a, b):\n    return a + b"
#define BLOCK "```python\n" CODE "\n```"
#define C1    "Here is the function:\n\n" BLOCK "\n\nIt adds two numbers."
#define Q2    "Write a Python function add(a, b) that returns the sum of a and b."
#define SAME  "```py\ndef add(a, b):\n  return a + b\n```"
#define DIFF  "```python\ndef add(a, b):\n    return b + a\n```"
#define C3    "```python\ndef add(a, b):\n    \"\"\"Sum.\"\"\"\n    return a + b\n```"

static void test_row(void **state)
{
    (void)state;
    assert_string_equal(approach_rto.slug, "rto");
    assert_int_equal(approach_rto.calls, 4);
    assert_int_equal(approach_rto.rounds, 4);
    assert_null(approach_rto.options);
    assert_null(strchr(approach_rto.summary, '\n'));
    for (const char *const *p = approach_rto.prompts; *p; p++)
        assert_non_null(prompt_get(*p));
    assert_non_null(strstr(prompt_get("rto/merge"), "{{code1}}"));
    assert_non_null(strstr(prompt_get("rto/merge"), "{{code2}}"));
    assert_non_null(strstr(prompt_get("rto/merge"), "{{question}}"));
    if (approach_find("rto", 3))
        assert_int_equal(registry_check(), 0);
}

/* The versions differ: 4 sequential calls, the last one streamed; the reconciliation sees the
 * request and both codes without the surrounding prose, and its reply is the answer. */
static void test_differ(void **state)
{
    static const struct row rows[] = {
        {"rto/code", NULL, C1, NULL},
        {"rto/describe", NULL, Q2, NULL},
        {"rto/regenerate", NULL, DIFF, NULL},
        {"rto/final", NULL, C3, NULL},
        {NULL, NULL, NULL, NULL},
    };

    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        struct env e;
        const struct fake_record *r;
        const char *user;

        env_init(&e, BODY(""), rows);
        e.ctx.stream_final = stream;
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        assert_string_equal(e.out.text, C3);
        assert_string_equal(e.out.finish_reason, "stop");
        check_sequential(&e, 4);

        r = call_at(&e, 0);
        check_call(r, "rto/code", 1, 0.1, 4096, false);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_string_equal(r->msgs[1].content, Q);
        assert_true(r->raw_last);

        r = call_at(&e, 1);
        check_call(r, "rto/describe", 1, 0.1, 1024, false);
        assert_int_equal(r->nmsgs, 4);
        assert_string_equal(r->msgs[1].content, Q);
        assert_string_equal(r->msgs[2].role, "assistant");
        assert_string_equal(r->msgs[2].content, C1);
        assert_string_equal(r->msgs[3].role, "user");
        assert_string_equal(r->msgs[3].content, prompt_get("rto/describe"));

        r = call_at(&e, 2);
        check_call(r, "rto/regenerate", 1, 0.1, 4096, false);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_string_equal(r->msgs[1].content, Q2);

        r = call_at(&e, 3);
        check_call(r, "rto/final", 1, 0.1, 4096, stream);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].content, SYS);
        user = r->msgs[1].content;
        assert_non_null(strstr(user, Q));
        assert_non_null(strstr(user, "```\n" CODE "\n```"));
        assert_non_null(strstr(user, "return b + a"));
        assert_null(strstr(user, "It adds two numbers"));
        assert_null(strstr(user, "{{"));
        assert_int_equal(e.script.unexpected, 0);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The same code after the round trip (reindented, another language tag, other prose): no
 * fourth call; the answer is C1's code block as written. */
static void test_same(void **state)
{
    static const struct row rows[] = {
        {"rto/code", NULL, C1, NULL},
        {"rto/describe", NULL, Q2, NULL},
        {"rto/regenerate", NULL, "Sure!\n" SAME "\nDone.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, BLOCK);
    assert_string_equal(e.out.finish_reason, "stop");
    check_sequential(&e, 3);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "rto/final"), 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Code extraction: the longest block, cut and inline fences, ~~~, no fence at all. */
static void test_extraction(void **state)
{
    static const struct {
        const char *c1, *c1_finish, *c2;
        const char *want; /* NULL: the versions differ (the final call answers) */
        const char *want_finish;
    } cases[] = {
        /* an install line first: OptiLLM compared it, not the code */
        {"Install:\n```bash\npip install nothing\n```\nCode:\n" BLOCK, NULL, SAME, BLOCK, "stop"},
        {"```python\ndef f():\n    return 1\n", "length", "```\ndef f():\n    return 1\n```",
         "```python\ndef f():\n    return 1", "length"},
        {"~~~\nx = 1\ny = 2\n~~~", NULL, "```\nx = 1\ny = 2\n```", "~~~\nx = 1\ny = 2\n~~~",
         "stop"},
        {"  def f(): return 1\n", NULL, "def f():\n    return 1", "def f(): return 1", "stop"},
        {"```python\nx = 1```", NULL, "x = 1", "```python\nx = 1```", "stop"},
        {"````md\n```\ninner\n```\n````", NULL, "````\n```\ninner\n```\n````",
         "````md\n```\ninner\n```\n````", "stop"},
        {"```python\nx = 1\n```", NULL, "```python\nx = 2\n```", NULL, NULL},
        {"``` inline ``` is not a fence\nx = 1", NULL, "x = 1", NULL, NULL},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"rto/code", NULL, cases[i].c1, cases[i].c1_finish},
            {"rto/describe", NULL, Q2, NULL},
            {"rto/regenerate", NULL, cases[i].c2, NULL},
            {"rto/final", NULL, C3, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        if (strcmp(e.out.text, cases[i].want ? cases[i].want : C3) != 0)
            fail_msg("case %zu: got '%s'", i, e.out.text);
        assert_string_equal(e.out.finish_reason,
                            cases[i].want_finish ? cases[i].want_finish : "stop");
        check_sequential(&e, cases[i].want ? 3 : 4);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The client's temperature and max_tokens apply to the code-writing calls only. */
static void test_client_params(void **state)
{
    static const struct row rows[] = {
        {"rto/code", NULL, C1, NULL},
        {"rto/describe", NULL, Q2, NULL},
        {"rto/regenerate", NULL, DIFF, NULL},
        {"rto/final", NULL, C3, "length"},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.5,\"max_tokens\":300"), rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.finish_reason, "length");
    check_call(call_at(&e, 0), "rto/code", 1, 0.5, 300, false);
    check_call(call_at(&e, 1), "rto/describe", 1, 0.1, 1024, false);
    check_call(call_at(&e, 2), "rto/regenerate", 1, 0.5, 300, false);
    check_call(call_at(&e, 3), "rto/final", 1, 0.5, 300, false);
    check_usage(&e);
    env_cleanup(&e);
}

/* C1 is the answer when the round trip cannot be made; a failed first or last call fails the
 * request with the upstream's status; an empty C1 is returned as it is. */
static void test_failures(void **state)
{
    static const struct {
        const char *c1, *q2, *c2, *c3;
        int rc, http, rounds;
        const char *want;
    } cases[] = {
        {NULL, Q2, DIFF, C3, PX_EHTTP, 503, 1, NULL},
        {C1, NULL, DIFF, C3, PX_OK, 0, 2, C1},
        {C1, " \n", DIFF, C3, PX_OK, 0, 2, C1},
        {C1, Q2, NULL, C3, PX_OK, 0, 3, C1},
        {C1, Q2, "", C3, PX_OK, 0, 3, C1},
        {C1, Q2, DIFF, NULL, PX_EHTTP, 503, 4, NULL},
        {"", Q2, DIFF, C3, PX_OK, 0, 1, ""},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"rto/code", NULL, cases[i].c1, NULL},
            {"rto/describe", NULL, cases[i].q2, NULL},
            {"rto/regenerate", NULL, cases[i].c2, NULL},
            {"rto/final", NULL, cases[i].c3, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        e.fake.fail_status = 503;
        assert_int_equal(env_run(&e, &THE_APPROACH), cases[i].rc);
        if (cases[i].rc == PX_OK)
            assert_string_equal(e.out.text, cases[i].want);
        else
            assert_int_equal(px_http_status(&e.err), cases[i].http);
        check_sequential(&e, cases[i].rounds);
        check_usage(&e);
        env_cleanup(&e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row),           cmocka_unit_test(test_differ),
        cmocka_unit_test(test_same),          cmocka_unit_test(test_extraction),
        cmocka_unit_test(test_client_params), cmocka_unit_test(test_failures),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
