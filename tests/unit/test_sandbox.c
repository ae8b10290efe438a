/* test_sandbox.c: the code sandbox (include/sandbox.h) with the REAL bubblewrap and python3:
 * a normal run, errors, and programs that try to get out on purpose (network, files outside
 * /tmp, the proxy's environment and descriptors, the host's /proc, fork and memory bombs,
 * endless loops, floods of output), each contained; several runs at once; the python block
 * extractor and the text for the model. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "approach.h"
#include "arena.h"
#include "config.h"
#include "log.h"
#include "px.h"
#include "sandbox.h"

struct env {
    struct arena *arena;
    struct config cfg;
    struct px_error err;
    struct approach_ctx ctx;
    struct sandbox_result r;
};

static void env_init(struct env *e, double timeout)
{
    memset(e, 0, sizeof(*e));
    e->arena = arena_create();
    e->cfg.enable_code_execution = true;
    e->cfg.code_timeout = timeout;
    e->ctx.arena = e->arena;
    e->ctx.err = &e->err;
    e->ctx.opts = approach_opts_of(&e->cfg);
    e->ctx.req_id = "test";
}

static void env_free(struct env *e)
{
    arena_destroy(e->arena);
}

/* Runs code; asserts the sandbox ran it. */
static const struct sandbox_result *run(struct env *e, const char *code)
{
    int rc = sandbox_run_python(&e->ctx, code, &e->r);

    if (rc != PX_OK)
        fail_msg("sandbox_run_python: %d %s", rc, e->err.message);
    return &e->r;
}

/* Running (not zombie) processes of the sandbox's uids (root: 1990000..1990015) that no run
 * holds: a uid whose lock (/run/optillm-sandbox/<uid>, src/sandbox.c) another process holds
 * is in use by a run of that process (a concurrent test), not left over. */
static int leftover_procs(void)
{
    int per_uid[16] = {0};
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char path[64], line[256];
        bool zombie = false;
        unsigned uid;
        FILE *f;

        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%.20s/status", de->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "State:", 6) == 0 && strchr(line, 'Z'))
                zombie = true;
            if (sscanf(line, "Uid: %u", &uid) == 1) {
                if (!zombie && uid >= 1990000u && uid < 1990016u)
                    per_uid[uid - 1990000u]++;
                break;
            }
        }
        fclose(f);
    }
    closedir(d);
    for (int i = 0; i < 16; i++) {
        char path[64];
        int fd;

        if (!per_uid[i])
            continue;
        snprintf(path, sizeof(path), "/run/optillm-sandbox/%d", 1990000 + i);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd); /* a run of another process */
            continue;
        }
        if (fd >= 0)
            close(fd);
        fprintf(stderr, "uid %d: %d process(es) left\n", 1990000 + i, per_uid[i]);
        n += per_uid[i];
    }
    return n;
}

/* Waits up to 5 s for leftover_procs() to reach 0; returns what is left then. */
static int leftover_procs_gone(void)
{
    int n = 0;

    for (int i = 0; i < 100 && (n = leftover_procs()) > 0; i++) {
        struct timespec ts = {0, 50 * 1000000L};

        nanosleep(&ts, NULL);
    }
    return n;
}

static void test_sandbox_disabled(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, 5);
    e.cfg.enable_code_execution = false;
    assert_int_equal(sandbox_run_python(&e.ctx, "print(1)", &e.r), PX_EINVAL);
    assert_non_null(strstr(e.err.message, "--enable-code-execution"));
    env_free(&e);
}

static void test_sandbox_hello(void **state)
{
    struct env e;
    const struct sandbox_result *r;
    char msg[256];

    (void)state;
    env_init(&e, 5);
    r = run(&e, "import os\nprint(6 * 7)\nprint(os.getcwd())\n");
    assert_int_equal(r->end, SANDBOX_EXITED);
    assert_int_equal(r->exit_code, 0);
    assert_string_equal(r->out, "42\n/tmp\n");
    assert_string_equal(r->err, "");
    assert_false(r->out_cut);
    assert_int_equal(sandbox_selftest(&e.cfg, msg, sizeof(msg)), 0);
    env_free(&e);
}

