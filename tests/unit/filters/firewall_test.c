/* Firewall (spec filters.md §7): config decoding and its rejections, CIDR and port-range
 * matching, first-match-wins, default deny, families (tests src/filters/firewall.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include "../support/filter_fixture.h"

#include <arpa/inet.h>
#include <string.h>

#define FW "quilkin.filters.firewall.v1alpha1.Firewall"

static struct keytab keys; /* interned keys of every filter built here */

/* Builds a Firewall from the YAML text of its config; returns the status, e has the text. */
static int build(struct filter *f, const char *yaml, struct err *e)
{
    return build_filter_yaml(f, FW, yaml, &keys, e);
}

static void expect_reject(const char *yaml, const char *msg)
{
    struct filter f;
    struct err e;
    expect_filter_reject(&f, FW, yaml, &keys, msg, &e);
    assert_non_null(strstr(e.msg, "Deserialization failed: filter `" FW "`"));
    assert_null(f.ops); /* nothing half-built */
}

static struct addr addr_of(const char *text)
{
    struct addr a;
    assert_int_equal(addr_parse(text, &a), 0);
    return a;
}

/* A raw (non-canonical) IPv6 address, e.g. ::ffff:a.b.c.d kept as IPv6. */
static struct addr raw6(const char *ip, uint16_t port)
{
    struct addr a;
    memset(&a, 0, sizeof(a));
    a.family = AF_INET6;
    a.port = port;
    assert_int_equal(inet_pton(AF_INET6, ip, a.ip), 1);
    return a;
}

static enum verdict run(const struct filter *f, bool is_read, struct addr src)
{
    struct pkt_ctx c;
    memset(&c, 0, sizeof(c));
    c.src = src;
    enum verdict v = is_read ? f->ops->read(f, &c) : f->ops->write(f, &c);
    if (v == VERDICT_DROP)
        assert_string_equal(c.drop_reason, "packet denied");
    else
        assert_null(c.drop_reason);
    return v;
}

static enum verdict rd(const struct filter *f, const char *addr)
{
    return run(f, true, addr_of(addr));
}

static enum verdict wr(const struct filter *f, const char *addr)
{
    return run(f, false, addr_of(addr));
}

static void test_spec_example(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f,
                           "on_read:\n"
                           "  - action: DENY\n"
                           "    sources: [ 10.9.0.0/16 ]\n"
                           "    ports: [ \"1-65535\" ]\n"
                           "  - action: ALLOW\n"
                           "    sources: [ 10.0.0.0/8, \"2001:db8::/32\" ]\n"
                           "    ports: [ 7000, \"40000-50000\" ]\n"
                           "on_write:\n"
                           "  - action: ALLOW\n"
                           "    sources: [ 0.0.0.0/0, \"::/0\" ]\n"
                           "    ports: [ \"1-65535\" ]\n",
                           &e),
                     0);
    assert_int_equal(rd(&f, "10.1.2.3:7000"), VERDICT_PASS);
    assert_int_equal(rd(&f, "10.1.2.3:7001"), VERDICT_DROP);
    assert_int_equal(rd(&f, "10.1.2.3:6999"), VERDICT_DROP);
    assert_int_equal(rd(&f, "10.1.2.3:40000"), VERDICT_PASS);
    assert_int_equal(rd(&f, "10.1.2.3:49999"), VERDICT_PASS);
    assert_int_equal(rd(&f, "10.1.2.3:50000"), VERDICT_DROP); /* end exclusive */
    assert_int_equal(rd(&f, "10.9.2.3:7000"), VERDICT_DROP);  /* first match: DENY */
    assert_int_equal(rd(&f, "11.0.0.1:7000"), VERDICT_DROP);  /* no match: deny */
    assert_int_equal(rd(&f, "[2001:db8:ffff::1]:7000"), VERDICT_PASS);
    assert_int_equal(rd(&f, "[2001:db9::1]:7000"), VERDICT_DROP);
    /* write uses on_write and the context source (the server) */
    assert_int_equal(wr(&f, "192.0.2.1:53"), VERDICT_PASS);
    assert_int_equal(wr(&f, "[::1]:65534"), VERDICT_PASS);
    assert_int_equal(wr(&f, "[::1]:65535"), VERDICT_DROP); /* "1-65535" stops at 65534 */
    assert_int_equal(wr(&f, "192.0.2.1:0"), VERDICT_DROP);
    filter_deinit(&f);
}

static void test_empty_lists_deny_all(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{on_read: [], on_write: []}", &e), 0);
    assert_int_equal(rd(&f, "127.0.0.1:1000"), VERDICT_DROP);
    assert_int_equal(wr(&f, "127.0.0.1:1000"), VERDICT_DROP);
    filter_deinit(&f);
}

