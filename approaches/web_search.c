/* web_search.c: a plugin (prepare) that searches the web through a backend the operator hosts
 * (OptiLLM's web_search, shared/approaches.md 3): --search-url names a SearxNG-compatible JSON
 * API; the query is the user's last message (cut to 400 bytes; no model call), sent as
 * GET <url>?q=<query>&format=json through fetch_batch (include/fetch.h). The first
 * web_search_results results {title, url, content} become one system message placed before
 * the last user message: "[n] title\n    url\n    snippet", so that the steps after it can cite
 * them as [n].
 *
 * The search URL is the operator's setting and is trusted as configured (an intranet SearxNG
 * works without --readurls-allow): its request is not under the SSRF guard. With
 * web_search_fetch N > 0 the pages of the first N results are fetched too, all at once, through
 * readurls' guarded fetcher (the SSRF guard and --readurls-allow, readurls_timeout,
 * readurls_max_fetch_kib) and up to web_search_page_bytes of each page's readable text is added
 * under its result; a page that fails or has no readable text keeps only its snippet (logged).
 *
 * Outcomes: no --search-url: 400 naming the flag; the backend timed out: 504; unreachable, an
 * error status, not JSON or not {"results": [...]}: 502 naming the backend's fault; zero
 * results: the system message says so and the request goes on. No upstream call: calls 0,
 * rounds 0. */
#include <cjson/cJSON.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "fetch.h"
#include "log.h"

#define QUERY_MAX 400

