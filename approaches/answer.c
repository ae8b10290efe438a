/* answer.c: extracts, parses, normalises and compares the final answers of model responses. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "answer.h"
#include "arena.h"

#include <math.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Overview
 * --------
 * answer_init() must run once (before threads start) to compile the patterns; without it
 * answer_extract() returns ANSWER_NONE. The other functions need no patterns.
 * The patterns are not JIT-compiled: they only run over at most 64 KiB per call, and pcre2's JIT
 * reads a few bytes past the subject with vector loads, which valgrind reports.
 *
 * answer_extract(a, text, hint): if the text holds "</think>", the part after the last one is
 * searched first (falling back to the whole text when it gives nothing). In that region:
 *   1. the last \boxed{...} / \fbox{...} with balanced braces (whole region; "\boxed 5" too);
 *   2. the last "final answer is/:/=" phrase (also "**Final Answer:**", "## Final Answer") or
 *      GSM8K "#### X" line;
 *   3. the last "answer is/:/=/would be" phrase ("The answer is X", "Answer: X");
 *   4. hint ANSWER_CHOICE only: "the correct choice is c", "option D", "**B**", "(B)", or a
 *      line holding only "B." / "B)" (letters A-J; the last one wins);
 *   5. hint ANSWER_NUMBER or ANSWER_NONE: the last number of the region.
 * Phrases and numbers are only looked for in the last 64 KiB of the region. A phrase's candidate
 * runs from the phrase to the end of its line or sentence ('.', '!' or '?' before whitespace);
 * when the phrase ends its line, the next non-blank line is used.
 * A candidate from 1-3 is interpreted by the hint:
 *   NUMBER: whole-string number, else a leading number ("42 apples", but not the "3" of
 *           "3 x 4 = 12"), else the number after the last '=' ("x = 5"), else its first number;
 *   NONE:   whole-string number, leading number, number after '=', else a lone letter A-J
 *           ("B", "(b)", "C.") as CHOICE, else TEXT;
 *   CHOICE: the letter it starts with ("B", "(b)", "option C", "D) 42", "**A**");
 *   TEXT:   answer_normalize()d text.
 * A candidate that does not fit a NUMBER or CHOICE hint makes the search go on to the next
 * step; if nothing fits, the highest-priority such candidate is returned as TEXT.
 *
 * Numbers: sign (+, -, U+2212), currency "$" / "\$", digits with thousands groups ("1,234",
 * "1{,}234", "1\,234"), decimals (".5", "3.14"), exponent ("1.5e-3"), fraction "a/b",
 * \frac{a}{b} / \dfrac / \tfrac / \cfrac (also \frac34), then an optional "%", "\%", "^\circ",
 * "^{\circ}" or degree sign (the value is kept: "45%" is 45). answer_parse_number() first strips
 * whitespace, a trailing period, markdown '*' and '`', $...$, \(...\), \[...\], {...}, (...),
 * \left(...\right), \displaystyle and \boxed/\text/\textbf/\mathrm/\mathbf/\fbox{...}.
 */

#define SCAN_WINDOW   (64 * 1024) /* phrases and numbers: last bytes of the region searched */
#define CAND_MAX      1024        /* longest phrase candidate */
#define BOXED_TRIES   32          /* \boxed occurrences tried, last first */
#define PARSE_DEPTH   4           /* nesting of \frac arguments */
#define NUMBUF_MAX    96          /* longest number token (characters of its ASCII form) */
#define NEXTLINE_SKIP 4           /* blank lines skipped to reach a phrase's answer */

enum {
    RE_FINAL,
    RE_GSM,
    RE_ANSWER,
    RE_CHOICE_STRONG,
    RE_CHOICE_OPTION,
    RE_CHOICE_BOLD,
    RE_CHOICE_LINE,
    RE_CHOICE_PAREN,
    RE_COUNT
};

static const struct {
    const char *pattern;
    uint32_t flags;
} re_src[RE_COUNT] = {
    [RE_FINAL] = {"\\bfinal\\s+answer\\s*(?:\\*\\*\\s*)?(?:is\\b|would\\s+be\\b|will\\s+be\\b|:|=)"
                  "\\s*:?(?:\\s*\\*\\*)?"
                  "|\\*\\*\\s*final\\s+answer\\s*\\*\\*"
                  "|^[ \\t]*#{1,6}[ \\t]*final\\s+answer\\b[ \\t]*:?",
                  PCRE2_CASELESS | PCRE2_MULTILINE},
    [RE_GSM] = {"^[ \\t]*####[ \\t]*(?=[-+$.\\d\\\\]|\\xe2\\x88\\x92)", PCRE2_MULTILINE},
    [RE_ANSWER] =
        {"\\banswer\\s*(?:\\*\\*\\s*)?"
         "(?:is\\b|would\\s+be\\b|should\\s+be\\b|will\\s+be\\b|:|=)\\s*:?(?:\\s*\\*\\*)?",
         PCRE2_CASELESS},
    [RE_CHOICE_STRONG] = {"\\bcorrect\\s+(?:answer|choice|option|letter)\\s*"
                          "(?:is\\b|would\\s+be\\b|:)?\\s*:?\\s*(?:\\*\\*)?\\s*"
                          "(?:option\\s+|choice\\s+)?\\(?([a-j])\\b"
                          "|\\b(?:i\\s+choose|i\\s+pick|i\\s+select|go\\s+with)\\s+"
                          "(?:option\\s+|choice\\s+)?\\(?((?-i:[A-J]))\\b",
                          PCRE2_CASELESS},
    [RE_CHOICE_OPTION] = {"\\b(?:option|choice)\\s*:?\\s*\\(?([a-j])\\b(?![-'])", PCRE2_CASELESS},
    [RE_CHOICE_BOLD] = {"\\*\\*\\s*\\(?([A-J])\\)?[.):]?\\s*\\*\\*", 0},
    [RE_CHOICE_LINE] = {"^[ \\t>*]*\\(?([A-J])[.):]?[ \\t*\\r]*$", PCRE2_MULTILINE},
    [RE_CHOICE_PAREN] = {"\\(([A-J])\\)", 0},
};

