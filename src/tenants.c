/* tenants.c: multi-tenant keys (--tenants FILE): who may use the proxy, with which upstream,
 * approaches and models, within which limits. The file holds SHA-256 digests of the keys,
 * never the keys. SIGHUP reloads it; a file that does not parse leaves the old set in force.
 *
 * File format (JSON):
 *   {"tenants": [{"name": "alice", "key_sha256": "<64 hex>",
 *                 "upstream": {"base_url": "https://...", "key_env": "ALICE_OPENAI_KEY"},
 *                 "approaches": ["none", "bon", "moa"], "models": ["gpt-4o-mini"],
 *                 "limits": {"max_calls_per_request": 12, "requests_per_minute": 60,
 *                            "tokens_per_day": 1000000}}]}
 * Everything but name and key_sha256 is optional ("approaches"/"models" absent = all). */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "internal.h"
#include "log.h"
#include "providers.h"
#include "redis.h"

#define MAX_TENANTS 4096

/* Usage counters live per tenant name and survive reloads. */
struct tenant_usage {
    char name[64];
    double tokens_bucket; /* requests-per-minute bucket (fractional requests) */
    long long bucket_us;  /* last refill */
    long long day;        /* UTC day number of day_tokens */
    long long day_tokens;
    struct tenant_usage *next;
};

struct tenant_set {
    int refs; /* guarded by set_mu */
    struct tenant *items;
    size_t n;
};

static pthread_mutex_t set_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by set_mu: */
static struct tenant_set *current;
static char *tenants_path;

static pthread_mutex_t usage_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by usage_mu: */
static struct tenant_usage *usages;

static void set_free(struct tenant_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        struct tenant *t = &s->items[i];

        free(t->base_url);
        if (t->upstream_key)
            explicit_bzero(t->upstream_key, strlen(t->upstream_key));
        free(t->upstream_key);
        for (size_t j = 0; j < t->napproaches; j++)
            free(t->approaches[j]);
        free(t->approaches);
        for (size_t j = 0; j < t->nmodels; j++)
            free(t->models[j]);
        free(t->models);
    }
    free(s->items);
    free(s);
}

static void set_release(struct tenant_set *s)
{
    int left;

    if (!s)
        return;
    pthread_mutex_lock(&set_mu);
    left = --s->refs;
    pthread_mutex_unlock(&set_mu);
    if (left == 0)
        set_free(s);
}

static bool hex_digest(const char *h, unsigned char out[32])
{
    if (!h || strlen(h) != 64)
        return false;
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;

        for (int k = 0; k < 2; k++) {
            int c = tolower((unsigned char)h[2 * i + k]);

            if (c >= '0' && c <= '9')
                v = v * 16 + (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v = v * 16 + (unsigned)(c - 'a' + 10);
            else
                return false;
        }
        out[i] = (unsigned char)v;
    }
    return true;
}

static char **string_list(const cJSON *arr, size_t *n, const char *what, const char *tenant,
                          bool *bad)
{
    char **out;
    const cJSON *it;
    size_t i = 0;

    *n = 0;
    if (!arr)
        return NULL;
    if (!cJSON_IsArray(arr)) {
        log_error("tenants: %s of %s must be an array of strings", what, tenant);
        *bad = true;
        return NULL;
    }
    out = xcalloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it)) {
            log_error("tenants: %s of %s must be strings", what, tenant);
            *bad = true;
            continue;
        }
        out[i++] = xstrdup(it->valuestring);
    }
    *n = i;
    return out;
}

static long limit_of(const cJSON *limits, const char *name, const char *tenant, bool *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(limits, name);

    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 1e15) {
        log_error("tenants: limits.%s of %s must be a positive number", name, tenant);
        *bad = true;
        return 0;
    }
    return (long)v->valuedouble;
}

