/* `quilkin qcmp ping ADDR [-a N]` (spec qcmp.md §5): sequential pings with a 1 s timeout
 * each, NTP-style round trip, a summary. Exits 0 when at least one ping succeeded, 1 when
 * none did (a deliberate deviation so health checks can see a dead proxy). */
#include "base/clock.h"
#include "base/log.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "net/addr.h"
#include "qcmp/codec.h"

#include <errno.h>
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

static const struct cli_opt ping_opts[] = {
    {.id = 'a', .short_name = 'a', .long_name = "amount", .value_name = "AMOUNT",
     .value = CLI_VALUE_TEXT, .def = "5", .help = "The number of pings to send"},
    {.id = CLI_OPT_HELP, .short_name = 'h', .long_name = "help", .help = "Print help"},
};

static const struct cli_arg ping_args[] = {
    {.name = "ENDPOINT", .help = "The QCMP responder to ping: IP:PORT or [IPv6]:PORT"},
};

static const struct cli_command ping_cmd = {
    .name = "ping",
    .about = "Pings a QCMP responder and prints each round trip and a summary",
    .usage = "[OPTIONS] <ENDPOINT>",
    .opts = ping_opts,
    .n_opts = sizeof(ping_opts) / sizeof(ping_opts[0]),
    .args = ping_args,
    .n_args = 1,
};

static const struct cli_command *const qcmp_subs[] = {&ping_cmd, &cli_help_cmd};

const struct cli_command cli_qcmp_cmd = {
    .name = "qcmp",
    .about = "Quilkin Control Message Protocol (QCMP) tools",
    .usage = "<COMMAND>",
    .opts = cli_help_only,
    .n_opts = 1,
    .subs = qcmp_subs,
    .n_subs = 2,
};

int cli_qcmp(const struct global_opts *g, int argc, char **argv)
{
    (void)g;
    struct cli_parser p;
    cli_parser_init(&p, &cli_qcmp_cmd, &cli_root_cmd, "quilkin qcmp", argc, argv, true);
    while (cli_next(&p) != CLI_END) {
    }
    if (argc < 2) {
        /* clap's arg_required_else_help for a command of sub-commands */
        cli_print_help(stderr, &cli_qcmp_cmd, "quilkin qcmp");
        return EXIT_USAGE;
    }
    if (p.ind >= argc)
        cli_fail_missing_sub(&cli_qcmp_cmd, "quilkin qcmp");
    const struct cli_command *sub = cli_find_sub(&cli_qcmp_cmd, argv[p.ind]);
    if (!sub)
        cli_fail_unknown_sub(&cli_qcmp_cmd, "quilkin qcmp", argv[p.ind]);
    if (sub == &cli_help_cmd)
        return cli_help(&cli_qcmp_cmd, "quilkin qcmp", argc - p.ind, argv + p.ind);
    uint64_t amount = 5;
    const char *ep = NULL;
    struct cli_parser pp;
    cli_parser_init(&pp, &ping_cmd, &cli_root_cmd, "quilkin qcmp ping", argc - p.ind,
                    argv + p.ind, false);
    int c;
    while ((c = cli_next(&pp)) != CLI_END) {
        if (c == 'a') {
            amount = cli_parse_u64("--amount <AMOUNT>", pp.arg);
        } else if (c == CLI_OPERAND) {
            if (ep)
                cli_fail_unexpected(&ping_cmd, "quilkin qcmp ping", pp.arg);
            ep = pp.arg;
        }
    }
    if (!ep)
        cli_usage_error("the following required arguments were not provided:\n  <ENDPOINT>\n\n"
                        "Usage: quilkin qcmp ping <ENDPOINT>");
    if (amount == 0 || amount > MAX_AMOUNT)
        cli_usage_error("invalid value for '--amount': must be 1..=%d", MAX_AMOUNT);
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
