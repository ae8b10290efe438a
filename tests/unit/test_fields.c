/* test_fields.c: the request fields an approach's calls carry (fields_copy), the capability
 * check of a route (chat_check_fields through chat_request_parse), tool calls as values
 * (llm_tool_calls_key, llm_tool_calls_text) and voting over tool calls (vote_choose). */
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

#include "answer.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "internal.h"
#include "vote.h"

/* ---- fields_copy ----------------------------------------------------------------------------- */

#define CLIENT                                                                                     \
    "{\"model\":\"bon-m\",\"messages\":[],\"n\":2,\"stream\":true,\"stream_options\":{},"          \
    "\"temperature\":0.3,\"max_tokens\":9,\"max_completion_tokens\":9,\"optillm_best_of_n\":3,"    \
    "\"optillm_approach\":\"bon\",\"seed\":7,\"top_p\":0.5,\"stop\":[\"END\"],\"user\":\"u\","     \
    "\"logit_bias\":{\"1\":-1},\"metadata\":{\"a\":\"b\"},\"logprobs\":true,\"top_logprobs\":2,"   \
    "\"response_format\":{\"type\":\"json_object\"},\"tools\":[{\"type\":\"function\"}],"          \
    "\"tool_choice\":\"auto\",\"parallel_tool_calls\":false,\"functions\":[],"                     \
    "\"function_call\":\"auto\",\"some_future_field\":{\"x\":[1,2]}}"

static void test_copy(void **state)
{
    static const char *const always[] = {"seed",     "top_p",        "stop",
                                         "user",     "logit_bias",   "metadata",
                                         "logprobs", "top_logprobs", "some_future_field"};
    static const char *const answer_only[] = {"response_format", "tools", "tool_choice",
                                              "parallel_tool_calls"};
    static const char *const never[] = {"model",
                                        "messages",
                                        "n",
                                        "stream",
                                        "stream_options",
                                        "temperature",
                                        "max_tokens",
                                        "max_completion_tokens",
                                        "optillm_best_of_n",
                                        "optillm_approach",
                                        "functions",
                                        "function_call"};
    cJSON *body = cJSON_Parse(CLIENT);

    (void)state;
    assert_non_null(body);
    for (int answer = 0; answer < 2; answer++) {
        cJSON *out = cJSON_CreateObject();

        cJSON_AddNumberToObject(out, "seed", 99); /* set by the stage: kept */
        fields_copy(out, body, answer);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(out, "seed")->valueint, 99);
        for (size_t i = 1; i < PX_ARRAY_LEN(always); i++)
            assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(out, always[i]),
                                      cJSON_GetObjectItemCaseSensitive(body, always[i]), true));
        for (size_t i = 0; i < PX_ARRAY_LEN(answer_only); i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(out, answer_only[i]);

            if (answer)
                assert_true(
                    cJSON_Compare(v, cJSON_GetObjectItemCaseSensitive(body, answer_only[i]), true));
            else
                assert_null(v);
        }
        for (size_t i = 0; i < PX_ARRAY_LEN(never); i++)
            assert_null(cJSON_GetObjectItemCaseSensitive(out, never[i]));
        assert_int_equal(cJSON_GetArraySize(out), (int)PX_ARRAY_LEN(always) + (answer ? 4 : 0));
        cJSON_Delete(out);
    }
    cJSON_Delete(body);
}

/* ---- chat_check_fields ------------------------------------------------------------------------
 */

static int check(const char *model, const char *extra, struct px_error *err)
{
    struct arena *a = arena_create();
    struct config cfg;
    struct chat_request req;
    char body[1024];
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.approach, sizeof(cfg.approach), "auto");
    snprintf(cfg.model, sizeof(cfg.model), "m");
    cfg.n = 1;
    snprintf(body, sizeof(body),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s}", model,
             extra);
    memset(err, 0, sizeof(*err));
    rc = chat_request_parse(a, body, strlen(body), &cfg, &req, err);
    arena_destroy(a);
    return rc;
}

#define TOOLS "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]"

