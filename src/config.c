/* config.c: defaults, environment and command-line flags (OptiLLM-compatible where they
 * exist), and --help. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "approach.h"
#include "fetch.h"
#include "log.h"
#include "px.h"

const struct config *px_config;

enum opt_type {
    T_STR,
    T_SECRET,
    T_INT,
    T_UINT,
    T_DOUBLE,
    T_BOOL,
    T_SIZE,
    T_LOG,
    T_LOGFMT,
    T_RETRIES,
    T_URLS,
    T_CIDRS
};

struct flag {
    const char *name; /* long flag without "--" */
    const char *alt;  /* alternative spelling or NULL */
    const char *env;  /* environment variable or NULL */
    enum opt_type type;
    size_t off;      /* offset in struct config */
    size_t len;      /* for T_STR: buffer size; 0 = char * (malloc'd) */
    const char *arg; /* metavariable for --help */
    const char *help;
};

#define OFF(f) offsetof(struct config, f)
#define SZ(f)  sizeof(((struct config *)0)->f)

static const struct flag flags[] = {
    {"host", NULL, "OPTILLM_HOST", T_STR, OFF(host), SZ(host), "ADDR",
     "address to listen on (default 127.0.0.1; 0.0.0.0 exposes the proxy: set a gate key)"},
    {"port", NULL, "OPTILLM_PORT", T_INT, OFF(port), 0, "N",
     "port to listen on (default 8000; 0 picks a free one and logs it)"},
    {"base-url", "base_url", "OPTILLM_BASE_URL", T_STR, OFF(base_url), SZ(base_url), "URL",
     "upstream OpenAI-compatible API, including /v1 (default https://api.openai.com/v1)"},
    {"upstream-key", NULL, NULL, T_SECRET, OFF(upstream_key), 0, "KEY",
     "server-wide upstream key (prefer the OPENAI_API_KEY environment variable: flags are "
     "visible in ps)"},
    {"upstream-auth-header", NULL, "OPTILLM_UPSTREAM_AUTH_HEADER", T_STR, OFF(auth_header),
     SZ(auth_header), "NAME",
     "header that carries the upstream key: Authorization (as 'Bearer KEY', default) or e.g. "
     "api-key for Azure OpenAI"},
    {"client-keys", NULL, "OPTILLM_CLIENT_KEYS", T_BOOL, OFF(client_keys), 0, NULL,
     "a client's own provider key wins over the server key: its Bearer token without a gate, "
     "its X-Upstream-Api-Key header behind one"},
    {"optillm-api-key", "optillm_api_key", "OPTILLM_API_KEY", T_SECRET, OFF(gate_key), 0, "KEY",
     "gate key: clients must send 'Authorization: Bearer KEY' (never forwarded upstream)"},
    {"tenants", NULL, "OPTILLM_TENANTS", T_SECRET, OFF(tenants_path), 0, "FILE",
     "multi-tenant keys: a JSON file of tenants (SHA-256 key digests, own upstream, allowed "
     "approaches and models, limits); SIGHUP reloads it (see 'optillm keys')"},
    {"providers", NULL, "OPTILLM_PROVIDERS", T_SECRET, OFF(providers_path), 0, "FILE",
     "several upstreams: a JSON file of providers (base_url, key_env, weight, models, "
     "max_concurrent) and a strategy (round_robin, weighted, failover); see the README"},
    {"redis-url", NULL, "OPTILLM_REDIS_URL", T_SECRET, OFF(redis_url), 0, "URL",
     "redis://[user:pass@]HOST[:PORT][/DB]: tenants' requests per minute and tokens per day "
     "are shared by every instance using this Redis; rediss:// for TLS (verified against the "
     "system's CAs or --redis-tls-ca)"},
    {"redis-tls-ca", NULL, "OPTILLM_REDIS_TLS_CA", T_STR, OFF(redis_tls_ca), SZ(redis_tls_ca),
     "FILE",
     "rediss://: CA certificates (PEM) to verify the Redis server with (default: the "
     "system's store)"},
    {"redis-tls-cert", NULL, "OPTILLM_REDIS_TLS_CERT", T_STR, OFF(redis_tls_cert),
     SZ(redis_tls_cert), "FILE",
     "rediss://: client certificate (PEM) for servers that require one (mutual TLS)"},
    {"redis-tls-key", NULL, "OPTILLM_REDIS_TLS_KEY", T_STR, OFF(redis_tls_key), SZ(redis_tls_key),
     "FILE", "rediss://: the client certificate's private key (PEM)"},
    {"redis-tls-insecure", NULL, "OPTILLM_REDIS_TLS_INSECURE", T_BOOL, OFF(redis_tls_insecure), 0,
     NULL, "rediss://: do not verify the server's certificate (testing only; warned at start)"},
    {"redis-prefix", NULL, "OPTILLM_REDIS_PREFIX", T_STR, OFF(redis_prefix), SZ(redis_prefix),
     "PREFIX", "prefix of every Redis key (default optillm:)"},
    {"redis-failure", NULL, "OPTILLM_REDIS_FAILURE", T_STR, OFF(redis_failure), SZ(redis_failure),
     "MODE",
     "when Redis is unreachable or slow: open (default: each instance enforces the limits "
     "alone, with a warning and optillm_redis_errors_total) or closed (requests of tenants "
     "with limits get 503)"},
    {"approach", NULL, "OPTILLM_APPROACH", T_STR, OFF(approach), SZ(approach), "NAME",
     "approach for requests that name none (default auto = passthrough)"},
    {"model", NULL, "OPTILLM_MODEL", T_STR, OFF(model), SZ(model), "NAME",
     "model for requests that name none (default gpt-4o-mini)"},
    {"n", NULL, "OPTILLM_N", T_INT, OFF(n), 0, "N",
     "default number of choices for approach requests that send no n (default 1)"},
    {"return-full-response", "return_full_response", "OPTILLM_RETURN_FULL_RESPONSE", T_BOOL,
     OFF(return_full_response), 0, NULL,
     "cot_reflection returns its thinking and reflection too, not only the output section"},
    {"no-approach-tags", NULL, "OPTILLM_NO_APPROACH_TAGS", T_BOOL, OFF(no_approach_tags), 0, NULL,
     "ignore <optillm_approach> tags in messages for selection (they are still removed)"},
    {"enable-code-execution", NULL, "OPTILLM_ENABLE_CODE_EXECUTION", T_BOOL,
     OFF(enable_code_execution), 0, NULL,
     "allow the executecode and coc approaches to run Python (the client's and the model's) "
     "in a bubblewrap sandbox: no network, read-only /usr, a private /tmp, no keys, limits; "
     "off by default (their requests get 400)"},
    {"code-execution-timeout", NULL, "OPTILLM_CODE_EXECUTION_TIMEOUT", T_DOUBLE, OFF(code_timeout),
     0, "SECONDS",
     "wall-clock limit of one sandboxed Python run; CPU time is limited to it + 1 s "
     "(default 10)"},
    {"prompts-dir", NULL, "OPTILLM_PROMPTS_DIR", T_SECRET, OFF(prompts_dir), 0, "DIR",
     "override built-in prompts with DIR/<approach>/<stage>.txt files"},
    {"privacy-ner-url", NULL, "OPTILLM_PRIVACY_NER_URL", T_STR, OFF(privacy_ner_url),
     SZ(privacy_ner_url), "URL",
     "privacy: also mask names and places found by this trusted NER service (Presidio analyzer "
     "API: POST {text, language} -> entities; off by default: then only pattern-based PII)"},
    {"search-url", NULL, "OPTILLM_SEARCH_URL", T_STR, OFF(search_url), SZ(search_url), "URL",
     "web_search: a SearxNG-compatible JSON search API you host (GET URL?q=...&format=json); "
     "trusted as configured (not under the SSRF guard); off by default"},
    {"spl-db", NULL, "OPTILLM_SPL_DB", T_SECRET, OFF(spl_db), 0, "FILE",
     "spl: keep learnt strategies in this SQLite file (WAL; proxies on one host may share it); "
     "default: in memory, lost on exit"},
    {"router-config", NULL, "OPTILLM_ROUTER_CONFIG", T_SECRET, OFF(router_config), 0, "FILE",
     "router: task types and their approaches, {\"routes\": {\"math\": \"self_consistency\", "
     "...}, \"default\": \"none\", \"classifier_model\": \"...\"} (see README; built-in: "
     "math, code, reasoning, factual, creative, chat)"},
    {"mcp-config", NULL, "OPTILLM_MCP_CONFIG", T_SECRET, OFF(mcp_config), 0, "FILE",
     "MCP servers for the mcp approach: {\"mcpServers\": {\"name\": {\"command\", \"args\", "
     "\"env\"} or {\"url\", \"headers\"}}} (the layout MCP clients use)"},
    {"otlp-endpoint", NULL, "OPTILLM_OTLP_ENDPOINT", T_STR, OFF(otlp_endpoint), SZ(otlp_endpoint),
     "URL",
     "export OpenTelemetry traces as OTLP/HTTP JSON to URL/v1/traces (a URL ending in /v1/traces "
     "is used as is; also $OTEL_EXPORTER_OTLP_ENDPOINT, $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"},
    {"workers", NULL, "OPTILLM_WORKERS", T_UINT, OFF(workers), 0, "N",
     "maximum approach requests running at once (default 10000); a waiting one holds a "
     "coroutine stack (128 KiB reserved, a few KiB used), not a thread"},
    {"queue", NULL, "OPTILLM_QUEUE", T_UINT, OFF(queue_max), 0, "N",
     "approach requests that may wait for a --workers slot before 503 (default 4096)"},
    {"io-loops", NULL, "OPTILLM_IO_LOOPS", T_UINT, OFF(io_loops), 0, "N",
     "I/O threads, each serving client connections (unless --http-threads) and multiplexing "
     "many upstream transfers (default: number of cores)"},
    {"http-threads", NULL, "OPTILLM_HTTP_THREADS", T_INT, OFF(http_threads), 0, "N",
     "threads of their own that receive and answer HTTP requests (libmicrohttpd, poll). 0: the "
     "I/O loops do it themselves, one libmicrohttpd daemon each on a shared listening socket, "
     "so a passthrough request never changes thread. Default 0, or 2 with --redis-url (a "
     "tenant's Redis round trip must not stall a loop's transfers)"},
    {"max-connections", NULL, "OPTILLM_MAX_CONNECTIONS", T_UINT, OFF(conn_limit), 0, "N",
     "client connections, including waiting and idle kept-alive ones (default 4096); near the "
     "limit the longest-idle kept-alive connections are closed to make room for new clients"},
    {"max-body", NULL, "OPTILLM_MAX_BODY", T_SIZE, OFF(max_body), 0, "BYTES",
     "largest request body; larger gets 413 (default 8M; suffixes k, M)"},
    {"idle-timeout", NULL, "OPTILLM_IDLE_TIMEOUT", T_UINT, OFF(idle_timeout), 0, "SECONDS",
     "close a client connection idle this long (default 60)"},
    {"header-timeout", NULL, "OPTILLM_HEADER_TIMEOUT", T_DOUBLE, OFF(header_timeout), 0, "SECONDS",
     "a client must send a request's headers within this long (on a kept-alive connection: "
     "after --idle-timeout more), or the connection is closed (default 10)"},
    {"body-timeout", NULL, "OPTILLM_BODY_TIMEOUT", T_DOUBLE, OFF(body_timeout), 0, "SECONDS",
     "a client must send a request's whole body within this long after its headers, or the "
     "connection is closed (default 60)"},
    {"per-ip-connections", NULL, "OPTILLM_PER_IP_CONNECTIONS", T_UINT, OFF(per_ip_conns), 0, "N",
     "open connections per client address; more are closed at once (default 256; 127.0.0.1 "
     "and ::1, e.g. a local TLS terminator, are exempt)"},
    {"max-body-memory", NULL, "OPTILLM_MAX_BODY_MEMORY", T_SIZE, OFF(max_body_memory), 0, "BYTES",
     "request-body bytes all requests may hold at once; a request that would exceed it gets "
     "503 with Retry-After before its body is read (default 256M)"},
    {"upstream-timeout", NULL, "OPTILLM_UPSTREAM_TIMEOUT", T_DOUBLE, OFF(upstream_timeout), 0,
     "SECONDS", "limit for one upstream call; exceeded gives 504 (default 600)"},
    {"upstream-h2c", NULL, "OPTILLM_UPSTREAM_H2C", T_BOOL, OFF(upstream_h2c), 0, NULL,
     "speak HTTP/2 to an http:// upstream without asking first (prior knowledge, h2c), "
     "streams multiplexed on one connection per I/O loop; needs libcurl >= 8.0.0. Default: "
     "HTTP/1.1 for http://; HTTP/2 when an https:// upstream offers it (ALPN), concurrent "
     "calls multiplexed on its connections"},
    {"upstream-curl-only", NULL, "OPTILLM_UPSTREAM_CURL_ONLY", T_BOOL, OFF(upstream_curl_only), 0,
     NULL,
     "send every upstream call through libcurl. By default an approach's calls and "
     "non-streamed passthrough requests to an http:// upstream at an IP address (e.g. a local "
     "vLLM at http://127.0.0.1:8000/v1) take a lean HTTP/1.1 client: ~0.5 KiB per call in "
     "flight instead of libcurl's ~11 KiB, and 30 % less CPU per passthrough request. "
     "https://, host names, a proxy in the environment, --upstream-h2c and streams always use "
     "libcurl"},
    {"upstream-ca", NULL, "OPTILLM_UPSTREAM_CA", T_STR, OFF(upstream_ca), SZ(upstream_ca), "FILE",
     "CA certificates (PEM) to verify https:// upstreams with, e.g. a private vLLM behind an "
     "internal CA (default: the system's store; verification is never turned off)"},
    {"connect-timeout", NULL, "OPTILLM_CONNECT_TIMEOUT", T_DOUBLE, OFF(connect_timeout), 0,
     "SECONDS", "limit for connecting to the upstream; exceeded gives 502 (default 10)"},
    {"retries", NULL, "OPTILLM_RETRIES", T_RETRIES, OFF(retries), 0, "N",
     "retries of an upstream call after 429, 5xx or a connect error, with exponential backoff "
     "and jitter, honouring Retry-After; only before the first byte reached the client "
     "(default 2)"},
    {"retry-base-delay", NULL, "OPTILLM_RETRY_BASE_DELAY", T_DOUBLE, OFF(retry_base), 0, "SECONDS",
     "first retry delay, doubled each time (default 0.5)"},
    {"request-timeout", NULL, "OPTILLM_REQUEST_TIMEOUT", T_DOUBLE, OFF(request_timeout), 0,
     "SECONDS", "deadline for a whole request, all stages and retries (default: none)"},
    {"max-request-calls", NULL, "OPTILLM_MAX_REQUEST_CALLS", T_INT, OFF(max_request_calls), 0, "N",
     "upstream calls one request may begin, over all its stages, n runs and branches; the "
     "calls past it fail (429) and the approach answers from the rest; a tenant's "
     "max_calls_per_request may lower it (default 512; 0: no ceiling)"},
    {"max-request-tokens", NULL, "OPTILLM_MAX_REQUEST_TOKENS", T_INT, OFF(max_request_tokens), 0,
     "N",
     "prompt + completion tokens one request's upstream calls may use: no call begins once "
     "they are spent (default 1000000; 0: no ceiling)"},
    {"fallback-base-url", NULL, "OPTILLM_FALLBACK_BASE_URL", T_URLS, OFF(fallback_urls), 0, "URL",
     "repeatable: upstreams tried in order when the primary still fails (connect error or "
     "5xx) after its retries; the same key is sent"},
    {"readurls-allow", NULL, "OPTILLM_READURLS_ALLOW", T_CIDRS, OFF(readurls_allow),
     SZ(readurls_allow), "CIDR",
     "repeatable (env: a comma list): address ranges readurls may fetch from although private "
     "or reserved (e.g. 10.0.0.0/8 for an intranet); none by default"},
    {"sse-keepalive", NULL, "OPTILLM_SSE_KEEPALIVE", T_DOUBLE, OFF(sse_keepalive), 0, "SECONDS",
     "interval of ': keep-alive' comments on approach streams before the answer (default 10)"},
    {"drain-timeout", NULL, "OPTILLM_DRAIN_TIMEOUT", T_DOUBLE, OFF(drain_timeout), 0, "SECONDS",
     "on SIGTERM/SIGINT: stop accepting, let requests in flight finish for this long, then "
     "answer the rest 503 and exit 0 (default 30)"},
    {"log", NULL, "OPTILLM_LOG", T_LOG, OFF(log_level), 0, "LEVEL",
     "error, warning, info (default: one access line per request) or debug"},
    {"log-conversations", NULL, "OPTILLM_LOG_CONVERSATIONS", T_SECRET, OFF(log_conversations), 0,
     "DIR",
     "append one JSON line per request to DIR/conversations-<date>.jsonl: the request, every "
     "upstream call (stage, latency, status, tokens) and the answer; never a key"},
    {"memory-file", NULL, "OPTILLM_MEMORY_FILE", T_SECRET, OFF(memory_file), 0, "FILE",
     "memory appends what it extracted per request (time, request id, query, findings) as one "
     "JSON line to FILE (0600; write-only: never read back into another request)"},
    {"log-format", NULL, "OPTILLM_LOG_FORMAT", T_LOGFMT, OFF(log_json), 0, "FORMAT",
     "text (default) or json"},
};

