/* llm_api.c: llm_sample / llm_batch / llm_final on top of a transport (struct llm_ops):
 * n detection and fallback, partial failure, usage accounting. Transport-independent, so the
 * approaches' unit tests run it over a fake transport. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "config.h"
#include "log.h"
#include "prompt.h"

struct llm_params llm_params_default(void)
{
    struct llm_params p = {.temperature = NAN, .max_tokens = -1, .n = 1};

    return p;
}

void llm_usage_add(struct usage *to, const struct usage *u)
{
    to->prompt_tokens += u->prompt_tokens;
    to->completion_tokens += u->completion_tokens;
    to->reasoning_tokens += u->reasoning_tokens;
    to->calls += u->calls;
    to->reported += u->reported;
}

void llm_usage_parse(const cJSON *u, struct usage *out)
{
    const cJSON *v;

    if (!cJSON_IsObject(u))
        return;
    out->reported = 1;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens")))
        out->prompt_tokens = px_count(v->valuedouble);
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens")))
        out->completion_tokens = px_count(v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens_details");
    if (cJSON_IsObject(v) &&
        cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(v, "reasoning_tokens")))
        out->reasoning_tokens = px_count(v->valuedouble);
}

static int fail_from(struct approach_ctx *ctx, const struct llm_reply *r)
{
    const char *msg = r->error && *r->error ? r->error : "upstream call failed";

    if (r->status == PX_EHTTP || r->http_status >= 400) {
        px_fail_http(ctx->err, r->http_status, msg);
        /* Keep the upstream's own type and code, as a passthrough would. */
        if (ctx->err && r->error_type)
            snprintf(ctx->err->type, sizeof(ctx->err->type), "%s", r->error_type);
        if (ctx->err && r->error_code)
            snprintf(ctx->err->err_code, sizeof(ctx->err->err_code), "%s", r->error_code);
        return PX_EHTTP;
    }
    return px_fail(ctx->err, r->status < 0 ? r->status : PX_EUPSTREAM, NULL, "%s", msg);
}

static void run(struct approach_ctx *ctx, struct llm_call *calls, size_t m)
{
    long left = llm_budget_calls_left(ctx);
    size_t send = left >= (long)m ? m : left > 0 ? (size_t)left : 0;

    /* The request's call budget is a hard cap: calls beyond it fail unsent. */
    for (size_t i = send; i < m; i++) {
        memset(&calls[i].reply, 0, sizeof(calls[i].reply));
        calls[i].reply.status = PX_EINVAL;
        calls[i].reply.error = "the request's upstream call budget (optillm_max_calls) is spent";
    }
    m = send;
    if (m > 0)
        ctx->llm->ops->run(ctx->llm, ctx, calls, m);
    for (size_t i = 0; i < m; i++)
        llm_usage_add(&ctx->usage, &calls[i].reply.usage);
}

int llm_batch(struct approach_ctx *ctx, struct llm_call *calls, size_t m)
{
    int ok = 0;

    if (m == 0)
        return 0;
    run(ctx, calls, m);
    for (size_t i = 0; i < m; i++)
        if (calls[i].reply.status == PX_OK && calls[i].reply.nchoices > 0)
            ok++;
    if (ok == 0) {
        for (size_t i = 0; i < m; i++)
            if (calls[i].reply.status != PX_OK)
                return fail_from(ctx, &calls[i].reply);
        return px_fail(ctx->err, PX_EUPSTREAM, NULL, "the upstream returned no choices");
    }
    return ok;
}

/* Is the word 'w' in s at position i a whole word (not part of tool_choice, an, ...)? */
static bool whole_word(const char *s, size_t i, size_t wl)
{
    char b = i ? s[i - 1] : ' ';
    char a = s[i + wl];

    return !(isalnum((unsigned char)b) || b == '_') && !(isalnum((unsigned char)a) || a == '_');
}

static bool has_word(const char *s, const char *w)
{
    size_t wl = strlen(w);

    for (const char *p = strstr(s, w); p; p = strstr(p + 1, w))
        if (whole_word(s, (size_t)(p - s), wl))
            return true;
    return false;
}

