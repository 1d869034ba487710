/* Snapshots: built from a config (endpoint union, DNS names, chain), published and retired
 * under RCU while reader threads use them (tests src/proxy/snapshot.c). Run under ASan, a
 * snapshot freed too early is a use-after-free report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/arena.h"
#include "base/err.h"
#include "config/config.h"
#include "proxy/snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static struct snapshot *build(const char *yaml)
{
    struct config *cfg = NULL;
    struct err e = {{0}};
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, &e), 0);
    struct snapshot *s = NULL;
    assert_int_equal(snapshot_create(cfg, 2, NULL, &s, &e), 0);
    return s;
}

static void test_endpoint_union(void **state)
{
    (void)state;
    struct snapshot *s = build("clusters:\n"
                               "  - endpoints:\n"
                               "      - address: 127.0.0.1:2000\n"
                               "      - address: 127.0.0.1:1000\n"
                               "  - locality: {region: eu}\n"
                               "    endpoints:\n"
                               "      - address: \"[::1]:3000\"\n"
                               "      - address: localhost:4000\n"
                               "filters:\n"
                               "  - name: quilkin.filters.pass.v1alpha1.Pass\n");
    assert_int_equal(s->n_eps, 4);
    char buf[ADDR_STR_CAP];
    /* group order, address order inside a group (names first) */
    assert_string_equal(addr_format(&s->eps[0].addr, buf), "127.0.0.1:1000");
    assert_string_equal(addr_format(&s->eps[1].addr, buf), "127.0.0.1:2000");
    /* localhost resolves through /etc/hosts to a loopback address, port kept */
    assert_int_not_equal(s->eps[2].addr.family, 0);
    assert_int_equal(s->eps[2].addr.port, 4000);
    assert_string_equal(addr_format(&s->eps[3].addr, buf), "[::1]:3000");
    assert_int_equal(s->n_unresolved, 0);
    assert_int_equal(s->chain.n, 1);
    snapshot_destroy(s);
}

static struct snapshot *build_from(const char *yaml, const struct snapshot *prev)
{
    struct config *cfg = NULL;
    struct err e = {{0}};
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, &e), 0);
    struct snapshot *s = NULL;
    if (snapshot_create(cfg, 2, prev, &s, &e) != 0)
        fail_msg("snapshot_create: %s", e.msg);
    return s;
}

/* Runs the read chain of s for one packet from src on worker w; returns the verdict and,
 * through *ep, the single endpoint chosen (or UINT32_MAX). */
static enum verdict run_read(const struct snapshot *s, const char *payload, const char *src,
                             unsigned w, uint32_t *ep)
{
    static uint8_t buf[256];
    static uint8_t spare[256];
    struct arena scratch;
    assert_int_equal(arena_init(&scratch, 4096), 0);
    struct pkt_ctx c;
    memset(&c, 0, sizeof(c));
    size_t len = strlen(payload);
    memcpy(buf + 16, payload, len);
    c.pkt.buf = buf;
    c.pkt.off = 16;
    c.pkt.len = (uint32_t)len;
    c.pkt.cap = sizeof(buf);
    c.all_eps = s->eps;
    c.n_all_eps = c.eps.n = s->n_eps;
    c.tokens = s->tokens;
    c.scratch = &scratch;
    c.spare = spare;
    c.spare_cap = sizeof(spare);
    c.worker = w;
    c.now_unix_ns = 1700000000ull * 1000000000ull;
    assert_int_equal(addr_parse(src, &c.src), 0);
    enum verdict v = chain_read(&s->chain, &c);
    *ep = v == VERDICT_PASS && c.eps.n == 1 ? (c.eps.idx ? c.eps.idx[0] : 0) : UINT32_MAX;
    arena_deinit(&scratch);
    return v;
}

#define KEEP_FILTERS                                                                           \
    "filters:\n"                                                                               \
    "  - name: quilkin.filters.capture.v1alpha1.Capture\n"                                     \
    "    config: {suffix: {size: 1, remove: true}, metadataKey: k.tok}\n"                      \
    "  - name: quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit\n"                     \
    "    config: {max_packets: 2, period: 60}\n"                                               \
    "  - name: quilkin.filters.load_balancer.v1alpha1.LoadBalancer\n"                          \
    "    config: {policy: ROUND_ROBIN}\n"

