/* bench_attack_gen: the attacker of the attack harness (make attack, bench/attack.py). Sends
 * one kind of hostile UDP stream at a paced rate for a bounded time, from source addresses in
 * 127.0.0.0/8 chosen per datagram with IP_PKTINFO (sockets bound to 0.0.0.0), and prints one
 * JSON line: what it sent and what came back. Loopback only; asserts nothing; every loop is
 * bounded by the deadline.
 *
 * Modes:
 *   junk   random bytes (16..1200) from 64 addresses
 *   regex  1,200 bytes of "aaa...ab": exponential for a backtracking regex, from 64 addresses
 *   spoof  a valid routed datagram (payload then --token) from a new address every time:
 *          each one opens a session the source never uses again
 *   qcmp   17-byte QCMP Pings claiming to come from a few victim addresses (a reflection
 *          attack: the replies would land on the victims); the replies that come back to
 *          those addresses are counted (bytes out vs in)
 * --sources N overrides how many distinct addresses are used (defaults: junk and regex 64,
 * spoof 62,500, qcmp 4). */

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#define SOCKS 4
#define BATCH 64
#define PAYLOAD_MAX 1200
#define TICK_NS 1000000ull /* pacing: one batch per millisecond */
#define NS_PER_S 1000000000ull

enum mode { MODE_JUNK = 0, MODE_REGEX, MODE_SPOOF, MODE_QCMP };

struct opts {
    struct sockaddr_in target;
    enum mode mode;
    double rate, duration_s;
    unsigned addr_base;
    unsigned sources; /* distinct source addresses, cycled */
    char token[32];
};

struct tx {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint8_t bufs[BATCH][PAYLOAD_MAX + 32];
    union {
        char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
        struct cmsghdr align;
    } ctl[BATCH];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_attack_gen --target IP:PORT --mode junk|regex|spoof|qcmp\n"
                    "         --rate PPS --duration SECS [--addr-base OCTET] [--token ASCII]\n");
    exit(2);
}

static void parse(struct opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof(*o));
    o->addr_base = 200;
    o->mode = MODE_JUNK;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--target")) {
            char host[64];
            unsigned port;
            if (sscanf(v, "%63[^:]:%u", host, &port) != 2 || port > 65535)
                usage();
            o->target.sin_family = AF_INET;
            o->target.sin_port = htons((uint16_t)port);
            if (inet_pton(AF_INET, host, &o->target.sin_addr) != 1)
                usage();
        } else if (!strcmp(k, "--mode")) {
            o->mode = !strcmp(v, "junk")    ? MODE_JUNK
                      : !strcmp(v, "regex") ? MODE_REGEX
                      : !strcmp(v, "spoof") ? MODE_SPOOF
                      : !strcmp(v, "qcmp")  ? MODE_QCMP
                                            : (usage(), MODE_JUNK);
        } else if (!strcmp(k, "--rate")) {
            o->rate = atof(v);
        } else if (!strcmp(k, "--duration")) {
            o->duration_s = atof(v);
        } else if (!strcmp(k, "--addr-base")) {
            o->addr_base = (unsigned)atoi(v);
        } else if (!strcmp(k, "--sources")) {
            o->sources = (unsigned)atoi(v);
        } else if (!strcmp(k, "--token")) {
            snprintf(o->token, sizeof(o->token), "%s", v);
        } else {
            usage();
        }
    }
    if (!o->sources)
        o->sources = o->mode == MODE_SPOOF ? 62500 : o->mode == MODE_QCMP ? 4 : 64;
    if (o->sources > 62500 || !o->target.sin_port || !(o->rate > 0 && o->rate <= 2e6) ||
        !(o->duration_s > 0 && o->duration_s <= 3600) || o->addr_base < 1 || o->addr_base > 250)
        usage();
}

/* The n-th source address: 127.BASE.x.y, cycling through o->sources addresses. */
static uint32_t source_of(const struct opts *o, uint64_t n)
{
    uint64_t k = n % o->sources;
    return htonl((127u << 24) | (o->addr_base << 16) | ((uint32_t)(k / 250) << 8) |
                 (uint32_t)(k % 250 + 1));
}

