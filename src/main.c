/* main.c: wiring only: configuration, start-up order, signals, shutdown. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "answer.h"
#include "internal.h"
#include "log.h"
#include "mcp.h"
#include "pii.h"
#include "prompt.h"
#include "providers.h"
#include "redis.h"
#include "router.h"
#include "sandbox.h"
#include "spl_store.h"

#if defined(__SANITIZE_THREAD__)
/* TSan builds: libz3's internal timer threads race with themselves (inside libz3, not in our
 * code); keep those reports out of the proxy's sanitizer runs. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:libz3.so\nrace:libz3.so\n";
}
#endif

static void raise_fd_limit(unsigned want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* optillm keys new [NAME] | optillm keys hash: tenant keys and their digests. */
static int keys_main(int argc, char **argv)
{
    unsigned char raw[32], d[SHA256_DIGEST_LENGTH];
    char key[80], digest[2 * SHA256_DIGEST_LENGTH + 1], line[16384];

    if (argc >= 2 && strcmp(argv[1], "new") == 0) {
        const char *name = argc >= 3 ? argv[2] : "NAME";
        char rhex[65];

        if (RAND_bytes(raw, sizeof(raw)) != 1) {
            fprintf(stderr, "keys: no randomness available\n");
            return 1;
        }
        hex(raw, sizeof(raw), rhex);
        snprintf(key, sizeof(key), "sk-optillm-%s", rhex);
        SHA256((unsigned char *)key, strlen(key), d);
        hex(d, sizeof(d), digest);
        printf("key:    %s\n", key);
        printf("tenant: {\"name\": \"%s\", \"key_sha256\": \"%s\"}\n", name, digest);
        fprintf(stderr, "Give the key to the tenant; put only the tenant line in the file.\n");
        explicit_bzero(key, sizeof(key));
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "hash") == 0) {
        size_t len;

        if (!fgets(line, sizeof(line), stdin)) {
            fprintf(stderr, "keys hash: give the key on standard input\n");
            return 1;
        }
        len = strcspn(line, "\r\n");
        line[len] = '\0';
        SHA256((unsigned char *)line, len, d);
        hex(d, sizeof(d), digest);
        printf("%s\n", digest);
        explicit_bzero(line, sizeof(line));
        return 0;
    }
    fprintf(stderr, "usage: optillm keys new [NAME]   print a fresh key and its tenant line\n"
                    "       optillm keys hash         print the SHA-256 digest of the key on "
                    "stdin\n");
    return 2;
}

static bool loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

