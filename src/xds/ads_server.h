/* The ADS server of `quilkin manage` (spec xds.md §7): serves the current configuration's
 * clusters and filter chain to any number of proxies over gRPC, and pushes every type a
 * stream has subscribed whenever the configuration changes (v0.7.0 pushes only the first).
 * Single-threaded: the caller drives it with ads_server_poll. */
#ifndef QK_XDS_ADS_SERVER_H
#define QK_XDS_ADS_SERVER_H

#include <stdint.h>

struct config;
struct err;
struct strbuf;
struct ads_server;

/* Listens on [::]:port. id: the control-plane identifier sent in responses. NULL with e. */
struct ads_server *ads_server_create(uint16_t port, const char *id, struct err *e);

/* Serves TLS (h2 via ALPN) with cert/key (PEM files); with client_ca, clients must present
 * a certificate signed by it (mTLS). Call before the first poll. 0, or -EINVAL with e set. */
int ads_server_set_tls(struct ads_server *s, const char *cert, const char *key,
                       const char *client_ca, struct err *e);

/* Replaces the connection and memory limits (grpc.h; defaults from
 * grpc_server_limits_default). Call before the first poll. On top of them every request is
 * checked before it is decoded: at most 10,000 resource_names of at most 1 KiB each, else
 * the stream ends RESOURCE_EXHAUSTED. */
struct grpc_server_limits;
void ads_server_set_limits(struct ads_server *s, const struct grpc_server_limits *l);

uint16_t ads_server_port(const struct ads_server *s);

/* Replaces the served configuration (taking ownership) and pushes it to every stream, for
 * every type the stream subscribed. The first call makes the server start answering. */
void ads_server_set_config(struct ads_server *s, struct config *cfg);

/* Runs the server for up to timeout_ms (see grpc_server_poll); returns 1 when extra_fd is
 * readable, else 0, or a negative errno on a fatal listener error. */
int ads_server_poll(struct ads_server *s, int timeout_ms, int extra_fd);

/* Appends the server metrics (quilkin_discovery_requests, quilkin_xds_nacks: the first 510
 * (node, type) pairs by name, the rest under node="other"; the limits' events and send
 * failures). Any thread. */
void ads_server_render_metrics(struct ads_server *s, struct strbuf *out);

/* Number of open ADS streams. Any thread. */
unsigned ads_server_stream_count(const struct ads_server *s);

void ads_server_destroy(struct ads_server *s);

#endif
