/* test_memory.c: memory on the fake upstream: the context chunked and examined in one
 * parallel round, findings kept within the bound and ranked, failures tolerated, a 1 MB
 * context, usage. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "log.h"
#include "prompt.h"

extern const struct approach approach_memory;
#define THE_APPROACH approach_memory

#include "script_env.h"

/* A body whose user message is 'parts' paragraphs of about 'bytes' bytes each, paragraph i
 * starting with "PART-<i>", then "Query: <q>". Heap memory. */
static char *long_body(int parts, size_t bytes, const char *q)
{
    struct buf b;

    buf_init(&b, 0);
    buf_puts(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"SYS\"},"
                 "{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < parts; i++) {
        size_t start = b.len;

        buf_printf(&b, "PART-%d", i);
        while (b.len - start < bytes)
            buf_puts(&b, " lorem ipsum");
        buf_puts(&b, "\\n");
    }
    buf_printf(&b, "Query: %s\"}]}", q);
    return buf_take(&b, NULL);
}

/* Three chunks examined at once; a NO, a failed call and a YES; the answer from the findings. */
static void test_chunks_parallel(void **state)
{
    const struct row rows[] = {
        {"memory/extract", "PART-0", "YES#the ship sailed in 1851", NULL},
        {"memory/extract", "PART-1", "NO#nothing here", NULL},
        {"memory/extract", "PART-2", NULL, NULL},
        {"memory/final", NULL, "1851", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char *body = long_body(3, 1000, "When did the ship sail?");
    struct env e;

    (void)state;
    env_init(&e, body, rows);
    env_option(&e, "memory_chunk_tokens", 256); /* 1024 bytes: one paragraph per chunk */
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "1851");
    assert_int_equal(e.fake.rounds, 2);
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 3);
    assert_int_equal(fake_llm_round_calls(&e.fake, 1), 1);
    for (size_t i = 0; i < 3; i++) {
        const struct fake_record *r = fake_llm_call(&e.fake, 0, i);

        check_call(r, "memory/extract", 1, NAN, 1000, false);
        assert_int_equal(fake_count(r->text, "PART-"), 1);
        assert_non_null(strstr(r->text, "When did the ship sail?"));
        assert_string_equal(r->msgs[0].content, "SYS");
    }
    const struct fake_record *f = fake_llm_call(&e.fake, 1, 0);

    check_call(f, "memory/final", 1, NAN, -1, false);
    assert_non_null(strstr(f->text, "- the ship sailed in 1851"));
    assert_null(strstr(f->text, "nothing here"));
    assert_null(strstr(f->text, "lorem"));
    assert_non_null(strstr(f->text, "When did the ship sail?"));
    check_usage(&e);
    env_cleanup(&e);
    free(body);
}

