/* bench_xds_fleet: load and abuse for `quilkin manage` (the ADS server, spec xds.md §7).
 * `fleet` runs N well-behaved ADS streams through the project's own gRPC client and xDS codecs
 * (one connection and one thread per stream) that ACK every response and log when; `hostile`
 * runs one misbehaving client (raw nghttp2 where the project's client is too polite) and prints
 * what the server answered as one JSON object. A bench tool: it asserts nothing, and every wait
 * in it is bounded by a count or a deadline. Usage: see `usage` below. One file, as bench/
 * builds one program per .c: over STYLE.md's ~1000 lines; split fleet and hostile apart (with
 * a CMake line) if it grows further. */
#include "base/clock.h"
#include "base/err.h"
#include "xds/grpc.h"
#include "xds/resources.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define CONNECT_TIMEOUT_MS 5000
#define SEND_TIMEOUT_MS 30000 /* a 16 MiB request at loopback speed, with room */
#define RECV_SLICE_MS 1000    /* the longest a fleet thread waits before looking at `stop` */
#define FLEET_MAX_STREAMS 1000
#define FLEET_MAX_RECORDS 100000 /* per stream; more are counted, not kept */
#define FLEET_MAX_ATTEMPTS 10    /* connections per stream, the first one included */
#define MAX_SECS 3600.0          /* any duration option; the fleet's run without --duration-s */
#define FLEET_STACK (256u * 1024)
#define HOSTILE_MAX_CONNS 20000
#define H2_READ_LEN 65536
#define CONNECT_BATCH 32                /* connects started at once (below a 128 backlog) */
#define CONNECT_PAUSE_NS (10 * 1000000) /* between batches */
#define SETTLE_NS (3 * NS_PER_SEC)      /* half-messages: how long to watch after the last byte */

static const char usage[] =
    "usage: bench_xds_fleet fleet --target HOST:PORT --streams N --out FILE [--duration-s S]\n"
    "       bench_xds_fleet hostile --target HOST:PORT --scenario NAME [options]\n"
    "scenarios and their options (defaults in brackets):\n"
    "  half-messages     --conns [12] --streams [100] --declared-bytes [8388608]\n"
    "                    --partial-bytes [7340032] --duration-s [60]\n"
    "  many-names        --names [1000000] --repeats [3] --hold-s [5]\n"
    "  idle-conns        --conns [1100] --source-ip [none] --hold-s [20]\n"
    "  slow-reader       --conns [1] --streams [1] --hold-s [20]\n"
    "  no-first-request  --conns [200] --hold-s [20]\n";

/* ---- options: one typed table for both modes ----------------------------------------- */

