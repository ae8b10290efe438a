/* harness.c: process and HTTP helpers for the integration tests. */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64
static pid_t started[MAX_PROCS];
static int nstarted;

/* PX_BUILD, else the build directory this test binary sits in (BUILD/tests/itest_x), so a
 * binary run by hand from any directory finds its proxy, mock and logs; else "build". */
const char *harness_build_dir(void)
{
    static char dir[512];
    const char *b = getenv("PX_BUILD");

    if (b && *b)
        return b;
    if (!dir[0]) {
        ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
        char *slash;

        dir[n > 0 ? n : 0] = '\0';
        for (int up = 0; up < 2 && (slash = strrchr(dir, '/')); up++)
            *slash = '\0'; /* drop "/itest_x", then "/tests" */
        if (n <= 0 || !dir[0])
            snprintf(dir, sizeof(dir), "build");
    }
    return dir;
}

static const char *build_dir(void)
{
    return harness_build_dir();
}

static void track(pid_t pid)
{
    if (nstarted < MAX_PROCS)
        started[nstarted++] = pid;
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < nstarted; i++)
        if (started[i] == pid)
            started[i] = started[--nstarted];
}

static void kill_all(void)
{
    for (int i = 0; i < nstarted; i++) {
        kill(started[i], SIGKILL);
        waitpid(started[i], NULL, 0);
    }
    nstarted = 0;
}

static void on_alarm(int sig)
{
    static const char msg[] = "harness: test deadline exceeded; killing started processes\n";

    (void)sig;
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing else to do */
    }
    for (int i = 0; i < nstarted; i++)
        kill(started[i], SIGKILL);
    _exit(3);
}

