/* mcp.c: an MCP client (JSON-RPC 2.0) for the servers of --mcp-config, over stdio and
 * Streamable HTTP, behind the contract of include/mcp.h.
 *
 * DESIGN. One struct server per configured server, shared by every approach thread. Its state
 * (DOWN, STARTING, READY), the child process and the table of calls waiting for an answer are
 * guarded by server.mu; the thread that finds a server DOWN starts it (spawn, initialize,
 * notifications/initialized, tools/list) while the others wait on server.cv.
 *
 * stdio: the child gets pipes for stdin and stdout (one JSON-RPC message per line), its own
 * process group, default signal dispositions, no inherited descriptors and a minimal
 * environment (PATH, HOME and the config's env: never the proxy's keys). One reader thread per
 * child reads stdout (and stderr, logged at debug level) and hands each response to the call
 * waiting for its id (condition variable); server-to-client requests get "method not found"
 * (ping gets {}), notifications are ignored. End of file, a line that is not JSON-RPC or a
 * line over MCP_LINE_MAX kills the child's group: calls in flight fail with the reason, and a
 * later use restarts it after a backoff (0.5 s doubling to 30 s, reset by a successful call).
 * Listing the tools starts the servers that are not ready in parallel.
 *
 * Streamable HTTP: each message is POSTed with Accept: application/json, text/event-stream;
 * the answer is a JSON body or an SSE stream carrying it; the Mcp-Session-Id the server
 * returns on initialize is sent on every later request. This uses a libcurl easy handle in the
 * calling thread (bounded by the call's timeout); TODO(#12): move it onto the I/O loops.
 *
 * Locks: server.mu and server.wmu (the stdin writer) are never held together; no I/O under
 * server.mu. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "mcp.h"
#include "px.h"

#define MCP_LINE_MAX      ((size_t)8 * 1024 * 1024) /* one JSON-RPC message */
#define MCP_CONFIG_MAX    ((size_t)1024 * 1024)
#define MCP_MAX_SERVERS   32
#define MCP_MAX_PARALLEL  16  /* tool calls of one step run at once; more fail */
#define MCP_LIST_PAGES    100 /* tools/list pages followed */
#define MCP_PROTOCOL      "2025-06-18"
#define MCP_BACKOFF_MAX_S 30.0

extern char **environ;

/* ---- the installed client ------------------------------------------------------------------ */

static struct mcp *installed;

void mcp_install(struct mcp *m)
{
    installed = m;
}

struct mcp *mcp_installed(void)
{
    return installed;
}

int mcp_list_tools(struct approach_ctx *ctx, struct mcp_tool **out, double timeout_s)
{
    if (!installed)
        return px_fail(
            ctx->err, PX_EINVAL, "model",
            "the mcp approach needs MCP servers: start the proxy with --mcp-config FILE");
    return installed->ops->list_tools(installed, ctx->arena, out, timeout_s, ctx->err);
}

void mcp_call_tools(struct approach_ctx *ctx, struct mcp_call *calls, size_t n, double timeout_s)
{
    if (installed) {
        installed->ops->call_tools(installed, ctx->arena, calls, n, timeout_s);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        calls[i].result = "no MCP servers are configured (--mcp-config)";
        calls[i].is_error = true;
    }
}

/* ---- results as text ----------------------------------------------------------------------- */

static const char *cap_text(struct arena *a, const char *s, size_t len)
{
    size_t cut = MCP_RESULT_MAX;

    if (len <= MCP_RESULT_MAX)
        return arena_strndup(a, s, len);
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--; /* keep UTF-8 valid */
    return arena_printf(a,
                        "%.*s\n[truncated by the proxy: the tool's result was %zu bytes; the "
                        "first %zu are shown]",
                        (int)cut, s, len, cut);
}

const char *mcp_result_text(struct arena *a, const char *result_json, bool *is_error)
{
    cJSON *r = result_json ? cJSON_Parse(result_json) : NULL;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(r, "content");
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(r, "structuredContent");
    const cJSON *c;
    struct buf b;
    const char *out;

    *is_error = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "isError"));
    if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        *is_error = true;
        return "the MCP server's tools/call result is not an object";
    }
    buf_init(&b, 0);
    cJSON_ArrayForEach(c, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        const char *t = cJSON_IsString(type) ? type->valuestring : "?";

        if (b.len)
            buf_puts(&b, "\n");
        if (cJSON_IsString(text)) {
            buf_puts(&b, text->valuestring);
        } else if (!strcmp(t, "resource")) {
            const cJSON *res = cJSON_GetObjectItemCaseSensitive(c, "resource");
            const cJSON *rt = cJSON_GetObjectItemCaseSensitive(res, "text");
            const cJSON *uri = cJSON_GetObjectItemCaseSensitive(res, "uri");

            if (cJSON_IsString(rt))
                buf_puts(&b, rt->valuestring);
            else
                buf_printf(&b, "[resource %s]", cJSON_IsString(uri) ? uri->valuestring : "");
        } else {
            const cJSON *mime = cJSON_GetObjectItemCaseSensitive(c, "mimeType");
            const cJSON *uri = cJSON_GetObjectItemCaseSensitive(c, "uri");

            buf_printf(&b, "[%s%s%s]", t, cJSON_IsString(mime) || cJSON_IsString(uri) ? " " : "",
                       cJSON_IsString(mime)  ? mime->valuestring
                       : cJSON_IsString(uri) ? uri->valuestring
                                             : "");
        }
    }
    if (b.len == 0 && sc) {
        char *j = cJSON_PrintUnformatted(sc);

        buf_puts(&b, j ? j : "");
        cJSON_free(j);
    }
    out = cap_text(a, buf_cstr(&b), b.len);
    buf_free(&b);
    cJSON_Delete(r);
    return out;
}

/* ---- servers ------------------------------------------------------------------------------- */

enum state { S_DOWN, S_STARTING, S_READY };

/* A call waiting for its answer (on the caller's stack, linked while it waits). */
struct pending {
    long id;
    bool done;
    cJSON *msg; /* the response (owned), or NULL with err set */
    char *err;  /* heap */
    struct pending *next;
};

