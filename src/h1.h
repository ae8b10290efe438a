/* h1.h: a lean HTTP/1.1 client for approach calls (XFER_CALL) and non-streamed passthrough
 * relays to a plain http:// upstream at a literal IP address, the usual local inference server. It
 * runs on an I/O loop's epoll set next to libcurl and costs about 0.5 KiB per call and per idle
 * connection, where a libcurl 7.88 transfer costs ~11 KiB (its easy handle, connection and
 * buffers): at 9,000 concurrent calls that is the difference between ~100 MB and ~5 MB. Everything
 * else (https, names to resolve, proxies from the environment, h2c, streamed relays and stages)
 * stays on libcurl.
 *
 * The response parser is separate and pure (tests/unit/test_h1.c feeds it byte by byte). */
#ifndef H1_H
#define H1_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* ---- the response parser ---- */

enum { H1_MORE = 0, H1_DONE = 1, H1_BAD = -1, H1_ABORT = -2 };

struct h1_parser {
    int state;
    long status;             /* of the final (non-1xx) response, once its status line is in */
    bool te;                 /* a Transfer-Encoding header came */
    bool chunked;            /* Transfer-Encoding ends in chunked */
    bool has_len;            /* Content-Length given */
    bool keep_alive;         /* the connection may carry another request after this one */
    bool http10;             /* an HTTP/1.0 status line */
    unsigned long long left; /* body bytes (Content-Length) or chunk bytes still to come */
    unsigned long long got;  /* body bytes delivered */
    long retry_after_s;      /* Retry-After (seconds or an HTTP date), or 0 */
    char content_type[128];
    struct buf line; /* a line being assembled (status, header, chunk size, trailer) */
    size_t head_bytes;
};

/* Called for each header line of the final response (without CRLF). */
typedef void h1_header_fn(void *ud, const char *line, size_t len);
/* Called with body bytes (chunked framing removed); false stops with H1_ABORT. */
typedef bool h1_body_fn(void *ud, const char *data, size_t n);

void h1_parser_init(struct h1_parser *p);
void h1_parser_free(struct h1_parser *p);
/* Feeds n bytes. *used: how many were consumed (less than n only on H1_DONE: the rest belongs
 * to no request). Returns H1_MORE, H1_DONE, H1_BAD (not HTTP/1.x, bad framing, head too
 * large) or H1_ABORT (the body callback said stop). */
int h1_parser_feed(struct h1_parser *p, const char *data, size_t n, size_t *used,
                   h1_header_fn *on_header, h1_body_fn *on_body, void *ud);
/* The connection closed: H1_DONE when the body was framed by the close, else H1_BAD. */
int h1_parser_eof(struct h1_parser *p);
/* Nothing of a response has arrived yet. */
bool h1_parser_empty(const struct h1_parser *p);

/* ---- the client ---- */

struct xfer;
struct h1_pool;

struct h1_ops {
    void *ctx;
    /* The attempt ended (x->http_status, content_type, retry_after_s, errbuf set); x no longer
     * has a connection. Never called from inside h1_start. */
    void (*done)(void *ctx, struct xfer *x, CURLcode result);
    bool (*body)(struct xfer *x, const char *data, size_t n);
    void (*header)(struct xfer *x, const char *line, size_t len);
};

/* One per I/O loop; its sockets go in epfd, tagged tag << 32 | fd. */
struct h1_pool *h1_pool_create(int epfd, uint32_t tag, const struct h1_ops *ops);
void h1_pool_free(struct h1_pool *p);
/* Whether url can be served here: http://<IPv4 or [IPv6]>[:port]/path. */
bool h1_url_ok(const char *url);
/* Starts an attempt of x (x->url, x->body, headers); false, with nothing done, when x->url is
 * not one h1_url_ok takes. */
bool h1_start(struct h1_pool *p, struct xfer *x, const struct curl_slist *headers, long timeout_ms,
              long connect_timeout_ms);
/* An epoll event on one of the pool's sockets. */
void h1_event(struct h1_pool *p, int fd, uint32_t events);
/* Ends attempts failed inside h1_start and attempts past their deadlines, closes idle
 * connections the upstream closed or that are idle too long. Returns the number ended. */
size_t h1_tick(struct h1_pool *p, long long now_us);
/* Attempts ended inside h1_start that h1_tick has not reported yet. */
bool h1_pending(const struct h1_pool *p);
/* Drops x's attempt without a callback (cancelled): its connection is closed. */
void h1_abort(struct h1_pool *p, struct xfer *x);
size_t h1_idle_count(const struct h1_pool *p);

#endif
