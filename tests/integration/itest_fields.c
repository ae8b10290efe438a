/* itest_fields.c: the request's meaning survives an approach. Through self_consistency,
 * majority_voting, bon, moa and re2 against the mock (which records every upstream body):
 * every generation field the client sent reaches every upstream call unchanged; response_format
 * and the tools group reach the answer calls only (never a rating or a critique); tool calls
 * come back, as JSON and streamed, with finish_reason "tool_calls"; tool turns of the history
 * are sent as the client sent them. Every other approach refuses tools with a 400 naming the
 * approaches that support them, before any upstream call. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define KEY "sk-fields-LEAKCHECK-3c4d5e"
#define Q   "What is the weather in Paris today?"
#define SYS "You are a careful assistant."

static struct proc mock;
static struct proc proxy;
static const char *const auth[] = {"Authorization: Bearer " KEY, NULL};

/* The five approaches that carry tools, and the calls each makes on the mock. */
struct subject {
    const char *slug;
    int calls; /* upstream calls at the defaults with distinct mock replies */
};
static const struct subject subjects[] = {
    {"self_consistency", 1}, {"majority_voting", 1}, {"bon", 4}, {"moa", 3}, {"re2", 1},
};

/* Every generation field a client may send, none of them the approaches' business. */
#define GEN_FIELDS                                                                                 \
    "\"seed\":7,\"top_p\":0.5,\"stop\":[\"END\"],\"user\":\"u-42\",\"frequency_penalty\":0.1,"     \
    "\"presence_penalty\":0.2,\"logit_bias\":{\"50256\":-100},\"reasoning_effort\":\"low\","       \
    "\"metadata\":{\"team\":\"a\"},\"service_tier\":\"default\",\"logprobs\":true,"                \
    "\"top_logprobs\":2,\"store\":false,\"prompt_cache_key\":\"pk\",\"optillm_best_of_n\":3,"      \
    "\"optillm_adaptive\":0"
#define GEN_NAMES                                                                                  \
    "seed", "top_p", "stop", "user", "frequency_penalty", "presence_penalty", "logit_bias",        \
        "reasoning_effort", "metadata", "service_tier", "logprobs", "top_logprobs", "store",       \
        "prompt_cache_key"
#define TOOLS                                                                                      \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":"    \
    "\"Weather of a city\",\"parameters\":{\"type\":\"object\",\"properties\":{\"q\":{\"type\":"   \
    "\"string\"}}}}}],\"tool_choice\":\"auto\",\"parallel_tool_calls\":false"
#define RF "\"response_format\":{\"type\":\"json_object\"}"

static int setup(void **state)
{
    (void)state;
    harness_deadline(300);
    if (mock_start(&mock, NULL) != 0)
        return -1;
    return proxy_start(&proxy, mock.port, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    int a = proc_stop(&proxy);
    int b = proc_stop(&mock);
    return a == 0 && b == 0 ? 0 : -1;
}

/* {"model":"<slug>-mock","messages":[system, user Q],<extra>} */
static char *body_for(const char *slug, const char *extra)
{
    size_t len = strlen(slug) + strlen(extra) + 256;
    char *b = malloc(len);

    snprintf(b, len,
             "{\"model\":\"%s-mock\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS "\"},"
             "{\"role\":\"user\",\"content\":\"" Q "\"}]%s%s}",
             slug, *extra ? "," : "", extra);
    return b;
}

static cJSON *post(const char *body, long want, struct http_resp *keep)
{
    struct http_resp r;
    cJSON *j;

    assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, auth, &r), 0);
    if (r.status != want)
        fprintf(stderr, "status %ld (want %ld): %.600s\n", r.status, want, r.body);
    assert_int_equal(r.status, want);
    j = http_json(&r);
    if (keep)
        *keep = r;
    else
        http_resp_free(&r);
    return j;
}

/* The bodies the mock received since the last reset, oldest first (caller deletes). */
static cJSON *upstream_bodies(void)
{
    cJSON *out = mock_bodies(mock.port);

    assert_non_null(out);
    return out;
}

