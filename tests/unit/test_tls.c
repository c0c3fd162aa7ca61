/*
 * tls: the context (PEM files loaded, refused with a reason, reloaded without losing the old one
 * on failure) and a real server on a socket behind it, driven by OpenSSL's own client with
 * blocking I/O: a verified handshake, HTTP over it, close_notify, and bad input (plain HTTP,
 * garbage) counted as failures. The certificates are minted here with OpenSSL into a temporary
 * directory.
 */
#include "client.h"
#include "tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct minted {
    char dir[64];
    char cert[96];
    char key[96];
} minted;

/* A self-signed P-256 certificate for 127.0.0.1, valid for a day. */
static void mint(minted *m, const char *dir, const char *name)
{
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    snprintf(m->cert, sizeof m->cert, "%s/%s.pem", dir, name);
    snprintf(m->key, sizeof m->key, "%s/%s.key", dir, name);
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    ASSERT_NOT_NULL(pk);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(uintptr_t)m % 100000 + 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
    X509_add_ext(x, san, -1);
    X509_EXTENSION_free(san);
    ASSERT(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE *f = fopen(m->cert, "w");
    ASSERT_NOT_NULL(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(m->key, "w");
    ASSERT_NOT_NULL(f);
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static void tmpdir(char out[64])
{
    snprintf(out, 64, "/tmp/pulsec-tls-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(out));
}

static void rmdir_minted(const char *dir, const char *const *names, size_t n)
{
    char p[128];
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

TEST_IMPL(tls_context)
{
    char dir[64];
    tmpdir(dir);
    minted a, b;
    mint(&a, dir, "a");
    mint(&b, dir, "b");
    char err[256];
    ps__tls *t = ps__tls_new(NULL, a.cert, a.key, 1000, err, sizeof err);
    ASSERT_NOT_NULL(t);
    /* A key of another certificate, a missing file, a file that is not PEM: refused, saying
     * which file and why. */
    ASSERT_NULL(ps__tls_new(NULL, a.cert, b.key, 1000, err, sizeof err));
    ASSERT(strstr(err, "private key") != NULL);
    ASSERT_NULL(ps__tls_new(NULL, "/nonexistent/cert.pem", a.key, 1000, err, sizeof err));
    ASSERT(strstr(err, "certificate /nonexistent/cert.pem") != NULL);
    ASSERT_NULL(ps__tls_new(NULL, a.key, a.key, 1000, err, sizeof err));
    ASSERT(strstr(err, "certificate") != NULL);
    /* Reload: the same names, new contents. A failed reload keeps the old context. */
    ASSERT_EQ(ps__tls_reload(t, err, sizeof err), 0);
    ASSERT_EQ(ps__tls_get_stats(t)->reloads, 1);
    FILE *f = fopen(a.cert, "w");
    fputs("garbage\n", f);
    fclose(f);
    ASSERT_EQ(ps__tls_reload(t, err, sizeof err), -1);
    ASSERT_EQ(ps__tls_get_stats(t)->reloads, 1);
    ps__tls_free(t);
    ps__tls_free(NULL);
    /* Through the public options: both files or neither. */
    ps_server_opts half = {.tls_cert_file = b.cert};
    ASSERT_NULL(ps_server_new(NULL, &half));
    ps_server_opts bad = {.tls_cert_file = b.cert, .tls_key_file = "/nonexistent/key.pem"};
    ASSERT_NULL(ps_server_new(NULL, &bad));
    ps_server *plain = ps_server_new(NULL, NULL);
    ASSERT_EQ(ps_server_reload_tls(plain), PS_EINVAL);
    ps_server_free(plain);
    static const char *const names[] = {"a.pem", "a.key", "b.pem", "b.key"};
    rmdir_minted(dir, names, 4);
    ERR_clear_error();
    return 0;
}

/* ---- a TLS server on a socket ---------------------------------------------------------- */

static int tcp_connect(int port)
{
    tc *c = tc_connect(port);
    int fd = dup(c->fd);
    tc_free(c);
    return fd;
}

/* Reads until EOF (or a reset); returns what arrived. */
static size_t read_to_end(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

static void tls_client(ts *t)
{
    minted *m = t->user;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    ASSERT_EQ(SSL_CTX_load_verify_locations(ctx, m->cert, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = "\x02h2\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);

    /* A verified handshake, then keep-alive HTTP inside it. */
    int fd = tcp_connect(t->port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set1_host(ssl, "127.0.0.1");
    ASSERT_EQ(SSL_connect(ssl), 1);
    ASSERT_EQ(SSL_get_verify_result(ssl), X509_V_OK);
    const unsigned char *proto;
    unsigned plen;
    SSL_get0_alpn_selected(ssl, &proto, &plen);
    ASSERT_EQ(plen, 8);
    ASSERT_EQ(memcmp(proto, "http/1.1", 8), 0);
    for (int i = 0; i < 2; i++) {
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        ASSERT_EQ(SSL_write(ssl, req, sizeof req - 1), (int)sizeof req - 1);
        char buf[1024] = "";
        size_t got = 0;
        while (!strstr(buf, "{\"status\":\"ok\"}")) {
            int n = SSL_read(ssl, buf + got, (int)(sizeof buf - 1 - got));
            ASSERT_GT(n, 0);
            got += (size_t)n;
            buf[got] = '\0';
        }
        ASSERT_EQ(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    }
    /* Our close_notify: the server answers with its own and closes. */
    SSL_shutdown(ssl);
    char rest[64];
    ASSERT_LE(SSL_read(ssl, rest, sizeof rest), 0);
    ASSERT_EQ(SSL_get_error(ssl, 0), SSL_ERROR_ZERO_RETURN);
    SSL_free(ssl);
    close(fd);

    /* Plain HTTP on the TLS port: a plain 400, then the end. */
    fd = tcp_connect(t->port);
    static const char plain[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(send(fd, plain, sizeof plain - 1, 0), (ssize_t)sizeof plain - 1);
    char buf[512];
    read_to_end(fd, buf, sizeof buf);
    ASSERT_EQ(strncmp(buf, "HTTP/1.1 400 Bad Request\r\n", 26), 0);
    ASSERT(strstr(buf, "HTTPS only") != NULL);
    close(fd);

    /* Garbage: at most an alert record, then the end. */
    fd = tcp_connect(t->port);
    static const char junk[] = "\x16\x03\x01\x00\x04zzzz";
    ASSERT_EQ(send(fd, junk, sizeof junk - 1, 0), (ssize_t)sizeof junk - 1);
    size_t n = read_to_end(fd, buf, sizeof buf);
    ASSERT(n == 0 || (uint8_t)buf[0] == 0x15);
    close(fd);

    ps_server_stats st;
    ts_stats(t, &st);
    ASSERT_EQ(st.tls_handshakes, 1);
    ASSERT_EQ(st.tls_failures, 2);
    SSL_CTX_free(ctx);
    ts_stop(t);
}

TEST_IMPL(tls_server)
{
    char dir[64];
    tmpdir(dir);
    minted m;
    mint(&m, dir, "server");
    ps_server_opts o = {.tls_cert_file = m.cert, .tls_key_file = m.key};
    ts_run(&o, NULL, tls_client, &m);
    static const char *const names[] = {"server.pem", "server.key"};
    rmdir_minted(dir, names, 2);
    return 0;
}