static pcre2_code *re_code[RE_COUNT];
static int re_ready;

/* ---- small character helpers (ASCII only, locale independent) ---- */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(int c)
{
    return is_digit(c) || is_alpha(c);
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int to_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static int to_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

/* True when s[i..n) begins with the literal 'lit'. */
static int has_prefix(const char *s, size_t n, size_t i, const char *lit)
{
    size_t l = strlen(lit);
    return i <= n && n - i >= l && memcmp(s + i, lit, l) == 0;
}

/* Case-insensitive has_prefix for an ASCII lower-case 'lit'. */
static int has_prefix_ci(const char *s, size_t n, size_t i, const char *lit)
{
    size_t l = strlen(lit);
    if (i > n || n - i < l)
        return 0;
    for (size_t k = 0; k < l; k++)
        if (to_lower((unsigned char)s[i + k]) != lit[k])
            return 0;
    return 1;
}

/* True when s[i..n) ends with 'lit' at position e (i.e. s[e-len..e) == lit, e-len >= i). */
static int has_suffix(const char *s, size_t i, size_t e, const char *lit)
{
    size_t l = strlen(lit);
    return e >= i && e - i >= l && memcmp(s + e - l, lit, l) == 0;
}

static const char minus_sign[] = "\xe2\x88\x92"; /* U+2212 */

/* Index just past the '}' matching the '{' at s[open], or 0 if unbalanced before 'e' or if more
 * than 'limit' bytes would be scanned. "\{" and "\}" do not count. */
static size_t match_brace(const char *s, size_t open, size_t e, size_t limit)
{
    size_t depth = 0;
    size_t end = (limit && e - open > limit) ? open + limit : e;
    for (size_t i = open; i < end; i++) {
        char c = s[i];
        if (c == '\\') {
            i++;
            continue;
        }
        if (c == '{') {
            depth++;
        } else if (c == '}') {
            if (depth == 0)
                return 0;
            if (--depth == 0)
                return i + 1;
        }
    }
    return 0;
}

/* ---- numbers ---- */

static int parse_whole(const char *s, size_t b, size_t e, int depth, double *out);

/* One \frac argument at s[*p]: "{...}" (a whole number) or a single digit. */
static int frac_arg(const char *s, size_t n, size_t *p, int depth, double *out)
{
    size_t i = *p;
    while (i < n && s[i] == ' ')
        i++;
    if (i >= n)
        return 0;
    if (s[i] == '{') {
        size_t close = match_brace(s, i, n, 256);
        if (!close || !parse_whole(s, i + 1, close - 1, depth + 1, out))
            return 0;
        *p = close;
        return 1;
    }
    if (is_digit((unsigned char)s[i])) {
        *out = s[i] - '0';
        *p = i + 1;
        return 1;
    }
    return 0;
}

/* Appends c to the token buffer; returns 0 when full. */
static int buf_put(char *buf, size_t *len, char c)
{
    if (*len + 1 >= NUMBUF_MAX)
        return 0;
    buf[(*len)++] = c;
    buf[*len] = '\0';
    return 1;
}

/* Length of a thousands separator at s[i] followed by exactly three digits and a non-digit, or
 * 0. Separators: ",", "{,}", "\,", "\ ". */
static size_t thousands_sep(const char *s, size_t n, size_t i)
{
    size_t l = 0;
    if (has_prefix(s, n, i, ","))
        l = 1;
    else if (has_prefix(s, n, i, "{,}") || has_prefix(s, n, i, "\\,") || has_prefix(s, n, i, "\\ "))
        l = has_prefix(s, n, i, "{,}") ? 3 : 2;
    if (!l || n - i < l + 3)
        return 0;
    for (size_t k = 0; k < 3; k++)
        if (!is_digit((unsigned char)s[i + l + k]))
            return 0;
    if (i + l + 3 < n && is_digit((unsigned char)s[i + l + 3]))
        return 0;
    return l;
}

/* Digits with optional decimals ("12", "1.5", ".5") at s[*p] into buf; returns digit count. */
static size_t plain_digits(const char *s, size_t n, size_t *p, char *buf, size_t *bl, int *ok)
{
    size_t i = *p, digits = 0;
    while (*ok && i < n && is_digit((unsigned char)s[i])) {
        *ok &= buf_put(buf, bl, s[i++]);
        digits++;
    }
    if (i + 1 < n && s[i] == '.' && is_digit((unsigned char)s[i + 1])) {
        *ok &= buf_put(buf, bl, s[i++]);
        while (*ok && i < n && is_digit((unsigned char)s[i])) {
            *ok &= buf_put(buf, bl, s[i++]);
            digits++;
        }
    }
    *p = i;
    return digits;
}

/* Converts an ASCII number token; rejects overflow and non-finite values. */
static int to_double(const char *buf, double *out)
{
    char *end = NULL;
    double v = strtod(buf, &end);
    if (end == buf || *end != '\0' || !isfinite(v))
        return 0;
    *out = v;
    return 1;
}

/* Scans one number starting exactly at s[i] (before 'n'); on success sets *out and *end (just
 * past the token, including a trailing %, \% or degree mark). Never reads past 'n'. */
static int scan_number(const char *s, size_t n, size_t i, int depth, double *out, size_t *end)
{
    size_t p = i;
    int neg = 0;
    double v = 0;

    if (depth > PARSE_DEPTH || i >= n)
        return 0;
    if (s[p] == '-' || s[p] == '+') {
        neg = s[p] == '-';
        p++;
    } else if (has_prefix(s, n, p, minus_sign)) {
        neg = 1;
        p += 3;
    }
    if (has_prefix(s, n, p, "\\$"))
        p += 2;
    else if (p < n && s[p] == '$')
        p++;

    static const char *const fracs[] = {"\\frac", "\\dfrac", "\\tfrac", "\\cfrac"};
    size_t flen = 0;
    for (size_t k = 0; k < sizeof(fracs) / sizeof(fracs[0]); k++)
        if (has_prefix(s, n, p, fracs[k]) &&
            !(p + strlen(fracs[k]) < n && is_alpha((unsigned char)s[p + strlen(fracs[k])])))
            flen = strlen(fracs[k]);
    if (flen) {
        double num, den;
        p += flen;
        if (!frac_arg(s, n, &p, depth, &num) || !frac_arg(s, n, &p, depth, &den) || den == 0)
            return 0;
        v = num / den;
    } else {
        char buf[NUMBUF_MAX];
        size_t bl = 0, digits = 0, lead = 0;
        int ok = 1, has_exp = 0;
        buf[0] = '\0';
        while (ok && p < n && is_digit((unsigned char)s[p])) {
            ok &= buf_put(buf, &bl, s[p++]);
            lead++;
        }
        digits = lead;
        if (lead >= 1 && lead <= 3) {
            size_t l;
            while (ok && (l = thousands_sep(s, n, p)) != 0) {
                p += l;
                for (int k = 0; k < 3; k++)
                    ok &= buf_put(buf, &bl, s[p++]);
            }
        }
        if (p + 1 < n && s[p] == '.' && is_digit((unsigned char)s[p + 1])) {
            ok &= buf_put(buf, &bl, s[p++]);
            while (ok && p < n && is_digit((unsigned char)s[p])) {
                ok &= buf_put(buf, &bl, s[p++]);
                digits++;
            }
        }
        if (!digits)
            return 0;
        if (p < n && (s[p] == 'e' || s[p] == 'E')) {
            size_t q = p + 1;
            if (q < n && (s[q] == '-' || s[q] == '+'))
                q++;
            if (q < n && is_digit((unsigned char)s[q])) {
                ok &= buf_put(buf, &bl, 'e');
                for (size_t k = p + 1; k < q; k++)
                    ok &= buf_put(buf, &bl, s[k]);
                p = q;
                while (ok && p < n && is_digit((unsigned char)s[p]))
                    ok &= buf_put(buf, &bl, s[p++]);
                has_exp = 1;
            }
        }
        if (!ok || !to_double(buf, &v))
            return 0;
        if (!has_exp && p + 1 < n && s[p] == '/' && is_digit((unsigned char)s[p + 1])) {
            char dbuf[NUMBUF_MAX];
            size_t dl = 0, q = p + 1;
            int dok = 1;
            double den;
            dbuf[0] = '\0';
            plain_digits(s, n, &q, dbuf, &dl, &dok);
            if (dok && to_double(dbuf, &den) && den != 0) {
                v /= den;
                p = q;
            }
        }
    }

    if (p < n && s[p] == '%')
        p++;
    else if (has_prefix(s, n, p, "\\%"))
        p += 2;
    else if (has_prefix(s, n, p, "^\\circ"))
        p += 6;
    else if (has_prefix(s, n, p, "^{\\circ}"))
        p += 8;
    else if (has_prefix(s, n, p, "\xc2\xb0"))
        p += 2;

    if (!isfinite(v))
        return 0;
    *out = neg ? -v : v;
    *end = p;
    return 1;
}

/* Strips one layer of "<open>...<close>" from [*b, *e) when 'open' begins with '{'-ending
 * command and its brace matches the last character. */
static int strip_braced(const char *s, size_t *b, size_t *e, const char *open)
{
    size_t l = strlen(open);
    if (!has_prefix(s, *e, *b, open) || *e - *b < l + 1 || s[*e - 1] != '}')
        return 0;
    if (match_brace(s, *b + l - 1, *e, 0) != *e)
        return 0;
    *b += l;
    *e -= 1;
    return 1;
}

/* Strips a "(...)" pair whose parentheses match each other. */
static int strip_parens(const char *s, size_t *b, size_t *e)
{
    if (*e - *b < 2 || s[*b] != '(' || s[*e - 1] != ')')
        return 0;
    size_t depth = 0;
    for (size_t i = *b; i < *e; i++) {
        if (s[i] == '(')
            depth++;
        else if (s[i] == ')' && --depth == 0 && i != *e - 1)
            return 0;
    }
    *b += 1;
    *e -= 1;
    return 1;
}

/* Strips wrappers that may surround a whole answer (see the overview). */
static void strip_wrappers(const char *s, size_t *pb, size_t *pe)
{
    static const char *const braced[] = {"\\boxed{",  "\\fbox{",   "\\text{", "\\textbf{",
                                         "\\mathrm{", "\\mathbf{", "\\mbox{", "{"};
    size_t b = *pb, e = *pe;
    for (int iter = 0; iter < 64; iter++) {
        size_t ob = b, oe = e;
        while (b < e && is_space((unsigned char)s[b]))
            b++;
        while (e > b && is_space((unsigned char)s[e - 1]))
            e--;
        while (b < e && (s[b] == '*' || s[b] == '`'))
            b++;
        while (e > b && (s[e - 1] == '*' || s[e - 1] == '`'))
            e--;
        if (e > b && s[e - 1] == '.')
            e--;
        if (e - b >= 2 && s[b] == '$' && s[e - 1] == '$') {
            b++;
            e--;
        }
        if ((has_prefix(s, e, b, "\\(") && has_suffix(s, b + 2, e, "\\)")) ||
            (has_prefix(s, e, b, "\\[") && has_suffix(s, b + 2, e, "\\]"))) {
            b += 2;
            e -= 2;
        }
        if (has_prefix(s, e, b, "\\left(") && has_suffix(s, b + 6, e, "\\right)")) {
            b += 6;
            e -= 7;
        }
        if (has_prefix(s, e, b, "\\displaystyle") &&
            !(b + 13 < e && is_alpha((unsigned char)s[b + 13])))
            b += 13;
        for (size_t k = 0; k < sizeof(braced) / sizeof(braced[0]); k++)
            if (strip_braced(s, &b, &e, braced[k]))
                break;
        strip_parens(s, &b, &e);
        if (b == ob && e == oe)
            break;
    }
    *pb = b;
    *pe = e;
}

static int parse_whole(const char *s, size_t b, size_t e, int depth, double *out)
{
    double v;
    size_t end;
    strip_wrappers(s, &b, &e);
    if (b >= e || !scan_number(s, e, b, depth, &v, &end))
        return 0;
    while (end < e && is_space((unsigned char)s[end]))
        end++;
    if (end != e)
        return 0;
    *out = v;
    return 1;
}

/* True when the byte at s[i] may end a number that leads a phrase ("42 apples", "5\text{ cm}")
 * rather than being part of an expression ("3x", "2\sqrt{3}", "x^2"). */
static int number_follower_ok(const char *s, size_t n, size_t i)
{
    static const char *const cmds[] = {"\\text", "\\mathrm", "\\mbox", "\\quad", "\\qquad",
                                       "\\,",    "\\;",      "\\ ",    "\\!",    "\\)",
                                       "\\]",    "\\$",      "\\\\"};
    if (i >= n || is_space((unsigned char)s[i]))
        return 1;
    if (strchr(".,;:!?)]}$*`'\"", s[i]) && s[i] != '\0')
        return 1;
    for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
        if (has_prefix(s, n, i, cmds[k]))
            return 1;
    return 0;
}

/* The previous non-blank byte before s[i] (looking back at most 16 bytes), or 0. */
static int prev_nonblank(const char *s, size_t i)
{
    for (size_t k = 0; k < 16 && i > 0; k++) {
        char c = s[--i];
        if (c != ' ' && c != '\t')
            return (unsigned char)c;
    }
    return 0;
}

/* Finds the first (want_last == 0) or last number token in s[b..e). Tokens glued to a word
 * ("H2O", "x1"), a decimal point or a slash are skipped; a '-' after a digit or a closing
 * bracket is a minus operator, not a sign. */
static int find_number(const char *s, size_t b, size_t e, int want_last, double *out)
{
    int found = 0;
    size_t i = b;
    while (i < e) {
        unsigned char c = (unsigned char)s[i];
        int prev = i > 0 ? (unsigned char)s[i - 1] : ' ';
        double v;
        size_t end;
        int is_minus = has_prefix(s, e, i, minus_sign);
        if (!(is_digit(c) || c == '.' || c == '-' || c == '+' || c == '$' || c == '\\' ||
              is_minus)) {
            i++;
            continue;
        }
        if ((is_digit(c) || c == '.') &&
            (is_alnum(prev) || prev == '_' || prev == '.' || prev == '/' || prev == '\\')) {
            i++;
            continue;
        }
        if (c == '-' || c == '+' || is_minus) {
            int pc = prev_nonblank(s, i);
            if (is_digit(pc) || pc == ')' || pc == ']' || pc == '}' || pc == '%') {
                i += is_minus ? 3 : 1;
                continue;
            }
        }
        if (scan_number(s, e, i, 0, &v, &end)) {
            *out = v;
            found = 1;
            if (!want_last)
                return 1;
            i = end;
        } else {
            i += is_minus ? 3 : 1;
        }
    }
    return found;
}

/* A number that leads s[b..e) (after opening wrappers) and is followed by a word boundary. */
static int leading_number(const char *s, size_t b, size_t e, double *out)
{
    static const char *const opens[] = {"\\(",       "\\[",       "\\boxed{", "\\text{",
                                        "\\textbf{", "\\mathrm{", "\\left(",  "\\displaystyle"};
    for (int iter = 0; iter < 32; iter++) {
        size_t ob = b;
        while (b < e && (is_space((unsigned char)s[b]) || s[b] == '*' || s[b] == '`' ||
                         s[b] == '{' || s[b] == '(' || s[b] == '~' ||
                         (s[b] == '$' && b + 1 < e && !is_digit((unsigned char)s[b + 1]) &&
                          s[b + 1] != '.')))
            b++;
        for (size_t k = 0; k < sizeof(opens) / sizeof(opens[0]); k++)
            if (has_prefix(s, e, b, opens[k]))
                b += strlen(opens[k]);
        if (b == ob)
            break;
    }
    double v;
    size_t end;
    if (b >= e || !scan_number(s, e, b, 0, &v, &end) || !number_follower_ok(s, e, end))
        return 0;
    /* "3 x 4 = 12", "2 + 3": the leading number is an operand, not the answer. */
    static const char *const ops[] = {
        "+",      "-",     "*",    "/",        "=",        "x ",           "\\times",
        "\\cdot", "\\div", "\\pm", "\xc3\x97", "\xc3\xb7", "\xe2\x88\x92", "\xc2\xb7"};
    size_t q = end;
    while (q < e && (s[q] == ' ' || s[q] == '\t'))
        q++;
    for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++)
        if (has_prefix(s, e, q, ops[k]))
            return 0;
    *out = v;
    return 1;
}

