/* itest_account.c: every token counted and errors SDKs can read, through the real proxy:
 * streamed passthrough asks the upstream for usage, hides the usage event from a client that
 * did not ask for it, and counts its tokens (access line, metrics, conversation log, a
 * tenant's tokens_per_day); an upstream without usage; the access line's duration of a
 * stream; approach answers without invented usage; upstream error bodies that are not
 * OpenAI-shaped become OpenAI errors. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <glob.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define FRANK "tenant-frank-LEAKCHECK-77aa"
#define ERIN  "tenant-erin-LEAKCHECK-88bb"

static struct proc mock;
static char tenants_path[512], convdir[512];

static int setup(void **state)
{
    (void)state;
    harness_deadline(240);
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static void digest(const char *key, char out[65])
{
    unsigned char d[32];

    SHA256((const unsigned char *)key, strlen(key), d);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* POST a chat body as 'key' with request id 'rid'; the response is kept in *r. */
static void chat(int port, const char *key, const char *rid, const char *body, struct http_resp *r)
{
    char auth[128], id[128];
    const char *h[] = {auth, id, NULL};

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    snprintf(id, sizeof(id), "X-Request-Id: %s", rid);
    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, h, r), 0);
}

/* The first line of 'path' containing both needles, malloc'd, or NULL. */
static char *scan_file(const char *path, const char *n1, const char *n2)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, *found = NULL;
    size_t cap = 0;

    if (!f)
        return NULL;
    while (getline(&line, &cap, f) > 0) {
        if (strstr(line, n1) && (!n2 || strstr(line, n2))) {
            found = strdup(line);
            break;
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* The same, waiting up to 10 s: the access line is written after the response has gone. */
static char *find_line(const char *path, const char *n1, const char *n2)
{
    char *l = NULL;

    for (int i = 0; i < 1000 && !(l = scan_file(path, n1, n2)); i++)
        nanosleep(&(struct timespec){0, 10000000L}, NULL);
    return l;
}

/* A number after 'key' in 's' (e.g. "prompt_tokens="), or -1. */
static double num_after(const char *s, const char *key)
{
    const char *p = s ? strstr(s, key) : NULL;

    return p ? strtod(p + strlen(key), NULL) : -1;
}

/* optillm_tokens_total for a tenant and kind, from /metrics. */
static long metric_tokens(int port, const char *key, const char *tenant, const char *kind)
{
    char auth[128], want[160];
    const char *h[] = {auth, NULL};
    struct http_resp r;
    long v = -1;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    snprintf(want, sizeof(want), "optillm_tokens_total{tenant=\"%s\",kind=\"%s\"} ", tenant, kind);
    assert_int_equal(http_req("GET", port, "/metrics", NULL, h, &r), 0);
    assert_int_equal(r.status, 200);
    const char *p = strstr(r.body, want);
    if (p)
        v = strtol(p + strlen(want), NULL, 10);
    http_resp_free(&r);
    return v;
}

/* metric_tokens once it equals 'want' (metrics are written after the response), else the
 * last value read within 10 s. */
static long wait_tokens(int port, const char *key, const char *tenant, const char *kind, long want)
{
    long v = -1;

    for (int i = 0; i < 500 && (v = metric_tokens(port, key, tenant, kind)) != want; i++)
        nanosleep(&(struct timespec){0, 20000000L}, NULL);
    return v;
}

static int count(const char *s, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---- streamed passthrough usage ------------------------------------------------------------ */

static void test_stream_usage(void **state)
{
    char a[65], e[65];
    struct proc px;
    struct http_resp r;
    const char *b = getenv("PX_BUILD") ? getenv("PX_BUILD") : "build";
    const char *args[] = {"--tenants", tenants_path, "--log-conversations", convdir, NULL};
    char *body, *line, cmd[1200];

    (void)state;
    snprintf(tenants_path, sizeof(tenants_path), "%s/logs/account-tenants-%d.json", b,
             (int)getpid());
    snprintf(convdir, sizeof(convdir), "%s/logs/account-conv-%d", b, (int)getpid());
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/logs", b);
    assert_int_equal(system(cmd), 0);
    digest(FRANK, a);
    digest(ERIN, e);
    FILE *f = fopen(tenants_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"tenants\": [\n"
            " {\"name\": \"frank\", \"key_sha256\": \"%s\"},\n"
            " {\"name\": \"erin\", \"key_sha256\": \"%s\", \"limits\": {\"tokens_per_day\": 40}}\n"
            "]}\n",
            a, e);
    fclose(f);
    const char *env[] = {"OPENAI_API_KEY=sk-server-LEAKCHECK-99cc", NULL};
    assert_int_equal(proxy_start(&px, mock.port, args, env), 0);

    /* 1. A client that did not ask for usage: the proxy asked, the client gets no usage
     * event (nor OpenAI's "usage":null members), and the tokens are counted. The mock sends
     * each event in two writes. */
    mock_reset(mock.port);
    assert_int_equal(metric_tokens(px.port, FRANK, "frank", "prompt"), -1);
    body = chat_body("gpt-x@split=1,usage=null", "count these words please", "\"stream\":true");
    chat(px.port, FRANK, "acct-nousage", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"usage\""));
    assert_null(strstr(r.body, "\"choices\":[]"));
    assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
    assert_int_equal(count(r.body, "\n\n\n"), 0); /* the event's blank line went with it */
    assert_true(strncmp(r.body, "data: {", 7) == 0);
    http_resp_free(&r);
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    cJSON *sent = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "body");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(sent, "stream_options"), "include_usage")));
    cJSON_Delete(reqs);
    long pt = mock_stat(mock.port, "prompt_tokens"), ct = mock_stat(mock.port, "completion_tokens");
    assert_true(pt > 0 && ct > 0);
    char want[128];
    snprintf(want, sizeof(want), "prompt_tokens=%ld completion_tokens=%ld ", pt, ct);
    line = find_line(px.log, "req=acct-nousage ", "status=200");
    assert_non_null(line);
    assert_non_null(strstr(line, want));
    free(line);
    assert_int_equal(wait_tokens(px.port, FRANK, "frank", "prompt", pt), pt);
    assert_int_equal(wait_tokens(px.port, FRANK, "frank", "completion", ct), ct);
    /* The conversation log counts them too. */
    glob_t gl;
    char pattern[600];
    snprintf(pattern, sizeof(pattern), "%s/conversations-*.jsonl", convdir);
    int g = -1;
    for (int i = 0; i < 500 && (g = glob(pattern, 0, NULL, &gl)) != 0; i++)
        nanosleep(&(struct timespec){0, 20000000L}, NULL);
    assert_int_equal(g, 0);
    assert_int_equal(gl.gl_pathc, 1);
    snprintf(want, sizeof(want), "\"prompt_tokens\":%ld,\"completion_tokens\":%ld", pt, ct);
    line = find_line(gl.gl_pathv[0], "\"request_id\":\"acct-nousage\"", want);
    globfree(&gl);
    assert_non_null(line);
    assert_null(strstr(line, "stream_options")); /* the client's request, as it asked */
    free(line);

    /* 2. A client that asked: it gets the upstream's usage event, once. */
    mock_reset(mock.port);
    body = chat_body("gpt-x@split=1,usage=null", "count these words please",
                     "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    chat(px.port, FRANK, "acct-usage", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    assert_int_equal(count(r.body, "\"usage\":{"), 1);
    assert_true(count(r.body, "\"usage\":null}") >= 5); /* as the upstream sent them */
    snprintf(want, sizeof(want), "\"choices\":[],\"usage\":{\"prompt_tokens\":%ld,", pt);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "\"id\":\"mockcmpl-")); /* the upstream's own event */
    http_resp_free(&r);
    assert_int_equal(wait_tokens(px.port, FRANK, "frank", "prompt", 2 * pt), 2 * pt);

    /* 3. A tenant's daily tokens count streamed requests: the second is refused. */
    body = chat_body("gpt-x@words=80", "What is 2 + 2?", "\"stream\":true");
    chat(px.port, ERIN, "acct-erin-1", body, &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"usage\""));
    http_resp_free(&r);
    chat(px.port, ERIN, "acct-erin-2", body, &r);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.body, "rate_limit_error"));
    http_resp_free(&r);
    free(body);
    long et = -1;
    for (int i = 0; i < 500 && (et = metric_tokens(px.port, ERIN, "erin", "completion")) <= 40; i++)
        nanosleep(&(struct timespec){0, 20000000L}, NULL);
    assert_true(et > 40);

    /* 4. An upstream that sends no usage: counted as 0 tokens and said so, once. */
    body = chat_body("gpt-x@usage=0", "hello there", "\"stream\":true");
    chat(px.port, FRANK, "acct-missing", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
    line = find_line(px.log, "req=acct-missing ", "status=200");
    assert_non_null(line);
    assert_non_null(strstr(line, "prompt_tokens=0 completion_tokens=0 "));
    free(line);
    line = find_line(px.log, "req=acct-missing ", "reported no usage");
    assert_non_null(line);
    free(line);

    /* 5. An upstream that refuses stream_options: the client's own body goes once more, and
     * the stream arrives (without usage). A client that asked for usage gets the refusal. */
    mock_reset(mock.port);
    body = chat_body("gpt-x@reject_stream_options=1", "hello there", "\"stream\":true");
    chat(px.port, FRANK, "acct-refuses", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"finish_reason\":\"stop\""));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
    reqs = mock_get(mock.port, "/mock/requests");
    assert_int_equal(cJSON_GetArraySize(reqs), 2);
    sent = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 1), "body");
    assert_null(cJSON_GetObjectItemCaseSensitive(sent, "stream_options"));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sent, "stream")));
    cJSON_Delete(reqs);
    line = find_line(px.log, "req=acct-refuses ", "status=200 calls=2 ");
    assert_non_null(line);
    free(line);
    line = find_line(px.log, "req=acct-refuses ", "refuses stream_options");
    assert_non_null(line);
    free(line);
    body = chat_body("gpt-x@reject_stream_options=1", "hello there",
                     "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    chat(px.port, FRANK, "acct-refuses-2", body, &r);
    free(body);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "Unrecognized request argument supplied: stream_options"));
    http_resp_free(&r);

    /* 6. The access line's duration of a stream is the whole stream (7 events, 150 ms apart),
     * not the time to its first byte. */
    body = chat_body("gpt-x@chunk_delay=150,words=4", "slow", "\"stream\":true");
    chat(px.port, FRANK, "acct-slow", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    assert_true(r.total_s >= 0.8);
    assert_true(r.first_s < r.total_s - 0.5);
    http_resp_free(&r);
    line = find_line(px.log, "req=acct-slow ", "status=200");
    assert_non_null(line);
    assert_true(num_after(line, "ms=") >= 800);
    free(line);

    assert_int_equal(proc_stop(&px), 0);
    assert_false(file_contains(px.log, "LEAKCHECK"));
    remove(tenants_path);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", convdir);
    assert_int_equal(system(cmd), 0);
}

