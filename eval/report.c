/* report.c: summarises results per approach and writes the report files (JSON, Markdown, CSV
 * and a hand-written SVG chart).
 *
 * Definitions (also in report.md's notes):
 *   accuracy            correct / items; an item whose request failed counts as wrong, so an
 *                       approach cannot look better by failing on hard items;
 *   accuracy (answered) correct / (items - errors), for telling errors apart from mistakes;
 *   95% CI              Wilson score interval of the accuracy;
 *   latency             over results without an error: mean and nearest-rank p95;
 *   calls, tokens       means per item over results that report them (errors excluded for
 *                       tokens: a failed request reports none);
 *   wins / losses       over items present for both the approach and the baseline: right
 *                       where the baseline was wrong / wrong where it was right; the exact
 *                       McNemar p-value tests wins against losses. */
#include "report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "px.h"
#include "stats.h"

/* ---- the numbers ------------------------------------------------------------------------- */

static double mean_or_nan(double sum, long n)
{
    return n > 0 ? sum / (double)n : NAN;
}

static void summarise(const struct results_set *s, struct report_row *row)
{
    double *lat = xcalloc(s->n ? s->n : 1, sizeof(*lat));
    size_t nlat = 0;
    double lat_sum = 0, calls = 0, pt = 0, ct = 0;
    long ncalls = 0, npt = 0, nct = 0;

    for (size_t i = 0; i < s->n; i++) {
        const struct result *r = &s->v[i];

        if (r->approach != row->approach)
            continue;
        row->items++;
        row->correct += r->correct && !r->error;
        if (r->error) {
            row->errors++;
        } else {
            lat[nlat++] = r->latency_ms;
            lat_sum += r->latency_ms;
            if (r->prompt_tokens >= 0)
                pt += (double)r->prompt_tokens, npt++;
            if (r->completion_tokens >= 0)
                ct += (double)r->completion_tokens, nct++;
        }
        if (r->upstream_calls >= 0)
            calls += (double)r->upstream_calls, ncalls++;
    }
    row->accuracy = mean_or_nan((double)row->correct, row->items);
    stats_wilson(row->correct, row->items, STATS_Z95, &row->ci_lo, &row->ci_hi);
    row->accuracy_answered = mean_or_nan((double)row->correct, row->items - row->errors);
    row->latency_mean_ms = mean_or_nan(lat_sum, (long)nlat);
    row->latency_p95_ms = nlat ? stats_percentile(lat, nlat, 95) : NAN;
    row->calls_per_item = mean_or_nan(calls, ncalls);
    row->prompt_per_item = mean_or_nan(pt, npt);
    row->completion_per_item = mean_or_nan(ct, nct);
    free(lat);
}

static void pair_with(const struct results_set *s, const char *baseline, struct report_row *row)
{
    row->paired_set = true;
    for (size_t i = 0; i < s->n; i++) {
        const struct result *r = &s->v[i];
        const struct result *b;
        bool x, y;

        if (r->approach != row->approach)
            continue;
        b = results_find(s, r->id, baseline);
        if (!b)
            continue;
        x = r->correct && !r->error;
        y = b->correct && !b->error;
        row->paired++;
        row->wins += x && !y;
        row->losses += !x && y;
        row->both += x && y;
        row->neither += !x && !y;
    }
    row->mcnemar_p = stats_mcnemar_p(row->wins, row->losses);
}

