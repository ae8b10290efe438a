/* sched.c: stackful coroutines (ucontext) on one scheduler thread per core, wait groups that
 * any thread can signal, timed waits, and a small helper-thread pool for offloaded work.
 *
 * DESIGN. Each scheduler thread owns a run queue and a timer heap, both guarded by its mutex,
 * and sleeps on a condition variable (CLOCK_MONOTONIC) until a coroutine is ready or the
 * first timer is due. A coroutine never migrates: spawn picks a thread round-robin and the
 * coroutine lives there until it returns. Parking is two-phase so that a wake from another
 * thread cannot be lost: the coroutine switches back to its scheduler, which then (under the
 * thread's mutex) either sees a wake that already arrived and re-queues it, or marks it
 * parked (and arms its timer). sched_group_done wakes while holding the group's mutex, and a
 * waiter re-takes that mutex before it returns, so the group (on the waiter's stack) and the
 * coroutine outlive every wake aimed at them. Lock order: group mutex, then thread mutex.
 * Wakes can be spurious; every wait loops on its condition.
 *
 * swapcontext makes one rt_sigprocmask system call per switch (about 0.3 us here): a request
 * switches a few times per upstream call, so a hand-written switch is not worth its risk.
 * Stacks are mmap'd (untouched pages cost nothing) with a PROT_NONE page below; SIGSEGV on
 * that page is reported on an alternate signal stack. */
#define _GNU_SOURCE /* MAP_STACK, MAP_NORESERVE, ucontext */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "log.h"
#include "px.h"
#include "scheduler.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SCHED_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define SCHED_TSAN 1
#endif

/* Under valgrind, a switch to a stack it does not know looks like a huge stack move (and
 * memcheck then reports writes to it as invalid): each coroutine stack is registered. */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define SCHED_VALGRIND 1
#endif

#if defined(SCHED_ASAN) || defined(SCHED_TSAN)
#define SCHED_STACK (1024u << 10) /* instrumented frames are several times larger */
#else
#define SCHED_STACK (128u << 10)
#endif
#define SCHED_MAX_THREADS 64
#define SCHED_WARN_US     50000 /* a slice this long is logged */
#define SCHED_ALTSTACK    (64u << 10)
#define STACK_CACHE       1024 /* stacks kept for reuse */
#define HELPER_MAX        256  /* offloaded approaches (z3) also wait on a helper */
#define HELPER_IDLE_SECS  10

enum coro_state { C_READY, C_RUNNING, C_PARKED };
enum coro_exit { X_PARK, X_DONE };

struct sched_thread;

struct coro {
    ucontext_t ctx;
    struct sched_thread *home;
    void (*fn)(void *);
    void *arg;
    struct sched_group *done;
    int cls;
    char *map; /* guard page + stack */
    size_t map_len;
    char *stack_lo; /* lowest usable byte (just above the guard page) */
    enum coro_exit why;

    /* Guarded by home->mu: */
    enum coro_state state;
    bool wake_pending; /* a wake arrived while it was not parked */
    bool timed_out;
    long long deadline_us; /* 0: none */
    int heap_idx;          /* in home->heap, or -1 */
    struct coro *next;     /* run queue */

#ifdef SCHED_ASAN
    void *fake_stack;
#endif
#ifdef SCHED_TSAN
    void *fiber;
#endif
#ifdef SCHED_VALGRIND
    unsigned vg_stack; /* VALGRIND_STACK_REGISTER's id */
#endif
};

struct sched_thread {
    pthread_t thread;
    ucontext_t main_ctx;
    struct coro *current; /* this thread only */
#ifdef SCHED_ASAN
    const void *main_bottom;
    size_t main_size;
#endif
#ifdef SCHED_TSAN
    void *main_fiber;
#endif

    pthread_mutex_t mu; /* guards runq_head, runq_tail, heap, nheap, cap_heap, stopping and the
                           coroutines' Guarded fields */
    pthread_cond_t cv;  /* a coroutine became ready, a timer moved, or stop */
    struct coro *runq_head, *runq_tail;
    struct coro **heap; /* min-heap by deadline_us */
    size_t nheap, cap_heap;
    bool stopping;

    /* Written by this thread, read anywhere (relaxed atomics). */
    unsigned long long switches, slow;
    long long max_slice_us;
};

