/* Concatenate (spec filters.md §4): APPEND / PREPEND / DO_NOTHING per direction, head- and
 * tailroom use, a packet that cannot grow, and config rejections (tests
 * src/filters/concatenate.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "config/config.h"
#include "filters/chain.h"

#include "../support/filter_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    struct chain ch;
    struct keytab keys;
    struct err e;
    uint8_t buf[128];
    struct pkt_ctx c;
};

static struct fixture fx;

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    chain_deinit(&fx.ch);
    keytab_deinit(&fx.keys);
    return 0;
}

static int build(const char *yaml)
{
    return build_chain_yaml(&fx.ch, &fx.keys, yaml, 1, &fx.e);
}

static int build_concat(const char *config_flow)
{
    return build_chain_of(&fx.ch, &fx.keys, "quilkin.filters.concatenate.v1alpha1.Concatenate",
                          config_flow, 1, &fx.e);
}

/* data at offset `off` of a buffer of `cap` bytes */
static void packet_at(const char *data, uint32_t off, uint32_t cap)
{
    assert_true(cap <= sizeof(fx.buf));
    memset(fx.buf, '.', sizeof(fx.buf));
    load_packet(&fx.c, fx.buf, cap, off, data, strlen(data), NULL);
}

static void packet(const char *data)
{
    packet_at(data, 32, sizeof(fx.buf));
}

static void assert_packet(const char *want)
{
    size_t len = strlen(want);
    assert_int_equal(fx.c.pkt.len, len);
    assert_memory_equal(pkt_data(&fx.c.pkt), want, len);
}

static void test_append_on_read(void **state)
{
    (void)state;
    assert_int_equal(build_concat("{on_read: APPEND, bytes: dG9r}"), 0); /* "tok" */
    packet("hello");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("hellotok");
    assert_int_equal(fx.c.pkt.off, 32); /* tailroom used, payload not moved */
    /* on_write defaults to DO_NOTHING */
    packet("hello");
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("hello");
}

static void test_prepend_on_write(void **state)
{
    (void)state;
    assert_int_equal(build_concat("{on_write: PREPEND, bytes: djI6}"), 0); /* "v2:" */
    packet("hello");
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("v2:hello");
    assert_int_equal(fx.c.pkt.off, 29); /* headroom used */
    packet("hello");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("hello");
}

static void test_both_directions(void **state)
{
    (void)state;
    assert_int_equal(build_concat("{on_read: PREPEND, on_write: APPEND, bytes: eHl6}"), 0);
    packet("abc");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("xyzabc");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS); /* and again */
    assert_packet("xyzxyzabc");
    packet("abc");
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("abcxyz");
    /* an empty packet is fine */
    packet("");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("xyz");

    assert_int_equal(build_concat("{on_read: DO_NOTHING, on_write: DO_NOTHING, bytes: eHl6}"),
                     0);
    packet("abc");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("abc");
}

static void test_binary_and_empty_bytes(void **state)
{
    (void)state;
    assert_int_equal(build_concat("{on_read: APPEND, bytes: AP8B}"), 0); /* 00 ff 01 */
    packet("a");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_int_equal(fx.c.pkt.len, 4);
    assert_memory_equal(pkt_data(&fx.c.pkt), "a\x00\xff\x01", 4);

    assert_int_equal(build_concat("{on_read: APPEND, on_write: PREPEND, bytes: ''}"), 0);
    packet("a");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("a");
}

static void test_room_runs_out(void **state)
{
    (void)state;
    assert_int_equal(build_concat("{on_read: PREPEND, on_write: APPEND, bytes: dG9r}"), 0);
    /* no headroom: the payload moves back to make room */
    packet_at("hello", 0, 16);
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("tokhello");
    /* no tailroom: the payload moves to the front */
    packet_at("hello", 11, 16);
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("hellotok");
    /* exactly full */
    packet_at("hello", 8, 8 + 8);
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("hellotok");
    /* the buffer cannot hold it: drop with a reason, packet unchanged */
    packet_at("hellohello", 0, 12);
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_DROP);
    assert_string_equal(fx.c.drop_reason, "packet too large to concatenate");
    assert_packet("hellohello");
    fx.c.drop_reason = NULL;
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_DROP);
    assert_string_equal(fx.c.drop_reason, "packet too large to concatenate");
    assert_packet("hellohello");
}

static void test_filter_order_example(void **state)
{
    (void)state;
    /* spec proxy.md §4 (tests/filter_order.rs without Compress): read runs forward, write in
     * reverse; an echo server in between */
    assert_int_equal(build("filters:\n"
                           "  - name: quilkin.filters.concatenate.v1alpha1.Concatenate\n"
                           "    config: {on_read: APPEND, bytes: eHl6}\n"
                           "  - name: quilkin.filters.concatenate.v1alpha1.Concatenate\n"
                           "    config: {on_write: APPEND, bytes: YWJj}\n"),
                     0);
    packet("hello");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("helloxyz");
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("helloxyzabc");
}

static void assert_rejected(const char *config_flow, const char *want)
{
    assert_int_not_equal(build_concat(config_flow), 0);
    if (!strstr(fx.e.msg, want))
        fail_msg("config %s: message \"%s\" lacks \"%s\"", config_flow, fx.e.msg, want);
    assert_non_null(strstr(fx.e.msg, "Deserialization failed"));
    assert_null(fx.ch.filters);
}

static void test_config(void **state)
{
    (void)state;
    assert_rejected("{on_read: APPEND}", "missing field `bytes`");
    assert_rejected("{}", "missing field `bytes`");
    assert_rejected("{on_read: append, bytes: dG9r}",
                    "unknown variant `append`, expected one of `APPEND`, `PREPEND`, "
                    "`DO_NOTHING`");
    assert_rejected("{on_write: Prepend, bytes: dG9r}", "unknown variant `Prepend`");
    assert_rejected("{on_read: ~, bytes: dG9r}", "expected a string");
    assert_rejected("{bytes: dG9}", "invalid base64");      /* no padding */
    assert_rejected("{bytes: 'dG9r!!=='}", "invalid base64"); /* alphabet */
    assert_rejected("{bytes: dGE}", "invalid base64");
    assert_rejected("{bytes: [1]}", "expected a string");
    assert_rejected("{bytes: ~}", "expected a string");
    assert_rejected("[APPEND]", "expected a map");

    assert_int_not_equal(
        build("filters:\n  - name: quilkin.filters.concatenate.v1alpha1.Concatenate\n"), 0);
    assert_non_null(strstr(fx.e.msg, "filter `quilkin.filters.concatenate.v1alpha1.Concatenate` "
                                     "requires configuration, but none provided"));
    /* the old name is gone (spec §1.1) */
    assert_int_not_equal(build("filters:\n"
                               "  - name: quilkin.extensions.filters.concatenate_bytes.v1alpha1."
                               "ConcatenateBytes\n"
                               "    config: {bytes: dG9r}\n"),
                         0);
    assert_non_null(strstr(fx.e.msg, "not found"));

    /* unknown keys are ignored; padding is mandatory but accepted */
    assert_int_equal(build_concat("{on_read: APPEND, bytes: dGE=, strategy: x}"), 0);
    packet("x");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_packet("xta");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_on_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepend_on_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_both_directions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_and_empty_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_runs_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filter_order_example, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
