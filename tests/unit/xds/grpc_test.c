/* xds/grpc_*.c: the client and server against each other over loopback (127.0.0.1 and ::1),
 * the server driven by a background thread. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "xds/grpc.h"
#include "xds/grpc_frame.h"

#define ECHO_PATH "/test.Echo/Echo"
#define PUSH_PATH "/test.Push/Push"
#define FINISH_PATH "/test.Finish/Finish"
#define SILENT_PATH "/test.Silent/Silent"
#define SHARED_PATH "/test.Shared/Shared"
#define SUB_PATH "/test.Sub/Sub"
#define TRIGGER_PATH "/test.Trigger/Trigger"
#define MAX_SUBS 8
#define FLOOD_MSG (256u << 10)
#define FLOOD_PER_TRIGGER 4
#define N_PUSH 5
#define TIMEOUT_MS 5000

/* ---- the server side: callbacks run on the server thread ---- */

struct srv_ctx {
    atomic_int opens, closes, messages, errors;
    atomic_int slow_readers; /* sends refused with -ENOBUFS */
    struct grpc_stream *subs[MAX_SUBS]; /* server thread only */
    void *sub_state[MAX_SUBS];
};

enum kind {
    KIND_ECHO = 0,
    KIND_PUSH,
    KIND_FINISH,
    KIND_SILENT,
    KIND_SHARED,  /* answers "hello " + "world" as a shared body and a tail */
    KIND_SUB,     /* subscribes the stream to the floods */
    KIND_TRIGGER, /* floods every subscriber with FLOOD_PER_TRIGGER big messages */
};

struct stream_state {
    enum kind kind;
    int n_msgs;
};

static void flood(struct srv_ctx *c)
{
    static uint8_t big[FLOOD_MSG];
    for (int i = 0; i < MAX_SUBS; i++) {
        for (int j = 0; c->subs[i] && j < FLOOD_PER_TRIGGER; j++) {
            int rc = grpc_stream_send(c->subs[i], big, sizeof(big));
            if (rc == -ENOBUFS) {
                atomic_fetch_add(&c->slow_readers, 1);
                grpc_stream_abort(c->subs[i], GRPC_RESOURCE_EXHAUSTED, "slow reader");
                c->subs[i] = NULL;
            } else if (rc != 0) {
                atomic_fetch_add(&c->errors, 1);
            }
        }
    }
}

static void *t_on_open(void *ctx, struct grpc_stream *s, const char *path)
{
    struct srv_ctx *c = ctx;
    enum kind k;
    if (strcmp(path, ECHO_PATH) == 0)
        k = KIND_ECHO;
    else if (strcmp(path, PUSH_PATH) == 0)
        k = KIND_PUSH;
    else if (strcmp(path, FINISH_PATH) == 0)
        k = KIND_FINISH;
    else if (strcmp(path, SILENT_PATH) == 0)
        k = KIND_SILENT;
    else if (strcmp(path, SHARED_PATH) == 0)
        k = KIND_SHARED;
    else if (strcmp(path, SUB_PATH) == 0)
        k = KIND_SUB;
    else if (strcmp(path, TRIGGER_PATH) == 0)
        k = KIND_TRIGGER;
    else
        return NULL;
    struct stream_state *st = calloc(1, sizeof(*st));
    if (!st) {
        atomic_fetch_add(&c->errors, 1);
        return NULL;
    }
    st->kind = k;
    atomic_fetch_add(&c->opens, 1);
    return st;
}

static void t_on_message(void *ctx, void *stream_state, struct grpc_stream *s, const uint8_t *msg,
                         size_t len)
{
    struct srv_ctx *c = ctx;
    struct stream_state *st = stream_state;
    atomic_fetch_add(&c->messages, 1);
    st->n_msgs++;
    switch (st->kind) {
    case KIND_ECHO:
        if (grpc_stream_send(s, msg, len) != 0)
            atomic_fetch_add(&c->errors, 1);
        break;
    case KIND_PUSH:
        if (st->n_msgs == 1) {
            for (int i = 0; i < N_PUSH; i++) {
                char text[32];
                int n = snprintf(text, sizeof(text), "push-%d", i);
                if (grpc_stream_send(s, (const uint8_t *)text, (size_t)n) != 0)
                    atomic_fetch_add(&c->errors, 1);
            }
        }
        break;
    case KIND_FINISH:
        grpc_stream_finish(s, GRPC_INVALID_ARGUMENT, "No message found");
        break;
    case KIND_SILENT:
        break;
    case KIND_SHARED: {
        struct grpc_shared *b = grpc_shared_new((const uint8_t *)"hello ", 6);
        if (!b || grpc_stream_send_shared(s, b, (const uint8_t *)"world", 5) != 0 ||
            grpc_stream_send_shared(s, b, (const uint8_t *)"there", 5) != 0)
            atomic_fetch_add(&c->errors, 1);
        grpc_shared_unref(b); /* the stream keeps its own references */
        break;
    }
    case KIND_SUB:
        for (int i = 0; i < MAX_SUBS && st->n_msgs == 1; i++)
            if (!c->subs[i]) {
                c->subs[i] = s;
                c->sub_state[i] = st;
                break;
            }
        break;
    case KIND_TRIGGER:
        flood(c);
        grpc_stream_send(s, (const uint8_t *)"done", 4);
        break;
    }
}

