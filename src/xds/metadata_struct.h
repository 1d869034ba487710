/* Private to src/xds: google.protobuf.Struct <-> YAML-shaped node maps, the form endpoint
 * metadata takes in Cluster and ClusterLoadAssignment resources (spec xds.md §6.2). */
#ifndef QK_XDS_METADATA_STRUCT_H
#define QK_XDS_METADATA_STRUCT_H

#include <stdbool.h>
#include <stddef.h>

struct node;
struct pb_pool;
struct Google__Protobuf__Struct;

/* Sets keep[i] for the last occurrence of each key among keys[0..n) and clears the others
 * (protobuf map semantics: the last entry on the wire wins); NULL keys are never kept. Borrows
 * keys. O(n log n). 0 or -ENOMEM. Any thread. */
int metadata_struct_last_wins(const char *const *keys, size_t n, bool *keep);

/* s -> a new map node the caller owns. Numbers become integers the way Rust's `f64 as i64`
 * does (toward zero, saturating, NaN -> 0); entries without a value or kind are dropped; a
 * repeated key keeps its last value; skip (NULL: none) names one key to leave out. Recursion
 * follows s's depth, which the caller bounds (pb_unpack). NULL on OOM. Any thread. */
struct node *metadata_struct_to_node(const struct Google__Protobuf__Struct *s, const char *skip);

/* map (a NODE_MAP) -> a Struct allocated in p with map's entries in order, minus the key skip
 * (NULL: none), and room for extra more entries after them. Borrows map's strings until p is
 * packed. NULL on OOM. Any thread. */
struct Google__Protobuf__Struct *metadata_struct_from_node(struct pb_pool *p,
                                                           const struct node *map, const char *skip,
                                                           size_t extra);

#endif
