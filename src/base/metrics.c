/* The metric registry (see metrics.h): families (one per metric name) in creation order, each
 * with its series in creation order. Creation and rendering take one mutex; the data path
 * never does, it only writes its own shard of a series it was handed at config build. */
#include "base/metrics.h"

#include "base/clock.h"
#include "base/prom.h"
#include "base/strbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum family_type {
    TYPE_COUNTER = 0,
    TYPE_HISTOGRAM,
};

/* Owned by the registry list; owns its name, help and series. */
struct metric_family {
    char *name, *help;
    enum family_type type;
    struct metric_counter *counters, **counters_tail;
    struct metric_histogram *hists, **hists_tail;
    struct metric_family *next;
};

#define MAX_SHARDS 4096 /* a sanity cap: more workers than this is a bug */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric_family *families, **families_tail = &families;
static unsigned n_shards = 1; /* for series created from now on */

void metrics_init(unsigned n_workers)
{
    pthread_mutex_lock(&lock);
    n_shards = n_workers == 0 ? 1 : n_workers > MAX_SHARDS ? MAX_SHARDS : n_workers;
    pthread_mutex_unlock(&lock);
}

/* ---- lookup and creation (lock held) ------------------------------------------------------ */

static struct metric_family *family_find(const char *name)
{
    for (struct metric_family *f = families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static struct metric_family *family_get(const char *name, const char *help, enum family_type type)
{
    struct metric_family *f = family_find(name);
    if (f)
        return f->type == type ? f : NULL;
    f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->type = type;
    f->counters_tail = &f->counters;
    f->hists_tail = &f->hists;
    *families_tail = f;
    families_tail = &f->next;
    return f;
}

static struct metric_counter *counter_find(const struct metric_family *f, const char *labels)
{
    for (struct metric_counter *c = f ? f->counters : NULL; c; c = c->next)
        if (strcmp(c->labels, labels) == 0)
            return c;
    return NULL;
}

static struct metric_histogram *hist_find(const struct metric_family *f, const char *labels)
{
    for (struct metric_histogram *h = f ? f->hists : NULL; h; h = h->next)
        if (strcmp(h->labels, labels) == 0)
            return h;
    return NULL;
}

/* Zeroed shards of `words` 64-bit words each, cache-line aligned. */
static void *shards_alloc(size_t words)
{
    size_t bytes = (size_t)n_shards * words * sizeof(uint64_t);
    void *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

struct metric_counter *metrics_counter(const char *name, const char *labels, const char *help)
{
    pthread_mutex_lock(&lock);
    struct metric_family *f = family_get(name, help, TYPE_COUNTER);
    struct metric_counter *c = counter_find(f, labels);
    if (f && !c && (c = calloc(1, sizeof(*c)))) {
        c->slots = shards_alloc(METRIC_SLOT_WORDS);
        c->labels = strdup(labels);
        c->n_shards = n_shards;
        if (c->slots && c->labels) {
            *f->counters_tail = c;
            f->counters_tail = &c->next;
        } else {
            free(c->slots);
            free(c->labels);
            free(c);
            c = NULL;
        }
    }
    pthread_mutex_unlock(&lock);
    return c;
}

static struct metric_histogram *histogram_get(const char *name, const char *labels,
                                              const char *help, const double *bounds,
                                              size_t n_bounds, bool in_ticks)
{
    uint64_t *ticks = NULL;
    if (in_ticks) {
        clock_ticks_init(); /* outside the lock: it may calibrate for ~20 ms */
        ticks = malloc((n_bounds ? n_bounds : 1) * sizeof(*ticks));
        if (!ticks)
            return NULL;
        for (size_t i = 0; i < n_bounds; i++)
            ticks[i] = clock_ns_to_ticks(bounds[i] * 1e9);
    }
    pthread_mutex_lock(&lock);
    struct metric_family *f = family_get(name, help, TYPE_HISTOGRAM);
    struct metric_histogram *h = hist_find(f, labels);
    if (h) {
        if (h->in_ticks != in_ticks)
            h = NULL; /* a series is either kind; the caller gets NULL */
    } else if (f && (h = calloc(1, sizeof(*h)))) {
        /* word 0: sum; then n_bounds + 1 buckets; rounded up to whole cache lines */
        size_t words = 1 + n_bounds + 1;
        h->stride = (words + METRIC_SLOT_WORDS - 1) / METRIC_SLOT_WORDS * METRIC_SLOT_WORDS;
        h->slots = shards_alloc(h->stride);
        double *b = malloc((n_bounds ? n_bounds : 1) * sizeof(*b));
        if (b && n_bounds)
            memcpy(b, bounds, n_bounds * sizeof(*b));
        h->bounds = b;
        h->n_bounds = n_bounds;
        h->labels = strdup(labels);
        h->n_shards = n_shards;
        h->in_ticks = in_ticks;
        h->bounds_ticks = ticks;
        ticks = NULL; /* owned by h from here */
        if (h->slots && b && h->labels) {
            *f->hists_tail = h;
            f->hists_tail = &h->next;
        } else {
            free(h->slots);
            free(b);
            free(h->labels);
            free((void *)h->bounds_ticks);
            free(h);
            h = NULL;
        }
    }
    pthread_mutex_unlock(&lock);
    free(ticks);
    return h;
}

struct metric_histogram *metrics_histogram(const char *name, const char *labels, const char *help,
                                           const double *bounds, size_t n_bounds)
{
    return histogram_get(name, labels, help, bounds, n_bounds, false);
}

struct metric_histogram *metrics_histogram_ticks(const char *name, const char *labels,
                                                 const char *help, const double *bounds_s,
                                                 size_t n_bounds)
{
    return histogram_get(name, labels, help, bounds_s, n_bounds, true);
}

struct metric_counter *metrics_find_counter(const char *name, const char *labels)
{
    pthread_mutex_lock(&lock);
    struct metric_family *f = family_find(name);
    struct metric_counter *c = f && f->type == TYPE_COUNTER ? counter_find(f, labels) : NULL;
    pthread_mutex_unlock(&lock);
    return c;
}

struct metric_histogram *metrics_find_histogram(const char *name, const char *labels)
{
    pthread_mutex_lock(&lock);
    struct metric_family *f = family_find(name);
    struct metric_histogram *h = f && f->type == TYPE_HISTOGRAM ? hist_find(f, labels) : NULL;
    pthread_mutex_unlock(&lock);
    return h;
}

bool metrics_label(char *buf, size_t cap, const char *key, const char *value)
{
    size_t used = strlen(buf);
    size_t vlen = strlen(value);
    /* worst case every value byte doubles when escaped */
    size_t need = (used ? 1 : 0) + strlen(key) + 2 + 2 * vlen + 1 + 1;
    if (used >= cap || need > cap - used)
        return false;
    char *p = buf + used;
    if (used)
        *p++ = ',';
    size_t klen = strlen(key);
    memcpy(p, key, klen);
    p += klen;
    *p++ = '=';
    *p++ = '"';
    /* prom_escape keeps 3 bytes in reserve; give it room for 2 * vlen + NUL + reserve */
    size_t room = cap - (size_t)(p - buf);
    prom_escape(p, room, value);
    p += strlen(p);
    *p++ = '"';
    *p = '\0';
    return true;
}

/* ---- reading and rendering ---------------------------------------------------------------- */

uint64_t metric_counter_shard(const struct metric_counter *c, unsigned worker)
{
    if (worker >= c->n_shards)
        return 0;
    return __atomic_load_n(&c->slots[(size_t)worker * METRIC_SLOT_WORDS], __ATOMIC_RELAXED);
}

uint64_t metric_counter_value(const struct metric_counter *c)
{
    uint64_t sum = 0;
    for (unsigned w = 0; w < c->n_shards; w++)
        sum += metric_counter_shard(c, w);
    return sum;
}

uint64_t metric_histogram_read(const struct metric_histogram *h, uint64_t *counts, double *sum)
{
    double total_sum = 0;
    uint64_t total = 0, sum_ticks = 0;
    for (size_t i = 0; i <= h->n_bounds; i++)
        counts[i] = 0;
    for (unsigned w = 0; w < h->n_shards; w++) {
        union metric_word *s = &h->slots[(size_t)w * h->stride];
        if (h->in_ticks) {
            sum_ticks += __atomic_load_n(&s[0].u, __ATOMIC_RELAXED);
        } else {
            double d;
            __atomic_load(&s[0].d, &d, __ATOMIC_RELAXED);
            total_sum += d;
        }
        for (size_t i = 0; i <= h->n_bounds; i++) {
            uint64_t n = __atomic_load_n(&s[1 + i].u, __ATOMIC_RELAXED);
            counts[i] += n;
            total += n;
        }
    }
    if (h->in_ticks)
        total_sum = clock_ticks_to_ns(sum_ticks) / 1e9;
    if (sum)
        *sum = total_sum;
    return total;
}

void metrics_render(struct strbuf *out)
{
    pthread_mutex_lock(&lock);
    for (const struct metric_family *f = families; f; f = f->next) {
        if (f->type == TYPE_COUNTER) {
            prom_header(out, f->name, "counter", f->help);
            for (const struct metric_counter *c = f->counters; c; c = c->next)
                prom_sample_u64(out, f->name, c->labels, metric_counter_value(c));
            continue;
        }
        prom_header(out, f->name, "histogram", f->help);
        for (const struct metric_histogram *h = f->hists; h; h = h->next) {
            uint64_t stack[32];
            uint64_t *counts = h->n_bounds < 32 ? stack : malloc((h->n_bounds + 1) * 8);
            if (!counts) {
                out->failed = true;
                continue;
            }
            double sum;
            metric_histogram_read(h, counts, &sum);
            prom_histogram(out, f->name, h->labels, h->bounds, h->n_bounds, counts, sum);
            if (counts != stack)
                free(counts);
        }
    }
    pthread_mutex_unlock(&lock);
}

void metrics_reset_for_tests(void)
{
    pthread_mutex_lock(&lock);
    struct metric_family *f = families;
    while (f) {
        struct metric_family *next = f->next;
        for (struct metric_counter *c = f->counters, *cn; c; c = cn) {
            cn = c->next;
            free(c->slots);
            free(c->labels);
            free(c);
        }
        for (struct metric_histogram *h = f->hists, *hn; h; h = hn) {
            hn = h->next;
            free(h->slots);
            free((void *)h->bounds);
            free((void *)h->bounds_ticks);
            free(h->labels);
            free(h);
        }
        free(f->name);
        free(f->help);
        free(f);
        f = next;
    }
    families = NULL;
    families_tail = &families;
    n_shards = 1;
    pthread_mutex_unlock(&lock);
}
