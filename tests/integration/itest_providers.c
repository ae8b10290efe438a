/* itest_providers.c: --providers through the real proxy and two mock upstreams: traffic per
 * strategy, per-provider keys, client keys kept off the providers, a provider killed mid-run
 * (no request lost) and probed back after its restart, every provider down (502), a tenant
 * pinned to a provider, and an approach's calls spread like passthrough. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define KEY_A      "prov-a-LEAKCHECK-1a1a"
#define SERVER_KEY "server-LEAKCHECK-2b2b"
#define CLIENT_KEY "client-LEAKCHECK-3c3c"

static struct proc ma, mb;
static char path[512];

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (long)s) * 1e9)};

    nanosleep(&ts, NULL);
}

static void write_providers(const char *strategy, int port_a, int port_b, const char *extra)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fprintf(f,
            "{\"strategy\": \"%s\", \"fail_threshold\": 2, \"health_interval\": 0.5%s,\n"
            " \"providers\": [\n"
            "  {\"name\": \"a\", \"base_url\": \"http://127.0.0.1:%d/v1\", \"key_env\": "
            "\"PROV_A_KEY\", \"weight\": 1},\n"
            "  {\"name\": \"b\", \"base_url\": \"http://127.0.0.1:%d/v1\", \"weight\": 1}\n"
            " ]}\n",
            strategy, extra ? extra : "", port_a, port_b);
    fclose(f);
}

static struct proc start_proxy(const char *const *more)
{
    struct proc p;
    const char *args[16] = {"--providers", path, "--retries", "0", "--client-keys"};
    int n = 5;

    for (int i = 0; more && more[i]; i++)
        args[n++] = more[i];
    args[n] = NULL;
    assert_int_equal(
        proxy_start(&p, ma.port, args,
                    (const char *const[]){"PROV_A_KEY=" KEY_A, "OPENAI_API_KEY=" SERVER_KEY, NULL}),
        0);
    return p;
}

static long chat(int port, const char *model, const char *const *headers)
{
    struct http_resp r = {0};
    char *body = chat_body(model, "hello", NULL);
    long status;

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, headers, &r), 0);
    status = r.status;
    if (status != 200)
        fprintf(stderr, "status %ld: %.300s\n", status, r.body ? r.body : "");
    http_resp_free(&r);
    free(body);
    return status;
}

/* The distinct credentials a mock saw, as one string ("Bearer x|Bearer y|"). */
static void keys_of(int port, char *out, size_t cap)
{
    cJSON *j = mock_get(port, "/mock/stats");
    const cJSON *k;
    size_t n = 0;

    out[0] = '\0';
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(j, "keys")) n +=
        (size_t)snprintf(out + n, cap - n, "%s|", k->valuestring);
    cJSON_Delete(j);
}

static int setup(void **state)
{
    (void)state;
    harness_deadline(240);
    snprintf(path, sizeof(path), "%s/logs/providers_%d.json", harness_build_dir(), (int)getpid());
    if (mock_start(&ma, NULL) != 0 || mock_start(&mb, NULL) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&ma);
    proc_stop(&mb);
    unlink(path);
    return 0;
}

static void reset_both(void)
{
    mock_reset(ma.port);
    mock_reset(mb.port);
}

/* Round robin spreads passthrough and bon's calls evenly; each provider gets its own key (a's
 * key_env, b the server's); a client's own key goes to --base-url only. */
static void test_round_robin_keys(void **state)
{
    char ka[256], kb[256];

    (void)state;
    write_providers("round_robin", ma.port, mb.port, NULL);
    struct proc p = start_proxy(NULL);

    reset_both();
    for (int i = 0; i < 10; i++)
        assert_int_equal(chat(p.port, "mock-model", NULL), 200);
    assert_int_equal(mock_stat(ma.port, "calls"), 5);
    assert_int_equal(mock_stat(mb.port, "calls"), 5);
    keys_of(ma.port, ka, sizeof(ka));
    keys_of(mb.port, kb, sizeof(kb));
    assert_string_equal(ka, "Bearer " KEY_A "|");
    assert_string_equal(kb, "Bearer " SERVER_KEY "|");

    /* An approach: bon's calls go through the providers too, spread over both. */
    reset_both();
    for (int i = 0; i < 4; i++)
        assert_int_equal(chat(p.port, "bon-mock-model", NULL), 200);
    long ca = mock_stat(ma.port, "calls"), cb = mock_stat(mb.port, "calls");
    assert_true(ca > 0 && cb > 0);
    assert_true(ca - cb <= 1 && cb - ca <= 1);

    /* A client's own key: to --base-url (mock a here), never to provider b. */
    reset_both();
    assert_int_equal(
        chat(p.port, "mock-model", (const char *const[]){"X-Upstream-Api-Key: " CLIENT_KEY, NULL}),
        200);
    keys_of(ma.port, ka, sizeof(ka));
    assert_string_equal(ka, "Bearer " CLIENT_KEY "|");
    assert_int_equal(mock_stat(mb.port, "calls"), 0);
    proc_stop(&p); /* not asserted 0: under valgrind, sched.c's stack scan of bon's coroutines */
    assert_false(file_contains(p.log, KEY_A));
    assert_false(file_contains(p.log, SERVER_KEY));
}

