/* dataset.c: reads evaluation datasets (JSON Lines or a JSON array) in our layout and in the
 * common public ones, without conversion.
 *
 * Fields, first present wins (documented in eval/README-section.md):
 *   id        id, idx, qid, unique_id, question_id, task_id (string or number); else the line
 *   question  question (string, or CommonsenseQA's {"stem", "choices"}), problem,
 *             question_stem, input, prompt
 *   choices   choices, options, question.choices: an array of strings, an array of
 *             {"label","text"}, {"text":[...],"label":[...]} (ARC), or {"A":"...","B":...}
 *   answer    choice items: answerKey, answer_idx, answer_index, answer, correct, target:
 *             a letter, a label, a 0-based index (number or digits), or a choice's text;
 *             other items: answer, final_answer, target, then MATH's solution. A string with
 *             "#### X" (GSM8K) means X; one with \boxed{X} (MATH) means the last X.
 *   type      number, choice or text (aliases below); MATH's subject names in "type" are
 *             ignored. Without it: choice when there are choices, number when the answer
 *             parses as one, else text.
 */
#include "dataset.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "buf.h"
#include "px.h"

static const char *const id_keys[] = {"id",          "idx",     "qid", "unique_id",
                                      "question_id", "task_id", NULL};
static const char *const question_keys[] = {"question", "problem", "question_stem",
                                            "input",    "prompt",  NULL};
static const char *const choice_answer_keys[] = {
    "answerKey", "answer_idx", "answer_index", "answer", "correct", "target", NULL};
static const char *const answer_keys[] = {"answer", "final_answer", "target", NULL};

/* Unified view of the choices while parsing (texts and labels borrowed from the cJSON tree or
 * from 'a'). */
struct choice_set {
    const char *text[DATASET_MAX_CHOICES];
    const char *label[DATASET_MAX_CHOICES]; /* NULL when the layout has none */
    size_t n;
};

static const cJSON *field(const cJSON *o, const char *const *keys)
{
    for (size_t i = 0; keys[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[i]);

        if (v && !cJSON_IsNull(v))
            return v;
    }
    return NULL;
}

