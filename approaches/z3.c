/* z3.c: the model writes an SMT-LIB 2 script for the problem, libz3 runs it in-process, and
 * the model phrases the answer from the solver's output (streamed). Solver errors go back to
 * the model for a bounded number of repairs; a problem the model finds unsuited to a solver,
 * or a script that never runs, is answered directly. 2 rounds and 2 calls when the first
 * script runs; each repair adds one of each.
 *
 * Sandboxing: nothing is executed. The script is data for Z3's SMT-LIB parser and solver,
 * and before Z3 sees it, it is split into top-level commands and rebuilt from an allow-list:
 * declarations, definitions, assert, check-sat, get-model/get-value and other queries, push
 * and pop (at most PUSH_MAX levels), set-logic, set-info, echo, eval, simplify. set-option
 * keeps only :produce-models/:produce-unsat-cores/:produce-assignments/
 * :produce-unsat-assumptions (the others could name files, such as :regular-output-channel,
 * or change process-wide Z3 parameters, such as :memory_max_size); exit is dropped; any other
 * command (get-proof-graph writes a file; reset would drop our limits) is refused and
 * reported to the model. The scanner follows Z3 4.8.12's own rules for comments, strings and
 * |quoted symbols|, so the commands Z3 runs are exactly the ones that were checked.
 * Limits: our (set-option :timeout N) opens every script, so each check-sat stops at N ms
 * with "unknown"; a watchdog thread calls Z3_interrupt at N + grace ms for work outside
 * check-sat; scripts are capped at SCRIPT_MAX bytes and the output shown to the model at
 * OUTPUT_MAX. Z3's warnings (stderr) are off, and its process-wide memory high-water mark is
 * set once, which makes the SMT core give up ("unknown") rather than grow without bound.
 * memory_max_size is deliberately not set: in 4.8.12 an allocation over that cap inside
 * Z3_eval_smtlib2_string ends in exit().
 *
 * Threads: every solve has its own Z3_config and Z3_context, created, used and deleted on
 * the calling thread (Z3 contexts are independent; 4.8.12's eval redirects only the
 * context's own streams). The error handler replaces Z3's default one, which calls exit():
 * Z3 records the error code in the context, and we read it with Z3_get_error_code.
 *
 * Differences from OptiLLM's z3_solver.py (shared/approaches.md 2.13): OptiLLM asked for
 * Python code using z3/sympy and ran it with exec() in a subprocess whose "sandbox" exposed
 * the whole z3 and sympy modules (arbitrary imports); ours runs no code at all. Its usage
 * counted only the last call (= instead of +=); ours is exact. Its error test was "the output
 * contains Error:" (a program printing that word failed); ours reads Z3's (error ...) lines
 * and error code. The repair prompt carries the solver's own message, and the client's
 * conversation and temperature are kept.
 *
 * Request fields: the stages set temperature and max_tokens; response_format reaches the answer
 * call (direct or phrased) only; every other client field reaches every call unchanged (llm.h).
 * Requests with tools are refused (400, approach.h .tools). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <z3.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "log.h"

#define FORMULATE_TEMPERATURE 0.1 /* OptiLLM's analysis and fix temperature */
#define FORMULATE_MAX_TOKENS  2048
#define FINAL_TEMPERATURE     0.1 /* OptiLLM's; the client's temperature wins when sent */
#define SCRIPT_MAX            (64 * 1024)
#define OUTPUT_MAX            (8 * 1024)
#define PUSH_MAX              100
#define WATCHDOG_GRACE_MS     250
#define HIGH_WATERMARK_MB     "2048"
#define NOT_SUITABLE          "NOT_SUITABLE"

/* ---- the allow-list ----------------------------------------------------------------------- */

static const char *const allowed_cmds[] = {
    "assert",
    "check-sat",
    "check-sat-assuming",
    "declare-const",
    "declare-fun",
    "declare-sort",
    "declare-datatype",
    "declare-datatypes",
    "define-const",
    "define-fun",
    "define-fun-rec",
    "define-funs-rec",
    "define-sort",
    "echo",
    "eval",
    "get-assignment",
    "get-info",
    "get-model",
    "get-unsat-assumptions",
    "get-unsat-core",
    "get-value",
    "reset-assertions",
    "set-info",
    "set-logic",
    "simplify",
};

static const char *const allowed_options[] = {
    ":produce-models",
    ":produce-unsat-cores",
    ":produce-assignments",
    ":produce-unsat-assumptions",
};

