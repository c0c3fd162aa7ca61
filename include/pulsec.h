/*
 * pulsec: real-time, bidirectional channels between a C server and browser clients.
 *
 * This is the one public header. Every type is opaque and owned by the library; ownership is a
 * tree: server -> session -> view -> channel -> listeners and pending requests. A child never
 * outlives its parent, and the app never frees what the library allocated.
 *
 * Threads: everything runs on the server's libuv loop. Every function here must be called on
 * the loop thread, from a callback of pulsec or of the loop, except ps_server_post(), which is
 * the one thread-safe call.
 *
 * JSON values are jansson json_t. Unless a function says otherwise, json_t arguments are
 * borrowed (pulsec takes its own reference when it keeps one) and json_t handed to callbacks
 * are borrowed until the callback returns (json_incref() to keep them).
 *
 * Errors: functions that act return 0 or a negative code: a PS_E* code below, or a libuv
 * UV_E* code passed through unchanged. ps_strerror() describes both.
 */
#ifndef PULSEC_H
#define PULSEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PS_BUILDING_LIBRARY)
#define PS_EXTERN __attribute__((visibility("default")))
#else
#define PS_EXTERN
#endif

#define PS_VERSION_MAJOR 0
#define PS_VERSION_MINOR 1
#define PS_VERSION_PATCH 0

/* "0.1.0" */
PS_EXTERN const char *ps_version_string(void);

/* ---- errors ---------------------------------------------------------------------------- */

/*
 * pulsec's own codes live in -30000..-30999, a range libuv never uses (libuv: -errno and
 * -3000..-4095). Grouped by hundreds: -300xx channel and request outcomes, -301xx arguments and
 * limits.
 */
#define PS_ERRNO_MAP(XX)                                                                           \
    XX(ECLOSED, -30001, "channel, view or session is closed")                                      \
    XX(ETIMEDOUT, -30002, "request timed out")                                                     \
    XX(EREMOTE, -30003, "the peer answered with an error")                                         \
    XX(EDENIED, -30004, "denied")                                                                  \
    XX(ECANCELED, -30005, "request cancelled")                                                     \
    XX(EINVAL, -30101, "invalid argument")                                                         \
    XX(ELIMIT, -30102, "limit reached")                                                            \
    XX(ENOTFOUND, -30103, "not found")                                                             \
    XX(EEXIST, -30104, "already exists")                                                           \
    XX(EALREADY, -30105, "already answered")                                                       \
    XX(EWORKER, -30106, "a worker process failed")

typedef enum ps_errno {
    PS_OK = 0,
#define PS__ERRNO_ENUM(name, value, text) PS_##name = value,
    PS_ERRNO_MAP(PS__ERRNO_ENUM)
#undef PS__ERRNO_ENUM
} ps_errno;

/* Describes a PS_E* or UV_E* code. Never NULL; static storage. */
PS_EXTERN const char *ps_strerror(int err);
/* "PS_ECLOSED", "EADDRINUSE", ... Never NULL; static storage. */
PS_EXTERN const char *ps_err_name(int err);

/* ---- logging and memory ---------------------------------------------------------------- */

typedef enum ps_log_level {
    PS_LOG_ERROR = 0,
    PS_LOG_WARN = 1, /* default */
    PS_LOG_INFO = 2,
    PS_LOG_DEBUG = 3,
} ps_log_level;

/* Process-wide log threshold; messages go to stderr unless ps_set_log_fn routes them. */
PS_EXTERN void ps_set_log_level(ps_log_level level);

/*
 * Routes pulsec's log messages (those at or under the threshold) to fn instead of stderr:
 * `message` is one line without a trailing newline, borrowed for the call. fn runs on the thread
 * that logs (a server's loop thread), so with servers on several threads it must be
 * thread-safe; it must not call back into pulsec. NULL restores stderr. Process-wide; set it
 * before creating servers.
 */
typedef void (*ps_log_fn)(ps_log_level level, const char *message, void *user);
PS_EXTERN void ps_set_log_fn(ps_log_fn fn, void *user);
/* "error", "warn", "info", "debug". Static storage. */
PS_EXTERN const char *ps_log_level_name(ps_log_level level);

/*
 * Replaces the allocator of pulsec and of jansson (json_set_alloc_funcs). Call before creating
 * any server. malloc_fn returning NULL makes pulsec call its out-of-memory handler, which logs
 * and aborts: internal allocations are never checked by callers.
 */
PS_EXTERN void ps_set_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                                void (*free_fn)(void *));

/* ---- types ----------------------------------------------------------------------------- */

typedef struct ps_server ps_server;       /* listener, routes, middleware, every session */
typedef struct ps_session ps_session;     /* one Socket.IO namespace connection (a browser tab) */
typedef struct ps_handshake ps_handshake; /* what a client sent when it connected */
typedef struct ps_ack ps_ack;             /* a client's pending acknowledgement request */
typedef struct ps_view ps_view;           /* a mounted component: state, props, channels */
typedef struct ps_channel ps_channel;     /* a bidirectional event channel owned by a view */
typedef struct ps_listener ps_listener;   /* one handler registered with ps_on() */
typedef struct ps_reply ps_reply;         /* the answer owed to a client request */

