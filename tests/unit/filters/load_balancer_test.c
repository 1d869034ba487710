/* LoadBalancer (spec filters.md §8): policies, narrowing through an existing selection,
 * empty lists, config decoding (tests src/filters/load_balancer.c). */
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

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define LB "quilkin.filters.load_balancer.v1alpha1.LoadBalancer"

static struct keytab keys; /* interned keys of every filter built here */

static int build(struct filter *f, const char *yaml, struct err *e)
{
    return build_filter_yaml(f, LB, yaml, &keys, e);
}

static void expect_reject(const char *yaml, const char *msg)
{
    struct filter f;
    struct err e;
    expect_filter_reject(&f, LB, yaml, &keys, msg, &e);
}

static void ctx(struct pkt_ctx *c, uint32_t n_eps, const char *src, unsigned worker)
{
    memset(c, 0, sizeof(*c));
    c->n_all_eps = n_eps;
    c->eps.n = n_eps;
    c->worker = worker;
    assert_int_equal(addr_parse(src, &c->src), 0);
}

/* Runs read on a fresh context with n endpoints; returns the chosen index. */
static uint32_t pick(const struct filter *f, uint32_t n, const char *src, unsigned worker)
{
    struct pkt_ctx c;
    ctx(&c, n, src, worker);
    assert_int_equal(f->ops->read(f, &c), VERDICT_PASS);
    assert_int_equal(c.eps.n, 1);
    assert_ptr_equal(c.eps.idx, &c.one_ep);
    assert_true(c.one_ep < n);
    return c.one_ep;
}

static void test_round_robin_default(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "{}", &e), 0); /* `{}` is a valid config: ROUND_ROBIN */
    for (uint32_t i = 0; i < 7; i++)
        assert_int_equal(pick(&f, 3, "127.0.0.1:1000", 0), i % 3); /* first packet -> 0 */
    filter_deinit(&f);

    assert_int_equal(build(&f, "policy: ROUND_ROBIN", &e), 0);
    /* one counter for all clients (on one worker) */
    assert_int_equal(pick(&f, 4, "127.0.0.1:1000", 0), 0);
    assert_int_equal(pick(&f, 4, "127.0.0.2:2000", 0), 1);
    assert_int_equal(pick(&f, 4, "[::1]:3000", 0), 2);
    /* the list length may change between packets: index = counter mod length */
    assert_int_equal(pick(&f, 2, "127.0.0.1:1000", 0), 1);
    assert_int_equal(pick(&f, 5, "127.0.0.1:1000", 0), 4);
    /* spec §8: one sequence for the whole instance, across workers too (issue 8 #5: two
     * clients on different workers both got the first endpoint) */
    assert_int_equal(pick(&f, 4, "127.0.0.9:1000", 1), 1); /* counter 5 */
    assert_int_equal(pick(&f, 4, "127.0.0.1:1000", 0), 2);
    assert_int_equal(pick(&f, 4, "127.0.0.9:1000", 1), 3);
    filter_deinit(&f);
}

struct rr_thread {
    const struct filter *f;
    unsigned worker;
    unsigned hits[4];
};

static void *rr_run(void *arg)
{
    struct rr_thread *t = arg;
    for (int i = 0; i < 40000; i++) {
        struct pkt_ctx c;
        memset(&c, 0, sizeof(c));
        c.n_all_eps = c.eps.n = 4;
        c.worker = t->worker;
        t->f->ops->read(t->f, &c);
        t->hits[c.one_ep]++;
    }
    return NULL;
}

static void test_round_robin_is_one_sequence_across_threads(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "policy: ROUND_ROBIN", &e), 0);
    struct rr_thread t[2] = {{.f = &f, .worker = 0}, {.f = &f, .worker = 1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, rr_run, &t[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* every counter value was used exactly once: 80,000 picks are exactly 20,000 each */
    for (int k = 0; k < 4; k++)
        assert_int_equal(t[0].hits[k] + t[1].hits[k], 20000);
    filter_deinit(&f);
}

static void test_maps_through_existing_selection(void **state)
{
    (void)state;
    struct filter f, g;
    struct err e;
    assert_int_equal(build(&f, "policy: ROUND_ROBIN", &e), 0);
    assert_int_equal(build(&g, "policy: RANDOM", &e), 0);
    static const uint32_t narrowed[] = {5, 7, 9};
    for (uint32_t i = 0; i < 6; i++) {
        struct pkt_ctx c;
        ctx(&c, 10, "127.0.0.1:1000", 0);
        c.eps.idx = narrowed;
        c.eps.n = 3;
        assert_int_equal(f.ops->read(&f, &c), VERDICT_PASS);
        assert_int_equal(c.eps.n, 1);
        assert_int_equal(c.eps.idx[0], narrowed[i % 3]);
        /* a second balancer sees a one-element list pointing at one_ep: stays put */
        uint32_t chosen = c.one_ep;
        assert_int_equal(g.ops->read(&g, &c), VERDICT_PASS);
        assert_int_equal(c.eps.n, 1);
        assert_int_equal(c.eps.idx[0], chosen);
    }
    assert_int_equal(narrowed[0], 5); /* the borrowed array is never written */
    filter_deinit(&f);
    filter_deinit(&g);
}

static void test_empty_list_unchanged(void **state)
{
    (void)state;
    static const char *const policies[] = {"ROUND_ROBIN", "RANDOM", "HASH"};
    for (int p = 0; p < 3; p++) {
        char yaml[64];
        snprintf(yaml, sizeof(yaml), "policy: %s", policies[p]);
        struct filter f;
        struct err e;
        assert_int_equal(build(&f, yaml, &e), 0);
        struct pkt_ctx c;
        ctx(&c, 0, "127.0.0.1:1", 0);
        assert_int_equal(f.ops->read(&f, &c), VERDICT_PASS);
        assert_int_equal(c.eps.n, 0);
        assert_null(c.eps.idx);
        /* narrowed to nothing by an earlier filter: still untouched */
        static const uint32_t none[1] = {3};
        ctx(&c, 4, "127.0.0.1:1", 1);
        c.eps.idx = none;
        c.eps.n = 0;
        assert_int_equal(f.ops->read(&f, &c), VERDICT_PASS);
        assert_int_equal(c.eps.n, 0);
        assert_ptr_equal(c.eps.idx, none);
        /* write is a no-op */
        assert_null(f.ops->write);
        filter_deinit(&f);
    }
}

static void test_random(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "policy: RANDOM", &e), 0);
    unsigned hits[4] = {0};
    for (int i = 0; i < 4000; i++)
        hits[pick(&f, 4, "127.0.0.1:1000", (unsigned)i & 1)]++;
    for (int i = 0; i < 4; i++) /* uniform: ~1000 each; far from a constant pick */
        assert_true(hits[i] > 700 && hits[i] < 1300);
    assert_int_equal(pick(&f, 1, "127.0.0.1:1000", 0), 0);
    filter_deinit(&f);
}

