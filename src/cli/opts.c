/* The table-driven parser and help pages (see opts.h). Messages follow clap 4.4's
 * RichFormatter: "error: ...", optional "  tip: ..." lines, the usage line, and
 * "For more information, try '--help'." (spec cli.md §5: usage errors exit 2). */
#include "cli/opts.h"

#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#define HELP_WIDTH 100 /* columns of a help page */
#define LEFT_CAP 36    /* an option column wider than this puts its help on the next line */

const struct cli_opt cli_help_only[1] = {
    {.id = CLI_OPT_HELP, .short_name = 'h', .long_name = "help", .help = "Print help"},
};

void cli_parser_init(struct cli_parser *p, const struct cli_command *cmd,
                     const struct cli_command *root, const char *path, int argc, char **argv,
                     bool stop_at_operand)
{
    memset(p, 0, sizeof(*p));
    p->cmd = cmd;
    p->root = root;
    p->path = path;
    p->argc = argc;
    p->argv = argv;
    p->ind = 1;
    p->is_stop_at_operand = stop_at_operand;
}

const struct cli_opt *cli_find_long(const struct cli_command *cmd, const char *name, size_t len)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const char *l = cmd->opts[i].long_name;
        if (l && strlen(l) == len && memcmp(l, name, len) == 0)
            return &cmd->opts[i];
    }
    return NULL;
}

static const struct cli_opt *find_short(const struct cli_command *cmd, char c)
{
    for (size_t i = 0; i < cmd->n_opts; i++)
        if (cmd->opts[i].short_name == c)
            return &cmd->opts[i];
    return NULL;
}

const struct cli_command *cli_find_sub(const struct cli_command *cmd, const char *name)
{
    for (size_t i = 0; i < cmd->n_subs; i++)
        if (strcmp(cmd->subs[i]->name, name) == 0)
            return cmd->subs[i];
    return NULL;
}

/* ---- similarity (clap's did_you_mean: strsim::jaro above 0.7) ---------------------------- */

double cli_jaro(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la == 0 && lb == 0)
        return 1.0;
    if (la == 0 || lb == 0 || la > 64 || lb > 64)
        return 0.0;
    size_t longest = la > lb ? la : lb;
    size_t window = longest / 2 > 0 ? longest / 2 - 1 : 0;
    bool used_b[64] = {false}, matched_a[64] = {false};
    size_t matches = 0;
    for (size_t i = 0; i < la; i++) {
        size_t lo = i > window ? i - window : 0, hi = i + window + 1 < lb ? i + window + 1 : lb;
        for (size_t j = lo; j < hi; j++) {
            if (!used_b[j] && a[i] == b[j]) {
                used_b[j] = matched_a[i] = true;
                matches++;
                break;
            }
        }
    }
    if (matches == 0)
        return 0.0;
    size_t transpositions = 0, j = 0;
    for (size_t i = 0; i < la; i++) {
        if (!matched_a[i])
            continue;
        while (!used_b[j])
            j++;
        if (a[i] != b[j])
            transpositions++;
        j++;
    }
    double m = (double)matches;
    return (m / (double)la + m / (double)lb + (m - (double)transpositions / 2.0) / m) / 3.0;
}

/* The most similar visible long option of cmd (clap keeps the last of the best), or NULL. */
static const char *similar_long(const struct cli_command *cmd, const char *name)
{
    const char *best = NULL;
    double best_score = 0.7;
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (!o->long_name || (o->flags & CLI_HIDDEN))
            continue;
        double s = cli_jaro(name, o->long_name);
        if (s > best_score || (best && s == best_score)) {
            best = o->long_name;
            best_score = s;
        }
    }
    return best;
}

/* ---- errors -------------------------------------------------------------------------------- */

__attribute__((noreturn)) static void usage_tail(const struct cli_command *cmd, const char *path)
{
    fprintf(stderr, "\n\nUsage: %s %s\n\nFor more information, try '--help'.\n", path,
            cmd->usage);
    exit(EXIT_USAGE);
}

void cli_fail_unexpected(const struct cli_command *cmd, const char *path, const char *arg)
{
    fprintf(stderr, "error: unexpected argument '%s' found", arg);
    usage_tail(cmd, path);
}

void cli_fail_unknown_sub(const struct cli_command *cmd, const char *path, const char *name)
{
    fprintf(stderr, "error: unrecognized subcommand '%s'", name);
    const char *best = NULL;
    double best_score = 0.7;
    for (size_t i = 0; i < cmd->n_subs; i++) {
        double s = cmd->subs[i]->is_hidden ? 0 : cli_jaro(name, cmd->subs[i]->name);
        if (s > best_score) {
            best = cmd->subs[i]->name;
            best_score = s;
        }
    }
    if (best)
        fprintf(stderr, "\n\n  tip: a similar subcommand exists: '%s'", best);
    usage_tail(cmd, path);
}