void report_build(const struct results_set *s, const char *const *order, size_t norder,
                  const char *baseline, const struct report_meta *meta, struct report *r)
{
    memset(r, 0, sizeof(*r));
    if (meta)
        r->meta = *meta;
    else
        r->meta.skipped_lines = -1;
    r->rows = xcalloc(s->napproaches ? s->napproaches : 1, sizeof(*r->rows));
    /* Rows: the requested order first, then the others as first seen. */
    for (size_t k = 0; k < norder; k++)
        for (size_t i = 0; i < s->napproaches; i++)
            if (strcmp(s->approaches[i], order[k]) == 0) {
                bool dup = false;

                for (size_t j = 0; j < r->nrows; j++)
                    dup = dup || r->rows[j].approach == s->approaches[i];
                if (!dup)
                    r->rows[r->nrows++].approach = s->approaches[i];
            }
    for (size_t i = 0; i < s->napproaches; i++) {
        bool have = false;

        for (size_t j = 0; j < r->nrows; j++)
            have = have || r->rows[j].approach == s->approaches[i];
        if (!have)
            r->rows[r->nrows++].approach = s->approaches[i];
    }
    for (size_t j = 0; j < r->nrows; j++) {
        summarise(s, &r->rows[j]);
        if (baseline && strcmp(baseline, r->rows[j].approach) == 0)
            r->baseline = r->rows[j].approach;
    }
    if (!r->baseline && r->nrows)
        r->baseline = r->rows[0].approach;
    for (size_t j = 0; j < r->nrows; j++)
        if (r->rows[j].approach != r->baseline)
            pair_with(s, r->baseline, &r->rows[j]);
    /* Distinct ids: an id counts once however many approaches it has. */
    {
        struct results_set ids;

        results_set_init(&ids);
        for (size_t i = 0; i < s->n; i++) {
            struct result one = {.id = s->v[i].id, .approach = ""};

            if (results_set_add(&ids, &one))
                r->items++;
        }
        results_set_cleanup(&ids);
    }
    r->results = (long)s->n;
}

void report_cleanup(struct report *r)
{
    free(r->rows);
    memset(r, 0, sizeof(*r));
}

/* ---- text helpers -------------------------------------------------------------------------- */

const char *report_pct(double x, char *buf, size_t len)
{
    if (isnan(x))
        snprintf(buf, len, "n/a");
    else
        snprintf(buf, len, "%.1f%%", 100 * x);
    return buf;
}

static const char *num(double x, int decimals, char *buf, size_t len)
{
    if (isnan(x))
        snprintf(buf, len, "n/a");
    else
        snprintf(buf, len, "%.*f", decimals, x);
    return buf;
}

/* CSV: an unknown number is an empty cell. */
static const char *csv_num(double x, int decimals, char *buf, size_t len)
{
    if (isnan(x))
        buf[0] = '\0';
    else
        snprintf(buf, len, "%.*f", decimals, x);
    return buf;
}

static const char *pvalue(double p, char *buf, size_t len)
{
    if (isnan(p))
        snprintf(buf, len, "n/a");
    else if (p >= 0.001)
        snprintf(buf, len, "%.3f", p);
    else
        snprintf(buf, len, "%.1e", p);
    return buf;
}

/* Markdown table cells: '|' would end the cell, newlines the row. */
static void md_cell(struct buf *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            buf_puts(out, "\\|");
        else if (*s == '\n' || *s == '\r')
            buf_puts(out, " ");
        else
            buf_append(out, s, 1);
    }
}

static void csv_cell(struct buf *out, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        buf_puts(out, s);
        return;
    }
    buf_puts(out, "\"");
    for (; *s; s++) {
        if (*s == '"')
            buf_puts(out, "\"\"");
        else
            buf_append(out, s, 1);
    }
    buf_puts(out, "\"");
}

static void xml_text(struct buf *out, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            buf_puts(out, "&amp;");
            break;
        case '<':
            buf_puts(out, "&lt;");
            break;
        case '>':
            buf_puts(out, "&gt;");
            break;
        case '"':
            buf_puts(out, "&quot;");
            break;
        default:
            buf_append(out, s, 1);
        }
    }
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static void add_num(cJSON *o, const char *name, double v)
{
    if (isnan(v) || isinf(v))
        cJSON_AddNullToObject(o, name);
    else
        cJSON_AddNumberToObject(o, name, v);
}

