/* test_compact.c: the compact plugin on the fake upstream: under the threshold nothing changes
 * and no call is made; above it the older turns are summarised in one call and replaced by the
 * summary, the system prompt and the recent turns kept verbatim, a tool call never separated
 * from its result; a failed summary leaves the conversation as it was; options by body. */
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

extern const struct approach approach_compact;
#define THE_APPROACH approach_compact

#define SCRIPT_ENV_OWN_BODY
#include "script_env.h"

#define U(t) "{\"role\":\"user\",\"content\":\"" t "\"},"
#define A(t) "{\"role\":\"assistant\",\"content\":\"" t "\"},"
#define TOOLCALL                                                                                   \
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"            \
    "\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}"  \
    "\"}}]},"
#define TOOLRES "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"Oslo: 3C, rain\"},"
/* 7 turns; the 5th has a tool call and its result */
#define LONG(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a travel "          \
    "agent.\"}," U("Turn one: I want to go to Norway in March with my dog Rex.")                   \
        A("Noted: Norway, March.") U("Turn two: budget is 2000 EUR.") A("Budget noted.")           \
            U("Turn three: I prefer trains.") A("Trains it is.")                                   \
                U("Turn four: vegetarian food please.") A("Vegetarian noted.")                     \
                    U("Turn five: what is the weather in Oslo?")                                   \
                        TOOLCALL TOOLRES A("It is 3C and rainy.") U("Turn six: book the hotel.")   \
                            A("Which dates?") "{\"role\":\"user\",\"content\":\"Turn seven: 3 to " \
                                              "9 March.\"}]" extra "}"

static int prepare(struct env *e, struct chat_request *next)
{
    struct approach_post post = {0};
    int rc;

    *next = e->req;
    rc = THE_APPROACH.prepare(&e->ctx, next, &post);
    assert_null(post.answer);
    assert_null(post.stream);
    return rc;
}

