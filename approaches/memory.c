/* memory.c: short-term memory for long inputs (OptiLLM's memory plugin, shared/approaches.md
 * 3.3), done in parallel. The last user message is split into a context and a query (the text
 * after the last "Query:", else the last sentence); the context is cut into chunks of
 * memory_chunk_tokens estimated tokens (bytes / 4, at a line or word boundary when one is near);
 * every chunk is examined at once (one llm_batch, stage memory/extract) for what the query
 * needs; the findings ("YES#..." replies) are kept in chunk order, at most memory_max_items of
 * them (the last ones, as OptiLLM's FIFO), the memory_top most similar to the query (TF-IDF
 * cosine) are retrieved, and the answer is written from them (llm_final, stage memory/final).
 *
 * Differences from OptiLLM: chunks run in parallel (2 rounds instead of chunks + 1); chunk size
 * in estimated tokens (the default 25000 is OptiLLM's 100000 characters); the number of chunks
 * is capped by memory_max_chunks (the end of a longer context is dropped and logged). A failed
 * extract call is skipped; when every one fails the request fails with the first error.
 *
 * --memory-file FILE appends each request's findings as one JSON line (memstore.h); it is
 * never read back (newer OptiLLM keeps memory per request too).
 *
 * Request fields: the extract calls are parsed (max_tokens 1000, answer false); the final call
 * is the answer (client fields, response_format and tools reach it). */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "log.h"
#include "memstore.h"

#define MEM_EXTRACT_MAX_TOKENS 1000

/* ---- query and context ---------------------------------------------------------------------- */

static const char *strrstr(const char *s, const char *needle)
{
    const char *last = NULL;

    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        last = p;
    return last;
}

/* Splits text into context and query: after the last "Query:", else the last sentence (a '.',
 * '!' or '?' followed by whitespace ends a sentence). One sentence: the whole text is the
 * context and the query asks for its main point. */
