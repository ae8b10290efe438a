/* h1.c: the lean HTTP/1.1 client for approach calls and whole-answer relays (see h1.h). One pool
 * per I/O loop, used only from that loop's thread. A connection is either active (it carries one
 * attempt of one transfer) or idle (in the pool's LIFO list, still in the epoll set for EPOLLIN, so
 * an upstream that closes it is noticed at once and it is dropped). An idle connection that turns
 * out dead when reused (the close crossed our request) is replaced by a fresh one, once, before
 * anything of a response arrived: what libcurl does. */
#define _GNU_SOURCE /* strcasestr, memmem */
#include "h1.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "px.h"

/* ---- the response parser -------------------------------------------------------------------- */

enum {
    S_STATUS,
    S_HEAD1XX, /* the headers of a 1xx response, skipped */
    S_HEADERS,
    S_BODY_LEN,
    S_BODY_CLOSE,
    S_CHUNK_SIZE,
    S_CHUNK_DATA,
    S_CHUNK_CRLF,
    S_TRAILERS,
    S_DONE
};

#define H1_MAX_LINE (16u << 10) /* one status, header, chunk-size or trailer line */
#define H1_MAX_HEAD (64u << 10) /* every line before the body, and the trailers */

void h1_parser_init(struct h1_parser *p)
{
    struct buf line = p->line;

    memset(p, 0, sizeof(*p));
    p->line = line;
    buf_reset(&p->line);
    p->line.max = H1_MAX_LINE;
    p->state = S_STATUS;
}

void h1_parser_free(struct h1_parser *p)
{
    buf_free(&p->line);
}

bool h1_parser_empty(const struct h1_parser *p)
{
    return p->state == S_STATUS && p->line.len == 0 && p->head_bytes == 0;
}

static bool value_is(const char *line, size_t len, const char *name, const char **v, size_t *vl)
{
    size_t nl = strlen(name);

    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return false;
    *v = line + nl + 1;
    *vl = len - nl - 1;
    while (*vl && (**v == ' ' || **v == '\t'))
        (*v)++, (*vl)--;
    while (*vl && ((*v)[*vl - 1] == ' ' || (*v)[*vl - 1] == '\t'))
        (*vl)--;
    return true;
}

