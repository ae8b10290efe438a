/* internal.h: the server's private contracts: the client exchange (one HTTP request and its
 * reply), the upstream transfers run by the I/O loops, the approach pool and the engine.
 *
 * DESIGN. libmicrohttpd parses a request (by default on the I/O loops themselves, one daemon per
 * loop sharing the listening socket; with --http-threads N on its own threads), then suspends
 * its connection and hands it to an I/O loop (passthrough: one transfer relayed to the client) or
 * to the approach pool (an approach runs as a coroutine, plain sequential C that parks on a wait
 * group while its transfers run on the I/O loops; src/sched.c). Every loop owns a curl multi handle
 * and its connection pool; transfers reach a loop through its locked queue plus an eventfd, and a
 * loop waits in epoll on libcurl's sockets (curl_multi_socket_action) and the lean client's (h1.c:
 * approach calls and whole-answer relays to an http:// upstream at an IP address), so a turn
 * costs the events that happened, not the transfers open.
 * The reply is produced into exchange.out and the connection resumed; MHD drains it (a content
 * reader for streams). Protocol, invariants (I1-I7) and pitfalls (P3-P22) cited in comments:
 * docs/mhd-curl-invariants.md.
 *
 * Lock order: MHD response mutex -> exchange.mu -> MHD internals; sched_group.mu -> scheduler
 * thread mu (a wake); those and loop.mu are otherwise leaves. No curl call that can re-enter a
 * write callback is made while holding exchange.mu. */
#ifndef INTERNAL_H
#define INTERNAL_H

#include <curl/curl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>

#include "approach.h"
#include "buf.h"
#include "chat.h"
#include "config.h"
#include "door.h"
#include "llm.h"
#include "otlp.h"
#include "px.h"
#include "scheduler.h"

struct io_loop;
struct xfer;

enum ex_phase {
    EX_RECEIVING = 0, /* MHD thread collects the body */
    EX_WORKING,       /* handed off; connection suspended */
    EX_REPLY,         /* status and first bytes (or the whole body) are ready */
    EX_SENT           /* the response was queued */
};

/* One client request and its reply. Reference-counted; freed when the last holder lets go. */
struct exchange {
    pthread_mutex_t mu; /* guards every field down to 'usage' */
    int refs;
    bool suspended;         /* MHD_suspend_connection called, matching resume not yet (I2) */
    bool closed;            /* notify_completed ran: never touch conn or fd again (I4) */
    bool cancelled;         /* closed, client gone, or shutting down: abort upstream work */
    bool client_gone;       /* hang-up seen while suspended */
    bool pipelined;         /* fd had data, not EOF: stop POLLIN watching, re-check by timer */
    bool watched;           /* an I/O loop watches the fd while suspended */
    size_t watch_slot;      /* where in its loop's watch list (that loop's thread only) */
    bool inflight_done;     /* left the in-flight gauge (answered or closed) */
    long long completed_us; /* MHD reported the request complete (0: not an HTTP request) */
    bool closed_early;      /* ...without the whole answer sent */
    bool accounted;         /* access line, metrics and conversation log written */
    enum ex_phase phase;
    int status;     /* reply status */
    bool streaming; /* reply produced incrementally through 'out' (content reader) */
    struct buf out; /* reply bytes not yet handed to MHD */
    char tail[2];   /* the last two bytes appended to a stream (events end with "\n\n") */
    bool out_done;  /* nothing more will be appended */
    bool out_error; /* end the stream with an error (connection closed) */
    char content_type[128];
    int retry_after;            /* seconds, 0 = no header */
    bool no_retry;              /* "x-should-retry: false": a retry cannot fix this 5xx */
    bool relay_paused;          /* the relay transfer returned CURL_WRITEFUNC_PAUSE */
    struct io_loop *relay_loop; /* loop running the relay transfer (for wake-ups) */
    struct usage usage;         /* totals for the access log */
    struct buf up_headers;      /* allow-listed upstream response headers for the client */
    long long upstream_us;      /* time spent waiting for the upstream (metrics: overhead) */
    const char *budget_header;  /* X-Optillm-Budget value (arena), or NULL */
    const char *route_header;   /* X-Optillm-Route value (arena), or NULL */