static void test_check(void **state)
{
    static const char *const ok_tools[] = {
        "self_consistency-m", "majority_voting-m", "bon-m",  "moa-m", "re2-m",
        "bon&moa-m",          "re2|bon-m",         "gpt-4o", "none-m"};
    static const char *const no_tools[] = {
        "cot_reflection-m", "plansearch-m", "leap-m", "rto-m",  "mcts-m",      "pvg-m",
        "rstar-m",          "z3-m",         "cepo-m", "mars-m", "genselect-m", "deepthink-m",
        "bon&mcts-m",       "mcts|bon-m"};
    struct px_error err;

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(ok_tools); i++)
        assert_int_equal(check(ok_tools[i], TOOLS, &err), PX_OK);
    for (size_t i = 0; i < PX_ARRAY_LEN(no_tools); i++) {
        assert_int_equal(check(no_tools[i], TOOLS, &err), PX_EINVAL);
        assert_string_equal(err.param, "tools");
        assert_non_null(strstr(err.message, "bon, moa, self_consistency, majority_voting, re2"));
    }
    /* "tools": null or [] offers no tools. */
    assert_int_equal(check("mcts-m", "\"tools\":null", &err), PX_OK);
    assert_int_equal(check("mcts-m", "\"tools\":[]", &err), PX_OK);
    /* response_format: json on an approach whose answer may not come from an answer call is
     * refused; "text" asks for nothing; the final-stage approaches carry it. */
    assert_int_equal(check("mcts-m", "\"response_format\":{\"type\":\"json_object\"}", &err),
                     PX_EINVAL);
    assert_string_equal(err.param, "response_format");
    assert_int_equal(check("mcts-m", "\"response_format\":{\"type\":\"text\"}", &err), PX_OK);
    assert_int_equal(
        check("cot_reflection-m", "\"response_format\":{\"type\":\"json_schema\"}", &err), PX_OK);
    assert_int_equal(check("gpt-4o", "\"response_format\":{\"type\":\"json_schema\"}", &err),
                     PX_OK);
    /* The deprecated function calling: refused on approach routes, passed through otherwise. */
    assert_int_equal(check("bon-m", "\"functions\":[]", &err), PX_EINVAL);
    assert_string_equal(err.param, "functions");
    assert_int_equal(check("gpt-4o", "\"functions\":[]", &err), PX_OK);
}

/* ---- tool calls as values ---------------------------------------------------------------------
 */

#define CALL(id, name, args)                                                                       \
    "{\"id\":\"" id "\",\"type\":\"function\",\"function\":{\"name\":\"" name                      \
    "\",\"arguments\":\"" args "\"}}"

static void test_tool_key(void **state)
{
    struct arena *a = arena_create();
    const char *k1 =
        llm_tool_calls_key(a, "[" CALL("c1", "get", "{\\\"q\\\":\\\"x\\\",\\\"k\\\":1}") "]");
    const char *k2 = llm_tool_calls_key(
        a, "[" CALL("c2", "get", "{ \\\"k\\\" : 1.0, \\\"q\\\":\\\"x\\\" }") "]");
    const char *k3 =
        llm_tool_calls_key(a, "[" CALL("c1", "get", "{\\\"q\\\":\\\"y\\\",\\\"k\\\":1}") "]");
    const char *k4 =
        llm_tool_calls_key(a, "[" CALL("c1", "put", "{\\\"q\\\":\\\"x\\\",\\\"k\\\":1}") "]");

    (void)state;
    /* ids, key order and white space do not matter; name and values do. */
    assert_string_equal(k1, "get({\"k\":1,\"q\":\"x\"})");
    assert_string_equal(k1, k2);
    assert_string_not_equal(k1, k3);
    assert_string_not_equal(k1, k4);
    /* Nested objects are sorted too; arrays keep their order. */
    assert_string_equal(
        llm_tool_calls_key(
            a, "[" CALL("i", "f", "{\\\"b\\\":{\\\"z\\\":1,\\\"a\\\":[2,1]},\\\"a\\\":null}") "]"),
        "f({\"a\":null,\"b\":{\"a\":[2,1],\"z\":1}})");
    /* Several calls: the same set in another order is the same action. */
    assert_string_equal(
        llm_tool_calls_key(a, "[" CALL("1", "a", "{}") "," CALL("2", "b", "{}") "]"),
        llm_tool_calls_key(a, "[" CALL("3", "b", "{}") "," CALL("4", "a", "{}") "]"));
    /* Unparseable arguments are kept as sent; nothing usable is "". */
    assert_string_equal(llm_tool_calls_key(a, "[" CALL("1", "f", "not json") "]"), "f(not json)");
    assert_string_equal(llm_tool_calls_key(a, NULL), "");
    assert_string_equal(llm_tool_calls_key(a, "[]"), "");
    assert_string_equal(llm_tool_calls_key(a, "{oops"), "");
    /* The rendering for prompts keeps the order. */
    assert_string_equal(
        llm_tool_calls_text(
            a, "[" CALL("1", "b", "{\\\"y\\\":1,\\\"x\\\":2}") "," CALL("2", "a", "{}") "]"),
        "Tool call: b({\"x\":2,\"y\":1})\nTool call: a({})");
    assert_string_equal(llm_tool_calls_text(a, NULL), "");
    arena_destroy(a);
}

