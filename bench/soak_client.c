/* bench_soak_client: the game-client side of the field harness (make soak, bench/soak.py).
 * Simulates thousands of UDP game clients from one process: each client has its own source
 * address in 127.0.0.0/8 (set per datagram with IP_PKTINFO on a few sockets bound to
 * 0.0.0.0), sends at its own paced rate with mixed payload sizes, and is replaced by a new
 * client (new address) at the configured churn rate. Replies are read with recvmmsg and
 * attributed to their client by the header and the destination address (IP_PKTINFO); the
 * round-trip time runs from the send to the kernel's arrival stamp (SO_TIMESTAMPNS). At the
 * end it writes one JSON report: per group sent/received/bytes, latency percentiles, a
 * per-second series, and every anomaly it saw. It asserts nothing; every loop is bounded by a
 * count and by the run's deadline. */

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/sock_diag.h>

#include "soak_wire.h"

#define SOCKS_MAX 16
#define BATCH_CAP 64
#define DGRAM_CAP 1600          /* replies are at most 1200 bytes; more is counted corrupt */
#define PAYLOAD_MAX 1200
#define WHEEL_SLOTS 8192        /* 1 ms slots: a client's period must stay below 8.192 s */
#define PERIOD_MAX_NS 8000000000ull
#define SOCK_BUF_BYTES (8 * 1024 * 1024)
#define RX_ROUNDS 16            /* recvmmsg rounds per readable socket per wakeup */
#define SEND_RETRY_MAX 32       /* EAGAIN retries per batch before counting a failure */
#define NIL UINT32_MAX
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define LAT_SUB 16              /* log-linear latency histogram: 16 buckets per power of 2 */
#define LAT_POW 32
#define LAT_BUCKETS (LAT_SUB * LAT_POW)
#define ERRNO_SLOTS 8
#define SIZE_CLASSES_MAX 8
#define CLIENTS_MAX 200000

/* One client group (--group): a routing token, a client count and rates. Owned by main's
 * opts; its counters are written by the single thread. */
struct group {
    char name[32];
    unsigned n_clients, n_active;
    double pps_min, pps_max, idle_pps;
    uint8_t token[16];
    unsigned token_len;
    double churn_pct; /* % of the group's clients replaced per second */
    uint32_t first_slot;
    double churn_acc;
    /* counters */
    uint64_t sent, sent_bytes, send_fail, received, recv_bytes, dups, old, late;
    uint64_t joined, left;
    int fail_errno[ERRNO_SLOTS];
    uint64_t fail_count[ERRNO_SLOTS];
    uint64_t lat[LAT_BUCKETS];
    uint64_t lat_n, lat_max_ns;
    uint32_t *ts_sent, *ts_recv; /* per second of the run */
};

/* One simulated client; slots are reused by churn (new uid = new address). */
struct client {
    uint32_t uid;
    uint32_t seq;      /* next sequence number */
    uint32_t next;     /* timer wheel list */
    uint16_t group;
    bool is_active;    /* game rate (else keep-alive rate) */
    bool has_rx;
    uint64_t period_ns;
    uint64_t due_ns;
    uint32_t rx_max;   /* highest seq answered, and the 64 below it as a bit mask */
    uint64_t rx_mask;
};

struct size_class {
    unsigned lo, hi, weight;
};

/* Parsed command line; owned by main(). */
struct opts {
    struct sockaddr_in target;
    unsigned n_socks;
    double duration_s, ramp_s;
    unsigned drain_ms, linger_s;
    unsigned addr_base; /* second octet of the first client address */
    const char *report;
    uint64_t seed;
    struct group groups[SOAK_GROUPS_MAX];
    unsigned n_groups;
    struct size_class sizes[SIZE_CLASSES_MAX];
    unsigned n_sizes, size_weight;
};

/* Per-socket transmit batch. */
struct txq {
    unsigned n;
    struct mmsghdr msgs[BATCH_CAP];
    struct iovec iovs[BATCH_CAP];
    uint8_t bufs[BATCH_CAP][PAYLOAD_MAX];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
    } ctrl[BATCH_CAP];
};

/* Receive arrays, shared by every socket (one socket is drained at a time). */
struct rxq {
    struct mmsghdr msgs[BATCH_CAP];
    struct iovec iovs[BATCH_CAP];
    struct sockaddr_in from[BATCH_CAP];
    uint8_t bufs[BATCH_CAP][DGRAM_CAP];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(struct in_pktinfo)) + 64];
    } ctrl[BATCH_CAP];
};

