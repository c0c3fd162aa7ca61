/*
 * engineio: Engine.IO v4 sessions over HTTP long-polling and WebSocket, with the upgrade from
 * one to the other. Validates requests on the Engine.IO path (answering the JSON errors of the
 * reference server), sends the open packet, runs the server-initiated heartbeat with
 * millisecond timers, batches packets for held GETs, and carries message packets (text and
 * binary) between the transport and the layer above.
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
     * The ps__eio must not be used after this returns. */
    void (*on_close)(ps__eio *e, const char *reason);
    /* Optional. A ping went out (pong false), or the pong answering it came back (pong true):
     * the client has then read everything sent before that ping, on either transport. */
    void (*on_heartbeat)(ps__eio *e, bool pong);
} ps__eio_cbs;

typedef struct ps__eio_config {
    uint32_t ping_interval_ms;
    uint32_t ping_timeout_ms;
    size_t max_payload;
    uint32_t close_timeout_ms;
    uint32_t upgrade_timeout_ms; /* 0 = 10000 */
    bool polling;                /* long-polling enabled (and so the upgrade) */
    size_t max_queued;           /* outgoing bytes a client may leave unread; 0 = no bound */
    uint32_t ws_idle_release_ms; /* ps__ws_pool's idle_ms; 0 = WebSockets keep their context */
    /* Browser origins allowed besides the server's own (exact "scheme://host:port" strings,
     * or "*": any, but without credentials). See ps__eio_origin_check. */
    char **allowed_origins;
    size_t nallowed_origins;
    bool secure; /* the port speaks TLS: only an https page is the server's own origin */
    /* Peers whose X-Forwarded-For (client address) and X-Forwarded-Host (the host the browser
     * asked for) are believed. */
    const ps__cidr *trusted_proxies;
    size_t ntrusted_proxies;
    /* Workers: 1 + this worker's index, stamped into every sid (ps__id_set_worker) so that a
     * request reaching another worker can be routed here; 0 = none. */
    uint8_t sid_worker;
    /* Polling sessions that have not been told their Socket.IO CONNECT was accepted
     * (ps__eio_connected): at most this many in all and per peer address (0 = no bound); a
     * new one beyond ends the oldest, preferring those that never polled. */
    uint32_t max_unconnected;
    uint32_t max_unconnected_per_address;
} ps__eio_config;

/*
 * A polling session whose client has not polled (sent a GET, or a WebSocket probe) this long
 * after its handshake, and has no accepted CONNECT, is ended: a real client polls at once,
 * and one that never does can never receive anything.
 */
#define PS__EIO_FIRST_POLL_MS 10000

struct ps__eio_server {
    uv_loop_t *loop;
    ps__eio_config cfg;
    const ps__eio_cbs *cbs;
    void *user;
    ps__list sessions;
    size_t nsessions;
    ps__list lingering; /* closed polling sessions waiting to tell their next GET */
    ps__eio **buckets;  /* sid -> session, for polling requests and upgrades */
    size_t nbuckets;
    uint64_t ws_errors;      /* sessions ended by a WebSocket-level error (1002, 1007, 1009) */
    uint64_t slow_consumers; /* sessions ended for leaving more than max_queued unread */
    /* Polling sessions without a CONNECT (see max_unconnected), oldest first: those that never
     * polled, and those that did. Each address with some has an entry in `addrs`. */
    ps__list never_polled;
    ps__list polled;
    size_t nunconnected;
    uint64_t unconnected_closed; /* ended by the bounds or PS__EIO_FIRST_POLL_MS */
    struct ps__eio_addr **addrs;
    size_t naddr_buckets;
    ps__timer *first_poll; /* while never_polled is not empty: its oldest's deadline */
    ps__ws_pool wspool;
    /* Heartbeats: a session waits on beat_wait for its next ping (due ping_interval after the
     * last pong) or on beat_pong for its pong (due ping_timeout after the ping). The delays are
     * the same for every session, so each list is in the order of its deadlines and one timer
     * serves them all: a timer per session cost an idle connection 170 bytes. */
    ps__list beat_wait;
    ps__list beat_pong;
    ps__list beat_early; /* sooner pings or pong deadlines asked from above, sorted by due */
    size_t nbeating;     /* sessions on either list */
    ps__timer *beat;     /* exists while nbeating > 0 */
    uint64_t beat_at;    /* when `beat` fires, while it is active */
    bool shutting_down;
};

void ps__eio_server_init(ps__eio_server *es, uv_loop_t *loop, const ps__eio_config *cfg,
                         const ps__eio_cbs *cbs, void *user);
void ps__eio_server_free(ps__eio_server *es);
/* Handles a request whose path is on the Engine.IO endpoint. Always answers, defers or takes
 * it. */
void ps__eio_handle_request(ps__eio_server *es, ps__http_req *req);
/* Bytes accepted for clients and not yet written (or polled), over every session. */
size_t ps__eio_server_queued(const ps__eio_server *es);
/* Closes every session (WebSockets with 1001; their on_close calls follow from the loop). */
void ps__eio_server_shutdown(ps__eio_server *es);

