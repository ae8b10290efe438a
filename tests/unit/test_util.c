/* test_util.c: unit tests of the arena, the capped buffer, prompt rendering and log lines. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "log.h"
#include "prompt.h"
#include "px.h"

#define ALIGNED16(p) ((((uintptr_t)(p)) & 15u) == 0)

/* ---- arena -------------------------------------------------------------------------------- */

static void test_arena_many_small(void **state)
{
    enum { N = 20000 };
    struct arena *a = arena_create();
    unsigned char **ptrs = xcalloc(N, sizeof(*ptrs));
    size_t *sizes = xcalloc(N, sizeof(*sizes));
    size_t total = 0;

    (void)state;
    for (size_t i = 0; i < N; i++) {
        sizes[i] = 1 + (i * 7) % 137;
        ptrs[i] = arena_alloc(a, sizes[i]);
        assert_non_null(ptrs[i]);
        assert_true(ALIGNED16(ptrs[i]));
        memset(ptrs[i], (int)(i & 0xff), sizes[i]);
        total += sizes[i];
    }
    /* No allocation overlapped another. */
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < sizes[i]; j++)
            assert_int_equal(ptrs[i][j], i & 0xff);
    assert_int_equal(arena_used(a), total);
    free(ptrs);
    free(sizes);
    arena_destroy(a);
}

static void test_arena_big(void **state)
{
    static const size_t sizes[] = {5000, 100000, 3,    1u << 20, 17,   4095,    4096, 4097,
                                   8192, 8193,   8000, 1,        2000, 3 << 20, 16,   0};
    struct arena *a = arena_create();
    unsigned char *ptrs[PX_ARRAY_LEN(sizes)];

    (void)state;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < PX_ARRAY_LEN(sizes); i++) {
            ptrs[i] = arena_alloc(a, sizes[i]);
            assert_non_null(ptrs[i]);
            assert_true(ALIGNED16(ptrs[i]));
            memset(ptrs[i], (int)(i + 1), sizes[i]);
        }
        for (size_t i = 0; i < PX_ARRAY_LEN(sizes); i++)
            for (size_t j = 0; j < sizes[i]; j++)
                assert_int_equal(ptrs[i][j], i + 1);
    }
    arena_destroy(a);
}

static void test_arena_calloc(void **state)
{
    struct arena *a = arena_create();
    unsigned char *dirty = arena_alloc(a, 4000);
    unsigned char *z;
    long *l;

    (void)state;
    memset(dirty, 0xab, 4000);
    z = arena_calloc(a, 1000, 3);
    assert_true(ALIGNED16(z));
    for (size_t i = 0; i < 3000; i++)
        assert_int_equal(z[i], 0);
    l = arena_calloc(a, 100000, sizeof(long)); /* a block of its own */
    assert_true(ALIGNED16(l));
    for (size_t i = 0; i < 100000; i++)
        assert_int_equal(l[i], 0);
    assert_non_null(arena_calloc(a, 0, 8));
    assert_non_null(arena_calloc(a, 8, 0));
    arena_destroy(a);
}

static void test_arena_strings(void **state)
{
    struct arena *a = arena_create();
    const char *src = "hello";
    char *s;
    char big[3000];

    (void)state;
    s = arena_strdup(a, src);
    assert_string_equal(s, "hello");
    assert_ptr_not_equal(s, src);
    assert_true(ALIGNED16(s));
    assert_string_equal(arena_strdup(a, ""), "");
    assert_null(arena_strdup(a, NULL));
    assert_string_equal(arena_strndup(a, "hello", 3), "hel");
    assert_string_equal(arena_strndup(a, "hi", 10), "hi");
    assert_string_equal(arena_strndup(a, "hello", 0), "");
    assert_null(arena_strndup(a, NULL, 3));
    /* strndup reads at most n bytes: the source need not be terminated. */
    {
        char unterminated[4] = {'a', 'b', 'c', 'd'};

        assert_string_equal(arena_strndup(a, unterminated, 4), "abcd");
    }
    /* arena_strtrim: the n bytes without leading and trailing whitespace. */
    assert_string_equal(arena_strtrim(a, " \t a b \n x", 7), "a b");
    assert_string_equal(arena_strtrim(a, "  \n ", 4), "");
    assert_string_equal(arena_strtrim(a, "abc", 3), "abc");
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    s = arena_strdup(a, big);
    assert_string_equal(s, big);
    arena_destroy(a);
}

