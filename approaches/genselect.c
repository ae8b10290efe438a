/* genselect.c: generative selection. k candidates of the client's conversation (one n=k call),
 * then one comparison in which the model names the best candidate; that candidate's full text
 * is the answer. 2 rounds, 2 calls.
 *
 * As OptiLLM's genselect plugin (shared/approaches.md 3.2): 4 candidates at T=0.7 (the
 * client's temperature wins) with 4096 tokens unless the client set a limit, a comparison at
 * T=0.3 with 2048 tokens, answered as "BEST CANDIDATE: <n>". Unlike it: the candidates are
 * shown in byte order, so the comparison prompt (and so the choice) does not depend on the
 * order in which parallel samples arrive; the reply parser also reads "**Best candidate:**
 * Candidate 2", "I would choose candidate 3" or a bare "2", and takes the last verdict, not
 * the first mention; an unparseable or out-of-range verdict, or a failed comparison, falls back
 * to the answer most candidates share (answer.h) instead of blindly returning candidate #1;
 * empty and failed samples are dropped, and a candidate cut off by the length limit is marked
 * as such for the judge.
 *
 * Request fields: the stages set temperature, max_tokens and n (above); every other client
 * field reaches every call unchanged (llm.h). Requests with tools are refused (400, approach.h
 * .tools); response_format (json) is refused too: an answer may be an intermediate text. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "buf.h"

#define GEN_TEMPERATURE     0.7 /* OptiLLM's */
#define GEN_MAX_TOKENS      4096
#define COMPARE_TEMPERATURE 0.3
#define COMPARE_MAX_TOKENS  2048
#define VERDICT_GAP         40 /* bytes between "best candidate" and its number, at most */

struct cand {
    const char *text;
    const char *finish;
    const char *key; /* extracted answer key, or "" */
};

static const struct approach_option genselect_options[];

/* ---- helpers ------------------------------------------------------------------------------ */

/* The option's value, clamped to its row's range (approach_opt_row). */
static double opt(const struct approach_ctx *ctx, const char *name)
{
    return approach_opt_row(ctx, genselect_options, name);
}

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool truncated(const struct cand *c)
{
    return c->finish && strcmp(c->finish, "length") == 0;
}

static bool starts_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return false;
    return true;
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = pa;
    const struct cand *b = pb;

    return strcmp(a->text, b->text);
}

/* ---- the verdict parser ------------------------------------------------------------------- */

/* Skips what may stand between a verdict phrase and its number: blanks, markup, punctuation
 * and the words "candidate", "number", "no.", "is", "the", "response". Stops at a newline
 * after VERDICT_GAP bytes. */
static const char *skip_filler(const char *p, const char *start)
{
    static const char *const words[] = {"candidate", "number", "no.", "is ", "the ", "response"};

    while (p - start < VERDICT_GAP) {
        size_t w;

        if (*p && strchr(" \t\n*_:#[(`\"'=->.", *p)) {
            p++;
            continue;
        }
        for (w = 0; w < PX_ARRAY_LEN(words); w++)
            if (starts_ci(p, words[w]))
                break;
        if (w == PX_ARRAY_LEN(words))
            return p;
        p += strlen(words[w]);
    }
    return p;
}

/* A candidate number 1..n at p (not part of a longer number or a decimal), or 0. */
static int number_at(const char *p, int n)
{
    int v = 0;
    int digits = 0;

    while (isdigit((unsigned char)*p) && digits < 4) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1])))
        return 0;
    return v >= 1 && v <= n ? v : 0;
}

/* The last "best candidate: N" ("BEST CANDIDATE: 2", "**Best candidate:** Candidate 2",
 * "the best response is candidate 3"). */
