/* The io_uring layer (tests src/net/uring.c) over loopback UDP: multishot receives carry
 * payload, source address and tag; buffers come back with uring_release; running out of
 * buffers ends the receive without losing the datagrams still queued; a cancelled receive
 * delivers nothing more; one send batch reaches several sockets with per-message results;
 * the minimum-completions wait returns on the timeout when too few arrive. Skipped (not
 * failed) where the kernel refuses io_uring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "net/uring.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TAG_A 0x1111
#define TAG_B 0x2222

static int udp_bound(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void send_to(int fd, uint16_t port, const char *text)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(sendto(fd, text, strlen(text), 0, (struct sockaddr *)&a, sizeof(a)),
                     (ssize_t)strlen(text));
}

static struct uring *make(unsigned bufs)
{
    struct err e = {0};
    struct uring *u = uring_create(bufs, 2048, 64, 16, &e);
    if (!u)
        return NULL;
    assert_int_equal(uring_enable(u), 0);
    return u;
}

/* Waits (bounded) until n events with data for tag were read into out[]. */
static unsigned collect(struct uring *u, uint64_t tag, char out[][32], unsigned n,
                        struct uring_event *last)
{
    unsigned got = 0;
    for (int tries = 0; tries < 50 && got < n; tries++) {
        uring_wait(u, 1, 20 * 1000000ull);
        struct uring_event ev;
        while (uring_next(u, &ev)) {
            if (ev.tag != tag)
                continue;
            *last = ev;
            if (ev.has_data && got < n) {
                assert_true(ev.len < 32);
                memcpy(out[got], ev.payload, ev.len);
                out[got][ev.len] = 0;
                got++;
            }
            uring_release(u, &ev);
            if (!ev.more && !ev.has_data)
                return got;
        }
    }
    return got;
}

/* A ring with a receive armed (and submitted) on a bound socket, and a socket to send from. */
struct rig {
    struct uring *u;
    int rx, tx;
    uint16_t port, src_port;
};

static bool rig_up(struct rig *r, unsigned bufs, uint64_t tag)
{
    r->u = make(bufs);
    if (!r->u)
        return false;
    r->rx = udp_bound(&r->port);
    r->tx = udp_bound(&r->src_port);
    assert_int_equal(uring_recv(r->u, r->rx, tag), 0);
    assert_int_equal(uring_wait(r->u, 0, 0), 0); /* submit the arm */
    return true;
}

static void rig_down(struct rig *r)
{
    uring_destroy(r->u);
    close(r->rx);
    close(r->tx);
}

static void test_multishot_receive_carries_payload_name_and_tag(void **state)
{
    (void)state;
    struct rig r;
    if (!rig_up(&r, 8, TAG_A))
        skip();
    struct uring *u = r.u;
    int tx = r.tx;
    uint16_t port = r.port, src_port = r.src_port;
    send_to(tx, port, "one");
    send_to(tx, port, "two");
    send_to(tx, port, "three");
    char got[3][32];
    struct uring_event last;
    assert_int_equal(collect(u, TAG_A, got, 3, &last), 3);
    assert_string_equal(got[0], "one");
    assert_string_equal(got[1], "two");
    assert_string_equal(got[2], "three");
    assert_true(last.more);
    assert_int_equal(last.namelen, sizeof(struct sockaddr_in));
    const struct sockaddr_in *from = last.name;
    assert_int_equal(ntohs(from->sin_port), src_port);
    /* 3 datagrams through 8 buffers, twice over: every buffer came back */
    for (int i = 0; i < 3; i++)
        send_to(tx, port, "again");
    assert_int_equal(collect(u, TAG_A, got, 3, &last), 3);
    rig_down(&r);
}

static void test_running_out_of_buffers_ends_the_receive_and_loses_nothing(void **state)
{
    (void)state;
    struct rig r;
    if (!rig_up(&r, 4, TAG_A))
        skip();
    struct uring *u = r.u;
    int rx = r.rx, tx = r.tx;
    uint16_t port = r.port;
    char text[16];
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof(text), "d%d", i);
        send_to(tx, port, text);
    }
    /* hold the buffers: the kernel has 4 and then ends the receive with -ENOBUFS */
    struct uring_event held[10], ev;
    unsigned n_held = 0;
    bool ended = false;
    for (int tries = 0; tries < 50 && !ended; tries++) {
        uring_wait(u, 1, 20 * 1000000ull);
        while (uring_next(u, &ev)) {
            if (ev.has_data) {
                assert_true(n_held < 10);
                held[n_held++] = ev;
            }
            if (!ev.more) {
                assert_int_equal(ev.res, -ENOBUFS);
                ended = true;
            }
        }
    }
    assert_true(ended);
    assert_int_equal(n_held, 4);
    char got[10][32];
    for (unsigned i = 0; i < n_held; i++) {
        memcpy(got[i], held[i].payload, held[i].len);
        got[i][held[i].len] = 0;
        uring_release(u, &held[i]);
    }
    /* armed again, it finds the rest still queued in the socket */
    assert_int_equal(uring_recv(u, rx, TAG_A), 0);
    struct uring_event last;
    unsigned rest = 0;
    while (n_held + rest < 10) {
        unsigned k = collect(u, TAG_A, got + n_held + rest, 10 - n_held - rest, &last);
        if (!k)
            break;
        rest += k;
        if (!last.more)
            assert_int_equal(uring_recv(u, rx, TAG_A), 0);
    }
    assert_int_equal(n_held + rest, 10);
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof(text), "d%d", i);
        assert_string_equal(got[i], text);
    }
    rig_down(&r);
}

