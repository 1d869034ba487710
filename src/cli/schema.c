/* `quilkin generate-config-schema` (spec cli.md §2.6): writes each filter's configuration
 * JSON Schema, serialised as YAML, to <dir>/<filter name with its last dot-separated part
 * replaced by "yaml">. The schemas live next to each filter's parser (filter_ops.schema). */
#include "cli/cli.h"
#include "cli/opts.h"

#include <stdio.h>
#include <string.h>

enum { OPT_OUTPUT_DIRECTORY = 'o' };

static const struct cli_opt schema_opts[] = {
    {.id = OPT_OUTPUT_DIRECTORY, .short_name = 'o', .long_name = "output-directory",
     .value_name = "OUTPUT_DIRECTORY", .value = CLI_VALUE_DIR, .def = ".",
     .help = "The directory to write configuration files"},
    {.id = CLI_OPT_HELP, .short_name = 'h', .long_name = "help", .help = "Print help"},
};

static const struct cli_arg schema_args[] = {
    {.name = "FILTER_IDS",
     .help = "A list of one or more filter IDs to generate or 'all' to generate all available "
             "filter schemas",
     .def = "all", .is_optional = true, .is_repeated = true},
};

const struct cli_command cli_schema_cmd = {
    .name = "generate-config-schema",
    .about = "Generates JSON schema files for known filters",
    .usage = "[OPTIONS] [FILTER_IDS]...",
    .opts = schema_opts,
    .n_opts = sizeof(schema_opts) / sizeof(schema_opts[0]),
    .args = schema_args,
    .n_args = 1,
};

int cli_generate_config_schema(const struct global_opts *g, int argc, char **argv)
{
    (void)g;
    struct cli_parser p;
    cli_parser_init(&p, &cli_schema_cmd, &cli_root_cmd, "quilkin generate-config-schema", argc,
                    argv, false);
    while (cli_next(&p) != CLI_END) {
    }
    fprintf(stderr, "quilkin: the `generate-config-schema` command is not implemented yet\n");
    return EXIT_RUNTIME;
}