/* ---- voting over tool calls -------------------------------------------------------------------
 */

#define T_X1 "[" CALL("call_a", "get", "{\\\"q\\\":\\\"x\\\",\\\"k\\\":1}") "]"
#define T_X2 "[" CALL("call_b", "get", "{\\\"k\\\":1,\\\"q\\\":\\\"x\\\"}") "]"
#define T_X3 "[" CALL("call_c", "get", "{\\\"q\\\": \\\"x\\\", \\\"k\\\": 1}") "]"
#define T_Y  "[" CALL("call_d", "get", "{\\\"q\\\":\\\"y\\\",\\\"k\\\":1}") "]"

static void vote_all_orders(struct llm_choice *c, int n, enum vote_mode mode,
                            const char *want_tools, const char *want_text)
{
    struct arena *a = arena_create();

    /* Every rotation of the input picks the same sample (content-based choice). */
    for (int r = 0; r < n; r++) {
        struct llm_choice rot[8];
        bool cut = true;
        int pick;

        for (int i = 0; i < n; i++)
            rot[i] = c[(i + r) % n];
        pick = vote_choose(a, rot, n, mode, &cut);
        assert_true(pick >= 0 && pick < n);
        assert_false(cut);
        if (want_tools)
            assert_string_equal(rot[pick].tool_calls, want_tools);
        else
            assert_null(rot[pick].tool_calls);
        assert_string_equal(rot[pick].text, want_text);
    }
    arena_destroy(a);
}

static void test_vote_tools(void **state)
{
    /* Three samples make the same call (other ids, key order, spacing); two answer 42 in
     * text; one calls with other arguments. The call wins; its member is the shortest raw. */
    struct llm_choice c[] = {
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_X1},
        {.text = "The answer is 42.", .finish_reason = "stop"},
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_X3},
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_Y},
        {.text = "6*7: the answer is 42.", .finish_reason = "stop"},
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_X2},
    };
    /* Two text samples agree, two calls differ: the text wins. */
    struct llm_choice d[] = {
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_X1},
        {.text = "The answer is 42.", .finish_reason = "stop"},
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_Y},
        {.text = "It is 42. The answer is 42.", .finish_reason = "stop"},
    };
    /* Only tool calls with empty content: none is dropped as blank. */
    struct llm_choice e[] = {
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_Y},
        {.text = "", .finish_reason = "tool_calls", .tool_calls = T_X2},
    };

    (void)state;
    vote_all_orders(c, 6, VOTE_ALL, T_X1, "");
    vote_all_orders(c, 6, VOTE_ANSWERS_FIRST, T_X1, "");
    vote_all_orders(d, 4, VOTE_ALL, NULL, "The answer is 42.");
    vote_all_orders(d, 4, VOTE_ANSWERS_FIRST, NULL, "The answer is 42.");
    /* A tie between two different calls: the smaller key ("q":"x" < "q":"y"). */
    vote_all_orders(e, 2, VOTE_ALL, T_X2, "");
}

static int setup(void **state)
{
    (void)state;
    return answer_init();
}

static int teardown(void **state)
{
    (void)state;
    answer_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_tool_key),
        cmocka_unit_test(test_vote_tools),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
