/* plansearch.c: PlanSearch for programming problems. Observations about the problem, new
 * observations derived from them, a plan in plain language built on all of them, then the
 * program (streamed to the client): 4 rounds, one call each. The engine runs the whole chain
 * once per requested choice, in parallel, so n chains still take 4 rounds.
 *
 * Differences from OptiLLM's plansearch.py (shared/approaches.md 2.7): one program per run
 * (OptiLLM multiplies its server --n by the request's n); the observation lists are parsed as
 * lists (numbered items, bullets, "Observation N:" labels, continuation lines), so headings,
 * preambles, blank lines and closing remarks no longer become "observations"; a reply cut by
 * max_tokens keeps the observations it holds, and a cut plan is still used (OptiLLM put an
 * error string in their place); a failed derivation call leaves the first observations alone
 * instead of failing the request, and with no first observations there is nothing to derive
 * from, so that call is skipped. The numbers of observations are options.
 *
 * Request fields: the stages set max_tokens (the program: the client's when sent);
 * response_format reaches the program call only; every other client field reaches every call
 * unchanged (llm.h). Requests with tools are refused (400, approach.h .tools). */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"

#define STAGE_MAX_TOKENS 4096 /* OptiLLM's, for every call */
#define MAX_ITEMS        16   /* observations kept from one reply */

struct items {
    const char *v[2 * MAX_ITEMS];
    int n;
};

/* ---- list parsing ------------------------------------------------------------------------- */

enum line_kind { LINE_BLANK, LINE_HEADING, LINE_MARKER, LINE_TEXT, LINE_FENCE };

struct line {
    enum line_kind kind;
    int indent;       /* leading columns (a tab counts 4) */
    const char *text; /* the item text (marker removed) or the trimmed line */
    size_t len;
};

static bool starts_ci(const char *p, const char *e, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(e - p) < n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)p[i]) != word[i])
            return false;
    return true;
}

static const char *skip_spaces(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *skip_bold(const char *p, const char *e)
{
    if (e - p >= 2 && ((p[0] == '*' && p[1] == '*') || (p[0] == '_' && p[1] == '_')))
        p += 2;
    return p;
}

/* After "Observation", "Hint" or "Insight" (any case), an optional "#N" or "N" and a
 * separator: returns the first byte after the label, or NULL. 'need_number': a label standing
 * alone must be numbered to count as an item marker. */
static const char *label_end(const char *p, const char *e, bool need_number)
{
    static const char *const words[] = {"observation", "hint", "insight"};
    const char *q = NULL;
    bool number = false;

    for (size_t i = 0; i < PX_ARRAY_LEN(words) && !q; i++)
        if (starts_ci(p, e, words[i]))
            q = p + strlen(words[i]);
    if (!q || (q < e && isalpha((unsigned char)*q)))
        return NULL;
    q = skip_spaces(q, e);
    if (q < e && *q == '#')
        q++;
    while (q < e && isdigit((unsigned char)*q)) {
        q++;
        number = true;
    }
    if (need_number && !number)
        return NULL;
    while (q < e && (strchr(":.)-*", *q) || *q == ' '))
        q++;
    return q;
}

/* Parses the item marker at the start of [p, e): "1.", "2)", "(3)", "4:", "- ", "* ", "+ ",
 * "• ", "Observation 5:", any of them after '#'s or inside "**". Returns the start of the
 * item text, or NULL when the line has no marker. *heading: the line started with '#'. */
static const char *marker_end(const char *p, const char *e, bool *heading)
{
    const char *q = p;
    const char *r;
    bool bold;
    bool marker = false;

    *heading = false;
    while (q < e && *q == '#') {
        q++;
        *heading = true;
    }
    q = skip_spaces(q, e);
    r = skip_bold(q, e);
    bold = r != q;
    q = r;
    if (q < e && isdigit((unsigned char)*q)) {
        r = q;
        while (r < e && isdigit((unsigned char)*r) && r - q < 4)
            r++;
        if (r - q <= 3 && r < e && (*r == '.' || *r == ')' || *r == ':') &&
            (r + 1 == e || isspace((unsigned char)r[1]) || r[1] == '*')) {
            q = r + 1;
            marker = true;
        }
    } else if (q < e && *q == '(' && q + 1 < e && isdigit((unsigned char)q[1])) {
        r = q + 1;
        while (r < e && isdigit((unsigned char)*r))
            r++;
        if (r < e && *r == ')' && r - q <= 4) {
            q = r + 1;
            marker = true;
        }
    } else if (!*heading && !bold && q + 1 < e && strchr("-*+", *q) && q[1] == ' ') {
        q += 2;
        marker = true;
    } else if (!*heading && !bold && e - q >= 4 && memcmp(q, "\xe2\x80\xa2", 3) == 0 &&
               q[3] == ' ') {
        q += 4; /* U+2022 BULLET */
        marker = true;
    }
    q = skip_spaces(q, e);
    r = label_end(skip_bold(q, e), e, !marker); /* "- **Observation 1:** text" */
    if (r) {
        q = r;
        marker = true;
    }
    if (!marker)
        return NULL;
    q = skip_spaces(q, e);
    /* the bold that wrapped the marker closes after it: "**1.** text", "**Observation 2:**" */
    if (bold && e - q >= 2 && (q[0] == '*' || q[0] == '_') && q[1] == q[0])
        q = skip_spaces(q + 2, e);
    while (q < e && *q == ':')
        q = skip_spaces(q + 1, e);
    return q;
}

static struct line classify(const char *p, const char *e)
{
    struct line l = {.kind = LINE_TEXT};
    const char *text;
    bool heading;

    for (; p < e && (*p == ' ' || *p == '\t'); p++)
        l.indent += *p == '\t' ? 4 : 1;
    while (e > p && isspace((unsigned char)e[-1]))
        e--;
    l.text = p;
    l.len = (size_t)(e - p);
    if (p == e) {
        l.kind = LINE_BLANK;
        return l;
    }
    if (e - p >= 3 && (memcmp(p, "```", 3) == 0 || memcmp(p, "~~~", 3) == 0)) {
        l.kind = LINE_FENCE;
        return l;
    }
    if (e - p >= 3 && strspn(p, "-*_=") >= (size_t)(e - p)) {
        l.kind = LINE_HEADING; /* a rule: "---", "***" */
        return l;
    }
    text = marker_end(p, e, &heading);
    if (text) {
        l.kind = LINE_MARKER;
        l.text = text;
        l.len = (size_t)(e - text);
    } else if (heading ||
               (e - p >= 4 && p[0] == '*' && p[1] == '*' && e[-1] == '*' && e[-2] == '*')) {
        l.kind = LINE_HEADING; /* "## Observations", "**Key observations**" */
    }
    return l;
}

static void push_item(struct arena *a, struct items *out, struct buf *b, int max)
{
    const char *s = buf_cstr(b);
    size_t len = b->len;

    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len && out->n < max)
        out->v[out->n++] = arena_strndup(a, s, len);
    buf_reset(b);
}

