/* test_redis.c: --redis-url parsing, the flags, and the n-support hook against a real
 * redis-server (started here on a free loopback port, no persistence, stopped at the end). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "redis.h"

static void test_url_parse(void **state)
{
    struct redis_url u;
    char why[128];

    (void)state;
    assert_int_equal(redis_url_parse("redis://127.0.0.1", &u, why, sizeof(why)), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "");
    assert_false(u.tls);

    assert_int_equal(
        redis_url_parse("redis://alice:p%40ss%3Aw@cache.internal:6380/3", &u, why, sizeof(why)), 0);
    assert_string_equal(u.host, "cache.internal");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.pass, "p@ss:w");

    assert_int_equal(redis_url_parse("redis://:secret@h:1/", &u, why, sizeof(why)), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "secret");
    assert_int_equal(u.port, 1);

    assert_int_equal(redis_url_parse("rediss://[::1]:7000/1", &u, why, sizeof(why)), 0);
    assert_true(u.tls);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 1);

    /* The last '@' ends the user info: a password may contain '@' unencoded. */
    assert_int_equal(redis_url_parse("redis://:a@b@h", &u, why, sizeof(why)), 0);
    assert_string_equal(u.pass, "a@b");
    assert_string_equal(u.host, "h");

    static const char *const bad[] = {
        "http://h",        "redis://",        "redis://h:0",
        "redis://h:65536", "redis://h:x",     "redis://h:",
        "redis://h/x",     "redis://h/1?x=1", "redis://user@h",
        "redis://:%zz@h",  "redis://:%00@h",  "redis://[::1",
        "redis://[::1]x",  "redis://:pw@",    "redis://:pw-SECRET@h:99999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(redis_url_parse(bad[i], &u, why, sizeof(why)), -1);
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "SECRET")); /* the reason never repeats the password */
    }
}

static void test_flags(void **state)
{
    struct config c;
    char *argv1[] = {"optillm", NULL};
    char *argv2[] = {"optillm", "--redis-url",     "redis://h", "--redis-prefix",
                     "x:",      "--redis-failure", "closed",    NULL};
    char *argv3[] = {"optillm", "--redis-failure", "maybe", NULL};

    (void)state;
    unsetenv("OPTILLM_REDIS_URL");
    unsetenv("OPTILLM_REDIS_PREFIX");
    unsetenv("OPTILLM_REDIS_FAILURE");
    assert_int_equal(config_load(&c, 1, argv1), 0);
    assert_null(c.redis_url);
    assert_string_equal(c.redis_prefix, "optillm:");
    assert_false(c.redis_fail_closed);
    config_cleanup(&c);
    assert_int_equal(config_load(&c, 7, argv2), 0);
    assert_string_equal(c.redis_url, "redis://h");
    assert_string_equal(c.redis_prefix, "x:");
    assert_true(c.redis_fail_closed);
    config_cleanup(&c);
    setenv("OPTILLM_REDIS_URL", "redis://envhost:1", 1);
    assert_int_equal(config_load(&c, 1, argv1), 0);
    assert_string_equal(c.redis_url, "redis://envhost:1");
    config_cleanup(&c);
    unsetenv("OPTILLM_REDIS_URL");
    assert_int_equal(config_load(&c, 3, argv3), -1);
    config_cleanup(&c);
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* The hook another module calls: unknown first, then what any instance stored. */
static void test_nsupport(void **state)
{
    char portstr[16], url[64];
    struct config c;
    char *argv[] = {"optillm", "--redis-url", url, "--redis-prefix", portstr, NULL};
    int port = free_port();
    pid_t pid;

    (void)state;
    assert_true(port > 0);
    assert_int_equal(redis_nsupport_get("http://127.0.0.1:1/v1"), -1); /* not configured */
    snprintf(portstr, sizeof(portstr), "%d", port);
    pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);

        dup2(fd, 1);
        dup2(fd, 2);
        execl("/usr/bin/redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    assert_int_equal(config_load(&c, 5, argv), 0);
    /* Wait for the server: redis_init tolerates a Redis that is not there yet. */
    for (int i = 0; i < 300; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

        close(fd);
        if (ok)
            break;
        nanosleep(&(struct timespec){0, 10000000L}, NULL);
    }
    assert_int_equal(redis_init(&c), 0);
    assert_true(redis_enabled());
    assert_int_equal(redis_nsupport_get("http://127.0.0.1:1/v1"), -1);
    redis_nsupport_set("http://127.0.0.1:1/v1", false);
    redis_nsupport_set("http://127.0.0.1:2/v1", true);
    int v1 = -1, v2 = -1;
    for (int i = 0; i < 200 && (v1 < 0 || v2 < 0); i++) { /* the writes are asynchronous */
        v1 = redis_nsupport_get("http://127.0.0.1:1/v1");
        v2 = redis_nsupport_get("http://127.0.0.1:2/v1");
        nanosleep(&(struct timespec){0, 10000000L}, NULL);
    }
    assert_int_equal(v1, 0);
    assert_int_equal(v2, 1);
    /* Both keys expire: a refusal soon (probed again), a support later. */
    {
        char cmd[256], line[64] = "";
        FILE *p;

        snprintf(cmd, sizeof(cmd),
                 "redis-cli -p %d --scan --pattern '%snsupport:*' | while read k; do "
                 "redis-cli -p %d TTL \"$k\"; done | sort -n | tr '\\n' ' '",
                 port, portstr, port);
        p = popen(cmd, "r");
        assert_non_null(p);
        assert_non_null(fgets(line, sizeof(line), p));
        pclose(p);
        int t0 = 0, t1 = 0;
        assert_int_equal(sscanf(line, "%d %d", &t0, &t1), 2);
        assert_true(t0 > 0 && t0 <= 600);
        assert_true(t1 > 600 && t1 <= 7 * 86400);
    }
    /* Redis gone: unknown, at once, no crash. */
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    assert_int_equal(redis_nsupport_get("http://127.0.0.1:2/v1"), -1);
    assert_int_equal(redis_nsupport_get("http://127.0.0.1:2/v1"), -1);
    redis_cleanup();
    config_cleanup(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_nsupport),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
