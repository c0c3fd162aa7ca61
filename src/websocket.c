/*
 * websocket: RFC 6455 framing of our own over libuv reads (wslay's receive path copied every
 * frame twice and allocated per message, and its context cost 8.5 KiB per connection). Frames
 * are parsed and unmasked in place in the read buffer, and a message that arrives in one frame
 * is handed up from there; only a frame cut off by the end of a read, or a fragmented message,
 * is buffered, and only until it is complete. Frames produced during a read (pongs, closes and
 * the data frames ps__ws_send writes) are gathered in `out` and written in one piece after it
 * ("proceed", as h2o does it). The ps__ws lives until its TCP connection's close callback, so
 * upper layers may close it from inside on_message.
 */
#include "websocket.h"

#include <openssl/evp.h>
#include <stdio.h>

struct ps__ws {
    ps__conn *conn;
    const ps__ws_cbs *cbs;
    void *data;
    ps__buf in;    /* a frame cut off by the end of a read, until the rest arrives */
    ps__buf frag;  /* the fragments of a data message so far */
    ps__buf out;   /* frames produced during a read, written after it */
    ps__buf early; /* bytes that arrived with the handshake, until ps__ws_start */
    ps__timer *close_timer;
    uint32_t close_timeout_ms;
    size_t max_message;  /* bound on a (reassembled) data message */
    size_t frag_checked; /* bytes of a text message's fragments found valid UTF-8 */
    int close_code;      /* what on_close reports */
    uint8_t frag_opcode; /* text or binary while a fragmented message is open, else 0 */
    bool in_proceed;     /* inside a read: frames go to `out`, written at its end */
    bool failed;         /* a message was refused: deliver nothing more */
    bool reading;        /* frames are still read (not after a close or an error) */
    bool close_sent;
    bool closing; /* close handshake started or connection ending */
    bool holding; /* counted in pool->nholding (in or frag allocated) */
    ps__ws_pool *pool;
};

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

enum {
    OP_CONT = 0x0,
    OP_TEXT = 0x1,
    OP_BINARY = 0x2,
    OP_CLOSE = 0x8,
    OP_PING = 0x9,
    OP_PONG = 0xa,
};

void ps__ws_accept_key(const char *key, char out[29])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha1(), NULL);
    EVP_DigestUpdate(md, key, strlen(key));
    EVP_DigestUpdate(md, WS_GUID, sizeof WS_GUID - 1);
    EVP_DigestFinal_ex(md, digest, &dlen);
    EVP_MD_CTX_free(md);
    ps__base64_encode(digest, dlen, out);
}

void ps__ws_pool_init(ps__ws_pool *p, uv_loop_t *loop, uint32_t idle_ms)
{
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->idle_ms = idle_ms;
}

/* Keeps pool->nholding (ps_server_stats.ws_buffers) equal to the WebSockets holding input. */
static void hold_update(ps__ws *ws)
{
    bool holding = ws->in.cap > 0 || ws->frag.cap > 0;
    if (holding == ws->holding || !ws->pool)
        return;
    ws->holding = holding;
    if (holding)
        ws->pool->nholding++;
    else
        ws->pool->nholding--;
}

/* ---- frames out ------------------------------------------------------------------------ */

/* The header of an unfragmented, unmasked frame (RFC 6455 §5.2); returns its length. */
static size_t frame_header(uint8_t h[10], uint8_t opcode, size_t len)
{
    h[0] = 0x80 | opcode;
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    size_t nbytes = len <= 0xffff ? 2 : 8;
    h[1] = nbytes == 2 ? 126 : 127;
    for (size_t i = 0; i < nbytes; i++)
        h[1 + nbytes - i] = (uint8_t)((uint64_t)len >> (8 * i));
    return 2 + nbytes;
}

static void queue_frame(ps__ws *ws, uint8_t opcode, const void *a, size_t alen, const void *b,
                        size_t blen)
{
    uint8_t h[10];
    size_t hlen = frame_header(h, opcode, alen + blen);
    ps__buf_reserve(&ws->out, hlen + alen + blen);
    ps__buf_append(&ws->out, h, hlen);
    if (alen)
        ps__buf_append(&ws->out, a, alen);
    if (blen)
        ps__buf_append(&ws->out, b, blen);
}