/* The whole run's state; one thread. */
struct run {
    struct opts *o;
    int fds[SOCKS_MAX];
    uint16_t ports[SOCKS_MAX];
    struct txq *tx;             /* n_socks of them */
    struct rxq *rx;
    struct client *clients;
    uint32_t n_clients;
    uint32_t next_uid;
    uint32_t wheel[WHEEL_SLOTS];
    uint64_t wheel_ms;          /* every slot up to this ms has been processed */
    uint64_t start_ns;
    unsigned n_secs;            /* length of the per-second series */
    uint64_t rng;
    /* anomalies and run figures */
    uint64_t unknown_rx, misrouted, corrupt, wrong_source;
    uint64_t max_lag_ns, late_sends; /* late_sends: sent more than 10 ms after due */
    uint64_t sent_total;
    int64_t rt_minus_mono_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC, for kernel rx stamps */
    uint64_t unstamped;       /* replies without a kernel timestamp (user time used) */
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: plenty for schedules and sizes */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_soak_client --target IP:PORT --group SPEC [--group SPEC ...]\n"
            "         [--duration SECS] [--ramp SECS] [--drain-ms MS] [--sockets N]\n"
            "         [--addr-base OCTET] [--sizes LO:HI:W,...] [--report FILE]\n"
            "         [--linger SECS] [--seed N]\n"
            "  SPEC: name=NAME,clients=N,token=ASCII[,active=M][,pps=LO:HI][,idle=PPS]\n"
            "        [,churn=PCT_PER_S]   M of the N clients send at LO..HI packets/s (each\n"
            "        its own rate), the rest at the keep-alive rate; churn replaces PCT %% of\n"
            "        the group's clients per second with new clients (new source addresses)\n"
            "  Clients use source addresses 127.OCTET.x.y (OCTET from --addr-base, default\n"
            "  16) via IP_PKTINFO on N sockets (default 4) bound to 0.0.0.0. Payload sizes\n"
            "  (token included) from weighted classes, default 64:160:60,160:512:30,512:1200:10.\n"
            "  After --duration the clients stop, replies are collected for --drain-ms (default\n"
            "  2000), the JSON report is written to --report (default stdout), and the\n"
            "  process keeps its sockets until SIGTERM or --linger seconds (default 0).\n");
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo) || !(v <= hi))
        return false;
    *out = v;
    return true;
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

/* "LO:HI" -> two doubles */
static bool parse_range(const char *s, double lo, double hi, double *a, double *b)
{
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%s", s);
    char *colon = strchr(tmp, ':');
    if (!colon) {
        if (!parse_double(tmp, lo, hi, a))
            return false;
        *b = *a;
        return true;
    }
    *colon = '\0';
    return parse_double(tmp, lo, hi, a) && parse_double(colon + 1, lo, hi, b) && *a <= *b;
}

static int parse_group(const char *spec, struct group *g)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", spec);
    memset(g, 0, sizeof(*g));
    g->pps_min = 20;
    g->pps_max = 60;
    g->idle_pps = 1;
    bool has_active = false;
    char *save = NULL;
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return -1;
        *eq = '\0';
        const char *k = kv, *v = eq + 1;
        unsigned long u;
        if (!strcmp(k, "name") && strlen(v) < sizeof(g->name)) {
            snprintf(g->name, sizeof(g->name), "%s", v);
        } else if (!strcmp(k, "clients") && parse_ul(v, 0, CLIENTS_MAX, &u)) {
            g->n_clients = (unsigned)u;
        } else if (!strcmp(k, "active") && parse_ul(v, 0, CLIENTS_MAX, &u)) {
            g->n_active = (unsigned)u;
            has_active = true;
        } else if (!strcmp(k, "pps") && parse_range(v, 0.2, 1000, &g->pps_min, &g->pps_max)) {
        } else if (!strcmp(k, "idle") && parse_double(v, 0.2, 1000, &g->idle_pps)) {
        } else if (!strcmp(k, "churn") && parse_double(v, 0, 100, &g->churn_pct)) {
        } else if (!strcmp(k, "token") && strlen(v) >= 1 && strlen(v) <= sizeof(g->token)) {
            g->token_len = (unsigned)strlen(v);
            memcpy(g->token, v, g->token_len);
        } else {
            return -1;
        }
    }
    if (!g->name[0] || !g->token_len)
        return -1;
    if (!has_active)
        g->n_active = g->n_clients;
    if (g->n_active > g->n_clients)
        return -1;
    return 0;
}

