/* answer.h: final-answer extraction and comparison (pcre2), shared by the approaches, the
 * mock-free unit tests and the evaluation runner. All functions are thread-safe once
 * answer_init() has run (compiled patterns are shared read-only; match data is per call). */
#ifndef ANSWER_H
#define ANSWER_H

#include <stdbool.h>
#include <stddef.h>

struct arena;

enum answer_kind {
    ANSWER_NONE = 0,   /* nothing found */
    ANSWER_NUMBER = 1, /* 'num' holds the value; 'text' its canonical form ("42", "-3.5", "0.75") */
    ANSWER_CHOICE = 2, /* 'text' is one upper-case letter A..J */
    ANSWER_TEXT = 3    /* 'text' is normalised free text */
};

struct answer {
    enum answer_kind kind;
    double num;       /* valid for ANSWER_NUMBER */
    const char *text; /* canonical text, owned by the arena passed in; "" for ANSWER_NONE */
};

/* Compiles the patterns. Call once before threads start; returns 0, or -1 on failure. */
int answer_init(void);
/* Frees the patterns. */
void answer_cleanup(void);

/* Extracts the final answer of a model response, in order: the last \boxed{...} (balanced
 * braces), "final answer is/:" and "the answer is" phrases, "Answer: X", then (for
 * ANSWER_NUMBER hints or no hint) the last number in the text. 'hint' is ANSWER_NONE (guess),
 * ANSWER_NUMBER, ANSWER_CHOICE or ANSWER_TEXT. Numbers accept signs, thousands separators,
 * decimals, fractions (3/4, \frac{3}{4}, \dfrac), percentages, and LaTeX wrappers.
 * Memory comes from 'a'. */
struct answer answer_extract(struct arena *a, const char *text, enum answer_kind hint);

/* Normalises free text for comparison: lower case, trimmed, collapsed whitespace, surrounding
 * punctuation, quotes, LaTeX \text{} and trailing period removed. Owned by 'a'. */
char *answer_normalize(struct arena *a, const char *text);

/* Parses a whole string as a number (same forms as above); returns true and sets *out. */
bool answer_parse_number(const char *s, double *out);

/* True when two answers agree: numbers within a relative tolerance of 1e-6 (absolute 1e-9),
 * choices by letter, text by normalised equality. */
bool answer_equal(const struct answer *x, const struct answer *y);

/* A key that groups equal answers (for voting): numbers in canonical form, choices as the
 * letter, text normalised. "" for ANSWER_NONE. Owned by 'a'. */
const char *answer_key(struct arena *a, const struct answer *x);

#endif
