/* rstar.c: rStar-style search. R rollouts grow reasoning trajectories of D+1 steps, all of
 * them one step per round (one batch per depth level); each step's kind of move (one step,
 * finish, sub-question, re-examine, rephrase) is chosen by UCB over how well each kind has
 * done so far in this request. Then every trajectory that reached an answer is checked for
 * mutual consistency (one batch: the model finishes the trajectory from a random prefix and
 * must reach the same answer), and the answers are voted on with weights from confidence and
 * consistency. The answer is the winning trajectory's final reasoning, not a bare number:
 * D+2 rounds and R(D+1)+R calls (5 and 25 at the defaults).
 *
 * Differences from OptiLLM's rstar.py (shared/approaches.md 2.12):
 * - It returned a bare number ("42") from a fixed \d+ pattern (so "-4" became "4" and "3.5"
 *   became "5"); ours returns the answering step's full text and extracts answers with
 *   answer.h (signs, decimals, fractions, \boxed, choices, text).
 * - Its discriminator compared word sets (Jaccard > 0.7, which almost never passed) and the
 *   final choice then fell to the first trajectory in DFS order; ours compares the
 *   discriminator's final answer with the trajectory's, and votes.
 * - Its checks ran one after another (5 rounds); ours run in one round. Its rollouts each
 *   started from a root with no children, so rstar_c had no effect; ours use c in the UCB
 *   choice of moves, with virtual visits so that rollouts of one level spread over the moves
 *   (no duplicate root expansions while moves are untried). The last step of every rollout
 *   is "finish", so every trajectory ends with a worked answer.
 * - Each step sees the whole trajectory so far (OptiLLM showed only the previous step), the
 *   client's conversation is kept, its temperature honoured, null content cannot crash it,
 *   random choices come from a generator seeded with the request's content (FNV-1a of the
 *   system prompt and last user message), and ties are broken by content.
 *
 * Request fields: the steps set temperature and max_tokens; every other client field reaches
 * every call unchanged (llm.h). Requests with tools are refused (400, approach.h .tools);
 * response_format (json) is refused too: an answer may be an intermediate text. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "buf.h"

#define STEP_TEMPERATURE 0.2 /* OptiLLM's, for every call */
#define STEP_MAX_TOKENS  4096
#define CONF_EXPLICIT    1.0 /* an answer stated as such ("The final answer is", \boxed) */
#define CONF_IMPLICIT    0.5 /* only a number in the text */
#define MC_CONSISTENT    1.0 /* the discriminator reached the same answer */
#define MC_UNCHECKED     0.5 /* its call failed or it reached no answer */
#define MC_INCONSISTENT  0.25
#define UCB_EPS          1e-12

enum move { M_STEP, M_FINISH, M_SUBQUESTION, M_REEXAMINE, M_REPHRASE, M_COUNT };

static const char *const move_prompt[M_COUNT] = {
    "rstar/step", "rstar/finish", "rstar/subquestion", "rstar/reexamine", "rstar/rephrase",
};
static const char *const move_name[M_COUNT] = {
    "step", "finish", "sub-question", "re-examination", "restatement",
};

struct node {
    const char *text;
    const char *finish;
    enum move move;
    struct answer ans;
    bool explicit_answer;
};

struct rollout {
    struct node *nodes; /* D+1 at most */
    int n;
    bool alive;
    int answered;    /* index of the node that holds the trajectory's answer, or -1 */
    const char *key; /* its answer key */
    double weight;   /* confidence x consistency */
    int check;       /* 1 consistent, 0 unchecked, -1 inconsistent */
};

struct search {
    struct approach_ctx *ctx;
    uint64_t rng;
    double c;
    struct rollout *ro;
    int nro;
    double visits[M_COUNT]; /* nodes each move produced so far */
    double value[M_COUNT];  /* and their summed rewards */
};

