/* Per-source-IP session cap (extension, issue 9), shared by every worker: a count-min sketch
 * of live sessions per client IP (IPv6 by /64, what one subscriber usually holds), two rows
 * of atomic counters indexed by two keyed hashes. Fixed memory, no lock, no allocation; the
 * counts only ever overestimate, so a rare collision can refuse a session early but never
 * lets an address past its cap. Touched only when a session is created or removed, never
 * per packet. */
#ifndef QK_PROXY_IP_LIMIT_H
#define QK_PROXY_IP_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct addr;
struct ip_limit;

/* cap: most sessions per address (0: no limit, and every call below is a no-op). NULL on
 * OOM. Control thread, before the workers start. */
struct ip_limit *ip_limit_create(uint32_t cap, uint64_t seed);
void ip_limit_destroy(struct ip_limit *l);

/* Takes one session for client's address: false (nothing taken) when it already holds cap.
 * Any thread. */
bool ip_limit_acquire(struct ip_limit *l, const struct addr *client);

/* Gives back what ip_limit_acquire took. Any thread. */
void ip_limit_release(struct ip_limit *l, const struct addr *client);

#endif
