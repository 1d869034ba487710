/* bench_loadgen: drives UDP traffic at an echo target (bench_echo, directly or through the
 * proxy) and prints one machine-readable RESULT line: round-trip latency percentiles,
 * sustainable echoed packets/s with a bounded in-flight window per session, or loss and RTT
 * percentiles at a fixed offered rate (paced). It asserts nothing; every loop is bounded by a
 * count and by a hard wall-clock deadline. */

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#define BATCH_CAP 64
#define DGRAM_MAX 65507
#define SESSIONS_MAX 4096
#define PKT_MAGIC 0x716b6c67u /* "qklg" */
#define PROBE_SESSION 0xffffffffu
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define RX_BATCHES_PER_WAKE 8 /* recvmmsg rounds per readable socket per poll */
#define LAT_GIVE_UP_LOSSES 25 /* latency: this many losses in a row means the target is gone */
#define PACED_EVENTS 256      /* epoll events per wake in paced mode */
#define HIST_SUB_BITS 6       /* paced RTT histogram: 64 log-linear buckets per power of 2 */
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

/* Every datagram starts with this header (host byte order: only we read it back); the rest
 * of the payload up to --size is filler. */
struct pkt_hdr {
    uint32_t magic;
    uint32_t session;
    uint64_t seq;
    uint64_t send_ns; /* CLOCK_MONOTONIC */
};
#define HDR_LEN sizeof(struct pkt_hdr)
_Static_assert(sizeof(struct pkt_hdr) == 24, "header is 24 bytes on the wire");

enum mode { MODE_LATENCY = 0, MODE_THROUGHPUT, MODE_PROBE, MODE_PACED };

/* Parsed command line; owned by main()'s stack. */
struct opts {
    const char *target;
    enum mode mode;
    size_t size;
    unsigned sessions;
    double duration_s;
    unsigned long samples;
    unsigned long warmup;     /* latency: samples thrown away first */
    unsigned long warmup_ms;  /* throughput: traffic before the measured interval */
    unsigned window;          /* throughput: packets in flight per session */
    unsigned max_inflight;    /* throughput: cap over all sessions */
    unsigned long timeout_ms; /* latency: per-packet wait; probe: whole wait */
    unsigned long stall_ms;   /* throughput: give up on a window after this silence */
    double deadline_s;        /* hard wall-clock cap; 0 = derived from the mode */
    bool is_spin;             /* latency: busy-poll the reply instead of sleeping in ppoll */
    unsigned long rate;       /* paced: datagrams per second over all sessions */
    unsigned long drain_ms;   /* paced: how long to wait for stragglers after the last send */
    unsigned long late_us;    /* paced: a send this far behind its slot counts as late */
    unsigned long max_lag_ms; /* paced: slots further behind than this are skipped, not sent */
    bool has_warmup_ms;       /* --warmup-ms given (paced defaults it differently) */
};

/* One client socket (one source port) and its window, for throughput mode. */
struct session {
    int fd;
    uint64_t next_seq;    /* next sequence number to send */
    uint64_t acked;       /* every seq below this is answered or written off */
    uint64_t progress_ns; /* last time the window moved; drives the stall timeout */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_loadgen --target HOST:PORT --mode latency|throughput|paced|probe\n"
            "         [--size N] [--sessions S] [--duration SECS] [--samples N]\n"
            "         [--warmup N] [--warmup-ms MS] [--window W] [--max-inflight T]\n"
            "         [--timeout-ms MS] [--stall-ms MS] [--deadline SECS] [--spin 0|1]\n"
            "         [--rate PPS] [--drain-ms MS] [--late-us US] [--max-lag-ms MS]\n"
            "  latency:    1 socket, one datagram at a time; RTT p50/p99/p99.9 over --samples\n"
            "              after --warmup (default 1000); a reply later than --timeout-ms\n"
            "              (default 200) is lost; --spin 1 busy-polls for the reply\n"
            "  throughput: --sessions sockets (default 1) for --duration secs (default 3)\n"
            "              after --warmup-ms (default 300), each keeping min(--window (32),\n"
            "              --max-inflight (256) / S) datagrams in flight; prints echoed pps\n"
            "  paced:      --sessions sockets; slot k of an even schedule at --rate (default\n"
            "              20000) datagrams/s goes to session k %% S at t0 + k/rate; after\n"
            "              --warmup-ms (default 1000) it prints `MARK start`, measures for\n"
            "              --duration secs, prints `MARK end`, waits up to --drain-ms (default\n"
            "              1000) for stragglers; RTT p50/p99/p99.9, loss, sends later than\n"
            "              --late-us (default 200) and slots skipped because the sender fell\n"
            "              more than --max-lag-ms (default 2) behind\n"
            "  probe:      send until one datagram is echoed or --timeout-ms (default 10000)\n"
            "  --size is the datagram payload in bytes (default 64, at least %zu)\n",
            HDR_LEN);
}

