/* arena.h: per-request bump allocator; everything allocated in it dies with arena_destroy().
 * An arena is used by one thread at a time (not thread-safe). */
#ifndef ARENA_H
#define ARENA_H

#include <stdarg.h>
#include <stddef.h>

struct arena;

/* Returns a new empty arena owned by the caller; never NULL (aborts on OOM). */
struct arena *arena_create(void);
/* Runs the deferred cleanups (last registered first) and frees all memory. NULL is a no-op. */
void arena_destroy(struct arena *a);
/* Returns 'n' bytes aligned for any type, owned by 'a'; never NULL. */
void *arena_alloc(struct arena *a, size_t n);
/* Like arena_alloc, zeroed; n*size overflow aborts. */
void *arena_calloc(struct arena *a, size_t n, size_t size);
/* Copies of strings, owned by 'a'. arena_strdup(a, NULL) returns NULL. */
char *arena_strdup(struct arena *a, const char *s);
char *arena_strndup(struct arena *a, const char *s, size_t n);
/* Like arena_strndup without the leading and trailing whitespace (isspace) of the n bytes. */
char *arena_strtrim(struct arena *a, const char *s, size_t n);
char *arena_printf(struct arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *arena_vprintf(struct arena *a, const char *fmt, va_list ap);
/* Registers fn(p) to run when the arena is destroyed (nginx pool cleanup). */
void arena_defer(struct arena *a, void (*fn)(void *), void *p);
/* Total bytes handed out (for tests and logs). */
size_t arena_used(const struct arena *a);

#endif
