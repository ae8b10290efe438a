/* door_responses.c: the OpenAI Responses door: a Responses request as chat completions, a
 * chat.completion as a response object, stream events. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "door_internal.h"
#include "internal.h"

/* ---- request ------------------------------------------------------------------------------ */

static const char *const resp_text_types[] = {"input_text", "output_text", "text", "refusal", NULL};

static int resp_message(cJSON *out, const cJSON *item, struct px_error *err)
{
    const char *role = str(item, "role");
    const cJSON *c = get(item, "content"), *p;
    cJSON *m, *parts;
    struct buf text;
    bool only_text = true;

    if (!role || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
                  strcmp(role, "system") != 0 && strcmp(role, "developer") != 0))
        return px_fail(err, PX_EINVAL, "input",
                       "input messages need role user, assistant, system or developer");
    m = cJSON_CreateObject();
    /* developer -> system: most chat-completions upstreams know only system. */
    cJSON_AddStringToObject(m, "role", strcmp(role, "developer") == 0 ? "system" : role);
    if (cJSON_IsString(c)) {
        cJSON_AddStringToObject(m, "content", c->valuestring);
        cJSON_AddItemToArray(out, m);
        return PX_OK;
    }
    if (!cJSON_IsArray(c)) {
        cJSON_Delete(m);
        return px_fail(err, PX_EINVAL, "input", "message content must be a string or an array");
    }
    buf_init(&text, 0);
    parts = cJSON_CreateArray();
    cJSON_ArrayForEach(p, c)
    {
        const char *t = str(p, "type");

        if (is_text_type(t, resp_text_types)) {
            const char *s = str(p, "text") ? str(p, "text") : str(p, "refusal");
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "type", "text");
            cJSON_AddStringToObject(o, "text", s ? s : "");
            cJSON_AddItemToArray(parts, o);
            join_text(&text, s ? s : "");
        } else if (t && strcmp(t, "input_image") == 0 && str(p, "image_url")) {
            cJSON *o = cJSON_CreateObject();
            cJSON *iu;

            cJSON_AddStringToObject(o, "type", "image_url");
            iu = cJSON_AddObjectToObject(o, "image_url");
            cJSON_AddStringToObject(iu, "url", str(p, "image_url"));
            copy_field(iu, "detail", p, "detail");
            cJSON_AddItemToArray(parts, o);
            only_text = false;
        } else {
            cJSON_Delete(parts);
            cJSON_Delete(m);
            buf_free(&text);
            return px_fail(err, PX_EINVAL, "input",
                           "content parts of type '%.40s' are not supported by this proxy "
                           "(input_text, input_image with image_url, output_text)",
                           t ? t : "?");
        }
    }
    if (only_text || strcmp(role, "user") != 0) {
        cJSON_AddStringToObject(m, "content", buf_cstr(&text));
        cJSON_Delete(parts);
    } else {
        cJSON_AddItemToObject(m, "content", parts);
    }
    buf_free(&text);
    cJSON_AddItemToArray(out, m);
    return PX_OK;
}