/* Failover: everything to a while it is up. */
static void test_failover_order(void **state)
{
    (void)state;
    write_providers("failover", ma.port, mb.port, NULL);
    struct proc p = start_proxy(NULL);

    reset_both();
    for (int i = 0; i < 6; i++)
        assert_int_equal(chat(p.port, "mock-model", NULL), 200);
    assert_int_equal(mock_stat(ma.port, "calls"), 6);
    assert_int_equal(mock_stat(mb.port, "calls"), 0);
    proc_stop(&p); /* not asserted 0: under valgrind, sched.c's stack scan of bon's coroutines */
}

/* b is killed mid-run: no request fails (a serves them), b is taken out; once restarted on the
 * same port, the health probe brings it back and it gets traffic again. */
static void test_down_and_back(void **state)
{
    char port_arg[16];

    (void)state;
    write_providers("round_robin", ma.port, mb.port, NULL);
    struct proc p = start_proxy(NULL);

    reset_both();
    for (int i = 0; i < 4; i++)
        assert_int_equal(chat(p.port, "mock-model", NULL), 200);
    int port_b = mb.port;
    proc_stop(&mb);
    for (int i = 0; i < 10; i++)
        assert_int_equal(chat(p.port, "mock-model", NULL), 200);
    assert_int_equal(mock_stat(ma.port, "calls"), 2 + 10);
    assert_true(file_contains(p.log, "provider b is down"));

    snprintf(port_arg, sizeof(port_arg), "%d", port_b);
    assert_int_equal(mock_start(&mb, (const char *const[]){"--port", port_arg, NULL}), 0);
    assert_int_equal(mb.port, port_b);
    for (int i = 0;
         i < 100 * (1 + harness_slack()) && !file_contains(p.log, "provider b is back up"); i++)
        sleep_s(0.1);
    assert_true(file_contains(p.log, "provider b is back up"));
    for (int i = 0; i < 6; i++)
        assert_int_equal(chat(p.port, "mock-model", NULL), 200);
    assert_int_equal(mock_stat(mb.port, "calls"), 3);
    assert_int_equal(proc_stop(&p), 0);
}

struct flow_arg {
    int port, ok, failed;
};

static void *flow_main(void *arg)
{
    struct flow_arg *f = arg;

    for (int i = 0; i < 8; i++) {
        if (chat(f->port, "mock-model@latency=60", NULL) == 200)
            f->ok++;
        else
            f->failed++;
    }
    return NULL;
}

/* b killed while requests are in flight on both: every request still succeeds. */
static void test_kill_in_flight(void **state)
{
    struct flow_arg f[4] = {0};
    pthread_t t[4];
    char port_arg[16];

    (void)state;
    write_providers("round_robin", ma.port, mb.port, NULL);
    struct proc p = start_proxy(NULL);

    reset_both();
    for (int i = 0; i < 4; i++) {
        f[i].port = p.port;
        pthread_create(&t[i], NULL, flow_main, &f[i]);
    }
    sleep_s(0.15);
    int port_b = mb.port;
    proc_stop(&mb);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(f[i].failed, 0);
        assert_int_equal(f[i].ok, 8);
    }
    assert_int_equal(proc_stop(&p), 0);
    snprintf(port_arg, sizeof(port_arg), "%d", port_b);
    assert_int_equal(mock_start(&mb, (const char *const[]){"--port", port_arg, NULL}), 0);
}

/* Every provider down: a clear 502 for passthrough and for an approach. */
static void test_all_down(void **state)
{
    int dead1 = harness_free_port(), dead2 = harness_free_port();

    (void)state;
    write_providers("round_robin", dead1, dead2, NULL);
    struct proc p = start_proxy(NULL);

    assert_int_equal(chat(p.port, "mock-model", NULL), 502);
    assert_int_equal(chat(p.port, "bon-mock-model", NULL), 502);
    proc_stop(&p); /* as above: bon under valgrind */
}

/* A provider serving only some models: the others go to the rest. */
static void test_model_filter(void **state)
{
    FILE *f = fopen(path, "w");

    (void)state;
    assert_non_null(f);
    fprintf(f,
            "{\"providers\": [\n"
            "  {\"name\": \"a\", \"base_url\": \"http://127.0.0.1:%d/v1\", \"models\": "
            "[\"mock-model-2\"]},\n"
            "  {\"name\": \"b\", \"base_url\": \"http://127.0.0.1:%d/v1\", \"models\": "
            "[\"mock-model\"]}\n"
            " ]}\n",
            ma.port, mb.port);
    fclose(f);
    struct proc p = start_proxy(NULL);

    reset_both();
    for (int i = 0; i < 3; i++)
        assert_int_equal(chat(p.port, "mock-model", NULL), 200);
    assert_int_equal(chat(p.port, "mock-model-2", NULL), 200);
    assert_int_equal(mock_stat(ma.port, "calls"), 1);
    assert_int_equal(mock_stat(mb.port, "calls"), 3);
    assert_int_equal(chat(p.port, "other-model", NULL), 502);
    assert_int_equal(proc_stop(&p), 0);
}