/* Our close frame (once): `code` 0 sends an empty one, as the reply to an empty close. */
static void queue_close(ps__ws *ws, int code, const char *reason, size_t rlen)
{
    if (ws->close_sent)
        return;
    ws->close_sent = true;
    ws->closing = true;
    if (!ws->close_code)
        ws->close_code = code ? code : 1005;
    if (!code) {
        queue_frame(ws, OP_CLOSE, NULL, 0, NULL, 0);
        return;
    }
    uint8_t c[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    queue_frame(ws, OP_CLOSE, c, 2, reason, rlen > 123 ? 123 : rlen);
}

static void ws_flush(ps__ws *ws)
{
    if (ws->conn->closing)
        return;
    if (ws->out.len > 0) {
        ps__conn_write(ws->conn, ws->out.base, ws->out.len);
        /* Transient: an idle connection keeps no buffer. */
        ps__buf_free(&ws->out);
    }
    /* Both closes exchanged, or ours sent after an error: the TCP connection ends. */
    if (ws->close_sent && !ws->reading)
        ps__conn_close(ws->conn);
}

/* ---- frames in ------------------------------------------------------------------------- */

/* Refuses the peer's input: our close with `code`, and nothing more is read. */
static void fail(ps__ws *ws, int code, const char *reason)
{
    ws->failed = true;
    ws->reading = false;
    if (!ws->close_code)
        ws->close_code = code;
    queue_close(ws, code, reason, reason ? strlen(reason) : 0);
}

/*
 * Whether s[0..len) is valid UTF-8 up to a sequence that the end cuts off, which must itself be
 * a valid beginning (so that a text message split into fragments is refused as soon as it
 * cannot become valid, as wslay did). *whole gets the length of the complete sequences.
 */
static bool utf8_prefix_valid(const uint8_t *s, size_t len, size_t *whole)
{
    size_t tail = 0; /* continuation bytes at the end */
    while (tail < 3 && tail < len && (s[len - 1 - tail] & 0xC0) == 0x80)
        tail++;
    if (tail < len && s[len - 1 - tail] >= 0xC0) {
        size_t lead = len - 1 - tail;
        uint8_t c = s[lead];
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (tail + 1 < need) {
            /* Cut off: the bytes so far must allow a valid completion. */
            uint8_t b = tail ? s[lead + 1] : 0;
            bool ok = c >= 0xC2 && c <= 0xF4 &&
                      (tail == 0 || ((c != 0xE0 || b >= 0xA0) && (c != 0xED || b <= 0x9F) &&
                                     (c != 0xF0 || b >= 0x90) && (c != 0xF4 || b <= 0x8F)));
            if (!ok || !ps__utf8_valid(s, lead))
                return false;
            *whole = lead;
            return true;
        }
    }
    *whole = len;
    return ps__utf8_valid(s, len);
}

static bool close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 && code != 1006) ||
           (code >= 3000 && code <= 4999);
}

static void on_close_frame(ps__ws *ws, const uint8_t *p, size_t n)
{
    if (n == 1) {
        /* RFC 6455 §5.5.1: a close body is empty or starts with a 2-byte code. */
        fail(ws, PS__WS_PROTOCOL_ERROR, NULL);
        return;
    }
    /* The reason's UTF-8 first, then the code, as wslay decided (it checked the reason as
     * its bytes arrived). */
    if (n > 2 && !ps__utf8_valid(p + 2, n - 2)) {
        fail(ws, PS__WS_INVALID_DATA, NULL);
        return;
    }
    unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 0;
    if (n >= 2 && !close_code_valid(code)) {
        fail(ws, PS__WS_PROTOCOL_ERROR, NULL);
        return;
    }
    /* The peer's close: ours echoes its code and reason (RFC 6455 §5.5.1), unless ours went
     * first; the connection reports the code received. */
    ws->close_code = code ? (int)code : 1005;
    ws->reading = false;
    ws->closing = true;
    queue_close(ws, (int)code, (const char *)p + 2, n > 2 ? n - 2 : 0);
}

static void deliver(ps__ws *ws, bool binary, const uint8_t *p, size_t n)
{
    if (ws->failed || ws->closing)
        return;
    ws->cbs->on_message(ws, binary, (const char *)p, n);
}

