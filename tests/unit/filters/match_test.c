/* Match filter (tests src/filters/match.c): config decoding and rejections, branch values of
 * every kind against metadata (spec proxy.md §9 equality), fallthrough, both directions,
 * nesting, counters, and the spec's tests/match.rs example through a real chain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/arena.h"
#include "base/err.h"
#include "base/metrics.h"
#include "config/config.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include "../support/filter_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MATCH "quilkin.filters.match.v1alpha1.Match"
#define CONCAT "quilkin.filters.concatenate.v1alpha1.Concatenate"
#define HEADROOM 512
#define BUF_CAP (512 + 65536 + 16384)

/* The spec §10 series as match.c registers them (labels in name order, event always read). */
#define MATCHED                                                                                    \
    "event=\"read\",help=\"Total number of packets where the dynamic metadata matches a "          \
    "branch value\",id=\"" MATCH "\",label=\"packets_matched_total\""
#define FALLTHROUGH                                                                                \
    "event=\"read\",help=\"Total number of packets that are processed by the fallthrough "         \
    "configuration\",id=\"" MATCH "\",label=\"packets_fallthrough_total\""

struct env {
    struct chain ch;
    struct keytab keys;
    struct arena scratch;
    uint8_t buf[BUF_CAP];
    struct pkt_ctx c;
};

static int setup(void **state)
{
    struct env *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(arena_init(&t->scratch, 64 * 1024), 0);
    metrics_init(2);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct env *t = *state;
    chain_deinit(&t->ch);
    keytab_deinit(&t->keys);
    arena_deinit(&t->scratch);
    free(t);
    metrics_reset_for_tests(); /* after the chain: nothing holds a series any more */
    return 0;
}

/* Builds t->ch from a whole config; returns the status, e holds the message. */
static int build(struct env *t, const char *yaml, struct err *e)
{
    return build_chain_yaml(&t->ch, &t->keys, yaml, 2, e);
}

/* Builds a chain of one Match whose config is `body` (indented under `config:`). */
static int build_match(struct env *t, const char *body, struct err *e)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), "filters:\n  - name: " MATCH "\n    config:\n%s", body);
    return build(t, yaml, e);
}

static struct pkt_ctx *load(struct env *t, const char *data)
{
    load_packet(&t->c, t->buf, BUF_CAP, HEADROOM, data, strlen(data), &t->scratch);
    t->c.worker = 1;
    return &t->c;
}

static uint32_t key(struct env *t, const char *name)
{
    int id = keytab_intern(&t->keys, name);
    assert_true(id >= 0);
    return (uint32_t)id;
}

static void set_md(struct env *t, const char *k, struct md_value v)
{
    assert_int_equal(md_set(&t->c.md, key(t, k), &v), 0);
}

static struct md_value bytes(const char *s, uint32_t len)
{
    struct md_value v = {.kind = MD_BYTES, .len = len};
    v.u.bytes = (const uint8_t *)s;
    return v;
}

static void assert_pkt(struct env *t, const char *want)
{
    assert_int_equal(t->c.pkt.len, strlen(want));
    assert_memory_equal(pkt_data(&t->c.pkt), want, strlen(want));
}

/* Worker w's shard of a Match counter (the series exist once a Match was built). */
static uint64_t counted(const char *labels, unsigned w)
{
    struct metric_counter *c = metrics_find_counter("quilkin_filter_int_counter", labels);
    assert_non_null(c);
    return metric_counter_shard(c, w);
}

/* ---- config ------------------------------------------------------------------------------ */

static void expect_error(struct env *t, const char *body, const char *needle)
{
    struct err e;
    assert_int_not_equal(build_match(t, body, &e), 0);
    if (!strstr(e.msg, needle))
        fail_msg("error `%s` lacks `%s`", e.msg, needle);
    assert_null(t->ch.filters);
}