static int resp_input(cJSON *out, const cJSON *input, struct px_error *err)
{
    const cJSON *item;
    cJSON *last_calls = NULL; /* tool_calls of the assistant message function_calls join */

    if (cJSON_IsString(input)) {
        cJSON *m = cJSON_CreateObject();

        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(out, m);
        return PX_OK;
    }
    if (!cJSON_IsArray(input))
        return px_fail(err, PX_EINVAL, "input", "'input' must be a string or an array of items");
    cJSON_ArrayForEach(item, input)
    {
        const char *t = str(item, "type");
        int rc;

        if (!t || strcmp(t, "message") == 0) {
            if ((rc = resp_message(out, item, err)) < 0)
                return rc;
            last_calls = NULL;
            continue;
        }
        if (strcmp(t, "function_call") == 0) {
            cJSON *c = cJSON_CreateObject(), *f;

            if (!last_calls) {
                cJSON *prev = cJSON_GetArrayItem(out, cJSON_GetArraySize(out) - 1);
                const char *pr = str(prev, "role");

                if (pr && strcmp(pr, "assistant") == 0 && !get(prev, "tool_calls")) {
                    last_calls = cJSON_AddArrayToObject(prev, "tool_calls");
                } else {
                    cJSON *m = cJSON_CreateObject();

                    cJSON_AddStringToObject(m, "role", "assistant");
                    cJSON_AddNullToObject(m, "content");
                    last_calls = cJSON_AddArrayToObject(m, "tool_calls");
                    cJSON_AddItemToArray(out, m);
                }
            }
            cJSON_AddStringToObject(c, "id", str(item, "call_id") ? str(item, "call_id") : "");
            cJSON_AddStringToObject(c, "type", "function");
            f = cJSON_AddObjectToObject(c, "function");
            cJSON_AddStringToObject(f, "name", str(item, "name") ? str(item, "name") : "");
            cJSON_AddStringToObject(f, "arguments",
                                    str(item, "arguments") ? str(item, "arguments") : "{}");
            cJSON_AddItemToArray(last_calls, c);
            continue;
        }
        last_calls = NULL;
        if (strcmp(t, "function_call_output") == 0) {
            cJSON *m = cJSON_CreateObject();
            const cJSON *o = get(item, "output");
            struct buf b;

            buf_init(&b, 0);
            if (cJSON_IsString(o)) {
                buf_puts(&b, o->valuestring);
            } else {
                const cJSON *p;

                cJSON_ArrayForEach(p, o)
                {
                    if (str(p, "text"))
                        join_text(&b, str(p, "text"));
                }
            }
            cJSON_AddStringToObject(m, "role", "tool");
            cJSON_AddStringToObject(m, "tool_call_id",
                                    str(item, "call_id") ? str(item, "call_id") : "");
            cJSON_AddStringToObject(m, "content", buf_cstr(&b));
            buf_free(&b);
            cJSON_AddItemToArray(out, m);
        } else if (strcmp(t, "reasoning") == 0) {
            continue; /* encrypted reasoning of another model: not for the upstream */
        } else if (strcmp(t, "item_reference") == 0) {
            return px_fail(err, PX_EINVAL, "input",
                           "item_reference is not supported: this proxy stores no responses "
                           "(store: false); send the items themselves");
        } else {
            return px_fail(err, PX_EINVAL, "input",
                           "input items of type '%.40s' are not supported by this proxy", t);
        }
    }
    return PX_OK;
}

static int resp_tools(cJSON *chat, const cJSON *req, struct px_error *err)
{
    const cJSON *tools = get(req, "tools"), *t, *tc = get(req, "tool_choice");

    if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0) {
        cJSON *arr = cJSON_AddArrayToObject(chat, "tools");

        cJSON_ArrayForEach(t, tools)
        {
            const char *type = str(t, "type");
            cJSON *o, *f;

            if (!type || strcmp(type, "function") != 0 || !str(t, "name"))
                return px_fail(err, PX_EINVAL, "tools",
                               "only function tools are supported by this proxy (not '%.40s')",
                               type ? type : "?");
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "function");
            f = cJSON_AddObjectToObject(o, "function");
            cJSON_AddStringToObject(f, "name", str(t, "name"));
            copy_field(f, "description", t, "description");
            copy_field(f, "parameters", t, "parameters");
            copy_field(f, "strict", t, "strict");
            cJSON_AddItemToArray(arr, o);
        }
    } else if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools)) {
        return px_fail(err, PX_EINVAL, "tools", "'tools' must be an array");
    }
    if (cJSON_IsString(tc)) {
        cJSON_AddStringToObject(chat, "tool_choice", tc->valuestring);
    } else if (cJSON_IsObject(tc)) {
        const char *type = str(tc, "type");
        cJSON *o;

        if (!type || strcmp(type, "function") != 0 || !str(tc, "name"))
            return px_fail(err, PX_EINVAL, "tool_choice",
                           "tool_choice must be none, auto, required or {type: function, name}");
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "function"), "name", str(tc, "name"));
        cJSON_AddItemToObject(chat, "tool_choice", o);
    }
    if (cJSON_IsBool(get(req, "parallel_tool_calls")))
        copy_field(chat, "parallel_tool_calls", req, "parallel_tool_calls");
    return PX_OK;
}

static int resp_format(cJSON *chat, const cJSON *req, struct px_error *err)
{
    const cJSON *f = get(get(req, "text"), "format");
    const char *type = str(f, "type");

    if (!f || !type || strcmp(type, "text") == 0)
        return PX_OK;
    if (strcmp(type, "json_object") == 0) {
        cJSON_AddStringToObject(cJSON_AddObjectToObject(chat, "response_format"), "type",
                                "json_object");
        return PX_OK;
    }
    if (strcmp(type, "json_schema") == 0) {
        cJSON *rf = cJSON_AddObjectToObject(chat, "response_format");
        cJSON *js;

        cJSON_AddStringToObject(rf, "type", "json_schema");
        js = cJSON_AddObjectToObject(rf, "json_schema");
        cJSON_AddStringToObject(js, "name", str(f, "name") ? str(f, "name") : "response");
        copy_field(js, "description", f, "description");
        copy_field(js, "schema", f, "schema");
        copy_field(js, "strict", f, "strict");
        return PX_OK;
    }
    return px_fail(err, PX_EINVAL, "text.format", "unknown text.format type '%.40s'", type);
}