static void test_hash(void **state)
{
    (void)state;
    struct filter f, g;
    struct err e;
    assert_int_equal(build(&f, "policy: HASH", &e), 0);
    assert_int_equal(build(&g, "policy: HASH", &e), 0); /* "after a restart" */
    char src[64];
    unsigned hits[5] = {0};
    bool port_matters = false, ip_matters = false;
    for (int i = 0; i < 500; i++) {
        snprintf(src, sizeof(src), "10.0.%d.%d:%d", i / 200, i % 200, 1000 + i);
        uint32_t k = pick(&f, 5, src, 0);
        hits[k]++;
        /* same client, same endpoint: repeatedly, on another worker, in another instance */
        assert_int_equal(pick(&f, 5, src, 0), k);
        assert_int_equal(pick(&f, 5, src, 1), k);
        assert_int_equal(pick(&g, 5, src, 0), k);
        snprintf(src, sizeof(src), "10.0.%d.%d:%d", i / 200, i % 200, 1001 + i);
        port_matters |= pick(&f, 5, src, 0) != k;
        snprintf(src, sizeof(src), "10.1.%d.%d:%d", i / 200, i % 200, 1000 + i);
        ip_matters |= pick(&f, 5, src, 0) != k;
    }
    assert_true(port_matters);
    assert_true(ip_matters);
    for (int i = 0; i < 5; i++)
        assert_true(hits[i] > 50); /* spread over every endpoint */
    /* IPv6 clients hash too */
    uint32_t k6 = pick(&f, 5, "[2001:db8::1]:7777", 0);
    assert_int_equal(pick(&g, 5, "[2001:db8::1]:7777", 1), k6);
    filter_deinit(&f);
    filter_deinit(&g);
}

static void test_config(void **state)
{
    (void)state;
    struct filter f;
    struct err e;
    assert_int_not_equal(build(&f, "~", &e), 0);
    assert_non_null(strstr(e.msg, "filter `" LB "` requires configuration, but none provided"));
    expect_reject("policy: round_robin",
                  "unknown variant `round_robin`, expected one of `ROUND_ROBIN`, `RANDOM`, "
                  "`HASH`");
    expect_reject("policy: LEAST_CONN", "unknown variant `LEAST_CONN`");
    expect_reject("policy: [HASH]", "expected a string, found sequence");
    expect_reject("[]", "expected a map");
    expect_reject("policy: Hash", "Deserialization failed: filter `" LB "`");
    /* unknown keys are ignored; a null policy is the default */
    assert_int_equal(build(&f, "{policy: ~, weights: [1, 2]}", &e), 0);
    assert_int_equal(pick(&f, 2, "127.0.0.1:1", 0), 0);
    assert_int_equal(pick(&f, 2, "127.0.0.1:1", 0), 1);
    filter_deinit(&f);
}

static void test_in_a_chain(void **state)
{
    (void)state;
    /* the LB after a routing step; run through chain_read like the worker does */
    struct filter f;
    struct err e;
    assert_int_equal(build(&f, "policy: ROUND_ROBIN", &e), 0);
    struct filter *fp = &f;
    struct chain ch = {.filters = &fp, .n = 1};
    struct pkt_ctx c;
    ctx(&c, 3, "127.0.0.1:9", 0);
    assert_int_equal(chain_read(&ch, &c), VERDICT_PASS);
    assert_int_equal(c.eps.n, 1);
    assert_int_equal(c.eps.idx[0], 0);
    ctx(&c, 3, "127.0.0.1:9", 0);
    assert_int_equal(chain_write(&ch, &c), VERDICT_PASS);
    assert_int_equal(c.eps.n, 3); /* write never narrows */
    filter_deinit(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_default),
        cmocka_unit_test(test_round_robin_is_one_sequence_across_threads),
        cmocka_unit_test(test_maps_through_existing_selection),
        cmocka_unit_test(test_empty_list_unchanged),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_in_a_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
