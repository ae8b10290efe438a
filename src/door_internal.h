/* door_internal.h: what door.c (the SSE machine, errors, glue), door_anthropic.c and
 * door_responses.c share: the door's state and the helpers of both directions. */
#ifndef DOOR_INTERNAL_H
#define DOOR_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <string.h>

#include "door.h"

#define DOOR_MAX_TOOLS 128
#define DOOR_LINE_MAX  (64u << 20)

/* MODE_SSE: a chat.completion.chunk stream translated event by event; MODE_BUFFER: a complete
 * body translated at the end; MODE_SYNTH: a stream request answered with a complete
 * chat.completion (an upstream that ignores "stream"), replayed as the door's events. */
enum door_mode { MODE_NONE = 0, MODE_SSE, MODE_BUFFER, MODE_SYNTH };

struct tcall {
    char *id;
    char *name;
    struct buf args;
    int index;     /* Anthropic content block index / Responses output_index */
    int oai_index; /* the chunk's tool_calls[].index (-1 when it sent none) */
    char item_id[48];
};

struct door {
    enum door_kind kind;
    char *model; /* the model string the client sent */
    cJSON *echo; /* Responses: request fields the response object echoes */
    int status;  /* reply status (door_begin) */
    bool stream; /* the client asked for a stream */
    enum door_mode mode;
    struct buf in;   /* MODE_BUFFER: the body; MODE_SSE: the partial line */
    struct buf data; /* MODE_SSE: data lines of the current event */
    char id[64];
    long long created;

    /* SSE translation state. */
    bool started;    /* the start events were written */
    bool ended;      /* [DONE] handled, or an error ended the stream */
    int next_index;  /* next Anthropic block index / Responses output index */
    int open;        /* open block: -1 none, 0 text, 1 + k tool call k */
    struct buf text; /* Responses: text of the open message item */
    char msg_item[48];
    int msg_index;
    struct tcall tools[DOOR_MAX_TOOLS];
    int ntools;
    const char *finish; /* chat finish_reason (static string) */
    long in_tokens, out_tokens, reasoning_tokens;
    long seq;      /* Responses sequence_number */
    cJSON *output; /* Responses: finished output items */
};

/* ---- small cJSON helpers ---- */

static inline const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static inline const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = get(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static inline void copy_field(cJSON *dst, const char *dk, const cJSON *src, const char *sk)
{
    const cJSON *v = get(src, sk);

    if (v && !cJSON_IsNull(v))
        cJSON_AddItemToObject(dst, dk, cJSON_Duplicate(v, 1));
}

/* Is t one of 'types' (NULL-terminated)? */
static inline bool is_text_type(const char *t, const char *const *types)
{
    for (; t && *types; types++)
        if (strcmp(t, *types) == 0)
            return true;
    return false;
}

static inline void join_text(struct buf *b, const char *t)
{
    if (b->len)
        buf_puts(b, "\n");
    buf_puts(b, t);
}

/* ---- door.c: shared helpers (door__emit writes "event: NAME\ndata: {...}") ---- */

char *door__print(cJSON *o, size_t *len);
int door__number_field(cJSON *chat, const char *dk, const cJSON *req, const char *sk,
                       struct px_error *err);
void door__take_usage(struct door *d, const cJSON *u);
const cJSON *door__first_choice(const cJSON *root);
const char *door__static_finish(const char *f);
void door__emit(struct door *d, struct buf *out, const char *name, cJSON *obj);

/* ---- door_anthropic.c: request, complete replies, stream events of the Messages door ---- */

int door__anth_request(struct door *d, const cJSON *req, cJSON *chat, struct px_error *err);
cJSON *door__anth_error(int status, const char *msg);
char *door__anth_message(struct door *d, const cJSON *root, size_t *len);
char *door__models_list(cJSON *root, size_t *len);
void door__anth_start(struct door *d, struct buf *out);
void door__anth_text(struct door *d, struct buf *out, const char *text);
void door__anth_tool_start(struct door *d, struct buf *out, int k);
void door__anth_tool_args(struct door *d, struct buf *out, int k, const char *frag);
void door__anth_finish(struct door *d, struct buf *out);

/* ---- door_responses.c: the same for the Responses door ---- */

int door__resp_request(struct door *d, const cJSON *req, cJSON *chat, struct px_error *err);
char *door__resp_response(struct door *d, const cJSON *root, size_t *len);
void door__resp_start(struct door *d, struct buf *out);
void door__resp_text(struct door *d, struct buf *out, const char *text);
void door__resp_tool_start(struct door *d, struct buf *out, int k);
void door__resp_tool_args(struct door *d, struct buf *out, int k, const char *frag);
void door__resp_finish(struct door *d, struct buf *out);

#endif
