/* Chain construction and execution, and the per-filter metric series (spec admin.md §4.4,
 * filters.md §1.4). Construction may allocate (control thread); running never does, and
 * times every top-level filter call with the tick counter. */
#include "filters/chain.h"

#include "base/clock.h"
#include "base/err.h"
#include "base/metrics.h"
#include "config/config.h"
#include "config/node.h"
#include "filters/registry.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int filter_build_one(struct filter *f, const char *name, const char *label,
                     const struct node *config, const struct filter_build *b, struct err *e)
{
    const struct filter_ops *ops = registry_find(name);
    if (!ops)
        return err_set(e, "filter `%s` not found", name);
    f->ops = ops;
    if (config && config->kind == NODE_NULL)
        config = NULL;
    if (!config && ops->need == CFG_REQUIRED)
        return err_set(e, "filter `%s` requires configuration, but none provided", name);
    if (config && ops->need == CFG_NONE)
        return node_error(config, e,
                          "Deserialization failed: filter `%s`: this filter takes no "
                          "configuration, found %s",
                          name, node_kind_name(config->kind));
    int rc = -ENOMEM;
    if (label && !(f->label = strdup(label)))
        goto fail;
    if (ops->args_size) {
        f->args = calloc(1, ops->args_size);
        if (!f->args)
            goto fail;
    }
    if (ops->from_yaml) {
        rc = ops->from_yaml(f->args, config, e);
        if (rc < 0) {
            err_prefix(e, "Deserialization failed: filter `%s`: ", name);
            goto fail;
        }
    }
    if (ops->create) {
        rc = ops->create(f, b, e);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    if (rc == -ENOMEM && !err_is_set(e))
        err_set(e, "out of memory building filter `%s`", name);
    filter_deinit(f);
    return rc;
}

void filter_deinit(struct filter *f)
{
    if (f->ops && f->ops->destroy && (f->state || f->per_worker))
        f->ops->destroy(f);
    if (f->ops && f->ops->args_free && f->args)
        f->ops->args_free(f->args);
    free(f->args);
    free(f->label);
    memset(f, 0, sizeof(*f));
}

/* Turns a filter's message into "FILE:LINE:COL: filters[i]: ...". When the message holds
 * a node position ("line L column C: ", from node_error) that position is the most precise
 * one and is moved to the front; otherwise the entry's own position is used. */
static void locate(struct err *e, const struct filter_cfg *cfg, size_t i)
{
    if (!cfg->line) {
        err_prefix(e, "filters[%zu]: ", i);
        return;
    }
    unsigned line = cfg->line, col = cfg->col;
    char *at = strstr(e->msg, "line ");
    unsigned l, c;
    int used = 0;
    if (at && sscanf(at, "line %u column %u: %n", &l, &c, &used) == 2 && used > 0) {
        line = l;
        col = c;
        memmove(at, at + used, strlen(at + used) + 1);
    }
    err_prefix(e, "%s:%u:%u: filters[%zu]: ", cfg->source ? cfg->source : "", line, col, i);
}

/* spec admin.md §4.4: the buckets of the per-filter timing histograms. */
static const double duration_bounds_s[] = {0.000125,          0.0003125,         0.00078125,
                                           0.001953125,       0.0048828125,      0.01220703125,
                                           0.030517578125,    0.0762939453125,   0.19073486328125,
                                           0.476837158203125, 1.1920928955078125};
#define N_DURATION_BOUNDS (sizeof(duration_bounds_s) / sizeof(duration_bounds_s[0]))

/* Label text of at most n values, each escaped (at worst doubling). */
static char *labels_alloc(const char *const *keys, const char *const *values, size_t n)
{
    size_t c = 1;
    for (size_t i = 0; i < n; i++)
        c += strlen(keys[i]) + 2 * strlen(values[i]) + 4;
    char *buf = malloc(c);
    if (!buf)
        return NULL;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!metrics_label(buf, c, keys[i], values[i])) {
            free(buf);
            return NULL;
        }
    return buf;
}

