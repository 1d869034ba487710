/* Fuzz target: arbitrary bytes from a TCP peer into the gRPC server (HTTP/2 framing, gRPC
 * message reassembly, the ADS-style callbacks). The input follows the HTTP/2 client preface,
 * so nghttp2 gets past the preface check and into the frame parser. One server for the
 * whole run; each input is one connection on loopback. */
#include "base/err.h"
#include "xds/grpc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void *on_open(void *ctx, struct grpc_stream *s, const char *path)
{
    (void)ctx;
    (void)s;
    return strcmp(path, "/x.Y/Z") == 0 ? (void *)1 : NULL;
}

static void on_message(void *ctx, void *state, struct grpc_stream *s, const uint8_t *msg,
                       size_t len)
{
    (void)ctx;
    (void)state;
    if (len && msg[0] == 'F')
        grpc_stream_finish(s, GRPC_INVALID_ARGUMENT, "bye");
    else
        grpc_stream_send(s, msg, len); /* echo */
}

static void on_close(void *ctx, void *state)
{
    (void)ctx;
    (void)state;
}

static const struct grpc_server_ops ops = {
    .on_open = on_open, .on_message = on_message, .on_close = on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct grpc_server *srv;
    if (!srv) {
        struct err e = {{0}};
        srv = grpc_server_create(0, &ops, NULL, &e);
        if (!srv)
            abort();
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(grpc_server_port(srv))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        abort();
    grpc_server_poll(srv, 10, -1); /* accept */
    (void)!write(fd, preface, sizeof(preface) - 1);
    size_t off = 0;
    while (off < size) { /* feed in slices so the server sees partial frames too */
        size_t n = size - off < 4096 ? size - off : 4096;
        ssize_t w = write(fd, data + off, n);
        if (w <= 0)
            break;
        off += (size_t)w;
        grpc_server_poll(srv, 0, -1);
    }
    for (int i = 0; i < 4; i++)
        grpc_server_poll(srv, 1, -1);
    close(fd);
    for (int i = 0; i < 2; i++)
        grpc_server_poll(srv, 1, -1); /* notice the close, run on_close */
    return 0;
}
