/* test_mcts.c: mcts on the fake upstream: the overlapped schedule (calls, rounds, parameters),
 * ratings steering the answer, UCT descending the tree, determinism, odd and failed replies,
 * n fallback and usage sums. */
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

extern const struct approach approach_mcts;

/* ---- the script --------------------------------------------------------------------------- */

#define ALPHA "Answer alpha: 41."
#define BETA  "Answer beta: 42."
#define GAMMA "Answer gamma: 43."

struct mscript {
    const char *root[3];   /* the first expansion's replies, in choice order; NULL fails */
    const char *rating[3]; /* the evaluator's reply when root[i] is in the conversation */
    const char *apply;     /* the predicted user turn; NULL fails */
    const char *rollout;   /* the rollout reply; NULL fails */
    bool fail_eval;
    bool fail_root;
    int root_calls; /* single root expansion calls so far (n refused) */
    int deeper;     /* deeper expansion choices so far */
    char buf[64];
};

static bool call_has(const struct llm_call *call, const char *needle)
{
    for (size_t i = 0; i < call->nmsgs; i++)
        if (call->msgs[i].content && strstr(call->msgs[i].content, needle))
            return true;
    return false;
}

static bool has_role(const struct llm_call *call, const char *role)
{
    for (size_t i = 0; i < call->nmsgs; i++)
        if (call->msgs[i].role && strcmp(call->msgs[i].role, role) == 0)
            return true;
    return false;
}

static const char *mscript_reply(void *user, const struct llm_call *call, int choice)
{
    struct mscript *s = user;

    if (strcmp(call->stage, "mcts/expand") == 0) {
        if (!has_role(call, "assistant")) {
            if (s->fail_root)
                return NULL;
            if (call->params.n > 1)
                return s->root[choice % 3];
            return s->root[s->root_calls++ % 3];
        }
        snprintf(s->buf, sizeof(s->buf), "Deeper reply %d.", s->deeper++);
        return s->buf;
    }
    if (strcmp(call->stage, "mcts/apply") == 0)
        return s->apply;
    if (strcmp(call->stage, "mcts/rollout") == 0)
        return s->rollout;
    if (strcmp(call->stage, "mcts/evaluate") == 0) {
        if (s->fail_eval)
            return NULL;
        for (int i = 0; i < 3; i++)
            if (s->root[i] && call_has(call, s->root[i]))
                return s->rating[i];
        return "Rating: 0";
    }
    return NULL;
}

/* ---- the request environment ------------------------------------------------------------- */

#define Q   "What is 6 times 7?"
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
    struct mscript script;
    struct chat_result out;
};

/* Server-side option values (as --flag would set them): the approach reads them by name
 * whether or not the registry lists it yet. */
static void env_opt(struct env *e, const char *name, double value)
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

static void env_init(struct env *e, const char *body)
{
    memset(e, 0, sizeof(*e));
    e->arena = arena_create();
    snprintf(e->cfg.approach, sizeof(e->cfg.approach), "auto");
    snprintf(e->cfg.model, sizeof(e->cfg.model), "m");
    e->cfg.n = 1;
    for (const struct approach_option *o = approach_mcts.options; o->name; o++)
        env_opt(e, o->name, o->def);
    assert_int_equal(chat_request_parse(e->arena, body, strlen(body), &e->cfg, &e->req, &e->err),
                     PX_OK);
    e->script.root[0] = BETA;
    e->script.root[1] = GAMMA;
    e->script.root[2] = ALPHA;
    e->script.rating[0] = "Rating: 8";
    e->script.rating[1] = "Rating: 5";
    e->script.rating[2] = "Rating: 2";
    e->script.apply = "And what is 6 times 8?";
    e->script.rollout = "It is 48.";
    fake_llm_init(&e->fake, mscript_reply, &e->script);
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
    return approach_mcts.run(&e->ctx, &e->out);
}

static void env_cleanup(struct env *e)
{
    fake_llm_cleanup(&e->fake);
    arena_destroy(e->arena);
}

/* Usage: what the approach context summed equals what the fake reported, call by call. */
static void check_usage(const struct env *e)
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

