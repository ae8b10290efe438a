/* privacy.c: a plugin that keeps personal data and secrets away from the upstream. Before any
 * upstream call, every message text (string content, text parts, tool-call arguments) has its
 * e-mail addresses, phone numbers, Luhn-valid card numbers, mod-97 IBANs, IPv4/IPv6 addresses,
 * US SSNs and secrets replaced by placeholders ("[EMAIL_1]"), the same original always getting
 * the same placeholder within the request (src/pii.c). The steps after it see only the masked
 * conversation; the answer (its text, each tool call's arguments, and the streamed tokens,
 * where a placeholder split across pieces is held until complete) gets the originals back.
 * With a json_object/json_schema response_format the answer is JSON text: the originals go
 * back into its string values (escaped), and a streamed answer is held until it is complete.
 *
 * No upstream call of its own: alone ("privacy-gpt-4o") it is followed by one plain
 * completion of the masked conversation; first in a pipeline ("privacy&moa-x") every call of
 * the steps after it is masked. Names and places are masked too ("[PERSON_1]", "[LOCATION_1]")
 * when --privacy-ner-url names a trusted NER service (include/ner.h; one call per message
 * text, on this thread); if it fails the request fails (502 privacy_ner_unavailable) rather
 * than send names upstream. Off by default.
 *
 * Request fields: all of them pass through (tools, response_format); the other body fields
 * (such as "user" or "metadata") are not masked, only the messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approach.h"
#include <cjson/cJSON.h>

#include "arena.h"
#include "buf.h"
#include "log.h"
#include "ner.h"
#include "pii.h"

#define NER_TIMEOUT_S 10

struct privacy {
    struct pii_map *map;
    bool structured;               /* response_format json_*: the answer is JSON text */
    struct buf held;               /* structured streams: the whole answer, restored at the end */
    struct pii_unmasker *unmasker; /* created on the first streamed piece */
    struct ner *ner;               /* --privacy-ner-url: names and places; NULL = off */
    char ner_err[256];             /* the first NER failure ("" = none) */
};

static void map_free(void *p)
{
    pii_map_destroy(p);
}

static void ner_free(void *p)
{
    ner_close(p);
}

static void unmasker_free(void *p)
{
    pii_unmasker_destroy(p);
}

static void held_free(void *p)
{
    buf_free(p);
}

static const char *mask_text(void *arg, struct arena *a, const char *text)
{
    struct privacy *pv = arg;
    char *m;
    const char *res;

    if (!text || !*text)
        return text ? text : "";
    if (pv->ner) { /* names and places from the NER service, then the patterns */
        struct pii_extra *x = NULL;
        int nx = pv->ner_err[0]
                     ? -1
                     : ner_find(pv->ner, text, strlen(text), &x, pv->ner_err, sizeof(pv->ner_err));

        if (nx < 0) /* the request fails below: nothing of this text is sent */
            return text;
        m = pii_mask_with(pv->map, text, strlen(text), x, (size_t)nx);
        free(x);
    } else {
        m = pii_mask(pv->map, text, strlen(text));
    }
    res = strcmp(m, text) == 0 ? text : arena_strdup(a, m);
    free(m);
    return res;
}

static const char *unmask_plain(struct privacy *pv, struct arena *a, const char *text)
{
    char *u = pii_unmask(pv->map, text, strlen(text));
    const char *res = arena_strdup(a, u);

    free(u);
    return res;
}

/* Every string value of a JSON tree restored (in place). */
static void unmask_json(struct privacy *pv, struct arena *a, cJSON *j)
{
    for (cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (cJSON_IsString(c)) {
            const char *v = unmask_plain(pv, a, c->valuestring);

            if (strcmp(v, c->valuestring) != 0)
                cJSON_SetValuestring(c, v);
        } else {
            unmask_json(pv, a, c);
        }
    }
}

/* A structured answer that is JSON text is restored string by string, so that an original with
 * quotes or newlines (a private-key block) keeps it valid JSON; other text as it is. */
static const char *unmask_answer(void *state, struct arena *a, const char *text)
{
    struct privacy *pv = state;
    cJSON *j;
    char *s;
    const char *res;

    if (!text || !*text || pii_map_count(pv->map) == 0)
        return text;
    j = pv->structured ? cJSON_ParseWithOpts(text, NULL, 1) : NULL;
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return unmask_plain(pv, a, text);
    }
    unmask_json(pv, a, j);
    s = cJSON_PrintUnformatted(j);
    res = arena_strdup(a, s);
    cJSON_free(s);
    cJSON_Delete(j);
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
    if (pv->structured) { /* JSON: restored whole at the end */
        buf_append(&pv->held, piece, len);
        if (!end)
            return "";
        res = unmask_answer(pv, a, arena_strndup(a, buf_cstr(&pv->held), pv->held.len));
        buf_consume(&pv->held, pv->held.len);
        return res;
    }
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
    const char *rf = chat_response_format(ctx->req, NULL);
    int rc;

    pv->map = pii_map_create();
    arena_defer(ctx->arena, map_free, pv->map);
    pv->structured = rf && strcmp(rf, "text") != 0;
    buf_init(&pv->held, 0);
    arena_defer(ctx->arena, held_free, &pv->held);
    if (approach_privacy_ner_url(ctx)) {
        pv->ner = ner_open(approach_privacy_ner_url(ctx), NER_TIMEOUT_S);
        arena_defer(ctx->arena, ner_free, pv->ner);
    }
    rc = chat_request_map_text(ctx->arena, ctx->req, next, mask_text, pv);
    if (rc < 0)
        return px_fail(ctx->err, rc, NULL, "privacy: the messages could not be masked");
    if (pv->ner_err[0]) { /* fail closed: names would reach the upstream */
        log_at(LOG_WARN, ctx->req_id, "privacy: %s", pv->ner_err);
        rc = px_fail(ctx->err, PX_EUPSTREAM, NULL,
                     "privacy: names and places could not be masked (%s); nothing was sent "
                     "upstream",
                     pv->ner_err);
        snprintf(ctx->err->err_code, sizeof(ctx->err->err_code), "privacy_ner_unavailable");
        return rc;
    }
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
