/* door.h: front doors. The Anthropic Messages API (POST /v1/messages) and the OpenAI Responses
 * API (POST /v1/responses) are translated at the edge, here and nowhere else: a door's request
 * becomes an internal chat-completions body (then the ordinary chat path runs: passthrough or
 * an approach), and everything the chat path produces for the client (a chat.completion, a
 * chat.completion.chunk SSE stream, an OpenAI error, in-band stream errors, keep-alive comments)
 * passes through the exchange's door, a small state machine, on its way into exchange.out.
 * Approaches and the engine never know which door a request came through. */
#ifndef DOOR_H
#define DOOR_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "px.h"

enum door_kind {
    DOOR_MESSAGES = 1, /* Anthropic Messages */
    DOOR_RESPONSES,    /* OpenAI Responses */
    DOOR_MODELS        /* GET /v1/models from an Anthropic client: the list in its shape */
};

struct door;
struct exchange;

struct door *door_create(enum door_kind kind);
void door_free(struct door *d);
enum door_kind door_kind_of(const struct door *d);

/* Translates the door's request JSON into a chat-completions body (*chat malloc'd). Streams
 * get usage from the chat path (message_delta / response.completed carry it): see add_stream.
 * Remembers what the reply echoes (model, Responses fields). PX_EINVAL with a message for a
 * malformed or unsupported request (previous_response_id included). */
int door_request(struct door *d, const char *body, size_t len, char **chat, size_t *chat_len,
                 struct px_error *err);

/* POST /v1/messages/count_tokens: an estimate, 1 + bytes/4 of the system, message and tool
 * JSON (the same rule as the mock upstream), since the upstream has no such call. */
int door_count_tokens(const char *body, size_t len, long *tokens, struct px_error *err);

/* Output. door_begin once, when the reply's status is known: a 200 event stream is translated
 * event by event, anything else is buffered and translated whole at door_end (a
 * chat.completion, or an error body). May rewrite the content type. */
void door_begin(struct door *d, int status, char *ctype, size_t ctype_cap, bool streaming);
void door_feed(struct door *d, const char *data, size_t len, struct buf *out);
void door_end(struct door *d, struct buf *out);

/* An OpenAI-shaped (or any) error body as the door's error body; malloc'd. */
char *door_error_body(const struct door *d, int status, const char *body, size_t len,
                      size_t *out_len);

/* Replaces ex->body (the door's request) with its chat-completions translation. MHD thread. */
int door_translate(struct exchange *ex, struct px_error *err);
/* Queues err in the door's error shape (MHD thread, before any hand-off). */
int door_queue_error(struct exchange *ex, const struct px_error *err);

/* Appends reply bytes to ex->out, through ex->door when there is one. Caller holds ex->mu and
 * has set ex->status, ex->content_type and ex->streaming (phase EX_REPLY). */
void exchange_out(struct exchange *ex, const char *data, size_t len);
/* Ends the reply (flushes the door) and sets ex->out_done. Caller holds ex->mu. */
void exchange_out_end(struct exchange *ex);

#endif
