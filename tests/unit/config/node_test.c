/* config/yaml.c and config/node.c: YAML -> node tree (kinds, positions, limits) and the typed
 * getters' values and messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/err.h"
#include "config/node.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct node *parse(const char *yaml)
{
    struct err e = {0};
    struct node *n = node_parse_yaml(yaml, strlen(yaml), &e);
    if (!n)
        fail_msg("parse failed: %s\n---\n%s", e.msg, yaml);
    return n;
}

/* Parses "v: TEXT" and returns the value's kind (tree freed). */
static struct node *scalar(const char *text, struct node **root)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "v: %s\n", text);
    *root = parse(buf);
    assert_int_equal((*root)->kind, NODE_MAP);
    assert_int_equal((*root)->n_pairs, 1);
    return (*root)->pairs[0].value;
}

static enum node_kind kind_of(const char *text)
{
    struct node *root;
    enum node_kind k = scalar(text, &root)->kind;
    node_free(root);
    return k;
}

/* Parses "v: TEXT" and fails (naming the kind found) unless the value resolved to `kind`. */
static struct node *scalar_of_kind(const char *text, enum node_kind kind, struct node **root)
{
    struct node *v = scalar(text, root);
    if (v->kind != kind)
        fail_msg("%s resolved to %s", text, node_kind_name(v->kind));
    return v;
}

/* Every one of the n texts resolves to `kind`. */
static void expect_kinds(const char *const *texts, size_t n, enum node_kind kind)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kind_of(texts[i]), kind);
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void expect_parse_error(const char *yaml, const char *line_col, const char *reason)
{
    struct err e = {0};
    struct node *n = node_parse_yaml(yaml, strlen(yaml), &e);
    if (n) {
        node_free(n);
        fail_msg("expected a parse error for:\n%s", yaml);
    }
    if (strncmp(e.msg, line_col, strlen(line_col)) != 0 || !strstr(e.msg, reason))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", e.msg, line_col, reason);
}

static void null_and_bool_kinds(void **state)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    expect_kinds(nulls, N_OF(nulls), NODE_NULL);
    const char *trues[] = {"true", "True", "TRUE"};
    const char *falses[] = {"false", "False", "FALSE"};
    for (size_t i = 0; i < 3; i++) {
        struct node *root;
        struct node *v = scalar(trues[i], &root);
        assert_int_equal(v->kind, NODE_BOOL);
        assert_true(v->b);
        node_free(root);
        v = scalar(falses[i], &root);
        assert_int_equal(v->kind, NODE_BOOL);
        assert_false(v->b);
        node_free(root);
    }
    /* YAML 1.1 words are plain strings in 1.2, as are mixed-case spellings. */
    static const char *const strs[] = {"yes", "off", "tRUE", "nULL"};
    expect_kinds(strs, N_OF(strs), NODE_STR);
}

static void int_kinds(void **state)
{
    static const struct {
        const char *text;
        uint64_t u;
        bool neg;
    } ok[] = {
        {"0", 0, false},
        {"42", 42, false},
        {"+7", 7, false},
        {"-5", 5, true},
        {"-0", 0, false},
        {"0x1F", 31, false},
        {"0xff", 255, false},
        {"0o17", 15, false},
        {"-0x10", 16, true},
        {"18446744073709551615", UINT64_MAX, false},
        {"0xFFFFFFFFFFFFFFFF", UINT64_MAX, false},
    };
    for (size_t i = 0; i < N_OF(ok); i++) {
        struct node *root;
        struct node *v = scalar_of_kind(ok[i].text, NODE_INT, &root);
        assert_int_equal(v->u, ok[i].u);
        assert_int_equal(v->is_neg, ok[i].neg);
        assert_string_equal(v->str, ok[i].text);
        node_free(root);
    }
    struct node *root;
    struct node *v = scalar("-12", &root);
    assert_true(v->f == -12.0);
    node_free(root);

    /* Beyond 64 bits, leading zeros, bad digits: strings. */
    static const char *const big[] = {"18446744073709551616", "0x10000000000000000"};
    expect_kinds(big, N_OF(big), NODE_STR);
    static const char *const strs[] = {"007",   "-01",   "0x",  "0o8",  "0xg",
                                       "1_000", "0b101", "+-1", "12abc"};
    expect_kinds(strs, N_OF(strs), NODE_STR);
}