/* Parses the file into a new set; NULL (logged) when it does not parse. */
static struct tenant_set *load(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct buf b;
    char chunk[8192];
    size_t got;
    cJSON *root, *arr, *it;
    struct tenant_set *s;
    bool bad = false;

    if (!f) {
        log_error("tenants: cannot open %s", path);
        return NULL;
    }
    buf_init(&b, 16u << 20);
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (buf_append(&b, chunk, got) < 0) {
            log_error("tenants: %s is larger than 16 MiB", path);
            fclose(f);
            buf_free(&b);
            return NULL;
        }
    fclose(f);
    root = cJSON_ParseWithLength(buf_cstr(&b), b.len);
    buf_free(&b);
    arr = root ? cJSON_GetObjectItemCaseSensitive(root, "tenants") : NULL;
    if (!cJSON_IsArray(arr)) {
        log_error("tenants: %s is not JSON of the form {\"tenants\": [...]}", path);
        cJSON_Delete(root);
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    s->refs = 1;
    s->items = xcalloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(struct tenant));
    cJSON_ArrayForEach(it, arr)
    {
        struct tenant *t = &s->items[s->n];
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON *dig = cJSON_GetObjectItemCaseSensitive(it, "key_sha256");
        const cJSON *up = cJSON_GetObjectItemCaseSensitive(it, "upstream");
        const cJSON *limits = cJSON_GetObjectItemCaseSensitive(it, "limits");

        if (s->n >= MAX_TENANTS || !cJSON_IsString(name) || !name->valuestring[0] ||
            strlen(name->valuestring) >= sizeof(t->name)) {
            log_error("tenants: entry %zu needs a \"name\" (1-63 characters)", s->n);
            bad = true;
            break;
        }
        snprintf(t->name, sizeof(t->name), "%s", name->valuestring);
        if (!cJSON_IsString(dig) || !hex_digest(dig->valuestring, t->digest)) {
            log_error("tenants: %s needs \"key_sha256\": 64 hex digits (see 'optillm keys')",
                      t->name);
            bad = true;
            break;
        }
        for (size_t j = 0; j < s->n; j++) {
            if (!strcmp(s->items[j].name, t->name) ||
                !CRYPTO_memcmp(s->items[j].digest, t->digest, 32)) {
                log_error("tenants: %s repeats a name or a key digest", t->name);
                bad = true;
            }
        }
        if (up) {
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(up, "base_url");
            const cJSON *k = cJSON_GetObjectItemCaseSensitive(up, "key_env");

            if (cJSON_IsString(u)) {
                size_t l = strlen(u->valuestring);

                if (strncmp(u->valuestring, "http://", 7) &&
                    strncmp(u->valuestring, "https://", 8)) {
                    log_error("tenants: upstream.base_url of %s must be http(s)", t->name);
                    bad = true;
                }
                t->base_url = xstrdup(u->valuestring);
                while (l && t->base_url[l - 1] == '/')
                    t->base_url[--l] = '\0';
            }
            if (cJSON_IsString(k)) {
                const char *v = getenv(k->valuestring);

                if (!v || !*v) {
                    log_error("tenants: %s's key variable %s is not set", t->name, k->valuestring);
                    bad = true;
                } else {
                    t->upstream_key = xstrdup(v);
                }
            }
            /* The server's key never goes to a tenant's own host: such a tenant must bring
             * its own key (refused at start-up, and at SIGHUP the old set stays). */
            if (t->base_url && !cJSON_IsString(k)) {
                log_error("tenants: %s has upstream.base_url but no upstream.key_env; the "
                          "server's key is never sent to a tenant's own upstream",
                          t->name);
                bad = true;
            }
        }
        t->provider = -1;
        {
            const cJSON *pv = cJSON_GetObjectItemCaseSensitive(it, "provider");

            if (pv &&
                (!cJSON_IsString(pv) || (t->provider = providers_find(pv->valuestring)) < 0)) {
                log_error("tenants: %s's \"provider\" names no provider of --providers", t->name);
                bad = true;
            }
        }
        t->approaches = string_list(cJSON_GetObjectItemCaseSensitive(it, "approaches"),
                                    &t->napproaches, "approaches", t->name, &bad);
        t->models = string_list(cJSON_GetObjectItemCaseSensitive(it, "models"), &t->nmodels,
                                "models", t->name, &bad);
        t->max_calls = limit_of(limits, "max_calls_per_request", t->name, &bad);
        t->rpm = limit_of(limits, "requests_per_minute", t->name, &bad);
        t->tokens_per_day = limit_of(limits, "tokens_per_day", t->name, &bad);
        s->n++;
    }
    cJSON_Delete(root);
    if (bad) {
        set_free(s);
        return NULL;
    }
    return s;
}

