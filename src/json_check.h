/* json_check.h: strict parsing of a client's JSON body, for every JSON front door.
 *
 * cJSON accepts what an upstream reads differently: with duplicate keys cJSON's getters see
 * the FIRST member while Python's json (and most upstreams) keep the LAST; bytes after the
 * value are ignored; "\u0000" and raw NUL bytes cut a string short. A body forwarded as is
 * (passthrough) would then reach the upstream with other values than those checked here
 * (model, n, ...). These are all refused with 400 instead. */
#ifndef JSON_CHECK_H
#define JSON_CHECK_H

#include <stddef.h>

#include "px.h"

struct cJSON;

/* Parses body[0..len) into a cJSON tree (the caller deletes it), or returns NULL with 'err'
 * filled (PX_EINVAL): not JSON; anything but JSON whitespace after the value; a NUL byte or a
 * "\u0000" escape anywhere; a key repeated in one object, at any depth (the message names the
 * key and its path, 'param' is the path). O(n log n) in the number of keys. */
struct cJSON *json_parse_strict(const char *body, size_t len, struct px_error *err);

/* The duplicate-key check alone on a parsed tree: PX_OK, or PX_EINVAL as above. */
int json_check_duplicates(const struct cJSON *root, struct px_error *err);

#endif