static void test_under_threshold_unchanged(void **state)
{
    struct env e;
    struct chat_request next;
    (void)state;

    env_init(&e, LONG(""), (const struct row[]){{.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK); /* default 8000 tokens */
    assert_ptr_equal(next.msgs, e.req.msgs);
    assert_int_equal(next.nmsgs, e.req.nmsgs);
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
}

static void test_long_summarised_recent_kept(void **state)
{
    struct env e;
    struct chat_request next;
    const struct fake_record *r;
    (void)state;

    env_init(&e, LONG(",\"optillm_compact_threshold\":50,\"optillm_compact_keep_turns\":3"),
             (const struct row[]){{.stage = "compact/summary",
                                   .text = "Norway in March, dog Rex, "
                                           "2000 EUR, trains, veg."},
                                  {.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK);
    check_sequential(&e, 1);
    check_call(call_at(&e, 0), "compact/summary", 1, NAN, -1, false);
    r = call_at(&e, 0);
    /* the older turns reach the summary call, the kept ones do not */
    assert_non_null(strstr(r->text, "Turn one"));
    assert_non_null(strstr(r->text, "Turn four: vegetarian"));
    assert_null(strstr(r->text, "Turn five"));
    assert_null(strstr(r->text, "You are a travel agent"));
    check_usage(&e);
    /* system, summary, then turns five to seven verbatim (the tool call with its result) */
    assert_int_equal(next.nmsgs, 2 + 7);
    assert_string_equal(next.msgs[0].content, "You are a travel agent.");
    assert_ptr_equal(next.msgs[0].raw, e.req.msgs[0].raw);
    assert_string_equal(next.msgs[1].role, "system");
    assert_non_null(strstr(next.msgs[1].content, "dog Rex, 2000 EUR"));
    assert_null(next.msgs[1].raw);
    for (size_t i = 2; i < next.nmsgs; i++)
        assert_ptr_equal(next.msgs[i].raw, e.req.msgs[e.req.nmsgs - next.nmsgs + i].raw);
    assert_string_equal(next.msgs[2].content, "Turn five: what is the weather in Oslo?");
    assert_string_equal(next.msgs[3].role, "assistant");
    assert_non_null(chat_msg_tool_calls(e.arena, &next.msgs[3]));
    assert_string_equal(next.msgs[4].role, "tool");
    /* the client's request is untouched */
    assert_int_equal(e.req.nmsgs, 16);
    env_cleanup(&e);
}

/* The tool call is in the older part: summarised with its result, both rendered. */
static void test_tool_turn_summarised_whole(void **state)
{
    struct env e;
    struct chat_request next;
    const struct fake_record *r;
    (void)state;

    env_init(&e, LONG(",\"optillm_compact_threshold\":50,\"optillm_compact_keep_turns\":2"),
             (const struct row[]){{.stage = "compact/summary", .text = "S."}, {.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK);
    r = call_at(&e, 0);
    assert_non_null(strstr(r->text, "Tool call: weather"));
    assert_non_null(strstr(r->text, "Oslo: 3C, rain"));
    assert_int_equal(next.nmsgs, 2 + 3);
    assert_string_equal(next.msgs[2].content, "Turn six: book the hotel.");
    for (size_t i = 0; i < next.nmsgs; i++)
        assert_string_not_equal(next.msgs[i].role, "tool");
    env_cleanup(&e);
}

static void test_summary_failure_passes_unchanged(void **state)
{
    struct env e;
    struct chat_request next;
    (void)state;

    env_init(&e, LONG(",\"optillm_compact_threshold\":50"),
             (const struct row[]){{.stage = "compact/summary", .text = NULL}, {.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_ptr_equal(next.msgs, e.req.msgs);
    assert_int_equal(next.nmsgs, e.req.nmsgs);
    assert_int_equal(e.err.code, 0);
    check_sequential(&e, 1);
    check_usage(&e); /* the failed call is counted */
    env_cleanup(&e);
}

/* Over the threshold but nothing older than the kept turns: unchanged, no call. */
static void test_nothing_older(void **state)
{
    struct env e;
    struct chat_request next;
    (void)state;

    env_init(&e, LONG(",\"optillm_compact_threshold\":10,\"optillm_compact_keep_turns\":7"),
             (const struct row[]){{.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_ptr_equal(next.msgs, e.req.msgs);
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
}

/* The estimate is bytes / 4: a conversation of exactly threshold * 4 bytes is not compacted. */
static void test_threshold_boundary(void **state)
{
    struct env e;
    struct chat_request next;
    size_t bytes = 0;
    char body[4096];
    (void)state;

    env_init(&e, LONG(""), (const struct row[]){{.stage = NULL}});
    for (size_t i = 0; i < e.req.nmsgs; i++) {
        const char *tc = chat_msg_tool_calls(e.arena, &e.req.msgs[i]);

        bytes += strlen(e.req.msgs[i].content) + (tc ? strlen(tc) : 0);
    }
    env_cleanup(&e);
    snprintf(body, sizeof(body), "%s", LONG(",\"optillm_compact_threshold\":XXXXX"));
    char *x = strstr(body, "XXXXX");
    char num[24];
    snprintf(num, sizeof(num), "%05zu", bytes / 4);
    memcpy(x, num, 5);
    env_init(&e, body, (const struct row[]){{.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
    snprintf(num, sizeof(num), "%05zu", bytes / 4 - 1);
    memcpy(x, num, 5);
    env_init(&e, body,
             (const struct row[]){{.stage = "compact/summary", .text = "S."}, {.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_int_equal(e.fake.ncalls, 1);
    env_cleanup(&e);
}

/* A 1 MB conversation: one summary call, the recent turns kept; the threshold from the
 * server's setting (as --compact-threshold sets it). */
static void test_one_megabyte(void **state)
{
    struct env e;
    struct chat_request next;
    size_t big = 1 << 20;
    char *filler = malloc(big + 1), *body = malloc(big + 1024);
    (void)state;

    memset(filler, 'z', big);
    filler[big] = '\0';
    snprintf(body, big + 1024,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"},"
             "{\"role\":\"assistant\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":\"q\"}]}",
             filler);
    env_init(&e, body,
             (const struct row[]){{.stage = "compact/summary", .text = "S."}, {.stage = NULL}});
    env_option(&e, "compact_keep_turns", 1);
    assert_int_equal(prepare(&e, &next), PX_OK); /* 262144 tokens > 8000 */
    check_sequential(&e, 1);
    assert_int_equal(next.nmsgs, 2);
    assert_string_equal(next.msgs[1].content, "q");
    env_cleanup(&e);
    free(filler);
    free(body);
}

/* A client's small max_tokens is for its answer: the summary call gets 1024. */
static void test_summary_max_tokens(void **state)
{
    struct env e;
    struct chat_request next;
    (void)state;

    env_init(&e, LONG(",\"optillm_compact_threshold\":50,\"max_tokens\":20"),
             (const struct row[]){{.stage = "compact/summary", .text = "S."}, {.stage = NULL}});
    assert_int_equal(prepare(&e, &next), PX_OK);
    check_call(call_at(&e, 0), "compact/summary", 1, NAN, 1024, false);
    env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_under_threshold_unchanged),
        cmocka_unit_test(test_long_summarised_recent_kept),
        cmocka_unit_test(test_tool_turn_summarised_whole),
        cmocka_unit_test(test_summary_failure_passes_unchanged),
        cmocka_unit_test(test_nothing_older),
        cmocka_unit_test(test_threshold_boundary),
        cmocka_unit_test(test_one_megabyte),
        cmocka_unit_test(test_summary_max_tokens),
    };
    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
