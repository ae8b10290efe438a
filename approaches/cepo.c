/* cepo.c: Cerebras planning and optimisation. bestofn_n candidate answers are built at once,
 * each from planning_n plans: plan (all plans of all candidates in one n call), execute each
 * plan (one parallel batch), consolidate each candidate's executions into one solution, turn
 * it into the final answer (both batches over the candidates); then the candidates are rated
 * in one batch (absolute, pairwise or majority) and the best one is returned. 5 rounds and 19
 * calls at the defaults (OptiLLM: 10 rounds, 48 calls).
 *
 * Differences from OptiLLM's cepo (shared/approaches.md 2.14):
 * - Parallel where independent: the plans of all candidates are one n=bestofn_n*planning_n
 *   call, the executions one batch, the ratings one batch (OptiLLM rates one by one, and
 *   twice). planning_n chains are started per candidate rather than planning_m: the others
 *   are only started, in a further plan+execute pass, when chains were rejected (a plan or
 *   execution cut off by the length limit, empty or failed), up to planning_m per candidate.
 * - No crash paths: when no chain of a candidate succeeds, it answers directly (the
 *   direct_resp settings; OptiLLM crashes there); plan diversity works (one more call and
 *   round: the approaches come back as a JSON array); a failed plan is not executed; a null
 *   rating cannot crash; failed calls drop only what depended on them.
 * - Every step uses its own temperature and max_tokens (OptiLLM uses step 1's for all four);
 *   planning_max_tokens_step4 = 0 still skips step 4.
 * - Usage is every call's exact usage (OptiLLM doubles its running total at step 3 and does
 *   not count the unused chains).
 * - reasoning_effort is not sent (OpenAI's non-reasoning models reject it; our llm API has no
 *   such field), so use_reasoning_fallback does not apply; retries are the transport's
 *   (--retries), not num_of_retries; rating_model is the request's model; the Qwen "/think"
 *   suffix is not appended. A <think> block before the text is removed, as in OptiLLM.
 * - Ratings: "Rating: [[1]]" and also "Rating: 1", any number 0..10; an unparseable rating
 *   leaves the candidate unrated (-1); pairwise verdicts are A/B and an unparseable one
 *   credits nobody (OptiLLM credits the first response); majority votes on answers extracted
 *   by answer.h (OptiLLM's MCQ extractor falls back to the first character of the text).
 *   Ties go to the answer most candidates share, then a complete, shorter, byte-smaller
 *   text, never to arrival order.
 * - Numeric options only: bestofn_rating_type is 0 (absolute), 1 (pairwise) or 2 (majority).
 *
 * Request fields: the steps set temperature, max_tokens and n (above); every other client field
 * reaches every call unchanged (llm.h). Requests with tools are refused (400, approach.h
 * .tools); response_format (json) is refused too: an answer may be an intermediate text.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "buf.h"

#define UNRATED (-1.0)

enum rating_type { RATE_ABSOLUTE = 0, RATE_PAIRWISE = 1, RATE_MAJORITY = 2 };
enum { STEP_PLAN = 0, STEP_EXECUTE = 1, STEP_CONSOLIDATE = 2, STEP_FINAL = 3, STEP_DIRECT = 4 };

struct cepo_cfg {
    int bestofn_n;
    double bestofn_temperature;
    long bestofn_max_tokens;
    int rating_type;
    int planning_n;
    int planning_m;
    double temperature[5]; /* by STEP_* */
    long max_tokens[5];
    bool diversity;
};

struct cand {
    const char *approach; /* plan diversity: the approach its plans follow, or NULL */
    int attempts;         /* planning chains started */
    const char **execs;   /* accepted executions (planning_n at most) */
    int nexec;
    bool active;      /* has an answer */
    const char *text; /* the answer */
    const char *finish;
    const char *key; /* extracted answer key, or "" */
    size_t len;
    int support; /* candidates sharing its answer, itself included */
    double rating;
};

