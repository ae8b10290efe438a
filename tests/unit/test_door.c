/* test_door.c: unit tests of the front doors (door.c): requests translated into chat
 * completions, and chat-completions output (JSON, SSE chunks, errors) translated back into
 * Anthropic Messages and OpenAI Responses shapes. The examples follow the public API
 * references (Anthropic "Messages" and "Streaming messages"; OpenAI "Responses" and "Streaming
 * events"). */
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

/* ---- helpers --------------------------------------------------------------------------------- */

static void assert_json_eq(const char *got, const char *want)
{
    cJSON *g = cJSON_Parse(got), *w = cJSON_Parse(want);

    assert_non_null(g);
    assert_non_null(w);
    if (!cJSON_Compare(g, w, 1)) {
        fprintf(stderr, "got:  %s\nwant: %s\n", got, want);
        fail();
    }
    cJSON_Delete(g);
    cJSON_Delete(w);
}

static void assert_item_eq(const cJSON *got, const char *want)
{
    char *s = cJSON_PrintUnformatted(got);

    assert_non_null(s);
    assert_json_eq(s, want);
    cJSON_free(s);
}

static char *translate(enum door_kind kind, const char *req, int *rc, struct px_error *err)
{
    struct door *d = door_create(kind);
    char *chat = NULL;
    size_t len;

    *rc = door_request(d, req, strlen(req), &chat, &len, err);
    door_free(d);
    return chat;
}

/* Runs a whole reply through a door: begin, the bytes one at a time (to cross every split),
 * end. */
static char *run_reply(struct door *d, int status, const char *ctype, bool streaming,
                       const char *body)
{
    struct buf out;
    char ct[128];

    buf_init(&out, 0);
    snprintf(ct, sizeof(ct), "%s", ctype);
    door_begin(d, status, ct, sizeof(ct), streaming);
    for (size_t i = 0; body[i]; i++)
        door_feed(d, body + i, 1, &out);
    door_end(d, &out);
    return buf_take(&out, NULL);
}

/* The SSE events of a translated stream: [{"event": name, "data": {...}}]; a data-less
 * comment becomes {"comment": true}. */
static cJSON *events(const char *sse)
{
    cJSON *arr = cJSON_CreateArray();
    const char *p = sse;

    while (*p) {
        const char *end = strstr(p, "\n\n");
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char *ev = strndup(p, n);
        cJSON *o = cJSON_CreateObject();
        char *name = strstr(ev, "event: "), *data = strstr(ev, "data: ");

        if (ev[0] == ':')
            cJSON_AddTrueToObject(o, "comment");
        if (name) {
            char *nl = strchr(name, '\n');

            if (nl)
                *nl = '\0';
            cJSON_AddStringToObject(o, "event", name + 7);
        }
        if (data)
            cJSON_AddItemToObject(o, "data", cJSON_Parse(data + 6));
        cJSON_AddItemToArray(arr, o);
        free(ev);
        p = end ? end + 2 : p + n;
    }
    return arr;
}

static const char *ev_name(const cJSON *evs, int i)
{
    const cJSON *n = cJSON_GetObjectItem(cJSON_GetArrayItem(evs, i), "event");

    return cJSON_IsString(n) ? n->valuestring : "";
}

static const cJSON *ev_data(const cJSON *evs, int i)
{
    return cJSON_GetObjectItem(cJSON_GetArrayItem(evs, i), "data");
}

static const cJSON *path(const cJSON *o, const char *a, const char *b)
{
    o = cJSON_GetObjectItem(o, a);
    return b ? cJSON_GetObjectItem(o, b) : o;
}

static const char *pstr(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = path(o, a, b);

    return cJSON_IsString(v) ? v->valuestring : "<none>";
}

/* An OpenAI chat.completion.chunk stream: a role chunk, text, a tool call in OpenAI's
 * delta.tool_calls form (id/name with arguments "", then fragments), finish, usage, [DONE],
 * with a keep-alive comment at the start. */
