/* executecode.c: Python code runs in the sandbox (include/sandbox.h) and the model answers
 * from what it printed.
 *   - The latest user message has ```python blocks: each of them (at most BLOCKS_MAX) runs,
 *     in order, in its own sandbox; one (streamed) call answers the conversation with the
 *     code and its results appended. 1 call, 1 round.
 *   - It has none: the model is asked to solve the request with a Python program that prints
 *     its result; when its reply has a python block, the first one runs and a second
 *     (streamed) call, given the reply and the program's output, writes the final answer;
 *     a reply without code is the answer. 1-2 calls, 1-2 rounds, one run. With
 *     executecode_max_runs R > 1, the model may answer an output with another program, up
 *     to R runs; the call after the last run gives the final answer (at most R + 1 calls).
 * Errors of the code (exceptions, limits reached, time-outs) are results for the model, not
 * failures of the request. Only with --enable-code-execution (approach.code_execution).
 *
 * Differences from OptiLLM's executecode_plugin.py (shared/approaches.md 3.6): there, a query
 * holding a python block crashed the plugin (500), and code ran unsandboxed in a Jupyter
 * kernel with the server's rights. Here the request's code runs (no keyword test), every run
 * is sandboxed, the usage counts every call (OptiLLM counted completion tokens only), and the
 * client's whole conversation reaches both calls.
 *
 * Request fields: temperature and max_tokens are the client's on every call; tools and a
 * structured response_format are refused (400), since the code-writing call's reply may be
 * the answer and could not honour them. */
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "sandbox.h"

#define BLOCKS_MAX 4

static const char *finish_of(const struct llm_choice *c)
{
    return c->finish_reason && strcmp(c->finish_reason, "length") == 0 ? "length" : "stop";
}

static int final(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t n, const char *stage,
                 struct chat_result *out)
{
    struct llm_params p = llm_params_default();
    struct llm_choice c;
    int rc = llm_final(ctx, msgs, n, &p, stage, &c);

    if (rc < 0)
        return rc;
    out->text = c.text;
    out->logprobs = c.logprobs;
    out->finish_reason = finish_of(&c);
    return PX_OK;
}

/* The client's own code: every block runs; one call answers with the results. */
static int run_request_code(struct approach_ctx *ctx, const char *query, struct chat_result *out)
{
    struct buf b;
    const char *p = query;
    const char *code;
    struct llm_msg *msgs;
    size_t n;
    int i = 0;

    buf_init(&b, 0);
    while (i < BLOCKS_MAX && (code = sandbox_python_block(ctx->arena, p, &p)) != NULL) {
        struct sandbox_result r;
        int rc = sandbox_run_python(ctx, code, &r);

        if (rc < 0) {
            buf_free(&b);
            return rc;
        }
        i++;
        buf_printf(&b, "Program %d:\n```python\n%s\n```\n%s\n", i, code, sandbox_describe(ctx, &r));
    }
    if (sandbox_python_block(ctx->arena, p, NULL))
        buf_printf(&b, "(Only the first %d programs were run.)\n", BLOCKS_MAX);
    n = llm_msgs_conversation(ctx, NULL,
                              approach_prompt(ctx, "executecode/results", "count",
                                              arena_printf(ctx->arena, "%d", i), "results",
                                              buf_cstr(&b), NULL),
                              &msgs);
    buf_free(&b);
    return final(ctx, msgs, n, "executecode/answer", out);
}

static int executecode_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *query = chat_last_user(ctx->req);
    int runs = (int)approach_opt(ctx, "executecode_max_runs");
    struct llm_msg *conv, *msgs;
    size_t nconv, n;
    struct llm_call call;
    const char *reply, *code;
    struct sandbox_result r;
    int rc;

    if (runs < 1)
        runs = 1;
    if (sandbox_python_block(ctx->arena, query, NULL))
        return run_request_code(ctx, query, out);

    nconv =
        llm_msgs_conversation(ctx, approach_prompt(ctx, "executecode/write", NULL), NULL, &conv);
    memset(&call, 0, sizeof(call));
    call.msgs = conv;
    call.nmsgs = nconv;
    call.params = llm_params_default();
    call.stage = "executecode/write";
    if (llm_batch(ctx, &call, 1) <= 0)
        return ctx->err->code;
    reply = call.reply.choices[0].text;
    code = sandbox_python_block(ctx->arena, reply, NULL);
    if (!code) { /* the model answered without code: that is the answer */
        out->text = reply;
        out->logprobs = call.reply.choices[0].logprobs;
        out->finish_reason = finish_of(&call.reply.choices[0]);
        return PX_OK;
    }
    msgs = arena_calloc(ctx->arena, nconv + 2 * (size_t)runs, sizeof(*msgs));
    memcpy(msgs, conv, nconv * sizeof(*msgs));
    n = nconv;
    for (int i = 1;; i++) {
        bool last = i >= runs;

        if (strlen(code) > SANDBOX_CODE_MAX) {
            memset(&r, 0, sizeof(r));
            r.end = SANDBOX_EXITED;
            r.exit_code = 2;
            r.out = "";
            r.err = "not run: the program is longer than the sandbox accepts (64 KiB)";
        } else if ((rc = sandbox_run_python(ctx, code, &r)) < 0) {
            return rc;
        }
        msgs[n].role = "assistant";
        msgs[n++].content = reply;
        msgs[n].role = "user";
        msgs[n++].content = approach_prompt(ctx, last ? "executecode/answer" : "executecode/more",
                                            "results", sandbox_describe(ctx, &r), "left",
                                            arena_printf(ctx->arena, "%d", runs - i), NULL);
        if (last)
            return final(ctx, msgs, n, "executecode/answer", out);
        memset(&call, 0, sizeof(call));
        call.msgs = msgs;
        call.nmsgs = n;
        call.params = llm_params_default();
        call.stage = "executecode/more";
        if (llm_batch(ctx, &call, 1) <= 0)
            return ctx->err->code;
        reply = call.reply.choices[0].text;
        code = sandbox_python_block(ctx->arena, reply, NULL);
        if (!code) { /* the model is done: its reply is the answer */
            out->text = reply;
            out->logprobs = call.reply.choices[0].logprobs;
            out->finish_reason = finish_of(&call.reply.choices[0]);
            return PX_OK;
        }
    }
}

static const struct approach_option executecode_options[] = {
    {.name = "executecode_max_runs",
     .def = 1,
     .min = 1,
     .max = 5,
     .integer = true,
     .help = "programs the model may write and run in executecode before its final answer "
             "(each after seeing the last one's output)"},
    {.name = NULL},
};

const struct approach approach_executecode = {
    .slug = "executecode",
    .aliases = (const char *const[]){"execute_code", NULL},
    .run = executecode_run,
    .prompts = (const char *const[]){"executecode/write", "executecode/answer", "executecode/more",
                                     "executecode/results", NULL},
    .options = executecode_options,
    .summary = "Execute code: the request's python blocks, or a program the model writes, run "
               "in a sandbox (--enable-code-execution); the model answers from their output",
    .calls = 2,
    .rounds = 2,
    .code_execution = true,
};
