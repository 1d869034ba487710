/* Per-source-IP session cap (tests src/proxy/ip_limit.c): per address regardless of port,
 * IPv6 by /64, released sessions free their place, no limit when off, and exact under
 * concurrent workers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "net/addr.h"
#include "proxy/ip_limit.h"

#include <pthread.h>
#include <stdio.h>

static struct addr parse(const char *text)
{
    struct addr a;
    assert_int_equal(addr_parse(text, &a), 0);
    return a;
}

static void test_cap_per_address(void **state)
{
    (void)state;
    struct ip_limit *l = ip_limit_create(3, 1);
    struct addr a1 = parse("192.0.2.1:1000"), a2 = parse("192.0.2.1:2000"),
                a3 = parse("192.0.2.1:3000"), other = parse("192.0.2.2:1000");
    assert_true(ip_limit_acquire(l, &a1));
    assert_true(ip_limit_acquire(l, &a2));
    assert_true(ip_limit_acquire(l, &a3));
    assert_false(ip_limit_acquire(l, &a1)); /* any port of that address */
    assert_true(ip_limit_acquire(l, &other));
    ip_limit_release(l, &a2);
    assert_true(ip_limit_acquire(l, &a2));
    assert_false(ip_limit_acquire(l, &a3));
    /* IPv6: one /64 is one subscriber */
    struct addr v6a = parse("[2001:db8:1:2::1]:5"), v6b = parse("[2001:db8:1:2:ffff::9]:6"),
                v6c = parse("[2001:db8:1:3::1]:5");
    for (int i = 0; i < 3; i++)
        assert_true(ip_limit_acquire(l, i % 2 ? &v6a : &v6b));
    assert_false(ip_limit_acquire(l, &v6a));
    assert_true(ip_limit_acquire(l, &v6c));
    ip_limit_destroy(l);
}

static void test_off(void **state)
{
    (void)state;
    struct ip_limit *l = ip_limit_create(0, 1);
    struct addr a = parse("192.0.2.1:1000");
    for (int i = 0; i < 10000; i++)
        assert_true(ip_limit_acquire(l, &a));
    assert_true(ip_limit_acquire(NULL, &a));
    ip_limit_destroy(l);
}

struct racer {
    struct ip_limit *l;
    unsigned granted;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct addr a = parse("198.51.100.7:1");
    for (int i = 0; i < 50000; i++) {
        if (ip_limit_acquire(r->l, &a)) {
            r->granted++; /* kept: this thread holds it */
        } else if (r->granted) {
            ip_limit_release(r->l, &a); /* give one back and race for it again */
            r->granted--;
        }
    }
    return NULL;
}

static void test_never_above_cap_under_concurrency(void **state)
{
    (void)state;
    struct ip_limit *l = ip_limit_create(100, 3);
    struct racer r[2] = {{.l = l}, {.l = l}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, race, &r[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* both threads raced at the cap the whole time: together they hold it exactly */
    assert_true(r[0].granted + r[1].granted <= 100);
    struct addr a = parse("198.51.100.7:1");
    unsigned more = 0;
    while (more < 200 && ip_limit_acquire(l, &a))
        more++;
    assert_int_equal(r[0].granted + r[1].granted + more, 100);
    ip_limit_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_per_address),
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_never_above_cap_under_concurrency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
