/* test_codeexec.c: executecode and coc on the fake upstream and a FAKE sandbox (this file's
 * sandbox_run_python: scripted results, the code it was given recorded; nothing runs): the
 * stages, what the model is shown, fixes, the simulation, failures, usage, and the refusal of
 * their requests without --enable-code-execution. test_sandbox.c tests the real sandbox. */
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
#include "sandbox.h"

extern const struct approach approach_executecode;
extern const struct approach approach_coc;

#define SCRIPT_ENV_OWN_BODY
#include "script_env.h"

#define Q "What is the sum of the first 100 primes?"
#define BODY(q, extra)                                                                             \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"              \
    "{\"role\":\"user\",\"content\":\"" q "\"}]" extra "}"

/* ---- the fake sandbox ------------------------------------------------------------------------ */

struct fake_run {
    enum sandbox_end end;
    int exit_code;
    const char *out;
    const char *err;
};

#define RUNS_MAX 8

static struct {
    const struct fake_run *runs; /* consumed in order; ends with out == NULL */
    int next;
    int fail; /* != 0: return this px_status instead */
    char *codes[RUNS_MAX];
    int ncodes;
} sb;

static void sb_reset(const struct fake_run *runs)
{
    for (int i = 0; i < sb.ncodes; i++)
        free(sb.codes[i]);
    memset(&sb, 0, sizeof(sb));
    sb.runs = runs;
}

int sandbox_run_python(struct approach_ctx *ctx, const char *code, struct sandbox_result *out)
{
    const struct fake_run *r;

    memset(out, 0, sizeof(*out));
    if (sb.fail)
        return px_fail(ctx->err, sb.fail, NULL, "the code sandbox failed: fake");
    assert_true(sb.ncodes < RUNS_MAX);
    sb.codes[sb.ncodes++] = strdup(code);
    r = sb.runs ? &sb.runs[sb.next] : NULL;
    if (!r || !r->out)
        fail_msg("unexpected sandbox run: %s", code);
    sb.next++;
    out->end = r->end;
    out->exit_code = r->exit_code;
    out->out = r->out;
    out->err = r->err ? r->err : "";
    out->timeout_s = 10;
    return PX_OK;
}

static const char *last_msg(const struct fake_record *r)
{
    return r->msgs[r->nmsgs - 1].content;
}

/* ---- executecode ----------------------------------------------------------------------------- */

#define PROGRAM                                                                                    \
    "primes = [p for p in range(2, 600) if all(p % d for d in range(2, p))]\n"                     \
    "print(sum(primes[:100]))"
#define WRITE "I will compute it.\n```python\n" PROGRAM "\n```\n"

