/* harness.h: integration-test helpers: start the real build/optillm and the mock upstream on
 * ephemeral loopback ports, talk HTTP to them with libcurl, stop them. */
#ifndef HARNESS_H
#define HARNESS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct proc {
    pid_t pid;
    int port;
    char log[512]; /* captured stderr (proxy) */
};

/* Starts build/mock_upstream --port 0 with extra args (NULL-terminated, may be NULL). */
int mock_start(struct proc *p, const char *const *args);
/* Starts build/optillm --port 0 --base-url http://127.0.0.1:<mock_port>/v1 plus args. 'env'
 * is a NULL-terminated list of "NAME=value" added to a clean environment (no OPENAI_API_KEY
 * unless given). Waits until it listens. */
int proxy_start(struct proc *p, int mock_port, const char *const *args, const char *const *env);
/* SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit status (or -1). */
int proc_stop(struct proc *p);
/* Waits up to 'secs' for the process to exit; returns its exit status (128+signal when
 * killed), or -1 if it is still running. */
int proc_wait(struct proc *p, double secs);

struct http_resp {
    long status;
    char *body;
    size_t len;
    char *headers;       /* raw response headers */
    double total_s;      /* time to the end of the response */
    double first_s;      /* time to the first body byte */
    int chunks;          /* body write callbacks */
    double chunk_t[512]; /* arrival time of each write (s since start) */
};

/* One request to 127.0.0.1:port. 'headers' NULL-terminated "Name: value" or NULL. 'body' NULL
 * for no body. Returns 0 when an HTTP response arrived (any status), -1 on transport error. */
int http_req(const char *method, int port, const char *path, const char *body,
             const char *const *headers, struct http_resp *out);
/* Like http_req, but gives up after 'abort_after_s' seconds of the transfer (a client that
 * hangs up). Returns 0 when it hung up as planned. */
int http_req_abort(const char *method, int port, const char *path, const char *body,
                   const char *const *headers, double abort_after_s);
void http_resp_free(struct http_resp *r);
/* The value of a response header (case-insensitive), copied into buf; false if absent. */
bool http_header(const struct http_resp *r, const char *name, char *buf, size_t len);
/* Parses the body as JSON (caller deletes), or NULL. */
cJSON *http_json(const struct http_resp *r);

/* Mock helpers. */
cJSON *mock_get(int port, const char *path); /* GET -> parsed JSON */
void mock_reset(int port);
void mock_config(int port, const char *json);
long mock_stat(int port, const char *name);
/* The JSON bodies the mock received since the last reset, oldest first (caller deletes); NULL
 * when /mock/requests fails or a request has no JSON object body. */
cJSON *mock_bodies(int port);

/* A chat body {"model":model,"messages":[{"role":"user","content":content}]} plus 'extra'
 * (a JSON object's members text like "\"stream\":true", or NULL). Malloc'd. */
char *chat_body(const char *model, const char *content, const char *extra);

/* POSTs chat_body(model, content, NULL) to /v1/chat/completions with "Authorization: Bearer key".
 * Returns the status (-1 when the request failed); the response goes to *keep when keep is not
 * NULL (free it with http_resp_free), else it is freed. */
long chat_as(int port, const char *key, const char *model, const char *content,
             struct http_resp *keep);

/* Seconds on the monotonic clock. */
double harness_now_s(void);

/* True when the file contains 'needle'. */
bool file_contains(const char *path, const char *needle);

/* Extra seconds timing assertions allow: 0 normally, more when the proxy runs under a
 * wrapper such as valgrind (environment PX_WRAPPER). */
double harness_slack(void);

/* The build directory: PX_BUILD, else the one this binary was built into (BUILD/tests/x). */
const char *harness_build_dir(void);

/* ---- redis-server (shared limits) ---------------------------------------------------------- */

/* A free loopback TCP port (bound, then released: a tiny race, fine for tests). */
int harness_free_port(void);
/* Starts /usr/bin/redis-server on 127.0.0.1:port (0: a free port) without persistence, its log
 * in p->log, plus extra args (NULL-terminated, may be NULL, e.g. "--requirepass", "pw"); waits
 * until it accepts connections. Stop it with proc_stop. -1 when it cannot start. */
int redis_start(struct proc *p, int port, const char *const *args);
/* Adds a process the test started itself to those killed when the test aborts or exits. */
void harness_track(pid_t pid);

/* Hard timeout for a test binary (also creates BUILD/logs): aborts (killing started processes)
 * after 'secs'. */
void harness_deadline(unsigned secs);

#endif
