/* bench_echo: the UDP echo server the benchmark talks to, directly or through the proxy.
 * Echoes every datagram back to its sender unchanged, in recvmmsg/sendmmsg batches, until
 * SIGTERM or SIGINT. It measures nothing and prints nothing except usage and setup errors.
 * For the field harness (make soak) it can also count what it receives and sends per client
 * group (--count: the soak header of soak_wire.h), act as a blackhole that reads and counts
 * but never answers (--sink), and write those counts plus its sockets' kernel drop counts
 * as JSON when it stops (--stats FILE). */

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/sock_diag.h>

#include "soak_wire.h"

#define BATCH_CAP 64
#define DGRAM_CAP 65536 /* any UDP payload fits; echoed unchanged */
#define THREADS_MAX 16
#define SOCK_BUF_BYTES (4 * 1024 * 1024) /* deep queues: the bench measures the proxy */
#define POLL_MS 100                      /* how often an idle worker checks for shutdown */
#define SEND_RETRY_MAX 64                /* bound on EAGAIN/partial retries per batch */

/* Set by the main thread after sigwait(); workers poll it at least every POLL_MS. */
static atomic_bool stop_flag;

/* Soak options, set once by main() before the workers start. */
static bool is_counting, is_sink;

/* Per-worker counts (--count, --sink); summed by main() after the join. */
struct counts {
    uint64_t rx[SOAK_GROUPS_MAX], rx_bytes[SOAK_GROUPS_MAX];
    uint64_t tx[SOAK_GROUPS_MAX], tx_fail[SOAK_GROUPS_MAX];
    uint64_t other_rx; /* datagrams without a soak header */
};

/* One worker thread: its own SO_REUSEPORT sockets (v4, and v6 if asked), its own batch
 * arrays. Owned by main(), which frees it after the join. */
struct worker {
    pthread_t thread;
    int fds[2];
    unsigned n_fds;
    struct mmsghdr msgs[BATCH_CAP];
    struct iovec iovs[BATCH_CAP];
    struct sockaddr_storage addrs[BATCH_CAP];
    uint8_t *bufs; /* BATCH_CAP * DGRAM_CAP bytes */
    int groups[BATCH_CAP]; /* --count: each received datagram's group, or -1 */
    bool failed[BATCH_CAP];
    struct counts counts;
};

static void usage(void)
{
    fprintf(stderr, "usage: bench_echo PORT [--threads N] [--ipv6] [--count] [--sink]\n"
                    "                  [--stats FILE]\n"
                    "  echoes UDP datagrams on 127.0.0.1:PORT (and [::1]:PORT with --ipv6)\n"
                    "  until SIGTERM/SIGINT; N SO_REUSEPORT sockets, one per thread (default 1)\n"
                    "  --count: count datagrams per soak client group (soak_wire.h)\n"
                    "  --sink: read and count, never answer (a blackhole endpoint)\n"
                    "  --stats FILE: at exit, write the counts and the sockets' kernel drops\n"
                    "    as JSON (written to FILE.tmp, then renamed)\n");
}

static void set_buf(int fd, int opt_force, int opt)
{
    int v = SOCK_BUF_BYTES;
    /* FORCE ignores rmem_max/wmem_max but needs CAP_NET_ADMIN; fall back silently. */
    if (setsockopt(fd, SOL_SOCKET, opt_force, &v, sizeof(v)) == -1)
        (void)setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v));
}

static int open_sock(bool is_v6, unsigned short port)
{
    int fd = socket(is_v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    set_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF);
    set_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF);
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof(ss));
    if (is_v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
            goto fail;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) == -1)
        goto fail;
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/* Sends msgs[0..n) back; resends the rest after a partial send. On EAGAIN waits briefly for
 * room (an echo server that drops would show up as proxy loss), bounded by SEND_RETRY_MAX.
 * failed[i] (all false on entry) is set for every datagram that was not sent. */
