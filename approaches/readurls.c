/* readurls.c: a plugin (prepare) that reads the web pages the user's messages link to
 * (OptiLLM's readurls, shared/approaches.md 3.5). Every http(s) URL in the user messages (at
 * most readurls_max_urls distinct ones) is fetched at once through fetch_batch (include/
 * fetch.h: SSRF guard, size and time caps, redirects re-checked); each page's readable text
 * (HTML through libxml2, text, JSON, PDF through pdftotext) is cut to readurls_url_bytes and
 * the whole to readurls_total_bytes, and the URL's first occurrence becomes
 * "<url> [Content from <host>: <text>]" as in OptiLLM. A user message with several content
 * parts (images) is kept as sent and followed by a user message with the page texts.
 *
 * A refused, failed, binary or empty URL leaves its text as it was and is logged (never an
 * error of the request). No upstream call: calls 0, rounds 0; the steps after it (or one plain
 * completion when it is last) see the prepared request. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "approach.h"
#include "arena.h"
#include "fetch.h"
#include "log.h"

#define READURLS_MAX 64

struct found {
    const char *url;
    size_t msg; /* the message where it first occurs */
    const char *text;
};

static bool url_char(unsigned char c)
{
    return c > ' ' && c != '"' && c != '\'' && c != '<' && c != '>' && c != '`' && c != 0x7F;
}

/* Collects distinct URLs of 'text' into f[*n..max-1]. */
static void scan(struct arena *a, const char *text, size_t msg, struct found *f, size_t *n,
                 size_t max)
{
    const char *p = text;

    while (*n < max && (p = strstr(p, "http"))) {
        size_t skip = strncmp(p, "https://", 8) == 0 ? 8 : strncmp(p, "http://", 7) == 0 ? 7 : 0;
        size_t len = skip;

        if (!skip || (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '/'))) {
            p += 4;
            continue;
        }
        while (url_char((unsigned char)p[len]))
            len++;
        while (len > skip && strchr(",'\")].;:!?", p[len - 1]))
            len--;
        if (len > skip && len < 4096) {
            const char *u = arena_strndup(a, p, len);
            bool dup = false;

            for (size_t i = 0; i < *n && !dup; i++)
                dup = strcmp(f[i].url, u) == 0;
            if (!dup) {
                f[*n].url = u;
                f[*n].msg = msg;
                (*n)++;
            }
        }
        p += len;
    }
}

static const char *host_of(struct arena *a, const char *url)
{
    const char *h = strstr(url, "://");
    size_t len;

    h = h ? h + 3 : url;
    len = strcspn(h, "/?#");
    /* drop userinfo and port */
    const char *at = memchr(h, '@', len);

    if (at) {
        len -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    if (*h != '[') {
        const char *colon = memchr(h, ':', len);

        if (colon)
            len = (size_t)(colon - h);
    }
    return arena_strndup(a, h, len);
}

/* At most 'max' bytes of s, backed off to a UTF-8 boundary. */
static const char *cut(struct arena *a, const char *s, size_t max, bool *cutted)
{
    size_t len = strlen(s);

    *cutted = len > max;
    if (len <= max)
        return s;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return arena_printf(a, "%.*s...", (int)max, s);
}

/* Replaces the first occurrence of url in text by "url [Content from host: page]". */
static const char *splice(struct arena *a, const char *text, const char *url, const char *host,
                          const char *page)
{
    const char *at = strstr(text, url);

    if (!at)
        return text;
    return arena_printf(a, "%.*s%s [Content from %s: %s]%s", (int)(at - text), text, url, host,
                        page, at + strlen(url));
}

static bool multipart(const struct chat_msg *m)
{
    return m->raw && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(m->raw, "content"));
}

static int readurls_prepare(struct approach_ctx *ctx, struct chat_request *next,
                            struct approach_post *post)
{
    const struct chat_request *req = ctx->req;
    size_t max_urls = (size_t)approach_opt(ctx, "readurls_max_urls");
    size_t url_bytes = (size_t)approach_opt(ctx, "readurls_url_bytes");
    size_t total = (size_t)approach_opt(ctx, "readurls_total_bytes");
    struct found f[READURLS_MAX];
    size_t n = 0, used = 0;
    struct fetch_req *fr;
    struct fetch_limits lim = {
        .max_bytes = (size_t)approach_opt(ctx, "readurls_max_fetch_kib") * 1024,
        .timeout = approach_opt(ctx, "readurls_timeout"),
        .max_redirects = 5,
        .allow = NULL, /* the operator's --readurls-allow (fetch_batch reads it) */
    };

