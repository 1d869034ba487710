/* ASN database lookups and the per-worker label sets (see geo.h). A lookup walks the
 * database's search tree in the mmapped file and copies a few strings into fixed buffers:
 * no allocation, no lock. The swap of databases is the snapshot's RCU scheme. */
#include "proxy/geo.h"

#include "base/err.h"
#include "base/log.h"
#include "proxy/snapshot.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <maxminddb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_DB_LEN (1ull << 30) /* GeoLite2-ASN is ~10 MB, IPinfo's ASN data ~100 MB */

struct geo_db {
    MMDB_s mmdb;
};

/* A private in-memory copy of the file (a memfd), or -1 (errno set). libmaxminddb maps
 * the file it opens: mapping the user's file itself, a rewrite in place (cp over it) would
 * turn a worker's lookup into SIGBUS. */
static int private_copy(const char *path)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in == -1)
        return -1;
    int fd = memfd_create("quilkin-mmdb", MFD_CLOEXEC);
    if (fd == -1) {
        int err = errno;
        close(in);
        errno = err;
        return -1;
    }
    char buf[65536];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0 || (total += (uint64_t)n) > MAX_DB_LEN) {
            int err = n == 0 ? 0 : n < 0 ? errno : EFBIG;
            close(in);
            if (err) {
                close(fd);
                errno = err;
                return -1;
            }
            return fd;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w == -1 && errno == EINTR)
                continue;
            if (w <= 0) {
                int err = w < 0 ? errno : EIO;
                close(in);
                close(fd);
                errno = err;
                return -1;
            }
            off += w;
        }
    }
}

