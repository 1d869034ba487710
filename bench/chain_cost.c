/* bench_chain_cost: what observing every filter run costs. Builds the make-bench chain
 * (Capture suffix + TokenRouter, as bench/capture_token_router.yaml) into a snapshot and runs
 * one 64-byte packet through it millions of times, two ways: through chain_read, which times
 * every top-level filter call into its duration histogram (one tick read per filter boundary),
 * by calling the same filters' read functions directly with no clock at all (what 63 of 64
 * packets cost when timing was sampled), and timed with clock_gettime as the tick source.
 * Also prices one read of each clock. Prints one
 * RESULT line; asserts nothing. Single thread, no I/O; every loop is bounded by a count. */
#include "base/arena.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/metrics.h"
#include "config/config.h"
#include "filters/chain.h"
#include "filters/filter.h"
#include "proxy/snapshot.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNS 4000000u
#define CLOCK_READS 10000000u
#define PKT_LEN 64u

static const char config[] = "clusters:\n"
                             "  - endpoints:\n"
                             "      - address: 127.0.0.1:7001\n"
                             "        metadata: {quilkin.dev: {tokens: [\"q6urqw==\"]}}\n"
                             "      - address: 127.0.0.1:9\n"
                             "        metadata: {quilkin.dev: {tokens: [\"AAAAAA==\"]}}\n"
                             "filters:\n"
                             "  - name: quilkin.filters.capture.v1alpha1.Capture\n"
                             "    config: {suffix: {size: 4, remove: true}}\n"
                             "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n";

static uint8_t buf[1024], spare[1024];

static void ctx_reset(struct pkt_ctx *c, const struct snapshot *s, struct arena *scratch)
{
    memset(buf + 128, 0xab, PKT_LEN);
    c->pkt.buf = buf;
    c->pkt.off = 128;
    c->pkt.len = PKT_LEN;
    c->pkt.cap = sizeof(buf);
    c->all_eps = s->eps;
    c->n_all_eps = s->n_eps;
    c->tokens = s->tokens;
    c->eps.idx = NULL;
    c->eps.n = s->n_eps;
    md_clear(&c->md);
    arena_reset(scratch);
    c->drop_reason = NULL;
}

int main(void)
{
    metrics_init(1);
    struct config *cfg = NULL;
    struct err e = {{0}};
    struct snapshot *s = NULL;
    if (config_parse(config, strlen(config), "bench", &cfg, &e) < 0 ||
        snapshot_create(cfg, 1, NULL, &s, &e) < 0) {
        fprintf(stderr, "bench_chain_cost: %s\n", e.msg);
        return 1;
    }
    struct arena scratch;
    if (arena_init(&scratch, 64 * 1024) < 0)
        return 1;
    struct pkt_ctx c;
    memset(&c, 0, sizeof(c));
    c.scratch = &scratch;
    c.spare = spare;
    c.spare_cap = sizeof(spare);
    addr_parse("192.0.2.7:40000", &c.src);

    /* warm up, and check the chain routes as intended */
    ctx_reset(&c, s, &scratch);
    if (chain_read(&s->chain, &c) != VERDICT_PASS || c.eps.n != 1) {
        fprintf(stderr, "bench_chain_cost: the chain did not route the packet\n");
        return 1;
    }

    uint64_t t0 = clock_mono_ns();
    for (unsigned i = 0; i < RUNS; i++) {
        ctx_reset(&c, s, &scratch);
        chain_read(&s->chain, &c);
    }
    double timed_ns = (double)(clock_mono_ns() - t0) / RUNS;

    t0 = clock_mono_ns();
    for (unsigned i = 0; i < RUNS; i++) {
        ctx_reset(&c, s, &scratch);
        for (size_t k = 0; k < s->chain.n; k++) {
            const struct filter *f = s->chain.filters[k];
            if (f->ops->read(f, &c) != VERDICT_PASS)
                break;
        }
    }
    double untimed_ns = (double)(clock_mono_ns() - t0) / RUNS;

    /* every timed run was observed (plus the warm-up one) */
    uint64_t counts[16];
    uint64_t observed = metric_histogram_read(s->chain.filters[0]->read_hist, counts, NULL);

    /* the same timed run with clock_gettime as the tick source, for comparison (the bucket
     * bounds are then off by the TSC rate: the histograms are not read after this) */
    bool tsc = atomic_load(&clock_ticks_tsc);
    atomic_store(&clock_ticks_tsc, false);
    t0 = clock_mono_ns();
    for (unsigned i = 0; i < RUNS; i++) {
        ctx_reset(&c, s, &scratch);
        chain_read(&s->chain, &c);
    }
    double gettime_ns = (double)(clock_mono_ns() - t0) / RUNS;
    atomic_store(&clock_ticks_tsc, tsc);

    uint64_t sink = 0;
    t0 = clock_mono_ns();
    for (unsigned i = 0; i < CLOCK_READS; i++)
        sink += clock_ticks();
    double tick_ns = (double)(clock_mono_ns() - t0) / CLOCK_READS;
    t0 = clock_mono_ns();
    for (unsigned i = 0; i < CLOCK_READS; i++)
        sink += clock_mono_ns();
    double mono_ns = (double)(clock_mono_ns() - t0) / CLOCK_READS;

    printf("RESULT chain_cost filters=%zu runs=%u observed=%lu untimed_ns=%.1f timed_ns=%.1f "
           "overhead_ns=%.1f timed_with_clock_gettime_ns=%.1f tick_source=\"%s\" "
           "tick_read_ns=%.2f clock_gettime_ns=%.2f (sink %lu)\n",
           s->chain.n, RUNS, (unsigned long)observed, untimed_ns, timed_ns,
           timed_ns - untimed_ns, gettime_ns, clock_ticks_source(), tick_ns, mono_ns,
           (unsigned long)(sink & 1));
    arena_deinit(&scratch);
    snapshot_destroy(s);
    return 0;
}
