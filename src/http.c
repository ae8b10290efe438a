/* http.c: the only place that writes error bodies, and complete-response helpers. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

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

enum MHD_Result http_queue_error(struct MHD_Connection *conn, const struct px_error *err,
                                 const char *req_id)
{
    size_t len;
    char *body = http_error_json(err, &len);
    int status = px_http_status(err);
    int retry_after = err->retry_after > 0 ? err->retry_after : (status == 503 ? 1 : 0);
    enum MHD_Result ret =
        queue(conn, status, "application/json", body, len, req_id, retry_after, err->allow);

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