int tenants_init(const char *path)
{
    struct tenant_set *s = load(path);

    if (!s)
        return -1;
    pthread_mutex_lock(&set_mu);
    current = s;
    tenants_path = xstrdup(path);
    pthread_mutex_unlock(&set_mu);
    log_info("tenants: %zu loaded from %s", s->n, path);
    return 0;
}

bool tenants_enabled(void)
{
    bool on;

    pthread_mutex_lock(&set_mu);
    on = current != NULL;
    pthread_mutex_unlock(&set_mu);
    return on;
}

void tenants_reload(void)
{
    struct tenant_set *s, *old;
    char *path;

    pthread_mutex_lock(&set_mu);
    path = tenants_path ? xstrdup(tenants_path) : NULL;
    pthread_mutex_unlock(&set_mu);
    if (!path)
        return;
    s = load(path);
    if (!s) {
        log_error("tenants: reload of %s failed; the previous tenants stay in force", path);
        free(path);
        return;
    }
    pthread_mutex_lock(&set_mu);
    old = current;
    current = s;
    pthread_mutex_unlock(&set_mu);
    set_release(old);
    log_info("tenants: reloaded %zu from %s", s->n, path);
    free(path);
}

void tenants_cleanup(void)
{
    pthread_mutex_lock(&set_mu);
    struct tenant_set *s = current;
    current = NULL;
    free(tenants_path);
    tenants_path = NULL;
    pthread_mutex_unlock(&set_mu);
    set_release(s);
    pthread_mutex_lock(&usage_mu);
    while (usages) {
        struct tenant_usage *u = usages;

        usages = u->next;
        free(u);
    }
    pthread_mutex_unlock(&usage_mu);
}

const struct tenant *tenants_match(const char *key, void **hold)
{
    unsigned char d[32];
    const struct tenant *found = NULL;
    struct tenant_set *s;

    *hold = NULL;
    SHA256((const unsigned char *)key, strlen(key), d);
    pthread_mutex_lock(&set_mu);
    s = current;
    if (s) {
        /* Constant time over the whole set: no early exit on a match. */
        for (size_t i = 0; i < s->n; i++)
            if (CRYPTO_memcmp(s->items[i].digest, d, 32) == 0)
                found = &s->items[i];
        if (found) {
            s->refs++;
            *hold = s;
        }
    }
    pthread_mutex_unlock(&set_mu);
    return found;
}

void tenants_release(void *hold)
{
    set_release(hold);
}

static bool listed(char *const *list, size_t n, const char *v, size_t vlen)
{
    if (n == 0)
        return true; /* no list: everything allowed */
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == vlen && strncmp(list[i], v, vlen) == 0)
            return true;
    return false;
}

