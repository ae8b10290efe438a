/* server.c: libmicrohttpd set-up (one external-epoll daemon per I/O loop on a shared listening
 * socket, or a poll thread pool; suspend/resume), routing of the endpoints, request hand-off
 * and the access log. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "internal.h"
#include "json_check.h"
#include "log.h"

static struct MHD_Daemon *daemon_;   /* --http-threads N: the thread-pool daemon */
static struct MHD_Daemon **on_loops; /* HTTP on the I/O loops: a daemon per loop */
static unsigned n_on_loops;
static int listen_fd = -1; /* their shared listening socket (closed by server_stop) */
static int draining;       /* set by server_quiesce (atomic builtins) */
/* The listening socket MHD handed back at quiesce; closed by server_stop (main thread only). */
static MHD_socket quiesced_fd = MHD_INVALID_SOCKET;
static const struct config *srv_cfg;
static int bound_port;

/* ---- helpers --------------------------------------------------------------------------------- */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* The client's credential: Authorization, or an Anthropic client's x-api-key taken as its
 * Bearer (the same key rules apply). */
static const char *client_auth(struct exchange *ex)
{
    const char *a = header(ex->conn, "Authorization");
    const char *k = a ? NULL : header(ex->conn, "x-api-key");

    return k ? arena_printf(ex->arena, "Bearer %s", k) : a;
}

static enum MHD_Result reply_now(struct exchange *ex, int status, const char *ctype,
                                 const char *body, size_t len)
{
    pthread_mutex_lock(&ex->mu);
    ex->status = status;
    ex->phase = EX_SENT;
    pthread_mutex_unlock(&ex->mu);
    return http_queue(ex->conn, status, ctype, body, len, ex->id, 0);
}

static enum MHD_Result error_now(struct exchange *ex, const struct px_error *err)
{
    pthread_mutex_lock(&ex->mu);
    ex->status = px_http_status(err);
    ex->phase = EX_SENT;
    pthread_mutex_unlock(&ex->mu);
    if (err->code == PX_EAUTH || err->code == PX_EINVAL || err->code == PX_EFORBIDDEN)
        log_at(LOG_INFO, ex->id, "%s %s: %d %s", ex->method, ex->url, ex->status, err->message);
    if (ex->door)
        return door_queue_error(ex, err);
    return http_queue_error(ex->conn, err, ex->id);
}

/* Suspends the connection before anyone else can see the exchange (I2, I7). MHD thread. */
static void suspend_for_work(struct exchange *ex)
{
    pthread_mutex_lock(&ex->mu);
    ex->refs++; /* the worker's reference (relay transfer or approach job) */
    ex->suspended = true;
    ex->phase = EX_WORKING;
    ex->home = io_current(); /* the loop running this connection's daemon: no hand-off */
    if (!ex->home)
        ex->home = io_pick();
    MHD_suspend_connection(ex->conn);
    pthread_mutex_unlock(&ex->mu);
}

static void fail_after_suspend(struct exchange *ex, int code, const char *msg)
{
    struct px_error err;

    px_fail(&err, code, NULL, "%s", msg);
    exchange_reply_error(ex, &err);
    exchange_unref(ex); /* the worker reference nobody took */
}

/* ---- client limits: body budget, header and body deadlines, connections per address ---------
 *
 * libmicrohttpd's idle timer restarts on every byte, so a client that trickles its request
 * holds a connection forever; and a body is read before any handler runs. So: every
 * connection carries a deadline (its headers, then its body, must be complete by then) that
 * a reaper thread enforces with shutdown() (MHD then sees end-of-file and closes); request
 * bodies reserve bytes of a global budget before they are read; and connections are counted
 * per client address. docs/mhd-curl-invariants.md, "Client limits", has the fd-safety
 * argument. */

struct ip_count {
    struct ip_count *next;
    unsigned char addr[16]; /* IPv6, or IPv4 mapped (::ffff:a.b.c.d) */
    unsigned count;
};

/* One client connection, from MHD's NOTIFY_CONNECTION STARTED to CLOSED. */
struct conn_state {
    struct conn_state *prev, *next;
    int fd;                /* valid while in the list: MHD closes it only after CLOSED */
    long long deadline_us; /* headers (or body) complete by then, else shutdown; 0 = none */
    struct ip_count *ip;   /* the address counter it holds, or NULL (exempt) */
    long long idle_us;     /* kept alive after a request, waiting for the next: since when;
                            * 0 = not idle (new, or a request under way) */
};

/* Leaf lock: the connection list and the address table. The reaper calls shutdown() with it
 * held, and MHD's CLOSED notification (which comes before MHD closes the fd) takes it, so a
 * listed fd can never be closed and reused under the reaper. */
static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static struct conn_state *conns;
static size_t nconns; /* the list's length */
static struct ip_count *ip_table[256];
static size_t body_inflight; /* request-body bytes reserved by live exchanges (atomic) */

static pthread_t reaper_tid;
static bool reaper_running;
static bool reaper_stop; /* guarded by reaper_mu */
static pthread_mutex_t reaper_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reaper_cv;

static long long secs_us(double s)
{
    return (long long)(s * 1e6);
}

