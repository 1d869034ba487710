/* The proxy's ADS client (src/xds/ads_client.c) against an in-process gRPC server: the
 * subscriptions it sends, and its ACK/NACK decisions (spec xds.md §5.2-§5.3) for a valid
 * Cluster, an undecodable resource, a Listener naming an unknown filter, and a config the
 * proxy refuses to publish. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "config/config.h"
#include "xds/ads_client.h"
#include "xds/grpc.h"
#include "xds/resources.h"

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define MAX_REQS 32
#define WAIT_MS 5000

/* Shared between the server thread, the ADS thread (apply hook) and the test thread. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct xds_request reqs[MAX_REQS];
static int n_reqs;
static struct grpc_stream *stream;      /* the client's stream, server thread only */
static uint8_t *pending;                /* a response to send, handed to the server thread */
static size_t pending_len;
static atomic_bool stop_server;
static atomic_int applied_endpoints = -1;
static atomic_bool refuse_apply;

static void *on_open(void *ctx, struct grpc_stream *s, const char *path)
{
    (void)ctx;
    if (strcmp(path, ADS_PATH) != 0)
        return NULL;
    stream = s;
    return (void *)1;
}

static void on_message(void *ctx, void *st, struct grpc_stream *s, const uint8_t *msg,
                       size_t len)
{
    (void)ctx;
    (void)st;
    (void)s;
    struct err e = {{0}};
    pthread_mutex_lock(&lock);
    if (n_reqs < MAX_REQS) {
        memset(&reqs[n_reqs], 0, sizeof(reqs[n_reqs]));
        if (xds_request_decode(msg, len, &reqs[n_reqs], &e) == 0)
            n_reqs++;
    }
    pthread_mutex_unlock(&lock);
}

static void on_close(void *ctx, void *st)
{
    (void)ctx;
    (void)st;
    stream = NULL;
}

static const struct grpc_server_ops ops = {
    .on_open = on_open, .on_message = on_message, .on_close = on_close};