static void test_arena_printf(void **state)
{
    struct arena *a = arena_create();
    char longs[1001];
    char expect[1100];
    char *s;

    (void)state;
    assert_string_equal(arena_printf(a, "%d-%s-%.2f", 42, "x", 1.5), "42-x-1.50");
    assert_string_equal(arena_printf(a, "%s", ""), "");
    memset(longs, 'x', 1000);
    longs[1000] = '\0';
    s = arena_printf(a, "[%s|%d]", longs, 7);
    snprintf(expect, sizeof(expect), "[%s|7]", longs);
    assert_string_equal(s, expect);
    assert_int_equal(strlen(s), 1004);
    assert_true(ALIGNED16(s));
    /* Lengths around the 256-byte internal buffer. */
    for (int n = 250; n <= 262; n++) {
        s = arena_printf(a, "%.*s", n, longs);
        assert_int_equal(strlen(s), (size_t)n);
        assert_memory_equal(s, longs, (size_t)n);
    }
    arena_destroy(a);
}

static int defer_order[8];
static int defer_count;

static void record(void *p)
{
    defer_order[defer_count++] = *(int *)p;
}

static void test_arena_defer(void **state)
{
    static int ids[] = {1, 2, 3, 4};
    struct arena *a = arena_create();

    (void)state;
    defer_count = 0;
    arena_defer(a, record, &ids[0]);
    arena_alloc(a, 100000); /* defers survive new blocks */
    arena_defer(a, record, &ids[1]);
    for (int i = 0; i < 1000; i++)
        arena_alloc(a, 100);
    arena_defer(a, record, &ids[2]);
    arena_defer(a, free, xmalloc(64)); /* a heap resource handed to the arena */
    arena_defer(a, record, &ids[3]);
    assert_int_equal(defer_count, 0);
    arena_destroy(a);
    assert_int_equal(defer_count, 4);
    assert_int_equal(defer_order[0], 4);
    assert_int_equal(defer_order[1], 3);
    assert_int_equal(defer_order[2], 2);
    assert_int_equal(defer_order[3], 1);
    arena_destroy(NULL);
}

/* ---- buf ---------------------------------------------------------------------------------- */

static void test_buf_basic(void **state)
{
    struct buf b;

    (void)state;
    buf_init(&b, 0);
    assert_string_equal(buf_cstr(&b), "");
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_int_equal(buf_puts(&b, "def"), 0);
    assert_int_equal(buf_append(&b, "", 0), 0);
    assert_int_equal(b.len, 6);
    assert_string_equal(buf_cstr(&b), "abcdef");
    assert_int_equal(b.data[6], '\0');
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(buf_cstr(&b), "");
    assert_int_equal(buf_puts(&b, "again"), 0);
    assert_string_equal(buf_cstr(&b), "again");
    /* Many small appends grow it. */
    buf_reset(&b);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(buf_append(&b, &"0123456789"[i % 10], 1), 0);
    assert_int_equal(b.len, 100000);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(b.data[i], '0' + i % 10);
    buf_free(&b);
    buf_free(&b); /* twice is harmless */
    assert_null(b.data);
}

static void test_buf_cap(void **state)
{
    struct buf b;
    char longs[600];

    (void)state;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "123456", 6), 0);
    assert_int_equal(buf_append(&b, "78901", 5), -1); /* 11 > 10 */
    assert_int_equal(b.len, 6);
    assert_string_equal(buf_cstr(&b), "123456");
    assert_int_equal(buf_puts(&b, "7890"), 0); /* exactly the cap */
    assert_int_equal(b.len, 10);
    assert_int_equal(buf_append(&b, "x", 1), -1);
    assert_int_equal(buf_puts(&b, "x"), -1);
    assert_int_equal(buf_printf(&b, "%d", 1), -1);
    assert_int_equal(buf_append(&b, "", 0), 0);
    assert_string_equal(buf_cstr(&b), "1234567890");
    /* A huge n must not wrap around the check. */
    assert_int_equal(buf_append(&b, "x", SIZE_MAX), -1);
    assert_int_equal(b.len, 10);
    buf_consume(&b, 4);
    assert_int_equal(buf_puts(&b, "abcd"), 0);
    assert_string_equal(buf_cstr(&b), "567890abcd");
    buf_free(&b);

    /* A long printf beyond the cap fails and leaves the buffer as it was. */
    buf_init(&b, 100);
    assert_int_equal(buf_puts(&b, "keep"), 0);
    memset(longs, 'y', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    assert_int_equal(buf_printf(&b, "%s", longs), -1);
    assert_string_equal(buf_cstr(&b), "keep");
    assert_int_equal(b.len, 4);
    buf_free(&b);
}

