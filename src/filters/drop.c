/* Drop (spec filters.md §6): takes no config; drops every packet in both directions. */
#include "filters/filter.h"

static enum verdict drop_packet(const struct filter *f, struct pkt_ctx *c)
{
    c->drop_reason = "intentionally dropped";
    return VERDICT_DROP;
}

const struct filter_ops drop_filter = {
    .name = "quilkin.filters.drop.v1alpha1.Drop",
    .need = CFG_NONE,
    .read = drop_packet,
    .write = drop_packet,
};
