/* Snapshot build, publish and retire. Building allocates and may block on DNS (control
 * thread); readers only dereference one RCU-protected pointer. */
#include "proxy/snapshot.h"

#include "base/err.h"
#include "base/log.h"
#include "config/config.h"
#include "filters/token_index.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-qsbr.h>

static struct snapshot *current_snapshot;

#if defined(__SANITIZE_THREAD__)
#define QK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define QK_TSAN 1
#endif
#endif

#ifdef QK_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char grace_token; /* the address TSan uses for the reader -> writer edge */
#define GRACE_RELEASE() __tsan_release(&grace_token)
#define GRACE_ACQUIRE() __tsan_acquire(&grace_token)
#else
#define GRACE_RELEASE() ((void)0)
#define GRACE_ACQUIRE() ((void)0)
#endif
static uint64_t generation_counter;

/* Resolves a DNS name once. spec proxy.md §7: prefer an IPv6 answer, else IPv4.
 * Deviation: names are resolved when a snapshot is built, not per packet, so the data
 * path never blocks on the resolver; a name that fails to resolve leaves the endpoint
 * unresolved (its packets are dropped and counted). */
static void resolve(const char *host, uint16_t port, struct addr *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    memset(out, 0, sizeof(*out));
    if (rc != 0) {
        LOG_WARN("config", "cannot resolve endpoint %s: %s", host, gai_strerror(rc));
        return;
    }
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET6) {
            pick = ai;
            break;
        }
        if (ai->ai_family == AF_INET && !pick)
            pick = ai;
    }
    if (pick && addr_from_sockaddr(out, pick->ai_addr, pick->ai_addrlen))
        out->port = port;
    else
        memset(out, 0, sizeof(*out));
    freeaddrinfo(res);
}

int snapshot_create(struct config *cfg, unsigned n_workers, const struct snapshot *prev,
                    struct snapshot **out, struct err *e)
{
    struct snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return err_set(e, "out of memory building the configuration snapshot"), -ENOMEM;
    size_t n = config_endpoint_count(cfg);
    if (n > UINT32_MAX / 2) {
        free(s);
        return err_set(e, "too many endpoints (%zu)", n);
    }
    if (n) {
        s->eps = calloc(n, sizeof(*s->eps));
        if (!s->eps) {
            free(s);
            return err_set(e, "out of memory building the endpoint list"), -ENOMEM;
        }
    }
    for (size_t g = 0; g < cfg->n_groups; g++) {
        const struct cluster_group *grp = &cfg->groups[g];
        for (size_t i = 0; i < grp->n_endpoints; i++) {
            const struct endpoint_cfg *ec = &grp->endpoints[i];
            struct endpoint *ep = &s->eps[s->n_eps++];
            ep->cfg = ec;
            if (ec->host)
                resolve(ec->host, ec->addr.port, &ep->addr);
            else
                ep->addr = ec->addr;
            if (ep->addr.family == 0)
                s->n_unresolved++;
        }
    }
    int rc = token_index_build(s->eps, s->n_eps, &s->tokens);
    if (rc < 0) {
        free(s->eps);
        free(s);
        return err_set(e, "out of memory building the token index"), -ENOMEM;
    }
    /* Filters kept from prev keep the metadata key ids they interned: start from prev's
     * table. Only then, so a chain rebuilt from scratch also drops keys no longer used. */
    const struct chain *prev_chain = prev ? &prev->chain : NULL;
    if (chain_count_reusable(cfg->filters, cfg->n_filters, prev_chain) == 0)
        prev_chain = NULL;
    if (prev_chain && keytab_copy(&s->keys, &prev->keys) < 0) {
        token_index_destroy(s->tokens);
        keytab_deinit(&s->keys);
        free(s->eps);
        free(s);
        return err_set(e, "out of memory building the configuration snapshot"), -ENOMEM;
    }
    struct filter_build b = {.keys = &s->keys, .n_workers = n_workers};
    rc = chain_build_from(&s->chain, cfg->filters, cfg->n_filters, &b, prev_chain, e);
    if (rc < 0) {
        token_index_destroy(s->tokens);
        keytab_deinit(&s->keys);
        free(s->eps);
        free(s);
        return rc;
    }
    s->cfg = cfg;
    *out = s;
    return 0;
}

void snapshot_destroy(struct snapshot *s)
{
    if (!s)
        return;
    chain_deinit(&s->chain);
    token_index_destroy(s->tokens);
    keytab_deinit(&s->keys);
    free(s->eps);
    config_destroy(s->cfg);
    free(s);
}

void snapshot_publish(struct snapshot *s)
{
    if (s)
        s->generation = ++generation_counter;
    /* C11 release/acquire rather than rcu_xchg_pointer/rcu_dereference: the same code on
       x86 and arm64, and visible to ThreadSanitizer (liburcu's asm barriers are not) */
    struct snapshot *old = __atomic_exchange_n(&current_snapshot, s, __ATOMIC_ACQ_REL);
    if (old) {
        synchronize_rcu();
        GRACE_ACQUIRE();
        snapshot_destroy(old);
    }
}

void snapshot_wait_readers(void)
{
    synchronize_rcu();
    GRACE_ACQUIRE();
}

struct snapshot *snapshot_current(void)
{
    return __atomic_load_n(&current_snapshot, __ATOMIC_ACQUIRE);
}

void snapshot_reader_register(void)
{
    rcu_register_thread();
}

void snapshot_reader_unregister(void)
{
    GRACE_RELEASE();
    rcu_unregister_thread();
}

void snapshot_reader_quiescent(void)
{
    GRACE_RELEASE();
    rcu_quiescent_state();
}

void snapshot_reader_offline(void)
{
    GRACE_RELEASE();
    rcu_thread_offline();
}

void snapshot_reader_online(void)
{
    rcu_thread_online();
}
