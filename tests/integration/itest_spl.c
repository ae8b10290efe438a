/* itest_spl.c: spl through two real proxies sharing one --spl-db file. The mock answers
 * "YES" to every call (classification: no known type, so "general"; the written strategy;
 * the answer; the verdict). A learning request on proxy A writes the strategy, and 19 more
 * learning requests at once on A and B record exactly 20 attempts on one strategy (no lost
 * update, no second strategy); B then applies it in inference mode (the upstream call
 * carries it); spl_learning never goes upstream; a non-bool spl_learning is a 400; a --spl-db
 * that cannot be created stops the start-up with the reason. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "harness.h"

static struct proc mock, px_a, px_b;
static const char *const key_env[] = {"OPENAI_API_KEY=sk-test", NULL};
static char dir[] = "/tmp/itest_spl_XXXXXX";
static char db[256];

static int setup(void **state)
{
    static const char *args[] = {"--spl-db", db, NULL};

    (void)state;
    harness_deadline(120);
    if (!mkdtemp(dir))
        return -1;
    snprintf(db, sizeof(db), "%s/strategies.db", dir);
    if (mock_start(&mock, NULL) != 0 || proxy_start(&px_a, mock.port, args, key_env) != 0)
        return -1;
    return proxy_start(&px_b, mock.port, args, key_env);
}

static int teardown(void **state)
{
    char cmd[300];

    (void)state;
    proc_stop(&px_a);
    proc_stop(&px_b);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return -1;
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static long ask(int port, const char *extra, struct http_resp *keep)
{
    char *body = chat_body("spl-mock-model@reply=YES", "What is 6 times 7?", extra);
    struct http_resp r;
    long status;

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, NULL, &r), 0);
    free(body);
    status = r.status;
    if (keep)
        *keep = r;
    else
        http_resp_free(&r);
    return status;
}

/* rows of "SELECT count(*), sum(attempts), sum(successes) FROM strategies" */
static void db_figures(long *n, long *attempts, long *successes)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;

    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    assert_int_equal(sqlite3_prepare_v2(h,
                                        "SELECT count(*), coalesce(sum(attempts), 0),"
                                        " coalesce(sum(successes), 0) FROM strategies",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *n = (long)sqlite3_column_int64(st, 0);
    *attempts = (long)sqlite3_column_int64(st, 1);
    *successes = (long)sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    sqlite3_close(h);
}

static void *learner(void *arg)
{
    long i = (long)(intptr_t)arg;

    return (void *)(intptr_t)ask(i % 2 ? px_b.port : px_a.port, "\"spl_learning\":true", NULL);
}

static void test_two_proxies_one_store(void **state)
{
    pthread_t th[19];
    long n, attempts, successes;
    struct http_resp r;
    cJSON *bodies;
    char *t;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(ask(px_a.port, "\"spl_learning\":true", NULL), 200);
    assert_int_equal(mock_stat(mock.port, "calls"), 4); /* classify, write, answer, judge */
    db_figures(&n, &attempts, &successes);
    assert_int_equal(n, 1);
    assert_int_equal(attempts, 1);
    {
        struct stat sb;

        assert_int_equal(stat(db, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600); /* users' problems are kept as examples */
    }

    for (long i = 0; i < 19; i++)
        assert_int_equal(pthread_create(&th[i], NULL, learner, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 19; i++) {
        void *rc;

        pthread_join(th[i], &rc);
        assert_int_equal((long)(intptr_t)rc, 200);
    }
    db_figures(&n, &attempts, &successes);
    assert_int_equal(n, 1);
    assert_int_equal(attempts, 20);
    assert_int_equal(successes, 20);

    /* inference on B: the learnt strategy reaches the upstream call */
    mock_reset(mock.port);
    assert_int_equal(ask(px_b.port, NULL, &r), 200);
    assert_non_null(strstr(r.body, "YES"));
    http_resp_free(&r);
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    bodies = mock_bodies(mock.port);
    t = cJSON_PrintUnformatted(bodies);
    assert_non_null(strstr(t, "Strategy 1 for general problems"));
    free(t);
    cJSON_Delete(bodies);
    db_figures(&n, &attempts, &successes);
    assert_int_equal(attempts, 20); /* inference records nothing */
}

static void test_field_handling(void **state)
{
    struct http_resp r;
    cJSON *bodies;
    char *t;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(ask(px_a.port, "\"spl_learning\":false", NULL), 200);
    bodies = mock_bodies(mock.port);
    t = cJSON_PrintUnformatted(bodies);
    assert_null(strstr(t, "spl_learning"));
    free(t);
    cJSON_Delete(bodies);
    assert_int_equal(ask(px_a.port, "\"spl_learning\":\"yes\"", &r), 400);
    assert_non_null(strstr(r.body, "spl_learning"));
    http_resp_free(&r);
}

static void test_bad_db(void **state)
{
    struct proc p;
    const char *args[] = {"--spl-db", "/nonexistent/dir/spl.db", NULL};

    (void)state;
    assert_int_equal(proxy_start(&p, mock.port, args, key_env), -1);
    assert_true(file_contains(p.log, "--spl-db /nonexistent/dir/spl.db"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_proxies_one_store),
        cmocka_unit_test(test_field_handling),
        cmocka_unit_test(test_bad_db),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
