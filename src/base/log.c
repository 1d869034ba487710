/* Log sink: formats into a stack buffer and writes it with one write(2) to stdout.
 * Holds only the level and format chosen at startup. */
#include "base/log.h"

#include "base/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum log_level log_current_level = LOG_LEVEL_INFO;
static enum log_format log_fmt = LOG_FORMAT_PLAIN;

static const char *const level_names[] = {"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

void log_init(enum log_level level, enum log_format format)
{
    log_current_level = level;
    log_fmt = format;
}

static bool parse_one(const char *s, size_t n, enum log_level *out)
{
    static const char *const names[] = {"off", "error", "warn", "info", "debug", "trace"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) == n && strncasecmp(s, names[i], n) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

bool log_parse_level(const char *text, enum log_level *out)
{
    bool found = false;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        enum log_level lvl;
        if (eq) {
            size_t tlen = (size_t)(eq - p);
            bool ours = tlen >= 7 && strncmp(p, "quilkin", 7) == 0;
            if (ours) {
                if (!parse_one(eq + 1, n - tlen - 1, &lvl))
                    return false;
                *out = lvl;
                found = true;
            }
        } else if (n > 0) {
            if (!parse_one(p, n, &lvl))
                return false;
            *out = lvl;
            found = true;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return found;
}

/* Appends `s` to buf as JSON string content (no quotes). Returns new length. */
static size_t json_escape(char *buf, size_t len, size_t cap, const char *s)
{
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", c);
        } else {
            buf[len++] = (char)c;
        }
    }
    return len;
}

void log_emit(enum log_level level, const char *subsys, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    uint64_t now = clock_unix_ns();
    time_t secs = (time_t)(now / NS_PER_SEC);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)((now % NS_PER_SEC) / 1000));

    char line[4096];
    size_t len;
    if (log_fmt == LOG_FORMAT_JSON) {
        len = (size_t)snprintf(line, sizeof(line),
                               "{\"timestamp\":\"%s\",\"level\":\"%s\",\"target\":\"quilkin::%s\","
                               "\"message\":\"",
                               ts, level_names[level], subsys);
        len = json_escape(line, len, sizeof(line) - 4, msg);
        len += (size_t)snprintf(line + len, sizeof(line) - len, "\"}\n");
    } else {
        int n = snprintf(line, sizeof(line), "%s %5s %s: %s\n", ts, level_names[level], subsys,
                         msg);
        len = n < 0 ? 0 : (size_t)n;
    }
    if (len >= sizeof(line)) {
        len = sizeof(line) - 1;
        line[len - 1] = '\n';
    }
    ssize_t r = write(STDOUT_FILENO, line, len);
    (void)r; /* nowhere to report a failed log write */
}

bool log_ratelimit_ok(struct log_ratelimit *rl, uint64_t now_ns, uint64_t *suppressed)
{
    if (rl->last_ns != 0 && now_ns - rl->last_ns < NS_PER_SEC) {
        rl->suppressed++;
        return false;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->last_ns = now_ns;
    return true;
}
