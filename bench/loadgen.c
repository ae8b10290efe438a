/*
 * loadgen.c - load generator and answer checker for bench/soak.sh and bench/peak.sh.
 *
 * N client slots share one libcurl multi handle on one thread (waiting in epoll, handing libcurl
 * only the sockets that are ready). Each slot starts a new request
 * as soon as its previous one ends; the request's kind (--mix), its mock options and whether
 * it is abandoned come from one seeded PRNG. Requests go to URL/chat/completions with
 * "X-Request-Id: lg<seed>-<n>", so a proxy log line can be matched to a request.
 *
 * Every answer is checked and counted as exactly one of:
 *   ok         200 and a complete answer: a chat.completion (id, model, non-empty choices with
 *              message.content and finish_reason, usage with the three token counts), or an
 *              SSE stream of parseable chat.completion.chunk events (choices with index and
 *              delta) with a finish_reason, one usage chunk iff stream_options.include_usage
 *              was sent, ending in "data: [DONE]" and nothing after it;
 *   refused    a 4xx/5xx with an OpenAI-shaped JSON error ({"error":{"message":..,"type":..}});
 *   in-band    a 200 stream that reports a failure in-band: data: {"error":{...}} then
 *              data: [DONE] (the documented way once a stream has started);
 *   abandoned  the client gave up on purpose (the easy handle removed part-way): "mid-wait"
 *              when no byte of the answer had arrived, "mid-stream" after some;
 *   malformed  anything else: a transport error (reset, truncated body, nothing received), a
 *              client timeout, an unexpected status or content type, invalid JSON, a 200 with
 *              an error body, a stream without [DONE], an error with a non-OpenAI body, or a
 *              request still running after the drain.
 *
 * Usage: loadgen --url http://127.0.0.1:PORT/v1 [options]
 *   --clients N            concurrent slots (default 64)
 *   --seconds S            start requests for S seconds (default 10; 0: no limit)
 *   --max-requests N       start at most N requests in all (default 0: no limit)
 *   --mix SPEC             kinds with weights, e.g. pass=3,pass_stream=2,bon=1,moa_stream=1;
 *                          "pass" is a plain model, any other name an approach prefix, a
 *                          "_stream" suffix sets stream:true (default pass=1)
 *   --model NAME           upstream model (default mock); options follow after '@'
 *   --latency MIN[:MAX]    mock latency=, uniform in [MIN, MAX] ms per request (default 0)
 *   --chunk-delay MS       mock chunk_delay= (default 0)
 *   --noisy                mock noisy=1 (arithmetic answers, ratings for bon)
 *   --fail-rate F          mock fail_rate=F on every request (default 0)
 *   --inject-rate F        fraction of requests given one extra option from --inject
 *   --inject LIST          options separated by '/', one picked uniformly per injected
 *                          request (default status=503)
 *   --abandon-rate F       fraction of requests abandoned part-way (default 0): after a random
 *                          delay of 1..--abandon-max-ms ms (default 300), or for half of the
 *                          streams after the k-th SSE event (k in 1..4)
 *   --timeout S            client limit for one request; exceeded counts as malformed (120)
 *   --drain S              after the last start, wait this long for answers (default 120)
 *   --seed N               PRNG seed (default 1)
 *   --key KEY              Bearer token sent (default sk-loadgen)
 *   --progress S           a progress line on stderr every S seconds (default 0: none)
 * Prints a summary table, the first malformed answers (stderr, also as they happen), then one
 * JSON line last on stdout. Exit status 1 if any answer was malformed, 2 on a usage error.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_KINDS    16
#define MAX_INJECT   16
#define MAX_BODY     ((size_t)8 << 20)
#define MAX_SAMPLES  20
#define SNIPPET      240
#define MAX_STATUS   600
#define POLL_MAX_MS  50
#define PROMPT_COUNT (sizeof(prompts) / sizeof(prompts[0]))

/* ---- small helpers ----------------------------------------------------------------------- */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q) {
        fputs("loadgen: out of memory\n", stderr);
        exit(3);
    }
    return q;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xrealloc(NULL, n);

    memcpy(p, s, n);
    return p;
}

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;

        while (nc < b->len + n + 1)
            nc *= 2;
        b->p = xrealloc(b->p, nc);
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* splitmix64 to seed, xorshift64* to draw. */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    rng_state = (z ^ (z >> 31)) | 1;
}

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static double rng_u01(void)
{
    return (double)(rng_next() >> 11) / 9007199254740992.0;
}

static unsigned rng_below(unsigned n)
{
    return n ? (unsigned)(rng_next() % n) : 0;
}

/* ---- configuration ----------------------------------------------------------------------- */

struct kind {
    char name[48];
    char prefix[48]; /* "bon-", or "" for a plain model */
    bool stream;
    double weight;
};

