/* metrics.c: counters, gauges and histograms for GET /metrics (Prometheus text format). One
 * mutex guards the labelled tables; plain counters are atomics.
 *
 * Label cardinality is bounded: past MAX_SERIES series of a metric (MAX_UP_SERIES for upstream
 * statuses), a new series is folded into the label value "other" (slots reserved for it), each
 * fold is counted in optillm_metrics_series_dropped_total, and the first one is logged. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "log.h"
#include "redis.h"
#include "router.h"

#define MAX_SERIES    256
#define OTHER_SLOTS   64 /* requests: "other" x distinct statuses */
#define MAX_UP_SERIES 64
#define UP_OTHER      -1 /* the upstream status series "other" */

static const double dur_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                     2.5,   5,    10,    30,   60,  120,  300};
static const double ovh_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                     0.005,  0.01,    0.025,  0.05,  0.1};
#define NDUR PX_ARRAY_LEN(dur_buckets)
#define NOVH PX_ARRAY_LEN(ovh_buckets)

struct req_series {
    char approach[48];
    int status;
    unsigned long long count;
};

struct hist {
    unsigned long long buckets[16];
    unsigned long long count;
    double sum;
};

struct tok_series {
    char tenant[48];
    unsigned long long prompt, completion, reasoning;
};

struct up_series {
    int status; /* 0: transport error */
    unsigned long long count;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by mu: */
static struct req_series reqs[MAX_SERIES + OTHER_SLOTS];
static size_t nreqs;
static struct up_series ups[MAX_UP_SERIES + 1];
static size_t nups;
static struct tok_series toks[MAX_SERIES + 1];
static size_t ntoks;
static struct hist dur_hist, ovh_hist;

/* Atomics: */
static unsigned long long retries, cancels;
static unsigned long long series_dropped; /* observations folded into "other" (or lost) */
static int overflow_logged;

/* Counts a fold; logs the first one (outside mu: callers pass what they saw). */
static void dropped(const char *metric)
{
    __atomic_fetch_add(&series_dropped, 1, __ATOMIC_RELAXED);
    if (__atomic_exchange_n(&overflow_logged, 1, __ATOMIC_RELAXED) == 0)
        log_warn("metrics: %s has too many label values; new ones are counted as \"other\" "
                 "(see optillm_metrics_series_dropped_total)",
                 metric);
}
static long inflight;

void metrics_retry(void)
{
    __atomic_fetch_add(&retries, 1, __ATOMIC_RELAXED);
}

void metrics_cancel(void)
{
    __atomic_fetch_add(&cancels, 1, __ATOMIC_RELAXED);
}

void metrics_inflight(int delta)
{
    __atomic_fetch_add(&inflight, delta, __ATOMIC_RELAXED);
}

long metrics_inflight_now(void)
{
    return __atomic_load_n(&inflight, __ATOMIC_RELAXED);
}

static void observe(struct hist *h, const double *b, size_t n, double v)
{
    for (size_t i = 0; i < n; i++)
        if (v <= b[i])
            h->buckets[i]++;
    h->count++;
    h->sum += v;
}

void metrics_upstream(int status)
{
    bool folded = false;

    pthread_mutex_lock(&mu);
    size_t i;
    for (i = 0; i < nups && ups[i].status != status; i++)
        ;
    if (i == nups && nups >= MAX_UP_SERIES) {
        folded = true;
        status = UP_OTHER;
        for (i = 0; i < nups && ups[i].status != status; i++)
            ;
    }
    if (i == nups && nups < PX_ARRAY_LEN(ups)) {
        ups[i].status = status;
        ups[i].count = 0;
        nups++;
    }
    if (i < nups)
        ups[i].count++;
    pthread_mutex_unlock(&mu);
    if (folded)
        dropped("optillm_upstream_calls_total");
}

void metrics_request(const char *approach, int status, long long total_us, long long upstream_us,
                     const struct usage *u, const char *tenant)
{
    double secs = (double)total_us / 1e6;
    double ovh = (double)(total_us - upstream_us) / 1e6;
    size_t i;
    bool req_folded = false, tok_folded = false;

    if (!approach)
        approach = "-";
    if (!tenant)
        tenant = "-";
    pthread_mutex_lock(&mu);
    for (i = 0; i < nreqs; i++)
        if (reqs[i].status == status && strcmp(reqs[i].approach, approach) == 0)
            break;
    if (i == nreqs) {
        if (nreqs >= MAX_SERIES) {
            approach = "other"; /* bounded label cardinality */
            req_folded = true;
            for (i = 0; i < nreqs; i++)
                if (reqs[i].status == status && strcmp(reqs[i].approach, approach) == 0)
                    break;
        }
        if (i == nreqs && nreqs < PX_ARRAY_LEN(reqs)) {
            snprintf(reqs[i].approach, sizeof(reqs[i].approach), "%s", approach);
            reqs[i].status = status;
            reqs[i].count = 0;
            nreqs++;
        }
    }
    if (i < nreqs)
        reqs[i].count++;
    observe(&dur_hist, dur_buckets, NDUR, secs);
    observe(&ovh_hist, ovh_buckets, NOVH, ovh < 0 ? 0 : ovh);
    if (u && (u->prompt_tokens || u->completion_tokens)) {
        for (i = 0; i < ntoks && strcmp(toks[i].tenant, tenant) != 0; i++)
            ;
        if (i == ntoks && ntoks >= MAX_SERIES) {
            tenant = "other";
            tok_folded = true;
            for (i = 0; i < ntoks && strcmp(toks[i].tenant, tenant) != 0; i++)
                ;
        }
        if (i == ntoks && ntoks < PX_ARRAY_LEN(toks)) {
            memset(&toks[i], 0, sizeof(toks[i]));
            snprintf(toks[i].tenant, sizeof(toks[i].tenant), "%s", tenant);
            ntoks++;
        }
        if (i < ntoks) {
            toks[i].prompt += (unsigned long long)u->prompt_tokens;
            toks[i].completion += (unsigned long long)u->completion_tokens;
            toks[i].reasoning += (unsigned long long)u->reasoning_tokens;
        }
    }
    pthread_mutex_unlock(&mu);
    if (req_folded)
        dropped("optillm_requests_total");
    if (tok_folded)
        dropped("optillm_tokens_total");
}

static void hist_out(struct buf *b, const char *name, const char *help, const struct hist *h,
                     const double *bk, size_t n)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bk[i], h->buckets[i]);
    buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, h->count, name,
               h->sum, name, h->count);
}

