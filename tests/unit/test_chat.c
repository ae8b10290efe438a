/* test_chat.c: unit tests of request parsing, approach selection and per-request options. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "px.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static void cfg_init(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->approach, sizeof(cfg->approach), "auto");
    snprintf(cfg->model, sizeof(cfg->model), "m");
    cfg->n = 1;
}

/* Parses 'json' from a heap copy of exactly strlen+1 bytes, so that ASan and valgrind see any
 * read past the end of the body or of a string taken from it. */
static int parse(struct arena *a, const char *json, const struct config *cfg,
                 struct chat_request *req, struct px_error *err)
{
    char *body = xstrdup(json);
    int rc;

    memset(err, 0, sizeof(*err));
    rc = chat_request_parse(a, body, strlen(body), cfg, req, err);
    free(body);
    return rc;
}

static int setup_arena(void **state)
{
    *state = arena_create();
    return 0;
}

static int teardown_arena(void **state)
{
    arena_destroy(*state);
    return 0;
}

/* The content of message i in the (tag-stripped) cJSON body. */
static const char *body_content(const struct chat_request *req, int i)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req->body, "messages");
    const cJSON *m = cJSON_GetArrayItem(msgs, i);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");

    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* True when the printed body contains 'needle' anywhere. */
static int body_contains(const struct chat_request *req, const char *needle)
{
    char *s = cJSON_PrintUnformatted(req->body);
    int found;

    assert_non_null(s);
    found = strstr(s, needle) != NULL;
    cJSON_free(s);
    return found;
}

static void assert_route(const struct route *r, enum route_op op, const char *s0, const char *s1,
                         const char *s2)
{
    const char *want[3] = {s0, s1, s2};
    int count = 0;

    while (count < 3 && want[count])
        count++;
    assert_int_equal(r->count, count);
    if (count > 1)
        assert_int_equal(r->op, op);
    else
        assert_int_equal(r->op, ROUTE_SINGLE);
    for (int i = 0; i < count; i++) {
        assert_non_null(r->steps[i]);
        assert_string_equal(r->steps[i]->slug, want[i]);
    }
}

/* ---- route_parse_model -------------------------------------------------------------------- */

struct model_case {
    const char *model;
    int rc;           /* 0, 1 or PX_EINVAL */
    enum route_op op; /* for 2+ steps */
    const char *s[3]; /* expected slugs */
    const char *rest; /* expected upstream model (when rc >= 0) */
};

