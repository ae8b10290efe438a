/* itest_plugins1.c: the privacy, json and compact plugins through the real proxy and the mock
 * (which records every upstream body and echoes the last user message's words).
 * privacy: no original e-mail, card, phone, key or IP reaches the upstream, only placeholders,
 * and the client's answer has the originals back: as JSON, streamed with placeholders split
 * across SSE chunks, in tool-call arguments, and through privacy&bon.
 * json: an answer invalid for the schema is re-asked with the validator's messages and then
 * valid; an upstream that never complies gives 502 invalid_structured_output after the bounded
 * rounds; moa&json reformats moa's answer only when it is invalid; usage is exact.
 * compact: a long conversation makes one summary call and the final call carries the system
 * prompt, the summary and the recent turns verbatim; a short one makes no extra call;
 * compact&moa; the threshold by environment variable. */
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

#define AUTHKEY "sk-plugins1-client-9f8e7d"

#define EMAIL "jane.doe@example.com"
#define CARD  "5235-9276-8877-8661"
#define PHONE "+33 1 23 45 48 71"
#define KEY   "AKIAGQH3Q4CYO21X63MK"
#define IP    "203.0.113.77"
/* 8 words once masked: the mock's default reply repeats them all */
#define PII_Q "mail " EMAIL " card " CARD " phone " PHONE " key " KEY

static struct proc mock;
static struct proc proxy;
static const char *const auth[] = {"Authorization: Bearer " AUTHKEY, NULL};
static const char *const originals[] = {EMAIL, CARD, PHONE, KEY, IP, "5235", NULL};

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

static struct http_resp post_raw(int port, const char *body, long want)
{
    struct http_resp r;

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, auth, &r), 0);
    if (r.status != want)
        fprintf(stderr, "status %ld (want %ld): %.800s\n", r.status, want, r.body);
    assert_int_equal(r.status, want);
    return r;
}

static cJSON *post(const char *body, long want)
{
    struct http_resp r = post_raw(proxy.port, body, want);
    cJSON *j = http_json(&r);

    assert_non_null(j);
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

static char *print(const cJSON *j)
{
    return cJSON_PrintUnformatted(j);
}

static const char *answer_text(const cJSON *resp)
{
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(c0, "message");
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));

    return s ? s : "";
}

static const char *last_content(const cJSON *body)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(last, "content");

    return cJSON_IsString(c) ? c->valuestring : "";
}

/* No upstream body holds an original; every one holds a placeholder. Returns the count. */
static int check_masked_upstream(void)
{
    cJSON *bodies = upstream_bodies();
    cJSON *b;
    int n = 0;

    cJSON_ArrayForEach(b, bodies)
    {
        char *s = print(b);

        for (int i = 0; originals[i]; i++)
            if (strstr(s, originals[i]))
                fail_msg("'%s' reached the upstream: %.400s", originals[i], s);
        assert_non_null(strstr(s, "[EMAIL_1]"));
        free(s);
        n++;
    }
    cJSON_Delete(bodies);
    return n;
}

static char *privacy_body(const char *model, const char *extra)
{
    char *b = malloc(4096);

    snprintf(b, 4096,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"system\",\"content\":\"Server " IP
             " belongs to " EMAIL ".\"},{\"role\":\"user\",\"content\":\"" PII_Q "\"}]%s%s}",
             model, extra && *extra ? "," : "", extra ? extra : "");
    return b;
}

static void check_restored(const char *text)
{
    if (!strstr(text, EMAIL) || !strstr(text, CARD) || !strstr(text, PHONE))
        fail_msg("originals not restored: %s", text);
    assert_null(strstr(text, "[EMAIL_"));
    assert_null(strstr(text, "[CARD_"));
    assert_null(strstr(text, "[PHONE_"));
}