/* Whether the comma-separated list v holds the token tok (case-insensitive). */
static bool has_token(const char *v, size_t vl, const char *tok)
{
    size_t tl = strlen(tok);

    for (size_t i = 0; i < vl;) {
        while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < vl && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

/* One complete line (no CRLF). Returns H1_MORE, H1_DONE or H1_BAD. */
static int parse_line(struct h1_parser *p, const char *l, size_t n, h1_header_fn *on_header,
                      void *ud)
{
    const char *v;
    size_t vl;

    switch (p->state) {
    case S_STATUS: {
        if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)l[7]) ||
            l[8] != ' ' || !isdigit((unsigned char)l[9]) || !isdigit((unsigned char)l[10]) ||
            !isdigit((unsigned char)l[11]) || (n > 12 && l[12] != ' '))
            return H1_BAD;
        long status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
        if (status < 100)
            return H1_BAD;
        p->http10 = l[7] == '0';
        p->keep_alive = !p->http10;
        if (status < 200 && status != 101) {
            p->state = S_HEAD1XX;
            return H1_MORE;
        }
        if (status == 101) /* no upgrade was asked for */
            return H1_BAD;
        p->status = status;
        p->state = S_HEADERS;
        return H1_MORE;
    }
    case S_HEAD1XX:
        if (n == 0)
            p->state = S_STATUS;
        return H1_MORE;
    case S_HEADERS:
        if (n == 0)
            break; /* the end of the head: below */
        if (l[0] == ' ' || l[0] == '\t')
            return H1_MORE; /* an obsolete folded continuation: nothing we read */
        if (!memchr(l, ':', n))
            return H1_BAD;
        if (value_is(l, n, "content-length", &v, &vl)) {
            unsigned long long len = 0;

            if (vl == 0 || vl > 18)
                return H1_BAD;
            for (size_t i = 0; i < vl; i++) {
                if (!isdigit((unsigned char)v[i]))
                    return H1_BAD;
                len = len * 10 + (unsigned)(v[i] - '0');
            }
            if (p->has_len && p->left != len)
                return H1_BAD; /* two different lengths: smuggling territory */
            p->has_len = true;
            p->left = len;
        } else if (value_is(l, n, "transfer-encoding", &v, &vl)) {
            /* chunked framing when it is the last coding; other codings are passed as they
             * come, as libcurl does without CURLOPT_ACCEPT_ENCODING */
            p->te = true;
            p->chunked = vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0;
        } else if (value_is(l, n, "connection", &v, &vl)) {
            if (has_token(v, vl, "close"))
                p->keep_alive = false;
            else if (p->http10 && has_token(v, vl, "keep-alive"))
                p->keep_alive = true;
        } else if (value_is(l, n, "content-type", &v, &vl)) {
            snprintf(p->content_type, sizeof(p->content_type), "%.*s", (int)vl, v);
        } else if (value_is(l, n, "retry-after", &v, &vl)) {
            char tmp[64];
            bool digits = vl > 0 && vl < 10;

            for (size_t i = 0; i < vl && digits; i++)
                digits = isdigit((unsigned char)v[i]);
            snprintf(tmp, sizeof(tmp), "%.*s", (int)(vl < 63 ? vl : 63), v);
            if (digits) {
                p->retry_after_s = strtol(tmp, NULL, 10);
            } else {
                time_t t = curl_getdate(tmp, NULL), now = time(NULL);

                p->retry_after_s = t > now ? (long)(t - now) : 0;
            }
        }
        if (on_header)
            on_header(ud, l, n);
        return H1_MORE;
    case S_CHUNK_SIZE: {
        unsigned long long size = 0;
        size_t i = 0;

        while (i < n && isxdigit((unsigned char)l[i])) {
            if (size >> 56)
                return H1_BAD;
            size =
                size * 16 +
                (unsigned)(isdigit((unsigned char)l[i]) ? l[i] - '0' : (tolower(l[i]) - 'a' + 10));
            i++;
        }
        if (i == 0 || (i < n && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
            return H1_BAD;
        p->left = size;
        p->state = size ? S_CHUNK_DATA : S_TRAILERS;
        return H1_MORE;
    }
    case S_CHUNK_CRLF:
        if (n != 0)
            return H1_BAD;
        p->state = S_CHUNK_SIZE;
        return H1_MORE;
    case S_TRAILERS:
        if (n != 0)
            return H1_MORE;
        p->state = S_DONE;
        return H1_DONE;
    default:
        return H1_BAD;
    }
    /* The blank line after the final response's headers: how its body is framed (RFC 9112
     * 6.3). Transfer-Encoding overrides Content-Length; a response with both, or with a last
     * coding that is not chunked (its body then ends with the connection), leaves a connection
     * nobody should trust with another request. */
    if (p->te && (p->has_len || !p->chunked)) {
        p->has_len = false;
        p->keep_alive = false;
    }
    if (p->status == 204 || p->status == 304) {
        p->state = S_DONE;
        return H1_DONE;
    }
    if (p->chunked) {
        p->state = S_CHUNK_SIZE;
    } else if (p->has_len) {
        if (p->left == 0) {
            p->state = S_DONE;
            return H1_DONE;
        }
        p->state = S_BODY_LEN;
    } else {
        p->keep_alive = false;
        p->state = S_BODY_CLOSE;
    }
    return H1_MORE;
}

static bool in_line_state(int s)
{
    return s == S_STATUS || s == S_HEAD1XX || s == S_HEADERS || s == S_CHUNK_SIZE ||
           s == S_CHUNK_CRLF || s == S_TRAILERS;
}

int h1_parser_feed(struct h1_parser *p, const char *data, size_t n, size_t *used,
                   h1_header_fn *on_header, h1_body_fn *on_body, void *ud)
{
    size_t i = 0;
    int rc = H1_MORE;

    while (i < n && rc == H1_MORE) {
        if (in_line_state(p->state)) {
            const char *nl = memchr(data + i, '\n', n - i);
            size_t take = nl ? (size_t)(nl - (data + i)) + 1 : n - i;
            bool head = p->state != S_CHUNK_SIZE && p->state != S_CHUNK_CRLF;

            if ((head && (p->head_bytes += take) > H1_MAX_HEAD) || p->line.len + take > H1_MAX_LINE)
                return H1_BAD;
            if (!nl || p->line.len) {
                if (buf_append(&p->line, data + i, take) < 0)
                    return H1_BAD;
                i += take;
                if (!nl)
                    break;
                const char *l = p->line.data;
                size_t ll = p->line.len - 1;
                if (ll && l[ll - 1] == '\r')
                    ll--;
                rc = parse_line(p, l, ll, on_header, ud);
                p->line.len = 0;
            } else {
                size_t ll = take - 1;
                if (ll && data[i + ll - 1] == '\r')
                    ll--;
                rc = parse_line(p, data + i, ll, on_header, ud);
                i += take;
            }
            continue;
        }
        size_t avail = n - i;
        if (p->state == S_BODY_LEN || p->state == S_CHUNK_DATA) {
            size_t k = avail < p->left ? avail : (size_t)p->left;

            if (k && on_body && !on_body(ud, data + i, k))
                return H1_ABORT;
            p->left -= k;
            p->got += k;
            i += k;
            if (p->left == 0) {
                if (p->state == S_BODY_LEN) {
                    p->state = S_DONE;
                    rc = H1_DONE;
                } else {
                    p->state = S_CHUNK_CRLF;
                }
            }
        } else if (p->state == S_BODY_CLOSE) {
            if (on_body && !on_body(ud, data + i, avail))
                return H1_ABORT;
            p->got += avail;
            i = n;
        } else {
            rc = p->state == S_DONE ? H1_DONE : H1_BAD;
        }
    }
    if (rc == H1_BAD)
        return H1_BAD;
    *used = i;
    return rc;
}

int h1_parser_eof(struct h1_parser *p)
{
    if (p->state == S_BODY_CLOSE) {
        p->state = S_DONE;
        return H1_DONE;
    }
    return p->state == S_DONE ? H1_DONE : H1_BAD;
}

/* ---- the client ----------------------------------------------------------------------------- */

#define H1_RBUF          (64u << 10)
#define H1_IDLE_KEEP     256         /* idle connections kept however long a lull lasts */
#define H1_IDLE_SPARE_US 5000000LL   /* above that, an idle connection unused this long closes */
#define H1_IDLE_MAX_US   118000000LL /* any idle connection this old closes (libcurl's default) */
#define H1_IDLE_LOOK     64          /* idle connections looked at for one to reuse */

struct h1_conn {
    int fd;
    struct h1_pool *pool;
    struct xfer *x;              /* the attempt it carries; NULL when idle */
    struct h1_conn *prev, *next; /* idle list, active list or failed list */
    struct sockaddr_storage addr;
    socklen_t alen;
    unsigned uses;       /* responses completed on it */
    bool connecting;     /* a non-blocking connect in progress */
    bool out_registered; /* its epoll registration includes EPOLLOUT */
    bool registered;     /* in the epoll set */
    CURLcode failed;     /* on the failed list: the attempt's result */
    long long since_us;  /* idle since, or the attempt's start */
    long long deadline_us, connect_deadline_us;
    char *head; /* the request head (malloc'd) until it is sent */
    size_t head_len, sent;
    char peer[64]; /* "IP port N" for error messages */
    struct h1_parser parser;
};

struct h1_pool {
    int epfd;
    uint32_t tag;
    struct h1_ops ops;
    struct h1_conn **by_fd;
    size_t nby_fd;
    struct h1_conn *idle, *idle_tail; /* head: most recently used */
    size_t nidle;
    struct h1_conn *active;
    struct h1_conn *failed;
    char *rbuf;
};

struct h1_pool *h1_pool_create(int epfd, uint32_t tag, const struct h1_ops *ops)
{
    struct h1_pool *p = xcalloc(1, sizeof(*p));

    p->epfd = epfd;
    p->tag = tag;
    p->ops = *ops;
    p->rbuf = xmalloc(H1_RBUF);
    return p;
}

/* Closes c's socket (it leaves the epoll set with it); its table entry goes first. */
static void close_fd(struct h1_pool *p, struct h1_conn *c)
{
    if (c->fd < 0)
        return;
    if ((size_t)c->fd < p->nby_fd && p->by_fd[c->fd] == c)
        p->by_fd[c->fd] = NULL;
    close(c->fd);
    c->fd = -1;
}

static void conn_free(struct h1_pool *p, struct h1_conn *c)
{
    close_fd(p, c);
    free(c->head);
    h1_parser_free(&c->parser);
    free(c);
}

void h1_pool_free(struct h1_pool *p)
{
    if (!p)
        return;
    for (struct h1_conn *c = p->idle, *n; c; c = n) {
        n = c->next;
        conn_free(p, c);
    }
    /* Transfers are all finished before this; an attempt still here is only closed. */
    struct h1_conn *lists[2] = {p->active, p->failed};
    for (int i = 0; i < 2; i++) {
        for (struct h1_conn *c = lists[i], *n; c; c = n) {
            n = c->next;
            if (c->x)
                c->x->h1 = NULL;
            conn_free(p, c);
        }
    }
    free(p->by_fd);
    free(p->rbuf);
    free(p);
}

size_t h1_idle_count(const struct h1_pool *p)
{
    return p->nidle;
}

bool h1_pending(const struct h1_pool *p)
{
    return p->failed != NULL;
}

/* Parses http://host[:port]/path into an address and the authority as written. */
static bool parse_url(const char *url, struct sockaddr_storage *ss, socklen_t *alen,
                      const char **auth, size_t *auth_len, const char **path)
{
    char host[64];
    const char *h, *e, *port = NULL;
    unsigned long pn = 80;

    if (strncasecmp(url, "http://", 7) != 0)
        return false;
    h = url + 7;
    e = h + strcspn(h, "/?#");
    if (memchr(h, '@', (size_t)(e - h)))
        return false;
    *auth = h;
    *auth_len = (size_t)(e - h);
    *path = *e == '/' ? e : NULL;
    if (!*path)
        return false;
    memset(ss, 0, sizeof(*ss));
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(e - h));

        if (!rb || (size_t)(rb - h - 1) >= sizeof(host))
            return false;
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
        if (rb + 1 < e) {
            if (rb[1] != ':')
                return false;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(h, ':', (size_t)(e - h));
        const char *he = colon ? colon : e;

        if ((size_t)(he - h) >= sizeof(host) || he == h)
            return false;
        memcpy(host, h, (size_t)(he - h));
        host[he - h] = '\0';
        if (colon)
            port = colon + 1;
    }
    if (port) {
        char *end;

        if (port == e || !isdigit((unsigned char)*port))
            return false;
        pn = strtoul(port, &end, 10);
        if (end != e || pn == 0 || pn > 65535)
            return false;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        /* inet_pton takes only the dotted quad; "127.1" and the like go to libcurl */
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)pn);
        *alen = sizeof(*s4);
    } else if (*h == '[' && inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)pn);
        *alen = sizeof(*s6);
    } else {
        return false;
    }
    return true;
}

