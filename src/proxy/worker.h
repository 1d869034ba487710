/* A proxy worker: one thread that owns one SO_REUSEPORT game socket, an epoll set, a
 * session table with the sessions' upstream sockets, batch buffers, a scratch arena and a
 * stats shard. Packets go recvmmsg -> filter chain -> sessions -> sendmmsg; replies come
 * back on the session sockets, run the write chain and leave from the game socket. */
#ifndef QK_PROXY_WORKER_H
#define QK_PROXY_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct err;
struct geo_source;
struct geo_stats;
struct ip_limit;

enum drop_reason {
    DROP_NO_ENDPOINTS = 0, /* read: the snapshot has no endpoint */
    DROP_FILTER_READ,      /* read: a filter dropped the packet */
    DROP_FILTER_WRITE,     /* write: a filter dropped the packet */
    DROP_SESSION_LIMIT,    /* read: the session table is full */
    DROP_UPSTREAM_SOCKET,  /* read: no upstream socket could be set up (e.g. open files) */
    DROP_NO_LOCAL_PORT,    /* read: the host has no free ephemeral port for a new session */
    DROP_IP_SESSION_LIMIT, /* read: the client's address holds --max-sessions-per-ip */
    DROP_ENDPOINTS_DRAINING, /* read: a new client, and every selected endpoint is draining */
    DROP_UNRESOLVED,       /* read: the endpoint's DNS name did not resolve */
    DROP_SEND_UPSTREAM,    /* read: sendmmsg to the endpoint failed */
    DROP_SEND_DOWNSTREAM,  /* write: sendmmsg to the client failed */
    DROP_DRAINING,         /* write: shutting down, replies are no longer relayed */
    DROP_REASON_COUNT,
};

/* Static text of a drop reason (spec proxy.md §10 where it has one). */
const char *drop_reason_text(enum drop_reason r);

/* Receive errors on session sockets, by cause (spec proxy.md §6: `display` is the OS
 * error text). ICMP errors from the endpoint are the common ones. */
enum upstream_error {
    UPSTREAM_ERR_REFUSED = 0, /* ECONNREFUSED: port unreachable */
    UPSTREAM_ERR_HOST,        /* EHOSTUNREACH */
    UPSTREAM_ERR_NET,         /* ENETUNREACH */
    UPSTREAM_ERR_OTHER,
    UPSTREAM_ERR_COUNT,
};

/* The `display` text of a cause, as Rust's io::Error prints it ("Connection refused (os
 * error 111)"). */
const char *upstream_error_text(enum upstream_error e);

/* Sockets whose kernel receive-queue drops are counted (SO_RXQ_OVFL). */
enum sock_kind {
    SOCK_GAME = 0, /* the proxy port */
    SOCK_QCMP,
    SOCK_UPSTREAM, /* all session sockets */
    SOCK_KIND_COUNT,
};

/* Label text of a socket kind: "game", "qcmp", "upstream". */
const char *sock_kind_text(enum sock_kind k);

/* Histogram bounds (spec admin.md §4.1-§4.2). */
#define PROC_BUCKETS 13
#define SESSION_DUR_BUCKETS 9
extern const double worker_proc_bounds_s[PROC_BUCKETS];
extern const double worker_session_dur_bounds_s[SESSION_DUR_BUCKETS];

enum direction {
    DIR_READ = 0,
    DIR_WRITE,
};

/* The direction (metric label `event`) a drop reason belongs to. */
enum direction drop_reason_direction(enum drop_reason r);

/* Drop reasons reported by filters, counted per distinct text. The text is copied (a
 * filter's reason may live only as long as its snapshot). */
#define REASON_SLOTS 16
#define REASON_CAP 96
struct reason_count {
    atomic_bool used; /* set once by the worker after `text` is written */
    char text[REASON_CAP];
    uint64_t n;
};

/* One worker's counters (events of clients with an ASN label set are counted in the
 * worker's geo_stats instead: see worker_geo_stats). Written only by that worker (relaxed load + store), read by any
 * thread with relaxed loads. Padded so no two workers share a cache line. */