static bool in_list(const char *const *list, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && memcmp(list[i], s, len) == 0)
            return true;
    return false;
}

/* ---- the script scanner ------------------------------------------------------------------- */

struct scan {
    const char *s;
    size_t pos;
    size_t len;
};

static int line_of(const struct scan *sc, size_t pos)
{
    int line = 1;

    for (size_t i = 0; i < pos && i < sc->len; i++)
        line += sc->s[i] == '\n';
    return line;
}

/* Skips white space and ;-comments. */
static void skip_blank(struct scan *sc)
{
    while (sc->pos < sc->len) {
        char c = sc->s[sc->pos];

        if (c == ';') {
            while (sc->pos < sc->len && sc->s[sc->pos] != '\n')
                sc->pos++;
        } else if (isspace((unsigned char)c)) {
            sc->pos++;
        } else {
            return;
        }
    }
}

/* Moves past the form that starts with '(' at sc->pos, following Z3's scanner: "" inside a
 * string is a quote, a '|' after a backslash does not end a quoted symbol. Returns false
 * when the input ends first. */
static bool skip_form(struct scan *sc)
{
    int depth = 0;

    while (sc->pos < sc->len) {
        char c = sc->s[sc->pos++];

        if (c == '(') {
            depth++;
        } else if (c == ')') {
            if (--depth == 0)
                return true;
        } else if (c == ';') {
            while (sc->pos < sc->len && sc->s[sc->pos] != '\n')
                sc->pos++;
        } else if (c == '"') {
            for (;;) {
                if (sc->pos >= sc->len)
                    return false;
                if (sc->s[sc->pos++] == '"') {
                    if (sc->pos < sc->len && sc->s[sc->pos] == '"')
                        sc->pos++;
                    else
                        break;
                }
            }
        } else if (c == '|') {
            bool escape = false;

            for (;;) {
                char q;

                if (sc->pos >= sc->len)
                    return false;
                q = sc->s[sc->pos++];
                if (q == '|' && !escape)
                    break;
                escape = q == '\\';
            }
        }
    }
    return false;
}

/* A plain symbol or keyword at p (no quotes, parentheses or white space); sets *len. */
static const char *token_at(const char *p, const char *end, size_t *len)
{
    const char *q = p;

    while (q < end && !isspace((unsigned char)*q) && !strchr("()\";|", *q))
        q++;
    *len = (size_t)(q - p);
    return p;
}

/* Blanks s[b..e) in 'out' (a copy of the script), keeping its newlines so that Z3's line
 * numbers stay the model's. */
static void drop(char *out, size_t b, size_t e)
{
    for (size_t i = b; i < e; i++)
        if (out[i] != '\n')
            out[i] = ' ';
}

/* Checks one command form s[b..e): returns NULL when it may run (set-option of another
 * option and exit are blanked out of 'out' instead), or why it is refused. */
static const char *check_command(struct arena *a, const struct scan *sc, size_t b, size_t e,
                                 char *out, bool *checks)
{
    const char *end = sc->s + e;
    const char *p = sc->s + b + 1;
    const char *name;
    size_t n;

    while (p < end && isspace((unsigned char)*p))
        p++;
    name = token_at(p, end, &n);
    if (n == 0)
        return arena_printf(a, "line %d: a command must start with a plain name", line_of(sc, b));
    if (n == 4 && memcmp(name, "exit", 4) == 0) {
        drop(out, b, e);
        return NULL;
    }
    if (n == 10 && memcmp(name, "set-option", 10) == 0) {
        size_t on;
        const char *opt;

        for (p = name + n; p < end && isspace((unsigned char)*p);)
            p++;
        opt = token_at(p, end, &on);
        if (!in_list(allowed_options, PX_ARRAY_LEN(allowed_options), opt, on))
            drop(out, b, e); /* the timeout and every other setting are ours */
    } else if ((n == 4 && memcmp(name, "push", 4) == 0) ||
               (n == 3 && memcmp(name, "pop", 3) == 0)) {
        long levels = 1;

        for (p = name + n; p < end && isspace((unsigned char)*p);)
            p++;
        if (p < end && isdigit((unsigned char)*p)) {
            levels = 0;
            while (p < end && isdigit((unsigned char)*p) && levels <= PUSH_MAX)
                levels = levels * 10 + (*p++ - '0');
        }
        if (levels > PUSH_MAX)
            return arena_printf(a, "line %d: (%.*s) takes at most %d levels", line_of(sc, b),
                                (int)n, name, PUSH_MAX);
    } else if (n >= 9 && memcmp(name, "check-sat", 9) == 0 &&
               in_list(allowed_cmds, PX_ARRAY_LEN(allowed_cmds), name, n)) {
        *checks = true;
    } else if (!in_list(allowed_cmds, PX_ARRAY_LEN(allowed_cmds), name, n)) {
        return arena_printf(a,
                            "line %d: the command (%.*s ...) is not available here; use "
                            "declarations, assert, check-sat, get-model and get-value",
                            line_of(sc, b), (int)(n > 40 ? 40 : n), name);
    }
    return NULL;
}