/* ---- server ---------------------------------------------------------------------------- */

/*
 * Options. A zeroed struct is valid and means the defaults written beside each field, so
 * `ps_server_opts o = {0};` then setting a few fields is the intended use. Strings are copied.
 */
typedef struct ps_server_opts {
    const char *host;            /* address to bind; NULL = "127.0.0.1" */
    int port;                    /* 0 = let the kernel pick a free port (see ps_server_port) */
    const char *path;            /* Socket.IO endpoint; NULL = "/socket.io/" */
    const char *static_dir;      /* serve files from here; NULL = no static files */
    uint32_t ping_interval_ms;   /* Engine.IO heartbeat; 0 = 25000 */
    uint32_t ping_timeout_ms;    /* pong deadline after each ping; 0 = 20000 */
    uint32_t connect_timeout_ms; /* Socket.IO CONNECT deadline after the handshake; 0 = 45000 */
    uint32_t shutdown_grace_ms;  /* how long ps_server_stop waits for close replies; 0 = 2000 */
    /* A WebSocket quiet this long between messages frees its framing buffers (8.5 KiB, most of
     * an idle connection's memory) and takes new ones with the next frame it receives; 0 = 1000,
     * UINT32_MAX = never. */
    uint32_t ws_idle_release_ms;
    size_t max_payload;     /* largest WebSocket message accepted; 0 = 1 MiB (close 1009) */
    size_t max_header_size; /* request line + headers; 0 = 8 KiB (431) */
    size_t max_body_size;   /* HTTP request body; 0 = 1 MiB (413) */
    int backlog;            /* listen(2) backlog; 0 = 511 */
    bool websocket_only;    /* refuse HTTP long-polling (and so the upgrade from it) */
    /*
     * Browser origins allowed to connect besides the server's own: a NULL-terminated array of
     * exact origins ("https://app.example.com") or "*". A browser request (WebSocket upgrade or
     * poll) whose Origin is neither the server's own host (the Host it was sent to) nor listed
     * gets 403, so a page on another site cannot use the visitor's cookies (Cross-Site
     * WebSocket Hijacking); requests without Origin (programs, not pages) always connect.
     * Listed origins get CORS headers with credentials, so cross-origin polling works. "*"
     * admits any origin but never with credentials: CORS without them, and the handshake of
     * such a session hides its Cookie and Authorization headers. NULL (the default): same
     * origin only.
     */
    const char *const *allowed_origins;
    /* Conformance testing only: a pure Engine.IO server that echoes every message packet. */
    bool engineio_echo;

    /* Limits (docs/SECURITY.md). 0 means the default given; UINT32_MAX/SIZE_MAX: no bound. */
    size_t max_queued_bytes;           /* unread output per client; beyond: disconnected; 4 MiB */
    uint32_t max_connections;          /* open TCP connections; beyond: 503 and close; 10000 */
    uint32_t max_views_per_session;    /* beyond: attach_error "Too many views"; 64 */
    uint32_t max_channels_per_session; /* open channels; beyond: ps_channel_open NULL; 256 */
    uint32_t max_pending_requests;     /* per channel and direction, and unanswered
                                          ps_session_emit_ack per session; beyond: PS_ELIMIT or
                                          the error reply "Too many pending requests"; 1024 */
    uint32_t idle_timeout_ms;          /* HTTP: complete a request (or upgrade) within, and idle
                                          between requests at most; 408 / close; 30000 */

    /* Topics (ps_join, ps_publish). Limits: 0 means the default, UINT32_MAX no bound. */
    uint32_t max_topics_per_channel; /* ps_join beyond: PS_ELIMIT; 64 */
    uint32_t max_topics;             /* distinct topics with members in this process; 100000 */

    /*
     * Reverse proxies (addresses or CIDR blocks: "10.0.0.0/8", "::1") whose X-Forwarded-For
     * is believed: for a connection from one of them, ps_handshake_address() is the nearest
     * address in that header, read from the right, that is not a trusted proxy itself, and
     * X-Forwarded-Host stands for Host in the same-origin check. NULL-terminated; NULL (the
     * default): no proxy is trusted, the peer's address is the client's. An entry that does
     * not parse makes ps_server_new fail.
     */
    const char *const *trusted_proxies;

    /*
     * Workers: this many processes serve the port, each with its own loop (SO_REUSEPORT: the
     * kernel spreads connections over them); 0 or 1 = this process alone. What changes with
     * workers is said at ps_server_listen(); docs/API.md#workers has the whole picture.
     */
    uint32_t workers;
    /* Optional: runs in each worker process once it listens, on its loop, before it serves
     * anything, with its index (0..workers-1): per-worker set-up (timers, the app's own
     * connections). Also runs, with index 0, in a server without workers. */
    void (*worker_start)(ps_server *srv, int worker, void *user);
    void *worker_user;

    /*
     * Nodes: topics shared with every server (of any machine) on the same Redis, through its
     * pub/sub. "redis://[[user]:password@]host[:port][/db]" or
     * "unix:///path/redis.sock[?db=N&password=P]"; NULL = no Redis (topics reach this node's
     * workers only). Each worker keeps its own two connections. docs/SCALING.md#nodes-redis says
     * what is guaranteed and what happens while Redis is down or slow. An URL that does not
     * parse makes ps_server_new fail.
     */
    const char *redis_url;
    const char *redis_prefix;  /* Redis channel names "<prefix>:<topic>"; NULL = "pulsec" */
    size_t max_redis_queued;   /* bytes sent to Redis and not yet answered; beyond, publishes
                                  are dropped and counted in remote_lost; 0 = 8 MiB */
    uint32_t redis_timeout_ms; /* connect, and answer each health PING, within; 0 = 3000 */

    /* Closing (docs/SECURITY.md). A connection the server closes gets this long to take its
     * queued output and send its FIN (2 s at most of it for the FIN); then it is aborted, so a
     * peer that never reads cannot keep it open. 0 = 10000; UINT32_MAX: no bound. */
    uint32_t close_timeout_ms;
    /* Long-polling sessions whose client has not been accepted by a Socket.IO CONNECT yet: at
     * most this many in all, and from one peer address; a new handshake beyond ends the oldest
     * (those that never polled first). 0 = 4096 / 256; UINT32_MAX: no bound. A session that
     * has not polled 10 s after its handshake is ended too. */
    uint32_t max_unconnected;
    uint32_t max_unconnected_per_address;

    /*
     * TLS: PEM files of the certificate chain (leaf first) and of its private key turn the
     * port into HTTPS and WSS (nothing else changes; plain HTTP on it gets a plain 400). Both
     * or neither; NULL (the default): plain HTTP. TLS 1.2 and 1.3 only, ECDHE with AES-GCM or
     * ChaCha20-Poly1305, ALPN http/1.1, no renegotiation. ps_server_new fails (logged) when
     * they cannot be loaded; ps_server_reload_tls() reads them again (SIGHUP does it under
     * ps_server_run, in every worker). With workers it needs websocket_only (a TLS connection
     * cannot be handed to another worker). Costs memory per connection: docs/SECURITY.md.
     */
    const char *tls_cert_file;
    const char *tls_key_file;
    uint32_t tls_handshake_timeout_ms; /* a TLS handshake must be complete within; 10000 */

    /*
     * GET /metrics in the Prometheus text format (docs/API.md#metrics): every counter and gauge
     * of ps_server_stats, queued bytes, TLS counters, and histograms of client request handling
     * and of the server's request round trips. false (the default): not served. With
     * metrics_listen ("127.0.0.1:9100", "[::1]:0"; port 0 = any, see ps_server_metrics_port)
     * it is served there, in plain HTTP, and not on the main port (metrics_listen alone enables
     * it); with workers it must have that address, and worker i serves it on the port + i.
     */
    bool metrics;
    const char *metrics_listen;
} ps_server_opts;

