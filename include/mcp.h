/* mcp.h: the MCP (Model Context Protocol) session contract. The mcp approach lists the tools of
 * the configured MCP servers and calls them; src/mcp.c implements it over stdio (a child
 * process speaking newline-delimited JSON-RPC 2.0) and Streamable HTTP, and tests install a
 * fake. Approaches never see processes, pipes or sockets. */
#ifndef MCP_H
#define MCP_H

#include <stdbool.h>
#include <stddef.h>

struct approach_ctx;
struct arena;
struct px_error;

/* Results longer than this reach the model truncated, with a note saying so. */
#define MCP_RESULT_MAX ((size_t)256 * 1024)

/* One tool offered to the model. */
struct mcp_tool {
    const char *name;        /* the name the model sees: the server's tool name, or
                                "server__tool" when two servers offer the same name; characters
                                outside [A-Za-z0-9_-] become '_', cut at 64 bytes */
    const char *description; /* "" when the server gave none */
    const char *schema;      /* the tool's inputSchema as JSON text (an object) */
};

/* One tool call, as the model wrote it; the result is filled in by mcp_call_tools. */
struct mcp_call {
    const char *name;      /* the offered name (struct mcp_tool.name) */
    const char *arguments; /* a JSON object text; NULL or "" means {} */
    const char *result;    /* out: the text for the model (never NULL after the call), capped
                              at MCP_RESULT_MAX plus a note */
    bool is_error;         /* out: the tool failed, or the server did (crash, timeout, bad
                              JSON-RPC, unknown tool); 'result' says what happened */
};

/* An MCP client: the servers of --mcp-config (src/mcp.c), or a fake in tests. */
struct mcp;
struct mcp_ops {
    /* Every tool of every server, in 'a' (a server not started yet is started first, within
     * 'timeout_s' per request). A server that cannot be started or listed is left out (logged);
     * returns the number of tools, or a negative px_status with 'err' filled when no server could
     * be listed. Thread-safe. */
    int (*list_tools)(struct mcp *m, struct arena *a, struct mcp_tool **out, double timeout_s,
                      struct px_error *err);
    /* Runs the n calls at once (in parallel) and returns when all have finished or timed out
     * ('timeout_s' per call); fills result and is_error of each. Memory in 'a'. Thread-safe. */
    void (*call_tools)(struct mcp *m, struct arena *a, struct mcp_call *calls, size_t n,
                       double timeout_s);
};
struct mcp {
    const struct mcp_ops *ops;
    void *impl;
};

/* The process's MCP client: installed by main before threads start (or by a test), read-only
 * afterwards. NULL when none is configured. */
void mcp_install(struct mcp *m);
struct mcp *mcp_installed(void);

/* The installed client's tools (see mcp_ops.list_tools), in ctx->arena. Without an installed
 * client: PX_EINVAL with ctx->err naming --mcp-config. */
int mcp_list_tools(struct approach_ctx *ctx, struct mcp_tool **out, double timeout_s);
/* The installed client's calls, in parallel (see mcp_ops.call_tools); memory in ctx->arena.
 * Without a client every call fails with a result saying so. */
void mcp_call_tools(struct approach_ctx *ctx, struct mcp_call *calls, size_t n, double timeout_s);

/* src/mcp.c: a client for the servers of an MCP configuration file
 * ({"mcpServers": {"name": {"command","args","env"} | {"url","headers"}}}). Servers start on
 * first use and are reused; one that crashes fails its calls in flight and is restarted (with
 * backoff) on a later use. A stdio server gets only PATH, HOME and the file's env, never the
 * proxy's environment. Returns NULL with 'err' filled when the file is unreadable or invalid. */
struct mcp *mcp_create(const char *config_path, struct px_error *err);
/* Stops every server (stdin closed, then SIGTERM, then SIGKILL of its process group) and frees
 * the client. NULL is a no-op. Call after every approach thread has finished. */
void mcp_destroy(struct mcp *m);

/* The text a tools/call result gives the model (content parts joined, structuredContent when
 * there is no content), capped at MCP_RESULT_MAX with a note. Sets *is_error from the result's
 * isError. In 'a'. Exposed for tests. */
const char *mcp_result_text(struct arena *a, const char *result_json, bool *is_error);

#endif