static const struct model_case model_cases[] = {
    /* Plain models: passthrough, the name whole. */
    {"gpt-4o-mini", 0, ROUTE_SINGLE, {NULL}, "gpt-4o-mini"},
    {"gpt-4o", 0, ROUTE_SINGLE, {NULL}, "gpt-4o"},
    {"auto", 0, ROUTE_SINGLE, {NULL}, "auto"},
    {"o1-preview", 0, ROUTE_SINGLE, {NULL}, "o1-preview"},
    {"llama-3.1-8b", 0, ROUTE_SINGLE, {NULL}, "llama-3.1-8b"},
    {"gpt-moa-x", 0, ROUTE_SINGLE, {NULL}, "gpt-moa-x"},
    {"mo-x", 0, ROUTE_SINGLE, {NULL}, "mo-x"},
    {"moax-y", 0, ROUTE_SINGLE, {NULL}, "moax-y"},
    {"nonexistent-x", 0, ROUTE_SINGLE, {NULL}, "nonexistent-x"},
    /* Every slug and alias. */
    {"moa-gpt-4o", 1, ROUTE_SINGLE, {"moa"}, "gpt-4o"},
    {"moa-gpt-4o-mini", 1, ROUTE_SINGLE, {"moa"}, "gpt-4o-mini"},
    {"mixture-of-agents-x", 1, ROUTE_SINGLE, {"moa"}, "x"},
    {"mixture_of_agents-x", 1, ROUTE_SINGLE, {"moa"}, "x"},
    {"bon-x", 1, ROUTE_SINGLE, {"bon"}, "x"},
    {"best-of-n-x", 1, ROUTE_SINGLE, {"bon"}, "x"},
    {"best_of_n-x", 1, ROUTE_SINGLE, {"bon"}, "x"},
    {"self-consistency-gpt-4o", 1, ROUTE_SINGLE, {"self_consistency"}, "gpt-4o"},
    {"self_consistency-x", 1, ROUTE_SINGLE, {"self_consistency"}, "x"},
    {"majority-voting-x", 1, ROUTE_SINGLE, {"majority_voting"}, "x"},
    {"majority_voting-x", 1, ROUTE_SINGLE, {"majority_voting"}, "x"},
    {"cot_reflection-x", 1, ROUTE_SINGLE, {"cot_reflection"}, "x"},
    {"cot-reflection-x", 1, ROUTE_SINGLE, {"cot_reflection"}, "x"},
    {"re2-x", 1, ROUTE_SINGLE, {"re2"}, "x"},
    {"reread-x", 1, ROUTE_SINGLE, {"re2"}, "x"},
    {"re-read-x", 1, ROUTE_SINGLE, {"re2"}, "x"},
    {"moa-llama-3.1-8b", 1, ROUTE_SINGLE, {"moa"}, "llama-3.1-8b"},
    /* "none" is an approach prefix meaning passthrough. */
    {"none-x", 1, ROUTE_SINGLE, {NULL}, "x"},
    {"none-gpt-4o-mini", 1, ROUTE_SINGLE, {NULL}, "gpt-4o-mini"},
    /* Combinations. */
    {"bon&moa-x", 1, ROUTE_AND, {"bon", "moa"}, "x"},
    {"bon|moa|re2-x", 1, ROUTE_OR, {"bon", "moa", "re2"}, "x"},
    {"self-consistency&moa-x", 1, ROUTE_AND, {"self_consistency", "moa"}, "x"},
    {"moa|self-consistency-gpt-4o", 1, ROUTE_OR, {"moa", "self_consistency"}, "gpt-4o"},
    {"best-of-n&re2-x", 1, ROUTE_AND, {"bon", "re2"}, "x"},
    /* Errors. */
    {"moa&nosuch-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"bon&moa|re2-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"bon|moa&re2-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"moa-bon-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"moa-bon&re2-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"moa", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"self-consistency", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"bon&moa", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"none&moa-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"moa|none-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"moa&-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"moa&", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
    {"bon&bon&bon&bon&bon&bon&bon&bon&bon-x", PX_EINVAL, ROUTE_SINGLE, {NULL}, NULL},
};

static void test_route_parse_model_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(model_cases); i++) {
        const struct model_case *c = &model_cases[i];
        char *model = xstrdup(c->model); /* exact-size heap copy: over-reads are caught */
        struct route r;
        struct px_error err;
        const char *rest = NULL;
        int rc;

        memset(&err, 0, sizeof(err));
        print_message("model '%s'\n", c->model);
        rc = route_parse_model(model, &r, &rest, &err);
        assert_int_equal(rc, c->rc);
        if (rc < 0) {
            assert_int_equal(err.code, PX_EINVAL);
            assert_string_equal(err.param, "model");
            assert_true(err.message[0] != '\0');
        } else {
            assert_non_null(rest);
            assert_string_equal(rest, c->rest);
            /* rest points into the model string */
            assert_true(rest >= model && rest <= model + strlen(model));
            assert_route(&r, c->op, c->s[0], c->s[1], c->s[2]);
        }
        free(model);
    }
}

static void test_route_parse_model_max_steps(void **state)
{
    char *model = xstrdup("bon&bon&bon&bon&bon&bon&bon&bon-x"); /* exactly ROUTE_MAX */
    struct route r;
    struct px_error err;
    const char *rest = NULL;

    (void)state;
    assert_int_equal(route_parse_model(model, &r, &rest, &err), 1);
    assert_int_equal(r.count, ROUTE_MAX);
    assert_int_equal(r.op, ROUTE_AND);
    assert_string_equal(rest, "x");
    free(model);
}

/* The header: PX_EINVAL for "no model after the prefix". */
static void test_route_parse_model_empty_rest(void **state)
{
    static const char *const models[] = {"moa-", "bon&moa-", "none-", "self-consistency-"};

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(models); i++) {
        char *model = xstrdup(models[i]);
        struct route r;
        struct px_error err;
        const char *rest = NULL;

        print_message("model '%s'\n", models[i]);
        assert_int_equal(route_parse_model(model, &r, &rest, &err), PX_EINVAL);
        assert_string_equal(err.param, "model");
        free(model);
    }
}

static void test_route_parse_model_messages(void **state)
{
    struct route r;
    struct px_error err;
    const char *rest;
    char *m1 = xstrdup("moa&nosuch-x");
    char *m2 = xstrdup("moa-bon-gpt-4o");
    char *m3 = xstrdup("bon&moa|re2-x");

    (void)state;
    assert_int_equal(route_parse_model(m1, &r, &rest, &err), PX_EINVAL);
    assert_non_null(strstr(err.message, "nosuch"));
    for (size_t i = 0; i < approach_registry_len; i++)
        assert_non_null(strstr(err.message, approach_registry[i]->slug));
    assert_int_equal(route_parse_model(m2, &r, &rest, &err), PX_EINVAL);
    assert_non_null(strstr(err.message, "moa-bon-gpt-4o"));
    assert_int_equal(route_parse_model(m3, &r, &rest, &err), PX_EINVAL);
    assert_non_null(strstr(err.message, "mixed"));
    free(m1);
    free(m2);
    free(m3);
}