/* ---- deterministic randomness ------------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* splitmix64: a small, well-mixed generator; the state is the request's seed. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int rng_below(uint64_t *state, int n)
{
    return (int)(rng_next(state) % (uint64_t)n);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool truncated(const struct node *n)
{
    return n->finish && strcmp(n->finish, "length") == 0;
}

/* The first 'count' steps of a trajectory as numbered blocks, or "(none yet)". */
static const char *steps_text(struct approach_ctx *ctx, const struct rollout *r, int count)
{
    struct buf b;
    char *s;

    if (count == 0)
        return "(none yet)";
    buf_init(&b, 0);
    for (int i = 0; i < count; i++)
        buf_printf(&b, "%s<step %d: %s>\n%s\n</step %d>", i ? "\n\n" : "", i + 1,
                   move_name[r->nodes[i].move], r->nodes[i].text, i + 1);
    s = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

static void prepare(struct search *s, struct llm_call *call, const char *prompt_name,
                    const char *steps, const char *stage)
{
    struct approach_ctx *ctx = s->ctx;
    struct llm_msg *msgs;
    const char *user = approach_prompt(ctx, prompt_name, "steps", steps, NULL);

    call->nmsgs =
        llm_msgs_conversation(ctx, approach_prompt(ctx, "rstar/system", NULL), user, &msgs);
    call->msgs = msgs;
    call->params = llm_params_default();
    call->params.temperature =
        isnan(ctx->req->temperature) ? STEP_TEMPERATURE : ctx->req->temperature;
    call->params.max_tokens = STEP_MAX_TOKENS;
    call->stage = stage;
}

/* ---- the search --------------------------------------------------------------------------- */

/* UCB choice of the next move, counting the moves already handed out in this level as
 * visits with no reward (virtual loss), so that parallel rollouts spread out. Untried moves
 * come first; ties are drawn at random. */
static enum move choose_move(struct search *s, const double *pending)
{
    double total = 0;
    double best = -INFINITY;
    enum move tied[M_COUNT];
    int ntied = 0;

    for (int m = 0; m < M_COUNT; m++)
        total += s->visits[m] + pending[m];
    for (int m = 0; m < M_COUNT; m++) {
        double n = s->visits[m] + pending[m];
        double u = n == 0 ? INFINITY : s->value[m] / n + s->c * sqrt(log(total + 1) / n);

        if (u > best + UCB_EPS) { /* INFINITY + eps is INFINITY: untried moves tie */
            best = u;
            ntied = 0;
        }
        if (u >= best - UCB_EPS)
            tied[ntied++] = (enum move)m;
    }
    return tied[rng_below(&s->rng, ntied)];
}

/* Reads a new step's answer and its reward: 1 for a stated answer, 0.5 for a bare number. */
static double read_node(struct approach_ctx *ctx, struct node *n)
{
    n->ans = answer_extract(ctx->arena, n->text, ANSWER_NONE);
    n->explicit_answer = n->ans.kind != ANSWER_NONE &&
                         answer_extract(ctx->arena, n->text, ANSWER_TEXT).kind != ANSWER_NONE;
    if (n->ans.kind == ANSWER_NONE)
        return 0;
    return n->explicit_answer ? CONF_EXPLICIT : CONF_IMPLICIT;
}

/* One depth level: every live rollout gets one new step, all in one batch. Returns the
 * number of calls that succeeded, or the batch's negative status when all failed. */
static int grow(struct search *s, bool last)
{
    struct approach_ctx *ctx = s->ctx;
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)s->nro, sizeof(*calls));
    int *who = arena_calloc(ctx->arena, (size_t)s->nro, sizeof(*who));
    enum move *moves = arena_calloc(ctx->arena, (size_t)s->nro, sizeof(*moves));
    double pending[M_COUNT] = {0};
    size_t m = 0;
    int rc;

    for (int i = 0; i < s->nro; i++) {
        struct rollout *r = &s->ro[i];

        if (!r->alive)
            continue;
        moves[m] = last ? M_FINISH : choose_move(s, pending);
        pending[moves[m]] += 1;
        prepare(s, &calls[m], move_prompt[moves[m]], steps_text(ctx, r, r->n), "rstar/step");
        who[m++] = i;
    }
    if (m == 0)
        return 0;
    rc = llm_batch(ctx, calls, m);
    for (size_t j = 0; j < m; j++) {
        struct rollout *r = &s->ro[who[j]];
        const struct llm_reply *rep = &calls[j].reply;
        struct node *n;
        double reward;

        /* A failed call or an empty step ends this rollout; its earlier steps still count. */
        if (rep->status != PX_OK || rep->nchoices < 1 || blank(rep->choices[0].text)) {
            r->alive = false;
            continue;
        }
        n = &r->nodes[r->n++];
        n->text = rep->choices[0].text;
        n->finish = rep->choices[0].finish_reason;
        n->move = moves[j];
        reward = read_node(ctx, n);
        s->visits[n->move] += 1;
        s->value[n->move] += reward;
    }
    return rc;
}

