/* pvg.c: prover-verifier game. Each round a helpful and a sneaky prover write k solutions each
 * (two n=k calls in one round), a verifier scores all of them (one parallel batch), and
 * between rounds a coach turns the best helpful solution and the most convincing sneaky one
 * into notes for the next round's provers and verifier. The answer is always a helpful
 * solution: 3R-1 rounds, R(2+2k)+R-1 calls (5 rounds and 17 calls at the defaults).
 *
 * Differences from OptiLLM's pvg.py (shared/approaches.md 2.11):
 * - A sneaky (deliberately wrong) solution can never be the answer. Sneaky solutions only
 *   calibrate the verifier: the coach names the error the best-scored one hid, and the next
 *   round's verifier gets those pitfalls; among equally scored helpful solutions, one whose
 *   final answer a sneaky prover also reached (a sneaky answer is meant to be wrong) ranks
 *   below one that more helpful solutions agree on.
 * - The refinement no longer replaces the question: OptiLLM sent its rewrite to the provers
 *   and the verifier, which then solved and graded a different problem. Ours writes notes
 *   that are added to the prompts; the problem stays the client's.
 * - Both provers of a round run at once, all verifications of a round run at once (OptiLLM:
 *   17 sequential calls), and usage is this request's (OptiLLM's counter was a module global
 *   that grew across requests).
 * - Scores parse "Score: 8", "**Score:** 8/10", "Score = 7.5", "8/10"; an unparseable or
 *   failed verification leaves its solution unscored, below any score. Blank solutions are
 *   not verified. Ties are broken by content, never by the arrival order of parallel calls.
 * - The client's conversation goes to the provers as messages; the client's temperature
 *   (when sent) replaces OptiLLM's 0.7 start of the schedule, and its max_tokens the 4096.
 *
 * Request fields: the stages set temperature, max_tokens and n (above); every other client
 * field reaches every call unchanged (llm.h). Requests with tools are refused (400, approach.h
 * .tools); response_format (json) is refused too: an answer may be an intermediate text. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"

#define PROVER_TEMPERATURE 0.7 /* OptiLLM's: max(0.2, 0.7 - 0.1 r) in round r */
#define PROVER_TEMP_STEP   0.1
#define PROVER_TEMP_MIN    0.2
#define PROVER_MAX_TOKENS  4096
#define VERIFY_TEMPERATURE 0.2
#define VERIFY_MAX_TOKENS  1024
#define REFINE_TEMPERATURE 0.5
#define REFINE_MAX_TOKENS  1024
#define UNSCORED           (-1.0)
#define SCORE_GAP          24 /* bytes allowed between "score" and its number */

enum role { HELPFUL = 0, SNEAKY = 1 };

/* Each prover's prompt name, also the stage name of its calls. */
static const char *const prover[2] = {"pvg/helpful", "pvg/sneaky"};

struct sol {
    const char *text;
    const char *finish;
    size_t len;
    enum role role;
    int round;
    double score;    /* 0..10, or UNSCORED */
    const char *key; /* answer key, "" when none was found */
    int net;         /* helpful solutions sharing the answer minus sneaky ones sharing it */
};

struct game {
    struct approach_ctx *ctx;
    int k;                /* solutions per prover and round */
    const char *question; /* the client's last user message */
    const char *system;   /* the client's system prompt, "" if none */
    const char *notes;    /* the coach's notes for the next round, or NULL */
    struct sol *sols;     /* every non-blank solution of every round */
    int nsols;
    bool failed; /* a prover call failed: 'fail' holds the first such reply */
    struct llm_reply fail;
};

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static const char *trimmed(struct arena *a, const char *s)
{
    size_t len;

    while (*s && isspace((unsigned char)*s))
        s++;
    len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    return arena_strndup(a, s, len);
}

static bool truncated(const struct sol *s)
{
    return s->finish && strcmp(s->finish, "length") == 0;
}

/* ---- score parser ------------------------------------------------------------------------- */

static bool starts_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return false;
    return true;
}