/* Canonical text of a number: integers without decimals, others with up to 10 significant
 * digits ("%.10g" drops trailing zeros); -0 becomes "0". */
static char *format_number(struct arena *a, double v)
{
    char buf[64];
    if (v == 0)
        v = 0;
    if (fabs(v) < 1e15 && v == floor(v))
        snprintf(buf, sizeof(buf), "%.0f", v);
    else
        snprintf(buf, sizeof(buf), "%.10g", v);
    if (strcmp(buf, "-0") == 0)
        return arena_strdup(a, "0");
    return arena_strdup(a, buf);
}

/* ---- normalisation ---- */

static int is_strip_char(int c)
{
    return c == '"' || c == '\'' || c == '`' || c == '*' || c == '$';
}

/* Unicode quotes U+2018, U+2019, U+201C, U+201D: 3 bytes starting at s[i]. */
static int is_uquote(const char *s, size_t n, size_t i)
{
    return has_prefix(s, n, i, "\xe2\x80\x98") || has_prefix(s, n, i, "\xe2\x80\x99") ||
           has_prefix(s, n, i, "\xe2\x80\x9c") || has_prefix(s, n, i, "\xe2\x80\x9d");
}

/* Writes the normalised form of s[0..n) to dst (room for n + 1 bytes) and returns its length:
 *   1. \text{X}, \textbf{X}, \textit{X}, \textrm{X}, \mathrm{X}, \mathbf{X}, \mbox{X} -> X;
 *   2. ASCII upper case -> lower case; runs of whitespace -> one space;
 *   3. repeatedly: trim spaces, strip leading/trailing quotes (' " ` and curly ones), '*', '$',
 *      and trailing '.', '!', '?'.
 * Nothing else changes (no article removal, no unit removal). */
