/* `quilkin proxy`: options (spec cli.md §2.1), start-up order, the control loop (signals,
 * graceful drain) and exit codes. Owns the workers and the published snapshot. */
#include "admin/http.h"
#include "base/build_info.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/strbuf.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "cli/proxy_state.h"
#include "config/config.h"
#include "config/dump.h"
#include "config/watch.h"
#include "net/addr.h"
#include "net/sock.h"
#include "proxy/ip_limit.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "xds/ads_client.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_TO 1024
#define DEFAULT_PORT 7777
#define DEFAULT_QCMP_PORT 7600
#define DEFAULT_SESSION_TIMEOUT_SECS 60
#define DEFAULT_MAX_SESSIONS 65536
/* Issue 9: a spoofed source sends once and never again; conntrack keeps unreplied UDP 30 s,
 * we keep sessions that were never confirmed (client packet, reply, client packet) 10 s. */
#define DEFAULT_UNCONFIRMED_TIMEOUT_SECS 10
/* Generous: players behind one carrier-grade NAT address share it. */
#define DEFAULT_MAX_SESSIONS_PER_IP 4096
/* QCMP: a client pings a few times a second; 20/s with a burst of 40 never limits it, and
 * bounds what one spoofed victim address can be sent to 660 bytes/s per worker. */
/* xDS: a dead link is noticed within interval + timeout, 15 s, not ~15 minutes of TCP
 * retransmissions (issue 10) */
#define DEFAULT_XDS_KEEPALIVE_SECS 10
#define DEFAULT_XDS_KEEPALIVE_TIMEOUT_SECS 5
#define DEFAULT_QCMP_SOURCE_RATE 20
#define DEFAULT_QCMP_GLOBAL_RATE 20000
#define FD_RESERVE 256 /* descriptors kept for listeners, admin, config, logs */
#define GAME_SOCKET_BUF (4 * 1024 * 1024)
#define MAX_COALESCE_US 1000 /* a millisecond: beyond that players notice */
#define RELOAD_DEBOUNCE_NS (100 * 1000000ull) /* editors write in several steps */
#define WATCH_CHECK_NS (1000 * 1000000ull)    /* fallback identity check of the file */

enum {
    OPT_MMDB = 256,
    OPT_IDLE,
    OPT_TIMEOUT,
    OPT_MAX_SESSIONS,
    OPT_WORKERS,
    OPT_UNCONFIRMED,
    OPT_PER_IP,
    OPT_QCMP_SOURCE,
    OPT_QCMP_GLOBAL,
    OPT_REGION,
    OPT_ZONE,
    OPT_SUB_ZONE,
    OPT_KEEPALIVE,
    OPT_KEEPALIVE_TIMEOUT,
    OPT_TLS_CA,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_CHECK,
    OPT_IO_BACKEND,
    OPT_COALESCE,
};

static const char *const io_backends[] = {"auto", "io-uring", "epoll", NULL};

