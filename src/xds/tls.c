/* OpenSSL contexts and handshakes for the xDS link; see tls.h. */
#include "xds/tls.h"

#include "base/err.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static const unsigned char alpn_h2[] = {2, 'h', '2'};

const char *tls_error_text(char *buf, size_t cap)
{
    unsigned long code = ERR_get_error();
    if (!code)
        snprintf(buf, cap, "unknown TLS error");
    else
        ERR_error_string_n(code, buf, cap);
    ERR_clear_error();
    return buf;
}

static SSL_CTX *ctx_fail(SSL_CTX *ctx, struct err *e, const char *what, const char *file)
{
    char text[256];
    err_set(e, "TLS: %s%s%s: %s", what, file ? " " : "", file ? file : "",
            tls_error_text(text, sizeof(text)));
    SSL_CTX_free(ctx);
    return NULL;
}

static SSL_CTX *ctx_new(const SSL_METHOD *m, struct err *e)
{
    SSL_CTX *ctx = SSL_CTX_new(m);
    if (!ctx)
        return ctx_fail(NULL, e, "cannot create a context", NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION); /* gRPC requires TLS 1.2+ */
    /* grpc_frame writes from a buffer that may move and takes partial writes */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

static SSL_CTX *load_pair(SSL_CTX *ctx, const char *cert_file, const char *key_file,
                          struct err *e)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
        return ctx_fail(ctx, e, "cannot load the certificate", cert_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1)
        return ctx_fail(ctx, e, "cannot load the private key", key_file);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return ctx_fail(ctx, e, "the private key does not match the certificate", key_file);
    return ctx;
}

SSL_CTX *tls_client_ctx(const char *ca_file, const char *cert_file, const char *key_file,
                        struct err *e)
{
    SSL_CTX *ctx = ctx_new(TLS_client_method(), e);
    if (!ctx)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
                : SSL_CTX_set_default_verify_paths(ctx) != 1)
        return ctx_fail(ctx, e, "cannot load the CA certificates", ca_file);
    if (SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2)) != 0)
        return ctx_fail(ctx, e, "cannot set ALPN", NULL);
    if ((cert_file != NULL) != (key_file != NULL)) {
        err_set(e, "TLS: a client certificate needs both a certificate and a key file");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return cert_file ? load_pair(ctx, cert_file, key_file, e) : ctx;
}

/* ALPN on the server: h2 or nothing (the handshake then fails). */
static int select_h2(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                     const unsigned char *in, unsigned int in_len, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, out_len, alpn_h2, sizeof(alpn_h2), in, in_len) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file, const char *client_ca_file,
                        struct err *e)
{
    SSL_CTX *ctx = ctx_new(TLS_server_method(), e);
    if (!ctx)
        return NULL;
    if (!load_pair(ctx, cert_file, key_file, e))
        return NULL;
    SSL_CTX_set_alpn_select_cb(ctx, select_h2, NULL);
    if (client_ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, client_ca_file, NULL) != 1)
            return ctx_fail(ctx, e, "cannot load the client CA certificates", client_ca_file);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
}

SSL *tls_client_new(SSL_CTX *ctx, int fd, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (SSL_set_fd(ssl, fd) != 1 ||
        (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1
               : (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1))) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

SSL *tls_server_new(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

int tls_handshake(SSL *ssl, bool *want_write, struct err *e)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    *want_write = false;
    if (r == 1) {
        const unsigned char *proto = NULL;
        unsigned len = 0;
        SSL_get0_alpn_selected(ssl, &proto, &len);
        if (len != 2 || memcmp(proto, "h2", 2) != 0)
            return err_set(e, "TLS: the peer did not negotiate h2 (ALPN)"), -EPROTO;
        return 1;
    }
    int code = SSL_get_error(ssl, r);
    if (code == SSL_ERROR_WANT_READ)
        return 0;
    if (code == SSL_ERROR_WANT_WRITE) {
        *want_write = true;
        return 0;
    }
    char text[256];
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK)
        err_set(e, "TLS handshake: certificate verify failed: %s",
                X509_verify_cert_error_string(verify));
    else if (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        err_set(e, "TLS handshake: %s", r == 0 ? "connection closed by peer" : strerror(errno));
    else
        err_set(e, "TLS handshake: %s", tls_error_text(text, sizeof(text)));
    return -EPROTO;
}
