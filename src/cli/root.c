/* The root of the command line: global options (spec cli.md §1), --version, `help`, log
 * set-up, and the dispatch to a sub-command. Global options are only recognised before the
 * command, as in v0.7.0 (its clap globals are not `global = true`). */
#include "base/build_info.h"
#include "base/log.h"
#include "cli/cli.h"
#include "cli/opts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/addr.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum { OPT_NO_ADMIN = 256, OPT_ADMIN_ADDRESS, OPT_LOG_FORMAT };

static const char *const log_formats[] = {"auto", "json", "plain", "pretty", NULL};

static const struct cli_opt root_opts[] = {
    {.id = OPT_NO_ADMIN, .long_name = "no-admin", .env = "NO_ADMIN",
     .help = "Whether to spawn the admin server or not"},
    {.id = 'c', .short_name = 'c', .long_name = "config", .value_name = "CONFIG",
     .value = CLI_VALUE_FILE, .env = "QUILKIN_CONFIG", .def = "quilkin.yaml",
     .help = "The path to the configuration file for the Quilkin instance"},
    {.id = OPT_ADMIN_ADDRESS, .long_name = "admin-address", .value_name = "ADMIN_ADDRESS",
     .value = CLI_VALUE_TEXT, .env = "QUILKIN_ADMIN_ADDRESS", .def = "[::]:8000",
     .help = "The address (IP:PORT) to bind the admin server to"},
    {.id = 'q', .short_name = 'q', .long_name = "quiet", .env = "QUIET",
     .help = "Whether Quilkin will report any results to stdout/stderr"},
    {.id = OPT_LOG_FORMAT, .long_name = "log-format", .value_name = "LOG_FORMAT",
     .value = CLI_VALUE_CHOICE, .choices = log_formats, .def = "auto",
     .help = "Log format; auto is json when stdout is not a terminal"},
    {.id = CLI_OPT_HELP, .short_name = 'h', .long_name = "help", .help = "Print help"},
    {.id = CLI_OPT_VERSION, .short_name = 'V', .long_name = "version", .help = "Print version"},
};

static const struct cli_arg help_args[] = {
    {.name = "COMMAND", .help = "Print help for the subcommand(s)", .is_optional = true,
     .is_repeated = true},
};

const struct cli_command cli_help_cmd = {
    .name = "help",
    .about = "Print this message or the help of the given subcommand(s)",
    .usage = "[COMMAND]...",
    .args = help_args,
    .n_args = ARRAY_LEN(help_args),
};

/* v0.7.0 has these; quilkin-c does not implement them (yet). */
static const struct cli_command agent_cmd = {
    .name = "agent",
    .about = "Runs Quilkin as a relay service that runs a Manager in each cluster and relays "
             "that information to a centralised relay (not implemented in quilkin-c)",
    .usage = "[OPTIONS] [COMMAND]",
    .opts = cli_help_only,
    .n_opts = 1,
};

static const struct cli_command relay_cmd = {
    .name = "relay",
    .about = "Runs Quilkin as a relay service that merges the configuration of agents and "
             "serves it to proxies (not implemented in quilkin-c)",
    .usage = "[OPTIONS] [COMMAND]",
    .opts = cli_help_only,
    .n_opts = 1,
};

static const struct cli_command *const root_subs[] = {
    &agent_cmd,       &cli_schema_cmd,      &cli_manage_cmd, &cli_qcmp_cmd,
    &cli_proxy_cmd,   &relay_cmd,           &cli_completions_cmd, &cli_man_cmd,
    &cli_help_cmd,
};

const struct cli_command cli_root_cmd = {
    .name = "quilkin",
    .about = "The Command-Line Interface for Quilkin",
    .usage = "[OPTIONS] <COMMAND>",
    .opts = root_opts,
    .n_opts = ARRAY_LEN(root_opts),
    .subs = root_subs,
    .n_subs = ARRAY_LEN(root_subs),
};

/* `help [COMMAND]...` below cmd (reached as path): prints the help of the named command. */
int cli_help(const struct cli_command *cmd, const char *path, int argc, char **argv)
{
    char full[256];
    snprintf(full, sizeof(full), "%s", path);
    for (int i = 1; i < argc; i++) {
        const struct cli_command *sub = cli_find_sub(cmd, argv[i]);
        if (!sub || sub == &cli_help_cmd)
            cli_fail_unknown_sub(cmd, full, argv[i]);
        cmd = sub;
        size_t n = strlen(full);
        snprintf(full + n, sizeof(full) - n, " %s", sub->name);
    }
    cli_print_help(stdout, cmd, full);
    return 0;
}

static void print_version(void)
{
    /* the first line stays what v0.7.0 prints: scripts parse it */
    printf("quilkin %s\nquilkin-c %s (commit %s)\n", build_quilkin_version(), build_version(),
           build_commit());
}