void cli_fail_missing_sub(const struct cli_command *cmd, const char *path)
{
    fprintf(stderr, "error: '%s' requires a subcommand but one was not provided\n  [subcommands: ",
            path);
    const char *sep = "";
    for (size_t i = 0; i < cmd->n_subs; i++) {
        if (cmd->subs[i]->is_hidden)
            continue;
        fprintf(stderr, "%s%s", sep, cmd->subs[i]->name);
        sep = ", ";
    }
    fputc(']', stderr);
    usage_tail(cmd, path);
}

/* text: the argument as given ("--foo", "-x"); name/len: the long name without dashes and
 * value, or NULL for a short option. */
__attribute__((noreturn)) static void fail_unknown_option(const struct cli_parser *p, const char *text, const char *name,
                                size_t len)
{
    char shown[128];
    snprintf(shown, sizeof(shown), "%s", text);
    fprintf(stderr, "error: unexpected argument '%s' found", shown);
    bool tipped = false;
    if (name) {
        char bare[96];
        snprintf(bare, sizeof(bare), "%.*s", (int)(len < 95 ? len : 95), name);
        const char *best = similar_long(p->cmd, bare);
        if (best) {
            fprintf(stderr, "\n\n  tip: a similar argument exists: '--%s'", best);
            tipped = true;
        }
    }
    /* Not clap's (v0.7.0's globals are not `global = true`, spec cli.md §1): say where a
     * global option goes. */
    const struct cli_opt *global =
        !p->root ? NULL
        : name   ? cli_find_long(p->root, name, len)
                 : find_short(p->root, text[1]);
    if (global && !(global->flags & CLI_HIDDEN) && global->id != CLI_OPT_HELP) {
        char example[96];
        if (global->value_name)
            snprintf(example, sizeof(example), "--%s <%s>", global->long_name,
                     global->value_name);
        else
            snprintf(example, sizeof(example), "--%s", global->long_name);
        fprintf(stderr,
                "%s  tip: '%s' is a global option: give it before the command, as in "
                "'%s %s %s ...'",
                tipped ? "\n" : "\n\n", shown, p->root->name, example,
                p->path + strlen(p->root->name) + 1);
    }
    usage_tail(p->cmd, p->path);
}

__attribute__((noreturn)) static void fail_missing_value(const struct cli_opt *o)
{
    fprintf(stderr, "error: a value is required for '--%s <%s>' but none was supplied",
            o->long_name, o->value_name);
    if (o->choices) {
        fputs("\n  [possible values: ", stderr);
        for (size_t i = 0; o->choices[i]; i++)
            fprintf(stderr, "%s%s", i ? ", " : "", o->choices[i]);
        fputc(']', stderr);
    }
    fputs("\n\nFor more information, try '--help'.\n", stderr);
    exit(EXIT_USAGE);
}

__attribute__((noreturn)) static void fail_flag_value(const struct cli_opt *o, const char *value)
{
    fprintf(stderr,
            "error: unexpected value '%s' for '--%s' found; no more were expected\n\nFor more "
            "information, try '--help'.\n",
            value, o->long_name);
    exit(EXIT_USAGE);
}

/* ---- parser ------------------------------------------------------------------------------- */

/* A value may not look like an option (clap without allow_hyphen_values). */
static bool looks_like_option(const char *s)
{
    return s[0] == '-' && s[1] != '\0';
}

static int take(struct cli_parser *p, const struct cli_opt *o, const char *attached)
{
    if (o->id == CLI_OPT_HELP) {
        if (attached)
            fail_flag_value(o, attached);
        cli_print_help(stdout, p->cmd, p->path);
        exit(0);
    }
    if (o->value == CLI_VALUE_NONE) {
        if (attached)
            fail_flag_value(o, attached);
        p->arg = NULL;
        return o->id;
    }
    if (attached) {
        p->arg = attached;
        return o->id;
    }
    if (p->ind >= p->argc || looks_like_option(p->argv[p->ind]))
        fail_missing_value(o);
    p->arg = p->argv[p->ind++];
    return o->id;
}

static int next_short(struct cli_parser *p)
{
    char c = *p->group++;
    const struct cli_opt *o = find_short(p->cmd, c);
    if (!o) {
        char text[3] = {'-', c, '\0'};
        fail_unknown_option(p, text, NULL, 0);
    }
    if (o->value == CLI_VALUE_NONE || o->id == CLI_OPT_HELP) {
        if (!*p->group)
            p->group = NULL;
        return take(p, o, NULL);
    }
    /* -p7777 and -p=7777 (clap strips the '='); otherwise the next element */
    const char *rest = p->group;
    p->group = NULL;
    if (*rest == '=')
        rest++;
    return take(p, o, *rest ? rest : NULL);
}