static void append(struct buf *b, const char *s, size_t len)
{
    if (b->len && !isspace((unsigned char)b->data[b->len - 1]))
        buf_append(b, " ", 1);
    buf_append(b, s, len);
}

/* Appends to 'out' (at most 'max' in all) the items of a list written by the model. Items
 * start at a marker at the outermost indentation; lines that follow without a blank line,
 * deeper-indented lines and sub-items belong to the item; a marker standing alone ("### Hint
 * 2") takes the next paragraph. Headings, text outside the items (a preamble, a closing
 * remark) and code fences are left out. A reply without any marker is read as one item per
 * paragraph, leaving out headings and lines ending in ':'. */
static void parse_items(struct arena *a, const char *text, struct items *out, int max)
{
    size_t nl = 1;
    struct line *lines;
    size_t n = 0;
    int top = -1;
    struct buf b;
    bool open = false;
    bool bare = false; /* the open item has no text yet */
    bool gap = false;  /* a blank line since the last text */
    bool code = false;

    for (const char *p = text; *p; p++)
        nl += *p == '\n';
    lines = arena_calloc(a, nl, sizeof(*lines));
    for (const char *p = text; *p && n < nl;) {
        const char *e = strchr(p, '\n');

        if (!e)
            e = p + strlen(p);
        lines[n] = classify(p, e);
        if (lines[n].kind == LINE_FENCE)
            code = !code;
        else if (code)
            lines[n].kind = LINE_BLANK; /* code is not an observation */
        if (lines[n].kind == LINE_MARKER && (top < 0 || lines[n].indent < top))
            top = lines[n].indent;
        n++;
        p = *e ? e + 1 : e;
    }
    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        const struct line *l = &lines[i];

        if (top < 0) { /* no markers: paragraphs */
            if (l->kind == LINE_TEXT && !(l->len && l->text[l->len - 1] == ':')) {
                append(&b, l->text, l->len);
                continue;
            }
            push_item(a, out, &b, max);
            continue;
        }
        if (l->kind == LINE_BLANK) {
            gap = true;
        } else if (l->kind == LINE_FENCE || l->kind == LINE_HEADING) {
            push_item(a, out, &b, max);
            open = false;
        } else if (l->kind == LINE_MARKER && l->indent <= top + 1) {
            push_item(a, out, &b, max);
            append(&b, l->text, l->len);
            open = true;
            bare = l->len == 0;
            gap = false;
        } else { /* text, or a sub-item: it continues the open item */
            if (open && (!gap || bare || l->indent > top)) {
                append(&b, l->text, l->len);
                bare = bare && l->len == 0;
            } else {
                push_item(a, out, &b, max);
                open = false;
            }
            gap = false;
        }
    }
    push_item(a, out, &b, max);
    buf_free(&b);
}

