/* Protobuf-c helpers (tests src/xds/pb_util.c): the nesting limit of pb_unpack at its exact
 * boundary, its error texts, pb_pack, and the encode-side pool (zeroed blocks, initialised
 * messages, growth, release: ASan's leak check covers the frees). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/err.h"
#include "xds/pb_util.h"

#include "google/protobuf/struct.pb-c.h"

#include <stdlib.h>
#include <string.h>

/* ListValue{values: [Value{list_value: ListValue{...}}]} with `levels` nested messages below
 * the top-level ListValue, written back to front so each level wraps what is there. */
static size_t nested_lists(uint8_t *buf, size_t cap, unsigned levels)
{
    size_t start = cap;
    for (unsigned i = levels; i-- > 0;) {
        uint8_t t[11];
        size_t n = 0;
        uint64_t v = cap - start;
        t[n++] = i % 2 == 0 ? 0x0a : 0x32; /* ListValue.values : Value.list_value */
        do {
            t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
            v >>= 7;
        } while (v);
        assert_true(n <= start);
        start -= n;
        memcpy(buf + start, t, n);
    }
    memmove(buf, buf + start, cap - start);
    return cap - start;
}

static void unpack_nesting_boundary(void **state)
{
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    struct err e = {{0}};

    size_t len = nested_lists(buf, cap, 200);
    ProtobufCMessage *m = pb_unpack(&google__protobuf__list_value__descriptor, buf, len, &e);
    assert_non_null(m);
    protobuf_c_message_free_unpacked(m, NULL);

    len = nested_lists(buf, cap, 201);
    assert_null(pb_unpack(&google__protobuf__list_value__descriptor, buf, len, &e));
    assert_string_equal(e.msg, "failed to decode ListValue message: nested too deeply");

    /* far deeper: rejected by the walk alone, protobuf-c never recurses into it */
    len = nested_lists(buf, cap, 9000);
    assert_null(pb_unpack(&google__protobuf__list_value__descriptor, buf, len, &e));
    assert_string_equal(e.msg, "failed to decode ListValue message: nested too deeply");
    free(buf);
}

static void unpack_empty_and_malformed(void **state)
{
    struct err e = {{0}};
    /* NULL is an empty message, not an error */
    Google__Protobuf__Value *v =
        (void *)pb_unpack(&google__protobuf__value__descriptor, NULL, 0, &e);
    assert_non_null(v);
    assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET);
    protobuf_c_message_free_unpacked(&v->base, NULL);

    /* a length past the end: the walk lets it through, protobuf-c rejects it */
    static const uint8_t bad[] = {0x32, 0x05, 0x0a};
    assert_null(pb_unpack(&google__protobuf__value__descriptor, bad, sizeof(bad), &e));
    assert_string_equal(e.msg, "failed to decode Value message");
}

static void pack_round_trip(void **state)
{
    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v.string_value = "hi";
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(pb_pack(&v.base, &out, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(out, "\x1a\x02hi", 4);
    free(out);

    /* an empty message still gets a buffer */
    Google__Protobuf__Struct s = GOOGLE__PROTOBUF__STRUCT__INIT;
    out = NULL;
    assert_int_equal(pb_pack(&s.base, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(len, 0);
    free(out);
}

static void pool_blocks_and_messages(void **state)
{
    struct pb_pool p = {0};
    uint8_t *z = pb_pool_alloc(&p, 0);
    assert_non_null(z);
    for (int i = 0; i < 100; i++) { /* past the first capacity, so the table grows */
        uint8_t *b = pb_pool_alloc(&p, 64);
        assert_non_null(b);
        for (int j = 0; j < 64; j++)
            assert_int_equal(b[j], 0);
    }
    Google__Protobuf__Value *v = (void *)pb_pool_msg(&p, &google__protobuf__value__descriptor);
    assert_non_null(v);
    assert_ptr_equal(v->base.descriptor, &google__protobuf__value__descriptor);
    assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET);
    assert_int_equal(p.n, 102);
    pb_pool_free(&p);
    assert_null(p.ptrs);
    assert_int_equal(p.n, 0);
    assert_int_equal(p.cap, 0);
    assert_non_null(pb_pool_alloc(&p, 8)); /* reusable after a free */
    pb_pool_free(&p);
}

static void str_or_empty(void **state)
{
    static const char s[] = "x";
    assert_string_equal(pb_str(NULL), "");
    assert_ptr_equal(pb_str(s), s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unpack_nesting_boundary),
        cmocka_unit_test(unpack_empty_and_malformed),
        cmocka_unit_test(pack_round_trip),
        cmocka_unit_test(pool_blocks_and_messages),
        cmocka_unit_test(str_or_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
