/* Value parsers shared by the sub-commands; every bad value is a usage error (exit 2). */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n\nFor more information, try '--help'.\n", stderr);
    va_end(ap);
    exit(EXIT_USAGE);
}

uint64_t cli_parse_u64(const char *opt, const char *text)
{
    if (!*text || strlen(text) > 20)
        cli_usage_error("invalid value '%s' for '%s': expected an unsigned integer", text, opt);
    uint64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            cli_usage_error("invalid value '%s' for '%s': expected an unsigned integer", text,
                            opt);
        v = v * 10 + (uint64_t)(*p - '0');
    }
    return v;
}

uint16_t cli_parse_u16(const char *opt, const char *text)
{
    uint64_t v = cli_parse_u64(opt, text);
    if (v > 65535)
        cli_usage_error("invalid value '%s' for '%s': %s is not in 0..=65535", text, opt, text);
    return (uint16_t)v;
}

bool cli_parse_bool_env(const char *var, const char *text)
{
    if (strcmp(text, "true") == 0)
        return true;
    if (strcmp(text, "false") == 0)
        return false;
    cli_usage_error("invalid value '%s' for environment variable %s: expected true or false",
                    text, var);
}
