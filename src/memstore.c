/* memstore.c: --memory-file, the memory plugin's append-only JSONL record (memstore.h). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "approach.h"
#include "config.h"
#include "log.h"
#include "memstore.h"
#include "redact.h"

static pthread_mutex_t memstore_mu = PTHREAD_MUTEX_INITIALIZER;

int memstore_append(const struct approach_ctx *ctx, const char *query, const char *const *findings,
                    size_t n)
{
    /* the handle is the configuration (llm_api.c's approach_opts_of) */
    const struct config *cfg = (const struct config *)(const void *)ctx->opts;
    const char *path = cfg ? cfg->memory_file : NULL;
    cJSON *o, *arr;
    char when[32], *line;
    time_t now = time(NULL);
    struct tm tm;
    size_t len;
    int fd, rc = 0;

    if (!path || !*path)
        return 0;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "time", when);
    cJSON_AddStringToObject(o, "request", ctx->req_id ? ctx->req_id : "");
    cJSON_AddStringToObject(o, "query", query ? query : "");
    arr = cJSON_AddArrayToObject(o, "findings");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(findings[i]));
    line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line)
        return -1;
    redact_secrets(line);
    len = strlen(line);
    pthread_mutex_lock(&memstore_mu);
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -1;
    } else {
        /* one write per line: O_APPEND keeps lines whole across processes too */
        char *buf = malloc(len + 1);

        if (buf) {
            memcpy(buf, line, len);
            buf[len] = '\n';
            if (write(fd, buf, len + 1) != (ssize_t)(len + 1))
                rc = -1;
            free(buf);
        } else {
            rc = -1;
        }
        close(fd);
    }
    pthread_mutex_unlock(&memstore_mu);
    if (rc != 0)
        log_at(LOG_WARN, ctx->req_id, "memory: cannot append to --memory-file: %s",
               strerror(errno));
    free(line);
    return rc;
}
