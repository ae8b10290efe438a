/*
 * mock_upstream.c - standalone OpenAI-compatible mock LLM server for integration tests and
 * benchmarks. Listens on 127.0.0.1 only; libmicrohttpd, one thread per connection.
 *
 * Usage: mock_upstream [--port N] [--latency MS] [--chunk-delay MS] [--seed N]
 *                      [--noisy-key FILE] [--p P] [--q Q] [--require-key KEY]
 *                      [--event-loop 1]   (epoll thread pool; latency waits suspended, no
 *                                          thread per waiting call: for bench/peak.sh)
 * Defaults: port 0 (ephemeral), latency 0, chunk-delay 0, seed 0, p 0.6, q 0.8, no key.
 * Prints "PORT <n>" once listening and runs until SIGTERM/SIGINT (then exits 0).
 *
 * Endpoints
 *   POST /v1/chat/completions, /chat/completions   chat completion (JSON or SSE stream)
 *   POST /v1/embeddings        {"object":"list","data":[{"object":"embedding","index":0,
 *                              "embedding":[0.1,0.2,0.3]}],"model",usage,"mock_raw_body"}: the
 *                              request body exactly as received (passthrough checks)
 *   POST /v1/completions       legacy text completion ("mock completion: <prompt>"), JSON or SSE
 *                              (stream: true), with "mock_raw_body" in the JSON answer
 *   GET  /v1/models, /models   mock-model and mock-model-2; honours the global require_key
 *   GET  /mock/stats           {calls, choices, in_flight, peak_concurrency, prompt_tokens,
 *                              completion_tokens, reasoning_tokens, errors, aborted, dropped,
 *                              models_calls, keys}. calls counts every chat request (errors
 *                              too); choices and token sums count successful answers (a stream
 *                              counts tokens only with include_usage); errors = error answers of
 *                              chat/models; aborted = client gone before the answer was fully
 *                              sent; dropped = drop=1 calls; keys = distinct credentials of chat
 *                              requests in first-seen order ("Bearer x", "api-key: y" or "")
 *   GET  /mock/requests        last 256 chat requests, oldest first: {seq, start_ms, end_ms (null
 *                              while running), auth (as in keys), body (JSON, or a string if it
 *                              did not parse, or {"_truncated":true,"bytes":n} above 4 MiB),
 *                              headers (all, lower-case names; content-type and x-request-id
 *                              always present, null when absent)}; ms since start, monotonic
 *   POST /mock/reset           zero counters, request log, keys, ordinals; peak = in_flight
 *   POST /mock/config          JSON {latency, chunk_delay, p, q, seed, noisy (bool),
 *                              require_key (string|null)}: new global defaults -> {"ok":true}
 *   GET  /mock/config          the current global defaults
 *   GET  /page/<name>          web pages for readurls tests (block "pages" below): article
 *                              (HTML with nav/script/footer around an <article>), text, json,
 *                              malformed (broken HTML), binary (octet-stream), nul (text/plain
 *                              with NUL bytes), huge (50 MB of text/plain), hang (no answer for
 *                              60 s), redirect/<k> (k hops to article), loop (redirects to
 *                              itself), to/<host> (302 to http://<host>/page/article), pdf
 *                              (a one-page PDF: "PDF-TEXT-5 inside"), badpdf (not a PDF)
 *   GET  /mock/pages           {"fetches":n,"paths":[...]}: GET /page/ requests since reset
 *   GET  /search?q=&format=json (websearch) a fake SearxNG: by the query's words, JUNK: not
 *                              JSON, SHAPE: {"results":{}}, EMPTY: no results, SLOW: answers
 *                              after 5 s; else 3 results (the query echoed in the first title)
 *                              pointing at this mock's /page/article, /page/text, /page/json
 *   POST /analyze              (plugins1) a Presidio-analyzer-style NER service for the privacy
 *                              plugin: {"text"} -> [{"entity_type","start","end","score"}] in
 *                              code points, for the fixed names "Alice Martin", "Zoë Müller"
 *                              (PERSON), "Lyon" (LOCATION), "Ireland" (GPE), "Acme"
 *                              (ORGANIZATION) and "Maybe" (PERSON, score 0.3)
 *   POST [/slow|/fail]/v1/traces   (otlp) an OTLP/HTTP JSON trace receiver: records the body
 *                              (the last 1024) and answers {}; under /slow after 3 s, under
 *                              /fail with 503 (nothing recorded)
 *   GET  /mock/traces          (otlp) {"exports":[{"path", "body" (parsed JSON)}]}, oldest first
 *   anything else              404 JSON error (also a known path with the wrong method)
 *
 * Per-request options in the model name: "name@opt=val,opt=val" (the LAST '@' starts them;
 * values are %XX-decoded, '+' stays literal; an unknown option or a bad value gives 400):
 *   latency=MS                 sleep before answering (errors and streams too)
 *   chunk_delay=MS             sleep between stream events
 *   status=CODE                answer CODE (400..599): {"error":{"message":"mock error CODE",
 *                              "type":"server_error","param":null,"code":"mock_CODE"}}
 *   retry_after=S              add "Retry-After: S" to status/fail_* errors
 *   errmsg=TEXT                error.message of status=CODE answers (default "mock error CODE"),
 *                              e.g. an upstream 401 quoting a masked key
 *   usage_prompt=X             usage.prompt_tokens = X (0..1e308) in a JSON answer: a buggy
 *                              upstream's absurd count
 *   fail_rate=F                500 for a seeded pseudo-random fraction F of calls
 *   fail_first=K               the first K calls per distinct raw body (since reset) get 500
 *   n_mode=honour|refuse|refuse500|ignore   n>1: n choices / 400 / 500 / one choice
 *   require_key=KEY            need "Authorization: Bearer KEY" or "api-key: KEY", else 401
 *                              (empty KEY lifts the global --require-key for this request)
 *   reply=TEXT                 fixed reply text (wins over noisy mode)
 *   reasoning=N                usage.completion_tokens_details.reasoning_tokens = N * choices
 *   drop=1                     close the connection without any response
 *   noisy=1, p=P, q=Q          noisy-model mode (below); p and q override the defaults
 *   spread=S                   noisy mode: wrong answers are truth + d, d in [-S,S] \ {0}
 *                              (default 9)
 *   words=N                    words after the "mock reply <i>: " prefix (default 8, 1..100000)
 *   tool=NAME                  answer with one tool call to NAME instead of text (front doors):
 *                              id "call_mock_1", arguments {"location":"Paris","unit":"celsius"},
 *                              finish_reason "tool_calls"; streamed in OpenAI's delta.tool_calls
 *                              form (id/type/name with arguments "", then 3 argument fragments)
 *   usage=0                    no "usage" in the JSON answer, no usage chunk in a stream
 *   usage=null                 as OpenAI does: with include_usage, every stream chunk before
 *                              the usage chunk carries "usage":null
 *   split=1                    streams send every event in two writes 20 ms apart
 *   reject_stream_options=1    400 "Unrecognized request argument supplied: stream_options"
 *                              when the body has stream_options (as some upstreams do)
 *   errbody=KIND               with status=CODE, a body that is not OpenAI-shaped: plain
 *                              ("upstream exploded: mock CODE", text/plain), html (a gateway's
 *                              page, text/html), typeerror ({"error":"TypeError","message":
 *                              "mock CODE: cannot read properties of undefined"}), empty
 *   piece_bytes=N              (plugins1) streams: content chunks of N bytes (backed off to a
 *                              UTF-8 boundary) instead of one per word, so that words and
 *                              placeholders are split across chunks
 *   json_bad=K                 (plugins1) the first K answers (choices) of calls with this
 *                              option since the last reset are {"note":"mock non-compliance"}
 *                              whatever the response_format (a model that ignores the schema)
 * Hostile-upstream options (the block "hostile upstream" below):
 *   cut=N                      end a stream after N events (no finish, no usage, no [DONE]); the
 *                              HTTP response itself ends cleanly
 *   cut_mid=1                  with cut: the N-th event is sent only up to the middle of its line
 *   cut_abort=1                with cut: close the connection instead (no last chunk)
 *   ignore_stream=1            answer a stream request with a JSON chat.completion
 *   errbody200=1               answer 200 with an OpenAI error body (application/json)
 *   nolastnl=1                 no [DONE], and the stream's last event has no newline after it
 *   hdr=Name:Value             add a response header (repeatable, up to 4; %XX-encode ',')
 *   ratelimit=1                add x-ratelimit-{limit,remaining,reset}-{requests,tokens},
 *                              x-request-id: mock-req-<seq> and openai-processing-ms
 *   usage_huge=V               report V as prompt_tokens and completion_tokens (any number)
 * Order: bad JSON or model option -> 400, key -> 401, bad messages -> 400, latency, drop,
 * status, fail_first and fail_rate -> 500, n checks, answer. Errors use the OpenAI error shape.
 *
 * Replies: choice i is "mock reply <i>: " + the words of the last user message (each cut to 256
 * bytes; "empty" when there are none) cycled to N words. prompt_tokens = 1 + bytes(all message
 * text)/4 once per HTTP call; completion_tokens = sum over choices of 1 + bytes(text)/4;
 * total_tokens = their sum (reasoning tokens are not added). max_tokens (or
 * max_completion_tokens): a reply whose count exceeds it is cut to max_tokens*4 bytes (backed off
 * to a UTF-8 boundary) with finish_reason "length". Streams: per choice a role chunk then one
 * chunk per word (word + following spaces), then a finish chunk per choice, a usage chunk
 * ("choices":[]) with stream_options.include_usage, then "data: [DONE]".
 *
 * mcp block (the mcp plugin's tests; JSON answers only):
 *   mcp_tool=NAME              while "tools" offers NAME and no tool message is in the
 *                              conversation yet, answer with mcp_calls=K (default 1) calls of
 *                              NAME (ids call_mcp_<j>) with arguments mcp_args=JSON (default
 *                              {}); mcp_loop=1 keeps calling after tool results. Otherwise the
 *                              text "tool said: " + each tool message's content (first 1000
 *                              bytes) joined by " | " ("no tool" without any)
 *
 * Tools and structured output (checked after the text of every choice is made):
 *   - "tools" (a non-empty array) and no message with role "tool" yet: every choice is a
 *     call of the first tool: {"id":"call_mock_<i>","type":"function","function":{"name":
 *     <tools[0].function.name>,"arguments":<A>}}, content null, finish_reason "tool_calls";
 *     A is {"q":<the last user message, its first 64 bytes>,"k":1} for even i and the same
 *     with the keys the other way round for odd i (same call, different text). Streamed as
 *     OpenAI does: per choice a chunk with role, content null and the call with id, type,
 *     name and "arguments":"", then the arguments in two fragments, then the finish chunks.
 *     completion_tokens count the arguments text. Once a tool result is in the conversation
 *     the model answers with text (so a tool is called once, then the answer follows).
 *   - otherwise "response_format" of type json_object or json_schema: the text T becomes the
 *     JSON text {"answer":T}.
 *   - "logprobs": true (not streamed, no tool call): choice i carries "logprobs":{"content":
 *     [{"token":<its whole text>,"logprob":-(i+1),"bytes":null,"top_logprobs":[]}],
 *     "refusal":null}, so a test can tell which choice an answer's logprobs came from.
 *
 * Noisy mode: truth = the --noisy-key JSONL line {"question","answer"} whose question occurs in
 * the last user message (longest wins; numeric answers only), else the first integer + - * ()
 * expression with an operator in it, else 0. On the lower-cased system+user text: a whole word
 * rate/rated/rates/rating/ratings/score/scores/scored/scoring plus an "answer is <num>" phrase ->
 * rating of the last phrase of the last user message: "Rating: 9" if judged right, "Rating: 2"
 * if judged wrong, the judgement being correct with probability q; else two or more phrases ->
 * "Combining the candidates. The answer is M." (majority, ties: first seen); else "Let me work
 * it out step by step. The answer is N." (N = truth with probability p, else truth + d, d in
 * [-S,S] \ {0}, S = spread, default 9). "<output>" in any message selects
 * "<thinking>...</thinking>\n<reflection> Checked.</reflection>\n<output>The answer is
 * N.</output>". Each choice is one sample; its seed mixes the global seed, a hash of model +
 * messages and an ordinal counted per hash since the last reset (a call with n=k takes k
 * consecutive ordinals), so the multiset of answers does not depend on arrival order.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#define MAX_BODY       ((size_t)64 * 1024 * 1024)
#define LOG_CAP        256
#define LOG_BODY_MAX   ((size_t)4 * 1024 * 1024)
#define MAX_N          128
#define MAX_WORDS      100000
#define MAX_KEYS       4096
#define MAX_JSON_DEPTH 200
#define MAX_PHRASES    4096
#define MAX_WORD_BYTES 256

/* ---- small helpers ---------------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_adds(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static const char *sb_str(const struct sbuf *b)
{
    return b->p ? b->p : "";
}

static void sb_free(struct sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char lower_c(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double u01(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * 0x1.0p-53;
}

/* PRNG state for (tag, seed, hash, ordinal). */
static uint64_t mix_seed(uint64_t tag, uint64_t seed, uint64_t hash, uint64_t ordinal)
{
    uint64_t v[4] = {tag, seed, hash, ordinal};
    uint64_t st = fnv1a(FNV_INIT, v, sizeof(v));
    splitmix64(&st);
    return st;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static void fmt_num(double x, char *buf, size_t n)
{
    if (fabs(x) < 1e15 && x == floor(x))
        snprintf(buf, n, "%lld", (long long)x);
    else
        snprintf(buf, n, "%.10g", x);
}

/* u64 -> u64 open-addressing map (key 0 is remapped to 1). */
struct u64map {
    uint64_t *keys, *vals;
    size_t cap, len;
};

static uint64_t *map_slot(struct u64map *m, uint64_t key)
{
    key = key ? key : 1;
    if ((m->len + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 1024;
        uint64_t *nk = calloc(nc, sizeof(*nk)), *nv = calloc(nc, sizeof(*nv));
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return NULL;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = (size_t)(m->keys[i] * 0x9e3779b97f4a7c15ULL) & (nc - 1);
            while (nk[j])
                j = (j + 1) & (nc - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = nc;
    }
    size_t j = (size_t)(key * 0x9e3779b97f4a7c15ULL) & (m->cap - 1);
    while (m->keys[j] && m->keys[j] != key)
        j = (j + 1) & (m->cap - 1);
    if (!m->keys[j]) {
        m->keys[j] = key;
        m->vals[j] = 0;
        m->len++;
    }
    return &m->vals[j];
}

static void map_free(struct u64map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* ---- global state ----------------------------------------------------------------------- */

struct config {
    long latency, chunk_delay;
    double p, q;
    uint64_t seed;
    char *require_key;
    bool noisy;
};

struct logent {
    bool used, body_json;
    uint64_t seq;
    long long start_ms, end_ms;
    char *auth, *body;
    size_t body_len;
    cJSON *headers;
};

struct state {
    pthread_mutex_t mu;
    struct config cfg;
    unsigned long long calls, choices, in_flight, peak, prompt_tokens, completion_tokens;
    unsigned long long reasoning_tokens, errors, aborted, dropped, models_calls, cmpl_id;
    unsigned long long json_bad_seen; /* plugins1: calls with json_bad=K since reset */
    uint64_t epoch, seq;
    char **keys;
    size_t nkeys;
    struct u64map ordinals, body_calls;
    struct logent log[LOG_CAP];
};

struct keyent {
    char *question;
    double answer;
};

static struct state g;
static struct keyent *g_key;
static size_t g_nkey;
static long long g_t0;
static int g_stop_pipe[2] = {-1, -1};

static long long now_ms(void)
{
    return mono_ms() - g_t0;
}

static void log_clear(struct logent *e)
{
    free(e->auth);
    free(e->body);
    cJSON_Delete(e->headers);
    memset(e, 0, sizeof(*e));
}

/* Sleeps ms milliseconds; false when the client on fd hung up or the mock is stopping. */
static bool sleep_watch(int fd, long ms)
{
    long long deadline = mono_ms() + ms;
    bool watch = fd >= 0;
    for (;;) {
        long long left = deadline - mono_ms();
        if (left <= 0)
            return true;
        struct pollfd pf[2] = {{.fd = g_stop_pipe[0], .events = POLLIN},
                               {.fd = watch ? fd : -1, .events = POLLIN}};
        int rc = poll(pf, 2, left > INT_MAX ? INT_MAX : (int)left);
        if (rc <= 0)
            continue;
        if (pf[0].revents)
            return false;
        if (pf[1].revents & POLLNVAL) {
            watch = false;
        } else if (pf[1].revents & (POLLERR | POLLHUP)) {
            return false;
        } else if (pf[1].revents & POLLIN) {
            char c;
            ssize_t k = recv(fd, &c, 1, MSG_PEEK);
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                return false;
            if (k > 0)
                watch = false; /* pipelined data: cannot watch for EOF any more */
        }
    }
}

static int conn_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* ---- hostile upstream ------------------------------------------------------------------- */

#define HOSTILE_MAX_HDR 4

struct hostile {
    long cut; /* events before the stream ends; 0 = no cut */
    bool cut_mid, cut_abort, ignore_stream, errbody200, nolastnl, ratelimit;
    double usage_huge; /* 0 = honest usage */
    char *hdr[HOSTILE_MAX_HDR];
    int nhdr;
};

/* The current request's hostile options (the mock runs one thread per connection). */
static __thread const struct hostile *cur_hostile;
static __thread struct req *cur_req; /* the request whose handler runs on this thread */
static void uncount(struct req *r);
static __thread unsigned long long cur_seq;

static void hostile_free(struct hostile *h)
{
    for (int i = 0; i < h->nhdr; i++)
        free(h->hdr[i]);
    h->nhdr = 0;
}

static void hostile_copy(struct hostile *to, const struct hostile *from)
{
    *to = *from;
    for (int i = 0; i < from->nhdr; i++)
        to->hdr[i] = strdup(from->hdr[i]);
}

static bool parse_bool(const char *v, bool *out);

/* Parses a hostile option; false when 'name' is not one (*ok untouched). */
static bool hostile_opt(struct hostile *h, const char *name, const char *val, bool *ok)
{
    bool *flag = !strcmp(name, "cut_mid")         ? &h->cut_mid
                 : !strcmp(name, "cut_abort")     ? &h->cut_abort
                 : !strcmp(name, "ignore_stream") ? &h->ignore_stream
                 : !strcmp(name, "errbody200")    ? &h->errbody200
                 : !strcmp(name, "nolastnl")      ? &h->nolastnl
                 : !strcmp(name, "ratelimit")     ? &h->ratelimit
                                                  : NULL;

    if (flag) {
        *ok = parse_bool(val, flag);
        return true;
    }
    if (!strcmp(name, "cut")) {
        *ok = parse_long(val, 1, 1000000, &h->cut);
        return true;
    }
    if (!strcmp(name, "usage_huge")) {
        char *end;
        h->usage_huge = strtod(val, &end);
        *ok = *val && *end == '\0';
        return true;
    }
    if (!strcmp(name, "hdr")) {
        const char *colon = strchr(val, ':');
        *ok = colon && colon > val && h->nhdr < HOSTILE_MAX_HDR &&
              (h->hdr[h->nhdr] = strdup(val)) != NULL;
        if (*ok)
            h->nhdr++;
        return true;
    }
    return false;
}

static void hostile_headers(struct MHD_Response *resp, const struct hostile *h)
{
    char name[128], v[64];

    if (!h)
        return;
    for (int i = 0; i < h->nhdr; i++) {
        const char *colon = strchr(h->hdr[i], ':');
        size_t n = (size_t)(colon - h->hdr[i]);
        const char *val = colon + 1;

        if (n >= sizeof(name))
            continue;
        memcpy(name, h->hdr[i], n);
        name[n] = '\0';
        while (*val == ' ')
            val++;
        MHD_add_response_header(resp, name, val);
    }
    if (h->ratelimit) {
        MHD_add_response_header(resp, "x-ratelimit-limit-requests", "100");
        MHD_add_response_header(resp, "x-ratelimit-remaining-requests", "99");
        MHD_add_response_header(resp, "x-ratelimit-reset-requests", "1s");
        MHD_add_response_header(resp, "x-ratelimit-limit-tokens", "50000");
        MHD_add_response_header(resp, "x-ratelimit-remaining-tokens", "49000");
        MHD_add_response_header(resp, "x-ratelimit-reset-tokens", "6ms");
        MHD_add_response_header(resp, "openai-processing-ms", "5");
        snprintf(v, sizeof(v), "mock-req-%llu", cur_seq);
        MHD_add_response_header(resp, "x-request-id", v);
    }
}

/* usage_huge: replaces the token counts of a usage object. */
static cJSON *hostile_usage(cJSON *u, const struct hostile *h)
{
    if (u && h && h->usage_huge != 0) {
        cJSON_ReplaceItemInObjectCaseSensitive(u, "prompt_tokens",
                                               cJSON_CreateNumber(h->usage_huge));
        cJSON_ReplaceItemInObjectCaseSensitive(u, "completion_tokens",
                                               cJSON_CreateNumber(h->usage_huge));
        cJSON_ReplaceItemInObjectCaseSensitive(u, "total_tokens",
                                               cJSON_CreateNumber(2 * h->usage_huge));
    }
    return u;
}

/* ---- responses -------------------------------------------------------------------------- */

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned int status, const char *ctype,
                                 const char *body, const char *retry_after)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    if (retry_after)
        MHD_add_response_header(resp, "Retry-After", retry_after);
    hostile_headers(resp, cur_hostile);
    /* A whole answer leaves the call's count as it is queued, not when MHD has sent it: the
     * client may read it and make its next call before MHD's completion callback runs, and
     * peak_concurrency must not count both. */
    if (cur_req)
        uncount(cur_req);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Sends obj (consumed) as JSON. */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned int status, cJSON *obj,
                                 const char *retry_after)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s)
        return MHD_NO;
    enum MHD_Result ret = send_body(c, status, "application/json", s, retry_after);
    cJSON_free(s);
    return ret;
}