    /* Set before hand-off, read-only afterwards. */
    struct door *door; /* front door translating the reply (door.c), or NULL; owned; its state
                        * changes only under mu (exchange_out) */
    struct MHD_Connection *conn;
    int fd;
    struct arena *arena; /* owned; destroyed with the exchange */
    struct chat_request req;
    char id[72];              /* request id (the client's, <= 64 chars, or ours) */
    const char *upstream_key; /* in the arena; never logged */
    bool proxy_key;           /* upstream_key is the server's or the tenant's, not the client's */
    const char *base_url;     /* the tenant's upstream, or NULL for the server's */
    const char *fwd_headers;  /* client headers sent upstream ("Name: value\n"...), or NULL */
    const struct tenant *tenant; /* matched tenant, or NULL; valid while tenant_hold is held */
    void *tenant_hold;
    long calls_started;   /* upstream calls begun (request ceiling, tenant budget); guarded by mu */
    long tokens_used;     /* prompt+completion tokens of the calls finished; guarded by mu */
    struct buf calls_log; /* --log-conversations: JSON of the calls so far; guarded by mu */
    const char *answer;   /* the approach's final answer (arena), for the conversation log */
    long long start_us;
    struct io_loop *home;   /* the loop that watches the fd */
    struct otlp_ctx trace;  /* --otlp-endpoint: the server span (trace.span_id "" = untraced) */
    const char *tracestate; /* the client's W3C tracestate (arena), passed upstream, or NULL */
    long long start_ns;     /* wall clock, for the span */
    const char *method;     /* MHD-owned strings, valid while the request lives */
    const char *url;

    /* MHD thread only (before hand-off). */
    struct buf body;
    bool too_big;
    unsigned long long discarded; /* bytes of an oversized body read and dropped */
    bool resolved;                /* client authenticated and upstream key resolved */
    bool over_budget;             /* the body outgrew --max-body-memory: read, dropped, 503 */
    size_t body_reserved;         /* bytes of --max-body-memory held (released when freed) */
    long long body_deadline_us;   /* the body must be complete by then (0: no body expected) */
};

/* conn NULL: an in-process exchange (engine_local), never suspended. */
struct exchange *exchange_create(struct MHD_Connection *conn, const char *method, const char *url);
void exchange_ref(struct exchange *ex);
void exchange_unref(struct exchange *ex);
/* The request is answered (or its client gone): it leaves the in-flight gauge now, even if
 * a loop still holds a reference for a while. */
void exchange_done(struct exchange *ex);
/* Resumes the connection if suspended. Caller holds ex->mu. */
void exchange_do_resume(struct exchange *ex);
/* Appends stream bytes to ex->out and remembers the tail. Caller holds ex->mu. */
void exchange_do_append(struct exchange *ex, const char *data, size_t len);
/* The same for bytes already appended to ex->out since it had 'before' bytes. */
void exchange_do_note_tail(struct exchange *ex, size_t before);
/* Upstream response headers a client may see (Retry-After, x-ratelimit-*, openai-processing-ms,
 * x-request-id as X-Upstream-Request-Id), appended to 'out' as "Name: value\n" lines. */
void xfer_header_allowed(struct buf *out, const char *line, size_t len);
/* Client headers forwarded upstream (OpenAI-Organization and OpenAI-Project only with the
 * client's own key or a tenant's, OpenAI-Beta always), as "Name: value\n" lines, or NULL. */
const char *exchange_forward_headers(struct exchange *ex, bool own_key);
/* Sets a complete reply (copied) and resumes. Ignored once cancelled. Thread-safe. Once a
 * stream has begun, the reply goes in-band as an SSE event (after ending a partial one). */
void exchange_reply(struct exchange *ex, int status, const char *ctype, const char *body,
                    size_t len);
/* Sets an OpenAI-shaped error reply and resumes. Thread-safe. */
void exchange_reply_error(struct exchange *ex, const struct px_error *err);
/* Streaming: starts (status, content type) if not yet started, appends bytes, resumes the
 * connection if it waits. 'done' ends the stream. Returns false once cancelled. */
bool exchange_stream(struct exchange *ex, int status, const char *ctype, const char *data,
                     size_t len, bool done);
bool exchange_cancelled(struct exchange *ex);

/* ---- http.c: response bodies ---------------------------------------------------------------- */