static const char *last_content(const cJSON *body)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(last, "content");

    return cJSON_IsString(c) ? c->valuestring : "";
}

/* Is upstream call i (of n, in arrival order) one whose output can become the answer? */
static bool answer_call(const char *slug, const cJSON *body, int i, int n)
{
    if (!strcmp(slug, "bon")) /* the samples; the ratings quote Q inside their prompt */
        return !strcmp(last_content(body), Q);
    if (!strcmp(slug, "moa")) /* the synthesis, the last round */
        return i == n - 1;
    return true; /* self_consistency, majority_voting, re2: every call */
}

static void check_no_optillm_fields(const cJSON *body)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, body) assert_true(strncmp(it->string, "optillm_", 8) != 0);
}

/* Every generation field on every call; response_format only on answer calls. */
static void test_generation_fields(void **state)
{
    static const char *const names[] = {GEN_NAMES};
    cJSON *client = cJSON_Parse("{" GEN_FIELDS "," RF "}");

    (void)state;
    assert_non_null(client);
    for (size_t s = 0; s < sizeof(subjects) / sizeof(subjects[0]); s++) {
        const char *slug = subjects[s].slug;
        char *body = body_for(slug, GEN_FIELDS "," RF);
        int answers = 0;

        mock_reset(mock.port);
        cJSON *j = post(body, 200, NULL);
        cJSON *bodies = upstream_bodies();
        int n = cJSON_GetArraySize(bodies);

        assert_int_equal(n, subjects[s].calls);
        for (int i = 0; i < n; i++) {
            const cJSON *b = cJSON_GetArrayItem(bodies, i);
            bool ans = answer_call(slug, b, i, n);

            for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
                const cJSON *want = cJSON_GetObjectItemCaseSensitive(client, names[k]);
                const cJSON *got = cJSON_GetObjectItemCaseSensitive(b, names[k]);

                if (!got || !cJSON_Compare(want, got, true))
                    fail_msg("%s call %d: field %s missing or changed", slug, i, names[k]);
            }
            check_no_optillm_fields(b);
            if (ans)
                assert_true(
                    cJSON_Compare(cJSON_GetObjectItemCaseSensitive(client, "response_format"),
                                  cJSON_GetObjectItemCaseSensitive(b, "response_format"), true));
            else
                assert_null(cJSON_GetObjectItemCaseSensitive(b, "response_format"));
            answers += ans;
        }
        assert_true(answers >= 1);
        if (!strcmp(slug, "bon") || !strcmp(slug, "moa"))
            assert_true(answers < n); /* ratings / drafts and the critique were checked too */
        /* The answer is the JSON the client asked for. */
        cJSON *msg = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "message");
        cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        assert_true(cJSON_IsString(content));
        cJSON *parsed = cJSON_Parse(content->valuestring);
        if (!cJSON_IsObject(parsed))
            fail_msg("%s: the answer is not a JSON object: %s", slug, content->valuestring);
        assert_non_null(cJSON_GetObjectItemCaseSensitive(parsed, "answer"));
        cJSON_Delete(parsed);
        cJSON_Delete(bodies);
        cJSON_Delete(j);
        free(body);
    }
    cJSON_Delete(client);
}

/* choices[i] carries a call of get_weather with {"q": Q}, content null, finish tool_calls. */
static void check_tool_choice(const cJSON *choice, const char *slug)
{
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    const cJSON *call = cJSON_GetArrayItem(calls, 0);
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");

    if (!cJSON_IsArray(calls) || cJSON_GetArraySize(calls) != 1)
        fail_msg("%s: no tool_calls in the answer", slug);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(msg, "content")));
    assert_string_equal(cJSON_GetStringValue(fr), "tool_calls");
    assert_string_equal(cJSON_GetStringValue(name), "get_weather");
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call, "id")));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(call, "type")),
                        "function");
    assert_true(cJSON_IsString(args));
    cJSON *a = cJSON_Parse(args->valuestring);
    assert_non_null(a);
    /* The mock's arguments quote the call's last user message: the client's question (re2
     * appends its instruction; moa's synthesis prompt is its own). */
    if (strcmp(slug, "moa") != 0 && strstr(slug, "&moa") == NULL)
        assert_int_equal(
            strncmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "q")), Q, 30), 0);
    cJSON_Delete(a);
}