static void defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->host, sizeof(c->host), "127.0.0.1");
    c->port = 8000;
    c->http_threads = -1; /* 0 (the loops), or 2 with --redis-url */
    c->io_loops = 0;
    c->workers = 10000;
    c->queue_max = 4096;
    c->conn_limit = 4096;
    c->max_body = 8u << 20;
    c->idle_timeout = 60;
    c->header_timeout = 10;
    c->body_timeout = 60;
    c->per_ip_conns = 256;
    c->max_body_memory = 256u << 20;
    c->sse_keepalive = 10;
    c->drain_timeout = 30;
    snprintf(c->base_url, sizeof(c->base_url), "https://api.openai.com/v1");
    snprintf(c->auth_header, sizeof(c->auth_header), "Authorization");
    c->upstream_timeout = 600;
    c->connect_timeout = 10;
    c->retries = 2;
    c->retry_base = 0.5;
    c->max_request_calls = 512;
    c->max_request_tokens = 1000000;
    snprintf(c->approach, sizeof(c->approach), "auto");
    snprintf(c->model, sizeof(c->model), "gpt-4o-mini");
    c->n = 1;
    c->code_timeout = 10;
    c->log_level = LOG_INFO;
    snprintf(c->redis_prefix, sizeof(c->redis_prefix), "optillm:");
    snprintf(c->redis_failure, sizeof(c->redis_failure), "open");
}

