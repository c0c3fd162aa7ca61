/*
 * net: the only module that talks to libuv's TCP and timer handles. A listener accepts
 * connections; a connection delivers bytes upward through a small callback table and accepts
 * bytes to write (copied, so callers never keep buffers alive). Closing is asynchronous: the
 * upper layer is told once, in on_close, and the connection's memory is released right after.
 */
#ifndef PS_NET_H
#define PS_NET_H

#include "common.h"

#include <uv.h>

typedef struct ps__conn ps__conn;
typedef struct ps__listener ps__listener;
typedef struct ps__conn_filter ps__conn_filter;

typedef struct ps__conn_cbs {
    /* Bytes arrived; `data` is valid only during the call. */
    void (*on_read)(ps__conn *c, const char *data, size_t len);
    /* The peer closed (EOF) or the socket failed; the connection is closing now. */
    void (*on_eof)(ps__conn *c);
    /* Fully closed: the last callback. The connection is freed when it returns. */
    void (*on_close)(ps__conn *c);
    /* Optional: output that went over PS__CONN_HIGH_WATER (the connection stopped reading) has
     * drained to half of it and reads resumed: the owner may produce more. */
    void (*on_drained)(ps__conn *c);
} ps__conn_cbs;

/*
 * A layer between the socket and the connection's owner (TLS, src/tls.c): it sees every byte
 * read before the owner does and every byte the owner writes before the socket does, so the
 * owner never knows it is there. net knows it only through this table.
 */
typedef struct ps__conn_filter_ops {
    /* Bytes read from the socket; the filter passes what the owner should see to
     * ps__conn_deliver (and an end to ps__conn_deliver_eof). */
    void (*on_read)(ps__conn *c, const char *data, size_t len);
    /* What the owner writes; the filter puts its own bytes on the wire with ps__conn_write_raw.
     * Returns what ps__conn_writev returns. */
    int (*writev)(ps__conn *c, const uv_buf_t *bufs, size_t n);
    /* Reads go on after a pause or throttle: deliver what the filter still holds. */
    void (*on_resume)(ps__conn *c);
    /* A graceful close begins, before the FIN: the filter's last words (close_notify). */
    void (*on_close)(ps__conn *c);
    /* The connection is being freed, after the owner's on_close. */
    void (*free)(ps__conn *c);
} ps__conn_filter_ops;

struct ps__conn_filter {
    const ps__conn_filter_ops *ops;
};

struct ps__conn {
    uv_tcp_t tcp;             /* must stay first: libuv hands this pointer back */
    const ps__conn_cbs *cbs;  /* current owner's callbacks (changes on upgrade) */
    void *data;               /* current owner's object */
    ps__conn_filter *filter;  /* NULL for plain TCP */
    ps__listener *listener;   /* the listener that accepted it */
    ps__list link;            /* in listener->conns */
    size_t write_queued;      /* bytes handed to libuv and not yet written */
    bool closing;             /* close requested: no more reads or writes */
    bool paused;              /* reads stopped by the owner */
    bool throttled;           /* reads stopped while the peer is slow to take our output */
    bool peer_done;           /* EOF or a read error seen: nothing more will arrive */
    bool deferred;            /* filled its read budget: waits for its turn (listener->busy) */
    bool lingering;           /* our FIN is out: only waiting for the peer's EOF */
    struct ps__timer *linger; /* from ps__conn_close on: the close's deadline */
    struct ipc_msg *handoff;  /* a hand-over waiting for this connection's output to drain */
    struct cork_buf *cork;    /* output gathered during a corked loop pass (ps__listener_cork) */
    char peer[40];            /* "127.0.0.1"; textual IPv6 is at most 39 characters */
};

struct ps__listener {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    void (*on_conn)(ps__listener *l, ps__conn *c); /* set c->cbs and c->data here */
    void *data;
    ps__list conns; /* every connection not yet freed */
    size_t nconns;
    size_t nlingering; /* of nconns: answered and FIN sent, only waiting for the peer's EOF */
    uint32_t close_timeout_ms; /* see ps__conn_close; 0 = PS__CONN_CLOSE_TIMEOUT_MS */
    int port;
    bool listening;
    bool closed;
    /* Busy connections (see PS__CONN_READ_BUDGET), in the order they read last, waiting for
     * their turn; the idle handle gives turns at the start of each loop pass. */
    uv_idle_t turns;
    ps__conn **busy;
    size_t nbusy, busy_cap;
    int handles; /* of tcp and turns, not yet closed */
    void (*on_closed)(ps__listener *l);
    void (*on_conn_gone)(ps__listener *l); /* optional: after each connection is freed */
    bool corked;                           /* writes are gathered until the end of this loop pass */
    ps__list dirty;                        /* cork_buf of connections holding gathered output */
    struct corker *corker;   /* the check and prepare handles that flush, made by the first cork */
    char readbuf[64 * 1024]; /* reads are consumed synchronously, so one buffer serves all */
};