/* Weighted 3:1 over 40 requests; a stream goes through the providers too. */
static void test_weighted(void **state)
{
    FILE *f = fopen(path, "w");
    struct http_resp r = {0};
    char *body = chat_body("mock-model", "hi", "\"stream\":true");

    (void)state;
    assert_non_null(f);
    fprintf(f,
            "{\"strategy\": \"weighted\", \"providers\": [\n"
            "  {\"name\": \"a\", \"base_url\": \"http://127.0.0.1:%d/v1\", \"weight\": 3},\n"
            "  {\"name\": \"b\", \"base_url\": \"http://127.0.0.1:%d/v1\", \"weight\": 1}\n"
            " ]}\n",
            ma.port, mb.port);
    fclose(f);
    struct proc p = start_proxy(NULL);

    reset_both();
    for (int i = 0; i < 40; i++)
        assert_int_equal(chat(p.port, "mock-model", NULL), 200);
    long ca = mock_stat(ma.port, "calls"), cb = mock_stat(mb.port, "calls");
    assert_int_equal(ca + cb, 40);
    assert_in_range(ca, 18, 39); /* expected 30; binomial sd 2.7: > 4 sd of room */
    assert_int_equal(http_req("POST", p.port, "/v1/chat/completions", body, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "[DONE]"));
    assert_int_equal(mock_stat(ma.port, "calls") + mock_stat(mb.port, "calls"), 41);
    http_resp_free(&r);
    free(body);
    assert_int_equal(proc_stop(&p), 0);
}

/* A tenant pinned to b: all its requests go to b, also under round robin. */
static void test_tenant_pin(void **state)
{
    char tpath[600], hex[65], auth[128];
    unsigned char d[32];
    const char *key = "tenant-pin-LEAKCHECK-4d4d";
    FILE *f;

    (void)state;
    write_providers("round_robin", ma.port, mb.port, NULL);
    SHA256((const unsigned char *)key, strlen(key), d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    snprintf(tpath, sizeof(tpath), "%s.tenants", path);
    f = fopen(tpath, "w");
    assert_non_null(f);
    fprintf(f, "{\"tenants\": [{\"name\": \"t\", \"key_sha256\": \"%s\", \"provider\": \"b\"}]}\n",
            hex);
    fclose(f);
    struct proc p = start_proxy((const char *const[]){"--tenants", tpath, NULL});

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    reset_both();
    for (int i = 0; i < 4; i++)
        assert_int_equal(chat(p.port, "mock-model", (const char *const[]){auth, NULL}), 200);
    assert_int_equal(mock_stat(ma.port, "calls"), 0);
    assert_int_equal(mock_stat(mb.port, "calls"), 4);
    assert_int_equal(proc_stop(&p), 0);
    unlink(tpath);
}

struct call_arg {
    int port;
    long status;
};

static void *call_main(void *arg)
{
    struct call_arg *c = arg;

    c->status = chat(c->port, "mock-model@latency=400", NULL);
    return NULL;
}

/* Caps: a and b take one call each; four at once: two wait in the queues (a's queue holds
 * one, b's one), none is refused, and neither mock ever sees two at once. */
static void test_caps(void **state)
{
    FILE *f = fopen(path, "w");
    struct call_arg c[4];
    pthread_t t[4];

    (void)state;
    assert_non_null(f);
    fprintf(f,
            "{\"strategy\": \"round_robin\", \"providers\": [\n"
            "  {\"name\": \"a\", \"base_url\": \"http://127.0.0.1:%d/v1\", "
            "\"max_concurrent\": 1, \"queue\": 2},\n"
            "  {\"name\": \"b\", \"base_url\": \"http://127.0.0.1:%d/v1\", "
            "\"max_concurrent\": 1, \"queue\": 2}\n"
            " ]}\n",
            ma.port, mb.port);
    fclose(f);
    struct proc p = start_proxy(NULL);

    reset_both();
    for (int i = 0; i < 4; i++) {
        c[i].port = p.port;
        pthread_create(&t[i], NULL, call_main, &c[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].status, 200);
    }
    assert_int_equal(mock_stat(ma.port, "calls") + mock_stat(mb.port, "calls"), 4);
    assert_int_equal(mock_stat(ma.port, "peak_concurrency"), 1);
    assert_int_equal(mock_stat(mb.port, "peak_concurrency"), 1);
    assert_int_equal(proc_stop(&p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_keys), cmocka_unit_test(test_failover_order),
        cmocka_unit_test(test_down_and_back),    cmocka_unit_test(test_all_down),
        cmocka_unit_test(test_model_filter),     cmocka_unit_test(test_weighted),
        cmocka_unit_test(test_tenant_pin),       cmocka_unit_test(test_caps),
        cmocka_unit_test(test_kill_in_flight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