static void test_config_rejections(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_not_equal(build(t, "filters:\n  - name: " MATCH "\n", &e), 0);
    assert_non_null(strstr(e.msg, "filter `" MATCH "` requires configuration, but none provided"));
    /* neither direction: the same message (v0.7.0 checks it at creation) */
    expect_error(t, "      {}\n", "filter `" MATCH "` requires configuration, but none provided");
    expect_error(t, "      {on_read: ~, on_write: ~}\n", "requires configuration");
    /* unknown top-level keys are rejected */
    expect_error(t,
                 "      on_read: {metadataKey: k, branches: []}\n"
                 "      extra: 1\n",
                 "unknown field `extra`, expected one of `on_read`, `on_write`");
    expect_error(t, "      on_read: {branches: []}\n", "missing field `metadataKey`");
    expect_error(t, "      on_write: {metadataKey: k}\n", "missing field `branches`");
    expect_error(t, "      on_read: {metadataKey: k, branches: {}}\n", "expected a sequence");
    expect_error(t, "      on_read: [1]\n", "expected a map");
    expect_error(t,
                 "      on_read:\n"
                 "        metadataKey: k\n"
                 "        branches: [{name: quilkin.filters.pass.v1alpha1.Pass}]\n",
                 "missing field `value`");
    expect_error(t,
                 "      on_read:\n"
                 "        metadataKey: k\n"
                 "        branches: [{value: 1}]\n",
                 "missing field `name`");
    expect_error(t,
                 "      on_read:\n"
                 "        metadataKey: k\n"
                 "        branches: []\n"
                 "        fallthrough: {config: {}}\n",
                 "missing field `name`");
    static const char *const bad_values[] = {"-1", "1.5", "{a: 1}", "~", "[1, -2]", "[[1.0]]"};
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        char body[512];
        snprintf(body, sizeof(body),
                 "      on_read:\n"
                 "        metadataKey: k\n"
                 "        branches:\n"
                 "          - value: %s\n"
                 "            name: quilkin.filters.pass.v1alpha1.Pass\n",
                 bad_values[i]);
        expect_error(t, body, "data did not match any variant of untagged enum Value");
    }
    /* nested filters are checked like chain entries */
    expect_error(t,
                 "      on_read:\n"
                 "        metadataKey: k\n"
                 "        branches: [{value: 1, name: quilkin.filters.nope.v1alpha1.Nope}]\n",
                 "filter `quilkin.filters.nope.v1alpha1.Nope` not found");
    expect_error(t,
                 "      on_read:\n"
                 "        metadataKey: k\n"
                 "        branches: [{value: 1, name: quilkin.filters.drop.v1alpha1.Drop,"
                 " config: {}}]\n",
                 "Deserialization failed: filter `quilkin.filters.drop.v1alpha1.Drop`");
    expect_error(t,
                 "      on_write:\n"
                 "        metadataKey: k\n"
                 "        branches: []\n"
                 "        fallthrough: {name: " CONCAT ", config: {on_read: APPEND}}\n",
                 "on_write.fallthrough");
    expect_error(t,
                 "      on_read:\n"
                 "        metadataKey: k\n"
                 "        branches:\n"
                 "          - {value: 1, name: quilkin.filters.pass.v1alpha1.Pass}\n"
                 "          - {value: 2, name: " MATCH ", config: {}}\n",
                 "on_read.branches[1]");
}

static void test_config_accepts(void **state)
{
    struct env *t = *state;
    struct err e;
    /* empty branches, labels, unknown keys below the top level, every value kind */
    assert_int_equal(build_match(t,
                                 "      on_read:\n"
                                 "        metadataKey: k\n"
                                 "        branches: []\n"
                                 "        whatever: 1\n"
                                 "      on_write: ~\n",
                                 &e),
                     0);
    assert_int_equal(
        build_match(t,
                    "      on_write:\n"
                    "        metadataKey: k\n"
                    "        branches:\n"
                    "          - {value: true, name: quilkin.filters.pass."
                    "v1alpha1.Pass, label: l1, extra: x}\n"
                    "          - {value: 0, name: quilkin.filters.pass.v1alpha1.Pass}\n"
                    "          - {value: 18446744073709551615, name: "
                    "quilkin.filters.pass.v1alpha1.Pass}\n"
                    "          - {value: \"\", name: quilkin.filters.pass.v1alpha1.Pass}\n"
                    "          - {value: [], name: quilkin.filters.pass.v1alpha1.Pass}\n"
                    "          - {value: [a, [1, false]], name: "
                    "quilkin.filters.pass.v1alpha1.Pass}\n"
                    "        fallthrough: {name: quilkin.filters.debug.v1alpha1.Debug,"
                    " label: ft, config: {id: x}}\n",
                    &e),
        0);
    assert_int_equal(t->ch.n, 1);
}

/* ---- behaviour ----------------------------------------------------------------------------- */

/* Branches append a marker letter so the test sees which one ran. */
#define VALUES_BODY                                                                                \
    "      on_read:\n"                                                                             \
    "        metadataKey: k\n"                                                                     \
    "        branches:\n"                                                                          \
    "          - {value: 1, name: " CONCAT ", config: {on_read: APPEND, bytes: QQ==}}\n"           \
    "          - {value: abc, name: " CONCAT ", config: {on_read: APPEND, bytes: Qg==}}\n"         \
    "          - {value: true, name: " CONCAT ", config: {on_read: APPEND, bytes: Qw==}}\n"        \
    "          - {value: [1, x], name: " CONCAT ", config: {on_read: APPEND, bytes: RA==}}\n"      \
    "          - {value: 1, name: " CONCAT ", config: {on_read: APPEND, bytes: Wg==}}\n"           \
    "        fallthrough: {name: " CONCAT ", config: {on_read: APPEND, bytes: Rg==}}\n"

