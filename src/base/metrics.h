/* Process-wide registry of labeled metric series (counters and histograms) with one shard per
 * worker, so the data path bumps its own cache line with plain relaxed stores and the admin
 * thread sums shards at scrape time. Series outlive config reloads: a rebuilt filter finds
 * the same series by (name, labels), so Prometheus counters never go backwards. */
#ifndef QK_BASE_METRICS_H
#define QK_BASE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf;

#define METRIC_SLOT_WORDS 8 /* 64 bytes: one cache line per worker slot */

/* One 64-bit word of a histogram shard: the sum is a double, the buckets are counts. */
union metric_word {
    uint64_t u;
    double d;
};

/* A counter series. Owned by the registry (freed only by metrics_reset_for_tests or at
 * exit); everything here is read-only after creation except the slots. */
struct metric_counter {
    uint64_t *slots;   /* n_shards * METRIC_SLOT_WORDS; worker w owns slots[w * 8] */
    unsigned n_shards; /* fixed at creation */
    char *labels;      /* owned; labels and next are the registry's, under its mutex */
    struct metric_counter *next;
};

/* A histogram series: per shard, word 0 is the sum, words 1..n_bounds+1 the per-bucket
 * (non-cumulative) counts, the last one +Inf; the shard is padded to whole cache lines. */
struct metric_histogram {
    union metric_word *slots;
    size_t stride;        /* words per shard, a multiple of METRIC_SLOT_WORDS */
    const double *bounds; /* owned copy, ascending upper bounds */
    size_t n_bounds;
    /* tick histograms (metrics_histogram_ticks): observations are clock ticks, the bounds
     * converted to ticks once, and word 0 sums ticks as an integer; rendered in seconds */
    bool in_ticks;
    const uint64_t *bounds_ticks; /* owned; NULL unless in_ticks */
    unsigned n_shards;
    char *labels; /* owned; labels and next are the registry's, under its mutex */
    struct metric_histogram *next;
};

/* Sets the number of worker shards for series created from now on (0 is taken as 1; the
 * default before any call is 1). Series created earlier keep their shard count, and updates
 * from a worker index beyond a series' shards are ignored rather than written out of bounds.
 * The proxy calls it once, before building its first snapshot. Control thread only. */
void metrics_init(unsigned n_workers);

/* Finds or creates the counter `name{labels}`. labels is the text inside the braces, already
 * formatted and escaped (see metrics_label), or "" for none; help is used for the HELP line
 * by the first series of that name. Returns a pointer valid until metrics_reset_for_tests,
 * or NULL when out of memory or when `name` is already registered as a histogram.
 * Control thread (any thread building snapshots) only; takes the registry mutex. */
struct metric_counter *metrics_counter(const char *name, const char *labels, const char *help);

/* As metrics_counter, for a histogram with bounds[0..n_bounds) (ascending, copied). An
 * existing series keeps the bounds it was created with. NULL when out of memory or when
 * `name` is already registered as a counter. */
struct metric_histogram *metrics_histogram(const char *name, const char *labels, const char *help,
                                           const double *bounds, size_t n_bounds);

/* As metrics_histogram, for durations measured with clock_ticks(): bounds are in seconds
 * (as rendered) and converted to ticks once here; observe with metric_observe_ticks. NULL
 * also when the series exists as a plain histogram. Calls clock_ticks_init. */
struct metric_histogram *metrics_histogram_ticks(const char *name, const char *labels,
                                                 const char *help, const double *bounds_s,
                                                 size_t n_bounds);

/* Lookups that never create (tests, diagnostics): NULL when absent. Any thread. */
struct metric_counter *metrics_find_counter(const char *name, const char *labels);
struct metric_histogram *metrics_find_histogram(const char *name, const char *labels);

/* Appends `key="value"` to buf (comma-separated from what is already there), escaping value
 * for Prometheus. Returns false (buf unchanged) when it would not fit in cap bytes. */
bool metrics_label(char *buf, size_t cap, const char *key, const char *value);

/* Renders every series as Prometheus text: one HELP/TYPE pair per metric name, its series
 * together, in creation order. Shards are summed with relaxed loads. Admin thread; takes
 * the registry mutex (never held by the data path). */
void metrics_render(struct strbuf *out);

/* Readers summing the shards with relaxed loads (render, tests). Any thread. */
uint64_t metric_counter_value(const struct metric_counter *c);
uint64_t metric_counter_shard(const struct metric_counter *c, unsigned worker);
/* counts gets h->n_bounds + 1 non-cumulative bucket counts (the last +Inf); returns the
 * total count, and the sum of observations in *sum when sum is not NULL. */
uint64_t metric_histogram_read(const struct metric_histogram *h, uint64_t *counts, double *sum);

/* Frees every series and restores the default of one shard. Only when no filter or thread
 * still holds a series pointer: unit tests and fuzzers between cases. */
void metrics_reset_for_tests(void);

/* ---- data path: worker w only, for its own slot; no lock, no locked instruction ------- */

/* Adds v to worker's slot: a relaxed load and store (single writer, STYLE.md §3 rule 5). */
static inline void metric_add(struct metric_counter *c, unsigned worker, uint64_t v)
{
    if (worker >= c->n_shards)
        return;
    uint64_t *slot = &c->slots[(size_t)worker * METRIC_SLOT_WORDS];
    __atomic_store_n(slot, __atomic_load_n(slot, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

/* Counts v into the first bucket whose bound is >= v (Prometheus `le`), else +Inf, and adds
 * it to the sum. O(n_bounds), a dozen compares. */
static inline void metric_observe(struct metric_histogram *h, unsigned worker, double v)
{
    if (worker >= h->n_shards)
        return;
    union metric_word *s = &h->slots[(size_t)worker * h->stride];
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    uint64_t *bucket = &s[1 + i].u;
    __atomic_store_n(bucket, __atomic_load_n(bucket, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    double sum;
    __atomic_load(&s[0].d, &sum, __ATOMIC_RELAXED);
    sum += v;
    __atomic_store(&s[0].d, &sum, __ATOMIC_RELAXED);
}

/* For tick histograms: counts a span of `ticks` (integer compares only, then two relaxed
 * stores); the sum is kept in ticks and converted to seconds when rendered. */
static inline void metric_observe_ticks(struct metric_histogram *h, unsigned worker,
                                        uint64_t ticks)
{
    if (worker >= h->n_shards)
        return;
    union metric_word *s = &h->slots[(size_t)worker * h->stride];
    size_t i = 0;
    while (i < h->n_bounds && ticks > h->bounds_ticks[i])
        i++;
    uint64_t *bucket = &s[1 + i].u;
    __atomic_store_n(bucket, __atomic_load_n(bucket, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&s[0].u, __atomic_load_n(&s[0].u, __ATOMIC_RELAXED) + ticks,
                     __ATOMIC_RELAXED);
}

#endif
