/* GCRA rate limits for QCMP replies; see ratelimit.h. */
#include "qcmp/ratelimit.h"

#include "net/addr.h"

#include <stdlib.h>
#include <string.h>

#define SETS 2048 /* x 2 ways: 4,096 sources tracked per worker, 128 KiB */
#define BURST 2   /* a source may send BURST x its per-second rate at once */

struct slot {
    struct addr key; /* family 0: empty */
    uint64_t tat_ns; /* theoretical arrival time of the next conforming ping */
};

/* GCRA parameters for one limit: emission interval and burst tolerance. */
struct gcra {
    uint64_t interval_ns; /* 0: unlimited */
    uint64_t tolerance_ns;
};

struct qcmp_ratelimit {
    struct gcra source, global;
    uint64_t global_tat_ns;
    uint64_t seed;
    struct slot slots[SETS][2];
};

static struct gcra gcra_of(uint32_t rate, unsigned burst)
{
    struct gcra g = {0, 0};
    if (rate) {
        g.interval_ns = 1000000000ull / rate;
        if (g.interval_ns == 0)
            g.interval_ns = 1;
        g.tolerance_ns = g.interval_ns * (burst * rate - 1);
    }
    return g;
}

struct qcmp_ratelimit *qcmp_ratelimit_create(uint32_t source_rate, uint32_t global_rate,
                                             uint64_t seed)
{
    struct qcmp_ratelimit *rl = calloc(1, sizeof(*rl));
    if (!rl)
        return NULL;
    rl->source = gcra_of(source_rate, BURST);
    rl->global = gcra_of(global_rate, 1);
    rl->seed = seed;
    return rl;
}

void qcmp_ratelimit_destroy(struct qcmp_ratelimit *rl)
{
    free(rl);
}

/* Conforming: now is not earlier than tat - tolerance. Then tat moves one interval on. */
static bool gcra_take(const struct gcra *g, uint64_t *tat, uint64_t now_ns)
{
    if (!g->interval_ns)
        return true;
    uint64_t t = *tat > now_ns ? *tat : now_ns;
    if (t - now_ns > g->tolerance_ns)
        return false;
    *tat = t + g->interval_ns;
    return true;
}

static bool gcra_would_take(const struct gcra *g, uint64_t tat, uint64_t now_ns)
{
    return !g->interval_ns || tat <= now_ns || tat - now_ns <= g->tolerance_ns;
}

enum qcmp_verdict qcmp_ratelimit_check(struct qcmp_ratelimit *rl, const struct addr *src,
                                       uint64_t now_ns)
{
    if (!gcra_would_take(&rl->global, rl->global_tat_ns, now_ns))
        return QCMP_LIMIT_GLOBAL;
    if (rl->source.interval_ns) {
        struct addr k;
        memset(&k, 0, sizeof(k));
        k.family = src->family;
        memcpy(k.ip, src->ip, src->family == AF_INET ? 4 : 8); /* IPv6: the /64 */
        struct slot *set = rl->slots[addr_hash(&k, rl->seed) & (SETS - 1)];
        struct slot *s = addr_eq(&set[0].key, &k) ? &set[0]
                         : addr_eq(&set[1].key, &k) ? &set[1]
                         : NULL;
        if (!s) {
            /* a new source: take the empty or the older slot; it starts with a full burst */
            s = set[0].key.family == 0 || set[0].tat_ns <= set[1].tat_ns ? &set[0] : &set[1];
            s->key = k;
            s->tat_ns = 0;
        }
        if (!gcra_take(&rl->source, &s->tat_ns, now_ns))
            return QCMP_LIMIT_SOURCE;
    }
    gcra_take(&rl->global, &rl->global_tat_ns, now_ns);
    return QCMP_ALLOW;
}
