/* redis_tls.c - am2z over TLS: an OpenSSL transport for am2z_redis_transport, and a
   program that uses it for a plain connection and for the queue runtime (a worker and a
   caller in one process). The library stays dependency-free: TLS is this file's job,
   plugged in through the transport hook. Build (needs libssl-dev):

       cc -std=c99 -O2 -I. -o redis_tls examples/tls/redis_tls.c -pthread -lm -lssl -lcrypto

   Run against a Redis started with --tls-port (tests/test_tls.sh does all of this):

       REDIS_HOST=127.0.0.1 REDIS_PORT=6380 AM2Z_TLS_CA=ca.crt \
       [AM2Z_TLS_CERT=client.crt AM2Z_TLS_KEY=client.key] [AM2Z_TLS_SNI=name] ./redis_tls

   The server's certificate is verified against AM2Z_TLS_CA and its name against
   AM2Z_TLS_SNI (default: REDIS_HOST); the client certificate is for servers started
   with --tls-auth-clients yes. Prints "tls ok: ..." and exits 0 when both the plain
   connection and a queue round trip worked. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_RESP_IMPLEMENTATION
#include "am2z_resp.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

typedef struct tls_config {
    SSL_CTX *ctx;
    const char *server_name;    /* checked against the certificate and sent as SNI */
} tls_config;

/* The transport's open: TLS handshake on am2z's non-blocking socket, within timeout_ms. */
static void *tls_open(int fd, const char *host, int64_t timeout_ms, void *user_data) {
    tls_config *cfg = (tls_config *)user_data;
    const char *name = cfg->server_name ? cfg->server_name : host;
    int64_t deadline = am2z_monotonic_ns() + (timeout_ms < 0 ? INT64_MAX / 2 : timeout_ms * 1000000);
    SSL *ssl = SSL_new(cfg->ctx);
    if (!ssl) return NULL;
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name); /* hostname (or IP) verification */
    for (;;) {
        int rc = SSL_connect(ssl), err, left_ms;
        struct pollfd p;
        if (rc == 1) return ssl;
        err = SSL_get_error(ssl, rc);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
            unsigned long e = ERR_peek_last_error();
            fprintf(stderr, "tls: handshake with %s failed: %s (verify: %s)\n", name,
                    e ? ERR_reason_error_string(e) : "connection closed",
                    X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
            SSL_free(ssl);
            return NULL;
        }
        left_ms = (int)((deadline - am2z_monotonic_ns()) / 1000000);
        if (left_ms <= 0) {
            fprintf(stderr, "tls: handshake with %s timed out\n", name);
            SSL_free(ssl);
            return NULL;
        }
        p.fd = fd;
        p.events = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        p.revents = 0;
        poll(&p, 1, left_ms);
    }
}

/* read/write: bytes moved, 0 at end of stream, or what the socket must wait for. */
static ptrdiff_t tls_io(SSL *ssl, int rc) {
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ: return AM2Z_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return AM2Z_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return 0;
    default: errno = EIO; return -1;
    }
}

