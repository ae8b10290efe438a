/* itest_readurls.c: readurls through the real proxy, with the mock's pages (GET /page/...) as
 * the web: a page allowed by --readurls-allow reaches the upstream as text (navigation and
 * scripts dropped); without the allow list loopback, a name resolving to loopback, private
 * and metadata addresses are refused before any connection (the mock's page log shows no
 * fetch); a redirect into a refused range is refused; redirect chains, loops, a hanging URL,
 * 50 MB, binary and malformed pages each have a clear outcome and never a 500;
 * readurls&memory end to end; memory and longcepo on 1 MB contexts. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct proc mock, open_px, strict_px;
static const char *const key_env[] = {"OPENAI_API_KEY=sk-test", NULL};

static int setup(void **state)
{
    static const char *const allow[] = {"--readurls-allow", "127.0.0.0/8", NULL};

    (void)state;
    harness_deadline(240);
    if (mock_start(&mock, NULL) != 0)
        return -1;
    if (proxy_start(&open_px, mock.port, allow, key_env) != 0)
        return -1;
    return proxy_start(&strict_px, mock.port, NULL, key_env);
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&open_px);
    proc_stop(&strict_px);
    return proc_stop(&mock) == 0 ? 0 : -1;
}

static long page_fetches(void)
{
    cJSON *j = mock_get(mock.port, "/mock/pages");
    long n = j ? (long)cJSON_GetObjectItemCaseSensitive(j, "fetches")->valuedouble : -1;

    cJSON_Delete(j);
    return n;
}

/* The text of every message of upstream call 'i' (from the end: -1 = the last), malloc'd. */
static char *upstream_text(int i)
{
    cJSON *log = mock_get(mock.port, "/mock/requests");
    int n = cJSON_GetArraySize(log);
    cJSON *req = cJSON_GetArrayItem(log, i < 0 ? n + i : i);
    cJSON *msgs =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(req, "body"), "messages");
    char *s = cJSON_PrintUnformatted(msgs ? msgs : cJSON_CreateNull());

    cJSON_Delete(log);
    return s;
}

/* POSTs a question linking 'url' to proxy p with model; returns the status. */
static long ask(const struct proc *p, const char *model, const char *url, const char *extra,
                struct http_resp *r)
{
    char content[512];
    char *body;
    long st;

    snprintf(content, sizeof(content), "Summarise %s please.", url);
    body = chat_body(model, content, extra);
    assert_int_equal(http_req("POST", p->port, "/v1/chat/completions", body, NULL, r), 0);
    free(body);
    st = r->status;
    return st;
}

static char *page(const char *name)
{
    static char buf[8][256];
    static int k;
    char *b = buf[k++ % 8];

    snprintf(b, 256, "http://127.0.0.1:%d/page/%s", mock.port, name);
    return b;
}

static void test_allowed_page(void **state)
{
    struct http_resp r;
    char *t;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("article"), NULL, &r), 200);
    http_resp_free(&r);
    assert_int_equal(page_fetches(), 1);
    assert_int_equal(mock_stat(mock.port, "calls"), 1); /* one plain completion */
    t = upstream_text(-1);
    assert_non_null(strstr(t, "[Content from 127.0.0.1: Zebras"));
    assert_non_null(strstr(t, "ZEBRA-STRIPES-42"));
    assert_non_null(strstr(t, "plains | 42"));
    assert_null(strstr(t, "NAV-TEXT"));
    assert_null(strstr(t, "SCRIPT-TEXT"));
    assert_null(strstr(t, "FOOTER-TEXT"));
    assert_null(strstr(t, "ASIDE-TEXT"));
    free(t);
    /* text and JSON pages as they are; a redirect chain followed */
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("text"), NULL, &r), 200);
    http_resp_free(&r);
    t = upstream_text(-1);
    assert_non_null(strstr(t, "TEXT-PAGE-7"));
    free(t);
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("redirect/3"), NULL, &r), 200);
    http_resp_free(&r);
    assert_int_equal(page_fetches(), 5); /* redirect/3, /2, /1, /0, article */
    t = upstream_text(-1);
    assert_non_null(strstr(t, "ZEBRA-STRIPES-42"));
    free(t);
}

