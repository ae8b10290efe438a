/* fetch.c: the web-fetch transport behind include/fetch.h (readurls), with its SSRF guard,
 * and the readable-text conversion (HTML through libxml2, PDF through pdftotext).
 *
 * Transfers: one curl multi handle per batch, driven on the calling (approach) thread with a
 * hard deadline (the per-URL timeout plus one second); every URL of the batch runs at once.
 * (The upstream I/O loops would be the better home once approach threads become coroutines;
 * the transfers are few, short and capped, so the calling thread is acceptable for now.)
 *
 * SSRF guard, in three layers:
 *  1. before any connection: the URL is parsed (curl's URL API), only http and https pass, the
 *     host is resolved here with getaddrinfo and EVERY address it resolves to is checked
 *     (fetch_addr_allowed): one refused address refuses the URL, without any connection;
 *  2. the connection is pinned to the first checked address (CURLOPT_RESOLVE), so curl does
 *     not resolve again (no DNS rebinding between the check and the connect); proxies from
 *     the environment are disabled;
 *  3. CURLOPT_OPENSOCKETFUNCTION checks the address curl is about to connect to once more and
 *     refuses the socket if it is not allowed (a belt for anything layers 1-2 miss).
 * Redirects are not followed by curl (CURLOPT_FOLLOWLOCATION off): each Location goes through
 * the same three layers as a new hop, at most max_redirects hops. */
#define _GNU_SOURCE /* pipe2, mkostemp */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "config.h"
#include "fetch.h"
#include "log.h"

#define FETCH_MAX_ALLOW 32
#define FETCH_UA        "optillm-c/" PX_VERSION " (readurls)"

/* ---- the SSRF guard ------------------------------------------------------------------------- */

int fetch_cidr_parse(const char *s, struct fetch_cidr *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    long bits;
    char *end;

    while (hl > 0 && isspace((unsigned char)s[hl - 1]))
        hl--;
    while (hl > 0 && isspace((unsigned char)*s)) {
        s++;
        hl--;
    }
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, host, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -1;
    if (!slash) {
        out->bits = out->family == AF_INET ? 32 : 128;
        return 0;
    }
    errno = 0;
    bits = strtol(slash + 1, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || end == slash + 1 || *end || bits < 0 || bits > (out->family == AF_INET ? 32 : 128))
        return -1;
    out->bits = (int)bits;
    return 0;
}

int fetch_allow_parse(const char *list, struct fetch_cidr *out, size_t max)
{
    size_t n = 0;
    const char *p = list;

    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[80];
        bool blank = true;

        for (size_t i = 0; i < len; i++)
            blank = blank && isspace((unsigned char)p[i]);
        if (!blank) {
            if (len >= sizeof(item) || n == max)
                return -1;
            memcpy(item, p, len);
            item[len] = '\0';
            if (fetch_cidr_parse(item, &out[n]) != 0)
                return -1;
            n++;
        }
        p = comma ? comma + 1 : NULL;
    }
    return (int)n;
}

static bool prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
    int full = bits / 8, rest = bits % 8;

    if (memcmp(a, net, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xFF << (8 - rest));

    return (a[full] & mask) == (net[full] & mask);
}

static bool v4_refused(const unsigned char *a)
{
    static const struct {
        unsigned char net[4];
        int bits;
    } blocked[] = {
        {{0, 0, 0, 0}, 8},    {{10, 0, 0, 0}, 8},     {{100, 64, 0, 0}, 10},
        {{127, 0, 0, 0}, 8},  {{169, 254, 0, 0}, 16}, {{172, 16, 0, 0}, 12},
        {{192, 0, 0, 0}, 24}, {{192, 168, 0, 0}, 16}, {{198, 18, 0, 0}, 15},
        {{224, 0, 0, 0}, 4},  {{240, 0, 0, 0}, 4},
    };

    for (size_t i = 0; i < PX_ARRAY_LEN(blocked); i++)
        if (prefix_match(a, blocked[i].net, blocked[i].bits))
            return true;
    return false;
}

static bool in_allow(int family, const unsigned char *a, const struct fetch_cidr *allow,
                     size_t nallow)
{
    for (size_t i = 0; i < nallow; i++)
        if (allow[i].family == family && prefix_match(a, allow[i].addr, allow[i].bits))
            return true;
    return false;
}

static bool v4_allowed(const unsigned char *a, const struct fetch_cidr *allow, size_t nallow)
{
    return in_allow(AF_INET, a, allow, nallow) || !v4_refused(a);
}

