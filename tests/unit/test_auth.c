/* test_auth.c: unit tests of client authentication and upstream key resolution (auth.c). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <string.h>

#include "internal.h"
#include <stdlib.h>

#include "arena.h"

static struct arena *arena_for_tests;

static void free_test_arena(void)
{
    arena_destroy(arena_for_tests);
}

/* One arena for every call in this binary, freed at exit. */
static struct arena *test_arena(void)
{
    if (!arena_for_tests) {
        arena_for_tests = arena_create();
        atexit(free_test_arena);
    }
    return arena_for_tests;
}

static char server_key[] = "sk-server-KEY-111";
static char gate_key[] = "gate-secret-KEY-222";
#define CLIENT  "sk-client-KEY-333"
#define XUP     "sk-xup-KEY-444"
#define BAD_KEY "sk-bad\x01KEY-555"

/* Every key a test may use: none of them may appear in an error message. */
static const char *const all_keys[] = {
    "sk-server-KEY-111", "gate-secret-KEY-222", CLIENT, XUP, BAD_KEY, "sk-no-key", "KEY-",
};

static void cfg_make(struct config *cfg, bool server, bool gate, bool client_keys)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->approach, sizeof(cfg->approach), "auto");
    snprintf(cfg->model, sizeof(cfg->model), "m");
    cfg->n = 1;
    cfg->upstream_key = server ? server_key : NULL;
    cfg->gate_key = gate ? gate_key : NULL;
    cfg->client_keys = client_keys;
}

static void assert_no_key_in(const struct px_error *err)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(all_keys); i++) {
        if (strstr(err->message, all_keys[i]))
            print_error("message leaks a key: %s\n", err->message);
        assert_null(strstr(err->message, all_keys[i]));
    }
}

enum { NONE = 0, SERVER, GATE, CLIENT_K, XUP_K };

struct auth_case {
    const char *what;
    bool server, gate, client_keys;
    const char *authorization; /* header value or NULL */
    const char *x_upstream;    /* header value or NULL */
    int rc;                    /* expected */
    int key;                   /* expected upstream key on success */
    const char *err_code;      /* expected err_code on failure, or NULL */
};

#define BEARER_CLIENT "Bearer " CLIENT
#define BEARER_GATE   "Bearer gate-secret-KEY-222"