bool h1_url_ok(const char *url)
{
    struct sockaddr_storage ss;
    socklen_t alen;
    const char *auth, *path;
    size_t al;

    return parse_url(url, &ss, &alen, &auth, &al, &path);
}

static void peer_text(struct h1_conn *c)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (c->addr.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&c->addr;

        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&c->addr;

        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s port %u", ip, port);
}

static void by_fd_set(struct h1_pool *p, int fd, struct h1_conn *c)
{
    if ((size_t)fd >= p->nby_fd) {
        size_t n = p->nby_fd ? p->nby_fd : 256;

        while (n <= (size_t)fd)
            n *= 2;
        p->by_fd = xrealloc(p->by_fd, n * sizeof(*p->by_fd));
        memset(p->by_fd + p->nby_fd, 0, (n - p->nby_fd) * sizeof(*p->by_fd));
        p->nby_fd = n;
    }
    p->by_fd[fd] = c;
}

static void list_push(struct h1_conn **head, struct h1_conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void list_unlink(struct h1_conn **head, struct h1_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static void idle_unlink(struct h1_pool *p, struct h1_conn *c)
{
    if (p->idle_tail == c)
        p->idle_tail = c->prev;
    list_unlink(&p->idle, c);
    p->nidle--;
}

/* Registers c for EPOLLIN, plus EPOLLOUT while it connects or has bytes to send. */
static bool want(struct h1_pool *p, struct h1_conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0u),
                             .data.u64 = ((uint64_t)p->tag << 32) | (uint32_t)c->fd};

    if (c->registered && c->out_registered == out)
        return true;
    if (epoll_ctl(p->epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) != 0)
        return false;
    c->registered = true;
    c->out_registered = out;
    return true;
}

