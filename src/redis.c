/* redis.c: state shared between instances through Redis (hiredis, synchronous API with short
 * timeouts). Tenants' limits are one Lua script run atomically in Redis with Redis's own clock,
 * so every instance sees the same bucket and the same day; writes that need no answer (token
 * charges, n-support) go through a queue to one writer thread, so no I/O loop ever waits for
 * Redis. A failed connection or command marks Redis down for a backoff (100 ms doubling to
 * 2 s); meanwhile callers get REDIS_DOWN at once instead of waiting, and the writer thread
 * reconnects after each backoff (so does any caller that comes after it).
 *
 * Keys (PREFIX = --redis-prefix, default "optillm:"):
 *   PREFIX rpm:<tenant>             hash {b: requests left in the bucket, t: last refill in
 *                                   microseconds of Redis time}; expires 61 s after its last use
 *                                   (a full bucket is the same as no key)
 *   PREFIX tokens:<tenant>:<day>    integer, tokens used on that UTC day (Redis's clock);
 *                                   expires 2 days after its last increment
 *   PREFIX nsupport:<sha256(url)>   "1" or "0": whether the upstream at that base URL honours n
 *                                   (first 16 hex digits of the digest); "1" expires after 7 days,
 *                                   "0" after 10 minutes (a refusal is probed again, as the
 *                                   engine's own memory does) */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "redis.h"

#include <ctype.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "px.h"
#include "redis_tls.h"

#define MAX_IDLE       8     /* idle connections kept */
#define MAX_QUEUE      10000 /* pending writes; more are dropped (counted) */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define WARN_EVERY_US  (30LL * 1000000)

/* KEYS[1] the rpm bucket, KEYS[2] the tokens key without its day. ARGV[1] "admit" (ARGV[2]
 * rpm, ARGV[3] tokens per day; returns {verdict, retry_after}: 0 admitted, 1 rate limit,
 * 2 daily tokens) or "charge" (ARGV[2] tokens; returns the day's total). Numbers are stored
 * with string.format: Lua 5.1's tostring keeps only 14 digits. */
static const char script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local sec = tonumber(t[1])\n"
    "local now = sec * 1000000 + tonumber(t[2])\n"
    "local tkey = KEYS[2] .. ':' .. string.format('%d', math.floor(sec / 86400))\n"
    "if ARGV[1] == 'charge' then\n"
    "  local n = redis.call('INCRBY', tkey, ARGV[2])\n"
    "  redis.call('EXPIRE', tkey, 172800)\n"
    "  return n\n"
    "end\n"
    "local rpm = tonumber(ARGV[2])\n"
    "local tpd = tonumber(ARGV[3])\n"
    "if tpd > 0 and tonumber(redis.call('GET', tkey) or '0') >= tpd then\n"
    "  return {2, 86400 - sec % 86400}\n"
    "end\n"
    "if rpm > 0 then\n"
    "  local v = redis.call('HMGET', KEYS[1], 'b', 't')\n"
    "  local b, ts = tonumber(v[1]), tonumber(v[2])\n"
    "  if b == nil or ts == nil then b, ts = rpm, now end\n"
    "  b = b + (now - ts) * rpm / 60000000\n"
    "  if b > rpm then b = rpm end\n"
    "  local verdict, retry = 0, 0\n"
    "  if b < 1 then verdict, retry = 1, math.floor((1 - b) * 60 / rpm) + 1 else b = b - 1 end\n"
    "  redis.call('HSET', KEYS[1], 'b', string.format('%.17g', b), 't', string.format('%.0f', "
    "now))\n"
    "  redis.call('PEXPIRE', KEYS[1], 61000)\n"
    "  return {verdict, retry}\n"
    "end\n"
    "return {0, 0}\n";

enum job_kind { JOB_CHARGE, JOB_NSUPPORT };

struct job {
    enum job_kind kind;
    char name[192]; /* JOB_CHARGE: the tenant; JOB_NSUPPORT: the whole key */
    long value;
    struct job *next;
};

struct rconn {
    redisContext *c;
    struct rconn *next;
};

