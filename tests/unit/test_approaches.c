/* test_approaches.c: bon, moa, self_consistency, majority_voting, re2 and cot_reflection run on
 * the fake upstream: stage structure, chosen answers, odd outputs, n fallback, partial
 * failure and usage sums. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <ctype.h>
#include <limits.h>
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

extern const struct approach approach_bon;
extern const struct approach approach_moa;
extern const struct approach approach_self_consistency;
extern const struct approach approach_majority_voting;
extern const struct approach approach_re2;
extern const struct approach approach_cot_reflection;

/* The scripted fake upstream and the request environment (tests/unit/script_env.h). */
#include "script_env.h"

/* Sample texts: A and B agree on 42 in different words (B is shorter), C says 41. */
#define A42 "Six times seven is 42. The answer is 42."
#define B42 "6*7 = 42. The answer is 42."
#define C41 "The answer is 41."

/* The request's conversation reached the upstream as sent: [system, user] as raw objects. */
static void check_conversation(const struct fake_record *r)
{
    assert_int_equal(r->nmsgs, 2);
    assert_string_equal(r->msgs[0].role, "system");
    assert_string_equal(r->msgs[0].content, SYS);
    assert_string_equal(r->msgs[1].role, "user");
    assert_string_equal(r->msgs[1].content, Q);
    assert_true(r->raw_last);
}

/* ---- registry rows and prompts ------------------------------------------------------------ */

static void test_registry_rows(void **state)
{
    static const struct {
        const struct approach *a;
        const char *slug;
        const char *aliases[3];
        int calls;
        int rounds;
    } cases[] = {
        {&approach_bon, "bon", {"best-of-n", "best_of_n"}, 4, 2},
        {&approach_moa, "moa", {"mixture-of-agents", "mixture_of_agents"}, 3, 3},
        {&approach_self_consistency, "self_consistency", {"self-consistency"}, 1, 1},
        {&approach_majority_voting, "majority_voting", {"majority-voting"}, 1, 1},
        {&approach_re2, "re2", {"reread"}, 1, 1},
        {&approach_cot_reflection, "cot_reflection", {"cot-reflection"}, 1, 1},
    };

    (void)state;
    assert_int_equal(registry_check(), 0);
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct approach *a = cases[i].a;

        assert_string_equal(a->slug, cases[i].slug);
        assert_ptr_equal(approach_find(a->slug, strlen(a->slug)), a);
        for (size_t j = 0; j < 3 && cases[i].aliases[j]; j++)
            assert_ptr_equal(approach_find(cases[i].aliases[j], strlen(cases[i].aliases[j])), a);
        assert_int_equal(a->calls, cases[i].calls);
        assert_int_equal(a->rounds, cases[i].rounds);
        assert_non_null(a->summary);
        assert_null(strchr(a->summary, '\n'));
        for (const char *const *p = a->prompts; p && *p; p++)
            assert_non_null(prompt_get(*p));
    }
}

static void test_options(void **state)
{
    static const struct {
        const char *name;
        double def, min, max;
        const struct approach *owner;
    } cases[] = {
        {"best_of_n", 3, 1, 16, &approach_bon},
        {"moa_candidates", 3, 2, 8, &approach_moa},
        {"samples", 5, 1, 32, &approach_self_consistency},
        {"mv_samples", 6, 1, 32, &approach_majority_voting},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct approach_option *o = approach_option_find(cases[i].name);

        assert_non_null(o);
        assert_true(o->def == cases[i].def && o->min == cases[i].min && o->max == cases[i].max);
        assert_true(o->integer);
        assert_ptr_equal(o, cases[i].owner->options);
    }
}

/* Out-of-range per-request options are the client's error, found while parsing. */
static void test_option_out_of_range(void **state)
{
    static const char *const bodies[] = {
        BODY(",\"optillm_best_of_n\":0"),      BODY(",\"optillm_best_of_n\":17"),
        BODY(",\"optillm_moa_candidates\":1"), BODY(",\"optillm_samples\":2.5"),
        BODY(",\"optillm_mv_samples\":33"),
    };
    struct config cfg;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.approach, sizeof(cfg.approach), "auto");
    snprintf(cfg.model, sizeof(cfg.model), "m");
    cfg.n = 1;
    for (size_t i = 0; i < PX_ARRAY_LEN(bodies); i++) {
        struct arena *a = arena_create();
        struct chat_request req;
        struct px_error err;

        assert_int_equal(chat_request_parse(a, bodies[i], strlen(bodies[i]), &cfg, &req, &err),
                         PX_EINVAL);
        arena_destroy(a);
    }
}

/* No template may show "answer is <digit>": the integration mock counts such phrases. */
static void test_prompt_texts(void **state)
{
    const struct approach *mine[] = {&approach_bon, &approach_moa, &approach_re2,
                                     &approach_cot_reflection};

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(mine); i++)
        for (const char *const *p = mine[i]->prompts; p && *p; p++)
            assert_false(has_answer_digit(prompt_get(*p)));
    assert_non_null(strstr(prompt_get("cot_reflection/system"), "<output>"));
    assert_non_null(strstr(prompt_get("cot_reflection/system"), "{{system}}"));
    assert_non_null(strstr(prompt_get("bon/rate"), "rate"));
    assert_non_null(strstr(prompt_get("bon/rate"), "{{response}}"));
    assert_non_null(strstr(prompt_get("moa/critique"), "{{candidates}}"));
    assert_non_null(strstr(prompt_get("moa/final"), "{{critique}}"));
    assert_null(strstr(prompt_get("moa/final_nocritique"), "{{critique}}"));
}

/* ---- bon ---------------------------------------------------------------------------------- */

static const struct row bon_rows[] = {
    {"bon/sample", NULL, A42, NULL},
    {"bon/sample", NULL, B42, NULL},
    {"bon/sample", NULL, C41, NULL},
    {"bon/rate", "Six times seven", "Rating: 6", NULL},
    {"bon/rate", "6*7", "Rating: 9", NULL},
    {"bon/rate", "answer is 41", "Rating: 2", NULL},
    {NULL, NULL, NULL, NULL},
};