/* ---- route_parse_value -------------------------------------------------------------------- */

struct value_case {
    const char *value;
    int rc;
    enum route_op op;
    const char *s[3];
};

static const struct value_case value_cases[] = {
    {"", PX_OK, ROUTE_SINGLE, {NULL}},
    {"auto", PX_OK, ROUTE_SINGLE, {NULL}},
    {"none", PX_OK, ROUTE_SINGLE, {NULL}},
    {"bon", PX_OK, ROUTE_SINGLE, {"bon"}},
    {"moa", PX_OK, ROUTE_SINGLE, {"moa"}},
    {"re2", PX_OK, ROUTE_SINGLE, {"re2"}},
    {"self-consistency", PX_OK, ROUTE_SINGLE, {"self_consistency"}},
    {"mixture_of_agents", PX_OK, ROUTE_SINGLE, {"moa"}},
    {"moa|bon", PX_OK, ROUTE_OR, {"moa", "bon"}},
    {"bon&moa", PX_OK, ROUTE_AND, {"bon", "moa"}},
    {"bon&moa&re2", PX_OK, ROUTE_AND, {"bon", "moa", "re2"}},
    {"nosuch", PX_EINVAL, ROUTE_SINGLE, {NULL}},
    {"moa-x", PX_EINVAL, ROUTE_SINGLE, {NULL}},
    {"moa&", PX_EINVAL, ROUTE_SINGLE, {NULL}},
    {"moa|", PX_EINVAL, ROUTE_SINGLE, {NULL}},
    {"none|moa", PX_EINVAL, ROUTE_SINGLE, {NULL}},
    {"moa|bon&re2", PX_EINVAL, ROUTE_SINGLE, {NULL}},
    {"auto|moa", PX_EINVAL, ROUTE_SINGLE, {NULL}},
    {"MOA", PX_EINVAL, ROUTE_SINGLE, {NULL}},
};

static void test_route_parse_value_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(value_cases); i++) {
        const struct value_case *c = &value_cases[i];
        char *value = xstrdup(c->value);
        struct route r;
        struct px_error err;
        int rc;

        memset(&err, 0, sizeof(err));
        print_message("value '%s'\n", c->value);
        rc = route_parse_value(value, &r, &err);
        assert_int_equal(rc, c->rc);
        if (rc < 0) {
            assert_int_equal(err.code, PX_EINVAL);
            assert_string_equal(err.param, "optillm_approach");
        } else {
            assert_route(&r, c->op, c->s[0], c->s[1], c->s[2]);
        }
        free(value);
    }
}

static void test_route_parse_value_unknown_lists_slugs(void **state)
{
    char *value = xstrdup("nosuch");
    struct route r;
    struct px_error err;

    (void)state;
    assert_int_equal(route_parse_value(value, &r, &err), PX_EINVAL);
    assert_non_null(strstr(err.message, "'nosuch'"));
    for (size_t i = 0; i < approach_registry_len; i++)
        assert_non_null(strstr(err.message, approach_registry[i]->slug));
    assert_non_null(strstr(err.message, "none"));
    free(value);
}

static void test_route_name(void **state)
{
    static const struct {
        const char *value;
        const char *name;
    } cases[] = {
        {"auto", "none"},
        {"none", "none"},
        {"moa", "moa"},
        {"best-of-n", "bon"},
        {"bon&moa", "bon&moa"},
        {"moa|bon|re2", "moa|bon|re2"},
        {"self-consistency&moa", "self_consistency&moa"},
    };
    char buf[128];
    char small[4];

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        struct route r;
        struct px_error err;

        assert_int_equal(route_parse_value(cases[i].value, &r, &err), PX_OK);
        route_name(&r, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].name);
    }
    /* Truncates instead of overflowing. */
    {
        struct route r;
        struct px_error err;

        assert_int_equal(route_parse_value("self_consistency|moa", &r, &err), PX_OK);
        route_name(&r, small, sizeof(small));
        assert_int_equal(strlen(small), sizeof(small) - 1);
    }
}

/* ---- chat_request_parse: basics ------------------------------------------------------------ */

