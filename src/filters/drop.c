/* Drop (spec filters.md §6): takes no config; drops every packet in both directions. */
#include "filters/filter.h"

static enum verdict drop_packet(const struct filter *f, struct pkt_ctx *c)
{
    c->drop_reason = "intentionally dropped";
    return VERDICT_DROP;
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char drop_schema[] =
    "description: Drops every packet. Takes no configuration.\n"
    "type: 'null'\n";

const struct filter_ops drop_filter = {
    .name = "quilkin.filters.drop.v1alpha1.Drop",
    .need = CFG_NONE,
    .schema = drop_schema,
    .read = drop_packet,
    .write = drop_packet,
};
