/* Shared command-line plumbing: global options, value parsers with the spec's usage-error
 * behaviour (exit 2), and the sub-command entry points. Only cli/ may exit(). */
#ifndef QK_CLI_CLI_H
#define QK_CLI_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

struct admin;
struct admin_hooks;
struct cli_command;
struct config;
struct err;

#define EXIT_USAGE 2
#define EXIT_RUNTIME 255

/* Options accepted before the sub-command (spec cli.md §1). */
struct global_opts {
    bool no_admin;
    const char *config_path;   /* NULL: the default lookup */
    bool is_config_explicit;   /* given with -c or QUILKIN_CONFIG */
    const char *admin_address; /* validated IP:PORT text */
    bool quiet;
};

/* Prints "quilkin: MESSAGE" and a hint to stderr, then exits 2. */
void cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Value parsers: exit 2 with a message naming the option on bad input. */
uint16_t cli_parse_u16(const char *opt, const char *text);
uint64_t cli_parse_u64(const char *opt, const char *text);
bool cli_parse_bool_env(const char *var, const char *text);

/* Blocks SIGINT/SIGTERM/SIGHUP in the calling thread (call it before starting any thread, so all
 * inherit the mask; the command then reads them from a signalfd) and ignores SIGPIPE.
 * *sigs receives the blocked set. */
void cli_block_signals(sigset_t *sigs);

/* Raises the open-files limit to its hard maximum and returns the soft limit now in force. */
uint64_t cli_raise_nofile(void);

/* Starts the admin server unless --no-admin (spec cli.md §2.1 step 1). On a bind failure
 * logs, prints to stderr and returns -1 (the command exits 255). *out is NULL when off. */
int cli_start_admin(const struct global_opts *g, const struct admin_hooks *hooks,
                    struct admin **out);

/* Loads the config file of spec config.md §1 (the fallbacks included) into *out; used_path
 * (PATH_MAX bytes) receives the file read, "" for the built-in default. A -c/QUILKIN_CONFIG
 * path that does not exist is logged as a WARN naming it before the fallback. 0, or a
 * negative errno with e set. */
int cli_load_config(const struct global_opts *g, struct config **out, char *used_path,
                    struct err *e);

/* The entry point: global options, then the sub-command. Returns the exit status. */
int cli_main(int argc, char **argv);

/* The command tables (cli/opts.h): the root and its sub-commands. */
extern const struct cli_command cli_root_cmd, cli_help_cmd, cli_proxy_cmd, cli_qcmp_cmd,
    cli_manage_cmd, cli_schema_cmd, cli_completions_cmd, cli_man_cmd;

/* Sub-commands; argv[0] is the sub-command name. They return the process exit status. */
int cli_proxy(const struct global_opts *g, int argc, char **argv);
int cli_qcmp(const struct global_opts *g, int argc, char **argv);
int cli_manage(const struct global_opts *g, int argc, char **argv);
int cli_generate_config_schema(const struct global_opts *g, int argc, char **argv);
int cli_completions(int argc, char **argv);
int cli_man(int argc, char **argv);

/* `help [COMMAND]...` below cmd, reached as path: prints that command's help. */
int cli_help(const struct cli_command *cmd, const char *path, int argc, char **argv);

#endif
