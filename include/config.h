/* config.h: the server's configuration, built once from flags and environment at start-up and
 * read-only afterwards (no lock needed). Also the compile-time caps. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define PX_VERSION "0.1.0"

/* Caps (every growing buffer has one). */
#define PX_MAX_UPSTREAM_REPLY (16u << 20)  /* 16 MiB for one upstream answer */
#define PX_MAX_HEADER_BYTES   (8u << 10)   /* client headers; MHD pool per connection: 2x */
#define PX_STREAM_HIGH_WATER  (256u << 10) /* pause the upstream above this much unsent */
#define PX_STREAM_LOW_WATER   (64u << 10)
#define PX_STREAM_OUT_CAP     (8u << 20) /* an approach stream's unsent bytes: over it, drop */
#define PX_MAX_OPTIONS        64

struct config_option_value {
    const char *name; /* an approach_option name */
    double value;
};

struct config {
    /* network */
    char host[64];         /* bind address, default 127.0.0.1 */
    int port;              /* default 8000; 0 = ephemeral (printed at start-up) */
    int http_threads;      /* libmicrohttpd pool size; 0: HTTP on the I/O loops; -1: auto */
    unsigned io_loops;     /* upstream I/O loops, default = cores */
    unsigned workers;      /* approach threads, max; default 1024 */
    unsigned queue_max;    /* approach queue, default 4096 */
    unsigned conn_limit;   /* client connections, default 4096 */
    size_t max_body;       /* bytes, default 8 MiB */
    unsigned idle_timeout; /* seconds for idle/slow clients, default 60 */
    double sse_keepalive;  /* seconds between SSE comments before the first byte, default 10 */
    double drain_timeout;  /* seconds to finish in-flight requests on SIGTERM, default 30 */

    /* slow and greedy clients (server.c, "client limits") */
    double header_timeout;  /* seconds to send a request's headers, default 10 */
    double body_timeout;    /* seconds to send a request's body, default 60 */
    unsigned per_ip_conns;  /* connections per client address (127.0.0.1, ::1 exempt), 256 */
    size_t max_body_memory; /* request-body bytes held by all requests at once, 256 MiB */

    /* upstream */
    char base_url[1024];     /* ends with /v1 normally; no trailing slash */
    char *upstream_key;      /* server key (OPENAI_API_KEY / --upstream-key) or NULL */
    char auth_header[64];    /* "Authorization" (Bearer) or e.g. "api-key" */
    bool client_keys;        /* --client-keys */
    double upstream_timeout; /* seconds per call, default 600 */
    double connect_timeout;  /* seconds, default 10 */
    bool upstream_h2c;       /* --upstream-h2c: HTTP/2 without TLS by prior knowledge */
    bool upstream_curl_only; /* --upstream-curl-only: no call takes the lean client (h1.c) */
    int retries;             /* per call, for 429, 5xx and connect errors; default 2 */
    double retry_base;       /* first backoff delay in seconds, default 0.5 (doubles) */
    double request_timeout;  /* whole-request deadline in seconds; 0 = none (default 0) */
    int max_request_calls;   /* upstream calls one request may begin; 0 = none (default 512) */
    int max_request_tokens;  /* prompt+completion tokens of one request's calls (default 1e6) */
    char *fallback_urls[8];  /* --fallback-base-url, tried in order after the primary fails */
    int nfallback;

    /* clients */
    char *gate_key;          /* --optillm-api-key / OPTILLM_API_KEY, or NULL */
    char *tenants_path;      /* --tenants FILE, or NULL */
    char *providers_path;    /* --providers FILE, or NULL */
    char *log_conversations; /* --log-conversations DIR, or NULL */

    /* several instances: state shared through Redis (src/redis.c) */
    char *redis_url;          /* --redis-url / OPTILLM_REDIS_URL (may hold a password), or NULL */
    char redis_prefix[64];    /* key prefix, default "optillm:" */
    char redis_failure[8];    /* "open" (default) or "closed" */
    char upstream_ca[512];    /* --upstream-ca: CA file for https:// upstreams, "" = system's */
    char redis_tls_ca[512];   /* rediss://: CA file, "" = the system's store */
    char redis_tls_cert[512]; /* rediss://: client certificate, "" = none */
    char redis_tls_key[512];  /* rediss://: its key, "" = in the certificate file */
    bool redis_tls_insecure;  /* rediss:// without verification */
    bool redis_fail_closed;   /* redis_failure is "closed" */

    /* approaches */
    char approach[128]; /* default route value; "auto" = passthrough */
    char model[256];    /* default model when the body has none */
    int n;              /* default n */
    bool return_full_response;
    bool no_approach_tags;
    char *prompts_dir;         /* NULL: embedded prompts only */
    char privacy_ner_url[512]; /* --privacy-ner-url: names and places for privacy; "" = off */
    char *spl_db;              /* --spl-db: spl's strategy store (SQLite), or NULL: memory */
    char *router_config;       /* --router-config: the router's routes file, or NULL */
    char *mcp_config;          /* --mcp-config: MCP servers file for the mcp approach, or NULL */
    char *memory_file;         /* --memory-file: memory's findings appended as JSONL, or NULL */
    char readurls_allow[1024]; /* --readurls-allow: comma-separated CIDRs, "" = none */
    char search_url[512];    /* --search-url: web_search's SearxNG-compatible JSON API; "" = off */
    char otlp_endpoint[512]; /* --otlp-endpoint: OTLP/HTTP trace receiver; "" = off */
    struct config_option_value options[PX_MAX_OPTIONS]; /* approach options set by flag/env */
    size_t noptions;
    bool enable_code_execution; /* executecode, coc: Python in the sandbox (src/sandbox.c) */
    double code_timeout;        /* seconds of wall clock per sandboxed run, default 10 */

    /* logging */
    int log_level;
    bool log_json;
};

/* The process configuration; set by main before threads start. */
extern const struct config *px_config;

/* Fills 'cfg' with defaults, then the environment, then argv. Returns 0 to run, 1 when it
 * printed --help/--version (exit 0), -1 on a bad flag (message printed, exit 2). */
int config_load(struct config *cfg, int argc, char **argv);
/* Frees the strings config_load allocated. */
void config_cleanup(struct config *cfg);
/* Server value of an approach option (flag/env), or 'def' when not set. */
double config_option(const struct config *cfg, const char *name, double def);
/* Prints --help to stdout. */
void config_usage(const char *prog);

#endif