static struct {
    const char *url;
    int clients;
    double seconds;
    long max_requests;
    struct kind kinds[MAX_KINDS];
    int nkinds;
    double weight_sum;
    const char *model;
    long lat_min, lat_max;
    long chunk_delay;
    bool noisy;
    double fail_rate;
    double inject_rate;
    char *inject[MAX_INJECT];
    int ninject;
    double abandon_rate;
    long abandon_max_ms;
    double timeout;
    double drain;
    uint64_t seed;
    const char *key;
    double progress;
} cfg = {
    .clients = 64,
    .seconds = 10,
    .model = "mock",
    .abandon_max_ms = 300,
    .timeout = 120,
    .drain = 120,
    .seed = 1,
    .key = "sk-loadgen",
};

static const char *const prompts[] = {
    "What is 12 + 7 * 3?",
    "What is (15 - 4) * 6?",
    "Compute 144 / 12 + 9.",
    "What is 23 * 17?",
    "A shop sells 8 boxes of 12 eggs. How many eggs? What is 8 * 12?",
    "What is 1000 - 377?",
    "What is 2 * (3 + 4) * 5?",
    "Explain in one sentence why the sky is blue, then compute 6 * 7.",
    "Résumé the number: what is 99 + 1? (UTF-8 text: naïve café, 東京)",
    "What is 81 / 9 - 2?",
    "What is 5 * 5 * 5?",
    "What is 250 + 250 - 125?",
};

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end != '\0' || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* "name=weight,name=weight". */
static bool parse_mix(const char *spec)
{
    char *copy = xstrdup(spec), *save = NULL, *tok;

    cfg.nkinds = 0;
    cfg.weight_sum = 0;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        struct kind *k;
        size_t nl;

        if (!eq || eq == tok || cfg.nkinds == MAX_KINDS)
            goto bad;
        *eq = '\0';
        k = &cfg.kinds[cfg.nkinds];
        memset(k, 0, sizeof(*k));
        if (!parse_double(eq + 1, 0, 1e9, &k->weight) || strlen(tok) >= sizeof(k->name) - 8)
            goto bad;
        snprintf(k->name, sizeof(k->name), "%s", tok);
        nl = strlen(tok);
        if (nl > 7 && strcmp(tok + nl - 7, "_stream") == 0) {
            k->stream = true;
            tok[nl - 7] = '\0';
        }
        if (strcmp(tok, "pass") != 0)
            snprintf(k->prefix, sizeof(k->prefix), "%s-", tok);
        cfg.weight_sum += k->weight;
        cfg.nkinds++;
    }
    free(copy);
    return cfg.nkinds > 0 && cfg.weight_sum > 0;
bad:
    free(copy);
    return false;
}

static bool parse_inject(const char *list)
{
    char *copy = xstrdup(list), *save = NULL, *tok;

    cfg.ninject = 0;
    for (tok = strtok_r(copy, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (cfg.ninject == MAX_INJECT) {
            free(copy);
            return false;
        }
        cfg.inject[cfg.ninject++] = xstrdup(tok);
    }
    free(copy);
    return cfg.ninject > 0;
}

static void usage(void)
{
    fputs("usage: loadgen --url http://127.0.0.1:PORT/v1 [--clients N] [--seconds S]\n"
          "  [--max-requests N] [--mix name=w,...] [--model NAME] [--latency MIN[:MAX]]\n"
          "  [--chunk-delay MS] [--noisy] [--fail-rate F] [--inject-rate F] [--inject a/b]\n"
          "  [--abandon-rate F] [--abandon-max-ms MS] [--timeout S] [--drain S] [--seed N]\n"
          "  [--key KEY] [--progress S]   (see the comment at the top of bench/loadgen.c)\n",
          stderr);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    bool mix_set = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l = 0;
        bool ok = true;

        if (strcmp(a, "--noisy") == 0) {
            cfg.noisy = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || !v)
            usage();
        i++;
        if (strcmp(a, "--url") == 0) {
            cfg.url = v;
        } else if (strcmp(a, "--clients") == 0) {
            ok = parse_long(v, 1, 100000, &l);
            cfg.clients = (int)l;
        } else if (strcmp(a, "--seconds") == 0) {
            ok = parse_double(v, 0, 1e7, &cfg.seconds);
        } else if (strcmp(a, "--max-requests") == 0) {
            ok = parse_long(v, 0, 1000000000L, &cfg.max_requests);
        } else if (strcmp(a, "--mix") == 0) {
            ok = mix_set = parse_mix(v);
        } else if (strcmp(a, "--model") == 0) {
            cfg.model = v;
        } else if (strcmp(a, "--latency") == 0) {
            char tmp[64], *colon;

            snprintf(tmp, sizeof(tmp), "%s", v);
            colon = strchr(tmp, ':');
            if (colon)
                *colon = '\0';
            ok = parse_long(tmp, 0, 3600000, &cfg.lat_min);
            cfg.lat_max = cfg.lat_min;
            if (ok && colon)
                ok = parse_long(colon + 1, cfg.lat_min, 3600000, &cfg.lat_max);
        } else if (strcmp(a, "--chunk-delay") == 0) {
            ok = parse_long(v, 0, 60000, &cfg.chunk_delay);
        } else if (strcmp(a, "--fail-rate") == 0) {
            ok = parse_double(v, 0, 1, &cfg.fail_rate);
        } else if (strcmp(a, "--inject-rate") == 0) {
            ok = parse_double(v, 0, 1, &cfg.inject_rate);
        } else if (strcmp(a, "--inject") == 0) {
            ok = parse_inject(v);
        } else if (strcmp(a, "--abandon-rate") == 0) {
            ok = parse_double(v, 0, 1, &cfg.abandon_rate);
        } else if (strcmp(a, "--abandon-max-ms") == 0) {
            ok = parse_long(v, 1, 3600000, &cfg.abandon_max_ms);
        } else if (strcmp(a, "--timeout") == 0) {
            ok = parse_double(v, 0.001, 1e6, &cfg.timeout);
        } else if (strcmp(a, "--drain") == 0) {
            ok = parse_double(v, 0, 1e6, &cfg.drain);
        } else if (strcmp(a, "--seed") == 0) {
            ok = parse_long(v, 0, 0x7fffffffL, &l);
            cfg.seed = (uint64_t)l;
        } else if (strcmp(a, "--key") == 0) {
            cfg.key = v;
        } else if (strcmp(a, "--progress") == 0) {
            ok = parse_double(v, 0, 1e6, &cfg.progress);
        } else {
            fprintf(stderr, "loadgen: unknown option %s\n", a);
            usage();
        }
        if (!ok) {
            fprintf(stderr, "loadgen: bad value for %s: %s\n", a, v);
            usage();
        }
    }
    if (!cfg.url)
        usage();
    if (cfg.seconds <= 0 && cfg.max_requests <= 0) {
        fputs("loadgen: --seconds 0 needs --max-requests\n", stderr);
        usage();
    }
    if (!mix_set)
        parse_mix("pass=1");
    if (cfg.ninject == 0)
        parse_inject("status=503");
}