static void test_bon_structure(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""), bon_rows);
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, B42);
    assert_string_equal(e.out.finish_reason, "stop");
    /* 2 rounds: one n=3 call at T=1, then the 3 ratings at T=0.1, 256 tokens, at once. */
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 0, 1, "bon/sample", 3, 1.0, -1);
    check_conversation(fake_llm_call(&e.fake, 0, 0));
    check_round(&e, 1, 3, "bon/rate", 1, 0.1, 256);
    for (size_t i = 0; i < 3; i++) {
        const struct fake_record *r = fake_llm_call(&e.fake, 1, i);
        const char *user = fake_record_last(r);

        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].role, "system");
        assert_non_null(strstr(user, Q));
        assert_non_null(strstr(user, SYS));
        assert_non_null(strstr(user, "rate"));
        assert_int_equal(fake_count(user, "The answer is 4"), 1); /* one candidate quoted */
    }
    assert_int_equal(e.fake.n_support, 1); /* n worked: remembered */
    assert_int_equal(e.fake.set_n_calls, 1);
    assert_int_equal(e.script.unexpected, 0);
    assert_int_equal(e.ctx.usage.calls, 4);
    check_usage(&e);
    env_cleanup(&e);
}

/* The client's temperature drives the samples, never the ratings; its max_tokens is left to
 * the transport for samples, and the ratings keep their own small budget. */
static void test_bon_client_params(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.3,\"max_tokens\":50"), bon_rows);
    e.ctx.stream_final = true; /* bon has no final stage: nothing may stream */
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    check_round(&e, 0, 1, "bon/sample", 3, 0.3, -1);
    check_round(&e, 1, 3, "bon/rate", 1, 0.1, 256);
    check_usage(&e);
    env_cleanup(&e);
}

struct rating_case {
    const char *ra, *rb, *rc; /* replies of the grader for A42, B42, C41 */
    const char *winner;
};

static void test_bon_rating_formats(void **state)
{
    static const struct rating_case cases[] = {
        {"Rating: 3", "8/10", "**7**", B42},
        {"I'd give it 8 out of 10.", "6", "Rating: 5/10", A42},
        {"garbage", "", "2", C41},               /* unparseable and empty are unrated */
        {"Rating: 15", "Rating: 9.5", "9", A42}, /* clamped to 10 */
        {"7. Clear and correct.", "**Rating:** 8", "Score: 75/100", B42},
        {"3 apples", "no digits here", "Rating: 1", C41},
        {"Rating: -4", "Rating: 0", "none", B42}, /* -4 is 0: a tie broken by B's majority */
        {"The response is good.\nScore: 4", "Rating: 4", "rating is 7 out of 10", C41},
        {"I would rate it **6**.", "Grade: 5", "5.5", A42},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"bon/sample", NULL, A42, NULL},
            {"bon/sample", NULL, B42, NULL},
            {"bon/sample", NULL, C41, NULL},
            {"bon/rate", "Six times seven", cases[i].ra, NULL},
            {"bon/rate", "6*7", cases[i].rb, NULL},
            {"bon/rate", "answer is 41", cases[i].rc, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &approach_bon), PX_OK);
        if (strcmp(e.out.text, cases[i].winner) != 0)
            fail_msg("case %zu: got '%s', want '%s'", i, e.out.text, cases[i].winner);
        env_cleanup(&e);
    }
}

/* A failed rating leaves its sample unrated; when all fail, the answer most samples share
 * wins (then the shorter text); the request never fails because of ratings. */
static void test_bon_failed_ratings(void **state)
{
    static const struct row one_fails[] = {
        {"bon/sample", NULL, A42, NULL}, {"bon/sample", NULL, B42, NULL},
        {"bon/sample", NULL, C41, NULL}, {"bon/rate", "Six times seven", "Rating: 6", NULL},
        {"bon/rate", "6*7", NULL, NULL}, {"bon/rate", "answer is 41", "Rating: 2", NULL},
        {NULL, NULL, NULL, NULL},
    };
    /* B's rating fails: it must rank below the two rated 0, else B (majority, shorter) wins */
    static const struct row below_zero[] = {
        {"bon/sample", NULL, A42, NULL}, {"bon/sample", NULL, B42, NULL},
        {"bon/sample", NULL, C41, NULL}, {"bon/rate", "Six times seven", "Rating: 0", NULL},
        {"bon/rate", "6*7", NULL, NULL}, {"bon/rate", "answer is 41", "Rating: 0", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row all_fail[] = {
        {"bon/sample", NULL, C41, NULL}, {"bon/sample", NULL, A42, NULL},
        {"bon/sample", NULL, B42, NULL}, {"bon/rate", "The answer", NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), one_fails);
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, A42);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), below_zero);
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, A42);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), all_fail);
    e.fake.fail_status = 503;
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, B42);
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(e.ctx.usage.calls, 4);
    check_usage(&e);
    env_cleanup(&e);
}

/* Equal ratings: the winner depends on content only, whatever order the samples arrive in. */
static void test_bon_tie_break_by_content(void **state)
{
    static const char *const sets[][3] = {
        {A42, B42, C41},                                                 /* majority, shorter */
        {"The answer is 12.", "The answer is 21.", "The answer is 13."}, /* byte order */
    };
    static const char *const winners[] = {B42, "The answer is 12."};
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};

    (void)state;
    for (size_t s = 0; s < PX_ARRAY_LEN(sets); s++) {
        for (size_t p = 0; p < 6; p++) {
            const struct row rows[] = {
                {"bon/sample", NULL, sets[s][perms[p][0]], NULL},
                {"bon/sample", NULL, sets[s][perms[p][1]], NULL},
                {"bon/sample", NULL, sets[s][perms[p][2]], NULL},
                {"bon/rate", "answer", "Rating: 8", NULL},
                {NULL, NULL, NULL, NULL},
            };
            struct env e;

            env_init(&e, BODY(""), rows);
            assert_int_equal(env_run(&e, &approach_bon), PX_OK);
            assert_string_equal(e.out.text, winners[s]);
            env_cleanup(&e);
        }
    }
}

/* An upstream that refuses n: the refused call, then k parallel single calls in one round
 * (then the ratings); refused once, it is not asked for n again. */
static void test_bon_n_refused(void **state)
{
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, BODY(""), bon_rows);
    e.fake.n_mode = FAKE_N_REFUSE;
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, B42);
    assert_int_equal(e.fake.rounds, 3);
    r = fake_llm_call(&e.fake, 0, 0);
    check_call(r, "bon/sample", 3, 1.0, -1, false);
    assert_int_equal(r->http_status, 400);
    check_round(&e, 1, 3, "bon/sample", 1, 1.0, -1);
    check_round(&e, 2, 3, "bon/rate", 1, 0.1, 256);
    assert_int_equal(e.fake.n_support, 0);
    assert_int_equal(e.ctx.usage.calls, 7); /* the refused call counts too */
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), bon_rows);
    e.fake.n_mode = FAKE_N_REFUSE;
    e.fake.n_support = 0; /* learnt by an earlier request */
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, B42);
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 0, 3, "bon/sample", 1, 1.0, -1);
    check_usage(&e);
    env_cleanup(&e);
}

