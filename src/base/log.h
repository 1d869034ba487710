/* Logging: one line per event on stdout, plain or JSON, starting with the subsystem.
 * The macros test the level before evaluating their arguments. Nothing on the data path
 * logs per packet except the Debug filter, LOG_TRACE and rate-limited debug lines.
 *
 * Events may carry structured fields. JSON records have Quilkin's (tracing-subscriber's)
 * shape, the fields in a `fields` object next to the message, so log queries written for
 * Quilkin keep working:
 *   {"timestamp":"...Z","level":"INFO","fields":{"message":"config reloaded","path":"q.yaml",
 *    "endpoints":2},"target":"quilkin::config"}
 * Plain lines append them as key=value: "... INFO config: config reloaded path=q.yaml ...". */
#ifndef QK_BASE_LOG_H
#define QK_BASE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
    LOG_LEVEL_OFF = 0, /* -q: nothing at all */
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_TRACE,
};

enum log_format {
    LOG_FORMAT_PLAIN = 0,
    LOG_FORMAT_JSON,
};

extern enum log_level log_current_level;

/* Sets level and format. Call once at startup, before any thread starts. */
void log_init(enum log_level level, enum log_format format);

/* From now on records go through a bounded queue (256 lines) to a writer thread, so no
 * thread ever blocks on stdout: when the queue is full a record is dropped and counted,
 * and the writer reports the count. Call before starting other threads; 0 or -errno (then
 * records keep being written directly). */
int log_writer_start(void);

/* Writes what is queued and stops the writer. After the other threads stopped logging. */
void log_writer_stop(void);

/* Records dropped because the queue was full, since the writer started. Any thread. */
uint64_t log_dropped_lines(void);

/* Parses RUST_LOG-style text: "info", "quilkin=debug", "warn,quilkin=trace" (the last
 * directive wins; targets other than quilkin are ignored). Returns false on nonsense. */
bool log_parse_level(const char *text, enum log_level *out);

enum log_field_kind {
    LOG_FIELD_STR = 0,
    LOG_FIELD_U64,
    LOG_FIELD_I64,
    LOG_FIELD_F64,
    LOG_FIELD_BOOL,
};

/* One structured field; arrays of them end with a NULL key (LOG_FIELDS adds it). */
struct log_field {
    const char *key;
    enum log_field_kind kind;
    union {
        const char *s; /* borrowed; NULL prints as null */
        uint64_t u;
        int64_t i;
        double f;
        bool b;
    } v;
};

#define LF_STR(k, x) {.key = (k), .kind = LOG_FIELD_STR, .v.s = (x)}
#define LF_U64(k, x) {.key = (k), .kind = LOG_FIELD_U64, .v.u = (uint64_t)(x)}
#define LF_I64(k, x) {.key = (k), .kind = LOG_FIELD_I64, .v.i = (int64_t)(x)}
#define LF_F64(k, x) {.key = (k), .kind = LOG_FIELD_F64, .v.f = (double)(x)}
#define LF_BOOL(k, x) {.key = (k), .kind = LOG_FIELD_BOOL, .v.b = (x)}
/* A NULL-key-terminated array literal of fields: LOG_FIELDS(LF_STR("path", p), ...). */
#define LOG_FIELDS(...) ((const struct log_field[]){__VA_ARGS__, {.key = NULL}})

/* True when records of this level are written (for work done only to build a record). */
static inline bool log_enabled(enum log_level level)
{
    return level <= log_current_level;
}

/* Emits one record. `subsys` is e.g. "proxy"; use the macros rather than this. Any thread;
 * each record is written with a single write(2) so lines never interleave. */
void log_emit(enum log_level level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As log_emit, with fields (NULL-key terminated, may be NULL). */
void log_emit_fields(enum log_level level, const char *subsys, const struct log_field *fields,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define LOG_AT_F(lvl, subsys, fields, ...)                                                     \
    do {                                                                                       \
        if ((lvl) <= log_current_level)                                                        \
            log_emit_fields((lvl), (subsys), (fields), __VA_ARGS__);                           \
    } while (0)

#define LOG_ERROR_F(subsys, fields, ...) LOG_AT_F(LOG_LEVEL_ERROR, subsys, fields, __VA_ARGS__)
#define LOG_WARN_F(subsys, fields, ...) LOG_AT_F(LOG_LEVEL_WARN, subsys, fields, __VA_ARGS__)
#define LOG_INFO_F(subsys, fields, ...) LOG_AT_F(LOG_LEVEL_INFO, subsys, fields, __VA_ARGS__)
#define LOG_DEBUG_F(subsys, fields, ...) LOG_AT_F(LOG_LEVEL_DEBUG, subsys, fields, __VA_ARGS__)

#define LOG_AT(lvl, subsys, ...)                                                               \
    do {                                                                                       \
        if ((lvl) <= log_current_level)                                                        \
            log_emit((lvl), (subsys), __VA_ARGS__);                                            \
    } while (0)

#define LOG_ERROR(subsys, ...) LOG_AT(LOG_LEVEL_ERROR, subsys, __VA_ARGS__)
#define LOG_WARN(subsys, ...) LOG_AT(LOG_LEVEL_WARN, subsys, __VA_ARGS__)
#define LOG_INFO(subsys, ...) LOG_AT(LOG_LEVEL_INFO, subsys, __VA_ARGS__)
#define LOG_DEBUG(subsys, ...) LOG_AT(LOG_LEVEL_DEBUG, subsys, __VA_ARGS__)
#define LOG_TRACE(subsys, ...) LOG_AT(LOG_LEVEL_TRACE, subsys, __VA_ARGS__)

/* Per-call-site limiter for errors that can repeat on the data path: at most one line per
 * second per site; the next line that gets through reports how many were suppressed.
 * A site is owned by one thread (declare it static in a worker-only function or per worker). */
struct log_ratelimit {
    uint64_t last_ns;
    uint64_t suppressed;
};

/* True when the caller may log now; *suppressed receives the count to report. */
bool log_ratelimit_ok(struct log_ratelimit *rl, uint64_t now_ns, uint64_t *suppressed);

#endif
