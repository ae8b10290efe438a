/* test_headers.c: the allow-list of upstream response headers relayed to clients
 * (xfer_header_allowed in upstream.c). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <string.h>

#include "internal.h"

/* What one raw header line (as curl hands it over, with CRLF) becomes. */
static void check(const char *line, const char *want)
{
    struct buf b;

    buf_init(&b, 8192);
    xfer_header_allowed(&b, line, strlen(line));
    assert_string_equal(buf_cstr(&b), want);
    buf_free(&b);
}

static void test_allowed(void **state)
{
    (void)state;
    check("Retry-After: 7\r\n", "Retry-After: 7\n");
    check("retry-after:12\r\n", "retry-after: 12\n");
    check("x-ratelimit-remaining-requests: 99\r\n", "x-ratelimit-remaining-requests: 99\n");
    check("X-RateLimit-Reset-Tokens: 6ms\r\n", "X-RateLimit-Reset-Tokens: 6ms\n");
    check("openai-processing-ms: 512\r\n", "openai-processing-ms: 512\n");
    /* the upstream's request id is renamed: the client's X-Request-Id stays ours */
    check("x-request-id: req_abc123\r\n", "X-Upstream-Request-Id: req_abc123\n");
}

static void test_refused(void **state)
{
    (void)state;
    check("Set-Cookie: a=b\r\n", "");
    check("Content-Type: text/plain\r\n", "");
    check("X-Evil: 1\r\n", "");
    check("openai-organization: org-123\r\n", "");
    check("x-ratelimit-: 1\r\n", "");       /* no name after the prefix */
    check("x-ratelimit-a b: 1\r\n", "");    /* not a token */
    check("Retry-After: \r\n", "");         /* empty */
    check("Retry-After: 1\x01\r\n", "");    /* a control character */
    check("HTTP/1.1 429 Too Many\r\n", ""); /* the status line */
    check("\r\n", "");                      /* the end of the headers */
    {
        char big[400];

        memset(big, 'a', sizeof(big));
        memcpy(big, "Retry-After: ", 13);
        big[sizeof(big) - 1] = '\0';
        check(big, ""); /* a value over 200 bytes */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowed),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
