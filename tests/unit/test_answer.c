/* test_answer.c: unit tests of answer extraction, number parsing, normalisation and comparison. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "arena.h"

#define N  ANSWER_NONE
#define NU ANSWER_NUMBER
#define CH ANSWER_CHOICE
#define TX ANSWER_TEXT

struct extract_case {
    const char *input;
    enum answer_kind hint;
    enum answer_kind kind; /* expected */
    const char *text;      /* expected canonical text */
};

static const struct extract_case extract_cases[] = {
    /* \boxed and \fbox */
    {"So the result is \\boxed{42}.", NU, NU, "42"},
    {"\\boxed{\\frac{1}{2}}", N, NU, "0.5"},
    {"First \\boxed{3}, then on reflection \\boxed{7}.", N, NU, "7"},
    {"The final answer is $\\boxed{12}$.", NU, NU, "12"},
    {"\\fbox{9}", N, NU, "9"},
    {"\\boxed{\\dfrac{3}{4}}", N, NU, "0.75"},
    {"\\boxed{-\\frac{1}{4}}", N, NU, "-0.25"},
    {"\\boxed{1,234}", N, NU, "1234"},
    {"\\boxed{\\text{Paris}}", TX, TX, "paris"},
    {"\\boxed{B}", CH, CH, "B"},
    {"\\boxed{(C)}", N, CH, "C"},
    {"\\boxed{5\\text{ cm}}", NU, NU, "5"},
    {"\\boxed{x^2+1}", N, TX, "x^2+1"},
    {"\\boxed{4} and then \\boxed{5", N, NU, "4"},
    {"\\boxed{} so the answer is 8", N, NU, "8"},
    {"\\boxed 7", N, NU, "7"},
    {"\\boxed{\\{1,2\\}}", N, TX, "\\{1,2\\}"},
    {"\\boxed{45\\%}", NU, NU, "45"},
    {"\\boxed{\\$18}", NU, NU, "18"},
    {"\\boxed{3}. Some say the answer is 4", N, NU, "3"},
    {"\\boxed{\\frac{\\sqrt{3}}{2}}", N, TX, "\\frac{\\sqrt{3}}{2}"},
    {"\\boxed{\\tfrac{1}{8}}", N, NU, "0.125"},
    {"\\boxed{\\frac34}", N, NU, "0.75"},
    /* "final answer" phrases and GSM8K "#### X" */
    {"The final answer is 17.", NU, NU, "17"},
    {"Final Answer: 3.14", N, NU, "3.14"},
    {"**Final Answer:** 256", N, NU, "256"},
    {"**Final Answer**\n\n-12", N, NU, "-12"},
    {"## Final Answer\n72", N, NU, "72"},
    {"final answer: c", CH, CH, "C"},
    {"Final answer: 4\nWait, maybe the answer is 9? No.", N, NU, "4"},
    {"#### 72", NU, NU, "72"},
    {"Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72.\n#### 72", NU, NU, "72"},
    {"#### $1,200", NU, NU, "1200"},
    {"The answer is 5.\n#### 6", NU, NU, "6"},
    {"FINAL ANSWER = 10", N, NU, "10"},
    {"The final answer is: \\(\\frac{3}{4}\\).", N, NU, "0.75"},
    {"Final answer: **1,000,000**", N, NU, "1000000"},
    {"**Final Answer**: 15 apples", NU, NU, "15"},
    {"Final answer: twelve", NU, TX, "twelve"},
    /* "the answer is" / "Answer:" phrases */
    {"The answer is -3.", N, NU, "-3"},
    {"answer: 1,234", NU, NU, "1234"},
    {"The answer is 42 apples.", NU, NU, "42"},
    {"The answer is 42 apples.", N, NU, "42"},
    {"The answer is 5. This is because 2+3=5 and 10 more are left.", NU, NU, "5"},
    {"So the answer is 12, since 3*4 = 12 and 99 is wrong", NU, NU, "12"},
    {"Answer: b", CH, CH, "B"},
    {"The answer is (D).", CH, CH, "D"},
    {"The answer is B) 42", CH, CH, "B"},
    {"The answer is Paris.", TX, TX, "paris"},
    {"The answer is **Paris**!", N, TX, "paris"},
    {"The answer is $x = 5$.", NU, NU, "5"},
    {"The answer is x = 5", N, NU, "5"},
    {"First the answer is 3 and later the answer is 8", N, NU, "8"},
    {"The answer is:\n\n  42", N, NU, "42"},
    {"The answer is \\(-\\frac{2}{3}\\).", N, NU, "-0.6666666667"},
    {"Answer: 0.5", N, NU, "0.5"},
    {"The answer is .5", N, NU, "0.5"},
    {"The answer is 3.", N, NU, "3"},
    {"The answer is \xe2\x88\x92"
     "7",
     N, NU, "-7"},
    {"The answer is +4", N, NU, "4"},
    {"The answer is 1.5e-3", N, NU, "0.0015"},
    {"The answer is 1e3", N, NU, "1000"},
    {"The answer is 3/4", N, NU, "0.75"},
    {"The answer is -3/4", N, NU, "-0.75"},
    {"The answer is 45%", NU, NU, "45"},
    {"The answer is 45\\%", NU, NU, "45"},
    {"The answer is $1,200.", NU, NU, "1200"},
    {"The answer is 1\\,000", N, NU, "1000"},
    {"The answer is 1{,}000", N, NU, "1000"},
    {"The answer is 90^\\circ", N, NU, "90"},
    {"The answer is \\left( \\frac{1}{2} \\right)", N, NU, "0.5"},
    {"The answer is \\text{Tuesday}.", TX, TX, "tuesday"},
    {"The answer is Tuesday", NU, TX, "tuesday"},
    {"The answer is unknown, but 7 items remain", NU, NU, "7"},
    {"The answer is 2,500,000 dollars", NU, NU, "2500000"},
    {"answer is 3.50", N, NU, "3.5"},
    {"The answer is \\(\\dfrac{5}{2}\\)", N, NU, "2.5"},
    {"The answer is 72.\n\nExplanation: 48 + 24 = 72, not 100.", NU, NU, "72"},
    {"The answer is $\\$5.50$", N, NU, "5.5"},
    {"answer = 12", N, NU, "12"},
    {"The answer is 42.", TX, TX, "42"},
    {"Answer: \"Blue Whale\"", TX, TX, "blue whale"},
    {"Answer:   The   Great \t Wall ", TX, TX, "the great wall"},
    {"answer is 1/0", N, TX, "1/0"},
    {"**Answer:** (C)", CH, CH, "C"},
    {"answer is A.", N, CH, "A"},
    {"Answer: C", N, CH, "C"},
    {"answer: (d)", N, CH, "D"},
    {"Answer: (e)", CH, CH, "E"},
    {"answer: J", CH, CH, "J"},
    {"The answer is 42", CH, TX, "42"},
    {"The answer is 3 x 4 = 12.", NU, NU, "12"},
    {"The answer is 2 + 3 = 5", N, NU, "5"},
    {"The answer is 4, since x = 2 and y = 2", N, NU, "4"},
    {"The answer is 6 \\times 7 = 42", N, NU, "42"},
    {"answer: -0.0", N, NU, "0"},
    {"Final Answer: The final answer is $2$. I hope it is correct.", N, NU, "2"},
    {"The final answer is $\\boxed{\\frac{14}{3}}$. I hope it is correct.", N, NU, "4.666666667"},
    {"Final Answer: The final answer is $x^2+7x+10$. I hope it is correct.", N, TX, "x^2+7x+10"},
    {"Therefore, the total cost is $\\$45.00$.", NU, NU, "45"},
    {"**Answer: 18**", NU, NU, "18"},
    {"### Answer\n\n**42**", N, NU, "42"},
    /* multiple-choice patterns (ANSWER_CHOICE only) */
    {"I think (B) is right.", CH, CH, "B"},
    {"Option D looks best.", CH, CH, "D"},
    {"So the correct choice is c", CH, CH, "C"},
    {"Let me think.\n**B**\n", CH, CH, "B"},
    {"After checking all options:\nB.\n", CH, CH, "B"},
    {"Considering everything\nC)", CH, CH, "C"},
    {"(A) is wrong. Option C is correct.", CH, CH, "C"},
    {"The options are (A) 1 (B) 2 (C) 3 (D) 4. I choose B", CH, CH, "B"},
    {"None of these mention anything.", CH, N, ""},
    {"The correct option is (B) because (C) is too small.", CH, CH, "B"},
    {"A) 5\nB) 6\nC) 7\nD) 8\nThe correct answer is C.", CH, CH, "C"},
    {"Looking at the options, (A) is too small. So the answer is **C. 7**.", CH, CH, "C"},
    {"\\boxed{\\textbf{(A) }2}", CH, CH, "A"},
    {"Answer: \\textbf{(B)}", CH, CH, "B"},
    {"I'd go with option b.", CH, CH, "B"},
    /* the last number */
    {"She has 3 apples and buys 4 more, so 7 in total.", NU, NU, "7"},
    {"Total: $1,200.50 today", N, NU, "1200.5"},
    {"We get 10 - 3 = 7", NU, NU, "7"},
    {"The change is -5 degrees", NU, NU, "-5"},
    {"Compute 5-3", NU, NU, "3"},
    {"Water is H2O and x1 is 4", NU, NU, "4"},
    {"Water is H2O", NU, N, ""},
    {"The value is 3.14159 rad", NU, NU, "3.14159"},
    {"Result 1,234,567 points", NU, NU, "1234567"},
    {"It grew by 25%.", NU, NU, "25"},
    {"Half is \\frac{1}{2}", NU, NU, "0.5"},
    {"The ratio is 3/4", NU, NU, "0.75"},
    {"1/3 of the pie", NU, NU, "0.3333333333"},
    {"It is 2e-3 m", NU, NU, "0.002"},
    {"The temperature is \xe2\x88\x92"
     "4 now",
     NU, NU, "-4"},
    {"Result: 3.0", N, NU, "3"},
    {"We need 1, 2, 3 and finally 10.", NU, NU, "10"},
    {"Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18 a day.\n#### "
     "18",
     NU, NU, "18"},
    {"He ran 3.5km then 2.25 km.", NU, NU, "2.25"},
    {"the 2nd and 3rd items, total 10th place", NU, NU, "10"},
    {"The last number is 12", TX, N, ""},
    /* nothing to find */
    {"", N, N, ""},
    {"", NU, N, ""},
    {"No numbers here.", NU, N, ""},
    {"No numbers here.", TX, N, ""},
    {"Hello", N, N, ""},
    {"   \n\t  ", CH, N, ""},
    /* thinking models */
    {"<think>Maybe the answer is 3. Or 4, 5, 6.</think>\nThe answer is 7.", NU, NU, "7"},
    {"<think>compute 12*3=36, hmm 99</think>\nFinal answer: 36", NU, NU, "36"},
    {"<think>the answer is 3</think>\nSo we conclude 8 apples.", NU, NU, "8"},
    {"<think>I believe 5</think>", NU, NU, "5"},
    {"<think>answer is (B)</think>\n**C**", CH, CH, "C"},
    {"<think>\\boxed{1}</think>The answer is 2", N, NU, "2"},
};