bool llm_refuses_n(const struct llm_reply *r)
{
    static const char *const phrases[] = {
        "only one completion choice", /* llama.cpp */
        "only one choice",
        "more than one choice",
        "multiple choices",
        "number of choices",
        "number of completions",
    };
    char low[512];
    size_t i;

    if (r->http_status != 400 && r->http_status != 422 && r->http_status != 500)
        return false;
    if (!r->error || !*r->error)
        return false; /* nothing names n: an unrelated failure */
    for (i = 0; i + 1 < sizeof(low) && r->error[i]; i++)
        low[i] = (char)tolower((unsigned char)r->error[i]);
    low[i] = '\0';
    for (i = 0; i < PX_ARRAY_LEN(phrases); i++)
        if (strstr(low, phrases[i]))
            return true;
    /* The parameter n named as a word of its own: 'n', "n", `n`, n must/should/is not/>/=...,
     * parameter n. Not tool_choice, not an 'n' inside another word. */
    for (const char *p = low; (p = strchr(p, 'n')) != NULL; p++) {
        size_t at = (size_t)(p - low);
        char b = at ? low[at - 1] : ' ';
        const char *rest = p + 1;

        if (!whole_word(low, at, 1))
            continue;
        if ((b == '\'' || b == '"' || b == '`') && *rest == b)
            return true;
        while (*rest == ' ')
            rest++;
        if (*rest == '>' || *rest == '=' || *rest == '<' || strncmp(rest, "must", 4) == 0 ||
            strncmp(rest, "should", 6) == 0 || strncmp(rest, "is not", 6) == 0 ||
            strncmp(rest, "not supported", 13) == 0 || strncmp(rest, "> 1", 3) == 0)
            return true;
        if ((at >= 10 && strncmp(p - 10, "parameter ", 10) == 0) ||
            (at >= 6 && strncmp(p - 6, "param ", 6) == 0))
            return true;
    }
    return has_word(low, "n_choices");
}

int llm_sample(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
               const struct llm_params *p, int k, const char *stage, struct llm_choice *out)
{
    struct llm_params base = p ? *p : llm_params_default();
    int got = 0;
    int need = k;
    const struct llm_reply *first_fail = NULL;

    if (k <= 0)
        return 0;
    if (k > 1 && ctx->llm->ops->get_n(ctx->llm) != 0) {
        struct llm_call c = {.msgs = msgs, .nmsgs = nmsgs, .params = base, .stage = stage};

        c.params.n = k;
        run(ctx, &c, 1);
        if (c.reply.status == PX_OK) {
            for (int i = 0; i < c.reply.nchoices && got < k; i++)
                out[got++] = c.reply.choices[i];
            if (got >= k) {
                if (ctx->llm->ops->get_n(ctx->llm) < 0)
                    ctx->llm->ops->set_n(ctx->llm, 1);
                return got;
            }
            /* Fewer choices than asked (Ollama ignores n): fetch the rest one by one. */
            log_at(LOG_INFO, ctx->req_id, "upstream returned %d of %d choices; using single calls",
                   c.reply.nchoices, k);
            ctx->llm->ops->set_n(ctx->llm, 0);
            need = k - got;
        } else if (llm_refuses_n(&c.reply)) {
            log_at(LOG_INFO, ctx->req_id,
                   "upstream refused n=%d (HTTP %d); using parallel single calls from now on", k,
                   c.reply.http_status);
            /* The refusal is not the stage's failure: only the single calls' results count. */
            ctx->llm->ops->set_n(ctx->llm, 0);
        } else {
            return fail_from(ctx, &c.reply);
        }
    }
    if (llm_budget_calls_left(ctx) < need) { /* single calls: no more than the budget */
        long left = llm_budget_calls_left(ctx);

        need = left > 0 ? (int)left : 0;
        if (need == 0)
            return got > 0 ? got
                           : px_fail(ctx->err, PX_EINVAL, NULL,
                                     "the request's upstream call budget is spent");
    }
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)need, sizeof(*calls));
    for (int i = 0; i < need; i++) {
        calls[i].msgs = msgs;
        calls[i].nmsgs = nmsgs;
        calls[i].params = base;
        calls[i].params.n = 1;
        calls[i].stage = stage;
    }
    run(ctx, calls, (size_t)need);
    for (int i = 0; i < need; i++) {
        if (calls[i].reply.status == PX_OK && calls[i].reply.nchoices > 0)
            out[got++] = calls[i].reply.choices[0];
        else if (calls[i].reply.status != PX_OK && !first_fail)
            first_fail = &calls[i].reply;
    }
    if (got == 0) {
        if (first_fail)
            return fail_from(ctx, first_fail);
        return px_fail(ctx->err, PX_EUPSTREAM, NULL, "the upstream returned no choices");
    }
    return got;
}

