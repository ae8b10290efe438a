/* redact.c: key-shaped tokens out of upstream text (see redact.h). A plain scan over words,
 * no regex: linear in the length of the text. */
#include "redact.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define MARK     "[redacted]"
#define MARK_LEN (sizeof(MARK) - 1)

/* Characters of a word: what keys, masked keys and base64 are made of. */
static bool word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '*' || c == '+' || c == '/' || c == '=' || c == '.';
}

static bool starts(const char *w, size_t n, const char *prefix, size_t min_len)
{
    size_t pl = strlen(prefix);

    return n >= min_len && n > pl && strncmp(w, prefix, pl) == 0;
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Does the word w[0..n) look like a credential? */
static bool secret_word(const char *w, size_t n)
{
    static const char *const ids[] = {"req_", "chatcmpl-", "call_", "msg_", "resp_", "run_"};
    size_t alnum = 0, letters = 0, digits = 0;
    bool masked = false, other = false;

    if (starts(w, n, "sk-", 6) || starts(w, n, "sk_", 10) || starts(w, n, "AKIA", 16) ||
        starts(w, n, "ASIA", 16) || starts(w, n, "ghp_", 10) || starts(w, n, "gho_", 10) ||
        starts(w, n, "ghu_", 10) || starts(w, n, "ghs_", 10) || starts(w, n, "ghr_", 10) ||
        starts(w, n, "github_pat_", 16) || starts(w, n, "xoxb-", 10) || starts(w, n, "xoxp-", 10) ||
        starts(w, n, "xoxa-", 10) || starts(w, n, "xoxr-", 10) || starts(w, n, "xoxs-", 10) ||
        starts(w, n, "AIza", 30))
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];

        if (is_alnum(c)) {
            alnum++;
            if (c >= '0' && c <= '9')
                digits++;
            else
                letters++;
        } else if (c == '*' && i + 2 < n && w[i + 1] == '*' && w[i + 2] == '*') {
            masked = true;
        } else if (c == '.' || c == '*' || (c == '/' && i + 1 < n && w[i + 1] == '/')) {
            other = true; /* dotted names, URLs: not a base64 run */
        }
    }
    if (masked && alnum >= 3)
        return true;
    if (n < 32 || other || !letters || !digits || w[0] == '/')
        return false;
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        if (strncmp(w, ids[i], strlen(ids[i])) == 0)
            return false;
    return true;
}

size_t redact_secrets(char *s)
{
    size_t r = 0, w = 0, count = 0;
    bool after_bearer = false;

    if (!s)
        return 0;
    while (s[r]) {
        size_t n = 0;

        if (!word_char((unsigned char)s[r])) {
            if (s[r] != ' ' && s[r] != '\t' && s[r] != ':')
                after_bearer = false;
            if (w != r)
                s[w] = s[r];
            w++;
            r++;
            continue;
        }
        while (s[r + n] && word_char((unsigned char)s[r + n]))
            n++;
        if (after_bearer || secret_word(s + r, n)) {
            if (n >= MARK_LEN) {
                memcpy(s + w, MARK, MARK_LEN);
                w += MARK_LEN;
            } else {
                memset(s + w, '*', n);
                w += n;
            }
            count++;
            after_bearer = false;
        } else {
            after_bearer = n == 6 && strncasecmp(s + r, "Bearer", 6) == 0;
            if (w != r)
                memmove(s + w, s + r, n);
            w += n;
        }
        r += n;
    }
    if (w != r) /* text without secrets is never written to */
        s[w] = '\0';
    return count;
}
