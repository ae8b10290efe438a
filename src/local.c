/* local.c: in-process requests (include/engine.h) for the evaluation runner. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "arena.h"
#include "engine.h"
#include "internal.h"
#include "log.h"
#include "pii.h"
#include "prompt.h"

static const struct config *local_cfg;

int engine_startup(const struct config *cfg)
{
    local_cfg = cfg;
    px_config = cfg;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || answer_init() != 0 || pii_init() != 0 ||
        prompt_init(cfg->prompts_dir) != 0 || registry_check() != 0 || io_start(cfg) != 0 ||
        sched_start(0, 0) != 0) {
        log_error("engine start-up failed");
        return -1;
    }
    return 0;
}

void engine_shutdown(void)
{
    io_stop();
    sched_stop(); /* runs of n > 1 and a|b branches are coroutines */
    io_free();
    prompt_cleanup();
    answer_cleanup();
    pii_cleanup();
    curl_global_cleanup();
}

/* Waits for a single buffered call (a passthrough) and copies its answer into the exchange. */
static void local_passthrough(struct exchange *ex, char *body, size_t len)
{
    struct sched_group g;
    struct xfer *x =
        xfer_create(local_cfg, XFER_CALL, ex, "/chat/completions", ex->upstream_key, body, len);

    sched_group_init(&g, 1);
    x->group = &g;
    if (io_submit(x) < 0) {
        struct px_error err;

        px_fail(&err, PX_ECANCELLED, NULL, "shutting down");
        exchange_reply_error(ex, &err);
        xfer_destroy(x);
        goto out;
    }
    sched_group_wait(&g, 0);
    if (x->result != CURLE_OK) {
        struct px_error err;

        if (x->result == CURLE_OPERATION_TIMEDOUT)
            px_fail(&err, PX_ETIMEDOUT, NULL, "the upstream did not answer within %g s",
                    local_cfg->upstream_timeout);
        else
            px_fail(&err, PX_EUPSTREAM, NULL, "upstream unreachable: %s",
                    x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
        exchange_reply_error(ex, &err);
    } else {
        size_t elen;
        char *e =
            x->http_status >= 400
                ? http_upstream_error((int)x->http_status, buf_cstr(&x->resp), x->resp.len, &elen)
                : NULL;

        if (e) /* not OpenAI-shaped: rewritten, as for a client of the server */
            exchange_reply(ex, (int)x->http_status, "application/json", e, elen);
        else
            exchange_reply(ex, (int)x->http_status, x->content_type, buf_cstr(&x->resp),
                           x->resp.len);
        cJSON_free(e);
    }
    pthread_mutex_lock(&ex->mu);
    ex->usage.calls = x->attempts;
    pthread_mutex_unlock(&ex->mu);
    xfer_destroy(x);
out:
    sched_group_cleanup(&g);
}

int engine_request(const char *body, size_t len, const char *upstream_key, char **resp,
                   size_t *resp_len)
{
    long calls;

    return engine_request2(body, len, upstream_key, resp, resp_len, &calls);
}

int engine_request2(const char *body, size_t len, const char *upstream_key, char **resp,
                    size_t *resp_len, long *upstream_calls)
{
    struct exchange *ex = exchange_create(NULL, "POST", "/v1/chat/completions");
    struct px_error err;
    int status;

    ex->upstream_key = upstream_key ? arena_strdup(ex->arena, upstream_key) : NULL;
    buf_append(&ex->body, body, len);
    if (chat_request_parse(ex->arena, body, len, local_cfg, &ex->req, &err) < 0) {
        exchange_reply_error(ex, &err);
    } else if (ex->req.route.count == 0) {
        size_t out_len, plain_len = 0;
        char *plain = NULL;
        char *out = server_passthrough_body(ex, &out_len, &plain, &plain_len);

        free(plain); /* only a streamed request asks for usage; eval requests are not streamed */

        local_passthrough(ex, out, out_len);
    } else {
        exchange_ref(ex); /* engine_run drops one */
        engine_run(ex);
    }
    pthread_mutex_lock(&ex->mu);
    status = ex->status;
    *upstream_calls = ex->usage.calls;
    *resp = buf_take(&ex->out, resp_len);
    pthread_mutex_unlock(&ex->mu);
    exchange_unref(ex);
    return status;
}
