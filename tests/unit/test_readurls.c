/* test_readurls.c: the SSRF address checks (every refused range, IPv4 embedded in IPv6, the
 * allow list), CIDR parsing, HTML to readable text (main content first, navigation and scripts
 * dropped, malformed HTML), fetch_readable's content types, and the readurls plugin on a fake
 * fetch transport (URLs found, fetched in one batch, spliced, budgets, failures leave the text
 * as it was, no upstream call). */
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
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "chat.h"
#include "config.h"
#include "fake_llm.h"
#include "fetch.h"
#include "log.h"
#include "prompt.h"

extern const struct approach approach_readurls;
#define THE_APPROACH approach_readurls

#include "script_env.h"

/* ---- the SSRF guard ------------------------------------------------------------------------- */

static bool allowed(const char *ip, const char *allow)
{
    struct sockaddr_storage ss;
    struct fetch_cidr list[8];
    int n = allow ? fetch_allow_parse(allow, list, 8) : 0;

    assert_true(n >= 0);
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return fetch_addr_allowed((struct sockaddr *)&ss, list, (size_t)n);
}

/* The addresses below are only classified (fetch_addr_allowed on a sockaddr): no test here
 * opens a socket to any of them. */
static void test_ssrf_ranges(void **state)
{
    static const char *const refused[] = {
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "192.168.255.255",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.0.170",
        "198.18.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd00:ec2::254",
        "fdff::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "ff00::",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.1.2.3",
        "::ffff:192.168.1.1",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
    };
    static const char *const public[] = {
        "8.8.8.8",        "1.1.1.1",          "172.15.255.255",  "172.32.0.1",
        "100.63.255.255", "100.128.0.1",      "169.253.255.255", "192.167.255.255",
        "11.0.0.1",       "223.255.255.255",  "2606:4700::1111", "2001:4860:4860::8888",
        "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(refused); i++) {
        if (allowed(refused[i], NULL))
            fail_msg("%s was allowed", refused[i]);
    }
    for (size_t i = 0; i < PX_ARRAY_LEN(public); i++) {
        if (!allowed(public[i], NULL))
            fail_msg("%s was refused", public[i]);
    }
}

static void test_ssrf_allow(void **state)
{
    struct fetch_cidr c[4];

    (void)state;
    assert_true(allowed("127.0.0.1", "127.0.0.0/8"));
    assert_true(allowed("::ffff:127.0.0.1", "127.0.0.0/8")); /* mapped: judged as IPv4 */
    assert_false(allowed("::1", "127.0.0.0/8"));
    assert_true(allowed("10.2.3.4", "192.168.0.0/16, 10.2.0.0/16"));
    assert_false(allowed("10.3.0.1", "10.2.0.0/16"));
    assert_true(allowed("fd12::5", "fd12::/16"));
    assert_false(allowed("fd13::5", "fd12::/16"));
    assert_true(allowed("169.254.169.254", "169.254.169.254")); /* a bare address: /32 */
    assert_false(allowed("169.254.169.253", "169.254.169.254"));
    assert_int_equal(fetch_allow_parse("10.0.0.0/8,,fd00::/8 ", c, 4), 2);
    assert_int_equal(c[0].bits, 8);
    assert_int_equal(c[1].family, AF_INET6);
    assert_int_equal(fetch_allow_parse("10.0.0.0/33", c, 4), -1);
    assert_int_equal(fetch_allow_parse("example.com/8", c, 4), -1);
    assert_int_equal(fetch_allow_parse("10.0.0.0/", c, 4), -1);
    assert_int_equal(fetch_allow_parse("::/129", c, 4), -1);
    assert_int_equal(fetch_allow_parse("1.0.0.0/8,2.0.0.0/8,3.0.0.0/8,4.0.0.0/8,5.0.0.0/8", c, 4),
                     -1);
    assert_int_equal(fetch_allow_parse("", c, 4), 0);
}

/* ---- HTML to text ------------------------------------------------------------------------- */

