/* Session table: array of sessions + free list, linear-probing hash of indices, and a
 * 64-slot wheel of 1 s slots whose lists are threaded through the sessions. A session whose
 * deadline is further than the wheel's span is parked in the farthest slot and re-armed
 * when it fires, so any timeout works with 64 slots. */
#include "proxy/session.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define WHEEL_SLOTS 64u
#define SLOT_NS 1000000000ull
#define EMPTY 0u /* hash slot value: 0 = empty, otherwise session index + 1 */

struct session_table {
    struct session *sessions; /* cap entries, mmap'd: untouched pages cost nothing */
    uint32_t *hash;           /* hmask + 1 entries */
    uint32_t *free_list;      /* stack of released indices */
    uint32_t n_free;
    uint32_t next_unused; /* indices >= this were never used */
    uint32_t cap, count, hmask;
    uint64_t timeout_ns;
    uint64_t unconfirmed_ns; /* < timeout_ns, or 0: no unconfirmed state */
    uint64_t seed;
    uint64_t wheel_sec; /* last second whose slot was processed */
    uint32_t wheel[WHEEL_SLOTS];
    size_t map_len;
};

static uint64_t key_hash(const struct session_table *t, const struct addr *c,
                         const struct addr *e)
{
    return addr_hash(c, t->seed) ^ (addr_hash(e, t->seed + 0x9e3779b97f4a7c15ull) * 31);
}

struct session_table *session_table_create(uint32_t cap, uint64_t timeout_ns,
                                           uint64_t unconfirmed_ns, uint64_t now_ns,
                                           uint64_t seed)
{
    if (cap == 0 || cap > (1u << 28) || timeout_ns == 0)
        return NULL;
    struct session_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    uint32_t hsize = 16;
    while (hsize < cap * 2u)
        hsize <<= 1;
    size_t s_len = (size_t)cap * sizeof(struct session);
    size_t h_len = (size_t)hsize * sizeof(uint32_t);
    size_t f_len = (size_t)cap * sizeof(uint32_t);
    t->map_len = s_len + h_len + f_len;
    /* One anonymous mapping: zero-filled and only backed by memory when touched. */
    void *mem = mmap(NULL, t->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                     0);
    if (mem == MAP_FAILED) {
        free(t);
        return NULL;
    }
    t->sessions = mem;
    t->hash = (uint32_t *)((uint8_t *)mem + s_len);
    t->free_list = (uint32_t *)((uint8_t *)mem + s_len + h_len);
    t->cap = cap;
    t->hmask = hsize - 1;
    t->timeout_ns = timeout_ns;
    t->unconfirmed_ns = unconfirmed_ns < timeout_ns ? unconfirmed_ns : 0;
    t->seed = seed;
    t->wheel_sec = now_ns / SLOT_NS;
    for (uint32_t i = 0; i < WHEEL_SLOTS; i++)
        t->wheel[i] = SESSION_NIL;
    return t;
}

static void hash_delete(struct session_table *t, uint32_t idx)
{
    struct session *s = &t->sessions[idx];
    uint32_t i = (uint32_t)key_hash(t, &s->client, &s->endpoint) & t->hmask;
    while (t->hash[i] != idx + 1)
        i = (i + 1) & t->hmask;
    /* backward-shift deletion keeps probe chains intact without tombstones */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & t->hmask;
        if (t->hash[j] == EMPTY)
            break;
        struct session *o = &t->sessions[t->hash[j] - 1];
        uint32_t home = (uint32_t)key_hash(t, &o->client, &o->endpoint) & t->hmask;
        /* move j into the hole at i when its home is not cyclically in (i, j] */
        bool in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            t->hash[i] = t->hash[j];
            i = j;
        }
    }
    t->hash[i] = EMPTY;
}

static void release(struct session_table *t, uint32_t idx)
{
    hash_delete(t, idx);
    t->sessions[idx].fd = -1;
    t->free_list[t->n_free++] = idx;
    t->count--;
}

void session_table_destroy(struct session_table *t, session_fn fn, void *ctx)
{
    if (!t)
        return;
    if (fn) {
        for (uint32_t w = 0; w < WHEEL_SLOTS; w++)
            for (uint32_t i = t->wheel[w]; i != SESSION_NIL; i = t->sessions[i].wheel_next)
                fn(ctx, &t->sessions[i]);
    }
    munmap(t->sessions, t->map_len);
    free(t);
}

struct session *session_lookup(struct session_table *t, const struct addr *client,
                               const struct addr *endpoint)
{
    uint32_t i = (uint32_t)key_hash(t, client, endpoint) & t->hmask;
    for (;;) {
        uint32_t v = t->hash[i];
        if (v == EMPTY)
            return NULL;
        struct session *s = &t->sessions[v - 1];
        if (addr_eq(&s->client, client) && addr_eq(&s->endpoint, endpoint))
            return s;
        i = (i + 1) & t->hmask;
    }
}