/* A, B, C, D: branches 1-4 (the second `1` branch, Z, never runs: first match wins); F: the
 * fallthrough. */
static void test_branch_values(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build_match(t, VALUES_BODY, &e), 0);
    const struct filter *f = t->ch.filters[0];

    load(t, "p");
    set_md(t, "k", (struct md_value){.kind = MD_NUMBER, .u.n = 1});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pA");

    load(t, "p"); /* spec §10: branch `1` matches a single byte 0x01 */
    set_md(t, "k", bytes("\x01", 1));
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pA");

    load(t, "p"); /* ... but not two bytes, nor the text "1" */
    set_md(t, "k", bytes("\x01\x01", 2));
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pF");
    load(t, "p");
    set_md(t, "k", bytes("1", 1));
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pF");

    load(t, "p"); /* string branch matches bytes and strings */
    set_md(t, "k", bytes("abc", 3));
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pB");
    load(t, "p");
    set_md(t, "k",
           (struct md_value){.kind = MD_STRING, .len = 3, .u.bytes = (const uint8_t *)"abc"});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pB");
    load(t, "p");
    set_md(t, "k", bytes("abcd", 4));
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pF");

    load(t, "p");
    set_md(t, "k", (struct md_value){.kind = MD_BOOL, .u.b = true});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pC");
    load(t, "p");
    set_md(t, "k", (struct md_value){.kind = MD_BOOL, .u.b = false});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pF");

    static const struct md_value items[] = {
        {.kind = MD_NUMBER, .u.n = 1},
        {.kind = MD_BYTES, .len = 1, .u.bytes = (const uint8_t *)"x"}};
    load(t, "p");
    set_md(t, "k", (struct md_value){.kind = MD_LIST, .len = 2, .u.items = items});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pD"); /* lists compare element-wise with the same equality */
    load(t, "p");
    set_md(t, "k", (struct md_value){.kind = MD_LIST, .len = 1, .u.items = items});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "pF");

    assert_int_equal(counted(MATCHED, 1), 6);
    assert_int_equal(counted(FALLTHROUGH, 1), 5);
    assert_int_equal(counted(MATCHED, 0), 0);
}

static void test_missing_key_and_default_fallthrough(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(
        build_match(t,
                    "      on_read:\n"
                    "        metadataKey: example.org/version\n"
                    "        branches:\n"
                    "          - {value: 1, name: quilkin.filters.pass.v1alpha1.Pass}\n",
                    &e),
        0);
    const struct filter *f = t->ch.filters[0];
    load(t, "p");
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "no metadata found for example.org/version");
    /* another key set does not help */
    load(t, "p");
    set_md(t, "other", (struct md_value){.kind = MD_NUMBER, .u.n = 1});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "no metadata found for example.org/version");

    load(t, "p");
    set_md(t, "example.org/version", (struct md_value){.kind = MD_NUMBER, .u.n = 1});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "p");
    /* no branch, no fallthrough configured: Drop's reason */
    load(t, "p");
    set_md(t, "example.org/version", (struct md_value){.kind = MD_NUMBER, .u.n = 2});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "intentionally dropped");
    /* the write direction is not configured: pass, even without metadata */
    load(t, "p");
    assert_int_equal(f->ops->write(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "p");
    assert_int_equal(counted(MATCHED, 1), 1);
    assert_int_equal(counted(FALLTHROUGH, 1), 1);
}

/* A reload rebuilds the chain: the counters are registry series, so they keep counting
 * instead of starting again at zero (Prometheus counters never go backwards). */
static void test_counters_survive_rebuild(void **state)
{
    struct env *t = *state;
    struct err e;
    static const char body[] = "      on_read:\n"
                               "        metadataKey: k\n"
                               "        branches:\n"
                               "          - {value: 1, name: quilkin.filters.pass.v1alpha1.Pass}\n"
                               "        fallthrough: {name: quilkin.filters.pass.v1alpha1.Pass}\n";
    for (int round = 1; round <= 3; round++) {
        assert_int_equal(build_match(t, body, &e), 0); /* frees the previous chain */
        const struct filter *f = t->ch.filters[0];
        load(t, "p");
        set_md(t, "k", (struct md_value){.kind = MD_NUMBER, .u.n = 1});
        assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
        load(t, "p");
        set_md(t, "k", (struct md_value){.kind = MD_NUMBER, .u.n = 2});
        assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
        assert_int_equal(counted(MATCHED, 1), (uint64_t)round);
        assert_int_equal(counted(FALLTHROUGH, 1), (uint64_t)round);
    }
}

