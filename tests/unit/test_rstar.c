/* test_rstar.c: rstar on the fake upstream: one batch per depth level and one for the
 * consistency checks, the moves chosen (distinct at the root, UCB with c, "finish" last),
 * the consistency-weighted vote, answers beyond \d+, odd outputs, partial failure, usage. */
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

extern const struct approach approach_rstar;

/* ---- the scripted model --------------------------------------------------------------------- */

#define NROLL 8

/* How the fake model answers. Rollouts are tagged "rollout-A", "rollout-B", ... in the order
 * of the first level's calls; later steps find the tag in the steps they are shown. */
struct tree {
    const char *finals[NROLL]; /* what a "finish" move of rollout A.. says ("" = empty) */
    const char *check;         /* the discriminator's reply; NULL: the call fails */
    const char *other;         /* what other moves say; NULL: a sentence without numbers */
    int fail_level;            /* this level's call of rollout 'fail_tag' fails (-1: none) */
    char fail_tag;             /* 0: every call of fail_level fails */
    int next;                  /* next tag handed out at level 0 */
    int unexpected;
};

static const char *const move_phrase[] = {
    "take ONE new reasoning step", "carry out all the remaining steps", "key sub-question",
    "re-examine the most recent step", "restate the question"};
static const char *const move_word[] = {"step", "finish", "subquestion", "reexamine", "rephrase"};

static int move_of(const char *prompt)
{
    for (int m = 0; m < 5; m++)
        if (strstr(prompt, move_phrase[m]))
            return m;
    return -1;
}