struct chain {
    struct cand *cand;
    const char *plan_prompt;
    const char *plan;
};

static const struct approach_option cepo_options[];

/* ---- helpers ------------------------------------------------------------------------------ */

/* The option's value, clamped to its row's range (approach_opt_row). */
static double opt(const struct approach_ctx *ctx, const char *name)
{
    return approach_opt_row(ctx, cepo_options, name);
}

static void read_cfg(const struct approach_ctx *ctx, struct cepo_cfg *c)
{
    static const char *const steps[] = {"step1", "step2", "step3", "step4", "direct_resp"};

    c->bestofn_n = (int)opt(ctx, "cepo_bestofn_n");
    c->bestofn_temperature = opt(ctx, "cepo_bestofn_temperature");
    c->bestofn_max_tokens = (long)opt(ctx, "cepo_bestofn_max_tokens");
    c->rating_type = (int)opt(ctx, "cepo_bestofn_rating_type");
    c->planning_n = (int)opt(ctx, "cepo_planning_n");
    c->planning_m = (int)opt(ctx, "cepo_planning_m");
    for (size_t i = 0; i < PX_ARRAY_LEN(steps); i++) {
        char name[64];

        snprintf(name, sizeof(name), "cepo_planning_temperature_%s", steps[i]);
        c->temperature[i] = opt(ctx, name);
        snprintf(name, sizeof(name), "cepo_planning_max_tokens_%s", steps[i]);
        c->max_tokens[i] = (long)opt(ctx, name);
    }
    c->diversity = opt(ctx, "cepo_use_plan_diversity") > 0;
}

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool cut_off(const char *finish)
{
    return finish && strcmp(finish, "length") == 0;
}

static bool starts_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return false;
    return true;
}

/* The text after a reasoning model's "</think>" (the first one, as OptiLLM), trimmed at the
 * start; the whole text when there is none. */
