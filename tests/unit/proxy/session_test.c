/* Session table: lookup/insert/remove, capacity, and timer-wheel expiry driven by an
 * injected clock (tests src/proxy/session.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "net/addr.h"
#include "proxy/session.h"

#include <stdio.h>
#include <string.h>

#define SEC 1000000000ull

static struct addr v4(uint8_t last, uint16_t port)
{
    struct addr a;
    char text[32];
    snprintf(text, sizeof(text), "10.0.0.%u:%u", last, port);
    assert_int_equal(addr_parse(text, &a), 0);
    return a;
}

static int expired_count;
static struct addr expired_last_client;

static void on_expire(void *ctx, struct session *s)
{
    (void)ctx;
    expired_count++;
    expired_last_client = s->client;
}

static void test_insert_lookup(void **state)
{
    (void)state;
    struct session_table *t = session_table_create(8, 60 * SEC, 0, 1000 * SEC, 42);
    assert_non_null(t);
    struct addr c1 = v4(1, 5000), c2 = v4(2, 5000), e1 = v4(100, 7000), e2 = v4(101, 7000);
    assert_null(session_lookup(t, &c1, &e1));
    struct session *s11 = session_insert(t, &c1, &e1, 1000 * SEC);
    struct session *s12 = session_insert(t, &c1, &e2, 1000 * SEC);
    struct session *s21 = session_insert(t, &c2, &e1, 1000 * SEC);
    assert_non_null(s11);
    assert_non_null(s12);
    assert_non_null(s21);
    assert_ptr_equal(session_lookup(t, &c1, &e1), s11);
    assert_ptr_equal(session_lookup(t, &c1, &e2), s12);
    assert_ptr_equal(session_lookup(t, &c2, &e1), s21);
    assert_null(session_lookup(t, &c2, &e2));
    assert_int_equal(session_count(t), 3);
    assert_int_equal(s11->fd, -1);
    assert_ptr_equal(session_at(t, session_index(t, s12)), s12);
    session_remove(t, s12);
    assert_null(session_lookup(t, &c1, &e2));
    assert_ptr_equal(session_lookup(t, &c1, &e1), s11);
    assert_ptr_equal(session_lookup(t, &c2, &e1), s21);
    assert_int_equal(session_count(t), 2);
    session_table_destroy(t, NULL, NULL);
}

static void test_capacity_limit(void **state)
{
    (void)state;
    struct session_table *t = session_table_create(4, 60 * SEC, 0, 0, 1);
    struct addr e = v4(200, 7000);
    for (uint8_t i = 0; i < 4; i++) {
        struct addr c = v4(i, 1000);
        assert_non_null(session_insert(t, &c, &e, 0));
    }
    struct addr extra = v4(9, 1000);
    assert_null(session_insert(t, &extra, &e, 0)); /* full: refused */
    struct addr c0 = v4(0, 1000);
    assert_non_null(session_lookup(t, &c0, &e)); /* existing ones untouched */
    session_remove(t, session_lookup(t, &c0, &e));
    assert_non_null(session_insert(t, &extra, &e, 0)); /* a freed slot is reused */
    assert_int_equal(session_count(t), 4);
    session_table_destroy(t, NULL, NULL);
}

static void test_expiry_never_early_and_within_a_second(void **state)
{
    (void)state;
    uint64_t t0 = 5000 * SEC + 300000000ull; /* not on a second boundary */
    struct session_table *t = session_table_create(16, 60 * SEC, 0, t0, 7);
    struct addr c = v4(1, 1), e = v4(2, 2);
    assert_non_null(session_insert(t, &c, &e, t0));
    expired_count = 0;
    /* tick every 100 ms: it must survive until t0 + 60 s, and be gone by t0 + 61 s */
    uint64_t now = t0;
    while (now < t0 + 60 * SEC) {
        assert_int_equal(session_expire(t, now, on_expire, NULL), 0);
        now += 100000000ull;
    }
    assert_non_null(session_lookup(t, &c, &e));
    while (now <= t0 + 61 * SEC && expired_count == 0) {
        session_expire(t, now, on_expire, NULL);
        now += 100000000ull;
    }
    assert_int_equal(expired_count, 1);
    assert_true(now - 100000000ull >= t0 + 60 * SEC);
    assert_true(addr_eq(&expired_last_client, &c));
    assert_null(session_lookup(t, &c, &e));
    assert_int_equal(session_count(t), 0);
    session_table_destroy(t, NULL, NULL);
}