static void send_all(int fd, struct mmsghdr *msgs, unsigned n, bool *failed)
{
    unsigned done = 0, tries = 0;
    for (; done < n && tries < SEND_RETRY_MAX; tries++) {
        int r = sendmmsg(fd, msgs + done, n - done, MSG_DONTWAIT);
        if (r > 0) {
            done += (unsigned)r;
            continue;
        }
        if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            (void)poll(&p, 1, 10);
        } else if (r == -1 && errno != EINTR) {
            failed[done++] = true; /* cannot be sent (e.g. sender vanished): skip it */
        }
    }
    for (; done < n; done++)
        failed[done] = true; /* retries exhausted */
}

static void echo_batch(struct worker *w, int fd)
{
    for (unsigned i = 0; i < BATCH_CAP; i++) {
        w->iovs[i].iov_base = w->bufs + (size_t)i * DGRAM_CAP;
        w->iovs[i].iov_len = DGRAM_CAP;
        memset(&w->msgs[i].msg_hdr, 0, sizeof(w->msgs[i].msg_hdr));
        w->msgs[i].msg_hdr.msg_name = &w->addrs[i];
        w->msgs[i].msg_hdr.msg_namelen = sizeof(w->addrs[i]);
        w->msgs[i].msg_hdr.msg_iov = &w->iovs[i];
        w->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, w->msgs, BATCH_CAP, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return;
    if (is_counting) {
        for (int i = 0; i < n; i++) {
            int g = soak_group_of(w->bufs + (size_t)i * DGRAM_CAP, w->msgs[i].msg_len);
            w->groups[i] = g;
            if (g < 0) {
                w->counts.other_rx++;
                continue;
            }
            w->counts.rx[g]++;
            w->counts.rx_bytes[g] += w->msgs[i].msg_len;
        }
    }
    if (is_sink)
        return;
    /* Reuse the receive headers: msg_name already holds the sender, msg_namelen its length. */
    for (int i = 0; i < n; i++) {
        w->iovs[i].iov_len = w->msgs[i].msg_len;
        w->failed[i] = false;
    }
    send_all(fd, w->msgs, (unsigned)n, w->failed);
    if (is_counting) {
        for (int i = 0; i < n; i++) {
            int g = w->groups[i];
            if (g >= 0 && w->failed[i])
                w->counts.tx_fail[g]++;
            else if (g >= 0)
                w->counts.tx[g]++;
        }
    }
}

/* The kernel's drop count of one socket (receive queue full, filter), or 0 if unknown. */
static uint64_t sock_drops(int fd)
{
    uint32_t mem[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mem);
    memset(mem, 0, sizeof(mem));
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) == -1 || len <= SK_MEMINFO_DROPS * 4)
        return 0;
    return mem[SK_MEMINFO_DROPS];
}