static void test_privacy_json(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = privacy_body("privacy-mock-model", NULL);
    cJSON *resp = post(body, 200);

    check_restored(answer_text(resp));
    assert_int_equal(check_masked_upstream(), 1);
    /* the upstream saw the masked question, in the order sent */
    cJSON *bodies = upstream_bodies();
    assert_string_equal(last_content(cJSON_GetArrayItem(bodies, 0)),
                        "mail [EMAIL_1] card [CARD_1] phone [PHONE_1] key [SECRET_1]");
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

/* Selected by the body field, and by a tag, as every approach is. */
static void test_privacy_selection(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = privacy_body("mock-model", "\"optillm_approach\":\"privacy&re2\"");
    cJSON *resp = post(body, 200);

    check_restored(answer_text(resp));
    assert_int_equal(check_masked_upstream(), 1);
    cJSON_Delete(resp);
    free(body);

    mock_reset(mock.port);
    body = chat_body("mock-model", "<optillm_approach>privacy</optillm_approach>mail " EMAIL, NULL);
    resp = post(body, 200);
    assert_non_null(strstr(answer_text(resp), EMAIL));
    cJSON *bodies = upstream_bodies();
    char *sent = print(bodies);
    assert_null(strstr(sent, EMAIL));
    assert_null(strstr(sent, "optillm_approach"));
    free(sent);
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

/* Streamed in 3-byte pieces: every placeholder arrives split across chunks. */
static void test_privacy_stream_split(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = privacy_body("privacy-mock-model@piece_bytes=3", "\"stream\":true");
    struct http_resp r = post_raw(proxy.port, body, 200);
    char text[4096] = "";
    int chunks = 0;
    bool done = false;

    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6) != 0)
            continue;
        if (!strcmp(line + 6, "[DONE]")) {
            done = true;
            continue;
        }
        cJSON *chunk = cJSON_Parse(line + 6);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
        const char *piece = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content"));

        assert_non_null(chunk);
        if (piece && *piece) {
            chunks++;
            strncat(text, piece, sizeof(text) - strlen(text) - 1);
        }
        cJSON_Delete(chunk);
    }
    assert_true(done);
    assert_true(chunks >= 10); /* it did stream, piece by piece */
    check_restored(text);
    assert_non_null(strstr(text, "mail " EMAIL " card " CARD " phone " PHONE));
    assert_int_equal(check_masked_upstream(), 1);
    http_resp_free(&r);
    free(body);
}

/* privacy&bon: every call of bon (samples and ratings) masked; the chosen answer restored. */
static void test_privacy_bon(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = privacy_body("privacy&bon-mock-model", NULL);
    cJSON *resp = post(body, 200);

    check_restored(answer_text(resp));
    assert_true(check_masked_upstream() >= 2);
    cJSON_Delete(resp);
    free(body);
}

/* A tool call's arguments (the mock puts the last user message in "q") get the originals. */
static void test_privacy_tool_arguments(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = privacy_body(
        "privacy-mock-model",
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"send\",\"parameters\":{"
        "\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}}}}}]");
    cJSON *resp = post(body, 200);
    cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c0, "message"),
                                                 "tool_calls");
    cJSON *fn = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tc, 0), "function");
    const char *args = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "arguments"));
    cJSON *a;

    assert_non_null(args);
    a = cJSON_Parse(args);
    assert_true(cJSON_IsObject(a));
    const char *q = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "q"));
    assert_non_null(q);
    if (!strstr(q, EMAIL) || !strstr(q, CARD))
        fail_msg("tool arguments not restored: %s", args);
    assert_int_equal(check_masked_upstream(), 1);
    cJSON_Delete(a);
    cJSON_Delete(resp);
    free(body);
}

/* A structured answer (response_format json_object) keeps valid JSON when an original has
 * newlines (a private-key block): as JSON and streamed. */
#define PEM                                                                                        \
    "-----BEGIN RSA PRIVATE KEY-----\\nMIIEowFG5h05uwFMb3BXhxpJgcqV0XYFt2//qWGklb2RferH9dvi9qpD2"  \
    "KS0nEOroU\\nrwirfO+4A7gjpys6AUdfmK/19mk88APZsrcIzVmW\\n-----END RSA PRIVATE KEY-----"