/*
 * Fairness. A connection reads at most PS__CONN_READ_BUDGET per loop pass (libuv would read up
 * to 32 times 64 KiB from one socket before serving the next). A read that fills it makes the
 * connection busy: it stops reading, the rest of its input waits in the kernel, in order, and
 * busy connections then read in turns, PS__CONN_BUSY_TURNS of them per pass, the one that read
 * longest ago first. Connections that are not busy (every client whose messages are smaller
 * than the budget) read whenever they have input. So a pass does the work of at most that many
 * budgets of heavy input, plus the rest: when twenty clients send 1 MB messages as fast as they
 * can, the messages they complete are spread over passes instead of landing in one, and a
 * light client beside them waits for at most one of them. One place for the whole stack: every
 * byte a connection processes (HTTP, WebSocket, Engine.IO, TLS) comes through here.
 */
#define PS__CONN_READ_BUDGET (64u * 1024u)
#define PS__CONN_BUSY_TURNS 1

int ps__listener_init(ps__listener *l, uv_loop_t *loop);
/* Binds host:port (port 0 picks one) and starts accepting; returns 0 or a UV_E* code. */
int ps__listener_start(ps__listener *l, const char *host, int port, int backlog);
/* Stops accepting and closes the listening socket; on_closed runs when it is released.
 * Connections still open go on without turns. */
void ps__listener_close(ps__listener *l, void (*on_closed)(ps__listener *l));

/*
 * Like ps__listener_start, on a socket made here with SO_REUSEPORT (libuv 1.44 has no flag for
 * it; the socket is handed to uv_tcp_open), so that several processes listen on one port and the
 * kernel spreads incoming connections over them.
 */
int ps__listener_start_shared(ps__listener *l, const char *host, int port, int backlog);
/*
 * A socket bound to host:port with SO_REUSEPORT that never listens: it holds the port (port 0
 * picks one, stored in *bound_port) for processes that bind it with ps__listener_start_shared.
 * host is resolved as ps__listener_start resolves it (on `loop`, synchronously).
 * Returns the descriptor (close-on-exec) or a UV_E* code.
 */
int ps__port_reserve(uv_loop_t *loop, const char *host, int port, int *bound_port);
/* In a child after fork(): gives the inherited loop kernel state of its own (uv_loop_fork). */
int ps__loop_fork(uv_loop_t *loop);
/* Starts reading a connection that came from ps__ipc, once its owner is attached. */
void ps__conn_start(ps__conn *c);

/*
 * Corks the listener's connections until the end of this loop pass: from now on, what is
 * written to any of them is gathered per connection and written once, by an idle handle at the
 * start of the next pass (the loop does not block in between). A topic fan-out calls it, so that
 * the members reached by N publishes in one pass (a publisher's burst) cost one write(2) each
 * instead of N. Order per connection is kept; gathered bytes count as queued (backpressure, slow
 * consumers).
 */
void ps__listener_cork(ps__listener *l);

/*
 * Output a peer has not taken yet beyond which its connection stops being read (and so stops
 * making us produce more): a peer that sends without reading cannot grow our memory without
 * bound. Reads resume once half of it has been written.
 */
#define PS__CONN_HIGH_WATER (1024u * 1024u)

/* Copies data and queues it; returns 0, or UV_EPIPE after close was requested. */
int ps__conn_write(ps__conn *c, const void *data, size_t len);
/* For a filter: writes to the socket, past the filter. */
int ps__conn_write_raw(ps__conn *c, const void *data, size_t len);
/* For a filter: hands bytes (valid during the call) to the owner, as a read would. */
void ps__conn_deliver(ps__conn *c, const char *data, size_t len);
/* For a filter: the peer is done (as an EOF would say); the owner decides how to finish. */
void ps__conn_deliver_eof(ps__conn *c);
/* Same for several pieces, written as one. */
int ps__conn_writev(ps__conn *c, const uv_buf_t *bufs, size_t n);
/*
 * Flushes queued writes, sends FIN, then reads and discards until the peer's EOF or
 * PS__CONN_LINGER_MS have passed, and only then closes. Closing a socket that still has
 * unread input makes the kernel send RST, and an RST can destroy our last answer (a 413 to
 * a body still arriving) in the peer's receive buffer before it is read. The whole close takes
 * at most the listener's close_timeout_ms, however the peer behaves: a peer that never reads
 * (its window stays zero) would hold the flush, and so the connection, forever; at the
 * deadline the connection is aborted. Idempotent.
 */
#define PS__CONN_LINGER_MS 2000
#define PS__CONN_CLOSE_TIMEOUT_MS 10000
void ps__conn_close(ps__conn *c);
/* Closes now, dropping queued writes (peer misbehaved or shutdown grace expired). */
void ps__conn_abort(ps__conn *c);
void ps__conn_pause(ps__conn *c);
void ps__conn_resume(ps__conn *c);

