/* script_env.h: THE scripted fake-upstream environment of the approach unit tests: a table of
 * scripted replies per stage, a parsed request, an approach context over the fake transport
 * (fake_llm.c), and checks of usage, call shapes, rounds and an approach's descriptor. Used by
 * test_approaches, test_cepo, test_deepthink, test_genselect, test_leap, test_mars,
 * test_plansearch, test_pvg, test_rto, test_json, test_privacy and test_compact (test_mcts and
 * test_rstar script their upstream as a tree, test_z3 its own way).
 * Include it after cmocka.h. A test that brings its own question and body defines
 * SCRIPT_ENV_OWN_BODY first (else Q, SYS and BODY() below). Header-only (static inline)
 * because the Makefile links each test with fake_llm.o alone. */
#ifndef SCRIPT_ENV_H
#define SCRIPT_ENV_H

#include <math.h>
#include <stdbool.h>
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

/* One scripted reply. Rows with 'match' answer every call of their stage whose messages
 * contain 'match' (the first such row wins); rows without it answer the calls of their stage
 * once each, in order (choice i of an n call, or the i-th single call). A stage ending in '*'
 * matches every stage with that prefix. */
struct row {
    const char *stage;
    const char *match;
    const char *text;   /* NULL: the call fails */
    const char *finish; /* NULL: "stop" */
};

#define ROWS_MAX 64

struct script {
    const struct row *rows; /* ends with a row whose stage is NULL */
    bool used[ROWS_MAX];
    const struct row *last;
    int unexpected; /* calls no row answered */
};

static inline bool script_stage_is(const char *pattern, const char *stage)
{
    size_t n = strlen(pattern);

    if (n && pattern[n - 1] == '*')
        return strncmp(pattern, stage, n - 1) == 0;
    return strcmp(pattern, stage) == 0;
}

static inline bool script_call_contains(const struct llm_call *call, const char *needle)
{
    for (size_t i = 0; i < call->nmsgs; i++)
        if (call->msgs[i].content && strstr(call->msgs[i].content, needle))
            return true;
    return false;
}

static inline const char *script_reply(void *user, const struct llm_call *call, int choice)
{
    struct script *s = user;

    (void)choice;
    s->last = NULL;
    for (int i = 0; s->rows[i].stage && !s->last; i++)
        if (s->rows[i].match && script_stage_is(s->rows[i].stage, call->stage) &&
            script_call_contains(call, s->rows[i].match))
            s->last = &s->rows[i];
    for (int i = 0; s->rows[i].stage && !s->last && i < ROWS_MAX; i++) {
        if (!s->rows[i].match && !s->used[i] && script_stage_is(s->rows[i].stage, call->stage)) {
            s->used[i] = true;
            s->last = &s->rows[i];
        }
    }
    if (!s->last) {
        s->unexpected++;
        return NULL;
    }
    return s->last->text;
}

static inline const char *script_finish(void *user, const struct llm_call *call, int choice)
{
    struct script *s = user;

    (void)call;
    (void)choice;
    return s->last ? s->last->finish : NULL;
}

/* ---- the request environment ------------------------------------------------------------- */

#ifndef SCRIPT_ENV_OWN_BODY
#define Q   "What is 6 times 7?"
#define SYS "Be brief."
#define BODY(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS "\"},"                \
    "{\"role\":\"user\",\"content\":\"" Q "\"}]" extra "}"
#endif

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

/* Sets an approach option as the server would from a flag (works before the registry lists
 * the approach, when a body field "optillm_<name>" would still be refused); a second call for
 * the same name replaces the value. */
static inline void env_option(struct env *e, const char *name, double value)
{
    for (size_t i = 0; i < e->cfg.noptions; i++) {
        if (strcmp(e->cfg.options[i].name, name) == 0) {
            e->cfg.options[i].value = value;
            return;
        }
    }
    assert_true(e->cfg.noptions < PX_MAX_OPTIONS);
    e->cfg.options[e->cfg.noptions].name = name;
    e->cfg.options[e->cfg.noptions++].value = value;
}

/* The server's values of all of an approach's options set to their defaults (as config_load
 * leaves them when the approach is not in the registry yet). */
static inline void env_option_defaults(struct env *e, const struct approach *a)
{
    for (const struct approach_option *o = a->options; o && o->name; o++)
        env_option(e, o->name, o->def);
}

static inline void env_init(struct env *e, const char *body, const struct row *rows)
{
    memset(e, 0, sizeof(*e));
    e->arena = arena_create();
    snprintf(e->cfg.approach, sizeof(e->cfg.approach), "auto");
    snprintf(e->cfg.model, sizeof(e->cfg.model), "m");
    e->cfg.n = 1;
#ifdef THE_APPROACH /* a test of one approach: its options at their defaults, as flags */
    env_option_defaults(e, &THE_APPROACH);
#endif
    assert_int_equal(chat_request_parse(e->arena, body, strlen(body), &e->cfg, &e->req, &e->err),
                     PX_OK);
    e->script.rows = rows;
    fake_llm_init(&e->fake, script_reply, &e->script);
    e->fake.finish = script_finish;
    e->ctx.arena = e->arena;
    e->ctx.req = &e->req;
    e->ctx.opts = approach_opts_of(&e->cfg);
    e->ctx.llm = &e->fake.llm;
    e->ctx.err = &e->err;
    e->ctx.req_id = "test";
}