int cli_next(struct cli_parser *p)
{
    if (p->group)
        return next_short(p);
    for (;;) {
        if (p->ind >= p->argc)
            return CLI_END;
        const char *a = p->argv[p->ind];
        if (p->is_after_dashdash || a[0] != '-' || a[1] == '\0') {
            if (p->is_stop_at_operand)
                return CLI_END;
            p->arg = a;
            p->ind++;
            return CLI_OPERAND;
        }
        p->ind++;
        if (strcmp(a, "--") == 0) {
            p->is_after_dashdash = true;
            continue;
        }
        if (a[1] != '-') {
            p->group = a + 1;
            return next_short(p);
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct cli_opt *o = cli_find_long(p->cmd, name, len);
        if (!o) {
            char text[128];
            snprintf(text, sizeof(text), "--%.*s", (int)(len < 120 ? len : 120), name);
            fail_unknown_option(p, text, name, len);
        }
        return take(p, o, eq ? eq + 1 : NULL);
    }
}

/* ---- help pages ------------------------------------------------------------------------------ */

/* Writes text from column col, wrapping at HELP_WIDTH; continuation lines start at indent. */
static void wrap(FILE *f, const char *text, size_t col, size_t indent)
{
    const char *s = text;
    while (*s) {
        while (*s == ' ')
            s++;
        size_t word = strcspn(s, " ");
        if (!word)
            break;
        if (col > indent && col + 1 + word > HELP_WIDTH) {
            fprintf(f, "\n%*s", (int)indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fwrite(s, 1, word, f);
        col += word;
        s += word;
    }
}

static void opt_left(const struct cli_opt *o, char *buf, size_t cap)
{
    char sh[8] = "    ";
    if (o->short_name)
        snprintf(sh, sizeof(sh), "-%c, ", o->short_name);
    if (o->value_name)
        snprintf(buf, cap, "  %s--%s <%s>", sh, o->long_name, o->value_name);
    else
        snprintf(buf, cap, "  %s--%s", sh, o->long_name);
}

static void opt_right(const struct cli_opt *o, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "%s", o->help ? o->help : "");
    if (o->env && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, " [env: %s]", o->env);
    if (o->def && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, " [default: %s]", o->def);
    if (o->choices && n < cap) {
        n += (size_t)snprintf(buf + n, cap - n, " [possible values: ");
        for (size_t i = 0; o->choices[i] && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", o->choices[i]);
        if (n < cap)
            snprintf(buf + n, cap - n, "]");
    }
}

/* One row "  left  right": right starts at column width + 2, or on the next line when left
 * is wider than LEFT_CAP. */
static void row(FILE *f, const char *left, const char *right, size_t width)
{
    size_t l = strlen(left);
    fputs(left, f);
    if (!*right) {
        fputc('\n', f);
        return;
    }
    if (l > width) {
        fprintf(f, "\n%*s", (int)(width + 2), "");
    } else {
        fprintf(f, "%*s", (int)(width + 2 - l), "");
    }
    wrap(f, right, width + 2, width + 2);
    fputc('\n', f);
}

void cli_print_help(FILE *f, const struct cli_command *cmd, const char *path)
{
    char left[160], right[1024];
    if (cmd->about)
        fprintf(f, "%s\n\n", cmd->about);
    fprintf(f, "Usage: %s %s\n", path, cmd->usage);
    size_t width = 0;
    for (size_t i = 0; i < cmd->n_subs; i++) {
        size_t l = 2 + strlen(cmd->subs[i]->name);
        if (!cmd->subs[i]->is_hidden && l > width)
            width = l;
    }
    for (size_t i = 0; i < cmd->n_args; i++) {
        size_t l = 4 + strlen(cmd->args[i].name) + (cmd->args[i].is_repeated ? 3 : 0);
        if (l > width)
            width = l;
    }
    for (size_t i = 0; i < cmd->n_opts; i++) {
        opt_left(&cmd->opts[i], left, sizeof(left));
        size_t l = strlen(left);
        if (!(cmd->opts[i].flags & CLI_HIDDEN) && l <= LEFT_CAP && l > width)
            width = l;
    }
    if (cmd->n_subs) {
        fputs("\nCommands:\n", f);
        for (size_t i = 0; i < cmd->n_subs; i++) {
            if (cmd->subs[i]->is_hidden)
                continue;
            snprintf(left, sizeof(left), "  %s", cmd->subs[i]->name);
            row(f, left, cmd->subs[i]->about ? cmd->subs[i]->about : "", width);
        }
    }
    if (cmd->n_args) {
        fputs("\nArguments:\n", f);
        for (size_t i = 0; i < cmd->n_args; i++) {
            const struct cli_arg *a = &cmd->args[i];
            snprintf(left, sizeof(left), a->is_optional ? "  [%s]%s" : "  <%s>%s", a->name,
                     a->is_repeated ? "..." : "");
            size_t n = (size_t)snprintf(right, sizeof(right), "%s", a->help ? a->help : "");
            if (a->env && n < sizeof(right))
                n += (size_t)snprintf(right + n, sizeof(right) - n, " [env: %s]", a->env);
            if (a->def && n < sizeof(right))
                snprintf(right + n, sizeof(right) - n, " [default: %s]", a->def);
            row(f, left, right, width);
        }
    }
    fputs("\nOptions:\n", f);
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        if (o->flags & CLI_HIDDEN)
            continue;
        opt_left(o, left, sizeof(left));
        opt_right(o, right, sizeof(right));
        row(f, left, right, width);
    }
}
