/* test_adaptive.c: the stopping rule of adaptive sampling (approaches/adaptive.c): decided
 * early, undecided to the end, ties, budget exhausted, the batch sizes, and the exact walk
 * against values computed independently (a memoised Polya-urn recursion in Python) and the
 * fixed-seed simulation against the exact walk. */
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

#include "adaptive.h"

#define C(...) ((const int[]){__VA_ARGS__}), (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int))

static void near(double got, double want, double tol)
{
    if (fabs(got - want) > tol)
        fprintf(stderr, "got %.6f, want %.6f\n", got, want);
    assert_true(fabs(got - want) <= tol);
}

static void test_overturn_exact(void **state)
{
    (void)state;
    /* exact fractions from a Python Fraction recursion; a tie of t counts (t - 1) / t */
    near(adaptive_overturn(C(2), 3), 7.0 / 120, 1e-12);   /* k=5 after 2-0 */
    near(adaptive_overturn(C(2, 1), 2), 7.0 / 40, 1e-12); /* k=5 after 2-1 */
    near(adaptive_overturn(C(1, 2), 2), 7.0 / 40, 1e-12); /* order does not matter */
    near(adaptive_overturn(C(3), 3), 1.0 / 120, 1e-12);   /* k=6 after 3-0 */
    near(adaptive_overturn(C(2), 4), 3.0 / 40, 1e-12);    /* k=6 after 2-0 */
    near(adaptive_overturn(C(3, 1), 2), 1.0 / 30, 1e-12);
    near(adaptive_overturn(C(2, 1, 1), 1), 0.2, 1e-12); /* a 1 joining either 1 ties: 2/5 x 1/2 */
    near(adaptive_overturn(C(3, 2), 1), 1.0 / 6, 1e-12);
    near(adaptive_overturn(C(1, 1), 3), 343.0 / 600, 1e-12);
    near(adaptive_overturn(C(4, 2), 4), 149.0 / 1680, 1e-12);    /* k=10 */
    near(adaptive_overturn(C(2), 8), 556631.0 / 5443200, 1e-12); /* k=10 after 2-0 */
    /* out of reach: exactly 0 */
    assert_true(adaptive_overturn(C(3), 2) == 0.0);
    assert_true(adaptive_overturn(C(3, 1), 1) == 0.0);
    assert_true(adaptive_overturn(C(4, 1), 1) == 0.0);
}

static void test_overturn_simulated(void **state)
{
    (void)state;
    /* above the exact walk's size: the fixed-seed simulation, against the exact values */
    near(adaptive_overturn(C(3), 8), 133963.0 / 4989600, 0.006); /* k=11 after 3-0 */
    near(adaptive_overturn(C(2, 1), 7), 93539.0 / 362880, 0.015);
    near(adaptive_overturn(C(3), 7), 11117.0 / 453600, 0.006);
    near(adaptive_overturn(C(4, 1), 5), 11.0 / 560, 0.006);
    /* deterministic */
    assert_true(adaptive_overturn(C(2, 1), 7) == adaptive_overturn(C(2, 1), 7));
    /* a large budget stays fast and sane */
    assert_true(adaptive_overturn(C(20, 1), 11) == 0.0);
    assert_true(adaptive_overturn(C(1, 1), 30) > 0.5);
}

static void test_stop_decided_early(void **state)
{
    (void)state;
    const double r = ADAPTIVE_RISK; /* 0.2 */

    assert_true(adaptive_stop(C(2), 2, 5, r));       /* 7/120: two agreeing samples of k=5 */
    assert_true(adaptive_stop(C(2), 2, 6, r));       /* 3/40, of k=6 */
    assert_true(adaptive_stop(C(3), 3, 5, r));       /* out of reach */
    assert_true(adaptive_stop(C(3, 1), 4, 5, r));    /* out of reach */
    assert_true(adaptive_stop(C(2, 1), 3, 5, r));    /* 7/40 */
    assert_true(adaptive_stop(C(2, 1, 1), 4, 5, r)); /* 1/5: exactly the risk stops */
    assert_true(adaptive_stop(C(4, 1), 5, 10, r));
    assert_true(adaptive_stop(C(3), 3, 10, r)); /* 0.0245 */
    /* a stricter risk: the same states go on */
    assert_false(adaptive_stop(C(2), 2, 5, 0.05));
    assert_false(adaptive_stop(C(2, 1), 3, 5, 0.05));
    assert_true(adaptive_stop(C(3), 3, 6, 0.05)); /* 1/120 */
    /* risk 0: only when out of reach */
    assert_false(adaptive_stop(C(3), 3, 6, 0));
    assert_true(adaptive_stop(C(4), 4, 6, 0));
}