static bool parse_ul(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi || s[0] == '-')
        return false;
    *out = v;
    return true;
}

static bool parse_secs(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0) || v > 3600)
        return false;
    *out = v;
    return true;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.size = 64,
                       .sessions = 1,
                       .duration_s = 3,
                       .samples = 10000,
                       .warmup = 1000,
                       .warmup_ms = 300,
                       .window = 32,
                       .max_inflight = 256,
                       .stall_ms = 50,
                       .rate = 20000,
                       .drain_ms = 1000,
                       .late_us = 200,
                       .max_lag_ms = 2};
    bool has_mode = false, has_timeout = false;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        unsigned long u;
        if (!strcmp(k, "--target")) {
            o->target = v;
        } else if (!strcmp(k, "--mode")) {
            has_mode = true;
            if (!strcmp(v, "latency"))
                o->mode = MODE_LATENCY;
            else if (!strcmp(v, "throughput"))
                o->mode = MODE_THROUGHPUT;
            else if (!strcmp(v, "probe"))
                o->mode = MODE_PROBE;
            else if (!strcmp(v, "paced"))
                o->mode = MODE_PACED;
            else
                return -1;
        } else if (!strcmp(k, "--size") && parse_ul(v, HDR_LEN, DGRAM_MAX, &u)) {
            o->size = u;
        } else if (!strcmp(k, "--sessions") && parse_ul(v, 1, SESSIONS_MAX, &u)) {
            o->sessions = (unsigned)u;
        } else if (!strcmp(k, "--duration") && parse_secs(v, &o->duration_s)) {
        } else if (!strcmp(k, "--samples") && parse_ul(v, 1, 100000000, &u)) {
            o->samples = u;
        } else if (!strcmp(k, "--warmup") && parse_ul(v, 0, 100000000, &u)) {
            o->warmup = u;
        } else if (!strcmp(k, "--warmup-ms") && parse_ul(v, 0, 600000, &u)) {
            o->warmup_ms = u;
            o->has_warmup_ms = true;
        } else if (!strcmp(k, "--window") && parse_ul(v, 1, 4096, &u)) {
            o->window = (unsigned)u;
        } else if (!strcmp(k, "--max-inflight") && parse_ul(v, 1, 1u << 20, &u)) {
            o->max_inflight = (unsigned)u;
        } else if (!strcmp(k, "--timeout-ms") && parse_ul(v, 1, 3600000, &u)) {
            o->timeout_ms = u;
            has_timeout = true;
        } else if (!strcmp(k, "--stall-ms") && parse_ul(v, 1, 60000, &u)) {
            o->stall_ms = u;
        } else if (!strcmp(k, "--spin") && parse_ul(v, 0, 1, &u)) {
            o->is_spin = u;
        } else if (!strcmp(k, "--deadline") && parse_secs(v, &o->deadline_s)) {
        } else if (!strcmp(k, "--rate") && parse_ul(v, 1, 10000000, &u)) {
            o->rate = u;
        } else if (!strcmp(k, "--drain-ms") && parse_ul(v, 0, 60000, &u)) {
            o->drain_ms = u;
        } else if (!strcmp(k, "--late-us") && parse_ul(v, 1, 10000000, &u)) {
            o->late_us = u;
        } else if (!strcmp(k, "--max-lag-ms") && parse_ul(v, 1, 60000, &u)) {
            o->max_lag_ms = u;
        } else {
            return -1;
        }
    }
    if (!o->target || !has_mode)
        return -1;
    if (!has_timeout)
        o->timeout_ms = o->mode == MODE_PROBE ? 10000 : 200;
    if (o->mode == MODE_PACED && !o->has_warmup_ms)
        o->warmup_ms = 1000;
    return 0;
}

/* Resolves "host:port" or "[v6]:port" into *ss. Returns 0 or -1 with a message printed. */
static int resolve(const char *target, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target || (size_t)(colon - target) >= sizeof(host)) {
        fprintf(stderr, "bench_loadgen: bad --target %s (want HOST:PORT)\n", target);
        return -1;
    }
    size_t hlen = (size_t)(colon - target);
    memcpy(host, target, hlen);
    host[hlen] = '\0';
    char *h = host;
    if (h[0] == '[' && hlen > 2 && h[hlen - 1] == ']') {
        h[hlen - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int e = getaddrinfo(h, colon + 1, &hints, &res);
    if (e) {
        fprintf(stderr, "bench_loadgen: resolve %s: %s\n", target, gai_strerror(e));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* A connected client socket on an ephemeral port: the kernel then delivers only the
 * target's replies to it, and each socket is a distinct proxy session. */
static int open_client(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        perror("bench_loadgen: socket");
        return -1;
    }
    int v = 1 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) == -1)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) == -1)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    if (connect(fd, (const struct sockaddr *)ss, len) == -1) {
        perror("bench_loadgen: connect");
        close(fd);
        return -1;
    }
    return fd;
}