/*
 * Creates a server on `loop` (NULL: the server creates and owns a loop of its own). Nothing is
 * bound until ps_server_listen(), and no handle is made on the loop before it. Returns NULL
 * only when opts is invalid (logged).
 */
PS_EXTERN ps_server *ps_server_new(uv_loop_t *loop, const ps_server_opts *opts);

/*
 * Binds and starts accepting. Returns 0 or a UV_E* code (e.g. UV_EADDRINUSE).
 *
 * With opts.workers > 1 the calling process becomes the supervisor and serves nothing itself:
 * it reserves the port (port 0 picks one for all), forks the workers and returns once every
 * worker listens (or the first failure, after stopping the others). Each worker process is a
 * copy of the caller at this point: routes, middleware and namespaces registered before are
 * there; it re-initialises the loop for itself (uv_loop_fork), so handles that already existed
 * on an app-provided loop exist, and fire, in every worker, and none of the app's threads
 * exist in it. A worker never returns from this call: it runs worker_start, serves until
 * stopped, frees the server and exits (through exit(), so atexit handlers run in each). The
 * supervisor must then call ps_server_run(), which supervises: SIGINT/SIGTERM stop every
 * worker gracefully; a worker that dies is restarted with a backoff while the others serve.
 * Call it before making any handle or thread of your own, and do per-worker set-up in
 * worker_start. Work posted with ps_server_post() before this call runs in every worker;
 * posts in the supervisor after it are refused (PS_ECLOSED).
 */
PS_EXTERN int ps_server_listen(ps_server *srv);

/* The bound port (useful with port 0), or -1 before ps_server_listen succeeded. */
PS_EXTERN int ps_server_port(const ps_server *srv);

/* The port of metrics_listen's listener once listening (useful with port 0), or -1. */
PS_EXTERN int ps_server_metrics_port(const ps_server *srv);

/* This process's worker index (0..workers-1); 0 without workers; -1 in the supervisor. */
PS_EXTERN int ps_server_worker(const ps_server *srv);

PS_EXTERN uv_loop_t *ps_server_loop(const ps_server *srv);

/*
 * Graceful stop: stops accepting, disposes every view (dispose callbacks run, pending requests
 * complete with PS_ECLOSED), closes every WebSocket with code 1001 and waits for the peers'
 * close replies (at most shutdown_grace_ms), then releases the server's handles so that the loop
 * runs out of work. Idempotent. Safe from any pulsec callback.
 */
PS_EXTERN void ps_server_stop(ps_server *srv);

