/* The fixed table of built-in filters, looked up by exact name (spec filters.md §1.1). */
#ifndef QK_FILTERS_REGISTRY_H
#define QK_FILTERS_REGISTRY_H

#include <stddef.h>

struct filter_ops;

/* The ops for name, or NULL when no such filter exists. Any thread. */
const struct filter_ops *registry_find(const char *name);

/* All registered filters, for listings; *n receives the count. */
const struct filter_ops *const *registry_all(size_t *n);

#endif
