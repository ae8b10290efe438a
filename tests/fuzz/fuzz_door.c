/* fuzz_door.c: libFuzzer target: the front doors (door.c). The first byte picks the door and
 * the piece size; the rest is both a door request (translated into chat completions) and a
 * reply (fed as an SSE stream in pieces, and as a complete body with a 200 and an error
 * status). Crashes, leaks and undefined behaviour are the findings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reply(enum door_kind kind, int status, const char *ctype, bool streaming,
                  const char *body, size_t len, size_t step)
{
    struct door *d = door_create(kind);
    struct buf out;
    char ct[64];

    if (kind != DOOR_MODELS && streaming && strcmp(ctype, "application/json") == 0) {
        /* A stream request answered with a complete body: replayed as events. */
        static const char *const req[] = {
            "{\"model\":\"m\",\"max_tokens\":1,\"stream\":true,\"messages\":[]}",
            "{\"model\":\"m\",\"stream\":true,\"input\":\"x\"}"};
        const char *r = req[kind == DOOR_MESSAGES ? 0 : 1];
        char *chat = NULL;
        size_t cl;
        struct px_error err;

        if (door_request(d, r, strlen(r), &chat, &cl, &err) != PX_OK)
            __builtin_trap();
        free(chat);
    }
    buf_init(&out, 0);
    strcpy(ct, ctype);
    door_begin(d, status, ct, sizeof(ct), streaming);
    for (size_t off = 0; off < len; off += step)
        door_feed(d, body + off, len - off < step ? len - off : step, &out);
    door_end(d, &out);
    buf_free(&out);
    door_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum door_kind kinds[] = {DOOR_MESSAGES, DOOR_RESPONSES, DOOR_MODELS};
    enum door_kind kind;
    size_t step;
    const char *body;
    char *chat = NULL;
    size_t len, chat_len;
    struct px_error err;
    long tokens;

    if (size < 1)
        return 0;
    kind = kinds[data[0] % 3];
    step = (size_t)(data[0] >> 2) % 23 + 1;
    body = (const char *)data + 1;
    len = size - 1;
    if (kind != DOOR_MODELS) {
        struct door *d = door_create(kind);

        if (door_request(d, body, len, &chat, &chat_len, &err) == PX_OK) {
            if (strlen(chat) != chat_len)
                __builtin_trap();
            free(chat);
        }
        door_free(d);
        door_count_tokens(body, len, &tokens, &err);
        d = door_create(kind);
        free(door_error_body(d, 429, body, len, &chat_len));
        door_free(d);
    }
    reply(kind, 200, "text/event-stream", true, body, len, step);
    reply(kind, 200, "application/json", false, body, len, step);
    reply(kind, 400, "application/json", true, body, len, step);
    reply(kind, 200, "application/json", true, body, len, step);
    return 0;
}
