/* test_router.c: the router on the scripted fake transport: one classification call
 * (temperature 0, router_max_tokens, the classifier model when configured, no client tools),
 * the label's approach answering in the same context (usage summed), the classification
 * cached per model and prompt, the default on a failed or unrecognised classification, the
 * plain completion when the chosen approach cannot carry the request (tools, budget), the
 * label parser, and every --router-config error. */
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
#include <unistd.h>

#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "router.h"

extern const struct approach approach_router;
#define THE_APPROACH approach_router

#include "script_env.h"

static const struct row math_rows[] = {
    {"router/classify", NULL, "math", NULL},
    {"self_consistency/sample", NULL, "6*7 = 42. The answer is 42.", NULL},
    {"self_consistency/sample", NULL, "Forty-two: the answer is 42.", NULL},
    {"self_consistency/sample", NULL, "I get 42, so the answer is 42.", NULL},
    {"self_consistency/sample", NULL, "the answer is 41", NULL},
    {"self_consistency/sample", NULL, "the answer is 42", NULL},
    {NULL, NULL, NULL, NULL},
};

static int setup(void **state)
{
    (void)state;
    router_reset();
    return 0;
}

static void test_descriptor(void **state)
{
    (void)state;
    check_descriptor(&approach_router, "router", 2, 2);
    assert_true(approach_router.tools);
    assert_true(approach_router.response_format);
    assert_int_equal(approach_router.min_calls, 2);
    assert_ptr_equal(approach_find("router", 6), &approach_router);
}

