/* main.c: optillm-eval's command line: the run (default), merge and report commands, flags,
 * signals. Flags the evaluation does not know are the server's (config.c): --base-url,
 * OPENAI_API_KEY, approach options, ... are read exactly as build/optillm reads them. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "answer.h"
#include "approach.h"
#include "chat.h"
#include "config.h"
#include "dataset.h"
#include "eval.h"
#include "log.h"
#include "px.h"

#define MAX_APPROACHES 64

enum arg { A_NONE, A_STR, A_BOOL };

struct eflag {
    const char *name;
    enum arg arg;
    const char *metavar;
    const char *help;
};

static const struct eflag run_flags[] = {
    {"dataset", A_STR, "FILE",
     "questions with answers, JSON Lines (or a JSON array); our layout, GSM8K, MATH and "
     "multiple-choice layouts are read as they are (see README)"},
    {"approaches", A_STR, "LIST",
     "comma-separated approaches to compare, e.g. none,bon,moa,self_consistency; a&b and a|b "
     "combinations too; the first is the report's baseline (default none)"},
    {"model", A_STR, "NAME", "the model under test (default gpt-4o-mini) [OPTILLM_MODEL]"},
    {"out", A_STR, "DIR",
     "output folder, created if needed: results.jsonl, run.json, report.{md,json,csv,svg} "
     "(required)"},
    {"proxy", A_STR, "URL",
     "send the requests to a running optillm at URL (e.g. http://127.0.0.1:8000/v1) instead "
     "of running the approaches in-process"},
    {"api-key", A_STR, "KEY",
     "key for the requests: the upstream key in-process, the Bearer token for --proxy "
     "(default OPENAI_API_KEY; prefer the environment, flags show in ps)"},
    {"concurrency", A_STR, "N", "requests in flight, across items and approaches (default 8)"},
    {"limit", A_STR, "N", "only the first N items of the dataset (before --shard)"},
    {"shard", A_STR, "I/N",
     "only shard I (0-based) of N: the items whose FNV-1a 64 hash of the id mod N is I; merge "
     "the shards' folders with 'optillm-eval merge'. auto/N takes I from JOB_COMPLETION_INDEX "
     "(Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN (Slurm array)"},
    {"resume", A_BOOL, NULL,
     "continue the run in --out: (id, approach) pairs already in results.jsonl are skipped"},
    {"retry-errors", A_BOOL, NULL, "with --resume: run the results that ended in an error again"},
    {"overwrite", A_BOOL, NULL, "discard the results in --out and start again"},
    {"strict", A_BOOL, NULL,
     "stop at the first malformed dataset line (default: report its line number, skip it)"},
    {"baseline", A_STR, "NAME", "the approach the others are compared with (default: the first)"},
    {"temperature", A_STR, "T", "send this temperature with every request (default: none sent)"},
    {"max-tokens", A_STR, "N", "send this max_tokens with every request (default: none sent)"},
    {"fsync", A_BOOL, NULL, "fsync results.jsonl after every line (survives power loss too)"},
    {"no-responses", A_BOOL, NULL, "leave the reply texts out of results.jsonl"},
    {"progress", A_STR, "MODE",
     "auto (a bar on a terminal, else a line every --progress-interval), bar, lines or off"},
    {"progress-interval", A_STR, "SECONDS", "seconds between progress lines (default 5)"},
};

/* "  --flag ARG   help..." with the help wrapped at 100 columns under itself. */
static void print_opt(const char *left, const char *help)
{
    const int indent = 30, width = 100;
    int col;

    col = printf("  %s", left);
    if (col >= indent) {
        printf("\n");
        col = 0;
    }
    printf("%*s", indent - col, "");
    col = indent;
    while (*help) {
        size_t w = strcspn(help, " ");

        if (col > indent && col + 1 + (int)w > width) {
            printf("\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            putchar(' ');
            col++;
        }
        printf("%.*s", (int)w, help);
        col += (int)w;
        help += w;
        while (*help == ' ')
            help++;
    }
    putchar('\n');
}

static void usage(void)
{
    printf("Usage: optillm-eval --dataset FILE --approaches LIST --model MODEL --out DIR "
           "[options]\n"
           "       optillm-eval merge [--out DIR] [--baseline NAME] DIR...\n"
           "       optillm-eval report [--baseline NAME] DIR\n\n"
           "Runs every question of a dataset through each approach (the proxy's engine, "
           "in-process\nor through a running proxy), scores the answers with the approaches' "
           "own answer\nextraction, appends each result to DIR/results.jsonl as it finishes "
           "(so a run can\nbe resumed), and writes a report: accuracy with 95%% Wilson "
           "intervals, errors,\nlatency, upstream calls and tokens per item, and paired "
           "wins/losses against the\nfirst approach with an exact McNemar p-value.\n\n"
           "Run options:\n");
    for (size_t i = 0; i < PX_ARRAY_LEN(run_flags); i++) {
        const struct eflag *f = &run_flags[i];
        char left[64];

        snprintf(left, sizeof(left), "--%s%s%s", f->name, f->metavar ? " " : "",
                 f->metavar ? f->metavar : "");
        print_opt(left, f->help);
    }
    print_opt("-h, --help", "show this help and exit");
    print_opt("--version", "print the version and exit");
    printf("\n");
    printf("merge: combines the results.jsonl of several output folders (e.g. shards) into\n"
           "--out (default eval-merged): one results.jsonl, run.json and the report. A result\n"
           "present in several folders is kept once. report: rewrites a folder's report.\n\n");
    printf("Upstream and approach options (in-process mode), read as the server reads them:\n");
    print_opt("--base-url URL", "upstream API including /v1 [OPTILLM_BASE_URL]");
    print_opt("OPENAI_API_KEY", "upstream key (environment; or --upstream-key / --api-key)");
    print_opt("--upstream-auth-header NAME", "Authorization (default) or e.g. api-key (Azure)");
    print_opt("--upstream-timeout SECONDS", "limit for one upstream call (default 600)");
    print_opt("--connect-timeout SECONDS", "limit for connecting (default 10)");
    print_opt("--retries N",
              "retries after a 429, 5xx or connect error (default 2): in-process of each "
              "upstream call, as the server does; with --proxy of the whole request to the "
              "proxy. A request that still fails is recorded with its error and the run goes "
              "on [OPTILLM_RETRIES]");
    print_opt("--retry-base-delay SECONDS",
              "first retry delay, doubled each time, with jitter; Retry-After wins (default "
              "0.5)");
    print_opt("--request-timeout SECONDS",
              "deadline for one whole request (default: none in-process, 1800 with --proxy)");
    print_opt("--io-loops N", "upstream I/O threads (default: cores)");
    print_opt("--prompts-dir DIR", "override prompts, eval/question.txt and eval/choice.txt too");
    print_opt("--log LEVEL", "error, warning (default here), info or debug [OPTILLM_LOG]");
    printf("  and every other optillm flag (optillm --help). Approach options:\n");
    for (size_t i = 0; i < approach_registry_len; i++) {
        for (const struct approach_option *o = approach_registry[i]->options; o && o->name; o++) {
            char left[96], help[512];
            size_t k;

            if (approach_option_find(o->name) != o)
                continue;
            snprintf(left, sizeof(left), "--");
            for (k = 0; o->name[k] && k + 5 < sizeof(left); k++)
                left[k + 2] = o->name[k] == '_' ? '-' : o->name[k];
            snprintf(left + k + 2, sizeof(left) - k - 2, " N");
            snprintf(help, sizeof(help), "%s (default %g)", o->help, o->def);
            print_opt(left, help);
        }
    }
    printf("\nExit status: 0 done (items may have failed: see the report's errors), 1 a fatal\n"
           "error, 2 a bad command line, 3 every request failed, 130 interrupted (Ctrl-C: the\n"
           "requests in flight finish and are recorded; a second Ctrl-C quits at once).\n");
}

/* ---- small parsers ------------------------------------------------------------------------ */

static bool parse_long(const char *v, long min, long max, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(v, &end, 10);
    return errno == 0 && end != v && *end == '\0' && *out >= min && *out <= max;
}

static bool parse_double(const char *v, double min, double max, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(v, &end);
    return errno == 0 && end != v && *end == '\0' && isfinite(*out) && *out >= min && *out <= max;
}

/* --shard auto/N: this task's index from the job runner, as text in buf; -1 when none is set. */
static int shard_auto(char *buf, size_t len)
{
    const char *k8s = getenv("JOB_COMPLETION_INDEX");
    const char *slurm = getenv("SLURM_ARRAY_TASK_ID");
    const char *min = getenv("SLURM_ARRAY_TASK_MIN");
    char *end;
    long i;

    if (k8s && *k8s) {
        snprintf(buf, len, "%s", k8s);
        return 0;
    }
    if (!slurm || !*slurm)
        return -1;
    i = strtol(slurm, &end, 10);
    if (*end)
        return -1;
    if (min && *min)
        i -= strtol(min, NULL, 10); /* arrays numbered 1-N: shard 0 is the first task */
    snprintf(buf, len, "%ld", i);
    return 0;
}

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "optillm-eval: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see --help)\n");
    return -1;
}

