/* bench_xds_fleet: load for `quilkin manage` (the ADS server, spec xds.md §7).
 * `fleet` runs N well-behaved ADS streams through the project's own gRPC client and xDS codecs
 * (one connection and one thread per stream) that ACK every response and log when. A bench
 * tool: it asserts nothing, and every wait in it is bounded by a count or a deadline. Usage:
 * see `usage` below. */
#include "base/clock.h"
#include "base/err.h"
#include "xds/grpc.h"
#include "xds/resources.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define CONNECT_TIMEOUT_MS 5000
#define SEND_TIMEOUT_MS 5000
#define RECV_SLICE_MS 1000 /* the longest a fleet thread waits before looking at `stop` */
#define FLEET_MAX_STREAMS 1000
#define FLEET_MAX_RECORDS 100000 /* per stream; more are counted, not kept */
#define FLEET_MAX_ATTEMPTS 10    /* connections per stream, the first one included */
#define MAX_SECS 3600.0          /* any duration option; the fleet's run without --duration-s */
#define FLEET_STACK (256u * 1024)

static const char usage[] =
    "usage: bench_xds_fleet fleet --target HOST:PORT --streams N --out FILE [--duration-s S]\n";

/* ---- options: one typed table -------------------------------------------------------- */

struct opts {
    const char *target, *out;
    uint64_t streams;
    double duration_s;
    char host[256];
    uint16_t port;
};

enum opt_kind {
    OPT_STR = 0,
    OPT_U64,
    OPT_SECS,
};

struct opt_row {
    const char *name;
    enum opt_kind kind;
    size_t off;
};

static const struct opt_row opt_rows[] = {
    {"--target", OPT_STR, offsetof(struct opts, target)},
    {"--out", OPT_STR, offsetof(struct opts, out)},
    {"--streams", OPT_U64, offsetof(struct opts, streams)},
    {"--duration-s", OPT_SECS, offsetof(struct opts, duration_s)},
};

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench_xds_fleet: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    exit(2);
}

static void parse_target(struct opts *o)
{
    const char *t = o->target, *colon = t ? strrchr(t, ':') : NULL;
    if (!colon || colon == t)
        die("--target HOST:PORT is required (got `%s`)", t ? t : "");
    const char *h = t;
    size_t hl = (size_t)(colon - t);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (hl >= sizeof(o->host) || *end || p == 0 || p > 65535)
        die("bad --target `%s`", t);
    memcpy(o->host, h, hl);
    o->host[hl] = '\0';
    o->port = (uint16_t)p;
}

static void parse_opts(struct opts *o, int argc, char **argv)
{
    for (int i = 2; i < argc; i += 2) {
        const struct opt_row *row = NULL;
        for (size_t k = 0; k < sizeof(opt_rows) / sizeof(opt_rows[0]) && !row; k++)
            if (strcmp(argv[i], opt_rows[k].name) == 0)
                row = &opt_rows[k];
        if (!row)
            die("unknown option `%s`", argv[i]);
        if (i + 1 >= argc)
            die("%s needs a value", argv[i]);
        const char *v = argv[i + 1];
        char *end = NULL;
        void *field = (char *)o + row->off;
        if (row->kind == OPT_STR) {
            *(const char **)field = v;
        } else if (row->kind == OPT_U64) {
            *(uint64_t *)field = strtoull(v, &end, 10);
        } else {
            double d = strtod(v, &end);
            if (!(d > 0 && d <= MAX_SECS))
                die("bad number of seconds `%s`", v);
            *(double *)field = d;
        }
        if (end && (*end || end == v || v[0] == '-'))
            die("bad number `%s`", v);
    }
    parse_target(o);
}

static double since_s(uint64_t t0_ns)
{
    return (double)(clock_mono_ns() - t0_ns) / 1e9;
}

/* ---- fleet: N polite ADS streams ----------------------------------------------------- */

enum xtype {
    XT_CLUSTER = 0,
    XT_LISTENER,
    XT_COUNT,
};

static const char *const xt_url[XT_COUNT] = {XDS_TYPE_CLUSTER, XDS_TYPE_LISTENER};
static const char *const xt_name[XT_COUNT] = {"cluster", "listener"};

/* One ACK sent: what and when (CLOCK_REALTIME, so the harness can compare with its own). */
struct ack_rec {
    uint64_t ack_ns;
    uint64_t version;
    enum xtype type;
};

struct fleet;

/* One stream of the fleet. recs is owned and written by the stream's thread only, and read by
 * main after the join; cluster_plus1 (last Cluster version ACKed + 1, 0: none yet) is read by
 * main while the thread runs. */