static uint64_t timeout_of(const struct session_table *t, const struct session *s)
{
    return s->is_confirmed ? t->timeout_ns : t->unconfirmed_ns;
}

/* Puts idx at the head of the wheel slot of its deadline (rounded up to a whole second so
 * it never fires early), or the farthest slot when the deadline is beyond the wheel's span.
 * The slot lists are doubly linked so a session can leave its slot in O(1). */
static void arm(struct session_table *t, uint32_t idx)
{
    struct session *s = &t->sessions[idx];
    uint64_t deadline = s->last_seen_ns + timeout_of(t, s);
    uint64_t sec = (deadline + SLOT_NS - 1) / SLOT_NS;
    if (sec <= t->wheel_sec)
        sec = t->wheel_sec + 1;
    if (sec > t->wheel_sec + WHEEL_SLOTS - 1)
        sec = t->wheel_sec + WHEEL_SLOTS - 1;
    uint32_t slot = (uint32_t)(sec % WHEEL_SLOTS);
    uint32_t head = t->wheel[slot];
    s->wheel_next = head;
    s->wheel_prev = SESSION_NIL;
    s->wheel_slot = (uint8_t)slot;
    if (head != SESSION_NIL)
        t->sessions[head].wheel_prev = idx;
    t->wheel[slot] = idx;
}

bool session_table_is_full(const struct session_table *t)
{
    return t->n_free == 0 && t->next_unused == t->cap;
}

struct session *session_insert(struct session_table *t, const struct addr *client,
                               const struct addr *endpoint, uint64_t now_ns)
{
    uint32_t idx;
    if (t->n_free)
        idx = t->free_list[--t->n_free];
    else if (t->next_unused < t->cap)
        idx = t->next_unused++;
    else
        return NULL;
    struct session *s = &t->sessions[idx];
    memset(s, 0, sizeof(*s));
    s->client = *client;
    s->endpoint = *endpoint;
    s->fd = -1;
    s->created_ns = now_ns;
    s->last_seen_ns = now_ns;
    s->tx_tail = SESSION_NIL;
    s->is_confirmed = t->unconfirmed_ns == 0; /* no separate timeout: all are confirmed */
    uint32_t i = (uint32_t)key_hash(t, client, endpoint) & t->hmask;
    while (t->hash[i] != EMPTY)
        i = (i + 1) & t->hmask;
    t->hash[i] = idx + 1;
    t->count++;
    arm(t, idx);
    return s;
}

void session_remove(struct session_table *t, struct session *s)
{
    uint32_t idx = session_index(t, s);
    if (s->wheel_prev != SESSION_NIL)
        t->sessions[s->wheel_prev].wheel_next = s->wheel_next;
    else
        t->wheel[s->wheel_slot] = s->wheel_next;
    if (s->wheel_next != SESSION_NIL)
        t->sessions[s->wheel_next].wheel_prev = s->wheel_prev;
    release(t, idx);
}

uint32_t session_index(const struct session_table *t, const struct session *s)
{
    return (uint32_t)(s - t->sessions);
}

struct session *session_at(struct session_table *t, uint32_t idx)
{
    return idx < t->cap ? &t->sessions[idx] : NULL;
}

uint32_t session_expire(struct session_table *t, uint64_t now_ns, session_fn fn, void *ctx)
{
    uint64_t now_sec = now_ns / SLOT_NS;
    uint32_t removed = 0;
    if (t->count == 0) {
        t->wheel_sec = now_sec > t->wheel_sec ? now_sec : t->wheel_sec;
        return 0;
    }
    /* after a long stall, one pass over every slot is enough */
    if (now_sec > t->wheel_sec + WHEEL_SLOTS)
        t->wheel_sec = now_sec - WHEEL_SLOTS;
    while (t->wheel_sec < now_sec) {
        t->wheel_sec++;
        uint32_t slot = (uint32_t)(t->wheel_sec % WHEEL_SLOTS);
        uint32_t idx = t->wheel[slot];
        t->wheel[slot] = SESSION_NIL;
        while (idx != SESSION_NIL) {
            struct session *s = &t->sessions[idx];
            uint32_t next = s->wheel_next;
            if (s->last_seen_ns <= now_ns && now_ns - s->last_seen_ns >= timeout_of(t, s)) {
                if (fn)
                    fn(ctx, s);
                release(t, idx);
                removed++;
            } else {
                arm(t, idx); /* seen since it was armed: wait for its new deadline */
            }
            idx = next;
        }
    }
    return removed;
}

uint32_t session_count(const struct session_table *t)
{
    return t->count;
}

uint32_t session_capacity(const struct session_table *t)
{
    return t->cap;
}