static inline int env_run(struct env *e, const struct approach *a)
{
    memset(&e->out, 0, sizeof(e->out));
    return a->run(&e->ctx, &e->out);
}

static inline void env_cleanup(struct env *e)
{
    fake_llm_cleanup(&e->fake);
    arena_destroy(e->arena);
}

/* Usage: what the approach context summed equals what the fake reported, call by call. */
static inline void check_usage(const struct env *e)
{
    struct usage sum = {0};

    for (size_t i = 0; i < e->fake.ncalls; i++) {
        const struct fake_record *r = &e->fake.calls[i];

        assert_int_equal(r->usage.prompt_tokens, fake_prompt_tokens(r));
        sum.prompt_tokens += r->usage.prompt_tokens;
        sum.completion_tokens += r->usage.completion_tokens;
        sum.calls += r->usage.calls;
    }
    assert_int_equal(sum.prompt_tokens, e->fake.total.prompt_tokens);
    assert_int_equal(sum.completion_tokens, e->fake.total.completion_tokens);
    assert_int_equal(e->ctx.usage.prompt_tokens, e->fake.total.prompt_tokens);
    assert_int_equal(e->ctx.usage.completion_tokens, e->fake.total.completion_tokens);
    assert_int_equal(e->ctx.usage.reasoning_tokens, e->fake.total.reasoning_tokens);
    assert_int_equal(e->ctx.usage.calls, e->fake.total.calls);
    assert_int_equal(e->ctx.usage.calls, (long)e->fake.ncalls);
    assert_int_equal(e->fake.invalid, 0);
}

/* One call's shape. temp NAN: the call must leave the temperature to the client. */
static inline void check_call(const struct fake_record *r, const char *stage, int n, double temp,
                              long max_tokens, bool stream)
{
    assert_non_null(r);
    assert_string_equal(r->stage, stage);
    assert_int_equal(r->n, n);
    if (isnan(temp))
        assert_true(isnan(r->temperature));
    else
        assert_true(fabs(r->temperature - temp) < 1e-9);
    assert_int_equal(r->max_tokens, max_tokens);
    assert_int_equal(r->stream_to_client, stream);
}

/* Every call of the round has this shape. */
static inline void check_round(const struct env *e, int round, size_t calls, const char *stage,
                               int n, double temp, long max_tokens)
{
    assert_int_equal(fake_llm_round_calls(&e->fake, round), calls);
    for (size_t i = 0; i < calls; i++)
        check_call(fake_llm_call(&e->fake, round, i), stage, n, temp, max_tokens, false);
}

/* Each round holds exactly one call. */
static inline void check_sequential(const struct env *e, int rounds)
{
    assert_int_equal(e->fake.rounds, rounds);
    assert_int_equal(e->fake.ncalls, (size_t)rounds);
    for (int i = 0; i < rounds; i++)
        assert_int_equal(fake_llm_round_calls(&e->fake, i), 1);
}

/* The first call of a round. */
static inline const struct fake_record *call_at(const struct env *e, int round)
{
    return fake_llm_call(&e->fake, round, 0);
}

/* No template may show "answer is <digit>": the integration mock counts such phrases. */
static inline bool has_answer_digit(const char *s)
{
    for (const char *p = s; (p = strstr(p, "answer is")) != NULL; p++) {
        const char *q = p + strlen("answer is");

        while (*q == ' ' || *q == '*' || *q == ':')
            q++;
        if (*q >= '0' && *q <= '9')
            return true;
    }
    return false;
}

/* The approach's own contract: slug, prompts present and clean, options unique and sane. */
static inline void check_descriptor(const struct approach *a, const char *slug, int calls,
                                    int rounds)
{
    assert_string_equal(a->slug, slug);
    assert_non_null(a->run);
    assert_non_null(a->summary);
    assert_null(strchr(a->summary, '\n'));
    assert_int_equal(a->calls, calls);
    assert_int_equal(a->rounds, rounds);
    for (const char *const *p = a->prompts; p && *p; p++) {
        const char *t = prompt_get(*p);

        if (!t)
            fail_msg("prompt %s is missing", *p);
        assert_false(has_answer_digit(t));
        assert_int_equal(strncmp(*p, slug, strlen(slug)), 0);
    }
    for (const struct approach_option *o = a->options; o && o->name; o++) {
        const struct approach_option *other = approach_option_find(o->name);

        assert_true(o->min <= o->def && o->def <= o->max);
        assert_non_null(o->help);
        /* unique across the registered approaches (when this one is not registered yet) */
        if (other)
            assert_ptr_equal(other, o);
    }
}

static inline int env_group_setup(void **state)
{
    (void)state;
    log_level = LOG_ERROR;
    if (prompt_init(NULL) != 0 || answer_init() != 0)
        return -1;
    return 0;
}

static inline int env_group_teardown(void **state)
{
    (void)state;
    answer_cleanup();
    prompt_cleanup();
    return 0;
}

#endif