static void test_executecode_model_code(void **state)
{
    static const struct row rows[] = {
        {"executecode/write", NULL, WRITE, NULL},
        {"executecode/answer", NULL, "The sum is 24133.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {{SANDBOX_EXITED, 0, "24133\n", NULL}, {0}};
    struct env e;

    (void)state;
    sb_reset(runs);
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_executecode), PX_OK);
    assert_string_equal(e.out.text, "The sum is 24133.");
    assert_int_equal(sb.ncodes, 1);
    assert_string_equal(sb.codes[0], PROGRAM);
    check_sequential(&e, 2);
    check_call(call_at(&e, 0), "executecode/write", 1, NAN, -1, false);
    check_call(call_at(&e, 1), "executecode/answer", 1, NAN, -1, false);
    /* The write call: our instructions, then the client's conversation. */
    assert_non_null(strstr(call_at(&e, 0)->msgs[0].content, "```python"));
    assert_string_equal(last_msg(call_at(&e, 0)), Q);
    /* The answer call: the conversation, the model's program, and what it printed. */
    assert_int_equal(call_at(&e, 1)->nmsgs, call_at(&e, 0)->nmsgs + 2);
    assert_string_equal(call_at(&e, 1)->msgs[call_at(&e, 1)->nmsgs - 2].content, WRITE);
    assert_non_null(strstr(last_msg(call_at(&e, 1)), "finished normally"));
    assert_non_null(strstr(last_msg(call_at(&e, 1)), "Output:\n24133\n"));
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

static void test_executecode_no_code(void **state)
{
    static const struct row rows[] = {
        {"executecode/write", NULL, "Paris.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    sb_reset(NULL);
    env_init(&e, BODY("What is the capital of France?", ""), rows);
    assert_int_equal(env_run(&e, &approach_executecode), PX_OK);
    assert_string_equal(e.out.text, "Paris.");
    assert_int_equal(sb.ncodes, 0);
    check_sequential(&e, 1);
    check_usage(&e);
    env_cleanup(&e);
}

/* The request's own code: every block runs, in order; one call answers. */
static void test_executecode_request_code(void **state)
{
    static const struct row rows[] = {
        {"executecode/answer", NULL, "It prints 3, then fails.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {
        {SANDBOX_EXITED, 0, "3\n", NULL},
        {SANDBOX_EXITED, 1, "", "Traceback ...\nZeroDivisionError: division by zero\n"},
        {0}};
    struct env e;
    const char *m;

    (void)state;
    sb_reset(runs);
    env_init(
        &e,
        BODY("Run this:\\n```python\\nprint(1 + 2)\\n```\\nand this:\\n```python\\n1/0\\n```", ""),
        rows);
    assert_int_equal(env_run(&e, &approach_executecode), PX_OK);
    assert_string_equal(e.out.text, "It prints 3, then fails.");
    assert_int_equal(sb.ncodes, 2);
    assert_string_equal(sb.codes[0], "print(1 + 2)");
    assert_string_equal(sb.codes[1], "1/0");
    check_sequential(&e, 1);
    check_call(call_at(&e, 0), "executecode/answer", 1, NAN, -1, false);
    m = last_msg(call_at(&e, 0));
    assert_non_null(strstr(m, "Program 1:"));
    assert_non_null(strstr(m, "Program 2:"));
    assert_non_null(strstr(m, "exit status 1"));
    assert_non_null(strstr(m, "ZeroDivisionError"));
    /* The client's message is still there, before our results. */
    assert_non_null(strstr(call_at(&e, 0)->text, "Run this:"));
    check_usage(&e);
    env_cleanup(&e);
}

static void test_executecode_limits_reported(void **state)
{
    static const struct row rows[] = {
        {"executecode/write", NULL, WRITE, NULL},
        {"executecode/answer", NULL, "It did not finish.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {{SANDBOX_TIMEOUT, 0, "partial\n", NULL}, {0}};
    struct env e;

    (void)state;
    sb_reset(runs);
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_executecode), PX_OK);
    assert_non_null(strstr(last_msg(call_at(&e, 1)), "time limit of 10 s"));
    assert_non_null(strstr(last_msg(call_at(&e, 1)), "partial"));
    env_cleanup(&e);
}

/* executecode_max_runs 2: the model may answer an output with another program. */
static void test_executecode_more_runs(void **state)
{
    static const struct row rows[] = {
        {"executecode/write", NULL, WRITE, NULL},
        {"executecode/more", NULL, "Not quite:\n```python\nprint(24133 + 0)\n```", NULL},
        {"executecode/answer", NULL, "24133, checked twice.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row done[] = {
        {"executecode/write", NULL, WRITE, NULL},
        {"executecode/more", NULL, "It is 24133.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {
        {SANDBOX_EXITED, 1, "", "SyntaxError: x\n"}, {SANDBOX_EXITED, 0, "24133\n", NULL}, {0}};
    struct env e;

    (void)state;
    sb_reset(runs);
    env_init(&e, BODY(Q, ",\"optillm_executecode_max_runs\":2"), rows);
    assert_int_equal(env_run(&e, &approach_executecode), PX_OK);
    assert_string_equal(e.out.text, "24133, checked twice.");
    assert_int_equal(sb.ncodes, 2);
    assert_string_equal(sb.codes[1], "print(24133 + 0)");
    check_sequential(&e, 3);
    check_call(call_at(&e, 1), "executecode/more", 1, NAN, -1, false);
    assert_non_null(strstr(last_msg(call_at(&e, 1)), "SyntaxError"));
    assert_non_null(strstr(last_msg(call_at(&e, 1)), "1 more run(s)"));
    /* The whole exchange reaches the last call: both programs and both outputs. */
    assert_int_equal(call_at(&e, 2)->nmsgs, call_at(&e, 0)->nmsgs + 4);
    assert_non_null(strstr(last_msg(call_at(&e, 2)), "Output:\n24133"));
    check_usage(&e);
    env_cleanup(&e);
    /* The model is satisfied after the first output: its reply is the answer. */
    sb_reset(runs);
    env_init(&e, BODY(Q, ",\"optillm_executecode_max_runs\":2"), done);
    assert_int_equal(env_run(&e, &approach_executecode), PX_OK);
    assert_string_equal(e.out.text, "It is 24133.");
    assert_int_equal(sb.ncodes, 1);
    check_sequential(&e, 2);
    env_cleanup(&e);
}

static void test_executecode_failures(void **state)
{
    static const struct row rows[] = {
        {"executecode/write", NULL, WRITE, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row down[] = {
        {"executecode/write", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    /* The sandbox cannot run: the request fails with its status, no answer call. */
    sb_reset(NULL);
    sb.fail = PX_EINTERNAL;
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_executecode), PX_EINTERNAL);
    check_sequential(&e, 1);
    env_cleanup(&e);
    sb.fail = 0;
    /* The upstream fails. */
    env_init(&e, BODY(Q, ""), down);
    assert_true(env_run(&e, &approach_executecode) < 0);
    assert_int_equal(sb.ncodes, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* ---- coc ------------------------------------------------------------------------------------- */

#define COC1 "```python\nprimes = helper()\nanswer = sum(primes)\n```"
#define COC2 "Fixed:\n```python\nprimes = [2, 3]\nanswer = sum(primes)\n```"
#define ERR1 "Traceback (most recent call last):\nNameError: name 'helper' is not defined\n"

static void test_coc_first_run(void **state)
{
    static const struct row rows[] = {
        {"coc/write", NULL, COC1, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {
        {SANDBOX_EXITED, 0, "step\n\n<<coc-answer>>24133\n", NULL}, {0}};
    struct env e;

    (void)state;
    sb_reset(runs);
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_coc), PX_OK);
    assert_string_equal(e.out.text, "24133");
    assert_int_equal(sb.ncodes, 1);
    /* The program as written, then our trailer reporting `answer`. */
    assert_int_equal(strncmp(sb.codes[0], "primes = helper()\nanswer = sum(primes)\n", 38), 0);
    assert_non_null(strstr(sb.codes[0], "print('\\n<<coc-answer>>' + str(answer))"));
    check_sequential(&e, 1);
    check_call(call_at(&e, 0), "coc/write", 1, 0.7, -1, false);
    assert_non_null(strstr(call_at(&e, 0)->msgs[0].content, "`answer`"));
    assert_string_equal(last_msg(call_at(&e, 0)), Q);
    check_usage(&e);
    env_cleanup(&e);
}

static void test_coc_fix(void **state)
{
    static const struct row rows[] = {
        {"coc/write", NULL, COC1, NULL},
        {"coc/fix", NULL, COC2, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {
        {SANDBOX_EXITED, 1, "", ERR1}, {SANDBOX_EXITED, 0, "\n<<coc-answer>>5\n", NULL}, {0}};
    struct env e;
    const char *m;

    (void)state;
    sb_reset(runs);
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_coc), PX_OK);
    assert_string_equal(e.out.text, "5");
    assert_int_equal(sb.ncodes, 2);
    assert_int_equal(strncmp(sb.codes[1], "primes = [2, 3]\n", 16), 0);
    check_sequential(&e, 2);
    check_call(call_at(&e, 1), "coc/fix", 1, 0.2, -1, false);
    m = last_msg(call_at(&e, 1));
    assert_non_null(strstr(m, "primes = helper()"));        /* the failed program */
    assert_non_null(strstr(m, "NameError: name 'helper'")); /* and its error */
    assert_null(strstr(m, "<<coc-"));                       /* not our trailer */
    check_usage(&e);
    env_cleanup(&e);
}

/* Every run fails: the model traces the last program and gives `answer`'s value. */
static void test_coc_simulate(void **state)
{
    static const struct row rows[] = {
        {"coc/write", NULL, COC1, NULL}, {"coc/fix", NULL, COC1, NULL},
        {"coc/fix", NULL, COC2, NULL},   {"coc/simulate", NULL, "\n`5`\n", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {
        {SANDBOX_EXITED, 1, "", ERR1},
        {SANDBOX_SIGNALED, 0, "", NULL},
        {SANDBOX_EXITED, 0, "no marker\n<<coc-no-answer>>\n", NULL},
        {0}};
    struct env e;
    const char *m;

    (void)state;
    sb_reset(runs);
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_coc), PX_OK);
    assert_string_equal(e.out.text, "5");
    assert_int_equal(sb.ncodes, 3);
    check_sequential(&e, 4);
    check_call(call_at(&e, 3), "coc/simulate", 1, 0.2, -1, false);
    m = last_msg(call_at(&e, 3));
    assert_non_null(strstr(m, "primes = [2, 3]")); /* the last program */
    assert_non_null(strstr(m, "without setting `answer`"));
    assert_non_null(strstr(call_at(&e, 3)->text, Q)); /* with the question */
    check_usage(&e);
    env_cleanup(&e);
}

static void test_coc_no_code(void **state)
{
    static const struct row rows[] = {
        {"coc/write", NULL, "24133", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row nofix[] = {
        {"coc/write", NULL, COC1, NULL},
        {"coc/fix", NULL, "I cannot fix it.", NULL},
        {"coc/simulate", NULL, "17", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {{SANDBOX_EXITED, 1, "", ERR1}, {0}};
    struct env e;

    (void)state;
    sb_reset(NULL);
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_coc), PX_OK);
    assert_string_equal(e.out.text, "24133");
    check_sequential(&e, 1);
    env_cleanup(&e);
    /* A fix without a program: the last program is simulated at once. */
    sb_reset(runs);
    env_init(&e, BODY(Q, ""), nofix);
    assert_int_equal(env_run(&e, &approach_coc), PX_OK);
    assert_string_equal(e.out.text, "17");
    assert_int_equal(sb.ncodes, 1);
    check_sequential(&e, 3);
    env_cleanup(&e);
}

static void test_coc_attempts_option(void **state)
{
    static const struct row rows[] = {
        {"coc/write", NULL, COC1, NULL},
        {"coc/simulate", NULL, "17", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {{SANDBOX_TIMEOUT, 0, "", NULL}, {0}};
    struct env e;

    (void)state;
    sb_reset(runs);
    env_init(&e, BODY(Q, ",\"optillm_coc_max_attempts\":1"), rows);
    assert_int_equal(env_run(&e, &approach_coc), PX_OK);
    assert_string_equal(e.out.text, "17");
    assert_int_equal(sb.ncodes, 1);
    check_sequential(&e, 2);
    assert_non_null(strstr(last_msg(call_at(&e, 1)), "time limit"));
    env_cleanup(&e);
}

static void test_coc_failures(void **state)
{
    static const struct row rows[] = {
        {"coc/write", NULL, COC1, NULL},
        {"coc/fix", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct fake_run runs[] = {{SANDBOX_EXITED, 1, "", ERR1}, {0}};
    struct env e;

    (void)state;
    sb_reset(runs); /* the fix call fails: the request fails */
    env_init(&e, BODY(Q, ""), rows);
    assert_true(env_run(&e, &approach_coc) < 0);
    check_usage(&e);
    env_cleanup(&e);
    sb_reset(NULL); /* the sandbox fails */
    sb.fail = PX_EINTERNAL;
    env_init(&e, BODY(Q, ""), rows);
    assert_int_equal(env_run(&e, &approach_coc), PX_EINTERNAL);
    env_cleanup(&e);
    sb_reset(NULL);
}

/* ---- the switch and the descriptors -------------------------------------------------------- */

static void test_code_execution_switch(void **state)
{
    static const char *const models[] = {"executecode-m", "coc-m", "bon&coc-m", "moa|executecode-m",
                                         NULL};
    struct arena *a = arena_create();
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.approach, sizeof(cfg.approach), "auto");
    cfg.n = 1;
    for (int i = 0; models[i]; i++) {
        char *body = arena_printf(
            a, "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            models[i]);

        cfg.enable_code_execution = false;
        memset(&err, 0, sizeof(err));
        assert_int_equal(chat_request_parse(a, body, strlen(body), &cfg, &req, &err), PX_EINVAL);
        assert_non_null(strstr(err.message, "--enable-code-execution"));
        cfg.enable_code_execution = true;
        assert_int_equal(chat_request_parse(a, body, strlen(body), &cfg, &req, &err), PX_OK);
    }
    /* The body field and the server default are checked the same way. */
    cfg.enable_code_execution = false;
    {
        const char *body = "{\"model\":\"m\",\"optillm_approach\":\"coc\",\"messages\":[{\"role\":"
                           "\"user\",\"content\":\"x\"}]}";

        assert_int_equal(chat_request_parse(a, body, strlen(body), &cfg, &req, &err), PX_EINVAL);
        snprintf(cfg.approach, sizeof(cfg.approach), "executecode");
        body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
        assert_int_equal(chat_request_parse(a, body, strlen(body), &cfg, &req, &err), PX_EINVAL);
    }
    /* Tools are refused (the answer may come from a call that could not honour them). */
    cfg.enable_code_execution = true;
    {
        const char *body = "{\"model\":\"coc-m\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
                           "\"f\"}}]}";

        assert_int_equal(chat_request_parse(a, body, strlen(body), &cfg, &req, &err), PX_EINVAL);
        assert_string_equal(err.param, "tools");
    }
    assert_true(approach_executecode.code_execution && approach_coc.code_execution);
    check_descriptor(&approach_executecode, "executecode", 2, 2);
    check_descriptor(&approach_coc, "coc", 1, 1);
    arena_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_executecode_model_code),
        cmocka_unit_test(test_executecode_no_code),
        cmocka_unit_test(test_executecode_request_code),
        cmocka_unit_test(test_executecode_limits_reported),
        cmocka_unit_test(test_executecode_more_runs),
        cmocka_unit_test(test_executecode_failures),
        cmocka_unit_test(test_coc_first_run),
        cmocka_unit_test(test_coc_fix),
        cmocka_unit_test(test_coc_simulate),
        cmocka_unit_test(test_coc_no_code),
        cmocka_unit_test(test_coc_attempts_option),
        cmocka_unit_test(test_coc_failures),
        cmocka_unit_test(test_code_execution_switch),
    };
    int rc = cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);

    sb_reset(NULL);
    return rc;
}