struct opts {
    const char *target, *out, *scenario, *source_ip;
    uint64_t streams, conns, names, repeats, declared_bytes, partial_bytes;
    double duration_s, hold_s;
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
    {"--scenario", OPT_STR, offsetof(struct opts, scenario)},
    {"--source-ip", OPT_STR, offsetof(struct opts, source_ip)},
    {"--streams", OPT_U64, offsetof(struct opts, streams)},
    {"--conns", OPT_U64, offsetof(struct opts, conns)},
    {"--names", OPT_U64, offsetof(struct opts, names)},
    {"--repeats", OPT_U64, offsetof(struct opts, repeats)},
    {"--declared-bytes", OPT_U64, offsetof(struct opts, declared_bytes)},
    {"--partial-bytes", OPT_U64, offsetof(struct opts, partial_bytes)},
    {"--duration-s", OPT_SECS, offsetof(struct opts, duration_s)},
    {"--hold-s", OPT_SECS, offsetof(struct opts, hold_s)},
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

static uint64_t or_default(uint64_t v, uint64_t def)
{
    return v ? v : def;
}

static double since_s(uint64_t t0_ns)
{
    return (double)(clock_mono_ns() - t0_ns) / 1e9;
}

/* ---- JSON output --------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* `"key":{"n":..,"min":..,"p50":..,"max":..}` of v[0..n) (sorted in place), with a comma
 * before it. */
static void json_stats(FILE *f, const char *key, double *v, size_t n)
{
    fprintf(f, ",\"%s\":{\"n\":%zu", key, n);
    if (n > 0) {
        qsort(v, n, sizeof(*v), cmp_double);
        fprintf(f, ",\"min\":%.3f,\"p50\":%.3f,\"max\":%.3f", v[0], v[n / 2], v[n - 1]);
    }
    fputc('}', f);
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

/* ---- hostile: a raw HTTP/2 client that misbehaves on purpose ------------------------- */

struct h2_conn;

/* One request stream. Its request body is `head` (real bytes, borrowed) followed by zeros up
 * to `goal` bytes; after that it sends nothing more and never ends the stream. */
struct h2_stream {
    struct h2_conn *conn;
    int32_t id; /* 0: not submitted */
    const uint8_t *head;
    size_t head_len;
    uint64_t goal, produced;
    uint64_t sent;     /* request DATA payload that went out (the server's windows allowed) */
    uint64_t received; /* response DATA payload */
    int grpc_status;   /* -1: no grpc-status seen */
    bool has_trailers, is_reset, is_closed;
    uint32_t rst_code;
    double end_s; /* when the server ended it (trailers, reset, close), since start */
};

/* One TCP connection, with or without an HTTP/2 session. Owns streams and pend. */
struct h2_conn {
    int fd; /* -1 once closed */
    nghttp2_session *h2;
    uint64_t t0_ns; /* the scenario's start, for the *_s times */
    uint8_t *pend;  /* bytes the socket did not take yet */
    size_t pend_off, pend_len, pend_cap;
    uint64_t rx_bytes;
    bool is_connected;
    bool is_closed_by_server;
    double closed_s;
    const char *close_why;
    bool has_goaway;
    uint32_t goaway_code;
    struct h2_stream *streams;
    size_t n_streams;
};

static void h2_conn_close(struct h2_conn *c, const char *why, bool by_server)
{
    if (c->fd < 0)
        return;
    close(c->fd);
    c->fd = -1;
    c->is_closed_by_server = by_server;
    c->closed_s = since_s(c->t0_ns);
    c->close_why = why;
    for (size_t i = 0; i < c->n_streams; i++)
        if (c->streams[i].id > 0 && !c->streams[i].is_closed && c->streams[i].end_s == 0)
            c->streams[i].end_s = c->closed_s;
}

static struct h2_stream *stream_of(nghttp2_session *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2, id);
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct h2_stream *s = stream_of(h2, frame->hd.stream_id);
    if (s && namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        s->grpc_status = valuelen > 0 && valuelen < 4 ? atoi((const char *)value) : 2;
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *c = user;
    struct h2_stream *s = stream_of(h2, frame->hd.stream_id);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->has_goaway = true;
        c->goaway_code = frame->goaway.error_code;
    } else if (s && frame->hd.type == NGHTTP2_RST_STREAM) {
        s->is_reset = true;
        s->rst_code = frame->rst_stream.error_code;
        s->end_s = since_s(c->t0_ns);
    } else if (s && frame->hd.type == NGHTTP2_HEADERS &&
               (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        s->has_trailers = true;
        s->end_s = since_s(c->t0_ns);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct h2_stream *s = stream_of(h2, frame->hd.stream_id);
    if (s && frame->hd.type == NGHTTP2_DATA)
        s->sent += frame->hd.length;
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    struct h2_stream *s = stream_of(h2, id);
    if (s)
        s->received += len;
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *user)
{
    struct h2_conn *c = user;
    struct h2_stream *s = stream_of(h2, id);
    if (s) {
        s->is_closed = true;
        if (s->end_s == 0)
            s->end_s = since_s(c->t0_ns);
    }
    return 0;
}

static ssize_t body_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct h2_stream *s = src->ptr;
    if (s->produced >= s->goal)
        return NGHTTP2_ERR_DEFERRED; /* forever: the stream never ends */
    size_t n = s->goal - s->produced < length ? (size_t)(s->goal - s->produced) : length;
    size_t from_head = 0;
    if (s->produced < s->head_len) {
        from_head = s->head_len - (size_t)s->produced < n ? s->head_len - (size_t)s->produced : n;
        memcpy(buf, s->head + s->produced, from_head);
    }
    memset(buf + from_head, 0, n - from_head);
    s->produced += n;
    return (ssize_t)n;
}

/* An HTTP/2 client session on a connected socket: our SETTINGS (push off; the stream window
 * when window > 0) and, with is_manual_window, no WINDOW_UPDATE ever. 0 or -ENOMEM. */
static int h2_start(struct h2_conn *c, int32_t window, bool is_manual_window)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -ENOMEM;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -ENOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, is_manual_window);
    int rc = nghttp2_session_client_new2(&c->h2, cbs, c, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0)
        return -ENOMEM;
    nghttp2_settings_entry iv[2] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    size_t niv = 1;
    if (window > 0)
        iv[niv++] =
            (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)window};
    return nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, niv) == 0 ? 0 : -ENOMEM;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