static size_t normalize_into(const char *s, size_t n, char *dst)
{
    static const char *const wraps[] = {"\\text{",   "\\textbf{", "\\textit{", "\\textrm{",
                                        "\\mathrm{", "\\mathbf{", "\\mbox{"};
    size_t closes[32];
    size_t nclose = 0, len = 0;
    int space = 0;

    for (size_t i = 0; i < n;) {
        if (nclose && i == closes[nclose - 1]) {
            nclose--;
            i++;
            continue;
        }
        if (s[i] == '\\' && nclose < sizeof(closes) / sizeof(closes[0])) {
            size_t l = 0, close = 0;
            for (size_t k = 0; k < sizeof(wraps) / sizeof(wraps[0]) && !l; k++)
                if (has_prefix(s, n, i, wraps[k]))
                    l = strlen(wraps[k]);
            if (l)
                close = match_brace(s, i + l - 1, n, 0);
            if (close && (!nclose || close - 1 < closes[nclose - 1])) {
                closes[nclose++] = close - 1;
                i += l;
                continue;
            }
        }
        unsigned char c = (unsigned char)s[i++];
        if (is_space(c)) {
            space = 1;
            continue;
        }
        if (space && len)
            dst[len++] = ' ';
        space = 0;
        dst[len++] = (char)to_lower(c);
    }

    size_t b = 0, e = len;
    for (;;) {
        size_t ob = b, oe = e;
        while (b < e && dst[b] == ' ')
            b++;
        while (e > b && dst[e - 1] == ' ')
            e--;
        if (b < e && is_strip_char((unsigned char)dst[b]))
            b++;
        else if (is_uquote(dst, e, b))
            b += 3;
        if (e > b && (is_strip_char((unsigned char)dst[e - 1]) || dst[e - 1] == '.' ||
                      dst[e - 1] == '!' || dst[e - 1] == '?'))
            e--;
        else if (e - b >= 3 && is_uquote(dst, e, e - 3))
            e -= 3;
        if (b == ob && e == oe)
            break;
    }
    memmove(dst, dst + b, e - b);
    dst[e - b] = '\0';
    return e - b;
}

