/* mcts.c: Monte Carlo tree search over dialogue states. A node is a conversation: the
 * client's, followed by simulated assistant replies (actions) and predicted user messages.
 * Each simulation selects a leaf with UCT (descending the tree), expands it (3 actions in one
 * n=3 call, then the predicted user reply to each, in one batch), picks one new child at random,
 * plays the conversation on for 'depth' more assistant turns, has the model rate the result
 * and backs the rating up to the root. The answer is the root child (a reply to the client's
 * conversation) with the most visits, then the best mean rating.
 *
 * DESIGN. Simulations overlap where this cannot change the outcome, so the search gives
 * exactly what running them one after another would, in fewer rounds. A simulation starts
 * once the one before it has expanded its leaf and chosen its child (the tree's shape and
 * visit counts are then final) and only if its own descent needs no rating still on its way:
 * at a node with an unvisited child it takes an unvisited child (UCT's infinite bonus), which
 * no rating can change; at a node whose children are all visited it waits until none of them
 * has a rating pending. Each simulation draws from its own PRNG stream, seeded from the
 * request's content (FNV-1a of the messages), so its random choices do not depend on how the
 * simulations interleave, and the expanded actions are sorted by content, so they do not
 * depend on the order in which parallel replies arrive. Every round sends all the calls the
 * running simulations are waiting for in one batch. With the defaults (2 simulations, depth
 * 1): 12 calls in 6 rounds.
 *
 * Differences from OptiLLM's mcts.py (shared/approaches.md 2.4): selection descends the
 * tree (OptiLLM looks one level deep only), and the answer is chosen by visits, then mean
 * rating, then content; with the defaults OptiLLM always returned the first of its first
 * three samples and its ratings changed nothing. The simulated conversations include the
 * user's turns (OptiLLM's history held the assistant's replies only). A rollout step samples
 * one reply (OptiLLM sampled three and kept one at random), and the last step's prediction of
 * the next user message, which the rating never sees, is not asked for: 12 calls instead of
 * 14 with the defaults, in 6 rounds instead of 14. The rating is asked for as "Rating: N" out
 * of 10 and read from "Rating: 7", "7/10", "0.7", "70%"; empty replies (no actions) cannot
 * crash it, failed calls are tolerated (a failed prediction becomes a request to go on, a
 * failed rating is neutral), and only a failed first expansion fails the request. The
 * client's temperature and max_tokens, when given, apply to the replies (actions).
 *
 * Request fields: the stages set temperature, max_tokens and n (above); every other client
 * field reaches every call unchanged (llm.h). Requests with tools are refused (400, approach.h
 * .tools); response_format (json) is refused too: an answer may be an intermediate text. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "approach.h"
#include "arena.h"

#define ACTIONS           3 /* replies per expansion (OptiLLM's n=3) */
#define GEN_TEMPERATURE   1.0
#define GEN_MAX_TOKENS    4096
#define APPLY_TEMPERATURE 1.0
#define APPLY_MAX_TOKENS  1024
#define EVAL_TEMPERATURE  0.1
#define EVAL_MAX_TOKENS   256
#define NEUTRAL           0.5 /* the rating of a failed or unreadable evaluation */
#define MAX_TURNS         10  /* OptiLLM: a conversation longer than this is terminal */

struct node {
    struct node *parent;
    struct node **kids; /* sorted by action text */
    int nkids;
    bool expanded;      /* its expansion finished (nkids is 0 when it gave nothing) */
    const char *action; /* the assistant turn that leads here; NULL at the root */
    const char *finish; /* the action's finish_reason */
    const char *query;  /* the user turn after the action; NULL until predicted */
    int depth;          /* assistant turns after the client's conversation */
    int visits;         /* simulations through this node, finished or running */
    int pending;        /* running ones whose rating is not in yet */
    double value;       /* sum of the ratings that are in */
};

/* A simulation's steps, in order. */
enum phase {
    SIM_IDLE,    /* not started */
    SIM_EXPAND,  /* waiting for the actions of 'leaf' */
    SIM_APPLY,   /* waiting for the user's reply to each action */
    SIM_ROLLOUT, /* waiting for one more assistant reply after 'cur' */
    SIM_NEXT,    /* waiting for the user's reply to 'cur' */
    SIM_EVAL,    /* waiting for the rating of 'cur' */
    SIM_DONE
};