/* The OpenAI error body {"error":{"message","type","param","code"}}; malloc'd. */
char *http_error_json(const struct px_error *err, size_t *len);
/* Queues a complete response on conn (MHD thread). */
enum MHD_Result http_queue(struct MHD_Connection *conn, int status, const char *ctype,
                           const char *body, size_t len, const char *req_id, int retry_after);
enum MHD_Result http_queue_error(struct MHD_Connection *conn, const struct px_error *err,
                                 const char *req_id);
/* The same with another body (a front door's error shape): status, Retry-After, Allow. */
enum MHD_Result http_queue_error_body(struct MHD_Connection *conn, const struct px_error *err,
                                      const char *body, size_t len, const char *req_id);
/* The upstream answered 401/403 to a key the proxy attached (the server's or a tenant's, not
 * the client's own): the client's request is fine, the operator's key is not. Fills err with
 * PX_EUPSTREAM (502, code upstream_key_rejected) and a message for the operator quoting the
 * upstream's message (error.message of a JSON body, else the text) with secrets redacted. */
int http_key_rejected(struct px_error *err, int upstream_status, const char *body, size_t len);
/* An upstream error body made readable: "error: message" (or "detail") of a JSON object, a
 * JSON string, else the text with HTML tags removed; one line, valid UTF-8, cut to 'max'
 * bytes. malloc'd (cJSON_free); never NULL. */
char *http_upstream_text(const char *body, size_t len, size_t max);
/* The body for an upstream's error answer: NULL when 'body' is OpenAI-shaped (an object whose
 * "error" is an object with a string "message"; it is then relayed byte for byte), else a new
 * {"error":{"message","type","param","code"}} with the upstream's text in the message.
 * malloc'd (cJSON_free). */
char *http_upstream_error(int status, const char *body, size_t len, size_t *out_len);

/* ---- tenants.c: multi-tenant keys and limits ---- */

struct tenant {
    char name[64];
    unsigned char digest[32]; /* SHA-256 of the tenant's proxy key */
    char *base_url;           /* its own upstream, or NULL */
    char *upstream_key;       /* its provider key (from the named environment variable), or NULL */
    char **approaches;        /* allowed slugs ("none" = passthrough); empty = all */
    size_t napproaches;
    char **models; /* allowed upstream models; empty = all */
    size_t nmodels;
    long max_calls;      /* per request; 0 = no limit */
    long rpm;            /* requests per minute; 0 = no limit */
    long tokens_per_day; /* 0 = no limit */
    int provider;        /* --providers: the provider it is pinned to (index), or -1 */
};

/* Loads --tenants FILE before threads start; 0 or -1 (logged). */
int tenants_init(const char *path);
bool tenants_enabled(void);
/* SIGHUP: re-reads the file; on failure the old set stays (logged). Thread-safe. */
void tenants_reload(void);
void tenants_cleanup(void);
/* The tenant whose key digest matches 'key' (constant time over the set), or NULL. *hold keeps
 * the tenant valid across reloads until tenants_release(*hold). */
const struct tenant *tenants_match(const char *key, void **hold);
void tenants_release(void *hold);
/* May this tenant run this request (approaches, models, planned calls)? PX_EFORBIDDEN (403,
 * code model_not_allowed / approach_not_allowed) or PX_EINVAL (planned calls over the limit). */
int tenants_allow(const struct tenant *t, const struct chat_request *req, struct px_error *err);
/* Rate and daily-token limits; PX_ELIMIT (429) with *retry_after seconds. */
int tenants_admit(const struct tenant *t, struct px_error *err, int *retry_after);
/* Adds a finished request's tokens to the tenant's daily count. */
void tenants_charge(const struct tenant *t, long tokens);

/* ---- auth.c -----------------------------------------------------------------------------------
 */

/* Client authentication and upstream key resolution (DESIGN.md's two tables). 'authorization'
 * and 'x_upstream' are header values or NULL. On success *upstream_key points at the key to
 * send: cfg's server key, or a copy in 'a'. 401/400 with a message naming no key. */
int auth_resolve(const struct config *cfg, struct arena *a, const char *authorization,
                 const char *x_upstream, const char **upstream_key, struct px_error *err);
/* The same with tenants: *tenant is the matched tenant (or NULL) and *hold must be released
 * with tenants_release. A tenant's own key wins; its requests use its base URL. */
