/*
 * fuzz_websocket: frames from a client on an upgraded connection, through websocket.c as the
 * server runs it: its frame parser (every check, message size on announced lengths),
 * reassembly, the UTF-8 check of text messages and close reasons, masking, control frames and
 * the close handshake. The handshake is a fixed valid one; the messages are echoed back,
 * "close" and "abort" end the connection.
 *
 * Differential oracle: the same bytes go through a wslay server context (the parser websocket.c
 * replaced, with the rules pulsec added around it: a 1-byte close body and wslay's own framing
 * errors answered 1002), and both must deliver the same messages, byte for byte, and end with
 * the same close code. Two differences are by design and allowed: pulsec checks an announced
 * size before the rest of the header (1009 where wslay says 1002) and decides on the header
 * bytes it has (wslay waits for the mask key and a first payload byte: when the input ends
 * there, wslay has decided nothing), and pulsec checks a text frame's UTF-8 once the frame is
 * whole (wslay may already say 1007 when the input ends inside that frame).
 *
 * Input: one option byte, then the bytes the client sends after its handshake.
 *   bits 0-2  read size (harness.c's fz_chunk_size: whole, 1, 2, 3, 7, 16, 100, 1000)
 *   bit 3     max_message 125 instead of 64 KiB
 *   bit 4     the client closes its side (FIN) after sending
 *   bit 5     the first read also carries the handshake (frames pipelined behind it)
 *   bit 6     no close timeout (the close handshake waits for the peer without a timer)
 */
#include "harness.h"

#include <wslay/wslay.h>

/* What one side did with the input: its messages, one after another ([binary][len][bytes]),
 * and the close code its connection ended with. */
typedef struct record {
    ps__buf msgs;
    int code;
} record;

typedef struct target {
    fz_env *env;
    ps__http_config cfg;
    ps__ws_opts wo;
    ps__ws_pool pool;
    ps__ws *ws;
    record ours;
} target;

static target T;

static void record_msg(record *r, bool binary, const void *data, size_t len)
{
    uint8_t b = binary;
    ps__buf_append(&r->msgs, &b, 1);
    ps__buf_append(&r->msgs, &len, sizeof len);
    ps__buf_append(&r->msgs, data, len);
}

static void rec_on_message(ps__ws *ws, bool binary, const char *data, size_t len)
{
    FZ_CHECK(binary || ps__utf8_valid((const uint8_t *)data, len));
    record_msg(&T.ours, binary, data, len);
    if (!binary && len == 5 && memcmp(data, "close", 5) == 0)
        ps__ws_close(ws, PS__WS_NORMAL, "bye");
    else if (!binary && len == 5 && memcmp(data, "abort", 5) == 0)
        ps__ws_abort(ws);
    else
        ps__ws_send(ws, binary, data, len);
}

static void rec_on_close(ps__ws *ws, int code)
{
    T.env->ws_closed++;
    FZ_CHECK(T.ours.code == 0); /* once */
    T.ours.code = code;
}

static const ps__ws_cbs rec_cbs = {rec_on_message, rec_on_close};

static bool on_request(void *user, ps__http_req *req)
{
    target *t = user;
    t->ws = ps__ws_upgrade(req, &t->wo, &rec_cbs, t);
    FZ_CHECK(t->ws != NULL); /* the handshake is valid */
    t->env->ws_opened++;
    ps__ws_start(t->ws);
    return true;
}

/* ---- the oracle: wslay, as pulsec ran it before ------------------------------------------ */

typedef struct oracle {
    wslay_event_context_ptr ctx;
    const uint8_t *in;
    size_t in_len;
    record rec;
    bool closing; /* "close" received: later messages are not delivered */
    bool aborted;
    bool bad_close; /* a 1-byte close body, or an invalid close reason */
    int bad_close_code;
} oracle;

static ssize_t or_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *u)
{
    oracle *o = u;
    if (o->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < o->in_len ? len : o->in_len;
    memcpy(buf, o->in, n);
    o->in += n;
    o->in_len -= n;
    return (ssize_t)n;
}

static ssize_t or_send(wslay_event_context_ptr ctx, const uint8_t *d, size_t len, int f, void *u)
{
    return (ssize_t)len;
}

static void or_on_frame_start(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *u)
{
    oracle *o = u;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1 && !o->bad_close) {
        o->bad_close = true;
        o->bad_close_code = PS__WS_PROTOCOL_ERROR;
        wslay_event_shutdown_read(ctx);
    }
}

static void or_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *u)
{
    oracle *o = u;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        /* wslay checks a close reason only within the read that brings its first bytes. */
        if (arg->msg_length > 2 && !ps__utf8_valid(arg->msg + 2, arg->msg_length - 2) &&
            !o->bad_close) {
            o->bad_close = true;
            o->bad_close_code = PS__WS_INVALID_DATA;
        }
        return;
    }
    if (o->closing || o->aborted || o->bad_close ||
        (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME))
        return;
    bool binary = arg->opcode == WSLAY_BINARY_FRAME;
    record_msg(&o->rec, binary, arg->msg, arg->msg_length);
    if (!binary && arg->msg_length == 5 && memcmp(arg->msg, "close", 5) == 0) {
        o->closing = true;
        wslay_event_queue_close(ctx, PS__WS_NORMAL, (const uint8_t *)"bye", 3);
    } else if (!binary && arg->msg_length == 5 && memcmp(arg->msg, "abort", 5) == 0) {
        o->aborted = true;
        wslay_event_shutdown_read(ctx);
    }
}