static int parse_sizes(const char *s, struct opts *o)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    o->n_sizes = 0;
    o->size_weight = 0;
    char *save = NULL;
    for (char *c = strtok_r(buf, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
        unsigned lo, hi, w;
        if (o->n_sizes == SIZE_CLASSES_MAX || sscanf(c, "%u:%u:%u", &lo, &hi, &w) != 3 ||
            lo < 64 || hi > PAYLOAD_MAX || lo > hi || w == 0)
            return -1;
        o->sizes[o->n_sizes++] = (struct size_class){lo, hi, w};
        o->size_weight += w;
    }
    return o->n_sizes ? 0 : -1;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->n_socks = 4;
    o->duration_s = 10;
    o->drain_ms = 2000;
    o->addr_base = 16;
    o->seed = 0x50a4c11e47ull;
    parse_sizes("64:160:60,160:512:30,512:1200:10", o);
    bool has_target = false;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        unsigned long u;
        if (!strcmp(k, "--target")) {
            char host[64];
            const char *colon = strrchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof(host) || !parse_ul(colon + 1, 1, 65535, &u))
                return -1;
            memcpy(host, v, (size_t)(colon - v));
            host[colon - v] = '\0';
            o->target.sin_family = AF_INET;
            o->target.sin_port = htons((uint16_t)u);
            if (inet_pton(AF_INET, host, &o->target.sin_addr) != 1)
                return -1;
            has_target = true;
        } else if (!strcmp(k, "--group")) {
            if (o->n_groups == SOAK_GROUPS_MAX || parse_group(v, &o->groups[o->n_groups]))
                return -1;
            o->n_groups++;
        } else if (!strcmp(k, "--duration") && parse_double(v, 0.1, 86400, &o->duration_s)) {
        } else if (!strcmp(k, "--ramp") && parse_double(v, 0, 3600, &o->ramp_s)) {
        } else if (!strcmp(k, "--drain-ms") && parse_ul(v, 0, 60000, &u)) {
            o->drain_ms = (unsigned)u;
        } else if (!strcmp(k, "--linger") && parse_ul(v, 0, 3600, &u)) {
            o->linger_s = (unsigned)u;
        } else if (!strcmp(k, "--sockets") && parse_ul(v, 1, SOCKS_MAX, &u)) {
            o->n_socks = (unsigned)u;
        } else if (!strcmp(k, "--addr-base") && parse_ul(v, 1, 250, &u)) {
            o->addr_base = (unsigned)u;
        } else if (!strcmp(k, "--sizes")) {
            if (parse_sizes(v, o))
                return -1;
        } else if (!strcmp(k, "--report")) {
            o->report = v;
        } else if (!strcmp(k, "--seed") && parse_ul(v, 1, ~0ul, &u)) {
            o->seed = u;
        } else {
            return -1;
        }
    }
    if (!has_target || !o->n_groups)
        return -1;
    for (unsigned i = 0; i < o->n_groups; i++)
        if (o->sizes[0].lo < SOAK_HDR_LEN + o->groups[i].token_len)
            return -1;
    return 0;
}

/* A client's source address: 127.(base + uid / 65024).((uid / 254) % 256).(1 + uid % 254),
 * never .0 or .255 in the last octet. Network byte order. */
static uint32_t client_addr(const struct run *r, uint32_t uid)
{
    uint32_t b = r->o->addr_base + uid / (256u * 254u);
    uint32_t x = (uid / 254u) % 256u;
    uint32_t y = 1 + uid % 254u;
    return htonl((127u << 24) | (b << 16) | (x << 8) | y);
}

static unsigned client_sock(const struct run *r, uint32_t uid)
{
    return uid % r->o->n_socks;
}

static void lat_add(struct group *g, uint64_t ns)
{
    uint64_t us = ns / 1000;
    unsigned b;
    if (us < LAT_SUB) {
        b = (unsigned)us;
    } else {
        unsigned p = 63 - (unsigned)__builtin_clzll(us); /* us in [2^p, 2^(p+1)) */
        unsigned shift = p - 4;                          /* LAT_SUB = 2^4 */
        b = (p - 3) * LAT_SUB + (unsigned)((us >> shift) - LAT_SUB);
        if (b >= LAT_BUCKETS)
            b = LAT_BUCKETS - 1;
    }
    g->lat[b]++;
    g->lat_n++;
    if (ns > g->lat_max_ns)
        g->lat_max_ns = ns;
}

/* Upper bound (us) of latency bucket b. */
static double lat_upper_us(unsigned b)
{
    if (b < LAT_SUB)
        return b + 1;
    unsigned p = b / LAT_SUB + 3, sub = b % LAT_SUB;
    return (double)((uint64_t)(LAT_SUB + sub + 1) << (p - 4));
}

static double lat_pct(const struct group *g, double q)
{
    if (!g->lat_n)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)g->lat_n), acc = 0;
    if (want == 0)
        want = 1;
    for (unsigned b = 0; b < LAT_BUCKETS; b++) {
        acc += g->lat[b];
        if (acc >= want)
            return lat_upper_us(b);
    }
    return (double)g->lat_max_ns / 1000;
}

static void count_fail(struct group *g, int err)
{
    g->send_fail++;
    for (unsigned i = 0; i < ERRNO_SLOTS; i++) {
        if (g->fail_count[i] && g->fail_errno[i] == err) {
            g->fail_count[i]++;
            return;
        }
        if (!g->fail_count[i]) {
            g->fail_errno[i] = err;
            g->fail_count[i] = 1;
            return;
        }
    }
    g->fail_count[ERRNO_SLOTS - 1]++; /* more distinct errors than slots: lump them */
}

