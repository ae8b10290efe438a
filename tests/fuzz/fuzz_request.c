/* fuzz_request.c: libFuzzer target: client request bodies through chat_request_parse (JSON,
 * types, messages, tags, approach selection, options). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "chat.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config cfg;
    struct arena *a = arena_create();
    struct chat_request req;
    struct px_error err;

    if (!cfg.n) {
        snprintf(cfg.approach, sizeof(cfg.approach), "auto");
        snprintf(cfg.model, sizeof(cfg.model), "gpt-4o-mini");
        cfg.n = 1;
    }
    if (chat_request_parse(a, (const char *)data, size, &cfg, &req, &err) == PX_OK) {
        /* Exercise what the engine reads. */
        (void)chat_system(a, &req);
        (void)chat_last_user(&req);
        for (size_t i = 0; i < req.nmsgs; i++)
            (void)strlen(req.msgs[i].content);
        (void)chat_option(&req, &cfg, "best_of_n");
    } else if (strlen(err.message) == 0) {
        __builtin_trap(); /* every failure must explain itself */
    }
    arena_destroy(a);
    return 0;
}