static void test_html(void **state)
{
    struct arena *a = arena_create();
    const char *t;
    static const char page[] =
        "<html><head><title>T</title><script>var x='SCRIPT';</script><style>p{}</style></head>"
        "<body><header>HEAD</header><nav>NAV</nav><div>OUTSIDE</div>"
        "<main><h1>Title</h1><p>First   para\n graph.</p><p>Second &amp; last.</p>"
        "<ul><li>one</li><li>two</li></ul><table><tr><th>A</th><th>B</th></tr>"
        "<tr><td>1</td><td>2</td></tr></table><aside>ASIDE</aside></main>"
        "<footer>FOOT</footer></body></html>";

    (void)state;
    t = html_to_text(a, page, strlen(page));
    assert_string_equal(t, "Title\nFirst para graph.\nSecond & last.\none\ntwo\nA | B\n1 | 2");
    /* footnote markers go, other brackets stay */
    {
        static const char fn[] = "<p>Paris[1] is big[23][4]. [a] [12x] [123456]</p>";

        t = html_to_text(a, fn, strlen(fn));
    }
    assert_string_equal(t, "Paris is big. [a] [12x] [123456]");
    /* no main element: the whole body, navigation still dropped */
    t = html_to_text(a, "<body><nav>N</nav><p>Body text</p><footer>F</footer></body>", 60);
    assert_string_equal(t, "Body text");
    /* role=main and an article win over the rest */
    t = html_to_text(a, "<div>x</div><div role=\"main\"><p>R</p></div>", 44);
    assert_string_equal(t, "R");
    /* malformed: unclosed tags, stray end tags, an unterminated script */
    static const char bad[] = "<p>open <b>bold <i>both</p></b></i><div><td>cell</div>"
                              "</span><p>after<script>never";

    t = html_to_text(a, bad, strlen(bad));
    assert_non_null(strstr(t, "open bold both"));
    assert_non_null(strstr(t, "after"));
    assert_null(strstr(t, "never"));
    assert_string_equal(html_to_text(a, "", 0), "");
    assert_non_null(html_to_text(a, "<<<>>>", 6)); /* libxml2 recovers somehow; no crash */
    /* UTF-8 without a charset declaration stays UTF-8 */
    t = html_to_text(a, "<p>caf\xc3\xa9 \xe2\x82\xac</p>", 17);
    assert_string_equal(t, "caf\xc3\xa9 \xe2\x82\xac");
    /* deep nesting does not crash */
    {
        size_t n = 20000;
        char *deep = malloc(n * 5 + 20);
        size_t len = 0;

        for (size_t i = 0; i < n; i++)
            len += (size_t)sprintf(deep + len, "<div>");
        len += (size_t)sprintf(deep + len, "DEEP");
        (void)html_to_text(a, deep, len);
        free(deep);
    }
    arena_destroy(a);
}

static void test_readable(void **state)
{
    struct arena *a = arena_create();
    const char *why;
    struct fetch_req r = {.status = PX_OK};

    (void)state;
    r.content_type = "text/html";
    r.body = "<p>hi</p>";
    r.len = 9;
    assert_string_equal(fetch_readable(a, &r, &why), "hi");
    r.content_type = "application/json";
    r.body = "{\"a\":1}";
    r.len = 7;
    assert_string_equal(fetch_readable(a, &r, &why), "{\"a\":1}");
    r.content_type = "application/ld+json";
    assert_string_equal(fetch_readable(a, &r, &why), "{\"a\":1}");
    r.content_type = "text/plain";
    r.body = "a\0b";
    r.len = 3;
    assert_null(fetch_readable(a, &r, &why));
    assert_string_equal(why, "binary content");
    r.content_type = "image/png";
    assert_null(fetch_readable(a, &r, &why));
    assert_non_null(strstr(why, "unsupported content type image/png"));
    r.content_type = "application/octet-stream";
    assert_null(fetch_readable(a, &r, &why));
    arena_destroy(a);
}

/* ---- the plugin on a fake fetch ----------------------------------------------------------- */

struct fake_page {
    const char *url, *ctype, *body;
    int status;
};

static const struct fake_page *g_pages;
static int g_batches;
static size_t g_last_n;
static struct fetch_limits g_lim;

