/* itest_tenants.c: multi-tenant keys through the real proxy: digests, own upstream keys,
 * allowed approaches and models, call budget, rate and token limits, SIGHUP reload, and the
 * 'optillm keys' subcommand. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define ALICE          "tenant-alice-LEAKCHECK-11aa"
#define BOB            "tenant-bob-LEAKCHECK-22bb"
#define CAROL          "tenant-carol-LEAKCHECK-33cc"
#define DAVE           "tenant-dave-LEAKCHECK-44dd"
#define ALICE_UPSTREAM "alice-provider-LEAKCHECK-55ee"
#define SERVER_KEY     "server-LEAKCHECK-66ff"

static struct proc mock;
static char path[512];

static void digest(const char *key, char out[65])
{
    unsigned char d[32];

    SHA256((const unsigned char *)key, strlen(key), d);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void write_tenants(bool with_bob, bool with_dave, const char *raw)
{
    char a[65], b[65], c[65], d[65];
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    if (raw) {
        fputs(raw, f);
        fclose(f);
        return;
    }
    digest(ALICE, a);
    digest(BOB, b);
    digest(CAROL, c);
    digest(DAVE, d);
    fprintf(f,
            "{\"tenants\": [\n"
            " {\"name\": \"alice\", \"key_sha256\": \"%s\",\n"
            "  \"upstream\": {\"base_url\": \"http://127.0.0.1:%d/v1\", \"key_env\": "
            "\"ALICE_PROVIDER_KEY\"}},\n",
            a, mock.port);
    if (with_bob)
        fprintf(f,
                " {\"name\": \"bob\", \"key_sha256\": \"%s\", \"approaches\": [\"none\", \"re2\"],"
                " \"models\": [\"gpt-x\"], \"limits\": {\"requests_per_minute\": 3}},\n",
                b);
    if (with_dave)
        fprintf(f, " {\"name\": \"dave\", \"key_sha256\": \"%s\"},\n", d);
    fprintf(f,
            " {\"name\": \"carol\", \"key_sha256\": \"%s\", \"limits\": "
            "{\"max_calls_per_request\": 2, \"tokens_per_day\": 40}}\n"
            "]}\n",
            c);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    harness_deadline(240);
    snprintf(path, sizeof(path), "%s/logs/tenants-%d.json", harness_build_dir(), (int)getpid());
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    remove(path);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static long ask(int port, const char *key, const char *model, struct http_resp *keep)
{
    char auth[128];
    const char *h[] = {auth, NULL};
    char *body = chat_body(model, "What is 2 + 2?", NULL);
    struct http_resp r;
    long status;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, h, &r), 0);
    status = r.status;
    if (keep)
        *keep = r;
    else
        http_resp_free(&r);
    free(body);
    return status;
}

static char *last_auth(void)
{
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    cJSON *last = cJSON_GetArrayItem(reqs, cJSON_GetArraySize(reqs) - 1);
    char *s = strdup(cJSON_GetObjectItemCaseSensitive(last, "auth")->valuestring);

    cJSON_Delete(reqs);
    return s;
}

static void test_tenants(void **state)
{
    struct proc px;
    struct http_resp r;
    char base[64];
    const char *args[] = {"--tenants", path, NULL};
    const char *env[] = {"OPENAI_API_KEY=" SERVER_KEY, "ALICE_PROVIDER_KEY=" ALICE_UPSTREAM, NULL};

    (void)state;
    write_tenants(true, false, NULL);
    /* The proxy's --base-url points nowhere useful for alice: she has her own upstream. */
    snprintf(base, sizeof(base), "%d", mock.port);
    assert_int_equal(proxy_start(&px, mock.port, args, env), 0);

    /* Unknown key: 401, no hint of which part was wrong; nothing reaches the upstream. */
    mock_reset(mock.port);
    assert_int_equal(ask(px.port, "nobody", "gpt-x", &r), 401);
    assert_null(strstr(r.body, "tenant"));
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);

    /* Alice: her own provider key goes upstream. */
    mock_reset(mock.port);
    assert_int_equal(ask(px.port, ALICE, "moa-gpt-x", NULL), 200);
    char *a = last_auth();
    assert_string_equal(a, "Bearer " ALICE_UPSTREAM);
    free(a);

    /* Bob: the server key; only none and re2; only gpt-x; 3 requests per minute. */
    mock_reset(mock.port);
    assert_int_equal(ask(px.port, BOB, "gpt-x", NULL), 200);
    a = last_auth();
    assert_string_equal(a, "Bearer " SERVER_KEY);
    free(a);
    assert_int_equal(ask(px.port, BOB, "moa-gpt-x", NULL), 401);
    assert_int_equal(ask(px.port, BOB, "gpt-y", NULL), 401);
    assert_int_equal(ask(px.port, BOB, "re2-gpt-x", NULL), 200);
    assert_int_equal(ask(px.port, BOB, "gpt-x", NULL), 200);
    assert_int_equal(ask(px.port, BOB, "gpt-x", &r), 429); /* the 4th admitted request */
    char v[32];
    assert_true(http_header(&r, "Retry-After", v, sizeof(v)));
    assert_true(atoi(v) >= 1 && atoi(v) <= 60);
    cJSON *j = http_json(&r);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "type")
            ->valuestring,
        "rate_limit_error");
    cJSON_Delete(j);
    http_resp_free(&r);

    /* Carol: moa plans 3 calls against her limit of 2: refused up front with 400. */
    mock_reset(mock.port);
    assert_int_equal(ask(px.port, CAROL, "moa-gpt-x", &r), 400);
    assert_non_null(strstr(r.body, "plans 3 upstream calls"));
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
    /* Her daily token limit (40): the first request uses more; the next is refused. */
    assert_int_equal(ask(px.port, CAROL, "re2-gpt-x@words=80", NULL), 200);
    assert_int_equal(ask(px.port, CAROL, "gpt-x", &r), 429);
    assert_true(http_header(&r, "Retry-After", v, sizeof(v)));
    http_resp_free(&r);

    /* Metrics carry the tenant label. */
    const char *h[] = {"Authorization: Bearer " ALICE, NULL};
    assert_int_equal(http_req("GET", px.port, "/metrics", NULL, h, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "optillm_tokens_total{tenant=\"alice\",kind=\"prompt\"}"));
    assert_non_null(strstr(r.body, "optillm_tokens_total{tenant=\"carol\",kind=\"completion\"}"));
    http_resp_free(&r);

    /* SIGHUP: bob removed, dave added. */
    write_tenants(false, true, NULL);
    kill(px.pid, SIGHUP);
    nanosleep(&(struct timespec){0, 300000000L}, NULL);
    assert_int_equal(ask(px.port, BOB, "gpt-x", NULL), 401);
    assert_int_equal(ask(px.port, DAVE, "gpt-x", NULL), 200);
    /* A file that does not parse: reported, the old set stays in force. */
    write_tenants(false, false, "{\"tenants\": [ {\"name\": \"broken\"");
    kill(px.pid, SIGHUP);
    nanosleep(&(struct timespec){0, 300000000L}, NULL);
    assert_int_equal(ask(px.port, DAVE, "gpt-x", NULL), 200);
    assert_true(file_contains(px.log, "the previous tenants stay in force"));
    assert_int_equal(proc_stop(&px), 0);
    /* No key or provider key in the log. */
    assert_false(file_contains(px.log, "LEAKCHECK"));
}

