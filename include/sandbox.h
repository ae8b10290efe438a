/* sandbox.h: the sandboxed-run contract. A function runs in a child process under limits of
 * memory (address space), CPU and wall time, with at most one sandboxed run per core at a
 * time; its output comes back through a pipe, capped. For approaches that run work they do
 * not control (z3's solver on a script the model wrote): a run that blows a limit is killed,
 * the request and the proxy go on.
 *
 * The child is a fork of the calling process (see src/sandbox.c for why fork): only the
 * calling thread exists in it. It may allocate (glibc resets its allocator's locks in the
 * child) and create threads, but must not take any lock the parent's other threads may have
 * held at the fork: no logging, no stdio shared with the parent, no library state the parent
 * uses concurrently. It ends with _exit after the function returns. */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stddef.h>

struct arena;

struct sandbox_limits {
    size_t mem_bytes; /* address space the child may add to what it inherits (RLIMIT_AS) */
    long wall_ms;     /* killed (SIGKILL) after this long; RLIMIT_CPU is set a little above */
    size_t out_max;   /* bytes of output kept */
};

enum sandbox_status {
    SANDBOX_OK = 0,
    SANDBOX_TIMEOUT = -1, /* killed at wall_ms */
    SANDBOX_FAILED = -2,  /* the child died (a signal, an abort on allocation failure, the CPU
                           * limit) or exited non-zero: *why says how */
    SANDBOX_ERROR = -3    /* the child could not be started */
};

/* Runs in the child: writes at most 'max' bytes to 'out', returns how many. */
typedef size_t sandbox_fn(void *arg, char *out, size_t max);

/* Runs fn(arg) in a child under 'lim'. On SANDBOX_OK, *out (NUL-terminated, in 'a') and
 * *out_len hold its output. Otherwise 'why' holds a short reason. Blocks the calling thread
 * (waiting for a free slot first). */
int sandbox_run(const struct sandbox_limits *lim, sandbox_fn *fn, void *arg, struct arena *a,
                const char **out, size_t *out_len, char *why, size_t why_len);

#endif
