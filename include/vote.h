/* vote.h: choosing one of k samples by their extracted final answers (self_consistency,
 * majority_voting). */
#ifndef VOTE_H
#define VOTE_H

#include <stdbool.h>

#include "llm.h"

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

#endif
