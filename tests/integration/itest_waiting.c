/* itest_waiting.c: hundreds of concurrent approach requests: waiting ones hold coroutines, not
 * threads; a small --workers queues the rest in order; a full queue answers 503 at once; the
 * scheduler's metrics (running, waiting, queued, slices, stack depth) are exposed. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
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

#include "harness.h"

static struct proc mock;
static pid_t nghttpd_pid; /* killed by teardown if a test failed before stopping it */

static int setup(void **state)
{
    (void)state;
    harness_deadline(300);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    if (nghttpd_pid > 0) {
        kill(nghttpd_pid, SIGTERM);
        waitpid(nghttpd_pid, NULL, 0);
    }
    proc_stop(&mock);
    curl_global_cleanup();
    return 0;
}

/* ---- a wave of concurrent requests (one curl multi, one thread) ---------------------------- */

struct one {
    long status;
    bool retry_after;
    bool overloaded;
    char body[256];
    size_t len;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct one *o = ud;
    size_t k = sz * n;
    size_t room = sizeof(o->body) - 1 - o->len;

    memcpy(o->body + o->len, p, k < room ? k : room);
    o->len += k < room ? k : room;
    o->body[o->len] = 0;
    return k;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct one *o = ud;

    if (sz * n >= 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        o->retry_after = true;
    return sz * n;
}

struct wave {
    int port;
    int n;
    const char *model;
    struct one *res;
    double seconds;
};

static void *wave_main(void *arg)
{
    struct wave *w = arg;
    CURLM *m = curl_multi_init();
    CURL **e = calloc((size_t)w->n, sizeof(*e));
    char url[128];
    char *body = chat_body(w->model, "What is 6 times 7?", NULL);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    int still = 0;
    double t0 = harness_now_s();

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", w->port);
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    for (int i = 0; i < w->n; i++) {
        e[i] = curl_easy_init();
        curl_easy_setopt(e[i], CURLOPT_URL, url);
        curl_easy_setopt(e[i], CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e[i], CURLOPT_WRITEDATA, &w->res[i]);
        curl_easy_setopt(e[i], CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e[i], CURLOPT_HEADERDATA, &w->res[i]);
        curl_easy_setopt(e[i], CURLOPT_TIMEOUT, 120L);
        curl_easy_setopt(e[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e[i], CURLOPT_FORBID_REUSE, 1L);
        curl_multi_add_handle(m, e[i]);
    }
    do {
        curl_multi_perform(m, &still);
        if (still)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    } while (still);
    for (int i = 0; i < w->n; i++) {
        curl_easy_getinfo(e[i], CURLINFO_RESPONSE_CODE, &w->res[i].status);
        w->res[i].overloaded = strstr(w->res[i].body, "\"overloaded\"") != NULL;
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
    }
    w->seconds = harness_now_s() - t0;
    curl_multi_cleanup(m);
    curl_slist_free_all(h);
    free(body);
    free(e);
    return NULL;
}

/* The /metrics text (malloc'd), or NULL. */
static char *metrics_get(int port)
{
    struct http_resp r;
    char *body;

    if (http_req("GET", port, "/metrics", NULL, NULL, &r) != 0)
        return NULL;
    body = strdup(r.body ? r.body : "");
    http_resp_free(&r);
    return body;
}

/* A metric's value in a /metrics text (the first line starting with 'name '), or -1. */
static double metric_in(const char *text, const char *name)
{
    size_t nl = strlen(name);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ')
            return strtod(p + nl + 1, NULL);
    return -1;
}

static double metric(int port, const char *name)
{
    char *text = metrics_get(port);
    double v = text ? metric_in(text, name) : -1;

    free(text);
    return v;
}

static int proc_threads(pid_t pid)
{
    char path[64], line[256];
    int n = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* Open fds of a process, or -1. */
static int proc_fds(pid_t pid)
{
    char path[64];
    int n = 0;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    if (!(d = opendir(path)))
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

/* 300 bon requests (4 upstream calls in 2 rounds each) wait at once on a 3 s upstream: they
 * are parked coroutines, the proxy keeps its handful of threads, and every answer is 200; the
 * burst's extra connections are closed a few seconds after it. */
static void test_many_waiting_few_threads(void **state)
{
    enum { N = 300 };
    struct proc px;
    struct wave w = {.n = N, .model = "bon-gpt-x@latency=3000"};
    const char *args[] = {"--upstream-key", "sk-scale", NULL};
    pthread_t t;
    double waiting = 0, peak_threads = 0;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    w.port = px.port;
    w.res = calloc(N, sizeof(*w.res));
    pthread_create(&t, NULL, wave_main, &w);
    for (int i = 0; i < 100 && waiting < N; i++) { /* up to 5 s */
        double v = metric(px.port, "optillm_approach_requests{state=\"waiting\"}");
        int th = proc_threads(px.pid);

        if (v > waiting)
            waiting = v;
        if (th > peak_threads)
            peak_threads = th;
        sleep_ms(50);
    }
    pthread_join(t, NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal(w.res[i].status, 200);
    print_message("%d bon requests: %.2f s (ideal 6 s), up to %.0f waiting at once, %.0f proxy "
                  "threads\n",
                  N, w.seconds, waiting, peak_threads);
    assert_true(waiting >= N * 0.9); /* all were parked at once, none queued */
    /* an I/O loop (which also serves HTTP) and a scheduler per core, main and the deadline
     * reaper (+ a sanitizer's own, an offload helper) */
    assert_true(peak_threads <= 4 + 2 * sysconf(_SC_NPROCESSORS_ONLN));
    assert_true(w.seconds < 6 + 30); /* generous under load and sanitizers */
    assert_true(metric(px.port, "optillm_coroutine_slow_slices_total") >= 0);
    assert_true(metric(px.port, "optillm_coroutine_stack_peak_bytes") > 0);
    assert_true(metric(px.port, "optillm_coroutine_stack_peak_bytes") <
                metric(px.port, "optillm_coroutine_stack_bytes") / 2);
    assert_int_equal((int)metric(px.port, "optillm_coroutines"), 0);
    /* Round 2's 900 calls (450 a loop) spilled past a loop's first curl multi handle (256): a
     * spill handle is closed 5 s after its last transfer, and its idle connections with it. */
    int fds0 = proc_fds(px.pid), fds = fds0;
    for (int i = 0; i < 240 && fds > fds0 - 100; i++) { /* up to 12 s */
        sleep_ms(50);
        fds = proc_fds(px.pid);
    }
    print_message("proxy fds after the wave: %d, then %d\n", fds0, fds);
    assert_true(fds0 > 300);
    assert_true(fds <= fds0 - 100);
    free(w.res);
    assert_int_equal(proc_stop(&px), 0);
}

/* --workers 20 --queue 400: 200 requests, 20 run at a time, the rest queue (and are seen as
 * queued), and all of them are answered. */
static void test_small_workers_queue(void **state)
{
    enum { N = 200 };
    struct proc px;
    struct wave w = {.n = N, .model = "re2-gpt-x@latency=300"};
    const char *args[] = {"--upstream-key", "sk-scale", "--workers", "20", "--queue", "400", NULL};
    pthread_t t;
    double queued = 0, running_max = 0;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    w.port = px.port;
    w.res = calloc(N, sizeof(*w.res));
    mock_reset(mock.port);
    pthread_create(&t, NULL, wave_main, &w);
    for (int i = 0; i < 100; i++) {
        char *text = metrics_get(px.port); /* one snapshot: running + waiting together */
        double q = metric_in(text, "optillm_approach_requests{state=\"queued\"}");
        double r = metric_in(text, "optillm_approach_requests{state=\"running\"}") +
                   metric_in(text, "optillm_approach_requests{state=\"waiting\"}");

        free(text);

        if (q > queued)
            queued = q;
        if (r > running_max)
            running_max = r;
        if (q == 0 && i > 10)
            break;
        sleep_ms(50);
    }
    pthread_join(t, NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal(w.res[i].status, 200);
    print_message("%d re2 requests through 20 workers: %.2f s (ideal 3 s), queue up to %.0f\n", N,
                  w.seconds, queued);
    assert_true(queued >= 50);
    assert_true(running_max <= 20);
    print_message("mock peak %.0f\n", (double)mock_stat(mock.port, "peak_concurrency"));
    assert_true(mock_stat(mock.port, "peak_concurrency") <= 20);
    assert_true(w.seconds >= 2.5); /* 10 batches of 0.3 s: really queued */
    free(w.res);
    assert_int_equal(proc_stop(&px), 0);
}

/* --workers 10 --queue 40: of 300 at once, at most 50 are taken; the rest get 503 with
 * Retry-After and code "overloaded" at once. */
static void test_queue_full_503(void **state)
{
    enum { N = 300 };
    struct proc px;
    struct wave w = {.n = N, .model = "re2-gpt-x@latency=2000"};
    const char *args[] = {"--upstream-key", "sk-scale", "--workers", "10", "--queue", "40", NULL};
    int ok = 0, busy = 0;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    w.port = px.port;
    w.res = calloc(N, sizeof(*w.res));
    wave_main(&w);
    for (int i = 0; i < N; i++) {
        if (w.res[i].status == 200) {
            ok++;
        } else {
            assert_int_equal(w.res[i].status, 503);
            assert_true(w.res[i].retry_after);
            assert_true(w.res[i].overloaded);
            busy++;
        }
    }
    print_message("%d at once against 10 workers + 40 queued: %d answered, %d refused\n", N, ok,
                  busy);
    /* 50 fit; a request arriving after the first 2 s batch ended may fit too. */
    assert_true(ok >= 50);
    assert_true(busy >= N - 100);
    free(w.res);
    assert_int_equal(proc_stop(&px), 0);
}

/* ---- HTTP/2 upstream without TLS (--upstream-h2c) ------------------------------------------ */

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static const char h2_reply[] =
    "{\"id\":\"chatcmpl-h2\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"h2c ok\"},"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
    "\"total_tokens\":3}}";

static bool have_nghttpd(void)
{
    if (access("/usr/sbin/nghttpd", X_OK) == 0 || access("/usr/bin/nghttpd", X_OK) == 0)
        return true;
    print_message("nghttpd not installed (apt-get install nghttp2-server): skipped\n");
    return false;
}

/* Starts nghttpd on 127.0.0.1:port serving dir, whose v1/chat/completions is h2_reply; its
 * verbose log goes to dir/nghttpd.log. TLS with key and crt, else clear text (h2c). */
static pid_t start_nghttpd(const char *dir, int port, const char *key, const char *crt)
{
    char path[300], portstr[16];
    FILE *f;
    pid_t pid;

    snprintf(path, sizeof(path), "%s/v1", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/v1/chat", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/v1/chat/completions", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(h2_reply, f);
    fclose(f);
    snprintf(portstr, sizeof(portstr), "%d", port);
    snprintf(path, sizeof(path), "%s/nghttpd.log", dir);
    pid = fork();
    if (pid == 0) {
        FILE *lf = freopen(path, "w", stdout);
        FILE *ef = freopen("/dev/null", "w", stderr);

        (void)lf;
        (void)ef;
        if (key)
            execlp("nghttpd", "nghttpd", "-v", "-a", "127.0.0.1", "-d", dir, portstr, key, crt,
                   (char *)NULL);
        else
            execlp("nghttpd", "nghttpd", "--no-tls", "-v", "-a", "127.0.0.1", "-d", dir, portstr,
                   (char *)NULL);
        _exit(127);
    }
    nghttpd_pid = pid;
    sleep_ms(300);
    return pid;
}

/* Stops nghttpd and reads its log: the sessions (connections, "[id=N]") and the requests
 * (HEADERS frames received) it saw. Removes dir. */
static void stop_nghttpd(pid_t pid, const char *dir, int *sessions, int *requests)
{
    char path[300], line[512];
    FILE *f;

    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    nghttpd_pid = 0;
    *sessions = *requests = 0;
    snprintf(path, sizeof(path), "%s/nghttpd.log", dir);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "[id=");

        if (p && atoi(p + 4) > *sessions)
            *sessions = atoi(p + 4);
        if (strstr(line, "recv HEADERS frame"))
            (*requests)++;
    }
    fclose(f);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

/* nghttpd (Debian nghttp2-server) speaks only HTTP/2 in clear text and answers a POST with the
 * file at its path: with --upstream-h2c passthrough and approach calls reach it, multiplexed
 * on one connection per I/O loop; without the flag (HTTP/1.1) they fail with 502. With
 * libcurl < 8.0.0 (reused prior-knowledge connections fail) the proxy refuses the flag. */
static void test_upstream_h2c(void **state)
{
    char dir[] = "/tmp/itest-h2c-XXXXXX", base[64];
    struct proc px, px11;
    struct http_resp r;
    int port = free_port(), sessions, requests;
    pid_t pid;

    (void)state;
    if (!have_nghttpd())
        skip();
    if (curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
        const char *args[] = {"--upstream-key", "sk-h2", "--upstream-h2c", NULL};

        /* The proxy links the same libcurl as this test. */
        assert_int_not_equal(proxy_start(&px, mock.port, args, NULL), 0);
        assert_true(file_contains(px.log, "--upstream-h2c needs libcurl >= 8.0.0"));
        print_message("libcurl %s: --upstream-h2c refused as it should be; h2c not tested\n",
                      curl_version_info(CURLVERSION_NOW)->version);
        return;
    }
    assert_non_null(mkdtemp(dir));
    pid = start_nghttpd(dir, port, NULL, NULL);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1", port);
    {
        const char *args[] = {"--upstream-key",
                              "sk-h2",
                              "--upstream-h2c",
                              "--io-loops",
                              "1",
                              "--base-url",
                              base,
                              NULL};
        const char *args11[] = {"--upstream-key", "sk-h2", "--base-url", base, NULL};

        assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
        assert_int_equal(proxy_start(&px11, mock.port, args11, NULL), 0);
    }
    char *pass = chat_body("m", "hello", NULL);
    char *appr = chat_body("bon-m", "hello", NULL);
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", pass, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "h2c ok"));
    http_resp_free(&r);
    /* bon: one n=3 call, then 3 ratings at once, all on the loop's one connection. */
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", appr, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "h2c ok"));
    http_resp_free(&r);
    /* HTTP/1.1 (the default for http://) cannot talk to it. */
    assert_int_equal(http_req("POST", px11.port, "/v1/chat/completions", pass, NULL, &r), 0);
    assert_int_equal(r.status, 502);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&px), 0);
    assert_int_equal(proc_stop(&px11), 0);
    stop_nghttpd(pid, dir, &sessions, &requests);
    print_message("h2c: 5 upstream calls over %d connection(s)\n", sessions);
    assert_true(sessions >= 1 && sessions <= 2);
    free(pass);
    free(appr);
}

/* An https:// upstream that offers HTTP/2 (nghttpd with TLS, a throwaway CA made by the openssl
 * CLI): a wave of concurrent passthrough and bon requests is carried on one connection per
 * I/O loop (ALPN h2, CURLPIPE_MULTIPLEX, PIPEWAIT), verified against --upstream-ca; without
 * the CA the same upstream is refused (502): verification is never off. */
static void test_upstream_h2_tls(void **state)
{
    char dir[] = "/tmp/itest-h2-XXXXXX", path[512], base[64], key[300], crt[300], ca[300];
    struct proc px, pxno;
    struct http_resp r;
    int port = free_port(), sessions, requests;
    pid_t pid;

    (void)state;
    if (!have_nghttpd())
        skip();
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path),
             "set -e; cd '%s'; exec >/dev/null 2>&1\n"
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=itest-h2-ca "
             "-keyout ca.key -out ca.pem\n"
             "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key "
             "-out server.csr\n"
             "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext\n"
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-days 2 -extfile san.ext -out server.pem\n",
             dir);
    assert_int_equal(system(path), 0);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(crt, sizeof(crt), "%s/server.pem", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    pid = start_nghttpd(dir, port, key, crt);
    snprintf(base, sizeof(base), "https://127.0.0.1:%d/v1", port);
    {
        const char *args[] = {"--upstream-key",
                              "sk-h2",
                              "--upstream-ca",
                              ca,
                              "--io-loops",
                              "1",
                              "--base-url",
                              base,
                              NULL};
        const char *argsno[] = {"--upstream-key", "sk-h2", "--base-url", base, NULL};

        assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
        assert_int_equal(proxy_start(&pxno, mock.port, argsno, NULL), 0);
    }
    /* 40 passthrough and 20 bon requests at once: 160 upstream calls (nghttpd answers n=3 with
     * one choice, so each bon draws its 3 candidates one by one, then rates them). */
    struct one res_p[40], res_b[20];
    struct wave wp = {px.port, 40, "m", res_p, 0}, wb = {px.port, 20, "bon-m", res_b, 0};
    pthread_t tp, tb;

    memset(res_p, 0, sizeof(res_p));
    memset(res_b, 0, sizeof(res_b));
    assert_int_equal(pthread_create(&tp, NULL, wave_main, &wp), 0);
    assert_int_equal(pthread_create(&tb, NULL, wave_main, &wb), 0);
    pthread_join(tp, NULL);
    pthread_join(tb, NULL);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(res_p[i].status, 200);
        assert_non_null(strstr(res_p[i].body, "h2c ok"));
    }
    for (int i = 0; i < 20; i++) {
        assert_int_equal(res_b[i].status, 200);
        assert_non_null(strstr(res_b[i].body, "h2c ok"));
    }
    /* Not trusted without --upstream-ca. */
    char *pass = chat_body("m", "hello", NULL);
    assert_int_equal(http_req("POST", pxno.port, "/v1/chat/completions", pass, NULL, &r), 0);
    assert_int_equal(r.status, 502);
    http_resp_free(&r);
    free(pass);
    assert_int_equal(proc_stop(&px), 0);
    assert_int_equal(proc_stop(&pxno), 0);
    /* The refused proxy's handshake fails before a session, or adds one. */
    stop_nghttpd(pid, dir, &sessions, &requests);
    print_message("h2 over TLS: %d upstream calls over %d session(s)\n", requests, sessions);
    assert_true(requests >= 100);
    assert_true(sessions >= 1 && sessions <= 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_waiting_few_threads), cmocka_unit_test(test_small_workers_queue),
        cmocka_unit_test(test_queue_full_503),           cmocka_unit_test(test_upstream_h2c),
        cmocka_unit_test(test_upstream_h2_tls),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
