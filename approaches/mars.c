/* mars.c: multi-agent reasoning. Agents at different temperatures solve the problem in
 * parallel; each solution is checked by other agents (never its author), in parallel; the
 * authors of rejected solutions improve them with the reviews and the new versions are checked
 * again, until a solution passes every check, the iterations run out or the call budget
 * (mars_max_calls) would be exceeded. The answer is a verified solution, else the answer most
 * solutions agree on, else one synthesis of all solutions (streamed to the client).
 * At the defaults: 9 calls and 2 rounds when a first solution passes, at most 37 calls and 9
 * rounds (explore, verify, 3 x (improve, verify), synthesis).
 *
 * Differences from OptiLLM's mars (shared/approaches.md 2.15):
 * - Cross-verification works: verifier = author + 1 + (pass mod (agents - 1)), so a solution
 *   is always checked by other agents, and the verifications of a solution run in parallel
 *   (OptiLLM compares an int with a string, so agent 0 verifies everything, one call after
 *   another). The improvement step exists (OptiLLM's finds no author and makes no calls; its
 *   loop only re-verifies) and gives the author the reviewers' reports.
 * - Bounded: every stage is planned against mars_max_calls (one call kept for the synthesis),
 *   and the loop stops as soon as a solution is verified. OptiLLM makes ~35 to ~180 calls.
 * - The RSA aggregation and strategy-network phases are left out: their solutions could never
 *   be verified in OptiLLM (their ids do not match), and they add about 12 calls and 5 rounds.
 * - Usage is every call's prompt and completion tokens (OptiLLM reports reasoning tokens only,
 *   often 0). No OpenRouter "reasoning" field and no max_tokens of 64000 are sent: the
 *   client's max_tokens applies, else the provider's default (OptiLLM's 64000 fails on models
 *   with smaller output limits, and its errors could become the answer with HTTP 200).
 * - Verdicts are read from a "VERDICT:" line (also "not correct", "partially correct"); a
 *   solution cut off by the length limit is not sent for review but improved directly.
 * - The client's system prompt is passed on as instructions (OptiLLM ignores it); the answer
 *   is the solution's text, without OptiLLM's <think> wrapping and its answer-cleaning
 *   heuristics (which treat any text containing "for " as code).
 * - Choices depend on content only: the majority vote uses answer.h keys (numbers by value),
 *   ties go to more passed checks, a complete text, a shorter one, then byte order.
 *
 * Request fields: the agents set temperature (above); every other client field reaches every
 * call unchanged (llm.h). Requests with tools are refused (400, approach.h .tools);
 * response_format (json) is refused too: an answer may be an intermediate text. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "buf.h"

#define VERIFY_TEMPERATURE 0.1
#define SYNTH_TEMPERATURE  0.3
#define REPORT_MAX         8192 /* bytes of one review passed back to the author */

static const double agent_temperature[] = {0.3, 0.6, 1.0}; /* OptiLLM's, by agent mod 3 */

enum verdict { V_NONE = 0, V_CORRECT, V_INCORRECT, V_INCOMPLETE };

struct sol {
    int agent; /* author, 0-based */
    const char *text;
    const char *finish;
    size_t len;
    const char *key;      /* extracted answer key, or "" */
    int checks;           /* verifications asked for this version */
    int passes;           /* of which said CORRECT */
    bool verified;        /* checks > 0 and every one passed */
    const char *feedback; /* reviews of this version that did not pass, or NULL */
};

struct mars {
    struct approach_ctx *ctx;
    int agents;
    int passes;
    int budget;  /* calls left */
    int reserve; /* calls kept for the synthesis */
    const char *problem;
    const char *instructions; /* rendered mars/instructions, or "" */
    const char *system;       /* mars/system */
    struct sol *s;
    int n;
};

static const struct approach_option mars_options[];

/* ---- helpers ------------------------------------------------------------------------------ */

/* The option's value, clamped to its row's range (approach_opt_row). */
static double opt(const struct approach_ctx *ctx, const char *name)
{
    return approach_opt_row(ctx, mars_options, name);
}

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool cut_off(const struct sol *s)
{
    return s->finish && strcmp(s->finish, "length") == 0;
}

static bool starts_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return false;
    return true;
}

static const char *num(struct approach_ctx *ctx, int v)
{
    return arena_printf(ctx->arena, "%d", v);
}