struct sim {
    enum phase phase;
    uint64_t rng;
    struct node *leaf;  /* the node being expanded */
    struct node *start; /* the tree node the rating is backed up from */
    struct node *cur;   /* the conversation being played on (start, or beyond it) */
    int steps;          /* rollout replies still to sample */
    struct llm_choice *actions;
    int nactions;
    size_t first; /* its first call in the current round */
    size_t ncalls;
};

struct mcts {
    struct approach_ctx *ctx;
    struct llm_msg *base; /* the client's conversation */
    size_t nbase;
    struct node root;
    int depth;
    double c;
    struct llm_params gen;
    const char *next_prompt;
    const char *eval_prompt;
    const char *go_on; /* the user turn used when a prediction failed */
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

    while (isspace((unsigned char)*s))
        s++;
    len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    return arena_strndup(a, s, len);
}

/* Does s start with the lower-case 'word', in any case? */
static bool starts_ci(const char *s, const char *word)
{
    for (; *word; s++, word++)
        if (tolower((unsigned char)*s) != *word)
            return false;
    return true;
}

static bool contains_ci(const char *s, const char *word)
{
    for (; *s; s++)
        if (starts_ci(s, word))
            return true;
    return false;
}

/* ---- random choices ----------------------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h ^ 0xff; /* a separator, so that "ab"+"c" differs from "a"+"bc" */
}

/* splitmix64 */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int pick(uint64_t *state, int n)
{
    return (int)(next_random(state) % (uint64_t)n);
}

/* ---- the rating --------------------------------------------------------------------------- */

/* Reads [-+]digits[.digits] at p; returns the end, or NULL. *decimal: it had a fraction. */
static const char *scan_number(const char *p, double *out, bool *decimal)
{
    double v = 0;
    double scale = 1;
    bool neg = *p == '-';

    *decimal = false;
    if (*p == '-' || *p == '+')
        p++;
    if (*p == '.' && isdigit((unsigned char)p[1])) {
        *decimal = true;
    } else if (!isdigit((unsigned char)*p)) {
        return NULL;
    }
    while (isdigit((unsigned char)*p))
        v = v * 10 + (*p++ - '0');
    if (*p == '.' && isdigit((unsigned char)p[1])) {
        *decimal = true;
        for (p++; isdigit((unsigned char)*p); p++) {
            scale /= 10;
            v += (*p - '0') * scale;
        }
    }
    *out = neg ? -v : v;
    return p;
}

/* The rating at p on a 0..1 scale: "7" and "7/10" out of 10, "0.7" as is, "70%", "70/100".
 * Returns false when p holds no number. */
static bool score_at(const char *p, double *out)
{
    double v;
    double d;
    bool decimal;
    bool dd;
    const char *e = scan_number(p, &v, &decimal);

    if (!e)
        return false;
    while (*e == ' ' || *e == '*')
        e++;
    if (*e == '%') {
        *out = v / 100;
        return true;
    }
    if (*e == '/' || starts_ci(e, "out of")) {
        e += *e == '/' ? 1 : 6;
        while (*e == ' ')
            e++;
        if (scan_number(e, &d, &dd) && d > 0) {
            *out = v / d;
            return true;
        }
    }
    *out = decimal && v <= 1 ? v : v / 10;
    return true;
}

/* The last "N/D" or "N out of D" anywhere in s. */
static bool fraction_at_all(const char *s, double *out)
{
    bool found = false;

    for (const char *p = s; *p; p++) {
        double v;
        bool decimal;
        const char *e;

        if (!isdigit((unsigned char)*p) ||
            (p > s && (isdigit((unsigned char)p[-1]) || p[-1] == '.')))
            continue;
        e = scan_number(p, &v, &decimal);
        while (*e == ' ')
            e++;
        if ((*e == '/' && isdigit((unsigned char)e[1])) || starts_ci(e, "out of"))
            found = score_at(p, out) || found;
    }
    return found;
}

/* The rating in an evaluator's reply, 0..1: the number after the last "rating" or "score"
 * on its line, else a leading number, else the last fraction; NEUTRAL when there is none. */
