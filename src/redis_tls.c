/* redis_tls.c: the TLS bridge of rediss:// (redis_tls.h).
 *
 * One bridge thread per connection (detached; counted so that cleanup can wait for them). The
 * TLS socket is non-blocking and the bridge polls it together with its end of the socketpair:
 * a TLS 1.3 session ticket, or half a record, must not park the bridge in SSL_read while
 * hiredis has a command waiting to go out. Only the bridge touches its SSL after the
 * handshake. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "redis_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "px.h"

#define BRIDGE_BUF       16384
#define WRITE_TIMEOUT_MS 5000 /* a server that takes no bytes for this long ends the bridge */

static SSL_CTX *ctx; /* set by redis_tls_init before any thread uses it; then read-only */

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_cv = PTHREAD_COND_INITIALIZER;
static int live; /* bridges running, guarded by live_mu */

struct bridge {
    SSL *ssl;
    int tcp;  /* non-blocking, under ssl */
    int side; /* our end of the socketpair */
};

static void ssl_why(const char *what, char *why, size_t why_len)
{
    unsigned long e = ERR_get_error();
    char buf[200];

    if (e) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(why, why_len, "%s: %s", what, buf);
    } else {
        snprintf(why, why_len, "%s", what);
    }
    ERR_clear_error();
}

int redis_tls_init(const struct redis_tls_opts *o, char *why, size_t why_len)
{
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        ssl_why("cannot create a TLS context", why, why_len);
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (o->ca ? SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(ctx) != 1) {
            ssl_why(o->ca ? "--redis-tls-ca: cannot load the CA file"
                          : "cannot load the system's CAs",
                    why, why_len);
            goto fail;
        }
    }
    if (o->cert || o->key) {
        const char *key = o->key ? o->key : o->cert;

        if (!o->cert) {
            snprintf(why, why_len, "--redis-tls-key needs --redis-tls-cert");
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
            ssl_why("--redis-tls-cert: cannot load the certificate", why, why_len);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            ssl_why("--redis-tls-key: cannot load the key, or it does not match the certificate",
                    why, why_len);
            goto fail;
        }
    }
    return 0;
fail:
    SSL_CTX_free(ctx);
    ctx = NULL;
    return -1;
}