/* Ends c's attempt with result rc: c goes back to the idle list when reusable, else is closed;
 * then the owner hears of it. */
static void end_attempt(struct h1_pool *p, struct h1_conn *c, CURLcode rc, bool reuse)
{
    struct xfer *x = c->x;

    list_unlink(&p->active, c);
    c->x = NULL;
    x->h1 = NULL;
    if (c->parser.status) {
        x->http_status = c->parser.status;
        snprintf(x->content_type, sizeof(x->content_type), "%s",
                 c->parser.content_type[0] ? c->parser.content_type : "application/json");
    }
    x->retry_after_s = c->parser.retry_after_s;
    free(c->head);
    c->head = NULL;
    if (reuse && c->sent == c->head_len + x->body_len && want(p, c, false)) {
        c->uses++;
        c->since_us = px_now_us();
        h1_parser_free(&c->parser); /* an idle connection holds no line buffer */
        h1_parser_init(&c->parser);
        list_push(&p->idle, c);
        if (!p->idle_tail)
            p->idle_tail = c;
        p->nidle++;
    } else {
        conn_free(p, c);
    }
    p->ops.done(p->ops.ctx, x, rc);
}

/* A failure inside h1_start: reported by the next h1_tick, not from inside the caller. */
static void fail_later(struct h1_pool *p, struct h1_conn *c, CURLcode rc)
{
    list_unlink(&p->active, c);
    close_fd(p, c);
    c->failed = rc;
    list_push(&p->failed, c);
}

