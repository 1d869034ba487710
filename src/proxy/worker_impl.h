/* What the worker's two files share (worker.c: the loop, sessions and the epoll backend;
 * worker_uring.c: the io_uring backend): the worker's state and the steps both backends
 * run. Private to src/proxy/worker*.c; everything else goes through worker.h. */
#ifndef QK_PROXY_WORKER_IMPL_H
#define QK_PROXY_WORKER_IMPL_H

#include "base/arena.h"
#include "base/log.h"
#include "net/sock.h"
#include "proxy/coalesce.h"
#include "proxy/worker.h"
#include "qcmp/codec.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct err;
struct session;
struct session_table;
struct snapshot;
struct uring;

#define RX_BATCH 32      /* datagrams per recvmmsg */
#define RX_ROUNDS 8      /* recvmmsg rounds per readiness event, for fairness */
#define TX_CAP 256       /* staged upstream sends before a forced flush */
#define HEADROOM 512     /* room for filters to prepend */
#define MAX_DGRAM 65536  /* largest UDP payload plus one, to detect truncation */
#define TAILROOM 16384   /* room to append, and for Snappy's worst-case expansion */
#define BUF_CAP (HEADROOM + MAX_DGRAM + TAILROOM)
#define TICK_MS 250      /* epoll timeout: expiry runs at least this often */
#define ARENA_BYTES (64 * 1024)
#define POOL_MAX 4096 /* idle upstream sockets kept per worker for the next sessions: about
                         a second of heavy churn (sessions expire a wheel slot at a time) */
_Static_assert(SOCK_RXQ_CMSG_SPACE >= CMSG_SPACE(sizeof(uint32_t)), "room for SO_RXQ_OVFL");
#define QCMP_BUF 64 /* a valid Ping is 17 bytes; longer datagrams arrive truncated and are
                       ignored, so junk never costs more than this */
#define URING_BUFS 64 /* provided receive buffers per worker. Datagrams are copied out and
                         each buffer returned at once, so they only have to cover one turn's
                         burst; more stays in the socket queue, as with recvmmsg (64 measured
                         as fast as 256 at saturation). The ring cycles through all of them,
                         so each costs a page of RSS: 256 took 1 MiB per worker */

/* io_uring request tags: kind in the top 2 bits, a generation in the next 30 (so that the
 * last completions of a cancelled request on a reused descriptor are recognised), the fd in
 * the low 32. */
enum { TAG_GAME = 0, TAG_QCMP = 1, TAG_UPSTREAM = 2 };
#define TAG_GEN_MASK 0x3fffffffu

static inline uint64_t tag_make(unsigned kind, uint32_t gen, int fd)
{
    return (uint64_t)kind << 62 | (uint64_t)(gen & TAG_GEN_MASK) << 32 | (uint32_t)fd;
}

struct tx_entry {
    uint32_t session; /* index in the table */
    uint32_t next;    /* next staged send of the same session, or SESSION_NIL */
    uint16_t pkt;     /* the received datagram (slot of the batch) it carries */
    bool is_head;
    struct iovec iov;
};

/* What became of one received datagram of the current batch. It is counted as read (spec
 * admin.md §4.1: sent to all selected endpoints) only once its sends were flushed, and as
 * one drop however many of its sends failed, so no datagram is counted twice. */
struct rx_result {
    uint64_t bytes_ok; /* bytes the kernel accepted, summed over endpoints */
    uint16_t geo;      /* the label set of its (first) session, 0: none */
    bool passed;       /* the chain passed and every endpoint's send was staged */
    bool failed;       /* dropped and counted (a staging failure or a failed send) */
};

struct worker {
    unsigned index;
    int game_fd;
    int qcmp_fd;
    int epfd;
    pthread_t thread;
    bool started;
    struct worker_control *control;
    struct session_table *sessions;
    uint64_t timeout_ns;
    struct arena scratch;
    uint8_t *spare; /* BUF_CAP bytes lent to filters through pkt_ctx */
    uint64_t now_ns, now_unix_ns;
    bool table_full_logged;
    bool ports_exhausted_logged; /* set when connect() found no ephemeral port */
    struct log_ratelimit rl_upstream, rl_socket, rl_ip_limit;
    struct ip_limit *ip_limit; /* shared by all workers; NULL: no per-IP cap */
    const struct geo_source *geo_src; /* the ASN database; NULL: no --mmdb */
    struct geo_stats *geo;            /* owned: labelled counters and jitter */
    uint64_t last_rx_ns;              /* the previous game-socket batch (read jitter) */
    struct qcmp_ratelimit *qcmp_rl; /* owned */
    struct log_ratelimit rl_drop[DROP_REASON_COUNT]; /* debug lines about drops */

    /* client -> server: receive buffers and staged sends */
    uint8_t *rx_mem;
    struct mmsghdr rx_msgs[RX_BATCH];
    /* control data of each received datagram: SO_RXQ_OVFL counts (game, replies, QCMP) */
    uint8_t rx_cmsg[RX_BATCH][SOCK_RXQ_CMSG_SPACE] __attribute__((aligned(8)));
    uint8_t rep_cmsg[RX_BATCH][SOCK_RXQ_CMSG_SPACE] __attribute__((aligned(8)));
    uint8_t qcmp_cmsg[RX_BATCH][SOCK_RXQ_CMSG_SPACE] __attribute__((aligned(8)));
    uint32_t game_rxq_drops, qcmp_rxq_drops; /* last SO_RXQ_OVFL counts seen */
    struct log_ratelimit rl_game_recv;
    struct iovec rx_iov[RX_BATCH];
    struct sockaddr_in6 rx_from[RX_BATCH];
    unsigned rx_used, rep_used, qcmp_used; /* headers the last calls wrote back */
    struct tx_entry tx[TX_CAP];
    uint32_t n_tx;
    struct rx_result rx_res[RX_BATCH];
    uint32_t tx_of[TX_CAP]; /* flush: message k of a sendmmsg carries tx[tx_of[k]] */
    int tx_err[TX_CAP];     /* flush: errno of message k, 0 when sent */
    uint64_t tx_batch;
    struct mmsghdr tx_msgs[TX_CAP];

