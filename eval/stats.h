/* stats.h: the statistics of the evaluation report: Wilson score intervals, the exact McNemar
 * test and percentiles. Pure functions; thread-safe. */
#ifndef EVAL_STATS_H
#define EVAL_STATS_H

#include <stddef.h>

#define STATS_Z95 1.959963984540054 /* the 97.5th percentile of the standard normal */

/* The Wilson score interval of k successes in n trials at normal quantile z (STATS_Z95 for
 * 95%). n == 0 gives [0, 1]. */
void stats_wilson(long k, long n, double z, double *lo, double *hi);

/* log P(X <= k) for X ~ Binomial(n, 1/2), computed in log space (exact for any n). */
double stats_binom_half_log_cdf(long k, long n);

/* The exact two-sided McNemar p-value for b and c discordant pairs:
 * min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2). 1 when b + c == 0. */
double stats_mcnemar_p(long b, long c);

/* The p-th percentile (0 < p <= 100) of v[0..n) by the nearest-rank method: the smallest
 * value with at least p% of the values at or below it. Sorts v in place. 0 when n == 0. */
double stats_percentile(double *v, size_t n, double p);

#endif
