/* test_eval_report.c: unit tests of results.jsonl records (round trip, torn last line, keyed
 * set) and of the report: the numbers per approach, the pairing against the baseline, and the
 * JSON, CSV, Markdown and SVG outputs. */
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

#include "../../eval/dataset.c"
#include "../../eval/report.c"
#include "../../eval/results.c"
#include "../../eval/stats.c"

static struct result rec(const char *id, const char *approach, bool correct, const char *error,
                         double latency, long pt, long ct)
{
    struct result r = {0};

    r.id = id;
    r.approach = approach;
    r.correct = correct;
    r.extracted = correct ? "1" : "2";
    r.expected = "1";
    r.type = "number";
    r.error = error;
    r.latency_ms = latency;
    r.upstream_calls = -1;
    r.prompt_tokens = pt;
    r.completion_tokens = ct;
    r.status = error ? 500 : 200;
    r.attempts = 1;
    return r;
}

/* 10 items: "none" right on items 0-3; "sc" right on 0-7 except 2 (a loss), item 9 an error;
 * "bon&moa" only on items 0-4, all right. */
static void fill(struct results_set *s)
{
    char id[16];

    for (int i = 0; i < 10; i++) {
        struct result r;

        snprintf(id, sizeof(id), "q%d", i);
        r = rec(id, "none", i < 4, NULL, 10.0 * (i + 1), 50, 10);
        assert_true(results_set_add(s, &r));
        r = rec(id, "sc", i < 8 && i != 2, i == 9 ? "HTTP 500: boom" : NULL, 100, 50,
                i == 9 ? -1 : 60);
        assert_true(results_set_add(s, &r));
        if (i < 5) {
            r = rec(id, "bon&moa", true, NULL, 300, 400, 90);
            assert_true(results_set_add(s, &r));
        }
    }
}

static void test_set(void **state)
{
    struct results_set s;
    struct result r = rec("a", "none", true, NULL, 1, 1, 1);

    (void)state;
    results_set_init(&s);
    assert_null(results_find(&s, "a", "none"));
    assert_true(results_set_add(&s, &r));
    assert_false(results_set_add(&s, &r));
    r.approach = "moa";
    assert_true(results_set_add(&s, &r));
    assert_non_null(results_find(&s, "a", "none"));
    assert_non_null(results_find(&s, "a", "moa"));
    assert_null(results_find(&s, "b", "moa"));
    assert_int_equal(s.napproaches, 2);
    /* growth keeps every key */
    for (int i = 0; i < 5000; i++) {
        char id[16];

        snprintf(id, sizeof(id), "x%d", i);
        r.id = id;
        assert_true(results_set_add(&s, &r));
    }
    assert_non_null(results_find(&s, "x4999", "moa"));
    assert_non_null(results_find(&s, "x0", "moa"));
    assert_int_equal(s.n, 5002);
    results_set_cleanup(&s);
}

static void test_line_round_trip(void **state)
{
    struct result r = rec("id \"7\"", "bon&moa", false, "HTTP 429: slow\ndown", 12.6, -1, 30);
    struct result back;
    struct arena *a = arena_create();
    char *line;

    (void)state;
    r.upstream_calls = 4;
    r.response = "line one\nline two";
    line = results_line(&r);
    assert_int_equal(line[strlen(line) - 1], '\n');
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1); /* one line */
    assert_non_null(strstr(line, "\"prompt_tokens\":null"));
    assert_non_null(strstr(line, "\"latency_ms\":13"));
    assert_int_equal(results_parse_line(a, line, strlen(line), &back), 0);
    assert_string_equal(back.id, "id \"7\"");
    assert_string_equal(back.approach, "bon&moa");
    assert_false(back.correct);
    assert_string_equal(back.error, "HTTP 429: slow\ndown");
    assert_string_equal(back.extracted, "2");
    assert_int_equal(back.upstream_calls, 4);
    assert_int_equal(back.prompt_tokens, -1);
    assert_int_equal(back.completion_tokens, 30);
    assert_int_equal(back.status, 500);
    free(line);
    /* incomplete records */
    assert_int_equal(results_parse_line(a, "{\"id\":\"a\"}", 10, &back), -1);
    assert_int_equal(results_parse_line(a, "{\"id\":\"a\",\"approach\":\"x\"", 25, &back), -1);
    arena_destroy(a);
}

