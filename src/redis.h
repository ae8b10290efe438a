/* redis.h: state shared by every instance that uses the same Redis (--redis-url): tenants'
 * requests per minute and tokens per day, and the upstreams' learned n-support. Nothing here
 * blocks longer than REDIS_TIMEOUT_MS; when Redis is unreachable the callers fall back to
 * their local state (or refuse, --redis-failure closed). Thread-safe. */
#ifndef REDIS_H
#define REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"

#define REDIS_TIMEOUT_MS 100 /* connect and command timeout */

/* The parts of redis://[user:pass@]HOST[:PORT][/DB]. */
struct redis_url {
    char host[256];
    int port; /* default 6379 */
    char user[128];
    char pass[256];
    int db;   /* default 0 */
    bool tls; /* rediss:// */
};

/* Parses a URL (user and password may be %-encoded); 0, or -1 with a reason in 'why' (which
 * never contains the password). */
int redis_url_parse(const char *url, struct redis_url *out, char *why, size_t why_len);

/* Starts the shared state when cfg->redis_url is set (no-op otherwise): parses the URL and
 * starts the writer thread. An unreachable Redis is not an error (logged, retried). 0 or -1. */
int redis_init(const struct config *cfg);
void redis_cleanup(void);
bool redis_enabled(void);

enum redis_verdict {
    REDIS_ADMIT = 0,   /* within the shared limits (the request was counted) */
    REDIS_LIMITED = 1, /* over a shared limit: *retry_after seconds, *daily true for tokens */
    REDIS_DOWN = 2     /* Redis unreachable or slow: the caller decides (--redis-failure) */
};

/* One request of 'tenant' against its shared limits (0 = no limit), atomically in Redis. */
enum redis_verdict redis_admit(const char *tenant, long rpm, long tokens_per_day, int *retry_after,
                               bool *daily);
/* Adds tokens to the tenant's shared daily count; asynchronous (never blocks the caller). */
void redis_charge(const char *tenant, long tokens);

/* Learned n-support of an upstream base URL, shared between instances (the hook for the
 * engine's per-upstream memory): 1 supports n, 0 does not, -1 unknown or Redis unavailable.
 * _get waits at most REDIS_TIMEOUT_MS (call it from an approach thread, not an I/O loop);
 * _set is asynchronous. The key holds a digest of the URL, never the URL; a "0" expires after
 * 10 minutes (probed again), a "1" after 7 days. Intended use in engine.c's transport:
 *   get: v = local memory; if (v < 0 && (v = redis_nsupport_get(base)) >= 0) remember v locally
 *   set: remember v locally; redis_nsupport_set(base, v == 1)  */
int redis_nsupport_get(const char *base_url);
void redis_nsupport_set(const char *base_url, bool supported);

/* True when --redis-failure closed. */
bool redis_fail_closed(void);
/* Appends the optillm_redis_* metrics (nothing when Redis is not configured). */
void redis_metrics_render(struct buf *b);

#endif