static bool parse_bool(const char *v, bool *out)
{
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") ||
        !strcasecmp(v, "on")) {
        *out = true;
        return true;
    }
    if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") ||
        !strcasecmp(v, "off") || !*v) {
        *out = false;
        return true;
    }
    return false;
}

static bool parse_double(const char *v, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(v, &end);
    return errno == 0 && end != v && *end == '\0' && isfinite(*out);
}

static bool parse_long(const char *v, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(v, &end, 10);
    return errno == 0 && end != v && *end == '\0';
}

static int set_value(struct config *c, const struct flag *f, const char *v, const char *src)
{
    char *field = (char *)c + f->off;
    long l;
    double d;
    bool b;

    switch (f->type) {
    case T_STR:
        if (strlen(v) >= f->len) {
            fprintf(stderr, "%s: value too long for --%s\n", src, f->name);
            return -1;
        }
        snprintf(field, f->len, "%s", v);
        return 0;
    case T_SECRET: {
        char **p = (char **)(void *)field;

        free(*p);
        *p = *v ? xstrdup(v) : NULL; /* an empty key counts as unset */
        return 0;
    }
    case T_INT:
        if (!parse_long(v, &l) || l < 0 || l > 65535 * 1000L) {
            fprintf(stderr, "%s: --%s needs a non-negative integer\n", src, f->name);
            return -1;
        }
        *(int *)(void *)field = (int)l;
        return 0;
    case T_UINT:
        if (!parse_long(v, &l) || l < 1 || l > 1000000) {
            fprintf(stderr, "%s: --%s needs an integer between 1 and 1000000\n", src, f->name);
            return -1;
        }
        *(unsigned *)(void *)field = (unsigned)l;
        return 0;
    case T_DOUBLE:
        if (!parse_double(v, &d) || d <= 0) {
            fprintf(stderr, "%s: --%s needs a positive number\n", src, f->name);
            return -1;
        }
        *(double *)(void *)field = d;
        return 0;
    case T_BOOL:
        if (!parse_bool(v, &b)) {
            fprintf(stderr, "%s: --%s needs true or false\n", src, f->name);
            return -1;
        }
        *(bool *)(void *)field = b;
        return 0;
    case T_SIZE: {
        char *end;
        double mult = 1;

        errno = 0;
        d = strtod(v, &end);
        if (*end == 'k' || *end == 'K')
            mult = 1024, end++;
        else if (*end == 'm' || *end == 'M')
            mult = 1024 * 1024, end++;
        else if (*end == 'g' || *end == 'G')
            mult = 1024.0 * 1024 * 1024, end++;
        if (errno || end == v || *end || !isfinite(d) || d * mult < 1024 ||
            d * mult > 4.0 * 1024 * 1024 * 1024) {
            fprintf(stderr, "%s: --%s needs a size between 1k and 4G\n", src, f->name);
            return -1;
        }
        *(size_t *)(void *)field = (size_t)(d * mult);
        return 0;
    }
    case T_LOG: {
        int lv = log_level_parse(v);

        if (lv < 0) {
            fprintf(stderr, "%s: --log needs error, warning, info or debug\n", src);
            return -1;
        }
        *(int *)(void *)field = lv;
        return 0;
    }
    case T_RETRIES:
        if (!parse_long(v, &l) || l < 0 || l > 10) {
            fprintf(stderr, "%s: --%s needs an integer between 0 and 10\n", src, f->name);
            return -1;
        }
        *(int *)(void *)field = (int)l;
        return 0;
    case T_URLS:
        if (c->nfallback == (int)PX_ARRAY_LEN(c->fallback_urls)) {
            fprintf(stderr, "%s: at most %zu --%s\n", src, PX_ARRAY_LEN(c->fallback_urls), f->name);
            return -1;
        }
        if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8)) {
            fprintf(stderr, "%s: --%s must start with http:// or https://\n", src, f->name);
            return -1;
        }
        {
            char *u = xstrdup(v);
            size_t ul = strlen(u);

            while (ul && u[ul - 1] == '/')
                u[--ul] = '\0';
            c->fallback_urls[c->nfallback++] = u;
        }
        return 0;
    case T_CIDRS: { /* appended, comma-separated; checked here so a typo fails at start-up */
        struct fetch_cidr tmp[32];
        char *list = (char *)field;
        size_t used = strlen(list);

        if (fetch_allow_parse(v, tmp, PX_ARRAY_LEN(tmp)) < 0 || used + strlen(v) + 2 > f->len) {
            fprintf(stderr, "%s: --%s needs CIDRs such as 10.0.0.0/8 or fd00::/8\n", src, f->name);
            return -1;
        }
        snprintf(list + used, f->len - used, "%s%s", used ? "," : "", v);
        return 0;
    }
    case T_LOGFMT:
        if (strcmp(v, "json") && strcmp(v, "text")) {
            fprintf(stderr, "%s: --log-format needs text or json\n", src);
            return -1;
        }
        *(bool *)(void *)field = strcmp(v, "json") == 0;
        return 0;
    }
    return -1;
}