/*
 * Listens (if not yet), then runs the loop until the server has stopped; SIGINT and SIGTERM
 * call ps_server_stop(), and with TLS SIGHUP calls ps_server_reload_tls(). Returns 0, or the
 * UV_E* code of a failed listen. In the supervisor of workers it supervises instead (see
 * ps_server_listen) and returns once every worker has exited: 0, or PS_EWORKER if one did not
 * exit cleanly when stopped.
 */
PS_EXTERN int ps_server_run(ps_server *srv);

/*
 * Frees the server. Call it only after the loop has returned from uv_run following
 * ps_server_stop() (ps_server_run() returns at that point), or before ps_server_listen().
 */
PS_EXTERN void ps_server_free(ps_server *srv);

/*
 * Reads the TLS certificate and key files again (the names given in the options): new
 * connections get the new certificate, open ones keep theirs and are not dropped. Returns 0,
 * or PS_EINVAL when the server has no TLS or the files do not load (the reason is logged and
 * the current certificate stays). Under ps_server_run, SIGHUP calls it.
 */
PS_EXTERN int ps_server_reload_tls(ps_server *srv);

/*
 * Runs fn(srv, arg) on the loop thread, soon. The only thread-safe function of pulsec. Returns
 * 0, or PS_ECLOSED once the server is stopping (fn will then never run).
 */
typedef void (*ps_post_fn)(ps_server *srv, void *arg);
PS_EXTERN int ps_server_post(ps_server *srv, ps_post_fn fn, void *arg);

/*
 * Bytes sent to a session's client and not yet written to its socket (or, on long-polling,
 * not yet taken by a poll). Lets an app drop or coalesce updates for a slow client before the
 * max_queued_bytes bound disconnects it.
 */
PS_EXTERN size_t ps_session_queued(const ps_session *s);

/*
 * Counters since the server started, for monitoring and tests. GET /metrics (opts.metrics)
 * exposes every field: one added here needs its line in src/metrics.c, and a unit test
 * (metrics_stats_complete) fails until it has one. Fields are uint64_t only.
 */
typedef struct ps_server_stats {
    uint64_t connections;      /* TCP connections open now */
    uint64_t sessions;         /* Socket.IO namespace connections open now */
    uint64_t views;            /* views attached now */
    uint64_t channels;         /* channels open now */
    uint64_t sessions_total;   /* Socket.IO connections accepted since start */
    uint64_t messages_in;      /* Socket.IO packets received */
    uint64_t messages_out;     /* Socket.IO packets sent */
    uint64_t messages_dropped; /* app messages dropped: unknown type, bad fields, closed channel */
    uint64_t protocol_errors;  /* connections closed for bad frames or packets */
    uint64_t slow_consumers;   /* sessions cut off for leaving max_queued_bytes unread */
    uint64_t refused;          /* connections refused over max_connections */
    uint64_t ws_buffers;       /* WebSockets holding framing buffers now (the rest are idle) */
    uint64_t topics;           /* topics with members in this process now */
    uint64_t topic_members;    /* channel memberships of topics now */
    uint64_t published;        /* ps_publish calls in this process */
    uint64_t deliveries;       /* channel events delivered to topic members in this process */
    uint64_t remote_out;       /* publishes sent to other workers (and, with Redis, nodes) */
    uint64_t remote_in;        /* publishes received from other workers and nodes */
    uint64_t remote_lost;      /* publishes that could not be sent to a worker or to Redis */
    uint64_t remote_invalid;   /* messages received and refused: truncated, oversized, unknown
                                  version, invalid topic, event or JSON */
    uint64_t handed_over;      /* connections handed to the worker owning their session */
    uint64_t taken_over;       /* connections taken from another worker */
    uint64_t redis_up;         /* 1 while this process is connected to Redis, else 0 */
    uint64_t redis_reconnects; /* times the Redis connection came back after being up */
    uint64_t unconnected;      /* polling sessions without an accepted CONNECT now */
    uint64_t unconnected_closed; /* of those, ended by max_unconnected(_per_address) or for
                                    never polling */
    uint64_t tls_handshakes;     /* TLS handshakes completed */
    uint64_t tls_failures;       /* TLS connections that failed before their handshake completed:
                                    bad input, plain HTTP, handshake timeout */
} ps_server_stats;
PS_EXTERN void ps_server_get_stats(const ps_server *srv, ps_server_stats *out);

/* ---- handshake ------------------------------------------------------------------------- */

/* Every pointer returned here is borrowed and valid until the session closes. */

/* Header value by case-insensitive name (the last one if repeated), or NULL. */
PS_EXTERN const char *ps_handshake_header(const ps_handshake *hs, const char *name);
/* Query parameter of the connection URL, URL-decoded, or NULL. */
PS_EXTERN const char *ps_handshake_query(const ps_handshake *hs, const char *name);
/* Cookie value from the Cookie header (the first if the name is repeated), or NULL. */
PS_EXTERN const char *ps_handshake_cookie(const ps_handshake *hs, const char *name);
/* The Socket.IO CONNECT auth object; an empty object when the client sent none. */
PS_EXTERN json_t *ps_handshake_auth(const ps_handshake *hs);
/* The client's address as text ("127.0.0.1"): the peer's, or what trusted_proxies vouch for. */
PS_EXTERN const char *ps_handshake_address(const ps_handshake *hs);
/*
 * The i-th header of the handshake request (0-based, in the order received): its name as sent
 * and its value, borrowed as above. Returns false, leaving *name and *value alone, once i is
 * past the last header. For apps that hand every header on (the Python binding's
 * handshake.headers) rather than look up known names.
 */