/* poll one fd for 'events' until the deadline; >0 ready, 0 timed out, <0 error. */
static int wait_fd(int fd, short events, long long deadline_us)
{
    for (;;) {
        long long left = deadline_us - px_now_us();
        struct pollfd p = {.fd = fd, .events = events};
        int r;

        if (left <= 0)
            return 0;
        r = poll(&p, 1, (int)((left + 999) / 1000));
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

static int tcp_connect(const char *host, int port, long long deadline_us, char *why, size_t wl)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char ps[16];
    int fd = -1, rc;

    snprintf(ps, sizeof(ps), "%d", port);
    rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0) {
        snprintf(why, wl, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    snprintf(why, wl, "no address");
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int err = 0;
        socklen_t el = sizeof(err);

        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline_us) > 0 &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0)
            break;
        snprintf(why, wl, "connect: %s",
                 err                    ? strerror(err)
                 : errno == EINPROGRESS ? "timed out"
                                        : strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;

        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/* Writes all of buf to the TLS side (non-blocking socket). 0 or -1. */
static int ssl_write_all(struct bridge *b, const char *buf, size_t n)
{
    long long deadline = px_now_us() + WRITE_TIMEOUT_MS * 1000LL;

    while (n > 0) {
        int w = SSL_write(b->ssl, buf, n > (size_t)INT32_MAX ? INT32_MAX : (int)n);

        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        switch (SSL_get_error(b->ssl, w)) {
        case SSL_ERROR_WANT_WRITE:
            if (wait_fd(b->tcp, POLLOUT, deadline) <= 0)
                return -1;
            break;
        case SSL_ERROR_WANT_READ:
            if (wait_fd(b->tcp, POLLIN, deadline) <= 0)
                return -1;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

/* Writes all of buf to hiredis's side (blocking socketpair). 0 or -1. */
static int side_write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Everything the TLS side has decrypted so far goes to hiredis. 0 go on, -1 end. */
static int pump_in(struct bridge *b, char *buf)
{
    for (;;) {
        int r = SSL_read(b->ssl, buf, BRIDGE_BUF);

        if (r > 0) {
            if (side_write_all(b->side, buf, (size_t)r) < 0)
                return -1;
            continue;
        }
        switch (SSL_get_error(b->ssl, r)) {
        case SSL_ERROR_WANT_READ:
            return 0; /* nothing more for now (a session ticket, half a record) */
        case SSL_ERROR_WANT_WRITE: {
            struct pollfd p = {.fd = b->tcp, .events = POLLOUT};

            if (poll(&p, 1, WRITE_TIMEOUT_MS) <= 0)
                return -1;
            continue;
        }
        default:
            return -1; /* closed by the server, or broken */
        }
    }
}

static void *bridge_main(void *arg)
{
    struct bridge *b = arg;
    char *buf = xmalloc(BRIDGE_BUF);

    for (;;) {
        struct pollfd p[2] = {{.fd = b->tcp, .events = POLLIN | POLLRDHUP},
                              {.fd = b->side, .events = POLLIN}};

        if (SSL_pending(b->ssl) == 0 && poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if ((SSL_pending(b->ssl) > 0 || p[0].revents) && pump_in(b, buf) < 0)
            break;
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(b->side, buf, BRIDGE_BUF, 0);

            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0 || ssl_write_all(b, buf, (size_t)n) < 0)
                break; /* hiredis closed its end (redisFree), or the server is gone */
        }
    }
    free(buf);
    (void)SSL_shutdown(b->ssl); /* best effort close_notify; the socket is non-blocking */
    SSL_free(b->ssl);
    close(b->tcp);
    close(b->side); /* hiredis's next read sees the end */
    free(b);
    /* OpenSSL's per-thread state, released now rather than by its thread-exit destructor:
     * that one takes a global lock after the count below, so a process exiting meanwhile
     * could free that lock under it (TSan saw it in itest_redis test_tls). */
    OPENSSL_thread_stop();
    pthread_mutex_lock(&live_mu);
    if (--live == 0)
        pthread_cond_broadcast(&live_cv);
    pthread_mutex_unlock(&live_mu);
    return NULL;
}

int redis_tls_connect(const char *host, int port, int timeout_ms, char *why, size_t why_len)
{
    long long deadline = px_now_us() + timeout_ms * 1000LL;
    struct in6_addr a6;
    struct in_addr a4;
    bool is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
    int sv[2] = {-1, -1};
    int tcp;
    SSL *ssl = NULL;
    struct bridge *b;
    pthread_t t;
    pthread_attr_t attr;

    if (!ctx) {
        snprintf(why, why_len, "TLS is not initialised");
        return -1;
    }
    tcp = tcp_connect(host, port, deadline, why, why_len);
    if (tcp < 0)
        return -1;
    ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, tcp) != 1) {
        ssl_why("cannot create a TLS connection", why, why_len);
        goto fail;
    }
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, host);
    if (SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);

        if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1
                  : X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1) {
            ssl_why("cannot set the name to verify", why, why_len);
            goto fail;
        }
    }
    for (;;) {
        int r = SSL_connect(ssl);
        int w;

        if (r == 1)
            break;
        switch (SSL_get_error(ssl, r)) {
        case SSL_ERROR_WANT_READ:
            w = wait_fd(tcp, POLLIN, deadline);
            break;
        case SSL_ERROR_WANT_WRITE:
            w = wait_fd(tcp, POLLOUT, deadline);
            break;
        default: {
            long v = SSL_get_verify_result(ssl);

            if (v != X509_V_OK)
                snprintf(why, why_len, "TLS handshake: certificate not trusted: %s",
                         X509_verify_cert_error_string(v));
            else
                ssl_why("TLS handshake failed", why, why_len);
            goto fail;
        }
        }
        if (w <= 0) {
            snprintf(why, why_len, "TLS handshake timed out");
            goto fail;
        }
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(why, why_len, "socketpair: %s", strerror(errno));
        goto fail;
    }
    b = xmalloc(sizeof(*b));
    b->ssl = ssl;
    b->tcp = tcp;
    b->side = sv[1];
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 128u << 10);
    pthread_mutex_lock(&live_mu);
    live++;
    pthread_mutex_unlock(&live_mu);
    if (pthread_create(&t, &attr, bridge_main, b) != 0) {
        pthread_attr_destroy(&attr);
        pthread_mutex_lock(&live_mu);
        live--;
        pthread_mutex_unlock(&live_mu);
        free(b);
        snprintf(why, why_len, "cannot start a TLS bridge thread");
        close(sv[1]);
        sv[1] = -1;
        goto fail;
    }
    pthread_attr_destroy(&attr);
    return sv[0];
fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    SSL_free(ssl);
    close(tcp);
    return -1;
}

void redis_tls_cleanup(int timeout_ms)
{
    struct timespec ts;
    int left;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&live_mu);
    while (live > 0)
        if (pthread_cond_timedwait(&live_cv, &live_mu, &ts) != 0)
            break;
    left = live;
    pthread_mutex_unlock(&live_mu);
    if (left == 0) { /* a bridge still running would use it */
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
}
