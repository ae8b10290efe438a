/* fuzz_request.c: libFuzzer target: client request bodies through chat_request_parse (JSON,
 * types, messages, tags, approach selection, options) and the strict JSON front door
 * (duplicate keys at any depth, trailing bytes, NULs: json_parse_strict), and the redaction
 * of key-shaped tokens that upstream messages get (redact_secrets). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "chat.h"
#include "config.h"
#include "json_check.h"
#include "px.h"
#include "redact.h"

#include <cjson/cJSON.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Independent (quadratic) duplicate check for the invariant below. */
static int has_dup(const cJSON *v)
{
    for (const cJSON *c = v->child; c; c = c->next) {
        if (cJSON_IsObject(v))
            for (const cJSON *d = c->next; d; d = d->next)
                if (c->string && d->string && strcmp(c->string, d->string) == 0)
                    return 1;
        if (has_dup(c))
            return 1;
    }
    return 0;
}

/* What the strict parser accepts has no repeated key, and printing then re-parsing it is
 * accepted again (no trailing bytes, no NUL). */
static void check_strict(const uint8_t *data, size_t size)
{
    struct px_error err;
    cJSON *root = json_parse_strict((const char *)data, size, &err);
    char *printed;

    if (!root) {
        if (strlen(err.message) == 0)
            __builtin_trap();
        return;
    }
    if (has_dup(root))
        __builtin_trap();
    printed = cJSON_PrintUnformatted(root);
    if (printed) {
        cJSON *again = json_parse_strict(printed, strlen(printed), &err);

        if (!again)
            __builtin_trap();
        cJSON_Delete(again);
        cJSON_free(printed);
    }
    cJSON_Delete(root);
}

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
    check_strict(data, size);
    {
        /* Redaction never grows the text and is idempotent on its own output's length. */
        char *s = xstrndup((const char *)data, size);
        size_t before = strlen(s);

        redact_secrets(s);
        if (strlen(s) > before)
            __builtin_trap();
        before = strlen(s);
        redact_secrets(s);
        if (strlen(s) > before)
            __builtin_trap();
        free(s);
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