/* The script as Z3 will run it: our timeout on a first line of its own, then the script with
 * the dropped commands blanked out (so Z3's line numbers are the model's plus one). Returns
 * it (in 'a'), or NULL with *why set to a message for the model. */
static const char *sanitize(struct arena *a, const char *script, long timeout_ms, const char **why)
{
    struct scan sc = {.s = script, .pos = 0, .len = strlen(script)};
    char *copy;
    bool checks = false;

    *why = NULL;
    if (sc.len > SCRIPT_MAX) {
        *why = arena_printf(a, "the script is longer than %d bytes", SCRIPT_MAX);
        return NULL;
    }
    copy = arena_strdup(a, script);
    for (;;) {
        size_t b;

        skip_blank(&sc);
        if (sc.pos >= sc.len)
            break;
        b = sc.pos;
        if (sc.s[b] != '(') {
            *why = arena_printf(a, "line %d: unexpected text outside a command: %.40s",
                                line_of(&sc, b), sc.s + b);
            return NULL;
        }
        if (!skip_form(&sc)) {
            *why = arena_printf(a,
                                "line %d: unbalanced parentheses: the command starting here "
                                "is never closed",
                                line_of(&sc, b));
            return NULL;
        }
        *why = check_command(a, &sc, b, sc.pos, copy, &checks);
        if (*why)
            return NULL;
    }
    if (!checks) {
        *why = "the script has no (check-sat) command";
        return NULL;
    }
    return arena_printf(a, "(set-option :timeout %ld)\n%s", timeout_ms, copy);
}

/* ---- running Z3 --------------------------------------------------------------------------- */

enum z3_status { Z3S_ERROR = 0, Z3S_SAT, Z3S_UNSAT, Z3S_UNKNOWN };

static const char *const status_name[] = {"error", "sat", "unsat", "unknown"};

struct solve {
    enum z3_status status; /* the first check-sat result, or Z3S_ERROR */
    const char *results;   /* every check-sat result: "sat", "sat, unsat" */
    const char *output;    /* what Z3 printed (capped), or the reason for an error */
    long long ms;
};

static pthread_once_t z3_once = PTHREAD_ONCE_INIT;

/* Process-wide Z3 settings, set once before our first context. */
static void z3_global_init(void)
{
    Z3_global_param_set("warning", "false");
    Z3_global_param_set("memory_high_watermark", HIGH_WATERMARK_MB);
}

/* Replaces Z3's default handler, which prints and calls exit(). Z3 has already stored the
 * code in the context when it calls this; run_z3 reads it with Z3_get_error_code. */
static void z3_on_error(Z3_context z, Z3_error_code code)
{
    (void)z;
    (void)code;
}

