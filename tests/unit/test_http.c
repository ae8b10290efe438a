/* test_http.c: unit tests of the upstream error rewriting (http.c): OpenAI-shaped bodies are
 * kept, every other body becomes an OpenAI error with a readable one-line message. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void check_text(const char *body, const char *want)
{
    char *t = http_upstream_text(body, strlen(body), 1000);

    assert_string_equal(t, want);
    cJSON_free(t);
}

static void test_text_shapes(void **state)
{
    (void)state;
    check_text("{\"error\":\"TypeError\",\"message\":\"x is undefined\"}",
               "TypeError: x is undefined");
    check_text("{\"message\":\"only a message\"}", "only a message");
    check_text("{\"error\":\"Bad thing\"}", "Bad thing");
    check_text("{\"detail\":\"Not Found\"}", "Not Found");
    check_text("{\"error\":{\"code\":7,\"msg\":\"odd\"}}",
               "{\"error\":{\"code\":7,\"msg\":\"odd\"}}");
    check_text("\"a JSON string\"", "a JSON string");
    check_text("  plain\r\ntext\twith   blanks \n", "plain text with blanks");
    check_text("", "");
    check_text("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title>"
               "<script>var a = '<b>';</script><style>p{color:red}</style></head>\n"
               "<body><h1>502 &amp; Bad&nbsp;Gateway</h1><p>a &lt;b&gt; &quot;c&quot;</p></body>"
               "</html>",
               "502 Bad Gateway 502 & Bad Gateway a <b> \"c\"");
    check_text("bad \xff\xfe utf-8 \xc3\xa9", "bad ?? utf-8 \xc3\xa9");
}

static void test_text_cut(void **state)
{
    char body[3000];
    char *t;

    (void)state;
    /* 'a' then 2-byte characters: a cut at 1000 bytes must not split one. */
    body[0] = 'a';
    for (int i = 0; i < 1400; i++)
        memcpy(body + 1 + 2 * i, "\xc3\xa9", 2);
    body[2801] = '\0';
    t = http_upstream_text(body, strlen(body), 1000);
    assert_int_equal(strlen(t), 999 + 3);
    assert_string_equal(t + 999, "...");
    assert_int_equal((unsigned char)t[997], 0xc3);
    cJSON_free(t);
}

static void test_error_body(void **state)
{
    static const char openai[] =
        "{\"error\":{\"message\":\"m\",\"type\":\"t\",\"param\":null,\"code\":\"c\"}}";
    size_t len;
    char *e;
    cJSON *j;
    const cJSON *err;

    (void)state;
    /* OpenAI-shaped: NULL, the caller relays the bytes. */
    assert_null(http_upstream_error(400, openai, strlen(openai), &len));
    assert_null(http_upstream_error(500, "{\"error\":{\"message\":\"\"}}", 24, &len));
    /* "error" an object without a string message: rewritten. */
    e = http_upstream_error(500, "{\"error\":{\"code\":1}}", 20, &len);
    assert_non_null(e);
    cJSON_free(e);
    e = http_upstream_error(503, "Service Unavailable", 19, &len);
    assert_non_null(e);
    assert_int_equal(strlen(e), len);
    j = cJSON_Parse(e);
    err = cJSON_GetObjectItemCaseSensitive(j, "error");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(err, "message")->valuestring,
                        "upstream HTTP 503: Service Unavailable");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(err, "type")->valuestring, "server_error");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(err, "param")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(err, "code")->valuestring,
                        "upstream_error");
    cJSON_Delete(j);
    cJSON_free(e);
    e = http_upstream_error(404, "", 0, &len);
    j = cJSON_Parse(e);
    err = cJSON_GetObjectItemCaseSensitive(j, "error");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(err, "message")->valuestring,
                        "upstream HTTP 404: (empty body)");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(err, "type")->valuestring,
                        "invalid_request_error");
    cJSON_Delete(j);
    cJSON_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_shapes),
        cmocka_unit_test(test_text_cut),
        cmocka_unit_test(test_error_body),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
