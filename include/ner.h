/* ner.h: names and places from a trusted NER service, for the privacy plugin
 * (--privacy-ner-url). The service speaks Microsoft Presidio's analyzer API:
 *   POST <url> {"text": "...", "language": "en"}
 *   -> [{"entity_type": "PERSON", "start": 0, "end": 5, "score": 0.85}, ...]
 * with start/end in characters (Unicode code points). Entities of type PERSON, LOCATION and
 * GPE with a score of at least 0.5 are kept. A blocking HTTP call (libcurl, one connection
 * per session, reused), run on the approach's own thread. */
#ifndef NER_H
#define NER_H

#include <stddef.h>

#include "pii.h"

struct ner;

/* A session (one request's calls). timeout_s bounds each call. Never NULL. */
struct ner *ner_open(const char *url, double timeout_s);
void ner_close(struct ner *n);

/* The names and places in text[0..len) as byte spans with labels ("PERSON", "LOCATION"): returns
 * their number with *out malloc'd (NULL when none), or -1 with a message in err (the service
 * unreachable, an HTTP error, an answer that is not an entity list). */
int ner_find(struct ner *n, const char *text, size_t len, struct pii_extra **out, char *err,
             size_t errlen);

/* Parses an analyzer answer for text (exposed for tests): as ner_find. */
int ner_parse(const char *text, size_t len, const char *answer, struct pii_extra **out, char *err,
              size_t errlen);

#endif
