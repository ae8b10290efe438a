/* test_z3.c: the z3 approach on the fake upstream and the REAL libz3: satisfiable (model
 * values reach the final prompt), unsatisfiable, a broken script repaired (the repair prompt
 * carries Z3's message), time limits (measured), the sandbox's allow-list, direct answers,
 * failures, and several solves at once in different threads. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "log.h"
#include "prompt.h"

extern const struct approach approach_z3;

/* Under ThreadSanitizer (make SANITIZE=thread): libz3 is not instrumented, and its timer
 * threads (scoped_timer, behind every :timeout) hand mutexes between threads, which TSan
 * reports inside libz3. Our own code (the watchdog) stays checked. Unused otherwise. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:libz3.so.4\nrace:libz3.so.4\nmutex:libz3.so.4\n"
           "deadlock:libz3.so.4\n";
}

/* ---- the script: what the fake upstream answers --------------------------------------------- */

/* Rows without 'match' answer the calls of their stage once each, in order; rows with
 * 'match' answer every call of their stage whose messages contain it. NULL text: failure. */
struct row {
    const char *stage;
    const char *match;
    const char *text;
};

#define ROWS_MAX 16

struct script {
    const struct row *rows;
    bool used[ROWS_MAX];
    int unexpected;
};

static bool call_contains(const struct llm_call *call, const char *needle)
{
    for (size_t i = 0; i < call->nmsgs; i++)
        if (call->msgs[i].content && strstr(call->msgs[i].content, needle))
            return true;
    return false;
}

static const char *script_reply(void *user, const struct llm_call *call, int choice)
{
    struct script *s = user;

    (void)choice;
    for (int i = 0; s->rows[i].stage; i++)
        if (s->rows[i].match && strcmp(s->rows[i].stage, call->stage) == 0 &&
            call_contains(call, s->rows[i].match))
            return s->rows[i].text;
    for (int i = 0; s->rows[i].stage; i++) {
        if (!s->rows[i].match && !s->used[i] && strcmp(s->rows[i].stage, call->stage) == 0) {
            s->used[i] = true;
            return s->rows[i].text;
        }
    }
    s->unexpected++;
    return NULL;
}

/* ---- the request environment ------------------------------------------------------------- */

#define Q   "Two integers x and y add up to 10, x is above 7 and y above 1. Find them."
#define SYS "Be brief."
#define BODY(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS "\"},"                \
    "{\"role\":\"user\",\"content\":\"" Q "\"}]" extra "}"

struct env {
    struct arena *arena;
    struct config cfg;
    struct chat_request req;
    struct px_error err;
    struct approach_ctx ctx;
    struct fake_llm fake;
    struct script script;
    struct chat_result out;
};

static void set_option(struct config *cfg, const char *name, double value)
{
    for (size_t i = 0; i < cfg->noptions; i++) {
        if (strcmp(cfg->options[i].name, name) == 0) {
            cfg->options[i].value = value;
            return;
        }
    }
    cfg->options[cfg->noptions].name = name;
    cfg->options[cfg->noptions++].value = value;
}

static void env_init(struct env *e, const char *body, const struct row *rows)
{
    memset(e, 0, sizeof(*e));
    e->arena = arena_create();
    snprintf(e->cfg.approach, sizeof(e->cfg.approach), "auto");
    snprintf(e->cfg.model, sizeof(e->cfg.model), "m");
    e->cfg.n = 1;
    /* the registry defaults as server values: the test runs with or without the row */
    for (const struct approach_option *o = approach_z3.options; o->name; o++)
        set_option(&e->cfg, o->name, o->def);
    assert_int_equal(chat_request_parse(e->arena, body, strlen(body), &e->cfg, &e->req, &e->err),
                     PX_OK);
    e->script.rows = rows;
    fake_llm_init(&e->fake, script_reply, &e->script);
    e->ctx.arena = e->arena;
    e->ctx.req = &e->req;
    e->ctx.opts = approach_opts_of(&e->cfg);
    e->ctx.llm = &e->fake.llm;
    e->ctx.err = &e->err;
    e->ctx.req_id = "test";
}

