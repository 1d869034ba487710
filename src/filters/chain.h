/* A filter chain: built from the config's filter list through the registry, run forward on
 * read and in reverse on write; the first DROP stops the run (spec proxy.md §4). */
#ifndef QK_FILTERS_CHAIN_H
#define QK_FILTERS_CHAIN_H

#include "filters/filter.h"

#include <stddef.h>

struct err;
struct filter_cfg;

/* Embedded in a snapshot. Owns its filters. */
struct chain {
    struct filter *filters;
    size_t n;
};

/* Decodes and creates every filter of cfgs[0..n) in order. All or nothing: on error the
 * chain is left empty, e names the entry ("filters[2] (NAME): reason") and -EINVAL or
 * -ENOMEM is returned. Control thread only. */
int chain_build(struct chain *ch, const struct filter_cfg *cfgs, size_t n,
                const struct filter_build *b, struct err *e);

/* Builds a single filter (Match uses this for its children). f is zeroed by the caller. */
int filter_build_one(struct filter *f, const char *name, const char *label,
                     const struct node *config, const struct filter_build *b, struct err *e);

/* Destroys one filter built by filter_build_one. */
void filter_deinit(struct filter *f);

void chain_deinit(struct chain *ch);

/* Runs read (first to last) or write (last to first). Worker only. */
enum verdict chain_read(const struct chain *ch, struct pkt_ctx *c);
enum verdict chain_write(const struct chain *ch, struct pkt_ctx *c);

#endif
