/* client.c: sends one evaluation request, either in-process through the engine (the server's
 * parsing, approaches and upstream transport, no HTTP) or to a running proxy with libcurl (one
 * easy handle per worker thread, so each keeps its connection alive). */
#include <curl/curl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "answer.h"
#include "buf.h"
#include "engine.h"
#include "eval.h"
#include "prompt.h"
#include "px.h"

struct client {
    const struct eval_opts *o;
    CURL *curl;                 /* proxy mode */
    struct curl_slist *headers; /* proxy mode; holds the Authorization header */
    char url[1100];
};

int client_global_init(const struct eval_opts *o)
{
    if (!o->proxy)
        return engine_startup(&o->cfg);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || answer_init() != 0 ||
        prompt_init(o->cfg.prompts_dir) != 0)
        return -1;
    return 0;
}

void client_global_cleanup(const struct eval_opts *o)
{
    if (!o->proxy) {
        engine_shutdown();
        return;
    }
    prompt_cleanup();
    answer_cleanup();
    curl_global_cleanup();
}

struct client *client_create(const struct eval_opts *o)
{
    struct client *c = xcalloc(1, sizeof(*c));
    size_t l;

    c->o = o;
    if (!o->proxy)
        return c;
    snprintf(c->url, sizeof(c->url), "%s", o->proxy);
    l = strlen(c->url);
    while (l && c->url[l - 1] == '/')
        c->url[--l] = '\0';
    snprintf(c->url + l, sizeof(c->url) - l, "/chat/completions");
    c->curl = curl_easy_init();
    if (!c->curl)
        abort(); /* out of memory */
    c->headers = curl_slist_append(c->headers, "Content-Type: application/json");
    c->headers = curl_slist_append(c->headers, "Expect:");
    if (o->api_key) {
        size_t hl = strlen(o->api_key) + 32;
        char *h = xmalloc(hl);

        snprintf(h, hl, "Authorization: Bearer %s", o->api_key);
        c->headers = curl_slist_append(c->headers, h);
        memset(h, 0, hl);
        free(h);
    }
    return c;
}

void client_destroy(struct client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->headers);
    free(c);
}

void client_reply_free(struct client_reply *r)
{
    free(r->body);
    r->body = NULL;
}

/* ---- proxy mode --------------------------------------------------------------------------- */

struct sink {
    struct buf body;
    struct client_reply *out;
};

static size_t on_body(char *d, size_t s, size_t n, void *u)
{
    struct sink *k = u;

    return buf_append(&k->body, d, s * n) == 0 ? s * n : 0; /* over the cap: abort */
}

/* Value of "name: value" if the header line is that header; NULL otherwise. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);

    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return NULL;
    line += nl + 1;
    len -= nl + 1;
    while (len && (*line == ' ' || *line == '\t'))
        line++, len--;
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
        len--;
    *vlen = len;
    return line;
}

static size_t on_header(char *d, size_t s, size_t n, void *u)
{
    struct sink *k = u;
    size_t len = s * n, vl;
    const char *v;
    char tmp[32];

    if ((v = header_value(d, len, "x-optillm-upstream-calls", &vl)) != NULL && vl < sizeof(tmp)) {
        char *end;
        long calls;

        memcpy(tmp, v, vl);
        tmp[vl] = '\0';
        calls = strtol(tmp, &end, 10);
        if (end != tmp && *end == '\0' && calls >= 0)
            k->out->upstream_calls = calls;
    } else if ((v = header_value(d, len, "retry-after", &vl)) != NULL && vl < sizeof(tmp)) {
        char *end;
        double secs;

        memcpy(tmp, v, vl);
        tmp[vl] = '\0';
        secs = strtod(tmp, &end);
        if (end != tmp && *end == '\0' && isfinite(secs) && secs > 0)
            k->out->retry_after = secs;
    }
    return len;
}

static void post_proxy(struct client *c, const char *body, size_t len, struct client_reply *out)
{
    struct sink k;
    char errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode rc;

    buf_init(&k.body, PX_MAX_UPSTREAM_REPLY);
    k.out = out;
    curl_easy_reset(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_URL, c->url);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, &k);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->o->cfg.connect_timeout * 1000));
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)(c->o->request_timeout * 1000));
    rc = curl_easy_perform(c->curl);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
        out->status = (int)status;
        out->body = buf_take(&k.body, &out->len);
    } else {
        out->status = 0;
        snprintf(out->error, sizeof(out->error), "%s",
                 rc == CURLE_WRITE_ERROR ? "the response is larger than 16 MiB"
                 : errbuf[0]             ? errbuf
                                         : curl_easy_strerror(rc));
    }
    buf_free(&k.body);
}

void client_post(struct client *c, const char *body, size_t len, struct client_reply *out)
{
    memset(out, 0, sizeof(*out));
    out->upstream_calls = -1;
    if (c->o->proxy) {
        post_proxy(c, body, len, out);
        return;
    }
    out->status =
        engine_request2(body, len, c->o->api_key, &out->body, &out->len, &out->upstream_calls);
}