static bool h1_body_cb(void *ud, const char *data, size_t n)
{
    struct h1_conn *c = ud;
    struct xfer *x = c->x;

    if (x->http_status == 0) {
        x->http_status = c->parser.status;
        snprintf(x->content_type, sizeof(x->content_type), "%s",
                 c->parser.content_type[0] ? c->parser.content_type : "application/json");
    }
    return c->pool->ops.body(x, data, n);
}

static void h1_header_cb(void *ud, const char *line, size_t len)
{
    struct h1_conn *c = ud;

    c->pool->ops.header(c->x, line, len);
}

static int open_socket(struct h1_pool *p, struct h1_conn *c)
{
    int one = 1;

    c->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return errno;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    by_fd_set(p, c->fd, c);
    if (connect(c->fd, (struct sockaddr *)&c->addr, c->alen) == 0)
        return 0;
    if (errno == EINPROGRESS) {
        c->connecting = true;
        return 0;
    }
    return errno;
}

static bool try_send(struct h1_pool *p, struct h1_conn *c, bool in_start);

/* Ends c's attempt with rc: later (h1_tick) when inside h1_start, else now. */
static void fail_attempt(struct h1_pool *p, struct h1_conn *c, CURLcode rc, bool in_start)
{
    if (in_start)
        fail_later(p, c, rc);
    else
        end_attempt(p, c, rc, false);
}