/* ---- approaches over an upstream without usage ----------------------------------------------- */

static void test_approach_usage(void **state)
{
    struct proc px;
    struct http_resp r;
    const char *env[] = {"OPENAI_API_KEY=sk-server-LEAKCHECK-99cc", NULL};
    char *body;
    cJSON *j;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, NULL, env), 0);
    /* No call reported usage: no "usage" at all, not zeros. */
    body = chat_body("moa-gpt-x@usage=0", "What is 2 + 2?", NULL);
    chat(px.port, "x", "acct-moa-none", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    j = http_json(&r);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "choices"));
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "usage"));
    cJSON_Delete(j);
    http_resp_free(&r);
    /* Streamed with include_usage: no usage chunk either. */
    body = chat_body("re2-gpt-x@usage=0", "What is 2 + 2?",
                     "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    chat(px.port, "x", "acct-re2-none", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"usage\""));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
    /* With usage: reported as before. */
    body = chat_body("re2-gpt-x", "What is 2 + 2?",
                     "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    chat(px.port, "x", "acct-re2-usage", body, &r);
    free(body);
    assert_int_equal(r.status, 200);
    assert_int_equal(count(r.body, "\"usage\":{\"prompt_tokens\":"), 1);
    http_resp_free(&r);
    body = chat_body("moa-gpt-x", "What is 2 + 2?", NULL);
    chat(px.port, "x", "acct-moa-usage", body, &r);
    free(body);
    j = http_json(&r);
    assert_true(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "usage"),
                                                 "prompt_tokens")
                    ->valuedouble > 0);
    cJSON_Delete(j);
    http_resp_free(&r);
    assert_int_equal(proc_stop(&px), 0);
}

