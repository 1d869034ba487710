/* What the proxy command's control thread owns while running, shared between cli/proxy.c
 * (start-up, control loop, reload) and cli/proxy_metrics.c (admin callbacks). */
#ifndef QK_CLI_PROXY_STATE_H
#define QK_CLI_PROXY_STATE_H

#include "config/dump.h"
#include "proxy/worker.h"

#include <pthread.h>
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
};

/* Admin hooks (admin thread). */
unsigned proxy_readiness(void *ctx, const char **reason);
int proxy_render_metrics(void *ctx, struct strbuf *out);
int proxy_render_config(void *ctx, struct strbuf *out);

#endif
