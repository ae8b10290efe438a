/* test_config.c: unit tests of config_load (defaults, env, flags), options and --help. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "approach.h"
#include "config.h"
#include "log.h"
#include "px.h"

/* Every environment variable config_load reads. */
static const char *const env_names[] = {
    "OPTILLM_HOST",
    "OPTILLM_PORT",
    "OPTILLM_BASE_URL",
    "OPTILLM_UPSTREAM_AUTH_HEADER",
    "OPTILLM_CLIENT_KEYS",
    "OPTILLM_API_KEY",
    "OPTILLM_APPROACH",
    "OPTILLM_MODEL",
    "OPTILLM_N",
    "OPTILLM_RETURN_FULL_RESPONSE",
    "OPTILLM_NO_APPROACH_TAGS",
    "OPTILLM_PROMPTS_DIR",
    "OPTILLM_WORKERS",
    "OPTILLM_QUEUE",
    "OPTILLM_IO_LOOPS",
    "OPTILLM_HTTP_THREADS",
    "OPTILLM_MAX_CONNECTIONS",
    "OPTILLM_MAX_BODY",
    "OPTILLM_IDLE_TIMEOUT",
    "OPTILLM_UPSTREAM_TIMEOUT",
    "OPTILLM_CONNECT_TIMEOUT",
    "OPTILLM_SSE_KEEPALIVE",
    "OPTILLM_LOG",
    "OPTILLM_LOG_FORMAT",
    "OPENAI_API_KEY",
    "OPTILLM_BEST_OF_N",
    "OPTILLM_MOA_CANDIDATES",
    "OPTILLM_SAMPLES",
    "OPTILLM_MV_SAMPLES",
    "OPTILLM_ENABLE_CODE_EXECUTION",
    "OPTILLM_CODE_EXECUTION_TIMEOUT",
};

static void clear_env(void)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(env_names); i++)
        unsetenv(env_names[i]);
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* config_load on a NULL-terminated list of arguments (after the program name). stderr is sent
 * to /dev/null while it runs: the error cases print a message there. */