static void test_directions_are_independent(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(
        build(&f,
              "on_read: [{action: ALLOW, sources: [127.0.0.1], ports: [\"1-65535\"]}]\n"
              "on_write: [{action: DENY, sources: [127.0.0.1], ports: [\"1-65535\"]},\n"
              "           {action: ALLOW, sources: [0.0.0.0/0], ports: [\"1-65535\"]}]\n",
              &e),
        0);
    assert_int_equal(rd(&f, "127.0.0.1:5000"), VERDICT_PASS);
    assert_int_equal(wr(&f, "127.0.0.1:5000"), VERDICT_DROP);
    assert_int_equal(rd(&f, "127.0.0.2:5000"), VERDICT_DROP);
    assert_int_equal(wr(&f, "127.0.0.2:5000"), VERDICT_PASS);
    /* the destination is never looked at on write */
    struct pkt_ctx c;
    memset(&c, 0, sizeof(c));
    c.src = addr_of("127.0.0.2:5000");
    c.dst = addr_of("127.0.0.1:5000");
    assert_int_equal(f.ops->write(&f, &c), VERDICT_PASS);
    filter_deinit(&f);
}

static void test_first_match_wins(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f,
                           "on_read:\n"
                           "  - {action: ALLOW, sources: [192.168.1.0/24], ports: [\"100-200\"]}\n"
                           "  - {action: DENY, sources: [192.168.0.0/16], ports: [\"1-65535\"]}\n"
                           "  - {action: ALLOW, sources: [0.0.0.0/0], ports: [\"1-65535\"]}\n"
                           "on_write: []\n",
                           &e),
                     0);
    assert_int_equal(rd(&f, "192.168.1.9:150"), VERDICT_PASS);
    assert_int_equal(rd(&f, "192.168.1.9:250"), VERDICT_DROP); /* rule 1 misses the port */
    assert_int_equal(rd(&f, "192.168.2.9:150"), VERDICT_DROP);
    assert_int_equal(rd(&f, "10.0.0.1:150"), VERDICT_PASS);
    filter_deinit(&f);
}

static void test_cidr_forms(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    /* bare address = host route; host bits allowed (10.1.2.3/8 == 10.0.0.0/8) */
    assert_int_equal(build(&f,
                           "on_read:\n"
                           "  - {action: ALLOW, sources: [192.0.2.7], ports: [\"1-65535\"]}\n"
                           "  - {action: ALLOW, sources: [10.1.2.3/8], ports: [\"1-65535\"]}\n"
                           "  - {action: ALLOW, sources: [\"2001:db8::5\"], ports: [\"1-65535\"]}\n"
                           "  - {action: ALLOW, sources: [\"fd00:1:2:3:8000::/65\"], ports: [9]}\n"
                           "  - {action: ALLOW, sources: [172.16.0.0/0], ports: [1]}\n"
                           "on_write: []\n",
                           &e),
                     0);
    assert_int_equal(rd(&f, "192.0.2.7:80"), VERDICT_PASS);
    assert_int_equal(rd(&f, "192.0.2.8:80"), VERDICT_DROP);
    assert_int_equal(rd(&f, "10.255.255.255:80"), VERDICT_PASS);
    assert_int_equal(rd(&f, "11.0.0.0:80"), VERDICT_DROP);
    assert_int_equal(rd(&f, "[2001:db8::5]:80"), VERDICT_PASS);
    assert_int_equal(rd(&f, "[2001:db8::6]:80"), VERDICT_DROP);
    /* /65: the first bit of the second word counts */
    assert_int_equal(rd(&f, "[fd00:1:2:3:8fff::1]:9"), VERDICT_PASS);
    assert_int_equal(rd(&f, "[fd00:1:2:3:7fff::1]:9"), VERDICT_DROP);
    /* /0 matches any IPv4 address */
    assert_int_equal(rd(&f, "1.2.3.4:1"), VERDICT_PASS);
    filter_deinit(&f);
}

