/* /metrics, /ready and /config for `quilkin proxy` (spec admin.md §2-§4): sums the workers'
 * shards with relaxed loads at scrape time. Runs on the admin thread. */
#include "base/log.h"
#include "base/metrics.h"
#include "base/prom.h"
#include "base/strbuf.h"
#include "cli/proxy_state.h"
#include "xds/ads_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REASONS_CAP 64

unsigned proxy_readiness(void *ctx, const char **reason)
{
    struct proxy_state *ps = ctx;
    /* draining (extension): 503 so a load balancer stops sending new players here */
    if (atomic_load(&ps->control.draining)) {
        *reason = "draining";
        return 503;
    }
    /* spec admin.md §3: with xDS a stream that delivered a response; 503 while there is
     * none (not connected, or the link found dead by the keepalive: issue 10) */
    struct ads_client *ads = atomic_load_explicit(&ps->ads, memory_order_acquire);
    if (ads && !ads_client_is_healthy(ads)) {
        *reason = "no response from the management server";
        return 503;
    }
    /* spec admin.md §3: at least one endpoint */
    if (atomic_load(&ps->n_endpoints) == 0)
        return 500;
    return 200;
}

int proxy_render_config(void *ctx, struct strbuf *out)
{
    struct proxy_state *ps = ctx;
    return config_view_render(&ps->view, out);
}

struct reasons {
    const char *text[REASONS_CAP];
    uint64_t n[REASONS_CAP];
    unsigned count;
};

/* Merges one worker's reason into the sum (reasons are compared by text: two workers hold
 * the same static strings anyway). */
static void add_reason(void *ctx, const char *reason, uint64_t n)
{
    struct reasons *r = ctx;
    for (unsigned i = 0; i < r->count; i++) {
        if (strcmp(r->text[i], reason) == 0) {
            r->n[i] += n;
            return;
        }
    }
    if (r->count < REASONS_CAP) {
        r->text[r->count] = reason;
        r->n[r->count++] = n;
    }
}

static void drop_series(struct strbuf *out, const char *name, const char *label,
                        const char *event, const char *prefix, const char *reason, uint64_t n)
{
    char esc[512], labels[768];
    char text[512];
    snprintf(text, sizeof(text), "%s%s", prefix, reason);
    prom_escape(esc, sizeof(esc), text);
    snprintf(labels, sizeof(labels), "asn=\"\",%s=\"%s\",event=\"%s\",ip_prefix=\"\"", label,
             esc, event);
    prom_sample_u64(out, name, labels, n);
}

static void drops(struct strbuf *out, const char *name, const char *label,
                  const struct worker_stats *s, const struct reasons *rr,
                  const struct reasons *rw)
{
    for (int r = 0; r < DROP_REASON_COUNT; r++) {
        if (!s->drops[r] || r == DROP_FILTER_READ || r == DROP_FILTER_WRITE)
            continue;
        const char *event =
            drop_reason_direction((enum drop_reason)r) == DIR_WRITE ? "write" : "read";
        drop_series(out, name, label, event, "", drop_reason_text((enum drop_reason)r),
                    s->drops[r]);
    }
    /* spec proxy.md §10: "filter  error: MESSAGE" (two spaces, as v0.7.0 prints it) */
    /* a reason all of whose drops carry ASN labels has no unlabelled row */
    for (unsigned i = 0; i < rr->count; i++)
        if (rr->n[i])
            drop_series(out, name, label, "read", "filter  error: ", rr->text[i], rr->n[i]);
    for (unsigned i = 0; i < rw->count; i++)
        if (rw->n[i])
            drop_series(out, name, label, "write",
                        "proxy::Session::process_recv_packet: filter  error: ", rw->text[i],
                        rw->n[i]);
    if (s->filter_drops_unlisted[0])
        drop_series(out, name, label, "read", "filter  error: ", "other", 
                    s->filter_drops_unlisted[0]);
    if (s->filter_drops_unlisted[1])
        drop_series(out, name, label, "write", "filter  error: ", "other",
                    s->filter_drops_unlisted[1]);
}