/* ---- choices ---- */

/* True when s[i..e) is only closing punctuation / blanks. */
static int only_closers(const char *s, size_t i, size_t e)
{
    for (; i < e; i++)
        if (!strchr(" \t\r\n.)]}*:$`\"'!,", s[i]) || s[i] == '\0')
            return 0;
    return 1;
}

/* The choice letter a candidate starts with ("B", "(b)", "option C", "D) 42", "**A**"), or 0.
 * 'lone' requires the letter to stand alone ("B", "(B)", "b.", not "B) 42"). Lower-case letters
 * count only inside parentheses or when alone. */
static int choice_letter(const char *s, size_t b, size_t e, int lone)
{
    static const char *const opens[] = {"\\text{", "\\textbf{", "\\mathrm{", "\\boxed{", "\\("};
    static const char *const words[] = {"option", "choice", "letter"};
    int paren = 0;
    for (int iter = 0; iter < 32; iter++) {
        size_t ob = b;
        while (b < e && strchr(" \t\r\n*$([{`\"'", s[b]) && s[b] != '\0') {
            paren = s[b] == '(';
            b++;
        }
        for (size_t k = 0; k < sizeof(opens) / sizeof(opens[0]); k++)
            if (has_prefix(s, e, b, opens[k])) {
                b += strlen(opens[k]);
                paren = 0;
            }
        for (size_t k = 0; k < sizeof(words) / sizeof(words[0]) && !lone; k++)
            if (has_prefix_ci(s, e, b, words[k]) &&
                !(b + strlen(words[k]) < e && is_alpha((unsigned char)s[b + strlen(words[k])]))) {
                b += strlen(words[k]);
                paren = 0;
                while (b < e && s[b] == ':')
                    b++;
            }
        if (b == ob)
            break;
    }
    if (b >= e)
        return 0;
    int c = (unsigned char)s[b];
    if (b + 1 < e && (is_alnum((unsigned char)s[b + 1]) || s[b + 1] == '_'))
        return 0;
    int alone = only_closers(s, b + 1, e);
    if (c >= 'A' && c <= 'J' && (alone || !lone))
        return c;
    if (c >= 'a' && c <= 'j' && (alone || (paren && !lone)))
        return to_upper(c);
    return 0;
}