static int group_setup(void **state)
{
    (void)state;
    return answer_init();
}

static int group_teardown(void **state)
{
    (void)state;
    answer_cleanup();
    return 0;
}

static const char *kind_name(enum answer_kind k)
{
    switch (k) {
    case ANSWER_NONE:
        return "NONE";
    case ANSWER_NUMBER:
        return "NUMBER";
    case ANSWER_CHOICE:
        return "CHOICE";
    case ANSWER_TEXT:
        return "TEXT";
    }
    return "?";
}

static void test_extract_table(void **state)
{
    (void)state;
    size_t n = sizeof(extract_cases) / sizeof(extract_cases[0]);
    int failures = 0;
    assert_true(n >= 80);
    for (size_t i = 0; i < n; i++) {
        const struct extract_case *c = &extract_cases[i];
        struct arena *a = arena_create();
        struct answer r = answer_extract(a, c->input, c->hint);
        if (r.kind != c->kind || !r.text || strcmp(r.text, c->text) != 0) {
            print_error("case %zu: input \"%s\" hint %s: got %s \"%s\", want %s \"%s\"\n", i,
                        c->input, kind_name(c->hint), kind_name(r.kind), r.text ? r.text : "(null)",
                        kind_name(c->kind), c->text);
            failures++;
        } else if (r.kind == ANSWER_NUMBER) {
            double v;
            if (!answer_parse_number(r.text, &v) || fabs(v - r.num) > 1e-6 * fmax(1, fabs(v))) {
                print_error("case %zu: input \"%s\": num %.17g does not match text \"%s\"\n", i,
                            c->input, r.num, r.text);
                failures++;
            }
        }
        arena_destroy(a);
    }
    if (failures)
        fail_msg("%d of %zu extraction cases failed", failures, n);
}

