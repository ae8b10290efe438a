/* px.c: error records, abort-on-OOM allocation and clocks. */
#include "px.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    case PX_ENOTFOUND:
        return 404;
    case PX_EMETHOD:
        return 405;
    case PX_ETOOBIG:
        return 413;
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
