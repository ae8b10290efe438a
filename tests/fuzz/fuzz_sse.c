/* fuzz_sse.c: libFuzzer target: upstream SSE streams through the incremental parser, fed in
 * pieces whose sizes come from the input, checking that the pieces give the same result as
 * one feed,
 * also at the end of the stream (sse_parser_end). */
#include <stdint.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void count(void *sink, const char *text, size_t len)
{
    (void)text;
    *(size_t *)sink += len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sse_parser *whole = sse_parser_create();
    struct sse_parser *parts = sse_parser_create();
    size_t n1 = 0, n2 = 0, l1, l2;
    int r1, r2 = 0;
    size_t step = size ? (size_t)data[0] % 17 + 1 : 1;

    r1 = sse_parser_feed(whole, (const char *)data, size, count, &n1);
    for (size_t off = 0; off < size && r2 == 0; off += step) {
        size_t len = size - off < step ? size - off : step;

        r2 = sse_parser_feed(parts, (const char *)data + off, len, count, &n2);
    }
    if (r1 == 0 && r2 == 0) {
        /* The end of the stream (a last line without newline) agrees too. */
        int e1 = sse_parser_end(whole, count, &n1), e2 = sse_parser_end(parts, count, &n2);

        if (e1 != e2)
            __builtin_trap();
    }
    if (r1 == 0 && r2 == 0) {
        const char *t1 = sse_parser_text(whole, &l1);
        const char *t2 = sse_parser_text(parts, &l2);

        if (l1 != l2 || memcmp(t1, t2, l1) != 0 || n1 != n2 || n1 != l1)
            __builtin_trap();
    }
    sse_parser_destroy(whole);
    sse_parser_destroy(parts);
    return 0;
}
