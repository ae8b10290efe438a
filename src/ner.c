/* ner.c: the NER service client of the privacy plugin (include/ner.h). */
#include "ner.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "px.h"

#define NER_MAX_ANSWER ((size_t)4 << 20)

struct ner {
    CURL *curl;
    char *url;
    double timeout_s;
};

struct ner *ner_open(const char *url, double timeout_s)
{
    struct ner *n = xcalloc(1, sizeof(*n));

    n->url = xstrdup(url);
    n->timeout_s = timeout_s > 0 ? timeout_s : 10;
    return n;
}

void ner_close(struct ner *n)
{
    if (!n)
        return;
    if (n->curl)
        curl_easy_cleanup(n->curl);
    free(n->url);
    free(n);
}

/* The byte offset of code point 'cp' in text (UTF-8), or (size_t)-1 when beyond its end. */
static size_t byte_at(const char *text, size_t len, double cp)
{
    size_t b = 0;

    if (!(cp >= 0) || cp > (double)len)
        return (size_t)-1;
    for (size_t k = (size_t)cp; k > 0; k--) {
        if (b >= len)
            return (size_t)-1;
        b++;
        while (b < len && ((unsigned char)text[b] & 0xC0) == 0x80)
            b++;
    }
    return b;
}

static const char *kept_label(const char *type)
{
    if (!type)
        return NULL;
    if (strcmp(type, "PERSON") == 0)
        return "PERSON";
    if (strcmp(type, "LOCATION") == 0 || strcmp(type, "GPE") == 0)
        return "LOCATION";
    return NULL;
}

int ner_parse(const char *text, size_t len, const char *answer, struct pii_extra **out, char *err,
              size_t errlen)
{
    cJSON *arr = cJSON_Parse(answer);
    cJSON *it;
    size_t n = 0, cap;

    *out = NULL;
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        snprintf(err, errlen, "the NER service's answer is not a JSON array of entities");
        return -1;
    }
    cap = (size_t)cJSON_GetArraySize(arr);
    if (cap == 0) {
        cJSON_Delete(arr);
        return 0;
    }
    *out = xcalloc(cap, sizeof(**out));
    cJSON_ArrayForEach(it, arr)
    {
        const char *label =
            kept_label(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "entity_type")));
        cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "start");
        cJSON *en = cJSON_GetObjectItemCaseSensitive(it, "end");
        cJSON *sc = cJSON_GetObjectItemCaseSensitive(it, "score");
        size_t b0, b1;

        if (!label || !cJSON_IsNumber(st) || !cJSON_IsNumber(en) ||
            (cJSON_IsNumber(sc) && sc->valuedouble < 0.5))
            continue;
        b0 = byte_at(text, len, st->valuedouble);
        b1 = byte_at(text, len, en->valuedouble);
        if (b0 == (size_t)-1 || b1 == (size_t)-1 || b1 <= b0)
            continue;
        (*out)[n].start = b0;
        (*out)[n].len = b1 - b0;
        (*out)[n++].label = label;
    }
    cJSON_Delete(arr);
    if (n == 0) {
        free(*out);
        *out = NULL;
    }
    return (int)n;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *user)
{
    struct buf *b = user;

    if (b->len + size * nmemb > NER_MAX_ANSWER)
        return 0;
    buf_append(b, p, size * nmemb);
    return size * nmemb;
}

int ner_find(struct ner *n, const char *text, size_t len, struct pii_extra **out, char *err,
             size_t errlen)
{
    cJSON *req = cJSON_CreateObject();
    char *body, *t = xstrndup(text, len);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct buf ans;
    long status = 0;
    CURLcode rc;
    int res;

    *out = NULL;
    if (len == 0) {
        free(t);
        cJSON_Delete(req);
        curl_slist_free_all(h);
        return 0;
    }
    cJSON_AddStringToObject(req, "text", t);
    cJSON_AddStringToObject(req, "language", "en");
    body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    free(t);
    if (!n->curl)
        n->curl = curl_easy_init();
    buf_init(&ans, 0);
    curl_easy_reset(n->curl);
    curl_easy_setopt(n->curl, CURLOPT_URL, n->url);
    curl_easy_setopt(n->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(n->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(n->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(n->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(n->curl, CURLOPT_TIMEOUT_MS, (long)(n->timeout_s * 1000));
    curl_easy_setopt(n->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(n->curl, CURLOPT_WRITEDATA, &ans);
    rc = curl_easy_perform(n->curl);
    curl_easy_getinfo(n->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    cJSON_free(body);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "the NER service failed: %s", curl_easy_strerror(rc));
        res = -1;
    } else if (status != 200) {
        snprintf(err, errlen, "the NER service answered HTTP %ld", status);
        res = -1;
    } else {
        res = ner_parse(text, len, buf_cstr(&ans), out, err, errlen);
    }
    buf_free(&ans);
    return res;
}