/* The node whose answer stands for the trajectory: the last stated answer, else the last
 * bare number. */
static int answering_node(const struct rollout *r)
{
    for (int i = r->n - 1; i >= 0; i--)
        if (r->nodes[i].explicit_answer)
            return i;
    for (int i = r->n - 1; i >= 0; i--)
        if (r->nodes[i].ans.kind != ANSWER_NONE)
            return i;
    return -1;
}

/* Mutual consistency: for every trajectory with an answer, the model finishes the trajectory
 * from a random prefix of its steps; agreeing on the answer makes it consistent. One batch. */
static void check_all(struct search *s)
{
    struct approach_ctx *ctx = s->ctx;
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)s->nro, sizeof(*calls));
    int *who = arena_calloc(ctx->arena, (size_t)s->nro, sizeof(*who));
    size_t m = 0;

    for (int i = 0; i < s->nro; i++) {
        struct rollout *r = &s->ro[i];

        r->answered = answering_node(r);
        if (r->answered < 0)
            continue;
        r->key = answer_key(ctx->arena, &r->nodes[r->answered].ans);
        prepare(s, &calls[m], "rstar/check", steps_text(ctx, r, rng_below(&s->rng, r->n)),
                "rstar/check");
        who[m++] = i;
    }
    if (m == 0)
        return;
    (void)llm_batch(ctx, calls, m); /* a failed check leaves its trajectory unchecked */
    for (size_t j = 0; j < m; j++) {
        struct rollout *r = &s->ro[who[j]];
        const struct llm_reply *rep = &calls[j].reply;
        struct answer a;

        if (rep->status != PX_OK || rep->nchoices < 1)
            continue;
        a = answer_extract(ctx->arena, rep->choices[0].text, ANSWER_NONE);
        if (a.kind != ANSWER_NONE)
            r->check = answer_equal(&a, &r->nodes[r->answered].ans) ? 1 : -1;
    }
}

static double weight_of(const struct rollout *r)
{
    double conf = r->nodes[r->answered].explicit_answer ? CONF_EXPLICIT : CONF_IMPLICIT;
    double mc = r->check > 0 ? MC_CONSISTENT : r->check < 0 ? MC_INCONSISTENT : MC_UNCHECKED;

    return conf * mc;
}

/* Is a a better representative of its answer than b: weight, stated answer, complete, then
 * shorter text, then byte order. */
static bool better_rollout(const struct rollout *a, const struct rollout *b)
{
    const struct node *x = &a->nodes[a->answered];
    const struct node *y = &b->nodes[b->answered];
    size_t lx = strlen(x->text);
    size_t ly = strlen(y->text);

    if (a->weight != b->weight)
        return a->weight > b->weight;
    if (x->explicit_answer != y->explicit_answer)
        return x->explicit_answer;
    if (truncated(x) != truncated(y))
        return !truncated(x);
    if (lx != ly)
        return lx < ly;
    return strcmp(x->text, y->text) < 0;
}

struct tally {
    const char *key;
    double score;
    int count;
    int consistent;
    int best; /* rollout index of its representative */
};

static bool better_tally(const struct tally *a, const struct tally *b)
{
    if (fabs(a->score - b->score) > UCB_EPS)
        return a->score > b->score;
    if (a->count != b->count)
        return a->count > b->count;
    if (a->consistent != b->consistent)
        return a->consistent > b->consistent;
    return strcmp(a->key, b->key) < 0;
}

/* The consistency-weighted vote over the trajectories' answers. Returns the winning
 * representative rollout, or NULL when no trajectory reached an answer. */