static cJSON *error_obj(const char *msg, const char *type, const char *param, const char *code)
{
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    return root;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned int status, const char *msg,
                                  const char *type, const char *param, const char *code,
                                  const char *retry_after)
{
    return send_json(c, status, error_obj(msg, type, param, code), retry_after);
}

/* Error answer to a chat/models request: counted in stats.errors. */
static enum MHD_Result counted_error(struct MHD_Connection *c, unsigned int status, const char *msg,
                                     const char *type, const char *param, const char *code,
                                     const char *retry_after)
{
    pthread_mutex_lock(&g.mu);
    g.errors++;
    pthread_mutex_unlock(&g.mu);
    return send_error(c, status, msg, type, param, code, retry_after);
}

static enum MHD_Result mock_status_error(struct MHD_Connection *c, long status,
                                         const char *retry_after)
{
    char msg[256], code[32];
    snprintf(msg, sizeof(msg), "mock error %ld", status);
    snprintf(code, sizeof(code), "mock_%ld", status);
    return counted_error(c, (unsigned int)status, msg, "server_error", NULL, code, retry_after);
}

/* ---- per-request state ------------------------------------------------------------------ */

enum route {
    R_EMBED,
    R_COMPL,
    R_CHAT,
    R_MODELS,
    R_STATS,
    R_REQUESTS,
    R_RESET,
    R_CONFIG,
    R_ANALYZE,   /* plugins1: a Presidio-style NER service */
    R_OTLP,      /* otlp: POST .../v1/traces, an OTLP/HTTP JSON trace receiver */
    R_OTLP_LIST, /* otlp: GET /mock/traces */
    R_BADMETHOD,
    R_NOTFOUND
};

struct req {
    enum route route;
    struct sbuf body;
    bool too_large, counted, dropped;
    bool answered; /* in_flight already decremented: a whole (non-stream) answer was queued */
    bool delayed;  /* --event-loop: the latency was waited suspended; answer now */
    uint64_t seq, epoch;
    long long start_ms;
};

/* ---- --event-loop: latency without a thread per connection (bench/peak.sh) --------------------
 * libmicrohttpd runs an epoll thread pool; a chat request with a latency is suspended and a
 * timer thread resumes it when due, so 9,000 waiting calls cost no threads. Stream chunk
 * delays still sleep on a pool thread (benchmarks use non-stream calls). */
static bool g_event_loop;
struct delayed {
    long long due_ms;
    struct MHD_Connection *conn;
};
static pthread_mutex_t dl_mu = PTHREAD_MUTEX_INITIALIZER; /* guards dl_* below */
static pthread_cond_t dl_cv;                              /* CLOCK_MONOTONIC */
static struct delayed *dl_heap;                           /* min-heap by due_ms */
static size_t dl_n, dl_cap;
static bool dl_stop;
static pthread_t dl_thread;

static void dl_swap(size_t a, size_t b)
{
    struct delayed t = dl_heap[a];
    dl_heap[a] = dl_heap[b];
    dl_heap[b] = t;
}

/* Called by the handler after MHD_suspend_connection. */
static bool dl_push(long long due_ms, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&dl_mu);
    if (dl_n == dl_cap) {
        size_t cap = dl_cap ? dl_cap * 2 : 1024;
        struct delayed *h = realloc(dl_heap, cap * sizeof(*h));
        if (!h) {
            pthread_mutex_unlock(&dl_mu);
            return false;
        }
        dl_heap = h;
        dl_cap = cap;
    }
    size_t i = dl_n++;
    dl_heap[i] = (struct delayed){due_ms, conn};
    while (i > 0 && dl_heap[(i - 1) / 2].due_ms > dl_heap[i].due_ms) {
        dl_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    pthread_cond_signal(&dl_cv);
    pthread_mutex_unlock(&dl_mu);
    return true;
}

/* Caller holds dl_mu; dl_n > 0. */
static struct MHD_Connection *dl_pop(void)
{
    struct MHD_Connection *conn = dl_heap[0].conn;
    size_t i = 0;
    dl_heap[0] = dl_heap[--dl_n];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < dl_n && dl_heap[l].due_ms < dl_heap[m].due_ms)
            m = l;
        if (l + 1 < dl_n && dl_heap[l + 1].due_ms < dl_heap[m].due_ms)
            m = l + 1;
        if (m == i)
            break;
        dl_swap(i, m);
        i = m;
    }
    return conn;
}

static void *dl_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&dl_mu);
    for (;;) {
        if (dl_n > 0 && (dl_stop || dl_heap[0].due_ms <= mono_ms())) {
            struct MHD_Connection *conn = dl_pop();
            pthread_mutex_unlock(&dl_mu);
            MHD_resume_connection(conn);
            pthread_mutex_lock(&dl_mu);
            continue;
        }
        if (dl_stop)
            break;
        if (dl_n == 0) {
            pthread_cond_wait(&dl_cv, &dl_mu);
        } else {
            long long due = dl_heap[0].due_ms;
            struct timespec ts = {.tv_sec = (time_t)(due / 1000),
                                  .tv_nsec = (long)(due % 1000) * 1000000L};
            pthread_cond_timedwait(&dl_cv, &dl_mu, &ts);
        }
    }
    pthread_mutex_unlock(&dl_mu);
    return NULL;
}

static bool dl_start(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dl_cv, &ca);
    pthread_condattr_destroy(&ca);
    return pthread_create(&dl_thread, NULL, dl_main, NULL) == 0;
}

/* Resumes every waiting connection (they answer at once) and joins the timer thread. */
static void dl_finish(void)
{
    pthread_mutex_lock(&dl_mu);
    dl_stop = true;
    pthread_cond_signal(&dl_cv);
    pthread_mutex_unlock(&dl_mu);
    pthread_join(dl_thread, NULL);
    free(dl_heap);
}

static enum route route_for(const char *method, const char *url)
{
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions"))
        return post ? R_CHAT : R_BADMETHOD;
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models"))
        return get ? R_MODELS : R_BADMETHOD;
    if (!strcmp(url, "/v1/embeddings") || !strcmp(url, "/embeddings"))
        return post ? R_EMBED : R_BADMETHOD;
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/completions"))
        return post ? R_COMPL : R_BADMETHOD;
    if (!strcmp(url, "/mock/stats"))
        return get ? R_STATS : R_BADMETHOD;
    if (!strcmp(url, "/mock/requests"))
        return get ? R_REQUESTS : R_BADMETHOD;
    if (!strcmp(url, "/mock/reset"))
        return post ? R_RESET : R_BADMETHOD;
    if (!strcmp(url, "/mock/config"))
        return (get || post) ? R_CONFIG : R_BADMETHOD;
    if (!strcmp(url, "/analyze")) /* plugins1 */
        return post ? R_ANALYZE : R_BADMETHOD;
    size_t ul = strlen(url); /* otlp: any prefix (/slow, /fail) before /v1/traces */
    if (ul >= 10 && !strcmp(url + ul - 10, "/v1/traces"))
        return post ? R_OTLP : R_BADMETHOD;
    if (!strcmp(url, "/mock/traces")) /* otlp */
        return get ? R_OTLP_LIST : R_BADMETHOD;
    return R_NOTFOUND;
}

