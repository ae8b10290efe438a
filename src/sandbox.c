/* sandbox.c: untrusted Python in a throw-away bubblewrap sandbox (include/sandbox.h).
 *
 * What one run gets (Debian's /usr/bin/bwrap around /usr/bin/python3 -I, code on stdin):
 *   - namespaces: bwrap --unshare-all --unshare-user --disable-userns: a fresh network
 *     namespace (loopback only, nothing listening: no socket reaches the host or the
 *     upstream), and fresh pid, ipc, uts, cgroup and user namespaces; no nested userns.
 *   - files: a new root holding /usr read-only (plus the /lib*, /bin, /sbin links or
 *     read-only binds), a fresh /proc of its own pid namespace, a minimal /dev, and a private
 *     tmpfs of TMPFS_BYTES at /tmp, the working directory and the only writable place (the
 *     new root and /dev are remounted read-only, so nothing piles up outside the capped
 *     tmpfs; /dev/shm is read-only too: multiprocessing's semaphores do not work). No
 *     /etc, /home, /root, the repository or the host's /proc.
 *   - environment: --clearenv, PATH/HOME/LANG only; bwrap itself is exec'd with that small
 *     environment too, so the proxy's (OPENAI_API_KEY, ...) never reaches the child.
 *   - descriptors: 0, 1, 2 only (pipes); every other descriptor is closed before exec.
 *   - limits, set in the forked child before exec: RLIMIT_CPU (timeout + 1 s, SIGXCPU then
 *     SIGKILL), RLIMIT_AS (AS_BYTES per process), RLIMIT_NPROC (NPROC), RLIMIT_FSIZE
 *     (FSIZE_BYTES), RLIMIT_NOFILE, RLIMIT_CORE 0; a wall-clock limit (--code-execution-
 *     timeout, default 10 s) after which the process group is killed (bwrap's
 *     --die-with-parent and the pid namespace take every process inside with it); stdout kept
 *     up to SANDBOX_OUTPUT_MAX and stderr up to SANDBOX_ERR_MAX, the rest read and dropped,
 *     and a run that prints more than FLOOD_BYTES is killed.
 *   - identity: RLIMIT_NPROC counts the processes of a user id, and the kernel does not
 *     apply it to root. When the proxy runs as root, each run takes a dedicated unused uid
 *     and gid (UID_BASE + slot, one of SLOTS, no supplementary groups) before exec, so a fork
 *     bomb meets the limit and runs cannot see or signal each other; at most SLOTS runs at
 *     once (the others wait). After each run every process left with that uid is killed
 *     (slot_sweep) before the slot is reused; slots go round robin, and a flock on
 *     /run/optillm-sandbox/<uid> keeps two processes on one host (two proxies, a test)
 *     from sharing a uid. bwrap's init inside the pid
 * namespace may outlive the outer bwrap by a moment and be reaped by the host's init: where the
 * proxy is itself pid 1 (a container without an init), run it under one (docker --init). As another
 * user, the run keeps the proxy's uid and the process limit is not set (it would count the proxy's
 * own threads): documented.
 *
 * Threads: the proxy is multithreaded, so the child calls only async-signal-safe functions
 * (raw syscalls) between fork and exec; argv and envp are built before the fork. A run
 * blocks in poll() and waitid() for at most the timeout: sandbox_run_python hands it to
 * sched_offload, so a request's coroutine parks while a helper thread waits (and forks from
 * a full-size stack). Off a coroutine (tests, optillm-eval) it runs on the calling thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "sandbox.h"
#include "scheduler.h"

#define BWRAP       "/usr/bin/bwrap"
#define PYTHON      "/usr/bin/python3"
#define TMPFS_BYTES "16777216"    /* 16 MiB */
#define AS_BYTES    (512ul << 20) /* address space per process */
#define FSIZE_BYTES (1ul << 20)   /* largest file written */
#define NPROC       16            /* processes of the sandbox's uid */
#define NOFILE      64            /* descriptors per process */
#define FLOOD_BYTES (4ul << 20)   /* output read before the run is killed */
#define UID_BASE    1990000u      /* root: uids/gids UID_BASE .. UID_BASE + SLOTS - 1 */
#define SLOTS       16
#define LOCK_DIR    "/run/optillm-sandbox" /* root: one lock file per sandbox uid */
#define EXEC_FAILED 127

