/* itest_codeexec.c: executecode and coc through the real proxy and the real sandbox (bubblewrap,
 * python3) against the mock upstream. Without --enable-code-execution their requests get 400.
 * With it, code tries to get out on purpose: connect to the mock's port, write outside /tmp
 * (the repository too), read the proxy's environment (its upstream key must reach no upstream
 * body and no answer), fork and memory bombs, an endless loop, endless output. Each request
 * is answered 200 with the outcome described to the model, and the proxy stays healthy (it
 * answers /health, its RSS stays small, no sandboxed process is left). coc with the model's
 * code (the mock's reply= option): a working program, and one that never works (fixes, then
 * the simulation). */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define KEY "sk-codeexec-SECRETENV-7f3a9c"

static struct proc mock;
static struct proc px; /* with --enable-code-execution */

static int setup(void **state)
{
    static const char *const args[] = {"--enable-code-execution", "--code-execution-timeout", "2",
                                       NULL};
    static const char *const env[] = {"OPENAI_API_KEY=" KEY, NULL};

    (void)state;
    harness_deadline(300);
    if (mock_start(&mock, NULL) != 0)
        return -1;
    return proxy_start(&px, mock.port, args, env);
}

static int teardown(void **state)
{
    int rc = 0;

    (void)state;
    if (proc_stop(&px) != 0)
        rc = -1;
    if (proc_stop(&mock) != 0)
        rc = -1;
    return rc;
}

/* %XX for everything but letters and digits (the mock decodes model options). */
static char *encode(const char *s)
{
    char *out = malloc(strlen(s) * 3 + 1);
    char *o = out;

    for (; *s; s++) {
        if (isalnum((unsigned char)*s))
            *o++ = *s;
        else
            o += sprintf(o, "%%%02X", (unsigned char)*s);
    }
    *o = '\0';
    return out;
}

/* A JSON string literal's inside for 'code' in a user message "Run:\n```python\n<code>\n```". */
static char *user_code_body(const char *model, const char *code)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(root, "messages");
    cJSON *m = cJSON_CreateObject();
    size_t n = strlen(code) + 64;
    char *content = malloc(n);
    char *s;

    snprintf(content, n, "Run this:\n```python\n%s\n```\n", code);
    cJSON_AddStringToObject(root, "model", model);
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    free(content);
    return s;
}

/* Every request body the mock recorded, as one text (headers left out: the key is in them by
 * design). Malloc'd. */
static char *recorded_bodies_text(void)
{
    cJSON *j = mock_get(mock.port, "/mock/requests");
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "requests");
    cJSON *it;
    size_t cap = 1 << 20, len = 0;
    char *all = calloc(cap, 1);

    if (!arr)
        arr = j;
    cJSON_ArrayForEach(it, arr)
    {
        char *b = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(it, "body"));
        size_t n = b ? strlen(b) : 0;

        while (len + n + 2 > cap)
            all = realloc(all, cap *= 2);
        if (b)
            memcpy(all + len, b, n);
        len += n;
        all[len++] = '\n';
        all[len] = '\0';
        cJSON_free(b);
    }
    cJSON_Delete(j);
    return all;
}

/* POSTs, asserts the status, returns the response (caller frees). */
static struct http_resp post(int port, const char *body, long want)
{
    struct http_resp r;

    assert_int_equal(http_req("POST", port, "/v1/chat/completions", body, NULL, &r), 0);
    if (r.status != want)
        fprintf(stderr, "status %ld (want %ld): %.600s\n", r.status, want, r.body);
    assert_int_equal(r.status, want);
    return r;
}

/* Runs 'code' as the request's own code through executecode; returns what the model was
 * shown (the last mock request's bodies, malloc'd) and checks the answer for the key. */
static char *run_user_code(const char *code, double max_s)
{
    char *body = user_code_body("executecode-mock-model@words=4000", code);
    struct http_resp r;
    char *seen;

    mock_reset(mock.port);
    r = post(px.port, body, 200);
    assert_null(strstr(r.body, KEY));
    if (r.total_s > max_s)
        fail_msg("took %.2f s (max %.2f)", r.total_s, max_s);
    http_resp_free(&r);
    free(body);
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    seen = recorded_bodies_text();
    assert_null(strstr(seen, KEY));
    return seen;
}