static void test_sandbox_errors(void **state)
{
    struct env e;
    const struct sandbox_result *r;
    char *big;

    (void)state;
    env_init(&e, 5);
    r = run(&e, "print('before')\n1/0\n");
    assert_int_equal(r->end, SANDBOX_EXITED);
    assert_int_equal(r->exit_code, 1);
    assert_string_equal(r->out, "before\n");
    assert_non_null(strstr(r->err, "ZeroDivisionError"));
    assert_non_null(strstr(sandbox_describe(&e.ctx, r), "exit status 1"));
    r = run(&e, "def f(:\n");
    assert_int_equal(r->exit_code, 1);
    assert_non_null(strstr(r->err, "SyntaxError"));
    r = run(&e, "import sys\nsys.exit(3)\n");
    assert_int_equal(r->exit_code, 3);
    /* No standard input: input() sees the end at once. */
    r = run(&e, "try:\n    input()\nexcept EOFError:\n    print('eof')\n");
    assert_string_equal(r->out, "eof\n");
    /* Empty code runs (and does nothing). */
    r = run(&e, "");
    assert_int_equal(r->exit_code, 0);
    /* Too much code is refused before anything runs. */
    big = xcalloc(SANDBOX_CODE_MAX + 2, 1);
    memset(big, '#', SANDBOX_CODE_MAX + 1);
    assert_int_equal(sandbox_run_python(&e.ctx, big, &e.r), PX_EINVAL);
    free(big);
    env_free(&e);
}

/* A listening socket on the host's loopback: the program must not reach it. */
static void test_sandbox_network(void **state)
{
    struct env e;
    const struct sandbox_result *r;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    char *code;

    (void)state;
    env_init(&e, 5);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s, 4), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    code = arena_printf(e.arena,
                        "import socket\n"
                        "s = socket.socket()\n"
                        "s.settimeout(2)\n"
                        "try:\n"
                        "    s.connect(('127.0.0.1', %d))\n"
                        "    print('CONNECTED')\n"
                        "except OSError as e:\n"
                        "    print('blocked', type(e).__name__)\n"
                        "import os\n"
                        "print(sorted(os.listdir('/sys/class/net')) if os.path.exists("
                        "'/sys/class/net') else 'no sys')\n",
                        ntohs(sa.sin_port));
    r = run(&e, code);
    assert_int_equal(r->exit_code, 0);
    assert_null(strstr(r->out, "CONNECTED"));
    assert_non_null(strstr(r->out, "blocked"));
    close(s);
    env_free(&e);
}

static void test_sandbox_files(void **state)
{
    struct env e;
    const struct sandbox_result *r;
    char cwd[1024];
    char *code;

    (void)state;
    env_init(&e, 5);
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    code = arena_printf(e.arena,
                        "import os\n"
                        "for p in ['/usr/x', '/x', '/etc/x', '/proc/x', '/dev/x', '/dev/shm/x',\n"
                        "          '%s/escaped']:\n"
                        "    try:\n"
                        "        open(p, 'w').write('x')\n"
                        "        print('WROTE', p)\n"
                        "    except OSError as e:\n"
                        "        print('refused', e.errno)\n"
                        "open('/tmp/ok', 'w').write('fine')\n"
                        "print('tmp', open('/tmp/ok').read())\n"
                        "open('/dev/null', 'w').write('devices work')\n"
                        "print('root', sorted(os.listdir('/')))\n"
                        "print('home' in os.listdir('/'), os.path.exists('%s'))\n"
                        "for p in ['/etc/shadow', '/etc/passwd', '/root']:\n"
                        "    print(p, os.path.exists(p))\n",
                        cwd, cwd);
    r = run(&e, code);
    assert_int_equal(r->exit_code, 0);
    if (strstr(r->out, "WROTE"))
        fail_msg("%s", r->out);
    assert_non_null(strstr(r->out, "tmp fine"));
    assert_non_null(strstr(r->out, "False False"));
    assert_non_null(strstr(r->out, "/etc/shadow False"));
    assert_non_null(strstr(r->out, "/root False"));
    assert_true(access("/usr/x", F_OK) != 0);
    assert_true(access("escaped", F_OK) != 0);
    /* Nothing is left between runs: a fresh /tmp each time. */
    r = run(&e, "import os\nprint(os.listdir('/tmp'))\n");
    assert_string_equal(r->out, "[]\n");
    /* One file of at most 1 MiB; the tmpfs holds 16 MiB in all. */
    r = run(&e, "try:\n    open('/tmp/big', 'wb').write(b'x' * (2 << 20))\n"
                "except OSError as e:\n    print('fsize', e.errno)\n"
                "n = 0\n"
                "try:\n"
                "    for i in range(40):\n"
                "        open('/tmp/f%d' % i, 'wb').write(b'x' * ((1 << 20) - 4096))\n"
                "        n += 1\n"
                "except OSError as e:\n    print('full', e.errno, n)\n");
    assert_non_null(strstr(r->out, "fsize 27")); /* EFBIG */
    assert_non_null(strstr(r->out, "full 28"));  /* ENOSPC */
    env_free(&e);
}

