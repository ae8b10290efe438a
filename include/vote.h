/* vote.h: choosing one of k samples by their extracted final answers (self_consistency,
 * majority_voting). */
#ifndef VOTE_H
#define VOTE_H

#include <stdbool.h>

#include "llm.h"

struct approach_ctx;
struct arena;

enum vote_mode {
    VOTE_ALL = 0,          /* samples with and without an extractable answer all vote */
    VOTE_ANSWERS_FIRST = 1 /* only samples with an answer vote, unless none has one */
};

/* Groups the usable samples of c[0..n) (blank ones without tool calls dropped; truncated ones
 * too when any completed) by answer key (for tool calls: the canonical llm_tool_calls_key),
 * or by text similarity when they have none, and returns the index
 * in c of a member of the largest group (content-based tie-breaks, independent of the order
 * of c), with *truncated set when it was cut by the length limit. -1 when no sample is
 * usable. Memory from 'a'. Thread-safe. */
int vote_choose(struct arena *a, const struct llm_choice *c, int n, enum vote_mode mode,
                bool *truncated);

/* The vote so far: the sizes of the groups vote_choose would form over c[0..n) (counts has
 * room for n). Returns the number of groups (0 when no sample is usable). */
int vote_tally(struct arena *a, const struct llm_choice *c, int n, enum vote_mode mode,
               int *counts);

/* Draws up to k samples into out (room for k) for a vote under 'mode': with the option
 * "adaptive" on (the default), in rounds of adaptive_batch samples (one llm_sample call, so one
 * n=m call where the upstream supports n) until adaptive_stop (adaptive.h); with it off, k
 * samples in one round. A round that fails ends the sampling with what the earlier rounds
 * got. Returns the number of samples, or a negative px_status (ctx->err set) when the first
 * round failed; *rounds is the number of rounds. */
int vote_sample(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
                const struct llm_params *p, int k, const char *stage, enum vote_mode mode,
                struct llm_choice *out, int *rounds);

#endif