/* HEADERS for the ADS method, then s's body as the server's windows allow. */
static void h2_open_stream(struct h2_conn *c, struct h2_stream *s, const char *authority)
{
    const nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", ADS_PATH),
        NV(":authority", authority),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
    };
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read};
    s->conn = c;
    s->grpc_status = -1;
    int32_t id = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &prd, s);
    s->id = id > 0 ? id : 0;
}

/* Writes what nghttp2 has for the socket until it would block. */
static void h2_flush(struct h2_conn *c)
{
    while (c->fd >= 0 && c->h2) {
        const uint8_t *data = c->pend + c->pend_off;
        size_t len = c->pend_len - c->pend_off;
        bool is_pending = len > 0;
        if (!is_pending) {
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                h2_conn_close(c, nghttp2_strerror((int)n), false);
                return;
            }
            if (n == 0)
                return;
            len = (size_t)n;
        }
        ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
        if (w == -1 && errno != EAGAIN && errno != EINTR) {
            h2_conn_close(c, errno == EPIPE ? "EPIPE on send" : "send error", true);
            return;
        }
        size_t done = w > 0 ? (size_t)w : 0;
        if (is_pending) {
            c->pend_off += done;
        } else if (done < len) { /* keep the rest: mem_send's buffer is gone next call */
            if (c->pend_cap < len - done) {
                uint8_t *p = realloc(c->pend, len - done);
                if (!p) {
                    h2_conn_close(c, "out of memory", false);
                    return;
                }
                c->pend = p;
                c->pend_cap = len - done;
            }
            memcpy(c->pend, data + done, len - done);
            c->pend_off = 0;
            c->pend_len = len - done;
        }
        if (done < len)
            return; /* the socket is full */
    }
}

static void h2_read(struct h2_conn *c, uint8_t *buf, size_t cap)
{
    for (int i = 0; i < 4 && c->fd >= 0; i++) {
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n == 0) {
            h2_conn_close(c, "EOF", true);
            return;
        }
        if (n == -1) {
            if (errno != EAGAIN && errno != EINTR)
                h2_conn_close(c, errno == ECONNRESET ? "TCP reset" : "recv error", true);
            return;
        }
        c->rx_bytes += (uint64_t)n;
        if (c->h2 && nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0) {
            h2_conn_close(c, "HTTP/2 error from the server", false);
            return;
        }
    }
    if (c->h2 && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        h2_conn_close(c, "HTTP/2 session over (GOAWAY)", true);
}

static bool h2_wants_write(const struct h2_conn *c)
{
    return c->pend_off < c->pend_len || (c->h2 && nghttp2_session_want_write(c->h2));
}

/* Predicate that ends h2_drive early; NULL: run until the deadline. */
typedef bool (*h2_done_fn)(const struct h2_conn *cs, size_t n);

/* Runs every connection's I/O until deadline_ns or until is_done says so. */
static void h2_drive(struct h2_conn *cs, size_t n, uint64_t deadline_ns, h2_done_fn is_done)
{
    struct pollfd *pfds = calloc(n ? n : 1, sizeof(*pfds));
    static uint8_t buf[H2_READ_LEN];
    if (!pfds)
        return;
    for (size_t i = 0; i < n; i++)
        h2_flush(&cs[i]);
    while (clock_mono_ns() < deadline_ns && !(is_done && is_done(cs, n))) {
        for (size_t i = 0; i < n; i++)
            pfds[i] = (struct pollfd){
                .fd = cs[i].fd, .events = (short)(POLLIN | (h2_wants_write(&cs[i]) ? POLLOUT : 0))};
        uint64_t left_ms = (deadline_ns - clock_mono_ns()) / NS_PER_MS + 1;
        if (poll(pfds, n, left_ms < 100 ? (int)left_ms : 100) == -1 && errno != EINTR)
            break;
        for (size_t i = 0; i < n; i++) {
            if (cs[i].fd < 0)
                continue;
            if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
                h2_read(&cs[i], buf, sizeof(buf));
            h2_flush(&cs[i]);
        }
    }
    free(pfds);
}

