/*
 * conn: the client side of pulsec's stack for the load generator (see conn.h). Each connection
 * walks ST_TCP -> ST_HTTP -> ST_OPEN -> ST_CONNECT -> ST_ATTACH -> ST_READY, then ST_CLOSING
 * (graceful close sent, waiting for the server to close TCP) and ST_DEAD (uv_close called).
 * Anything unexpected before ST_READY or a server-side close after it ends the connection with
 * an lg_err that the scenario counts. The wslay context is freed only in the close callback, so
 * a hook may close its connection from inside wslay_event_recv().
 */
#include "conn.h"

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_TCP, ST_HTTP, ST_OPEN, ST_CONNECT, ST_ATTACH, ST_READY, ST_CLOSING, ST_DEAD };

#define MAX_HTTP_HEAD 8192

typedef struct outbuf {
    char *base;
    size_t len;
    size_t cap;
} outbuf;

typedef struct wreq {
    uv_write_t req;
    lg_conn *c;
    char data[]; /* the bytes being written */
} wreq;

struct lg_conn {
    uv_tcp_t tcp;                /* first: the handle's address is the connection's */
    uv_connect_t creq;           /* the TCP connect */
    lg_net *net;                 /* shared run state */
    void *data;                  /* the scenario's */
    int state;                   /* ST_* */
    lg_err why;                  /* reported by `closed` */
    wslay_event_context_ptr ws;  /* NULL until the 101 */
    const uint8_t *in;           /* bytes being fed to wslay */
    size_t inlen;                /* how many are left */
    outbuf http;                 /* the HTTP response head while in ST_HTTP */
    outbuf out;                  /* frames queued for the next write (plaintext with TLS) */
    SSL *ssl;                    /* with TLS */
    outbuf wire;                 /* with TLS: records waiting to be written */
    bool tls_ready;              /* the TLS handshake is done */
    bool writing;                /* a uv_write is in flight */
    bool dirty;                  /* on net->dirty */
    lg_conn *next_dirty;         /* link in net->dirty */
    lg_conn *prev, *next;        /* links in net->all */
    uint64_t started;            /* uv_hrtime() at lg_conn_start */
    char channel[LG_MAX_ID + 1]; /* from attach_ack props.channelId */
};

static const char *const err_names[] = {
#define XX(name, text) #name,
    LG_ERR_MAP(XX)
#undef XX
};
static const char *const err_texts[] = {
#define XX(name, text) text,
    LG_ERR_MAP(XX)
#undef XX
};

const char *lg_err_name(lg_err e)
{
    return e < LG_NERR ? err_names[e] : "?";
}

const char *lg_err_text(lg_err e)
{
    return e < LG_NERR ? err_texts[e] : "?";
}

/* ---- buffers --------------------------------------------------------------------------- */

static void out_append(outbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n)
            cap *= 2;
        b->base = realloc(b->base, cap);
        if (!b->base) {
            fprintf(stderr, "loadgen: out of memory\n");
            abort();
        }
        b->cap = cap;
    }
    memcpy(b->base + b->len, p, n);
    b->len += n;
}

static void out_free(outbuf *b)
{
    free(b->base);
    memset(b, 0, sizeof *b);
}

static uint64_t xorshift(lg_net *n)
{
    uint64_t x = n->mask_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return n->mask_state = x;
}

/* ---- closing --------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    lg_conn *c = (lg_conn *)h;
    lg_net *n = c->net;
    if (c->dirty) {
        /* Rare (closed after queuing in the same iteration): unlink by hand. */
        for (lg_conn **pp = &n->dirty; *pp; pp = &(*pp)->next_dirty)
            if (*pp == c) {
                *pp = c->next_dirty;
                break;
            }
    }
    if (c->ws)
        wslay_event_context_free(c->ws);
    if (c->ssl)
        SSL_free(c->ssl);
    out_free(&c->http);
    out_free(&c->out);
    out_free(&c->wire);
    if (c->prev)
        c->prev->next = c->next;
    else
        n->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    n->open--;
    n->hooks->closed(c, c->why);
    free(c);
}

