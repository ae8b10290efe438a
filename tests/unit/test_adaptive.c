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
    near(adaptive_overturn(C(2), 3), 1.0 / 12, 1e-12); /* k=5 after 2-0 */
    near(adaptive_overturn(C(2, 1), 2), 0.25, 1e-12);  /* k=5 after 2-1 */
    near(adaptive_overturn(C(1, 2), 2), 0.25, 1e-12);  /* order does not matter */
    near(adaptive_overturn(C(3), 3), 1.0 / 60, 1e-12); /* k=6 after 3-0 */
    near(adaptive_overturn(C(3, 1), 2), 1.0 / 15, 1e-12);
    near(adaptive_overturn(C(2, 1, 1), 1), 0.4, 1e-12); /* a 1 joining either 1 ties */
    near(adaptive_overturn(C(3, 2), 1), 1.0 / 3, 1e-12);
    near(adaptive_overturn(C(4, 2), 4), 0.134524, 1e-6); /* k=10 */
    /* out of reach: exactly 0 */
    assert_true(adaptive_overturn(C(3), 2) == 0.0);
    assert_true(adaptive_overturn(C(3, 1), 1) == 0.0);
    assert_true(adaptive_overturn(C(4, 1), 1) == 0.0);
}

static void test_overturn_simulated(void **state)
{
    (void)state;
    /* above the exact walk's size: the fixed-seed simulation, against the exact values */
    near(adaptive_overturn(C(2), 8), 0.123457, 0.015); /* k=10 after 2-0 */
    near(adaptive_overturn(C(3), 7), 0.033400, 0.01);
    near(adaptive_overturn(C(2, 1), 7), 0.303800, 0.02);
    near(adaptive_overturn(C(4, 1), 5), 0.030600, 0.01);
    /* deterministic */
    assert_true(adaptive_overturn(C(2), 8) == adaptive_overturn(C(2), 8));
    /* a large budget stays fast and sane */
    assert_true(adaptive_overturn(C(20, 1), 11) == 0.0);
    assert_true(adaptive_overturn(C(1, 1), 30) > 0.5);
}

static void test_stop_decided_early(void **state)
{
    (void)state;
    assert_true(adaptive_stop(C(3), 3, 5));    /* unanimous first batch of k=5 */
    assert_true(adaptive_stop(C(4), 4, 6));    /* of k=6 */
    assert_true(adaptive_stop(C(3), 3, 6));    /* 1/60 <= 0.05 */
    assert_true(adaptive_stop(C(3, 1), 4, 5)); /* out of reach */
    assert_true(adaptive_stop(C(4, 1), 5, 10));
    assert_true(adaptive_stop(C(3), 3, 10)); /* 0.033 */
}

static void test_stop_undecided(void **state)
{
    (void)state;
    assert_false(adaptive_stop(C(2), 2, 5));    /* 1/12 > 0.05 */
    assert_false(adaptive_stop(C(2, 1), 3, 5)); /* contested */
    assert_false(adaptive_stop(C(1, 1, 1), 3, 5));
    assert_false(adaptive_stop(C(2, 1, 1), 4, 5));
    assert_false(adaptive_stop(C(3, 1), 4, 8));
    assert_false(adaptive_stop(NULL, 0, 0, 5)); /* nothing drawn yet */
    assert_false(adaptive_stop(NULL, 0, 3, 5)); /* every sample unusable so far */
}

static void test_stop_ties(void **state)
{
    (void)state;
    /* a tie at the top never stops before the budget is spent */
    assert_false(adaptive_stop(C(2, 2), 4, 5));
    assert_false(adaptive_stop(C(1, 1), 2, 5));
    assert_false(adaptive_stop(C(3, 3), 6, 32));
    assert_true(adaptive_overturn(C(2, 2), 0) == 1.0);
    /* an exact tie at the end is an overturn: 2-0 with 2 left is not decided by reach */
    assert_false(adaptive_overturn(C(2), 2) == 0.0);
}

static void test_stop_budget_exhausted(void **state)
{
    (void)state;
    assert_true(adaptive_stop(C(2, 2), 4, 4));
    assert_true(adaptive_stop(C(1, 1, 1, 1, 1), 5, 5));
    assert_true(adaptive_stop(NULL, 0, 5, 5)); /* nothing usable, nothing left */
    assert_true(adaptive_stop(C(1), 7, 5));    /* over-drawn */
}

static void test_batch(void **state)
{
    (void)state;
    /* the first batch: k/2 + 1 */
    assert_int_equal(adaptive_batch(NULL, 0, 5), 3);
    assert_int_equal(adaptive_batch(NULL, 0, 6), 4);
    assert_int_equal(adaptive_batch(NULL, 0, 1), 1);
    assert_int_equal(adaptive_batch(NULL, 0, 32), 17);
    /* then the fewest that could decide */
    assert_int_equal(adaptive_batch(C(2, 1), 2), 1);
    assert_int_equal(adaptive_batch(C(1, 1, 1), 2), 2);
    assert_int_equal(adaptive_batch(C(2, 2), 2), 2);
    assert_int_equal(adaptive_batch(C(3, 1), 4), 2);
    assert_int_equal(adaptive_batch(C(9), 4), 1); /* already out of reach: at least 1 */
    assert_int_equal(adaptive_batch(C(1), 0), 0);
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
