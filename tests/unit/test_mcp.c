/* test_mcp.c: the mcp approach's tool-call loop on a fake MCP client and a scripted upstream
 * (steps bound, a reply's calls in one parallel batch, errors as tool results, client tools),
 * the results as text (caps, parts, errors), and the stdio JSON-RPC client of src/mcp.c on
 * tests/mcp/fake_server.sh (framing, dispatch by id, server-to-client requests, namespacing). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "chat.h"
#include "config.h"
#include "mcp.h"
#include "px.h"

extern const struct approach approach_mcp;

/* ---- a scripted upstream ------------------------------------------------------------------- */

#define MAXC 8

struct sllm {
    struct llm llm;
    const char *tool_calls[MAXC]; /* the reply of call i: these tool calls, or text when NULL */
    const char *text[MAXC];
    int ncalls;
    char *tools_seen[MAXC]; /* params.tools_json of call i (heap), or NULL */
    char *msgs_seen[MAXC];  /* call i's messages as JSON (heap) */
    bool answer[MAXC];
};

static void s_run(struct llm *llm, struct approach_ctx *ctx, struct llm_call *calls, size_t m)
{
    struct sllm *s = llm->impl;

    for (size_t k = 0; k < m; k++) {
        int i = s->ncalls++;
        struct llm_reply *r = &calls[k].reply;
        cJSON *arr = cJSON_CreateArray();

        assert_true(i < MAXC);
        for (size_t j = 0; j < calls[k].nmsgs; j++) {
            const struct llm_msg *mm = &calls[k].msgs[j];

            if (mm->raw) {
                cJSON_AddItemToArray(arr, cJSON_Duplicate(mm->raw, 1));
            } else {
                cJSON *o = cJSON_CreateObject();

                cJSON_AddStringToObject(o, "role", mm->role);
                cJSON_AddStringToObject(o, "content", mm->content);
                cJSON_AddItemToArray(arr, o);
            }
        }
        s->msgs_seen[i] = cJSON_PrintUnformatted(arr);
        cJSON_Delete(arr);
        s->tools_seen[i] = calls[k].params.tools_json ? strdup(calls[k].params.tools_json) : NULL;
        s->answer[i] = calls[k].params.answer;
        memset(r, 0, sizeof(*r));
        r->status = PX_OK;
        r->http_status = 200;
        r->nchoices = 1;
        r->choices = arena_calloc(ctx->arena, 1, sizeof(*r->choices));
        r->choices[0].text = s->text[i] ? s->text[i] : "";
        r->choices[0].tool_calls = s->tool_calls[i];
        r->choices[0].finish_reason = s->tool_calls[i] ? "tool_calls" : "stop";
        r->usage.calls = 1;
    }
}

static int s_get_n(struct llm *llm)
{
    (void)llm;
    return 1;
}

static void s_set_n(struct llm *llm, int v)
{
    (void)llm;
    (void)v;
}

static const struct llm_ops sllm_ops = {.run = s_run, .get_n = s_get_n, .set_n = s_set_n};

/* ---- a fake MCP client ---------------------------------------------------------------------- */

struct fmcp {
    struct mcp mcp;
    int batches; /* call_tools invocations */
    int batch_size[MAXC];
    double timeout;
};

static int f_list(struct mcp *m, struct arena *a, struct mcp_tool **out, double timeout,
                  struct px_error *err)
{
    struct mcp_tool *t = arena_calloc(a, 2, sizeof(*t));

    (void)m;
    (void)timeout;
    (void)err;
    t[0] = (struct mcp_tool){.name = "alpha",
                             .description = "the first",
                             .schema = "{\"type\":"
                                       "\"object\"}"};
    t[1] = (struct mcp_tool){.name = "beta", .description = "", .schema = "not json"};
    *out = t;
    return 2;
}

static void f_call(struct mcp *m, struct arena *a, struct mcp_call *calls, size_t n, double timeout)
{
    struct fmcp *f = m->impl;

    f->timeout = timeout;
    f->batch_size[f->batches++] = (int)n;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(calls[i].name, "beta")) {
            calls[i].result = "beta broke";
            calls[i].is_error = true;
        } else {
            calls[i].result = arena_printf(a, "alpha(%s)", calls[i].arguments);
        }
    }
}