int auth_resolve_tenant(const struct config *cfg, struct arena *a, const char *authorization,
                        const char *x_upstream, const char **upstream_key,
                        const struct tenant **tenant, void **hold, struct px_error *err);
/* Only the gate (for /v1/models, /v1/approaches, /metrics): 0 or PX_EAUTH. With tenants, a
 * tenant key passes too. */
int auth_gate(const struct config *cfg, const char *authorization, struct px_error *err);
/* Constant-time string equality (length-independent timing via SHA-256 digests). */
bool auth_equal(const char *a, const char *b);
/* Is 'key' (as resolved by auth_resolve_tenant) one the proxy holds: the server's or tenant
 * t's provider key, rather than one the client sent? An upstream 401/403 then means the
 * operator's key is wrong (502 for the client), not the client's. */
bool auth_key_is_proxys(const struct config *cfg, const struct tenant *t, const char *key);

/* ---- upstream.c: transfers and I/O loops ------------------------------------------------------
 */

enum xfer_kind {
    XFER_RELAY, /* passthrough: the upstream's answer goes to the exchange as is */
    XFER_CALL,  /* an approach call: buffered, parsed by the approach's coroutine */
    XFER_STREAM /* an approach's final call streamed to the client through a sink */
};

/* Called on the I/O thread for each parsed upstream SSE content delta of an XFER_STREAM. */
typedef void xfer_delta_fn(void *sink, const char *text, size_t len);

struct xfer {
    enum xfer_kind kind;
    struct exchange *ex;       /* referenced while the transfer lives */
    struct sched_group *group; /* XFER_CALL/XFER_STREAM: the stage's wait group */
    char *url;                 /* malloc'd */
    char *body;                /* malloc'd; NULL for GET */
    size_t body_len;
    struct curl_slist *headers;
    bool stream_relay; /* XFER_RELAY of a stream request: relay chunk by chunk */
    /* Stream relays: a line scanner reads the usage event, and drops it unless the client
     * asked for usage (the proxy always asks). I/O thread only. */
    bool strip_usage;         /* the client did not ask for stream usage */
    bool skip_blank;          /* the blank line that ended a dropped event goes too */
    bool line_long;           /* the current line outgrew 'line': relayed as it comes */
    struct usage relay_usage; /* from the stream's usage event */
    struct buf line;          /* a partial line, held until its end */
    char *plain_body;         /* the body without the stream_options we added (malloc'd), sent
                                 instead when the upstream refuses them; or NULL */
    size_t plain_len;
    xfer_delta_fn *on_delta; /* XFER_STREAM */
    void *sink;

    /* Results (written by the I/O thread, read after the group/exchange is signalled). */
    long http_status;
    CURLcode result;
    bool aborted;
    struct buf resp;         /* buffered body (XFER_CALL, error bodies, relays not streamed) */
    struct buf resp_headers; /* allow-listed response headers ("Name: value\n"), last attempt */
    long retry_after_s;      /* the last attempt's Retry-After in seconds, or 0 */
    char content_type[128];
    long long start_us, end_us;
    struct sse_parser *sse; /* XFER_STREAM */
    int attempts;           /* HTTP attempts made (retries and fallbacks included) */
    int retries_used;       /* of the current base URL */
    int base_index;         /* 0: --base-url, 1..: --fallback-base-url */

    /* I/O thread only. */
    CURL *easy;
    struct h1_conn *h1; /* the lean client's connection of this attempt (h1.c), or NULL */
    struct io_loop *loop;
    unsigned shard; /* which of the loop's multi handles runs it */
    struct xfer *next;
    struct xfer *prev; /* in the loop's active list: unlinking is O(1) with thousands active */
    char *path;        /* for rebuilding the URL on a fallback */
    bool relaying;     /* XFER_RELAY stream: bytes go to the client as they arrive */
    long long due_us;  /* a retry waits until then */
    char errbuf[CURL_ERROR_SIZE];

    /* --otlp-endpoint (otlp.c): one client span per attempt. */
    const char *stage;            /* "bon/rate" (the call's), NULL for a relay */
    struct otlp_ctx span;         /* the current attempt's span */
    long long span_start_ns;      /* wall clock */
    long long span_start_us;      /* monotonic (px_now_us) */
    bool span_open;               /* started, not yet exported */
    struct curl_slist *tp_header; /* the "traceparent:" node of headers, or NULL */