static void t_on_close(void *ctx, void *stream_state)
{
    struct srv_ctx *c = ctx;
    for (int i = 0; i < MAX_SUBS; i++)
        if (c->sub_state[i] == stream_state) {
            c->subs[i] = NULL;
            c->sub_state[i] = NULL;
        }
    atomic_fetch_add(&c->closes, 1);
    free(stream_state);
}

static const struct grpc_server_ops test_ops = {
    .on_open = t_on_open,
    .on_message = t_on_message,
    .on_close = t_on_close,
};

struct server_thread {
    struct srv_ctx ctx;
    struct grpc_server *srv;
    int stop_fd;
    pthread_t th;
    atomic_int poll_errors;
};

static void *server_main(void *arg)
{
    struct server_thread *t = arg;
    for (;;) {
        int r = grpc_server_poll(t->srv, 1000, t->stop_fd);
        if (r == 1)
            break;
        if (r < 0) {
            atomic_fetch_add(&t->poll_errors, 1);
            break;
        }
    }
    return NULL;
}

/* A server with limits l (NULL: the defaults, with requests up to GRPC_MAX_MSG and no
 * queue limit). */
static struct server_thread *server_start_with(const struct grpc_server_limits *l)
{
    struct server_thread *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    struct err e = {{0}};
    t->srv = grpc_server_create(0, &test_ops, &t->ctx, &e);
    if (!t->srv)
        fail_msg("grpc_server_create: %s", e.msg);
    struct grpc_server_limits def;
    grpc_server_limits_default(&def);
    def.max_request = GRPC_MAX_MSG;
    def.conn_buffer = def.total_buffer = 2u * GRPC_MAX_MSG;
    def.max_queued = 0; /* the echo tests pipeline dozens of messages */
    grpc_server_set_limits(t->srv, l ? l : &def);
    assert_int_not_equal(grpc_server_port(t->srv), 0);
    t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(t->stop_fd >= 0);
    assert_int_equal(pthread_create(&t->th, NULL, server_main, t), 0);
    return t;
}

static struct server_thread *server_start(void)
{
    return server_start_with(NULL);
}

/* Stops the thread; the server itself is destroyed by the caller (or here when destroy). */
static void server_stop(struct server_thread *t, bool destroy)
{
    uint64_t one = 1;
    assert_int_equal(write(t->stop_fd, &one, sizeof(one)), sizeof(one));
    assert_int_equal(pthread_join(t->th, NULL), 0);
    assert_int_equal(atomic_load(&t->poll_errors), 0);
    if (destroy) {
        grpc_server_destroy(t->srv);
        t->srv = NULL;
    }
}

static void server_free(struct server_thread *t)
{
    grpc_server_destroy(t->srv);
    close(t->stop_fd);
    free(t);
}

static int group_setup(void **state)
{
    *state = server_start();
    return 0;
}

static int group_teardown(void **state)
{
    struct server_thread *t = *state;
    server_stop(t, true);
    assert_int_equal(atomic_load(&t->ctx.errors), 0);
    server_free(t);
    return 0;
}

/* ---- helpers ---- */

static uint64_t ms_since(uint64_t start_ns)
{
    return (clock_mono_ns() - start_ns) / NS_PER_MS;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool has_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd == -1)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static struct grpc_client *open_client(struct server_thread *t, const char *host, const char *path,
                                       int wake_fd)
{
    struct err e = {{0}};
    struct grpc_client *c =
        grpc_client_open(host, grpc_server_port(t->srv), path, TIMEOUT_MS, wake_fd, &e);
    if (!c)
        fail_msg("grpc_client_open %s %s: %s", host, path, e.msg);
    return c;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t j = 0; j < len; j++)
        buf[j] = (uint8_t)(seed * 31u + j * 7u + (j >> 8));
}

static void send_ok(struct grpc_client *c, const uint8_t *msg, size_t len)
{
    struct err e = {{0}};
    int rc = grpc_client_send(c, msg, len, TIMEOUT_MS, &e);
    if (rc != 0)
        fail_msg("grpc_client_send(%zu bytes): %d %s", len, rc, e.msg);
}