struct server {
    char *name;
    bool http;
    char **argv;                /* stdio: command and args (heap, NULL-terminated) */
    char **envp;                /* stdio: the minimal environment */
    char *url;                  /* http */
    struct curl_slist *headers; /* http: the config's headers */

    pthread_mutex_t mu; /* guards every field below */
    pthread_cond_t cv;  /* state changes and answers */
    enum state state;
    pid_t pid; /* stdio child (its process group), 0 when none */
    int in_fd, out_fd, err_fd;
    bool reader_started; /* a reader thread exists and has not been joined */
    pthread_t reader;
    long next_id;
    struct pending *pend;
    cJSON *tools;  /* the tools/list array (owned), NULL until listed */
    char *session; /* http: Mcp-Session-Id */
    int failures;  /* consecutive failed starts and crashes */
    long long retry_at_us;
    char why[300]; /* why it last went down */

    pthread_mutex_t wmu; /* serialises writes to in_fd */
};

struct client {
    struct mcp mcp;
    struct server *servers;
    size_t nservers;
};

static long long now_us(void)
{
    return px_now_us();
}

static void fail_pending(struct server *s, const char *why)
{
    for (struct pending *p = s->pend; p; p = p->next)
        if (!p->done) {
            p->done = true;
            p->err = xstrdup(why);
        }
    pthread_cond_broadcast(&s->cv);
}

/* Marks a server down after a crash or a failed start (s->mu held): calls in flight fail. */
static void do_down(struct server *s, const char *why)
{
    double backoff;

    snprintf(s->why, sizeof(s->why), "%s", why);
    s->failures++;
    backoff = 0.5 * pow(2, s->failures - 1);
    if (backoff > MCP_BACKOFF_MAX_S)
        backoff = MCP_BACKOFF_MAX_S;
    s->retry_at_us = now_us() + (long long)(backoff * 1e6);
    if (s->state == S_READY)
        s->state = S_DOWN; /* a starter sets DOWN itself when its handshake fails */
    fail_pending(s, why);
    free(s->session);
    s->session = NULL;
}

/* ---- stdio transport ----------------------------------------------------------------------- */

static void kill_group(pid_t pid, int sig)
{
    if (pid > 0)
        kill(-pid, sig);
}