static void float_kinds(void **state)
{
    static const struct {
        const char *text;
        double f;
    } ok[] = {
        {"1.5", 1.5}, {"-2e3", -2000.0}, {".5", 0.5},      {"1.", 1.0},
        {"1e3", 1000.0}, {"+1.25E-2", 0.0125}, {"007.5", 7.5},
    };
    for (size_t i = 0; i < N_OF(ok); i++) {
        struct node *root;
        struct node *v = scalar_of_kind(ok[i].text, NODE_FLOAT, &root);
        assert_true(v->f == ok[i].f);
        node_free(root);
    }
    const char *infs[] = {".inf", ".Inf", ".INF", "+.inf", "-.inf", "-.INF"};
    for (size_t i = 0; i < 6; i++) {
        struct node *root;
        struct node *v = scalar(infs[i], &root);
        assert_int_equal(v->kind, NODE_FLOAT);
        assert_true(isinf(v->f));
        assert_true((v->f < 0) == (infs[i][0] == '-'));
        node_free(root);
    }
    const char *nans[] = {".nan", ".NaN", ".NAN"};
    for (size_t i = 0; i < 3; i++) {
        struct node *root;
        struct node *v = scalar(nans[i], &root);
        assert_int_equal(v->kind, NODE_FLOAT);
        assert_true(isnan(v->f));
        node_free(root);
    }
    /* "1e999" overflows a double */
    static const char *const strs[] = {"1e999", "1e", ".", "inf", "nan", "-.nan", "1.5.5", "0x1p3"};
    expect_kinds(strs, N_OF(strs), NODE_STR);
}

static void quoted_and_block_scalars_are_strings(void **state)
{
    struct node *root = parse("a: \"42\"\nb: 'true'\nc: \"\"\nd: |\n  12\ne: >\n  null\n"
                              "f: !!str 5\ng: ! 5\nh: \"a\\0b\"\n");
    const char *keys[] = {"a", "b", "c", "d", "e", "f", "g"};
    const char *texts[] = {"42", "true", "", "12\n", "null\n", "5", "5"};
    for (size_t i = 0; i < 7; i++) {
        const struct node *v = node_map_get(root, keys[i]);
        assert_non_null(v);
        assert_int_equal(v->kind, NODE_STR);
        assert_string_equal(v->str, texts[i]);
    }
    const struct node *h = node_map_get(root, "h");
    assert_int_equal(h->kind, NODE_STR);
    assert_int_equal(h->str_len, 3);
    assert_memory_equal(h->str, "a\0b", 4);
    node_free(root);
}

static void tree_shape_and_positions(void **state)
{
    struct node *root = parse("# comment\na:\n  b: [1, two, {c: ~}]\n  d:\n    - x\n    - y\n");
    assert_int_equal(root->kind, NODE_MAP);
    assert_int_equal(root->line, 2);
    assert_int_equal(root->col, 1);
    assert_string_equal(root->str, "");
    const struct node *a = node_map_get(root, "a");
    assert_int_equal(a->kind, NODE_MAP);
    assert_int_equal(a->n_pairs, 2);
    assert_int_equal(a->pairs[0].key->line, 3);
    assert_int_equal(a->pairs[0].key->col, 3);
    const struct node *b = node_map_get(a, "b");
    assert_int_equal(b->kind, NODE_SEQ);
    assert_int_equal(b->n_items, 3);
    assert_int_equal(b->line, 3);
    assert_int_equal(b->col, 6);
    assert_int_equal(b->items[0]->kind, NODE_INT);
    assert_int_equal(b->items[0]->col, 7);
    assert_int_equal(b->items[1]->kind, NODE_STR);
    assert_string_equal(b->items[1]->str, "two");
    assert_int_equal(b->items[1]->col, 10);
    assert_int_equal(b->items[2]->kind, NODE_MAP);
    assert_int_equal(node_map_get(b->items[2], "c")->kind, NODE_NULL);
    const struct node *d = node_map_get(a, "d");
    assert_int_equal(d->kind, NODE_SEQ);
    assert_int_equal(d->n_items, 2);
    assert_int_equal(d->items[1]->line, 6);
    assert_int_equal(d->items[1]->col, 7);
    assert_string_equal(d->items[1]->str, "y");
    node_free(root);
}