/* Without --readurls-allow: refused before any connection, the text left as it was. */
static void test_refused(void **state)
{
    char url[256];
    const char *const refused[] = {
        page("article"),
        NULL, /* localhost, filled below */
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://0.0.0.0/", /* refused like any private range; a broken guard stays on host */
        "http://[::1]/x",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]/",
    };

    (void)state;
    snprintf(url, sizeof(url), "http://localhost:%d/page/article", mock.port);
    for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
        const char *u = refused[i] ? refused[i] : url;
        struct http_resp r;
        char *t;

        mock_reset(mock.port);
        assert_int_equal(ask(&strict_px, "readurls-mock-model", u, NULL, &r), 200);
        assert_true(r.total_s < 3.0 + harness_slack()); /* no connection attempt to wait for */
        http_resp_free(&r);
        assert_int_equal(page_fetches(), 0);
        t = upstream_text(-1);
        assert_null(strstr(t, "[Content from"));
        assert_non_null(strstr(t, u));
        free(t);
    }
    assert_true(file_contains(strict_px.log, "refused: localhost resolves to 127.0.0.1"));
    assert_true(file_contains(strict_px.log, "169.254.169.254"));
}

/* Allowed loopback, but a redirect into a refused range: the first hop is fetched, the second
 * refused; loops stop after 5 hops. */
static void test_redirects(void **state)
{
    struct http_resp r;
    char *t;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("to/169.254.169.254"), NULL, &r),
                     200);
    http_resp_free(&r);
    assert_int_equal(page_fetches(), 1);
    t = upstream_text(-1);
    assert_null(strstr(t, "[Content from"));
    free(t);
    mock_reset(mock.port);
    /* into "this network" (refused; were it not, the connection would stay on this host): */
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("to/0.0.0.0"), NULL, &r), 200);
    http_resp_free(&r);
    assert_int_equal(page_fetches(), 1);
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("loop"), NULL, &r), 200);
    http_resp_free(&r);
    assert_int_equal(page_fetches(), 6); /* the URL and 5 redirects */
    t = upstream_text(-1);
    assert_null(strstr(t, "[Content from"));
    free(t);
    assert_true(file_contains(open_px.log, "more than 5 redirects"));
}

/* A hanging URL, 50 MB, binary and malformed pages. */
static void test_bad_pages(void **state)
{
    struct http_resp r;
    char *t;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(
        ask(&open_px, "readurls-mock-model", page("hang"), "\"optillm_readurls_timeout\":1", &r),
        200);
    assert_true(r.total_s < 4.0 + harness_slack());
    http_resp_free(&r);
    t = upstream_text(-1);
    assert_null(strstr(t, "[Content from"));
    free(t);

    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("huge"), NULL, &r), 200);
    assert_true(r.total_s < 10.0 + harness_slack());
    http_resp_free(&r);
    t = upstream_text(-1);
    assert_non_null(strstr(t, "[Content from 127.0.0.1: aaaa"));
    assert_true(strlen(t) < 110000); /* cut to readurls_url_bytes (100000) */
    free(t);
    assert_true(file_contains(open_px.log, "(body capped)"));

    const char *const unreadable[] = {"binary", "nul"};

    for (size_t i = 0; i < 2; i++) {
        mock_reset(mock.port);
        assert_int_equal(ask(&open_px, "readurls-mock-model", page(unreadable[i]), NULL, &r), 200);
        http_resp_free(&r);
        assert_int_equal(page_fetches(), 1);
        t = upstream_text(-1);
        assert_null(strstr(t, "[Content from"));
        free(t);
    }
    assert_true(file_contains(open_px.log, "unsupported content type application/octet-stream"));
    assert_true(file_contains(open_px.log, "binary content"));

    /* PDF through pdftotext (poppler-utils, in scripts/deps.sh); a broken PDF is skipped */
    if (system("command -v pdftotext >/dev/null 2>&1") == 0) {
        mock_reset(mock.port);
        assert_int_equal(ask(&open_px, "readurls-mock-model", page("pdf"), NULL, &r), 200);
        http_resp_free(&r);
        t = upstream_text(-1);
        assert_non_null(strstr(t, "[Content from 127.0.0.1: PDF-TEXT-5 inside"));
        free(t);
    } else {
        fprintf(stderr, "pdftotext missing: the PDF case is not run\n");
    }
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("badpdf"), NULL, &r), 200);
    http_resp_free(&r);
    t = upstream_text(-1);
    assert_null(strstr(t, "[Content from"));
    free(t);

    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls-mock-model", page("malformed"), NULL, &r), 200);
    http_resp_free(&r);
    t = upstream_text(-1);
    assert_non_null(strstr(t, "MALFORMED-OK"));
    assert_null(strstr(t, "unterminated"));
    free(t);
}