int llm_final(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
              const struct llm_params *p, const char *stage, struct llm_choice *out)
{
    struct llm_call c = {.msgs = msgs, .nmsgs = nmsgs, .stage = stage};

    c.params = p ? *p : llm_params_default();
    c.params.n = 1;
    c.params.answer = true; /* the final stage's output is the answer */
    c.stream_to_client = ctx->stream_final;
    run(ctx, &c, 1);
    if (c.reply.status != PX_OK)
        return fail_from(ctx, &c.reply);
    if (c.reply.nchoices < 1)
        return px_fail(ctx->err, PX_EUPSTREAM, NULL, "the upstream returned no choices");
    *out = c.reply.choices[0];
    return PX_OK;
}

size_t llm_msgs2(struct approach_ctx *ctx, const char *system, const char *user,
                 struct llm_msg **out)
{
    struct llm_msg *m = arena_calloc(ctx->arena, 2, sizeof(*m));
    size_t n = 0;

    if (system && *system) {
        m[n].role = "system";
        m[n++].content = system;
    }
    m[n].role = "user";
    m[n++].content = user ? user : "";
    *out = m;
    return n;
}

static void json_free(void *p)
{
    cJSON_Delete(p);
}

struct llm_msg llm_msg_tool_calls(struct approach_ctx *ctx, const char *text,
                                  const char *tool_calls)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *tc = tool_calls ? cJSON_Parse(tool_calls) : NULL;
    struct llm_msg m = {.role = "assistant", .content = text ? text : ""};

    cJSON_AddStringToObject(o, "role", "assistant");
    if (text && *text)
        cJSON_AddStringToObject(o, "content", text);
    else
        cJSON_AddNullToObject(o, "content");
    if (cJSON_IsArray(tc))
        cJSON_AddItemToObject(o, "tool_calls", tc);
    else
        cJSON_Delete(tc);
    arena_defer(ctx->arena, json_free, o);
    m.raw = o;
    return m;
}

struct llm_msg llm_msg_tool_result(struct approach_ctx *ctx, const char *tool_call_id,
                                   const char *content)
{
    cJSON *o = cJSON_CreateObject();
    struct llm_msg m = {.role = "tool", .content = content ? content : ""};

    cJSON_AddStringToObject(o, "role", "tool");
    cJSON_AddStringToObject(o, "tool_call_id", tool_call_id ? tool_call_id : "");
    cJSON_AddStringToObject(o, "content", content ? content : "");
    arena_defer(ctx->arena, json_free, o);
    m.raw = o;
    return m;
}

size_t llm_msgs_conversation(struct approach_ctx *ctx, const char *system_prefix,
                             const char *user_suffix, struct llm_msg **out)
{
    const struct chat_request *req = ctx->req;
    struct llm_msg *m = arena_calloc(ctx->arena, req->nmsgs + 2, sizeof(*m));
    size_t n = 0;

    if (system_prefix && *system_prefix) {
        m[n].role = "system";
        m[n++].content = system_prefix;
    }
    for (size_t i = 0; i < req->nmsgs; i++) {
        m[n].role = req->msgs[i].role;
        m[n].content = req->msgs[i].content;
        m[n++].raw = req->msgs[i].raw;
    }
    if (user_suffix && *user_suffix) {
        m[n].role = "user";
        m[n++].content = user_suffix;
    }
    *out = m;
    return n;
}