static int load(struct config *cfg, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    int saved, devnull, rc;

    argv[argc++] = (char *)"optillm";
    for (; args && *args && argc < 31; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    fflush(stderr);
    saved = dup(2);
    devnull = open("/dev/null", O_WRONLY);
    assert_true(saved >= 0 && devnull >= 0);
    dup2(devnull, 2);
    close(devnull);
    rc = config_load(cfg, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    return rc;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- defaults ----------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(load(&cfg, NULL), 0);
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.port, 8000);
    assert_string_equal(cfg.base_url, "https://api.openai.com/v1");
    assert_string_equal(cfg.approach, "auto");
    assert_string_equal(cfg.model, "gpt-4o-mini");
    assert_int_equal(cfg.max_body, 8u << 20);
    assert_int_equal(cfg.n, 1);
    assert_string_equal(cfg.auth_header, "Authorization");
    assert_null(cfg.upstream_key);
    assert_null(cfg.gate_key);
    assert_null(cfg.prompts_dir);
    assert_false(cfg.client_keys);
    assert_false(cfg.no_approach_tags);
    assert_false(cfg.return_full_response);
    assert_false(cfg.enable_code_execution);
    assert_true(cfg.code_timeout == 10);
    assert_int_equal(cfg.workers, 10000);
    assert_int_equal(cfg.http_threads, -1); /* auto: 0, or 2 with --redis-url */
    assert_true(cfg.io_loops >= 1);
    assert_true(cfg.upstream_timeout == 600);
    assert_true(cfg.connect_timeout == 10);
    assert_int_equal(cfg.idle_timeout, 60);
    assert_int_equal(cfg.log_level, LOG_INFO);
    assert_false(cfg.log_json);
    assert_int_equal(cfg.noptions, 0);
    config_cleanup(&cfg);
}

/* ---- every flag, both forms, and its environment variable ---------------------------------- */

enum kind { K_STR, K_PSTR, K_INT, K_UINT, K_DOUBLE, K_BOOL, K_SIZE };

struct flag_case {
    const char *flag; /* without "--" */
    const char *env;  /* or NULL */
    const char *value;
    enum kind kind;
    size_t off;
    const char *s; /* expected string (K_STR, K_PSTR) */
    double d;      /* expected number (others; bool as 0/1) */
};

#define OFF(f) offsetof(struct config, f)

static const struct flag_case flag_cases[] = {
    {"host", "OPTILLM_HOST", "0.0.0.0", K_STR, OFF(host), "0.0.0.0", 0},
    {"port", "OPTILLM_PORT", "9123", K_INT, OFF(port), NULL, 9123},
    {"port", "OPTILLM_PORT", "0", K_INT, OFF(port), NULL, 0},
    {"port", "OPTILLM_PORT", "65535", K_INT, OFF(port), NULL, 65535},
    {"base-url", "OPTILLM_BASE_URL", "http://127.0.0.1:9999/v1", K_STR, OFF(base_url),
     "http://127.0.0.1:9999/v1", 0},
    {"base_url", "OPTILLM_BASE_URL", "https://example.com/api/v1/", K_STR, OFF(base_url),
     "https://example.com/api/v1", 0},
    {"base-url", NULL, "http://h/v1///", K_STR, OFF(base_url), "http://h/v1", 0},
    {"upstream-key", NULL, "sk-flag-key", K_PSTR, OFF(upstream_key), "sk-flag-key", 0},
    {"upstream-auth-header", "OPTILLM_UPSTREAM_AUTH_HEADER", "api-key", K_STR, OFF(auth_header),
     "api-key", 0},
    {"client-keys", "OPTILLM_CLIENT_KEYS", "true", K_BOOL, OFF(client_keys), NULL, 1},
    {"client-keys", "OPTILLM_CLIENT_KEYS", "yes", K_BOOL, OFF(client_keys), NULL, 1},
    {"client-keys", "OPTILLM_CLIENT_KEYS", "1", K_BOOL, OFF(client_keys), NULL, 1},
    {"client-keys", "OPTILLM_CLIENT_KEYS", "false", K_BOOL, OFF(client_keys), NULL, 0},
    {"optillm-api-key", "OPTILLM_API_KEY", "gate-1", K_PSTR, OFF(gate_key), "gate-1", 0},
    {"optillm_api_key", "OPTILLM_API_KEY", "gate-2", K_PSTR, OFF(gate_key), "gate-2", 0},
    {"approach", "OPTILLM_APPROACH", "moa", K_STR, OFF(approach), "moa", 0},
    {"approach", "OPTILLM_APPROACH", "bon|moa", K_STR, OFF(approach), "bon|moa", 0},
    {"approach", "OPTILLM_APPROACH", "self-consistency", K_STR, OFF(approach), "self-consistency",
     0},
    {"approach", "OPTILLM_APPROACH", "none", K_STR, OFF(approach), "none", 0},
    {"model", "OPTILLM_MODEL", "llama-3.1-8b", K_STR, OFF(model), "llama-3.1-8b", 0},
    {"n", "OPTILLM_N", "4", K_INT, OFF(n), NULL, 4},
    {"return-full-response", "OPTILLM_RETURN_FULL_RESPONSE", "true", K_BOOL,
     OFF(return_full_response), NULL, 1},
    {"return_full_response", "OPTILLM_RETURN_FULL_RESPONSE", "on", K_BOOL,
     OFF(return_full_response), NULL, 1},
    {"no-approach-tags", "OPTILLM_NO_APPROACH_TAGS", "true", K_BOOL, OFF(no_approach_tags), NULL,
     1},
    {"enable-code-execution", "OPTILLM_ENABLE_CODE_EXECUTION", "1", K_BOOL,
     OFF(enable_code_execution), NULL, 1},
    {"code-execution-timeout", "OPTILLM_CODE_EXECUTION_TIMEOUT", "2.5", K_DOUBLE, OFF(code_timeout),
     NULL, 2.5},
    {"prompts-dir", "OPTILLM_PROMPTS_DIR", "/tmp/prompts", K_PSTR, OFF(prompts_dir), "/tmp/prompts",
     0},
    {"workers", "OPTILLM_WORKERS", "16", K_UINT, OFF(workers), NULL, 16},
    {"queue", "OPTILLM_QUEUE", "32", K_UINT, OFF(queue_max), NULL, 32},
    {"io-loops", "OPTILLM_IO_LOOPS", "3", K_UINT, OFF(io_loops), NULL, 3},
    {"http-threads", "OPTILLM_HTTP_THREADS", "4", K_INT, OFF(http_threads), NULL, 4},
    {"http-threads", "OPTILLM_HTTP_THREADS", "0", K_INT, OFF(http_threads), NULL, 0},
    {"max-connections", "OPTILLM_MAX_CONNECTIONS", "100", K_UINT, OFF(conn_limit), NULL, 100},
    {"max-body", "OPTILLM_MAX_BODY", "2M", K_SIZE, OFF(max_body), NULL, 2 << 20},
    {"max-body", "OPTILLM_MAX_BODY", "512k", K_SIZE, OFF(max_body), NULL, 512 << 10},
    {"max-body", "OPTILLM_MAX_BODY", "1K", K_SIZE, OFF(max_body), NULL, 1024},
    {"max-body", "OPTILLM_MAX_BODY", "3m", K_SIZE, OFF(max_body), NULL, 3 << 20},
    {"max-body", "OPTILLM_MAX_BODY", "4096", K_SIZE, OFF(max_body), NULL, 4096},
    {"idle-timeout", "OPTILLM_IDLE_TIMEOUT", "30", K_UINT, OFF(idle_timeout), NULL, 30},
    {"upstream-timeout", "OPTILLM_UPSTREAM_TIMEOUT", "12.5", K_DOUBLE, OFF(upstream_timeout), NULL,
     12.5},
    {"connect-timeout", "OPTILLM_CONNECT_TIMEOUT", "2.5", K_DOUBLE, OFF(connect_timeout), NULL,
     2.5},
    {"sse-keepalive", "OPTILLM_SSE_KEEPALIVE", "0.5", K_DOUBLE, OFF(sse_keepalive), NULL, 0.5},
    {"log", "OPTILLM_LOG", "debug", K_INT, OFF(log_level), NULL, LOG_DEBUG},
    {"log", "OPTILLM_LOG", "warning", K_INT, OFF(log_level), NULL, LOG_WARN},
    {"log", "OPTILLM_LOG", "ERROR", K_INT, OFF(log_level), NULL, LOG_ERROR},
    {"log-format", "OPTILLM_LOG_FORMAT", "json", K_BOOL, OFF(log_json), NULL, 1},
    {"log-format", "OPTILLM_LOG_FORMAT", "text", K_BOOL, OFF(log_json), NULL, 0},
};

static void check_field(const struct config *cfg, const struct flag_case *c)
{
    const char *field = (const char *)cfg + c->off;

    switch (c->kind) {
    case K_STR:
        assert_string_equal(field, c->s);
        break;
    case K_PSTR: {
        const char *const *p = (const char *const *)(const void *)field;

        assert_non_null(*p);
        assert_string_equal(*p, c->s);
        break;
    }
    case K_INT:
        assert_int_equal(*(const int *)(const void *)field, (int)c->d);
        break;
    case K_UINT:
        assert_int_equal(*(const unsigned *)(const void *)field, (unsigned)c->d);
        break;
    case K_DOUBLE:
        assert_true(*(const double *)(const void *)field == c->d);
        break;
    case K_BOOL:
        assert_int_equal(*(const bool *)(const void *)field, c->d != 0);
        break;
    case K_SIZE:
        assert_int_equal(*(const size_t *)(const void *)field, (size_t)c->d);
        break;
    }
}

static void test_flags_both_forms(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(flag_cases); i++) {
        const struct flag_case *c = &flag_cases[i];
        struct config cfg;
        char name[64];
        char joined[128];

        print_message("--%s %s\n", c->flag, c->value);
        snprintf(name, sizeof(name), "--%s", c->flag);
        snprintf(joined, sizeof(joined), "--%s=%s", c->flag, c->value);
        assert_int_equal(load(&cfg, ARGS(name, c->value)), 0);
        check_field(&cfg, c);
        config_cleanup(&cfg);
        assert_int_equal(load(&cfg, ARGS(joined)), 0);
        check_field(&cfg, c);
        config_cleanup(&cfg);
    }
}