static int env_run(struct env *e)
{
    memset(&e->out, 0, sizeof(e->out));
    return approach_z3.run(&e->ctx, &e->out);
}

static void env_cleanup(struct env *e)
{
    fake_llm_cleanup(&e->fake);
    arena_destroy(e->arena);
}

static void check_usage(const struct env *e)
{
    assert_int_equal(e->ctx.usage.prompt_tokens, e->fake.total.prompt_tokens);
    assert_int_equal(e->ctx.usage.completion_tokens, e->fake.total.completion_tokens);
    assert_int_equal(e->ctx.usage.calls, e->fake.total.calls);
    assert_int_equal(e->ctx.usage.calls, (long)e->fake.ncalls);
    assert_int_equal(e->fake.invalid, 0);
}

static void check_call(const struct fake_record *r, const char *stage, double temp, long max_tokens,
                       bool stream)
{
    assert_non_null(r);
    assert_string_equal(r->stage, stage);
    assert_int_equal(r->n, 1);
    assert_true(fabs(r->temperature - temp) < 1e-9);
    assert_int_equal(r->max_tokens, max_tokens);
    assert_int_equal(r->stream_to_client, stream);
}

/* The user message of the final call (the solver's report). */
static const char *final_prompt(const struct env *e)
{
    const struct fake_record *r = &e->fake.calls[e->fake.ncalls - 1];

    assert_string_equal(r->stage, "z3/final");
    return fake_record_last(r);
}

