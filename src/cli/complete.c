/* `quilkin completions bash|zsh|fish`: shell completion scripts made from the option tables
 * (cli/opts.h), so they offer exactly what the parser accepts: each command's options
 * (global ones only before the command), sub-commands, the choices of enumerated values and
 * file names where a value is a path. */
#include "cli/cli.h"
#include "cli/opts.h"

#include <stdio.h>
#include <string.h>

static const char *const shells[] = {"bash", "zsh", "fish", NULL};

static const struct cli_arg completions_args[] = {
    {.name = "SHELL", .help = "The shell to write a completion script for",
     .value = CLI_VALUE_CHOICE, .choices = shells},
};

const struct cli_command cli_completions_cmd = {
    .name = "completions",
    .about = "Writes a shell completion script to stdout (extension)",
    .usage = "<SHELL>",
    .opts = cli_help_only,
    .n_opts = 1,
    .args = completions_args,
    .n_args = 1,
};

#define PATH_CAP 128

static bool is_visible(const struct cli_opt *o)
{
    return !(o->flags & CLI_HIDDEN);
}

/* path + "__" + name: a command's identifier in the scripts ("quilkin__qcmp__ping"). */
static void child_id(char *out, const char *id, const char *name)
{
    snprintf(out, PATH_CAP, "%s__%s", id, name);
}

/* ---- bash -------------------------------------------------------------------------------- */

/* Which command the words so far reached: one case arm per (command, word). */
static void bash_walk(const struct cli_command *cmd, const char *id)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (o->value == CLI_VALUE_NONE)
            continue;
        if (o->short_name)
            printf("            %s:-%c) skip=1 ;;\n", id, o->short_name);
        printf("            %s:--%s) skip=1 ;;\n", id, o->long_name);
    }
    for (size_t i = 0; i < cmd->n_subs; i++) {
        char sub[PATH_CAP];
        child_id(sub, id, cmd->subs[i]->name);
        printf("            %s:%s) cmd=\"%s\" ;;\n", id, cmd->subs[i]->name, sub);
    }
    for (size_t i = 0; i < cmd->n_subs; i++) {
        char sub[PATH_CAP];
        child_id(sub, id, cmd->subs[i]->name);
        bash_walk(cmd->subs[i], sub);
    }
}

static void print_words(const char *const *choices)
{
    for (size_t i = 0; choices[i]; i++)
        printf("%s%s", i ? " " : "", choices[i]);
}

/* The value after an option: files, choices, or nothing to offer. */
static void bash_values(const struct cli_command *cmd, const char *id)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (o->value == CLI_VALUE_NONE)
            continue;
        printf("        %s:--%s", id, o->long_name);
        if (o->short_name)
            printf("|%s:-%c", id, o->short_name);
        if (o->value == CLI_VALUE_FILE)
            printf(") COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n");
        else if (o->value == CLI_VALUE_DIR)
            printf(") COMPREPLY=($(compgen -d -- \"$cur\")); return ;;\n");
        else if (o->value == CLI_VALUE_CHOICE) {
            printf(") COMPREPLY=($(compgen -W \"");
            print_words(o->choices);
            printf("\" -- \"$cur\")); return ;;\n");
        } else
            printf(") COMPREPLY=(); return ;;\n");
    }
    for (size_t i = 0; i < cmd->n_subs; i++) {
        char sub[PATH_CAP];
        child_id(sub, id, cmd->subs[i]->name);
        bash_values(cmd->subs[i], sub);
    }
}

/* What a command itself offers: its options, sub-commands and argument values. */
static void bash_words(const struct cli_command *cmd, const struct cli_command *parent,
                       const char *id)
{
    bool files = false;
    printf("        %s) words=\"", id);
    const char *sep = "";
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (!is_visible(o))
            continue;
        if (o->short_name) {
            printf("%s-%c", sep, o->short_name);
            sep = " ";
        }
        printf("%s--%s", sep, o->long_name);
        sep = " ";
    }
    /* `help` completes the names of its parent's commands */
    const struct cli_command *names = cmd == &cli_help_cmd ? parent : cmd;
    for (size_t i = 0; names && i < names->n_subs; i++) {
        if (!names->subs[i]->is_hidden && names->subs[i] != &cli_help_cmd)
            printf("%s%s", sep, names->subs[i]->name);
        sep = " ";
    }
    if (cmd->n_subs && cli_find_sub(cmd, "help"))
        printf("%shelp", sep);
    for (size_t i = 0; i < cmd->n_args; i++) {
        if (cmd->args[i].value == CLI_VALUE_CHOICE) {
            printf("%s", sep);
            print_words(cmd->args[i].choices);
        }
        files |= cmd->args[i].value == CLI_VALUE_FILE;
    }
    printf("\"%s ;;\n", files ? "; files=1" : "");
    for (size_t i = 0; i < cmd->n_subs; i++) {
        char sub[PATH_CAP];
        child_id(sub, id, cmd->subs[i]->name);
        bash_words(cmd->subs[i], cmd, sub);
    }
}