static const char *tree_reply(void *user, const struct llm_call *call, int choice)
{
    struct tree *t = user;
    const char *last = call->msgs[call->nmsgs - 1].content;
    static char buf[NROLL][512];
    static int slot;
    int level = (int)fake_count(last, "<step ");
    const char *tag_at = strstr(last, "rollout-");
    char tag;
    int move = move_of(last);
    char *out = buf[slot++ % NROLL];

    (void)choice;
    if (strcmp(call->stage, "rstar/check") == 0)
        return t->check;
    if (strcmp(call->stage, "rstar/step") != 0 || move < 0) {
        t->unexpected++;
        return NULL;
    }
    tag = level == 0 ? (char)('A' + t->next++) : tag_at ? tag_at[8] : '?';
    if (level == t->fail_level && (t->fail_tag == 0 || t->fail_tag == tag))
        return NULL;
    if (move == 1) {
        const char *f = t->finals[tag - 'A'];

        if (!f)
            f = "The final answer is 42.";
        if (!*f)
            return "";
        snprintf(out, 512, "rollout-%c finish: %s", tag, f);
    } else if (t->other) {
        if (!*t->other)
            return "";
        snprintf(out, 512, "rollout-%c %s: %s", tag, move_word[move], t->other);
    } else {
        snprintf(out, 512, "rollout-%c %s: thinking it over, no result yet.", tag, move_word[move]);
    }
    return out;
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
    struct tree tree;
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

static void env_init(struct env *e, const char *body)
{
    memset(e, 0, sizeof(*e));
    e->arena = arena_create();
    snprintf(e->cfg.approach, sizeof(e->cfg.approach), "auto");
    snprintf(e->cfg.model, sizeof(e->cfg.model), "m");
    e->cfg.n = 1;
    /* the registry defaults as server values, so that the test runs with or without the
     * registry row */
    for (const struct approach_option *o = approach_rstar.options; o->name; o++)
        set_option(&e->cfg, o->name, o->def);
    assert_int_equal(chat_request_parse(e->arena, body, strlen(body), &e->cfg, &e->req, &e->err),
                     PX_OK);
    e->tree.fail_level = -1;
    e->tree.check = "Checking again. The final answer is 42.";
    fake_llm_init(&e->fake, tree_reply, &e->tree);
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
    return approach_rstar.run(&e->ctx, &e->out);
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

static void check_call(const struct fake_record *r, const char *stage, double temp)
{
    assert_non_null(r);
    assert_string_equal(r->stage, stage);
    assert_int_equal(r->n, 1);
    assert_true(fabs(r->temperature - temp) < 1e-9);
    assert_int_equal(r->max_tokens, 4096);
    assert_false(r->stream_to_client);
}

/* The rollout tag shown to a call ('-' when it shows no step). */
static char tag_of(const struct fake_record *r)
{
    const char *p = strstr(fake_record_last(r), "rollout-");

    return p ? p[8] : '-';
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Defaults: 4 levels of 5 parallel steps, then 5 parallel checks: 5 rounds, 25 calls. The
 * root moves are all different; the last level is always "finish"; each step sees its own
 * trajectory and the client's conversation. */
static void test_rstar_structure(void **state)
{
    struct env e;
    int seen[5] = {0};

    (void)state;
    env_init(&e, BODY(""));
    e.ctx.stream_final = true; /* no final completion: nothing streams */
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.tree.unexpected, 0);
    assert_int_equal(e.fake.rounds, 5);
    assert_int_equal(e.fake.ncalls, 25);
    for (int level = 0; level < 4; level++) {
        assert_int_equal(fake_llm_round_calls(&e.fake, level), 5);
        for (size_t i = 0; i < 5; i++) {
            const struct fake_record *r = fake_llm_call(&e.fake, level, i);
            const char *user = fake_record_last(r);

            check_call(r, "rstar/step", 0.2);
            /* [our system, client's system, client's question, the step prompt] */
            assert_int_equal(r->nmsgs, 4);
            assert_string_equal(r->msgs[0].role, "system");
            assert_non_null(strstr(r->msgs[0].content, "The final answer is X"));
            assert_string_equal(r->msgs[1].content, SYS);
            assert_string_equal(r->msgs[2].content, Q);
            assert_string_equal(r->msgs[3].role, "user");
            assert_int_equal(fake_count(user, "<step "), level);
            if (level == 0) {
                assert_non_null(strstr(user, "(none yet)"));
                seen[move_of(user)]++;
            } else {
                /* its own trajectory only: one tag, as many times as it has steps */
                assert_int_equal(fake_count(user, "rollout-"), level);
                assert_int_equal(tag_of(r), 'A' + (int)i);
            }
            if (level == 3)
                assert_int_equal(move_of(user), 1);
        }
    }
    for (int m = 0; m < 5; m++)
        assert_int_equal(seen[m], 1);
    assert_int_equal(fake_llm_round_calls(&e.fake, 4), 5);
    for (size_t i = 0; i < 5; i++)
        check_call(fake_llm_call(&e.fake, 4, i), "rstar/check", 0.2);
    /* every trajectory says 42: the answer is a full step, not a bare number */
    assert_string_equal(e.out.text, "rollout-A finish: The final answer is 42.");
    assert_string_equal(e.out.finish_reason, "stop");
    assert_false(e.ctx.streamed);
    check_usage(&e);
    env_cleanup(&e);
}

/* The same request makes the same moves and prompts; the seed comes from the content. */
static void test_rstar_deterministic(void **state)
{
    struct env a;
    struct env b;

    (void)state;
    env_init(&a, BODY(""));
    env_init(&b, BODY(""));
    assert_int_equal(env_run(&a), PX_OK);
    assert_int_equal(env_run(&b), PX_OK);
    assert_int_equal(a.fake.ncalls, b.fake.ncalls);
    for (size_t i = 0; i < a.fake.ncalls; i++)
        assert_string_equal(a.fake.calls[i].text, b.fake.calls[i].text);
    assert_string_equal(a.out.text, b.out.text);
    env_cleanup(&a);
    env_cleanup(&b);
}

/* Mutual consistency outweighs a plain majority: 3 trajectories say 41, 2 say 42, and the
 * discriminator reaches 42. Without any check result, the majority wins. */
static void test_rstar_consistency_vote(void **state)
{
    static const char *const finals[5] = {
        "The final answer is 41.", "6*7 = 42. The final answer is 42.", "The final answer is 41.",
        "Again 6*7 = 42. The final answer is 42.", "The final answer is 41."};
    struct env e;

    (void)state;
    env_init(&e, BODY(""));
    memcpy(e.tree.finals, finals, sizeof(finals));
    assert_int_equal(env_run(&e), PX_OK);
    /* B and D are consistent (2 x 1.0 > 3 x 0.25); B's text is the shorter */
    assert_string_equal(e.out.text, "rollout-B finish: 6*7 = 42. The final answer is 42.");
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    memcpy(e.tree.finals, finals, sizeof(finals));
    e.tree.check = NULL; /* every check fails: all unchecked */
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "rollout-A finish: The final answer is 41.");
    assert_int_equal(e.fake.rounds, 5);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    memcpy(e.tree.finals, finals, sizeof(finals));
    e.tree.check = "I cannot finish this."; /* no answer: unchecked as well */
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "rollout-A finish: The final answer is 41.");
    env_cleanup(&e);
}

