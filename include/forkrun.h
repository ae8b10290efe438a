/* forkrun.h: a function run in a forked child under limits (the contract z3 uses; code
 * execution has its own, sandbox.h). A function runs in a child process under limits of
 * memory (address space), CPU and wall time, with at most one sandboxed run per core at a
 * time; its output comes back through a pipe, capped. For approaches that run work they do
 * not control (z3's solver on a script the model wrote): a run that blows a limit is killed,
 * the request and the proxy go on.
 *
 * The child is a fork of the calling process (see src/forkrun.c for why fork): only the
 * calling thread exists in it. It may allocate (glibc resets its allocator's locks in the
 * child) and create threads, but must not take any lock the parent's other threads may have
 * held at the fork: no logging, no stdio shared with the parent, no library state the parent
 * uses concurrently. It ends with _exit after the function returns. */
#ifndef FORKRUN_H
#define FORKRUN_H

#include <stddef.h>

struct arena;

struct forkrun_limits {
    size_t mem_bytes; /* address space the child may add to what it inherits (RLIMIT_AS) */
    long wall_ms;     /* killed (SIGKILL) after this long; RLIMIT_CPU is set a little above */
    size_t out_max;   /* bytes of output kept */
};

enum forkrun_status {
    FORKRUN_OK = 0,
    FORKRUN_TIMEOUT = -1, /* killed at wall_ms */
    FORKRUN_FAILED = -2,  /* the child died (a signal, an abort on allocation failure, the CPU
                           * limit) or exited non-zero: *why says how */
    FORKRUN_ERROR = -3    /* the child could not be started */
};

/* Runs in the child: writes at most 'max' bytes to 'out', returns how many. */
typedef size_t forkrun_fn(void *arg, char *out, size_t max);

/* Runs fn(arg) in a child under 'lim'. On FORKRUN_OK, *out (NUL-terminated, in 'a') and
 * *out_len hold its output. Otherwise 'why' holds a short reason. Blocks the calling thread
 * (waiting for a free slot first). */
int forkrun_run(const struct forkrun_limits *lim, forkrun_fn *fn, void *arg, struct arena *a,
                const char **out, size_t *out_len, char *why, size_t why_len);

#endif
