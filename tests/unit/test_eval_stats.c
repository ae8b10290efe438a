/* test_eval_stats.c: unit tests of the evaluation statistics: Wilson intervals, the exact
 * McNemar p-value (against values computed with exact integer arithmetic), percentiles. */
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

#include "../../eval/stats.c"

static void close_to(double got, double want, double rel)
{
    double tol = fabs(want) * rel + 1e-300;

    if (fabs(got - want) > tol)
        fprintf(stderr, "got %.17g, want %.17g\n", got, want);
    assert_true(fabs(got - want) <= tol);
}

static void test_wilson(void **state)
{
    /* k, n, lo, hi: the closed form evaluated independently */
    static const struct {
        long k, n;
        double lo, hi;
    } cases[] = {
        {71, 120, 0.5022078316, 0.6754386545},
        {0, 10, 0, 0.2775327999},
        {10, 10, 0.7224672001, 1},
        {1, 2, 0.0945312057, 0.9054687943},
        {50, 100, 0.4038315304, 0.5961684696},
    };
    double lo, hi;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stats_wilson(cases[i].k, cases[i].n, STATS_Z95, &lo, &hi);
        assert_true(fabs(lo - cases[i].lo) < 1e-9);
        assert_true(fabs(hi - cases[i].hi) < 1e-9);
        /* the interval holds the point estimate */
        assert_true(lo <= (double)cases[i].k / (double)cases[i].n);
        assert_true(hi >= (double)cases[i].k / (double)cases[i].n);
    }
    stats_wilson(0, 0, STATS_Z95, &lo, &hi);
    assert_true(lo == 0 && hi == 1);
    /* narrower with more data */
    {
        double lo2, hi2;

        stats_wilson(60, 100, STATS_Z95, &lo, &hi);
        stats_wilson(600, 1000, STATS_Z95, &lo2, &hi2);
        assert_true(hi2 - lo2 < hi - lo);
    }
}

static void test_mcnemar(void **state)
{
    /* b, c, p: 2 * sum_{i <= min(b,c)} C(b+c, i) / 2^(b+c) with exact integers, capped at 1 */
    static const struct {
        long b, c;
        double p;
    } cases[] = {
        {1, 43, 5.115907697472721e-12},
        {8, 42, 1.163555804595262e-06},
        {0, 5, 0.0625},
        {5, 0, 0.0625},
        {3, 3, 1.0},
        {0, 1, 1.0},
        {12, 0, 0.00048828125},
        {4000, 4200, 0.027972423571324383},
        {9900, 10100, 0.15938343598473378},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        close_to(stats_mcnemar_p(cases[i].b, cases[i].c), cases[i].p, 1e-9);
    assert_true(stats_mcnemar_p(0, 0) == 1);
    /* very large n: no overflow or underflow to garbage */
    {
        double p = stats_mcnemar_p(400000, 402000);

        assert_true(p > 0 && p < 0.2);
        assert_true(stats_mcnemar_p(0, 5000) >= 0);
        assert_true(stats_mcnemar_p(2500000, 2500000) == 1);
    }
}

static void test_binom_cdf(void **state)
{
    (void)state;
    assert_true(stats_binom_half_log_cdf(-1, 10) == -INFINITY);
    assert_true(stats_binom_half_log_cdf(10, 10) == 0);
    close_to(exp(stats_binom_half_log_cdf(0, 10)), 1.0 / 1024, 1e-12);
    close_to(exp(stats_binom_half_log_cdf(5, 10)), 638.0 / 1024, 1e-12);
    close_to(exp(stats_binom_half_log_cdf(1, 3)), 0.5, 1e-12);
}

static void test_percentile(void **state)
{
    double v[20], one[1] = {7}, mixed[5] = {5, 1, 4, 2, 3};

    (void)state;
    for (int i = 0; i < 20; i++)
        v[i] = 20 - i;
    assert_true(stats_percentile(v, 20, 95) == 19);
    assert_true(stats_percentile(v, 20, 50) == 10);
    assert_true(stats_percentile(v, 20, 100) == 20);
    assert_true(stats_percentile(one, 1, 95) == 7);
    assert_true(stats_percentile(mixed, 5, 95) == 5);
    assert_true(stats_percentile(mixed, 5, 20) == 1);
    assert_true(stats_percentile(NULL, 0, 95) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wilson),
        cmocka_unit_test(test_mcnemar),
        cmocka_unit_test(test_binom_cdf),
        cmocka_unit_test(test_percentile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