/* Fills one datagram of the mode; returns its length. */
static size_t fill(const struct opts *o, uint8_t *b, uint64_t n)
{
    switch (o->mode) {
    case MODE_REGEX:
        memset(b, 'a', PAYLOAD_MAX - 1);
        b[PAYLOAD_MAX - 1] = 'b';
        return PAYLOAD_MAX;
    case MODE_SPOOF: {
        size_t len = 64;
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)(n + i);
        size_t t = strlen(o->token);
        memcpy(b + len, o->token, t);
        return len + t;
    }
    case MODE_QCMP: {
        /* spec qcmp.md §2: "QLKN", version 0, Ping (0), payload length 9 (u16 BE), nonce,
         * client transmit timestamp (i64 BE ns) */
        memcpy(b, "QLKN", 4);
        b[4] = 0;
        b[5] = 0;
        b[6] = 0;
        b[7] = 9;
        b[8] = (uint8_t)n;
        uint64_t ts = (uint64_t)time(NULL) * NS_PER_S;
        for (int i = 0; i < 8; i++)
            b[9 + i] = (uint8_t)(ts >> (56 - 8 * i));
        return 17;
    }
    case MODE_JUNK:
    default: {
        size_t len = 16 + rnd() % (PAYLOAD_MAX - 16);
        for (size_t i = 0; i < len; i += 8) {
            uint64_t r = rnd();
            memcpy(b + i, &r, len - i < 8 ? len - i : 8);
        }
        return len;
    }
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(&o, argc, argv);
    int fds[SOCKS];
    for (int i = 0; i < SOCKS; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int one = 1, buf = 4 << 20;
        setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
        struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = 0};
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&any, sizeof(any)) < 0 ||
            setsockopt(fds[i], IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) < 0) {
            perror("bench_attack_gen: socket");
            return 1;
        }
    }
    static struct tx tx;
    uint64_t sent = 0, sent_bytes = 0, send_fail = 0, replies = 0, reply_bytes = 0;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(o.duration_s * NS_PER_S), next = t0;
    double owed = 0;
    uint8_t rbuf[2048];
    while (now_ns() < end) {
        uint64_t now = now_ns();
        if (now >= next) {
            owed += o.rate * (double)(now - next + TICK_NS) / NS_PER_S;
            next = now + TICK_NS;
            while (owed >= 1) {
                unsigned n = owed > BATCH ? BATCH : (unsigned)owed;
                for (unsigned i = 0; i < n; i++) {
                    struct msghdr *m = &tx.msgs[i].msg_hdr;
                    memset(m, 0, sizeof(*m));
                    tx.iov[i].iov_base = tx.bufs[i];
                    tx.iov[i].iov_len = fill(&o, tx.bufs[i], sent + i);
                    m->msg_name = &o.target;
                    m->msg_namelen = sizeof(o.target);
                    m->msg_iov = &tx.iov[i];
                    m->msg_iovlen = 1;
                    m->msg_control = tx.ctl[i].buf;
                    m->msg_controllen = sizeof(tx.ctl[i].buf);
                    struct cmsghdr *c = CMSG_FIRSTHDR(m);
                    c->cmsg_level = IPPROTO_IP;
                    c->cmsg_type = IP_PKTINFO;
                    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
                    struct in_pktinfo pi;
                    memset(&pi, 0, sizeof(pi));
                    pi.ipi_spec_dst.s_addr = source_of(&o, sent + i);
                    memcpy(CMSG_DATA(c), &pi, sizeof(pi));
                }
                int r = sendmmsg(fds[sent % SOCKS], tx.msgs, n, 0);
                unsigned ok = r > 0 ? (unsigned)r : 0;
                for (unsigned i = 0; i < ok; i++)
                    sent_bytes += tx.iov[i].iov_len;
                send_fail += n - ok;
                sent += n;
                owed -= n;
            }
        }
        /* whatever comes back (echo replies to spoofed sessions, QCMP replies) */
        for (int i = 0; i < SOCKS; i++) {
            ssize_t got;
            while ((got = recv(fds[i], rbuf, sizeof(rbuf), MSG_DONTWAIT)) >= 0) {
                replies++;
                reply_bytes += (uint64_t)got;
            }
        }
        uint64_t wait = next > now_ns() ? next - now_ns() : 0;
        if (wait > 200000) {
            struct timespec ts = {0, (long)(wait - 100000)};
            nanosleep(&ts, NULL);
        }
    }
    /* late replies */
    uint64_t drain_end = now_ns() + 300 * 1000000ull;
    while (now_ns() < drain_end) {
        for (int i = 0; i < SOCKS; i++) {
            ssize_t got;
            while ((got = recv(fds[i], rbuf, sizeof(rbuf), MSG_DONTWAIT)) >= 0) {
                replies++;
                reply_bytes += (uint64_t)got;
            }
        }
        poll(NULL, 0, 10);
    }
    double secs = (double)(now_ns() - t0) / NS_PER_S;
    static const char *const names[] = {"junk", "regex", "spoof", "qcmp"};
    printf("{\"mode\": \"%s\", \"sent\": %llu, \"sent_bytes\": %llu, \"send_fail\": %llu, "
           "\"replies\": %llu, \"reply_bytes\": %llu, \"secs\": %.2f, \"rate\": %.0f}\n",
           names[o.mode], (unsigned long long)sent, (unsigned long long)sent_bytes,
           (unsigned long long)send_fail, (unsigned long long)replies,
           (unsigned long long)reply_bytes, secs, (double)(sent - send_fail) / o.duration_s);
    for (int i = 0; i < SOCKS; i++)
        close(fds[i]);
    return 0;
}
