/* buf.h: a growable byte buffer with a hard cap (curl dynbuf style). Heap-owned by its holder. */
#ifndef BUF_H
#define BUF_H

#include <stddef.h>

struct buf {
    char *data; /* NUL-terminated when len > 0 or after buf_cstr */
    size_t len;
    size_t cap;
    size_t max; /* appends beyond this fail; 0 means no cap (only for internal, bounded data) */
};

/* Initialises an empty buffer with cap 'max' (0 = uncapped). */
void buf_init(struct buf *b, size_t max);
/* Appends; returns 0, or -1 (buffer unchanged) when the result would exceed b->max. */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Returns a NUL-terminated view (never NULL; "" for empty). */
const char *buf_cstr(struct buf *b);
/* Hands the data to the caller (malloc'd, NUL-terminated) and empties the buffer. */
char *buf_take(struct buf *b, size_t *len);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

#endif
