/*
 * websocket: wslay's event API driven by libuv reads. Bytes read from the socket are offered to
 * wslay through recv_callback; frames produced during a read (wslay's control frames, and the
 * data frames ps__ws_send writes itself) are gathered in `out` and written in one piece after
 * each round ("proceed", as h2o does it). The ps__ws lives until its TCP connection's close
 * callback, so upper layers may close it from inside on_message.
 */
#include "websocket.h"

#include <openssl/evp.h>
#include <stdio.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <wslay/wslay.h>

struct ps__ws {
    ps__conn *conn;
    wslay_event_context_ptr ctx;
    const ps__ws_cbs *cbs;
    void *data;
    const char *in; /* unread input of the current read */
    size_t in_len;
    ps__buf out;   /* frames produced by wslay, written after each round */
    ps__buf early; /* bytes that arrived with the handshake, until ps__ws_start */
    ps__timer *close_timer;
    uint32_t close_timeout_ms;
    size_t max_message; /* bound on a (reassembled) data message */
    uint64_t msg_len;   /* announced length of the data message being received */
    uint8_t hdr[14];    /* the frame header being scanned */
    size_t hdr_len;
    uint64_t payload_left; /* payload bytes of the current frame not yet seen */
    int close_code;        /* what on_close reports */
    bool in_proceed;       /* inside wslay_event_recv: sends are flushed at the end */
    bool failed;           /* a message was refused: deliver nothing more */
    bool unframeable;      /* a frame header was refused (size, length): read nothing more */
    int pending_close;     /* a close decided inside wslay_event_recv, queued after it */
    char pending_reason[124];
    bool closing;    /* close handshake started or connection ending */
    bool in_message; /* a fragmented data message has begun and not ended */
    ps__ws_pool *pool;
    ps__list pool_link;   /* in pool->holding while ctx is held */
    uint64_t last_active; /* loop time of the last frame in or out */
};

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

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

/* ---- wslay callbacks ------------------------------------------------------------------- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    ps__ws *ws = user;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    ps__ws *ws = user;
    ps__buf_append(&ws->out, data, len);
    return (ssize_t)len;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    ps__ws *ws = user;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        ws->close_code = arg->status_code ? arg->status_code : 1005;
        ws->closing = true;
        return;
    }
    if (ws->failed || ws->closing)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        bool binary = arg->opcode == WSLAY_BINARY_FRAME;
        if (!binary && !ps__utf8_valid(arg->msg, arg->msg_length)) {
            ws->failed = true;
            ps__ws_close(ws, PS__WS_INVALID_DATA, "invalid UTF-8");
            return;
        }
        ws->cbs->on_message(ws, binary, (const char *)arg->msg, arg->msg_length);
    }
}

/*
 * RFC 6455 §5.5.1: a close body is empty or starts with a 2-byte code. wslay takes a 1-byte body
 * for "no code" and would echo an empty close; queue 1002 first, so that wslay's echo is then
 * refused as a second close.
 */
static void ws_on_frame_start(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    ps__ws *ws = user;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1 && !ws->closing) {
        ws->failed = true;
        ws->close_code = PS__WS_PROTOCOL_ERROR;
        wslay_event_queue_close(ctx, PS__WS_PROTOCOL_ERROR, NULL, 0);
    }
}

static const struct wslay_event_callbacks wslay_cbs = {
    .recv_callback = ws_recv,
    .send_callback = ws_send,
    .on_frame_recv_start_callback = ws_on_frame_start,
    .on_msg_recv_callback = ws_on_msg,
};

/* ---- contexts on demand ---------------------------------------------------------------- */

static void pool_sweep(ps__timer *t, void *data);

/* Every wslay call goes through here: a WebSocket that gave its context back gets a new one. */
static wslay_event_context_ptr ws_ctx(ps__ws *ws)
{
    if (ws->pool)
        ws->last_active = uv_now(ws->pool->loop);
    if (ws->ctx)
        return ws->ctx;
    wslay_event_context_server_init(&ws->ctx, &wslay_cbs, ws);
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->max_message);
    ps__ws_pool *p = ws->pool;
    if (p) {
        ps__list_insert_tail(&p->holding, &ws->pool_link);
        if (p->nholding++ == 0 && p->idle_ms) {
            p->sweep = ps__timer_new(p->loop, pool_sweep, p);
            ps__timer_start(p->sweep, p->idle_ms);
        }
    }
    return ws->ctx;
}

static void ws_ctx_release(ps__ws *ws)
{
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    ps__ws_pool *p = ws->pool;
    if (!p)
        return;
    ps__list_remove(&ws->pool_link);
    if (--p->nholding == 0 && p->sweep) {
        ps__timer_free(p->sweep);
        p->sweep = NULL;
    }
}

/*
 * Whether a holder's context may go: a fresh one must behave as the old one would, so no frame
 * or fragmented message half read, nothing queued to send, no close under way.
 */