struct parse_case {
    const char *input;
    bool ok;
    double value;
};

static const struct parse_case parse_cases[] = {
    {"42", true, 42},
    {" -7 ", true, -7},
    {"3.14", true, 3.14},
    {".5", true, 0.5},
    {"3.", true, 3},
    {"1,234,567", true, 1234567},
    {"1,2", false, 0},
    {"1,2345", false, 0},
    {"12,34", false, 0},
    {"3/4", true, 0.75},
    {"-3/4", true, -0.75},
    {"\\frac{3}{4}", true, 0.75},
    {"\\dfrac{3}{4}", true, 0.75},
    {"\\tfrac12", true, 0.5},
    {"\\frac{-3}{4}", true, -0.75},
    {"-\\frac{3}{4}", true, -0.75},
    {"\\frac{1}{0}", false, 0},
    {"45%", true, 45},
    {"45\\%", true, 45},
    {"$1,200", true, 1200},
    {"\\$1,200", true, 1200},
    {"1\\,000", true, 1000},
    {"1{,}000", true, 1000},
    {"1e3", true, 1000},
    {"1.5e-3", true, 0.0015},
    {"2E+2", true, 200},
    {"\xe2\x88\x92"
     "5",
     true, -5},
    {"+5", true, 5},
    {"$5$", true, 5},
    {"$$5$$", true, 5},
    {"\\(5\\)", true, 5},
    {"\\[ 5 \\]", true, 5},
    {"\\text{5}", true, 5},
    {"\\left( 5 \\right)", true, 5},
    {"(5)", true, 5},
    {"{5}", true, 5},
    {"90^\\circ", true, 90},
    {"90^{\\circ}", true, 90},
    {"90\xc2\xb0", true, 90},
    {"\\boxed{7}", true, 7},
    {"**12**", true, 12},
    {"12.", true, 12},
    {"\\displaystyle \\frac{1}{4}", true, 0.25},
    {"42 apples", false, 0},
    {"", false, 0},
    {"   ", false, 0},
    {"abc", false, 0},
    {"1/0", false, 0},
    {"1e999", false, 0},
    {"-", false, 0},
    {".", false, 0},
    {"1.2.3", false, 0},
    {"0x10", false, 0},
    {"inf", false, 0},
    {"nan", false, 0},
    {"5 6", false, 0},
    {"2\\sqrt{3}", false, 0},
    {"\\frac{1}{2", false, 0},
};

