/* providers.c: the --providers set (OptiLLM's proxy plugin, done in the transport): strategies
 * round_robin, weighted and failover; a provider that fails is taken out and probed back;
 * per-provider concurrency caps with a bounded wait queue. One mutex guards the state: it is
 * taken once per attempt, next to a network round trip. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "providers.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "internal.h"

#define PROV_MAX 64 /* the tried set is a 64-bit mask */

struct provider {
    char name[64];
    char *base_url;
    char *key; /* from key_env, or NULL */
    int weight;
    char **models;
    int nmodels;
    int max_concurrent; /* 0 = no cap */
    int queue_max;      /* waiting transfers when capped */
    /* Guarded by mu. */
    int inflight, waiting, fails;
    bool down, probing;
    long long next_probe_us;
    long picks;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct provider *provs;
static int nprov;
static enum prov_strategy strategy;
static int fail_threshold = 3;
static double health_interval = 5.0;
static unsigned rr_cursor;
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static int total_waiting;

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void providers_free(void)
{
    for (int i = 0; i < nprov; i++) {
        free(provs[i].base_url);
        if (provs[i].key) {
            explicit_bzero(provs[i].key, strlen(provs[i].key));
            free(provs[i].key);
        }
        for (int j = 0; j < provs[i].nmodels; j++)
            free(provs[i].models[j]);
        free(provs[i].models);
    }
    free(provs);
    provs = NULL;
    nprov = 0;
    rr_cursor = 0;
    total_waiting = 0;
}

static int parse_provider(const cJSON *o, struct provider *p, char *err, size_t errlen)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "base_url");
    const cJSON *kenv = cJSON_GetObjectItemCaseSensitive(o, "key_env");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "weight");
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(o, "models");
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(o, "max_concurrent");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "queue");

    if (!cJSON_IsObject(o))
        return fail(err, errlen, "providers: each entry must be an object");
    if (!cJSON_IsString(name) || !name->valuestring[0] ||
        strlen(name->valuestring) >= sizeof(p->name))
        return fail(err, errlen, "providers: an entry needs a \"name\" (1-63 chars)");
    snprintf(p->name, sizeof(p->name), "%s", name->valuestring);
    if (!cJSON_IsString(url) || (strncmp(url->valuestring, "http://", 7) != 0 &&
                                 strncmp(url->valuestring, "https://", 8) != 0))
        return fail(err, errlen, "providers: %s needs an http(s) \"base_url\"", p->name);
    p->base_url = xstrdup(url->valuestring);
    for (size_t l = strlen(p->base_url); l && p->base_url[l - 1] == '/';)
        p->base_url[--l] = '\0';
    if (kenv) {
        const char *v;

        if (!cJSON_IsString(kenv))
            return fail(err, errlen, "providers: %s: \"key_env\" must be a string", p->name);
        v = getenv(kenv->valuestring);
        if (!v || !v[0])
            return fail(err, errlen, "providers: %s: its key_env variable is not set", p->name);
        for (const char *c = v; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                return fail(err, errlen, "providers: %s: its key has control characters", p->name);
        p->key = xstrdup(v);
    }
    p->weight = 1;
    if (w) {
        if (!cJSON_IsNumber(w) || w->valuedouble < 0 || w->valuedouble > 1000000)
            return fail(err, errlen, "providers: %s: \"weight\" must be 0..1000000", p->name);
        p->weight = (int)w->valuedouble;
    }
    if (models) {
        const cJSON *m;

        if (!cJSON_IsArray(models))
            return fail(err, errlen, "providers: %s: \"models\" must be an array", p->name);
        p->models = xcalloc((size_t)cJSON_GetArraySize(models) + 1, sizeof(char *));
        cJSON_ArrayForEach(m, models)
        {
            if (!cJSON_IsString(m))
                return fail(err, errlen, "providers: %s: \"models\" holds strings", p->name);
            p->models[p->nmodels++] = xstrdup(m->valuestring);
        }
    }
    if (mc) {
        if (!cJSON_IsNumber(mc) || !(mc->valuedouble >= 0 && mc->valuedouble <= 1000000))
            return fail(err, errlen, "providers: %s: \"max_concurrent\" must be 0..1000000",
                        p->name);
        p->max_concurrent = (int)mc->valuedouble;
    }
    p->queue_max = 64;
    if (q) {
        if (!cJSON_IsNumber(q) || !(q->valuedouble >= 0 && q->valuedouble <= 1000000))
            return fail(err, errlen, "providers: %s: \"queue\" must be 0..1000000", p->name);
        p->queue_max = (int)q->valuedouble;
    }
    return 0;
}

