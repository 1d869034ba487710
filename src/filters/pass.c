/* Pass (spec filters.md §11): takes no config; every packet passes unchanged. */
#include "filters/filter.h"

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char pass_schema[] =
    "description: Passes every packet. Takes no configuration.\n"
    "type: 'null'\n";

const struct filter_ops pass_filter = {
    .name = "quilkin.filters.pass.v1alpha1.Pass",
    .need = CFG_NONE,
    .schema = pass_schema,
};