/* Receives one message and checks it equals want. */
static void recv_expect(struct grpc_client *c, const uint8_t *want, size_t want_len)
{
    struct err e = {{0}};
    uint8_t *msg = NULL;
    size_t len = 0;
    int rc = grpc_client_recv(c, TIMEOUT_MS, &msg, &len, &e);
    if (rc != 1)
        fail_msg("grpc_client_recv: %d %s", rc, e.msg);
    assert_non_null(msg);
    assert_int_equal(len, want_len);
    if (len)
        assert_memory_equal(msg, want, len);
    free(msg);
}

/* Waits (bounded) for the stream to end; returns the error and its text. */
static int recv_until_error(struct grpc_client *c, struct err *e)
{
    for (int i = 0; i < 20; i++) {
        uint8_t *msg = NULL;
        size_t len;
        int rc = grpc_client_recv(c, TIMEOUT_MS, &msg, &len, e);
        free(msg);
        if (rc < 0)
            return rc;
        if (rc == 0)
            fail_msg("stream did not end within %d ms", TIMEOUT_MS);
    }
    fail_msg("stream kept sending messages");
    return 0;
}

#define N_ECHO 100
#define MAX_ECHO 70000

static size_t echo_size(int i)
{
    return (size_t)i * MAX_ECHO / (N_ECHO - 1);
}

/* ---- tests ---- */

static void echo_interleaved_v4(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    uint8_t *buf = malloc(MAX_ECHO);
    assert_non_null(buf);
    for (int i = 0; i < N_ECHO; i++) {
        size_t len = echo_size(i);
        fill(buf, len, (unsigned)i);
        send_ok(c, buf, len);
        recv_expect(c, buf, len);
    }
    free(buf);
    grpc_client_close(c);
}

static void echo_pipelined(struct server_thread *t, const char *host)
{
    struct grpc_client *c = open_client(t, host, ECHO_PATH, -1);
    uint8_t *buf = malloc(MAX_ECHO);
    assert_non_null(buf);
    for (int i = 0; i < N_ECHO; i++) {
        size_t len = echo_size(i);
        fill(buf, len, (unsigned)i);
        send_ok(c, buf, len);
    }
    for (int i = 0; i < N_ECHO; i++) {
        size_t len = echo_size(i);
        fill(buf, len, (unsigned)i);
        recv_expect(c, buf, len);
    }
    free(buf);
    grpc_client_close(c);
}

static void echo_pipelined_v4(void **state)
{
    echo_pipelined(*state, "127.0.0.1");
}

static void echo_pipelined_v6(void **state)
{
    if (!has_ipv6_loopback())
        skip();
    echo_pipelined(*state, "::1");
}

static void echo_large_message(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "localhost", ECHO_PATH, -1);
    size_t len = 5u << 20; /* well past every HTTP/2 window */
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    fill(buf, len, 7);
    send_ok(c, buf, len);
    recv_expect(c, buf, len);
    free(buf);
    grpc_client_close(c);
}

static void oversized_send_refused(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    struct err e = {{0}};
    uint8_t b = 0; /* the length is refused before the bytes are read */
    assert_int_equal(grpc_client_send(c, &b, (size_t)GRPC_MAX_MSG + 1, TIMEOUT_MS, &e), -EMSGSIZE);
    assert_non_null(strstr(e.msg, "exceeds"));
    /* the stream is still usable */
    send_ok(c, (const uint8_t *)"ok", 2);
    recv_expect(c, (const uint8_t *)"ok", 2);
    grpc_client_close(c);
}

static void server_pushes(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "127.0.0.1", PUSH_PATH, -1);
    send_ok(c, (const uint8_t *)"subscribe", 9);
    for (int i = 0; i < N_PUSH; i++) {
        char want[32];
        int n = snprintf(want, sizeof(want), "push-%d", i);
        recv_expect(c, (const uint8_t *)want, (size_t)n);
    }
    grpc_client_close(c);
}

static void unknown_path_unimplemented(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "127.0.0.1", "/no.Such/Method", -1);
    struct err e = {{0}};
    /* the answer may already be in, so the send may fail; either way recv reports it */
    grpc_client_send(c, (const uint8_t *)"x", 1, TIMEOUT_MS, &e);
    err_clear(&e);
    int rc = recv_until_error(c, &e);
    assert_true(rc < 0);
    if (!strstr(e.msg, "grpc-status 12") || !strstr(e.msg, "UNIMPLEMENTED"))
        fail_msg("unexpected error text: %s", e.msg);
    /* further sends fail with the same explanation */
    err_clear(&e);
    assert_true(grpc_client_send(c, (const uint8_t *)"y", 1, TIMEOUT_MS, &e) < 0);
    assert_non_null(strstr(e.msg, "12"));
    grpc_client_close(c);
}