static int set_option(struct config *c, const struct approach_option *o, const char *v,
                      const char *src)
{
    double d;
    size_t i;

    if (!parse_double(v, &d) || d < o->min || d > o->max || (o->integer && d != floor(d))) {
        fprintf(stderr, "%s: %s needs %s between %g and %g\n", src, o->name,
                o->integer ? "an integer" : "a number", o->min, o->max);
        return -1;
    }
    for (i = 0; i < c->noptions; i++)
        if (strcmp(c->options[i].name, o->name) == 0)
            break;
    if (i == c->noptions) {
        if (c->noptions == PX_MAX_OPTIONS)
            return -1;
        c->noptions++;
    }
    c->options[i].name = o->name;
    c->options[i].value = d;
    return 0;
}

double config_option(const struct config *cfg, const char *name, double def)
{
    for (size_t i = 0; i < cfg->noptions; i++)
        if (strcmp(cfg->options[i].name, name) == 0)
            return cfg->options[i].value;
    return def;
}

/* "best_of_n" -> "best-of-n" / "OPTILLM_BEST_OF_N" */
static void option_names(const char *name, char *dash, size_t dl, char *env, size_t el)
{
    size_t i;

    for (i = 0; name[i] && i + 1 < dl; i++)
        dash[i] = name[i] == '_' ? '-' : name[i];
    dash[i] = '\0';
    snprintf(env, el, "OPTILLM_");
    size_t pos = strlen(env);
    for (i = 0; name[i] && pos + 1 < el; i++)
        env[pos++] = (char)toupper((unsigned char)name[i]);
    env[pos] = '\0';
}

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(flags); i++) {
        if ((strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len)) ||
            (flags[i].alt && strlen(flags[i].alt) == len && !strncmp(flags[i].alt, name, len)))
            return &flags[i];
    }
    return NULL;
}