/* The solver time the final prompt reports, in ms. */
static long reported_ms(const char *prompt)
{
    const char *p = strstr(prompt, "ms)");

    assert_non_null(p);
    while (p > prompt && p[-1] == ' ')
        p--;
    while (p > prompt && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return strtol(p, NULL, 10);
}

/* Extra time allowed over a limit: the solver stops at its limit, but one check of that limit
 * can take long under valgrind (which serialises threads and runs Z3 ~50x slower). */
static long slack_ms(void)
{
    const char *pre = getenv("LD_PRELOAD");

    return pre && strstr(pre, "vgpreload") ? 30000 : 750;
}

/* ---- scripts ------------------------------------------------------------------------------ */

#define SAT_SCRIPT                                                                                 \
    "; x + y = 10, x > 7, y > 1\n"                                                                 \
    "(declare-const x Int)\n"                                                                      \
    "(declare-const y Int)\n"                                                                      \
    "(assert (= (+ x y) 10)) ; the sum\n"                                                          \
    "(assert (> x 7))\n"                                                                           \
    "(assert (> y 1))\n"                                                                           \
    "(check-sat)\n"                                                                                \
    "(get-value (x y))\n"
#define SAT_REPLY "The conditions map directly to linear constraints.\n```smt2\n" SAT_SCRIPT "```\n"
#define FINAL     "x = 8 and y = 2."

/* a^3 + b^3 = c^3 over positive integers: Z3 cannot settle it. */
#define HARD_SCRIPT                                                                                \
    "(declare-const a Int)(declare-const b Int)(declare-const c Int)\n"                            \
    "(assert (> a 0))(assert (> b 0))(assert (> c 0))\n"                                           \
    "(assert (= (+ (* a a a) (* b b b)) (* c c c)))\n"                                             \
    "(check-sat)\n(get-model)\n"

/* ---- tests -------------------------------------------------------------------------------- */

/* Satisfiable: 2 rounds; the model's values reach the final prompt; the final call is the
 * one that streams. */
static void test_z3_sat(void **state)
{
    static const struct row rows[] = {
        {"z3/formulate", NULL, SAT_REPLY},
        {"z3/final", NULL, FINAL},
        {NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r;
    const char *fin;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, FINAL);
    assert_string_equal(e.out.finish_reason, "stop");
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(e.fake.ncalls, 2);
    r = fake_llm_call(&e.fake, 0, 0);
    check_call(r, "z3/formulate", 0.1, 2048, false);
    assert_int_equal(r->nmsgs, 3); /* [instructions, client's system, client's question] */
    assert_non_null(strstr(r->msgs[0].content, "SMT-LIB"));
    assert_non_null(strstr(r->msgs[0].content, "NOT_SUITABLE"));
    assert_string_equal(r->msgs[1].content, SYS);
    assert_string_equal(r->msgs[2].content, Q);
    r = fake_llm_call(&e.fake, 1, 0);
    check_call(r, "z3/final", 0.1, -1, true);
    assert_int_equal(r->nmsgs, 3); /* [client's system, client's question, solver report] */
    assert_string_equal(r->msgs[0].content, SYS);
    assert_string_equal(r->msgs[1].content, Q);
    fin = final_prompt(&e);
    assert_non_null(strstr(fin, "result: sat ("));
    assert_non_null(strstr(fin, "((x 8)"));
    assert_non_null(strstr(fin, "(y 2))"));
    assert_non_null(strstr(fin, "(assert (> x 7))")); /* the script, as the model wrote it */
    assert_null(strstr(fin, ":timeout"));             /* not our injected limit */
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Unsatisfiable: "unsat" reaches the final prompt; the get-model error that follows is
 * expected and does not cause a repair. A uniqueness check (sat, then unsat) is fine too. */
static void test_z3_unsat(void **state)
{
    static const struct row rows[] = {
        {"z3/formulate", NULL,
         "```smt2\n(declare-const x Int)\n(assert (> x 5))\n(assert (< x 3))\n(check-sat)\n"
         "(get-model)\n```"},
        {"z3/final", NULL, "No such x exists."},
        {NULL, NULL, NULL},
    };
    static const struct row unique[] = {
        {"z3/formulate", NULL,
         "```smt2\n(declare-const x Int)\n(assert (= (* 3 x) 21))\n(check-sat)\n(get-value (x))\n"
         "(assert (not (= x 7)))\n(check-sat)\n(get-model)\n```"},
        {"z3/final", NULL, "x = 7, and it is the only solution."},
        {NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "No such x exists.");
    assert_int_equal(e.fake.ncalls, 2);
    assert_non_null(strstr(final_prompt(&e), "result: unsat ("));
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), unique);
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.ncalls, 2);
    assert_non_null(strstr(final_prompt(&e), "result: sat, unsat ("));
    assert_non_null(strstr(final_prompt(&e), "((x 7))"));
    env_cleanup(&e);
}

/* A broken script, then a fixed one: the repair prompt carries Z3's own error message and
 * the script; the conversation grows [.., assistant script, user repair]. */
static void test_z3_repair(void **state)
{
    static const struct row rows[] = {
        {"z3/formulate", NULL,
         "```smt2\n(declare-const x Int)\n(assert (> y 7))\n(check-sat)\n(get-model)\n```"},
        {"z3/repair", NULL, SAT_REPLY},
        {"z3/final", NULL, FINAL},
        {NULL, NULL, NULL},
    };
    static const struct row unbalanced[] = {
        {"z3/formulate", NULL, "```smt2\n(declare-const x Int)\n(assert (> x 7)\n(check-sat)\n```"},
        {"z3/repair", NULL, SAT_REPLY},
        {"z3/final", NULL, FINAL},
        {NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, FINAL);
    assert_int_equal(e.fake.rounds, 3);
    r = fake_llm_call(&e.fake, 1, 0);
    check_call(r, "z3/repair", 0.1, 2048, false);
    assert_int_equal(r->nmsgs, 5);
    assert_string_equal(r->msgs[3].role, "assistant");
    assert_non_null(strstr(r->msgs[3].content, "(assert (> y 7))"));
    assert_string_equal(r->msgs[4].role, "user");
    assert_non_null(strstr(fake_record_last(r), "unknown constant y"));
    assert_non_null(strstr(fake_record_last(r), "line 2 column")); /* the model's numbering */
    assert_non_null(strstr(fake_record_last(r), "(assert (> y 7))"));
    assert_non_null(strstr(final_prompt(&e), "((x 8)"));
    check_usage(&e);
    env_cleanup(&e);

    /* unbalanced parentheses are found before Z3 runs; the model is told where */
    env_init(&e, BODY(""), unbalanced);
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, FINAL);
    assert_non_null(
        strstr(fake_record_last(fake_llm_call(&e.fake, 1, 0)), "line 2: unbalanced parentheses"));
    check_usage(&e);
    env_cleanup(&e);
}

/* Repairs that never work: after z3_max_repairs of them, a direct answer (the client's
 * conversation as sent, streamed). With 0 repairs the direct answer comes at once. */
static void test_z3_repairs_exhausted(void **state)
{
    static const struct row rows[] = {
        {"z3/formulate", NULL, "```smt2\n(assert (> y 7))\n(check-sat)\n```"},
        {"z3/repair", NULL, "```smt2\n(assert (> z 7))\n(check-sat)\n```"},
        {"z3/repair", NULL, "```smt2\n(declare-const x Int)\n(assert (> w x))\n(check-sat)\n```"},
        {"z3/direct", NULL, "Probably 8 and 2."},
        {NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "Probably 8 and 2.");
    assert_int_equal(e.fake.rounds, 4);
    assert_non_null(strstr(fake_record_last(fake_llm_call(&e.fake, 2, 0)), "unknown constant z"));
    assert_int_equal(fake_llm_call(&e.fake, 2, 0)->nmsgs, 7);
    r = fake_llm_call(&e.fake, 3, 0);
    check_call(r, "z3/direct", 0.1, -1, true);
    assert_int_equal(r->nmsgs, 2);
    assert_string_equal(r->msgs[1].content, Q);
    assert_true(r->raw_last);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), rows);
    set_option(&e.cfg, "z3_max_repairs", 0);
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.rounds, 2);
    assert_string_equal(fake_llm_call(&e.fake, 1, 0)->stage, "z3/direct");
    env_cleanup(&e);
}