static const char *strip_think(const char *s)
{
    const char *end = strstr(s, "</think>");

    if (!end)
        return s;
    s = end + strlen("</think>");
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

/* The usable text of a reply: NULL when the call failed, was cut off or said nothing. */
static const char *usable(const struct llm_reply *r)
{
    const char *t;

    if (r->status != PX_OK || r->nchoices < 1 || cut_off(r->choices[0].finish_reason))
        return NULL;
    t = strip_think(r->choices[0].text);
    return blank(t) ? NULL : t;
}

static struct llm_params params(double temperature, long max_tokens)
{
    struct llm_params p = llm_params_default();

    p.temperature = temperature;
    p.max_tokens = max_tokens;
    return p;
}

/* [system?, user] with the client's system prompt. */
static void set_msgs(struct approach_ctx *ctx, struct llm_call *call, const char *user)
{
    struct llm_msg *msgs;

    call->nmsgs = llm_msgs2(ctx, chat_system(ctx->arena, ctx->req), user, &msgs);
    call->msgs = msgs;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- plan diversity ----------------------------------------------------------------------- */

/* The end of the balanced block opened by *p ('[' or '{'), string-aware; NULL if unclosed. */
static const char *block_end(const char *p)
{
    char open = *p;
    char close = open == '[' ? ']' : '}';
    int depth = 0;
    bool str = false;

    for (; *p; p++) {
        if (str) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                str = false;
        } else if (*p == '"') {
            str = true;
        } else if (*p == open) {
            depth++;
        } else if (*p == close && --depth == 0) {
            return p + 1;
        }
    }
    return NULL;
}

/* The approaches of a reply: the strings of the first JSON array of strings in it, else its
 * lines of more than 8 characters (list markers removed). Returns how many (up to max). */
static int parse_approaches(struct approach_ctx *ctx, const char *s, const char **out, int max)
{
    int n = 0;

    for (const char *p = strchr(s, '['); p && n == 0; p = strchr(p + 1, '[')) {
        const char *end = block_end(p);
        cJSON *json = end ? cJSON_ParseWithLength(p, (size_t)(end - p)) : NULL;
        const cJSON *list = cJSON_IsArray(json) ? json : NULL;
        const cJSON *it;

        cJSON_ArrayForEach(it, list)
        {
            if (n < max && cJSON_IsString(it) && !blank(it->valuestring))
                out[n++] = arena_strdup(ctx->arena, it->valuestring);
        }
        cJSON_Delete(json);
    }
    if (n > 0)
        return n;
    for (const char *p = s; *p && n < max;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *q = p;
        const char *e = p + len;

        while (q < e &&
               (isspace((unsigned char)*q) || isdigit((unsigned char)*q) || strchr("-*.)#", *q)))
            q++;
        while (e > q && isspace((unsigned char)e[-1]))
            e--;
        if (e - q > 8 && *q != '[' && *q != ']')
            out[n++] = arena_strndup(ctx->arena, q, (size_t)(e - q));
        p += len + (end ? 1 : 0);
    }
    return n;
}

/* One call for bestofn_n different approaches; each candidate's plans follow one of them.
 * Without a usable reply the candidates plan freely. */
static void plan_diversity(struct approach_ctx *ctx, const struct cepo_cfg *cfg, struct cand *c)
{
    struct llm_call call = {0};
    const char **items = arena_calloc(ctx->arena, (size_t)cfg->bestofn_n, sizeof(*items));
    char count[16];
    int n;

    snprintf(count, sizeof(count), "%d", cfg->bestofn_n);
    set_msgs(ctx, &call,
             approach_prompt(ctx, "cepo/approaches", "question", chat_last_user(ctx->req), "count",
                             count, NULL));
    call.params = params(cfg->temperature[STEP_PLAN], cfg->max_tokens[STEP_PLAN]);
    call.stage = "cepo/approaches";
    if (llm_batch(ctx, &call, 1) <= 0)
        return;
    n = parse_approaches(ctx, strip_think(call.reply.choices[0].text), items, cfg->bestofn_n);
    for (int i = 0; n > 0 && i < cfg->bestofn_n; i++)
        c[i].approach = items[i % n];
}

/* ---- plan and execute --------------------------------------------------------------------- */

/* Step 1 for the chains: their plans, or NULL where a plan failed, was cut off or empty.
 * Returns the number of plans, or a negative px_status when no call succeeded. */
static int plan(struct approach_ctx *ctx, const struct cepo_cfg *cfg, struct chain *ch, int n)
{
    struct llm_params p = params(cfg->temperature[STEP_PLAN], cfg->max_tokens[STEP_PLAN]);
    bool same = true;
    int ok = 0;

    for (int i = 1; i < n; i++)
        same = same && ch[i].plan_prompt == ch[0].plan_prompt;
    if (same) {
        /* One prompt for every chain: all plans are one n call. */
        struct llm_choice *out = arena_calloc(ctx->arena, (size_t)n, sizeof(*out));
        struct llm_msg *msgs;
        size_t nmsgs = llm_msgs2(ctx, chat_system(ctx->arena, ctx->req), ch[0].plan_prompt, &msgs);
        int got = llm_sample(ctx, msgs, nmsgs, &p, n, "cepo/plan", out);

        if (got < 0)
            return got;
        for (int i = 0; i < got; i++) {
            const char *t = strip_think(out[i].text);

            if (!cut_off(out[i].finish_reason) && !blank(t)) {
                ch[i].plan = t;
                ok++;
            }
        }
        return ok;
    }
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)n, sizeof(*calls));
    int rc;

    for (int i = 0; i < n; i++) {
        set_msgs(ctx, &calls[i], ch[i].plan_prompt);
        calls[i].params = p;
        calls[i].stage = "cepo/plan";
    }
    rc = llm_batch(ctx, calls, (size_t)n);
    if (rc < 0)
        return rc;
    for (int i = 0; i < n; i++) {
        ch[i].plan = usable(&calls[i].reply);
        ok += ch[i].plan != NULL;
    }
    return ok;
}

