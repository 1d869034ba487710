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

/* Appends formatted text, truncating at cap - 1; never moves len past cap - 1. */
static size_t put(char *buf, size_t len, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t put(char *buf, size_t len, size_t cap, const char *fmt, ...)
{
    if (len + 1 >= cap)
        return len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return len;
    return len + (size_t)n < cap ? len + (size_t)n : cap - 1;
}

/* Appends one field value as JSON. Returns the new length. */
static size_t json_value(char *buf, size_t len, size_t cap, const struct log_field *f)
{
    switch (f->kind) {
    case LOG_FIELD_STR:
        if (!f->v.s)
            return put(buf, len, cap, "null");
        len = put(buf, len, cap, "\"");
        len = json_escape(buf, len, cap, f->v.s);
        return put(buf, len, cap, "\"");
    case LOG_FIELD_U64:
        return put(buf, len, cap, "%llu", (unsigned long long)f->v.u);
    case LOG_FIELD_I64:
        return put(buf, len, cap, "%lld", (long long)f->v.i);
    case LOG_FIELD_F64:
        if (f->v.f != f->v.f || f->v.f - f->v.f != 0) /* NaN or infinite */
            return put(buf, len, cap, "null");
        return put(buf, len, cap, "%.15g", f->v.f); /* 0.05, not 0.050000000000000003 */
    case LOG_FIELD_BOOL:
        return put(buf, len, cap, "%s", f->v.b ? "true" : "false");
    }
    return len;
}

/* Appends one field value as plain text: strings bare unless they hold a space, a quote or
 * an '=' (then quoted as in JSON). Returns the new length. */
static size_t plain_value(char *buf, size_t len, size_t cap, const struct log_field *f)
{
    if (f->kind == LOG_FIELD_STR && f->v.s && !strpbrk(f->v.s, " \"="))
        return put(buf, len, cap, "%s", f->v.s);
    return json_value(buf, len, cap, f);
}

static void vemit(enum log_level level, const char *subsys, const struct log_field *fields,
                  const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);

    uint64_t now = clock_unix_ns();
    time_t secs = (time_t)(now / NS_PER_SEC);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)((now % NS_PER_SEC) / 1000));

    /* the body is cut at `cap`; the record's closing text always fits after it */
    char line[4096];
    const size_t cap = sizeof(line) - 64;
    size_t len;
    if (log_fmt == LOG_FORMAT_JSON) {
        len = put(line, 0, cap, "{\"timestamp\":\"%s\",\"level\":\"%s\",\"fields\":{\"message\":\"",
                  ts, level_names[level]);
        len = json_escape(line, len, cap, msg);
        len = put(line, len, cap, "\"");
        for (const struct log_field *f = fields; f && f->key; f++) {
            len = put(line, len, cap, ",\"");
            len = json_escape(line, len, cap, f->key);
            len = put(line, len, cap, "\":");
            len = json_value(line, len, cap, f);
        }
        len = put(line, len, sizeof(line), "},\"target\":\"quilkin::%.32s\"}\n", subsys);
    } else {
        len = put(line, 0, cap, "%s %5s %s: %s", ts, level_names[level], subsys, msg);
        for (const struct log_field *f = fields; f && f->key; f++) {
            len = put(line, len, cap, " %s=", f->key);
            len = plain_value(line, len, cap, f);
        }
        len = put(line, len, sizeof(line), "\n");
    }
    ssize_t r = write(STDOUT_FILENO, line, len);
    (void)r; /* nowhere to report a failed log write */
}

void log_emit(enum log_level level, const char *subsys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vemit(level, subsys, NULL, fmt, ap);
    va_end(ap);
}

void log_emit_fields(enum log_level level, const char *subsys, const struct log_field *fields,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vemit(level, subsys, fields, fmt, ap);
    va_end(ap);
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
