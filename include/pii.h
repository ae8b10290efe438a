/* pii.h: finding personal data and secrets in text, replacing them with stable placeholders
 * per request, and putting the originals back into an answer (also one that arrives in
 * pieces). Pattern-based: e-mail, phone numbers (E.164 and common national forms), card
 * numbers (Luhn-checked), IBAN (mod-97), IPv4/IPv6, US SSN, and secrets (API keys, bearer
 * tokens, private-key blocks). Names and places need NER and are not found here (the privacy
 * plugin can add them from an NER service: pii_mask_with). */
#ifndef PII_H
#define PII_H

#include <stdbool.h>
#include <stddef.h>

enum pii_kind {
    PII_EMAIL = 0,
    PII_PHONE,
    PII_CARD,
    PII_IBAN,
    PII_IPV4,
    PII_IPV6,
    PII_SSN,
    PII_SECRET,
    PII_NKINDS
};

struct pii_span {
    size_t start;
    size_t len;
    enum pii_kind kind;
};

/* Compiles the patterns; call once before threads start. 0, or -1 (logged). */
int pii_init(void);
void pii_cleanup(void);

/* "email", "phone", ... ; "EMAIL", "PHONE", ... for placeholders when upper is set. */
const char *pii_kind_name(enum pii_kind k, bool upper);

/* Finds the spans in text[0..len): sorted, non-overlapping. Returns their number; *out is
 * malloc'd (caller frees; NULL when none). Thread-safe after pii_init. */
size_t pii_find(const char *text, size_t len, struct pii_span **out);

/* A request's placeholder table: the same original always gets the same placeholder
 * ("[EMAIL_1]", "[PHONE_2]", ...). Not thread-safe; one per request. */
struct pii_map;
struct pii_map *pii_map_create(void);
void pii_map_destroy(struct pii_map *m);
size_t pii_map_count(const struct pii_map *m);

/* Returns text with every span replaced by its placeholder (malloc'd, NUL-terminated). */
char *pii_mask(struct pii_map *m, const char *text, size_t len);
/* A span found elsewhere (names and places from an NER service): bytes of the text, and the
 * placeholder's label ("PERSON" -> "[PERSON_1]"; A-Z and '_' kept, at most 15 characters). */
struct pii_extra {
    size_t start;
    size_t len;
    const char *label;
};

/* pii_mask, with 'extra' spans masked as well (any order; spans out of range, overlapping a
 * pattern span or each other are left out). */
char *pii_mask_with(struct pii_map *m, const char *text, size_t len, const struct pii_extra *extra,
                    size_t nextra);

/* Returns text with every known placeholder replaced by its original (malloc'd). */
char *pii_unmask(const struct pii_map *m, const char *text, size_t len);

/* Restoring a streamed answer: feed pieces in order; each call returns the text that can be
 * released now (malloc'd, possibly ""), holding back a trailing piece that may be the start of
 * a placeholder split across pieces. 'end' releases everything held. */
struct pii_unmasker;
struct pii_unmasker *pii_unmasker_create(const struct pii_map *m);
char *pii_unmasker_feed(struct pii_unmasker *u, const char *piece, size_t len, bool end);
void pii_unmasker_destroy(struct pii_unmasker *u);

#endif
