/* Canonical addresses: parsing the --to grammar, v4-mapped folding, printing, ordering
 * (tests src/net/addr.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "net/addr.h"

#include <arpa/inet.h>
#include <string.h>

static void roundtrip(const char *in, const char *out)
{
    struct addr a;
    char buf[ADDR_STR_CAP];
    assert_int_equal(addr_parse(in, &a), 0);
    assert_string_equal(addr_format(&a, buf), out);
}

static void test_parse_format(void **state)
{
    (void)state;
    roundtrip("127.0.0.1:26000", "127.0.0.1:26000");
    roundtrip("[2001:db8::40]:7100", "[2001:db8::40]:7100");
    roundtrip("[::1]:0", "[::1]:0");
    roundtrip("0.0.0.0:65535", "0.0.0.0:65535");
    roundtrip("[::ffff:10.0.0.1]:7000", "10.0.0.1:7000"); /* v4-mapped folds to IPv4 */
}

static void test_parse_rejects(void **state)
{
    (void)state;
    const char *bad[] = {"10.0.0.1", "10.0.0.1:", "10.0.0.1:70000", "10.0.0.1:-1",
                         "2001:db8::40:7100", "[2001:db8::40]", "[2001:db8::40]7100",
                         "localhost:80", "udp://10.0.0.1:80", "10.0.0.1:80x", "[]:80", ":80",
                         "10.0.0.256:80", "10.0.0.1:123456"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct addr a;
        if (addr_parse(bad[i], &a) == 0)
            fail_msg("accepted %s", bad[i]);
    }
}

static void test_sockaddr_canonical(void **state)
{
    (void)state;
    struct sockaddr_in6 s6;
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    s6.sin6_port = htons(4444);
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &s6.sin6_addr);
    struct addr a, b;
    assert_true(addr_from_sockaddr(&a, (struct sockaddr *)&s6, sizeof(s6)));
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(addr_parse("192.0.2.7:4444", &b), 0);
    assert_true(addr_eq(&a, &b));
    /* and back: IPv4 goes out as v4-mapped on a dual-stack socket */
    struct sockaddr_in6 out;
    addr_to_sin6(&b, &out);
    assert_memory_equal(&out.sin6_addr, &s6.sin6_addr, 16);
    assert_int_equal(ntohs(out.sin6_port), 4444);
    assert_int_equal(addr_hash(&a, 1), addr_hash(&b, 1));
}

static void test_order(void **state)
{
    (void)state;
    struct addr a, b, c, d;
    addr_parse("10.0.0.1:80", &a);
    addr_parse("10.0.0.1:81", &b);
    addr_parse("10.0.0.2:1", &c);
    addr_parse("[::1]:1", &d);
    assert_true(addr_cmp(&a, &b) < 0);
    assert_true(addr_cmp(&b, &c) < 0);
    assert_true(addr_cmp(&c, &d) < 0); /* IPv4 before IPv6 */
    assert_int_equal(addr_cmp(&a, &a), 0);
    assert_false(addr_eq(&a, &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_format),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_sockaddr_canonical),
        cmocka_unit_test(test_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
