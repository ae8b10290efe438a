/* registry.c: THE approach table. Adding an approach = one file in approaches/ + one row here
 * + its prompts in prompts/<slug>/. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "approach.h"
#include "log.h"
#include "prompt.h"

extern const struct approach approach_bon;
extern const struct approach approach_moa;
extern const struct approach approach_self_consistency;
extern const struct approach approach_majority_voting;
extern const struct approach approach_re2;
extern const struct approach approach_cot_reflection;
extern const struct approach approach_mcts;
extern const struct approach approach_plansearch;
extern const struct approach approach_leap;
extern const struct approach approach_rto;
extern const struct approach approach_cepo;
extern const struct approach approach_mars;
extern const struct approach approach_genselect;
extern const struct approach approach_deepthink;
extern const struct approach approach_pvg;
extern const struct approach approach_rstar;
extern const struct approach approach_z3;
/* plugins, part 1 */
extern const struct approach approach_privacy;
extern const struct approach approach_json;
extern const struct approach approach_compact;
extern const struct approach approach_mcp;
/* plugins, part 2 */
extern const struct approach approach_memory;
extern const struct approach approach_readurls;
extern const struct approach approach_web_search;
extern const struct approach approach_deep_research;
extern const struct approach approach_longcepo;
extern const struct approach approach_router;
extern const struct approach approach_spl;
/* code execution (sandbox.h) */
extern const struct approach approach_executecode;
extern const struct approach approach_coc;

const struct approach *const approach_registry[] = {
    &approach_bon,
    &approach_moa,
    &approach_self_consistency,
    &approach_majority_voting,
    &approach_re2,
    &approach_cot_reflection,
    &approach_mcts,
    &approach_plansearch,
    &approach_leap,
    &approach_rto,
    &approach_cepo,
    &approach_mars,
    &approach_genselect,
    &approach_deepthink,
    &approach_pvg,
    &approach_rstar,
    &approach_z3,
    /* plugins, part 1 */
    &approach_privacy,
    &approach_json,
    &approach_compact,
    &approach_mcp,
    /* plugins, part 2 */
    &approach_memory,
    &approach_readurls,
    &approach_web_search,
    &approach_deep_research,
    &approach_longcepo,
    &approach_router,
    &approach_spl,
    /* code execution (sandbox.h) */
    &approach_executecode,
    &approach_coc,
    NULL,
};
const size_t approach_registry_len = PX_ARRAY_LEN(approach_registry) - 1;

static bool name_eq(const char *name, const char *s, size_t len)
{
    return strlen(name) == len && memcmp(name, s, len) == 0;
}

const struct approach *approach_find(const char *name, size_t len)
{
    for (size_t i = 0; i < approach_registry_len; i++) {
        const struct approach *a = approach_registry[i];

        if (name_eq(a->slug, name, len))
            return a;
        for (const char *const *al = a->aliases; al && *al; al++)
            if (name_eq(*al, name, len))
                return a;
    }
    return NULL;
}

const struct approach_option *approach_option_find(const char *name)
{
    for (size_t i = 0; i < approach_registry_len; i++) {
        const struct approach_option *o = approach_registry[i]->options;

        for (; o && o->name; o++)
            if (strcmp(o->name, name) == 0 || (o->alias && strcmp(o->alias, name) == 0))
                return o;
    }
    return NULL;
}

static char slug_list[1024];
static pthread_once_t slug_list_once = PTHREAD_ONCE_INIT;

static void build_slug_list(void)
{
    size_t pos = 0;

    for (size_t i = 0; i < approach_registry_len && pos < sizeof(slug_list); i++)
        pos += (size_t)snprintf(slug_list + pos, sizeof(slug_list) - pos, "%s%s", i ? ", " : "",
                                approach_registry[i]->slug);
}

const char *approach_slug_list(void)
{
    pthread_once(&slug_list_once, build_slug_list);
    return slug_list;
}

static bool slug_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* Every name an approach answers to: its slug and aliases. */
static size_t names_of(const struct approach *a, const char **out, size_t cap)
{
    size_t n = 0;

    out[n++] = a->slug;
    for (const char *const *al = a->aliases; al && *al && n < cap; al++)
        out[n++] = *al;
    return n;
}

int registry_check(void)
{
    int bad = 0;

    for (size_t i = 0; i < approach_registry_len; i++) {
        const struct approach *a = approach_registry[i];
        const char *mine[16];
        size_t nm = names_of(a, mine, 16);

        if (!slug_ok(a->slug) || (!a->run && !a->prepare) || !a->summary) {
            log_error("registry: approach %zu (%s) is malformed", i, a->slug);
            bad = 1;
        }
        for (size_t k = 0; k < nm; k++) {
            if (!strcmp(mine[k], "none") || !strcmp(mine[k], "auto")) {
                log_error("registry: name %s is reserved", mine[k]);
                bad = 1;
            }
        }
        /* No name (slug or alias) may belong to two approaches. */
        for (size_t j = 0; j < i; j++) {
            const char *theirs[16];
            size_t nt = names_of(approach_registry[j], theirs, 16);

            for (size_t k = 0; k < nm; k++)
                for (size_t l = 0; l < nt; l++)
                    if (!strcmp(mine[k], theirs[l])) {
                        log_error("registry: name %s is used by %s and %s", mine[k],
                                  approach_registry[j]->slug, a->slug);
                        bad = 1;
                    }
        }
        /* Option names are global (flags, env, body fields): unique across approaches. */
        for (const struct approach_option *o = a->options; o && o->name; o++) {
            const struct approach_option *first = approach_option_find(o->name);

            if (first != o || (o->alias && approach_option_find(o->alias) != o)) {
                log_error("registry: option %s of %s is already defined", o->name, a->slug);
                bad = 1;
            }
            if (!(o->min <= o->def && o->def <= o->max)) {
                log_error("registry: option %s default is out of range", o->name);
                bad = 1;
            }
        }
        for (const char *const *p = a->prompts; p && *p; p++) {
            if (!prompt_get(*p)) {
                log_error("registry: approach %s needs missing prompt %s", a->slug, *p);
                bad = 1;
            }
        }
    }
    return bad ? -1 : 0;
}
