/* run.c: one evaluation run: (item, approach) jobs through a fixed pool of worker threads,
 * each result appended to OUT/results.jsonl as soon as it is scored, progress on stderr, the
 * report at the end.
 *
 * DESIGN
 * Jobs are ordered item by item (every approach of item 1, then item 2, ...) so that finished
 * items accumulate steadily; 'concurrency' workers take the next job under the run lock, run it
 * unlocked (build the request, send it with retries, score the reply), then write its line
 * under the lock with one fwrite + fflush (+ fsync with --fsync). A line is therefore in the
 * kernel before the next job of that worker starts: a SIGKILL loses only the jobs in flight,
 * and at worst leaves a torn last line that --resume removes. --resume reads the file, skips
 * every (id, approach) already there and appends the rest; the same folder never gets an item
 * twice (a lock file keeps two runs apart).
 *
 * Lock order: run.mu only (the progress thread takes it to read counters; nothing does I/O
 * other than the results write under it). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "dataset.h"
#include "eval.h"
#include "outdir.h"
#include "px.h"
#include "redact.h"
#include "results.h"
#include "score.h"

#define RESPONSE_CAP    (64u << 10) /* reply text kept per result line */
#define WORKER_STACK    (1u << 20)
#define RETRY_DELAY_MAX 60.0

_Atomic int eval_stop_requested; /* lock-free: safe to set in a signal handler */

struct job {
    size_t item;
    size_t approach;
};

struct run {
    const struct eval_opts *o;
    const struct dataset *ds;
    const char **model_names; /* request "model" per approach */
    struct job *jobs;
    size_t njobs;
    long long t0_ms;
    bool tty;

    pthread_mutex_t mu; /* guards every field below */
    pthread_cond_t cv;  /* wakes the progress thread early (end of run) */
    size_t next;        /* next job to hand out */
    FILE *out;          /* results.jsonl, appending */
    bool write_failed;
    bool finished;
    long *done;          /* per approach: results (resumed ones included) */
    long *correct;       /* per approach */
    long *errors;        /* per approach */
    unsigned char *left; /* per item: approaches still to run */
    long items_done;
    long session_done;
    long session_errors;
    long abandoned; /* jobs left unfinished by a stop */
    char first_error[300];
};

/* ---- one job ---------------------------------------------------------------------------- */

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Sleeps up to 's' seconds in short steps; false when a stop was requested meanwhile. */
static bool backoff(double s)
{
    while (s > 0) {
        double step = s < 0.1 ? s : 0.1;

        if (eval_stop_requested)
            return false;
        sleep_s(step);
        s -= step;
    }
    return !eval_stop_requested;
}

static bool retryable(int status)
{
    return status == 0 || status == 408 || status == 409 || status == 429 || status >= 500;
}

static char *request_body(const struct run *run, const char *model, const char *prompt)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    cJSON *m = cJSON_CreateObject();
    char *s;

    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", prompt);
    cJSON_AddItemToArray(msgs, m);
    if (!isnan(run->o->temperature))
        cJSON_AddNumberToObject(o, "temperature", run->o->temperature);
    if (run->o->max_tokens >= 0)
        cJSON_AddNumberToObject(o, "max_tokens", (double)run->o->max_tokens);
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Drops a UTF-8 sequence left incomplete at the end of 's' by a cut. */
static void utf8_trim(char *s)
{
    size_t n = strlen(s), start = n, need;

    while (start > 0 && n - start < 4 && ((unsigned char)s[start - 1] & 0xC0) == 0x80)
        start--;
    if (start == 0 || ((unsigned char)s[start - 1] & 0x80) == 0)
        return;
    start--; /* the lead byte */
    need = ((unsigned char)s[start] & 0xE0) == 0xC0   ? 2
           : ((unsigned char)s[start] & 0xF0) == 0xE0 ? 3
           : ((unsigned char)s[start] & 0xF8) == 0xF0 ? 4
                                                      : 1;
    if (n - start < need)
        s[start] = '\0';
}