static void test_unchanged_filters_keep_their_state(void **state)
{
    (void)state;
    /* issue 8 #4: a reload that changes only endpoints must not refill a rate-limit budget
     * nor restart the round robin */
    struct snapshot *a = build_from("clusters:\n  - endpoints:\n"
                                    "      - address: 10.0.0.1:1\n"
                                    "      - address: 10.0.0.1:2\n" KEEP_FILTERS,
                                    NULL);
    uint32_t ep;
    assert_int_equal(run_read(a, "hix", "192.0.2.1:5000", 0, &ep), VERDICT_PASS);
    assert_int_equal(ep, 0);
    assert_int_equal(run_read(a, "hix", "192.0.2.1:5000", 0, &ep), VERDICT_PASS);
    assert_int_equal(ep, 1);
    /* the budget of 2 is spent */
    assert_int_equal(run_read(a, "hix", "192.0.2.1:5000", 0, &ep), VERDICT_DROP);

    /* B: one endpoint more, same filters (in the same order) */
    struct snapshot *b = build_from("clusters:\n  - endpoints:\n"
                                    "      - address: 10.0.0.1:1\n"
                                    "      - address: 10.0.0.1:2\n"
                                    "      - address: 10.0.0.1:3\n" KEEP_FILTERS,
                                    a);
    assert_int_equal(b->chain.n_kept, 3);
    for (size_t i = 0; i < 3; i++)
        assert_ptr_equal(b->chain.filters[i], a->chain.filters[i]);
    assert_int_equal(b->keys.n, a->keys.n); /* same interned key ids */
    snapshot_destroy(a); /* B's filters outlive A (ASan would report a use after free) */
    assert_int_equal(run_read(b, "hix", "192.0.2.1:5000", 0, &ep), VERDICT_DROP);
    /* the round robin goes on where it was: two packets reached it (the dropped ones never
     * did), so the next index is 2 of now 3 endpoints, on any worker */
    assert_int_equal(run_read(b, "hix", "192.0.2.2:5000", 1, &ep), VERDICT_PASS);
    assert_int_equal(ep, 2);

    /* C: the rate limit's config changes: a fresh instance with a fresh budget; the
     * others stay */
    struct snapshot *c = build_from(
        "clusters:\n  - endpoints:\n      - address: 10.0.0.1:1\n"
        "filters:\n"
        "  - name: quilkin.filters.capture.v1alpha1.Capture\n"
        "    config: {suffix: {size: 1, remove: true}, metadataKey: k.tok}\n"
        "  - name: quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit\n"
        "    config: {max_packets: 3, period: 60}\n"
        "  - name: quilkin.filters.load_balancer.v1alpha1.LoadBalancer\n"
        "    config: {policy: ROUND_ROBIN}\n",
        b);
    assert_int_equal(c->chain.n_kept, 2);
    assert_ptr_equal(c->chain.filters[0], b->chain.filters[0]);
    assert_ptr_not_equal(c->chain.filters[1], b->chain.filters[1]);
    assert_ptr_equal(c->chain.filters[2], b->chain.filters[2]);
    assert_int_equal(run_read(c, "hix", "192.0.2.1:5000", 0, &ep), VERDICT_PASS);

    /* D: order changed and a label added to the balancer: the label makes it a new entry,
     * Capture moves and is still kept */
    struct snapshot *d = build_from(
        "clusters:\n  - endpoints:\n      - address: 10.0.0.1:1\n"
        "filters:\n"
        "  - name: quilkin.filters.pass.v1alpha1.Pass\n"
        "  - name: quilkin.filters.capture.v1alpha1.Capture\n"
        "    config: {suffix: {size: 1, remove: true}, metadataKey: k.tok}\n"
        "  - name: quilkin.filters.load_balancer.v1alpha1.LoadBalancer\n"
        "    label: lb\n"
        "    config: {policy: ROUND_ROBIN}\n",
        c);
    assert_int_equal(d->chain.n_kept, 1);
    assert_ptr_equal(d->chain.filters[1], c->chain.filters[0]);
    snapshot_destroy(b);
    snapshot_destroy(c);
    assert_int_equal(run_read(d, "hix", "192.0.2.1:5000", 0, &ep), VERDICT_PASS);

    /* E: nothing kept: the key table starts afresh (no growth across unrelated configs) */
    struct snapshot *e = build_from("clusters:\n  - endpoints:\n      - address: 10.0.0.1:1\n"
                                    "filters:\n"
                                    "  - name: quilkin.filters.token_router.v1alpha1."
                                    "TokenRouter\n",
                                    d);
    assert_int_equal(e->chain.n_kept, 0);
    assert_int_equal(e->keys.n, 1); /* only quilkin.dev/capture */
    snapshot_destroy(d);
    snapshot_destroy(e);
}