static void test_cancelled_receive_delivers_nothing_more(void **state)
{
    (void)state;
    struct rig r;
    if (!rig_up(&r, 8, TAG_A))
        skip();
    struct uring *u = r.u;
    assert_int_equal(uring_cancel(u, TAG_A), 0);
    uring_wait(u, 1, 50 * 1000000ull);
    struct uring_event ev;
    bool saw_end = false;
    while (uring_next(u, &ev)) {
        assert_int_equal(ev.tag, TAG_A);
        assert_false(ev.has_data);
        assert_false(ev.more);
        assert_int_equal(ev.res, -ECANCELED);
        saw_end = true;
    }
    assert_true(saw_end);
    send_to(r.tx, r.port, "late");
    uring_wait(u, 1, 50 * 1000000ull);
    assert_false(uring_next(u, &ev)); /* the datagram stays in the socket */
    char buf[16];
    assert_int_equal(recv(r.rx, buf, sizeof(buf), MSG_DONTWAIT), 4);
    rig_down(&r);
}

static void test_one_batch_sends_to_several_sockets(void **state)
{
    (void)state;
    struct uring *u = make(8);
    if (!u)
        skip();
    uint16_t p1, p2, pt;
    int r1 = udp_bound(&p1), r2 = udp_bound(&p2), tx = udp_bound(&pt);
    int c1 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int c2 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a1 = {.sin_family = AF_INET, .sin_port = htons(p1),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in a2 = a1;
    a2.sin_port = htons(p2);
    assert_int_equal(connect(c1, (struct sockaddr *)&a1, sizeof(a1)), 0);
    assert_int_equal(connect(c2, (struct sockaddr *)&a2, sizeof(a2)), 0);
    char d1[] = "to-one", d2[] = "to-two", d3[] = "two-again";
    struct iovec iov[4] = {{d1, 6}, {d2, 6}, {d3, 9}, {d1, 6}};
    struct msghdr m[4];
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 4; i++) {
        m[i].msg_iov = &iov[i];
        m[i].msg_iovlen = 1;
    }
    /* the last one: an unconnected socket without a destination fails on its own */
    int fds[4] = {c1, c2, c2, tx};
    struct msghdr *hdrs[4] = {&m[0], &m[1], &m[2], &m[3]};
    int res[4];
    assert_int_equal(uring_send(u, fds, hdrs, res, 4), 0);
    assert_int_equal(res[0], 6);
    assert_int_equal(res[1], 6);
    assert_int_equal(res[2], 9);
    assert_true(res[3] < 0);
    char buf[32];
    assert_int_equal(recv(r1, buf, sizeof(buf), MSG_DONTWAIT), 6);
    assert_int_equal(recv(r2, buf, sizeof(buf), MSG_DONTWAIT), 6);
    assert_int_equal(recv(r2, buf, sizeof(buf), MSG_DONTWAIT), 9);
    assert_memory_equal(buf, "two-again", 9);
    /* more than the ring was made for: refused whole, nothing sent */
    int many_fds[17];
    struct msghdr *many[17];
    int many_res[17];
    for (int i = 0; i < 17; i++) {
        many_fds[i] = c1;
        many[i] = &m[0];
    }
    assert_int_equal(uring_send(u, many_fds, many, many_res, 17), -EMSGSIZE);
    assert_int_equal(recv(r1, buf, sizeof(buf), MSG_DONTWAIT), -1);
    uring_destroy(u);
    close(r1);
    close(r2);
    close(tx);
    close(c1);
    close(c2);
}

static void test_wait_for_many_returns_on_the_timeout(void **state)
{
    (void)state;
    struct rig r;
    if (!rig_up(&r, 8, TAG_B))
        skip();
    struct uring *u = r.u;
    send_to(r.tx, r.port, "only");
    /* asks for 32 completions, gets 1: back after the 30 ms timeout with that one */
    int rc = uring_wait(u, 32, 30 * 1000000ull);
    assert_true(rc == 0 || rc == -ETIME);
    struct uring_event ev;
    assert_true(uring_next(u, &ev));
    assert_int_equal(ev.tag, TAG_B);
    assert_true(ev.has_data);
    assert_memory_equal(ev.payload, "only", 4);
    uring_release(u, &ev);
    rig_down(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multishot_receive_carries_payload_name_and_tag),
        cmocka_unit_test(test_running_out_of_buffers_ends_the_receive_and_loses_nothing),
        cmocka_unit_test(test_cancelled_receive_delivers_nothing_more),
        cmocka_unit_test(test_one_batch_sends_to_several_sockets),
        cmocka_unit_test(test_wait_for_many_returns_on_the_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
