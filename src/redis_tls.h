/* redis_tls.h: rediss:// for a hiredis without TLS (Debian 12's 0.14). A TLS connection to
 * Redis is opened and verified here (OpenSSL), and hiredis talks plain RESP over one end of a
 * socketpair whose other end a small bridge thread relays through the TLS connection. Closing
 * hiredis's end (redisFree) ends the bridge; the server closing the TLS connection closes
 * hiredis's end (its next command fails, and the caller reconnects as for plain Redis). */
#ifndef REDIS_TLS_H
#define REDIS_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct redis_tls_opts {
    const char *ca;   /* CA file (PEM) to verify the server with; NULL: the system's store */
    const char *cert; /* client certificate (PEM chain) for mutual TLS, or NULL */
    const char *key;  /* its private key, or NULL (then cert holds it) */
    bool insecure;    /* no verification at all (a warning at start) */
};

/* Builds the TLS context (certificates loaded now, so a bad file fails at start). 0, or -1
 * with why set. */
int redis_tls_init(const struct redis_tls_opts *o, char *why, size_t why_len);

/* Connects to host:port, does the handshake (SNI and the certificate checked against host —
 * an IP address is checked as one) within timeout_ms, and returns the fd hiredis should use
 * (redisConnectFd), or -1 with why set. */
int redis_tls_connect(const char *host, int port, int timeout_ms, char *why, size_t why_len);

/* Waits up to timeout_ms for every bridge to end (after their hiredis ends were closed) and
 * frees the context. */
void redis_tls_cleanup(int timeout_ms);

#endif
