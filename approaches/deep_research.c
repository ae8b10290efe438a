/* deep_research.c: test-time diffusion deep research (OptiLLM's deep_research, TTD-DR,
 * shared/approaches.md 3), bounded: a plan call writes up to deep_research_queries search
 * queries; they are searched at once on the operator's --search-url (SearxNG-compatible JSON,
 * as web_search; one fetch_batch: a step's searches in parallel); a draft call writes a first
 * answer citing the numbered sources; then at most deep_research_iterations times a gaps call
 * names what is missing as new queries ("QUERY: NONE" ends the loop early), those are
 * searched at once, and a denoise call revises the draft with all sources; a final report
 * call (streamed) writes the report with [n] citations and a References list.
 *
 * Calls at defaults (2 iterations): plan, draft, 2 x (gaps, denoise), report = 7, all
 * sequential. Sources: at most deep_research_results per query, distinct URLs, at most 60.
 * A failed or junk search is logged and contributes nothing; no --search-url is a 400. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "fetch.h"
#include "log.h"

#define MAX_QUERIES 8
#define MAX_SOURCES 60

struct source {
    const char *title, *url, *snippet;
};

struct research {
    struct approach_ctx *ctx;
    const char *base;
    struct source src[MAX_SOURCES];
    size_t nsrc;
    size_t per_query;
    int searches; /* search requests made */
};