static void test_read_torn(void **state)
{
    char path[] = "/tmp/test_eval_results_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    struct results_set s;
    char *errs = NULL;
    size_t errs_len = 0, added;
    FILE *e;
    long size_before_tail;

    (void)state;
    assert_non_null(f);
    for (int i = 0; i < 3; i++) {
        struct result r = rec(i == 2 ? "a" : (i ? "b" : "a"), "none", true, NULL, 1, 1, 1);
        char *line = results_line(&r);

        fputs(line, f);
        free(line);
        if (i == 0)
            fputs("garbage in the middle\n", f);
    }
    size_before_tail = ftell(f);
    fputs("{\"id\":\"c\",\"approach\":\"none\",\"cor", f); /* killed mid-write */
    fclose(f);

    results_set_init(&s);
    e = open_memstream(&errs, &errs_len);
    assert_int_equal(results_read(path, true, e, &s, &added), 0);
    fclose(e);
    assert_int_equal(added, 2);
    assert_int_equal(s.n, 2);
    assert_non_null(strstr(errs, ":2: not a result line; ignored"));
    assert_non_null(strstr(errs, ":4: duplicate"));
    assert_non_null(strstr(errs, ":5: incomplete last line"));
    free(errs);
    results_set_cleanup(&s);
    /* the torn line is gone; everything before it stays */
    f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    assert_int_equal(ftell(f), size_before_tail);
    fclose(f);
    /* a missing file is an empty set */
    unlink(path);
    results_set_init(&s);
    assert_int_equal(results_read(path, true, stderr, &s, &added), 0);
    assert_int_equal(s.n, 0);
    results_set_cleanup(&s);
}

static const struct report_row *row(const struct report *r, const char *name)
{
    for (size_t i = 0; i < r->nrows; i++)
        if (strcmp(r->rows[i].approach, name) == 0)
            return &r->rows[i];
    fail();
    return NULL;
}

static void test_build(void **state)
{
    struct results_set s;
    struct report r;
    static const char *const order[] = {"none", "missing", "sc"};
    const struct report_row *w;

    (void)state;
    results_set_init(&s);
    fill(&s);
    report_build(&s, order, 3, NULL, NULL, &r);
    assert_int_equal(r.items, 10);
    assert_int_equal(r.results, 25);
    assert_int_equal(r.nrows, 3);
    /* requested order first, then the rest as first seen */
    assert_string_equal(r.rows[0].approach, "none");
    assert_string_equal(r.rows[1].approach, "sc");
    assert_string_equal(r.rows[2].approach, "bon&moa");
    assert_string_equal(r.baseline, "none");

    w = row(&r, "none");
    assert_int_equal(w->items, 10);
    assert_int_equal(w->correct, 4);
    assert_int_equal(w->errors, 0);
    assert_true(fabs(w->accuracy - 0.4) < 1e-12);
    assert_true(fabs(w->latency_mean_ms - 55) < 1e-9);
    assert_true(w->latency_p95_ms == 100);
    assert_true(isnan(w->calls_per_item));
    assert_true(fabs(w->prompt_per_item - 50) < 1e-9);
    assert_false(w->paired_set);

    w = row(&r, "sc");
    assert_int_equal(w->items, 10);
    assert_int_equal(w->correct, 7);
    assert_int_equal(w->errors, 1);
    assert_true(fabs(w->accuracy - 0.7) < 1e-12);
    assert_true(fabs(w->accuracy_answered - 7.0 / 9) < 1e-12);
    assert_true(fabs(w->completion_per_item - 60) < 1e-9); /* the error is left out */
    assert_true(w->paired_set);
    assert_int_equal(w->paired, 10);
    assert_int_equal(w->wins, 4);   /* items 4-7 */
    assert_int_equal(w->losses, 1); /* item 2 */
    assert_int_equal(w->both, 3);
    assert_int_equal(w->neither, 2);
    assert_true(fabs(w->mcnemar_p - 0.375) < 1e-12);
    {
        double lo, hi;

        stats_wilson(7, 10, STATS_Z95, &lo, &hi);
        assert_true(w->ci_lo == lo && w->ci_hi == hi);
    }

    w = row(&r, "bon&moa");
    assert_int_equal(w->paired, 5);
    assert_int_equal(w->wins, 1);
    assert_int_equal(w->losses, 0);
    report_cleanup(&r);

    /* an explicit baseline */
    report_build(&s, order, 3, "sc", NULL, &r);
    assert_string_equal(r.baseline, "sc");
    assert_false(row(&r, "sc")->paired_set);
    assert_int_equal(row(&r, "none")->wins, 1);
    assert_int_equal(row(&r, "none")->losses, 4);
    report_cleanup(&r);
    results_set_cleanup(&s);
}