static void put_hdr(uint8_t *buf, uint32_t session, uint64_t seq, uint64_t t_ns)
{
    struct pkt_hdr h = {.magic = PKT_MAGIC, .session = session, .seq = seq, .send_ns = t_ns};
    memcpy(buf, &h, sizeof(h));
}

static bool get_hdr(const uint8_t *buf, size_t len, struct pkt_hdr *h)
{
    if (len < HDR_LEN)
        return false;
    memcpy(h, buf, sizeof(*h));
    return h->magic == PKT_MAGIC;
}

/* Waits for fd to become readable, at most until deadline_ns. Returns true if readable.
 * With is_spin it never sleeps: it polls with a zero timeout until then. */
static bool wait_readable(int fd, uint64_t deadline_ns, bool is_spin)
{
    uint64_t t = now_ns();
    if (t >= deadline_ns)
        return false;
    if (is_spin) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        for (; t < deadline_ns; t = now_ns())
            if (poll(&p, 1, 0) > 0)
                return true;
        return false;
    }
    uint64_t left = deadline_ns - t;
    struct timespec ts = {.tv_sec = (time_t)(left / NS_PER_S), .tv_nsec = (long)(left % NS_PER_S)};
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return ppoll(&p, 1, &ts, NULL) > 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), in microseconds. */
static double pct_us(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(p * (double)n);
    if (rank < 1)
        rank = 1;
    return (double)v[rank - 1] / 1000.0;
}

/* Sends seq on fd and waits for its echo until timeout. Returns the RTT in ns, or 0 if lost.
 * Stale echoes of earlier (lost) packets are skipped. */
static uint64_t one_rtt(int fd, uint8_t *tx, uint8_t *rx, size_t size, uint64_t seq,
                        uint64_t timeout_ns, uint64_t hard_ns, bool is_spin)
{
    uint64_t t0 = now_ns();
    put_hdr(tx, 0, seq, t0);
    if (send(fd, tx, size, 0) == -1)
        return 0; /* e.g. ECONNREFUSED left over from an ICMP error: counts as lost */
    uint64_t until = t0 + timeout_ns < hard_ns ? t0 + timeout_ns : hard_ns;
    /* Bounded in time by `until`: each pass either receives or waits for the remainder. */
    while (wait_readable(fd, until, is_spin)) {
        ssize_t n;
        while ((n = recv(fd, rx, DGRAM_MAX, MSG_DONTWAIT)) >= 0) {
            uint64_t t1 = now_ns();
            struct pkt_hdr h;
            if (get_hdr(rx, (size_t)n, &h) && h.session == 0 && h.seq == seq)
                return t1 - h.send_ns > 0 ? t1 - h.send_ns : 1;
        }
    }
    return 0;
}