/* ---- extraction ---- */

struct ctx {
    struct arena *a;
    pcre2_match_data *md;
    enum answer_kind hint;
    const char *fb; /* first candidate that did not fit the hint */
    size_t fb_len;
};

static struct answer none_answer(void)
{
    struct answer r = {ANSWER_NONE, 0, ""};
    return r;
}

static struct answer number_answer(struct arena *a, double v)
{
    if (v == 0)
        v = 0; /* no -0 */
    struct answer r = {ANSWER_NUMBER, v, format_number(a, v)};
    return r;
}

static struct answer choice_answer(struct arena *a, int letter)
{
    struct answer r = {ANSWER_CHOICE, 0, arena_printf(a, "%c", letter)};
    return r;
}

/* TEXT answer of s[b..e), or NONE when it normalises to "". */
static struct answer text_answer(struct arena *a, const char *s, size_t b, size_t e)
{
    char *buf = arena_alloc(a, e - b + 1);
    if (normalize_into(s + b, e - b, buf) == 0)
        return none_answer();
    struct answer r = {ANSWER_TEXT, 0, buf};
    return r;
}

/* Interprets candidate s[b..e) by the hint; returns 0 (and remembers it) when it does not fit. */
static int interpret(struct ctx *c, const char *s, size_t b, size_t e, struct answer *out)
{
    double v;
    int letter;

    while (b < e && is_space((unsigned char)s[b]))
        b++;
    while (e > b && is_space((unsigned char)s[e - 1]))
        e--;
    if (b >= e)
        return 0;

    if (c->hint == ANSWER_TEXT) {
        *out = text_answer(c->a, s, b, e);
        return out->kind != ANSWER_NONE;
    }
    if (c->hint == ANSWER_CHOICE) {
        letter = choice_letter(s, b, e, 0);
        if (letter) {
            *out = choice_answer(c->a, letter);
            return 1;
        }
    } else {
        int found = parse_whole(s, b, e, 0, &v) || leading_number(s, b, e, &v);
        if (!found) {
            const char *eq = NULL;
            for (size_t i = b; i < e; i++)
                if (s[i] == '=')
                    eq = s + i;
            if (eq) {
                size_t q = (size_t)(eq - s) + 1;
                found = parse_whole(s, q, e, 0, &v) || leading_number(s, q, e, &v);
            }
        }
        if (!found && c->hint == ANSWER_NUMBER)
            found = find_number(s, b, e, 0, &v);
        if (found) {
            *out = number_answer(c->a, v);
            return 1;
        }
        if (c->hint == ANSWER_NONE) {
            letter = choice_letter(s, b, e, 1);
            if (letter) {
                *out = choice_answer(c->a, letter);
                return 1;
            }
            *out = text_answer(c->a, s, b, e);
            return out->kind != ANSWER_NONE;
        }
    }
    if (!c->fb) {
        c->fb = s + b;
        c->fb_len = e - b;
    }
    return 0;
}