/* Splits "none, bon,moa" into canonical names (route_name), refusing unknown ones. */
static int parse_approaches(const char *list, struct eval_opts *o)
{
    char *copy = xstrdup(list), *save = NULL;
    int rc = 0;

    o->approaches = xcalloc(MAX_APPROACHES, sizeof(char *));
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        struct route r;
        struct px_error err;
        char name[256];
        size_t l;

        while (isspace((unsigned char)*tok))
            tok++;
        l = strlen(tok);
        while (l && isspace((unsigned char)tok[l - 1]))
            tok[--l] = '\0';
        if (!*tok)
            continue;
        if (strcmp(tok, "auto") == 0 || route_parse_value(tok, &r, &err) < 0) {
            fprintf(stderr, "optillm-eval: --approaches: unknown approach '%s'; known: none, %s\n",
                    tok, approach_slug_list());
            rc = -1;
            break;
        }
        route_name(&r, name, sizeof(name));
        for (size_t i = 0; i < o->napproaches; i++)
            if (strcmp(o->approaches[i], name) == 0) {
                fprintf(stderr, "optillm-eval: --approaches names '%s' twice\n", name);
                rc = -1;
            }
        if (rc < 0)
            break;
        if (o->napproaches == MAX_APPROACHES) {
            fprintf(stderr, "optillm-eval: at most %d approaches\n", MAX_APPROACHES);
            rc = -1;
            break;
        }
        o->approaches[o->napproaches++] = xstrdup(name);
    }
    free(copy);
    if (rc == 0 && o->napproaches == 0)
        rc = bad("--approaches is empty");
    return rc;
}