int providers_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text;
    long len;
    cJSON *root;
    const cJSON *s, *list, *o;
    int rc = 0;

    providers_free();
    if (!f)
        return fail(err, errlen, "providers: cannot open %s", path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len < 0 || len > (1 << 20)) {
        fclose(f);
        return fail(err, errlen, "providers: %s is too large", path);
    }
    text = xmalloc((size_t)len + 1);
    len = (long)fread(text, 1, (size_t)len, f);
    text[len] = '\0';
    fclose(f);
    root = cJSON_ParseWithLength(text, (size_t)len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(err, errlen, "providers: %s is not a JSON object", path);
    }
    strategy = PROV_ROUND_ROBIN;
    fail_threshold = 3;
    health_interval = 5.0;
    s = cJSON_GetObjectItemCaseSensitive(root, "strategy");
    if (s) {
        if (cJSON_IsString(s) && strcmp(s->valuestring, "round_robin") == 0)
            strategy = PROV_ROUND_ROBIN;
        else if (cJSON_IsString(s) && strcmp(s->valuestring, "weighted") == 0)
            strategy = PROV_WEIGHTED;
        else if (cJSON_IsString(s) && strcmp(s->valuestring, "failover") == 0)
            strategy = PROV_FAILOVER;
        else
            rc = fail(err, errlen, "providers: \"strategy\" is round_robin, weighted or failover");
    }
    s = cJSON_GetObjectItemCaseSensitive(root, "fail_threshold");
    if (!rc && s) {
        if (cJSON_IsNumber(s) && s->valuedouble >= 1 && s->valuedouble <= 1000000)
            fail_threshold = (int)s->valuedouble;
        else
            rc = fail(err, errlen, "providers: \"fail_threshold\" must be 1..1000000");
    }
    s = cJSON_GetObjectItemCaseSensitive(root, "health_interval");
    if (!rc && s) {
        if (cJSON_IsNumber(s) && s->valuedouble > 0)
            health_interval = s->valuedouble;
        else
            rc = fail(err, errlen, "providers: \"health_interval\" (seconds) must be > 0");
    }
    list = cJSON_GetObjectItemCaseSensitive(root, "providers");
    if (!rc && (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1 ||
                cJSON_GetArraySize(list) > PROV_MAX))
        rc = fail(err, errlen, "providers: \"providers\" must list 1 to 64 upstreams");
    if (!rc) {
        provs = xcalloc((size_t)cJSON_GetArraySize(list), sizeof(*provs));
        cJSON_ArrayForEach(o, list)
        {
            rc = parse_provider(o, &provs[nprov++], err, errlen);
            if (rc)
                break;
            for (int i = 0; i < nprov - 1; i++)
                if (strcmp(provs[i].name, provs[nprov - 1].name) == 0) {
                    rc = fail(err, errlen, "providers: the name %s is used twice", provs[i].name);
                    break;
                }
            if (rc)
                break;
        }
    }
    cJSON_Delete(root);
    if (rc)
        providers_free();
    else
        rng ^= (uint64_t)time(NULL) * 2654435761u;
    return rc;
}

bool providers_enabled(void)
{
    return nprov > 0;
}
int providers_count(void)
{
    return nprov;
}
const char *providers_name(int i)
{
    return provs[i].name;
}
const char *providers_base_url(int i)
{
    return provs[i].base_url;
}
const char *providers_key(int i)
{
    return provs[i].key;
}

void providers_seed(uint64_t seed)
{
    pthread_mutex_lock(&mu);
    rng = seed ? seed : 1;
    pthread_mutex_unlock(&mu);
}

int providers_find(const char *name)
{
    for (int i = 0; name && i < nprov; i++)
        if (strcmp(provs[i].name, name) == 0)
            return i;
    return -1;
}

static bool serves(const struct provider *p, const char *model)
{
    if (p->nmodels == 0)
        return true;
    for (int j = 0; model && j < p->nmodels; j++)
        if (strcmp(p->models[j], model) == 0)
            return true;
    return false;
}

/* Caller holds mu. */
static bool eligible(int i, const char *model, int pin, uint64_t tried)
{
    return !provs[i].down && !(tried & (1ull << i)) && (pin < 0 || pin == i) &&
           serves(&provs[i], model) && (strategy != PROV_WEIGHTED || provs[i].weight > 0);
}

static bool has_slot(int i)
{
    return provs[i].max_concurrent == 0 || provs[i].inflight < provs[i].max_concurrent;
}

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Caller holds mu: the strategy's choice among eligible providers with a free slot (or, with
 * any_slot, regardless of slots: the provider whose queue a waiting transfer joins). */