static void empty_and_comment_only_inputs(void **state)
{
    const char *inputs[] = {"", "# just a comment\n", "\n\n   \n", "---\n", "---\n...\n"};
    for (size_t i = 0; i < 5; i++) {
        struct node *n = parse(inputs[i]);
        assert_int_equal(n->kind, NODE_NULL);
        assert_int_equal(n->str_len, 0);
        if (i < 3) { /* no document at all: the root sits at the start */
            assert_int_equal(n->line, 1);
            assert_int_equal(n->col, 1);
        }
        node_free(n);
    }
    struct err e = {0};
    struct node *n = node_parse_yaml(NULL, 0, &e);
    assert_non_null(n);
    assert_int_equal(n->kind, NODE_NULL);
    node_free(n);
    node_free(NULL);
}

static void only_first_document(void **state)
{
    struct node *n = parse("a: 1\n---\nb: 2\n--- [unclosed\n");
    assert_int_equal(n->kind, NODE_MAP);
    assert_int_equal(n->n_pairs, 1);
    assert_non_null(node_map_get(n, "a"));
    assert_null(node_map_get(n, "b"));
    node_free(n);
}

static void aliases_and_anchors_rejected(void **state)
{
    expect_parse_error("a: &x 1\nb: *x\n", "line 1 column 4:", "anchors are not supported");
    expect_parse_error("a: &x [1]\n", "line 1 column 4:", "anchors are not supported");
    expect_parse_error("a: &x {b: 1}\n", "line 1 column 4:", "anchors are not supported");
    expect_parse_error("a: 1\nb: *x\n", "line 2 column 4:", "aliases are not supported");
}

static char *nested(unsigned depth)
{
    char *s = malloc(depth * 2 + 2);
    for (unsigned i = 0; i < depth; i++)
        s[i] = '[';
    for (unsigned i = 0; i < depth; i++)
        s[depth + i] = ']';
    s[depth * 2] = '\n';
    s[depth * 2 + 1] = '\0';
    return s;
}

static void depth_limit(void **state)
{
    char *ok = nested(64);
    struct node *n = parse(ok);
    unsigned depth = 0;
    const struct node *p = n;
    while (p->kind == NODE_SEQ) {
        depth++;
        if (!p->n_items)
            break;
        p = p->items[0];
    }
    assert_int_equal(depth, 64);
    node_free(n);
    free(ok);
    char *deep = nested(65);
    expect_parse_error(deep, "line 1 column 65:", "nesting too deep");
    free(deep);
    char *very = nested(100000);
    expect_parse_error(very, "line 1 column 65:", "nesting too deep");
    free(very);
}

static void syntax_errors_have_positions(void **state)
{
    expect_parse_error("a: [1, 2\n", "line 2 column 1:", "did not find expected");
    expect_parse_error("a: b\n c: d\n", "line 2 column", "mapping values are not allowed");
    expect_parse_error("a: \"unterminated\n", "line ", "unexpected end of stream");
    expect_parse_error("a:\n\t- b\n", "line 2 column 1:", "cannot start any token");
    expect_parse_error("a: \x01\n", "line 1 column", "control characters are not allowed");
    expect_parse_error("a: \xff\xfe\xfd\n", "line 1 column", "invalid");
    char with_nul[] = "a: b\0c\n";
    struct err e = {0};
    struct node *n = node_parse_yaml(with_nul, sizeof(with_nul) - 1, &e);
    assert_null(n);
    assert_non_null(strstr(e.msg, "line 1"));
}

static void map_get(void **state)
{
    struct node *root = parse("1: int\n\"1\": str\nx: first\ny: ~\n? [a]\n: seq\n");
    assert_string_equal(node_map_get(root, "1")->str, "str");
    assert_string_equal(node_map_get(root, "x")->str, "first");
    assert_int_equal(node_map_get(root, "y")->kind, NODE_NULL);
    assert_null(node_map_get(root, "z"));
    assert_null(node_map_get(root, ""));
    assert_null(node_map_get(NULL, "x"));
    assert_null(node_map_get(node_map_get(root, "x"), "x"));
    assert_int_equal(root->pairs[4].key->kind, NODE_SEQ);
    assert_int_equal(root->pairs[0].key->kind, NODE_INT);
    node_free(root);
}

static void expect_msg(const struct err *e, const char *want)
{
    if (!strstr(e->msg, want))
        fail_msg("message \"%s\" lacks \"%s\"", e->msg, want);
}