static int run_latency(const struct opts *o, const struct sockaddr_storage *ss, socklen_t len)
{
    uint64_t start = now_ns();
    double dl = o->deadline_s > 0 ? o->deadline_s : 60;
    uint64_t hard_ns = start + (uint64_t)(dl * (double)NS_PER_S);
    uint64_t timeout_ns = o->timeout_ms * NS_PER_MS;
    int fd = open_client(ss, len);
    if (fd == -1)
        return 1;
    uint64_t *rtts = malloc(o->samples * sizeof(*rtts));
    uint8_t *tx = calloc(1, o->size);
    uint8_t *rx = malloc(DGRAM_MAX);
    if (!rtts || !tx || !rx) {
        fprintf(stderr, "bench_loadgen: out of memory\n");
        close(fd);
        free(rtts);
        free(tx);
        free(rx);
        return 1;
    }
    memset(tx + HDR_LEN, 0xab, o->size - HDR_LEN);
    unsigned long n_ok = 0, lost = 0, sent = 0, warm_lost = 0;
    uint64_t seq = 0;
    unsigned lost_in_row = 0;
    bool is_partial = false;
    for (unsigned long i = 0; i < o->warmup + o->samples; i++) {
        if (now_ns() >= hard_ns || lost_in_row >= LAT_GIVE_UP_LOSSES) {
            is_partial = true;
            break;
        }
        uint64_t rtt = one_rtt(fd, tx, rx, o->size, seq++, timeout_ns, hard_ns, o->is_spin);
        lost_in_row = rtt ? 0 : lost_in_row + 1;
        if (i < o->warmup) {
            warm_lost += rtt == 0;
            continue;
        }
        sent++;
        if (rtt)
            rtts[n_ok++] = rtt;
        else
            lost++;
    }
    qsort(rtts, n_ok, sizeof(*rtts), cmp_u64);
    double sum = 0;
    for (unsigned long i = 0; i < n_ok; i++)
        sum += (double)rtts[i];
    printf("RESULT mode=latency size=%zu samples=%lu sent=%lu lost=%lu warmup=%lu warmup_lost=%lu "
           "min_us=%.1f mean_us=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "
           "spin=%d partial=%d\n",
           o->size, n_ok, sent, lost, o->warmup, warm_lost, n_ok ? (double)rtts[0] / 1000.0 : 0.0,
           n_ok ? sum / (double)n_ok / 1000.0 : 0.0, pct_us(rtts, n_ok, 0.50),
           pct_us(rtts, n_ok, 0.99), pct_us(rtts, n_ok, 0.999),
           n_ok ? (double)rtts[n_ok - 1] / 1000.0 : 0.0, o->is_spin, is_partial);
    fflush(stdout);
    close(fd);
    free(rtts);
    free(tx);
    free(rx);
    return 0;
}

static int run_probe(const struct opts *o, const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = open_client(ss, len);
    if (fd == -1)
        return 1;
    /* same shape as the measured packets (header + 0xab filler up to --size), so a filter
     * chain that routes on the payload (bench/capture_token_router.yaml) passes probes too */
    uint8_t *tx = calloc(1, o->size), *rx = malloc(DGRAM_MAX);
    if (!tx || !rx) {
        free(tx);
        free(rx);
        close(fd);
        return 1;
    }
    memset(tx + HDR_LEN, 0xab, o->size - HDR_LEN);
    uint64_t start = now_ns(), until = start + o->timeout_ms * NS_PER_MS;
    int ok = 0;
    /* One probe per 100 ms: the target may not be bound yet (ECONNREFUSED) or may still be
     * setting up its upstream; a late echo of an older probe counts as success too. */
    for (uint64_t seq = 0; !ok && now_ns() < until && seq < 1000000; seq++) {
        uint64_t t = now_ns();
        put_hdr(tx, PROBE_SESSION, seq, t);
        (void)send(fd, tx, o->size, 0);
        uint64_t next = t + 100 * NS_PER_MS < until ? t + 100 * NS_PER_MS : until;
        while (!ok && wait_readable(fd, next, false)) {
            ssize_t n = 0;
            while (!ok && (n = recv(fd, rx, DGRAM_MAX, MSG_DONTWAIT)) >= 0) {
                struct pkt_hdr h;
                ok = get_hdr(rx, (size_t)n, &h) && h.session == PROBE_SESSION;
            }
            if (!ok && n == -1 && errno != EAGAIN && errno != EWOULDBLOCK)
                break; /* ECONNREFUSED and the like: wait for the next probe slot */
        }
        if (!ok) {
            uint64_t t2 = now_ns();
            if (t2 < next) {
                struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(next - t2)};
                nanosleep(&ts, NULL);
            }
        }
    }
    printf("RESULT mode=probe ok=%d ms=%.1f\n", ok, (double)(now_ns() - start) / 1e6);
    close(fd);
    free(rx);
    free(tx);
    return ok ? 0 : 1;
}

/* Batch arrays for throughput mode, allocated once. */
struct batch {
    struct mmsghdr msgs[BATCH_CAP];
    struct iovec iovs[BATCH_CAP];
    uint8_t *bufs; /* BATCH_CAP * buf_len */
    size_t buf_len;
};

/* Counters for throughput mode. */
struct tp_stats {
    uint64_t sent, received, meas_received, stalls, written_off, errors;
};

/* Tops the session's window up with one sendmmsg. */
static void refill(struct session *s, uint32_t idx, unsigned window, struct batch *tx, size_t size,
                   uint64_t t, struct tp_stats *st)
{
    uint64_t inflight = s->next_seq - s->acked;
    if (inflight >= window)
        return;
    unsigned want = window - (unsigned)inflight;
    if (want > BATCH_CAP)
        want = BATCH_CAP;
    for (unsigned i = 0; i < want; i++) {
        put_hdr(tx->bufs + (size_t)i * tx->buf_len, idx, s->next_seq + i, t);
        tx->iovs[i].iov_len = size;
    }
    int r = sendmmsg(s->fd, tx->msgs, want, MSG_DONTWAIT);
    if (r > 0) {
        if (inflight == 0)
            s->progress_ns = t;
        s->next_seq += (unsigned)r;
        st->sent += (unsigned)r;
    } else if (r == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        st->errors++; /* ECONNREFUSED from an ICMP error; the next send normally works */
    }
}

