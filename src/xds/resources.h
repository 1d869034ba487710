/* xDS messages and resources <-> our config model (spec xds.md §3-§6). Pure functions: bytes
 * in, owned structs out (or the reverse); no I/O, no threads. Protobuf work goes through the
 * protobuf-c code generated from the .proto files under src/xds/proto. */
#ifndef QK_XDS_RESOURCES_H
#define QK_XDS_RESOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct err;
struct node;
struct config;
struct cluster_group;
struct filter_cfg;

#define XDS_TYPE_CLUSTER "type.googleapis.com/quilkin.config.v1alpha1.Cluster"
#define XDS_TYPE_LISTENER "type.googleapis.com/envoy.config.listener.v3.Listener"
/* Extension: standard Envoy EDS resources (issue 5 §3) */
#define XDS_TYPE_CLA "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/* google.protobuf.Any, owned. */
struct xds_any {
    char *type_url;
    uint8_t *value;
    size_t len;
};

/* envoy.service.discovery.v3.DiscoveryResponse (the fields we use), owned. */
struct xds_response {
    char *version_info;
    char *type_url;
    char *nonce;
    char *control_plane_id; /* control_plane.identifier, NULL when absent */
    struct xds_any *resources;
    size_t n_resources;
};

/* envoy.service.discovery.v3.DiscoveryRequest (the fields we use), owned. */
struct xds_request {
    char *version_info;
    char *node_id;         /* NULL: no node */
    char *user_agent_name; /* node.user_agent_name, NULL when absent */
    /* the rest of the node (encode only; ignored when node_id is NULL) */
    char *user_agent_version;                  /* node.user_agent_version, NULL: absent */
    bool has_locality;                         /* node.locality set */
    const char *region, *zone, *sub_zone;      /* borrowed; NULL read as "" */
    const struct node *node_metadata;          /* borrowed map -> node.metadata, or NULL */
    char **resource_names;
    size_t n_resource_names;
    char *type_url;
    char *response_nonce;
    bool has_error; /* error_detail present (a NACK) */
    int32_t error_code;
    char *error_message;
};

/* Decoders return 0, or -EINVAL with e set (malformed protobuf). Encoders return 0 and a
 * malloc'd buffer in *out, or -ENOMEM. *_free release what the struct owns (not the struct),
 * and accept a zeroed struct. */
int xds_response_decode(const uint8_t *buf, size_t len, struct xds_response *out, struct err *e);
int xds_response_encode(const struct xds_response *r, uint8_t **out, size_t *out_len);
void xds_response_free(struct xds_response *r);
int xds_request_decode(const uint8_t *buf, size_t len, struct xds_request *out, struct err *e);

/* Before decoding a request from an untrusted client (issue 10): 0 when it carries at most
 * max_names resource_names of at most max_name_len bytes each; -E2BIG with e saying which
 * limit, or -EINVAL when it is not a message. O(len), allocates nothing. */
int xds_request_check_names(const uint8_t *buf, size_t len, size_t max_names,
                            size_t max_name_len, struct err *e);
int xds_request_encode(const struct xds_request *r, uint8_t **out, size_t *out_len);
void xds_request_free(struct xds_request *r);

/* quilkin.config.v1alpha1.Cluster -> one group (§6.1, §6.2): endpoint host classified like
 * config.md §4.1 step 4, port > 65535 rejected, metadata Struct -> tokens + user metadata
 * node (owned_metadata), duplicates collapsed, endpoints sorted like the YAML loader does.
 * *out is zeroed first and owns everything on success. */
int xds_cluster_decode(const uint8_t *buf, size_t len, struct cluster_group *out,
                       struct err *e);

/* One group -> Cluster message bytes (§6.2 encoding: quilkin.dev.tokens always present). */
int xds_cluster_encode(const struct cluster_group *g, uint8_t **out, size_t *out_len);

/* Resource name of a group: "region[:zone][:sub_zone]" with empty parts skipped, "" for
 * none (§3). Malloc'd; NULL on OOM. */
char *xds_cluster_resource_name(const struct cluster_group *g);

/* Extension: envoy.config.endpoint.v3.ClusterLoadAssignment -> its cluster_name and groups,
 * one per locality (LocalityLbEndpoints with the same locality merge; none = unlocated),
 * endpoints from LbEndpoint.endpoint.address.socket_address {address, port_value}, tokens
 * from LbEndpoint.metadata.filter_metadata["quilkin.dev"].tokens (same rules as §6.2), other
 * filter_metadata as user metadata, and Envoy's load-balancing facts (health_status,
 * load_balancing_weight, locality_load_balancing_weight, priority) in the metadata key
 * "envoy.eds"; health UNHEALTHY, DRAINING or TIMEOUT sets is_draining. *cluster_name and
 * *groups (*n owned groups) are malloc'd. */
int xds_cla_decode(const uint8_t *buf, size_t len, char **cluster_name,
                   struct cluster_group **groups, size_t *n, struct err *e);

/* envoy.config.listener.v3.Listener -> filter list (§6.3): filter_chains[0] only; each
 * Filter's typed_config unpacked with xds_filter_config_decode into owned_config (name
 * checked against the Any type_url). *filters is a malloc'd array of *n entries (name,
 * owned_config/config, no label). Filter-level validation is NOT done here: the caller
 * builds the chain exactly like for YAML. */
int xds_listener_decode(const uint8_t *buf, size_t len, struct filter_cfg **filters, size_t *n,
                        struct err *e);

/* The Listener's name (its resource name in ACKs, spec xds.md §3), malloc'd; NULL when the
 * bytes do not decode or on OOM. */
char *xds_listener_name(const uint8_t *buf, size_t len);

/* Filter list -> Listener bytes (name "", one FilterChain, typed_config omitted for filters
 * without config). Errors (e set) when a config cannot be packed. */
int xds_listener_encode(const struct filter_cfg *filters, size_t n, uint8_t **out,
                        size_t *out_len, struct err *e);

/* Per-filter config packing (§6.4): protobuf bytes <-> the YAML-shaped node tree the
 * filter's from_yaml accepts (decode applies the proto defaults: e.g. LocalRateLimit period
 * absent = 1). Unknown filter name -> error "filter `NAME` not found". */
int xds_filter_config_decode(const char *name, const uint8_t *buf, size_t len,
                             struct node **out, struct err *e);
int xds_filter_config_encode(const char *name, const struct node *config, uint8_t **out,
                             size_t *out_len, struct err *e);

/* Frees what a group owns and zeroes it (for groups produced by the decoders). */
void xds_group_free(struct cluster_group *g);

/* Applies decoded groups to c (§6.1): a group with the same locality key (or the unlocated
 * group) is replaced, others are appended; groups not named are untouched. Takes ownership
 * of groups[0..n) contents (the array itself stays the caller's). 0 or -ENOMEM. */
int xds_apply_clusters(struct config *c, struct cluster_group *groups, size_t n);

/* Adds copies of groups[0..n) to c: endpoints join the group of the same locality (created
 * when missing) and each group is normalized (address order; for two endpoints with one
 * address, the one already in c wins). groups stay the caller's. 0 or -ENOMEM (c may then
 * hold part of them: destroy it). */
int xds_merge_groups(struct config *c, const struct cluster_group *groups, size_t n);

/* Replaces c's filter list with filters[0..n), taking ownership of their contents (the array
 * itself stays the caller's) whatever the outcome. 0, or -ENOMEM: c keeps its old filters and
 * the given ones are freed. */
int xds_apply_filters(struct config *c, struct filter_cfg *filters, size_t n);

#endif
