/* itest_lean.c: approach calls and passthrough requests through the lean HTTP/1.1 client (h1.c)
 * against a scripted raw upstream in this process (a listening socket and a thread per
 * connection), for what the mock never does: chunked answers, a keep-alive connection closed as it
 * is reused, a body framed by the close, garbage, a body cut short, silence, 429 with Retry-After.
 * Every scenario runs twice, with the lean client and with --upstream-curl-only, and the client
 * must see the same thing. */
#define _GNU_SOURCE /* strcasestr */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

enum mode {
    M_PLAIN,        /* Content-Length, keep-alive */
    M_CHUNKED,      /* chunked in three pieces, keep-alive */
    M_CLOSE_REUSED, /* a connection's second request: closed unanswered (a stale keep-alive) */
    M_UNTIL_CLOSE,  /* no length: the body ends with the connection */
    M_GARBAGE,      /* not HTTP */
    M_TRUNCATED,    /* Content-Length 500, 20 bytes, close */
    M_SILENT,       /* reads the request, never answers */
    M_429_ONCE      /* 429 with Retry-After: 1, then answers */
};

static const char answer[] =
    "{\"id\":\"raw-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":"
    "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"The answer is 4.\"},"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":5,"
    "\"total_tokens\":10}}";

static struct {
    pthread_mutex_t mu;
    enum mode mode;
    int requests;    /* requests read since the last reset */
    int connections; /* connections accepted since the last reset */
    int answered_429;
    char last_head[4096];
} raw = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int raw_fd = -1, raw_port;
static struct proc dummy; /* for proxy_start's log path only */

static void send_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);

        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one request (head + Content-Length body); false at EOF. */
