/* mcp.c: the MCP plugin. The tools of the servers in --mcp-config (include/mcp.h) are offered
 * to the model; when it calls them, the proxy runs the calls (those of one reply in parallel),
 * adds the results as tool messages and asks again, for at most mcp_max_steps rounds; then
 * one last call without the MCP tools makes the model answer. A tool's failure (an error
 * result, a crash, a timeout, malformed JSON-RPC) goes back to the model as the tool's result.
 *
 * Client tools: a request may bring its own tools. They are offered beside the MCP tools; a
 * reply that calls any of them ends the loop and goes to the client (finish_reason
 * "tool_calls", with only the client's calls: MCP calls of that reply are dropped, the model
 * asks again after the client's results). Unlike OptiLLM's Python plugin, each step's calls run
 * in parallel, and the loop is bounded. */
#include <cjson/cJSON.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "mcp.h"

static const struct approach_option mcp_options[] = {
    {.name = "mcp_max_steps",
     .def = 5,
     .min = 0,
     .max = 50,
     .integer = true,
     .help = "mcp: rounds of MCP tool calls before the model must answer"},
    {.name = "mcp_timeout",
     .def = 30,
     .min = 0.1,
     .max = 600,
     .help = "mcp: seconds for one MCP tool call, and for starting a server"},
    {.name = NULL},
};

/* The tools as the upstream's "tools" array. */
static const char *tools_json(struct approach_ctx *ctx, const struct mcp_tool *t, int n)
{
    cJSON *arr = cJSON_CreateArray();
    char *s;
    const char *out;

    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject(), *fn, *schema = cJSON_Parse(t[i].schema);

        cJSON_AddStringToObject(o, "type", "function");
        fn = cJSON_AddObjectToObject(o, "function");
        cJSON_AddStringToObject(fn, "name", t[i].name);
        if (t[i].description && *t[i].description)
            cJSON_AddStringToObject(fn, "description", t[i].description);
        if (!cJSON_IsObject(schema)) {
            cJSON_Delete(schema);
            schema = cJSON_CreateObject();
            cJSON_AddStringToObject(schema, "type", "object");
        }
        cJSON_AddItemToObject(fn, "parameters", schema);
        cJSON_AddItemToArray(arr, o);
    }
    s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    out = arena_strdup(ctx->arena, s);
    cJSON_free(s);
    return out;
}

static bool is_mcp(const struct mcp_tool *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name))
            return true;
    return false;
}

static const char *str_of(struct approach_ctx *ctx, const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? arena_strdup(ctx->arena, v->valuestring) : NULL;
}

/* The reply's calls of client tools (a JSON array text), or NULL when it calls only MCP tools.
 * Fills calls[] with the MCP ones (*ncalls). */
static const char *split_calls(struct approach_ctx *ctx, const char *tool_calls,
                               const struct mcp_tool *t, int nt, struct mcp_call **calls,
                               const char ***ids, size_t *ncalls)
{
    cJSON *arr = cJSON_Parse(tool_calls), *client = cJSON_CreateArray();
    const cJSON *c;
    size_t n = (size_t)cJSON_GetArraySize(arr), k = 0;
    const char *out = NULL;

    *calls = arena_calloc(ctx->arena, n ? n : 1, sizeof(**calls));
    *ids = arena_calloc(ctx->arena, n ? n : 1, sizeof(**ids));
    cJSON_ArrayForEach(c, arr)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const char *name = str_of(ctx, fn, "name");

        if (name && is_mcp(t, nt, name)) {
            (*calls)[k].name = name;
            (*calls)[k].arguments = str_of(ctx, fn, "arguments");
            (*ids)[k++] = str_of(ctx, c, "id");
        } else {
            cJSON_AddItemToArray(client, cJSON_Duplicate(c, 1));
        }
    }
    if (cJSON_GetArraySize(client) > 0) {
        char *s = cJSON_PrintUnformatted(client);

        out = arena_strdup(ctx->arena, s);
        cJSON_free(s);
    }
    cJSON_Delete(client);
    cJSON_Delete(arr);
    *ncalls = k;
    return out;
}

static int mcp_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int steps = (int)approach_opt_row(ctx, mcp_options, "mcp_max_steps");
    double timeout = approach_opt_row(ctx, mcp_options, "mcp_timeout");
    struct mcp_tool *tools;
    int nt = mcp_list_tools(ctx, &tools, timeout);
    const char *offer;
    struct llm_msg *msgs, *conv;
    size_t nmsgs, cap;

    if (nt < 0)
        return nt;
    offer = nt > 0 ? tools_json(ctx, tools, nt) : NULL;
    nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &conv);
    cap = nmsgs + 16;
    msgs = arena_calloc(ctx->arena, cap, sizeof(*msgs));
    memcpy(msgs, conv, nmsgs * sizeof(*msgs));
    for (int step = 0;; step++) {
        struct llm_call c = {.msgs = msgs, .nmsgs = nmsgs, .stage = "mcp/step"};
        struct llm_choice ch;
        struct mcp_call *calls;
        const char **ids;
        const char *client;
        size_t ncalls;
        int rc;

        c.params = llm_params_default();
        c.params.answer = true;
        c.params.tools_json = step < steps ? offer : NULL; /* the last call must answer */
        rc = llm_batch(ctx, &c, 1);
        if (rc < 0)
            return rc;
        ch = c.reply.choices[0];
        out->text = ch.text;
        out->logprobs = ch.logprobs;
        out->finish_reason =
            ch.finish_reason && !strcmp(ch.finish_reason, "length") ? "length" : "stop";
        if (!ch.tool_calls)
            return PX_OK;
        client = split_calls(ctx, ch.tool_calls, tools, nt, &calls, &ids, &ncalls);
        if (client) { /* the client's own tools: the client runs them */
            out->tool_calls = client;
            out->finish_reason = "tool_calls";
            return PX_OK;
        }
        if (step >= steps || ncalls == 0)
            return PX_OK; /* MCP calls after the last step: the text is the answer */
        mcp_call_tools(ctx, calls, ncalls, timeout);
        if (nmsgs + 1 + ncalls > cap) {
            struct llm_msg *m;

            cap = (nmsgs + 1 + ncalls) * 2;
            m = arena_calloc(ctx->arena, cap, sizeof(*m));
            memcpy(m, msgs, nmsgs * sizeof(*m));
            msgs = m;
        }
        msgs[nmsgs++] = llm_msg_tool_calls(ctx, ch.text, ch.tool_calls);
        for (size_t i = 0; i < ncalls; i++)
            msgs[nmsgs++] = llm_msg_tool_result(
                ctx, ids[i],
                calls[i].is_error ? arena_printf(ctx->arena, "Error: %s", calls[i].result)
                                  : calls[i].result);
    }
}

const struct approach approach_mcp = {
    .slug = "mcp",
    .run = mcp_run,
    .prompts = NULL,
    .options = mcp_options,
    .summary = "MCP client: the tools of the --mcp-config servers offered to the model, the "
               "tool-call loop run by the proxy (a step's calls in parallel, bounded steps)",
    .calls = 2,
    .rounds = 2,
    .tools = true,
    .response_format = true,
    /* MCP calls block on the servers' answers (a condition variable, a libcurl easy handle):
     * on a helper thread, not a coroutine, so that a scheduler thread never waits on them. */
    .offload = true,
};