/* Set by redis_init before threads start; read-only afterwards. */
static bool enabled, fail_closed, tls_on;
static struct redis_url url;
static char prefix[64];
static char script_sha[41];
static char where[300]; /* host:port/db for logs (no credentials) */

static pthread_mutex_t conn_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by conn_mu: */
static struct rconn *idle;
static int nidle;
static long long down_until_us; /* no attempt before this */
static int backoff_ms = BACKOFF_MIN_MS;
static bool probing;        /* one caller is reconnecting while Redis is down */
static long long warned_us; /* last "unreachable" warning */
static bool ever_connected;

/* Atomics: */
static int up; /* the last operation succeeded */
static unsigned long long n_errors, n_fallbacks, n_dropped;
static long long refused_warned_us; /* last warning about an answer we could not use */

/* Lock order: conn_mu may be held while taking q_mu, never the reverse. */
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER; /* wakes the writer */
/* Guarded by q_mu: */
static struct job *q_head, *q_tail;
static size_t q_len;
static bool q_stop;
static pthread_t writer;
static bool writer_started;

/* ---- URL ------------------------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Copies s[0..n) into out, decoding %XX; false when it does not fit or is malformed. */
static bool decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];

        if (c == '%') {
            int hi, lo;

            if (i + 2 >= n)
                return false;
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return false;
            c = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

int redis_url_parse(const char *s, struct redis_url *u, char *why, size_t why_len)
{
    const char *p, *auth_end, *at = NULL, *host, *host_end, *port = NULL;

    memset(u, 0, sizeof(*u));
    u->port = 6379;
    if (strncmp(s, "redis://", 8) == 0) {
        p = s + 8;
    } else if (strncmp(s, "rediss://", 9) == 0) {
        p = s + 9;
        u->tls = true;
    } else {
        snprintf(why, why_len, "must start with redis:// or rediss://");
        return -1;
    }
    auth_end = p + strcspn(p, "/?#");
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@')
            at = q;
    host = p;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));

        if (!colon) {
            snprintf(why, why_len, "the user part must be user:password or :password");
            return -1;
        }
        if (!decode(p, (size_t)(colon - p), u->user, sizeof(u->user)) ||
            !decode(colon + 1, (size_t)(at - colon - 1), u->pass, sizeof(u->pass))) {
            snprintf(why, why_len, "user or password malformed or too long");
            return -1;
        }
        host = at + 1;
    }
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(auth_end - host));

        if (!close) {
            snprintf(why, why_len, "unterminated [IPv6] host");
            return -1;
        }
        host_end = close + 1;
        if (host_end < auth_end && *host_end == ':')
            port = host_end + 1;
        else if (host_end != auth_end) {
            snprintf(why, why_len, "unexpected characters after the host");
            return -1;
        }
        host++;
        if ((size_t)(close - host) >= sizeof(u->host) || close == host) {
            snprintf(why, why_len, "bad host");
            return -1;
        }
        memcpy(u->host, host, (size_t)(close - host));
    } else {
        const char *colon = memchr(host, ':', (size_t)(auth_end - host));

        host_end = colon ? colon : auth_end;
        if (colon)
            port = colon + 1;
        if (host_end == host || (size_t)(host_end - host) >= sizeof(u->host)) {
            snprintf(why, why_len, "a host is needed");
            return -1;
        }
        memcpy(u->host, host, (size_t)(host_end - host));
    }
    if (port) {
        long v = 0;

        if (port == auth_end) {
            snprintf(why, why_len, "empty port");
            return -1;
        }
        for (const char *q = port; q < auth_end; q++) {
            if (!isdigit((unsigned char)*q) || (v = v * 10 + (*q - '0')) > 65535) {
                snprintf(why, why_len, "the port must be a number from 1 to 65535");
                return -1;
            }
        }
        if (v < 1) {
            snprintf(why, why_len, "the port must be a number from 1 to 65535");
            return -1;
        }
        u->port = (int)v;
    }
    if (*auth_end == '/') {
        long v = 0;
        const char *q = auth_end + 1;

        for (; *q; q++) {
            if (!isdigit((unsigned char)*q) || (v = v * 10 + (*q - '0')) > 100000) {
                snprintf(why, why_len, "the path must be a database number (/0, /1, ...)");
                return -1;
            }
        }
        u->db = (int)v;
    } else if (*auth_end) {
        snprintf(why, why_len, "query strings and fragments are not supported");
        return -1;
    }
    return 0;
}

