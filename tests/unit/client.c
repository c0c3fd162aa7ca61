/*
 * client: the harness and the blocking HTTP / WebSocket client of the integration tests (see
 * client.h). The client side never uses libuv or the server's internals beyond ps__buf and the
 * accept-key function, so what it checks is what travels on the wire.
 */
#include "client.h"

#include "websocket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

/* ---- harness --------------------------------------------------------------------------- */

static void client_main(void *arg)
{
    ts *t = arg;
    t->client(t);
}

void ts_run(const ps_server_opts *opts, ts_fn setup, ts_fn client, void *user)
{
    ts t;
    memset(&t, 0, sizeof t);
    ps_server_opts none = {0};
    t.opts = opts ? *opts : none;
    t.client = client;
    t.user = user;
    ASSERT_EQ(uv_loop_init(&t.loop), 0);
    t.srv = ps_server_new(&t.loop, &t.opts);
    ASSERT_NOT_NULL(t.srv);
    ASSERT_EQ(ps_server_port(t.srv), -1);
    ASSERT(ps_server_loop(t.srv) == &t.loop);
    if (setup)
        setup(&t);
    ASSERT_EQ(ps_server_listen(t.srv), 0);
    ASSERT_EQ(ps_server_listen(t.srv), 0); /* idempotent */
    t.port = ps_server_port(t.srv);
    ASSERT_GT(t.port, 0);
    ASSERT_EQ(uv_thread_create(&t.thread, client_main, &t), 0);
    ASSERT_EQ(ps_server_run(t.srv), 0);
    ASSERT_EQ(uv_thread_join(&t.thread), 0);
    ps_server_free(t.srv);
    PS_ASSERT_LOOP_CLEAN(&t.loop);
}

static void on_stop(ps_server *srv, void *arg)
{
    ps_server_stop(srv);
}

void ts_stop(ts *t)
{
    ASSERT_EQ(ps_server_post(t->srv, on_stop, NULL), 0);
}

typedef struct on_loop_call {
    ts *t;
    ts_fn fn;
    uv_sem_t done;
} on_loop_call;

static void run_on_loop(ps_server *srv, void *arg)
{
    on_loop_call *call = arg;
    call->fn(call->t);
    uv_sem_post(&call->done);
}

void ts_on_loop(ts *t, ts_fn fn)
{
    on_loop_call call = {.t = t, .fn = fn};
    ASSERT_EQ(uv_sem_init(&call.done, 0), 0);
    ASSERT_EQ(ps_server_post(t->srv, run_on_loop, &call), 0);
    uv_sem_wait(&call.done);
    uv_sem_destroy(&call.done);
}

static ps_server_stats *stats_out;

static void read_stats(ts *t)
{
    ps_server_get_stats(t->srv, stats_out);
}

void ts_stats(ts *t, ps_server_stats *out)
{
    stats_out = out;
    ts_on_loop(t, read_stats);
}

/* ---- TCP ------------------------------------------------------------------------------- */