static void finish_with_status(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "127.0.0.1", FINISH_PATH, -1);
    send_ok(c, (const uint8_t *)"q", 1);
    struct err e = {{0}};
    int rc = recv_until_error(c, &e);
    assert_int_equal(rc, -EPIPE);
    if (!strstr(e.msg, "INVALID_ARGUMENT") || !strstr(e.msg, "No message found") ||
        !strstr(e.msg, "grpc-status 3"))
        fail_msg("unexpected error text: %s", e.msg);
    grpc_client_close(c);
}

static bool wait_count(atomic_int *v, int want)
{
    for (int i = 0; i < 500; i++) {
        if (atomic_load(v) >= want)
            return true;
        sleep_ms(10);
    }
    return false;
}

static void client_close_calls_on_close(void **state)
{
    struct server_thread *t = *state;
    int before = atomic_load(&t->ctx.opens);
    struct grpc_client *c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    send_ok(c, (const uint8_t *)"hi", 2);
    recv_expect(c, (const uint8_t *)"hi", 2);
    assert_true(wait_count(&t->ctx.opens, before + 1));
    /* every stream opened so far (including earlier tests') is closed after this one is */
    grpc_client_close(c);
    assert_true(wait_count(&t->ctx.closes, atomic_load(&t->ctx.opens)));
    assert_int_equal(atomic_load(&t->ctx.closes), atomic_load(&t->ctx.opens));
}

static void recv_timeout(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "127.0.0.1", SILENT_PATH, -1);
    send_ok(c, (const uint8_t *)"?", 1);
    struct err e = {{0}};
    uint8_t *msg = NULL;
    size_t len = 0;
    uint64_t start = clock_mono_ns();
    assert_int_equal(grpc_client_recv(c, 200, &msg, &len, &e), 0);
    uint64_t took = ms_since(start);
    assert_null(msg);
    assert_true(took >= 190 && took < 2000);
    /* a zero timeout polls once and returns at once */
    start = clock_mono_ns();
    assert_int_equal(grpc_client_recv(c, 0, &msg, &len, &e), 0);
    assert_true(ms_since(start) < 100);
    grpc_client_close(c);
}

struct waker {
    int fd;
    int delay_ms;
};

static void *wake_later(void *arg)
{
    struct waker *w = arg;
    sleep_ms(w->delay_ms);
    uint64_t one = 1;
    if (write(w->fd, &one, sizeof(one)) != sizeof(one))
        abort();
    return NULL;
}

static void wake_interrupts_recv(void **state)
{
    struct server_thread *t = *state;
    int wfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(wfd >= 0);
    struct grpc_client *c = open_client(t, "127.0.0.1", SILENT_PATH, wfd);
    struct waker w = {.fd = wfd, .delay_ms = 100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wake_later, &w), 0);
    struct err e = {{0}};
    uint8_t *msg = NULL;
    size_t len = 0;
    uint64_t start = clock_mono_ns();
    assert_int_equal(grpc_client_recv(c, 10000, &msg, &len, &e), -EINTR);
    assert_true(ms_since(start) < 3000);
    assert_int_equal(pthread_join(th, NULL), 0);
    uint64_t v;
    assert_int_equal(read(wfd, &v, sizeof(v)), sizeof(v)); /* the caller drains */
    /* the stream still works afterwards */
    assert_int_equal(grpc_client_recv(c, 50, &msg, &len, &e), 0);
    grpc_client_close(c);
    close(wfd);
}

