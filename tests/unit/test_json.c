/* test_json.c: the json approach on the fake upstream: valid answers returned (a ```json fence
 * stripped), invalid ones re-asked in the same conversation with the validator's messages,
 * bounded rounds then invalid_structured_output, json_object, a pipeline's previous answer
 * (checked first, reformatted when invalid), unusable and self-referencing schemas, usage. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "log.h"
#include "prompt.h"

extern const struct approach approach_json;
#define THE_APPROACH approach_json

#define SCRIPT_ENV_OWN_BODY
#include "script_env.h"

#define SCHEMA                                                                                     \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"pop\":{\"type\":"       \
    "\"integer\",\"minimum\":0}},\"required\":[\"city\",\"pop\"],\"additionalProperties\":false}"
#define RF_SCHEMA(s)                                                                               \
    ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"c\",\"schema\":" s \
    "}}"
#define BODY(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be exact.\"},"              \
    "{\"role\":\"user\",\"content\":\"Largest city of France?\"}]" extra "}"

#define GOOD "{\"city\":\"Paris\",\"pop\":2100000}"

static void test_valid_first_time_fence_stripped(void **state)
{
    struct env e;
    (void)state;

    env_init(
        &e, BODY(RF_SCHEMA(SCHEMA)),
        (const struct row[]){{.stage = "json/answer", .text = "Here:\n```json\n" GOOD "\n```\n"},
                             {.stage = NULL}});
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, GOOD);
    check_sequential(&e, 1);
    check_call(call_at(&e, 0), "json/answer", 1, NAN, -1, false);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

static void test_invalid_reasked_with_errors(void **state)
{
    struct env e;
    const struct fake_record *r;
    (void)state;

    env_init(
        &e, BODY(RF_SCHEMA(SCHEMA)),
        (const struct row[]){{.stage = "json/answer", .text = "{\"city\":\"Paris\",\"pop\":-3}"},
                             {.stage = "json/retry", .text = "{\"city\":\"Paris\"}"},
                             {.stage = "json/retry", .text = GOOD},
                             {.stage = NULL}});
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, GOOD);
    check_sequential(&e, 3);
    /* the re-ask: the same conversation, the invalid reply, then the problems found */
    r = call_at(&e, 1);
    assert_int_equal(r->nmsgs, 4);
    assert_string_equal(r->msgs[2].role, "assistant");
    assert_string_equal(r->msgs[2].content, "{\"city\":\"Paris\",\"pop\":-3}");
    assert_string_equal(r->msgs[3].role, "user");
    assert_non_null(strstr(r->msgs[3].content, "$.pop"));
    assert_non_null(strstr(r->msgs[3].content, "\"required\":[\"city\",\"pop\"]"));
    r = call_at(&e, 2);
    assert_int_equal(r->nmsgs, 6);
    assert_non_null(strstr(fake_record_last(r), "pop"));
    check_usage(&e);
    env_cleanup(&e);
}

static void test_never_complies_fails_bounded(void **state)
{
    struct env e;
    (void)state;

    env_init(&e, BODY(RF_SCHEMA(SCHEMA) ",\"optillm_json_max_retries\":1"),
             (const struct row[]){{.stage = "json/answer", .text = "Paris, about 2.1 million."},
                                  {.stage = "json/retry", .text = "{\"town\":\"Paris\"}"},
                                  {.stage = NULL}});
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EUPSTREAM);
    assert_string_equal(e.err.err_code, "invalid_structured_output");
    assert_non_null(strstr(e.err.message, "after 2 attempts"));
    assert_non_null(strstr(e.err.message, "town"));
    check_sequential(&e, 2);
    assert_int_equal(e.script.unexpected, 0);
    check_usage(&e);
    env_cleanup(&e);
}

