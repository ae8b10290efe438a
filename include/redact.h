/* redact.h: removes key-shaped tokens from text that came from outside (upstream error
 * messages) before it is logged, stored or returned. */
#ifndef REDACT_H
#define REDACT_H

#include <stddef.h>

/* Replaces, in place, every token of s that looks like a credential with "[redacted]" (or with
 * '*'s when the token is shorter than that marker, so s never grows): provider keys (sk-...,
 * sk-proj-..., sk-ant-...), masked keys ("sk-SERVE****-123", "abc1*****xyz9"), AWS access key
 * ids (AKIA..., ASIA...), GitHub tokens (ghp_..., github_pat_...), Slack tokens (xoxb-...,
 * xoxp-...), the token after "Bearer", and runs of 32+ hex/base64 characters with both letters
 * and digits (except ids such as req_... and chatcmpl-...). Returns the number of tokens
 * replaced. s NULL is a no-op. */
size_t redact_secrets(char *s);

#endif