static int reject(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int reject(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return -1;
}

/* Integral JSON numbers print without a fraction; others with enough digits to round-trip. */
static char *number_text(struct arena *a, double v)
{
    if (v == floor(v) && fabs(v) < 9e15)
        return arena_printf(a, "%lld", (long long)v);
    return arena_printf(a, "%.17g", v);
}

/* A scalar as text: strings as they are, numbers printed, anything else NULL. */
static const char *scalar_text(struct arena *a, const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsNumber(v))
        return number_text(a, v->valuedouble);
    return NULL;
}

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static char *trim_dup(struct arena *a, const char *s)
{
    size_t n;

    while (*s && isspace((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return arena_strndup(a, s, n);
}

/* The content of the last \\boxed{...} (or \\fbox{...}) with balanced braces, or NULL. */
static char *last_boxed(struct arena *a, const char *s)
{
    static const char *const names[] = {"\\boxed", "\\fbox"};
    const char *best_at = NULL, *best = NULL;
    size_t best_len = 0;

    for (size_t k = 0; k < PX_ARRAY_LEN(names); k++) {
        for (const char *p = s; (p = strstr(p, names[k])) != NULL; p++) {
            const char *q = p + strlen(names[k]);
            int depth = 0;

            while (*q == ' ')
                q++;
            if (*q != '{')
                continue;
            for (const char *r = q; *r; r++) {
                if (*r == '{') {
                    depth++;
                } else if (*r == '}' && --depth == 0) {
                    if (!best_at || p > best_at) {
                        best_at = p;
                        best = q + 1;
                        best_len = (size_t)(r - q - 1);
                    }
                    break;
                }
            }
        }
    }
    return best ? trim_dup(a, arena_strndup(a, best, best_len)) : NULL;
}

/* GSM8K: the text after the last "####", up to the end of its line. */
static char *after_hashes(struct arena *a, const char *s)
{
    const char *at = NULL;

    for (const char *p = s; (p = strstr(p, "####")) != NULL; p += 4)
        at = p + 4;
    if (!at)
        return NULL;
    return trim_dup(a, arena_strndup(a, at, strcspn(at, "\r\n")));
}

/* ---- choices ---------------------------------------------------------------------------- */

static int add_choice(struct choice_set *cs, struct arena *a, const cJSON *text, const char *label,
                      char *why, size_t wl)
{
    const char *t = scalar_text(a, text);

    if (!t)
        return reject(why, wl, "choice %s is not a string", label ? label : "");
    if (cs->n == DATASET_MAX_CHOICES)
        return reject(why, wl, "more than 10 choices (letters A-J)");
    cs->text[cs->n] = t;
    cs->label[cs->n] = label;
    cs->n++;
    return 0;
}

static int read_choices(const cJSON *v, struct arena *a, struct choice_set *cs, char *why,
                        size_t wl)
{
    const cJSON *e;

    memset(cs, 0, sizeof(*cs));
    if (cJSON_IsArray(v)) {
        cJSON_ArrayForEach(e, v)
        {
            if (cJSON_IsObject(e)) {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "text");
                const cJSON *l = cJSON_GetObjectItemCaseSensitive(e, "label");

                if (add_choice(cs, a, t, scalar_text(a, l), why, wl) < 0)
                    return -1;
            } else if (add_choice(cs, a, e, NULL, why, wl) < 0) {
                return -1;
            }
        }
    } else if (cJSON_IsObject(v) && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(v, "text"))) {
        const cJSON *texts = cJSON_GetObjectItemCaseSensitive(v, "text");
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(v, "label");
        int i = 0;

        if (labels &&
            (!cJSON_IsArray(labels) || cJSON_GetArraySize(labels) != cJSON_GetArraySize(texts)))
            return reject(why, wl, "choices.label and choices.text differ in length");
        cJSON_ArrayForEach(e, texts)
        {
            const char *l = labels ? scalar_text(a, cJSON_GetArrayItem(labels, i)) : NULL;

            if (add_choice(cs, a, e, l, why, wl) < 0)
                return -1;
            i++;
        }
    } else if (cJSON_IsObject(v)) {
        /* {"A": "...", "B": "..."}: single-letter keys, taken in letter order. */
        for (char l = 'A'; l <= 'J'; l++) {
            char key[2] = {l, '\0'};
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, key);

            if (!t)
                break;
            if (add_choice(cs, a, t, arena_strdup(a, key), why, wl) < 0)
                return -1;
        }
        if ((size_t)cJSON_GetArraySize(v) != cs->n)
            return reject(why, wl, "choices object must have keys A, B, C, ... only");
    } else {
        return reject(why, wl, "choices must be an array or an object");
    }
    if (cs->n < 2)
        return reject(why, wl, "fewer than 2 choices");
    /* AQuA writes the letter into the option ("A)21"): drop it when every option has its own. */
    {
        bool prefixed = true;

        for (size_t i = 0; i < cs->n && prefixed; i++)
            prefixed = cs->text[i][0] == (char)('A' + i) && cs->text[i][1] == ')';
        for (size_t i = 0; i < cs->n && prefixed; i++)
            cs->text[i] = trim_dup(a, cs->text[i] + 2);
    }
    for (size_t i = 0; i < cs->n; i++)
        if (blank(cs->text[i]))
            return reject(why, wl, "choice %s is empty", (char[]){(char)('A' + i), '\0'});
    return 0;
}