/* One non-blocking recvmmsg of up to BATCH_CAP datagrams into rx. Returns how many were
 * read; 0 when none (or on an error, which is counted in *errors). */
static int recv_batch(int fd, struct batch *rx, uint64_t *errors)
{
    for (unsigned i = 0; i < BATCH_CAP; i++)
        rx->iovs[i].iov_len = rx->buf_len;
    int n = recvmmsg(fd, rx->msgs, BATCH_CAP, MSG_DONTWAIT, NULL);
    if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        (*errors)++;
    return n > 0 ? n : 0;
}

/* Reads up to RX_BATCHES_PER_WAKE batches from the session; advances its window. */
static void drain_rx(struct session *s, uint32_t idx, struct batch *rx, bool is_measuring,
                     struct tp_stats *st)
{
    for (unsigned b = 0; b < RX_BATCHES_PER_WAKE; b++) {
        int n = recv_batch(s->fd, rx, &st->errors);
        if (n == 0)
            return;
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            struct pkt_hdr h;
            if (!get_hdr(rx->bufs + (size_t)i * rx->buf_len, rx->msgs[i].msg_len, &h) ||
                h.session != idx)
                continue;
            st->received++;
            st->meas_received += is_measuring;
            /* Loopback keeps a flow in order, so an echo of seq releases every earlier slot:
             * a loss below it frees its window slot instead of leaking it. */
            if (h.seq >= s->acked && h.seq < s->next_seq) {
                s->acked = h.seq + 1;
                s->progress_ns = t;
            }
        }
        if (n < BATCH_CAP)
            return;
    }
}