static int resolve(const struct opts *o, struct sockaddr_storage *sa, socklen_t *sl)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", o->port);
    if (getaddrinfo(o->host, port, &hints, &res) != 0 || !res)
        return -1;
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* Starts n non-blocking connects (bound to --source-ip when given) and waits for them until
 * timeout_ms; cs[i].is_connected says which succeeded. Returns how many did. The connects go
 * out CONNECT_BATCH at a time: a burst larger than the server's listen backlog would measure
 * the kernel (an idle client's final ACK dropped, the connection open on our side only)
 * instead of the server. */
static size_t connect_all(const struct opts *o, struct h2_conn *cs, size_t n, int timeout_ms)
{
    struct sockaddr_storage sa, src = {0};
    socklen_t sl = 0, src_len = 0;
    if (resolve(o, &sa, &sl) < 0)
        die("cannot resolve `%s`", o->host);
    if (o->source_ip) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&src;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&src;
        if (inet_pton(AF_INET, o->source_ip, &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            src_len = sizeof(*v4);
        } else if (inet_pton(AF_INET6, o->source_ip, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            src_len = sizeof(*v6);
        } else {
            die("bad --source-ip `%s`", o->source_ip);
        }
    }
    struct pollfd *pfds = calloc(n ? n : 1, sizeof(*pfds));
    if (!pfds)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && i % CONNECT_BATCH == 0)
            nanosleep(&(struct timespec){.tv_nsec = CONNECT_PAUSE_NS}, NULL);
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        cs[i].fd = fd;
        if (fd == -1)
            continue;
        if ((src_len && bind(fd, (struct sockaddr *)&src, src_len) == -1) ||
            (connect(fd, (struct sockaddr *)&sa, sl) == -1 && errno != EINPROGRESS)) {
            close(fd);
            cs[i].fd = -1;
        }
    }
    uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * NS_PER_MS;
    size_t pending = n, ok = 0;
    while (pending > 0 && clock_mono_ns() < deadline) {
        for (size_t i = 0; i < n; i++)
            pfds[i] = (struct pollfd){.fd = cs[i].is_connected ? -1 : cs[i].fd, .events = POLLOUT};
        poll(pfds, n, 100);
        pending = 0;
        for (size_t i = 0; i < n; i++) {
            if (cs[i].fd < 0 || cs[i].is_connected)
                continue;
            int err = 0;
            socklen_t el = sizeof(err);
            if (pfds[i].revents & (POLLOUT | POLLERR | POLLHUP)) {
                getsockopt(cs[i].fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err == 0) {
                    cs[i].is_connected = true;
                    ok++;
                } else {
                    close(cs[i].fd);
                    cs[i].fd = -1;
                }
            } else {
                pending++;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (cs[i].fd >= 0 && !cs[i].is_connected) {
            close(cs[i].fd);
            cs[i].fd = -1;
        }
    }
    free(pfds);
    return ok;
}

static struct h2_conn *conns_new(size_t n)
{
    struct h2_conn *cs = calloc(n ? n : 1, sizeof(*cs));
    if (!cs) {
        fprintf(stderr, "hostile: out of memory\n");
        exit(1);
    }
    uint64_t t0 = clock_mono_ns();
    for (size_t i = 0; i < n; i++) {
        cs[i].fd = -1;
        cs[i].t0_ns = t0;
    }
    return cs;
}

static void conns_free(struct h2_conn *cs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (cs[i].fd >= 0)
            close(cs[i].fd);
        nghttp2_session_del(cs[i].h2);
        free(cs[i].streams);
        free(cs[i].pend);
    }
    free(cs);
}

/* Opens per_conn streams on every connected connection, each sending head then zeros up to
 * goal bytes. */
static void open_streams(const struct opts *o, struct h2_conn *cs, size_t n, size_t per_conn,
                         int32_t window, bool is_manual_window, const uint8_t *head,
                         size_t head_len, uint64_t goal)
{
    char authority[300];
    snprintf(authority, sizeof(authority), "%s:%u", o->host, o->port);
    for (size_t i = 0; i < n; i++) {
        if (!cs[i].is_connected || h2_start(&cs[i], window, is_manual_window) < 0)
            continue;
        cs[i].streams = calloc(per_conn, sizeof(*cs[i].streams));
        if (!cs[i].streams)
            continue;
        cs[i].n_streams = per_conn;
        for (size_t k = 0; k < per_conn; k++) {
            struct h2_stream *s = &cs[i].streams[k];
            s->head = head;
            s->head_len = head_len;
            s->goal = goal;
            h2_open_stream(&cs[i], s, authority);
        }
    }
}

/* The fields every raw scenario reports (no braces; each field with its leading comma):
 * connections and streams, and everything the server did to them. */
static void print_h2_summary(FILE *f, const struct h2_conn *cs, size_t n)
{
    size_t connected = 0, closed = 0, goaway = 0, submitted = 0, reset = 0, trailers = 0;
    size_t still_open = 0, complete = 0, n_streams = 0;
    unsigned rst[16] = {0}, status[18] = {0};
    for (size_t i = 0; i < n; i++)
        n_streams += cs[i].n_streams;
    double *close_s = calloc(n + 1, sizeof(double)), *end_s = calloc(n_streams + 1, sizeof(double));
    double *sent = calloc(n_streams + 1, sizeof(double));
    if (!close_s || !end_s || !sent)
        exit(1);
    size_t n_close = 0, n_end = 0, n_sent = 0;
    uint64_t sent_total = 0, recv_total = 0;
    for (size_t i = 0; i < n; i++) {
        const struct h2_conn *c = &cs[i];
        connected += c->is_connected;
        goaway += c->has_goaway;
        if (c->is_closed_by_server) {
            closed++;
            close_s[n_close++] = c->closed_s;
        }
        for (size_t k = 0; k < c->n_streams; k++) {
            const struct h2_stream *s = &c->streams[k];
            if (s->id <= 0)
                continue;
            submitted++;
            reset += s->is_reset;
            trailers += s->has_trailers;
            complete += s->goal > 0 && s->sent >= s->goal;
            if (s->is_reset)
                rst[s->rst_code < 15 ? s->rst_code : 15]++;
            if (s->grpc_status >= 0)
                status[s->grpc_status < 17 ? s->grpc_status : 17]++;
            if (s->end_s > 0)
                end_s[n_end++] = s->end_s;
            else
                still_open++;
            sent[n_sent++] = (double)s->sent;
            sent_total += s->sent;
            recv_total += s->received;
        }
    }
    fprintf(f, ",\"connected\":%zu,\"conns_closed_by_server\":%zu", connected, closed);
    json_stats(f, "conn_closed_s", close_s, n_close);
    fprintf(f, ",\"goaway\":%zu,\"streams_submitted\":%zu,\"streams_reset\":%zu,\"rst_codes\":{",
            goaway, submitted, reset);
    const char *sep = "";
    for (unsigned k = 0; k < 16; k++) {
        if (rst[k]) {
            fprintf(f, "%s\"%s\":%u", sep, k < 15 ? nghttp2_http2_strerror(k) : "other", rst[k]);
            sep = ",";
        }
    }
    fprintf(f, "},\"streams_with_grpc_status\":%zu,\"grpc_status\":{", trailers);
    sep = "";
    for (unsigned k = 0; k < 18; k++) {
        if (status[k]) {
            fprintf(f, "%s\"%u\":%u", sep, k, status[k]);
            sep = ",";
        }
    }
    fprintf(f, "},\"streams_open_at_end\":%zu", still_open);
    json_stats(f, "stream_ended_s", end_s, n_end);
    fprintf(f, ",\"streams_fully_sent\":%zu,\"request_bytes_sent\":%" PRIu64, complete, sent_total);
    json_stats(f, "request_bytes_per_stream", sent, n_sent);
    fprintf(f, ",\"response_bytes\":%" PRIu64, recv_total);
    free(close_s);
    free(end_s);
    free(sent);
}

static void print_head(const char *scenario, const struct opts *o)
{
    printf("{\"scenario\":");
    json_str(stdout, scenario);
    printf(",\"target\":");
    json_str(stdout, o->target);
}

static void print_tail(uint64_t t0)
{
    printf(",\"elapsed_s\":%.3f}\n", since_s(t0));
    fflush(stdout);
}

/* Every stream sent what it had (or the server ended it, or the connection is gone). */
static bool all_sent(const struct h2_conn *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; cs[i].fd >= 0 && k < cs[i].n_streams; k++) {
            const struct h2_stream *s = &cs[i].streams[k];
            if (s->id > 0 && s->end_s == 0 && s->sent < s->goal)
                return false;
        }
    return true;
}