static void test_families(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(
        build(&f,
              "on_read: [{action: ALLOW, sources: [127.0.0.1/32], ports: [\"1-65535\"]}]\n"
              "on_write: [{action: ALLOW, sources: [\"::/0\"], ports: [\"1-65535\"]}]\n",
              &e),
        0);
    assert_int_equal(rd(&f, "127.0.0.1:4000"), VERDICT_PASS);
    assert_int_equal(rd(&f, "[::1]:4000"), VERDICT_DROP); /* ::1 embeds 0.0.0.1, not 127/32 */
    /* IPv4 CIDRs match IPv6 addresses that embed IPv4 (spec §7) */
    assert_int_equal(run(&f, true, raw6("::ffff:127.0.0.1", 4000)), VERDICT_PASS);
    assert_int_equal(run(&f, true, raw6("::127.0.0.1", 4000)), VERDICT_PASS);
    assert_int_equal(run(&f, true, raw6("::1:127.0.0.1", 4000)), VERDICT_DROP);
    assert_int_equal(run(&f, true, raw6("64:ff9b::127.0.0.1", 4000)), VERDICT_DROP);
    /* IPv6 CIDRs never match IPv4 addresses, even ::/0 */
    assert_int_equal(wr(&f, "[::1]:4000"), VERDICT_PASS);
    assert_int_equal(wr(&f, "127.0.0.1:4000"), VERDICT_DROP);
    filter_deinit(&f);

    /* a v4-mapped CIDR written in IPv6 syntax is an IPv6 CIDR */
    assert_int_equal(build(&f,
                           "on_read: [{action: ALLOW, sources: [\"::ffff:10.0.0.0/104\"], "
                           "ports: [\"1-65535\"]}]\n"
                           "on_write: []\n",
                           &e),
                     0);
    assert_int_equal(rd(&f, "10.1.1.1:5"), VERDICT_DROP);
    assert_int_equal(run(&f, true, raw6("::ffff:10.1.1.1", 5)), VERDICT_PASS);
    assert_int_equal(run(&f, true, raw6("::ffff:11.1.1.1", 5)), VERDICT_DROP);
    filter_deinit(&f);
}

static void test_port_forms(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f,
                           "on_read: [{action: ALLOW, sources: [0.0.0.0/0],\n"
                           "           ports: [0, \"80\", \"1000-1002\", 65534, \"+7\"]}]\n"
                           "on_write: []\n",
                           &e),
                     0);
    assert_int_equal(rd(&f, "1.1.1.1:0"), VERDICT_PASS);
    assert_int_equal(rd(&f, "1.1.1.1:1"), VERDICT_DROP);
    assert_int_equal(rd(&f, "1.1.1.1:80"), VERDICT_PASS);
    assert_int_equal(rd(&f, "1.1.1.1:81"), VERDICT_DROP);
    assert_int_equal(rd(&f, "1.1.1.1:1000"), VERDICT_PASS);
    assert_int_equal(rd(&f, "1.1.1.1:1001"), VERDICT_PASS);
    assert_int_equal(rd(&f, "1.1.1.1:1002"), VERDICT_DROP);
    assert_int_equal(rd(&f, "1.1.1.1:65534"), VERDICT_PASS);
    assert_int_equal(rd(&f, "1.1.1.1:65535"), VERDICT_DROP);
    assert_int_equal(rd(&f, "1.1.1.1:7"), VERDICT_PASS); /* Rust's u16 parse takes a '+' */
    filter_deinit(&f);
}

static void test_empty_sources_or_ports_never_match(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f,
                           "on_read:\n"
                           "  - {action: DENY, sources: [], ports: [\"1-65535\"]}\n"
                           "  - {action: DENY, sources: [0.0.0.0/0], ports: []}\n"
                           "  - {action: ALLOW, sources: [0.0.0.0/0], ports: [\"1-65535\"]}\n"
                           "on_write: []\n",
                           &e),
                     0);
    assert_int_equal(rd(&f, "1.1.1.1:5"), VERDICT_PASS);
    filter_deinit(&f);
}

#define RULE_HEAD "on_write: []\non_read: [{action: ALLOW, sources: [0.0.0.0/0], ports: ["

static void test_port_rejections(void **state)
{
    (void)state;
    expect_reject(RULE_HEAD "\"7000-7000\"]}]",
                  "invalid port range: min 7000 is greater than or equal to max 7000");
    expect_reject(RULE_HEAD "\"20-10\"]}]",
                  "invalid port range: min 20 is greater than or equal to max 10");
    /* spec §7: "65535" is rejected in v0.7.0 (N + 1 wraps to 0) */
    expect_reject(RULE_HEAD "\"65535\"]}]",
                  "invalid port range: min 65535 is greater than or equal to max 0");
    expect_reject(RULE_HEAD "65535]}]",
                  "invalid port range: min 65535 is greater than or equal to max 0");
    expect_reject(RULE_HEAD "\"70000\"]}]", "number too large to fit in target type");
    expect_reject(RULE_HEAD "\"1-70000\"]}]", "number too large to fit in target type");
    expect_reject(RULE_HEAD "\"http\"]}]", "invalid digit found in string");
    /* the first problem from the left wins, as in Rust's u16 parse */
    expect_reject(RULE_HEAD "\"99999x\"]}]", "number too large to fit in target type");
    expect_reject(RULE_HEAD "\"x99999\"]}]", "invalid digit found in string");
    expect_reject(RULE_HEAD "\"+\"]}]", "invalid digit found in string");
    expect_reject(RULE_HEAD "\" 80\"]}]", "invalid digit found in string");
    expect_reject(RULE_HEAD "\"1-2-3\"]}]", "invalid digit found in string");
    expect_reject(RULE_HEAD "1.5]}]", "invalid digit found in string");
    expect_reject(RULE_HEAD "-5]}]", "cannot parse integer from empty string");
    expect_reject(RULE_HEAD "\"\"]}]", "cannot parse integer from empty string");
    expect_reject(RULE_HEAD "\"10-\"]}]", "cannot parse integer from empty string");
    expect_reject(RULE_HEAD "[1]]}]", "expected a string, found sequence");
    /* the position and the list index are named */
    expect_reject(RULE_HEAD "\"9-1\"]}]", "on_read[0]: line 2 column");
}