static void test_buf_printf_long(void **state)
{
    struct buf b;
    char longs[2001];
    char expect[2100];

    (void)state;
    memset(longs, 'z', 2000);
    longs[2000] = '\0';
    buf_init(&b, 0);
    assert_int_equal(buf_printf(&b, "%s", "pre:"), 0);
    assert_int_equal(buf_printf(&b, "%s|%d", longs, 42), 0);
    snprintf(expect, sizeof(expect), "pre:%s|42", longs);
    assert_string_equal(buf_cstr(&b), expect);
    assert_int_equal(b.len, strlen(expect));
    /* Lengths around the 512-byte internal buffer. */
    for (int n = 508; n <= 516; n++) {
        buf_reset(&b);
        assert_int_equal(buf_printf(&b, "%.*s", n, longs), 0);
        assert_int_equal(b.len, (size_t)n);
        assert_int_equal(strlen(buf_cstr(&b)), (size_t)n);
    }
    buf_free(&b);
}

static void test_buf_consume(void **state)
{
    struct buf b;

    (void)state;
    buf_init(&b, 0);
    buf_consume(&b, 5); /* empty, never allocated */
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_puts(&b, "hello world"), 0);
    buf_consume(&b, 0);
    assert_string_equal(buf_cstr(&b), "hello world");
    buf_consume(&b, 6);
    assert_string_equal(buf_cstr(&b), "world");
    assert_int_equal(b.len, 5);
    buf_consume(&b, 5);
    assert_int_equal(b.len, 0);
    assert_string_equal(buf_cstr(&b), "");
    assert_int_equal(buf_puts(&b, "abc"), 0);
    buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    assert_string_equal(buf_cstr(&b), "");
    buf_free(&b);
}