/* Credential as recorded in stats.keys and the request log (malloc'd). */
static char *credential(struct MHD_Connection *c)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *api = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "api-key");
    if (auth)
        return strdup(auth);
    if (!api)
        return strdup("");
    size_t n = strlen(api) + 10;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "api-key: %s", api);
    return s;
}

static bool key_ok(struct MHD_Connection *c, const char *key)
{
    if (!key || !*key)
        return true;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *api = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "api-key");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *v = auth + 7;
        while (*v == ' ')
            v++;
        if (strcmp(v, key) == 0)
            return true;
    }
    return api && strcmp(api, key) == 0;
}

static enum MHD_Result header_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    char name[128];
    size_t i = 0;
    for (; key[i] && i + 1 < sizeof(name); i++)
        name[i] = lower_c(key[i]);
    name[i] = '\0';
    if (!cJSON_HasObjectItem(cls, name))
        cJSON_AddStringToObject(cls, name, value ? value : "");
    return MHD_YES;
}

/* Counts a chat request and records it in the request log. */
static void account_request(struct req *r, struct MHD_Connection *c, const char *cred,
                            bool body_json)
{
    cJSON *hdrs = cJSON_CreateObject();
    if (hdrs) {
        MHD_get_connection_values(c, MHD_HEADER_KIND, header_iter, hdrs);
        if (!cJSON_HasObjectItem(hdrs, "content-type"))
            cJSON_AddNullToObject(hdrs, "content-type");
        if (!cJSON_HasObjectItem(hdrs, "x-request-id"))
            cJSON_AddNullToObject(hdrs, "x-request-id");
    }
    bool keep_body = !r->too_large && r->body.len <= LOG_BODY_MAX;
    char *body = keep_body ? strdup(sb_str(&r->body)) : NULL;
    char *auth = strdup(cred);

    pthread_mutex_lock(&g.mu);
    g.calls++;
    if (++g.in_flight > g.peak)
        g.peak = g.in_flight;
    r->counted = true;
    r->epoch = g.epoch;
    r->seq = ++g.seq;
    struct logent *e = &g.log[(r->seq - 1) % LOG_CAP];
    log_clear(e);
    e->used = true;
    e->seq = r->seq;
    e->start_ms = r->start_ms;
    e->end_ms = -1;
    e->auth = auth;
    e->body = body;
    e->body_len = r->body.len;
    e->body_json = body_json && body;
    e->headers = hdrs;
    bool seen = false;
    for (size_t i = 0; i < g.nkeys && !seen; i++)
        seen = strcmp(g.keys[i], cred) == 0;
    if (!seen && g.nkeys < MAX_KEYS) {
        if (!g.keys)
            g.keys = calloc(MAX_KEYS, sizeof(*g.keys));
        char *k = g.keys ? strdup(cred) : NULL;
        if (k)
            g.keys[g.nkeys++] = k;
    }
    pthread_mutex_unlock(&g.mu);
}

/* ---- model-name options ----------------------------------------------------------------- */

enum n_mode { N_HONOUR, N_REFUSE, N_REFUSE500, N_IGNORE };

struct opts {
    long latency, chunk_delay, status, fail_first, reasoning, words, retry_after, spread;
    double fail_rate, p, q;
    enum n_mode n_mode;
    bool drop, noisy;
    uint64_t seed;
    char *require_key, *reply;
    struct hostile h;
    char *tool;          /* front doors: answer with a tool call to this function */
    char *errmsg;        /* errmsg=TEXT (secparse block) */
    double usage_prompt; /* usage_prompt=X (secparse block); < 0: off */
    /* Accounting and error-shape options (usage=, errbody=). */
    bool no_usage, usage_null, split, reject_so;
    int errbody;
    long piece_bytes, json_bad; /* plugins1 block: piece_bytes=N, json_bad=K */
    /* mcp block: mcp_tool=NAME, mcp_args=JSON, mcp_calls=K, mcp_loop=1 */
    char *mcp_tool, *mcp_args;
    long mcp_calls;
    bool mcp_loop;
};

static int hexval(char c)
{
    if (is_digit(c))
        return c - '0';
    c = lower_c(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

static char *url_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t j = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    return out;
}

static bool parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "1") || !strcmp(v, "true")) {
        *out = true;
        return true;
    }
    if (!strcmp(v, "0") || !strcmp(v, "false")) {
        *out = false;
        return true;
    }
    return false;
}

/* ---- accounting and error-shape options ---------------------------------------------------- */

enum errbody { ERRBODY_OPENAI, ERRBODY_PLAIN, ERRBODY_HTML, ERRBODY_TYPEERROR, ERRBODY_EMPTY };

/* usage= and errbody=: 1 applied, 0 bad value, -1 not one of these. */
static int apply_opt_account(struct opts *o, const char *name, const char *val)
{
    static const char *const kinds[] = {"openai", "plain", "html", "typeerror", "empty"};

    if (!strcmp(name, "split"))
        return parse_bool(val, &o->split) ? 1 : 0;
    if (!strcmp(name, "reject_stream_options"))
        return parse_bool(val, &o->reject_so) ? 1 : 0;
    if (!strcmp(name, "usage") && !strcmp(val, "null")) {
        o->usage_null = true;
        return 1;
    }
    if (!strcmp(name, "usage")) {
        bool on;
        if (!parse_bool(val, &on))
            return 0;
        o->no_usage = !on;
        return 1;
    }
    if (strcmp(name, "errbody"))
        return -1;
    for (int i = 0; i < (int)(sizeof(kinds) / sizeof(kinds[0])); i++)
        if (!strcmp(val, kinds[i])) {
            o->errbody = i;
            return 1;
        }
    return 0;
}

/* The status=CODE answer with a body that is not OpenAI-shaped (counted in stats.errors). */
static enum MHD_Result errbody_error(struct MHD_Connection *c, long status, int kind,
                                     const char *retry_after)
{
    char body[512];
    const char *ctype = "text/plain; charset=utf-8";

    if (kind == ERRBODY_PLAIN) {
        snprintf(body, sizeof(body), "upstream exploded: mock %ld\n", status);
    } else if (kind == ERRBODY_HTML) {
        ctype = "text/html";
        snprintf(body, sizeof(body),
                 "<html>\r\n<head><title>%ld Bad Gateway</title><style>body{color:red}</style>"
                 "</head>\r\n<body>\r\n<center><h1>%ld Bad Gateway</h1></center>\r\n<hr>"
                 "<center>mock-gateway &amp; friends</center>\r\n</body>\r\n</html>\r\n",
                 status, status);
    } else if (kind == ERRBODY_TYPEERROR) {
        ctype = "application/json";
        snprintf(body, sizeof(body),
                 "{\"error\":\"TypeError\",\"message\":\"mock %ld: cannot read properties of "
                 "undefined\"}",
                 status);
    } else {
        body[0] = '\0';
    }
    pthread_mutex_lock(&g.mu);
    g.errors++;
    pthread_mutex_unlock(&g.mu);
    return send_body(c, (unsigned int)status, ctype, body, retry_after);
}

static bool apply_opt(struct opts *o, const char *name, char *val)
{
    const long maxms = 3600L * 1000;
    bool hostile_ok = false;

    if (hostile_opt(&o->h, name, val, &hostile_ok))
        return hostile_ok;

    int acc = apply_opt_account(o, name, val);
    if (acc >= 0)
        return acc == 1;
    if (!strcmp(name, "latency"))
        return parse_long(val, 0, maxms, &o->latency);
    if (!strcmp(name, "chunk_delay"))
        return parse_long(val, 0, maxms, &o->chunk_delay);
    if (!strcmp(name, "status"))
        return parse_long(val, 400, 599, &o->status);
    if (!strcmp(name, "retry_after"))
        return parse_long(val, 0, 86400, &o->retry_after);
    if (!strcmp(name, "fail_rate"))
        return parse_double(val, 0, 1, &o->fail_rate);
    if (!strcmp(name, "fail_first"))
        return parse_long(val, 0, LONG_MAX, &o->fail_first);
    if (!strcmp(name, "reasoning"))
        return parse_long(val, 0, 1000000000L, &o->reasoning);
    if (!strcmp(name, "words"))
        return parse_long(val, 1, MAX_WORDS, &o->words);
    if (!strcmp(name, "p"))
        return parse_double(val, 0, 1, &o->p);
    if (!strcmp(name, "q"))
        return parse_double(val, 0, 1, &o->q);
    if (!strcmp(name, "spread"))
        return parse_long(val, 1, 1000, &o->spread);
    if (!strcmp(name, "drop"))
        return parse_bool(val, &o->drop);
    if (!strcmp(name, "noisy"))
        return parse_bool(val, &o->noisy);
    if (!strcmp(name, "n_mode")) {
        static const char *const modes[] = {"honour", "refuse", "refuse500", "ignore"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(val, modes[i])) {
                o->n_mode = (enum n_mode)i;
                return true;
            }
        if (!strcmp(val, "honor") || !strcmp(val, "default")) {
            o->n_mode = N_HONOUR;
            return true;
        }
        return false;
    }
    /* ---- secparse: errmsg=TEXT, usage_prompt=X ---- */
    if (!strcmp(name, "usage_prompt"))
        return parse_double(val, 0, 1e308, &o->usage_prompt);
    if (!strcmp(name, "errmsg")) {
        free(o->errmsg);
        o->errmsg = strdup(val);
        return o->errmsg != NULL;
    }
    /* ---- end secparse ---- */
    /* ---- plugins1: piece_bytes=N, json_bad=K ---- */
    if (!strcmp(name, "piece_bytes"))
        return parse_long(val, 1, 1000000, &o->piece_bytes);
    if (!strcmp(name, "json_bad"))
        return parse_long(val, 0, LONG_MAX, &o->json_bad);
    /* ---- end plugins1 ---- */
    /* ---- mcp block ---- */
    if (!strcmp(name, "mcp_calls"))
        return parse_long(val, 1, 64, &o->mcp_calls);
    if (!strcmp(name, "mcp_loop"))
        return parse_bool(val, &o->mcp_loop);
    if (!strcmp(name, "mcp_tool") || !strcmp(name, "mcp_args")) {
        char **d = !strcmp(name, "mcp_tool") ? &o->mcp_tool : &o->mcp_args;
        free(*d);
        *d = strdup(val);
        return *d != NULL;
    }
    /* ---- end mcp block ---- */
    char **dst = !strcmp(name, "reply")         ? &o->reply
                 : !strcmp(name, "require_key") ? &o->require_key
                 : !strcmp(name, "tool")        ? &o->tool
                                                : NULL;
    if (!dst)
        return false;
    free(*dst);
    *dst = strdup(val);
    return *dst != NULL;
}

/* Fills o from the global defaults and the options in model; NULL or an error message. */
static const char *parse_opts(const char *model, struct opts *o, char *err, size_t errlen)
{
    pthread_mutex_lock(&g.mu);
    o->latency = g.cfg.latency;
    o->chunk_delay = g.cfg.chunk_delay;
    o->p = g.cfg.p;
    o->q = g.cfg.q;
    o->spread = 9;
    o->seed = g.cfg.seed;
    o->noisy = g.cfg.noisy;
    o->require_key = g.cfg.require_key ? strdup(g.cfg.require_key) : NULL;
    pthread_mutex_unlock(&g.mu);
    o->reasoning = -1;
    o->words = 8;
    o->usage_prompt = -1; /* secparse */
    const char *at = strrchr(model, '@');
    if (!at)
        return NULL;
    const char *s = at + 1;
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        if (len > 0) {
            size_t nlen = eq ? (size_t)(eq - s) : len;
            char *name = url_decode(s, nlen);
            char *val = eq ? url_decode(eq + 1, len - nlen - 1) : strdup("1");
            bool ok = name && val && apply_opt(o, name, val);
            if (!ok)
                snprintf(err, errlen, "mock: bad model option '%.*s'", (int)(len > 200 ? 200 : len),
                         s);
            free(name);
            free(val);
            if (!ok)
                return err;
        }
        s = comma ? comma + 1 : s + len;
    }
    return NULL;
}

/* ---- messages --------------------------------------------------------------------------- */

struct msginfo {
    size_t prompt_bytes;
    struct sbuf last_user;
    struct sbuf classify; /* lower-cased system/developer/user text */
    bool output_tag;
    uint64_t hash; /* model + messages */
};

static bool content_text(const cJSON *content, struct sbuf *out)
{
    if (!content || cJSON_IsNull(content))
        return true;
    if (cJSON_IsString(content)) {
        sb_adds(out, content->valuestring);
        return true;
    }
    if (!cJSON_IsArray(content))
        return false;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        bool is_text = !type || (cJSON_IsString(type) && !strcmp(type->valuestring, "text"));
        if (is_text && cJSON_IsString(text))
            sb_adds(out, text->valuestring);
    }
    return true;
}

static const char *collect_messages(const cJSON *messages, const char *model, struct msginfo *mi)
{
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) < 1)
        return "'messages' must be a non-empty array";
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        if (!cJSON_IsObject(m))
            return "each message must be an object";
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const char *rs = cJSON_IsString(role) ? role->valuestring : "user";
        struct sbuf t = {0};
        if (!content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &t)) {
            sb_free(&t);
            return "message content must be a string or an array of parts";
        }
        mi->prompt_bytes += t.len;
        const char *ts = sb_str(&t);
        if (strstr(ts, "<output>"))
            mi->output_tag = true;
        if (!strcmp(rs, "user")) {
            sb_free(&mi->last_user);
            sb_add(&mi->last_user, ts, t.len);
        }
        if (!strcmp(rs, "user") || !strcmp(rs, "system") || !strcmp(rs, "developer")) {
            size_t base = mi->classify.len;
            sb_add(&mi->classify, ts, t.len);
            sb_add(&mi->classify, "\n", 1);
            for (size_t i = base; !mi->classify.oom && i < mi->classify.len; i++)
                mi->classify.p[i] = lower_c(mi->classify.p[i]);
        }
        sb_free(&t);
    }
    if (mi->last_user.oom || mi->classify.oom)
        return "out of memory";
    char *js = cJSON_PrintUnformatted(messages);
    mi->hash = fnv1a(fnv1a(FNV_INIT, model, strlen(model) + 1), js ? js : "", js ? strlen(js) : 0);
    cJSON_free(js);
    return NULL;
}

/* ---- noisy mode ------------------------------------------------------------------------- */

