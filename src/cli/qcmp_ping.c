/* `quilkin qcmp ping ADDR [-a N]` (spec qcmp.md §5): sequential pings with a 1 s timeout
 * each, NTP-style round trip, a summary. Exits 0 when at least one ping succeeded, 1 when
 * none did (a deliberate deviation so health checks can see a dead proxy). */
#include "base/clock.h"
#include "base/log.h"
#include "cli/cli.h"
#include "net/addr.h"
#include "qcmp/codec.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define PING_TIMEOUT_MS 1000
#define MAX_AMOUNT 100000

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One attempt; returns the RTT in ns (>= 0 is success) or -1. */
/* Milliseconds to two decimals, as v0.7.0 prints them. */
static double round2(double ms)
{
    return (double)(int64_t)(ms * 100.0 + 0.5) / 100.0;
}

static int64_t ping_once(int fd, const struct sockaddr *to, socklen_t to_len, const char *ep)
{
    uint8_t nonce;
    if (getrandom(&nonce, 1, 0) != 1)
        nonce = (uint8_t)clock_mono_ns();
    struct qcmp_packet p = {.kind = QCMP_PING, .nonce = nonce,
                            .client_ts_ns = (int64_t)clock_unix_ns()};
    uint8_t buf[512];
    size_t n = qcmp_encode(&p, buf);
    if (sendto(fd, buf, n, 0, to, to_len) == -1) {
        LOG_ERROR_F("cli::qcmp", LOG_FIELDS(LF_STR("endpoint", ep), LF_STR("error", strerror(errno))),
                    "send failed");
        return -1;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&pfd, 1, PING_TIMEOUT_MS);
    while (r == -1 && errno == EINTR);
    if (r <= 0) {
        LOG_ERROR_F("cli::qcmp", LOG_FIELDS(LF_STR("endpoint", ep)), "exceeded timeout duration");
        return -1;
    }
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    int64_t t_recv = (int64_t)clock_unix_ns();
    struct qcmp_packet reply;
    const char *why = "not a QCMP packet";
    if (got < 0 || qcmp_parse(buf, (size_t)got, &reply, &why) != QCMP_OK ||
        reply.kind != QCMP_PING_REPLY) {
        /* v0.7.0 panics here; we count the attempt as failed */
        LOG_ERROR_F("cli::qcmp",
                    LOG_FIELDS(LF_STR("endpoint", ep),
                               LF_STR("error", got < 0 ? strerror(errno) : why)),
                    "invalid reply");
        return -1;
    }
    if (reply.nonce != nonce) {
        LOG_ERROR_F("cli::qcmp",
                    LOG_FIELDS(LF_U64("sent_nonce", nonce), LF_U64("recv_nonce", reply.nonce)),
                    "mismatched nonces");
        return -1;
    }
    int64_t rtt = (t_recv - reply.client_ts_ns) -
                  (reply.server_send_ts_ns - reply.server_recv_ts_ns);
    if (rtt < 0)
        rtt = 0; /* a server clock running backwards cannot make the network faster */
    LOG_INFO_F("cli::qcmp", LOG_FIELDS(LF_F64("delay_millis", round2((double)rtt / 1e6))),
               "successful ping");
    return rtt;
}

int cli_qcmp(const struct global_opts *g, int argc, char **argv)
{
    (void)g;
    if (argc < 2 || strcmp(argv[1], "ping") != 0)
        cli_usage_error("usage: quilkin qcmp ping <ENDPOINT> [-a|--amount <N>]");
    argc--;
    argv++;
    uint64_t amount = 5;
    static const struct option opts[] = {
        {"amount", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "a:h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            amount = cli_parse_u64("--amount <AMOUNT>", optarg);
            break;
        case 'h':
            puts("Usage: quilkin qcmp ping <ENDPOINT> [-a|--amount <AMOUNT>]\n\n"
                 "Pings a QCMP responder and prints each round trip and a summary.");
            return 0;
        default:
            cli_usage_error("invalid option for 'qcmp ping'");
        }
    }
    if (optind + 1 != argc)
        cli_usage_error("'qcmp ping' takes exactly one <ENDPOINT> (IP:PORT or [IPv6]:PORT)");
    if (amount == 0 || amount > MAX_AMOUNT)
        cli_usage_error("invalid value for '--amount': must be 1..=%d", MAX_AMOUNT);
    const char *ep = argv[optind];
    struct addr target;
    if (addr_parse(ep, &target) < 0)
        cli_usage_error("invalid value '%s' for '<ENDPOINT>': expected IP:PORT or [IPv6]:PORT",
                        ep);
    int fd;
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } to;
    socklen_t to_len;
    memset(&to, 0, sizeof(to));
    if (target.family == AF_INET) {
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        to.v4.sin_family = AF_INET;
        to.v4.sin_port = htons(target.port);
        memcpy(&to.v4.sin_addr, target.ip, 4);
        to_len = sizeof(to.v4);
    } else {
        fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        addr_to_sin6(&target, &to.v6);
        to_len = sizeof(to.v6);
    }
    if (fd == -1) {
        fprintf(stderr, "quilkin: cannot create a UDP socket: %s\n", strerror(errno));
        return EXIT_RUNTIME;
    }
    int64_t *rtts = calloc(amount, sizeof(*rtts));
    if (!rtts) {
        close(fd);
        fprintf(stderr, "quilkin: out of memory\n");
        return EXIT_RUNTIME;
    }
    size_t ok = 0;
    for (uint64_t i = 0; i < amount; i++) {
        int64_t rtt = ping_once(fd, (struct sockaddr *)&to, to_len, ep);
        if (rtt >= 0)
            rtts[ok++] = rtt;
    }
    close(fd);
    int status = 0;
    if (ok) {
        qsort(rtts, ok, sizeof(*rtts), cmp_i64);
        int64_t median = ok % 2 ? rtts[ok / 2] : (rtts[ok / 2 - 1] + rtts[ok / 2]) / 2;
        int64_t sum = 0;
        for (size_t i = 0; i < ok; i++)
            sum += rtts[i];
        LOG_INFO_F("cli::qcmp",
                   LOG_FIELDS(LF_F64("median_millis", round2((double)median / 1e6)),
                              LF_F64("average_millis", round2((double)(sum / (int64_t)ok) / 1e6)),
                              LF_U64("attempts", amount), LF_U64("successful_attempts", ok)),
                   "final results");
    } else {
        LOG_ERROR("cli::qcmp", "no successful results");
        status = 1;
    }
    free(rtts);
    return status;
}