/* ---- upstream errors that are not OpenAI-shaped ---------------------------------------------- */

/* Checks an OpenAI error body: the four keys, and 'text' inside the message. */
static void check_error(const struct http_resp *r, long status, const char *text)
{
    char ct[128];
    cJSON *j = http_json(r);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");

    assert_int_equal(r->status, status);
    assert_true(http_header(r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/json");
    assert_true(cJSON_IsObject(e));
    assert_true(cJSON_IsString(m));
    if (!strstr(m->valuestring, text))
        fail_msg("message '%s' lacks '%s'", m->valuestring, text);
    assert_null(strchr(m->valuestring, '<'));
    assert_null(strchr(m->valuestring, '\n'));
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type")));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(e, "param"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(e, "code"));
    cJSON_Delete(j);
}

static void test_error_bodies(void **state)
{
    static const struct {
        const char *model, *extra;
        long status;
        const char *text;
    } cases[] = {
        {"gpt-x@status=500,errbody=typeerror", NULL, 500,
         "TypeError: mock 500: cannot read properties of undefined"},
        {"gpt-x@status=502,errbody=html", NULL, 502, "502 Bad Gateway"},
        {"gpt-x@status=502,errbody=html", "\"stream\":true", 502, "mock-gateway & friends"},
        {"gpt-x@status=400,errbody=plain", "\"stream\":true", 400, "upstream exploded: mock 400"},
        {"gpt-x@status=503,errbody=empty", NULL, 503, "empty"},
        {"moa-gpt-x@status=500,errbody=typeerror", NULL, 500,
         "TypeError: mock 500: cannot read properties of undefined"},
        {"re2-gpt-x@status=429,errbody=plain", "\"stream\":true", 429,
         "upstream exploded: mock 429"},
        {"bon-gpt-x@status=502,errbody=html", NULL, 502, "502 Bad Gateway"},
    };
    struct proc px;
    struct http_resp r;
    const char *args[] = {"--retries", "0", NULL};
    const char *env[] = {"OPENAI_API_KEY=sk-server-LEAKCHECK-99cc", NULL};
    char *body;

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, args, env), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        body = chat_body(cases[i].model, "hi", cases[i].extra);
        chat(px.port, "x", "acct-err", body, &r);
        free(body);
        check_error(&r, cases[i].status, cases[i].text);
        http_resp_free(&r);
    }
    /* The HTML page's style sheet is not part of the message. */
    body = chat_body("gpt-x@status=502,errbody=html", "hi", NULL);
    chat(px.port, "x", "acct-err", body, &r);
    free(body);
    assert_null(strstr(r.body, "color:red"));
    http_resp_free(&r);
    /* An OpenAI-shaped error stays byte for byte (passthrough, also for a stream request). */
    for (int s = 0; s < 2; s++) {
        body = chat_body("gpt-x@status=418", "hi", s ? "\"stream\":true" : NULL);
        chat(px.port, "x", "acct-err", body, &r);
        free(body);
        assert_int_equal(r.status, 418);
        assert_string_equal(r.body, "{\"error\":{\"message\":\"mock error 418\",\"type\":"
                                    "\"server_error\",\"param\":null,\"code\":\"mock_418\"}}");
        http_resp_free(&r);
    }
    assert_int_equal(proc_stop(&px), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_usage),
        cmocka_unit_test(test_approach_usage),
        cmocka_unit_test(test_error_bodies),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
