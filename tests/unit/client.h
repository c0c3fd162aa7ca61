/*
 * client: what the integration tests of the C suite share. A harness runs a real ps_server on
 * 127.0.0.1 (port 0) on a loop in the test's main thread, while a client thread drives it with
 * plain blocking POSIX sockets: HTTP requests and responses, and a tiny RFC 6455 client that
 * masks its frames (or deliberately does not). The client thread ends the run with ts_stop(),
 * which goes through ps_server_post(), so every run also exercises the thread-safe post.
 *
 * Every helper fails the test (ending the process) on anything unexpected, and every read has a
 * 5 s timeout, so a server that hangs fails instead of blocking forever.
 */
#ifndef PS_TEST_CLIENT_H
#define PS_TEST_CLIENT_H

#include "common.h"
#include "test.h"

#include <pulsec.h>
#include <sys/types.h>

/* ---- harness --------------------------------------------------------------------------- */

typedef struct ts ts;
typedef void (*ts_fn)(ts *t);

struct ts {
    uv_loop_t loop; /* the server's loop, run by the main thread */
    ps_server *srv;
    ps_server_opts opts; /* as given to ts_run (zero fields mean the defaults) */
    int port;            /* bound port */
    ts_fn client;        /* runs in its own thread; must end with ts_stop() */
    void *user;          /* the test's own data */
    uv_thread_t thread;
};

/*
 * Creates a server with opts on a fresh loop, calls setup (optional, loop thread, before
 * listening), listens on 127.0.0.1:0, runs `client` in a thread and the server with
 * ps_server_run() here until it has stopped, then joins the thread, frees the server and checks
 * that the loop is clean.
 */
void ts_run(const ps_server_opts *opts, ts_fn setup, ts_fn client, void *user);
/* From the client thread: asks the server (through ps_server_post) to stop. */
void ts_stop(ts *t);
/* From the client thread: runs fn(t) on the loop thread and waits until it has returned. */
void ts_on_loop(ts *t, ts_fn fn);
/* From the client thread: the server's counters, read on the loop thread. */
void ts_stats(ts *t, ps_server_stats *out);

/* ---- raw TCP client -------------------------------------------------------------------- */

typedef struct tc {
    int fd;
    ps__buf in; /* bytes received and not yet consumed */
} tc;

tc *tc_connect(int port);
/* Closes the socket (if still open) and frees the client. */
void tc_free(tc *c);
/* Closes the socket now; with `reset` the kernel sends RST instead of FIN. */
void tc_close(tc *c, bool reset);
void tc_send(tc *c, const void *data, size_t len);
void tc_sends(tc *c, const char *s);
/* Sends, ignoring errors (the server may have closed already). */
void tc_send_try(tc *c, const void *data, size_t len);
/* Reads once more into c->in: > 0 bytes read, 0 at EOF, -1 on a reset. Fails on timeout. */
ssize_t tc_fill(tc *c);
/* The server must close the connection without sending anything more. */
void tc_expect_eof(tc *c);

typedef struct tresp {
    int status;
    ps__buf head; /* status line and header lines, NUL-terminated, without the blank line */
    ps__buf body;
} tresp;

/* Reads exactly one response; it must carry Content-Length. */
void tc_read_response(tc *c, tresp *r);
/* The same for the answer to a HEAD request: the head only, whatever Content-Length says. */
void tc_read_head_response(tc *c, tresp *r);
/* Copies a header's value into out (case-insensitive name); false when absent. */
bool tresp_header(const tresp *r, const char *name, char *out, size_t outlen);
void tresp_free(tresp *r);
/* One whole request on a new connection: returns the status, fills r (caller frees). */
int tc_request(int port, const char *request, tresp *r);

/* ---- WebSocket ------------------------------------------------------------------------- */

enum { WS_CONT = 0, WS_TEXT = 1, WS_BINARY = 2, WS_CLOSE = 8, WS_PING = 9, WS_PONG = 10 };

/* Upgrades with a fresh key; checks 101 and Sec-WebSocket-Accept. `extra` may hold more bytes
 * to send in the same write as the request (frames pipelined behind the handshake). */
void tc_ws_handshake(tc *c, const char *target, const void *extra, size_t extra_len);
/* Encodes one frame; with `mask`, masked with a random key as a client must. */
void tc_ws_frame(ps__buf *out, bool fin, int opcode, const void *data, size_t len, bool mask);
void tc_ws_send(tc *c, bool fin, int opcode, const void *data, size_t len, bool mask);
/* Masked text frame. */
void tc_ws_text(tc *c, const char *text);

typedef struct tframe {
    bool fin;
    int opcode;
    ps__buf payload;
} tframe;

/* Reads one frame (server frames must be unmasked); false at EOF or reset. */
bool tc_ws_read(tc *c, tframe *f);
void tframe_free(tframe *f);
/* The next frame must be a final text frame with exactly `text`. */
void tc_ws_expect_text(tc *c, const char *text);
/* The next frame must be a final text frame; returns its payload (ps__free it). */
char *tc_ws_read_text(tc *c);
/*
 * Reads frames until a close frame (fails on EOF first), answers it with a masked close frame
 * and checks that the server then ends the TCP connection. Returns the close code (1005 when
 * the frame had none).
 */
int tc_ws_expect_close(tc *c);

/* Engine.IO: connects, upgrades on /socket.io/, reads and checks the open packet, returns the
 * client with the session id in sid (21 bytes). */
tc *tc_eio_open(ts *t, char sid[PS__SID_LEN + 1]);
/* Same, then Socket.IO CONNECT to "/" (sends "40", expects "40{"sid":...}"). */
tc *tc_sio_connect(ts *t);

#endif
