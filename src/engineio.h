/*
 * engineio: Engine.IO v4 sessions over WebSocket. Validates requests on the Engine.IO path
 * (answering the JSON errors of the reference server), sends the open packet, runs the
 * server-initiated heartbeat with millisecond timers, and carries message packets between the
 * WebSocket and the layer above. Long-polling requests get a clean "Transport unknown" until
 * that transport exists.
 */
#ifndef PS_ENGINEIO_H
#define PS_ENGINEIO_H

#include "websocket.h"

typedef struct ps__eio ps__eio;
typedef struct ps__eio_server ps__eio_server;

/* What the client sent with its first request, kept for the session's whole life. */
typedef struct ps__eio_handshake {
    char *url;                /* raw request target */
    char *query;              /* raw query string */
    ps__http_header *headers; /* copies; names and values point into `strings` */
    size_t nheaders;
    char *strings;
    char address[48];
} ps__eio_handshake;

typedef struct ps__eio_cbs {
    /* A session opened; return the upper layer's object for it (ps__eio_up). */
    void *(*on_open)(ps__eio *e, void *user);
    /* One message packet: text without its '4', or binary. */
    void (*on_message)(ps__eio *e, bool binary, const char *data, size_t len);
    /* The session is over; called once, from the loop (never from inside a ps__eio call).
     * The ps__eio is freed when this returns. */
    void (*on_close)(ps__eio *e, const char *reason);
} ps__eio_cbs;

typedef struct ps__eio_config {
    uint32_t ping_interval_ms;
    uint32_t ping_timeout_ms;
    size_t max_payload;
    uint32_t close_timeout_ms;
} ps__eio_config;

struct ps__eio_server {
    uv_loop_t *loop;
    ps__eio_config cfg;
    const ps__eio_cbs *cbs;
    void *user;
    ps__list sessions;
    size_t nsessions;
    uint64_t ws_errors; /* sessions ended by a WebSocket-level error (1002, 1007, 1009) */
    bool shutting_down;
};

void ps__eio_server_init(ps__eio_server *es, uv_loop_t *loop, const ps__eio_config *cfg,
                         const ps__eio_cbs *cbs, void *user);
/* Handles a request whose path is on the Engine.IO endpoint. Always answers or takes it. */
void ps__eio_handle_request(ps__eio_server *es, ps__http_req *req);
/* Closes every session with 1001 (their on_close calls follow from the loop). */
void ps__eio_server_shutdown(ps__eio_server *es);

/*
 * Sends one complete Engine.IO text packet, type digit included ("4..." for a message), or a
 * binary message. Returns 0 or UV_EPIPE once the session is closing.
 */
int ps__eio_send_packet(ps__eio *e, const char *packet, size_t len);
int ps__eio_send_binary(ps__eio *e, const char *data, size_t len);
/* Ends the session: WebSocket close with `code` and `reason` (also reported to on_close). */
void ps__eio_close(ps__eio *e, int code, const char *reason);
bool ps__eio_closed(const ps__eio *e);
size_t ps__eio_queued(const ps__eio *e);

void *ps__eio_up(const ps__eio *e);
const char *ps__eio_sid(const ps__eio *e);
const ps__eio_handshake *ps__eio_get_handshake(const ps__eio *e);
ps__eio_server *ps__eio_get_server(const ps__eio *e);

/* Encodes the open packet for a session ("0{...}") into out. */
void ps__eio_encode_open(ps__buf *out, const char *sid, const ps__eio_config *cfg, bool polling);

/* Engine.IO packet types (the first character of a text packet). */
enum { PS__EIO_OPEN = '0', PS__EIO_CLOSE, PS__EIO_PING, PS__EIO_PONG, PS__EIO_MESSAGE,
       PS__EIO_UPGRADE, PS__EIO_NOOP };

#endif
