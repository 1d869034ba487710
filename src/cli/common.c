/* Start-up steps every long-running command shares: the config file, the signal mask and the
 * admin server. */
#include "admin/http.h"
#include "base/err.h"
#include "base/log.h"
#include "cli/cli.h"
#include "config/config.h"
#include "net/addr.h"

#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_ADMIN_ADDRESS "[::]:8000"

void cli_block_signals(sigset_t *sigs)
{
    sigemptyset(sigs);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGHUP); /* a reload request from process managers, never an exit */
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cli_start_admin(const struct global_opts *g, const struct admin_hooks *hooks,
                    struct admin **out)
{
    *out = NULL;
    if (g->no_admin)
        return 0;
    struct addr listen;
    struct err e = {{0}};
    /* main.c validated the text; the default always parses */
    addr_parse(g->admin_address ? g->admin_address : DEFAULT_ADMIN_ADDRESS, &listen);
    *out = admin_start(&listen, hooks, &e);
    if (!*out) {
        LOG_ERROR("admin", "%s", e.msg);
        fprintf(stderr, "quilkin: %s\n", e.msg);
        return -1;
    }
    char text[ADDR_STR_CAP];
    LOG_INFO("admin", "admin server listening on %s (HTTP)", addr_format(&listen, text));
    return 0;
}

uint64_t cli_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT32_MAX : (uint64_t)rl.rlim_cur;
}

int cli_load_config(const struct global_opts *g, struct config **out, char *used_path,
                    struct err *e)
{
    /* spec config.md §1: a missing file falls back (v0.7.0 says so only at debug level);
     * a path someone named deserves a warning, the default one does not */
    if (g->is_config_explicit && g->config_path && access(g->config_path, F_OK) == -1 &&
        errno == ENOENT)
        LOG_WARN_F("config", LOG_FIELDS(LF_STR("path", g->config_path)),
                   "config file %s not found; falling back to /etc/quilkin/quilkin.yaml, "
                   "then to the built-in default",
                   g->config_path);
    return config_load_file(g->config_path, out, used_path, e);
}