static void integer_getters(void **state)
{
    struct node *root = parse("a: 65535\nb: 65536\nc: -1\nd: \"3\"\ne: 4294967295\nf: 4294967296\n"
                              "g: 18446744073709551615\nh: 1.5\ni: ~\nj: 0x10\n");
    struct err e = {0};
    uint16_t u16 = 0;
    uint32_t u32 = 0;
    uint64_t u64 = 0;
    assert_int_equal(node_get_u16(node_map_get(root, "a"), &u16, &e), 0);
    assert_int_equal(u16, 65535);
    assert_int_equal(node_get_u16(node_map_get(root, "j"), &u16, &e), 0);
    assert_int_equal(u16, 16);
    assert_int_equal(node_get_u16(node_map_get(root, "b"), &u16, &e), -EINVAL);
    expect_msg(&e, "line 2 column 4: ");
    expect_msg(&e, "65536");
    expect_msg(&e, "out of range");
    assert_int_equal(node_get_u16(node_map_get(root, "c"), &u16, &e), -EINVAL);
    expect_msg(&e, "line 3 column 4: ");
    expect_msg(&e, "-1");
    assert_int_equal(node_get_u16(node_map_get(root, "d"), &u16, &e), -EINVAL);
    expect_msg(&e, "line 4 column 4: expected an unsigned 16-bit integer, found string");
    assert_int_equal(node_get_u32(node_map_get(root, "e"), &u32, &e), 0);
    assert_int_equal(u32, UINT32_MAX);
    assert_int_equal(node_get_u32(node_map_get(root, "f"), &u32, &e), -EINVAL);
    expect_msg(&e, "line 6 column 4: ");
    assert_int_equal(node_get_u64(node_map_get(root, "g"), &u64, &e), 0);
    assert_true(u64 == UINT64_MAX);
    assert_int_equal(node_get_u64(node_map_get(root, "h"), &u64, &e), -EINVAL);
    expect_msg(&e, "found float");
    assert_int_equal(node_get_u64(node_map_get(root, "i"), &u64, &e), -EINVAL);
    expect_msg(&e, "found null");
    assert_int_equal(node_get_u64(root, &u64, &e), -EINVAL);
    expect_msg(&e, "found map");
    assert_int_equal(node_get_u32(NULL, &u32, &e), -EINVAL);
    node_free(root);
}

static void bool_and_str_getters(void **state)
{
    struct node *root = parse("a: true\nb: yes\nc: 42\nd: hi\ne: ~\nf: [1]\ng: false\nh: 1.5\n");
    struct err e = {0};
    bool b = false;
    const char *s = NULL;
    assert_int_equal(node_get_bool(node_map_get(root, "a"), &b, &e), 0);
    assert_true(b);
    assert_int_equal(node_get_bool(node_map_get(root, "g"), &b, &e), 0);
    assert_false(b);
    assert_int_equal(node_get_bool(node_map_get(root, "b"), &b, &e), -EINVAL);
    expect_msg(&e, "line 2 column 4: expected a boolean, found string");
    /* Scalars read as their source text, like serde (`id: 42` is "42"). */
    assert_int_equal(node_get_str(node_map_get(root, "c"), &s, &e), 0);
    assert_string_equal(s, "42");
    assert_int_equal(node_get_str(node_map_get(root, "d"), &s, &e), 0);
    assert_string_equal(s, "hi");
    assert_int_equal(node_get_str(node_map_get(root, "a"), &s, &e), 0);
    assert_string_equal(s, "true");
    assert_int_equal(node_get_str(node_map_get(root, "h"), &s, &e), 0);
    assert_string_equal(s, "1.5");
    assert_int_equal(node_get_str(node_map_get(root, "e"), &s, &e), -EINVAL);
    expect_msg(&e, "line 5 column 4: expected a string, found null");
    assert_int_equal(node_get_str(node_map_get(root, "f"), &s, &e), -EINVAL);
    expect_msg(&e, "line 6 column 4: expected a string, found sequence");
    assert_int_equal(node_get_str(root, &s, &e), -EINVAL);
    expect_msg(&e, "found map");
    node_free(root);
}

