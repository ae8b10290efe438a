/* itest_approaches.c: approaches through the real proxy against the mock upstream: accuracy on
 * the noisy model, wall time within each approach's round budget, selection, combinations, n,
 * usage sums against the mock's own count, n fallback, partial failure, streaming. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "answer.h"
#include "arena.h"
#include "harness.h"

#define KEY "sk-approach-LEAKCHECK-0a1b2c"

static struct proc mock;
static char logs[32][512];
static int nlogs;
static const char *const auth[] = {"Authorization: Bearer " KEY, NULL};

static int setup(void **state)
{
    (void)state;
    harness_deadline(480);
    answer_init();
    return mock_start(&mock, NULL);
}

static int teardown(void **state)
{
    (void)state;
    answer_cleanup();
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static void start_proxy(struct proc *p, const char *const *args)
{
    assert_int_equal(proxy_start(p, mock.port, args, NULL), 0);
    if (nlogs < 32)
        snprintf(logs[nlogs++], sizeof(logs[0]), "%s", p->log);
}

/* Fixed-k sampling (no adaptive rounds) for the tests of rounds and call counts. */
static const char *const FIXED_K[] = {"--adaptive", "0", NULL};

static void stop_proxy(struct proc *p)
{
    assert_int_equal(proc_stop(p), 0);
}

/* POSTs a chat body; returns the parsed response (caller deletes); asserts the status. */
static cJSON *post(int port, const char *body, long want, struct http_resp *keep)
{
    struct http_resp r;
    cJSON *j;

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, auth, &r), 0);
    if (r.status != want)
        fprintf(stderr, "status %ld (want %ld): %.400s\n", r.status, want, r.body);
    assert_int_equal(r.status, want);
    j = http_json(&r);
    if (keep)
        *keep = r;
    else
        http_resp_free(&r);
    return j;
}

static const char *content_of(cJSON *j, int i)
{
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), i);
    cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "message");
    cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "content");

    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* ---- accuracy on the noisy model ----------------------------------------------------------------
 */

#define NQ 240

struct question {
    char text[96];
    long truth;
};

static struct question qs[NQ];

static void make_questions(void)
{
    uint64_t s = 0x9e3779b97f4a7c15ULL;

    for (int i = 0; i < NQ; i++) {
        long a, b, c;

        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        a = (long)((s >> 33) % 90) + 10;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        b = (long)((s >> 33) % 20) + 2;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        c = (long)((s >> 33) % 20) + 2;
        snprintf(qs[i].text, sizeof(qs[i].text), "Question %d: What is %ld + %ld * %ld?", i, a, b,
                 c);
        qs[i].truth = a + b * c;
    }
}

struct acc_job {
    int port;
    const char *approach; /* "" for a plain call */
    int next;             /* shared cursor (atomic builtins) */
    int correct;
    int errors;
    pthread_mutex_t mu;
};

static void *acc_worker(void *arg)
{
    struct acc_job *job = arg;
    struct arena *a = arena_create();

    for (;;) {
        int i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        char model[64];
        struct http_resp r;

        if (i >= NQ)
            break;
        snprintf(model, sizeof(model), "%s%smock@noisy=1", job->approach,
                 job->approach[0] ? "-" : "");
        char *body = chat_body(model, qs[i].text, NULL);
        int ok = http_req("POST", job->port, "/v1/chat/completions", body, auth, &r) == 0 &&
                 r.status == 200;
        cJSON *j = ok ? http_json(&r) : NULL;
        const char *text = j ? content_of(j, 0) : NULL;
        struct answer ans = answer_extract(a, text ? text : "", ANSWER_NUMBER);

        pthread_mutex_lock(&job->mu);
        if (!text)
            job->errors++;
        else if (ans.kind == ANSWER_NUMBER && ans.num == (double)qs[i].truth)
            job->correct++;
        pthread_mutex_unlock(&job->mu);
        cJSON_Delete(j);
        http_resp_free(&r);
        free(body);
    }
    arena_destroy(a);
    return NULL;
}

static int accuracy(int port, const char *approach, int *errors)
{
    struct acc_job job = {.port = port, .approach = approach};
    pthread_t t[8];

    pthread_mutex_init(&job.mu, NULL);
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, acc_worker, &job);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&job.mu);
    *errors = job.errors;
    return job.correct;
}