/* Step 2 for the chains that have a plan: [system?, plan request, plan, "carry it out"].
 * Accepted executions are added to their candidates. Returns the number of calls that
 * succeeded, or a negative px_status when none did. */
static int execute(struct approach_ctx *ctx, const struct cepo_cfg *cfg, struct chain *ch, int n)
{
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)n, sizeof(*calls));
    struct chain **owner = arena_calloc(ctx->arena, (size_t)n, sizeof(*owner));
    const char *system = chat_system(ctx->arena, ctx->req);
    const char *go = approach_prompt(ctx, "cepo/execute", NULL);
    int m = 0;
    int rc;

    for (int i = 0; i < n; i++) {
        struct llm_msg *msgs = arena_calloc(ctx->arena, 4, sizeof(*msgs));
        size_t k = 0;

        if (!ch[i].plan)
            continue;
        if (*system)
            msgs[k++] = (struct llm_msg){.role = "system", .content = system};
        msgs[k++] = (struct llm_msg){.role = "user", .content = ch[i].plan_prompt};
        msgs[k++] = (struct llm_msg){.role = "assistant", .content = ch[i].plan};
        msgs[k++] = (struct llm_msg){.role = "user", .content = go};
        calls[m].msgs = msgs;
        calls[m].nmsgs = k;
        calls[m].params = params(cfg->temperature[STEP_EXECUTE], cfg->max_tokens[STEP_EXECUTE]);
        calls[m].stage = "cepo/execute";
        owner[m++] = &ch[i];
    }
    if (m == 0)
        return 0;
    rc = llm_batch(ctx, calls, (size_t)m);
    if (rc < 0)
        return rc;
    for (int i = 0; i < m; i++) {
        const char *t = usable(&calls[i].reply);
        struct cand *c = owner[i]->cand;

        if (t && c->nexec < cfg->planning_n)
            c->execs[c->nexec++] = t;
    }
    return rc;
}

static bool any_execution(const struct cepo_cfg *cfg, const struct cand *c)
{
    for (int i = 0; i < cfg->bestofn_n; i++)
        if (c[i].nexec > 0)
            return true;
    return false;
}

/* Plan+execute passes until every candidate has planning_n executions or has started
 * planning_m chains. The first pass is the only one unless chains are rejected. A stage in
 * which every call failed ends the passes; it fails the request only while no candidate has
 * an execution. */
static int plan_and_execute(struct approach_ctx *ctx, const struct cepo_cfg *cfg, struct cand *c)
{
    const char *question = chat_last_user(ctx->req);
    const char *plain = approach_prompt(ctx, "cepo/plan", "question", question, NULL);
    int *want = arena_calloc(ctx->arena, (size_t)cfg->bestofn_n, sizeof(*want));

    for (int i = 0; i < cfg->bestofn_n; i++) {
        c[i].execs = arena_calloc(ctx->arena, (size_t)cfg->planning_n, sizeof(*c[i].execs));
        c[i].rating = UNRATED;
    }
    for (;;) {
        struct chain *ch;
        int total = 0;
        int most = 0;
        int n = 0;
        int rc;

        for (int i = 0; i < cfg->bestofn_n; i++) {
            want[i] = 0;
            if (c[i].nexec < cfg->planning_n && c[i].attempts < cfg->planning_m) {
                int need = cfg->planning_n - c[i].nexec;
                int left = cfg->planning_m - c[i].attempts;

                want[i] = need < left ? need : left;
            }
            total += want[i];
            most = want[i] > most ? want[i] : most;
        }
        if (total == 0)
            return PX_OK;
        /* Chains in round-robin order of the candidates: if part of an n call's choices are
         * missing (an upstream without n, a failed single call), the loss is spread. */
        ch = arena_calloc(ctx->arena, (size_t)total, sizeof(*ch));
        for (int r = 0; r < most; r++) {
            for (int i = 0; i < cfg->bestofn_n; i++) {
                if (r >= want[i])
                    continue;
                ch[n].cand = &c[i];
                ch[n].plan_prompt = c[i].approach
                                        ? approach_prompt(ctx, "cepo/plan_diverse", "question",
                                                          question, "approach", c[i].approach, NULL)
                                        : plain;
                n++;
            }
        }
        for (int i = 0; i < cfg->bestofn_n; i++)
            c[i].attempts += want[i];
        rc = plan(ctx, cfg, ch, n);
        if (rc >= 0)
            rc = execute(ctx, cfg, ch, n);
        if (rc < 0)
            return any_execution(cfg, c) ? PX_OK : rc;
    }
}