static void test_parse_defaults(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(
        parse(a, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &cfg, &req, &err),
        PX_OK);
    assert_string_equal(req.model, "m");
    assert_string_equal(req.upstream_model, "m");
    assert_int_equal(req.n, 1);
    assert_false(req.stream);
    assert_false(req.include_usage);
    assert_true(isnan(req.temperature));
    assert_int_equal(req.max_tokens, -1);
    assert_false(req.max_is_completion);
    assert_int_equal(req.route.count, 0);
    assert_string_equal(req.route_name, "none");
    assert_int_equal(req.nmsgs, 1);
    assert_string_equal(req.msgs[0].role, "user");
    assert_string_equal(req.msgs[0].content, "hi");
    assert_non_null(req.msgs[0].raw);
    assert_non_null(req.body);

    /* n comes from the config when the body has none; the body wins. */
    cfg.n = 3;
    assert_int_equal(
        parse(a, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &cfg, &req, &err),
        PX_OK);
    assert_int_equal(req.n, 3);
    assert_int_equal(parse(a, "{\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_int_equal(req.n, 2);

    /* An empty model string means the server's default model. */
    assert_int_equal(parse(a,
                           "{\"model\":\"\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_string_equal(req.model, "m");
}

static void test_parse_fields(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(parse(a,
                           "{\"model\":\"moa-gpt-4o\",\"stream\":true,\"stream_options\":"
                           "{\"include_usage\":true},\"temperature\":0.7,\"max_tokens\":100,"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_string_equal(req.model, "moa-gpt-4o");
    assert_string_equal(req.upstream_model, "gpt-4o");
    assert_true(req.stream);
    assert_true(req.include_usage);
    assert_true(fabs(req.temperature - 0.7) < 1e-9);
    assert_int_equal(req.max_tokens, 100);
    assert_false(req.max_is_completion);
    assert_route(&req.route, ROUTE_SINGLE, "moa", NULL, NULL);
    assert_string_equal(req.route_name, "moa");

    /* max_completion_tokens wins over max_tokens. */
    assert_int_equal(parse(a,
                           "{\"max_tokens\":100,\"max_completion_tokens\":50,"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_int_equal(req.max_tokens, 50);
    assert_true(req.max_is_completion);
    assert_int_equal(parse(a,
                           "{\"max_completion_tokens\":7,"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_int_equal(req.max_tokens, 7);
    assert_true(req.max_is_completion);

    /* Explicit nulls are the same as absent. */
    assert_int_equal(parse(a,
                           "{\"model\":\"gpt-4o\",\"n\":null,\"stream\":null,\"temperature\":null,"
                           "\"max_tokens\":null,\"stream_options\":null,\"optillm_approach\":null,"
                           "\"messages\":[{\"role\":\"user\",\"content\":null}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_int_equal(req.n, 1);
    assert_true(isnan(req.temperature));
    assert_int_equal(req.max_tokens, -1);
    assert_string_equal(req.msgs[0].content, "");

    /* The model string is copied: editing the tree does not change req.model. */
    assert_int_equal(parse(a,
                           "{\"model\":\"bon-x\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"hi\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    cJSON_ReplaceItemInObjectCaseSensitive(req.body, "model", cJSON_CreateString("changed"));
    assert_string_equal(req.model, "bon-x");
    assert_string_equal(req.upstream_model, "x");
}

struct error_case {
    const char *body;
    const char *param; /* "" for none */
};

#define U "[{\"role\":\"user\",\"content\":\"hi\"}]"

static const struct error_case error_cases[] = {
    {"not json", ""},
    {"", ""},
    {"[1,2]", ""},
    {"\"str\"", ""},
    {"{\"model\":5,\"messages\":" U "}", "model"},
    {"{}", "messages"},
    {"{\"messages\":[]}", "messages"},
    {"{\"messages\":\"hi\"}", "messages"},
    {"{\"messages\":{}}", "messages"},
    {"{\"messages\":[5]}", "messages.[0]"},
    {"{\"messages\":[{\"content\":\"x\"}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":\"\",\"content\":\"x\"}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":7,\"content\":\"x\"}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":{}}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":true}]}",
     "messages.[1]"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[5]}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", "messages.[0]"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":3}]}]}",
     "messages.[0]"},
    {"{\"n\":0,\"messages\":" U "}", "n"},
    {"{\"n\":-1,\"messages\":" U "}", "n"},
    {"{\"n\":1.5,\"messages\":" U "}", "n"},
    {"{\"n\":\"2\",\"messages\":" U "}", "n"},
    {"{\"n\":129,\"messages\":" U "}", "n"},
    {"{\"stream\":\"yes\",\"messages\":" U "}", "stream"},
    {"{\"stream\":1,\"messages\":" U "}", "stream"},
    {"{\"stream_options\":5,\"messages\":" U "}", "stream_options"},
    {"{\"temperature\":\"hot\",\"messages\":" U "}", "temperature"},
    {"{\"temperature\":3,\"messages\":" U "}", "temperature"},
    {"{\"temperature\":-0.1,\"messages\":" U "}", "temperature"},
    {"{\"max_tokens\":0,\"messages\":" U "}", "max_tokens"},
    {"{\"max_tokens\":-5,\"messages\":" U "}", "max_tokens"},
    {"{\"max_tokens\":\"5\",\"messages\":" U "}", "max_tokens"},
    {"{\"max_tokens\":2.5,\"messages\":" U "}", "max_tokens"},
    {"{\"max_completion_tokens\":0,\"messages\":" U "}", "max_completion_tokens"},
    {"{\"max_completion_tokens\":\"x\",\"max_tokens\":5,\"messages\":" U "}",
     "max_completion_tokens"},
    {"{\"optillm_approach\":5,\"messages\":" U "}", "optillm_approach"},
    {"{\"optillm_approach\":\"nosuch\",\"messages\":" U "}", "optillm_approach"},
    {"{\"optillm_approach\":\"moa&nosuch\",\"messages\":" U "}", "optillm_approach"},
    {"{\"optillm_approach\":\"moa|bon&re2\",\"messages\":" U "}", "optillm_approach"},
    {"{\"model\":\"moa&nosuch-x\",\"messages\":" U "}", "model"},
    {"{\"model\":\"moa-bon-x\",\"messages\":" U "}", "model"},
    {"{\"model\":\"moa\",\"messages\":" U "}", "model"},
    {"{\"optillm_nosuch\":1,\"messages\":" U "}", "optillm_nosuch"},
    {"{\"optillm_best_of_n\":0,\"messages\":" U "}", "optillm_best_of_n"},
    {"{\"optillm_best_of_n\":17,\"messages\":" U "}", "optillm_best_of_n"},
    {"{\"optillm_best_of_n\":2.5,\"messages\":" U "}", "optillm_best_of_n"},
    {"{\"optillm_best_of_n\":\"3\",\"messages\":" U "}", "optillm_best_of_n"},
    {"{\"optillm_moa_candidates\":1,\"messages\":" U "}", "optillm_moa_candidates"},
    {"{\"optillm_samples\":33,\"messages\":" U "}", "optillm_samples"},
    {"{\"optillm_mv_samples\":true,\"messages\":" U "}", "optillm_mv_samples"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":"
     "\"<optillm_approach>nosuch</optillm_approach>hi\"}]}",
     "optillm_approach"},
};

static void test_parse_errors_table(void **state)
{
    struct arena *a = *state;
    struct config cfg;

    cfg_init(&cfg);
    for (size_t i = 0; i < PX_ARRAY_LEN(error_cases); i++) {
        struct chat_request req;
        struct px_error err;

        print_message("body %s\n", error_cases[i].body);
        assert_int_equal(parse(a, error_cases[i].body, &cfg, &req, &err), PX_EINVAL);
        assert_int_equal(err.code, PX_EINVAL);
        assert_string_equal(err.param, error_cases[i].param);
        assert_true(err.message[0] != '\0');
        assert_null(strchr(err.message, '\n'));
    }
}

static void test_parse_valid_options(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(parse(a,
                           "{\"optillm_best_of_n\":16,\"optillm_moa_candidates\":2,"
                           "\"optillm_samples\":1,\"optillm_mv_samples\":32,"
                           "\"messages\":" U "}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_true(chat_option(&req, &cfg, "best_of_n") == 16);
    assert_true(chat_option(&req, &cfg, "moa_candidates") == 2);
    assert_true(chat_option(&req, &cfg, "samples") == 1);
    assert_true(chat_option(&req, &cfg, "mv_samples") == 32);
}

/* Body value, then the server's (flag/env), then the registry default. */
static void test_chat_option_precedence(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;
    const struct approach_option *o = approach_option_find("best_of_n");

    assert_non_null(o);
    cfg_init(&cfg);
    assert_int_equal(parse(a, "{\"messages\":" U "}", &cfg, &req, &err), PX_OK);
    assert_true(chat_option(&req, &cfg, "best_of_n") == o->def);
    assert_true(chat_option(&req, NULL, "best_of_n") == o->def);
    assert_true(chat_option(NULL, &cfg, "best_of_n") == o->def);
    assert_true(chat_option(&req, &cfg, "no_such_option") == 0);

    cfg.options[0].name = "best_of_n";
    cfg.options[0].value = 7;
    cfg.noptions = 1;
    assert_true(chat_option(&req, &cfg, "best_of_n") == 7);
    assert_true(chat_option(NULL, &cfg, "best_of_n") == 7);
    /* Another option is not affected by the server's best_of_n. */
    o = approach_option_find("moa_candidates");
    assert_non_null(o);
    assert_true(chat_option(&req, &cfg, "moa_candidates") == o->def);

    assert_int_equal(parse(a, "{\"optillm_best_of_n\":5,\"messages\":" U "}", &cfg, &req, &err),
                     PX_OK);
    assert_true(chat_option(&req, &cfg, "best_of_n") == 5);
}

/* ---- messages ----------------------------------------------------------------------------- */

static void test_parse_multipart(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(
        parse(a,
              "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
              "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}},"
              "{\"type\":\"text\",\"text\":\"b\"},{\"type\":\"text\",\"text\":\"c\"}]},"
              "{\"role\":\"assistant\",\"content\":[]},"
              "{\"role\":\"tool\",\"content\":\"t\",\"tool_call_id\":\"1\"}]}",
              &cfg, &req, &err),
        PX_OK);
    assert_int_equal(req.nmsgs, 3);
    assert_string_equal(req.msgs[0].content, "a\nb\nc");
    assert_string_equal(req.msgs[1].role, "assistant");
    assert_string_equal(req.msgs[1].content, "");
    assert_string_equal(req.msgs[2].role, "tool");
    assert_string_equal(req.msgs[2].content, "t");
    /* The original message objects are reachable, with their other fields. */
    assert_non_null(cJSON_GetObjectItemCaseSensitive(req.msgs[2].raw, "tool_call_id"));
}

static void test_chat_system_and_last_user(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(parse(a,
                           "{\"messages\":[{\"role\":\"system\",\"content\":\"A\"},"
                           "{\"role\":\"user\",\"content\":\"1\"},"
                           "{\"role\":\"developer\",\"content\":\"B\"},"
                           "{\"role\":\"assistant\",\"content\":\"x\"},"
                           "{\"role\":\"user\",\"content\":\"2\"},"
                           "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"C\"}]},"
                           "{\"role\":\"assistant\",\"content\":\"y\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_string_equal(chat_system(a, &req), "A\n\nB\n\nC");
    assert_string_equal(chat_last_user(&req), "2");

    assert_int_equal(
        parse(a, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}", &cfg, &req, &err),
        PX_OK);
    assert_string_equal(chat_system(a, &req), "");
    assert_string_equal(chat_last_user(&req), "");
}

/* ---- tags and selection precedence --------------------------------------------------------- */

static void test_tags_removed(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(
        parse(
            a,
            "{\"model\":\"gpt-4o\",\"messages\":["
            "{\"role\":\"system\",\"content\":\"You are X. "
            "<optillm_approach>moa</optillm_approach>\"},"
            "{\"role\":\"user\",\"content\":\"<optillm_approach> bon "
            "</optillm_approach>What is 2+2?\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
            "\"a <optillm_approach>re2</optillm_approach>b\"},{\"type\":\"text\",\"text\":"
            "\"<optillm_approach>re2</optillm_approach> c\"}]},"
            "{\"role\":\"developer\",\"content\":\"<optillm_approach>re2</optillm_approach>D\"}]}",
            &cfg, &req, &err),
        PX_OK);
    /* The first tag chose (nothing else did). */
    assert_route(&req.route, ROUTE_SINGLE, "moa", NULL, NULL);
    assert_string_equal(req.msgs[0].content, "You are X.");
    assert_string_equal(req.msgs[1].content, "What is 2+2?");
    assert_string_equal(req.msgs[2].content, "a b\nc");
    assert_string_equal(req.msgs[3].content, "D");
    /* The body that a passthrough would send carries no tag either. */
    assert_string_equal(body_content(&req, 0), "You are X.");
    assert_string_equal(body_content(&req, 1), "What is 2+2?");
    assert_string_equal(body_content(&req, 3), "D");
    assert_false(body_contains(&req, "optillm_approach"));
    /* chat_system sees the stripped text. */
    assert_string_equal(chat_system(a, &req), "You are X.\n\nD");
}

struct select_case {
    const char *model;    /* NULL: no model field */
    const char *field;    /* optillm_approach, or NULL */
    const char *tag;      /* tag value in the user message, or NULL */
    const char *server;   /* cfg->approach */
    bool no_tags;         /* cfg->no_approach_tags */
    const char *route;    /* expected route_name */
    const char *upstream; /* expected upstream_model */
};

static const struct select_case select_cases[] = {
    /* prefix beats field beats tag beats server */
    {"moa-x", "bon", "re2", "self_consistency", false, "moa", "x"},
    {"gpt-4o", "bon", "re2", "self_consistency", false, "bon", "gpt-4o"},
    {"gpt-4o", NULL, "re2", "self_consistency", false, "re2", "gpt-4o"},
    {"gpt-4o", NULL, NULL, "self_consistency", false, "self_consistency", "gpt-4o"},
    {"gpt-4o", NULL, NULL, "auto", false, "none", "gpt-4o"},
    {NULL, NULL, "re2", "auto", false, "re2", "m"},
    /* "none" is an explicit choice at every level */
    {"none-x", "bon", "re2", "moa", false, "none", "x"},
    {"gpt-4o", "none", "re2", "moa", false, "none", "gpt-4o"},
    {"gpt-4o", NULL, "none", "moa", false, "none", "gpt-4o"},
    /* combinations from the field and the tag */
    {"gpt-4o", "moa|bon", NULL, "auto", false, "moa|bon", "gpt-4o"},
    {"gpt-4o", NULL, "bon&moa", "auto", false, "bon&moa", "gpt-4o"},
    {"gpt-4o", NULL, "self-consistency", "auto", false, "self_consistency", "gpt-4o"},
    /* --no-approach-tags: the tag does not choose */
    {"gpt-4o", NULL, "re2", "self_consistency", true, "self_consistency", "gpt-4o"},
    {"gpt-4o", NULL, "re2", "auto", true, "none", "gpt-4o"},
    {"gpt-4o", "bon", "re2", "auto", true, "bon", "gpt-4o"},
    /* a tag that does not choose is not validated */
    {"moa-x", NULL, "nosuch", "auto", false, "moa", "x"},
    {"gpt-4o", "bon", "nosuch", "auto", false, "bon", "gpt-4o"},
    {"gpt-4o", NULL, "nosuch", "auto", true, "none", "gpt-4o"},
    /* the server's approach applies to a plain model */
    {"gpt-4o", NULL, NULL, "bon&moa", false, "bon&moa", "gpt-4o"},
};

static void test_selection_precedence(void **state)
{
    struct arena *a = *state;

    for (size_t i = 0; i < PX_ARRAY_LEN(select_cases); i++) {
        const struct select_case *c = &select_cases[i];
        struct config cfg;
        struct chat_request req;
        struct px_error err;
        char body[1024];
        char model[128] = "";
        char field[128] = "";
        char content[256];

        cfg_init(&cfg);
        snprintf(cfg.approach, sizeof(cfg.approach), "%s", c->server);
        cfg.no_approach_tags = c->no_tags;
        if (c->model)
            snprintf(model, sizeof(model), "\"model\":\"%s\",", c->model);
        if (c->field)
            snprintf(field, sizeof(field), "\"optillm_approach\":\"%s\",", c->field);
        if (c->tag)
            snprintf(content, sizeof(content),
                     "Question <optillm_approach>%s</optillm_approach> here", c->tag);
        else
            snprintf(content, sizeof(content), "Question  here");
        snprintf(body, sizeof(body), "{%s%s\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                 model, field, content);
        print_message("case %zu: %s (server %s%s)\n", i, body, c->server,
                      c->no_tags ? ", no tags" : "");
        assert_int_equal(parse(a, body, &cfg, &req, &err), PX_OK);
        assert_string_equal(req.route_name, c->route);
        assert_string_equal(req.upstream_model, c->upstream);
        /* The tag is removed whether or not it chose. */
        assert_string_equal(req.msgs[0].content, "Question  here");
        assert_string_equal(body_content(&req, 0), "Question  here");
        assert_false(body_contains(&req, "<optillm_approach>"));
    }
}

static void test_tag_unknown_is_400(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    snprintf(cfg.approach, sizeof(cfg.approach), "moa");
    assert_int_equal(parse(a,
                           "{\"messages\":[{\"role\":\"system\",\"content\":"
                           "\"<optillm_approach>bogus</optillm_approach>\"},"
                           "{\"role\":\"user\",\"content\":\"q\"}]}",
                           &cfg, &req, &err),
                     PX_EINVAL);
    assert_non_null(strstr(err.message, "bogus"));
}

static void test_tag_in_assistant_kept(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    /* Only system/user(/developer) messages carry selection tags. */
    assert_int_equal(parse(a,
                           "{\"messages\":[{\"role\":\"assistant\",\"content\":"
                           "\"<optillm_approach>moa</optillm_approach>x\"},"
                           "{\"role\":\"user\",\"content\":\"q\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_int_equal(req.route.count, 0);
}

/* ---- strict JSON (issue 10, item 1) -------------------------------------------------------- */

struct strict_case {
    const char *body;
    int rc;
    const char *param;  /* expected err.param (PX_EINVAL), or NULL for "" */
    const char *in_msg; /* a fragment of err.message, or NULL */
};

static void test_parse_strict_json(void **state)
{
    static const struct strict_case cases[] = {
        /* Duplicate keys at every level: cJSON reads the first, upstreams the last. */
        {"{\"model\":\"cheap\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"n\":1,"
         "\"model\":\"other\",\"n\":5}",
         PX_EINVAL, "model", "'model'"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\",\"content\":\"r\"}]}", PX_EINVAL,
         "messages.[0].content", "messages.[0].content"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stream_options\":"
         "{\"include_usage\":true,\"include_usage\":false}}",
         PX_EINVAL, "stream_options.include_usage", "include_usage"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\","
         "\"x\":{\"k\":1,\"k\":2}}]}]}",
         PX_EINVAL, "messages.[0].content.[0].x.k", NULL},
        /* Same key in different objects, and keys differing only in case: fine. */
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"user\",\"content\":"
         "\"r\"}],\"Model\":\"x\",\"model\":\"y\"}",
         PX_OK, NULL, NULL},
        /* Trailing bytes after the value. */
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}{\"model\":\"other\"}", PX_EINVAL,
         NULL, "after the JSON value"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]} x", PX_EINVAL, NULL, "byte"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]} \r\n\t ", PX_OK, NULL, NULL},
        /* \u0000 would cut a string short (cJSON), so the upstream would read more than us. */
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000<optillm_approach>moa"
         "</optillm_approach>\"}]}",
         PX_EINVAL, NULL, "\\u0000"},
        {"{\"model\":\"x\\u0000y\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
         PX_EINVAL, NULL, "NUL"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"a\\u0000\":1}", PX_EINVAL, NULL,
         NULL},
        /* An escaped backslash followed by the text u0000 is not a NUL; \u0001 is fine. */
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\\\\u0000 \\u0001\"}]}", PX_OK, NULL,
         NULL},
    };
    struct arena *a = *state;
    struct config cfg;

    cfg_init(&cfg);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct chat_request req;
        struct px_error err;
        int rc = parse(a, cases[i].body, &cfg, &req, &err);

        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].rc, err.message);
        if (rc == PX_OK)
            continue;
        assert_string_equal(err.param, cases[i].param ? cases[i].param : "");
        if (cases[i].in_msg && !strstr(err.message, cases[i].in_msg))
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.message, cases[i].in_msg);
    }
}

/* A raw NUL byte inside the body (not expressible with parse()'s strlen). */
static void test_parse_raw_nul(void **state)
{
    static const char body[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\0b\"}]}";
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(chat_request_parse(a, body, sizeof(body) - 1, &cfg, &req, &err), PX_EINVAL);
    assert_non_null(strstr(err.message, "NUL"));
    /* A NUL after the value is trailing data. */
    static const char tail[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}\0";
    assert_int_equal(chat_request_parse(a, tail, sizeof(tail) - 1, &cfg, &req, &err), PX_EINVAL);
}

/* Thousands of keys in one object: found in O(n log n), the first repeat named. */
static void test_parse_many_keys(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;
    size_t cap = 64u << 10, pos = 0;
    char *b = malloc(cap);

    cfg_init(&cfg);
    pos += (size_t)snprintf(b + pos, cap - pos,
                            "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]");
    for (int i = 0; i < 3000; i++)
        pos += (size_t)snprintf(b + pos, cap - pos, ",\"k%d\":%d", i, i);
    b[pos] = '}';
    assert_int_equal(chat_request_parse(a, b, pos + 1, &cfg, &req, &err), PX_OK);
    pos += (size_t)snprintf(b + pos, cap - pos, ",\"k1234\":0}");
    assert_int_equal(chat_request_parse(a, b, pos, &cfg, &req, &err), PX_EINVAL);
    assert_string_equal(err.param, "k1234");
    free(b);
}

/* A JSON-escaped tag is removed too, and the parse says so (the passthrough rebuilds). */
static void test_escaped_tag_reported(void **state)
{
    struct arena *a = *state;
    struct config cfg;
    struct chat_request req;
    struct px_error err;

    cfg_init(&cfg);
    assert_int_equal(parse(a,
                           "{\"model\":\"none-x\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"\\u003coptillm_approach>none\\u003c/optillm_approach> hi\"}]}",
                           &cfg, &req, &err),
                     PX_OK);
    assert_true(req.tags_removed);
    assert_string_equal(body_content(&req, 0), "hi");
    assert_int_equal(
        parse(a, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &cfg, &req, &err),
        PX_OK);
    assert_false(req.tags_removed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_parse_model_table),
        cmocka_unit_test(test_route_parse_model_max_steps),
        cmocka_unit_test(test_route_parse_model_empty_rest),
        cmocka_unit_test(test_route_parse_model_messages),
        cmocka_unit_test(test_route_parse_value_table),
        cmocka_unit_test(test_route_parse_value_unknown_lists_slugs),
        cmocka_unit_test(test_route_name),
        cmocka_unit_test_setup_teardown(test_parse_defaults, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_parse_fields, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_parse_errors_table, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_parse_valid_options, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_chat_option_precedence, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_parse_multipart, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_chat_system_and_last_user, setup_arena,
                                        teardown_arena),
        cmocka_unit_test_setup_teardown(test_tags_removed, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_selection_precedence, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_tag_unknown_is_400, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_tag_in_assistant_kept, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_parse_strict_json, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_parse_raw_nul, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_parse_many_keys, setup_arena, teardown_arena),
        cmocka_unit_test_setup_teardown(test_escaped_tag_reported, setup_arena, teardown_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