/* The items as "<prefix> i: text" lines (prefix NULL: "i. text"), in the arena. */
static const char *numbered(struct arena *a, const struct items *it, const char *prefix)
{
    struct buf b;
    const char *s;

    buf_init(&b, 0);
    for (int i = 0; i < it->n; i++) {
        if (prefix)
            buf_printf(&b, "%s %d: %s\n", prefix, i + 1, it->v[i]);
        else
            buf_printf(&b, "%d. %s\n", i + 1, it->v[i]);
    }
    s = arena_strndup(a, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

/* ---- the chain ---------------------------------------------------------------------------- */

/* One call on [system, user]. Returns PX_OK with *out set, or a negative px_status. */
static int ask(struct approach_ctx *ctx, const char *system, const char *user, const char *stage,
               struct llm_choice *out)
{
    struct llm_call call = {.params = llm_params_default(), .stage = stage};
    struct llm_msg *msgs;
    int rc;

    call.nmsgs = llm_msgs2(ctx, system, user, &msgs);
    call.msgs = msgs;
    call.params.max_tokens = STAGE_MAX_TOKENS;
    rc = llm_batch(ctx, &call, 1);
    if (rc < 0)
        return rc;
    *out = call.reply.choices[0];
    return PX_OK;
}

static int plansearch_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *system = chat_system(ctx->arena, ctx->req);
    const char *problem = chat_last_user(ctx->req);
    int want = (int)approach_opt(ctx, "plansearch_observations");
    int derive = (int)approach_opt(ctx, "plansearch_derived");
    struct items obs = {.n = 0};
    struct llm_params p = llm_params_default();
    struct llm_choice c;
    struct llm_msg *msgs;
    size_t nmsgs;
    const char *user;
    const char *count;
    int rc;

    want = want < 1 ? 1 : want > MAX_ITEMS ? MAX_ITEMS : want;
    derive = derive < 0 ? 0 : derive > MAX_ITEMS ? MAX_ITEMS : derive;

    count = arena_printf(ctx->arena, "%d", want);
    user =
        approach_prompt(ctx, "plansearch/observations", "problem", problem, "count", count, NULL);
    rc = ask(ctx, system, user, "plansearch/observations", &c);
    if (rc < 0)
        return rc;
    parse_items(ctx->arena, c.text, &obs, MAX_ITEMS);

    if (derive > 0 && obs.n > 0) {
        count = arena_printf(ctx->arena, "%d", derive);
        user = approach_prompt(ctx, "plansearch/derived", "problem", problem, "observations",
                               numbered(ctx->arena, &obs, NULL), "count", count, NULL);
        /* The first observations are enough to go on with: a failure here is not fatal (the
         * transport has logged it). */
        if (ask(ctx, system, user, "plansearch/derived", &c) == PX_OK)
            parse_items(ctx->arena, c.text, &obs, obs.n + MAX_ITEMS);
    }

    user = approach_prompt(ctx, "plansearch/solution", "problem", problem, "observations",
                           numbered(ctx->arena, &obs, "Observation"), NULL);
    rc = ask(ctx, system, user, "plansearch/solution", &c);
    if (rc < 0)
        return rc;

    user = approach_prompt(ctx, "plansearch/implement", "problem", problem, "plan", c.text, NULL);
    nmsgs = llm_msgs2(ctx, system, user, &msgs);
    p.max_tokens = ctx->req->max_tokens > 0 ? ctx->req->max_tokens : STAGE_MAX_TOKENS;
    rc = llm_final(ctx, msgs, nmsgs, &p, "plansearch/implement", &c);
    if (rc < 0)
        return rc;
    out->text = c.text;
    out->logprobs = c.logprobs;
    out->finish_reason =
        c.finish_reason && strcmp(c.finish_reason, "length") == 0 ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option plansearch_options[] = {
    {.name = "plansearch_observations",
     .def = 3,
     .min = 1,
     .max = 16,
     .integer = true,
     .help = "observations plansearch asks for first"},
    {.name = "plansearch_derived",
     .def = 2,
     .min = 0,
     .max = 16,
     .integer = true,
     .help = "observations plansearch derives from the first ones (0: none)"},
    {.name = NULL},
};

const struct approach approach_plansearch = {
    .slug = "plansearch",
    .aliases = (const char *const[]){"plan_search", "plan-search", NULL},
    .run = plansearch_run,
    .prompts = (const char *const[]){"plansearch/observations", "plansearch/derived",
                                     "plansearch/solution", "plansearch/implement", NULL},
    .options = plansearch_options,
    .summary = "PlanSearch for code: observations, derived observations, a plan in words, then "
               "the program",
    .calls = 4,
    .rounds = 4,
    .response_format = true, /* its answer is always its llm_final stage */
};
