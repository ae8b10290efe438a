/* fake_llm.h: a scripted, recording upstream transport (struct llm) for the approaches' unit
 * tests. It answers every call from a callback, reports deterministic usage, can accept,
 * refuse or ignore n > 1 like real upstreams do, and records each call it was given.
 * Single-threaded: one fake per test. */
#ifndef FAKE_LLM_H
#define FAKE_LLM_H

#include <stdbool.h>
#include <stddef.h>

#include "llm.h"

/* What the fake does with a call asking for n > 1 choices. */
enum fake_n_mode {
    FAKE_N_ACCEPT = 0, /* returns n choices */
    FAKE_N_REFUSE = 1, /* fails with 400 "Only one completion choice is allowed" (llama.cpp) */
    FAKE_N_IGNORE = 2  /* returns a single choice (Ollama) */
};

/* The reply text for choice 'choice_index' of 'call' (copied into the request's arena).
 * Returning NULL makes the whole call fail with fake_llm.fail_status. */
typedef const char *fake_reply_fn(void *user, const struct llm_call *call, int choice_index);
/* The finish_reason of a reply just produced by fake_reply_fn; NULL means "stop". */
typedef const char *fake_finish_fn(void *user, const struct llm_call *call, int choice_index);

struct fake_msg {
    char *role;
    char *content; /* text parts joined by "\n"; other parts as "[<type>]" */
};

/* One call the fake received. All strings are heap memory owned by the fake. */
struct fake_record {
    int round;   /* index of the run() invocation the call belonged to, from 0 */
    int seq;     /* position among all calls, from 0 */
    char *stage; /* "" when the caller gave none */
    char *model; /* params.model, or NULL (the request's model) */
    struct fake_msg *msgs;
    size_t nmsgs;
    char *text;         /* all messages as "[role]\ncontent\n" blocks */
    bool raw_last;      /* the last message was sent as a raw client object */
    double temperature; /* NAN when left to the client */
    long max_tokens;
    int n;
    enum llm_filter filter;
    bool stream_to_client;
    int status;      /* PX_OK or the negative px_status the fake replied with */
    int http_status; /* 200, or the failure status */
    int nchoices;
    struct usage usage; /* what the fake reported for this call */
};

struct fake_llm {
    struct llm llm; /* give &fake->llm to the approach context */

    /* Configuration, set after fake_llm_init and before the first call. */
    fake_reply_fn *reply;
    fake_finish_fn *finish; /* NULL: every choice finishes with "stop" */
    void *user;
    enum fake_n_mode n_mode;
    int fail_status;          /* HTTP status of a failed call (default 500); 0 = a timeout */
    const char *fail_message; /* default "fake upstream failure" */

    /* State, read by the tests. */
    int n_support;      /* what get_n reports; -1 (unknown) until set_n is called */
    int set_n_calls;    /* how many times set_n was called */
    int rounds;         /* run() invocations so far */
    int invalid;        /* malformed calls seen (no messages, NULL content, n < 0 ...) */
    struct usage total; /* the sum of every reported usage, failed calls included */
    struct fake_record *calls;
    size_t ncalls;
    size_t cap;
};

/* Prepares 'f' (caller storage) with a reply callback, n accepted, failures as HTTP 500. */
void fake_llm_init(struct fake_llm *f, fake_reply_fn *reply, void *user);
/* Frees the records. */
void fake_llm_cleanup(struct fake_llm *f);

/* The number of calls made in run() invocation 'round'. */
size_t fake_llm_round_calls(const struct fake_llm *f, int round);
/* The i-th call of 'round' (in the order the approach passed them), or NULL. */
const struct fake_record *fake_llm_call(const struct fake_llm *f, int round, size_t i);
/* The number of recorded calls whose stage is 'stage'. */
size_t fake_llm_stage_calls(const struct fake_llm *f, const char *stage);
/* The content of the last message of a record ("" when it has none). */
const char *fake_record_last(const struct fake_record *r);
/* How many times 'needle' occurs in s (non-overlapping). */
size_t fake_count(const char *s, const char *needle);

/* Deterministic usage for a call: prompt = 1 + message bytes / 4, completion = the sum over
 * the returned choices of 1 + bytes / 4, calls = 1. Exposed so tests can predict it. */
long fake_prompt_tokens(const struct fake_record *r);
long fake_completion_tokens(const char *text);

#endif