struct watchdog {
    pthread_mutex_t lock; /* guards done and fired */
    pthread_cond_t cond;
    bool done;
    bool fired;
    Z3_context z;
    struct timespec deadline; /* CLOCK_MONOTONIC */
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;

    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        if (pthread_cond_timedwait(&w->cond, &w->lock, &w->deadline) == ETIMEDOUT) {
            if (!w->done) {
                Z3_interrupt(w->z); /* safe from another thread; the context outlives us */
                w->fired = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static bool watchdog_start(struct watchdog *w, pthread_t *th, Z3_context z, long ms)
{
    pthread_condattr_t attr;

    memset(w, 0, sizeof(*w));
    w->z = z;
    clock_gettime(CLOCK_MONOTONIC, &w->deadline);
    w->deadline.tv_sec += ms / 1000;
    w->deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (w->deadline.tv_nsec >= 1000000000L) {
        w->deadline.tv_sec++;
        w->deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(th, NULL, watchdog_main, w) != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        return false;
    }
    return true;
}

static void watchdog_stop(struct watchdog *w, pthread_t th)
{
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(th, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

/* Appends one (error "line L column C: ...") line, with L counted in the model's script
 * (our timeout took line 1). */
static void add_error(struct buf *errors, const char *p, size_t n)
{
    const char *at = NULL;

    for (size_t i = 0; i + 6 < n && !at; i++)
        if (memcmp(p + i, "\"line ", 6) == 0 && isdigit((unsigned char)p[i + 6]))
            at = p + i + 6;
    if (at) {
        char *end;
        long line = strtol(at, &end, 10);

        buf_append(errors, p, (size_t)(at - p));
        buf_printf(errors, "%ld", line > 1 ? line - 1 : line);
        buf_append(errors, end, n - (size_t)(end - p));
    } else {
        buf_append(errors, p, n);
    }
    buf_puts(errors, "\n");
}

/* Reads Z3's output: the check-sat results in order (into 'results', "sat, unsat"), and the
 * (error ...) lines that make the run a failure: those before the first result, and those
 * after a sat (a failed get-value is worth a repair). After unsat or unknown, errors such as
 * "model is not available" are expected and ignored. Returns the first result's status, or
 * Z3S_ERROR when there is none. */
static enum z3_status classify(const char *out, struct buf *results, struct buf *errors)
{
    enum z3_status first = Z3S_ERROR;
    enum z3_status last = Z3S_ERROR;

    for (const char *p = out; *p;) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        enum z3_status st = Z3S_ERROR;

        while (n && isspace((unsigned char)p[n - 1]))
            n--;
        if (n == 3 && strncmp(p, "sat", 3) == 0)
            st = Z3S_SAT;
        else if (n == 5 && strncmp(p, "unsat", 5) == 0)
            st = Z3S_UNSAT;
        else if (n == 7 && strncmp(p, "unknown", 7) == 0)
            st = Z3S_UNKNOWN;
        if (st != Z3S_ERROR) {
            buf_printf(results, "%s%s", results->len ? ", " : "", status_name[st]);
            first = first == Z3S_ERROR ? st : first;
            last = st;
        } else if (n >= 6 && strncmp(p, "(error", 6) == 0 &&
                   (last == Z3S_ERROR || last == Z3S_SAT)) {
            add_error(errors, p, n);
        }
        p = eol ? eol + 1 : p + strlen(p);
    }
    return first;
}

/* s without trailing white space, cut at OUTPUT_MAX bytes, in 'a'. */
static const char *capped(struct arena *a, const char *s)
{
    size_t n = strlen(s);

    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (n <= OUTPUT_MAX)
        return arena_strndup(a, s, n);
    return arena_printf(a, "%.*s\n[... %zu more bytes cut]", OUTPUT_MAX, s, n - OUTPUT_MAX);
}

/* Runs a sanitized script in a context of its own. */
static struct solve run_z3(struct approach_ctx *ctx, const char *script, long timeout_ms)
{
    struct solve res = {.status = Z3S_ERROR};
    struct watchdog w;
    pthread_t th;
    bool guarded;
    Z3_config cfg;
    Z3_context z;
    Z3_error_code code;
    const char *out;
    struct buf results;
    struct buf errors;
    long long t0;

    pthread_once(&z3_once, z3_global_init);
    cfg = Z3_mk_config();
    z = Z3_mk_context(cfg);
    Z3_del_config(cfg);
    if (!z) {
        res.results = "error";
        res.output = "the solver could not start";
        return res;
    }
    Z3_set_error_handler(z, z3_on_error);
    guarded = watchdog_start(&w, &th, z, timeout_ms + WATCHDOG_GRACE_MS);
    if (!guarded)
        log_at(LOG_WARN, ctx->req_id, "z3: no watchdog thread; relying on the solver timeout");
    t0 = px_now_ms();
    out = Z3_eval_smtlib2_string(z, script);
    res.ms = px_now_ms() - t0;
    if (guarded)
        watchdog_stop(&w, th); /* after this, w.fired is ours to read */
    code = Z3_get_error_code(z);
    buf_init(&results, 0);
    buf_init(&errors, 0);
    res.output = capped(ctx->arena, out ? out : "");
    res.status = classify(res.output, &results, &errors);
    res.results = arena_strndup(ctx->arena, buf_cstr(&results), results.len);
    if (guarded && w.fired && (errors.len || res.status == Z3S_ERROR)) {
        /* Cut by the watchdog ("canceled"): the time limit's "unknown", not a script error. */
        res.status = Z3S_UNKNOWN;
        res.results = "unknown (time limit reached)";
    } else if (errors.len) {
        res.status = Z3S_ERROR;
        res.output = capped(ctx->arena, buf_cstr(&errors));
    } else if (res.status == Z3S_ERROR && code != Z3_OK) {
        res.output = arena_printf(ctx->arena, "%s%s", res.output, Z3_get_error_msg(z, code));
    } else if (res.status == Z3S_ERROR) {
        res.output = arena_printf(ctx->arena,
                                  "%sno check-sat result came back; end the script with "
                                  "(check-sat) and (get-model)",
                                  res.output);
    }
    buf_free(&results);
    buf_free(&errors);
    Z3_del_context(z);
    log_at(LOG_DEBUG, ctx->req_id, "z3: %s in %lld ms", status_name[res.status], res.ms);
    return res;
}

/* ---- the model's script ------------------------------------------------------------------- */

/* Does s[0..end) contain 'needle'? */
static bool span_has(const char *s, const char *end, const char *needle)
{
    size_t n = strlen(needle);

    for (; s + n <= end; s++)
        if (memcmp(s, needle, n) == 0)
            return true;
    return false;
}

static bool smt_language(const char *p, size_t n)
{
    static const char *const langs[] = {"",         "smt2", "smt",  "smtlib", "smtlib2", "smt-lib",
                                        "smt-lib2", "z3",   "lisp", "scheme", "sexp"};

    return in_list(langs, PX_ARRAY_LEN(langs), p, n);
}

/* The SMT-LIB script in a reply: the last fenced block in an SMT language (or none) that
 * holds a check-sat, else the last such block starting with '('; a reply that is a bare
 * script is taken whole. NULL when there is none. */
static const char *extract_script(struct arena *a, const char *reply)
{
    const char *best = NULL;
    size_t best_len = 0;
    bool best_checks = false;

    for (const char *p = strstr(reply, "```"); p;) {
        const char *lang = p + 3;
        const char *body;
        const char *close;
        size_t ln = 0;

        while (lang[ln] && !isspace((unsigned char)lang[ln]))
            ln++;
        body = lang + ln;
        while (*body == ' ' || *body == '\t')
            body++;
        if (*body == '\r')
            body++;
        if (*body != '\n') { /* an inline fence ("use ```smt2``` blocks"): look further */
            p = strstr(p + 3, "```");
            continue;
        }
        body++;
        close = strstr(body, "```");
        if (!close)
            close = body + strlen(body); /* an unclosed block runs to the end */
        if (smt_language(lang, ln)) {
            const char *q = body;
            bool has_check;

            while (q < close && isspace((unsigned char)*q))
                q++;
            has_check = span_has(body, close, "(check-sat");
            if (q < close && (*q == '(' || *q == ';') && (has_check || !best_checks)) {
                best = body;
                best_len = (size_t)(close - body);
                best_checks = has_check;
            }
        }
        p = *close ? strstr(close + 3, "```") : NULL;
    }
    while (best && best_len && isspace((unsigned char)best[best_len - 1]))
        best_len--;
    if (best)
        return arena_strndup(a, best, best_len);
    while (*reply && isspace((unsigned char)*reply))
        reply++;
    if ((*reply == '(' || *reply == ';') && strstr(reply, "(check-sat")) {
        best_len = strlen(reply);
        while (best_len && isspace((unsigned char)reply[best_len - 1]))
            best_len--;
        return arena_strndup(a, reply, best_len);
    }
    return NULL;
}

/* ---- the approach ------------------------------------------------------------------------- */

static bool says_not_suitable(const char *reply)
{
    return strstr(reply, NOT_SUITABLE) != NULL;
}

static double final_temperature(const struct approach_ctx *ctx)
{
    return isnan(ctx->req->temperature) ? FINAL_TEMPERATURE : ctx->req->temperature;
}

static const char *finish_of(const struct llm_choice *c)
{
    return c->finish_reason && strcmp(c->finish_reason, "length") == 0 ? "length" : "stop";
}

/* No usable script: the client's conversation answered as it is, in one (streamed) call. */
static int answer_directly(struct approach_ctx *ctx, struct chat_result *out)
{
    struct llm_params p = llm_params_default();
    struct llm_choice c;
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    int rc;

    p.temperature = final_temperature(ctx);
    rc = llm_final(ctx, msgs, nmsgs, &p, "z3/direct", &c);
    if (rc < 0)
        return rc;
    out->text = c.text;
    out->logprobs = c.logprobs;
    out->finish_reason = finish_of(&c);
    return PX_OK;
}

/* The formulation, then each repair: one call on the growing conversation [formulate
 * instructions, client's conversation, (assistant script, user repair)...]. Returns the
 * reply's text, or NULL when the call failed (ctx->err set). */
static const char *ask(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
                       const char *stage)
{
    struct llm_call call;

    memset(&call, 0, sizeof(call));
    call.msgs = msgs;
    call.nmsgs = nmsgs;
    call.params = llm_params_default();
    call.params.temperature = FORMULATE_TEMPERATURE;
    call.params.max_tokens = FORMULATE_MAX_TOKENS;
    call.stage = stage;
    if (llm_batch(ctx, &call, 1) <= 0)
        return NULL;
    return call.reply.choices[0].text;
}

static int z3_run(struct approach_ctx *ctx, struct chat_result *out)
{
    long timeout_ms = (long)approach_opt(ctx, "z3_timeout_ms");
    int repairs = (int)approach_opt(ctx, "z3_max_repairs");
    struct llm_msg *conv;
    size_t nconv =
        llm_msgs_conversation(ctx, approach_prompt(ctx, "z3/formulate", NULL), NULL, &conv);
    struct llm_msg *msgs =
        arena_calloc(ctx->arena, nconv + 2 * (size_t)(repairs + 1), sizeof(*msgs));
    size_t nmsgs = nconv;
    struct solve res = {.status = Z3S_ERROR};
    const char *script = NULL;
    const char *reply;
    struct llm_params p = llm_params_default();
    struct llm_choice c;
    struct llm_msg *fin;
    size_t nfin;
    int rc;

    timeout_ms = timeout_ms < 1 ? 1 : timeout_ms;
    repairs = repairs < 0 ? 0 : repairs;
    memcpy(msgs, conv, nconv * sizeof(*msgs));
    reply = ask(ctx, msgs, nmsgs, "z3/formulate");
    if (!reply)
        return ctx->err->code;
    for (int attempt = 0;; attempt++) {
        const char *why = NULL;
        const char *run;

        script = extract_script(ctx->arena, reply);
        if (!script || (says_not_suitable(reply) && !strstr(script, "(check-sat")))
            return answer_directly(ctx, out);
        run = sanitize(ctx->arena, script, timeout_ms, &why);
        if (run) {
            res = run_z3(ctx, run, timeout_ms);
            if (res.status != Z3S_ERROR)
                break;
            why = res.output;
        }
        if (attempt >= repairs)
            return answer_directly(ctx, out); /* no script ran: answer without the solver */
        msgs[nmsgs].role = "assistant";
        msgs[nmsgs++].content = reply;
        msgs[nmsgs].role = "user";
        msgs[nmsgs++].content =
            approach_prompt(ctx, "z3/repair", "error", why, "script", script, NULL);
        reply = ask(ctx, msgs, nmsgs, "z3/repair");
        if (!reply)
            return answer_directly(ctx, out);
    }
    nfin = llm_msgs_conversation(
        ctx, NULL,
        approach_prompt(ctx, "z3/final", "script", script, "status", res.results, "ms",
                        arena_printf(ctx->arena, "%lld", res.ms), "output", res.output, NULL),
        &fin);
    p.temperature = final_temperature(ctx);
    rc = llm_final(ctx, fin, nfin, &p, "z3/final", &c);
    if (rc < 0)
        return rc;
    out->text = c.text;
    out->logprobs = c.logprobs;
    out->finish_reason = finish_of(&c);
    return PX_OK;
}

static const struct approach_option z3_options[] = {
    {.name = "z3_timeout_ms",
     .def = 5000,
     .min = 10,
     .max = 60000,
     .integer = true,
     .help = "time limit of one Z3 run (each check-sat, and the whole script) in z3"},
    {.name = "z3_max_repairs",
     .def = 2,
     .min = 0,
     .max = 5,
     .integer = true,
     .help = "times z3 sends a solver error back to the model for a fixed script"},
    {.name = NULL},
};

const struct approach approach_z3 = {
    .slug = "z3",
    .aliases = (const char *const[]){"z3_solver", "z3-solver", NULL},
    .run = z3_run,
    .prompts = (const char *const[]){"z3/formulate", "z3/repair", "z3/final", NULL},
    .options = z3_options,
    .offload = true,
    .summary = "Z3: the model writes an SMT-LIB 2 script, libz3 solves it in-process (no code "
               "is run), the model answers from the solver's output",
    .calls = 2,
    .rounds = 2,
    .response_format = true, /* its answer is always its llm_final stage */
};