static void test_parse_number(void **state)
{
    (void)state;
    size_t n = sizeof(parse_cases) / sizeof(parse_cases[0]);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        const struct parse_case *c = &parse_cases[i];
        double v = -12345;
        bool ok = answer_parse_number(c->input, &v);
        if (ok != c->ok || (ok && fabs(v - c->value) > 1e-12 * fmax(1, fabs(c->value)))) {
            print_error("parse case %zu: \"%s\": got %d %.17g, want %d %.17g\n", i, c->input, ok, v,
                        c->ok, c->value);
            failures++;
        }
    }
    double v = 1;
    assert_false(answer_parse_number(NULL, &v));
    assert_true(answer_parse_number("8", NULL));
    if (failures)
        fail_msg("%d of %zu parse cases failed", failures, n);
}

struct norm_case {
    const char *input;
    const char *want;
};

static const struct norm_case norm_cases[] = {
    {"Paris", "paris"},
    {"  The   Great\t\nWall  ", "the great wall"},
    {"\"quoted\"", "quoted"},
    {"`code`", "code"},
    {"**bold**", "bold"},
    {"$x+1$", "x+1"},
    {"\\text{Tuesday}", "tuesday"},
    {"\\textbf{Yes}!", "yes"},
    {"5 \\text{ cm}", "5 cm"},
    {"Hello.", "hello"},
    {"Really?!", "really"},
    {"\xe2\x80\x9c"
     "Curly\xe2\x80\x9d",
     "curly"},
    {"'single'", "single"},
    {"", ""},
    {"   ", ""},
    {"A.B.", "a.b"},
    {"\\text{unbalanced", "\\text{unbalanced"},
    {"caf\xc3\xa9", "caf\xc3\xa9"},
    {"The Answer", "the answer"},
};