static void test_write_direction(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(
        build_match(t,
                    "      on_write:\n"
                    "        metadataKey: w\n"
                    "        branches:\n"
                    "          - {value: yes, name: " CONCAT
                    ", config: {on_write: PREPEND, on_read: APPEND, bytes: "
                    "Vw==}}\n"
                    "        fallthrough: {name: quilkin.filters.pass.v1alpha1.Pass}\n",
                    &e),
        0);
    const struct filter *f = t->ch.filters[0];
    load(t, "p");
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS); /* read not configured */
    assert_pkt(t, "p");
    load(t, "p");
    set_md(t, "w", bytes("yes", 3));
    assert_int_equal(f->ops->write(f, &t->c), VERDICT_PASS); /* the branch's write runs */
    assert_pkt(t, "Wp");
    load(t, "p");
    set_md(t, "w", bytes("no", 2));
    assert_int_equal(f->ops->write(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "p");
    load(t, "p");
    assert_int_equal(f->ops->write(f, &t->c), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "no metadata found for w");
    /* v0.7.0 counts write-side matches under the same counters */
    assert_int_equal(counted(MATCHED, 1), 1);
    assert_int_equal(counted(FALLTHROUGH, 1), 1);
}

static void test_nested_match(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(
        build_match(t,
                    "      on_read:\n"
                    "        metadataKey: outer\n"
                    "        branches:\n"
                    "          - value: 1\n"
                    "            name: " MATCH "\n"
                    "            config:\n"
                    "              on_read:\n"
                    "                metadataKey: inner\n"
                    "                branches:\n"
                    "                  - {value: 2, name: " CONCAT
                    ", config: {on_read: APPEND, bytes: Mg==}}\n"
                    "                fallthrough: {name: " CONCAT
                    ", config: {on_read: APPEND, bytes: Kg==}}\n"
                    "        fallthrough: {name: quilkin.filters.pass.v1alpha1.Pass}\n",
                    &e),
        0);
    const struct filter *f = t->ch.filters[0];
    load(t, "p");
    set_md(t, "outer", (struct md_value){.kind = MD_NUMBER, .u.n = 1});
    set_md(t, "inner", (struct md_value){.kind = MD_NUMBER, .u.n = 2});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "p2");
    load(t, "p");
    set_md(t, "outer", (struct md_value){.kind = MD_NUMBER, .u.n = 1});
    set_md(t, "inner", (struct md_value){.kind = MD_NUMBER, .u.n = 3});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "p*");
    load(t, "p");
    set_md(t, "outer", (struct md_value){.kind = MD_NUMBER, .u.n = 1});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "no metadata found for inner");
    load(t, "p");
    set_md(t, "outer", (struct md_value){.kind = MD_NUMBER, .u.n = 9});
    assert_int_equal(f->ops->read(f, &t->c), VERDICT_PASS);
    assert_pkt(t, "p");
}

/* spec filters.md §10, v0.7.0 tests/match.rs: Capture a 3-byte suffix (removed), then Match
 * appends a different suffix per captured value. */
static void test_spec_match_rs(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t,
                           "filters:\n"
                           "  - name: quilkin.filters.capture.v1alpha1.Capture\n"
                           "    config:\n"
                           "      metadataKey: myapp.com/token\n"
                           "      suffix: {size: 3, remove: true}\n"
                           "  - name: " MATCH "\n"
                           "    config:\n"
                           "      on_read:\n"
                           "        metadataKey: myapp.com/token\n"
                           "        branches:\n"
                           "          - value: abc\n"
                           "            name: " CONCAT "\n"
                           "            config: {on_read: APPEND, bytes: eHl6}\n"
                           "          - value: xyz\n"
                           "            name: " CONCAT "\n"
                           "            config: {on_read: APPEND, bytes: YWJj}\n"
                           "        fallthrough:\n"
                           "          name: " CONCAT "\n"
                           "          config: {on_read: APPEND, bytes: ZGVm}\n",
                           &e),
                     0);
    static const char *const cases[][2] = {{"helloabc", "helloxyz"},
                                           {"helloxyz", "helloabc"},
                                           {"hellodef", "hellodef"},
                                           {"hellofgh", "hellodef"}};
    for (size_t i = 0; i < 4; i++) {
        load(t, cases[i][0]);
        assert_int_equal(chain_read(&t->ch, &t->c), VERDICT_PASS);
        assert_pkt(t, cases[i][1]);
    }
    /* too short to capture: Capture fails first */
    load(t, "hi");
    assert_int_equal(chain_read(&t->ch, &t->c), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "no value captured");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_branch_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_and_default_fallthrough, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_direction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters_survive_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spec_match_rs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