static int alloc_batch(struct batch *b, size_t buf_len)
{
    b->buf_len = buf_len;
    b->bufs = calloc(BATCH_CAP, buf_len);
    if (!b->bufs)
        return -1;
    for (unsigned i = 0; i < BATCH_CAP; i++) {
        b->iovs[i] = (struct iovec){.iov_base = b->bufs + (size_t)i * buf_len, .iov_len = buf_len};
        memset(&b->msgs[i], 0, sizeof(b->msgs[i]));
        b->msgs[i].msg_hdr.msg_iov = &b->iovs[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

static int run_throughput(const struct opts *o, const struct sockaddr_storage *ss, socklen_t len)
{
    unsigned window = o->max_inflight / o->sessions;
    if (window > o->window)
        window = o->window;
    if (window < 1)
        window = 1;
    struct session *sess = calloc(o->sessions, sizeof(*sess));
    struct pollfd *pfds = calloc(o->sessions, sizeof(*pfds));
    struct batch tx = {0}, rx = {0};
    int rc = 1;
    unsigned n_open = 0;
    if (!sess || !pfds || alloc_batch(&tx, o->size) || alloc_batch(&rx, DGRAM_MAX)) {
        fprintf(stderr, "bench_loadgen: out of memory\n");
        goto out;
    }
    for (unsigned i = 0; i < BATCH_CAP; i++)
        memset(tx.bufs + (size_t)i * tx.buf_len + HDR_LEN, 0xab, o->size - HDR_LEN);
    for (; n_open < o->sessions; n_open++) {
        sess[n_open].fd = open_client(ss, len);
        if (sess[n_open].fd == -1)
            goto out;
        pfds[n_open] = (struct pollfd){.fd = sess[n_open].fd, .events = POLLIN};
    }

    uint64_t t0 = now_ns();
    uint64_t meas_start = t0 + o->warmup_ms * NS_PER_MS;
    uint64_t meas_end = meas_start + (uint64_t)(o->duration_s * (double)NS_PER_S);
    uint64_t drain_end = meas_end + 200 * NS_PER_MS;
    double dl =
        o->deadline_s > 0 ? o->deadline_s : (double)o->warmup_ms / 1000.0 + o->duration_s + 5.0;
    uint64_t hard_ns = t0 + (uint64_t)(dl * (double)NS_PER_S);
    uint64_t stall_ns = o->stall_ms * NS_PER_MS;
    struct tp_stats st = {0};
    bool has_started = false;
    uint64_t t = t0;
    bool is_partial = false;
    /* Bounded by drain_end and hard_ns; each pass does at most one sendmmsg and
     * RX_BATCHES_PER_WAKE recvmmsg per session. */
    while (t < drain_end) {
        if (t >= hard_ns) {
            is_partial = true;
            break;
        }
        bool is_sending = t < meas_end;
        bool is_measuring = t >= meas_start && t < meas_end;
        if (is_measuring && !has_started) {
            has_started = true;
            meas_start = t;
        }
        if (is_sending)
            for (unsigned i = 0; i < o->sessions; i++)
                refill(&sess[i], i, window, &tx, o->size, t, &st);
        int r = poll(pfds, o->sessions, 1);
        t = now_ns();
        if (r > 0)
            for (unsigned i = 0; i < o->sessions; i++)
                if (pfds[i].revents)
                    drain_rx(&sess[i], i, &rx, is_measuring && t < meas_end, &st);
        bool is_idle = true;
        for (unsigned i = 0; i < o->sessions; i++) {
            struct session *s = &sess[i];
            if (s->next_seq == s->acked)
                continue;
            is_idle = false;
            /* progress_ns may be a little after t (drain_rx reads the clock again). */
            if (t > s->progress_ns && t - s->progress_ns > stall_ns) {
                /* The whole window went silent: write it off so the session can go on. */
                st.stalls++;
                st.written_off += s->next_seq - s->acked;
                s->acked = s->next_seq;
            }
        }
        if (!is_sending && is_idle)
            break;
    }
    uint64_t meas_ns = (t < meas_end ? t : meas_end) - meas_start;
    if (!has_started || t <= meas_start)
        meas_ns = 0;
    double secs = (double)meas_ns / 1e9;
    double pps = secs > 0 ? (double)st.meas_received / secs : 0;
    uint64_t lost = st.sent > st.received ? st.sent - st.received : 0;
    printf("RESULT mode=throughput size=%zu sessions=%u window=%u secs=%.2f pps=%.0f "
           "mbps=%.1f sent=%llu received=%llu lost=%llu loss_pct=%.3f stalls=%llu "
           "errors=%llu partial=%d\n",
           o->size, o->sessions, window, secs, pps, pps * (double)o->size * 8 / 1e6,
           (unsigned long long)st.sent, (unsigned long long)st.received, (unsigned long long)lost,
           st.sent ? 100.0 * (double)lost / (double)st.sent : 0.0, (unsigned long long)st.stalls,
           (unsigned long long)st.errors, is_partial);
    fflush(stdout);
    rc = 0;
out:
    for (unsigned i = 0; i < n_open; i++)
        close(sess[i].fd);
    free(sess);
    free(pfds);
    free(tx.bufs);
    free(rx.bufs);
    return rc;
}

/* Paced-mode RTT histogram, log-linear in ns: exact below HIST_SUB ns, then HIST_SUB buckets
 * per power of two, so a percentile is within 1/HIST_SUB (1.6 %) of the true value, in
 * bounded memory (~30 KiB) whatever the run length. Owned by run_paced(). */
struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t count, min_ns, max_ns;
};

static void hist_add(struct hist *h, uint64_t ns)
{
    unsigned b;
    if (ns < HIST_SUB) {
        b = (unsigned)ns;
    } else {
        unsigned p = 63 - (unsigned)__builtin_clzll(ns); /* ns in [2^p, 2^(p+1)) */
        unsigned shift = p - HIST_SUB_BITS;
        b = (p - HIST_SUB_BITS + 1) * HIST_SUB + (unsigned)((ns >> shift) - HIST_SUB);
    }
    h->n[b]++;
    if (h->count == 0 || ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
    h->count++;
}

/* Upper bound (ns, exclusive) of bucket b. */
static uint64_t hist_upper_ns(unsigned b)
{
    if (b < HIST_SUB)
        return b + 1;
    unsigned p = b / HIST_SUB + HIST_SUB_BITS - 1, sub = b % HIST_SUB;
    return (uint64_t)(HIST_SUB + sub + 1) << (p - HIST_SUB_BITS);
}

/* Nearest-rank percentile in us: the upper bound of the bucket holding that rank, capped by
 * the largest value seen. */
static double hist_pct_us(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->count), acc = 0;
    if (want == 0)
        want = 1;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        acc += h->n[b];
        if (acc >= want) {
            uint64_t ns = hist_upper_ns(b);
            return (double)(ns < h->max_ns ? ns : h->max_ns) / 1000.0;
        }
    }
    return (double)h->max_ns / 1000.0;
}

/* One paced client socket; seq counts what it has sent. */
struct paced_session {
    int fd;
    uint64_t next_seq;
};

/* Paced-mode counters. sent/received/late/skipped cover only the measured window
 * (datagrams sent after `MARK start`); warm_* the warm-up before it. */
struct paced_stats {
    uint64_t sent, received, late, skipped, errors, stray;
    uint64_t warm_sent, warm_received;
};

/* The schedule: slot k is due at t0 + k / rate, computed without overflowing 64 bits. */
static uint64_t slot_ns(uint64_t t0, uint64_t k, uint64_t rate)
{
    return t0 + (k / rate) * NS_PER_S + (k % rate) * NS_PER_S / rate;
}

/* Waits up to timeout_ns for readable sockets. Returns the number of events (0 on timeout or
 * EINTR). epoll_pwait2 takes a ns timeout; before Linux 5.11 ppoll on the epoll fd does. */
static int wait_events(int ep, struct epoll_event *evs, uint64_t timeout_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / NS_PER_S),
                          .tv_nsec = (long)(timeout_ns % NS_PER_S)};
    int n = epoll_pwait2(ep, evs, PACED_EVENTS, &ts, NULL);
    if (n == -1 && errno == ENOSYS) {
        struct pollfd p = {.fd = ep, .events = POLLIN};
        if (ppoll(&p, 1, &ts, NULL) <= 0)
            return 0;
        n = epoll_wait(ep, evs, PACED_EVENTS, 0);
    }
    return n > 0 ? n : 0;
}

