/* The io_uring backend of the worker loop (see worker_impl.h): the rings' set-up, and a loop
 * that turns completions into the batches the shared steps of worker.c process. */
#include "proxy/worker_impl.h"

#include "base/clock.h"
#include "base/err.h"
#include "net/uring.h"
#include "proxy/geo.h"
#include "proxy/session.h"
#include "proxy/snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The rings, the descriptor generations, and the game socket's receive and the QCMP socket's
 * poll queued (submitted by the thread's first wait). The epoll set is built either way, so
 * the thread can still fall back to it. */
bool worker_uring_setup(struct worker *w, bool required, struct err *e)
{
    struct err ue = {0};
    w->ring = uring_create(URING_BUFS, MAX_DGRAM, SOCK_RXQ_CMSG_SPACE, TX_CAP, &ue);
    if (w->ring) {
        w->fd_gen = calloc(w->fd_map_len, sizeof(*w->fd_gen)); /* zero pages until touched */
        w->game_armed = w->fd_gen &&
                        uring_recv(w->ring, w->game_fd, tag_make(TAG_GAME, 0, w->game_fd)) == 0;
        w->qcmp_armed = w->qcmp_fd < 0 ||
                        uring_poll(w->ring, w->qcmp_fd, tag_make(TAG_QCMP, 0, w->qcmp_fd)) == 0;
        if (w->game_armed && w->qcmp_armed)
            return true;
        err_set(&ue, "io_uring: out of memory");
        uring_destroy(w->ring);
        w->ring = NULL;
        free(w->fd_gen);
        w->fd_gen = NULL;
    }
    if (required) {
        err_set(e, "--io-backend io-uring: %s", ue.msg);
        return false;
    }
    if (w->index == 0)
        LOG_INFO("proxy", "io_uring is not available (%s): the workers use epoll", ue.msg);
    return true;
}

/* A datagram into a batch slot (m, its payload buffer and its control buffer), as recvmmsg
 * would have written it; the caller gives the buffer back. */
static void take_datagram(const struct uring_event *ev, struct mmsghdr *m, void *payload,
                          uint8_t *cmsg)
{
    uint32_t len = ev->len < MAX_DGRAM ? ev->len : MAX_DGRAM;
    memcpy(payload, ev->payload, len);
    m->msg_len = ev->truncated ? MAX_DGRAM : len;
    m->msg_hdr.msg_flags = ev->truncated ? MSG_TRUNC : 0;
    m->msg_hdr.msg_controllen =
        ev->controllen < SOCK_RXQ_CMSG_SPACE ? ev->controllen : SOCK_RXQ_CMSG_SPACE;
    if (m->msg_hdr.msg_controllen)
        memcpy(cmsg, ev->control, m->msg_hdr.msg_controllen);
}

/* A game datagram into receive slot i, with its source address. */
static void take_game(struct worker *w, const struct uring_event *ev, unsigned i)
{
    struct mmsghdr *m = &w->rx_msgs[i];
    take_datagram(ev, m, w->rx_iov[i].iov_base, w->rx_cmsg[i]);
    m->msg_hdr.msg_namelen =
        ev->namelen < sizeof(w->rx_from[i]) ? ev->namelen : (socklen_t)sizeof(w->rx_from[i]);
    memcpy(&w->rx_from[i], ev->name, m->msg_hdr.msg_namelen);
}

/* io_uring: a completion of a session socket's receive. Stale ones (the session ended, or
 * its descriptor was reused since) are dropped like datagrams to a pooled socket. */
static void take_upstream(struct worker *w, const struct snapshot *snap,
                          const struct uring_event *ev)
{
    int fd = (int)(uint32_t)ev->tag;
    uint32_t gen = (uint32_t)(ev->tag >> 32) & TAG_GEN_MASK;
    bool is_current = (uint32_t)fd < w->fd_map_len && (w->fd_gen[fd] & TAG_GEN_MASK) == gen;
    uint32_t idx = is_current ? w->fd_map[fd] : 0;
    struct session *s = idx ? session_at(w->sessions, idx - 1) : NULL;
    if (!s || s->fd != fd) {
        uring_release(w->ring, ev);
        return;
    }
    if (ev->has_data) {
        if (w->n_rep == RX_BATCH)
            worker_flush_replies(w);
        unsigned i = w->n_rep;
        take_datagram(ev, &w->rep_rx[i], w->rep_rx_iov[i].iov_base, w->rep_cmsg[i]);
        uring_release(w->ring, ev);
        worker_take_replies(w, snap, s, 1, w->now_ns); /* the turn's clock reading */
    } else if (ev->res < 0 && ev->res != -ENOBUFS && ev->res != -ECANCELED) {
        worker_count_upstream_error(w, s, -ev->res); /* e.g. ICMP port unreachable */
    }
    /* a multishot receive ends on an error or when the buffers ran out: arm it again. A
       socket that cannot be armed would never see a reply again: the session ends, and the
       client's next datagram opens a new one */
    if (!ev->more && ev->res != -ECANCELED &&
        uring_recv(w->ring, fd, tag_make(TAG_UPSTREAM, ++w->fd_gen[fd], fd)) < 0) {
        uint64_t suppressed;
        if (log_ratelimit_ok(&w->rl_arm, w->now_ns, &suppressed))
            LOG_WARN("proxy", "worker %u: cannot re-arm a session socket's receive; the "
                     "session is closed (%lu more)", w->index, (unsigned long)suppressed);
        worker_close_session(w, s);
        session_remove(w->sessions, s);
    }
}

/* Arms what lost its request (the queue was full): the game socket's receive and the QCMP
 * poll. Without them the worker would stop hearing its clients, so it retries every turn. */
static void rearm_listeners(struct worker *w)
{
    if (!w->game_armed)
        w->game_armed = uring_recv(w->ring, w->game_fd, tag_make(TAG_GAME, 0, w->game_fd)) == 0;
    if (!w->qcmp_armed && w->qcmp_fd >= 0)
        w->qcmp_armed = uring_poll(w->ring, w->qcmp_fd, tag_make(TAG_QCMP, 0, w->qcmp_fd)) == 0;
    uint64_t suppressed;
    if ((!w->game_armed || (!w->qcmp_armed && w->qcmp_fd >= 0)) &&
        log_ratelimit_ok(&w->rl_arm, w->now_ns, &suppressed))
        LOG_WARN("proxy", "worker %u: cannot queue the %s socket's receive; retrying (%lu more)",
                 w->index, w->game_armed ? "QCMP" : "game", (unsigned long)suppressed);
}

/* One system call per turn: it submits the turn's re-arms and cancellations and waits for
 * completions (sends go in one more call per batch, see flush_upstream). */
void worker_uring_loop(struct worker *w)
{
    struct uring_event ev;
    uint64_t window = 0;
    while (!atomic_load_explicit(&w->control->stopping, memory_order_relaxed)) {
        snapshot_reader_offline();
        /* coalescing: the kernel wakes the worker after the window, or as soon as a full
           turn's worth of completions is waiting (DEFER_TASKRUN counts them for us) */
        int rc = window ? uring_wait(w->ring, COALESCE_FULL_TURN, window)
                        : uring_wait(w->ring, 1, TICK_MS * 1000000ull);
        snapshot_reader_online();
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            uint64_t suppressed;
            if (log_ratelimit_ok(&w->rl_game_recv, clock_mono_ns(), &suppressed))
                LOG_WARN("proxy", "worker %u: io_uring wait: %s", w->index, strerror(-rc));
        }
        const struct snapshot *snap = snapshot_current();
        w->now_ns = clock_mono_ns();
        w->now_unix_ns = clock_unix_ns();
        unsigned n_game = 0;
        while (uring_next(w->ring, &ev)) {
            unsigned kind = (unsigned)(ev.tag >> 62);
            if (kind == TAG_UPSTREAM) {
                take_upstream(w, snap, &ev);
                continue;
            }
            if (kind == TAG_QCMP) { /* a one-shot poll: QCMP keeps its recvmmsg path */
                if (ev.res >= 0)
                    worker_handle_qcmp(w);
                w->qcmp_armed = uring_poll(w->ring, w->qcmp_fd, ev.tag) == 0;
                continue;
            }
            if (ev.has_data) {
                take_game(w, &ev, n_game++);
                uring_release(w->ring, &ev);
                if (n_game == RX_BATCH) {
                    worker_process_game_batch(w, snap, n_game);
                    n_game = 0;
                }
            } else if (ev.res < 0 && ev.res != -ENOBUFS && ev.res != -ECANCELED) {
                worker_game_recv_error(w, -ev.res);
            }
            if (!ev.more)
                w->game_armed = uring_recv(w->ring, w->game_fd, ev.tag) == 0;
        }
        if (n_game)
            worker_process_game_batch(w, snap, n_game);
        if (!w->game_armed || !w->qcmp_armed)
            rearm_listeners(w);
        worker_end_turn(w);
        window = worker_coalesce_turn(w);
    }
}
