/* `quilkin man` (hidden): the man page quilkin(1) in roff, made from the option tables
 * (cli/opts.h) that also make --help and the completions. The output holds no build detail
 * (date, commit), so `make man` reproduces docs/man/quilkin.1 byte for byte and a test
 * keeps the two in sync. */
#include "base/build_info.h"
#include "cli/cli.h"
#include "cli/opts.h"

#include <stdio.h>
#include <string.h>

const struct cli_command cli_man_cmd = {
    .name = "man",
    .about = "Writes the man page quilkin(1) to stdout",
    .usage = "",
    .opts = cli_help_only,
    .n_opts = 1,
    .is_hidden = true,
};

/* Text for roff: backslashes and dashes escaped; a line never starts with a control
 * character: roff_sentence() guards the start of a line. */
static void roff(const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", stdout);
        else if (*s == '-')
            fputs("\\-", stdout);
        else
            putchar(*s);
    }
}

/* A help text as a sentence of its own (the tables' texts have no final period). */
static void roff_sentence(const char *s)
{
    if (!*s)
        return;
    if (*s == '.' || *s == '\'')
        fputs("\\&", stdout);
    roff(s);
    fputs(s[strlen(s) - 1] == '.' ? "\n" : ".\n", stdout);
}

/* The facts after a help text: possible values, default, environment variable. */
static void man_details(const char *const *choices, const char *def, const char *env)
{
    if (choices) {
        fputs("Possible values: ", stdout);
        for (size_t i = 0; choices[i]; i++) {
            fputs(i ? ", " : "", stdout);
            roff(choices[i]);
        }
        fputs(".\n", stdout);
    }
    if (def) {
        fputs("Default: ", stdout);
        roff(def);
        fputs(".\n", stdout);
    }
    if (env) {
        fputs("Environment: \\fB", stdout);
        roff(env);
        fputs("\\fR.\n", stdout);
    }
}

static void man_opt(const struct cli_opt *o)
{
    fputs(".TP\n", stdout);
    if (o->short_name)
        printf("\\fB\\-%c\\fR, ", o->short_name);
    printf("\\fB\\-\\-");
    roff(o->long_name);
    fputs("\\fR", stdout);
    if (o->value_name) {
        fputs(" \\fI", stdout);
        roff(o->value_name);
        fputs("\\fR", stdout);
    }
    putchar('\n');
    roff_sentence(o->help ? o->help : "");
    man_details(o->choices, o->def, o->env);
    if (o->flags & CLI_REPEAT)
        fputs("May be given several times.\n", stdout);
}

static void man_args(const struct cli_command *cmd)
{
    for (size_t i = 0; i < cmd->n_args; i++) {
        const struct cli_arg *a = &cmd->args[i];
        printf(".TP\n\\fI");
        roff(a->name);
        printf("\\fR%s\n", a->is_repeated ? "..." : "");
        roff_sentence(a->help ? a->help : "");
        man_details(a->choices, a->def, a->env);
    }
}

/* One section per command below the root, depth first ("quilkin qcmp ping"). */
static void man_commands(const struct cli_command *cmd, const char *path)
{
    for (size_t i = 0; i < cmd->n_subs; i++) {
        const struct cli_command *sub = cmd->subs[i];
        if (sub->is_hidden)
            continue;
        char sub_path[128];
        snprintf(sub_path, sizeof(sub_path), "%s %s", path, sub->name);
        fputs(".SS \"", stdout);
        roff(sub_path);
        putchar(' ');
        roff(sub->usage);
        fputs("\"\n", stdout);
        roff_sentence(sub->about ? sub->about : "");
        man_args(sub);
        for (size_t k = 0; k < sub->n_opts; k++)
            if (!(sub->opts[k].flags & CLI_HIDDEN) && sub->opts[k].id != CLI_OPT_HELP)
                man_opt(&sub->opts[k]);
        if (sub != &cli_help_cmd)
            man_commands(sub, sub_path);
    }
}