static void test_privacy_structured_answer(void **state)
{
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        mock_reset(mock.port);
        char *body = malloc(4096);
        char text[4096] = "";

        snprintf(body, 4096,
                 "{\"model\":\"privacy-mock-model\",\"messages\":[{\"role\":\"user\",\"content\":"
                 "\"Use " EMAIL " and " PEM
                 "\"}],\"response_format\":{\"type\":\"json_object\"}%s}",
                 stream ? ",\"stream\":true" : "");
        struct http_resp r = post_raw(proxy.port, body, 200);
        if (stream) {
            for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
                if (strncmp(line, "data: ", 6) != 0 || !strcmp(line + 6, "[DONE]"))
                    continue;
                cJSON *chunk = cJSON_Parse(line + 6);
                cJSON *c0 =
                    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
                const char *piece = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content"));
                if (piece)
                    strncat(text, piece, sizeof(text) - strlen(text) - 1);
                cJSON_Delete(chunk);
            }
        } else {
            cJSON *resp = http_json(&r);
            snprintf(text, sizeof(text), "%s", answer_text(resp));
            cJSON_Delete(resp);
        }
        /* a JSON string cannot hold a raw newline (cJSON would accept one) */
        if (strchr(text, '\n'))
            fail_msg("stream %d: a raw newline in the JSON text: %s", stream, text);
        cJSON *j = cJSON_Parse(text);
        const char *a = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "answer"));
        if (!a || !strstr(a, "-----BEGIN RSA PRIVATE KEY-----\nMIIEow") || !strstr(a, EMAIL))
            fail_msg("stream %d: not valid JSON with the originals: %s", stream, text);
        cJSON_Delete(j);
        cJSON *bodies = upstream_bodies();
        char *s = print(bodies);
        assert_null(strstr(s, "MIIEow"));
        assert_non_null(strstr(s, "[SECRET_1]"));
        free(s);
        cJSON_Delete(bodies);
        http_resp_free(&r);
        free(body);
    }
}

/* Concatenated delta contents of choice 'idx' of an SSE body (modified in place). */
static void stream_text(char *sse, int idx, char *out, size_t cap, int *chunks)
{
    *out = '\0';
    for (char *line = strtok(sse, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6) != 0 || !strcmp(line + 6, "[DONE]"))
            continue;
        cJSON *chunk = cJSON_Parse(line + 6);
        cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(chunk, "choices"))
        {
            const char *piece = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(c, "delta"), "content"));
            if (cJSON_GetObjectItemCaseSensitive(c, "index")->valueint != idx || !piece || !*piece)
                continue;
            strncat(out, piece, cap - strlen(out) - 1);
            if (chunks)
                (*chunks)++;
        }
        cJSON_Delete(chunk);
    }
}

/* privacy&moa streamed: moa's synthesis relayed token by token in 2-byte pieces, restored;
 * n=2 and privacy|re2: every choice restored. */
static void test_privacy_pipelines(void **state)
{
    (void)state;
    static char text[65536];
    int chunks = 0;

    mock_reset(mock.port);
    char *body = privacy_body("privacy&moa-mock-model@piece_bytes=2,words=300", "\"stream\":true");
    struct http_resp r = post_raw(proxy.port, body, 200);
    stream_text(r.body, 0, text, sizeof(text), &chunks);
    check_restored(text);
    assert_true(chunks >= 10);
    assert_true(check_masked_upstream() >= 3);
    http_resp_free(&r);
    free(body);

    mock_reset(mock.port);
    body = privacy_body("privacy-mock-model", "\"n\":2");
    cJSON *resp = post(body, 200);
    cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(resp, "choices"))
    {
        check_restored(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c, "message"), "content")));
        n++;
    }
    assert_int_equal(n, 2);
    assert_true(check_masked_upstream() >= 1);
    cJSON_Delete(resp);
    free(body);

    mock_reset(mock.port);
    body = privacy_body("privacy|re2-mock-model", "\"stream\":true");
    r = post_raw(proxy.port, body, 200);
    for (int i = 0; i < 2; i++) {
        char *copy = strdup(r.body);
        stream_text(copy, i, text, sizeof(text), NULL);
        free(copy);
        if (i == 0)
            check_restored(text); /* privacy alone: the plain completion */
        else
            assert_non_null(strstr(text, EMAIL)); /* re2 saw the originals: not masked */
    }
    http_resp_free(&r);
    free(body);
}

