/* sandbox_text.c: a sandboxed run's result as text for a prompt (include/sandbox.h). Apart
 * from src/sandbox.c so that tests with a fake sandbox_run_python can use it. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "sandbox.h"

static void section(struct buf *b, const char *name, const char *text, bool cut, size_t cap)
{
    size_t n = strlen(text);

    buf_printf(b, "%s:\n", name);
    if (n == 0) {
        buf_puts(b, "(nothing)\n");
        return;
    }
    buf_puts(b, text);
    if (text[n - 1] != '\n')
        buf_puts(b, "\n");
    if (cut)
        buf_printf(b, "[%s cut here: only its first %zu bytes were kept]\n", name, cap);
}

const char *sandbox_describe(struct approach_ctx *ctx, const struct sandbox_result *r)
{
    struct buf b;
    const char *s;

    buf_init(&b, 0);
    switch (r->end) {
    case SANDBOX_EXITED:
        if (r->exit_code == 0)
            buf_puts(&b, "Status: finished normally (exit status 0).\n");
        else
            buf_printf(&b, "Status: failed (exit status %d).\n", r->exit_code);
        break;
    case SANDBOX_SIGNALED:
        buf_printf(&b, "Status: killed by signal %d%s.\n", r->signal,
                   r->signal == 24 || r->signal == 9 ? " (CPU time or resource limit)" : "");
        break;
    case SANDBOX_TIMEOUT:
        buf_printf(&b, "Status: stopped after the time limit of %g s.\n", r->timeout_s);
        break;
    case SANDBOX_FLOOD:
        buf_puts(&b, "Status: stopped: it printed far more output than can be kept.\n");
        break;
    }
    section(&b, "Output", r->out ? r->out : "", r->out_cut, SANDBOX_OUTPUT_MAX);
    if (r->err && *r->err)
        section(&b, "Errors", r->err, r->err_cut, SANDBOX_ERR_MAX);
    s = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

const char *sandbox_python_block(struct arena *a, const char *text, const char **next)
{
    const char *p = text;

    while (p && (p = strstr(p, "```")) != NULL) {
        const char *tag = p + 3;
        size_t n = 0;
        const char *code, *end;

        while (tag[n] && !isspace((unsigned char)tag[n]) && tag[n] != '`')
            n++;
        if (!((n == 6 && strncasecmp(tag, "python", 6) == 0) ||
              (n == 2 && strncasecmp(tag, "py", 2) == 0))) {
            p = tag;
            continue;
        }
        code = tag + n;
        while (*code == ' ' || *code == '\t' || *code == '\r')
            code++;
        if (*code == '\n')
            code++;
        end = strstr(code, "```");
        if (!end)
            end = code + strlen(code); /* an unclosed block (a reply cut at max_tokens) */
        if (next)
            *next = *end ? end + 3 : end;
        while (end > code && isspace((unsigned char)end[-1]))
            end--;
        while (code < end && (*code == '\n' || *code == '\r'))
            code++;
        return arena_strndup(a, code, (size_t)(end - code));
    }
    return NULL;
}