/* ---- the uid slots (root only) ------------------------------------------------------------- */

static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER; /* guards slot_used */
static pthread_cond_t slot_cv = PTHREAD_COND_INITIALIZER;
static bool slot_used[SLOTS];
static int slot_next; /* round robin: a uid rests as long as possible between runs */

static bool lock_dir_ok;
static pthread_once_t lock_once = PTHREAD_ONCE_INIT;

/* LOCK_DIR must be root's alone (else another user could hold every slot's lock). */
static void lock_dir_init(void)
{
    struct stat st;

    (void)mkdir(LOCK_DIR, 0700);
    lock_dir_ok = lstat(LOCK_DIR, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
                  (st.st_mode & 022) == 0;
    if (!lock_dir_ok)
        log_warn("code sandbox: %s is not a directory of root's alone: runs are not locked "
                 "against other processes using the same uids",
                 LOCK_DIR);
}

/* Another process (a second proxy on the host, a test) may use the same uids: a slot is
 * taken only with an exclusive flock on LOCK_DIR/<uid>, held for the run. Returns the locked
 * descriptor, -1 when another process holds it, -2 when there is no lock directory. */
static int slot_lock(int slot)
{
    char path[128];
    int fd;

    pthread_once(&lock_once, lock_dir_init);
    if (!lock_dir_ok)
        return -2;
    snprintf(path, sizeof(path), LOCK_DIR "/%u", UID_BASE + (unsigned)slot);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A free slot, waiting for one up to 'deadline_us'; -1 when none came. *lock_fd is the
 * slot's lock (slot_give closes it). */
static int slot_take(long long deadline_us, int *lock_fd)
{
    int got = -1;

    *lock_fd = -1;
    pthread_mutex_lock(&slot_mu);
    for (;;) {
        for (int i = 0; i < SLOTS && got < 0; i++) {
            int s = (slot_next + i) % SLOTS;

            if (!slot_used[s] && (*lock_fd = slot_lock(s)) != -1)
                got = s;
        }
        if (got >= 0 || px_now_us() >= deadline_us)
            break;
        {
            /* px_now_us is monotonic, the condvar's clock is not: wait in short steps. */
            struct timespec ts;

            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&slot_cv, &slot_mu, &ts);
        }
    }
    if (got >= 0) {
        slot_used[got] = true;
        slot_next = (got + 1) % SLOTS;
    }
    pthread_mutex_unlock(&slot_mu);
    return got;
}

/* Root only, after a run we killed: every process still running as the run's uid gets
 * SIGKILL (a helper that takes the uid calls kill(-1), which reaches exactly the processes
 * that uid owns, in any pid namespace). The slot's uid is used by this run alone, so nothing
 * else is touched. Not after a normal end: then bwrap's init, the namespace's pid 1, has
 * already killed and reaped everything inside (killing it too early would leave the
 * processes to the host's init as zombies, which count against the uid's process limit). */
static void slot_sweep(uid_t uid)
{
    pid_t pid = fork();

    if (pid == 0) {
        if (syscall(SYS_setresgid, uid, uid, uid) == 0 &&
            syscall(SYS_setresuid, uid, uid, uid) == 0)
            (void)kill(-1, SIGKILL);
        _exit(0);
    }
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
}

static void slot_give(int slot, int lock_fd)
{
    if (slot < 0)
        return;
    if (lock_fd >= 0)
        close(lock_fd); /* releases the flock */
    pthread_mutex_lock(&slot_mu);
    slot_used[slot] = false;
    pthread_cond_signal(&slot_cv);
    pthread_mutex_unlock(&slot_mu);
}

/* ---- the command line ------------------------------------------------------------------------ */

#define ARGV_MAX 64

struct cmd {
    const char *argv[ARGV_MAX];
    int argc;
};

static void add(struct cmd *c, const char *s)
{
    if (c->argc < ARGV_MAX - 1)
        c->argv[c->argc++] = s;
    c->argv[c->argc] = NULL;
}

/* The top-level system paths outside /usr: merged-/usr links become links, real directories
 * read-only binds, absent ones are skipped. Targets are static (built once). */
static const char *const top_dirs[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
static char top_link[PX_ARRAY_LEN(top_dirs)][256];
static int top_kind[PX_ARRAY_LEN(top_dirs)]; /* 0 absent, 1 link, 2 directory */
static pthread_once_t top_once = PTHREAD_ONCE_INIT;

static void top_scan(void)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(top_dirs); i++) {
        struct stat st;

        if (lstat(top_dirs[i], &st) != 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(top_dirs[i], top_link[i], sizeof(top_link[i]) - 1);

            if (n > 0) {
                top_link[i][n] = '\0';
                top_kind[i] = 1;
            }
        } else if (S_ISDIR(st.st_mode)) {
            top_kind[i] = 2;
        }
    }
}

