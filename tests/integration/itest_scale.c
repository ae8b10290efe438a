/* itest_scale.c: two instances behind a real nginx running deploy/nginx.conf (ports rewritten),
 * sharing a real redis-server. Under load (plain, approach and streamed requests) one instance
 * gets SIGTERM: it drains what it has, nginx moves new requests to the other, no request
 * fails and streams keep streaming through nginx. */
#define _DEFAULT_SOURCE /* realpath */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <fcntl.h>
#include <limits.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define TENANT  "tenant-scale-LEAKCHECK-9c"
#define NSTREAM 4
#define NLOAD   2

static struct proc mock, redis, nginx, pa, pb;
static char dir[PATH_MAX], tenants[PATH_MAX + 32];
static int nginx_port;

static void sleep_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

/* Reads deploy/nginx.conf and writes DIR/optillm.conf with the test's ports, and DIR/nginx.conf
 * around it (foreground, files in DIR). */
static int write_nginx_conf(void)
{
    char path[PATH_MAX + 64], *conf, *out, *p;
    FILE *f = fopen("deploy/nginx.conf", "rb");
    long len;
    struct {
        const char *from;
        char to[64];
    } subst[3] = {{"127.0.0.1:8001", ""}, {"127.0.0.1:8002", ""}, {"127.0.0.1:8080", ""}};

    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    conf = calloc(1, (size_t)len + 1);
    if (fread(conf, 1, (size_t)len, f) != (size_t)len)
        return -1;
    fclose(f);
    snprintf(subst[0].to, sizeof(subst[0].to), "127.0.0.1:%d", pa.port);
    snprintf(subst[1].to, sizeof(subst[1].to), "127.0.0.1:%d", pb.port);
    snprintf(subst[2].to, sizeof(subst[2].to), "127.0.0.1:%d", nginx_port);
    out = calloc(1, (size_t)len + 256);
    for (p = conf; *p;) {
        size_t i;

        for (i = 0; i < 3 && strncmp(p, subst[i].from, strlen(subst[i].from)) != 0; i++)
            ;
        if (i < 3) {
            strcat(out, subst[i].to);
            p += strlen(subst[i].from);
        } else {
            strncat(out, p++, 1);
        }
    }
    for (int i = 0; i < 3; i++) /* each must have been there */
        if (!strstr(out, subst[i].to))
            return -1;
    snprintf(path, sizeof(path), "%s/optillm.conf", dir);
    f = fopen(path, "w");
    fputs(out, f);
    fclose(f);
    free(conf);
    free(out);
    snprintf(path, sizeof(path), "%s/nginx.conf", dir);
    f = fopen(path, "w");
    fprintf(f,
            "daemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log info;\n"
            "%s"
            "events { worker_connections 512; }\n"
            "http {\n  access_log %s/access.log;\n  client_body_temp_path %s/body;\n"
            "  proxy_temp_path %s/proxy;\n  fastcgi_temp_path %s/fastcgi;\n"
            "  uwsgi_temp_path %s/uwsgi;\n  scgi_temp_path %s/scgi;\n"
            "  include %s/optillm.conf;\n}\n",
            dir, dir, geteuid() == 0 ? "user root;\n" : "", dir, dir, dir, dir, dir, dir, dir);
    fclose(f);
    return 0;
}

