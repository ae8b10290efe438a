/* router.c: the routes table of the router approach and its classification cache. */
#include "router.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "approach.h"
#include "buf.h"
#include "internal.h"

#define ROUTES_MAX  32
#define LABEL_MAX   32
#define DESC_MAX    300
#define CACHE_SLOTS 4096 /* a power of two */

extern const struct approach approach_self_consistency;
extern const struct approach approach_plansearch;
extern const struct approach approach_moa;
extern const struct approach approach_re2;

static const struct router_route builtin[] = {
    {"math", "arithmetic, algebra, word problems and other questions with one exact answer",
     &approach_self_consistency},
    {"code", "writing, fixing or explaining programs", &approach_plansearch},
    {"reasoning", "multi-step logic, planning, analysis or decisions", &approach_moa},
    {"factual", "questions about facts, definitions or knowledge", &approach_re2},
    {"creative", "stories, poems, marketing text and other open-ended writing", NULL},
    {"chat", "greetings, small talk and simple requests", NULL},
};
static const struct router_route builtin_default = {"default", "", NULL};

/* The loaded table (NULL: built-in); written only before requests run. */
static struct router_route *loaded;
static size_t nloaded;
static struct router_route loaded_default;
static char *classifier_model;
static char *strings; /* one block for every label, description and the model */

struct slot {
    uint64_t key;
    const struct router_route *route; /* NULL: empty */
};
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot cache[CACHE_SLOTS]; /* guarded by cache_mu */
static long hits, misses;              /* guarded by cache_mu */

/* Decisions by (route label, approach that ran); guarded by cache_mu. Labels and slugs are
 * static or live as long as the loaded table. */
#define DECISIONS_MAX 128
static struct decision {
    const char *label, *ran;
    long n;
} decisions[DECISIONS_MAX];
static int ndecisions;
static long failures, unrecognised, decided;

static void cache_clear(void)
{
    pthread_mutex_lock(&cache_mu);
    memset(cache, 0, sizeof(cache));
    hits = misses = 0;
    ndecisions = 0;
    failures = unrecognised = decided = 0;
    pthread_mutex_unlock(&cache_mu);
}

void router_reset(void)
{
    free(loaded);
    free(strings);
    loaded = NULL;
    strings = NULL;
    classifier_model = NULL;
    nloaded = 0;
    cache_clear();
}

size_t router_routes(const struct router_route **out)
{
    if (loaded) {
        *out = loaded;
        return nloaded;
    }
    *out = builtin;
    return PX_ARRAY_LEN(builtin);
}

const struct router_route *router_find(const char *label, size_t len)
{
    const struct router_route *r;
    size_t n = router_routes(&r);

    for (size_t i = 0; i < n; i++)
        if (strlen(r[i].label) == len && strncasecmp(r[i].label, label, len) == 0)
            return &r[i];
    return NULL;
}

const struct router_route *router_default(void)
{
    return loaded ? &loaded_default : &builtin_default;
}

const char *router_classifier_model(void)
{
    return classifier_model;
}

const struct router_route *router_cache_get(uint64_t key)
{
    const struct router_route *r = NULL;
    struct slot *s = &cache[key & (CACHE_SLOTS - 1)];

    pthread_mutex_lock(&cache_mu);
    if (s->route && s->key == key)
        r = s->route;
    if (r)
        hits++;
    else
        misses++;
    pthread_mutex_unlock(&cache_mu);
    return r;
}

void router_cache_put(uint64_t key, const struct router_route *r)
{
    struct slot *s = &cache[key & (CACHE_SLOTS - 1)];

    pthread_mutex_lock(&cache_mu);
    s->key = key;
    s->route = r;
    pthread_mutex_unlock(&cache_mu);
}

void router_cache_stats(long *h, long *m)
{
    pthread_mutex_lock(&cache_mu);
    *h = hits;
    *m = misses;
    pthread_mutex_unlock(&cache_mu);
}