/* The content of the last \boxed / \fbox in s[0..n) that is balanced and not blank. */
static int find_boxed(const char *s, size_t n, size_t *cb, size_t *ce)
{
    int tries = 0;
    for (size_t i = n; i-- > 0 && tries < BOXED_TRIES;) {
        size_t l;
        if (s[i] != '\\')
            continue;
        if (has_prefix(s, n, i, "\\boxed"))
            l = 6;
        else if (has_prefix(s, n, i, "\\fbox"))
            l = 5;
        else
            continue;
        size_t p = i + l;
        if (p < n && is_alpha((unsigned char)s[p]))
            continue;
        tries++;
        while (p < n && (s[p] == ' ' || s[p] == '\t'))
            p++;
        size_t b, e;
        if (p < n && s[p] == '{') {
            size_t close = match_brace(s, p, n, 0);
            if (!close)
                continue;
            b = p + 1;
            e = close - 1;
        } else if (p > i + l) {
            b = p;
            e = p;
            while (e < n && !is_space((unsigned char)s[e]) && s[e] != '$' && s[e] != '\\')
                e++;
        } else {
            continue;
        }
        size_t tb = b;
        while (tb < e && is_space((unsigned char)s[tb]))
            tb++;
        if (tb == e)
            continue;
        *cb = b;
        *ce = e;
        return 1;
    }
    return 0;
}

/* The answer text after a phrase ending at s[p]: the rest of the line up to a sentence end, or
 * the next non-blank line when the phrase ends its line. A display "\[" or "$$" that opens
 * there runs to its closer. Returns 0 when empty. */
static int phrase_candidate(const char *s, size_t n, size_t p, size_t *cb, size_t *ce)
{
    while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '*' || s[p] == ':'))
        p++;
    for (int lines = 0; p < n && (s[p] == '\n' || s[p] == '\r');) {
        if (s[p] == '\n' && ++lines > NEXTLINE_SKIP)
            return 0;
        p++;
        while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '*'))
            p++;
    }
    if (p >= n)
        return 0;
    size_t lim = n - p > CAND_MAX ? p + CAND_MAX : n;
    if (has_prefix(s, lim, p, "\\[") || has_prefix(s, lim, p, "$$")) {
        const char *closer = s[p] == '$' ? "$$" : "\\]";
        for (size_t q = p + 2; q + 2 <= lim; q++)
            if (has_prefix(s, lim, q, closer)) {
                *cb = p;
                *ce = q + 2;
                return 1;
            }
    }
    size_t e = p;
    while (e < lim && s[e] != '\n' && s[e] != '\r') {
        if ((s[e] == '.' || s[e] == '!' || s[e] == '?') &&
            (e + 1 >= n || is_space((unsigned char)s[e + 1])))
            break;
        e++;
    }
    if (e == p)
        return 0;
    *cb = p;
    *ce = e;
    return 1;
}

/* The last match of the given patterns whose candidate is not empty; the candidate goes to
 * [*cb, *ce). */
static int last_phrase(struct ctx *c, const int *ids, size_t nids, const char *s, size_t n,
                       size_t *cb, size_t *ce)
{
    int found = 0;
    size_t best = 0;
    for (size_t k = 0; k < nids; k++) {
        pcre2_code *code = re_code[ids[k]];
        size_t off = 0;
        while (off <= n) {
            int rc = pcre2_match(code, (PCRE2_SPTR)s, n, off, 0, c->md, NULL);
            if (rc < 0)
                break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
            size_t b, e;
            if ((!found || ov[0] >= best) && phrase_candidate(s, n, ov[1], &b, &e)) {
                found = 1;
                best = ov[0];
                *cb = b;
                *ce = e;
            }
            off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        }
    }
    return found;
}

/* The letter captured by the last match of the given choice patterns, or 0. */
static int last_choice(struct ctx *c, const int *ids, size_t nids, const char *s, size_t n)
{
    int letter = 0;
    size_t best = 0;
    for (size_t k = 0; k < nids; k++) {
        pcre2_code *code = re_code[ids[k]];
        size_t off = 0;
        while (off <= n) {
            int rc = pcre2_match(code, (PCRE2_SPTR)s, n, off, 0, c->md, NULL);
            if (rc < 0)
                break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
            for (int g = 1; g < rc; g++) {
                if (ov[2 * g] == PCRE2_UNSET || ov[2 * g + 1] != ov[2 * g] + 1)
                    continue;
                if (!letter || ov[0] >= best) {
                    letter = to_upper((unsigned char)s[ov[2 * g]]);
                    best = ov[0];
                }
                break;
            }
            off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        }
    }
    return letter;
}

static struct answer extract_region(struct ctx *c, const char *s, size_t n)
{
    static const int final_ids[] = {RE_FINAL, RE_GSM};
    static const int answer_ids[] = {RE_ANSWER};
    static const int strong_ids[] = {RE_CHOICE_STRONG};
    static const int choice_ids[] = {RE_CHOICE_OPTION, RE_CHOICE_BOLD, RE_CHOICE_LINE,
                                     RE_CHOICE_PAREN};
    struct answer r = none_answer();
    size_t b, e;
    double v;

    c->fb = NULL;
    c->fb_len = 0;
    if (find_boxed(s, n, &b, &e) && interpret(c, s, b, e, &r))
        return r;

    /* Phrases and numbers: only the last SCAN_WINDOW bytes, from a token boundary. */
    const char *w = s;
    size_t wn = n;
    if (n > SCAN_WINDOW) {
        size_t skip = n - SCAN_WINDOW;
        for (size_t k = 0; k < 64 && skip < n && !is_space((unsigned char)s[skip]); k++)
            skip++;
        w = s + skip;
        wn = n - skip;
    }