/* tools, tool_choice, parallel_tool_calls on the answer calls only; the tool call returned. */
static void test_tools_json(void **state)
{
    static const char *const group[] = {"tools", "tool_choice", "parallel_tool_calls"};
    cJSON *client = cJSON_Parse("{" TOOLS "}");

    (void)state;
    for (size_t s = 0; s < sizeof(subjects) / sizeof(subjects[0]); s++) {
        const char *slug = subjects[s].slug;
        char *body = body_for(slug, TOOLS ",\"seed\":3");
        int answers = 0;

        mock_reset(mock.port);
        cJSON *j = post(body, 200, NULL);
        cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
        assert_int_equal(cJSON_GetArraySize(choices), 1);
        check_tool_choice(cJSON_GetArrayItem(choices, 0), slug);

        cJSON *bodies = upstream_bodies();
        int n = cJSON_GetArraySize(bodies);
        assert_true(n >= 1);
        for (int i = 0; i < n; i++) {
            const cJSON *b = cJSON_GetArrayItem(bodies, i);
            bool ans = answer_call(slug, b, i, n);

            for (size_t k = 0; k < 3; k++) {
                const cJSON *got = cJSON_GetObjectItemCaseSensitive(b, group[k]);

                if (ans &&
                    !cJSON_Compare(cJSON_GetObjectItemCaseSensitive(client, group[k]), got, true))
                    fail_msg("%s call %d: %s missing or changed", slug, i, group[k]);
                if (!ans && got)
                    fail_msg("%s call %d: %s on an internal call", slug, i, group[k]);
            }
            assert_int_equal(cJSON_GetObjectItemCaseSensitive(b, "seed")->valueint, 3);
            answers += ans;
        }
        assert_true(answers >= 1);
        if (!strcmp(slug, "bon") || !strcmp(slug, "moa"))
            assert_true(answers < n);
        cJSON_Delete(bodies);
        cJSON_Delete(j);
        free(body);
    }
    cJSON_Delete(client);
}

/* Several choices (n=2): each one a tool call. */
static void test_tools_n(void **state)
{
    char *body = body_for("self_consistency", TOOLS ",\"n\":2");

    (void)state;
    cJSON *j = post(body, 200, NULL);
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    assert_int_equal(cJSON_GetArraySize(choices), 2);
    check_tool_choice(cJSON_GetArrayItem(choices, 0), "self_consistency");
    check_tool_choice(cJSON_GetArrayItem(choices, 1), "self_consistency");
    cJSON_Delete(j);
    free(body);
}

/* Streamed: delta.tool_calls chunks (accumulated by index as clients do), finish tool_calls,
 * then [DONE]. */
