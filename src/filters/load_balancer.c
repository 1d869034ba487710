/* LoadBalancer (spec filters.md §8): narrows the read endpoint list to exactly one element,
 * chosen round robin, at random or by a hash of the client address. One round-robin counter
 * for the whole instance (all clients, all workers), per-worker generator state; write is a
 * no-op. */
#include "base/clock.h"
#include "base/err.h"
#include "config/node.h"
#include "filters/filter.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum lb_policy {
    LB_ROUND_ROBIN = 0,
    LB_RANDOM,
    LB_HASH,
};

static const char *const policy_names[] = {"ROUND_ROBIN", "RANDOM", "HASH"};

/* Filled by from_yaml; read-only afterwards. */
struct lb_args {
    enum lb_policy policy;
};

/* Fixed seed: HASH must give the same endpoint for a client across restarts (spec §8). */
#define LB_HASH_SEED 0x51a7c0de5eedull

/* Worker w's slot of f->per_worker (one cache line, written only by worker w). */
struct lb_worker {
    uint64_t rng; /* xorshift64* state, never 0 */
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct lb_worker) == 64, "one cache line per worker slot");

/* f->state: spec §8's ONE round-robin sequence per filter instance, shared by every client
 * and every worker. A relaxed atomic add per ROUND_ROBIN packet: the line moves between the
 * cores that use this filter, which costs far less than a lock, and only this policy pays. */
struct lb_state {
    _Atomic uint64_t rr;
} __attribute__((aligned(64)));

static int lb_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct lb_args *a = args;
    int rc = node_check_map(n, NULL, 0, e); /* `{}` is valid; unknown keys ignored (§1.2) */
    if (rc < 0)
        return rc;
    a->policy = LB_ROUND_ROBIN;
    const struct node *p = node_map_get(n, "policy");
    if (p && p->kind != NODE_NULL) {
        int v;
        if ((rc = node_get_enum(p, policy_names, 3, &v, e)) < 0)
            return rc;
        a->policy = (enum lb_policy)v;
    }
    return 0;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int lb_create(struct filter *f, const struct filter_build *b, struct err *e)
{
    unsigned n = b->n_workers ? b->n_workers : 1;
    struct lb_worker *w = aligned_alloc(64, n * sizeof(*w));
    struct lb_state *s = aligned_alloc(64, sizeof(*s));
    if (!w || !s) {
        free(w);
        free(s);
        return err_set(e, "out of memory"), -ENOMEM;
    }
    memset(w, 0, n * sizeof(*w));
    atomic_init(&s->rr, 0);
    f->state = s;
    /* RANDOM only needs distinct, unpredictable-enough streams: seed from the clocks */
    uint64_t seed = clock_mono_ns() ^ (clock_unix_ns() << 17) ^ (uint64_t)(uintptr_t)w;
    for (unsigned i = 0; i < n; i++) {
        w[i].rng = splitmix64(&seed);
        if (w[i].rng == 0)
            w[i].rng = 0x9e3779b97f4a7c15ull;
    }
    f->per_worker = w;
    return 0;
}

static void lb_destroy(struct filter *f)
{
    free(f->per_worker);
    free(f->state);
    f->per_worker = NULL;
    f->state = NULL;
}

static uint64_t xorshift64star(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static enum verdict lb_read(const struct filter *f, struct pkt_ctx *c)
{
    const struct lb_args *a = f->args;
    struct lb_worker *w = &((struct lb_worker *)f->per_worker)[c->worker];
    uint32_t n = c->eps.n;
    uint64_t pick;
    switch (a->policy) {
    case LB_RANDOM:
        /* multiply-shift maps the top 32 random bits onto [0, n) without a division */
        pick = ((xorshift64star(&w->rng) >> 32) * n) >> 32;
        break;
    case LB_HASH:
        pick = n ? addr_hash(&c->src, LB_HASH_SEED) % n : 0;
        break;
    case LB_ROUND_ROBIN:
    default: {
        /* every packet counts, as in v0.7.0, empty list included */
        struct lb_state *s = f->state;
        uint64_t rr = atomic_fetch_add_explicit(&s->rr, 1, memory_order_relaxed);
        pick = n ? rr % n : 0;
        break;
    }
    }
    if (n == 0)
        return VERDICT_PASS; /* spec §8: an empty list stays empty (v0.7.0 crashed) */
    /* map through the current selection (an earlier filter may have narrowed it) */
    c->one_ep = c->eps.idx ? c->eps.idx[pick] : (uint32_t)pick;
    c->eps.idx = &c->one_ep;
    c->eps.n = 1;
    return VERDICT_PASS;
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char lb_schema[] =
    "description: Sends each packet to one endpoint chosen by the policy.\n"
    "type: object\n"
    "properties:\n"
    "  policy:\n"
    "    enum: [ROUND_ROBIN, RANDOM, HASH, null]\n"
    "    default: ROUND_ROBIN\n";

const struct filter_ops load_balancer_filter = {
    .name = "quilkin.filters.load_balancer.v1alpha1.LoadBalancer",
    .args_size = sizeof(struct lb_args),
    .need = CFG_REQUIRED,
    .schema = lb_schema,
    .from_yaml = lb_from_yaml,
    .create = lb_create,
    .read = lb_read,
    .destroy = lb_destroy,
};