/* Position of a choice answer in 'cs' (cs->n may be 0: letters only), or -1. */
static long resolve_choice(struct arena *a, const cJSON *v, const struct choice_set *cs)
{
    const char *s;
    char *t;
    size_t n;

    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;

        if (d != floor(d) || d < 0 || d >= (double)(cs->n ? cs->n : DATASET_MAX_CHOICES))
            return -1;
        return (long)d;
    }
    if (!cJSON_IsString(v))
        return -1;
    s = v->valuestring;
    t = trim_dup(a, s);
    n = strlen(t);
    /* "(B)", "B.", "B)" -> "B" */
    if (n >= 2 && t[0] == '(' && t[n - 1] == ')') {
        t++;
        n -= 2;
        t[n] = '\0';
    } else if (n == 2 && (t[1] == '.' || t[1] == ')')) {
        t[--n] = '\0';
    }
    for (size_t i = 0; i < cs->n; i++)
        if (cs->label[i] && strcmp(cs->label[i], t) == 0)
            return (long)i;
    if (n == 1 && isalpha((unsigned char)t[0])) {
        long i = toupper((unsigned char)t[0]) - 'A';

        return i >= 0 && i < (long)(cs->n ? cs->n : DATASET_MAX_CHOICES) ? i : -1;
    }
    if (n > 0 && n <= 2 && strspn(t, "0123456789") == n && cs->n && !cs->label[0]) {
        long i = strtol(t, NULL, 10);

        return i < (long)cs->n ? i : -1;
    }
    {
        const char *want = answer_normalize(a, s);

        for (size_t i = 0; i < cs->n; i++)
            if (*want && strcmp(answer_normalize(a, cs->text[i]), want) == 0)
                return (long)i;
    }
    return -1;
}

/* ---- types ------------------------------------------------------------------------------ */

/* ANSWER_* for a type name, ANSWER_NONE when unknown. */
static enum answer_kind parse_type(const char *s)
{
    static const struct {
        const char *name;
        enum answer_kind kind;
    } names[] = {
        {"number", ANSWER_NUMBER},
        {"numeric", ANSWER_NUMBER},
        {"integer", ANSWER_NUMBER},
        {"int", ANSWER_NUMBER},
        {"float", ANSWER_NUMBER},
        {"choice", ANSWER_CHOICE},
        {"multiple_choice", ANSWER_CHOICE},
        {"multiple-choice", ANSWER_CHOICE},
        {"mc", ANSWER_CHOICE},
        {"letter", ANSWER_CHOICE},
        {"text", ANSWER_TEXT},
        {"string", ANSWER_TEXT},
        {"exact", ANSWER_TEXT},
    };

    for (size_t i = 0; i < PX_ARRAY_LEN(names); i++)
        if (strcasecmp(s, names[i].name) == 0)
            return names[i].kind;
    return ANSWER_NONE;
}

const char *dataset_type_name(enum answer_kind type)
{
    switch (type) {
    case ANSWER_NUMBER:
        return "number";
    case ANSWER_CHOICE:
        return "choice";
    case ANSWER_TEXT:
        return "text";
    default:
        return "none";
    }
}

/* ---- one item --------------------------------------------------------------------------- */

