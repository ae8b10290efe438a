/* auth.c: may this client use the proxy, and which key goes upstream (DESIGN.md tables). */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "internal.h"
#include "providers.h"

bool auth_equal(const char *a, const char *b)
{
    unsigned char da[SHA256_DIGEST_LENGTH];
    unsigned char db[SHA256_DIGEST_LENGTH];

    /* Comparing digests keeps the time independent of where (and whether) lengths differ. */
    SHA256((const unsigned char *)a, strlen(a), da);
    SHA256((const unsigned char *)b, strlen(b), db);
    return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

/* The token of "Bearer <token>" (scheme case-insensitive, surrounding blanks trimmed) copied
 * into out; false when the header is absent or another scheme. */
static bool bearer(const char *h, char *out, size_t cap)
{
    size_t len;

    if (!h)
        return false;
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return false;
    h += 7;
    while (*h == ' ' || *h == '\t')
        h++;
    len = strlen(h);
    while (len && (h[len - 1] == ' ' || h[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= cap)
        return false;
    memcpy(out, h, len);
    out[len] = '\0';
    return true;
}

/* A key that would break an HTTP header (CR, LF, NUL, other controls) is refused outright. */
static bool key_ok(const char *k)
{
    for (; *k; k++)
        if ((unsigned char)*k < 0x20 || *k == 0x7f)
            return false;
    return true;
}

static int unknown_key(struct px_error *err)
{
    px_fail(err, PX_EAUTH, NULL,
            "Invalid or missing API key for this proxy. Send 'Authorization: Bearer "
            "<proxy key>' (or 'x-api-key: <proxy key>').");
    snprintf(err->err_code, sizeof(err->err_code), "invalid_api_key");
    return PX_EAUTH;
}

/* Client authentication: with tenants, the Bearer must be a tenant key or the gate key; with a
 * gate only, the gate key. On success the matched tenant (or NULL) and its hold are set. */
static int authenticate(const struct config *cfg, const char *authorization,
                        const struct tenant **tenant, void **hold, struct px_error *err)
{
    char tok[16384];
    bool has = bearer(authorization, tok, sizeof(tok));
    int rc = PX_OK;

    *tenant = NULL;
    *hold = NULL;
    if (tenants_enabled()) {
        if (has)
            *tenant = tenants_match(tok, hold);
        if (!*tenant && !(has && cfg->gate_key && auth_equal(tok, cfg->gate_key)))
            rc = unknown_key(err);
    } else if (cfg->gate_key && (!has || !auth_equal(tok, cfg->gate_key))) {
        rc = unknown_key(err);
    }
    explicit_bzero(tok, sizeof(tok));
    return rc;
}

int auth_gate(const struct config *cfg, const char *authorization, struct px_error *err)
{
    const struct tenant *t;
    void *hold;
    int rc = authenticate(cfg, authorization, &t, &hold, err);

    tenants_release(hold);
    return rc;
}

/* x_upstream without surrounding blanks, in 'a'; NULL when absent or blank. */
static const char *trimmed(struct arena *a, const char *v)
{
    size_t len;

    if (!v)
        return NULL;
    while (*v == ' ' || *v == '\t')
        v++;
    len = strlen(v);
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    return len ? arena_strndup(a, v, len) : NULL;
}

int auth_resolve_tenant(const struct config *cfg, struct arena *a, const char *authorization,
                        const char *x_upstream, const char **upstream_key,
                        const struct tenant **tenant, void **hold, struct px_error *err)
{
    char tok[16384];
    bool has_bearer = bearer(authorization, tok, sizeof(tok));
    bool gated = cfg->gate_key != NULL || tenants_enabled();
    int rc;

    *upstream_key = NULL;
    if ((rc = authenticate(cfg, authorization, tenant, hold, err)) < 0) {
        explicit_bzero(tok, sizeof(tok));
        return rc;
    }
    x_upstream = trimmed(a, x_upstream);
    if (*tenant && (*tenant)->upstream_key) {
        *upstream_key = (*tenant)->upstream_key;
    } else if (cfg->client_keys && x_upstream) {
        if (!key_ok(x_upstream)) {
            rc = px_fail(err, PX_EINVAL, NULL, "X-Upstream-Api-Key contains control characters");
            goto out;
        }
        *upstream_key = x_upstream;
    } else if (cfg->client_keys && !gated && has_bearer) {
        *upstream_key = arena_strdup(a, tok);
    } else if (cfg->upstream_key || providers_enabled()) {
        *upstream_key = cfg->upstream_key; /* NULL: only the providers' own keys */
    } else if (!gated && has_bearer) {
        *upstream_key = arena_strdup(a, tok);
    } else {
        px_fail(err, PX_EAUTH, NULL,
                gated ? "No upstream API key: the server has none (set OPENAI_API_KEY or "
                        "--upstream-key), and with --client-keys you may send your provider key "
                        "in the 'X-Upstream-Api-Key' header."
                      : "No upstream API key: set OPENAI_API_KEY (or --upstream-key) on the "
                        "server, or send your provider key as 'Authorization: Bearer <key>'.");
        snprintf(err->err_code, sizeof(err->err_code), "missing_api_key");
        rc = PX_EAUTH;
        goto out;
    }
    if (!key_ok(*upstream_key)) {
        *upstream_key = NULL;
        rc = px_fail(err, PX_EINVAL, NULL, "the API key contains control characters");
    }
out:
    explicit_bzero(tok, sizeof(tok));
    if (rc < 0) {
        tenants_release(*hold);
        *hold = NULL;
        *tenant = NULL;
    }
    return rc;
}

int auth_resolve(const struct config *cfg, struct arena *a, const char *authorization,
                 const char *x_upstream, const char **upstream_key, struct px_error *err)
{
    const struct tenant *t;
    void *hold;
    int rc = auth_resolve_tenant(cfg, a, authorization, x_upstream, upstream_key, &t, &hold, err);

    if (rc == PX_OK && t && *upstream_key == t->upstream_key)
        *upstream_key = arena_strdup(a, *upstream_key); /* outlives the tenant set */
    tenants_release(hold);
    return rc;
}

bool auth_key_is_proxys(const struct config *cfg, const struct tenant *t, const char *key)
{
    /* auth_resolve_tenant hands out these very pointers; a client's key is always a copy. */
    return key && (key == cfg->upstream_key || (t && key == t->upstream_key));
}