static double temperature_of(int agent)
{
    return agent_temperature[agent % (int)PX_ARRAY_LEN(agent_temperature)];
}

/* At most max bytes of s, cut at a UTF-8 character boundary, in the arena. */
static const char *capped(struct arena *a, const char *s, size_t max)
{
    size_t len = strlen(s);

    if (len <= max)
        return s;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return arena_printf(a, "%.*s\n[...]", (int)max, s);
}

static void set_text(struct approach_ctx *ctx, struct sol *s, const struct llm_choice *c)
{
    struct answer a = answer_extract(ctx->arena, c->text, ANSWER_NONE);

    s->text = c->text;
    s->finish = c->finish_reason;
    s->len = strlen(c->text);
    s->key = cut_off(s) ? "" : answer_key(ctx->arena, &a);
    s->checks = 0;
    s->passes = 0;
    s->verified = false;
    s->feedback = NULL;
}

static void add_call(struct mars *m, struct llm_call *call, const char *user, double temperature,
                     const char *stage)
{
    struct llm_msg *msgs;

    call->nmsgs = llm_msgs2(m->ctx, m->system, user, &msgs);
    call->msgs = msgs;
    call->params = llm_params_default();
    call->params.temperature = temperature;
    call->stage = stage;
}

/* ---- verdicts ----------------------------------------------------------------------------- */

/* The verdict word at p: "incorrect", "incomplete", "not correct", "partially correct",
 * "wrong", "correct" (a whole word). V_NONE when none. */
static enum verdict verdict_word(const char *p)
{
    if (starts_ci(p, "incorrect") || starts_ci(p, "not correct") || starts_ci(p, "wrong"))
        return V_INCORRECT;
    if (starts_ci(p, "incomplete") || starts_ci(p, "partially correct") ||
        starts_ci(p, "partly correct"))
        return V_INCOMPLETE;
    if (starts_ci(p, "correct") && !isalpha((unsigned char)p[7]))
        return V_CORRECT;
    return V_NONE;
}

/* A review's verdict: the word after the last "verdict" (same line); else the last
 * upper-case CORRECT / INCORRECT / INCOMPLETE standing alone; V_NONE when there is none. */
static enum verdict parse_verdict(const char *s)
{
    enum verdict v = V_NONE;

    for (const char *p = s; *p; p++) {
        const char *q;
        enum verdict w;

        if (!starts_ci(p, "verdict"))
            continue;
        q = p + strlen("verdict");
        q += strspn(q, " \t:*_#\"'`=-");
        w = verdict_word(q);
        if (w != V_NONE)
            v = w;
    }
    if (v != V_NONE)
        return v;
    for (const char *p = s; *p; p++) {
        static const char *const words[] = {"CORRECT", "INCORRECT", "INCOMPLETE"};

        if (p > s && isalpha((unsigned char)p[-1]))
            continue;
        for (size_t i = 0; i < PX_ARRAY_LEN(words); i++)
            if (strncmp(p, words[i], strlen(words[i])) == 0 &&
                !isalpha((unsigned char)p[strlen(words[i])]))
                v = (enum verdict)(V_CORRECT + (int)i);
    }
    return v;
}

/* ---- stages ------------------------------------------------------------------------------- */

/* Every agent solves the problem: one batch, each agent at its own temperature. */
static int explore(struct mars *m, int agents)
{
    struct approach_ctx *ctx = m->ctx;
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)agents, sizeof(*calls));
    int rc;

    for (int i = 0; i < agents; i++)
        add_call(m, &calls[i],
                 approach_prompt(ctx, "mars/explore", "agent", num(ctx, i + 1), "instructions",
                                 m->instructions, "problem", m->problem, NULL),
                 temperature_of(i), "mars/explore");
    m->budget -= agents;
    rc = llm_batch(ctx, calls, (size_t)agents);
    if (rc < 0)
        return rc;
    m->s = arena_calloc(ctx->arena, (size_t)agents, sizeof(*m->s));
    for (int i = 0; i < agents; i++) {
        const struct llm_reply *r = &calls[i].reply;

        if (r->status != PX_OK || r->nchoices < 1 || blank(r->choices[0].text))
            continue; /* that agent is out */
        m->s[m->n].agent = i;
        set_text(ctx, &m->s[m->n], &r->choices[0]);
        m->n++;
    }
    return PX_OK;
}

/* The agent doing check 'pass' of a solution by 'author': never the author (with 2 or more
 * agents), and a different one for each pass while there are enough agents. */