/* Commands that print a document to stdout and log nothing. */
static bool is_quiet_command(const char *cmd)
{
    return strcmp(cmd, "help") == 0 || strcmp(cmd, "completions") == 0 ||
           strcmp(cmd, "man") == 0;
}

static void set_up_logging(const struct global_opts *g, const char *log_format)
{
    enum log_format fmt;
    if (strcmp(log_format, "json") == 0)
        fmt = LOG_FORMAT_JSON;
    else if (strcmp(log_format, "plain") == 0 || strcmp(log_format, "pretty") == 0)
        fmt = LOG_FORMAT_PLAIN;
    else
        fmt = isatty(STDOUT_FILENO) ? LOG_FORMAT_PLAIN : LOG_FORMAT_JSON;
    enum log_level level = LOG_LEVEL_INFO;
    const char *env = getenv("RUST_LOG");
    if (env && *env && !log_parse_level(env, &level))
        level = LOG_LEVEL_INFO;
    log_init(g->quiet ? LOG_LEVEL_OFF : level, fmt);
    /* long-running commands log from workers: never let a slow stdout block them */
    if (!g->quiet && log_writer_start() == 0)
        atexit(log_writer_stop);
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return true;
    return false;
}

int cli_main(int argc, char **argv)
{
    struct global_opts g = {0};
    const char *log_format = "auto";
    const char *env;
    if ((env = getenv("NO_ADMIN")))
        g.no_admin = cli_parse_bool_env("NO_ADMIN", env);
    if ((env = getenv("QUIET")))
        g.quiet = cli_parse_bool_env("QUIET", env);
    g.config_path = getenv("QUILKIN_CONFIG");
    g.is_config_explicit = g.config_path != NULL;
    g.admin_address = getenv("QUILKIN_ADMIN_ADDRESS");

    if (argc < 2) {
        /* clap's arg_required_else_help: the help, on stderr, as an error */
        cli_print_help(stderr, &cli_root_cmd, "quilkin");
        return EXIT_USAGE;
    }
    struct cli_parser p;
    cli_parser_init(&p, &cli_root_cmd, NULL, "quilkin", argc, argv, true);
    int c;
    while ((c = cli_next(&p)) != CLI_END) {
        switch (c) {
        case OPT_NO_ADMIN:
            g.no_admin = true;
            break;
        case 'c':
            g.config_path = p.arg;
            g.is_config_explicit = true;
            break;
        case OPT_ADMIN_ADDRESS:
            g.admin_address = p.arg;
            break;
        case 'q':
            g.quiet = true;
            break;
        case OPT_LOG_FORMAT:
            log_format = p.arg;
            break;
        case CLI_OPT_VERSION:
            print_version();
            return 0;
        default:
            break;
        }
    }
    if (g.admin_address) {
        struct addr a;
        if (addr_parse(g.admin_address, &a) < 0)
            cli_usage_error("invalid value '%s' for '--admin-address <ADMIN_ADDRESS>': expected "
                            "IP:PORT or [IPv6]:PORT",
                            g.admin_address);
    }
    bool known_format = false;
    for (size_t i = 0; log_formats[i]; i++)
        known_format |= strcmp(log_format, log_formats[i]) == 0;
    if (!known_format)
        cli_usage_error("invalid value '%s' for '--log-format <LOG_FORMAT>'\n  [possible "
                        "values: auto, json, plain, pretty]",
                        log_format);

    if (p.ind >= argc)
        cli_fail_missing_sub(&cli_root_cmd, "quilkin");
    const char *name = argv[p.ind];
    const struct cli_command *cmd = cli_find_sub(&cli_root_cmd, name);
    if (!cmd)
        cli_fail_unknown_sub(&cli_root_cmd, "quilkin", name);
    int sub_argc = argc - p.ind;
    char **sub_argv = argv + p.ind;
    if (cmd == &cli_help_cmd)
        return cli_help(&cli_root_cmd, "quilkin", sub_argc, sub_argv);
    if (cmd == &agent_cmd || cmd == &relay_cmd) {
        if (wants_help(sub_argc, sub_argv)) {
            char path[64];
            snprintf(path, sizeof(path), "quilkin %s", cmd->name);
            cli_print_help(stdout, cmd, path);
            return 0;
        }
        fprintf(stderr, "quilkin: the `%s` command is not implemented yet\n", cmd->name);
        return EXIT_RUNTIME;
    }
    if (!is_quiet_command(name))
        set_up_logging(&g, log_format);
    if (cmd == &cli_proxy_cmd)
        return cli_proxy(&g, sub_argc, sub_argv);
    if (cmd == &cli_qcmp_cmd)
        return cli_qcmp(&g, sub_argc, sub_argv);
    if (cmd == &cli_manage_cmd)
        return cli_manage(&g, sub_argc, sub_argv);
    if (cmd == &cli_schema_cmd)
        return cli_generate_config_schema(&g, sub_argc, sub_argv);
    if (cmd == &cli_completions_cmd)
        return cli_completions(sub_argc, sub_argv);
    return cli_man(sub_argc, sub_argv);
}
