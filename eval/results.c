/* results.c: the results.jsonl record: serialising, parsing, a keyed set, and reading a file
 * that a killed run may have left with a torn last line. */
#include "results.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "dataset.h"
#include "px.h"

void results_set_init(struct results_set *s)
{
    memset(s, 0, sizeof(*s));
    s->arena = arena_create();
}

void results_set_cleanup(struct results_set *s)
{
    arena_destroy(s->arena);
    free(s->v);
    free(s->slot);
    free(s->approaches);
    memset(s, 0, sizeof(*s));
}

static unsigned long long key_hash(const char *id, const char *approach)
{
    return dataset_fnv1a(id) * 31 + dataset_fnv1a(approach);
}

static size_t find_slot(const struct results_set *s, const char *id, const char *approach)
{
    size_t i = key_hash(id, approach) & (s->nslot - 1);

    while (s->slot[i]) {
        const struct result *r = &s->v[s->slot[i] - 1];

        if (strcmp(r->id, id) == 0 && strcmp(r->approach, approach) == 0)
            break;
        i = (i + 1) & (s->nslot - 1);
    }
    return i;
}

const struct result *results_find(const struct results_set *s, const char *id, const char *approach)
{
    size_t i;

    if (!s->nslot)
        return NULL;
    i = find_slot(s, id, approach);
    return s->slot[i] ? &s->v[s->slot[i] - 1] : NULL;
}

static void grow_slots(struct results_set *s)
{
    size_t ncap = s->nslot ? s->nslot * 2 : 1024;

    free(s->slot);
    s->slot = xcalloc(ncap, sizeof(*s->slot));
    s->nslot = ncap;
    for (size_t k = 0; k < s->n; k++)
        s->slot[find_slot(s, s->v[k].id, s->v[k].approach)] = k + 1;
}

static const char *approach_name(struct results_set *s, const char *name)
{
    for (size_t i = 0; i < s->napproaches; i++)
        if (strcmp(s->approaches[i], name) == 0)
            return s->approaches[i];
    s->approaches = xrealloc(s->approaches, (s->napproaches + 1) * sizeof(*s->approaches));
    s->approaches[s->napproaches] = arena_strdup(s->arena, name);
    return s->approaches[s->napproaches++];
}

bool results_set_add(struct results_set *s, const struct result *r)
{
    struct result *c;
    size_t i;

    if ((s->n + 1) * 2 > s->nslot)
        grow_slots(s);
    i = find_slot(s, r->id, r->approach);
    if (s->slot[i])
        return false;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    c = &s->v[s->n];
    *c = *r;
    c->id = arena_strdup(s->arena, r->id);
    c->approach = approach_name(s, r->approach);
    c->extracted = arena_strdup(s->arena, r->extracted);
    c->expected = arena_strdup(s->arena, r->expected ? r->expected : "");
    c->type = arena_strdup(s->arena, r->type ? r->type : "");
    c->error = arena_strdup(s->arena, r->error);
    /* The report never reads the response text: keep the set small. */
    c->response = NULL;
    s->slot[i] = ++s->n;
    return true;
}

/* ---- one line ----------------------------------------------------------------------------- */

static void add_long(cJSON *o, const char *name, long v)
{
    if (v < 0)
        cJSON_AddNullToObject(o, name);
    else
        cJSON_AddNumberToObject(o, name, (double)v);
}