    (void)post;
    if (max_urls > READURLS_MAX)
        max_urls = READURLS_MAX;
    for (size_t i = 0; i < req->nmsgs; i++)
        if (req->msgs[i].role && strcmp(req->msgs[i].role, "user") == 0 && req->msgs[i].content)
            scan(ctx->arena, req->msgs[i].content, i, f, &n, max_urls);
    if (n == 0)
        return PX_OK;
    fr = arena_calloc(ctx->arena, n, sizeof(*fr));
    for (size_t i = 0; i < n; i++)
        fr[i].url = f[i].url;
    fetch_batch(ctx, fr, n, &lim);
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL, *text;
        bool cutted;

        f[i].text = NULL;
        if (fr[i].status != PX_OK)
            continue; /* logged by fetch_batch */
        text = fetch_readable(ctx->arena, &fr[i], &why);
        if (!text || !*text) {
            log_at(LOG_WARN, ctx->req_id, "readurls: %s: %s", f[i].url,
                   why ? why : "no readable text");
            continue;
        }
        if (used >= total) {
            log_at(LOG_WARN, ctx->req_id, "readurls: %s: over the total budget of %zu bytes",
                   f[i].url, total);
            continue;
        }
        text = cut(ctx->arena, text, url_bytes < total - used ? url_bytes : total - used, &cutted);
        used += strlen(text);
        f[i].text = text;
        log_at(LOG_INFO, ctx->req_id, "readurls: %s: %zu bytes of text%s%s", f[i].url, strlen(text),
               cutted ? " (cut)" : "", fr[i].truncated ? " (body capped)" : "");
    }
    /* the messages, with each page after its URL */
    struct chat_msg *m = arena_calloc(ctx->arena, req->nmsgs * 2 + 1, sizeof(*m));
    size_t nm = 0;

    for (size_t i = 0; i < req->nmsgs; i++) {
        const char *text = req->msgs[i].content;
        const char *extra = "";
        bool changed = false;

        for (size_t k = 0; k < n; k++) {
            if (f[k].msg != i || !f[k].text)
                continue;
            changed = true;
            if (multipart(&req->msgs[i]))
                extra = arena_printf(ctx->arena, "%s%s%s [Content from %s: %s]", extra,
                                     *extra ? "\n\n" : "", f[k].url, host_of(ctx->arena, f[k].url),
                                     f[k].text);
            else
                text = splice(ctx->arena, text, f[k].url, host_of(ctx->arena, f[k].url), f[k].text);
        }
        m[nm] = req->msgs[i];
        if (changed && !multipart(&req->msgs[i])) {
            m[nm].raw = NULL; /* the rewritten text replaces the client's object */
            m[nm].role = "user";
            m[nm].content = text;
        }
        nm++;
        if (*extra) {
            m[nm].role = "user";
            m[nm++].content = extra;
        }
    }
    next->msgs = m;
    next->nmsgs = nm;
    return PX_OK;
}

static const struct approach_option readurls_options[] = {
    {.name = "readurls_max_urls",
     .def = 8,
     .min = 1,
     .max = READURLS_MAX,
     .integer = true,
     .help = "readurls: distinct URLs fetched at most per request"},
    {.name = "readurls_timeout",
     .def = 10,
     .min = 0.1,
     .max = 120,
     .help = "readurls: seconds for one URL, redirects included (all run at once)"},
    {.name = "readurls_max_fetch_kib",
     .def = 2048,
     .min = 1,
     .max = 65536,
     .integer = true,
     .help = "readurls: body KiB read per URL (the rest is not downloaded)"},
    {.name = "readurls_url_bytes",
     .def = 100000,
     .min = 100,
     .max = 10000000,
     .integer = true,
     .help = "readurls: text bytes added per URL (about bytes / 4 tokens)"},
    {.name = "readurls_total_bytes",
     .def = 400000,
     .min = 100,
     .max = 40000000,
     .integer = true,
     .help = "readurls: text bytes added per request, all URLs together"},
    {.name = NULL},
};

const struct approach approach_readurls = {
    .slug = "readurls",
    .prepare = readurls_prepare,
    .options = readurls_options,
    .summary = "Plugin: the pages the user's messages link to, fetched at once (SSRF-guarded) "
               "and added to the context as readable text",
    .calls = 0,
    .rounds = 0,
    .tools = true,
    .response_format = true,
    /* Fetches block this thread up to the timeout (curl, DNS): a helper thread, not a
     * coroutine (include/scheduler.h). */
    .offload = true,
};