static void check_call(const struct fake_record *r, const char *stage, int n, double temp,
                       long max_tokens)
{
    assert_non_null(r);
    assert_string_equal(r->stage, stage);
    assert_int_equal(r->n, n);
    assert_true(fabs(r->temperature - temp) < 1e-9);
    assert_int_equal(r->max_tokens, max_tokens);
    assert_false(r->stream_to_client);
}

static const struct fake_record *call_at(const struct env *e, int round, size_t i)
{
    return fake_llm_call(&e->fake, round, i);
}

/* The root action (ALPHA, BETA or GAMMA) a record's conversation continues, or NULL. */
static const char *root_action(const struct fake_record *r)
{
    static const char *const all[] = {ALPHA, BETA, GAMMA};

    for (size_t i = 0; i < PX_ARRAY_LEN(all); i++)
        if (strstr(r->text, all[i]))
            return all[i];
    return NULL;
}

/* The root actions rated, in the order of the ratings. */
static size_t rated_actions(const struct env *e, const char **out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i < e->fake.ncalls && n < cap; i++)
        if (strcmp(e->fake.calls[i].stage, "mcts/evaluate") == 0)
            out[n++] = root_action(&e->fake.calls[i]);
    return n;
}

static int rating_of(const char *action)
{
    return !strcmp(action, BETA) ? 8 : !strcmp(action, GAMMA) ? 5 : 2;
}

/* ---- registry row and prompts ------------------------------------------------------------- */

static void test_row(void **state)
{
    static const struct {
        const char *name, *alias;
        double def, min, max;
        bool integer;
    } opts[] = {
        {"simulations", "mcts_simulations", 2, 1, 64, true},
        {"exploration", "mcts_exploration", 0.2, 0, 10, false},
        {"depth", "mcts_depth", 1, 0, 10, true},
    };
    const struct approach *a = &approach_mcts;
    size_t i = 0;

    (void)state;
    assert_string_equal(a->slug, "mcts");
    assert_int_equal(a->calls, 12);
    assert_int_equal(a->rounds, 6);
    assert_non_null(a->summary);
    assert_null(strchr(a->summary, '\n'));
    for (const char *const *p = a->prompts; *p; p++)
        assert_non_null(prompt_get(*p));
    for (const struct approach_option *o = a->options; o->name; o++, i++) {
        assert_true(i < PX_ARRAY_LEN(opts));
        assert_string_equal(o->name, opts[i].name);
        assert_string_equal(o->alias, opts[i].alias);
        assert_true(o->def == opts[i].def && o->min == opts[i].min && o->max == opts[i].max);
        assert_int_equal(o->integer, opts[i].integer);
        assert_non_null(o->help);
    }
    assert_int_equal(i, PX_ARRAY_LEN(opts));
    assert_non_null(strstr(prompt_get("mcts/evaluate"), "Rating: N"));
    /* once the registry lists mcts, its rows must pass the checks */
    if (approach_find("mcts", 4)) {
        assert_ptr_equal(approach_find("mcts", 4), a);
        assert_int_equal(registry_check(), 0);
        assert_ptr_equal(approach_option_find("mcts_depth"), &a->options[2]);
    }
}

/* ---- the schedule ------------------------------------------------------------------------- */

/* Defaults (2 simulations, depth 1): 12 calls in 6 rounds; the second simulation overlaps the
 * first; the parameters of every stage; the better-rated of the two rated replies wins. */