int door__resp_request(struct door *d, const cJSON *req, cJSON *chat, struct px_error *err)
{
    const cJSON *v;
    cJSON *out;
    int rc;
    static const char *const echoed[] = {"instructions", "max_output_tokens",
                                         "metadata",     "parallel_tool_calls",
                                         "temperature",  "top_p",
                                         "tool_choice",  "tools",
                                         "text",         "user",
                                         "reasoning",    NULL};

    v = get(req, "previous_response_id");
    if (v && !cJSON_IsNull(v))
        return px_fail(err, PX_EINVAL, "previous_response_id",
                       "previous_response_id is not supported: this proxy stores no responses "
                       "(every response is store: false). Send the whole conversation in "
                       "'input' instead.");
    v = get(req, "conversation");
    if (v && !cJSON_IsNull(v))
        return px_fail(err, PX_EINVAL, "conversation",
                       "conversations are not supported: this proxy stores no state");
    if (cJSON_IsTrue(get(req, "background")))
        return px_fail(err, PX_EINVAL, "background", "background responses are not supported");
    if (get(req, "prompt") && !cJSON_IsNull(get(req, "prompt")))
        return px_fail(err, PX_EINVAL, "prompt", "stored prompts are not supported");
    out = cJSON_AddArrayToObject(chat, "messages");
    v = get(req, "instructions");
    if (cJSON_IsString(v)) {
        cJSON *m = cJSON_CreateObject();

        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", v->valuestring);
        cJSON_AddItemToArray(out, m);
    }
    if ((rc = resp_input(out, get(req, "input"), err)) < 0)
        return rc;
    if ((rc = door__number_field(chat, "max_tokens", req, "max_output_tokens", err)) < 0 ||
        (rc = door__number_field(chat, "temperature", req, "temperature", err)) < 0 ||
        (rc = door__number_field(chat, "top_p", req, "top_p", err)) < 0)
        return rc;
    if (str(get(req, "reasoning"), "effort"))
        cJSON_AddStringToObject(chat, "reasoning_effort", str(get(req, "reasoning"), "effort"));
    if (str(req, "user"))
        copy_field(chat, "user", req, "user");
    if ((rc = resp_tools(chat, req, err)) < 0 || (rc = resp_format(chat, req, err)) < 0)
        return rc;
    d->echo = cJSON_CreateObject();
    for (const char *const *k = echoed; *k; k++)
        copy_field(d->echo, *k, req, *k);
    return PX_OK;
}

/* ---- complete replies --------------------------------------------------------------------- */

static cJSON *resp_usage(const struct door *d)
{
    cJSON *u = cJSON_CreateObject();

    cJSON_AddNumberToObject(u, "input_tokens", (double)d->in_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "input_tokens_details"), "cached_tokens", 0);
    cJSON_AddNumberToObject(u, "output_tokens", (double)d->out_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "output_tokens_details"), "reasoning_tokens",
                            (double)d->reasoning_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(d->in_tokens + d->out_tokens));
    return u;
}

/* The Responses object; 'output' is taken (NULL: an empty array). */
static cJSON *resp_object(const struct door *d, const char *status, cJSON *output, bool with_usage)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *e = d->echo;
    static const char *const echoed[] = {
        "instructions", "max_output_tokens", "temperature", "top_p", "user", NULL};

    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)d->created);
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddNullToObject(o, "error");
    if (strcmp(status, "incomplete") == 0) {
        cJSON *inc = cJSON_AddObjectToObject(o, "incomplete_details");

        cJSON_AddStringToObject(inc, "reason",
                                d->finish && strcmp(d->finish, "content_filter") == 0
                                    ? "content_filter"
                                    : "max_output_tokens");
    } else {
        cJSON_AddNullToObject(o, "incomplete_details");
    }
    for (const char *const *k = echoed; *k; k++) {
        const cJSON *v = get(e, *k);

        cJSON_AddItemToObject(o, *k, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
    }
    cJSON_AddStringToObject(o, "model", d->model ? d->model : "");
    cJSON_AddItemToObject(o, "output", output ? output : cJSON_CreateArray());
    cJSON_AddItemToObject(o, "parallel_tool_calls",
                          get(e, "parallel_tool_calls")
                              ? cJSON_Duplicate(get(e, "parallel_tool_calls"), 1)
                              : cJSON_CreateTrue());
    cJSON_AddNullToObject(o, "previous_response_id");
    cJSON_AddItemToObject(o, "reasoning",
                          get(e, "reasoning") ? cJSON_Duplicate(get(e, "reasoning"), 1)
                                              : cJSON_CreateObject());
    cJSON_AddFalseToObject(o, "store");
    cJSON_AddItemToObject(o, "text",
                          get(e, "text") ? cJSON_Duplicate(get(e, "text"), 1)
                                         : cJSON_Parse("{\"format\":{\"type\":\"text\"}}"));
    cJSON_AddItemToObject(o, "tool_choice",
                          get(e, "tool_choice") ? cJSON_Duplicate(get(e, "tool_choice"), 1)
                                                : cJSON_CreateString("auto"));
    cJSON_AddItemToObject(
        o, "tools", get(e, "tools") ? cJSON_Duplicate(get(e, "tools"), 1) : cJSON_CreateArray());
    cJSON_AddStringToObject(o, "truncation", "disabled");
    cJSON_AddItemToObject(o, "usage", with_usage ? resp_usage(d) : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "metadata",
                          get(e, "metadata") ? cJSON_Duplicate(get(e, "metadata"), 1)
                                             : cJSON_CreateObject());
    return o;
}

