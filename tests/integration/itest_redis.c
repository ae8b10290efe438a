/* itest_redis.c: several instances sharing tenants' limits through a real redis-server
 * (--redis-url): requests per minute and tokens per day are shared exactly, the keys are
 * prefixed and expire, Redis stopped mid-run leaves the instances serving (open: local limits,
 * a warning, a metric; closed: 503), and after a restart the limits are shared again; over
 * rediss:// (a TLS redis-server that requires client certificates, with a throwaway CA made by
 * the openssl CLI) the limits are shared the same way, and an untrusted server or a missing
 * client certificate leaves the instance serving on local limits. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define SHARED   "tenant-shared-LEAKCHECK-1a"
#define TOKENS   "tenant-tokens-LEAKCHECK-2b"
#define DOWN     "tenant-down-LEAKCHECK-3c"
#define AGAIN    "tenant-again-LEAKCHECK-4d"
#define PROBE    "tenant-probe-LEAKCHECK-5e"
#define FREE     "tenant-free-LEAKCHECK-6f"
#define SLOW     "tenant-slow-LEAKCHECK-8b"
#define TLS      "tenant-tls-LEAKCHECK-9c"
#define REDIS_PW "redispw-LEAKCHECK-7a"

static struct proc mock, redis;
static char path[512], prefix[64], url_env[256];

static void digest(const char *key, char out[65])
{
    unsigned char d[32];

    SHA256((const unsigned char *)key, strlen(key), d);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void write_tenants(void)
{
    static const struct {
        const char *name, *key, *limits;
    } t[] = {
        {"shared", SHARED, "{\"requests_per_minute\": 10}"},
        {"tokens", TOKENS, "{\"tokens_per_day\": 40}"},
        {"down", DOWN, "{\"requests_per_minute\": 3}"},
        {"again", AGAIN, "{\"requests_per_minute\": 10}"},
        {"probe", PROBE, "{\"requests_per_minute\": 1000000}"},
        {"free", FREE, "{}"},
        {"slow", SLOW, "{\"requests_per_minute\": 1000}"},
        {"tls", TLS, "{\"requests_per_minute\": 10}"},
    };
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs("{\"tenants\": [\n", f);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char d[65];

        digest(t[i].key, d);
        fprintf(f, "%s {\"name\": \"%s\", \"key_sha256\": \"%s\", \"limits\": %s}\n", i ? "," : "",
                t[i].name, d, t[i].limits);
    }
    fputs("]}\n", f);
    fclose(f);
}

static int setup(void **state)
{
    const char *rargs[] = {"--requirepass", REDIS_PW, NULL};

    (void)state;
    harness_deadline(120);
    snprintf(path, sizeof(path), "%s/logs/tenants-redis-%d.json",
             getenv("PX_BUILD") ? getenv("PX_BUILD") : "build", (int)getpid());
    snprintf(prefix, sizeof(prefix), "itest%d:", (int)getpid());
    if (mock_start(&mock, NULL) != 0 || redis_start(&redis, 0, rargs) != 0)
        return -1;
    /* In the environment, not on the command line (ps shows flags); database 2, password. */
    snprintf(url_env, sizeof(url_env), "OPTILLM_REDIS_URL=redis://:%s@127.0.0.1:%d/2", REDIS_PW,
             redis.port);
    write_tenants();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove(path);
    proc_stop(&redis);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

/* chat_as with the one question these tests ask; a failed request fails the test. */
static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long ask(int port, const char *key, const char *model, struct http_resp *keep)
{
    long status = chat_as(port, key, model, "What is 2 + 2?", keep);

    assert_true(status > 0);
    return status;
}

static int start_proxy(struct proc *px, const char *failure)
{
    const char *args[] = {"--tenants", path, "--redis-prefix", prefix, "--redis-failure",
                          failure,     NULL};
    const char *env[] = {"OPENAI_API_KEY=server-key", url_env, NULL};

    return proxy_start(px, mock.port, args, env);
}

/* The value of a metric line "name value" in /metrics, or -1. */
static double metric(int port, const char *name)
{
    struct http_resp r;
    char needle[128];
    double v = -1;
    const char *h[] = {"Authorization: Bearer " FREE, NULL};

    assert_int_equal(http_req("GET", port, "/metrics", NULL, h, &r), 0);
    snprintf(needle, sizeof(needle), "\n%s ", name);
    const char *at = r.body ? strstr(r.body, needle) : NULL;
    if (at)
        v = atof(at + strlen(needle));
    http_resp_free(&r);
    return v;
}

