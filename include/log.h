/* log.h: leveled, one-line-per-event logging to stderr. Never pass a key to these functions. */
#ifndef LOG_H
#define LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Current level; set once at start-up before threads start, read-only afterwards. */
extern int log_level;
/* 1 for JSON lines instead of text. Set once at start-up. */
extern int log_json;

/* Parses "error", "warning"/"warn", "info", "debug" (and OptiLLM's "critical", "notset");
 * returns -1 for anything else. */
int log_level_parse(const char *s);

/* Writes one line: "ts LEVEL req=<id> file: msg". CR/LF in the message become spaces.
 * 'req_id' may be NULL. Thread-safe (one fputs per line). */
void log_write(int level, const char *req_id, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_at(lvl, req, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) <= log_level)                                                                    \
            log_write((lvl), (req), __FILE__, __VA_ARGS__);                                        \
    } while (0)
#define log_error(...) log_at(LOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...)  log_at(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, NULL, __VA_ARGS__)

#endif