static void add_str(cJSON *o, const char *name, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

char *results_line(const struct result *r)
{
    cJSON *o = cJSON_CreateObject();
    char *json, *line;
    size_t len;

    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "approach", r->approach);
    cJSON_AddBoolToObject(o, "correct", r->correct);
    add_str(o, "extracted", r->extracted);
    add_str(o, "expected", r->expected);
    add_str(o, "type", r->type);
    /* Whole milliseconds are plenty and keep the lines short. */
    cJSON_AddNumberToObject(o, "latency_ms", (double)(long long)(r->latency_ms + 0.5));
    add_long(o, "upstream_calls", r->upstream_calls);
    add_long(o, "prompt_tokens", r->prompt_tokens);
    add_long(o, "completion_tokens", r->completion_tokens);
    add_str(o, "error", r->error);
    cJSON_AddNumberToObject(o, "status", r->status);
    cJSON_AddNumberToObject(o, "attempts", r->attempts);
    if (r->response) {
        cJSON_AddStringToObject(o, "response", r->response);
        if (r->response_truncated)
            cJSON_AddTrueToObject(o, "response_truncated");
    }
    json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    len = strlen(json);
    line = xmalloc(len + 2);
    memcpy(line, json, len);
    line[len] = '\n';
    line[len + 1] = '\0';
    cJSON_free(json);
    return line;
}

static long get_long(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsNumber(v) && v->valuedouble >= 0 ? px_count(v->valuedouble) : -1;
}

static const char *get_str(struct arena *a, const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(v) ? arena_strdup(a, v->valuestring) : NULL;
}

int results_parse_line(struct arena *a, const char *line, size_t len, struct result *out)
{
    cJSON *o = cJSON_ParseWithLength(line, len);
    const cJSON *c, *lat;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(o))
        goto out;
    c = cJSON_GetObjectItemCaseSensitive(o, "correct");
    out->id = get_str(a, o, "id");
    out->approach = get_str(a, o, "approach");
    if (!out->id || !out->approach || !cJSON_IsBool(c))
        goto out;
    out->correct = cJSON_IsTrue(c);
    out->extracted = get_str(a, o, "extracted");
    out->expected = get_str(a, o, "expected");
    out->type = get_str(a, o, "type");
    out->error = get_str(a, o, "error");
    lat = cJSON_GetObjectItemCaseSensitive(o, "latency_ms");
    out->latency_ms = cJSON_IsNumber(lat) ? lat->valuedouble : 0;
    out->upstream_calls = get_long(o, "upstream_calls");
    out->prompt_tokens = get_long(o, "prompt_tokens");
    out->completion_tokens = get_long(o, "completion_tokens");
    out->status = (int)get_long(o, "status");
    out->attempts = (int)get_long(o, "attempts");
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

/* ---- a file ------------------------------------------------------------------------------- */

int results_read(const char *path, bool repair, FILE *errs, struct results_set *s,
                 size_t *lines_read)
{
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0, added = 0;
    ssize_t n;
    long lineno = 0;
    off_t good_end = 0, pos = 0;
    bool torn = false;
    struct arena *tmp;

    if (lines_read)
        *lines_read = 0;
    if (!f)
        return errno == ENOENT ? 0 : -1;
    tmp = arena_create();
    while ((n = getline(&line, &cap, f)) > 0) {
        struct result r;
        bool complete = line[n - 1] == '\n';

        lineno++;
        pos += n;
        if (!complete || results_parse_line(tmp, line, (size_t)n, &r) < 0) {
            /* Only the last line can be torn by a kill; report others. */
            int next = complete ? getc(f) : EOF;

            if (next == EOF) {
                torn = true;
                break;
            }
            ungetc(next, f);
            fprintf(errs, "%s:%ld: not a result line; ignored\n", path, lineno);
            good_end = pos;
            continue;
        }
        good_end = pos;
        if (results_set_add(s, &r))
            added++;
        else
            fprintf(errs,
                    "%s:%ld: duplicate of an earlier result for id '%.64s', approach '%s'; "
                    "ignored\n",
                    path, lineno, r.id, r.approach);
    }
    free(line);
    arena_destroy(tmp);
    if (ferror(f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    if (torn) {
        if (repair) {
            fprintf(errs, "%s:%ld: incomplete last line (an interrupted write); removed\n", path,
                    lineno);
            if (truncate(path, good_end) != 0)
                return -1;
        } else {
            fprintf(errs, "%s:%ld: incomplete last line; ignored\n", path, lineno);
        }
    }
    if (lines_read)
        *lines_read = added;
    return 0;
}