/* The text of an error response: one line, at most ~240 bytes, and never the key itself
 * (some endpoints quote the key they were given). */
static const char *error_text(struct arena *a, const struct client_reply *rep, const char *key)
{
    cJSON *o;
    const cJSON *e, *m;
    char *msg;

    if (rep->status == 0)
        return arena_printf(a, "transport: %s", rep->error);
    o = rep->body ? cJSON_ParseWithLength(rep->body, rep->len) : NULL;
    e = cJSON_GetObjectItemCaseSensitive(o, "error");
    m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;
    if (cJSON_IsString(m))
        msg = arena_printf(a, "HTTP %d: %.240s", rep->status, m->valuestring);
    else
        msg = arena_printf(a, "HTTP %d: %.120s", rep->status, rep->body ? rep->body : "");
    cJSON_Delete(o);
    utf8_trim(msg);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (key && *key) {
        size_t kl = strlen(key);

        for (char *at = strstr(msg, key); at; at = strstr(at, key)) {
            memset(at, '*', kl);
            at += kl;
        }
    }
    redact_secrets(msg); /* masked or partial keys quoted by the upstream, too */
    return msg;
}

static long usage_field(const cJSON *usage, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(usage, name);

    return cJSON_IsNumber(v) && v->valuedouble >= 0 ? px_count(v->valuedouble) : -1;
}

/* Fills r from a 200 reply; false (r->error set) when it is not a chat completion. */
static bool take_reply(struct arena *a, const struct item *it, const struct client_reply *rep,
                       bool save, struct result *r)
{
    cJSON *o = cJSON_ParseWithLength(rep->body ? rep->body : "", rep->len);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(o, "usage");
    const char *text;

    if (!cJSON_IsObject(msg) || !(cJSON_IsString(content) || cJSON_IsNull(content))) {
        r->error = "the response is not a chat completion (no choices[0].message.content)";
        cJSON_Delete(o);
        return false;
    }
    text = cJSON_IsString(content) ? arena_strdup(a, content->valuestring) : "";
    r->prompt_tokens = usage_field(usage, "prompt_tokens");
    r->completion_tokens = usage_field(usage, "completion_tokens");
    cJSON_Delete(o);
    r->correct = score_reply(a, it, text, &r->extracted);
    if (save) {
        size_t len = strlen(text);

        if (len > RESPONSE_CAP) {
            len = RESPONSE_CAP;
            while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
                len--; /* a UTF-8 boundary */
            r->response_truncated = true;
        }
        r->response = arena_strndup(a, text, len);
    }
    return true;
}

/* Runs one job; false when it was abandoned because of a stop (nothing to record). */
static bool run_job(struct run *run, struct client *cl, struct arena *a, const struct job *j,
                    uint64_t *rng, struct result *r)
{
    const struct eval_opts *o = run->o;
    const struct item *it = &run->ds->items[j->item];
    char *body = request_body(run, run->model_names[j->approach], score_prompt(a, it));
    size_t len = strlen(body);

    memset(r, 0, sizeof(*r));
    r->id = it->id;
    r->approach = o->approaches[j->approach];
    r->expected = it->expected;
    r->type = dataset_type_name(it->type);
    r->upstream_calls = r->prompt_tokens = r->completion_tokens = -1;
    for (int attempt = 0;; attempt++) {
        struct client_reply rep;
        long long t0 = px_now_us();
        double delay;

        client_post(cl, body, len, &rep);
        r->latency_ms = (double)(px_now_us() - t0) / 1000.0;
        r->attempts = attempt + 1;
        r->status = rep.status;
        r->upstream_calls = rep.upstream_calls;
        if (rep.status == 200) {
            r->error = NULL;
            take_reply(a, it, &rep, o->save_responses, r);
            client_reply_free(&rep);
            break;
        }
        r->error = error_text(a, &rep, o->api_key);
        client_reply_free(&rep);
        if (!retryable(r->status) || attempt >= o->retries)
            break;
        /* Exponential backoff with jitter (x0.5..1.5), or the server's Retry-After. */
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        delay = rep.retry_after > 0 ? rep.retry_after
                                    : o->retry_delay * pow(2, attempt) *
                                          (0.5 + (double)(*rng >> 11) / 9007199254740992.0);
        if (!backoff(delay < RETRY_DELAY_MAX ? delay : RETRY_DELAY_MAX)) {
            cJSON_free(body);
            return false;
        }
    }
    cJSON_free(body);
    if (r->error)
        r->correct = false;
    return true;
}