static bool ws_ctx_releasable(const ps__ws *ws)
{
    return !ws->closing && !ws->failed && !ws->in_proceed && !ws->in_message && ws->hdr_len == 0 &&
           ws->payload_left == 0 && !wslay_event_want_write(ws->ctx);
}

static void pool_sweep(ps__timer *t, void *data)
{
    ps__ws_pool *p = data;
    uint64_t now = uv_now(p->loop);
    ps__list *pos, *tmp;
    ps__list_foreach_safe(pos, tmp, &p->holding)
    {
        ps__ws *ws = PS__CONTAINER_OF(pos, ps__ws, pool_link);
        if (now - ws->last_active >= p->idle_ms && ws_ctx_releasable(ws)) {
            ws_ctx_release(ws); /* frees the timer with the last one */
            p->since_trim++;
        }
    }
#ifdef __GLIBC__
    /* The contexts were freed between small live objects: without a trim, glibc keeps their
     * pages and the process does not shrink. malloc_trim returns free pages from anywhere in
     * the heap; it walks the heap, so it runs only after a batch worth a few hundred KiB. */
    if (p->since_trim >= 64) {
        p->since_trim = 0;
        malloc_trim(0);
    }
#endif
    if (p->sweep)
        ps__timer_start(p->sweep, p->idle_ms);
}

void ps__ws_pool_init(ps__ws_pool *p, uv_loop_t *loop, uint32_t idle_ms)
{
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->idle_ms = idle_ms;
    ps__list_init(&p->holding);
}

/* ---- driving --------------------------------------------------------------------------- */

static void ws_flush(ps__ws *ws)
{
    if (ws->conn->closing || !ws->ctx)
        return;
    if (wslay_event_want_write(ws->ctx))
        wslay_event_send(ws->ctx);
    if (ws->out.len > 0) {
        ps__conn_write(ws->conn, ws->out.base, ws->out.len);
        ps__buf_reset(&ws->out);
        /* Keep the buffer from pinning a huge allocation after one large message. */
        if (ws->out.cap > 256 * 1024)
            ps__buf_free(&ws->out);
    }
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx))
        ps__conn_close(ws->conn);
}

/* Bytes in a frame header, from its first two bytes. */
static size_t header_size(const uint8_t *h)
{
    size_t n = 2 + ((h[1] & 0x80) ? 4 : 0);
    uint8_t len7 = h[1] & 0x7f;
    return n + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
}

/* What scan_frames found in the frame headers of a read. */
enum { SCAN_OK, SCAN_TOO_BIG, SCAN_BAD_LENGTH };

/*
 * wslay checks the message size only once payload bytes arrive, so a header announcing a huge
 * frame would hold the connection until the heartbeat ends it. This scanner follows frame
 * boundaries in the input and refuses a data message on its announced length. A 64-bit
 * length with its most significant bit set is malformed whatever the bound (RFC 6455 §5.2),
 * so it is refused first, as a protocol error.
 */
static int scan_frames(ps__ws *ws, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (ws->payload_left > 0) {
            size_t n = len < ws->payload_left ? len : (size_t)ws->payload_left;
            ws->payload_left -= n;
            p += n;
            len -= n;
            continue;
        }
        ws->hdr[ws->hdr_len++] = *p++;
        len--;
        if (ws->hdr_len < 2 || ws->hdr_len < header_size(ws->hdr))
            continue;
        uint8_t len7 = ws->hdr[1] & 0x7f;
        uint64_t plen = len7;
        if (len7 >= 126) {
            size_t nbytes = len7 == 126 ? 2 : 8;
            if (nbytes == 8 && (ws->hdr[2] & 0x80))
                return SCAN_BAD_LENGTH;
            plen = 0;
            for (size_t i = 0; i < nbytes; i++)
                plen = (plen << 8) | ws->hdr[2 + i];
        }
        uint8_t opcode = ws->hdr[0] & 0x0f;
        ws->hdr_len = 0;
        ws->payload_left = plen;
        if (opcode < WSLAY_CONNECTION_CLOSE) {
            ws->in_message = !(ws->hdr[0] & 0x80);
            if (opcode != WSLAY_CONTINUATION_FRAME)
                ws->msg_len = 0;
            if (plen > ws->max_message || ws->msg_len + plen > ws->max_message)
                return SCAN_TOO_BIG;
            ws->msg_len += plen;
        }
    }
    return SCAN_OK;
}

