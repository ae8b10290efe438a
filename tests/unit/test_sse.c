/* test_sse.c: unit tests of the incremental upstream SSE parser (sse.c). */
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

#include "internal.h"

/* A complete OpenAI stream: comments, an event line, a role chunk, content deltas, a chunk of
 * another choice (ignored), the finish chunk, the usage chunk and [DONE]. */
static const char stream[] =
    ": keep-alive\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
    "\"finish_reason\":null}]}\n"
    "\n"
    ": another comment\n"
    "data:{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo, \"}}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"IGNORED\"}}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"w\\u00f6rld \\\"q\\\"\\n\"}}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,"
    "\"completion_tokens\":7,\"total_tokens\":18,"
    "\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

static const char full_text[] = "Hello, w\xc3\xb6rld \"q\"\n";
static const char *const deltas[] = {"Hel", "lo, ", "w\xc3\xb6rld \"q\"\n"};

/* Records every delta the parser reports. */
struct sink {
    char text[256];
    size_t len;
    int calls;
    char parts[8][64];
};

static void on_delta(void *p, const char *text, size_t len)
{
    struct sink *s = p;

    assert_true(s->len + len < sizeof(s->text));
    memcpy(s->text + s->len, text, len);
    s->len += len;
    s->text[s->len] = '\0';
    if (s->calls < 8)
        snprintf(s->parts[s->calls], sizeof(s->parts[0]), "%.*s", (int)len, text);
    s->calls++;
}

/* Checks the parser's and the sink's state after the whole of 'stream'. */
static void check_complete(struct sse_parser *p, const struct sink *s)
{
    size_t len = 0;
    const char *text = sse_parser_text(p, &len);
    struct usage u;

    assert_string_equal(text, full_text);
    assert_int_equal(len, strlen(full_text));
    assert_string_equal(sse_parser_finish(p), "stop");
    assert_null(sse_parser_error(p));
    assert_true(sse_parser_done(p));
    memset(&u, 0xff, sizeof(u));
    sse_parser_usage(p, &u);
    assert_int_equal(u.prompt_tokens, 11);
    assert_int_equal(u.completion_tokens, 7);
    assert_int_equal(u.reasoning_tokens, 3);
    assert_string_equal(s->text, full_text);
    assert_int_equal(s->calls, PX_ARRAY_LEN(deltas));
    for (size_t i = 0; i < PX_ARRAY_LEN(deltas); i++)
        assert_string_equal(s->parts[i], deltas[i]);
}

/* Feeds 'data' in pieces ending at the offsets in cuts[] (ascending), then the rest. */
static void feed_cuts(const char *data, size_t len, const size_t *cuts, size_t ncuts)
{
    struct sse_parser *p = sse_parser_create();
    struct sink s;
    size_t pos = 0;

    memset(&s, 0, sizeof(s));
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;

        assert_true(end >= pos && end <= len);
        assert_int_equal(sse_parser_feed(p, data + pos, end - pos, on_delta, &s), 0);
        pos = end;
    }
    check_complete(p, &s);
    sse_parser_destroy(p);
}

static void test_one_piece(void **state)
{
    (void)state;
    feed_cuts(stream, strlen(stream), NULL, 0);
}

static void test_before_done(void **state)
{
    struct sse_parser *p = sse_parser_create();
    const char *done = strstr(stream, "data: [DONE]");
    struct sink s;
    size_t len = 0;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_non_null(done);
    assert_int_equal(sse_parser_feed(p, stream, (size_t)(done - stream), on_delta, &s), 0);
    assert_false(sse_parser_done(p));
    assert_string_equal(sse_parser_text(p, &len), full_text);
    /* A partial "data: [DONE]" line (no newline yet) is not the end. */
    assert_int_equal(sse_parser_feed(p, done, 12, on_delta, &s), 0);
    assert_false(sse_parser_done(p));
    assert_int_equal(sse_parser_feed(p, done + 12, strlen(done + 12), on_delta, &s), 0);
    check_complete(p, &s);
    sse_parser_destroy(p);
}

static void test_every_split_point(void **state)
{
    size_t len = strlen(stream);

    (void)state;
    for (size_t k = 0; k <= len; k++)
        feed_cuts(stream, len, &k, 1);
}

static void test_byte_by_byte(void **state)
{
    size_t len = strlen(stream);
    size_t *cuts = xcalloc(len, sizeof(*cuts));

    (void)state;
    for (size_t i = 0; i < len; i++)
        cuts[i] = i;
    feed_cuts(stream, len, cuts, len);
    free(cuts);
}