/* One line from the server's stdout. Returns 0, or -1 with 'why' set (a protocol error). */
static int dispatch_line(struct server *s, const char *line, size_t len, char *why, size_t wlen)
{
    cJSON *m;
    const cJSON *id, *method;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return 0;
    m = cJSON_ParseWithLength(line, len);
    if (!cJSON_IsObject(m)) {
        snprintf(why, wlen, "MCP server %s sent malformed JSON-RPC: %.80s", s->name, line);
        cJSON_Delete(m);
        return -1;
    }
    id = cJSON_GetObjectItemCaseSensitive(m, "id");
    method = cJSON_GetObjectItemCaseSensitive(m, "method");
    if (cJSON_IsString(method)) {
        if (id && !cJSON_IsNull(id)) { /* a request to us: we offer no client features */
            cJSON *r = cJSON_CreateObject();
            char *txt;

            cJSON_AddStringToObject(r, "jsonrpc", "2.0");
            cJSON_AddItemToObject(r, "id", cJSON_Duplicate(id, 1));
            if (!strcmp(method->valuestring, "ping")) {
                cJSON_AddObjectToObject(r, "result");
            } else {
                cJSON *e = cJSON_AddObjectToObject(r, "error");

                cJSON_AddNumberToObject(e, "code", -32601);
                cJSON_AddStringToObject(e, "message", "method not found");
            }
            txt = cJSON_PrintUnformatted(r);
            cJSON_Delete(r);
            pthread_mutex_lock(&s->wmu);
            if (s->in_fd >= 0) {
                size_t n = strlen(txt);

                if (write(s->in_fd, txt, n) < 0 || write(s->in_fd, "\n", 1) < 0)
                    log_debug("MCP server %s: cannot answer its request", s->name);
            }
            pthread_mutex_unlock(&s->wmu);
            cJSON_free(txt);
        }
        cJSON_Delete(m);
        return 0; /* notifications (logging, progress, list changes) are not used */
    }
    if (!cJSON_IsNumber(id) || (!cJSON_GetObjectItemCaseSensitive(m, "result") &&
                                !cJSON_GetObjectItemCaseSensitive(m, "error"))) {
        snprintf(why, wlen,
                 "MCP server %s sent malformed JSON-RPC (no id with a result or error): "
                 "%.80s",
                 s->name, line);
        cJSON_Delete(m);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    for (struct pending *p = s->pend; p; p = p->next)
        if (p->id == px_clamp_long(id->valuedouble, LONG_MIN, LONG_MAX) && !p->done) {
            p->done = true;
            p->msg = m;
            m = NULL;
            pthread_cond_broadcast(&s->cv);
            break;
        }
    pthread_mutex_unlock(&s->mu);
    cJSON_Delete(m); /* late (timed out) or unknown: dropped */
    return 0;
}

static void log_stderr(struct server *s, struct buf *eb)
{
    char *nl;

    while (eb->len && (nl = memchr(eb->data, '\n', eb->len))) {
        size_t n = (size_t)(nl - eb->data);

        log_debug("MCP server %s: %.*s", s->name, (int)(n > 500 ? 500 : n), eb->data);
        memmove(eb->data, nl + 1, eb->len - n - 1);
        eb->len -= n + 1;
    }
    if (eb->len > 4096)
        eb->len = 0;
}

static void *reader_main(void *arg)
{
    struct server *s = arg;
    struct buf ob, eb;
    char chunk[65536];
    char why[300] = "";
    int status = 0;
    pid_t pid;
    int out_fd, err_fd;

    pthread_mutex_lock(&s->mu);
    pid = s->pid;
    out_fd = s->out_fd;
    err_fd = s->err_fd;
    pthread_mutex_unlock(&s->mu);
    buf_init(&ob, 0);
    buf_init(&eb, 0);
    while (!why[0]) {
        struct pollfd pf[2] = {{.fd = out_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
        ssize_t n;

        if (poll(pf, err_fd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            snprintf(why, sizeof(why), "MCP server %s: poll failed", s->name);
            break;
        }
        if (err_fd >= 0 && (pf[1].revents & (POLLIN | POLLHUP))) {
            n = read(err_fd, chunk, sizeof(chunk));
            if (n > 0) {
                buf_append(&eb, chunk, (size_t)n);
                log_stderr(s, &eb);
            } else {
                err_fd = -1; /* closed by stdio_stop, with the other pipes */
            }
        }
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        n = read(out_fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            why[0] = '\0';
            break; /* end of file: the status below says why */
        }
        buf_append(&ob, chunk, (size_t)n);
        for (;;) {
            char *nl = memchr(ob.data, '\n', ob.len);
            size_t ln;

            if (!nl) {
                if (ob.len > MCP_LINE_MAX)
                    snprintf(why, sizeof(why),
                             "MCP server %s sent a message over %zu bytes (the limit)", s->name,
                             MCP_LINE_MAX);
                break;
            }
            ln = (size_t)(nl - ob.data);
            if (dispatch_line(s, ob.data, ln, why, sizeof(why)) < 0)
                break;
            memmove(ob.data, nl + 1, ob.len - ln - 1);
            ob.len -= ln + 1;
        }
    }
    /* The child is done with (or for) us: make sure its whole group is gone, then reap it. */
    kill_group(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!why[0]) {
        if (WIFEXITED(status))
            snprintf(why, sizeof(why), "MCP server %s exited with status %d", s->name,
                     WEXITSTATUS(status));
        else
            snprintf(why, sizeof(why), "MCP server %s was killed by signal %d", s->name,
                     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    buf_free(&ob);
    buf_free(&eb);
    pthread_mutex_lock(&s->mu);
    s->pid = 0;
    if (s->state == S_READY) {
        log_warn("%s; it will be restarted on its next use", why);
        do_down(s, why);
    } else { /* its starter fails and marks it down */
        snprintf(s->why, sizeof(s->why), "%s", why);
        fail_pending(s, why);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Writes one line to the child's stdin within the deadline. 0 or -1. */
static int write_line(struct server *s, const char *txt, long long deadline_us)
{
    size_t len = strlen(txt), off = 0;
    int rc = 0;

    pthread_mutex_lock(&s->wmu);
    while (off <= len && s->in_fd >= 0) {
        const char *p = off < len ? txt + off : "\n";
        size_t n = off < len ? len - off : 1;
        struct pollfd pf = {.fd = s->in_fd, .events = POLLOUT};
        long long left = (deadline_us - now_us()) / 1000;
        ssize_t w;

        if (left <= 0 || poll(&pf, 1, (int)(left > 60000 ? 60000 : left)) < 0) {
            rc = -1;
            break;
        }
        if (!(pf.revents & POLLOUT)) {
            if (pf.revents & (POLLERR | POLLHUP)) {
                rc = -1;
                break;
            }
            continue;
        }
        w = write(s->in_fd, p, n);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0) {
            rc = -1;
            break;
        }
        off += (size_t)w;
        if (off > len)
            break;
    }
    if (s->in_fd < 0)
        rc = -1;
    pthread_mutex_unlock(&s->wmu);
    return rc;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Spawns the child and its reader (no lock held; the caller is the server's only starter). */
static int stdio_spawn(struct server *s, char *why, size_t wlen)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, def;
    pid_t pid;
    int rc;
    bool debug = log_level >= LOG_DEBUG;

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
        (debug && pipe2(err, O_CLOEXEC) < 0)) {
        snprintf(why, wlen, "MCP server %s: cannot create pipes", s->name);
        close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]);
        return -1;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (debug)
        posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    else
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* none of the proxy's sockets or files */
    posix_spawnattr_init(&at);
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGTERM);
    sigaddset(&def, SIGHUP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    rc = posix_spawnp(&pid, s->argv[0], &fa, &at, s->argv, s->envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    if (rc != 0) {
        char eb[128];

        snprintf(why, wlen, "MCP server %s: cannot start '%s': %s", s->name, s->argv[0],
                 strerror_r(rc, eb, sizeof(eb)));
        close_fd(&in[1]), close_fd(&out[0]), close_fd(&err[0]);
        return -1;
    }
    fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);
    pthread_mutex_lock(&s->wmu);
    s->in_fd = in[1];
    pthread_mutex_unlock(&s->wmu);
    pthread_mutex_lock(&s->mu);
    s->pid = pid;
    s->out_fd = out[0];
    s->err_fd = err[0];
    pthread_mutex_unlock(&s->mu);
    {
        pthread_attr_t ta;

        pthread_attr_init(&ta);
        pthread_attr_setstacksize(&ta, 256 * 1024);
        rc = pthread_create(&s->reader, &ta, reader_main, s);
        pthread_attr_destroy(&ta);
    }
    if (rc != 0) {
        kill_group(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        snprintf(why, wlen, "MCP server %s: cannot start its reader thread", s->name);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    s->reader_started = true;
    pthread_mutex_unlock(&s->mu);
    log_info("MCP server %s started (pid %d)", s->name, (int)pid);
    return 0;
}

/* Stops the child (if any) and joins its reader. No lock held; only the starter or the
 * destroyer calls it. */
static void stdio_stop(struct server *s, bool gentle)
{
    pid_t pid;
    bool joinable;

    pthread_mutex_lock(&s->mu);
    if (s->state == S_READY)
        s->state = S_DOWN; /* stopped on purpose: the reader does not report it */
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&s->wmu);
    close_fd(&s->in_fd); /* a well-behaved server exits on end of input */
    pthread_mutex_unlock(&s->wmu);
    pthread_mutex_lock(&s->mu);
    pid = s->pid;
    joinable = s->reader_started;
    pthread_mutex_unlock(&s->mu);
    if (pid > 0 && gentle) {
        for (int i = 0; i < 50; i++) { /* up to 1 s to leave by itself */
            pthread_mutex_lock(&s->mu);
            pid = s->pid;
            pthread_mutex_unlock(&s->mu);
            if (pid <= 0)
                break;
            if (i == 25)
                kill_group(pid, SIGTERM);
            nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
        }
    }
    if (pid > 0)
        kill_group(pid, SIGKILL); /* the reader reaps it */
    if (joinable)
        pthread_join(s->reader, NULL);
    pthread_mutex_lock(&s->mu);
    s->reader_started = false;
    close_fd(&s->out_fd);
    close_fd(&s->err_fd);
    pthread_mutex_unlock(&s->mu);
}

static char *message_text(long id, const char *method, cJSON *params)
{
    cJSON *m = cJSON_CreateObject();
    char *txt;

    cJSON_AddStringToObject(m, "jsonrpc", "2.0");
    if (id > 0)
        cJSON_AddNumberToObject(m, "id", (double)id);
    cJSON_AddStringToObject(m, "method", method);
    if (params)
        cJSON_AddItemToObject(m, "params", params);
    txt = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    return txt;
}

/* The answer of one request: 0 with *msg (the whole response, owned by the caller), or -1 with
 * *err (heap). 'params' is taken. */
static int stdio_rpc(struct server *s, const char *method, cJSON *params, double timeout,
                     cJSON **msg, char **err)
{
    struct pending p = {0};
    long long deadline = now_us() + (long long)(timeout * 1e6);
    struct timespec ts;
    char *txt;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (s->pid <= 0) {
        pthread_mutex_unlock(&s->mu);
        cJSON_Delete(params);
        *err = xstrdup(s->why[0] ? s->why : "the MCP server is not running");
        return -1;
    }
    p.id = ++s->next_id;
    p.next = s->pend;
    s->pend = &p;
    pthread_mutex_unlock(&s->mu);
    txt = message_text(p.id, method, params);
    /* A write that fails usually means the server exited: its reader thread then fails this
     * call with the exit status, which says more than the broken pipe. Wait up to 1 s for it. */
    bool wfail = write_line(s, txt, deadline) < 0;
    cJSON_free(txt);
    if (wfail && deadline > now_us() + 1000000)
        deadline = now_us() + 1000000;
    clock_gettime(CLOCK_REALTIME, &ts);
    {
        long long add = deadline - now_us();

        if (add < 0)
            add = 0;
        ts.tv_sec += (time_t)(add / 1000000);
        ts.tv_nsec += (long)(add % 1000000) * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    while (!p.done && pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT)
        ;
    for (struct pending **pp = &s->pend; *pp; pp = &(*pp)->next)
        if (*pp == &p) {
            *pp = p.next;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    if (!p.done && wfail) {
        *err = xstrdup("cannot write to the MCP server (it stopped reading)");
        return -1;
    }
    if (!p.done) {
        *err = xmalloc(200);
        snprintf(*err, 200, "MCP server %s did not answer %s within %g s", s->name, method,
                 timeout);
        /* Tell the server to stop working on it (the answer, if any, is dropped). */
        cJSON *cp = cJSON_CreateObject();

        cJSON_AddNumberToObject(cp, "requestId", (double)p.id);
        cJSON_AddStringToObject(cp, "reason", "timeout");
        txt = message_text(0, "notifications/cancelled", cp);
        write_line(s, txt, now_us() + 100000);
        cJSON_free(txt);
        return -1;
    }
    if (p.err) {
        *err = p.err;
        rc = -1;
    } else {
        *msg = p.msg;
    }
    return rc;
}

/* ---- Streamable HTTP transport ------------------------------------------------------------- */

struct http_resp {
    struct buf body;
    bool too_big;
    char ctype[128];
    char session[256];
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct http_resp *r = ud;

    if (r->body.len + sz * n > MCP_LINE_MAX) {
        r->too_big = true;
        return 0;
    }
    buf_append(&r->body, p, sz * n);
    return sz * n;
}

static size_t on_body_discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t olen)
{
    size_t nl = strlen(name);

    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    line += nl + 1;
    len -= nl + 1;
    while (len > 0 && (*line == ' ' || *line == '\t'))
        line++, len--;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
        len--;
    snprintf(out, olen, "%.*s", (int)len, line);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct http_resp *r = ud;

    header_value(p, sz * n, "content-type", r->ctype, sizeof(r->ctype));
    header_value(p, sz * n, "mcp-session-id", r->session, sizeof(r->session));
    return sz * n;
}

/* The response with 'id' among the SSE events of 'body' (or NULL). */
static cJSON *sse_find(const char *body, size_t len, long id)
{
    struct buf data;
    const char *p = body, *end = body + len;
    cJSON *found = NULL;

    buf_init(&data, 0);
    while (p < end && !found) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ln = nl ? (size_t)(nl - p) : (size_t)(end - p);

        if (ln > 0 && p[ln - 1] == '\r')
            ln--;
        if (ln == 0 || !nl) { /* the end of an event */
            if (!nl && ln >= 5 && !strncmp(p, "data:", 5))
                buf_append(&data, p + 5, ln - 5);
            if (data.len) {
                cJSON *m = cJSON_ParseWithLength(data.data, data.len);
                const cJSON *mid = cJSON_GetObjectItemCaseSensitive(m, "id");

                if (cJSON_IsNumber(mid) &&
                    px_clamp_long(mid->valuedouble, LONG_MIN, LONG_MAX) == id)
                    found = m;
                else
                    cJSON_Delete(m);
                data.len = 0;
            }
        } else if (ln >= 5 && !strncmp(p, "data:", 5)) {
            const char *d = p + 5;
            size_t dl = ln - 5;

            if (dl && *d == ' ')
                d++, dl--;
            if (data.len)
                buf_append(&data, "\n", 1);
            buf_append(&data, d, dl);
        }
        p = nl ? nl + 1 : end;
    }
    buf_free(&data);
    return found;
}

static int http_rpc(struct server *s, const char *method, cJSON *params, double timeout,
                    cJSON **msg, char **err)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    struct http_resp r = {0};
    long id = 0, status = 0;
    bool notification = !strncmp(method, "notifications/", 14);
    char line[400];
    char *txt;
    CURLcode cc;
    int rc = -1;

    pthread_mutex_lock(&s->mu);
    if (!notification)
        id = ++s->next_id;
    if (s->session)
        snprintf(line, sizeof(line), "Mcp-Session-Id: %s", s->session);
    else
        line[0] = '\0';
    pthread_mutex_unlock(&s->mu);
    txt = message_text(id, method, params);
    for (const struct curl_slist *c = s->headers; c; c = c->next)
        hdr = curl_slist_append(hdr, c->data);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Accept: application/json, text/event-stream");
    if (strcmp(method, "initialize") != 0)
        hdr = curl_slist_append(hdr, "MCP-Protocol-Version: " MCP_PROTOCOL);
    if (line[0])
        hdr = curl_slist_append(hdr, line);
    buf_init(&r.body, 0);
    curl_easy_setopt(h, CURLOPT_URL, s->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, txt);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdr);
    cJSON_free(txt);
    *err = xmalloc(400);
    if (r.too_big) {
        snprintf(*err, 400, "MCP server %s sent a message over %zu bytes (the limit)", s->name,
                 MCP_LINE_MAX);
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(*err, 400, "MCP server %s did not answer %s within %g s", s->name, method,
                 timeout);
    } else if (cc != CURLE_OK) {
        snprintf(*err, 400, "MCP server %s is unreachable: %s", s->name, curl_easy_strerror(cc));
    } else if (status == 404 && line[0]) {
        snprintf(*err, 400, "MCP server %s ended the session (HTTP 404)", s->name);
        pthread_mutex_lock(&s->mu);
        do_down(s, *err); /* the next use starts a new session */
        s->state = S_DOWN;
        s->retry_at_us = 0;
        pthread_mutex_unlock(&s->mu);
    } else if (status < 200 || status >= 300) {
        snprintf(*err, 400, "MCP server %s answered %s with HTTP %ld", s->name, method, status);
    } else if (notification) {
        rc = 0;
    } else {
        cJSON *m = strncmp(r.ctype, "text/event-stream", 17) == 0
                       ? sse_find(r.body.data ? r.body.data : "", r.body.len, id)
                       : cJSON_ParseWithLength(r.body.data ? r.body.data : "", r.body.len);

        if (!cJSON_IsObject(m) || (!cJSON_GetObjectItemCaseSensitive(m, "result") &&
                                   !cJSON_GetObjectItemCaseSensitive(m, "error"))) {
            snprintf(*err, 400, "MCP server %s sent malformed JSON-RPC: %.80s", s->name,
                     r.body.data ? r.body.data : "");
            cJSON_Delete(m);
        } else {
            *msg = m;
            rc = 0;
        }
    }
    if (rc == 0) {
        free(*err);
        *err = NULL;
        if (r.session[0] && !strcmp(method, "initialize")) {
            pthread_mutex_lock(&s->mu);
            free(s->session);
            s->session = xstrdup(r.session);
            pthread_mutex_unlock(&s->mu);
        }
    }
    buf_free(&r.body);
    return rc;
}

/* ---- one request, whichever transport ------------------------------------------------------ */

/* 0 with *result (owned; the response's "result"), or -1 with *err (heap): the transport's
 * failure or the JSON-RPC error. */
static int rpc(struct server *s, const char *method, cJSON *params, double timeout, cJSON **result,
               char **err)
{
    cJSON *m = NULL;
    const cJSON *e;
    int rc = s->http ? http_rpc(s, method, params, timeout, &m, err)
                     : stdio_rpc(s, method, params, timeout, &m, err);

    if (rc < 0 || !m)
        return rc;
    e = cJSON_GetObjectItemCaseSensitive(m, "error");
    if (e) {
        const cJSON *em = cJSON_GetObjectItemCaseSensitive(e, "message");
        const cJSON *ec = cJSON_GetObjectItemCaseSensitive(e, "code");

        *err = xmalloc(600);
        snprintf(*err, 600, "MCP server %s: error %ld: %.500s", s->name,
                 cJSON_IsNumber(ec) ? px_clamp_long(ec->valuedouble, LONG_MIN, LONG_MAX) : 0L,
                 cJSON_IsString(em) ? em->valuestring : "(no message)");
        cJSON_Delete(m);
        return -1;
    }
    *result = cJSON_DetachItemFromObjectCaseSensitive(m, "result");
    cJSON_Delete(m);
    return 0;
}

static void notify(struct server *s, const char *method)
{
    if (s->http) {
        cJSON *m = NULL;
        char *err = NULL;

        http_rpc(s, method, NULL, 5, &m, &err);
        cJSON_Delete(m);
        free(err);
    } else {
        char *txt = message_text(0, method, NULL);

        write_line(s, txt, now_us() + 1000000);
        cJSON_free(txt);
    }
}

/* Starts the server: spawn (stdio), initialize, initialized, tools/list. No lock held. */
static int start(struct server *s, double timeout, char *why, size_t wlen)
{
    cJSON *params = cJSON_CreateObject(), *ci, *res = NULL, *tools = cJSON_CreateArray();
    char *err = NULL;
    const char *cursor = NULL;
    char *cursor_copy = NULL;

    if (!s->http) {
        stdio_stop(s, false); /* joins the reader of a previous, crashed child */
        if (stdio_spawn(s, why, wlen) < 0)
            goto fail;
    }
    cJSON_AddStringToObject(params, "protocolVersion", MCP_PROTOCOL);
    cJSON_AddObjectToObject(params, "capabilities");
    ci = cJSON_AddObjectToObject(params, "clientInfo");
    cJSON_AddStringToObject(ci, "name", "optillm-c");
    cJSON_AddStringToObject(ci, "version", PX_VERSION);
    if (rpc(s, "initialize", params, timeout, &res, &err) < 0)
        goto fail_err;
    params = NULL;
    cJSON_Delete(res);
    res = NULL;
    notify(s, "notifications/initialized");
    for (int page = 0; page < MCP_LIST_PAGES; page++) {
        cJSON *lp = cJSON_CreateObject();
        const cJSON *t, *nc;

        if (cursor)
            cJSON_AddStringToObject(lp, "cursor", cursor);
        if (rpc(s, "tools/list", lp, timeout, &res, &err) < 0)
            goto fail_err;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(res, "tools"))
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");

            if (cJSON_IsString(name) && name->valuestring[0])
                cJSON_AddItemToArray(tools, cJSON_Duplicate(t, 1));
        }
        nc = cJSON_GetObjectItemCaseSensitive(res, "nextCursor");
        free(cursor_copy);
        cursor_copy = cJSON_IsString(nc) && nc->valuestring[0] ? xstrdup(nc->valuestring) : NULL;
        cursor = cursor_copy;
        cJSON_Delete(res);
        res = NULL;
        if (!cursor)
            break;
    }
    free(cursor_copy);
    pthread_mutex_lock(&s->mu);
    cJSON_Delete(s->tools);
    s->tools = tools;
    pthread_mutex_unlock(&s->mu);
    log_info("MCP server %s ready: %d tools", s->name, cJSON_GetArraySize(tools));
    return 0;
fail_err:
    params = NULL;
    snprintf(why, wlen, "%s", err ? err : "MCP server start failed");
    free(err);
fail:
    free(cursor_copy);
    cJSON_Delete(params);
    cJSON_Delete(res);
    cJSON_Delete(tools);
    if (!s->http)
        stdio_stop(s, false);
    return -1;
}

/* Makes the server READY (starting it when DOWN and its backoff has passed). 0, or -1 with
 * 'why' filled. */
static int ensure_ready(struct server *s, double timeout, char *why, size_t wlen)
{
    int rc;

    pthread_mutex_lock(&s->mu);
    while (s->state == S_STARTING)
        pthread_cond_wait(&s->cv, &s->mu);
    if (s->state == S_READY) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (now_us() < s->retry_at_us) {
        snprintf(why, wlen, "%.250s; restarting it in %.1f s", s->why,
                 (double)(s->retry_at_us - now_us()) / 1e6);
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    s->state = S_STARTING;
    pthread_mutex_unlock(&s->mu);
    rc = start(s, timeout, why, wlen);
    pthread_mutex_lock(&s->mu);
    if (rc == 0) {
        s->state = S_READY;
        s->why[0] = '\0';
    } else {
        s->state = S_DOWN;
        do_down(s, why);
        log_warn("%s", why);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- the client: listing and calling ------------------------------------------------------- */

static struct client *client_of(struct mcp *m)
{
    return m->impl;
}

/* The name the model sees: "tool", or "server__tool" (ns), with every character outside
 * [A-Za-z0-9_-] turned into '_' and cut at 64 bytes, as OpenAI requires of function names. */
static void offered_name(char out[65], const char *server, const char *tool, bool ns)
{
    size_t n = 0;

    for (int part = ns ? 0 : 1; part < 2; part++) {
        const char *p = part == 0 ? server : tool;

        for (; *p && n < 64; p++) {
            char ch = *p;
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';

            out[n++] = ok ? ch : '_';
        }
        for (int u = 0; part == 0 && u < 2 && n < 64; u++)
            out[n++] = '_';
    }
    out[n] = '\0';
}

static const char *tool_name(const cJSON *t)
{
    return cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
}

struct readyjob {
    struct server *s;
    double timeout;
    pthread_t th;
    bool started;
    int rc;
    char why[300];
};

static void *ready_main(void *arg)
{
    struct readyjob *j = arg;

    j->rc = ensure_ready(j->s, j->timeout, j->why, sizeof(j->why));
    return NULL;
}

static int c_list(struct mcp *m, struct arena *a, struct mcp_tool **out, double timeout,
                  struct px_error *err)
{
    struct client *c = client_of(m);
    size_t total = 0, k = 0;
    char first_why[300] = "";
    cJSON **lists = xcalloc(c->nservers, sizeof(*lists));
    struct mcp_tool *t;

    /* Servers not ready yet are started in parallel (node servers take ~0.5 s each). */
    struct readyjob *rj = xcalloc(c->nservers, sizeof(*rj));
    pthread_attr_t ta;

    pthread_attr_init(&ta);
    pthread_attr_setstacksize(&ta, 256 * 1024);
    for (size_t i = 0; i < c->nservers; i++) {
        rj[i] = (struct readyjob){.s = &c->servers[i], .timeout = timeout};
        pthread_mutex_lock(&c->servers[i].mu);
        bool ready = c->servers[i].state == S_READY;
        pthread_mutex_unlock(&c->servers[i].mu);
        if (!ready && i + 1 < c->nservers)
            rj[i].started = pthread_create(&rj[i].th, &ta, ready_main, &rj[i]) == 0;
        if (!rj[i].started)
            ready_main(&rj[i]);
    }
    pthread_attr_destroy(&ta);
    for (size_t i = 0; i < c->nservers; i++) {
        if (rj[i].started)
            pthread_join(rj[i].th, NULL);
        if (rj[i].rc < 0) {
            if (!first_why[0])
                snprintf(first_why, sizeof(first_why), "%s", rj[i].why);
            continue;
        }
        pthread_mutex_lock(&c->servers[i].mu);
        lists[i] = cJSON_Duplicate(c->servers[i].tools, 1);
        pthread_mutex_unlock(&c->servers[i].mu);
        total += (size_t)cJSON_GetArraySize(lists[i]);
    }
    t = arena_calloc(a, total ? total : 1, sizeof(*t));
    for (size_t i = 0; i < c->nservers; i++) {
        const cJSON *it;

        cJSON_ArrayForEach(it, lists[i])
        {
            const char *name = cJSON_GetObjectItemCaseSensitive(it, "name")->valuestring;
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(it, "description");
            const cJSON *sc = cJSON_GetObjectItemCaseSensitive(it, "inputSchema");
            bool clash = false;
            char mine[65], other[65];
            char *j;

            offered_name(mine, NULL, name, false);
            for (size_t o = 0; o < c->nservers && !clash; o++) {
                const cJSON *ot;

                if (o == i)
                    continue;
                cJSON_ArrayForEach(ot, lists[o])
                {
                    offered_name(other, NULL, tool_name(ot), false);
                    clash = clash || !strcmp(other, mine);
                }
            }
            if (clash)
                offered_name(mine, c->servers[i].name, name, true);
            t[k].name = arena_strdup(a, mine);
            t[k].description = cJSON_IsString(d) ? arena_strdup(a, d->valuestring) : "";
            j = cJSON_IsObject(sc) ? cJSON_PrintUnformatted(sc) : NULL;
            t[k].schema = arena_strdup(a, j ? j : "{\"type\":\"object\"}");
            cJSON_free(j);
            k++;
        }
    }
    for (size_t i = 0; i < c->nservers; i++)
        cJSON_Delete(lists[i]);
    free(lists);
    free(rj);
    *out = t;
    if (k == 0 && first_why[0])
        return px_fail(err, PX_EUPSTREAM, NULL, "no MCP tools are available: %s", first_why);
    return (int)k;
}

/* The server and tool (its real name, heap) behind an offered name: "server__tool" first,
 * then a plain name. */
static struct server *resolve(struct client *c, const char *offered, char **tool)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < c->nservers; i++) {
            struct server *s = &c->servers[i];
            const cJSON *it;
            char *hit = NULL;

            pthread_mutex_lock(&s->mu);
            cJSON_ArrayForEach(it, s->tools)
            {
                char name[65];

                offered_name(name, s->name, tool_name(it), pass == 0);
                if (!hit && !strcmp(name, offered))
                    hit = xstrdup(tool_name(it));
            }
            pthread_mutex_unlock(&s->mu);
            if (hit) {
                *tool = hit;
                return s;
            }
        }
    return NULL;
}

struct job {
    struct client *c;
    const char *name;
    const char *args;
    double timeout;
    char *result; /* heap: the result JSON text */
    char *err;    /* heap */
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    char *tool = NULL;
    struct server *s = resolve(j->c, j->name, &tool);
    cJSON *params, *res = NULL, *args;
    char why[300];

    if (!s) {
        j->err = xmalloc(300);
        snprintf(j->err, 300, "unknown tool '%.200s' (not offered by any MCP server)", j->name);
        return NULL;
    }
    if (ensure_ready(s, j->timeout, why, sizeof(why)) < 0) {
        j->err = xstrdup(why);
        free(tool);
        return NULL;
    }
    args = j->args && *j->args ? cJSON_Parse(j->args) : cJSON_CreateObject();
    if (!cJSON_IsObject(args)) {
        cJSON_Delete(args);
        j->err = xstrdup("the tool call's arguments are not a JSON object");
        free(tool);
        return NULL;
    }
    params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "name", tool);
    free(tool);
    cJSON_AddItemToObject(params, "arguments", args);
    if (rpc(s, "tools/call", params, j->timeout, &res, &j->err) == 0) {
        j->result = cJSON_PrintUnformatted(res);
        cJSON_Delete(res);
        pthread_mutex_lock(&s->mu);
        s->failures = 0;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static void c_call(struct mcp *m, struct arena *a, struct mcp_call *calls, size_t n, double timeout)
{
    struct client *c = client_of(m);
    struct job *jobs = xcalloc(n ? n : 1, sizeof(*jobs));
    pthread_t *th = xcalloc(n ? n : 1, sizeof(*th));
    bool *started = xcalloc(n ? n : 1, sizeof(*started));
    pthread_attr_t ta;

    pthread_attr_init(&ta);
    pthread_attr_setstacksize(&ta, 256 * 1024);
    for (size_t i = 0; i < n; i++) {
        jobs[i] = (struct job){.c = c,
                               .name = calls[i].name ? calls[i].name : "",
                               .args = calls[i].arguments,
                               .timeout = timeout};
        if (i >= MCP_MAX_PARALLEL)
            jobs[i].err = xstrdup("too many tool calls in one step; at most 16 run");
        else
            started[i] = pthread_create(&th[i], &ta, job_main, &jobs[i]) == 0;
        if (i < MCP_MAX_PARALLEL && !started[i])
            job_main(&jobs[i]); /* no thread: run it here */
    }
    pthread_attr_destroy(&ta);
    for (size_t i = 0; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        if (jobs[i].result) {
            calls[i].result = mcp_result_text(a, jobs[i].result, &calls[i].is_error);
            cJSON_free(jobs[i].result);
        } else {
            calls[i].result = arena_strdup(a, jobs[i].err ? jobs[i].err : "the tool call failed");
            calls[i].is_error = true;
        }
        free(jobs[i].err);
    }
    free(jobs);
    free(th);
    free(started);
}

static const struct mcp_ops client_ops = {.list_tools = c_list, .call_tools = c_call};

/* ---- configuration ------------------------------------------------------------------------- */

static char *env_entry(const char *k, const char *v)
{
    size_t n = strlen(k) + strlen(v) + 2;
    char *e = xmalloc(n);

    snprintf(e, n, "%s=%s", k, v);
    return e;
}

static int load_server(struct server *s, const char *name, const cJSON *o, struct px_error *err)
{
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "url");
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(o, "command");
    const cJSON *v;
    size_t n = 0;

    s->name = xstrdup(name);
    s->in_fd = s->out_fd = s->err_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (cJSON_IsString(url)) {
        s->http = true;
        s->url = xstrdup(url->valuestring);
        if (strncmp(s->url, "http://", 7) && strncmp(s->url, "https://", 8))
            return px_fail(err, PX_EINVAL, NULL, "MCP server %s: url must be http(s)://", name);
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(o, "headers"))
        {
            char *h;

            if (!cJSON_IsString(v) || !v->string || strpbrk(v->valuestring, "\r\n"))
                return px_fail(err, PX_EINVAL, NULL,
                               "MCP server %s: headers must map names to strings", name);
            h = env_entry(v->string, v->valuestring);
            h[strlen(v->string)] = ':';
            s->headers = curl_slist_append(s->headers, h);
            free(h);
        }
        return 0;
    }
    if (!cJSON_IsString(cmd) || !cmd->valuestring[0])
        return px_fail(err, PX_EINVAL, NULL, "MCP server %s needs a \"command\" or a \"url\"",
                       name);
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "args");
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(o, "env");
    s->argv = xcalloc((size_t)cJSON_GetArraySize(args) + 2, sizeof(char *));
    s->argv[n++] = xstrdup(cmd->valuestring);
    cJSON_ArrayForEach(v, args)
    {
        if (!cJSON_IsString(v))
            return px_fail(err, PX_EINVAL, NULL, "MCP server %s: args must be strings", name);
        s->argv[n++] = xstrdup(v->valuestring);
    }
    /* The minimal environment: PATH and HOME of the proxy (read once, at start-up), then the
     * config's env. Never anything else of ours (OPENAI_API_KEY, OPTILLM_API_KEY, ...). */
    s->envp = xcalloc((size_t)cJSON_GetArraySize(env) + 3, sizeof(char *));
    n = 0;
    s->envp[n++] =
        env_entry("PATH", getenv("PATH") ? getenv("PATH") : "/usr/local/bin:/usr/bin:/bin");
    if (getenv("HOME"))
        s->envp[n++] = env_entry("HOME", getenv("HOME"));
    cJSON_ArrayForEach(v, env)
    {
        if (!cJSON_IsString(v) || !v->string || !v->string[0] || strchr(v->string, '='))
            return px_fail(err, PX_EINVAL, NULL, "MCP server %s: env must map names to strings",
                           name);
        s->envp[n++] = env_entry(v->string, v->valuestring);
    }
    return 0;
}

/* Ends an HTTP server's session (DELETE with its Mcp-Session-Id), as the spec asks of a client
 * that no longer needs it. Best effort, 2 s at most. */
static void http_end_session(struct server *s)
{
    CURL *h;
    struct curl_slist *hdr = NULL;
    char line[400];

    if (!s->session)
        return;
    h = curl_easy_init();
    for (const struct curl_slist *c = s->headers; c; c = c->next)
        hdr = curl_slist_append(hdr, c->data);
    snprintf(line, sizeof(line), "Mcp-Session-Id: %s", s->session);
    hdr = curl_slist_append(hdr, line);
    hdr = curl_slist_append(hdr, "MCP-Protocol-Version: " MCP_PROTOCOL);
    curl_easy_setopt(h, CURLOPT_URL, s->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body_discard);
    curl_easy_perform(h);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdr);
}

static void server_free(struct server *s)
{
    if (!s->http && s->argv)
        stdio_stop(s, true);
    if (s->http)
        http_end_session(s);
    free(s->name);
    for (size_t i = 0; s->argv && s->argv[i]; i++)
        free(s->argv[i]);
    free(s->argv);
    for (size_t i = 0; s->envp && s->envp[i]; i++)
        free(s->envp[i]);
    free(s->envp);
    free(s->url);
    free(s->session);
    curl_slist_free_all(s->headers);
    cJSON_Delete(s->tools);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->cv);
}