/* Parses the number after "answer is" at p. */
static bool parse_answer_at(const char *p, double *out)
{
    for (int k = 0; k < 8 && *p && strchr(" \t:*$", *p); k++)
        p++;
    const char *q = p;
    if (*q == '-')
        q++;
    if (!is_digit(*q))
        return false;
    while (is_digit(*q))
        q++;
    if (*q == '.' && is_digit(q[1])) {
        q++;
        while (is_digit(*q))
            q++;
    }
    char buf[64];
    size_t len = (size_t)(q - p);
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

/* Numbers of the "answer is <num>" phrases in lower-cased s (up to max stored); total count. */
static size_t find_answers(const char *s, double *vals, size_t max, double *last)
{
    size_t n = 0;
    for (const char *p = strstr(s, "answer is"); p; p = strstr(p + 1, "answer is")) {
        double v;
        if (!parse_answer_at(p + 9, &v))
            continue;
        if (vals && n < max)
            vals[n] = v;
        if (last)
            *last = v;
        n++;
    }
    return n;
}

static bool has_rate_word(const char *s)
{
    static const char *const words[] = {"rate",  "rated",  "rates",  "rating", "ratings",
                                        "score", "scores", "scored", "scoring"};
    for (const char *p = s; *p; p++) {
        if (!is_alpha(*p) || (p > s && is_alpha(p[-1])))
            continue;
        size_t len = 0;
        while (is_alpha(p[len]))
            len++;
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strlen(words[i]) == len && !strncmp(p, words[i], len))
                return true;
        p += len - 1;
    }
    return false;
}

/* Integer expression parser: + - * and parentheses, standard precedence. */
struct ap {
    const char *s;
    size_t i, n;
    int depth, ops;
};

static bool ap_expr(struct ap *p, long long *v);

static void ap_ws(struct ap *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
        p->i++;
}

static bool ap_factor(struct ap *p, long long *v)
{
    ap_ws(p);
    if (p->i >= p->n || ++p->depth > 64)
        return false;
    char c = p->s[p->i];
    bool ok = false;
    if (c == '-') {
        long long x;
        p->i++;
        ok = ap_factor(p, &x) && x != LLONG_MIN;
        if (ok)
            *v = -x;
    } else if (c == '(') {
        p->i++;
        ok = ap_expr(p, v);
        ap_ws(p);
        ok = ok && p->i < p->n && p->s[p->i] == ')';
        if (ok)
            p->i++;
    } else if (is_digit(c)) {
        long long x = 0;
        int nd = 0;
        while (p->i < p->n && is_digit(p->s[p->i]) && ++nd <= 18)
            x = x * 10 + (p->s[p->i++] - '0');
        ok = nd <= 18;
        *v = x;
    }
    p->depth--;
    return ok;
}

static bool ap_term(struct ap *p, long long *v)
{
    if (!ap_factor(p, v))
        return false;
    for (;;) {
        size_t save = p->i;
        int ops = p->ops, depth = p->depth;
        long long r, t;
        ap_ws(p);
        if (p->i < p->n && p->s[p->i] == '*') {
            p->i++;
            if (ap_factor(p, &r) && !__builtin_mul_overflow(*v, r, &t)) {
                *v = t;
                p->ops = ops + 1;
                continue;
            }
        }
        p->i = save;
        p->ops = ops;
        p->depth = depth;
        return true;
    }
}

static bool ap_expr(struct ap *p, long long *v)
{
    if (!ap_term(p, v))
        return false;
    for (;;) {
        size_t save = p->i;
        int ops = p->ops, depth = p->depth;
        long long r, t;
        ap_ws(p);
        char c = p->i < p->n ? p->s[p->i] : '\0';
        if (c == '+' || c == '-') {
            p->i++;
            bool ok = ap_term(p, &r);
            ok = ok && !(c == '+' ? __builtin_add_overflow(*v, r, &t)
                                  : __builtin_sub_overflow(*v, r, &t));
            if (ok) {
                *v = t;
                p->ops = ops + 1;
                continue;
            }
        }
        p->i = save;
        p->ops = ops;
        p->depth = depth;
        return true;
    }
}

/* The first expression with at least one operator in s. */
static bool eval_first_expr(const char *s, double *out)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        char c = s[i], prev = i ? s[i - 1] : ' ';
        bool start = (is_digit(c) && !is_digit(prev)) || c == '(' ||
                     (c == '-' && i + 1 < n && is_digit(s[i + 1]) && !is_alpha(prev) &&
                      !is_digit(prev) && prev != ')');
        if (!start)
            continue;
        struct ap p = {.s = s, .i = i, .n = n};
        long long v;
        if (ap_expr(&p, &v) && p.ops > 0) {
            *out = (double)v;
            return true;
        }
    }
    return false;
}

static double truth_for(const char *last_user)
{
    size_t best = 0;
    double ans = 0;
    for (size_t i = 0; i < g_nkey; i++) {
        size_t len = strlen(g_key[i].question);
        if (len > best && strstr(last_user, g_key[i].question)) {
            best = len;
            ans = g_key[i].answer;
        }
    }
    if (best == 0 && !eval_first_expr(last_user, &ans))
        ans = 0;
    return ans;
}

enum nkind { NK_QUESTION, NK_RATING, NK_AGG };

struct nplan {
    enum nkind kind;
    double ans, value; /* value: candidate (rating) or majority (aggregation) */
    bool cand_correct, wrap;
};

static void noisy_plan(const struct msginfo *mi, struct nplan *np)
{
    const char *all = sb_str(&mi->classify);
    np->ans = truth_for(sb_str(&mi->last_user));
    np->wrap = mi->output_tag;
    double last_all = 0, cand;
    size_t n_all = find_answers(all, NULL, 0, &last_all);
    if (n_all > 0 && has_rate_word(all)) {
        struct sbuf lu = {0};
        sb_add(&lu, sb_str(&mi->last_user), mi->last_user.len);
        for (size_t i = 0; i < lu.len; i++)
            lu.p[i] = lower_c(lu.p[i]);
        if (find_answers(sb_str(&lu), NULL, 0, &cand) == 0)
            cand = last_all;
        sb_free(&lu);
        np->kind = NK_RATING;
        np->value = cand;
        np->cand_correct = fabs(cand - np->ans) < 1e-9;
        return;
    }
    np->kind = NK_QUESTION;
    if (n_all < 2)
        return;
    double *vals = malloc(MAX_PHRASES * sizeof(*vals));
    if (!vals)
        return;
    size_t n = find_answers(all, vals, MAX_PHRASES, NULL), best = 0, best_count = 0;
    n = n > MAX_PHRASES ? MAX_PHRASES : n;
    for (size_t i = 0; i < n; i++) {
        size_t count = 0;
        for (size_t j = 0; j < n; j++)
            count += vals[j] == vals[i];
        if (count > best_count) {
            best_count = count;
            best = i;
        }
    }
    np->kind = NK_AGG;
    np->value = vals[best];
    free(vals);
}

static char *noisy_text(const struct nplan *np, const struct opts *o, uint64_t msg_hash,
                        uint64_t ordinal)
{
    uint64_t st = mix_seed(0x4e4f495359ULL, o->seed, msg_hash, ordinal);
    char num[64], buf[256];
    if (np->kind == NK_RATING) {
        bool judged_correct = u01(&st) < o->q ? np->cand_correct : !np->cand_correct;
        return strdup(judged_correct ? "Rating: 9" : "Rating: 2");
    }
    if (np->kind == NK_AGG) {
        fmt_num(np->value, num, sizeof(num));
        if (np->wrap)
            snprintf(buf, sizeof(buf),
                     "<thinking>Combining the candidates.</thinking>\n<reflection>Checked."
                     "</reflection>\n<output>The answer is %s.</output>",
                     num);
        else
            snprintf(buf, sizeof(buf), "Combining the candidates. The answer is %s.", num);
        return strdup(buf);
    }
    double v = np->ans;
    if (u01(&st) >= o->p) {
        long w = 2 * o->spread;
        long d = (long)(u01(&st) * (double)w);
        d = d > w - 1 ? w - 1 : d;
        v += (double)(d < o->spread ? d - o->spread : d - o->spread + 1);
    }
    fmt_num(v, num, sizeof(num));
    if (np->wrap)
        snprintf(buf, sizeof(buf),
                 "<thinking>Working.</thinking>\n<reflection>Checked.</reflection>\n<output>The "
                 "answer is %s.</output>",
                 num);
    else
        snprintf(buf, sizeof(buf), "Let me work it out step by step. The answer is %s.", num);
    return strdup(buf);
}

/* "mock reply <i>: " + the words of text (each cut to 256 bytes) cycled to nwords words. */
static char *plain_text(size_t i, const char *text, long nwords)
{
    struct sbuf b = {0};
    char head[48];
    snprintf(head, sizeof(head), "mock reply %zu: ", i);
    sb_adds(&b, head);
    const char *p = text;
    bool any = false;
    for (long w = 0; w < nwords && !b.oom;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p) {
            text = any ? text : "empty"; /* no words at all: cycle a placeholder */
            p = text;
            continue;
        }
        size_t len = 0;
        while (p[len] && p[len] != ' ' && p[len] != '\t' && p[len] != '\n' && p[len] != '\r')
            len++;
        size_t keep = len;
        if (keep > MAX_WORD_BYTES) {
            keep = MAX_WORD_BYTES;
            while (keep > 0 && ((unsigned char)p[keep] & 0xC0) == 0x80)
                keep--; /* keep UTF-8 valid */
        }
        if (w++ > 0)
            sb_add(&b, " ", 1);
        sb_add(&b, p, keep);
        p += len;
        any = true;
    }
    if (b.oom) {
        sb_free(&b);
        return NULL;
    }
    return b.p;
}

/* ---- chat completions ------------------------------------------------------------------- */

static size_t tokens_of(const char *s)
{
    return 1 + strlen(s) / 4;
}

static cJSON *usage_obj(size_t pt, size_t ct, long reasoning_total)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)pt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)ct);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(pt + ct));
    if (reasoning_total >= 0) {
        cJSON *d = cJSON_AddObjectToObject(u, "completion_tokens_details");
        cJSON_AddNumberToObject(d, "reasoning_tokens", (double)reasoning_total);
    }
    return u;
}

enum phase { PH_ROLE, PH_WORD, PH_FINISH, PH_USAGE, PH_DONE, PH_END, PH_PRE };

struct stream {
    char *id, *model;
    long long created;
    char **texts;
    const char **finish;
    size_t n;
    cJSON *usage; /* NULL unless include_usage */
    int fd;
    long delay_ms;
    bool split;      /* split=1: an event in two writes */
    bool usage_null; /* usage=null: "usage":null on chunks while the usage chunk is due */
    enum phase phase;
    size_t choice, off, events;
    char *pending;
    size_t plen, ppos;
    struct hostile h;
    char **pre; /* PH_PRE: prepared events (tool calls), sent before the usage chunk */
    size_t npre, ipre;
    size_t piece_bytes; /* plugins1: content chunks of this size; 0 = one per word */
};

static void free_texts(char **texts, size_t n)
{
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
}

static void stream_free(void *cls)
{
    struct stream *s = cls;
    free(s->id);
    free(s->model);
    free_texts(s->texts, s->n);
    free(s->finish);
    cJSON_Delete(s->usage);
    free(s->pending);
    hostile_free(&s->h);
    free_texts(s->pre, s->npre);
    free(s);
}

static char *sse_event(const struct stream *s, cJSON *choices, cJSON *usage)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", s->id);
    cJSON_AddStringToObject(o, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(o, "created", (double)s->created);
    cJSON_AddStringToObject(o, "model", s->model);
    cJSON_AddItemToObject(o, "choices", choices);
    if (usage)
        cJSON_AddItemToObject(o, "usage", usage);
    else if (s->usage_null && s->usage)
        cJSON_AddNullToObject(o, "usage");
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!js)
        return NULL;
    size_t n = strlen(js);
    char *ev = malloc(n + 9);
    if (ev) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, js, n);
        memcpy(ev + 6 + n, "\n\n", 3);
    }
    cJSON_free(js);
    return ev;
}

static char *delta_event(const struct stream *s, size_t idx, bool role, const char *content,
                         size_t clen, const char *finish)
{
    cJSON *arr = cJSON_CreateArray(), *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, ch);
    cJSON_AddNumberToObject(ch, "index", (double)idx);
    cJSON *delta = cJSON_AddObjectToObject(ch, "delta");
    if (role)
        cJSON_AddStringToObject(delta, "role", "assistant");
    if (content) {
        char *piece = malloc(clen + 1);
        if (piece) {
            memcpy(piece, content, clen);
            piece[clen] = '\0';
            cJSON_AddStringToObject(delta, "content", piece);
            free(piece);
        }
    }
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    return sse_event(s, arr, NULL);
}

/* The next SSE event; NULL at the end (phase PH_END) or on allocation failure. */
static char *next_event(struct stream *s)
{
    for (;;) {
        switch (s->phase) {
        case PH_ROLE:
            s->phase = PH_WORD;
            s->off = 0;
            return delta_event(s, s->choice, true, "", 0, NULL);
        case PH_WORD: {
            const char *t = s->texts[s->choice];
            if (t[s->off]) {
                size_t end = s->off;
                if (s->piece_bytes > 0) { /* plugins1: fixed-size pieces */
                    size_t len = strlen(t);
                    end = s->off + s->piece_bytes < len ? s->off + s->piece_bytes : len;
                    while (end > s->off + 1 && end < len && ((unsigned char)t[end] & 0xC0) == 0x80)
                        end--;
                }
                while (s->piece_bytes == 0 && t[end] && t[end] != ' ')
                    end++;
                while (s->piece_bytes == 0 && t[end] == ' ')
                    end++;
                size_t start = s->off;
                s->off = end;
                return delta_event(s, s->choice, false, t + start, end - start, NULL);
            }
            if (++s->choice < s->n) {
                s->phase = PH_ROLE;
            } else {
                s->phase = PH_FINISH;
                s->choice = 0;
            }
            continue;
        }
        case PH_FINISH:
            if (s->choice < s->n) {
                size_t i = s->choice++;
                return delta_event(s, i, false, NULL, 0, s->finish[i]);
            }
            s->phase = PH_USAGE;
            continue;
        case PH_USAGE:
            s->phase = PH_DONE;
            if (s->usage) {
                cJSON *u = s->usage;
                s->usage = NULL;
                return sse_event(s, cJSON_CreateArray(), u);
            }
            continue;
        case PH_DONE:
            s->phase = PH_END;
            return strdup("data: [DONE]\n\n");
        case PH_END:
            return NULL;
        case PH_PRE:
            if (s->ipre < s->npre) {
                char *ev = s->pre[s->ipre];
                s->pre[s->ipre++] = NULL;
                return ev;
            }
            s->phase = PH_USAGE;
            continue;
        }
    }
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *s = cls;
    (void)pos;
    if (!s->pending) {
        if (s->phase == PH_END)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (s->h.cut > 0 && s->events >= (size_t)s->h.cut) /* hostile: cut */
            return s->h.cut_abort ? MHD_CONTENT_READER_END_WITH_ERROR
                                  : MHD_CONTENT_READER_END_OF_STREAM;
        if (s->events > 0 && s->delay_ms > 0 && !sleep_watch(s->fd, s->delay_ms))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        s->pending = next_event(s);
        if (!s->pending)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        s->events++;
        s->plen = strlen(s->pending);
        s->ppos = 0;
        if (s->h.cut_mid && s->h.cut > 0 && s->events == (size_t)s->h.cut)
            s->plen /= 2;                           /* hostile: the last event stops mid-line */
        if (s->h.nolastnl && s->phase == PH_DONE) { /* hostile: no [DONE], no last newline */
            while (s->plen && s->pending[s->plen - 1] == '\n')
                s->plen--;
            s->phase = PH_END;
        }
    }
    if (s->split && s->ppos > 0 && !sleep_watch(s->fd, 20))
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t k = s->plen - s->ppos;
    if (s->split && s->ppos == 0 && s->plen > 1)
        k = s->plen / 2;
    k = k > max ? max : k;
    memcpy(buf, s->pending + s->ppos, k);
    s->ppos += k;
    if (s->ppos == s->plen) {
        free(s->pending);
        s->pending = NULL;
    }
    return (ssize_t)k;
}