static void test_buf_take(void **state)
{
    struct buf b;
    size_t len = 99;
    char *s;

    (void)state;
    buf_init(&b, 0);
    assert_int_equal(buf_puts(&b, "xyz"), 0);
    s = buf_take(&b, &len);
    assert_string_equal(s, "xyz");
    assert_int_equal(len, 3);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_string_equal(buf_cstr(&b), "");
    /* The buffer is usable again and independent of the taken string. */
    assert_int_equal(buf_puts(&b, "new"), 0);
    assert_string_equal(s, "xyz");
    free(s);
    buf_free(&b);
    /* Taking an empty buffer gives an empty string the caller frees. */
    s = buf_take(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
    s = buf_take(&b, NULL);
    assert_string_equal(s, "");
    free(s);
}

/* ---- prompts ------------------------------------------------------------------------------ */

static void test_prompt_render(void **state)
{
    struct arena *a = arena_create();

    (void)state;
    assert_string_equal(prompt_render(a, "Hello {{name}}, {{name}}!", "name", "Bob", NULL),
                        "Hello Bob, Bob!");
    assert_string_equal(prompt_render(a, "{{a}}{{b}}", "a", "1", "b", "2", NULL), "12");
    assert_string_equal(prompt_render(a, "Q: {{q}}\nA:", "q", "why?", NULL), "Q: why?\nA:");
    /* Unknown placeholders stay. */
    assert_string_equal(prompt_render(a, "{{a}} {{b}}", "a", "A", NULL), "A {{b}}");
    assert_string_equal(prompt_render(a, "{{ab}} {{a}}", "a", "A", NULL), "{{ab}} A");
    assert_string_equal(prompt_render(a, "{{}} {{a}}", "a", "A", NULL), "{{}} A");
    assert_string_equal(prompt_render(a, "x {{a}}", NULL), "x {{a}}");
    /* A value is not expanded again. */
    assert_string_equal(prompt_render(a, "{{a}}", "a", "{{b}}", "b", "B", NULL), "{{b}}");
    assert_string_equal(prompt_render(a, "{{a}}{{b}}", "a", "{{", "b", "}}", NULL), "{{}}");
    assert_string_equal(prompt_render(a, "{{a}}", "a", "{{a}}", NULL), "{{a}}");
    /* Unterminated placeholders stay. */
    assert_string_equal(prompt_render(a, "abc {{a", "a", "A", NULL), "abc {{a");
    assert_string_equal(prompt_render(a, "{{a}} {{", "a", "A", NULL), "A {{");
    assert_string_equal(prompt_render(a, "{{", "a", "A", NULL), "{{");
    assert_string_equal(prompt_render(a, "{{x{{a}}", "a", "A", NULL), "{{xA");
    /* Single braces are text. */
    assert_string_equal(prompt_render(a, "{a} }} {", "a", "A", NULL), "{a} }} {");
    /* NULL value renders as empty; empty template gives "". */
    assert_string_equal(prompt_render(a, "[{{a}}]", "a", NULL, NULL), "[]");
    assert_string_equal(prompt_render(a, "", "a", "A", NULL), "");
    arena_destroy(a);
}

static void test_prompt_render_long_value(void **state)
{
    struct arena *a = arena_create();
    char *val = xmalloc(100001);
    char *out;

    (void)state;
    memset(val, 'v', 100000);
    val[100000] = '\0';
    out = prompt_render(a, "<{{v}}><{{v}}>", "v", val, NULL);
    assert_int_equal(strlen(out), 200004);
    assert_int_equal(out[0], '<');
    assert_int_equal(out[100001], '>');
    assert_int_equal(out[200003], '>');
    free(val);
    arena_destroy(a);
}

static void test_prompt_table(void **state)
{
    const char *const *names;
    size_t n = 0;

    (void)state;
    assert_int_equal(prompt_init(NULL), 0);
    names = prompt_names();
    assert_non_null(names);
    for (; names[n]; n++) {
        const char *t = prompt_get(names[n]);

        print_message("prompt %s\n", names[n]);
        assert_non_null(t);
        assert_true(t[0] != '\0');
        assert_non_null(strchr(names[n], '/'));
    }
    assert_true(n > 0);
    assert_null(prompt_get("nosuch/prompt"));
    assert_null(prompt_get(""));
    /* Every prompt an approach declares exists. */
    for (size_t i = 0; i < approach_registry_len; i++)
        for (const char *const *p = approach_registry[i]->prompts; p && *p; p++)
            assert_non_null(prompt_get(*p));
    prompt_cleanup();
    prompt_cleanup(); /* twice is harmless */
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    fclose(f);
}

static void test_prompt_override_dir(void **state)
{
    char dir[] = "/tmp/test_util_prompts_XXXXXX";
    char sub[128];
    char file[160];
    const char *name;
    char slug[64];
    const char *stage;
    const char *embedded;
    int saved, devnull;

    (void)state;
    assert_int_equal(prompt_init(NULL), 0);
    name = prompt_names()[0];
    assert_non_null(name);
    embedded = prompt_get(name);
    prompt_cleanup();
    stage = strchr(name, '/');
    assert_non_null(stage);
    snprintf(slug, sizeof(slug), "%.*s", (int)(stage - name), name);

    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof(sub), "%s/%s", dir, slug);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(file, sizeof(file), "%s/%s.txt", dir, name);
    write_file(file, "OVERRIDE {{x}}");

    fflush(stderr); /* prompt_init logs a line */
    saved = dup(2);
    devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    close(devnull);
    assert_int_equal(prompt_init(dir), 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    assert_string_equal(prompt_get(name), "OVERRIDE {{x}}");
    if (prompt_names()[1]) /* the others stay embedded */
        assert_true(prompt_get(prompt_names()[1])[0] != '\0');
    prompt_cleanup();
    assert_int_equal(prompt_init(NULL), 0);
    assert_string_equal(prompt_get(name), embedded);
    prompt_cleanup();

    unlink(file);
    rmdir(sub);
    rmdir(dir);
}

/* ---- log ---------------------------------------------------------------------------------- */

struct capture {
    int saved;
    int fd;
    char path[64];
};

static void capture_begin(struct capture *c)
{
    snprintf(c->path, sizeof(c->path), "/tmp/test_util_log_XXXXXX");
    c->fd = mkstemp(c->path);
    assert_true(c->fd >= 0);
    fflush(stderr);
    c->saved = dup(2);
    assert_true(c->saved >= 0);
    dup2(c->fd, 2);
}

/* Restores stderr and returns what was written (malloc'd). */
static char *capture_end(struct capture *c)
{
    struct stat st;
    char *out;

    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    assert_int_equal(fstat(c->fd, &st), 0);
    out = xcalloc(1, (size_t)st.st_size + 1);
    assert_int_equal(pread(c->fd, out, (size_t)st.st_size, 0), st.st_size);
    close(c->fd);
    unlink(c->path);
    return out;
}

static size_t count_char(const char *s, char ch)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == ch;
    return n;
}