static void free_approaches(struct eval_opts *o)
{
    for (size_t i = 0; i < o->napproaches; i++)
        free(o->approaches[i]);
    free(o->approaches);
    o->approaches = NULL;
    o->napproaches = 0;
}

static const struct eflag *find_eflag(const char *name, size_t len)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(run_flags); i++)
        if (strlen(run_flags[i].name) == len && strncmp(run_flags[i].name, name, len) == 0)
            return &run_flags[i];
    return NULL;
}

/* Applies one of our flags. */
static int set_flag(struct eval_opts *o, const char *name, const char *v, const char **approaches,
                    const char **model)
{
    long l;
    double d;

    if (!strcmp(name, "dataset"))
        o->dataset = v;
    else if (!strcmp(name, "approaches"))
        *approaches = v;
    else if (!strcmp(name, "model"))
        *model = v;
    else if (!strcmp(name, "out"))
        o->out = v;
    else if (!strcmp(name, "proxy")) {
        if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
            return bad("--proxy needs an http:// or https:// URL, got '%s'", v);
        o->proxy = v;
    } else if (!strcmp(name, "api-key"))
        o->api_key = *v ? v : NULL;
    else if (!strcmp(name, "concurrency")) {
        if (!parse_long(v, 1, 4096, &l))
            return bad("--concurrency needs a number from 1 to 4096, got '%s'", v);
        o->concurrency = (unsigned)l;
    } else if (!strcmp(name, "limit")) {
        if (!parse_long(v, 0, 1L << 40, &l))
            return bad("--limit needs a non-negative number, got '%s'", v);
        o->limit = l;
    } else if (!strcmp(name, "shard")) {
        const char *slash = strchr(v, '/');
        char first[32];
        long i, n;

        if (!slash || (size_t)(slash - v) >= sizeof(first))
            return bad("--shard needs I/N (e.g. 0/4), got '%s'", v);
        memcpy(first, v, (size_t)(slash - v));
        first[slash - v] = '\0';
        if (!strcmp(first, "auto") && shard_auto(first, sizeof(first)) < 0)
            return bad("--shard auto/N needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or "
                       "SLURM_ARRAY_TASK_ID (a Slurm array) set to a number");
        if (!parse_long(first, 0, 1000000, &i) || !parse_long(slash + 1, 1, 1000000, &n) || i >= n)
            return bad("--shard needs I/N with 0 <= I < N, got '%s' (I = %s)", v, first);
        o->shard = (unsigned)i;
        o->nshards = (unsigned)n;
    } else if (!strcmp(name, "resume"))
        o->resume = true;
    else if (!strcmp(name, "retry-errors"))
        o->retry_errors = true;
    else if (!strcmp(name, "overwrite"))
        o->overwrite = true;
    else if (!strcmp(name, "strict"))
        o->strict = true;
    else if (!strcmp(name, "baseline"))
        o->baseline = v;
    else if (!strcmp(name, "temperature")) {
        if (!parse_double(v, 0, 2, &d))
            return bad("--temperature needs a number from 0 to 2, got '%s'", v);
        o->temperature = d;
    } else if (!strcmp(name, "max-tokens")) {
        if (!parse_long(v, 1, 10000000, &l))
            return bad("--max-tokens needs a positive number, got '%s'", v);
        o->max_tokens = l;
    } else if (!strcmp(name, "fsync"))
        o->fsync = true;
    else if (!strcmp(name, "no-responses"))
        o->save_responses = false;
    else if (!strcmp(name, "progress")) {
        if (!strcmp(v, "auto"))
            o->progress = PROGRESS_AUTO;
        else if (!strcmp(v, "bar"))
            o->progress = PROGRESS_BAR;
        else if (!strcmp(v, "lines"))
            o->progress = PROGRESS_LINES;
        else if (!strcmp(v, "off"))
            o->progress = PROGRESS_OFF;
        else
            return bad("--progress needs auto, bar, lines or off, got '%s'", v);
    } else if (!strcmp(name, "progress-interval")) {
        if (!parse_double(v, 0.05, 86400, &d))
            return bad("--progress-interval needs seconds, got '%s'", v);
        o->progress_interval = d;
    }
    return 0;
}

