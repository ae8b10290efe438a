/* re2.c: re-reading. The last user message becomes "question, an instruction to read it again,
 * the question again"; the earlier turns stay as context. One call, streamed to the client.
 *
 * Unlike OptiLLM's reread.py (shared/approaches.md 2.8), the conversation is sent as messages
 * rather than flattened into one string. A last user message with several content parts
 * (images) is kept as sent, followed by a text message with the instruction and the question
 * again, so that no image is lost.
 *
 * Request fields: the call (llm_final) overrides nothing: every client field reaches it
 * unchanged, response_format and tools included; tool calls in its answer are returned, and
 * tool turns of the history are sent as the client sent them. */
#include <string.h>

#include "approach.h"
#include "arena.h"

static int re2_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *question = chat_last_user(ctx->req);
    struct llm_params p = llm_params_default();
    struct llm_choice final;
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    size_t last = nmsgs;
    const char *again;
    int rc;

    for (size_t i = nmsgs; i > 0; i--) {
        if (strcmp(msgs[i - 1].role, "user") == 0) {
            last = i - 1;
            break;
        }
    }
    if (last < nmsgs && *question) {
        /* "Read the question again:\n<question>", without a trailing newline */
        again = approach_prompt(ctx, "re2/reread", "question", question, NULL);
        if (llm_msg_multipart(&msgs[last])) {
            struct llm_msg *m = arena_calloc(ctx->arena, nmsgs + 1, sizeof(*m));

            memcpy(m, msgs, (last + 1) * sizeof(*m));
            m[last + 1].role = "user";
            m[last + 1].content = again;
            memcpy(m + last + 2, msgs + last + 1, (nmsgs - last - 1) * sizeof(*m));
            msgs = m;
            nmsgs++;
        } else {
            msgs[last].raw = NULL; /* the rewritten text replaces the client's object */
            msgs[last].role = "user";
            msgs[last].content = arena_printf(ctx->arena, "%s\n%s", question, again);
        }
    }
    rc = llm_final(ctx, msgs, nmsgs, &p, "re2/final", &final);
    if (rc < 0)
        return rc;
    out->text = final.text;
    out->tool_calls = final.tool_calls;
    out->logprobs = final.logprobs;
    out->finish_reason = final.tool_calls ? "tool_calls"
                         : final.finish_reason && strcmp(final.finish_reason, "length") == 0
                             ? "length"
                             : "stop";
    return PX_OK;
}

const struct approach approach_re2 = {
    .slug = "re2",
    .aliases = (const char *const[]){"reread", "re-read", NULL},
    .run = re2_run,
    .prompts = (const char *const[]){"re2/reread", NULL},
    .options = NULL,
    .summary = "Re-reading: the question, an instruction to read it again, and the question "
               "once more, in one call",
    .calls = 1,
    .rounds = 1,
    .tools = true,
    .response_format = true,
};