/* ---- statistics -------------------------------------------------------------------------- */

enum outcome { O_OK, O_REFUSED, O_INBAND, O_ABANDONED, O_MALFORMED };

enum mal {
    M_TRANSPORT, /* curl error: reset, truncated, nothing received */
    M_TIMEOUT,   /* the client's --timeout */
    M_HUNG,      /* still running after --drain */
    M_STATUS,    /* a status that is neither 200 nor 4xx/5xx */
    M_CTYPE,     /* 200 with the wrong content type */
    M_JSON,      /* 200 JSON body that does not parse */
    M_ERROR200,  /* 200 carrying an error */
    M_SHAPE,     /* parses, but is not a complete chat.completion */
    M_SSE,       /* stream: bad event, no [DONE], data after [DONE], missing finish/usage */
    M_ERRBODY,   /* 4xx/5xx whose body is not an OpenAI error */
    M_TOOBIG,    /* body over MAX_BODY */
    NMAL
};

static const char *const mal_names[NMAL] = {
    "transport", "timeout",    "hung", "status",     "content_type", "json",
    "error_200", "completion", "sse",  "error_body", "too_big",
};

struct kstats {
    long sent, ok, refused, inband, ab_wait, ab_stream, malformed;
    double *lat; /* ms of ok answers */
    size_t nlat, caplat;
};

static struct kstats kst[MAX_KINDS];
static long refusals[MAX_STATUS];
static long mal_count[NMAL];
static long started, finished, nmalformed;

static void lat_add(struct kstats *k, double ms)
{
    if (k->nlat == k->caplat) {
        k->caplat = k->caplat ? k->caplat * 2 : 4096;
        k->lat = xrealloc(k->lat, k->caplat * sizeof(*k->lat));
    }
    k->lat[k->nlat++] = ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double pct(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)((double)(n - 1) * p / 100.0 + 0.5);

    return sorted[i < n ? i : n - 1];
}

/* ---- slots ------------------------------------------------------------------------------- */

struct slot {
    CURL *easy;
    struct curl_slist *hdrs;
    bool active;
    int kind;
    bool include_usage;
    char rid[48];
    char model[256];
    double start;
    double abandon_at;  /* monotonic seconds; 0: not planned by time */
    int abandon_events; /* >0: abandon after this many SSE events */
    int events;
    bool last_nl;
    bool too_big;
    size_t received;
    struct buf body;
    char ctype[128];
    char errbuf[CURL_ERROR_SIZE];
};

static CURLM *multi;
static struct slot *slots;
static int nactive;
static int *free_slots; /* a stack of the inactive slots' indexes */
static int nfree;

/* libcurl's sockets wait in one epoll set and only the ready ones are handed to it
 * (curl_multi_socket_action): 9,000 open transfers cost nothing per wake-up, so the load
 * generator is not what a benchmark measures. */