static void test_schedule(void **state)
{
    struct env e;
    const struct fake_record *r;
    const char *rated[4];
    const char *want;
    const char *next_prompt;
    const char *eval_prompt;

    (void)state;
    env_init(&e, BODY(""));
    e.ctx.stream_final = true; /* the answer is a sample: nothing streams */
    assert_int_equal(env_run(&e), PX_OK);
    next_prompt = prompt_get("mcts/next_query");
    eval_prompt = prompt_get("mcts/evaluate");
    assert_int_equal(e.fake.rounds, 6);
    assert_int_equal(e.fake.ncalls, 12);

    /* round 0: the root's 3 replies in one n=3 call on the client's conversation */
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 1);
    r = call_at(&e, 0, 0);
    check_call(r, "mcts/expand", 3, 1.0, 4096);
    assert_int_equal(r->nmsgs, 2);
    assert_string_equal(r->msgs[0].content, SYS);
    assert_string_equal(r->msgs[1].content, Q);
    assert_true(r->raw_last);

    /* round 1: the user's next turn after each reply, in content order */
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 3);
    for (size_t i = 0; i < 3; i++) {
        r = call_at(&e, 1, i);
        check_call(r, "mcts/apply", 1, 1.0, 1024);
        assert_int_equal(r->nmsgs, 4);
        assert_string_equal(r->msgs[1].content, Q);
        assert_string_equal(r->msgs[2].role, "assistant");
        assert_string_equal(r->msgs[3].role, "user");
        assert_string_equal(r->msgs[3].content, next_prompt);
    }
    assert_string_equal(call_at(&e, 1, 0)->msgs[2].content, ALPHA);
    assert_string_equal(call_at(&e, 1, 1)->msgs[2].content, BETA);
    assert_string_equal(call_at(&e, 1, 2)->msgs[2].content, GAMMA);

    /* round 2: simulation 1 plays on (one reply), simulation 2 expands another root child */
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 2);
    r = call_at(&e, 2, 0);
    check_call(r, "mcts/rollout", 1, 1.0, 4096);
    assert_int_equal(r->nmsgs, 4); /* system, question, reply, predicted user turn */
    assert_string_equal(r->msgs[3].content, e.script.apply);
    r = call_at(&e, 2, 1);
    check_call(r, "mcts/expand", 3, 1.0, 4096);
    assert_int_equal(r->nmsgs, 4);
    assert_string_not_equal(root_action(r), root_action(call_at(&e, 2, 0)));

    /* round 3: simulation 1 is rated while simulation 2 predicts the user's turns */
    assert_int_equal(fake_llm_round_calls(&e.fake, 3), 4);
    r = call_at(&e, 3, 0);
    check_call(r, "mcts/evaluate", 1, 0.1, 256);
    assert_int_equal(r->nmsgs, 6);
    assert_string_equal(r->msgs[4].role, "assistant");
    assert_string_equal(r->msgs[4].content, e.script.rollout);
    assert_string_equal(r->msgs[5].content, eval_prompt);
    for (size_t i = 1; i < 4; i++) {
        r = call_at(&e, 3, i);
        check_call(r, "mcts/apply", 1, 1.0, 1024);
        assert_int_equal(r->nmsgs, 6);
        assert_non_null(strstr(r->msgs[4].content, "Deeper reply"));
    }

    /* rounds 4 and 5: simulation 2 plays on from its grandchild and is rated */
    assert_int_equal(fake_llm_round_calls(&e.fake, 4), 1);
    r = call_at(&e, 4, 0);
    check_call(r, "mcts/rollout", 1, 1.0, 4096);
    assert_int_equal(r->nmsgs, 6);
    assert_int_equal(fake_llm_round_calls(&e.fake, 5), 1);
    r = call_at(&e, 5, 0);
    check_call(r, "mcts/evaluate", 1, 0.1, 256);
    assert_int_equal(r->nmsgs, 8);
    assert_string_equal(r->msgs[7].content, eval_prompt);

    /* the better-rated of the two rated root replies wins */
    assert_int_equal(rated_actions(&e, rated, 4), 2);
    assert_string_not_equal(rated[0], rated[1]);
    want = rating_of(rated[0]) > rating_of(rated[1]) ? rated[0] : rated[1];
    assert_string_equal(e.out.text, want);
    assert_string_equal(e.out.finish_reason, "stop");
    assert_false(e.ctx.streamed);
    assert_int_equal(e.fake.n_support, 1);
    check_usage(&e);
    env_cleanup(&e);
}

/* With 3 simulations every root reply is rated once: the ratings alone decide, whatever the
 * order the replies came in. */