/* --privacy-ner-url: names and places masked too (the mock's /analyze knows a few), the answer
 * restored (also streamed in 3-byte pieces); an NER service that fails makes the request fail
 * with 502 before anything is sent upstream. */
#define NAMES_Q                                                                                    \
    "Alice Martin from Lyon and Zo\xc3\xab M\xc3\xbcller in Ireland, " EMAIL ", Acme, Maybe"

static void test_privacy_ner(void **state)
{
    struct proc p2;
    char url[128], flag[160];
    (void)state;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/analyze", mock.port);
    const char *const args[] = {"--privacy-ner-url", url, NULL};
    assert_int_equal(proxy_start(&p2, mock.port, args, NULL), 0);
    for (int stream = 0; stream < 2; stream++) {
        mock_reset(mock.port);
        char *body = chat_body(stream ? "privacy-mock-model@words=30,piece_bytes=3"
                                      : "privacy-mock-model@words=30",
                               NAMES_Q, stream ? "\"stream\":true" : NULL);
        struct http_resp r = post_raw(p2.port, body, 200);
        static char text[8192];

        if (stream) {
            stream_text(r.body, 0, text, sizeof(text), NULL);
        } else {
            cJSON *resp = http_json(&r);
            snprintf(text, sizeof(text), "%s", answer_text(resp));
            cJSON_Delete(resp);
        }
        if (!strstr(text, "Alice Martin from Lyon and Zo\xc3\xab M\xc3\xbcller in Ireland, " EMAIL))
            fail_msg("names not restored: %s", text);
        cJSON *bodies = upstream_bodies();
        assert_int_equal(cJSON_GetArraySize(bodies), 1);
        const char *sent = last_content(cJSON_GetArrayItem(bodies, 0));
        assert_string_equal(sent, "[PERSON_1] from [LOCATION_1] and [PERSON_2] in [LOCATION_2], "
                                  "[EMAIL_1], Acme, Maybe");
        cJSON_Delete(bodies);
        http_resp_free(&r);
        free(body);
    }
    assert_int_equal(proc_stop(&p2), 0);

    /* the NER service fails: nothing goes upstream */
    snprintf(flag, sizeof(flag), "http://127.0.0.1:%d/nosuch", mock.port);
    const char *const args2[] = {"--privacy-ner-url", flag, NULL};
    assert_int_equal(proxy_start(&p2, mock.port, args2, NULL), 0);
    mock_reset(mock.port);
    char *body = chat_body("privacy-mock-model", NAMES_Q, NULL);
    struct http_resp r = post_raw(p2.port, body, 502);
    cJSON *resp = http_json(&r);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(resp, "error");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code")),
                        "privacy_ner_unavailable");
    assert_non_null(
        strstr(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "message")), "HTTP 404"));
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
    cJSON_Delete(resp);
    http_resp_free(&r);
    free(body);
    assert_int_equal(proc_stop(&p2), 0);

    /* without the flag, names pass (documented): only the patterns are masked */
    mock_reset(mock.port);
    body = chat_body("privacy-mock-model", NAMES_Q, NULL);
    resp = post(body, 200);
    cJSON *bodies = upstream_bodies();
    assert_non_null(strstr(last_content(cJSON_GetArrayItem(bodies, 0)), "Alice Martin"));
    assert_null(strstr(last_content(cJSON_GetArrayItem(bodies, 0)), EMAIL));
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

/* ---- json --------------------------------------------------------------------------------- */

#define SCHEMA                                                                                     \
    "{\"type\":\"object\",\"properties\":{\"answer\":{\"type\":\"string\"}},\"required\":["        \
    "\"answer\"],\"additionalProperties\":false}"
#define RF_SCHEMA                                                                                  \
    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\","               \
    "\"schema\":" SCHEMA "}}"

static void check_valid_answer(const char *text)
{
    cJSON *j = cJSON_Parse(text);

    if (!cJSON_IsObject(j) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "answer")) ||
        cJSON_GetArraySize(j) != 1)
        fail_msg("not valid for the schema: %s", text);
    cJSON_Delete(j);
}

