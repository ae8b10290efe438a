/* leap.c: LEAP, learning principles from mistakes. The worked examples in the prompt are
 * extracted; the model answers each one with a deliberate mistake (all at once); every answer
 * that really is wrong is analysed into low-level principles (all at once); those are merged
 * into at most 8 high-level principles, which guide the final answer (streamed): 5 rounds,
 * 3+E+M calls with E examples and M mistakes; without examples, 2 rounds and 2 calls.
 *
 * Differences from OptiLLM's leap.py (shared/approaches.md 2.9): the mistake and principle
 * calls run in parallel (OptiLLM: one after another); an answer counts as a mistake only when
 * it differs from the correct one by answer_equal (numbers numerically, "4.0" = "4", text
 * normalised) instead of by string inequality, and a numeric JSON answer is read as its
 * number; the extracted examples are found in the reply even around code fences or prose,
 * with or without <output>, as an array or wrapped in an object, and malformed items are
 * skipped rather than crashing the request; when no answer was wrong, no principles are
 * asked for; replies without <output> are used whole rather than dropped; a failed merge falls
 * back to the low-level principles; with no principles the client's conversation goes out as
 * is, and with some they join the client's system prompt instead of replacing the
 * conversation by a flattened query. The number of examples used is capped (an option).
 *
 * Request fields: the stages set temperature and max_tokens; response_format reaches the final
 * answer call only; every other client field reaches every call unchanged (llm.h). Requests
 * with tools are refused (400, approach.h .tools). */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "buf.h"

#define STAGE_MAX_TOKENS    4096 /* OptiLLM's, for every call */
#define MISTAKE_TEMPERATURE 0.7
#define MAX_JSON_TRIES      64 /* '[' and '{' positions tried when looking for the examples */

struct example {
    const char *question;
    const char *answer;
};

struct mistake {
    const struct example *ex;
    const char *reasoning;
    const char *answer; /* the answer given, "" when none could be found */
};

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

/* The text inside the first <output>...</output> (to the end when unclosed), trimmed; NULL
 * when there is no <output>. */
static const char *output_of(struct arena *a, const char *text)
{
    const char *start = strstr(text, "<output>");
    const char *end;

    if (!start)
        return NULL;
    start += strlen("<output>");
    end = strstr(start, "</output>");
    return arena_strtrim(a, start, end ? (size_t)(end - start) : strlen(start));
}

/* The text inside <output> when there is one, else the whole reply; trimmed. */
static const char *output_or_all(struct arena *a, const char *text)
{
    const char *o = output_of(a, text);

    return o ? o : arena_strtrim(a, text, strlen(text));
}

/* ---- examples ----------------------------------------------------------------------------- */

/* A JSON value as text: strings as they are, numbers in their shortest form, else JSON. */
static const char *json_text(struct arena *a, const cJSON *v)
{
    char *s;
    const char *t;

    if (cJSON_IsString(v))
        return arena_strtrim(a, v->valuestring, strlen(v->valuestring));
    if (cJSON_IsNumber(v)) {
        if (isfinite(v->valuedouble) && v->valuedouble == floor(v->valuedouble) &&
            fabs(v->valuedouble) < 1e15)
            return arena_printf(a, "%.0f", v->valuedouble);
        return arena_printf(a, "%.15g", v->valuedouble);
    }
    if (!v || cJSON_IsNull(v))
        return "";
    s = cJSON_PrintUnformatted(v);
    if (!s)
        return "";
    t = arena_strdup(a, s);
    cJSON_free(s);
    return t;
}

/* The first of 'names' present in obj (keys compared without case). */
static const cJSON *member(const cJSON *obj, const char *const *names)
{
    for (; *names; names++) {
        const cJSON *v = cJSON_GetObjectItem(obj, *names);

        if (v)
            return v;
    }
    return NULL;
}

static const char *const question_keys[] = {"question", "input", "problem", NULL};
static const char *const answer_keys[] = {"answer", "output", "solution", NULL};

static bool is_example(const cJSON *o)
{
    return cJSON_IsObject(o) && member(o, question_keys) && member(o, answer_keys);
}