void router_count(const struct router_route *r, const char *ran, const char *how)
{
    int i;

    pthread_mutex_lock(&cache_mu);
    decided++;
    if (strcmp(how, "classifier failed") == 0)
        failures++;
    else if (strcmp(how, "unrecognised") == 0)
        unrecognised++;
    for (i = 0; i < ndecisions; i++)
        if (decisions[i].label == r->label && strcmp(decisions[i].ran, ran) == 0)
            break;
    if (i == ndecisions && ndecisions < DECISIONS_MAX)
        decisions[ndecisions++] = (struct decision){r->label, ran, 0};
    if (i < ndecisions)
        decisions[i].n++;
    pthread_mutex_unlock(&cache_mu);
}

void router_metrics_render(struct buf *b)
{
    pthread_mutex_lock(&cache_mu);
    if (decided) {
        buf_puts(b, "# HELP optillm_router_decisions_total Requests routed by the router, by "
                    "route (task type) and the approach that ran (none: one plain completion).\n"
                    "# TYPE optillm_router_decisions_total counter\n");
        for (int i = 0; i < ndecisions; i++)
            buf_printf(b, "optillm_router_decisions_total{route=\"%s\",approach=\"%s\"} %ld\n",
                       decisions[i].label, decisions[i].ran, decisions[i].n);
        buf_printf(b,
                   "# HELP optillm_router_cache_total Router classifications found in the cache "
                   "(hit) or asked for (miss).\n"
                   "# TYPE optillm_router_cache_total counter\n"
                   "optillm_router_cache_total{result=\"hit\"} %ld\n"
                   "optillm_router_cache_total{result=\"miss\"} %ld\n"
                   "# HELP optillm_router_fallbacks_total Requests the router's default answered "
                   "because the classification call failed or named no known type.\n"
                   "# TYPE optillm_router_fallbacks_total counter\n"
                   "optillm_router_fallbacks_total{reason=\"classifier_failed\"} %ld\n"
                   "optillm_router_fallbacks_total{reason=\"unrecognised\"} %ld\n",
                   hits, misses, failures, unrecognised);
    }
    pthread_mutex_unlock(&cache_mu);
}

/* ---- loading ----------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t wl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, wl, fmt, ap);
    va_end(ap);
    return -1;
}

static bool label_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > LABEL_MAX)
        return false;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_' && *s != '-')
            return false;
    return true;
}

/* A route's approach: "none" (NULL) or an answering approach other than router itself. */
static int slug_check(const char *path, const char *what, const char *slug, bool code_execution,
                      const struct approach **out, char *why, size_t wl)
{
    const struct approach *a;

    if (strcmp(slug, "none") == 0) {
        *out = NULL;
        return 0;
    }
    a = approach_find(slug, strlen(slug));
    if (!a)
        return fail(why, wl, "--router-config %s: %s: unknown approach '%s' (known: none, %s)",
                    path, what, slug, approach_slug_list());
    if (!a->run || a->prepare)
        return fail(why, wl,
                    "--router-config %s: %s: '%s' is a plugin that shapes a request, not an "
                    "approach that answers one",
                    path, what, slug);
    if (strcmp(a->slug, "router") == 0)
        return fail(why, wl, "--router-config %s: %s: the router cannot route to itself", path,
                    what);
    if (a->code_execution && !code_execution)
        return fail(why, wl,
                    "--router-config %s: %s: '%s' runs code; start the server with "
                    "--enable-code-execution or route elsewhere",
                    path, what, slug);
    *out = a;
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *text;
    long l;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (l = ftell(f)) < 0 || l > (1 << 20) ||
        fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    text = xmalloc((size_t)l + 1);
    *len = fread(text, 1, (size_t)l, f);
    text[*len] = '\0';
    fclose(f);
    return text;
}

