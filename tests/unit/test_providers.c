/* test_providers.c: the --providers file parser and the strategies (providers.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/providers.h"

static int load(const char *json)
{
    char path[] = "/tmp/px_providers_XXXXXX";
    int fd = mkstemp(path);
    char err[256];
    int rc;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, json, strlen(json)), (long)strlen(json));
    close(fd);
    rc = providers_load(path, err, sizeof(err));
    unlink(path);
    return rc;
}

static int pick(const char *model, int pin, uint64_t tried)
{
    int out = -1, waiting = -1;
    enum prov_pick r = providers_acquire(model, pin, tried, &out, &waiting);

    if (r != PROV_OK) {
        providers_unwait(&waiting);
        return r == PROV_BUSY ? -2 : -1;
    }
    providers_release(out, false, 0);
    return out;
}

static void test_parse(void **state)
{
    (void)state;
    setenv("PX_TEST_PROV_KEY", "sk-prov-a", 1);
    unsetenv("PX_TEST_PROV_UNSET");
    assert_int_equal(load("{\"providers\":[{\"name\":\"a\",\"base_url\":\"http://h/v1/\","
                          "\"key_env\":\"PX_TEST_PROV_KEY\"},{\"name\":\"b\",\"base_url\":"
                          "\"https://b\"}]}"),
                     0);
    assert_int_equal(providers_count(), 2);
    assert_string_equal(providers_base_url(0), "http://h/v1");
    assert_string_equal(providers_key(0), "sk-prov-a");
    assert_null(providers_key(1));
    assert_int_equal(providers_find("b"), 1);
    assert_int_equal(providers_find("c"), -1);
    /* Refused: unset key_env, bad strategy, duplicate name, no providers, bad URL. */
    assert_int_equal(load("{\"providers\":[{\"name\":\"a\",\"base_url\":\"http://h\","
                          "\"key_env\":\"PX_TEST_PROV_UNSET\"}]}"),
                     -1);
    assert_false(providers_enabled());
    assert_int_equal(load("{\"strategy\":\"random\",\"providers\":[{\"name\":\"a\","
                          "\"base_url\":\"http://h\"}]}"),
                     -1);
    assert_int_equal(load("{\"providers\":[{\"name\":\"a\",\"base_url\":\"http://h\"},"
                          "{\"name\":\"a\",\"base_url\":\"http://i\"}]}"),
                     -1);
    assert_int_equal(load("{\"providers\":[]}"), -1);
    assert_int_equal(load("{\"providers\":[{\"name\":\"a\",\"base_url\":\"ftp://h\"}]}"), -1);
    assert_int_equal(load("not json"), -1);
    providers_free();
}

static const char three[] =
    "\"providers\":[{\"name\":\"a\",\"base_url\":\"http://a\",\"weight\":1},"
    "{\"name\":\"b\",\"base_url\":\"http://b\",\"weight\":3},"
    "{\"name\":\"c\",\"base_url\":\"http://c\",\"weight\":6,"
    "\"models\":[\"big\"]}]";

static void test_round_robin(void **state)
{
    char j[1024];

    (void)state;
    snprintf(j, sizeof(j), "{\"strategy\":\"round_robin\",%s}", three);
    assert_int_equal(load(j), 0);
    for (int k = 0; k < 6; k++)
        assert_int_equal(pick("big", -1, 0), k % 3);
    /* Model filter: c serves only "big". */
    assert_int_equal(pick("small", -1, 0), 0);
    assert_int_equal(pick("small", -1, 0), 1);
    assert_int_equal(pick("small", -1, 0), 0);
    /* Pin and tried set. */
    assert_int_equal(pick("big", 2, 0), 2);
    assert_int_equal(pick("small", 2, 0), -1);
    assert_int_equal(pick("small", -1, 3), -1);
    providers_free();
}