/* Appends one example object to ex[*n..max) unless its question or answer is empty. */
static void add_example(struct arena *a, const cJSON *o, struct example *ex, int *n, int max)
{
    const char *question = json_text(a, member(o, question_keys));
    const char *answer = json_text(a, member(o, answer_keys));

    if (*n < max && *question && *answer) {
        ex[*n].question = question;
        ex[*n].answer = answer;
        (*n)++;
    }
}

/* Appends the examples of a parsed value to ex[*n..max). Returns false when the value does
 * not look like an example list at all (the search for one then goes on). */
static bool take_examples(struct arena *a, const cJSON *v, struct example *ex, int *n, int max)
{
    const cJSON *it;
    bool any_object = false;

    if (is_example(v)) {
        add_example(a, v, ex, n, max);
        return true;
    }
    if (cJSON_IsObject(v)) { /* {"examples": [...]} */
        cJSON_ArrayForEach(it, v)
        {
            if (cJSON_IsArray(it) && take_examples(a, it, ex, n, max))
                return true;
        }
        return false;
    }
    if (!cJSON_IsArray(v))
        return false;
    if (cJSON_GetArraySize(v) == 0)
        return true; /* "[]": the model found none */
    cJSON_ArrayForEach(it, v)
    {
        if (!cJSON_IsObject(it))
            continue; /* a stray string or number among the examples */
        any_object = true;
        if (is_example(it))
            add_example(a, it, ex, n, max);
    }
    return any_object;
}

/* The examples listed in the extraction reply: the first JSON array of examples, or object
 * holding one, inside <output> if there is one, else anywhere in the reply. Example objects
 * standing alone are collected one by one, which also recovers the complete items of an
 * array cut short by max_tokens. */
static int parse_examples(struct arena *a, const char *reply, struct example *ex, int max)
{
    const char *region = output_of(a, reply);
    const char *p;
    int tries = 0;
    int n = 0;

    if (!region || !strpbrk(region, "[{"))
        region = reply;
    for (p = strpbrk(region, "[{"); p && tries < MAX_JSON_TRIES; tries++) {
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(p, strlen(p), &end, false);
        bool found;

        if (!v) {
            p = strpbrk(p + 1, "[{");
            continue;
        }
        if (is_example(v) && end) {
            add_example(a, v, ex, &n, max);
            cJSON_Delete(v);
            p = strpbrk(end, "[{");
            continue;
        }
        found = take_examples(a, v, ex, &n, max);
        cJSON_Delete(v);
        if (found)
            break;
        p = strpbrk(p + 1, "[{");
    }
    return n;
}

/* The conversation as one text for the extraction: the last user message alone, or, when
 * there are earlier turns, every user and assistant turn labelled with its role. */