int router_load(const char *path, bool code_execution, char *why, size_t wl)
{
    size_t len = 0;
    char *text = slurp(path, &len);
    cJSON *root;
    const cJSON *routes, *it, *m, *d;
    struct router_route tmp[ROUTES_MAX];
    const char *desc[ROUTES_MAX];
    const struct approach *def = NULL;
    size_t n = 0, need = 1;
    int rc = -1;

    if (!text)
        return fail(why, wl, "--router-config %s: cannot read it (or larger than 1 MiB)", path);
    root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        fail(why, wl, "--router-config %s: not a JSON object", path);
        goto out;
    }
    routes = cJSON_GetObjectItemCaseSensitive(root, "routes");
    if (!cJSON_IsObject(routes) || !routes->child) {
        fail(why, wl, "--router-config %s: \"routes\" must be a non-empty object {label: approach}",
             path);
        goto out;
    }
    cJSON_ArrayForEach(it, routes)
    {
        const cJSON *slug = it;
        const char *dtext = "";

        if (n == ROUTES_MAX) {
            fail(why, wl, "--router-config %s: more than %d routes", path, ROUTES_MAX);
            goto out;
        }
        if (!label_ok(it->string)) {
            fail(why, wl,
                 "--router-config %s: label '%.40s' must be 1-%d characters of a-z, 0-9, _ or -",
                 path, it->string, LABEL_MAX);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(tmp[i].label, it->string) == 0) {
                fail(why, wl, "--router-config %s: label '%s' appears twice", path, it->string);
                goto out;
            }
        }
        if (cJSON_IsObject(it)) {
            slug = cJSON_GetObjectItemCaseSensitive(it, "approach");
            d = cJSON_GetObjectItemCaseSensitive(it, "description");
            if (d && !cJSON_IsString(d)) {
                fail(why, wl, "--router-config %s: routes.%s.description must be a string", path,
                     it->string);
                goto out;
            }
            if (d)
                dtext = d->valuestring;
        }
        if (!cJSON_IsString(slug)) {
            fail(why, wl,
                 "--router-config %s: routes.%s must be an approach slug or {\"approach\", "
                 "\"description\"}",
                 path, it->string);
            goto out;
        }
        if (strlen(dtext) > DESC_MAX) {
            fail(why, wl, "--router-config %s: routes.%s.description is longer than %d bytes", path,
                 it->string, DESC_MAX);
            goto out;
        }
        if (slug_check(path, it->string, slug->valuestring, code_execution, &tmp[n].approach, why,
                       wl) != 0)
            goto out;
        tmp[n].label = it->string;
        desc[n] = dtext;
        need += strlen(it->string) + strlen(dtext) + 2;
        n++;
    }
    d = cJSON_GetObjectItemCaseSensitive(root, "default");
    if (d && !cJSON_IsString(d)) {
        fail(why, wl, "--router-config %s: \"default\" must be an approach slug", path);
        goto out;
    }
    if (d && slug_check(path, "default", d->valuestring, code_execution, &def, why, wl) != 0)
        goto out;
    m = cJSON_GetObjectItemCaseSensitive(root, "classifier_model");
    if (m && (!cJSON_IsString(m) || !*m->valuestring || strlen(m->valuestring) > 200)) {
        fail(why, wl, "--router-config %s: \"classifier_model\" must be a model name", path);
        goto out;
    }
    if (m)
        need += strlen(m->valuestring) + 1;
    for (it = root->child; it; it = it->next) {
        if (strcmp(it->string, "routes") && strcmp(it->string, "default") &&
            strcmp(it->string, "classifier_model")) {
            fail(why, wl,
                 "--router-config %s: unknown field \"%.40s\" (known: classifier_model, default, "
                 "routes)",
                 path, it->string);
            goto out;
        }
    }
    router_reset();
    strings = xmalloc(need);
    loaded = xmalloc(n * sizeof(*loaded));
    {
        char *p = strings;

        for (size_t i = 0; i < n; i++) {
            size_t ll = strlen(tmp[i].label) + 1, dl = strlen(desc[i]) + 1;

            loaded[i].label = memcpy(p, tmp[i].label, ll);
            p += ll;
            loaded[i].description = memcpy(p, desc[i], dl);
            p += dl;
            loaded[i].approach = tmp[i].approach;
        }
        if (m)
            classifier_model = memcpy(p, m->valuestring, strlen(m->valuestring) + 1);
    }
    nloaded = n;
    loaded_default = (struct router_route){"default", "", def};
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}