/* Candidates without any execution answer the client's conversation directly. Returns a
 * negative px_status when that was needed and failed for all of them. */
static int direct(struct approach_ctx *ctx, const struct cepo_cfg *cfg, struct cand *c)
{
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)cfg->bestofn_n, sizeof(*calls));
    struct cand **owner = arena_calloc(ctx->arena, (size_t)cfg->bestofn_n, sizeof(*owner));
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    int m = 0;
    int rc;

    for (int i = 0; i < cfg->bestofn_n; i++) {
        if (c[i].nexec > 0)
            continue;
        calls[m].msgs = msgs;
        calls[m].nmsgs = nmsgs;
        calls[m].params = params(cfg->temperature[STEP_DIRECT], cfg->max_tokens[STEP_DIRECT]);
        calls[m].stage = "cepo/direct";
        owner[m++] = &c[i];
    }
    if (m == 0)
        return PX_OK;
    rc = llm_batch(ctx, calls, (size_t)m);
    for (int i = 0; i < m; i++) {
        const struct llm_reply *r = &calls[i].reply;
        const char *t;

        if (r->status != PX_OK || r->nchoices < 1)
            continue;
        t = strip_think(r->choices[0].text);
        if (blank(t))
            continue;
        /* The last resort: kept even when cut off (then marked so). */
        owner[i]->text = t;
        owner[i]->finish = r->choices[0].finish_reason;
        owner[i]->active = true;
    }
    return rc < 0 && m == cfg->bestofn_n ? rc : PX_OK;
}

/* ---- consolidate and answer --------------------------------------------------------------- */

/* Step 3 (one batch): each candidate's executions, in byte order, merged into one solution;
 * the first execution when the call fails. Step 4 (one batch, unless its max_tokens is 0):
 * the final answer from that solution; the solution when the call fails. */
static void consolidate_and_answer(struct approach_ctx *ctx, const struct cepo_cfg *cfg,
                                   struct cand *c)
{
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)cfg->bestofn_n, sizeof(*calls));
    struct cand **owner = arena_calloc(ctx->arena, (size_t)cfg->bestofn_n, sizeof(*owner));
    const char *question = chat_last_user(ctx->req);
    int m = 0;

    for (int i = 0; i < cfg->bestofn_n; i++) {
        struct buf b;

        if (c[i].nexec == 0)
            continue;
        qsort(c[i].execs, (size_t)c[i].nexec, sizeof(*c[i].execs), str_cmp);
        buf_init(&b, 0);
        for (int j = 0; j < c[i].nexec; j++)
            buf_printf(&b, "Response %d:\n%s\n\n", j + 1, c[i].execs[j]);
        set_msgs(ctx, &calls[m],
                 approach_prompt(ctx, "cepo/consolidate", "question", question, "responses",
                                 arena_strndup(ctx->arena, buf_cstr(&b), b.len), NULL));
        buf_free(&b);
        calls[m].params =
            params(cfg->temperature[STEP_CONSOLIDATE], cfg->max_tokens[STEP_CONSOLIDATE]);
        calls[m].stage = "cepo/consolidate";
        owner[m++] = &c[i];
    }
    if (m == 0)
        return;
    (void)llm_batch(ctx, calls, (size_t)m); /* each failure has its fallback */
    for (int i = 0; i < m; i++) {
        const char *t = usable(&calls[i].reply);

        owner[i]->text = t ? t : owner[i]->execs[0];
        owner[i]->finish = "stop";
        owner[i]->active = true;
    }
    if (cfg->max_tokens[STEP_FINAL] <= 0)
        return;
    for (int i = 0; i < m; i++) {
        memset(&calls[i], 0, sizeof(calls[i]));
        set_msgs(ctx, &calls[i],
                 approach_prompt(ctx, "cepo/final", "question", question, "solution",
                                 owner[i]->text, NULL));
        calls[i].params = params(cfg->temperature[STEP_FINAL], cfg->max_tokens[STEP_FINAL]);
        calls[i].stage = "cepo/final";
    }
    (void)llm_batch(ctx, calls, (size_t)m);
    for (int i = 0; i < m; i++) {
        const char *t = usable(&calls[i].reply);

        if (t)
            owner[i]->text = t;
    }
}

