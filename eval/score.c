/* score.c: renders an item's question and scores a reply's final answer against it. */
#include "score.h"

#include <string.h>

#include "answer.h"
#include "arena.h"
#include "buf.h"
#include "prompt.h"

char *score_prompt(struct arena *a, const struct item *it)
{
    struct buf list;
    char *text;

    if (it->nchoices == 0)
        return prompt_render(a, prompt_get("eval/question"), "question", it->question, NULL);
    buf_init(&list, 0);
    for (size_t i = 0; i < it->nchoices; i++)
        buf_printf(&list, "%s%c. %s", i ? "\n" : "", (char)('A' + i), it->choices[i]);
    text = prompt_render(a, prompt_get("eval/choice"), "question", it->question, "choices",
                         buf_cstr(&list), NULL);
    buf_free(&list);
    return text;
}

/* A choice reply that gave an option's text (or its number) instead of the letter. */
static struct answer choice_by_text(struct arena *a, const struct item *it, struct answer x)
{
    const char *want;
    double v, w;

    if (x.kind == ANSWER_NUMBER) {
        for (size_t i = 0; i < it->nchoices; i++)
            if (answer_parse_number(it->choices[i], &w) &&
                answer_equal(&x, &(struct answer){ANSWER_NUMBER, w, ""}))
                return (struct answer){ANSWER_CHOICE, 0, arena_printf(a, "%c", (char)('A' + i))};
        return x;
    }
    if (x.kind != ANSWER_TEXT)
        return x;
    want = answer_normalize(a, x.text);
    for (size_t i = 0; i < it->nchoices; i++) {
        if ((*want && strcmp(answer_normalize(a, it->choices[i]), want) == 0) ||
            (answer_parse_number(x.text, &v) && answer_parse_number(it->choices[i], &w) &&
             answer_equal(&(struct answer){ANSWER_NUMBER, v, ""},
                          &(struct answer){ANSWER_NUMBER, w, ""})))
            return (struct answer){ANSWER_CHOICE, 0, arena_printf(a, "%c", (char)('A' + i))};
    }
    return x;
}

bool score_reply(struct arena *a, const struct item *it, const char *reply, const char **extracted)
{
    struct answer want = {it->type, it->expected_num, it->expected};
    struct answer got = answer_extract(a, reply ? reply : "", it->type);

    if (it->type == ANSWER_CHOICE && got.kind != ANSWER_CHOICE && it->nchoices)
        got = choice_by_text(a, it, got);
    if (got.kind == ANSWER_NONE) {
        *extracted = NULL;
        return false;
    }
    *extracted = got.kind == ANSWER_TEXT ? got.text : answer_key(a, &got);
    return answer_equal(&got, &want);
}