static double parse_rating(const char *s)
{
    bool found = false;
    double v = NEUTRAL;
    const char *p;

    for (p = s; *p; p++) {
        const char *q = NULL;

        if (starts_ci(p, "rating"))
            q = p + 6;
        else if (starts_ci(p, "score"))
            q = p + 5;
        if (!q)
            continue;
        for (int gap = 0; *q && *q != '\n' && gap < 24; q++, gap++)
            if (isdigit((unsigned char)*q) ||
                ((*q == '-' || *q == '.') && isdigit((unsigned char)q[1])))
                break;
        found = score_at(q, &v) || found;
    }
    if (!found) {
        for (p = s; *p && (isspace((unsigned char)*p) || strchr("*#`\"'", *p)); p++)
            ;
        found = score_at(p, &v);
    }
    if (!found && !fraction_at_all(s, &v))
        return NEUTRAL;
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* ---- conversations ------------------------------------------------------------------------ */

/* The conversation at n: the client's messages, then for each node on the path from the root
 * its action and (when known, and for n itself only when 'with_query') its user turn; then
 * the user message 'extra' if not NULL. In the arena. */
static size_t node_msgs(struct mcts *t, const struct node *n, bool with_query, const char *extra,
                        struct llm_msg **out)
{
    struct arena *a = t->ctx->arena;
    const struct node **path = arena_calloc(a, (size_t)n->depth + 1, sizeof(*path));
    struct llm_msg *m = arena_calloc(a, t->nbase + 2 * (size_t)n->depth + 1, sizeof(*m));
    size_t k = 0;
    int np = 0;

    for (const struct node *p = n; p && p->action; p = p->parent)
        path[np++] = p;
    memcpy(m, t->base, t->nbase * sizeof(*m));
    k = t->nbase;
    while (np-- > 0) {
        const struct node *p = path[np];

        m[k].role = "assistant";
        m[k++].content = p->action;
        if (p->query && (p != n || with_query)) {
            m[k].role = "user";
            m[k++].content = p->query;
        }
    }
    if (extra) {
        m[k].role = "user";
        m[k++].content = extra;
    }
    *out = m;
    return k;
}

static bool terminal(const struct node *n)
{
    return n->depth > MAX_TURNS || (n->query && contains_ci(n->query, "goodbye"));
}

static struct node *new_node(struct mcts *t, struct node *parent, const struct llm_choice *c)
{
    struct node *n = arena_calloc(t->ctx->arena, 1, sizeof(*n));

    n->parent = parent;
    n->action = c->text;
    n->finish = c->finish_reason;
    n->depth = parent->depth + 1;
    return n;
}

/* ---- the search --------------------------------------------------------------------------- */

/* Starts playing on from tree node n: the simulation's visit counts now (its rating later). */
static void begin_rollout(struct mcts *t, struct sim *s, struct node *n)
{
    s->start = n;
    for (struct node *p = n; p; p = p->parent) {
        p->visits++;
        p->pending++;
    }
    s->cur = n;
    s->steps = t->depth;
    s->phase = s->steps > 0 && !terminal(n) && n->query ? SIM_ROLLOUT : SIM_EVAL;
}

/* Descends from the root as UCT would. Returns false, changing nothing, when a choice on the
 * way depends on a rating not yet in; else sets the simulation's first step. */
static bool select_leaf(struct mcts *t, struct sim *s)
{
    struct node *n = &t->root;
    uint64_t rng = s->rng;

    while (n->expanded && n->nkids > 0 && !terminal(n)) {
        struct node *next = NULL;
        int unvisited = 0;

        for (int i = 0; i < n->nkids; i++)
            unvisited += n->kids[i]->visits == 0;
        if (unvisited > 0) {
            int k = pick(&rng, unvisited);

            for (int i = 0; i < n->nkids && !next; i++)
                if (n->kids[i]->visits == 0 && k-- == 0)
                    next = n->kids[i];
        } else {
            double best = -INFINITY;

            for (int i = 0; i < n->nkids; i++)
                if (n->kids[i]->pending > 0)
                    return false;
            for (int i = 0; i < n->nkids; i++) {
                const struct node *k = n->kids[i];
                double u =
                    k->value / k->visits + t->c * sqrt(log((double)n->visits) / (double)k->visits);

                if (u > best) { /* ties: the first in content order */
                    best = u;
                    next = n->kids[i];
                }
            }
        }
        n = next;
    }
    s->rng = rng;
    if (!n->expanded && !terminal(n)) {
        s->leaf = n;
        s->phase = SIM_EXPAND;
    } else {
        begin_rollout(t, s, n); /* terminal, or its expansion gave nothing */
    }
    return true;
}

static int choice_cmp(const void *a, const void *b)
{
    const struct llm_choice *x = a;
    const struct llm_choice *y = b;

    return strcmp(x->text, y->text);
}

/* The expansion's replies (trimmed, blank ones dropped, sorted) become the simulation's
 * actions; without any, the leaf is simulated as it is. */
static void take_actions(struct mcts *t, struct sim *s, struct llm_choice *c, int n)
{
    int k = 0;

    for (int i = 0; i < n; i++) {
        if (blank(c[i].text))
            continue;
        c[k] = c[i];
        c[k++].text = trimmed(t->ctx->arena, c[i].text);
    }
    qsort(c, (size_t)k, sizeof(*c), choice_cmp);
    s->actions = c;
    s->nactions = k;
    if (k > 0) {
        s->phase = SIM_APPLY;
        return;
    }
    s->leaf->expanded = true;
    begin_rollout(t, s, s->leaf);
}

/* The user turn predicted by a reply, or the request to go on when it failed. */
static const char *user_turn(struct mcts *t, const struct llm_reply *r)
{
    if (r->status == PX_OK && r->nchoices > 0 && !blank(r->choices[0].text))
        return trimmed(t->ctx->arena, r->choices[0].text);
    return t->go_on;
}

static void set_call(struct llm_call *c, const struct llm_params *p, const char *stage)
{
    c->params = *p;
    c->stage = stage;
}

/* Adds the calls simulation s waits for to calls[*n..]; returns false when it waits for none. */
static bool add_calls(struct mcts *t, struct sim *s, struct llm_call *calls, size_t *n, bool n_ok)
{
    struct llm_params apply = llm_params_default();
    struct llm_params eval = llm_params_default();
    struct llm_msg *m;
    size_t nm;

    apply.temperature = APPLY_TEMPERATURE;
    apply.max_tokens = APPLY_MAX_TOKENS;
    eval.temperature = EVAL_TEMPERATURE;
    eval.max_tokens = EVAL_MAX_TOKENS;
    s->first = *n;
    switch (s->phase) {
    case SIM_EXPAND:
        nm = node_msgs(t, s->leaf, true, NULL, &m);
        for (int i = 0; i < (n_ok ? 1 : ACTIONS); i++) {
            calls[*n].msgs = m;
            calls[*n].nmsgs = nm;
            set_call(&calls[*n], &t->gen, "mcts/expand");
            calls[(*n)++].params.n = n_ok ? ACTIONS : 1;
        }
        break;
    case SIM_APPLY:
        for (int i = 0; i < s->nactions; i++) {
            /* the leaf's conversation, the action, then the question for the user's reply */
            struct node tmp = {
                .parent = s->leaf, .action = s->actions[i].text, .depth = s->leaf->depth + 1};

            calls[*n].nmsgs = node_msgs(t, &tmp, false, t->next_prompt, &m);
            calls[*n].msgs = m;
            set_call(&calls[(*n)++], &apply, "mcts/apply");
        }
        break;
    case SIM_ROLLOUT:
        calls[*n].nmsgs = node_msgs(t, s->cur, true, NULL, &m);
        calls[*n].msgs = m;
        set_call(&calls[(*n)++], &t->gen, "mcts/rollout");
        break;
    case SIM_NEXT:
        calls[*n].nmsgs = node_msgs(t, s->cur, false, t->next_prompt, &m);
        calls[*n].msgs = m;
        set_call(&calls[(*n)++], &apply, "mcts/apply");
        break;
    case SIM_EVAL:
        calls[*n].nmsgs = node_msgs(t, s->cur, false, t->eval_prompt, &m);
        calls[*n].msgs = m;
        set_call(&calls[(*n)++], &eval, "mcts/evaluate");
        break;
    default:
        return false;
    }
    s->ncalls = *n - s->first;
    return true;
}

/* Moves simulation s on with the replies of its calls. */
static void take_replies(struct mcts *t, struct sim *s, struct llm_call *calls)
{
    struct arena *a = t->ctx->arena;
    struct llm_call *c = calls + s->first;

    switch (s->phase) {
    case SIM_EXPAND: {
        struct llm_choice *got = arena_calloc(a, ACTIONS, sizeof(*got));
        int n = 0;

        for (size_t i = 0; i < s->ncalls; i++)
            if (c[i].reply.status == PX_OK)
                for (int j = 0; j < c[i].reply.nchoices && n < ACTIONS; j++)
                    got[n++] = c[i].reply.choices[j];
        take_actions(t, s, got, n);
        break;
    }
    case SIM_APPLY: {
        struct node *leaf = s->leaf;

        leaf->kids = arena_calloc(a, (size_t)s->nactions, sizeof(*leaf->kids));
        for (int i = 0; i < s->nactions; i++) {
            struct node *k = new_node(t, leaf, &s->actions[i]);

            k->query = user_turn(t, &c[i].reply);
            leaf->kids[leaf->nkids++] = k;
        }
        leaf->expanded = true;
        begin_rollout(t, s, leaf->kids[pick(&s->rng, leaf->nkids)]);
        break;
    }
    case SIM_ROLLOUT: {
        const struct llm_reply *r = &c[0].reply;

        if (r->status != PX_OK || r->nchoices < 1 || blank(r->choices[0].text)) {
            s->phase = SIM_EVAL; /* rate what there is */
            break;
        }
        s->cur = new_node(t, s->cur, &r->choices[0]);
        s->cur->action = trimmed(a, s->cur->action);
        s->steps--;
        /* The last reply's user turn is never used: the rating does not see it. */
        s->phase = s->steps > 0 ? SIM_NEXT : SIM_EVAL;
        break;
    }
    case SIM_NEXT:
        s->cur->query = user_turn(t, &c[0].reply);
        s->phase = terminal(s->cur) ? SIM_EVAL : SIM_ROLLOUT;
        break;
    case SIM_EVAL: {
        const struct llm_reply *r = &c[0].reply;
        double v =
            r->status == PX_OK && r->nchoices > 0 ? parse_rating(r->choices[0].text) : NEUTRAL;

        for (struct node *p = s->start; p; p = p->parent) {
            p->value += v;
            p->pending--;
        }
        s->phase = SIM_DONE;
        break;
    }
    default:
        break;
    }
}

/* Root children, best first: visits, mean rating, completed over cut, shorter, byte order. */
static int kid_cmp(const void *pa, const void *pb)
{
    const struct node *a = *(struct node *const *)pa;
    const struct node *b = *(struct node *const *)pb;
    bool ta = a->finish && strcmp(a->finish, "length") == 0;
    bool tb = b->finish && strcmp(b->finish, "length") == 0;
    double ma = a->visits ? a->value / a->visits : 0;
    double mb = b->visits ? b->value / b->visits : 0;
    size_t la = strlen(a->action);
    size_t lb = strlen(b->action);

    if (a->visits != b->visits)
        return a->visits > b->visits ? -1 : 1;
    if (ma != mb)
        return ma > mb ? -1 : 1;
    if (ta != tb)
        return ta ? 1 : -1;
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(a->action, b->action);
}

static uint64_t request_seed(const struct chat_request *req)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < req->nmsgs; i++) {
        h = fnv1a(h, req->msgs[i].role);
        h = fnv1a(h, req->msgs[i].content);
    }
    return h;
}