static int verifier_of(const struct mars *m, int author, int pass)
{
    if (m->agents < 2)
        return author;
    return (author + 1 + pass % (m->agents - 1)) % m->agents;
}

/* Checks the solutions listed in idx[0..k) with up to 'passes' verifications each, all in one
 * batch and within the budget (the first pass of every solution before any second pass). A
 * cut-off solution is not checked: it fails at once. Sets checks, passes, verified and the
 * feedback of the reviews that did not pass. */
static void verify(struct mars *m, const int *idx, int k, int passes)
{
    struct approach_ctx *ctx = m->ctx;
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)(k * passes) + 1, sizeof(*calls));
    int *owner = arena_calloc(ctx->arena, (size_t)(k * passes) + 1, sizeof(*owner));
    int *who = arena_calloc(ctx->arena, (size_t)(k * passes) + 1, sizeof(*who));
    struct buf *fb = arena_calloc(ctx->arena, (size_t)k, sizeof(*fb));
    int avail = m->budget - m->reserve;
    int nc = 0;

    for (int p = 0; p < passes; p++) {
        for (int j = 0; j < k && nc < avail; j++) {
            struct sol *s = &m->s[idx[j]];
            int v = verifier_of(m, s->agent, p);

            if (cut_off(s))
                continue;
            add_call(m, &calls[nc],
                     approach_prompt(ctx, "mars/verify", "verifier", num(ctx, v + 1), "author",
                                     num(ctx, s->agent + 1), "instructions", m->instructions,
                                     "problem", m->problem, "solution", s->text, NULL),
                     VERIFY_TEMPERATURE, "mars/verify");
            owner[nc] = j;
            who[nc] = v;
            s->checks++;
            nc++;
        }
    }
    m->budget -= nc;
    (void)llm_batch(ctx, calls, (size_t)nc); /* a failed check is a check not passed */
    for (int j = 0; j < k; j++)
        buf_init(&fb[j], 0);
    for (int i = 0; i < nc; i++) {
        const struct llm_reply *r = &calls[i].reply;
        const char *t = r->status == PX_OK && r->nchoices > 0 ? r->choices[0].text : NULL;

        if (!t)
            continue;
        if (parse_verdict(t) == V_CORRECT) {
            m->s[idx[owner[i]]].passes++;
        } else if (!blank(t)) {
            buf_printf(&fb[owner[i]], "Review by agent %d:\n%s\n\n", who[i] + 1,
                       capped(ctx->arena, t, REPORT_MAX));
        }
    }
    for (int j = 0; j < k; j++) {
        struct sol *s = &m->s[idx[j]];

        s->verified = s->checks > 0 && s->passes == s->checks;
        if (cut_off(s))
            s->feedback = approach_prompt(ctx, "mars/cutoff", NULL);
        else if (fb[j].len)
            s->feedback = arena_strndup(ctx->arena, buf_cstr(&fb[j]), fb[j].len);
        buf_free(&fb[j]);
    }
}

/* Improvement priority: more passed checks, then byte order. */
static int target_cmp(const void *pa, const void *pb, const struct sol *s)
{
    const struct sol *a = &s[*(const int *)pa];
    const struct sol *b = &s[*(const int *)pb];

    if (a->passes != b->passes)
        return a->passes > b->passes ? -1 : 1;
    return strcmp(a->text, b->text);
}

static void sort_targets(int *t, int k, const struct sol *s)
{
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && target_cmp(&t[j], &t[j - 1], s) < 0; j--) {
            int x = t[j];

            t[j] = t[j - 1];
            t[j - 1] = x;
        }
}

static bool any_verified(const struct mars *m)
{
    for (int i = 0; i < m->n; i++)
        if (m->s[i].verified)
            return true;
    return false;
}

/* One improvement round: the authors of rejected solutions (with reviews) rewrite them in one
 * batch, and the new versions are checked in the next. Returns false when there was nothing to
 * improve or no budget for it. */