static const struct auth_case cases[] = {
    /* No gate, no server key: the client's Bearer goes upstream as is. */
    {"open, no server key, Bearer", false, false, false, BEARER_CLIENT, NULL, PX_OK, CLIENT_K,
     NULL},
    {"open, no server key, placeholder Bearer", false, false, false, "Bearer sk-no-key", NULL,
     PX_OK, NONE, NULL},
    {"open, no key at all", false, false, false, NULL, NULL, PX_EAUTH, NONE, "missing_api_key"},
    {"open, no server key, Basic", false, false, false, "Basic " CLIENT, NULL, PX_EAUTH, NONE,
     "missing_api_key"},
    {"open, no server key, empty Bearer", false, false, false, "Bearer ", NULL, PX_EAUTH, NONE,
     "missing_api_key"},
    {"open, no server key, X-Upstream without --client-keys", false, false, false, NULL, XUP,
     PX_EAUTH, NONE, "missing_api_key"},
    /* A server key beats the client's Bearer without --client-keys. */
    {"server key, Bearer", true, false, false, BEARER_CLIENT, NULL, PX_OK, SERVER, NULL},
    {"server key, placeholder Bearer", true, false, false, "Bearer sk-no-key", NULL, PX_OK, SERVER,
     NULL},
    {"server key, nothing sent", true, false, false, NULL, NULL, PX_OK, SERVER, NULL},
    {"server key, X-Upstream without --client-keys", true, false, false, BEARER_CLIENT, XUP, PX_OK,
     SERVER, NULL},
    /* --client-keys without a gate: the client's Bearer wins. */
    {"client-keys, server key, Bearer", true, false, true, BEARER_CLIENT, NULL, PX_OK, CLIENT_K,
     NULL},
    {"client-keys, no server key, Bearer", false, false, true, BEARER_CLIENT, NULL, PX_OK, CLIENT_K,
     NULL},
    {"client-keys, server key, no Bearer", true, false, true, NULL, NULL, PX_OK, SERVER, NULL},
    {"client-keys, no key at all", false, false, true, NULL, NULL, PX_EAUTH, NONE,
     "missing_api_key"},
    /* --client-keys with X-Upstream-Api-Key: that header wins, with or without a gate. */
    {"client-keys, X-Upstream beats Bearer", true, false, true, BEARER_CLIENT, XUP, PX_OK, XUP_K,
     NULL},
    {"client-keys, X-Upstream, no Bearer", false, false, true, NULL, XUP, PX_OK, XUP_K, NULL},
    {"client-keys, empty X-Upstream", true, false, true, BEARER_CLIENT, "", PX_OK, CLIENT_K, NULL},
    {"gate, client-keys, X-Upstream, server key", true, true, true, BEARER_GATE, XUP, PX_OK, XUP_K,
     NULL},
    {"gate, client-keys, X-Upstream, no server key", false, true, true, BEARER_GATE, XUP, PX_OK,
     XUP_K, NULL},
    /* Behind a gate the Bearer is the gate key: never forwarded. */
    {"gate, client-keys, no X-Upstream, server key", true, true, true, BEARER_GATE, NULL, PX_OK,
     SERVER, NULL},
    {"gate, client-keys, no X-Upstream, no server key", false, true, true, BEARER_GATE, NULL,
     PX_EAUTH, NONE, "missing_api_key"},
    /* The gate. */
    {"gate, missing Bearer", true, true, false, NULL, NULL, PX_EAUTH, NONE, "invalid_api_key"},
    {"gate, wrong Bearer", true, true, false, BEARER_CLIENT, NULL, PX_EAUTH, NONE,
     "invalid_api_key"},
    {"gate, gate key as Basic", true, true, false, "Basic gate-secret-KEY-222", NULL, PX_EAUTH,
     NONE, "invalid_api_key"},
    {"gate, prefix of the gate key", true, true, false, "Bearer gate-secret-KEY-22", NULL, PX_EAUTH,
     NONE, "invalid_api_key"},
    {"gate, gate key plus a byte", true, true, false, "Bearer gate-secret-KEY-2222", NULL, PX_EAUTH,
     NONE, "invalid_api_key"},
    {"gate, wrong Bearer, X-Upstream", true, true, true, BEARER_CLIENT, XUP, PX_EAUTH, NONE,
     "invalid_api_key"},
    {"gate, right Bearer", true, true, false, BEARER_GATE, NULL, PX_OK, SERVER, NULL},
    {"gate, lower-case scheme", true, true, false, "bearer gate-secret-KEY-222", NULL, PX_OK,
     SERVER, NULL},
    {"gate, right Bearer, X-Upstream ignored", true, true, false, BEARER_GATE, XUP, PX_OK, SERVER,
     NULL},
    {"gate, no server key", false, true, false, BEARER_GATE, NULL, PX_EAUTH, NONE,
     "missing_api_key"},
    {"gate, no server key, X-Upstream ignored", false, true, false, BEARER_GATE, XUP, PX_EAUTH,
     NONE, "missing_api_key"},
    /* Scheme case-insensitive, blanks trimmed; other schemes are not a Bearer. */
    {"BEARER", false, false, false, "BEARER " CLIENT, NULL, PX_OK, CLIENT_K, NULL},
    {"bearer", false, false, false, "bearer " CLIENT, NULL, PX_OK, CLIENT_K, NULL},
    {"bEaReR", false, false, false, "bEaReR " CLIENT, NULL, PX_OK, CLIENT_K, NULL},
    {"blanks", false, false, false, "  Bearer   " CLIENT "  ", NULL, PX_OK, CLIENT_K, NULL},
    {"tabs", false, false, false, "\tBearer\t" CLIENT "\t", NULL, PX_OK, CLIENT_K, NULL},
    {"no blank after scheme", false, false, false, "Bearer" CLIENT, NULL, PX_EAUTH, NONE,
     "missing_api_key"},
    {"Token scheme", false, false, false, "Token " CLIENT, NULL, PX_EAUTH, NONE, "missing_api_key"},
    {"bare key", false, false, false, CLIENT, NULL, PX_EAUTH, NONE, "missing_api_key"},
    {"empty header", false, false, false, "", NULL, PX_EAUTH, NONE, "missing_api_key"},
    /* Keys that would break a header are refused. */
    {"client-keys, X-Upstream with \\x01", true, false, true, NULL, BAD_KEY, PX_EINVAL, NONE, NULL},
    {"client-keys, X-Upstream with CR LF", true, false, true, NULL, "sk-a\r\nX-Evil: 1", PX_EINVAL,
     NONE, NULL},
    {"client-keys, X-Upstream with DEL", true, false, true, NULL, "sk-a\x7f", PX_EINVAL, NONE,
     NULL},
    {"gate, client-keys, X-Upstream with \\x01", true, true, true, BEARER_GATE, BAD_KEY, PX_EINVAL,
     NONE, NULL},
    {"bad X-Upstream ignored without --client-keys", true, false, false, NULL, BAD_KEY, PX_OK,
     SERVER, NULL},
    {"Bearer with \\x01", false, false, false, "Bearer " BAD_KEY, NULL, PX_EINVAL, NONE, NULL},
};