static void test_tools_stream(void **state)
{
    (void)state;
    for (size_t s = 0; s < sizeof(subjects) / sizeof(subjects[0]); s++) {
        const char *slug = subjects[s].slug;
        char *body = body_for(slug, TOOLS ",\"stream\":true");
        struct http_resp r;
        char name[64] = "", id[64] = "", args[512] = "", finish[32] = "";
        bool done = false, role = false;
        int content_chunks = 0;

        assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, auth, &r), 0);
        assert_int_equal(r.status, 200);
        for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
            if (strncmp(line, "data: ", 6) != 0)
                continue;
            if (!strcmp(line + 6, "[DONE]")) {
                done = true;
                continue;
            }
            cJSON *chunk = cJSON_Parse(line + 6);
            cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
            cJSON *delta = cJSON_GetObjectItemCaseSensitive(c0, "delta");
            cJSON *fr = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
            cJSON *tc = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
            cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
            cJSON *t;

            assert_non_null(chunk);
            role = role || cJSON_IsString(cJSON_GetObjectItemCaseSensitive(delta, "role"));
            if (cJSON_IsString(content) && content->valuestring[0])
                content_chunks++;
            cJSON_ArrayForEach(t, tc)
            {
                cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
                const char *v;

                assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "index")->valueint, 0);
                if ((v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "id"))))
                    snprintf(id, sizeof(id), "%s", v);
                if ((v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "name"))))
                    snprintf(name, sizeof(name), "%s", v);
                if ((v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "arguments"))))
                    strncat(args, v, sizeof(args) - strlen(args) - 1);
            }
            if (cJSON_IsString(fr))
                snprintf(finish, sizeof(finish), "%s", fr->valuestring);
            cJSON_Delete(chunk);
        }
        if (strcmp(name, "get_weather") != 0)
            fail_msg("%s: no streamed tool call", slug);
        assert_true(role);
        assert_true(done);
        assert_int_equal(content_chunks, 0);
        assert_true(id[0] != '\0');
        assert_string_equal(finish, "tool_calls");
        cJSON *a = cJSON_Parse(args);
        assert_true(cJSON_IsObject(a));
        cJSON_Delete(a);
        http_resp_free(&r);
        free(body);
    }
}

/* The turns after a tool call (the assistant's tool_calls, the tool's result) reach the calls
 * that carry the conversation exactly as sent (moa's synthesis too, when there are tools);
 * the answer is text (the mock calls a tool only while no tool result is in the
 * conversation). */
static void test_tool_history(void **state)
{
    static const char assistant[] =
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"q\\\":"
        "\\\"Paris\\\"}\"}}]}";
    static const char tool[] =
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18 C and sunny\"}";
    cJSON *want_a = cJSON_Parse(assistant);
    cJSON *want_t = cJSON_Parse(tool);

    (void)state;
    assert_non_null(want_a);
    assert_non_null(want_t);
    for (size_t s = 0; s < sizeof(subjects) / sizeof(subjects[0]); s++) {
        const char *slug = subjects[s].slug;
        char body[4096];
        int carried = 0;

        snprintf(body, sizeof(body),
                 "{\"model\":\"%s-mock\",\"messages\":[{\"role\":\"system\",\"content\":\"" SYS
                 "\"},{\"role\":\"user\",\"content\":\"" Q "\"},%s,%s]," TOOLS "}",
                 slug, assistant, tool);
        mock_reset(mock.port);
        cJSON *j = post(body, 200, NULL);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
        cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");

        /* The mock answers a tool result with text. */
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(msg, "content")));
        assert_null(cJSON_GetObjectItemCaseSensitive(msg, "tool_calls"));
        assert_string_equal(
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "finish_reason")), "stop");
        cJSON *bodies = upstream_bodies();
        cJSON *b;
        cJSON_ArrayForEach(b, bodies)
        {
            cJSON *msgs = cJSON_GetObjectItemCaseSensitive(b, "messages");
            int n = cJSON_GetArraySize(msgs);

            bool found = false;

            if (n < 4)
                continue; /* a rating or critique: its own prompt */
            for (int k = 0; k + 1 < n && !found; k++)
                found = cJSON_Compare(cJSON_GetArrayItem(msgs, k), want_a, true) &&
                        cJSON_Compare(cJSON_GetArrayItem(msgs, k + 1), want_t, true);
            if (!found)
                fail_msg("%s: a call with the conversation lost or changed its tool turns", slug);
            carried++;
        }
        if (carried == 0)
            fail_msg("%s: no upstream call carried the tool turns", slug);
        cJSON_Delete(bodies);
        cJSON_Delete(j);
    }
    cJSON_Delete(want_a);
    cJSON_Delete(want_t);
}

/* Every other approach refuses tools before any upstream call, naming those that support
 * them; combinations are checked step by step. */
