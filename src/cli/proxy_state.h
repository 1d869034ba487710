/* What the proxy command's control thread owns while running, shared between cli/proxy.c
 * (start-up, control loop, reload) and cli/proxy_metrics.c (admin callbacks). */
#ifndef QK_CLI_PROXY_STATE_H
#define QK_CLI_PROXY_STATE_H

#include "config/dump.h"
#include "proxy/geo.h"
#include "proxy/worker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>

struct strbuf;
struct ads_client;

#define MAX_WORKERS 256

struct proxy_state {
    struct worker *workers[MAX_WORKERS];
    _Atomic unsigned n_workers; /* stored (release) after each worker is created; the admin
                                   thread loads it (acquire) before reading workers[] */
    struct worker_control control;
    struct ads_client *_Atomic ads; /* NULL without --management-server; set once (release)
                                       by the control thread, read by the admin thread */
    /* facts about the current snapshot, stored by the control thread at each publish */
    _Atomic uint32_t n_groups, n_endpoints;
    _Atomic uint64_t reloads_ok, reloads_failed;
    /* /config: the current config as JSON, rebuilt at each publish */
    struct config_view view; /* /config; publish may run on the ADS thread */
    struct geo_source geo;   /* --mmdb: swapped by the control thread, read by workers */
};

/* Admin hooks (admin thread). */
unsigned proxy_readiness(void *ctx, const char **reason);
int proxy_render_metrics(void *ctx, struct strbuf *out);
int proxy_render_config(void *ctx, struct strbuf *out);

/* The workers' labelled counters summed by label text (cli/proxy_geo_metrics.c), for one
 * scrape. NULL when out of memory (then only unlabelled rows are shown). Admin thread, or
 * the control thread at shutdown. */
struct geo_scrape;
struct geo_scrape *geo_scrape_collect(const struct proxy_state *ps);
void geo_scrape_free(struct geo_scrape *s);

/* Rows with asn/ip_prefix labels. s may be NULL (nothing is written). */
void geo_render_packets(struct strbuf *out, const struct geo_scrape *s, const char *name,
                        bool is_bytes);
void geo_render_drops(struct strbuf *out, const struct geo_scrape *s, const char *name,
                      const char *label, bool is_errors);
/* quilkin_packet_jitter, header included: every label set a worker has set it for. */
void geo_render_jitter(struct strbuf *out, const struct geo_scrape *s);
/* quilkin_session_active: the labelled rows and the rest (of active) under asn="0". */
void geo_render_sessions(struct strbuf *out, const struct geo_scrape *s, uint64_t active);

/* Adds the labelled packet and byte counts (read, write) to the arrays. */
void geo_scrape_totals(const struct geo_scrape *s, uint64_t packets[2], uint64_t bytes[2]);
/* Labelled drops whose label text is exactly text. */
uint64_t geo_scrape_drops_of(const struct geo_scrape *s, const char *text);

#endif
