/* convlog.c: --log-conversations DIR: one JSON line per request, in DIR/conversations-<UTC
 * date>.jsonl, with the client's request, every upstream call of the fan-out (stage, latency,
 * status, tokens) and the final answer. Message contents appear only here; keys never do
 * (headers are not recorded). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

void convlog_call(struct exchange *ex, const char *stage, long long latency_ms, int status,
                  int http_status, const struct usage *u)
{
    if (!px_config || !px_config->log_conversations)
        return;
    pthread_mutex_lock(&ex->mu);
    if (ex->calls_log.len == 0)
        buf_puts(&ex->calls_log, "[");
    else
        buf_puts(&ex->calls_log, ",");
    buf_printf(&ex->calls_log,
               "{\"stage\":\"%s\",\"latency_ms\":%lld,\"status\":\"%s\",\"http_status\":%d,"
               "\"attempts\":%ld,\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
               "\"reasoning_tokens\":%ld}",
               stage ? stage : "?", latency_ms, status == PX_OK ? "ok" : "error", http_status,
               u->calls, u->prompt_tokens, u->completion_tokens, u->reasoning_tokens);
    pthread_mutex_unlock(&ex->mu);
}

void convlog_write(struct exchange *ex, int status, long long duration_us)
{
    const char *dir = px_config ? px_config->log_conversations : NULL;
    cJSON *o, *calls, *req;
    char path[4096], ts[40], day[16];
    struct timespec now;
    struct tm tm;
    char *line;

    if (!dir || !ex->req.body)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "ts", ts);
    cJSON_AddStringToObject(o, "request_id", ex->id);
    cJSON_AddStringToObject(o, "tenant", ex->tenant ? ex->tenant->name : "-");
    cJSON_AddStringToObject(o, "approach", ex->req.route_name ? ex->req.route_name : "none");
    cJSON_AddStringToObject(o, "model", ex->req.model ? ex->req.model : "");
    cJSON_AddNumberToObject(o, "status", status);
    cJSON_AddNumberToObject(o, "duration_ms", (double)duration_us / 1000.0);
    pthread_mutex_lock(&ex->mu);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "upstream_calls", (double)ex->usage.calls);
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)ex->usage.prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)ex->usage.completion_tokens);
    cJSON_AddNumberToObject(u, "reasoning_tokens", (double)ex->usage.reasoning_tokens);
    if (ex->calls_log.len) {
        buf_puts(&ex->calls_log, "]");
        calls = cJSON_ParseWithLength(buf_cstr(&ex->calls_log), ex->calls_log.len);
    } else {
        calls = cJSON_CreateArray();
    }
    if (ex->answer)
        cJSON_AddStringToObject(o, "answer", ex->answer);
    else if (!ex->streaming && ex->out.len && ex->out.len < (1u << 20)) {
        cJSON *resp = cJSON_ParseWithLength(buf_cstr(&ex->out), ex->out.len);

        cJSON_AddItemToObject(o, "response", resp ? resp : cJSON_CreateString("(not JSON)"));
    }
    pthread_mutex_unlock(&ex->mu);
    cJSON_AddItemToObject(o, "calls", calls ? calls : cJSON_CreateArray());
    req = cJSON_Duplicate(ex->req.body, 1);
    cJSON_AddItemToObject(o, "request", req);
    line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    snprintf(path, sizeof(path), "%s/conversations-%s.jsonl", dir, day);
    /* One write() on an O_APPEND descriptor per line: concurrent requests never interleave
     * within a line, and no lock is held around the I/O. */
    size_t len = strlen(line);
    line[len] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, line, len + 1) != (ssize_t)(len + 1))
        log_warn("conversation log: cannot append to %s", path);
    if (fd >= 0)
        close(fd);
    free(line);
}

int convlog_init(const char *dir)
{
    struct stat st;

    if (!dir)
        return 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        log_error("--log-conversations: cannot create %s", dir);
        return -1;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        log_error("--log-conversations: %s is not a directory", dir);
        return -1;
    }
    return 0;
}
