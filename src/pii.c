/* pii.c: pattern-based detection of personal data and secrets, per-request placeholders and
 * their restoration (include/pii.h). Each kind is a pcre2 pattern for candidates plus, where a
 * checksum or a range exists, a validator (Luhn for cards, mod-97 for IBAN, octet ranges and
 * inet_pton for addresses), so that look-alikes (version numbers, dates, order ids) are not
 * taken. Where kinds overlap, the earlier, then the longer span wins. */
#define _GNU_SOURCE /* explicit_bzero, strncasecmp */
#include "pii.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "buf.h"
#include "log.h"
#include "px.h"

/* Candidates; validators below decide. Lookarounds keep a match from starting or ending
 * inside a longer word or number. */
static const char *const patterns[PII_NKINDS] = {
    [PII_EMAIL] = "(?<![\\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}"
                  "[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\\.[A-Za-z]{"
                  "2,24}(?![\\w-])",
    /* E.164 (+ and 7-15 digits, separators allowed), NANP (555) 123-4567 / 555-123-4567,
     * and European national forms starting with 0 (030 1234567, 020 7946 0958). */
    [PII_PHONE] = "(?<![\\w+/.-])(?<!\\d[ .-])(?:\\+[1-9](?:[ .-]?\\(?\\d\\)?){6,14}"
                  "|\\(\\d{3}\\)[ .-]?\\d{3}[ .-]\\d{4}"
                  "|\\d{3}[.-]\\d{3}[.-]\\d{4}"
                  "|0\\d{2,4}[ ]\\d{3,4}(?:[ ]\\d{3,4})?)(?![\\w/.-]*\\d)(?!-\\w)",
    [PII_CARD] = "(?<![\\w.-])\\d(?:[ -]?\\d){12,18}(?![\\w-]|\\.\\d)",
    [PII_IBAN] = "(?<![\\w])[A-Z]{2}\\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![\\w])",
    [PII_IPV4] = "(?<![\\w.])(?:\\d{1,3}\\.){3}\\d{1,3}(?![\\w]|\\.\\d)",
    [PII_IPV6] = "(?<![\\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\\d{1,3}\\.){3}\\d{"
                 "1,3})?(?![\\w:.])",
    [PII_SSN] = "(?<![\\w-])(?!000|666|9\\d\\d)\\d{3}-(?!00)\\d{2}-(?!0000)\\d{4}(?![\\w-])",
    [PII_SECRET] = "(?:sk-(?:proj-|ant-[a-z0-9]+-|svcacct-)?[A-Za-z0-9_-]{20,}"
                   "|AKIA[0-9A-Z]{16}"
                   "|gh[pousr]_[A-Za-z0-9]{36,}"
                   "|github_pat_[A-Za-z0-9_]{40,}"
                   "|xox[abprs]-[A-Za-z0-9-]{10,}"
                   "|AIza[0-9A-Za-z_-]{35}"
                   "|(?i:bearer)\\s+[A-Za-z0-9._~+/-]{20,}=*"
                   "|-----BEGIN [A-Z ]*PRIVATE KEY-----[\\s\\S]*?-----END [A-Z ]*PRIVATE KEY-----)",
};

static pcre2_code *compiled[PII_NKINDS];

static const char *const names[PII_NKINDS] = {"email", "phone", "card", "iban",
                                              "ipv4",  "ipv6",  "ssn",  "secret"};
static const char *const upper_names[PII_NKINDS] = {"EMAIL", "PHONE", "CARD", "IBAN",
                                                    "IPV4",  "IPV6",  "SSN",  "SECRET"};

const char *pii_kind_name(enum pii_kind k, bool upper)
{
    if ((unsigned)k >= PII_NKINDS)
        return "?";
    return upper ? upper_names[k] : names[k];
}

int pii_init(void)
{
    for (int k = 0; k < PII_NKINDS; k++) {
        int ec;
        PCRE2_SIZE eo;

        if (compiled[k])
            continue;
        compiled[k] = pcre2_compile((PCRE2_SPTR)patterns[k], PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec,
                                    &eo, NULL);
        if (!compiled[k]) {
            PCRE2_UCHAR msg[128];

            pcre2_get_error_message(ec, msg, sizeof(msg));
            log_error("pii pattern %s: %s at %zu", names[k], (const char *)msg, (size_t)eo);
            return -1;
        }
    }
    return 0;
}

void pii_cleanup(void)
{
    for (int k = 0; k < PII_NKINDS; k++) {
        pcre2_code_free(compiled[k]);
        compiled[k] = NULL;
    }
}

