/* json.c: structured output that holds even when the upstream ignores response_format. The
 * answer call carries the client's response_format; its text (a ```json fence stripped) is
 * checked: a JSON object for json_object, a JSON value valid for json_schema.schema
 * (src/jsonschema.c) for json_schema. A request without a structured response_format asks for
 * nothing to hold: one answer call, returned as it is. An invalid answer is
 * re-asked in the same conversation with the problems found (at most json_max_retries more
 * calls, one at a time); the final answer is valid JSON text, or the request fails with 502
 * invalid_structured_output.
 *
 * Last in a pipeline ("moa&json-x") the previous step's answer is checked first and returned
 * unchanged when valid (no call); otherwise the upstream is asked to write that answer in the
 * required format, with the problems found, and re-asked as above.
 *
 * The answer is not streamed token by token (it is only sent once valid). Request fields: every
 * client field reaches the answer calls (response_format included); tools are not carried. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "jsonschema.h"
#include "log.h"

#define JSON_MAX_ERRORS 8

struct json_check {
    const char *type; /* "json_object", "json_schema", or NULL (nothing to check) */
    struct jsonschema *schema;
    const char *format; /* the requirement, for prompts */
};

static void schema_free(void *p)
{
    jsonschema_destroy(p);
}

/* The JSON inside a reply: the content of its first ``` fence if it has one, trimmed. */
static const char *strip_fence(struct arena *a, const char *text)
{
    const char *s = strstr(text, "```");
    const char *e;

    if (s) {
        s += 3;
        s += strcspn(s, "\n"); /* the fence's language tag */
        e = strstr(s, "```");
        if (!e)
            e = s + strlen(s);
    } else {
        s = text;
        e = text + strlen(text);
    }
    while (s < e && strchr(" \t\r\n", *s))
        s++;
    while (e > s && strchr(" \t\r\n", e[-1]))
        e--;
    return arena_strndup(a, s, (size_t)(e - s));
}

static void json_free(void *p)
{
    cJSON_Delete(p);
}

/* Checks a reply: returns NULL when valid (*clean set to the JSON text), else the problems as
 * "- ..." lines (in 'a'). */
static const char *check_reply(struct arena *a, const struct json_check *jc, const char *text,
                               const char **clean)
{
    const char *j = strip_fence(a, text ? text : "");
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(j, &end, 1);
    struct jsonschema_error errs[JSON_MAX_ERRORS];
    struct buf b;
    int n;
    const char *res;

    *clean = j;
    if (!v) {
        size_t at = end ? (size_t)(end - j) : 0;

        return arena_printf(a, "- the reply is not valid JSON (error near byte %zu)", at);
    }
    arena_defer(a, json_free, v);
    if (!jc->schema)
        return cJSON_IsObject(v) ? NULL : "- the reply must be a JSON object";
    n = jsonschema_validate(jc->schema, v, errs, JSON_MAX_ERRORS);
    if (n == 0)
        return NULL;
    buf_init(&b, 0);
    for (int i = 0; i < n && i < JSON_MAX_ERRORS; i++)
        buf_printf(&b, "%s- at %s: %s", i ? "\n" : "", errs[i].path, errs[i].message);
    if (n > JSON_MAX_ERRORS)
        buf_printf(&b, "\n- and %d more", n - JSON_MAX_ERRORS);
    res = arena_strndup(a, buf_cstr(&b), b.len);
    buf_free(&b);
    return res;
}

/* Reads the request's requirement. PX_OK, or PX_EINVAL for a schema that cannot be used. */
static int json_setup(struct approach_ctx *ctx, struct json_check *jc)
{
    const cJSON *schema = NULL;
    const char *type = chat_response_format(ctx->req, &schema);
    char err[256];
    char *s;

    memset(jc, 0, sizeof(*jc));
    if (!type || strcmp(type, "text") == 0)
        return PX_OK;
    jc->type = strcmp(type, "json_schema") == 0 ? "json_schema" : "json_object";
    jc->format = "a JSON object";
    if (strcmp(jc->type, "json_schema") != 0 || !schema)
        return PX_OK;
    jc->schema = jsonschema_create(schema, err, sizeof(err));
    if (!jc->schema)
        return px_fail(ctx->err, PX_EINVAL, "response_format",
                       "response_format.json_schema.schema cannot be used: %s", err);
    arena_defer(ctx->arena, schema_free, jc->schema);
    s = cJSON_PrintUnformatted(schema);
    jc->format = arena_printf(ctx->arena, "a JSON value valid for this JSON Schema: %s", s);
    cJSON_free(s);
    return PX_OK;
}

