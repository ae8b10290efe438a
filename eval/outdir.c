/* outdir.c: the output folder (create, lock, run.json), the report command and merge. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "outdir.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "buf.h"
#include "config.h"
#include "eval.h"
#include "px.h"

const char *eval_strerror(int err, char *buf, size_t len)
{
    if (strerror_r(err, buf, len) != 0)
        snprintf(buf, len, "error %d", err);
    return buf;
}

const char *outdir_path(char *buf, size_t len, const char *dir, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return buf;
}

const char *outdir_now(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;

    if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "unknown");
    return buf;
}

int outdir_create(const char *dir)
{
    char path[4096], eb[128];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path)) {
        fprintf(stderr, "optillm-eval: bad output folder name\n");
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "optillm-eval: cannot create the output folder %s: %s\n", path,
                    eval_strerror(errno, eb, sizeof(eb)));
            return -1;
        }
        if (i < len)
            path[i] = '/';
    }
    {
        struct stat st;

        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "optillm-eval: %s is not a folder\n", dir);
            return -1;
        }
        if (access(dir, W_OK | X_OK) != 0) {
            fprintf(stderr, "optillm-eval: the output folder %s is not writable\n", dir);
            return -1;
        }
    }
    return 0;
}

int outdir_lock(const char *dir)
{
    char path[4200], eb[128];
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int fd =
        open(outdir_path(path, sizeof(path), dir, ".lock"), O_RDWR | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        fprintf(stderr, "optillm-eval: cannot create %s: %s\n", path,
                eval_strerror(errno, eb, sizeof(eb)));
        return -1;
    }
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        fprintf(stderr,
                "optillm-eval: another optillm-eval is writing to %s (lock %s); wait for it or "
                "use another --out\n",
                dir, path);
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- run.json ------------------------------------------------------------------------------ */

static char *dup_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(v) ? xstrdup(v->valuestring) : NULL;
}

static char *read_small_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct buf b;
    char chunk[8192];
    size_t k;

    if (!f)
        return NULL;
    buf_init(&b, max);
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(&b, chunk, k) < 0) {
            buf_free(&b);
            fclose(f);
            return NULL;
        }
    }
    fclose(f);
    return buf_take(&b, len);
}