static void test_disabled(void **state)
{
    static const char *const models[] = {"executecode-mock-model", "coc-mock-model",
                                         "bon&coc-mock-model", NULL};
    static const char *const env[] = {"OPENAI_API_KEY=" KEY, NULL};
    struct proc off;
    struct http_resp r;

    (void)state;
    assert_int_equal(proxy_start(&off, mock.port, NULL, env), 0);
    mock_reset(mock.port);
    for (int i = 0; models[i]; i++) {
        char *body = chat_body(models[i], "print(1)", NULL);

        r = post(off.port, body, 400);
        assert_non_null(strstr(r.body, "--enable-code-execution"));
        http_resp_free(&r);
        free(body);
    }
    assert_int_equal(mock_stat(mock.port, "calls"), 0);
    /* GET /v1/approaches says so, on either proxy. */
    for (int on = 0; on < 2; on++) {
        cJSON *list, *a;
        int found = 0;

        assert_int_equal(http_req("GET", on ? px.port : off.port, "/v1/approaches", NULL, NULL, &r),
                         0);
        list = http_json(&r);
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(list, "data"))
        {
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "id"));
            bool code = !strcmp(id, "executecode") || !strcmp(id, "coc");

            found += code;
            assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "code_execution")),
                             code);
            assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "available")),
                             on || !code);
        }
        assert_int_equal(found, 2);
        cJSON_Delete(list);
        http_resp_free(&r);
    }
    assert_int_equal(proc_stop(&off), 0);
}

static void test_escape_network(void **state)
{
    char code[512];
    char *seen;

    (void)state;
    snprintf(code, sizeof(code),
             "import socket\n"
             "s = socket.socket()\n"
             "s.settimeout(1)\n"
             "try:\n"
             "    s.connect(('127.0.0.1', %d))\n"
             "    print('NET-' + 'OPEN')\n"
             "except OSError as e:\n"
             "    print('NET-BLOCKED', type(e).__name__)",
             mock.port);
    seen = run_user_code(code, 10);
    assert_non_null(strstr(seen, "NET-BLOCKED"));
    assert_null(strstr(seen, "NET-OPEN"));
    free(seen);
}

static void test_escape_files(void **state)
{
    char cwd[512], code[2048];
    char *seen;

    (void)state;
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(code, sizeof(code),
             "import os\n"
             "for p in ['/usr/x', '/x', '%s/ESCAPED', '/dev/shm/x']:\n"
             "    try:\n"
             "        open(p, 'w').write('x')\n"
             "        print('WR' + 'OTE', p)\n"
             "    except OSError as e:\n"
             "        print('REFUSED', e.errno)\n"
             "print('SEES-REPO', os.path.exists('%s/Makefile'))",
             cwd, cwd);
    seen = run_user_code(code, 10);
    assert_null(strstr(seen, "WROTE"));
    assert_non_null(strstr(seen, "SEES-REPO False"));
    assert_true(access("ESCAPED", F_OK) != 0);
    assert_true(access("/usr/x", F_OK) != 0);
    free(seen);
}

static void test_escape_environment(void **state)
{
    char *seen;

    (void)state;
    seen = run_user_code("import os\n"
                         "print('ENV', dict(os.environ))\n"
                         "for p in os.listdir('/proc'):\n"
                         "    try:\n"
                         "        print(open('/proc/' + p + '/environ', 'rb').read())\n"
                         "    except OSError:\n"
                         "        pass",
                         10);
    assert_non_null(strstr(seen, "ENV {"));
    assert_null(strstr(seen, "OPENAI_API_KEY"));
    free(seen);
}

static void test_escape_bombs(void **state)
{
    char *seen;

    (void)state;
    seen = run_user_code("import os, time\n"
                         "n = 0\n"
                         "try:\n"
                         "    while True:\n"
                         "        if os.fork() == 0:\n"
                         "            time.sleep(60)\n"
                         "            os._exit(0)\n"
                         "        n += 1\n"
                         "except OSError as e:\n"
                         "    print('FORKS-' + 'STOPPED', e.errno)",
                         10);
    if (geteuid() == 0)
        assert_non_null(strstr(seen, "FORKS-STOPPED"));
    free(seen);
    seen = run_user_code("x = bytearray(8 << 30)", 10);
    assert_non_null(strstr(seen, "MemoryError"));
    free(seen);
}