/* 'total' requests of one tenant, alternating between the two instances: how many got 200;
 * every other answer must be 429 with a Retry-After of 1..60 s. */
static int alternate(int port_a, int port_b, const char *key, int total)
{
    int ok = 0;

    for (int i = 0; i < total; i++) {
        struct http_resp r;
        long st = ask(i % 2 ? port_b : port_a, key, "gpt-x", &r);

        if (st == 200) {
            ok++;
        } else {
            char v[32];

            assert_int_equal(st, 429);
            assert_true(http_header(&r, "Retry-After", v, sizeof(v)));
            assert_true(atoi(v) >= 1 && atoi(v) <= 60);
        }
        http_resp_free(&r);
    }
    return ok;
}

static redisContext *redis_cli(void)
{
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    redisReply *r;

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    r = redisCommand(c, "AUTH %s", REDIS_PW);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = redisCommand(c, "SELECT 2");
    freeReplyObject(r);
    return c;
}

/* TTL of a key in seconds (-2: absent, -1: no expiry). */
static long long ttl(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "TTL %s", key);
    long long v = r->integer;

    freeReplyObject(r);
    return v;
}

static void sleep_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

static void test_shared_limits(void **state)
{
    struct proc a, b, c;
    struct http_resp r;
    char key[256];
    redisContext *cli;

    (void)state;
    assert_int_equal(start_proxy(&a, "open"), 0);
    assert_int_equal(start_proxy(&b, "open"), 0);
    assert_int_equal(start_proxy(&c, "closed"), 0);
    assert_true(file_contains(a.log, "redis: connected to 127.0.0.1:"));

    /* requests_per_minute 10, two instances, 20 requests: exactly 10 pass in total. */
    assert_int_equal(alternate(a.port, b.port, SHARED, 20), 10);

    /* tokens_per_day 40: one request of ~80 tokens on a, then both instances refuse. */
    cli = redis_cli();
    snprintf(key, sizeof(key), "%stokens:tokens:%lld", prefix, (long long)time(NULL) / 86400);
    assert_int_equal(ask(a.port, TOKENS, "gpt-x@words=80", NULL), 200);
    for (int i = 0; i < 100 && ttl(cli, key) == -2; i++) /* the charge is asynchronous */
        sleep_ms(10);
    assert_int_equal(ask(b.port, TOKENS, "gpt-x", &r), 429);
    char v[32];
    assert_true(http_header(&r, "Retry-After", v, sizeof(v)));
    assert_true(atoi(v) >= 1 && atoi(v) <= 86400);
    assert_non_null(strstr(r.body, "daily token limit"));
    http_resp_free(&r);
    assert_int_equal(ask(a.port, TOKENS, "gpt-x", NULL), 429);

    /* The keys: prefixed, documented names, and they expire on their own. */
    long long t = ttl(cli, key);
    assert_true(t > 86400 && t <= 172800);
    snprintf(key, sizeof(key), "%srpm:shared", prefix);
    t = ttl(cli, key);
    assert_true(t > 0 && t <= 61);
    redisFree(cli);

    /* Tenants without limits never need Redis. */
    assert_int_equal(ask(c.port, FREE, "gpt-x", NULL), 200);
    assert_true(metric(a.port, "optillm_redis_up") == 1);
    assert_true(metric(a.port, "optillm_redis_errors_total") == 0);

    /* Redis hangs (SIGSTOP): requests wait at most the short timeout, then go on locally. */
    kill(redis.pid, SIGSTOP);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ask(a.port, SLOW, "gpt-x", &r), 200);
        assert_true(r.total_s < 1.0 + harness_slack());
        http_resp_free(&r);
    }
    assert_true(metric(a.port, "optillm_redis_up") == 0);
    kill(redis.pid, SIGCONT);
    for (int i = 0; i < 100; i++) {
        if (ask(a.port, SLOW, "gpt-x", NULL) == 200 && metric(a.port, "optillm_redis_up") == 1)
            break;
        sleep_ms(100);
    }
    assert_true(metric(a.port, "optillm_redis_up") == 1);
    double errors = metric(a.port, "optillm_redis_errors_total");
    assert_true(errors >= 1);

    /* Redis stops mid-run. open: each instance enforces rpm 3 alone (3 + 3 pass, not 3). */
    int port = redis.port;
    assert_int_equal(proc_stop(&redis), 0);
    int ok_a = 0, ok_b = 0;
    for (int i = 0; i < 4; i++) {
        ok_a += ask(a.port, DOWN, "gpt-x", NULL) == 200;
        ok_b += ask(b.port, DOWN, "gpt-x", NULL) == 200;
    }
    assert_int_equal(ok_a, 3);
    assert_int_equal(ok_b, 3);
    assert_true(metric(a.port, "optillm_redis_errors_total") > errors);
    assert_true(metric(a.port, "optillm_redis_up") == 0);
    assert_true(metric(a.port, "optillm_redis_fallbacks_total") >= 4);
    assert_true(file_contains(a.log, "unreachable"));
    assert_true(file_contains(a.log, "--redis-failure open"));
    /* closed: a tenant with limits gets 503 with Retry-After; one without still passes. */
    assert_int_equal(ask(c.port, AGAIN, "gpt-x", &r), 503);
    assert_true(http_header(&r, "Retry-After", v, sizeof(v)));
    assert_non_null(strstr(r.body, "Redis"));
    http_resp_free(&r);
    assert_int_equal(ask(c.port, FREE, "gpt-x", NULL), 200);

    /* Restarted (empty, same port): every instance reconnects by itself, without a request
     * to trigger it (backoff <= 2 s). */
    const char *rargs[] = {"--requirepass", REDIS_PW, NULL};
    assert_int_equal(redis_start(&redis, port, rargs), 0);
    struct proc *all[] = {&a, &b, &c};
    for (int k = 0; k < 3; k++) {
        int i;

        for (i = 0; i < 100 && metric(all[k]->port, "optillm_redis_up") != 1; i++)
            sleep_ms(100);
        assert_true(i < 100);
        assert_int_equal(ask(all[k]->port, PROBE, "gpt-x", NULL), 200);
    }
    assert_true(file_contains(a.log, "limits are shared again"));
    /* Shared again, exactly. */
    assert_int_equal(alternate(a.port, b.port, AGAIN, 20), 10);
    assert_int_equal(ask(c.port, AGAIN, "gpt-x", NULL), 429);
    /* A key of the wrong type (someone else's data under our prefix): Redis refuses the
     * script; the request is decided locally, the warning is not repeated per request. */
    cli = redis_cli();
    snprintf(key, sizeof(key), "%srpm:slow", prefix);
    redisReply *rr = redisCommand(cli, "SET %s not-a-hash", key);
    freeReplyObject(rr);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ask(a.port, SLOW, "gpt-x", NULL), 200);
    assert_true(metric(a.port, "optillm_redis_up") == 1);
    redisFree(cli);

    /* Another --redis-prefix is another deployment: its own counters in the same Redis. */
    {
        struct proc d;
        char other[80];
        const char *args[] = {"--tenants", path, "--redis-prefix", other, NULL};
        const char *env[] = {"OPENAI_API_KEY=server-key", url_env, NULL};

        snprintf(other, sizeof(other), "other-%s", prefix);
        assert_int_equal(proxy_start(&d, mock.port, args, env), 0);
        assert_int_equal(ask(d.port, AGAIN, "gpt-x", NULL), 200);
        assert_int_equal(proc_stop(&d), 0);
        cli = redis_cli();
        snprintf(key, sizeof(key), "other-%srpm:again", prefix);
        assert_true(ttl(cli, key) > 0);
        redisFree(cli);
        assert_false(file_contains(d.log, "LEAKCHECK"));
    }

    assert_int_equal(proc_stop(&a), 0);
    assert_int_equal(proc_stop(&b), 0);
    assert_int_equal(proc_stop(&c), 0);
    {
        FILE *f = fopen(a.log, "r");
        char line[2048];
        int n = 0;

        while (f && fgets(line, sizeof(line), f))
            n += strstr(line, "unexpected answer to the limits script") != NULL;
        if (f)
            fclose(f);
        assert_int_equal(n, 1);
    }
    /* Neither a tenant key nor the Redis password in any log. */
    assert_false(file_contains(a.log, "LEAKCHECK"));
    assert_false(file_contains(b.log, "LEAKCHECK"));
    assert_false(file_contains(c.log, "LEAKCHECK"));
}

