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

typedef struct ps__conn_cbs {
    /* Bytes arrived; `data` is valid only during the call. */
    void (*on_read)(ps__conn *c, const char *data, size_t len);
    /* The peer closed (EOF) or the socket failed; the connection is closing now. */
    void (*on_eof)(ps__conn *c);
    /* Fully closed: the last callback. The connection is freed when it returns. */
    void (*on_close)(ps__conn *c);
} ps__conn_cbs;

struct ps__conn {
    uv_tcp_t tcp;             /* must stay first: libuv hands this pointer back */
    const ps__conn_cbs *cbs;  /* current owner's callbacks (changes on upgrade) */
    void *data;               /* current owner's object */
    ps__listener *listener;   /* the listener that accepted it */
    ps__list link;            /* in listener->conns */
    size_t write_queued;      /* bytes handed to libuv and not yet written */
    bool closing;             /* close requested: no more reads or writes */
    bool paused;              /* reads stopped by the owner */
    bool throttled;           /* reads stopped while the peer is slow to take our output */
    bool peer_done;           /* EOF or a read error seen: nothing more will arrive */
    struct ps__timer *linger; /* while lingering after our FIN (see ps__conn_close) */
    char peer[48];            /* "127.0.0.1" */
};

struct ps__listener {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    void (*on_conn)(ps__listener *l, ps__conn *c); /* set c->cbs and c->data here */
    void *data;
    ps__list conns; /* every connection not yet freed */
    size_t nconns;
    size_t nlingering; /* of nconns: answered and FIN sent, only waiting for the peer's EOF */
    int port;
    bool listening;
    bool closed;
    void (*on_closed)(ps__listener *l);
    void (*on_conn_gone)(ps__listener *l); /* optional: after each connection is freed */
    char readbuf[64 * 1024]; /* reads are consumed synchronously, so one buffer serves all */
};

int ps__listener_init(ps__listener *l, uv_loop_t *loop);
/* Binds host:port (port 0 picks one) and starts accepting; returns 0 or a UV_E* code. */
int ps__listener_start(ps__listener *l, const char *host, int port, int backlog);
/* Stops accepting and closes the listening socket; on_closed runs when it is released. */
void ps__listener_close(ps__listener *l, void (*on_closed)(ps__listener *l));

/*
 * Output a peer has not taken yet beyond which its connection stops being read (and so stops
 * making us produce more): a peer that sends without reading cannot grow our memory without
 * bound. Reads resume once half of it has been written.
 */
#define PS__CONN_HIGH_WATER (1024u * 1024u)

/* Copies data and queues it; returns 0, or UV_EPIPE after close was requested. */
int ps__conn_write(ps__conn *c, const void *data, size_t len);
/* Same for several pieces, written as one. */
int ps__conn_writev(ps__conn *c, const uv_buf_t *bufs, size_t n);
/*
 * Flushes queued writes, sends FIN, then reads and discards until the peer's EOF or
 * PS__CONN_LINGER_MS have passed, and only then closes. Closing a socket that still has
 * unread input makes the kernel send RST, and an RST can destroy our last answer (a 413 to
 * a body still arriving) in the peer's receive buffer before it is read. Idempotent.
 */
#define PS__CONN_LINGER_MS 2000
void ps__conn_close(ps__conn *c);
/* Closes now, dropping queued writes (peer misbehaved or shutdown grace expired). */
void ps__conn_abort(ps__conn *c);
void ps__conn_pause(ps__conn *c);
void ps__conn_resume(ps__conn *c);

/* One-shot timers that free themselves: ps__timer_free() never waits and cb never runs after. */
typedef struct ps__timer ps__timer;
typedef void (*ps__timer_cb)(ps__timer *t, void *data);
ps__timer *ps__timer_new(uv_loop_t *loop, ps__timer_cb cb, void *data);
void ps__timer_start(ps__timer *t, uint64_t ms);
void ps__timer_stop(ps__timer *t);
bool ps__timer_active(const ps__timer *t);
void ps__timer_free(ps__timer *t);

#endif