struct metric_counter *filter_int_counter(const char *id, const char *label, const char *help,
                                          const char *event)
{
    /* labels in name order, as v0.7.0's Prometheus client prints them */
    static const char *const keys[] = {"event", "help", "id", "label"};
    const char *const values[] = {event, help, id, label};
    char *labels = labels_alloc(keys, values, 4);
    if (!labels)
        return NULL;
    struct metric_counter *c =
        metrics_counter("quilkin_filter_int_counter", labels,
                        "generic filter counter, see help label for more specific info");
    free(labels);
    return c;
}

struct metric_histogram *filter_histogram(const char *id, const char *label, const char *help,
                                          const char *event, const char *shared_metadata_1,
                                          const double *bounds, size_t n_bounds)
{
    static const char *const keys[] = {"event", "help", "id", "label", "shared_metadata_1"};
    const char *const values[] = {event, help, id, label, shared_metadata_1};
    char *labels = labels_alloc(keys, values, 5);
    if (!labels)
        return NULL;
    struct metric_histogram *h = metrics_histogram(
        "quilkin_filter_histogram", labels,
        "generic filter histogram, see help label for more specific info", bounds, n_bounds);
    free(labels);
    return h;
}

/* The top-level timing series of f (spec admin.md §4.4: entries with the same name share). */
static int timing_lookup(struct filter *f, const char *name)
{
    static const char *const keys[] = {"filter"};
    const char *const values[] = {name};
    char *labels = labels_alloc(keys, values, 1);
    if (!labels)
        return -ENOMEM;
    f->read_hist = metrics_histogram_ticks("quilkin_filter_read_duration_seconds", labels,
                                           "Seconds taken to execute a given filter's `read`.",
                                           duration_bounds_s, N_DURATION_BOUNDS);
    f->write_hist = metrics_histogram_ticks("quilkin_filter_write_duration_seconds", labels,
                                            "Seconds taken to execute a given filter's `write`.",
                                            duration_bounds_s, N_DURATION_BOUNDS);
    free(labels);
    return f->read_hist && f->write_hist ? 0 : -ENOMEM;
}

/* A chain entry: the filter instance plus what it was built from, so the next build can tell
 * whether it may be reused. Shared by every chain that holds it (refs). */
struct chain_entry {
    struct filter f; /* first: chain->filters[i] points here */
    char *name;      /* owned */
    struct node *config; /* owned copy of the entry's config (NULL when absent) */
    _Atomic unsigned refs;
};

static struct chain_entry *entry_of(struct filter *f)
{
    return (struct chain_entry *)(void *)f; /* f is the first member */
}

static void entry_release(struct filter *f)
{
    struct chain_entry *en = entry_of(f);
    if (atomic_fetch_sub(&en->refs, 1) != 1)
        return;
    filter_deinit(&en->f);
    free(en->name);
    node_free(en->config);
    free(en);
}

static bool entry_matches(const struct chain_entry *en, const struct filter_cfg *cfg)
{
    const char *label = en->f.label;
    return strcmp(en->name, cfg->name) == 0 &&
           (label && cfg->label ? strcmp(label, cfg->label) == 0 : label == cfg->label) &&
           node_equal(en->config, cfg->config);
}

/* The entry of prev that cfgs[i] reuses, or -1. taken[] marks prev entries already paired
 * with an earlier cfg (first come, first served, in order). */
static ptrdiff_t find_reusable(const struct filter_cfg *cfg, const struct chain *prev,
                               bool *taken)
{
    if (!prev)
        return -1;
    for (size_t j = 0; j < prev->n; j++) {
        if (!taken[j] && entry_matches(entry_of(prev->filters[j]), cfg)) {
            taken[j] = true;
            return (ptrdiff_t)j;
        }
    }
    return -1;
}

size_t chain_count_reusable(const struct filter_cfg *cfgs, size_t n, const struct chain *prev)
{
    if (!prev || prev->n == 0)
        return 0;
    bool *taken = calloc(prev->n, sizeof(*taken));
    if (!taken)
        return 0;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        kept += find_reusable(&cfgs[i], prev, taken) >= 0;
    free(taken);
    return kept;
}

