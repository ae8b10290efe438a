/* test_forkrun.c: forkrun_run (include/forkrun.h): output through the pipe and its cap, the
 * memory limit, the wall-clock kill, a crash, and runs at once from several threads. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "forkrun.h"
#include "px.h"

/* Under ThreadSanitizer forkrun_run runs in-process, without limits (src/forkrun.c). */
#if defined(__SANITIZE_THREAD__)
#define NO_FORK 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NO_FORK 1
#endif
#endif
#ifdef NO_FORK
#define NEEDS_FORK() skip()
#else
#define NEEDS_FORK() (void)0
#endif
/* Under valgrind forkrun sets no address-space limit (src/forkrun.c). */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define NEEDS_AS_LIMIT()                                                                           \
    do {                                                                                           \
        if (RUNNING_ON_VALGRIND)                                                                   \
            skip();                                                                                \
    } while (0)
#else
#define NEEDS_AS_LIMIT() (void)0
#endif

static size_t say_hello(void *arg, char *out, size_t max)
{
    return (size_t)snprintf(out, max, "hello %s", (const char *)arg);
}

static size_t fill(void *arg, char *out, size_t max)
{
    (void)arg;
    memset(out, 'x', max);
    return max;
}

/* Tries to allocate and touch 256 MiB. */
static size_t big_alloc(void *arg, char *out, size_t max)
{
    size_t n = (size_t)256 << 20;
    char *p = malloc(n);

    (void)arg;
    if (!p)
        return (size_t)snprintf(out, max, "refused");
    memset(p, 1, n);
    return (size_t)snprintf(out, max, "allocated %d", p[n - 1]);
}

static size_t spin(void *arg, char *out, size_t max)
{
    (void)arg;
    (void)out;
    (void)max;
    for (;;)
        sleep(1);
    return 0;
}

static size_t crash(void *arg, char *out, size_t max)
{
    (void)arg;
    (void)out;
    (void)max;
    abort();
}

static void test_output(void **state)
{
    struct arena *a = arena_create();
    struct forkrun_limits lim = {.mem_bytes = 64u << 20, .wall_ms = 5000, .out_max = 1024};
    const char *out;
    size_t len;
    char why[128];

    (void)state;
    assert_int_equal(forkrun_run(&lim, say_hello, "world", a, &out, &len, why, sizeof(why)),
                     FORKRUN_OK);
    assert_string_equal(out, "hello world");
    assert_int_equal(len, 11);
    lim.out_max = 100; /* capped */
    assert_int_equal(forkrun_run(&lim, fill, NULL, a, &out, &len, why, sizeof(why)), FORKRUN_OK);
    assert_int_equal(len, 100);
    assert_int_equal(strlen(out), 100);
    arena_destroy(a);
}

/* The child cannot grow past its budget; the parent is untouched. */
static void test_memory_limit(void **state)
{
    struct arena *a;
    struct forkrun_limits lim = {.mem_bytes = 64u << 20, .wall_ms = 10000, .out_max = 1024};
    const char *out;
    size_t len;
    char why[128];
    int rc;

    (void)state;
    NEEDS_FORK();
    NEEDS_AS_LIMIT();
    a = arena_create();
    rc = forkrun_run(&lim, big_alloc, NULL, a, &out, &len, why, sizeof(why));
    assert_true(rc == FORKRUN_OK || rc == FORKRUN_FAILED);
    if (rc == FORKRUN_OK)
        assert_string_equal(out, "refused");
    lim.mem_bytes = 512u << 20; /* with room, the same work succeeds */
    assert_int_equal(forkrun_run(&lim, big_alloc, NULL, a, &out, &len, why, sizeof(why)),
                     FORKRUN_OK);
    assert_string_equal(out, "allocated 1");
    arena_destroy(a);
}

static void test_timeout(void **state)
{
    struct arena *a = arena_create();
    struct forkrun_limits lim = {.mem_bytes = 64u << 20, .wall_ms = 300, .out_max = 1024};
    const char *out;
    size_t len;
    char why[128];
    long long t0 = px_now_us();

    (void)state;
    NEEDS_FORK();
    assert_int_equal(forkrun_run(&lim, spin, NULL, a, &out, &len, why, sizeof(why)),
                     FORKRUN_TIMEOUT);
    assert_true(px_now_us() - t0 < 3000000);
    assert_non_null(strstr(why, "time limit"));
    arena_destroy(a);
}

static void test_crash(void **state)
{
    struct arena *a = arena_create();
    struct forkrun_limits lim = {.mem_bytes = 64u << 20, .wall_ms = 5000, .out_max = 1024};
    const char *out;
    size_t len;
    char why[128];

    (void)state;
    NEEDS_FORK();
    assert_int_equal(forkrun_run(&lim, crash, NULL, a, &out, &len, why, sizeof(why)),
                     FORKRUN_FAILED);
    assert_non_null(strstr(why, "signal"));
    arena_destroy(a);
}

static void *one_run(void *arg)
{
    struct arena *a = arena_create();
    struct forkrun_limits lim = {.mem_bytes = 64u << 20, .wall_ms = 5000, .out_max = 64};
    const char *out;
    size_t len;
    char why[128];
    int rc = forkrun_run(&lim, say_hello, arg, a, &out, &len, why, sizeof(why));

    if (rc != FORKRUN_OK || strcmp(out + 6, arg) != 0)
        *(int *)0 = 0; /* fails loudly */
    arena_destroy(a);
    return NULL;
}

/* Runs from several threads at once (more than cores: they wait for a slot). */
static void test_threads(void **state)
{
    static char names[8][16];
    pthread_t th[8];

    (void)state;
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, one_run, names[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output),  cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_timeout), cmocka_unit_test(test_crash),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