static void test_resolve_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        const struct auth_case *c = &cases[i];
        struct config cfg;
        struct px_error err;
        const char *key = "unset";
        int rc;

        print_message("case: %s\n", c->what);
        cfg_make(&cfg, c->server, c->gate, c->client_keys);
        memset(&err, 0, sizeof(err));
        rc = auth_resolve(&cfg, test_arena(), c->authorization, c->x_upstream, &key, &err);
        assert_int_equal(rc, c->rc);
        if (rc == PX_OK) {
            assert_non_null(key);
            switch (c->key) {
            case SERVER:
                assert_string_equal(key, server_key);
                break;
            case CLIENT_K:
                assert_string_equal(key, CLIENT);
                break;
            case XUP_K:
                assert_string_equal(key, XUP);
                break;
            default:
                assert_string_equal(key, "sk-no-key");
                break;
            }
            /* The gate key never goes upstream. */
            assert_string_not_equal(key, gate_key);
        } else {
            assert_null(key);
            assert_int_equal(err.code, rc);
            assert_true(err.message[0] != '\0');
            if (c->err_code)
                assert_string_equal(err.err_code, c->err_code);
            assert_no_key_in(&err);
        }
    }
}

/* "none of the above" names OPENAI_API_KEY and the Bearer option; behind a gate, the
 * X-Upstream-Api-Key header. */
static void test_missing_key_message(void **state)
{
    struct config cfg;
    struct px_error err;
    const char *key;

    (void)state;
    cfg_make(&cfg, false, false, false);
    assert_int_equal(auth_resolve(&cfg, test_arena(), NULL, NULL, &key, &err), PX_EAUTH);
    assert_non_null(strstr(err.message, "OPENAI_API_KEY"));
    assert_non_null(strstr(err.message, "Bearer"));
    assert_int_equal(px_http_status(&err), 401);

    cfg_make(&cfg, false, true, true);
    assert_int_equal(auth_resolve(&cfg, test_arena(), BEARER_GATE, NULL, &key, &err), PX_EAUTH);
    assert_non_null(strstr(err.message, "OPENAI_API_KEY"));
    assert_non_null(strstr(err.message, "X-Upstream-Api-Key"));
    assert_no_key_in(&err);
    assert_int_equal(px_http_status(&err), 401);
}

