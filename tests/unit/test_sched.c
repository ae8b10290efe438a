/* test_sched.c: the coroutine scheduler: switching, 10,000 coroutines, timed waits, wakes
 * racing timeouts, cancellation while waiting, offload, and a guard-page overflow detected in
 * a child process. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "px.h"
#include "scheduler.h"

static long long now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    (void)state;
    return sched_start(2, 0);
}

static int teardown(void **state)
{
    (void)state;
    sched_stop();
    return 0;
}

/* ---- switching: two coroutines hand a token back and forth -------------------------------- */

/* TSan gives every fiber a 1 MiB trace and slows switches: fewer there. */
#if defined(__SANITIZE_THREAD__)
#define ROUNDS 2000
#define MANY   500
#else
#define ROUNDS 20000
#define MANY   10000
#endif

struct pingpong {
    struct sched_group turn[2];
    int count[2];
};

struct pp_arg {
    struct pingpong *pp;
    int me;
};

static void pp_main(void *arg)
{
    struct pp_arg *a = arg;
    struct pingpong *pp = a->pp;

    for (int i = 0; i < ROUNDS; i++) {
        sched_group_wait(&pp->turn[a->me], 0);
        pp->count[a->me]++;
        sched_group_add(&pp->turn[a->me], 1);
        sched_group_done(&pp->turn[!a->me]);
    }
}

static void test_switching(void **state)
{
    struct pingpong pp = {0};
    struct pp_arg args[2] = {{&pp, 0}, {&pp, 1}};
    struct sched_group all;
    struct sched_stats st;
    long long t0;

    (void)state;
    sched_stop(); /* one scheduler thread: the cost of a switch, no cross-core wake-up */
    assert_int_equal(sched_start(1, 0), 0);
    sched_group_init(&pp.turn[0], 0); /* 0 goes first */
    sched_group_init(&pp.turn[1], 1);
    sched_group_init(&all, 2);
    t0 = now_us();
    assert_int_equal(sched_spawn(pp_main, &args[0], &all, SCHED_CHILD), 0);
    assert_int_equal(sched_spawn(pp_main, &args[1], &all, SCHED_CHILD), 0);
    assert_int_equal(sched_group_wait(&all, 0), 0);
    assert_int_equal(pp.count[0], ROUNDS);
    assert_int_equal(pp.count[1], ROUNDS);
    sched_stats(&st);
    print_message("%d hand-offs on one scheduler thread: %.2f us each (%llu switches)\n",
                  2 * ROUNDS, (double)(now_us() - t0) / (2 * ROUNDS), st.switches);
    sched_group_cleanup(&pp.turn[0]);
    sched_group_cleanup(&pp.turn[1]);
    sched_group_cleanup(&all);
}

/* ---- many coroutines waiting at once, woken by another thread ----------------------------- */

struct waiter {
    struct sched_group g;
    bool in_coroutine;
    bool woke;
};

static void waiter_main(void *arg)
{
    struct waiter *w = arg;

    w->in_coroutine = sched_in_coroutine();
    sched_group_wait(&w->g, 0);
    w->woke = true;
}

static void *waker_main(void *arg)
{
    struct waiter *ws = arg;
    struct sched_stats st;

    /* Wait until every coroutine is parked, then wake them from this (I/O-like) thread. */
    do {
        sleep_ms(5);
        sched_stats(&st);
    } while (st.parked < MANY);
    for (int i = MANY - 1; i >= 0; i--)
        sched_group_done(&ws[i].g);
    return NULL;
}

static void test_many(void **state)
{
    struct waiter *ws = xcalloc(MANY, sizeof(*ws));
    struct sched_group all;
    struct sched_stats st;
    pthread_t t;

    (void)state;
    sched_group_init(&all, MANY);
    for (int i = 0; i < MANY; i++) {
        sched_group_init(&ws[i].g, 1);
        assert_int_equal(sched_spawn(waiter_main, &ws[i], &all, SCHED_REQUEST), 0);
    }
    assert_int_equal(pthread_create(&t, NULL, waker_main, ws), 0);
    assert_int_equal(sched_group_wait(&all, 0), 0);
    pthread_join(t, NULL);
    for (int i = 0; i < MANY; i++) {
        assert_true(ws[i].in_coroutine);
        assert_true(ws[i].woke);
        sched_group_cleanup(&ws[i].g);
    }
    sched_stats(&st);
    print_message("%d coroutines at once: stack peak %zu of %zu bytes\n", MANY, st.stack_peak,
                  st.stack_size);
    assert_int_equal(st.requests_parked, 0);
    assert_true(st.stack_peak > 0 && st.stack_peak < st.stack_size);
    sched_group_cleanup(&all);
    free(ws);
}

/* ---- timed waits ----------------------------------------------------------------------------- */

