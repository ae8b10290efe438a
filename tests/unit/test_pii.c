/* test_pii.c: the privacy detector on the labelled corpus tests/data/pii_corpus.jsonl
 * (precision and recall per kind, asserted at >= 0.95 each), placeholders, and restoring a
 * streamed answer whose placeholders are split across pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cjson/cJSON.h>

#include "pii.h"

#define CORPUS "tests/data/pii_corpus.jsonl"

static int setup(void **state)
{
    (void)state;
    return pii_init();
}

static int teardown(void **state)
{
    (void)state;
    pii_cleanup();
    return 0;
}

static enum pii_kind kind_of(const char *name)
{
    for (int k = 0; k < PII_NKINDS; k++)
        if (strcmp(pii_kind_name((enum pii_kind)k, false), name) == 0)
            return (enum pii_kind)k;
    fail_msg("unknown kind %s in the corpus", name);
    return PII_NKINDS;
}

static void test_corpus_precision_recall(void **state)
{
    FILE *f = fopen(CORPUS, "r");
    char *line = NULL;
    size_t cap = 0;
    long tp[PII_NKINDS] = {0}, fp[PII_NKINDS] = {0}, fn[PII_NKINDS] = {0};
    int lines = 0;

    (void)state;
    assert_non_null(f);
    while (getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        const char *text = cJSON_GetObjectItemCaseSensitive(j, "text")->valuestring;
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "pii");
        int nl = cJSON_GetArraySize(labels);
        bool used[8] = {false};
        struct pii_span *sp;
        size_t n = pii_find(text, strlen(text), &sp);

        assert_true(nl <= 8);
        lines++;
        for (size_t i = 0; i < n; i++) {
            bool hit = false;

            for (int l = 0; l < nl && !hit; l++) {
                const cJSON *lab = cJSON_GetArrayItem(labels, l);
                const char *v = cJSON_GetObjectItemCaseSensitive(lab, "value")->valuestring;
                enum pii_kind k =
                    kind_of(cJSON_GetObjectItemCaseSensitive(lab, "type")->valuestring);

                if (!used[l] && k == sp[i].kind && strlen(v) == sp[i].len &&
                    memcmp(v, text + sp[i].start, sp[i].len) == 0) {
                    used[l] = true;
                    hit = true;
                }
            }
            if (hit) {
                tp[sp[i].kind]++;
            } else {
                fp[sp[i].kind]++;
                print_message("false positive %s: '%.*s' in: %s", pii_kind_name(sp[i].kind, false),
                              (int)sp[i].len, text + sp[i].start, line);
            }
        }
        for (int l = 0; l < nl; l++) {
            if (used[l])
                continue;
            const cJSON *lab = cJSON_GetArrayItem(labels, l);
            fn[kind_of(cJSON_GetObjectItemCaseSensitive(lab, "type")->valuestring)]++;
            print_message("missed %s: %s",
                          cJSON_GetObjectItemCaseSensitive(lab, "type")->valuestring, line);
        }
        free(sp);
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    assert_true(lines >= 300);
    print_message("  %-7s %5s %5s %5s %9s %7s\n", "kind", "tp", "fp", "fn", "precision", "recall");
    for (int k = 0; k < PII_NKINDS; k++) {
        double prec = tp[k] + fp[k] ? (double)tp[k] / (double)(tp[k] + fp[k]) : 1.0;
        double rec = tp[k] + fn[k] ? (double)tp[k] / (double)(tp[k] + fn[k]) : 1.0;

        print_message("  %-7s %5ld %5ld %5ld %9.3f %7.3f\n", pii_kind_name((enum pii_kind)k, false),
                      tp[k], fp[k], fn[k], prec, rec);
        assert_true(tp[k] + fn[k] >= 30); /* every kind is measured on enough items */
        assert_true(prec >= 0.95);
        assert_true(rec >= 0.95);
    }
}

static void test_mask_unmask_stable(void **state)
{
    const char *in = "Mail anna@example.com or call +14155552671; again: anna@example.com.";
    struct pii_map *m = pii_map_create();
    char *masked = pii_mask(m, in, strlen(in));
    char *back;

    (void)state;
    assert_string_equal(masked, "Mail [EMAIL_1] or call [PHONE_1]; again: [EMAIL_1].");
    assert_int_equal(pii_map_count(m), 2);
    back = pii_unmask(m, masked, strlen(masked));
    assert_string_equal(back, in);
    free(back);
    /* Unknown bracketed text is left alone. */
    back = pii_unmask(m, "[EMAIL_9] and [x]", 17);
    assert_string_equal(back, "[EMAIL_9] and [x]");
    free(back);
    free(masked);
    pii_map_destroy(m);
}

static void test_stream_split_placeholders(void **state)
{
    const char *in = "key sk-abcdefghijklmnopqrstuvwxyz0123 and card 4111 1111 1111 1111";
    struct pii_map *m = pii_map_create();
    char *masked = pii_mask(m, in, strlen(in));
    const char *answer = "Reply: [SECRET_1] is revoked; [CARD_1] too [no";
    char got[512] = "";

    (void)state;
    assert_non_null(strstr(masked, "[SECRET_1]"));
    assert_non_null(strstr(masked, "[CARD_1]"));
    /* Every split of the answer into 1-byte and 3-byte pieces restores the same text. */
    for (size_t step = 1; step <= 3; step += 2) {
        struct pii_unmasker *u = pii_unmasker_create(m);

        got[0] = '\0';
        for (size_t i = 0; i < strlen(answer); i += step) {
            size_t len = strlen(answer) - i < step ? strlen(answer) - i : step;
            char *out = pii_unmasker_feed(u, answer + i, len, false);

            /* A released piece never ends inside a placeholder. */
            assert_null(strstr(out, "[SECRET_"));
            strcat(got, out);
            free(out);
        }
        char *rest = pii_unmasker_feed(u, "", 0, true);
        strcat(got, rest);
        free(rest);
        assert_string_equal(got, "Reply: sk-abcdefghijklmnopqrstuvwxyz0123 is revoked; "
                                 "4111 1111 1111 1111 too [no");
        pii_unmasker_destroy(u);
    }
    free(masked);
    pii_map_destroy(m);
}

static void test_boundaries(void **state)
{
    struct pii_span *sp;
    const char *t = "x@y.co,(415) 555-2671.";

    (void)state;
    assert_int_equal(pii_find(t, strlen(t), &sp), 2);
    assert_int_equal(sp[0].kind, PII_EMAIL);
    assert_int_equal(sp[1].kind, PII_PHONE);
    free(sp);
    /* A private-key block spans lines. */
    t = "-----BEGIN PRIVATE KEY-----\nMIIB\nabc\n-----END PRIVATE KEY-----";
    assert_int_equal(pii_find(t, strlen(t), &sp), 1);
    assert_int_equal(sp[0].kind, PII_SECRET);
    assert_int_equal(sp[0].len, strlen(t));
    free(sp);
    assert_int_equal(pii_find("", 0, &sp), 0);
    assert_null(sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_precision_recall),
        cmocka_unit_test(test_mask_unmask_stable),
        cmocka_unit_test(test_stream_split_placeholders),
        cmocka_unit_test(test_boundaries),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