/* At most one warning per WARN_EVERY_US for Redis refusing a command (a key of the wrong type,
 * out of memory, ...): it would repeat for every request. */
static bool refused_warn_due(void)
{
    long long now = px_now_us(), last = __atomic_load_n(&refused_warned_us, __ATOMIC_RELAXED);

    return (last == 0 || now - last >= WARN_EVERY_US) &&
           __atomic_compare_exchange_n(&refused_warned_us, &last, now, false, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED);
}

/* ---- connections ----------------------------------------------------------------------------- */

/* Caller holds conn_mu. A failed connection or command: Redis is down for a backoff, every
 * idle connection is dropped (after a restart they are all dead). */
static void do_failure(const char *why)
{
    long long now = px_now_us();
    struct rconn *list = idle;

    idle = NULL;
    nidle = 0;
    while (list) {
        struct rconn *n = list->next;

        redisFree(list->c);
        free(list);
        list = n;
    }
    __atomic_fetch_add(&n_errors, 1, __ATOMIC_RELAXED);
    bool was_up = __atomic_exchange_n(&up, 0, __ATOMIC_RELAXED);
    if (was_up || now - warned_us >= WARN_EVERY_US) {
        warned_us = now;
        log_warn("redis: %s unreachable (%s); %s until it answers again", where, why,
                 fail_closed
                     ? "requests of tenants with limits get 503 (--redis-failure closed)"
                     : "each instance enforces tenants' limits alone (--redis-failure open)");
    }
    down_until_us = now + backoff_ms * 1000LL;
    backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
    if (was_up) { /* the idle writer starts reconnecting (lock order: conn_mu, then q_mu) */
        pthread_mutex_lock(&q_mu);
        pthread_cond_broadcast(&q_cv);
        pthread_mutex_unlock(&q_mu);
    }
}

/* Caller holds conn_mu. */
static void do_success(void)
{
    backoff_ms = BACKOFF_MIN_MS;
    down_until_us = 0;
    if (!__atomic_exchange_n(&up, 1, __ATOMIC_RELAXED))
        log_info("redis: connected to %s; tenants' limits are shared%s", where,
                 ever_connected ? " again" : "");
    ever_connected = true;
}