static struct h1_conn *conn_new(struct h1_pool *p, const struct sockaddr_storage *ss,
                                socklen_t alen)
{
    struct h1_conn *c = xcalloc(1, sizeof(*c));

    c->fd = -1;
    c->pool = p;
    c->addr = *ss;
    c->alen = alen;
    peer_text(c);
    h1_parser_init(&c->parser);
    return c;
}

/* Opens c's socket and sends the request (or waits for the connect to complete). */
static void connect_and_send(struct h1_pool *p, struct h1_conn *c, bool in_start)
{
    int err = open_socket(p, c);

    if (err) {
        snprintf(c->x->errbuf, sizeof(c->x->errbuf), "Failed to connect to %s after 0 ms: %s",
                 c->peer, strerror(err));
        fail_attempt(p, c, CURLE_COULDNT_CONNECT, in_start);
    } else if (!c->connecting) {
        (void)try_send(p, c, in_start);
    } else if (!want(p, c, true)) {
        snprintf(c->x->errbuf, sizeof(c->x->errbuf), "epoll_ctl: %s", strerror(errno));
        fail_attempt(p, c, CURLE_COULDNT_CONNECT, in_start);
    }
}

/* Moves c's attempt to a fresh connection: c was idle, reused, and found closed by the upstream
 * before any byte of the response. */
static void reconnect(struct h1_pool *p, struct h1_conn *c, bool in_start)
{
    struct h1_conn *n = conn_new(p, &c->addr, c->alen);

    n->x = c->x;
    n->since_us = c->since_us;
    n->deadline_us = c->deadline_us;
    n->connect_deadline_us = px_now_us() + (c->connect_deadline_us - c->since_us);
    n->head = c->head;
    n->head_len = c->head_len;
    c->head = NULL;
    c->x = NULL;
    list_unlink(&p->active, c);
    conn_free(p, c);
    n->x->h1 = n;
    list_push(&p->active, n);
    connect_and_send(p, n, in_start);
}

/* Sends what is left of the request; registers for EPOLLOUT while something is left. Returns
 * whether c still carries the attempt (false: it ended, or moved to a fresh connection). */
static bool try_send(struct h1_pool *p, struct h1_conn *c, bool in_start)
{
    struct xfer *x = c->x;
    size_t total = c->head_len + x->body_len;

    while (c->sent < total) {
        struct iovec iov[2];
        int n = 0;

        if (c->sent < c->head_len)
            iov[n++] = (struct iovec){c->head + c->sent, c->head_len - c->sent};
        size_t boff = c->sent > c->head_len ? c->sent - c->head_len : 0;
        if (x->body_len > boff)
            iov[n++] = (struct iovec){x->body + boff, x->body_len - boff};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);

        if (w > 0) {
            c->sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        int err = w < 0 ? errno : EPIPE;
        if (c->uses > 0 && c->sent == 0 && h1_parser_empty(&c->parser)) {
            reconnect(p, c, in_start);
            return false;
        }
        snprintf(x->errbuf, sizeof(x->errbuf), "Send failure: %s", strerror(err));
        fail_attempt(p, c, CURLE_SEND_ERROR, in_start);
        return false;
    }
    if (!want(p, c, c->sent < total)) {
        snprintf(x->errbuf, sizeof(x->errbuf), "epoll_ctl: %s", strerror(errno));
        fail_attempt(p, c, CURLE_SEND_ERROR, in_start);
        return false;
    }
    return true;
}

/* Builds the request head as libcurl would: Host and Accept unless the caller set them, the
 * caller's headers ("Name:" with nothing after the colon removes a header, as in libcurl), and
 * Content-Length for a body. */