/* --stats: writes the summed counts as one JSON object to path (via path.tmp + rename). */
static int write_stats(const char *path, struct worker *workers, long n_threads)
{
    struct counts sum;
    memset(&sum, 0, sizeof(sum));
    uint64_t drops = 0;
    for (long t = 0; t < n_threads; t++) {
        const struct counts *c = &workers[t].counts;
        for (int g = 0; g < SOAK_GROUPS_MAX; g++) {
            sum.rx[g] += c->rx[g];
            sum.rx_bytes[g] += c->rx_bytes[g];
            sum.tx[g] += c->tx[g];
            sum.tx_fail[g] += c->tx_fail[g];
        }
        sum.other_rx += c->other_rx;
        for (unsigned i = 0; i < workers[t].n_fds; i++)
            drops += sock_drops(workers[t].fds[i]);
    }
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "{\"pid\": %ld, \"sink\": %s, \"sock_drops\": %llu, \"other_rx\": %llu, "
               "\"groups\": {",
            (long)getpid(), is_sink ? "true" : "false", (unsigned long long)drops,
            (unsigned long long)sum.other_rx);
    const char *sep = "";
    for (int g = 0; g < SOAK_GROUPS_MAX; g++) {
        if (!sum.rx[g] && !sum.tx[g] && !sum.tx_fail[g])
            continue;
        fprintf(f, "%s\"%d\": {\"rx\": %llu, \"rx_bytes\": %llu, \"tx\": %llu, "
                   "\"tx_fail\": %llu}",
                sep, g, (unsigned long long)sum.rx[g], (unsigned long long)sum.rx_bytes[g],
                (unsigned long long)sum.tx[g], (unsigned long long)sum.tx_fail[g]);
        sep = ", ";
    }
    fprintf(f, "}}\n");
    if (fclose(f) != 0 || rename(tmp, path) == -1)
        return -1;
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pollfd pfds[2];
    for (unsigned i = 0; i < w->n_fds; i++)
        pfds[i] = (struct pollfd){.fd = w->fds[i], .events = POLLIN};
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        int r = poll(pfds, w->n_fds, POLL_MS);
        if (r <= 0)
            continue;
        for (unsigned i = 0; i < w->n_fds; i++) {
            /* Drain a bounded number of batches per wakeup so shutdown stays prompt. */
            if (pfds[i].revents & (POLLIN | POLLERR))
                for (unsigned b = 0; b < 64; b++)
                    echo_batch(w, w->fds[i]);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    char *end;
    long port = strtol(argv[1], &end, 10);
    if (*end || port < 1 || port > 65535) {
        usage();
        return 2;
    }
    long n_threads = 1;
    bool has_v6 = false;
    const char *stats_path = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            n_threads = strtol(argv[++i], &end, 10);
            if (*end || n_threads < 1 || n_threads > THREADS_MAX) {
                usage();
                return 2;
            }
        } else if (!strcmp(argv[i], "--ipv6")) {
            has_v6 = true;
        } else if (!strcmp(argv[i], "--count")) {
            is_counting = true;
        } else if (!strcmp(argv[i], "--sink")) {
            is_sink = true;
            is_counting = true;
        } else if (!strcmp(argv[i], "--stats") && i + 1 < argc) {
            stats_path = argv[++i];
        } else {
            usage();
            return 2;
        }
    }

    /* Block the stop signals everywhere; main() takes them with sigwait(). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct worker *workers = calloc((size_t)n_threads, sizeof(*workers));
    if (!workers) {
        fprintf(stderr, "bench_echo: out of memory\n");
        return 1;
    }
    int rc = 1;
    long started = 0;
    for (long t = 0; t < n_threads; t++) {
        struct worker *w = &workers[t];
        w->bufs = malloc((size_t)BATCH_CAP * DGRAM_CAP);
        if (!w->bufs) {
            fprintf(stderr, "bench_echo: out of memory\n");
            goto out;
        }
        w->fds[w->n_fds] = open_sock(false, (unsigned short)port);
        if (w->fds[w->n_fds] == -1) {
            fprintf(stderr, "bench_echo: bind 127.0.0.1:%ld: %s\n", port, strerror(errno));
            goto out;
        }
        w->n_fds++;
        if (has_v6) {
            w->fds[w->n_fds] = open_sock(true, (unsigned short)port);
            if (w->fds[w->n_fds] == -1) {
                fprintf(stderr, "bench_echo: bind [::1]:%ld: %s\n", port, strerror(errno));
                goto out;
            }
            w->n_fds++;
        }
    }
    for (; started < n_threads; started++) {
        int e = pthread_create(&workers[started].thread, NULL, worker_main, &workers[started]);
        if (e) {
            fprintf(stderr, "bench_echo: pthread_create: %s\n", strerror(e));
            goto out;
        }
    }
    int sig;
    while (sigwait(&set, &sig) != 0)
        ;
    rc = 0;
out:
    atomic_store(&stop_flag, true);
    for (long t = 0; t < started; t++)
        pthread_join(workers[t].thread, NULL);
    if (rc == 0 && stats_path && write_stats(stats_path, workers, n_threads) == -1) {
        fprintf(stderr, "bench_echo: cannot write %s: %s\n", stats_path, strerror(errno));
        rc = 1;
    }
    for (long t = 0; t < n_threads; t++) {
        for (unsigned i = 0; i < workers[t].n_fds; i++)
            close(workers[t].fds[i]);
        free(workers[t].bufs);
    }
    free(workers);
    return rc;
}
