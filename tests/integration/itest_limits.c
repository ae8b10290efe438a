/* itest_limits.c: hostile and slow clients against the real build/optillm: bodies refused at
 * header time (before a byte of them is read), the global request-body budget, header and
 * body deadlines against clients that trickle a byte at a time, and the per-address
 * connection limit. Raw sockets, because libcurl cannot stall or trickle on purpose. */
#define _GNU_SOURCE /* strcasestr */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define GATE_KEY "gate-LEAKCHECK-5e11a7c0"

static struct proc mock;

static int setup(void **state)
{
    (void)state;
    harness_deadline(240);
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

    nanosleep(&ts, NULL);
}

/* A TCP connection to 127.0.0.1:port from source address 'src' (NULL: any). */
static int tcp_connect(int port, const char *src)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    if (src) {
        struct sockaddr_in la = {.sin_family = AF_INET};

        inet_pton(AF_INET, src, &la.sin_addr);
        assert_int_equal(bind(fd, (struct sockaddr *)&la, sizeof(la)), 0);
    }
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static bool send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);

        if (k <= 0)
            return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

/* Reads until the peer closes, 'want' appears, or 'secs' pass. Returns bytes read into buf
 * (NUL-terminated); *closed tells whether the peer closed (EOF or reset). */
static size_t read_for(int fd, char *buf, size_t cap, double secs, const char *want, bool *closed)
{
    size_t len = 0;
    double end = harness_now_s() + secs;

    *closed = false;
    buf[0] = '\0';
    while (harness_now_s() < end && len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ms = (int)((end - harness_now_s()) * 1000) + 1;

        if (poll(&p, 1, ms) <= 0)
            continue;
        ssize_t k = recv(fd, buf + len, cap - 1 - len, 0);
        if (k <= 0) {
            *closed = true;
            break;
        }
        len += (size_t)k;
        buf[len] = '\0';
        if (want && strstr(buf, want))
            break;
    }
    return len;
}