static void test_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(flag_cases); i++) {
        const struct flag_case *c = &flag_cases[i];
        struct config cfg;

        if (!c->env)
            continue;
        print_message("%s=%s\n", c->env, c->value);
        setenv(c->env, c->value, 1);
        assert_int_equal(load(&cfg, NULL), 0);
        check_field(&cfg, c);
        config_cleanup(&cfg);
        unsetenv(c->env);
    }
}

static void test_flag_beats_env(void **state)
{
    struct config cfg;

    (void)state;
    setenv("OPTILLM_PORT", "7000", 1);
    setenv("OPTILLM_MODEL", "env-model", 1);
    setenv("OPTILLM_API_KEY", "env-gate", 1);
    assert_int_equal(load(&cfg, ARGS("--port", "7001", "--optillm-api-key=flag-gate")), 0);
    assert_int_equal(cfg.port, 7001);
    assert_string_equal(cfg.model, "env-model");
    assert_string_equal(cfg.gate_key, "flag-gate");
    config_cleanup(&cfg);
    /* The last flag wins. */
    assert_int_equal(load(&cfg, ARGS("--port", "1", "--port=2")), 0);
    assert_int_equal(cfg.port, 2);
    config_cleanup(&cfg);
}

static void test_bool_flags_without_value(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(load(&cfg, ARGS("--client-keys")), 0);
    assert_true(cfg.client_keys);
    config_cleanup(&cfg);
    /* A following flag is not taken as the value. */
    assert_int_equal(load(&cfg, ARGS("--no-approach-tags", "--port", "9001", "--client-keys",
                                     "--return-full-response")),
                     0);
    assert_true(cfg.no_approach_tags);
    assert_true(cfg.client_keys);
    assert_true(cfg.return_full_response);
    assert_int_equal(cfg.port, 9001);
    config_cleanup(&cfg);
    /* An explicit false, in both forms; and false from the environment overridden by a flag. */
    assert_int_equal(load(&cfg, ARGS("--client-keys", "false", "--no-approach-tags=0")), 0);
    assert_false(cfg.client_keys);
    assert_false(cfg.no_approach_tags);
    config_cleanup(&cfg);
    setenv("OPTILLM_CLIENT_KEYS", "false", 1);
    assert_int_equal(load(&cfg, ARGS("--client-keys")), 0);
    assert_true(cfg.client_keys);
    config_cleanup(&cfg);
    setenv("OPTILLM_CLIENT_KEYS", "true", 1);
    assert_int_equal(load(&cfg, ARGS("--client-keys=no")), 0);
    assert_false(cfg.client_keys);
    config_cleanup(&cfg);
}