static void connect_refused_fast(void **state)
{
    /* a port nobody listens on: bind, learn it, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t sl = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    uint16_t port = ntohs(a.sin_port);
    close(fd);
    struct err e = {{0}};
    uint64_t start = clock_mono_ns();
    struct grpc_client *c = grpc_client_open("127.0.0.1", port, ECHO_PATH, TIMEOUT_MS, -1, &e);
    assert_null(c);
    assert_true(ms_since(start) < 1000);
    assert_true(err_is_set(&e));
    assert_non_null(strstr(e.msg, "refused"));
}

static void bad_arguments(void **state)
{
    struct err e = {{0}};
    assert_null(grpc_client_open("127.0.0.1", 1, "no-slash", 100, -1, &e));
    assert_true(err_is_set(&e));
    err_clear(&e);
    assert_null(grpc_client_open("", 1, "/a/b", 100, -1, &e));
    assert_true(err_is_set(&e));
    grpc_client_close(NULL);
    grpc_server_destroy(NULL);
}

#define N_CLIENTS 20

static void many_clients(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *cs[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++)
        cs[i] = open_client(t, i % 2 && has_ipv6_loopback() ? "::1" : "127.0.0.1", ECHO_PATH, -1);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N_CLIENTS; i++) {
            uint8_t buf[64];
            fill(buf, sizeof(buf), (unsigned)(i * 10 + round));
            send_ok(cs[i], buf, sizeof(buf));
        }
        for (int i = 0; i < N_CLIENTS; i++) {
            uint8_t buf[64];
            fill(buf, sizeof(buf), (unsigned)(i * 10 + round));
            recv_expect(cs[i], buf, sizeof(buf));
        }
    }
    for (int i = 0; i < N_CLIENTS; i++)
        grpc_client_close(cs[i]);
}

/* Non-HTTP/2 bytes: the server drops that connection and carries on. */
static void garbage_peer_dropped(void **state)
{
    struct server_thread *t = *state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons(grpc_server_port(t->srv))};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(fd, junk, sizeof(junk) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(junk) - 1);
    /* read until EOF or reset, bounded */
    bool closed = false;
    for (int i = 0; i < 100 && !closed; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, TIMEOUT_MS) <= 0)
            break;
        char b[4096];
        ssize_t n = recv(fd, b, sizeof(b), 0);
        closed = n <= 0;
    }
    close(fd);
    assert_true(closed);
    /* still serving */
    struct grpc_client *c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    send_ok(c, (const uint8_t *)"alive", 5);
    recv_expect(c, (const uint8_t *)"alive", 5);
    grpc_client_close(c);
}

/* A server torn down under connected clients: they see an error quickly, and every stream
 * got its on_close. */
static void server_destroyed_under_clients(void **state)
{
    struct server_thread *t = server_start();
    struct grpc_client *a = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    struct grpc_client *b = open_client(t, "127.0.0.1", SILENT_PATH, -1);
    send_ok(a, (const uint8_t *)"1", 1);
    recv_expect(a, (const uint8_t *)"1", 1);
    send_ok(b, (const uint8_t *)"2", 1);
    assert_true(wait_count(&t->ctx.messages, 2));
    server_stop(t, true);
    assert_int_equal(atomic_load(&t->ctx.closes), 2);
    struct err e = {{0}};
    uint8_t *msg = NULL;
    size_t len;
    uint64_t start = clock_mono_ns();
    int rc = grpc_client_recv(a, TIMEOUT_MS, &msg, &len, &e);
    assert_true(rc < 0 && rc != -EINTR);
    assert_true(ms_since(start) < 1000);
    assert_true(err_is_set(&e));
    err_clear(&e);
    rc = grpc_client_recv(b, TIMEOUT_MS, &msg, &len, &e);
    assert_true(rc < 0 && rc != -EINTR);
    assert_true(err_is_set(&e));
    /* and sends fail too */
    assert_true(grpc_client_send(a, (const uint8_t *)"x", 1, 100, &e) < 0);
    grpc_client_close(a);
    grpc_client_close(b);
    server_free(t);
}


/* ---- limits (issue 10) ---- */

/* A plain TCP connection to the server's port on host ("127.0.0.1" or "::1"). */
static int raw_connect(struct server_thread *t, const char *host)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    int fam = strchr(host, ':') ? AF_INET6 : AF_INET;
    if (fam == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(grpc_server_port(t->srv));
        inet_pton(AF_INET6, host, &a->sin6_addr);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(grpc_server_port(t->srv));
        inet_pton(AF_INET, host, &a->sin_addr);
        sl = sizeof(*a);
    }
    int fd = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, sl), 0);
    return fd;
}

/* Reads (and discards) until EOF or reset; returns the ms it took, or -1 if the peer kept
 * the connection open for timeout_ms. */
static int ms_until_eof(int fd, int timeout_ms)
{
    uint64_t start = clock_mono_ns();
    for (int i = 0; i < 1000; i++) {
        int left = timeout_ms - (int)ms_since(start);
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            return -1;
        char b[4096];
        ssize_t n = recv(fd, b, sizeof(b), 0);
        if (n <= 0)
            return (int)ms_since(start);
    }
    return -1;
}

static void send_preface(int fd)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0}; /* empty SETTINGS */
    assert_int_equal(send(fd, preface, sizeof(preface) - 1, MSG_NOSIGNAL),
                     (ssize_t)sizeof(preface) - 1);
    assert_int_equal(send(fd, settings, sizeof(settings), MSG_NOSIGNAL), (ssize_t)sizeof(settings));
}

static struct grpc_server_stats stats_of(struct server_thread *t)
{
    struct grpc_server_stats st;
    grpc_server_get_stats(t->srv, &st);
    return st;
}

static void stop_and_free(struct server_thread *t)
{
    server_stop(t, false);
    assert_int_equal(atomic_load(&t->ctx.errors), 0);
    server_free(t);
}