/* A small LCG with a fixed seed: the same split points on every run. */
static uint32_t lcg(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

static void test_random_splits(void **state)
{
    size_t len = strlen(stream);
    uint32_t seed = 12345;

    (void)state;
    for (int round = 0; round < 500; round++) {
        size_t cuts[12];
        size_t n = 1 + lcg(&seed) % 12;

        for (size_t i = 0; i < n; i++)
            cuts[i] = lcg(&seed) % (len + 1);
        /* sort ascending (insertion sort) */
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                size_t t = cuts[j];

                cuts[j] = cuts[j - 1];
                cuts[j - 1] = t;
            }
        feed_cuts(stream, len, cuts, n);
    }
}

/* The same stream with CRLF line endings, whole and split at every point. */
static void test_crlf(void **state)
{
    size_t len = strlen(stream);
    char *crlf = xmalloc(2 * len + 1);
    size_t n = 0;

    (void)state;
    for (size_t i = 0; i < len; i++) {
        if (stream[i] == '\n')
            crlf[n++] = '\r';
        crlf[n++] = stream[i];
    }
    crlf[n] = '\0';
    feed_cuts(crlf, n, NULL, 0);
    for (size_t k = 0; k <= n; k++)
        feed_cuts(crlf, n, &k, 1);
    free(crlf);
}

static void test_no_callback(void **state)
{
    struct sse_parser *p = sse_parser_create();
    size_t len = 0;

    (void)state;
    assert_int_equal(sse_parser_feed(p, stream, strlen(stream), NULL, NULL), 0);
    assert_string_equal(sse_parser_text(p, &len), full_text);
    assert_true(sse_parser_done(p));
    sse_parser_destroy(p);
}

static void test_empty_parser(void **state)
{
    struct sse_parser *p = sse_parser_create();
    struct usage u;
    size_t len = 99;

    (void)state;
    assert_int_equal(sse_parser_feed(p, "", 0, on_delta, NULL), 0);
    assert_string_equal(sse_parser_text(p, &len), "");
    assert_int_equal(len, 0);
    assert_string_equal(sse_parser_finish(p), "");
    assert_null(sse_parser_error(p));
    assert_false(sse_parser_done(p));
    sse_parser_usage(p, &u);
    assert_int_equal(u.prompt_tokens, 0);
    assert_int_equal(u.completion_tokens, 0);
    sse_parser_destroy(p);
    sse_parser_destroy(NULL);
}

static void test_comments_and_events_only(void **state)
{
    static const char s[] =
        ": keep-alive\n\n: keep-alive\r\n\r\nevent: ping\nid: 5\nretry: 100\n\n";
    struct sse_parser *p = sse_parser_create();
    struct sink sk;

    (void)state;
    memset(&sk, 0, sizeof(sk));
    assert_int_equal(sse_parser_feed(p, s, strlen(s), on_delta, &sk), 0);
    assert_int_equal(sk.calls, 0);
    assert_false(sse_parser_done(p));
    assert_null(sse_parser_error(p));
    sse_parser_destroy(p);
}

static void test_inband_error(void **state)
{
    static const char s[] =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n"
        "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n"
        "data: [DONE]\n\n";
    static const char s2[] = "data: {\"error\":{\"code\":500}}\n\n";
    struct sse_parser *p = sse_parser_create();
    struct sink sk;

    (void)state;
    memset(&sk, 0, sizeof(sk));
    assert_int_equal(sse_parser_feed(p, s, strlen(s), on_delta, &sk), 0);
    assert_non_null(sse_parser_error(p));
    assert_string_equal(sse_parser_error(p), "boom");
    assert_string_equal(sse_parser_text(p, NULL), "par");
    assert_true(sse_parser_done(p));
    sse_parser_destroy(p);

    /* An error without a message still counts as an error. */
    p = sse_parser_create();
    assert_int_equal(sse_parser_feed(p, s2, strlen(s2), on_delta, &sk), 0);
    assert_non_null(sse_parser_error(p));
    assert_true(sse_parser_error(p)[0] != '\0');
    sse_parser_destroy(p);
}

static void test_invalid_json(void **state)
{
    static const char *const bad[] = {
        "data: {not json}\n\n",
        "data: {\"choices\":[\n\n",
        "data: [DONE\n\n",
        "data: hello\n\n",
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        struct sse_parser *p = sse_parser_create();
        struct sink sk;

        print_message("%.*s\n", (int)strcspn(bad[i], "\n"), bad[i]);
        memset(&sk, 0, sizeof(sk));
        assert_int_equal(sse_parser_feed(p, bad[i], strlen(bad[i]), on_delta, &sk), -1);
        assert_int_equal(sk.calls, 0);
        sse_parser_destroy(p);
    }
}