/* With p = 0.6 (single call right) and q = 0.8 (rating right), the expected accuracy is 0.60
 * for a single call, about 0.90 for self-consistency (5 samples), 0.94 for majority voting (6),
 * 0.84 for bon (3 samples). Over 240 questions the standard deviation of a difference of counts
 * is at most 9.4, so "at least 20 more correct than a single call" fails a correct build with
 * probability below 1e-4 (z >= 4.0 for bon, >= 5 for the others); "single call between 45% and
 * 75%" has z > 4.7. The mock seeds each sample per question and sample index, so a given build
 * gets the same counts on every run. (moa's synthesis of three candidates gains less, about
 * +0.1 at these p and q: too little for a safe bound at this size, so it is not asserted.) */
static void test_noisy_accuracy(void **state)
{
    struct proc px;
    static const char *const approaches[] = {"self_consistency", "majority_voting", "bon"};
    int errors, base;

    (void)state;
    make_questions();
    start_proxy(&px, NULL);
    mock_reset(mock.port);
    base = accuracy(px.port, "", &errors);
    fprintf(stderr, "accuracy none: %d/%d\n", base, NQ);
    assert_int_equal(errors, 0);
    assert_true(base >= NQ * 45 / 100 && base <= NQ * 75 / 100);
    for (size_t i = 0; i < sizeof(approaches) / sizeof(approaches[0]); i++) {
        int c = accuracy(px.port, approaches[i], &errors);

        fprintf(stderr, "accuracy %s: %d/%d\n", approaches[i], c, NQ);
        assert_int_equal(errors, 0);
        assert_true(c >= base + 20);
    }
    stop_proxy(&px);
}

/* ---- rounds: wall time at a fixed upstream latency ----------------------------------------------
 */

static double wall(int port, const char *model, const char *extra)
{
    struct http_resp r;
    char *body = chat_body(model, "What is 2 + 3 * 4?", extra);

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, auth, &r), 0);
    if (r.status != 200)
        fprintf(stderr, "%s: %ld %.300s\n", model, r.status, r.body);
    assert_int_equal(r.status, 200);
    double t = r.total_s;
    http_resp_free(&r);
    free(body);
    return t;
}

static void check_rounds(int port, const char *suffix)
{
    static const struct {
        const char *slug;
        int rounds;
    } budget[] = {{"bon", 2}, {"moa", 3},           {"self_consistency", 1}, {"majority_voting", 1},
                  {"re2", 1}, {"cot_reflection", 1}};
    const double L = 0.3;

    for (size_t i = 0; i < sizeof(budget) / sizeof(budget[0]); i++) {
        char model[96];

        snprintf(model, sizeof(model), "%s-mock@noisy=1,latency=300%s", budget[i].slug, suffix);
        double t = wall(port, model, NULL);
        fprintf(stderr, "%-18s %s: %.3f s (budget %d x %.1f s)\n", budget[i].slug, suffix, t,
                budget[i].rounds, L);
        assert_true(t >= budget[i].rounds * L - 0.01);
        assert_true(t < budget[i].rounds * L + 0.15 + harness_slack());
    }
}

static void test_rounds_within_budget(void **state)
{
    struct proc px;

    (void)state;
    start_proxy(&px, FIXED_K);
    check_rounds(px.port, "");
    stop_proxy(&px);
    /* An upstream without n: the samples go out as parallel single calls, same rounds. A fresh
     * proxy, since n support is remembered for the process's life. The first request pays one
     * extra round for the refused n call; later ones do not. */
    start_proxy(&px, FIXED_K);
    wall(px.port, "self_consistency-mock@n_mode=refuse", NULL);
    check_rounds(px.port, ",n_mode=refuse");
    stop_proxy(&px);
}

/* ---- usage --------------------------------------------------------------------------------------
 */