static ptrdiff_t tls_read(void *conn, void *buf, size_t len) {
    int n = SSL_read((SSL *)conn, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : tls_io((SSL *)conn, n);
}

static ptrdiff_t tls_write(void *conn, const void *buf, size_t len) {
    int n = SSL_write((SSL *)conn, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : tls_io((SSL *)conn, n);
}

static void tls_close(void *conn) {
    SSL_shutdown((SSL *)conn); /* one close_notify, no waiting for the peer's */
    SSL_free((SSL *)conn);
}

static int tls_config_init(tls_config *cfg) {
    const char *ca = getenv("AM2Z_TLS_CA"), *cert = getenv("AM2Z_TLS_CERT"), *key = getenv("AM2Z_TLS_KEY");
    memset(cfg, 0, sizeof *cfg);
    cfg->server_name = getenv("AM2Z_TLS_SNI");
    if (!ca) {
        fprintf(stderr, "tls: set AM2Z_TLS_CA to the CA certificate that signed the server's\n");
        return 0;
    }
    cfg->ctx = SSL_CTX_new(TLS_client_method());
    if (!cfg->ctx) return 0;
    SSL_CTX_set_min_proto_version(cfg->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(cfg->ctx, SSL_VERIFY_PEER, NULL);
    /* SSL_write may return after part of a buffer, and am2z retries with the rest from
       another address: both modes make OpenSSL accept that */
    SSL_CTX_set_mode(cfg->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_load_verify_locations(cfg->ctx, ca, NULL) != 1 ||
        (cert && SSL_CTX_use_certificate_chain_file(cfg->ctx, cert) != 1) ||
        (key && SSL_CTX_use_PrivateKey_file(cfg->ctx, key, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "tls: cannot load %s%s%s: %s\n", ca, cert ? " or the client certificate/key" : "", "",
                ERR_reason_error_string(ERR_peek_last_error()));
        SSL_CTX_free(cfg->ctx);
        return 0;
    }
    return 1;
}

static am2z_result greet(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "greeting", am2z_value_stringf("hello over TLS, %s", am2z_value_get_string(in, "name", "?")));
    return am2z_edit_end(&e);
}

int main(void) {
    tls_config cfg;
    am2z_redis_transport transport;
    am2z_redis_desc rd;
    am2z_queue_desc qd;
    am2z_redis *r;
    am2z_reply reply = {0};
    am2z_runtime *rt;
    am2z_status st;
    am2z_state *in;
    am2z_outcome out;
    int ok;

    /* OpenSSL writes with write(2): a peer that closed would kill the process with
       SIGPIPE (am2z's own socket I/O asks the kernel not to raise it) */
    signal(SIGPIPE, SIG_IGN);
    if (!tls_config_init(&cfg)) return 1;
    memset(&transport, 0, sizeof transport);
    transport.open = tls_open;
    transport.read = tls_read;
    transport.write = tls_write;
    transport.close = tls_close;
    transport.user_data = &cfg;

    /* 1. a plain connection: the transport is one desc field */
    memset(&rd, 0, sizeof rd);
    rd.host = getenv("REDIS_HOST"); /* the queue runtime reads these by itself; a plain */
    rd.port = getenv("REDIS_PORT") ? atoi(getenv("REDIS_PORT")) : 0; /* connection does not */
    rd.transport = transport;
    rd.connect_timeout_ms = 3000;
    r = am2z_redis_new(&rd, &st);
    if (!r || (st = am2z_redis_connect(r)) != AM2Z_STATUS_OK ||
        (st = am2z_redis_command(r, &reply, "PING")) != AM2Z_STATUS_OK) {
        fprintf(stderr, "tls: connection failed: %s: %s\n", am2z_status_string(st), am2z_status_detail());
        am2z_redis_free(r);
        SSL_CTX_free(cfg.ctx);
        return 1;
    }
    printf("PING over TLS: %s\n", am2z_reply_str(&reply));
    am2z_reply_clear(&reply);
    am2z_redis_free(r);

    /* 2. the queue runtime over the same transport: workers and caller in this process */
    memset(&qd, 0, sizeof qd);
    qd.redis = rd;
    qd.concurrency = 2;
    rt = am2z_queue_runtime_new(&qd, &st);
    if (!rt || am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "greet_tls",
                                                                                   .fn = greet}, NULL))) {
        fprintf(stderr, "tls: queue runtime: %s\n", am2z_status_detail());
        am2z_runtime_free(rt);
        SSL_CTX_free(cfg.ctx);
        return 1;
    }
    in = am2z_state_parse("default", "{\"name\":\"am2z\"}", AM2Z_NTS, NULL);
    out = am2z_runtime_execute(rt, "greet_tls", in);
    ok = out.error == NULL;
    if (ok) printf("tls ok: %s (%.2f ms through Redis)\n", am2z_value_get_string(out.state, "greeting", ""), out.duration_ms);
    else fprintf(stderr, "tls: execute failed: %s\n", out.error->message);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    SSL_CTX_free(cfg.ctx);
    return ok ? 0 : 1;
}