static void *server_main(void *arg)
{
    struct grpc_server *srv = arg;
    while (!atomic_load(&stop_server)) {
        grpc_server_poll(srv, 20, -1);
        pthread_mutex_lock(&lock);
        if (pending && stream) {
            grpc_stream_send(stream, pending, pending_len);
            free(pending);
            pending = NULL;
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static int apply_hook(void *ctx, struct config *cfg, struct err *e)
{
    (void)ctx;
    int n = (int)config_endpoint_count(cfg);
    config_destroy(cfg);
    if (atomic_load(&refuse_apply))
        return err_set(e, "refused by the test");
    atomic_store(&applied_endpoints, n);
    return 0;
}

/* Waits until at least n requests arrived; returns a copy of request i's key fields. */
static bool wait_reqs(int n)
{
    uint64_t end = clock_mono_ns() + (uint64_t)WAIT_MS * 1000000ull;
    while (clock_mono_ns() < end) {
        pthread_mutex_lock(&lock);
        int have = n_reqs;
        pthread_mutex_unlock(&lock);
        if (have >= n)
            return true;
        usleep(2000);
    }
    return false;
}

static void push(const char *type_url, const char *version, const char *nonce,
                 struct xds_any *res, size_t n_res)
{
    struct xds_response rs = {.version_info = (char *)version,
                              .type_url = (char *)type_url,
                              .nonce = (char *)nonce,
                              .control_plane_id = "test-cp",
                              .resources = res,
                              .n_resources = n_res};
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(xds_response_encode(&rs, &buf, &len), 0);
    for (int i = 0; i < 500; i++) { /* bounded wait for the previous one to go out */
        pthread_mutex_lock(&lock);
        bool free_slot = pending == NULL;
        if (free_slot) {
            pending = buf;
            pending_len = len;
        }
        pthread_mutex_unlock(&lock);
        if (free_slot)
            return;
        usleep(2000);
    }
    fail_msg("response never left");
}

static void test_subscriptions_and_ack_nack(void **state)
{
    (void)state;
    struct err e = {{0}};
    struct grpc_server *srv = grpc_server_create(0, &ops, NULL, &e);
    assert_non_null(srv);
    pthread_t th;
    pthread_create(&th, NULL, server_main, srv);

    const char *yaml = "id: node-7\n";
    struct config *initial = NULL;
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &initial, &e), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", grpc_server_port(srv));
    const char *servers[] = {url};
    struct ads_client_opts o = {.servers = servers, .n_servers = 1, .idle_request_secs = 30};
    struct ads_client_hooks h = {.apply = apply_hook};
    struct ads_client *c = ads_client_start(&o, initial, &h, &e);
    assert_non_null(c);

    /* §5.2: Cluster, Listener, then (extension) ClusterLoadAssignment, with the node */
    assert_true(wait_reqs(3));
    pthread_mutex_lock(&lock);
    assert_string_equal(reqs[0].type_url, XDS_TYPE_CLUSTER);
    assert_string_equal(reqs[1].type_url, XDS_TYPE_LISTENER);
    assert_string_equal(reqs[2].type_url, XDS_TYPE_CLA);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(reqs[i].node_id, "node-7");
        assert_string_equal(reqs[i].user_agent_name, "quilkin");
        assert_true(!reqs[i].response_nonce || !reqs[i].response_nonce[0]);
        assert_false(reqs[i].has_error);
    }
    pthread_mutex_unlock(&lock);
    assert_false(ads_client_is_healthy(c));

    /* a valid Cluster: applied, then ACKed with version and nonce, and with the
       subscription's resource names (none: wildcard), not the names received: in
       state-of-the-world xDS an ACK restates the subscription (issue 10) */
    const char *cy = "clusters:\n  - locality: {region: eu, zone: z1}\n    endpoints:\n"
                     "      - address: 127.0.0.1:9\n      - address: 127.0.0.1:10\n";
    struct config *cc = NULL;
    assert_int_equal(config_parse(cy, strlen(cy), "c.yaml", &cc, &e), 0);
    struct xds_any res = {.type_url = XDS_TYPE_CLUSTER};
    assert_int_equal(xds_cluster_encode(&cc->groups[0], &res.value, &res.len), 0);
    push(XDS_TYPE_CLUSTER, "7", "n1", &res, 1);
    assert_true(wait_reqs(4));
    pthread_mutex_lock(&lock);
    assert_string_equal(reqs[3].type_url, XDS_TYPE_CLUSTER);
    assert_string_equal(reqs[3].version_info, "7");
    assert_string_equal(reqs[3].response_nonce, "n1");
    assert_int_equal(reqs[3].n_resource_names, 0);
    assert_false(reqs[3].has_error);
    assert_null(reqs[3].node_id); /* §5.3: no node in ACKs */
    pthread_mutex_unlock(&lock);
    assert_int_equal(atomic_load(&applied_endpoints), 2);
    assert_true(ads_client_is_healthy(c));

    /* an undecodable resource: NACK, code 3, the response's version echoed */
    uint8_t junk[] = {0x0a, 0xff, 0xff};
    struct xds_any bad = {.type_url = XDS_TYPE_CLUSTER, .value = junk, .len = sizeof(junk)};
    push(XDS_TYPE_CLUSTER, "8", "n2", &bad, 1);
    assert_true(wait_reqs(5));
    pthread_mutex_lock(&lock);
    assert_true(reqs[4].has_error);
    assert_int_equal(reqs[4].error_code, 3);
    assert_string_equal(reqs[4].version_info, "8");
    assert_string_equal(reqs[4].response_nonce, "n2");
    assert_true(reqs[4].error_message && reqs[4].error_message[0]);
    pthread_mutex_unlock(&lock);

    /* a Listener whose filter is not registered: NACK naming it. Our encoder refuses unknown
       names, so encode Pass and rename it in the bytes (same length: still valid protobuf). */
    const char *ly = "filters:\n  - name: quilkin.filters.pass.v1alpha1.Pass\n";
    struct config *lc = NULL;
    assert_int_equal(config_parse(ly, strlen(ly), "l.yaml", &lc, &e), 0);
    struct xds_any lres = {.type_url = XDS_TYPE_LISTENER};
    assert_int_equal(xds_listener_encode(lc->filters, lc->n_filters, &lres.value, &lres.len, &e),
                     0);
    uint8_t *name = memmem(lres.value, lres.len, "filters.pass.", 13);
    assert_non_null(name);
    memcpy(name, "filters.pasz.", 13);
    push(XDS_TYPE_LISTENER, "3", "n3", &lres, 1);
    assert_true(wait_reqs(6));
    pthread_mutex_lock(&lock);
    assert_string_equal(reqs[5].type_url, XDS_TYPE_LISTENER);
    assert_true(reqs[5].has_error);
    assert_non_null(strstr(reqs[5].error_message, "quilkin.filters.pasz.v1alpha1.Pass"));
    pthread_mutex_unlock(&lock);
    free(lres.value);

    /* the proxy refuses to publish (e.g. a chain that does not build): NACK with its text */
    atomic_store(&refuse_apply, true);
    push(XDS_TYPE_CLUSTER, "9", "n4", &res, 1);
    assert_true(wait_reqs(7));
    pthread_mutex_lock(&lock);
    assert_true(reqs[6].has_error);
    assert_string_equal(reqs[6].error_message, "refused by the test");
    assert_string_equal(reqs[6].version_info, "9");
    pthread_mutex_unlock(&lock);

    ads_client_stop(c);
    atomic_store(&stop_server, true);
    pthread_join(th, NULL);
    grpc_server_destroy(srv);
    for (int i = 0; i < n_reqs; i++)
        xds_request_free(&reqs[i]);
    free(pending);
    free(res.value);
    config_destroy(cc);
    config_destroy(lc);
}

/* spec xds.md §5.1: the delay before retry n is min(500 ms x 2^(n-1), cap) plus a jitter in
 * [0, 2000) ms. A server that accepts and closes never delivers a response, so the client
 * keeps backing off; with the cap at 500 ms every gap between its attempts stays within
 * [500 ms, 2.5 s) (plus scheduling slack), where the 4th retry uncapped would wait at least
 * 4 s. The proxy's cap is 30 s (ads_client.c), which only this option makes testable. */
static void test_backoff_is_capped(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(ls >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(ls, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(ls, 16), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&sin, &len), 0);

    struct err e = {{0}};
    const char *yaml = "id: node-b\n";
    struct config *initial = NULL;
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &initial, &e), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(sin.sin_port));
    const char *servers[] = {url};
    struct ads_client_opts o = {
        .servers = servers, .n_servers = 1, .idle_request_secs = 30, .max_backoff_ms = 500};
    struct ads_client_hooks h = {.apply = apply_hook};
    struct ads_client *c = ads_client_start(&o, initial, &h, &e);
    assert_non_null(c);

    enum { ATTEMPTS = 5 };
    uint64_t at[ATTEMPTS];
    int n = 0;
    uint64_t deadline = clock_mono_ns() + 20ull * 1000000000ull;
    while (n < ATTEMPTS && clock_mono_ns() < deadline) {
        struct pollfd p = {.fd = ls, .events = POLLIN};
        if (poll(&p, 1, 100) != 1)
            continue;
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        at[n++] = clock_mono_ns();
        close(fd); /* TCP works, the stream never does */
    }
    ads_client_stop(c);
    close(ls);
    assert_int_equal(n, ATTEMPTS);
    for (int i = 1; i < ATTEMPTS; i++) {
        uint64_t gap_ms = (at[i] - at[i - 1]) / 1000000;
        print_message("retry %d after %lu ms\n", i, (unsigned long)gap_ms);
        assert_true(gap_ms >= 480);
        assert_true(gap_ms < 3000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscriptions_and_ack_nack),
        cmocka_unit_test(test_backoff_is_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
