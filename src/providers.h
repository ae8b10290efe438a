/* providers.h: several upstreams behind one proxy (--providers FILE). The I/O loops pick a
 * provider per transfer attempt; this module holds the set, the strategy, health and caps. */
#ifndef PX_PROVIDERS_H
#define PX_PROVIDERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum prov_strategy { PROV_ROUND_ROBIN, PROV_WEIGHTED, PROV_FAILOVER };

enum prov_pick {
    PROV_OK,   /* a provider was chosen and one of its slots taken */
    PROV_BUSY, /* eligible providers are all at max_concurrent: wait (a queue place was taken) */
    PROV_NONE, /* no eligible provider is up, or its queue is full */
};

/* Loads FILE (before threads start). 0, or -1 with a message in err (never a key). */
int providers_load(const char *path, char *err, size_t errlen);
void providers_free(void);
bool providers_enabled(void);
int providers_count(void);
/* The index of the provider named 'name', or -1. */
int providers_find(const char *name);
const char *providers_name(int i);
const char *providers_base_url(int i);
/* The provider's key (from its key_env), or NULL: then the server's key is used. */
const char *providers_key(int i);
/* Seeds the weighted strategy's generator (tests; otherwise seeded from the clock). */
void providers_seed(uint64_t seed);

/* Picks a provider for a request for 'model' (may be NULL), pinned to 'pin' (or -1), not among
 * the bits of 'tried'. *waiting is the provider whose queue place the caller holds (-1 if none):
 * on PROV_BUSY it is set (first time) and on PROV_OK/PROV_NONE released. */
enum prov_pick providers_acquire(const char *model, int pin, uint64_t tried, int *out,
                                 int *waiting);
/* Gives up a queue place (a waiting transfer cancelled). */
void providers_unwait(int *waiting);
/* Releases a slot; 'failed' (connect error or 5xx) counts towards marking it down. Returns
 * true when transfers are waiting for a slot somewhere (wake the loops). */
bool providers_release(int i, bool failed, long long now_us);
/* Is any provider other than those in 'tried' eligible (up, serving model, pin)? */
bool providers_available(const char *model, int pin, uint64_t tried);
/* A down provider whose health probe is due (marked as probing), or -1. */
int providers_probe_due(long long now_us);
void providers_probe_result(int i, bool ok, long long now_us);
bool providers_is_down(int i);
/* Requests chosen per provider (for the log and tests). */
long providers_picks(int i);

#endif
