/* quilkin: parse the global options, set up logging, dispatch to a sub-command. */
#include "base/log.h"
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/addr.h"

static const char usage_text[] =
    "Usage: quilkin [OPTIONS] <COMMAND>\n"
    "\n"
    "Commands:\n"
    "  proxy   Run Quilkin as a UDP reverse game server proxy\n"
    "  manage  Run an xDS management server (manage file PATH)\n"
    "  qcmp    Quilkin Control Message Protocol client (qcmp ping ADDR [-a N])\n"
    "\n"
    "Options:\n"
    "      --no-admin                 Do not start the admin server [env: NO_ADMIN]\n"
    "  -c, --config <CONFIG>          Configuration file [env: QUILKIN_CONFIG]\n"
    "                                 [default: quilkin.yaml]\n"
    "      --admin-address <ADDRESS>  Admin server address [env: QUILKIN_ADMIN_ADDRESS]\n"
    "                                 [default: [::]:8000]\n"
    "  -q, --quiet                    Print nothing [env: QUIET]\n"
    "      --log-format <FORMAT>      auto, json, plain or pretty [default: auto]\n"
    "  -h, --help                     Print help\n"
    "  -V, --version                  Print version\n";

int main(int argc, char **argv)
{
    struct global_opts g = {0};
    const char *log_format = "auto";
    const char *env;
    if ((env = getenv("NO_ADMIN")))
        g.no_admin = cli_parse_bool_env("NO_ADMIN", env);
    if ((env = getenv("QUIET")))
        g.quiet = cli_parse_bool_env("QUIET", env);
    g.config_path = getenv("QUILKIN_CONFIG");
    g.admin_address = getenv("QUILKIN_ADMIN_ADDRESS");

    enum { OPT_NO_ADMIN = 256, OPT_ADMIN_ADDRESS, OPT_LOG_FORMAT };
    static const struct option opts[] = {
        {"no-admin", no_argument, NULL, OPT_NO_ADMIN},
        {"config", required_argument, NULL, 'c'},
        {"admin-address", required_argument, NULL, OPT_ADMIN_ADDRESS},
        {"quiet", no_argument, NULL, 'q'},
        {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    /* '+': stop at the sub-command; global options are only recognised before it */
    while ((c = getopt_long(argc, argv, "+c:qhV", opts, NULL)) != -1) {
        switch (c) {
        case OPT_NO_ADMIN:
            g.no_admin = true;
            break;
        case 'c':
            g.config_path = optarg;
            break;
        case OPT_ADMIN_ADDRESS:
            g.admin_address = optarg;
            break;
        case 'q':
            g.quiet = true;
            break;
        case OPT_LOG_FORMAT:
            log_format = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case 'V':
            printf("quilkin %s\n", QK_VERSION);
            return 0;
        default:
            cli_usage_error("invalid global option (see --help)");
        }
    }
    if (g.admin_address) {
        struct addr a;
        if (addr_parse(g.admin_address, &a) < 0)
            cli_usage_error("invalid value '%s' for '--admin-address <ADDRESS>': expected "
                            "IP:PORT or [IPv6]:PORT",
                            g.admin_address);
    }
    enum log_format fmt;
    if (strcmp(log_format, "json") == 0)
        fmt = LOG_FORMAT_JSON;
    else if (strcmp(log_format, "plain") == 0 || strcmp(log_format, "pretty") == 0)
        fmt = LOG_FORMAT_PLAIN;
    else if (strcmp(log_format, "auto") == 0)
        fmt = isatty(STDOUT_FILENO) ? LOG_FORMAT_PLAIN : LOG_FORMAT_JSON;
    else
        cli_usage_error("invalid value '%s' for '--log-format <FORMAT>': expected auto, json, "
                        "plain or pretty",
                        log_format);
    enum log_level level = LOG_LEVEL_INFO;
    if ((env = getenv("RUST_LOG")) && *env && !log_parse_level(env, &level))
        level = LOG_LEVEL_INFO;
    log_init(g.quiet ? LOG_LEVEL_OFF : level, fmt);
    /* long-running commands log from workers: never let a slow stdout block them */
    if (!g.quiet && log_writer_start() == 0)
        atexit(log_writer_stop);

    if (optind >= argc)
        cli_usage_error("a command is required (see --help)");
    const char *cmd = argv[optind];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    optind = 0; /* 0, not 1: fully re-initialise GNU getopt for the sub-command */
    if (strcmp(cmd, "proxy") == 0)
        return cli_proxy(&g, sub_argc, sub_argv);
    if (strcmp(cmd, "qcmp") == 0)
        return cli_qcmp(&g, sub_argc, sub_argv);
    if (strcmp(cmd, "manage") == 0)
        return cli_manage(&g, sub_argc, sub_argv);
    if (strcmp(cmd, "relay") == 0 || strcmp(cmd, "agent") == 0 ||
        strcmp(cmd, "generate-config-schema") == 0) {
        fprintf(stderr, "quilkin: the `%s` command is not implemented yet\n", cmd);
        return EXIT_RUNTIME;
    }
    cli_usage_error("unrecognized command '%s' (see --help)", cmd);
}
