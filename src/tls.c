/*
 * tls: one ps__tls per server (its SSL_CTX, reloadable), one ps__tls_conn per connection (its
 * SSL, installed as the connection's net filter).
 *
 * The BIO is our own, not a socket BIO and not BIO_s_mem: reads are served straight from the
 * bytes of the current libuv read (`in`), so no connection keeps an input buffer, and writes go
 * into one buffer per server that is flushed to the connection's socket right after the OpenSSL
 * call that filled it, before anything else runs; so the buffer is always empty between calls
 * and no connection keeps an output buffer either. With SSL_MODE_RELEASE_BUFFERS OpenSSL frees
 * its own record buffers while a connection is idle, which leaves an idle TLS connection with
 * its SSL object and cipher state (docs/SECURITY.md gives the measured cost).
 *
 * Plaintext goes up through ps__conn_deliver, one record at a time, from a buffer of the server;
 * a pause or throttle of the connection stops that, keeping what was not yet decrypted (a copy)
 * for ps__conn_resume. Plaintext written before the handshake has completed waits in `early`.
 * Failures (garbage, a ClientHello that never completes, plain HTTP on the TLS port) send
 * OpenSSL's alert, or a plain 400 for plain HTTP, and end the connection as a peer that went
 * away would: the owner's on_eof.
 */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>

#define PLAIN_CHUNK 16384 /* the largest TLS record's plaintext */

struct ps__tls {
    uv_loop_t *loop;
    SSL_CTX *ctx;
    char *cert_file;
    char *key_file;
    uint32_t handshake_timeout_ms;
    ps__buf out; /* records of the OpenSSL call under way; empty between calls */
    ps__tls_stats stats;
    char plain[PLAIN_CHUNK];
};

typedef struct ps__tls_conn {
    ps__conn_filter base; /* must stay first: net hands this pointer back */
    ps__tls *tls;
    ps__conn *conn;
    SSL *ssl;
    const char *in; /* raw input the BIO offers OpenSSL, during a call */
    size_t in_len;
    ps__buf held;  /* raw input left when reading paused */
    ps__buf early; /* plaintext written before the handshake completed */
    ps__timer *handshake_timer;
    bool established; /* handshake complete */
    bool failed;      /* a fatal error: nothing more is read, written or shut down */
    bool in_read;     /* inside on_read: a nested resume must not re-enter */
    bool seen_input;  /* the first bytes have arrived */
    bool plain_http;  /* and they were the start of an HTTP request */
} ps__tls_conn;

static const char *const TLS12_CIPHERS =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* ---- the BIO --------------------------------------------------------------------------- */

static int bio_write(BIO *b, const char *data, int len)
{
    ps__tls_conn *tc = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ps__buf_append(&tc->tls->out, data, (size_t)len);
    return len;
}