/* A data frame's payload (unmasked); `fin` ends the message. */
static void on_data_frame(ps__ws *ws, uint8_t opcode, bool fin, const uint8_t *p, size_t n)
{
    if (fin && opcode != OP_CONT) {
        /* The common case, a message in one frame, straight from the read buffer. */
        if (opcode == OP_TEXT && !ps__utf8_valid(p, n)) {
            fail(ws, PS__WS_INVALID_DATA, NULL);
            return;
        }
        deliver(ws, opcode == OP_BINARY, p, n);
        return;
    }
    if (opcode != OP_CONT) {
        ws->frag_opcode = opcode;
        ws->frag_checked = 0;
    }
    if (ps__buf_tryreserve(&ws->frag, n) != 0) {
        fail(ws, PS__WS_TOO_BIG, "message too big");
        return;
    }
    ps__buf_append(&ws->frag, p, n);
    if (ws->frag_opcode == OP_TEXT) {
        size_t whole = 0;
        const uint8_t *t = (const uint8_t *)ws->frag.base + ws->frag_checked;
        size_t len = ws->frag.len - ws->frag_checked;
        if (fin ? !ps__utf8_valid(t, len) : !utf8_prefix_valid(t, len, &whole)) {
            fail(ws, PS__WS_INVALID_DATA, NULL);
            return;
        }
        ws->frag_checked += whole;
    }
    if (!fin)
        return;
    bool binary = ws->frag_opcode == OP_BINARY;
    ws->frag_opcode = 0;
    ps__buf msg = ws->frag;
    ps__buf_init(&ws->frag);
    deliver(ws, binary, (const uint8_t *)(msg.base ? msg.base : ""), msg.len);
    ps__buf_free(&msg);
}

/*
 * One frame at p (avail bytes): returns its length once whole and handled, 0 when more bytes
 * are needed, or -1 after refusing it. Every check wslay made is here: RSV bits, unknown
 * opcodes, unmasked client frames, fragmented or long control frames, non-minimal lengths, a
 * 64-bit length with its top bit set (refused before any size check, issue 16), continuations
 * without a message and new data frames inside one (1002); messages over max_message (1009,
 * on the header, before the payload arrives); UTF-8 of text and of close reasons (1007); close
 * codes (1002).
 */
static ssize_t on_frame(ps__ws *ws, uint8_t *p, size_t avail)
{
    if (avail < 2)
        return 0;
    uint8_t b0 = p[0], b1 = p[1];
    bool fin = b0 & 0x80;
    uint8_t opcode = b0 & 0x0f;
    uint8_t len7 = b1 & 0x7f;
    bool control = opcode & 0x08;
    if (control && (len7 > 125 || !fin)) {
        fail(ws, PS__WS_PROTOCOL_ERROR, NULL);
        return -1;
    }
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (avail < 2 + ext)
        return 0;
    uint64_t plen = ext ? 0 : len7;
    for (size_t i = 0; i < ext; i++)
        plen = plen << 8 | p[2 + i];
    if (ext == 8 && (plen >> 63)) {
        fail(ws, PS__WS_PROTOCOL_ERROR, "invalid frame length");
        return -1;
    }
    /* The size first, on the header alone: a huge announced frame is never waited for. */
    size_t so_far = opcode == OP_CONT ? ws->frag.len : 0;
    if (!control && (plen > ws->max_message || so_far + plen > ws->max_message)) {
        fail(ws, PS__WS_TOO_BIG, "message too big");
        return -1;
    }
    bool minimal = ext == 0 || (ext == 2 ? plen >= 126 : plen > 0xffff);
    bool known = opcode == OP_CONT || opcode == OP_TEXT || opcode == OP_BINARY ||
                 opcode == OP_CLOSE || opcode == OP_PING || opcode == OP_PONG;
    bool in_order = control || (opcode == OP_CONT) == (ws->frag_opcode != 0);
    if (!minimal || (b0 & 0x70) || !(b1 & 0x80) || !known || !in_order) {
        fail(ws, PS__WS_PROTOCOL_ERROR, NULL);
        return -1;
    }
    size_t hlen = 2 + ext + 4;
    if (avail < hlen || avail - hlen < plen)
        return 0;
    uint8_t *mask = p + 2 + ext, *d = p + hlen;
    size_t n = (size_t)plen, i = 0;
    uint32_t m32;
    memcpy(&m32, mask, 4);
    uint64_t m64 = (uint64_t)m32 << 32 | m32;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, d + i, 8);
        w ^= m64;
        memcpy(d + i, &w, 8);
    }
    for (; i < n; i++)
        d[i] ^= mask[i & 3];
    switch (opcode) {
    case OP_PING:
        if (!ws->close_sent)
            queue_frame(ws, OP_PONG, d, n, NULL, 0);
        break;
    case OP_PONG: break;
    case OP_CLOSE: on_close_frame(ws, d, n); break;
    default: on_data_frame(ws, opcode, fin, d, n);
    }
    return (ssize_t)(hlen + n);
}