/* Split just before the bad line's newline: the error shows when the line completes. */
static void test_invalid_json_split(void **state)
{
    static const char s[] = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n"
                            "data: {oops}\n";
    struct sse_parser *p = sse_parser_create();
    size_t cut = strlen(s) - 1;
    struct sink sk;

    (void)state;
    memset(&sk, 0, sizeof(sk));
    assert_int_equal(sse_parser_feed(p, s, cut, on_delta, &sk), 0);
    assert_int_equal(sk.calls, 1);
    assert_int_equal(sse_parser_feed(p, s + cut, 1, on_delta, &sk), -1);
    sse_parser_destroy(p);
}

/* Choices without an index count as choice 0; only choice 0's finish_reason is kept. */
static void test_choice_index(void **state)
{
    static const char s[] =
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n"
        "data: {\"choices\":[{\"index\":2,\"delta\":{\"content\":\"X\"},\"finish_reason\":"
        "\"length\"},{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"},\"finish_reason\":"
        "\"length\"}]}\n"
        "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"stop\"}]}\n";
    struct sse_parser *p = sse_parser_create();
    struct sink sk;

    (void)state;
    memset(&sk, 0, sizeof(sk));
    assert_int_equal(sse_parser_feed(p, s, strlen(s), on_delta, &sk), 0);
    assert_string_equal(sse_parser_text(p, NULL), "abc");
    assert_string_equal(sk.text, "abc");
    assert_int_equal(sk.calls, 3);
    assert_string_equal(sse_parser_finish(p), "length");
    sse_parser_destroy(p);
}

/* Usage may come in any chunk; a later "usage": null does not erase it. */
static void test_usage(void **state)
{
    static const char s[] =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":"
        "\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n"
        "data: {\"choices\":[],\"usage\":null}\n"
        "data: [DONE]\n";
    struct sse_parser *p = sse_parser_create();
    struct usage u;

    (void)state;
    assert_int_equal(sse_parser_feed(p, s, strlen(s), NULL, NULL), 0);
    sse_parser_usage(p, &u);
    assert_int_equal(u.prompt_tokens, 5);
    assert_int_equal(u.completion_tokens, 2);
    assert_int_equal(u.reasoning_tokens, 0);
    assert_true(sse_parser_done(p));
    sse_parser_destroy(p);
}

/* A line longer than the 4 MiB cap is refused without crashing. */
static void test_huge_line(void **state)
{
    size_t chunk = 64u << 10;
    char *block = xmalloc(chunk);
    struct sse_parser *p = sse_parser_create();
    size_t fed = 0;
    int rc = 0;

    (void)state;
    memset(block, 'a', chunk);
    memcpy(block, "data: \"", 7);
    while (rc == 0 && fed < (6u << 20)) {
        rc = sse_parser_feed(p, block, chunk, NULL, NULL);
        fed += chunk;
    }
    assert_int_equal(rc, -1);
    assert_true(fed > (4u << 20));
    assert_true(fed <= (4u << 20) + chunk);
    /* Still -1 (and no crash) with more input. */
    assert_int_equal(sse_parser_feed(p, "\n", 1, NULL, NULL), -1);
    sse_parser_destroy(p);

    /* One feed bigger than the cap. */
    {
        size_t big = (4u << 20) + 10;
        char *d = xmalloc(big);

        memset(d, 'b', big);
        memcpy(d, "data: ", 6);
        p = sse_parser_create();
        assert_int_equal(sse_parser_feed(p, d, big, NULL, NULL), -1);
        sse_parser_destroy(p);
        free(d);
    }
    free(block);
}

/* A long delta below the cap is fine. */
static void test_long_delta(void **state)
{
    size_t n = 1u << 20;
    const char *head = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"";
    const char *tail = "\"}}]}\n\n";
    size_t hl = strlen(head), tl = strlen(tail);
    char *line = xmalloc(hl + n + tl);
    struct sse_parser *p = sse_parser_create();
    size_t len = 0;
    const char *text;

    (void)state;
    memcpy(line, head, hl);
    memset(line + hl, 'z', n);
    memcpy(line + hl + n, tail, tl);
    /* fed in two pieces */
    assert_int_equal(sse_parser_feed(p, line, hl + n / 2, NULL, NULL), 0);
    assert_int_equal(sse_parser_feed(p, line + hl + n / 2, n - n / 2 + tl, NULL, NULL), 0);
    text = sse_parser_text(p, &len);
    assert_int_equal(len, n);
    assert_int_equal(text[0], 'z');
    assert_int_equal(text[n - 1], 'z');
    assert_int_equal(text[n], '\0');
    sse_parser_destroy(p);
    free(line);
}

/* ---- end of stream (sse_parser_end) ---- */

/* Feeds all of 'data', then ends the stream; returns sse_parser_end's result. */
static int feed_end(struct sse_parser *p, const char *data, struct sink *s)
{
    assert_int_equal(sse_parser_feed(p, data, strlen(data), on_delta, s), 0);
    return sse_parser_end(p, on_delta, s);
}