static void build_cmd(struct cmd *c)
{
    pthread_once(&top_once, top_scan);
    c->argc = 0;
    add(c, BWRAP);
    add(c, "--unshare-all"); /* net, pid, ipc, uts, cgroup (and user) */
    add(c, "--unshare-user");
    add(c, "--disable-userns");
    add(c, "--die-with-parent");
    add(c, "--new-session");
    add(c, "--clearenv");
    add(c, "--setenv");
    add(c, "PATH");
    add(c, "/usr/bin:/bin");
    add(c, "--setenv");
    add(c, "HOME");
    add(c, "/tmp");
    add(c, "--setenv");
    add(c, "LANG");
    add(c, "C.UTF-8");
    add(c, "--ro-bind");
    add(c, "/usr");
    add(c, "/usr");
    for (size_t i = 0; i < PX_ARRAY_LEN(top_dirs); i++) {
        if (top_kind[i] == 1) {
            add(c, "--symlink");
            add(c, top_link[i]);
            add(c, top_dirs[i]);
        } else if (top_kind[i] == 2) {
            add(c, "--ro-bind");
            add(c, top_dirs[i]);
            add(c, top_dirs[i]);
        }
    }
    add(c, "--proc");
    add(c, "/proc");
    add(c, "--dev");
    add(c, "/dev");
    add(c, "--size");
    add(c, TMPFS_BYTES);
    add(c, "--tmpfs");
    add(c, "/tmp");
    add(c, "--remount-ro"); /* the new root itself (bwrap's tmpfs) stays empty */
    add(c, "/");
    add(c, "--remount-ro"); /* so do /dev and /dev/shm (their device nodes still work) */
    add(c, "/dev");
    add(c, "--chdir");
    add(c, "/tmp");
    add(c, "--");
    add(c, PYTHON);
    add(c, "-I"); /* no PYTHON* variables, no user site, script dir not on sys.path */
    add(c, "-");  /* the program comes on stdin */
}

/* ---- the child (async-signal-safe only) ----------------------------------------------------- */

struct limits {
    rlim_t cpu;
    bool as_root; /* switch to uid/gid below and limit processes */
    uid_t uid;
};

static void set_limit(int res, rlim_t soft, rlim_t hard)
{
    struct rlimit rl = {soft, hard};

    (void)setrlimit(res, &rl);
}