/* Runs the frames of p[0..len); returns the bytes consumed (a cut-off frame stays). */
static size_t on_frames(ps__ws *ws, uint8_t *p, size_t len)
{
    size_t off = 0;
    while (ws->reading && !ws->conn->closing && off < len) {
        ssize_t n = on_frame(ws, p + off, len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    return off;
}

static void ws_on_close_timeout(ps__timer *t, void *data)
{
    /* No close reply in time: the peer may not even be reading, so a graceful shutdown could
     * wait forever behind unsent bytes. */
    ps__ws *ws = data;
    ps__conn_abort(ws->conn);
}

/* The read buffer is the connection's own until this returns: frames are unmasked in place. */
static void ws_on_read(ps__conn *c, const char *data, size_t len)
{
    ps__ws *ws = c->data;
    if (!ws->reading)
        return; /* after a close or an error: nothing more is read */
    ws->in_proceed = true;
    if (ws->in.len == 0) {
        size_t used = on_frames(ws, (uint8_t *)data, len);
        if (ws->reading && used < len)
            ps__buf_append(&ws->in, data + used, len - used);
    } else if (ps__buf_tryreserve(&ws->in, len) != 0) {
        fail(ws, PS__WS_TOO_BIG, "message too big");
    } else {
        ps__buf_append(&ws->in, data, len);
        size_t used = on_frames(ws, (uint8_t *)ws->in.base, ws->in.len);
        ps__buf_consume(&ws->in, used);
    }
    if (ws->in.len == 0 || !ws->reading)
        ps__buf_free(&ws->in);
    if (!ws->reading)
        ps__buf_free(&ws->frag);
    hold_update(ws);
    ws->in_proceed = false;
    ws_flush(ws);
    if (ws->closing && !c->closing && !ws->close_timer && ws->close_timeout_ms) {
        /* Our close frame is out: the peer gets a bounded time to answer it. */
        ps__ws_close(ws, 0, NULL);
    }
}

static void ws_on_eof(ps__conn *c)
{
    ps__ws *ws = c->data;
    if (!ws->close_code)
        ws->close_code = PS__WS_ABNORMAL;
    ws->closing = true;
    ps__conn_abort(c);
}

static void ws_on_conn_close(ps__conn *c)
{
    ps__ws *ws = c->data;
    if (!ws->close_code)
        ws->close_code = PS__WS_ABNORMAL;
    ws->cbs->on_close(ws, ws->close_code);
    ps__timer_free(ws->close_timer);
    ps__buf_free(&ws->in);
    ps__buf_free(&ws->frag);
    hold_update(ws);
    ps__buf_free(&ws->out);
    ps__buf_free(&ws->early);
    ps__free(ws);
}

static const ps__conn_cbs ws_conn_cbs = {
    .on_read = ws_on_read, .on_eof = ws_on_eof, .on_close = ws_on_conn_close};

/* ---- public ---------------------------------------------------------------------------- */

static bool key_valid(const char *key)
{
    /* 16 random bytes in base64: 22 significant characters and "==". */
    if (!key || strlen(key) != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (int i = 0; i < 22; i++) {
        char ch = key[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return false;
    }
    return true;
}

ps__ws *ps__ws_upgrade(ps__http_req *req, const ps__ws_opts *opts, const ps__ws_cbs *cbs,
                       void *data)
{
    const char *version = ps__http_header_get(req, "Sec-WebSocket-Version");
    const char *key = ps__http_header_get(req, "Sec-WebSocket-Key");
    if (req->method_id != HTTP_GET || !ps__http_header_has_token(req, "Upgrade", "websocket") ||
        !ps__http_header_has_token(req, "Connection", "upgrade") || !key_valid(key)) {
        ps__http_respond(req, 400, "text/plain; charset=utf-8",
                         PS__STRLIT("400 Bad Request: invalid WebSocket handshake\n"), NULL);
        return NULL;
    }
    if (!version || strcmp(version, "13") != 0) {
        ps__http_respond(req, 426, "text/plain; charset=utf-8",
                         PS__STRLIT("426 Upgrade Required: WebSocket version 13 only\n"),
                         "Sec-WebSocket-Version: 13\r\n");
        return NULL;
    }
    char accept[29];
    ps__ws_accept_key(key, accept);
    const char *rest;
    size_t rest_len;
    ps__conn *c = ps__http_take_conn(req, &rest, &rest_len);

    ps__ws *ws = ps__calloc(1, sizeof *ws);
    ws->conn = c;
    ws->cbs = cbs;
    ws->data = data;
    ws->close_timeout_ms = opts->close_timeout_ms;
    ws->max_message = opts->max_message;
    ws->pool = opts->pool;
    ws->reading = true;
    c->cbs = &ws_conn_cbs;
    c->data = ws;

    char head[200];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Date: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     ps__http_date(), accept);
    ps__conn_write(c, head, (size_t)n);
    if (rest_len > 0) {
        /* A client may pipeline its first frames behind the handshake; they are ours, but the
         * layer above must be ready first (ps__ws_start). Copy: `rest` points into the read
         * buffer that the next read reuses. */
        ps__buf_append(&ws->early, rest, rest_len);
    }
    return ws;
}

void ps__ws_start(ps__ws *ws)
{
    if (ws->early.len == 0)
        return;
    ps__buf early = ws->early;
    ps__buf_init(&ws->early);
    ws_on_read(ws->conn, early.base, early.len);
    ps__buf_free(&early);
}

/*
 * Data frames are written as they are sent: inside a read they join `out` in order behind
 * whatever that read produced (a pong for an earlier ping goes first, as it was caused first);
 * outside one they go straight to the socket. The message is the concatenation of `parts`, so
 * that layers above can frame theirs around a payload without copying it first.
 */
int ps__ws_sendv(ps__ws *ws, bool binary, const uv_buf_t *parts, size_t nparts)
{
    if (ws->closing || ws->failed || ws->conn->closing)
        return UV_EPIPE;
    size_t len = 0;
    for (size_t i = 0; i < nparts; i++)
        len += parts[i].len;
    uint8_t h[10];
    size_t hlen = frame_header(h, binary ? OP_BINARY : OP_TEXT, len);
    if (ws->in_proceed) {
        ps__buf_reserve(&ws->out, hlen + len);
        ps__buf_put(&ws->out, h, hlen);
        for (size_t i = 0; i < nparts; i++)
            ps__buf_put(&ws->out, parts[i].base, parts[i].len);
        ps__buf_terminate(&ws->out);
        return 0;
    }
    uv_buf_t bufs[1 + PS__WS_MAX_PARTS];
    bufs[0] = uv_buf_init((char *)h, (unsigned)hlen);
    for (size_t i = 0; i < nparts; i++)
        bufs[1 + i] = parts[i];
    return ps__conn_writev(ws->conn, bufs, 1 + nparts);
}

int ps__ws_send(ps__ws *ws, bool binary, const char *data, size_t len)
{
    uv_buf_t part = uv_buf_init((char *)data, (unsigned)len);
    return ps__ws_sendv(ws, binary, &part, 1);
}

/* Inside a read, the close joins `out` behind the answers to the messages before it, and the
 * messages after it are not delivered (ws->closing). */
void ps__ws_close(ps__ws *ws, int code, const char *reason)
{
    if (ws->conn->closing)
        return;
    if (code)
        queue_close(ws, code, reason, reason ? strlen(reason) : 0);
    ws->closing = true;
    if (!ws->close_timer && ws->close_timeout_ms) {
        ws->close_timer = ps__timer_new(ws->conn->tcp.loop, ws_on_close_timeout, ws);
        ps__timer_start(ws->close_timer, ws->close_timeout_ms);
    }
    if (!ws->in_proceed)
        ws_flush(ws);
}

void ps__ws_abort(ps__ws *ws)
{
    ws->closing = true;
    ps__conn_abort(ws->conn);
}

bool ps__ws_closing(const ps__ws *ws)
{
    return ws->closing || ws->conn->closing;
}

size_t ps__ws_queued(const ps__ws *ws)
{
    return ws->conn->write_queued + ws->out.len;
}

void ps__ws_set_cbs(ps__ws *ws, const ps__ws_cbs *cbs, void *data)
{
    ws->cbs = cbs;
    ws->data = data;
}

void *ps__ws_data(const ps__ws *ws)
{
    return ws->data;
}

const char *ps__ws_peer(const ps__ws *ws)
{
    return ws->conn->peer;
}