static void split_query(struct arena *a, const char *text, const char **context, const char **query)
{
    const char *q = strrstr(text, "Query:");
    size_t len = strlen(text), cut = 0;

    if (q) {
        *context = arena_strtrim(a, text, (size_t)(q - text));
        *query = arena_strtrim(a, q + 6, strlen(q + 6));
        return;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    for (size_t i = 0; i + 1 < len; i++)
        if ((text[i] == '.' || text[i] == '!' || text[i] == '?') &&
            isspace((unsigned char)text[i + 1]))
            cut = i + 1;
    if (cut == 0) {
        *context = arena_strtrim(a, text, len);
        *query = "What is the main point of this text?";
        return;
    }
    *context = arena_strtrim(a, text, cut);
    *query = arena_strtrim(a, text + cut, len - cut);
}

/* ---- chunks -----------------------------------------------------------------------------------
 */

/* The end of a chunk that starts at s and may hold max bytes: at the last newline (else space)
 * in its second half, never inside a UTF-8 sequence. */
static size_t chunk_end(const char *s, size_t left, size_t max)
{
    size_t end;

    if (left <= max)
        return left;
    end = max;
    for (size_t i = max; i > max / 2; i--) {
        if (s[i - 1] == '\n') {
            return i;
        }
    }
    for (size_t i = max; i > max / 2; i--)
        if (s[i - 1] == ' ')
            return i;
    while (end > 1 && ((unsigned char)s[end] & 0xC0) == 0x80)
        end--;
    return end;
}

/* ---- TF-IDF retrieval -------------------------------------------------------------------------
 */

struct terms {
    const char **w; /* lower-cased words of 2+ word characters */
    size_t n;
};

static bool word_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

static struct terms tokenize(struct arena *a, const char *s)
{
    struct terms t = {0};
    size_t cap = strlen(s) / 2 + 1, i = 0, len = strlen(s);

    t.w = arena_calloc(a, cap, sizeof(*t.w));
    while (i < len) {
        size_t j = i;

        while (j < len && word_char((unsigned char)s[j]))
            j++;
        if (j - i >= 2 && t.n < cap) {
            char *w = arena_strndup(a, s + i, j - i);

            for (char *p = w; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            t.w[t.n++] = w;
        }
        i = j > i ? j : i + 1;
    }
    return t;
}

static size_t count_in(const struct terms *t, const char *w)
{
    size_t c = 0;

    for (size_t i = 0; i < t->n; i++)
        c += strcmp(t->w[i], w) == 0;
    return c;
}

/* Cosine similarity between the query and each document under smoothed TF-IDF weights fitted
 * on the documents (idf = ln((1+N)/(1+df)) + 1), written to score[]. Quadratic in the words,
 * which is fine for at most a few hundred findings. */
static void tfidf_scores(struct arena *a, const char *query, const char *const *docs, size_t n,
                         double *score)
{
    struct terms q = tokenize(a, query);
    struct terms *d = arena_calloc(a, n ? n : 1, sizeof(*d));

    for (size_t i = 0; i < n; i++)
        d[i] = tokenize(a, docs[i]);
    for (size_t i = 0; i < n; i++) {
        double dot = 0, nd = 0, nq = 0;

        /* distinct words of the document */
        for (size_t k = 0; k < d[i].n; k++) {
            const char *w = d[i].w[k];
            size_t df = 0;
            bool seen = false;
            double idf, wd, wq;

            for (size_t m = 0; m < k && !seen; m++)
                seen = strcmp(d[i].w[m], w) == 0;
            if (seen)
                continue;
            for (size_t j = 0; j < n; j++)
                df += count_in(&d[j], w) > 0;
            idf = log((1.0 + (double)n) / (1.0 + (double)df)) + 1.0;
            wd = (double)count_in(&d[i], w) * idf;
            wq = (double)count_in(&q, w) * idf;
            dot += wd * wq;
            nd += wd * wd;
        }
        for (size_t k = 0; k < q.n; k++) {
            const char *w = q.w[k];
            size_t df = 0;
            bool seen = false;
            double idf, wq;

            for (size_t m = 0; m < k && !seen; m++)
                seen = strcmp(q.w[m], w) == 0;
            if (seen)
                continue;
            for (size_t j = 0; j < n; j++)
                df += count_in(&d[j], w) > 0;
            if (df == 0)
                continue; /* not in the fitted vocabulary */
            idf = log((1.0 + (double)n) / (1.0 + (double)df)) + 1.0;
            wq = (double)count_in(&q, w) * idf;
            nq += wq * wq;
        }
        score[i] = nd > 0 && nq > 0 ? dot / (sqrt(nd) * sqrt(nq)) : 0;
    }
}

/* ---- the approach -----------------------------------------------------------------------------
 */

static int memory_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *context, *query;
    size_t chunk_bytes = (size_t)approach_opt(ctx, "memory_chunk_tokens") * 4;
    size_t max_chunks = (size_t)approach_opt(ctx, "memory_max_chunks");
    size_t max_items = (size_t)approach_opt(ctx, "memory_max_items");
    size_t top = (size_t)approach_opt(ctx, "memory_top");
    const char *sys = chat_system(ctx->arena, ctx->req);
    struct llm_call *calls;
    size_t nchunks = 0, len, off = 0;
    const char **found;
    size_t nfound = 0;
    int rc;

    split_query(ctx->arena, chat_last_user(ctx->req), &context, &query);
    len = strlen(context);
    calls = arena_calloc(ctx->arena, max_chunks, sizeof(*calls));
    while (off < len && nchunks < max_chunks) {
        size_t n = chunk_end(context + off, len - off, chunk_bytes);
        const char *chunk = arena_strndup(ctx->arena, context + off, n);
        const char *user =
            approach_prompt(ctx, "memory/extract", "query", query, "chunk", chunk, NULL);
        struct llm_msg *msgs;

        calls[nchunks].nmsgs = llm_msgs2(ctx, sys, user, &msgs);
        calls[nchunks].msgs = msgs;
        calls[nchunks].params = llm_params_default();
        calls[nchunks].params.max_tokens = MEM_EXTRACT_MAX_TOKENS;
        calls[nchunks].stage = "memory/extract";
        nchunks++;
        off += n;
    }
    if (off < len)
        log_at(LOG_WARN, ctx->req_id,
               "memory: context of %zu bytes cut to %zu chunks (%zu bytes dropped)", len, nchunks,
               len - off);
    found = arena_calloc(ctx->arena, nchunks + 1, sizeof(*found));
    if (nchunks > 0) {
        rc = llm_batch(ctx, calls, nchunks);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < nchunks; i++) {
            const struct llm_reply *r = &calls[i].reply;
            const char *t;

            if (r->status != PX_OK || r->nchoices < 1)
                continue;
            t = r->choices[0].text;
            while (isspace((unsigned char)*t))
                t++;
            if (strncmp(t, "YES#", 4) == 0 && t[4])
                found[nfound++] = arena_strtrim(ctx->arena, t + 4, strlen(t + 4));
        }
    }
    memstore_append(ctx, query, found, nfound); /* --memory-file, when set */
    /* the bound: the last max_items findings, as OptiLLM's FIFO memory */
    if (nfound > max_items) {
        found += nfound - max_items;
        nfound = max_items;
    }
    /* the top findings by similarity to the query, best first (stable on ties) */
    double *score = arena_calloc(ctx->arena, nfound + 1, sizeof(*score));
    size_t *order = arena_calloc(ctx->arena, nfound + 1, sizeof(*order));
    char *notes;
    size_t nnotes = nfound < top ? nfound : top, used = 0;

    tfidf_scores(ctx->arena, query, found, nfound, score);
    for (size_t i = 0; i < nfound; i++) {
        size_t j = i;

        order[i] = i;
        while (j > 0 && score[order[j - 1]] < score[order[j]]) {
            size_t tmp = order[j - 1];

            order[j - 1] = order[j];
            order[j] = tmp;
            j--;
        }
    }
    notes = arena_strdup(ctx->arena, nnotes ? "" : "(no notes: nothing relevant was found)");
    for (size_t i = 0; i < nnotes; i++)
        notes = arena_printf(ctx->arena, "%s%s- %s", notes, used++ ? "\n" : "", found[order[i]]);

    const char *user = approach_prompt(ctx, "memory/final", "notes", notes, "query", query, NULL);
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs2(ctx, sys, user, &msgs);
    struct llm_params p = llm_params_default();
    struct llm_choice c;

    rc = llm_final(ctx, msgs, nmsgs, &p, "memory/final", &c);
    if (rc < 0)
        return rc;
    out->text = c.text;
    out->tool_calls = c.tool_calls;
    out->logprobs = c.logprobs;
    out->finish_reason = c.tool_calls                                                ? "tool_calls"
                         : c.finish_reason && strcmp(c.finish_reason, "length") == 0 ? "length"
                                                                                     : "stop";
    return PX_OK;
}

static const struct approach_option memory_options[] = {
    {.name = "memory_chunk_tokens",
     .def = 25000,
     .min = 256,
     .max = 1000000,
     .integer = true,
     .help = "memory: chunk size in estimated tokens (bytes / 4)"},
    {.name = "memory_max_chunks",
     .def = 64,
     .min = 1,
     .max = 1024,
     .integer = true,
     .help = "memory: chunks examined at most (the rest of the context is dropped)"},
    {.name = "memory_max_items",
     .def = 100,
     .min = 1,
     .max = 10000,
     .integer = true,
     .help = "memory: findings kept (the last ones)"},
    {.name = "memory_top",
     .def = 10,
     .min = 1,
     .max = 1000,
     .integer = true,
     .help = "memory: findings most similar to the query given to the answer"},
    {.name = NULL},
};

const struct approach approach_memory = {
    .slug = "memory",
    .run = memory_run,
    .prompts = (const char *const[]){"memory/extract", "memory/final", NULL},
    .options = memory_options,
    .summary = "Memory for long inputs: every chunk of the context examined at once for what "
               "the query needs, the answer written from the findings",
    .calls = 2,
    .rounds = 2,
    .tools = true,
    .response_format = true,
};