/* nginx in the foreground on nginx_port; -1 when it does not start. */
static int nginx_start(void)
{
    static const char bin[] = "/usr/sbin/nginx";
    char conf[PATH_MAX + 16], elog[PATH_MAX + 16];
    struct http_resp r;

    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "%s missing (scripts/deps.sh installs nginx-light)\n", bin);
        return -1;
    }
    snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
    snprintf(elog, sizeof(elog), "%s/error.log", dir);
    snprintf(nginx.log, sizeof(nginx.log), "%.500s", elog);
    nginx.pid = fork();
    if (nginx.pid == 0) {
        int fd = open("/dev/null", O_RDWR);

        dup2(fd, 0);
        dup2(fd, 1);
        execl(bin, "nginx", "-p", dir, "-c", conf, "-e", elog, (char *)NULL);
        _exit(127);
    }
    harness_track(nginx.pid);
    nginx.port = nginx_port;
    for (int i = 0; i < 500; i++) {
        if (http_req("GET", nginx_port, "/health", NULL, NULL, &r) == 0) {
            http_resp_free(&r);
            return 0;
        }
        http_resp_free(&r);
        if (waitpid(nginx.pid, NULL, WNOHANG) == nginx.pid) {
            nginx.pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    return -1;
}

static int setup(void **state)
{
    char d[65], url[128], path[PATH_MAX];
    unsigned char h[32];
    const char *b = getenv("PX_BUILD") ? getenv("PX_BUILD") : "build";
    FILE *f;

    (void)state;
    harness_deadline(120);
    snprintf(path, sizeof(path), "%s/logs", b);
    mkdir(path, 0755);
    if (!realpath(path, dir))
        return -1;
    snprintf(path, sizeof(path), "/nginx-%d", (int)getpid());
    strncat(dir, path, sizeof(dir) - strlen(dir) - 1);
    mkdir(dir, 0755);
    snprintf(tenants, sizeof(tenants), "%s/tenants.json", dir);
    SHA256((const unsigned char *)TENANT, strlen(TENANT), h);
    for (int i = 0; i < 32; i++)
        snprintf(d + 2 * i, 3, "%02x", h[i]);
    f = fopen(tenants, "w");
    fprintf(f,
            "{\"tenants\": [{\"name\": \"scale\", \"key_sha256\": \"%s\", "
            "\"limits\": {\"requests_per_minute\": 100000, \"tokens_per_day\": 100000000}}]}\n",
            d);
    fclose(f);
    if (mock_start(&mock, NULL) != 0 || redis_start(&redis, 0, NULL) != 0)
        return -1;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis.port);
    /* The instance that gets SIGTERM serves HTTP on its I/O loops (the default without Redis),
     * the other on libmicrohttpd threads of its own (the default with --redis-url): the drain
     * is exercised in the loops' mode. */
    const char *args_a[] = {"--tenants", tenants,          "--redis-url", url, "--drain-timeout",
                            "20",        "--http-threads", "0",           NULL};
    const char *args_b[] = {"--tenants",       tenants, "--redis-url", url,
                            "--drain-timeout", "20",    NULL};
    const char *env[] = {"OPENAI_API_KEY=server-key", NULL};
    if (proxy_start(&pa, mock.port, args_a, env) != 0 ||
        proxy_start(&pb, mock.port, args_b, env) != 0)
        return -1;
    nginx_port = harness_free_port();
    if (write_nginx_conf() != 0 || nginx_start() != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (nginx.pid > 0)
        proc_stop(&nginx);
    proc_stop(&pb);
    if (pa.pid > 0)
        proc_stop(&pa);
    proc_stop(&redis);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static long post(const char *model, const char *extra, struct http_resp *keep)
{
    const char *h[] = {"Authorization: Bearer " TENANT, NULL};
    char *body = chat_body(model, "scale me out", extra);
    struct http_resp r;
    long status = -1;

    if (http_req("POST", nginx_port, "/v1/chat/completions", body, h, &r) == 0)
        status = r.status;
    if (keep)
        *keep = r;
    else
        http_resp_free(&r);
    free(body);
    return status;
}

/* Access lines of an instance with this status whose model is 'model' (exact) or, with
 * model NULL, contains 'part'. Values may be quoted (model="x") or not (model=x). */
static int served(const struct proc *p, const char *model, const char *part, int status)
{
    FILE *f = fopen(p->log, "r");
    char line[4096], st[32], m1[128], m2[128];
    int n = 0;

    snprintf(st, sizeof(st), "status=%d ", status);
    snprintf(m1, sizeof(m1), "model=%s ", model ? model : "");
    snprintf(m2, sizeof(m2), "model=\"%s\" ", model ? model : "");
    while (f && fgets(line, sizeof(line), f)) {
        if (!strstr(line, "/v1/chat/completions") || !strstr(line, st))
            continue;
        if (model ? strstr(line, m1) || strstr(line, m2) : strstr(line, part) != NULL)
            n++;
    }
    if (f)
        fclose(f);
    return n;
}

struct load {
    pthread_t t;
    int id;
    int stop; /* atomic */
    int total, ok;
    long bad_status;
};

static void *load_main(void *arg)
{
    struct load *l = arg;

    while (!__atomic_load_n(&l->stop, __ATOMIC_RELAXED)) {
        /* Every third request runs an approach (two upstream rounds). */
        long st = post(l->total % 3 == 2 ? "re2-gpt-x@latency=60" : "gpt-x@latency=30", NULL, NULL);

        l->total++;
        if (st == 200)
            l->ok++;
        else
            l->bad_status = st;
    }
    return NULL;
}

struct stream {
    pthread_t t;
    struct http_resp r;
    long status;
};

static void *stream_main(void *arg)
{
    struct stream *s = arg;

    s->status = post("gpt-x@chunk_delay=100,words=30", "\"stream\":true", &s->r);
    return NULL;
}

static void test_sigterm_under_load(void **state)
{
    struct load load[NLOAD];
    struct stream streams[NSTREAM];

    (void)state;
    /* Warm-up: both instances serve through nginx. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(post("gpt-x", NULL, NULL), 200);
    assert_true(served(&pa, "gpt-x", NULL, 200) >= 1);
    assert_true(served(&pb, "gpt-x", NULL, 200) >= 1);

    memset(load, 0, sizeof(load));
    memset(streams, 0, sizeof(streams));
    for (int i = 0; i < NSTREAM; i++) {
        pthread_create(&streams[i].t, NULL, stream_main, &streams[i]);
        sleep_ms(50);
    }
    for (int i = 0; i < NLOAD; i++)
        pthread_create(&load[i].t, NULL, load_main, &load[i]);
    sleep_ms(600);
    /* Streams are running on both instances now; one of them is told to stop. */
    kill(pa.pid, SIGTERM);
    sleep_ms(2500);
    for (int i = 0; i < NLOAD; i++)
        __atomic_store_n(&load[i].stop, 1, __ATOMIC_RELAXED);
    int total = 0;
    for (int i = 0; i < NLOAD; i++) {
        pthread_join(load[i].t, NULL);
        total += load[i].total;
        /* Not one request failed: those that reached the stopping instance after SIGTERM were
         * re-sent by nginx (refused connection or 503), the others were answered. */
        assert_int_equal(load[i].ok, load[i].total);
        assert_int_equal(load[i].bad_status, 0);
    }
    assert_true(total >= 20);
    for (int i = 0; i < NSTREAM; i++) {
        struct http_resp *r = &streams[i].r;

        pthread_join(streams[i].t, NULL);
        assert_int_equal(streams[i].status, 200);
        assert_non_null(strstr(r->body, "data: [DONE]"));
        /* Streamed through nginx, not buffered: the first bytes came long before the end,
         * in many pieces (30 words, 100 ms apart). */
        assert_true(r->chunks >= 10);
        assert_true(r->total_s - r->first_s >= 2.0);
        http_resp_free(r);
    }
    /* The stopped instance drained (its streams finished) and exited cleanly. */
    assert_int_equal(proc_wait(&pa, 15), 0);
    assert_true(served(&pa, NULL, "chunk_delay", 200) >= 1);
    assert_true(served(&pb, NULL, "chunk_delay", 200) >= 1);
    assert_true(file_contains(pa.log, "draining"));
    /* The survivor serves everything now. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(post(i % 2 ? "re2-gpt-x" : "gpt-x", NULL, NULL), 200);
    assert_false(file_contains(pb.log, "LEAKCHECK"));
    assert_false(file_contains(pa.log, "LEAKCHECK"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_under_load),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