/*
 * IPC: framed messages between processes of one machine over unix-socket pipes, each message
 * optionally carrying a TCP connection (its descriptor, through uv_write2 and SCM_RIGHTS).
 * Frames are [u32 length, big-endian][u8 has_conn][message]; the message is opaque here.
 */
typedef struct ps__ipc ps__ipc;
typedef struct ps__ipc_server ps__ipc_server;

typedef struct ps__ipc_cbs {
    /* A whole message (valid during the call). `conn`, when one came with it, is a new
     * connection of the server's adopting listener, not reading yet: attach an owner, then
     * ps__conn_start() it, or ps__conn_abort() it. */
    void (*on_message)(ps__ipc *p, const char *data, size_t len, ps__conn *conn);
    /* Optional: the pipe ended by itself (peer gone, error); p is freed after this returns. */
    void (*on_close)(ps__ipc *p);
} ps__ipc_cbs;

/* The largest message accepted on a pipe; a larger frame ends the pipe. */
#define PS__IPC_MAX_MESSAGE (64u * 1024 * 1024)

/*
 * Listens on the unix socket `path` (a stale file there is replaced). Messages from every pipe
 * accepted go to cbs, with ps__ipc_data() = data; connections passed along become connections
 * of `adopt`. Returns NULL with *rc set on failure.
 */
ps__ipc_server *ps__ipc_listen(uv_loop_t *loop, const char *path, ps__listener *adopt,
                               const ps__ipc_cbs *cbs, void *data, int *rc);
/* Closes the listening pipe and every pipe it accepted; memory goes with the close callbacks. */
void ps__ipc_server_close(ps__ipc_server *s);

/* Connects to `path`; sends wait until connected. Never NULL: a failed connect shows in
 * ps__ipc_failed() and fails the queued sends. */
ps__ipc *ps__ipc_connect(uv_loop_t *loop, const char *path, const ps__ipc_cbs *cbs, void *data);
/*
 * Queues one message, head + body (both copied). With `pass`, the connection goes along: it is
 * paused now, its own pending output is written first, and once sent it is closed here (the
 * receiver holds it from then on). done(user, NULL, 0) on success; on failure
 * done(user, pass, status) with pass still open and still the caller's (or NULL if it closed
 * meanwhile). Returns 0 (done follows, exactly once, never from inside this call) or a UV_E*
 * code (done is not called).
 */
int ps__ipc_send(ps__ipc *p, const void *head, size_t hlen, const void *body, size_t blen,
                 ps__conn *pass, void (*done)(void *user, ps__conn *pass, int status), void *user);
/* Bytes of messages queued or being written. */
size_t ps__ipc_queued(const ps__ipc *p);
/* The connect failed or the pipe broke: nothing more can be sent on it. */
bool ps__ipc_failed(const ps__ipc *p);
/* Closes the pipe; sends not yet written complete with UV_ECANCELED. Not for accepted pipes. */
void ps__ipc_close(ps__ipc *p);
void *ps__ipc_data(const ps__ipc *p);

/* Name resolution on libuv's thread pool (hiredis would resolve on the loop, blocking it). cb
 * gets 0 and the first address as text, or a UV_E* code; never from inside ps__resolve. NULL
 * when the request could not start. */
typedef struct ps__resolve_req ps__resolve_req;
typedef void (*ps__resolve_cb)(void *user, int status, const char *ip);
ps__resolve_req *ps__resolve(uv_loop_t *loop, const char *host, ps__resolve_cb cb, void *user);
/* cb will not run. */
void ps__resolve_cancel(ps__resolve_req *r);

/* Puts a hiredis async context on the loop (hiredis's libuv adapter, with its poll-error bug
 * fixed: see net.c). 0 or UV_ENOMEM. */
struct redisAsyncContext;
int ps__redis_attach(struct redisAsyncContext *ac, uv_loop_t *loop);

/* One-shot timers that free themselves: ps__timer_free() never waits and cb never runs after. */
typedef struct ps__timer ps__timer;
typedef void (*ps__timer_cb)(ps__timer *t, void *data);
ps__timer *ps__timer_new(uv_loop_t *loop, ps__timer_cb cb, void *data);
void ps__timer_start(ps__timer *t, uint64_t ms);
void ps__timer_stop(ps__timer *t);
bool ps__timer_active(const ps__timer *t);
/* Milliseconds until an active timer fires (0 if it is not active). */
uint64_t ps__timer_due_in(const ps__timer *t);
void ps__timer_free(ps__timer *t);
/* The loop's time in milliseconds (uv_now): what timers count from. */
uint64_t ps__loop_now(uv_loop_t *loop);

#endif