struct mcp *mcp_create(const char *path, struct px_error *err)
{
    FILE *f = fopen(path, "rb");
    struct buf b;
    char chunk[4096];
    size_t n;
    cJSON *root, *servers;
    const cJSON *it;
    struct client *c;
    int bad = 0;

    if (!f) {
        px_fail(err, PX_EINVAL, NULL, "--mcp-config %s: cannot open the file", path);
        return NULL;
    }
    buf_init(&b, 0);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len <= MCP_CONFIG_MAX)
        buf_append(&b, chunk, n);
    fclose(f);
    root = b.len <= MCP_CONFIG_MAX ? cJSON_ParseWithLength(b.data ? b.data : "", b.len) : NULL;
    buf_free(&b);
    servers = cJSON_GetObjectItemCaseSensitive(root, "mcpServers");
    if (!cJSON_IsObject(servers) || cJSON_GetArraySize(servers) == 0 ||
        cJSON_GetArraySize(servers) > MCP_MAX_SERVERS) {
        px_fail(err, PX_EINVAL, NULL,
                "--mcp-config %s: expected {\"mcpServers\": {\"name\": {\"command\", \"args\", "
                "\"env\"} or {\"url\", \"headers\"}}} with 1 to %d servers",
                path, MCP_MAX_SERVERS);
        cJSON_Delete(root);
        return NULL;
    }
    c = xcalloc(1, sizeof(*c));
    c->mcp.ops = &client_ops;
    c->mcp.impl = c;
    c->servers = xcalloc((size_t)cJSON_GetArraySize(servers), sizeof(*c->servers));
    cJSON_ArrayForEach(it, servers)
    {
        if (!cJSON_IsObject(it) || !it->string || !it->string[0] || strlen(it->string) > 64 ||
            strstr(it->string, "__")) {
            bad = px_fail(err, PX_EINVAL, NULL,
                          "--mcp-config %s: each server is an object named by 1 to 64 "
                          "characters without \"__\"",
                          path);
            break;
        }
        bad = load_server(&c->servers[c->nservers++], it->string, it, err);
        if (bad < 0)
            break;
    }
    cJSON_Delete(root);
    if (bad < 0) { /* a bad entry: nothing was started */
        mcp_destroy(&c->mcp);
        return NULL;
    }
    return &c->mcp;
}

void mcp_destroy(struct mcp *m)
{
    struct client *c;

    if (!m)
        return;
    c = client_of(m);
    for (size_t i = 0; i < c->nservers; i++)
        server_free(&c->servers[i]);
    free(c->servers);
    free(c);
}