static void test_normalize(void **state)
{
    (void)state;
    struct arena *a = arena_create();
    size_t n = sizeof(norm_cases) / sizeof(norm_cases[0]);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        const char *got = answer_normalize(a, norm_cases[i].input);
        if (!got || strcmp(got, norm_cases[i].want) != 0) {
            print_error("normalize case %zu: \"%s\": got \"%s\", want \"%s\"\n", i,
                        norm_cases[i].input, got ? got : "(null)", norm_cases[i].want);
            failures++;
        }
    }
    assert_string_equal(answer_normalize(a, NULL), "");
    assert_null(answer_normalize(NULL, "x"));
    arena_destroy(a);
    if (failures)
        fail_msg("%d of %zu normalize cases failed", failures, n);
}

static struct answer mk(enum answer_kind kind, double num, const char *text)
{
    struct answer r = {kind, num, text};
    return r;
}

struct equal_case {
    struct answer x, y;
    bool want;
};

static void test_equal(void **state)
{
    (void)state;
    const struct equal_case cases[] = {
        {mk(NU, 42, "42"), mk(NU, 42, "42"), true},
        {mk(NU, 42, "42"), mk(NU, 42.00000001, "42.00000001"), true},
        {mk(NU, 42, "42"), mk(NU, 42.1, "42.1"), false},
        {mk(NU, 1e9, "1000000000"), mk(NU, 1e9 + 100, "1000000100"), true},
        {mk(NU, 1e9, "1000000000"), mk(NU, 1e9 + 10000, "1000010000"), false},
        {mk(NU, 0, "0"), mk(NU, 1e-10, "1e-10"), true},
        {mk(NU, 0, "0"), mk(NU, 1e-6, "0.000001"), false},
        {mk(NU, -3, "-3"), mk(NU, 3, "3"), false},
        {mk(NU, 0.75, "0.75"), mk(TX, 0, "3/4"), true},
        {mk(TX, 0, "1,000"), mk(NU, 1000, "1000"), true},
        {mk(NU, 5, "5"), mk(TX, 0, "five"), false},
        {mk(TX, 0, "1,000"), mk(TX, 0, "1000"), true},
        {mk(CH, 0, "B"), mk(CH, 0, "B"), true},
        {mk(CH, 0, "B"), mk(CH, 0, "b"), true},
        {mk(CH, 0, "B"), mk(CH, 0, "C"), false},
        {mk(CH, 0, "B"), mk(TX, 0, "(b)"), true},
        {mk(CH, 0, "B"), mk(TX, 0, "bee"), false},
        {mk(CH, 0, "B"), mk(NU, 2, "2"), false},
        {mk(TX, 0, "Paris"), mk(TX, 0, " paris. "), true},
        {mk(TX, 0, "\\text{New York}"), mk(TX, 0, "new   york"), true},
        {mk(TX, 0, "paris"), mk(TX, 0, "london"), false},
        {mk(N, 0, ""), mk(N, 0, ""), false},
        {mk(N, 0, ""), mk(TX, 0, ""), false},
        {mk(NU, 1, "1"), mk(N, 1, ""), false},
        {mk(NU, NAN, "nan"), mk(NU, NAN, "nan"), false},
        {mk(TX, 0, NULL), mk(TX, 0, NULL), true},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        bool got = answer_equal(&cases[i].x, &cases[i].y);
        bool rev = answer_equal(&cases[i].y, &cases[i].x);
        if (got != cases[i].want || rev != cases[i].want) {
            print_error("equal case %zu: \"%s\" vs \"%s\": got %d/%d, want %d\n", i,
                        cases[i].x.text ? cases[i].x.text : "(null)",
                        cases[i].y.text ? cases[i].y.text : "(null)", got, rev, cases[i].want);
            failures++;
        }
    }
    struct answer one = mk(NU, 1, "1");
    assert_false(answer_equal(NULL, &one));
    assert_false(answer_equal(&one, NULL));
    if (failures)
        fail_msg("%d of %zu equal cases failed", failures, n);
}