/* Parses the run's command line into 'o': our flags here, the rest through config_load.
 * Returns 0 to run, 1 after --help/--version, -1 on a bad command line. */
static int parse_run(int argc, char **argv, struct eval_opts *o)
{
    char **rest = xcalloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, rc = 0;
    const char *approaches = "none", *model = NULL;
    bool log_given = getenv("OPTILLM_LOG") && *getenv("OPTILLM_LOG");

    memset(o, 0, sizeof(*o));
    o->concurrency = 8;
    o->limit = -1;
    o->nshards = 1;
    o->save_responses = true;
    o->temperature = NAN;
    o->max_tokens = -1;
    o->progress_interval = 5;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i], *name, *eq, *val = NULL;
        const struct eflag *f;
        size_t len;

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            rc = 1;
            break;
        }
        if (!strcmp(a, "--version")) {
            printf("optillm-eval %s\n", PX_VERSION);
            rc = 1;
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            rest[nrest++] = argv[i]; /* a value of a server flag, or a stray word */
            continue;
        }
        name = a + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        f = find_eflag(name, len);
        if (!f) {
            if (len == 3 && !strncmp(name, "log", 3))
                log_given = true;
            rest[nrest++] = argv[i];
            continue;
        }
        if (f->arg == A_BOOL) {
            if (eq) {
                rc = bad("--%s takes no value", f->name);
                break;
            }
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            rc = bad("--%s needs a value", f->name);
            break;
        }
        rc = set_flag(o, f->name, val, &approaches, &model);
    }
    if (rc == 0) {
        int c = config_load(&o->cfg, nrest, rest);

        if (c != 0)
            rc = -1; /* config_load printed why (it never sees --help: we took it) */
    }
    free(rest);
    if (rc != 0)
        return rc;
    if (!log_given)
        o->cfg.log_level = LOG_WARN;
    /* --retries, --retry-base-delay and --request-timeout are the server's flags, with the
     * server's meaning at the nearest layer: in-process the engine retries each upstream call
     * and enforces the deadline itself; through --proxy the proxy does that, and we retry a
     * whole request the proxy could not answer (429, 5xx, transport) and bound its wait. */
    o->retries = o->proxy ? o->cfg.retries : 0;
    o->retry_delay = o->cfg.retry_base;
    o->request_timeout = o->cfg.request_timeout > 0 ? o->cfg.request_timeout : 1800;
    o->model = model ? model : o->cfg.model;
    if (!o->dataset)
        return bad("--dataset FILE is required");
    if (!o->out)
        return bad("--out DIR is required");
    if (!*o->model)
        return bad("--model is empty");
    if (o->retry_errors && !o->resume)
        return bad("--retry-errors goes with --resume");
    if (o->resume && o->overwrite)
        return bad("--resume and --overwrite exclude each other");
    if (!o->api_key)
        o->api_key = o->cfg.upstream_key;
    if (parse_approaches(approaches, o) < 0)
        return -1;
    if (o->baseline) {
        bool found = false;

        for (size_t i = 0; i < o->napproaches; i++)
            found = found || strcmp(o->approaches[i], o->baseline) == 0;
        if (!found)
            return bad("--baseline '%s' is not one of --approaches", o->baseline);
    }
    return 0;
}

/* ---- commands --------------------------------------------------------------------------- */