static void add_opt_str(cJSON *o, const char *name, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

void report_json(const struct report *r, struct buf *out)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *rows;
    char *text;
    bool *front;

    cJSON_AddStringToObject(o, "generated_by", "optillm-eval " PX_VERSION);
    add_opt_str(o, "generated", r->meta.generated);
    add_opt_str(o, "model", r->meta.model);
    add_opt_str(o, "dataset", r->meta.dataset);
    add_opt_str(o, "endpoint", r->meta.endpoint);
    if (r->meta.sources)
        cJSON_AddStringToObject(o, "merged_from", r->meta.sources);
    if (r->meta.skipped_lines >= 0)
        cJSON_AddNumberToObject(o, "dataset_lines_skipped", (double)r->meta.skipped_lines);
    add_opt_str(o, "baseline", r->baseline);
    cJSON_AddNumberToObject(o, "items", (double)r->items);
    cJSON_AddNumberToObject(o, "results", (double)r->results);
    rows = cJSON_AddArrayToObject(o, "approaches");
    front = xcalloc(r->nrows ? r->nrows : 1, sizeof(*front));
    report_pareto(r, front);
    for (size_t i = 0; i < r->nrows; i++) {
        const struct report_row *w = &r->rows[i];
        cJSON *a = cJSON_CreateObject();
        cJSON *ci, *lat;

        cJSON_AddStringToObject(a, "approach", w->approach);
        cJSON_AddNumberToObject(a, "items", (double)w->items);
        cJSON_AddNumberToObject(a, "correct", (double)w->correct);
        cJSON_AddNumberToObject(a, "errors", (double)w->errors);
        add_num(a, "accuracy", w->accuracy);
        ci = cJSON_AddArrayToObject(a, "accuracy_ci95");
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(w->ci_lo));
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(w->ci_hi));
        add_num(a, "accuracy_answered", w->accuracy_answered);
        lat = cJSON_AddObjectToObject(a, "latency_ms");
        add_num(lat, "mean", w->latency_mean_ms);
        add_num(lat, "p95", w->latency_p95_ms);
        add_num(a, "upstream_calls_per_item", w->calls_per_item);
        add_num(a, "prompt_tokens_per_item", w->prompt_per_item);
        add_num(a, "completion_tokens_per_item", w->completion_per_item);
        cJSON_AddBoolToObject(a, "pareto_front", front[i]);
        if (w->paired_set) {
            cJSON *v = cJSON_AddObjectToObject(a, "vs_baseline");

            cJSON_AddNumberToObject(v, "paired", (double)w->paired);
            cJSON_AddNumberToObject(v, "wins", (double)w->wins);
            cJSON_AddNumberToObject(v, "losses", (double)w->losses);
            cJSON_AddNumberToObject(v, "both_correct", (double)w->both);
            cJSON_AddNumberToObject(v, "both_wrong", (double)w->neither);
            cJSON_AddNumberToObject(v, "mcnemar_p", w->mcnemar_p);
        } else {
            cJSON_AddNullToObject(a, "vs_baseline");
        }
        cJSON_AddItemToArray(rows, a);
    }
    free(front);
    text = cJSON_Print(o);
    buf_puts(out, text);
    buf_puts(out, "\n");
    cJSON_free(text);
    cJSON_Delete(o);
}

/* ---- CSV ----------------------------------------------------------------------------------- */

void report_csv(const struct report *r, struct buf *out)
{
    buf_puts(out, "approach,items,correct,errors,accuracy,ci95_low,ci95_high,accuracy_answered,"
                  "latency_mean_ms,latency_p95_ms,upstream_calls_per_item,"
                  "prompt_tokens_per_item,completion_tokens_per_item,baseline,paired,wins,losses,"
                  "mcnemar_p\n");
    for (size_t i = 0; i < r->nrows; i++) {
        const struct report_row *w = &r->rows[i];
        char b[8][32];

        csv_cell(out, w->approach);
        buf_printf(
            out, ",%ld,%ld,%ld,%s,%.4f,%.4f,%s,%s,%s,%s,%s,%s,", w->items, w->correct, w->errors,
            csv_num(w->accuracy, 4, b[0], 32), w->ci_lo, w->ci_hi,
            csv_num(w->accuracy_answered, 4, b[1], 32), csv_num(w->latency_mean_ms, 1, b[2], 32),
            csv_num(w->latency_p95_ms, 1, b[3], 32), csv_num(w->calls_per_item, 2, b[4], 32),
            csv_num(w->prompt_per_item, 1, b[5], 32), csv_num(w->completion_per_item, 1, b[6], 32));
        csv_cell(out, r->baseline ? r->baseline : "");
        if (w->paired_set)
            buf_printf(out, ",%ld,%ld,%ld,%.6g\n", w->paired, w->wins, w->losses, w->mcnemar_p);
        else
            buf_puts(out, ",,,,\n");
    }
}

/* ---- Markdown ------------------------------------------------------------------------------ */

