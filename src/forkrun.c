/* forkrun.c: forkrun_run (include/forkrun.h): fork, limits, a pipe, a wall-clock kill.
 *
 * Why fork and not a helper process: the work (libz3 on a script) needs the solver library,
 * which is already in this process, and a fork costs about a millisecond; a pre-started
 * worker process fed over a pipe would need a second entry point in every binary that links
 * the approaches (the proxy, the eval runner, the tests). fork in a multithreaded process is
 * safe for what the child does here: glibc's fork takes and resets the allocator's locks, the
 * child takes no other lock its parent's threads may hold (the contract forbids logging and
 * shared stdio, and the parent never runs the solver itself), and it ends with _exit.
 *
 * Limits: RLIMIT_AS is what the child inherited (read from /proc/self/statm) plus mem_bytes,
 * so the parent's thread stacks and arenas do not count against the budget; RLIMIT_CPU is a
 * backstop above the wall time; no core files. File descriptors other than the pipe are
 * closed in the child, so client sockets do not outlive their requests in it. */
#define _GNU_SOURCE
#include "forkrun.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arena.h"
#include "px.h"

/* ThreadSanitizer cannot follow a child of a multithreaded process that starts threads (Z3's
 * timers do): under TSan the function runs in the calling thread, without limits, so that the
 * rest of the code is still checked; the fork path is covered by the other builds. */
#if defined(__SANITIZE_THREAD__)
#define FORKRUN_IN_PROCESS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FORKRUN_IN_PROCESS 1
#endif
#endif

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND RUNNING_ON_VALGRIND
#else
#define UNDER_VALGRIND 0
#endif

static pthread_once_t fr_once = PTHREAD_ONCE_INIT;
static sem_t fr_slots; /* one sandboxed run per core */

static void fr_init(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    sem_init(&fr_slots, 0, (unsigned)(n > 0 ? n : 1));
}

/* The child's address space now, in bytes (first field of /proc/self/statm, in pages);
 * async-signal-safe. 0 when unknown. */
static size_t vm_size(void)
{
    char buf[64];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    ssize_t n;
    size_t pages = 0;

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        pages = pages * 10 + (size_t)(buf[i] - '0');
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void child_main(const struct forkrun_limits *lim, forkrun_fn *fn, void *arg, int wfd)
{
    struct rlimit r;
    sigset_t none;
    char *out;
    size_t n;

    /* The parent's handlers and mask are not ours: default dispositions, nothing blocked. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (wfd != 3) { /* the pipe becomes fd 3, everything above it is closed */
        if (dup2(wfd, 3) < 0)
            _exit(121);
        wfd = 3;
    }
#ifdef SYS_close_range
    syscall(SYS_close_range, 4u, ~0u, 0u);
#endif
    r.rlim_cur = r.rlim_max = 0;
    setrlimit(RLIMIT_CORE, &r);
    r.rlim_cur = (rlim_t)(lim->wall_ms / 1000 + 2);
    r.rlim_max = r.rlim_cur + 1;
    setrlimit(RLIMIT_CPU, &r);
    /* Under valgrind the child's address space is valgrind's own, which then needs to grow:
     * no address-space limit there (memcheck runs are for finding bugs, not for limits). */
    if (lim->mem_bytes && !UNDER_VALGRIND) {
        r.rlim_cur = r.rlim_max = (rlim_t)(vm_size() + lim->mem_bytes);
        if (setrlimit(RLIMIT_AS, &r) != 0)
            _exit(122);
    }
    out = malloc(lim->out_max + 1);
    if (!out)
        _exit(123);
    n = fn(arg, out, lim->out_max);
    write_all(wfd, out, n < lim->out_max ? n : lim->out_max);
    free(out); /* nothing for a leak checker that follows the child (valgrind) to report */
    /* Under valgrind the child's exit runs a leak check of the whole forked image, where the
     * blocks other threads of the parent held (reachable from their stacks, which have no
     * thread here) look lost, and the child exits 9. Leaving through exec (valgrind does not
     * follow it: --trace-children=no) ends the image without that check. */
    if (UNDER_VALGRIND)
        execl("/bin/true", "true", (char *)NULL);
    _exit(0);
}

int forkrun_run(const struct forkrun_limits *lim, forkrun_fn *fn, void *arg, struct arena *a,
                const char **out, size_t *out_len, char *why, size_t why_len)
{
    int fds[2], status = 0, rc = FORKRUN_OK;
    char *buf = arena_alloc(a, lim->out_max + 1);
    size_t got = 0;
    long long deadline = px_now_us() + (long long)lim->wall_ms * 1000;
    bool timed_out = false;
    pid_t pid;

    *out = "";
    *out_len = 0;
    snprintf(why, why_len, "%s", "");
    pthread_once(&fr_once, fr_init);
    while (sem_wait(&fr_slots) != 0 && errno == EINTR)
        ;
#ifdef FORKRUN_IN_PROCESS
    got = fn(arg, buf, lim->out_max);
    got = got < lim->out_max ? got : lim->out_max;
    buf[got] = '\0';
    sem_post(&fr_slots);
    *out = buf;
    *out_len = got;
    (void)deadline;
    (void)timed_out;
    (void)status;
    (void)fds;
    (void)pid;
    (void)child_main;
    return rc;
#endif
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(why, why_len, "cannot create a pipe: %s", strerror(errno));
        sem_post(&fr_slots);
        return FORKRUN_ERROR;
    }
    pid = fork();
    if (pid == 0) {
        close(fds[0]);
        child_main(lim, fn, arg, fds[1]);
    }
    close(fds[1]);
    if (pid < 0) {
        snprintf(why, why_len, "cannot fork: %s", strerror(errno));
        close(fds[0]);
        sem_post(&fr_slots);
        return FORKRUN_ERROR;
    }
    for (;;) { /* read until EOF or the deadline; output past out_max is read and dropped */
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        long long left = (deadline - px_now_us()) / 1000;
        char sink[4096];
        ssize_t n;

        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (poll(&p, 1, (int)(left > 1000000 ? 1000000 : left)) <= 0)
            continue; /* EINTR or a spurious wake-up: the loop re-checks the deadline */
        if (got < lim->out_max)
            n = read(fds[0], buf + got, lim->out_max - got);
        else
            n = read(fds[0], sink, sizeof(sink));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (got < lim->out_max)
            got += (size_t)n;
    }
    close(fds[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    sem_post(&fr_slots);
    buf[got] = '\0';
    if (timed_out) {
        snprintf(why, why_len, "stopped at the time limit of %ld ms", lim->wall_ms);
        rc = FORKRUN_TIMEOUT;
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);

        snprintf(why, why_len, "killed by signal %d (%s)", sig,
                 sig == SIGXCPU || sig == SIGKILL                    ? "CPU limit"
                 : sig == SIGABRT || sig == SIGSEGV || sig == SIGBUS ? "out of memory or a crash"
                                                                     : "crashed");
        rc = FORKRUN_FAILED;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, why_len, "exited with status %d (out of memory or a crash)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        rc = FORKRUN_FAILED;
    }
    *out = buf;
    *out_len = got;
    return rc;
}