static void test_usage_is_the_sum_of_every_call(void **state)
{
    struct proc px;
    static const char *const slugs[] = {
        "bon",     "moa",    "self_consistency", "majority_voting", "re2", "cot_reflection",
        "bon&moa", "re2|bon"};

    (void)state;
    start_proxy(&px, NULL);
    for (size_t i = 0; i < sizeof(slugs) / sizeof(slugs[0]); i++) {
        for (int stream = 0; stream < 2; stream++) {
            char model[96];
            struct http_resp r;

            snprintf(model, sizeof(model), "%s-mock@noisy=1,reasoning=3", slugs[i]);
            char *body = chat_body(model, "What is 7 * 6?",
                                   stream ? "\"stream\":true,\"stream_options\":{\"include_usage\":"
                                            "true}"
                                          : NULL);
            mock_reset(mock.port);
            assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, auth, &r), 0);
            assert_int_equal(r.status, 200);
            cJSON *u = NULL, *j = NULL;
            if (stream) {
                /* The usage chunk: the last data line before [DONE] with "usage". */
                char *p = strstr(r.body, "\"usage\":{");
                assert_non_null(p);
                char *line = p;
                while (line > r.body && line[-1] != '\n')
                    line--;
                char *eol = strstr(line, "\n");
                j = cJSON_ParseWithLength(line + 6, (size_t)(eol - line - 6));
            } else {
                j = http_json(&r);
            }
            assert_non_null(j);
            u = cJSON_GetObjectItemCaseSensitive(j, "usage");
            long pt = (long)cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens")->valuedouble;
            long ct = (long)cJSON_GetObjectItemCaseSensitive(u, "completion_tokens")->valuedouble;
            long tt = (long)cJSON_GetObjectItemCaseSensitive(u, "total_tokens")->valuedouble;
            long rt = (long)cJSON_GetObjectItemCaseSensitive(
                          cJSON_GetObjectItemCaseSensitive(u, "completion_tokens_details"),
                          "reasoning_tokens")
                          ->valuedouble;
            fprintf(stderr, "%s%s: prompt %ld completion %ld reasoning %ld (mock %ld %ld %ld)\n",
                    slugs[i], stream ? " (stream)" : "", pt, ct, rt,
                    mock_stat(mock.port, "prompt_tokens"),
                    mock_stat(mock.port, "completion_tokens"),
                    mock_stat(mock.port, "reasoning_tokens"));
            assert_int_equal(pt, mock_stat(mock.port, "prompt_tokens"));
            assert_int_equal(ct, mock_stat(mock.port, "completion_tokens"));
            assert_int_equal(rt, mock_stat(mock.port, "reasoning_tokens"));
            assert_int_equal(tt, pt + ct);
            assert_true(pt > 0 && ct > 0 && rt > 0);
            cJSON_Delete(j);
            http_resp_free(&r);
            free(body);
        }
    }
    stop_proxy(&px);
}

/* ---- selection, combinations, n -----------------------------------------------------------------
 */

/* Number of chat calls the mock received since the last reset. */
static long calls(void)
{
    return mock_stat(mock.port, "calls");
}

static bool any_request_contains(const char *needle)
{
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    char *s = cJSON_PrintUnformatted(reqs);
    bool found = strstr(s, needle) != NULL;

    cJSON_free(s);
    cJSON_Delete(reqs);
    return found;
}

static void test_selection(void **state)
{
    struct proc px;
    const char *args[] = {"--approach", "majority_voting", NULL};
    struct {
        const char *model;
        const char *extra;
        const char *content;
        long calls; /* upstream calls the chosen approach makes (n supported) */
    } cases[] = {
        {"self_consistency-mock", NULL, "What is 1 + 1?", 1},
        {"self-consistency-mock", NULL, "What is 1 + 1?", 1},
        {"best-of-n-mock", NULL, "What is 1 + 1?", 4},
        {"mixture-of-agents-mock", NULL, "What is 1 + 1?", 3},
        {"mock", "\"optillm_approach\":\"bon\"", "What is 1 + 1?", 4},
        {"mock", NULL, "<optillm_approach>moa</optillm_approach>What is 1 + 1?", 3},
        /* The prefix beats the field, the field beats the tag. */
        {"re2-mock", "\"optillm_approach\":\"bon\"", "What is 1 + 1?", 1},
        {"mock", "\"optillm_approach\":\"re2\"",
         "<optillm_approach>bon</optillm_approach>What is 1 + 1?", 1},
        /* Nothing chosen: the server's --approach. */
        {"mock", NULL, "What is 1 + 1?", 1},
        /* "auto" in the field means passthrough. */
        {"mock", "\"optillm_approach\":\"auto\"", "What is 1 + 1?", 1},
    };

    (void)state;
    start_proxy(&px, args);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *body = chat_body(cases[i].model, cases[i].content, cases[i].extra);

        mock_reset(mock.port);
        cJSON *j = post(px.port, body, 200, NULL);
        if (calls() != cases[i].calls)
            fprintf(stderr, "case %zu: %ld calls, want %ld\n", i, calls(), cases[i].calls);
        assert_int_equal(calls(), cases[i].calls);
        /* The tag never reaches the upstream. */
        assert_false(any_request_contains("optillm_approach"));
        /* The response names the model as the client sent it. */
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "model")->valuestring,
                            cases[i].model);
        cJSON_Delete(j);
        free(body);
    }
    /* The upstream sees the model without the prefix. */
    char *body = chat_body("moa-mock", "What is 1 + 1?", NULL);
    mock_reset(mock.port);
    cJSON_Delete(post(px.port, body, 200, NULL));
    assert_true(any_request_contains("\"model\":\"mock\""));
    assert_false(any_request_contains("moa-mock"));
    free(body);
    stop_proxy(&px);
}