static const struct approach_option *find_option_flag(const char *name, size_t len)
{
    char tmp[128];

    if (len >= sizeof(tmp))
        return NULL;
    for (size_t i = 0; i < len; i++)
        tmp[i] = name[i] == '-' ? '_' : name[i];
    tmp[len] = '\0';
    return approach_option_find(tmp);
}

void config_usage(const char *prog)
{
    printf("Usage: %s [options]\n\n"
           "An OpenAI-compatible proxy that improves answers with inference-time approaches.\n"
           "Point a client's base URL at http://HOST:PORT/v1 and prefix the model with an\n"
           "approach (moa-gpt-4o-mini); a plain model name is passed through unchanged.\n\n"
           "Options (each also reads the environment variable shown):\n",
           prog);
    for (size_t i = 0; i < PX_ARRAY_LEN(flags); i++) {
        const struct flag *f = &flags[i];
        char left[96];

        snprintf(left, sizeof(left), "--%s%s%s%s%s", f->name, f->alt ? ", --" : "",
                 f->alt ? f->alt : "", f->arg ? " " : "", f->arg ? f->arg : "");
        if (strlen(left) > 36)
            printf("  %s\n  %-36s", left, "");
        else
            printf("  %-36s", left);
        printf(" %s%s%s%s\n", f->help, f->env ? " [" : "", f->env ? f->env : "", f->env ? "]" : "");
    }
    printf("  %-36s %s\n", "-h, --help", "show this help and exit");
    printf("  %-36s %s\n\n", "--version", "print the version and exit");
    printf("Upstream key: OPENAI_API_KEY (or --upstream-key) is the server key. Without one,\n"
           "each client's 'Authorization: Bearer <key>' goes upstream (many users, one proxy).\n"
           "See README.md for the full rules.\n\n");
    printf("Approaches (model prefix 'slug-model', body field optillm_approach, or a\n"
           "<optillm_approach>slug</optillm_approach> tag; combine with a&b or a|b):\n");
    for (size_t i = 0; i < approach_registry_len; i++) {
        const struct approach *a = approach_registry[i];

        printf("  %-20s %s\n", a->slug, a->summary);
    }
    printf("\nApproach options (flag, env OPTILLM_<NAME>, or body field optillm_<name>):\n");
    for (size_t i = 0; i < approach_registry_len; i++) {
        for (const struct approach_option *o = approach_registry[i]->options; o && o->name; o++) {
            char dash[96], env[128], left[256];

            if (approach_option_find(o->name) != o)
                continue;
            option_names(o->name, dash, sizeof(dash), env, sizeof(env));
            if (o->alias) {
                char adash[96], aenv[128];

                option_names(o->alias, adash, sizeof(adash), aenv, sizeof(aenv));
                snprintf(left, sizeof(left), "--%s, --%s N", dash, adash);
            } else {
                snprintf(left, sizeof(left), "--%s N", dash);
            }
            if (strlen(left) > 36)
                printf("  %s\n  %-36s", left, "");
            else
                printf("  %-36s", left);
            printf(" %s (default %g", o->help, o->def);
            if (o->client_max > 0)
                printf("; a request may set at most %g", o->client_max);
            if (o->client_lowers_only)
                printf("; a request may only lower it");
            printf(") [%s]\n", env);
        }
    }
}