/* ---- validators ------------------------------------------------------------------------------ */

static bool luhn_ok(const char *s, size_t len)
{
    int sum = 0, n = 0;
    bool dbl = false;

    for (size_t i = len; i > 0; i--) {
        char c = s[i - 1];

        if (!isdigit((unsigned char)c))
            continue;
        int d = c - '0';
        if (dbl) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
        dbl = !dbl;
        n++;
    }
    if (n < 13 || n > 19 || sum % 10 != 0)
        return false;
    /* All-same digits (0000 0000 0000 0000) pass Luhn but are placeholders, not cards. */
    for (size_t i = 1; i < len; i++)
        if (isdigit((unsigned char)s[i]) && s[i] != s[0])
            return true;
    return false;
}

static bool iban_ok(const char *s, size_t len)
{
    char c[40];
    size_t n = 0;
    int rem = 0;

    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ') {
            if (n == sizeof(c))
                return false;
            c[n++] = s[i];
        }
    if (n < 15 || n > 34)
        return false;
    /* Move the first four characters to the end; letters become 10..35; mod 97 must be 1. */
    for (size_t k = 0; k < n; k++) {
        char ch = c[(k + 4) % n];

        if (isdigit((unsigned char)ch))
            rem = (rem * 10 + (ch - '0')) % 97;
        else if (isupper((unsigned char)ch))
            rem = (rem * 100 + (ch - 'A' + 10)) % 97;
        else
            return false;
    }
    return rem == 1;
}

static bool ipv4_ok(const char *s, size_t len)
{
    char tmp[16];
    struct in_addr a;

    if (len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    /* No leading zeros (01.02.03.04 is more often a date or an id than an address). */
    for (size_t i = 0; i < len; i++)
        if (s[i] == '0' && (i == 0 || s[i - 1] == '.') && i + 1 < len &&
            isdigit((unsigned char)s[i + 1]))
            return false;
    return inet_pton(AF_INET, tmp, &a) == 1;
}

/* A version string ("v1.2.3.4", "version 10.0.0.1") is not an address. */
static bool after_version_word(const char *text, size_t start)
{
    size_t i = start;

    if (i > 0 && (text[i - 1] == 'v' || text[i - 1] == 'V'))
        return true;
    while (i > 0 && text[i - 1] == ' ')
        i--;
    return (i >= 7 && strncasecmp(text + i - 7, "version", 7) == 0) ||
           (i >= 5 && strncasecmp(text + i - 5, "build", 5) == 0) ||
           (i >= 7 && strncasecmp(text + i - 7, "release", 7) == 0);
}

static bool ipv6_ok(const char *s, size_t len)
{
    char tmp[64];
    struct in6_addr a;
    int colons = 0, hexletters = 0;

    if (len >= sizeof(tmp) || len < 3)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        colons += s[i] == ':';
        hexletters += isalpha((unsigned char)s[i]) != 0;
    }
    if (inet_pton(AF_INET6, tmp, &a) != 1)
        return false;
    /* "::" alone or a clock time are not worth masking; an address has 3+ colons or letters. */
    return colons >= 3 || (colons >= 2 && hexletters > 0 && strstr(tmp, "::"));
}

static bool phone_ok(const char *s, size_t len)
{
    int d = 0;

    for (size_t i = 0; i < len; i++)
        d += isdigit((unsigned char)s[i]) != 0;
    return d >= 7 && d <= 15;
}

static bool valid(enum pii_kind k, const char *text, size_t start, size_t len)
{
    const char *s = text + start;

    switch (k) {
    case PII_CARD:
        return luhn_ok(s, len);
    case PII_IBAN:
        return iban_ok(s, len);
    case PII_IPV4:
        return ipv4_ok(s, len) && !after_version_word(text, start);
    case PII_IPV6:
        return ipv6_ok(s, len);
    case PII_PHONE:
        return phone_ok(s, len);
    default:
        return true;
    }
}

/* ---- finding --------------------------------------------------------------------------------- */

static int span_cmp(const void *a, const void *b)
{
    const struct pii_span *x = a, *y = b;

    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return (int)x->kind - (int)y->kind;
}