/* Ends the connection now with `why` (kept if one was already recorded). */
static void end_conn(lg_conn *c, lg_err why, bool reset)
{
    if (c->state == ST_DEAD)
        return;
    if (c->why == LG_EOK)
        c->why = why;
    c->state = ST_DEAD;
    c->inlen = 0;
    if (!reset || uv_tcp_close_reset(&c->tcp, on_handle_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void fail(lg_conn *c, lg_err why)
{
    end_conn(c, why, true);
}

void lg_conn_close(lg_conn *c, bool graceful)
{
    if (c->state == ST_DEAD || c->state == ST_CLOSING)
        return;
    if (c->state != ST_READY || !graceful) {
        end_conn(c, c->state == ST_READY ? LG_EOK : LG_EABORTED, true);
        return;
    }
    wslay_event_queue_close(c->ws, 1000, NULL, 0);
    c->state = ST_CLOSING;
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = c->net->dirty;
        c->net->dirty = c;
    }
}

/* ---- writing --------------------------------------------------------------------------- */

static void mark_dirty(lg_conn *c)
{
    if (c->dirty || c->state == ST_DEAD)
        return;
    c->dirty = true;
    c->next_dirty = c->net->dirty;
    c->net->dirty = c;
}

static void flush(lg_conn *c);

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    lg_conn *c = w->c;
    free(w);
    c->writing = false;
    if (status < 0) {
        fail(c, LG_EIO);
        return;
    }
    flush(c);
}

/* Moves the records OpenSSL produced to the wire buffer. */
static void tls_drain(lg_conn *c)
{
    BIO *w = SSL_get_wbio(c->ssl);
    char tmp[16384];
    int n;
    while ((n = BIO_read(w, tmp, sizeof tmp)) > 0)
        out_append(&c->wire, tmp, (size_t)n);
}

static void flush(lg_conn *c)
{
    if (c->state == ST_DEAD)
        return;
    if (c->ws && wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) {
        fail(c, LG_EIO);
        return;
    }
    outbuf *src = &c->out;
    if (c->ssl) {
        if (c->tls_ready && c->out.len) {
            if (SSL_write(c->ssl, c->out.base, (int)c->out.len) <= 0) {
                fail(c, LG_EIO);
                return;
            }
            c->out.len = 0;
            tls_drain(c);
        }
        src = &c->wire;
    }
    if (c->writing || src->len == 0)
        return;
    uv_buf_t b = uv_buf_init(src->base, (unsigned)src->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN)
        n = 0;
    if (n < 0) {
        fail(c, LG_EIO);
        return;
    }
    size_t rest = src->len - (size_t)n;
    if (rest > 0) {
        wreq *w = malloc(sizeof *w + rest);
        if (!w)
            abort();
        w->c = c;
        memcpy(w->data, src->base + n, rest);
        b = uv_buf_init(w->data, (unsigned)rest);
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
            free(w);
            fail(c, LG_EIO);
            return;
        }
        c->writing = true;
    }
    src->len = 0;
}

static void on_check(uv_check_t *h)
{
    lg_net *n = h->data;
    while (n->dirty) {
        lg_conn *c = n->dirty;
        n->dirty = c->next_dirty;
        c->dirty = false;
        flush(c);
    }
}

static int queue_text(lg_conn *c, const char *text, size_t len)
{
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (wslay_event_queue_msg(c->ws, &m) != 0)
        return -1;
    mark_dirty(c);
    return 0;
}

int lg_conn_send(lg_conn *c, const char *text, size_t len)
{
    if (c->state != ST_READY)
        return -1;
    return queue_text(c, text, len);
}

/* ---- Engine.IO / Socket.IO ------------------------------------------------------------- */

static void send_attach(lg_conn *c)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "42[\"message\",{\"type\":\"attach\",\"path\":\"%s\",\"attachId\":\"a1\","
                     "\"props\":{}}]",
                     c->net->view_path);
    queue_text(c, msg, (size_t)n);
}

/* The reply to our attach: ["message",{"type":"attach_ack","attachId":"a1","props":{...}}]. */
static void on_attach_reply(lg_conn *c, const char *json, size_t len)
{
    json_t *root = json_loadb(json, len, 0, NULL);
    json_t *msg = json_array_get(root, 1);
    const char *type = json_string_value(json_object_get(msg, "type"));
    const char *id = json_string_value(json_object_get(json_object_get(msg, "props"), "channelId"));
    if (type && strcmp(type, "attach_ack") == 0 && id && strlen(id) <= LG_MAX_ID) {
        strcpy(c->channel, id);
        c->state = ST_READY;
        json_decref(root);
        c->net->hooks->ready(c);
        return;
    }
    json_decref(root);
    fail(c, type && strcmp(type, "attach_error") == 0 ? LG_EREFUSED : LG_EPROTO);
}

static void on_socketio(lg_conn *c, const char *s, size_t n)
{
    switch (n ? s[0] : 0) {
    case '0': /* CONNECT ok on "/" */
        if (c->state != ST_CONNECT) {
            fail(c, LG_EPROTO);
            return;
        }
        c->state = ST_ATTACH;
        send_attach(c);
        return;
    case '2': /* EVENT */
        if (c->state == ST_READY)
            c->net->hooks->message(c, s + 1, n - 1);
        else if (c->state == ST_ATTACH)
            on_attach_reply(c, s + 1, n - 1);
        return;
    case '3': /* ACK: we never ask for one */ return;
    case '4': /* CONNECT_ERROR */
    {
        fail(c, LG_EREFUSED);
        return;
    }
    case '1': /* DISCONNECT */
    {
        fail(c, c->state == ST_CLOSING ? LG_EOK : LG_ECLOSED);
        return;
    }
    default: {
        fail(c, LG_EPROTO);
        return;
    }
    }
}