/* The handle is the configuration itself, typed so that approaches cannot look inside. */
const struct approach_opts *approach_opts_of(const struct config *cfg)
{
    return (const struct approach_opts *)(const void *)cfg;
}

static const struct config *opts_cfg(const struct approach_ctx *ctx)
{
    return (const struct config *)(const void *)ctx->opts;
}

double approach_opt(const struct approach_ctx *ctx, const char *name)
{
    return chat_option(ctx->req, opts_cfg(ctx), name);
}

double approach_opt_row(const struct approach_ctx *ctx, const struct approach_option *rows,
                        const char *name)
{
    const struct approach_option *o = rows;
    double v;

    while (o->name && strcmp(o->name, name) != 0)
        o++;
    if (approach_option_find(name))
        v = approach_opt(ctx, name);
    else
        v = opts_cfg(ctx) ? config_option(opts_cfg(ctx), name, o->def) : o->def;
    if (isnan(v) || v < o->min)
        v = o->min;
    if (v > o->max)
        v = o->max;
    return o->integer ? floor(v) : v;
}

bool approach_return_full(const struct approach_ctx *ctx)
{
    return opts_cfg(ctx) && opts_cfg(ctx)->return_full_response;
}

const char *approach_privacy_ner_url(const struct approach_ctx *ctx)
{
    return opts_cfg(ctx) && opts_cfg(ctx)->privacy_ner_url[0] ? opts_cfg(ctx)->privacy_ner_url
                                                              : NULL;
}

const char *approach_search_url(const struct approach_ctx *ctx)
{
    return opts_cfg(ctx) && opts_cfg(ctx)->search_url[0] ? opts_cfg(ctx)->search_url : NULL;
}

bool llm_msg_multipart(const struct llm_msg *m)
{
    return m->raw && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(m->raw, "content"));
}

char *approach_prompt(struct approach_ctx *ctx, const char *name, ...)
{
    const char *tmpl = prompt_get(name);
    va_list ap;
    char *s;

    if (!tmpl) {
        log_at(LOG_ERROR, ctx->req_id, "prompt %s is missing", name);
        return arena_strdup(ctx->arena, "");
    }
    va_start(ap, name);
    s = prompt_vrender(ctx->arena, tmpl, ap);
    va_end(ap);
    return s;
}

/* ---- per-request budgets ---------------------------------------------------------------- */

long llm_budget_calls_left(const struct approach_ctx *ctx)
{
    double opt = approach_option_find("max_calls") ? approach_opt(ctx, "max_calls") : 0;
    long lim = opt >= 1 ? (long)opt : 0;

    if (ctx->budget_tenant_calls > 0 && (lim == 0 || ctx->budget_tenant_calls < lim))
        lim = ctx->budget_tenant_calls;
    if (lim == 0)
        return LONG_MAX;
    return lim - ctx->budget_spent.calls - ctx->usage.calls;
}

long llm_budget_tokens_left(const struct approach_ctx *ctx)
{
    double opt = approach_option_find("max_tokens") ? approach_opt(ctx, "max_tokens") : 0;

    if (opt < 1)
        return LONG_MAX;
    return (long)opt - ctx->budget_spent.prompt_tokens - ctx->budget_spent.completion_tokens -
           ctx->usage.prompt_tokens - ctx->usage.completion_tokens;
}

int llm_budget_samples(const struct approach_ctx *ctx, int k, int per_sample, int reserve)
{
    long left = llm_budget_calls_left(ctx);
    bool n_ok = ctx->llm->ops->get_n(ctx->llm) != 0;

    if (left == LONG_MAX)
        return k;
    left -= reserve;
    for (int m = k; m >= 1; m--) {
        long cost = (n_ok || m == 1 ? 1 : m) + (m > 1 ? (long)m * per_sample : 0);

        if (cost <= left)
            return m;
    }
    return 0;
}

void llm_budget_note(struct approach_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    char buf[128];

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ctx->budget_note = arena_strdup(ctx->arena, buf);
}
