/* jsonschema.h: a JSON Schema validator (draft 7 keywords, plus draft 2019/2020's $defs and
 * prefixItems) for structured outputs: response_format json_schema answers are checked with it
 * and re-asked with its error messages. Schemas and instances are cJSON trees. */
#ifndef JSONSCHEMA_H
#define JSONSCHEMA_H

#include <stdbool.h>
#include <stddef.h>

struct cJSON;
struct jsonschema;

/* One validation failure: where in the instance ("$.items[2].name") and what. */
struct jsonschema_error {
    char path[192];
    char message[256];
};

/* Prepares 'schema' (borrowed: it must outlive the returned object) for validation: indexes
 * its $id's. Returns NULL with a message in 'err' when the schema is not an object or a
 * boolean. The result is read-only afterwards: validating from several threads is safe. */
struct jsonschema *jsonschema_create(const struct cJSON *schema, char *err, size_t errlen);

/* Makes another document known under 'uri' for $ref (tests use the suite's remotes and the
 * draft-07 meta-schema). 'doc' is borrowed. Not thread-safe; call before validating. */
void jsonschema_add_document(struct jsonschema *s, const char *uri, const struct cJSON *doc);

/* Validates 'instance'. Returns the number of errors found (0 = valid); the first 'maxerrs' of
 * them are stored in 'errs' (which may be NULL). A $ref that cannot be resolved and nesting
 * deeper than 128 levels count as errors. */
int jsonschema_validate(const struct jsonschema *s, const struct cJSON *instance,
                        struct jsonschema_error *errs, size_t maxerrs);

void jsonschema_destroy(struct jsonschema *s);

/* The formats it checks: "date-time", "date", "time" (RFC 3339), "email", "uuid", "ipv4";
 * any other format is accepted (formats are annotations in draft 7). */
bool jsonschema_format_ok(const char *format, const char *value);

#endif