static void bash(void)
{
    const struct cli_command *root = &cli_root_cmd;
    printf("# bash completion for quilkin: generated by `quilkin completions bash`\n"
           "_quilkin() {\n"
           "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"\" cmd=\"quilkin\" w i skip=0\n"
           "    local words=\"\" files=0\n"
           "    [ \"$COMP_CWORD\" -gt 0 ] && prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
           "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
           "        w=\"${COMP_WORDS[i]}\"\n"
           "        if [ \"$skip\" = 1 ]; then skip=0; continue; fi\n"
           "        case \"$cmd:$w\" in\n");
    bash_walk(root, "quilkin");
    printf("        esac\n"
           "    done\n"
           "    if [ \"$skip\" = 1 ]; then\n"
           "        case \"$cmd:$prev\" in\n");
    bash_values(root, "quilkin");
    printf("        esac\n"
           "    fi\n"
           "    case \"$cmd\" in\n");
    bash_words(root, NULL, "quilkin");
    printf("    esac\n"
           "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
           "    if [ \"$files\" = 1 ] && [ \"${cur#-}\" = \"$cur\" ]; then\n"
           "        COMPREPLY+=($(compgen -f -- \"$cur\"))\n"
           "    fi\n"
           "}\n"
           "complete -F _quilkin quilkin\n");
}

/* ---- zsh --------------------------------------------------------------------------------- */

/* Help text inside an _arguments spec: no quote, brackets or colons unescaped. */
static void zsh_text(const char *s)
{
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", stdout);
        else if (*s == '[' || *s == ']' || *s == ':' || *s == '\\' || *s == '`')
            printf("\\%c", *s);
        else
            putchar(*s);
    }
}

static void zsh_action(enum cli_value v, const char *const *choices)
{
    if (v == CLI_VALUE_FILE)
        fputs("_files", stdout);
    else if (v == CLI_VALUE_DIR)
        fputs("_files -/", stdout);
    else if (v == CLI_VALUE_CHOICE) {
        putchar('(');
        print_words(choices);
        putchar(')');
    }
}

/* "[help]:VALUE:action' \" closing one option spec. */
static void zsh_spec_tail(const struct cli_opt *o)
{
    putchar('[');
    zsh_text(o->help ? o->help : "");
    putchar(']');
    if (o->value != CLI_VALUE_NONE) {
        printf(":%s:", o->value_name);
        zsh_action(o->value, o->choices);
    }
    printf("' \\\n");
}

static void zsh_function(const struct cli_command *cmd, const struct cli_command *parent,
                         const char *id)
{
    printf("\n_%s() {\n    local context state state_descr line\n    typeset -A opt_args\n"
           "    _arguments -s -S -C \\\n",
           id);
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (!is_visible(o))
            continue;
        bool has_value = o->value != CLI_VALUE_NONE;
        if (o->flags & CLI_REPEAT) {
            /* repeatable: one spec per spelling, no exclusion list */
            if (o->short_name) {
                printf("        '*-%c%s", o->short_name, has_value ? "+" : "");
                zsh_spec_tail(o);
            }
            printf("        '*--%s%s", o->long_name, has_value ? "=" : "");
        } else if (o->short_name) {
            printf("        '(-%c --%s)'{-%c%s,--%s%s}'", o->short_name, o->long_name,
                   o->short_name, has_value ? "+" : "", o->long_name, has_value ? "=" : "");
        } else {
            printf("        '--%s%s", o->long_name, has_value ? "=" : "");
        }
        zsh_spec_tail(o);
    }
    if (cmd->n_subs) {
        printf("        ':command:->command' \\\n        '*::arg:->args'\n"
               "    case $state in\n    command)\n        local -a commands=(\n");
        for (size_t i = 0; i < cmd->n_subs; i++) {
            if (cmd->subs[i]->is_hidden)
                continue;
            printf("            '%s:", cmd->subs[i]->name);
            zsh_text(cmd->subs[i]->about ? cmd->subs[i]->about : "");
            printf("'\n");
        }
        printf("        )\n        _describe -t commands 'command' commands ;;\n"
               "    args)\n        case $line[1] in\n");
        for (size_t i = 0; i < cmd->n_subs; i++) {
            char sub[PATH_CAP];
            child_id(sub, id, cmd->subs[i]->name);
            printf("        %s) _%s ;;\n", cmd->subs[i]->name, sub);
        }
        printf("        esac ;;\n    esac\n}\n");
    } else {
        for (size_t i = 0; i < cmd->n_args; i++) {
            const struct cli_arg *a = &cmd->args[i];
            printf("        '%s:%s:", a->is_repeated ? "*" : a->is_optional ? ":" : "",
                   a->name);
            if (cmd == &cli_help_cmd && parent) {
                putchar('(');
                for (size_t k = 0; k < parent->n_subs; k++)
                    if (!parent->subs[k]->is_hidden && parent->subs[k] != &cli_help_cmd)
                        printf("%s ", parent->subs[k]->name);
                putchar(')');
            } else {
                zsh_action(a->value, a->choices);
            }
            printf("' \\\n");
        }
        printf("        && return 0\n}\n");
    }
    for (size_t i = 0; i < cmd->n_subs; i++) {
        char sub[PATH_CAP];
        child_id(sub, id, cmd->subs[i]->name);
        zsh_function(cmd->subs[i], cmd, sub);
    }
}