/* ---- keys from the environment ------------------------------------------------------------ */

static void test_keys_env(void **state)
{
    struct config cfg;

    (void)state;
    setenv("OPENAI_API_KEY", "", 1); /* empty counts as unset */
    setenv("OPTILLM_API_KEY", "", 1);
    assert_int_equal(load(&cfg, NULL), 0);
    assert_null(cfg.upstream_key);
    assert_null(cfg.gate_key);
    config_cleanup(&cfg);

    setenv("OPENAI_API_KEY", "sk-env-key", 1);
    setenv("OPTILLM_API_KEY", "env-gate-key", 1);
    assert_int_equal(load(&cfg, NULL), 0);
    assert_string_equal(cfg.upstream_key, "sk-env-key");
    assert_string_equal(cfg.gate_key, "env-gate-key");
    config_cleanup(&cfg);
    assert_null(cfg.upstream_key);
    assert_null(cfg.gate_key);

    /* --upstream-key beats OPENAI_API_KEY; an empty flag value unsets. */
    assert_int_equal(load(&cfg, ARGS("--upstream-key", "sk-flag")), 0);
    assert_string_equal(cfg.upstream_key, "sk-flag");
    config_cleanup(&cfg);
    assert_int_equal(load(&cfg, ARGS("--upstream-key=")), 0);
    assert_null(cfg.upstream_key);
    config_cleanup(&cfg);
    assert_int_equal(load(&cfg, ARGS("--optillm-api-key", "")), 0);
    assert_null(cfg.gate_key);
    config_cleanup(&cfg);
}

/* ---- approach options ----------------------------------------------------------------------- */

