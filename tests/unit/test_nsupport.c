/* test_nsupport.c: which upstream errors refuse n (llm_refuses_n), and n support remembered
 * per upstream base URL with a re-probe (nsupport.c). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <string.h>

#include "internal.h"

static bool refuses(int status, const char *msg)
{
    struct llm_reply r;

    memset(&r, 0, sizeof(r));
    r.http_status = status;
    r.error = msg;
    return llm_refuses_n(&r);
}

static void test_refusals(void **state)
{
    (void)state;
    assert_true(refuses(400, "Only one completion choice is allowed")); /* llama.cpp */
    assert_true(refuses(500, "Only one completion choice is allowed"));
    assert_true(refuses(422, "'n' must be 1"));
    assert_true(refuses(400, "Invalid value for \"n\": only 1 is supported"));
    assert_true(refuses(400, "`n` is not supported by this model"));
    assert_true(refuses(400, "n must be 1 for this model"));
    assert_true(refuses(400, "n > 1 is not supported"));
    assert_true(refuses(400, "Unsupported parameter n"));
    assert_true(refuses(400, "invalid param n: 4"));
    assert_true(refuses(400, "Multiple choices are not supported"));
    assert_true(refuses(400, "n=4 is not supported"));
}

static void test_not_refusals(void **state)
{
    (void)state;
    /* the review's case: a 400 about tool_choice switched n off for everyone */
    assert_false(refuses(400, "Invalid value for 'tool_choice': no tools were given"));
    assert_false(refuses(400, "tool_choice is not supported"));
    assert_false(refuses(400, "'messages' must contain the word json in some form"));
    assert_false(refuses(400, "This model's maximum context length is 8192 tokens"));
    assert_false(refuses(400, "Invalid input: unknown token"));
    assert_false(refuses(500, "Internal server error"));
    assert_false(refuses(400, NULL));
    assert_false(refuses(400, ""));
    /* other statuses never */
    assert_false(refuses(401, "'n' must be 1"));
    assert_false(refuses(429, "Only one completion choice is allowed"));
    assert_false(refuses(503, "n must be 1"));
}

static void test_per_base_url(void **state)
{
    long long t0 = 1000000;

    (void)state;
    nsupport_reset();
    assert_int_equal(nsupport_get("http://a/v1", t0), -1);
    nsupport_set("http://a/v1", 0, t0);
    nsupport_set("http://b/v1", 1, t0);
    assert_int_equal(nsupport_get("http://a/v1", t0 + 1), 0);
    assert_int_equal(nsupport_get("http://b/v1", t0 + 1), 1); /* a's refusal is a's only */
    assert_int_equal(nsupport_get("http://c/v1", t0 + 1), -1);
    /* a refusal is re-probed after NSUPPORT_REPROBE_S; an acceptance stays */
    assert_int_equal(nsupport_get("http://a/v1", t0 + NSUPPORT_REPROBE_S * 1000000LL - 1), 0);
    assert_int_equal(nsupport_get("http://a/v1", t0 + NSUPPORT_REPROBE_S * 1000000LL), -1);
    assert_int_equal(nsupport_get("http://b/v1", t0 + NSUPPORT_REPROBE_S * 2000000LL), 1);
    nsupport_set("http://a/v1", 1, t0 + 5);
    assert_int_equal(nsupport_get("http://a/v1", t0 + 6), 1);
}

/* More URLs than slots: the oldest entry goes, the table never grows. */
static void test_table_full(void **state)
{
    char url[64];

    (void)state;
    nsupport_reset();
    for (int i = 0; i < 200; i++) {
        snprintf(url, sizeof(url), "http://h%d/v1", i);
        nsupport_set(url, 0, 1000 + i);
    }
    assert_int_equal(nsupport_get("http://h199/v1", 2000), 0);
    assert_int_equal(nsupport_get("http://h0/v1", 2000), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_not_refusals),
        cmocka_unit_test(test_per_base_url),
        cmocka_unit_test(test_table_full),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
