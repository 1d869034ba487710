/* A filter chain: built from the config's filter list through the registry, run forward on
 * read and in reverse on write; the first DROP stops the run (spec proxy.md §4). */
#ifndef QK_FILTERS_CHAIN_H
#define QK_FILTERS_CHAIN_H

#include "filters/filter.h"

#include <stddef.h>

struct err;
struct filter_cfg;
struct metric_counter;
struct metric_histogram;

/* Embedded in a snapshot. Each entry is a filter instance with a reference count: chains built
 * one after another share the instances whose configuration did not change, so their state
 * (rate-limit buckets, round-robin position) survives reloads and xDS updates that leave
 * them alone (Quilkin v0.7.0 rebuilt the chain only on a Listener change). A worker uses the
 * chain of one snapshot per batch, and per-worker state is touched only by its worker, so
 * two snapshots sharing an instance never race on it. */
struct chain {
    struct filter **filters; /* owned array; each instance shared, freed with its last chain */
    size_t n;
    size_t n_kept; /* instances taken over from the previous chain by chain_build_from */
};

/* Decodes and creates every filter of cfgs[0..n) in order. All or nothing: on error the
 * chain is left empty, e names the entry ("filters[2] (NAME): reason") and -EINVAL or
 * -ENOMEM is returned. Control thread only. */
int chain_build(struct chain *ch, const struct filter_cfg *cfgs, size_t n,
                const struct filter_build *b, struct err *e);

/* As chain_build, but an entry whose name, label and config equal (node_equal) those of an
 * entry of prev not yet taken reuses that instance, state and all, instead of building a
 * new one; the first such entry of prev in order is taken, so duplicates pair up in order.
 * prev (may be NULL) stays valid and unchanged. b->keys must already hold prev's keys with
 * the same ids when anything is reused (see chain_count_reusable and keytab_copy). Control
 * thread (the one that publishes snapshots) only. */
int chain_build_from(struct chain *ch, const struct filter_cfg *cfgs, size_t n,
                     const struct filter_build *b, const struct chain *prev, struct err *e);

/* How many entries chain_build_from(cfgs, prev) would reuse (it makes the same choices). */
size_t chain_count_reusable(const struct filter_cfg *cfgs, size_t n, const struct chain *prev);

/* Builds a single filter (Match uses this for its children). f is zeroed by the caller. */
int filter_build_one(struct filter *f, const char *name, const char *label,
                     const struct node *config, const struct filter_build *b, struct err *e);

/* Destroys one filter built by filter_build_one. */
void filter_deinit(struct filter *f);

/* Drops this chain's reference to each instance (destroying those no other chain holds) and
 * empties it. */
void chain_deinit(struct chain *ch);

/* The generic filter metrics (spec filters.md §1.4), for a filter's create(): finds or
 * creates quilkin_filter_int_counter{event,help,id,label} and quilkin_filter_histogram
 * {event,help,id,label,shared_metadata_1} in the process-wide registry, so a filter rebuilt
 * by a reload keeps counting into the same series. NULL when out of memory. Control thread
 * only. */
struct metric_counter *filter_int_counter(const char *id, const char *label, const char *help,
                                          const char *event);
struct metric_histogram *filter_histogram(const char *id, const char *label, const char *help,
                                          const char *event, const char *shared_metadata_1,
                                          const double *bounds, size_t n_bounds);

/* Runs read (first to last) or write (last to first). Every call of a top-level filter is
 * timed into its quilkin_filter_{read,write}_duration_seconds series (clock_ticks, one read
 * per filter boundary). Worker only. */
enum verdict chain_read(const struct chain *ch, struct pkt_ctx *c);
enum verdict chain_write(const struct chain *ch, struct pkt_ctx *c);

#endif
