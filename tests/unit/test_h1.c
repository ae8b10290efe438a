/* test_h1.c: unit tests of the lean HTTP/1.1 client's response parser (h1.c): framing by
 * Content-Length, chunked and close; 1xx skipped; keep-alive; limits; every input also fed in
 * every two-piece split and byte by byte, which must give the same result. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h1.h"

struct got {
    struct buf body;
    struct buf heads;   /* header lines, each followed by '\n' */
    size_t abort_after; /* 0: never */
};

static bool on_body(void *ud, const char *d, size_t n)
{
    struct got *g = ud;

    if (g->abort_after && g->body.len + n > g->abort_after)
        return false;
    assert_int_equal(buf_append(&g->body, d, n), 0);
    return true;
}

static void on_header(void *ud, const char *l, size_t n)
{
    struct got *g = ud;

    buf_append(&g->heads, l, n);
    buf_append(&g->heads, "\n", 1);
}

/* Feeds 'in' in pieces cut at the offsets in cuts (ncuts of them, ascending); returns the last
 * result and the bytes left unused after H1_DONE. */
static int feed_cut(struct h1_parser *p, struct got *g, const char *in, size_t len,
                    const size_t *cuts, size_t ncuts, size_t *left)
{
    size_t at = 0;
    int rc = H1_MORE;

    *left = 0;
    for (size_t i = 0; i <= ncuts && rc == H1_MORE; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        size_t used = 0;

        if (end < at)
            continue;
        rc = h1_parser_feed(p, in + at, end - at, &used, on_header, on_body, g);
        if (rc == H1_DONE)
            *left = (end - at - used) + (len - end);
        at = end;
    }
    return rc;
}

struct result {
    int rc;
    long status;
    bool keep_alive;
    char body[512];
    size_t left;
};

static struct result parse_all(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                               bool eof)
{
    struct h1_parser p = {0};
    struct got g = {0};
    struct result r = {0};

    buf_init(&g.body, 0);
    buf_init(&g.heads, 0);
    h1_parser_init(&p);
    r.rc = feed_cut(&p, &g, in, len, cuts, ncuts, &r.left);
    if (r.rc == H1_MORE && eof)
        r.rc = h1_parser_eof(&p);
    r.status = p.status;
    r.keep_alive = p.keep_alive;
    snprintf(r.body, sizeof(r.body), "%s", buf_cstr(&g.body));
    h1_parser_free(&p);
    buf_free(&g.body);
    buf_free(&g.heads);
    return r;
}

/* The whole input at once, then in every two-piece split, then byte by byte: same result. */
static struct result parse_every_way(const char *in, bool eof)
{
    size_t len = strlen(in);
    struct result whole = parse_all(in, len, NULL, 0, eof);

    for (size_t cut = 1; cut < len; cut++) {
        struct result r = parse_all(in, len, &cut, 1, eof);

        assert_int_equal(r.rc, whole.rc);
        assert_int_equal(r.status, whole.status);
        assert_string_equal(r.body, whole.body);
        assert_int_equal(r.left, whole.left);
    }
    size_t *cuts = malloc(len * sizeof(*cuts));
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    struct result r = parse_all(in, len, cuts, len ? len - 1 : 0, eof);
    free(cuts);
    assert_int_equal(r.rc, whole.rc);
    assert_string_equal(r.body, whole.body);
    assert_int_equal(r.left, whole.left);
    return whole;
}

static void test_content_length(void **state)
{
    (void)state;
    struct result r = parse_every_way("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                      "Content-Length: 11\r\n\r\n{\"a\":\"xyz\"}",
                                      false);

    assert_int_equal(r.rc, H1_DONE);
    assert_int_equal(r.status, 200);
    assert_true(r.keep_alive);
    assert_string_equal(r.body, "{\"a\":\"xyz\"}");
    assert_int_equal(r.left, 0);
}

static void test_bytes_after_the_response_are_left(void **state)
{
    (void)state;
    struct result r = parse_every_way("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", false);

    assert_int_equal(r.rc, H1_DONE);
    assert_string_equal(r.body, "ok");
    assert_int_equal(r.left, 5); /* the caller then does not reuse the connection */
}

static void test_chunked(void **state)
{
    (void)state;
    struct result r =
        parse_every_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks."
                        "\r\n0\r\nX-Trailer: t\r\n\r\n",
                        false);

    assert_int_equal(r.rc, H1_DONE);
    assert_string_equal(r.body, "Wikipedia in\r\n\r\nchunks.");
    assert_true(r.keep_alive);
}

