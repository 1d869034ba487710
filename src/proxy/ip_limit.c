/* Count-min sketch of sessions per source address; see ip_limit.h. */
#include "proxy/ip_limit.h"

#include "net/addr.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define ROW_BITS 16
#define ROW_SIZE (1u << ROW_BITS)

struct ip_limit {
    uint32_t cap;
    uint64_t seed[2];
    _Atomic uint32_t rows[2][ROW_SIZE];
};

struct ip_limit *ip_limit_create(uint32_t cap, uint64_t seed)
{
    struct ip_limit *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->cap = cap;
    l->seed[0] = seed;
    l->seed[1] = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    return l;
}

void ip_limit_destroy(struct ip_limit *l)
{
    free(l);
}

/* The address that counts: the IP only (any port), IPv6 cut to its /64. */
static void key_of(const struct addr *client, struct addr *k)
{
    memset(k, 0, sizeof(*k));
    k->family = client->family;
    memcpy(k->ip, client->ip, client->family == AF_INET ? 4 : 8);
}

static void slots(const struct ip_limit *l, const struct addr *client, uint32_t out[2])
{
    struct addr k;
    key_of(client, &k);
    for (int r = 0; r < 2; r++)
        out[r] = (uint32_t)addr_hash(&k, l->seed[r]) & (ROW_SIZE - 1);
}

bool ip_limit_acquire(struct ip_limit *l, const struct addr *client)
{
    if (!l || l->cap == 0)
        return true;
    uint32_t s[2];
    slots(l, client, s);
    uint32_t a = atomic_fetch_add_explicit(&l->rows[0][s[0]], 1, memory_order_relaxed);
    uint32_t b = atomic_fetch_add_explicit(&l->rows[1][s[1]], 1, memory_order_relaxed);
    if ((a < b ? a : b) < l->cap)
        return true;
    atomic_fetch_sub_explicit(&l->rows[0][s[0]], 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&l->rows[1][s[1]], 1, memory_order_relaxed);
    return false;
}

void ip_limit_release(struct ip_limit *l, const struct addr *client)
{
    if (!l || l->cap == 0)
        return;
    uint32_t s[2];
    slots(l, client, s);
    atomic_fetch_sub_explicit(&l->rows[0][s[0]], 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&l->rows[1][s[1]], 1, memory_order_relaxed);
}