static int bio_read(BIO *b, char *buf, int len)
{
    ps__tls_conn *tc = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (tc->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = (size_t)len < tc->in_len ? (size_t)len : tc->in_len;
    memcpy(buf, tc->in, n);
    tc->in += n;
    tc->in_len -= n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    /* Flushing happens after every OpenSSL call; nothing else is asked of a plain pipe. */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method(void)
{
    /* Made once and never freed: it is a table, like the static ones OpenSSL ships. */
    static BIO_METHOD *m;
    if (!m) {
        m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pulsec conn");
        BIO_meth_set_write(m, bio_write);
        BIO_meth_set_read(m, bio_read);
        BIO_meth_set_ctrl(m, bio_ctrl);
        BIO_meth_set_create(m, bio_create);
    }
    return m;
}

/* Writes what the last OpenSSL call produced. */
static void flush(ps__tls_conn *tc)
{
    ps__buf *out = &tc->tls->out;
    if (out->len && !tc->conn->closing)
        ps__conn_write_raw(tc->conn, out->base, out->len);
    ps__buf_reset(out);
    if (out->cap > 64 * 1024)
        ps__buf_free(out); /* one large message must not pin its records' size */
}

/* ---- context --------------------------------------------------------------------------- */

static void openssl_reason(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, errlen, "%s %s: %s", what, file ? file : "", reason ? reason : "failed");
    ERR_clear_error();
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 §3.2: no_application_protocol */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(err, errlen, "TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    /* Record buffers only while a record is in flight: an idle connection keeps none. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Resumption through stateless tickets only: a server-side cache grows with clients. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        openssl_reason(err, errlen, "certificate", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        openssl_reason(err, errlen, "private key", key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(err, errlen, "private key", key_file);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

ps__tls *ps__tls_new(uv_loop_t *loop, const char *cert_file, const char *key_file,
                     uint32_t handshake_timeout_ms, char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_new(cert_file, key_file, err, errlen);
    if (!ctx)
        return NULL;
    ps__tls *t = ps__calloc(1, sizeof *t);
    t->loop = loop;
    t->ctx = ctx;
    t->cert_file = ps__strdup(cert_file);
    t->key_file = ps__strdup(key_file);
    t->handshake_timeout_ms = handshake_timeout_ms;
    return t;
}

void ps__tls_set_loop(ps__tls *t, uv_loop_t *loop)
{
    t->loop = loop;
}

/*
 * Each connection holds a reference on the SSL_CTX it started with (OpenSSL's own, through its
 * SSL), so the server's may go at any time; the ps__tls itself must outlive its connections,
 * which the server guarantees by freeing it after its loop has closed every connection.
 */
void ps__tls_free(ps__tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    ps__buf_free(&t->out);
    ps__free(t->cert_file);
    ps__free(t->key_file);
    ps__free(t);
}

int ps__tls_reload(ps__tls *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_new(t->cert_file, t->key_file, err, errlen);
    if (!ctx)
        return -1;
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    t->stats.reloads++;
    return 0;
}

const ps__tls_stats *ps__tls_get_stats(const ps__tls *t)
{
    return &t->stats;
}

/* ---- a connection ---------------------------------------------------------------------- */

static void tls_on_read(ps__conn *c, const char *data, size_t len);
static int tls_writev(ps__conn *c, const uv_buf_t *bufs, size_t n);
static void tls_on_resume(ps__conn *c);
static void tls_on_close(ps__conn *c);
static void tls_free(ps__conn *c);
static const ps__conn_filter_ops tls_ops = {tls_on_read, tls_writev, tls_on_resume, tls_on_close,
                                            tls_free};

static void stop_handshake_timer(ps__tls_conn *tc)
{
    ps__timer_free(tc->handshake_timer);
    tc->handshake_timer = NULL;
}

/* The start of a request line: what a browser or curl sends to an https port by mistake. */
static bool looks_like_http(const char *p, size_t n)
{
    static const char *const methods[] = {"GET ",     "POST ",   "HEAD ",  "PUT ",
                                          "OPTIONS ", "DELETE ", "PATCH ", "CONNECT "};
    for (size_t i = 0; i < PS__ARRAY_SIZE(methods); i++) {
        size_t m = strlen(methods[i]);
        if (n >= m && memcmp(p, methods[i], m) == 0)
            return true;
    }
    return false;
}

/* A fatal error: OpenSSL's alert (if any) goes out, then the owner hears of a gone peer. */
static void fail(ps__tls_conn *tc, const char *why)
{
    if (tc->failed)
        return;
    tc->failed = true;
    if (!tc->established)
        tc->tls->stats.failures++;
    unsigned long e = ERR_peek_last_error();
    PS__DEBUG("tls %s: %s%s%s", tc->conn->peer, why, e ? ": " : "",
              e ? ERR_reason_error_string(e) : "");
    ERR_clear_error();
    stop_handshake_timer(tc);
    flush(tc);
    ps__conn_deliver_eof(tc->conn);
}

static void handshake_expired(ps__timer *t, void *data)
{
    ps__tls_conn *tc = data;
    tc->handshake_timer = NULL;
    ps__timer_free(t);
    if (tc->failed || tc->conn->closing)
        return;
    tc->failed = true;
    tc->tls->stats.failures++;
    PS__DEBUG("tls %s: handshake timeout", tc->conn->peer);
    /* A peer that stalls its handshake is not reading our alert either. */
    ps__conn_abort(tc->conn);
}

/* Encrypts and writes plaintext. Returns 0 or UV_EPIPE. */
static int write_plain(ps__tls_conn *tc, const char *data, size_t len)
{
    while (len > 0) {
        size_t done = 0;
        ERR_clear_error();
        if (SSL_write_ex(tc->ssl, data, len, &done) != 1) {
            fail(tc, "write");
            return UV_EPIPE;
        }
        flush(tc);
        data += done;
        len -= done;
    }
    return 0;
}

static void established(ps__tls_conn *tc)
{
    tc->established = true;
    tc->tls->stats.handshakes++;
    stop_handshake_timer(tc);
    if (tc->early.len) {
        ps__buf early = tc->early;
        ps__buf_init(&tc->early);
        write_plain(tc, early.base, early.len);
        ps__buf_free(&early);
    }
}

static bool may_deliver(const ps__tls_conn *tc)
{
    const ps__conn *c = tc->conn;
    return !tc->failed && !c->closing && !c->paused && !c->throttled;
}

/* Handshakes and decrypts as far as the input and the owner allow. */
static void process(ps__tls_conn *tc)
{
    if (!tc->established) {
        ERR_clear_error();
        int r = SSL_do_handshake(tc->ssl);
        if (r != 1) {
            int err = SSL_get_error(tc->ssl, r);
            if (err == SSL_ERROR_WANT_READ) {
                flush(tc);
                return;
            }
            if (tc->plain_http || ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_HTTP_REQUEST) {
                /* Someone typed http:// for an https:// port: tell them in their language. */
                ERR_clear_error();
                tc->failed = true;
                tc->tls->stats.failures++;
                stop_handshake_timer(tc);
                static const char answer[] =
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: 45\r\nConnection: close\r\n\r\n"
                    "400 Bad Request: this port speaks HTTPS only\n";
                ps__conn_write_raw(tc->conn, answer, sizeof answer - 1);
                ps__conn_deliver_eof(tc->conn);
                return;
            }
            fail(tc, "handshake");
            return;
        }
        flush(tc);
        established(tc);
    }
    while (may_deliver(tc)) {
        size_t got = 0;
        ERR_clear_error();
        if (SSL_read_ex(tc->ssl, tc->tls->plain, sizeof tc->tls->plain, &got) == 1) {
            flush(tc); /* a KeyUpdate's answer, say */
            ps__conn_deliver(tc->conn, tc->tls->plain, got);
            continue;
        }
        int err = SSL_get_error(tc->ssl, 0);
        flush(tc);
        if (err == SSL_ERROR_WANT_READ)
            return;
        if (err == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: the peer is done sending, as an EOF would say. */
            ps__conn_deliver_eof(tc->conn);
            return;
        }
        fail(tc, "read");
        return;
    }
}

/* Offers raw bytes to OpenSSL; keeps (copies) what it has not taken when delivery stopped. */
static void feed(ps__tls_conn *tc, const char *data, size_t len)
{
    tc->in = data;
    tc->in_len = len;
    tc->in_read = true;
    process(tc);
    tc->in_read = false;
    if (tc->in_len && !tc->failed && !tc->conn->closing)
        ps__buf_append(&tc->held, tc->in, tc->in_len);
    tc->in = NULL;
    tc->in_len = 0;
}

static void tls_on_read(ps__conn *c, const char *data, size_t len)
{
    ps__tls_conn *tc = (ps__tls_conn *)c->filter;
    if (tc->failed)
        return;
    if (tc->held.len) {
        /* Behind input kept from before a pause: in order. */
        ps__buf_append(&tc->held, data, len);
        tls_on_resume(c);
        return;
    }
    if (!tc->seen_input) {
        tc->seen_input = true;
        tc->plain_http = looks_like_http(data, len);
    }
    feed(tc, data, len);
}

static void tls_on_resume(ps__conn *c)
{
    ps__tls_conn *tc = (ps__tls_conn *)c->filter;
    if (tc->in_read || tc->failed)
        return;
    /* Records OpenSSL already holds come first, then what was kept. */
    ps__buf held = tc->held;
    ps__buf_init(&tc->held);
    feed(tc, held.base ? held.base : "", held.len);
    ps__buf_free(&held);
}

static int tls_writev(ps__conn *c, const uv_buf_t *bufs, size_t n)
{
    ps__tls_conn *tc = (ps__tls_conn *)c->filter;
    if (tc->failed || c->closing)
        return UV_EPIPE;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].len;
    if (!tc->established) {
        for (size_t i = 0; i < n; i++)
            ps__buf_append(&tc->early, bufs[i].base, bufs[i].len);
        return 0;
    }
    if (n == 1 || total > PLAIN_CHUNK) {
        for (size_t i = 0; i < n; i++)
            if (bufs[i].len && write_plain(tc, bufs[i].base, bufs[i].len) != 0)
                return UV_EPIPE;
        return 0;
    }
    /* A frame header and its payload, a response head and its body: one record, not two. */
    char joined[PLAIN_CHUNK];
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(joined + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    return write_plain(tc, joined, off);
}

static void tls_on_close(ps__conn *c)
{
    ps__tls_conn *tc = (ps__tls_conn *)c->filter;
    if (tc->failed || !tc->established)
        return;
    /* close_notify before our FIN, so the peer can tell an end from a truncation. */
    ERR_clear_error();
    SSL_shutdown(tc->ssl);
    ERR_clear_error();
    flush(tc);
}

static void tls_free(ps__conn *c)
{
    ps__tls_conn *tc = (ps__tls_conn *)c->filter;
    c->filter = NULL;
    stop_handshake_timer(tc);
    SSL_free(tc->ssl);
    ps__buf_free(&tc->held);
    ps__buf_free(&tc->early);
    ps__free(tc);
}

void ps__tls_attach(ps__tls *t, ps__conn *c)
{
    ps__tls_conn *tc = ps__calloc(1, sizeof *tc);
    tc->base.ops = &tls_ops;
    tc->tls = t;
    tc->conn = c;
    tc->ssl = SSL_new(t->ctx);
    BIO *bio = BIO_new(bio_method());
    BIO_set_data(bio, tc);
    SSL_set_bio(tc->ssl, bio, bio); /* one reference for both directions */
    SSL_set_accept_state(tc->ssl);
    if (t->handshake_timeout_ms) {
        tc->handshake_timer = ps__timer_new(t->loop, handshake_expired, tc);
        ps__timer_start(tc->handshake_timer, t->handshake_timeout_ms);
    }
    c->filter = &tc->base;
}

bool ps__tls_conn_secure(const ps__conn *c)
{
    return c->filter && c->filter->ops == &tls_ops;
}