static void test_chunked_bad_size(void **state)
{
    (void)state;
    assert_int_equal(
        parse_every_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n", false)
            .rc,
        H1_BAD);
    /* data longer than its chunk size */
    assert_int_equal(
        parse_every_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", false)
            .rc,
        H1_BAD);
}

static void test_until_close(void **state)
{
    (void)state;
    struct result r =
        parse_every_way("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", true);

    assert_int_equal(r.rc, H1_DONE);
    assert_string_equal(r.body, "all of it");
    assert_false(r.keep_alive);
    /* without the close it is not over */
    assert_int_equal(parse_every_way("HTTP/1.1 200 OK\r\n\r\nall of it", false).rc, H1_MORE);
}

static void test_cut_short_is_bad_at_eof(void **state)
{
    (void)state;
    assert_int_equal(parse_every_way("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).rc,
                     H1_BAD);
    assert_int_equal(parse_every_way("HTTP/1.1 200 OK\r\nContent-Le", true).rc, H1_BAD);
    assert_int_equal(
        parse_every_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", true).rc,
        H1_BAD);
}

static void test_continue_skipped(void **state)
{
    (void)state;
    struct result r = parse_every_way("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                                      "Link: </x>\r\n\r\nHTTP/1.1 201 Created\r\n"
                                      "Content-Length: 1\r\n\r\nz",
                                      false);

    assert_int_equal(r.rc, H1_DONE);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "z");
}