PS_EXTERN bool ps_handshake_header_at(const ps_handshake *hs, size_t i, const char **name,
                                      const char **value);
/* The query string of the connection URL as sent: after the '?', not decoded; "" if none. */
PS_EXTERN const char *ps_handshake_query_string(const ps_handshake *hs);
/* Every cookie of the Cookie header, as ps_handshake_cookie() parses them: a JSON object of
 * strings (borrowed; empty when the client sent no cookie). */
PS_EXTERN json_t *ps_handshake_cookies(const ps_handshake *hs);

/* ---- sessions -------------------------------------------------------------------------- */

/*
 * Connect middleware: runs in registration order for every Socket.IO CONNECT, before the
 * namespace's own connect hook. Return 0 to go on, or the value of ps_session_deny() to refuse
 * the connection (the client gets CONNECT_ERROR and no later middleware runs). The session
 * exists already: middleware may attach data to it. `hs` stays valid while the session lives.
 */
typedef int (*ps_connect_fn)(ps_session *s, const ps_handshake *hs, void *user);
PS_EXTERN int ps_use_connect(ps_server *srv, ps_connect_fn fn, void *user);

/*
 * Marks a connecting session as refused with `message` (copied) and optional `data` (borrowed)
 * and returns PS_EDENIED, for `return ps_session_deny(s, "not authorized", NULL);`. The client
 * sees connect_error with err.message and err.data. Only meaningful inside a connect hook.
 */
PS_EXTERN int ps_session_deny(ps_session *s, const char *message, json_t *data);

/*
 * A client's request for an acknowledgement. Answer it exactly once with ps_ack_send(), inside
 * the event callback or later after ps_ack_keep(). If the callback returns without sending or
 * keeping it, pulsec sends an empty acknowledgement so that the client never waits forever.
 */
PS_EXTERN ps_ack *ps_ack_keep(ps_ack *ack);
/*
 * Sends the acknowledgement with `args` (a JSON array, borrowed; NULL = no arguments) and, for a
 * kept ack, frees it. Returns 0, PS_ECLOSED if the session closed meanwhile (the ack is freed all
 * the same), or PS_EINVAL if args is not an array.
 */
PS_EXTERN int ps_ack_send(ps_ack *ack, json_t *args);

/*
 * Raw Socket.IO events. `args` is the JSON array of the event's arguments (borrowed); `ack` is
 * NULL unless the client asked for an acknowledgement. On the main namespace, "message" events
 * carry pulsec's channel and view protocol and never reach this callback.
 */
typedef void (*ps_event_fn)(ps_session *s, const char *event, json_t *args, ps_ack *ack,
                            void *user);
/* `reason` is static text: "client disconnect", "transport close", "ping timeout", ... */
typedef void (*ps_disconnect_fn)(ps_session *s, const char *reason, void *user);

typedef struct ps_namespace_hooks {
    ps_connect_fn connect;       /* optional: after the connect middleware */
    ps_event_fn event;           /* optional: raw events */
    ps_disconnect_fn disconnect; /* optional: once per accepted session, before it is freed */
    void *user;
} ps_namespace_hooks;

/*
 * Registers a namespace ("/admin") or sets the hooks of the main one ("/", which always exists).
 * Clients connecting to any other namespace get CONNECT_ERROR "Invalid namespace". `hooks` is
 * copied. Returns 0 or PS_EINVAL.
 */
PS_EXTERN int ps_namespace(ps_server *srv, const char *name, const ps_namespace_hooks *hooks);

/* Emits `event` with `args` (a JSON array, borrowed; NULL = none). 0, PS_ECLOSED or PS_EINVAL. */
PS_EXTERN int ps_session_emit(ps_session *s, const char *event, json_t *args);

/*
 * Emits with an acknowledgement request. `cb` is called exactly once, never from inside this
 * function: with PS_OK and the ack's arguments (a JSON array, borrowed), with PS_ETIMEDOUT after
 * timeout_ms (0 = no timeout), or with PS_ECLOSED when the session closes first (args NULL).
 * Returns 0, PS_ECLOSED, PS_EINVAL, or PS_ELIMIT while max_pending_requests of this session's
 * emits with ack are unanswered. If this function returns non-zero, cb is never called.
 */
typedef void (*ps_ack_cb)(ps_session *s, int status, json_t *args, void *user);
PS_EXTERN int ps_session_emit_ack(ps_session *s, const char *event, json_t *args,
                                  uint32_t timeout_ms, ps_ack_cb cb, void *user);

/* Sends DISCONNECT to the client and closes the session (dispose and disconnect hooks run). */
PS_EXTERN int ps_session_disconnect(ps_session *s);

