/* The filter interface (STYLE.md §2): decode config, build a runtime instance, run it on
 * packets in the read (client->server) and write (server->client) directions. A filter
 * never touches sockets; per-packet work never allocates except from ctx->scratch. */
#ifndef QK_FILTERS_FILTER_H
#define QK_FILTERS_FILTER_H

#include "base/arena.h"
#include "filters/metadata.h"
#include "net/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct err;
struct metric_histogram;
struct token_index;
struct node;
struct endpoint_cfg;

enum verdict {
    VERDICT_PASS = 0,
    VERDICT_DROP,
};

/* A runtime endpoint inside a snapshot (read-only once published). */
struct endpoint {
    struct addr addr; /* resolved, canonical; family 0 when a DNS name did not resolve */
    const struct endpoint_cfg *cfg; /* borrowed from the snapshot's config: tokens, metadata */
};

/* The endpoints a packet goes to. idx == NULL means "all of ctx->all_eps[0..n)"; otherwise
 * idx[0..n) are indices into all_eps, borrowed from the snapshot or the scratch arena. */
struct endpoint_set {
    const uint32_t *idx;
    uint32_t n;
};

/* Packet bytes with headroom and tailroom so filters can trim or extend in place:
 * data = buf + off, and buf[0..cap) is the whole buffer. */
struct pkt {
    uint8_t *buf;
    uint32_t off, len, cap;
};

static inline uint8_t *pkt_data(const struct pkt *p)
{
    return p->buf + p->off;
}

/* Grows the packet by n bytes at the front and returns the new start, using headroom when
 * there is enough, else moving the payload. NULL (packet unchanged) when it cannot fit. */
static inline uint8_t *pkt_prepend(struct pkt *p, uint32_t n)
{
    if (p->off >= n) {
        p->off -= n;
        p->len += n;
        return p->buf + p->off;
    }
    if ((uint64_t)p->len + n > p->cap)
        return NULL;
    memmove(p->buf + n, p->buf + p->off, p->len);
    p->off = 0;
    p->len += n;
    return p->buf;
}

/* Grows the packet by n bytes at the end and returns where the new bytes go, using
 * tailroom when there is enough, else moving the payload. NULL when it cannot fit. */
static inline uint8_t *pkt_append(struct pkt *p, uint32_t n)
{
    if ((uint64_t)p->off + p->len + n > p->cap) {
        if ((uint64_t)p->len + n > p->cap)
            return NULL;
        memmove(p->buf, p->buf + p->off, p->len);
        p->off = 0;
    }
    uint8_t *tail = p->buf + p->off + p->len;
    p->len += n;
    return tail;
}

/* Drops n bytes (n <= len) from the front or the back. */
static inline void pkt_trim_front(struct pkt *p, uint32_t n)
{
    p->off += n;
    p->len -= n;
}

static inline void pkt_trim_back(struct pkt *p, uint32_t n)
{
    p->len -= n;
}

/* Replaces the contents with src[0..n) (src must not overlap the packet, e.g. the worker's
 * spare buffer); false (packet unchanged) when n exceeds the buffer. */
static inline bool pkt_set(struct pkt *p, const uint8_t *src, uint32_t n)
{
    if (n > p->cap)
        return false;
    uint32_t off = p->cap - p->off >= n ? p->off : 0;
    memcpy(p->buf + off, src, n);
    p->off = off;
    p->len = n;
    return true;
}

/* One chain run, on the worker's stack. */
struct pkt_ctx {
    struct pkt pkt;
    struct addr src;                /* read: the client; write: the endpoint */
    struct addr dst;                /* write: the client; read: unset (family 0) */
    const struct endpoint *all_eps; /* the snapshot's endpoints */
    uint32_t n_all_eps;
    const struct token_index *tokens; /* the snapshot's token -> endpoints index */
    struct endpoint_set eps; /* read: candidates, narrowed by routing filters */
    uint32_t one_ep;         /* storage a filter may point eps.idx at for one endpoint */
    struct metadata md;
    struct arena *scratch; /* per-worker, reset after every packet */
    uint8_t *spare;        /* per-worker buffer for filters that rewrite the whole payload
                              (Compress): write here, then pkt_set() copies it back */
    uint32_t spare_cap;
    unsigned worker;       /* index into per-worker filter state */
    uint64_t now_ns;       /* CLOCK_MONOTONIC, read once per batch */
    uint64_t now_unix_ns;  /* wall clock, read once per batch */
    const char *drop_reason; /* static string set with VERDICT_DROP */
};

/* What a filter's create() may use while a snapshot is built (control thread only). */
struct filter_build {
    struct keytab *keys; /* intern metadata keys here */
    unsigned n_workers;  /* size of per-worker state arrays */
};

struct filter;

enum cfg_need {
    CFG_NONE = 0, /* config must be absent or null */
    CFG_OPTIONAL,
    CFG_REQUIRED,
};

struct filter_ops {
    const char *name; /* exact Quilkin name */
    size_t args_size; /* size of the filter's typed args struct (0: no args) */
    enum cfg_need need;
    /* The JSON Schema (draft-07) of the config as YAML, without the `$schema`/`title` lines
     * `quilkin generate-config-schema` adds. It accepts every config from_yaml accepts (it
     * may accept a little more: cross-field rules live in from_yaml and create()). */
    const char *schema;
    /* Fills args (zeroed by the caller) from a YAML node; n is NULL when the config is
     * absent or null and need != CFG_REQUIRED. Messages via node_error(). */
    int (*from_yaml)(void *args, const struct node *n, struct err *e);
    /* Frees what from_yaml allocated inside args (not args itself). NULL: nothing to free. */
    void (*args_free)(void *args);
    /* Builds runtime state from validated args. NULL: the filter needs none. */
    int (*create)(struct filter *f, const struct filter_build *b, struct err *e);
    enum verdict (*read)(const struct filter *f, struct pkt_ctx *c);  /* NULL = pass */
    enum verdict (*write)(const struct filter *f, struct pkt_ctx *c); /* NULL = pass */
    void (*destroy)(struct filter *f); /* frees state/per_worker; NULL: nothing to free */
};

/* One chain entry. Owned by its chain; args and state are read-only after create(). */
struct filter {
    const struct filter_ops *ops;
    void *args;       /* owned, ops->args_size bytes */
    void *state;      /* owned by the filter, shared read-only by workers */
    void *per_worker; /* owned by the filter; slot w touched only by worker w */
    char *label;      /* owned copy of the config label, or NULL */
    /* quilkin_filter_{read,write}_duration_seconds{filter=NAME}: borrowed from the metrics
     * registry (outlives the filter); set by chain_build for top-level entries only, NULL
     * for Match's children (spec admin.md §4.4 times the top-level chain) */
    struct metric_histogram *read_hist, *write_hist;
};

#endif