static void test_ratings_decide(void **state)
{
    static const struct {
        const char *ra, *rb, *rc; /* ratings of BETA, GAMMA, ALPHA */
        const char *want;
    } cases[] = {
        {"Rating: 8", "Rating: 5", "Rating: 2", BETA},
        {"Rating: 2", "Rating: 5", "Rating: 8", ALPHA},
        {"Rating: 2", "Rating: 9", "Rating: 8", GAMMA},
        {"0.7", "Score: 8/10", "6", GAMMA},                       /* 0.7, 0.8, 0.6 */
        {"**Rating:** 9", "90%", "Rating: 10", ALPHA},            /* 0.9, 0.9, 1.0 */
        {"I'd say 4 out of 10.", "nonsense", "Rating: 3", GAMMA}, /* 0.4, neutral 0.5, 0.3 */
        {"Rating: 15", "Rating: 10", "1.0", BETA},                /* all 1: the shortest text */
        {"", "Rating: 6\nRating: 4", "Score: 0.55", ALPHA},       /* 0.5, the last: 0.4, 0.55 */
        {"Rating: -3", "garbage", "Rating: 0", GAMMA},            /* 0, 0.5, 0 */
    };
    static const int perms[3][3] = {{0, 1, 2}, {2, 0, 1}, {1, 2, 0}};
    const char *const texts[3] = {BETA, GAMMA, ALPHA};

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        for (size_t p = 0; p < 3; p++) {
            const char *ratings[3] = {cases[i].ra, cases[i].rb, cases[i].rc};
            struct env e;

            env_init(&e, BODY(""));
            env_opt(&e, "simulations", 3);
            for (int k = 0; k < 3; k++) {
                e.script.root[k] = texts[perms[p][k]];
                e.script.rating[k] = ratings[perms[p][k]];
            }
            assert_int_equal(env_run(&e), PX_OK);
            if (strcmp(e.out.text, cases[i].want) != 0)
                fail_msg("case %zu perm %zu: got '%s', want '%s'", i, p, e.out.text, cases[i].want);
            assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/evaluate"), 3);
            /* sim 3 starts as soon as sim 2 has expanded: 8 rounds, not 12 */
            assert_int_equal(e.fake.rounds, 8);
            check_usage(&e);
            env_cleanup(&e);
        }
    }
}

/* A 4th simulation finds every root child visited: it waits for the ratings, then UCT takes
 * it down to the best one (BETA), which is expanded; BETA ends with 2 visits and wins even
 * where a single rating would not have decided. */
