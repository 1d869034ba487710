/* LocalRateLimit (spec filters.md §9): the window algorithm on an injected clock, per-address
 * buckets, 60 s expiry, the bounded table, config decoding (tests
 * src/filters/local_rate_limit.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/clock.h"
#include "base/err.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include "../support/filter_fixture.h"

#include <stdio.h>
#include <string.h>

#define RL "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit"

/* Live buckets a worker's table holds (RL_MAX_LIVE in local_rate_limit.c: 3/4 of 65,536
 * slots). Kept in step by hand; test_table_full fails loudly if they diverge. */
#define TABLE_LIVE_CAP 49152u

static struct keytab keys; /* interned keys of every filter built here */

static int build(struct filter *f, const char *yaml, struct err *e)
{
    return build_filter_yaml(f, RL, yaml, &keys, e);
}

static void expect_reject(const char *yaml, const char *msg)
{
    struct filter f;
    struct err e;
    expect_filter_reject(&f, RL, yaml, &keys, msg, &e);
}

/* One packet from src at Unix time t_s (+ frac_ns) on a worker; returns the verdict and
 * checks the drop reason. */
static enum verdict at_w(const struct filter *f, const char *src, uint64_t t_s, uint64_t frac_ns,
                         unsigned worker, const char **reason)
{
    struct pkt_ctx c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(addr_parse(src, &c.src), 0);
    c.now_unix_ns = t_s * NS_PER_SEC + frac_ns;
    c.now_ns = 12345; /* the monotonic clock is not what the spec counts in */
    c.worker = worker;
    enum verdict v = f->ops->read(f, &c);
    if (v == VERDICT_PASS)
        assert_null(c.drop_reason);
    if (reason)
        *reason = c.drop_reason;
    return v;
}

static enum verdict at(const struct filter *f, const char *src, uint64_t t_s)
{
    const char *reason = NULL;
    enum verdict v = at_w(f, src, t_s, 0, 0, &reason);
    if (v == VERDICT_DROP)
        assert_string_equal(reason, "rate limit exceeded");
    return v;
}

#define PASS VERDICT_PASS
#define DROP VERDICT_DROP

static void test_spec_worked_example(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 2, period: 1}", &e), 0);
    const char *s = "192.0.2.1:4000";
    assert_int_equal(at(&f, s, 100), PASS);
    assert_int_equal(at(&f, s, 100), PASS);
    assert_int_equal(at(&f, s, 100), DROP);
    assert_int_equal(at(&f, s, 100), DROP);
    assert_int_equal(at(&f, s, 101), DROP); /* elapsed 1, not > 1 */
    assert_int_equal(at(&f, s, 102), PASS); /* new window */
    assert_int_equal(at(&f, s, 102), PASS);
    assert_int_equal(at(&f, s, 102), DROP);
    /* sub-second parts are cut: 103.999 is still second 103, elapsed 1 */
    assert_int_equal(at_w(&f, s, 103, 999999999, 0, NULL), DROP);
    assert_int_equal(at_w(&f, s, 104, 1, 0, NULL), PASS);
    filter_deinit(&f);
}

static void test_longer_period(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 3, period: 10}", &e), 0);
    const char *s = "[2001:db8::7]:9";
    for (int i = 0; i < 3; i++)
        assert_int_equal(at(&f, s, 1000 + (uint64_t)i), PASS);
    assert_int_equal(at(&f, s, 1003), DROP);
    assert_int_equal(at(&f, s, 1010), DROP); /* elapsed 10: same window */
    assert_int_equal(at(&f, s, 1011), PASS); /* elapsed 11 > 10 */
    assert_int_equal(at(&f, s, 1011), PASS);
    assert_int_equal(at(&f, s, 1011), PASS);
    assert_int_equal(at(&f, s, 1012), DROP);
    filter_deinit(&f);
}

static void test_max_packets_zero(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 0, period: 1}", &e), 0);
    for (uint64_t t = 100; t < 300; t += 50)
        assert_int_equal(at(&f, "10.0.0.1:1", t), DROP); /* even the first packet */
    filter_deinit(&f);
}