static unsigned sec_index(const struct run *r, uint64_t t)
{
    uint64_t s = (t - r->start_ns) / NS_PER_S;
    return s < r->n_secs ? (unsigned)s : r->n_secs - 1;
}

static void wheel_put(struct run *r, uint32_t slot)
{
    struct client *c = &r->clients[slot];
    uint64_t ms = c->due_ns / NS_PER_MS;
    if (ms <= r->wheel_ms)
        ms = r->wheel_ms + 1; /* overdue: the next slot processed */
    uint32_t w = (uint32_t)(ms % WHEEL_SLOTS);
    c->next = r->wheel[w];
    r->wheel[w] = slot;
}

/* A fresh client in this slot: new uid (so a new source address), rate by its class. */
static void client_init(struct run *r, uint32_t slot, uint16_t group, bool is_active)
{
    struct group *g = &r->o->groups[group];
    struct client *c = &r->clients[slot];
    c->uid = r->next_uid++;
    c->seq = 0;
    c->group = group;
    c->is_active = is_active;
    c->has_rx = false;
    c->rx_max = 0;
    c->rx_mask = 0;
    double pps = is_active ? g->pps_min + (g->pps_max - g->pps_min) * rng_unit(&r->rng)
                           : g->idle_pps;
    c->period_ns = (uint64_t)(1e9 / pps);
    if (c->period_ns > PERIOD_MAX_NS)
        c->period_ns = PERIOD_MAX_NS;
    g->joined++;
}

/* Sends the queued datagrams of socket s; a datagram that cannot be sent is counted as a
 * send failure of its group (never as sent). */
static void flush_tx(struct run *r, unsigned s)
{
    struct txq *q = &r->tx[s];
    unsigned done = 0, tries = 0;
    while (done < q->n) {
        int n = sendmmsg(r->fds[s], q->msgs + done, q->n - done, MSG_DONTWAIT);
        int err = n == -1 ? errno : 0;
        if (n > 0) {
            for (unsigned i = done; i < done + (unsigned)n; i++) {
                struct soak_hdr h;
                memcpy(&h, q->bufs[i], sizeof(h));
                struct group *g = &r->o->groups[h.group];
                g->sent++;
                g->sent_bytes += q->iovs[i].iov_len;
                g->ts_sent[sec_index(r, h.send_ns)]++;
                r->sent_total++;
            }
            done += (unsigned)n;
            continue;
        }
        if (err == EINTR)
            continue;
        if ((err == EAGAIN || err == EWOULDBLOCK) && ++tries < SEND_RETRY_MAX) {
            struct pollfd p = {.fd = r->fds[s], .events = POLLOUT};
            (void)poll(&p, 1, 5);
            continue;
        }
        struct soak_hdr h;
        memcpy(&h, q->bufs[done], sizeof(h));
        count_fail(&r->o->groups[h.group], err);
        done++;
    }
    q->n = 0;
}

static unsigned pick_size(struct run *r, unsigned min_len)
{
    const struct opts *o = r->o;
    unsigned w = (unsigned)(rng_next(&r->rng) % o->size_weight);
    const struct size_class *c = &o->sizes[0];
    for (unsigned i = 0; i < o->n_sizes; i++) {
        if (w < o->sizes[i].weight) {
            c = &o->sizes[i];
            break;
        }
        w -= o->sizes[i].weight;
    }
    unsigned len = c->lo + (unsigned)(rng_next(&r->rng) % (c->hi - c->lo + 1));
    return len < min_len ? min_len : len;
}

/* Queues one datagram from client slot (sent at the next flush of its socket). */
static void send_one(struct run *r, uint32_t slot, uint64_t t)
{
    struct client *c = &r->clients[slot];
    struct group *g = &r->o->groups[c->group];
    unsigned s = client_sock(r, c->uid);
    struct txq *q = &r->tx[s];
    if (q->n == BATCH_CAP)
        flush_tx(r, s);
    unsigned i = q->n++;
    unsigned total = pick_size(r, SOAK_HDR_LEN + g->token_len);
    unsigned len = total - g->token_len;
    struct soak_hdr h = {.magic = SOAK_MAGIC,
                         .group = c->group,
                         .token_len = (uint16_t)g->token_len,
                         .uid = c->uid,
                         .slot = slot,
                         .seq = c->seq++,
                         .len = len,
                         .send_ns = t};
    uint8_t *b = q->bufs[i];
    memcpy(b, &h, sizeof(h));
    for (unsigned k = SOAK_HDR_LEN; k < len; k++)
        b[k] = (uint8_t)(h.seq + k);
    memcpy(b + len, g->token, g->token_len);
    q->iovs[i].iov_base = b;
    q->iovs[i].iov_len = total;
    struct msghdr *m = &q->msgs[i].msg_hdr;
    m->msg_name = &r->o->target;
    m->msg_namelen = sizeof(r->o->target);
    m->msg_iov = &q->iovs[i];
    m->msg_iovlen = 1;
    m->msg_control = q->ctrl[i].buf;
    m->msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
    m->msg_flags = 0;
    struct cmsghdr *cm = CMSG_FIRSTHDR(m);
    cm->cmsg_level = IPPROTO_IP;
    cm->cmsg_type = IP_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo pi;
    memset(&pi, 0, sizeof(pi));
    pi.ipi_spec_dst.s_addr = client_addr(r, c->uid); /* this client's source address */
    memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
}