static enum MHD_Result send_stream(struct MHD_Connection *c, struct stream *s)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, (size_t)4096,
                                                                  stream_reader, s, stream_free);
    if (!resp) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    hostile_headers(resp, &s->h);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Rejects bodies nested deeper than max (keeps cJSON recursion within the small stacks). */
static bool json_depth_ok(const char *s, size_t n, int max)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

/* Decides fail_first / fail_rate for this raw body. */
static bool injected_failure(const struct req *r, const struct opts *o)
{
    if (o->fail_first <= 0 && o->fail_rate <= 0)
        return false;
    uint64_t h = fnv1a(FNV_INIT, sb_str(&r->body), r->body.len), ord = 0;
    pthread_mutex_lock(&g.mu);
    uint64_t *slot = map_slot(&g.body_calls, h);
    if (slot)
        ord = (*slot)++;
    pthread_mutex_unlock(&g.mu);
    if (o->fail_first > 0 && ord < (uint64_t)o->fail_first)
        return true;
    uint64_t st = mix_seed(0x4641494cULL, o->seed, h, ord);
    return o->fail_rate > 0 && u01(&st) < o->fail_rate;
}

/* ---- front doors: tool calls, embeddings, legacy completions ---------------------------- */

#define TOOL_ARGS "{\"location\":\"Paris\",\"unit\":\"celsius\"}"

static void sb_event(struct sbuf *b, cJSON *o)
{
    char *js = cJSON_PrintUnformatted(o);
    sb_adds(b, "data: ");
    sb_adds(b, js ? js : "{}");
    sb_adds(b, "\n\n");
    cJSON_free(js);
    cJSON_Delete(o);
}

static cJSON *tool_chunk(const char *model, const char *id)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    cJSON_AddStringToObject(o, "model", model);
    return o;
}

/* The tool=NAME answer: one call to NAME with TOOL_ARGS, JSON or SSE (all events at once). */
static enum MHD_Result tool_answer(struct MHD_Connection *c, const cJSON *root, const char *model,
                                   const char *name, size_t pt)
{
    bool stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    bool usage =
        !stream || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                       cJSON_GetObjectItemCaseSensitive(root, "stream_options"), "include_usage"));
    size_t ct = 1 + strlen(TOOL_ARGS) / 4;
    char id[48];

    pthread_mutex_lock(&g.mu);
    snprintf(id, sizeof(id), "mockcmpl-%llu", ++g.cmpl_id);
    g.choices++;
    if (usage) {
        g.prompt_tokens += pt;
        g.completion_tokens += ct;
    }
    pthread_mutex_unlock(&g.mu);
    if (!stream) {
        cJSON *resp = tool_chunk(model, id);
        cJSON_ReplaceItemInObject(resp, "object", cJSON_CreateString("chat.completion"));
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(resp, "choices"), ch);
        cJSON_AddNumberToObject(ch, "index", 0);
        cJSON *m = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddNullToObject(m, "content");
        cJSON *call = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(m, "tool_calls"), call);
        cJSON_AddStringToObject(call, "id", "call_mock_1");
        cJSON_AddStringToObject(call, "type", "function");
        cJSON *f = cJSON_AddObjectToObject(call, "function");
        cJSON_AddStringToObject(f, "name", name);
        cJSON_AddStringToObject(f, "arguments", TOOL_ARGS);
        cJSON_AddStringToObject(ch, "finish_reason", "tool_calls");
        cJSON_AddItemToObject(resp, "usage", usage_obj(pt, ct, -1));
        return send_json(c, MHD_HTTP_OK, resp, NULL);
    }
    struct sbuf b = {0};
    static const char *const frags[] = {"{\"location\":", "\"Paris\",\"unit\"", ":\"celsius\"}"};
    for (int step = 0; step < 6; step++) {
        cJSON *o = tool_chunk(model, id);
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), ch);
        cJSON_AddNumberToObject(ch, "index", 0);
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (step == 0) {
            cJSON_AddStringToObject(d, "role", "assistant");
            cJSON_AddNullToObject(d, "content");
        } else if (step <= 4) {
            cJSON *call = cJSON_CreateObject();
            cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), call);
            cJSON_AddNumberToObject(call, "index", 0);
            cJSON *f = cJSON_CreateObject();
            if (step == 1) {
                cJSON_AddStringToObject(call, "id", "call_mock_1");
                cJSON_AddStringToObject(call, "type", "function");
                cJSON_AddStringToObject(f, "name", name);
                cJSON_AddStringToObject(f, "arguments", "");
            } else {
                cJSON_AddStringToObject(f, "arguments", frags[step - 2]);
            }
            cJSON_AddItemToObject(call, "function", f);
        }
        if (step == 5)
            cJSON_AddStringToObject(ch, "finish_reason", "tool_calls");
        else
            cJSON_AddNullToObject(ch, "finish_reason");
        sb_event(&b, o);
    }
    if (usage) {
        cJSON *o = tool_chunk(model, id);
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", usage_obj(pt, ct, -1));
        sb_event(&b, o);
    }
    sb_adds(&b, "data: [DONE]\n\n");
    enum MHD_Result ret = send_body(c, MHD_HTTP_OK, "text/event-stream", sb_str(&b), NULL);
    sb_free(&b);
    return ret;
}

/* POST /v1/embeddings and /v1/completions: fixed answers echoing the raw body. */
static enum MHD_Result handle_legacy(struct MHD_Connection *c, struct req *r)
{
    char *cred = credential(c);
    cJSON *root = NULL;
    if (!cred)
        return MHD_NO;
    if (!r->too_large && json_depth_ok(sb_str(&r->body), r->body.len, MAX_JSON_DEPTH))
        root = cJSON_ParseWithLength(sb_str(&r->body), r->body.len);
    account_request(r, c, cred, root != NULL);
    free(cred);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return counted_error(c, 400, "We could not parse the JSON body of your request.",
                             "invalid_request_error", NULL, NULL, NULL);
    }
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *model = cJSON_IsString(jm) ? jm->valuestring : "mock-model";
    const char *at = strstr(model, "@status=");
    if (at) {
        long st = 0;
        bool ok = parse_long(at + 8, 400, 599, &st);
        cJSON_Delete(root);
        if (ok)
            return mock_status_error(c, st, NULL);
        return counted_error(c, 400, "mock: bad status", "invalid_request_error", "model", NULL,
                             NULL);
    }
    cJSON *resp = cJSON_CreateObject();
    enum MHD_Result ret;
    if (r->route == R_EMBED) {
        cJSON_AddStringToObject(resp, "object", "list");
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(resp, "data"), e);
        cJSON_AddStringToObject(e, "object", "embedding");
        cJSON_AddNumberToObject(e, "index", 0);
        const double v[3] = {0.1, 0.2, 0.3};
        cJSON_AddItemToObject(e, "embedding", cJSON_CreateDoubleArray(v, 3));
        cJSON_AddStringToObject(resp, "model", model);
        cJSON_AddItemToObject(resp, "usage", usage_obj(1 + r->body.len / 4, 0, -1));
        cJSON_AddStringToObject(resp, "mock_raw_body", sb_str(&r->body));
        ret = send_json(c, MHD_HTTP_OK, resp, NULL);
        cJSON_Delete(root);
        return ret;
    }
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    char text[512];
    snprintf(text, sizeof(text), "mock completion: %.400s",
             cJSON_IsString(jp) ? jp->valuestring : "");
    cJSON_AddStringToObject(resp, "id", "cmpl-mock");
    cJSON_AddStringToObject(resp, "object", "text_completion");
    cJSON_AddNumberToObject(resp, "created", (double)time(NULL));
    cJSON_AddStringToObject(resp, "model", model);
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(resp, "choices"), ch);
    cJSON_AddStringToObject(ch, "text", text);
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddStringToObject(ch, "finish_reason", "stop");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"))) {
        struct sbuf b = {0};
        cJSON_DetachItemFromObject(resp, "usage");
        sb_event(&b, resp);
        sb_adds(&b, "data: [DONE]\n\n");
        ret = send_body(c, MHD_HTTP_OK, "text/event-stream", sb_str(&b), NULL);
        sb_free(&b);
    } else {
        cJSON_AddItemToObject(resp, "usage",
                              usage_obj(1 + r->body.len / 4, 1 + strlen(text) / 4, -1));
        cJSON_AddStringToObject(resp, "mock_raw_body", sb_str(&r->body));
        ret = send_json(c, MHD_HTTP_OK, resp, NULL);
    }
    cJSON_Delete(root);
    return ret;
}

/* ---- mcp block: a model that calls a named tool (the mcp plugin's tests) -------------------- */

/* With mcp_tool=NAME (not streamed): while "tools" offers NAME and the conversation has no
 * tool message yet (or always, with mcp_loop=1), the answer is mcp_calls (default 1) calls of
 * NAME with arguments mcp_args (default {}), ids call_mcp_<j>; otherwise the text
 * "tool said: " + every tool message's content (each cut to 1000 bytes) joined by " | ", or
 * "no tool" when there is none. Usage: prompt 10, completion 5. */
static enum MHD_Result mcp_answer(struct MHD_Connection *c, const cJSON *root, const struct opts *o,
                                  const char *model)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *m, *t;
    bool offered = false, tool_turn = false;
    cJSON *resp = cJSON_CreateObject(), *ch, *msg, *u;
    struct sbuf said = {0};

    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
        offered = offered || (cJSON_IsString(n) && !strcmp(n->valuestring, o->mcp_tool));
    }
    sb_add(&said, "tool said: ", 11);
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(root, "messages"))
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role) || strcmp(role->valuestring, "tool"))
            continue;
        if (tool_turn)
            sb_add(&said, " | ", 3);
        tool_turn = true;
        if (cJSON_IsString(content)) {
            size_t len = strlen(content->valuestring);
            sb_add(&said, content->valuestring, len > 1000 ? 1000 : len);
        }
    }
    cJSON_AddStringToObject(resp, "id", "mockcmpl-mcp");
    cJSON_AddStringToObject(resp, "object", "chat.completion");
    cJSON_AddNumberToObject(resp, "created", (double)time(NULL));
    cJSON_AddStringToObject(resp, "model", model);
    ch = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(resp, "choices"), ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    msg = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    if (offered && (!tool_turn || o->mcp_loop)) {
        cJSON *calls = cJSON_AddArrayToObject(msg, "tool_calls");
        cJSON_AddNullToObject(msg, "content");
        for (long j = 0; j < (o->mcp_calls > 0 ? o->mcp_calls : 1); j++) {
            cJSON *tc = cJSON_CreateObject(), *fn;
            char id[40];
            snprintf(id, sizeof(id), "call_mcp_%ld", j);
            cJSON_AddStringToObject(tc, "id", id);
            cJSON_AddStringToObject(tc, "type", "function");
            fn = cJSON_AddObjectToObject(tc, "function");
            cJSON_AddStringToObject(fn, "name", o->mcp_tool);
            cJSON_AddStringToObject(fn, "arguments", o->mcp_args ? o->mcp_args : "{}");
            cJSON_AddItemToArray(calls, tc);
        }
        cJSON_AddStringToObject(ch, "finish_reason", "tool_calls");
    } else {
        cJSON_AddStringToObject(msg, "content", tool_turn ? sb_str(&said) : "no tool");
        cJSON_AddStringToObject(ch, "finish_reason", "stop");
    }
    u = cJSON_AddObjectToObject(resp, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", 10);
    cJSON_AddNumberToObject(u, "completion_tokens", 5);
    cJSON_AddNumberToObject(u, "total_tokens", 15);
    sb_free(&said);
    pthread_mutex_lock(&g.mu);
    g.choices++;
    g.prompt_tokens += 10;
    g.completion_tokens += 5;
    pthread_mutex_unlock(&g.mu);
    return send_json(c, MHD_HTTP_OK, resp, NULL);
}

/* ---- tools and response_format (see the header) ------------------------------------------ */

struct fields_mode {
    const char *tool; /* the first tool's name when choices are tool calls, else NULL */
    bool json;        /* response_format json_object / json_schema */
};

static void fields_mode(const cJSON *root, struct fields_mode *fm)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    const cJSON *m;
    bool tool_turn = false;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");

    memset(fm, 0, sizeof(*fm));
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        tool_turn = tool_turn || (cJSON_IsString(role) && !strcmp(role->valuestring, "tool"));
    }
    if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0 && !tool_turn) {
        const cJSON *fn =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tools, 0), "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        fm->tool = cJSON_IsString(name) ? name->valuestring : "tool";
        return;
    }
    fm->json = cJSON_IsString(type) && (!strcmp(type->valuestring, "json_object") ||
                                        !strcmp(type->valuestring, "json_schema"));
}