static void test_gate(void **state)
{
    static const struct {
        bool gate;
        const char *authorization;
        int rc;
    } gcases[] = {
        {false, NULL, PX_OK},
        {false, "Bearer anything", PX_OK},
        {false, "Basic xyz", PX_OK},
        {true, NULL, PX_EAUTH},
        {true, "", PX_EAUTH},
        {true, "Bearer", PX_EAUTH},
        {true, "Bearer ", PX_EAUTH},
        {true, "Bearer wrong", PX_EAUTH},
        {true, "Basic gate-secret-KEY-222", PX_EAUTH},
        {true, "gate-secret-KEY-222", PX_EAUTH},
        {true, "Bearer gate-secret-KEY-222x", PX_EAUTH},
        {true, "Bearer gate-secret-KEY-22", PX_EAUTH},
        {true, "Bearer GATE-SECRET-KEY-222", PX_EAUTH},
        {true, "Bearer gate-secret-KEY-222", PX_OK},
        {true, "BEARER gate-secret-KEY-222", PX_OK},
        {true, " Bearer  gate-secret-KEY-222 ", PX_OK},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(gcases); i++) {
        struct config cfg;
        struct px_error err;
        int rc;

        print_message("gate %d, '%s'\n", gcases[i].gate,
                      gcases[i].authorization ? gcases[i].authorization : "(null)");
        cfg_make(&cfg, true, gcases[i].gate, false);
        memset(&err, 0, sizeof(err));
        rc = auth_gate(&cfg, gcases[i].authorization, &err);
        assert_int_equal(rc, gcases[i].rc);
        if (rc < 0) {
            assert_int_equal(err.code, PX_EAUTH);
            assert_string_equal(err.err_code, "invalid_api_key");
            assert_int_equal(px_http_status(&err), 401);
            assert_no_key_in(&err);
        }
    }
}

/* A Bearer longer than any real key is not forwarded truncated. */
static void test_long_bearer(void **state)
{
    static char hdr[9000];
    struct config cfg;
    struct px_error err;
    const char *key = NULL;
    int rc;

    (void)state;
    memcpy(hdr, "Bearer ", 7);
    memset(hdr + 7, 'k', sizeof(hdr) - 8);
    hdr[sizeof(hdr) - 1] = '\0';
    cfg_make(&cfg, false, false, false);
    rc = auth_resolve(&cfg, test_arena(), hdr, NULL, &key, &err);
    if (rc == PX_OK)
        assert_int_equal(strlen(key), sizeof(hdr) - 8);
    else
        assert_null(key);
}

static void test_equal(void **state)
{
    static char long_a[5000];
    static char long_b[5000];

    (void)state;
    assert_true(auth_equal("a", "a"));
    assert_true(auth_equal("", ""));
    assert_true(auth_equal(gate_key, "gate-secret-KEY-222"));
    assert_false(auth_equal("a", "b"));
    assert_false(auth_equal("abc", "abcd"));
    assert_false(auth_equal("abcd", "abc"));
    assert_false(auth_equal("", "a"));
    assert_false(auth_equal("a", ""));
    assert_false(auth_equal("Key", "key"));
    memset(long_a, 'x', sizeof(long_a) - 1);
    memset(long_b, 'x', sizeof(long_b) - 1);
    assert_true(auth_equal(long_a, long_b));
    long_b[sizeof(long_b) - 2] = 'y';
    assert_false(auth_equal(long_a, long_b));
    long_b[sizeof(long_b) - 2] = 'x';
    long_b[0] = 'y';
    assert_false(auth_equal(long_a, long_b));
}

/* The key of one call is not changed by a later call (it is copied into the arena). */
static void test_key_lifetime(void **state)
{
    struct config cfg;
    struct px_error err;
    const char *k1 = NULL;
    const char *k2 = NULL;

    (void)state;
    cfg_make(&cfg, false, false, false);
    assert_int_equal(auth_resolve(&cfg, test_arena(), "Bearer first-key", NULL, &k1, &err), PX_OK);
    assert_string_equal(k1, "first-key");
    assert_int_equal(auth_resolve(&cfg, test_arena(), "Bearer second-key", NULL, &k2, &err), PX_OK);
    assert_string_equal(k2, "second-key");
    assert_string_equal(k1, "first-key");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_table), cmocka_unit_test(test_missing_key_message),
        cmocka_unit_test(test_gate),          cmocka_unit_test(test_long_bearer),
        cmocka_unit_test(test_equal),         cmocka_unit_test(test_key_lifetime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