/* The calls of one round: one llm_sample when a lone expansion is all there is (it finds out
 * whether the upstream takes n), else one batch. Returns PX_OK, or a negative px_status when
 * the request must stop (the first expansion failed, or the request was cancelled). */
static int run_round(struct mcts *t, struct sim *sims, int nsims, struct llm_call *calls,
                     size_t ncalls)
{
    struct approach_ctx *ctx = t->ctx;
    struct sim *lone = NULL;
    int active = 0;
    int rc;

    for (int i = 0; i < nsims; i++) {
        if (sims[i].phase > SIM_IDLE && sims[i].phase < SIM_DONE) {
            active++;
            lone = &sims[i];
        }
    }
    if (active == 1 && lone->phase == SIM_EXPAND) {
        struct llm_choice *got = arena_calloc(ctx->arena, ACTIONS, sizeof(*got));

        rc = llm_sample(ctx, calls[0].msgs, calls[0].nmsgs, &t->gen, ACTIONS, "mcts/expand", got);
        if (rc < 0 && (lone->leaf == &t->root || rc == PX_ECANCELLED))
            return rc;
        take_actions(t, lone, got, rc < 0 ? 0 : rc);
        return PX_OK;
    }
    rc = llm_batch(ctx, calls, ncalls);
    if (rc == PX_ECANCELLED)
        return rc;
    for (int i = 0; i < nsims; i++)
        if (sims[i].phase > SIM_IDLE && sims[i].phase < SIM_DONE)
            take_replies(t, &sims[i], calls);
    return PX_OK;
}