static void test_json_reasked_then_valid(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = chat_body("json-mock-model@json_bad=1", "Capital of France?", RF_SCHEMA);
    cJSON *resp = post(body, 200);
    cJSON *bodies = upstream_bodies();
    cJSON *second = cJSON_GetArrayItem(bodies, 1);
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(second, "messages");
    cJSON *usage = cJSON_GetObjectItemCaseSensitive(resp, "usage");

    check_valid_answer(answer_text(resp));
    assert_int_equal(cJSON_GetArraySize(bodies), 2);
    /* the re-ask: the question, the invalid answer, the validator's messages */
    assert_int_equal(cJSON_GetArraySize(msgs), 3);
    char *m = print(cJSON_GetArrayItem(msgs, 1));
    assert_non_null(strstr(m, "mock non-compliance"));
    free(m);
    assert_non_null(strstr(last_content(second), "answer"));
    assert_non_null(strstr(last_content(second), "required"));
    /* both calls carried response_format */
    for (int i = 0; i < 2; i++)
        assert_non_null(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, i), "response_format"));
    /* exact usage: both calls */
    assert_int_equal(
        (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens")),
        mock_stat(mock.port, "prompt_tokens"));
    assert_int_equal(
        (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens")),
        mock_stat(mock.port, "completion_tokens"));
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

static void test_json_never_complies(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = chat_body("json-mock-model@json_bad=100", "Capital of France?", RF_SCHEMA);
    cJSON *resp = post(body, 502);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(resp, "error");

    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code")),
                        "invalid_structured_output");
    assert_non_null(strstr(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "message")),
                           "after 3 attempts"));
    assert_int_equal(mock_stat(mock.port, "calls"), 3); /* json_max_retries 2 */
    cJSON_Delete(resp);
    free(body);

    /* the bound is an option */
    mock_reset(mock.port);
    body = chat_body("json-mock-model@json_bad=100", "Capital of France?",
                     RF_SCHEMA ",\"optillm_json_max_retries\":0");
    resp = post(body, 502);
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    cJSON_Delete(resp);
    free(body);
}

/* A schema that is not an object or a boolean: 400 on response_format, no upstream call. */
static void test_json_bad_schema(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = chat_body("json-mock-model", "Capital of France?",
                           "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{"
                           "\"name\":\"a\",\"schema\":[1]}}");
    cJSON *resp = post(body, 400);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(resp, "error");

    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "param")),
                        "response_format");
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
    cJSON_Delete(resp);
    free(body);
}

/* Streamed: the answer is sent once valid, as content chunks. */
static void test_json_stream(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body =
        chat_body("json-mock-model@json_bad=1", "Capital of France?", RF_SCHEMA ",\"stream\":true");
    struct http_resp r = post_raw(proxy.port, body, 200);
    char text[4096] = "";

    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6) != 0 || !strcmp(line + 6, "[DONE]"))
            continue;
        cJSON *chunk = cJSON_Parse(line + 6);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
        const char *piece = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content"));
        if (piece)
            strncat(text, piece, sizeof(text) - strlen(text) - 1);
        cJSON_Delete(chunk);
    }
    check_valid_answer(text);
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    http_resp_free(&r);
    free(body);
}

/* moa&json: moa's answer (response_format honoured by the mock) is valid: no extra call. When
 * moa's calls all ignore the schema, json asks once to reformat moa's answer. */
