/* memstore.h: the memory plugin's optional persistence (--memory-file). One JSON line per
 * request is appended: {"time","request","query","findings":[...]}, secrets redacted. It is
 * write-only on purpose: OptiLLM's memory is per request too, and reading findings back would
 * carry one client's (or tenant's) documents into another's answers. */
#ifndef MEMSTORE_H
#define MEMSTORE_H

#include <stddef.h>

struct approach_ctx;

/* Appends the record when ctx->cfg->memory_file is set. Returns 0 (also when not set), or -1
 * (logged; the request goes on). Thread-safe. */
int memstore_append(const struct approach_ctx *ctx, const char *query, const char *const *findings,
                    size_t n);

#endif
