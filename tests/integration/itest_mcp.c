/* itest_mcp.c: the mcp plugin through the real proxy and the mock upstream (mcp_tool=...):
 * the real @modelcontextprotocol/server-everything from npm over stdio and over Streamable
 * HTTP (tests/mcp/setup.sh installs the pinned version), and scripted servers
 * (tests/mcp/fake_server.sh) that crash, hang, send malformed JSON-RPC or huge results. */
#define _DEFAULT_SOURCE /* realpath */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define SECRET "sk-PROXY-SECRET-must-not-leak-42"

static struct proc mock;
static char dir[400]; /* absolute tests/mcp */
static char tag[64];  /* marks this run's fake servers in their argv */
static char cfgpath[PATH_MAX];
static pid_t http_srv; /* the streamableHttp server, while it runs */

static int setup(void **state)
{
    (void)state;
    harness_deadline(300);
    char abs[PATH_MAX];

    if (!realpath("tests/mcp", abs) || strlen(abs) >= sizeof(dir) ||
        system("tests/mcp/setup.sh") != 0) {
        fprintf(stderr, "itest_mcp: tests/mcp/setup.sh failed (node and npm are needed)\n");
        return -1;
    }
    memcpy(dir, abs, strlen(abs) + 1); /* checked above */
    snprintf(tag, sizeof(tag), "tag-%d", (int)getpid());
    snprintf(cfgpath, sizeof(cfgpath), "/tmp/itest_mcp_%d.json", (int)getpid());
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    unlink(cfgpath);
    if (http_srv > 0) { /* a failed test_http_everything */
        kill(http_srv, SIGKILL);
        waitpid(http_srv, NULL, 0);
    }
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static void write_cfg(const char *json)
{
    FILE *f = fopen(cfgpath, "w");

    assert_non_null(f);
    fputs(json, f);
    fclose(f);
}

/* A fake server entry: "name": {"command": ".../fake_server.sh", "args": [mode, tag]}. */
static char *fake(char *buf, size_t len, const char *name, const char *mode)
{
    snprintf(buf, len, "\"%s\": {\"command\": \"%s/fake_server.sh\", \"args\": [\"%s\", \"%s\"]}",
             name, dir, mode, tag);
    return buf;
}

static void start_proxy(struct proc *px, const char *extra_flag, const char *extra_val)
{
    const char *args[] = {"--mcp-config", cfgpath, "--log", "info", extra_flag, extra_val, NULL};
    const char *env[] = {"OPENAI_API_KEY=" SECRET, NULL};

    assert_int_equal(proxy_start(px, mock.port, args, env), 0);
}

/* POSTs model (mcp-mock@opts) and returns the parsed answer; *status the HTTP status. */
static cJSON *ask(int port, const char *model, const char *extra, long *status, double *secs)
{
    struct http_resp r = {0};
    char *body = chat_body(model, "use the tool", extra);
    cJSON *j;

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, NULL, &r), 0);
    free(body);
    *status = r.status;
    if (secs)
        *secs = r.total_s;
    j = http_json(&r);
    if (!j)
        fprintf(stderr, "not JSON: %.*s\n", (int)r.len, r.body ? r.body : "");
    http_resp_free(&r);
    assert_non_null(j);
    return j;
}

static const char *content(const cJSON *j)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "message");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");

    return cJSON_IsString(c) ? c->valuestring : "";
}