/* Percent-encodes s (RFC 3986 unreserved kept) into 'a'. */
static const char *url_encode(struct arena *a, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
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

static const char *str_item(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

/* One line of text: newlines folded, cut at max bytes on a UTF-8 boundary. */
static const char *one_line(struct arena *a, const char *s, size_t max)
{
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

/* The pages of results[0..n) fetched through the guard: texts[i] is the readable text cut to
 * max bytes, or NULL. */
static void fetch_pages(struct approach_ctx *ctx, const char *const *urls, size_t n, size_t max,
                        const char **texts)
{
    struct fetch_req *fr = arena_calloc(ctx->arena, n, sizeof(*fr));
    struct fetch_limits lim = {
        .max_bytes = (size_t)approach_opt(ctx, "readurls_max_fetch_kib") * 1024,
        .timeout = approach_opt(ctx, "readurls_timeout"),
        .max_redirects = 5,
        .allow = NULL, /* the operator's --readurls-allow */
    };

    for (size_t i = 0; i < n; i++)
        fr[i].url = urls[i];
    fetch_batch(ctx, fr, n, &lim);
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        const char *text = fr[i].status == PX_OK ? fetch_readable(ctx->arena, &fr[i], &why) : NULL;

        texts[i] = NULL;
        if (fr[i].status != PX_OK)
            continue; /* logged by fetch_batch */
        if (!text || !*text) {
            log_at(LOG_WARN, ctx->req_id, "web_search: %s: %s", urls[i],
                   why ? why : "no readable text");
            continue;
        }
        texts[i] = one_line(ctx->arena, text, max);
    }
}

static int web_search_prepare(struct approach_ctx *ctx, struct chat_request *next,
                              struct approach_post *post)
{
    const struct chat_request *req = ctx->req;
    const char *base = approach_search_url(ctx);
    size_t max_results = (size_t)approach_opt(ctx, "web_search_results");
    size_t last = req->nmsgs, qlen;
    const char *query;
    struct fetch_req fr = {0};
    struct fetch_limits lim = {
        .max_bytes = 4u << 20,
        .timeout = approach_opt(ctx, "web_search_timeout"),
        .max_redirects = 0,
        .allow = "0.0.0.0/0,::/0", /* the operator's own backend: trusted as configured */
    };

    (void)post;
    if (!base)
        return px_fail(ctx->err, PX_EINVAL, NULL,
                       "web_search needs a search backend: start the server with --search-url "
                       "URL (a SearxNG-compatible JSON API)");
    for (size_t i = 0; i < req->nmsgs; i++)
        if (req->msgs[i].role && strcmp(req->msgs[i].role, "user") == 0 && req->msgs[i].content &&
            *req->msgs[i].content)
            last = i;
    if (last == req->nmsgs)
        return PX_OK; /* nothing to search for */
    query = req->msgs[last].content;
    qlen = strlen(query);
    if (qlen > QUERY_MAX) {
        qlen = QUERY_MAX;
        while (qlen > 0 && ((unsigned char)query[qlen] & 0xC0) == 0x80)
            qlen--;
    }
    fr.url = arena_printf(ctx->arena, "%s%sq=%s&format=json", base, strchr(base, '?') ? "&" : "?",
                          url_encode(ctx->arena, query, qlen));
    fetch_batch(ctx, &fr, 1, &lim);
    if (fr.status != PX_OK)
        return px_fail(
            ctx->err, fr.status == PX_ETIMEDOUT ? PX_ETIMEDOUT : PX_EUPSTREAM, NULL,
            "web_search: the search backend failed: %s%s", fr.error ? fr.error : "no answer",
            fr.http_status ? arena_printf(ctx->arena, " (HTTP %d)", fr.http_status) : "");

    cJSON *doc = cJSON_ParseWithLength(fr.body, fr.len);
    const cJSON *results = doc ? cJSON_GetObjectItemCaseSensitive(doc, "results") : NULL;

    if (!cJSON_IsArray(results)) {
        cJSON_Delete(doc);
        return px_fail(ctx->err, PX_EUPSTREAM, NULL,
                       "web_search: the search backend's answer is %s",
                       doc ? "not {\"results\": [...]}" : "not JSON");
    }
    const char *text =
        arena_printf(ctx->arena, "Web search results for \"%s\":",
                     one_line(ctx->arena, arena_strndup(ctx->arena, query, qlen), QUERY_MAX));
    size_t k = 0, nfetch = (size_t)approach_opt(ctx, "web_search_fetch");
    const char **title = arena_calloc(ctx->arena, max_results, sizeof(*title));
    const char **url = arena_calloc(ctx->arena, max_results, sizeof(*url));
    const char **snippet = arena_calloc(ctx->arena, max_results, sizeof(*snippet));
    const char **page = arena_calloc(ctx->arena, max_results, sizeof(*page));
    const cJSON *r;

    cJSON_ArrayForEach(r, results)
    {
        if (k >= max_results)
            break;
        if (!cJSON_IsObject(r) || !*str_item(r, "url"))
            continue; /* a result without a URL cannot be cited */
        title[k] = one_line(ctx->arena, str_item(r, "title"), 300);
        url[k] = one_line(ctx->arena, str_item(r, "url"), 2000);
        snippet[k] = one_line(ctx->arena, str_item(r, "content"), 1000);
        k++;
    }
    cJSON_Delete(doc);
    if (nfetch > k)
        nfetch = k;
    if (nfetch > 0)
        fetch_pages(ctx, url, nfetch, (size_t)approach_opt(ctx, "web_search_page_bytes"), page);
    for (size_t i = 0; i < k; i++) {
        text = arena_printf(ctx->arena, "%s\n[%zu] %s\n    %s\n    %s", text, i + 1, title[i],
                            url[i], snippet[i]);
        if (page[i])
            text = arena_printf(ctx->arena, "%s\n    Page: %s", text, page[i]);
    }
    if (k == 0)
        text = arena_printf(ctx->arena, "%s\n(no results)", text);
    else
        text =
            arena_printf(ctx->arena, "%s\n\nCite these sources as [n] where you use them.", text);
    log_at(LOG_INFO, ctx->req_id, "web_search: %zu results", k);

    struct chat_msg *m = arena_calloc(ctx->arena, req->nmsgs + 1, sizeof(*m));
    size_t nm = 0;

    for (size_t i = 0; i < req->nmsgs; i++) {
        if (i == last) {
            m[nm].role = "system";
            m[nm++].content = text;
        }
        m[nm++] = req->msgs[i];
    }
    next->msgs = m;
    next->nmsgs = nm;
    return PX_OK;
}

static const struct approach_option web_search_options[] = {
    {.name = "web_search_results",
     .def = 5,
     .min = 1,
     .max = 50,
     .integer = true,
     .help = "web_search: results added to the context at most"},
    {.name = "web_search_timeout",
     .def = 10,
     .min = 0.1,
     .max = 120,
     .help = "web_search: seconds the search backend may take"},
    {.name = "web_search_fetch",
     .def = 0,
     .min = 0,
     .max = 10,
     .integer = true,
     .help = "web_search: the pages of the first N results fetched (through readurls' SSRF "
             "guard and limits) and their text added under each result (0: snippets only)"},
    {.name = "web_search_page_bytes",
     .def = 4000,
     .min = 100,
     .max = 100000,
     .integer = true,
     .help = "web_search: text bytes added per fetched page"},
    {.name = NULL},
};

const struct approach approach_web_search = {
    .slug = "web_search",
    .prepare = web_search_prepare,
    .options = web_search_options,
    .summary = "Plugin: the user's last message searched on the operator's SearxNG-compatible "
               "backend (--search-url); the results added to the context for citation",
    .calls = 0,
    .rounds = 0,
    .tools = true,
    .response_format = true,
    /* the search request blocks this thread up to its timeout: a helper thread */
    .offload = true,
};