static void on_engineio(lg_conn *c, const char *s, size_t n)
{
    switch (n ? s[0] : 0) {
    case '0': /* open */
        if (c->state != ST_OPEN) {
            fail(c, LG_EPROTO);
            return;
        }
        c->state = ST_CONNECT;
        queue_text(c, "40", 2);
        return;
    case '2': /* ping */ queue_text(c, "3", 1); return;
    case '4': on_socketio(c, s + 1, n - 1); return;
    case '6': /* noop */ return;
    case '1': /* close */
    {
        fail(c, c->state == ST_CLOSING ? LG_EOK : LG_ECLOSED);
        return;
    }
    default: {
        fail(c, LG_EPROTO);
        return;
    }
    }
}

/* ---- wslay callbacks ------------------------------------------------------------------- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    lg_conn *c = user;
    if (c->inlen == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = c->inlen < len ? c->inlen : len;
    memcpy(buf, c->in, n);
    c->in += n;
    c->inlen -= n;
    return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    lg_conn *c = user;
    out_append(&c->out, data, len);
    return (ssize_t)len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    lg_conn *c = user;
    while (len > 0) {
        uint64_t x = xorshift(c->net);
        size_t k = len < sizeof x ? len : sizeof x;
        memcpy(buf, &x, k);
        buf += k;
        len -= k;
    }
    return 0;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    lg_conn *c = user;
    if (c->state == ST_DEAD)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        on_engineio(c, (const char *)arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        /* wslay queues the close reply; we wait for the server to close TCP. */
        if (c->state != ST_CLOSING)
            c->why = LG_ECLOSED;
        c->state = ST_CLOSING;
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        fail(c, LG_EPROTO);
    }
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv,
    .send_callback = ws_send,
    .genmask_callback = ws_genmask,
    .on_msg_recv_callback = ws_on_msg,
};

/* ---- reading --------------------------------------------------------------------------- */

static void feed(lg_conn *c, const char *p, size_t n)
{
    c->in = (const uint8_t *)p;
    c->inlen = n;
    if (wslay_event_recv(c->ws) != 0)
        fail(c, LG_EPROTO);
    c->inlen = 0;
    if (c->state != ST_DEAD && wslay_event_want_write(c->ws))
        mark_dirty(c);
}

/* Collects the response head; on "101" switches to WebSocket and feeds what follows it. */
static void on_http(lg_conn *c, const char *p, size_t n)
{
    out_append(&c->http, p, n);
    char *end = memmem(c->http.base, c->http.len, "\r\n\r\n", 4);
    if (!end) {
        if (c->http.len > MAX_HTTP_HEAD)
            fail(c, LG_EHTTP);
        return;
    }
    if (c->http.len < 12 || memcmp(c->http.base, "HTTP/1.1 101", 12) != 0) {
        fail(c, LG_EHTTP);
        return;
    }
    if (wslay_event_context_client_init(&c->ws, &ws_callbacks, c) != 0)
        abort();
    c->state = ST_OPEN;
    size_t head = (size_t)(end + 4 - c->http.base);
    outbuf rest = c->http;
    memset(&c->http, 0, sizeof c->http);
    if (rest.len > head)
        feed(c, rest.base + head, rest.len - head);
    out_free(&rest);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    lg_conn *c = (lg_conn *)h;
    *buf = uv_buf_init(c->net->readbuf, sizeof c->net->readbuf);
}

static void on_plain(lg_conn *c, const char *p, size_t n)
{
    if (c->state == ST_HTTP)
        on_http(c, p, n);
    else
        feed(c, p, n);
}

/* Raw bytes of a TLS connection: the handshake first, then records decrypted one by one. */
static void on_tls(lg_conn *c, const char *p, size_t n)
{
    BIO_write(SSL_get_rbio(c->ssl), p, (int)n);
    if (!c->tls_ready) {
        int r = SSL_do_handshake(c->ssl);
        tls_drain(c);
        mark_dirty(c);
        if (r != 1) {
            if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                fail(c, LG_EIO);
            }
            return;
        }
        c->tls_ready = true; /* the upgrade request waits in `out` for the next flush */
    }
    for (;;) {
        int r = SSL_read(c->ssl, c->net->plain, sizeof c->net->plain);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                end_conn(c, c->state == ST_CLOSING ? LG_EOK : LG_ECLOSED, false);
            }
            break;
        }
        on_plain(c, c->net->plain, (size_t)r);
        if (c->state == ST_DEAD)
            return;
    }
    if (BIO_ctrl_pending(SSL_get_wbio(c->ssl))) {
        tls_drain(c);
        mark_dirty(c);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    lg_conn *c = (lg_conn *)s;
    if (nread == 0 || c->state == ST_DEAD)
        return;
    if (nread < 0) {
        if (c->state == ST_CLOSING && c->why == LG_EOK)
            end_conn(c, LG_EOK, false);
        else
            end_conn(c, c->state == ST_READY || c->state == ST_CLOSING ? LG_ECLOSED : LG_EIO,
                     false);
        return;
    }
    if (c->ssl)
        on_tls(c, buf->base, (size_t)nread);
    else
        on_plain(c, buf->base, (size_t)nread);
}