static __attribute__((noreturn)) void child(int in, int out, int err, int report,
                                            const struct limits *lim, const char *const *argv,
                                            const char *const *envp)
{
    sigset_t none;
    struct sigaction dfl;
    int e, rep;

    setpgid(0, 0);
    /* Out of the way first: a proxy started with 0-2 closed may have got its pipes there. */
    if ((rep = fcntl(report, F_DUPFD, 10)) < 0)
        goto fail;
    report = rep;
    in = fcntl(in, F_DUPFD, 10);
    out = fcntl(out, F_DUPFD, 10);
    err = fcntl(err, F_DUPFD, 10);
    if (in < 0 || out < 0 || err < 0)
        goto fail;
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0 || dup2(report, 3) < 0)
        goto fail;
    report = 3;
    (void)fcntl(3, F_SETFD, FD_CLOEXEC); /* tells the parent that exec failed, or nothing */
    /* Every other descriptor of the proxy (client sockets, upstream connections) goes. */
    if (syscall(SYS_close_range, 4u, ~0u, 0u) != 0)
        for (int fd = 4; fd < 65536; fd++)
            (void)close(fd);
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL); /* the proxy blocks SIGTERM/SIGINT/SIGHUP */
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    (void)sigaction(SIGPIPE, &dfl, NULL); /* the proxy ignores it; exec keeps "ignored" */
    set_limit(RLIMIT_CPU, lim->cpu, lim->cpu + 1);
    set_limit(RLIMIT_AS, AS_BYTES, AS_BYTES);
    set_limit(RLIMIT_FSIZE, FSIZE_BYTES, FSIZE_BYTES);
    set_limit(RLIMIT_NOFILE, NOFILE, NOFILE);
    set_limit(RLIMIT_CORE, 0, 0);
    if (lim->as_root) {
        set_limit(RLIMIT_NPROC, NPROC, NPROC);
        /* Raw syscalls: they change this (only) thread's credentials, no glibc broadcast. */
        if (syscall(SYS_setgroups, 0, NULL) != 0 ||
            syscall(SYS_setresgid, lim->uid, lim->uid, lim->uid) != 0 ||
            syscall(SYS_setresuid, lim->uid, lim->uid, lim->uid) != 0)
            goto fail;
    }
    /* After the credential change, which clears it: bwrap dies with the proxy's thread. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    execve(argv[0], (char *const *)argv, (char *const *)envp);
fail:
    e = errno;
    (void)!write(report, &e, sizeof(e));
    _exit(EXEC_FAILED);
}

/* ---- the parent ------------------------------------------------------------------------------ */

struct stream {
    int fd;
    struct buf kept;
    size_t cap;
    size_t total;
};

static void drain(struct stream *s)
{
    char tmp[16384];

    while (s->fd >= 0) {
        ssize_t n = read(s->fd, tmp, sizeof(tmp));

        if (n > 0) {
            size_t room = s->kept.len < s->cap ? s->cap - s->kept.len : 0;

            buf_append(&s->kept, tmp, (size_t)n < room ? (size_t)n : room);
            s->total += (size_t)n;
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            close(s->fd);
            s->fd = -1;
        } else if (errno == EAGAIN) {
            return;
        }
    }
}

static const struct config *cfg_of(const struct approach_ctx *ctx)
{
    /* approach_opts is the server's configuration (llm_api.c, approach_opts_of). */
    return (const struct config *)(const void *)ctx->opts;
}

static int pipe_pair(int p[2])
{
    return pipe2(p, O_CLOEXEC);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Runs code under cfg's limits. Returns 0 with r filled (strings in 'a'), or -1 (the sandbox
 * failed) or -2 (no free uid slot) with msg. */
static int run(struct arena *a, const struct config *cfg, const char *code,
               struct sandbox_result *r, char *msg, size_t msglen)
{
    double timeout = cfg && cfg->code_timeout > 0 ? cfg->code_timeout : 10;
    long long start = px_now_us();
    long long deadline = start + (long long)(timeout * 1e6);
    struct cmd cmd;
    static const char *const envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", NULL};
    struct limits lim = {.cpu = (rlim_t)timeout + 1, .as_root = geteuid() == 0};
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    struct stream so = {.fd = -1, .cap = SANDBOX_OUTPUT_MAX};
    struct stream se = {.fd = -1, .cap = SANDBOX_ERR_MAX};
    size_t code_len = strlen(code), sent = 0;
    int slot = -1, lock_fd = -1, status = 0, child_errno = 0, rc = -1;
    bool exited = false, killed = false, flood = false;
    pid_t pid;