/* A whole stream ends cleanly, and ending twice changes nothing. */
static void test_end_complete(void **state)
{
    struct sse_parser *p = sse_parser_create();
    struct sink s;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_int_equal(feed_end(p, stream, &s), 0);
    assert_int_equal(sse_parser_end(p, on_delta, &s), 0);
    check_complete(p, &s);
    sse_parser_destroy(p);
}

/* Cut before any finish_reason or [DONE]: interrupted, however much text came. */
static void test_end_cut(void **state)
{
    const char *fin =
        strstr(stream, "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},");
    char *head;
    struct sse_parser *p = sse_parser_create();
    struct sink s;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_non_null(fin);
    head = xstrndup(stream, (size_t)(fin - stream));
    assert_int_equal(feed_end(p, head, &s), -1);
    assert_string_equal(s.text, full_text); /* what came was delivered */
    free(head);
    sse_parser_destroy(p);
}

/* Cut in the middle of a data line: the fragment is malformed, not an answer. */
static void test_end_cut_mid_line(void **state)
{
    const char *fin = strstr(stream, "\"finish_reason\":\"stop\"");
    char *head;
    struct sse_parser *p = sse_parser_create();
    struct sink s;

    (void)state;
    memset(&s, 0, sizeof(s));
    head = xstrndup(stream, (size_t)(fin - stream));
    assert_int_equal(feed_end(p, head, &s), -1);
    free(head);
    sse_parser_destroy(p);
}

/* A finish_reason without [DONE] is a complete answer (some servers omit [DONE]). */
static void test_end_finish_without_done(void **state)
{
    const char *done = strstr(stream, "data: [DONE]");
    char *head = xstrndup(stream, (size_t)(done - stream));
    struct sse_parser *p = sse_parser_create();
    struct sink s;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_int_equal(feed_end(p, head, &s), 0);
    assert_string_equal(sse_parser_finish(p), "stop");
    free(head);
    sse_parser_destroy(p);
}

/* The last line without a newline still counts: its usage is not lost. */
static void test_end_last_line_without_newline(void **state)
{
    const char *done = strstr(stream, "\n\ndata: [DONE]");
    char *head = xstrndup(stream, (size_t)(done - stream)); /* ends with the usage line */
    struct sse_parser *p = sse_parser_create();
    struct sink s;
    struct usage u;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_int_equal(sse_parser_feed(p, head, strlen(head), on_delta, &s), 0);
    sse_parser_usage(p, &u);
    assert_int_equal(u.prompt_tokens, 0); /* not yet: the line has no newline */
    assert_int_equal(sse_parser_end(p, on_delta, &s), 0);
    sse_parser_usage(p, &u);
    assert_int_equal(u.prompt_tokens, 11);
    assert_int_equal(u.completion_tokens, 7);
    free(head);

    /* "data: [DONE]" without its newline ends a stream too. */
    sse_parser_destroy(p);
    p = sse_parser_create();
    memset(&s, 0, sizeof(s));
    assert_int_equal(feed_end(p,
                              "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}"
                              "\n\ndata: [DONE]",
                              &s),
                     0);
    assert_true(sse_parser_done(p));
    sse_parser_destroy(p);
}

/* A JSON body (an upstream that ignored stream:true), an empty body, or an in-band error. */
static void test_end_not_a_stream(void **state)
{
    struct sse_parser *p = sse_parser_create();
    struct sink s;

    (void)state;
    memset(&s, 0, sizeof(s));
    assert_int_equal(feed_end(p,
                              "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"x\"},"
                              "\"finish_reason\":\"stop\"}]}",
                              &s),
                     -1);
    assert_int_equal(s.len, 0);
    sse_parser_destroy(p);
    p = sse_parser_create();
    assert_int_equal(sse_parser_end(p, on_delta, &s), -1);
    sse_parser_destroy(p);
    p = sse_parser_create();
    assert_int_equal(feed_end(p, "data: {\"error\":{\"message\":\"boom\"}}\n\n", &s), 0);
    assert_string_equal(sse_parser_error(p), "boom");
    sse_parser_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_piece),
        cmocka_unit_test(test_before_done),
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_random_splits),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_no_callback),
        cmocka_unit_test(test_empty_parser),
        cmocka_unit_test(test_comments_and_events_only),
        cmocka_unit_test(test_inband_error),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_invalid_json_split),
        cmocka_unit_test(test_choice_index),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_huge_line),
        cmocka_unit_test(test_long_delta),
        cmocka_unit_test(test_end_complete),
        cmocka_unit_test(test_end_cut),
        cmocka_unit_test(test_end_cut_mid_line),
        cmocka_unit_test(test_end_finish_without_done),
        cmocka_unit_test(test_end_last_line_without_newline),
        cmocka_unit_test(test_end_not_a_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