/* The Socket.IO socket id sent to the client (not the Engine.IO sid, which is a secret). */
PS_EXTERN const char *ps_session_id(const ps_session *s);
PS_EXTERN const char *ps_session_namespace(const ps_session *s);
PS_EXTERN const ps_handshake *ps_session_handshake(const ps_session *s);
PS_EXTERN ps_server *ps_session_server(const ps_session *s);
/*
 * App data. free_fn (optional) runs when the session is freed, after the disconnect hook and
 * after every view's dispose callback.
 */
PS_EXTERN void ps_session_set_data(ps_session *s, void *data, void (*free_fn)(void *));
PS_EXTERN void *ps_session_data(const ps_session *s);

/* ---- binary values --------------------------------------------------------------------- */

/*
 * JSON has no bytes, so pulsec carries binary values (Socket.IO attachments: a Buffer or
 * ArrayBuffer in JavaScript) inside JSON as an object with one key: {"$binary": "<base64>"}.
 * Received binary arrives in that form anywhere in event arguments, acks and channel payloads;
 * any such object in what the app sends goes out as a real binary attachment (at most 10 per
 * packet: more makes the send return PS_EINVAL).
 */
/* A new binary value holding a copy of data (new reference). */
PS_EXTERN json_t *ps_binary(const void *data, size_t len);
PS_EXTERN bool ps_is_binary(const json_t *v);
/* A copy of the bytes of a binary value, with its length, to release with free() (or the free
 * of ps_set_allocator); NULL if v is not a valid binary value. */
PS_EXTERN void *ps_binary_data(const json_t *v, size_t *len);

/* ---- views ----------------------------------------------------------------------------- */

/*
 * A view is a mounted component (Pulse's component with ps.State): a client `attach`es a path,
 * the route's init builds its state, opens its channels and sets its props (typically the
 * channel ids), and the props reach the client in `attach_ack`. The view lives until the client
 * detaches it, the session ends, or the server stops; then `dispose` runs exactly once.
 *
 * When a view goes away, in this order: dispose runs (its channels are still open: it may emit
 * and ps_off); then every channel closes (pending requests complete with PS_ECLOSED, the client
 * gets `__close__` if still connected); then the view's data destructor runs; then the view and
 * its channels and listeners are freed. Keep what request callbacks use in the view's data.
 */
typedef struct ps_view_type {
    /*
     * Builds the view. `props` are the client's attach props (borrowed; JSON null if none).
     * Return 0 to attach, or ps_view_reject(view, "text") to answer attach_error; after a
     * rejection dispose does not run, but channels opened here are closed and the data
     * destructor runs.
     */
    int (*init)(ps_view *view, json_t *props, void *user);
    /* Optional. Runs once when the view goes away (see above). */
    void (*dispose)(ps_view *view, void *user);
    void *user;
} ps_view_type;

/* Registers `path` ("/chat"). `type` is copied. 0, PS_EINVAL or PS_EEXIST. */
PS_EXTERN int ps_route(ps_server *srv, const char *path, const ps_view_type *type);

/*
 * Inside init: refuse the attach with `error` (copied). Returns PS_EDENIED.
 * On a deferred view after init (ps_view_defer): sends attach_error at once and closes the view
 * (channels closed, data destructor; no dispose, it never attached), with the lifetime rule of
 * ps_view_close(). Returns PS_EDENIED, or PS_ECLOSED if the view is already gone.
 */
PS_EXTERN int ps_view_reject(ps_view *view, const char *error);

/*
 * Sets the view's props (borrowed). Inside init they become the attach_ack's props; later the
 * client receives them in a view_props message. Returns 0 or PS_ECLOSED.
 */
PS_EXTERN int ps_view_set_props(ps_view *view, json_t *props);
/* Current props, borrowed; JSON null until set. */
PS_EXTERN json_t *ps_view_props(const ps_view *view);
PS_EXTERN const char *ps_view_path(const ps_view *view);
PS_EXTERN ps_session *ps_view_session(const ps_view *view);
PS_EXTERN bool ps_view_closed(const ps_view *view);
/*
 * Ends the view from the server side, as a detach would: dispose, channels closed (the client
 * gets `__close__` for each), data destructor. Safe inside the view's own callbacks. The
 * pointer stays valid until the outermost pulsec callback on the stack returns. 0 or PS_ECLOSED.
 */
PS_EXTERN int ps_view_close(ps_view *view);
/* App data; free_fn (optional) runs after dispose and after every channel has closed. */
PS_EXTERN void ps_view_set_data(ps_view *view, void *data, void (*free_fn)(void *));
PS_EXTERN void *ps_view_data(const ps_view *view);
/*
 * Inside init: the answer to the attach comes later, for views built asynchronously (the Python
 * binding's async view functions). init returns 0 after this, and the client hears nothing
 * until the app calls ps_view_accept() (attach_ack with the props set meanwhile) or
 * ps_view_reject() (attach_error). Meanwhile the view counts against max_views_per_session and
 * may open channels, emit and set props. If it goes away first (detach, disconnect, server
 * stop), its data destructor is how the app learns it; dispose does not run, as the view never
 * attached. Returns 0, or PS_EINVAL outside init.
 */