struct timed {
    struct sched_group g;
    double timeout;
    int rc;
    long long waited_us;
};

static void timed_main(void *arg)
{
    struct timed *t = arg;
    long long t0 = now_us();

    t->rc = sched_group_wait(&t->g, t->timeout);
    t->waited_us = now_us() - t0;
}

static void test_timed_wait(void **state)
{
    struct timed never = {.timeout = 0.05}, soon = {.timeout = 5};
    struct sched_group all;

    (void)state;
    sched_group_init(&never.g, 1);
    sched_group_init(&soon.g, 1);
    sched_group_init(&all, 2);
    assert_int_equal(sched_spawn(timed_main, &never, &all, SCHED_CHILD), 0);
    assert_int_equal(sched_spawn(timed_main, &soon, &all, SCHED_CHILD), 0);
    sleep_ms(20);
    sched_group_done(&soon.g);
    assert_int_equal(sched_group_wait(&all, 0), 0);
    assert_int_equal(never.rc, 1); /* timed out */
    assert_true(never.waited_us >= 50000);
    assert_int_equal(soon.rc, 0); /* woken well before its 5 s */
    assert_true(soon.waited_us < 4000000);
    /* A plain thread's timed wait. */
    assert_int_equal(sched_group_wait(&never.g, 0.02), 1);
    sched_group_cleanup(&never.g);
    sched_group_cleanup(&soon.g);
    sched_group_cleanup(&all);
}

/* Wakes that race short timeouts: every wait ends, with the right answer, nothing leaks.
 * Under valgrind (one thread at a time, ~50x slower) 2,000 coroutines re-arming 0.5 ms timers
 * keep the scheduler threads busy with expiries for ever and the waking thread starves on
 * their mutex; there the race runs 200 coroutines on 5 ms timers. */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define SLOW_RUN RUNNING_ON_VALGRIND
#else
#define SLOW_RUN 0
#endif
#define RACERS_MAX 2000
static int racers = RACERS_MAX;
static double racer_timeout = 0.0005;

static void racer_main(void *arg)
{
    struct timed *t = arg;

    while (sched_group_wait(&t->g, racer_timeout) == 1) /* like the keep-alive loop */
        ;
    t->rc = 0;
}

static void test_wake_races_timeout(void **state)
{
    struct timed *ts = xcalloc(RACERS_MAX, sizeof(*ts));
    struct sched_group all;

    (void)state;
    if (SLOW_RUN) {
        racers = 200;
        racer_timeout = 0.005;
    }
    sched_group_init(&all, racers);
    for (int i = 0; i < racers; i++) {
        sched_group_init(&ts[i].g, 1);
        ts[i].rc = -1;
        assert_int_equal(sched_spawn(racer_main, &ts[i], &all, SCHED_CHILD), 0);
    }
    for (int i = 0; i < racers; i++) {
        sched_group_done(&ts[i].g);
        if (i % 100 == 0)
            sleep_ms(1);
    }
    assert_int_equal(sched_group_wait(&all, 0), 0);
    for (int i = 0; i < racers; i++) {
        assert_int_equal(ts[i].rc, 0);
        sched_group_cleanup(&ts[i].g);
    }
    sched_group_cleanup(&all);
    free(ts);
}

/* ---- cancellation while waiting ----------------------------------------------------------- */

/* Like an approach stage: a coroutine waits for its "transfers"; a loop thread that sees the
 * request cancelled aborts them all, which must wake the coroutine at once. */
struct stage {
    struct sched_group g;
    int cancelled; /* atomic */
    bool aborted[4];
    long long woke_us;
};

static void stage_main(void *arg)
{
    struct stage *s = arg;

    sched_group_wait(&s->g, 0);
    s->woke_us = now_us();
}

static void *loop_main(void *arg)
{
    struct stage *s = arg;

    while (!__atomic_load_n(&s->cancelled, __ATOMIC_ACQUIRE))
        sleep_ms(1);
    for (int i = 0; i < 4; i++) {
        s->aborted[i] = true;
        sched_group_done(&s->g);
    }
    return NULL;
}

static void test_cancel_while_waiting(void **state)
{
    struct stage s = {0};
    struct sched_group all;
    pthread_t t;
    long long cancel_us;

    (void)state;
    sched_group_init(&s.g, 4);
    sched_group_init(&all, 1);
    assert_int_equal(pthread_create(&t, NULL, loop_main, &s), 0);
    assert_int_equal(sched_spawn(stage_main, &s, &all, SCHED_REQUEST), 0);
    sleep_ms(30);
    assert_int_equal(sched_group_wait(&all, 0.001), 1); /* still waiting */
    cancel_us = now_us();
    __atomic_store_n(&s.cancelled, 1, __ATOMIC_RELEASE);
    assert_int_equal(sched_group_wait(&all, 0), 0);
    pthread_join(t, NULL);
    for (int i = 0; i < 4; i++)
        assert_true(s.aborted[i]);
    assert_true(s.woke_us - cancel_us < 1000000);
    sched_group_cleanup(&s.g);
    sched_group_cleanup(&all);
}