static int parse_object(struct arena *a, const cJSON *o, long line, struct item *out, char *why,
                        size_t wl)
{
    const cJSON *v, *qv, *cv, *tv;
    const char *id, *question;
    const char *raw = NULL;
    enum answer_kind type = ANSWER_NONE;
    struct choice_set cs = {0};
    bool math = false;

    if (!cJSON_IsObject(o))
        return reject(why, wl, "not a JSON object");

    v = field(o, id_keys);
    id = v ? scalar_text(a, v) : arena_printf(a, "%ld", line);
    if (!id || blank(id))
        return reject(why, wl, "the id must be a non-empty string or a number");
    if (strlen(id) > 256)
        return reject(why, wl, "the id is longer than 256 bytes");

    qv = field(o, question_keys);
    if (cJSON_IsObject(qv)) /* CommonsenseQA: {"stem": ..., "choices": [...]} */
        question = scalar_text(a, cJSON_GetObjectItemCaseSensitive(qv, "stem"));
    else
        question = scalar_text(a, qv);
    if (!question || blank(question))
        return reject(why, wl, "no question (a 'question' or 'problem' string)");
    math = cJSON_GetObjectItemCaseSensitive(o, "problem") != NULL &&
           cJSON_GetObjectItemCaseSensitive(o, "solution") != NULL;

    tv = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (tv && !cJSON_IsNull(tv)) {
        type = cJSON_IsString(tv) ? parse_type(tv->valuestring) : ANSWER_NONE;
        if (type == ANSWER_NONE && !math)
            return reject(why, wl, "unknown type '%.64s' (number, choice or text)",
                          cJSON_IsString(tv) ? tv->valuestring : "?");
    }

    cv = cJSON_GetObjectItemCaseSensitive(o, "choices");
    if (!cv || cJSON_IsNull(cv))
        cv = cJSON_GetObjectItemCaseSensitive(o, "options");
    if ((!cv || cJSON_IsNull(cv)) && cJSON_IsObject(qv))
        cv = cJSON_GetObjectItemCaseSensitive(qv, "choices");
    if (cv && !cJSON_IsNull(cv)) {
        if (read_choices(cv, a, &cs, why, wl) < 0)
            return -1;
        if (type == ANSWER_NONE)
            type = ANSWER_CHOICE;
        else if (type != ANSWER_CHOICE)
            return reject(why, wl, "an item with choices must have type choice");
    }

    memset(out, 0, sizeof(*out));
    if (type == ANSWER_CHOICE) {
        long pos;

        v = field(o, choice_answer_keys);
        if (!v)
            return reject(why, wl, "no answer (answer, answerKey or answer_index)");
        pos = resolve_choice(a, v, &cs);
        if (pos < 0)
            return reject(why, wl, "the answer '%.64s' names none of the choices",
                          scalar_text(a, v) ? scalar_text(a, v) : "?");
        out->expected = xstrdup((char[]){(char)('A' + pos), '\0'});
    } else {
        struct answer ans = {ANSWER_NONE, 0, ""};
        double num;

        v = field(o, answer_keys);
        if (v) {
            raw = scalar_text(a, v);
            if (!raw)
                return reject(why, wl, "the answer must be a string or a number");
            if (cJSON_IsString(v)) {
                char *x = after_hashes(a, raw);

                if (!x)
                    x = strstr(raw, "box") ? last_boxed(a, raw) : NULL;
                if (x)
                    raw = x;
            }
        } else if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "solution"))) {
            raw = last_boxed(a, cJSON_GetObjectItemCaseSensitive(o, "solution")->valuestring);
            if (!raw)
                return reject(why, wl, "no answer, and the solution has no \\boxed{}");
        } else {
            return reject(why, wl, "no answer (an 'answer' string or number)");
        }
        if (blank(raw))
            return reject(why, wl, "the answer is empty");
        if (type == ANSWER_NONE || math)
            type =
                (cJSON_IsNumber(v) || answer_parse_number(raw, &num)) ? ANSWER_NUMBER : ANSWER_TEXT;
        if (type == ANSWER_NUMBER) {
            if (cJSON_IsNumber(v))
                num = v->valuedouble;
            else if (!answer_parse_number(raw, &num))
                return reject(why, wl, "type number, but the answer '%.64s' is not a number", raw);
            if (!isfinite(num))
                return reject(why, wl, "the answer is not a finite number");
            ans.kind = ANSWER_NUMBER;
            ans.num = num;
            out->expected_num = num;
            out->expected = xstrdup(answer_key(a, &ans));
        } else {
            const char *norm = answer_normalize(a, raw);

            if (!*norm)
                return reject(why, wl, "the answer is empty once normalised");
            out->expected = xstrdup(norm);
        }
    }
    out->type = type;
    out->id = xstrdup(id);
    out->line = line;
    out->question = xstrdup(question);
    if (cs.n) {
        out->choices = xcalloc(cs.n, sizeof(*out->choices));
        out->nchoices = cs.n;
        for (size_t i = 0; i < cs.n; i++)
            out->choices[i] = xstrdup(cs.text[i]);
    }
    return 0;
}