/* The proxy's secrets: environment, descriptors, its /proc. */
static void test_sandbox_environment(void **state)
{
    struct env e;
    const struct sandbox_result *r;
    int fd = socket(AF_INET, SOCK_STREAM, 0); /* an open descriptor of "the proxy" */

    (void)state;
    env_init(&e, 5);
    setenv("OPENAI_API_KEY", "sk-sandbox-test-secret-1234", 1);
    r = run(&e, "import os\n"
                "print(dict(os.environ))\n"
                "print('fds', sorted(os.listdir('/proc/self/fd')))\n"
                "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
                "print('pids', len(pids))\n"
                "print('uid', os.getuid(), os.getgid(), os.getgroups())\n"
                "for p in pids:\n"
                "    try:\n"
                "        print(open('/proc/%s/environ' % p, 'rb').read())\n"
                "    except OSError as e:\n"
                "        pass\n");
    assert_int_equal(r->exit_code, 0);
    assert_null(strstr(r->out, "sk-sandbox-test-secret"));
    assert_null(strstr(r->out, "OPENAI"));
    assert_non_null(strstr(r->out, "fds ['0', '1', '2', '3']")); /* 3: listdir's own */
    {
        const char *p = strstr(r->out, "pids ");
        assert_non_null(p);
        assert_true(atoi(p + 5) <= 3); /* its own pid namespace: bwrap's init and itself */
    }
    if (geteuid() == 0)
        assert_null(strstr(r->out, "uid 0 ")); /* a dedicated user, not root */
    unsetenv("OPENAI_API_KEY");
    close(fd);
    env_free(&e);
}

static void test_sandbox_fork_bomb(void **state)
{
    struct env e;
    const struct sandbox_result *r;

    (void)state;
    if (geteuid() != 0)
        skip(); /* the process limit applies only when the proxy runs as root (sandbox.c) */
    env_init(&e, 10);
    r = run(&e, "import os, time\n"
                "n = 0\n"
                "try:\n"
                "    while True:\n"
                "        if os.fork() == 0:\n"
                "            time.sleep(60)\n"
                "            os._exit(0)\n"
                "        n += 1\n"
                "except OSError as e:\n"
                "    print('stopped', n, e.errno)\n");
    assert_int_equal(r->end, SANDBOX_EXITED);
    assert_non_null(strstr(r->out, "stopped"));
    assert_true(atoi(strstr(r->out, "stopped") + 8) < 16);
    assert_true(r->ms < 8000);                  /* the sleeping children did not hold the run */
    assert_int_equal(leftover_procs_gone(), 0); /* and did not survive it */
    /* The next run of the same slot starts from nothing. */
    r = run(&e, "import os\nprint(os.fork() > 0 or os._exit(0))\n");
    assert_string_equal(r->out, "True\n");
    env_free(&e);
}

static void test_sandbox_memory_bomb(void **state)
{
    struct env e;
    const struct sandbox_result *r;

    (void)state;
    env_init(&e, 10);
    r = run(&e, "x = bytearray(2 << 30)\n");
    assert_int_equal(r->exit_code, 1);
    assert_non_null(strstr(r->err, "MemoryError"));
    r = run(&e, "keep = []\n"
                "try:\n"
                "    while True:\n"
                "        keep.append(bytearray(16 << 20))\n"
                "except MemoryError:\n"
                "    print('limit at', len(keep) * 16, 'MiB')\n");
    assert_int_equal(r->exit_code, 0);
    assert_non_null(strstr(r->out, "limit at"));
    assert_true(atoi(strstr(r->out, "limit at") + 9) <= 512);
    env_free(&e);
}