struct fleet_stream {
    struct fleet *fl;
    unsigned idx;
    pthread_t thread;
    bool is_started;
    struct ack_rec *recs;
    size_t n_recs, cap_recs;
    uint64_t dropped_recs;
    unsigned attempts;
    _Atomic uint64_t cluster_plus1;
};

/* Owned by run_fleet; the threads borrow it until they are joined. */
struct fleet {
    const struct opts *o;
    int wake_fd; /* written once at stop and never drained: every wait returns at once */
    atomic_bool stop;
    struct fleet_stream *streams;
};

static int fleet_send(struct grpc_client *g, const struct xds_request *rq, struct err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (xds_request_encode(rq, &buf, &len) < 0)
        return err_set(e, "out of memory encoding a DiscoveryRequest"), -ENOMEM;
    int rc = grpc_client_send(g, buf, len, SEND_TIMEOUT_MS, e);
    free(buf);
    return rc;
}

/* Cluster, then Listener, each a wildcard (no resource_names), as ads_client.c does. */
static int fleet_subscribe(const struct fleet_stream *fs, struct grpc_client *g, struct err *e)
{
    char node[32];
    snprintf(node, sizeof(node), "fleet-%u", fs->idx);
    for (int t = 0; t < XT_COUNT; t++) {
        struct xds_request rq = {
            .node_id = node, .user_agent_name = "bench_xds_fleet", .type_url = (char *)xt_url[t]};
        int rc = fleet_send(g, &rq, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void fleet_record(struct fleet_stream *fs, enum xtype t, uint64_t version, uint64_t now)
{
    if (t == XT_CLUSTER)
        atomic_store(&fs->cluster_plus1, version + 1);
    if (fs->n_recs == fs->cap_recs) {
        size_t cap = fs->cap_recs ? fs->cap_recs * 2 : 64;
        struct ack_rec *r = cap <= FLEET_MAX_RECORDS ? realloc(fs->recs, cap * sizeof(*r)) : NULL;
        if (!r) {
            fs->dropped_recs++;
            return;
        }
        fs->recs = r;
        fs->cap_recs = cap;
    }
    fs->recs[fs->n_recs++] = (struct ack_rec){.ack_ns = now, .version = version, .type = t};
}

/* Decodes one response and ACKs it at once (version_info + response_nonce, the same wildcard
 * subscription); records the ACK when it went out. A negative errno ends the stream. */
static int fleet_ack(struct fleet_stream *fs, struct grpc_client *g, const uint8_t *msg, size_t len,
                     struct err *e)
{
    struct xds_response rs;
    memset(&rs, 0, sizeof(rs));
    if (xds_response_decode(msg, len, &rs, e) < 0)
        return -EPROTO;
    struct xds_request ack = {
        .version_info = rs.version_info, .type_url = rs.type_url, .response_nonce = rs.nonce};
    int rc = fleet_send(g, &ack, e);
    uint64_t now = clock_unix_ns();
    for (int t = 0; t < XT_COUNT && rc == 0; t++)
        if (rs.type_url && strcmp(rs.type_url, xt_url[t]) == 0)
            fleet_record(fs, (enum xtype)t,
                         rs.version_info ? strtoull(rs.version_info, NULL, 10) : 0, now);
    xds_response_free(&rs);
    return rc;
}

/* Sleeps ms, or less when the fleet stops. */
static void fleet_nap(struct fleet *fl, int ms)
{
    struct pollfd p = {.fd = fl->wake_fd, .events = POLLIN};
    if (!atomic_load(&fl->stop))
        poll(&p, 1, ms);
}

static void *fleet_stream_main(void *arg)
{
    struct fleet_stream *fs = arg;
    struct fleet *fl = fs->fl;
    for (unsigned a = 0; a < FLEET_MAX_ATTEMPTS && !atomic_load(&fl->stop); a++) {
        if (a > 0)
            fleet_nap(fl, 200 * (int)a);
        fs->attempts++;
        struct err e = {{0}};
        struct grpc_client *g = grpc_client_open(fl->o->host, fl->o->port, ADS_PATH,
                                                 CONNECT_TIMEOUT_MS, fl->wake_fd, &e);
        if (!g) {
            fprintf(stderr, "fleet: stream %u: cannot connect: %s\n", fs->idx, e.msg);
            continue;
        }
        int rc = fleet_subscribe(fs, g, &e);
        while (rc == 0 && !atomic_load(&fl->stop)) {
            uint8_t *msg = NULL;
            size_t len = 0;
            int r = grpc_client_recv(g, RECV_SLICE_MS, &msg, &len, &e);
            if (r == 0 || r == -EINTR)
                continue; /* the loop condition sees stop */
            if (r < 0) {
                rc = r;
                break;
            }
            rc = fleet_ack(fs, g, msg, len, &e);
            free(msg);
        }
        grpc_client_close(g);
        if (!atomic_load(&fl->stop))
            fprintf(stderr, "fleet: stream %u ended (%s); reconnecting\n", fs->idx, e.msg);
    }
    return NULL;
}

static int fleet_write(const struct fleet *fl, unsigned n, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "fleet: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t total = 0;
    uint64_t dropped = 0;
    unsigned attempts = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct fleet_stream *fs = &fl->streams[i];
        for (size_t k = 0; k < fs->n_recs; k++)
            fprintf(f,
                    "{\"stream\":%u,\"type\":\"%s\",\"version\":\"%" PRIu64 "\",\"ack_ns\":%" PRIu64
                    "}\n",
                    i, xt_name[fs->recs[k].type], fs->recs[k].version, fs->recs[k].ack_ns);
        total += fs->n_recs;
        dropped += fs->dropped_recs;
        attempts += fs->attempts;
    }
    int rc = fclose(f) == 0 ? 0 : -1;
    fprintf(stderr,
            "fleet: wrote %zu records to %s (%u connections for %u streams, %" PRIu64
            " records not kept)\n",
            total, path, attempts, n, dropped);
    return rc;
}

/* Prints progress lines the harness waits for: once every stream has its first Cluster
 * response, and each time the lowest Cluster version ACKed by all streams rises. */
static void fleet_progress(const struct fleet *fl, unsigned n, uint64_t t0, bool *is_announced,
                           uint64_t *all_plus1)
{
    unsigned subscribed = 0;
    uint64_t low = UINT64_MAX;
    for (unsigned i = 0; i < n; i++) {
        uint64_t v = atomic_load(&fl->streams[i].cluster_plus1);
        subscribed += v > 0;
        low = v < low ? v : low;
    }
    if (!*is_announced && subscribed == n) {
        fprintf(stderr, "fleet: %u streams subscribed (%.3f s)\n", n, since_s(t0));
        *is_announced = true;
    }
    if (*is_announced && low > *all_plus1) {
        *all_plus1 = low;
        fprintf(stderr, "fleet: all %u streams acked cluster version %" PRIu64 "\n", n, low - 1);
    }
}

static int run_fleet(const struct opts *o)
{
    if (!o->out || o->streams == 0 || o->streams > FLEET_MAX_STREAMS)
        die("fleet needs --out FILE and --streams 1..1000%s", "");
    unsigned n = (unsigned)o->streams;
    struct fleet fl = {.o = o};
    fl.streams = calloc(n, sizeof(*fl.streams));
    fl.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!fl.streams || fl.wake_fd == -1) {
        fprintf(stderr, "fleet: out of resources\n");
        return 1;
    }
    /* the threads inherit the mask: only main takes SIGINT/SIGTERM, with sigtimedwait */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, FLEET_STACK);
    uint64_t t0 = clock_mono_ns();
    for (unsigned i = 0; i < n; i++) {
        struct fleet_stream *fs = &fl.streams[i];
        fs->fl = &fl;
        fs->idx = i;
        fs->is_started = pthread_create(&fs->thread, &attr, fleet_stream_main, fs) == 0;
        if (!fs->is_started)
            fprintf(stderr, "fleet: stream %u: cannot start a thread\n", i);
    }
    pthread_attr_destroy(&attr);
    double secs = o->duration_s > 0 ? o->duration_s : MAX_SECS;
    uint64_t end = t0 + (uint64_t)(secs * 1e9);
    bool is_announced = false;
    uint64_t all_plus1 = 0;
    while (clock_mono_ns() < end) {
        struct timespec slice = {.tv_sec = 0, .tv_nsec = 20 * (long)NS_PER_MS};
        if (sigtimedwait(&sigs, NULL, &slice) > 0)
            break;
        fleet_progress(&fl, n, t0, &is_announced, &all_plus1);
    }
    atomic_store(&fl.stop, true);
    uint64_t one = 1;
    if (write(fl.wake_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
        fprintf(stderr, "fleet: cannot wake the streams: %s\n", strerror(errno));
    for (unsigned i = 0; i < n; i++)
        if (fl.streams[i].is_started)
            pthread_join(fl.streams[i].thread, NULL);
    int rc = fleet_write(&fl, n, o->out);
    for (unsigned i = 0; i < n; i++)
        free(fl.streams[i].recs);
    free(fl.streams);
    close(fl.wake_fd);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    if (argc < 2)
        die("a mode is required%s", "");
    parse_opts(&o, argc, argv);
    if (strcmp(argv[1], "fleet") == 0)
        return run_fleet(&o);
    die("unknown mode `%s`", argv[1]);
    return 2;
}
