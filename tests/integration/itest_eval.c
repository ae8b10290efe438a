/* itest_eval.c: build/optillm-eval end to end against the mock upstream's noisy model: the
 * report files and their counts, voting beating a single answer, SIGKILL then --resume,
 * shards merged against an unsharded run, malformed dataset lines, --proxy mode against the
 * in-process engine, errors and retries, and the command line's error paths. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define KEY   "sk-eval-LEAKCHECK-9f8e7d"
#define MODEL "mock@noisy=1"

static struct proc mock;
static char tmp[256];      /* this run's scratch folder */
static char base_url[128]; /* the mock's /v1 */
static pid_t running = -1; /* an optillm-eval started without waiting */
static char last_err[512]; /* stderr file of the last run */
static char last_out[512]; /* stdout file of the last run */
static int seq;
static char *eval_env[2]; /* extra "NAME=value" for the next runs (shard index variables) */

static const char *build_dir(void)
{
    return harness_build_dir();
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* ---- files ------------------------------------------------------------------------------- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)n + 1);
    n = (long)fread(data, 1, (size_t)n, f);
    data[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return data;
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;

    if (!d) {
        unlink(path);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        char sub[1024];

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
}

static const char *path_in(char *buf, size_t len, const char *dir, const char *name)
{
    snprintf(buf, len, "%s/%s/%s", tmp, dir, name);
    return buf;
}

static const char *out_dir(char *buf, size_t len, const char *dir)
{
    snprintf(buf, len, "%s/%s", tmp, dir);
    return buf;
}

static int count_lines(const char *path)
{
    char *s = slurp(path, NULL);
    int n = 0;

    for (const char *p = s; p && *p; p++)
        n += *p == '\n';
    free(s);
    return n;
}

/* ---- running optillm-eval --------------------------------------------------------------- */

/* Starts build/optillm-eval with 'args' (NULL-terminated) in a clean environment holding the
 * key; stdout and stderr go to files. Returns the pid. */
static pid_t start_eval(const char *const *args)
{
    const char *argv[64];
    char path[512];
    char *envp[] = {"PATH=/usr/bin:/bin", "OPENAI_API_KEY=" KEY, eval_env[0], eval_env[1], NULL};
    const char *w = getenv("PX_WRAPPER");
    char wrapper[512];
    int n = 0;
    pid_t pid;

    snprintf(path, sizeof(path), "%s/optillm-eval", build_dir());
    if (w && *w) {
        char *save = NULL;

        snprintf(wrapper, sizeof(wrapper), "%s", w);
        for (char *t = strtok_r(wrapper, " ", &save); t && n < 16; t = strtok_r(NULL, " ", &save))
            argv[n++] = t;
    }
    argv[n++] = path;
    for (int i = 0; args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    seq++;
    snprintf(last_out, sizeof(last_out), "%s/stdout-%d.txt", tmp, seq);
    snprintf(last_err, sizeof(last_err), "%s/stderr-%d.txt", tmp, seq);
    pid = fork();
    if (pid == 0) {
        int o = open(last_out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(last_err, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        dup2(o, 1);
        dup2(e, 2);
        execve(w && *w ? "/usr/bin/valgrind" : path, (char *const *)argv, envp);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status;

    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs optillm-eval to the end; returns its exit status. No key in anything it printed. */
static int run_eval(const char *const *args)
{
    int rc = wait_exit(start_eval(args));

    assert_false(file_contains(last_err, KEY));
    assert_false(file_contains(last_out, KEY));
    if (rc != 0 && getenv("ITEST_VERBOSE")) {
        char *e = slurp(last_err, NULL);

        fprintf(stderr, "optillm-eval exited %d:\n%s\n", rc, e ? e : "");
        free(e);
    }
    return rc;
}

/* A run over a dataset into tmp/dir with the common flags plus 'extra' (NULL-terminated). */
static int eval_into(const char *dir, const char *dataset, const char *approaches,
                     const char *model, const char *const *extra)
{
    char out[512];
    const char *args[48] = {"--dataset",  dataset,  "--approaches", approaches,
                            "--model",    model,    "--out",        out_dir(out, sizeof(out), dir),
                            "--base-url", base_url, "--progress",   "lines"};
    int n = 12;

    for (int i = 0; extra && extra[i] && n < 46; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return run_eval(args);
}

/* ---- reading the results ---------------------------------------------------------------- */

struct row {
    char id[64];
    char approach[64];
    int correct;
    char extracted[64];
    int error;
};

/* Parses results.jsonl; asserts every line is a complete object. Returns the count. */
static int read_results(const char *dir, struct row *rows, int cap)
{
    char path[512];
    char *s = slurp(path_in(path, sizeof(path), dir, "results.jsonl"), NULL);
    int n = 0;

    assert_non_null(s);
    for (char *line = s, *nl; *line; line = nl + 1) {
        cJSON *o;
        const cJSON *ex;

        nl = strchr(line, '\n');
        assert_non_null(nl); /* no torn last line */
        o = cJSON_ParseWithLength(line, (size_t)(nl - line));
        assert_non_null(o);
        assert_true(n < cap);
        snprintf(rows[n].id, sizeof(rows[n].id), "%s", cJSON_GetObjectItem(o, "id")->valuestring);
        snprintf(rows[n].approach, sizeof(rows[n].approach), "%s",
                 cJSON_GetObjectItem(o, "approach")->valuestring);
        rows[n].correct = cJSON_IsTrue(cJSON_GetObjectItem(o, "correct"));
        ex = cJSON_GetObjectItem(o, "extracted");
        snprintf(rows[n].extracted, sizeof(rows[n].extracted), "%s",
                 cJSON_IsString(ex) ? ex->valuestring : "(null)");
        rows[n].error = !cJSON_IsNull(cJSON_GetObjectItem(o, "error"));
        /* the fields the issue asks for */
        static const char *const fields[] = {
            "id",         "approach",       "correct",       "extracted",         "expected",
            "latency_ms", "upstream_calls", "prompt_tokens", "completion_tokens", "error"};
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++)
            assert_non_null(cJSON_GetObjectItem(o, fields[k]));
        cJSON_Delete(o);
        n++;
    }
    free(s);
    return n;
}

/* Asserts each (id, approach) appears once. */
static void assert_unique(const struct row *rows, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            assert_false(!strcmp(rows[i].id, rows[j].id) &&
                         !strcmp(rows[i].approach, rows[j].approach));
}

static cJSON *report_json(const char *dir)
{
    char path[512];
    char *s = slurp(path_in(path, sizeof(path), dir, "report.json"), NULL);
    cJSON *j;

    assert_non_null(s);
    j = cJSON_Parse(s);
    free(s);
    assert_non_null(j);
    return j;
}

static const cJSON *approach_row(const cJSON *report, const char *name)
{
    const cJSON *a;

    cJSON_ArrayForEach(a, cJSON_GetObjectItem(report, "approaches"))
    {
        if (!strcmp(cJSON_GetObjectItem(a, "approach")->valuestring, name))
            return a;
    }
    fail_msg("no row for %s", name);
    return NULL;
}

static long num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);

    assert_true(cJSON_IsNumber(v));
    return (long)v->valuedouble;
}

/* Same items, results and per-approach items/correct/errors in two reports. */
static void assert_same_totals(const char *a_dir, const char *b_dir, bool same_correct)
{
    cJSON *a = report_json(a_dir), *b = report_json(b_dir);
    const cJSON *ra;

    assert_int_equal(num(a, "items"), num(b, "items"));
    assert_int_equal(num(a, "results"), num(b, "results"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(a, "approaches")),
                     cJSON_GetArraySize(cJSON_GetObjectItem(b, "approaches")));
    cJSON_ArrayForEach(ra, cJSON_GetObjectItem(a, "approaches"))
    {
        const cJSON *rb = approach_row(b, cJSON_GetObjectItem(ra, "approach")->valuestring);

        assert_int_equal(num(ra, "items"), num(rb, "items"));
        assert_int_equal(num(ra, "errors"), num(rb, "errors"));
        if (same_correct)
            assert_int_equal(num(ra, "correct"), num(rb, "correct"));
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static int setup(void **state)
{
    const char *w = getenv("PX_WRAPPER");
    static const char *const args[] = {"--noisy-key", "datasets/word_problems.jsonl", NULL};

    (void)state;
    harness_deadline(w && *w ? 1500 : 300);
    snprintf(tmp, sizeof(tmp), "/tmp/itest_eval_XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    if (mock_start(&mock, args) != 0)
        return -1;
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%d/v1", mock.port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (running > 0) {
        kill(running, SIGKILL);
        waitpid(running, NULL, 0);
    }
    rm_rf(tmp);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

/* ---- (1) a full run: files, counts, voting beats a single answer ------------------------- */

#define NARITH 120
#define NAPPR  3

static void test_full_run(void **state)
{
    static struct row rows[NARITH * NAPPR + 8];
    static const char *const appr[NAPPR] = {"none", "self_consistency", "majority_voting"};
    static const char *const files[] = {"report.md", "report.json", "report.csv", "report.svg",
                                        "run.json"};
    long correct[NAPPR] = {0};
    char path[512];
    cJSON *rep, *keys;
    int n;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(eval_into("full", "datasets/arithmetic.jsonl",
                               "none,self-consistency,majority_voting", MODEL,
                               (const char *const[]){"--concurrency", "8", NULL}),
                     0);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        assert_int_equal(access(path_in(path, sizeof(path), "full", files[i]), R_OK), 0);
    assert_true(file_contains(path_in(path, sizeof(path), "full", "report.svg"), "</svg>"));
    assert_true(file_contains(path_in(path, sizeof(path), "full", "report.md"), "McNemar"));
    assert_true(file_contains(last_out, "report: "));

    /* items x approaches lines, each (id, approach) once, no errors */
    n = read_results("full", rows, NARITH * NAPPR + 8);
    assert_int_equal(n, NARITH * NAPPR);
    assert_unique(rows, n);
    for (int i = 0; i < n; i++) {
        int a = -1;

        for (int k = 0; k < NAPPR; k++)
            if (!strcmp(rows[i].approach, appr[k]))
                a = k;
        assert_true(a >= 0); /* the alias was canonicalised */
        assert_false(rows[i].error);
        correct[a] += rows[i].correct;
    }
    /* the report agrees with the lines */
    rep = report_json("full");
    assert_int_equal(num(rep, "items"), NARITH);
    assert_int_equal(num(rep, "results"), NARITH * NAPPR);
    assert_string_equal(cJSON_GetObjectItem(rep, "baseline")->valuestring, "none");
    for (int k = 0; k < NAPPR; k++) {
        const cJSON *r = approach_row(rep, appr[k]);

        assert_int_equal(num(r, "items"), NARITH);
        assert_int_equal(num(r, "errors"), 0);
        assert_int_equal(num(r, "correct"), correct[k]);
        if (k > 0) {
            const cJSON *v = cJSON_GetObjectItem(r, "vs_baseline");

            assert_int_equal(num(v, "paired"), NARITH);
            assert_int_equal(num(v, "wins") - num(v, "losses"), correct[k] - correct[0]);
            assert_int_equal(num(v, "wins") + num(v, "losses") + num(v, "both_correct") +
                                 num(v, "both_wrong"),
                             NARITH);
        }
    }
    cJSON_Delete(rep);
    /* The noisy model is right with p = 0.6 per sample; wrong samples spread over 18 values.
     * none ~ Bin(120, 0.6) (mean 72, sd 5.4); a plurality of 5-6 samples is right ~90% of the
     * time (mean ~108, sd ~3.3). A margin of 12 is ~3.8 sd of the difference below its mean:
     * a correct build fails with probability < 1e-4 (and the mock is seeded, so results are
     * stable). */
    fprintf(stderr, "accuracy: none %ld, self_consistency %ld, majority_voting %ld of %d\n",
            correct[0], correct[1], correct[2], NARITH);
    assert_true(correct[1] >= correct[0] + 12);
    assert_true(correct[2] >= correct[0] + 12);
    /* OPENAI_API_KEY went upstream as the server would send it */
    keys = mock_get(mock.port, "/mock/stats");
    {
        char *k = cJSON_PrintUnformatted(cJSON_GetObjectItem(keys, "keys"));

        assert_non_null(strstr(k, KEY));
        free(k);
    }
    cJSON_Delete(keys);

    /* a second run into the same folder without --resume refuses (never duplicates) */
    assert_int_equal(eval_into("full", "datasets/arithmetic.jsonl", "none", MODEL, NULL), 1);
    assert_true(file_contains(last_err, "--resume"));
    /* nor does it mix models in one folder */
    assert_int_equal(eval_into("full", "datasets/arithmetic.jsonl", "none", "mock@noisy=1,p=0.9",
                               (const char *const[]){"--resume", NULL}),
                     1);
    assert_true(file_contains(last_err, "holds results for model"));
    /* --resume with everything done runs nothing and duplicates nothing */
    assert_int_equal(eval_into("full", "datasets/arithmetic.jsonl",
                               "none,self_consistency,majority_voting", MODEL,
                               (const char *const[]){"--resume", NULL}),
                     0);
    assert_int_equal(count_lines(path_in(path, sizeof(path), "full", "results.jsonl")),
                     NARITH * NAPPR);
    assert_true(file_contains(last_err, "0 requests to run"));
    /* the report command rewrites the same report */
    {
        char dir[512];

        out_dir(dir, sizeof(dir), "full");
        assert_int_equal(run_eval((const char *const[]){"report", dir, NULL}), 0);
        assert_true(file_contains(last_out, "majority_voting"));
    }
}

/* ---- (2) SIGKILL part-way, then --resume ---------------------------------------------------- */

#define NKILL 60

static void test_kill_resume(void **state)
{
    static struct row rows[NKILL * NAPPR + 8];
    char path[512], out[512];
    const char *model = "mock@noisy=1,latency=50";
    int lines = 0, n;
    FILE *f;

    (void)state;
    mock_reset(mock.port);
    running = start_eval((const char *const[]){
        "--dataset", "datasets/arithmetic.jsonl", "--limit", "60", "--approaches",
        "none,self_consistency,majority_voting", "--model", model, "--out",
        out_dir(out, sizeof(out), "killed"), "--base-url", base_url, "--concurrency", "4",
        "--progress", "lines", "--progress-interval", "0.2", NULL});
    path_in(path, sizeof(path), "killed", "results.jsonl");
    for (int i = 0; i < 3000 && lines < 40; i++) {
        sleep_ms(10);
        lines = count_lines(path);
    }
    /* a second run cannot write to the same folder meanwhile */
    {
        char first_err[512];
        int rc;

        snprintf(first_err, sizeof(first_err), "%s", last_err);
        rc = eval_into("killed", "datasets/arithmetic.jsonl", "none", model,
                       (const char *const[]){"--limit", "60", "--resume", NULL});
        assert_int_equal(rc, 1);
        assert_true(file_contains(last_err, "another optillm-eval is writing"));
        snprintf(last_err, sizeof(last_err), "%s", first_err);
    }
    kill(running, SIGKILL);
    waitpid(running, NULL, 0);
    running = -1;
    lines = count_lines(path);
    fprintf(stderr, "killed after %d of %d results\n", lines, NKILL * NAPPR);
    assert_true(lines >= 40);
    assert_true(lines < NKILL * NAPPR);
    assert_true(file_contains(last_err, "items (")); /* plain progress lines: not a terminal */
    assert_false(file_contains(last_err, "\r"));
    /* and a line torn by the kill, as a kill during the write would leave it */
    f = fopen(path, "ab");
    fputs("{\"id\":\"arith-0", f);
    fclose(f);

    assert_int_equal(
        eval_into("killed", "datasets/arithmetic.jsonl", "none,self_consistency,majority_voting",
                  model,
                  (const char *const[]){"--limit", "60", "--resume", "--concurrency", "8", NULL}),
        0);
    assert_true(file_contains(last_err, "incomplete last line"));
    n = read_results("killed", rows, NKILL * NAPPR + 8);
    assert_int_equal(n, NKILL * NAPPR);
    assert_unique(rows, n);

    /* the same totals as an uninterrupted run (answers differ: requests in flight at the kill
     * were sent twice, and the mock draws a new sample for each) */
    assert_int_equal(eval_into("unkilled", "datasets/arithmetic.jsonl",
                               "none,self_consistency,majority_voting", "mock@noisy=1",
                               (const char *const[]){"--limit", "60", NULL}),
                     0);
    assert_same_totals("killed", "unkilled", false);
}

/* ---- Ctrl-C: the requests in flight finish and are recorded, the report is written ---------- */

static void test_interrupt(void **state)
{
    static struct row rows[40 * 2 + 8];
    char path[512], out[512];
    int lines = 0, rc, n;
    cJSON *rep;

    (void)state;
    mock_reset(mock.port);
    running = start_eval((const char *const[]){
        "--dataset", "datasets/arithmetic.jsonl", "--limit", "40", "--approaches",
        "none,majority_voting", "--model", "mock@noisy=1,latency=100", "--out",
        out_dir(out, sizeof(out), "interrupted"), "--base-url", base_url, "--concurrency", "4",
        "--progress", "off", NULL});
    path_in(path, sizeof(path), "interrupted", "results.jsonl");
    for (int i = 0; i < 3000 && lines < 8; i++) {
        sleep_ms(10);
        lines = count_lines(path);
    }
    kill(running, SIGINT);
    rc = wait_exit(running);
    running = -1;
    assert_int_equal(rc, 130);
    assert_true(file_contains(last_err, "stopped early"));
    lines = count_lines(path);
    assert_true(lines >= 8 && lines < 80);
    rep = report_json("interrupted"); /* the report covers what was done */
    assert_int_equal(num(rep, "results"), lines);
    cJSON_Delete(rep);
    assert_int_equal(
        eval_into("interrupted", "datasets/arithmetic.jsonl", "none,majority_voting",
                  "mock@noisy=1,latency=100",
                  (const char *const[]){"--limit", "40", "--resume", "--concurrency", "16", NULL}),
        0);
    n = read_results("interrupted", rows, 40 * 2 + 8);
    assert_int_equal(n, 80);
    assert_unique(rows, n);
}

/* ---- (3) shards merged equal an unsharded run --------------------------------------------- */

#define NSHARD 60

static void test_shards(void **state)
{
    static struct row whole[NSHARD * NAPPR + 8], merged[NSHARD * NAPPR + 8];
    static const char *const conc1[] = {"--limit", "60", "--concurrency", "1", NULL};
    char a[512], b[512], m[512];
    int n0, n1, nw, nm;

    (void)state;
    /* Concurrency 1 and a fresh mock: the mock seeds each sample by question and by how many
     * times that question was asked, so the same order of calls gives the same answers. */
    mock_reset(mock.port);
    assert_int_equal(eval_into("whole", "datasets/arithmetic.jsonl",
                               "none,self_consistency,majority_voting", MODEL, conc1),
                     0);
    mock_reset(mock.port);
    assert_int_equal(eval_into("shard0", "datasets/arithmetic.jsonl",
                               "none,self_consistency,majority_voting", MODEL,
                               (const char *const[]){"--limit", "60", "--concurrency", "1",
                                                     "--shard", "0/2", NULL}),
                     0);
    assert_int_equal(eval_into("shard1", "datasets/arithmetic.jsonl",
                               "none,self_consistency,majority_voting", MODEL,
                               (const char *const[]){"--limit", "60", "--concurrency", "1",
                                                     "--shard", "1/2", NULL}),
                     0);
    n0 = read_results("shard0", merged, NSHARD * NAPPR + 8);
    n1 = read_results("shard1", merged, NSHARD * NAPPR + 8);
    assert_true(n0 > 0 && n1 > 0);
    assert_int_equal(n0 + n1, NSHARD * NAPPR);

    assert_int_equal(run_eval((const char *const[]){
                         "merge", "--out", out_dir(m, sizeof(m), "merged"),
                         out_dir(a, sizeof(a), "shard0"), out_dir(b, sizeof(b), "shard1"), NULL}),
                     0);
    assert_same_totals("whole", "merged", true);
    nw = read_results("whole", whole, NSHARD * NAPPR + 8);
    nm = read_results("merged", merged, NSHARD * NAPPR + 8);
    assert_int_equal(nw, nm);
    assert_unique(merged, nm);
    /* item by item: the same extracted answers and verdicts */
    for (int i = 0; i < nw; i++) {
        bool found = false;

        for (int j = 0; j < nm && !found; j++) {
            if (strcmp(whole[i].id, merged[j].id) || strcmp(whole[i].approach, merged[j].approach))
                continue;
            found = true;
            assert_int_equal(whole[i].correct, merged[j].correct);
            assert_string_equal(whole[i].extracted, merged[j].extracted);
        }
        assert_true(found);
    }
    /* a folder merged twice counts once */
    assert_int_equal(run_eval((const char *const[]){
                         "merge", "--out", out_dir(m, sizeof(m), "merged2"), a, a, b, NULL}),
                     0);
    assert_true(file_contains(last_err, "more than one folder"));
    assert_same_totals("whole", "merged2", true);
    /* merging into one of the sources is refused */
    assert_int_equal(run_eval((const char *const[]){"merge", "--out", a, a, b, NULL}), 1);
}

/* The merged shards hold the same results as the unsharded run "whole", item by item. */
static void assert_same_rows(const char *merged_dir)
{
    static struct row whole[NSHARD * NAPPR + 8], merged[NSHARD * NAPPR + 8];
    int nw, nm;

    assert_same_totals("whole", merged_dir, true);
    nw = read_results("whole", whole, NSHARD * NAPPR + 8);
    nm = read_results(merged_dir, merged, NSHARD * NAPPR + 8);
    assert_int_equal(nw, nm);
    assert_unique(merged, nm);
    for (int i = 0; i < nw; i++) {
        bool found = false;

        for (int j = 0; j < nm && !found; j++) {
            if (strcmp(whole[i].id, merged[j].id) || strcmp(whole[i].approach, merged[j].approach))
                continue;
            found = true;
            assert_int_equal(whole[i].correct, merged[j].correct);
            assert_string_equal(whole[i].extracted, merged[j].extracted);
        }
        assert_true(found);
    }
}

/* --shard auto/N: the index from a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, 0-based, the
 * shards running at once) or a Slurm array (SLURM_ARRAY_TASK_ID from SLURM_ARRAY_TASK_MIN = 1);
 * merged, the same results as one run. Uses test_shards' "whole". */
static void test_shards_auto(void **state)
{
    static char idx[3][64], mins[64];
    char dirs[3][512], m[512];
    pid_t pids[3];

    (void)state;
    mock_reset(mock.port);
    for (int i = 0; i < 3; i++) {
        char name[32];
        const char *args[] = {"--dataset",
                              "datasets/arithmetic.jsonl",
                              "--approaches",
                              "none,self_consistency,majority_voting",
                              "--model",
                              MODEL,
                              "--out",
                              NULL,
                              "--base-url",
                              base_url,
                              "--limit",
                              "60",
                              "--concurrency",
                              "1",
                              "--shard",
                              "auto/3",
                              "--progress",
                              "off",
                              NULL};

        snprintf(name, sizeof(name), "k8s%d", i);
        args[7] = out_dir(dirs[i], sizeof(dirs[i]), name);
        snprintf(idx[i], sizeof(idx[i]), "JOB_COMPLETION_INDEX=%d", i);
        eval_env[0] = idx[i];
        pids[i] = start_eval(args);
    }
    eval_env[0] = NULL;
    int sum = 0;
    for (int i = 0; i < 3; i++) {
        char name[32], path[512];
        int n;

        assert_int_equal(wait_exit(pids[i]), 0);
        snprintf(name, sizeof(name), "k8s%d", i);
        n = count_lines(path_in(path, sizeof(path), name, "results.jsonl"));
        assert_true(n > 0 && n < NSHARD * NAPPR); /* each ran its own part, not everything */
        sum += n;
    }
    assert_int_equal(sum, NSHARD * NAPPR);
    assert_int_equal(
        run_eval((const char *const[]){"merge", "--out", out_dir(m, sizeof(m), "k8s-merged"),
                                       dirs[0], dirs[1], dirs[2], NULL}),
        0);
    assert_same_rows("k8s-merged");

    mock_reset(mock.port);
    snprintf(mins, sizeof(mins), "SLURM_ARRAY_TASK_MIN=1");
    eval_env[1] = mins;
    for (int i = 0; i < 3; i++) {
        char name[32];

        snprintf(name, sizeof(name), "slurm%d", i + 1);
        snprintf(idx[i], sizeof(idx[i]), "SLURM_ARRAY_TASK_ID=%d", i + 1);
        eval_env[0] = idx[i];
        out_dir(dirs[i], sizeof(dirs[i]), name);
        assert_int_equal(eval_into(name, "datasets/arithmetic.jsonl",
                                   "none,self_consistency,majority_voting", MODEL,
                                   (const char *const[]){"--limit", "60", "--concurrency", "1",
                                                         "--shard", "auto/3", NULL}),
                         0);
    }
    sum = 0;
    for (int i = 0; i < 3; i++) {
        char name[32], path[512];

        snprintf(name, sizeof(name), "slurm%d", i + 1);
        sum += count_lines(path_in(path, sizeof(path), name, "results.jsonl"));
    }
    assert_int_equal(sum, NSHARD * NAPPR);
    /* No index at all: refused, naming the variables. */
    eval_env[0] = eval_env[1] = NULL;
    assert_int_equal(eval_into("noindex", "datasets/arithmetic.jsonl", "none", MODEL,
                               (const char *const[]){"--shard", "auto/3", NULL}),
                     2);
    assert_true(file_contains(last_err, "JOB_COMPLETION_INDEX"));
    assert_int_equal(
        run_eval((const char *const[]){"merge", "--out", out_dir(m, sizeof(m), "slurm-merged"),
                                       dirs[0], dirs[1], dirs[2], NULL}),
        0);
    assert_same_rows("slurm-merged");
}

/* ---- (4) malformed dataset lines --------------------------------------------------------- */

static void test_malformed(void **state)
{
    static const char *const bad[] = {":2: skipped",  ":4: skipped",  ":6: skipped", ":9: skipped",
                                      ":10: skipped", ":11: skipped", ":12: skipped"};
    char path[512];
    cJSON *rep;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(eval_into("malformed", "tests/data/eval_malformed.jsonl", "none", MODEL, NULL),
                     0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_true(file_contains(last_err, bad[i]));
    assert_false(file_contains(last_err, ":5: skipped"));
    assert_true(file_contains(last_err, "7 malformed lines skipped"));
    assert_int_equal(count_lines(path_in(path, sizeof(path), "malformed", "results.jsonl")), 5);
    rep = report_json("malformed");
    assert_int_equal(num(rep, "dataset_lines_skipped"), 7);
    assert_int_equal(num(rep, "items"), 5);
    cJSON_Delete(rep);

    /* --strict stops before anything runs, naming the line */
    assert_int_equal(eval_into("strict", "tests/data/eval_malformed.jsonl", "none", MODEL,
                               (const char *const[]){"--strict", NULL}),
                     1);
    assert_true(file_contains(last_err, "eval_malformed.jsonl:2: skipped: not valid JSON"));
    assert_false(file_contains(last_err, ":4: skipped"));
    assert_true(access(path_in(path, sizeof(path), "strict", "results.jsonl"), F_OK) != 0);
}

/* ---- (5) word problems via the mock's answer key ------------------------------------------ */

static void test_word_problems(void **state)
{
    static struct row rows[64];
    int n, scored = 0;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(
        eval_into("words", "datasets/word_problems.jsonl", "none,majority_voting", MODEL, NULL), 0);
    n = read_results("words", rows, 64);
    assert_int_equal(n, 50);
    for (int i = 0; i < n; i++)
        scored += strcmp(rows[i].extracted, "(null)") != 0;
    assert_int_equal(scored, n); /* every reply had an answer the extraction found */
}

/* ---- (6) --proxy mode against a running build/optillm -----------------------------------------
 */

static void test_proxy_mode(void **state)
{
    static struct row local[30 * NAPPR + 8], remote[30 * NAPPR + 8];
    struct proc px;
    char url[128];
    int nl, nr;
    static const char *const extra[] = {"--limit", "30", "--concurrency", "1", NULL};

    (void)state;
    assert_int_equal(proxy_start(&px, mock.port, NULL, NULL), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", px.port);
    mock_reset(mock.port);
    assert_int_equal(
        eval_into("inproc", "datasets/arithmetic.jsonl", "none,bon,majority_voting", MODEL, extra),
        0);
    mock_reset(mock.port);
    assert_int_equal(eval_into("viaproxy", "datasets/arithmetic.jsonl", "none,bon,majority_voting",
                               MODEL,
                               (const char *const[]){"--limit", "30", "--concurrency", "1",
                                                     "--proxy", url, NULL}),
                     0);
    assert_int_equal(proc_stop(&px), 0);
    assert_false(file_contains(px.log, KEY));
    assert_same_totals("inproc", "viaproxy", true);
    nl = read_results("inproc", local, 30 * NAPPR + 8);
    nr = read_results("viaproxy", remote, 30 * NAPPR + 8);
    assert_int_equal(nl, 30 * NAPPR);
    assert_int_equal(nl, nr);
    for (int i = 0; i < nl; i++) {
        bool found = false;

        for (int j = 0; j < nr && !found; j++) {
            if (strcmp(local[i].id, remote[j].id) || strcmp(local[i].approach, remote[j].approach))
                continue;
            found = true;
            assert_int_equal(local[i].correct, remote[j].correct);
            assert_string_equal(local[i].extracted, remote[j].extracted);
        }
        assert_true(found);
    }
}

/* ---- errors and retries ------------------------------------------------------------------- */

static void test_errors(void **state)
{
    static struct row rows[16];
    char path[512];
    cJSON *rep;
    int n;

    (void)state;
    /* every first call of a body fails with 500; no retries: all recorded as errors, the run
     * goes on to the end and says every request failed (exit 3) */
    mock_reset(mock.port);
    assert_int_equal(eval_into("errors", "datasets/arithmetic.jsonl", "none",
                               "mock@noisy=1,fail_first=1",
                               (const char *const[]){"--limit", "10", "--retries", "0", NULL}),
                     3);
    n = read_results("errors", rows, 16);
    assert_int_equal(n, 10);
    for (int i = 0; i < n; i++)
        assert_true(rows[i].error && !rows[i].correct);
    assert_true(file_contains(path_in(path, sizeof(path), "errors", "results.jsonl"),
                              "\"error\":\"HTTP 500: mock error 500\""));
    rep = report_json("errors");
    assert_int_equal(num(approach_row(rep, "none"), "errors"), 10);
    cJSON_Delete(rep);
    /* --resume --retry-errors runs them again (the mock now answers) without duplicates */
    assert_int_equal(
        eval_into("errors", "datasets/arithmetic.jsonl", "none", "mock@noisy=1,fail_first=1",
                  (const char *const[]){"--limit", "10", "--resume", "--retry-errors", NULL}),
        0);
    n = read_results("errors", rows, 16);
    assert_int_equal(n, 10);
    for (int i = 0; i < n; i++)
        assert_false(rows[i].error);
    /* in-process, --retries is the engine's per-call retry (the server's flag): the first
     * failure is absorbed inside the request */
    mock_reset(mock.port);
    assert_int_equal(eval_into("retried", "datasets/arithmetic.jsonl", "none",
                               "mock@noisy=1,fail_first=1",
                               (const char *const[]){"--limit", "10", "--retries", "1",
                                                     "--retry-base-delay", "0.01", NULL}),
                     0);
    rep = report_json("retried");
    assert_int_equal(num(approach_row(rep, "none"), "errors"), 0);
    cJSON_Delete(rep);
    /* through a proxy that does not retry, the evaluation retries the whole request */
    {
        struct proc px;
        char url[128];
        static const char *const no_retries[] = {"--retries", "0", NULL};

        assert_int_equal(proxy_start(&px, mock.port, no_retries, NULL), 0);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", px.port);
        mock_reset(mock.port);
        assert_int_equal(
            eval_into("proxyretried", "datasets/arithmetic.jsonl", "none",
                      "mock@noisy=1,fail_first=1",
                      (const char *const[]){"--limit", "10", "--proxy", url, "--retries", "1",
                                            "--retry-base-delay", "0.01", NULL}),
            0);
        assert_int_equal(proc_stop(&px), 0);
        assert_true(file_contains(path_in(path, sizeof(path), "proxyretried", "results.jsonl"),
                                  "\"attempts\":2"));
        rep = report_json("proxyretried");
        assert_int_equal(num(approach_row(rep, "none"), "errors"), 0);
        cJSON_Delete(rep);
    }
}

/* Issue 10, item 6: an upstream 401 that quotes a masked key is stored redacted in
 * results.jsonl. */
static void test_masked_key_redacted(void **state)
{
    char path[512];

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(eval_into("masked", "datasets/arithmetic.jsonl", "none",
                               "mock@status=401,errmsg=Incorrect%20API%20key%20provided%3A%20"
                               "sk-SERVE********-123.",
                               (const char *const[]){"--limit", "2", "--retries", "0", NULL}),
                     3);
    path_in(path, sizeof(path), "masked", "results.jsonl");
    assert_true(file_contains(path, "Incorrect API key provided: [redacted]"));
    assert_false(file_contains(path, "SERVE*"));
    /* (stderr names the model, which here carries the mock's message: not checked) */
}

/* ---- the command line ---------------------------------------------------------------------- */

static void test_command_line(void **state)
{
    static const char *const flags[] = {"--dataset",
                                        "--approaches",
                                        "--model",
                                        "--out",
                                        "--proxy",
                                        "--api-key",
                                        "--concurrency",
                                        "--retries",
                                        "--retry-base-delay",
                                        "--limit",
                                        "--shard",
                                        "--resume",
                                        "--retry-errors",
                                        "--overwrite",
                                        "--strict",
                                        "--baseline",
                                        "--temperature",
                                        "--max-tokens",
                                        "--request-timeout",
                                        "--fsync",
                                        "--no-responses",
                                        "--progress",
                                        "--progress-interval",
                                        "--base-url",
                                        "merge"};
    char out[512], file[512];
    FILE *f;

    (void)state;
    assert_int_equal(run_eval((const char *const[]){"--help", NULL}), 0);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        assert_true(file_contains(last_out, flags[i]));
    assert_int_equal(run_eval((const char *const[]){"--bogus", NULL}), 2);
    assert_true(file_contains(last_err, "bogus"));
    assert_int_equal(
        run_eval((const char *const[]){"--dataset", "datasets/arithmetic.jsonl", NULL}), 2);
    assert_true(file_contains(last_err, "--out"));
    assert_int_equal(
        eval_into("x", "datasets/arithmetic.jsonl", "none,nosuchapproach", MODEL, NULL), 2);
    assert_true(file_contains(last_err, "nosuchapproach"));
    assert_int_equal(eval_into("x", "datasets/arithmetic.jsonl", "none", MODEL,
                               (const char *const[]){"--shard", "2/2", NULL}),
                     2);
    assert_int_equal(eval_into("x", "datasets/arithmetic.jsonl", "none", MODEL,
                               (const char *const[]){"--concurrency", "0", NULL}),
                     2);
    assert_int_equal(eval_into("x", "/nonexistent/data.jsonl", "none", MODEL, NULL), 1);
    assert_true(file_contains(last_err, "cannot open the dataset /nonexistent/data.jsonl"));
    /* an output "folder" that is a file */
    snprintf(file, sizeof(file), "%s/plainfile", tmp);
    f = fopen(file, "w");
    fclose(f);
    assert_int_equal(run_eval((const char *const[]){"--dataset", "datasets/arithmetic.jsonl",
                                                    "--out", file, "--base-url", base_url, NULL}),
                     1);
    assert_true(file_contains(last_err, "plainfile"));
    /* an unwritable one (unless we are root, who may write anywhere) */
    if (geteuid() != 0) {
        snprintf(out, sizeof(out), "%s/ro", tmp);
        mkdir(out, 0555);
        assert_int_equal(run_eval((const char *const[]){"--dataset", "datasets/arithmetic.jsonl",
                                                        "--out", out, NULL}),
                         1);
        assert_true(file_contains(last_err, "not writable"));
    }
    assert_int_equal(run_eval((const char *const[]){"merge", NULL}), 2);
    assert_int_equal(run_eval((const char *const[]){"report", "/nonexistent", NULL}), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_run),      cmocka_unit_test(test_kill_resume),
        cmocka_unit_test(test_interrupt),     cmocka_unit_test(test_shards),
        cmocka_unit_test(test_shards_auto),   cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_word_problems), cmocka_unit_test(test_proxy_mode),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_masked_key_redacted),
        cmocka_unit_test(test_command_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