void report_markdown(const struct report *r, struct buf *out)
{
    char b[12][32];
    bool any_pairs = false;

    buf_puts(out, "# Evaluation report\n\n");
    buf_puts(out, "| | |\n|---|---|\n");
    if (r->meta.model) {
        buf_puts(out, "| model | `");
        md_cell(out, r->meta.model);
        buf_puts(out, "` |\n");
    }
    if (r->meta.dataset) {
        buf_puts(out, "| dataset | `");
        md_cell(out, r->meta.dataset);
        buf_puts(out, "` |\n");
    }
    if (r->meta.endpoint) {
        buf_puts(out, "| endpoint | ");
        md_cell(out, r->meta.endpoint);
        buf_puts(out, " |\n");
    }
    if (r->meta.sources) {
        buf_puts(out, "| merged from | ");
        md_cell(out, r->meta.sources);
        buf_puts(out, " |\n");
    }
    buf_printf(out, "| items | %ld (%ld results, %zu approaches) |\n", r->items, r->results,
               r->nrows);
    if (r->meta.skipped_lines > 0)
        buf_printf(out, "| dataset lines skipped | %ld (malformed; see the run's stderr) |\n",
                   r->meta.skipped_lines);
    if (r->meta.generated)
        buf_printf(out, "| generated | %s by optillm-eval %s |\n", r->meta.generated, PX_VERSION);
    buf_puts(out, "\n![Accuracy with 95% intervals, and tokens per item](report.svg)\n\n");
    buf_puts(out, "![Accuracy against tokens per item, the Pareto front marked]"
                  "(cost_accuracy.svg)\n\n");

    buf_puts(out, "## Accuracy and cost per approach\n\n");
    buf_puts(out, "| approach | accuracy | 95% CI | correct / items | errors | "
                  "accuracy (answered) | mean latency ms | p95 latency ms | upstream calls / item "
                  "| prompt tokens / item | completion tokens / item |\n");
    buf_puts(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (size_t i = 0; i < r->nrows; i++) {
        const struct report_row *w = &r->rows[i];

        buf_puts(out, "| ");
        md_cell(out, w->approach);
        if (w->approach == r->baseline)
            buf_puts(out, " (baseline)");
        buf_printf(out, " | %s | %s – %s | %ld / %ld | %ld | %s | %s | %s | %s | %s | %s |\n",
                   report_pct(w->accuracy, b[0], 32), report_pct(w->ci_lo, b[1], 32),
                   report_pct(w->ci_hi, b[2], 32), w->correct, w->items, w->errors,
                   report_pct(w->accuracy_answered, b[3], 32), num(w->latency_mean_ms, 0, b[4], 32),
                   num(w->latency_p95_ms, 0, b[5], 32), num(w->calls_per_item, 2, b[6], 32),
                   num(w->prompt_per_item, 1, b[7], 32), num(w->completion_per_item, 1, b[8], 32));
        any_pairs = any_pairs || w->paired_set;
    }
    if (any_pairs) {
        buf_puts(out, "\n## Against the baseline (`");
        md_cell(out, r->baseline);
        buf_puts(out, "`), paired by item\n\n");
        buf_puts(out, "| approach | paired items | wins | losses | both right | both wrong | "
                      "accuracy difference | McNemar p (exact) |\n");
        buf_puts(out, "|---|--:|--:|--:|--:|--:|--:|--:|\n");
        for (size_t i = 0; i < r->nrows; i++) {
            const struct report_row *w = &r->rows[i];
            double diff = w->paired ? (double)(w->wins - w->losses) / (double)w->paired : NAN;

            if (!w->paired_set)
                continue;
            buf_puts(out, "| ");
            md_cell(out, w->approach);
            buf_printf(out, " | %ld | %ld | %ld | %ld | %ld | %s%s | %s |\n", w->paired, w->wins,
                       w->losses, w->both, w->neither, diff > 0 ? "+" : "",
                       report_pct(diff, b[0], 32), pvalue(w->mcnemar_p, b[1], 32));
        }
    }
    buf_puts(out,
             "\n## Notes\n\n"
             "- **accuracy** is correct / items: an item whose request failed (after retries) "
             "counts as wrong; **accuracy (answered)** leaves such errors out of the "
             "denominator.\n"
             "- **95% CI** is the Wilson score interval of the accuracy.\n"
             "- **latency** covers requests without an error (p95 by the nearest-rank method); "
             "**tokens** are per answered item, as reported by the endpoint's `usage` (every "
             "upstream call of an approach included); **upstream calls** is n/a where the "
             "endpoint did not report it.\n"
             "- **wins** are items the approach got right and the baseline got wrong, "
             "**losses** the reverse, over the items both have; the exact McNemar test is the "
             "two-sided binomial test of wins against losses: "
             "p = min(1, 2·P(X ≤ min(wins, losses))), X ~ Binomial(wins + losses, ½).\n"
             "- Per-item details (extracted and expected answers, errors, the response) are in "
             "`results.jsonl`.\n");
}

/* ---- SVG ----------------------------------------------------------------------------------- */

/* 1, 2 or 5 times a power of ten, at least x (x > 0). */
static double nice_ceil(double x)
{
    double p = pow(10, floor(log10(x)));

    if (x <= p)
        return p;
    if (x <= 2 * p)
        return 2 * p;
    if (x <= 5 * p)
        return 5 * p;
    return 10 * p;
}

#define SVG_FONT    "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
#define SVG_ROW     34.0
#define SVG_BAR     18.0
#define SVG_PANEL   300.0
#define SVG_GAP     150.0
#define SVG_TOP     78.0
#define SVG_CHAR_PX 7.2 /* average width of a 13 px character, for the label column */

void report_svg(const struct report *r, struct buf *out)
{
    size_t longest = 8;
    double label_w, x1, x2, width, height, tok_max = 0;
    bool tokens = false;
    char b[4][32];

    for (size_t i = 0; i < r->nrows; i++) {
        size_t l = strlen(r->rows[i].approach) + (r->rows[i].approach == r->baseline ? 11 : 0);

        longest = l > longest ? l : longest;
        if (!isnan(r->rows[i].prompt_per_item) || !isnan(r->rows[i].completion_per_item)) {
            double t = (isnan(r->rows[i].prompt_per_item) ? 0 : r->rows[i].prompt_per_item) +
                       (isnan(r->rows[i].completion_per_item) ? 0 : r->rows[i].completion_per_item);

            tokens = true;
            tok_max = t > tok_max ? t : tok_max;
        }
    }
    if (longest > 40)
        longest = 40;
    label_w = 24 + SVG_CHAR_PX * (double)longest;
    x1 = label_w;                  /* accuracy panel */
    x2 = x1 + SVG_PANEL + SVG_GAP; /* tokens panel */
    width = x2 + SVG_PANEL + 140;  /* room for the value labels */
    height = SVG_TOP + SVG_ROW * (double)(r->nrows ? r->nrows : 1) + 92;
    tok_max = tok_max > 0 ? nice_ceil(tok_max) : 1;

    buf_printf(out,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"%s\" font-size=\"13\">\n",
               width, height, width, height, SVG_FONT);
    buf_puts(out, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
    /* Title */
    buf_puts(out, "<text x=\"16\" y=\"26\" font-size=\"17\" font-weight=\"600\" fill=\"#222\">");
    buf_puts(out, "Accuracy and tokens per item");
    if (r->meta.model) {
        buf_puts(out, " — ");
        xml_text(out, r->meta.model);
    }
    buf_printf(out, ", %ld items</text>\n", r->items);
    buf_printf(out,
               "<text x=\"%.0f\" y=\"%.0f\" font-weight=\"600\" fill=\"#333\">Accuracy "
               "(whiskers: 95%% Wilson interval)</text>\n",
               x1, SVG_TOP - 20);
    buf_printf(out,
               "<text x=\"%.0f\" y=\"%.0f\" font-weight=\"600\" fill=\"#333\">Tokens per item"
               "</text>\n",
               x2, SVG_TOP - 20);

    /* Grid and axes */
    {
        double y0 = SVG_TOP - 6, y1 = SVG_TOP + SVG_ROW * (double)r->nrows + 2;

        for (int g = 0; g <= 5; g++) {
            double x = x1 + SVG_PANEL * g / 5.0;

            buf_printf(out,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x,
                       y0, x, y1, g ? "#e4e4e4" : "#888");
            buf_printf(out,
                       "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\" "
                       "font-size=\"11\">%d%%</text>\n",
                       x, y1 + 15, g * 20);
        }
        if (tokens) {
            for (int g = 0; g <= 4; g++) {
                double x = x2 + SVG_PANEL * g / 4.0;

                buf_printf(out,
                           "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                           "stroke=\"%s\"/>\n",
                           x, y0, x, y1, g ? "#e4e4e4" : "#888");
                buf_printf(out,
                           "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\" "
                           "font-size=\"11\">%g</text>\n",
                           x, y1 + 15, tok_max * g / 4.0);
            }
        } else {
            buf_printf(out,
                       "<text x=\"%.0f\" y=\"%.0f\" fill=\"#777\">no token counts reported"
                       "</text>\n",
                       x2, SVG_TOP + 16);
        }
    }

    for (size_t i = 0; i < r->nrows; i++) {
        const struct report_row *w = &r->rows[i];
        bool base = w->approach == r->baseline;
        double yc = SVG_TOP + SVG_ROW * (double)i + SVG_ROW / 2;
        double yb = yc - SVG_BAR / 2;
        double acc = isnan(w->accuracy) ? 0 : w->accuracy;
        double lo = x1 + SVG_PANEL * w->ci_lo, hi = x1 + SVG_PANEL * w->ci_hi;

        /* Row label, cut to the column */
        buf_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#222\">", x1 - 10,
                   yc + 4.5);
        if (strlen(w->approach) > 40) {
            char cut[48];

            snprintf(cut, sizeof(cut), "%.37s...", w->approach);
            xml_text(out, cut);
        } else {
            xml_text(out, w->approach);
        }
        if (base)
            buf_puts(out, "<tspan dx=\"5\" fill=\"#777\">(baseline)</tspan>");
        buf_puts(out, "</text>\n");
        /* Accuracy bar, whisker, value */
        buf_printf(out,
                   "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.0f\" fill=\"%s\"/>\n", x1,
                   yb, SVG_PANEL * acc, SVG_BAR, base ? "#a3a3a3" : "#4c78a8");
        buf_printf(out,
                   "<g stroke=\"#1a1a1a\" stroke-width=\"1.5\"><line x1=\"%.1f\" y1=\"%.1f\" "
                   "x2=\"%.1f\" y2=\"%.1f\"/><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                   "y2=\"%.1f\"/><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/></g>\n",
                   lo, yc, hi, yc, lo, yc - 5, lo, yc + 5, hi, yc - 5, hi, yc + 5);
        buf_printf(out, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#222\">%s", hi + 6, yc + 4.5,
                   report_pct(w->accuracy, b[0], 32));
        if (w->errors)
            buf_printf(out, "<tspan dx=\"5\" fill=\"#b33\">(%ld err)</tspan>", w->errors);
        if (w->paired_set)
            buf_printf(out, "<tspan dx=\"8\" fill=\"#666\" font-size=\"11\">p=%s</tspan>",
                       pvalue(w->mcnemar_p, b[1], 32));
        buf_puts(out, "</text>\n");
        /* Tokens: prompt then completion, stacked */
        if (tokens) {
            double p = isnan(w->prompt_per_item) ? 0 : w->prompt_per_item;
            double c = isnan(w->completion_per_item) ? 0 : w->completion_per_item;
            double pw = SVG_PANEL * p / tok_max, cw = SVG_PANEL * c / tok_max;

            buf_printf(out,
                       "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.0f\" "
                       "fill=\"#9ecae9\"/>\n",
                       x2, yb, pw, SVG_BAR);
            buf_printf(out,
                       "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.0f\" "
                       "fill=\"#f58518\"/>\n",
                       x2 + pw, yb, cw, SVG_BAR);
            buf_printf(out, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#222\">%s", x2 + pw + cw + 6,
                       yc + 4.5, num(p + c, 0, b[1], 32));
            buf_printf(out,
                       "<tspan dx=\"5\" fill=\"#666\" font-size=\"11\">(%s + %s)</tspan></text>\n",
                       num(p, 0, b[2], 32), num(c, 0, b[3], 32));
        }
    }

    /* Legend and note */
    {
        double y = SVG_TOP + SVG_ROW * (double)r->nrows + 44;

        buf_printf(out,
                   "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#4c78a8\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" fill=\"#333\">accuracy (errors count as "
                   "wrong)</text>\n",
                   x1, y - 10, x1 + 18, y);
        if (tokens)
            buf_printf(out,
                       "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" "
                       "fill=\"#9ecae9\"/><text x=\"%.1f\" y=\"%.1f\" fill=\"#333\">prompt"
                       "</text><rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" "
                       "fill=\"#f58518\"/><text x=\"%.1f\" y=\"%.1f\" fill=\"#333\">completion"
                       "</text>\n",
                       x2, y - 10, x2 + 18, y, x2 + 80, y - 10, x2 + 98, y);
        buf_printf(out,
                   "<text x=\"16\" y=\"%.1f\" fill=\"#777\" font-size=\"11\">Baseline in grey; p: "
                   "exact McNemar test against it, paired by item (wins and losses in "
                   "report.md).</text>\n",
                   y + 24);
    }
    buf_puts(out, "</svg>\n");
}

/* ---- the cost-accuracy chart ------------------------------------------------------------ */

double report_tokens(const struct report_row *w)
{
    if (isnan(w->prompt_per_item) && isnan(w->completion_per_item))
        return NAN;
    return (isnan(w->prompt_per_item) ? 0 : w->prompt_per_item) +
           (isnan(w->completion_per_item) ? 0 : w->completion_per_item);
}

size_t report_pareto(const struct report *r, bool *front)
{
    size_t n = 0;

    for (size_t i = 0; i < r->nrows; i++) {
        double ti = report_tokens(&r->rows[i]), ai = r->rows[i].accuracy;

        front[i] = !isnan(ti) && !isnan(ai);
        for (size_t j = 0; j < r->nrows && front[i]; j++) {
            double tj = report_tokens(&r->rows[j]), aj = r->rows[j].accuracy;

            if (j == i || isnan(tj) || isnan(aj))
                continue;
            if (tj <= ti && aj >= ai && (tj < ti || aj > ai))
                front[i] = false;
        }
        n += front[i];
    }
    return n;
}

#define COST_W    560.0 /* plot area */
#define COST_H    320.0
#define COST_LEFT 70.0
#define COST_TOP  56.0

void report_cost_svg(const struct report *r, struct buf *out)
{
    bool *front = xcalloc(r->nrows ? r->nrows : 1, sizeof(*front));
    size_t *order = xcalloc(r->nrows ? r->nrows : 1, sizeof(*order));
    double tmax = 0, amin = 1;
    double width = COST_LEFT + COST_W + 190, height = COST_TOP + COST_H + 80;
    size_t nfront = report_pareto(r, front), npts = 0, missing = 0;
    char b[3][32];

    for (size_t i = 0; i < r->nrows; i++) {
        double t = report_tokens(&r->rows[i]);

        if (isnan(t) || isnan(r->rows[i].accuracy)) {
            missing++;
            continue;
        }
        tmax = t > tmax ? t : tmax;
        amin = r->rows[i].ci_lo < amin ? r->rows[i].ci_lo : amin;
        order[npts++] = i;
    }
    tmax = tmax > 0 ? nice_ceil(tmax * 1.05) : 1;
    amin = floor(amin * 10) / 10; /* the accuracy axis: from a tenth below every interval to 1 */
    if (amin > 0.9)
        amin = 0.9;
    if (amin < 0)
        amin = 0;
    /* the front in token order, for the line */
    for (size_t a = 1; a < npts; a++)
        for (size_t c = a;
             c > 0 && report_tokens(&r->rows[order[c - 1]]) > report_tokens(&r->rows[order[c]]);
             c--) {
            size_t t = order[c];

            order[c] = order[c - 1];
            order[c - 1] = t;
        }
#define CX(t) (COST_LEFT + COST_W * (t) / tmax)
#define CY(a) (COST_TOP + COST_H * (1 - ((a)-amin) / (1 - amin)))
    buf_printf(out,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"%s\" font-size=\"13\">\n",
               width, height, width, height, SVG_FONT);
    buf_puts(out, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
    buf_puts(out, "<text x=\"16\" y=\"26\" font-size=\"17\" font-weight=\"600\" fill=\"#222\">"
                  "Accuracy against tokens per item");
    if (r->meta.model) {
        buf_puts(out, " — ");
        xml_text(out, r->meta.model);
    }
    buf_printf(out, ", %ld items</text>\n", r->items);
    /* grid */
    for (int g = 0; g <= 4; g++) {
        double x = COST_LEFT + COST_W * g / 4.0;
        double a = amin + (1 - amin) * g / 4.0, y = CY(a);

        buf_printf(out,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\" "
                   "font-size=\"11\">%g</text>\n",
                   x, COST_TOP, x, COST_TOP + COST_H, g ? "#e4e4e4" : "#888", x,
                   COST_TOP + COST_H + 15, tmax * g / 4.0);
        buf_printf(out,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\" "
                   "font-size=\"11\">%.1f%%</text>\n",
                   COST_LEFT, y, COST_LEFT + COST_W, y, g ? "#e4e4e4" : "#888", COST_LEFT - 6,
                   y + 4, 100 * a);
    }
    buf_printf(out,
               "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#333\">mean tokens per "
               "item (prompt + completion)</text>\n",
               COST_LEFT + COST_W / 2, COST_TOP + COST_H + 36);
    buf_printf(out,
               "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" "
               "fill=\"#333\">accuracy (95%% Wilson interval)</text>\n",
               COST_TOP + COST_H / 2);
    /* the front */
    if (nfront > 1) {
        buf_puts(out, "<polyline class=\"pareto\" fill=\"none\" stroke=\"#e45756\" "
                      "stroke-width=\"2\" stroke-dasharray=\"6 4\" points=\"");
        for (size_t k = 0; k < npts; k++)
            if (front[order[k]])
                buf_printf(out, "%.1f,%.1f ", CX(report_tokens(&r->rows[order[k]])),
                           CY(r->rows[order[k]].accuracy));
        buf_puts(out, "\"/>\n");
    }
    /* the points */
    for (size_t k = 0; k < npts; k++) {
        const struct report_row *w = &r->rows[order[k]];
        double x = CX(report_tokens(w)), y = CY(w->accuracy);

        buf_printf(out,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1a1a1a\"/>\n",
                   x, CY(w->ci_lo), x, CY(w->ci_hi));
        buf_printf(out,
                   "<circle class=\"point%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\" "
                   "stroke=\"#4c78a8\" stroke-width=\"2\"><title>",
                   front[order[k]] ? " pareto" : "", x, y, front[order[k]] ? "#4c78a8" : "#fff");
        xml_text(out, w->approach);
        buf_printf(out, ": %s, %s tokens</title></circle>\n", report_pct(w->accuracy, b[0], 32),
                   num(report_tokens(w), 0, b[1], 32));
        /* labels above and below in turn, so that neighbours in token order do not overlap */
        buf_printf(out, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#222\" font-size=\"12\">", x + 8,
                   k % 2 ? y + 16 : y - 6);
        xml_text(out, w->approach);
        buf_puts(out, "</text>\n");
    }
    {
        double y = COST_TOP + COST_H + 60;

        buf_printf(out,
                   "<text x=\"16\" y=\"%.1f\" fill=\"#777\" font-size=\"11\">Filled points joined "
                   "by the dashed line: the Pareto front (no other approach is as accurate for "
                   "fewer tokens).",
                   y);
        if (missing)
            buf_printf(out, " %zu approach%s without token counts not shown.", missing,
                       missing == 1 ? "" : "es");
        buf_puts(out, "</text>\n");
    }
    buf_puts(out, "</svg>\n");
#undef CX
#undef CY
    free(front);
    free(order);
}

/* ---- files --------------------------------------------------------------------------------- */

static int write_atomic(const char *dir, const char *name, const struct buf *b, FILE *errs)
{
    char path[4096], tmp[4200];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) {
        fprintf(errs, "optillm-eval: cannot write %s: %s\n", tmp,
                errno == EACCES ? "permission denied" : "open failed");
        return -1;
    }
    ok = fwrite(b->data ? b->data : "", 1, b->len, f) == b->len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(errs, "optillm-eval: cannot write %s\n", path);
        unlink(tmp);
        return -1;
    }
    return 0;
}

int report_write(const struct report *r, const char *dir, FILE *errs)
{
    static void (*const fmt[])(const struct report *, struct buf *) = {
        report_json, report_markdown, report_csv, report_svg, report_cost_svg};
    static const char *const names[] = {"report.json", "report.md", "report.csv", "report.svg",
                                        "cost_accuracy.svg"};
    int rc = 0;

    for (size_t i = 0; i < PX_ARRAY_LEN(names); i++) {
        struct buf b;

        buf_init(&b, 0);
        fmt[i](r, &b);
        if (write_atomic(dir, names[i], &b, errs) < 0)
            rc = -1;
        buf_free(&b);
    }
    return rc;
}