static char *build_head(const struct xfer *x, const char *auth, size_t auth_len, const char *path,
                        const struct curl_slist *headers, size_t *len)
{
    struct buf b;
    bool host = false, accept = false;

    buf_init(&b, 0);
    buf_printf(&b, "%s %s HTTP/1.1\r\n", x->body ? "POST" : "GET", path);
    for (const struct curl_slist *h = headers; h; h = h->next) {
        host = host || strncasecmp(h->data, "host:", 5) == 0;
        accept = accept || strncasecmp(h->data, "accept:", 7) == 0;
    }
    if (!host)
        buf_printf(&b, "Host: %.*s\r\n", (int)auth_len, auth);
    if (!accept)
        buf_puts(&b, "Accept: */*\r\n");
    for (const struct curl_slist *h = headers; h; h = h->next) {
        const char *colon = strchr(h->data, ':');
        const char *v = colon ? colon + 1 : NULL;

        if (!colon) {
            size_t hl = strlen(h->data);

            if (hl > 1 && h->data[hl - 1] == ';') /* "Name;": the header with no value */
                buf_printf(&b, "%.*s:\r\n", (int)(hl - 1), h->data);
            continue;
        }
        while (*v == ' ' || *v == '\t')
            v++;
        if (!*v)
            continue;
        if (x->body && strncasecmp(h->data, "content-length:", 15) == 0)
            continue;
        buf_printf(&b, "%s\r\n", h->data);
    }
    if (x->body)
        buf_printf(&b, "Content-Length: %zu\r\n", x->body_len);
    buf_puts(&b, "\r\n");
    return buf_take(&b, len);
}

bool h1_start(struct h1_pool *p, struct xfer *x, const struct curl_slist *headers, long timeout_ms,
              long connect_timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t alen;
    const char *auth, *path;
    size_t auth_len;
    struct h1_conn *c = NULL;
    long long now = px_now_us();

    if (!parse_url(x->url, &ss, &alen, &auth, &auth_len, &path))
        return false;
    x->retry_after_s = 0;
    /* The most recently used idle connection to this address; the look is bounded (several
     * upstreams, thousands idle): past it, a fresh connection. */
    unsigned looked = 0;
    for (struct h1_conn *i = p->idle; i && looked < H1_IDLE_LOOK; i = i->next, looked++) {
        if (i->alen == alen && memcmp(&i->addr, &ss, alen) == 0) {
            c = i;
            idle_unlink(p, c);
            break;
        }
    }
    bool fresh = !c;
    if (fresh)
        c = conn_new(p, &ss, alen);
    c->x = x;
    x->h1 = c;
    c->sent = 0;
    c->since_us = now;
    c->deadline_us = now + (long long)timeout_ms * 1000;
    c->connect_deadline_us = now + (long long)connect_timeout_ms * 1000;
    c->head = build_head(x, auth, auth_len, path, headers, &c->head_len);
    list_push(&p->active, c);
    if (fresh)
        connect_and_send(p, c, true);
    else
        (void)try_send(p, c, true);
    return true;
}

static void on_readable(struct h1_pool *p, struct h1_conn *c)
{
    struct xfer *x = c->x;
    ssize_t n = recv(c->fd, p->rbuf, H1_RBUF, 0);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    bool nothing = h1_parser_empty(&c->parser);
    if (n <= 0 && nothing && c->uses > 0) { /* the upstream closed it as we reused it */
        reconnect(p, c, false);
        return;
    }
    if (n < 0) {
        int err = errno;

        snprintf(x->errbuf, sizeof(x->errbuf), "Recv failure: %s", strerror(err));
        end_attempt(p, c, CURLE_RECV_ERROR, false);
        return;
    }
    if (n == 0) {
        if (nothing) {
            snprintf(x->errbuf, sizeof(x->errbuf), "Empty reply from server");
            end_attempt(p, c, CURLE_GOT_NOTHING, false);
        } else if (h1_parser_eof(&c->parser) == H1_DONE) {
            end_attempt(p, c, CURLE_OK, false);
        } else {
            snprintf(x->errbuf, sizeof(x->errbuf),
                     c->parser.has_len ? "transfer closed with %llu bytes remaining to read"
                                       : "transfer closed with outstanding read data remaining",
                     c->parser.left);
            end_attempt(p, c, CURLE_PARTIAL_FILE, false);
        }
        return;
    }
    size_t used = 0;
    int rc = h1_parser_feed(&c->parser, p->rbuf, (size_t)n, &used, h1_header_cb, h1_body_cb, c);

    if (rc == H1_DONE) {
        end_attempt(p, c, CURLE_OK, c->parser.keep_alive && used == (size_t)n);
    } else if (rc == H1_BAD) {
        snprintf(x->errbuf, sizeof(x->errbuf),
                 "Weird server reply (not a valid HTTP/1.1 response)");
        end_attempt(p, c, CURLE_WEIRD_SERVER_REPLY, false);
    } else if (rc == H1_ABORT) {
        snprintf(x->errbuf, sizeof(x->errbuf), "Failure writing output to destination");
        end_attempt(p, c, CURLE_WRITE_ERROR, false);
    }
}