static void test_key(void **state)
{
    (void)state;
    struct arena *a = arena_create();
    struct {
        struct answer x;
        const char *want;
    } cases[] = {
        {mk(NU, 42, "42"), "42"},
        {mk(NU, 42, NULL), "42"},
        {mk(NU, -7, "-7"), "-7"},
        {mk(NU, 0.5, "0.5"), "0.5"},
        {mk(NU, 1.0 / 3.0, "x"), "0.3333333333"},
        {mk(NU, -0.0, "-0"), "0"},
        {mk(NU, 3.14000, "3.14"), "3.14"},
        {mk(NU, 1e20, "1e20"), "1e+20"},
        {mk(NU, 1234567.5, ""), "1234567.5"},
        {mk(CH, 0, "b"), "B"},
        {mk(CH, 0, "C"), "C"},
        {mk(TX, 0, "  The Paris. "), "the paris"},
        {mk(TX, 0, NULL), ""},
        {mk(N, 0, "ignored"), ""},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        const char *got = answer_key(a, &cases[i].x);
        if (!got || strcmp(got, cases[i].want) != 0) {
            print_error("key case %zu: got \"%s\", want \"%s\"\n", i, got ? got : "(null)",
                        cases[i].want);
            failures++;
        }
    }
    assert_string_equal(answer_key(a, NULL), "");
    assert_string_equal(answer_key(NULL, &cases[0].x), "");

    /* Answers extracted from different phrasings of one value share a key. */
    struct answer p = answer_extract(a, "The answer is 1,000.", ANSWER_NONE);
    struct answer q = answer_extract(a, "\\boxed{1000.0}", ANSWER_NONE);
    assert_string_equal(answer_key(a, &p), answer_key(a, &q));
    assert_true(answer_equal(&p, &q));
    arena_destroy(a);
    if (failures)
        fail_msg("%d of %zu key cases failed", failures, n);
}