static void test_moa_then_json(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = chat_body("moa-mock-model", "Capital of France?", RF_SCHEMA);
    cJSON *resp = post(body, 200);
    long moa_calls = mock_stat(mock.port, "calls");
    long moa_choices = mock_stat(mock.port, "choices"); /* json_bad counts answers */
    cJSON_Delete(resp);
    free(body);

    mock_reset(mock.port);
    body = chat_body("moa&json-mock-model", "Capital of France?", RF_SCHEMA);
    resp = post(body, 200);
    check_valid_answer(answer_text(resp));
    assert_int_equal(mock_stat(mock.port, "calls"), moa_calls);
    cJSON_Delete(resp);
    free(body);

    mock_reset(mock.port);
    char model[64];
    snprintf(model, sizeof(model), "moa&json-mock-model@json_bad=%ld", moa_choices);
    body = chat_body(model, "Capital of France?", RF_SCHEMA);
    resp = post(body, 200);
    check_valid_answer(answer_text(resp));
    assert_int_equal(mock_stat(mock.port, "calls"), moa_calls + 1);
    cJSON *bodies = upstream_bodies();
    const char *last = last_content(cJSON_GetArrayItem(bodies, (int)moa_calls));
    assert_non_null(strstr(last, "mock non-compliance"));  /* moa's answer */
    assert_non_null(strstr(last, "additionalProperties")); /* the format */
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

/* ---- compact ------------------------------------------------------------------------------ */

#define SYS "You are a travel agent."
#define TURNS                                                                                      \
    "{\"role\":\"system\",\"content\":\"" SYS "\"},"                                               \
    "{\"role\":\"user\",\"content\":\"OLDTURN one: Norway in March with my dog Rex.\"},"           \
    "{\"role\":\"assistant\",\"content\":\"OLDTURN noted.\"},"                                     \
    "{\"role\":\"user\",\"content\":\"OLDTURN two: budget 2000 EUR.\"},"                           \
    "{\"role\":\"assistant\",\"content\":\"OLDTURN budget noted.\"},"                              \
    "{\"role\":\"user\",\"content\":\"Recent three: weather in Oslo?\"},"                          \
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"            \
    "\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}"  \
    "\"}}]},"                                                                                      \
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"Oslo: 3C\"},"                        \
    "{\"role\":\"assistant\",\"content\":\"Recent: 3C.\"},"                                        \
    "{\"role\":\"user\",\"content\":\"Recent four: book it.\"}"
#define NTURNS 10

static char *compact_body(const char *model, const char *extra)
{
    char *b = malloc(8192);

    snprintf(b, 8192, "{\"model\":\"%s\",\"messages\":[" TURNS "]%s%s}", model,
             extra && *extra ? "," : "", extra ? extra : "");
    return b;
}

/* Checks the final call: system, the summary, then the client's last 'kept' messages as sent. */
static void check_compacted(const cJSON *final, const char *client_body, int kept)
{
    cJSON *client = cJSON_Parse(client_body);
    cJSON *cm = cJSON_GetObjectItemCaseSensitive(client, "messages");
    const cJSON *fm = cJSON_GetObjectItemCaseSensitive(final, "messages");
    char *s = print(final);

    assert_null(strstr(s, "OLDTURN"));
    free(s);
    assert_int_equal(cJSON_GetArraySize(fm), 2 + kept);
    assert_string_equal(cJSON_GetStringValue(
                            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(fm, 0), "content")),
                        SYS);
    const cJSON *sum = cJSON_GetArrayItem(fm, 1);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(sum, "role")),
                        "system");
    assert_non_null(strstr(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(sum, "content")),
                           "Summary of the earlier part"));
    for (int i = 0; i < kept; i++)
        assert_true(cJSON_Compare(cJSON_GetArrayItem(fm, 2 + i),
                                  cJSON_GetArrayItem(cm, NTURNS - kept + i), 1));
    cJSON_Delete(client);
}

