/* fetch.h: the web-fetch contract plugins use (readurls). As with llm_*, an approach never
 * touches sockets: it hands URLs to fetch_batch and gets bodies back. Everything about safety
 * lives behind it: http/https only, every resolved address checked against the SSRF guard
 * (loopback, private, link-local, CGNAT, ULA, multicast, metadata... refused unless the
 * operator's allow list opens the range), the connection pinned to the checked address, every
 * redirect re-checked, a size cap and a time cap. */
#ifndef FETCH_H
#define FETCH_H

#include <stdbool.h>
#include <stddef.h>

struct approach_ctx;
struct arena;
struct sockaddr;

/* One URL to fetch; the outcome is filled in (memory in ctx->arena). */
struct fetch_req {
    const char *url;          /* in: an absolute http(s) URL */
    int status;               /* PX_OK, or a negative px_status */
    const char *error;        /* why it failed ("refused: ...", "timed out", ...), or NULL */
    int http_status;          /* of the last hop; 0 when no response came */
    const char *content_type; /* lower-cased media type without parameters, "" if none */
    const char *body;         /* NUL-terminated (binary bodies may hold NULs: use len) */
    size_t len;
    bool truncated;        /* the body was cut at the size cap */
    const char *final_url; /* after redirects */
    int redirects;         /* hops followed */
    bool refused;          /* the SSRF guard refused a hop (no connection was made to it) */
};

struct fetch_limits {
    size_t max_bytes;  /* body cap per URL (the rest is not read) */
    double timeout;    /* seconds for one URL, all hops included */
    int max_redirects; /* hops followed at most (5) */
    const char *allow; /* comma-separated CIDRs; NULL: the server's --readurls-allow */
};

/* Fetches n URLs at once and returns when all have finished or timed out. Returns the number
 * fetched successfully (a 2xx answer). Never fails as a whole. */
int fetch_batch(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                const struct fetch_limits *lim);

/* Tests replace the transport (NULL restores the real one). */
typedef int fetch_batch_fn(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                           const struct fetch_limits *lim);
void fetch_set_transport(fetch_batch_fn *fn);

/* The readable text of a fetched body, in 'a': HTML (text/html, application/xhtml+xml) through
 * html_to_text, text/... and JSON as they are, PDF through pdftotext when installed. NULL with
 * *why set for binary or unsupported content. */
const char *fetch_readable(struct arena *a, const struct fetch_req *r, const char **why);

/* Readable text of an HTML document (libxml2's HTML parser, errors recovered): the first
 * <article>, <main> or role="main" element when there is one, else the body; script, style,
 * nav, header, footer, aside, noscript, template, form and svg dropped; block elements on
 * their own lines, table cells joined by " | ", footnote markers ("[12]") dropped, whitespace
 * collapsed. In 'a'; "" when empty. */
const char *html_to_text(struct arena *a, const char *html, size_t len);

/* ---- the SSRF guard (exposed for tests) ---- */

struct fetch_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
};

/* Parses "10.0.0.0/8", "fd00::/8" or a bare address (a /32 or /128). 0 or -1. */
int fetch_cidr_parse(const char *s, struct fetch_cidr *out);
/* Parses a comma-separated list into out[0..max-1]; returns the count or -1 (bad entry). */
int fetch_allow_parse(const char *list, struct fetch_cidr *out, size_t max);
/* May a connection go to this address? Refused: 0.0.0.0/8, 10/8, 100.64/10, 127/8,
 * 169.254/16, 172.16/12, 192.0.0/24, 192.168/16, 198.18/15, 224/4, 240/4 (broadcast incl.),
 * ::, ::1, fc00::/7 (fd00:ec2::254 incl.), fe80::/10, fec0::/10, ff00::/8, and IPv4 embedded in
 * IPv6 (::ffff:a.b.c.d, ::a.b.c.d, 64:ff9b::/96, 2002::/16) judged as that IPv4 address.
 * An address inside one of allow[0..nallow-1] is allowed. */
bool fetch_addr_allowed(const struct sockaddr *sa, const struct fetch_cidr *allow, size_t nallow);

#endif
