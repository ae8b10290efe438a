/* engine.h: running chat requests in-process, without HTTP, for the evaluation runner: the
 * same parsing, approach selection, approaches, upstream transport, key handling and response
 * JSON as the server. */
#ifndef ENGINE_H
#define ENGINE_H

#include <stddef.h>

struct config;

/* Starts what in-process requests need (answer patterns, prompts, registry check, I/O loops)
 * for 'cfg', which must stay valid and unchanged until engine_shutdown. Call once, before
 * threads that use engine_request. Returns 0, or -1 with a logged message. */
int engine_startup(const struct config *cfg);
void engine_shutdown(void);

/* Runs one chat-completion request body (JSON, as a client would POST it) with 'upstream_key'
 * (may be NULL) and blocks until it is answered. Returns the HTTP status the server would
 * have sent; *resp (malloc'd, caller frees) is the response body (a chat.completion or an
 * OpenAI error object), *resp_len its length. Thread-safe: run many at once. */
int engine_request(const char *body, size_t len, const char *upstream_key, char **resp,
                   size_t *resp_len);

/* Like engine_request; also sets *upstream_calls to the upstream HTTP calls the request made
 * (retries included). */
int engine_request2(const char *body, size_t len, const char *upstream_key, char **resp,
                    size_t *resp_len, long *upstream_calls);

#endif