static int forbidden(struct px_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int forbidden(struct px_error *err, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    px_fail(err, PX_EFORBIDDEN, "model", "%s", msg);
    if (err)
        snprintf(err->err_code, sizeof(err->err_code), "%s", code);
    return PX_EFORBIDDEN;
}

int tenants_allow(const struct tenant *t, const struct chat_request *req, struct px_error *err)
{
    size_t ml = strlen(req->upstream_model);

    /* 403, not 401: the key is fine, this use of it is not (an SDK would otherwise report
     * a wrong key). */
    if (!listed(t->models, t->nmodels, req->upstream_model, ml))
        return forbidden(err, "model_not_allowed", "model '%.100s' is not available to you",
                         req->upstream_model);
    if (req->route.count == 0) {
        if (!listed(t->approaches, t->napproaches, "none", 4))
            return forbidden(err, "approach_not_allowed", "passthrough is not available to you");
    }
    for (int i = 0; i < req->route.count; i++) {
        const char *slug = req->route.steps[i]->slug;

        if (!listed(t->approaches, t->napproaches, slug, strlen(slug)))
            return forbidden(err, "approach_not_allowed",
                             "approach '%.64s' is not available to you", slug);
    }
    if (t->max_calls > 0) {
        long planned = 0;

        for (int i = 0; i < req->route.count; i++)
            planned += req->route.steps[i]->calls > 0 ? req->route.steps[i]->calls : 1;
        if (req->route.count == 0)
            planned = 1;
        planned *= req->n;
        if (planned > t->max_calls)
            return px_fail(err, PX_EINVAL, "model",
                           "this request plans %ld upstream calls; your limit is %ld per request",
                           planned, t->max_calls);
    }
    return PX_OK;
}

/* Caller holds usage_mu. */
static struct tenant_usage *usage_of(const char *name)
{
    struct tenant_usage *u;

    for (u = usages; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return u;
    u = xcalloc(1, sizeof(*u));
    snprintf(u->name, sizeof(u->name), "%s", name);
    u->bucket_us = -1;
    u->next = usages;
    usages = u;
    return u;
}

/* --redis-url: the limits shared by every instance. Returns PX_OK, PX_ELIMIT, PX_EBUSY
 * (Redis down, --redis-failure closed) or 1: Redis down, decide locally. */
static int shared_admit(const struct tenant *t, struct px_error *err, int *retry_after)
{
    bool daily;

    switch (redis_admit(t->name, t->rpm, t->tokens_per_day, retry_after, &daily)) {
    case REDIS_ADMIT:
        return PX_OK;
    case REDIS_LIMITED:
        if (daily)
            px_fail(err, PX_ELIMIT, NULL,
                    "daily token limit of %ld reached; it resets at 00:00 UTC", t->tokens_per_day);
        else
            px_fail(err, PX_ELIMIT, NULL, "rate limit of %ld requests per minute reached", t->rpm);
        snprintf(err->err_code, sizeof(err->err_code), "rate_limit_exceeded");
        return PX_ELIMIT;
    case REDIS_DOWN:
        break;
    }
    if (!redis_fail_closed())
        return 1;
    *retry_after = 1;
    return px_fail(err, PX_EBUSY, NULL,
                   "the shared limits are unavailable (Redis unreachable); retry shortly");
}

int tenants_admit(const struct tenant *t, struct px_error *err, int *retry_after)
{
    long long now = px_now_us();
    long long day = (long long)time(NULL) / 86400;
    int rc = PX_OK;

    *retry_after = 0;
    if (redis_enabled() && (t->rpm > 0 || t->tokens_per_day > 0) &&
        (rc = shared_admit(t, err, retry_after)) <= 0)
        return rc;
    rc = PX_OK;
    pthread_mutex_lock(&usage_mu);
    struct tenant_usage *u = usage_of(t->name);
    if (u->day != day) {
        u->day = day;
        u->day_tokens = 0;
    }
    if (t->tokens_per_day > 0 && u->day_tokens >= t->tokens_per_day) {
        *retry_after = (int)(86400 - (long long)time(NULL) % 86400);
        rc = px_fail(err, PX_ELIMIT, NULL,
                     "daily token limit of %ld reached; it resets at 00:00 UTC", t->tokens_per_day);
    } else if (t->rpm > 0) {
        /* A token bucket of rpm requests, refilled at rpm per minute. */
        if (u->bucket_us < 0) {
            u->tokens_bucket = (double)t->rpm;
            u->bucket_us = now;
        }
        u->tokens_bucket += (double)(now - u->bucket_us) * (double)t->rpm / 60e6;
        if (u->tokens_bucket > (double)t->rpm)
            u->tokens_bucket = (double)t->rpm;
        u->bucket_us = now;
        if (u->tokens_bucket < 1) {
            *retry_after = (int)((1 - u->tokens_bucket) * 60 / (double)t->rpm) + 1;
            rc = px_fail(err, PX_ELIMIT, NULL, "rate limit of %ld requests per minute reached",
                         t->rpm);
        } else {
            u->tokens_bucket -= 1;
        }
    }
    pthread_mutex_unlock(&usage_mu);
    if (rc < 0)
        snprintf(err->err_code, sizeof(err->err_code), "rate_limit_exceeded");
    return rc;
}

void tenants_charge(const struct tenant *t, long tokens)
{
    long long day = (long long)time(NULL) / 86400;

    if (redis_enabled() && t->tokens_per_day > 0)
        redis_charge(t->name, tokens); /* asynchronous; the local count below is the fallback */
    pthread_mutex_lock(&usage_mu);
    struct tenant_usage *u = usage_of(t->name);
    if (u->day != day) {
        u->day = day;
        u->day_tokens = 0;
    }
    u->day_tokens += tokens;
    pthread_mutex_unlock(&usage_mu);
}
