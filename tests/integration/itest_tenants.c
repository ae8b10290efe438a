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
#define FRANK          "tenant-frank-LEAKCHECK-77aa"

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

/* chat_as with the one question these tests ask; a failed request fails the test. */
static long ask(int port, const char *key, const char *model, struct http_resp *keep)
{
    long status = chat_as(port, key, model, "What is 2 + 2?", keep);

    assert_true(status > 0);
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
    /* A model or approach bob may not use: 403 with a code saying which (not 401, which an
     * SDK reports as a wrong key). */
    assert_int_equal(ask(px.port, BOB, "moa-gpt-x", &r), 403);
    assert_non_null(strstr(r.body, "\"code\":\"approach_not_allowed\""));
    assert_non_null(strstr(r.body, "\"type\":\"invalid_request_error\""));
    http_resp_free(&r);
    assert_int_equal(ask(px.port, BOB, "gpt-y", &r), 403);
    assert_non_null(strstr(r.body, "\"code\":\"model_not_allowed\""));
    http_resp_free(&r);
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

static long post_raw(int port, const char *key, const char *body, size_t len,
                     struct http_resp *keep)
{
    char auth[128];
    const char *h[] = {auth, "Content-Type: application/json", NULL};
    char *copy = malloc(len + 1);
    struct http_resp r;
    long status;

    memcpy(copy, body, len);
    copy[len] = '\0';
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    assert_int_equal(http_req("POST", port, "/v1/chat/completions", copy, h, &r), 0);
    free(copy);
    status = r.status;
    if (keep)
        *keep = r;
    else
        http_resp_free(&r);
    return status;
}

/* Issue 10, item 1: what cJSON reads must be what the upstream reads. A tenant allowed only
 * cheap-model with 1 call per request sends a body that repeats "model" and "n": cJSON sees the
 * first, an upstream the last. Refused with 400 before any call; so are bytes after the JSON
 * value and "\u0000". A JSON-escaped tag is stripped in passthrough too (item 12). */
static void test_strict_body(void **state)
{
    struct proc px;
    struct http_resp r;
    char f[65], file[512];
    const char *args[] = {"--tenants", path, NULL};
    const char *env[] = {"OPENAI_API_KEY=" SERVER_KEY, NULL};
    static const char dup[] =
        "{\"model\":\"cheap-model\",\"n\":1,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"model\":\"other\",\"n\":5}";
    static const char nested[] = "{\"model\":\"cheap-model\",\"messages\":[{\"role\":\"user\","
                                 "\"content\":\"hi\",\"content\":\"more\"}]}";
    static const char trailing[] =
        "{\"model\":\"cheap-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
        "{\"model\":\"other\",\"n\":5}";
    static const char nul[] =
        "{\"model\":\"cheap-model\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\\u0000<optillm_approach>moa</optillm_approach>\"}]}";
    static const char escaped_tag[] =
        "{\"model\":\"cheap-model\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"\\u003coptillm_approach>none\\u003c/optillm_approach>hi\"}]}";
    static const char ok[] = "{\"model\":\"cheap-model\",\"n\":1,\"messages\":[{\"role\":\"user\","
                             "\"content\":\"hi\"}]}\n";

    (void)state;
    digest(FRANK, f);
    snprintf(file, sizeof(file),
             "{\"tenants\": [{\"name\": \"frank\", \"key_sha256\": \"%s\", \"approaches\": "
             "[\"none\"], \"models\": [\"cheap-model\"], \"limits\": {\"max_calls_per_request\": "
             "1}}]}\n",
             f);
    write_tenants(false, false, file);
    assert_int_equal(proxy_start(&px, mock.port, args, env), 0);
    mock_reset(mock.port);

    assert_int_equal(post_raw(px.port, FRANK, dup, sizeof(dup) - 1, &r), 400);
    assert_non_null(strstr(r.body, "'model'"));
    http_resp_free(&r);
    assert_int_equal(post_raw(px.port, FRANK, nested, sizeof(nested) - 1, &r), 400);
    assert_non_null(strstr(r.body, "messages.[0].content"));
    http_resp_free(&r);
    assert_int_equal(post_raw(px.port, FRANK, trailing, sizeof(trailing) - 1, NULL), 400);
    assert_int_equal(post_raw(px.port, FRANK, nul, sizeof(nul) - 1, NULL), 400);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);

    /* Whitespace after the value is fine; the allowed request goes through. */
    assert_int_equal(post_raw(px.port, FRANK, ok, sizeof(ok) - 1, NULL), 200);
    assert_int_equal(mock_stat(mock.port, "calls"), 1);

    /* The escaped tag is removed from what goes upstream. */
    mock_reset(mock.port);
    assert_int_equal(post_raw(px.port, FRANK, escaped_tag, sizeof(escaped_tag) - 1, NULL), 200);
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    char *sent = cJSON_PrintUnformatted(cJSON_GetArrayItem(reqs, 0));
    assert_non_null(sent);
    assert_null(strstr(sent, "optillm_approach"));
    assert_non_null(strstr(sent, "\"content\":\"hi\""));
    cJSON_free(sent);
    cJSON_Delete(reqs);

    assert_int_equal(proc_stop(&px), 0);
    assert_false(file_contains(px.log, "LEAKCHECK"));
}