static void zsh(void)
{
    printf("#compdef quilkin\n# zsh completion for quilkin: generated by `quilkin completions "
           "zsh`\n");
    zsh_function(&cli_root_cmd, NULL, "quilkin");
    printf("\nif [ \"$funcstack[1]\" = \"_quilkin\" ]; then\n    _quilkin \"$@\"\nelse\n"
           "    compdef _quilkin quilkin\nfi\n");
}

/* ---- fish -------------------------------------------------------------------------------- */

static void fish_text(const char *s)
{
    putchar('\'');
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\')
            putchar('\\');
        putchar(*s);
    }
    putchar('\'');
}

/* cond: the fish condition under which cmd's own words apply. */
static void fish_command(const struct cli_command *cmd, const struct cli_command *parent,
                         const char *cond)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (!is_visible(o))
            continue;
        printf("complete -c quilkin -n '%s'", cond);
        if (o->short_name)
            printf(" -s %c", o->short_name);
        printf(" -l %s", o->long_name);
        if (o->value == CLI_VALUE_FILE || o->value == CLI_VALUE_DIR)
            printf(" -r -F");
        else if (o->value == CLI_VALUE_CHOICE) {
            printf(" -x -a '");
            print_words(o->choices);
            putchar('\'');
        } else if (o->value != CLI_VALUE_NONE)
            printf(" -x");
        printf(" -d ");
        fish_text(o->help ? o->help : "");
        putchar('\n');
    }
    const struct cli_command *names = cmd == &cli_help_cmd ? parent : cmd;
    for (size_t i = 0; names && i < names->n_subs; i++) {
        const struct cli_command *s = names->subs[i];
        if (s->is_hidden || (cmd == &cli_help_cmd && s == &cli_help_cmd))
            continue;
        printf("complete -c quilkin -n '%s' -f -a %s -d ", cond, s->name);
        fish_text(s->about ? s->about : "");
        putchar('\n');
    }
    for (size_t i = 0; i < cmd->n_args; i++) {
        const struct cli_arg *a = &cmd->args[i];
        if (a->value == CLI_VALUE_CHOICE) {
            printf("complete -c quilkin -n '%s' -f -a '", cond);
            print_words(a->choices);
            printf("'\n");
        } else if (a->value == CLI_VALUE_FILE) {
            printf("complete -c quilkin -n '%s' -F\n", cond);
        }
    }
}

/* Every command below root: its condition is "its path was seen and none of its own
 * sub-commands yet". */
static void fish_walk(const struct cli_command *cmd, const char *seen)
{
    for (size_t i = 0; i < cmd->n_subs; i++) {
        const struct cli_command *sub = cmd->subs[i];
        char sub_seen[512], cond[1024];
        snprintf(sub_seen, sizeof(sub_seen), "%s__fish_seen_subcommand_from %s", seen,
                 sub->name);
        size_t n = (size_t)snprintf(cond, sizeof(cond), "%s", sub_seen);
        if (sub->n_subs) {
            n += (size_t)snprintf(cond + n, sizeof(cond) - n,
                                  "; and not __fish_seen_subcommand_from");
            for (size_t k = 0; k < sub->n_subs && n < sizeof(cond); k++)
                n += (size_t)snprintf(cond + n, sizeof(cond) - n, " %s", sub->subs[k]->name);
        }
        fish_command(sub, cmd, cond);
        char next[600];
        snprintf(next, sizeof(next), "%s; and ", sub_seen);
        fish_walk(sub, next);
    }
}

static void fish(void)
{
    printf("# fish completion for quilkin: generated by `quilkin completions fish`\n"
           "complete -c quilkin -f\n");
    fish_command(&cli_root_cmd, NULL, "__fish_use_subcommand");
    fish_walk(&cli_root_cmd, "");
}

int cli_completions(int argc, char **argv)
{
    struct cli_parser p;
    cli_parser_init(&p, &cli_completions_cmd, &cli_root_cmd, "quilkin completions", argc, argv,
                    false);
    const char *shell = NULL;
    while (cli_next(&p) != CLI_END) {
        if (shell)
            cli_fail_unexpected(&cli_completions_cmd, "quilkin completions", p.arg);
        shell = p.arg; /* only operands reach here: -h exits in cli_next */
    }
    if (!shell)
        cli_usage_error("the following required arguments were not provided:\n  <SHELL>\n\n"
                        "Usage: quilkin completions <SHELL>");
    if (strcmp(shell, "bash") == 0)
        bash();
    else if (strcmp(shell, "zsh") == 0)
        zsh();
    else if (strcmp(shell, "fish") == 0)
        fish();
    else
        cli_usage_error("invalid value '%s' for '<SHELL>'\n  [possible values: bash, zsh, fish]",
                        shell);
    return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
}