static bool improve(struct mars *m)
{
    struct approach_ctx *ctx = m->ctx;
    int *t = arena_calloc(ctx->arena, (size_t)m->n, sizeof(*t));
    struct llm_call *calls;
    int *done;
    int avail = m->budget - m->reserve;
    int passes = m->passes;
    int k = 0;
    int nd = 0;

    for (int i = 0; i < m->n; i++)
        if (!m->s[i].verified && m->s[i].feedback)
            t[k++] = i;
    if (k == 0 || avail < 2)
        return false;
    sort_targets(t, k, m->s);
    if (k > avail / (1 + passes))
        k = avail / (1 + passes);
    if (k == 0) { /* room for one improvement with fewer checks */
        k = 1;
        passes = avail - 1;
    }
    calls = arena_calloc(ctx->arena, (size_t)k, sizeof(*calls));
    done = arena_calloc(ctx->arena, (size_t)k, sizeof(*done));
    for (int j = 0; j < k; j++) {
        const struct sol *s = &m->s[t[j]];

        add_call(m, &calls[j],
                 approach_prompt(ctx, "mars/improve", "agent", num(ctx, s->agent + 1),
                                 "instructions", m->instructions, "problem", m->problem, "solution",
                                 s->text, "feedback", s->feedback, NULL),
                 temperature_of(s->agent), "mars/improve");
    }
    m->budget -= k;
    (void)llm_batch(ctx, calls, (size_t)k); /* a failed rewrite keeps the old version */
    for (int j = 0; j < k; j++) {
        const struct llm_reply *r = &calls[j].reply;

        if (r->status != PX_OK || r->nchoices < 1 || blank(r->choices[0].text))
            continue;
        set_text(ctx, &m->s[t[j]], &r->choices[0]);
        done[nd++] = t[j];
    }
    if (nd == 0)
        return false;
    verify(m, done, nd, passes);
    return true;
}

/* ---- the answer --------------------------------------------------------------------------- */

static int support(const struct mars *m, const struct sol *s)
{
    int c = 0;

    for (int i = 0; i < m->n && *s->key; i++)
        c += strcmp(m->s[i].key, s->key) == 0;
    return c;
}

/* Is a the better answer: passed checks, shared answer, complete, shorter, byte order. */
static bool better(const struct mars *m, const struct sol *a, const struct sol *b)
{
    int sa = support(m, a);
    int sb = support(m, b);

    if (a->passes != b->passes)
        return a->passes > b->passes;
    if (sa != sb)
        return sa > sb;
    if (cut_off(a) != cut_off(b))
        return !cut_off(a);
    if (a->len != b->len)
        return a->len < b->len;
    return strcmp(a->text, b->text) < 0;
}

/* The best solution by better(). */
static const struct sol *best_of(const struct mars *m)
{
    const struct sol *best = &m->s[0];

    for (int i = 1; i < m->n; i++)
        if (better(m, &m->s[i], best))
            best = &m->s[i];
    return best;
}

/* The best verified solution; else the best one carrying an answer that at least 2 solutions
 * share and no other answer matches in number; else NULL. */
static const struct sol *decided(const struct mars *m)
{
    const struct sol *best = NULL;
    int top = 0;
    int second = 0;
    const char *key = NULL;

    for (int i = 0; i < m->n; i++)
        if (m->s[i].verified && (!best || better(m, &m->s[i], best)))
            best = &m->s[i];
    if (best)
        return best;
    for (int i = 0; i < m->n; i++) {
        int c = support(m, &m->s[i]);

        if (c == 0 || (key && strcmp(key, m->s[i].key) == 0))
            continue;
        if (c > top) {
            second = top;
            top = c;
            key = m->s[i].key;
        } else if (c > second) {
            second = c;
        }
    }
    if (top < 2 || top == second)
        return NULL;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->s[i].key, key) == 0 && (!best || better(m, &m->s[i], best)))
            best = &m->s[i];
    return best;
}

static int sol_cmp(const void *pa, const void *pb)
{
    const struct sol *a = pa;
    const struct sol *b = pb;

    if (a->passes != b->passes)
        return a->passes > b->passes ? -1 : 1;
    return strcmp(a->text, b->text);
}

/* One synthesis of every solution (streamed when asked). On failure, the best solution
 * unless part of the synthesis may already have been streamed. */