/* Reserves n more bytes of --max-body-memory for ex; false (nothing taken) when over. */
static bool body_reserve(struct exchange *ex, size_t n)
{
    size_t cur = __atomic_load_n(&body_inflight, __ATOMIC_RELAXED);

    do {
        if (cur + n > srv_cfg->max_body_memory)
            return false;
    } while (!__atomic_compare_exchange_n(&body_inflight, &cur, cur + n, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    ex->body_reserved += n;
    return true;
}

void server_body_release(struct exchange *ex)
{
    if (ex->body_reserved)
        __atomic_sub_fetch(&body_inflight, ex->body_reserved, __ATOMIC_RELAXED);
    ex->body_reserved = 0;
}

/* The client address as 16 bytes; false for a family we do not count. */
static bool ip_key(const struct sockaddr *sa, unsigned char k[16])
{
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;

        memset(k, 0, 10);
        k[10] = k[11] = 0xff;
        memcpy(k + 12, &s4->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(k, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

/* 127.0.0.1 and ::1: a local TLS terminator or load balancer brings every client from there. */
static bool ip_exempt(const unsigned char k[16])
{
    static const unsigned char v4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
    static const unsigned char v6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

    return memcmp(k, v4, 16) == 0 || memcmp(k, v6, 16) == 0;
}

/* The table slot holding k's counter (or the NULL at the end of its chain). conns_mu held. */
static struct ip_count **do_ip_slot(const unsigned char k[16])
{
    unsigned h = 2166136261u;

    for (int i = 0; i < 16; i++)
        h = (h ^ k[i]) * 16777619u;
    struct ip_count **p = &ip_table[h % PX_ARRAY_LEN(ip_table)];
    while (*p && memcmp((*p)->addr, k, 16) != 0)
        p = &(*p)->next;
    return p;
}

/* MHD's accept policy: refuses a connection from an address at its limit. Counting happens
 * in notify_connection, so concurrent accepts on several MHD threads may overshoot by at
 * most --http-threads - 1. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *sa, socklen_t len)
{
    unsigned char k[16];
    bool ok;

    (void)cls;
    (void)len;
    if (!ip_key(sa, k) || ip_exempt(k))
        return MHD_YES;
    pthread_mutex_lock(&conns_mu);
    struct ip_count *c = *do_ip_slot(k);
    ok = !c || c->count < srv_cfg->per_ip_conns;
    pthread_mutex_unlock(&conns_mu);
    if (!ok)
        log_at(LOG_DEBUG, NULL, "connection refused: %u open from that address",
               srv_cfg->per_ip_conns);
    return ok ? MHD_YES : MHD_NO;
}

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    struct conn_state *cs;

    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ai =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        unsigned char k[16];

        cs = xcalloc(1, sizeof(*cs));
        cs->fd = fi ? fi->connect_fd : -1;
        cs->deadline_us = px_now_us() + secs_us(srv_cfg->header_timeout);
        pthread_mutex_lock(&conns_mu);
        if (ai && ip_key(ai->client_addr, k) && !ip_exempt(k)) {
            struct ip_count **slot = do_ip_slot(k);

            if (!*slot) {
                *slot = xcalloc(1, sizeof(**slot));
                memcpy((*slot)->addr, k, 16);
            }
            cs->ip = *slot;
            cs->ip->count++;
        }
        cs->next = conns;
        if (conns)
            conns->prev = cs;
        conns = cs;
        nconns++;
        pthread_mutex_unlock(&conns_mu);
        *socket_context = cs;
        return;
    }
    cs = *socket_context;
    if (code != MHD_CONNECTION_NOTIFY_CLOSED || !cs)
        return;
    *socket_context = NULL;
    pthread_mutex_lock(&conns_mu);
    if (cs->prev)
        cs->prev->next = cs->next;
    else
        conns = cs->next;
    if (cs->next)
        cs->next->prev = cs->prev;
    nconns--;
    if (cs->ip && --cs->ip->count == 0) {
        struct ip_count **slot = do_ip_slot(cs->ip->addr);

        *slot = cs->ip->next;
        free(cs->ip);
    }
    pthread_mutex_unlock(&conns_mu);
    free(cs);
}

/* Sets the connection's deadline (0: none) and whether it idles between requests (kept alive,
 * reclaimable at --max-connections) or has a request under way. MHD thread of that
 * connection. */
static void conn_set(struct MHD_Connection *conn, long long deadline_us, bool idle)
{
    const union MHD_ConnectionInfo *ci =
        conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    struct conn_state *cs = ci ? ci->socket_context : NULL;

    if (!cs)
        return;
    pthread_mutex_lock(&conns_mu);
    cs->deadline_us = deadline_us;
    cs->idle_us = idle ? px_now_us() : 0;
    pthread_mutex_unlock(&conns_mu);
}

static int by_idle_since(const void *a, const void *b)
{
    long long x = (*(struct conn_state *const *)a)->idle_us;
    long long y = (*(struct conn_state *const *)b)->idle_us;

    return x < y ? -1 : x > y;
}

/* Near --max-connections, idle kept-alive connections make room for new clients, the longest
 * idle first (as nginx reuses its keep-alive connections): otherwise a client beyond the limit
 * waits until idle ones reach --idle-timeout. A client that sends its next request on a
 * reclaimed connection at that moment sees it closed, which HTTP clients retry. conns_mu held. */
static int reclaim_idle(void)
{
    size_t limit = srv_cfg->conn_limit, reserve = limit / 32 ? limit / 32 : 1, need, nidle = 0;
    struct conn_state **idle;
    int n = 0;

    if (nconns + reserve < limit)
        return 0;
    need = nconns + 2 * reserve - limit;
    idle = malloc(nconns * sizeof(*idle));
    if (!idle)
        return 0;
    for (struct conn_state *cs = conns; cs; cs = cs->next)
        if (cs->idle_us && cs->fd >= 0)
            idle[nidle++] = cs;
    qsort(idle, nidle, sizeof(*idle), by_idle_since);
    for (size_t i = 0; i < nidle && i < need; i++) {
        shutdown(idle[i]->fd, SHUT_RDWR); /* MHD reads end-of-file and closes it */
        idle[i]->idle_us = 0;
        idle[i]->deadline_us = 0;
        n++;
    }
    free(idle);
    return n;
}

static void reap(long long now)
{
    int n = 0, reclaimed;

    pthread_mutex_lock(&conns_mu);
    for (struct conn_state *cs = conns; cs; cs = cs->next) {
        if (cs->deadline_us && now >= cs->deadline_us && cs->fd >= 0) {
            shutdown(cs->fd, SHUT_RDWR); /* MHD reads end-of-file and closes it */
            cs->deadline_us = 0;
            cs->idle_us = 0;
            n++;
        }
    }
    reclaimed = reclaim_idle();
    pthread_mutex_unlock(&conns_mu);
    if (n)
        log_at(LOG_INFO, NULL, "closed %d client connection(s) too slow to send a request", n);
    if (reclaimed)
        log_at(LOG_INFO, NULL,
               "closed %d idle keep-alive connection(s) to make room (--max-connections %u)",
               reclaimed, srv_cfg->conn_limit);
}

static void *reaper(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&reaper_mu);
    while (!reaper_stop) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&reaper_cv, &reaper_mu, &ts);
        if (reaper_stop)
            break;
        pthread_mutex_unlock(&reaper_mu);
        reap(px_now_us());
        pthread_mutex_lock(&reaper_mu);
    }
    pthread_mutex_unlock(&reaper_mu);
    return NULL;
}

static int reaper_start(void)
{
    pthread_condattr_t ca;
    pthread_attr_t at;
    int rc;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 64 * 1024);
    rc = pthread_create(&reaper_tid, &at, reaper, NULL);
    pthread_attr_destroy(&at);
    reaper_running = rc == 0;
    return rc == 0 ? 0 : -1;
}

static void reaper_join(void)
{
    if (!reaper_running)
        return;
    pthread_mutex_lock(&reaper_mu);
    reaper_stop = true;
    pthread_cond_signal(&reaper_cv);
    pthread_mutex_unlock(&reaper_mu);
    pthread_join(reaper_tid, NULL);
    reaper_running = false;
    pthread_cond_destroy(&reaper_cv);
}

/* ---- endpoints ------------------------------------------------------------------------------- */

static enum MHD_Result do_health(struct exchange *ex)
{
    static const char ok[] = "{\"status\":\"ok\"}";

    return reply_now(ex, 200, "application/json", ok, sizeof(ok) - 1);
}

static enum MHD_Result do_approaches(struct exchange *ex)
{
    struct px_error err;
    cJSON *root, *data;
    char *s;
    enum MHD_Result r;

    if (auth_gate(srv_cfg, client_auth(ex), &err) < 0)
        return error_now(ex, &err);
    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    data = cJSON_AddArrayToObject(root, "data");
    for (size_t i = 0; i < approach_registry_len; i++) {
        const struct approach *a = approach_registry[i];
        cJSON *o = cJSON_CreateObject();
        cJSON *al = cJSON_AddArrayToObject(o, "aliases");
        cJSON *opts = cJSON_AddArrayToObject(o, "options");

        cJSON_AddStringToObject(o, "id", a->slug);
        cJSON_AddStringToObject(o, "object", "approach");
        cJSON_AddStringToObject(o, "summary", a->summary);
        for (const char *const *p = a->aliases; p && *p; p++)
            cJSON_AddItemToArray(al, cJSON_CreateString(*p));
        for (const struct approach_option *op = a->options; op && op->name; op++) {
            cJSON *ov = cJSON_CreateObject();

            cJSON_AddStringToObject(ov, "name", op->name);
            cJSON_AddNumberToObject(ov, "default", op->def);
            cJSON_AddNumberToObject(ov, "value", config_option(srv_cfg, op->name, op->def));
            cJSON_AddStringToObject(ov, "help", op->help);
            cJSON_AddItemToArray(opts, ov);
        }
        cJSON_AddNumberToObject(o, "upstream_calls", a->calls);
        cJSON_AddNumberToObject(o, "rounds", a->rounds);
        cJSON_AddBoolToObject(o, "tools", a->tools);
        cJSON_AddBoolToObject(o, "response_format", a->response_format);
        cJSON_AddBoolToObject(o, "code_execution", a->code_execution); /* sandbox.h */
        cJSON_AddBoolToObject(o, "available", !a->code_execution || srv_cfg->enable_code_execution);
        cJSON_AddItemToArray(data, o);
    }
    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    r = reply_now(ex, 200, "application/json", s, strlen(s));
    cJSON_free(s);
    return r;
}

static enum MHD_Result do_metrics(struct exchange *ex)
{
    struct px_error err;
    struct buf b;
    enum MHD_Result r;

    if (auth_gate(srv_cfg, client_auth(ex), &err) < 0)
        return error_now(ex, &err);
    buf_init(&b, 0);
    metrics_render(&b);
    r = reply_now(ex, 200, "text/plain; version=0.0.4; charset=utf-8", buf_cstr(&b), b.len);
    buf_free(&b);
    return r;
}

static enum MHD_Result relay(struct exchange *ex, const char *path, char *body, size_t len,
                             bool stream, char *plain, size_t plain_len)
{
    struct xfer *x = xfer_create(srv_cfg, XFER_RELAY, ex, path, ex->upstream_key, body, len);

    x->stream_relay = stream;
    /* passthrough_body asked for usage; a front door needs it, the client sees it translated */
    x->strip_usage = plain != NULL && !ex->door;
    x->plain_body = plain;
    x->plain_len = plain_len;
    suspend_for_work(ex);
    if (io_submit(x) < 0) {
        xfer_destroy(x);
        fail_after_suspend(ex, PX_ECANCELLED, "the server is shutting down");
        return MHD_YES;
    }
    exchange_unref(ex); /* the transfer holds its own reference */
    return MHD_YES;
}

/* Authenticates the client and resolves the upstream key (and tenant) into the exchange.
 * MHD thread, before the hand-off. */
static int resolve(struct exchange *ex, struct px_error *err)
{
    const char *key;
    int rc;

    if (ex->resolved) /* already done when the headers came (a request with a body) */
        return PX_OK;
    rc = auth_resolve_tenant(srv_cfg, ex->arena, client_auth(ex),
                             header(ex->conn, "X-Upstream-Api-Key"), &key, &ex->tenant,
                             &ex->tenant_hold, err);

    if (rc < 0)
        return rc;
    ex->upstream_key = key;
    ex->proxy_key = auth_key_is_proxys(srv_cfg, ex->tenant, key);
    if (ex->tenant)
        ex->base_url = ex->tenant->base_url;
    ex->fwd_headers = exchange_forward_headers(ex, key && key != srv_cfg->upstream_key);
    ex->resolved = true;
    return PX_OK;
}

static enum MHD_Result do_models(struct exchange *ex)
{
    struct px_error err;

    if (resolve(ex, &err) < 0)
        return error_now(ex, &err);
    if (header(ex->conn, "anthropic-version"))
        ex->door = door_create(DOOR_MODELS);
    return relay(ex, "/models", NULL, 0, false, NULL, 0);
}

/* The body that goes upstream for a passthrough: the client's bytes unchanged when nothing
 * had to change, else the parsed body with the model replaced and our fields removed. When it
 * asks for stream usage the client did not ask for, *plain is the body without that (for an
 * upstream that refuses stream_options), else NULL. Also the in-process engine's (local.c). */
char *server_passthrough_body(struct exchange *ex, size_t *len, char **plain, size_t *plain_len)
{
    cJSON *root = ex->req.body;
    bool changed = strcmp(ex->req.model, ex->req.upstream_model) != 0;
    cJSON *it, *next, *so = NULL;
    bool created = false;

    for (it = root->child; it; it = next) {
        next = it->next;
        if (it->string && strncmp(it->string, "optillm_", 8) == 0) {
            cJSON_DeleteItemFromObjectCaseSensitive(root, it->string);
            changed = true;
        }
    }
    /* Tags were removed from the messages (also JSON-escaped ones: "\u003coptillm_approach>"). */
    if (ex->req.tags_removed)
        changed = true;
    if (!cJSON_GetObjectItemCaseSensitive(root, "model"))
        changed = true;
    /* Every streamed call asks for usage, so that its tokens are counted; the usage event is
     * removed from the client's stream unless it asked too (upstream.c relay_line). */
    *plain = NULL;
    if (ex->req.stream && !ex->req.include_usage) {
        so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
        if (!cJSON_IsObject(so)) {
            cJSON_DeleteItemFromObjectCaseSensitive(root, "stream_options");
            so = cJSON_AddObjectToObject(root, "stream_options");
            created = true;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
        cJSON_AddTrueToObject(so, "include_usage");
        changed = true;
    }
    if (!changed) {
        *len = ex->body.len;
        return xstrndup(buf_cstr(&ex->body), ex->body.len);
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "model"))
        cJSON_ReplaceItemInObjectCaseSensitive(root, "model",
                                               cJSON_CreateString(ex->req.upstream_model));
    else
        cJSON_AddStringToObject(root, "model", ex->req.upstream_model);
    char *s = cJSON_PrintUnformatted(root);
    *len = strlen(s);
    if (so) { /* the tree goes back to what the client asked (also for the conversation log) */
        if (created)
            cJSON_DeleteItemFromObjectCaseSensitive(root, "stream_options");
        else
            cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
        *plain = cJSON_PrintUnformatted(root);
        *plain_len = strlen(*plain);
    }
    return s;
}

static enum MHD_Result do_chat(struct exchange *ex)
{
    struct px_error err;

    if (resolve(ex, &err) < 0)
        return error_now(ex, &err);
    if (ex->door && door_translate(ex, &err) < 0)
        return error_now(ex, &err);
    if (chat_request_parse(ex->arena, buf_cstr(&ex->body), ex->body.len, srv_cfg, &ex->req, &err) <
        0)
        return error_now(ex, &err);
    if (ex->tenant) {
        if (tenants_allow(ex->tenant, &ex->req, &err) < 0)
            return error_now(ex, &err);
        int retry_after;

        if (tenants_admit(ex->tenant, &err, &retry_after) < 0) {
            err.retry_after = retry_after; /* px_fail cleared the record */
            log_at(LOG_INFO, ex->id, "tenant %s: %s", ex->tenant->name, err.message);
            return error_now(ex, &err);
        }
    }
    if (ex->req.route.count == 0) {
        size_t len, plain_len = 0;
        char *plain, *body = server_passthrough_body(ex, &len, &plain, &plain_len);

        return relay(ex, "/chat/completions", body, len, ex->req.stream, plain, plain_len);
    }
    if (ex->door) /* a front door's stream ends with usage (message_delta, response.completed) */
        ex->req.include_usage = ex->req.stream;
    suspend_for_work(ex);
    io_watch(ex);
    if (pool_submit(engine_run, ex) < 0) {
        struct px_error busy;

        px_fail(&busy, PX_EBUSY, NULL,
                "the proxy is at capacity (approach queue full); retry shortly");
        log_at(LOG_WARN, ex->id, "approach queue full: 503");
        exchange_reply_error(ex, &busy);
        exchange_unref(ex);
    }
    return MHD_YES;
}

/* ---- front doors (door.c translates) and plain passthrough paths ---- */

static bool door_path(const char *path)
{
    return strcmp(path, "/messages") == 0 || strcmp(path, "/messages/count_tokens") == 0 ||
           strcmp(path, "/responses") == 0 || strcmp(path, "/embeddings") == 0 ||
           strcmp(path, "/completions") == 0;
}

/* The front door of a path (its errors take the door's shape too), or NULL. */
static struct door *door_for(const char *path)
{
    if (strncmp(path, "/messages", 9) == 0)
        return door_create(DOOR_MESSAGES);
    if (strcmp(path, "/responses") == 0)
        return door_create(DOOR_RESPONSES);
    return NULL;
}

static enum MHD_Result do_door(struct exchange *ex, const char *path)
{
    struct px_error err;

    if (ex->too_big) {
        px_fail(&err, PX_ETOOBIG, NULL, "request body exceeds %zu bytes", srv_cfg->max_body);
        return error_now(ex, &err);
    }
    if (strcmp(path, "/messages/count_tokens") == 0) {
        long n;
        char out[64];

        if (auth_gate(srv_cfg, client_auth(ex), &err) < 0 ||
            door_count_tokens(buf_cstr(&ex->body), ex->body.len, &n, &err) < 0)
            return error_now(ex, &err);
        snprintf(out, sizeof(out), "{\"input_tokens\":%ld}", n);
        return reply_now(ex, 200, "application/json", out, strlen(out));
    }
    if (ex->door)
        return do_chat(ex);
    /* /embeddings, /completions: the body goes upstream untouched. */
    if (resolve(ex, &err) < 0)
        return error_now(ex, &err);
    /* Strict: what the upstream reads (model, stream) is what was checked here. */
    cJSON *root = json_parse_strict(buf_cstr(&ex->body), ex->body.len, &err);

    if (!root)
        return error_now(ex, &err);
    bool stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");

    ex->req.model = ex->req.upstream_model =
        arena_strdup(ex->arena, cJSON_IsString(model) ? model->valuestring : "");
    ex->req.route_name = "none";
    ex->req.n = 1;
    cJSON_Delete(root);
    if (ex->tenant) {
        int retry_after;

        if (tenants_allow(ex->tenant, &ex->req, &err) < 0)
            return error_now(ex, &err);
        if (tenants_admit(ex->tenant, &err, &retry_after) < 0) {
            err.retry_after = retry_after;
            return error_now(ex, &err);
        }
    }
    return relay(ex, path, xstrndup(buf_cstr(&ex->body), ex->body.len), ex->body.len, stream, NULL,
                 0);
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------------------
 */

static const char *strip_v1(const char *url)
{
    if (strncmp(url, "/v1/", 4) == 0)
        return url + 3;
    return url;
}

static enum MHD_Result dispatch(struct exchange *ex)
{
    const char *path = strip_v1(ex->url);

    if (__atomic_load_n(&draining, __ATOMIC_RELAXED) && strcmp(path, "/health") != 0) {
        struct px_error err;

        px_fail(&err, PX_ECANCELLED, NULL,
                "the server is shutting down; retry on another "
                "instance");
        return error_now(ex, &err);
    }
    bool get = strcmp(ex->method, "GET") == 0;
    bool post = strcmp(ex->method, "POST") == 0;
    struct px_error err;
    const char *allow = NULL;

    if (strcmp(path, "/health") == 0) {
        if (get || strcmp(ex->method, "HEAD") == 0)
            return do_health(ex);
        allow = "GET, HEAD";
    } else if (strcmp(path, "/chat/completions") == 0) {
        if (post) {
            if (ex->too_big) {
                px_fail(&err, PX_ETOOBIG, NULL, "request body exceeds %zu bytes",
                        srv_cfg->max_body);
                return error_now(ex, &err);
            }
            return do_chat(ex);
        }
        allow = "POST";
    } else if (door_path(path)) {
        if (!ex->door)
            ex->door = door_for(path);
        if (post)
            return do_door(ex, path);
        allow = "POST";
    } else if (strcmp(path, "/models") == 0) {
        if (get)
            return do_models(ex);
        allow = "GET";
    } else if (strcmp(path, "/metrics") == 0 || strcmp(ex->url, "/metrics") == 0) {
        if (get)
            return do_metrics(ex);
        allow = "GET";
    } else if (strcmp(path, "/approaches") == 0) {
        if (get)
            return do_approaches(ex);
        allow = "GET";
    }
    if (allow) {
        px_fail(&err, PX_EMETHOD, NULL, "method %.16s is not allowed on %.200s (allowed: %s)",
                ex->method, ex->url, allow);
        snprintf(err.allow, sizeof(err.allow), "%s", allow);
        return error_now(ex, &err);
    }
    px_fail(&err, PX_ENOTFOUND, NULL, "unknown path %.200s", ex->url);
    return error_now(ex, &err);
}

static ssize_t content_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct exchange *ex = cls;
    ssize_t n;
    bool wake_relay = false;
    struct io_loop *rl;

    (void)pos;
    pthread_mutex_lock(&ex->mu);
    rl = ex->relay_loop;
    if (ex->out.len > 0) {
        n = (ssize_t)(ex->out.len < max ? ex->out.len : max);
        memcpy(buf, ex->out.data, (size_t)n);
        buf_consume(&ex->out, (size_t)n);
        wake_relay = ex->relay_paused && ex->out.len < PX_STREAM_LOW_WATER;
        pthread_mutex_unlock(&ex->mu);
        if (wake_relay)
            io_wake(rl);
        return n;
    }
    if (ex->out_done || ex->cancelled) {
        bool error = ex->out_error || (ex->cancelled && !ex->out_done);

        pthread_mutex_unlock(&ex->mu);
        return error ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    }
    ex->suspended = true; /* I5: return 0 only right after suspending */
    MHD_suspend_connection(ex->conn);
    pthread_mutex_unlock(&ex->mu);
    return 0; /* the home loop's next sweep watches the fd again (it is still on its list) */
}

static void reader_free(void *cls)
{
    exchange_unref(cls);
}

static enum MHD_Result send_reply(struct exchange *ex)
{
    struct MHD_Response *r;
    int status;
    char ctype[128];
    int retry_after;

    pthread_mutex_lock(&ex->mu);
    if (ex->client_gone) {
        pthread_mutex_unlock(&ex->mu);
        return MHD_NO; /* MHD closes the connection; notify_completed follows */
    }
    if (ex->phase != EX_REPLY) {
        pthread_mutex_unlock(&ex->mu);
        return MHD_YES;
    }
    ex->phase = EX_SENT;
    status = ex->status;
    retry_after = ex->retry_after;
    bool no_retry = ex->no_retry;
    bool streaming = ex->streaming;
    long ncalls = ex->usage.calls;
    const char *budget = ex->budget_header; /* arena: lives as long as ex */
    const char *route = ex->route_header;
    snprintf(ctype, sizeof(ctype), "%s", ex->content_type);
    if (ex->streaming) {
        ex->refs++; /* the content reader's; dropped in reader_free */
        pthread_mutex_unlock(&ex->mu);
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, content_reader, ex,
                                              reader_free);
        if (r) {
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
            MHD_add_response_header(r, "X-Accel-Buffering", "no");
        }
    } else {
        r = MHD_create_response_from_buffer(ex->out.len, ex->out.data, MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&ex->mu);
    }
    if (!r)
        return MHD_NO;
    if (ctype[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, "X-Request-Id", ex->id);
    if (!streaming) {
        char calls[24];

        snprintf(calls, sizeof(calls), "%ld", ncalls);
        MHD_add_response_header(r, "X-Optillm-Upstream-Calls", calls);
        if (budget)
            MHD_add_response_header(r, "X-Optillm-Budget", budget);
        if (route)
            MHD_add_response_header(r, "X-Optillm-Route", route);
    }
    for (const char *h = buf_cstr(&ex->up_headers), *nl; (nl = strchr(h, '\n')); h = nl + 1) {
        char line[300]; /* the upstream's allow-listed headers (Retry-After, x-ratelimit-*) */
        char *colon;

        snprintf(line, sizeof(line), "%.*s", (int)(nl - h), h);
        if ((colon = strchr(line, ':')) != NULL) {
            *colon = '\0';
            if (strcasecmp(line, "Retry-After") == 0 && retry_after > 0)
                continue; /* ours wins */
            MHD_add_response_header(r, line, colon + 2);
        }
    }
    if (retry_after > 0 && status >= 400) {
        char ra[16];

        snprintf(ra, sizeof(ra), "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (no_retry)
        MHD_add_response_header(r, "x-should-retry", "false");
    enum MHD_Result ret = MHD_queue_response(ex->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result too_big_now(struct exchange *ex)
{
    struct px_error err;

    px_fail(&err, PX_ETOOBIG, NULL, "request body exceeds %zu bytes", srv_cfg->max_body);
    return error_now(ex, &err);
}

static enum MHD_Result body_budget_now(struct exchange *ex)
{
    struct px_error err;

    px_fail(&err, PX_EBUSY, NULL,
            "the proxy holds too many request bodies at once (--max-body-memory); retry shortly");
    err.retry_after = 1;
    log_at(LOG_INFO, ex->id, "request-body budget (--max-body-memory) exhausted: 503");
    return error_now(ex, &err);
}

/* Endpoints that take no request body. */
static bool bodyless(const char *path)
{
    return strcmp(path, "/health") == 0 || strcmp(path, "/models") == 0 ||
           strcmp(path, "/metrics") == 0 || strcmp(path, "/approaches") == 0;
}

/* First access-handler call: every header is in, no body byte has been read, and MHD sends
 * "100 Continue" only after we return. A request that declares a body is routed,
 * authenticated and charged against the body budget now, so that a refused one never has
 * its body read: answering on this first call makes MHD close the connection after the
 * answer (P9), which is what a refused upload needs. A request without a body is left for
 * the second call (keep-alive intact). */
static enum MHD_Result headers_in(struct exchange *ex)
{
    const char *cl = header(ex->conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = header(ex->conn, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *path = strip_v1(ex->url);
    unsigned long long len = 0;
    bool has_len = false;
    struct px_error err;

    conn_set(ex->conn, 0, false); /* headers are in: a request is under way */
    if (cl) {
        char *end;

        errno = 0;
        len = strtoull(cl, &end, 10);
        has_len = errno == 0 && end != cl && *end == '\0';
    }
    if (!te && (!has_len || len == 0))
        return MHD_YES;
    if (bodyless(path) && (strcmp(ex->method, "GET") == 0 || strcmp(ex->method, "HEAD") == 0)) {
        px_fail(&err, PX_ETOOBIG, NULL, "%.200s takes no request body", ex->url);
        return error_now(ex, &err);
    }
    if ((strcmp(path, "/chat/completions") != 0 && !door_path(path)) ||
        strcmp(ex->method, "POST") != 0 || __atomic_load_n(&draining, __ATOMIC_RELAXED))
        return dispatch(ex);   /* 404, 405 or 503, before the body */
    ex->door = door_for(path); /* from here on, errors in the door's shape */
    if (strcmp(path, "/messages/count_tokens") != 0 && resolve(ex, &err) < 0)
        return error_now(ex, &err); /* count_tokens needs only the gate (do_door) */
    if (has_len && len > srv_cfg->max_body) {
        const char *expect = header(ex->conn, MHD_HTTP_HEADER_EXPECT);

        ex->too_big = true; /* read and dropped, then 413 (see access_handler) */
        if (expect && strcasecmp(expect, "100-continue") == 0)
            return too_big_now(ex);
    } else if (has_len && !body_reserve(ex, (size_t)len)) {
        return body_budget_now(ex);
    }
    ex->body_deadline_us = px_now_us() + secs_us(srv_cfg->body_timeout);
    conn_set(ex->conn, ex->body_deadline_us, false);
    return MHD_YES;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version, const char *upload,
                                      size_t *upload_size, void **con_cls)
{
    struct exchange *ex = *con_cls;

    (void)cls;
    (void)version;
    if (!ex) {
        ex = exchange_create(conn, method, url);
        *con_cls = ex;
        return headers_in(ex);
    }
    pthread_mutex_lock(&ex->mu); /* other threads write the phase after the hand-off */
    enum ex_phase phase = ex->phase;
    pthread_mutex_unlock(&ex->mu);
    if (phase == EX_RECEIVING) {
        if (*upload_size > 0) {
            if (ex->body_deadline_us && px_now_us() > ex->body_deadline_us) {
                /* MHD cannot answer in the middle of a body (P9b): close, as the reaper would. */
                log_at(LOG_INFO, ex->id, "request body not complete within --body-timeout");
                return MHD_NO;
            }
            if (!ex->too_big && ex->body.len + *upload_size > srv_cfg->max_body) {
                ex->too_big = true;
                buf_free(&ex->body);
            }
            if (!ex->too_big && !ex->over_budget &&
                ex->body.len + *upload_size > ex->body_reserved &&
                !body_reserve(ex, ex->body.len + *upload_size - ex->body_reserved)) {
                ex->over_budget = true; /* a chunked body outgrew the budget: 503 at its end */
                buf_free(&ex->body);
                server_body_release(ex);
            }
            if (ex->too_big || ex->over_budget) {
                /* Read and drop the rest so the client can read our 413 (a client that is
                 * still sending when we close would see a reset instead); past a hard cap,
                 * close (MHD cannot answer in the middle of a body, P9b). */
                ex->discarded += *upload_size;
                *upload_size = 0;
                if (ex->discarded > 4 * (unsigned long long)srv_cfg->max_body + (64u << 20))
                    return too_big_now(ex);
                return MHD_YES;
            }
            buf_append(&ex->body, upload, *upload_size);
            *upload_size = 0;
            return MHD_YES;
        }
        conn_set(ex->conn, 0, false); /* request complete: no deadline while it is served */
        if (ex->over_budget)
            return body_budget_now(ex);
        return dispatch(ex);
    }
    if (phase == EX_SENT) {
        *upload_size = 0; /* the rest of a refused upload is discarded */
        return MHD_YES;
    }
    return send_reply(ex);
}

/* A client-controlled value for the access line: in double quotes, '"' and '\\' escaped,
 * control characters as '?', cut at 'max' bytes, so that no value can forge another field
 * ("model=x status=200"). NULL gives "-". Returns out. */
static const char *quoted(char *out, size_t cap, const char *s, size_t max)
{
    size_t o = 0;

    if (!s)
        s = "-";
    out[o++] = '"';
    for (size_t i = 0; s[i] && i < max && o + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\')
            out[o++] = '\\';
        out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* The access line, metrics and conversation log of a request; called when its last
 * reference goes, so that the work a departed client left behind (a cancelled approach) is
 * counted too. */
void server_account(struct exchange *ex)
{
    const struct usage *u = &ex->usage;
    long long us = ex->completed_us - ex->start_us;
    char qm[24], qu[1100], qt[140], qmod[520];

    metrics_request(ex->req.route_name ? ex->req.route_name : "-", ex->status, us, ex->upstream_us,
                    u, ex->tenant ? ex->tenant->name : NULL);
    convlog_write(ex, ex->status, us);
    if (otlp_on)
        otlp_exchange_end(ex);
    log_at(LOG_INFO, ex->id,
           "%s %s tenant=%s approach=%s model=%s status=%d%s calls=%ld prompt_tokens=%ld "
           "completion_tokens=%ld ms=%.1f",
           quoted(qm, sizeof(qm), ex->method, 16), quoted(qu, sizeof(qu), ex->url, 512),
           quoted(qt, sizeof(qt), ex->tenant ? ex->tenant->name : NULL, 64),
           ex->req.route_name ? ex->req.route_name : "-",
           quoted(qmod, sizeof(qmod), ex->req.model, 256), ex->status,
           ex->closed_early ? " (connection closed)" : "", u->calls, u->prompt_tokens,
           u->completion_tokens, (double)us / 1000.0);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct exchange *ex = *con_cls;

    (void)cls;
    /* A kept-alive connection idles up to --idle-timeout, then has --header-timeout for its
     * next request's headers. */
    conn_set(conn, px_now_us() + secs_us(srv_cfg->idle_timeout + srv_cfg->header_timeout), true);
    if (!ex)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&ex->mu);
    ex->closed = true;
    ex->cancelled = true;
    ex->conn = NULL;
    ex->completed_us = px_now_us();
    ex->closed_early = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    /* Wake the loops only when upstream work may still be running (to abort it now). */
    bool busy = ex->phase != EX_SENT || (ex->streaming && !ex->out_done);
    bool watched = ex->watched;
    if (watched)
        ex->refs++; /* io_unwatch's */
    pthread_mutex_unlock(&ex->mu);
    if (watched)
        io_unwatch(ex); /* its memory goes now, not at the loop's next sweep */
    if (busy && ex->closed_early)
        metrics_cancel(); /* the client left before its answer was complete */
    if (busy) {
        io_wake_all(); /* abort this request's transfers wherever they run */
    } else {
        /* All work is done: account now. A request whose work is still running (a client
         * that left) is accounted when its last reference goes, with the tokens spent. */
        ex->accounted = true;
        server_account(ex);
    }
    exchange_done(ex);
    exchange_unref(ex);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    /* P20: our own way of dropping a departed client, and the write errors that follow a
     * client's hang-up, are routine: debug level, not warnings. */
    if (strstr(msg, "Application reported internal error") ||
        strstr(msg, "application error generating response") || strstr(msg, "Failed to send") ||
        strstr(msg, "forcibly closed") || strstr(msg, "no longer available") ||
        /* a client that hangs up mid-request, or one the deadline reaper cut off */
        strstr(msg, "closed when reading request") ||
        strstr(msg, "closed by remote side with incomplete request")) {
        log_at(LOG_DEBUG, NULL, "libmicrohttpd: %s", msg);
        return;
    }
    log_at(LOG_WARN, NULL, "libmicrohttpd: %s", msg);
}

/* The listening socket the loops' daemons share: non-blocking (every loop polls it; the ones
 * that lose the race for a connection get EAGAIN), SO_REUSEADDR as libmicrohttpd's own. */
static int listen_on(const struct sockaddr *sa, socklen_t sl)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;

    if (fd < 0)
        return -1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (sa->sa_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    if (bind(fd, sa, sl) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Redis admission is a synchronous round trip made by the handler: on a loop it would stall
 * every transfer of that loop, so with --redis-url the default keeps HTTP on its own threads. */
static unsigned http_threads(const struct config *cfg)
{
    if (cfg->http_threads >= 0)
        return (unsigned)cfg->http_threads;
    return cfg->redis_url && cfg->redis_url[0] ? 2 : 0;
}

static struct MHD_Daemon *start_on_loop(unsigned flags, const struct config *cfg, unsigned limit)
{
    return MHD_start_daemon(
        flags, 0, accept_policy, NULL, access_handler, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger,
        NULL, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
        notify_connection, NULL, MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->idle_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(PX_MAX_HEADER_BYTES * 2), MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
        MHD_OPTION_END);
}

/* One daemon per I/O loop, each run by its loop (external epoll), all on one listening socket. */
static int start_loops(const struct config *cfg, const struct sockaddr *sa, socklen_t sl,
                       unsigned flags)
{
    unsigned n = io_count();
    unsigned limit = (unsigned)((cfg->conn_limit + n - 1) / n);

    listen_fd = listen_on(sa, sl);
    if (listen_fd < 0) {
        log_error("cannot listen on %s:%d (%s)", cfg->host, cfg->port, strerror(errno));
        return -1;
    }
    on_loops = xcalloc(n, sizeof(*on_loops));
    for (unsigned i = 0; i < n; i++) {
        const union MHD_DaemonInfo *di;

        on_loops[i] = start_on_loop(flags | MHD_USE_EPOLL, cfg, limit);
        di = on_loops[i] ? MHD_get_daemon_info(on_loops[i], MHD_DAEMON_INFO_EPOLL_FD) : NULL;
        if (!di) {
            log_error("cannot start libmicrohttpd on I/O loop %u", i);
            for (unsigned j = 0; j <= i && on_loops[j]; j++) {
                (void)MHD_quiesce_daemon(on_loops[j]); /* the socket is closed once, below */
                MHD_stop_daemon(on_loops[j]);
            }
            free(on_loops);
            on_loops = NULL;
            close(listen_fd);
            listen_fd = -1;
            return -1;
        }
        n_on_loops = i + 1;
    }
    for (unsigned i = 0; i < n; i++)
        io_serve(i, on_loops[i],
                 MHD_get_daemon_info(on_loops[i], MHD_DAEMON_INFO_EPOLL_FD)->epoll_fd);
    return 0;
}

int server_start(const struct config *cfg)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    /* Thread pool: poll, not epoll. With an epoll thread pool, libmicrohttpd 0.9.75's
     * MHD_quiesce_daemon removes the listening socket from each worker's epoll set while a
     * worker that already saw the quiesce flag may remove it too; the loser's EPOLL_CTL_DEL
     * fails and MHD aborts ("Failed to remove listen FD from epoll set", daemon.c:5531; seen
     * in CI at SIGTERM under load). On the loops each daemon is quiesced by its own loop. */
    unsigned flags = MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;

    srv_cfg = cfg;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)cfg->port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, cfg->host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)cfg->port);
        sl = sizeof(*s6);
        flags |= MHD_USE_IPv6;
    } else {
        log_error("--host %s is not an IPv4 or IPv6 address", cfg->host);
        return -1;
    }
    if (http_threads(cfg) == 0) {
        if (start_loops(cfg, (struct sockaddr *)&ss, sl, flags) < 0)
            return -1;
        struct sockaddr_storage b;
        socklen_t bl = sizeof(b);

        bound_port = cfg->port;
        if (getsockname(listen_fd, (struct sockaddr *)&b, &bl) == 0)
            bound_port = ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
                                                       : ((struct sockaddr_in *)&b)->sin_port);
    } else {
        daemon_ = MHD_start_daemon(
            flags | MHD_USE_POLL_INTERNAL_THREAD, (uint16_t)cfg->port, accept_policy, NULL,
            access_handler, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
            MHD_OPTION_THREAD_POOL_SIZE, http_threads(cfg), MHD_OPTION_NOTIFY_COMPLETED, completed,
            NULL, MHD_OPTION_NOTIFY_CONNECTION, notify_connection, NULL,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->conn_limit, MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)cfg->idle_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
            (size_t)(PX_MAX_HEADER_BYTES * 2), MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096, MHD_OPTION_END);
        if (!daemon_) {
            log_error("cannot listen on %s:%d (in use, or not allowed)", cfg->host, cfg->port);
            return -1;
        }
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
        bound_port = di ? di->port : cfg->port;
    }
    if (reaper_start() < 0) {
        log_error("cannot start the client-deadline thread");
        return -1;
    }
    return 0;
}

int server_port(void)
{
    return bound_port;
}

void server_quiesce(void)
{
    __atomic_store_n(&draining, 1, __ATOMIC_RELAXED);
    if (on_loops) {
        io_quiesce_http(); /* each loop quiesces its own daemon */
        (void)shutdown(listen_fd, SHUT_RDWR);
        return;
    }
    if (daemon_) {
        MHD_socket s = MHD_quiesce_daemon(daemon_);

        /* MHD hands the listening socket back to us, but its worker threads may still have it in
         * a poll set until they wake: closing it now would let the fd number be reused under
         * them (a race TSan reports). Refuse new connections now, close after MHD_stop_daemon. */
        if (s != MHD_INVALID_SOCKET) {
            (void)shutdown(s, SHUT_RDWR);
            quiesced_fd = s;
        }
    }
}

void server_stop(void)
{
    reaper_join();
    if (on_loops) {
        io_quiesce_http(); /* (a no-op after server_quiesce) */
        io_join();         /* no loop runs a daemon any more */
        for (unsigned i = 0; i < n_on_loops; i++)
            MHD_stop_daemon(on_loops[i]);
        free(on_loops);
        on_loops = NULL;
        n_on_loops = 0;
        close(listen_fd);
        listen_fd = -1;
    }
    if (daemon_)
        MHD_stop_daemon(daemon_);
    daemon_ = NULL;
    if (quiesced_fd != MHD_INVALID_SOCKET)
        close(quiesced_fd);
    quiesced_fd = MHD_INVALID_SOCKET;
}