static void test_stop_undecided(void **state)
{
    (void)state;
    const double r = ADAPTIVE_RISK;

    assert_false(adaptive_stop(C(1, 1), 2, 5, r)); /* 0.57 */
    assert_false(adaptive_stop(C(1, 1, 1), 3, 5, r));
    assert_false(adaptive_stop(C(2, 1), 3, 10, r)); /* 0.26 with 7 left */
    assert_false(adaptive_stop(C(1), 1, 5, r));
    assert_false(adaptive_stop(NULL, 0, 0, 5, r)); /* nothing drawn yet */
    assert_false(adaptive_stop(NULL, 0, 3, 5, r)); /* every sample unusable so far */
}

static void test_stop_ties(void **state)
{
    (void)state;
    /* a tie at the top does not stop before the budget is spent */
    assert_false(adaptive_stop(C(2, 2), 4, 5, ADAPTIVE_RISK));
    assert_false(adaptive_stop(C(1, 1), 2, 5, ADAPTIVE_RISK));
    assert_false(adaptive_stop(C(3, 3), 6, 32, ADAPTIVE_RISK));
    /* a tie at the end is a coin flip between the tied answers */
    near(adaptive_overturn(C(2, 2), 0), 0.5, 1e-12);
    near(adaptive_overturn(C(1, 1, 1), 0), 2.0 / 3, 1e-12);
    assert_true(adaptive_overturn(C(2, 1), 0) == 0.0);
    /* 2-0 with 2 left is not decided by reach: a 2-2 tie may come */
    near(adaptive_overturn(C(2), 2), 1.0 / 24, 1e-12);
}

static void test_stop_budget_exhausted(void **state)
{
    (void)state;
    assert_true(adaptive_stop(C(2, 2), 4, 4, ADAPTIVE_RISK));
    assert_true(adaptive_stop(C(1, 1, 1, 1, 1), 5, 5, ADAPTIVE_RISK));
    assert_true(adaptive_stop(NULL, 0, 5, 5, ADAPTIVE_RISK)); /* nothing usable, nothing left */
    assert_true(adaptive_stop(C(1), 7, 5, ADAPTIVE_RISK));    /* over-drawn */
}

static void test_batch(void **state)
{
    (void)state;
    const double r = ADAPTIVE_RISK;

    /* the first batch: the fewest whose agreement stops the vote at risk / 2 */
    assert_int_equal(adaptive_batch(NULL, 0, 5, r), 2);  /* 2-0 of 5: 7/120 <= 0.1 */
    assert_int_equal(adaptive_batch(NULL, 0, 6, r), 2);  /* 3/40 */
    assert_int_equal(adaptive_batch(NULL, 0, 10, r), 3); /* 2-0 of 10: 0.102 > 0.1 */
    assert_int_equal(adaptive_batch(NULL, 0, 1, r), 1);
    assert_int_equal(adaptive_batch(NULL, 0, 5, 0), 3); /* risk 0: k/2 + 1, as fixed reach */
    assert_int_equal(adaptive_batch(NULL, 0, 6, 0), 4);
    assert_int_equal(adaptive_batch(NULL, 0, 32, 0), 17);
    assert_true(adaptive_batch(NULL, 0, 32, r) <= 5); /* a large budget starts small */
    /* then the fewest that could decide */
    assert_int_equal(adaptive_batch(C(2, 1), 2, r), 1);
    assert_int_equal(adaptive_batch(C(1, 1, 1), 2, r), 2);
    assert_int_equal(adaptive_batch(C(2, 2), 2, r), 2);
    assert_int_equal(adaptive_batch(C(1, 1), 3, r), 2);
    assert_int_equal(adaptive_batch(C(3, 1), 4, r), 2);
    assert_int_equal(adaptive_batch(C(9), 4, r), 1); /* already out of reach: at least 1 */
    assert_int_equal(adaptive_batch(C(1), 0, r), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overturn_exact),
        cmocka_unit_test(test_overturn_simulated),
        cmocka_unit_test(test_stop_decided_early),
        cmocka_unit_test(test_stop_undecided),
        cmocka_unit_test(test_stop_ties),
        cmocka_unit_test(test_stop_budget_exhausted),
        cmocka_unit_test(test_batch),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