static int epfd = -1;
static bool timer_set;
static double timer_due;

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct epoll_event ev = {.data.fd = fd};

    (void)e;
    (void)userp;
    if (what == CURL_POLL_REMOVE) {
        if (socketp)
            (void)epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    if (epoll_ctl(epfd, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0 &&
        epoll_ctl(epfd, socketp ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0)
        perror("loadgen: epoll_ctl");
    if (!socketp)
        curl_multi_assign(multi, fd, &epfd); /* any non-NULL mark */
    return 0;
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
    (void)m;
    (void)userp;
    timer_set = ms >= 0;
    timer_due = now_s() + (double)ms / 1000.0;
    return 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct slot *s = userp;
    size_t n = size * nmemb;

    s->received += n;
    if (s->body.len + n > MAX_BODY)
        s->too_big = true;
    else
        buf_add(&s->body, data, n);
    if (s->abandon_events > 0) {
        for (size_t i = 0; i < n; i++) {
            if (data[i] == '\n' && s->last_nl)
                s->events++;
            s->last_nl = data[i] == '\n';
        }
        if (s->events >= s->abandon_events && s->abandon_at == 0)
            s->abandon_at = now_s(); /* removed by the main loop, outside libcurl */
    }
    return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct slot *s = userp;
    size_t n = size * nmemb;

    if (n > 5 && strncmp(data, "HTTP/", 5) == 0) {
        s->ctype[0] = '\0'; /* a new response (after 100 Continue) */
    } else if (n > 13 && strncasecmp(data, "content-type:", 13) == 0) {
        size_t i = 13, e = n;

        while (i < e && (data[i] == ' ' || data[i] == '\t'))
            i++;
        while (e > i && (data[e - 1] == '\r' || data[e - 1] == '\n' || data[e - 1] == ' '))
            e--;
        snprintf(s->ctype, sizeof(s->ctype), "%.*s", (int)(e - i), data + i);
    }
    return n;
}

static int pick_kind(void)
{
    double r = rng_u01() * cfg.weight_sum;

    for (int i = 0; i < cfg.nkinds; i++) {
        if (r < cfg.kinds[i].weight)
            return i;
        r -= cfg.kinds[i].weight;
    }
    return cfg.nkinds - 1;
}

static void start_request(struct slot *s, double t)
{
    const struct kind *k;
    char opts[160], hdr[160], url[1024];
    cJSON *root, *msgs, *m;
    char *body;
    size_t ol;

    s->kind = pick_kind();
    k = &cfg.kinds[s->kind];
    s->include_usage = k->stream && rng_u01() < 0.5;
    long lat = cfg.lat_min + (long)rng_below((unsigned)(cfg.lat_max - cfg.lat_min + 1));
    snprintf(opts, sizeof(opts), "latency=%ld", lat);
    ol = strlen(opts);
    if (cfg.chunk_delay > 0)
        ol += (size_t)snprintf(opts + ol, sizeof(opts) - ol, ",chunk_delay=%ld", cfg.chunk_delay);
    if (cfg.noisy && ol < sizeof(opts))
        ol += (size_t)snprintf(opts + ol, sizeof(opts) - ol, ",noisy=1");
    if (cfg.fail_rate > 0 && ol < sizeof(opts))
        ol += (size_t)snprintf(opts + ol, sizeof(opts) - ol, ",fail_rate=%g", cfg.fail_rate);
    if (cfg.inject_rate > 0 && rng_u01() < cfg.inject_rate && ol < sizeof(opts))
        snprintf(opts + ol, sizeof(opts) - ol, ",%s", cfg.inject[rng_below((unsigned)cfg.ninject)]);
    snprintf(s->model, sizeof(s->model), "%s%s@%s", k->prefix, cfg.model, opts);

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", s->model);
    msgs = cJSON_AddArrayToObject(root, "messages");
    if (rng_below(4) == 0) {
        m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", "You are a careful assistant.");
        cJSON_AddItemToArray(msgs, m);
    }
    m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", prompts[rng_below((unsigned)PROMPT_COUNT)]);
    cJSON_AddItemToArray(msgs, m);
    if (k->stream) {
        cJSON_AddTrueToObject(root, "stream");
        if (s->include_usage)
            cJSON_AddTrueToObject(cJSON_AddObjectToObject(root, "stream_options"), "include_usage");
    }
    body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    s->abandon_at = 0;
    s->abandon_events = 0;
    if (cfg.abandon_rate > 0 && rng_u01() < cfg.abandon_rate) {
        if (k->stream && rng_below(2) == 0)
            s->abandon_events = 1 + (int)rng_below(4);
        else
            s->abandon_at = t + (double)(1 + rng_below((unsigned)cfg.abandon_max_ms)) / 1000.0;
    }
    s->events = 0;
    s->last_nl = false;
    s->too_big = false;
    s->received = 0;
    s->body.len = 0;
    if (s->body.p)
        s->body.p[0] = '\0';
    s->ctype[0] = '\0';
    s->errbuf[0] = '\0';
    snprintf(s->rid, sizeof(s->rid), "lg%" PRIu64 "-%ld", cfg.seed, started);
    snprintf(hdr, sizeof(hdr), "X-Request-Id: %s", s->rid);
    s->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    s->hdrs = curl_slist_append(s->hdrs, "Expect:");
    s->hdrs = curl_slist_append(s->hdrs, hdr);
    snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", cfg.key);
    s->hdrs = curl_slist_append(s->hdrs, hdr);
    snprintf(url, sizeof(url), "%s/chat/completions", cfg.url);

    s->easy = curl_easy_init();
    if (!s->easy || !s->hdrs) {
        fputs("loadgen: curl_easy_init failed\n", stderr);
        exit(3);
    }
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->hdrs);
    curl_easy_setopt(s->easy, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)(cfg.timeout * 1000));
    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, 30000L);
    if (cfg.max_requests > 0 && cfg.max_requests <= cfg.clients) {
        /* One request per slot (a wave): no connection can be reused, and libcurl 7.88 walks
         * every connection it holds to look for one, when a transfer starts and when it is
         * removed: O(N^2) for a wave of N. A fresh connection, closed after use, skips both. */
        curl_easy_setopt(s->easy, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(s->easy, CURLOPT_FORBID_REUSE, 1L);
    }
    cJSON_free(body);
    s->start = t;
    s->active = true;
    nactive++;
    started++;
    kst[s->kind].sent++;
    curl_multi_add_handle(multi, s->easy);
}

