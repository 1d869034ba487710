/* LocalRateLimit (spec filters.md §9): at most max_packets per period per client address
 * (IP and port), counted in per-worker fixed-size bucket tables. Read only; write is a
 * no-op. The packet path never allocates: each worker's table is mapped in create(). */
#include "base/clock.h"
#include "base/err.h"
#include "config/node.h"
#include "filters/filter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

/* Filled by from_yaml; read-only afterwards. */
struct rl_args {
    uint64_t max_packets;
    uint32_t period_s;
};

/* Table geometry. Open addressing with linear probing and backward-shift deletion (no
 * tombstones). The load is capped at 3/4 so an empty slot always ends a probe and probe
 * runs stay short: RL_MAX_LIVE buckets (clients seen in the last minute) per worker. */
#define RL_SLOTS 65536u
#define RL_MASK (RL_SLOTS - 1)
#define RL_MAX_LIVE (RL_SLOTS / 4 * 3)
#define RL_IDLE_S 60u          /* spec §9 step 4: a bucket unused for 60 s is removed */
#define RL_SWEEP_PER_PKT 4u    /* slots the incremental sweep inspects per packet */
#define RL_SWEEP_WHEN_FULL 64u /* extra slots inspected before refusing a new client */

struct rl_bucket {
    struct addr key;      /* family 0: empty slot */
    uint32_t last_seen_s; /* low 32 bits of Unix seconds; compared with wrapping arithmetic */
    uint64_t count;
    uint64_t window_start_s;
};

/* Worker w's slot of f->per_worker (one cache line, written only by worker w). Buckets are
 * per worker: the kernel's SO_REUSEPORT hash pins a client's 4-tuple to one worker, so one
 * client's packets always meet the same table and the per-client count stays exact. */
struct rl_worker {
    struct rl_bucket *slots;   /* RL_SLOTS, in rl_state's mapping: untouched until used */
    uint64_t seed;             /* random per table so clients cannot aim at one probe run */
    uint32_t live;             /* occupied slots */
    uint32_t cursor;           /* next slot of the incremental sweep */
    uint64_t table_full_drops; /* counter for the future metrics module (single writer) */
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct rl_worker) == 64, "one cache line per worker slot");

static int rl_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct rl_args *a = args;
    int rc = node_check_map(n, NULL, 0, e); /* unknown keys ignored (spec §1.2) */
    if (rc < 0)
        return rc;
    const struct node *max = node_map_get(n, "max_packets");
    if (!max)
        return node_error(n, e, "missing field `max_packets`");
    if ((rc = node_get_u64(max, &a->max_packets, e)) < 0)
        return rc;
    /* spec §9: period is required in YAML; only xDS defaults it to 1 */
    const struct node *period = node_map_get(n, "period");
    if (!period)
        return node_error(n, e, "missing field `period`");
    if ((rc = node_get_u32(period, &a->period_s, e)) < 0)
        return rc;
    if (a->period_s < 1)
        return node_error(period, e,
                          "field `period` is invalid, reason: value must be at least 1 second");
    return 0;
}

/* Read-only after create(): where the per-worker tables live. */
struct rl_state {
    void *mem; /* one anonymous mapping holding every worker's table */
    size_t mem_len;
};

static void rl_destroy(struct filter *f)
{
    struct rl_state *s = f->state;
    if (s && s->mem)
        munmap(s->mem, s->mem_len);
    free(s);
    free(f->per_worker);
    f->state = NULL;
    f->per_worker = NULL;
}