static redisContext *dial(char *why, size_t wl)
{
    struct timeval tv = {0, REDIS_TIMEOUT_MS * 1000};
    redisContext *c;
    redisReply *r = NULL;

    if (url.tls) {
        /* TCP + TLS handshake: a few round trips more than a plain connect */
        int fd = redis_tls_connect(url.host, url.port, 3 * REDIS_TIMEOUT_MS, why, wl);

        if (fd < 0)
            return NULL;
        c = redisConnectFd(fd);
        if (!c)
            close(fd);
    } else {
        c = redisConnectWithTimeout(url.host, url.port, tv);
    }
    if (!c || c->err) {
        snprintf(why, wl, "%s", c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(why, wl, "cannot set a timeout");
        redisFree(c);
        return NULL;
    }
    if (url.pass[0]) {
        r = url.user[0] ? redisCommand(c, "AUTH %s %s", url.user, url.pass)
                        : redisCommand(c, "AUTH %s", url.pass);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(why, wl, "AUTH: %s", r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (url.db) {
        r = redisCommand(c, "SELECT %d", url.db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(why, wl, "SELECT %d: %s", url.db, r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* An idle connection or a new one; NULL while Redis is down (no waiting). */
static redisContext *conn_get(void)
{
    redisContext *c;
    char why[256];
    bool probe;

    pthread_mutex_lock(&conn_mu);
    if (idle) {
        struct rconn *r = idle;

        idle = r->next;
        nidle--;
        pthread_mutex_unlock(&conn_mu);
        c = r->c;
        free(r);
        return c;
    }
    if (px_now_us() < down_until_us || probing) {
        pthread_mutex_unlock(&conn_mu);
        return NULL;
    }
    probe = !__atomic_load_n(&up, __ATOMIC_RELAXED);
    if (probe)
        probing = true;
    pthread_mutex_unlock(&conn_mu);
    c = dial(why, sizeof(why));
    pthread_mutex_lock(&conn_mu);
    if (probe)
        probing = false;
    if (c)
        do_success();
    else
        do_failure(why);
    pthread_mutex_unlock(&conn_mu);
    return c;
}

/* Returns a connection after use: kept when 'ok', else closed and Redis marked down. */
static void conn_put(redisContext *c, bool ok)
{
    char why[256];

    if (!ok) {
        snprintf(why, sizeof(why), "%s", c->err ? c->errstr : "error");
        redisFree(c);
        pthread_mutex_lock(&conn_mu);
        do_failure(why);
        pthread_mutex_unlock(&conn_mu);
        return;
    }
    pthread_mutex_lock(&conn_mu);
    do_success();
    if (nidle < MAX_IDLE) {
        struct rconn *r = xmalloc(sizeof(*r));

        r->c = c;
        r->next = idle;
        idle = r;
        nidle++;
        c = NULL;
    }
    pthread_mutex_unlock(&conn_mu);
    if (c)
        redisFree(c);
}

/* The limits script: EVALSHA, or EVAL when Redis does not have it cached yet. */
static redisReply *run_script(redisContext *c, const char *tenant, const char *a1, long a2, long a3)
{
    char k1[256], k2[256], v2[32], v3[32];
    const char *argv[8];
    redisReply *r;

    snprintf(k1, sizeof(k1), "%srpm:%s", prefix, tenant);
    snprintf(k2, sizeof(k2), "%stokens:%s", prefix, tenant);
    snprintf(v2, sizeof(v2), "%ld", a2);
    snprintf(v3, sizeof(v3), "%ld", a3);
    argv[0] = "EVALSHA";
    argv[1] = script_sha;
    argv[2] = "2";
    argv[3] = k1;
    argv[4] = k2;
    argv[5] = a1;
    argv[6] = v2;
    argv[7] = v3;
    r = redisCommandArgv(c, 8, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = script;
        r = redisCommandArgv(c, 8, argv, NULL);
    }
    return r;
}

/* ---- the writer thread ----------------------------------------------------------------------- */

static void enqueue(enum job_kind kind, const char *name, long value)
{
    struct job *j;

    if (!enabled)
        return;
    j = xcalloc(1, sizeof(*j));
    j->kind = kind;
    snprintf(j->name, sizeof(j->name), "%s", name);
    j->value = value;
    pthread_mutex_lock(&q_mu);
    if (q_len >= MAX_QUEUE || q_stop) {
        pthread_mutex_unlock(&q_mu);
        free(j);
        __atomic_fetch_add(&n_dropped, 1, __ATOMIC_RELAXED);
        return;
    }
    if (q_tail)
        q_tail->next = j;
    else
        q_head = j;
    q_tail = j;
    q_len++;
    pthread_cond_signal(&q_cv);
    pthread_mutex_unlock(&q_mu);
}

/* Caller holds q_mu. Removes the head job (finished or dropped). */
static void do_pop(void)
{
    struct job *j = q_head;

    q_head = j->next;
    if (!q_head)
        q_tail = NULL;
    q_len--;
    free(j);
}

/* pthread_cond_timedwait for 'ms' milliseconds from now; caller holds mu. */
static int timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(cv, mu, &ts);
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q_mu);
    for (;;) {
        while (!q_head && !q_stop) {
            if (__atomic_load_n(&up, __ATOMIC_RELAXED)) {
                pthread_cond_wait(&q_cv, &q_mu);
                continue;
            }
            /* Redis is away and nothing is queued: reconnect by ourselves (conn_get keeps to
             * the backoff), so the shared limits come back without waiting for a request. */
            timed_wait(&q_cv, &q_mu, 500);
            if (q_head || q_stop)
                break;
            pthread_mutex_unlock(&q_mu);
            redisContext *c = conn_get();
            if (c)
                conn_put(c, true);
            pthread_mutex_lock(&q_mu);
        }
        if (!q_head)
            break;
        struct job j = *q_head; /* the head stays queued until done (retried if Redis fails) */
        bool stopping = q_stop;
        pthread_mutex_unlock(&q_mu);

        redisContext *c = conn_get();
        redisReply *r = NULL;
        bool drop = false;

        if (!c) {
            pthread_mutex_lock(&q_mu);
            if (stopping) { /* Redis down at shutdown: what is left is lost (counted) */
                while (q_head) {
                    do_pop();
                    __atomic_fetch_add(&n_dropped, 1, __ATOMIC_RELAXED);
                }
                break;
            }
            timed_wait(&q_cv, &q_mu, 100);
            continue;
        }
        if (j.kind == JOB_CHARGE)
            r = run_script(c, j.name, "charge", j.value, 0);
        else
            r = redisCommand(c, "SET %s %s EX %d", j.name, j.value ? "1" : "0",
                             j.value ? 7 * 86400 : 600);
        if (!r) {
            conn_put(c, false); /* kept queued: retried after the backoff */
        } else {
            if (r->type == REDIS_REPLY_ERROR) {
                if (refused_warn_due())
                    log_warn("redis: a write was refused: %.200s", r->str);
                __atomic_fetch_add(&n_errors, 1, __ATOMIC_RELAXED);
            }
            drop = true;
            freeReplyObject(r);
            conn_put(c, true);
        }
        pthread_mutex_lock(&q_mu);
        if (drop)
            do_pop();
    }
    pthread_mutex_unlock(&q_mu);
    return NULL;
}

/* ---- API ------------------------------------------------------------------------------------- */

int redis_init(const struct config *cfg)
{
    char why[128];
    unsigned char d[SHA_DIGEST_LENGTH];
    redisContext *c;

    if (!cfg->redis_url)
        return 0;
    if (redis_url_parse(cfg->redis_url, &url, why, sizeof(why)) < 0) {
        log_error("--redis-url: %s", why);
        return -1;
    }
    if (url.tls) {
        /* Debian 12's libhiredis (0.14) has no TLS: redis_tls.c bridges hiredis to OpenSSL. */
        struct redis_tls_opts o = {
            .ca = cfg->redis_tls_ca[0] ? cfg->redis_tls_ca : NULL,
            .cert = cfg->redis_tls_cert[0] ? cfg->redis_tls_cert : NULL,
            .key = cfg->redis_tls_key[0] ? cfg->redis_tls_key : NULL,
            .insecure = cfg->redis_tls_insecure,
        };
        char twhy[300];

        if (redis_tls_init(&o, twhy, sizeof(twhy)) < 0) {
            log_error("--redis-url rediss://: %s", twhy);
            return -1;
        }
        tls_on = true;
        if (o.insecure)
            log_warn("--redis-tls-insecure: the Redis server's certificate is not verified");
    }
    snprintf(prefix, sizeof(prefix), "%s", cfg->redis_prefix);
    fail_closed = cfg->redis_fail_closed;
    snprintf(where, sizeof(where), "%s%s%s:%d/%d", strchr(url.host, ':') ? "[" : "", url.host,
             strchr(url.host, ':') ? "]" : "", url.port, url.db);
    SHA1((const unsigned char *)script, strlen(script), d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(script_sha + 2 * i, 3, "%02x", d[i]);
    enabled = true;
    /* A first connection now, so the start-up log says whether Redis answers. */
    c = conn_get();
    if (c)
        conn_put(c, true);
    if (pthread_create(&writer, NULL, writer_main, NULL) != 0) {
        log_error("redis: cannot start the writer thread");
        return -1;
    }
    writer_started = true;
    return 0;
}

void redis_cleanup(void)
{
    if (!enabled)
        return;
    pthread_mutex_lock(&q_mu);
    q_stop = true;
    pthread_cond_broadcast(&q_cv);
    pthread_mutex_unlock(&q_mu);
    if (writer_started)
        pthread_join(writer, NULL);
    writer_started = false;
    pthread_mutex_lock(&conn_mu);
    while (idle) {
        struct rconn *r = idle;

        idle = r->next;
        redisFree(r->c);
        free(r);
    }
    nidle = 0;
    pthread_mutex_unlock(&conn_mu);
    explicit_bzero(url.pass, sizeof(url.pass));
    if (tls_on)
        redis_tls_cleanup(1000); /* the bridges end with their hiredis ends, closed above */
    tls_on = false;
    enabled = false;
}

bool redis_enabled(void)
{
    return enabled;
}

bool redis_fail_closed(void)
{
    return fail_closed;
}

enum redis_verdict redis_admit(const char *tenant, long rpm, long tokens_per_day, int *retry_after,
                               bool *daily)
{
    redisContext *c;
    redisReply *r;
    enum redis_verdict v = REDIS_DOWN;

    *retry_after = 0;
    *daily = false;
    c = conn_get();
    if (!c) {
        __atomic_fetch_add(&n_fallbacks, 1, __ATOMIC_RELAXED);
        return REDIS_DOWN;
    }
    r = run_script(c, tenant, "admit", rpm, tokens_per_day);
    if (!r) {
        conn_put(c, false);
        __atomic_fetch_add(&n_fallbacks, 1, __ATOMIC_RELAXED);
        return REDIS_DOWN;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER) {
        long long verdict = r->element[0]->integer;

        v = verdict == 0 ? REDIS_ADMIT : REDIS_LIMITED;
        *daily = verdict == 2;
        *retry_after = (int)r->element[1]->integer;
    } else {
        if (refused_warn_due())
            log_warn("redis: unexpected answer to the limits script (decided as if Redis were "
                     "unreachable): %.200s",
                     r->type == REDIS_REPLY_ERROR ? r->str : "(not two integers)");
        __atomic_fetch_add(&n_errors, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&n_fallbacks, 1, __ATOMIC_RELAXED);
    }
    freeReplyObject(r);
    conn_put(c, true);
    return v;
}

void redis_charge(const char *tenant, long tokens)
{
    if (tokens > 0)
        enqueue(JOB_CHARGE, tenant, tokens);
}

static void nsupport_key(const char *base_url, char *out, size_t len)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    char hex[17];

    SHA256((const unsigned char *)base_url, strlen(base_url), d);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    snprintf(out, len, "%snsupport:%s", prefix, hex);
}

int redis_nsupport_get(const char *base_url)
{
    char key[192];
    redisContext *c;
    redisReply *r;
    int v = -1;

    if (!enabled)
        return -1;
    nsupport_key(base_url, key, sizeof(key));
    if (!(c = conn_get()))
        return -1;
    r = redisCommand(c, "GET %s", key);
    if (!r) {
        conn_put(c, false);
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING && r->len == 1)
        v = r->str[0] == '1' ? 1 : r->str[0] == '0' ? 0 : -1;
    freeReplyObject(r);
    conn_put(c, true);
    return v;
}

void redis_nsupport_set(const char *base_url, bool supported)
{
    char key[192];

    if (!enabled)
        return;
    nsupport_key(base_url, key, sizeof(key));
    enqueue(JOB_NSUPPORT, key, supported);
}

void redis_metrics_render(struct buf *b)
{
    if (!enabled)
        return;
    buf_printf(b,
               "# HELP optillm_redis_up 1 when the last Redis operation succeeded.\n"
               "# TYPE optillm_redis_up gauge\noptillm_redis_up %d\n"
               "# HELP optillm_redis_errors_total Failed Redis connections and commands.\n"
               "# TYPE optillm_redis_errors_total counter\noptillm_redis_errors_total %llu\n"
               "# HELP optillm_redis_fallbacks_total Limit decisions made without Redis "
               "(--redis-failure).\n"
               "# TYPE optillm_redis_fallbacks_total counter\noptillm_redis_fallbacks_total %llu\n"
               "# HELP optillm_redis_dropped_total Shared writes lost (queue full, or Redis down "
               "at exit).\n"
               "# TYPE optillm_redis_dropped_total counter\noptillm_redis_dropped_total %llu\n",
               __atomic_load_n(&up, __ATOMIC_RELAXED), __atomic_load_n(&n_errors, __ATOMIC_RELAXED),
               __atomic_load_n(&n_fallbacks, __ATOMIC_RELAXED),
               __atomic_load_n(&n_dropped, __ATOMIC_RELAXED));
}
