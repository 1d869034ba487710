/* QCMP reply rate limits (tests src/qcmp/ratelimit.c), driven by an injected clock: per
 * source with a burst of twice the rate, a global cap, IPv6 by /64, bounded state under a
 * flood of spoofed sources. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "net/addr.h"
#include "qcmp/ratelimit.h"

#include <stdio.h>

#define MS 1000000ull

static struct addr parse(const char *text)
{
    struct addr a;
    assert_int_equal(addr_parse(text, &a), 0);
    return a;
}

static void test_per_source_burst_then_rate(void **state)
{
    (void)state;
    struct qcmp_ratelimit *rl = qcmp_ratelimit_create(10, 0, 1);
    struct addr a = parse("192.0.2.1:4000"), a_other_port = parse("192.0.2.1:4001"),
                b = parse("192.0.2.2:4000");
    uint64_t t = 1000 * MS;
    for (int i = 0; i < 20; i++) /* burst: twice the per-second rate */
        assert_int_equal(qcmp_ratelimit_check(rl, i % 2 ? &a : &a_other_port, t), QCMP_ALLOW);
    assert_int_equal(qcmp_ratelimit_check(rl, &a, t), QCMP_LIMIT_SOURCE);
    assert_int_equal(qcmp_ratelimit_check(rl, &b, t), QCMP_ALLOW); /* others unaffected */
    assert_int_equal(qcmp_ratelimit_check(rl, &a, t + 50 * MS), QCMP_LIMIT_SOURCE);
    assert_int_equal(qcmp_ratelimit_check(rl, &a, t + 100 * MS), QCMP_ALLOW); /* 1 per 100 ms */
    assert_int_equal(qcmp_ratelimit_check(rl, &a, t + 100 * MS), QCMP_LIMIT_SOURCE);
    /* a client pinging 5 times a second is never limited */
    struct addr c = parse("[2001:db8::5]:9");
    for (int i = 0; i < 500; i++)
        assert_int_equal(qcmp_ratelimit_check(rl, &c, t + (uint64_t)i * 200 * MS), QCMP_ALLOW);
    qcmp_ratelimit_destroy(rl);
}

static void test_ipv6_shares_a_64(void **state)
{
    (void)state;
    struct qcmp_ratelimit *rl = qcmp_ratelimit_create(5, 0, 2);
    char text[64];
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof(text), "[2001:db8:0:7::%x]:1", i + 1);
        struct addr a = parse(text);
        assert_int_equal(qcmp_ratelimit_check(rl, &a, 0), QCMP_ALLOW);
    }
    struct addr same64 = parse("[2001:db8:0:7:ffff::1]:2"), next64 = parse("[2001:db8:0:8::1]:2");
    assert_int_equal(qcmp_ratelimit_check(rl, &same64, 0), QCMP_LIMIT_SOURCE);
    assert_int_equal(qcmp_ratelimit_check(rl, &next64, 0), QCMP_ALLOW);
    qcmp_ratelimit_destroy(rl);
}

static void test_global_cap(void **state)
{
    (void)state;
    struct qcmp_ratelimit *rl = qcmp_ratelimit_create(20, 100, 3);
    char text[64];
    unsigned allowed = 0, global = 0;
    for (int i = 0; i < 1000; i++) { /* 1,000 distinct sources within one instant */
        snprintf(text, sizeof(text), "10.1.%d.%d:1", i / 250, i % 250);
        struct addr a = parse(text);
        enum qcmp_verdict v = qcmp_ratelimit_check(rl, &a, 5000 * MS);
        allowed += v == QCMP_ALLOW;
        global += v == QCMP_LIMIT_GLOBAL;
    }
    assert_int_equal(allowed, 100); /* one second's worth */
    assert_int_equal(global, 900);
    /* and it refills at the rate: 10 ms later, one more */
    struct addr a = parse("10.9.9.9:1");
    assert_int_equal(qcmp_ratelimit_check(rl, &a, 5010 * MS), QCMP_ALLOW);
    assert_int_equal(qcmp_ratelimit_check(rl, &a, 5010 * MS), QCMP_LIMIT_GLOBAL);
    qcmp_ratelimit_destroy(rl);
}

static void test_spoofed_flood_stays_bounded(void **state)
{
    (void)state;
    /* 100,000 spoofed sources, one ping each, per-source limit only: every one is answered
     * once (a new source starts with its burst) and the table never grows; the replies to
     * any one victim address stay within its burst */
    struct qcmp_ratelimit *rl = qcmp_ratelimit_create(1, 0, 4);
    struct addr victim = parse("203.0.113.50:1");
    unsigned victim_ok = 0;
    char text[64];
    for (int i = 0; i < 100000; i++) {
        snprintf(text, sizeof(text), "10.%d.%d.%d:1", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        struct addr a = parse(text);
        assert_int_equal(qcmp_ratelimit_check(rl, &a, (uint64_t)i * 10000), QCMP_ALLOW);
        victim_ok += qcmp_ratelimit_check(rl, &victim, (uint64_t)i * 10000) == QCMP_ALLOW;
    }
    /* 1 s of clock passed: the victim got its burst of 2 plus 1 per second at most */
    assert_true(victim_ok <= 2 + 1 + 1);
    qcmp_ratelimit_destroy(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_source_burst_then_rate),
        cmocka_unit_test(test_ipv6_shares_a_64),
        cmocka_unit_test(test_global_cap),
        cmocka_unit_test(test_spoofed_flood_stays_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
