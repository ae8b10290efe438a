/* stats.c: Wilson intervals, the exact McNemar test (binomial tail in log space) and
 * nearest-rank percentiles for the evaluation report. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>

void stats_wilson(long k, long n, double z, double *lo, double *hi)
{
    double p, z2n, denom, centre, half;

    if (n <= 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    p = (double)k / (double)n;
    z2n = z * z / (double)n;
    denom = 1 + z2n;
    centre = (p + z2n / 2) / denom;
    half = z * sqrt(p * (1 - p) / (double)n + z2n / (4 * (double)n)) / denom;
    *lo = centre - half < 0 ? 0 : centre - half;
    *hi = centre + half > 1 ? 1 : centre + half;
    /* The exact ends: no rounding below 0 or above 1, and the point estimate inside. */
    if (k == 0)
        *lo = 0;
    if (k == n)
        *hi = 1;
}

/* log C(n, k) - n log 2 = log P(X = k). lgamma is exact enough here: relative error ~1e-15 of
 * terms that are summed with log-sum-exp. */
static double log_pmf_half(long k, long n)
{
    return lgamma((double)n + 1) - lgamma((double)k + 1) - lgamma((double)(n - k) + 1) -
           (double)n * log(2.0);
}

double stats_binom_half_log_cdf(long k, long n)
{
    double m, sum = 0;

    if (k < 0)
        return -INFINITY;
    if (k >= n)
        return 0;
    /* Terms grow with i up to n/2, so the largest term of the tail i <= k <= ... is at i = k
     * when k < n/2, otherwise the sum is >= 1/2 and the largest term is at n/2. */
    m = log_pmf_half(k < n / 2 ? k : n / 2, n);
    for (long i = 0; i <= k; i++)
        sum += exp(log_pmf_half(i, n) - m);
    return fmin(0, m + log(sum));
}

double stats_mcnemar_p(long b, long c)
{
    long n = b + c;
    long k = b < c ? b : c;
    double p;

    if (n <= 0)
        return 1;
    p = 2 * exp(stats_binom_half_log_cdf(k, n));
    return p > 1 ? 1 : p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

double stats_percentile(double *v, size_t n, double p)
{
    size_t rank;

    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    rank = (size_t)ceil(p / 100 * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}
