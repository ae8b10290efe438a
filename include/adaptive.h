/* adaptive.h: when to stop drawing samples for a vote (self_consistency, majority_voting).
 *
 * The rule: after each batch, stop when the leading answer's lead cannot be overturned by the
 * samples left in the budget, or when the probability that they would overturn it is at most
 * ADAPTIVE_RISK under a Polya-urn (Dirichlet-process, concentration 1) predictive of the
 * remaining samples given the votes so far: a new sample repeats an answer with probability
 * proportional to its count and is a new answer with probability proportional to 1. A tie at
 * the end counts as an overturn. This is Adaptive-Consistency's idea (Aggarwal et al., EMNLP
 * 2023: stop once the majority is stable) with a predictive of the full-budget vote instead of
 * their Beta posterior on the top two counts, so that "stop" means "the fixed-k vote would
 * very likely pick the same answer". Pure functions, no I/O. */
#ifndef ADAPTIVE_H
#define ADAPTIVE_H

#include <stdbool.h>

#define ADAPTIVE_RISK 0.05

/* The probability that 'remaining' more samples leave some other answer with at least the
 * leader's count, given the vote counts so far (counts[0..n), any order; n may be 0). Exact
 * 0 when the lead is out of reach; 1 when there is no leader (n == 0, or a tie at the top)
 * and remaining == 0. Deterministic (a fixed-seed simulation above a small size). */
double adaptive_overturn(const int *counts, int n, int remaining);

/* Stop sampling? counts as above, 'drawn' samples requested so far of a budget of 'budget'.
 * True when the budget is spent, or the lead cannot be overturned, or adaptive_overturn <=
 * ADAPTIVE_RISK. */
bool adaptive_stop(const int *counts, int n, int drawn, int budget);

/* The next batch: the fewest samples that, all agreeing with the leader, would put its lead
 * out of reach of the rest of the budget (so the first batch of a budget k is k/2 + 1, and a
 * unanimous first batch ends the vote in one round); at least 1, at most 'remaining'. */
int adaptive_batch(const int *counts, int n, int remaining);

#endif