static const char *resp_status(const char *finish)
{
    if (finish && (strcmp(finish, "length") == 0 || strcmp(finish, "content_filter") == 0))
        return "incomplete";
    return "completed";
}

static cJSON *resp_message_item(const char *id, const char *text, const char *status)
{
    cJSON *it = cJSON_CreateObject();
    cJSON *parts, *p;

    cJSON_AddStringToObject(it, "id", id);
    cJSON_AddStringToObject(it, "type", "message");
    cJSON_AddStringToObject(it, "status", status);
    cJSON_AddStringToObject(it, "role", "assistant");
    parts = cJSON_AddArrayToObject(it, "content");
    if (text) {
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "output_text");
        cJSON_AddStringToObject(p, "text", text);
        cJSON_AddArrayToObject(p, "annotations");
        cJSON_AddArrayToObject(p, "logprobs");
        cJSON_AddItemToArray(parts, p);
    }
    return it;
}

static cJSON *resp_call_item(const char *id, const char *call_id, const char *name,
                             const char *args, const char *status)
{
    cJSON *it = cJSON_CreateObject();

    cJSON_AddStringToObject(it, "id", id);
    cJSON_AddStringToObject(it, "type", "function_call");
    cJSON_AddStringToObject(it, "status", status);
    cJSON_AddStringToObject(it, "arguments", args);
    cJSON_AddStringToObject(it, "call_id", call_id);
    cJSON_AddStringToObject(it, "name", name);
    return it;
}

char *door__resp_response(struct door *d, const cJSON *root, size_t *len)
{
    const cJSON *ch = door__first_choice(root), *m = get(ch, "message"), *tc;
    cJSON *output = cJSON_CreateArray(), *o;
    const char *text = str(m, "content");
    char id[48];
    char *s;

    door__take_usage(d, get(root, "usage"));
    d->finish = door__static_finish(str(ch, "finish_reason"));
    if (text && *text) {
        px_random_id(id, sizeof(id), "msg_", 2);
        cJSON_AddItemToArray(output, resp_message_item(id, text, "completed"));
    }
    cJSON_ArrayForEach(tc, get(m, "tool_calls"))
    {
        const cJSON *f = get(tc, "function");

        px_random_id(id, sizeof(id), "fc_", 2);
        cJSON_AddItemToArray(output, resp_call_item(id, str(tc, "id") ? str(tc, "id") : "",
                                                    str(f, "name") ? str(f, "name") : "",
                                                    str(f, "arguments") ? str(f, "arguments") : "",
                                                    "completed"));
    }
    o = resp_object(d, resp_status(d->finish), output, true);
    s = door__print(o, len);
    cJSON_Delete(o);
    return s;
}

/* ---- stream events ------------------------------------------------------------------------ */

void door__resp_start(struct door *d, struct buf *out)
{
    cJSON *e = cJSON_CreateObject();

    cJSON_AddItemToObject(e, "response", resp_object(d, "in_progress", NULL, false));
    door__emit(d, out, "response.created", e);
    e = cJSON_CreateObject();
    cJSON_AddItemToObject(e, "response", resp_object(d, "in_progress", NULL, false));
    door__emit(d, out, "response.in_progress", e);
}

static cJSON *item_event(const char *item_id, int output_index)
{
    cJSON *e = cJSON_CreateObject();

    if (item_id)
        cJSON_AddStringToObject(e, "item_id", item_id);
    cJSON_AddNumberToObject(e, "output_index", output_index);
    return e;
}