/* Reads [-+]digits[.digits] at p. Returns the end, or NULL when p holds no number. */
static const char *scan_number(const char *p, double *out)
{
    double v = 0;
    double scale = 1;
    bool neg = *p == '-';

    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return NULL;
    while (isdigit((unsigned char)*p))
        v = v * 10 + (*p++ - '0');
    if (*p == '.' && isdigit((unsigned char)p[1])) {
        for (p++; isdigit((unsigned char)*p); p++) {
            scale /= 10;
            v += (*p - '0') * scale;
        }
    }
    *out = neg ? -v : v;
    return p;
}

/* The number at p, rescaled to 0..10 when "/D" or "out of D" follows ("7/10", "70/100"). */
static bool scaled_number(const char *p, double *out)
{
    double v;
    double d;
    const char *q = scan_number(p, &v);

    if (!q)
        return false;
    while (*q == ' ' || *q == '*')
        q++;
    if (*q == '/')
        q++;
    else if (strncmp(q, "out of", 6) == 0)
        q += 6;
    else
        q = NULL;
    while (q && *q == ' ')
        q++;
    *out = q && scan_number(q, &d) && d > 0 ? v * 10 / d : v;
    return true;
}

/* The verifier's score: the first "score" (any case) followed on its line by a number, else
 * the first "N/D" fraction, else a reply that starts with a number. Clamped to 0..10;
 * UNSCORED when none is found. The first "score" wins: explanations often mention others
 * ("a score of 10 would need ..."). */
static double parse_score(const char *s)
{
    double v = UNSCORED;
    bool found = false;

    for (const char *p = s; *p && !found; p++) {
        const char *q;

        if (!starts_ci(p, "score"))
            continue;
        q = p + 5;
        for (int gap = 0; *q && *q != '\n' && gap < SCORE_GAP; q++, gap++)
            if (isdigit((unsigned char)*q) || (*q == '-' && isdigit((unsigned char)q[1])))
                break;
        found = (isdigit((unsigned char)*q) || *q == '-') && scaled_number(q, &v);
    }
    for (const char *p = s; *p && !found; p++) {
        double d;
        const char *q;

        if (!isdigit((unsigned char)*p) || (p > s && isdigit((unsigned char)p[-1])))
            continue;
        q = scan_number(p, &d);
        if (q && *q == '/' && isdigit((unsigned char)q[1]))
            found = scaled_number(p, &v);
    }
    if (!found) {
        const char *p = s;

        while (*p && (isspace((unsigned char)*p) || *p == '*' || *p == '#'))
            p++;
        found = scaled_number(p, &v);
    }
    if (!found)
        return UNSCORED;
    return v < 0 ? 0 : v > 10 ? 10 : v;
}

/* ---- ranking ------------------------------------------------------------------------------ */

/* Sets every solution's 'net': how many helpful solutions share its final answer, minus how
 * many sneaky ones do. A sneaky prover is told to reach a wrong result, so agreeing with one
 * is evidence against a helpful solution. */
static void count_agreement(struct game *g)
{
    for (int i = 0; i < g->nsols; i++) {
        struct sol *s = &g->sols[i];

        s->net = 0;
        for (int j = 0; j < g->nsols && *s->key; j++)
            if (strcmp(s->key, g->sols[j].key) == 0)
                s->net += g->sols[j].role == HELPFUL ? 1 : -1;
    }
}

/* Is a a better helpful solution than b: score, agreement, complete over truncated, shorter,
 * then byte order (content only: parallel replies arrive in any order). */
static bool better(const struct sol *a, const struct sol *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    if (a->net != b->net)
        return a->net > b->net;
    if (truncated(a) != truncated(b))
        return !truncated(a);
    if (a->len != b->len)
        return a->len < b->len;
    return strcmp(a->text, b->text) < 0;
}