bool fetch_addr_allowed(const struct sockaddr *sa, const struct fetch_cidr *allow, size_t nallow)
{
    static const unsigned char zero12[12] = {0};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    static const unsigned char nat64[12] = {0, 0x64, 0xFF, 0x9B};

    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        return v4_allowed((const unsigned char *)&in->sin_addr, allow, nallow);
    }
    if (sa->sa_family != AF_INET6)
        return false;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
    const unsigned char *a = in6->sin6_addr.s6_addr;

    if (in_allow(AF_INET6, a, allow, nallow))
        return true;
    /* IPv4 embedded in IPv6: judged as the IPv4 address (mapped, compatible, NAT64, 6to4) */
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
        return v4_allowed(a + 12, allow, nallow);
    if (memcmp(a, zero12, 12) == 0) {
        /* :: and ::1 are refused outright; ::a.b.c.d is deprecated IPv4-compatible */
        if (a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1)
            return false;
        return v4_allowed(a + 12, allow, nallow);
    }
    if (a[0] == 0x20 && a[1] == 0x02)
        return v4_allowed(a + 2, allow, nallow);
    if ((a[0] & 0xFE) == 0xFC) /* fc00::/7 ULA (fd00:ec2::254 metadata) */
        return false;
    if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) /* fe80::/10 link-local */
        return false;
    if (a[0] == 0xFE && (a[1] & 0xC0) == 0xC0) /* fec0::/10 site-local (deprecated) */
        return false;
    if (a[0] == 0xFF) /* ff00::/8 multicast */
        return false;
    return true;
}

/* ---- one transfer --------------------------------------------------------------------------- */

struct hop {
    struct fetch_req *r;
    struct approach_ctx *ctx;
    const struct fetch_limits *lim;
    const struct fetch_cidr *allow;
    size_t nallow;
    CURL *easy;
    struct curl_slist *resolve;
    struct buf body;
    bool capped;  /* the body reached max_bytes */
    bool blocked; /* the socket callback refused an address */
    char *url;    /* this hop's URL (heap) */
    long long deadline_ms;
    char pin[320]; /* the CURLOPT_RESOLVE entry host:port:checked-address */
    char msg[320]; /* the outcome's message (r->error points here) */
    int resolved;  /* hop_resolve's result */
};

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    struct hop *h = ud;
    size_t n = size * nmemb, room = h->lim->max_bytes - h->body.len;

    if (n > room) {
        buf_append(&h->body, p, room);
        h->capped = true;
        return 0; /* stops the transfer: what was read is kept */
    }
    if (buf_append(&h->body, p, n) != 0)
        return 0;
    return n;
}