static void test_buckets_per_ip_and_port(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 1, period: 5}", &e), 0);
    assert_int_equal(at(&f, "10.0.0.1:1000", 50), PASS);
    assert_int_equal(at(&f, "10.0.0.1:1000", 50), DROP);
    assert_int_equal(at(&f, "10.0.0.1:1001", 50), PASS); /* same IP, other port */
    assert_int_equal(at(&f, "10.0.0.2:1000", 50), PASS); /* same port, other IP */
    assert_int_equal(at(&f, "[::ffff:10.0.0.3]:1000", 50), PASS);
    assert_int_equal(at(&f, "10.0.0.3:1000", 50), DROP); /* canonical form: same client */
    assert_int_equal(at(&f, "[::1]:1000", 50), PASS);
    assert_int_equal(at(&f, "[::1]:1000", 50), DROP);
    assert_int_equal(at(&f, "10.0.0.1:1001", 50), DROP);
    assert_int_equal(at(&f, "10.0.0.2:1000", 50), DROP);
    /* buckets live per worker: worker 1 has not seen this client */
    assert_int_equal(at_w(&f, "10.0.0.1:1000", 50, 0, 1, NULL), PASS);
    assert_int_equal(at_w(&f, "10.0.0.1:1000", 50, 0, 1, NULL), DROP);
    filter_deinit(&f);
}

static void test_idle_bucket_expires(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 1, period: 1000}", &e), 0);
    const char *s = "10.0.0.1:1000";
    assert_int_equal(at(&f, s, 100), PASS);
    assert_int_equal(at(&f, s, 101), DROP);
    /* drops count as use: 59 s after the last packet the bucket is still there */
    assert_int_equal(at(&f, s, 160), DROP);
    assert_int_equal(at(&f, s, 219), DROP);
    /* 60 s without packets: removed, so the source starts over despite period 1000 */
    assert_int_equal(at(&f, s, 279), PASS);
    assert_int_equal(at(&f, s, 280), DROP);

    /* expiry of buckets met while probing and by the sweep: many sources, then silence */
    char src[64];
    for (unsigned i = 0; i < 2000; i++) {
        snprintf(src, sizeof(src), "10.1.%u.%u:%u", i / 250, i % 250, 2000 + i);
        assert_int_equal(at(&f, src, 300), PASS);
        assert_int_equal(at(&f, src, 300), DROP);
    }
    for (unsigned i = 0; i < 2000; i++) { /* 60 s later every one of them is new again */
        snprintf(src, sizeof(src), "10.1.%u.%u:%u", i / 250, i % 250, 2000 + i);
        assert_int_equal(at(&f, src, 360), PASS);
    }
    for (unsigned i = 0; i < 2000; i++) {
        snprintf(src, sizeof(src), "10.1.%u.%u:%u", i / 250, i % 250, 2000 + i);
        assert_int_equal(at(&f, src, 361), DROP);
    }
    filter_deinit(&f);
}

static void test_clock_step_back(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 1, period: 100}", &e), 0);
    const char *s = "10.0.0.1:1000";
    assert_int_equal(at(&f, s, 5000), PASS);
    assert_int_equal(at(&f, s, 5001), DROP);
    /* a wall clock stepped back opens a fresh bucket rather than locking the client out */
    assert_int_equal(at(&f, s, 4000), PASS);
    assert_int_equal(at(&f, s, 4001), DROP);
    filter_deinit(&f);
}

static void src_n(char *buf, size_t cap, unsigned i)
{
    snprintf(buf, cap, "10.%u.%u.%u:%u", (i >> 14) & 255, (i >> 6) & 255, i & 63, 1024 + (i % 997));
}