static const struct mcp_ops fmcp_ops = {.list_tools = f_list, .call_tools = f_call};

/* ---- the environment ------------------------------------------------------------------------ */

struct env {
    struct arena *arena;
    struct config cfg;
    struct chat_request req;
    struct px_error err;
    struct approach_ctx ctx;
    struct sllm llm;
    struct fmcp mcp;
    struct chat_result out;
};

static void env_init(struct env *e, const char *extra)
{
    char body[1024];

    memset(e, 0, sizeof(*e));
    e->arena = arena_create();
    snprintf(e->cfg.approach, sizeof(e->cfg.approach), "auto");
    snprintf(e->cfg.model, sizeof(e->cfg.model), "m");
    e->cfg.n = 1;
    snprintf(body, sizeof(body),
             "{\"model\":\"mcp-m\",\"messages\":[{\"role\":\"user\",\"content\":\"go\"}]%s}",
             extra ? extra : "");
    assert_int_equal(chat_request_parse(e->arena, body, strlen(body), &e->cfg, &e->req, &e->err),
                     PX_OK);
    e->llm.llm.ops = &sllm_ops;
    e->llm.llm.impl = &e->llm;
    e->mcp.mcp.ops = &fmcp_ops;
    e->mcp.mcp.impl = &e->mcp;
    mcp_install(&e->mcp.mcp);
    e->ctx.arena = e->arena;
    e->ctx.req = &e->req;
    e->ctx.opts = approach_opts_of(&e->cfg);
    e->ctx.llm = &e->llm.llm;
    e->ctx.err = &e->err;
    e->ctx.req_id = "test";
}

static void env_free(struct env *e)
{
    for (int i = 0; i < MAXC; i++) {
        free(e->llm.tools_seen[i]);
        cJSON_free(e->llm.msgs_seen[i]);
    }
    mcp_install(NULL);
    arena_destroy(e->arena);
}

#define CALL(id, name, args)                                                                       \
    "{\"id\":\"" id "\",\"type\":\"function\",\"function\":{\"name\":\"" name                      \
    "\",\"arguments\":\"" args "\"}}"

/* One reply calling alpha and beta: both run in one batch, their results (beta's error too) go
 * back as tool messages after the assistant message, and the next reply is the answer. */
static void test_loop(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, NULL);
    e.llm.tool_calls[0] = "[" CALL("c1", "alpha", "{\\\"x\\\":1}") "," CALL("c2", "beta", "{}") "]";
    e.llm.text[1] = "done";
    assert_int_equal(approach_mcp.run(&e.ctx, &e.out), PX_OK);
    assert_string_equal(e.out.text, "done");
    assert_string_equal(e.out.finish_reason, "stop");
    assert_null(e.out.tool_calls);
    assert_int_equal(e.llm.ncalls, 2);
    assert_int_equal(e.mcp.batches, 1);
    assert_int_equal(e.mcp.batch_size[0], 2);
    assert_true(fabs(e.mcp.timeout - 30) < 1e-9); /* the default --mcp-timeout */
    assert_true(e.llm.answer[0] && e.llm.answer[1]);
    /* Both calls offered the tools; a bad schema became {"type":"object"}. */
    for (int i = 0; i < 2; i++) {
        assert_non_null(e.llm.tools_seen[i]);
        assert_non_null(strstr(e.llm.tools_seen[i],
                               "{\"type\":\"function\",\"function\":{\"name\":\"alpha\","
                               "\"description\":\"the first\",\"parameters\":{\"type\":"
                               "\"object\"}}}"));
        assert_non_null(strstr(e.llm.tools_seen[i], "{\"name\":\"beta\",\"parameters\":{\"type\":"
                                                    "\"object\"}}"));
    }
    assert_non_null(strstr(e.llm.msgs_seen[1],
                           "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
                           "\"c1\""));
    assert_non_null(strstr(e.llm.msgs_seen[1], "{\"role\":\"tool\",\"tool_call_id\":\"c1\","
                                               "\"content\":\"alpha({\\\"x\\\":1})\"}"));
    assert_non_null(strstr(e.llm.msgs_seen[1], "{\"role\":\"tool\",\"tool_call_id\":\"c2\","
                                               "\"content\":\"Error: beta broke\"}"));
    assert_int_equal(e.ctx.usage.calls, 2);
    env_free(&e);
}