PS_EXTERN int ps_view_defer(ps_view *view);
/*
 * Sends the attach_ack of a deferred view with its current props; from then on the view is
 * attached as if init had returned 0 (dispose runs when it goes away). Callable from anywhere on
 * the loop thread. Returns 0, PS_ECLOSED if the view went away meanwhile, or PS_EINVAL if it was
 * not deferred or init is still running.
 */
PS_EXTERN int ps_view_accept(ps_view *view);

/* ---- channels -------------------------------------------------------------------------- */

/*
 * Opens a channel owned by `view`, with a new id of 32 lowercase hex characters from the kernel
 * CSPRNG. Returns NULL if the view is going away or its session has max_channels_per_session
 * open channels. The pointer stays valid (ps_channel_closed
 * then says true) until the view is freed, after its dispose callback.
 */
PS_EXTERN ps_channel *ps_channel_open(ps_view *view);
/* The id to hand to the client (usually through the view's props). Static for the channel. */
PS_EXTERN const char *ps_channel_id(const ps_channel *ch);
PS_EXTERN bool ps_channel_closed(const ps_channel *ch);
PS_EXTERN ps_view *ps_channel_view(const ps_channel *ch);
/*
 * Closes the channel: pending requests complete with PS_ECLOSED, pending replies become no-ops,
 * listeners are dropped, and the client gets `__close__`. Safe inside the channel's own
 * handlers. Returns 0, or PS_ECLOSED if it was closed already.
 */
PS_EXTERN int ps_channel_close(ps_channel *ch);

/*
 * A handler for `event` on a channel. `payload` is borrowed (JSON null if absent). `reply` is
 * NULL for fire-and-forget events; for requests it is the answer owed to the client: answer with
 * ps_reply_ok/ps_reply_error inside the handler, or ps_reply_keep() it and answer later. The
 * first answer wins; if no listener answers or keeps it, the client gets null.
 */
typedef void (*ps_handler)(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                           void *user);

/*
 * Adds a listener (several per event are called in registration order; event "*" receives
 * every event). Returns NULL if the channel is closed or the arguments are invalid. The
 * listener stays allocated until its channel is freed, so ps_off() may be called any number of
 * times, including from inside any handler and after the channel closed.
 */
PS_EXTERN ps_listener *ps_on(ps_channel *ch, const char *event, ps_handler h, void *user);
PS_EXTERN void ps_off(ps_listener *l);

/*
 * The raw-payload API, beside ps_on: a handler that gets the payload as JSON text instead of a
 * json_t, for handlers that pass it on, store it or answer with it, and so need no tree. The
 * text is what the client sent, already checked like every packet (valid UTF-8, JSON grammar,
 * limits): `payload` points at `len` bytes of one JSON value (not NUL-terminated; "null" when
 * the message had none), borrowed until the handler returns. Binary values arrive as
 * {"$binary": base64} objects, as for ps_on. When no listener of the event and no message
 * middleware needs a json_t, the server builds none for the message. `reply` as for ps_on.
 * ps_off removes either kind. Returns NULL as ps_on does.
 */
typedef void (*ps_raw_handler)(ps_channel *ch, const char *event, const char *payload, size_t len,
                               ps_reply *reply, void *user);
PS_EXTERN ps_listener *ps_on_raw(ps_channel *ch, const char *event, ps_raw_handler h, void *user);

/* Sends a fire-and-forget event. `payload` borrowed (NULL = null). 0, PS_ECLOSED, PS_EINVAL. */
PS_EXTERN int ps_emit(ps_channel *ch, const char *event, json_t *payload);
/*
 * Sends an event whose payload is given as JSON text (`len` bytes of one JSON value, borrowed,
 * for example a payload a ps_on_raw handler received). The text is checked (PS_EINVAL when it
 * is not valid JSON or UTF-8) and sent as it is: {"$binary": ...} objects in it go out as plain
 * objects, not as attachments. 0, PS_ECLOSED, PS_EINVAL.
 */
PS_EXTERN int ps_emit_raw(ps_channel *ch, const char *event, const char *json, size_t len);

/*
 * Sends a request to the client. `cb` is called exactly once, never from inside ps_request:
 * PS_OK with the reply payload (borrowed), PS_EREMOTE with the client's error text, PS_ETIMEDOUT
 * after timeout_ms (0 = no timeout), PS_ECLOSED when the channel closes first, or PS_ECANCELED
 * from ps_request_cancel(). Returns 0, or PS_ECLOSED / PS_EINVAL / PS_ELIMIT
 * (max_pending_requests in flight); cb is then never called.
 */
typedef void (*ps_response_cb)(ps_channel *ch, int status, json_t *payload, const char *error,
                               void *user);
PS_EXTERN int ps_request(ps_channel *ch, const char *event, json_t *payload, uint32_t timeout_ms,
                         ps_response_cb cb, void *user);
/*
 * Abandons a pending request that ps_request() made on `ch` with this cb and user (the oldest
 * such, if several): its callback runs at once, inside this call, with PS_ECANCELED, which is its
 * one completion; a late answer from the client is dropped. The client is not told (the wire
 * protocol has no cancel). For waits that can be given up, such as a cancelled asyncio task.
 * Returns 0, PS_ENOTFOUND if no such request is pending (it completed already), or PS_EINVAL.
 */
PS_EXTERN int ps_request_cancel(ps_channel *ch, ps_response_cb cb, void *user);