static const struct rollout *vote(struct search *s)
{
    struct tally *t = arena_calloc(s->ctx->arena, (size_t)s->nro, sizeof(*t));
    int nt = 0;
    int win = -1;

    for (int i = 0; i < s->nro; i++) {
        struct rollout *r = &s->ro[i];
        int j;

        if (r->answered < 0)
            continue;
        r->weight = weight_of(r);
        for (j = 0; j < nt; j++)
            if (strcmp(t[j].key, r->key) == 0)
                break;
        if (j == nt)
            t[nt++] = (struct tally){.key = r->key, .best = i};
        t[j].score += r->weight;
        t[j].count++;
        t[j].consistent += r->check > 0;
        if (better_rollout(r, &s->ro[t[j].best]))
            t[j].best = i;
    }
    for (int j = 0; j < nt; j++)
        if (win < 0 || better_tally(&t[j], &t[win]))
            win = j;
    return win < 0 ? NULL : &s->ro[t[win].best];
}

/* No trajectory reached an answer: the last step of the longest one (then the shorter text,
 * then byte order), or NULL when no step exists at all. */
static const struct node *fallback(const struct search *s)
{
    const struct node *best = NULL;
    int best_n = 0;

    for (int i = 0; i < s->nro; i++) {
        const struct rollout *r = &s->ro[i];
        const struct node *leaf;

        if (r->n == 0)
            continue;
        leaf = &r->nodes[r->n - 1];
        if (!best || r->n > best_n ||
            (r->n == best_n &&
             (strlen(leaf->text) < strlen(best->text) ||
              (strlen(leaf->text) == strlen(best->text) && strcmp(leaf->text, best->text) < 0)))) {
            best = leaf;
            best_n = r->n;
        }
    }
    return best;
}

static int rstar_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int depth = (int)approach_opt(ctx, "rstar_max_depth");
    struct search s;
    const struct rollout *win;
    const struct node *pick;

    memset(&s, 0, sizeof(s));
    s.ctx = ctx;
    s.c = approach_opt(ctx, "rstar_c");
    s.nro = (int)approach_opt(ctx, "rstar_num_rollouts");
    s.nro = s.nro < 1 ? 1 : s.nro;
    depth = depth < 0 ? 0 : depth;
    s.rng = fnv1a(fnv1a(0xcbf29ce484222325ULL, chat_system(ctx->arena, ctx->req)), "\n");
    s.rng = fnv1a(s.rng, chat_last_user(ctx->req));
    s.ro = arena_calloc(ctx->arena, (size_t)s.nro, sizeof(*s.ro));
    for (int i = 0; i < s.nro; i++) {
        s.ro[i].nodes = arena_calloc(ctx->arena, (size_t)depth + 1, sizeof(*s.ro[i].nodes));
        s.ro[i].alive = true;
        s.ro[i].answered = -1;
    }

    /* Levels 0..depth: the root move, 'depth' more, the last one always "finish". */
    for (int level = 0; level <= depth; level++) {
        int rc = grow(&s, level == depth);

        if (rc < 0 && level == 0)
            return rc; /* nothing at all came back */
        if (rc <= 0)
            break;
    }
    check_all(&s);
    win = vote(&s);
    pick = win ? &win->nodes[win->answered] : fallback(&s);
    if (!pick) { /* every first step was empty: so is the answer */
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    out->text = pick->text;
    out->finish_reason = truncated(pick) ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option rstar_options[] = {
    {.name = "rstar_max_depth",
     .def = 3,
     .min = 0,
     .max = 8,
     .integer = true,
     .help = "steps rstar adds to each rollout after its first one"},
    {.name = "rstar_num_rollouts",
     .def = 5,
     .min = 1,
     .max = 16,
     .integer = true,
     .help = "reasoning trajectories rstar grows in parallel"},
    {.name = "rstar_c",
     .def = 1.4,
     .min = 0,
     .max = 10,
     .integer = false,
     .help = "exploration constant of rstar's UCB choice of moves"},
    {.name = NULL},
};

const struct approach approach_rstar = {
    .slug = "rstar",
    .aliases = NULL,
    .run = rstar_run,
    .prompts =
        (const char *const[]){"rstar/system", "rstar/step", "rstar/finish", "rstar/subquestion",
                              "rstar/reexamine", "rstar/rephrase", "rstar/check", NULL},
    .options = rstar_options,
    .summary = "rStar: parallel reasoning rollouts with UCB-chosen moves, a mutual-consistency "
               "check of each, and a weighted vote on their answers",
    .calls = 25,
    .rounds = 5,
};