int dataset_parse_item(const char *json, size_t len, long line, struct item *out, char *why,
                       size_t why_len)
{
    const char *end = NULL;
    cJSON *o;
    struct arena *a;
    int rc;

    memset(out, 0, sizeof(*out));
    o = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!o)
        return reject(why, why_len, "not valid JSON");
    while (end && (size_t)(end - json) < len && isspace((unsigned char)*end))
        end++;
    if (end && (size_t)(end - json) < len) {
        cJSON_Delete(o);
        return reject(why, why_len, "text after the JSON value");
    }
    a = arena_create();
    rc = parse_object(a, o, line, out, why, why_len);
    if (rc < 0)
        dataset_item_cleanup(out);
    arena_destroy(a);
    cJSON_Delete(o);
    return rc;
}

/* ---- the file --------------------------------------------------------------------------- */

void dataset_item_cleanup(struct item *it)
{
    if (!it)
        return;
    free(it->id);
    free(it->question);
    free(it->expected);
    for (size_t i = 0; i < it->nchoices; i++)
        free(it->choices[i]);
    free(it->choices);
    memset(it, 0, sizeof(*it));
}

void dataset_cleanup(struct dataset *ds)
{
    for (size_t i = 0; i < ds->nitems; i++)
        dataset_item_cleanup(&ds->items[i]);
    free(ds->items);
    free(ds->bad_lines);
    memset(ds, 0, sizeof(*ds));
}

unsigned long long dataset_fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Ids seen so far: an open-addressing set of item indexes (load factor <= 1/2). */
struct idset {
    size_t *slot; /* index + 1, 0 = empty */
    size_t cap;
};

static long idset_find_or_add(struct idset *s, const struct dataset *ds, size_t idx)
{
    const char *id = ds->items[idx].id;
    size_t i;

    if ((idx + 1) * 2 > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 1024;
        size_t *nslot = xcalloc(ncap, sizeof(*nslot));

        for (size_t k = 0; k < s->cap; k++) {
            if (!s->slot[k])
                continue;
            i = dataset_fnv1a(ds->items[s->slot[k] - 1].id) & (ncap - 1);
            while (nslot[i])
                i = (i + 1) & (ncap - 1);
            nslot[i] = s->slot[k];
        }
        free(s->slot);
        s->slot = nslot;
        s->cap = ncap;
    }
    i = dataset_fnv1a(id) & (s->cap - 1);
    while (s->slot[i]) {
        if (strcmp(ds->items[s->slot[i] - 1].id, id) == 0)
            return (long)(s->slot[i] - 1);
        i = (i + 1) & (s->cap - 1);
    }
    s->slot[i] = idx + 1;
    return -1;
}

static void add_bad(struct dataset *ds, long line)
{
    if (ds->nbad == ds->bad_cap) {
        ds->bad_cap = ds->bad_cap ? ds->bad_cap * 2 : 16;
        ds->bad_lines = xrealloc(ds->bad_lines, ds->bad_cap * sizeof(*ds->bad_lines));
    }
    ds->bad_lines[ds->nbad++] = line;
}

/* Parses one value and appends it; reports a malformed one. Returns -1 when 'strict' stops. */
static int take(struct dataset *ds, struct idset *ids, const char *json, size_t len, long line,
                const char *name, bool strict, FILE *errs)
{
    char why[256];
    struct item it;
    long dup;

    if (dataset_parse_item(json, len, line, &it, why, sizeof(why)) < 0) {
        fprintf(errs, "%s:%ld: skipped: %s\n", name, line, why);
        add_bad(ds, line);
        return strict ? -1 : 0;
    }
    if (ds->nitems == ds->cap) {
        ds->cap = ds->cap ? ds->cap * 2 : 256;
        ds->items = xrealloc(ds->items, ds->cap * sizeof(*ds->items));
    }
    ds->items[ds->nitems] = it;
    dup = idset_find_or_add(ids, ds, ds->nitems);
    if (dup >= 0) {
        fprintf(errs, "%s:%ld: skipped: duplicate id '%.64s' (first on line %ld)\n", name, line,
                it.id, ds->items[dup].line);
        dataset_item_cleanup(&ds->items[ds->nitems]);
        add_bad(ds, line);
        return strict ? -1 : 0;
    }
    ds->nitems++;
    return 0;
}