static curl_socket_t on_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct hop *h = ud;

    (void)purpose;
    if (!fetch_addr_allowed(&a->addr, h->allow, h->nallow)) {
        h->blocked = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Outcomes; thread-safe (no arena): the message lives in the hop. */
__attribute__((format(printf, 2, 3))) static void refuse(struct hop *h, const char *fmt, ...)
{
    va_list ap;
    int k = snprintf(h->msg, sizeof(h->msg), "refused: ");

    va_start(ap, fmt);
    vsnprintf(h->msg + k, sizeof(h->msg) - (size_t)k, fmt, ap);
    va_end(ap);
    h->r->status = PX_EINVAL;
    h->r->refused = true;
    h->r->error = h->msg;
}

__attribute__((format(printf, 3, 4))) static void fail(struct hop *h, int status, const char *fmt,
                                                       ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(h->msg, sizeof(h->msg), fmt, ap);
    va_end(ap);
    h->r->status = status;
    h->r->error = h->msg;
}

/* Checks h->url (scheme, every resolved address) and fills h->pin with the checked address.
 * Returns 0, or -1 with h->r's outcome filled. Thread-safe: resolutions run in parallel. */
static int hop_resolve(struct hop *h)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char addr[INET6_ADDRSTRLEN + 2] = "", name[256];
    int rc = -1;

    if (!u || curl_url_set(u, CURLUPART_URL, h->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        fail(h, PX_EINVAL, "malformed URL");
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        refuse(h, "%s", "only http and https");
        goto out;
    }
    /* an IPv6 literal comes bracketed */
    snprintf(name, sizeof(name), "%s", host);
    if (name[0] == '[') {
        size_t l = strlen(name);

        memmove(name, name + 1, l);
        if (l >= 2 && name[l - 2] == ']')
            name[l - 2] = '\0';
        char *zone = strchr(name, '%');

        if (zone)
            *zone = '\0';
    }
    int gai = getaddrinfo(name, port, &hints, &res);

    if (gai != 0 || !res) {
        fail(h, PX_EHTTP, "cannot resolve %s", name);
        goto out;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (!fetch_addr_allowed(ai->ai_addr, h->allow, h->nallow)) {
            char shown[INET6_ADDRSTRLEN] = "?";
            const void *bin =
                ai->ai_family == AF_INET
                    ? (const void *)&((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr
                    : (const void *)&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr;

            inet_ntop(ai->ai_family, bin, shown, sizeof(shown));
            refuse(h,
                   "%s resolves to %s, a private or reserved address (--readurls-allow opens "
                   "a range)",
                   name, shown);
            goto out;
        }
        if (!addr[0]) {
            char tmp[INET6_ADDRSTRLEN];
            const void *bin =
                ai->ai_family == AF_INET
                    ? (const void *)&((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr
                    : (const void *)&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr;

            inet_ntop(ai->ai_family, bin, tmp, sizeof(tmp));
            snprintf(addr, sizeof(addr), ai->ai_family == AF_INET6 ? "[%s]" : "%s", tmp);
        }
    }
    snprintf(h->pin, sizeof(h->pin), "%s:%s:%s", host, port, addr);
    rc = 0;
out:
    if (res)
        freeaddrinfo(res);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* The easy handle for a resolved hop, pinned to the checked address, added to multi. Returns
 * 0, or -1 with h->r's outcome filled. */
static int hop_attach(struct hop *h, CURLM *multi)
{
    h->easy = curl_easy_init();
    if (!h->easy) {
        fail(h, PX_EINTERNAL, "out of memory");
        return -1;
    }
    h->resolve = curl_slist_append(NULL, h->pin);
    buf_reset(&h->body);
    h->capped = false;
    curl_easy_setopt(h->easy, CURLOPT_URL, h->url);
    curl_easy_setopt(h->easy, CURLOPT_PRIVATE, h);
    curl_easy_setopt(h->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h->easy, CURLOPT_RESOLVE, h->resolve);
    curl_easy_setopt(h->easy, CURLOPT_PROXY, "");
    curl_easy_setopt(h->easy, CURLOPT_OPENSOCKETFUNCTION, on_opensocket);
    curl_easy_setopt(h->easy, CURLOPT_OPENSOCKETDATA, h);
    curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->easy, CURLOPT_USERAGENT, FETCH_UA);
    curl_easy_setopt(h->easy, CURLOPT_ACCEPT_ENCODING, "");
    long left = (long)(h->deadline_ms - mono_ms());

    curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, left > 1 ? left : 1L);
    curl_easy_setopt(h->easy, CURLOPT_CONNECTTIMEOUT_MS, left > 1 ? left : 1L);
    if (curl_multi_add_handle(multi, h->easy) != CURLM_OK) {
        fail(h, PX_EINTERNAL, "cannot start the transfer");
        return -1;
    }
    return 0;
}

static int hop_start(struct hop *h, CURLM *multi)
{
    return hop_resolve(h) == 0 ? hop_attach(h, multi) : -1;
}

static void *resolve_main(void *arg)
{
    struct hop *h = arg;

    h->resolved = hop_resolve(h);
    return NULL;
}

static void hop_release(struct hop *h, CURLM *multi)
{
    if (h->easy) {
        curl_multi_remove_handle(multi, h->easy);
        curl_easy_cleanup(h->easy);
        h->easy = NULL;
    }
    curl_slist_free_all(h->resolve);
    h->resolve = NULL;
}

/* A finished hop: the outcome, or the next hop of a redirect. Returns true when h->r is done. */
static bool hop_done(struct hop *h, CURLM *multi, CURLcode cc)
{
    struct fetch_req *r = h->r;
    long code = 0;
    char *ct = NULL, *loc = NULL;

    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(h->easy, CURLINFO_CONTENT_TYPE, &ct);
    curl_easy_getinfo(h->easy, CURLINFO_REDIRECT_URL, &loc);
    r->http_status = (int)code;
    r->final_url = arena_strdup(h->ctx->arena, h->url);
    if (h->blocked) {
        hop_release(h, multi);
        refuse(h, "%s", "the connection address is private or reserved");
        return true;
    }
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && h->capped)) {
        hop_release(h, multi);
        fail(h, cc == CURLE_OPERATION_TIMEDOUT ? PX_ETIMEDOUT : PX_EHTTP, "%s",
             cc == CURLE_OPERATION_TIMEDOUT ? "timed out" : curl_easy_strerror(cc));
        return true;
    }
    if (code >= 300 && code < 400 && loc) {
        char *next = strdup(loc);

        hop_release(h, multi);
        if (!next) {
            fail(h, PX_EINTERNAL, "out of memory");
            return true;
        }
        if (r->redirects >= h->lim->max_redirects) {
            free(next);
            fail(h, PX_EHTTP, "more than %d redirects", h->lim->max_redirects);
            return true;
        }
        r->redirects++;
        free(h->url);
        h->url = next;
        return hop_start(h, multi) != 0;
    }
    if (code < 200 || code >= 300) {
        hop_release(h, multi);
        fail(h, PX_EHTTP, "HTTP %ld", code);
        return true;
    }
    /* the media type, lower-cased, without parameters */
    char *t = arena_strdup(h->ctx->arena, ct ? ct : "");

    t[strcspn(t, "; \t")] = '\0';
    for (char *p = t; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    r->content_type = t;
    r->len = h->body.len;
    r->body = arena_strndup(h->ctx->arena, h->body.len ? h->body.data : "", h->body.len);
    r->truncated = h->capped;
    r->status = PX_OK;
    r->error = NULL;
    hop_release(h, multi);
    return true;
}

static int real_fetch(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                      const struct fetch_limits *lim)
{
    struct fetch_cidr allow[FETCH_MAX_ALLOW];
    /* the handle is the configuration (llm_api.c's approach_opts_of) */
    const struct config *cfg = (const struct config *)(const void *)ctx->opts;
    const char *list = lim->allow ? lim->allow : cfg ? cfg->readurls_allow : NULL;
    int nallow = list && *list ? fetch_allow_parse(list, allow, FETCH_MAX_ALLOW) : 0;
    struct hop *hops = arena_calloc(ctx->arena, n ? n : 1, sizeof(*hops));
    long long deadline = mono_ms() + (long long)(lim->timeout * 1000);
    CURLM *multi = curl_multi_init();
    size_t running = 0;
    int ok = 0;

    if (nallow < 0) {
        log_at(LOG_WARN, ctx->req_id, "readurls: bad allow list ignored");
        nallow = 0;
    }
    for (size_t i = 0; i < n; i++) {
        struct hop *h = &hops[i];

        reqs[i].status = PX_EHTTP;
        reqs[i].error = "not fetched";
        reqs[i].content_type = "";
        reqs[i].body = "";
        h->r = &reqs[i];
        h->ctx = ctx;
        h->lim = lim;
        h->allow = allow;
        h->nallow = (size_t)nallow;
        h->deadline_ms = deadline;
        buf_init(&h->body, lim->max_bytes + 1);
        h->url = strdup(reqs[i].url);
        h->resolved = -1;
        if (!multi || !h->url)
            fail(h, PX_EINTERNAL, "out of memory");
    }
    /* names resolved and checked in parallel (a slow resolver costs one lookup, not n) */
    pthread_t *tid = arena_calloc(ctx->arena, n ? n : 1, sizeof(*tid));
    bool *started = arena_calloc(ctx->arena, n ? n : 1, sizeof(*started));

    for (size_t i = 0; i < n; i++) {
        if (!hops[i].url || !multi)
            continue;
        if (n > 1 && pthread_create(&tid[i], NULL, resolve_main, &hops[i]) == 0)
            started[i] = true;
        else
            hops[i].resolved = hop_resolve(&hops[i]);
    }
    for (size_t i = 0; i < n; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        if (hops[i].url && multi && hops[i].resolved == 0 && hop_attach(&hops[i], multi) == 0)
            running++;
    }
    /* the hard cap: the timeout plus a second, whatever curl does */
    while (running > 0 && mono_ms() < deadline + 1000) {
        int still = 0, left = 0;
        CURLMsg *m;

        curl_multi_perform(multi, &still);
        while ((m = curl_multi_info_read(multi, &left))) {
            struct hop *h = NULL;

            if (m->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)(void *)&h);
            if (h && hop_done(h, multi, m->data.result))
                running--;
        }
        if (running > 0)
            curl_multi_poll(multi, NULL, 0, 50, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        if (hops[i].easy) {
            hop_release(&hops[i], multi);
            fail(&hops[i], PX_ETIMEDOUT, "timed out");
        }
        buf_free(&hops[i].body);
        free(hops[i].url);
        if (reqs[i].status == PX_OK)
            ok++;
        else
            log_at(LOG_WARN, ctx->req_id, "readurls: %s: %s", reqs[i].url, reqs[i].error);
    }
    if (multi)
        curl_multi_cleanup(multi);
    return ok;
}

static fetch_batch_fn *transport = real_fetch;

void fetch_set_transport(fetch_batch_fn *fn)
{
    transport = fn ? fn : real_fetch;
}

int fetch_batch(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                const struct fetch_limits *lim)
{
    return transport(ctx, reqs, n, lim);
}

/* ---- readable text ----------------------------------------------------------------------------
 */

static bool skipped(const char *name)
{
    static const char *const drop[] = {"script", "style",    "nav",    "header", "footer",
                                       "aside",  "noscript", "head",   "form",   "template",
                                       "svg",    "iframe",   "button", "select", NULL};

    for (int i = 0; drop[i]; i++)
        if (strcmp(name, drop[i]) == 0)
            return true;
    return false;
}

static bool block(const char *name)
{
    static const char *const blocks[] = {
        "p",          "div", "br", "h1", "h2",         "h3",      "h4",      "h5",   "h6",
        "li",         "ul",  "ol", "tr", "table",      "section", "article", "main", "pre",
        "blockquote", "dt",  "dd", "hr", "figcaption", "title",   NULL};

    for (int i = 0; blocks[i]; i++)
        if (strcmp(name, blocks[i]) == 0)
            return true;
    return false;
}

struct text_out {
    struct buf b;
    bool space; /* a pending separator */
};

static void put_text(struct text_out *o, const char *s)
{
    for (; *s; s++) {
        /* footnote markers such as [12] (OptiLLM drops every bracketed span; only these go) */
        if (*s == '[' && isdigit((unsigned char)s[1])) {
            size_t k = 1;

            while (k < 5 && isdigit((unsigned char)s[k]))
                k++;
            if (s[k] == ']') {
                s += k;
                continue;
            }
        }
        if (isspace((unsigned char)*s)) {
            o->space = true;
            continue;
        }
        if (o->space && o->b.len > 0 && o->b.data[o->b.len - 1] != '\n')
            buf_append(&o->b, " ", 1);
        o->space = false;
        buf_append(&o->b, s, 1);
    }
}

static void put_newline(struct text_out *o)
{
    o->space = false;
    if (o->b.len > 0 && o->b.data[o->b.len - 1] != '\n')
        buf_append(&o->b, "\n", 1);
}

static void walk(xmlNode *n, struct text_out *o, int depth)
{
    for (; n && depth < 1000; n = n->next) {
        if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
            if (n->content)
                put_text(o, (const char *)n->content);
            continue;
        }
        if (n->type != XML_ELEMENT_NODE)
            continue;
        const char *name = (const char *)n->name;

        if (skipped(name))
            continue;
        if (strcmp(name, "td") == 0 || strcmp(name, "th") == 0) {
            if (n->prev && o->b.len > 0 && o->b.data[o->b.len - 1] != '\n')
                buf_append(&o->b, " | ", 3);
            o->space = false;
        }
        if (block(name))
            put_newline(o);
        walk(n->children, o, depth + 1);
        if (block(name))
            put_newline(o);
    }
}

static bool is_main(xmlNode *n)
{
    xmlChar *role, *cls;
    bool yes = false;

    if (strcmp((const char *)n->name, "article") == 0 || strcmp((const char *)n->name, "main") == 0)
        return true;
    role = xmlGetProp(n, (const xmlChar *)"role");
    yes = role && strcmp((const char *)role, "main") == 0;
    xmlFree(role);
    if (!yes) {
        cls = xmlGetProp(n, (const xmlChar *)"class");
        yes = cls && strstr((const char *)cls, "main-content");
        xmlFree(cls);
    }
    return yes;
}

/* The first main-content element in document order (not inside a dropped element). */
static xmlNode *find_main(xmlNode *n, int depth)
{
    for (; n && depth < 1000; n = n->next) {
        if (n->type != XML_ELEMENT_NODE || skipped((const char *)n->name))
            continue;
        if (is_main(n))
            return n;
        xmlNode *m = find_main(n->children, depth + 1);

        if (m)
            return m;
    }
    return NULL;
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

/* libxml2 must be initialised once before threads use it concurrently. */
static void xml_init(void)
{
    xmlInitParser();
}

const char *html_to_text(struct arena *a, const char *html, size_t len)
{
    htmlDocPtr doc;
    xmlNode *root, *start;
    struct text_out o = {.space = false};
    const char *text;

    if (len == 0 || len > (size_t)1 << 30)
        return "";
    pthread_once(&xml_once, xml_init);
    doc = htmlReadMemory(html, (int)len, NULL, "UTF-8",
                         HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                             HTML_PARSE_NONET);
    if (!doc)
        return "";
    root = xmlDocGetRootElement(doc);
    start = find_main(root, 0);
    buf_init(&o.b, 0);
    if (start) {
        walk(start->children, &o, 0);
    } else {
        walk(root, &o, 0);
    }
    text = arena_strndup(a, o.b.len ? o.b.data : "", o.b.len);
    buf_free(&o.b);
    xmlFreeDoc(doc);
    /* trim */
    while (*text == '\n' || *text == ' ')
        text++;
    size_t tl = strlen(text);

    while (tl > 0 && (text[tl - 1] == '\n' || text[tl - 1] == ' '))
        tl--;
    return arena_strndup(a, text, tl);
}

/* PDF through "pdftotext -q - -" (stdin to stdout), at most 10 s and max_out bytes of text. */
static const char *pdf_to_text(struct arena *a, const char *pdf, size_t len, const char **why)
{
    int in[2], out[2];
    pid_t pid;
    struct buf b;
    long long deadline = mono_ms() + 10000;
    size_t sent = 0;
    bool timed_out = false;
    int status = 0;

    if (pipe2(in, O_CLOEXEC) != 0)
        return *why = "cannot run pdftotext", NULL;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return *why = "cannot run pdftotext", NULL;
    }
    pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execlp("pdftotext", "pdftotext", "-q", "-enc", "UTF-8", "-", "-", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        return *why = "cannot run pdftotext", NULL;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    buf_init(&b, 1u << 20);
    for (;;) {
        struct pollfd p[2] = {{.fd = out[0], .events = POLLIN},
                              {.fd = sent < len ? in[1] : -1, .events = POLLOUT}};
        long long left = deadline - mono_ms();

        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (poll(p, 2, (int)left) < 0 && errno != EINTR)
            break;
        if (p[1].revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t w = write(in[1], pdf + sent, len - sent);

            if (w > 0)
                sent += (size_t)w;
            if (w < 0 && errno != EAGAIN)
                sent = len;
            if (sent >= len) {
                close(in[1]);
                in[1] = -1;
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char chunk[8192];
            ssize_t r = read(out[0], chunk, sizeof(chunk));

            if (r <= 0)
                break;
            if (buf_append(&b, chunk, (size_t)r) != 0)
                break; /* the cap: the rest is not needed */
        }
    }
    if (in[1] >= 0)
        close(in[1]);
    close(out[0]);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        buf_free(&b);
        return *why = "PDF needs pdftotext (Debian package poppler-utils)", NULL;
    }
    if (timed_out && b.len == 0) {
        buf_free(&b);
        return *why = "pdftotext timed out", NULL;
    }
    const char *t = arena_strndup(a, b.len ? b.data : "", b.len);

    buf_free(&b);
    return t;
}

const char *fetch_readable(struct arena *a, const struct fetch_req *r, const char **why)
{
    const char *ct = r->content_type ? r->content_type : "";
    bool html = !strcmp(ct, "text/html") || !strcmp(ct, "application/xhtml+xml");
    bool json = !strcmp(ct, "application/json") ||
                (strlen(ct) > 5 && !strcmp(ct + strlen(ct) - 5, "+json"));

    *why = NULL;
    if (!strcmp(ct, "application/pdf"))
        return pdf_to_text(a, r->body, r->len, why);
    if (!html && !json && strncmp(ct, "text/", 5) != 0 && *ct) {
        *why = arena_printf(a, "unsupported content type %s", ct);
        return NULL;
    }
    if (memchr(r->body, '\0', r->len)) {
        *why = "binary content";
        return NULL;
    }
    if (html || (!*ct && r->len > 0 && strchr("< \t\r\n", r->body[0])))
        return html_to_text(a, r->body, r->len);
    return r->body;
}