/* An upstream that ignores n (one choice back): the missing samples are fetched. */
static void test_bon_n_ignored(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(""), bon_rows);
    e.fake.n_mode = FAKE_N_IGNORE;
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, B42);
    assert_int_equal(e.fake.rounds, 3);
    check_round(&e, 0, 1, "bon/sample", 3, 1.0, -1);
    assert_int_equal(fake_llm_call(&e.fake, 0, 0)->nchoices, 1);
    check_round(&e, 1, 2, "bon/sample", 1, 1.0, -1);
    check_round(&e, 2, 3, "bon/rate", 1, 0.1, 256);
    assert_int_equal(e.fake.n_support, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Failed and empty samples are dropped before rating; the rest are still compared. */
static void test_bon_partial_samples(void **state)
{
    static const struct row rows[] = {
        {"bon/sample", NULL, A42, NULL},
        {"bon/sample", NULL, NULL, NULL},
        {"bon/sample", NULL, "", NULL},
        {"bon/sample", NULL, C41, NULL},
        {"bon/rate", "Six times", "Rating: 3", NULL},
        {"bon/rate", "answer is 41", "Rating: 7", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"optillm_best_of_n\":4"), rows);
    e.fake.n_mode = FAKE_N_REFUSE;
    e.fake.n_support = 0;
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, C41);
    check_round(&e, 0, 4, "bon/sample", 1, 1.0, -1);
    check_round(&e, 1, 2, "bon/rate", 1, 0.1, 256);
    check_usage(&e);
    env_cleanup(&e);
}

/* No sample at all: the request fails with the upstream's status. */
static void test_bon_all_samples_fail(void **state)
{
    static const struct row rows[] = {
        {"bon/sample", NULL, NULL, NULL},
        {"bon/sample", NULL, NULL, NULL},
        {"bon/sample", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    /* n accepted: the one n=3 call fails */
    env_init(&e, BODY(""), rows);
    e.fake.fail_status = 503;
    e.fake.fail_message = "overloaded";
    assert_int_equal(env_run(&e, &approach_bon), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 503);
    assert_non_null(strstr(e.err.message, "overloaded"));
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    /* single calls: all three fail */
    env_init(&e, BODY(""), rows);
    e.fake.n_support = 0;
    e.fake.fail_status = 429;
    assert_int_equal(env_run(&e, &approach_bon), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 429);
    check_usage(&e);
    env_cleanup(&e);

    /* a transport failure (no HTTP status) */
    env_init(&e, BODY(""), rows);
    e.fake.n_support = 0;
    e.fake.fail_status = 0;
    assert_int_equal(env_run(&e, &approach_bon), PX_ETIMEDOUT);
    assert_int_equal(px_http_status(&e.err), 504);
    check_usage(&e);
    env_cleanup(&e);
}

/* best_of_n=1: one plain call, nothing to rate. best_of_n=5: n=5 and 5 ratings. */
static void test_bon_option(void **state)
{
    static const struct row rows[] = {
        {"bon/sample", NULL, C41, "length"}, {"bon/sample", NULL, B42, NULL},
        {"bon/sample", NULL, A42, NULL},     {"bon/sample", NULL, "The answer is 40.", NULL},
        {"bon/sample", NULL, "42", NULL},    {"bon/rate", "answer is 41", "Rating: 10", NULL},
        {"bon/rate", "", "Rating: 1", NULL}, {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"optillm_best_of_n\":1"), rows);
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, C41);
    assert_string_equal(e.out.finish_reason, "length"); /* the chosen sample was cut */
    assert_int_equal(e.fake.rounds, 1);
    check_round(&e, 0, 1, "bon/sample", 1, 1.0, -1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(",\"optillm_best_of_n\":5"), rows);
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, C41);
    assert_string_equal(e.out.finish_reason, "length");
    check_round(&e, 0, 1, "bon/sample", 5, 1.0, -1);
    check_round(&e, 1, 5, "bon/rate", 1, 0.1, 256);
    check_usage(&e);
    env_cleanup(&e);
}

/* Only empty samples: nothing to rate, an empty answer. */
static void test_bon_empty_samples(void **state)
{
    static const struct row rows[] = {
        {"bon/sample", NULL, "", NULL},
        {"bon/sample", NULL, "  \n", NULL},
        {"bon/sample", NULL, "", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_string_equal(e.out.text, "");
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);
}

/* ---- moa ---------------------------------------------------------------------------------- */

#define CRITIQUE "Candidate 3 miscalculates; the others agree."
#define FINAL    "6 times 7 is 42."

static const struct row moa_rows[] = {
    {"moa/candidate", NULL, A42, NULL}, {"moa/candidate", NULL, C41, NULL},
    {"moa/candidate", NULL, B42, NULL}, {"moa/critique", NULL, CRITIQUE, NULL},
    {"moa/final", NULL, FINAL, NULL},   {NULL, NULL, NULL, NULL},
};

static void test_moa_structure(void **state)
{
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        struct env e;
        const struct fake_record *r;

        env_init(&e, BODY(""), moa_rows);
        e.ctx.stream_final = stream;
        assert_int_equal(env_run(&e, &approach_moa), PX_OK);
        assert_string_equal(e.out.text, FINAL);
        assert_string_equal(e.out.finish_reason, "stop");
        assert_int_equal(e.fake.rounds, 3);
        check_round(&e, 0, 1, "moa/candidate", 3, 1.0, -1);
        check_conversation(fake_llm_call(&e.fake, 0, 0));
        check_round(&e, 1, 1, "moa/critique", 1, 0.1, 1024);
        r = fake_llm_call(&e.fake, 1, 0);
        assert_int_equal(r->nmsgs, 1);
        assert_non_null(strstr(r->text, Q));
        assert_int_equal(fake_count(r->text, "The answer is 4"), 3);
        assert_non_null(strstr(r->text, A42));
        assert_non_null(strstr(r->text, B42));
        assert_non_null(strstr(r->text, C41));
        /* the final: streamed only when asked, the client's system prompt kept */
        assert_int_equal(fake_llm_round_calls(&e.fake, 2), 1);
        r = fake_llm_call(&e.fake, 2, 0);
        check_call(r, "moa/final", 1, 0.1, -1, stream);
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_non_null(strstr(r->text, Q));
        assert_non_null(strstr(r->text, CRITIQUE));
        assert_non_null(strstr(r->text, A42));
        assert_non_null(strstr(r->text, B42));
        assert_non_null(strstr(r->text, C41));
        assert_int_equal(e.script.unexpected, 0);
        assert_int_equal(e.ctx.usage.calls, 3);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* The client's temperature drives the drafts and the synthesis, not the review. */
static void test_moa_client_temperature(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"temperature\":0.7,\"optillm_moa_candidates\":5"), moa_rows);
    e.fake.n_mode = FAKE_N_IGNORE;
    assert_int_equal(env_run(&e, &approach_moa), PX_OK);
    /* 5 drafts asked, 1 returned, 4 fetched; 3 scripted, 2 fail and are dropped */
    check_round(&e, 0, 1, "moa/candidate", 5, 0.7, -1);
    check_round(&e, 1, 4, "moa/candidate", 1, 0.7, -1);
    check_round(&e, 2, 1, "moa/critique", 1, 0.1, 1024);
    check_call(fake_llm_call(&e.fake, 3, 0), "moa/final", 1, 0.7, -1, false);
    assert_string_equal(e.out.text, FINAL);
    check_usage(&e);
    env_cleanup(&e);
}

