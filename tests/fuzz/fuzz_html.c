/* fuzz_html.c: libFuzzer target: readurls' untrusted inputs: HTML to text (libxml2 and our
 * walk), the readable-text dispatch by content type, and allow-list (CIDR) parsing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "fetch.h"
#include "px.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const types[] = {"text/html", "text/plain", "application/json", "",
                                        "image/png"};
    struct arena *a = arena_create();
    char *s = malloc(size + 1);
    struct fetch_cidr c[8];
    const char *why;

    memcpy(s, data, size);
    s[size] = '\0';
    if (!html_to_text(a, s, size))
        __builtin_trap();
    for (size_t i = 0; i < sizeof(types) / sizeof(*types); i++) {
        struct fetch_req r = {.status = PX_OK, .content_type = types[i], .body = s, .len = size};
        const char *t = fetch_readable(a, &r, &why);

        if (!t && !why)
            __builtin_trap();
    }
    if (size < 512)
        (void)fetch_allow_parse(s, c, 8);
    arena_destroy(a);
    free(s);
    return 0;
}