/* Issue 10, item 2: the server's key never goes to a tenant's own host. A tenant with
 * upstream.base_url but no upstream.key_env is refused: at start-up (the proxy exits), and at
 * SIGHUP (the previous tenants stay in force). */
static void test_own_host_needs_own_key(void **state)
{
    struct proc px;
    char g[65], file[1024];
    const char *args[] = {"--tenants", path, NULL};
    const char *env[] = {"OPENAI_API_KEY=" SERVER_KEY, "ALICE_PROVIDER_KEY=" ALICE_UPSTREAM, NULL};

    (void)state;
    digest(FRANK, g);
    snprintf(file, sizeof(file),
             "{\"tenants\": [{\"name\": \"gina\", \"key_sha256\": \"%s\", \"upstream\": "
             "{\"base_url\": \"http://127.0.0.1:%d/v1\"}}]}\n",
             g, mock.port);
    write_tenants(false, false, file);
    mock_reset(mock.port);
    assert_int_equal(proxy_start(&px, mock.port, args, env), -1);
    assert_true(file_contains(px.log, "no upstream.key_env"));

    /* Running with a good file, then reloading the bad one: refused, the old set stays, and
     * the server key still never reaches the tenant's host. */
    write_tenants(true, false, NULL);
    assert_int_equal(proxy_start(&px, mock.port, args, env), 0);
    write_tenants(false, false, file);
    kill(px.pid, SIGHUP);
    nanosleep(&(struct timespec){0, 300000000L}, NULL);
    assert_true(file_contains(px.log, "the previous tenants stay in force"));
    assert_int_equal(ask(px.port, FRANK, "gpt-x", NULL), 401); /* gina was not loaded */
    assert_int_equal(ask(px.port, BOB, "gpt-x", NULL), 200);   /* bob still is */
    assert_int_equal(proc_stop(&px), 0);
    assert_false(file_contains(px.log, "LEAKCHECK"));
}

/* Issue 10, item 12: an upstream reporting an absurd token count (1e300) is charged the cap
 * (1e12), not 0, so a tenant's daily token budget still holds. */
static void test_absurd_usage_capped(void **state)
{
    struct proc px;
    char h[65], file[1024];
    const char *args[] = {"--tenants", path, NULL};
    const char *env[] = {"OPENAI_API_KEY=" SERVER_KEY, NULL};

    (void)state;
    digest(FRANK, h);
    snprintf(file, sizeof(file),
             "{\"tenants\": [{\"name\": \"hank\", \"key_sha256\": \"%s\", \"limits\": "
             "{\"tokens_per_day\": 1000}}]}\n",
             h);
    write_tenants(false, false, file);
    assert_int_equal(proxy_start(&px, mock.port, args, env), 0);
    assert_int_equal(ask(px.port, FRANK, "gpt-x@usage_prompt=1e300", NULL), 200);
    assert_int_equal(ask(px.port, FRANK, "gpt-x", NULL), 429);
    assert_int_equal(proc_stop(&px), 0);
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
        cmocka_unit_test(test_strict_body),
        cmocka_unit_test(test_own_host_needs_own_key),
        cmocka_unit_test(test_absurd_usage_capped),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