static void test_formats(void **state)
{
    struct results_set s;
    struct report r;
    struct report_meta m = {.model = "gpt-x <1>", .dataset = "d.jsonl", .skipped_lines = 2};
    struct buf b;
    cJSON *j;
    const cJSON *rows, *sc;

    (void)state;
    results_set_init(&s);
    fill(&s);
    report_build(&s, NULL, 0, NULL, &m, &r);

    buf_init(&b, 0);
    report_json(&r, &b);
    j = cJSON_Parse(buf_cstr(&b));
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "baseline")->valuestring, "none");
    assert_int_equal(cJSON_GetObjectItem(j, "items")->valueint, 10);
    assert_int_equal(cJSON_GetObjectItem(j, "dataset_lines_skipped")->valueint, 2);
    rows = cJSON_GetObjectItem(j, "approaches");
    assert_int_equal(cJSON_GetArraySize(rows), 3);
    sc = cJSON_GetArrayItem(rows, 1);
    assert_string_equal(cJSON_GetObjectItem(sc, "approach")->valuestring, "sc");
    assert_int_equal(cJSON_GetObjectItem(sc, "correct")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(sc, "errors")->valueint, 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(sc, "upstream_calls_per_item")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(sc, "accuracy_ci95")), 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(sc, "vs_baseline"), "wins")->valueint,
                     4);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "vs_baseline")));
    cJSON_Delete(j);
    buf_free(&b);

    buf_init(&b, 0);
    report_csv(&r, &b);
    {
        int lines = 0;

        for (const char *p = buf_cstr(&b); *p; p++)
            lines += *p == '\n';
        assert_int_equal(lines, 4);
    }
    assert_non_null(strstr(buf_cstr(&b), "\nsc,10,7,1,0.7000,"));
    assert_non_null(strstr(buf_cstr(&b), "\nbon&moa,5,5,0,1.0000,"));
    assert_null(strstr(buf_cstr(&b), "n/a")); /* unknowns are empty cells */
    buf_free(&b);

    buf_init(&b, 0);
    report_markdown(&r, &b);
    assert_non_null(strstr(buf_cstr(&b), "| none (baseline) | 40.0% |"));
    assert_non_null(strstr(buf_cstr(&b), "| sc | 10 | 4 | 1 | 3 | 2 | +30.0% | 0.375 |"));
    assert_non_null(strstr(buf_cstr(&b), "| dataset lines skipped | 2 "));
    assert_non_null(strstr(buf_cstr(&b), "](report.svg)"));
    buf_free(&b);

    buf_init(&b, 0);
    report_svg(&r, &b);
    assert_int_equal(strncmp(buf_cstr(&b), "<svg ", 5), 0);
    assert_non_null(strstr(buf_cstr(&b), "</svg>\n"));
    assert_non_null(strstr(buf_cstr(&b), "bon&amp;moa"));
    assert_non_null(strstr(buf_cstr(&b), "gpt-x &lt;1&gt;"));
    assert_null(strstr(buf_cstr(&b), "bon&moa"));
    assert_null(strstr(buf_cstr(&b), "nan"));
    buf_free(&b);
    report_cleanup(&r);
    results_set_cleanup(&s);
}

static void test_empty_and_write(void **state)
{
    struct results_set s;
    struct report r;
    struct buf b;
    char dir[] = "/tmp/test_eval_report_XXXXXX";
    static const char *const names[] = {"report.json", "report.md", "report.csv", "report.svg",
                                        "cost_accuracy.svg"};

    (void)state;
    results_set_init(&s);
    report_build(&s, NULL, 0, "none", NULL, &r);
    assert_int_equal(r.nrows, 0);
    assert_null(r.baseline);
    buf_init(&b, 0);
    report_json(&r, &b);
    report_markdown(&r, &b);
    report_csv(&r, &b);
    report_svg(&r, &b);
    buf_free(&b);
    report_cleanup(&r);

    fill(&s);
    report_build(&s, NULL, 0, NULL, NULL, &r);
    assert_non_null(mkdtemp(dir));
    assert_int_equal(report_write(&r, dir, stderr), 0);
    for (size_t i = 0; i < PX_ARRAY_LEN(names); i++) {
        char path[256];

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        assert_int_equal(access(path, R_OK), 0);
        unlink(path);
    }
    rmdir(dir);
    /* an unwritable folder is an error, not a crash */
    {
        FILE *devnull = fopen("/dev/null", "w");

        assert_int_equal(report_write(&r, "/nonexistent/dir", devnull), -1);
        fclose(devnull);
    }
    report_cleanup(&r);
    results_set_cleanup(&s);
}

