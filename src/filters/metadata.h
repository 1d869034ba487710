/* Per-packet dynamic metadata (spec proxy.md §9): a few fixed slots of {interned key, value},
 * living on the worker's stack for one chain run. Values borrow their bytes from the packet
 * or the worker's scratch arena; nothing here allocates. Also the key intern table that a
 * snapshot builds so packet-time lookups compare integers. */
#ifndef QK_FILTERS_METADATA_H
#define QK_FILTERS_METADATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum md_kind {
    MD_NONE = 0,
    MD_BOOL,
    MD_NUMBER, /* unsigned 64-bit */
    MD_STRING, /* UTF-8 bytes */
    MD_BYTES,
    MD_LIST,
};

struct md_value {
    enum md_kind kind;
    uint32_t len; /* STRING/BYTES: byte count; LIST: item count */
    union {
        bool b;
        uint64_t n;
        const uint8_t *bytes;         /* borrowed */
        const struct md_value *items; /* borrowed (scratch arena) */
    } u;
};

#define MD_SLOTS 8

/* Embedded in pkt_ctx; md_clear() before every chain run. */
struct metadata {
    uint32_t n;
    uint32_t keys[MD_SLOTS];
    struct md_value vals[MD_SLOTS];
};

static inline void md_clear(struct metadata *m)
{
    m->n = 0;
}

/* Sets (or replaces) key. Returns 0, or -ENOSPC when every slot is taken: the caller drops
 * the packet with a reason. Worker only. */
int md_set(struct metadata *m, uint32_t key, const struct md_value *v);

/* The value of key, or NULL. */
const struct md_value *md_get(const struct metadata *m, uint32_t key);

/* Value equality of spec proxy.md §9; `left` is the configured (branch) value, `right` the
 * packet's metadata value. String/Bytes compare by bytes; Number equals a 1-byte Bytes. */
bool md_value_eq(const struct md_value *left, const struct md_value *right);

/* Key intern table: names -> small integers, built on the control thread while a snapshot
 * is built, read-only afterwards. Owns copies of the names. */
struct keytab {
    char **names;
    uint32_t n, cap;
};

/* Returns the key's id (existing or new), or -ENOMEM. */
int keytab_intern(struct keytab *t, const char *name);

/* Interns every name of src into the empty table dst, so each keeps its id (a new snapshot
 * that keeps filters of the previous one must give their interned keys the same ids).
 * 0, -ENOMEM, or -EINVAL when dst was not empty. */
int keytab_copy(struct keytab *dst, const struct keytab *src);

/* Name of an id (for logs and /config), or NULL. */
const char *keytab_name(const struct keytab *t, uint32_t id);

void keytab_deinit(struct keytab *t);

#endif
