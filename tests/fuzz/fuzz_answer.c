/* fuzz_answer.c: libFuzzer target: answer extraction, number parsing and normalisation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    char *s = malloc(size + 1);
    struct arena *a = arena_create();
    double d;

    if (!ready)
        ready = answer_init() == 0;
    memcpy(s, data, size);
    s[size] = '\0';
    for (int hint = ANSWER_NONE; hint <= ANSWER_TEXT; hint++) {
        struct answer x = answer_extract(a, s, (enum answer_kind)hint);

        if (!x.text)
            __builtin_trap();
        (void)answer_key(a, &x);
        if (answer_equal(&x, &x) !=
            (x.kind != ANSWER_NONE && !(x.kind == ANSWER_NUMBER && x.num != x.num)))
            (void)0; /* NaN and NONE never equal themselves; anything else should */
    }
    (void)answer_parse_number(s, &d);
    (void)answer_normalize(a, s);
    arena_destroy(a);
    free(s);
    return 0;
}
