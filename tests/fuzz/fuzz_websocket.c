/*
 * fuzz_websocket: frames from a client on an upgraded connection, through websocket.c as the
 * server runs it: pulsec's frame scanner (message size on announced lengths), wslay's decoder
 * behind the recv callback, reassembly, the UTF-8 check of text messages, masking, control
 * frames and the close handshake (with its 1002 repairs of wslay's answers). The handshake is a
 * fixed valid one; the messages are echoed back, "close" and "abort" end the connection.
 *
 * Input: one option byte, then the bytes the client sends after its handshake.
 *   bits 0-2  read size (harness.c's fz_chunk_size: whole, 1, 2, 3, 7, 16, 100, 1000)
 *   bit 3     max_message 125 instead of 64 KiB
 *   bit 4     the client closes its side (FIN) after sending
 *   bit 5     the first read also carries the handshake (frames pipelined behind it)
 *   bit 6     no close timeout (the close handshake waits for the peer without a timer)
 */
#include "harness.h"

typedef struct target {
    fz_env *env;
    ps__http_config cfg;
    ps__ws_opts wo;
    ps__ws *ws;
} target;

static target T;

static bool on_request(void *user, ps__http_req *req)
{
    target *t = user;
    t->ws = fz_ws_upgrade(t->env, req, &t->wo);
    FZ_CHECK(t->ws != NULL); /* the handshake is valid */
    return true;
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
    T.ws = NULL;

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
    if (opt & 16)
        fz_conn_eof(T.env, c);
    fz_env_finish(T.env);
    return 0;
}