static void enum_getter(void **state)
{
    static const char *const names[] = {"APPEND", "PREPEND", "DO_NOTHING"};
    struct node *root = parse("a: PREPEND\nb: append\nc: [x]\nd: \"DO_NOTHING\"\n");
    struct err e = {0};
    int idx = -1;
    assert_int_equal(node_get_enum(node_map_get(root, "a"), names, 3, &idx, &e), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(node_get_enum(node_map_get(root, "d"), names, 3, &idx, &e), 0);
    assert_int_equal(idx, 2);
    assert_int_equal(node_get_enum(node_map_get(root, "b"), names, 3, &idx, &e), -EINVAL);
    assert_string_equal(e.msg, "line 2 column 4: unknown variant `append`, expected one of "
                               "`APPEND`, `PREPEND`, `DO_NOTHING`");
    assert_int_equal(node_get_enum(node_map_get(root, "b"), names, 2, &idx, &e), -EINVAL);
    assert_string_equal(e.msg, "line 2 column 4: unknown variant `append`, expected one of "
                               "`APPEND`, `PREPEND`");
    assert_int_equal(node_get_enum(node_map_get(root, "c"), names, 3, &idx, &e), -EINVAL);
    expect_msg(&e, "line 3 column 4: expected a string, found sequence");
    node_free(root);
}

static void check_map(void **state)
{
    static const char *const allowed[] = {"name", "label", "config"};
    struct node *root = parse("ok: {name: a, config: 1}\nbad: {name: a, labels: b}\n"
                              "seq: [1]\nint: {1: x}\ndup: {name: a, name: b}\n");
    struct err e = {0};
    assert_int_equal(node_check_map(node_map_get(root, "ok"), allowed, 3, &e), 0);
    assert_int_equal(node_check_map(node_map_get(root, "bad"), NULL, 0, &e), 0);
    assert_int_equal(node_check_map(node_map_get(root, "bad"), allowed, 3, &e), -EINVAL);
    assert_string_equal(e.msg, "line 2 column 16: unknown field `labels`, expected one of "
                               "`name`, `label`, `config`");
    assert_int_equal(node_check_map(node_map_get(root, "seq"), allowed, 3, &e), -EINVAL);
    assert_string_equal(e.msg, "line 3 column 6: expected a map, found sequence");
    assert_int_equal(node_check_map(node_map_get(root, "seq"), NULL, 0, &e), -EINVAL);
    assert_int_equal(node_check_map(node_map_get(root, "int"), allowed, 3, &e), -EINVAL);
    expect_msg(&e, "line 4 column 7: unknown field `1`");
    assert_int_equal(node_check_map(node_map_get(root, "dup"), allowed, 3, &e), -EINVAL);
    expect_msg(&e, "line 5 column 16: duplicate field `name`");
    assert_int_equal(node_check_map(NULL, allowed, 3, &e), -EINVAL);
    node_free(root);
}

static void error_and_kind_names(void **state)
{
    struct node *root = parse("\n\n    key: value\n");
    struct err e = {0};
    assert_int_equal(node_error(node_map_get(root, "key"), &e, "bad %s %d", "thing", 7), -EINVAL);
    assert_string_equal(e.msg, "line 3 column 10: bad thing 7");
    node_free(root);
    assert_string_equal(node_kind_name(NODE_NULL), "null");
    assert_string_equal(node_kind_name(NODE_BOOL), "boolean");
    assert_string_equal(node_kind_name(NODE_INT), "integer");
    assert_string_equal(node_kind_name(NODE_FLOAT), "float");
    assert_string_equal(node_kind_name(NODE_STR), "string");
    assert_string_equal(node_kind_name(NODE_SEQ), "sequence");
    assert_string_equal(node_kind_name(NODE_MAP), "map");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(null_and_bool_kinds),
        cmocka_unit_test(int_kinds),
        cmocka_unit_test(float_kinds),
        cmocka_unit_test(quoted_and_block_scalars_are_strings),
        cmocka_unit_test(tree_shape_and_positions),
        cmocka_unit_test(empty_and_comment_only_inputs),
        cmocka_unit_test(only_first_document),
        cmocka_unit_test(aliases_and_anchors_rejected),
        cmocka_unit_test(depth_limit),
        cmocka_unit_test(syntax_errors_have_positions),
        cmocka_unit_test(map_get),
        cmocka_unit_test(integer_getters),
        cmocka_unit_test(bool_and_str_getters),
        cmocka_unit_test(enum_getter),
        cmocka_unit_test(check_map),
        cmocka_unit_test(error_and_kind_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