/* The outgoing queue: a shared body with a tail comes out byte-exact however the DATA frames
 * cut it, and dropping keeps a message that is partly out. */
static void outq_shared_bodies_and_drop(void **state)
{
    (void)state;
    struct grpc_frame_outq q = {0};
    struct grpc_shared *b = grpc_shared_new((const uint8_t *)"abcdefgh", 8);
    assert_non_null(b);
    for (int i = 0; i < 10; i++) /* wraps and grows the ring */
        assert_int_equal(grpc_frame_outq_push_shared(&q, b, (const uint8_t *)"XY", 2), 0);
    assert_int_equal(b->refs, 11);
    assert_int_equal(grpc_frame_outq_count(&q), 10);
    assert_int_equal(grpc_frame_outq_pending(&q), 10 * (5 + 8 + 2));
    static const uint8_t one[15] = {0, 0, 0, 0, 10, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h',
                                    'X', 'Y'};
    uint8_t out[15 * 3];
    size_t got = 0;
    while (got < sizeof(out)) /* 4 bytes at a time: every piece boundary is crossed */
        got += grpc_frame_outq_take(&q, out + got, sizeof(out) - got < 4 ? sizeof(out) - got : 4);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(out + 15 * i, one, 15);
    assert_int_equal(grpc_frame_outq_count(&q), 7);
    uint8_t part[3];
    assert_int_equal(grpc_frame_outq_take(&q, part, 3), 3); /* the 4th is partly out */
    assert_int_equal(grpc_frame_outq_drop_unsent(&q), 6);
    assert_int_equal(grpc_frame_outq_count(&q), 1);
    assert_int_equal(grpc_frame_outq_pending(&q), 12);
    uint8_t rest[12];
    assert_int_equal(grpc_frame_outq_take(&q, rest, sizeof(rest)), 12);
    assert_memory_equal(rest, one + 3, 12);
    assert_int_equal(grpc_frame_outq_count(&q), 0);
    assert_int_equal(b->refs, 1); /* every queued reference is gone */
    assert_int_equal(grpc_frame_outq_push_shared(&q, b, NULL, 0), 0);
    grpc_frame_outq_deinit(&q);
    assert_int_equal(b->refs, 1);
    grpc_shared_unref(b);
}

static void shared_body_with_tail_on_the_wire(void **state)
{
    struct server_thread *t = *state;
    struct grpc_client *c = open_client(t, "127.0.0.1", SHARED_PATH, -1);
    send_ok(c, (const uint8_t *)"go", 2);
    recv_expect(c, (const uint8_t *)"hello world", 11);
    recv_expect(c, (const uint8_t *)"hello there", 11);
    grpc_client_close(c);
}

static void expect_status(struct grpc_client *c, const char *status, const char *text)
{
    struct err e = {{0}};
    int rc = recv_until_error(c, &e);
    assert_true(rc < 0);
    if (!strstr(e.msg, status) || (text && !strstr(e.msg, text)))
        fail_msg("expected %s (%s), got: %s", status, text ? text : "-", e.msg);
}

static void oversized_request_resource_exhausted(void **state)
{
    (void)state;
    struct grpc_server_limits l;
    grpc_server_limits_default(&l);
    l.max_request = 64u << 10;
    struct server_thread *t = server_start_with(&l);
    struct grpc_client *c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    static uint8_t big[100u << 10];
    struct err e = {{0}};
    grpc_client_send(c, big, sizeof(big), TIMEOUT_MS, &e); /* may fail once refused */
    expect_status(c, "RESOURCE_EXHAUSTED", "exceeds");
    grpc_client_close(c);
    /* a message at the limit is fine */
    c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    send_ok(c, big, l.max_request);
    recv_expect(c, big, l.max_request);
    grpc_client_close(c);
    stop_and_free(t);
}

/* Request bytes buffered per connection and in all are capped: a message that does not fit
 * ends its stream with RESOURCE_EXHAUSTED, and nothing stays accounted afterwards. */
static void buffer_limits_resource_exhausted(void **state)
{
    (void)state;
    for (int which = 0; which < 2; which++) {
        struct grpc_server_limits l;
        grpc_server_limits_default(&l);
        l.max_request = 1u << 20;
        l.conn_buffer = which == 0 ? 256u << 10 : 0;
        l.total_buffer = which == 1 ? 256u << 10 : 0;
        struct server_thread *t = server_start_with(&l);
        struct grpc_client *c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
        static uint8_t msg[512u << 10];
        struct err e = {{0}};
        grpc_client_send(c, msg, sizeof(msg), TIMEOUT_MS, &e);
        expect_status(c, "RESOURCE_EXHAUSTED", "no room");
        grpc_client_close(c);
        c = open_client(t, "127.0.0.1", ECHO_PATH, -1); /* what fits still goes */
        send_ok(c, msg, 200u << 10);
        recv_expect(c, msg, 200u << 10);
        grpc_client_close(c);
        assert_int_equal(stats_of(t).buffer_exhausted, 1);
        assert_int_equal(stats_of(t).buffered, 0);
        stop_and_free(t);
    }
}

