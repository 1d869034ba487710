/* Log sink: formats into a stack buffer, then either writes it with one write(2) to stdout
 * or, once log_writer_start() ran, copies it into a bounded lock-free queue that a writer
 * thread drains (issue 9: a worker must never block on a slow stdout; a full queue drops
 * the line and counts it). Holds the level and format chosen at startup and the queue. */
#include "base/log.h"

#include "base/clock.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum log_level log_current_level = LOG_LEVEL_INFO;

/* ---- the queue: Vyukov's bounded multi-producer queue, one consumer ----------------------
 * Slot i is free for the producer holding position p when seq == p, full for the consumer
 * at p when seq == p + 1; the consumer hands it back with seq = p + QUEUE_SLOTS. */
#define QUEUE_SLOTS 256u /* power of two: 1 MiB of lines at most, touched as used */
#define LINE_CAP 4096
#define WRITER_IDLE_S 1 /* an idle writer wakes this often (to report dropped lines) */

struct log_slot {
    _Atomic uint64_t seq;
    uint32_t len;
    char line[LINE_CAP];
};

struct log_queue {
    struct log_slot *slots; /* QUEUE_SLOTS, mmap'd: pages are touched only when used */
    _Atomic uint64_t head;  /* next position a producer claims */
    uint64_t tail;          /* next position the writer reads (writer only) */
    _Atomic uint64_t dropped;
    _Atomic bool stop;
    /* futex word: 1 while the writer sleeps with nothing queued; the producer that finds it
     * 1 wakes it. Idle, the writer costs no wake-up (it used to poll every 10 ms: 100
     * wake-ups a second beside the workers, issue 11). */
    _Atomic uint32_t sleeping;
    pthread_t thread;
};

/* NULL: write directly. Set before other threads start, cleared after they stopped. */
static struct log_queue *_Atomic queue;

static void write_all(const char *buf, size_t len)
{
    while (len) {
        ssize_t r = write(STDOUT_FILENO, buf, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return; /* nowhere to report a failed log write */
        buf += r;
        len -= (size_t)r;
    }
}

static void futex_call(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
    syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, 0);
}

/* After a line is published: wakes the writer if it sleeps. The fence pairs with the
 * writer's between setting `sleeping` and looking at the queue (one of the two sees the
 * other's store), so no line waits for the idle timeout. */
static void wake_writer(struct log_queue *q)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&q->sleeping, memory_order_relaxed) &&
        atomic_exchange(&q->sleeping, 0) == 1)
        futex_call(&q->sleeping, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* Writer side: sleeps until a producer wakes it or WRITER_IDLE_S passes, unless a line is
 * already queued. */
static void writer_sleep(struct log_queue *q)
{
    atomic_store(&q->sleeping, 1);
    atomic_thread_fence(memory_order_seq_cst);
    struct log_slot *s = &q->slots[q->tail & (QUEUE_SLOTS - 1)];
    if (atomic_load_explicit(&s->seq, memory_order_acquire) != q->tail + 1 &&
        !atomic_load(&q->stop)) {
        struct timespec ts = {WRITER_IDLE_S, 0};
        futex_call(&q->sleeping, FUTEX_WAIT_PRIVATE, 1, &ts);
    }
    atomic_store(&q->sleeping, 0);
}

/* Producer side: false when the queue is full (the line is dropped and counted). */
static bool enqueue(struct log_queue *q, const char *line, size_t len)
{
    uint64_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
    for (;;) {
        struct log_slot *s = &q->slots[pos & (QUEUE_SLOTS - 1)];
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (seq == pos) {
            if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                s->len = (uint32_t)(len < LINE_CAP ? len : LINE_CAP);
                memcpy(s->line, line, s->len);
                atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
                wake_writer(q);
                return true;
            }
        } else if (seq < pos) {
            atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
            return false; /* full: the writer has not freed this slot yet */
        } else {
            pos = atomic_load_explicit(&q->head, memory_order_relaxed);
        }
    }
}

/* Writer side: writes every queued line; true if there was one. */
static bool drain(struct log_queue *q)
{
    bool any = false;
    for (;;) {
        struct log_slot *s = &q->slots[q->tail & (QUEUE_SLOTS - 1)];
        if (atomic_load_explicit(&s->seq, memory_order_acquire) != q->tail + 1)
            break;
        write_all(s->line, s->len);
        atomic_store_explicit(&s->seq, q->tail + QUEUE_SLOTS, memory_order_release);
        q->tail++;
        any = true;
    }
    return any;
}

