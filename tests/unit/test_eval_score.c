/* test_eval_score.c: unit tests of the evaluation's question prompts and of scoring replies
 * with the approaches' answer extraction: numbers with tolerance, choice letters (or an
 * option's text), normalised text. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <string.h>

#include "../../eval/dataset.c"
#include "../../eval/score.c"

static int group_setup(void **state)
{
    (void)state;
    return answer_init() || prompt_init(NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    prompt_cleanup();
    answer_cleanup();
    return 0;
}

static struct item item_of(const char *json)
{
    struct item it;
    char why[256] = "";

    assert_int_equal(dataset_parse_item(json, strlen(json), 1, &it, why, sizeof(why)), 0);
    return it;
}

static void test_prompts(void **state)
{
    struct arena *a = arena_create();
    struct item q = item_of("{\"question\":\"What is 6 * 7?\",\"answer\":42}");
    struct item c = item_of("{\"question\":\"Which is red?\",\"choices\":[\"grass\",\"blood\"],"
                            "\"answer\":\"B\"}");
    char *p;

    (void)state;
    p = score_prompt(a, &q);
    assert_int_equal(strncmp(p, "What is 6 * 7?\n\n", 16), 0);
    assert_non_null(strstr(p, "The answer is: X"));
    assert_null(strstr(p, "{{"));
    p = score_prompt(a, &c);
    assert_int_equal(strncmp(p, "Which is red?\n\nA. grass\nB. blood\n\n", 34), 0);
    assert_non_null(strstr(p, "letter"));
    /* a question holding template syntax is not expanded */
    dataset_item_cleanup(&q);
    q = item_of("{\"question\":\"Say {{choices}} literally\",\"answer\":\"ok\"}");
    p = score_prompt(a, &q);
    assert_non_null(strstr(p, "Say {{choices}} literally"));
    dataset_item_cleanup(&q);
    dataset_item_cleanup(&c);
    arena_destroy(a);
}

struct score_case {
    const char *item;
    const char *reply;
    bool correct;
    const char *extracted; /* NULL: nothing extracted */
};

static void test_scoring(void **state)
{
    static const char num[] = "{\"question\":\"q\",\"answer\":1234}";
    static const char frac[] = "{\"question\":\"q\",\"answer\":\"\\\\frac{3}{4}\"}";
    static const char dec[] = "{\"question\":\"q\",\"answer\":0.1}";
    static const char mc[] = "{\"question\":\"q\",\"choices\":[\"Berlin\",\"Paris\",\"Rome\"],"
                             "\"answer\":\"B\"}";
    static const char nums[] = "{\"question\":\"q\",\"choices\":[\"12\",\"15\",\"18\"],"
                               "\"answer\":\"C\"}";
    static const char text[] = "{\"question\":\"q\",\"answer\":\"Blue whale\"}";
    static const struct score_case cases[] = {
        {num, "Adding up... The answer is: 1,234", true, "1234"},
        {num, "The answer is 1234.0 apples.", true, "1234"},
        {num, "The answer is: 1235", false, "1235"},
        {num, "I do not know.", false, NULL},
        {num, "", false, NULL},
        {frac, "So x = \\boxed{0.75}", true, "0.75"},
        {frac, "The answer is: 3/4", true, "0.75"},
        {dec, "The answer is: 0.1000000001", true, "0.1000000001"},
        {dec, "The answer is: 0.11", false, "0.11"},
        {mc, "The answer is: B", true, "B"},
        {mc, "Thinking...\nThe answer is: (b)", true, "B"},
        {mc, "The answer is: C", false, "C"},
        {mc, "The answer is: Paris", true, "B"},
        {nums, "The answer is: 18", true, "C"},
        {text, "The answer is: the blue whale.", false, "the blue whale"},
        {text, "The answer is: Blue Whale.", true, "blue whale"},
    };

    (void)state;
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        struct arena *a = arena_create();
        struct item it = item_of(cases[i].item);
        const char *got = "unset";
        bool ok = score_reply(a, &it, cases[i].reply, &got);

        if (ok != cases[i].correct ||
            (cases[i].extracted ? !got || strcmp(got, cases[i].extracted) : got != NULL))
            fprintf(stderr, "case %zu: '%s': correct %d extracted '%s'\n", i, cases[i].reply, ok,
                    got ? got : "(null)");
        assert_int_equal(ok, cases[i].correct);
        if (cases[i].extracted)
            assert_string_equal(got, cases[i].extracted);
        else
            assert_null(got);
        dataset_item_cleanup(&it);
        arena_destroy(a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompts),
        cmocka_unit_test(test_scoring),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
