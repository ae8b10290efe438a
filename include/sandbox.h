/* sandbox.h: running untrusted Python for an approach (executecode, coc). Approaches never
 * fork; they hand the code to sandbox_run_python, which runs it in a throw-away bubblewrap
 * sandbox (src/sandbox.c says exactly what it isolates and limits) and returns what it printed.
 *
 * Only with --enable-code-execution: a request whose route has an approach with
 * .code_execution set is refused (400) at parse time otherwise, and sandbox_run_python
 * refuses too.
 *
 * Tests of the approaches link their own sandbox_run_python (a fake that never forks): the
 * real one lives alone in src/sandbox.c so that the linker leaves it out of such a binary. */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

struct approach_ctx;
struct arena;
struct config;

#define SANDBOX_CODE_MAX   (64 * 1024) /* bytes of code accepted */
#define SANDBOX_OUTPUT_MAX (64 * 1024) /* bytes of stdout kept; the rest is dropped */
#define SANDBOX_ERR_MAX    (16 * 1024) /* bytes of stderr kept */

/* How a run ended. */
enum sandbox_end {
    SANDBOX_EXITED = 0,   /* the program ended by itself (exit_code says how) */
    SANDBOX_SIGNALED = 1, /* killed by a signal (CPU limit: SIGKILL after SIGXCPU, ...) */
    SANDBOX_TIMEOUT = 2,  /* the wall-clock limit: the whole sandbox was killed */
    SANDBOX_FLOOD = 3     /* far more output than kept: killed early */
};

struct sandbox_result {
    enum sandbox_end end;
    int exit_code;    /* SANDBOX_EXITED: the program's exit status (1: uncaught exception) */
    int signal;       /* SANDBOX_SIGNALED: the signal */
    const char *out;  /* stdout (at most SANDBOX_OUTPUT_MAX bytes), in ctx->arena, never NULL */
    const char *err;  /* stderr (at most SANDBOX_ERR_MAX bytes), in ctx->arena, never NULL */
    bool out_cut;     /* stdout was longer: the rest was dropped */
    bool err_cut;     /* stderr was longer */
    long long ms;     /* wall time of the run */
    double timeout_s; /* the wall-clock limit that applied */
};

/* Runs 'code' (Python 3 source) with no standard input. Blocks the calling (approach) thread
 * until the program ends or is killed. Returns PX_OK when the code ran, whatever its outcome
 * (a Python error is a result for the model, in *out), or a negative px_status with
 * ctx->err filled when it could not run: code execution disabled (PX_EINVAL), code too
 * large (PX_EINVAL), every sandbox uid busy for the whole timeout (PX_EBUSY, 503), the
 * sandbox could not be started (PX_EINTERNAL). The run itself goes to a helper thread
 * (sched_offload) when the caller is a coroutine: the coroutine parks, the caller's code reads
 * as a plain blocking call. */
int sandbox_run_python(struct approach_ctx *ctx, const char *code, struct sandbox_result *out);

/* Start-up check with --enable-code-execution: runs a one-line program in the sandbox.
 * Returns 0, or -1 with a reason (bwrap or python3 missing, namespaces refused) in msg. */
int sandbox_selftest(const struct config *cfg, char *msg, size_t len);

/* The result as text for a prompt: the status line, then stdout and stderr with the cut
 * notes. In 'ctx->arena'. */
const char *sandbox_describe(struct approach_ctx *ctx, const struct sandbox_result *r);

/* The first ```python fenced block in 'text' (the fence's language tag is "python" or "py",
 * any case; the code runs from the next line to the closing ```), copied into 'a' with the
 * blank space around it trimmed. *next (when not NULL) is set past the block. NULL when
 * there is none. */
const char *sandbox_python_block(struct arena *a, const char *text, const char **next);

#endif