/* A model that never stops calling: mcp_max_steps rounds, then one call without the tools
 * whose text is the answer (its stray tool calls are not returned). */
static void test_steps_bound(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, ",\"optillm_mcp_max_steps\":2,\"optillm_mcp_timeout\":1.5");
    for (int i = 0; i < MAXC; i++)
        e.llm.tool_calls[i] = "[" CALL("c", "alpha", "{}") "]";
    e.llm.text[2] = "gave up";
    assert_int_equal(approach_mcp.run(&e.ctx, &e.out), PX_OK);
    assert_int_equal(e.llm.ncalls, 3);
    assert_int_equal(e.mcp.batches, 2);
    assert_true(fabs(e.mcp.timeout - 1.5) < 1e-9);
    assert_non_null(e.llm.tools_seen[1]);
    assert_null(e.llm.tools_seen[2]); /* the last call must answer */
    assert_string_equal(e.out.text, "gave up");
    assert_string_equal(e.out.finish_reason, "stop");
    assert_null(e.out.tool_calls);
    env_free(&e);

    /* 0 steps: one call without tools. */
    env_init(&e, ",\"optillm_mcp_max_steps\":0");
    e.llm.text[0] = "plain";
    assert_int_equal(approach_mcp.run(&e.ctx, &e.out), PX_OK);
    assert_int_equal(e.llm.ncalls, 1);
    assert_null(e.llm.tools_seen[0]);
    assert_int_equal(e.mcp.batches, 0);
    env_free(&e);
}

/* A call of a client tool ends the loop: only the client's calls go back to the client. */
static void test_client_tools(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"mine\"}}]");
    e.llm.tool_calls[0] = "[" CALL("c1", "alpha", "{}") "," CALL("c2", "mine", "{}") "]";
    assert_int_equal(approach_mcp.run(&e.ctx, &e.out), PX_OK);
    assert_string_equal(e.out.finish_reason, "tool_calls");
    assert_non_null(e.out.tool_calls);
    assert_non_null(strstr(e.out.tool_calls, "\"name\":\"mine\""));
    assert_null(strstr(e.out.tool_calls, "alpha"));
    assert_int_equal(e.mcp.batches, 0);
    assert_int_equal(e.llm.ncalls, 1);
    env_free(&e);
}

/* Without --mcp-config: a 400 naming the flag, and no upstream call. */
static void test_not_configured(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, NULL);
    mcp_install(NULL);
    assert_int_equal(approach_mcp.run(&e.ctx, &e.out), PX_EINVAL);
    assert_non_null(strstr(e.err.message, "--mcp-config"));
    assert_int_equal(e.llm.ncalls, 0);
    env_free(&e);
}

/* tools/call results as the model's text. */
static void test_result_text(void **state)
{
    struct arena *a = arena_create();
    bool err;
    struct buf b;
    const char *t;

    (void)state;
    t = mcp_result_text(a,
                        "{\"content\":[{\"type\":\"text\",\"text\":\"one\"},{\"type\":\"image\","
                        "\"data\":\"AAAA\",\"mimeType\":\"image/png\"},{\"type\":\"resource\","
                        "\"resource\":{\"uri\":\"file:///x\",\"text\":\"res text\"}},{\"type\":"
                        "\"resource_link\",\"uri\":\"file:///y\"}]}",
                        &err);
    assert_false(err);
    assert_string_equal(t, "one\n[image image/png]\nres text\n[resource_link file:///y]");
    t = mcp_result_text(a, "{\"isError\":true,\"content\":[{\"type\":\"text\",\"text\":\"no\"}]}",
                        &err);
    assert_true(err);
    assert_string_equal(t, "no");
    t = mcp_result_text(a, "{\"content\":[],\"structuredContent\":{\"sum\":3}}", &err);
    assert_string_equal(t, "{\"sum\":3}");
    t = mcp_result_text(a, "[1]", &err);
    assert_true(err);
    /* A 300 KiB text: cut at 256 KiB, with a note giving the size. */
    buf_init(&b, 0);
    buf_puts(&b, "{\"content\":[{\"type\":\"text\",\"text\":\"");
    for (int i = 0; i < 300 * 1024; i++)
        buf_puts(&b, "y");
    buf_puts(&b, "\"}]}");
    t = mcp_result_text(a, buf_cstr(&b), &err);
    buf_free(&b);
    assert_false(err);
    assert_int_equal(strspn(t, "y"), MCP_RESULT_MAX);
    assert_string_equal(t + MCP_RESULT_MAX, "\n[truncated by the proxy: the tool's result was "
                                            "307200 bytes; the first 262144 are shown]");
    arena_destroy(a);
}