/* The best solution of 'role' (in 'round', or any round when round < 0), or NULL. */
static const struct sol *best_of(struct game *g, enum role role, int round)
{
    const struct sol *best = NULL;

    count_agreement(g);
    for (int i = 0; i < g->nsols; i++) {
        const struct sol *s = &g->sols[i];

        if (s->role == role && (round < 0 || s->round == round) && (!best || better(s, best)))
            best = s;
    }
    return best;
}

/* Content order within a round: helpful first, then by text. */
static int sol_cmp(const void *pa, const void *pb)
{
    const struct sol *a = pa;
    const struct sol *b = pb;

    if (a->role != b->role)
        return a->role == HELPFUL ? -1 : 1;
    return strcmp(a->text, b->text);
}

/* ---- provers ------------------------------------------------------------------------------ */

/* Does a failed n>1 call say the upstream refuses n? (llama.cpp answers 400 "Only one
 * completion choice is allowed"; others name the parameter.) */
static bool refuses_n(const struct llm_reply *r)
{
    if (r->http_status == 400 || r->http_status == 422)
        return true;
    return r->http_status == 500 && r->error && strstr(r->error, "choice");
}

static void note_failure(struct game *g, const struct llm_reply *r)
{
    if (g->failed)
        return;
    g->failed = true;
    g->fail = *r;
}

static void add_sol(struct game *g, const struct llm_choice *c, enum role role, int round)
{
    struct answer a;
    struct sol *s;

    if (blank(c->text))
        return; /* nothing to verify, and never an answer */
    a = answer_extract(g->ctx->arena, c->text, ANSWER_NONE);
    s = &g->sols[g->nsols++];
    memset(s, 0, sizeof(*s));
    s->text = c->text;
    s->finish = c->finish_reason;
    s->len = strlen(c->text);
    s->role = role;
    s->round = round;
    s->score = UNSCORED;
    s->key = answer_key(g->ctx->arena, &a);
}

/* Both provers of round r at once: two n=k calls, or 2k single calls when the upstream
 * refuses n (and single calls for the missing rest when it returned fewer choices, as
 * llm_sample does for one prompt). Adds the non-blank solutions to g->sols, in content
 * order. Returns the number of prover calls that succeeded. */
static int prove(struct game *g, int round, double temperature, long max_tokens)
{
    struct approach_ctx *ctx = g->ctx;
    struct llm *llm = ctx->llm;
    struct llm_msg *msgs[2];
    size_t nmsgs[2];
    int need[2] = {g->k, g->k};
    int ok = 0;
    int first = g->nsols;
    struct llm_params p = llm_params_default();

    p.temperature = temperature;
    p.max_tokens = max_tokens;
    for (int r = HELPFUL; r <= SNEAKY; r++) {
        const char *system = approach_prompt(ctx, prover[r], NULL);

        if (g->notes)
            system = arena_printf(ctx->arena, "%s\n%s", system,
                                  approach_prompt(ctx, "pvg/notes", "notes", g->notes, NULL));
        nmsgs[r] = llm_msgs_conversation(ctx, system, NULL, &msgs[r]);
    }
    if (g->k > 1 && llm->ops->get_n(llm) != 0) {
        struct llm_call calls[2];
        bool short_reply = false;
        bool refused = false;
        bool full = false;

        memset(calls, 0, sizeof(calls));
        for (int r = HELPFUL; r <= SNEAKY; r++) {
            calls[r].msgs = msgs[r];
            calls[r].nmsgs = nmsgs[r];
            calls[r].params = p;
            calls[r].params.n = g->k;
            calls[r].stage = prover[r];
        }
        (void)llm_batch(ctx, calls, 2); /* each reply is looked at below */
        for (int r = HELPFUL; r <= SNEAKY; r++) {
            const struct llm_reply *rep = &calls[r].reply;

            if (rep->status == PX_OK) {
                int got = rep->nchoices < g->k ? rep->nchoices : g->k;

                ok++;
                for (int i = 0; i < got; i++)
                    add_sol(g, &rep->choices[i], (enum role)r, round);
                need[r] = g->k - got;
                short_reply = short_reply || got < g->k;
                full = full || got == g->k;
            } else if (refuses_n(rep)) {
                refused = true;
            } else {
                need[r] = 0;
                note_failure(g, rep);
            }
        }
        if (short_reply || refused)
            llm->ops->set_n(llm, 0);
        else if (full && llm->ops->get_n(llm) < 0)
            llm->ops->set_n(llm, 1);
    }
    if (need[HELPFUL] + need[SNEAKY] > 0) {
        size_t m = (size_t)(need[HELPFUL] + need[SNEAKY]);
        struct llm_call *calls = arena_calloc(ctx->arena, m, sizeof(*calls));
        size_t i = 0;

        for (int r = HELPFUL; r <= SNEAKY; r++) {
            for (int j = 0; j < need[r]; j++, i++) {
                calls[i].msgs = msgs[r];
                calls[i].nmsgs = nmsgs[r];
                calls[i].params = p;
                calls[i].stage = prover[r];
            }
        }
        (void)llm_batch(ctx, calls, m);
        i = 0;
        for (int r = HELPFUL; r <= SNEAKY; r++) {
            for (int j = 0; j < need[r]; j++, i++) {
                const struct llm_reply *rep = &calls[i].reply;

                if (rep->status == PX_OK && rep->nchoices > 0) {
                    ok++;
                    add_sol(g, &rep->choices[0], (enum role)r, round);
                } else if (rep->status != PX_OK) {
                    note_failure(g, rep);
                }
            }
        }
    }
    qsort(g->sols + first, (size_t)(g->nsols - first), sizeof(*g->sols), sol_cmp);
    return ok;
}

