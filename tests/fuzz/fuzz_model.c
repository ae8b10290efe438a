/* fuzz_model.c: libFuzzer target: model names and approach values through the route parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "px.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    struct route r;
    struct px_error err;
    const char *rest;
    char name[512];

    memcpy(s, data, size);
    s[size] = '\0';
    if (route_parse_model(s, &r, &rest, &err) >= 0) {
        /* rest points into s, after the prefix */
        if (rest < s || rest > s + strlen(s))
            __builtin_trap();
        if (r.count < 0 || r.count > ROUTE_MAX)
            __builtin_trap();
        route_name(&r, name, sizeof(name));
    }
    if (route_parse_value(s, &r, &err) >= 0)
        route_name(&r, name, sizeof(name));
    free(s);
    return 0;
}