static void test_escape_time_and_output(void **state)
{
    char *seen;

    (void)state;
    seen = run_user_code("while True:\n    pass", 10);
    assert_non_null(strstr(seen, "time limit of 2 s"));
    free(seen);
    seen = run_user_code("while True:\n    print('y' * 4096)", 10);
    assert_non_null(strstr(seen, "far more output"));
    assert_non_null(strstr(seen, "cut here"));
    /* What reached the model is capped: 64 KiB of output plus the prompt and the code. */
    assert_true(strlen(seen) < 100 * 1024);
    free(seen);
}

static void *endless_request(void *arg)
{
    struct http_resp *r = arg;
    char *body = user_code_body("executecode-mock-model", "while True:\n    pass");

    if (http_req("POST", px.port, "/v1/chat/completions", body, NULL, r) != 0)
        r->status = -1;
    free(body);
    return NULL;
}

/* While 6 programs spin for the whole time limit, other requests are answered at once: a run
 * waits on a helper thread, not on a scheduler thread. */
static void test_others_flow(void **state)
{
    enum { N = 6 };
    pthread_t t[N];
    struct http_resp spin[N], r;
    struct timespec ts = {0, 300 * 1000000L};
    char *body = chat_body("re2-mock-model", "plain", NULL); /* an approach: a coroutine */

    (void)state;
    for (int i = 0; i < N; i++)
        pthread_create(&t[i], NULL, endless_request, &spin[i]);
    nanosleep(&ts, NULL); /* the runs have started */
    for (int i = 0; i < 3; i++) {
        r = post(px.port, body, 200);
        fprintf(stderr, "an re2 request beside %d spinning programs: %.3f s\n", N, r.total_s);
        assert_true(r.total_s < 1.0);
        http_resp_free(&r);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(spin[i].status, 200);
        http_resp_free(&spin[i]);
    }
    free(body);
}

/* The model writes the code (the mock's fixed reply), the proxy runs it. */
static void test_model_code(void **state)
{
    char *reply = encode("Let me compute.\n```python\nimport os\nprint('SUM', 6 * 7, "
                         "'OPENAI_API_KEY' in os.environ)\n```\n");
    char model[1024];
    char *body, *seen;
    struct http_resp r;

    (void)state;
    snprintf(model, sizeof(model), "executecode-mock-model@reply=%s", reply);
    body = chat_body(model, "What is 6 times 7?", NULL);
    mock_reset(mock.port);
    r = post(px.port, body, 200);
    assert_int_equal(mock_stat(mock.port, "calls"), 2);
    seen = recorded_bodies_text();
    assert_non_null(strstr(seen, "SUM 42 False"));
    assert_null(strstr(seen, KEY));
    free(seen);
    http_resp_free(&r);
    free(body);
    free(reply);

    /* coc: a working program: the answer is the value of `answer`. */
    reply = encode("```python\nparts = [6] * 7\nanswer = sum(parts)\n```");
    snprintf(model, sizeof(model), "coc-mock-model@reply=%s", reply);
    body = chat_body(model, "What is 6 times 7?", NULL);
    mock_reset(mock.port);
    r = post(px.port, body, 200);
    {
        cJSON *j = http_json(&r);
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
        cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "message"),
                                                    "content");

        assert_true(cJSON_IsString(t));
        assert_string_equal(t->valuestring, "42");
        cJSON_Delete(j);
    }
    assert_int_equal(mock_stat(mock.port, "calls"), 1);
    http_resp_free(&r);
    free(body);
    free(reply);

    /* coc: a program that never works: 3 runs, 2 fixes, then the simulation. */
    reply = encode("```python\nanswer = helper_that_does_not_exist()\n```");
    snprintf(model, sizeof(model), "coc-mock-model@reply=%s", reply);
    body = chat_body(model, "What is 6 times 7?", NULL);
    mock_reset(mock.port);
    r = post(px.port, body, 200);
    assert_int_equal(mock_stat(mock.port, "calls"), 4);
    seen = recorded_bodies_text();
    assert_non_null(strstr(seen, "NameError"));
    free(seen);
    http_resp_free(&r);
    free(body);
    free(reply);
}