/* ---- verifier and coach ------------------------------------------------------------------- */

/* Scores the solutions of one round (g->sols[first..first+n)) in one parallel batch. A failed
 * or unparseable verification leaves its solution UNSCORED. */
static void verify(struct game *g, int first, int n)
{
    struct approach_ctx *ctx = g->ctx;
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)n, sizeof(*calls));
    const char *vsys = approach_prompt(ctx, "pvg/verify_system", NULL);
    const char *pitfalls = g->notes ? g->notes : "(none yet)";

    for (int i = 0; i < n; i++) {
        struct llm_msg *msgs;
        const char *user =
            approach_prompt(ctx, "pvg/verify", "system", g->system, "question", g->question,
                            "pitfalls", pitfalls, "solution", g->sols[first + i].text, NULL);

        calls[i].nmsgs = llm_msgs2(ctx, vsys, user, &msgs);
        calls[i].msgs = msgs;
        calls[i].params = llm_params_default();
        calls[i].params.temperature = VERIFY_TEMPERATURE;
        calls[i].params.max_tokens = VERIFY_MAX_TOKENS;
        calls[i].stage = "pvg/verify";
    }
    (void)llm_batch(ctx, calls, (size_t)n); /* a failed verification only leaves a gap */
    for (int i = 0; i < n; i++) {
        const struct llm_reply *r = &calls[i].reply;

        if (r->status == PX_OK && r->nchoices > 0)
            g->sols[first + i].score = parse_score(r->choices[0].text);
    }
}

static const char *score_text(struct approach_ctx *ctx, const struct sol *s)
{
    if (!s || s->score == UNSCORED)
        return "not available";
    return arena_printf(ctx->arena, "%g/10", s->score);
}

/* Between rounds: notes on the pitfalls (from the most convincing sneaky solution of this
 * round) and on the weak points of the best helpful solution so far. A failed or empty reply
 * keeps the previous notes. */