/* A problem Z3 cannot settle in time: "unknown" within the limit, measured; a script that
 * sets its own larger timeout is still held to ours. */
static void test_z3_timeout(void **state)
{
    static const struct row rows[] = {
        {"z3/formulate", NULL, "```smt2\n" HARD_SCRIPT "```"},
        {"z3/final", NULL, "The solver could not decide."},
        {NULL, NULL, NULL},
    };
    static const struct row sneaky_timeout[] = {
        {"z3/formulate", NULL, "```smt2\n(set-option :timeout 600000)\n" HARD_SCRIPT "```"},
        {"z3/final", NULL, "The solver could not decide."},
        {NULL, NULL, NULL},
    };
    const struct row *cases[] = {rows, sneaky_timeout};

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        struct env e;
        long long t0;
        long long elapsed;
        long ms;

        env_init(&e, BODY(""), cases[i]);
        set_option(&e.cfg, "z3_timeout_ms", 300);
        t0 = px_now_ms();
        assert_int_equal(env_run(&e), PX_OK);
        elapsed = px_now_ms() - t0;
        assert_int_equal(e.fake.ncalls, 2);
        assert_non_null(strstr(final_prompt(&e), "result: unknown ("));
        ms = reported_ms(final_prompt(&e));
        /* the solver stopped at its 300 ms limit (+ the watchdog's grace at most) */
        if (ms < 250 || ms > 300 + 250 + slack_ms())
            fail_msg("solver time %ld ms for a 300 ms limit", ms);
        if (elapsed > 300 + 4000 + 10 * slack_ms()) /* context set-up included */
            fail_msg("run took %lld ms for a 300 ms limit", elapsed);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Work outside check-sat (unfolding a recursive function a million times in simplify) is cut
 * by the watchdog: "unknown (time limit reached)", not an error to repair. */
static void test_z3_watchdog(void **state)
{
    static const struct row rows[] = {
        {"z3/formulate", NULL,
         "```smt2\n(define-fun-rec f ((n Int)) Int (ite (<= n 0) 0 (+ 1 (f (- n 1)))))\n"
         "(simplify (f 100000000))\n(check-sat)\n```"},
        {"z3/final", NULL, "Too slow."},
        {NULL, NULL, NULL},
    };
    struct env e;
    long ms;

    (void)state;
    env_init(&e, BODY(""), rows);
    set_option(&e.cfg, "z3_timeout_ms", 200);
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.ncalls, 2);
    assert_non_null(strstr(final_prompt(&e), "result: unknown (time limit reached) ("));
    ms = reported_ms(final_prompt(&e));
    /* Z3 notices the interrupt at its next check of the limit */
    if (ms < 200 + 250 - 50 || ms > 200 + 250 + 2000 + slack_ms())
        fail_msg("solver time %ld ms for a 200 ms limit + 250 ms grace", ms);
    env_cleanup(&e);
}