static void test_json_object(void **state)
{
    struct env e;
    (void)state;

    env_init(&e, BODY(",\"response_format\":{\"type\":\"json_object\"}"),
             (const struct row[]){{.stage = "json/answer", .text = "Paris."},
                                  {.stage = "json/retry", .text = "[1,2]"},
                                  {.stage = "json/retry", .text = "{\"a\":1}"},
                                  {.stage = NULL}});
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "{\"a\":1}");
    assert_non_null(strstr(fake_record_last(call_at(&e, 1)), "not valid JSON"));
    assert_non_null(strstr(fake_record_last(call_at(&e, 2)), "must be a JSON object"));
    check_sequential(&e, 3);
    env_cleanup(&e);
}

static void test_upstream_failure(void **state)
{
    struct env e;
    (void)state;

    env_init(&e, BODY(RF_SCHEMA(SCHEMA)),
             (const struct row[]){{.stage = "json/answer", .text = NULL}, {.stage = NULL}});
    assert_true(env_run(&e, &THE_APPROACH) < 0);
    assert_string_not_equal(e.err.err_code, "invalid_structured_output");
    check_usage(&e);
    env_cleanup(&e);
}

/* After an answering step: a valid previous answer is returned with no call. */
static void test_pipeline_prev_valid(void **state)
{
    struct env e;
    (void)state;

    env_init(&e, BODY(RF_SCHEMA(SCHEMA)), (const struct row[]){{.stage = NULL}});
    e.req.prev_answer = "```json\n" GOOD "\n```";
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, GOOD);
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
}

/* ...an invalid one is reformatted: the call sees the answer, the format and the problems. */
static void test_pipeline_prev_reformatted(void **state)
{
    struct env e;
    const char *last;
    (void)state;

    env_init(&e, BODY(RF_SCHEMA(SCHEMA)),
             (const struct row[]){{.stage = "json/answer", .text = GOOD}, {.stage = NULL}});
    e.req.prev_answer = "The largest city is Paris, population 2.1 million.";
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, GOOD);
    check_sequential(&e, 1);
    last = fake_record_last(call_at(&e, 0));
    assert_non_null(strstr(last, "population 2.1 million"));
    assert_non_null(strstr(last, "not valid JSON"));
    assert_non_null(strstr(last, "\"additionalProperties\":false"));
    assert_string_equal(call_at(&e, 0)->msgs[0].content, "Be exact.");
    env_cleanup(&e);
}

static void test_unusable_schema(void **state)
{
    struct env e;
    (void)state;

    env_init(&e, BODY(RF_SCHEMA("42")), (const struct row[]){{.stage = NULL}});
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EINVAL);
    assert_string_equal(e.err.param, "response_format");
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
}

/* A schema that refers to itself forever: each answer is invalid (nesting limit), the
 * request ends after the bounded rounds. */
static void test_self_referencing_schema(void **state)
{
    struct env e;
    (void)state;

    env_init(&e, BODY(RF_SCHEMA("{\"$ref\":\"#\"}") ",\"optillm_json_max_retries\":0"),
             (const struct row[]){{.stage = "json/answer", .text = GOOD}, {.stage = NULL}});
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EUPSTREAM);
    assert_string_equal(e.err.err_code, "invalid_structured_output");
    check_sequential(&e, 1);
    env_cleanup(&e);
}

/* No structured response_format: one answer call, returned as it is. */
static void test_no_response_format(void **state)
{
    struct env e;
    (void)state;

    env_init(&e, BODY(""),
             (const struct row[]){{.stage = "json/answer", .text = "Paris."}, {.stage = NULL}});
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "Paris.");
    check_sequential(&e, 1);
    check_usage(&e);
    env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_first_time_fence_stripped),
        cmocka_unit_test(test_invalid_reasked_with_errors),
        cmocka_unit_test(test_never_complies_fails_bounded),
        cmocka_unit_test(test_json_object),
        cmocka_unit_test(test_upstream_failure),
        cmocka_unit_test(test_pipeline_prev_valid),
        cmocka_unit_test(test_pipeline_prev_reformatted),
        cmocka_unit_test(test_unusable_schema),
        cmocka_unit_test(test_self_referencing_schema),
        cmocka_unit_test(test_no_response_format),
    };
    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