static void test_table_full(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 2, period: 1}", &e), 0);
    char src[64];
    const char *reason = NULL;
    for (unsigned i = 0; i < TABLE_LIVE_CAP; i++) {
        src_n(src, sizeof(src), i);
        if (at_w(&f, src, 1000, 0, 0, &reason) != PASS)
            fail_msg("source %u of %u dropped: %s", i, TABLE_LIVE_CAP, reason);
    }
    /* full: a new source is refused with its own reason ... */
    src_n(src, sizeof(src), TABLE_LIVE_CAP);
    assert_int_equal(at_w(&f, src, 1000, 0, 0, &reason), DROP);
    assert_string_equal(reason, "rate limit table full");
    assert_int_equal(at_w(&f, "[::1]:1", 1030, 0, 0, &reason), DROP);
    assert_string_equal(reason, "rate limit table full");
    /* ... while known sources keep their buckets and limits */
    src_n(src, sizeof(src), 7);
    assert_int_equal(at_w(&f, src, 1000, 0, 0, NULL), PASS);
    assert_int_equal(at_w(&f, src, 1000, 0, 0, &reason), DROP);
    assert_string_equal(reason, "rate limit exceeded");
    /* the other worker's table is separate and empty */
    assert_int_equal(at_w(&f, "[::1]:1", 1030, 0, 1, NULL), PASS);
    /* keep source 7 alive; 60 s after the rest went quiet they are reclaimed */
    assert_int_equal(at_w(&f, src, 1050, 0, 0, NULL), PASS);
    assert_int_equal(at_w(&f, "[::1]:1", 1060, 0, 0, NULL), PASS);
    assert_int_equal(at_w(&f, "[::1]:1", 1060, 0, 0, NULL), PASS);
    assert_int_equal(at_w(&f, "[::1]:1", 1060, 0, 0, &reason), DROP);
    assert_string_equal(reason, "rate limit exceeded");
    /* source 7 was used at 1050: still limited in its window (elapsed 0 from 1050) */
    assert_int_equal(at_w(&f, src, 1051, 0, 0, NULL), PASS);
    assert_int_equal(at_w(&f, src, 1051, 0, 0, &reason), DROP);
    /* and the table takes a whole new population. Idle buckets are reclaimed lazily (while
     * probing, a few slots per packet, 64 more per refused packet), so a new source may be
     * refused while idle buckets sit elsewhere; but the sweep covers the whole table within
     * 65,536 / 64 = 1,024 refusals, so retrying always gets in within that bound. */
    unsigned refusals = 0;
    for (unsigned i = 0; i < TABLE_LIVE_CAP - 2; i++) {
        src_n(src, sizeof(src), i + 100000);
        unsigned tries = 0;
        while (at_w(&f, src, 1061, 0, 0, &reason) != PASS) {
            assert_string_equal(reason, "rate limit table full");
            if (++tries > 1024)
                fail_msg("new source %u still refused after %u tries", i, tries);
        }
        refusals += tries;
    }
    assert_true(refusals < TABLE_LIVE_CAP / 4);
    src_n(src, sizeof(src), 300000);
    assert_int_equal(at_w(&f, src, 1061, 0, 0, &reason), DROP);
    assert_string_equal(reason, "rate limit table full");
    filter_deinit(&f);
}

static void test_config(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_not_equal(build(&f, "~", &e), 0);
    assert_non_null(strstr(e.msg, "filter `" RL "` requires configuration, but none provided"));
    expect_reject("{max_packets: 5, period: 0}",
                  "field `period` is invalid, reason: value must be at least 1 second");
    expect_reject("{period: 1}", "missing field `max_packets`");
    expect_reject("{max_packets: 5}", "missing field `period`"); /* required in YAML */
    expect_reject("{}", "missing field `max_packets`");
    expect_reject("{max_packets: \"3\", period: 1}", "expected an unsigned 64-bit integer");
    expect_reject("{max_packets: -1, period: 1}", "out of range");
    expect_reject("{max_packets: 1.5, period: 1}", "expected an unsigned 64-bit integer");
    expect_reject("{max_packets: 1, period: 4294967296}", "out of range");
    expect_reject("{max_packets: 1, period: \"1\"}", "expected an unsigned 32-bit integer");
    expect_reject("{max_packets: 1, period: ~}", "expected an unsigned 32-bit integer");
    expect_reject("[1, 2]", "expected a map");
    expect_reject("{max_packets: 1, period: 0}", "Deserialization failed: filter `" RL "`");
    /* the largest values, and unknown keys ignored */
    assert_int_equal(
        build(&f, "{max_packets: 18446744073709551615, period: 4294967295, burst: 9}", &e), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(at(&f, "10.0.0.1:1", 100), PASS);
    filter_deinit(&f);
}

static void test_write_is_noop(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{max_packets: 0, period: 1}", &e), 0);
    assert_null(f.ops->write);
    struct filter *fp = &f;
    struct chain ch = {.filters = &fp, .n = 1};
    struct pkt_ctx c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(addr_parse("10.0.0.1:1", &c.src), 0);
    assert_int_equal(chain_write(&ch, &c), VERDICT_PASS); /* servers are never limited */
    assert_int_equal(chain_read(&ch, &c), VERDICT_DROP);
    filter_deinit(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_worked_example), cmocka_unit_test(test_longer_period),
        cmocka_unit_test(test_max_packets_zero),    cmocka_unit_test(test_buckets_per_ip_and_port),
        cmocka_unit_test(test_idle_bucket_expires), cmocka_unit_test(test_clock_step_back),
        cmocka_unit_test(test_table_full),          cmocka_unit_test(test_config),
        cmocka_unit_test(test_write_is_noop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