    memset(r, 0, sizeof(*r));
    r->timeout_s = timeout;
    buf_init(&so.kept, 0);
    buf_init(&se.kept, 0);
    build_cmd(&cmd);
    if (lim.as_root) {
        slot = slot_take(deadline, &lock_fd);
        if (slot < 0) {
            snprintf(msg, msglen, "every code sandbox stayed busy for %g s", timeout);
            rc = -2;
            goto out;
        }
        lim.uid = UID_BASE + (uid_t)slot;
        start = px_now_us(); /* the wait for a slot is not the program's time */
        deadline = start + (long long)(timeout * 1e6);
    }
    if (pipe_pair(in) || pipe_pair(out) || pipe_pair(err) || pipe_pair(rep)) {
        snprintf(msg, msglen, "pipe: %s", strerror(errno));
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(msg, msglen, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0)
        child(in[0], out[1], err[1], rep[1], &lim, cmd.argv, (const char *const *)envp);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&rep[1]);
    so.fd = out[0];
    se.fd = err[0];
    out[0] = err[0] = -1;
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(so.fd, F_SETFL, O_NONBLOCK);
    fcntl(se.fd, F_SETFL, O_NONBLOCK);
    if (code_len == 0)
        close_fd(&in[1]);

    while (!exited) {
        struct pollfd p[3];
        int np = 0;
        long long now = px_now_us();
        long long wait_ms;

        if (now >= deadline || flood) {
            killed = !flood;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            exited = true;
            break;
        }
        wait_ms = (deadline - now) / 1000 + 1;
        if (wait_ms > 50)
            wait_ms = 50; /* waitpid is polled as well: a quiet program may have ended */
        if (in[1] >= 0)
            p[np++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        if (so.fd >= 0)
            p[np++] = (struct pollfd){.fd = so.fd, .events = POLLIN};
        if (se.fd >= 0)
            p[np++] = (struct pollfd){.fd = se.fd, .events = POLLIN};
        if (np > 0 && poll(p, (nfds_t)np, (int)wait_ms) < 0 && errno != EINTR) {
            deadline = 0; /* cannot watch it: stop it */
            continue;
        }
        if (np == 0) {
            struct timespec ts = {0, 10 * 1000000L};

            nanosleep(&ts, NULL);
        }
        if (in[1] >= 0) {
            ssize_t n = write(in[1], code + sent, code_len - sent);

            if (n > 0)
                sent += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == code_len)
                close_fd(&in[1]); /* EPIPE (SIGPIPE is ignored by the proxy): it ended */
        }
        drain(&so);
        drain(&se);
        flood = so.total + se.total > FLOOD_BYTES;
        {
            siginfo_t si;

            si.si_pid = 0;
            /* Ended? Peek without reaping: until it is reaped, its pid and group id cannot be
             * reused, so the group can still be killed safely. */
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid) {
                exited = true;
                kill(-pid, SIGKILL); /* anything left in its group */
                waitpid(pid, &status, 0);
                drain(&so); /* what is still in the pipes */
                drain(&se);
            }
        }
    }
    close_fd(&in[1]);
    if (lim.as_root && (killed || flood))
        slot_sweep(lim.uid); /* what the pid namespace's end has not taken yet */
    if (read(rep[0], &child_errno, sizeof(child_errno)) == (ssize_t)sizeof(child_errno)) {
        snprintf(msg, msglen, "cannot start %s: %s", BWRAP, strerror(child_errno));
        goto out;
    }
    r->ms = (px_now_us() - start) / 1000;
    r->out_cut = so.total > so.kept.len;
    r->err_cut = se.total > se.kept.len;
    r->out = arena_strndup(a, buf_cstr(&so.kept), so.kept.len);
    r->err = arena_strndup(a, buf_cstr(&se.kept), se.kept.len);
    if (killed) {
        r->end = SANDBOX_TIMEOUT;
    } else if (flood) {
        r->end = SANDBOX_FLOOD;
    } else if (WIFSIGNALED(status)) {
        r->end = SANDBOX_SIGNALED;
        r->signal = WTERMSIG(status);
    } else {
        int code_rc = WEXITSTATUS(status);

        /* bwrap reports a program killed by signal S as 128 + S. */
        if (code_rc > 128 && code_rc < 128 + 65) {
            r->end = SANDBOX_SIGNALED;
            r->signal = code_rc - 128;
        } else {
            r->end = SANDBOX_EXITED;
            r->exit_code = code_rc;
        }
    }
    /* bwrap's own failure (namespaces refused, ...) is not the program's: exit 1 with
     * "bwrap: ..." on stderr before python ran. */
    if (r->end == SANDBOX_EXITED && r->exit_code == 1 && strncmp(r->err, "bwrap: ", 7) == 0) {
        snprintf(msg, msglen, "%.*s", (int)strcspn(r->err, "\n"), r->err);
        goto out;
    }
    rc = 0;
