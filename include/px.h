/* px.h: status codes, the error record that carries them to the HTTP edge, and abort-on-OOM
 * allocation helpers. Every module includes this. */
#ifndef PX_H
#define PX_H

#include <stddef.h>

/* A function that can fail returns PX_OK or one of these negative codes, with details in a
 * caller-supplied struct px_error. http_send_error() maps them to HTTP statuses. */
enum px_status {
    PX_OK = 0,
    PX_EINVAL = -1,      /* 400 invalid_request_error */
    PX_EAUTH = -2,       /* 401 invalid_api_key */
    PX_ENOTFOUND = -3,   /* 404 */
    PX_EBUSY = -4,       /* 503 overloaded, with Retry-After */
    PX_EUPSTREAM = -5,   /* 502 upstream unreachable or broken */
    PX_ETIMEDOUT = -6,   /* 504 upstream timed out */
    PX_EINTERNAL = -7,   /* 500 */
    PX_ETOOBIG = -8,     /* 413 */
    PX_EMETHOD = -9,     /* 405 */
    PX_EHTTP = -10,      /* the upstream answered with an error status: see px_error.http_status */
    PX_ECANCELLED = -11, /* the client went away or the server is shutting down */
    PX_ELIMIT = -12,     /* 429: a tenant's rate or token limit */
    PX_EFORBIDDEN = -13  /* 403: authenticated, but this model or approach is not allowed */
};

/* Details of a failure. 'message' is safe to show a client (it never holds a key). */
struct px_error {
    int code;           /* enum px_status */
    int http_status;    /* for PX_EHTTP: the upstream's status; otherwise 0 (derived from code) */
    char param[64];     /* the offending request field, or "" */
    char type[48];      /* OpenAI error type override, or "" for the default of 'code' */
    char err_code[48];  /* OpenAI error code override, or "" */
    char message[1024]; /* human-readable, single line */
    int retry_after;    /* seconds for a Retry-After header, or 0 */
    char allow[32];     /* PX_EMETHOD: the Allow header ("GET, HEAD"), or "" */
};

/* Fills 'err' (if not NULL) and returns 'code'. 'param' may be NULL. printf-style message. */
int px_fail(struct px_error *err, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like px_fail for an upstream error status: keeps the upstream's status and message. */
int px_fail_http(struct px_error *err, int http_status, const char *message);

/* HTTP status for an error record (400, 401, ..., or the upstream's). */
int px_http_status(const struct px_error *err);

/* Allocation that aborts the process on out-of-memory, so callers never check. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Writes prefix + 'words' x 16 hex digits into buf: a unique id (request ids, completion ids).
 * Not a secret. Thread-safe. */
void px_random_id(char *buf, size_t len, const char *prefix, int words);

/* A token count reported by an upstream, made safe: negative or NaN become 0; values above
 * PX_COUNT_MAX (infinity included) are capped there, so that a buggy upstream cannot slip
 * under a token budget by reporting an absurd count. */
#define PX_COUNT_MAX 1e12
long px_count(double d);
/* d as a long within [lo, hi] (NaN: lo): a JSON number from outside, cast without UB. */
long px_clamp_long(double d, long lo, long hi);

/* Monotonic clock in milliseconds / microseconds. Thread-safe. */
long long px_now_ms(void);
long long px_now_us(void);

#define PX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
