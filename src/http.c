/* http.c: the only place that writes error bodies, and complete-response helpers. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "log.h"
#include "redact.h"

static const char *default_type(int code, int status)
{
    if (code == PX_EHTTP)
        return status >= 500 ? "server_error" : "invalid_request_error";
    switch (code) {
    case PX_EINVAL:
    case PX_EAUTH:
    case PX_EFORBIDDEN:
    case PX_ENOTFOUND:
    case PX_EMETHOD:
    case PX_ETOOBIG:
        return "invalid_request_error";
    case PX_ELIMIT:
        return "rate_limit_error";
    default:
        return "server_error";
    }
}

static const char *default_code(int code)
{
    switch (code) {
    case PX_EAUTH:
        return "invalid_api_key";
    case PX_EFORBIDDEN:
        return "permission_denied";
    case PX_ENOTFOUND:
        return "not_found";
    case PX_EMETHOD:
        return "method_not_allowed";
    case PX_ETOOBIG:
        return "request_too_large";
    case PX_EBUSY:
        return "overloaded";
    case PX_ECANCELLED:
        return "shutting_down";
    case PX_EUPSTREAM:
        return "upstream_error";
    case PX_ETIMEDOUT:
        return "upstream_timeout";
    default:
        return NULL;
    }
}

char *http_error_json(const struct px_error *err, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    int status = px_http_status(err);
    const char *code = err->err_code[0] ? err->err_code : default_code(err->code);
    char *s;

    cJSON_AddStringToObject(e, "message", err->message[0] ? err->message : "error");
    cJSON_AddStringToObject(e, "type", err->type[0] ? err->type : default_type(err->code, status));
    if (err->param[0])
        cJSON_AddStringToObject(e, "param", err->param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (len)
        *len = strlen(s);
    return s;
}

static enum MHD_Result queue(struct MHD_Connection *conn, int status, const char *ctype,
                             const char *body, size_t len, const char *req_id, int retry_after,
                             const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    if (!r)
        return MHD_NO;
    if (ctype && *ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (req_id)
        MHD_add_response_header(r, "X-Request-Id", req_id);
    if (retry_after > 0) {
        char ra[16];

        snprintf(ra, sizeof(ra), "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (allow && *allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result http_queue(struct MHD_Connection *conn, int status, const char *ctype,
                           const char *body, size_t len, const char *req_id, int retry_after)
{
    return queue(conn, status, ctype, body, len, req_id, retry_after, NULL);
}

enum MHD_Result http_queue_error_body(struct MHD_Connection *conn, const struct px_error *err,
                                      const char *body, size_t len, const char *req_id)
{
    int status = px_http_status(err);
    int retry_after = err->retry_after > 0 ? err->retry_after : (status == 503 ? 1 : 0);

    return queue(conn, status, "application/json", body, len, req_id, retry_after, err->allow);
}

enum MHD_Result http_queue_error(struct MHD_Connection *conn, const struct px_error *err,
                                 const char *req_id)
{
    size_t len;
    char *body = http_error_json(err, &len);
    enum MHD_Result ret = http_queue_error_body(conn, err, body, len, req_id);

    cJSON_free(body);
    return ret;
}

int http_key_rejected(struct px_error *err, int upstream_status, const char *body, size_t len)
{
    char msg[400] = "";
    cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;

    if (cJSON_IsString(m))
        snprintf(msg, sizeof(msg), "%s", m->valuestring);
    else if (body && len)
        snprintf(msg, sizeof(msg), "%.*s", (int)(len < 300 ? len : 300), body);
    cJSON_Delete(root);
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    redact_secrets(msg);
    px_fail(err, PX_EUPSTREAM, NULL,
            "the proxy's upstream key was rejected (upstream HTTP %d%s%.300s); the proxy's "
            "operator must fix the server's or the tenant's provider key",
            upstream_status, msg[0] ? ": " : "", msg);
    snprintf(err->err_code, sizeof(err->err_code), "upstream_key_rejected");
    return PX_EUPSTREAM;
}

/* ---- upstream errors that are not OpenAI-shaped ------------------------------------------- */

/* Appends s[0..n) to b as one line: control characters and runs of blanks become one space,
 * bytes that are not UTF-8 become '?'. */
static void append_clean(struct buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = k > 0 && i + k <= n;

        for (size_t j = 1; ok && j < k; j++)
            ok = ((unsigned char)s[i + j] & 0xC0) == 0x80;
        if (!ok) {
            buf_puts(b, "?");
            i++;
        } else if (c < 0x20 || c == 0x7f || c == ' ') {
            if (b->len && b->data[b->len - 1] != ' ')
                buf_puts(b, " ");
            i++;
        } else {
            buf_append(b, s + i, k);
            i += k;
        }
    }
}