static void refine(struct game *g, int round)
{
    struct approach_ctx *ctx = g->ctx;
    const struct sol *best = best_of(g, HELPFUL, -1);
    const struct sol *sneaky = best_of(g, SNEAKY, round);
    struct llm_call call;
    struct llm_msg *msgs;
    const char *user;

    if (!best && !sneaky)
        return;
    user = approach_prompt(ctx, "pvg/refine", "question", g->question, "best",
                           best ? best->text : "(none)", "best_score", score_text(ctx, best),
                           "sneaky", sneaky ? sneaky->text : "(none)", "sneaky_score",
                           score_text(ctx, sneaky), NULL);
    memset(&call, 0, sizeof(call));
    call.nmsgs = llm_msgs2(ctx, NULL, user, &msgs);
    call.msgs = msgs;
    call.params = llm_params_default();
    call.params.temperature = REFINE_TEMPERATURE;
    call.params.max_tokens = REFINE_MAX_TOKENS;
    call.stage = "pvg/refine";
    if (llm_batch(ctx, &call, 1) > 0 && !blank(call.reply.choices[0].text))
        g->notes = trimmed(ctx->arena, call.reply.choices[0].text);
}

/* ---- the game ----------------------------------------------------------------------------- */

static int fail_with(struct game *g)
{
    const struct llm_reply *r = &g->fail;
    const char *msg = r->error && *r->error ? r->error : "upstream call failed";

    if (r->status == PX_EHTTP || r->http_status >= 400)
        return px_fail_http(g->ctx->err, r->http_status, msg);
    return px_fail(g->ctx->err, r->status < 0 ? r->status : PX_EUPSTREAM, NULL, "%s", msg);
}

static int pvg_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int rounds = (int)approach_opt(ctx, "pvg_rounds");
    struct game g;
    const struct sol *best;
    double t0 = isnan(ctx->req->temperature) ? PROVER_TEMPERATURE : ctx->req->temperature;
    long max_tokens = ctx->req->max_tokens > 0 ? ctx->req->max_tokens : PROVER_MAX_TOKENS;

    memset(&g, 0, sizeof(g));
    g.ctx = ctx;
    g.k = (int)approach_opt(ctx, "pvg_solutions");
    g.k = g.k < 1 ? 1 : g.k;
    rounds = rounds < 1 ? 1 : rounds;
    g.question = chat_last_user(ctx->req);
    g.system = chat_system(ctx->arena, ctx->req);
    g.sols = arena_calloc(ctx->arena, (size_t)rounds * 2 * (size_t)g.k, sizeof(*g.sols));

    for (int r = 0; r < rounds; r++) {
        int first = g.nsols;
        double t = t0 - PROVER_TEMP_STEP * r;
        bool helpful = false;

        if (prove(&g, r, t < PROVER_TEMP_MIN ? PROVER_TEMP_MIN : t, max_tokens) == 0)
            break; /* the upstream answered nothing this round: later rounds would not either */
        for (int i = first; i < g.nsols; i++)
            helpful = helpful || g.sols[i].role == HELPFUL;
        /* Sneaky solutions alone are worth verifying only to coach a next round. */
        if (g.nsols > first && (helpful || r + 1 < rounds))
            verify(&g, first, g.nsols - first);
        if (r + 1 < rounds)
            refine(&g, r);
    }
    best = best_of(&g, HELPFUL, -1);
    if (!best) {
        if (g.failed)
            return fail_with(&g);
        /* The helpful prover answered, but only with empty text: so is the answer. */
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    out->text = best->text;
    out->finish_reason = truncated(best) ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option pvg_options[] = {
    {.name = "pvg_rounds",
     .def = 2,
     .min = 1,
     .max = 5,
     .integer = true,
     .help = "prover-verifier rounds played by pvg"},
    {.name = "pvg_solutions",
     .def = 3,
     .min = 1,
     .max = 8,
     .integer = true,
     .help = "solutions per prover (helpful and sneaky) and round in pvg"},
    {.name = NULL},
};

const struct approach approach_pvg = {
    .slug = "pvg",
    .aliases = (const char *const[]){"prover-verifier", "prover_verifier", NULL},
    .run = pvg_run,
    .prompts = (const char *const[]){"pvg/helpful", "pvg/sneaky", "pvg/notes", "pvg/verify_system",
                                     "pvg/verify", "pvg/refine", NULL},
    .options = pvg_options,
    .summary = "Prover-verifier game: helpful and sneaky solutions each round, all scored by a "
               "verifier; the best-scored helpful solution wins",
    .calls = 17,
    .rounds = 5,
};