static int synthesize(struct mars *m, struct chat_result *out)
{
    struct approach_ctx *ctx = m->ctx;
    struct sol *s = arena_calloc(ctx->arena, (size_t)m->n, sizeof(*s));
    const struct sol *best = best_of(m);
    struct llm_params p = llm_params_default();
    struct llm_choice final;
    struct llm_msg *msgs;
    size_t nmsgs;
    struct buf b;
    const char *user;
    int rc;

    memcpy(s, m->s, (size_t)m->n * sizeof(*s));
    qsort(s, (size_t)m->n, sizeof(*s), sol_cmp);
    buf_init(&b, 0);
    for (int i = 0; i < m->n; i++)
        buf_printf(&b, "<solution %d: %d of %d checks passed%s>\n%s\n</solution %d>\n\n", i + 1,
                   s[i].passes, s[i].checks, cut_off(&s[i]) ? ", cut off" : "", s[i].text, i + 1);
    user = approach_prompt(ctx, "mars/synthesize", "instructions", m->instructions, "problem",
                           m->problem, "solutions", arena_strndup(ctx->arena, buf_cstr(&b), b.len),
                           NULL);
    buf_free(&b);
    nmsgs = llm_msgs2(ctx, m->system, user, &msgs);
    p.temperature = SYNTH_TEMPERATURE;
    rc = llm_final(ctx, msgs, nmsgs, &p, "mars/synthesize", &final);
    m->budget--;
    if (rc < 0 && ctx->stream_final)
        return rc; /* llm_final does not say whether part of it reached the client */
    if (rc < 0 || (blank(final.text) && !ctx->streamed)) {
        out->text = best->text;
        out->finish_reason = cut_off(best) ? "length" : "stop";
        return PX_OK;
    }
    out->text = final.text;
    out->finish_reason =
        final.finish_reason && strcmp(final.finish_reason, "length") == 0 ? "length" : "stop";
    return PX_OK;
}

static int mars_run(struct approach_ctx *ctx, struct chat_result *out)
{
    struct mars m = {.ctx = ctx};
    const char *system = chat_system(ctx->arena, ctx->req);
    int iterations = (int)opt(ctx, "mars_max_iterations");
    int explorers;
    int *all;
    const struct sol *pick;
    int rc;

    m.agents = (int)opt(ctx, "mars_agents");
    m.passes = (int)opt(ctx, "mars_verify_passes");
    m.budget = (int)opt(ctx, "mars_max_calls");
    m.problem = chat_last_user(ctx->req);
    m.instructions =
        *system ? approach_prompt(ctx, "mars/instructions", "system", system, NULL) : "";
    m.system = approach_prompt(ctx, "mars/system", NULL);
    explorers = m.agents < m.budget ? m.agents : m.budget;
    rc = explore(&m, explorers);
    if (rc < 0)
        return rc;
    if (m.n == 0) { /* every agent answered with nothing */
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    m.reserve = m.n > 1 && m.budget > 0 ? 1 : 0;
    all = arena_calloc(ctx->arena, (size_t)m.n, sizeof(*all));
    for (int i = 0; i < m.n; i++)
        all[i] = i;
    verify(&m, all, m.n, m.passes);
    for (int it = 0; it < iterations && !any_verified(&m); it++)
        if (!improve(&m))
            break;
    pick = decided(&m);
    if (!pick && (m.n == 1 || m.budget <= 0))
        pick = best_of(&m); /* nothing to synthesise, or no call left for it */
    if (!pick)
        return synthesize(&m, out);
    out->text = pick->text;
    out->finish_reason = cut_off(pick) ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option mars_options[] = {
    {.name = "mars_agents",
     .def = 3,
     .min = 2,
     .max = 8,
     .integer = true,
     .help = "mars agents solving in parallel (temperatures 0.3, 0.6, 1.0, repeating)"},
    {.name = "mars_verify_passes",
     .def = 2,
     .min = 1,
     .max = 4,
     .integer = true,
     .help = "checks by other agents a mars solution must all pass"},
    {.name = "mars_max_iterations",
     .def = 3,
     .min = 0,
     .max = 10,
     .integer = true,
     .help = "mars improve-and-recheck rounds at most"},
    {.name = "mars_max_calls",
     .def = 40,
     .min = 1,
     .max = 200,
     .integer = true,
     .help = "upstream calls mars may make per request"},
    {.name = NULL},
};

const struct approach approach_mars = {
    .slug = "mars",
    .aliases = NULL,
    .run = mars_run,
    .prompts = (const char *const[]){"mars/system", "mars/explore", "mars/verify", "mars/improve",
                                     "mars/cutoff", "mars/synthesize", "mars/instructions", NULL},
    .options = mars_options,
    .summary = "Multi-agent reasoning: agents at different temperatures, cross-verification, "
               "improvement of rejected solutions, then a verified, majority or synthesised "
               "answer",
    .calls = 37,
    .rounds = 9,
};