/* Running (not zombie) processes of the sandbox's uids (root: 1990000..1990015) that no run
 * holds: a uid whose lock (/run/optillm-sandbox/<uid>, src/sandbox.c) another process holds
 * is in use by a run of that process (a concurrent test), not left over. */
static int leftover_procs(void)
{
    int per_uid[16] = {0};
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char path[64], line[256];
        bool zombie = false;
        unsigned uid;
        FILE *f;

        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%.20s/status", de->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "State:", 6) == 0 && strchr(line, 'Z'))
                zombie = true;
            if (sscanf(line, "Uid: %u", &uid) == 1) {
                if (!zombie && uid >= 1990000u && uid < 1990016u)
                    per_uid[uid - 1990000u]++;
                break;
            }
        }
        fclose(f);
    }
    closedir(d);
    for (int i = 0; i < 16; i++) {
        char path[64];
        int fd;

        if (!per_uid[i])
            continue;
        snprintf(path, sizeof(path), "/run/optillm-sandbox/%d", 1990000 + i);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd); /* a run of another process */
            continue;
        }
        if (fd >= 0)
            close(fd);
        fprintf(stderr, "uid %d: %d process(es) left\n", 1990000 + i, per_uid[i]);
        n += per_uid[i];
    }
    return n;
}

/* Waits up to 5 s for leftover_procs() to reach 0; returns what is left then. */
static int leftover_procs_gone(void)
{
    int n = 0;

    for (int i = 0; i < 100 && (n = leftover_procs()) > 0; i++) {
        struct timespec ts = {0, 50 * 1000000L};

        nanosleep(&ts, NULL);
    }
    return n;
}

/* Streamed: executecode relays its answer call; coc sends its value at the end. */
static void test_stream(void **state)
{
    static const char *const slugs[] = {"executecode", "coc"};
    char *reply = encode("```python\nanswer = 6 * 7\nprint(answer)\n```");

    (void)state;
    for (int i = 0; i < 2; i++) {
        char model[512];
        char *body;
        struct http_resp r;

        snprintf(model, sizeof(model), "%s-mock-model@reply=%s", slugs[i], reply);
        body = chat_body(model, "What is 6 times 7?", "\"stream\":true");
        mock_reset(mock.port);
        r = post(px.port, body, 200);
        assert_non_null(strstr(r.body, "data: {"));
        assert_non_null(strstr(r.body, "data: [DONE]"));
        if (i == 1)
            assert_non_null(strstr(r.body, "\"content\":\"42\""));
        assert_int_equal(mock_stat(mock.port, "calls"), i == 0 ? 2 : 1);
        http_resp_free(&r);
        free(body);
    }
    free(reply);
}

/* After all of the above: the proxy answers, its memory is small, nothing is left running. */
static void test_proxy_unharmed(void **state)
{
    struct http_resp r;
    char path[64], line[256];
    long rss_kb = -1;
    FILE *f;
    int left;

    (void)state;
    assert_int_equal(http_req("GET", px.port, "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    snprintf(path, sizeof(path), "/proc/%d/status", (int)px.pid);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &rss_kb) == 1)
            break;
    fclose(f);
    fprintf(stderr, "proxy RSS after the escape attempts: %ld KiB\n", rss_kb);
    assert_true(rss_kb > 0 && rss_kb < 200 * 1024);
    /* No process of the sandbox users survived its run (zombies waiting for the host's init
     * to reap them are not running). */
    left = leftover_procs_gone();
    assert_int_equal(left, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disabled),     cmocka_unit_test(test_escape_network),
        cmocka_unit_test(test_escape_files), cmocka_unit_test(test_escape_environment),
        cmocka_unit_test(test_escape_bombs), cmocka_unit_test(test_escape_time_and_output),
        cmocka_unit_test(test_model_code),   cmocka_unit_test(test_others_flow),
        cmocka_unit_test(test_stream),       cmocka_unit_test(test_proxy_unharmed),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