/* The bound keeps the last findings; retrieval puts the most similar first. */
static void test_bound_and_rank(void **state)
{
    const struct row rows[] = {
        {"memory/extract", "PART-0", "YES#alpha beta", NULL},
        {"memory/extract", "PART-1", "YES#gamma delta", NULL},
        {"memory/extract", "PART-2", "YES#the harbour master recorded the ship", NULL},
        {"memory/extract", "PART-3", "YES#epsilon zeta", NULL},
        {"memory/final", NULL, "ok", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char *body = long_body(4, 1000, "Which ship did the harbour master record?");
    struct env e;

    (void)state;
    env_init(&e, body, rows);
    env_option(&e, "memory_chunk_tokens", 256);
    env_option(&e, "memory_max_items", 3);
    env_option(&e, "memory_top", 2);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    const char *t = fake_llm_call(&e.fake, 1, 0)->text;

    assert_null(strstr(t, "alpha")); /* dropped by the bound (the first finding) */
    assert_non_null(strstr(t, "- the harbour master recorded the ship"));
    /* the best match first, then one of the others (top 2) */
    assert_true(strstr(t, "- the harbour") < strstr(t, "- gamma") ||
                strstr(t, "- the harbour") < strstr(t, "- epsilon"));
    assert_int_equal(fake_count(t, "\n- "), 2); /* the top 2 only */
    check_usage(&e);
    env_cleanup(&e);
    free(body);
}

/* Every extract call failing fails the request; none relevant still answers. */
static void test_failures(void **state)
{
    const struct row fail[] = {
        {"memory/extract", "PART", NULL, NULL},
        {"memory/final", NULL, "x", NULL},
        {NULL, NULL, NULL, NULL},
    };
    const struct row none[] = {
        {"memory/extract", "PART", "NO#unrelated", NULL},
        {"memory/final", NULL, "cannot tell", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char *body = long_body(2, 1000, "Who?");
    struct env e;

    (void)state;
    env_init(&e, body, fail);
    env_option(&e, "memory_chunk_tokens", 256);
    e.fake.fail_status = 503;
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_EHTTP);
    assert_int_equal(px_http_status(&e.err), 503);
    assert_int_equal(e.fake.rounds, 1);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, body, none);
    env_option(&e, "memory_chunk_tokens", 256);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_string_equal(e.out.text, "cannot tell");
    assert_non_null(strstr(fake_llm_call(&e.fake, 1, 0)->text, "nothing relevant"));
    env_cleanup(&e);
    free(body);
}

/* No "Query:": the last sentence is the query; one sentence: the whole text is the context. */
static void test_query_split(void **state)
{
    const struct row rows[] = {
        {"memory/extract", NULL, "YES#found", NULL},
        {"memory/final", NULL, "ok", NULL},
        {NULL, NULL, NULL, NULL},
    };
    struct env e;

    (void)state;
    env_init(&e,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
             "\"The cat sat. The dog ran! Who ran?\"}]}",
             rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    const struct fake_record *x = fake_llm_call(&e.fake, 0, 0);

    assert_non_null(strstr(x->text, "The cat sat. The dog ran!"));
    assert_null(strstr(x->text, "<part>\nThe cat sat. The dog ran! Who ran?"));
    assert_non_null(strstr(fake_llm_call(&e.fake, 1, 0)->text, "Question: Who ran?"));
    assert_int_equal(e.fake.ncalls, 2);
    env_cleanup(&e);

    env_init(&e, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"one line\"}]}",
             rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_non_null(strstr(fake_llm_call(&e.fake, 0, 0)->text, "<part>\none line\n</part>"));
    env_cleanup(&e);
}

/* A 1 MB context: about 11 chunks at the default 25000 tokens, all in the first round; the
 * chunk cap drops the rest and the answer still comes. */
static void test_one_megabyte(void **state)
{
    const struct row rows[] = {
        {"memory/extract", "PART", "NO#x", NULL},
        {"memory/final", NULL, "done", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char *body = long_body(100, 10000, "What?");
    struct env e;

    (void)state;
    env_init(&e, body, rows);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_int_equal(e.fake.rounds, 2);
    assert_true(fake_llm_round_calls(&e.fake, 0) >= 10);
    assert_true(fake_llm_round_calls(&e.fake, 0) <= 12);
    for (size_t i = 0; i < fake_llm_round_calls(&e.fake, 0); i++)
        assert_true(strlen(fake_llm_call(&e.fake, 0, i)->text) <= 100000 + 2000);
    check_usage(&e);
    env_cleanup(&e);

    env_init(&e, body, rows);
    env_option(&e, "memory_max_chunks", 3);
    assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
    assert_int_equal(fake_llm_round_calls(&e.fake, 0), 3);
    assert_string_equal(e.out.text, "done");
    env_cleanup(&e);
    free(body);
}

/* --memory-file: one JSON line per request with its findings (secrets redacted); not read
 * back: a second request does not see the first one's findings. */
static void test_memory_file(void **state)
{
    const struct row rows[] = {
        {"memory/extract", "PART-0", "YES#key sk-abcdefghijklmnopqrstuvwxyz0123456789 found", NULL},
        {"memory/extract", "PART-1", "YES#second fact", NULL},
        {"memory/final", NULL, "ok", NULL},
        {"memory/final", NULL, "ok", NULL},
        {NULL, NULL, NULL, NULL},
    };
    char path[] = "/tmp/test_memory_XXXXXX";
    int fd = mkstemp(path);
    char *body = long_body(2, 1000, "What was found?");
    char text[4096];
    struct env e;
    FILE *f;
    int lines = 0;

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    for (int run = 0; run < 2; run++) {
        env_init(&e, body, rows);
        env_option(&e, "memory_chunk_tokens", 256);
        e.cfg.memory_file = path;
        assert_int_equal(env_run(&e, &THE_APPROACH), PX_OK);
        if (run == 1) /* the first request's findings are not read back */
            assert_int_equal(fake_count(fake_llm_call(&e.fake, 1, 0)->text, "second fact"), 1);
        e.cfg.memory_file = NULL;
        env_cleanup(&e);
    }
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(text, sizeof(text), f)) {
        cJSON *j = cJSON_Parse(text);
        cJSON *fs = cJSON_GetObjectItemCaseSensitive(j, "findings");

        assert_non_null(j);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "query")->valuestring,
                            "What was found?");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "request")->valuestring, "test");
        assert_int_equal(cJSON_GetArraySize(fs), 2);
        assert_string_equal(cJSON_GetArrayItem(fs, 1)->valuestring, "second fact");
        assert_null(strstr(cJSON_GetArrayItem(fs, 0)->valuestring, "sk-abc"));
        assert_non_null(strstr(cJSON_GetArrayItem(fs, 0)->valuestring, "[redacted]"));
        cJSON_Delete(j);
        lines++;
    }
    fclose(f);
    assert_int_equal(lines, 2);
    unlink(path);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunks_parallel), cmocka_unit_test(test_bound_and_rank),
        cmocka_unit_test(test_failures),        cmocka_unit_test(test_query_split),
        cmocka_unit_test(test_one_megabyte),    cmocka_unit_test(test_memory_file),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
