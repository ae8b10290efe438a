/* coc.c: Chain of Code. The model writes a Python program that computes the answer step by
 * step into a variable `answer`; the program runs in the sandbox (include/sandbox.h). When a
 * run fails, the model fixes the program (at most coc_max_attempts runs in all); when no run
 * succeeds, the model acts as the interpreter: it traces the last program, works out what
 * the lines that could not run would have produced, and gives the value `answer` would hold.
 * The answer is that value as text (as OptiLLM's coc: str(answer), not an explanation).
 * A first reply without code is the answer. 1 call and 1 run when the first program
 * works; each fix adds a call and a run; the simulation one call. Sequential.
 *
 * A run succeeds when the program exits with status 0 and the trailer we append prints the
 * value of `answer`; stderr alone (warnings) is no failure. A program that prints more than
 * the sandbox keeps (64 KiB) loses the trailer's line with the rest and counts as failed.
 *
 * Differences from OptiLLM's coc_plugin.py (shared/approaches.md 3.8): there, code ran
 * unsandboxed in a Jupyter kernel, any stderr output was a failure, plotting lines were
 * commented out, and the fix and simulation calls saw only the code, not the request; the
 * usage counted completion tokens only. Here every run is sandboxed, the fix and simulation
 * calls get the client's conversation too (the simulation needs the question to reason
 * about an undefined helper), and the usage is exact.
 *
 * Request fields: the stages set temperature (write 0.7, fix and simulation 0.2, OptiLLM's);
 * tools and a structured response_format are refused (400): the answer is a computed value. */
#include <stdio.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "sandbox.h"

#define WRITE_TEMPERATURE 0.7
#define FIX_TEMPERATURE   0.2
#define MARK_ANSWER       "<<coc-answer>>"
#define MARK_NONE         "<<coc-no-answer>>"
#define TRAILER_ROOM      512

/* Appended to every program: prints the value of `answer` after a marker. */
static const char trailer[] = "\n\n# added by the proxy: report the answer\n"
                              "try:\n"
                              "    answer\n"
                              "except NameError:\n"
                              "    print('\\n" MARK_NONE "')\n"
                              "else:\n"
                              "    print('\\n" MARK_ANSWER "' + str(answer))\n";

/* One call on the client's conversation, with 'system' before it and 'user' after it. */
static const char *ask(struct approach_ctx *ctx, const char *system, const char *user,
                       double temperature, const char *stage)
{
    struct llm_call call;
    struct llm_msg *msgs;

    memset(&call, 0, sizeof(call));
    call.nmsgs = llm_msgs_conversation(ctx, system, user, &msgs);
    call.msgs = msgs;
    call.params = llm_params_default();
    call.params.temperature = temperature;
    call.stage = stage;
    if (llm_batch(ctx, &call, 1) <= 0)
        return NULL;
    return call.reply.choices[0].text;
}

/* Runs 'code' with the trailer. Returns PX_OK with *answer set (success) or *error set (a
 * failure to show the model), or a negative px_status (the sandbox itself failed). */
static int attempt(struct approach_ctx *ctx, const char *code, const char **answer,
                   const char **error)
{
    struct sandbox_result r;
    const char *m, *last = NULL;
    int rc;

    *answer = *error = NULL;
    if (strlen(code) + TRAILER_ROOM > SANDBOX_CODE_MAX) {
        *error = arena_printf(ctx->arena, "Not run: the program is longer than %d bytes.",
                              SANDBOX_CODE_MAX - TRAILER_ROOM);
        return PX_OK;
    }
    rc = sandbox_run_python(ctx, arena_printf(ctx->arena, "%s%s", code, trailer), &r);
    if (rc < 0)
        return rc;
    for (m = r.out; (m = strstr(m, MARK_ANSWER)) != NULL; m += strlen(MARK_ANSWER))
        last = m;
    if (r.end == SANDBOX_EXITED && r.exit_code == 0 && last) {
        const char *v = last + strlen(MARK_ANSWER);
        size_t n = strlen(v);

        while (n && (v[n - 1] == '\n' || v[n - 1] == '\r'))
            n--;
        *answer = arena_strndup(ctx->arena, v, n);
        return PX_OK;
    }
    if (r.end == SANDBOX_EXITED && r.exit_code == 0)
        *error = arena_printf(ctx->arena, "%s\nThe program ended without setting `answer`.",
                              sandbox_describe(ctx, &r));
    else
        *error = sandbox_describe(ctx, &r);
    return PX_OK;
}

/* The simulated value without surrounding blank space or a code fence around it. */
static const char *trim(struct approach_ctx *ctx, const char *s)
{
    size_t n;

    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t' || *s == '`')
        s++;
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t' ||
                 s[n - 1] == '`'))
        n--;
    return arena_strndup(ctx->arena, s, n);
}

static int coc_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int attempts = (int)approach_opt(ctx, "coc_max_attempts");
    const char *reply, *code, *answer = NULL, *error = NULL;
    int rc;

    reply = ask(ctx, approach_prompt(ctx, "coc/write", NULL), NULL, WRITE_TEMPERATURE, "coc/write");
    if (!reply)
        return ctx->err->code;
    code = sandbox_python_block(ctx->arena, reply, NULL);
    if (!code) {
        out->text = reply;
        return PX_OK;
    }
    for (int i = 1;; i++) {
        const char *fixed;

        if ((rc = attempt(ctx, code, &answer, &error)) < 0)
            return rc;
        if (answer) {
            out->text = answer;
            return PX_OK;
        }
        if (i >= attempts)
            break;
        fixed = ask(ctx, NULL, approach_prompt(ctx, "coc/fix", "code", code, "error", error, NULL),
                    FIX_TEMPERATURE, "coc/fix");
        if (!fixed)
            return ctx->err->code;
        fixed = sandbox_python_block(ctx->arena, fixed, NULL);
        if (!fixed)
            break; /* no program came back: reason through the last one */
        code = fixed;
    }
    reply = ask(ctx, NULL, approach_prompt(ctx, "coc/simulate", "code", code, "error", error, NULL),
                FIX_TEMPERATURE, "coc/simulate");
    if (!reply)
        return ctx->err->code;
    out->text = trim(ctx, reply);
    return PX_OK;
}

static const struct approach_option coc_options[] = {
    {.name = "coc_max_attempts",
     .def = 3,
     .min = 1,
     .max = 5,
     .integer = true,
     .help = "programs coc runs (the first and its fixes) before the model simulates the last"},
    {.name = NULL},
};

const struct approach approach_coc = {
    .slug = "coc",
    .aliases = (const char *const[]){"chain_of_code", NULL},
    .run = coc_run,
    .prompts = (const char *const[]){"coc/write", "coc/fix", "coc/simulate", NULL},
    .options = coc_options,
    .summary = "Chain of code: the model's program runs in a sandbox (--enable-code-execution), "
               "failures are fixed, then simulated by the model; the answer is its value",
    .calls = 1,
    .rounds = 1,
    .code_execution = true,
};
