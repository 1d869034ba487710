/* The command line as data: every command's options and arguments are rows of a table
 * (STYLE.md §5, Redis's typed option table), and one parser, the help text, the shell
 * completions and the man page are all made from those rows, so they cannot disagree.
 * Errors are worded as clap 4.4 words them (Quilkin v0.7.0 parses with clap). */
#ifndef QK_CLI_OPTS_H
#define QK_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* What an option's or argument's value is: drives completions. */
enum cli_value {
    CLI_VALUE_NONE = 0, /* a flag: no value */
    CLI_VALUE_TEXT,
    CLI_VALUE_FILE,
    CLI_VALUE_DIR,
    CLI_VALUE_CHOICE, /* one of the row's choices */
};

#define CLI_REPEAT 1u /* may be given several times */
#define CLI_HIDDEN 2u /* accepted, but left out of help, man page and completions */

/* Ids cli_next() returns. An option's id is its short letter or a value >= 256. */
#define CLI_END (-1)
#define CLI_OPERAND 1 /* a positional argument, in parser->arg */
#define CLI_OPT_HELP 'h'
#define CLI_OPT_VERSION 'V'

struct cli_opt {
    int id;
    char short_name;             /* 0: none */
    const char *long_name;       /* without the dashes */
    const char *value_name;      /* "PORT"; NULL for a flag */
    enum cli_value value;
    const char *const *choices;  /* NULL-terminated; only for CLI_VALUE_CHOICE */
    const char *env;             /* environment variable, or NULL */
    const char *def;             /* default shown in help, or NULL */
    const char *help;            /* one sentence; "(extension)" marks what v0.7.0 lacks */
    unsigned flags;              /* CLI_REPEAT, CLI_HIDDEN */
};

/* A positional argument (for help, man page and completions; the command reads it). */
struct cli_arg {
    const char *name; /* "ENDPOINT" */
    const char *help;
    enum cli_value value;
    const char *const *choices;
    const char *env; /* environment variable supplying it, or NULL */
    const char *def;
    bool is_optional, is_repeated;
};

/* A command: the root, a sub-command, or a provider. Static tables, never freed. */
struct cli_command {
    const char *name;
    const char *about; /* one line */
    const char *usage; /* what follows the command path in "Usage:" */
    const struct cli_opt *opts;
    size_t n_opts;
    const struct cli_arg *args;
    size_t n_args;
    const struct cli_command *const *subs;
    size_t n_subs;
    bool is_hidden;
};

/* The one-row table of a command whose only option is -h/--help. */
extern const struct cli_opt cli_help_only[1];

/* Walks one command's argv. argv[0] is the command's own name and is skipped. */
struct cli_parser {
    const struct cli_command *cmd;
    const struct cli_command *root; /* for the "global option" tip; NULL at the root */
    const char *path;               /* "quilkin proxy": help and messages */
    int argc;
    char **argv;
    int ind;            /* next argv element */
    const char *arg;    /* the value of the option returned, or the operand */
    const char *group;  /* rest of a group of short flags (-qh) */
    bool is_stop_at_operand; /* return CLI_END at the first operand, left at argv[ind] */
    bool is_after_dashdash;
};

void cli_parser_init(struct cli_parser *p, const struct cli_command *cmd,
                     const struct cli_command *root, const char *path, int argc, char **argv,
                     bool stop_at_operand);

/* The next option's id (its value in p->arg), CLI_OPERAND, or CLI_END. -h/--help prints the
 * help and exits 0; an unknown option, a missing value or a value given to a flag prints
 * clap's message and exits 2. */
int cli_next(struct cli_parser *p);

/* The row of cmd with this long name (without dashes), or NULL. */
const struct cli_opt *cli_find_long(const struct cli_command *cmd, const char *name, size_t len);

/* The sub-command called name, hidden ones included, or NULL. */
const struct cli_command *cli_find_sub(const struct cli_command *cmd, const char *name);

/* clap's help page of cmd, reached as `path`. */
void cli_print_help(FILE *f, const struct cli_command *cmd, const char *path);

/* clap's errors (exit 2). The usage line is that of cmd at path. */
void cli_fail_unknown_sub(const struct cli_command *cmd, const char *path, const char *name)
    __attribute__((noreturn));
void cli_fail_unexpected(const struct cli_command *cmd, const char *path, const char *arg)
    __attribute__((noreturn));
void cli_fail_missing_sub(const struct cli_command *cmd, const char *path)
    __attribute__((noreturn));

/* Jaro similarity of a and b in [0, 1]: clap suggests candidates above 0.7. */
double cli_jaro(const char *a, const char *b);

#endif