static int build_entry(struct filter **out, const struct filter_cfg *cfg,
                       const struct filter_build *b, struct err *e)
{
    struct chain_entry *en = calloc(1, sizeof(*en));
    if (!en || !(en->name = strdup(cfg->name)) ||
        (cfg->config && !(en->config = node_clone(cfg->config)))) {
        if (en)
            free(en->name);
        free(en);
        return err_set(e, "out of memory building filter `%s`", cfg->name), -ENOMEM;
    }
    int rc = filter_build_one(&en->f, cfg->name, cfg->label, cfg->config, b, e);
    if (rc == 0 && (rc = timing_lookup(&en->f, cfg->name)) < 0) {
        filter_deinit(&en->f);
        err_set(e, "out of memory building filter `%s`", cfg->name);
    }
    if (rc < 0) {
        free(en->name);
        node_free(en->config);
        free(en);
        return rc;
    }
    atomic_init(&en->refs, 1);
    *out = &en->f;
    return 0;
}

int chain_build_from(struct chain *ch, const struct filter_cfg *cfgs, size_t n,
                     const struct filter_build *b, const struct chain *prev, struct err *e)
{
    ch->filters = NULL;
    ch->n = 0;
    ch->n_kept = 0;
    if (n == 0)
        return 0;
    struct filter **fs = calloc(n, sizeof(*fs));
    bool *taken = prev && prev->n ? calloc(prev->n, sizeof(*taken)) : NULL;
    if (!fs || (prev && prev->n && !taken)) {
        free(fs);
        free(taken);
        return err_set(e, "out of memory building the filter chain"), -ENOMEM;
    }
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        ptrdiff_t j = find_reusable(&cfgs[i], prev, taken);
        if (j >= 0) {
            fs[i] = prev->filters[j];
            atomic_fetch_add(&entry_of(fs[i])->refs, 1);
            kept++;
            continue;
        }
        int rc = build_entry(&fs[i], &cfgs[i], b, e);
        if (rc < 0) {
            locate(e, &cfgs[i], i);
            for (size_t k = 0; k < i; k++)
                entry_release(fs[k]);
            free(fs);
            free(taken);
            return rc;
        }
    }
    free(taken);
    ch->filters = fs;
    ch->n = n;
    ch->n_kept = kept;
    return 0;
}

int chain_build(struct chain *ch, const struct filter_cfg *cfgs, size_t n,
                const struct filter_build *b, struct err *e)
{
    return chain_build_from(ch, cfgs, n, b, NULL, e);
}

void chain_deinit(struct chain *ch)
{
    for (size_t i = 0; i < ch->n; i++)
        entry_release(ch->filters[i]);
    free(ch->filters);
    ch->filters = NULL;
    ch->n = 0;
    ch->n_kept = 0;
}

/* spec admin.md §4.4: every call of a top-level filter is observed, a drop included (v0.7.0
 * stops its timer before looking at the result). One tick read per filter boundary: n + 1
 * per chain run, a few nanoseconds each with the TSC (base/clock.h). */
enum verdict chain_read(const struct chain *ch, struct pkt_ctx *c)
{
    uint64_t t0 = clock_ticks();
    for (size_t i = 0; i < ch->n; i++) {
        const struct filter *f = ch->filters[i];
        enum verdict v = f->ops->read ? f->ops->read(f, c) : VERDICT_PASS;
        uint64_t t1 = clock_ticks();
        if (f->read_hist)
            metric_observe_ticks(f->read_hist, c->worker, t1 - t0);
        if (v != VERDICT_PASS)
            return VERDICT_DROP;
        t0 = t1;
    }
    return VERDICT_PASS;
}

enum verdict chain_write(const struct chain *ch, struct pkt_ctx *c)
{
    uint64_t t0 = clock_ticks();
    for (size_t i = ch->n; i-- > 0;) {
        const struct filter *f = ch->filters[i];
        enum verdict v = f->ops->write ? f->ops->write(f, c) : VERDICT_PASS;
        uint64_t t1 = clock_ticks();
        if (f->write_hist)
            metric_observe_ticks(f->write_hist, c->worker, t1 - t0);
        if (v != VERDICT_PASS)
            return VERDICT_DROP;
        t0 = t1;
    }
    return VERDICT_PASS;
}
