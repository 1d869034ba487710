/* The configuration model: what a YAML file (or, later, xDS) says, decoded and validated,
 * before anything runtime is built from it. config_parse is pure: bytes in, a config or an
 * error naming the place out. A config is immutable once returned. */
#ifndef QK_CONFIG_CONFIG_H
#define QK_CONFIG_CONFIG_H

#include "net/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct err;
struct node;

/* A decoded routing token (owned by its endpoint). */
struct token {
    uint8_t *bytes;
    size_t len;
};

struct endpoint_cfg {
    char *host;       /* owned DNS name when the address was not an IP literal, else NULL */
    struct addr addr; /* IP literal, canonical (v4-mapped folded to IPv4); for names only
                         .port is set and .family is 0 */
    struct token *tokens; /* owned array of decoded quilkin.dev tokens, sorted bytewise */
    size_t n_tokens;
    const struct node *metadata; /* the endpoint's metadata map as written (including
                                    quilkin.dev), or NULL: borrowed from config->root, or
                                    owned_metadata when built in code (xDS) */
    struct node *owned_metadata; /* owned; NULL for YAML configs */
    bool is_draining; /* xDS EDS health UNHEALTHY, DRAINING or TIMEOUT: existing sessions
                         keep using it, new ones are not opened to it */
};

struct locality {
    char *region, *zone, *sub_zone; /* owned, never NULL ("" when absent) */
};

struct cluster_group {
    bool has_locality;
    struct locality locality;       /* valid when has_locality */
    struct endpoint_cfg *endpoints; /* owned; ascending address order, unique addresses */
    size_t n_endpoints;
};

struct filter_cfg {
    const char *source;        /* borrowed from config->source: file name for messages */
    unsigned line, col;        /* where the entry starts (0 when not from YAML) */
    char *name;                /* owned */
    char *label;               /* owned, NULL when absent or null */
    const struct node *config; /* borrowed from config->root, or owned_config when built in
                                  code (xDS); NULL when absent or null */
    struct node *owned_config; /* owned; NULL for YAML configs */
};

/* Owns everything it points to, including the parsed YAML tree. */
struct config {
    char *source;                 /* owned: where it came from ("quilkin.yaml"), or NULL */
    char *id;                     /* owned */
    struct cluster_group *groups; /* owned; file order */
    size_t n_groups;
    struct filter_cfg *filters; /* owned; chain order */
    size_t n_filters;
    struct node *root; /* owned YAML tree (NULL for configs not built from YAML) */
};

/* Parses and validates a YAML config (spec config.md §2-§6, both cluster forms). Filter
 * entries are checked for shape only (name/label/config keys); filter names and configs are
 * validated later by the filter registry. On error returns -EINVAL and sets e to
 * "SOURCE:LINE:COL: KEY.PATH: reason" (e.g. "quilkin.yaml:7:11:
 * clusters[0].endpoints[1].address: port is required"). Any thread. */
int config_parse(const char *buf, size_t len, const char *source_name, struct config **out,
                 struct err *e);

/* Loads the config following spec config.md §1: path (NULL means "quilkin.yaml"); on ENOENT
 * /etc/quilkin/quilkin.yaml; on ENOENT again the empty default config. *used_path receives
 * the file actually read, or "" for the built-in default (buffer of PATH_MAX). */
int config_load_file(const char *path, struct config **out, char *used_path, struct err *e);

/* Reads and parses the file at path, without the fallbacks of config_load_file (the reload
 * path: a missing file is an error there). 0 or a negative errno with e set. */
int config_read_file(const char *path, struct config **out, struct err *e);

/* The built-in default: no clusters, no filters, id = host name. NULL on OOM. */
struct config *config_default(void);

/* Replaces the endpoints of the group without locality with `to` (creating that group if
 * needed), as `proxy --to` does (spec cli.md §2.1 step 3). 0 or -ENOMEM. */
int config_set_unlocated(struct config *c, const struct addr *to, size_t n_to);

/* Puts g's endpoints in Quilkin's address order (spec config.md §3: names, bytewise then by
 * port, before IP addresses in addr_cmp order) and drops every later endpoint with the address
 * of an earlier one, freeing what it owns. Used by the YAML loader and the xDS decoders.
 * O(n log n) with one temporary array of n endpoints. 0, or -ENOMEM with g unchanged. Any
 * thread (g must not be shared). */
int config_group_normalize(struct cluster_group *g);

/* Total number of endpoints over all groups. */
size_t config_endpoint_count(const struct config *c);

/* Deep copy that owns everything (metadata and filter configs become owned subtrees; no
 * YAML root). NULL on OOM. */
struct config *config_clone(const struct config *c);

/* Deep copy of one endpoint into dst (zeroed first). 0, or -1 on OOM (dst may then hold
 * partial data: free it as part of its config). */
int config_clone_endpoint(const struct endpoint_cfg *src, struct endpoint_cfg *dst);

/* Frees what an endpoint / a group owns and zeroes it (for code that builds groups outside
 * a config, e.g. xDS decoders). */
void config_endpoint_deinit(struct endpoint_cfg *ep);
void config_group_deinit(struct cluster_group *g);

/* Frees c and everything it owns. NULL is a no-op. */
void config_destroy(struct config *c);

#endif