int outdir_meta_read(const char *dir, struct run_meta *m)
{
    char path[4200];
    size_t len = 0;
    char *text = read_small_file(outdir_path(path, sizeof(path), dir, "run.json"), 1u << 20, &len);
    cJSON *o, *v;
    const cJSON *a;

    memset(m, 0, sizeof(*m));
    m->skipped_lines = -1;
    if (!text)
        return -1;
    o = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    m->model = dup_str(o, "model");
    m->dataset = dup_str(o, "dataset");
    m->endpoint = dup_str(o, "endpoint");
    m->shard = dup_str(o, "shard");
    m->sources = dup_str(o, "merged_from");
    v = cJSON_GetObjectItemCaseSensitive(o, "dataset_lines_skipped");
    if (cJSON_IsNumber(v))
        m->skipped_lines = px_count(v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(o, "approaches");
    if (cJSON_IsArray(v)) {
        m->approaches = xcalloc((size_t)cJSON_GetArraySize(v) + 1, sizeof(*m->approaches));
        cJSON_ArrayForEach(a, v)
        {
            if (cJSON_IsString(a))
                m->approaches[m->napproaches++] = xstrdup(a->valuestring);
        }
    }
    cJSON_Delete(o);
    return 0;
}

void outdir_meta_cleanup(struct run_meta *m)
{
    free(m->model);
    free(m->dataset);
    free(m->endpoint);
    free(m->shard);
    free(m->sources);
    for (size_t i = 0; i < m->napproaches; i++)
        free(m->approaches[i]);
    free(m->approaches);
    memset(m, 0, sizeof(*m));
}

static int write_file_atomic(const char *path, const char *data, size_t len)
{
    char tmp[4300];
    FILE *f;
    int ok;

    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f)
        return -1;
    ok = fwrite(data, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void add_opt(cJSON *o, const char *name, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

int outdir_meta_write(const char *dir, const struct run_meta *m)
{
    char path[4200], now[64];
    cJSON *o = cJSON_CreateObject();
    cJSON *a;
    char *text;
    int rc;

    cJSON_AddStringToObject(o, "tool", "optillm-eval " PX_VERSION);
    cJSON_AddStringToObject(o, "written", outdir_now(now, sizeof(now)));
    add_opt(o, "model", m->model);
    add_opt(o, "dataset", m->dataset);
    add_opt(o, "endpoint", m->endpoint);
    add_opt(o, "shard", m->shard);
    if (m->sources)
        cJSON_AddStringToObject(o, "merged_from", m->sources);
    if (m->skipped_lines >= 0)
        cJSON_AddNumberToObject(o, "dataset_lines_skipped", (double)m->skipped_lines);
    a = cJSON_AddArrayToObject(o, "approaches");
    for (size_t i = 0; i < m->napproaches; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(m->approaches[i]));
    text = cJSON_Print(o);
    cJSON_Delete(o);
    rc = write_file_atomic(outdir_path(path, sizeof(path), dir, "run.json"), text, strlen(text));
    cJSON_free(text);
    if (rc < 0)
        fprintf(stderr, "optillm-eval: cannot write %s\n", path);
    return rc;
}

/* ---- the report ------------------------------------------------------------------------------ */

static const char *report_num2(double x, char *buf, size_t len)
{
    snprintf(buf, len, "%.2f", x);
    return buf;
}

static void print_summary(const struct report *r)
{
    char b[4][32];

    printf("\n%-24s %9s  %-17s %7s %7s %8s %12s %11s\n", "approach", "accuracy", "95% CI", "items",
           "errors", "p (vs 1)", "tokens/item", "calls/item");
    for (size_t i = 0; i < r->nrows; i++) {
        const struct report_row *w = &r->rows[i];
        double tok = (isnan(w->prompt_per_item) ? 0 : w->prompt_per_item) +
                     (isnan(w->completion_per_item) ? 0 : w->completion_per_item);
        char ci[40], p[16];

        snprintf(ci, sizeof(ci), "%s-%s", report_pct(w->ci_lo, b[1], 32),
                 report_pct(w->ci_hi, b[2], 32));
        if (w->paired_set)
            snprintf(p, sizeof(p), w->mcnemar_p >= 0.001 ? "%.3f" : "%.1e", w->mcnemar_p);
        else
            snprintf(p, sizeof(p), "base");
        printf("%-24.24s %9s  %-17s %7ld %7ld %8s %12.0f %11s\n", w->approach,
               report_pct(w->accuracy, b[0], 32), ci, w->items, w->errors, p, tok,
               isnan(w->calls_per_item) ? "n/a" : report_num2(w->calls_per_item, b[3], 32));
    }
}

int outdir_report(const char *dir, const struct results_set *s, const struct run_meta *m,
                  const char *baseline)
{
    struct report r;
    struct report_meta rm = {.skipped_lines = -1};
    char now[64];
    int rc;

    if (m) {
        rm.model = m->model;
        rm.dataset = m->dataset;
        rm.endpoint = m->endpoint;
        rm.sources = m->sources;
        rm.skipped_lines = m->skipped_lines;
    }
    rm.generated = outdir_now(now, sizeof(now));
    report_build(s, m ? (const char *const *)m->approaches : NULL, m ? m->napproaches : 0, baseline,
                 &rm, &r);
    rc = report_write(&r, dir, stderr);
    if (rc == 0) {
        print_summary(&r);
        printf(
            "\nreport: %s/report.md (also report.json, report.csv, report.svg, cost_accuracy.svg); "
            "per item: %s/results.jsonl\n",
            dir, dir);
        fflush(stdout);
    }
    report_cleanup(&r);
    return rc;
}

int eval_report(const char *dir, const char *baseline)
{
    char path[4200];
    struct results_set s;
    struct run_meta m;
    int rc = 1;

    outdir_path(path, sizeof(path), dir, "results.jsonl");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "optillm-eval: %s has no readable results.jsonl\n", dir);
        return 1;
    }
    results_set_init(&s);
    outdir_meta_read(dir, &m);
    if (results_read(path, false, stderr, &s, NULL) == 0 &&
        outdir_report(dir, &s, &m, baseline) == 0)
        rc = 0;
    outdir_meta_cleanup(&m);
    results_set_cleanup(&s);
    return rc;
}

/* ---- merge --------------------------------------------------------------------------------- */

/* Appends the lines of 'src' whose (id, approach) is new to 'dst' (verbatim: responses kept).
 * Returns 0, or -1 when 'src' cannot be read. */
static int merge_lines(const char *src, FILE *dst, struct results_set *seen, size_t *dups)
{
    FILE *f = fopen(src, "rb");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    struct arena *tmp;

    if (!f)
        return -1;
    tmp = arena_create();
    while ((n = getline(&line, &cap, f)) > 0) {
        struct result r;

        lineno++;
        if (line[n - 1] != '\n' || results_parse_line(tmp, line, (size_t)n, &r) < 0) {
            fprintf(stderr, "%s:%ld: not a complete result line; ignored\n", src, lineno);
            continue;
        }
        if (!results_set_add(seen, &r)) {
            (*dups)++;
            continue;
        }
        fwrite(line, 1, (size_t)n, dst);
    }
    free(line);
    arena_destroy(tmp);
    fclose(f);
    return 0;
}

/* Appends 'v' to a ", "-separated list unless it is there already. */
static char *list_add(char *list, const char *v)
{
    size_t vl, l;
    char *n;

    if (!v)
        return list;
    if (!list)
        return xstrdup(v);
    vl = strlen(v);
    for (const char *p = list;;) {
        size_t tl = strcspn(p, ",");

        if (tl == vl && memcmp(p, v, vl) == 0)
            return list;
        if (!p[tl])
            break;
        p += tl + 1;
        while (*p == ' ')
            p++;
    }
    l = strlen(list) + vl + 3;
    n = xmalloc(l);
    snprintf(n, l, "%s, %s", list, v);
    free(list);
    return n;
}

int eval_merge(const char *const *dirs, size_t ndirs, const char *out, const char *baseline)
{
    char path[4200], tmp[4300], real_out[4096], real_src[4096];
    struct results_set seen;
    struct run_meta merged = {.skipped_lines = -1};
    size_t dups = 0;
    FILE *dst;
    int rc = 1, lock;

    if (outdir_create(out) < 0)
        return 1;
    lock = outdir_lock(out);
    if (lock < 0)
        return 1;
    if (!realpath(out, real_out))
        snprintf(real_out, sizeof(real_out), "%s", out);
    for (size_t i = 0; i < ndirs; i++) {
        outdir_path(path, sizeof(path), dirs[i], "results.jsonl");
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "optillm-eval: %s has no readable results.jsonl\n", dirs[i]);
            close(lock);
            return 1;
        }
        if (realpath(dirs[i], real_src) && strcmp(real_src, real_out) == 0) {
            fprintf(stderr, "optillm-eval: --out %s is one of the folders being merged\n", out);
            close(lock);
            return 1;
        }
    }
    results_set_init(&seen);
    outdir_path(path, sizeof(path), out, "results.jsonl");
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    dst = fopen(tmp, "wb");
    if (!dst) {
        fprintf(stderr, "optillm-eval: cannot write %s\n", tmp);
        goto out;
    }
    for (size_t i = 0; i < ndirs; i++) {
        struct run_meta m;
        char src[4200];

        if (merge_lines(outdir_path(src, sizeof(src), dirs[i], "results.jsonl"), dst, &seen,
                        &dups) < 0) {
            fprintf(stderr, "optillm-eval: cannot read %s\n", src);
            fclose(dst);
            unlink(tmp);
            goto out;
        }
        if (outdir_meta_read(dirs[i], &m) == 0) {
            merged.model = list_add(merged.model, m.model);
            merged.dataset = list_add(merged.dataset, m.dataset);
            merged.endpoint = list_add(merged.endpoint, m.endpoint);
            if (m.skipped_lines >= 0)
                merged.skipped_lines = m.skipped_lines; /* the same dataset: the same lines */
            for (size_t k = 0; k < m.napproaches; k++) {
                bool have = false;

                for (size_t j = 0; j < merged.napproaches; j++)
                    have = have || strcmp(merged.approaches[j], m.approaches[k]) == 0;
                if (!have) {
                    merged.approaches =
                        xrealloc(merged.approaches, (merged.napproaches + 1) * sizeof(char *));
                    merged.approaches[merged.napproaches++] = xstrdup(m.approaches[k]);
                }
            }
        }
        outdir_meta_cleanup(&m);
        merged.sources = list_add(merged.sources, dirs[i]);
    }
    if (fclose(dst) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "optillm-eval: cannot write %s\n", path);
        unlink(tmp);
        goto out;
    }
    if (dups)
        fprintf(stderr,
                "optillm-eval: %zu results appeared in more than one folder; the first was "
                "kept\n",
                dups);
    if (merged.model && strchr(merged.model, ','))
        fprintf(stderr, "optillm-eval: warning: the folders were run with different models (%s)\n",
                merged.model);
    fprintf(stderr, "optillm-eval: merged %zu results from %zu folders into %s\n", seen.n, ndirs,
            out);
    if (outdir_meta_write(out, &merged) == 0 && outdir_report(out, &seen, &merged, baseline) == 0)
        rc = 0;
out:
    outdir_meta_cleanup(&merged);
    results_set_cleanup(&seen);
    close(lock);
    return rc;
}