/* The prompts list the drafts in content order: the same upstream answers in any arrival
 * order give byte-identical review and synthesis prompts. */
static void test_moa_order_independent(void **state)
{
    static const int perms[3][3] = {{0, 1, 2}, {2, 0, 1}, {1, 2, 0}};
    static const char *const drafts[3] = {A42, B42, C41};
    char *critique0 = NULL;
    char *final0 = NULL;

    (void)state;
    for (size_t p = 0; p < 3; p++) {
        const struct row rows[] = {
            {"moa/candidate", NULL, drafts[perms[p][0]], NULL},
            {"moa/candidate", NULL, drafts[perms[p][1]], NULL},
            {"moa/candidate", NULL, drafts[perms[p][2]], NULL},
            {"moa/critique", NULL, CRITIQUE, NULL},
            {"moa/final", NULL, FINAL, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &approach_moa), PX_OK);
        if (p == 0) {
            critique0 = xstrdup(fake_llm_call(&e.fake, 1, 0)->text);
            final0 = xstrdup(fake_llm_call(&e.fake, 2, 0)->text);
        } else {
            assert_string_equal(fake_llm_call(&e.fake, 1, 0)->text, critique0);
            assert_string_equal(fake_llm_call(&e.fake, 2, 0)->text, final0);
        }
        env_cleanup(&e);
    }
    free(critique0);
    free(final0);
}

/* A failed (or empty) review: the synthesis still runs, with the prompt that has no review.
 * A truncated review is kept. */
static void test_moa_critique_outcomes(void **state)
{
    static const struct {
        const char *text;
        const char *finish;
        bool kept;
    } cases[] = {
        {NULL, NULL, false},
        {"  ", NULL, false},
        {"Candidate 1 is right but", "length", true},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"moa/candidate", NULL, A42, NULL},
            {"moa/candidate", NULL, B42, NULL},
            {"moa/candidate", NULL, C41, NULL},
            {"moa/critique", NULL, cases[i].text, cases[i].finish},
            {"moa/final", NULL, FINAL, NULL},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;
        const struct fake_record *r;

        env_init(&e, BODY(""), rows);
        assert_int_equal(env_run(&e, &approach_moa), PX_OK);
        assert_string_equal(e.out.text, FINAL);
        assert_int_equal(e.fake.rounds, 3);
        r = fake_llm_call(&e.fake, 2, 0);
        assert_string_equal(r->stage, "moa/final");
        assert_int_equal(strstr(r->text, "<review>") != NULL, cases[i].kept);
        if (cases[i].kept)
            assert_non_null(strstr(r->text, cases[i].text));
        assert_non_null(strstr(r->text, A42));
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* One usable draft: no review, the synthesis polishes it (2 rounds). */
static void test_moa_one_candidate(void **state)
{
    static const struct row rows[] = {
        {"moa/candidate", NULL, NULL, NULL},
        {"moa/candidate", NULL, C41, NULL},
        {"moa/candidate", NULL, "", NULL},
        {"moa/final", NULL, FINAL, "length"},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.fake.n_support = 0;
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e, &approach_moa), PX_OK);
    assert_string_equal(e.out.text, FINAL);
    assert_string_equal(e.out.finish_reason, "length");
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 0, 3, "moa/candidate", 1, 1.0, -1);
    r = fake_llm_call(&e.fake, 1, 0);
    check_call(r, "moa/final", 1, 0.1, -1, true);
    assert_null(strstr(r->text, "<review>"));
    assert_non_null(strstr(r->text, C41));
    assert_int_equal(fake_llm_stage_calls(&e.fake, "moa/critique"), 0);
    check_usage(&e);
    env_cleanup(&e);
}

static void test_moa_failures(void **state)
{
    static const struct row final_fails[] = {
        {"moa/candidate", NULL, A42, NULL}, {"moa/candidate", NULL, B42, NULL},
        {"moa/candidate", NULL, C41, NULL}, {"moa/critique", NULL, CRITIQUE, NULL},
        {"moa/final", NULL, NULL, NULL},    {NULL, NULL, NULL, NULL},
    };
    static const struct row none[] = {{NULL, NULL, NULL, NULL}};
    struct env e;

    (void)state;
    env_init(&e, BODY(""), final_fails);
    e.fake.fail_status = 502;
    assert_int_equal(env_run(&e, &approach_moa), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 502);
    assert_int_equal(e.fake.rounds, 3);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), none);
    e.fake.n_support = 0;
    e.fake.fail_status = 401;
    assert_int_equal(env_run(&e, &approach_moa), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 401);
    assert_int_equal(e.fake.rounds, 1); /* no review or synthesis without drafts */
    check_usage(&e);
    env_cleanup(&e);
}

/* ---- self_consistency and majority_voting ------------------------------------------------ */