static const char chunk_stream[] =
    ": keep-alive\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me \"}}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"check.\"}}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"arguments\":\"\"}}]}}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"{\\\"location\\\":\"}}]}}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}"
    "]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":25,\"completion_tokens\":15,"
    "\"total_tokens\":40}}\n\n"
    "data: [DONE]\n\n";

static const char completion[] =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"gpt-x\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Let me check.\","
    "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
    "\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":"
    "\"tool_calls\"}],\"usage\":{\"prompt_tokens\":25,\"completion_tokens\":15,\"total_tokens\":"
    "40}}";

/* ---- requests -------------------------------------------------------------------------------- */

static void test_anthropic_request(void **state)
{
    (void)state;
    /* Modelled on the Messages API reference: system blocks, a multi-turn conversation with a
     * tool_use / tool_result round trip, an image, client tools, tool_choice, stop_sequences. */
    const char *req =
        "{\"model\":\"moa-claude-x\",\"max_tokens\":1024,\"stream\":true,"
        "\"system\":[{\"type\":\"text\",\"text\":\"You are a weather bot.\","
        "\"cache_control\":{\"type\":\"ephemeral\"}}],"
        "\"messages\":["
        "{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\","
        "\"media_type\":\"image/png\",\"data\":\"iVBOR\"}},{\"type\":\"text\",\"text\":\"What is "
        "the weather in Paris?\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\","
        "\"signature\":\"s\"},{\"type\":\"text\",\"text\":\"Checking.\"},{\"type\":\"tool_use\","
        "\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{\"location\":\"Paris\"}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_01\","
        "\"content\":[{\"type\":\"text\",\"text\":\"15 C\"}]},{\"type\":\"text\",\"text\":"
        "\"Thanks\"}]},"
        "{\"role\":\"assistant\",\"content\":\"You are welcome.\"}],"
        "\"stop_sequences\":[\"###\"],\"temperature\":0.5,\"top_p\":0.9,\"top_k\":5,"
        "\"metadata\":{\"user_id\":\"u-42\"},"
        "\"tools\":[{\"name\":\"get_weather\",\"description\":\"Get the weather\","
        "\"input_schema\":{\"type\":\"object\",\"properties\":{\"location\":{\"type\":"
        "\"string\"}},\"required\":[\"location\"]}}],"
        "\"tool_choice\":{\"type\":\"tool\",\"name\":\"get_weather\","
        "\"disable_parallel_tool_use\":true},\"optillm_approach\":\"moa\"}";
    const char *want =
        "{\"model\":\"moa-claude-x\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"You are a weather bot.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"data:image/png;base64,iVBOR\"}},{\"type\":\"text\",\"text\":\"What is the weather in "
        "Paris?\"}]},"
        "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":[{\"id\":\"toolu_01\","
        "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
        "\"{\\\"location\\\":\\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_01\",\"content\":\"15 C\"},"
        "{\"role\":\"user\",\"content\":\"Thanks\"},"
        "{\"role\":\"assistant\",\"content\":\"You are welcome.\"}],"
        "\"max_tokens\":1024,\"temperature\":0.5,\"top_p\":0.9,\"stop\":[\"###\"],"
        "\"user\":\"u-42\","
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"Get the weather\",\"parameters\":{\"type\":\"object\",\"properties\":"
        "{\"location\":{\"type\":\"string\"}},\"required\":[\"location\"]}}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
        "\"parallel_tool_calls\":false,"
        "\"stream\":true,"
        "\"optillm_approach\":\"moa\"}";
    struct px_error err;
    int rc;
    char *chat = translate(DOOR_MESSAGES, req, &rc, &err);

    assert_int_equal(rc, PX_OK);
    assert_json_eq(chat, want);
    free(chat);
}

static void test_responses_request(void **state)
{
    (void)state;
    /* Modelled on the Responses API reference: instructions, input items (a message with
     * input_text and input_image, a function_call and its output), function tools,
     * text.format json_schema, max_output_tokens. */
    const char *req =
        "{\"model\":\"gpt-x\",\"instructions\":\"Be brief.\",\"input\":["
        "{\"role\":\"developer\",\"content\":\"Use metric units.\"},"
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":"
        "\"Weather here?\"},{\"type\":\"input_image\",\"image_url\":\"https://x/y.png\","
        "\"detail\":\"low\"}]},"
        "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]},"
        "{\"type\":\"function_call\",\"call_id\":\"call_1\",\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"call_1\",\"output\":\"15 C\"}],"
        "\"tools\":[{\"type\":\"function\",\"name\":\"get_weather\",\"description\":\"d\","
        "\"parameters\":{\"type\":\"object\"},\"strict\":true}],\"tool_choice\":\"required\","
        "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"w\",\"schema\":{\"type\":"
        "\"object\"},\"strict\":true}},"
        "\"max_output_tokens\":300,\"temperature\":0.2,\"store\":false,\"metadata\":{\"a\":\"b\"},"
        "\"reasoning\":{\"effort\":\"low\"},\"stream\":true}";
    const char *want =
        "{\"model\":\"gpt-x\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"system\",\"content\":\"Use metric units.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather here?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\",\"detail\":\"low\"}}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
        "\"{\\\"location\\\":\\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"15 C\"}],"
        "\"max_tokens\":300,\"temperature\":0.2,\"reasoning_effort\":\"low\","
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"d\",\"parameters\":{\"type\":\"object\"},\"strict\":true}}],"
        "\"tool_choice\":\"required\","
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"w\","
        "\"schema\":{\"type\":\"object\"},\"strict\":true}},"
        "\"stream\":true}";
    struct px_error err;
    int rc;
    char *chat = translate(DOOR_RESPONSES, req, &rc, &err);

    assert_int_equal(rc, PX_OK);
    assert_json_eq(chat, want);
    free(chat);

    /* A plain string input. */
    chat = translate(DOOR_RESPONSES, "{\"model\":\"m\",\"input\":\"hi\"}", &rc, &err);
    assert_int_equal(rc, PX_OK);
    assert_json_eq(chat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    free(chat);
}

static void test_request_errors(void **state)
{
    static const struct {
        enum door_kind kind;
        const char *req;
        const char *param;
        const char *msg;
    } cases[] = {
        {DOOR_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"resp_1\"}",
         "previous_response_id", "store"},
        {DOOR_RESPONSES, "{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"x\"}]}",
         "input", "item_reference"},
        {DOOR_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}",
         "tools", "function tools"},
        {DOOR_RESPONSES, "{\"input\":\"x\"}", "model", "model"},
        {DOOR_MESSAGES, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "max_tokens", "max_tokens"},
        {DOOR_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{"
         "\"type\":\"document\",\"source\":{}}]}]}",
         "messages", "document"},
        {DOOR_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[],\"tools\":[{\"type\":"
         "\"web_search_20250305\",\"name\":\"web_search\"}]}",
         "tools", "server tools"},
        {DOOR_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"system\","
         "\"content\":\"x\"}]}",
         "messages", "role"},
        {DOOR_MESSAGES, "[1,2]", "", "JSON object"},
        /* Strict JSON (json_check.h): what goes upstream is what was read here. */
        {DOOR_MESSAGES, "{\"model\":\"a\",\"model\":\"b\",\"max_tokens\":5,\"messages\":[]}",
         "model", "repeats the key"},
        {DOOR_RESPONSES, "{\"model\":\"m\",\"input\":\"x\"} trailing", "", "after"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct px_error err;
        int rc;
        char *chat = translate(cases[i].kind, cases[i].req, &rc, &err);

        assert_int_equal(rc, PX_EINVAL);
        assert_null(chat);
        assert_string_equal(err.param, cases[i].param);
        if (!strstr(err.message, cases[i].msg)) {
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err.message, cases[i].msg);
            fail();
        }
    }
}

static void test_count_tokens(void **state)
{
    struct px_error err;
    long n = 0;
    const char *req = "{\"model\":\"m\",\"system\":\"abcd\",\"messages\":[{\"role\":\"user\","
                      "\"content\":\"hello\"}]}";

    (void)state;
    assert_int_equal(door_count_tokens(req, strlen(req), &n, &err), PX_OK);
    /* 4 bytes of system + the messages JSON (35 bytes) = 39 -> 1 + 39/4 */
    assert_int_equal(n, 10);
    assert_int_equal(door_count_tokens("{}", 2, &n, &err), PX_EINVAL);
}

/* ---- complete replies ------------------------------------------------------------------------ */

static void test_anthropic_reply(void **state)
{
    struct door *d = door_create(DOOR_MESSAGES);
    struct px_error err;
    char *chat, *out;
    size_t len;
    const char *req = "{\"model\":\"bon-claude\",\"max_tokens\":9,\"messages\":[]}";
    cJSON *o;

    (void)state;
    assert_int_equal(door_request(d, req, strlen(req), &chat, &len, &err), PX_OK);
    free(chat);
    out = run_reply(d, 200, "application/json", false, completion);
    o = cJSON_Parse(out);
    assert_non_null(o);
    assert_true(strncmp(pstr(o, "id", NULL), "msg_", 4) == 0);
    cJSON_DeleteItemFromObject(o, "id");
    char *s = cJSON_PrintUnformatted(o);
    assert_json_eq(s,
                   "{\"type\":\"message\",\"role\":\"assistant\",\"model\":\"bon-claude\","
                   "\"content\":[{\"type\":\"text\",\"text\":\"Let me check.\"},{\"type\":"
                   "\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":"
                   "{\"location\":\"Paris\"}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
                   "\"usage\":{\"input_tokens\":25,\"output_tokens\":15}}");
    cJSON_free(s);
    cJSON_Delete(o);
    free(out);
    door_free(d);

    /* finish_reason length -> max_tokens; stop -> end_turn. */
    static const char *const fr[][2] = {{"length", "max_tokens"}, {"stop", "end_turn"}};
    for (int i = 0; i < 2; i++) {
        char body[256];

        d = door_create(DOOR_MESSAGES);
        snprintf(body, sizeof(body),
                 "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                 "\"x\"},\"finish_reason\":\"%s\"}]}",
                 fr[i][0]);
        out = run_reply(d, 200, "application/json", false, body);
        o = cJSON_Parse(out);
        assert_string_equal(pstr(o, "stop_reason", NULL), fr[i][1]);
        cJSON_Delete(o);
        free(out);
        door_free(d);
    }
}

static void test_responses_reply(void **state)
{
    struct door *d = door_create(DOOR_RESPONSES);
    struct px_error err;
    char *chat, *out;
    size_t len;
    const char *req = "{\"model\":\"moa-gpt\",\"input\":\"x\",\"metadata\":{\"k\":\"v\"},"
                      "\"instructions\":\"i\",\"max_output_tokens\":64}";
    cJSON *o;
    const cJSON *outp, *it;

    (void)state;
    assert_int_equal(door_request(d, req, strlen(req), &chat, &len, &err), PX_OK);
    free(chat);
    out = run_reply(d, 200, "application/json", false, completion);
    o = cJSON_Parse(out);
    assert_non_null(o);
    assert_string_equal(pstr(o, "object", NULL), "response");
    assert_string_equal(pstr(o, "status", NULL), "completed");
    assert_string_equal(pstr(o, "model", NULL), "moa-gpt");
    assert_string_equal(pstr(o, "instructions", NULL), "i");
    assert_string_equal(pstr(o, "metadata", "k"), "v");
    assert_true(cJSON_IsFalse(path(o, "store", NULL)));
    assert_int_equal(path(o, "max_output_tokens", NULL)->valueint, 64);
    assert_int_equal(path(o, "usage", "input_tokens")->valueint, 25);
    assert_int_equal(path(o, "usage", "output_tokens")->valueint, 15);
    assert_int_equal(path(o, "usage", "total_tokens")->valueint, 40);
    outp = path(o, "output", NULL);
    assert_int_equal(cJSON_GetArraySize(outp), 2);
    it = cJSON_GetArrayItem(outp, 0);
    assert_string_equal(pstr(it, "type", NULL), "message");
    assert_string_equal(pstr(it, "role", NULL), "assistant");
    assert_string_equal(pstr(cJSON_GetArrayItem(path(it, "content", NULL), 0), "type", NULL),
                        "output_text");
    assert_string_equal(pstr(cJSON_GetArrayItem(path(it, "content", NULL), 0), "text", NULL),
                        "Let me check.");
    it = cJSON_GetArrayItem(outp, 1);
    assert_string_equal(pstr(it, "type", NULL), "function_call");
    assert_string_equal(pstr(it, "call_id", NULL), "call_1");
    assert_string_equal(pstr(it, "name", NULL), "get_weather");
    assert_string_equal(pstr(it, "arguments", NULL), "{\"location\":\"Paris\"}");
    assert_true(strncmp(pstr(it, "id", NULL), "fc_", 3) == 0);
    cJSON_Delete(o);
    free(out);
    door_free(d);

    /* length -> status incomplete, incomplete_details.reason max_output_tokens. */
    d = door_create(DOOR_RESPONSES);
    out = run_reply(d, 200, "application/json", false,
                    "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                    "\"x\"},\"finish_reason\":\"length\"}]}");
    o = cJSON_Parse(out);
    assert_string_equal(pstr(o, "status", NULL), "incomplete");
    assert_string_equal(pstr(o, "incomplete_details", "reason"), "max_output_tokens");
    cJSON_Delete(o);
    free(out);
    door_free(d);
}

/* ---- streams --------------------------------------------------------------------------------- */

static void test_anthropic_stream(void **state)
{
    struct door *d = door_create(DOOR_MESSAGES);
    struct px_error err;
    char *chat, *out;
    size_t len;
    const char *req = "{\"model\":\"claude-x\",\"max_tokens\":9,\"stream\":true,\"messages\":[]}";
    static const char *const want[] = {"message_start",       "ping",
                                       "content_block_start", "content_block_delta",
                                       "content_block_delta", "content_block_stop",
                                       "content_block_start", "content_block_delta",
                                       "content_block_delta", "content_block_stop",
                                       "message_delta",       "message_stop"};
    cJSON *evs;

    (void)state;
    assert_int_equal(door_request(d, req, strlen(req), &chat, &len, &err), PX_OK);
    free(chat);
    out = run_reply(d, 200, "text/event-stream", true, chunk_stream);
    evs = events(out);
    assert_int_equal(cJSON_GetArraySize(evs), 12);
    for (int i = 0; i < 12; i++)
        assert_string_equal(ev_name(evs, i), want[i]);
    /* The event name repeats as data.type, as in Anthropic's streams. */
    for (int i = 0; i < 12; i++)
        assert_string_equal(pstr(ev_data(evs, i), "type", NULL), want[i]);
    assert_string_equal(pstr(ev_data(evs, 0), "message", "model"), "claude-x");
    assert_string_equal(pstr(ev_data(evs, 0), "message", "role"), "assistant");
    assert_item_eq((path(ev_data(evs, 2), "content_block", NULL)),
                   "{\"type\":\"text\",\"text\":\"\"}");
    assert_string_equal(pstr(ev_data(evs, 3), "delta", "type"), "text_delta");
    assert_string_equal(pstr(ev_data(evs, 3), "delta", "text"), "Let me ");
    assert_int_equal(path(ev_data(evs, 6), "index", NULL)->valueint, 1);
    assert_item_eq((path(ev_data(evs, 6), "content_block", NULL)),
                   "{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\","
                   "\"input\":{}}");
    assert_string_equal(pstr(ev_data(evs, 7), "delta", "type"), "input_json_delta");
    assert_string_equal(pstr(ev_data(evs, 7), "delta", "partial_json"), "{\"location\":");
    assert_string_equal(pstr(ev_data(evs, 8), "delta", "partial_json"), "\"Paris\"}");
    assert_int_equal(path(ev_data(evs, 9), "index", NULL)->valueint, 1);
    assert_string_equal(pstr(ev_data(evs, 10), "delta", "stop_reason"), "tool_use");
    assert_int_equal(path(ev_data(evs, 10), "usage", "output_tokens")->valueint, 15);
    assert_int_equal(path(ev_data(evs, 10), "usage", "input_tokens")->valueint, 25);
    cJSON_Delete(evs);
    free(out);
    door_free(d);
}

static void test_responses_stream(void **state)
{
    struct door *d = door_create(DOOR_RESPONSES);
    struct px_error err;
    char *chat, *out;
    size_t len;
    const char *req = "{\"model\":\"gpt-x\",\"stream\":true,\"input\":\"x\"}";
    static const char *const want[] = {"response.created",
                                       "response.in_progress",
                                       NULL, /* the keep-alive comment */
                                       "response.output_item.added",
                                       "response.content_part.added",
                                       "response.output_text.delta",
                                       "response.output_text.delta",
                                       "response.output_text.done",
                                       "response.content_part.done",
                                       "response.output_item.done",
                                       "response.output_item.added",
                                       "response.function_call_arguments.delta",
                                       "response.function_call_arguments.delta",
                                       "response.function_call_arguments.done",
                                       "response.output_item.done",
                                       "response.completed"};
    const int n = (int)(sizeof(want) / sizeof(want[0]));
    cJSON *evs;
    int seq = 0;

    (void)state;
    assert_int_equal(door_request(d, req, strlen(req), &chat, &len, &err), PX_OK);
    free(chat);
    out = run_reply(d, 200, "text/event-stream", true, chunk_stream);
    evs = events(out);
    assert_int_equal(cJSON_GetArraySize(evs), n);
    for (int i = 0; i < n; i++) {
        if (!want[i]) {
            assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(evs, i), "comment")));
            continue;
        }
        assert_string_equal(ev_name(evs, i), want[i]);
        assert_string_equal(pstr(ev_data(evs, i), "type", NULL), want[i]);
        assert_int_equal(path(ev_data(evs, i), "sequence_number", NULL)->valueint, seq++);
    }
    assert_string_equal(pstr(ev_data(evs, 0), "response", "status"), "in_progress");
    assert_string_equal(pstr(ev_data(evs, 3), "item", "type"), "message");
    assert_string_equal(pstr(ev_data(evs, 5), "delta", NULL), "Let me ");
    assert_string_equal(pstr(ev_data(evs, 7), "text", NULL), "Let me check.");
    assert_string_equal(pstr(ev_data(evs, 10), "item", "type"), "function_call");
    assert_string_equal(pstr(ev_data(evs, 10), "item", "call_id"), "call_1");
    assert_string_equal(pstr(ev_data(evs, 10), "item", "name"), "get_weather");
    assert_int_equal(path(ev_data(evs, 10), "output_index", NULL)->valueint, 1);
    assert_string_equal(pstr(ev_data(evs, 13), "arguments", NULL), "{\"location\":\"Paris\"}");
    const cJSON *resp = path(ev_data(evs, 15), "response", NULL);
    assert_string_equal(pstr(resp, "status", NULL), "completed");
    assert_int_equal(cJSON_GetArraySize(path(resp, "output", NULL)), 2);
    assert_int_equal(path(resp, "usage", "output_tokens")->valueint, 15);
    assert_string_equal(pstr(resp, "id", NULL),
                        pstr(path(ev_data(evs, 0), "response", NULL), "id", NULL));
    cJSON_Delete(evs);
    free(out);
    door_free(d);
}

/* Tool-call fragments as different servers send them: OpenAI's (index, id only first), the id
 * repeated on every fragment, no index at all, two calls (index 0 and 1). Each call must
 * become exactly one tool_use block with its whole arguments. */
static void test_tool_call_variants(void **state)
{
    static const char *const streams[] = {
        /* id repeated on every fragment, no index */
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":"
        "{\"arguments\":\"1}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
        "data: [DONE]\n\n",
        /* two calls, OpenAI style, the second at index 1 */
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
        "{\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\","
        "\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n"
        "data: [DONE]\n\n",
        /* two calls both at index 0 with different ids */
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"b\","
        "\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n"
        "data: [DONE]\n\n",
    };
    static const int ncalls[] = {1, 2, 2};
    static const char *const args0[] = {"{\"x\":1}", "{\"x\":1}", "{\"x\":1}"};

    (void)state;
    for (int s = 0; s < 3; s++) {
        struct door *d = door_create(DOOR_MESSAGES);
        char *out = run_reply(d, 200, "text/event-stream", true, streams[s]);
        cJSON *evs = events(out);
        int starts = 0;
        char json0[64] = "";

        for (int i = 0; i < cJSON_GetArraySize(evs); i++) {
            if (strcmp(ev_name(evs, i), "content_block_start") == 0) {
                assert_string_equal(pstr(ev_data(evs, i), "content_block", "type"), "tool_use");
                starts++;
            }
            if (strcmp(ev_name(evs, i), "content_block_delta") == 0 &&
                path(ev_data(evs, i), "index", NULL)->valueint == 0)
                strncat(json0, pstr(ev_data(evs, i), "delta", "partial_json"),
                        sizeof(json0) - strlen(json0) - 1);
        }
        assert_int_equal(starts, ncalls[s]);
        assert_string_equal(json0, args0[s]);
        assert_string_equal(pstr(ev_data(evs, cJSON_GetArraySize(evs) - 2), "delta", "stop_reason"),
                            "tool_use");
        cJSON_Delete(evs);
        free(out);
        door_free(d);
    }
}

/* An upstream that ignores "stream" answers a complete chat.completion: the door replays it
 * as its own events (the client asked for a stream and gets one). */
static void test_stream_from_complete_answer(void **state)
{
    static const char *const reqs[] = {
        "{\"model\":\"m\",\"max_tokens\":9,\"stream\":true,\"messages\":[]}",
        "{\"model\":\"m\",\"stream\":true,\"input\":\"x\"}"};
    static const enum door_kind kinds[] = {DOOR_MESSAGES, DOOR_RESPONSES};
    static const char *const last[] = {"message_stop", "response.completed"};

    (void)state;
    for (int i = 0; i < 2; i++) {
        struct door *d = door_create(kinds[i]);
        struct px_error err;
        char *chat, *out, ct[64] = "application/json";
        size_t len;
        struct buf b;
        cJSON *evs;

        assert_int_equal(door_request(d, reqs[i], strlen(reqs[i]), &chat, &len, &err), PX_OK);
        free(chat);
        buf_init(&b, 0);
        door_begin(d, 200, ct, sizeof(ct), true);
        assert_string_equal(ct, "text/event-stream");
        door_feed(d, completion, strlen(completion), &b);
        door_end(d, &b);
        out = buf_take(&b, NULL);
        evs = events(out);
        assert_string_equal(ev_name(evs, cJSON_GetArraySize(evs) - 1), last[i]);
        assert_non_null(strstr(out, "Let me check."));
        assert_non_null(strstr(out, "get_weather"));
        if (i == 0) {
            assert_non_null(strstr(out, "\"stop_reason\":\"tool_use\""));
            assert_non_null(strstr(out, "\"output_tokens\":15"));
        } else {
            assert_non_null(strstr(out, "\"type\":\"function_call\""));
        }
        cJSON_Delete(evs);
        free(out);
        door_free(d);
    }
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void test_errors(void **state)
{
    static const struct {
        int status;
        const char *type;
    } map[] = {{400, "invalid_request_error"},
               {401, "authentication_error"},
               {403, "permission_error"},
               {404, "not_found_error"},
               {413, "request_too_large"},
               {429, "rate_limit_error"},
               {500, "api_error"},
               {502, "api_error"},
               {503, "overloaded_error"},
               {504, "timeout_error"}};
    const char *oai = "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\","
                      "\"param\":null,\"code\":\"rate_limit_exceeded\"}}";
    struct door *d = door_create(DOOR_MESSAGES);
    char *out, want[256];

    (void)state;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        out = run_reply(d, map[i].status, "application/json", false, oai);
        snprintf(want, sizeof(want),
                 "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"Rate limit "
                 "reached\"}}",
                 map[i].type);
        assert_json_eq(out, want);
        free(out);
        door_free(d);
        d = door_create(DOOR_MESSAGES);
    }
    /* A non-OpenAI body keeps its message; a streamed request's error status is buffered. */
    out = run_reply(d, 500, "application/json", true,
                    "{\"error\":\"TypeError\",\"message\":\"x is undefined\"}");
    assert_json_eq(out, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
                        "\"TypeError: x is undefined\"}}");
    free(out);
    door_free(d);

    /* Responses: the OpenAI shape stays as is (the openai SDK reads it). */
    d = door_create(DOOR_RESPONSES);
    out = run_reply(d, 429, "application/json", false, oai);
    assert_json_eq(out, oai);
    free(out);
    door_free(d);
}

static void test_inband_errors(void **state)
{
    const char *s = ": keep-alive\n\n"
                    "data: {\"error\":{\"message\":\"upstream went away\",\"type\":"
                    "\"server_error\",\"param\":null,\"code\":\"upstream_error\"}}\n\n"
                    "data: [DONE]\n\n";
    struct door *d = door_create(DOOR_MESSAGES);
    char *out = run_reply(d, 200, "text/event-stream", true, s);
    cJSON *evs = events(out);

    (void)state;
    assert_int_equal(cJSON_GetArraySize(evs), 3); /* message_start, ping, error */
    assert_string_equal(ev_name(evs, 0), "message_start");
    assert_string_equal(ev_name(evs, 1), "ping");
    assert_string_equal(ev_name(evs, 2), "error");
    assert_item_eq((ev_data(evs, 2)),
                   "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
                   "\"upstream went away\"}}");
    cJSON_Delete(evs);
    free(out);
    door_free(d);

    d = door_create(DOOR_RESPONSES);
    out = run_reply(d, 200, "text/event-stream", true, s);
    evs = events(out);
    assert_int_equal(cJSON_GetArraySize(evs), 4); /* created, in_progress, comment, error */
    assert_string_equal(ev_name(evs, 3), "error");
    assert_string_equal(pstr(ev_data(evs, 3), "message", NULL), "upstream went away");
    assert_string_equal(pstr(ev_data(evs, 3), "code", NULL), "upstream_error");
    cJSON_Delete(evs);
    free(out);
    door_free(d);
}

static void test_models_list(void **state)
{
    struct door *d = door_create(DOOR_MODELS);
    char *out = run_reply(d, 200, "application/json", false,
                          "{\"object\":\"list\",\"data\":[{\"id\":\"a\",\"object\":\"model\","
                          "\"created\":86400,\"owned_by\":\"o\"},{\"id\":\"b\",\"object\":"
                          "\"model\",\"created\":0,\"owned_by\":\"o\"}]}");
    cJSON *o = cJSON_Parse(out);
    const cJSON *m = cJSON_GetArrayItem(path(o, "data", NULL), 0);

    (void)state;
    assert_string_equal(pstr(m, "type", NULL), "model");
    assert_string_equal(pstr(m, "display_name", NULL), "a");
    assert_string_equal(pstr(m, "created_at", NULL), "1970-01-02T00:00:00Z");
    assert_true(cJSON_IsFalse(path(o, "has_more", NULL)));
    assert_string_equal(pstr(o, "first_id", NULL), "a");
    assert_string_equal(pstr(o, "last_id", NULL), "b");
    cJSON_Delete(o);
    free(out);
    door_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anthropic_request),
        cmocka_unit_test(test_responses_request),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_count_tokens),
        cmocka_unit_test(test_anthropic_reply),
        cmocka_unit_test(test_responses_reply),
        cmocka_unit_test(test_anthropic_stream),
        cmocka_unit_test(test_responses_stream),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_inband_errors),
        cmocka_unit_test(test_models_list),
        cmocka_unit_test(test_tool_call_variants),
        cmocka_unit_test(test_stream_from_complete_answer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