int main(int argc, char **argv)
{
    static struct config cfg;
    sigset_t sigs;
    int sig, rc;
    cJSON_Hooks hooks = {.malloc_fn = xmalloc, .free_fn = free};

    cJSON_InitHooks(&hooks);
    if (argc >= 2 && strcmp(argv[1], "keys") == 0)
        return keys_main(argc - 1, argv + 1);
    rc = config_load(&cfg, argc, argv);
    if (rc != 0) {
        config_cleanup(&cfg);
        return rc > 0 ? 0 : 2;
    }
    log_level = cfg.log_level;
    log_json = cfg.log_json;
    px_config = &cfg;

    /* Everything shared read-only is built before any thread starts. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (cfg.providers_path) { /* before the tenants, which may pin a provider */
        char perr[256];

        if (providers_load(cfg.providers_path, perr, sizeof(perr)) != 0) {
            log_error("%s", perr);
            return 1;
        }
        log_info("providers: %d upstreams from %s", providers_count(), cfg.providers_path);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || answer_init() != 0 || pii_init() != 0 ||
        prompt_init(cfg.prompts_dir) != 0 || registry_check() != 0 ||
        (cfg.tenants_path && tenants_init(cfg.tenants_path) != 0) || redis_init(&cfg) != 0 ||
        convlog_init(cfg.log_conversations) != 0 || otlp_start(cfg.otlp_endpoint) != 0) {
        log_error("start-up failed");
        return 1;
    }
    if (cfg.enable_code_execution) { /* fail now rather than on every request */
        char why[512];

        if (sandbox_selftest(&cfg, why, sizeof(why)) != 0) {
            log_error("--enable-code-execution: the code sandbox does not work here: %s", why);
            return 1;
        }
        if (geteuid() != 0)
            log_warn("code execution: not running as root, so sandboxed programs keep this "
                     "user id and get no process-count limit (see README, code execution)");
    }
    {
        char why[512];

        if (spl_store_open(cfg.spl_db, why, sizeof(why)) != 0) {
            log_error("%s", why);
            return 1;
        }
    }
    if (cfg.router_config) {
        char why[512];

        if (router_load(cfg.router_config, cfg.enable_code_execution, why, sizeof(why)) != 0) {
            log_error("%s", why);
            return 1;
        }
    }
    if (cfg.mcp_config) { /* MCP servers start on first use */
        struct px_error me = {0};
        struct mcp *m = mcp_create(cfg.mcp_config, &me);

        if (!m) {
            log_error("%s", me.message);
            return 1;
        }
        mcp_install(m);
    }
    raise_fd_limit(cfg.conn_limit * 3 + 1024);
    if (io_start(&cfg) != 0 || sched_start(0, 0) != 0 ||
        pool_start(cfg.workers, cfg.queue_max) != 0 || server_start(&cfg) != 0) {
        log_error("start-up failed");
        return 1;
    }
    if (!loopback(cfg.host) && !cfg.gate_key && !cfg.tenants_path)
        log_warn("listening on %s without a gate key (--optillm-api-key): anyone who can reach "
                 "this port can use the upstream through it",
                 cfg.host);
    log_info("optillm-c %s listening on http://%s:%d/v1 (upstream %s, server key %s, "
             "client keys %s, gate %s, approach %s)",
             PX_VERSION, cfg.host, server_port(), cfg.base_url, cfg.upstream_key ? "set" : "none",
             cfg.client_keys ? "on" : "off", cfg.gate_key ? "on" : "off", cfg.approach);

    for (;;) {
        sigwait(&sigs, &sig);
        if (sig != SIGHUP)
            break;
        if (cfg.tenants_path)
            tenants_reload();
        else
            log_info("SIGHUP: nothing to reload (no --tenants)");
    }
    sigdelset(&sigs, SIGHUP);
    server_quiesce();
    /* Drain: requests in flight may finish (a second signal cuts the wait short). */
    {
        long long until = px_now_us() + (long long)(cfg.drain_timeout * 1e6);
        struct timespec tick = {0, 20 * 1000000L};
        long left = metrics_inflight_now();

        log_info("signal %d: draining %ld request(s) for up to %g s", sig, left, cfg.drain_timeout);
        while ((left = metrics_inflight_now()) > 0 && px_now_us() < until) {
            if (sigtimedwait(&sigs, NULL, &tick) > 0)
                break;
        }
        if (left > 0)
            log_warn("drain timeout: cancelling %ld request(s) with 503", left);
    }
    io_stop();    /* aborts transfers: their requests are answered 503 */
    pool_stop();  /* approach requests finish and answer */
    sched_stop(); /* every coroutine has finished */
    /* Let libmicrohttpd write those answers before it closes every connection. */
    for (int i = 0; i < 200 && metrics_inflight_now() > 0; i++)
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    server_stop();
    mcp_destroy(mcp_installed()); /* after the approach threads: stops the MCP servers */
    mcp_install(NULL);
    io_free();
    otlp_stop();     /* exports the spans still queued (bounded by its timeout) */
    redis_cleanup(); /* flushes queued shared writes (bounded by its timeouts) */
    tenants_cleanup();
    router_reset();
    spl_store_close();
    providers_free();
    prompt_cleanup();
    answer_cleanup();
    pii_cleanup();
    curl_global_cleanup();
    config_cleanup(&cfg);
    return 0;
}
