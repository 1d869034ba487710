/* `quilkin manage file PATH` (spec cli.md §2.3, xds.md §7-§8.1): an ADS server fed by the
 * file provider. The file is watched (in-place writes, replacement by rename, symlink swaps
 * such as Kubernetes ConfigMap updates) and re-read on SIGHUP; a bad file keeps the last
 * good state served, and is logged and counted. */
#include "admin/http.h"
#include "base/build_info.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/prom.h"
#include "base/strbuf.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "config/config.h"
#include "config/dump.h"
#include "config/node.h"
#include "config/watch.h"
#include "net/addr.h"
#include "xds/ads_server.h"
#include "xds/grpc.h"
#include "xds/resources.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define DEFAULT_MANAGE_PORT 7800
#define PROVIDER_DEBOUNCE_NS (50 * 1000000ull) /* spec xds.md §8.1: wait 50 ms */
#define WATCH_CHECK_NS (1000 * 1000000ull)      /* fallback identity check of the file */

enum {
    OPT_REGION = 256,
    OPT_ZONE,
    OPT_SUB_ZONE,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_LIMIT_FIRST, /* OPT_LIMIT_FIRST + i sets the i-th limit */
    OPT_LIMIT_LAST = OPT_LIMIT_FIRST + 5,
};

static const struct cli_opt manage_opts[] = {
    {.id = 'r', .short_name = 'r', .long_name = "relay", .value_name = "RELAY",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_MANAGEMENT_SERVER", .flags = CLI_REPEAT,
     .help = "Relay mDS endpoints to push configuration to (not supported yet: ignored)"},
    {.id = 'p', .short_name = 'p', .long_name = "port", .value_name = "PORT",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_PORT", .def = "7800",
     .help = "The TCP port of the xDS gRPC server"},
    {.id = OPT_REGION, .long_name = "region", .value_name = "REGION", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_REGION", .help = "Locality applied to unlocated endpoints"},
    {.id = OPT_ZONE, .long_name = "zone", .value_name = "ZONE", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_ZONE", .help = "Locality zone"},
    {.id = OPT_SUB_ZONE, .long_name = "sub-zone", .value_name = "SUB_ZONE",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_SUB_ZONE", .help = "Locality sub-zone"},
    {.id = OPT_TLS_CERT, .long_name = "tls-cert", .value_name = "FILE", .value = CLI_VALUE_FILE,
     .env = "QUILKIN_TLS_CERT",
     .help = "Serve xDS over TLS with this certificate (PEM) (extension)"},
    {.id = OPT_TLS_KEY, .long_name = "tls-key", .value_name = "FILE", .value = CLI_VALUE_FILE,
     .env = "QUILKIN_TLS_KEY", .help = "Its private key (PEM) (extension)"},
    {.id = OPT_TLS_CA, .long_name = "tls-client-ca", .value_name = "FILE",
     .value = CLI_VALUE_FILE, .env = "QUILKIN_TLS_CLIENT_CA",
     .help = "Require client certificates signed by this CA (mTLS) (extension)"},
    {.id = OPT_LIMIT_FIRST, .long_name = "max-connections", .value_name = "N",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_XDS_MAX_CONNECTIONS", .def = "1024",
     .help = "Open xDS connections in all (extension)"},
    {.id = OPT_LIMIT_FIRST + 1, .long_name = "max-connections-per-peer", .value_name = "N",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_XDS_MAX_CONNECTIONS_PER_PEER", .def = "64",
     .help = "From one IP address; 0: no limit (extension)"},
    {.id = OPT_LIMIT_FIRST + 2, .long_name = "first-request-timeout-secs", .value_name = "SECS",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_XDS_FIRST_REQUEST_TIMEOUT_SECS", .def = "10",
     .help = "A connection, and each stream, must send a request within this; 0: off "
             "(extension)"},
    {.id = OPT_LIMIT_FIRST + 3, .long_name = "idle-timeout-secs", .value_name = "SECS",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_XDS_IDLE_TIMEOUT_SECS", .def = "60",
     .help = "Close connections without a stream after this; 0: off (extension)"},
    {.id = OPT_LIMIT_FIRST + 4, .long_name = "xds-keepalive-interval-secs",
     .value_name = "SECS", .value = CLI_VALUE_TEXT,
     .env = "QUILKIN_XDS_KEEPALIVE_INTERVAL_SECS", .def = "30",
     .help = "PING a client silent this long; 0: off (extension)"},
    {.id = OPT_LIMIT_FIRST + 5, .long_name = "xds-keepalive-timeout-secs", .value_name = "SECS",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_XDS_KEEPALIVE_TIMEOUT_SECS", .def = "10",
     .help = "Close it when the PING is unanswered this long (extension)"},
    {.id = CLI_OPT_HELP, .short_name = 'h', .long_name = "help", .help = "Print help"},
};

static const struct cli_arg file_args[] = {
    {.name = "PATH", .help = "The configuration file to watch and serve",
     .value = CLI_VALUE_FILE, .env = "QUILKIN_FS_PATH"},
};

static const struct cli_command file_cmd = {
    .name = "file",
    .about = "Watches a configuration file and serves what it holds",
    .usage = "<PATH>",
    .opts = cli_help_only,
    .n_opts = 1,
    .args = file_args,
    .n_args = 1,
};

static const struct cli_command agones_cmd = {
    .name = "agones",
    .about = "Watches Agones game servers (not supported by quilkin-c)",
    .usage = "[OPTIONS]",
    .opts = cli_help_only,
    .n_opts = 1,
};

static const struct cli_command *const manage_subs[] = {&agones_cmd, &file_cmd, &cli_help_cmd};

const struct cli_command cli_manage_cmd = {
    .name = "manage",
    .about = "Runs Quilkin as an xDS management server, using PROVIDER as a configuration "
             "source",
    .usage = "[OPTIONS] <COMMAND>",
    .opts = manage_opts,
    .n_opts = sizeof(manage_opts) / sizeof(manage_opts[0]),
    .subs = manage_subs,
    .n_subs = sizeof(manage_subs) / sizeof(manage_subs[0]),
};

struct manage_state {
    struct ads_server *ads;
    struct config *served; /* what the provider serves now (the ADS server owns its own) */
    atomic_bool healthy;
    _Atomic uint64_t loads_ok, loads_failed;
    struct config_view view; /* /config */
};

static bool manage_live(void *ctx)
{
    (void)ctx;
    return true;
}

static unsigned manage_ready(void *ctx, const char **reason)
{
    struct manage_state *m = ctx;
    (void)reason;
    return atomic_load(&m->healthy) ? 200 : 500;
}

static int manage_metrics(void *ctx, struct strbuf *out)
{
    struct manage_state *m = ctx;
    ads_server_render_metrics(m->ads, out);
    prom_header(out, "quilkin_config_reloads_total", "counter",
                "Provider file loads by result (applied or rejected)");
    prom_sample_u64(out, "quilkin_config_reloads_total", "result=\"applied\"",
                    atomic_load(&m->loads_ok));
    prom_sample_u64(out, "quilkin_config_reloads_total", "result=\"rejected\"",
                    atomic_load(&m->loads_failed));
    prom_header(out, "quilkin_xds_streams", "gauge", "Open ADS streams (extension)");
    prom_sample_u64(out, "quilkin_xds_streams", "", ads_server_stream_count(m->ads));
    return out->failed ? -ENOMEM : 0;
}

static int manage_config(void *ctx, struct strbuf *out)
{
    struct manage_state *m = ctx;
    return config_view_render(&m->view, out);
}

/* spec cli.md §2.3, xds.md §8.1: with --region/--zone/--sub-zone, the unlocated group moves
 * into that locality, replacing a group that already has it. */
static int relocate(struct config *cfg, const char *region, const char *zone, const char *sub)
{
    struct cluster_group *un = NULL, *target = NULL;
    for (size_t i = 0; i < cfg->n_groups; i++) {
        struct cluster_group *g = &cfg->groups[i];
        if (!g->has_locality)
            un = g;
        else if (!strcmp(g->locality.region, region) && !strcmp(g->locality.zone, zone) &&
                 !strcmp(g->locality.sub_zone, sub))
            target = g;
    }
    if (!un)
        return 0;
    if (!target) {
        char *r = strdup(region), *z = strdup(zone), *s = strdup(sub);
        if (!r || !z || !s) {
            free(r);
            free(z);
            free(s);
            return -ENOMEM;
        }
        free(un->locality.region);
        free(un->locality.zone);
        free(un->locality.sub_zone);
        un->locality.region = r;
        un->locality.zone = z;
        un->locality.sub_zone = s;
        un->has_locality = true;
        return 0;
    }
    /* replace the group of that locality with the unlocated endpoints, drop the rest */
    struct endpoint_cfg *eps = target->endpoints;
    size_t n = target->n_endpoints;
    target->endpoints = un->endpoints;
    target->n_endpoints = un->n_endpoints;
    un->endpoints = eps;
    un->n_endpoints = n;
    xds_group_free(un); /* frees the replaced endpoints */
    size_t idx = (size_t)(un - cfg->groups);
    memmove(un, un + 1, (cfg->n_groups - idx - 1) * sizeof(*un));
    cfg->n_groups--;
    return 0;
}

struct manage_opts {
    uint16_t port;
    const char *region, *zone, *sub_zone;
    const char *path;
    const char *tls_cert, *tls_key, *tls_client_ca; /* NULL: cleartext */
    struct grpc_server_limits limits;               /* issue 10 */
};

/* spec xds.md §8.1 "update from file": what the file names replaces what is served, what it
 * leaves out stays: `filters` present replaces the chain, `id` the id, and each group of
 * `clusters` replaces (or adds) the group of its locality; groups absent from the file are
 * kept. Takes ownership of file. Returns the merged config, or NULL on OOM. */
static struct config *merge_file(const struct config *served, struct config *file)
{
    bool has_filters = node_map_get(file->root, "filters") != NULL;
    bool has_id = node_map_get(file->root, "id") != NULL;
    bool has_clusters = node_map_get(file->root, "clusters") != NULL;
    struct config *work = served ? config_clone(served) : config_clone(file);
    struct config *owned = served ? config_clone(file) : NULL; /* no YAML root inside */
    config_destroy(file);
    if (!work || (served && !owned)) {
        config_destroy(work);
        config_destroy(owned);
        return NULL;
    }
    if (!served)
        return work; /* the first load is the file itself */
    int rc = 0;
    if (has_filters) {
        rc = xds_apply_filters(work, owned->filters, owned->n_filters);
        owned->n_filters = 0; /* contents moved (or freed on failure) */
    }
    if (rc == 0 && has_id) {
        free(work->id);
        work->id = owned->id;
        owned->id = NULL;
    }
    if (rc == 0 && has_clusters) {
        rc = xds_apply_clusters(work, owned->groups, owned->n_groups);
        owned->n_groups = 0;
    }
    config_destroy(owned);
    if (rc < 0) {
        config_destroy(work);
        return NULL;
    }
    return work;
}

/* Reads the provider file and serves it; on failure keeps what is served (and is not
 * ready, spec admin.md §3, until a good file arrives). */
static void load(struct manage_state *m, const struct manage_opts *o)
{
    struct err e = {{0}};
    struct config *file = NULL, *cfg = NULL;
    int rc = config_read_file(o->path, &file, &e);
    if (rc == 0 && !(cfg = merge_file(m->served, file)))
        rc = err_set(&e, "out of memory");
    if (rc == 0 && (o->region || o->zone || o->sub_zone) &&
        relocate(cfg, o->region ? o->region : "", o->zone ? o->zone : "",
                 o->sub_zone ? o->sub_zone : "") < 0)
        rc = err_set(&e, "out of memory");
    struct config *keep = rc == 0 ? config_clone(cfg) : NULL;
    if (rc == 0 && !keep)
        rc = err_set(&e, "out of memory");
    if (rc < 0) {
        config_destroy(cfg);
        atomic_fetch_add(&m->loads_failed, 1);
        atomic_store(&m->healthy, false);
        LOG_ERROR("xds", "provider file rejected, still serving the last good state: %s",
                  e.msg);
        return;
    }
    config_view_set(&m->view, cfg);
    LOG_INFO("xds", "serving %s: %zu cluster groups, %zu endpoints, %zu filters", o->path,
             cfg->n_groups, config_endpoint_count(cfg), cfg->n_filters);
    config_destroy(m->served);
    m->served = keep;
    ads_server_set_config(m->ads, cfg);
    atomic_fetch_add(&m->loads_ok, 1);
    atomic_store(&m->healthy, true);
}

static void parse_manage(struct manage_opts *o, int argc, char **argv)
{
    const char *env;
    o->port = DEFAULT_MANAGE_PORT;
    if ((env = getenv("QUILKIN_PORT")))
        o->port = cli_parse_u16("QUILKIN_PORT", env);
    o->region = getenv("QUILKIN_REGION");
    o->zone = getenv("QUILKIN_ZONE");
    o->sub_zone = getenv("QUILKIN_SUB_ZONE");
    o->tls_cert = getenv("QUILKIN_TLS_CERT");
    o->tls_key = getenv("QUILKIN_TLS_KEY");
    o->tls_client_ca = getenv("QUILKIN_TLS_CLIENT_CA");
    grpc_server_limits_default(&o->limits);
    uint64_t max_conns = o->limits.max_conns, per_peer = o->limits.max_conns_per_peer;
    uint64_t first_s = o->limits.first_request_ms / 1000, idle_s = o->limits.idle_ms / 1000;
    uint64_t ka_s = o->limits.keepalive_ms / 1000, ka_to_s = o->limits.keepalive_timeout_ms / 1000;
    /* the six limits, in this order for the env vars, the options and their names */
    static const char *const limit_envs[] = {
        "QUILKIN_XDS_MAX_CONNECTIONS",         "QUILKIN_XDS_MAX_CONNECTIONS_PER_PEER",
        "QUILKIN_XDS_FIRST_REQUEST_TIMEOUT_SECS", "QUILKIN_XDS_IDLE_TIMEOUT_SECS",
        "QUILKIN_XDS_KEEPALIVE_INTERVAL_SECS", "QUILKIN_XDS_KEEPALIVE_TIMEOUT_SECS",
    };
    uint64_t *slots[] = {&max_conns, &per_peer, &first_s, &idle_s, &ka_s, &ka_to_s};
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
        if ((env = getenv(limit_envs[i])))
            *slots[i] = cli_parse_u64(limit_envs[i], env);
    static const char *const limit_names[] = {
        "--max-connections <N>",
        "--max-connections-per-peer <N>",
        "--first-request-timeout-secs <SECS>",
        "--idle-timeout-secs <SECS>",
        "--xds-keepalive-interval-secs <SECS>",
        "--xds-keepalive-timeout-secs <SECS>",
    };
    /* stop at the provider: its own arguments follow */
    struct cli_parser p;
    cli_parser_init(&p, &cli_manage_cmd, &cli_root_cmd, "quilkin manage", argc, argv, true);
    int c;
    while ((c = cli_next(&p)) != CLI_END) {
        const char *val = p.arg;
        switch (c) {
        case 'r':
            LOG_WARN("xds", "--relay is not supported by this build; ignoring %s", val);
            break;
        case 'p':
            o->port = cli_parse_u16("--port <PORT>", val);
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
        case OPT_TLS_CERT:
            o->tls_cert = val;
            break;
        case OPT_TLS_KEY:
            o->tls_key = val;
            break;
        case OPT_TLS_CA:
            o->tls_client_ca = val;
            break;
        case OPT_LIMIT_FIRST... OPT_LIMIT_LAST:
            *slots[c - OPT_LIMIT_FIRST] = cli_parse_u64(limit_names[c - OPT_LIMIT_FIRST], val);
            break;
        default:
            break;
        }
    }
    if (max_conns < 1 || max_conns > 65536 || per_peer > 65536)
        cli_usage_error("invalid connection limit: '--max-connections' must be 1..=65536 and "
                        "'--max-connections-per-peer' 0..=65536");
    if (first_s > 3600 || idle_s > 86400 || ka_s > 3600 || ka_to_s < 1 || ka_to_s > 3600)
        cli_usage_error("invalid xDS timeout: first request 0..=3600 s, idle 0..=86400 s, "
                        "keepalive interval 0..=3600 s and timeout 1..=3600 s");
    o->limits.max_conns = (unsigned)max_conns;
    o->limits.max_conns_per_peer = (unsigned)per_peer;
    o->limits.first_request_ms = (unsigned)first_s * 1000;
    o->limits.idle_ms = (unsigned)idle_s * 1000;
    o->limits.keepalive_ms = (unsigned)ka_s * 1000;
    o->limits.keepalive_timeout_ms = (unsigned)ka_to_s * 1000;
    if (!o->tls_cert != !o->tls_key)
        cli_usage_error("'--tls-cert <FILE>' and '--tls-key <FILE>' go together");
    if (o->tls_client_ca && !o->tls_cert)
        cli_usage_error("'--tls-client-ca <FILE>' needs '--tls-cert' and '--tls-key'");
    if (p.ind >= argc)
        cli_fail_missing_sub(&cli_manage_cmd, "quilkin manage");
    const char *provider = argv[p.ind];
    const struct cli_command *sub = cli_find_sub(&cli_manage_cmd, provider);
    if (!sub)
        cli_fail_unknown_sub(&cli_manage_cmd, "quilkin manage", provider);
    if (sub == &cli_help_cmd)
        exit(cli_help(&cli_manage_cmd, "quilkin manage", argc - p.ind, argv + p.ind));
    char path[64];
    snprintf(path, sizeof(path), "quilkin manage %s", sub->name);
    if (sub == &agones_cmd) {
        for (int i = p.ind + 1; i < argc; i++) {
            if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                cli_print_help(stdout, sub, path);
                exit(0);
            }
        }
        fprintf(stderr, "quilkin: the agones provider is not supported by this build\n");
        exit(EXIT_RUNTIME);
    }
    struct cli_parser pp;
    cli_parser_init(&pp, sub, &cli_root_cmd, path, argc - p.ind, argv + p.ind, false);
    o->path = NULL;
    while ((c = cli_next(&pp)) != CLI_END) {
        if (o->path) /* only operands reach here: -h exits in cli_next */
            cli_fail_unexpected(sub, path, pp.arg);
        o->path = pp.arg;
    }
    if (!o->path)
        o->path = getenv("QUILKIN_FS_PATH");
    if (!o->path)
        cli_usage_error("the following required arguments were not provided:\n  <PATH>\n\n"
                        "Usage: quilkin manage file <PATH>");
}

int cli_manage(const struct global_opts *g, int argc, char **argv)
{
    struct manage_opts o = {0};
    parse_manage(&o, argc, argv);
    LOG_INFO_F("xds",
               LOG_FIELDS(LF_STR("version", build_quilkin_version()),
                          LF_STR("commit", build_commit()), LF_STR("command", "manage")),
               "Starting Quilkin");
    struct manage_state *m = calloc(1, sizeof(*m));
    if (!m)
        return EXIT_RUNTIME;
    config_view_init(&m->view);
    int status = EXIT_RUNTIME, sig_fd = -1, epfd = -1;
    struct admin *admin = NULL;
    struct config_watch *watch = NULL;
    struct err e = {{0}};

    /* block before any thread starts, so every thread inherits the mask */
    sigset_t sigs;
    cli_block_signals(&sigs);

    /* the config file (-c) only provides the server's id here */
    struct config *own = NULL;
    char used[4096];
    if (cli_load_config(g, &own, used, &e) < 0) {
        fprintf(stderr, "quilkin: invalid configuration: %s\n", e.msg);
        goto out;
    }
    m->ads = ads_server_create(o.port, own->id, &e);
    config_destroy(own);
    if (m->ads && o.tls_cert &&
        ads_server_set_tls(m->ads, o.tls_cert, o.tls_key, o.tls_client_ca, &e) < 0) {
        ads_server_destroy(m->ads);
        m->ads = NULL;
    }
    if (m->ads) {
        /* one descriptor per connection, and some for the admin server and the watch */
        uint64_t nofile = cli_raise_nofile();
        if (nofile < (uint64_t)o.limits.max_conns + 64) {
            unsigned fit = nofile > 128 ? (unsigned)(nofile - 64) : 64;
            LOG_WARN("xds", "open-files limit %llu: at most %u xDS connections instead of %u",
                     (unsigned long long)nofile, fit, o.limits.max_conns);
            o.limits.max_conns = fit;
        }
        ads_server_set_limits(m->ads, &o.limits);
    }
    if (!m->ads) {
        LOG_ERROR("xds", "%s", e.msg);
        fprintf(stderr, "quilkin: %s\n", e.msg);
        goto out;
    }
    struct admin_hooks hooks = {.is_live = manage_live,
                                .readiness = manage_ready,
                                .render_metrics = manage_metrics,
                                .render_config = manage_config,
                                .ctx = m};
    if (cli_start_admin(g, &hooks, &admin) < 0)
        goto out;
    sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    watch = config_watch_create(o.path, &e);
    if (sig_fd == -1 || epfd == -1 || !watch) {
        LOG_ERROR("xds", "cannot set up: %s", watch ? strerror(errno) : e.msg);
        goto out;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = sig_fd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, sig_fd, &ev);
    ev.data.fd = config_watch_fd(watch);
    epoll_ctl(epfd, EPOLL_CTL_ADD, config_watch_fd(watch), &ev);

    load(m, &o);
    LOG_INFO("xds", "xDS server listening on [::]:%u (gRPC, %s)", ads_server_port(m->ads),
             !o.tls_cert ? "h2c" : o.tls_client_ca ? "TLS, client certificates required" : "TLS");
    LOG_INFO("xds", "Quilkin is ready");
    uint64_t load_at = 0, check_at = clock_mono_ns() + WATCH_CHECK_NS;
    for (;;) {
        uint64_t now = clock_mono_ns();
        uint64_t wake = load_at && load_at < check_at ? load_at : check_at;
        int timeout = wake > now ? (int)((wake - now) / 1000000 + 1) : 0;
        int r = ads_server_poll(m->ads, timeout, epfd);
        if (r < 0) {
            LOG_ERROR("xds", "xDS server failed: %s", strerror(-r));
            goto out;
        }
        if (r == 1) {
            struct epoll_event evs[4];
            int n = epoll_wait(epfd, evs, 4, 0);
            for (int i = 0; i < n; i++) {
                struct signalfd_siginfo si;
                if (evs[i].data.fd != sig_fd) {
                    if (config_watch_changed(watch))
                        load_at = clock_mono_ns() + PROVIDER_DEBOUNCE_NS;
                    continue;
                }
                while (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                    if (si.ssi_signo != SIGHUP) {
                        LOG_INFO("xds", "signal received: shutting down");
                        status = 0;
                        goto out;
                    }
                    /* a reload request (systemd ExecReload, supervisord): re-read now */
                    LOG_INFO("xds", "SIGHUP: re-reading %s", o.path);
                    config_watch_check(watch);
                    load_at = 0;
                    load(m, &o);
                }
            }
        }
        now = clock_mono_ns();
        if (now >= check_at) {
            check_at = now + WATCH_CHECK_NS;
            if (config_watch_check(watch)) /* fallback for file systems without inotify */
                load_at = now + PROVIDER_DEBOUNCE_NS;
        }
        if (load_at && clock_mono_ns() >= load_at) {
            load_at = 0;
            load(m, &o);
        }
    }
out:
    admin_stop(admin);
    ads_server_destroy(m->ads);
    config_watch_destroy(watch);
    if (sig_fd >= 0)
        close(sig_fd);
    if (epfd >= 0)
        close(epfd);
    config_destroy(m->served);
    config_view_deinit(&m->view);
    free(m);
    return status;
}
