/* test_secure.c: issue 10 (adversarial review) items 6 and 12: redaction of key-shaped tokens,
 * token counts capped rather than zeroed, bounded metric series folded into "other", the 403
 * error shape, the 502 for a rejected proxy key, and which keys are the proxy's. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "redact.h"

/* ---- redact_secrets --------------------------------------------------------------------- */

struct redact_case {
    const char *in;
    const char *out;
};

static void test_redact_table(void **state)
{
    static const struct redact_case cases[] = {
        /* The review's example: an upstream 401 quoting the masked server key. */
        {"Incorrect API key provided: sk-SERVE********-123. You can find your API key at "
         "https://platform.openai.com/account/api-keys.",
         "Incorrect API key provided: [redacted] You can find your API key at "
         "https://platform.openai.com/account/api-keys."},
        {"key sk-proj-abcDEF123456789_xyz rejected", "key [redacted] rejected"},
        {"key sk-ant-api03-AAAAbbbbCCCC1234 rejected", "key [redacted] rejected"},
        {"masked abc1*****xyz9 here", "masked [redacted] here"},
        {"aws AKIAIOSFODNN7EXAMPLE and ASIAXXXXXXXXXXXXXXXX", "aws [redacted] and [redacted]"},
        {"gh ghp_abcdefghijklmnop1234 github_pat_11ABCDEFG_xyz", "gh [redacted] [redacted]"},
        {"slack xoxb-1234-5678-abcdef xoxp-9999-aaaa", "slack [redacted] [redacted]"},
        {"Authorization: Bearer abc and bearer    tok123456789 then", "Authorization: Bearer *** "
                                                                      "and bearer    [redacted] "
                                                                      "then"},
        {"hex 0123456789abcdef0123456789abcdef01 end", "hex [redacted] end"},
        {"b64 QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkw+/== end", "b64 [redacted] end"},
        {"short sk-ab1", "short ******"},
        /* Left alone: ordinary text, ids, URLs, long words, numbers. */
        {"mock error 401", "mock error 401"},
        {"request req_0123456789abcdef0123456789abcdef failed",
         "request req_0123456789abcdef0123456789abcdef failed"},
        {"id chatcmpl-0123456789abcdef0123456789abcdef",
         "id chatcmpl-0123456789abcdef0123456789abcdef"},
        {"see https://api.example.com/v1/chat/completions/0123456789abcdefghij",
         "see https://api.example.com/v1/chat/completions/0123456789abcdefghij"},
        {"pneumonoultramicroscopicsilicovolcanoconiosis is long",
         "pneumonoultramicroscopicsilicovolcanoconiosis is long"},
        {"12345678901234567890123456789012345 tokens",
         "12345678901234567890123456789012345 tokens"},
        {"risk-free and task-based ask-me", "risk-free and task-based ask-me"},
        {"**bold** text", "**bold** text"},
        {"", ""},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        char buf[512];

        snprintf(buf, sizeof(buf), "%s", cases[i].in);
        redact_secrets(buf);
        if (strcmp(buf, cases[i].out) != 0)
            fail_msg("case %zu: '%s' -> '%s', want '%s'", i, cases[i].in, buf, cases[i].out);
    }
    assert_int_equal(redact_secrets(NULL), 0);
}

/* Text without secrets is never written to (a string literal passes). */
static void test_redact_readonly_clean(void **state)
{
    (void)state;
    assert_int_equal(redact_secrets((char *)"upstream error: nothing secret here"), 0);
}

/* ---- px_count ----------------------------------------------------------------------------- */

static void test_count_capped(void **state)
{
    (void)state;
    assert_int_equal(px_count(12), 12);
    assert_int_equal(px_count(0), 0);
    assert_int_equal(px_count(-5), 0);
    assert_int_equal(px_count(NAN), 0);
    /* Out of range: capped, not zeroed (a zero would sidestep a token budget). */
    assert_int_equal(px_count(1e13), (long)PX_COUNT_MAX);
    assert_int_equal(px_count(1e300), (long)PX_COUNT_MAX);
    assert_int_equal(px_count(INFINITY), (long)PX_COUNT_MAX);
    assert_int_equal(px_count(-INFINITY), 0);
}

/* ---- error shapes ------------------------------------------------------------------------- */

static cJSON *error_of(const struct px_error *err)
{
    size_t len;
    char *s = http_error_json(err, &len);
    cJSON *j = cJSON_Parse(s);

    cJSON_free(s);
    assert_non_null(j);
    return j;
}