static void test_weighted(void **state)
{
    char j[1024];
    int n[3] = {0};

    (void)state;
    snprintf(j, sizeof(j), "{\"strategy\":\"weighted\",%s}", three);
    assert_int_equal(load(j), 0);
    providers_seed(42);
    for (int k = 0; k < 1000; k++)
        n[pick("big", -1, 0)]++;
    /* Expected 100 / 300 / 600. */
    assert_in_range(n[0], 60, 140);
    assert_in_range(n[1], 250, 350);
    assert_in_range(n[2], 540, 660);
    providers_free();
}

static void test_failover_and_health(void **state)
{
    char j[1024];

    (void)state;
    snprintf(j, sizeof(j),
             "{\"strategy\":\"failover\",\"fail_threshold\":3,\"health_interval\":2,%s}", three);
    assert_int_equal(load(j), 0);
    assert_int_equal(pick("big", -1, 0), 0);
    assert_int_equal(pick("big", -1, 1), 1);
    assert_int_equal(pick("big", -1, 3), 2);
    /* Three failures take a down; a success in between resets the count. */
    int out = -1, w = -1;
    for (int k = 0; k < 2; k++) {
        assert_int_equal(providers_acquire("big", -1, 0, &out, &w), PROV_OK);
        providers_release(out, true, 1000000);
    }
    assert_int_equal(providers_acquire("big", -1, 0, &out, &w), PROV_OK);
    providers_release(out, false, 1000000);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(providers_acquire("big", -1, 0, &out, &w), PROV_OK);
        assert_int_equal(out, 0);
        providers_release(out, true, 1000000);
    }
    assert_true(providers_is_down(0));
    assert_int_equal(pick("big", -1, 0), 1);
    assert_false(providers_available("small", -1, 2));
    /* Probed after health_interval: not before; a failed probe waits again; then back up. */
    assert_int_equal(providers_probe_due(2000000), -1);
    assert_int_equal(providers_probe_due(3000000), 0);
    assert_int_equal(providers_probe_due(3000000), -1); /* already probing */
    providers_probe_result(0, false, 3000000);
    assert_int_equal(providers_probe_due(4000000), -1);
    assert_int_equal(providers_probe_due(5000000), 0);
    providers_probe_result(0, true, 5000000);
    assert_false(providers_is_down(0));
    assert_int_equal(pick("big", -1, 0), 0);
    providers_free();
}

static void test_caps(void **state)
{
    int a = -1, b = -1, c = -1, w1 = -1, w2 = -1, w3 = -1;

    (void)state;
    assert_int_equal(load("{\"strategy\":\"failover\",\"providers\":["
                          "{\"name\":\"a\",\"base_url\":\"http://a\",\"max_concurrent\":1,"
                          "\"queue\":1},"
                          "{\"name\":\"b\",\"base_url\":\"http://b\",\"max_concurrent\":1,"
                          "\"queue\":1}]}"),
                     0);
    assert_int_equal(providers_acquire(NULL, -1, 0, &a, &w1), PROV_OK);
    assert_int_equal(a, 0);
    assert_int_equal(providers_acquire(NULL, -1, 0, &b, &w1), PROV_OK); /* a full: next */
    assert_int_equal(b, 1);
    assert_int_equal(providers_acquire(NULL, -1, 0, &c, &w1), PROV_BUSY); /* queued on a */
    assert_int_equal(w1, 0);
    assert_int_equal(providers_acquire(NULL, -1, 0, &c, &w1), PROV_BUSY); /* still waiting */
    assert_int_equal(providers_acquire(NULL, -1, 1, &c, &w2), PROV_BUSY); /* queued on b */
    assert_int_equal(w2, 1);
    assert_int_equal(providers_acquire(NULL, -1, 0, &c, &w3), PROV_NONE); /* a's queue full */
    assert_true(providers_release(a, false, 0));                          /* waiters exist */
    assert_int_equal(providers_acquire(NULL, -1, 0, &c, &w1), PROV_OK);
    assert_int_equal(c, 0);
    assert_int_equal(w1, -1);
    providers_unwait(&w2);
    assert_false(providers_release(c, false, 0));
    providers_release(b, false, 0);
    providers_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),    cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_weighted), cmocka_unit_test(test_failover_and_health),
        cmocka_unit_test(test_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