/* A raw HTTP/2 scenario: conns x per_conn streams, each sending head then zeros up to goal
 * bytes, watched for secs (or, with is_done_when_sent, until SETTLE_NS after every stream sent
 * its goal). Prints the scenario's JSON object. */
struct raw_plan {
    const char *name;
    char fields[256]; /* the scenario's own JSON fields, each with a leading comma */
    size_t conns, per_conn;
    int32_t window; /* SETTINGS_INITIAL_WINDOW_SIZE, 0: nghttp2's default */
    bool is_manual_window;
    const uint8_t *head;
    size_t head_len;
    uint64_t goal;
    double secs;
    bool is_done_when_sent;
};

static int run_raw(const struct opts *o, const struct raw_plan *p)
{
    if (p->conns > HOSTILE_MAX_CONNS || p->per_conn > 1000)
        die("%s: at most 20000 --conns and 1000 --streams", p->name);
    size_t n = p->conns;
    struct h2_conn *cs = conns_new(n);
    uint64_t t0 = cs[0].t0_ns, end = t0 + (uint64_t)(p->secs * 1e9);
    connect_all(o, cs, n, CONNECT_TIMEOUT_MS);
    open_streams(o, cs, n, p->per_conn, p->window, p->is_manual_window, p->head, p->head_len,
                 p->goal);
    double all_sent_s = -1;
    if (p->is_done_when_sent) {
        h2_drive(cs, n, end, all_sent);
        all_sent_s = all_sent(cs, n) ? since_s(t0) : -1;
        uint64_t settle = clock_mono_ns() + SETTLE_NS; /* does the server react afterwards? */
        end = settle < end ? settle : end;
    }
    h2_drive(cs, n, end, NULL);
    print_head(p->name, o);
    printf("%s,\"conns\":%zu,\"streams_per_conn\":%zu,\"all_sent_s\":%.3f", p->fields, n,
           p->per_conn, all_sent_s);
    print_h2_summary(stdout, cs, n);
    print_tail(t0);
    conns_free(cs, n);
    return 0;
}