/* Builds a string of 'n' copies of 'unit' followed by 'tail'. */
static char *repeat(const char *unit, size_t n, const char *tail)
{
    size_t ul = strlen(unit), tl = strlen(tail);
    char *s = malloc(ul * n + tl + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    memcpy(s + ul * n, tail, tl + 1);
    return s;
}

static void test_robustness(void **state)
{
    (void)state;
    struct arena *a = arena_create();
    struct answer r;

    r = answer_extract(a, NULL, ANSWER_NUMBER);
    assert_int_equal(r.kind, ANSWER_NONE);
    assert_string_equal(r.text, "");
    r = answer_extract(NULL, "The answer is 5", ANSWER_NUMBER);
    assert_int_equal(r.kind, ANSWER_NONE);
    r = answer_extract(a, "The answer is 5", (enum answer_kind)42);
    assert_int_equal(r.kind, ANSWER_NUMBER);

    /* Unbalanced braces and escapes. */
    const char *odd[] = {"\\boxed{",
                         "\\boxed{{{{",
                         "}}}\\boxed}",
                         "\\boxed{\\}",
                         "\\frac{",
                         "\\frac{1}{",
                         "$$$$",
                         "\\(\\)",
                         "answer is",
                         "Final answer:",
                         "Answer: \n\n\n\n\n\n\n5",
                         "####",
                         "\xff\xfe\xe2\x88",
                         "\xe2\x88\x92",
                         "\\",
                         "-",
                         "1e",
                         "1e+",
                         "1,",
                         "1/",
                         "((((B",
                         "**"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        for (int h = 0; h < 4; h++) {
            r = answer_extract(a, odd[i], (enum answer_kind)h);
            assert_non_null(r.text);
        }

    /* Invalid UTF-8 around an answer. */
    r = answer_extract(a, "\xc3\x28 \xa0\xa1 The answer is 6 \xf0\x28\x8c\x28", ANSWER_NUMBER);
    assert_int_equal(r.kind, ANSWER_NUMBER);
    assert_string_equal(r.text, "6");

    /* Huge inputs finish and stay correct. */
    char *s = repeat("\\boxed{", 200000, "");
    r = answer_extract(a, s, ANSWER_NUMBER);
    assert_int_equal(r.kind, ANSWER_NONE);
    free(s);
    s = repeat("1,111", 300000, " then 5");
    r = answer_extract(a, s, ANSWER_NUMBER);
    assert_string_equal(r.text, "5");
    free(s);
    s = repeat("9", 1000000, "");
    r = answer_extract(a, s, ANSWER_NONE);
    assert_non_null(r.text);
    free(s);
    s = repeat("\\frac{", 100000, "");
    r = answer_extract(a, s, ANSWER_NONE);
    assert_int_equal(r.kind, ANSWER_NONE);
    free(s);
    s = repeat("the answer is ", 100000, "");
    r = answer_extract(a, s, ANSWER_NONE);
    assert_non_null(r.text);
    free(s);
    s = repeat("** ", 100000, "(B)");
    r = answer_extract(a, s, ANSWER_CHOICE);
    assert_string_equal(r.text, "B");
    free(s);

    /* The boxed search covers the whole text; phrases and numbers only its last 64 KiB. */
    char *filler = repeat("lorem ipsum ", 20000, "");
    size_t fl = strlen(filler);
    s = malloc(fl + 64);
    assert_non_null(s);
    snprintf(s, fl + 64, "\\boxed{5}%s", filler);
    r = answer_extract(a, s, ANSWER_NUMBER);
    assert_string_equal(r.text, "5");
    snprintf(s, fl + 64, "The answer is 5%s", filler);
    r = answer_extract(a, s, ANSWER_NUMBER);
    assert_int_equal(r.kind, ANSWER_NONE);
    snprintf(s, fl + 64, "%sThe answer is 9", filler);
    r = answer_extract(a, s, ANSWER_NUMBER);
    assert_string_equal(r.text, "9");
    free(s);
    free(filler);
    arena_destroy(a);
}

static void test_without_init(void **state)
{
    (void)state;
    struct arena *a = arena_create();
    answer_cleanup();
    struct answer r = answer_extract(a, "The answer is 5", ANSWER_NUMBER);
    assert_int_equal(r.kind, ANSWER_NONE);
    assert_string_equal(r.text, "");
    answer_cleanup(); /* twice is fine */
    double v;
    assert_true(answer_parse_number("3/4", &v)); /* needs no patterns */
    assert_int_equal(answer_init(), 0);
    assert_int_equal(answer_init(), 0); /* idempotent */
    r = answer_extract(a, "The answer is 5", ANSWER_NUMBER);
    assert_string_equal(r.text, "5");
    arena_destroy(a);
}

static void *extract_worker(void *arg)
{
    long failures = 0;
    (void)arg;
    for (int i = 0; i < 200; i++) {
        struct arena *a = arena_create();
        const struct extract_case *c =
            &extract_cases[(size_t)i % (sizeof(extract_cases) / sizeof(extract_cases[0]))];
        struct answer r = answer_extract(a, c->input, c->hint);
        if (r.kind != c->kind || strcmp(r.text, c->text) != 0)
            failures++;
        arena_destroy(a);
    }
    return (void *)failures;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, extract_worker, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_int_equal((long)ret, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extract_table), cmocka_unit_test(test_parse_number),
        cmocka_unit_test(test_normalize),     cmocka_unit_test(test_equal),
        cmocka_unit_test(test_key),           cmocka_unit_test(test_robustness),
        cmocka_unit_test(test_without_init),  cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
