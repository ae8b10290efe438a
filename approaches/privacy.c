/* privacy.c: a plugin that keeps personal data and secrets away from the upstream. Before any
 * upstream call, every message text (string content, text parts, tool-call arguments) has its
 * e-mail addresses, phone numbers, Luhn-valid card numbers, mod-97 IBANs, IPv4/IPv6 addresses,
 * US SSNs and secrets replaced by placeholders ("[EMAIL_1]"), the same original always getting
 * the same placeholder within the request (src/pii.c). The steps after it see only the masked
 * conversation; the answer (its text, each tool call's arguments, and the streamed tokens,
 * where a placeholder split across pieces is held until complete) gets the originals back.
 *
 * No upstream call of its own: alone ("privacy-gpt-4o") it is followed by one plain
 * completion of the masked conversation; first in a pipeline ("privacy&moa-x") every call of
 * the steps after it is masked. Names and places (NER) are not detected.
 *
 * Request fields: all of them pass through (tools, response_format); the other body fields
 * (such as "user" or "metadata") are not masked, only the messages. */
#include <stdlib.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "log.h"
#include "pii.h"

struct privacy {
    struct pii_map *map;
    struct pii_unmasker *unmasker; /* created on the first streamed piece */
};

static void map_free(void *p)
{
    pii_map_destroy(p);
}

static void unmasker_free(void *p)
{
    pii_unmasker_destroy(p);
}

static const char *mask_text(void *arg, struct arena *a, const char *text)
{
    struct privacy *pv = arg;
    char *m;
    const char *res;

    if (!text || !*text)
        return text ? text : "";
    m = pii_mask(pv->map, text, strlen(text));
    res = strcmp(m, text) == 0 ? text : arena_strdup(a, m);
    free(m);
    return res;
}

static const char *unmask_answer(void *state, struct arena *a, const char *text)
{
    struct privacy *pv = state;
    char *u;
    const char *res;

    if (!text || !*text || pii_map_count(pv->map) == 0)
        return text;
    u = pii_unmask(pv->map, text, strlen(text));
    res = arena_strdup(a, u);
    free(u);
    return res;
}

static const char *unmask_stream(void *state, struct arena *a, const char *piece, size_t len,
                                 bool end)
{
    struct privacy *pv = state;
    char *u;
    const char *res;

    if (pii_map_count(pv->map) == 0)
        return arena_strndup(a, piece, len);
    if (!pv->unmasker) {
        pv->unmasker = pii_unmasker_create(pv->map);
        arena_defer(a, unmasker_free, pv->unmasker);
    }
    u = pii_unmasker_feed(pv->unmasker, piece, len, end);
    res = arena_strdup(a, u);
    free(u);
    return res;
}

static int privacy_prepare(struct approach_ctx *ctx, struct chat_request *next,
                           struct approach_post *post)
{
    struct privacy *pv = arena_calloc(ctx->arena, 1, sizeof(*pv));
    int rc;

    pv->map = pii_map_create();
    arena_defer(ctx->arena, map_free, pv->map);
    rc = chat_request_map_text(ctx->arena, ctx->req, next, mask_text, pv);
    if (rc < 0)
        return px_fail(ctx->err, rc, NULL, "privacy: the messages could not be masked");
    if (pii_map_count(pv->map) > 0) {
        log_at(LOG_DEBUG, ctx->req_id, "privacy: %zu distinct values masked",
               pii_map_count(pv->map));
        post->answer = unmask_answer;
        post->stream = unmask_stream;
        post->state = pv;
    }
    return PX_OK;
}

const struct approach approach_privacy = {
    .slug = "privacy",
    .prepare = privacy_prepare,
    .summary = "Plugin: masks e-mails, phones, cards, IBANs, IPs, SSNs and secrets with "
               "placeholders before any upstream call and restores them in the answer",
    .calls = 0,
    .rounds = 0,
    .tools = true,
    .response_format = true,
};
