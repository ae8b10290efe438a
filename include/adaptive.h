/* adaptive.h: when to stop drawing samples for a vote (self_consistency, majority_voting).
 *
 * The rule: after each batch, stop when the leading answer's lead cannot be overturned by the
 * samples left in the budget, or when the probability that they would overturn it is at most
 * 'risk' (option adaptive_risk, default ADAPTIVE_RISK) under a Polya-urn (Dirichlet-process,
 * concentration 1) predictive of the remaining samples given the votes so far: a new sample
 * repeats an answer with probability proportional to its count and is a new answer with
 * probability proportional to 1. A tie of t answers at the end counts as an overturn with
 * probability (t - 1) / t (the tie could go either way). This is Adaptive-Consistency's idea
 * (Aggarwal et al., EMNLP 2023: stop once the majority is stable) with a predictive of the
 * full-budget vote instead of their Beta posterior on the top two counts, so that "stop" means "the
 * fixed-k vote would very likely pick the same answer". Pure functions, no I/O. */
#ifndef ADAPTIVE_H
#define ADAPTIVE_H

#include <stdbool.h>

/* Measured (bench/adaptive.sh, README "Adaptive sampling"): at 0.2 the accuracy stays within
 * 0.01 of fixed k at p = 0.6 while k = 5 saves about 30% of the samples; 0.05 saves half as
 * much for no measurable accuracy. */
#define ADAPTIVE_RISK 0.2

/* The probability that the vote after 'remaining' more samples does not pick the current
 * leader, given the vote counts so far (counts[0..n), any order; n may be 0): another answer
 * with more votes counts 1, a tie of t answers at the top (t - 1) / t. Exact 0 when the lead
 * is out of reach; 1 when n == 0. Deterministic (a fixed-seed simulation above a small
 * size). */
double adaptive_overturn(const int *counts, int n, int remaining);

/* Stop sampling? counts as above, 'drawn' samples requested so far of a budget of 'budget'.
 * True when the budget is spent, or the lead cannot be overturned, or adaptive_overturn <=
 * risk. */
bool adaptive_stop(const int *counts, int n, int drawn, int budget, double risk);

/* The next batch. First (n == 0, or no usable sample yet): the fewest samples m whose
 * agreement alone would stop the vote at risk / 2 (k = 5 or 6: 2; k = 10: 3 at the default
 * risk), so an easy question takes one round. Later: the fewest samples that, all agreeing
 * with the leader, would put its lead out of reach of the rest of the budget. At least 1, at
 * most 'remaining'. */
int adaptive_batch(const int *counts, int n, int remaining, double risk);

#endif