static void test_option_flags(void **state)
{
    static const char *const forms[][2] = {
        {"--best-of-n", "5"},
        {"--best_of_n=5", NULL},
        {"--best-of-n=5", NULL},
        {"--best_of_n", "5"},
    };
    const struct approach_option *o = approach_option_find("best_of_n");
    struct config cfg;

    (void)state;
    assert_non_null(o);
    for (size_t i = 0; i < PX_ARRAY_LEN(forms); i++) {
        const char *args[3] = {forms[i][0], forms[i][1], NULL};

        print_message("%s %s\n", forms[i][0], forms[i][1] ? forms[i][1] : "");
        assert_int_equal(load(&cfg, args), 0);
        assert_true(config_option(&cfg, "best_of_n", -1) == 5);
        assert_true(config_option(&cfg, "moa_candidates", -1) == -1);
        config_cleanup(&cfg);
    }
    assert_int_equal(load(&cfg, ARGS("--moa-candidates", "4", "--samples=7", "--mv-samples", "9",
                                     "--best-of-n", "2", "--best-of-n", "3")),
                     0);
    assert_true(config_option(&cfg, "moa_candidates", -1) == 4);
    assert_true(config_option(&cfg, "samples", -1) == 7);
    assert_true(config_option(&cfg, "mv_samples", -1) == 9);
    assert_true(config_option(&cfg, "best_of_n", -1) == 3);
    assert_int_equal(cfg.noptions, 4);
    config_cleanup(&cfg);

    /* Not set: the caller's default. */
    assert_int_equal(load(&cfg, NULL), 0);
    assert_true(config_option(&cfg, "best_of_n", o->def) == o->def);
    config_cleanup(&cfg);
}

static void test_option_env(void **state)
{
    struct config cfg;

    (void)state;
    setenv("OPTILLM_BEST_OF_N", "6", 1);
    setenv("OPTILLM_MOA_CANDIDATES", "5", 1);
    assert_int_equal(load(&cfg, NULL), 0);
    assert_true(config_option(&cfg, "best_of_n", -1) == 6);
    assert_true(config_option(&cfg, "moa_candidates", -1) == 5);
    config_cleanup(&cfg);
    /* The flag beats the environment. */
    assert_int_equal(load(&cfg, ARGS("--best-of-n", "2")), 0);
    assert_true(config_option(&cfg, "best_of_n", -1) == 2);
    assert_true(config_option(&cfg, "moa_candidates", -1) == 5);
    config_cleanup(&cfg);
    /* An empty variable counts as unset. */
    setenv("OPTILLM_BEST_OF_N", "", 1);
    unsetenv("OPTILLM_MOA_CANDIDATES");
    assert_int_equal(load(&cfg, NULL), 0);
    assert_true(config_option(&cfg, "best_of_n", -1) == -1);
    config_cleanup(&cfg);
}

/* ---- bad values ------------------------------------------------------------------------------ */

static void test_bad_flags(void **state)
{
    static const char *const bad[][3] = {
        {"--nosuch", NULL},
        {"--nosuch=1", NULL},
        {"--", NULL},
        {"-x", NULL},
        {"stray", NULL},
        {"--port", "abc"},
        {"--port=abc", NULL},
        {"--port", "65536"},
        {"--port", "-1"},
        {"--port", "80x"},
        {"--port=", NULL},
        {"--port", NULL}, /* missing value */
        {"--model", NULL},
        {"--best-of-n", NULL},
        {"--approach", "nosuch"},
        {"--approach", "moa&nosuch"},
        {"--approach", "moa-gpt-4o"},
        {"--approach", "moa|bon&re2"},
        {"--log", "verbose"},
        {"--log-format", "xml"},
        {"--base-url", "api.openai.com/v1"},
        {"--base-url", "ftp://x/v1"},
        {"--base_url=localhost:8080", NULL},
        {"--n", "0"},
        {"--code-execution-timeout", "0"},
        {"--code-execution-timeout", "3601"},
        {"--n", "129"},
        {"--n", "two"},
        {"--workers", "0"},
        {"--workers", "-3"},
        {"--queue", "x"},
        {"--max-body", "10"},
        {"--max-body", "abc"},
        {"--max-body", "5T"},
        {"--max-body", "-1M"},
        {"--upstream-timeout", "0"},
        {"--connect-timeout", "-1"},
        {"--sse-keepalive", "soon"},
        {"--client-keys=maybe", NULL},
        {"--best-of-n", "17"},
        {"--best-of-n", "0"},
        {"--best-of-n", "2.5"},
        {"--best-of-n", "lots"},
        {"--moa-candidates=1", NULL},
        {"--host",
         "a-very-long-host-name-that-does-not-fit-in-sixty-four-bytes-at-all.example.com"},
    };
    struct config cfg;

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        print_message("%s %s\n", bad[i][0], bad[i][1] ? bad[i][1] : "");
        assert_int_equal(load(&cfg, bad[i]), -1);
        config_cleanup(&cfg);
    }
}

