/* test_privacy.c: the privacy plugin on the fake upstream: every message text (string content,
 * text parts, tool-call arguments, tool results) masked with stable placeholders, the client's
 * request left as it was, no call of its own, the answer and a stream split inside a
 * placeholder restored. */
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

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "log.h"
#include "ner.h"
#include "pii.h"
#include "prompt.h"

extern const struct approach approach_privacy;
#define THE_APPROACH approach_privacy

#define SCRIPT_ENV_OWN_BODY
#include "script_env.h"

#define EMAIL "jane.doe@example.com"
#define CARD  "5235-9276-8877-8661"
#define PHONE "(415) 555-3184"
#define IBAN  "ES85 1794 4310 4988 6743 7104"
#define KEY   "sk-s8E9eVvhxcBFxlV9rl91e8bm7CFnK3oMULiUVXDDrIbb8POf"
#define IP    "203.0.113.77"
#define PLAIN "Version 1.2.3 shipped on 2024-05-01, order 12345."

#define BODY                                                                                       \
    "{\"model\":\"m\",\"messages\":["                                                              \
    "{\"role\":\"system\",\"content\":\"Support desk. Escalate to " EMAIL ".\"},"                  \
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"My IBAN is " IBAN "\"},"        \
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/a.png\"}}]},"                 \
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"            \
    "\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"email\\\":\\\"" EMAIL     \
    "\\\"}\"}}]},"                                                                                 \
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"last login from " IP "\"},"          \
    "{\"role\":\"user\",\"content\":\"Card " CARD ", phone " PHONE ", key " KEY ", mail " EMAIL    \
    ". " PLAIN "\"}]}"

static const char *const originals[] = {EMAIL, CARD, PHONE, IBAN, KEY, IP, NULL};

static char *print(const cJSON *j)
{
    return cJSON_PrintUnformatted(j);
}

static void assert_no_originals(const char *s)
{
    for (int i = 0; originals[i]; i++)
        if (strstr(s, originals[i]))
            fail_msg("'%s' leaked in: %s", originals[i], s);
}

static int privacy_prepare(struct env *e, struct chat_request *next, struct approach_post *post)
{
    *next = e->req;
    memset(post, 0, sizeof(*post));
    return THE_APPROACH.prepare(&e->ctx, next, post);
}

static void test_masks_every_message(void **state)
{
    struct env e;
    struct chat_request next;
    struct approach_post post;
    char *before = NULL, *after;
    (void)state;

    env_init(&e, BODY, (const struct row[]){{.stage = NULL}});
    before = print(e.req.body);
    assert_int_equal(privacy_prepare(&e, &next, &post), PX_OK);
    assert_int_equal(e.fake.ncalls, 0); /* no call of its own */
    assert_int_equal(e.ctx.usage.calls, 0);
    assert_int_equal(next.nmsgs, e.req.nmsgs);
    for (size_t i = 0; i < next.nmsgs; i++) {
        assert_string_equal(next.msgs[i].role, e.req.msgs[i].role);
        assert_no_originals(next.msgs[i].content);
        assert_non_null(next.msgs[i].raw);
        assert_ptr_not_equal(next.msgs[i].raw, e.req.msgs[i].raw);
        char *m = print(next.msgs[i].raw);
        assert_no_originals(m);
        free(m);
    }
    assert_non_null(strstr(next.msgs[0].content, "[EMAIL_1]"));
    assert_non_null(strstr(next.msgs[1].content, "[IBAN_1]"));
    assert_non_null(strstr(next.msgs[3].content, "[IPV4_1]"));
    /* the same e-mail gets the same placeholder everywhere, also inside tool arguments */
    assert_non_null(strstr(next.msgs[4].content, "[EMAIL_1]"));
    char *tc = print(next.msgs[2].raw);
    assert_non_null(strstr(tc, "[EMAIL_1]"));
    free(tc);
    assert_non_null(strstr(next.msgs[4].content, "[CARD_1]"));
    assert_non_null(strstr(next.msgs[4].content, "[PHONE_1]"));
    assert_non_null(strstr(next.msgs[4].content, "[SECRET_1]"));
    /* look-alikes stay */
    assert_non_null(strstr(next.msgs[4].content, PLAIN));
    /* images kept */
    char *parts = print(next.msgs[1].raw);
    assert_non_null(strstr(parts, "https://x.test/a.png"));
    free(parts);
    /* the client's request is untouched */
    after = print(e.req.body);
    assert_string_equal(before, after);
    assert_non_null(strstr(e.req.msgs[4].content, CARD));
    free(before);
    free(after);

    /* what the following call sends upstream */
    struct llm_msg *msgs;
    struct llm_choice c;
    struct llm_params p = llm_params_default();
    e.script.rows = (const struct row[]){{.stage = "t", .text = "Mail [EMAIL_1] re [CARD_1]."},
                                         {.stage = NULL}};
    e.ctx.req = &next;
    size_t n = llm_msgs_conversation(&e.ctx, NULL, NULL, &msgs);
    assert_int_equal(llm_final(&e.ctx, msgs, n, &p, "t", &c), PX_OK);
    assert_int_equal(e.fake.ncalls, 1);
    assert_no_originals(e.fake.calls[0].text);
    assert_non_null(strstr(e.fake.calls[0].text, "[SECRET_1]"));

    /* the answer gets the originals back */
    assert_non_null(post.answer);
    assert_string_equal(post.answer(post.state, e.arena, c.text), "Mail " EMAIL " re " CARD ".");
    env_cleanup(&e);
}