static struct sched_thread *threads; /* kept after sched_stop for sched_stats */
static unsigned nthreads;
static bool running;
static sigset_t coro_sigmask; /* the scheduler threads' mask: swapcontext installs it */
static size_t stack_size = SCHED_STACK;
static size_t page_size;
static unsigned rr;
static long alive, parked, req_parked; /* atomics */
static size_t stack_peak;              /* atomic (max) */
static _Thread_local struct sched_thread *tls_thread;
static struct sigaction old_segv;
static pthread_mutex_t life_mu = PTHREAD_MUTEX_INITIALIZER; /* guards alive_cv waits */
static pthread_cond_t alive_cv = PTHREAD_COND_INITIALIZER;  /* 'alive' dropped to 0 */

static long long mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static struct timespec mono_ts(long long us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000LL),
                          .tv_nsec = (long)(us % 1000000LL) * 1000};

    return ts;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* ---- timer heap (caller holds the thread's mu) -------------------------------------------- */

static void heap_set(struct sched_thread *s, size_t i, struct coro *c)
{
    s->heap[i] = c;
    c->heap_idx = (int)i;
}

static void heap_up(struct sched_thread *s, size_t i)
{
    struct coro *c = s->heap[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;

        if (s->heap[p]->deadline_us <= c->deadline_us)
            break;
        heap_set(s, i, s->heap[p]);
        i = p;
    }
    heap_set(s, i, c);
}

static void heap_down(struct sched_thread *s, size_t i)
{
    struct coro *c = s->heap[i];

    for (;;) {
        size_t l = 2 * i + 1, m = i;
        struct coro *best = c;

        if (l < s->nheap && s->heap[l]->deadline_us < best->deadline_us) {
            m = l;
            best = s->heap[l];
        }
        if (l + 1 < s->nheap && s->heap[l + 1]->deadline_us < best->deadline_us)
            m = l + 1;
        if (m == i)
            break;
        heap_set(s, i, s->heap[m]);
        i = m;
    }
    heap_set(s, i, c);
}

static void heap_push(struct sched_thread *s, struct coro *c)
{
    if (s->nheap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? s->cap_heap * 2 : 64;
        s->heap = xrealloc(s->heap, s->cap_heap * sizeof(*s->heap));
    }
    heap_set(s, s->nheap++, c);
    heap_up(s, s->nheap - 1);
}

static void heap_remove(struct sched_thread *s, struct coro *c)
{
    size_t i = (size_t)c->heap_idx;
    struct coro *last = s->heap[--s->nheap];

    c->heap_idx = -1;
    if (i == s->nheap)
        return;
    heap_set(s, i, last);
    heap_up(s, i);
    heap_down(s, (size_t)last->heap_idx);
}

/* ---- run queue and wakes ------------------------------------------------------------------- */

/* Caller holds s->mu. */
static void do_ready(struct sched_thread *s, struct coro *c)
{
    c->state = C_READY;
    c->next = NULL;
    if (s->runq_tail)
        s->runq_tail->next = c;
    else
        s->runq_head = c;
    s->runq_tail = c;
    pthread_cond_signal(&s->cv);
}

/* Any thread. c must not finish meanwhile (the caller holds the group mutex it waits on). */
static void wake(struct coro *c)
{
    struct sched_thread *s = c->home;

    pthread_mutex_lock(&s->mu);
    if (c->state == C_PARKED) {
        if (c->heap_idx >= 0)
            heap_remove(s, c);
        __atomic_sub_fetch(&parked, 1, __ATOMIC_RELAXED);
        if (c->cls == SCHED_REQUEST)
            __atomic_sub_fetch(&req_parked, 1, __ATOMIC_RELAXED);
        do_ready(s, c);
    } else {
        c->wake_pending = true;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- switching -------------------------------------------------------------------------------
 */

/* From the coroutine to its scheduler (and back, unless it finished). */
static void to_scheduler(struct coro *c)
{
    struct sched_thread *s = c->home;

#ifdef SCHED_ASAN
    __sanitizer_start_switch_fiber(c->why == X_DONE ? NULL : &c->fake_stack, s->main_bottom,
                                   s->main_size);
#endif
#ifdef SCHED_TSAN
    __tsan_switch_to_fiber(s->main_fiber, 0);
#endif
    swapcontext(&c->ctx, &s->main_ctx);
#ifdef SCHED_ASAN
    __sanitizer_finish_switch_fiber(c->fake_stack, &s->main_bottom, &s->main_size);
#endif
}

static void trampoline(void)
{
    struct sched_thread *s = tls_thread;
    struct coro *c = s->current;

#ifdef SCHED_ASAN
    __sanitizer_finish_switch_fiber(NULL, &s->main_bottom, &s->main_size);
#endif
    c->fn(c->arg);
    if (c->done)
        sched_group_done(c->done);
    c->why = X_DONE;
    to_scheduler(c);
    abort(); /* never resumed */
}

/* Parks the running coroutine until woken or (deadline_us > 0) the deadline; returns true on
 * timeout. */
static bool park(long long deadline_us)
{
    struct coro *c = tls_thread->current;

    c->deadline_us = deadline_us;
    c->timed_out = false;
    c->why = X_PARK;
    to_scheduler(c);
    return c->timed_out;
}

/* Bytes of the stack ever touched: the lowest resident page (mincore: reading untouched pages
 * would fault them in), then the lowest non-zero word in it. */
static size_t stack_used(const struct coro *c)
{
    size_t npages = stack_size / page_size;
    unsigned char vec[1024];
    size_t first = npages;

    if (npages > sizeof(vec) || mincore(c->stack_lo, stack_size, vec) != 0)
        return 0;
    for (size_t i = 0; i < npages; i++) {
        if (vec[i] & 1) {
            first = i;
            break;
        }
    }
    if (first == npages)
        return 0;
#ifdef SCHED_VALGRIND
    /* memcheck marks what lies below a finished coroutine's stack pointer unaddressable; the
     * scan for the high-water mark reads it on purpose. */
    VALGRIND_MAKE_MEM_DEFINED(c->stack_lo + first * page_size, page_size);
#endif
    const uint64_t *p = (const uint64_t *)(const void *)(c->stack_lo + first * page_size);
    const uint64_t *pend = p + page_size / sizeof(*p);

    while (p < pend && *p == 0)
        p++;
    return (size_t)(c->stack_lo + stack_size - (const char *)p);
}

/* Stacks are reused: munmap (a TLB shootdown on every core) and first-touch page faults cost
 * more than the rest of a coroutine's life. The cache keeps touched pages resident. */
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static char *cache[STACK_CACHE]; /* guarded by cache_mu, with ncache */
static size_t ncache;

static char *stack_get(void)
{
    char *m = NULL;

    pthread_mutex_lock(&cache_mu);
    if (ncache > 0)
        m = cache[--ncache];
    pthread_mutex_unlock(&cache_mu);
    if (m)
        return m;
    m = mmap(NULL, stack_size + page_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (mprotect(m, page_size, PROT_NONE) != 0) {
        munmap(m, stack_size + page_size);
        return NULL;
    }
    return m;
}

static void stack_put(char *m)
{
    pthread_mutex_lock(&cache_mu);
    if (ncache < STACK_CACHE) {
        cache[ncache++] = m;
        m = NULL;
    }
    pthread_mutex_unlock(&cache_mu);
    if (m)
        munmap(m, stack_size + page_size);
}

static void stack_cache_drain(void)
{
    pthread_mutex_lock(&cache_mu);
    while (ncache > 0)
        munmap(cache[--ncache], stack_size + page_size);
    pthread_mutex_unlock(&cache_mu);
}

static void coro_free(struct coro *c)
{
    size_t used = stack_used(c);
    size_t peak = __atomic_load_n(&stack_peak, __ATOMIC_RELAXED);

    while (used > peak && !__atomic_compare_exchange_n(&stack_peak, &peak, used, false,
                                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
#ifdef SCHED_TSAN
    __tsan_destroy_fiber(c->fiber);
#endif
#ifdef SCHED_VALGRIND
    VALGRIND_STACK_DEREGISTER(c->vg_stack);
#endif
    stack_put(c->map);
    free(c);
    pthread_mutex_lock(&life_mu);
    if (__atomic_sub_fetch(&alive, 1, __ATOMIC_RELAXED) == 0)
        pthread_cond_broadcast(&alive_cv);
    pthread_mutex_unlock(&life_mu);
}

/* Runs c until it parks or finishes. Scheduler thread, without s->mu. */
static void resume(struct sched_thread *s, struct coro *c)
{
    long long t0 = mono_us(), dt;
#ifdef SCHED_ASAN
    void *fake = NULL;
#endif

    s->current = c;
#ifdef SCHED_ASAN
    __sanitizer_start_switch_fiber(&fake, c->stack_lo, stack_size);
#endif
#ifdef SCHED_TSAN
    __tsan_switch_to_fiber(c->fiber, 0);
#endif
    swapcontext(&s->main_ctx, &c->ctx);
#ifdef SCHED_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    s->current = NULL;
    dt = mono_us() - t0;
    __atomic_store_n(&s->switches, s->switches + 1, __ATOMIC_RELAXED);
    if (dt > s->max_slice_us) {
        __atomic_store_n(&s->max_slice_us, dt, __ATOMIC_RELAXED);
        if (dt > SCHED_WARN_US) /* a new record only: at most a few lines per process */
            log_warn("a coroutine held scheduler thread %u for %lld ms without waiting: "
                     "other requests on it stalled (CPU-heavy work belongs in sched_offload)",
                     (unsigned)(s - threads), dt / 1000);
    }
    if (dt > SCHED_SLOW_US)
        __atomic_store_n(&s->slow, s->slow + 1, __ATOMIC_RELAXED);

    if (c->why == X_DONE) {
        coro_free(c);
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (c->wake_pending) {
        c->wake_pending = false;
        do_ready(s, c);
    } else {
        c->state = C_PARKED;
        __atomic_add_fetch(&parked, 1, __ATOMIC_RELAXED);
        if (c->cls == SCHED_REQUEST)
            __atomic_add_fetch(&req_parked, 1, __ATOMIC_RELAXED);
        if (c->deadline_us > 0)
            heap_push(s, c);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- stack overflow ------------------------------------------------------------------------ */

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    struct sched_thread *s = tls_thread;
    struct coro *c = s ? s->current : NULL;
    char *addr = si->si_addr;

    (void)uc;
    if (c && addr >= c->map && addr < c->stack_lo) {
        static const char msg[] = "FATAL: coroutine stack overflow (guard page hit)\n";

        if (write(2, msg, sizeof(msg) - 1) < 0) {
            /* nothing more to do */
        }
        abort();
    }
    /* Not ours: the previous disposition handles the re-executed fault. */
    sigaction(sig, &old_segv, NULL);
}

static void altstack_init(void)
{
    stack_t ss = {.ss_size = SCHED_ALTSTACK, .ss_flags = 0};

    ss.ss_sp = malloc(SCHED_ALTSTACK);
    if (ss.ss_sp && sigaltstack(&ss, NULL) != 0) {
        free(ss.ss_sp);
        ss.ss_sp = NULL;
    }
}

static void altstack_cleanup(void)
{
    stack_t ss = {.ss_flags = SS_DISABLE}, old;

    if (sigaltstack(&ss, &old) == 0 && old.ss_sp && !(old.ss_flags & SS_DISABLE))
        free(old.ss_sp);
}

/* ---- scheduler threads --------------------------------------------------------------------- */

static void *thread_main(void *arg)
{
    struct sched_thread *s = arg;

    tls_thread = s;
    altstack_init();
#ifdef SCHED_TSAN
    s->main_fiber = __tsan_get_current_fiber();
#endif
    pthread_mutex_lock(&s->mu);
    for (;;) {
        long long now = mono_us();

        while (s->nheap > 0 && s->heap[0]->deadline_us <= now) {
            struct coro *c = s->heap[0];

            heap_remove(s, c);
            c->timed_out = true;
            __atomic_sub_fetch(&parked, 1, __ATOMIC_RELAXED);
            if (c->cls == SCHED_REQUEST)
                __atomic_sub_fetch(&req_parked, 1, __ATOMIC_RELAXED);
            do_ready(s, c);
        }
        if (s->runq_head) {
            struct coro *c = s->runq_head;

            s->runq_head = c->next;
            if (!s->runq_head)
                s->runq_tail = NULL;
            c->state = C_RUNNING;
            pthread_mutex_unlock(&s->mu);
            resume(s, c);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->stopping && __atomic_load_n(&alive, __ATOMIC_RELAXED) == 0)
            break;
        if (s->nheap > 0) {
            struct timespec ts = mono_ts(s->heap[0]->deadline_us);

            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        } else {
            pthread_cond_wait(&s->cv, &s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    altstack_cleanup();
    return NULL;
}

int sched_start(unsigned n, size_t ssize)
{
    struct sigaction sa;

    if (__atomic_load_n(&running, __ATOMIC_ACQUIRE))
        return 0;
    if (threads) { /* stopped before: start afresh (tests) */
        free(threads);
        threads = NULL;
        nthreads = 0;
    }
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);

        n = cpus > 0 ? (unsigned)cpus : 2;
    }
    if (n > SCHED_MAX_THREADS)
        n = SCHED_MAX_THREADS;
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    stack_size = ssize ? (ssize + page_size - 1) / page_size * page_size : SCHED_STACK;

    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);

    pthread_sigmask(SIG_SETMASK, NULL, &coro_sigmask); /* the new threads inherit it */
    threads = xcalloc(n, sizeof(*threads));
    for (unsigned i = 0; i < n; i++) {
        struct sched_thread *s = &threads[i];

        pthread_mutex_init(&s->mu, NULL);
        cond_init_mono(&s->cv);
        if (pthread_create(&s->thread, NULL, thread_main, s) != 0) {
            log_error("cannot start scheduler thread %u", i);
            pthread_mutex_destroy(&s->mu);
            pthread_cond_destroy(&s->cv);
            break;
        }
        nthreads++;
    }
    if (nthreads == 0) {
        free(threads);
        threads = NULL;
        return -1;
    }
    __atomic_store_n(&running, true, __ATOMIC_RELEASE);
    return 0;
}

bool sched_started(void)
{
    return __atomic_load_n(&running, __ATOMIC_ACQUIRE);
}

bool sched_in_coroutine(void)
{
    return tls_thread && tls_thread->current;
}

int sched_spawn(void (*fn)(void *), void *arg, struct sched_group *done, int cls)
{
    struct sched_thread *s;
    struct coro *c;

    if (!sched_started())
        return -1;
    c = xcalloc(1, sizeof(*c));
    c->map_len = stack_size + page_size;
    c->map = stack_get();
    if (!c->map) {
        free(c);
        return -1;
    }
    c->stack_lo = c->map + page_size;
#ifdef SCHED_VALGRIND
    c->vg_stack = VALGRIND_STACK_REGISTER(c->stack_lo, c->stack_lo + stack_size);
#endif
    c->fn = fn;
    c->arg = arg;
    c->done = done;
    c->cls = cls;
    c->heap_idx = -1;
    getcontext(&c->ctx);
    c->ctx.uc_stack.ss_sp = c->stack_lo;
    c->ctx.uc_stack.ss_size = stack_size;
    c->ctx.uc_link = NULL;
    c->ctx.uc_sigmask = coro_sigmask; /* not the spawning thread's */
    makecontext(&c->ctx, trampoline, 0);
#ifdef SCHED_TSAN
    c->fiber = __tsan_create_fiber(0);
#endif
    s = &threads[__atomic_fetch_add(&rr, 1, __ATOMIC_RELAXED) % nthreads];
    c->home = s;
    __atomic_add_fetch(&alive, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&s->mu);
    do_ready(s, c);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void sched_stop(void)
{
    if (!sched_started())
        return;
    pthread_mutex_lock(&life_mu);
    while (__atomic_load_n(&alive, __ATOMIC_RELAXED) > 0)
        pthread_cond_wait(&alive_cv, &life_mu);
    pthread_mutex_unlock(&life_mu);
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_mutex_lock(&threads[i].mu);
        threads[i].stopping = true;
        pthread_cond_signal(&threads[i].cv);
        pthread_mutex_unlock(&threads[i].mu);
    }
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(threads[i].thread, NULL);
        pthread_mutex_destroy(&threads[i].mu);
        pthread_cond_destroy(&threads[i].cv);
        free(threads[i].heap);
        threads[i].heap = NULL;
    }
    __atomic_store_n(&running, false, __ATOMIC_RELEASE);
    stack_cache_drain();
    sigaction(SIGSEGV, &old_segv, NULL);
}

/* ---- wait groups --------------------------------------------------------------------------- */

void sched_group_init(struct sched_group *g, int pending)
{
    pthread_mutex_init(&g->mu, NULL);
    cond_init_mono(&g->cv);
    g->pending = pending;
    g->waiter = NULL;
}

void sched_group_cleanup(struct sched_group *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

void sched_group_add(struct sched_group *g, int n)
{
    pthread_mutex_lock(&g->mu);
    g->pending += n;
    pthread_mutex_unlock(&g->mu);
}

void sched_group_done(struct sched_group *g)
{
    pthread_mutex_lock(&g->mu);
    if (--g->pending <= 0) {
        pthread_cond_broadcast(&g->cv);
        if (g->waiter)
            wake(g->waiter); /* under g->mu: the waiter cannot return before we are out */
    }
    pthread_mutex_unlock(&g->mu);
}

int sched_group_wait(struct sched_group *g, double timeout_s)
{
    long long deadline = timeout_s > 0 ? mono_us() + (long long)(timeout_s * 1e6) : 0;
    struct coro *self = sched_in_coroutine() ? tls_thread->current : NULL;
    int rc = 0;

    pthread_mutex_lock(&g->mu);
    while (g->pending > 0) {
        if (deadline && mono_us() >= deadline) {
            rc = 1;
            break;
        }
        if (self) {
            g->waiter = self;
            pthread_mutex_unlock(&g->mu);
            park(deadline);
            pthread_mutex_lock(&g->mu);
            g->waiter = NULL;
        } else if (deadline) {
            struct timespec ts = mono_ts(deadline);

            pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        } else {
            pthread_cond_wait(&g->cv, &g->mu);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* ---- helper threads (sched_offload) -------------------------------------------------------- */

struct job {
    void (*fn)(void *);
    void *arg;
    struct sched_group *done;
    struct job *next;
};

static pthread_mutex_t help_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by help_mu: */
static pthread_cond_t help_cv = PTHREAD_COND_INITIALIZER;
static struct job *jobs_head, *jobs_tail;
static unsigned helpers, helpers_idle;

static void *helper_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&help_mu);
    for (;;) {
        while (!jobs_head) {
            struct timespec ts;

            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += HELPER_IDLE_SECS;
            helpers_idle++;
            int rc = pthread_cond_timedwait(&help_cv, &help_mu, &ts);
            helpers_idle--;
            if (rc == ETIMEDOUT && !jobs_head)
                goto out;
        }
        struct job *j = jobs_head;

        jobs_head = j->next;
        if (!jobs_head)
            jobs_tail = NULL;
        pthread_mutex_unlock(&help_mu);
        j->fn(j->arg);
        sched_group_done(j->done);
        pthread_mutex_lock(&help_mu);
    }
out:
    helpers--;
    pthread_mutex_unlock(&help_mu);
    return NULL;
}

int sched_offload(void (*fn)(void *), void *arg)
{
    struct sched_group g;
    struct job j = {.fn = fn, .arg = arg, .done = &g};

    if (!sched_in_coroutine()) {
        fn(arg);
        return 0;
    }
    sched_group_init(&g, 1);
    pthread_mutex_lock(&help_mu);
    if (helpers_idle == 0 && helpers < HELPER_MAX) {
        pthread_attr_t attr;
        pthread_t t;

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, helper_main, NULL) == 0)
            helpers++;
        pthread_attr_destroy(&attr);
    }
    if (helpers == 0) {
        pthread_mutex_unlock(&help_mu);
        sched_group_cleanup(&g);
        fn(arg);
        return -1;
    }
    if (jobs_tail)
        jobs_tail->next = &j;
    else
        jobs_head = &j;
    jobs_tail = &j;
    pthread_cond_signal(&help_cv);
    pthread_mutex_unlock(&help_mu);
    sched_group_wait(&g, 0);
    sched_group_cleanup(&g);
    return 0;
}

/* ---- statistics ---------------------------------------------------------------------------- */

void sched_stats(struct sched_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->threads = nthreads;
    pthread_mutex_lock(&help_mu);
    st->helpers = helpers;
    pthread_mutex_unlock(&help_mu);
    st->coroutines = __atomic_load_n(&alive, __ATOMIC_RELAXED);
    st->parked = __atomic_load_n(&parked, __ATOMIC_RELAXED);
    st->requests_parked = __atomic_load_n(&req_parked, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < nthreads; i++) {
        long long m = __atomic_load_n(&threads[i].max_slice_us, __ATOMIC_RELAXED);

        st->switches += __atomic_load_n(&threads[i].switches, __ATOMIC_RELAXED);
        st->slow_slices += __atomic_load_n(&threads[i].slow, __ATOMIC_RELAXED);
        if (m > st->max_slice_us)
            st->max_slice_us = m;
    }
    st->stack_size = stack_size;
    st->stack_peak = __atomic_load_n(&stack_peak, __ATOMIC_RELAXED);
}