tc *tc_connect(int port)
{
    tc *c = ps__calloc(1, sizeof *c);
    ps__buf_init(&c->in);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(c->fd, 0);
    struct timeval tv = {.tv_sec = 5};
    ASSERT_EQ(setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    ASSERT_EQ(setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    int one = 1;
    ASSERT_EQ(setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        ps_test_fail(__FILE__, __LINE__, "connect to port %d: %s", port, strerror(errno));
    return c;
}

void tc_close(tc *c, bool reset)
{
    if (c->fd < 0)
        return;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    c->fd = -1;
}

void tc_free(tc *c)
{
    tc_close(c, false);
    ps__buf_free(&c->in);
    ps__free(c);
}

void tc_send(tc *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            ps_test_fail(__FILE__, __LINE__, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

void tc_sends(tc *c, const char *s)
{
    tc_send(c, s, strlen(s));
}

void tc_send_try(tc *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

ssize_t tc_fill(tc *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) {
            ps__buf_append(&c->in, buf, (size_t)n);
            return n;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET)
            return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            ps_test_fail(__FILE__, __LINE__, "timed out waiting for the server (%zu bytes unread)",
                         c->in.len);
        ps_test_fail(__FILE__, __LINE__, "recv: %s", strerror(errno));
    }
}

void tc_expect_eof(tc *c)
{
    ssize_t n;
    while ((n = tc_fill(c)) > 0) {
    }
    if (c->in.len) {
        fprintf(stderr, "unexpected bytes before EOF: ");
        ps_test_print_bytes(stderr, c->in.base, c->in.len);
        fputc('\n', stderr);
        ps_test_fail(__FILE__, __LINE__, "server sent %zu more bytes before closing", c->in.len);
    }
}

/* ---- HTTP ------------------------------------------------------------------------------ */

bool tresp_header(const tresp *r, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = strstr(r->head.base, "\r\n");
    while (p && p[2]) {
        const char *line = p + 2;
        const char *eol = strstr(line, "\r\n");
        size_t llen = eol ? (size_t)(eol - line) : strlen(line);
        if (llen > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            size_t vlen = (size_t)(line + llen - v);
            if (vlen >= outlen)
                vlen = outlen - 1;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = eol;
    }
    return false;
}

static void read_response(tc *c, tresp *r, bool head_only);

void tc_read_response(tc *c, tresp *r)
{
    read_response(c, r, false);
}

void tc_read_head_response(tc *c, tresp *r)
{
    read_response(c, r, true);
}

static void read_response(tc *c, tresp *r, bool head_only)
{
    memset(r, 0, sizeof *r);
    ps__buf_init(&r->head);
    ps__buf_init(&r->body);
    char *end;
    for (;;) {
        end = c->in.len ? memmem(c->in.base, c->in.len, "\r\n\r\n", 4) : NULL;
        if (end)
            break;
        if (tc_fill(c) <= 0)
            ps_test_fail(__FILE__, __LINE__, "connection ended inside a response head (%zu bytes)",
                         c->in.len);
    }
    size_t hlen = (size_t)(end - c->in.base);
    ps__buf_append(&r->head, c->in.base, hlen);
    ps__buf_consume(&c->in, hlen + 4);
    if (sscanf(r->head.base, "HTTP/1.1 %d ", &r->status) != 1)
        ps_test_fail(__FILE__, __LINE__, "bad status line: %.80s", r->head.base);
    char cl[32];
    size_t blen = 0;
    if (r->status != 101 && !head_only) {
        if (!tresp_header(r, "Content-Length", cl, sizeof cl))
            ps_test_fail(__FILE__, __LINE__, "response without Content-Length: %s", r->head.base);
        blen = strtoul(cl, NULL, 10);
    }
    while (c->in.len < blen)
        if (tc_fill(c) <= 0)
            ps_test_fail(__FILE__, __LINE__, "connection ended inside a response body");
    ps__buf_append(&r->body, c->in.base, blen);
    ps__buf_cstr(&r->body);
    ps__buf_consume(&c->in, blen);
}

void tresp_free(tresp *r)
{
    ps__buf_free(&r->head);
    ps__buf_free(&r->body);
}

int tc_request(int port, const char *request, tresp *r)
{
    tc *c = tc_connect(port);
    tc_sends(c, request);
    tc_read_response(c, r);
    tc_free(c);
    return r->status;
}

/* ---- WebSocket ------------------------------------------------------------------------- */

void tc_ws_handshake(tc *c, const char *target, const void *extra, size_t extra_len)
{
    uint8_t raw[16];
    char key[25], accept[29], got[64];
    ps__random_bytes(raw, sizeof raw);
    ps__base64_encode(raw, sizeof raw, key);
    ps__ws_accept_key(key, accept);
    ps__buf req;
    ps__buf_init(&req);
    ps__buf_printf(&req,
                   "GET %s HTTP/1.1\r\n"
                   "Host: 127.0.0.1\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   target, key);
    if (extra_len)
        ps__buf_append(&req, extra, extra_len);
    tc_send(c, req.base, req.len);
    ps__buf_free(&req);
    tresp r;
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 101);
    ASSERT(tresp_header(&r, "Sec-WebSocket-Accept", got, sizeof got));
    ASSERT_STR_EQ(got, accept);
    ASSERT(tresp_header(&r, "Upgrade", got, sizeof got));
    ASSERT_STR_EQ(got, "websocket");
    tresp_free(&r);
}

void tc_ws_frame(ps__buf *out, bool fin, int opcode, const void *data, size_t len, bool mask)
{
    ps__buf_appendc(out, (char)((fin ? 0x80 : 0) | (opcode & 15)));
    uint8_t mbit = mask ? 0x80 : 0;
    if (len < 126) {
        ps__buf_appendc(out, (char)(mbit | len));
    } else if (len <= 0xffff) {
        ps__buf_appendc(out, (char)(mbit | 126));
        ps__buf_appendc(out, (char)(len >> 8));
        ps__buf_appendc(out, (char)(len & 0xff));
    } else {
        ps__buf_appendc(out, (char)(mbit | 127));
        for (int i = 7; i >= 0; i--)
            ps__buf_appendc(out, (char)(((uint64_t)len >> (8 * i)) & 0xff));
    }
    uint8_t key[4] = {0};
    if (mask) {
        ps__random_bytes(key, 4);
        ps__buf_append(out, key, 4);
    }
    ps__buf_reserve(out, len);
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        out->base[out->len + i] = (char)(p[i] ^ key[i & 3]);
    out->len += len;
    out->base[out->len] = '\0';
}

void tc_ws_send(tc *c, bool fin, int opcode, const void *data, size_t len, bool mask)
{
    ps__buf f;
    ps__buf_init(&f);
    tc_ws_frame(&f, fin, opcode, data, len, mask);
    tc_send(c, f.base, f.len);
    ps__buf_free(&f);
}

void tc_ws_text(tc *c, const char *text)
{
    tc_ws_send(c, true, WS_TEXT, text, strlen(text), true);
}

/* Waits until at least n unread bytes are buffered; false if the connection ends first. */
static bool need(tc *c, size_t n)
{
    while (c->in.len < n)
        if (tc_fill(c) <= 0)
            return false;
    return true;
}

bool tc_ws_read(tc *c, tframe *f)
{
    memset(f, 0, sizeof *f);
    ps__buf_init(&f->payload);
    if (!need(c, 2))
        return false;
    const uint8_t *h = (const uint8_t *)c->in.base;
    f->fin = h[0] & 0x80;
    f->opcode = h[0] & 15;
    ASSERT_EQ(h[0] & 0x70, 0); /* no extension was negotiated */
    ASSERT_EQ(h[1] & 0x80, 0); /* RFC 6455 §5.1: a server never masks */
    size_t hl = 2;
    uint64_t len = h[1] & 0x7f;
    if (len == 126) {
        if (!need(c, 4))
            return false;
        h = (const uint8_t *)c->in.base;
        len = ((uint64_t)h[2] << 8) | h[3];
        ASSERT_GE(len, 126); /* minimal length encoding */
        hl = 4;
    } else if (len == 127) {
        if (!need(c, 10))
            return false;
        h = (const uint8_t *)c->in.base;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | h[2 + i];
        ASSERT_GT(len, 0xffff);
        hl = 10;
    }
    if (!need(c, hl + len))
        return false;
    ps__buf_append(&f->payload, c->in.base + hl, len);
    ps__buf_cstr(&f->payload);
    ps__buf_consume(&c->in, hl + len);
    return true;
}

void tframe_free(tframe *f)
{
    ps__buf_free(&f->payload);
}

char *tc_ws_read_text(tc *c)
{
    tframe f;
    if (!tc_ws_read(c, &f))
        ps_test_fail(__FILE__, __LINE__, "connection ended while a text frame was expected");
    if (f.opcode != WS_TEXT || !f.fin) {
        fprintf(stderr, "frame opcode %d fin %d payload ", f.opcode, f.fin);
        ps_test_print_bytes(stderr, f.payload.base, f.payload.len);
        fputc('\n', stderr);
        ps_test_fail(__FILE__, __LINE__, "expected a final text frame");
    }
    return ps__buf_steal(&f.payload, NULL);
}

void tc_ws_expect_text(tc *c, const char *text)
{
    char *got = tc_ws_read_text(c);
    ASSERT_STR_EQ(got, text);
    ps__free(got);
}

int tc_ws_expect_close(tc *c)
{
    tframe f;
    for (;;) {
        if (!tc_ws_read(c, &f))
            ps_test_fail(__FILE__, __LINE__, "connection ended without a close frame");
        if (f.opcode == WS_CLOSE)
            break;
        tframe_free(&f);
    }
    int code = 1005;
    if (f.payload.len >= 2) {
        const uint8_t *p = (const uint8_t *)f.payload.base;
        code = (p[0] << 8) | p[1];
    } else {
        ASSERT_EQ(f.payload.len, 0); /* a one-byte close payload is malformed */
    }
    ASSERT(f.fin);
    ASSERT_LE(f.payload.len, 125);
    /* The reason must be UTF-8 (RFC 6455 §5.5.1). */
    if (f.payload.len > 2)
        ASSERT(ps__utf8_valid((const uint8_t *)f.payload.base + 2, f.payload.len - 2));
    tframe_free(&f);
    uint8_t reply[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    ps__buf out;
    ps__buf_init(&out);
    tc_ws_frame(&out, true, WS_CLOSE, reply, code == 1005 ? 0 : 2, true);
    tc_send_try(c, out.base, out.len);
    ps__buf_free(&out);
    tc_expect_eof(c);
    return code;
}

/* ---- Engine.IO / Socket.IO ------------------------------------------------------------- */

static int64_t json_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        ps_test_fail(__FILE__, __LINE__, "open packet: %s is not an integer", key);
    return json_integer_value(v);
}

tc *tc_eio_open(ts *t, char sid[PS__SID_LEN + 1])
{
    tc *c = tc_connect(t->port);
    tc_ws_handshake(c, "/socket.io/?EIO=4&transport=websocket", NULL, 0);
    char *open = tc_ws_read_text(c);
    ASSERT_EQ(open[0], '0');
    json_error_t jerr;
    json_t *o = json_loads(open + 1, 0, &jerr);
    if (!o)
        ps_test_fail(__FILE__, __LINE__, "open packet is not JSON: %s", open);
    const char *s = json_string_value(json_object_get(o, "sid"));
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(strlen(s), PS__SID_LEN);
    memcpy(sid, s, PS__SID_LEN + 1);
    json_t *up = json_object_get(o, "upgrades");
    ASSERT(json_is_array(up));
    ASSERT_EQ(json_array_size(up), 0);
    ASSERT_EQ(json_int(o, "pingInterval"),
              t->opts.ping_interval_ms ? t->opts.ping_interval_ms : 25000);
    ASSERT_EQ(json_int(o, "pingTimeout"),
              t->opts.ping_timeout_ms ? t->opts.ping_timeout_ms : 20000);
    ASSERT_EQ(json_int(o, "maxPayload"), t->opts.max_payload ? t->opts.max_payload : 1048576);
    ASSERT_EQ(json_object_size(o), 5);
    json_decref(o);
    ps__free(open);
    return c;
}

tc *tc_sio_connect(ts *t)
{
    char eio_sid[PS__SID_LEN + 1];
    tc *c = tc_eio_open(t, eio_sid);
    tc_ws_text(c, "40");
    char *reply = tc_ws_read_text(c);
    ASSERT_EQ(strncmp(reply, "40{\"sid\":\"", 10), 0);
    json_t *o = json_loads(reply + 2, 0, NULL);
    ASSERT_NOT_NULL(o);
    /* With connection state recovery (the default) the reply carries the session's pid. */
    bool recovery = t->opts.resume_window_ms != PS_RESUME_OFF && !t->opts.engineio_echo;
    ASSERT_EQ(json_object_size(o), recovery ? 2 : 1);
    if (recovery) {
        const char *pid = json_string_value(json_object_get(o, "pid"));
        ASSERT_NOT_NULL(pid);
        ASSERT_EQ(strlen(pid), PS__HEX_ID_LEN);
    }
    const char *sid = json_string_value(json_object_get(o, "sid"));
    ASSERT_NOT_NULL(sid);
    ASSERT_EQ(strlen(sid), PS__SID_LEN);
    /* The Socket.IO id must not leak the Engine.IO session secret. */
    ASSERT(strcmp(sid, eio_sid) != 0);
    json_decref(o);
    ps__free(reply);
    return c;
}