/* The allow-list: file-writing options and exit are dropped (the file never appears), other
 * options too; refused commands and stray text go back to the model as errors. */
static void test_z3_sandbox(void **state)
{
    char path[128];
    char reply[1024];
    struct env e;

    (void)state;
    snprintf(path, sizeof(path), "/tmp/px_z3_sandbox_%ld.txt", (long)getpid());
    unlink(path);
    snprintf(reply, sizeof(reply),
             "```smt2\n(set-option :regular-output-channel \"%s\")\n"
             "(set-option :produce-models true)\n(set-option :memory_max_size 1)\n"
             "(set-logic QF_LIA)\n(declare-const x Int)\n(exit)\n(assert (= x 4))\n"
             "; a comment with a ( paren\n(echo \"a string with ) and \"\" inside\")\n"
             "(check-sat)\n(get-value (x))\n```",
             path);
    {
        const struct row rows[] = {
            {"z3/formulate", NULL, reply},
            {"z3/final", NULL, "x is 4."},
            {NULL, NULL, NULL},
        };

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e), PX_OK);
        assert_int_equal(e.fake.ncalls, 2);
        assert_non_null(strstr(final_prompt(&e), "((x 4))"));
        assert_non_null(strstr(final_prompt(&e), "a string with ) and \" inside"));
        assert_int_equal(access(path, F_OK), -1); /* nothing was written */
        env_cleanup(&e);
    }

    {
        static const char *const refused[][2] = {
            {"(declare-const x Int)(assert (= x 1))(check-sat)(get-proof-graph)",
             "(get-proof-graph ...) is not available"},
            {"(declare-const x Int)(push 1000000)(check-sat)", "(push) takes at most 100"},
            {"(reset)(check-sat)", "(reset ...) is not available"},
            {"(declare-const x Int) x (check-sat)", "unexpected text outside a command"},
            {"(declare-const x Int)(assert (> x 1))", "has no (check-sat)"},
            {"(|exit|)(check-sat)", "must start with a plain name"},
            {"(declare-const |a|b| Int)(check-sat)", "unbalanced parentheses"},
            {"(minimize x)(check-sat)", "(minimize ...) is not available"},
        };

        for (size_t i = 0; i < PX_ARRAY_LEN(refused); i++) {
            char text[512];
            const struct row rows[] = {
                {"z3/formulate", NULL, text},
                {"z3/repair", NULL, SAT_REPLY},
                {"z3/final", NULL, FINAL},
                {NULL, NULL, NULL},
            };

            snprintf(text, sizeof(text), "```smt2\n%s\n```", refused[i][0]);
            env_init(&e, BODY(""), rows);
            assert_int_equal(env_run(&e), PX_OK);
            assert_int_equal(e.fake.rounds, 3);
            if (!strstr(fake_record_last(fake_llm_call(&e.fake, 1, 0)), refused[i][1]))
                fail_msg("case %zu: repair prompt lacks '%s':\n%s", i, refused[i][1],
                         fake_record_last(fake_llm_call(&e.fake, 1, 0)));
            env_cleanup(&e);
        }
    }
}