/* ---- the stdio client on a scripted server ------------------------------------------------- */

static char cfgpath[64];

static struct mcp *client_for(const char *json)
{
    struct px_error err = {0};
    FILE *f;
    struct mcp *m;

    snprintf(cfgpath, sizeof(cfgpath), "/tmp/test_mcp_%d.json", (int)getpid());
    f = fopen(cfgpath, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    m = mcp_create(cfgpath, &err);
    unlink(cfgpath);
    if (!m)
        fail_msg("mcp_create: %s", err.message);
    return m;
}

/* Two servers with the same tool: namespaced names, calls dispatched by id to the right
 * server, server-to-client requests answered (ping: {}, others: method not found) and
 * notifications ignored; an unknown tool and bad arguments are error results. */
static void test_stdio_client(void **state)
{
    struct mcp *m = client_for(
        "{\"mcpServers\": {\"a\": {\"command\": \"tests/mcp/fake_server.sh\", \"args\": "
        "[\"ok\"]}, \"b\": {\"command\": \"sh\", \"args\": [\"tests/mcp/fake_server.sh\", "
        "\"ping\"], \"env\": {\"X\": \"1\"}}}}");
    struct arena *a = arena_create();
    struct px_error err = {0};
    struct mcp_tool *tools;
    struct mcp_call calls[4] = {
        {.name = "a__probe", .arguments = "{}"},
        {.name = "b__probe", .arguments = "{\"q\":1}"},
        {.name = "nope", .arguments = "{}"},
        {.name = "a__probe", .arguments = "[1,2]"},
    };

    (void)state;
    assert_int_equal(m->ops->list_tools(m, a, &tools, 10, &err), 2);
    assert_string_equal(tools[0].name, "a__probe");
    assert_string_equal(tools[1].name, "b__probe");
    assert_string_equal(tools[0].description, "a fake tool");
    assert_string_equal(tools[0].schema, "{\"type\":\"object\"}");
    m->ops->call_tools(m, a, calls, 4, 10);
    assert_false(calls[0].is_error);
    assert_string_equal(calls[0].result, "probe ok");
    assert_false(calls[1].is_error);
    assert_non_null(strstr(calls[1].result, "{'jsonrpc':'2.0','id':'srv-1','result':{}}"));
    assert_non_null(strstr(calls[1].result, "'id':'srv-2','error':{'code':-32601"));
    assert_true(calls[2].is_error);
    assert_string_equal(calls[2].result, "unknown tool 'nope' (not offered by any MCP server)");
    assert_true(calls[3].is_error);
    assert_string_equal(calls[3].result, "the tool call's arguments are not a JSON object");
    mcp_destroy(m);
    arena_destroy(a);
}

/* Tool names OpenAI would refuse are offered with '_' for each bad character (cut at 64), and
 * a call of the offered name reaches the server under the tool's real name. */
static void test_tool_names(void **state)
{
    struct mcp *m = client_for(
        "{\"mcpServers\": {\"a.b\": {\"command\": \"tests/mcp/fake_server.sh\", \"args\": "
        "[\"name\"], \"env\": {\"FAKE_TOOL\": \"files.read/all\"}}, \"c\": {\"command\": "
        "\"tests/mcp/fake_server.sh\", \"args\": [\"name\"], \"env\": {\"FAKE_TOOL\": "
        "\"files:read/all\"}}, \"d\": {\"command\": \"tests/mcp/fake_server.sh\", \"args\": "
        "[\"name\"], \"env\": {\"FAKE_TOOL\": "
        "\"x123456789x123456789x123456789x123456789x123456789x123456789x123456789\"}}}}");
    struct arena *a = arena_create();
    struct px_error err = {0};
    struct mcp_tool *tools;
    struct mcp_call calls[3] = {
        {.name = "a_b__files_read_all"},
        {.name = "c__files_read_all"},
        {.name = "x123456789x123456789x123456789x123456789x123456789x123456789x123"},
    };

    (void)state;
    assert_int_equal(m->ops->list_tools(m, a, &tools, 10, &err), 3);
    assert_string_equal(tools[0].name, "a_b__files_read_all"); /* a clash after the cleaning */
    assert_string_equal(tools[1].name, "c__files_read_all");
    assert_string_equal(tools[2].name, calls[2].name);
    m->ops->call_tools(m, a, calls, 3, 10);
    assert_string_equal(calls[0].result, "called files.read/all");
    assert_string_equal(calls[1].result, "called files:read/all");
    assert_string_equal(
        calls[2].result,
        "called x123456789x123456789x123456789x123456789x123456789x123456789x123456789");
    mcp_destroy(m);
    arena_destroy(a);
}

/* tools/list is followed through its pages (nextCursor). */
static void test_pages(void **state)
{
    struct mcp *m =
        client_for("{\"mcpServers\": {\"p\": {\"command\": \"tests/mcp/fake_server.sh\", "
                   "\"args\": [\"name\"], \"env\": {\"FAKE_PAGES\": \"1\"}}}}");
    struct arena *a = arena_create();
    struct px_error err = {0};
    struct mcp_tool *tools;
    struct mcp_call call = {.name = "probe_2"};

    (void)state;
    assert_int_equal(m->ops->list_tools(m, a, &tools, 10, &err), 2);
    assert_string_equal(tools[0].name, "probe");
    assert_string_equal(tools[1].name, "probe_2");
    m->ops->call_tools(m, a, &call, 1, 10);
    assert_string_equal(call.result, "called probe_2");
    mcp_destroy(m);
    arena_destroy(a);
}

/* Bad configuration files. */
static void test_bad_config(void **state)
{
    static const char *const bad[] = {
        "not json",
        "{\"mcpServers\": {}}",
        "{\"mcpServers\": {\"x\": {}}}",
        "{\"mcpServers\": {\"x\": {\"command\": \"a\", \"args\": [1]}}}",
        "{\"mcpServers\": {\"x\": {\"command\": \"a\", \"env\": {\"K\": 1}}}}",
        "{\"mcpServers\": {\"x\": {\"url\": \"ftp://h\"}}}",
        "{\"mcpServers\": {\"a__b\": {\"command\": \"a\"}}}",
    };
    struct px_error err;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FILE *f;

        snprintf(cfgpath, sizeof(cfgpath), "/tmp/test_mcp_%d.json", (int)getpid());
        f = fopen(cfgpath, "w");
        fputs(bad[i], f);
        fclose(f);
        memset(&err, 0, sizeof(err));
        assert_null(mcp_create(cfgpath, &err));
        assert_int_equal(err.code, PX_EINVAL);
        unlink(cfgpath);
    }
    memset(&err, 0, sizeof(err));
    assert_null(mcp_create("/nonexistent/mcp.json", &err));
    assert_non_null(strstr(err.message, "cannot open"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop),         cmocka_unit_test(test_steps_bound),
        cmocka_unit_test(test_client_tools), cmocka_unit_test(test_not_configured),
        cmocka_unit_test(test_result_text),  cmocka_unit_test(test_stdio_client),
        cmocka_unit_test(test_tool_names),   cmocka_unit_test(test_pages),
        cmocka_unit_test(test_bad_config),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
