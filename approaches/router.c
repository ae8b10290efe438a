/* router.c: the approach chosen per request. One cheap classification call (temperature 0, a
 * few tokens, optionally a smaller model) sorts the request into a task type of the routes
 * table (include/router.h: built-in, or --router-config), and the type's approach answers it
 * (approach_delegate). Classifications are cached by a hash of the classifier model and the
 * prompt, so a repeated prompt costs no extra call.
 *
 * OptiLLM's router (shared/approaches.md 3.12) runs a ModernBERT classifier trained on its
 * approaches; Debian has no runtime for it, and a fixed model cannot know an operator's own
 * routes, so this one asks an LLM. When the classifier fails or answers no known type, the
 * table's default runs; when the chosen approach cannot carry the request (tools it does not
 * keep, a budget below its minimum), one plain completion does (approach_delegate).
 *
 * Request fields: the classification call gets none of the client's tools or response_format
 * (params.answer false); the chosen approach gets the request unchanged. */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "log.h"
#include "router.h"

#define QUERY_MAX 4000 /* bytes of the prompt the classifier sees */

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h ^ 0xff; /* a separator, so ("ab","c") and ("a","bc") differ */
}

/* What the classifier reads: the system prompt and the last user message, cut at QUERY_MAX
 * bytes on a UTF-8 boundary. */
static const char *query_text(struct approach_ctx *ctx)
{
    const char *sys = chat_system(ctx->arena, ctx->req);
    const char *q =
        arena_printf(ctx->arena, "%s%s%s", sys, *sys ? "\n\n" : "", chat_last_user(ctx->req));
    size_t n = strlen(q);

    if (n <= QUERY_MAX)
        return q;
    n = QUERY_MAX;
    while (n > 0 && ((unsigned char)q[n] & 0xC0) == 0x80)
        n--;
    return arena_strndup(ctx->arena, q, n);
}

/* The type a reply names: the text after the last </think>; its first word when that is a
 * label, else the label appearing earliest in it; NULL when none does. */
const struct router_route *router_parse_label(const char *reply)
{
    const char *t = reply, *think;
    const struct router_route *routes, *best = NULL;
    size_t n = router_routes(&routes), best_at = (size_t)-1;
    char low[512];
    size_t len, w;

    while ((think = strstr(t, "</think>")) != NULL)
        t = think + 8;
    while (*t && !isalnum((unsigned char)*t))
        t++;
    for (w = 0; isalnum((unsigned char)t[w]) || t[w] == '_' || t[w] == '-'; w++)
        ;
    if (w && (best = router_find(t, w)) != NULL)
        return best;
    for (len = 0; t[len] && len < sizeof(low) - 1; len++)
        low[len] = (char)tolower((unsigned char)t[len]);
    low[len] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *p = low;
        size_t ll = strlen(routes[i].label);

        /* as a word of its own: "math" in "this is math." but not in "aftermath" */
        while ((p = strstr(p, routes[i].label)) != NULL) {
            bool before = p == low || !isalnum((unsigned char)p[-1]);
            bool after = !isalnum((unsigned char)p[ll]);

            if (before && after && (size_t)(p - low) < best_at) {
                best = &routes[i];
                best_at = (size_t)(p - low);
            }
            p += ll;
        }
    }
    return best;
}

static const char *labels_text(struct approach_ctx *ctx)
{
    const struct router_route *routes;
    size_t n = router_routes(&routes);
    struct buf b;
    const char *s;

    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        buf_printf(&b, "- %s", routes[i].label);
        if (*routes[i].description)
            buf_printf(&b, ": %s", routes[i].description);
        buf_puts(&b, "\n");
    }
    s = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

static int router_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *model = router_classifier_model();
    const char *query = query_text(ctx);
    uint64_t key = fnv(fnv(0xcbf29ce484222325ull, model ? model : ctx->req->upstream_model), query);
    const struct router_route *route = router_cache_get(key);
    const char *how = "cached", *ran;
    int rc;

    if (!route) {
        struct llm_call c = {.stage = "router/classify"};
        struct llm_msg *msgs;

        c.nmsgs = llm_msgs2(ctx, NULL,
                            approach_prompt(ctx, "router/classify", "labels", labels_text(ctx),
                                            "query", query, NULL),
                            &msgs);
        c.msgs = msgs;
        c.params = llm_params_default();
        c.params.temperature = 0;
        c.params.max_tokens = (long)approach_opt(ctx, "router_max_tokens");
        c.params.model = model;
        if (llm_batch(ctx, &c, 1) == 1 && c.reply.nchoices > 0 &&
            (route = router_parse_label(c.reply.choices[0].text)) != NULL) {
            router_cache_put(key, route);
            how = "classified";
        } else {
            log_at(LOG_INFO, ctx->req_id, "router: %s; the default route runs",
                   c.reply.status < 0 ? "the classification call failed"
                                      : "the classifier named no known type");
            route = router_default();
            how = c.reply.status < 0 ? "classifier failed" : "unrecognised";
            memset(ctx->err, 0, sizeof(*ctx->err)); /* the default answers: no failure */
        }
    }
    rc = approach_delegate(ctx, route->approach, &ran, out);
    router_count(route, ran, how);
    ctx->route_note = arena_printf(ctx->arena, "%s: %s (%s)", route->label, ran, how);
    log_at(LOG_INFO, ctx->req_id, "router: %s", ctx->route_note);
    return rc;
}

static const struct approach_option router_options[] = {
    {.name = "router_max_tokens",
     .def = 16,
     .min = 1,
     .max = 4096,
     .integer = true,
     .help = "router: max_tokens of the classification call (a type name is 1-3 tokens; raise it "
             "for a classifier that thinks first)"},
    {0},
};

const struct approach approach_router = {
    .slug = "router",
    .run = router_run,
    .prompts = (const char *const[]){"router/classify", NULL},
    .options = router_options,
    .summary = "One classification call picks the approach for the request's task type "
               "(--router-config; cached per prompt), which then answers it",
    .calls = 2,
    .rounds = 2,
    .min_calls = 2,
    .tools = true,
    .response_format = true,
};