static int fake_fetch(struct approach_ctx *ctx, struct fetch_req *reqs, size_t n,
                      const struct fetch_limits *lim)
{
    int ok = 0;

    (void)ctx;
    g_batches++;
    g_last_n = n;
    g_lim = *lim;
    for (size_t i = 0; i < n; i++) {
        reqs[i].status = PX_EHTTP;
        reqs[i].error = "not found";
        reqs[i].body = "";
        reqs[i].content_type = "";
        for (const struct fake_page *p = g_pages; p->url; p++) {
            if (strcmp(p->url, reqs[i].url) == 0) {
                reqs[i].status = p->status;
                reqs[i].content_type = p->ctype;
                reqs[i].body = p->body;
                reqs[i].len = strlen(p->body);
                ok += p->status == PX_OK;
            }
        }
    }
    return ok;
}

static const struct fake_page pages[] = {
    {"https://example.com/a", "text/html", "<nav>menu</nav><article><p>ALPHA page</p></article>",
     PX_OK},
    {"http://example.org/b?x=1", "text/plain", "BETA text", PX_OK},
    {"https://example.net/bin", "application/octet-stream", "x", PX_OK},
    {"https://refused.test/", "", "", PX_EINVAL},
    {"https://long.test/", "text/plain",
     "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
     "890123456789012345678901234567890123456789",
     PX_OK},
    {NULL, NULL, NULL, 0},
};

static int prepare(struct env *e, struct chat_request *next)
{
    struct approach_post post = {0};

    *next = e->req;
    return THE_APPROACH.prepare(&e->ctx, next, &post);
}

static void test_plugin(void **state)
{
    const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct chat_request next;
    struct env e;

    (void)state;
    g_pages = pages;
    g_batches = 0;
    fetch_set_transport(fake_fetch);
    env_init(&e,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"see "
             "https://example.com/a\"},{\"role\":\"user\",\"content\":\"Compare "
             "https://example.com/a, (http://example.org/b?x=1) and https://example.net/bin and "
             "https://refused.test/.\"},{\"role\":\"assistant\",\"content\":\"ok\"},"
             "{\"role\":\"user\",\"content\":\"again https://example.com/a\"}]}",
             rows);
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_int_equal(g_batches, 1); /* one batch, all at once */
    assert_int_equal(g_last_n, 4);  /* distinct URLs of user messages only */
    assert_int_equal(g_lim.max_redirects, 5);
    assert_int_equal(g_lim.max_bytes, 2097152);
    assert_true(fabs(g_lim.timeout - 10) < 1e-9);
    assert_null(g_lim.allow);
    assert_int_equal(next.nmsgs, 4);
    assert_string_equal(next.msgs[0].content, "see https://example.com/a"); /* system untouched */
    assert_string_equal(next.msgs[1].content,
                        "Compare https://example.com/a [Content from example.com: ALPHA page], "
                        "(http://example.org/b?x=1 [Content from example.org: BETA text]) and "
                        "https://example.net/bin and https://refused.test/.");
    assert_null(next.msgs[1].raw);
    assert_string_equal(next.msgs[3].content, "again https://example.com/a");
    assert_int_equal(e.fake.ncalls, 0); /* no upstream call */
    assert_int_equal(e.ctx.usage.calls, 0);
    env_cleanup(&e);
    fetch_set_transport(NULL);
}

static void test_budgets_and_nothing(void **state)
{
    const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct chat_request next;
    struct env e;

    (void)state;
    g_pages = pages;
    g_batches = 0;
    fetch_set_transport(fake_fetch);
    /* per-URL budget */
    env_init(&e,
             "{\"model\":\"m\",\"optillm_readurls_url_bytes\":100,\"messages\":[{\"role\":"
             "\"user\",\"content\":\"https://long.test/ https://example.org/b?x=1\"}]}",
             rows);
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_non_null(strstr(next.msgs[0].content, "567890123456789...]"));
    env_cleanup(&e);
    /* the total budget: the second page does not fit */
    env_init(&e,
             "{\"model\":\"m\",\"optillm_readurls_total_bytes\":120,\"messages\":[{\"role\":"
             "\"user\",\"content\":\"https://long.test/ https://example.com/a\"}]}",
             rows);
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_null(strstr(next.msgs[0].content, "ALPHA"));
    assert_int_equal(fake_count(next.msgs[0].content, "[Content from"), 1);
    env_cleanup(&e);
    /* the URL cap */
    env_init(&e,
             "{\"model\":\"m\",\"optillm_readurls_max_urls\":1,\"messages\":[{\"role\":"
             "\"user\",\"content\":\"https://example.com/a https://example.org/b?x=1\"}]}",
             rows);
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_int_equal(g_last_n, 1);
    env_cleanup(&e);
    /* no URL: no fetch, the request unchanged */
    g_batches = 0;
    env_init(&e,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"no links "
             "httpx://a http:// ftp://x.y\"}]}",
             rows);
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_int_equal(g_batches, 0);
    assert_ptr_equal(next.msgs, e.req.msgs);
    env_cleanup(&e);
    /* a multi-part message keeps its parts and gets the pages in a message after it */
    env_init(&e,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
             "\"text\":\"read https://example.com/a\"},{\"type\":\"image_url\",\"image_url\":"
             "{\"url\":\"data:image/png;base64,AA==\"}}]}]}",
             rows);
    assert_int_equal(prepare(&e, &next), PX_OK);
    assert_int_equal(next.nmsgs, 2);
    assert_non_null(next.msgs[0].raw);
    assert_string_equal(next.msgs[1].content,
                        "https://example.com/a [Content from example.com: ALPHA page]");
    env_cleanup(&e);
    fetch_set_transport(NULL);
}

