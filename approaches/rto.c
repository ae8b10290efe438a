/* rto.c: round-trip optimisation for code. Write the code (C1), have the model describe it as
 * an instruction, write the code again from that instruction alone (C2); when both versions
 * agree the code survived the round trip and C1's code is the answer, otherwise a last call
 * (streamed to the client) reconciles the two. 3 or 4 strictly sequential rounds.
 *
 * Differences from OptiLLM's rto.py (shared/approaches.md 2.10): the versions are compared
 * with all white space collapsed, so a reindented or rewrapped copy counts as the same code;
 * the code of a reply is its longest fenced block (OptiLLM takes the first, often a one-line
 * usage or install snippet), ``` and ~~~ fences of any length, with or without a language,
 * closed or cut off; when the versions agree the answer is C1's fenced block as written
 * (OptiLLM strips the fences, so the client got unformatted code in that case only); null
 * content cannot crash it, and a failed or empty description or regeneration leaves C1's
 * reply as the answer instead of failing the request. The client's conversation is sent as
 * messages, and its temperature and max_tokens, when given, apply to the code-writing calls.
 *
 * Request fields: the stages set temperature and max_tokens (above); every other client field
 * reaches every call unchanged (llm.h). Requests with tools are refused (400, approach.h
 * .tools); response_format (json) is refused too: an answer may be an intermediate text. */
#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "approach.h"
#include "arena.h"

#define RTO_TEMPERATURE     0.1 /* OptiLLM's, for every call */
#define CODE_MAX_TOKENS     4096
#define DESCRIBE_MAX_TOKENS 1024

/* The code of a reply. */
struct code {
    const char *block; /* the fenced block as written (fences included), or the trimmed text */
    const char *body;  /* the code between the fences, trimmed */
};

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

/* s[0..len) without leading and trailing white space, in the arena. */
static const char *line_end(const char *p)
{
    const char *e = strchr(p, '\n');

    return e ? e : p + strlen(p);
}

/* The length of a fence (3 or more '`' or '~') opening the line at p after at most 3 spaces,
 * or 0. Sets *ch to the fence character and *after to the first byte after the fence. */
static size_t fence_at(const char *p, char *ch, const char **after)
{
    size_t n = 0;

    for (int i = 0; i < 3 && *p == ' '; i++)
        p++;
    if (*p != '`' && *p != '~')
        return 0;
    *ch = *p;
    while (p[n] == *ch)
        n++;
    if (n < 3)
        return 0;
    *after = p + n;
    return n;
}

/* Is the line at p a closing fence: at least n times ch, then only white space? */
static bool closes(const char *p, char ch, size_t n)
{
    char c;
    const char *after;
    size_t m = fence_at(p, &c, &after);

    if (m < n || c != ch)
        return false;
    for (; *after && *after != '\n'; after++)
        if (!isspace((unsigned char)*after))
            return false;
    return true;
}

/* The longest fenced block of text (the first of equal ones); the whole text when it has none.
 * A fence without its closing line ends at the next run of the fence string (```code```) or,
 * failing that, at the end of the text (a reply cut by max_tokens). */
static struct code extract_code(struct arena *a, const char *text)
{
    struct code best = {.block = NULL, .body = NULL};
    size_t best_len = 0;

    for (const char *line = text; *line;) {
        const char *after;
        const char *body;
        const char *stop = NULL;
        const char *next;
        char ch;
        size_t n = fence_at(line, &ch, &after);

        if (n == 0 || (ch == '`' && memchr(after, '`', (size_t)(line_end(after) - after)))) {
            /* not a fence (an info string may not hold a backtick) */
            line = *line_end(line) ? line_end(line) + 1 : line_end(line);
            continue;
        }
        body = *line_end(after) ? line_end(after) + 1 : line_end(after);
        for (const char *q = body; *q; q = *line_end(q) ? line_end(q) + 1 : line_end(q)) {
            if (closes(q, ch, n)) {
                stop = q;
                break;
            }
        }
        if (stop) {
            next = *line_end(stop) ? line_end(stop) + 1 : line_end(stop);
        } else {
            char fence[4] = {ch, ch, ch, '\0'};

            stop = strstr(body, fence);
            if (!stop)
                stop = body + strlen(body);
            next = *stop ? stop + 3 : stop;
            while (*next == ch)
                next++;
        }
        {
            const char *code = arena_strtrim(a, body, (size_t)(stop - body));
            size_t len = strlen(code);

            if (!best.body || len > best_len) {
                best.body = code;
                best.block = arena_strtrim(a, line, (size_t)(next - line));
                best_len = len;
            }
        }
        line = next;
    }
    if (!best.body) {
        best.body = arena_strtrim(a, text, strlen(text));
        best.block = best.body;
    }
    return best;
}