/* OptiLLM's FRAMES recipe: readurls&memory; the page reaches memory's extract call. Also
 * streamed, and as optillm_approach. */
static void test_pipeline(void **state)
{
    struct http_resp r;
    char *t;

    (void)state;
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls&memory-mock-model", page("article"), NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"content\":\"mock reply"));
    http_resp_free(&r);
    assert_int_equal(page_fetches(), 1);
    assert_int_equal(mock_stat(mock.port, "calls"), 2); /* extract (one chunk) + final */
    t = upstream_text(0);
    assert_non_null(strstr(t, "ZEBRA-STRIPES-42"));
    assert_non_null(strstr(t, "<part>"));
    free(t);

    /* any approach after the plugin runs on the prepared request */
    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "readurls&moa-mock-model", page("article"), NULL, &r), 200);
    http_resp_free(&r);
    assert_int_equal(page_fetches(), 1);
    assert_int_equal(mock_stat(mock.port, "calls"), 3); /* moa's drafts, critique, synthesis */
    for (int i = 0; i < 3; i++) {
        t = upstream_text(i);
        assert_non_null(strstr(t, "ZEBRA-STRIPES-42"));
        free(t);
    }

    mock_reset(mock.port);
    assert_int_equal(ask(&open_px, "mock-model", page("text"),
                         "\"optillm_approach\":\"readurls\",\"stream\":true", &r),
                     200);
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
    t = upstream_text(-1);
    assert_non_null(strstr(t, "TEXT-PAGE-7"));
    free(t);
}

/* Contexts of 1 MB through the proxy: memory (about 11 chunks at 25000 tokens, examined at
 * once) and longcepo (about 64 chunks of 4096 tokens); usage is the sum of every call. */
static void test_one_megabyte(void **state)
{
    const char *const models[] = {"memory-mock-model@latency=300",
                                  "longcepo-mock-model@latency=300"};
    size_t n = 1 << 20;
    char *content = malloc(n + 64);

    (void)state;
    assert_non_null(content);
    for (size_t i = 0; i < n; i++)
        content[i] = i % 100 == 99 ? '\n' : "lorem ipsum "[i % 12];
    snprintf(content + n, 64, "Query: what is it?");
    for (int m = 0; m < 2; m++) {
        struct http_resp r;
        char *body = chat_body(models[m], content, NULL);
        cJSON *j, *u;

        mock_reset(mock.port);
        assert_int_equal(http_req("POST", open_px.port, "/v1/chat/completions", body, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        j = http_json(&r);
        u = cJSON_GetObjectItemCaseSensitive(j, "usage");
        assert_int_equal((long)cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens")->valuedouble,
                         mock_stat(mock.port, "prompt_tokens"));
        fprintf(stderr, "%s on 1 MB: %ld calls, %.2f s, peak %ld at once\n", models[m],
                mock_stat(mock.port, "calls"), r.total_s, mock_stat(mock.port, "peak_concurrency"));
        if (m == 0) {
            assert_true(mock_stat(mock.port, "calls") >= 11);
            assert_true(mock_stat(mock.port, "calls") <= 13);
        } else {
            assert_true(mock_stat(mock.port, "calls") >= 2 + 2 * 60);
        }
        /* chunks at once (sequential would be 1; sanitizer builds build the bodies slowly) */
        assert_true(mock_stat(mock.port, "peak_concurrency") >= 4);
        cJSON_Delete(j);
        http_resp_free(&r);
        free(body);
    }
    free(content);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowed_page), cmocka_unit_test(test_refused),
        cmocka_unit_test(test_redirects),    cmocka_unit_test(test_bad_pages),
        cmocka_unit_test(test_pipeline),     cmocka_unit_test(test_one_megabyte),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