int proxy_render_metrics(void *ctx, struct strbuf *out)
{
    struct proxy_state *ps = ctx;
    struct worker_stats *s = calloc(1, sizeof(*s));
    struct reasons *rr = calloc(1, sizeof(*rr)), *rw = calloc(1, sizeof(*rw));
    if (!s || !rr || !rw) {
        free(s);
        free(rr);
        free(rw);
        return -ENOMEM;
    }
    uint32_t active = 0;
    struct geo_scrape *geo = geo_scrape_collect(ps); /* the rows with ASN labels */
    unsigned n_workers = atomic_load_explicit(&ps->n_workers, memory_order_acquire);
    for (unsigned i = 0; i < n_workers; i++) {
        worker_stats_add(ps->workers[i], s);
        worker_filter_reasons(ps->workers[i], DIR_READ, add_reason, rr);
        worker_filter_reasons(ps->workers[i], DIR_WRITE, add_reason, rw);
        active += worker_session_count(ps->workers[i]);
    }

    prom_header(out, "quilkin_packets_total", "counter", "Total number of packets");
    if (s->packets_read)
        prom_sample_u64(out, "quilkin_packets_total", "asn=\"\",event=\"read\",ip_prefix=\"\"", s->packets_read);
    if (s->packets_write)
        prom_sample_u64(out, "quilkin_packets_total", "asn=\"\",event=\"write\",ip_prefix=\"\"",
                        s->packets_write);
    geo_render_packets(out, geo, "quilkin_packets_total", false);
    prom_header(out, "quilkin_bytes_total", "counter", "Total number of bytes");
    if (s->packets_read)
        prom_sample_u64(out, "quilkin_bytes_total", "asn=\"\",event=\"read\",ip_prefix=\"\"", s->bytes_read);
    if (s->packets_write)
        prom_sample_u64(out, "quilkin_bytes_total", "asn=\"\",event=\"write\",ip_prefix=\"\"", s->bytes_write);
    geo_render_packets(out, geo, "quilkin_bytes_total", true);
    prom_header(out, "quilkin_errors_total", "counter", "Total number of errors");
    drops(out, "quilkin_errors_total", "display", s, rr, rw);
    for (int k = 0; k < UPSTREAM_ERR_COUNT; k++) {
        if (!s->upstream_errors[k])
            continue;
        char labels[256];
        snprintf(labels, sizeof(labels), "asn=\"\",display=\"%s\",event=\"write\",ip_prefix=\"\"",
                 upstream_error_text((enum upstream_error)k));
        prom_sample_u64(out, "quilkin_errors_total", labels, s->upstream_errors[k]);
    }
    if (s->game_recv_errors)
        prom_sample_u64(out, "quilkin_errors_total",
                        "asn=\"\",display=\"game socket receive error\",event=\"read\","
                        "ip_prefix=\"\"",
                        s->game_recv_errors);
    geo_render_drops(out, geo, "quilkin_errors_total", "display", true);
    prom_header(out, "quilkin_log_lines_dropped_total", "counter",
                "Log records dropped because stdout did not keep up (extension)");
    prom_sample_u64(out, "quilkin_log_lines_dropped_total", "", log_dropped_lines());
    prom_header(out, "quilkin_kernel_drops_total", "counter",
                "Datagrams the kernel dropped because a socket's receive queue was full, by "
                "socket kind (extension; SO_RXQ_OVFL, reported with the next datagram)");
    for (int k = 0; k < SOCK_KIND_COUNT; k++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "socket=\"%s\"", sock_kind_text((enum sock_kind)k));
        prom_sample_u64(out, "quilkin_kernel_drops_total", labels, s->kernel_drops[k]);
    }
    prom_header(out, "quilkin_packets_dropped_total", "counter",
                "Total number of dropped packets");
    drops(out, "quilkin_packets_dropped_total", "source", s, rr, rw);
    geo_render_drops(out, geo, "quilkin_packets_dropped_total", "source", false);
    geo_render_jitter(out, geo);

    prom_header(out, "quilkin_packets_processing_duration_seconds", "histogram",
                "Time taken to process a packet (batch time divided by batch size)");
    static const char *const events[2] = {"event=\"read\"", "event=\"write\""};
    for (int d = 0; d < 2; d++)
        prom_histogram(out, "quilkin_packets_processing_duration_seconds", events[d],
                       worker_proc_bounds_s, PROC_BUCKETS, s->proc_counts[d],
                       (double)s->proc_sum_ns[d] / 1e9);

    prom_header(out, "quilkin_session_active", "gauge", "Number of active sessions");
    geo_render_sessions(out, geo, active);
    prom_header(out, "quilkin_session_total", "counter", "Total number of sessions created");
    prom_sample_u64(out, "quilkin_session_total", "", s->sessions_created);
    prom_header(out, "quilkin_session_expired_total", "counter",
                "Sessions removed after their idle timeout, by state (extension): unconfirmed "
                "ones never saw the client again after a reply");
    prom_sample_u64(out, "quilkin_session_expired_total", "state=\"confirmed\"",
                    s->sessions_expired - s->sessions_expired_unconfirmed);
    prom_sample_u64(out, "quilkin_session_expired_total", "state=\"unconfirmed\"",
                    s->sessions_expired_unconfirmed);
    prom_header(out, "quilkin_session_duration_secs", "histogram",
                "Duration of sessions in whole seconds");
    prom_histogram(out, "quilkin_session_duration_secs", "", worker_session_dur_bounds_s,
                   SESSION_DUR_BUCKETS, s->session_dur_counts, (double)s->session_dur_sum_s);

    /* spec admin.md §4.3: set at start-up too (v0.7.0 only after a dynamic update) */
    prom_header(out, "quilkin_cluster_active", "gauge", "Number of cluster groups");
    prom_sample_u64(out, "quilkin_cluster_active", "", atomic_load(&ps->n_groups));
    prom_header(out, "quilkin_cluster_active_endpoints", "gauge", "Number of endpoints");
    prom_sample_u64(out, "quilkin_cluster_active_endpoints", "", atomic_load(&ps->n_endpoints));

    /* Extensions (not in v0.7.0): QCMP responder and config reload counters. */
    prom_header(out, "quilkin_qcmp_packets_total", "counter",
                "QCMP datagrams: valid pings received, replies sent, invalid datagrams ignored");
    prom_sample_u64(out, "quilkin_qcmp_packets_total", "kind=\"ping\"", s->qcmp_pings);
    prom_sample_u64(out, "quilkin_qcmp_packets_total", "kind=\"reply\"", s->qcmp_replies);
    prom_sample_u64(out, "quilkin_qcmp_packets_total", "kind=\"invalid\"", s->qcmp_invalid);
    prom_sample_u64(out, "quilkin_qcmp_packets_total", "kind=\"limited_source\"",
                    s->qcmp_limited_source);
    prom_sample_u64(out, "quilkin_qcmp_packets_total", "kind=\"limited_global\"",
                    s->qcmp_limited_global);
    prom_header(out, "quilkin_config_reloads_total", "counter",
                "Config file reloads by result (applied or rejected)");
    prom_sample_u64(out, "quilkin_config_reloads_total", "result=\"applied\"",
                    atomic_load(&ps->reloads_ok));
    prom_sample_u64(out, "quilkin_config_reloads_total", "result=\"rejected\"",
                    atomic_load(&ps->reloads_failed));
    struct ads_client *ads = atomic_load_explicit(&ps->ads, memory_order_acquire);
    if (ads)
        ads_client_render_metrics(ads, out);
    /* the registry's series: per-filter metrics (spec admin.md §4.4) */
    metrics_render(out);
    geo_scrape_free(geo);
    free(s);
    free(rr);
    free(rw);
    return out->failed ? -ENOMEM : 0;
}