static void test_keys_subcommand(void **state)
{
    char cmd[1024], key[128] = "", tenant[256] = "", hash[80] = "", want[65];
    const char *b = harness_build_dir();
    FILE *p;

    (void)state;
    snprintf(cmd, sizeof(cmd), "%s/optillm keys new carol 2>/dev/null", b);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(key, sizeof(key), p));
    assert_non_null(fgets(tenant, sizeof(tenant), p));
    assert_int_equal(pclose(p), 0);
    assert_true(strncmp(key, "key:    sk-optillm-", 19) == 0);
    key[strcspn(key, "\n")] = '\0';
    assert_int_equal(strlen(key + 8), 11 + 64); /* 32 random bytes in hex */
    digest(key + 8, want);
    assert_non_null(strstr(tenant, want));
    assert_non_null(strstr(tenant, "\"name\": \"carol\""));
    snprintf(cmd, sizeof(cmd), "echo '%s' | %s/optillm keys hash", key + 8, b);
    p = popen(cmd, "r");
    assert_non_null(fgets(hash, sizeof(hash), p));
    assert_int_equal(pclose(p), 0);
    hash[strcspn(hash, "\n")] = '\0';
    assert_string_equal(hash, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tenants),
        cmocka_unit_test(test_keys_subcommand),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