/* A whole-file JSON array of items (what many dataset exports write). */
static int read_array(struct dataset *ds, struct idset *ids, const char *text, size_t len,
                      const char *name, bool strict, FILE *errs)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *e;
    long idx = 0;
    int rc = 0;

    if (!cJSON_IsArray(root)) {
        fprintf(errs, "%s: starts with '[' but is not a JSON array of items\n", name);
        cJSON_Delete(root);
        return -1;
    }
    cJSON_ArrayForEach(e, root)
    {
        char *one = cJSON_PrintUnformatted(e);

        idx++;
        rc = take(ds, ids, one, strlen(one), idx, name, strict, errs);
        cJSON_free(one);
        if (rc < 0)
            break;
    }
    cJSON_Delete(root);
    return rc;
}

int dataset_read(FILE *f, const char *name, bool strict, FILE *errs, struct dataset *ds)
{
    struct idset ids = {0};
    char *line = NULL;
    size_t cap = 0, len = 0;
    long lineno = 0;
    bool too_long = false, first = true;
    int rc = 0;
    int c;

    memset(ds, 0, sizeof(*ds));
    /* Lines are read byte-wise into a capped buffer: a huge line is reported, not loaded. */
    for (;;) {
        c = getc_unlocked(f);
        if (c != EOF && c != '\n') {
            if (too_long)
                continue;
            if (len + 2 > cap) {
                if (cap >= DATASET_MAX_LINE) {
                    too_long = true;
                    continue;
                }
                cap = cap ? cap * 2 : 4096;
                line = xrealloc(line, cap);
            }
            line[len++] = (char)c;
            continue;
        }
        if (c == EOF && len == 0 && !too_long)
            break;
        lineno++;
        if (line)
            line[len] = '\0';
        if (first) {
            first = false;
            if (len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
                memmove(line, line + 3, len - 2);
                len -= 3;
            }
            {
                size_t skip = 0;

                while (skip < len && isspace((unsigned char)line[skip]))
                    skip++;
                if (skip < len && line[skip] == '[' && !too_long) {
                    /* A JSON array: the rest of the file belongs to it. */
                    struct buf all;
                    char chunk[65536];
                    size_t k;

                    buf_init(&all, DATASET_MAX_FILE);
                    buf_append(&all, line, len);
                    buf_puts(&all, "\n");
                    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0) {
                        if (buf_append(&all, chunk, k) < 0) {
                            fprintf(errs, "%s: a JSON array above 1 GiB\n", name);
                            buf_free(&all);
                            rc = -1;
                            goto out;
                        }
                    }
                    rc = read_array(ds, &ids, buf_cstr(&all), all.len, name, strict, errs);
                    buf_free(&all);
                    goto out;
                }
            }
        }
        if (too_long) {
            fprintf(errs, "%s:%ld: skipped: line longer than %u bytes\n", name, lineno,
                    DATASET_MAX_LINE);
            add_bad(ds, lineno);
            if (strict) {
                rc = -1;
                goto out;
            }
        } else if (line && !blank(line) &&
                   take(ds, &ids, line, len, lineno, name, strict, errs) < 0) {
            rc = -1;
            goto out;
        }
        len = 0;
        too_long = false;
        if (c == EOF)
            break;
    }
    if (ferror(f)) {
        fprintf(errs, "%s: read error\n", name);
        rc = -1;
    }
out:
    free(line);
    free(ids.slot);
    return rc;
}

void dataset_select(struct dataset *ds, long limit, unsigned shard, unsigned nshards)
{
    size_t keep = 0;

    if (limit >= 0 && (size_t)limit < ds->nitems) {
        for (size_t i = (size_t)limit; i < ds->nitems; i++)
            dataset_item_cleanup(&ds->items[i]);
        ds->nitems = (size_t)limit;
    }
    if (nshards <= 1)
        return;
    for (size_t i = 0; i < ds->nitems; i++) {
        if (dataset_fnv1a(ds->items[i].id) % nshards == shard)
            ds->items[keep++] = ds->items[i];
        else
            dataset_item_cleanup(&ds->items[i]);
    }
    ds->nitems = keep;
}