static const char *conversation_text(struct approach_ctx *ctx)
{
    const struct chat_request *req = ctx->req;
    struct buf b;
    const char *s;
    size_t turns = 0;

    for (size_t i = 0; i < req->nmsgs; i++)
        if (!strcmp(req->msgs[i].role, "user") || !strcmp(req->msgs[i].role, "assistant"))
            turns++;
    if (turns <= 1)
        return chat_last_user(req);
    buf_init(&b, 0);
    for (size_t i = 0; i < req->nmsgs; i++) {
        const char *role = req->msgs[i].role;

        if (!strcmp(role, "user"))
            buf_printf(&b, "%sUser: %s", b.len ? "\n\n" : "", req->msgs[i].content);
        else if (!strcmp(role, "assistant"))
            buf_printf(&b, "%sAssistant: %s", b.len ? "\n\n" : "", req->msgs[i].content);
    }
    s = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

/* ---- mistakes and principles -------------------------------------------------------------- */

/* Is s a lone option letter: "B", "b.", "(C)"? */
static bool lone_letter(struct arena *a, const char *s)
{
    const char *n = answer_normalize(a, s);
    char c = 0;
    int letters = 0;

    for (; *n; n++) {
        if (*n == '(' || *n == ')')
            continue;
        c = *n;
        letters++;
    }
    return letters == 1 && c >= 'a' && c <= 'j';
}

/* A final answer for comparison: what answer_extract finds (an option letter when 'hint' is
 * ANSWER_CHOICE or s is a lone letter), else the normalised text. */
static struct answer answer_of(struct arena *a, const char *s, enum answer_kind hint)
{
    struct answer x = answer_extract(a, s, hint);

    if (x.kind == ANSWER_NONE && hint != ANSWER_CHOICE && lone_letter(a, s))
        x = answer_extract(a, s, ANSWER_CHOICE);
    if (x.kind == ANSWER_NONE && !blank(s)) {
        x.kind = ANSWER_TEXT;
        x.text = answer_normalize(a, s);
    }
    return x;
}

static void set_call(struct approach_ctx *ctx, struct llm_call *c, const char *user,
                     const char *stage)
{
    struct llm_msg *msgs;

    c->nmsgs = llm_msgs2(ctx, chat_system(ctx->arena, ctx->req), user, &msgs);
    c->msgs = msgs;
    c->params = llm_params_default();
    c->params.max_tokens = STAGE_MAX_TOKENS;
    c->stage = stage;
}

/* Every example answered with a deliberate mistake, in one round. The answers that really are
 * wrong go to m[]; returns how many, or a negative px_status when every call failed. */
static int find_mistakes(struct approach_ctx *ctx, const struct example *ex, int ne,
                         struct mistake *m)
{
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)ne, sizeof(*calls));
    int nm = 0;
    int rc;

    for (int i = 0; i < ne; i++) {
        set_call(ctx, &calls[i],
                 approach_prompt(ctx, "leap/mistake", "question", ex[i].question, NULL),
                 "leap/mistake");
        calls[i].params.temperature = MISTAKE_TEMPERATURE;
    }
    rc = llm_batch(ctx, calls, (size_t)ne);
    if (rc < 0)
        return rc;
    for (int i = 0; i < ne; i++) {
        const struct llm_reply *r = &calls[i].reply;
        const char *text;
        const char *given;
        struct answer want;
        struct answer got;

        if (r->status != PX_OK || r->nchoices < 1 || blank(r->choices[0].text))
            continue;
        text = r->choices[0].text;
        given = output_of(ctx->arena, text);
        want = answer_of(ctx->arena, ex[i].answer, ANSWER_NONE);
        /* Without <output>, the answer the reasoning ends on (if any) is compared. */
        if (given)
            got = answer_of(ctx->arena, given,
                            want.kind == ANSWER_CHOICE ? ANSWER_CHOICE : ANSWER_NONE);
        else
            got = answer_extract(ctx->arena, text, want.kind);
        if (answer_equal(&got, &want))
            continue; /* the "mistake" did not change the answer: nothing to learn */
        m[nm].ex = &ex[i];
        m[nm].reasoning = text;
        m[nm].answer = given ? given : got.kind != ANSWER_NONE ? got.text : "";
        nm++;
    }
    return nm;
}

/* The low-level principles of every mistake, in one round, joined in example order (blank
 * ones left out); "" when none came back; a negative px_status when every call failed. */
static int low_level(struct approach_ctx *ctx, const struct mistake *m, int nm, const char **out)
{
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)nm, sizeof(*calls));
    struct buf b;
    int rc;

    for (int i = 0; i < nm; i++)
        set_call(ctx, &calls[i],
                 approach_prompt(ctx, "leap/principles", "question", m[i].ex->question, "reasoning",
                                 m[i].reasoning, "answer", m[i].answer, "correct", m[i].ex->answer,
                                 NULL),
                 "leap/principles");
    rc = llm_batch(ctx, calls, (size_t)nm);
    if (rc < 0)
        return rc;
    buf_init(&b, 0);
    for (int i = 0; i < nm; i++) {
        const struct llm_reply *r = &calls[i].reply;
        const char *p;

        if (r->status != PX_OK || r->nchoices < 1)
            continue;
        p = output_or_all(ctx->arena, r->choices[0].text);
        if (*p)
            buf_printf(&b, "%s%s", b.len ? "\n" : "", p);
    }
    *out = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return PX_OK;
}