static int scenario_half_messages(const struct opts *o)
{
    uint64_t declared = or_default(o->declared_bytes, 8u << 20);
    uint64_t partial = or_default(o->partial_bytes, 7u << 20);
    if (partial >= declared || declared > UINT32_MAX)
        die("half-messages: need --partial-bytes < --declared-bytes <= 4 GiB%s", "");
    uint8_t prefix[5] = {0, (uint8_t)(declared >> 24), (uint8_t)(declared >> 16),
                         (uint8_t)(declared >> 8), (uint8_t)declared};
    struct raw_plan p = {.name = "half-messages",
                         .conns = or_default(o->conns, 12),
                         .per_conn = or_default(o->streams, 100),
                         .head = prefix,
                         .head_len = sizeof(prefix),
                         .goal = sizeof(prefix) + partial,
                         .secs = o->duration_s > 0 ? o->duration_s : 60,
                         .is_done_when_sent = true};
    snprintf(p.fields, sizeof(p.fields),
             ",\"declared_bytes\":%" PRIu64 ",\"partial_bytes\":%" PRIu64, declared, partial);
    return run_raw(o, &p);
}

static int scenario_no_first_request(const struct opts *o)
{
    struct raw_plan p = {.name = "no-first-request",
                         .conns = or_default(o->conns, 200),
                         .per_conn = 1,
                         .secs = o->hold_s > 0 ? o->hold_s : 20};
    snprintf(p.fields, sizeof(p.fields), ",\"hold_s\":%.1f", p.secs);
    return run_raw(o, &p);
}

/* Appends one DiscoveryRequest with its gRPC prefix to *buf. 0 or -ENOMEM. */
static int frame_request(const struct xds_request *rq, uint8_t **buf, size_t *len)
{
    uint8_t *msg = NULL;
    size_t mlen = 0;
    if (xds_request_encode(rq, &msg, &mlen) < 0)
        return -ENOMEM;
    uint8_t *p = realloc(*buf, *len + 5 + mlen);
    if (!p) {
        free(msg);
        return -ENOMEM;
    }
    p[*len] = 0;
    for (int i = 0; i < 4; i++)
        p[*len + 1 + (size_t)i] = (uint8_t)(mlen >> (24 - 8 * i));
    memcpy(p + *len + 5, msg, mlen);
    free(msg);
    *buf = p;
    *len += 5 + mlen;
    return 0;
}