/* "math" -> self_consistency: its samples follow the classification in the same context. */
static void test_math_routes_to_self_consistency(void **state)
{
    struct env e;
    const struct fake_record *c;

    (void)state;
    env_init(&e, BODY(""), math_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_int_equal(e.script.unexpected, 0);
    c = call_at(&e, 0);
    check_call(c, "router/classify", 1, 0, 16, false);
    assert_null(c->model);
    assert_non_null(strstr(c->text, Q));
    assert_non_null(strstr(c->text, SYS)); /* the system prompt tells the task too */
    assert_non_null(strstr(c->text, "- math: "));
    assert_non_null(strstr(c->text, "- chat: "));
    assert_true(fake_llm_stage_calls(&e.fake, "self_consistency/sample") >= 1);
    assert_non_null(strstr(e.out.text, "42"));
    assert_string_equal(e.ctx.route_note, "math: self_consistency (classified)");
    check_usage(&e);
    env_cleanup(&e);
}

/* The same prompt again: no classification call; a different prompt is classified. */
static void test_cache(void **state)
{
    static const struct row none_rows[] = {
        {"router/classify", NULL, "chat", NULL},
        {"plugin/final", NULL, "Hello there.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;
    long hits, misses;

    (void)state;
    env_init(&e, BODY(""), math_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    env_cleanup(&e);

    env_init(&e, BODY(""), math_rows + 1); /* no classify row: a call would be unexpected */
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_int_equal(e.script.unexpected, 0);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "router/classify"), 0);
    assert_string_equal(e.ctx.route_note, "math: self_consistency (cached)");
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi!\"}]}",
             none_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_int_equal(fake_llm_stage_calls(&e.fake, "router/classify"), 1);
    assert_int_equal(e.fake.ncalls, 2);
    assert_string_equal(e.out.text, "Hello there.");
    assert_string_equal(e.ctx.route_note, "chat: none (classified)");
    check_usage(&e);
    env_cleanup(&e);

    router_cache_stats(&hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 2);
}

/* A reply naming no type, and a failed classification call: the default (none) answers, the
 * request does not fail, and nothing is cached. */
static void test_default_route(void **state)
{
    static const struct row odd_rows[] = {
        {"router/classify", NULL, "I am not sure what this is.", NULL},
        {"plugin/final", NULL, "42", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row failed_rows[] = {
        {"router/classify", NULL, NULL, NULL},
        {"plugin/final", NULL, "42", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e, BODY(""), odd_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_string_equal(e.out.text, "42");
    assert_string_equal(e.ctx.route_note, "default: none (unrecognised)");
    assert_int_equal(e.fake.ncalls, 2);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, BODY(""), failed_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_string_equal(e.out.text, "42");
    assert_string_equal(e.ctx.route_note, "default: none (classifier failed)");
    assert_int_equal(e.err.code, 0);
    assert_int_equal(e.fake.ncalls, 2);
    assert_int_equal(e.fake.calls[0].status < 0, 1);
    check_usage(&e); /* the failed call's usage counts too */
    env_cleanup(&e);
}

/* code -> plansearch, which does not carry tools: a request with tools gets the plain
 * completion (tools kept); without tools, plansearch runs. */
static void test_unfit_approach_falls_back(void **state)
{
    static const struct row code_rows[] = {
        {"router/classify", NULL, "code", NULL},
        {"plugin/final", NULL, "Calling the tool.", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e,
             BODY(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"run\","
                  "\"parameters\":{\"type\":\"object\"}}}]"),
             code_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_int_equal(e.script.unexpected, 0);
    assert_int_equal(e.fake.ncalls, 2);
    assert_string_equal(e.ctx.route_note, "code: none (classified)");
    assert_string_equal(e.out.text, "Calling the tool.");
    check_usage(&e);
    env_cleanup(&e);
}

/* A budget of 2 calls: self_consistency (at least 1 call) still fits after the classification;
 * with the classification cached, a budget of 1 runs it too. */
static void test_budget(void **state)
{
    struct env e;

    (void)state;
    env_init(&e, BODY(",\"optillm_max_calls\":2"), math_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_true(e.ctx.usage.calls <= 2);
    assert_string_equal(e.ctx.route_note, "math: self_consistency (classified)");
    check_usage(&e);
    env_cleanup(&e);
}

static void test_classifier_model(void **state)
{
    char path[] = "/tmp/test_router_XXXXXX";
    int fd = mkstemp(path);
    const char *cfg = "{\"classifier_model\": \"small-model\", \"default\": \"re2\","
                      " \"routes\": {\"sums\": {\"approach\": \"self_consistency\","
                      " \"description\": \"adding numbers\"}, \"talk\": \"none\"}}";
    static const struct row rows[] = {
        {"router/classify", NULL, "<think>maybe talk?</think>\nSums.", NULL},
        {"self_consistency/sample", "6 times 7", "the answer is 42", NULL},
        {NULL, NULL, NULL, NULL},
    };
    static const struct row unknown_rows[] = {
        {"router/classify", NULL, "math", NULL}, /* not a label of this table */
        {"re2/final", NULL, "42", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char why[512];
    struct env e;
    const struct router_route *r;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, cfg, strlen(cfg)), (ssize_t)strlen(cfg));
    close(fd);
    assert_int_equal(router_load(path, false, why, sizeof(why)), 0);
    unlink(path);
    assert_int_equal(router_routes(&r), 2);
    assert_string_equal(r[0].label, "sums");
    assert_string_equal(r[0].description, "adding numbers");
    assert_null(r[1].approach);
    assert_string_equal(router_classifier_model(), "small-model");
    assert_string_equal(router_default()->approach->slug, "re2");

    env_init(&e, BODY(""), rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_string_equal(e.fake.calls[0].model, "small-model");
    assert_null(e.fake.calls[1].model); /* the answer comes from the client's model */
    assert_non_null(strstr(e.fake.calls[0].text, "- sums: adding numbers"));
    assert_non_null(strstr(e.fake.calls[0].text, "- talk\n"));
    assert_string_equal(e.ctx.route_note, "sums: self_consistency (classified)");
    env_cleanup(&e);

    env_init(&e, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"}]}",
             unknown_rows);
    assert_int_equal(env_run(&e, &approach_router), PX_OK);
    assert_int_equal(e.script.unexpected, 0);
    assert_string_equal(e.ctx.route_note, "default: re2 (unrecognised)");
    env_cleanup(&e);
    router_reset();
    assert_null(router_classifier_model());
}

static void test_parse_label(void **state)
{
    (void)state;
    assert_string_equal(router_parse_label("math")->label, "math");
    assert_string_equal(router_parse_label("  **Code**\n")->label, "code");
    assert_string_equal(router_parse_label("MATH.")->label, "math");
    assert_string_equal(router_parse_label("<think>it is code</think>reasoning")->label,
                        "reasoning");
    assert_string_equal(router_parse_label("The type is factual, not creative.")->label, "factual");
    assert_null(router_parse_label("aftermath"));
    assert_null(router_parse_label(""));
    assert_null(router_parse_label("<think>math</think>"));
}

/* Each bad routes file: a start-up error naming the problem; the table stays as it was. */
static void test_config_errors(void **state)
{
    static const struct {
        const char *json;
        const char *why;
    } bad[] = {
        {"[]", "not a JSON object"},
        {"{\"routes\": {}}", "non-empty object"},
        {"{\"routes\": {\"a\": \"nosuch\"}}", "unknown approach 'nosuch'"},
        {"{\"routes\": {\"a\": \"privacy\"}}", "is a plugin"},
        {"{\"routes\": {\"a\": \"router\"}}", "cannot route to itself"},
        {"{\"routes\": {\"a\": \"executecode\"}}", "--enable-code-execution"},
        {"{\"routes\": {\"A B\": \"moa\"}}", "label 'A B'"},
        {"{\"routes\": {\"a\": \"moa\", \"a\": \"bon\"}}", "appears twice"},
        {"{\"routes\": {\"a\": 3}}", "approach slug or"},
        {"{\"routes\": {\"a\": {\"approach\": \"moa\", \"description\": 1}}}", "description"},
        {"{\"routes\": {\"a\": \"moa\"}, \"default\": \"nosuch\"}", "default: unknown"},
        {"{\"routes\": {\"a\": \"moa\"}, \"classifier_model\": \"\"}", "classifier_model"},
        {"{\"routes\": {\"a\": \"moa\"}, \"extra\": 1}", "unknown field \"extra\""},
        {"not json", "not a JSON object"},
    };
    char path[] = "/tmp/test_router_XXXXXX";
    int fd = mkstemp(path);
    char why[512];
    const struct router_route *r;

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        FILE *f = fopen(path, "w");

        assert_non_null(f);
        fputs(bad[i].json, f);
        fclose(f);
        why[0] = '\0';
        assert_int_equal(router_load(path, false, why, sizeof(why)), -1);
        if (!strstr(why, bad[i].why))
            fail_msg("%s: got '%s', wanted '%s'", bad[i].json, why, bad[i].why);
        assert_non_null(strstr(why, "--router-config"));
        assert_int_equal(router_routes(&r), 6); /* still the built-in table */
    }
    /* With code execution on, executecode is a valid route. */
    {
        FILE *f = fopen(path, "w");

        fputs("{\"routes\": {\"a\": \"executecode\"}}", f);
        fclose(f);
        assert_int_equal(router_load(path, true, why, sizeof(why)), 0);
        assert_int_equal(router_routes(&r), 1);
    }
    unlink(path);
    assert_int_equal(router_load(path, false, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "cannot read"));
    router_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),
        cmocka_unit_test_setup(test_math_routes_to_self_consistency, setup),
        cmocka_unit_test_setup(test_cache, setup),
        cmocka_unit_test_setup(test_default_route, setup),
        cmocka_unit_test_setup(test_unfit_approach_falls_back, setup),
        cmocka_unit_test_setup(test_budget, setup),
        cmocka_unit_test_setup(test_classifier_model, setup),
        cmocka_unit_test_setup(test_parse_label, setup),
        cmocka_unit_test_setup(test_config_errors, setup),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