static void test_combinations_and_n(void **state)
{
    struct proc px;

    (void)state;
    start_proxy(&px, NULL);
    /* a|b: one choice per approach, in the order written. */
    char *body = chat_body("re2|cot_reflection-mock@reply=fixed%20text", "hi", NULL);
    cJSON *j = post(px.port, body, 200, NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "choices")), 2);
    assert_string_equal(content_of(j, 0), "fixed text");
    cJSON_Delete(j);
    free(body);
    /* a&b: b's user message is a's answer. */
    body = chat_body("re2&re2-mock@noisy=1", "What is 20 + 1?", NULL);
    mock_reset(mock.port);
    j = post(px.port, body, 200, NULL);
    assert_int_equal(calls(), 2);
    cJSON *reqs = mock_get(mock.port, "/mock/requests");
    cJSON *second = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 1), "body");
    char *s = cJSON_PrintUnformatted(second);
    assert_non_null(strstr(s, "The answer is"));
    cJSON_free(s);
    cJSON_Delete(reqs);
    cJSON_Delete(j);
    free(body);
    /* n: the pipeline runs n times in parallel; n x approaches choices for a|b. */
    body = chat_body("re2-mock@latency=300", "hi", "\"n\":3");
    struct http_resp r;
    mock_reset(mock.port);
    j = post(px.port, body, 200, &r);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "choices")), 3);
    assert_int_equal(calls(), 3);
    assert_true(r.total_s < 0.6 + harness_slack()); /* parallel, not 3 x 300 ms */
    http_resp_free(&r);
    cJSON_Delete(j);
    free(body);
    body = chat_body("re2|cot_reflection-mock", "hi", "\"n\":2");
    j = post(px.port, body, 200, NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "choices")), 4);
    cJSON_Delete(j);
    free(body);
    /* Per-request options change only that request. */
    body = chat_body("bon-mock", "What is 1 + 1?", "\"optillm_best_of_n\":5");
    mock_reset(mock.port);
    cJSON_Delete(post(px.port, body, 200, NULL));
    assert_int_equal(calls(), 6); /* one n=5 call + 5 ratings */
    free(body);
    body = chat_body("bon-mock", "What is 1 + 1?", NULL);
    mock_reset(mock.port);
    cJSON_Delete(post(px.port, body, 200, NULL));
    assert_int_equal(calls(), 4);
    free(body);
    stop_proxy(&px);
}

static void test_n_fallback_and_partial_failure(void **state)
{
    struct proc px;

    (void)state;
    start_proxy(&px, FIXED_K);
    /* llama.cpp-style refusal: 1 refused call, then 5 single calls; remembered afterwards. */
    char *body = chat_body("self_consistency-mock@n_mode=refuse", "What is 2 + 2?", NULL);
    mock_reset(mock.port);
    cJSON *j = post(px.port, body, 200, NULL);
    assert_int_equal(calls(), 6);
    cJSON_Delete(j);
    mock_reset(mock.port);
    j = post(px.port, body, 200, NULL);
    assert_int_equal(calls(), 5);
    cJSON_Delete(j);
    free(body);
    stop_proxy(&px);

    /* Ollama-style: n ignored, one choice back; the missing samples are fetched. */
    start_proxy(&px, FIXED_K);
    body = chat_body("majority_voting-mock@n_mode=ignore", "What is 2 + 2?", NULL);
    mock_reset(mock.port);
    j = post(px.port, body, 200, NULL);
    assert_int_equal(mock_stat(mock.port, "choices"), 6);
    cJSON_Delete(j);
    free(body);
    /* Partial failure: some samples fail (500), the rest are aggregated. */
    body = chat_body("self_consistency-mock@fail_rate=0.4", "What is 2 + 2?", NULL);
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        struct http_resp r;

        assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, auth, &r), 0);
        ok += r.status == 200;
        http_resp_free(&r);
    }
    assert_true(ok >= 8);
    free(body);
    /* A stage that yields nothing fails with the upstream's status and message. */
    body = chat_body("self_consistency-mock@status=503", "What is 2 + 2?", NULL);
    j = post(px.port, body, 503, NULL);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "message")
            ->valuestring,
        "mock error 503");
    cJSON_Delete(j);
    free(body);
    stop_proxy(&px);
}

