/* The coalescing controller (tests src/proxy/coalesce.c): off by default and for a single
 * ping-pong flow, on for a steady many-session load, off again when the load stops or the
 * windows stop gathering, with a growing back-off between failed tries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/coalesce.h"

#define US 1000ull
#define MS 1000000ull

/* Feeds turns of `per_turn` datagrams spread over `flows` sessions, one every `gap_ns`
 * (when the controller asks for a window, the turn comes after the window instead), until
 * `until`. Returns the time reached; *windows counts the turns that asked for a window. */
static uint64_t feed(struct coalesce *c, uint64_t now, uint64_t until, uint64_t gap_ns,
                     unsigned per_turn, unsigned flows, unsigned *windows)
{
    uint64_t wait = 0;
    unsigned flow = 0;
    while (now < until) {
        now += wait ? wait : gap_ns;
        /* during a window, datagrams keep arriving at the offered rate */
        unsigned n = wait ? (unsigned)(per_turn * (wait / gap_ns ? wait / gap_ns : 1)) : per_turn;
        for (unsigned i = 0; i < n; i++)
            coalesce_note(c, flow++ % flows);
        wait = coalesce_after_turn(c, now);
        if (wait && windows)
            (*windows)++;
    }
    return now;
}

static void test_off_by_default(void **state)
{
    (void)state;
    struct coalesce c;
    coalesce_init(&c, 0, 0);
    unsigned windows = 0;
    feed(&c, 0, 100 * MS, 50 * US, 1, 64, &windows); /* 20k/s over 64 sessions */
    assert_int_equal(windows, 0);
    assert_false(c.active);
}

static void test_steady_many_sessions_turns_it_on(void **state)
{
    (void)state;
    struct coalesce c;
    coalesce_init(&c, 200 * US, 0);
    unsigned windows = 0;
    /* 20,000 datagrams/s from 64 sessions, one per wake-up without coalescing */
    feed(&c, 0, 100 * MS, 50 * US, 1, 64, &windows);
    assert_true(c.active);
    assert_int_equal(c.activations, 1);
    assert_int_equal(c.deactivations, 0);
    /* about 100 ms / 200 µs windows once on (it turns on after the first 2 ms interval) */
    assert_true(windows > 400);
}

static void test_single_flow_ping_pong_never_on(void **state)
{
    (void)state;
    struct coalesce c;
    coalesce_init(&c, 200 * US, 0);
    unsigned windows = 0;
    /* one client, a round trip every 25 µs: a high rate, but one session */
    feed(&c, 0, 1000 * MS, 25 * US, 1, 1, &windows);
    assert_int_equal(windows, 0);
    assert_int_equal(c.activations, 0);
}

static void test_light_load_stays_off(void **state)
{
    (void)state;
    struct coalesce c;
    coalesce_init(&c, 200 * US, 0);
    unsigned windows = 0;
    /* 2,000 datagrams/s over 64 sessions: a 200 µs window would gather 0.4 */
    feed(&c, 0, 500 * MS, 500 * US, 1, 64, &windows);
    assert_int_equal(windows, 0);
}

static void test_stops_when_load_stops(void **state)
{
    (void)state;
    struct coalesce c;
    coalesce_init(&c, 200 * US, 0);
    uint64_t now = feed(&c, 0, 20 * MS, 50 * US, 1, 64, NULL);
    assert_true(c.active);
    /* an empty window */
    now += 200 * US;
    assert_int_equal(coalesce_after_turn(&c, now), 0);
    assert_false(c.active);
    /* no back-off after a load that simply ended: it comes back with the load */
    feed(&c, now, now + 10 * MS, 50 * US, 1, 64, NULL);
    assert_true(c.active);
    assert_int_equal(c.activations, 2);
}

/* Windows that gather too little (a closed loop of a few clients whose next datagrams wait
 * for the answers) switch it off, and each failed retry doubles the wait before the next. */
static void test_backs_off_when_windows_do_not_gather(void **state)
{
    (void)state;
    struct coalesce c;
    coalesce_init(&c, 200 * US, 0);
    uint64_t now = 0;
    uint64_t last_off = 0, gaps[4];
    unsigned n_gaps = 0;
    uint64_t offs = 0;
    while (now < 2000 * MS && n_gaps < 4) {
        /* before any window: 8 datagrams from 8 sessions every 100 µs looks like a load */
        now += 100 * US;
        uint64_t wait;
        if (c.active) {
            coalesce_note(&c, 0); /* but a window only ever gathers one */
            now += 200 * US;
        } else {
            for (unsigned i = 0; i < 8; i++)
                coalesce_note(&c, i);
        }
        wait = coalesce_after_turn(&c, now);
        (void)wait;
        if (c.deactivations != offs) {
            offs = c.deactivations;
            if (last_off)
                gaps[n_gaps++] = now - last_off;
            last_off = now;
        }
    }
    assert_int_equal(n_gaps, 4);
    /* back-off 10, 20, 40, 80 ms (plus the 2 ms interval and the windows of each try) */
    for (unsigned i = 0; i < 4; i++) {
        uint64_t backoff = (10 * MS) << i;
        assert_true(gaps[i] >= backoff);
        assert_true(gaps[i] < backoff + 6 * MS);
    }
}

static void test_full_turn_needs_no_window(void **state)
{
    (void)state;
    struct coalesce c;
    coalesce_init(&c, 200 * US, 0);
    uint64_t now = feed(&c, 0, 20 * MS, 50 * US, 1, 64, NULL);
    assert_true(c.active);
    for (unsigned i = 0; i < COALESCE_FULL_TURN; i++)
        coalesce_note(&c, i);
    assert_int_equal(coalesce_after_turn(&c, now + 10 * US), 0);
    assert_true(c.active);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_by_default),
        cmocka_unit_test(test_steady_many_sessions_turns_it_on),
        cmocka_unit_test(test_single_flow_ping_pong_never_on),
        cmocka_unit_test(test_light_load_stays_off),
        cmocka_unit_test(test_stops_when_load_stops),
        cmocka_unit_test(test_backs_off_when_windows_do_not_gather),
        cmocka_unit_test(test_full_turn_needs_no_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
