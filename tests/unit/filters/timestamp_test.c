/* Timestamp filter (tests src/filters/timestamp.c): config, every metadata value kind, the
 * age computation (truncation, negative ages, the signed reinterpretation), unrepresentable
 * dates, and the per-direction histograms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/arena.h"
#include "base/err.h"
#include "base/metrics.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include "../support/filter_fixture.h"

#include <stdlib.h>
#include <string.h>

#define NAME "quilkin.filters.timestamp.v1alpha1.Timestamp"
#define KEY "example.org/sent_at"
#define NOW_S 1700000000LL
#define NOW_NS ((uint64_t)NOW_S * 1000000000u + 500000000u) /* NOW_S + 0.5 s */

/* One worker's shard of a direction's quilkin_filter_histogram series: the 11 Prometheus
 * default bounds + the +Inf bucket (not cumulative), their count, the sum. */
struct hist {
    uint64_t bucket[12];
    uint64_t count;
    double sum;
};

struct env {
    struct filter f;
    struct keytab keys;
    struct arena scratch;
    uint8_t buf[256];
    struct pkt_ctx c;
};

static int build(struct env *t, const char *yaml, struct err *e)
{
    filter_deinit(&t->f);
    return build_filter_yaml(&t->f, NAME, yaml, &t->keys, e);
}

static int setup(void **state)
{
    struct env *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(arena_init(&t->scratch, 4096), 0);
    metrics_init(2);
    struct err e;
    assert_int_equal(build(t, "{metadataKey: " KEY "}", &e), 0);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct env *t = *state;
    filter_deinit(&t->f);
    keytab_deinit(&t->keys);
    arena_deinit(&t->scratch);
    free(t);
    metrics_reset_for_tests(); /* after the filter: nothing holds a series any more */
    return 0;
}

static struct pkt_ctx *load(struct env *t)
{
    load_packet(&t->c, t->buf, sizeof(t->buf), 16, "data", 4, NULL);
    t->c.scratch = &t->scratch; /* attached without a reset */
    t->c.worker = 1;
    t->c.now_unix_ns = NOW_NS;
    return &t->c;
}

static uint32_t key_id(struct env *t, const char *k)
{
    int id = keytab_intern(&t->keys, k);
    assert_true(id >= 0);
    return (uint32_t)id;
}

/* Runs one direction with metadata `v` under `k` (NULL: no metadata); always passes. */
static void run(struct env *t, int dir, const char *k, const struct md_value *v)
{
    load(t);
    if (k)
        assert_int_equal(md_set(&t->c.md, key_id(t, k), v), 0);
    enum verdict r = dir ? t->f.ops->write(&t->f, &t->c) : t->f.ops->read(&t->f, &t->c);
    assert_int_equal(r, VERDICT_PASS);
    assert_int_equal(t->c.pkt.len, 4);
    assert_memory_equal(pkt_data(&t->c.pkt), "data", 4);
}

static struct md_value number(uint64_t n)
{
    return (struct md_value){.kind = MD_NUMBER, .u.n = n};
}

static uint8_t be_store[8];

static struct md_value be_bytes(int64_t v, uint32_t len)
{
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--, u >>= 8)
        be_store[i] = (uint8_t)u;
    return (struct md_value){.kind = MD_BYTES, .len = len, .u.bytes = be_store};
}

/* Reads worker w's shard of the series for direction dir (0 read, 1 write) on KEY, looked
 * up by its exact labels (spec filters.md §12, in name order). */
static struct hist hist(unsigned w, int dir)
{
    static const char *const labels[2] = {
        "event=\"read\",help=\"duration in seconds of time since the timestamp in metadata "
        "compared to now\",id=\"" NAME "\",label=\"duration\",shared_metadata_1=\"" KEY "\"",
        "event=\"write\",help=\"duration in seconds of time since the timestamp in metadata "
        "compared to now\",id=\"" NAME "\",label=\"duration\",shared_metadata_1=\"" KEY "\""};
    const struct metric_histogram *m =
        metrics_find_histogram("quilkin_filter_histogram", labels[dir]);
    assert_non_null(m);
    assert_int_equal(m->n_bounds, 11);
    assert_true(w < m->n_shards);
    const union metric_word *slot = &m->slots[(size_t)w * m->stride];
    struct hist h = {.sum = slot[0].d};
    for (int i = 0; i < 12; i++) {
        h.bucket[i] = slot[1 + i].u;
        h.count += h.bucket[i];
    }
    return h;
}

