/*
 * websocket: RFC 6455 over a connection taken from http, with framing of its own. Validates
 * the handshake and every frame (1002), reassembles fragmented messages, checks UTF-8 of text
 * messages and close reasons (1007), bounds message size (1009), answers pings, and runs the
 * close handshake. Delivers whole messages upward.
 */
#ifndef PS_WEBSOCKET_H
#define PS_WEBSOCKET_H

#include "http.h"

typedef struct ps__ws ps__ws;

/* Close codes of RFC 6455 §7.4.1 that pulsec sends. */
enum {
    PS__WS_NORMAL = 1000,
    PS__WS_GOING_AWAY = 1001,
    PS__WS_PROTOCOL_ERROR = 1002,
    PS__WS_UNSUPPORTED = 1003,
    PS__WS_ABNORMAL = 1006, /* never sent: reported when the TCP connection just ended */
    PS__WS_INVALID_DATA = 1007,
    PS__WS_POLICY = 1008,
    PS__WS_TOO_BIG = 1009,
    PS__WS_INTERNAL = 1011,
};

typedef struct ps__ws_cbs {
    /* A complete message; data valid only during the call. Text is valid UTF-8. */
    void (*on_message)(ps__ws *ws, bool binary, const char *data, size_t len);
    /* The connection is gone; `code` is the close code received (or sent, or 1006). The
     * ps__ws is freed when this returns. */
    void (*on_close)(ps__ws *ws, int code);
} ps__ws_cbs;

/*
 * The WebSockets of one server, for the count of those holding input buffers: a WebSocket
 * holds one only while a frame cut off by the end of a read or a fragmented message is
 * incomplete, so an idle or quiet connection holds none (ps_server_stats.ws_buffers).
 */
typedef struct ps__ws_pool {
    uv_loop_t *loop;
    uint32_t idle_ms; /* kept for the option's sake: buffers go as soon as they are not needed */
    size_t nholding;  /* WebSockets holding an input buffer now */
} ps__ws_pool;

void ps__ws_pool_init(ps__ws_pool *p, uv_loop_t *loop, uint32_t idle_ms);

typedef struct ps__ws_opts {
    size_t max_message;        /* larger incoming messages: close 1009 */
    uint32_t close_timeout_ms; /* wait for the peer's close reply at most this long */
    ps__ws_pool *pool;         /* NULL: the context is kept until the connection closes */
} ps__ws_opts;

/*
 * Checks the WebSocket handshake headers of req; on success answers 101, takes the connection
 * from http and returns the new WebSocket (cbs/data set), on failure answers 400 (or 426 for an
 * unsupported version) and returns NULL.
 */
ps__ws *ps__ws_upgrade(ps__http_req *req, const ps__ws_opts *opts, const ps__ws_cbs *cbs,
                       void *data);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 chars + NUL. */
void ps__ws_accept_key(const char *key, char out[29]);

/* Processes frames that arrived together with the handshake; call once the owner is ready. */
void ps__ws_start(ps__ws *ws);

int ps__ws_send(ps__ws *ws, bool binary, const char *data, size_t len);
/* Sends one message made of up to PS__WS_MAX_PARTS parts, in order, without joining them. */
#define PS__WS_MAX_PARTS 4
int ps__ws_sendv(ps__ws *ws, bool binary, const uv_buf_t *parts, size_t nparts);
/* Starts the close handshake; the TCP connection ends after the peer's reply or the timeout. */
void ps__ws_close(ps__ws *ws, int code, const char *reason);
/* Ends the connection now without a close handshake. */
void ps__ws_abort(ps__ws *ws);
bool ps__ws_closing(const ps__ws *ws);
/* Bytes accepted for sending and not yet written to the socket. */
size_t ps__ws_queued(const ps__ws *ws);
/* Hands the WebSocket to another owner (an upgrade probe becoming the session's transport). */
void ps__ws_set_cbs(ps__ws *ws, const ps__ws_cbs *cbs, void *data);
void *ps__ws_data(const ps__ws *ws);
const char *ps__ws_peer(const ps__ws *ws);

#endif