static cJSON *text_part(const char *text)
{
    cJSON *p = cJSON_CreateObject();

    cJSON_AddStringToObject(p, "type", "output_text");
    cJSON_AddStringToObject(p, "text", text);
    cJSON_AddArrayToObject(p, "annotations");
    cJSON_AddArrayToObject(p, "logprobs");
    return p;
}

static void resp_close_item(struct door *d, struct buf *out)
{
    cJSON *e, *item;

    if (d->open < 0)
        return;
    if (d->open == 0) {
        const char *text = buf_cstr(&d->text);

        e = item_event(d->msg_item, d->msg_index);
        cJSON_AddNumberToObject(e, "content_index", 0);
        cJSON_AddStringToObject(e, "text", text);
        cJSON_AddArrayToObject(e, "logprobs");
        door__emit(d, out, "response.output_text.done", e);
        e = item_event(d->msg_item, d->msg_index);
        cJSON_AddNumberToObject(e, "content_index", 0);
        cJSON_AddItemToObject(e, "part", text_part(text));
        door__emit(d, out, "response.content_part.done", e);
        item = resp_message_item(d->msg_item, text, "completed");
    } else {
        struct tcall *t = &d->tools[d->open - 1];

        e = item_event(t->item_id, t->index);
        cJSON_AddStringToObject(e, "arguments", buf_cstr(&t->args));
        door__emit(d, out, "response.function_call_arguments.done", e);
        item = resp_call_item(t->item_id, t->id ? t->id : "", t->name ? t->name : "",
                              buf_cstr(&t->args), "completed");
    }
    if (!d->output)
        d->output = cJSON_CreateArray();
    cJSON_AddItemToArray(d->output, cJSON_Duplicate(item, 1));
    e = item_event(NULL, d->open == 0 ? d->msg_index : d->tools[d->open - 1].index);
    cJSON_AddItemToObject(e, "item", item);
    door__emit(d, out, "response.output_item.done", e);
    d->open = -1;
}

void door__resp_text(struct door *d, struct buf *out, const char *text)
{
    cJSON *e;

    if (d->open != 0) {
        resp_close_item(d, out);
        px_random_id(d->msg_item, sizeof(d->msg_item), "msg_", 2);
        d->msg_index = d->next_index++;
        buf_reset(&d->text);
        e = item_event(NULL, d->msg_index);
        cJSON_AddItemToObject(e, "item", resp_message_item(d->msg_item, NULL, "in_progress"));
        door__emit(d, out, "response.output_item.added", e);
        e = item_event(d->msg_item, d->msg_index);
        cJSON_AddNumberToObject(e, "content_index", 0);
        cJSON_AddItemToObject(e, "part", text_part(""));
        door__emit(d, out, "response.content_part.added", e);
        d->open = 0;
    }
    buf_puts(&d->text, text);
    e = item_event(d->msg_item, d->msg_index);
    cJSON_AddNumberToObject(e, "content_index", 0);
    cJSON_AddStringToObject(e, "delta", text);
    cJSON_AddArrayToObject(e, "logprobs");
    door__emit(d, out, "response.output_text.delta", e);
}

void door__resp_tool_start(struct door *d, struct buf *out, int k)
{
    struct tcall *t = &d->tools[k];
    cJSON *e;

    resp_close_item(d, out);
    px_random_id(t->item_id, sizeof(t->item_id), "fc_", 2);
    t->index = d->next_index++;
    e = item_event(NULL, t->index);
    cJSON_AddItemToObject(
        e, "item",
        resp_call_item(t->item_id, t->id ? t->id : "", t->name ? t->name : "", "", "in_progress"));
    door__emit(d, out, "response.output_item.added", e);
    d->open = 1 + k;
}

void door__resp_tool_args(struct door *d, struct buf *out, int k, const char *frag)
{
    cJSON *e;

    if (d->open != 1 + k)
        return;
    e = item_event(d->tools[k].item_id, d->tools[k].index);
    cJSON_AddStringToObject(e, "delta", frag);
    door__emit(d, out, "response.function_call_arguments.delta", e);
}

void door__resp_finish(struct door *d, struct buf *out)
{
    cJSON *e = cJSON_CreateObject();
    cJSON *output;

    resp_close_item(d, out);
    output = d->output ? d->output : cJSON_CreateArray();
    d->output = NULL;
    const char *st = resp_status(d->finish);
    cJSON_AddItemToObject(e, "response", resp_object(d, st, output, true));
    door__emit(d, out, strcmp(st, "incomplete") == 0 ? "response.incomplete" : "response.completed",
               e);
}