static bool read_request(int fd, char *head, size_t cap)
{
    size_t len = 0;
    char *end = NULL;

    while (!end) {
        if (len + 1 >= cap)
            return false;
        ssize_t r = recv(fd, head + len, cap - 1 - len, 0);

        if (r <= 0)
            return false;
        len += (size_t)r;
        head[len] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    const char *cl = strcasestr(head, "\r\ncontent-length:");
    size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
    size_t have = len - (size_t)(end + 4 - head);
    char sink[4096];

    while (have < body) {
        ssize_t r = recv(fd, sink, sizeof(sink), 0);

        if (r <= 0)
            return false;
        have += (size_t)r;
    }
    return true;
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char head[4096], out[2048];
    int nth = 0; /* requests on this connection */

    while (read_request(fd, head, sizeof(head))) {
        pthread_mutex_lock(&raw.mu);
        enum mode m = raw.mode;
        bool first_429 = m == M_429_ONCE && raw.answered_429++ == 0;
        raw.requests++;
        memcpy(raw.last_head, head, sizeof(raw.last_head) - 1);
        pthread_mutex_unlock(&raw.mu);
        nth++;
        if (m == M_CLOSE_REUSED && nth > 1)
            break;
        if (m == M_SILENT) {
            sleep(5);
            break;
        }
        if (m == M_GARBAGE) {
            send_all(fd, "NOT HTTP AT ALL\r\n\r\n", 19);
            break;
        }
        if (m == M_TRUNCATED) {
            int n = snprintf(out, sizeof(out),
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 500\r\n\r\n%.20s",
                             answer);
            send_all(fd, out, (size_t)n);
            break;
        }
        if (first_429) {
            static const char r429[] =
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: "
                "application/json\r\nContent-Length: 47\r\n\r\n"
                "{\"error\":{\"message\":\"slow down\",\"type\":\"rate\"}}";
            send_all(fd, r429, sizeof(r429) - 1);
            continue;
        }
        if (m == M_CHUNKED) {
            size_t n = strlen(answer), a = n / 3, b = n / 3;
            int k = snprintf(out, sizeof(out),
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n%zx;ext=1\r\n%.*s\r\n",
                             a, (int)a, answer);
            send_all(fd, out, (size_t)k);
            nanosleep(&(struct timespec){0, 20000000}, NULL);
            k = snprintf(out, sizeof(out), "%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\nX-T: 1\r\n\r\n", b,
                         (int)b, answer + a, n - a - b, answer + a + b);
            send_all(fd, out, (size_t)k);
            continue;
        }
        if (m == M_UNTIL_CLOSE) {
            int k = snprintf(out, sizeof(out),
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Connection: close\r\n\r\n%s",
                             answer);
            send_all(fd, out, (size_t)k);
            break;
        }
        int k = snprintf(out, sizeof(out),
                         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "X-Request-Id: raw-req\r\nContent-Length: %zu\r\n\r\n%s",
                         strlen(answer), answer);
        send_all(fd, out, (size_t)k);
    }
    close(fd);
    return NULL;
}

static void *accept_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(raw_fd, NULL, NULL);
        pthread_t t;

        if (fd < 0)
            return NULL;
        pthread_mutex_lock(&raw.mu);
        raw.connections++;
        pthread_mutex_unlock(&raw.mu);
        pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static void raw_reset(enum mode m)
{
    pthread_mutex_lock(&raw.mu);
    raw.mode = m;
    raw.requests = raw.connections = raw.answered_429 = 0;
    raw.last_head[0] = '\0';
    pthread_mutex_unlock(&raw.mu);
}

static int raw_get(const int *field)
{
    pthread_mutex_lock(&raw.mu);
    int v = *field;
    pthread_mutex_unlock(&raw.mu);
    return v;
}

static int setup(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    pthread_t t;
    int one = 1;

    (void)state;
    (void)dummy;
    harness_deadline(240);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    raw_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(raw_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(raw_fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(raw_fd, 128) != 0 ||
        getsockname(raw_fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    raw_port = ntohs(a.sin_port);
    pthread_create(&t, NULL, accept_main, NULL);
    pthread_detach(t);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    curl_global_cleanup();
    return 0;
}

/* The proxy, lean (default) or libcurl-only, with a 1 s upstream timeout and no retries but
 * those asked for. */
static void start_proxy(struct proc *px, bool curl_only, const char *retries)
{
    /* one I/O loop: one connection pool, so reuse is exact */
    const char *lean_args[] = {"--io-loops", "1", "--upstream-timeout", "1", "--retries",
                               retries,      NULL};
    const char *curl_args[] = {"--io-loops", "1",     "--upstream-timeout",   "1",
                               "--retries",  retries, "--upstream-curl-only", NULL};

    assert_int_equal(proxy_start(px, raw_port, curl_only ? curl_args : lean_args, NULL), 0);
}

/* One request of model (re2-m: an approach making one upstream call; m: passthrough); returns
 * the status, the content in *content. */
static long ask_model(struct proc *px, const char *model, char *content, size_t cap, double *secs)
{
    struct http_resp r = {0};
    double t0 = harness_now_s();
    long st = chat_as(px->port, "sk-raw", model, "What is 2+2?", &r);

    if (secs)
        *secs = harness_now_s() - t0;
    content[0] = '\0';
    cJSON *j = http_json(&r);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
    const cJSON *txt = cJSON_GetObjectItemCaseSensitive(msg, "content");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (cJSON_IsString(txt))
        snprintf(content, cap, "%s", txt->valuestring);
    else if (err)
        snprintf(content, cap, "error: %s",
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"))
                     ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"))
                     : "?");
    cJSON_Delete(j);
    http_resp_free(&r);
    return st;
}

static long ask(struct proc *px, char *content, size_t cap, double *secs)
{
    return ask_model(px, "re2-m", content, cap, secs);
}

static void both(void (*scenario)(bool curl_only))
{
    print_message("lean client\n");
    scenario(false);
    print_message("libcurl\n");
    scenario(true);
}

static void plain(bool curl_only)
{
    struct proc px;
    char c[256];

    raw_reset(M_PLAIN);
    start_proxy(&px, curl_only, "0");
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ask(&px, c, sizeof(c), NULL), 200);
        assert_non_null(strstr(c, "The answer is 4."));
    }
    for (int i = 0; i < 3; i++) { /* passthrough, not streamed: the same client */
        assert_int_equal(ask_model(&px, "m", c, sizeof(c), NULL), 200);
        assert_string_equal(c, "The answer is 4.");
    }
    assert_int_equal(raw_get(&raw.requests), 8);
    /* one connection carried all eight: kept alive and reused */
    assert_int_equal(raw_get(&raw.connections), 1);
    /* what the upstream saw: the same essentials from either client */
    pthread_mutex_lock(&raw.mu);
    char head[4096];
    snprintf(head, sizeof(head), "%s", raw.last_head);
    pthread_mutex_unlock(&raw.mu);
    assert_true(strncmp(head, "POST /v1/chat/completions HTTP/1.1\r\n", 36) == 0);
    char host[64];
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", raw_port);
    assert_non_null(strstr(head, host));
    assert_non_null(strcasestr(head, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strcasestr(head, "\r\nAuthorization: Bearer sk-raw\r\n"));
    assert_non_null(strcasestr(head, "\r\nUser-Agent: optillm-c/"));
    assert_non_null(strcasestr(head, "\r\nContent-Length: "));
    assert_null(strcasestr(head, "\r\nExpect:"));
    assert_int_equal(proc_stop(&px), 0);
}

static void chunked(bool curl_only)
{
    struct proc px;
    char c[256];

    raw_reset(M_CHUNKED);
    start_proxy(&px, curl_only, "0");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ask_model(&px, i % 2 ? "m" : "re2-m", c, sizeof(c), NULL), 200);
        assert_string_equal(c, "The answer is 4.");
    }
    assert_int_equal(raw_get(&raw.connections), 1);
    assert_int_equal(proc_stop(&px), 0);
}

static void close_reused(bool curl_only)
{
    struct proc px;
    char c[256];

    raw_reset(M_CLOSE_REUSED);
    start_proxy(&px, curl_only, "0");
    /* with --retries 0, only the transparent fresh-connection retry can save these */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ask(&px, c, sizeof(c), NULL), 200);
        assert_string_equal(c, "The answer is 4.");
    }
    assert_int_equal(ask_model(&px, "m", c, sizeof(c), NULL), 200); /* and a passthrough one */
    assert_string_equal(c, "The answer is 4.");
    /* requests 2..5 each found their connection closed, then went on a fresh one */
    assert_int_equal(raw_get(&raw.connections), 5);
    assert_int_equal(raw_get(&raw.requests), 9);
    assert_int_equal(proc_stop(&px), 0);
}