/* The Pareto front over (tokens, accuracy) and the cost-accuracy chart. */
static void test_pareto_and_cost_chart(void **state)
{
    /* approach, prompt, completion tokens per item, accuracy */
    static const struct {
        const char *name;
        double pt, ct, acc;
        bool front;
    } rows[] = {
        {"none", 40, 10, 0.60, true},         /* cheapest */
        {"sc-adaptive", 90, 55, 0.91, true},  /* more accurate than none, cheaper than sc */
        {"sc-fixed", 49, 130, 0.91, false},   /* as accurate, more tokens: dominated */
        {"mv", 49, 150, 0.95, true},          /* most accurate */
        {"bon", 200, 60, 0.80, false},        /* dominated by sc-adaptive */
        {"moa", 300, 100, 0.95, false},       /* as accurate as mv, more tokens */
        {"no-usage", NAN, NAN, 0.99, false},  /* no token counts: never on the front */
        {"same-as-none", 40, 10, 0.60, true}, /* a tie: neither dominates */
    };
    struct report_row rr[PX_ARRAY_LEN(rows)];
    struct report r = {.rows = rr, .nrows = PX_ARRAY_LEN(rows), .items = 100};
    bool front[PX_ARRAY_LEN(rows)];
    struct buf b;
    const char *svg;
    size_t circles = 0, filled = 0;

    (void)state;
    memset(rr, 0, sizeof(rr));
    for (size_t i = 0; i < PX_ARRAY_LEN(rows); i++) {
        rr[i].approach = rows[i].name;
        rr[i].prompt_per_item = rows[i].pt;
        rr[i].completion_per_item = rows[i].ct;
        rr[i].accuracy = rows[i].acc;
        rr[i].items = 100;
        rr[i].correct = (long)(rows[i].acc * 100 + 0.5);
        stats_wilson(rr[i].correct, 100, STATS_Z95, &rr[i].ci_lo, &rr[i].ci_hi);
    }
    assert_int_equal(report_pareto(&r, front), 4);
    for (size_t i = 0; i < PX_ARRAY_LEN(rows); i++)
        if (front[i] != rows[i].front)
            fail_msg("%s: front %d, want %d", rows[i].name, front[i], rows[i].front);
    assert_true(isnan(report_tokens(&rr[6])));
    assert_true(report_tokens(&rr[1]) == 145);

    buf_init(&b, 0);
    report_cost_svg(&r, &b);
    svg = buf_cstr(&b);
    assert_int_equal(strncmp(svg, "<svg ", 5), 0);
    assert_non_null(strstr(svg, "</svg>\n"));
    for (const char *p = svg; (p = strstr(p, "<circle ")); p++) {
        circles++;
        filled += strncmp(p, "<circle class=\"point pareto\"", 28) == 0;
    }
    assert_int_equal(circles, 7); /* no-usage is left out */
    assert_int_equal(filled, 4);
    assert_non_null(strstr(svg, "<title>sc-adaptive: 91.0%, 145 tokens</title>"));
    assert_non_null(strstr(svg, "<polyline class=\"pareto\""));
    assert_non_null(strstr(svg, "1 approach without token counts not shown"));
    assert_null(strstr(svg, "no-usage"));
    assert_null(strstr(svg, "nan"));
    buf_free(&b);

    /* the JSON marks the front */
    buf_init(&b, 0);
    report_json(&r, &b);
    {
        cJSON *j = cJSON_Parse(buf_cstr(&b));
        const cJSON *a = cJSON_GetObjectItem(j, "approaches");

        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 1), "pareto_front")));
        assert_true(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 2), "pareto_front")));
        cJSON_Delete(j);
    }
    buf_free(&b);

    /* no rows, or no tokens at all: a chart without points, no crash */
    r.nrows = 0;
    buf_init(&b, 0);
    report_cost_svg(&r, &b);
    assert_null(strstr(buf_cstr(&b), "<circle"));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_line_round_trip),
        cmocka_unit_test(test_read_torn),
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_empty_and_write),
        cmocka_unit_test(test_pareto_and_cost_chart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