static void end_request(struct slot *s)
{
    curl_multi_remove_handle(multi, s->easy); /* mid-transfer: libcurl closes the connection */
    curl_easy_cleanup(s->easy);
    curl_slist_free_all(s->hdrs);
    s->easy = NULL;
    s->hdrs = NULL;
    s->active = false;
    nactive--;
    finished++;
    free_slots[nfree++] = (int)(s - slots);
}

/* ---- checking answers -------------------------------------------------------------------- */

static bool is_num(const cJSON *o, const char *name)
{
    return cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, name));
}

static bool is_str(const cJSON *o, const char *name)
{
    return cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, name));
}

static bool usage_ok(const cJSON *u)
{
    return cJSON_IsObject(u) && is_num(u, "prompt_tokens") && is_num(u, "completion_tokens") &&
           is_num(u, "total_tokens");
}

/* An OpenAI error object: {"message": string, "type": string, ...}. */
static bool error_ok(const cJSON *e)
{
    return cJSON_IsObject(e) && is_str(e, "message") && is_str(e, "type");
}

static int check_completion(const char *body, size_t len, const char **why)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *choices, *c;
    int rc = M_SHAPE;

    if (!root) {
        *why = "invalid JSON";
        return M_JSON;
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "error")) {
        *why = "200 with an error body";
        rc = M_ERROR200;
        goto out;
    }
    choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsObject(root) || !is_str(root, "id") || !is_str(root, "model")) {
        *why = "no id or model";
        goto out;
    }
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "object");
    if (!cJSON_IsString(obj) || strcmp(obj->valuestring, "chat.completion") != 0) {
        *why = "object is not chat.completion";
        goto out;
    }
    if (!cJSON_IsArray(choices) || cJSON_GetArraySize(choices) < 1) {
        *why = "no choices";
        goto out;
    }
    cJSON_ArrayForEach(c, choices)
    {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c, "message");

        if (!is_num(c, "index") || !cJSON_IsObject(msg) || !is_str(msg, "content") ||
            !is_str(c, "finish_reason")) {
            *why = "a choice without index, message.content or finish_reason";
            goto out;
        }
    }
    if (!usage_ok(cJSON_GetObjectItemCaseSensitive(root, "usage"))) {
        *why = "no usage with the three token counts";
        goto out;
    }
    rc = -1;
out:
    cJSON_Delete(root);
    return rc;
}

struct sse_state {
    bool done, inband, error_seen;
    int finishes, usages, chunks;
};

/* One SSE event's data: false (and why) when it is malformed. */
static bool sse_event(struct sse_state *st, const char *data, size_t len, const char **why)
{
    cJSON *root;
    const cJSON *choices, *c, *u;

    if (st->done) {
        *why = "data after [DONE]";
        return false;
    }
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        st->done = true;
        return true;
    }
    if (st->error_seen) {
        *why = "an event after an in-band error other than [DONE]";
        return false;
    }
    root = cJSON_ParseWithLength(data, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        *why = "an event that is not a JSON object";
        return false;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err) {
        bool ok = error_ok(err);

        cJSON_Delete(root);
        if (!ok) {
            *why = "an in-band error without message and type";
            return false;
        }
        st->error_seen = true;
        return true;
    }
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "object");
    choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsString(obj) || strcmp(obj->valuestring, "chat.completion.chunk") != 0 ||
        !is_str(root, "id") || !cJSON_IsArray(choices)) {
        cJSON_Delete(root);
        *why = "a chunk without id, object chat.completion.chunk or choices";
        return false;
    }
    cJSON_ArrayForEach(c, choices)
    {
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");

        if (!is_num(c, "index") || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(c, "delta"))) {
            cJSON_Delete(root);
            *why = "a chunk choice without index or delta";
            return false;
        }
        if (cJSON_IsString(fr))
            st->finishes++;
    }
    u = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (u && !cJSON_IsNull(u)) {
        if (!usage_ok(u)) {
            cJSON_Delete(root);
            *why = "a usage chunk without the three token counts";
            return false;
        }
        st->usages++;
    }
    st->chunks++;
    cJSON_Delete(root);
    return true;
}

