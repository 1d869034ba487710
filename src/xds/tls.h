/* TLS for the xDS link (issue 10): OpenSSL contexts for the ADS client (https:// management
 * servers: the system CA store or a given CA file, optionally a client certificate for mTLS)
 * and for `quilkin manage` (a server certificate, optionally requiring client certificates
 * signed by a given CA). Both sides offer and require ALPN "h2", as gRPC does. Private to
 * src/xds; contexts are built once at start-up and shared read-only afterwards. */
#ifndef QK_XDS_TLS_H
#define QK_XDS_TLS_H

#include <openssl/ssl.h>

#include <stdbool.h>

struct err;

/* A client context that verifies the server against ca_file (PEM), or the system's default
 * CA store when NULL, and presents cert_file/key_file when both are given. NULL with e set
 * (naming the file and OpenSSL's reason). */
SSL_CTX *tls_client_ctx(const char *ca_file, const char *cert_file, const char *key_file,
                        struct err *e);

/* A server context with cert_file/key_file; with client_ca_file, clients must present a
 * certificate signed by it. NULL with e set. */
SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file, const char *client_ca_file,
                        struct err *e);

/* A client connection on fd that checks the certificate names host (a DNS name, or an IP
 * literal checked against the IP addresses in the certificate) and sends it as SNI when it
 * is a name. NULL on OOM. */
SSL *tls_client_new(SSL_CTX *ctx, int fd, const char *host);

/* A server connection on fd. NULL on OOM. */
SSL *tls_server_new(SSL_CTX *ctx, int fd);

/* One step of the handshake: 1 done, 0 to be continued (*want_write: wait for POLLOUT, else
 * POLLIN), or -EPROTO with e set (verification failure, no h2, peer gone). */
int tls_handshake(SSL *ssl, bool *want_write, struct err *e);

/* The last OpenSSL error of this thread as text (for messages), and clears the queue. */
const char *tls_error_text(char *buf, size_t cap);

#endif
