/* px.c: error records, abort-on-OOM allocation and clocks. */
#include "px.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int px_fail(struct px_error *err, int code, const char *param, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return code;
    memset(err, 0, sizeof(*err));
    err->code = code;
    if (param)
        snprintf(err->param, sizeof(err->param), "%s", param);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

int px_fail_http(struct px_error *err, int http_status, const char *message)
{
    px_fail(err, PX_EHTTP, NULL, "%s", message ? message : "upstream error");
    if (err)
        err->http_status = http_status;
    return PX_EHTTP;
}

int px_http_status(const struct px_error *err)
{
    switch (err->code) {
    case PX_OK:
        return 200;
    case PX_EINVAL:
        return 400;
    case PX_EAUTH:
        return 401;
    case PX_EFORBIDDEN:
        return 403;
    case PX_ENOTFOUND:
        return 404;
    case PX_EMETHOD:
        return 405;
    case PX_ETOOBIG:
        return 413;
    case PX_ELIMIT:
        return 429;
    case PX_EBUSY:
    case PX_ECANCELLED:
        return 503;
    case PX_EUPSTREAM:
        return 502;
    case PX_ETIMEDOUT:
        return 504;
    case PX_EHTTP:
        return err->http_status >= 400 && err->http_status <= 599 ? err->http_status : 502;
    default:
        return 500;
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = xmalloc(len + 1);

    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

long long px_now_ms(void)
{
    return px_now_us() / 1000;
}

long long px_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Ids: unique, unpredictable enough for correlation (not secrets): splitmix64 over a seed
 * from the kernel and a process-wide counter. */
static uint64_t id_seed;
static uint64_t id_counter;

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void px_random_id(char *buf, size_t len, const char *prefix, int words)
{
    uint64_t seed = __atomic_load_n(&id_seed, __ATOMIC_RELAXED);
    size_t pos;

    if (seed == 0) {
        uint64_t s = 0;

        if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
            s = (uint64_t)px_now_us() ^ ((uint64_t)getpid() << 32);
        s |= 1;
        __atomic_compare_exchange_n(&id_seed, &seed, s, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        seed = __atomic_load_n(&id_seed, __ATOMIC_RELAXED);
    }
    pos = (size_t)snprintf(buf, len, "%s", prefix);
    for (int i = 0; i < words && pos + 16 < len; i++) {
        uint64_t n = __atomic_fetch_add(&id_counter, 1, __ATOMIC_RELAXED);

        pos += (size_t)snprintf(buf + pos, len - pos, "%016llx",
                                (unsigned long long)splitmix64(seed ^ splitmix64(n)));
    }
}

long px_clamp_long(double d, long lo, long hi)
{
    if (!(d > (double)lo)) /* below, or NaN */
        return lo;
    return d < (double)hi ? (long)d : hi;
}

long px_count(double d)
{
    if (!(d >= 0)) /* negative or NaN */
        return 0;
    return d < PX_COUNT_MAX ? (long)d : (long)PX_COUNT_MAX;
}