/* Sends a header block (no body) and returns the first line of the answer within 'secs'. */
static void answer_to_headers(int port, const char *head, double secs, char *line, size_t cap)
{
    char buf[8192];
    bool closed;
    int fd = tcp_connect(port, NULL);

    assert_true(send_all(fd, head, strlen(head)));
    read_for(fd, buf, sizeof(buf), secs, "\r\n\r\n", &closed);
    close(fd);
    snprintf(line, cap, "%.*s", (int)strcspn(buf, "\r\n"), buf);
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* ---- item 5: bodies refused before they are read ------------------------------------------ */

static void test_refused_at_header_time(void **state)
{
    struct proc px;
    const char *args[] = {"--optillm-api-key", GATE_KEY, NULL};
    char line[256];
    static const struct {
        const char *head;
        const char *status;
    } cases[] = {
        /* No key: 401 although the client sent none of its 7 MiB yet. */
        {"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
         "Content-Length: 7340032\r\n\r\n",
         "HTTP/1.1 401"},
        /* A wrong key, chunked body. */
        {"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\n"
         "Transfer-Encoding: chunked\r\n\r\n",
         "HTTP/1.1 401"},
        /* Bodies on the endpoints that take none. */
        {"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 7340032\r\n\r\n", "HTTP/1.1 413"},
        {"GET /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 413"},
        {"GET /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " GATE_KEY
         "\r\nContent-Length: 100000\r\n\r\n",
         "HTTP/1.1 413"},
        {"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n", "HTTP/1.1 413"},
        /* Wrong method, unknown path. */
        {"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 7340032\r\n\r\n", "HTTP/1.1 405"},
        {"PUT /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 7340032\r\n\r\n",
         "HTTP/1.1 405"},
        {"POST /v1/nothing HTTP/1.1\r\nHost: t\r\nContent-Length: 7340032\r\n\r\n", "HTTP/1.1 404"},
    };

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        answer_to_headers(px.port, cases[i].head, 3, line, sizeof(line));
        if (strncmp(line, cases[i].status, strlen(cases[i].status)) != 0)
            fprintf(stderr, "case %zu: got '%s', want %s\n", i, line, cases[i].status);
        assert_memory_equal(line, cases[i].status, strlen(cases[i].status));
    }

    /* The review's case: 60 stalled 7 MiB uploads to GET-only /health, each having sent
     * 256 KiB. None is buffered: RSS stays flat (it grew by 430 MB before). */
    long before = rss_kb(px.pid);
    int fds[60];
    char *chunk = calloc(1, 256 * 1024);
    static const char head[] = "GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 7340032\r\n\r\n";
    for (int i = 0; i < 60; i++) {
        fds[i] = tcp_connect(px.port, NULL);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        assert_true(send_all(fds[i], head, sizeof(head) - 1));
        (void)!send(fds[i], chunk, 256 * 1024, MSG_NOSIGNAL); /* may be cut short: refused */
    }
    sleep_s(1);
    long after = rss_kb(px.pid);
    fprintf(stderr, "RSS with 60 stalled uploads: %ld -> %ld kB\n", before, after);
    assert_true(after - before < 8 * 1024);
    for (int i = 0; i < 60; i++)
        close(fds[i]);
    free(chunk);

    /* Still serving, with keep-alive for requests without a body. */
    struct http_resp r;
    char v[64];
    assert_int_equal(http_req("GET", px.port, "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_false(http_header(&r, "Connection", v, sizeof(v)));
    http_resp_free(&r);
    assert_int_equal(proc_stop(&px), 0);
}

static void test_body_budget(void **state)
{
    struct proc px;
    const char *args[] = {
        "--optillm-api-key", GATE_KEY, "--max-body", "2M", "--max-body-memory", "4M",
        "--upstream-key",    "sk-x",   NULL};
    static const char head[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                               "Authorization: Bearer " GATE_KEY "\r\n"
                               "Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";
    int fds[10];
    int refused = 0;
    char buf[4096];
    bool closed;
    struct http_resp r;
    const char *h[] = {"Authorization: Bearer " GATE_KEY, NULL};
    char *body = chat_body("mock-model", "hello", NULL);

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    /* Ten 1 MiB uploads that stall after their headers: four fit the 4 MiB budget, six get
     * 503 with Retry-After at once. */
    for (int i = 0; i < 10; i++) {
        fds[i] = tcp_connect(px.port, NULL);
        assert_true(send_all(fds[i], head, sizeof(head) - 1));
        read_for(fds[i], buf, sizeof(buf), i < 4 ? 0.3 : 3, "\r\n\r\n", &closed);
        if (strncmp(buf, "HTTP/1.1 503", 12) == 0) {
            assert_non_null(strcasestr(buf, "\r\nRetry-After: "));
            refused++;
        } else {
            assert_int_equal(buf[0], '\0'); /* the admitted ones wait for their body */
        }
    }
    assert_int_equal(refused, 6);
    /* Even a small request does not fit now... */
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
    assert_int_equal(r.status, 503);
    http_resp_free(&r);
    /* ...and does once the stalled ones are gone (their reservations are given back). */
    for (int i = 0; i < 10; i++)
        close(fds[i]);
    long status = 0;
    for (int i = 0; i < 40 && status != 200; i++) {
        sleep_s(0.1);
        assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, h, &r), 0);
        status = r.status;
        http_resp_free(&r);
    }
    assert_int_equal(status, 200);
    /* A chunked body (no length to reserve up front) is charged as it arrives: with 3 MiB
     * held by stalled uploads, a 1.5 MiB chunked body is read and dropped past 1 MiB, then
     * answered 503. */
    int hold[3];
    for (int i = 0; i < 3; i++) {
        hold[i] = tcp_connect(px.port, NULL);
        assert_true(send_all(hold[i], head, sizeof(head) - 1));
    }
    sleep_s(0.3);
    static const char chead[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                                "Authorization: Bearer " GATE_KEY "\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n180000\r\n";
    static const char ctail[] = "\r\n0\r\n\r\n";
    int fd = tcp_connect(px.port, NULL);
    assert_true(send_all(fd, chead, sizeof(chead) - 1));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t total = 0x180000, off = 0;
    char *blk = malloc(total);
    memset(blk, ' ', total);
    double end = harness_now_s() + 5;
    buf[0] = '\0';
    while (!buf[0] && harness_now_s() < end) {
        if (off < total) {
            ssize_t k =
                send(fd, blk + off, total - off > 65536 ? 65536 : total - off, MSG_NOSIGNAL);
            if (k > 0)
                off += (size_t)k;
            if (off == total)
                assert_true(send_all(fd, ctail, sizeof(ctail) - 1));
        }
        read_for(fd, buf, sizeof(buf), 0.02, "\r\n\r\n", &closed);
    }
    fprintf(stderr, "chunked upload answered after %zu bytes: %.12s\n", off, buf);
    assert_memory_equal(buf, "HTTP/1.1 503", 12);
    close(fd);
    for (int i = 0; i < 3; i++)
        close(hold[i]);
    free(blk);
    free(body);
    assert_int_equal(proc_stop(&px), 0);
}

/* ---- item 11: deadlines and connections per address ---------------------------------------- */

static void test_header_deadline(void **state)
{
    struct proc px;
    const char *args[] = {"--header-timeout", "2", NULL};
    static const char req[] = "GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaa\r\n\r\n";
    char buf[256];
    bool closed = false;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    /* One header byte per second: each byte restarts libmicrohttpd's idle timer, but not the
     * header deadline. */
    int fd = tcp_connect(px.port, NULL);
    double t0 = harness_now_s();
    for (size_t i = 0; i < sizeof(req) - 1 && !closed; i++) {
        if (!send_all(fd, req + i, 1))
            break;
        read_for(fd, buf, sizeof(buf), 1.0, NULL, &closed);
    }
    double took = harness_now_s() - t0;
    fprintf(stderr, "header trickle closed after %.2f s\n", took);
    assert_true(closed);
    assert_true(took >= 1.5);
    assert_true(took < 5.0 + harness_slack());
    close(fd);
    assert_int_equal(proc_stop(&px), 0);
}

static void test_body_deadline(void **state)
{
    struct proc px;
    const char *args[] = {"--body-timeout", "2", "--upstream-key", "sk-x", NULL};
    static const char head[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                               "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    char buf[1024];
    bool closed = false;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    int fd = tcp_connect(px.port, NULL);
    assert_true(send_all(fd, head, sizeof(head) - 1));
    double t0 = harness_now_s();
    size_t got = 0;
    for (int i = 0; i < 20 && !closed && got == 0; i++) {
        if (!send_all(fd, "{", 1))
            break;
        got = read_for(fd, buf, sizeof(buf), 1.0, "\r\n\r\n", &closed);
    }
    double took = harness_now_s() - t0;
    fprintf(stderr, "body trickle ended after %.2f s: %.12s\n", took, got ? buf : "(closed)");
    /* libmicrohttpd cannot answer in the middle of a body: the connection is closed. */
    assert_true(closed);
    assert_int_equal(got, 0);
    assert_true(took >= 1.5);
    assert_true(took < 5.0 + harness_slack());
    close(fd);
    assert_int_equal(proc_stop(&px), 0);
}

static void test_slow_within_limits(void **state)
{
    struct proc px;
    const char *args[] = {
        "--header-timeout", "3", "--body-timeout", "3", "--upstream-key", "sk-x", NULL};
    char *body = chat_body("mock-model", "hello slow world", NULL);
    char head[512], buf[8192];
    bool closed;
    size_t bl = strlen(body);

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    snprintf(head, sizeof(head),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n",
             bl);
    int fd = tcp_connect(px.port, NULL);
    for (int round = 0; round < 2; round++) {
        /* Headers in three pieces over 1 s, the body in three pieces over 1 s. */
        size_t hl = strlen(head);
        for (int i = 0; i < 3; i++) {
            assert_true(send_all(fd, head + hl * (size_t)i / 3,
                                 hl * (size_t)(i + 1) / 3 - hl * (size_t)i / 3));
            sleep_s(0.5);
        }
        for (int i = 0; i < 3; i++) {
            assert_true(send_all(fd, body + bl * (size_t)i / 3,
                                 bl * (size_t)(i + 1) / 3 - bl * (size_t)i / 3));
            if (i < 2)
                sleep_s(0.5);
        }
        read_for(fd, buf, sizeof(buf), 5, "mock reply", &closed);
        assert_memory_equal(buf, "HTTP/1.1 200", 12);
        assert_non_null(strstr(buf, "mock reply"));
        assert_false(closed);
        /* Kept alive past --header-timeout while idle: the next request is still welcome. */
        if (round == 0)
            sleep_s(3.5);
    }
    close(fd);
    free(body);
    assert_int_equal(proc_stop(&px), 0);
}

static void test_per_ip_limit(void **state)
{
    struct proc px;
    const char *args[] = {"--per-ip-connections", "2", NULL};
    static const char req[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    char buf[1024];
    bool closed;
    int fds[3];

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    /* Two connections from 127.0.0.2 are served; the third is closed at once. */
    for (int i = 0; i < 3; i++) {
        fds[i] = tcp_connect(px.port, "127.0.0.2");
        assert_true(send_all(fds[i], req, sizeof(req) - 1));
        read_for(fds[i], buf, sizeof(buf), 2, "{\"status\":\"ok\"}", &closed);
        if (i < 2) {
            assert_memory_equal(buf, "HTTP/1.1 200", 12);
            assert_false(closed);
        } else {
            assert_true(closed);
            assert_int_equal(buf[0], '\0');
        }
    }
    /* 127.0.0.1 is exempt (a local TLS terminator brings every client from there). */
    int local[4];
    for (int i = 0; i < 4; i++) {
        local[i] = tcp_connect(px.port, NULL);
        assert_true(send_all(local[i], req, sizeof(req) - 1));
        read_for(local[i], buf, sizeof(buf), 2, "{\"status\":\"ok\"}", &closed);
        assert_memory_equal(buf, "HTTP/1.1 200", 12);
    }
    for (int i = 0; i < 4; i++)
        close(local[i]);
    /* A closed connection frees its place. */
    close(fds[0]);
    close(fds[2]);
    bool ok = false;
    for (int tries = 0; tries < 20 && !ok; tries++) {
        sleep_s(0.1);
        int fd = tcp_connect(px.port, "127.0.0.2");
        (void)!send_all(fd, req, sizeof(req) - 1);
        read_for(fd, buf, sizeof(buf), 2, "{\"status\":\"ok\"}", &closed);
        ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
        close(fd);
    }
    assert_true(ok);
    close(fds[1]);
    assert_int_equal(proc_stop(&px), 0);
}

/* --max-connections reached by idle keep-alive connections: a new client is served within a
 * second or so (the longest-idle connections are closed to make room), not after the idle
 * ones reach --idle-timeout; connections with a request under way are never taken. */
static void test_idle_reclaimed_at_limit(void **state)
{
    struct proc px;
    const char *args[] = {"--max-connections", "8", "--idle-timeout", "60", NULL};
    static const char req[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    char buf[1024];
    bool closed;
    int idle[8], slow;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, NULL), 0);
    /* A slow request (2 s upstream latency) holds one connection busy the whole time. */
    char *body = chat_body("gpt-x@latency=2500", "hold on", NULL);
    char head[512];
    snprintf(head, sizeof(head),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer sk-x\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
             strlen(body));
    slow = tcp_connect(px.port, NULL);
    assert_true(send_all(slow, head, strlen(head)));
    assert_true(send_all(slow, body, strlen(body)));
    /* 7 more connections, each answered once and then kept alive, idle: 8 in all. */
    for (int i = 0; i < 7; i++) {
        idle[i] = tcp_connect(px.port, NULL);
        assert_true(send_all(idle[i], req, sizeof(req) - 1));
        read_for(idle[i], buf, sizeof(buf), 2, "{\"status\":\"ok\"}", &closed);
        assert_memory_equal(buf, "HTTP/1.1 200", 12);
        assert_false(closed);
    }
    sleep_s(0.3);
    /* A ninth client: served well before the 60 s idle timeout. */
    double t0 = harness_now_s();
    int fd = tcp_connect(px.port, NULL);
    assert_true(send_all(fd, req, sizeof(req) - 1));
    read_for(fd, buf, sizeof(buf), 10, "{\"status\":\"ok\"}", &closed);
    assert_memory_equal(buf, "HTTP/1.1 200", 12);
    assert_true(harness_now_s() - t0 < 5);
    close(fd);
    assert_true(file_contains(px.log, "idle keep-alive connection(s) to make room"));
    /* The busy connection was not taken: its answer arrives whole. */
    read_for(slow, buf, sizeof(buf), 10, "\"finish_reason\"", &closed);
    assert_memory_equal(buf, "HTTP/1.1 200", 12);
    assert_non_null(strstr(buf, "\"finish_reason\""));
    close(slow);
    for (int i = 0; i < 7; i++)
        close(idle[i]);
    free(body);
    assert_int_equal(proc_stop(&px), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_at_header_time),
        cmocka_unit_test(test_body_budget),
        cmocka_unit_test(test_idle_reclaimed_at_limit),
        cmocka_unit_test(test_header_deadline),
        cmocka_unit_test(test_body_deadline),
        cmocka_unit_test(test_slow_within_limits),
        cmocka_unit_test(test_per_ip_limit),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