/* v0.7.0's options first, in its order, then the extensions. */
static const struct cli_opt proxy_opts[] = {
    {.id = 'm', .short_name = 'm', .long_name = "management-server",
     .value_name = "MANAGEMENT_SERVER", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_MANAGEMENT_SERVER", .flags = CLI_REPEAT,
     .help = "One or more `quilkin manage` endpoints (http[s]://HOST:PORT) to listen to for "
             "config changes"},
    {.id = OPT_MMDB, .long_name = "mmdb", .value_name = "MMDB", .value = CLI_VALUE_FILE,
     .env = "MMDB",
     .help = "A MaxMind/IPinfo ASN database file: fills the asn and ip_prefix metric labels; "
             "reloaded when the file changes"},
    {.id = 'p', .short_name = 'p', .long_name = "port", .value_name = "PORT",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_PORT", .def = "7777",
     .help = "The port to listen on for game traffic"},
    {.id = 'q', .short_name = 'q', .long_name = "qcmp-port", .value_name = "QCMP_PORT",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_QCMP_PORT", .def = "7600",
     .help = "The port of the QCMP ping responder"},
    {.id = 't', .short_name = 't', .long_name = "to", .value_name = "TO",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_DEST", .flags = CLI_REPEAT,
     .help = "One or more socket addresses (IP:PORT) to forward packets to"},
    {.id = OPT_IDLE, .long_name = "idle-request-interval-secs",
     .value_name = "IDLE_REQUEST_INTERVAL_SECS", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_IDLE_REQUEST_INTERVAL_SECS", .def = "30",
     .help = "Re-send the xDS subscriptions after this many seconds without a response"},
    {.id = OPT_CHECK, .long_name = "check",
     .help = "Validate the configuration and exit: 0 when the proxy would start, 255 with the "
             "error when it would not; binds no socket (extension)"},
    {.id = OPT_REGION, .long_name = "region", .value_name = "REGION", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_REGION", .help = "Locality sent to the management server (extension)"},
    {.id = OPT_ZONE, .long_name = "zone", .value_name = "ZONE", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_ZONE", .help = "Locality zone (extension)"},
    {.id = OPT_SUB_ZONE, .long_name = "sub-zone", .value_name = "SUB_ZONE",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_SUB_ZONE",
     .help = "Locality sub-zone (extension)"},
    {.id = OPT_KEEPALIVE, .long_name = "xds-keepalive-interval-secs", .value_name = "SECS",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_XDS_KEEPALIVE_INTERVAL_SECS", .def = "10",
     .help = "HTTP/2 PING after this long without a byte from the management server; 0: off "
             "(extension)"},
    {.id = OPT_KEEPALIVE_TIMEOUT, .long_name = "xds-keepalive-timeout-secs",
     .value_name = "SECS", .value = CLI_VALUE_TEXT, .env = "QUILKIN_XDS_KEEPALIVE_TIMEOUT_SECS",
     .def = "5", .help = "The link is dead when a PING is unanswered this long (extension)"},
    {.id = OPT_TLS_CA, .long_name = "xds-tls-ca", .value_name = "FILE", .value = CLI_VALUE_FILE,
     .env = "QUILKIN_XDS_TLS_CA", .def = "the system CA store",
     .help = "CA bundle (PEM) that https:// management servers are checked against "
             "(extension)"},
    {.id = OPT_TLS_CERT, .long_name = "xds-tls-cert", .value_name = "FILE",
     .value = CLI_VALUE_FILE, .env = "QUILKIN_XDS_TLS_CERT",
     .help = "Client certificate (PEM) for mTLS (extension)"},
    {.id = OPT_TLS_KEY, .long_name = "xds-tls-key", .value_name = "FILE",
     .value = CLI_VALUE_FILE, .env = "QUILKIN_XDS_TLS_KEY",
     .help = "Its private key (PEM) (extension)"},
    {.id = OPT_TIMEOUT, .long_name = "session-timeout-secs", .value_name = "SECS",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_SESSION_TIMEOUT_SECS", .def = "60",
     .help = "Idle session timeout, 1..86400 (extension)"},
    {.id = OPT_UNCONFIRMED, .long_name = "unconfirmed-session-timeout-secs",
     .value_name = "SECS", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_UNCONFIRMED_SESSION_TIMEOUT_SECS", .def = "10",
     .help = "Timeout of sessions whose client has not sent again since the server's first "
             "reply; 0: off (extension)"},
    {.id = OPT_PER_IP, .long_name = "max-sessions-per-ip", .value_name = "N",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_MAX_SESSIONS_PER_IP", .def = "4096",
     .help = "Sessions one client address (IPv6: /64) may hold; 0: no limit (extension)"},
    {.id = OPT_QCMP_SOURCE, .long_name = "qcmp-source-rate", .value_name = "N",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_QCMP_SOURCE_RATE", .def = "20",
     .help = "QCMP replies per second per source address, burst 2N; 0: no limit (extension)"},
    {.id = OPT_QCMP_GLOBAL, .long_name = "qcmp-global-rate", .value_name = "N",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_QCMP_GLOBAL_RATE", .def = "20000",
     .help = "QCMP replies per second in all; 0: no limit (extension)"},
    {.id = OPT_MAX_SESSIONS, .long_name = "max-sessions", .value_name = "N",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_MAX_SESSIONS",
     .def = "65536, capped by the open-files limit",
     .help = "Session table limit (extension)"},
    {.id = OPT_WORKERS, .long_name = "workers", .value_name = "N", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_WORKERS", .def = "one per available CPU",
     .help = "Worker threads (extension)"},
    {.id = OPT_IO_BACKEND, .long_name = "io-backend", .value_name = "IO_BACKEND",
     .value = CLI_VALUE_CHOICE, .choices = io_backends, .env = "QUILKIN_IO_BACKEND",
     .def = "auto",
     .help = "How workers move datagrams: io-uring, epoll, or auto (io_uring when the kernel "
             "and seccomp allow it, else epoll) (extension)"},
    {.id = OPT_COALESCE, .long_name = "coalesce-us", .value_name = "MICROSECONDS",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_COALESCE_US", .def = "0",
     .help = "Under steady load, let datagrams gather up to this long before a worker wakes "
             "for them: less CPU per datagram for at most this much added latency; 0: off, "
             "at most 1000 (extension)"},
    {.id = CLI_OPT_HELP, .short_name = 'h', .long_name = "help", .help = "Print help"},
};

const struct cli_command cli_proxy_cmd = {
    .name = "proxy",
    .about = "Run Quilkin as a UDP reverse proxy",
    .usage = "[OPTIONS]",
    .opts = proxy_opts,
    .n_opts = sizeof(proxy_opts) / sizeof(proxy_opts[0]),
};

#define MAX_MANAGEMENT_SERVERS 64

struct proxy_opts {
    const char *management_servers[MAX_MANAGEMENT_SERVERS];
    size_t n_management_servers;
    uint64_t idle_request_secs;
    uint16_t port, qcmp_port;
    struct addr to[MAX_TO];
    size_t n_to;
    uint64_t session_timeout_secs;
    uint64_t max_sessions; /* 0: default */
    uint64_t unconfirmed_timeout_secs; /* 0: off */
    uint64_t max_sessions_per_ip;      /* 0: no limit */
    uint64_t qcmp_source_rate, qcmp_global_rate; /* replies/s; 0: no limit */
    const char *region, *zone, *sub_zone;        /* node.locality for xDS; NULL: unset */
    uint64_t keepalive_secs, keepalive_timeout_secs; /* xDS link keepalive */
    const char *tls_ca, *tls_cert, *tls_key;         /* xDS over TLS; NULL: unset */
    uint64_t workers;      /* 0: one per CPU */
    const char *mmdb;      /* --mmdb: ASN database file; NULL: none */
    bool is_check;         /* --check: validate the configuration and exit */
    enum io_backend io;    /* --io-backend */
    uint64_t coalesce_us;  /* --coalesce-us; 0: off */
};

static enum io_backend parse_io_backend(const char *what, const char *text)
{
    if (strcmp(text, "auto") == 0)
        return IO_BACKEND_AUTO;
    if (strcmp(text, "io-uring") == 0)
        return IO_BACKEND_URING;
    if (strcmp(text, "epoll") == 0)
        return IO_BACKEND_EPOLL;
    cli_usage_error("invalid value '%s' for '%s'\n  [possible values: auto, io-uring, epoll]",
                    text, what);
}

static void add_to(struct proxy_opts *o, const char *text)
{
    if (o->n_to == MAX_TO)
        cli_usage_error("too many '--to' values (at most %d)", MAX_TO);
    if (addr_parse(text, &o->to[o->n_to]) < 0)
        cli_usage_error("invalid value '%s' for '--to <TO>': expected IP:PORT or [IPv6]:PORT",
                        text);
    o->n_to++;
}

static void parse_options(struct proxy_opts *o, int argc, char **argv)
{
    const char *env;
    o->port = DEFAULT_PORT;
    o->qcmp_port = DEFAULT_QCMP_PORT;
    o->session_timeout_secs = DEFAULT_SESSION_TIMEOUT_SECS;
    o->idle_request_secs = 30;
    o->unconfirmed_timeout_secs = DEFAULT_UNCONFIRMED_TIMEOUT_SECS;
    o->max_sessions_per_ip = DEFAULT_MAX_SESSIONS_PER_IP;
    o->qcmp_source_rate = DEFAULT_QCMP_SOURCE_RATE;
    o->qcmp_global_rate = DEFAULT_QCMP_GLOBAL_RATE;
    o->keepalive_secs = DEFAULT_XDS_KEEPALIVE_SECS;
    o->keepalive_timeout_secs = DEFAULT_XDS_KEEPALIVE_TIMEOUT_SECS;
    if ((env = getenv("QUILKIN_XDS_KEEPALIVE_INTERVAL_SECS")))
        o->keepalive_secs = cli_parse_u64("QUILKIN_XDS_KEEPALIVE_INTERVAL_SECS", env);
    if ((env = getenv("QUILKIN_XDS_KEEPALIVE_TIMEOUT_SECS")))
        o->keepalive_timeout_secs = cli_parse_u64("QUILKIN_XDS_KEEPALIVE_TIMEOUT_SECS", env);
    o->region = getenv("QUILKIN_REGION");
    o->zone = getenv("QUILKIN_ZONE");
    o->sub_zone = getenv("QUILKIN_SUB_ZONE");
    o->tls_ca = getenv("QUILKIN_XDS_TLS_CA");
    o->tls_cert = getenv("QUILKIN_XDS_TLS_CERT");
    o->tls_key = getenv("QUILKIN_XDS_TLS_KEY");
    o->mmdb = getenv("MMDB");
    if ((env = getenv("QUILKIN_MANAGEMENT_SERVER")) && *env)
        o->management_servers[o->n_management_servers++] = env;
    if ((env = getenv("QUILKIN_IDLE_REQUEST_INTERVAL_SECS")))
        o->idle_request_secs = cli_parse_u64("QUILKIN_IDLE_REQUEST_INTERVAL_SECS", env);
    bool ms_from_cli = false;
    if ((env = getenv("QUILKIN_PORT")))
        o->port = cli_parse_u16("QUILKIN_PORT", env);
    if ((env = getenv("QUILKIN_QCMP_PORT")))
        o->qcmp_port = cli_parse_u16("QUILKIN_QCMP_PORT", env);
    if ((env = getenv("QUILKIN_SESSION_TIMEOUT_SECS")))
        o->session_timeout_secs = cli_parse_u64("QUILKIN_SESSION_TIMEOUT_SECS", env);
    if ((env = getenv("QUILKIN_MAX_SESSIONS")))
        o->max_sessions = cli_parse_u64("QUILKIN_MAX_SESSIONS", env);
    if ((env = getenv("QUILKIN_UNCONFIRMED_SESSION_TIMEOUT_SECS")))
        o->unconfirmed_timeout_secs =
            cli_parse_u64("QUILKIN_UNCONFIRMED_SESSION_TIMEOUT_SECS", env);
    if ((env = getenv("QUILKIN_MAX_SESSIONS_PER_IP")))
        o->max_sessions_per_ip = cli_parse_u64("QUILKIN_MAX_SESSIONS_PER_IP", env);
    if ((env = getenv("QUILKIN_QCMP_SOURCE_RATE")))
        o->qcmp_source_rate = cli_parse_u64("QUILKIN_QCMP_SOURCE_RATE", env);
    if ((env = getenv("QUILKIN_QCMP_GLOBAL_RATE")))
        o->qcmp_global_rate = cli_parse_u64("QUILKIN_QCMP_GLOBAL_RATE", env);
    if ((env = getenv("QUILKIN_WORKERS")))
        o->workers = cli_parse_u64("QUILKIN_WORKERS", env);
    if ((env = getenv("QUILKIN_IO_BACKEND")))
        o->io = parse_io_backend("QUILKIN_IO_BACKEND", env);
    if ((env = getenv("QUILKIN_COALESCE_US")))
        o->coalesce_us = cli_parse_u64("QUILKIN_COALESCE_US", env);
    bool to_from_cli = false;

    struct cli_parser p;
    cli_parser_init(&p, &cli_proxy_cmd, &cli_root_cmd, "quilkin proxy", argc, argv, false);
    int c;
    while ((c = cli_next(&p)) != CLI_END) {
        const char *val = p.arg;
        switch (c) {
        case 'm':
            if (!ms_from_cli)
                o->n_management_servers = 0; /* the command line overrides the env var */
            ms_from_cli = true;
            if (o->n_management_servers == MAX_MANAGEMENT_SERVERS)
                cli_usage_error("too many '--management-server' values");
            o->management_servers[o->n_management_servers++] = val;
            break;
        case OPT_MMDB:
            o->mmdb = val;
            break;
        case 'p':
            o->port = cli_parse_u16("--port <PORT>", val);
            break;
        case 'q':
            o->qcmp_port = cli_parse_u16("--qcmp-port <QCMP_PORT>", val);
            break;
        case 't':
            if (!to_from_cli)
                o->n_to = 0; /* the command line overrides QUILKIN_DEST */
            to_from_cli = true;
            add_to(o, val);
            break;
        case OPT_IDLE:
            o->idle_request_secs = cli_parse_u64("--idle-request-interval-secs <SECS>", val);
            break;
        case OPT_TIMEOUT:
            o->session_timeout_secs = cli_parse_u64("--session-timeout-secs <SECS>", val);
            break;
        case OPT_MAX_SESSIONS:
            o->max_sessions = cli_parse_u64("--max-sessions <N>", val);
            break;
        case OPT_WORKERS:
            o->workers = cli_parse_u64("--workers <N>", val);
            break;
        case OPT_IO_BACKEND:
            o->io = parse_io_backend("--io-backend <IO_BACKEND>", val);
            break;
        case OPT_COALESCE:
            o->coalesce_us = cli_parse_u64("--coalesce-us <MICROSECONDS>", val);
            break;
        case OPT_UNCONFIRMED:
            o->unconfirmed_timeout_secs =
                cli_parse_u64("--unconfirmed-session-timeout-secs <SECS>", val);
            break;
        case OPT_PER_IP:
            o->max_sessions_per_ip = cli_parse_u64("--max-sessions-per-ip <N>", val);
            break;
        case OPT_QCMP_SOURCE:
            o->qcmp_source_rate = cli_parse_u64("--qcmp-source-rate <N>", val);
            break;
        case OPT_QCMP_GLOBAL:
            o->qcmp_global_rate = cli_parse_u64("--qcmp-global-rate <N>", val);
            break;
        case OPT_REGION:
            o->region = val;
            break;
        case OPT_ZONE:
            o->zone = val;
            break;
        case OPT_SUB_ZONE:
            o->sub_zone = val;
            break;
        case OPT_KEEPALIVE:
            o->keepalive_secs = cli_parse_u64("--xds-keepalive-interval-secs <SECS>", val);
            break;
        case OPT_KEEPALIVE_TIMEOUT:
            o->keepalive_timeout_secs =
                cli_parse_u64("--xds-keepalive-timeout-secs <SECS>", val);
            break;
        case OPT_TLS_CA:
            o->tls_ca = val;
            break;
        case OPT_TLS_CERT:
            o->tls_cert = val;
            break;
        case OPT_TLS_KEY:
            o->tls_key = val;
            break;
        case OPT_CHECK:
            o->is_check = true;
            break;
        case CLI_OPERAND:
            cli_fail_unexpected(&cli_proxy_cmd, "quilkin proxy", val);
        default:
            break;
        }
    }
    if (!to_from_cli && (env = getenv("QUILKIN_DEST")) && *env)
        add_to(o, env);
    if (o->n_to && o->n_management_servers)
        cli_usage_error("the argument '--to <TO>' cannot be used with "
                        "'--management-server <URL>'");
    if (o->session_timeout_secs == 0 || o->session_timeout_secs > 86400)
        cli_usage_error("invalid value for '--session-timeout-secs': must be 1..=86400");
    /* issue 10: 4294967295 wrapped the client's millisecond arithmetic into a busy loop */
    if (o->idle_request_secs > 86400)
        cli_usage_error("invalid value for '--idle-request-interval-secs': must be 0..=86400 "
                        "(0 is taken as 1)");
    if (o->keepalive_secs > 3600 || o->keepalive_timeout_secs < 1 ||
        o->keepalive_timeout_secs > 3600)
        cli_usage_error("invalid xDS keepalive: the interval must be 0..=3600 s and the "
                        "timeout 1..=3600 s");
    if (!o->tls_cert != !o->tls_key)
        cli_usage_error("'--xds-tls-cert <FILE>' and '--xds-tls-key <FILE>' go together");
    if (o->unconfirmed_timeout_secs > 86400)
        cli_usage_error("invalid value for '--unconfirmed-session-timeout-secs': must be "
                        "0..=86400");
    if (o->max_sessions_per_ip > UINT32_MAX)
        cli_usage_error("invalid value for '--max-sessions-per-ip': must be 0..=%u",
                        UINT32_MAX);
    if (o->qcmp_source_rate > 1000000 || o->qcmp_global_rate > 100000000)
        cli_usage_error("invalid QCMP rate: at most 1000000 per source and 100000000 in all");
    if (o->coalesce_us > MAX_COALESCE_US)
        cli_usage_error("invalid value for '--coalesce-us': must be 0..=%d", MAX_COALESCE_US);
    if (o->workers > MAX_WORKERS)
        cli_usage_error("invalid value for '--workers': must be 0..=%d", MAX_WORKERS);
}

/* CPUs this process may run on, further limited by a cgroup v2 CPU quota. */
static unsigned available_cpus(void)
{
    cpu_set_t set;
    unsigned n = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        n = (unsigned)CPU_COUNT(&set);
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32];
        unsigned long period;
        if (fscanf(f, "%31s %lu", quota, &period) == 2 && strcmp(quota, "max") != 0 &&
            period > 0) {
            unsigned long q = strtoul(quota, NULL, 10);
            unsigned lim = (unsigned)((q + period - 1) / period);
            if (lim >= 1 && lim < n)
                n = lim;
        }
        fclose(f);
    }
    return n;
}