/* ---- workers ---------------------------------------------------------------------------- */

/* Appends one result line; caller holds run->mu. */
static void do_record(struct run *run, const struct job *j, const struct result *r)
{
    char *line = results_line(r);
    size_t len = strlen(line);

    if (!run->write_failed && (fwrite(line, 1, len, run->out) != len || fflush(run->out) != 0 ||
                               (run->o->fsync && fsync(fileno(run->out)) != 0))) {
        run->write_failed = true;
        fprintf(stderr, "\noptillm-eval: writing results.jsonl failed (disk full?); stopping\n");
    }
    free(line);
    if (run->write_failed)
        return;
    run->done[j->approach]++;
    run->session_done++;
    if (r->error) {
        run->errors[j->approach]++;
        run->session_errors++;
        if (!run->first_error[0])
            snprintf(run->first_error, sizeof(run->first_error), "%s", r->error);
    } else if (r->correct) {
        run->correct[j->approach]++;
    }
    if (--run->left[j->item] == 0)
        run->items_done++;
}

static void *worker(void *arg)
{
    struct run *run = arg;
    struct client *cl = client_create(run->o);
    uint64_t rng = (uint64_t)px_now_us() ^ (uint64_t)(uintptr_t)&rng;

    for (;;) {
        struct job j;
        struct arena *a;
        struct result r;

        pthread_mutex_lock(&run->mu);
        if (eval_stop_requested || run->write_failed || run->next == run->njobs) {
            pthread_mutex_unlock(&run->mu);
            break;
        }
        j = run->jobs[run->next++];
        pthread_mutex_unlock(&run->mu);

        a = arena_create();
        if (run_job(run, cl, a, &j, &rng, &r)) {
            pthread_mutex_lock(&run->mu);
            do_record(run, &j, &r);
            pthread_mutex_unlock(&run->mu);
        } else {
            pthread_mutex_lock(&run->mu);
            run->abandoned++;
            pthread_mutex_unlock(&run->mu);
        }
        arena_destroy(a);
    }
    client_destroy(cl);
    return NULL;
}

/* ---- progress --------------------------------------------------------------------------- */

static void fmt_duration(double s, char *buf, size_t len)
{
    long t = (long)(s + 0.5);

    if (s < 0 || !isfinite(s))
        snprintf(buf, len, "?");
    else if (t >= 3600)
        snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static int term_columns(void)
{
    struct winsize ws;

    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 100;
}

/* One progress line into 'b'; caller holds run->mu. */
static void do_progress_line(struct run *run, char *b, size_t len, bool bar)
{
    const struct eval_opts *o = run->o;
    double elapsed = (double)(px_now_ms() - run->t0_ms) / 1000.0;
    long total = (long)run->ds->nitems;
    long remaining_jobs = (long)run->njobs - run->session_done - run->abandoned;
    double eta =
        run->session_done > 0 ? elapsed / (double)run->session_done * (double)remaining_jobs : NAN;
    long errors = 0;
    size_t pos = 0;
    char eta_s[32];

#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (pos < len)                                                                             \
            pos += (size_t)snprintf(b + pos, len - pos, __VA_ARGS__);                              \
    } while (0)

    fmt_duration(eta, eta_s, sizeof(eta_s));
    if (bar) {
        int w = 20, fill = total ? (int)(w * run->items_done / total) : w;

        PUT("[");
        for (int i = 0; i < w; i++)
            PUT("%c", i < fill ? '#' : '.');
        PUT("] %ld/%ld items ", run->items_done, total);
    } else {
        PUT("optillm-eval: %ld/%ld items (%.0f%%), %ld requests this run in %.0f s;",
            run->items_done, total, total ? 100.0 * (double)run->items_done / (double)total : 100.0,
            run->session_done, elapsed);
    }
    for (size_t i = 0; i < o->napproaches; i++) {
        errors += run->errors[i];
        if (run->done[i])
            PUT(" %s %.1f%%", o->approaches[i],
                100.0 * (double)run->correct[i] / (double)run->done[i]);
        else
            PUT(" %s -", o->approaches[i]);
        if (!bar && i + 1 < o->napproaches)
            PUT(",");
    }
    if (errors)
        PUT("%s %ld errors", bar ? " " : ";", errors);
    PUT("%s ETA %s", bar ? " " : ";", remaining_jobs > 0 ? eta_s : "0:00");
#undef PUT
}