/* A size must be a finite number: strtod also accepts "nan" and "inf". */
static void test_bad_size_not_finite(void **state)
{
    static const char *const bad[] = {"nan", "NaN", "nank", "inf", "-inf", "infM"};
    struct config cfg;

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        print_message("--max-body %s\n", bad[i]);
        assert_int_equal(load(&cfg, ARGS("--max-body", bad[i])), -1);
        config_cleanup(&cfg);
    }
}

static void test_bad_env(void **state)
{
    static const char *const bad[][2] = {
        {"OPTILLM_PORT", "abc"},          {"OPTILLM_PORT", "70000"},
        {"OPTILLM_APPROACH", "nosuch"},   {"OPTILLM_LOG", "loud"},
        {"OPTILLM_BASE_URL", "nowhere"},  {"OPTILLM_BEST_OF_N", "99"},
        {"OPTILLM_CLIENT_KEYS", "maybe"}, {"OPTILLM_MAX_BODY", "1"},
    };
    struct config cfg;

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        print_message("%s=%s\n", bad[i][0], bad[i][1]);
        setenv(bad[i][0], bad[i][1], 1);
        assert_int_equal(load(&cfg, NULL), -1);
        config_cleanup(&cfg);
        unsetenv(bad[i][0]);
    }
}

/* ---- --help and --version ---------------------------------------------------------------------
 */

/* Runs config_load with stdout redirected to a temporary file; returns the output (malloc'd). */
static char *capture_stdout(const char *const *args, int *rc)
{
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    int saved;
    struct config cfg;
    FILE *f;
    long size;
    char *out;

    assert_true(fd >= 0);
    fflush(stdout);
    saved = dup(1);
    assert_true(saved >= 0);
    dup2(fd, 1);
    *rc = load(&cfg, args);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    config_cleanup(&cfg);
    f = fdopen(fd, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    out = xcalloc(1, (size_t)size + 1);
    assert_int_equal(fread(out, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    unlink(path);
    return out;
}

static void test_help(void **state)
{
    /* The flags table of config.c, names and alternative spellings. */
    static const char *const flag_names[] = {
        "--host",
        "--port",
        "--base-url",
        "--base_url",
        "--upstream-key",
        "--upstream-auth-header",
        "--client-keys",
        "--optillm-api-key",
        "--optillm_api_key",
        "--approach",
        "--model",
        "--n",
        "--return-full-response",
        "--return_full_response",
        "--no-approach-tags",
        "--prompts-dir",
        "--workers",
        "--queue",
        "--io-loops",
        "--http-threads",
        "--max-connections",
        "--max-body",
        "--idle-timeout",
        "--upstream-timeout",
        "--connect-timeout",
        "--sse-keepalive",
        "--log",
        "--log-format",
        "--help",
        "--version",
        "--best-of-n",
        "--moa-candidates",
        "--samples",
        "--mv-samples",
        "OPTILLM_BEST_OF_N",
        "OPTILLM_API_KEY",
        "OPENAI_API_KEY",
        "OPTILLM_PORT",
    };
    static const char *const help_forms[][2] = {{"--help", NULL}, {"-h", NULL}};
    int rc;

    (void)state;
    for (size_t f = 0; f < PX_ARRAY_LEN(help_forms); f++) {
        char *out = capture_stdout(help_forms[f], &rc);

        assert_int_equal(rc, 1);
        for (size_t i = 0; i < PX_ARRAY_LEN(flag_names); i++) {
            if (!strstr(out, flag_names[i]))
                print_error("--help does not mention %s\n", flag_names[i]);
            assert_non_null(strstr(out, flag_names[i]));
        }
        for (size_t i = 0; i < approach_registry_len; i++) {
            char slug[64];

            /* listed as a row of its own */
            snprintf(slug, sizeof(slug), "  %s ", approach_registry[i]->slug);
            assert_non_null(strstr(out, slug));
        }
        free(out);
    }
    /* --help wins even after other flags (and before bad ones). */
    {
        char *out = capture_stdout(ARGS("--port", "1", "--help", "--nosuch"), &rc);

        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, "--host"));
        free(out);
    }
}

static void test_version(void **state)
{
    int rc;
    char *out = capture_stdout(ARGS("--version"), &rc);

    (void)state;
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, PX_VERSION));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flags_both_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_beats_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool_flags_without_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_option_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_option_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_size_not_finite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
