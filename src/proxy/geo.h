/* Client enrichment for metric labels (spec admin.md §4.1, §4.2, §4.6): an ASN database
 * (MaxMind GeoLite2-ASN or IPinfo format, read with libmaxminddb) looked up once per session,
 * never per packet, and each worker's table of label sets with the counters that carry them.
 *
 * Counting is exclusive: an event of a labelled client (label set index > 0) is counted here
 * and not in the worker's plain counters, so /metrics prints the plain counters as the rows
 * with empty labels and these as the labelled rows, and no row is ever a difference (which
 * could run backwards under a concurrent scrape). Index 0 ("no data") carries only jitter. */
#ifndef QK_PROXY_GEO_H
#define QK_PROXY_GEO_H

#include "net/addr.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct err;

#define GEO_CAP 256          /* label sets per worker, index 0 included; then unlabelled */
#define GEO_TEXT_CAP 96      /* organisation and prefix names are cut to this */
#define GEO_PREFIX_CAP 48    /* "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128" fits */
#define GEO_HASH_CAP 512     /* open addressing over the label sets */
#define GEO_CLIENT_CAP 1024  /* client IP -> label set, direct-mapped */
#define GEO_DROP_SLOTS 512   /* (reason, direction, label set) drop counters */

/* One label set: what the database says about a client address. */
struct geo_info {
    uint64_t asn; /* 0: not known */
    char prefix[GEO_PREFIX_CAP];
    char organization[GEO_TEXT_CAP];
    char country_code[8];
    char prefix_entity[GEO_TEXT_CAP];
    char prefix_name[GEO_TEXT_CAP];
};

/* ---- the database ----------------------------------------------------------------------- */

struct geo_db;

/* Reads a MaxMind-format database file into a private in-memory copy (so a file rewritten
 * in place never pulls pages from under a lookup). NULL with e set when it cannot be read
 * or is not a MaxMind DB. Control thread. */
struct geo_db *geo_db_open(const char *path, struct err *e);

/* Unmaps it. NULL is a no-op. Only once no worker can be reading it. */
void geo_db_close(struct geo_db *db);

/* Looks up ip: true with *out filled (asn and prefix at least) when the database has a
 * record for it. The fields read: `autonomous_system_number` or `as` (IPinfo; also `asn`
 * as "AS123"), `autonomous_system_organization` or `as_name`, `as_cc`, `prefix` (else the
 * network the lookup ended in, e.g. "1.2.3.0/24"), `prefix_entity`, `prefix_name`. No heap
 * allocation, no lock. Any thread that holds db. */
bool geo_db_lookup(const struct geo_db *db, const struct addr *ip, struct geo_info *out);

/* ---- what the workers read: one pointer, retired after an RCU grace period ------------- */

/* Shared by the control thread (which swaps databases) and the workers (which read). */
struct geo_source {
    struct geo_db *_Atomic db; /* NULL: no database */
    _Atomic uint64_t generation; /* bumped at each swap: cached lookups go stale */
};

void geo_source_init(struct geo_source *src);

/* Makes db current (taking ownership; NULL removes it), waits until no worker can hold the
 * previous one, then closes it. Control thread only, never while a worker waits on it. */
void geo_source_swap(struct geo_source *src, struct geo_db *db);

/* ---- per-worker label sets and counters ------------------------------------------------- */

enum geo_drop_form {
    GEO_DROP_PLAIN = 0,   /* errors_total and packets_dropped_total, text as is */
    GEO_DROP_FILTER_READ, /* both, text prefixed "filter  error: " */
    GEO_DROP_FILTER_WRITE, /* both, "proxy::Session::process_recv_packet: filter  error: " */
    GEO_ERROR_ONLY,       /* errors_total only (receive errors on session sockets) */
};

struct geo_drop {
    const char *_Atomic text; /* set last (release): the slot is in use; static or
                                 worker-owned text, alive as long as the worker */
    uint8_t form;             /* enum geo_drop_form */
    uint8_t dir;              /* 0 read, 1 write: the `event` label */
    uint16_t geo;
    uint64_t n;
};

struct geo_client {
    uint8_t ip[16];
    uint8_t family; /* 0: empty */
    uint16_t geo;
    uint64_t generation; /* the source generation the lookup was made with */
};

/* One worker's. Written by that worker only (relaxed stores, release for what publishes an
 * entry); the admin thread reads it with acquire/relaxed loads. Large (about 150 KiB) but
 * calloc'd, so unused parts cost no memory. */
struct geo_stats {
    _Atomic uint32_t n; /* label sets in use (info[0] is the empty one) */
    struct geo_info info[GEO_CAP];
    uint64_t packets[2][GEO_CAP], bytes[2][GEO_CAP]; /* labelled only (index > 0) */
    uint64_t created[GEO_CAP], closed[GEO_CAP];      /* sessions, labelled only */
    int64_t jitter_ns[2][GEO_CAP]; /* quilkin_packet_jitter, every index */
    uint64_t jitter_at[2][GEO_CAP]; /* CLOCK_MONOTONIC when set; 0: never */
    struct geo_drop drops[GEO_DROP_SLOTS];
    /* worker only */
    uint16_t hash[GEO_HASH_CAP]; /* index into info, 0: empty */
    struct geo_client clients[GEO_CLIENT_CAP];
    bool is_full_logged;
};

/* A zeroed geo_stats is ready (n is taken as 1). Worker. */

/* The label set of a new session's client: the cached lookup for its IP if it was made with
 * the current database, else a lookup (once per session, never per packet), interned in st.
 * 0 without a database, when the address is not in it, or when st is full (logged once).
 * Worker, while online (it reads src->db). */
uint16_t geo_classify(struct geo_stats *st, const struct geo_source *src,
                      const struct addr *client);

/* The label set last classified for this client IP on this worker, or 0: labels drops that
 * happen before a session is found. O(1). Worker. */
uint16_t geo_client(const struct geo_stats *st, const struct addr *client);

/* Single-writer bump: a relaxed load and store. */
static inline void geo_add(uint64_t *c, uint64_t v)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

/* Sets the jitter gauge of (dir, geo) at now_ns. Worker. */
static inline void geo_jitter(struct geo_stats *st, int dir, uint16_t geo, int64_t ns,
                              uint64_t now_ns)
{
    __atomic_store_n(&st->jitter_ns[dir][geo], ns, __ATOMIC_RELAXED);
    __atomic_store_n(&st->jitter_at[dir][geo], now_ns, __ATOMIC_RELAXED);
}

/* Counts one labelled drop (geo > 0). False when the drop table is full: the caller then
 * counts it unlabelled. Worker. */
bool geo_count_drop(struct geo_stats *st, const char *text, enum geo_drop_form form, int dir,
                    uint16_t geo);

#endif
