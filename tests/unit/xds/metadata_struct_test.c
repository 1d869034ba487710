/* Struct <-> node maps (tests src/xds/metadata_struct.c): last-wins key selection, Struct ->
 * node with skipped keys, dropped kindless entries and Rust's float-to-int rules, and node ->
 * Struct with a skipped key and reserved room. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/strbuf.h"
#include "config/dump.h"
#include "config/node.h"
#include "xds/metadata_struct.h"
#include "xds/pb_util.h"

#include "../support/xds_fixture.h"

#include "google/protobuf/struct.pb-c.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void last_wins(void **state)
{
    const char *keys[] = {"a", "b", NULL, "a", "c", "b", "a"};
    bool keep[7];
    memset(keep, 1, sizeof(keep));
    assert_int_equal(metadata_struct_last_wins(keys, 7, keep), 0);
    static const bool want[7] = {false, false, false, false, true, true, true};
    for (int i = 0; i < 7; i++)
        assert_int_equal(keep[i], want[i]);
    assert_int_equal(metadata_struct_last_wins(NULL, 0, keep), 0);
}

/* A Struct of entries built on the stack: keys[i] -> values[i]. */
struct fields {
    Google__Protobuf__Struct s;
    Google__Protobuf__Struct__FieldsEntry e[8], *p[8];
    Google__Protobuf__Value v[8];
};

static void add(struct fields *f, const char *key, Google__Protobuf__Value__KindCase kind,
                double num, const char *str)
{
    size_t i = f->s.n_fields++;
    google__protobuf__struct__fields_entry__init(&f->e[i]);
    google__protobuf__value__init(&f->v[i]);
    f->v[i].kind_case = kind;
    if (kind == GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE)
        f->v[i].number_value = num;
    else if (kind == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
        f->v[i].string_value = (char *)str;
    f->e[i].key = (char *)key;
    f->e[i].value = &f->v[i];
    f->p[i] = &f->e[i];
    f->s.fields = f->p;
}

static void struct_to_node(void **state)
{
    struct fields f;
    google__protobuf__struct__init(&f.s);
    add(&f, "n", GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE, -2.9, NULL);
    add(&f, "quilkin.dev", GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE, 0, "skipped");
    add(&f, "none", GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET, 0, NULL);
    add(&f, "big", GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE, 1e300, NULL);
    add(&f, "nan", GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE, NAN, NULL);
    add(&f, "n", GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE, 0, "last");
    add(&f, "nul", GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE, 0, NULL);
    struct node *n = metadata_struct_to_node(&f.s, "quilkin.dev");
    assert_node_json(n, "{\"big\":9223372036854775807,\"nan\":0,\"n\":\"last\",\"nul\":null}");
    node_free(n);
    n = metadata_struct_to_node(&f.s, NULL);
    assert_non_null(node_map_get(n, "quilkin.dev"));
    node_free(n);
}

static void node_to_struct(void **state)
{
    struct node *map = node_new_map();
    assert_int_equal(node_map_append(map, "a", 1, node_new_int(true, 3)), 0);
    assert_int_equal(node_map_append(map, "skip", 4, node_new_bool(true)), 0);
    struct node *seq = node_new_seq();
    assert_int_equal(node_seq_append(seq, node_new_str("x", 1)), 0);
    assert_int_equal(node_map_append(map, "l", 1, seq), 0);
    struct pb_pool p = {0};
    Google__Protobuf__Struct *s = metadata_struct_from_node(&p, map, "skip", 2);
    assert_non_null(s);
    assert_int_equal(s->n_fields, 2);
    assert_string_equal(s->fields[0]->key, "a");
    assert_int_equal(s->fields[0]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
    assert_true(s->fields[0]->value->number_value == -3.0);
    assert_string_equal(s->fields[1]->key, "l");
    assert_int_equal(s->fields[1]->value->list_value->n_values, 1);
    s->fields[2] = s->fields[0]; /* the reserved room is writable (ASan checks the bounds) */
    s->fields[3] = s->fields[1];
    /* and back again */
    s->n_fields = 2;
    struct node *again = metadata_struct_to_node(s, NULL);
    assert_node_json(again, "{\"a\":-3,\"l\":[\"x\"]}");
    node_free(again);
    pb_pool_free(&p);
    node_free(map);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(last_wins),
        cmocka_unit_test(struct_to_node),
        cmocka_unit_test(node_to_struct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