static int json_run(struct approach_ctx *ctx, struct chat_result *out)
{
    struct json_check jc;
    int retries = (int)approach_opt(ctx, "json_max_retries");
    struct llm_msg *msgs;
    size_t nmsgs;
    const char *clean = NULL, *problems = NULL;
    int rc = json_setup(ctx, &jc);

    if (rc < 0)
        return rc;
    if (!jc.type) { /* nothing asked for: one answer, as it is */
        struct llm_choice c;
        struct llm_params p = llm_params_default();

        nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
        if ((rc = llm_final(ctx, msgs, nmsgs, &p, "json/answer", &c)) < 0)
            return rc;
        out->text = c.text;
        out->logprobs = c.logprobs;
        out->finish_reason = c.finish_reason && *c.finish_reason ? c.finish_reason : "stop";
        return PX_OK;
    }
    if (ctx->req->prev_answer) { /* after an answering step: its answer may do as it is */
        problems = check_reply(ctx->arena, &jc, ctx->req->prev_answer, &clean);
        if (!problems) {
            out->text = clean;
            out->finish_reason = "stop";
            return PX_OK;
        }
        nmsgs = llm_msgs2(ctx, chat_system(ctx->arena, ctx->req),
                          approach_prompt(ctx, "json/reformat", "format", jc.format, "errors",
                                          problems, "answer", ctx->req->prev_answer, NULL),
                          &msgs);
    } else {
        nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    }
    for (int round = 0; round <= retries; round++) {
        struct llm_call call = {0};
        const struct llm_choice *c;

        call.msgs = msgs;
        call.nmsgs = nmsgs;
        call.params = llm_params_default();
        call.params.answer = true;
        call.stage = round == 0 ? "json/answer" : "json/retry";
        rc = llm_batch(ctx, &call, 1);
        if (rc < 0)
            return rc;
        c = &call.reply.choices[0];
        problems = check_reply(ctx->arena, &jc, c->text, &clean);
        if (!problems) {
            out->text = clean;
            out->finish_reason = "stop";
            out->logprobs = strcmp(clean, c->text) == 0 ? c->logprobs : NULL;
            return PX_OK;
        }
        log_at(LOG_INFO, ctx->req_id, "json: attempt %d is not valid %s", round + 1, jc.type);
        if (round == retries)
            break;
        /* The same conversation, the invalid reply, and what is wrong with it. */
        struct llm_msg *m = arena_calloc(ctx->arena, nmsgs + 2, sizeof(*m));

        memcpy(m, msgs, nmsgs * sizeof(*m));
        m[nmsgs].role = "assistant";
        m[nmsgs].content = c->text;
        m[nmsgs + 1].role = "user";
        m[nmsgs + 1].content =
            approach_prompt(ctx, "json/retry", "format", jc.format, "errors", problems, NULL);
        msgs = m;
        nmsgs += 2;
    }
    rc = px_fail(ctx->err, PX_EUPSTREAM, "response_format",
                 "the upstream's answer is not valid %s after %d attempts; the last one: %.300s",
                 jc.type, retries + 1, problems);
    snprintf(ctx->err->err_code, sizeof(ctx->err->err_code), "invalid_structured_output");
    return rc;
}

static const struct approach_option json_options[] = {
    {.name = "json_max_retries",
     .def = 2,
     .min = 0,
     .max = 10,
     .integer = true,
     .help = "json: re-asks of an answer that is not valid for response_format"},
    {0},
};

const struct approach approach_json = {
    .slug = "json",
    .run = json_run,
    .prompts = (const char *const[]){"json/retry", "json/reformat", NULL},
    .options = json_options,
    .summary = "Structured output: the answer is validated against response_format (json_object "
               "or json_schema) and re-asked with the problems found until valid, else 502",
    .calls = 1,
    .rounds = 1,
    .tools = false,
    .response_format = true,
};
