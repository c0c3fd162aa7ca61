/*
 * worker: N processes of one server on one port (DESIGN §5), beside the server module.
 *
 * Supervisor. The process that calls ps_server_listen() with workers > 1 reserves the port
 * (a bound SO_REUSEPORT socket that never listens, so that port 0 resolves once and the port
 * stays ours while a worker restarts), makes a private directory (mode 0700) for the workers'
 * unix sockets, and forks the workers before any libuv handle exists on the server's loop.
 * It never serves: ps__workers_supervise() waits for signals with sigtimedwait(), forwards
 * SIGINT/SIGTERM to every worker as SIGTERM (each stops gracefully), restarts a worker that
 * died with a backoff (100 ms doubling to 5 s; reset after 10 s of life), and returns once
 * every worker has exited after a stop. It uses no libuv, so nothing of its loop exists in
 * the workers it forks later.
 *
 * Workers. Each re-initialises the inherited loop (uv_loop_fork), listens on the port with a
 * socket of its own with SO_REUSEPORT (the kernel picks a worker for each connection at the
 * SYN), and listens on its unix socket "<dir>/<index>.sock" for messages from the others. It
 * connects to another worker's socket the first time it has something for it, and again after
 * that worker restarted (a new process binds the same path).
 *
 * Hand-over, for any layer. ps__worker_hand_over(w, target, kind, conn, bytes, len, ...) moves
 * a TCP connection to another worker: reading stops at once, the connection's pending output is
 * written first, then its file descriptor goes over the IPC pipe (uv_write2) together with
 * `bytes`, the input already read that the target must process as if it had read it itself,
 * and the sender closes its copy. The target's on_message gets `kind`, the bytes and the
 * connection, now a connection of its own listener, not reading yet: it attaches an owner,
 * feeds the bytes to it and starts reading (ps__conn_start). Kinds are this header's enum;
 * a layer that needs its own hand-over (routing a recovering Socket.IO client to the worker
 * that holds its session, say) adds a kind, encodes what it needs into `bytes` and handles it
 * in the server's on_message. The HTTP layer uses PS__WMSG_HTTP: when a request's head names,
 * through the worker index stamped into its Engine.IO sid (ps__id_worker), another worker,
 * http.c halts the parser right after the head and hands the connection over with the head
 * rebuilt from its parsed fields plus every byte read after it, so the bytes moved are at most
 * one head and one read; every request of a keep-alive connection is checked again.
 *
 * Messages between workers, on one unix-socket stream per ordered pair: the frame of net's IPC
 * ([u32 length][u8 has_conn]), then this header: [u8 version = 1][u8 kind][u8 from][u8 0].
 */
#ifndef PS_WORKER_H
#define PS_WORKER_H

#include "net.h"

#include <sys/types.h>

#define PS__MAX_WORKERS 64

/* Kinds of worker messages. */
enum {
    PS__WMSG_HTTP = 1,    /* a connection whose request belongs to the target: bytes to replay */
    PS__WMSG_PUBLISH = 2, /* a topic publish (broker codec, ps__bmsg) */
};

typedef struct ps__workers ps__workers;

/* The server's side of the workers. */
typedef struct ps__worker_cbs {
    /* A message of `kind` from worker `from`. `conn` is non-NULL when a connection came with it:
     * it is now this process's (a connection of the listener given to ps__workers_join), not
     * yet reading; the callee takes it or aborts it. */
    void (*on_message)(void *user, int kind, int from, const char *data, size_t len,
                       ps__conn *conn);
    /* The worker process is to run: called in the child after fork, never returns. */
    void (*run_worker)(void *user, int index);
} ps__worker_cbs;

typedef struct ps__worker_proc {
    pid_t pid;           /* 0 while not running */
    uint64_t started_ms; /* ps__now_ms() at fork */
    uint64_t restart_at; /* when to fork it again (0: not scheduled) */
    uint32_t backoff_ms; /* next restart delay */
    int last_status;     /* waitpid status of its last exit */
    bool exited_clean;   /* its last exit was status 0 */
} ps__worker_proc;