static void *progress(void *arg)
{
    struct run *run = arg;
    bool bar = run->o->progress == PROGRESS_BAR || (run->o->progress == PROGRESS_AUTO && run->tty);
    double interval = bar ? 0.25 : run->o->progress_interval;
    char line[1024];

    pthread_mutex_lock(&run->mu);
    for (;;) {
        struct timespec until;
        double whole;

        clock_gettime(CLOCK_MONOTONIC, &until); /* run->cv's clock */
        until.tv_nsec += (long)(modf(interval, &whole) * 1e9);
        until.tv_sec += (time_t)whole + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!run->finished && pthread_cond_timedwait(&run->cv, &run->mu, &until) == 0)
            ;
        if (run->finished && !bar)
            break; /* the summary follows */
        do_progress_line(run, line, sizeof(line), bar);
        if (bar) {
            int cols = term_columns();

            if ((int)strlen(line) >= cols)
                line[cols - 1] = '\0';
            fprintf(stderr, "\r%s\033[K%s", line, run->finished ? "\n" : "");
        } else {
            fprintf(stderr, "%s\n", line);
        }
        fflush(stderr);
        if (run->finished)
            break;
    }
    pthread_mutex_unlock(&run->mu);
    return NULL;
}

/* ---- the run ---------------------------------------------------------------------------- */