/* The merged list of at most 8 principles; the low-level ones when the merge gave nothing. */
static const char *high_level(struct approach_ctx *ctx, const char *low)
{
    struct llm_call call = {0};
    const char *p;

    set_call(ctx, &call, approach_prompt(ctx, "leap/merge", "principles", low, NULL), "leap/merge");
    if (llm_batch(ctx, &call, 1) < 0)
        return low;
    p = output_or_all(ctx->arena, call.reply.choices[0].text);
    return *p ? p : low;
}

/* ---- the answer --------------------------------------------------------------------------- */

static int final_answer(struct approach_ctx *ctx, const char *principles, struct chat_result *out)
{
    struct llm_params p = llm_params_default();
    struct llm_choice c;
    struct llm_msg *msgs;
    size_t nmsgs;
    int rc;

    if (*principles) {
        /* Our system message carries the client's system prompt, so theirs are left out. */
        const char *sys =
            approach_prompt(ctx, "leap/final", "system", chat_system(ctx->arena, ctx->req),
                            "principles", principles, NULL);
        size_t m = 1;

        nmsgs =
            llm_msgs_conversation(ctx, arena_strtrim(ctx->arena, sys, strlen(sys)), NULL, &msgs);
        for (size_t i = 1; i < nmsgs; i++)
            if (strcmp(msgs[i].role, "system") != 0 && strcmp(msgs[i].role, "developer") != 0)
                msgs[m++] = msgs[i];
        nmsgs = m;
    } else {
        nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    }
    p.max_tokens = ctx->req->max_tokens > 0 ? ctx->req->max_tokens : STAGE_MAX_TOKENS;
    rc = llm_final(ctx, msgs, nmsgs, &p, "leap/final", &c);
    if (rc < 0)
        return rc;
    out->text = c.text;
    out->logprobs = c.logprobs;
    out->finish_reason =
        c.finish_reason && strcmp(c.finish_reason, "length") == 0 ? "length" : "stop";
    return PX_OK;
}

static int leap_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int max = (int)approach_opt(ctx, "leap_max_examples");
    struct llm_call call = {0};
    struct example *ex;
    struct mistake *m;
    const char *low = "";
    int ne;
    int nm;
    int rc;

    max = max < 1 ? 1 : max;
    set_call(ctx, &call,
             approach_prompt(ctx, "leap/extract", "query", conversation_text(ctx), NULL),
             "leap/extract");
    rc = llm_batch(ctx, &call, 1);
    if (rc < 0)
        return rc;
    ex = arena_calloc(ctx->arena, (size_t)max, sizeof(*ex));
    ne = parse_examples(ctx->arena, call.reply.choices[0].text, ex, max);
    if (ne == 0)
        return final_answer(ctx, "", out);

    m = arena_calloc(ctx->arena, (size_t)ne, sizeof(*m));
    nm = find_mistakes(ctx, ex, ne, m);
    if (nm < 0)
        return nm;
    if (nm == 0)
        return final_answer(ctx, "", out);

    rc = low_level(ctx, m, nm, &low);
    if (rc < 0)
        return rc;
    return final_answer(ctx, *low ? high_level(ctx, low) : "", out);
}

static const struct approach_option leap_options[] = {
    {.name = "leap_max_examples",
     .def = 16,
     .min = 1,
     .max = 64,
     .integer = true,
     .help = "worked examples from the prompt that leap learns from, at most"},
    {.name = NULL},
};

const struct approach approach_leap = {
    .slug = "leap",
    .aliases = NULL,
    .run = leap_run,
    .prompts = (const char *const[]){"leap/extract", "leap/mistake", "leap/principles",
                                     "leap/merge", "leap/final", NULL},
    .options = leap_options,
    .summary = "LEAP: principles learnt from deliberate mistakes on the prompt's worked examples "
               "guide the answer",
    .calls = 2,
    .rounds = 2,
    .response_format = true, /* its answer is always its llm_final stage */
};
