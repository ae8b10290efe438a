/* log.c: one line per event on stderr; client-controlled text is made single-line. */
#include "log.h"

#include "redact.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int log_level = LOG_INFO;
int log_json = 0;

int log_level_parse(const char *s)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {{"error", LOG_ERROR}, {"critical", LOG_ERROR}, {"warning", LOG_WARN},
                 {"warn", LOG_WARN},   {"info", LOG_INFO},      {"debug", LOG_DEBUG},
                 {"notset", LOG_DEBUG}};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(s, names[i].name) == 0)
            return names[i].level;
    return -1;
}

static const char *level_name(int level)
{
    static const char *const n[] = {"ERROR", "WARN", "INFO", "DEBUG"};

    return level >= 0 && level <= 3 ? n[level] : "?";
}

/* snprintf's result may exceed the room left: keep pos inside the line. */
static size_t capped(size_t pos, size_t cap)
{
    return pos < cap - 10 ? pos : cap - 10;
}

/* Appends 's' to line[*pos..cap) as a JSON string body (json=1) or plain single-line text. */
static void put_text(char *line, size_t cap, size_t *pos, const char *s, int json)
{
    for (; *s && *pos + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;

        if (json && (c == '"' || c == '\\')) {
            line[(*pos)++] = '\\';
            line[(*pos)++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            line[(*pos)++] = ' ';
        } else {
            line[(*pos)++] = (char)c;
        }
    }
}

void log_write(int level, const char *req_id, const char *file, const char *fmt, ...)
{
    char msg[2048];
    char line[4096];
    char ts[80];
    struct timespec now;
    struct tm tm;
    size_t pos = 0;
    va_list ap;
    const char *base = strrchr(file, '/');

    base = base ? base + 1 : file;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    redact_secrets(msg); /* upstream and client text may quote keys (masked or not) */
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
    if (log_json) {
        pos = capped((size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",", ts,
                                      level_name(level)),
                     sizeof(line));
        if (req_id) {
            pos = capped(pos + (size_t)snprintf(line + pos, sizeof(line) - pos, "\"req\":\""),
                         sizeof(line));
            put_text(line, sizeof(line), &pos, req_id, 1);
            line[pos++] = '"';
            line[pos++] = ',';
        }
        pos = capped(pos + (size_t)snprintf(line + pos, sizeof(line) - pos,
                                            "\"src\":\"%s\",\"msg\":\"", base),
                     sizeof(line));
        put_text(line, sizeof(line), &pos, msg, 1);
        line[pos++] = '"';
        line[pos++] = '}';
    } else {
        pos = capped((size_t)snprintf(line, sizeof(line), "%s %-5s ", ts, level_name(level)),
                     sizeof(line));
        if (req_id) {
            pos = capped(pos + (size_t)snprintf(line + pos, sizeof(line) - pos, "req="),
                         sizeof(line));
            put_text(line, sizeof(line), &pos, req_id, 0);
            line[pos++] = ' ';
        }
        pos = capped(pos + (size_t)snprintf(line + pos, sizeof(line) - pos, "%s: ", base),
                     sizeof(line));
        put_text(line, sizeof(line), &pos, msg, 0);
    }
    if (pos > sizeof(line) - 2)
        pos = sizeof(line) - 2;
    line[pos++] = '\n';
    line[pos] = '\0';
    fputs(line, stderr);
}