/* ---- streaming
 * ------------------------------------------------------------------------------------ */

/* Parses an SSE body into its data JSON objects; checks the chunk contract. Returns the
 * concatenated content of choice 0. */
static char *check_stream(const struct http_resp *r, bool want_usage)
{
    char *text = calloc(1, r->len + 1);
    const char *p = r->body;
    char id[128] = "";
    int n = 0, finish = 0, usage = 0;
    bool done = false, role_first = false;

    while ((p = strstr(p, "data: "))) {
        const char *eol = strstr(p, "\n\n");
        assert_non_null(eol);
        if (strncmp(p + 6, "[DONE]", 6) == 0) {
            done = true;
            break;
        }
        cJSON *c = cJSON_ParseWithLength(p + 6, (size_t)(eol - p - 6));
        assert_non_null(c);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "object")->valuestring,
                            "chat.completion.chunk");
        const char *cid = cJSON_GetObjectItemCaseSensitive(c, "id")->valuestring;
        if (!id[0])
            snprintf(id, sizeof(id), "%s", cid);
        assert_string_equal(cid, id); /* one id */
        cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "choices"), 0);
        if (cJSON_GetObjectItemCaseSensitive(c, "usage") &&
            !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "usage")))
            usage++;
        if (ch) {
            cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
            cJSON *role = cJSON_GetObjectItemCaseSensitive(d, "role");
            cJSON *content = cJSON_GetObjectItemCaseSensitive(d, "content");
            cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
            if (n == 0)
                role_first = cJSON_IsString(role) && !strcmp(role->valuestring, "assistant");
            if (cJSON_IsString(content))
                strcat(text, content->valuestring);
            if (cJSON_IsString(fr))
                finish++;
        }
        n++;
        cJSON_Delete(c);
        p = eol + 2;
    }
    assert_true(role_first);
    assert_true(done);
    assert_int_equal(finish, 1);
    assert_int_equal(usage, want_usage ? 1 : 0);
    return text;
}

static void test_streaming_through_approaches(void **state)
{
    struct proc px;
    const char *args[] = {"--sse-keepalive", "0.2", "--log", "debug", NULL};
    static const char *const slugs[] = {
        "bon", "moa", "self_consistency", "majority_voting", "re2", "cot_reflection"};

    (void)state;
    start_proxy(&px, args);
    for (size_t i = 0; i < sizeof(slugs) / sizeof(slugs[0]); i++) {
        for (int u = 0; u < 2; u++) {
            char model[96];
            struct http_resp r;

            snprintf(model, sizeof(model), "%s-mock@noisy=1,p=1", slugs[i]);
            char *body = chat_body(model, "What is 6 * 7?",
                                   u ? "\"stream\":true,\"stream_options\":{\"include_usage\":"
                                       "true}"
                                     : "\"stream\":true");
            assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, auth, &r), 0);
            assert_int_equal(r.status, 200);
            char *text = check_stream(&r, u);
            /* p=1: every sample is right; the streamed answer carries 42 and, for
             * cot_reflection, only the output section. */
            assert_non_null(strstr(text, "42"));
            assert_null(strstr(text, "<thinking>"));
            assert_null(strstr(text, "<output>"));
            free(text);
            http_resp_free(&r);
            free(body);
        }
    }
    /* The final stage's tokens stream as they arrive: moa's synthesis of 10 words 100 ms apart
     * starts reaching us well before the end. */
    char *body =
        chat_body("moa-mock@chunk_delay=100,words=10", "Tell me something.", "\"stream\":true");
    struct http_resp r;
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200);
    free(check_stream(&r, false));
    assert_true(r.chunks >= 8);
    assert_true(r.chunk_t[1] < r.total_s - 0.5);
    http_resp_free(&r);
    free(body);
    /* Keep-alive comments while the approach waits (latency 700 ms, interval 0.2 s). */
    body = chat_body("bon-mock@latency=700", "What is 1 + 1?", "\"stream\":true");
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, ": keep-alive"));
    assert_true(strstr(r.body, ": keep-alive") < strstr(r.body, "data: "));
    assert_true(r.first_s < 0.5 + harness_slack());
    free(check_stream(&r, false));
    http_resp_free(&r);
    free(body);
    /* Keep-alives also while n runs, or several approaches, work in parallel. */
    body = chat_body("re2|bon-mock@latency=700", "What is 1 + 1?", "\"stream\":true,\"n\":2");
    assert_int_equal(http_req("POST", px.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, ": keep-alive"));
    assert_true(strstr(r.body, ": keep-alive") < strstr(r.body, "data: "));
    http_resp_free(&r);
    free(body);
    /* An error before the first byte is a plain HTTP error even for a stream request (400:
     * not retried, so no keep-alive has started the stream yet). */
    body = chat_body("moa-mock@status=400", "What is 1 + 1?", "\"stream\":true");
    cJSON_Delete(post(px.port, body, 400, NULL));
    free(body);
    stop_proxy(&px);
}