/* Reads what session idx has queued (a bounded number of batches) and accounts each echo:
 * measured if it was sent after meas_start_ns, warm-up otherwise. */
static void paced_rx(struct paced_session *s, uint32_t idx, struct batch *rx,
                     uint64_t meas_start_ns, struct hist *h, struct paced_stats *st)
{
    for (unsigned b = 0; b < RX_BATCHES_PER_WAKE; b++) {
        int n = recv_batch(s->fd, rx, &st->errors);
        if (n == 0)
            return;
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            struct pkt_hdr hd;
            if (!get_hdr(rx->bufs + (size_t)i * rx->buf_len, rx->msgs[i].msg_len, &hd) ||
                hd.session != idx || hd.seq >= s->next_seq || hd.send_ns > t) {
                st->stray++;
                continue;
            }
            if (hd.send_ns >= meas_start_ns) {
                st->received++;
                hist_add(h, t - hd.send_ns);
            } else {
                st->warm_received++;
            }
        }
        if (n < BATCH_CAP)
            return;
    }
}

/* Sends slot k's datagram on its session, stamped with the actual send time. */
static void paced_send(struct paced_session *s, uint32_t idx, uint8_t *tx, size_t size,
                       bool is_measuring, uint64_t due_ns, uint64_t late_ns, struct paced_stats *st)
{
    uint64_t t = now_ns();
    put_hdr(tx, idx, s->next_seq, t);
    if (send(s->fd, tx, size, 0) == -1) {
        st->errors++; /* EAGAIN (full buffer) or an ICMP error: the slot is not sent */
        return;
    }
    s->next_seq++;
    if (!is_measuring) {
        st->warm_sent++;
        return;
    }
    st->sent++;
    st->late += t - due_ns > late_ns;
}