/* A subscriber that does not read: once max_queued responses wait for it, sends fail with
 * -ENOBUFS and the server can end the stream; the client then reads what was sent and the
 * status, and the other subscriber is unaffected. */
static void slow_reader_refused_and_aborted(void **state)
{
    (void)state;
    struct grpc_server_limits l;
    grpc_server_limits_default(&l);
    l.max_queued = 4;
    struct server_thread *t = server_start_with(&l);
    struct grpc_client *slow = open_client(t, "127.0.0.1", SUB_PATH, -1);
    struct grpc_client *fast = open_client(t, "127.0.0.1", SUB_PATH, -1);
    struct grpc_client *trig = open_client(t, "127.0.0.1", TRIGGER_PATH, -1);
    send_ok(slow, (const uint8_t *)"sub", 3);
    send_ok(fast, (const uint8_t *)"sub", 3);
    assert_true(wait_count(&t->ctx.messages, 2));
    int fast_got = 0;
    for (int round = 0; round < 8 && atomic_load(&t->ctx.slow_readers) == 0; round++) {
        send_ok(trig, (const uint8_t *)"go", 2);
        recv_expect(trig, (const uint8_t *)"done", 4);
        for (int i = 0; i < FLOOD_PER_TRIGGER; i++) { /* the fast one keeps up */
            uint8_t *msg = NULL;
            size_t len = 0;
            struct err e = {{0}};
            if (grpc_client_recv(fast, TIMEOUT_MS, &msg, &len, &e) != 1)
                fail_msg("fast subscriber: %s", e.msg);
            assert_int_equal(len, FLOOD_MSG);
            free(msg);
            fast_got++;
        }
    }
    assert_int_equal(atomic_load(&t->ctx.slow_readers), 1);
    /* the slow one drains what was sent, then learns why it ends */
    int slow_got = 0;
    struct err e = {{0}};
    for (int i = 0; i < 64; i++) {
        uint8_t *msg = NULL;
        size_t len = 0;
        int rc = grpc_client_recv(slow, TIMEOUT_MS, &msg, &len, &e);
        free(msg);
        if (rc != 1)
            break;
        assert_int_equal(len, FLOOD_MSG);
        slow_got++;
    }
    if (!strstr(e.msg, "RESOURCE_EXHAUSTED") || !strstr(e.msg, "slow reader"))
        fail_msg("slow subscriber: %s", e.msg);
    assert_true(slow_got < fast_got);
    grpc_client_close(slow);
    grpc_client_close(fast);
    grpc_client_close(trig);
    stop_and_free(t);
}

static void first_request_timeout(void **state)
{
    (void)state;
    struct grpc_server_limits l;
    grpc_server_limits_default(&l);
    l.first_request_ms = 300;
    struct server_thread *t = server_start_with(&l);
    /* a connection that says nothing at all */
    int fd = raw_connect(t, "127.0.0.1");
    int ms = ms_until_eof(fd, TIMEOUT_MS);
    close(fd);
    assert_true(ms >= 250 && ms < 2000);
    /* a stream opened without a request learns why */
    struct grpc_client *c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    expect_status(c, "DEADLINE_EXCEEDED", "first-request");
    grpc_client_close(c);
    /* a client that asks in time is served past the timeout */
    c = open_client(t, "127.0.0.1", ECHO_PATH, -1);
    send_ok(c, (const uint8_t *)"1", 1);
    recv_expect(c, (const uint8_t *)"1", 1);
    sleep_ms(600);
    send_ok(c, (const uint8_t *)"2", 1);
    recv_expect(c, (const uint8_t *)"2", 1);
    grpc_client_close(c);
    assert_int_equal(stats_of(t).first_request_timeouts, 2);
    stop_and_free(t);
}

static void idle_connection_closed(void **state)
{
    (void)state;
    struct grpc_server_limits l;
    grpc_server_limits_default(&l);
    l.first_request_ms = 0;
    l.idle_ms = 300;
    struct server_thread *t = server_start_with(&l);
    int fd = raw_connect(t, "127.0.0.1");
    send_preface(fd);
    int ms = ms_until_eof(fd, TIMEOUT_MS);
    close(fd);
    assert_true(ms >= 250 && ms < 2000);
    assert_int_equal(stats_of(t).idle_timeouts, 1);
    /* a connection with an open stream is not idle */
    struct grpc_client *c = open_client(t, "127.0.0.1", SILENT_PATH, -1);
    send_ok(c, (const uint8_t *)"x", 1);
    sleep_ms(700);
    send_ok(c, (const uint8_t *)"y", 1);
    assert_true(wait_count(&t->ctx.messages, 2));
    grpc_client_close(c);
    stop_and_free(t);
}