/* --prompts-dir replaces a built-in prompt at start-up; the others stay. */
static void test_prompts_dir_override(void **state)
{
    char dir[256], sub[300], file[340];
    struct proc px;
    const char *args[] = {"--prompts-dir", dir, NULL};

    (void)state;
    snprintf(dir, sizeof(dir), "%s/logs/prompts-%d", harness_build_dir(), (int)getpid());
    snprintf(sub, sizeof(sub), "%s/re2", dir);
    mkdir(dir, 0755);
    mkdir(sub, 0755);
    snprintf(file, sizeof(file), "%s/reread.txt", sub);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("OVERRIDDEN-PROMPT: {{question}} / {{question}}", f);
    fclose(f);
    start_proxy(&px, args);
    char *body = chat_body("re2-mock", "What is 3 + 4?", NULL);
    mock_reset(mock.port);
    cJSON_Delete(post(px.port, body, 200, NULL));
    assert_true(any_request_contains("OVERRIDDEN-PROMPT: What is 3 + 4? / What is 3 + 4?"));
    free(body);
    body = chat_body("bon-mock", "What is 3 + 4?", NULL);
    mock_reset(mock.port);
    cJSON_Delete(post(px.port, body, 200, NULL));
    assert_true(any_request_contains("Rating: N")); /* bon's built-in prompt is unchanged */
    assert_false(any_request_contains("OVERRIDDEN-PROMPT"));
    free(body);
    stop_proxy(&px);
    remove(file);
    rmdir(sub);
    rmdir(dir);
}

/* --log-conversations: one JSON line per request with every upstream call and the answer. */
static void test_conversation_log(void **state)
{
    char dir[256], file[400], line[65536];
    struct proc px;
    const char *args[] = {"--log-conversations", dir, NULL};
    time_t now = time(NULL);
    struct tm tm;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/logs/conv-%d", harness_build_dir(), (int)getpid());
    start_proxy(&px, args);
    char *body = chat_body("bon-mock@noisy=1,p=1", "What is 5 * 5?", NULL);
    cJSON_Delete(post(px.port, body, 200, NULL));
    free(body);
    body = chat_body("mock", "plain", NULL);
    cJSON_Delete(post(px.port, body, 200, NULL));
    free(body);
    stop_proxy(&px);
    gmtime_r(&now, &tm);
    snprintf(file, sizeof(file), "%s/conversations-%04d-%02d-%02d.jsonl", dir, tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday);
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "approach")->valuestring, "bon");
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(j, "calls");
    assert_int_equal(cJSON_GetArraySize(calls), 4); /* 1 n=3 call + 3 ratings */
    cJSON *c0 = cJSON_GetArrayItem(calls, 0);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c0, "stage")));
    assert_true(cJSON_GetObjectItemCaseSensitive(c0, "latency_ms")->valuedouble >= 0);
    assert_true(cJSON_GetObjectItemCaseSensitive(c0, "prompt_tokens")->valuedouble > 0);
    assert_non_null(strstr(cJSON_GetObjectItemCaseSensitive(j, "answer")->valuestring, "25"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "request"));
    cJSON_Delete(j);
    assert_non_null(fgets(line, sizeof(line), f)); /* the passthrough */
    j = cJSON_Parse(line);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "calls")), 1);
    cJSON_Delete(j);
    assert_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_false(file_contains(file, KEY));
    assert_false(file_contains(file, "LEAKCHECK"));
    remove(file);
    rmdir(dir);
}