struct worker_stats {
    uint64_t packets_read, bytes_read;   /* client -> server, sent upstream */
    uint64_t packets_write, bytes_write; /* server -> client, received for a session */
    uint64_t drops[DROP_REASON_COUNT];
    uint64_t upstream_errors[UPSTREAM_ERR_COUNT]; /* receive errors on session sockets */
    uint64_t kernel_drops[SOCK_KIND_COUNT]; /* datagrams the kernel dropped: queue full */
    uint64_t game_recv_errors;              /* recvmmsg errors on the game socket */
    uint64_t sessions_created, sessions_expired;
    uint64_t sessions_expired_unconfirmed; /* of sessions_expired: never confirmed */
    uint64_t qcmp_pings, qcmp_replies; /* valid pings received, replies sent */
    uint64_t qcmp_invalid;             /* datagrams on the QCMP port that were not a Ping */
    uint64_t qcmp_limited_source;      /* pings not answered: their source's rate */
    uint64_t qcmp_limited_global;      /* pings not answered: the worker's total rate */
    uint64_t filter_drops_unlisted[2]; /* filter drops past REASON_SLOTS distinct reasons */
    /* per-packet processing time: each batch's time divided by its packets (one clock read
       per batch instead of two per packet) */
    uint64_t proc_counts[2][PROC_BUCKETS + 1];
    uint64_t proc_sum_ns[2];
    uint64_t session_dur_counts[SESSION_DUR_BUCKETS + 1];
    uint64_t session_dur_sum_s;
    /* everything above is plain uint64_t and summed by worker_stats_add */
    struct reason_count filter_reasons[2][REASON_SLOTS];
} __attribute__((aligned(64)));

/* worker_stats_add sums everything before filter_reasons as an array of uint64_t */
_Static_assert(offsetof(struct worker_stats, filter_reasons) % sizeof(uint64_t) == 0,
               "worker_stats: counters must be whole uint64_t words");

/* Shared by the control thread and all workers. */
struct worker_control {
    atomic_bool draining; /* stop relaying server -> client traffic */
    atomic_bool stopping; /* leave the loop and clean up */
};

/* How a worker waits for and moves datagrams (--io-backend). */
enum io_backend {
    IO_BACKEND_AUTO = 0, /* io_uring when the kernel allows it, else epoll */
    IO_BACKEND_URING,    /* io_uring or nothing: worker_create fails without it */
    IO_BACKEND_EPOLL,    /* epoll + recvmmsg/sendmmsg */
};

struct worker_opts {
    unsigned index;
    enum io_backend io;
    uint64_t coalesce_ns; /* --coalesce-us: the longest a datagram may wait to be batched */
    int game_fd; /* bound SO_REUSEPORT socket; ownership passes to the worker */
    int qcmp_fd; /* bound SO_REUSEPORT QCMP socket, or -1; ownership passes too */
    uint32_t max_sessions;
    uint64_t session_timeout_ns;
    uint64_t unconfirmed_timeout_ns; /* 0: no separate timeout for unconfirmed sessions */
    struct ip_limit *ip_limit;       /* borrowed, shared by all workers; NULL: no cap */
    uint32_t qcmp_source_rate;       /* QCMP replies/s per source address (0: no limit) */
    uint32_t qcmp_global_rate;       /* QCMP replies/s for this worker (0: no limit) */
    struct worker_control *control; /* borrowed; outlives the worker */
    const struct geo_source *geo;   /* borrowed; the ASN database (maybe none); NULL: off */
};

struct worker;

/* Allocates everything the worker will ever need (buffers, table, epoll). NULL with e set
 * on failure (the game fd is then closed). Control thread. */
struct worker *worker_create(const struct worker_opts *o, struct err *e);

/* True when the worker moves datagrams with io_uring (false: epoll). */
bool worker_uses_uring(const struct worker *w);

/* Starts the worker thread. 0 or a negative errno. */
int worker_start(struct worker *w);

/* Waits for the thread to leave after control->stopping was set. */
void worker_join(struct worker *w);

/* Closes every socket and frees everything. The thread must have been joined. NULL ok. */
void worker_destroy(struct worker *w);

/* Live sessions of this worker, as last published by it. Any thread. */
uint32_t worker_session_count(const struct worker *w);

/* Adds this worker's counters and histograms into *sum (not filter_reasons). Any thread. */
void worker_stats_add(const struct worker *w, struct worker_stats *sum);

/* The worker's labelled counters and jitter gauges (proxy/geo.h): events of clients with
 * an ASN label set are counted there instead of in worker_stats. Any thread. */
const struct geo_stats *worker_geo_stats(const struct worker *w);

/* Calls fn for each filter drop reason this worker has counted in direction dir. */
void worker_filter_reasons(const struct worker *w, enum direction dir,
                           void (*fn)(void *ctx, const char *reason, uint64_t n), void *ctx);

#endif