/* Replaces choice i's text: the tool call's arguments, or {"answer": text}. NULL on OOM. */
static char *fields_text(const struct fields_mode *fm, size_t i, char *text, const char *last_user)
{
    cJSON *o = cJSON_CreateObject();
    char *out;

    if (fm->tool) {
        char q[65];
        size_t len = strlen(last_user) > 64 ? 64 : strlen(last_user);
        while (len > 0 && ((unsigned char)last_user[len] & 0xC0) == 0x80)
            len--; /* keep UTF-8 valid */
        memcpy(q, last_user, len);
        q[len] = '\0';
        if (i % 2 == 0) {
            cJSON_AddStringToObject(o, "q", q);
            cJSON_AddNumberToObject(o, "k", 1);
        } else {
            cJSON_AddNumberToObject(o, "k", 1);
            cJSON_AddStringToObject(o, "q", q);
        }
    } else if (fm->json) {
        cJSON_AddStringToObject(o, "answer", text);
    } else {
        cJSON_Delete(o);
        return text;
    }
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    out = js ? strdup(js) : NULL;
    cJSON_free(js);
    free(text);
    return out;
}

/* Choice i's tool_calls array (arguments = its text); with 'stream', the first fragment's
 * form: index, id, type, name and empty arguments. */
static cJSON *fields_calls(const struct fields_mode *fm, size_t i, const char *args, bool stream)
{
    cJSON *arr = cJSON_CreateArray(), *tc = cJSON_CreateObject(), *fn;
    char id[40];

    snprintf(id, sizeof(id), "call_mock_%zu", i);
    cJSON_AddItemToArray(arr, tc);
    if (stream)
        cJSON_AddNumberToObject(tc, "index", 0);
    cJSON_AddStringToObject(tc, "id", id);
    cJSON_AddStringToObject(tc, "type", "function");
    fn = cJSON_AddObjectToObject(tc, "function");
    cJSON_AddStringToObject(fn, "name", fm->tool);
    cJSON_AddStringToObject(fn, "arguments", stream ? "" : args);
    return arr;
}

/* One streamed chunk for choice i: a delta (role + first fragment, or an argument fragment)
 * or, with 'finish', the finish chunk. */
static char *fields_event(const struct stream *s, size_t i, cJSON *delta_calls, bool role,
                          const char *finish)
{
    cJSON *arr = cJSON_CreateArray(), *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, ch);
    cJSON_AddNumberToObject(ch, "index", (double)i);
    cJSON *delta = cJSON_AddObjectToObject(ch, "delta");
    if (role) {
        cJSON_AddStringToObject(delta, "role", "assistant");
        cJSON_AddNullToObject(delta, "content");
    }
    if (delta_calls)
        cJSON_AddItemToObject(delta, "tool_calls", delta_calls);
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    return sse_event(s, arr, NULL);
}

/* Choice i's logprobs: one "token", its whole text (see the header). */
static cJSON *fields_logprobs(size_t i, const char *text)
{
    cJSON *lp = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(lp, "content");
    cJSON *t = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, t);
    cJSON_AddStringToObject(t, "token", text);
    cJSON_AddNumberToObject(t, "logprob", -(double)(i + 1));
    cJSON_AddNullToObject(t, "bytes");
    cJSON_AddArrayToObject(t, "top_logprobs");
    cJSON_AddNullToObject(lp, "refusal");
    return lp;
}

/* The whole tool-call stream of every choice, as prepared events. false on OOM. */
static bool fields_stream(struct stream *s, const struct fields_mode *fm)
{
    s->pre = calloc(s->n * 4, sizeof(*s->pre));
    if (!s->pre)
        return false;
    for (size_t i = 0; i < s->n; i++) {
        const char *a = s->texts[i];
        size_t half = strlen(a) / 2;
        s->pre[s->npre++] = fields_event(s, i, fields_calls(fm, i, a, true), true, NULL);
        for (int part = 0; part < 2; part++) {
            cJSON *arr = cJSON_CreateArray(), *tc = cJSON_CreateObject();
            char *frag = part ? strdup(a + half) : strndup(a, half);
            cJSON_AddItemToArray(arr, tc);
            cJSON_AddNumberToObject(tc, "index", 0);
            cJSON_AddStringToObject(cJSON_AddObjectToObject(tc, "function"), "arguments",
                                    frag ? frag : "");
            free(frag);
            s->pre[s->npre++] = fields_event(s, i, arr, false, NULL);
        }
    }
    for (size_t i = 0; i < s->n; i++)
        s->pre[s->npre++] = fields_event(s, i, NULL, false, "tool_calls");
    for (size_t i = 0; i < s->npre; i++)
        if (!s->pre[i])
            return false;
    s->phase = PH_PRE;
    return true;
}

static enum MHD_Result handle_chat(struct MHD_Connection *c, struct req *r)
{
    cJSON *root = NULL;
    struct opts o = {0};
    struct msginfo mi = {0};
    char **texts = NULL;
    const char **finish = NULL;
    char err[320], ra[24];
    const char *retry = NULL, *msg;
    enum MHD_Result ret = MHD_NO;
    size_t n = 1;

    char *cred = credential(c);
    if (!cred)
        return MHD_NO;
    if (!r->too_large && json_depth_ok(sb_str(&r->body), r->body.len, MAX_JSON_DEPTH))
        root = cJSON_ParseWithLength(sb_str(&r->body), r->body.len);
    if (!r->counted) /* --event-loop: counted before the suspended wait already */
        account_request(r, c, cred, root != NULL);
    free(cred);
    if (r->too_large) {
        ret = counted_error(c, 413, "Request body too large", "invalid_request_error", NULL, NULL,
                            NULL);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        ret = counted_error(c, 400, "We could not parse the JSON body of your request.",
                            "invalid_request_error", NULL, NULL, NULL);
        goto out;
    }
    const cJSON *jmodel = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *model = cJSON_IsString(jmodel) ? jmodel->valuestring : "mock-model";
    msg = parse_opts(model, &o, err, sizeof(err));
    cur_hostile = &o.h;
    cur_seq = r->seq;
    if (msg) {
        ret = counted_error(c, 400, msg, "invalid_request_error", "model", NULL, NULL);
        goto out;
    }
    if (o.retry_after > 0) {
        snprintf(ra, sizeof(ra), "%ld", o.retry_after);
        retry = ra;
    }
    if (!key_ok(c, o.require_key)) {
        ret = counted_error(c, 401, "Incorrect API key provided", "invalid_request_error", NULL,
                            "invalid_api_key", NULL);
        goto out;
    }
    msg = collect_messages(cJSON_GetObjectItemCaseSensitive(root, "messages"), model, &mi);
    if (msg) {
        ret = counted_error(c, 400, msg, "invalid_request_error", "messages", NULL, NULL);
        goto out;
    }
    if (o.latency > 0 && g_event_loop && !r->delayed) {
        r->delayed = true; /* the handler runs again on resume and answers */
        MHD_suspend_connection(c);
        if (!dl_push(mono_ms() + o.latency, c))
            MHD_resume_connection(c);
        ret = MHD_YES;
        goto out;
    }
    if (o.latency > 0 && !r->delayed && !sleep_watch(conn_fd(c), o.latency))
        goto out; /* client gone or shutting down: close without a response */
    if (o.drop) {
        r->dropped = true;
        pthread_mutex_lock(&g.mu);
        g.dropped++;
        pthread_mutex_unlock(&g.mu);
        goto out;
    }
    if (o.status > 0 && o.errmsg) { /* secparse: errmsg=TEXT */
        char code[32];
        snprintf(code, sizeof(code), "mock_%ld", o.status);
        ret = counted_error(c, (unsigned int)o.status, o.errmsg, "invalid_request_error", NULL,
                            code, retry);
        goto out;
    }
    if (o.reject_so && cJSON_GetObjectItemCaseSensitive(root, "stream_options")) {
        ret = counted_error(c, 400, "Unrecognized request argument supplied: stream_options",
                            "invalid_request_error", NULL, NULL, NULL);
        goto out;
    }
    if (o.status > 0) {
        ret = o.errbody ? errbody_error(c, o.status, o.errbody, retry)
                        : mock_status_error(c, o.status, retry);
        goto out;
    }
    if (injected_failure(r, &o)) {
        ret = mock_status_error(c, 500, retry);
        goto out;
    }
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(root, "n");
    if (jn && !cJSON_IsNull(jn)) {
        if (!cJSON_IsNumber(jn) || jn->valuedouble < 1 || jn->valuedouble > MAX_N ||
            jn->valuedouble != floor(jn->valuedouble)) {
            ret = counted_error(c, 400, "'n' must be an integer between 1 and 128",
                                "invalid_request_error", "n", NULL, NULL);
            goto out;
        }
        n = (size_t)jn->valuedouble;
    }
    if (n > 1 && (o.n_mode == N_REFUSE || o.n_mode == N_REFUSE500)) {
        ret = counted_error(c, o.n_mode == N_REFUSE ? 400 : 500,
                            "Only one completion choice is allowed", "invalid_request_error", "n",
                            NULL, NULL);
        goto out;
    }
    if (o.n_mode == N_IGNORE)
        n = 1;
    if (o.h.errbody200) { /* hostile: a 200 whose body is an error */
        ret =
            send_error(c, 200, "mock error in a 200 body", "server_error", NULL, "mock_200", NULL);
        goto out;
    }
    long max_tokens = 0;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (!cJSON_IsNumber(mt))
        mt = cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens");
    if (cJSON_IsNumber(mt) && mt->valuedouble >= 1)
        max_tokens = mt->valuedouble > 1e9 ? 1000000000L : (long)mt->valuedouble;

    if (o.tool) {
        ret = tool_answer(c, root, model, o.tool, 1 + mi.prompt_bytes / 4);
        goto out;
    }
    /* Generate the choices. */
    texts = calloc(n, sizeof(*texts));
    finish = calloc(n, sizeof(*finish));
    if (!texts || !finish)
        goto out;
    struct nplan np = {0};
    uint64_t ord0 = 0;
    bool noisy = o.noisy && !o.reply;
    if (noisy) {
        noisy_plan(&mi, &np);
        pthread_mutex_lock(&g.mu);
        uint64_t *slot = map_slot(&g.ordinals, mi.hash);
        if (slot) {
            ord0 = *slot;
            *slot += n;
        }
        pthread_mutex_unlock(&g.mu);
    }
    size_t ct = 0, pt = 1 + mi.prompt_bytes / 4;
    struct fields_mode fm;
    fields_mode(root, &fm);
    for (size_t i = 0; i < n; i++) {
        texts[i] = o.reply ? strdup(o.reply)
                   : noisy ? noisy_text(&np, &o, mi.hash, ord0 + i)
                           : plain_text(i, sb_str(&mi.last_user), o.words);
        if (texts[i])
            texts[i] = fields_text(&fm, i, texts[i], sb_str(&mi.last_user));
        if (!texts[i])
            goto out;
        if (o.json_bad > 0) { /* plugins1: a model that ignores the schema K times */
            bool bad;
            pthread_mutex_lock(&g.mu);
            bad = g.json_bad_seen++ < (unsigned long long)o.json_bad;
            pthread_mutex_unlock(&g.mu);
            if (bad) {
                free(texts[i]);
                texts[i] = strdup("{\"note\":\"mock non-compliance\"}");
                if (!texts[i])
                    goto out;
            }
        }
        finish[i] = "stop";
        size_t len = strlen(texts[i]);
        if (max_tokens > 0 && 1 + len / 4 > (size_t)max_tokens) {
            size_t cut = (size_t)max_tokens * 4;
            while (cut > 0 && ((unsigned char)texts[i][cut] & 0xC0) == 0x80)
                cut--; /* keep UTF-8 valid */
            texts[i][cut] = '\0';
            finish[i] = "length";
        }
        ct += tokens_of(texts[i]);
    }
    long rt = o.reasoning >= 0 ? o.reasoning * (long)n : -1;
    bool stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    bool asked_stream = stream;
    stream = stream && !o.h.ignore_stream; /* hostile: JSON to a stream request */
    bool usage = !o.no_usage &&
                 (!asked_stream ||
                  cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                      cJSON_GetObjectItemCaseSensitive(root, "stream_options"), "include_usage")));
    char id[48];
    if (o.mcp_tool && !stream) { /* mcp block */
        ret = mcp_answer(c, root, &o, model);
        goto out;
    }
    pthread_mutex_lock(&g.mu);
    snprintf(id, sizeof(id), "mockcmpl-%llu", ++g.cmpl_id);
    g.choices += n;
    if (usage) {
        g.prompt_tokens += pt;
        g.completion_tokens += ct;
        g.reasoning_tokens += rt > 0 ? (unsigned long long)rt : 0;
    }
    pthread_mutex_unlock(&g.mu);

    if (stream) {
        struct stream *s = calloc(1, sizeof(*s));
        if (!s)
            goto out;
        s->id = strdup(id);
        s->model = strdup(model);
        s->created = (long long)time(NULL);
        s->texts = texts;
        s->finish = finish;
        s->n = n;
        s->usage = usage ? hostile_usage(usage_obj(pt, ct, rt), &o.h) : NULL;
        hostile_copy(&s->h, &o.h);
        s->fd = conn_fd(c);
        s->delay_ms = o.chunk_delay;
        s->split = o.split;
        s->usage_null = o.usage_null;
        s->piece_bytes = (size_t)o.piece_bytes; /* plugins1 */
        texts = NULL;
        finish = NULL;
        if (!s->id || !s->model || (fm.tool && !fields_stream(s, &fm))) {
            stream_free(s);
            goto out;
        }
        ret = send_stream(c, s);
        goto out;
    }
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddStringToObject(resp, "id", id);
    cJSON_AddStringToObject(resp, "object", "chat.completion");
    cJSON_AddNumberToObject(resp, "created", (double)time(NULL));
    cJSON_AddStringToObject(resp, "model", model);
    cJSON *choices = cJSON_AddArrayToObject(resp, "choices");
    for (size_t i = 0; i < n; i++) {
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, ch);
        cJSON_AddNumberToObject(ch, "index", (double)i);
        cJSON *m = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        if (fm.tool) {
            cJSON_AddNullToObject(m, "content");
            cJSON_AddItemToObject(m, "tool_calls", fields_calls(&fm, i, texts[i], false));
            finish[i] = "tool_calls";
        } else {
            cJSON_AddStringToObject(m, "content", texts[i]);
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "logprobs")))
                cJSON_AddItemToObject(ch, "logprobs", fields_logprobs(i, texts[i]));
        }
        cJSON_AddStringToObject(ch, "finish_reason", finish[i]);
    }
    if (usage) {
        cJSON_AddItemToObject(resp, "usage", hostile_usage(usage_obj(pt, ct, rt), &o.h));
        if (o.usage_prompt >= 0) /* secparse: usage_prompt=X */
            cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(resp, "usage"),
                                                   "prompt_tokens",
                                                   cJSON_CreateNumber(o.usage_prompt));
    }
    ret = send_json(c, MHD_HTTP_OK, resp, NULL);
