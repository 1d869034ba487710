/* config_clone and node builders: a clone is independent of the original (its YAML tree can
 * be freed) and dumps to the same JSON (tests src/config/clone.c, node_build.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/strbuf.h"
#include "config/config.h"
#include "config/dump.h"
#include "config/node.h"

#include <errno.h>
#include <string.h>

static const char yaml[] = "id: p1\n"
                           "clusters:\n"
                           "  - endpoints:\n"
                           "      - address: 127.0.0.1:1\n"
                           "        metadata:\n"
                           "          quilkin.dev: {tokens: [AQID, \"\"]}\n"
                           "          nested: {a: [1, -2, true, null, x]}\n"
                           "  - locality: {region: eu, zone: z1}\n"
                           "    endpoints:\n"
                           "      - address: name.example:7\n"
                           "filters:\n"
                           "  - name: quilkin.filters.debug.v1alpha1.Debug\n"
                           "    label: dbg\n"
                           "    config: {id: hello}\n";

static void test_clone_is_independent_and_equal(void **state)
{
    (void)state;
    struct config *cfg = NULL;
    struct err e = {{0}};
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, &e), 0);
    struct strbuf a = {0}, b = {0};
    assert_int_equal(config_dump_json(cfg, &a), 0);
    struct config *copy = config_clone(cfg);
    assert_non_null(copy);
    config_destroy(cfg); /* the copy must not point into the original's tree */
    assert_int_equal(config_dump_json(copy, &b), 0);
    assert_string_equal(a.buf, b.buf);
    assert_int_equal(copy->groups[0].endpoints[0].n_tokens, 2);
    assert_string_equal(copy->groups[1].locality.zone, "z1");
    assert_string_equal(copy->filters[0].label, "dbg");
    assert_non_null(strstr(b.buf, "\"nested\":{\"a\":[1,-2,true,null,\"x\"]}"));
    config_destroy(copy);
    strbuf_deinit(&a);
    strbuf_deinit(&b);
}

static void test_node_builders(void **state)
{
    (void)state;
    struct node *m = node_new_map();
    assert_int_equal(node_map_append(m, "n", 1, node_new_int(true, 5)), 0);
    struct node *s = node_new_seq();
    for (int i = 0; i < 40; i++) /* crosses several growth steps */
        assert_int_equal(node_seq_append(s, node_new_int(false, (uint64_t)i)), 0);
    assert_int_equal(node_map_append(m, "list", 4, s), 0);
    assert_int_equal(node_map_append(m, "s", 1, node_new_str("x\"y", 3)), 0);
    assert_int_equal(node_map_append(m, "b", 1, node_new_bool(false)), 0);
    assert_int_equal(node_map_append(m, "z", 1, node_new_null()), 0);
    assert_int_equal(node_seq_append(s, NULL), -ENOMEM); /* a failed constructor */
    const struct node *n = node_map_get(m, "n");
    assert_int_equal(n->kind, NODE_INT);
    assert_true(n->is_neg);
    assert_string_equal(n->str, "-5");
    assert_int_equal(node_map_get(m, "list")->n_items, 40);
    struct strbuf out = {0};
    node_dump_json(m, &out);
    assert_non_null(strstr(out.buf, "\"s\":\"x\\\"y\",\"b\":false,\"z\":null"));
    assert_non_null(strstr(out.buf, "[0,1,2,3,4,5"));
    struct node *c = node_clone(m);
    struct strbuf out2 = {0};
    node_dump_json(c, &out2);
    assert_string_equal(out.buf, out2.buf);
    node_free(c);
    node_free(m);
    strbuf_deinit(&out);
    strbuf_deinit(&out2);
}

static struct node *parse(const char *text)
{
    struct err e = {{0}};
    struct node *n = node_parse_yaml(text, strlen(text), &e);
    assert_non_null(n);
    return n;
}

/* node_equal decides whether a reload may keep a filter: equal means "same tree", positions
 * aside; anything that could decode differently must compare unequal. */
static void test_node_equal(void **state)
{
    (void)state;
    struct node *a = parse("{x: 1, l: [a, {b: true}], s: \"q\"}");
    struct node *b = parse("# moved\n\n{x: 1,   l: [a, {b: true}],\n s: \"q\"}");
    assert_true(node_equal(a, b)); /* other lines and columns */
    struct node *c = node_clone(a);
    assert_true(node_equal(a, c)); /* a built copy */
    static const char *const differ[] = {
        "{x: 2, l: [a, {b: true}], s: \"q\"}",  /* value */
        "{x: 1, l: [a, {b: false}], s: \"q\"}", /* nested value */
        "{x: 1, l: [a], s: \"q\"}",             /* list length */
        "{l: [a, {b: true}], x: 1, s: \"q\"}",  /* key order: conservatively unequal */
        "{x: 0x1, l: [a, {b: true}], s: \"q\"}", /* same number, other text */
        "{x: \"1\", l: [a, {b: true}], s: \"q\"}", /* a string, not an integer */
        "{x: 1, l: [a, {b: true}], s: \"q\", t: ~}", /* one key more */
    };
    for (size_t i = 0; i < sizeof(differ) / sizeof(differ[0]); i++) {
        struct node *d = parse(differ[i]);
        if (node_equal(a, d))
            fail_msg("equal to %s", differ[i]);
        node_free(d);
    }
    assert_true(node_equal(NULL, NULL));
    assert_false(node_equal(a, NULL));
    node_free(a);
    node_free(b);
    node_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clone_is_independent_and_equal),
        cmocka_unit_test(test_node_builders),
        cmocka_unit_test(test_node_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
