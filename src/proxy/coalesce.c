/* The coalescing controller (see coalesce.h): rate and flow counting per interval, the
 * on/off decision and its back-off. */
#include "proxy/coalesce.h"

#include <string.h>

void coalesce_init(struct coalesce *c, uint64_t window_ns, uint64_t now_ns)
{
    memset(c, 0, sizeof(*c));
    c->window_ns = window_ns;
    c->interval_start_ns = now_ns;
}

static void switch_off(struct coalesce *c, uint64_t now_ns, bool failed)
{
    c->active = false;
    c->deactivations++;
    if (failed) {
        c->backoff_ns = c->backoff_ns ? c->backoff_ns * 2 : COALESCE_BACKOFF_MIN_NS;
        if (c->backoff_ns > COALESCE_BACKOFF_MAX_NS)
            c->backoff_ns = COALESCE_BACKOFF_MAX_NS;
        c->retry_ns = now_ns + c->backoff_ns;
    }
    c->interval_start_ns = now_ns;
    c->interval_dgrams = 0;
    c->flows = 0;
}

uint64_t coalesce_after_turn(struct coalesce *c, uint64_t now_ns)
{
    uint32_t turn = c->turn;
    c->turn = 0;
    if (!c->window_ns)
        return 0;
    if (c->active) {
        if (turn == 0) { /* nothing came during a whole window: the load is gone */
            switch_off(c, now_ns, false);
            return 0;
        }
        c->window_dgrams += turn;
        if (++c->windows >= COALESCE_CHECK_WINDOWS) {
            bool pays = c->window_dgrams >= (uint64_t)COALESCE_MIN_DGRAMS * c->windows;
            c->windows = 0;
            c->window_dgrams = 0;
            if (!pays) {
                switch_off(c, now_ns, true);
                return 0;
            }
            c->backoff_ns = 0; /* it works: the next failure starts the back-off afresh */
        }
        return turn >= COALESCE_FULL_TURN ? 0 : c->window_ns;
    }
    c->interval_dgrams += turn;
    uint64_t elapsed = now_ns - c->interval_start_ns;
    if (elapsed < COALESCE_INTERVAL_NS)
        return 0;
    /* datagrams a window would have gathered at the interval's rate */
    uint64_t per_window = c->interval_dgrams * c->window_ns / elapsed;
    unsigned flows = (unsigned)__builtin_popcountll(c->flows);
    c->interval_start_ns = now_ns;
    c->interval_dgrams = 0;
    c->flows = 0;
    if (per_window < COALESCE_MIN_DGRAMS || flows < COALESCE_MIN_FLOWS || now_ns < c->retry_ns)
        return 0;
    c->active = true;
    c->activations++;
    c->windows = 0;
    c->window_dgrams = 0;
    return c->window_ns;
}