void metrics_render(struct buf *b)
{
    unsigned q, run, wait;
    struct sched_stats st;

    pool_stats(&q, &run, &wait);
    sched_stats(&st);
    pthread_mutex_lock(&mu);
    buf_puts(b, "# HELP optillm_requests_total Requests answered, by approach and HTTP status.\n"
                "# TYPE optillm_requests_total counter\n");
    for (size_t i = 0; i < nreqs; i++)
        buf_printf(b, "optillm_requests_total{approach=\"%s\",status=\"%d\"} %llu\n",
                   reqs[i].approach, reqs[i].status, reqs[i].count);
    buf_puts(b, "# HELP optillm_upstream_calls_total Upstream HTTP attempts, by status (0: "
                "transport error).\n# TYPE optillm_upstream_calls_total counter\n");
    for (size_t i = 0; i < nups; i++) {
        if (ups[i].status == UP_OTHER)
            buf_printf(b, "optillm_upstream_calls_total{status=\"other\"} %llu\n", ups[i].count);
        else
            buf_printf(b, "optillm_upstream_calls_total{status=\"%d\"} %llu\n", ups[i].status,
                       ups[i].count);
    }
    buf_puts(b, "# HELP optillm_tokens_total Upstream tokens, by tenant and kind.\n"
                "# TYPE optillm_tokens_total counter\n");
    for (size_t i = 0; i < ntoks; i++) {
        buf_printf(b, "optillm_tokens_total{tenant=\"%s\",kind=\"prompt\"} %llu\n", toks[i].tenant,
                   toks[i].prompt);
        buf_printf(b, "optillm_tokens_total{tenant=\"%s\",kind=\"completion\"} %llu\n",
                   toks[i].tenant, toks[i].completion);
        buf_printf(b, "optillm_tokens_total{tenant=\"%s\",kind=\"reasoning\"} %llu\n",
                   toks[i].tenant, toks[i].reasoning);
    }
    hist_out(b, "optillm_request_duration_seconds", "Time from request to the end of the answer.",
             &dur_hist, dur_buckets, NDUR);
    hist_out(b, "optillm_proxy_overhead_seconds",
             "Request time not spent waiting for the upstream.", &ovh_hist, ovh_buckets, NOVH);
    pthread_mutex_unlock(&mu);
    buf_printf(
        b,
        "# HELP optillm_in_flight_requests Requests being received, processed or answered.\n"
        "# TYPE optillm_in_flight_requests gauge\noptillm_in_flight_requests %ld\n"
        "# HELP optillm_queue_depth Approach requests waiting for a --workers slot.\n"
        "# TYPE optillm_queue_depth gauge\noptillm_queue_depth %u\n"
        "# HELP optillm_approach_requests Approach requests by state: running (on a CPU or "
        "ready), waiting (parked on upstream calls), queued (for a --workers slot).\n"
        "# TYPE optillm_approach_requests gauge\n"
        "optillm_approach_requests{state=\"running\"} %u\n"
        "optillm_approach_requests{state=\"waiting\"} %u\n"
        "optillm_approach_requests{state=\"queued\"} %u\n"
        "# HELP optillm_approach_threads Scheduler threads plus offload helper threads.\n"
        "# TYPE optillm_approach_threads gauge\noptillm_approach_threads %u\n"
        "# HELP optillm_coroutines Coroutines alive (requests, n runs, a|b branches).\n"
        "# TYPE optillm_coroutines gauge\noptillm_coroutines %ld\n"
        "# HELP optillm_coroutine_slice_max_seconds Longest time a coroutine held its "
        "scheduler thread without waiting.\n"
        "# TYPE optillm_coroutine_slice_max_seconds gauge\n"
        "optillm_coroutine_slice_max_seconds %.6f\n"
        "# HELP optillm_coroutine_slow_slices_total Slices longer than 5 ms.\n"
        "# TYPE optillm_coroutine_slow_slices_total counter\n"
        "optillm_coroutine_slow_slices_total %llu\n"
        "# HELP optillm_coroutine_stack_peak_bytes Deepest stack use of a finished "
        "coroutine (of optillm_coroutine_stack_bytes).\n"
        "# TYPE optillm_coroutine_stack_peak_bytes gauge\n"
        "optillm_coroutine_stack_peak_bytes %zu\noptillm_coroutine_stack_bytes %zu\n"
        "# HELP optillm_retries_total Upstream retries and fallbacks.\n"
        "# TYPE optillm_retries_total counter\noptillm_retries_total %llu\n"
        "# HELP optillm_cancellations_total Requests cancelled because the client left.\n"
        "# TYPE optillm_cancellations_total counter\noptillm_cancellations_total %llu\n"
        "# HELP optillm_metrics_series_dropped_total Observations counted under the label "
        "value \"other\" because a metric had too many series.\n"
        "# TYPE optillm_metrics_series_dropped_total counter\n"
        "optillm_metrics_series_dropped_total %llu\n",
        __atomic_load_n(&inflight, __ATOMIC_RELAXED), q, run, wait, q, st.threads + st.helpers,
        st.coroutines, (double)st.max_slice_us / 1e6, st.slow_slices, st.stack_peak, st.stack_size,
        __atomic_load_n(&retries, __ATOMIC_RELAXED), __atomic_load_n(&cancels, __ATOMIC_RELAXED),
        __atomic_load_n(&series_dropped, __ATOMIC_RELAXED));
    redis_metrics_render(b);
    router_metrics_render(b);
    otlp_metrics_render(b);
}