static void test_sandbox_endless(void **state)
{
    struct env e;
    const struct sandbox_result *r;

    (void)state;
    env_init(&e, 1);
    r = run(&e, "print('start', flush=True)\nwhile True:\n    pass\n");
    assert_int_equal(r->end, SANDBOX_TIMEOUT);
    assert_string_equal(r->out, "start\n");
    assert_true(r->ms >= 900 && r->ms < 6000);
    assert_non_null(strstr(sandbox_describe(&e.ctx, r), "time limit of 1 s"));
    /* Sleeping children holding the pipes open do not outlive the limit either. */
    r = run(&e, "import os, time\nos.fork()\ntime.sleep(100)\n");
    assert_int_equal(r->end, SANDBOX_TIMEOUT);
    assert_true(r->ms < 6000);
    if (geteuid() == 0)
        assert_int_equal(leftover_procs_gone(), 0);
    /* A program that closes its output and keeps running is still timed. */
    r = run(&e, "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(100)\n");
    assert_int_equal(r->end, SANDBOX_TIMEOUT);
    env_free(&e);
}

static void test_sandbox_output(void **state)
{
    struct env e;
    const struct sandbox_result *r;
    const char *text;

    (void)state;
    env_init(&e, 10);
    r = run(&e, "import sys\nsys.stdout.write('y' * 100000)\nsys.stderr.write('e' * 50000)\n");
    assert_int_equal(r->end, SANDBOX_EXITED);
    assert_int_equal(strlen(r->out), SANDBOX_OUTPUT_MAX);
    assert_int_equal(strlen(r->err), SANDBOX_ERR_MAX);
    assert_true(r->out_cut && r->err_cut);
    text = sandbox_describe(&e.ctx, r);
    assert_non_null(strstr(text, "Output cut here"));
    assert_non_null(strstr(text, "Errors cut here"));
    r = run(&e, "while True:\n    print('x' * 1000)\n");
    assert_int_equal(r->end, SANDBOX_FLOOD);
    assert_int_equal(strlen(r->out), SANDBOX_OUTPUT_MAX);
    assert_true(r->ms < 8000);
    env_free(&e);
}

static void *concurrent_one(void *arg)
{
    struct env *e = arg;

    if (sandbox_run_python(&e->ctx, "import time\ntime.sleep(0.3)\nprint('ok')\n", &e->r) != PX_OK)
        e->r.out = NULL;
    return NULL;
}

static void test_sandbox_concurrent(void **state)
{
    enum { N = 6 };
    struct env e[N];
    pthread_t t[N];

    (void)state;
    for (int i = 0; i < N; i++) {
        env_init(&e[i], 10);
        pthread_create(&t[i], NULL, concurrent_one, &e[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_non_null(e[i].r.out);
        assert_string_equal(e[i].r.out, "ok\n");
        env_free(&e[i]);
    }
}

static void test_sandbox_python_block(void **state)
{
    struct arena *a = arena_create();
    const char *next;

    (void)state;
    assert_string_equal(sandbox_python_block(a, "text\n```python\nprint(1)\n```\nmore", &next),
                        "print(1)");
    assert_string_equal(next, "\nmore");
    assert_string_equal(sandbox_python_block(a, "```Python3\nx\n```", NULL) ? "found" : "none",
                        "none");
    assert_string_equal(sandbox_python_block(a, "```py\n  if x:\n    y\n\n```", NULL),
                        "  if x:\n    y");
    assert_string_equal(sandbox_python_block(a, "```js\nno\n```\n```python\nyes\n```", NULL),
                        "yes");
    assert_string_equal(sandbox_python_block(a, "```python\ncut at max tokens", &next),
                        "cut at max tokens");
    assert_string_equal(next, "");
    assert_null(sandbox_python_block(a, "no code here ``` at all", NULL));
    assert_null(sandbox_python_block(a, "", NULL));
    arena_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sandbox_disabled),   cmocka_unit_test(test_sandbox_hello),
        cmocka_unit_test(test_sandbox_errors),     cmocka_unit_test(test_sandbox_network),
        cmocka_unit_test(test_sandbox_files),      cmocka_unit_test(test_sandbox_environment),
        cmocka_unit_test(test_sandbox_fork_bomb),  cmocka_unit_test(test_sandbox_memory_bomb),
        cmocka_unit_test(test_sandbox_endless),    cmocka_unit_test(test_sandbox_output),
        cmocka_unit_test(test_sandbox_concurrent), cmocka_unit_test(test_sandbox_python_block),
    };

    log_level = LOG_ERROR;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
