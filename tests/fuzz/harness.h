/*
 * harness: what the libFuzzer targets share. A connection without a network: a ps__conn on one
 * end of a socketpair, listed on a listener that never listens, so that http and websocket run
 * on it exactly as on an accepted TCP connection. Input reaches the connection through its
 * on_read callback, the way net.c delivers it, in chunks whose size the input chooses; each
 * chunk is its own heap copy, freed as soon as on_read returns, so that a pointer kept into a
 * read buffer is a use-after-free that ASan reports. What the connection writes lands in the
 * other end of the socketpair and is read and dropped after every chunk.
 *
 * Between chunks the loop runs once without waiting (shutdowns, closes, zero-delay timers), as
 * it would between two reads. At the end of an input every connection is aborted and the loop
 * runs until nothing is left; a handle or connection still alive then is a leak, and the
 * target aborts (the fuzzing equivalent of PS_ASSERT_LOOP_CLEAN).
 */
#ifndef PS_FUZZ_HARNESS_H
#define PS_FUZZ_HARNESS_H

#include "websocket.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A failed invariant: print it and abort, which libFuzzer reports as a crash with the input. */
#define FZ_CHECK(expr)                                                                             \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expr);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* libFuzzer's entry points, which every target defines. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX_CONNS 8

typedef struct fz_slot {
    ps__conn *conn;         /* NULL when free */
    ps__listener *listener; /* the list it is on */
    int peer_fd;            /* our end of its socketpair */
} fz_slot;

typedef struct fz_env {
    uv_loop_t *loop;       /* one loop for the whole run, clean between inputs */
    ps__listener listener; /* never listens: holds the connection list and the read buffer */
    fz_slot slots[FZ_MAX_CONNS];
    size_t out_bytes;   /* bytes the connections wrote during this input */
    unsigned ws_opened; /* WebSockets made by fz_ws_upgrade during this input */
    unsigned ws_closed; /* their on_close calls: must match at the end */
} fz_env;

/* Once per process: quiet logs, SIGPIPE ignored, the shared loop. */
fz_env *fz_env_get(void);

/*
 * A fresh connection, as if just accepted by `l` (NULL: the harness's own listener, which never
 * listens). Its owner attaches next (ps__http_attach, or l->on_conn). NULL when every slot is
 * taken by a live connection.
 */
ps__conn *fz_conn_new(fz_env *env, ps__listener *l);
/* True while c is still on its listener (not yet freed by its close callback). */
bool fz_conn_alive(fz_env *env, ps__conn *c);
/* One read of len bytes, delivered as net.c does (nothing once the connection is closing), then
 * one turn of the loop. Returns false when the connection is gone or closing. */
bool fz_conn_read(fz_env *env, ps__conn *c, const uint8_t *data, size_t len);
/* Delivers data in reads of at most `chunk` bytes; false if the connection went away. */
bool fz_conn_read_chunked(fz_env *env, ps__conn *c, const uint8_t *data, size_t len, size_t chunk);
/* The peer's FIN, as net.c reports it. */
void fz_conn_eof(fz_env *env, ps__conn *c);
/* One turn of the loop without waiting, with the peers' output drained around it. */
void fz_loop_turn(fz_env *env);
/* Aborts every live connection and turns the loop until they are all freed (bounded). */
void fz_conns_abort(fz_env *env);
/* Ends the input: aborts every connection, runs the loop dry, checks nothing is left. */
void fz_env_finish(fz_env *env);

/* Read sizes the first byte of an input picks from (its low 3 bits). */
size_t fz_chunk_size(uint8_t sel);

/*
 * Upgrades req with an echo WebSocket and starts it: a text message "close" closes with 1000,
 * "abort" aborts, anything else is echoed back. Returns what ps__ws_upgrade returned (it has
 * answered req either way).
 */
ps__ws *fz_ws_upgrade(fz_env *env, ps__http_req *req, const ps__ws_opts *opts);

/* A valid WebSocket handshake for /ws, as a browser sends it (RFC 6455 §1.3's key). */
#define FZ_WS_REQUEST                                                                              \
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"         \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

#endif