/* Runs every wheel slot up to now: sends what is due and re-arms each client. */
static void run_wheel(struct run *r, uint64_t now)
{
    uint64_t now_ms = now / NS_PER_MS;
    /* bounded: at most one revolution per call (a longer stall re-arms overdue clients) */
    uint64_t end_ms = now_ms;
    if (end_ms > r->wheel_ms + WHEEL_SLOTS)
        end_ms = r->wheel_ms + WHEEL_SLOTS;
    for (uint64_t ms = r->wheel_ms + 1; ms <= end_ms; ms++) {
        uint32_t w = (uint32_t)(ms % WHEEL_SLOTS);
        uint32_t slot = r->wheel[w];
        r->wheel[w] = NIL;
        r->wheel_ms = ms;
        while (slot != NIL) {
            struct client *c = &r->clients[slot];
            uint32_t next = c->next;
            if (c->due_ns / NS_PER_MS > ms) {
                wheel_put(r, slot); /* belongs to a later revolution */
            } else {
                uint64_t lag = now > c->due_ns ? now - c->due_ns : 0;
                if (lag > r->max_lag_ns)
                    r->max_lag_ns = lag;
                if (lag > 10 * NS_PER_MS)
                    r->late_sends++;
                send_one(r, slot, now);
                c->due_ns += c->period_ns;
                if (c->due_ns + c->period_ns < now)
                    c->due_ns = now + c->period_ns; /* far behind: skip, do not burst */
                wheel_put(r, slot);
            }
            slot = next;
        }
    }
    r->wheel_ms = end_ms > r->wheel_ms ? end_ms : r->wheel_ms;
}

/* Once a second: replace churn_pct % of each group's clients (fractions carry over). Each
 * replacement takes over a random slot of its group, keeping that slot's class and its
 * place in the schedule; the old client simply never sends again. */
static void churn(struct run *r)
{
    for (unsigned gi = 0; gi < r->o->n_groups; gi++) {
        struct group *g = &r->o->groups[gi];
        if (!g->n_clients || g->churn_pct <= 0)
            continue;
        g->churn_acc += g->n_clients * g->churn_pct / 100.0;
        unsigned k = (unsigned)g->churn_acc;
        g->churn_acc -= k;
        for (unsigned i = 0; i < k; i++) {
            uint32_t slot = g->first_slot + (uint32_t)(rng_next(&r->rng) % g->n_clients);
            struct client *c = &r->clients[slot];
            g->left++;
            uint32_t next = c->next;
            uint64_t due = c->due_ns;
            client_init(r, slot, (uint16_t)gi, c->is_active);
            c->next = next;
            c->due_ns = due;
        }
    }
}