out:
    free_texts(texts, n);
    free(finish);
    cJSON_Delete(root);
    sb_free(&mi.last_user);
    sb_free(&mi.classify);
    free(o.require_key);
    free(o.reply);
    hostile_free(&o.h);
    cur_hostile = NULL;
    free(o.tool);
    free(o.errmsg);
    free(o.mcp_tool); /* mcp block */
    free(o.mcp_args);
    return ret;
}

/* ---- other endpoints -------------------------------------------------------------------- */

static enum MHD_Result handle_models(struct MHD_Connection *c)
{
    pthread_mutex_lock(&g.mu);
    g.models_calls++;
    char *key = g.cfg.require_key ? strdup(g.cfg.require_key) : NULL;
    pthread_mutex_unlock(&g.mu);
    bool ok = key_ok(c, key);
    free(key);
    if (!ok)
        return counted_error(c, 401, "Incorrect API key provided", "invalid_request_error", NULL,
                             "invalid_api_key", NULL);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    static const char *const ids[] = {"mock-model", "mock-model-2"};
    for (int i = 0; i < 2; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToArray(data, m);
        cJSON_AddStringToObject(m, "id", ids[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "mock");
    }
    return send_json(c, MHD_HTTP_OK, root, NULL);
}

static enum MHD_Result handle_stats(struct MHD_Connection *c)
{
    cJSON *root = cJSON_CreateObject();
    pthread_mutex_lock(&g.mu);
    const struct {
        const char *name;
        unsigned long long v;
    } nums[] = {{"calls", g.calls},
                {"choices", g.choices},
                {"in_flight", g.in_flight},
                {"peak_concurrency", g.peak},
                {"prompt_tokens", g.prompt_tokens},
                {"completion_tokens", g.completion_tokens},
                {"reasoning_tokens", g.reasoning_tokens},
                {"errors", g.errors},
                {"aborted", g.aborted},
                {"dropped", g.dropped},
                {"models_calls", g.models_calls}};
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        cJSON_AddNumberToObject(root, nums[i].name, (double)nums[i].v);
    cJSON *keys = cJSON_AddArrayToObject(root, "keys");
    for (size_t i = 0; i < g.nkeys; i++)
        cJSON_AddItemToArray(keys, cJSON_CreateString(g.keys[i]));
    pthread_mutex_unlock(&g.mu);
    return send_json(c, MHD_HTTP_OK, root, NULL);
}

/* ---- plugins1: POST /analyze, a fixed-gazetteer NER service ---------------------------------- */

static enum MHD_Result handle_analyze(struct MHD_Connection *c, struct req *r)
{
    static const struct {
        const char *name, *type;
        double score;
    } gaz[] = {{"Alice Martin", "PERSON", 0.85}, {"Zo\xc3\xab M\xc3\xbcller", "PERSON", 0.85},
               {"Lyon", "LOCATION", 0.85},       {"Ireland", "GPE", 0.85},
               {"Acme", "ORGANIZATION", 0.85},   {"Maybe", "PERSON", 0.3}};
    cJSON *root = cJSON_Parse(sb_str(&r->body));
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "text"));
    cJSON *out;

    if (!text) {
        cJSON_Delete(root);
        return send_error(c, 400, "text is required", "invalid_request_error", NULL, NULL, NULL);
    }
    out = cJSON_CreateArray();
    for (size_t k = 0; k < sizeof(gaz) / sizeof(gaz[0]); k++) {
        for (const char *p = strstr(text, gaz[k].name); p; p = strstr(p + 1, gaz[k].name)) {
            size_t cp = 0, len = 0;
            cJSON *e = cJSON_CreateObject();

            for (const char *q = text; q < p; q++)
                cp += ((unsigned char)*q & 0xC0) != 0x80;
            for (const char *q = gaz[k].name; *q; q++)
                len += ((unsigned char)*q & 0xC0) != 0x80;
            cJSON_AddStringToObject(e, "entity_type", gaz[k].type);
            cJSON_AddNumberToObject(e, "start", (double)cp);
            cJSON_AddNumberToObject(e, "end", (double)(cp + len));
            cJSON_AddNumberToObject(e, "score", gaz[k].score);
            cJSON_AddItemToArray(out, e);
        }
    }
    cJSON_Delete(root);
    return send_json(c, MHD_HTTP_OK, out, NULL);
}

/* ---- end plugins1 ---- */

static enum MHD_Result handle_requests(struct MHD_Connection *c)
{
    cJSON *arr = cJSON_CreateArray();
    pthread_mutex_lock(&g.mu);
    uint64_t first = g.seq > LOG_CAP ? g.seq - LOG_CAP + 1 : 1;
    for (uint64_t seq = first; seq <= g.seq; seq++) {
        const struct logent *e = &g.log[(seq - 1) % LOG_CAP];
        if (!e->used || e->seq != seq)
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddNumberToObject(o, "seq", (double)e->seq);
        cJSON_AddNumberToObject(o, "start_ms", (double)e->start_ms);
        if (e->end_ms >= 0)
            cJSON_AddNumberToObject(o, "end_ms", (double)e->end_ms);
        else
            cJSON_AddNullToObject(o, "end_ms");
        cJSON_AddStringToObject(o, "auth", e->auth ? e->auth : "");
        cJSON *body = e->body_json ? cJSON_Parse(e->body) : NULL;
        if (!body && e->body)
            body = cJSON_CreateString(e->body);
        if (!body) {
            body = cJSON_CreateObject();
            cJSON_AddBoolToObject(body, "_truncated", 1);
            cJSON_AddNumberToObject(body, "bytes", (double)e->body_len);
        }
        cJSON_AddItemToObject(o, "body", body);
        cJSON_AddItemToObject(o, "headers",
                              e->headers ? cJSON_Duplicate(e->headers, 1) : cJSON_CreateObject());
    }
    pthread_mutex_unlock(&g.mu);
    return send_json(c, MHD_HTTP_OK, arr, NULL);
}

static enum MHD_Result send_ok(struct MHD_Connection *c)
{
    return send_body(c, MHD_HTTP_OK, "application/json", "{\"ok\":true}", NULL);
}

static void pages_reset(void);

static enum MHD_Result handle_reset(struct MHD_Connection *c)
{
    pages_reset();
    pthread_mutex_lock(&g.mu);
    g.calls = g.choices = g.prompt_tokens = g.completion_tokens = g.reasoning_tokens = 0;
    g.errors = g.aborted = g.dropped = g.models_calls = g.cmpl_id = g.seq = 0;
    g.json_bad_seen = 0;  /* plugins1 */
    g.peak = g.in_flight; /* in_flight is a gauge: requests still running stay counted */
    g.epoch++;
    for (size_t i = 0; i < LOG_CAP; i++)
        log_clear(&g.log[i]);
    for (size_t i = 0; i < g.nkeys; i++)
        free(g.keys[i]);
    g.nkeys = 0;
    map_free(&g.ordinals);
    map_free(&g.body_calls);
    pthread_mutex_unlock(&g.mu);
    return send_ok(c);
}

static enum MHD_Result handle_config(struct MHD_Connection *c, const char *method,
                                     const struct req *r)
{
    if (!strcmp(method, "GET")) {
        cJSON *root = cJSON_CreateObject();
        pthread_mutex_lock(&g.mu);
        cJSON_AddNumberToObject(root, "latency", (double)g.cfg.latency);
        cJSON_AddNumberToObject(root, "chunk_delay", (double)g.cfg.chunk_delay);
        cJSON_AddNumberToObject(root, "p", g.cfg.p);
        cJSON_AddNumberToObject(root, "q", g.cfg.q);
        cJSON_AddNumberToObject(root, "seed", (double)g.cfg.seed);
        cJSON_AddBoolToObject(root, "noisy", g.cfg.noisy);
        if (g.cfg.require_key)
            cJSON_AddStringToObject(root, "require_key", g.cfg.require_key);
        else
            cJSON_AddNullToObject(root, "require_key");
        pthread_mutex_unlock(&g.mu);
        return send_json(c, MHD_HTTP_OK, root, NULL);
    }
    cJSON *root = NULL;
    if (!r->too_large && json_depth_ok(sb_str(&r->body), r->body.len, MAX_JSON_DEPTH))
        root = cJSON_ParseWithLength(sb_str(&r->body), r->body.len);
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(root, "latency");
    const cJSON *cd = cJSON_GetObjectItemCaseSensitive(root, "chunk_delay");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "p");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "q");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
    const cJSON *noisy = cJSON_GetObjectItemCaseSensitive(root, "noisy");
    const cJSON *rk = cJSON_GetObjectItemCaseSensitive(root, "require_key");
    bool ok = cJSON_IsObject(root) &&
              (!lat || (cJSON_IsNumber(lat) && lat->valuedouble >= 0 && lat->valuedouble < 4e6)) &&
              (!cd || (cJSON_IsNumber(cd) && cd->valuedouble >= 0 && cd->valuedouble < 4e6)) &&
              (!p || (cJSON_IsNumber(p) && p->valuedouble >= 0 && p->valuedouble <= 1)) &&
              (!q || (cJSON_IsNumber(q) && q->valuedouble >= 0 && q->valuedouble <= 1)) &&
              (!seed || (cJSON_IsNumber(seed) && seed->valuedouble >= 0)) &&
              (!noisy || cJSON_IsBool(noisy)) && (!rk || cJSON_IsString(rk) || cJSON_IsNull(rk));
    if (!ok) {
        cJSON_Delete(root);
        return send_error(c, 400, "mock: bad /mock/config body", "invalid_request_error", NULL,
                          NULL, NULL);
    }
    char *key = cJSON_IsString(rk) ? strdup(rk->valuestring) : NULL;
    pthread_mutex_lock(&g.mu);
    if (lat)
        g.cfg.latency = (long)lat->valuedouble;
    if (cd)
        g.cfg.chunk_delay = (long)cd->valuedouble;
    if (p)
        g.cfg.p = p->valuedouble;
    if (q)
        g.cfg.q = q->valuedouble;
    if (seed)
        g.cfg.seed = seed->valuedouble >= 1.8e19 ? UINT64_MAX : (uint64_t)seed->valuedouble;
    if (noisy)
        g.cfg.noisy = cJSON_IsTrue(noisy);
    if (rk) {
        free(g.cfg.require_key);
        g.cfg.require_key = key;
        key = NULL;
    }
    pthread_mutex_unlock(&g.mu);
    free(key);
    cJSON_Delete(root);
    return send_ok(c);
}

/* ---- otlp: an OTLP/HTTP JSON trace receiver ------------------------------------------------- */

#define OTLP_KEEP 1024
static struct {
    pthread_mutex_t mu;
    char *path[OTLP_KEEP], *body[OTLP_KEEP];
    size_t n, next;
} otlp_rx = {.mu = PTHREAD_MUTEX_INITIALIZER};

static enum MHD_Result handle_otlp(struct MHD_Connection *c, const char *url, struct req *r)
{
    if (!strncmp(url, "/slow/", 6))
        nanosleep(&(struct timespec){3, 0}, NULL);
    if (!strncmp(url, "/fail/", 6))
        return send_error(c, 503, "mock: trace receiver down", "server_error", NULL, "mock_503",
                          NULL);
    pthread_mutex_lock(&otlp_rx.mu);
    size_t i = otlp_rx.next;
    free(otlp_rx.path[i]);
    free(otlp_rx.body[i]);
    otlp_rx.path[i] = strdup(url);
    otlp_rx.body[i] = strdup(sb_str(&r->body));
    otlp_rx.next = (i + 1) % OTLP_KEEP;
    if (otlp_rx.n < OTLP_KEEP)
        otlp_rx.n++;
    pthread_mutex_unlock(&otlp_rx.mu);
    return send_json(c, 200, cJSON_CreateObject(), NULL);
}

static enum MHD_Result handle_otlp_list(struct MHD_Connection *c)
{
    cJSON *out = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(out, "exports");

    pthread_mutex_lock(&otlp_rx.mu);
    for (size_t k = 0; k < otlp_rx.n; k++) {
        size_t i = (otlp_rx.next + OTLP_KEEP - otlp_rx.n + k) % OTLP_KEEP;
        cJSON *e = cJSON_CreateObject();
        cJSON *b = cJSON_Parse(otlp_rx.body[i] ? otlp_rx.body[i] : "");

        cJSON_AddStringToObject(e, "path", otlp_rx.path[i] ? otlp_rx.path[i] : "");
        cJSON_AddItemToObject(e, "body", b ? b : cJSON_CreateString(otlp_rx.body[i]));
        cJSON_AddItemToArray(arr, e);
    }
    pthread_mutex_unlock(&otlp_rx.mu);
    return send_json(c, 200, out, NULL);
}

/* ---- MHD glue --------------------------------------------------------------------------- */

/* ---- pages: a small web site for readurls tests --------------------------------------------- */

static pthread_mutex_t g_pages_mu = PTHREAD_MUTEX_INITIALIZER;
static long g_page_fetches;
static cJSON *g_page_paths; /* the last 64 paths */

static const char PAGE_ARTICLE[] =
    "<!DOCTYPE html><html><head><title>Zebra facts</title><style>.x{color:red}</style>"
    "<script>var secret='SCRIPT-TEXT';</script></head><body>"
    "<header>HEADER-TEXT</header><nav><a href=/>NAV-TEXT</a></nav>"
    "<article><h1>Zebras</h1><p>The plains zebra has <b>ZEBRA-STRIPES-42</b> stripes.</p>"
    "<table><tr><th>Kind</th><th>Count</th></tr><tr><td>plains</td><td>42</td></tr></table>"
    "</article><aside>ASIDE-TEXT</aside><footer>FOOTER-TEXT</footer></body></html>";

static ssize_t huge_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    const uint64_t total = 50ull << 20;
    if (pos >= total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = max < total - pos ? max : (size_t)(total - pos);
    memset(buf, 'a', n);
    for (size_t i = 79; i < n; i += 80)
        buf[i] = '\n';
    return (ssize_t)n;
}