static const char *enc(struct arena *a, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(s);
    char *out = arena_alloc(a, len * 3 + 1), *o = out;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

static const char *item(struct arena *a, const cJSON *o, const char *name, size_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    const char *s = cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
    size_t len = strlen(s);
    char *out;

    if (len > max) {
        while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
            max--;
        len = max;
    }
    out = arena_strndup(a, s, len);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    return out;
}

/* The "QUERY: ..." lines of text (NONE skipped), at most max. */
static size_t queries_of(struct arena *a, const char *text, const char **q, size_t max)
{
    size_t n = 0;

    for (const char *p = text; p && *p && n < max;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *at = NULL;

        for (size_t j = 0; j + 6 <= len && !at; j++)
            if (strncmp(p + j, "QUERY:", 6) == 0)
                at = p + j;

        if (at) {
            const char *s = at + 6;
            size_t l = len - (size_t)(s - p);

            while (l && (*s == ' ' || *s == '*' || *s == '"'))
                s++, l--;
            while (l && strchr(" \r*\"", s[l - 1]))
                l--;
            if (l && l < 400 && !(l == 4 && strncmp(s, "NONE", 4) == 0))
                q[n++] = arena_strndup(a, s, l);
        }
        p = eol ? eol + 1 : NULL;
    }
    return n;
}

/* Searches q[0..n-1] at once; new distinct results become sources. */
static void search(struct research *r, const char **q, size_t n, double timeout)
{
    struct arena *a = r->ctx->arena;
    struct fetch_req *fr = arena_calloc(a, n, sizeof(*fr));
    struct fetch_limits lim = {
        .max_bytes = 4u << 20,
        .timeout = timeout,
        .max_redirects = 0,
        .allow = "0.0.0.0/0,::/0", /* the operator's own backend: trusted as configured */
    };

    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        fr[i].url = arena_printf(a, "%s%sq=%s&format=json", r->base,
                                 strchr(r->base, '?') ? "&" : "?", enc(a, q[i]));
    fetch_batch(r->ctx, fr, n, &lim);
    r->searches += (int)n;
    for (size_t i = 0; i < n; i++) {
        cJSON *doc = fr[i].status == PX_OK ? cJSON_ParseWithLength(fr[i].body, fr[i].len) : NULL;
        const cJSON *res = cJSON_GetObjectItemCaseSensitive(doc, "results"), *it;
        size_t k = 0;

        if (!cJSON_IsArray(res)) {
            log_at(LOG_WARN, r->ctx->req_id, "deep_research: search \"%s\": %s", q[i],
                   fr[i].status != PX_OK ? (fr[i].error ? fr[i].error : "failed")
                                         : "not a SearxNG JSON answer");
            cJSON_Delete(doc);
            continue;
        }
        cJSON_ArrayForEach(it, res)
        {
            const char *url = item(a, it, "url", 2000);
            bool dup = false;

            if (k >= r->per_query || r->nsrc >= MAX_SOURCES)
                break;
            if (!*url)
                continue;
            for (size_t j = 0; j < r->nsrc && !dup; j++)
                dup = strcmp(r->src[j].url, url) == 0;
            k++;
            if (dup)
                continue;
            r->src[r->nsrc].url = url;
            r->src[r->nsrc].title = item(a, it, "title", 300);
            r->src[r->nsrc++].snippet = item(a, it, "content", 1000);
        }
        cJSON_Delete(doc);
    }
}

static const char *sources_text(struct research *r)
{
    const char *t = "";

    for (size_t i = 0; i < r->nsrc; i++)
        t = arena_printf(r->ctx->arena, "%s[%zu] %s - %s\n    %s\n", t, i + 1, r->src[i].title,
                         r->src[i].url, r->src[i].snippet);
    return *t ? t : "(no search results)";
}

static int ask(struct approach_ctx *ctx, const char *prompt, const char *stage, const char **out)
{
    struct llm_params p = llm_params_default();
    struct llm_msg *m;
    size_t nm = llm_msgs2(ctx, NULL, prompt, &m);
    struct llm_choice c;
    int rc;

    rc = llm_sample(ctx, m, nm, &p, 1, stage, &c);
    if (rc < 0)
        return rc;
    *out = c.text ? c.text : "";
    return PX_OK;
}

static int deep_research_run(struct approach_ctx *ctx, struct chat_result *out)
{
    struct research *r = arena_calloc(ctx->arena, 1, sizeof(*r));
    const char *question = chat_last_user(ctx->req);
    int iterations = (int)approach_opt(ctx, "deep_research_iterations");
    size_t nq = (size_t)approach_opt(ctx, "deep_research_queries");
    double timeout = approach_opt(ctx, "deep_research_timeout");
    const char *q[MAX_QUERIES], *text, *draft;
    char nbuf[16];
    size_t n;
    int rc, it;

    r->ctx = ctx;
    r->base = approach_search_url(ctx);
    r->per_query = (size_t)approach_opt(ctx, "deep_research_results");
    if (!r->base)
        return px_fail(ctx->err, PX_EINVAL, NULL,
                       "deep_research needs a search backend: start the server with "
                       "--search-url URL (a SearxNG-compatible JSON API)");
    snprintf(nbuf, sizeof(nbuf), "%zu", nq);
    rc = ask(ctx, approach_prompt(ctx, "deep_research/plan", "question", question, "n", nbuf, NULL),
             "deep_research/plan", &text);
    if (rc < 0)
        return rc;
    n = queries_of(ctx->arena, text, q, nq);
    if (n == 0) { /* no usable query: the question itself */
        q[0] = question;
        n = 1;
    }
    search(r, q, n, timeout);
    rc = ask(ctx,
             approach_prompt(ctx, "deep_research/draft", "question", question, "sources",
                             sources_text(r), NULL),
             "deep_research/draft", &draft);
    if (rc < 0)
        return rc;
    for (it = 0; it < iterations; it++) {
        rc = ask(ctx,
                 approach_prompt(ctx, "deep_research/gaps", "question", question, "draft", draft,
                                 "n", nbuf, NULL),
                 "deep_research/gaps", &text);
        if (rc < 0)
            return rc;
        n = queries_of(ctx->arena, text, q, nq);
        if (n == 0)
            break; /* nothing missing */
        search(r, q, n, timeout);
        rc = ask(ctx,
                 approach_prompt(ctx, "deep_research/denoise", "question", question, "draft", draft,
                                 "sources", sources_text(r), NULL),
                 "deep_research/denoise", &draft);
        if (rc < 0)
            return rc;
    }
    log_at(LOG_INFO, ctx->req_id, "deep_research: %d iterations, %d searches, %zu sources", it,
           r->searches, r->nsrc);

    struct llm_params p = llm_params_default();
    struct llm_msg *m;
    size_t nm = llm_msgs2(ctx, NULL,
                          approach_prompt(ctx, "deep_research/report", "question", question,
                                          "draft", draft, "sources", sources_text(r), NULL),
                          &m);
    struct llm_choice fin;

    rc = llm_final(ctx, m, nm, &p, "deep_research/report", &fin);
    if (rc < 0)
        return rc;
    out->text = fin.text;
    out->finish_reason =
        fin.finish_reason && strcmp(fin.finish_reason, "length") == 0 ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option deep_research_options[] = {
    {.name = "deep_research_iterations",
     .def = 2,
     .min = 0,
     .max = 5,
     .integer = true,
     .help = "deep_research: denoising rounds at most (each: gaps, searches, revision)"},
    {.name = "deep_research_queries",
     .def = 3,
     .min = 1,
     .max = MAX_QUERIES,
     .integer = true,
     .help = "deep_research: search queries per step at most (searched at once)"},
    {.name = "deep_research_results",
     .def = 3,
     .min = 1,
     .max = 10,
     .integer = true,
     .help = "deep_research: results kept per query"},
    {.name = "deep_research_timeout",
     .def = 10,
     .min = 0.1,
     .max = 120,
     .help = "deep_research: seconds one step's searches may take"},
    {.name = NULL},
};

const struct approach approach_deep_research = {
    .slug = "deep_research",
    .run = deep_research_run,
    .prompts =
        (const char *const[]){"deep_research/plan", "deep_research/draft", "deep_research/gaps",
                              "deep_research/denoise", "deep_research/report", NULL},
    .options = deep_research_options,
    .summary = "TTD-DR deep research: plan, parallel searches on --search-url, draft, bounded "
               "denoising with more searches, a final report citing sources as [n]",
    .calls = 7,
    .rounds = 7,
    .offload = true,
};
