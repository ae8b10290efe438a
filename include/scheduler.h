/* scheduler.h (src/sched.c): stackful coroutines on a few scheduler threads (one per core), so that
 * a request waiting on the network holds a small stack, not a thread.
 *
 * A coroutine runs plain sequential C on its own mmap'd stack (a PROT_NONE guard page below
 * it: an overflow prints "coroutine stack overflow" and aborts). It stays on the scheduler
 * thread it was spawned on. It gives its thread up only where it waits: sched_group_wait
 * (upstream transfers, child coroutines, sched_offload). Code that calls into deep or
 * CPU-heavy libraries (libz3) runs on a helper thread through sched_offload instead.
 *
 * The wait group is the one primitive that crosses threads: any thread (an I/O loop, a
 * helper, another coroutine) calls sched_group_done; the waiter is a coroutine (re-queued on
 * its scheduler thread) or a plain thread (condition variable). Both work at once. */
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct coro;

/* Counts outstanding work; one waiter at a time (a coroutine or threads). */
struct sched_group {
    pthread_mutex_t mu; /* guards pending, waiter */
    pthread_cond_t cv;  /* plain-thread waiters (CLOCK_MONOTONIC) */
    int pending;
    struct coro *waiter; /* the coroutine parked in sched_group_wait, or NULL */
};

/* Caller-provided storage; 'pending' items outstanding. Not thread-safe (before sharing). */
void sched_group_init(struct sched_group *g, int pending);
/* After every waiter returned and no sched_group_done can follow. */
void sched_group_cleanup(struct sched_group *g);
/* Adds n outstanding items. Thread-safe. */
void sched_group_add(struct sched_group *g, int n);
/* One item finished; wakes the waiter when none is left. Thread-safe, any thread; g may be
 * freed by its waiter as soon as this returns. */
void sched_group_done(struct sched_group *g);
/* Waits until nothing is pending (returns 0) or 'timeout_s' seconds passed (returns 1;
 * timeout_s <= 0: no timeout). On a coroutine it parks the coroutine; on any other thread it
 * blocks that thread. */
int sched_group_wait(struct sched_group *g, double timeout_s);

/* Starts 'nthreads' scheduler threads (0: one per core) with coroutine stacks of
 * 'stack_size' bytes (0: the default, SCHED_STACK). Returns 0 or -1 (logged). */
int sched_start(unsigned nthreads, size_t stack_size);
/* Waits until every coroutine has finished, then joins the scheduler threads. Idle helper
 * threads exit on their own after a few seconds. */
void sched_stop(void);
bool sched_started(void);
/* True when the caller runs on a coroutine. */
bool sched_in_coroutine(void);

/* Coroutine classes for the statistics: request-level coroutines are counted as requests. */
enum { SCHED_CHILD = 0, SCHED_REQUEST = 1 };

/* Starts fn(arg) on a coroutine on one of the scheduler threads (round-robin). When it
 * returns, 'done' (if not NULL) gets one sched_group_done. Returns 0, or -1 when the scheduler
 * is not running or memory for a stack cannot be mapped (fn was not started). Thread-safe. */
int sched_spawn(void (*fn)(void *), void *arg, struct sched_group *done, int cls);

/* Runs fn(arg) on a helper thread (started on demand up to 256, 8 MiB stack) and waits for it:
 * for deep library code or CPU work of more than a few milliseconds. Off a coroutine it runs
 * fn directly. Returns 0, or -1 when no helper thread could be started (fn ran inline). */
int sched_offload(void (*fn)(void *), void *arg);

struct sched_stats {
    unsigned threads;               /* scheduler threads */
    unsigned helpers;               /* sched_offload threads alive */
    long coroutines;                /* alive */
    long parked;                    /* alive and waiting */
    long requests_parked;           /* SCHED_REQUEST coroutines waiting */
    unsigned long long switches;    /* coroutine resumptions */
    long long max_slice_us;         /* longest time one resumption held its thread */
    unsigned long long slow_slices; /* resumptions that held it more than SCHED_SLOW_US */
    size_t stack_size;              /* bytes per coroutine (guard page not counted) */
    size_t stack_peak;              /* the deepest any finished coroutine went */
};
#define SCHED_SLOW_US 5000

/* Thread-safe snapshot. */
void sched_stats(struct sched_stats *out);

#endif