/* Runs 'a' on the samples (in this order) and returns the answer; usage is checked. */
static void vote_case(const struct approach *a, const char *stage, const char *body,
                      const char *const *texts, const char *const *finish, size_t n,
                      const char *want, const char *want_finish)
{
    struct row rows[ROWS_MAX];
    struct env e;

    assert_true(n + 1 < ROWS_MAX);
    for (size_t i = 0; i < n; i++)
        rows[i] = (struct row){stage, NULL, texts[i], finish ? finish[i] : NULL};
    rows[n] = (struct row){NULL, NULL, NULL, NULL};
    env_init(&e, body, rows);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    assert_int_equal(env_run(&e, a), PX_OK);
    if (strcmp(e.out.text, want) != 0)
        fail_msg("%s: got '%s', want '%s'", a->slug, e.out.text, want);
    assert_string_equal(e.out.finish_reason, want_finish);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

/* Every rotation and the reversal of texts[] give the same answer. */
static void vote_all_orders(const struct approach *a, const char *stage, const char *body,
                            const char *const *texts, size_t n, const char *want)
{
    const char *order[ROWS_MAX];

    for (size_t r = 0; r < n; r++) {
        for (size_t i = 0; i < n; i++)
            order[i] = texts[(i + r) % n];
        vote_case(a, stage, body, order, NULL, n, want, "stop");
        for (size_t i = 0; i < n; i++)
            order[i] = texts[(n - 1 - i + r) % n];
        vote_case(a, stage, body, order, NULL, n, want, "stop");
    }
}

static void test_sc_structure(void **state)
{
    static const struct row rows[] = {
        {"self_consistency/sample", NULL, A42, NULL},
        {"self_consistency/sample", NULL, B42, NULL},
        {"self_consistency/sample", NULL, C41, NULL},
        {"self_consistency/sample", NULL, C41, NULL},
        {"self_consistency/sample", NULL, "6 x 7 = 42.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    e.ctx.stream_final = true;
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_string_equal(e.out.text, "6 x 7 = 42.");
    assert_int_equal(e.fake.rounds, 1);
    check_round(&e, 0, 1, "self_consistency/sample", 5, 1.0, -1);
    check_conversation(fake_llm_call(&e.fake, 0, 0));
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(",\"temperature\":0,\"optillm_samples\":3"), rows);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    check_round(&e, 0, 1, "self_consistency/sample", 3, 0.0, -1);
    env_cleanup(&e);
}

/* The majority answer wins although its samples are worded differently; a whole sample
 * carrying it comes back (completed, then shortest, then byte order). */
static void test_sc_majority(void **state)
{
    static const char *const texts[] = {
        "Six sevens make 42", "The answer is 41.", "Multiplying gives \\boxed{42}.",
        "6 x 7 = 42.",        "The answer is 41.",
    };

    (void)state;
    vote_all_orders(&approach_self_consistency, "self_consistency/sample", BODY(""), texts,
                    PX_ARRAY_LEN(texts), "6 x 7 = 42.");
}

/* Samples without an extractable answer are grouped by their words. */
static void test_sc_text_groups(void **state)
{
    static const char *const texts[] = {
        "The capital of France is Paris.",
        "I think it is blue",
        "It is Paris, the capital of France.",
        "Paris is the capital of France.",
        "Maybe Lyon",
    };
    /* a size tie between an answer group and a text group: the answer wins, although the
     * text group's key sorts first */
    static const char *const tie[] = {"Paris is the capital of France.",
                                      "The capital of France is Paris.", "The answer is Zebra.",
                                      "the answer is zebra"};
    /* two text groups of 2: the smaller key wins, whichever member arrived first */
    static const char *const text_tie[] = {"The capital of France is Paris.",
                                           "The sky colour is blue", "Blue is the sky colour",
                                           "Paris is the capital of France."};

    (void)state;
    vote_all_orders(&approach_self_consistency, "self_consistency/sample", BODY(""), texts,
                    PX_ARRAY_LEN(texts), "Paris is the capital of France.");
    vote_all_orders(&approach_self_consistency, "self_consistency/sample",
                    BODY(",\"optillm_samples\":4"), tie, PX_ARRAY_LEN(tie), "the answer is zebra");
    vote_all_orders(&approach_self_consistency, "self_consistency/sample",
                    BODY(",\"optillm_samples\":4"), text_tie, PX_ARRAY_LEN(text_tie),
                    "Blue is the sky colour");
}

/* Truncated samples vote only when no sample completed; then the answer is marked "length". */
static void test_sc_truncated(void **state)
{
    static const char *const texts[] = {"First 6*4 = 24 and then", "We add 6*3 = 18 to 24 to", C41,
                                        "Start: 6*2 = 12, 12+30", B42};
    static const char *const finish[] = {"length", "length", NULL, "length", NULL};
    static const char *const cut[] = {"First 6*4 = 24 and", "So 6*4 = 24, then"};
    static const char *const cut_finish[] = {"length", "length"};

    (void)state;
    /* 3 cut samples would make a majority for 24; of the 2 complete ones, 41 < 42 */
    vote_case(&approach_self_consistency, "self_consistency/sample", BODY(""), texts, finish, 5,
              C41, "stop");
    vote_case(&approach_majority_voting, "majority_voting/sample",
              BODY(",\"optillm_mv_samples\":5"), texts, finish, 5, C41, "stop");
    vote_case(&approach_self_consistency, "self_consistency/sample", BODY(",\"optillm_samples\":2"),
              cut, cut_finish, 2, "So 6*4 = 24, then", "length");
}

/* Failed and empty samples are left out; none at all fails with the upstream's status. */
static void test_sc_partial_failure(void **state)
{
    static const struct row rows[] = {
        {"self_consistency/sample", NULL, B42, NULL},
        {"self_consistency/sample", NULL, NULL, NULL},
        {"self_consistency/sample", NULL, "", NULL},
        {"self_consistency/sample", NULL, NULL, NULL},
        {"self_consistency/sample", NULL, "The answer is 42", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row none[] = {{NULL, NULL, NULL, NULL}};
    static const struct row empty[] = {
        {"self_consistency/sample", NULL, "", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    e.fake.n_mode = FAKE_N_REFUSE;
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_string_equal(e.out.text, "The answer is 42");
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 1, 5, "self_consistency/sample", 1, 1.0, -1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), none);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    e.fake.n_support = 0;
    e.fake.fail_status = 500;
    e.fake.fail_message = "upstream exploded";
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 500);
    assert_non_null(strstr(e.err.message, "exploded"));
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(",\"optillm_samples\":1"), empty);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_string_equal(e.out.text, "");
    check_round(&e, 0, 1, "self_consistency/sample", 1, 1.0, -1);
    check_usage(&e);
    env_cleanup(&e);
}

static void test_mv_structure(void **state)
{
    static const struct row rows[] = {
        {"majority_voting/sample", NULL, A42, NULL},
        {"majority_voting/sample", NULL, B42, NULL},
        {"majority_voting/sample", NULL, C41, NULL},
        {"majority_voting/sample", NULL, C41, NULL},
        {"majority_voting/sample", NULL, "42", NULL},
        {"majority_voting/sample", NULL, "?", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    assert_int_equal(env_run(&e, &approach_majority_voting), PX_OK);
    assert_string_equal(e.out.text, "42");
    assert_int_equal(e.fake.rounds, 1);
    check_round(&e, 0, 1, "majority_voting/sample", 6, 0.6, -1);
    check_conversation(fake_llm_call(&e.fake, 0, 0));
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(",\"temperature\":1.2"), rows);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    e.fake.n_mode = FAKE_N_IGNORE;
    assert_int_equal(env_run(&e, &approach_majority_voting), PX_OK);
    assert_string_equal(e.out.text, "42");
    check_round(&e, 0, 1, "majority_voting/sample", 6, 1.2, -1);
    check_round(&e, 1, 5, "majority_voting/sample", 1, 1.2, -1);
    check_usage(&e);
    env_cleanup(&e);
}

/* Samples without an answer do not vote; answer ties go to the smaller key; with no answer
 * at all the samples are grouped by text. */
static void test_mv_votes(void **state)
{
    /* 3 samples without an answer would outnumber the 2 that say 42: they do not vote */
    static const char *const majority[] = {
        "The answer is 42.",
        "Six sevens make 42",
        "The answer is 41.",
        "It is Paris, the capital of France.",
        "Paris is the capital of France.",
        "The capital of France is Paris.",
    };
    static const char *const tie[] = {"It is 42", "The answer is 42.", "It is 41",
                                      "The answer is 41."};
    static const char *const words[] = {"It is Paris, the capital of France.", "Maybe Lyon",
                                        "Paris is the capital of France.", "Nice?",
                                        "The capital of France is Paris."};
    static const char *const text_tie[] = {"The capital of France is Paris.",
                                           "The sky colour is blue", "Blue is the sky colour",
                                           "Paris is the capital of France."};
    static const char *const text_answers[] = {"The answer is Paris.", "the answer is paris",
                                               "The answer is Lyon.", "I believe it is 7"};

    (void)state;
    vote_all_orders(&approach_majority_voting, "majority_voting/sample", BODY(""), majority,
                    PX_ARRAY_LEN(majority), "The answer is 42.");
    vote_all_orders(&approach_majority_voting, "majority_voting/sample",
                    BODY(",\"optillm_mv_samples\":4"), tie, PX_ARRAY_LEN(tie), "It is 41");
    vote_all_orders(&approach_majority_voting, "majority_voting/sample",
                    BODY(",\"optillm_mv_samples\":5"), words, PX_ARRAY_LEN(words),
                    "Paris is the capital of France.");
    vote_all_orders(&approach_majority_voting, "majority_voting/sample",
                    BODY(",\"optillm_mv_samples\":4"), text_tie, PX_ARRAY_LEN(text_tie),
                    "Blue is the sky colour");
    vote_all_orders(&approach_majority_voting, "majority_voting/sample",
                    BODY(",\"optillm_mv_samples\":4"), text_answers, PX_ARRAY_LEN(text_answers),
                    "the answer is paris");
}

static void test_mv_failure(void **state)
{
    static const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    env_option(&e, "adaptive", 0); /* fixed k: adaptive runs are below */
    e.fake.fail_status = 400;
    e.fake.fail_message = "model not available";
    assert_int_equal(env_run(&e, &approach_majority_voting), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 400);
    check_usage(&e);
    env_cleanup(&e);
}

/* Adaptive sampling (the default, risk 0.2): an agreeing first batch of 2 ends a vote of 5 or 6
 * in one n-call; a contested one draws in further rounds until decided or the budget is spent;
 * a failed later round keeps what the earlier ones got. */
static void test_vote_adaptive(void **state)
{
    static const struct row same[] = {
        {"self_consistency/sample", NULL, A42, NULL},
        {"self_consistency/sample", NULL, B42, NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row contested[] = {
        {"self_consistency/sample", NULL, A42, NULL},
        {"self_consistency/sample", NULL, C41, NULL},
        {"self_consistency/sample", NULL, "The answer is 7.", NULL},
        {"self_consistency/sample", NULL, "The answer is 41!", NULL},
        {"self_consistency/sample", NULL, "So 41.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row mv_rows[] = {
        {"majority_voting/sample", NULL, A42, NULL},
        {"majority_voting/sample", NULL, C41, NULL},
        {"majority_voting/sample", NULL, B42, NULL},
        {"majority_voting/sample", NULL, "42", NULL},
        {"majority_voting/sample", NULL, "The answer is 42!", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row later_fails[] = {
        {"self_consistency/sample", NULL, A42, NULL},
        {"self_consistency/sample", NULL, C41, NULL},
        {"self_consistency/sample", NULL, "The answer is 7.", NULL},
        {"self_consistency/sample", NULL, NULL, NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), same);
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_string_equal(e.out.text, B42);
    assert_int_equal(e.fake.rounds, 1);
    check_round(&e, 0, 1, "self_consistency/sample", 2, 1.0, -1);
    check_usage(&e);
    env_cleanup(&e);

    /* 1-1 after 2: 2 more (the fewest that could decide); 2-1-1 with one left can at worst
     * tie (risk 2/5 x 1/2 = 0.2): the fifth sample is not drawn */
    env_init(&e, BODY(""), contested);
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_string_equal(e.out.text, "The answer is 41!");
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 0, 1, "self_consistency/sample", 2, 1.0, -1);
    check_round(&e, 1, 1, "self_consistency/sample", 2, 1.0, -1);
    check_usage(&e);
    env_cleanup(&e);

    /* a stricter optillm_adaptive_risk (0.05: a first batch of 3, 1-1-1, then 2 more) draws
     * the whole budget of the same contest */
    env_init(&e, BODY(",\"optillm_adaptive_risk\":0.05"), contested);
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_string_equal(e.out.text, "So 41.");
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 0, 1, "self_consistency/sample", 3, 1.0, -1);
    check_round(&e, 1, 1, "self_consistency/sample", 2, 1.0, -1);
    check_usage(&e);
    env_cleanup(&e);

    /* mv, budget 6: 1-1 after 2, then 3 more: 3-2 with one left can at worst tie (1/6) */
    env_init(&e, BODY(""), mv_rows);
    assert_int_equal(env_run(&e, &approach_majority_voting), PX_OK);
    assert_string_equal(e.out.text, "42");
    assert_int_equal(e.fake.rounds, 2);
    check_round(&e, 0, 1, "majority_voting/sample", 2, 0.6, -1);
    check_round(&e, 1, 1, "majority_voting/sample", 3, 0.6, -1);
    check_usage(&e);
    env_cleanup(&e);

    /* the request's optillm_adaptive 0: all 5 at once */
    env_init(&e, BODY(",\"optillm_adaptive\":0"), contested);
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_int_equal(e.fake.rounds, 1);
    check_round(&e, 0, 1, "self_consistency/sample", 5, 1.0, -1);
    env_cleanup(&e);

    /* the second round fails: the vote is over the first round's samples */
    env_init(&e, BODY(",\"optillm_samples\":4"), later_fails);
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_string_equal(e.out.text, C41);
    assert_int_equal(e.fake.rounds, 2);
    check_usage(&e);
    env_cleanup(&e);
}

/* Per-request budgets over the fake transport: the helpers, bon's fewer samples, the tenant's
 * ceiling, and the hard cap below every approach (calls beyond it fail unsent). */
static void test_budgets(void **state)
{
    static const struct row sc_rows[] = {
        {"self_consistency/sample", NULL, A42, NULL},
        {"self_consistency/sample", NULL, C41, NULL},
        {"self_consistency/sample", NULL, "The answer is 7.", NULL},
        {"self_consistency/sample", NULL, "The answer is 8.", NULL},
        {"self_consistency/sample", NULL, "The answer is 9.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    /* no budget */
    env_init(&e, BODY(""), bon_rows);
    assert_true(llm_budget_calls_left(&e.ctx) == LONG_MAX);
    assert_true(llm_budget_tokens_left(&e.ctx) == LONG_MAX);
    assert_int_equal(llm_budget_samples(&e.ctx, 5, 1, 0), 5);
    env_cleanup(&e);

    /* bon within 3 calls: 2 samples, 2 ratings */
    env_init(&e, BODY(",\"optillm_max_calls\":3"), bon_rows);
    assert_int_equal(llm_budget_calls_left(&e.ctx), 3);
    assert_int_equal(llm_budget_samples(&e.ctx, 3, 1, 0), 2);
    assert_int_equal(llm_budget_samples(&e.ctx, 3, 0, 2), 3);
    assert_int_equal(llm_budget_samples(&e.ctx, 3, 0, 3), 0);
    assert_int_equal(env_run(&e, &approach_bon), PX_OK);
    assert_int_equal(e.ctx.usage.calls, 3);
    check_round(&e, 0, 1, "bon/sample", 2, 1.0, -1);
    assert_string_equal(e.ctx.budget_note, "samples=2/3");
    env_cleanup(&e);

    /* the tenant's limit caps a larger request budget; without n each sample is a call */
    env_init(&e, BODY(",\"optillm_max_calls\":10"), bon_rows);
    e.ctx.budget_tenant_calls = 4;
    e.fake.n_support = 0;
    assert_int_equal(llm_budget_calls_left(&e.ctx), 4);
    assert_int_equal(llm_budget_samples(&e.ctx, 3, 1, 0), 2);
    assert_int_equal(llm_budget_samples(&e.ctx, 3, 0, 0), 3);
    e.ctx.budget_spent.calls = 3; /* an earlier step of the route spent 3 */
    assert_int_equal(llm_budget_calls_left(&e.ctx), 1);
    assert_int_equal(llm_budget_samples(&e.ctx, 3, 1, 0), 1);
    env_cleanup(&e);

    /* the hard cap: fixed-k sc without n gets 2 single calls of 5 */
    env_init(&e, BODY(",\"optillm_max_calls\":2,\"optillm_adaptive\":0"), sc_rows);
    e.fake.n_support = 0;
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_int_equal(e.ctx.usage.calls, 2);
    assert_string_equal(e.ctx.budget_note, "samples=2/5");
    env_cleanup(&e);

    /* the token budget: spent after the first round of a contested vote */
    env_init(&e, BODY(",\"optillm_max_tokens\":1"), sc_rows);
    assert_int_equal(env_run(&e, &approach_self_consistency), PX_OK);
    assert_int_equal(e.fake.rounds, 1);
    assert_true(llm_budget_tokens_left(&e.ctx) <= 0);
    assert_string_equal(e.ctx.budget_note, "samples=2/5");
    env_cleanup(&e);
}

/* ---- re2 ---------------------------------------------------------------------------------- */

#define Q1 "What is 2+2?"
#define MULTI_TURN                                                                                 \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS "\"},"                \
    "{\"role\":\"user\",\"content\":\"" Q1 "\"},{\"role\":\"assistant\",\"content\":\"4.\"},"      \
    "{\"role\":\"user\",\"content\":\"" Q "\"}]}"

static const struct row re2_rows[] = {
    {"re2/final", NULL, "The answer is 42.", NULL},
    {NULL, NULL, NULL, NULL},
};

static void test_re2_structure(void **state)
{
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        struct env e;
        const struct fake_record *r;
        const char *last;
        char want[512];

        env_init(&e, MULTI_TURN, re2_rows);
        e.ctx.stream_final = stream;
        assert_int_equal(env_run(&e, &approach_re2), PX_OK);
        assert_string_equal(e.out.text, "The answer is 42.");
        assert_int_equal(e.fake.rounds, 1);
        assert_int_equal(e.fake.ncalls, 1);
        r = fake_llm_call(&e.fake, 0, 0);
        check_call(r, "re2/final", 1, NAN, -1, stream);
        /* earlier turns kept, the last user message rewritten */
        assert_int_equal(r->nmsgs, 4);
        assert_string_equal(r->msgs[0].content, SYS);
        assert_string_equal(r->msgs[1].content, Q1);
        assert_string_equal(r->msgs[2].role, "assistant");
        assert_string_equal(r->msgs[3].role, "user");
        assert_false(r->raw_last);
        last = fake_record_last(r);
        assert_int_equal(fake_count(last, Q), 2);
        assert_int_equal(fake_count(r->text, Q1), 1);
        snprintf(want, sizeof(want), "%s\n%s", Q,
                 prompt_render(e.arena, prompt_get("re2/reread"), "question", Q, NULL));
        assert_string_equal(last, want);
        check_usage(&e);
        env_cleanup(&e);
    }
}

/* A last message with an image stays as sent; the re-read instruction follows it. */
static void test_re2_multipart(void **state)
{
    static const char body[] =
        "{\"model\":\"m\",\"temperature\":0.4,\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"" Q "\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}]}";
    struct env e;
    const struct fake_record *r;

    (void)state;
    env_init(&e, body, re2_rows);
    assert_int_equal(env_run(&e, &approach_re2), PX_OK);
    r = fake_llm_call(&e.fake, 0, 0);
    assert_int_equal(r->nmsgs, 2);
    assert_string_equal(r->msgs[0].content, Q "\n[image_url]");
    assert_string_equal(r->msgs[1].role, "user");
    assert_int_equal(fake_count(r->text, Q), 2);
    assert_true(isnan(r->temperature)); /* the transport applies the client's 0.4 */
    check_usage(&e);
    env_cleanup(&e);
}

static void test_re2_failure(void **state)
{
    static const struct row rows[] = {{"re2/final", NULL, NULL, NULL}, {NULL, NULL, NULL, NULL}};
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.fake.fail_status = 429;
    assert_int_equal(env_run(&e, &approach_re2), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 429);
    check_usage(&e);
    env_cleanup(&e);
}

/* ---- cot_reflection ----------------------------------------------------------------------- */

static void test_cot_structure(void **state)
{
    static const struct row rows[] = {
        {"cot_reflection/final", NULL, "<thinking>6*7</thinking><output>42</output>", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct {
        const char *body;
        double temp;
        long max_tokens;
        bool stream;
    } cases[] = {
        {BODY(""), 0.6, 4096, false},
        {BODY(",\"temperature\":0.2,\"max_tokens\":100"), 0.2, 100, true},
        {BODY(",\"max_completion_tokens\":7000"), 0.6, 7000, false},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        struct env e;
        const struct fake_record *r;

        env_init(&e, cases[i].body, rows);
        e.ctx.stream_final = cases[i].stream;
        assert_int_equal(env_run(&e, &approach_cot_reflection), PX_OK);
        assert_string_equal(e.out.text, "42");
        assert_int_equal(e.fake.rounds, 1);
        r = fake_llm_call(&e.fake, 0, 0);
        check_call(r, "cot_reflection/final", 1, cases[i].temp, cases[i].max_tokens,
                   cases[i].stream);
        assert_int_equal(r->filter, LLM_FILTER_OUTPUT);
        /* one system message: the client's prompt, then our instructions */
        assert_int_equal(r->nmsgs, 2);
        assert_string_equal(r->msgs[0].role, "system");
        assert_ptr_equal(strstr(r->msgs[0].content, SYS), r->msgs[0].content);
        assert_non_null(strstr(r->msgs[0].content, "<output>"));
        assert_int_equal(fake_count(r->text, SYS), 1);
        assert_string_equal(r->msgs[1].content, Q);
        assert_true(r->raw_last);
        check_usage(&e);
        env_cleanup(&e);
    }
}

static void test_cot_extract(void **state)
{
    static const struct {
        const char *reply;
        const char *finish;
        bool full;
        const char *want;
        const char *want_finish;
    } cases[] = {
        {"<thinking>x</thinking>\n<output>\n The answer is 42.\n</output>", NULL, false,
         "The answer is 42.", "stop"},
        {"<thinking>x</thinking><output>42 and more", "length", false, "42 and more", "length"},
        {"no tags at all, 42\n", NULL, false, "no tags at all, 42", "stop"},
        {"", NULL, false, "", "stop"},
        {"<output></output>", NULL, false, "", "stop"},
        {"<output>first</output> then <output>second</output>", NULL, false, "first", "stop"},
        {"<thinking>t</thinking><output>42</output>", NULL, true,
         "<thinking>t</thinking><output>42</output>", "stop"},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct row rows[] = {
            {"cot_reflection/final", NULL, cases[i].reply, cases[i].finish},
            {NULL, NULL, NULL, NULL},
        };
        struct env e;

        env_init(&e, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                 rows);
        e.cfg.return_full_response = cases[i].full;
        assert_int_equal(env_run(&e, &approach_cot_reflection), PX_OK);
        assert_string_equal(e.out.text, cases[i].want);
        assert_string_equal(e.out.finish_reason, cases[i].want_finish);
        /* without a client system prompt, ours starts with the instructions */
        assert_false(isspace((unsigned char)fake_llm_call(&e.fake, 0, 0)->msgs[0].content[0]));
        assert_int_equal(fake_llm_call(&e.fake, 0, 0)->filter,
                         cases[i].full ? LLM_FILTER_NONE : LLM_FILTER_OUTPUT);
        env_cleanup(&e);
    }
}

static void test_cot_failure(void **state)
{
    static const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct env e;

    (void)state;
    env_init(&e, BODY(""), rows);
    e.fake.fail_status = 0;
    assert_int_equal(env_run(&e, &approach_cot_reflection), PX_ETIMEDOUT);
    assert_int_equal(px_http_status(&e.err), 504);
    check_usage(&e);
    env_cleanup(&e);
}

/* ---- the runner --------------------------------------------------------------------------- */

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
        cmocka_unit_test(test_registry_rows),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_option_out_of_range),
        cmocka_unit_test(test_prompt_texts),
        cmocka_unit_test(test_bon_structure),
        cmocka_unit_test(test_bon_client_params),
        cmocka_unit_test(test_bon_rating_formats),
        cmocka_unit_test(test_bon_failed_ratings),
        cmocka_unit_test(test_bon_tie_break_by_content),
        cmocka_unit_test(test_bon_n_refused),
        cmocka_unit_test(test_bon_n_ignored),
        cmocka_unit_test(test_bon_partial_samples),
        cmocka_unit_test(test_bon_all_samples_fail),
        cmocka_unit_test(test_bon_option),
        cmocka_unit_test(test_bon_empty_samples),
        cmocka_unit_test(test_moa_structure),
        cmocka_unit_test(test_moa_client_temperature),
        cmocka_unit_test(test_moa_order_independent),
        cmocka_unit_test(test_moa_critique_outcomes),
        cmocka_unit_test(test_moa_one_candidate),
        cmocka_unit_test(test_moa_failures),
        cmocka_unit_test(test_sc_structure),
        cmocka_unit_test(test_sc_majority),
        cmocka_unit_test(test_sc_text_groups),
        cmocka_unit_test(test_sc_truncated),
        cmocka_unit_test(test_sc_partial_failure),
        cmocka_unit_test(test_mv_structure),
        cmocka_unit_test(test_mv_votes),
        cmocka_unit_test(test_mv_failure),
        cmocka_unit_test(test_vote_adaptive),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_re2_structure),
        cmocka_unit_test(test_re2_multipart),
        cmocka_unit_test(test_re2_failure),
        cmocka_unit_test(test_cot_structure),
        cmocka_unit_test(test_cot_extract),
        cmocka_unit_test(test_cot_failure),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
