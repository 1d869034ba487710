/* The option-table parser (tests src/cli/opts.c): long and short forms with attached or
 * separate values, groups of short flags, operands in both modes, "--", exact long-name
 * matching, and clap's similarity measure. Error paths exit the process; the integration
 * tests (test_cli_commands.py) check their messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cli/opts.h"

#include <stdio.h>
#include <string.h>

enum { OPT_FLAG = 256, OPT_NAME };

static const struct cli_opt opts[] = {
    {.id = 'p', .short_name = 'p', .long_name = "port", .value_name = "PORT",
     .value = CLI_VALUE_TEXT},
    {.id = 'q', .short_name = 'q', .long_name = "quiet"},
    {.id = 'v', .short_name = 'v', .long_name = "verbose"},
    {.id = OPT_FLAG, .long_name = "flag"},
    {.id = OPT_NAME, .long_name = "name", .value_name = "NAME", .value = CLI_VALUE_TEXT},
    {.id = CLI_OPT_HELP, .short_name = 'h', .long_name = "help"},
};

static const struct cli_command cmd = {
    .name = "t", .usage = "[OPTIONS]", .opts = opts, .n_opts = sizeof(opts) / sizeof(opts[0]),
};

/* Parses argv (NULL-terminated, argv[0] the command), checks the results ("id=value " per
 * option or operand) against want, and returns the index parsing stopped at. */
static int parse_expect(char **argv, bool stop, const char *want)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    struct cli_parser p;
    cli_parser_init(&p, &cmd, NULL, "quilkin t", argc, argv, stop);
    char out[256] = "";
    int c;
    while ((c = cli_next(&p)) != CLI_END) {
        size_t n = strlen(out);
        snprintf(out + n, sizeof(out) - n, "%d=%s ", c, p.arg ? p.arg : "-");
    }
    assert_string_equal(out, want);
    return p.ind;
}

static void value_forms(void **state)
{
    (void)state;
    char *argv[] = {"t", "--port", "1", "--port=2", "-p", "3", "-p4", "-p=5", "--name=", NULL};
    char want[128];
    snprintf(want, sizeof(want), "112=1 112=2 112=3 112=4 112=5 %d= ", OPT_NAME);
    assert_int_equal(parse_expect(argv, false, want), 9);
}

static void flag_groups_and_operands(void **state)
{
    (void)state;
    char *argv[] = {"t", "-qv", "x", "--flag", "-qp7", "--", "-v", NULL};
    char want[128];
    snprintf(want, sizeof(want), "113=- 118=- 1=x %d=- 113=- 112=7 1=-v ", OPT_FLAG);
    parse_expect(argv, false, want);
}

static void stop_mode_leaves_the_operand(void **state)
{
    (void)state;
    char *argv[] = {"t", "-q", "sub", "--port", "9", NULL};
    assert_int_equal(parse_expect(argv, true, "113=- "), 2); /* argv[2]: the sub-command */
}

static void long_names_match_exactly(void **state)
{
    (void)state;
    assert_non_null(cli_find_long(&cmd, "port", 4));
    assert_null(cli_find_long(&cmd, "por", 3)); /* no GNU-style abbreviations */
    assert_null(cli_find_long(&cmd, "ports", 5));
    assert_non_null(cli_find_long(&cmd, "port=1", 4));
}

static void jaro_as_clap(void **state)
{
    (void)state;
    /* clap suggests above 0.7 (strsim::jaro): its own test cases */
    assert_true(cli_jaro("tst", "test") > 0.7);
    assert_true(cli_jaro("te", "test") > 0.7);
    assert_true(cli_jaro("hahaahahah", "test") <= 0.7);
    assert_true(cli_jaro("prot", "port") > 0.7);
    assert_true(cli_jaro("no-admin", "port") <= 0.7);
    assert_true(cli_jaro("", "") == 1.0);
    assert_true(cli_jaro("abc", "") == 0.0);
    /* strsim: jaro("martha", "marhta") = 0.944... */
    double m = cli_jaro("martha", "marhta");
    assert_true(m > 0.944 && m < 0.945);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(value_forms),
        cmocka_unit_test(flag_groups_and_operands),
        cmocka_unit_test(stop_mode_leaves_the_operand),
        cmocka_unit_test(long_names_match_exactly),
        cmocka_unit_test(jaro_as_clap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
