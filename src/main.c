/* main.c: wiring only: configuration, start-up order, signals, shutdown. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "answer.h"
#include "internal.h"
#include "log.h"
#include "prompt.h"

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
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || answer_init() != 0 ||
        prompt_init(cfg.prompts_dir) != 0 || registry_check() != 0) {
        log_error("start-up failed");
        return 1;
    }
    raise_fd_limit(cfg.conn_limit * 3 + 1024);
    if (io_start(&cfg) != 0 || pool_start(cfg.workers, cfg.queue_max) != 0 ||
        server_start(&cfg) != 0) {
        log_error("start-up failed");
        return 1;
    }
    if (!loopback(cfg.host) && !cfg.gate_key)
        log_warn("listening on %s without a gate key (--optillm-api-key): anyone who can reach "
                 "this port can use the upstream through it",
                 cfg.host);
    log_info("optillm-c %s listening on http://%s:%d/v1 (upstream %s, server key %s, "
             "client keys %s, gate %s, approach %s)",
             PX_VERSION, cfg.host, server_port(), cfg.base_url, cfg.upstream_key ? "set" : "none",
             cfg.client_keys ? "on" : "off", cfg.gate_key ? "on" : "off", cfg.approach);

    sigwait(&sigs, &sig);
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
    io_stop();   /* aborts transfers: their requests are answered 503 */
    pool_stop(); /* approach threads finish and answer */
    server_stop();
    io_free();
    prompt_cleanup();
    answer_cleanup();
    curl_global_cleanup();
    config_cleanup(&cfg);
    return 0;
}