/* ---- ratings ------------------------------------------------------------------------------ */

/* Reads [-+]digits[.digits] at p into *out; returns the end, or NULL. */
static const char *scan_number(const char *p, double *out)
{
    char *end;

    if (!isdigit((unsigned char)*p) && !((*p == '-' || *p == '+') && isdigit((unsigned char)p[1])))
        return NULL;
    *out = strtod(p, &end);
    return end;
}

/* An absolute rating: the last "[[N]]", else the number after the last "rating" (within a
 * short gap on its line); clamped to 0..10. UNRATED when there is none. */
static double parse_rating(const char *s)
{
    double v = UNRATED;
    bool found = false;

    for (const char *p = strstr(s, "[["); p; p = strstr(p + 2, "[[")) {
        const char *q = p + 2;
        double x;

        while (*q == ' ')
            q++;
        q = scan_number(q, &x);
        while (q && *q == ' ')
            q++;
        if (q && strncmp(q, "]]", 2) == 0) {
            v = x;
            found = true;
        }
    }
    for (const char *p = s; !found && *p; p++) {
        const char *q;
        double x;

        if (!starts_ci(p, "rating"))
            continue;
        q = p + strlen("rating");
        for (int gap = 0; *q && *q != '\n' && gap < 16 && !isdigit((unsigned char)*q); gap++)
            q++;
        if (q > p + strlen("rating") && q[-1] == '-')
            q--; /* "Rating: -3" */
        if (scan_number(q, &x))
            v = x; /* the last one wins: keep scanning */
    }
    if (v == UNRATED)
        return UNRATED;
    return v < 0 ? 0 : v > 10 ? 10 : v;
}

/* A pairwise verdict: 0 for A, 1 for B, -1 when unparseable. The last "[[A]]"/"[[B]]", else
 * the letter after the last "better response". */
static int parse_pairwise(const char *s)
{
    int v = -1;

    for (const char *p = strstr(s, "[["); p; p = strstr(p + 2, "[[")) {
        const char *q = p + 2;

        while (*q == ' ')
            q++;
        if ((*q == 'A' || *q == 'a' || *q == 'B' || *q == 'b') &&
            strncmp(q + 1 + strspn(q + 1, " "), "]]", 2) == 0)
            v = tolower((unsigned char)*q) == 'a' ? 0 : 1;
    }
    if (v >= 0)
        return v;
    for (const char *p = s; *p; p++) {
        const char *q;

        if (!starts_ci(p, "better response"))
            continue;
        q = p + strlen("better response");
        q += strspn(q, " :*_\"'");
        if ((*q == 'A' || *q == 'B') && !isalnum((unsigned char)q[1]))
            v = *q == 'A' ? 0 : 1;
    }
    return v;
}

static void count_support(struct approach_ctx *ctx, struct cand **c, int n)
{
    for (int i = 0; i < n; i++) {
        struct answer a = answer_extract(ctx->arena, c[i]->text, ANSWER_NONE);

        c[i]->key = answer_key(ctx->arena, &a);
        c[i]->len = strlen(c[i]->text);
    }
    for (int i = 0; i < n; i++) {
        c[i]->support = 0;
        for (int j = 0; j < n && *c[i]->key; j++)
            c[i]->support += strcmp(c[i]->key, c[j]->key) == 0;
    }
}