static int choose(const char *model, int pin, uint64_t tried, bool any_slot)
{
    int best = -1;

    if (strategy == PROV_FAILOVER) {
        for (int i = 0; i < nprov && best < 0; i++)
            if (eligible(i, model, pin, tried) && (any_slot || has_slot(i)))
                best = i;
    } else if (strategy == PROV_ROUND_ROBIN) {
        for (int k = 0; k < nprov && best < 0; k++) {
            int i = (int)((rr_cursor + (unsigned)k) % (unsigned)nprov);

            if (eligible(i, model, pin, tried) && (any_slot || has_slot(i)))
                best = i;
        }
        if (best >= 0 && !any_slot)
            rr_cursor = (unsigned)best + 1;
    } else {
        long total = 0;

        for (int i = 0; i < nprov; i++)
            if (eligible(i, model, pin, tried) && (any_slot || has_slot(i)))
                total += provs[i].weight;
        if (total > 0) {
            long r = (long)(next_rand() % (uint64_t)total);

            for (int i = 0; i < nprov && best < 0; i++) {
                if (!eligible(i, model, pin, tried) || !(any_slot || has_slot(i)))
                    continue;
                if (r < provs[i].weight)
                    best = i;
                r -= provs[i].weight;
            }
        }
    }
    return best;
}

static void unwait_locked(int *waiting)
{
    if (*waiting >= 0) {
        provs[*waiting].waiting--;
        total_waiting--;
        *waiting = -1;
    }
}

enum prov_pick providers_acquire(const char *model, int pin, uint64_t tried, int *out, int *waiting)
{
    enum prov_pick r;
    int i;

    pthread_mutex_lock(&mu);
    i = choose(model, pin, tried, false);
    if (i >= 0) {
        provs[i].inflight++;
        provs[i].picks++;
        *out = i;
        unwait_locked(waiting);
        r = PROV_OK;
    } else if (*waiting >= 0 && !provs[*waiting].down) {
        r = PROV_BUSY; /* still in its queue */
    } else {
        unwait_locked(waiting);
        i = choose(model, pin, tried, true);
        if (i >= 0 && provs[i].waiting < provs[i].queue_max) {
            provs[i].waiting++;
            total_waiting++;
            *waiting = i;
            r = PROV_BUSY;
        } else {
            r = PROV_NONE;
        }
    }
    pthread_mutex_unlock(&mu);
    return r;
}

void providers_unwait(int *waiting)
{
    pthread_mutex_lock(&mu);
    unwait_locked(waiting);
    pthread_mutex_unlock(&mu);
}

bool providers_release(int i, bool failed, long long now_us)
{
    bool wake;

    pthread_mutex_lock(&mu);
    provs[i].inflight--;
    if (!failed) {
        provs[i].fails = 0;
    } else if (++provs[i].fails >= fail_threshold && !provs[i].down) {
        provs[i].down = true;
        provs[i].next_probe_us = now_us + (long long)(health_interval * 1e6);
    }
    wake = total_waiting > 0;
    pthread_mutex_unlock(&mu);
    return wake;
}

bool providers_available(const char *model, int pin, uint64_t tried)
{
    bool any = false;

    pthread_mutex_lock(&mu);
    for (int i = 0; i < nprov && !any; i++)
        any = eligible(i, model, pin, tried);
    pthread_mutex_unlock(&mu);
    return any;
}

int providers_probe_due(long long now_us)
{
    int r = -1;

    pthread_mutex_lock(&mu);
    for (int i = 0; i < nprov && r < 0; i++)
        if (provs[i].down && !provs[i].probing && provs[i].next_probe_us <= now_us) {
            provs[i].probing = true;
            r = i;
        }
    pthread_mutex_unlock(&mu);
    return r;
}

void providers_probe_result(int i, bool ok, long long now_us)
{
    pthread_mutex_lock(&mu);
    provs[i].probing = false;
    if (ok) {
        provs[i].down = false;
        provs[i].fails = 0;
    } else {
        provs[i].next_probe_us = now_us + (long long)(health_interval * 1e6);
    }
    pthread_mutex_unlock(&mu);
}

bool providers_is_down(int i)
{
    bool d;

    pthread_mutex_lock(&mu);
    d = provs[i].down;
    pthread_mutex_unlock(&mu);
    return d;
}

long providers_picks(int i)
{
    long n;

    pthread_mutex_lock(&mu);
    n = provs[i].picks;
    pthread_mutex_unlock(&mu);
    return n;
}
