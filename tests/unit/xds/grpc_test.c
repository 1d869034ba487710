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

#define ECHO_PATH "/test.Echo/Echo"
#define PUSH_PATH "/test.Push/Push"
#define FINISH_PATH "/test.Finish/Finish"
#define SILENT_PATH "/test.Silent/Silent"
#define N_PUSH 5
#define TIMEOUT_MS 5000

/* ---- the server side: callbacks run on the server thread ---- */

struct srv_ctx {
    atomic_int opens, closes, messages, errors;
};

enum kind { KIND_ECHO = 0, KIND_PUSH, KIND_FINISH, KIND_SILENT };

struct stream_state {
    enum kind kind;
    int n_msgs;
};

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
    }
}

static void t_on_close(void *ctx, void *stream_state)
{
    struct srv_ctx *c = ctx;
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

static struct server_thread *server_start(void)
{
    struct server_thread *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    struct err e = {{0}};
    t->srv = grpc_server_create(0, &test_ops, &t->ctx, &e);
    if (!t->srv)
        fail_msg("grpc_server_create: %s", e.msg);
    assert_int_not_equal(grpc_server_port(t->srv), 0);
    t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(t->stop_fd >= 0);
    assert_int_equal(pthread_create(&t->th, NULL, server_main, t), 0);
    return t;
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
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