static void test_stream_split_placeholder(void **state)
{
    struct env e;
    struct chat_request next;
    struct approach_post post;
    static const char *const pieces[] = {"Write to [", "EMA", "IL_1", "] or [C",
                                         "ARD_1]",     " [x", "]"};
    char got[512] = "";
    (void)state;

    env_init(&e, BODY, (const struct row[]){{.stage = NULL}});
    assert_int_equal(privacy_prepare(&e, &next, &post), PX_OK);
    assert_non_null(post.stream);
    for (size_t i = 0; i < PX_ARRAY_LEN(pieces); i++) {
        const char *out = post.stream(post.state, e.arena, pieces[i], strlen(pieces[i]), false);

        /* never a part of a placeholder */
        assert_null(strstr(out, "[EMA"));
        assert_null(strstr(out, "ARD_1]"));
        strcat(got, out);
    }
    strcat(got, post.stream(post.state, e.arena, "", 0, true));
    assert_string_equal(got, "Write to " EMAIL " or " CARD " [x]");
    env_cleanup(&e);
}

static void test_nothing_to_mask(void **state)
{
    struct env e;
    struct chat_request next;
    struct approach_post post;
    (void)state;

    env_init(&e, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" PLAIN "\"}]}",
             (const struct row[]){{.stage = NULL}});
    assert_int_equal(privacy_prepare(&e, &next, &post), PX_OK);
    assert_string_equal(next.msgs[0].content, PLAIN);
    assert_null(post.answer); /* nothing to restore */
    assert_null(post.stream);
    assert_int_equal(e.fake.ncalls, 0);
    env_cleanup(&e);
}

/* A pipeline step after an answer ("moa&privacy"): the previous answer is masked too. */
static void test_prev_answer_masked(void **state)
{
    struct env e;
    struct chat_request next;
    struct approach_post post;
    (void)state;

    env_init(&e,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Mail " EMAIL "\"}]}",
             (const struct row[]){{.stage = NULL}});
    e.req.prev_answer = e.req.msgs[0].content;
    assert_int_equal(privacy_prepare(&e, &next, &post), PX_OK);
    assert_string_equal(next.prev_answer, "Mail [EMAIL_1]");
    env_cleanup(&e);
}

/* A 1 MB message with an e-mail every 4 KB (and one at the very end): all masked, quickly. */
static void test_one_megabyte(void **state)
{
    struct env e;
    struct chat_request next;
    struct approach_post post;
    size_t len = 1 << 20, pos = 0;
    char *text = malloc(len + 1), *body = malloc(len + 256);
    (void)state;

    static const char mail[] = " x " EMAIL " ";
    const size_t ml = sizeof(mail) - 1;

    while (pos + 4096 <= len - 64) {
        memset(text + pos, 'a', 4096 - ml);
        memcpy(text + pos + 4096 - ml, mail, ml);
        pos += 4096;
    }
    memset(text + pos, 'b', len - pos - ml);
    memcpy(text + len - ml, mail, ml);
    text[len] = '\0';
    snprintf(body, len + 256,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", text);
    env_init(&e, body, (const struct row[]){{.stage = NULL}});
    long long t0 = px_now_ms();
    assert_int_equal(privacy_prepare(&e, &next, &post), PX_OK);
    long long ms = px_now_ms() - t0;
    assert_null(strstr(next.msgs[0].content, EMAIL));
    assert_int_equal(fake_count(next.msgs[0].content, "[EMAIL_1]"), pos / 4096 + 1);
    assert_true(ms < 120000); /* generous: loaded machines, valgrind */
    fprintf(stderr, "privacy: 1 MB masked in %lld ms\n", ms);
    env_cleanup(&e);
    free(text);
    free(body);
}

/* A private-key block inside tool-call arguments (JSON text, its newlines escaped) is masked:
 * the arguments are masked value by value and stay valid JSON. */
static void test_secret_in_tool_arguments(void **state)
{
    struct env e;
    struct chat_request next;
    struct approach_post post;
    (void)state;

    env_init(
        &e,
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"store\",\"arguments\":\"{\\\"key\\\":\\\""
        "-----BEGIN RSA PRIVATE KEY-----\\\\nMIIEowFG5h05uwFMb3BXhxpJgcqV0XYFt2//qWGklb2RferH9dvi9"
        "qpD2KS0nEOroU\\\\n-----END RSA PRIVATE KEY-----\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"stored\"}]}",
        (const struct row[]){{.stage = NULL}});
    assert_int_equal(privacy_prepare(&e, &next, &post), PX_OK);
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(next.msgs[1].raw, "tool_calls");
    cJSON *fn = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tc, 0), "function");
    const char *args = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "arguments"));
    assert_non_null(args);
    assert_null(strstr(args, "MIIEow"));
    assert_string_equal(args, "{\"key\":\"[SECRET_1]\"}");
    env_cleanup(&e);
}