static void on_signal(int sig)
{
    static const char msg[] = "\noptillm-eval: stopping: the requests in flight finish and are "
                              "recorded (Ctrl-C again quits at once; --resume continues)\n";

    (void)sig;
    if (eval_stop_requested)
        _exit(130);
    eval_stop_requested = 1;
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing to do */
    }
}

static int cmd_run(int argc, char **argv)
{
    struct eval_opts o;
    struct dataset ds;
    struct sigaction sa;
    FILE *f;
    int rc;

    rc = parse_run(argc, argv, &o);
    if (rc != 0) {
        free_approaches(&o);
        config_cleanup(&o.cfg);
        return rc > 0 ? 0 : 2;
    }
    log_level = o.cfg.log_level;
    log_json = o.cfg.log_json;
    f = fopen(o.dataset, "rb");
    if (!f) {
        char eb[128];

        fprintf(stderr, "optillm-eval: cannot open the dataset %s: %s\n", o.dataset,
                eval_strerror(errno, eb, sizeof(eb)));
        free_approaches(&o);
        config_cleanup(&o.cfg);
        return 1;
    }
    /* Dataset answers are canonicalised with the same patterns the scoring uses. */
    if (answer_init() != 0) {
        fclose(f);
        free_approaches(&o);
        config_cleanup(&o.cfg);
        return 1;
    }
    rc = dataset_read(f, o.dataset, o.strict, stderr, &ds);
    fclose(f);
    answer_cleanup();
    if (rc < 0) {
        fprintf(stderr, "optillm-eval: %s: %s\n", o.dataset,
                o.strict ? "malformed line (--strict); nothing was run" : "cannot be read");
        rc = 1;
        goto out;
    }
    if (ds.nbad)
        fprintf(stderr, "optillm-eval: %s: %zu malformed lines skipped (listed above)\n", o.dataset,
                ds.nbad);
    dataset_select(&ds, o.limit, o.shard, o.nshards);
    if (ds.nitems == 0 && o.nshards <= 1) {
        fprintf(stderr, "optillm-eval: %s has no usable items\n", o.dataset);
        rc = 1;
        goto out;
    }
    if (!o.api_key)
        fprintf(stderr, "optillm-eval: no API key (OPENAI_API_KEY or --api-key): requests go "
                        "without one\n");

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = eval_run(&o, &ds);
out:
    dataset_cleanup(&ds);
    free_approaches(&o);
    config_cleanup(&o.cfg);
    return rc;
}

static int cmd_merge_or_report(int argc, char **argv, bool merge)
{
    const char *out = "eval-merged", *baseline = NULL;
    const char **dirs = xcalloc((size_t)argc + 1, sizeof(char *));
    size_t ndirs = 0;
    int rc;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            free(dirs);
            return 0;
        }
        if ((merge && !strcmp(a, "--out")) || !strcmp(a, "--baseline")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "optillm-eval: %s needs a value\n", a);
                free(dirs);
                return 2;
            }
            if (!strcmp(a, "--out"))
                out = argv[++i];
            else
                baseline = argv[++i];
        } else if (merge && !strncmp(a, "--out=", 6)) {
            out = a + 6;
        } else if (!strncmp(a, "--baseline=", 11)) {
            baseline = a + 11;
        } else if (!strncmp(a, "--", 2)) {
            fprintf(stderr, "optillm-eval: %s: unknown option '%s' (see --help)\n",
                    merge ? "merge" : "report", a);
            free(dirs);
            return 2;
        } else {
            dirs[ndirs++] = a;
        }
    }
    if (ndirs == 0 || (!merge && ndirs != 1)) {
        fprintf(stderr, "optillm-eval: %s\n",
                merge ? "merge needs one or more output folders (see --help)"
                      : "report needs one output folder (see --help)");
        free(dirs);
        return 2;
    }
    rc = merge ? eval_merge(dirs, ndirs, out, baseline) : eval_report(dirs[0], baseline);
    free(dirs);
    return rc;
}

int main(int argc, char **argv)
{
    cJSON_Hooks hooks = {.malloc_fn = xmalloc, .free_fn = free};

    cJSON_InitHooks(&hooks);
    if (argc > 1 && !strcmp(argv[1], "merge"))
        return cmd_merge_or_report(argc, argv, true);
    if (argc > 1 && !strcmp(argv[1], "report"))
        return cmd_merge_or_report(argc, argv, false);
    if (argc > 1 && !strcmp(argv[1], "run"))
        return cmd_run(argc - 1, argv + 1);
    if (argc == 1) {
        usage();
        return 2;
    }
    return cmd_run(argc, argv);
}
