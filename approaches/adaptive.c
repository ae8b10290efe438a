/* adaptive.c: the stopping rule of adaptive sampling (adaptive.h). Pure functions.
 *
 * adaptive_overturn is exact (a walk over every sequence of the remaining samples) while
 * that is at most EXACT_PATHS sequences, which covers the default budgets (5, 6) and the first
 * batch of k = 10 (about a millisecond); above it,
 * a simulation of SIM_RUNS urn draws with a fixed seed (standard error <= 0.006 at the
 * 0.05 threshold), so the same counts always give the same answer. Pure functions but for a
 * small cache of first-batch sizes (guarded by first_mu). */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "adaptive.h"

#define MAX_CATS    128 /* counts plus the new answers the remaining samples may bring */
#define EXACT_PATHS 400000.0
#define SIM_RUNS    8000
#define RISK_EPS    1e-9 /* exact fractions such as 1/5 compare equal to a risk of 0.2 */

/* The probability that the final vote does not pick the leader: 1 when another answer has
 * more votes, (t - 1) / t when t answers (the leader among them) share the top. */
static double overturned(const int *c, int n, int lead)
{
    int tied = 1;

    for (int i = 0; i < n; i++) {
        if (i == lead)
            continue;
        if (c[i] > c[lead])
            return 1.0;
        tied += c[i] == c[lead];
    }
    return (double)(tied - 1) / tied;
}

/* Exact: the probability over every continuation of r samples (Polya urn, weight 1 for a new
 * answer). c has room for n + r entries. */
static double walk(int *c, int n, int lead, int r)
{
    double total = 1.0;
    double p = 0.0;

    if (r == 0)
        return overturned(c, n, lead);
    for (int i = 0; i < n; i++)
        total += c[i];
    for (int i = 0; i < n; i++) {
        if (c[i] == 0)
            continue;
        double w = c[i] / total;
        c[i]++;
        p += w * walk(c, n, lead, r - 1);
        c[i]--;
    }
    c[n] = 1;
    p += walk(c, n + 1, lead, r - 1) / total;
    c[n] = 0;
    return p;
}

static uint64_t next_rand(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double simulate(const int *c0, int n, int lead, int r)
{
    int c[MAX_CATS];
    uint64_t seed = 0x616461707469ULL; /* fixed: the same counts give the same estimate */
    double hits = 0;
    int sum0 = 0;

    for (int i = 0; i < n; i++)
        sum0 += c0[i];
    for (int run = 0; run < SIM_RUNS; run++) {
        int m = n;
        int sum = sum0;

        memcpy(c, c0, (size_t)n * sizeof(*c));
        for (int s = 0; s < r; s++) {
            /* a uniform draw over sum + 1 slots: slot sum is a new answer */
            uint64_t u = next_rand(&seed) % (uint64_t)(sum + 1);
            int i = 0;

            if (u == (uint64_t)sum) {
                i = m;
                c[m++] = 0;
            } else {
                for (uint64_t acc = (uint64_t)c[0]; acc <= u; acc += (uint64_t)c[++i])
                    ;
            }
            c[i]++;
            sum++;
        }
        hits += overturned(c, m, lead);
    }
    return hits / SIM_RUNS;
}

/* The leader's index and the runner-up's count; -1 when n == 0. */
static int leader(const int *counts, int n, int *second)
{
    int lead = -1;

    *second = 0;
    for (int i = 0; i < n; i++)
        if (lead < 0 || counts[i] > counts[lead])
            lead = i;
    for (int i = 0; i < n; i++)
        if (i != lead && counts[i] > *second)
            *second = counts[i];
    return lead;
}

double adaptive_overturn(const int *counts, int n, int remaining)
{
    int c[MAX_CATS];
    int second;
    int lead = leader(counts, n, &second);
    double paths = 1.0;

    if (remaining < 0)
        remaining = 0;
    if (lead < 0 || n + remaining > MAX_CATS)
        return 1.0;
    if (counts[lead] > second + remaining)
        return 0.0;
    if (remaining == 0)
        return overturned(counts, n, lead); /* a tie at the top */
    for (int i = 1; i <= remaining && paths <= EXACT_PATHS; i++)
        paths *= n + i;
    if (paths > EXACT_PATHS)
        return simulate(counts, n, lead, remaining);
    memset(c, 0, sizeof(c));
    memcpy(c, counts, (size_t)n * sizeof(*c));
    return walk(c, n, lead, remaining);
}

bool adaptive_stop(const int *counts, int n, int drawn, int budget, double risk)
{
    int second;
    int lead = leader(counts, n, &second);
    int remaining = budget - drawn;

    if (remaining <= 0)
        return true;
    if (lead < 0)
        return false;
    if (counts[lead] > second + remaining)
        return true;
    if (risk <= 0)
        return false; /* only reach decides (the simulation can round a tiny risk to 0) */
    return adaptive_overturn(counts, n, remaining) <= risk + RISK_EPS;
}

/* The first batch depends only on (budget, risk) and costs up to ~7 ms of simulation at
 * k = 30: remembered per budget for the last risk asked (a scheduler slice stays short). */
#define FIRST_CACHE 64
static pthread_mutex_t first_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    double risk;
    int m;                  /* 0: not computed */
} first_cache[FIRST_CACHE]; /* guarded by first_mu */

static int first_batch(int remaining, double risk)
{
    int m = 0;

    if (remaining < FIRST_CACHE) {
        pthread_mutex_lock(&first_mu);
        if (first_cache[remaining].m > 0 && first_cache[remaining].risk == risk)
            m = first_cache[remaining].m;
        pthread_mutex_unlock(&first_mu);
        if (m > 0)
            return m;
    }
    /* The fewest samples whose agreement alone stops the vote with a margin (risk / 2), so
     * that the common easy case takes one round and a lucky agreement of two does not end a
     * large budget. */
    for (m = 1; m < remaining; m++) {
        int one[1] = {m};

        if (adaptive_overturn(one, 1, remaining - m) <= risk / 2 + RISK_EPS)
            break;
    }
    if (remaining < FIRST_CACHE) {
        pthread_mutex_lock(&first_mu);
        first_cache[remaining].risk = risk;
        first_cache[remaining].m = m;
        pthread_mutex_unlock(&first_mu);
    }
    return m;
}

int adaptive_batch(const int *counts, int n, int remaining, double risk)
{
    int second;
    int lead = leader(counts, n, &second);
    int top = lead < 0 ? 0 : counts[lead];
    int m;

    if (remaining <= 1)
        return remaining < 0 ? 0 : remaining;
    if (lead < 0 && risk > 0)
        return first_batch(remaining, risk);
    /* top + m > second + (remaining - m) */
    m = (second + remaining - top) / 2 + 1;
    if (second + remaining - top < 0)
        m = 1;
    return m < 1 ? 1 : m > remaining ? remaining : m;
}