/* Returns -1 (ok), -2 (in-band error) or a malformed code. */
static int check_stream(const char *body, size_t len, bool include_usage, const char **why)
{
    struct sse_state st = {0};
    struct buf data = {0};
    bool have_data = false;
    size_t i = 0;
    int rc = M_SSE;

    while (i < len) {
        size_t e = i;

        while (e < len && body[e] != '\n')
            e++;
        if (e == len) {
            *why = "the stream ends inside a line (truncated)";
            goto out;
        }
        size_t le = e;
        if (le > i && body[le - 1] == '\r')
            le--;
        if (le == i) { /* blank line: dispatch */
            if (have_data && !sse_event(&st, data.p, data.len, why))
                goto out;
            have_data = false;
            data.len = 0;
        } else if (body[i] == ':') {
            /* comment (keep-alive) */
        } else if (le - i >= 5 && memcmp(body + i, "data:", 5) == 0) {
            size_t v = i + 5;

            if (v < le && body[v] == ' ')
                v++;
            if (have_data)
                buf_add(&data, "\n", 1);
            buf_add(&data, body + v, le - v);
            have_data = true;
        } else if (!((le - i >= 6 && memcmp(body + i, "event:", 6) == 0) ||
                     (le - i >= 3 && memcmp(body + i, "id:", 3) == 0) ||
                     (le - i >= 6 && memcmp(body + i, "retry:", 6) == 0))) {
            *why = "a line that is no SSE field";
            goto out;
        }
        i = e + 1;
    }
    if (have_data) {
        *why = "the last event is not terminated by a blank line (truncated)";
        goto out;
    }
    if (!st.done) {
        *why = "no data: [DONE] (truncated)";
        goto out;
    }
    if (st.error_seen) {
        rc = -2;
        goto out;
    }
    if (st.finishes < 1) {
        *why = "no finish_reason";
        goto out;
    }
    if (include_usage ? st.usages != 1 : st.usages != 0) {
        *why = include_usage ? "include_usage sent, but not one usage chunk"
                             : "a usage chunk that was not asked for";
        goto out;
    }
    rc = -1;
out:
    free(data.p);
    return rc;
}

static void print_snippet(FILE *f, const char *p, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n && i < SNIPPET; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputs(n > SNIPPET ? "\"..." : "\"", f);
}

static void record(struct slot *s, enum outcome o, int mal, long status, const char *why, double t)
{
    struct kstats *k = &kst[s->kind];

    switch (o) {
    case O_OK:
        k->ok++;
        lat_add(k, (t - s->start) * 1000.0);
        break;
    case O_REFUSED:
        k->refused++;
        if (status >= 0 && status < MAX_STATUS)
            refusals[status]++;
        break;
    case O_INBAND:
        k->inband++;
        break;
    case O_ABANDONED:
        if (s->received > 0)
            k->ab_stream++;
        else
            k->ab_wait++;
        break;
    case O_MALFORMED:
        k->malformed++;
        mal_count[mal]++;
        if (nmalformed++ < MAX_SAMPLES) {
            fprintf(stderr,
                    "loadgen: MALFORMED %s (%s) request %s model %s status %ld after %.0f ms, "
                    "%zu bytes, content-type '%s': %s; body ",
                    mal_names[mal], cfg.kinds[s->kind].name, s->rid, s->model, status,
                    (t - s->start) * 1000.0, s->received, s->ctype, why);
            print_snippet(stderr, s->body.p ? s->body.p : "", s->body.len);
            fputc('\n', stderr);
        }
        break;
    }
}

static void finish_request(struct slot *s, CURLcode res, double t)
{
    long status = 0;
    const char *why = "";
    int rc;

    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (res != CURLE_OK) {
        why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(res);
        record(s, O_MALFORMED, res == CURLE_OPERATION_TIMEDOUT ? M_TIMEOUT : M_TRANSPORT, status,
               why, t);
    } else if (s->too_big) {
        record(s, O_MALFORMED, M_TOOBIG, status, "body over 8 MiB", t);
    } else if (status >= 400 && status <= 599) {
        cJSON *root = cJSON_ParseWithLength(s->body.p ? s->body.p : "", s->body.len);
        bool ok = root && strstr(s->ctype, "json") &&
                  error_ok(cJSON_GetObjectItemCaseSensitive(root, "error"));

        cJSON_Delete(root);
        if (ok)
            record(s, O_REFUSED, 0, status, NULL, t);
        else
            record(s, O_MALFORMED, M_ERRBODY, status,
                   "error status without an OpenAI-shaped JSON error", t);
    } else if (status != 200) {
        record(s, O_MALFORMED, M_STATUS, status, "unexpected status", t);
    } else if (cfg.kinds[s->kind].stream) {
        if (strncmp(s->ctype, "text/event-stream", 17) != 0) {
            record(s, O_MALFORMED, M_CTYPE, status, "stream answered without text/event-stream", t);
        } else {
            rc = check_stream(s->body.p ? s->body.p : "", s->body.len, s->include_usage, &why);
            if (rc == -1)
                record(s, O_OK, 0, status, NULL, t);
            else if (rc == -2)
                record(s, O_INBAND, 0, status, NULL, t);
            else
                record(s, O_MALFORMED, rc, status, why, t);
        }
    } else if (!strstr(s->ctype, "application/json")) {
        record(s, O_MALFORMED, M_CTYPE, status, "answer without application/json", t);
    } else {
        rc = check_completion(s->body.p ? s->body.p : "", s->body.len, &why);
        if (rc == -1)
            record(s, O_OK, 0, status, NULL, t);
        else
            record(s, O_MALFORMED, rc, status, why, t);
    }
    end_request(s);
}

