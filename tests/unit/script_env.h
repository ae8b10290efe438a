/* script_env.h: the scripted fake-upstream environment shared by the approach tests
 * test_plansearch.c, test_leap.c and test_rto.c: a table of scripted replies per stage, a parsed
 * request, an approach context over the fake transport, and checks of usage, call parameters
 * and rounds. Include it after defining THE_APPROACH (the approach under test) and after the
 * cmocka headers. */
#ifndef SCRIPT_ENV_H
#define SCRIPT_ENV_H

/* ---- the script: what the fake upstream answers --------------------------------------------- */

/* One scripted reply. Rows without 'match' answer the calls of their stage once each, in
 * order (choice i of an n call, or the i-th single call); rows with 'match' answer every call
 * of their stage whose messages contain 'match'. */
struct row {
    const char *stage;
    const char *match;
    const char *text;   /* NULL: the call fails */
    const char *finish; /* NULL: "stop" */
};

#define ROWS_MAX 40

struct script {
    const struct row *rows; /* ends with a row whose stage is NULL */
    bool used[ROWS_MAX];
    const struct row *last;
    int unexpected; /* calls no row answered */
};

static inline bool call_contains(const struct llm_call *call, const char *needle)
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
        if (s->rows[i].match && strcmp(s->rows[i].stage, call->stage) == 0 &&
            call_contains(call, s->rows[i].match))
            s->last = &s->rows[i];
    for (int i = 0; s->rows[i].stage && !s->last; i++) {
        if (!s->rows[i].match && !s->used[i] && strcmp(s->rows[i].stage, call->stage) == 0) {
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

/* Server-side option values (as --flag would set them): the approach reads them by name
 * whether or not the registry lists it yet. */
static inline void env_opt(struct env *e, const char *name, double value)
{
    for (size_t i = 0; i < e->cfg.noptions; i++) {
        if (strcmp(e->cfg.options[i].name, name) == 0) {
            e->cfg.options[i].value = value;
            return;
        }
    }
    e->cfg.options[e->cfg.noptions].name = name;
    e->cfg.options[e->cfg.noptions++].value = value;
}

static inline void env_init(struct env *e, const char *body, const struct row *rows)
{
    memset(e, 0, sizeof(*e));
    e->arena = arena_create();
    snprintf(e->cfg.approach, sizeof(e->cfg.approach), "auto");
    snprintf(e->cfg.model, sizeof(e->cfg.model), "m");
    e->cfg.n = 1;
    for (const struct approach_option *o = THE_APPROACH.options; o && o->name; o++)
        env_opt(e, o->name, o->def);
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

static inline int env_run(struct env *e)
{
    memset(&e->out, 0, sizeof(e->out));
    return THE_APPROACH.run(&e->ctx, &e->out);
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

/* Each round holds exactly one call. */
static inline void check_sequential(const struct env *e, int rounds)
{
    assert_int_equal(e->fake.rounds, rounds);
    assert_int_equal(e->fake.ncalls, (size_t)rounds);
    for (int i = 0; i < rounds; i++)
        assert_int_equal(fake_llm_round_calls(&e->fake, i), 1);
}

static inline const struct fake_record *call_at(const struct env *e, int round)
{
    return fake_llm_call(&e->fake, round, 0);
}

static inline int group_setup(void **state)
{
    (void)state;
    log_level = LOG_ERROR;
    if (prompt_init(NULL) != 0 || answer_init() != 0)
        return -1;
    return 0;
}

static inline int group_teardown(void **state)
{
    (void)state;
    answer_cleanup();
    prompt_cleanup();
    return 0;
}

#endif