out:
    close_fd(&in[0]);
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&out[1]);
    close_fd(&err[0]);
    close_fd(&err[1]);
    close_fd(&rep[0]);
    close_fd(&rep[1]);
    close_fd(&so.fd);
    close_fd(&se.fd);
    buf_free(&so.kept);
    buf_free(&se.kept);
    slot_give(slot, lock_fd);
    return rc;
}

struct offload_job {
    struct arena *a;
    const struct config *cfg;
    const char *code;
    struct sandbox_result *r;
    char *msg;
    size_t msglen;
    int rc;
};

static void offload_main(void *arg)
{
    struct offload_job *j = arg;

    j->rc = run(j->a, j->cfg, j->code, j->r, j->msg, j->msglen);
}

int sandbox_run_python(struct approach_ctx *ctx, const char *code, struct sandbox_result *out)
{
    const struct config *cfg = cfg_of(ctx);
    char msg[256] = "";
    int rc;

    memset(out, 0, sizeof(*out));
    if (!cfg || !cfg->enable_code_execution)
        return px_fail(ctx->err, PX_EINVAL, "model",
                       "code execution is disabled on this server (start it with "
                       "--enable-code-execution)");
    if (strlen(code) > SANDBOX_CODE_MAX)
        return px_fail(ctx->err, PX_EINVAL, NULL, "code longer than %d bytes", SANDBOX_CODE_MAX);
    {
        /* The run blocks (fork, poll, waitpid) for up to the timeout: on a helper thread, not
         * on the request's coroutine (whose scheduler thread serves other requests). The
         * request's arena is not touched meanwhile: its coroutine waits for the helper. */
        struct offload_job j = {ctx->arena, cfg, code, out, msg, sizeof(msg), -1};

        sched_offload(offload_main, &j);
        rc = j.rc;
    }
    switch (rc) {
    case 0:
        break;
    case -2:
        log_at(LOG_WARN, ctx->req_id, "code sandbox: %s", msg);
        return px_fail(ctx->err, PX_EBUSY, NULL, "the code sandbox is busy: %s", msg);
    default:
        log_at(LOG_ERROR, ctx->req_id, "code sandbox: %s", msg);
        return px_fail(ctx->err, PX_EINTERNAL, NULL, "the code sandbox failed: %s", msg);
    }
    log_at(LOG_DEBUG, ctx->req_id,
           "code sandbox: end %d, exit %d, signal %d, %zu+%zu bytes, %lld ms", (int)out->end,
           out->exit_code, out->signal, strlen(out->out), strlen(out->err), out->ms);
    return PX_OK;
}

int sandbox_selftest(const struct config *cfg, char *msg, size_t len)
{
    struct arena *a = arena_create();
    struct sandbox_result r;
    int rc = -1;

    if (run(a, cfg, "print(6 * 7)\n", &r, msg, len) != 0)
        goto out;
    if (r.end != SANDBOX_EXITED || r.exit_code != 0 || strcmp(r.out, "42\n") != 0) {
        snprintf(msg, len, "%s -I printed '%.60s' (end %d, exit %d): %.120s", PYTHON, r.out,
                 (int)r.end, r.exit_code, r.err);
        goto out;
    }
    rc = 0;
out:
    arena_destroy(a);
    return rc;
}
