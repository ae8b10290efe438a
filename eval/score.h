/* score.h: what the evaluation asks and how it scores: the user message for an item (from
 * prompts/eval/) and the comparison of a reply's final answer with the item's, using the same
 * extraction as the approaches (answer.h). Thread-safe once answer_init and prompt_init ran. */
#ifndef EVAL_SCORE_H
#define EVAL_SCORE_H

#include <stdbool.h>

#include "dataset.h"

struct arena;

/* The user message for 'it': prompts/eval/question.txt, or prompts/eval/choice.txt with the
 * choices listed as "A. ...". Owned by 'a'. */
char *score_prompt(struct arena *a, const struct item *it);

/* Extracts the final answer of 'reply' for 'it' and compares it with the expected one.
 * *extracted is the canonical extracted answer (owned by 'a'), or NULL when none was found.
 * A multiple-choice reply that names an option's text instead of its letter counts as that
 * letter. Returns true when it is correct. */
bool score_reply(struct arena *a, const struct item *it, const char *reply, const char **extracted);

#endif