static int verdict_phrase(const char *s, int n)
{
    static const char *const phrases[] = {"best candidate", "best response", "winner"};
    int found = 0;

    for (const char *p = s; *p; p++) {
        for (size_t i = 0; i < PX_ARRAY_LEN(phrases); i++) {
            const char *q;
            int v;

            if (!starts_ci(p, phrases[i]))
                continue;
            q = p + strlen(phrases[i]);
            v = number_at(skip_filler(q, q), n);
            if (v)
                found = v;
        }
    }
    return found;
}

/* The last "candidate N is the best" or "I select/choose/pick/prefer (candidate) N". */
static int verdict_prose(const char *s, int n)
{
    static const char *const verbs[] = {"select", "choose", "pick", "prefer", "go with"};
    int found = 0;

    for (const char *p = s; *p; p++) {
        if (starts_ci(p, "candidate")) {
            const char *q = p + strlen("candidate");
            int v;

            while (*q == ' ' || *q == '#')
                q++;
            v = number_at(q, n);
            while (isdigit((unsigned char)*q))
                q++;
            while (*q == ' ' || *q == '*')
                q++;
            if (v && starts_ci(q, "is ")) {
                q += 3;
                if (starts_ci(q, "the "))
                    q += 4;
                if (starts_ci(q, "best") || starts_ci(q, "strongest") || starts_ci(q, "superior") ||
                    starts_ci(q, "most accurate"))
                    found = v;
            }
        }
        for (size_t i = 0; i < PX_ARRAY_LEN(verbs); i++) {
            const char *q;
            int v;

            if (!starts_ci(p, verbs[i]) || (p > s && isalpha((unsigned char)p[-1])))
                continue;
            q = p + strlen(verbs[i]);
            while (*q == ' ' || *q == '*')
                q++;
            if (!starts_ci(q, "candidate"))
                continue;
            q += strlen("candidate");
            while (*q == ' ' || *q == '#' || *q == '*')
                q++;
            v = number_at(q, n);
            if (v)
                found = v;
        }
    }
    return found;
}

/* A reply that is only a number or "Candidate N" (plus markup and a full stop). */
static int verdict_bare(const char *s, int n)
{
    const char *p = s;
    int v;

    while (*p && (isspace((unsigned char)*p) || strchr("*#`\"'([", *p)))
        p++;
    if (starts_ci(p, "candidate"))
        p += strlen("candidate");
    while (*p == ' ' || *p == '#')
        p++;
    v = number_at(p, n);
    if (!v)
        return 0;
    while (isdigit((unsigned char)*p))
        p++;
    while (*p && (isspace((unsigned char)*p) || strchr("*.`\"')]", *p)))
        p++;
    return *p ? 0 : v;
}

/* The 1-based candidate a comparison reply names, or 0 when it names none in 1..n. */
static int parse_verdict(const char *s, int n)
{
    int v = verdict_phrase(s, n);

    if (!v)
        v = verdict_prose(s, n);
    if (!v)
        v = verdict_bare(s, n);
    return v;
}

/* ---- fallback: the answer most candidates share ------------------------------------------- */

/* The first candidate (in the order the judge saw them) of the largest group of equal
 * extracted answers; ties go to the smaller key. Cut-off candidates vote only when none
 * completed; without any answer, the first complete candidate. */
static const struct cand *majority(const struct cand *c, int n)
{
    bool any_complete = false;
    const struct cand *best = NULL;
    int best_count = 0;

    for (int i = 0; i < n; i++)
        any_complete = any_complete || !truncated(&c[i]);
    for (int i = 0; i < n; i++) {
        int count = 0;

        if (!*c[i].key || (any_complete && truncated(&c[i])))
            continue;
        for (int j = 0; j < n; j++)
            if (strcmp(c[j].key, c[i].key) == 0 && !(any_complete && truncated(&c[j])))
                count++;
        if (count > best_count ||
            (best && count == best_count && strcmp(c[i].key, best->key) < 0)) {
            best = &c[i];
            best_count = count;
        }
    }
    if (best)
        return best; /* c[] is in display order, so this is the group's first member */
    for (int i = 0; i < n; i++)
        if (!truncated(&c[i]))
            return &c[i];
    return &c[0];
}

