/* Dynamic metadata slots, value equality (spec proxy.md §9) and key interning
 * (tests src/filters/metadata.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "filters/metadata.h"

#include <errno.h>
#include <stdio.h>

static struct md_value bytes(const char *s, uint32_t n)
{
    return (struct md_value){.kind = MD_BYTES, .len = n, .u.bytes = (const uint8_t *)s};
}

static struct md_value str(const char *s, uint32_t n)
{
    return (struct md_value){.kind = MD_STRING, .len = n, .u.bytes = (const uint8_t *)s};
}

static struct md_value num(uint64_t n)
{
    return (struct md_value){.kind = MD_NUMBER, .u.n = n};
}

static struct md_value boolean(bool b)
{
    return (struct md_value){.kind = MD_BOOL, .u.b = b};
}

static void test_set_get_replace_full(void **state)
{
    (void)state;
    struct metadata m;
    md_clear(&m);
    assert_null(md_get(&m, 3));
    struct md_value v = num(7);
    assert_int_equal(md_set(&m, 3, &v), 0);
    assert_int_equal(md_get(&m, 3)->u.n, 7);
    v = num(9);
    assert_int_equal(md_set(&m, 3, &v), 0); /* replace, not a new slot */
    assert_int_equal(md_get(&m, 3)->u.n, 9);
    assert_int_equal(m.n, 1);
    for (uint32_t k = 10; k < 10 + MD_SLOTS - 1; k++)
        assert_int_equal(md_set(&m, k, &v), 0);
    assert_int_equal(md_set(&m, 99, &v), -ENOSPC); /* full: defined outcome */
    assert_int_equal(md_set(&m, 3, &v), 0);         /* replacing still works */
    md_clear(&m);
    assert_null(md_get(&m, 3));
}

static void test_equality_table(void **state)
{
    (void)state;
    struct md_value a = bytes("abc", 3), a2 = bytes("abc", 3), b = bytes("abd", 3);
    struct md_value s = str("abc", 3), one = bytes("\x05", 1), two = bytes("\x05\x05", 2);
    assert_true(md_value_eq(&a, &a2));
    assert_false(md_value_eq(&a, &b));
    assert_true(md_value_eq(&s, &a)); /* String / Bytes compare by bytes */
    assert_true(md_value_eq(&a, &s));
    struct md_value n5 = num(5), n6 = num(6);
    assert_true(md_value_eq(&n5, &one)); /* Number / 1-byte Bytes */
    assert_false(md_value_eq(&n6, &one));
    assert_false(md_value_eq(&n5, &two));
    assert_false(md_value_eq(&one, &n5)); /* but not Bytes / Number */
    struct md_value t = boolean(true), f = boolean(false);
    assert_true(md_value_eq(&t, &t));
    assert_false(md_value_eq(&t, &f));
    assert_false(md_value_eq(&t, &n5));
    struct md_value items1[] = {bytes("x", 1), num(1)}, items2[] = {bytes("x", 1), num(1)};
    struct md_value items3[] = {bytes("x", 1), num(2)};
    struct md_value l1 = {.kind = MD_LIST, .len = 2, .u.items = items1};
    struct md_value l2 = {.kind = MD_LIST, .len = 2, .u.items = items2};
    struct md_value l3 = {.kind = MD_LIST, .len = 2, .u.items = items3};
    struct md_value l4 = {.kind = MD_LIST, .len = 1, .u.items = items1};
    assert_true(md_value_eq(&l1, &l2));
    assert_false(md_value_eq(&l1, &l3));
    assert_false(md_value_eq(&l1, &l4));
    struct md_value e1 = bytes("", 0), e2 = str("", 0);
    assert_true(md_value_eq(&e1, &e2));
}

static void test_keytab(void **state)
{
    (void)state;
    struct keytab t = {0};
    int a = keytab_intern(&t, "quilkin.dev/capture");
    int b = keytab_intern(&t, "quilkin.dev/capture/is_present");
    assert_true(a >= 0 && b >= 0 && a != b);
    assert_int_equal(keytab_intern(&t, "quilkin.dev/capture"), a);
    for (int i = 0; i < 50; i++) { /* grows */
        char name[16];
        snprintf(name, sizeof(name), "k%d", i);
        assert_true(keytab_intern(&t, name) >= 2);
    }
    assert_string_equal(keytab_name(&t, (uint32_t)b), "quilkin.dev/capture/is_present");
    assert_null(keytab_name(&t, 1000));
    keytab_deinit(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_replace_full),
        cmocka_unit_test(test_equality_table),
        cmocka_unit_test(test_keytab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
