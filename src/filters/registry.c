/* The registry: a static array of every built-in filter's ops. A new filter is one file
 * plus one line here; no self-registration. */
#include "filters/registry.h"

#include "filters/filter.h"

#include <string.h>

extern const struct filter_ops debug_filter;
extern const struct filter_ops drop_filter;
extern const struct filter_ops pass_filter;
extern const struct filter_ops capture_filter;
extern const struct filter_ops concatenate_filter;
extern const struct filter_ops token_router_filter;
extern const struct filter_ops firewall_filter;
extern const struct filter_ops load_balancer_filter;
extern const struct filter_ops local_rate_limit_filter;
extern const struct filter_ops compress_filter;
extern const struct filter_ops match_filter;
extern const struct filter_ops timestamp_filter;
/* @extern: one line per filter above this marker */

static const struct filter_ops *const all_filters[] = {
    &debug_filter,
    &drop_filter,
    &pass_filter,
    &capture_filter,
    &concatenate_filter,
    &token_router_filter,
    &firewall_filter,
    &load_balancer_filter,
    &local_rate_limit_filter,
    &compress_filter,
    &match_filter,
    &timestamp_filter,
    /* @entry: one line per filter above this marker */
};

const struct filter_ops *registry_find(const char *name)
{
    for (size_t i = 0; i < sizeof(all_filters) / sizeof(all_filters[0]); i++)
        if (strcmp(all_filters[i]->name, name) == 0)
            return all_filters[i];
    return NULL;
}

const struct filter_ops *const *registry_all(size_t *n)
{
    *n = sizeof(all_filters) / sizeof(all_filters[0]);
    return all_filters;
}