static const char *field(const cJSON *j, const char *name)
{
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_forbidden_shape(void **state)
{
    struct px_error err;
    cJSON *j;

    (void)state;
    px_fail(&err, PX_EFORBIDDEN, "model", "model 'x' is not available to you");
    assert_int_equal(px_http_status(&err), 403);
    j = error_of(&err);
    assert_string_equal(field(j, "type"), "invalid_request_error");
    assert_string_equal(field(j, "code"), "permission_denied");
    cJSON_Delete(j);
}

static void test_key_rejected(void **state)
{
    static const char body[] = "{\"error\":{\"message\":\"Incorrect API key provided: "
                               "sk-SERVE********-123.\",\"type\":\"invalid_request_error\","
                               "\"code\":\"invalid_api_key\"}}";
    struct px_error err;
    cJSON *j;

    (void)state;
    assert_int_equal(http_key_rejected(&err, 401, body, sizeof(body) - 1), PX_EUPSTREAM);
    assert_int_equal(px_http_status(&err), 502);
    assert_null(strstr(err.message, "SERVE"));
    assert_non_null(strstr(err.message, "the proxy's upstream key was rejected"));
    assert_non_null(strstr(err.message, "HTTP 401"));
    assert_non_null(strstr(err.message, "Incorrect API key provided: [redacted]"));
    j = error_of(&err);
    assert_string_equal(field(j, "type"), "server_error");
    assert_string_equal(field(j, "code"), "upstream_key_rejected");
    cJSON_Delete(j);
    /* A text body, and none. */
    http_key_rejected(&err, 403, "forbidden\nsk-abcdef123456", 25);
    assert_null(strstr(err.message, "abcdef"));
    assert_null(strchr(err.message, '\n'));
    http_key_rejected(&err, 401, NULL, 0);
    assert_non_null(strstr(err.message, "HTTP 401)"));
}

static void test_key_is_proxys(void **state)
{
    static char server[] = "sk-server";
    static char tenant_key[] = "sk-tenant";
    struct config cfg;
    struct tenant t;
    char copy[] = "sk-server";

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    memset(&t, 0, sizeof(t));
    cfg.upstream_key = server;
    t.upstream_key = tenant_key;
    assert_true(auth_key_is_proxys(&cfg, NULL, server));
    assert_true(auth_key_is_proxys(&cfg, &t, tenant_key));
    assert_false(auth_key_is_proxys(&cfg, &t, copy)); /* the client sent the same text */
    assert_false(auth_key_is_proxys(&cfg, NULL, tenant_key));
    assert_false(auth_key_is_proxys(&cfg, NULL, NULL));
}

/* ---- metrics ------------------------------------------------------------------------------ */

static long metric(const char *text, const char *series)
{
    const char *p = strstr(text, series);

    return p ? atol(p + strlen(series)) : -1;
}

/* Past 256 series a new label value is folded into "other" and counted, never dropped
 * silently. */
static void test_metrics_overflow(void **state)
{
    struct usage u = {.prompt_tokens = 1, .completion_tokens = 1};
    struct buf b;
    char name[32];

    (void)state;
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "a%d", i);
        metrics_request(name, 200, 1000, 500, &u, name);
    }
    for (int i = 0; i < 80; i++)
        metrics_upstream(400 + i);
    buf_init(&b, 0);
    metrics_render(&b);
    assert_int_equal(
        metric(buf_cstr(&b), "optillm_requests_total{approach=\"a0\",status=\"200\"} "), 1);
    assert_int_equal(
        metric(buf_cstr(&b), "optillm_requests_total{approach=\"other\",status=\"200\"} "), 44);
    assert_int_equal(metric(buf_cstr(&b), "optillm_requests_total{approach=\"a299\""), -1);
    assert_int_equal(
        metric(buf_cstr(&b), "optillm_tokens_total{tenant=\"other\",kind=\"prompt\"} "), 44);
    assert_int_equal(metric(buf_cstr(&b), "optillm_upstream_calls_total{status=\"other\"} "), 16);
    assert_int_equal(metric(buf_cstr(&b), "\noptillm_metrics_series_dropped_total "), 44 + 44 + 16);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_table),     cmocka_unit_test(test_redact_readonly_clean),
        cmocka_unit_test(test_count_capped),     cmocka_unit_test(test_forbidden_shape),
        cmocka_unit_test(test_key_rejected),     cmocka_unit_test(test_key_is_proxys),
        cmocka_unit_test(test_metrics_overflow),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