/* One batch: an absolute rating per candidate, or a verdict per ordered pair. */
static void rate(struct approach_ctx *ctx, const struct cepo_cfg *cfg, struct cand **c, int n)
{
    bool pairwise = cfg->rating_type == RATE_PAIRWISE;
    size_t m = pairwise ? (size_t)n * (size_t)(n - 1) : (size_t)n;
    struct llm_call *calls = arena_calloc(ctx->arena, m, sizeof(*calls));
    int(*pair)[2] = arena_calloc(ctx->arena, m, sizeof(*pair));
    const char *question = chat_last_user(ctx->req);
    const char *system = chat_system(ctx->arena, ctx->req);
    const char *sys_prompt =
        approach_prompt(ctx, pairwise ? "cepo/pairwise_system" : "cepo/rate_system", NULL);
    size_t k = 0;

    for (int i = 0; i < n; i++) {
        for (int j = pairwise ? 0 : i; j < (pairwise ? n : i + 1); j++) {
            const char *user;
            struct llm_msg *msgs;

            if (pairwise && i == j)
                continue;
            if (pairwise)
                user = approach_prompt(ctx, "cepo/pairwise", "system", system, "question", question,
                                       "response_a", c[i]->text, "response_b", c[j]->text, NULL);
            else
                user = approach_prompt(ctx, "cepo/rate", "system", system, "question", question,
                                       "response", c[i]->text, NULL);
            calls[k].nmsgs = llm_msgs2(ctx, sys_prompt, user, &msgs);
            calls[k].msgs = msgs;
            calls[k].params = params(cfg->bestofn_temperature, cfg->bestofn_max_tokens);
            calls[k].stage = pairwise ? "cepo/pairwise" : "cepo/rate";
            pair[k][0] = i;
            pair[k][1] = j;
            k++;
        }
    }
    (void)llm_batch(ctx, calls, k); /* a failed rating leaves its candidate unrated */
    for (size_t i = 0; i < k; i++) {
        const struct llm_reply *r = &calls[i].reply;
        const char *t = r->status == PX_OK && r->nchoices > 0 ? r->choices[0].text : NULL;

        if (!t)
            continue;
        if (pairwise) {
            int v = parse_pairwise(strip_think(t));

            if (v >= 0) {
                struct cand *w = c[pair[i][v]];

                w->rating = (w->rating < 0 ? 0 : w->rating) + 1;
            }
        } else {
            c[pair[i][0]]->rating = parse_rating(strip_think(t));
        }
    }
    /* In a pairwise contest, a candidate that never won has 0 wins, not "unrated". */
    for (int i = 0; pairwise && i < n; i++)
        if (c[i]->rating < 0)
            c[i]->rating = 0;
}

/* Best first: rating, shared answer, complete, shorter, byte order. */
static int cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = *(struct cand *const *)pa;
    const struct cand *b = *(struct cand *const *)pb;

    if (a->rating != b->rating)
        return a->rating > b->rating ? -1 : 1;
    if (a->support != b->support)
        return a->support > b->support ? -1 : 1;
    if (cut_off(a->finish) != cut_off(b->finish))
        return cut_off(a->finish) ? 1 : -1;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return strcmp(a->text, b->text);
}