static void test_uct_descends(void **state)
{
    struct env e;
    const struct fake_record *last_expand = NULL;
    size_t expands = 0;

    (void)state;
    env_init(&e, BODY(""));
    env_opt(&e, "simulations", 4);
    e.script.rating[0] = "Rating: 8"; /* BETA */
    e.script.rating[1] = "Rating: 7"; /* GAMMA */
    e.script.rating[2] = "Rating: 2"; /* ALPHA */
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, BETA);
    for (size_t i = 0; i < e.fake.ncalls; i++) {
        if (strcmp(e.fake.calls[i].stage, "mcts/expand") == 0) {
            expands++;
            last_expand = &e.fake.calls[i];
        }
    }
    assert_int_equal(expands, 4);
    /* the 4th expansion continues BETA's conversation */
    assert_string_equal(root_action(last_expand), BETA);
    /* it could not start before the 3rd simulation's rating: it is alone in its round */
    assert_int_equal(fake_llm_round_calls(&e.fake, last_expand->round), 1);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/evaluate"), 4);
    assert_int_equal(e.fake.rounds, 12);
    check_usage(&e);
    env_cleanup(&e);

    /* A 5th simulation: without exploration it goes down BETA again; with a large weight the
     * bonus of the children visited once wins, and the best of them by mean is GAMMA. */
    for (int explore = 0; explore < 2; explore++) {
        env_init(&e, BODY(""));
        env_opt(&e, "simulations", 5);
        env_opt(&e, "exploration", explore ? 10 : 0);
        e.script.rating[0] = "Rating: 8";
        e.script.rating[1] = "Rating: 7";
        e.script.rating[2] = "Rating: 2";
        assert_int_equal(env_run(&e), PX_OK);
        assert_string_equal(e.out.text, BETA);
        last_expand = NULL;
        for (size_t i = 0; i < e.fake.ncalls; i++)
            if (strcmp(e.fake.calls[i].stage, "mcts/expand") == 0)
                last_expand = &e.fake.calls[i];
        assert_string_equal(root_action(last_expand), explore ? GAMMA : BETA);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The same request gives the same calls and answer, whatever order the root replies come in. */
static void test_deterministic(void **state)
{
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    const char *const texts[3] = {BETA, GAMMA, ALPHA};
    const char *const ratings[3] = {"Rating: 8", "Rating: 5", "Rating: 2"};
    const char *first_rated[2] = {NULL, NULL};
    const char *first_answer = NULL;
    struct arena *keep = arena_create();

    (void)state;
    for (size_t p = 0; p < 6; p++) {
        struct env e;
        const char *rated[4];

        env_init(&e, BODY(""));
        for (int k = 0; k < 3; k++) {
            e.script.root[k] = texts[perms[p][k]];
            e.script.rating[k] = ratings[perms[p][k]];
        }
        assert_int_equal(env_run(&e), PX_OK);
        assert_int_equal(rated_actions(&e, rated, 4), 2);
        if (!first_answer) {
            first_answer = arena_strdup(keep, e.out.text);
            first_rated[0] = rated[0];
            first_rated[1] = rated[1];
        }
        assert_string_equal(e.out.text, first_answer);
        assert_ptr_equal(rated[0], first_rated[0]);
        assert_ptr_equal(rated[1], first_rated[1]);
        env_cleanup(&e);
    }
    arena_destroy(keep);
}

/* The client's temperature and max_tokens apply to the replies, never to the predictions or
 * the ratings. */
static void test_client_params(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.3,\"max_tokens\":100"));
    assert_int_equal(env_run(&e), PX_OK);
    check_call(call_at(&e, 0, 0), "mcts/expand", 3, 0.3, 100);
    check_call(call_at(&e, 1, 0), "mcts/apply", 1, 1.0, 1024);
    check_call(call_at(&e, 2, 0), "mcts/rollout", 1, 0.3, 100);
    check_call(call_at(&e, 2, 1), "mcts/expand", 3, 0.3, 100);
    check_call(call_at(&e, 3, 0), "mcts/evaluate", 1, 0.1, 256);
    check_usage(&e);
    env_cleanup(&e);
}

/* depth 0: a new child is rated at once (10 calls, 5 rounds); depth 2: two replies played on,
 * with the user's turn predicted between them only (16 calls, 8 rounds). */
static void test_depth(void **state)
{
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, BODY(""));
    env_opt(&e, "depth", 0);
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.rounds, 5);
    assert_int_equal(e.fake.ncalls, 10);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/rollout"), 0);
    r = call_at(&e, 2, 0);
    check_call(r, "mcts/evaluate", 1, 0.1, 256);
    assert_int_equal(r->nmsgs, 4); /* system, question, reply, rating request */
    check_call(call_at(&e, 2, 1), "mcts/expand", 3, 1.0, 4096);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    env_opt(&e, "depth", 2);
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.rounds, 8);
    assert_int_equal(e.fake.ncalls, 16);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/rollout"), 4);
    check_call(call_at(&e, 3, 0), "mcts/apply", 1, 1.0, 1024); /* between the two replies */
    r = call_at(&e, 5, 0);
    check_call(r, "mcts/evaluate", 1, 0.1, 256);
    assert_int_equal(r->nmsgs, 8);
    check_usage(&e);
    env_cleanup(&e);
}

/* A predicted "goodbye" ends the conversation: the child is rated without playing on. */
static void test_goodbye(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""));
    e.script.apply = "Thanks, GoodBye!";
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/rollout"), 0);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/evaluate"), 2);
    /* the second simulation selects another child, terminal too: it is rated, not expanded */
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/expand"), 1);
    assert_int_equal(e.fake.rounds, 3);
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 2);
    check_usage(&e);
    env_cleanup(&e);
}