/* A bad URL, or rediss:// without TLS support: refused at start-up, naming the problem. */
static void test_bad_url(void **state)
{
    struct proc px;
    const char *args[] = {"--tenants", path, NULL};
    const char *env1[] = {"OPTILLM_REDIS_URL=http://127.0.0.1:1", NULL};
    const char *env2[] = {"OPTILLM_REDIS_URL=rediss://:pw-LEAKCHECK@127.0.0.1:1",
                          "OPTILLM_REDIS_TLS_CA=/nonexistent/ca.pem", NULL};

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, env1), -1);
    assert_true(file_contains(px.log, "redis://"));
    assert_int_equal(proxy_start(&px, mock.port, args, env2), -1); /* a CA file that is not */
    assert_true(file_contains(px.log, "--redis-tls-ca"));
    assert_false(file_contains(px.log, "LEAKCHECK"));

    /* A wrong password is not fatal: reported (without the password), limits kept locally. */
    char env3v[160];
    const char *env3[] = {"OPENAI_API_KEY=server-key", env3v, NULL};
    snprintf(env3v, sizeof(env3v), "OPTILLM_REDIS_URL=redis://:wrong-LEAKCHECK@127.0.0.1:%d/2",
             redis.port);
    assert_int_equal(proxy_start(&px, mock.port, args, env3), 0);
    assert_int_equal(ask(px.port, FREE, "gpt-x", NULL), 200);
    assert_int_equal(ask(px.port, SLOW, "gpt-x", NULL), 200);
    assert_true(metric(px.port, "optillm_redis_up") == 0);
    assert_int_equal(proc_stop(&px), 0);
    assert_true(file_contains(px.log, "AUTH"));
    assert_false(file_contains(px.log, "LEAKCHECK"));
}