/* Caps: the solver output shown to the model is cut at 8 KiB; a script over 64 KiB is
 * refused before Z3 sees it. */
static void test_z3_caps(void **state)
{
    size_t cap = 80 * 1024;
    char *big = malloc(cap);
    size_t len = 0;
    struct env e;

    (void)state;
    len += (size_t)snprintf(big + len, cap - len, "```smt2\n");
    for (int i = 0; i < 1200; i++)
        len += (size_t)snprintf(big + len, cap - len,
                                "(declare-const v%d Int)(assert (= v%d %d))\n", i, i, i);
    snprintf(big + len, cap - len, "(check-sat)\n(get-model)\n```");
    {
        const struct row rows[] = {
            {"z3/formulate", NULL, big},
            {"z3/final", NULL, "done"},
            {NULL, NULL, NULL},
        };

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e), PX_OK);
        assert_int_equal(e.fake.ncalls, 2);
        assert_non_null(strstr(final_prompt(&e), "more bytes cut]"));
        assert_non_null(strstr(final_prompt(&e), "result: sat ("));
        env_cleanup(&e);
    }

    len = (size_t)snprintf(big, cap, "```smt2\n(declare-const x Int)\n");
    while (len < 70 * 1024)
        len += (size_t)snprintf(big + len, cap - len, "; padding padding padding padding\n");
    snprintf(big + len, cap - len, "(check-sat)\n```");
    {
        const struct row rows[] = {
            {"z3/formulate", NULL, big},
            {"z3/repair", NULL, SAT_REPLY},
            {"z3/final", NULL, FINAL},
            {NULL, NULL, NULL},
        };

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e), PX_OK);
        assert_non_null(
            strstr(fake_record_last(fake_llm_call(&e.fake, 1, 0)), "longer than 65536 bytes"));
        check_usage(&e);
        env_cleanup(&e);
    }
    free(big);
}

/* No script: NOT_SUITABLE, prose only, or code in another language: one direct answer. The
 * client's temperature is honoured by the answering calls, never by the formulation. */
