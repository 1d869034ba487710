/* The running configuration as one immutable object: the config, the flattened endpoint
 * list the data path uses, the interned metadata keys and the built filter chain. Workers
 * read the current snapshot without locks (liburcu QSBR); the control thread publishes a
 * new one with one pointer exchange and frees the old one after a grace period.
 * Lives in proxy/ rather than config/ because it owns a filter chain (config <- filters). */
#ifndef QK_PROXY_SNAPSHOT_H
#define QK_PROXY_SNAPSHOT_H

#include "filters/chain.h"
#include "filters/filter.h"
#include "filters/metadata.h"

#include <stdint.h>

struct config;
struct err;

/* Owns everything reachable from it. Nothing long-lived may point into it: sessions copy
 * the endpoint address they need. */
struct snapshot {
    struct config *cfg;
    struct endpoint *eps; /* union of all groups, group order, address order inside */
    uint32_t n_eps;
    uint32_t n_unresolved; /* endpoints whose DNS name did not resolve (addr.family 0) */
    struct token_index *tokens; /* quilkin.dev token -> endpoint indices */
    struct keytab keys;
    struct chain chain;
    uint64_t generation; /* set by snapshot_publish: 1, 2, ... */
};

/* Builds a snapshot from cfg: resolves DNS names (blocking: control thread only), builds the
 * chain with per-worker state for n_workers. With prev (the current snapshot, or NULL), every
 * filter whose entry is unchanged is shared with prev instead of rebuilt, keeping its state
 * (chain_build_from). The caller must be the only thread publishing snapshots, so prev stays
 * alive during the call. On success takes ownership of cfg and returns 0; on failure returns
 * -EINVAL/-ENOMEM with e set, and cfg still belongs to the caller. */
int snapshot_create(struct config *cfg, unsigned n_workers, const struct snapshot *prev,
                    struct snapshot **out, struct err *e);

/* Frees s and everything it owns. NULL is a no-op. Only once no reader can see it. */
void snapshot_destroy(struct snapshot *s);

/* Makes s current (taking ownership), waits for every worker to pass a quiescent state,
 * then destroys the previous snapshot. Control thread only; must not be an online reader.
 * Passing NULL retires the current snapshot (used at shutdown). */
void snapshot_publish(struct snapshot *s);

/* Waits until every worker has passed a quiescent state, so nothing a worker read before
 * the call (another RCU-published pointer, e.g. the ASN database) is still in use. Control
 * thread only; must not be an online reader. */
void snapshot_wait_readers(void);

/* The current snapshot, or NULL before the first publish. Worker threads call it while
 * online (between rcu_thread_online and their next quiescent state) and keep using the
 * pointer only until then. */
struct snapshot *snapshot_current(void);

/* Reader side (worker threads), wrapping liburcu QSBR: register once per thread; report a
 * quiescent state after every batch (no snapshot pointer is held across it); go offline
 * around blocking waits so grace periods do not wait for an idle worker. Under
 * ThreadSanitizer these also tell it that the grace period orders the readers' last use
 * before the writer's free, which it cannot see through liburcu's own barriers. */
void snapshot_reader_register(void);
void snapshot_reader_unregister(void);
void snapshot_reader_quiescent(void);
void snapshot_reader_offline(void);
void snapshot_reader_online(void);

#endif