static void test_bad_chain_keeps_config_with_caller(void **state)
{
    (void)state;
    const char *yaml = "filters:\n  - name: nope\n";
    struct config *cfg = NULL;
    struct err e = {{0}};
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, &e), 0);
    struct snapshot *s = NULL;
    assert_int_not_equal(snapshot_create(cfg, 2, NULL, &s, &e), 0);
    assert_null(s);
    assert_non_null(strstr(e.msg, "filter `nope` not found"));
    config_destroy(cfg); /* still ours on failure */
}

#define READERS 2
#define SWAPS 200

static atomic_bool stop_readers;
static atomic_uint reads_done;

struct reader_result {
    uint64_t generations_seen;
    bool ok;
};

static void *reader(void *arg)
{
    struct reader_result *r = arg;
    snapshot_reader_register();
    uint64_t last = 0;
    r->ok = true;
    while (!atomic_load(&stop_readers)) {
        struct snapshot *s = snapshot_current();
        if (s) {
            /* each snapshot i has i+1 endpoints on ports 1..i+1: check it is whole */
            uint64_t g = s->generation;
            if (g < last)
                r->ok = false;
            if (g != last)
                r->generations_seen++;
            last = g;
            for (uint32_t k = 0; k < s->n_eps; k++)
                if (s->eps[k].addr.port != k + 1)
                    r->ok = false;
            atomic_fetch_add(&reads_done, 1);
        }
        snapshot_reader_quiescent();
    }
    snapshot_reader_unregister();
    return NULL;
}

static void test_publish_while_reading(void **state)
{
    (void)state;
    pthread_t th[READERS];
    struct reader_result res[READERS];
    memset(res, 0, sizeof(res));
    atomic_store(&stop_readers, false);
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader, &res[i]);
    char yaml[8192];
    for (int i = 0; i < SWAPS; i++) {
        size_t n = (size_t)snprintf(yaml, sizeof(yaml), "clusters:\n  - endpoints:\n");
        for (int k = 0; k <= i % 20; k++)
            n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "      - address: 10.0.0.1:%d\n",
                                  k + 1);
        snapshot_publish(build(yaml)); /* frees the previous one after a grace period */
    }
    /* bounded wait for the readers to have done some work (10 s at most) */
    for (int spin = 0; spin < 10000 && atomic_load(&reads_done) < 1000; spin++)
        usleep(1000);
    assert_true(atomic_load(&reads_done) >= 1000);
    atomic_store(&stop_readers, true);
    for (int i = 0; i < READERS; i++) {
        pthread_join(th[i], NULL);
        assert_true(res[i].ok);
        assert_true(res[i].generations_seen >= 1);
    }
    struct snapshot *cur = snapshot_current();
    assert_non_null(cur);
    assert_int_equal(cur->n_eps, (SWAPS - 1) % 20 + 1);
    snapshot_publish(NULL); /* retire the last one */
    assert_null(snapshot_current());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_union),
        cmocka_unit_test(test_bad_chain_keeps_config_with_caller),
        cmocka_unit_test(test_unchanged_filters_keep_their_state),
        cmocka_unit_test(test_publish_while_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
