/* prompt.h: the prompts in prompts/<approach>/<stage>.txt, embedded at build time and
 * overridable at start-up with --prompts-dir. Read-only once threads start. */
#ifndef PROMPT_H
#define PROMPT_H

#include <stdarg.h>

struct arena;

/* Loads overrides from 'dir' (files <dir>/<approach>/<stage>.txt replace embedded ones).
 * dir NULL: embedded only. Returns 0, or -1 with a logged message. Call before threads. */
int prompt_init(const char *dir);
void prompt_cleanup(void);
/* The template text of "moa/critique", or NULL if unknown. Borrowed; valid until cleanup. */
const char *prompt_get(const char *name);
/* Renders 'tmpl', replacing {{key}} by the value paired with it in 'ap' (const char *key,
 * const char *value, ..., NULL). Unknown placeholders stay. Owned by 'a'. */
char *prompt_vrender(struct arena *a, const char *tmpl, va_list ap);
char *prompt_render(struct arena *a, const char *tmpl, ...);
/* Names of all embedded prompts, NULL-terminated. */
const char *const *prompt_names(void);

#endif