static void test_no_body_statuses(void **state)
{
    (void)state;
    struct result r =
        parse_every_way("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false);

    assert_int_equal(r.rc, H1_DONE);
    assert_int_equal(r.status, 204);
    assert_string_equal(r.body, "");
    r = parse_every_way("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nRetry-After: 7\r\n\r\n", false);
    assert_int_equal(r.rc, H1_DONE);
    assert_int_equal(r.status, 503);
}

static void test_connection_close_and_http10(void **state)
{
    (void)state;
    struct result r = parse_every_way(
        "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\na", false);

    assert_int_equal(r.rc, H1_DONE);
    assert_false(r.keep_alive);
    r = parse_every_way("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na", false);
    assert_false(r.keep_alive);
    r = parse_every_way("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na",
                        false);
    assert_true(r.keep_alive);
    r = parse_every_way(
        "HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nContent-Length: 1\r\n\r\na", false);
    assert_false(r.keep_alive);
}

static void test_not_http(void **state)
{
    (void)state;
    assert_int_equal(parse_every_way("SSH-2.0-OpenSSH_9.2\r\n", false).rc, H1_BAD);
    assert_int_equal(parse_every_way("HTTP/2 200\r\n\r\n", false).rc, H1_BAD);
    assert_int_equal(parse_every_way("HTTP/1.1 2x0 OK\r\n\r\n", false).rc, H1_BAD);
    assert_int_equal(parse_every_way("HTTP/1.1 101 Switching\r\n\r\n", false).rc, H1_BAD);
    assert_int_equal(parse_every_way("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", false).rc, H1_BAD);
}

static void test_framing_conflicts(void **state)
{
    (void)state;
    /* two different lengths: refused, not guessed */
    assert_int_equal(
        parse_every_way("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                        false)
            .rc,
        H1_BAD);
    assert_int_equal(parse_every_way("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).rc,
                     H1_BAD);
    /* Transfer-Encoding overrides Content-Length (RFC 9112 6.3); that connection is not reused */
    struct result r = parse_every_way("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                                      false);
    assert_int_equal(r.rc, H1_DONE);
    assert_string_equal(r.body, "abc");
    assert_false(r.keep_alive);
    /* a last coding other than chunked: the body ends with the connection, passed as it is */
    r = parse_every_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz", true);
    assert_int_equal(r.rc, H1_DONE);
    assert_string_equal(r.body, "zzz");
    assert_false(r.keep_alive);
    /* the same length twice is one length */
    assert_int_equal(
        parse_every_way("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
                        false)
            .rc,
        H1_DONE);
}

static void test_head_limit(void **state)
{
    (void)state;
    struct buf b;

    buf_init(&b, 0);
    buf_puts(&b, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 2000; i++) /* 2000 x 40 bytes: 80 KB of headers */
        buf_printf(&b, "X-Filler-%04d: 0123456789012345678901\r\n", i);
    buf_puts(&b, "Content-Length: 0\r\n\r\n");
    struct result r = parse_all(b.data, b.len, NULL, 0, false);
    assert_int_equal(r.rc, H1_BAD);
    buf_free(&b);

    buf_init(&b, 0); /* one 20 KB line */
    buf_puts(&b, "HTTP/1.1 200 OK\r\nX-Long: ");
    for (int i = 0; i < 20000; i++)
        buf_puts(&b, "a");
    buf_puts(&b, "\r\n\r\n");
    r = parse_all(b.data, b.len, NULL, 0, false);
    assert_int_equal(r.rc, H1_BAD);
    buf_free(&b);
}

static void test_headers_and_fields(void **state)
{
    (void)state;
    static const char in[] =
        "HTTP/1.1 429 Too Many\r\nContent-Type: application/json; charset=x\r\n"
        "Retry-After: 12\r\nX-Request-Id: abc\r\nContent-Length: 2\r\n\r\n{}";
    struct h1_parser p = {0};
    struct got g = {0};
    size_t used = 0;

    buf_init(&g.body, 0);
    buf_init(&g.heads, 0);
    h1_parser_init(&p);
    assert_true(h1_parser_empty(&p));
    assert_int_equal(h1_parser_feed(&p, in, strlen(in), &used, on_header, on_body, &g), H1_DONE);
    assert_false(h1_parser_empty(&p));
    assert_int_equal(used, strlen(in));
    assert_int_equal(p.status, 429);
    assert_int_equal(p.retry_after_s, 12);
    assert_string_equal(p.content_type, "application/json; charset=x");
    assert_non_null(strstr(buf_cstr(&g.heads), "X-Request-Id: abc\n"));
    assert_null(strstr(buf_cstr(&g.heads), "HTTP/1.1")); /* header lines only */
    /* the parser is reused for the next response on the connection */
    h1_parser_init(&p);
    assert_true(h1_parser_empty(&p));
    static const char in2[] = "HTTP/1.1 200 OK\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\n"
                              "Content-Length: 0\r\n\r\n";
    assert_int_equal(h1_parser_feed(&p, in2, strlen(in2), &used, NULL, NULL, NULL), H1_DONE);
    assert_int_equal(p.retry_after_s, 0); /* a date in the past */
    h1_parser_free(&p);
    buf_free(&g.body);
    buf_free(&g.heads);
}

static void test_body_abort(void **state)
{
    (void)state;
    static const char in[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
    struct h1_parser p = {0};
    struct got g = {.abort_after = 4};
    size_t used;

    buf_init(&g.body, 0);
    buf_init(&g.heads, 0);
    h1_parser_init(&p);
    assert_int_equal(h1_parser_feed(&p, in, strlen(in), &used, on_header, on_body, &g), H1_ABORT);
    h1_parser_free(&p);
    buf_free(&g.body);
    buf_free(&g.heads);
}

static void test_url_ok(void **state)
{
    (void)state;
    assert_true(h1_url_ok("http://127.0.0.1:8000/v1/chat/completions"));
    assert_true(h1_url_ok("http://127.1.2.3/v1/chat/completions")); /* no port: 80 */
    assert_true(h1_url_ok("HTTP://[::1]:8080/v1/chat/completions"));
    assert_false(h1_url_ok("https://127.0.0.1:8000/v1/chat/completions")); /* TLS: libcurl */
    assert_false(h1_url_ok("http://localhost:8000/v1/chat/completions"));  /* a name: libcurl */
    assert_false(h1_url_ok("http://api.example.com/v1/chat/completions"));
    assert_false(h1_url_ok("http://user:pw@127.0.0.1/v1/chat/completions"));
    assert_false(h1_url_ok("http://127.0.0.1:0/v1"));
    assert_false(h1_url_ok("http://127.0.0.1:70000/v1"));
    assert_false(h1_url_ok("http://127.0.0.1:80x/v1"));
    assert_false(h1_url_ok("http://127.1/v1"));
    assert_false(h1_url_ok("http://127.0.0.1"));
    assert_false(h1_url_ok("http://[::1/v1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_bytes_after_the_response_are_left),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_bad_size),
        cmocka_unit_test(test_until_close),
        cmocka_unit_test(test_cut_short_is_bad_at_eof),
        cmocka_unit_test(test_continue_skipped),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_connection_close_and_http10),
        cmocka_unit_test(test_not_http),
        cmocka_unit_test(test_framing_conflicts),
        cmocka_unit_test(test_head_limit),
        cmocka_unit_test(test_headers_and_fields),
        cmocka_unit_test(test_body_abort),
        cmocka_unit_test(test_url_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
