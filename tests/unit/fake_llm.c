/* fake_llm.c: the scripted, recording upstream transport used by the approaches' unit tests. */
#include "fake_llm.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "px.h"

#define REFUSE_N_MESSAGE "Only one completion choice is allowed"

/* ---- message rendering -------------------------------------------------------------------- */

/* The role and text the upstream would see: taken from the raw client object when there is
 * one (as the real transport sends it), else from role/content. */
static void render_msg(const struct llm_msg *m, struct fake_msg *out, int *invalid)
{
    const char *role = m->role;
    struct buf b;

    buf_init(&b, 0);
    if (m->raw) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(m->raw, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m->raw, "content");
        const cJSON *part;

        role = cJSON_IsString(r) ? r->valuestring : NULL;
        if (cJSON_IsString(c)) {
            buf_puts(&b, c->valuestring);
        } else if (cJSON_IsArray(c)) {
            cJSON_ArrayForEach(part, c)
            {
                const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
                const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");

                if (b.len)
                    buf_puts(&b, "\n");
                if (cJSON_IsString(text))
                    buf_puts(&b, text->valuestring);
                else
                    buf_printf(&b, "[%s]", cJSON_IsString(type) ? type->valuestring : "?");
            }
        }
    } else if (m->content) {
        buf_puts(&b, m->content);
    } else {
        (*invalid)++;
    }
    if (!role || !*role)
        (*invalid)++;
    out->role = xstrdup(role ? role : "");
    out->content = xstrdup(buf_cstr(&b));
    buf_free(&b);
}

long fake_prompt_tokens(const struct fake_record *r)
{
    size_t bytes = 0;

    for (size_t i = 0; i < r->nmsgs; i++)
        bytes += strlen(r->msgs[i].content);
    return 1 + (long)(bytes / 4);
}

long fake_completion_tokens(const char *text)
{
    return 1 + (long)(strlen(text) / 4);
}

static struct fake_record *new_record(struct fake_llm *f)
{
    if (f->ncalls == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->calls = xrealloc(f->calls, f->cap * sizeof(*f->calls));
    }
    memset(&f->calls[f->ncalls], 0, sizeof(f->calls[0]));
    return &f->calls[f->ncalls++];
}

static void record_call(struct fake_llm *f, struct fake_record *rec, const struct llm_call *c)
{
    struct buf b;

    rec->round = f->rounds;
    rec->seq = (int)(f->ncalls - 1);
    rec->stage = xstrdup(c->stage ? c->stage : "");
    rec->model = c->params.model ? xstrdup(c->params.model) : NULL;
    rec->temperature = c->params.temperature;
    rec->max_tokens = c->params.max_tokens;
    rec->n = c->params.n;
    rec->filter = c->params.filter;
    rec->stream_to_client = c->stream_to_client;
    if (!c->msgs || c->nmsgs == 0 || c->params.n < 0 || !c->stage)
        f->invalid++;
    rec->nmsgs = c->msgs ? c->nmsgs : 0;
    rec->msgs = xcalloc(rec->nmsgs + 1, sizeof(*rec->msgs));
    buf_init(&b, 0);
    for (size_t i = 0; i < rec->nmsgs; i++) {
        render_msg(&c->msgs[i], &rec->msgs[i], &f->invalid);
        buf_printf(&b, "[%s]\n%s\n", rec->msgs[i].role, rec->msgs[i].content);
    }
    rec->raw_last = rec->nmsgs > 0 && c->msgs[rec->nmsgs - 1].raw != NULL;
    rec->text = xstrdup(buf_cstr(&b));
    buf_free(&b);
}

/* ---- the transport ------------------------------------------------------------------------ */

static void fail_call(struct approach_ctx *ctx, struct llm_call *c, int http_status,
                      const char *message)
{
    struct llm_reply *r = &c->reply;

    if (http_status > 0) {
        r->status = PX_EHTTP;
        r->http_status = http_status;
    } else {
        r->status = PX_ETIMEDOUT;
        r->http_status = 0;
    }
    r->error = arena_strdup(ctx->arena, message);
    r->choices = NULL;
    r->nchoices = 0;
}