void harness_deadline(unsigned secs)
{
    char logs[600], top[600];
    char *slash;

    /* Run by hand from elsewhere: work from the source tree (the parent of the build
     * directory, when it holds the Makefile) so that relative paths such as datasets/ hold. */
    snprintf(top, sizeof(top), "%s", build_dir());
    if (!getenv("PX_BUILD") && (slash = strrchr(top, '/'))) {
        char mk[620];

        *slash = '\0';
        snprintf(mk, sizeof(mk), "%s/Makefile", top);
        if (top[0] && access(mk, R_OK) == 0 && chdir(top) != 0)
            perror(top);
    }
    /* Proxy logs and scratch files go to BUILD/logs: create it (scripts/run_tests.sh does too,
     * but a binary may run alone from a clean build directory). */
    snprintf(logs, sizeof(logs), "%s/logs", build_dir());
    mkdir(logs, 0755);
    signal(SIGALRM, on_alarm);
    alarm(secs);
    atexit(kill_all);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

int mock_start(struct proc *p, const char *const *args)
{
    int pipefd[2];
    char path[512];
    const char *argv[32];
    int n = 0;

    memset(p, 0, sizeof(*p));
    snprintf(path, sizeof(path), "%s/mock_upstream", build_dir());
    argv[n++] = path;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (int i = 0; args && args[i] && n < 30; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    if (pipe(pipefd) != 0)
        return -1;
    p->pid = fork();
    if (p->pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    track(p->pid);
    FILE *f = fdopen(pipefd[0], "r");
    char line[128];
    if (f && fgets(line, sizeof(line), f) && sscanf(line, "PORT %d", &p->port) == 1) {
        /* Keep reading nothing more; closing our end is fine (the mock prints only this). */
        fclose(f);
        return 0;
    }
    if (f)
        fclose(f);
    return -1;
}

double harness_slack(void)
{
    const char *w = getenv("PX_WRAPPER");

    return w && *w ? 1.5 : 0;
}

int proxy_start(struct proc *p, int mock_port, const char *const *args, const char *const *env)
{
    char path[512], base[128], wrapper[512];
    const char *argv[80];
    char *envp[64];
    int n = 0, ne = 0;
    static int seq;
    const char *w = getenv("PX_WRAPPER");

    memset(p, 0, sizeof(*p));
    snprintf(path, sizeof(path), "%s/optillm", build_dir());
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1", mock_port);
    snprintf(p->log, sizeof(p->log), "%s/logs/proxy-%d-%d.log", build_dir(), (int)getpid(), seq++);
    if (w && *w) {
        /* "valgrind --error-exitcode=9 ..." split on spaces. */
        char *save = NULL;

        snprintf(wrapper, sizeof(wrapper), "%s", w);
        for (char *tok = strtok_r(wrapper, " ", &save); tok && n < 16;
             tok = strtok_r(NULL, " ", &save))
            argv[n++] = tok;
    }
    argv[n++] = path;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--base-url";
    argv[n++] = base;
    for (int i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    envp[ne++] = "PATH=/usr/bin:/bin";
    for (int i = 0; env && env[i] && ne < 62; i++)
        envp[ne++] = (char *)env[i];
    envp[ne] = NULL;
    {
        char dir[512];

        snprintf(dir, sizeof(dir), "%s/logs", build_dir());
        mkdir(dir, 0755);
    }
    p->pid = fork();
    if (p->pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execve(argv[0][0] == '/' ? argv[0] : (w && *w ? "/usr/bin/valgrind" : path),
               (char *const *)argv, envp);
        _exit(127);
    }
    track(p->pid);
    for (int i = 0; i < 3000; i++) {
        FILE *f = fopen(p->log, "r");
        char line[1024];

        if (f) {
            while (fgets(line, sizeof(line), f)) {
                const char *at = strstr(line, "listening on http://");

                if (at) {
                    const char *colon = strchr(at + 20, ':'); /* host:PORT/v1 */

                    if (colon && sscanf(colon + 1, "%d", &p->port) == 1) {
                        fclose(f);
                        return 0;
                    }
                }
            }
            fclose(f);
        }
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            untrack(p->pid);
            p->pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    return -1;
}

int proc_wait(struct proc *p, double secs)
{
    int status = -1;

    if (p->pid <= 0)
        return -1;
    for (int i = 0; i < (int)(secs * 100); i++) {
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            untrack(p->pid);
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        sleep_ms(10);
    }
    return -1;
}

int proc_stop(struct proc *p)
{
    int status = -1;

    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);

        if (r == p->pid) {
            untrack(p->pid);
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        sleep_ms(10);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &status, 0);
    untrack(p->pid);
    p->pid = 0;
    return -1;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

struct sink {
    struct http_resp *r;
    struct timespec t0;
    size_t cap;
};

static double since(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static size_t on_body(char *d, size_t s, size_t n, void *u)
{
    struct sink *k = u;
    struct http_resp *r = k->r;
    size_t len = s * n;

    if (r->chunks == 0)
        r->first_s = since(&k->t0);
    if (r->chunks < (int)(sizeof(r->chunk_t) / sizeof(r->chunk_t[0])))
        r->chunk_t[r->chunks] = since(&k->t0);
    r->chunks++;
    if (r->len + len + 1 > k->cap) {
        k->cap = (r->len + len + 1) * 2;
        r->body = realloc(r->body, k->cap);
    }
    memcpy(r->body + r->len, d, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static size_t on_header(char *d, size_t s, size_t n, void *u)
{
    char **h = u;
    size_t len = s * n, old = *h ? strlen(*h) : 0;

    *h = realloc(*h, old + len + 1);
    memcpy(*h + old, d, len);
    (*h)[old + len] = '\0';
    return len;
}

static int do_req(const char *method, int port, const char *path, const char *body,
                  const char *const *headers, struct http_resp *out, double abort_after)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    char url[512];
    struct http_resp tmp;
    struct sink k = {0};
    CURLcode rc;

    if (!out)
        out = &tmp;
    memset(out, 0, sizeof(*out));
    out->body = calloc(1, 1);
    k.r = out;
    k.cap = 1;
    clock_gettime(CLOCK_MONOTONIC, &k.t0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (abort_after > 0)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(abort_after * 1000));
    hl = curl_slist_append(hl, "Expect:");
    if (body) {
        hl = curl_slist_append(hl, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &out->headers);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->total_s = since(&k.t0);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (out == &tmp)
        http_resp_free(&tmp);
    if (abort_after > 0)
        return rc == CURLE_OPERATION_TIMEDOUT ? 0 : -1;
    return rc == CURLE_OK ? 0 : -1;
}

int http_req(const char *method, int port, const char *path, const char *body,
             const char *const *headers, struct http_resp *out)
{
    return do_req(method, port, path, body, headers, out, 0);
}

int http_req_abort(const char *method, int port, const char *path, const char *body,
                   const char *const *headers, double abort_after_s)
{
    return do_req(method, port, path, body, headers, NULL, abort_after_s);
}

void http_resp_free(struct http_resp *r)
{
    free(r->body);
    free(r->headers);
    r->body = r->headers = NULL;
}

bool http_header(const struct http_resp *r, const char *name, char *buf, size_t len)
{
    const char *h = r->headers;
    size_t nl = strlen(name);

    while (h && *h) {
        const char *eol = strstr(h, "\r\n");
        size_t ll = eol ? (size_t)(eol - h) : strlen(h);

        if (ll > nl && strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            size_t vl = ll - nl - 1;

            while (vl && *v == ' ')
                v++, vl--;
            snprintf(buf, len, "%.*s", (int)vl, v);
            return true;
        }
        if (!eol)
            break;
        h = eol + 2;
    }
    return false;
}

cJSON *http_json(const struct http_resp *r)
{
    return cJSON_ParseWithLength(r->body, r->len);
}

cJSON *mock_get(int port, const char *path)
{
    struct http_resp r;
    cJSON *j = NULL;

    if (http_req("GET", port, path, NULL, NULL, &r) == 0)
        j = http_json(&r);
    http_resp_free(&r);
    return j;
}

void mock_reset(int port)
{
    struct http_resp r;

    http_req("POST", port, "/mock/reset", "{}", NULL, &r);
    http_resp_free(&r);
}

void mock_config(int port, const char *json)
{
    struct http_resp r;

    http_req("POST", port, "/mock/config", json, NULL, &r);
    http_resp_free(&r);
}

long mock_stat(int port, const char *name)
{
    cJSON *j = mock_get(port, "/mock/stats");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    long val = cJSON_IsNumber(v) ? (long)v->valuedouble : -1;

    cJSON_Delete(j);
    return val;
}

cJSON *mock_bodies(int port)
{
    cJSON *reqs = mock_get(port, "/mock/requests");
    cJSON *out, *r;

    if (!reqs)
        return NULL;
    out = cJSON_CreateArray();
    cJSON_ArrayForEach(r, reqs)
    {
        cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "body");

        if (!cJSON_IsObject(b)) {
            cJSON_Delete(out);
            out = NULL;
            break;
        }
        cJSON_AddItemToArray(out, cJSON_Duplicate(b, 1));
    }
    cJSON_Delete(reqs);
    return out;
}

char *chat_body(const char *model, const char *content, const char *extra)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    cJSON *m = cJSON_CreateObject();
    char *s, *res;

    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!extra || !*extra)
        return s;
    size_t len = strlen(s) + strlen(extra) + 4;
    res = malloc(len);
    s[strlen(s) - 1] = '\0'; /* drop the closing brace */
    snprintf(res, len, "%s,%s}", s, extra);
    free(s);
    return res;
}

long chat_as(int port, const char *key, const char *model, const char *content,
             struct http_resp *keep)
{
    char auth[256];
    const char *h[] = {auth, NULL};
    char *body = chat_body(model, content, NULL);
    struct http_resp r;
    long status;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    if (!body || http_req("POST", port, "/v1/chat/completions", body, h, &r) != 0) {
        free(body);
        return -1;
    }
    status = r.status;
    if (keep)
        *keep = r;
    else
        http_resp_free(&r);
    free(body);
    return status;
}

bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long len;
    bool found;

    if (!f)
        return false;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)len + 1);
    len = (long)fread(data, 1, (size_t)len, f);
    data[len] = '\0';
    fclose(f);
    found = memmem(data, (size_t)len, needle, strlen(needle)) != NULL;
    free(data);
    return found;
}

/* ---- redis-server ---------------------------------------------------------------------------- */

int harness_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

void harness_track(pid_t pid)
{
    track(pid);
}

/* True when something on 127.0.0.1:port accepts a connection. */
static bool port_open(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0)
        return false;
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

int redis_start(struct proc *p, int port, const char *const *args)
{
    static const char bin[] = "/usr/bin/redis-server";
    static int seq;
    char portstr[16], dir[PATH_MAX];
    const char *argv[40];
    int n = 0;

    memset(p, 0, sizeof(*p));
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "harness: %s missing (scripts/deps.sh installs redis-server)\n", bin);
        return -1;
    }
    if (port == 0)
        port = harness_free_port();
    if (port <= 0)
        return -1;
    snprintf(portstr, sizeof(portstr), "%d", port);
    snprintf(p->log, sizeof(p->log), "%s/logs", build_dir());
    mkdir(p->log, 0755);
    /* Absolute: redis-server changes into --dir before it opens --logfile. */
    if (!realpath(p->log, dir))
        return -1;
    snprintf(p->log, sizeof(p->log), "%.256s/redis-%d-%d.log", dir, (int)getpid(), seq++);
    argv[n++] = bin;
    argv[n++] = "--port";
    argv[n++] = portstr;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = dir;
    argv[n++] = "--logfile";
    argv[n++] = p->log;
    for (int i = 0; args && args[i] && n < 38; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    p->pid = fork();
    if (p->pid == 0) {
        int fd = open("/dev/null", O_RDWR);

        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            close(fd);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    if (p->pid < 0)
        return -1;
    track(p->pid);
    p->port = port;
    for (int i = 0; i < 500; i++) {
        if (port_open(port))
            return 0;
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            untrack(p->pid);
            p->pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    return -1;
}

double harness_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