/* HTML (a gateway's error page) as text: tags, scripts and styles removed, a few entities
 * decoded. */
static void append_html(struct buf *b, const char *s, size_t n)
{
    static const struct {
        const char *name, *text;
    } ent[] = {{"&amp;", "&"},   {"&lt;", "<"},  {"&gt;", ">"},
               {"&quot;", "\""}, {"&#39;", "'"}, {"&nbsp;", " "}};

    for (size_t i = 0; i < n;) {
        if (s[i] == '<') {
            const char *end = memchr(s + i, '>', n - i);
            size_t tl = end ? (size_t)(end - (s + i)) + 1 : n - i;
            bool script = tl >= 7 && (strncasecmp(s + i, "<script", 7) == 0 ||
                                      strncasecmp(s + i, "<style", 6) == 0);

            i += tl;
            if (script) { /* skip to the closing tag */
                while (i < n && !(s[i] == '<' && i + 1 < n && s[i + 1] == '/'))
                    i++;
            }
            append_clean(b, " ", 1);
            continue;
        }
        if (s[i] == '&') {
            size_t e;

            for (e = 0; e < PX_ARRAY_LEN(ent); e++) {
                size_t el = strlen(ent[e].name);

                if (n - i >= el && strncasecmp(s + i, ent[e].name, el) == 0) {
                    append_clean(b, ent[e].text, strlen(ent[e].text));
                    i += el;
                    break;
                }
            }
            if (e < PX_ARRAY_LEN(ent))
                continue;
        }
        size_t j = i + 1;
        while (j < n && s[j] != '<' && s[j] != '&')
            j++;
        append_clean(b, s + i, j - i);
        i = j;
    }
}

static bool looks_html(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
        s++, n--;
    return n > 0 && *s == '<';
}

char *http_upstream_text(const char *body, size_t len, size_t max)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    struct buf b;
    char *out;

    buf_init(&b, 0);
    if (cJSON_IsObject(root)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");

        if (cJSON_IsObject(e) && !cJSON_IsString(m)) /* {"error":{"msg":..}}: a nested object */
            m = cJSON_GetObjectItemCaseSensitive(e, "message");
        if (!cJSON_IsString(m))
            m = cJSON_GetObjectItemCaseSensitive(root, "detail");
        if (cJSON_IsString(e) && e->valuestring[0]) {
            append_clean(&b, e->valuestring, strlen(e->valuestring));
            if (cJSON_IsString(m) && m->valuestring[0])
                buf_puts(&b, ": ");
        }
        if (cJSON_IsString(m))
            append_clean(&b, m->valuestring, strlen(m->valuestring));
        if (b.len == 0) { /* some other JSON object: shown as it is */
            char *s = cJSON_PrintUnformatted(root);

            append_clean(&b, s, strlen(s));
            cJSON_free(s);
        }
    } else if (cJSON_IsString(root)) {
        append_clean(&b, root->valuestring, strlen(root->valuestring));
    } else if (looks_html(body, len)) {
        append_html(&b, body, len);
    } else {
        append_clean(&b, body, len);
    }
    cJSON_Delete(root);
    /* Trim, and cut at a UTF-8 boundary. */
    const char *s = buf_cstr(&b);
    size_t start = 0, n = b.len;
    while (start < n && s[start] == ' ')
        start++;
    while (n > start && s[n - 1] == ' ')
        n--;
    bool cut = n - start > max;
    if (cut) {
        n = start + max;
        while (n > start && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    out = cJSON_malloc(n - start + 5);
    memcpy(out, s + start, n - start);
    memcpy(out + (n - start), cut ? "..." : "", cut ? 4 : 1);
    buf_free(&b);
    return out;
}

char *http_upstream_error(int status, const char *body, size_t len, size_t *out_len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    bool openai = cJSON_IsObject(root) && cJSON_IsObject(e) &&
                  cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message"));
    struct px_error err;
    char *text, *s;

    cJSON_Delete(root);
    if (openai)
        return NULL;
    text = http_upstream_text(body, len, 1000);
    px_fail_http(&err, status, NULL);
    snprintf(err.err_code, sizeof(err.err_code), "upstream_error");
    snprintf(err.message, sizeof(err.message), "upstream HTTP %d: %s", status,
             text[0] ? text : "(empty body)");
    cJSON_free(text);
    s = http_error_json(&err, out_len);
    return s;
}
