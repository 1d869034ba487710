/* Pass (spec filters.md §11): takes no config; every packet passes unchanged. */
#include "filters/filter.h"

const struct filter_ops pass_filter = {
    .name = "quilkin.filters.pass.v1alpha1.Pass",
    .need = CFG_NONE,
};