static void test_tools_refused(void **state)
{
    static const char *const others[] = {
        "cot_reflection",
        "plansearch",
        "leap",
        "rto",
        "mcts",
        "pvg",
        "rstar",
        "z3",
        "cepo",
        "mars",
        "genselect",
        "deepthink",
        "bon&mcts",
        "mcts|moa",
        "re2&cot_reflection",
    };

    (void)state;
    mock_reset(mock.port);
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        char *body = body_for(others[i], TOOLS);
        cJSON *j = post(body, 400, NULL);
        cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"));

        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "param")),
                            "tools");
        assert_non_null(m);
        assert_non_null(strstr(m, "self_consistency"));
        assert_non_null(strstr(m, "majority_voting"));
        assert_non_null(strstr(m, "bon"));
        assert_non_null(strstr(m, "moa"));
        assert_non_null(strstr(m, "re2"));
        assert_null(strstr(m, "mcts,"));
        cJSON_Delete(j);
        free(body);
    }
    /* The deprecated functions field, and response_format where an answer may not come from
     * an answer call. */
    char *body = body_for("bon", "\"functions\":[{\"name\":\"f\",\"parameters\":{}}]");
    cJSON *j = post(body, 400, NULL);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(j, "error"), "param")),
                        "functions");
    cJSON_Delete(j);
    free(body);
    body = body_for("mcts", RF);
    j = post(body, 400, NULL);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(j, "error"), "param")),
                        "response_format");
    cJSON_Delete(j);
    free(body);
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
}

/* Combinations of supporting approaches: a|b gives one tool-call choice per approach; a
 * pipeline whose first step answers with tool calls returns them (the client runs the tool).
 * A passthrough keeps tools as always. response_format "text" needs no support. */
static void test_tools_combinations(void **state)
{
    (void)state;
    char *body = body_for("bon|re2", TOOLS);
    cJSON *j = post(body, 200, NULL);
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    assert_int_equal(cJSON_GetArraySize(choices), 2);
    check_tool_choice(cJSON_GetArrayItem(choices, 0), "bon|re2");
    check_tool_choice(cJSON_GetArrayItem(choices, 1), "bon|re2");
    cJSON_Delete(j);
    free(body);

    mock_reset(mock.port);
    body = body_for("re2&moa", TOOLS);
    j = post(body, 200, NULL);
    check_tool_choice(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0),
                      "re2&moa");
    assert_int_equal(mock_stat(mock.port, "calls"), 1); /* moa never ran */
    cJSON_Delete(j);
    free(body);

    char *pt = chat_body("mock", Q, TOOLS);
    struct http_resp r;
    assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", pt, auth, &r), 0);
    assert_int_equal(r.status, 200);
    j = http_json(&r);
    check_tool_choice(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0),
                      "passthrough");
    cJSON_Delete(j);
    http_resp_free(&r);
    free(pt);

    body = body_for("cot_reflection", "\"response_format\":{\"type\":\"json_object\"}");
    mock_reset(mock.port);
    j = post(body, 200, NULL);
    cJSON *bodies = upstream_bodies();
    assert_int_equal(cJSON_GetArraySize(bodies), 1);
    assert_non_null(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 0), "response_format"));
    cJSON_Delete(bodies);
    cJSON_Delete(j);
    free(body);
}

/* logprobs: the returned answer carries the logprobs of the very choice it came from (the
 * mock's single "token" is the choice's whole text), as JSON and in a buffered stream. */