    /* --providers (providers.c; I/O thread only after io_submit). */
    bool use_prov;                   /* each attempt goes to a provider chosen then */
    bool probe;                      /* a health probe of provider probe_of */
    int probe_of;                    /* provider index of a probe */
    int prov;                        /* provider of the current attempt (slot held), or -1 */
    int prov_wait;                   /* provider whose queue holds this transfer, or -1 */
    int prov_pin;                    /* the tenant's pinned provider, or -1 */
    uint64_t prov_tried;             /* providers that failed in this round */
    char *model;                     /* the body's "model" (providers' model lists), or NULL */
    const char *server_key;          /* sent to a provider without key_env (or NULL) */
    struct curl_slist *prov_headers; /* headers + the provider's key, per attempt */
};

int io_start(const struct config *cfg);
/* Stops the loops: aborts remaining transfers (their exchanges get 503) and joins them, or,
 * when they serve HTTP (io_serve), waits until their transfers are gone and leaves them
 * running libmicrohttpd until io_join. */
void io_stop(void);
/* HTTP on the loops (--http-threads 0): loop i runs daemon d (external epoll, epoll_fd) from
 * now on; its connections' handlers run on that loop's thread, so a passthrough request is
 * received, relayed and answered without a thread hop. */
void io_serve(unsigned i, struct MHD_Daemon *d, int epoll_fd);
/* Has every serving loop call MHD_quiesce_daemon on its own daemon (libmicrohttpd's epoll
 * quiesce must not race the thread running the daemon); returns when all have. */
void io_quiesce_http(void);
/* Joins loops left running by io_stop (serving HTTP); after it no thread runs a daemon. */
void io_join(void);
/* A connection of loop l's daemon was resumed: l runs the daemon before it sleeps (with
 * external polling, libmicrohttpd's MHD_resume_connection signals nothing). No-op unless
 * HTTP runs on the loops. */
void io_http_kick(struct io_loop *l);
/* The loop whose thread is calling, or NULL. */
struct io_loop *io_current(void);
unsigned io_count(void);
/* Frees the loops after io_stop and after every approach coroutine has finished. */
void io_free(void);
/* Creates a transfer for base_url + path with the resolved key (may be NULL) in cfg's header. */
struct xfer *xfer_create(const struct config *cfg, enum xfer_kind kind, struct exchange *ex,
                         const char *path, const char *key, char *body, size_t body_len);
void xfer_destroy(struct xfer *x);
/* The answer's Content-Type is JSON (an XFER_STREAM whose upstream ignored stream:true, or sent
 * an error body): it is buffered in resp, not parsed as SSE. */
bool xfer_json_reply(const struct xfer *x);
/* Hands x to a loop (round-robin); returns 0 or PX_EBUSY when shutting down. The loop owns
 * XFER_RELAY transfers and frees them; XFER_CALL/STREAM are freed by their creator after the
 * group signals. */
int io_submit(struct xfer *x);
/* Asks ex->home to watch the client fd while the exchange is suspended. */
void io_watch(struct exchange *ex);
/* ex closed while watched: its home loop drops it from the watch list on its next turn (without
 * a sweep), releasing the reference the caller took for this. */
void io_unwatch(struct exchange *ex);
/* Has a loop sweep its transfers now (a content reader drained a paused relay). Without it a
 * loop sweeps every 100 ms: a loop's turn looks only at the sockets that are ready. */
void io_wake(struct io_loop *loop);
struct io_loop *io_pick(void);
/* Has every loop sweep its transfers now (a cancelled approach request may have transfers on
 * each; a provider's slot came free). */
void io_wake_all(void);

/* ---- sse.c: incremental upstream SSE parser ----------------------------------------------------
 */

/* fields.c: copies the client's body members that an approach's upstream call carries into
 * 'out' (every generation field; response_format and the tools group only when 'answer'),
 * leaving members 'out' already has. */
void fields_copy(struct cJSON *out, const struct cJSON *body, bool answer);

struct sse_parser;
struct sse_parser *sse_parser_create(void);
void sse_parser_destroy(struct sse_parser *p);
/* Feeds bytes; for every content delta calls on_delta. Accumulates the full text, the
 * finish_reason and the usage. Returns 0, or -1 when the stream is malformed or too big. */