static int scenario_slow_reader(const struct opts *o)
{
    struct raw_plan p = {.name = "slow-reader",
                         .conns = or_default(o->conns, 1),
                         .per_conn = or_default(o->streams, 1),
                         .window = 1024,
                         .is_manual_window = true,
                         .secs = o->hold_s > 0 ? o->hold_s : 20};
    uint8_t *head = NULL;
    size_t head_len = 0;
    for (int t = 0; t < XT_COUNT; t++) {
        struct xds_request rq = {.node_id = "hostile-slow-reader", .type_url = (char *)xt_url[t]};
        if (frame_request(&rq, &head, &head_len) < 0)
            return 1;
    }
    p.head = head;
    p.head_len = p.goal = head_len;
    snprintf(p.fields, sizeof(p.fields), ",\"window\":%d,\"hold_s\":%.1f", (int)p.window, p.secs);
    int rc = run_raw(o, &p);
    free(head);
    return rc;
}

static int scenario_idle_conns(const struct opts *o)
{
    size_t n = or_default(o->conns, 1100);
    double hold = o->hold_s > 0 ? o->hold_s : 20;
    if (n > HOSTILE_MAX_CONNS)
        die("idle-conns: at most 20000 --conns%s", "");
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct h2_conn *cs = conns_new(n);
    uint64_t t0 = cs[0].t0_ns;
    size_t connected = connect_all(o, cs, n, CONNECT_TIMEOUT_MS);
    h2_drive(cs, n, t0 + (uint64_t)(hold * 1e9), NULL);
    /* sorted into: closed before the server said a word (refused), closed after its
     * SETTINGS (served, then dropped), still open */
    double *unserved = calloc(n + 1, sizeof(double)), *served = calloc(n + 1, sizeof(double));
    if (!unserved || !served)
        return 1;
    size_t n_unserved = 0, n_served = 0, open = 0, greeted = 0;
    for (size_t i = 0; i < n; i++) {
        greeted += cs[i].rx_bytes > 0;
        if (!cs[i].is_connected)
            continue;
        if (cs[i].fd >= 0)
            open++;
        else if (cs[i].rx_bytes == 0)
            unserved[n_unserved++] = cs[i].closed_s;
        else
            served[n_served++] = cs[i].closed_s;
    }
    print_head("idle-conns", o);
    printf(",\"conns\":%zu,\"source_ip\":", n);
    json_str(stdout, o->source_ip ? o->source_ip : "");
    printf(",\"rlimit_nofile\":%llu,\"hold_s\":%.1f,\"connected\":%zu,\"connect_failed\":%zu,"
           "\"greeted_by_server\":%zu,\"still_open\":%zu",
           (unsigned long long)rl.rlim_cur, hold, connected, n - connected, greeted, open);
    json_stats(stdout, "closed_without_a_byte_s", unserved, n_unserved);
    json_stats(stdout, "closed_after_settings_s", served, n_served);
    print_tail(t0);
    free(unserved);
    free(served);
    conns_free(cs, n);
    return 0;
}

/* Waits up to ms for a response on g; returns 1 (and its resource count), 0 on timeout, or a
 * negative errno when the stream ended (e says how). */
static int await_response(struct grpc_client *g, int ms, size_t *n_resources, struct err *e)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)ms * NS_PER_MS;
    while (clock_mono_ns() < deadline) {
        uint8_t *msg = NULL;
        size_t len = 0;
        int left = (int)((deadline - clock_mono_ns()) / NS_PER_MS) + 1;
        int r = grpc_client_recv(g, left, &msg, &len, e);
        if (r < 0 && r != -EINTR)
            return r;
        if (r == 1) {
            struct xds_response rs;
            memset(&rs, 0, sizeof(rs));
            struct err de = {{0}};
            *n_resources = xds_response_decode(msg, len, &rs, &de) == 0 ? rs.n_resources : 0;
            xds_response_free(&rs);
            free(msg);
            return 1;
        }
    }
    return 0;
}

/* One stream, M resource names (the project's client is enough here: it only has to be
 * large, not malformed). */