/* Rewrites results.jsonl without the results that ended in an error (--retry-errors). */
static int drop_error_lines(const char *path, size_t *dropped)
{
    char tmp[4300];
    FILE *in = fopen(path, "rb"), *out;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct arena *a;
    int rc = 0;

    *dropped = 0;
    if (!in)
        return errno == ENOENT ? 0 : -1;
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    out = fopen(tmp, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    a = arena_create();
    while ((n = getline(&line, &cap, in)) > 0) {
        struct result r;

        if (results_parse_line(a, line, (size_t)n, &r) == 0 && r.error) {
            (*dropped)++;
            continue;
        }
        if (fwrite(line, 1, (size_t)n, out) != (size_t)n)
            rc = -1;
    }
    free(line);
    arena_destroy(a);
    fclose(in);
    if (fclose(out) != 0 || rc < 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Checks the folder against what was run there before; fills *prev with its results. */
static int prepare_out(const struct eval_opts *o, const char *path, struct results_set *prev)
{
    struct run_meta m = {0};
    FILE *f;
    long size = 0;

    f = fopen(path, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        fclose(f);
    }
    if (size > 0 && !o->resume && !o->overwrite) {
        fprintf(stderr,
                "optillm-eval: %s already holds results; --resume continues that run (skipping "
                "what is done), --overwrite starts it again\n",
                path);
        return -1;
    }
    if (o->overwrite) {
        f = fopen(path, "wb");
        if (!f) {
            fprintf(stderr, "optillm-eval: cannot write %s\n", path);
            return -1;
        }
        fclose(f);
        return 0;
    }
    if (size > 0 && outdir_meta_read(o->out, &m) == 0 && m.model &&
        strcmp(m.model, o->model) != 0) {
        fprintf(stderr,
                "optillm-eval: %s holds results for model '%s', not '%s'; use another --out\n",
                o->out, m.model, o->model);
        outdir_meta_cleanup(&m);
        return -1;
    }
    outdir_meta_cleanup(&m);
    if (o->retry_errors) {
        size_t dropped;

        if (drop_error_lines(path, &dropped) < 0) {
            fprintf(stderr, "optillm-eval: cannot rewrite %s\n", path);
            return -1;
        }
        if (dropped)
            fprintf(stderr, "optillm-eval: %zu results with errors will run again\n", dropped);
    }
    if (results_read(path, true, stderr, prev, NULL) < 0) {
        fprintf(stderr, "optillm-eval: cannot read %s\n", path);
        return -1;
    }
    return 0;
}

static void write_meta(const struct eval_opts *o, const struct dataset *ds)
{
    struct run_meta m = {0};
    char shard[64];

    m.model = (char *)o->model;
    m.dataset = (char *)o->dataset;
    m.endpoint = (char *)(o->proxy ? o->proxy : o->cfg.base_url);
    if (o->nshards > 1) {
        snprintf(shard, sizeof(shard), "%u/%u", o->shard, o->nshards);
        m.shard = shard;
    }
    m.approaches = o->approaches;
    m.napproaches = o->napproaches;
    m.skipped_lines = (long)ds->nbad;
    outdir_meta_write(o->out, &m); /* borrowed strings: no cleanup */
}

static void run_init(struct run *run, const struct eval_opts *o, const struct dataset *ds)
{
    memset(run, 0, sizeof(*run));
    run->o = o;
    run->ds = ds;
    pthread_mutex_init(&run->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&run->cv, &ca);
    pthread_condattr_destroy(&ca);
    run->done = xcalloc(o->napproaches, sizeof(long));
    run->correct = xcalloc(o->napproaches, sizeof(long));
    run->errors = xcalloc(o->napproaches, sizeof(long));
    run->left = xcalloc(ds->nitems ? ds->nitems : 1, 1);
    run->model_names = xcalloc(o->napproaches, sizeof(char *));
    for (size_t a = 0; a < o->napproaches; a++) {
        size_t l = strlen(o->approaches[a]) + strlen(o->model) + 2;
        char *name = xmalloc(l);

        /* "none-<model>" rather than the bare model: a model whose name starts with an
         * approach's ("re2-...") stays a passthrough. */
        snprintf(name, l, "%s-%s", o->approaches[a], o->model);
        run->model_names[a] = name;
    }
    run->tty = isatty(2);
}

static void run_cleanup(struct run *run)
{
    for (size_t a = 0; a < run->o->napproaches; a++)
        free((char *)run->model_names[a]);
    free(run->model_names);
    free(run->done);
    free(run->correct);
    free(run->errors);
    free(run->left);
    free(run->jobs);
    pthread_cond_destroy(&run->cv);
    pthread_mutex_destroy(&run->mu);
}

/* The jobs not done yet; the counters start from what the folder already holds. */
static void plan_jobs(struct run *run, const struct results_set *prev)
{
    const struct eval_opts *o = run->o;
    const struct dataset *ds = run->ds;

    run->jobs = xcalloc(ds->nitems * o->napproaches + 1, sizeof(*run->jobs));
    for (size_t i = 0; i < ds->nitems; i++) {
        for (size_t a = 0; a < o->napproaches; a++) {
            const struct result *r = results_find(prev, ds->items[i].id, o->approaches[a]);

            if (!r) {
                run->jobs[run->njobs++] = (struct job){i, a};
                run->left[i]++;
                continue;
            }
            run->done[a]++;
            run->errors[a] += r->error != NULL;
            run->correct[a] += r->correct && !r->error;
        }
        if (run->left[i] == 0)
            run->items_done++;
    }
}

int eval_run(const struct eval_opts *o, struct dataset *ds)
{
    char path[4200];
    struct results_set prev, all;
    struct run run;
    struct run_meta meta;
    pthread_t *th = NULL, prog;
    pthread_attr_t attr;
    size_t nth = 0;
    bool prog_started = false;
    int lock, rc = 1;

    if (outdir_create(o->out) < 0)
        return 1;
    lock = outdir_lock(o->out);
    if (lock < 0)
        return 1;
    outdir_path(path, sizeof(path), o->out, "results.jsonl");
    results_set_init(&prev);
    results_set_init(&all);
    run_init(&run, o, ds);
    if (prepare_out(o, path, &prev) < 0)
        goto out;
    run.out = fopen(path, "ab");
    if (!run.out) {
        char eb[128];

        fprintf(stderr, "optillm-eval: cannot write %s: %s\n", path,
                eval_strerror(errno, eb, sizeof(eb)));
        goto out;
    }
    write_meta(o, ds);
    plan_jobs(&run, &prev);
    fprintf(stderr,
            "optillm-eval: %zu items x %zu approaches, %zu requests to run%s (%s, model %s, "
            "concurrency %u)\n",
            ds->nitems, o->napproaches, run.njobs,
            prev.n ? ", the rest already in results.jsonl" : "",
            o->proxy ? "through the proxy" : "in-process", o->model, o->concurrency);
    if (run.njobs > 0 && client_global_init(o) < 0) {
        fprintf(stderr, "optillm-eval: start-up failed\n");
        goto out;
    }
    run.t0_ms = px_now_ms();
    if (run.njobs > 0) {
        size_t want = o->concurrency < run.njobs ? o->concurrency : run.njobs;

        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, WORKER_STACK);
        th = xcalloc(want, sizeof(*th));
        for (; nth < want; nth++)
            if (pthread_create(&th[nth], &attr, worker, &run) != 0)
                break;
        pthread_attr_destroy(&attr);
        if (nth == 0) {
            fprintf(stderr, "optillm-eval: cannot start worker threads\n");
            client_global_cleanup(o);
            goto out;
        }
        if (o->progress != PROGRESS_OFF)
            prog_started = pthread_create(&prog, NULL, progress, &run) == 0;
        for (size_t i = 0; i < nth; i++)
            pthread_join(th[i], NULL);
        pthread_mutex_lock(&run.mu);
        run.finished = true;
        pthread_cond_broadcast(&run.cv);
        pthread_mutex_unlock(&run.mu);
        if (prog_started)
            pthread_join(prog, NULL);
        client_global_cleanup(o);
    }
    fclose(run.out);
    run.out = NULL;
    {
        double secs = (double)(px_now_ms() - run.t0_ms) / 1000.0;

        fprintf(stderr, "optillm-eval: %ld requests in %.1f s (%.1f/s), %ld errors\n",
                run.session_done, secs, secs > 0 ? (double)run.session_done / secs : 0.0,
                run.session_errors);
    }
    if (run.write_failed)
        goto out;

    /* The report covers everything in the folder (earlier runs included). */
    outdir_meta_read(o->out, &meta);
    if (results_read(path, false, stderr, &all, NULL) == 0 &&
        outdir_report(o->out, &all, &meta, o->baseline) == 0)
        rc = 0;
    outdir_meta_cleanup(&meta);
    if (rc == 0 && eval_stop_requested) {
        fprintf(stderr, "optillm-eval: stopped early; %zu requests not run (--resume continues)\n",
                run.njobs - (size_t)run.session_done);
        rc = 130;
    } else if (rc == 0 && run.session_done > 0 && run.session_errors == run.session_done) {
        fprintf(stderr, "optillm-eval: every request failed; the first error: %s\n",
                run.first_error);
        rc = 3;
    } else if (run.session_errors > 0) {
        fprintf(stderr,
                "optillm-eval: %ld requests failed (first: %s); --resume --retry-errors runs "
                "them again\n",
                run.session_errors, run.first_error);
    }
out:
    if (run.out)
        fclose(run.out);
    free(th);
    run_cleanup(&run);
    results_set_cleanup(&prev);
    results_set_cleanup(&all);
    close(lock);
    return rc;
}