static void test_logprobs(void **state)
{
    static const char *const slugs[] = {
        "self_consistency", "majority_voting", "bon", "moa", "re2", "plansearch", "leap", "z3"};

    (void)state;
    for (size_t s = 0; s < sizeof(slugs) / sizeof(slugs[0]); s++) {
        char *body = body_for(slugs[s], "\"logprobs\":true,\"top_logprobs\":1");
        cJSON *j = post(body, 200, NULL);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
        const char *content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c0, "message"), "content"));
        cJSON *lp = cJSON_GetObjectItemCaseSensitive(c0, "logprobs");
        cJSON *tok = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(lp, "content"), 0);

        assert_non_null(content);
        if (!cJSON_IsObject(lp))
            fail_msg("%s: no logprobs in the answer", slugs[s]);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tok, "token")),
                            content);
        cJSON_Delete(j);
        free(body);
    }
    /* bon streams its chosen sample at the end: one chunk carries its logprobs. */
    char *body = body_for("bon", "\"logprobs\":true,\"stream\":true");
    struct http_resp r;
    char text[4096] = "", token[4096] = "";
    assert_int_equal(http_req("POST", proxy.port, "/v1/chat/completions", body, auth, &r), 0);
    assert_int_equal(r.status, 200);
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: {", 7) != 0)
            continue;
        cJSON *chunk = cJSON_Parse(line + 6);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
        const char *d = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content"));
        cJSON *lp = cJSON_GetObjectItemCaseSensitive(c0, "logprobs");
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(lp, "content"), 0), "token"));

        if (d)
            strncat(text, d, sizeof(text) - strlen(text) - 1);
        if (t)
            snprintf(token, sizeof(token), "%s", t);
        cJSON_Delete(chunk);
    }
    assert_true(text[0] != '\0');
    assert_string_equal(token, text);
    http_resp_free(&r);
    free(body);
}

/* GET /v1/approaches says which approaches carry tools and response_format. */
static void test_capabilities_listed(void **state)
{
    struct http_resp r;
    cJSON *a;
    int tools = 0, rf = 0, n = 0;

    (void)state;
    assert_int_equal(http_req("GET", proxy.port, "/v1/approaches", NULL, auth, &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *list = http_json(&r);
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(list, "data"))
    {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "id"));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(a, "tools");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(a, "response_format");
        bool want = false;

        assert_true(cJSON_IsBool(t));
        assert_true(cJSON_IsBool(f));
        for (size_t s = 0; s < sizeof(subjects) / sizeof(subjects[0]); s++)
            want = want || !strcmp(id, subjects[s].slug);
        /* plugins that pass the request on carry both (plugins part 1), and those whose answer
         * is one plain or final call (part 2: itest_readurls, test_memory) */
        want = want || !strcmp(id, "privacy") || !strcmp(id, "compact") ||
               !strcmp(id, "readurls") || !strcmp(id, "memory");
        want = want || !strcmp(id, "mcp"); /* offers its tools beside the client's: itest_mcp */
        want = want || !strcmp(id, "web_search"); /* passes the request on: test_web_search */
        /* the chosen approach, or a plain completion when it cannot carry them: itest_router */
        want = want || !strcmp(id, "router");
        want = want || !strcmp(id, "spl"); /* one final call on the conversation: test_spl */
        assert_int_equal(cJSON_IsTrue(t), want);
        if (want)
            assert_true(cJSON_IsTrue(f));
        tools += cJSON_IsTrue(t);
        rf += cJSON_IsTrue(f);
        n++;
    }
    assert_true(n >= 17);
    assert_int_equal(tools, 5 + 2 + 2 + 1 + 1 + 2); /* the five; privacy, compact; readurls,
                                                        memory; mcp; web_search; router, spl */
    /* the five, cot_reflection, plansearch, leap, z3; privacy, compact, json; readurls, memory;
     * mcp; web_search; router, spl */
    assert_int_equal(rf, 9 + 3 + 2 + 1 + 1 + 2);
    cJSON_Delete(list);
    http_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generation_fields),
        cmocka_unit_test(test_tools_json),
        cmocka_unit_test(test_tools_n),
        cmocka_unit_test(test_tools_stream),
        cmocka_unit_test(test_tool_history),
        cmocka_unit_test(test_tools_refused),
        cmocka_unit_test(test_tools_combinations),
        cmocka_unit_test(test_capabilities_listed),
        cmocka_unit_test(test_logprobs),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