/* Signed and decimal answers are answers of their own (OptiLLM's \d+ read "-4" as "4"). */
static void test_rstar_signed_answers(void **state)
{
    static const char *const finals[5] = {
        "x = -4, so the final answer is -4.", "The final answer is 4.", "The final answer is 4.",
        "Solving, the final answer is -4.", "The final answer is 4."};
    static const char *const decimals[5] = {"The final answer is 3.5.", "The final answer is 3.5.",
                                            "The final answer is 5.", "The final answer is 5.",
                                            "The final answer is 5."};
    struct env e;

    (void)state;
    env_init(&e, BODY(""));
    memcpy(e.tree.finals, finals, sizeof(finals));
    e.tree.check = "Redoing it: the final answer is -4.";
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "rollout-D finish: Solving, the final answer is -4.");
    env_cleanup(&e);

    env_init(&e, BODY(""));
    memcpy(e.tree.finals, decimals, sizeof(decimals));
    e.tree.check = "The final answer is 7/2.";
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "rollout-A finish: The final answer is 3.5.");
    env_cleanup(&e);
}

/* c = 0: once "finish" has paid off at the root, every rollout of the next levels picks it
 * (pure exploitation); with the default c the moves spread out. */
static void test_rstar_exploration(void **state)
{
    struct env e;
    int finish = 0;

    (void)state;
    env_init(&e, BODY(""));
    set_option(&e.cfg, "rstar_c", 0);
    assert_int_equal(env_run(&e), PX_OK);
    for (int level = 1; level < 4; level++)
        for (size_t i = 0; i < 5; i++)
            assert_int_equal(move_of(fake_record_last(fake_llm_call(&e.fake, level, i))), 1);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    assert_int_equal(env_run(&e), PX_OK);
    for (size_t i = 0; i < 5; i++)
        finish += move_of(fake_record_last(fake_llm_call(&e.fake, 1, i))) == 1;
    assert_true(finish < 5);
    env_cleanup(&e);
}

/* Options: depth 1 and 2 rollouts: 3 rounds, 2x2 steps + 2 checks. The client's temperature
 * is used for every call. */
static void test_rstar_options(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.5"));
    set_option(&e.cfg, "rstar_max_depth", 1);
    set_option(&e.cfg, "rstar_num_rollouts", 2);
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.rounds, 3);
    assert_int_equal(e.fake.ncalls, 6);
    for (size_t i = 0; i < e.fake.ncalls; i++)
        assert_true(fabs(e.fake.calls[i].temperature - 0.5) < 1e-9);
    assert_int_equal(move_of(fake_record_last(fake_llm_call(&e.fake, 1, 0))), 1);
    check_usage(&e);
    env_cleanup(&e);

    /* Per request (once the registry row exists): the body's optillm_ fields win. */
    if (approach_option_find("rstar_num_rollouts") == &approach_rstar.options[1]) {
        env_init(&e, BODY(",\"optillm_rstar_num_rollouts\":3,\"optillm_rstar_max_depth\":1"));
        assert_int_equal(env_run(&e), PX_OK);
        assert_int_equal(e.fake.rounds, 3);
        assert_int_equal(e.fake.ncalls, 3 * 2 + 3);
        env_cleanup(&e);
    }

    /* depth 0: one "finish" step per rollout, then the checks */
    env_init(&e, BODY(""));
    set_option(&e.cfg, "rstar_max_depth", 0);
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.rounds, 2);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(move_of(fake_record_last(fake_llm_call(&e.fake, 0, i))), 1);
    env_cleanup(&e);
}