/* ENVIRONMENT: every variable once, with the option(s) it stands for. */
static void man_environment(const struct cli_command *cmd, const char *path)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (!o->env || (o->flags & CLI_HIDDEN))
            continue;
        fputs(".TP\n\\fB", stdout);
        roff(o->env);
        fputs("\\fR\n", stdout);
        roff(path);
        fputs(" \\-\\-", stdout);
        roff(o->long_name);
        putchar('\n');
    }
    for (size_t i = 0; i < cmd->n_args; i++) {
        if (!cmd->args[i].env)
            continue;
        fputs(".TP\n\\fB", stdout);
        roff(cmd->args[i].env);
        fputs("\\fR\n", stdout);
        roff(path);
        fputs(" \\fI", stdout);
        roff(cmd->args[i].name);
        fputs("\\fR\n", stdout);
    }
    for (size_t i = 0; i < cmd->n_subs; i++) {
        char sub_path[128];
        snprintf(sub_path, sizeof(sub_path), "%s %s", path, cmd->subs[i]->name);
        if (!cmd->subs[i]->is_hidden)
            man_environment(cmd->subs[i], sub_path);
    }
}

int cli_man(int argc, char **argv)
{
    struct cli_parser p;
    cli_parser_init(&p, &cli_man_cmd, &cli_root_cmd, "quilkin man", argc, argv, false);
    if (cli_next(&p) != CLI_END)
        cli_fail_unexpected(&cli_man_cmd, "quilkin man", p.arg);
    const struct cli_command *root = &cli_root_cmd;
    printf(".\\\" generated by `quilkin man` (make man): do not edit\n"
           ".TH QUILKIN 1 \"\" \"quilkin %s\" \"User Commands\"\n"
           ".SH NAME\nquilkin \\- UDP proxy for multiplayer game traffic (quilkin\\-c, a "
           "drop\\-in replacement for Quilkin %s)\n"
           ".SH SYNOPSIS\n.B quilkin\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fICOMMAND "
           "OPTIONS\\fR]\n"
           ".SH DESCRIPTION\n"
           "quilkin sits beside game servers: clients send UDP datagrams to the proxy, which "
           "runs them through a filter chain and forwards them to the game server endpoints, "
           "relaying the replies back from its own port.\n"
           "The configuration comes from a YAML file or from an xDS management server.\n"
           "Global options must come before the command.\n"
           ".SH OPTIONS\n",
           build_quilkin_version(), build_quilkin_version());
    for (size_t i = 0; i < root->n_opts; i++)
        if (!(root->opts[i].flags & CLI_HIDDEN))
            man_opt(&root->opts[i]);
    fputs(".SH COMMANDS\n", stdout);
    man_commands(root, "quilkin");
    fputs(".SH ENVIRONMENT\n", stdout);
    man_environment(root, "quilkin");
    fputs(".TP\n\\fBRUST_LOG\\fR\nLog level: error, warn, info (the default), debug or "
          "trace, also as a directive such as quilkin=debug.\n"
          ".SH FILES\n.TP\n\\fIquilkin.yaml\\fR\nThe default configuration file, in the "
          "current directory.\n.TP\n\\fI/etc/quilkin/quilkin.yaml\\fR\nRead when the "
          "configuration file does not exist; without either, the built\\-in empty "
          "configuration is used.\n"
          ".SH EXIT STATUS\n.TP\n0\nA clean shutdown, or a command that completed.\n.TP\n2\n"
          "A usage error: an unknown option, a bad value, a missing argument.\n.TP\n255\n"
          "A start\\-up error: an invalid configuration, no endpoints, a port in use.\n"
          ".SH SIGNALS\nSIGINT and SIGTERM drain the proxy: replies stop, client traffic is "
          "still forwarded until every session has expired; a second signal exits at once. "
          "SIGHUP re\\-reads the configuration file.\n"
          ".SH SEE ALSO\nquilkin completions bash|zsh|fish writes shell completions; "
          "quilkin help COMMAND prints the help of a command.\n",
          stdout);
    return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
}