static const struct wslay_event_callbacks or_cbs = {
    .recv_callback = or_recv,
    .send_callback = or_send,
    .on_frame_recv_start_callback = or_on_frame_start,
    .on_msg_recv_callback = or_on_msg,
};

/* Runs the oracle over the client's bytes; returns the close code pulsec used to report. */
static int oracle_run(oracle *o, const uint8_t *data, size_t size, size_t max_message)
{
    wslay_event_context_server_init(&o->ctx, &or_cbs, o);
    wslay_event_config_set_max_recv_msg_length(o->ctx, max_message);
    o->in = data;
    o->in_len = size;
    int rc = 0;
    while (o->in_len > 0 && wslay_event_want_read(o->ctx) && rc == 0) {
        rc = wslay_event_recv(o->ctx);
        wslay_event_send(o->ctx);
    }
    int code;
    if (o->aborted)
        code = PS__WS_ABNORMAL;
    else if (o->bad_close)
        code = wslay_event_get_close_sent(o->ctx) && o->closing ? PS__WS_NORMAL : o->bad_close_code;
    else if (rc == WSLAY_ERR_CALLBACK_FAILURE)
        code = o->closing ? PS__WS_NORMAL : PS__WS_PROTOCOL_ERROR;
    else if (wslay_event_get_close_received(o->ctx))
        code = wslay_event_get_status_code_received(o->ctx);
    else if (wslay_event_get_close_sent(o->ctx))
        code = wslay_event_get_status_code_sent(o->ctx);
    else
        code = PS__WS_ABNORMAL;
    wslay_event_context_free(o->ctx);
    return code;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    T.env = fz_env_get();
    T.cfg.max_header_size = 8192;
    T.cfg.max_body_size = 1024;
    T.cfg.on_request = on_request;
    T.cfg.user = &T;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    data++, size--;
    T.wo.max_message = opt & 8 ? 125 : 64 * 1024;
    T.wo.close_timeout_ms = opt & 64 ? 0 : 1000;
    ps__ws_pool_init(&T.pool, T.env->loop, 0);
    T.wo.pool = &T.pool;
    T.ws = NULL;
    ps__buf_init(&T.ours.msgs);
    T.ours.code = 0;
    const uint8_t *frames = data;
    size_t nframes = size;

    ps__conn *c = fz_conn_new(T.env, NULL);
    ps__http_attach(c, &T.cfg);
    static const char hs[] = FZ_WS_REQUEST;
    size_t chunk = fz_chunk_size(opt);
    bool open;
    if (opt & 32) {
        /* The handshake and the first read's worth of frames in one read. */
        size_t n = size < chunk ? size : chunk;
        uint8_t *first = malloc(sizeof hs - 1 + n);
        FZ_CHECK(first);
        memcpy(first, hs, sizeof hs - 1);
        memcpy(first + sizeof hs - 1, data, n);
        open = fz_conn_read(T.env, c, first, sizeof hs - 1 + n);
        free(first);
        data += n;
        size -= n;
    } else {
        open = fz_conn_read(T.env, c, (const uint8_t *)hs, sizeof hs - 1);
    }
    FZ_CHECK(T.ws != NULL);
    if (open)
        fz_conn_read_chunked(T.env, c, data, size, chunk);
    bool held = T.pool.nholding > 0; /* pulsec waits for the rest of a frame or message */
    if (opt & 16)
        fz_conn_eof(T.env, c);
    fz_env_finish(T.env);

    oracle o = {0};
    ps__buf_init(&o.rec.msgs);
    int theirs = oracle_run(&o, frames, nframes, T.wo.max_message);
    int ours = T.ours.code;
    bool same_msgs =
        T.ours.msgs.len == o.rec.msgs.len &&
        (T.ours.msgs.len == 0 || memcmp(T.ours.msgs.base, o.rec.msgs.base, T.ours.msgs.len) == 0);
    bool early = ours == PS__WS_TOO_BIG || ours == PS__WS_PROTOCOL_ERROR;
    bool same_code = ours == theirs ||
                     (ours == PS__WS_TOO_BIG && theirs == PS__WS_PROTOCOL_ERROR) ||
                     (early && theirs == PS__WS_ABNORMAL && o.in_len == 0) ||
                     (ours == PS__WS_ABNORMAL && theirs == PS__WS_INVALID_DATA && held);
    if (!same_msgs || !same_code) {
        fprintf(stderr, "pulsec: %zu bytes of messages, close %d; wslay: %zu bytes, close %d\n",
                T.ours.msgs.len, ours, o.rec.msgs.len, theirs);
        abort();
    }
    ps__buf_free(&T.ours.msgs);
    ps__buf_free(&o.rec.msgs);
    return 0;
}