/* s with every run of white space turned into one space, trimmed; in the arena. */
static const char *squeezed(struct arena *a, const char *s)
{
    char *out = arena_alloc(a, strlen(s) + 1);
    size_t n = 0;

    for (; *s; s++) {
        if (isspace((unsigned char)*s)) {
            if (n && out[n - 1] != ' ')
                out[n++] = ' ';
        } else {
            out[n++] = *s;
        }
    }
    if (n && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
    return out;
}

/* One call. Returns PX_OK with *out set, or a negative px_status with ctx->err set. */
static int one_call(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
                    const struct llm_params *p, const char *stage, struct llm_choice *out)
{
    struct llm_call call = {.msgs = msgs, .nmsgs = nmsgs, .params = *p, .stage = stage};
    int rc = llm_batch(ctx, &call, 1);

    if (rc < 0)
        return rc;
    *out = call.reply.choices[0];
    return PX_OK;
}

static int answer(struct chat_result *out, const char *text, const struct llm_choice *from)
{
    out->text = text;
    out->finish_reason =
        from->finish_reason && strcmp(from->finish_reason, "length") == 0 ? "length" : "stop";
    return PX_OK;
}

static int rto_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *system = chat_system(ctx->arena, ctx->req);
    struct llm_params gen = llm_params_default();
    struct llm_params desc = llm_params_default();
    struct llm_msg *conv;
    size_t nconv = llm_msgs_conversation(ctx, NULL, NULL, &conv);
    struct llm_msg *msgs;
    size_t nmsgs;
    struct llm_choice c1;
    struct llm_choice q2;
    struct llm_choice c2;
    struct llm_choice c3;
    struct code k1;
    struct code k2;
    const char *user;
    int rc;

    gen.temperature = isnan(ctx->req->temperature) ? RTO_TEMPERATURE : ctx->req->temperature;
    gen.max_tokens = ctx->req->max_tokens > 0 ? ctx->req->max_tokens : CODE_MAX_TOKENS;
    rc = one_call(ctx, conv, nconv, &gen, "rto/code", &c1);
    if (rc < 0)
        return rc;
    if (blank(c1.text))
        return answer(out, c1.text, &c1); /* nothing to take round the trip */

    /* The client's conversation, C1 as the assistant's turn, then the request to describe it. */
    msgs = arena_calloc(ctx->arena, nconv + 2, sizeof(*msgs));
    memcpy(msgs, conv, nconv * sizeof(*msgs));
    msgs[nconv].role = "assistant";
    msgs[nconv].content = c1.text;
    msgs[nconv + 1].role = "user";
    msgs[nconv + 1].content = approach_prompt(ctx, "rto/describe", NULL);
    desc.temperature = RTO_TEMPERATURE;
    desc.max_tokens = DESCRIBE_MAX_TOKENS;
    /* Without a description or a second version there is nothing to compare C1 with: C1,
     * which answers the request on its own, is kept rather than failing the request. */
    if (one_call(ctx, msgs, nconv + 2, &desc, "rto/describe", &q2) < 0 || blank(q2.text))
        return answer(out, c1.text, &c1);

    nmsgs = llm_msgs2(ctx, system, q2.text, &msgs);
    if (one_call(ctx, msgs, nmsgs, &gen, "rto/regenerate", &c2) < 0 || blank(c2.text))
        return answer(out, c1.text, &c1);

    k1 = extract_code(ctx->arena, c1.text);
    k2 = extract_code(ctx->arena, c2.text);
    if (strcmp(squeezed(ctx->arena, k1.body), squeezed(ctx->arena, k2.body)) == 0)
        return answer(out, k1.block, &c1);

    user = approach_prompt(ctx, "rto/merge", "question", chat_last_user(ctx->req), "code1", k1.body,
                           "code2", k2.body, NULL);
    nmsgs = llm_msgs2(ctx, system, user, &msgs);
    rc = llm_final(ctx, msgs, nmsgs, &gen, "rto/final", &c3);
    if (rc < 0)
        return rc;
    return answer(out, c3.text, &c3);
}

const struct approach approach_rto = {
    .slug = "rto",
    .aliases = (const char *const[]){"round_trip", "round-trip", NULL},
    .run = rto_run,
    .prompts = (const char *const[]){"rto/describe", "rto/merge", NULL},
    .options = NULL,
    .summary = "Round-trip optimisation for code: write, describe, rewrite from the description; "
               "agreeing versions stand, differing ones are reconciled",
    .calls = 4,
    .rounds = 4,
};