int config_load(struct config *cfg, int argc, char **argv)
{
    const char *e;

    defaults(cfg);
    /* Environment first, flags override. */
    for (size_t i = 0; i < PX_ARRAY_LEN(flags); i++) {
        if (flags[i].env && (e = getenv(flags[i].env)) && *e &&
            set_value(cfg, &flags[i], e, flags[i].env) < 0)
            return -1;
    }
    if ((e = getenv("OPENAI_API_KEY")) && *e) {
        free(cfg->upstream_key);
        cfg->upstream_key = xstrdup(e);
    }
    for (size_t i = 0; i < approach_registry_len; i++) {
        for (const struct approach_option *o = approach_registry[i]->options; o && o->name; o++) {
            char dash[96], env[128];

            option_names(o->name, dash, sizeof(dash), env, sizeof(env));
            if ((e = getenv(env)) && *e && set_option(cfg, o, e, env) < 0)
                return -1;
            if (o->alias) {
                option_names(o->alias, dash, sizeof(dash), env, sizeof(env));
                if ((e = getenv(env)) && *e && set_option(cfg, o, e, env) < 0)
                    return -1;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *name, *eq, *val = NULL;
        size_t len;

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            config_usage(argv[0]);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            printf("optillm-c %s\n", PX_VERSION);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        name = a + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        if (eq)
            val = eq + 1;
        const struct flag *f = find_flag(name, len);
        const struct approach_option *o = f ? NULL : find_option_flag(name, len);
        if (!f && !o) {
            fprintf(stderr, "unknown option '--%.*s' (see --help)\n", (int)len, name);
            return -1;
        }
        if (!val) {
            if (f && f->type == T_BOOL &&
                (i + 1 >= argc || !parse_bool(argv[i + 1], &(bool){false}))) {
                val = "true";
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                fprintf(stderr, "option '--%.*s' needs a value\n", (int)len, name);
                return -1;
            }
        }
        if (f ? set_value(cfg, f, val, "command line") : set_option(cfg, o, val, "command line"))
            return -1;
    }
    /* Normalise the base URL: no trailing slash. */
    {
        size_t l = strlen(cfg->base_url);

        while (l && cfg->base_url[l - 1] == '/')
            cfg->base_url[--l] = '\0';
        if (strncmp(cfg->base_url, "http://", 7) && strncmp(cfg->base_url, "https://", 8)) {
            fprintf(stderr, "--base-url must start with http:// or https://\n");
            return -1;
        }
    }
    if (cfg->port > 65535) {
        fprintf(stderr, "--port must be at most 65535\n");
        return -1;
    }
    if (cfg->n < 1 || cfg->n > 128) {
        fprintf(stderr, "--n must be between 1 and 128\n");
        return -1;
    }
    if (cfg->code_timeout > 3600) {
        fprintf(stderr, "--code-execution-timeout must be at most 3600\n");
        return -1;
    }
    {
        struct route r;
        struct px_error err;

        if (route_parse_value(cfg->approach, &r, &err) < 0) {
            fprintf(stderr, "--approach: %s\n", err.message);
            return -1;
        }
    }
    if (strcmp(cfg->redis_failure, "open") && strcmp(cfg->redis_failure, "closed")) {
        fprintf(stderr, "--redis-failure must be open or closed\n");
        return -1;
    }
    cfg->redis_fail_closed = strcmp(cfg->redis_failure, "closed") == 0;
    if (cfg->upstream_ca[0] && access(cfg->upstream_ca, R_OK) != 0) {
        fprintf(stderr, "--upstream-ca %s: %s\n", cfg->upstream_ca, strerror(errno));
        return -1;
    }
    if (cfg->http_threads > 1024) {
        fprintf(stderr, "--http-threads must be between 0 and 1024\n");
        return -1;
    }
    if (!cfg->io_loops) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);

        cfg->io_loops = cores > 0 && cores < 64 ? (unsigned)cores : 2;
    }
    return 0;
}

void config_cleanup(struct config *cfg)
{
    for (int i = 0; i < cfg->nfallback; i++)
        free(cfg->fallback_urls[i]);
    cfg->nfallback = 0;
    free(cfg->upstream_key);
    free(cfg->gate_key);
    free(cfg->prompts_dir);
    free(cfg->mcp_config);
    cfg->mcp_config = NULL;
    free(cfg->router_config);
    cfg->router_config = NULL;
    free(cfg->spl_db);
    cfg->spl_db = NULL;
    free(cfg->tenants_path);
    free(cfg->providers_path);
    cfg->providers_path = NULL;
    free(cfg->log_conversations);
    free(cfg->memory_file);
    cfg->memory_file = NULL;
    free(cfg->redis_url);
    cfg->redis_url = NULL;
    cfg->upstream_key = cfg->gate_key = cfg->prompts_dir = cfg->tenants_path = NULL;
    cfg->log_conversations = NULL;
}