size_t pii_find(const char *text, size_t len, struct pii_span **out)
{
    struct pii_span *all = NULL;
    size_t n = 0, cap = 0, kept = 0;

    *out = NULL;
    for (int k = 0; k < PII_NKINDS; k++) {
        pcre2_match_data *md;
        PCRE2_SIZE off = 0;

        if (!compiled[k])
            return 0; /* pii_init was not called */
        md = pcre2_match_data_create_from_pattern(compiled[k], NULL);
        while (off <= len) {
            int rc = pcre2_match(compiled[k], (PCRE2_SPTR)text, len, off, 0, md, NULL);
            PCRE2_SIZE *ov;

            if (rc < 0)
                break;
            ov = pcre2_get_ovector_pointer(md);
            if (ov[1] == ov[0]) {
                off = ov[1] + 1;
                continue;
            }
            if (valid((enum pii_kind)k, text, ov[0], ov[1] - ov[0])) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 8;
                    all = xrealloc(all, cap * sizeof(*all));
                }
                all[n].start = ov[0];
                all[n].len = ov[1] - ov[0];
                all[n++].kind = (enum pii_kind)k;
            }
            off = ov[1];
        }
        pcre2_match_data_free(md);
    }
    if (n == 0) {
        free(all);
        return 0;
    }
    qsort(all, n, sizeof(*all), span_cmp);
    for (size_t i = 0; i < n; i++) { /* drop spans overlapping an earlier kept one */
        if (kept > 0 && all[i].start < all[kept - 1].start + all[kept - 1].len)
            continue;
        all[kept++] = all[i];
    }
    *out = all;
    return kept;
}

/* ---- placeholders ---------------------------------------------------------------------------- */

struct pii_entry {
    char *original;
    char placeholder[32];
};

#define PII_MAX_LABELS 8

struct pii_map {
    struct pii_entry *e;
    size_t n, cap;
    int counter[PII_NKINDS];
    struct {
        char label[16];
        int n;
    } labels[PII_MAX_LABELS]; /* counters of the labels of pii_mask_with's spans */
    size_t nlabels;
};

struct pii_map *pii_map_create(void)
{
    return xcalloc(1, sizeof(struct pii_map));
}

void pii_map_destroy(struct pii_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        explicit_bzero(m->e[i].original, strlen(m->e[i].original));
        free(m->e[i].original);
    }
    free(m->e);
    free(m);
}

size_t pii_map_count(const struct pii_map *m)
{
    return m->n;
}

static const char *placeholder_new(struct pii_map *m, const char *label, int *counter,
                                   const char *s, size_t len)
{
    for (size_t i = 0; i < m->n; i++)
        if (strlen(m->e[i].original) == len && memcmp(m->e[i].original, s, len) == 0)
            return m->e[i].placeholder;
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->e = xrealloc(m->e, m->cap * sizeof(*m->e));
    }
    m->e[m->n].original = xstrndup(s, len);
    snprintf(m->e[m->n].placeholder, sizeof(m->e[m->n].placeholder), "[%s_%d]", label, ++*counter);
    return m->e[m->n++].placeholder;
}

static const char *placeholder_for(struct pii_map *m, enum pii_kind k, const char *s, size_t len)
{
    return placeholder_new(m, upper_names[k], &m->counter[k], s, len);
}

/* A label from outside (an NER service) made placeholder-safe: A-Z and '_', at most 15
 * characters, "NAME" when nothing is left; a label beyond the first 8 shares the 8th counter. */
static const char *placeholder_label(struct pii_map *m, const char *label, const char *s,
                                     size_t len)
{
    char clean[16];
    size_t n = 0, i;

    for (; label && *label && n < sizeof(clean) - 1; label++) {
        char c = *label >= 'a' && *label <= 'z' ? (char)(*label - 'a' + 'A') : *label;

        if ((c >= 'A' && c <= 'Z') || c == '_')
            clean[n++] = c;
    }
    clean[n] = '\0';
    if (n == 0)
        snprintf(clean, sizeof(clean), "NAME");
    for (i = 0; i < m->nlabels; i++)
        if (strcmp(m->labels[i].label, clean) == 0)
            break;
    if (i == m->nlabels) {
        if (m->nlabels < PII_MAX_LABELS)
            snprintf(m->labels[m->nlabels++].label, sizeof(m->labels[0].label), "%s", clean);
        else
            i = PII_MAX_LABELS - 1;
    }
    return placeholder_new(m, m->labels[i].label, &m->labels[i].n, s, len);
}