#define SRC_HEAD "on_write: []\non_read: [{action: ALLOW, ports: [1], sources: ["

static void test_cidr_rejections(void **state)
{
    (void)state;
    expect_reject(SRC_HEAD "10.0.0.0/33]}]", "invalid prefix");
    expect_reject(SRC_HEAD "\"::/129\"]}]", "invalid prefix");
    expect_reject(SRC_HEAD "10.0.0.0/]}]", "invalid prefix");
    expect_reject(SRC_HEAD "10.0.0.0/-1]}]", "invalid prefix");
    expect_reject(SRC_HEAD "10.0.0.0/8/8]}]", "invalid cidr format");
    expect_reject(SRC_HEAD "10.0.0.256]}]", "invalid address: 10.0.0.256");
    expect_reject(SRC_HEAD "example.com/8]}]", "invalid address: example.com");
    expect_reject(SRC_HEAD "\"2001:db8::g/32\"]}]", "invalid address");
    expect_reject(SRC_HEAD "\"\"]}]", "invalid address");
    expect_reject(SRC_HEAD "{a: 1}]}]", "expected a string, found map");
    expect_reject(SRC_HEAD "\"10.0.0.1\\0/8\"]}]", "invalid address: 10.0.0.1");
}

static void test_shape_rejections(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_not_equal(build(&f, "~", &e), 0);
    assert_non_null(strstr(e.msg, "filter `" FW "` requires configuration, but none provided"));
    expect_reject("on_write: []", "missing field `on_read`");
    expect_reject("on_read: []", "missing field `on_write`");
    expect_reject("{}", "missing field `on_read`");
    expect_reject("[1]", "expected a map");
    expect_reject("{on_read: ~, on_write: []}", "expected a sequence, found null");
    expect_reject("{on_read: [], on_write: {}}", "expected a sequence, found map");
    expect_reject("{on_read: [5], on_write: []}", "expected a map");
    expect_reject("{on_read: [], on_write: [{sources: [], ports: []}]}", "missing field `action`");
    expect_reject("{on_read: [], on_write: [{action: ALLOW, ports: []}]}",
                  "missing field `sources`");
    expect_reject("{on_read: [], on_write: [{action: ALLOW, sources: []}]}",
                  "missing field `ports`");
    expect_reject("{on_read: [], on_write: [{action: allow, sources: [], ports: []}]}",
                  "unknown variant `allow`, expected one of `ALLOW`, `DENY`");
    expect_reject("{on_read: [], on_write: [{action: ALLOW, sources: 1.2.3.4, ports: []}]}",
                  "expected a sequence, found string");
    expect_reject("{on_read: [], on_write: [{action: ALLOW, sources: [], ports: 80}]}",
                  "expected a sequence, found integer");
    /* errors in the second list name it */
    expect_reject("{on_read: [], on_write: [{action: ALLOW, sources: [], ports: []}, {}]}",
                  "on_write[1]: ");
    /* unknown keys are ignored (spec §1.2), at both levels */
    assert_int_equal(build(&f,
                           "{on_read: [{action: DENY, sources: [], ports: [], note: x}], "
                           "on_write: [], extra: 1}",
                           &e),
                     0);
    filter_deinit(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_example),
        cmocka_unit_test(test_empty_lists_deny_all),
        cmocka_unit_test(test_directions_are_independent),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_cidr_forms),
        cmocka_unit_test(test_families),
        cmocka_unit_test(test_port_forms),
        cmocka_unit_test(test_empty_sources_or_ports_never_match),
        cmocka_unit_test(test_port_rejections),
        cmocka_unit_test(test_cidr_rejections),
        cmocka_unit_test(test_shape_rejections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