static void test_log_text(void **state)
{
    struct capture c;
    char *out;

    (void)state;
    log_json = 0;
    capture_begin(&c);
    log_write(LOG_WARN, "req_abc123", "src/some/dir/upstream.c", "hello %s\r\nsecond\rthird\n",
              "x");
    out = capture_end(&c);
    print_message("%s", out);
    /* ts LEVEL req=<id> file: msg */
    assert_true(strlen(out) > 24);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_non_null(strstr(out, "Z WARN "));
    assert_non_null(strstr(out, " req=req_abc123 upstream.c: hello x  second third \n"));
    assert_null(strstr(out, "src/some/dir"));
    assert_null(strchr(out, '\r'));
    assert_int_equal(count_char(out, '\n'), 1);
    assert_int_equal(out[strlen(out) - 1], '\n');
    free(out);

    /* Without a request id; every level's name. */
    {
        static const struct {
            int level;
            const char *name;
        } lv[] = {{LOG_ERROR, " ERROR "},
                  {LOG_WARN, " WARN "},
                  {LOG_INFO, " INFO "},
                  {LOG_DEBUG, " DEBUG "}};

        for (size_t i = 0; i < PX_ARRAY_LEN(lv); i++) {
            capture_begin(&c);
            log_write(lv[i].level, NULL, "main.c", "msg %d", (int)i);
            out = capture_end(&c);
            assert_non_null(strstr(out, lv[i].name));
            assert_null(strstr(out, "req="));
            assert_non_null(strstr(out, "main.c: msg "));
            assert_int_equal(count_char(out, '\n'), 1);
            free(out);
        }
    }

    /* A request id with CR/LF cannot break the line either. */
    capture_begin(&c);
    log_write(LOG_INFO, "id\r\nINJECTED", "a.c", "m");
    out = capture_end(&c);
    assert_non_null(strstr(out, "req=id  INJECTED a.c: m\n"));
    assert_int_equal(count_char(out, '\n'), 1);
    free(out);
}

static void test_log_text_long_message(void **state)
{
    struct capture c;
    char *big = xmalloc(5001);
    char *out;

    (void)state;
    memset(big, 'm', 5000);
    big[5000] = '\0';
    log_json = 0;
    capture_begin(&c);
    log_write(LOG_INFO, "r", "a.c", "%s\n%s", big, big);
    out = capture_end(&c);
    assert_int_equal(count_char(out, '\n'), 1);
    assert_int_equal(out[strlen(out) - 1], '\n');
    assert_true(strlen(out) < 4096);
    free(out);
    free(big);
}

static void test_log_json(void **state)
{
    struct capture c;
    char *out;
    cJSON *j;

    (void)state;
    log_json = 1;
    capture_begin(&c);
    log_write(LOG_ERROR, "r\"1", "src/x.c", "say \"hi\" \\ path\r\nnext\ttab h\xc3\xa9llo");
    out = capture_end(&c);
    log_json = 0;
    print_message("%s", out);
    assert_int_equal(count_char(out, '\n'), 1);
    assert_int_equal(out[strlen(out) - 1], '\n');
    j = cJSON_Parse(out);
    assert_non_null(j);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "ts")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "level")->valuestring, "ERROR");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "msg")->valuestring,
                        "say \"hi\" \\ path  next tab h\xc3\xa9llo");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "req")->valuestring, "r\"1");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "src")->valuestring, "x.c");
    cJSON_Delete(j);
    free(out);

    /* Without a request id. */
    log_json = 1;
    capture_begin(&c);
    log_write(LOG_INFO, NULL, "y.c", "plain");
    out = capture_end(&c);
    log_json = 0;
    j = cJSON_Parse(out);
    assert_non_null(j);
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "req"));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "level")->valuestring, "INFO");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "msg")->valuestring, "plain");
    cJSON_Delete(j);
    free(out);
}

/* A message that fills the line when escaped is cut, and the line is still valid JSON. */
static void test_log_json_long_message(void **state)
{
    static const char fills[] = {'"', '\\', 'a', '\n'};

    (void)state;
    for (size_t f = 0; f < PX_ARRAY_LEN(fills); f++) {
        struct capture c;
        char *big = xmalloc(6001);
        char *out;
        cJSON *j;

        memset(big, fills[f], 6000);
        big[6000] = '\0';
        log_json = 1;
        capture_begin(&c);
        log_write(LOG_INFO, "r", "a.c", "%s", big);
        out = capture_end(&c);
        log_json = 0;
        assert_int_equal(count_char(out, '\n'), 1);
        assert_int_equal(out[strlen(out) - 1], '\n');
        j = cJSON_Parse(out);
        assert_non_null(j);
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "msg")));
        cJSON_Delete(j);
        free(out);
        free(big);
    }
}