static void test_config(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_not_equal(build(t, NULL, &e), 0);
    assert_string_equal(e.msg, "filter `" NAME "` requires configuration, but none provided");
    assert_int_not_equal(build(t, "{}", &e), 0);
    assert_non_null(strstr(e.msg, "missing field `metadataKey`"));
    assert_non_null(strstr(e.msg, "Deserialization failed: filter `" NAME "`"));
    assert_int_not_equal(build(t, "{metadataKey: [a]}", &e), 0);
    assert_non_null(strstr(e.msg, "expected a string"));
    assert_int_not_equal(build(t, "[1]", &e), 0);
    assert_non_null(strstr(e.msg, "expected a map"));
    assert_int_equal(build(t, "{metadataKey: " KEY ", other: 1}", &e), 0); /* ignored key */
    assert_non_null(t->f.state);
}

static void test_number(void **state)
{
    struct env *t = *state;
    struct md_value v = number(NOW_S - 10); /* age 10.5 s -> 10 */
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).count, 1);
    assert_true(hist(1, 0).sum == 10.0);
    assert_int_equal(hist(1, 0).bucket[10], 1); /* le="10" (inclusive) */
    assert_int_equal(hist(1, 1).count, 0);
    assert_int_equal(hist(0, 0).count, 0);

    v = number(NOW_S); /* age 0.5 -> 0 */
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).bucket[0], 1);
    v = number(NOW_S - 11); /* +Inf */
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).bucket[11], 1);
    v = number(NOW_S - 1); /* 1 s: le="1" */
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).bucket[7], 1);
    assert_int_equal(hist(1, 0).count, 4);
    assert_true(hist(1, 0).sum == 22.0);
}

static void test_bytes(void **state)
{
    struct env *t = *state;
    struct md_value v = be_bytes(NOW_S - 3, 8); /* age 3 -> le="5" */
    run(t, 1, KEY, &v);
    assert_int_equal(hist(1, 1).count, 1);
    assert_int_equal(hist(1, 1).bucket[9], 1);
    assert_true(hist(1, 1).sum == 3.0);
    assert_int_equal(hist(1, 0).count, 0); /* the write direction has its own */

    /* 7 and 9 bytes, strings, bools, lists: ignored */
    v = be_bytes(NOW_S - 3, 7);
    run(t, 1, KEY, &v);
    struct md_value s = {.kind = MD_STRING, .len = 8, .u.bytes = (const uint8_t *)"12345678"};
    run(t, 1, KEY, &s);
    struct md_value b = {.kind = MD_BOOL, .u.b = true};
    run(t, 1, KEY, &b);
    struct md_value l = {.kind = MD_LIST, .len = 1, .u.items = &v};
    run(t, 1, KEY, &l);
    assert_int_equal(hist(1, 1).count, 1);
}

static void test_missing_and_other_keys(void **state)
{
    struct env *t = *state;
    run(t, 0, NULL, NULL);
    struct md_value v = number(NOW_S - 3);
    run(t, 0, "some.other/key", &v);
    assert_int_equal(hist(1, 0).count, 0);
}

static void test_negative_age(void **state)
{
    struct env *t = *state;
    /* t = now + 5 s: age -4.5 s truncates toward zero to -4 */
    struct md_value v = number(NOW_S + 5);
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).count, 1);
    assert_true(hist(1, 0).sum == -4.0);
    assert_int_equal(hist(1, 0).bucket[0], 1);
    /* exactly on a whole second: no truncation step */
    load(t);
    t->c.now_unix_ns = (uint64_t)NOW_S * 1000000000u;
    assert_int_equal(md_set(&t->c.md, key_id(t, KEY), &v), 0);
    assert_int_equal(t->f.ops->read(&t->f, &t->c), VERDICT_PASS);
    assert_true(hist(1, 0).sum == -9.0);

    /* Number is a u64 reinterpreted as signed: u64::MAX is -1 (1969-12-31T23:59:59) */
    v = number(UINT64_MAX);
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).count, 3);
    assert_true(hist(1, 0).sum == -9.0 + (double)(NOW_S + 1));
    v = be_bytes(-1, 8);
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).count, 4);
}

static void test_unrepresentable(void **state)
{
    struct env *t = *state;
    struct md_value v = be_bytes(INT64_MIN, 8);
    run(t, 0, KEY, &v);
    v = be_bytes(INT64_MAX, 8);
    run(t, 0, KEY, &v);
    v = number((uint64_t)INT64_MAX);
    run(t, 0, KEY, &v);
    v = number(8210298412800ULL); /* one second past chrono's last date */
    run(t, 0, KEY, &v);
    v = be_bytes(-8334632937601LL, 8);
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).count, 0);
    /* the extremes themselves are dates */
    v = number(8210298412799ULL);
    run(t, 0, KEY, &v);
    v = be_bytes(-8334632937600LL, 8);
    run(t, 0, KEY, &v);
    assert_int_equal(hist(1, 0).count, 2);
    assert_int_equal(hist(1, 0).bucket[0], 1);
    assert_int_equal(hist(1, 0).bucket[11], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_number, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_other_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_negative_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrepresentable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