static unsigned long read_sysctl(const char *path)
{
    unsigned long v = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%lu", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* Issue 9: the kernel silently caps the buffers asked for at net.core.{r,w}mem_max; say
 * what was granted, and how to get more (a burst larger than the queue is dropped by the
 * kernel, counted in quilkin_kernel_drops_total). */
static void log_socket_buffers(int fd)
{
    int rcv = 0, snd = 0;
    if (sock_buffer_sizes(fd, &rcv, &snd) < 0)
        return;
    if (rcv >= GAME_SOCKET_BUF && snd >= GAME_SOCKET_BUF) {
        LOG_INFO_F("proxy", LOG_FIELDS(LF_U64("receive_bytes", rcv), LF_U64("send_bytes", snd)),
                   "game socket buffers");
        return;
    }
    LOG_WARN_F("proxy",
               LOG_FIELDS(LF_U64("receive_bytes", rcv), LF_U64("send_bytes", snd),
                          LF_U64("asked_bytes", GAME_SOCKET_BUF),
                          LF_U64("rmem_max", read_sysctl("/proc/sys/net/core/rmem_max")),
                          LF_U64("wmem_max", read_sysctl("/proc/sys/net/core/wmem_max"))),
               "game socket buffers are smaller than asked (capped by net.core.rmem_max / "
               "wmem_max): bursts beyond them are dropped by the kernel "
               "(quilkin_kernel_drops_total). Raise them with sysctl -w "
               "net.core.rmem_max=%d net.core.wmem_max=%d",
               GAME_SOCKET_BUF, GAME_SOCKET_BUF);
}

static uint32_t total_sessions(const struct proxy_state *ps)
{
    uint32_t sum = 0;
    for (unsigned i = 0; i < ps->n_workers; i++)
        sum += worker_session_count(ps->workers[i]);
    return sum;
}

static void log_stats(const struct proxy_state *ps)
{
    struct worker_stats *s = calloc(1, sizeof(*s));
    if (!s)
        return;
    for (unsigned i = 0; i < ps->n_workers; i++)
        worker_stats_add(ps->workers[i], s);
    /* events of clients with ASN labels are counted apart (proxy/geo.h) */
    struct geo_scrape *geo = geo_scrape_collect(ps);
    uint64_t packets[2] = {s->packets_read, s->packets_write};
    uint64_t bytes[2] = {s->bytes_read, s->bytes_write};
    geo_scrape_totals(geo, packets, bytes);
    LOG_INFO("proxy",
             "totals: read %lu packets / %lu bytes, write %lu packets / %lu bytes, "
             "sessions created %lu, expired %lu, upstream errors %lu, "
             "QCMP pings %lu, replies %lu, invalid %lu",
             (unsigned long)packets[0], (unsigned long)bytes[0], (unsigned long)packets[1],
             (unsigned long)bytes[1],
             (unsigned long)s->sessions_created, (unsigned long)s->sessions_expired,
             (unsigned long)(s->upstream_errors[UPSTREAM_ERR_REFUSED] +
                             s->upstream_errors[UPSTREAM_ERR_HOST] +
                             s->upstream_errors[UPSTREAM_ERR_NET] +
                             s->upstream_errors[UPSTREAM_ERR_OTHER]),
             (unsigned long)s->qcmp_pings,
             (unsigned long)s->qcmp_replies, (unsigned long)s->qcmp_invalid);
    for (int r = 0; r < DROP_REASON_COUNT; r++) {
        const char *text = drop_reason_text((enum drop_reason)r);
        uint64_t n = s->drops[r] + geo_scrape_drops_of(geo, text);
        if (n)
            LOG_INFO("proxy", "dropped %lu packets: %s", (unsigned long)n, text);
    }
    geo_scrape_free(geo);
    free(s);
}

/* Publishes snap (taking ownership) and records what the admin endpoints report about it.
 * Control thread. */
static void publish(struct proxy_state *ps, struct snapshot *snap)
{
    config_view_set(&ps->view, snap->cfg);
    atomic_store(&ps->n_groups, (uint32_t)snap->cfg->n_groups);
    atomic_store(&ps->n_endpoints, snap->n_eps);
    snapshot_publish(snap);
}

/* Re-reads the config file and, when it is valid, swaps it in. Existing sessions stay in
 * the workers' tables (they do not point into snapshots); packets simply follow the new
 * endpoints and chain from their next batch on. A bad file changes nothing. */
static void reload(struct proxy_state *ps, const char *path, const struct proxy_opts *o)
{
    struct err e = {{0}};
    struct config *cfg = NULL;
    struct snapshot *snap = NULL;
    int rc = config_read_file(path, &cfg, &e);
    if (rc == 0 && o->n_to && config_set_unlocated(cfg, o->to, o->n_to) < 0)
        rc = err_set(&e, "out of memory");
    if (rc == 0 && config_endpoint_count(cfg) == 0)
        rc = err_set(&e, "the new configuration has no endpoint; keeping the current one");
    if (rc == 0 && snapshot_create(cfg, ps->n_workers, snapshot_current(), &snap, &e) < 0)
        rc = -EINVAL;
    if (rc < 0) {
        config_destroy(cfg);
        atomic_fetch_add(&ps->reloads_failed, 1);
        LOG_ERROR_F("config", LOG_FIELDS(LF_STR("path", path), LF_STR("error", e.msg)),
                    "reload rejected, the previous configuration keeps running: %s", e.msg);
        return;
    }
    uint32_t n_eps = snap->n_eps;
    size_t n_filters = snap->chain.n, n_kept = snap->chain.n_kept;
    publish(ps, snap);
    atomic_fetch_add(&ps->reloads_ok, 1);
    LOG_INFO_F("config",
               LOG_FIELDS(LF_STR("path", path), LF_U64("endpoints", n_eps),
                          LF_U64("filters", n_filters), LF_U64("kept_filters", n_kept)),
               "config reloaded");
}

/* What SIGHUP does (systemd's ExecReload, supervisord, operators): re-read the config file
 * now, by the same rules as a change seen by the watch. Never ends the process. */
static void on_sighup(struct proxy_state *ps, struct config_watch *watch, const char *path,
                      bool draining, const struct proxy_opts *o)
{
    if (o->n_management_servers) {
        LOG_INFO("config", "SIGHUP: the configuration comes from the management server; "
                           "nothing to re-read");
    } else if (!path[0]) {
        LOG_WARN("config", "SIGHUP: no configuration file was loaded; nothing to re-read");
    } else if (draining) {
        LOG_INFO("config", "SIGHUP: shutting down; %s is not re-read", path);
    } else {
        LOG_INFO_F("config", LOG_FIELDS(LF_STR("path", path)), "SIGHUP: re-reading %s", path);
        if (watch)
            config_watch_check(watch); /* take in the file's identity: no second reload */
        reload(ps, path, o);
    }
}

/* --mmdb: the ASN database file, watched like the config file. A change swaps in the new
 * database once it opens; a bad or half-written file is logged and the old one stays. */
struct mmdb_watch {
    const char *path;           /* NULL: no --mmdb */
    struct config_watch *watch; /* NULL: not watched */
    uint64_t reload_at;         /* debounce deadline; 0: none pending */
};

/* Opens the database at path and makes it the one new sessions are looked up in. Control
 * thread. */
static void mmdb_load(struct proxy_state *ps, const char *path, bool is_reload)
{
    struct err e = {{0}};
    struct geo_db *db = geo_db_open(path, &e);
    if (!db) {
        LOG_ERROR_F("proxy", LOG_FIELDS(LF_STR("path", path)),
                    "maxmind database not loaded (%s): %s",
                    is_reload ? "the previous one stays in use"
                              : "asn and ip_prefix labels stay empty until it loads",
                    e.msg);
        return;
    }
    geo_source_swap(&ps->geo, db); /* waits until no worker still reads the old one */
    LOG_INFO_F("proxy", LOG_FIELDS(LF_STR("path", path)), "maxmind database updated");
}

/* The control thread's loop: signals (signalfd) and config-file changes (inotify, plus a
 * once-a-second identity check for file systems without inotify). The first SIGINT/SIGTERM
 * starts the drain of spec cli.md §5 (client traffic still forwarded, replies no longer
 * relayed, exit once every session expired); a second exits at once. SIGHUP reloads. */
static void control_loop(struct proxy_state *ps, int sig_fd, struct config_watch *watch,
                         const char *path, const struct proxy_opts *o, struct mmdb_watch *mm)
{
    bool draining = false;
    uint64_t reload_at = 0; /* debounce: reload once writes have been quiet for a while */
    uint64_t check_at = clock_mono_ns() + WATCH_CHECK_NS;
    for (;;) {
        struct pollfd pfd[3] = {
            {.fd = sig_fd, .events = POLLIN},
            {.fd = watch ? config_watch_fd(watch) : -1, .events = POLLIN},
            {.fd = mm->watch ? config_watch_fd(mm->watch) : -1, .events = POLLIN}};
        uint64_t now = clock_mono_ns();
        uint64_t wake = reload_at && reload_at < check_at ? reload_at : check_at;
        if (mm->reload_at && mm->reload_at < wake)
            wake = mm->reload_at;
        int timeout = wake > now ? (int)((wake - now) / 1000000 + 1) : 0;
        if (timeout > 1000)
            timeout = 1000; /* the drain checks the session count once a second */
        int n = poll(pfd, 3, timeout);
        if (n == -1 && errno != EINTR)
            return;
        if (n > 0 && (pfd[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGHUP) {
                    on_sighup(ps, watch, path, draining, o);
                    reload_at = 0;
                } else if (draining) {
                    LOG_INFO("proxy", "second signal: exiting now");
                    return;
                } else {
                    draining = true;
                    atomic_store(&ps->control.draining, true);
                    LOG_INFO("proxy",
                             "shutting down: draining %u sessions (replies are no longer "
                             "relayed, /ready answers 503; signal again to exit now)",
                             total_sessions(ps));
                }
            }
        }
        if (n > 0 && watch && (pfd[1].revents & POLLIN) && config_watch_changed(watch))
            reload_at = clock_mono_ns() + RELOAD_DEBOUNCE_NS;
        if (n > 0 && mm->watch && (pfd[2].revents & POLLIN) && config_watch_changed(mm->watch))
            mm->reload_at = clock_mono_ns() + RELOAD_DEBOUNCE_NS;
        now = clock_mono_ns();
        if (now >= check_at) {
            /* advanced with or without a watch: a deadline left in the past would make
             * every poll() return at once (a spinning control thread) */
            check_at = now + WATCH_CHECK_NS;
            if (watch && config_watch_check(watch))
                reload_at = now + RELOAD_DEBOUNCE_NS;
            if (mm->watch && config_watch_check(mm->watch))
                mm->reload_at = now + RELOAD_DEBOUNCE_NS;
        }
        if (mm->reload_at && clock_mono_ns() >= mm->reload_at) {
            mm->reload_at = 0;
            mmdb_load(ps, mm->path, true);
        }
        if (reload_at && clock_mono_ns() >= reload_at) {
            reload_at = 0;
            if (!draining)
                reload(ps, path, o);
        }
        if (draining && total_sessions(ps) == 0)
            return;
    }
}

/* ADS client hook: build a snapshot of the merged config and publish it (ADS thread). */
static int xds_apply(void *ctx, struct config *cfg, struct err *e)
{
    struct proxy_state *ps = ctx;
    struct snapshot *snap = NULL;
    if (snapshot_create(cfg, ps->n_workers, snapshot_current(), &snap, e) < 0) {
        config_destroy(cfg);
        return -EINVAL;
    }
    uint32_t n_eps = snap->n_eps;
    size_t n_filters = snap->chain.n, n_kept = snap->chain.n_kept;
    publish(ps, snap);
    LOG_INFO_F("xds",
               LOG_FIELDS(LF_U64("endpoints", n_eps), LF_U64("filters", n_filters),
                          LF_U64("kept_filters", n_kept)),
               "applied update");
    return 0;
}

static bool is_live(void *ctx)
{
    (void)ctx;
    return true; /* workers never exit on their own; a crash ends the process */
}

int cli_proxy(const struct global_opts *g, int argc, char **argv)
{
    struct proxy_opts *o = calloc(1, sizeof(*o));
    struct proxy_state *ps = calloc(1, sizeof(*ps));
    if (!o || !ps) {
        fprintf(stderr, "quilkin: out of memory\n");
        free(o);
        free(ps);
        return EXIT_RUNTIME;
    }
    parse_options(o, argc, argv);
    LOG_INFO_F("proxy",
               LOG_FIELDS(LF_STR("version", build_quilkin_version()),
                          LF_STR("commit", build_commit())),
               "Starting Quilkin");
    config_view_init(&ps->view);
    geo_source_init(&ps->geo);
    atomic_init(&ps->control.draining, false);
    atomic_init(&ps->control.stopping, false);

    int status = EXIT_RUNTIME;
    struct err e = {{0}};
    struct config *cfg = NULL;
    struct snapshot *snap = NULL;
    struct admin *admin = NULL;
    struct config_watch *watch = NULL;
    struct config *xds_initial = NULL; /* the ADS client's starting point, until handed over */
    struct ip_limit *ip_limit = NULL;  /* shared by the workers; freed after they are */
    int sig_fd = -1;
    struct mmdb_watch mm = {.path = o->mmdb};

    /* Block the signals before any thread starts (admin, workers, xDS) so that every
       thread inherits the mask; the control loop reads them from a signalfd. */
    sigset_t sigs;
    cli_block_signals(&sigs);

    /* spec cli.md §2.1 step 1: the admin server starts first; a bind failure is fatal */
    struct admin_hooks hooks = {.is_live = is_live,
                                .readiness = proxy_readiness,
                                .render_metrics = proxy_render_metrics,
                                .render_config = proxy_render_config,
                                .ctx = ps};
    /* --check binds nothing: it stops once the configuration is known to be usable */
    if (!o->is_check && cli_start_admin(g, &hooks, &admin) < 0)
        goto out;

    char used_path[PATH_MAX];
    if (cli_load_config(g, &cfg, used_path, &e) < 0) {
        LOG_ERROR("config", "%s", e.msg);
        fprintf(stderr, "quilkin: invalid configuration: %s\n", e.msg);
        goto out;
    }
    LOG_INFO("config", "loaded %s", used_path[0] ? used_path : "built-in default config");
    if (used_path[0] && !o->n_management_servers && !o->is_check) {
        /* Watch before anything is served, so a change made once /ready answers 200 is
           never missed. With a management server xDS owns the config: no watch. */
        watch = config_watch_create(used_path, &e);
        if (watch)
            LOG_INFO("config", "watching %s for changes", used_path);
        else
            LOG_WARN("config", "config hot reload disabled: %s", e.msg);
    }
    if (o->n_management_servers &&
        ads_client_check_urls(o->management_servers, o->n_management_servers, &e) < 0) {
        LOG_ERROR("xds", "%s", e.msg);
        fprintf(stderr, "quilkin: %s\n", e.msg);
        goto out;
    }
    if (o->n_to && config_set_unlocated(cfg, o->to, o->n_to) < 0) {
        LOG_ERROR("proxy", "out of memory");
        goto out;
    }
    if (config_endpoint_count(cfg) == 0 && !o->n_management_servers) {
        const char *msg = "`quilkin proxy` requires at least one `to` address or "
                          "`management_server` endpoint.";
        LOG_ERROR("proxy", "%s", msg);
        fprintf(stderr, "quilkin: %s\n", msg);
        goto out;
    }

    unsigned n_workers = o->workers ? (unsigned)o->workers : available_cpus();
    if (n_workers > MAX_WORKERS)
        n_workers = MAX_WORKERS;
    metrics_init(n_workers); /* before any filter registers a series */
    clock_ticks_init();
    LOG_INFO("proxy", "filter timing clock: %s", clock_ticks_source());
    if (snapshot_create(cfg, n_workers, NULL, &snap, &e) < 0) {
        LOG_ERROR("config", "%s", e.msg);
        fprintf(stderr, "quilkin: invalid configuration: %s\n", e.msg);
        goto out;
    }
    if (o->n_management_servers && !(xds_initial = config_clone(snap->cfg))) {
        LOG_ERROR("proxy", "out of memory");
        goto out;
    }
    cfg = NULL; /* owned by the snapshot */
    if (snap->n_unresolved)
        LOG_WARN("config", "%u endpoint names did not resolve", snap->n_unresolved);
    if (mm.path && strstr(mm.path, "://")) {
        /* v0.7.0 also downloads a URL; we read files only (no HTTP client on the data
           plane host's start-up path) */
        LOG_ERROR_F("proxy", LOG_FIELDS(LF_STR("mmdb", mm.path)),
                    "--mmdb takes a file path in quilkin-c, not a URL: asn and ip_prefix "
                    "labels stay empty");
        mm.path = NULL;
    }
    if (mm.path && o->is_check) {
        struct geo_db *db = geo_db_open(mm.path, &e);
        if (!db) /* not fatal at start-up either (spec cli.md §2.1 step 2) */
            LOG_WARN_F("proxy", LOG_FIELDS(LF_STR("path", mm.path)),
                       "maxmind database would not load: %s", e.msg);
        geo_db_close(db);
    } else if (mm.path) {
        /* spec cli.md §2.1 step 2: before any traffic, so the first sessions have it */
        mmdb_load(ps, mm.path, false);
        mm.watch = config_watch_create(mm.path, &e);
        if (!mm.watch)
            LOG_WARN("proxy", "maxmind database reload disabled: %s", e.msg);
    }
    if (o->is_check) {
        LOG_INFO_F("proxy", LOG_FIELDS(LF_STR("path", used_path[0] ? used_path : NULL)),
                   "configuration is valid (--check: nothing started)");
        status = 0;
        goto out;
    }

    uint64_t nofile = cli_raise_nofile();
    uint64_t max_sessions = o->max_sessions ? o->max_sessions : DEFAULT_MAX_SESSIONS;
    if (nofile > FD_RESERVE && max_sessions > nofile - FD_RESERVE) {
        if (o->max_sessions)
            LOG_WARN("proxy", "--max-sessions %lu exceeds the open-files limit %lu; using %lu",
                     (unsigned long)max_sessions, (unsigned long)nofile,
                     (unsigned long)(nofile - FD_RESERVE));
        max_sessions = nofile - FD_RESERVE;
    }
    /* each worker gets an equal share; the kernel's flow hash spreads clients evenly */
    uint32_t per_worker = (uint32_t)((max_sessions + n_workers - 1) / n_workers);
    if (o->max_sessions_per_ip &&
        !(ip_limit = ip_limit_create((uint32_t)o->max_sessions_per_ip, clock_mono_ns()))) {
        LOG_ERROR("proxy", "out of memory");
        goto out;
    }

    sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sig_fd == -1) {
        LOG_ERROR("proxy", "signalfd: %s", strerror(errno));
        goto out;
    }

    uint16_t port = o->port, qcmp_port = o->qcmp_port;
    for (unsigned i = 0; i < n_workers; i++) {
        int fd = sock_udp_bind(port, 1, GAME_SOCKET_BUF);
        if (fd < 0) {
            LOG_ERROR("proxy", "cannot bind UDP [::]:%u: %s", port, strerror(-fd));
            fprintf(stderr, "quilkin: cannot bind UDP [::]:%u: %s\n", port, strerror(-fd));
            goto out;
        }
        if (port == 0)
            port = sock_local_port(fd); /* --port 0: every worker joins the first's port */
        if (i == 0)
            log_socket_buffers(fd);
        int qfd = sock_udp_bind(qcmp_port, 1, 0);
        if (qfd < 0) {
            close(fd);
            LOG_ERROR("qcmp", "cannot bind UDP [::]:%u: %s", qcmp_port, strerror(-qfd));
            fprintf(stderr, "quilkin: cannot bind QCMP UDP [::]:%u: %s\n", qcmp_port,
                    strerror(-qfd));
            goto out;
        }
        if (qcmp_port == 0)
            qcmp_port = sock_local_port(qfd);
        struct worker_opts wo = {.index = i,
                                 .io = o->io,
                                 .coalesce_ns = o->coalesce_us * 1000u,
                                 .game_fd = fd,
                                 .qcmp_fd = qfd,
                                 .max_sessions = per_worker,
                                 .session_timeout_ns = o->session_timeout_secs * 1000000000ull,
                                 .unconfirmed_timeout_ns =
                                     o->unconfirmed_timeout_secs * 1000000000ull,
                                 .ip_limit = ip_limit,
                                 .qcmp_source_rate = (uint32_t)o->qcmp_source_rate,
                                 /* the total is split evenly over the workers */
                                 .qcmp_global_rate =
                                     (uint32_t)((o->qcmp_global_rate + n_workers - 1) /
                                                n_workers),
                                 .control = &ps->control,
                                 .geo = mm.path ? &ps->geo : NULL};
        ps->workers[i] = worker_create(&wo, &e);
        if (!ps->workers[i]) {
            LOG_ERROR("proxy", "%s", e.msg);
            goto out;
        }
        atomic_store_explicit(&ps->n_workers, i + 1, memory_order_release);
    }
    publish(ps, snap);
    snap = NULL;
    LOG_INFO("proxy", "workers move datagrams with %s%s",
             worker_uses_uring(ps->workers[0]) ? "io_uring" : "epoll and recvmmsg/sendmmsg",
             o->coalesce_us ? ", coalescing under load (--coalesce-us)" : "");
    for (unsigned i = 0; i < ps->n_workers; i++) {
        int rc = worker_start(ps->workers[i]);
        if (rc < 0) {
            LOG_ERROR("proxy", "cannot start worker %u: %s", i, strerror(-rc));
            goto out;
        }
    }
    if (o->n_management_servers) {
        /* the data path already runs on the file's config; the ADS client merges updates
           into it and publishes them (it never makes the workers wait) */
        struct ads_client_opts ao = {.servers = o->management_servers,
                                     .n_servers = o->n_management_servers,
                                     .idle_request_secs = o->idle_request_secs
                                                              ? (unsigned)o->idle_request_secs
                                                              : 1,
                                     .keepalive_ms = (unsigned)o->keepalive_secs * 1000,
                                     .keepalive_timeout_ms =
                                         (unsigned)o->keepalive_timeout_secs * 1000,
                                     .region = o->region,
                                     .zone = o->zone,
                                     .sub_zone = o->sub_zone,
                                     .tls_ca = o->tls_ca,
                                     .tls_cert = o->tls_cert,
                                     .tls_key = o->tls_key};
        struct ads_client_hooks ah = {.apply = xds_apply, .ctx = ps};
        struct ads_client *ads = ads_client_start(&ao, xds_initial, &ah, &e);
        xds_initial = NULL;
        atomic_store_explicit(&ps->ads, ads, memory_order_release);
        if (!ads) {
            LOG_ERROR("xds", "%s", e.msg);
            fprintf(stderr, "quilkin: %s\n", e.msg);
            goto out;
        }
    }
    LOG_INFO("proxy",
             "listening on [::]:%u (UDP, IPv4 and IPv6) with %u worker%s, session timeout %lus, "
             "max sessions %lu",
             port, ps->n_workers, ps->n_workers == 1 ? "" : "s",
             (unsigned long)o->session_timeout_secs,
             (unsigned long)((uint64_t)per_worker * ps->n_workers));
    LOG_INFO("proxy",
             "unconfirmed sessions expire after %lus%s, at most %lu sessions per client "
             "address%s",
             (unsigned long)o->unconfirmed_timeout_secs,
             o->unconfirmed_timeout_secs ? "" : " (off: the idle timeout applies)",
             (unsigned long)o->max_sessions_per_ip, o->max_sessions_per_ip ? "" : " (off)");
    LOG_INFO("qcmp", "QCMP responder listening on [::]:%u (UDP)", qcmp_port);
    LOG_INFO("proxy", "Quilkin is ready");
    control_loop(ps, sig_fd, watch, used_path, o, &mm);
    log_stats(ps);
    status = 0;
out:
    admin_stop(admin); /* first: its callbacks read the ADS client and the workers */
    ads_client_stop(ps->ads);
    config_destroy(xds_initial);
    atomic_store(&ps->control.stopping, true);
    for (unsigned i = 0; i < ps->n_workers; i++)
        worker_join(ps->workers[i]);
    for (unsigned i = 0; i < ps->n_workers; i++)
        worker_destroy(ps->workers[i]);
    ip_limit_destroy(ip_limit);
    snapshot_publish(NULL);
    snapshot_destroy(snap);
    config_destroy(cfg);
    config_watch_destroy(watch);
    config_watch_destroy(mm.watch);
    /* the workers are gone: nothing reads the database any more */
    geo_db_close(atomic_exchange(&ps->geo.db, NULL));
    if (sig_fd >= 0)
        close(sig_fd);
    config_view_deinit(&ps->view);
    free(ps);
    free(o);
    if (status == 0)
        LOG_INFO("proxy", "shutdown complete");
    return status;
}