static void handle_reply(struct run *r, unsigned s, const struct mmsghdr *m,
                         const struct sockaddr_in *from, const uint8_t *buf, uint64_t t)
{
    struct soak_hdr h;
    if (m->msg_len < SOAK_HDR_LEN) {
        r->unknown_rx++;
        return;
    }
    memcpy(&h, buf, sizeof(h));
    if (h.magic != SOAK_MAGIC || h.group >= r->o->n_groups) {
        r->unknown_rx++;
        return;
    }
    struct group *g = &r->o->groups[h.group];
    /* integrity: the token is gone, the length and the filler are what was sent */
    if (m->msg_len != h.len || (m->msg_hdr.msg_flags & MSG_TRUNC) ||
        (h.len > SOAK_HDR_LEN && (buf[SOAK_HDR_LEN] != (uint8_t)(h.seq + SOAK_HDR_LEN) ||
                                  buf[h.len - 1] != (uint8_t)(h.seq + h.len - 1)))) {
        r->corrupt++;
        return;
    }
    if (from->sin_addr.s_addr != r->o->target.sin_addr.s_addr ||
        from->sin_port != r->o->target.sin_port)
        r->wrong_source++;
    /* the reply must reach the address and socket (port) that client sent from */
    uint32_t dst = 0;
    uint64_t rx_ns = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR((struct msghdr *)&m->msg_hdr); cm;
         cm = CMSG_NXTHDR((struct msghdr *)&m->msg_hdr, cm)) {
        if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
            dst = pi.ipi_addr.s_addr;
        } else if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            /* the kernel's arrival time: the latency then excludes our own wake-up delay */
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
            int64_t rt = (int64_t)ts.tv_sec * (int64_t)NS_PER_S + ts.tv_nsec;
            rx_ns = (uint64_t)(rt - r->rt_minus_mono_ns);
        }
    }
    if (!rx_ns || rx_ns > t) {
        r->unstamped += !rx_ns;
        rx_ns = t;
    }
    if (dst != client_addr(r, h.uid) || s != client_sock(r, h.uid)) {
        r->misrouted++;
        return;
    }
    if (h.slot < r->n_clients && r->clients[h.slot].uid == h.uid) {
        struct client *c = &r->clients[h.slot];
        if (!c->has_rx || h.seq > c->rx_max) {
            uint32_t shift = c->has_rx ? h.seq - c->rx_max : 64;
            c->rx_mask = shift >= 64 ? 0 : c->rx_mask << shift;
            c->rx_mask |= 1;
            c->rx_max = h.seq;
            c->has_rx = true;
        } else {
            uint32_t back = c->rx_max - h.seq;
            if (back < 64) {
                if (c->rx_mask & (1ull << back)) {
                    g->dups++;
                    return;
                }
                c->rx_mask |= 1ull << back;
            } else {
                g->old++; /* too old to check for duplicates; counted as received */
            }
        }
    } else {
        g->late++; /* the client has left since; still its reply */
    }
    g->received++;
    g->recv_bytes += m->msg_len;
    g->ts_recv[sec_index(r, t)]++;
    lat_add(g, rx_ns > h.send_ns ? rx_ns - h.send_ns : 0);
}

static void drain_socket(struct run *r, unsigned s)
{
    struct rxq *q = r->rx;
    for (unsigned round = 0; round < RX_ROUNDS; round++) {
        for (unsigned i = 0; i < BATCH_CAP; i++) {
            struct msghdr *h = &q->msgs[i].msg_hdr;
            q->iovs[i].iov_base = q->bufs[i];
            q->iovs[i].iov_len = DGRAM_CAP;
            h->msg_name = &q->from[i];
            h->msg_namelen = sizeof(q->from[i]);
            h->msg_iov = &q->iovs[i];
            h->msg_iovlen = 1;
            h->msg_control = q->ctrl[i].buf;
            h->msg_controllen = sizeof(q->ctrl[i].buf);
            h->msg_flags = 0;
        }
        int n = recvmmsg(r->fds[s], q->msgs, BATCH_CAP, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++)
            handle_reply(r, s, &q->msgs[i], &q->from[i], q->bufs[i], t);
        if (n < BATCH_CAP)
            return;
    }
}

static int open_socks(struct run *r)
{
    for (unsigned s = 0; s < r->o->n_socks; s++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd == -1)
            return -1;
        r->fds[s] = fd;
        int one = 1, v = SOCK_BUF_BYTES;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) == -1)
            (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) == -1)
            (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
        if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) == -1 ||
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) == -1)
            return -1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == -1)
            return -1;
        socklen_t len = sizeof(a);
        if (getsockname(fd, (struct sockaddr *)&a, &len) == -1)
            return -1;
        r->ports[s] = ntohs(a.sin_port);
    }
    return 0;
}

static uint64_t sock_drops(int fd)
{
    uint32_t mem[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mem);
    memset(mem, 0, sizeof(mem));
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) == -1 || len <= SK_MEMINFO_DROPS * 4)
        return 0;
    return mem[SK_MEMINFO_DROPS];
}