/* Every registered approach, through the real proxy at upstream latency L: answers, stays
 * within the rounds it declares in GET /v1/approaches, and its usage is exactly the mock's
 * own count of tokens. */
static void test_every_approach_budget_and_usage(void **state)
{
    static const char *const args[] = {"--enable-code-execution", NULL}; /* executecode, coc */
    struct proc px;
    struct http_resp r;
    const double L = 0.3;

    (void)state;
    start_proxy(&px, args);
    assert_int_equal(http_req("GET", px.port, "/v1/approaches", NULL, auth, &r), 0);
    cJSON *list = http_json(&r);
    http_resp_free(&r);
    cJSON *a;
    int n = 0;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(list, "data"))
    {
        const char *slug = cJSON_GetObjectItemCaseSensitive(a, "id")->valuestring;
        int rounds = (int)cJSON_GetObjectItemCaseSensitive(a, "rounds")->valuedouble;
        char model[96];

        if (!strcmp(slug, "mcp"))
            continue; /* needs --mcp-config and MCP servers: itest_mcp */
        if (!strcmp(slug, "web_search") || !strcmp(slug, "deep_research"))
            continue; /* need --search-url: itest_web_search */
        snprintf(model, sizeof(model), "%s-mock@noisy=1,latency=300", slug);
        char *body = chat_body(model, "What is 12 + 7 * 3?", NULL);
        mock_reset(mock.port);
        cJSON *j = post(px.port, body, 200, &r);
        double t = r.total_s;
        http_resp_free(&r);
        long pt = (long)cJSON_GetObjectItemCaseSensitive(
                      cJSON_GetObjectItemCaseSensitive(j, "usage"), "prompt_tokens")
                      ->valuedouble;
        long ct = (long)cJSON_GetObjectItemCaseSensitive(
                      cJSON_GetObjectItemCaseSensitive(j, "usage"), "completion_tokens")
                      ->valuedouble;
        fprintf(stderr, "%-18s %.3f s (declared %d rounds), %ld calls, tokens %ld/%ld\n", slug, t,
                rounds, calls(), pt, ct);
        /* a plugin (privacy, readurls: 0 rounds of its own) alone is followed by one
         * completion; longcepo's rounds depend on the input (its retries until a tag), counted
         * by test_longcepo */
        int budget = rounds > 0 ? rounds : 1;
        assert_true(rounds >= 0);
        if (strcmp(slug, "longcepo") != 0)
            assert_true(t < budget * L + 0.25 + harness_slack()); /* an extra round adds 0.3 */
        assert_int_equal(pt, mock_stat(mock.port, "prompt_tokens"));
        assert_int_equal(ct, mock_stat(mock.port, "completion_tokens"));
        assert_non_null(content_of(j, 0));
        cJSON_Delete(j);
        free(body);
        n++;
    }
    assert_true(n >= 17);
    cJSON_Delete(list);
    stop_proxy(&px);
}

static void test_no_key_in_logs(void **state)
{
    (void)state;
    for (int i = 0; i < nlogs; i++) {
        assert_false(file_contains(logs[i], KEY));
        assert_false(file_contains(logs[i], "LEAKCHECK"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selection),
        cmocka_unit_test(test_combinations_and_n),
        cmocka_unit_test(test_usage_is_the_sum_of_every_call),
        cmocka_unit_test(test_n_fallback_and_partial_failure),
        cmocka_unit_test(test_streaming_through_approaches),
        cmocka_unit_test(test_rounds_within_budget),
        cmocka_unit_test(test_every_approach_budget_and_usage),
        cmocka_unit_test(test_noisy_accuracy),
        cmocka_unit_test(test_prompts_dir_override),
        cmocka_unit_test(test_conversation_log),
        cmocka_unit_test(test_no_key_in_logs),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