static int rl_create(struct filter *f, const struct filter_build *b, struct err *e)
{
    unsigned n = b->n_workers ? b->n_workers : 1;
    struct rl_state *s = calloc(1, sizeof(*s));
    struct rl_worker *w = aligned_alloc(64, n * sizeof(*w));
    f->state = s;
    f->per_worker = w;
    if (!s || !w)
        goto fail;
    memset(w, 0, n * sizeof(*w));
    /* mmap rather than calloc: the zero pages stay unmapped until a client lands there, so
     * an idle worker costs no resident memory (calloc may clear recycled memory) */
    size_t table_len = (size_t)RL_SLOTS * sizeof(struct rl_bucket);
    void *p = mmap(NULL, n * table_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        goto fail;
    s->mem = p;
    s->mem_len = n * table_len;
    for (unsigned i = 0; i < n; i++) {
        w[i].slots = (struct rl_bucket *)((uint8_t *)p + i * table_len);
        if (getrandom(&w[i].seed, sizeof(w[i].seed), GRND_NONBLOCK) != (ssize_t)sizeof(w[i].seed))
            w[i].seed = clock_mono_ns() ^ ((uint64_t)i << 40) ^ (uint64_t)(uintptr_t)w;
    }
    return 0;
fail:
    rl_destroy(f);
    return err_set(e, "out of memory"), -ENOMEM;
}

static inline uint32_t home_of(const struct rl_worker *w, const struct addr *a)
{
    return (uint32_t)addr_hash(a, w->seed) & RL_MASK;
}

static inline bool is_idle(const struct rl_bucket *b, uint32_t now32)
{
    /* wrapping difference: a wall clock that stepped back reads as idle (the bucket is then
     * recreated, which never locks a client out) */
    return (uint32_t)(now32 - b->last_seen_s) >= RL_IDLE_S;
}

/* Empties slot i and shifts later members of its probe run back so every key stays
 * reachable from its home slot without crossing an empty slot. O(run length). */
static void remove_at(struct rl_worker *w, uint32_t i)
{
    for (uint32_t j = (i + 1) & RL_MASK;; j = (j + 1) & RL_MASK) {
        struct rl_bucket *b = &w->slots[j];
        if (b->key.family == 0)
            break;
        uint32_t home = home_of(w, &b->key);
        /* b may move to i when i lies on its probe path, i.e. between home and j */
        if (((j - home) & RL_MASK) >= ((j - i) & RL_MASK)) {
            w->slots[i] = *b;
            i = j;
        }
    }
    memset(&w->slots[i], 0, sizeof(w->slots[i]));
    w->live--;
}

/* Inspects up to `budget` slots at the sweep cursor and removes idle buckets. A removal
 * re-examines the same slot (the shift may have pulled a later bucket into it). */
static void sweep(struct rl_worker *w, uint32_t now32, unsigned budget)
{
    for (unsigned k = 0; k < budget && w->live; k++) {
        struct rl_bucket *b = &w->slots[w->cursor];
        if (b->key.family != 0 && is_idle(b, now32))
            remove_at(w, w->cursor);
        else
            w->cursor = (w->cursor + 1) & RL_MASK;
    }
}

/* The bucket of a, or NULL when it has none. Idle buckets met on the way are reclaimed;
 * *empty receives the slot where a would be inserted. Terminates: live < RL_SLOTS. */
static struct rl_bucket *lookup(struct rl_worker *w, const struct addr *a, uint32_t now32,
                                uint32_t *empty)
{
    uint32_t i = home_of(w, a);
    for (;;) {
        struct rl_bucket *b = &w->slots[i];
        if (b->key.family == 0) {
            *empty = i;
            return NULL;
        }
        if (addr_eq(&b->key, a))
            return b;
        if (is_idle(b, now32))
            remove_at(w, i); /* re-examine i */
        else
            i = (i + 1) & RL_MASK;
    }
}

static enum verdict rl_read(const struct filter *f, struct pkt_ctx *c)
{
    const struct rl_args *a = f->args;
    if (a->max_packets == 0) { /* spec §9 step 1 */
        c->drop_reason = "rate limit exceeded";
        return VERDICT_DROP;
    }
    struct rl_worker *w = &((struct rl_worker *)f->per_worker)[c->worker];
    uint64_t now = c->now_unix_ns / NS_PER_SEC; /* whole Unix seconds */
    uint32_t now32 = (uint32_t)now;
    sweep(w, now32, RL_SWEEP_PER_PKT);

    uint32_t slot;
    struct rl_bucket *b = lookup(w, &c->src, now32, &slot);
    if (b && is_idle(b, now32)) {
        /* unused for 60 s: as if swept and created afresh (spec §9 steps 4 and 2) */
        b->last_seen_s = now32;
        b->count = 1;
        b->window_start_s = now;
        return VERDICT_PASS;
    }
    if (b) {
        b->last_seen_s = now32;
        uint64_t prev = b->count;
        if (b->count < UINT64_MAX)
            b->count++;
        /* spec §9 step 3: a new window only once MORE than `period` seconds have passed;
         * a clock that stepped back also opens one */
        bool new_window = now < b->window_start_s || now - b->window_start_s > a->period_s;
        if (new_window) {
            b->count = 1;
            b->window_start_s = now;
            return VERDICT_PASS;
        }
        if (prev >= a->max_packets) {
            c->drop_reason = "rate limit exceeded";
            return VERDICT_DROP;
        }
        return VERDICT_PASS;
    }
    if (w->live >= RL_MAX_LIVE) {
        /* Full: try a little harder to reclaim, then refuse the NEW client. Bounded state
         * beats letting unknown clients through unlimited; known clients keep their
         * buckets and are limited as usual. */
        sweep(w, now32, RL_SWEEP_WHEN_FULL);
        if (w->live >= RL_MAX_LIVE) {
            w->table_full_drops++;
            c->drop_reason = "rate limit table full";
            return VERDICT_DROP;
        }
        lookup(w, &c->src, now32, &slot); /* the sweep may have shifted the probe run */
    }
    b = &w->slots[slot];
    b->key = c->src;
    b->last_seen_s = now32;
    b->count = 1; /* spec §9 step 2 */
    b->window_start_s = now;
    w->live++;
    return VERDICT_PASS;
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char rl_schema[] =
    "description: Limits the packets each client address may send per period.\n"
    "type: object\n"
    "required: [max_packets, period]\n"
    "properties:\n"
    "  max_packets:\n"
    "    description: Packets allowed per client address and period.\n"
    "    type: integer\n"
    "    minimum: 0\n"
    "    maximum: 18446744073709551615\n"
    "  period:\n"
    "    description: The period in seconds.\n"
    "    type: integer\n"
    "    minimum: 1\n"
    "    maximum: 4294967295\n";

const struct filter_ops local_rate_limit_filter = {
    .name = "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit",
    .args_size = sizeof(struct rl_args),
    .need = CFG_REQUIRED,
    .schema = rl_schema,
    .from_yaml = rl_from_yaml,
    .create = rl_create,
    .read = rl_read,
    .destroy = rl_destroy,
};