/*
 * Defers the answer: returns a handle that the app must later pass to exactly one
 * ps_reply_ok/ps_reply_error (which frees it). The handler's own `reply` must not be used after
 * the handler returns.
 */
PS_EXTERN ps_reply *ps_reply_keep(ps_reply *reply);
/*
 * Answers with `payload` (borrowed; NULL = null) / with an error text (copied). Returns 0,
 * PS_EALREADY if another answer won, or PS_ECLOSED if the channel has closed. A kept handle is
 * freed by this call whatever it returns.
 */
PS_EXTERN int ps_reply_ok(ps_reply *reply, json_t *payload);
PS_EXTERN int ps_reply_error(ps_reply *reply, const char *error);
/*
 * Answers with a payload given as JSON text, as ps_emit_raw sends it (checked, sent as it is).
 * Returns what ps_reply_ok returns, or PS_EINVAL when the text is not valid JSON: then nothing
 * is sent, the request is still owed and a kept handle is not freed (answer it again).
 */
PS_EXTERN int ps_reply_raw(ps_reply *reply, const char *json, size_t len);

/* ---- topics ---------------------------------------------------------------------------- */

/*
 * A topic is a named group of channels (a chat room, a dashboard feed). A publish to it reaches
 * every channel joined to it as an ordinary channel event: the client sees it with
 * bridge.on(event), as if the server had called ps_emit() on each channel, and needs nothing
 * new. The event and payload are serialised once per publish, not once per member. Topic names
 * are 1..PS_TOPIC_MAX bytes of UTF-8; compare bytes, case-sensitively.
 */
#define PS_TOPIC_MAX 200

/*
 * Joins the channel to `topic` (copied). Joining a topic the channel is in already does nothing
 * and returns 0. The membership ends with ps_leave() or when the channel closes (however it
 * closes). Callable wherever the channel may be used, its own handlers included. Returns 0,
 * PS_EINVAL (no or invalid name), PS_ECLOSED (channel closed), or PS_ELIMIT: the channel is in
 * max_topics_per_channel topics, or the process has max_topics topics with members.
 */
PS_EXTERN int ps_join(ps_channel *ch, const char *topic);
/* Leaves `topic`. Returns 0, PS_ENOTFOUND (not a member), PS_EINVAL or PS_ECLOSED. */
PS_EXTERN int ps_leave(ps_channel *ch, const char *topic);

/*
 * Publishes `event` with `payload` (borrowed; NULL = null) to every channel joined to `topic`.
 * Members in this process receive it before this returns (queued on their connections like any
 * ps_emit); members in other processes receive it later, if at all (see docs/API.md#topics for
 * the guarantees). May be called from any pulsec callback. `event` must be a valid channel event
 * name other than "__close__". Returns 0, PS_EINVAL (invalid topic or event), or PS_ECLOSED once
 * the server is stopping.
 */
PS_EXTERN int ps_publish(ps_server *srv, const char *topic, const char *event, json_t *payload);
/* The same, skipping the channel `except` (the sender, for "everyone but me"); NULL skips none. */
PS_EXTERN int ps_publish_except(ps_server *srv, const char *topic, const char *event,
                                json_t *payload, ps_channel *except);

/*
 * Sends one command to the Redis of opts.redis_url, on this process's own connection (the one
 * that publishes), for app data that every node must share (a chat's history, say). `argv` is a
 * non-empty JSON array of strings (borrowed), e.g. ["LRANGE", "history", "0", "-1"]. cb runs
 * exactly once, never from inside this call: PS_OK with the reply as JSON (a string, an
 * integer, an array of those, or null; a Redis status reply such as "OK" is a string), or
 * PS_EREMOTE with Redis's error text as a JSON string, or PS_ECLOSED (reply NULL) when the
 * connection broke first. The reply is borrowed. Returns 0; PS_EINVAL (no Redis configured, or
 * bad argv); PS_ECLOSED while Redis is not connected (the command is not sent); PS_ELIMIT when
 * max_redis_queued bytes are unanswered. If it returns non-zero, cb is never called.
 */
typedef void (*ps_redis_cb)(ps_server *srv, int status, json_t *reply, void *user);
PS_EXTERN int ps_redis_command(ps_server *srv, json_t *argv, ps_redis_cb cb, void *user);

/* ---- message middleware ---------------------------------------------------------------- */

/* What a client sent on a channel, as message middleware sees it. */
typedef struct ps_message {
    ps_channel *channel;    /* the open channel it is for */
    const char *event;      /* the event name */
    json_t *payload;        /* borrowed */
    bool is_request;        /* a reply is expected */
    const char *deny_error; /* set with a denial: the error text a request gets ("denied") */
} ps_message;

/*
 * Per-message middleware: runs in registration order for every client event or request on an
 * open channel, before any listener. Return 0 to go on, non-zero to deny (a denied request gets
 * an error reply with msg->deny_error). 0 or PS_EINVAL.
 */
typedef int (*ps_message_fn)(ps_session *s, ps_message *msg, void *user);
PS_EXTERN int ps_use_message(ps_server *srv, ps_message_fn fn, void *user);

#ifdef __cplusplus
}
#endif

#endif /* PULSEC_H */