struct geo_db *geo_db_open(const char *path, struct err *e)
{
    struct geo_db *db = calloc(1, sizeof(*db));
    if (!db) {
        err_set(e, "out of memory");
        return NULL;
    }
    int fd = private_copy(path);
    if (fd == -1) {
        err_set(e, "%s: %s", path, strerror(errno));
        free(db);
        return NULL;
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    int rc = MMDB_open(proc, MMDB_MODE_MMAP, &db->mmdb); /* maps the copy, not the file */
    int os = errno;
    close(fd); /* the mapping keeps the memory */
    if (rc != MMDB_SUCCESS) {
        err_set(e, "%s: %s%s%s", path, MMDB_strerror(rc), rc == MMDB_IO_ERROR ? ": " : "",
                rc == MMDB_IO_ERROR ? strerror(os) : "");
        free(db);
        return NULL;
    }
    return db;
}

void geo_db_close(struct geo_db *db)
{
    if (!db)
        return;
    MMDB_close(&db->mmdb);
    free(db);
}

/* An unsigned integer field (any of the MaxMind integer types), or false. */
static bool get_uint(const MMDB_entry_s *entry, const char *key, uint64_t *out)
{
    MMDB_entry_s e = *entry; /* MMDB_get_value takes a non-const start */
    MMDB_entry_data_s d;
    if (MMDB_get_value(&e, &d, key, NULL) != MMDB_SUCCESS || !d.has_data)
        return false;
    switch (d.type) {
    case MMDB_DATA_TYPE_UINT16:
        *out = d.uint16;
        return true;
    case MMDB_DATA_TYPE_UINT32:
        *out = d.uint32;
        return true;
    case MMDB_DATA_TYPE_UINT64:
        *out = d.uint64;
        return true;
    case MMDB_DATA_TYPE_INT32:
        if (d.int32 < 0)
            return false;
        *out = (uint64_t)d.int32;
        return true;
    default:
        return false;
    }
}

/* A string field copied (cut to cap - 1 bytes, NUL-terminated), or false. */
static bool get_text(const MMDB_entry_s *entry, const char *key, char *out, size_t cap)
{
    MMDB_entry_s e = *entry;
    MMDB_entry_data_s d;
    if (MMDB_get_value(&e, &d, key, NULL) != MMDB_SUCCESS || !d.has_data ||
        d.type != MMDB_DATA_TYPE_UTF8_STRING)
        return false;
    size_t n = d.data_size < cap - 1 ? d.data_size : cap - 1;
    memcpy(out, d.utf8_string, n);
    out[n] = '\0';
    return true;
}

/* "AS15169" (IPinfo's free ASN database) -> 15169. */
static bool parse_as_text(const char *s, uint64_t *out)
{
    if ((s[0] == 'A' || s[0] == 'a') && (s[1] == 'S' || s[1] == 's'))
        s += 2;
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > UINT64_MAX / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* The network ip/bits as text, host bits cleared: "1.2.3.0/24", "2001:db8::/32". */
static void format_prefix(const struct addr *ip, unsigned bits, char *out, size_t cap)
{
    uint8_t net[16] = {0};
    unsigned len = ip->family == AF_INET ? 4 : 16;
    if (bits > len * 8)
        bits = len * 8;
    memcpy(net, ip->ip, len);
    for (unsigned i = 0; i < len; i++) {
        unsigned keep = bits > i * 8 ? bits - i * 8 : 0;
        if (keep < 8)
            net[i] &= (uint8_t)(0xff00u >> keep);
    }
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(ip->family == AF_INET ? AF_INET : AF_INET6, net, text, sizeof(text)))
        text[0] = '\0';
    snprintf(out, cap, "%s/%u", text, bits);
}

bool geo_db_lookup(const struct geo_db *db, const struct addr *ip, struct geo_info *out)
{
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    const struct sockaddr *sa;
    if (ip->family == AF_INET) {
        memcpy(&v4.sin_addr, ip->ip, 4);
        sa = (const struct sockaddr *)&v4;
    } else if (ip->family == AF_INET6) {
        memcpy(&v6.sin6_addr, ip->ip, 16);
        sa = (const struct sockaddr *)&v6;
    } else {
        return false;
    }
    int err = MMDB_SUCCESS;
    MMDB_lookup_result_s r = MMDB_lookup_sockaddr(&db->mmdb, sa, &err);
    if (err != MMDB_SUCCESS || !r.found_entry)
        return false;
    memset(out, 0, sizeof(*out));
    char as_text[32];
    if (!get_uint(&r.entry, "autonomous_system_number", &out->asn) &&
        !get_uint(&r.entry, "as", &out->asn) &&
        !(get_text(&r.entry, "asn", as_text, sizeof(as_text)) &&
          parse_as_text(as_text, &out->asn)))
        out->asn = 0;
    if (!get_text(&r.entry, "autonomous_system_organization", out->organization,
                  sizeof(out->organization)))
        get_text(&r.entry, "as_name", out->organization, sizeof(out->organization));
    get_text(&r.entry, "as_cc", out->country_code, sizeof(out->country_code));
    get_text(&r.entry, "prefix_entity", out->prefix_entity, sizeof(out->prefix_entity));
    get_text(&r.entry, "prefix_name", out->prefix_name, sizeof(out->prefix_name));
    if (!get_text(&r.entry, "prefix", out->prefix, sizeof(out->prefix))) {
        /* the network the lookup ended in; an IPv4 address in an IPv6 tree is counted in
           128 bits, the first 96 being the ::/96 it lives under */
        unsigned bits = r.netmask;
        if (ip->family == AF_INET && db->mmdb.metadata.ip_version == 6)
            bits = bits >= 96 ? bits - 96 : 0;
        format_prefix(ip, bits, out->prefix, sizeof(out->prefix));
    }
    return true;
}

void geo_source_init(struct geo_source *src)
{
    atomic_init(&src->db, NULL);
    atomic_init(&src->generation, 1);
}

void geo_source_swap(struct geo_source *src, struct geo_db *db)
{
    struct geo_db *old = atomic_exchange_explicit(&src->db, db, memory_order_acq_rel);
    atomic_fetch_add_explicit(&src->generation, 1, memory_order_release);
    if (old) {
        snapshot_wait_readers(); /* no worker is inside a lookup on old any more */
        geo_db_close(old);
    }
}

/* ---- per worker ------------------------------------------------------------------------- */

static uint32_t info_hash(const struct geo_info *g)
{
    uint64_t h = g->asn * 0x9e3779b97f4a7c15ull;
    for (const char *p = g->prefix; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 29));
}