/* A failed step ends its rollout (the others go on); a whole failed level ends the search
 * with what exists; a failed first level is the request's error. */
static void test_rstar_partial_failure(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""));
    e.tree.fail_level = 1;
    e.tree.fail_tag = 'C';
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 5);
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 5);
    assert_int_equal(fake_llm_round_calls(&e.fake, 2), 4);
    assert_int_equal(fake_llm_round_calls(&e.fake, 3), 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_not_equal(tag_of(fake_llm_call(&e.fake, 2, i)), 'C');
    assert_string_equal(e.out.text, "rollout-A finish: The final answer is 42.");
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    e.tree.fail_level = 2;
    assert_int_equal(env_run(&e), PX_OK);
    /* levels 0 and 1, the failed level 2, then the checks of the trajectories with answers */
    assert_int_equal(e.fake.rounds, 4);
    assert_non_null(strstr(e.out.text, "The final answer is 42."));
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""));
    e.tree.fail_level = 0;
    e.fake.fail_status = 429;
    assert_int_equal(env_run(&e), PX_EHTTP);
    assert_int_equal(e.err.http_status, 429);
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);
}

/* Odd outputs: steps without any number give no answer (no checks; the last step of the
 * longest trajectory is returned); empty steps end their rollout; nothing at all is "". */
static void test_rstar_odd_outputs(void **state)
{
    static const char *const wordy[5] = {"no result", "still nothing", "hmm", "unclear",
                                         "cannot tell"};
    static const char *const empty[5] = {"", "", "", "", ""};
    struct env e;

    (void)state;
    env_init(&e, BODY(""));
    memcpy(e.tree.finals, wordy, sizeof(wordy));
    assert_int_equal(env_run(&e), PX_OK);
    assert_int_equal(e.fake.rounds, 4); /* no trajectory has an answer: no checks */
    assert_int_equal(fake_llm_stage_calls(&e.fake, "rstar/check"), 0);
    assert_string_equal(e.out.text, "rollout-C finish: hmm");
    check_usage(&e);
    env_cleanup(&e);

    /* empty finishes: the rollouts whose last step is empty keep their earlier steps */
    env_init(&e, BODY(""));
    memcpy(e.tree.finals, empty, sizeof(empty));
    e.tree.other = "";
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "");
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    /* a bare number in a step counts, with less weight than a stated answer */
    env_init(&e, BODY(""));
    memcpy(e.tree.finals, wordy, sizeof(wordy));
    e.tree.finals[3] = "It comes to 42 I think";
    e.tree.check = "Checking again. The final answer is 42.";
    assert_int_equal(env_run(&e), PX_OK);
    assert_string_equal(e.out.text, "rollout-D finish: It comes to 42 I think");
    env_cleanup(&e);
}

static void test_rstar_row(void **state)
{
    const struct approach *a = &approach_rstar;
    static const char *const names[] = {"rstar_max_depth", "rstar_num_rollouts", "rstar_c"};
    static const double defs[] = {3, 5, 1.4};

    (void)state;
    assert_string_equal(a->slug, "rstar");
    assert_int_equal(a->calls, 25);
    assert_int_equal(a->rounds, 5);
    assert_null(strchr(a->summary, '\n'));
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(a->options[i].name, names[i]);
        assert_true(a->options[i].def == defs[i]);
        assert_null(a->options[i].alias); /* OptiLLM's flags are these names already */
    }
    assert_null(a->options[3].name);
    for (const char *const *p = a->prompts; *p; p++)
        assert_non_null(prompt_get(*p));
    assert_non_null(strstr(prompt_get("rstar/check"), "{{steps}}"));
    if (approach_find("rstar", 5))
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
        cmocka_unit_test(test_rstar_row),
        cmocka_unit_test(test_rstar_structure),
        cmocka_unit_test(test_rstar_deterministic),
        cmocka_unit_test(test_rstar_consistency_vote),
        cmocka_unit_test(test_rstar_signed_answers),
        cmocka_unit_test(test_rstar_exploration),
        cmocka_unit_test(test_rstar_options),
        cmocka_unit_test(test_rstar_partial_failure),
        cmocka_unit_test(test_rstar_odd_outputs),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