/* The real transport refuses before any connection: bad schemes, the metadata address, a
 * loopback name, and an unreachable public address is only a failure (no 500). */
static void test_real_refusals(void **state)
{
    const struct row rows[] = {{NULL, NULL, NULL, NULL}};
    struct env e;
    struct fetch_req r[5] = {
        {.url = "http://169.254.169.254/latest/meta-data/"},
        {.url = "http://localhost:1/"},
        {.url = "http://[::1]:1/"},
        {.url = "ftp://example.com/"},
        {.url = "http://[fd00:ec2::254]/"},
    };
    struct fetch_limits lim = {.max_bytes = 1024, .timeout = 2, .max_redirects = 5};

    (void)state;
    fetch_set_transport(NULL);
    env_init(&e, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", rows);
    assert_int_equal(fetch_batch(&e.ctx, r, 5, &lim), 0);
    for (size_t i = 0; i < 5; i++) {
        assert_true(r[i].refused);
        assert_int_equal(r[i].http_status, 0);
        assert_non_null(strstr(r[i].error, "refused"));
    }
    env_cleanup(&e);
}

/* --readurls-allow: repeatable, appended; the env's comma list first; a bad CIDR stops the
 * start-up; --memory-file is kept. */
static int load(struct config *cfg, int argc, char **argv)
{
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY), rc;

    dup2(devnull, 2);
    close(devnull);
    rc = config_load(cfg, argc, argv);
    dup2(saved, 2);
    close(saved);
    return rc;
}

static void test_config_allow(void **state)
{
    struct config cfg;
    char *ok[] = {"optillm",  "--readurls-allow", "10.0.0.0/8",   "--readurls-allow",
                  "fd00::/8", "--memory-file",    "/tmp/m.jsonl", NULL};
    char *bad[] = {"optillm", "--readurls-allow", "10.0.0.0/40", NULL};
    char *none[] = {"optillm", NULL};

    (void)state;
    setenv("OPTILLM_READURLS_ALLOW", "127.0.0.0/8,::1", 1);
    assert_int_equal(load(&cfg, 7, ok), 0);
    assert_string_equal(cfg.readurls_allow, "127.0.0.0/8,::1,10.0.0.0/8,fd00::/8");
    assert_string_equal(cfg.memory_file, "/tmp/m.jsonl");
    config_cleanup(&cfg);
    assert_int_equal(load(&cfg, 3, bad), -1);
    config_cleanup(&cfg);
    unsetenv("OPTILLM_READURLS_ALLOW");
    assert_int_equal(load(&cfg, 1, none), 0);
    assert_string_equal(cfg.readurls_allow, "");
    assert_null(cfg.memory_file);
    config_cleanup(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ssrf_ranges),   cmocka_unit_test(test_ssrf_allow),
        cmocka_unit_test(test_html),          cmocka_unit_test(test_readable),
        cmocka_unit_test(test_plugin),        cmocka_unit_test(test_budgets_and_nothing),
        cmocka_unit_test(test_real_refusals), cmocka_unit_test(test_config_allow),
    };

    return cmocka_run_group_tests(tests, env_group_setup, env_group_teardown);
}