static void on_connect(uv_connect_t *req, int status)
{
    lg_conn *c = req->data;
    if (c->state == ST_DEAD)
        return;
    if (status < 0) {
        end_conn(c, LG_ECONNECT, false);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uint8_t key[16];
    char key64[32];
    for (int i = 0; i < 16; i += 8) {
        uint64_t x = xorshift(c->net);
        memcpy(key + i, &x, 8);
    }
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t k = 0;
    for (int i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)key[i] << 16 | (uint32_t)key[i + 1] << 8 | key[i + 2];
        key64[k++] = b64[v >> 18 & 63];
        key64[k++] = b64[v >> 12 & 63];
        key64[k++] = b64[v >> 6 & 63];
        key64[k++] = b64[v & 63];
    }
    key64[k++] = b64[key[15] >> 2];
    key64[k++] = b64[(key[15] & 3) << 4];
    key64[k++] = '=';
    key64[k++] = '=';
    key64[k] = '\0';
    char req_text[1024];
    int n = snprintf(req_text, sizeof req_text,
                     "GET %s?EIO=4&transport=websocket HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     c->net->sio_path, c->net->host, key64);
    out_append(&c->out, req_text, (size_t)n);
    c->state = ST_HTTP;
    if (c->net->tls) {
        c->ssl = SSL_new(c->net->tls);
        SSL_set_bio(c->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(c->ssl);
        SSL_do_handshake(c->ssl); /* the ClientHello */
        tls_drain(c);
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        fail(c, LG_EIO);
        return;
    }
    mark_dirty(c);
}

/* ---- public ---------------------------------------------------------------------------- */

lg_conn *lg_conn_start(lg_net *n, void *data)
{
    lg_conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->net = n;
    c->data = data;
    c->state = ST_TCP;
    c->started = uv_hrtime();
    uv_tcp_init(n->loop, &c->tcp);
    c->next = n->all;
    if (n->all)
        n->all->prev = c;
    n->all = c;
    n->open++;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&n->addr, on_connect);
    if (rc != 0)
        end_conn(c, LG_ECONNECT, false);
    return c;
}

void *lg_conn_data(const lg_conn *c)
{
    return c->data;
}

void lg_conn_set_data(lg_conn *c, void *data)
{
    c->data = data;
}

void lg_net_abort_all(lg_net *n)
{
    for (lg_conn *c = n->all; c; c = c->next)
        end_conn(c, c->state == ST_READY || c->state == ST_CLOSING ? LG_EOK : LG_EABORTED, true);
}

const char *lg_conn_channel(const lg_conn *c)
{
    return c->channel;
}

uint64_t lg_conn_started(const lg_conn *c)
{
    return c->started;
}

bool lg_conn_ready(const lg_conn *c)
{
    return c->state == ST_READY;
}

int lg_net_init(lg_net *n, uv_loop_t *loop, const char *host, int port, const char *sio_path,
                const char *view_path, const lg_hooks *hooks)
{
    memset(n, 0, sizeof *n);
    n->loop = loop;
    n->hooks = hooks;
    n->mask_state = uv_hrtime() | 1;
    int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&n->addr);
    if (rc != 0 && (rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&n->addr)) != 0)
        return rc;
    snprintf(n->host, sizeof n->host, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    size_t len = strlen(sio_path);
    snprintf(n->sio_path, sizeof n->sio_path, "%s%s", sio_path,
             len && sio_path[len - 1] == '/' ? "" : "/");
    snprintf(n->view_path, sizeof n->view_path, "%s", view_path);
    uv_check_init(loop, &n->flusher);
    n->flusher.data = n;
    uv_check_start(&n->flusher, on_check);
    uv_unref((uv_handle_t *)&n->flusher);
    return 0;
}

void lg_net_close(lg_net *n)
{
    uv_close((uv_handle_t *)&n->flusher, NULL);
    SSL_CTX_free(n->tls);
    n->tls = NULL;
}

int lg_net_use_tls(lg_net *n)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return -1;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    n->tls = ctx;
    return 0;
}