/* A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made by the
 * openssl CLI in dir; also a second CA that signed nothing here. 0 or -1. */
static int make_certs(const char *dir)
{
    char cmd[8192];

    snprintf(cmd, sizeof(cmd),
             "set -e; cd '%s'; exec >/dev/null 2>&1\n"
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=itest-ca "
             "-keyout ca.key -out ca.pem\n"
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca "
             "-keyout other.key -out other.pem\n"
             "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key "
             "-out server.csr\n"
             "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext\n"
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile san.ext -out server.pem\n"
             "openssl req -newkey rsa:2048 -nodes -subj /CN=itest-client -keyout client.key "
             "-out client.csr\n"
             "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-out client.pem\n",
             dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int start_tls_proxy(struct proc *px, const char *url, const char *ca, const char *cert,
                           const char *key, bool insecure)
{
    const char *args[16];
    int n = 0;
    const char *env[] = {"OPENAI_API_KEY=server-key", url, NULL};

    args[n++] = "--tenants";
    args[n++] = path;
    args[n++] = "--redis-prefix";
    args[n++] = prefix;
    if (ca) {
        args[n++] = "--redis-tls-ca";
        args[n++] = ca;
    }
    if (cert) {
        args[n++] = "--redis-tls-cert";
        args[n++] = cert;
        args[n++] = "--redis-tls-key";
        args[n++] = key;
    }
    if (insecure)
        args[n++] = "--redis-tls-insecure";
    args[n] = NULL;
    return proxy_start(px, mock.port, args, env);
}

static void test_tls(void **state)
{
    struct proc tr, a, b, c;
    char dir[1024], ca[1100], other[1100], cert[1100], key[1100], srv[1100], srvkey[1100],
        tport[16];
    char url[256];
    int port = harness_free_port();

    (void)state;
    char cwd[400];
    const char *build = getenv("PX_BUILD") ? getenv("PX_BUILD") : "build";

    /* absolute: redis-server changes into its --dir before it reads the certificates */
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(dir, sizeof(dir), "%s%s%s/logs/tls-%d", build[0] == '/' ? "" : cwd,
             build[0] == '/' ? "" : "/", build, (int)getpid());
    mkdir(dir, 0700);
    assert_int_equal(make_certs(dir), 0);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(other, sizeof(other), "%s/other.pem", dir);
    snprintf(cert, sizeof(cert), "%s/client.pem", dir);
    snprintf(key, sizeof(key), "%s/client.key", dir);
    snprintf(srv, sizeof(srv), "%s/server.pem", dir);
    snprintf(srvkey, sizeof(srvkey), "%s/server.key", dir);
    snprintf(tport, sizeof(tport), "%d", port);
    /* TLS only on tport (the harness's plain port stays for its readiness check); client
     * certificates required: mutual TLS. */
    const char *rargs[] = {"--tls-port",
                           tport,
                           "--tls-cert-file",
                           srv,
                           "--tls-key-file",
                           srvkey,
                           "--tls-ca-cert-file",
                           ca,
                           "--tls-auth-clients",
                           "yes",
                           "--requirepass",
                           REDIS_PW,
                           NULL};
    assert_int_equal(redis_start(&tr, 0, rargs), 0);
    snprintf(url, sizeof(url), "OPTILLM_REDIS_URL=rediss://:%s@127.0.0.1:%d/3", REDIS_PW, port);

    /* verified, with a client certificate: the limit is shared exactly */
    assert_int_equal(start_tls_proxy(&a, url, ca, cert, key, false), 0);
    assert_int_equal(start_tls_proxy(&b, url, ca, cert, key, false), 0);
    assert_true(file_contains(a.log, "redis: connected to 127.0.0.1:"));
    assert_int_equal(alternate(a.port, b.port, TLS, 20), 10);
    double spent_at = mono_s(); /* the shared bucket is empty from here, refilling 1 per 6 s */
    assert_true(metric(a.port, "optillm_redis_up") == 1);
    assert_true(metric(b.port, "optillm_redis_errors_total") == 0);
    assert_int_equal(proc_stop(&b), 0);

    /* a server signed by a CA we do not trust: not connected, requests served locally */
    assert_int_equal(start_tls_proxy(&b, url, other, cert, key, false), 0);
    assert_int_equal(ask(b.port, FREE, "gpt-x", NULL), 200);
    assert_int_equal(ask(b.port, SLOW, "gpt-x", NULL), 200);
    assert_true(metric(b.port, "optillm_redis_up") == 0);
    assert_int_equal(proc_stop(&b), 0);
    assert_true(file_contains(b.log, "certificate"));
    assert_false(file_contains(b.log, "LEAKCHECK"));

    /* no client certificate: the server refuses the handshake, the same fallback */
    assert_int_equal(start_tls_proxy(&b, url, ca, NULL, NULL, false), 0);
    assert_int_equal(ask(b.port, SLOW, "gpt-x", NULL), 200);
    assert_true(metric(b.port, "optillm_redis_up") == 0);
    assert_int_equal(proc_stop(&b), 0);

    /* --redis-tls-insecure: no verification (the other CA is not even loaded), warned */
    assert_int_equal(start_tls_proxy(&c, url, NULL, cert, key, true), 0);
    assert_true(file_contains(c.log, "not verified"));
    /* The 10 that a and b spent are shared: c gets only what refilled since (1 per 6 s; under
     * valgrind the steps above take long enough for some), not a fresh bucket of 10. */
    int fresh = 0;
    long st;

    while ((st = ask(c.port, TLS, "gpt-x", NULL)) == 200 && fresh < 20)
        fresh++;
    assert_int_equal(st, 429);
    assert_true(fresh <= (int)((mono_s() - spent_at) / 6.0) + 1);
    assert_true(fresh < 10);
    assert_true(metric(c.port, "optillm_redis_up") == 1);
    assert_int_equal(proc_stop(&c), 0);

    /* the TLS Redis restarts: the instance reconnects by itself */
    assert_int_equal(proc_stop(&tr), 0);
    assert_int_equal(ask(a.port, SLOW, "gpt-x", NULL), 200);
    assert_int_equal(redis_start(&tr, tr.port, rargs), 0);
    for (int i = 0; i < 300 && metric(a.port, "optillm_redis_up") != 1; i++) {
        ask(a.port, SLOW, "gpt-x", NULL);
        sleep_ms(20);
    }
    assert_true(metric(a.port, "optillm_redis_up") == 1);
    assert_int_equal(proc_stop(&a), 0);
    assert_int_equal(proc_stop(&tr), 0);
    char rm[1200];
    snprintf(rm, sizeof(rm), "rm -rf '%s'", dir);
    assert_int_equal(system(rm), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_limits),
        cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_tls),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