static void test_z3_direct(void **state)
{
    static const char *const replies[] = {
        "NOT_SUITABLE",
        "I would rather just answer this one.",
        "```python\nfrom z3 import *\nprint(42)\n```",
        "Use a ```smt2``` block? Not here: NOT_SUITABLE",
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(replies); i++) {
        const struct row rows[] = {
            {"z3/formulate", NULL, replies[i]},
            {"z3/direct", NULL, "Directly: 8 and 2."},
            {NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(",\"temperature\":0.7"), rows);
        e.ctx.stream_final = true;
        assert_int_equal(env_run(&e), PX_OK);
        assert_string_equal(e.out.text, "Directly: 8 and 2.");
        assert_int_equal(e.fake.rounds, 2);
        check_call(fake_llm_call(&e.fake, 0, 0), "z3/formulate", 0.1, 2048, false);
        check_call(fake_llm_call(&e.fake, 1, 0), "z3/direct", 0.7, -1, true);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* Other ways a script may arrive: ```smt, ```lisp, no language, an unclosed block, a bare
 * script, and several blocks (the last with a check-sat wins). */
static void test_z3_extract(void **state)
{
    static const char *const replies[] = {
        "```smt\n" SAT_SCRIPT "```",
        "```lisp\n" SAT_SCRIPT "```",
        "Script:\n```\n" SAT_SCRIPT "```\nDone.",
        "```smt2\n" SAT_SCRIPT,
        SAT_SCRIPT,
        "First a sketch:\n```smt2\n(declare-const x Int)\n```\nThen:\n```smt2\n" SAT_SCRIPT
        "```\nAnd in Python:\n```python\nprint(1)\n```",
        "```smt2\n(declare-const q Int)(assert (> q "
        "1))(check-sat)\n```\nbetter:\n```smt2\n" SAT_SCRIPT "```",
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(replies); i++) {
        const struct row rows[] = {
            {"z3/formulate", NULL, replies[i]},
            {"z3/final", NULL, FINAL},
            {NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e), PX_OK);
        if (e.fake.ncalls != 2 || !strstr(final_prompt(&e), "((x 8)"))
            fail_msg("case %zu: no solved script", i);
        env_cleanup(&e);
    }
}

/* Upstream failures: a failed formulation is the request's error; a failed repair call
 * leads to a direct answer; a failed final call is the request's error. */
static void test_z3_failures(void **state)
{
    static const struct row formulate_fails[] = {{NULL, NULL, NULL}};
    static const struct row repair_fails[] = {
        {"z3/formulate", NULL, "```smt2\n(assert (> y 7))\n(check-sat)\n```"},
        {"z3/repair", NULL, NULL},
        {"z3/direct", NULL, "Direct."},
        {NULL, NULL, NULL},
    };
    static const struct row final_fails[] = {
        {"z3/formulate", NULL, SAT_REPLY},
        {"z3/final", NULL, NULL},
        {NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), formulate_fails);
    e.fake.fail_status = 502;
    assert_int_equal(env_run(&e), PX_EHTTP);
    assert_int_equal(e.err.http_status, 502);
    assert_int_equal(e.fake.ncalls, 1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), repair_fails);
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "Direct.");
    assert_int_equal(e.fake.rounds, 3);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), final_fails);
    e.fake.fail_status = 0; /* a timeout */
    assert_int_equal(env_run(&e), PX_ETIMEDOUT);
    check_usage(&e);
    env_cleanup(&e);
}

/* Several requests solving at once, each on its own thread and Z3 context: every one gets
 * its own model, and the hard ones all stop at their limit. */
struct job {
    int i;
    long limit_ms;
    char reply[512];
    char want[32];
    char got[600];
    int rc;
    bool ok;
    long ms;
};

/* No cmocka assertion in these threads: a failure is reported back in the job. */
static void *job_main(void *arg)
{
    struct job *j = arg;
    const struct row rows[] = {
        {"z3/formulate", NULL, j->reply},
        {"z3/final", NULL, "done"},
        {NULL, NULL, NULL},
    };
    static const char body[] = BODY("");
    struct env e;
    const char *fin;

    memset(&e, 0, sizeof(e));
    e.arena = arena_create();
    snprintf(e.cfg.approach, sizeof(e.cfg.approach), "auto");
    snprintf(e.cfg.model, sizeof(e.cfg.model), "m");
    e.cfg.n = 1;
    set_option(&e.cfg, "z3_timeout_ms", (double)j->limit_ms);
    set_option(&e.cfg, "z3_max_repairs", 2);
    j->rc = chat_request_parse(e.arena, body, strlen(body), &e.cfg, &e.req, &e.err);
    if (j->rc == PX_OK) {
        e.script.rows = rows;
        fake_llm_init(&e.fake, script_reply, &e.script);
        e.ctx.arena = e.arena;
        e.ctx.req = &e.req;
        e.ctx.opts = approach_opts_of(&e.cfg);
        e.ctx.llm = &e.fake.llm;
        e.ctx.err = &e.err;
        j->rc = env_run(&e);
        fin = e.fake.ncalls == 2 ? fake_record_last(&e.fake.calls[1]) : "";
        j->ok = strstr(fin, j->want) != NULL;
        snprintf(j->got, sizeof(j->got), "%s", fin);
        j->ms = strstr(fin, "ms)") ? reported_ms(fin) : -1;
        fake_llm_cleanup(&e.fake);
    }
    arena_destroy(e.arena);
    return NULL;
}

#if defined(__SANITIZE_ADDRESS__)
#define Z3_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define Z3_UNDER_ASAN 1
#endif
#endif