static void note_dropped(uint64_t n);

static void *writer_main(void *arg)
{
    struct log_queue *q = arg;
    uint64_t reported = 0;
    for (;;) {
        bool stopping = atomic_load(&q->stop);
        bool any = drain(q);
        uint64_t dropped = atomic_load_explicit(&q->dropped, memory_order_relaxed);
        if (dropped != reported) {
            note_dropped(dropped - reported);
            reported = dropped;
        }
        if (stopping && !any)
            return NULL;
        if (!any)
            writer_sleep(q);
    }
}

int log_writer_start(void)
{
    if (atomic_load(&queue))
        return 0;
    struct log_queue *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    void *mem = mmap(NULL, QUEUE_SLOTS * sizeof(struct log_slot), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        free(q);
        return -ENOMEM;
    }
    q->slots = mem;
    for (uint64_t i = 0; i < QUEUE_SLOTS; i++)
        atomic_init(&q->slots[i].seq, i);
    /* the writer takes no signal: created with every signal blocked (it inherits the mask),
     * so SIGTERM/SIGHUP always reach the command's signalfd */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&q->thread, NULL, writer_main, q);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        munmap(mem, QUEUE_SLOTS * sizeof(struct log_slot));
        free(q);
        return -rc;
    }
    atomic_store(&queue, q);
    return 0;
}

void log_writer_stop(void)
{
    struct log_queue *q = atomic_load(&queue);
    if (!q)
        return;
    atomic_store(&q->stop, true);
    atomic_store(&q->sleeping, 0);
    futex_call(&q->sleeping, FUTEX_WAKE_PRIVATE, 1, NULL);
    /* a stdout nobody reads keeps the writer in write(2) for ever: give it 2 s, then leave
     * it (the process is exiting) rather than hang the shutdown */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 2;
    if (pthread_timedjoin_np(q->thread, NULL, &deadline) != 0)
        return;
    atomic_store(&queue, NULL); /* later lines (none expected) go straight to stdout */
    munmap(q->slots, QUEUE_SLOTS * sizeof(struct log_slot));
    free(q);
}

uint64_t log_dropped_lines(void)
{
    struct log_queue *q = atomic_load(&queue);
    return q ? atomic_load_explicit(&q->dropped, memory_order_relaxed) : 0;
}
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

/* Formats one record (with its newline) into line[0..LINE_CAP); returns its length. */
static size_t format_record(char *line, enum log_level level, const char *subsys,
                            const struct log_field *fields, const char *msg)
{
    uint64_t now = clock_unix_ns();
    time_t secs = (time_t)(now / NS_PER_SEC);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)((now % NS_PER_SEC) / 1000));

    /* the body is cut at `cap`; the record's closing text always fits after it */
    const size_t cap = LINE_CAP - 64;
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
        len = put(line, len, LINE_CAP, "},\"target\":\"quilkin::%.32s\"}\n", subsys);
    } else {
        len = put(line, 0, cap, "%s %5s %s: %s", ts, level_names[level], subsys, msg);
        for (const struct log_field *f = fields; f && f->key; f++) {
            len = put(line, len, cap, " %s=", f->key);
            len = plain_value(line, len, cap, f);
        }
        len = put(line, len, LINE_CAP, "\n");
    }
    return len;
}

static void vemit(enum log_level level, const char *subsys, const struct log_field *fields,
                  const char *fmt, va_list ap)
{
    char msg[2048], line[LINE_CAP];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t len = format_record(line, level, subsys, fields, msg);
    struct log_queue *q = atomic_load_explicit(&queue, memory_order_acquire);
    if (q)
        enqueue(q, line, len);
    else
        write_all(line, len);
}

/* The writer's own record about dropped lines, written directly (not queued). */
static void note_dropped(uint64_t n)
{
    char line[LINE_CAP];
    size_t len = format_record(line, LOG_LEVEL_WARN, "log",
                               LOG_FIELDS(LF_U64("dropped_lines", n)),
                               "log lines dropped: stdout did not keep up, and no thread "
                               "waits for it");
    write_all(line, len);
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