static void test_touch_extends_life(void **state)
{
    (void)state;
    struct session_table *t = session_table_create(16, 10 * SEC, 0, 0, 7);
    struct addr c = v4(1, 1), e = v4(2, 2);
    struct session *s = session_insert(t, &c, &e, 0);
    expired_count = 0;
    /* traffic every 5 s for 100 s keeps it alive */
    for (uint64_t now = 0; now <= 100 * SEC; now += SEC / 2) {
        if (now % (5 * SEC) == 0)
            session_seen_client(s, now);
        session_expire(t, now, on_expire, NULL);
    }
    assert_int_equal(expired_count, 0);
    /* then silence: gone between 10 and 11 s after the last touch (at 100 s) */
    for (uint64_t now = 100 * SEC; now < 110 * SEC; now += SEC / 4)
        session_expire(t, now, on_expire, NULL);
    assert_int_equal(expired_count, 0);
    session_expire(t, 111 * SEC, on_expire, NULL);
    assert_int_equal(expired_count, 1);
    session_table_destroy(t, NULL, NULL);
}

static void test_long_timeout_and_clock_jump(void **state)
{
    (void)state;
    /* a timeout longer than the 64-slot wheel is parked and re-armed */
    struct session_table *t = session_table_create(16, 300 * SEC, 0, 0, 3);
    struct addr c = v4(1, 1), e = v4(2, 2);
    session_insert(t, &c, &e, 0);
    expired_count = 0;
    for (uint64_t now = 0; now < 300 * SEC; now += SEC)
        session_expire(t, now, on_expire, NULL);
    assert_int_equal(expired_count, 0);
    session_expire(t, 301 * SEC, on_expire, NULL);
    assert_int_equal(expired_count, 1);
    /* a stalled worker (no tick for an hour) expires everything overdue in one call */
    struct addr c2 = v4(3, 1);
    session_insert(t, &c2, &e, 400 * SEC);
    session_insert(t, &c, &e, 400 * SEC);
    assert_int_equal(session_expire(t, 4000 * SEC, on_expire, NULL), 2);
    assert_int_equal(session_count(t), 0);
    session_table_destroy(t, NULL, NULL);
}

static void test_many_sessions_hash_integrity(void **state)
{
    (void)state;
    /* insert and remove interleaved: every remaining key must still be found */
    enum { N = 2000 };
    struct session_table *t = session_table_create(N, 60 * SEC, 0, 0, 99);
    struct addr e = v4(250, 9000);
    for (unsigned i = 0; i < N; i++) {
        struct addr c = v4((uint8_t)(i % 250), (uint16_t)(1000 + i));
        assert_non_null(session_insert(t, &c, &e, 0));
    }
    for (unsigned i = 0; i < N; i += 3) {
        struct addr c = v4((uint8_t)(i % 250), (uint16_t)(1000 + i));
        struct session *s = session_lookup(t, &c, &e);
        assert_non_null(s);
        session_remove(t, s);
    }
    for (unsigned i = 0; i < N; i++) {
        struct addr c = v4((uint8_t)(i % 250), (uint16_t)(1000 + i));
        if (i % 3 == 0)
            assert_null(session_lookup(t, &c, &e));
        else
            assert_non_null(session_lookup(t, &c, &e));
    }
    assert_int_equal(session_count(t), N - (N + 2) / 3);
    expired_count = 0;
    session_table_destroy(t, on_expire, NULL); /* destroy reports every live session */
    assert_int_equal(expired_count, N - (N + 2) / 3);
}