/* The index of g in st, adding it if new; 0 when st is full. */
static uint16_t intern(struct geo_stats *st, const struct geo_info *g)
{
    uint32_t n = atomic_load_explicit(&st->n, memory_order_relaxed);
    if (n == 0)
        n = 1; /* info[0]: the empty label set */
    for (uint32_t i = info_hash(g) & (GEO_HASH_CAP - 1), probes = 0; probes < GEO_HASH_CAP;
         i = (i + 1) & (GEO_HASH_CAP - 1), probes++) {
        uint16_t idx = st->hash[i];
        if (idx == 0) {
            if (n >= GEO_CAP) {
                if (!st->is_full_logged) {
                    st->is_full_logged = true;
                    LOG_WARN("proxy", "%d ASN label sets in use on a worker: new ones are "
                                      "counted without asn/ip_prefix labels",
                             GEO_CAP - 1);
                }
                return 0;
            }
            st->info[n] = *g;
            st->hash[i] = (uint16_t)n;
            /* publish the entry: the admin thread reads info[0..n) after an acquire */
            atomic_store_explicit(&st->n, n + 1, memory_order_release);
            return (uint16_t)n;
        }
        if (memcmp(&st->info[idx], g, sizeof(*g)) == 0)
            return idx;
    }
    return 0;
}

static struct geo_client *client_slot(const struct geo_stats *st, const struct addr *client)
{
    uint64_t h = 0;
    for (unsigned i = 0; i < 16; i++)
        h = (h ^ client->ip[i]) * 0x100000001b3ull;
    return (struct geo_client *)&st->clients[(h ^ (h >> 32)) & (GEO_CLIENT_CAP - 1)];
}

uint16_t geo_classify(struct geo_stats *st, const struct geo_source *src,
                      const struct addr *client)
{
    /* the generation first: a swap stores the database, then bumps it, so an answer is
       never cached under a generation newer than the database it came from */
    uint64_t generation = atomic_load_explicit(&src->generation, memory_order_acquire);
    const struct geo_db *db = atomic_load_explicit(&src->db, memory_order_acquire);
    if (!db)
        return 0;
    struct geo_client *c = client_slot(st, client);
    if (c->family == client->family && c->generation == generation &&
        memcmp(c->ip, client->ip, 16) == 0)
        return c->geo;
    struct geo_info g;
    uint16_t idx = geo_db_lookup(db, client, &g) ? intern(st, &g) : 0;
    memcpy(c->ip, client->ip, 16);
    c->family = client->family;
    c->generation = generation;
    c->geo = idx;
    return idx;
}

uint16_t geo_client(const struct geo_stats *st, const struct addr *client)
{
    const struct geo_client *c = client_slot(st, client);
    if (c->family == client->family && memcmp(c->ip, client->ip, 16) == 0)
        return c->geo;
    return 0;
}

bool geo_count_drop(struct geo_stats *st, const char *text, enum geo_drop_form form, int dir,
                    uint16_t geo)
{
    uint64_t h = ((uintptr_t)text >> 3) * 0x9e3779b97f4a7c15ull ^ (uint64_t)form << 40 ^
                 (uint64_t)dir << 32 ^ geo;
    h ^= h >> 31;
    for (unsigned probe = 0; probe < 16; probe++) {
        struct geo_drop *d = &st->drops[(h + probe) & (GEO_DROP_SLOTS - 1)];
        const char *t = atomic_load_explicit(&d->text, memory_order_relaxed);
        if (!t) {
            d->form = (uint8_t)form;
            d->dir = (uint8_t)dir;
            d->geo = geo;
            geo_add(&d->n, 1);
            atomic_store_explicit(&d->text, text, memory_order_release);
            return true;
        }
        if (t == text && d->form == form && d->dir == dir && d->geo == geo) {
            geo_add(&d->n, 1);
            return true;
        }
    }
    return false;
}
