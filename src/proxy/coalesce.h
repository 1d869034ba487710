/* When a worker should let datagrams gather before waking for them (--coalesce-us): a
 * per-worker controller fed one count per datagram and one call per loop turn. It only
 * decides; the worker's backend does the waiting. Pure logic, no clock or system call.
 *
 * A wake-up costs as much CPU as relaying about three datagrams (on the development VM: ~10
 * µs per wake-up in a two-thread ping-pong, against 6.6 µs per proxied round trip, two
 * datagrams, at saturation in `make bench`), so at a steady load of
 * many players a worker that waits `window` after a quiet moment, then takes everything
 * queued, spends far less CPU per datagram. The window is used only when it pays:
 *   - off until the last interval's rate fills a window with several datagrams from
 *     several sessions (so one client's ping-pong, whose next datagram waits for the
 *     previous answer, never sees a window);
 *   - once on, each window must keep gathering several datagrams on average, else the
 *     window is dropped and retried only after a growing back-off (10 ms to 1 s);
 *   - an empty window (the load stopped) ends it at once; a full turn needs no window. */
#ifndef QK_PROXY_COALESCE_H
#define QK_PROXY_COALESCE_H

#include <stdbool.h>
#include <stdint.h>

#define COALESCE_MIN_DGRAMS 4   /* a window must gather at least this many on average */
#define COALESCE_MIN_FLOWS 4    /* from this many sessions, to be tried at all */
#define COALESCE_FULL_TURN 64   /* a turn this busy is batched already: no window next */
#define COALESCE_CHECK_WINDOWS 8 /* windows per verdict once on */
#define COALESCE_INTERVAL_NS 2000000ull       /* rate measured over 2 ms */
#define COALESCE_BACKOFF_MIN_NS 10000000ull   /* first retry after 10 ms */
#define COALESCE_BACKOFF_MAX_NS 1000000000ull /* at most one failed try per second */

struct coalesce {
    uint64_t window_ns; /* 0: off for good */
    bool active;
    uint32_t turn;       /* datagrams of the current turn */
    uint64_t flows;      /* sessions seen in the interval, one bit per index mod 64 */
    uint64_t interval_dgrams, interval_start_ns;
    uint32_t windows;    /* windows since the last verdict */
    uint64_t window_dgrams;
    uint64_t backoff_ns, retry_ns;
    uint64_t activations, deactivations; /* for tests and the debug log */
};

void coalesce_init(struct coalesce *c, uint64_t window_ns, uint64_t now_ns);

/* One datagram handled in this turn, for the session with index flow. */
static inline void coalesce_note(struct coalesce *c, uint32_t flow)
{
    c->turn++;
    c->flows |= 1ull << (flow & 63);
}

/* At the end of a turn: how long to let datagrams gather before the next one (0: wake for
 * the first datagram, as without coalescing). */
uint64_t coalesce_after_turn(struct coalesce *c, uint64_t now_ns);

#endif