static void ws_on_read(ps__conn *c, const char *data, size_t len)
{
    ps__ws *ws = c->data;
    if (ws->unframeable)
        return; /* nothing after a refused header can be framed: wait for the close */
    wslay_event_context_ptr ctx = ws_ctx(ws);
    int scan = scan_frames(ws, (const uint8_t *)data, len);
    if (scan != SCAN_OK) {
        ws->unframeable = ws->failed = true;
        wslay_event_shutdown_read(ctx);
        if (scan == SCAN_BAD_LENGTH)
            ps__ws_close(ws, PS__WS_PROTOCOL_ERROR, "invalid frame length");
        else
            ps__ws_close(ws, PS__WS_TOO_BIG, "message too big");
        return;
    }
    ws->in = data;
    ws->in_len = len;
    ws->in_proceed = true;
    int rc = wslay_event_recv(ctx);
    ws->in_proceed = false;
    ws->in = NULL;
    ws->in_len = 0;
    if (rc == WSLAY_ERR_CALLBACK_FAILURE) {
        /* A malformed frame header (fragmented or oversized control frame, non-minimal
         * length): wslay queued a close frame without a status code, as the last frame it will
         * produce. Send what precedes it, and the close with 1002 in its place. */
        wslay_event_send(ws->ctx);
        static const char empty_close[] = {(char)0x88, 0x00};
        static const char close_1002[] = {(char)0x88, 0x02, 0x03, (char)0xea};
        if (ws->out.len >= 2 && memcmp(ws->out.base + ws->out.len - 2, empty_close, 2) == 0) {
            ws->out.len -= 2;
            ps__buf_append(&ws->out, close_1002, sizeof close_1002);
        }
        if (!ws->close_code)
            ws->close_code = PS__WS_PROTOCOL_ERROR;
        ws->closing = true;
    } else if (rc != 0 && rc != WSLAY_ERR_WOULDBLOCK) {
        /* wslay queued the close frame (1002 or 1009) itself; record what we send. */
        uint16_t sent = wslay_event_get_status_code_sent(ws->ctx);
        if (sent && !ws->close_code)
            ws->close_code = sent;
        ws->closing = true;
    } else if (ws->pending_close) {
        wslay_event_send(ws->ctx); /* the answers first */
        wslay_event_queue_close(ws->ctx, (uint16_t)ws->pending_close,
                                (const uint8_t *)ws->pending_reason, strlen(ws->pending_reason));
    }
    ws->pending_close = 0;
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
    if (ws->ctx)
        ws_ctx_release(ws);
    ps__buf_free(&ws->out);
    ps__buf_free(&ws->early);
    ps__free(ws);
}

static const ps__conn_cbs ws_conn_cbs = {ws_on_read, ws_on_eof, ws_on_conn_close};

static void ws_on_close_timeout(ps__timer *t, void *data)
{
    /* No close reply in time: the peer may not even be reading, so a graceful shutdown could
     * wait forever behind unsent bytes. */
    ps__ws *ws = data;
    ps__conn_abort(ws->conn);
}

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
    /* Taken now, though the first frame could take it: allocated before the session's objects,
     * the context leaves, once released, a hole whose pages malloc_trim can return. Taken at
     * the first frame instead, an idle connection kept 6.2 KB of RSS instead of 3.7 KB. */
    ws_ctx(ws);
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

/*
 * Data frames are framed here rather than queued in wslay: wslay would copy each message into
 * an allocation of its own and then into `out`, and it would need a context, which an idle
 * WebSocket gave back. Order is kept: outside a read wslay has nothing queued (every round
 * ends with a flush), and inside one the frames go to `out` in turn with wslay's.
 */
int ps__ws_send(ps__ws *ws, bool binary, const char *data, size_t len)
{
    if (ws->closing || ws->failed || ws->conn->closing)
        return UV_EPIPE;
    uint8_t h[10];
    size_t hlen = frame_header(h, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, len);
    if (ws->in_proceed) {
        /* A pong wslay owes for a ping earlier in this read goes first, as it was caused
         * first. wslay keeps separate send and receive state, so this may run inside its
         * receive loop; a close it queued (ws->failed) never gets here. */
        if (wslay_event_want_write(ws->ctx))
            wslay_event_send(ws->ctx);
        ps__buf_append(&ws->out, h, hlen);
        ps__buf_append(&ws->out, data, len);
        return 0;
    }
    uv_buf_t bufs[2] = {uv_buf_init((char *)h, (unsigned)hlen),
                        uv_buf_init((char *)data, (unsigned)len)};
    return ps__conn_writev(ws->conn, bufs, 2);
}

void ps__ws_close(ps__ws *ws, int code, const char *reason)
{
    if (ws->conn->closing)
        return;
    if (code && ws->in_proceed && !ws->closing) {
        /* wslay sends control frames before data frames and nothing after its close: queued
         * now, the close would swallow the answers to messages earlier in this same read. */
        ws->pending_close = code;
        snprintf(ws->pending_reason, sizeof ws->pending_reason, "%s", reason ? reason : "");
        if (!ws->close_code)
            ws->close_code = code;
        code = 0;
    }
    if (code) {
        wslay_event_context_ptr ctx = ws_ctx(ws);
        if (!ws->closing || !wslay_event_get_close_sent(ctx)) {
            if (!ws->close_code)
                ws->close_code = code;
            wslay_event_queue_close(ctx, (uint16_t)code, (const uint8_t *)reason,
                                    reason ? strlen(reason) : 0);
        }
    }
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