static void test_z3_concurrent(void **state)
{
    struct job jobs[8];
    pthread_t th[8];

    (void)state;
#ifdef Z3_UNDER_ASAN
    /* Debian's sanitizer runtimes (GCC 12, LLVM 14) take no allocator lock around fork(): a
     * solver child forked while another thread of this test allocates inherits the held
     * lock and deadlocks in its first malloc (seen with gdb: __asan::Allocator, FutexWait),
     * so the easy jobs end at their 60 s limit. glibc's malloc is fork-safe: the plain,
     * valgrind and TSan builds run this test. */
    skip();
#endif
    for (int i = 0; i < 8; i++) {
        jobs[i].i = i;
        jobs[i].limit_ms = i % 4 == 3 ? 400 : 60000; /* easy ones must never hit theirs */
        if (i % 4 == 3) {
            snprintf(jobs[i].reply, sizeof(jobs[i].reply), "```smt2\n%s```", HARD_SCRIPT);
            snprintf(jobs[i].want, sizeof(jobs[i].want), "result: unknown");
        } else {
            snprintf(jobs[i].reply, sizeof(jobs[i].reply),
                     "```smt2\n(declare-const x Int)\n(assert (= (* 3 x) %d))\n(check-sat)\n"
                     "(get-value (x))\n```",
                     3 * (100 + i));
            snprintf(jobs[i].want, sizeof(jobs[i].want), "((x %d))", 100 + i);
        }
        assert_int_equal(pthread_create(&th[i], NULL, job_main, &jobs[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(jobs[i].rc, PX_OK);
        if (!jobs[i].ok)
            fail_msg("job %d: final prompt lacks '%s': %s", i, jobs[i].want, jobs[i].got);
        if (i % 4 == 3 && jobs[i].ms > 400 + 250 + 1500 + slack_ms())
            fail_msg("job %d: solver time %ld ms for a 400 ms limit", i, jobs[i].ms);
    }
}

static void test_z3_row(void **state)
{
    const struct approach *a = &approach_z3;

    (void)state;
    assert_string_equal(a->slug, "z3");
    assert_int_equal(a->calls, 2);
    assert_int_equal(a->rounds, 2);
    assert_null(strchr(a->summary, '\n'));
    assert_string_equal(a->options[0].name, "z3_timeout_ms");
    assert_true(a->options[0].def == 5000);
    assert_string_equal(a->options[1].name, "z3_max_repairs");
    assert_true(a->options[1].def == 2);
    assert_string_equal(a->options[2].name, "z3_memory_mb");
    assert_true(a->options[2].client_lowers_only);
    assert_true(a->options[0].client_lowers_only);
    assert_null(a->options[3].name);
    for (const char *const *p = a->prompts; *p; p++)
        assert_non_null(prompt_get(*p));
    assert_non_null(strstr(prompt_get("z3/repair"), "{{error}}"));
    assert_non_null(strstr(prompt_get("z3/final"), "{{output}}"));
    if (approach_find("z3", 2))
        assert_int_equal(registry_check(), 0);
}

static int group_setup(void **state)
{
    (void)state;
    log_level = LOG_ERROR;
    if (prompt_init(NULL) != 0 || answer_init() != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    answer_cleanup();
    prompt_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_z3_row),
        cmocka_unit_test(test_z3_sat),
        cmocka_unit_test(test_z3_unsat),
        cmocka_unit_test(test_z3_repair),
        cmocka_unit_test(test_z3_repairs_exhausted),
        cmocka_unit_test(test_z3_timeout),
        cmocka_unit_test(test_z3_watchdog),
        cmocka_unit_test(test_z3_sandbox),
        cmocka_unit_test(test_z3_caps),
        cmocka_unit_test(test_z3_direct),
        cmocka_unit_test(test_z3_extract),
        cmocka_unit_test(test_z3_failures),
        cmocka_unit_test(test_z3_concurrent),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