/* Unconfirmed sessions (issue 9): 10 s after the last client packet unless the client sent
 * again after a reply; server packets refresh only confirmed sessions. */
static void test_unconfirmed_sessions(void **state)
{
    (void)state;
    struct session_table *t = session_table_create(16, 60 * SEC, 10 * SEC, 0, 5);
    struct addr e = v4(200, 7000);
    struct addr spoofed = v4(1, 1000), answered = v4(2, 1000), player = v4(3, 1000);
    struct session *a = session_insert(t, &spoofed, &e, 0);
    struct session *b = session_insert(t, &answered, &e, 0);
    struct session *c = session_insert(t, &player, &e, 0);
    assert_false(a->is_confirmed);
    /* b: the server keeps answering a source that never speaks again: no refresh */
    for (uint64_t now = 1; now <= 9; now++)
        session_seen_reply(b, now * SEC);
    /* c: a real client answers the reply: confirmed, full idle timeout from then on */
    session_seen_reply(c, 1 * SEC);
    session_seen_client(c, 2 * SEC);
    assert_true(c->is_confirmed);
    expired_count = 0;
    assert_int_equal(session_expire(t, 9 * SEC, on_expire, NULL), 0); /* never early */
    assert_int_equal(session_expire(t, 11 * SEC, on_expire, NULL), 2);
    assert_null(session_lookup(t, &spoofed, &e));
    assert_null(session_lookup(t, &answered, &e));
    assert_non_null(session_lookup(t, &player, &e));
    /* confirmed: replies refresh it too (the seed's either-direction rule) */
    session_seen_reply(c, 50 * SEC);
    assert_int_equal(session_expire(t, 70 * SEC, on_expire, NULL), 0);
    assert_int_equal(session_expire(t, 111 * SEC, on_expire, NULL), 1);
    /* without an unconfirmed timeout every session is confirmed from the start */
    struct session_table *u = session_table_create(4, 60 * SEC, 0, 0, 5);
    struct session *d = session_insert(u, &spoofed, &e, 0);
    assert_true(d->is_confirmed);
    session_seen_reply(d, 30 * SEC);
    assert_int_equal(session_expire(u, 61 * SEC, on_expire, NULL), 0);
    session_table_destroy(u, NULL, NULL);
    session_table_destroy(t, NULL, NULL);
}

/* session_remove unlinks from the wheel in O(1): heads, middles and tails of one slot's
 * list; what stays is still expired on time, exactly once. */
static void test_remove_from_one_wheel_slot(void **state)
{
    (void)state;
    enum { N = 100 };
    struct session_table *t = session_table_create(N, 60 * SEC, 0, 0, 11);
    struct addr e = v4(200, 7000);
    struct session *ss[N];
    for (unsigned i = 0; i < N; i++) {
        struct addr c = v4((uint8_t)i, 2000);
        ss[i] = session_insert(t, &c, &e, 0); /* all in the same slot */
    }
    unsigned removed = 0;
    for (unsigned i = 0; i < N; i++) {
        if (i % 3 == 0 || i == N - 1 || i == N - 2) { /* first and last inserted included */
            session_remove(t, ss[i]);
            removed++;
        }
    }
    assert_int_equal(session_count(t), N - removed);
    expired_count = 0;
    assert_int_equal(session_expire(t, 59 * SEC, on_expire, NULL), 0);
    assert_int_equal(session_expire(t, 61 * SEC, on_expire, NULL), N - removed);
    assert_int_equal(expired_count, N - removed);
    assert_int_equal(session_count(t), 0);
    session_table_destroy(t, NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_lookup),
        cmocka_unit_test(test_capacity_limit),
        cmocka_unit_test(test_expiry_never_early_and_within_a_second),
        cmocka_unit_test(test_touch_extends_life),
        cmocka_unit_test(test_long_timeout_and_clock_jump),
        cmocka_unit_test(test_many_sessions_hash_integrity),
        cmocka_unit_test(test_unconfirmed_sessions),
        cmocka_unit_test(test_remove_from_one_wheel_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