static void json_series(FILE *f, const char *key, const uint32_t *v, unsigned n)
{
    fprintf(f, "\"%s\": [", key);
    for (unsigned i = 0; i < n; i++)
        fprintf(f, "%s%u", i ? "," : "", v[i]);
    fprintf(f, "]");
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

static void write_report(struct run *r, FILE *f, double elapsed_s, unsigned n_secs)
{
    const struct opts *o = r->o;
    char target[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &o->target.sin_addr, target, sizeof(target));
    fprintf(f, "{\n  \"target\": \"%s:%u\", \"pid\": %ld, \"duration_s\": %.3f, "
               "\"elapsed_s\": %.3f, \"drain_ms\": %u, \"ramp_s\": %.1f,\n",
            target, ntohs(o->target.sin_port), (long)getpid(), o->duration_s, elapsed_s,
            o->drain_ms, o->ramp_s);
    fprintf(f, "  \"sockets\": [");
    for (unsigned s = 0; s < o->n_socks; s++)
        fprintf(f, "%s{\"port\": %u, \"drops\": %llu}", s ? ", " : "", r->ports[s],
                (unsigned long long)sock_drops(r->fds[s]));
    fprintf(f, "],\n  \"concurrent_clients\": %u, \"clients_total\": %u, \"sent_total\": %llu,\n",
            r->n_clients, r->next_uid, (unsigned long long)r->sent_total);
    fprintf(f, "  \"max_lag_ms\": %.3f, \"late_sends\": %llu, \"unknown_rx\": %llu, "
               "\"misrouted\": %llu, \"corrupt\": %llu, \"wrong_source\": %llu, "
               "\"unstamped\": %llu,\n",
            (double)r->max_lag_ns / 1e6, (unsigned long long)r->late_sends,
            (unsigned long long)r->unknown_rx, (unsigned long long)r->misrouted,
            (unsigned long long)r->corrupt, (unsigned long long)r->wrong_source,
            (unsigned long long)r->unstamped);
    fprintf(f, "  \"groups\": [\n");
    for (unsigned gi = 0; gi < o->n_groups; gi++) {
        const struct group *g = &o->groups[gi];
        fprintf(f, "    {\"id\": %u, \"name\": ", gi);
        json_str(f, g->name);
        fprintf(f, ", \"clients\": %u, \"active\": %u, \"pps_min\": %.1f, \"pps_max\": %.1f, "
                   "\"idle_pps\": %.2f, \"churn_pct\": %.2f, \"joined\": %llu, \"left\": %llu,\n",
                g->n_clients, g->n_active, g->pps_min, g->pps_max, g->idle_pps, g->churn_pct,
                (unsigned long long)g->joined, (unsigned long long)g->left);
        fprintf(f, "     \"sent\": %llu, \"sent_bytes\": %llu, \"send_fail\": %llu, "
                   "\"received\": %llu, \"recv_bytes\": %llu, \"dups\": %llu, \"old\": %llu, "
                   "\"late\": %llu,\n",
                (unsigned long long)g->sent, (unsigned long long)g->sent_bytes,
                (unsigned long long)g->send_fail, (unsigned long long)g->received,
                (unsigned long long)g->recv_bytes, (unsigned long long)g->dups,
                (unsigned long long)g->old, (unsigned long long)g->late);
        fprintf(f, "     \"send_errors\": {");
        for (unsigned i = 0, k = 0; i < ERRNO_SLOTS; i++)
            if (g->fail_count[i])
                fprintf(f, "%s\"%s\": %llu", k++ ? ", " : "", strerror(g->fail_errno[i]),
                        (unsigned long long)g->fail_count[i]);
        fprintf(f, "},\n     \"latency_us\": {\"n\": %llu, \"p50\": %.0f, \"p90\": %.0f, "
                   "\"p99\": %.0f, \"p999\": %.0f, \"max\": %.0f},\n     ",
                (unsigned long long)g->lat_n, lat_pct(g, 0.5), lat_pct(g, 0.9),
                lat_pct(g, 0.99), lat_pct(g, 0.999), (double)g->lat_max_ns / 1000);
        json_series(f, "per_second_sent", g->ts_sent, n_secs);
        fprintf(f, ",\n     ");
        json_series(f, "per_second_received", g->ts_recv, n_secs);
        fprintf(f, "}%s\n", gi + 1 < o->n_groups ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
}

int main(int argc, char **argv)
{
    static struct opts o;
    if (parse_opts(argc, argv, &o)) {
        usage();
        return 2;
    }
    struct run r;
    memset(&r, 0, sizeof(r));
    r.o = &o;
    r.rng = o.seed;
    for (unsigned gi = 0; gi < o.n_groups; gi++)
        r.n_clients += o.groups[gi].n_clients;
    if (r.n_clients > CLIENTS_MAX) {
        fprintf(stderr, "bench_soak_client: at most %u clients\n", CLIENTS_MAX);
        return 2;
    }
    r.n_secs = (unsigned)(o.duration_s + o.drain_ms / 1000.0) + 3;
    r.clients = calloc(r.n_clients ? r.n_clients : 1, sizeof(*r.clients));
    r.tx = calloc(o.n_socks, sizeof(*r.tx));
    r.rx = calloc(1, sizeof(*r.rx));
    for (unsigned gi = 0; gi < o.n_groups; gi++) {
        o.groups[gi].ts_sent = calloc(r.n_secs, sizeof(uint32_t));
        o.groups[gi].ts_recv = calloc(r.n_secs, sizeof(uint32_t));
        if (!o.groups[gi].ts_sent || !o.groups[gi].ts_recv) {
            fprintf(stderr, "bench_soak_client: out of memory\n");
            return 1;
        }
    }
    if (!r.clients || !r.tx || !r.rx) {
        fprintf(stderr, "bench_soak_client: out of memory\n");
        return 1;
    }
    for (unsigned s = 0; s < SOCKS_MAX; s++)
        r.fds[s] = -1;
    if (open_socks(&r)) {
        fprintf(stderr, "bench_soak_client: socket setup: %s\n", strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* clients, spread over the ramp and over their own first period */
    for (uint32_t i = 0; i < WHEEL_SLOTS; i++)
        r.wheel[i] = NIL;
    r.start_ns = now_ns();
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    r.rt_minus_mono_ns = (int64_t)rt.tv_sec * (int64_t)NS_PER_S + rt.tv_nsec -
                         (int64_t)now_ns();
    r.wheel_ms = r.start_ns / NS_PER_MS;
    uint32_t slot = 0;
    for (unsigned gi = 0; gi < o.n_groups; gi++) {
        struct group *g = &o.groups[gi];
        g->first_slot = slot;
        for (unsigned k = 0; k < g->n_clients; k++, slot++) {
            client_init(&r, slot, (uint16_t)gi, k < g->n_active);
            /* interleave the groups over the ramp: slot order is group order */
            double at = o.ramp_s * (double)slot / (double)r.n_clients;
            r.clients[slot].due_ns = r.start_ns + (uint64_t)(at * 1e9) +
                                     (uint64_t)(rng_unit(&r.rng) *
                                                (double)r.clients[slot].period_ns);
            wheel_put(&r, slot);
        }
    }
    fprintf(stderr, "bench_soak_client: %u clients in %u groups, sockets on ports", r.n_clients,
            o.n_groups);
    for (unsigned s = 0; s < o.n_socks; s++)
        fprintf(stderr, " %u", r.ports[s]);
    fprintf(stderr, "\n");

    uint64_t end_send = r.start_ns + (uint64_t)(o.duration_s * 1e9);
    uint64_t end_all = end_send + (uint64_t)o.drain_ms * NS_PER_MS;
    uint64_t next_churn = r.start_ns + NS_PER_S;
    bool is_sending = true;
    struct pollfd pfds[SOCKS_MAX];
    for (unsigned s = 0; s < o.n_socks; s++)
        pfds[s] = (struct pollfd){.fd = r.fds[s], .events = POLLIN};
    for (;;) {
        uint64_t now = now_ns();
        if (stop_signal && is_sending) {
            end_send = now; /* stop sending, still collect the drain's replies */
            end_all = now + (uint64_t)o.drain_ms * NS_PER_MS;
        }
        if (now >= end_all)
            break;
        if (is_sending && now >= end_send) {
            is_sending = false;
            for (unsigned s = 0; s < o.n_socks; s++)
                flush_tx(&r, s);
            fprintf(stderr, "bench_soak_client: stopped sending after %.1f s, draining\n",
                    (double)(now - r.start_ns) / 1e9);
        }
        if (is_sending) {
            if (now >= next_churn) {
                churn(&r);
                next_churn += NS_PER_S;
            }
            run_wheel(&r, now);
            for (unsigned s = 0; s < o.n_socks; s++)
                if (r.tx[s].n)
                    flush_tx(&r, s);
        }
        /* sleep until the next millisecond tick (or the end), waking for replies */
        uint64_t wake = is_sending ? (now / NS_PER_MS + 1) * NS_PER_MS : end_all;
        uint64_t after = now_ns();
        struct timespec ts = {0, 0};
        if (wake > after) {
            ts.tv_sec = (time_t)((wake - after) / NS_PER_S);
            ts.tv_nsec = (long)((wake - after) % NS_PER_S);
        }
        int n = ppoll(pfds, o.n_socks, &ts, NULL);
        if (n > 0)
            for (unsigned s = 0; s < o.n_socks; s++)
                if (pfds[s].revents & (POLLIN | POLLERR))
                    drain_socket(&r, s);
    }
    for (unsigned s = 0; s < o.n_socks; s++)
        drain_socket(&r, s);

    double elapsed = (double)(now_ns() - r.start_ns) / 1e9;
    int rc = 0;
    if (o.report) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", o.report);
        FILE *f = fopen(tmp, "w");
        if (!f) {
            fprintf(stderr, "bench_soak_client: cannot write %s: %s\n", tmp, strerror(errno));
            rc = 1;
        } else {
            write_report(&r, f, elapsed, r.n_secs);
            if (fclose(f) != 0 || rename(tmp, o.report) == -1) {
                fprintf(stderr, "bench_soak_client: cannot write %s\n", o.report);
                rc = 1;
            }
        }
    } else {
        write_report(&r, stdout, elapsed, r.n_secs);
        fflush(stdout);
    }
    fprintf(stderr, "bench_soak_client: report written after %.1f s\n", elapsed);
    /* keep the sockets (and their kernel drop counters) until told to go */
    for (unsigned i = 0; i < o.linger_s * 10 && !stop_signal; i++) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (unsigned s = 0; s < o.n_socks; s++)
        close(r.fds[s]);
    return rc;
}