static void test_compact_long(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = compact_body("compact-mock-model",
                              "\"optillm_compact_threshold\":20,\"optillm_compact_keep_turns\":2");
    cJSON *resp = post(body, 200);
    cJSON *bodies = upstream_bodies();
    char *s;

    assert_int_equal(cJSON_GetArraySize(bodies), 2);
    /* the summary call: the older turns, not the recent ones, no answer fields */
    s = print(cJSON_GetArrayItem(bodies, 0));
    assert_non_null(strstr(s, "OLDTURN one"));
    assert_non_null(strstr(s, "OLDTURN budget noted"));
    assert_null(strstr(s, "Recent four"));
    free(s);
    check_compacted(cJSON_GetArrayItem(bodies, 1), body, 5);
    /* exact usage: the summary call counted */
    cJSON *usage = cJSON_GetObjectItemCaseSensitive(resp, "usage");
    assert_int_equal(
        (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens")),
        mock_stat(mock.port, "prompt_tokens"));
    assert_int_equal(
        (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens")),
        mock_stat(mock.port, "completion_tokens"));
    assert_non_null(strstr(answer_text(resp), "Recent"));
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

static void test_compact_short_unchanged(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = compact_body("compact-mock-model", NULL); /* default threshold 8000 */
    cJSON *resp = post(body, 200);
    cJSON *bodies = upstream_bodies();
    cJSON *client = cJSON_Parse(body);

    assert_int_equal(cJSON_GetArraySize(bodies), 1);
    assert_true(
        cJSON_Compare(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 0), "messages"),
                      cJSON_GetObjectItemCaseSensitive(client, "messages"), 1));
    cJSON_Delete(client);
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

/* compact&moa: one summary call, then moa's calls, none of which sees the older turns. */
static void test_compact_then_moa(void **state)
{
    (void)state;
    mock_reset(mock.port);
    char *body = compact_body("compact&moa-mock-model", "\"optillm_compact_threshold\":20");
    cJSON *resp = post(body, 200);
    cJSON *bodies = upstream_bodies();
    int n = cJSON_GetArraySize(bodies);
    cJSON *b;
    int i = 0, with_old = 0;

    assert_true(n >= 3);
    cJSON_ArrayForEach(b, bodies)
    {
        char *s = print(b);

        if (strstr(s, "OLDTURN")) {
            with_old++;
            assert_int_equal(i, 0); /* only the summary call */
        }
        free(s);
        i++;
    }
    assert_int_equal(with_old, 1);
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    free(body);
}

/* The threshold set by the environment (OPTILLM_COMPACT_THRESHOLD) on another proxy, with
 * privacy first: the summary call is masked too. */
static void test_compact_env_and_privacy(void **state)
{
    struct proc p2;
    static const char *const env[] = {"OPTILLM_COMPACT_THRESHOLD=20",
                                      "OPTILLM_COMPACT_KEEP_TURNS=1", NULL};
    (void)state;

    assert_int_equal(proxy_start(&p2, mock.port, NULL, env), 0);
    mock_reset(mock.port);
    char *body = malloc(8192);
    snprintf(body, 8192,
             "{\"model\":\"privacy&compact-mock-model\",\"messages\":[" TURNS
             ",{\"role\":\"assistant\",\"content\":\"I will write to " EMAIL
             "\"},{\"role\":\"user\",\"content\":\"Mail "
             "it to " EMAIL "\"}]}");
    struct http_resp r = post_raw(p2.port, body, 200);
    cJSON *resp = http_json(&r);
    cJSON *bodies = upstream_bodies();

    assert_int_equal(cJSON_GetArraySize(bodies), 2);
    assert_int_equal(check_masked_upstream(), 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetArrayItem(bodies, 1), "messages")),
                     3); /* system, summary, the last user message */
    assert_non_null(strstr(answer_text(resp), EMAIL));
    cJSON_Delete(bodies);
    cJSON_Delete(resp);
    http_resp_free(&r);
    free(body);
    assert_int_equal(proc_stop(&p2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_privacy_json),
        cmocka_unit_test(test_privacy_selection),
        cmocka_unit_test(test_privacy_stream_split),
        cmocka_unit_test(test_privacy_bon),
        cmocka_unit_test(test_privacy_tool_arguments),
        cmocka_unit_test(test_privacy_structured_answer),
        cmocka_unit_test(test_privacy_pipelines),
        cmocka_unit_test(test_privacy_ner),
        cmocka_unit_test(test_json_bad_schema),
        cmocka_unit_test(test_json_reasked_then_valid),
        cmocka_unit_test(test_json_never_complies),
        cmocka_unit_test(test_json_stream),
        cmocka_unit_test(test_moa_then_json),
        cmocka_unit_test(test_compact_long),
        cmocka_unit_test(test_compact_short_unchanged),
        cmocka_unit_test(test_compact_then_moa),
        cmocka_unit_test(test_compact_env_and_privacy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