/* Failed predictions become a request to go on; failed ratings are neutral (the tie then
 * goes to the shorter reply); a failed rollout rates the child as it is. */
static void test_partial_failures(void **state)
{
    struct env e;
    const char *go_on;
    bool seen = false;

    (void)state;
    env_init(&e, BODY(""));
    env_opt(&e, "simulations", 3);
    e.script.apply = NULL;
    e.script.fail_eval = true;
    e.script.root[0] = "Answer beta: it is 42, as six sevens make 42.";
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, ALPHA); /* ALPHA and GAMMA tie on length: byte order */
    go_on = prompt_get("mcts/continue");
    for (size_t i = 0; i < e.fake.ncalls; i++) {
        const struct fake_record *r = &e.fake.calls[i];

        if (strcmp(r->stage, "mcts/rollout") == 0) {
            assert_int_equal(strncmp(fake_record_last(r), go_on, strlen(fake_record_last(r))), 0);
            seen = true;
        }
    }
    assert_true(seen);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    e.script.rollout = NULL;
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/rollout"), 2);
    for (size_t i = 0; i < e.fake.ncalls; i++)
        if (strcmp(e.fake.calls[i].stage, "mcts/evaluate") == 0)
            assert_null(strstr(e.fake.calls[i].text, "It is 48."));
    check_usage(&e);
    env_cleanup(&e);
}

/* The first expansion is the only stage whose failure fails the request; empty replies give
 * an empty answer; one usable reply is enough. */
static void test_root_outcomes(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""));
    e.script.fail_root = true;
    e.fake.fail_status = 503;
    e.fake.fail_message = "overloaded";
    assert_int_equal(env_run(&e), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 503);
    assert_non_null(strstr(e.err.message, "overloaded"));
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    e.script.root[0] = "";
    e.script.root[1] = "  \n";
    e.script.root[2] = "";
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "");
    assert_int_equal(e.fake.ncalls, 1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    e.script.root[0] = "";
    e.script.root[1] = "\n  " GAMMA "  \n";
    e.script.root[2] = "";
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, GAMMA);
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 1); /* one child to predict for */
    check_usage(&e);
    env_cleanup(&e);
}

/* An upstream that refuses n: the first expansion falls back to 3 single calls, and so do the
 * later ones (in the same rounds as the other simulation's calls). */
static void test_n_refused(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""));
    e.fake.n_mode = FAKE_N_REFUSE;
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.n_support, 0);
    assert_int_equal(e.fake.rounds, 7);
    assert_int_equal(call_at(&e, 0, 0)->http_status, 400);
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 3);
    assert_int_equal(fake_llm_round_calls(&e.fake, 3), 4); /* rollout + 3 single expansions */
    for (size_t i = 1; i < e.fake.ncalls; i++)
        assert_int_equal(e.fake.calls[i].n, 1);
    assert_int_equal(e.ctx.usage.calls, 17);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    e.fake.n_mode = FAKE_N_IGNORE;
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.n_support, 0);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "mcts/expand"), 1 + 2 + 3);
    check_usage(&e);
    env_cleanup(&e);
}

/* Per-request options (once the registry lists mcts): the name and OptiLLM's alias. */
static void test_request_options(void **state)
{
    struct env e;

    (void)state;
    if (!approach_option_find("simulations"))
        skip();
    env_init(&e, BODY(",\"optillm_mcts_simulations\":1,\"optillm_depth\":0"));
    e.cfg.noptions = 0; /* registry defaults */
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.rounds, 3);
    assert_int_equal(e.fake.ncalls, 5);
    env_cleanup(&e);
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
        cmocka_unit_test(test_row),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_ratings_decide),
        cmocka_unit_test(test_uct_descends),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_client_params),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_goodbye),
        cmocka_unit_test(test_partial_failures),
        cmocka_unit_test(test_root_outcomes),
        cmocka_unit_test(test_n_refused),
        cmocka_unit_test(test_request_options),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