static int run_paced(const struct opts *o, const struct sockaddr_storage *ss, socklen_t len)
{
    /* At 20,000/s the slots are 50 us apart; the default 50 us timer slack would move every
     * wake-up by up to a slot. */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    struct paced_session *sess = calloc(o->sessions, sizeof(*sess));
    struct epoll_event *evs = calloc(PACED_EVENTS, sizeof(*evs));
    struct hist *h = calloc(1, sizeof(*h));
    uint8_t *tx = calloc(1, o->size);
    struct batch rx = {0};
    struct paced_stats st = {0};
    int rc = 1, ep = -1;
    unsigned n_open = 0;
    if (!sess || !evs || !h || !tx || alloc_batch(&rx, DGRAM_MAX)) {
        fprintf(stderr, "bench_loadgen: out of memory\n");
        goto out;
    }
    memset(tx + HDR_LEN, 0xab, o->size - HDR_LEN);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep == -1) {
        perror("bench_loadgen: epoll_create1");
        goto out;
    }
    for (; n_open < o->sessions; n_open++) {
        sess[n_open].fd = open_client(ss, len);
        if (sess[n_open].fd == -1)
            goto out;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = n_open};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, sess[n_open].fd, &ev) == -1) {
            perror("bench_loadgen: epoll_ctl");
            close(sess[n_open].fd);
            goto out;
        }
    }

    uint64_t warm_slots = o->warmup_ms * o->rate / 1000;
    uint64_t meas_slots = (uint64_t)(o->duration_s * (double)o->rate);
    if (meas_slots == 0)
        meas_slots = 1;
    uint64_t end_slot = warm_slots + meas_slots;
    uint64_t late_ns = o->late_us * 1000, max_lag_ns = o->max_lag_ms * NS_PER_MS;
    uint64_t t0 = now_ns() + NS_PER_MS;
    double dl = o->deadline_s > 0
                    ? o->deadline_s
                    : (double)(o->warmup_ms + o->drain_ms) / 1000.0 + o->duration_s + 10.0;
    uint64_t hard_ns = t0 + (uint64_t)(dl * (double)NS_PER_S);
    uint64_t meas_start_ns = UINT64_MAX, meas_end_ns = 0, drain_end_ns = 0;
    uint64_t k = 0;
    bool is_partial = false;
    /* Bounded by hard_ns; each pass sends the due slots (at most end_slot in all) and reads
     * at most PACED_EVENTS sockets. */
    for (;;) {
        uint64_t t = now_ns();
        if (t >= hard_ns) {
            is_partial = true;
            break;
        }
        for (; k < end_slot; k++) {
            if (k >= warm_slots && meas_start_ns == UINT64_MAX) {
                printf("MARK start\n");
                fflush(stdout);
                meas_start_ns = now_ns();
            }
            uint64_t due = slot_ns(t0, k, o->rate);
            if (due > t)
                break;
            if (t - due > max_lag_ns) {
                /* Fell too far behind (the host did not run us): skip the slot rather than
                 * send a burst that the offered rate never asked for. */
                st.skipped += k >= warm_slots;
                continue;
            }
            paced_send(&sess[k % o->sessions], (uint32_t)(k % o->sessions), tx, o->size,
                       k >= warm_slots, due, late_ns, &st);
        }
        if (k >= end_slot && meas_end_ns == 0) {
            meas_end_ns = now_ns();
            drain_end_ns = meas_end_ns + o->drain_ms * NS_PER_MS;
            printf("MARK end\n");
            fflush(stdout);
        }
        if (meas_end_ns && (st.received >= st.sent || t >= drain_end_ns))
            break;
        uint64_t wake = k < end_slot ? slot_ns(t0, k, o->rate) : drain_end_ns;
        t = now_ns();
        int n = wait_events(ep, evs, wake > t ? wake - t : 0);
        for (int i = 0; i < n; i++) {
            uint32_t idx = evs[i].data.u32;
            paced_rx(&sess[idx], idx, &rx, meas_start_ns, h, &st);
        }
    }
    double secs = meas_end_ns > meas_start_ns && meas_start_ns != UINT64_MAX
                      ? (double)(meas_end_ns - meas_start_ns) / 1e9
                      : 0;
    uint64_t lost = st.sent > st.received ? st.sent - st.received : 0;
    printf("RESULT mode=paced size=%zu rate=%lu sessions=%u secs=%.3f sent=%llu received=%llu "
           "lost=%llu loss_pct=%.3f late=%llu late_us=%lu skipped=%llu sent_pps=%.0f "
           "min_us=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f warmup_sent=%llu "
           "warmup_received=%llu stray=%llu errors=%llu partial=%d\n",
           o->size, o->rate, o->sessions, secs, (unsigned long long)st.sent,
           (unsigned long long)st.received, (unsigned long long)lost,
           st.sent ? 100.0 * (double)lost / (double)st.sent : 0.0, (unsigned long long)st.late,
           o->late_us, (unsigned long long)st.skipped, secs > 0 ? (double)st.sent / secs : 0.0,
           (double)h->min_ns / 1000.0, hist_pct_us(h, 0.50), hist_pct_us(h, 0.99),
           hist_pct_us(h, 0.999), (double)h->max_ns / 1000.0, (unsigned long long)st.warm_sent,
           (unsigned long long)st.warm_received, (unsigned long long)st.stray,
           (unsigned long long)st.errors, is_partial);
    fflush(stdout);
    rc = 0;
out:
    for (unsigned i = 0; i < n_open; i++)
        close(sess[i].fd);
    if (ep != -1)
        close(ep);
    free(sess);
    free(evs);
    free(h);
    free(tx);
    free(rx.bufs);
    return rc;
}

/* Paced mode with 1,000 sessions needs 1,000+ descriptors: take the whole hard limit. */
static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &r);
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_opts(argc, argv, &o)) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(o.target, &ss, &len))
        return 1;
    switch (o.mode) {
    case MODE_LATENCY:
        return run_latency(&o, &ss, len);
    case MODE_THROUGHPUT:
        return run_throughput(&o, &ss, len);
    case MODE_PROBE:
        return run_probe(&o, &ss, len);
    case MODE_PACED:
        return run_paced(&o, &ss, len);
    }
    return 2;
}