static void fake_run(struct llm *llm, struct approach_ctx *ctx, struct llm_call *calls, size_t m)
{
    struct fake_llm *f = llm->impl;

    for (size_t i = 0; i < m; i++) {
        struct llm_call *c = &calls[i];
        struct llm_reply *r = &c->reply;
        struct fake_record *rec = new_record(f);
        int want = c->params.n > 1 ? c->params.n : 1;

        record_call(f, rec, c);
        memset(r, 0, sizeof(*r));
        r->usage.prompt_tokens = fake_prompt_tokens(rec);
        r->usage.calls = 1;
        r->latency_ms = 1;
        if (want > 1 && f->n_mode == FAKE_N_REFUSE) {
            fail_call(ctx, c, 400, REFUSE_N_MESSAGE);
        } else {
            if (want > 1 && f->n_mode == FAKE_N_IGNORE)
                want = 1;
            r->choices = arena_calloc(ctx->arena, (size_t)want, sizeof(*r->choices));
            for (int j = 0; j < want; j++) {
                const char *text = f->reply ? f->reply(f->user, c, j) : NULL;
                const char *fin;

                if (!text) {
                    r->usage.completion_tokens = 0;
                    fail_call(ctx, c, f->fail_status,
                              f->fail_message ? f->fail_message : "fake upstream failure");
                    break;
                }
                fin = f->finish ? f->finish(f->user, c, j) : NULL;
                r->choices[j].text = arena_strdup(ctx->arena, text);
                r->choices[j].finish_reason = arena_strdup(ctx->arena, fin ? fin : "stop");
                r->usage.completion_tokens += fake_completion_tokens(text);
                r->nchoices = j + 1;
            }
            if (r->status == PX_OK)
                r->http_status = 200;
        }
        rec->status = r->status;
        rec->http_status = r->http_status;
        rec->nchoices = r->nchoices;
        rec->usage = r->usage;
        f->total.prompt_tokens += r->usage.prompt_tokens;
        f->total.completion_tokens += r->usage.completion_tokens;
        f->total.reasoning_tokens += r->usage.reasoning_tokens;
        f->total.calls += r->usage.calls;
    }
    f->rounds++;
}

static int fake_get_n(struct llm *llm)
{
    struct fake_llm *f = llm->impl;

    return f->n_support;
}

static void fake_set_n(struct llm *llm, int supported)
{
    struct fake_llm *f = llm->impl;

    f->n_support = supported;
    f->set_n_calls++;
}

static const struct llm_ops fake_ops = {
    .run = fake_run,
    .get_n = fake_get_n,
    .set_n = fake_set_n,
};

void fake_llm_init(struct fake_llm *f, fake_reply_fn *reply, void *user)
{
    memset(f, 0, sizeof(*f));
    f->llm.ops = &fake_ops;
    f->llm.impl = f;
    f->reply = reply;
    f->user = user;
    f->n_mode = FAKE_N_ACCEPT;
    f->fail_status = 500;
    f->n_support = -1;
}

void fake_llm_cleanup(struct fake_llm *f)
{
    for (size_t i = 0; i < f->ncalls; i++) {
        struct fake_record *r = &f->calls[i];

        for (size_t j = 0; j < r->nmsgs; j++) {
            free(r->msgs[j].role);
            free(r->msgs[j].content);
        }
        free(r->msgs);
        free(r->stage);
        free(r->model);
        free(r->text);
    }
    free(f->calls);
    f->calls = NULL;
    f->ncalls = f->cap = 0;
}

/* ---- queries ------------------------------------------------------------------------------ */

size_t fake_llm_round_calls(const struct fake_llm *f, int round)
{
    size_t n = 0;

    for (size_t i = 0; i < f->ncalls; i++)
        if (f->calls[i].round == round)
            n++;
    return n;
}

const struct fake_record *fake_llm_call(const struct fake_llm *f, int round, size_t i)
{
    for (size_t k = 0; k < f->ncalls; k++) {
        if (f->calls[k].round != round)
            continue;
        if (i == 0)
            return &f->calls[k];
        i--;
    }
    return NULL;
}

size_t fake_llm_stage_calls(const struct fake_llm *f, const char *stage)
{
    size_t n = 0;

    for (size_t i = 0; i < f->ncalls; i++)
        if (strcmp(f->calls[i].stage, stage) == 0)
            n++;
    return n;
}

const char *fake_record_last(const struct fake_record *r)
{
    return r->nmsgs ? r->msgs[r->nmsgs - 1].content : "";
}

size_t fake_count(const char *s, const char *needle)
{
    size_t n = 0;
    size_t len = strlen(needle);

    if (!len)
        return 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + len, needle))
        n++;
    return n;
}