static enum MHD_Result page_redirect(struct MHD_Connection *c, const char *to)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Location", to);
    enum MHD_Result ret = MHD_queue_response(c, 302, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result page_bytes(struct MHD_Connection *c, const char *ctype, const void *p,
                                  size_t n)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, (void *)p, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result handle_page(struct MHD_Connection *c, const char *url)
{
    const char *name = url + 6;
    char to[512];
    pthread_mutex_lock(&g_pages_mu);
    g_page_fetches++;
    if (!g_page_paths)
        g_page_paths = cJSON_CreateArray();
    if (cJSON_GetArraySize(g_page_paths) >= 64)
        cJSON_DeleteItemFromArray(g_page_paths, 0);
    cJSON_AddItemToArray(g_page_paths, cJSON_CreateString(url));
    pthread_mutex_unlock(&g_pages_mu);
    if (!strcmp(name, "article"))
        return page_bytes(c, "text/html; charset=utf-8", PAGE_ARTICLE, strlen(PAGE_ARTICLE));
    if (!strcmp(name, "text"))
        return page_bytes(c, "text/plain", "Plain TEXT-PAGE-7 here.", 23);
    if (!strcmp(name, "json"))
        return page_bytes(c, "application/json", "{\"answer\":\"JSON-PAGE-9\"}", 24);
    if (!strcmp(name, "malformed")) {
        static const char m[] = "<html><body><div><p>MALFORMED-OK <b>bold<i>x</p></div><table>"
                                "<tr><td>cell<td>cell2</table><script>unterminated";
        return page_bytes(c, "text/html", m, sizeof(m) - 1);
    }
    if (!strcmp(name, "binary"))
        return page_bytes(c, "application/octet-stream",
                          "\x7f"
                          "ELF\0\0\1\2",
                          8);
    if (!strcmp(name, "nul"))
        return page_bytes(c, "text/plain", "NUL\0BYTES", 9);
    if (!strcmp(name, "pdf")) {
        static const char pdf[] = "%PDF-1.4\n"
                                  "1 0 obj\n"
                                  "<< /Type /Catalog /Pages 2 0 R >>\n"
                                  "endobj\n"
                                  "2 0 obj\n"
                                  "<< /Type /Pages /Kids [3 0 R] /Count 1 >>\n"
                                  "endobj\n"
                                  "3 0 obj\n"
                                  "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents "
                                  "4 0 R /Resources << /Font << /F1 5 0 R >> >> >>\n"
                                  "endobj\n"
                                  "4 0 obj\n"
                                  "<< /Length 47 >>\n"
                                  "stream\n"
                                  "BT /F1 12 Tf 20 50 Td (PDF-TEXT-5 inside) Tj ET\n"
                                  "endstream\n"
                                  "endobj\n"
                                  "5 0 obj\n"
                                  "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\n"
                                  "endobj\n"
                                  "xref\n"
                                  "0 6\n"
                                  "0000000000 65535 f \n"
                                  "0000000009 00000 n \n"
                                  "0000000058 00000 n \n"
                                  "0000000115 00000 n \n"
                                  "0000000241 00000 n \n"
                                  "0000000338 00000 n \n"
                                  "trailer\n"
                                  "<< /Size 6 /Root 1 0 R >>\n"
                                  "startxref\n"
                                  "408\n"
                                  "%%EOF\n"
                                  "";
        return page_bytes(c, "application/pdf", pdf, sizeof(pdf) - 1);
    }
    if (!strcmp(name, "badpdf"))
        return page_bytes(c, "application/pdf", "%PDF-1.4 not really", 19);
    if (!strcmp(name, "huge")) {
        struct MHD_Response *resp =
            MHD_create_response_from_callback(50ull << 20, 65536, huge_cb, NULL, NULL);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/plain");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (!strcmp(name, "hang")) {
        sleep_watch(-1, 60000);
        return page_bytes(c, "text/plain", "late", 4);
    }
    if (!strcmp(name, "loop"))
        return page_redirect(c, "/page/loop");
    if (!strncmp(name, "redirect/", 9)) {
        long k = strtol(name + 9, NULL, 10);
        if (k <= 0)
            return page_redirect(c, "/page/article");
        snprintf(to, sizeof(to), "/page/redirect/%ld", k - 1);
        return page_redirect(c, to);
    }
    if (!strncmp(name, "to/", 3)) {
        snprintf(to, sizeof(to), "http://%s/page/article", name + 3);
        return page_redirect(c, to);
    }
    return send_error(c, 404, "Not found", "invalid_request_error", NULL, "not_found", NULL);
}

/* ---- websearch: a fake SearxNG JSON API ------------------------------------------------------ */

static enum MHD_Result handle_search(struct MHD_Connection *c)
{
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "q");
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    char body[4096];
    cJSON *o, *res;
    char *txt;

    if (!q || !fmt || strcmp(fmt, "json") != 0)
        return page_bytes(c, "text/plain", "need q and format=json", 22);
    if (strstr(q, "JUNK"))
        return page_bytes(c, "text/html", "<html>SearxNG error</html>", 26);
    if (strstr(q, "SHAPE"))
        return page_bytes(c, "application/json", "{\"results\":{}}", 14);
    if (strstr(q, "EMPTY"))
        return page_bytes(c, "application/json", "{\"results\":[]}", 14);
    if (strstr(q, "SLOW"))
        sleep_watch(-1, 5000);
    o = cJSON_CreateObject();
    res = cJSON_AddArrayToObject(o, "results");
    static const char *const names[] = {"article", "text", "json"};
    for (int i = 0; i < 3; i++) {
        cJSON *r = cJSON_CreateObject();
        char t[600], u[300];

        snprintf(t, sizeof(t), i == 0 ? "SEARCH-TITLE-%d for %.500s" : "SEARCH-TITLE-%d", i + 1, q);
        snprintf(u, sizeof(u), "http://%s/page/%s", host ? host : "127.0.0.1", names[i]);
        cJSON_AddStringToObject(r, "title", t);
        cJSON_AddStringToObject(r, "url", u);
        snprintf(t, sizeof(t), "SEARCH-SNIPPET-%d", i + 1);
        cJSON_AddStringToObject(r, "content", t);
        cJSON_AddItemToArray(res, r);
    }
    txt = cJSON_PrintUnformatted(o);
    snprintf(body, sizeof(body), "%s", txt);
    free(txt);
    cJSON_Delete(o);
    return page_bytes(c, "application/json", body, strlen(body));
}

static enum MHD_Result handle_pages_log(struct MHD_Connection *c)
{
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&g_pages_mu);
    cJSON_AddNumberToObject(o, "fetches", (double)g_page_fetches);
    cJSON_AddItemToObject(o, "paths",
                          g_page_paths ? cJSON_Duplicate(g_page_paths, 1) : cJSON_CreateArray());
    pthread_mutex_unlock(&g_pages_mu);
    return send_json(c, 200, o, NULL);
}

static void pages_reset(void)
{
    pthread_mutex_lock(&g_pages_mu);
    g_page_fetches = 0;
    cJSON_Delete(g_page_paths);
    g_page_paths = NULL;
    pthread_mutex_unlock(&g_pages_mu);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct req *r = *con_cls;
    if (!r) {
        /* First call: only remember the request (queueing now would force Connection: close). */
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        r->start_ms = now_ms();
        r->route = route_for(method, url);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (r->body.len + *upload_size > MAX_BODY)
            r->too_large = true;
        if (!r->too_large) {
            sb_add(&r->body, upload, *upload_size);
            r->too_large = r->body.oom;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    switch (r->route) {
    case R_EMBED:
    case R_COMPL:
        return handle_legacy(c, r);
    case R_CHAT:
        return handle_chat(c, r);
    case R_MODELS:
        return handle_models(c);
    case R_STATS:
        return handle_stats(c);
    case R_REQUESTS:
        return handle_requests(c);
    case R_RESET:
        return handle_reset(c);
    case R_CONFIG:
        return handle_config(c, method, r);
    case R_ANALYZE: /* plugins1 */
        return handle_analyze(c, r);
    case R_OTLP: /* otlp */
        return handle_otlp(c, url, r);
    case R_OTLP_LIST:
        return handle_otlp_list(c);
    case R_BADMETHOD:
        return send_error(c, 404, "Method not allowed for this path", "invalid_request_error", NULL,
                          "not_found", NULL);
    case R_NOTFOUND:
        if (!strncmp(url, "/page/", 6) && !strcmp(method, "GET"))
            return handle_page(c, url);
        if (!strcmp(url, "/mock/pages"))
            return handle_pages_log(c);
        if (!strcmp(url, "/search") && !strcmp(method, "GET")) /* websearch */
            return handle_search(c);
        break;
    }
    return send_error(c, 404, "Not found", "invalid_request_error", NULL, "not_found", NULL);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    cur_req = *con_cls; /* for send_body */
    enum MHD_Result ret = handle(cls, c, url, method, version, upload, upload_size, con_cls);
    cur_req = NULL;
    return ret;
}

/* The call r no longer counts as in flight (once). */
static void uncount(struct req *r)
{
    pthread_mutex_lock(&g.mu);
    if (r->counted && !r->answered && g.in_flight > 0)
        g.in_flight--;
    r->answered = r->counted;
    pthread_mutex_unlock(&g.mu);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    struct req *r = *con_cls;
    if (!r)
        return;
    if (r->counted) {
        pthread_mutex_lock(&g.mu);
        if (g.in_flight > 0 && !r->answered)
            g.in_flight--;
        if (r->epoch == g.epoch) {
            if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !r->dropped)
                g.aborted++;
            struct logent *e = &g.log[(r->seq - 1) % LOG_CAP];
            if (e->used && e->seq == r->seq)
                e->end_ms = now_ms();
        }
        pthread_mutex_unlock(&g.mu);
    }
    sb_free(&r->body);
    free(r);
    *con_cls = NULL;
}

/* ---- startup ---------------------------------------------------------------------------- */

static bool load_key(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "mock_upstream: cannot open %s\n", path);
        return false;
    }
    struct sbuf b = {0};
    char chunk[8192];
    size_t k;
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sb_add(&b, chunk, k);
    fclose(f);
    if (b.oom) {
        sb_free(&b);
        return false;
    }
    size_t cap = 0, lineno = 0;
    for (const char *s = sb_str(&b); *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        lineno++;
        cJSON *o = cJSON_ParseWithLength(s, len);
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "question");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "answer");
        double ans = 0;
        bool ok = cJSON_IsString(q) && q->valuestring[0] &&
                  (cJSON_IsNumber(a)
                       ? (ans = a->valuedouble, true)
                       : cJSON_IsString(a) && parse_double(a->valuestring, -1e300, 1e300, &ans));
        if (ok && g_nkey == cap) {
            cap = cap ? cap * 2 : 64;
            struct keyent *nk = realloc(g_key, cap * sizeof(*nk));
            ok = nk != NULL;
            if (nk)
                g_key = nk;
        }
        if (ok && (g_key[g_nkey].question = strdup(q->valuestring)) != NULL)
            g_key[g_nkey++].answer = ans;
        else if (len > 0 && !(len == 1 && s[0] == '\r'))
            fprintf(stderr, "mock_upstream: %s:%zu: skipped (need question and numeric answer)\n",
                    path, lineno);
        cJSON_Delete(o);
        s += len + (nl ? 1 : 0);
    }
    sb_free(&b);
    return true;
}

static void usage_exit(void)
{
    fprintf(stderr, "usage: mock_upstream [--port N] [--latency MS] [--chunk-delay MS] [--seed N]"
                    " [--noisy-key FILE] [--p P] [--q Q] [--require-key KEY] [--event-loop 1]\n");
    exit(2);
}

static void cleanup(void)
{
    for (size_t i = 0; i < LOG_CAP; i++)
        log_clear(&g.log[i]);
    for (size_t i = 0; i < g.nkeys; i++)
        free(g.keys[i]);
    free(g.keys);
    map_free(&g.ordinals);
    map_free(&g.body_calls);
    free(g.cfg.require_key);
    for (size_t i = 0; i < g_nkey; i++)
        free(g_key[i].question);
    free(g_key);
    for (int i = 0; i < 2; i++)
        if (g_stop_pipe[i] >= 0)
            close(g_stop_pipe[i]);
    pthread_mutex_destroy(&g.mu);
}

int main(int argc, char **argv)
{
    long port = 0;
    const char *key_file = NULL;
    pthread_mutex_init(&g.mu, NULL);
    g.cfg.p = 0.6;
    g.cfg.q = 0.8;
    g_t0 = mono_ms();
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h") || !v)
            usage_exit();
        bool ok = true;
        if (!strcmp(a, "--port"))
            ok = parse_long(v, 0, 65535, &port);
        else if (!strcmp(a, "--latency"))
            ok = parse_long(v, 0, 3600L * 1000, &g.cfg.latency);
        else if (!strcmp(a, "--event-loop"))
            g_event_loop = !strcmp(v, "1");
        else if (!strcmp(a, "--chunk-delay"))
            ok = parse_long(v, 0, 3600L * 1000, &g.cfg.chunk_delay);
        else if (!strcmp(a, "--p"))
            ok = parse_double(v, 0, 1, &g.cfg.p);
        else if (!strcmp(a, "--q"))
            ok = parse_double(v, 0, 1, &g.cfg.q);
        else if (!strcmp(a, "--noisy-key"))
            key_file = v;
        else if (!strcmp(a, "--require-key")) {
            free(g.cfg.require_key);
            g.cfg.require_key = strdup(v);
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            g.cfg.seed = strtoull(v, &end, 10);
            ok = !errno && end != v && !*end;
        } else {
            ok = false;
        }
        if (!ok)
            usage_exit();
    }
    if ((key_file && !load_key(key_file)) || pipe(g_stop_pipe) != 0) {
        cleanup();
        return 1;
    }
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by all MHD threads */

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d;
    if (g_event_loop) {
        if (!dl_start()) {
            cleanup();
            return 1;
        }
        d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
                             (uint16_t)port, NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR,
                             (const struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
                             (unsigned int)2, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)16000,
                             MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)0,
                             /* 8 KiB a connection, not 32: a wave of 9,000 calls otherwise spends
                              * most of the mock's CPU faulting in and zeroing connection pools.
                              * The benchmarks' requests are a few KiB (bodies are streamed). */
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192,
                             MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
    } else {
        d = MHD_start_daemon(
            MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
            (uint16_t)port, NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR,
            (const struct sockaddr *)&addr, MHD_OPTION_THREAD_STACK_SIZE, (size_t)256 * 1024,
            /* 16000: bench/peak.sh's floor wave holds 3 x 3000 calls at once (fd limit 20000). */
            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)16000, MHD_OPTION_NOTIFY_COMPLETED,
            completed, NULL, MHD_OPTION_END);
    }
    const union MHD_DaemonInfo *info = d ? MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!info) {
        fprintf(stderr, "mock_upstream: cannot listen on 127.0.0.1:%ld\n", port);
        if (d)
            MHD_stop_daemon(d);
        cleanup();
        return 1;
    }
    printf("PORT %u\n", (unsigned int)info->port);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    if (write(g_stop_pipe[1], "x", 1) < 0) { /* wakes every sleeping handler */
        fprintf(stderr, "mock_upstream: stop pipe write failed\n");
    }
    if (g_event_loop)
        dl_finish();
    MHD_stop_daemon(d);
    cleanup();
    return 0;
}