/* ---- children and offload --------------------------------------------------------------- */

struct child {
    int *sum;
    pthread_mutex_t *mu;
    int v;
};

static void child_main(void *arg)
{
    struct child *c = arg;

    pthread_mutex_lock(c->mu);
    *c->sum += c->v;
    pthread_mutex_unlock(c->mu);
}

struct offl {
    pthread_t ran_on;
    bool on_coroutine;
};

static void offl_fn(void *arg)
{
    struct offl *o = arg;

    o->ran_on = pthread_self();
    o->on_coroutine = sched_in_coroutine();
}

struct parent {
    int sum;
    struct offl o;
    pthread_t self;
};

static void parent_main(void *arg)
{
    struct parent *p = arg;
    struct child cs[8];
    struct sched_group kids;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

    sched_group_init(&kids, 8);
    for (int i = 0; i < 8; i++) {
        cs[i] = (struct child){&p->sum, &mu, i + 1};
        if (sched_spawn(child_main, &cs[i], &kids, SCHED_CHILD) < 0)
            fail();
    }
    sched_group_wait(&kids, 0); /* joining children parks this coroutine */
    sched_group_cleanup(&kids);
    p->self = pthread_self();
    sched_offload(offl_fn, &p->o);
}

static void test_children_and_offload(void **state)
{
    struct parent p = {0};
    struct sched_group g;

    (void)state;
    sched_group_init(&g, 1);
    assert_int_equal(sched_spawn(parent_main, &p, &g, SCHED_REQUEST), 0);
    assert_int_equal(sched_group_wait(&g, 0), 0);
    assert_int_equal(p.sum, 36);
    assert_false(p.o.on_coroutine);
    assert_false(pthread_equal(p.o.ran_on, p.self));
    sched_group_cleanup(&g);
    /* Off a coroutine, offload runs inline. */
    sched_offload(offl_fn, &p.o);
    assert_true(pthread_equal(p.o.ran_on, pthread_self()));
}

/* ---- time slices: CPU work that does not wait is measured ---------------------------------- */

static void spin_main(void *arg)
{
    long long until = now_us() + *(long *)arg * 1000;

    while (now_us() < until)
        ;
}

static void test_slow_slice_measured(void **state)
{
    struct sched_group g;
    struct sched_stats st;
    long ms = 60;

    (void)state;
    sched_group_init(&g, 1);
    assert_int_equal(sched_spawn(spin_main, &ms, &g, SCHED_CHILD), 0);
    sched_group_wait(&g, 0);
    sched_group_cleanup(&g);
    /* The slice ends when the coroutine is back on its scheduler, just after it signalled. */
    for (int i = 0; i < 200; i++) {
        sched_stats(&st);
        if (st.slow_slices >= 1)
            break;
        sleep_ms(5);
    }
    assert_true(st.max_slice_us >= 60000);
    assert_true(st.slow_slices >= 1); /* and a WARN line on stderr */
}

/* ---- guard page ---------------------------------------------------------------------------- */

static int recurse(volatile char *prev, int depth)
{
    volatile char frame[512];

    frame[0] = (char)depth;
    frame[511] = prev ? prev[0] : 0;
    if (depth > 1000000)
        return frame[0];
    return recurse(frame, depth + 1) + frame[511];
}

static void overflow_main(void *arg)
{
    (void)arg;
    recurse(NULL, 0);
}

static void test_overflow_detected(void **state)
{
    int fds[2];
    pid_t pid;
    char out[4096] = {0};
    size_t n = 0;
    ssize_t r;
    int st;

    (void)state;
#if defined(__SANITIZE_THREAD__)
    skip(); /* TSan refuses threads in a child forked from a threaded parent */
#endif
    sched_stop(); /* the child starts its own scheduler */
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sched_group g;

        dup2(fds[1], 2);
        close(fds[0]);
        if (sched_start(1, 64 << 10) != 0)
            _exit(3);
        sched_group_init(&g, 1);
        sched_spawn(overflow_main, NULL, &g, SCHED_CHILD);
        sched_group_wait(&g, 10);
        _exit(0); /* not reached: the overflow aborts */
    }
    close(fds[1]);
    while (n < sizeof(out) - 1 && (r = read(fds[0], out + n, sizeof(out) - 1 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFSIGNALED(st))
        print_message("child: status %#x, stderr: %s\n", st, out);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
    assert_non_null(strstr(out, "coroutine stack overflow"));
    assert_int_equal(sched_start(2, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_switching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timed_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_races_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_waiting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_children_and_offload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_slice_measured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_detected, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