/* A client that stops answering (no reads, so no PING ACK) is closed; one that keeps
 * reading is not. */
static void keepalive_closes_silent_clients(void **state)
{
    (void)state;
    struct grpc_server_limits l;
    grpc_server_limits_default(&l);
    l.keepalive_ms = 200;
    l.keepalive_timeout_ms = 200;
    struct server_thread *t = server_start_with(&l);
    struct grpc_client *mute = open_client(t, "127.0.0.1", SILENT_PATH, -1);
    struct grpc_client *live = open_client(t, "127.0.0.1", SILENT_PATH, -1);
    send_ok(mute, (const uint8_t *)"m", 1);
    send_ok(live, (const uint8_t *)"l", 1);
    uint64_t start = clock_mono_ns();
    while (ms_since(start) < 1500) { /* only `live` reads (and so answers PINGs) */
        uint8_t *msg = NULL;
        size_t len;
        struct err e = {{0}};
        int rc = grpc_client_recv(live, 100, &msg, &len, &e);
        free(msg);
        if (rc != 0)
            fail_msg("live client: %d %s", rc, e.msg);
    }
    assert_int_equal(stats_of(t).keepalive_timeouts, 1);
    send_ok(live, (const uint8_t *)"still", 5);
    struct err e = {{0}};
    uint8_t *msg = NULL;
    size_t len;
    assert_true(grpc_client_recv(mute, TIMEOUT_MS, &msg, &len, &e) < 0);
    grpc_client_close(mute);
    grpc_client_close(live);
    stop_and_free(t);
}

static void per_peer_and_total_connection_caps(void **state)
{
    (void)state;
    struct grpc_server_limits l;
    grpc_server_limits_default(&l);
    l.first_request_ms = 0;
    l.max_conns_per_peer = 3;
    l.max_conns = 5;
    struct server_thread *t = server_start_with(&l);
    int fds[3];
    for (int i = 0; i < 3; i++)
        fds[i] = raw_connect(t, "127.0.0.1");
    int extra = raw_connect(t, "127.0.0.1");
    assert_true(ms_until_eof(extra, TIMEOUT_MS) >= 0); /* closed at once */
    close(extra);
    assert_int_equal(stats_of(t).refused_per_peer, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ms_until_eof(fds[i], 300), -1); /* the first three stay */
    if (has_ipv6_loopback()) { /* another peer is served */
        struct grpc_client *c = open_client(t, "::1", ECHO_PATH, -1);
        send_ok(c, (const uint8_t *)"v6", 2);
        recv_expect(c, (const uint8_t *)"v6", 2);
        int a = raw_connect(t, "::1"); /* the 5th connection */
        int b = raw_connect(t, "::1"); /* over the total */
        assert_true(ms_until_eof(b, TIMEOUT_MS) >= 0);
        assert_int_equal(stats_of(t).refused_max_conns, 1);
        close(a);
        close(b);
        grpc_client_close(c);
    }
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    stop_and_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(echo_interleaved_v4),
        cmocka_unit_test(echo_pipelined_v4),
        cmocka_unit_test(echo_pipelined_v6),
        cmocka_unit_test(echo_large_message),
        cmocka_unit_test(oversized_send_refused),
        cmocka_unit_test(server_pushes),
        cmocka_unit_test(unknown_path_unimplemented),
        cmocka_unit_test(finish_with_status),
        cmocka_unit_test(recv_timeout),
        cmocka_unit_test(wake_interrupts_recv),
        cmocka_unit_test(many_clients),
        cmocka_unit_test(garbage_peer_dropped),
        cmocka_unit_test(client_close_calls_on_close),
        cmocka_unit_test(connect_refused_fast),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(server_destroyed_under_clients),
        cmocka_unit_test(outq_shared_bodies_and_drop),
        cmocka_unit_test(shared_body_with_tail_on_the_wire),
        cmocka_unit_test(oversized_request_resource_exhausted),
        cmocka_unit_test(buffer_limits_resource_exhausted),
        cmocka_unit_test(slow_reader_refused_and_aborted),
        cmocka_unit_test(first_request_timeout),
        cmocka_unit_test(idle_connection_closed),
        cmocka_unit_test(keepalive_closes_silent_clients),
        cmocka_unit_test(per_peer_and_total_connection_caps),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