/* Processes whose argv contains both a and b (this run's servers). */
static int procs_with(const char *a, const char *b)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    while (d && (e = readdir(d))) {
        char path[300], buf[4096];
        FILE *f;
        size_t len;

        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        for (size_t i = 0; i < len; i++)
            if (!buf[i])
                buf[i] = ' ';
        buf[len] = '\0';
        if (strstr(buf, a) && strstr(buf, b))
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

static int log_count(const struct proc *px, const char *needle)
{
    FILE *f = fopen(px->log, "r");
    char line[8192];
    int n = 0;

    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

struct conc {
    int port;
    int i;
    bool ok;
};

/* One of many concurrent requests: three echo calls with its own message. */
static void *conc_main(void *arg)
{
    struct conc *c = arg;
    char model[200], want[200];
    struct http_resp r = {0};
    char *body;
    cJSON *j;

    snprintf(model, sizeof(model),
             "mcp-mock@mcp_tool=echo,mcp_calls=3,mcp_args=%%7B%%22message%%22%%3A%%22m%d%%22%%7D",
             c->i);
    snprintf(want, sizeof(want), "tool said: Echo: m%d | Echo: m%d | Echo: m%d", c->i, c->i, c->i);
    body = chat_body(model, "use the tool", NULL);
    if (http_req("POST", c->port, "/v1/chat/completions", body, NULL, &r) == 0 && r.status == 200) {
        j = http_json(&r);
        c->ok = j && !strcmp(content(j), want);
        cJSON_Delete(j);
    }
    free(body);
    http_resp_free(&r);
    return NULL;
}

/* The real server-everything over stdio: echo goes round (model -> proxy -> server -> model),
 * three parallel calls, 16 concurrent requests, the server's environment holds the config's env and
 * none of the proxy's keys, and the server is started once and stopped with the proxy. */
static void test_stdio_everything(void **state)
{
    struct proc px;
    char cfg[4096], f1[1100];
    long st;
    cJSON *j;

    (void)state;
    snprintf(cfg, sizeof(cfg),
             "{\"mcpServers\": {\"everything\": {\"command\": \"node\", \"args\": "
             "[\"%s/node_modules/@modelcontextprotocol/server-everything/dist/index.js\", "
             "\"stdio\", \"%s\"], \"env\": {\"MCP_TEST_VAR\": \"visible-42\"}}, %s}}",
             dir, tag, fake(f1, sizeof(f1), "fake", "ok"));
    write_cfg(cfg);
    start_proxy(&px, NULL, NULL);

    j = ask(px.port, "mcp-mock@mcp_tool=echo,mcp_args=%7B%22message%22%3A%22hello%20mcp%22%7D",
            NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "tool said: Echo: hello mcp");
    cJSON_Delete(j);

    /* Three calls of one reply: three tool results, in order. */
    j = ask(px.port, "mcp-mock@mcp_tool=echo,mcp_calls=3,mcp_args=%7B%22message%22%3A%22par%22%7D",
            NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "tool said: Echo: par | Echo: par | Echo: par");
    cJSON_Delete(j);

    /* get-env shows the server's environment: PATH, HOME and the config's env only. */
    j = ask(px.port, "mcp-mock@mcp_tool=get-env", NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_non_null(strstr(content(j), "visible-42"));
    assert_null(strstr(content(j), SECRET));
    assert_null(strstr(content(j), "OPENAI_API_KEY"));
    cJSON_Delete(j);

    /* The upstream saw the server's tools, and a tool name offered by one server only is not
     * namespaced. */
    j = mock_get(mock.port, "/mock/requests");
    {
        char *s = cJSON_PrintUnformatted(j);

        assert_non_null(strstr(s, "\"name\":\"echo\""));
        assert_non_null(strstr(s, "\"name\":\"probe\""));
        assert_non_null(strstr(s, "\"tool_call_id\":\"call_mcp_2\""));
        cJSON_free(s);
    }
    cJSON_Delete(j);

    /* 16 requests at once, 48 calls on the one server: each gets its own answers. */
    {
        struct conc cs[16];
        pthread_t th[16];

        for (int i = 0; i < 16; i++) {
            cs[i] = (struct conc){.port = px.port, .i = i};
            assert_int_equal(pthread_create(&th[i], NULL, conc_main, &cs[i]), 0);
        }
        for (int i = 0; i < 16; i++) {
            pthread_join(th[i], NULL);
            assert_true(cs[i].ok);
        }
    }

    assert_int_equal(log_count(&px, "MCP server everything started"), 1); /* reused */
    assert_int_equal(procs_with("server-everything", tag), 1);
    assert_int_equal(proc_stop(&px), 0);
    assert_int_equal(procs_with("server-everything", tag), 0); /* stopped on shutdown */
    assert_int_equal(procs_with("fake_server.sh", tag), 0);
}

/* Waits until 127.0.0.1:port accepts a connection (up to 20 s). */
static bool wait_port(int port)
{
    for (int i = 0; i < 200; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        int ok;

        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return true;
        nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
    return false;
}

/* The real server-everything in its streamableHttp mode (PORT=<free port>): get-sum through
 * the proxy, twice on one session. */
static void test_http_everything(void **state)
{
    struct proc px, srv = {0};
    char cfg[1024], js[600], portenv[32];
    int port = harness_free_port();
    long st;
    cJSON *j;

    (void)state;
    snprintf(js, sizeof(js),
             "%s/node_modules/@modelcontextprotocol/server-everything/dist/index.js", dir);
    snprintf(portenv, sizeof(portenv), "%d", port);
    srv.pid = fork();
    assert_true(srv.pid >= 0);
    if (srv.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
        setenv("PORT", portenv, 1);
        unsetenv("OPENAI_API_KEY");
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execlp("node", "node", js, "streamableHttp", tag, (char *)NULL);
        _exit(127);
    }
    http_srv = srv.pid;
    assert_true(wait_port(port));
    snprintf(cfg, sizeof(cfg),
             "{\"mcpServers\": {\"web\": {\"url\": \"http://127.0.0.1:%d/mcp\", \"headers\": "
             "{\"X-Test\": \"1\"}}}}",
             port);
    write_cfg(cfg);
    start_proxy(&px, NULL, NULL);
    j = ask(px.port, "mcp-mock@mcp_tool=get-sum,mcp_args=%7B%22a%22%3A2%2C%22b%22%3A40%7D", NULL,
            &st, NULL);
    assert_int_equal(st, 200);
    assert_non_null(strstr(content(j), "42"));
    cJSON_Delete(j);
    j = ask(px.port, "mcp-mock@mcp_tool=echo,mcp_args=%7B%22message%22%3A%22via%20http%22%7D", NULL,
            &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "tool said: Echo: via http");
    cJSON_Delete(j);
    assert_int_equal(log_count(&px, "MCP server web ready"), 1); /* one session */
    assert_int_equal(proc_stop(&px), 0);
    kill(srv.pid, SIGTERM);
    waitpid(srv.pid, NULL, 0);
    http_srv = 0;
}

/* An SDK-built Streamable HTTP server answering with JSON bodies (not SSE), with a session:
 * two calls on one session (a lost Mcp-Session-Id would make the second fail), the session
 * ended (DELETE) when the proxy stops. */
static void test_http_json(void **state)
{
    struct proc px;
    char cfg[1024], js[600], line[64] = "";
    int fds[2], port = 0;
    long st;
    cJSON *j;
    FILE *out;

    (void)state;
    snprintf(js, sizeof(js), "%s/json_http_server.mjs", dir);
    assert_int_equal(pipe(fds), 0);
    http_srv = fork();
    assert_true(http_srv >= 0);
    if (http_srv == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        unsetenv("OPENAI_API_KEY");
        execlp("node", "node", js, tag, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    out = fdopen(fds[0], "r");
    assert_non_null(fgets(line, sizeof(line), out));
    assert_int_equal(sscanf(line, "PORT %d", &port), 1);
    snprintf(cfg, sizeof(cfg), "{\"mcpServers\": {\"json\": {\"url\": \"http://127.0.0.1:%d/\"}}}",
             port);
    write_cfg(cfg);
    start_proxy(&px, NULL, NULL);
    for (int i = 0; i < 2; i++) {
        j = ask(px.port, "mcp-mock@mcp_tool=shout,mcp_args=%7B%22text%22%3A%22quiet%22%7D", NULL,
                &st, NULL);
        assert_int_equal(st, 200);
        assert_string_equal(content(j), "tool said: QUIET");
        cJSON_Delete(j);
    }
    assert_int_equal(proc_stop(&px), 0);
    /* The proxy ended its session on shutdown. */
    assert_non_null(fgets(line, sizeof(line), out));
    assert_string_equal(line, "DELETE true\n");
    fclose(out);
    kill(http_srv, SIGTERM);
    waitpid(http_srv, NULL, 0);
    http_srv = 0;
}

/* Servers that misbehave during a tools/call: each a tool result the model sees, the request
 * answered 200, the proxy unharmed. Every server offers "probe": the names are namespaced. */
static void test_bad_servers(void **state)
{
    struct proc px;
    char cfg[12000], f[8][1100];
    long st;
    double secs;
    cJSON *j;

    (void)state;
    snprintf(
        cfg, sizeof(cfg), "{\"mcpServers\": {%s, %s, %s, %s, %s, %s, %s}}",
        fake(f[0], sizeof(f[0]), "crash", "crash"), fake(f[1], sizeof(f[1]), "hang", "hang"),
        fake(f[2], sizeof(f[2]), "garbage", "garbage"), fake(f[3], sizeof(f[3]), "huge", "huge"),
        fake(f[4], sizeof(f[4]), "toolerror", "toolerror"),
        fake(f[5], sizeof(f[5]), "rpcerror", "rpcerror"), fake(f[6], sizeof(f[6]), "slow", "slow"));
    write_cfg(cfg);
    start_proxy(&px, "--mcp-timeout", "2");

    /* A crash during the call: the call fails with the exit status, the server restarts on a
     * later use (after its backoff) and crashes again. */
    j = ask(px.port, "mcp-mock@mcp_tool=crash__probe", NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "tool said: Error: MCP server crash exited with status 1");
    cJSON_Delete(j);
    nanosleep(&(struct timespec){1, 0}, NULL); /* the backoff after one failure is 0.5 s */
    j = ask(px.port, "mcp-mock@mcp_tool=crash__probe", NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "tool said: Error: MCP server crash exited with status 1");
    cJSON_Delete(j);
    assert_int_equal(log_count(&px, "MCP server crash started"), 2);
    /* Within the backoff (1 s after a second failure) it is not restarted, and its tools are
     * not offered: the model answers without them. */
    mock_reset(mock.port);
    j = ask(px.port, "mcp-mock@mcp_tool=crash__probe", NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "no tool");
    cJSON_Delete(j);
    j = mock_get(mock.port, "/mock/requests");
    {
        char *s = cJSON_PrintUnformatted(j);

        assert_null(strstr(s, "\"name\":\"crash__probe\""));
        assert_non_null(strstr(s, "\"name\":\"hang__probe\""));
        cJSON_free(s);
    }
    cJSON_Delete(j);
    assert_int_equal(log_count(&px, "MCP server crash started"), 2);

    /* A hang: the per-call timeout. */
    j = ask(px.port, "mcp-mock@mcp_tool=hang__probe", NULL, &st, &secs);
    assert_int_equal(st, 200);
    assert_string_equal(content(j),
                        "tool said: Error: MCP server hang did not answer tools/call within 2 s");
    assert_true(secs >= 1.9);
    cJSON_Delete(j);

    /* Malformed JSON-RPC. */
    j = ask(px.port, "mcp-mock@mcp_tool=garbage__probe", NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_non_null(strstr(content(j), "Error: MCP server garbage sent malformed JSON-RPC"));
    cJSON_Delete(j);

    /* A tool's own error, and a JSON-RPC error. */
    j = ask(px.port, "mcp-mock@mcp_tool=toolerror__probe", NULL, &st, NULL);
    assert_string_equal(content(j), "tool said: Error: probe failed on purpose");
    cJSON_Delete(j);
    j = ask(px.port, "mcp-mock@mcp_tool=rpcerror__probe", NULL, &st, NULL);
    assert_string_equal(content(j),
                        "tool said: Error: MCP server rpcerror: error -32602: bad params");
    cJSON_Delete(j);

    /* A 1,000,000-byte result reaches the model cut to 256 KiB with a note. */
    j = ask(px.port, "mcp-mock@mcp_tool=huge__probe", NULL, &st, NULL);
    assert_int_equal(st, 200);
    cJSON_Delete(j);
    j = mock_get(mock.port, "/mock/requests");
    {
        const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(j, "requests");
        const cJSON *last =
            cJSON_GetArrayItem(reqs ? reqs : j, cJSON_GetArraySize(reqs ? reqs : j) - 1);
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(last, "body"), "messages");
        const cJSON *tool = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
        const char *c = cJSON_GetObjectItemCaseSensitive(tool, "content")->valuestring;

        assert_true(strlen(c) > 262144 && strlen(c) < 262144 + 200);
        assert_non_null(strstr(c, "[truncated by the proxy: the tool's result was 1000000 bytes"));
    }
    cJSON_Delete(j);

    /* Three 1 s calls of one reply run in parallel. */
    j = ask(px.port, "mcp-mock@mcp_tool=slow__probe,mcp_calls=3", NULL, &st, &secs);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "tool said: probe slow | probe slow | probe slow");
    assert_true(secs < 2.5 + harness_slack());
    cJSON_Delete(j);

    assert_int_equal(proc_stop(&px), 0);
    assert_int_equal(procs_with("fake_server.sh", tag), 0);
}

/* The loop is bounded: a model that always calls the tool gets --mcp-max-steps rounds, then
 * one call without the MCP tools. Client tools go back to the client. */
static void test_steps_and_client_tools(void **state)
{
    struct proc px;
    char cfg[2048], f1[1100];
    long st;
    cJSON *j;
    const cJSON *ch;

    (void)state;
    snprintf(cfg, sizeof(cfg), "{\"mcpServers\": {%s}}", fake(f1, sizeof(f1), "fake", "ok"));
    write_cfg(cfg);
    start_proxy(&px, "--mcp-max-steps", "2");
    mock_reset(mock.port);
    j = ask(px.port, "mcp-mock@mcp_tool=probe,mcp_loop=1", NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "tool said: probe ok | probe ok");
    assert_int_equal(mock_stat(mock.port, "calls"), 3);
    cJSON_Delete(j);

    /* A stream: the answer is sent at the end, as a proper chunk stream. */
    {
        struct http_resp r = {0};
        char *body = chat_body("mcp-mock@mcp_tool=probe", "go", "\"stream\":true");

        assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, NULL, &r), 0);
        free(body);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "\"content\":\"tool said: probe ok\""));
        assert_non_null(strstr(r.body, "data: [DONE]"));
        http_resp_free(&r);
    }

    /* optillm_mcp_max_steps per request. */
    mock_reset(mock.port);
    j = ask(px.port, "mcp-mock@mcp_tool=probe,mcp_loop=1", "\"optillm_mcp_max_steps\":0", &st,
            NULL);
    assert_int_equal(st, 200);
    assert_string_equal(content(j), "no tool");
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    cJSON_Delete(j);

    /* The model calls the client's tool: returned to the client, not run. */
    j = ask(px.port, "mcp-mock@mcp_tool=client_fn",
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"client_fn\","
            "\"parameters\":{\"type\":\"object\"}}}]",
            &st, NULL);
    assert_int_equal(st, 200);
    ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason")->valuestring,
                        "tool_calls");
    {
        char *s = cJSON_PrintUnformatted(ch);

        assert_non_null(strstr(s, "\"name\":\"client_fn\""));
        cJSON_free(s);
    }
    cJSON_Delete(j);
    /* Both the MCP tool and the client's were offered. */
    j = mock_get(mock.port, "/mock/requests");
    {
        char *s = cJSON_PrintUnformatted(j);

        assert_non_null(strstr(s, "\"name\":\"probe\""));
        assert_non_null(strstr(s, "\"name\":\"client_fn\""));
        cJSON_free(s);
    }
    cJSON_Delete(j);
    assert_int_equal(proc_stop(&px), 0);
}