/* log_write with a request id longer than the line: run in a child process so that a memory
 * error there fails this test only. The line must stay one line ending in '\n'. */
static void long_req_id_child(int json, const char *path)
{
    char *id = xmalloc(5001);
    int fd = open(path, O_WRONLY | O_TRUNC);

    if (fd < 0)
        _exit(3);
    memset(id, 'i', 5000);
    id[5000] = '\0';
    dup2(fd, 2);
    log_json = json;
    log_write(LOG_INFO, id, "long_request_id_source_file_name.c", "message");
    fflush(stderr);
    free(id);
    _exit(0);
}

static void test_log_long_req_id(void **state)
{
    static char out[8192]; /* static: nothing leaks when an assertion fails */

    (void)state;
    for (int json = 0; json <= 1; json++) {
        char path[] = "/tmp/test_util_req_XXXXXX";
        int fd = mkstemp(path);
        ssize_t n;
        pid_t pid;
        int status = 0;

        assert_true(fd >= 0);
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            long_req_id_child(json, path);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        n = pread(fd, out, sizeof(out) - 1, 0);
        close(fd);
        unlink(path);
        assert_true(n >= 0);
        out[n] = '\0';
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            print_error("json=%d: child died (status 0x%x); its stderr:\n%.2000s\n", json,
                        (unsigned)status, out);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_true(n > 0);
        assert_true(n <= 4096);
        assert_int_equal(count_char(out, '\n'), 1);
        assert_int_equal(out[n - 1], '\n');
        if (json) {
            cJSON *j = cJSON_Parse(out);

            assert_non_null(j);
            cJSON_Delete(j);
        }
    }
}

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

static void test_log_level_gate(void **state)
{
    struct capture c;
    int saved_level = log_level;
    char *out;

    (void)state;
    log_json = 0;
    log_level = LOG_INFO;
    evaluated = 0;
    capture_begin(&c);
    log_at(LOG_DEBUG, NULL, "debug %d", side_effect());
    out = capture_end(&c);
    assert_int_equal(evaluated, 0);
    assert_string_equal(out, "");
    free(out);
    capture_begin(&c);
    log_at(LOG_WARN, "rq", "warn %d", side_effect());
    out = capture_end(&c);
    assert_int_equal(evaluated, 1);
    assert_non_null(strstr(out, " WARN "));
    assert_non_null(strstr(out, "req=rq test_util.c: warn 1\n"));
    free(out);
    log_level = saved_level;
}

static void test_log_level_parse(void **state)
{
    static const struct {
        const char *s;
        int level;
    } cases[] = {
        {"error", LOG_ERROR},
        {"ERROR", LOG_ERROR},
        {"critical", LOG_ERROR},
        {"warning", LOG_WARN},
        {"warn", LOG_WARN},
        {"Warning", LOG_WARN},
        {"info", LOG_INFO},
        {"INFO", LOG_INFO},
        {"debug", LOG_DEBUG},
        {"notset", LOG_DEBUG},
        {"", -1},
        {"verbose", -1},
        {"inf", -1},
        {"info ", -1},
        {"3", -1},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        print_message("'%s'\n", cases[i].s);
        assert_int_equal(log_level_parse(cases[i].s), cases[i].level);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_many_small),
        cmocka_unit_test(test_arena_big),
        cmocka_unit_test(test_arena_calloc),
        cmocka_unit_test(test_arena_strings),
        cmocka_unit_test(test_arena_printf),
        cmocka_unit_test(test_arena_defer),
        cmocka_unit_test(test_buf_basic),
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_buf_printf_long),
        cmocka_unit_test(test_buf_consume),
        cmocka_unit_test(test_buf_take),
        cmocka_unit_test(test_prompt_render),
        cmocka_unit_test(test_prompt_render_long_value),
        cmocka_unit_test(test_prompt_table),
        cmocka_unit_test(test_prompt_override_dir),
        cmocka_unit_test(test_log_text),
        cmocka_unit_test(test_log_text_long_message),
        cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_log_json_long_message),
        cmocka_unit_test(test_log_long_req_id),
        cmocka_unit_test(test_log_level_gate),
        cmocka_unit_test(test_log_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