static int scenario_many_names(const struct opts *o)
{
    size_t m = or_default(o->names, 1000000), repeats = or_default(o->repeats, 3);
    double hold = o->hold_s > 0 ? o->hold_s : 5;
    if (m > 10000000 || repeats > 100)
        die("many-names: at most 10000000 --names and 100 --repeats%s", "");
    uint64_t t0 = clock_mono_ns();
    char *text = malloc(m * 16 + 1);
    char **names = malloc((m ? m : 1) * sizeof(*names));
    if (!text || !names)
        return 1;
    size_t off = 0;
    for (size_t i = 0; i < m; i++) {
        names[i] = text + off;
        off += (size_t)snprintf(text + off, 16, "r%zu:z%zu", i % 1000000, i % 10) + 1;
    }
    struct xds_request rq = {.node_id = "hostile-many-names",
                             .type_url = XDS_TYPE_CLUSTER,
                             .resource_names = names,
                             .n_resource_names = m};
    uint8_t *msg = NULL;
    size_t len = 0;
    if (xds_request_encode(&rq, &msg, &len) < 0)
        return 1;
    free(names);
    free(text);
    print_head("many-names", o);
    printf(",\"names\":%zu,\"message_bytes\":%zu,\"repeats\":%zu,\"hold_s\":%.1f", m, len, repeats,
           hold);
    if (len > GRPC_MAX_MSG) {
        printf(",\"error\":\"message over 16 MiB: not sent\"");
        print_tail(t0);
        free(msg);
        return 2;
    }
    struct err e = {{0}};
    struct grpc_client *g =
        grpc_client_open(o->host, o->port, ADS_PATH, CONNECT_TIMEOUT_MS, -1, &e);
    int rc = g ? 0 : -ECONNREFUSED;
    printf(",\"sends\":[");
    size_t responses = 0, resources = 0;
    for (size_t r = 0; r <= repeats && rc >= 0; r++) {
        uint64_t s0 = clock_mono_ns();
        rc = grpc_client_send(g, msg, len, SEND_TIMEOUT_MS, &e);
        double send_ms = (double)(clock_mono_ns() - s0) / 1e6;
        if (rc == 0)
            rc = await_response(g, (int)(hold * 1000), &resources, &e);
        responses += rc == 1;
        printf("%s{\"send_ms\":%.1f,\"response_ms\":", r ? "," : "", send_ms);
        if (rc == 1)
            printf("%.1f,\"resources\":%zu}", (double)(clock_mono_ns() - s0) / 1e6, resources);
        else
            printf("null,\"rc\":%d}", rc);
    }
    printf("]");
    /* then hold the stream open: does the server keep it? */
    uint64_t hold_end = clock_mono_ns() + (uint64_t)(hold * 1e9);
    while (rc >= 0 && clock_mono_ns() < hold_end) {
        size_t nres = 0;
        rc = await_response(g, (int)((hold_end - clock_mono_ns()) / NS_PER_MS) + 1, &nres, &e);
        responses += rc == 1;
    }
    /* the project's client names the status in its error text: "grpc-status N (NAME)" */
    const char *gs = rc < 0 ? strstr(e.msg, "grpc-status ") : NULL;
    int code = -1;
    if (gs && sscanf(gs + 12, "%d", &code) != 1)
        code = -1;
    printf(",\"responses\":%zu,\"survived\":%s,\"grpc_status\":", responses,
           rc >= 0 ? "true" : "false");
    if (code >= 0)
        printf("%d", code);
    else
        printf("null");
    printf(",\"end\":");
    json_str(stdout, rc >= 0 ? "" : e.msg);
    print_tail(t0);
    grpc_client_close(g);
    free(msg);
    return 0;
}

static int run_hostile(const struct opts *o)
{
    /* idle-conns wants more descriptors than the usual soft limit of 1024 */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    static const struct {
        const char *name;
        int (*run)(const struct opts *o);
    } scenarios[] = {
        {"half-messages", scenario_half_messages},
        {"many-names", scenario_many_names},
        {"idle-conns", scenario_idle_conns},
        {"slow-reader", scenario_slow_reader},
        {"no-first-request", scenario_no_first_request},
    };
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
        if (o->scenario && strcmp(o->scenario, scenarios[i].name) == 0)
            return scenarios[i].run(o);
    die("unknown --scenario `%s`", o->scenario ? o->scenario : "");
    return 2;
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    if (argc < 2)
        die("a mode is required%s", "");
    parse_opts(&o, argc, argv);
    if (strcmp(argv[1], "fleet") == 0)
        return run_fleet(&o);
    if (strcmp(argv[1], "hostile") == 0)
        return run_hostile(&o);
    die("unknown mode `%s`", argv[1]);
    return 2;
}