void h1_event(struct h1_pool *p, int fd, uint32_t events)
{
    struct h1_conn *c = fd >= 0 && (size_t)fd < p->nby_fd ? p->by_fd[fd] : NULL;

    if (!c)
        return;  /* closed earlier in this turn */
    if (!c->x) { /* idle: the upstream closed it (or sent what nobody asked for) */
        ssize_t n = recv(fd, p->rbuf, H1_RBUF, MSG_DONTWAIT);

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        idle_unlink(p, c);
        conn_free(p, c);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t el = sizeof(err);

        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
            err = errno;
        if (err) {
            snprintf(c->x->errbuf, sizeof(c->x->errbuf),
                     "Failed to connect to %s after %lld ms: %s", c->peer,
                     (px_now_us() - c->since_us) / 1000, strerror(err));
            end_attempt(p, c, CURLE_COULDNT_CONNECT, false);
            return;
        }
        c->connecting = false;
        (void)try_send(p, c, false);
        return;
    }
    if ((events & EPOLLOUT) && c->sent < c->head_len + c->x->body_len && !try_send(p, c, false))
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(p, c);
}

size_t h1_tick(struct h1_pool *p, long long now)
{
    size_t ended = 0;

    while (p->failed) {
        struct h1_conn *c = p->failed;
        struct xfer *x = c->x;
        CURLcode rc = c->failed;

        list_unlink(&p->failed, c);
        x->h1 = NULL;
        c->x = NULL;
        conn_free(p, c);
        p->ops.done(p->ops.ctx, x, rc);
        ended++;
    }
    for (struct h1_conn *c = p->active, *next; c; c = next) {
        next = c->next;
        if (c->connecting && now >= c->connect_deadline_us) {
            snprintf(c->x->errbuf, sizeof(c->x->errbuf),
                     "Connection timed out after %lld milliseconds", (now - c->since_us) / 1000);
            end_attempt(p, c, CURLE_OPERATION_TIMEDOUT, false);
            ended++;
        } else if (now >= c->deadline_us) {
            snprintf(c->x->errbuf, sizeof(c->x->errbuf),
                     "Operation timed out after %lld milliseconds with %llu bytes received",
                     (now - c->since_us) / 1000, c->parser.got);
            end_attempt(p, c, CURLE_OPERATION_TIMEDOUT, false);
            ended++;
        }
    }
    while (p->idle_tail) {
        struct h1_conn *c = p->idle_tail;
        long long idle = now - c->since_us;

        if (idle < H1_IDLE_MAX_US && (p->nidle <= H1_IDLE_KEEP || idle < H1_IDLE_SPARE_US))
            break;
        idle_unlink(p, c);
        conn_free(p, c);
    }
    return ended;
}

void h1_abort(struct h1_pool *p, struct xfer *x)
{
    struct h1_conn *c = x->h1;

    if (!c)
        return;
    x->h1 = NULL;
    list_unlink(c->failed != CURLE_OK ? &p->failed : &p->active, c);
    c->x = NULL;
    conn_free(p, c);
}
