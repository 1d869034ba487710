/* `quilkin generate-config-schema` (spec cli.md §2.6): writes each filter's configuration
 * JSON Schema, serialised as YAML, to <dir>/<filter name with its last dot-separated part
 * replaced by "yaml"> (v0.7.0's file naming). The schemas live next to each filter's parser
 * (filter_ops.schema); this file only names, frames and writes them. */
#include "base/log.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "filters/filter.h"
#include "filters/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct cli_opt schema_opts[] = {
    {.id = 'o', .short_name = 'o', .long_name = "output-directory",
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

/* Writes one filter's schema file; 0, or -errno after logging why. */
static int write_schema(const struct filter_ops *ops, const char *dir)
{
    /* v0.7.0: Path::set_extension("yaml") on the name, so its last part is replaced */
    const char *dot = strrchr(ops->name, '.');
    int stem = dot ? (int)(dot - ops->name) : (int)strlen(ops->name);
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s%s%.*s.yaml", dir,
                     dir[0] && dir[strlen(dir) - 1] != '/' ? "/" : "", stem, ops->name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        LOG_ERROR("cli", "output path too long: %s", dir);
        return -ENAMETOOLONG;
    }
    LOG_INFO("cli", "Writing %s schema to %s", ops->name, path);
    FILE *f = fopen(path, "w");
    if (!f) {
        int err = errno;
        LOG_ERROR("cli", "cannot write %s: %s", path, strerror(err));
        fprintf(stderr, "quilkin: cannot write %s: %s\n", path, strerror(err));
        return -err;
    }
    fprintf(f, "$schema: http://json-schema.org/draft-07/schema#\ntitle: %s\n%s", ops->name,
            ops->schema ? ops->schema : "{}\n");
    if (fclose(f) != 0) {
        int err = errno;
        LOG_ERROR("cli", "cannot write %s: %s", path, strerror(err));
        fprintf(stderr, "quilkin: cannot write %s: %s\n", path, strerror(err));
        return -err;
    }
    return 0;
}

int cli_generate_config_schema(const struct global_opts *g, int argc, char **argv)
{
    (void)g;
    struct cli_parser p;
    cli_parser_init(&p, &cli_schema_cmd, &cli_root_cmd, "quilkin generate-config-schema", argc,
                    argv, false);
    const char *dir = ".";
    char **ids = calloc((size_t)argc, sizeof(*ids));
    if (!ids)
        return EXIT_RUNTIME;
    size_t n_ids = 0;
    int c;
    while ((c = cli_next(&p)) != CLI_END) {
        if (c == 'o')
            dir = p.arg;
        else if (c == CLI_OPERAND)
            ids[n_ids++] = (char *)p.arg;
    }
    size_t n_all;
    const struct filter_ops *const *all = registry_all(&n_all);
    int status = 0;
    /* spec cli.md §2.6: "all" only as the single id, in any case */
    if (n_ids == 0 || (n_ids == 1 && strcasecmp(ids[0], "all") == 0)) {
        for (size_t i = 0; i < n_all && status == 0; i++)
            if (write_schema(all[i], dir) < 0)
                status = EXIT_RUNTIME;
    } else {
        for (size_t i = 0; i < n_ids && status == 0; i++) {
            const struct filter_ops *ops = registry_find(ids[i]);
            if (!ops) {
                LOG_ERROR("cli", "%s not found in filter set.", ids[i]); /* and go on */
                continue;
            }
            if (write_schema(ops, dir) < 0)
                status = EXIT_RUNTIME;
        }
    }
    free(ids);
    return status;
}