static int cepo_run(struct approach_ctx *ctx, struct chat_result *out)
{
    struct cepo_cfg cfg;
    struct cand *c;
    struct cand **act;
    int n = 0;
    int rc;

    read_cfg(ctx, &cfg);
    c = arena_calloc(ctx->arena, (size_t)cfg.bestofn_n, sizeof(*c));
    if (cfg.diversity && cfg.bestofn_n > 1)
        plan_diversity(ctx, &cfg, c);
    rc = plan_and_execute(ctx, &cfg, c);
    if (rc < 0)
        return rc;
    rc = direct(ctx, &cfg, c);
    if (rc < 0)
        return rc;
    consolidate_and_answer(ctx, &cfg, c);
    act = arena_calloc(ctx->arena, (size_t)cfg.bestofn_n, sizeof(*act));
    for (int i = 0; i < cfg.bestofn_n; i++)
        if (c[i].active)
            act[n++] = &c[i];
    if (n == 0) { /* every direct answer came back empty */
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    count_support(ctx, act, n);
    if (n > 1 && cfg.rating_type == RATE_MAJORITY)
        for (int i = 0; i < n; i++)
            act[i]->rating = act[i]->support;
    else if (n > 1)
        rate(ctx, &cfg, act, n);
    qsort(act, (size_t)n, sizeof(*act), cand_cmp);
    out->text = act[0]->text;
    out->finish_reason = cut_off(act[0]->finish) ? "length" : "stop";
    return PX_OK;
}

#define TEMPERATURE_ROW(field, value)                                                              \
    {                                                                                              \
        .name = "cepo_" field, .def = (value), .min = 0, .max = 2,                                 \
        .help = "cepo " field " (CePO config)"                                                     \
    }
#define TOKENS_ROW(field, min_)                                                                    \
    {                                                                                              \
        .name = "cepo_" field, .def = 4096, .min = (min_), .max = 1000000, .integer = true,        \
        .help = "cepo " field " (CePO config)"                                                     \
    }

static const struct approach_option cepo_options[] = {
    {.name = "cepo_bestofn_n",
     .def = 3,
     .min = 1,
     .max = 8,
     .integer = true,
     .help = "candidate answers built by cepo, each from its own plans"},
    TEMPERATURE_ROW("bestofn_temperature", 0.1),
    TOKENS_ROW("bestofn_max_tokens", 1),
    {.name = "cepo_bestofn_rating_type",
     .def = RATE_ABSOLUTE,
     .min = 0,
     .max = 2,
     .integer = true,
     .help = "how cepo picks the best candidate: 0 absolute rating, 1 pairwise, 2 majority"},
    {.name = "cepo_planning_n",
     .def = 3,
     .min = 1,
     .max = 8,
     .integer = true,
     .help = "plans executed per cepo candidate"},
    {.name = "cepo_planning_m",
     .def = 6,
     .min = 1,
     .max = 16,
     .integer = true,
     .help = "planning attempts per cepo candidate at most (rejected plans are retried)"},
    TEMPERATURE_ROW("planning_temperature_step1", 0.55),
    TEMPERATURE_ROW("planning_temperature_step2", 0.25),
    TEMPERATURE_ROW("planning_temperature_step3", 0.1),
    TEMPERATURE_ROW("planning_temperature_step4", 0),
    TEMPERATURE_ROW("planning_temperature_direct_resp", 0.1),
    TOKENS_ROW("planning_max_tokens_step1", 1),
    TOKENS_ROW("planning_max_tokens_step2", 1),
    TOKENS_ROW("planning_max_tokens_step3", 1),
    TOKENS_ROW("planning_max_tokens_step4", 0),
    TOKENS_ROW("planning_max_tokens_direct_resp", 1),
    {.name = "cepo_use_plan_diversity",
     .def = 0,
     .min = 0,
     .max = 1,
     .integer = true,
     .help = "1: cepo first asks for different approaches and plans each candidate with one"},
    {.name = NULL},
};

const struct approach approach_cepo = {
    .slug = "cepo",
    .aliases = NULL,
    .run = cepo_run,
    .prompts =
        (const char *const[]){"cepo/plan", "cepo/plan_diverse", "cepo/approaches", "cepo/execute",
                              "cepo/consolidate", "cepo/final", "cepo/rate_system", "cepo/rate",
                              "cepo/pairwise_system", "cepo/pairwise", NULL},
    .options = cepo_options,
    .summary = "CePO: plan, execute, consolidate and answer for n candidates in parallel, then "
               "rate them and return the best",
    .calls = 19,
    .rounds = 5,
};
