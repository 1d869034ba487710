/* QCMP codec against the spec's byte vectors (qcmp.md §6), including every negative
 * vector (tests src/qcmp/codec.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "qcmp/codec.h"

#include <string.h>

static const uint8_t v1[] = {0x51, 0x4c, 0x4b, 0x4e, 0x00, 0x00, 0x00, 0x09, 0xbf,
                             0x00, 0x00, 0x00, 0x00, 0x63, 0xb6, 0xe9, 0x57};
static const uint8_t v2[] = {0x51, 0x4c, 0x4b, 0x4e, 0x00, 0x00, 0x00, 0x09, 0x2a,
                             0x17, 0x97, 0x9c, 0xfe, 0x3d, 0x85, 0xcd, 0x15};
static const uint8_t v3[] = {0x51, 0x4c, 0x4b, 0x4e, 0x00, 0x01, 0x00, 0x19, 0x2a,
                             0x17, 0x97, 0x9c, 0xfe, 0x3d, 0x85, 0xcd, 0x15,
                             0x17, 0x97, 0x9c, 0xfe, 0x3d, 0x9c, 0xb0, 0x75,
                             0x17, 0x97, 0x9c, 0xfe, 0x3d, 0x9c, 0xfe, 0x95};

static void test_ping_vectors(void **state)
{
    (void)state;
    struct qcmp_packet p;
    assert_int_equal(qcmp_parse(v1, sizeof(v1), &p, NULL), QCMP_OK);
    assert_int_equal(p.kind, QCMP_PING);
    assert_int_equal(p.nonce, 0xbf);
    assert_int_equal(p.client_ts_ns, 1672931671);
    uint8_t out[64];
    assert_int_equal(qcmp_encode(&p, out), 17);
    assert_memory_equal(out, v1, 17);

    assert_int_equal(qcmp_parse(v2, sizeof(v2), &p, NULL), QCMP_OK);
    assert_int_equal(p.nonce, 0x2a);
    assert_true(p.client_ts_ns == 1700000000123456789ll);
}

static void test_reply_vector(void **state)
{
    (void)state;
    struct qcmp_packet p = {.kind = QCMP_PING_REPLY,
                            .nonce = 0x2a,
                            .client_ts_ns = 1700000000123456789ll,
                            .server_recv_ts_ns = 1700000000123456789ll + 1500000,
                            .server_send_ts_ns = 1700000000123456789ll + 1520000};
    uint8_t out[64];
    assert_int_equal(qcmp_encode(&p, out), 33);
    assert_memory_equal(out, v3, 33);
    struct qcmp_packet q;
    assert_int_equal(qcmp_parse(v3, sizeof(v3), &q, NULL), QCMP_OK);
    assert_int_equal(q.kind, QCMP_PING_REPLY);
    assert_true(q.server_recv_ts_ns == p.server_recv_ts_ns);
    assert_true(q.server_send_ts_ns == p.server_send_ts_ns);
}

static void test_negative_vectors(void **state)
{
    (void)state;
    struct qcmp_packet p;
    const char *why;
    assert_int_equal(qcmp_parse((const uint8_t *)"hello", 5, &p, NULL), QCMP_NOT_QCMP);
    assert_int_equal(qcmp_parse((const uint8_t *)"QLK", 3, &p, NULL), QCMP_NOT_QCMP);
    assert_int_equal(qcmp_parse(v1, 0, &p, NULL), QCMP_NOT_QCMP);
    assert_int_equal(qcmp_parse(v1, 4, &p, NULL), QCMP_MALFORMED);
    uint8_t b[64];
    memcpy(b, v1, 4);
    b[4] = 1;
    assert_int_equal(qcmp_parse(b, 5, &p, &why), QCMP_MALFORMED);
    assert_string_equal(why, "unknown version");
    b[4] = 0;
    b[5] = 0xff;
    assert_int_equal(qcmp_parse(b, 6, &p, NULL), QCMP_MALFORMED);
    /* unknown command 2 with a consistent length */
    memset(b, 0, sizeof(b));
    memcpy(b, v1, 4);
    b[5] = 2;
    b[7] = 9;
    assert_int_equal(qcmp_parse(b, 17, &p, &why), QCMP_MALFORMED);
    assert_string_equal(why, "unknown command code");
    /* Ping with length 25 */
    memset(b, 0, sizeof(b));
    memcpy(b, v1, 4);
    b[7] = 0x19;
    assert_int_equal(qcmp_parse(b, 33, &p, NULL), QCMP_MALFORMED);
    /* V2 plus a trailing byte, and V2 without its last byte */
    memcpy(b, v2, 17);
    b[17] = 0;
    assert_int_equal(qcmp_parse(b, 18, &p, NULL), QCMP_MALFORMED);
    assert_int_equal(qcmp_parse(v2, 16, &p, NULL), QCMP_MALFORMED);
    /* V1 claiming to be a PingReply with length 9 */
    memcpy(b, v1, 17);
    b[5] = 1;
    assert_int_equal(qcmp_parse(b, 17, &p, NULL), QCMP_MALFORMED);
    /* every truncation of a valid reply is malformed, never OK */
    for (size_t n = 4; n < sizeof(v3); n++)
        assert_int_equal(qcmp_parse(v3, n, &p, NULL), QCMP_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping_vectors),
        cmocka_unit_test(test_reply_vector),
        cmocka_unit_test(test_negative_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