static void until_close(bool curl_only)
{
    struct proc px;
    char c[256];

    raw_reset(M_UNTIL_CLOSE);
    start_proxy(&px, curl_only, "0");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ask(&px, c, sizeof(c), NULL), 200);
        assert_string_equal(c, "The answer is 4.");
    }
    assert_int_equal(raw_get(&raw.connections), 3); /* never reused */
    assert_int_equal(proc_stop(&px), 0);
}

static void garbage(bool curl_only)
{
    struct proc px;
    char c[256];

    raw_reset(M_GARBAGE);
    start_proxy(&px, curl_only, "0");
    assert_int_equal(ask(&px, c, sizeof(c), NULL), 502);
    assert_non_null(strstr(c, "error: "));
    assert_int_equal(raw_get(&raw.requests), 1);
    /* the proxy is fine afterwards */
    raw_reset(M_PLAIN);
    assert_int_equal(ask(&px, c, sizeof(c), NULL), 200);
    assert_int_equal(proc_stop(&px), 0);
}

static void truncated(bool curl_only)
{
    struct proc px;
    char c[256];

    raw_reset(M_TRUNCATED);
    start_proxy(&px, curl_only, "0");
    assert_int_equal(ask(&px, c, sizeof(c), NULL), 502);
    assert_non_null(strstr(c, "error: "));
    assert_int_equal(proc_stop(&px), 0);
}

static void silent(bool curl_only)
{
    struct proc px;
    char c[256];
    double secs;

    raw_reset(M_SILENT);
    start_proxy(&px, curl_only, "0");
    assert_int_equal(ask(&px, c, sizeof(c), &secs), 504); /* --upstream-timeout 1 */
    assert_true(secs >= 0.9);
    assert_true(secs < 3.0 + harness_slack());
    assert_int_equal(proc_stop(&px), 0);
}

static void rate_limited(bool curl_only)
{
    struct proc px;
    char c[256];
    double secs;

    raw_reset(M_429_ONCE);
    start_proxy(&px, curl_only, "1");
    assert_int_equal(ask(&px, c, sizeof(c), &secs), 200);
    assert_string_equal(c, "The answer is 4.");
    assert_int_equal(raw_get(&raw.requests), 2);
    assert_true(secs >= 0.95); /* Retry-After: 1 was honoured */
    assert_int_equal(proc_stop(&px), 0);
}

/* The upstream is not there at all: the same 502 from either client, and quickly. */
static void refused(bool curl_only)
{
    struct proc px;
    const char *lean_args[] = {"--retries", "0", NULL};
    const char *curl_args[] = {"--retries", "0", "--upstream-curl-only", NULL};
    int port = harness_free_port();
    double t0 = harness_now_s();

    assert_int_equal(proxy_start(&px, port, curl_only ? curl_args : lean_args, NULL), 0);
    assert_int_equal(chat_as(px.port, "sk-raw", "re2-m", "What is 2+2?", NULL), 502);
    assert_true(harness_now_s() - t0 < 5.0 + harness_slack());
    assert_int_equal(proc_stop(&px), 0);
}

static void test_plain(void **s)
{
    (void)s;
    both(plain);
}
static void test_chunked(void **s)
{
    (void)s;
    both(chunked);
}
static void test_close_reused(void **s)
{
    (void)s;
    both(close_reused);
}
static void test_until_close(void **s)
{
    (void)s;
    both(until_close);
}
static void test_garbage(void **s)
{
    (void)s;
    both(garbage);
}
static void test_truncated(void **s)
{
    (void)s;
    both(truncated);
}
static void test_silent(void **s)
{
    (void)s;
    both(silent);
}
static void test_rate_limited(void **s)
{
    (void)s;
    both(rate_limited);
}
static void test_refused(void **s)
{
    (void)s;
    both(refused);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_close_reused), cmocka_unit_test(test_until_close),
        cmocka_unit_test(test_garbage),      cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_silent),       cmocka_unit_test(test_rate_limited),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