    if (last_phrase(c, final_ids, 2, w, wn, &b, &e) && interpret(c, w, b, e, &r))
        return r;
    if (last_phrase(c, answer_ids, 1, w, wn, &b, &e) && interpret(c, w, b, e, &r))
        return r;
    if (c->hint == ANSWER_CHOICE) {
        int letter = last_choice(c, strong_ids, 1, w, wn);
        if (!letter)
            letter = last_choice(c, choice_ids, 4, w, wn);
        if (letter)
            return choice_answer(c->a, letter);
    }
    if ((c->hint == ANSWER_NUMBER || c->hint == ANSWER_NONE) && find_number(w, 0, wn, 1, &v))
        return number_answer(c->a, v);
    if (c->fb)
        return text_answer(c->a, c->fb, 0, c->fb_len);
    return r;
}

int answer_init(void)
{
    if (re_ready)
        return 0;
    for (int k = 0; k < RE_COUNT; k++) {
        int err;
        PCRE2_SIZE eoff;
        re_code[k] = pcre2_compile((PCRE2_SPTR)re_src[k].pattern, PCRE2_ZERO_TERMINATED,
                                   re_src[k].flags, &err, &eoff, NULL);
        if (!re_code[k]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof(msg));
            fprintf(stderr, "answer: pattern %d: %s at %zu\n", k, (const char *)msg, (size_t)eoff);
            answer_cleanup();
            return -1;
        }
    }
    re_ready = 1;
    return 0;
}

void answer_cleanup(void)
{
    re_ready = 0;
    for (int k = 0; k < RE_COUNT; k++) {
        pcre2_code_free(re_code[k]);
        re_code[k] = NULL;
    }
}

struct answer answer_extract(struct arena *a, const char *text, enum answer_kind hint)
{
    struct answer r = none_answer();
    if (!re_ready || !a || !text)
        return r;
    struct ctx c = {a, NULL, hint, NULL, 0};
    if (hint != ANSWER_NUMBER && hint != ANSWER_CHOICE && hint != ANSWER_TEXT)
        c.hint = ANSWER_NONE;
    c.md = pcre2_match_data_create(8, NULL);
    if (!c.md)
        return r;

    size_t n = strlen(text);
    size_t after = 0;
    for (size_t i = n; i-- > 0;)
        if (text[i] == '<' && has_prefix(text, n, i, "</think>")) {
            after = i + 8;
            break;
        }
    if (after)
        r = extract_region(&c, text + after, n - after);
    if (r.kind == ANSWER_NONE)
        r = extract_region(&c, text, n);
    pcre2_match_data_free(c.md);
    return r;
}

char *answer_normalize(struct arena *a, const char *text)
{
    if (!a)
        return NULL;
    if (!text)
        return arena_strdup(a, "");
    size_t n = strlen(text);
    char *buf = arena_alloc(a, n + 1);
    normalize_into(text, n, buf);
    return buf;
}

bool answer_parse_number(const char *s, double *out)
{
    double v;
    if (!s || !parse_whole(s, 0, strlen(s), 0, &v))
        return false;
    if (out)
        *out = v;
    return true;
}

static bool numbers_close(double x, double y)
{
    if (!isfinite(x) || !isfinite(y))
        return false;
    double d = fabs(x - y);
    double m = fmax(fabs(x), fabs(y));
    return d <= 1e-9 || d <= 1e-6 * m;
}

/* Letter of a CHOICE answer, or of a TEXT answer that is a lone letter; 0 otherwise. */
static int letter_of(const struct answer *x)
{
    const char *t = x->text ? x->text : "";
    return choice_letter(t, 0, strlen(t), 1);
}

/* Numeric value of an answer: NUMBER's num, or a TEXT that parses as a whole number. */
static bool number_of(const struct answer *x, double *v)
{
    if (x->kind == ANSWER_NUMBER) {
        *v = x->num;
        return true;
    }
    return x->kind == ANSWER_TEXT && x->text && answer_parse_number(x->text, v);
}

static bool texts_equal(const char *p, const char *q)
{
    size_t pn = strlen(p), qn = strlen(q);
    char *bp = malloc(pn + 1), *bq = malloc(qn + 1);
    bool eq;
    if (!bp || !bq) {
        eq = strcmp(p, q) == 0;
    } else {
        size_t lp = normalize_into(p, pn, bp), lq = normalize_into(q, qn, bq);
        eq = lp == lq && memcmp(bp, bq, lp) == 0;
    }
    free(bp);
    free(bq);
    return eq;
}

bool answer_equal(const struct answer *x, const struct answer *y)
{
    double vx, vy;
    if (!x || !y || x->kind == ANSWER_NONE || y->kind == ANSWER_NONE)
        return false;
    if (x->kind == ANSWER_CHOICE || y->kind == ANSWER_CHOICE) {
        if (x->kind == ANSWER_NUMBER || y->kind == ANSWER_NUMBER)
            return false;
        int lx = letter_of(x), ly = letter_of(y);
        return lx && lx == ly;
    }
    if (x->kind == ANSWER_TEXT && y->kind == ANSWER_TEXT &&
        texts_equal(x->text ? x->text : "", y->text ? y->text : ""))
        return true;
    if (number_of(x, &vx) && number_of(y, &vy))
        return numbers_close(vx, vy);
    return false;
}

const char *answer_key(struct arena *a, const struct answer *x)
{
    if (!a || !x)
        return "";
    switch (x->kind) {
    case ANSWER_NUMBER:
        if (!isfinite(x->num))
            return "";
        return format_number(a, x->num);
    case ANSWER_CHOICE: {
        int l = letter_of(x);
        return l ? arena_printf(a, "%c", l) : "";
    }
    case ANSWER_TEXT:
        return answer_normalize(a, x->text ? x->text : "");
    default:
        return "";
    }
}
