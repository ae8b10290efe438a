/* otlp.h: OpenTelemetry traces exported as OTLP/HTTP JSON (--otlp-endpoint).
 *
 * Spans are encoded on the thread that ends them and queued (bounded, never blocking); one
 * exporter thread with its own curl handle posts them in batches. A full queue or a failed
 * export drops spans, counted in optillm_otlp_spans_dropped_total. Without an endpoint every
 * entry point returns after one branch. */
#ifndef OTLP_H
#define OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define OTLP_QUEUE_MAX 4096 /* spans waiting for export */
#define OTLP_BATCH_MAX 512  /* spans per POST */

enum otlp_kind { OTLP_SERVER = 2, OTLP_CLIENT = 3 };

/* Trace context of one request or call: ids as lower-case hex, "" when unset. */
struct otlp_ctx {
    char trace_id[33];
    char span_id[17];
    char parent_id[17]; /* the caller's span, or "" for a root span */
    uint8_t flags;      /* W3C trace-flags (01 = sampled) */
};

/* True once otlp_start succeeded with an endpoint. */
extern bool otlp_on;

/* The export URL for an endpoint: URL + "/v1/traces" unless it already ends with it (the
 * OTEL_EXPORTER_OTLP_ENDPOINT convention). malloc'd. */
char *otlp_traces_url(const char *endpoint);
/* Starts the exporter for 'endpoint' (the flag), else $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used
 * as is), else $OTEL_EXPORTER_OTLP_ENDPOINT; none: tracing stays off. 0 or -1 (logged). */
int otlp_start(const char *endpoint);
/* Exports what is queued (bounded by the export timeout) and stops the thread. */
void otlp_stop(void);

/* W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>": fills trace_id, parent_id (the caller's span)
 * and flags. False for anything invalid (wrong lengths, upper case, all-zero ids, version ff). */
bool otlp_traceparent_parse(const char *h, struct otlp_ctx *c);
/* "00-<trace>-<span>-<flags>" into out (56 bytes). */
void otlp_traceparent_format(const struct otlp_ctx *c, char *out, size_t len);
/* A fresh random id of 'hexlen' (16 or 32) hex digits into out (hexlen + 1 bytes). */
void otlp_new_id(char *out, size_t hexlen);
/* Wall-clock nanoseconds since the epoch. */
long long otlp_now_ns(void);

/* A span being built: attributes are added, then otlp_span_end encodes and queues it. */
struct otlp_span;
struct otlp_span *otlp_span_begin(const struct otlp_ctx *c, const char *name, enum otlp_kind kind,
                                  long long start_ns, long long end_ns);
void otlp_attr_str(struct otlp_span *s, const char *key, const char *val);
void otlp_attr_int(struct otlp_span *s, const char *key, long long val);
void otlp_attr_double(struct otlp_span *s, const char *key, double val);
void otlp_attr_bool(struct otlp_span *s, const char *key, bool val);
/* code 1 ok, 2 error (with a message). */
void otlp_span_status(struct otlp_span *s, int code, const char *message);
/* The span's JSON (one element of scopeSpans[].spans), malloc'd; s is freed. */
char *otlp_span_json(struct otlp_span *s);
/* Encodes and queues s (freed); dropped and counted when the queue is full. */
void otlp_span_end(struct otlp_span *s);
/* The OTLP ExportTraceServiceRequest for n encoded spans. malloc'd. */
char *otlp_batch_json(char *const *spans, size_t n);

/* ---- hooks (called only when otlp_on) ---- */
struct exchange;
struct xfer;
struct usage;
/* exchange_create: continues the client's traceparent (else a new trace), new server span. */
void otlp_exchange_begin(struct exchange *ex);
/* server_account: exports the request's server span. */
void otlp_exchange_end(struct exchange *ex);
/* xfer_create: adds traceparent (and the client's tracestate) to the upstream headers. */
void otlp_xfer_headers(struct xfer *x);
/* Each attempt's start (I/O thread): a new client span, its id in the traceparent header. */
void otlp_xfer_start(struct xfer *x);
/* An attempt's end: exports its client span (once; u NULL: tokens unknown). */
void otlp_xfer_end(struct xfer *x, const struct usage *u);

unsigned long long otlp_dropped(void);
/* Appends the exporter's metrics (Prometheus text). */
void otlp_metrics_render(struct buf *b);

#endif