typedef struct ps__worker_peer ps__worker_peer;

struct ps__workers {
    int n;    /* workers; 0 = not configured (one process) */
    int self; /* this process's index; -1 in the supervisor */
    char dir[64];
    const ps__worker_cbs *cbs;
    void *user;
    /* supervisor */
    int reserved_fd; /* bound, never listening: holds the port */
    int port;
    int ready_pipe[2];
    pid_t supervisor;
    ps__worker_proc *procs;
    bool stopping;
    bool failed;         /* a worker exited non-zero during the stop */
    bool hup_to_workers; /* SIGHUP is passed on to every worker (TLS reload) instead of stopping */
    /* worker */
    uv_loop_t *loop;
    ps__listener *listener;
    ps__ipc_server *ipc;
    ps__worker_peer *peers; /* [n], index self unused */
    size_t max_queued;      /* per peer: bytes of messages not yet written; beyond: refused */
    uint64_t handed_over;   /* connections sent to another worker */
    uint64_t taken_over;    /* connections received from another worker */
    uint64_t send_failed;   /* messages (and hand-overs) that could not be sent */
};

/* ---- supervisor ------------------------------------------------------------------------ */

/*
 * Reserves host:port (0 picks a port) and the private directory for n workers. Returns 0 or a
 * UV_E* code; w->port is the port. cbs->run_worker runs in each forked child.
 */
int ps__workers_prepare(ps__workers *w, uv_loop_t *loop, int n, const char *host, int port,
                        const ps__worker_cbs *cbs, void *user);
/* Forks every worker and waits (at most timeout_ms) until each has reported its listen result
 * with ps__worker_ready. Returns 0, or the first failure (every worker is then stopped). */
int ps__workers_start(ps__workers *w, uint32_t timeout_ms);
/* Runs the supervisor until a stop (SIGINT/SIGTERM) and every worker's exit; a worker still
 * running grace_ms after the stop is killed. Returns 0, or PS_EWORKER when a worker failed to
 * exit cleanly during the stop. */
int ps__workers_supervise(ps__workers *w, uint32_t grace_ms);
/* Stops whatever still runs (SIGTERM, then SIGKILL after grace_ms), removes the directory and
 * frees. In a worker: closes its pipes (their handles close on the loop). */
void ps__workers_free(ps__workers *w, uint32_t grace_ms);

/* ---- worker ---------------------------------------------------------------------------- */

/* In the child: the listen result for the supervisor (0 or a UV_E* code). */
void ps__worker_ready(ps__workers *w, int rc);
/* In the child, after the listener started: listens on this worker's unix socket. */
int ps__workers_join(ps__workers *w, uv_loop_t *loop, ps__listener *listener);
/* Stops receiving and closes every pipe (part of the server's stop). */
void ps__workers_leave(ps__workers *w);
/* True while a worker has pipes open (the server's stop waits for them). */
bool ps__workers_busy(const ps__workers *w);

/* Sends a message to worker `target` (copied). 0, or PS_EINVAL / PS_ELIMIT (its queue is full)
 * / UV_E* when it cannot be reached now. */
int ps__worker_send(ps__workers *w, int target, int kind, const void *data, size_t len);
/*
 * Hands connection c over to worker `target` with the input already read (`bytes`, copied).
 * From this call on c belongs to the hand-over: it is not read, and it is closed here once
 * sent. If it cannot be sent, failed(c, user) runs instead (maybe before this returns) with c
 * still open and still ours, to answer and close it. Returns 0, or PS_EINVAL (bad target: c
 * untouched).
 */
int ps__worker_hand_over(ps__workers *w, int target, int kind, ps__conn *c, const char *bytes,
                         size_t len, void (*failed)(ps__conn *c, void *user), void *user);

#endif