    /* server -> client: receive buffers and staged replies on the game socket */
    uint8_t *reply_mem;
    struct mmsghdr rep_rx[RX_BATCH];
    struct iovec rep_rx_iov[RX_BATCH];
    uint32_t n_rep;
    struct mmsghdr rep_tx[RX_BATCH];
    struct iovec rep_tx_iov[RX_BATCH];
    struct sockaddr_in6 rep_to[RX_BATCH];
    uint32_t n_rep_tx;
    uint64_t rep_start_ns; /* when the first reply of the current batch was read */

    /* QCMP: receive in place, answer from the same slot */
    uint8_t qcmp_buf[RX_BATCH][QCMP_REPLY_LEN > QCMP_BUF ? QCMP_REPLY_LEN : QCMP_BUF];
    struct mmsghdr qcmp_rx[RX_BATCH];
    struct iovec qcmp_iov[RX_BATCH];
    struct sockaddr_in6 qcmp_from[RX_BATCH];
    struct mmsghdr qcmp_tx[RX_BATCH];

    /* Upstream sockets stay in the epoll set for their whole life with the fd as event
     * data; fd_map[fd] is the session index + 1 (0: pooled or not ours). Expired sessions'
     * sockets are disconnected (their port goes back to the host) and pooled, so a new
     * session costs one connect() instead of socket+setsockopt+connect+epoll_ctl+close. */
    uint32_t *fd_map;
    uint32_t fd_map_len;
    int *pool;
    uint32_t n_pool, pool_cap;
    bool is_closing; /* worker_destroy: close sockets instead of pooling them */

    /* io_uring backend (NULL: epoll). Every socket has a multishot receive armed; fd_gen[fd]
     * is the generation of the one armed on an upstream socket. Sends of a flush go to all
     * their sockets in one system call. */
    struct uring *ring;
    uint32_t *fd_gen;
    bool send_plain; /* the ring refused a batch: sendmmsg from then on */
    bool game_armed, qcmp_armed; /* their receive / poll is queued or running */
    struct log_ratelimit rl_arm;
    int tx_fd[TX_CAP];
    struct msghdr *tx_hdr[TX_CAP];
    int tx_res[TX_CAP];

    struct coalesce co; /* --coalesce-us: when to let datagrams gather */
    struct log_ratelimit rl_coalesce;

    _Atomic uint32_t published_sessions;
    struct worker_stats stats;
};

/* Single-writer counter bump: a relaxed load and store, no locked instruction. */
static inline void stat_add(uint64_t *c, uint64_t v)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

/* Shared steps (worker.c). */

/* Adds what the kernel dropped on a socket since *last (SO_RXQ_OVFL) to kind's counter;
 * m: the newest message of a receive batch. */
void worker_count_kernel_drops(struct worker *w, const struct mmsghdr *m, uint32_t *last,
                               enum sock_kind kind);

/* Runs rx_msgs[0..n) (n > 0) through the chain, sends them, and counts them. */
void worker_process_game_batch(struct worker *w, const struct snapshot *snap, unsigned n);

/* The reply in rep_rx[i] (received on s's socket): the write chain, then staged for the
 * client. */
void worker_process_write(struct worker *w, const struct snapshot *snap, struct session *s,
                          unsigned i);

/* Counts and logs (rate-limited) a receive error on the game socket. */
void worker_game_recv_error(struct worker *w, int err);

/* The n replies just received on s's socket into rep_rx[n_rep...] at time t: kernel drops,
 * jitter, then the write chain for each (worker_process_write). */
void worker_take_replies(struct worker *w, const struct snapshot *snap, struct session *s,
                         unsigned n, uint64_t t);

/* Sends the staged replies (one sendmmsg on the game socket). */
void worker_flush_replies(struct worker *w);

/* A receive error on a session socket (err: an errno, e.g. an ICMP port unreachable). */
void worker_count_upstream_error(struct worker *w, const struct session *s, int err);

/* Answers what is queued on the QCMP socket. */
void worker_handle_qcmp(struct worker *w);

/* Closes s's socket (or pools it) and counts it as expired; the caller removes it from the
 * table (session_expire's callback, or session_remove). */
void worker_close_session(void *ctx, struct session *s);

/* After each wake-up, whatever the backend: replies out, expiry, published counts. */
void worker_end_turn(struct worker *w);

/* The coalescing window before the next turn (0: none). */
uint64_t worker_coalesce_turn(struct worker *w);

/* io_uring backend (worker_uring.c). */

/* The rings and the first receives queued; false (e set) only when io_uring was required,
 * otherwise a refusal is logged once and the worker keeps epoll (w->ring stays NULL). */
bool worker_uring_setup(struct worker *w, bool required, struct err *e);

/* The worker loop on io_uring, until control->stopping. */
void worker_uring_loop(struct worker *w);

#endif