static int mcts_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int nsims = (int)approach_opt(ctx, "simulations");
    struct mcts t = {.ctx = ctx};
    struct sim *sims;
    struct llm_call *calls;
    uint64_t seed = request_seed(ctx->req);
    size_t cap;
    int started = 0;
    struct node *best;

    nsims = nsims < 1 ? 1 : nsims;
    t.depth = (int)approach_opt(ctx, "depth");
    t.depth = t.depth < 0 ? 0 : t.depth;
    t.c = approach_opt(ctx, "exploration");
    t.c = t.c < 0 ? 0 : t.c;
    {
        /* Under a call budget: fewer simulations. One costs 4 + 2 x depth calls (5 at depth
         * 0), 2 more where the upstream refuses n (measured with the mock); the budget is
         * also a hard cap in llm_api.c, and mcts tolerates the calls it cuts. */
        long left = llm_budget_calls_left(ctx);
        long per =
            (t.depth > 0 ? 4 + 2L * t.depth : 5) + (ctx->llm->ops->get_n(ctx->llm) == 0 ? 2 : 0);

        if (left != LONG_MAX && left / per < nsims) {
            int want = nsims;

            nsims = left / per >= 1 ? (int)(left / per) : 1;
            llm_budget_note(ctx, "simulations=%d/%d", nsims, want);
        }
    }
    t.nbase = llm_msgs_conversation(ctx, NULL, NULL, &t.base);
    t.gen = llm_params_default();
    t.gen.temperature = isnan(ctx->req->temperature) ? GEN_TEMPERATURE : ctx->req->temperature;
    t.gen.max_tokens = ctx->req->max_tokens > 0 ? ctx->req->max_tokens : GEN_MAX_TOKENS;
    t.next_prompt = approach_prompt(ctx, "mcts/next_query", NULL);
    t.eval_prompt = approach_prompt(ctx, "mcts/evaluate", NULL);
    t.go_on = trimmed(ctx->arena, approach_prompt(ctx, "mcts/continue", NULL));

    sims = arena_calloc(ctx->arena, (size_t)nsims, sizeof(*sims));
    for (int i = 0; i < nsims; i++)
        sims[i].rng = seed ^ ((uint64_t)(i + 1) * 0xd1b54a32d192ed03ULL);
    cap = (size_t)nsims * ACTIONS;
    calls = arena_calloc(ctx->arena, cap, sizeof(*calls));

    for (;;) {
        size_t ncalls = 0;
        int rc;

        /* Start every simulation whose descent is already settled (see DESIGN above). */
        while (started < nsims && (started == 0 || sims[started - 1].phase > SIM_APPLY) &&
               select_leaf(&t, &sims[started]))
            started++;
        memset(calls, 0, cap * sizeof(*calls));
        for (int i = 0; i < nsims; i++)
            add_calls(&t, &sims[i], calls, &ncalls, ctx->llm->ops->get_n(ctx->llm) == 1);
        if (ncalls == 0)
            break;
        rc = run_round(&t, sims, nsims, calls, ncalls);
        if (rc < 0)
            return rc;
        if (t.root.expanded && t.root.nkids == 0)
            break; /* the model said nothing at all */
    }

    if (t.root.nkids == 0) {
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    qsort(t.root.kids, (size_t)t.root.nkids, sizeof(*t.root.kids), kid_cmp);
    best = t.root.kids[0];
    out->text = best->action;
    out->finish_reason = best->finish && strcmp(best->finish, "length") == 0 ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option mcts_options[] = {
    {.name = "simulations",
     .alias = "mcts_simulations",
     .def = 2,
     .min = 1,
     .max = 64,
     .integer = true,
     .help = "mcts: simulations (each expands a node and rates a played-on conversation)"},
    {.name = "exploration",
     .alias = "mcts_exploration",
     .def = 0.2,
     .min = 0,
     .max = 10,
     .integer = false,
     .help = "mcts: UCT exploration weight"},
    {.name = "depth",
     .alias = "mcts_depth",
     .def = 1,
     .min = 0,
     .max = 10,
     .integer = true,
     .help = "mcts: assistant turns simulated after a new node before it is rated"},
    {.name = NULL},
};

const struct approach approach_mcts = {
    .slug = "mcts",
    .aliases = NULL,
    .run = mcts_run,
    .prompts = (const char *const[]){"mcts/next_query", "mcts/evaluate", "mcts/continue", NULL},
    .options = mcts_options,
    .summary = "Monte Carlo tree search over dialogue states: UCT selection, parallel "
               "expansion, rated rollouts; the most visited, best-rated reply wins",
    .calls = 12,
    .rounds = 6,
    .min_calls = 5,
};
