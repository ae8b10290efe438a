/* test_approach_api.c: what approaches may read of the server and the request: the options
 * view (approach_opts: option values with the body's optillm_* override, clamping, the
 * --return-full-response switch) and llm_msg_multipart(), which spares approaches reading the
 * client's JSON. */
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
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "config.h"

/* An approach's own table whose options the registry does not list. */
static const struct approach_option rows[] = {
    {.name = "zz_rounds", .def = 3, .min = 1, .max = 5, .integer = true, .help = "test"},
    {.name = "zz_temp", .def = 0.5, .min = 0, .max = 2, .help = "test"},
    {0},
};

static void set(struct config *cfg, const char *name, double v)
{
    cfg->options[cfg->noptions].name = name;
    cfg->options[cfg->noptions++].value = v;
}

static void test_unregistered_rows_clamped(void **state)
{
    struct config cfg;
    struct approach_ctx ctx = {0};

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    ctx.opts = approach_opts_of(&cfg);
    assert_true(approach_opt_row(&ctx, rows, "zz_rounds") == 3); /* the row's default */
    assert_true(approach_opt_row(&ctx, rows, "zz_temp") == 0.5);
    set(&cfg, "zz_rounds", 9.7);
    set(&cfg, "zz_temp", 1.25);
    assert_true(approach_opt_row(&ctx, rows, "zz_rounds") == 5); /* clamped to max */
    assert_true(approach_opt_row(&ctx, rows, "zz_temp") == 1.25);
    cfg.options[0].value = 2.6;
    assert_true(approach_opt_row(&ctx, rows, "zz_rounds") == 2); /* integer rows round down */
    cfg.options[0].value = -4;
    assert_true(approach_opt_row(&ctx, rows, "zz_rounds") == 1); /* clamped to min */
    ctx.opts = NULL; /* no server settings at all: the defaults */
    assert_true(approach_opt_row(&ctx, rows, "zz_rounds") == 3);
}

static void test_registered_option_body_wins(void **state)
{
    struct config cfg;
    struct approach_ctx ctx = {0};
    struct arena *a = arena_create();
    struct chat_request req;
    struct px_error err;
    static const char body[] = "{\"model\":\"bon-m\",\"optillm_best_of_n\":4,"
                               "\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}";
    const struct approach_option *o = approach_option_find("best_of_n");

    (void)state;
    assert_non_null(o);
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.approach, sizeof(cfg.approach), "auto");
    cfg.n = 1;
    ctx.opts = approach_opts_of(&cfg);
    assert_true(approach_opt(&ctx, "best_of_n") == o->def);
    set(&cfg, "best_of_n", 6);
    assert_true(approach_opt(&ctx, "best_of_n") == 6); /* the server's flag */
    assert_int_equal(chat_request_parse(a, body, sizeof(body) - 1, &cfg, &req, &err), 0);
    ctx.req = &req;
    assert_true(approach_opt(&ctx, "best_of_n") == 4); /* the request's optillm_best_of_n */
    arena_destroy(a);
}

static void test_return_full(void **state)
{
    struct config cfg;
    struct approach_ctx ctx = {0};

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    assert_false(approach_return_full(&ctx));
    ctx.opts = approach_opts_of(&cfg);
    assert_false(approach_return_full(&ctx));
    cfg.return_full_response = true;
    assert_true(approach_return_full(&ctx));
}

static void test_msg_multipart(void **state)
{
    cJSON *parts = cJSON_Parse("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                               "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}");
    cJSON *plain = cJSON_Parse("{\"role\":\"user\",\"content\":\"a\"}");
    struct llm_msg m = {.role = "user", .content = "a"};

    (void)state;
    assert_false(llm_msg_multipart(&m)); /* a message we built */
    m.raw = plain;
    assert_false(llm_msg_multipart(&m));
    m.raw = parts;
    assert_true(llm_msg_multipart(&m));
    cJSON_Delete(parts);
    cJSON_Delete(plain);
}

/* One parser and one adder for usage (they were copied in the engine, the SSE parser and the
 * relay). */
static void test_usage_parse_and_add(void **state)
{
    cJSON *u = cJSON_Parse("{\"prompt_tokens\":12,\"completion_tokens\":30,"
                           "\"completion_tokens_details\":{\"reasoning_tokens\":7}}");
    cJSON *bad = cJSON_Parse("{\"prompt_tokens\":\"12\",\"completion_tokens\":-5}");
    struct usage a = {.calls = 1}, b = {.prompt_tokens = 100, .calls = 2};

    (void)state;
    llm_usage_parse(u, &a);
    assert_int_equal(a.prompt_tokens, 12);
    assert_int_equal(a.completion_tokens, 30);
    assert_int_equal(a.reasoning_tokens, 7);
    assert_int_equal(a.calls, 1);
    llm_usage_parse(NULL, &a); /* no usage object: unchanged */
    assert_int_equal(a.prompt_tokens, 12);
    llm_usage_parse(bad, &b); /* a string is ignored, a negative count made safe */
    assert_int_equal(b.prompt_tokens, 100);
    assert_true(b.completion_tokens >= 0);
    llm_usage_add(&a, &b);
    assert_int_equal(a.prompt_tokens, 112);
    assert_int_equal(a.calls, 3);
    cJSON_Delete(u);
    cJSON_Delete(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unregistered_rows_clamped),
        cmocka_unit_test(test_registered_option_body_wins),
        cmocka_unit_test(test_return_full),
        cmocka_unit_test(test_msg_multipart),
        cmocka_unit_test(test_usage_parse_and_add),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
