/* sse.c: incremental parser of an upstream chat-completion SSE stream (data: lines). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SSE_MAX_LINE (4u << 20)

struct sse_parser {
    struct buf line; /* a partial line */
    struct buf text; /* all content deltas of choice 0 */
    char finish[32];
    char error[512];
    struct usage usage;
    bool done;
    bool bad;
};

struct sse_parser *sse_parser_create(void)
{
    struct sse_parser *p = xcalloc(1, sizeof(*p));

    buf_init(&p->line, SSE_MAX_LINE);
    buf_init(&p->text, PX_MAX_UPSTREAM_REPLY);
    return p;
}

void sse_parser_destroy(struct sse_parser *p)
{
    if (!p)
        return;
    buf_free(&p->line);
    buf_free(&p->text);
    free(p);
}

static void data_line(struct sse_parser *p, const char *d, size_t len, xfer_delta_fn *on_delta,
                      void *sink)
{
    cJSON *root, *choices, *c0, *delta, *content, *fr, *err;

    while (len && (*d == ' '))
        d++, len--;
    while (len && (d[len - 1] == ' ' || d[len - 1] == '\t'))
        len--;
    if (len == 0) /* an empty data line carries nothing */
        return;
    if (len == 6 && memcmp(d, "[DONE]", 6) == 0) {
        p->done = true;
        return;
    }
    root = cJSON_ParseWithLength(d, len);
    if (!root) {
        p->bad = true;
        return;
    }
    err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");

        snprintf(p->error, sizeof(p->error), "%s",
                 cJSON_IsString(m) ? m->valuestring : "upstream stream error");
    }
    llm_usage_parse(cJSON_GetObjectItemCaseSensitive(root, "usage"), &p->usage);
    choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    cJSON_ArrayForEach(c0, choices)
    {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(c0, "index");

        if (cJSON_IsNumber(idx) && idx->valuedouble != 0)
            continue;
        delta = cJSON_GetObjectItemCaseSensitive(c0, "delta");
        content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content) && content->valuestring[0]) {
            size_t n = strlen(content->valuestring);

            if (buf_append(&p->text, content->valuestring, n) < 0)
                p->bad = true;
            else if (on_delta)
                on_delta(sink, content->valuestring, n);
        }
        fr = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
        if (cJSON_IsString(fr))
            snprintf(p->finish, sizeof(p->finish), "%s", fr->valuestring);
    }
    cJSON_Delete(root);
}

int sse_parser_feed(struct sse_parser *p, const char *data, size_t len, xfer_delta_fn *on_delta,
                    void *sink)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;

        if (buf_append(&p->line, data, take) < 0) {
            p->bad = true;
            return -1;
        }
        if (!nl)
            break;
        data += take + 1;
        len -= take + 1;
        /* A complete line. */
        const char *l = buf_cstr(&p->line);
        size_t ll = p->line.len;
        if (ll && l[ll - 1] == '\r')
            ll--;
        if (ll >= 5 && memcmp(l, "data:", 5) == 0)
            data_line(p, l + 5, ll - 5, on_delta, sink);
        buf_reset(&p->line);
    }
    return p->bad ? -1 : 0;
}

const char *sse_parser_text(struct sse_parser *p, size_t *len)
{
    if (len)
        *len = p->text.len;
    return buf_cstr(&p->text);
}

const char *sse_parser_finish(struct sse_parser *p)
{
    return p->finish;
}

const char *sse_parser_error(struct sse_parser *p)
{
    return p->error[0] ? p->error : NULL;
}

void sse_parser_usage(struct sse_parser *p, struct usage *u)
{
    *u = p->usage;
}

bool sse_parser_done(struct sse_parser *p)
{
    return p->done;
}