/* Servers that fail before offering any tool: a 502 naming the server and what happened. */
static void test_dead_servers(void **state)
{
    static const char *const cases[][2] = {
        {"sh", "MCP server dead exited with status 1"},
        {"garbage", "MCP server dead sent malformed JSON-RPC: garbage"},
        {"silent", "MCP server dead did not answer initialize within 1 s"},
        {"missing", "MCP server dead: cannot start"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct proc px;
        char cfg[1024];
        long st;
        cJSON *j;
        const cJSON *m;

        if (!strcmp(cases[i][0], "sh"))
            snprintf(cfg, sizeof(cfg),
                     "{\"mcpServers\": {\"dead\": {\"command\": \"sh\", "
                     "\"args\": [\"-c\", \"read x; exit 1\", \"%s\"]}}}",
                     tag);
        else if (!strcmp(cases[i][0], "garbage"))
            snprintf(cfg, sizeof(cfg),
                     "{\"mcpServers\": {\"dead\": {\"command\": \"sh\", "
                     "\"args\": [\"-c\", \"echo garbage; sleep 30\", \"%s\"]}}}",
                     tag);
        else if (!strcmp(cases[i][0], "silent"))
            snprintf(cfg, sizeof(cfg),
                     "{\"mcpServers\": {\"dead\": {\"command\": \"sh\", "
                     "\"args\": [\"-c\", \"while read x; do :; done\", "
                     "\"%s\"]}}}",
                     tag);
        else
            snprintf(cfg, sizeof(cfg),
                     "{\"mcpServers\": {\"dead\": {\"command\": "
                     "\"/nonexistent/mcp-server\"}}}");
        write_cfg(cfg);
        start_proxy(&px, "--mcp-timeout", "1");
        j = ask(px.port, "mcp-mock@mcp_tool=probe", NULL, &st, NULL);
        assert_int_equal(st, 502);
        m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"),
                                             "message");
        assert_true(cJSON_IsString(m));
        /* A missing program: posix_spawn says so, or (under valgrind) the child exits 127. */
        if (!strstr(m->valuestring, cases[i][1]) &&
            !(i == 3 && strstr(m->valuestring, "MCP server dead exited with status 127")))
            fail_msg("case %s: %s", cases[i][0], m->valuestring);
        cJSON_Delete(j);
        assert_int_equal(proc_stop(&px), 0);
        assert_int_equal(procs_with("sh -c", tag), 0);
    }
}

/* A bad --mcp-config stops the start-up with a message. */
static void test_bad_config(void **state)
{
    struct proc px;
    const char *args[] = {"--mcp-config", cfgpath, NULL};

    (void)state;
    write_cfg("{\"servers\": {}}");
    assert_int_not_equal(proxy_start(&px, mock.port, args, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stdio_everything),
        cmocka_unit_test(test_http_everything),
        cmocka_unit_test(test_http_json),
        cmocka_unit_test(test_bad_servers),
        cmocka_unit_test(test_steps_and_client_tools),
        cmocka_unit_test(test_dead_servers),
        cmocka_unit_test(test_bad_config),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