static int extra_cmp(const void *a, const void *b)
{
    const struct pii_extra *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

char *pii_mask_with(struct pii_map *m, const char *text, size_t len, const struct pii_extra *extra,
                    size_t nextra)
{
    struct pii_span *sp;
    size_t n = pii_find(text, len, &sp), pos = 0, i = 0, j = 0;
    struct pii_extra *xs = NULL;
    struct buf b;

    if (nextra > 0) {
        xs = xmalloc(nextra * sizeof(*xs));
        memcpy(xs, extra, nextra * sizeof(*xs));
        qsort(xs, nextra, sizeof(*xs), extra_cmp);
    }
    buf_init(&b, 0);
    while (i < n || j < nextra) {
        bool pattern = j >= nextra || (i < n && sp[i].start <= xs[j].start);
        size_t start = pattern ? sp[i].start : xs[j].start;
        size_t slen = pattern ? sp[i].len : xs[j].len;
        const char *ph;

        if (!pattern) {
            const struct pii_extra *x = &xs[j++];

            /* out of range, empty, overlapping what is masked, or a pattern span: left out */
            if (x->len == 0 || x->start > len || x->len > len - x->start || x->start < pos ||
                (i < n && x->start + x->len > sp[i].start))
                continue;
            ph = placeholder_label(m, x->label, text + start, slen);
        } else {
            i++;
            if (start < pos)
                continue;
            ph = placeholder_for(m, sp[i - 1].kind, text + start, slen);
        }
        buf_append(&b, text + pos, start - pos);
        buf_puts(&b, ph);
        pos = start + slen;
    }
    buf_append(&b, text + pos, len - pos);
    free(sp);
    free(xs);
    buf_cstr(&b);
    return buf_take(&b, NULL);
}

char *pii_mask(struct pii_map *m, const char *text, size_t len)
{
    return pii_mask_with(m, text, len, NULL, 0);
}

/* The entry whose placeholder starts at s (within len bytes), or NULL. */
static const struct pii_entry *placeholder_at(const struct pii_map *m, const char *s, size_t len)
{
    for (size_t i = 0; i < m->n; i++) {
        size_t pl = strlen(m->e[i].placeholder);

        if (pl <= len && memcmp(s, m->e[i].placeholder, pl) == 0)
            return &m->e[i];
    }
    return NULL;
}

char *pii_unmask(const struct pii_map *m, const char *text, size_t len)
{
    struct buf b;
    size_t i = 0;

    buf_init(&b, 0);
    while (i < len) {
        const char *br = memchr(text + i, '[', len - i);
        const struct pii_entry *e;

        if (!br) {
            buf_append(&b, text + i, len - i);
            break;
        }
        buf_append(&b, text + i, (size_t)(br - (text + i)));
        i = (size_t)(br - text);
        e = placeholder_at(m, br, len - i);
        if (e) {
            buf_puts(&b, e->original);
            i += strlen(e->placeholder);
        } else {
            buf_append(&b, "[", 1);
            i++;
        }
    }
    buf_cstr(&b);
    return buf_take(&b, NULL);
}

/* ---- streamed restoration -------------------------------------------------------------------- */

struct pii_unmasker {
    const struct pii_map *m;
    struct buf hold;
};

struct pii_unmasker *pii_unmasker_create(const struct pii_map *m)
{
    struct pii_unmasker *u = xcalloc(1, sizeof(*u));

    u->m = m;
    buf_init(&u->hold, 0);
    return u;
}

/* Could s[0..len) be the beginning of some placeholder? */
static bool placeholder_prefix(const struct pii_map *m, const char *s, size_t len)
{
    for (size_t i = 0; i < m->n; i++) {
        size_t pl = strlen(m->e[i].placeholder);

        if (len < pl && memcmp(s, m->e[i].placeholder, len) == 0)
            return true;
    }
    return false;
}

char *pii_unmasker_feed(struct pii_unmasker *u, const char *piece, size_t len, bool end)
{
    const char *h;
    size_t keep = 0;
    char *out;

    buf_append(&u->hold, piece, len);
    h = buf_cstr(&u->hold);
    if (!end) {
        /* Hold back the last '[' and what follows while it may still become a placeholder. */
        const char *br = NULL;

        for (size_t i = u->hold.len; i > 0 && u->hold.len - i < 32; i--)
            if (h[i - 1] == '[') {
                br = h + i - 1;
                break;
            }
        if (br && placeholder_prefix(u->m, br, u->hold.len - (size_t)(br - h)))
            keep = u->hold.len - (size_t)(br - h);
    }
    out = pii_unmask(u->m, h, u->hold.len - keep);
    buf_consume(&u->hold, u->hold.len - keep);
    return out;
}

void pii_unmasker_destroy(struct pii_unmasker *u)
{
    if (!u)
        return;
    buf_free(&u->hold);
    free(u);
}
