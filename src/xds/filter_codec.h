/* Private to src/xds: the envoy Filter <-> (name, YAML-shaped config) step of
 * xds/filter_codec.c, which xds/listener.c applies to each filter of a chain. The per-filter
 * entry points other modules call are in xds/resources.h. */
#ifndef QK_XDS_FILTER_CODEC_H
#define QK_XDS_FILTER_CODEC_H

struct err;
struct node;
struct pb_pool;
struct Envoy__Config__Listener__V3__Filter;

/* Filter -> its name and config (spec xds.md §6.3), with the checks of Quilkin v0.7.0's
 * FilterChain conversion in its order: ConfigDiscovery rejected, name known, typed_config's
 * type_url equal to the name, then the config message decoded. depth counts the Match levels
 * around f (0 for a Listener's own filters). *name borrows from f; *config is the caller's
 * (NULL when typed_config is absent or the filter takes no config). 0 or a negative errno
 * with e set. Any thread. */
int filter_codec_decode_filter(const struct Envoy__Config__Listener__V3__Filter *f, unsigned depth,
                               const char **name, struct node **config, struct err *e);

/* (name, config) -> a Filter allocated in p; typed_config is omitted when config is NULL or
 * a null node (spec xds.md §6.3). Borrows config: p's tree points into it until packed. NULL
 * with *rc (a negative errno) and e set on failure: unknown name, or a config its filter's
 * message cannot carry. Any thread. */
struct Envoy__Config__Listener__V3__Filter *
filter_codec_encode_filter(struct pb_pool *p, const char *name, const struct node *config,
                           unsigned depth, struct err *e, int *rc);

#endif