/*
 * Sends one complete Engine.IO text packet, type digit included ("4..." for a message), or a
 * binary message. Returns 0 or UV_EPIPE once the session is closing.
 */
int ps__eio_send_packet(ps__eio *e, const char *packet, size_t len);
/* The same, the packet being the concatenation of up to PS__WS_MAX_PARTS parts. */
int ps__eio_send_packetv(ps__eio *e, const uv_buf_t *parts, size_t nparts);
int ps__eio_send_binary(ps__eio *e, const char *data, size_t len);
/*
 * Sends a ping now instead of at the next heartbeat, unless one is awaiting its pong already,
 * so that the pong (on_heartbeat) comes one round trip from now: the layer above learns
 * sooner what the client has read. The pong deadline is the usual ping_timeout_ms.
 */
void ps__eio_ping_soon(ps__eio *e);
/* Sends the next ping within `ms` (sooner than the heartbeat would), unless one is out already:
 * for a layer that wants to learn before long what the client has read. */
void ps__eio_ping_within(ps__eio *e, uint32_t ms);
/*
 * Asks whether the client is still there: a ping now (or the one already out) must be
 * answered within `deadline_ms`, or the session ends as on any ping timeout. For a transport
 * that may be dead without the server having noticed (no FIN ever came).
 */
void ps__eio_probe(ps__eio *e, uint32_t deadline_ms);
/* Ends the session: WebSocket close with `code`, or `1` to the next poll; `reason` is what
 * on_close reports. */
void ps__eio_close(ps__eio *e, int code, const char *reason);
bool ps__eio_closed(const ps__eio *e);
/* After the end: whether its WebSocket ended in a way no client comes back from (it closed with
 * 1000, its page went away, or it broke the protocol), as opposed to a transport that failed
 * under it. */
bool ps__eio_client_left(const ps__eio *e);
size_t ps__eio_queued(const ps__eio *e);
/* "websocket" or "polling". */
const char *ps__eio_transport(const ps__eio *e);

/* The layer above accepted the session's client (a Socket.IO CONNECT): it leaves the bound on
 * unconnected sessions. Idempotent. */
void ps__eio_connected(ps__eio *e);

void *ps__eio_up(const ps__eio *e);
const char *ps__eio_sid(const ps__eio *e);
const ps__eio_handshake *ps__eio_get_handshake(const ps__eio *e);
/* A copy of a handshake that outlives its session (one allocation; free with ps__free()). */
ps__eio_handshake *ps__eio_handshake_dup(const ps__eio_handshake *hs);
ps__eio_server *ps__eio_get_server(const ps__eio *e);

/* Encodes the open packet for a session ("0{...}") into out. */
void ps__eio_encode_open(ps__buf *out, const char *sid, const ps__eio_config *cfg, bool polling);
/*
 * How a request's Origin stands (DESIGN §8). A page may reach the server from its own origin
 * or from one that allowed_origins lists; "*" lets any page in, but such a request never
 * carries credentials: its answers grant CORS without them, and its session's handshake hides
 * the Cookie and Authorization headers the browser attached on its own (what Cross-Site
 * WebSocket Hijacking relies on). Requests without Origin come from programs, not pages.
 */
typedef enum ps__origin {
    PS__ORIGIN_NONE,    /* no Origin header: allowed, no CORS */
    PS__ORIGIN_SAME,    /* the server's own host: allowed, no CORS needed */
    PS__ORIGIN_LISTED,  /* in allowed_origins: allowed, CORS with credentials */
    PS__ORIGIN_ANY,     /* only "*" allows it: CORS without credentials, no cookies */
    PS__ORIGIN_REFUSED, /* 403 */
} ps__origin;
/* `host` is what the browser asked for (Host, or a trusted proxy's X-Forwarded-Host), or
 * NULL. */
ps__origin ps__eio_origin_check(const ps__eio_config *cfg, const char *origin, const char *host);
/*
 * The client's address for the handshake: the peer, or, when the peer is a trusted proxy, the
 * nearest address in X-Forwarded-For (read from the right) that is not a trusted proxy itself.
 * Writes at most `size` bytes (NUL included) to out.
 */
void ps__eio_client_address(const ps__eio_config *cfg, const char *peer,
                            const ps__http_header *headers, size_t nheaders, char *out,
                            size_t size);

/*
 * Polling payloads (pure): splits `body` at the \x1e separators and calls fn for each packet
 * (a text packet with its type digit, or a binary message decoded from "b<base64>"). Returns
 * 0, or -1 for an empty packet or bad base64; fn returning non-zero stops and is returned.
 */
typedef int (*ps__eio_packet_fn)(void *user, bool binary, const char *data, size_t len);
int ps__eio_decode_payload(const char *body, size_t len, ps__eio_packet_fn fn, void *user);

/* Engine.IO packet types (the first character of a text packet). */
enum {
    PS__EIO_OPEN = '0',
    PS__EIO_CLOSE,
    PS__EIO_PING,
    PS__EIO_PONG,
    PS__EIO_MESSAGE,
    PS__EIO_UPGRADE,
    PS__EIO_NOOP
};

#endif