int sse_parser_feed(struct sse_parser *p, const char *data, size_t len, xfer_delta_fn *on_delta,
                    void *sink);
/* The transfer ended: handles a last line that had no newline. Returns 0 when the stream is
 * complete (it said [DONE], or gave choice 0 a finish_reason, or carried an in-band error),
 * -1 when it was cut short or malformed. */
int sse_parser_end(struct sse_parser *p, xfer_delta_fn *on_delta, void *sink);
const char *sse_parser_text(struct sse_parser *p, size_t *len);
const char *sse_parser_finish(struct sse_parser *p);
const char *sse_parser_error(struct sse_parser *p); /* an in-band error message, or NULL */
void sse_parser_usage(struct sse_parser *p, struct usage *u);
bool sse_parser_done(struct sse_parser *p);

/* ---- nsupport.c: n support per upstream base URL --------------------------------------------- */

#define NSUPPORT_REPROBE_S 600 /* a refusal of n is re-probed after 10 minutes */

/* -1 unknown (or a refusal older than NSUPPORT_REPROBE_S), 0 refuses n > 1, 1 accepts. */
int nsupport_get(const char *base_url, long long now_us);
void nsupport_set(const char *base_url, int v, long long now_us);
void nsupport_reset(void); /* tests */

/* ---- pool.c: admission of approach requests (coroutines, src/sched.c) ------------------------
 */

/* At most max_running requests at once, max_queue more waiting. After sched_start. */
int pool_start(unsigned max_running, unsigned queue_max);
/* Runs fn(arg) on a coroutine now or when a slot frees; returns 0, or PX_EBUSY when the queue
 * is full or the pool stopping. */
int pool_submit(void (*fn)(void *), void *arg);
/* Waits until every admitted and queued request has run. */
void pool_stop(void);
/* Approach requests queued, running (on a CPU or ready) and waiting (parked on the network). */
void pool_stats(unsigned *queued, unsigned *running, unsigned *waiting);

/* ---- engine.c: runs a route for an exchange on a coroutine -------------------------------------
 */

void engine_run(void *exchange);

/* ---- server.c ----------------------------------------------------------------------------------
 */

int server_start(const struct config *cfg);
/* Access line, metrics and conversation log of a finished request (its last reference). */
void server_account(struct exchange *ex);
/* The body a passthrough sends upstream (malloc'd): the client's bytes when nothing had to
 * change, else the parsed body with the upstream model and without optillm_* fields. When it
 * asks for stream usage the client did not ask for, *plain is the body without that (for an
 * upstream that refuses stream_options), else NULL. */
char *server_passthrough_body(struct exchange *ex, size_t *len, char **plain, size_t *plain_len);
/* Gives back the request-body budget an exchange holds (when it is freed). */
void server_body_release(struct exchange *ex);
/* The bound port (after server_start). */
int server_port(void);
/* Stops accepting new connections; requests arriving on open connections get 503. */
void server_quiesce(void);
void server_stop(void);

/* ---- convlog.c: --log-conversations ---------------------------------------------------------- */

int convlog_init(const char *dir);
/* Records one upstream call of a request (no-op unless enabled). Thread-safe. */
void convlog_call(struct exchange *ex, const char *stage, long long latency_ms, int status,
                  int http_status, const struct usage *u);
/* Appends the request's line (no-op unless enabled). */
void convlog_write(struct exchange *ex, int status, long long duration_us);

/* ---- metrics.c --------------------------------------------------------------------------------
 */

void metrics_retry(void);
void metrics_cancel(void);
void metrics_inflight(int delta);
/* Requests alive now (received, processed or being answered). */
long metrics_inflight_now(void);
/* One upstream attempt's result: its HTTP status, or 0 for a transport error. */
void metrics_upstream(int status);
/* One answered request. 'upstream_us': time spent waiting for the upstream. */
void metrics_request(const char *approach, int status, long long total_us, long long upstream_us,
                     const struct usage *u, const char *tenant);
/* Appends the Prometheus text exposition. */
void metrics_render(struct buf *b);

/* A "chatcmpl-..." id into buf (engine.c). Thread-safe. */
void response_new_id(char *buf, size_t len);

#endif