/* An NER answer (Presidio analyzer shape): character offsets become byte spans (non-ASCII
 * text), kept types are PERSON and LOCATION/GPE with score >= 0.5, nonsense is dropped. */
static void test_ner_parse(void **state)
{
    const char *text = "Zo\xc3\xab M\xc3\xbcller flew from Lyon to Dublin.";
    struct pii_extra *x;
    char err[128];
    (void)state;

    int n = ner_parse(text, strlen(text),
                      "[{\"entity_type\":\"PERSON\",\"start\":0,\"end\":10,\"score\":0.9},"
                      "{\"entity_type\":\"LOCATION\",\"start\":21,\"end\":25,\"score\":0.8},"
                      "{\"entity_type\":\"GPE\",\"start\":29,\"end\":35},"
                      "{\"entity_type\":\"PERSON\",\"start\":0,\"end\":3,\"score\":0.2},"
                      "{\"entity_type\":\"DATE_TIME\",\"start\":0,\"end\":3,\"score\":0.9},"
                      "{\"entity_type\":\"PERSON\",\"start\":30,\"end\":99,\"score\":0.9},"
                      "{\"entity_type\":\"PERSON\",\"start\":5,\"end\":5,\"score\":0.9},"
                      "{\"entity_type\":\"PERSON\",\"start\":\"x\"}]",
                      &x, err, sizeof(err));
    assert_int_equal(n, 3);
    assert_int_equal(x[0].start, 0);
    assert_int_equal(x[0].len, strlen("Zo\xc3\xab M\xc3\xbcller"));
    assert_string_equal(x[0].label, "PERSON");
    assert_memory_equal(text + x[1].start, "Lyon", 4);
    assert_int_equal(x[1].len, 4);
    assert_string_equal(x[1].label, "LOCATION");
    assert_memory_equal(text + x[2].start, "Dublin", 6);
    assert_string_equal(x[2].label, "LOCATION");
    free(x);
    assert_int_equal(ner_parse(text, strlen(text), "{\"error\":1}", &x, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a JSON array"));
    assert_int_equal(ner_parse(text, strlen(text), "[]", &x, err, sizeof(err)), 0);
    assert_null(x);
}

/* Extra spans with the patterns: stable placeholders per label, a pattern span wins an
 * overlap, labels made placeholder-safe, restoration. */
static void test_mask_with_extra(void **state)
{
    const char *text = "Alice wrote to alice@example.com, then Alice left for Lyon.";
    struct pii_extra x[] = {
        {.start = 39, .len = 5, .label = "PERSON"}, /* the second Alice */
        {.start = 0, .len = 5, .label = "PERSON"},  /* the first */
        {.start = 15, .len = 5, .label = "PERSON"}, /* inside the e-mail: the pattern wins */
        {.start = 54, .len = 4, .label = "loc-ation!"},
        {.start = 50, .len = 100, .label = "PERSON"}, /* out of range */
    };
    struct pii_map *m = pii_map_create();
    char *masked = pii_mask_with(m, text, strlen(text), x, 5);
    (void)state;

    assert_string_equal(masked, "[PERSON_1] wrote to [EMAIL_1], then [PERSON_1] left for "
                                "[LOCATION_1].");
    char *back = pii_unmask(m, masked, strlen(masked));
    assert_string_equal(back, text);
    free(back);
    free(masked);
    pii_map_destroy(m);
}

static int setup(void **state)
{
    if (env_group_setup(state) != 0 || pii_init() != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    pii_cleanup();
    return env_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masks_every_message), cmocka_unit_test(test_stream_split_placeholder),
        cmocka_unit_test(test_nothing_to_mask),     cmocka_unit_test(test_prev_answer_masked),
        cmocka_unit_test(test_one_megabyte),        cmocka_unit_test(test_secret_in_tool_arguments),
        cmocka_unit_test(test_ner_parse),           cmocka_unit_test(test_mask_with_extra),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