/* ---- the comparison ----------------------------------------------------------------------- */

static const char *candidate_block(struct approach_ctx *ctx, const struct cand *c, int n)
{
    struct buf b;
    char *s;

    buf_init(&b, 0);
    for (int i = 0; i < n; i++)
        buf_printf(&b, "=== Candidate %d%s ===\n%s\n\n", i + 1,
                   truncated(&c[i]) ? " (cut off at the length limit)" : "", c[i].text);
    s = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

/* Asks the model to compare the candidates. Returns the 1-based choice, or 0 when the call
 * failed or its reply names no valid candidate. */
static int compare(struct approach_ctx *ctx, const struct cand *c, int n)
{
    struct llm_call call = {0};
    struct llm_msg *msgs;
    char count[16];
    const char *user;

    snprintf(count, sizeof(count), "%d", n);
    user = approach_prompt(ctx, "genselect/compare", "count", count, "system",
                           chat_system(ctx->arena, ctx->req), "question", chat_last_user(ctx->req),
                           "candidates", candidate_block(ctx, c, n), NULL);
    call.nmsgs = llm_msgs2(ctx, approach_prompt(ctx, "genselect/system", NULL), user, &msgs);
    call.msgs = msgs;
    call.params = llm_params_default();
    call.params.temperature = COMPARE_TEMPERATURE;
    call.params.max_tokens = COMPARE_MAX_TOKENS;
    call.stage = "genselect/compare";
    if (llm_batch(ctx, &call, 1) <= 0)
        return 0; /* the candidates are still there: choose among them without the judge */
    return parse_verdict(call.reply.choices[0].text, n);
}

static int genselect_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int k = (int)opt(ctx, "genselect_candidates");
    struct llm_params p = llm_params_default();
    struct llm_choice *s = arena_calloc(ctx->arena, (size_t)k, sizeof(*s));
    struct cand *c;
    const struct cand *pick;
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    int got;
    int n = 0;
    int v;

    p.temperature = isnan(ctx->req->temperature) ? GEN_TEMPERATURE : ctx->req->temperature;
    p.max_tokens = ctx->req->max_tokens > 0 ? ctx->req->max_tokens : GEN_MAX_TOKENS;
    got = llm_sample(ctx, msgs, nmsgs, &p, k, "genselect/candidate", s);
    if (got < 0)
        return got;
    c = arena_calloc(ctx->arena, (size_t)got, sizeof(*c));
    for (int i = 0; i < got; i++) {
        struct answer a;

        if (blank(s[i].text))
            continue;
        a = answer_extract(ctx->arena, s[i].text, ANSWER_NONE);
        c[n].text = s[i].text;
        c[n].finish = s[i].finish_reason;
        c[n].key = answer_key(ctx->arena, &a);
        n++;
    }
    if (n == 0) { /* every candidate was empty: so is the answer */
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    qsort(c, (size_t)n, sizeof(*c), cand_cmp);
    v = n > 1 ? compare(ctx, c, n) : 1;
    pick = v ? &c[v - 1] : majority(c, n);
    out->text = pick->text;
    out->finish_reason = truncated(pick) ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option genselect_options[] = {
    {.name = "genselect_candidates",
     .def = 4,
     .min = 2,
     .max = 16,
     .integer = true,
     .help = "candidates generated by genselect before the comparison"},
    {.name = NULL},
};

const struct approach approach_genselect = {
    .slug = "genselect",
    .aliases = NULL,
    .run = genselect_run,
    .prompts = (const char *const[]){"genselect/system", "genselect/compare", NULL},
    .options = genselect_options,
    .summary = "Generative selection: n candidates in one call, then the model compares them "
               "and names the best one, which is returned whole",
    .calls = 2,
    .rounds = 2,
};