/* ---- report ------------------------------------------------------------------------------ */

static void report(double elapsed)
{
    long ok = 0, ref = 0, inb = 0, abw = 0, abs_ = 0, mal = 0;
    double *all = NULL;
    size_t nall = 0;
    cJSON *j = cJSON_CreateObject(), *types, *jr, *jm, *jl;
    char *line;
    struct rusage ru;

    for (int i = 0; i < cfg.nkinds; i++) {
        ok += kst[i].ok;
        ref += kst[i].refused;
        inb += kst[i].inband;
        abw += kst[i].ab_wait;
        abs_ += kst[i].ab_stream;
        mal += kst[i].malformed;
        all = xrealloc(all, (nall + kst[i].nlat) * sizeof(*all));
        if (kst[i].nlat)
            memcpy(all + nall, kst[i].lat, kst[i].nlat * sizeof(*all));
        nall += kst[i].nlat;
        qsort(kst[i].lat, kst[i].nlat, sizeof(double), cmp_double);
    }
    qsort(all, nall, sizeof(double), cmp_double);
    printf("loadgen: %.1f s, %d clients, seed %" PRIu64 ": %ld requests (%.1f/s), ok %ld, "
           "refused %ld, in-band errors %ld, abandoned %ld (mid-wait %ld, mid-stream %ld), "
           "malformed %ld\n",
           elapsed, cfg.clients, cfg.seed, finished, (double)finished / elapsed, ok, ref, inb,
           abw + abs_, abw, abs_, mal);
    printf("%-22s %9s %9s %8s %8s %10s %10s %8s %8s %8s\n", "type", "sent", "ok", "refused",
           "in-band", "abandoned", "malformed", "p50 ms", "p99 ms", "max ms");
    types = cJSON_AddObjectToObject(j, "types");
    for (int i = 0; i < cfg.nkinds; i++) {
        struct kstats *k = &kst[i];
        double p50 = pct(k->lat, k->nlat, 50), p99 = pct(k->lat, k->nlat, 99);
        double mx = k->nlat ? k->lat[k->nlat - 1] : 0;
        cJSON *t = cJSON_AddObjectToObject(types, cfg.kinds[i].name);

        printf("%-22s %9ld %9ld %8ld %8ld %10ld %10ld %8.1f %8.1f %8.1f\n", cfg.kinds[i].name,
               k->sent, k->ok, k->refused, k->inband, k->ab_wait + k->ab_stream, k->malformed, p50,
               p99, mx);
        cJSON_AddNumberToObject(t, "sent", (double)k->sent);
        cJSON_AddNumberToObject(t, "ok", (double)k->ok);
        cJSON_AddNumberToObject(t, "refused", (double)k->refused);
        cJSON_AddNumberToObject(t, "inband", (double)k->inband);
        cJSON_AddNumberToObject(t, "abandoned", (double)(k->ab_wait + k->ab_stream));
        cJSON_AddNumberToObject(t, "malformed", (double)k->malformed);
        cJSON_AddNumberToObject(t, "p50_ms", p50);
        cJSON_AddNumberToObject(t, "p99_ms", p99);
        cJSON_AddNumberToObject(t, "max_ms", mx);
    }
    printf("refusals by status:");
    jr = cJSON_AddObjectToObject(j, "refusals");
    for (int st = 0; st < MAX_STATUS; st++) {
        if (refusals[st]) {
            char key[8];

            snprintf(key, sizeof(key), "%d", st);
            printf(" %d: %ld", st, refusals[st]);
            cJSON_AddNumberToObject(jr, key, (double)refusals[st]);
        }
    }
    printf("%s\n", ref ? "" : " none");
    printf("malformed by reason:");
    jm = cJSON_AddObjectToObject(j, "malformed_reasons");
    for (int m = 0; m < NMAL; m++) {
        if (mal_count[m]) {
            printf(" %s: %ld", mal_names[m], mal_count[m]);
            cJSON_AddNumberToObject(jm, mal_names[m], (double)mal_count[m]);
        }
    }
    printf("%s\n", mal ? "" : " none");
    printf("latency of ok answers: min %.1f ms, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
           nall ? all[0] : 0, pct(all, nall, 50), pct(all, nall, 99), nall ? all[nall - 1] : 0);

    cJSON_AddNumberToObject(j, "seconds", elapsed);
    cJSON_AddNumberToObject(j, "clients", cfg.clients);
    cJSON_AddNumberToObject(j, "seed", (double)cfg.seed);
    cJSON_AddNumberToObject(j, "requests", (double)finished);
    cJSON_AddNumberToObject(j, "rps", (double)finished / elapsed);
    cJSON_AddNumberToObject(j, "answers_per_s", (double)(ok + ref + inb) / elapsed);
    cJSON_AddNumberToObject(j, "ok", (double)ok);
    cJSON_AddNumberToObject(j, "refused", (double)ref);
    cJSON_AddNumberToObject(j, "inband_errors", (double)inb);
    cJSON_AddNumberToObject(j, "abandoned", (double)(abw + abs_));
    cJSON_AddNumberToObject(j, "abandoned_wait", (double)abw);
    cJSON_AddNumberToObject(j, "abandoned_stream", (double)abs_);
    cJSON_AddNumberToObject(j, "malformed", (double)mal);
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cJSON_AddNumberToObject(j, "cpu_s",
                                (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                                    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
    jl = cJSON_AddObjectToObject(j, "latency_ms");
    cJSON_AddNumberToObject(jl, "min", nall ? all[0] : 0);
    cJSON_AddNumberToObject(jl, "p50", pct(all, nall, 50));
    cJSON_AddNumberToObject(jl, "p99", pct(all, nall, 99));
    cJSON_AddNumberToObject(jl, "max", nall ? all[nall - 1] : 0);
    line = cJSON_PrintUnformatted(j);
    printf("%s\n", line);
    fflush(stdout);
    cJSON_free(line);
    cJSON_Delete(j);
    free(all);
}

/* ---- main loop --------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    double t0, t, next_progress, stop_at = 0;
    long last_finished = 0;
    bool stopping = false;

    parse_args(argc, argv);
    rng_seed(cfg.seed);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 3;
    multi = curl_multi_init();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!multi || epfd < 0)
        return 3;
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)cfg.clients + 16);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    slots = xrealloc(NULL, (size_t)cfg.clients * sizeof(*slots));
    memset(slots, 0, (size_t)cfg.clients * sizeof(*slots));
    free_slots = xrealloc(NULL, (size_t)cfg.clients * sizeof(*free_slots));
    for (int i = cfg.clients - 1; i >= 0; i--) /* slot 0 on top */
        free_slots[nfree++] = i;
    t0 = now_s();
    next_progress = t0 + cfg.progress;
    for (;;) {
        int running, q;
        CURLMsg *msg;

        t = now_s();
        if (!stopping && ((cfg.seconds > 0 && t - t0 >= cfg.seconds) ||
                          (cfg.max_requests > 0 && started >= cfg.max_requests))) {
            stopping = true;
            stop_at = t;
        }
        while (!stopping && nfree > 0 && (cfg.max_requests <= 0 || started < cfg.max_requests))
            start_request(&slots[free_slots[--nfree]], t);
        if (stopping && nactive == 0)
            break;
        if (stopping && t - stop_at > cfg.drain) {
            for (int i = 0; i < cfg.clients; i++) {
                if (slots[i].active) {
                    record(&slots[i], O_MALFORMED, M_HUNG, 0, "still running after the drain", t);
                    end_request(&slots[i]);
                }
            }
            break;
        }
        if (timer_set && timer_due <= now_s()) {
            timer_set = false;
            curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        t = now_s();
        while ((msg = curl_multi_info_read(multi, &q))) {
            struct slot *s = NULL;

            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            finish_request(s, msg->data.result, t);
        }
        /* Abandons, and the next wake-up: at most POLL_MAX_MS, sooner for a due abandon. */
        double wake = t + POLL_MAX_MS / 1000.0;
        for (int i = 0; cfg.abandon_rate > 0 && i < cfg.clients; i++) {
            struct slot *s = &slots[i];

            if (!s->active || s->abandon_at <= 0)
                continue;
            if (s->abandon_at <= t) {
                record(s, O_ABANDONED, 0, 0, NULL, t);
                end_request(s);
            } else if (s->abandon_at < wake) {
                wake = s->abandon_at;
            }
        }
        if (cfg.progress > 0 && t >= next_progress) {
            fprintf(stderr, "loadgen: t=%.0fs finished %ld (%.0f/s) in flight %d malformed %ld\n",
                    t - t0, finished, (double)(finished - last_finished) / cfg.progress, nactive,
                    nmalformed);
            last_finished = finished;
            next_progress += cfg.progress;
        }
        if (!stopping && nactive < cfg.clients &&
            (cfg.max_requests <= 0 || started < cfg.max_requests))
            continue; /* a slot is free: start at once */
        if (timer_set && timer_due < wake)
            wake = timer_due;
        int ms = (int)((wake - t) * 1000.0 + 0.999);
        struct epoll_event evs[256];
        int n = epoll_wait(epfd, evs, 256, ms > 0 ? ms : 0);
        for (int i = 0; i < n; i++) {
            uint32_t e = evs[i].events;
            int mask = ((e & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                       ((e & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                       ((e & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);

            curl_multi_socket_action(multi, evs[i].data.fd, mask, &running);
        }
    }
    report(now_s() - t0);
    for (int i = 0; i < cfg.clients; i++)
        free(slots[i].body.p);
    for (int i = 0; i < cfg.nkinds; i++)
        free(kst[i].lat);
    for (int i = 0; i < cfg.ninject; i++)
        free(cfg.inject[i]);
    free(slots);
    free(free_slots);
    curl_multi_cleanup(multi);
    close(epfd);
    curl_global_cleanup();
    return nmalformed > 0 ? 1 : 0;
}
