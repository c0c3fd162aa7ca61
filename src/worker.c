/*
 * worker: the supervisor (plain POSIX: fork, waitpid, sigtimedwait) and each worker's side of
 * the mesh of unix-socket pipes between workers (net's IPC). See worker.h for the design.
 *
 * The supervisor keeps SIGCHLD, SIGINT, SIGTERM and SIGHUP blocked from the first fork on and
 * takes them with sigtimedwait(), so that no handler runs and a signal can never be lost
 * between a check and a wait. A forked worker inherits the blocked mask and unblocks it only
 * once its own libuv signal handlers are installed (by the server), so a SIGTERM sent right
 * after a fork waits and then stops the worker gracefully instead of killing it.
 *
 * Peers: a worker's pipe to another worker exists from the first message for it until that
 * worker's process ends (the pipe breaks); the next message connects again, to whatever process
 * now listens on the path, at most every RECONNECT_MS, so a publish storm towards a worker that
 * is restarting costs no connect() per message.
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define HEALTHY_MS 10000 /* a worker that lived this long restarts without delay growth */
#define RECONNECT_MS 100
#define WMSG_VERSION 1
#define WMSG_HEAD 4

struct ps__worker_peer {
    ps__ipc *ipc;
    uint64_t retry_at; /* after a failed connect, ps__now_ms() before which we do not retry */
};

/* ---- supervisor ------------------------------------------------------------------------ */

static void sig_block_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

int ps__workers_prepare(ps__workers *w, uv_loop_t *loop, int n, const char *host, int port,
                        const ps__worker_cbs *cbs, void *user)
{
    memset(w, 0, sizeof *w);
    w->n = n;
    w->self = -1;
    w->cbs = cbs;
    w->user = user;
    w->reserved_fd = -1;
    w->ready_pipe[0] = w->ready_pipe[1] = -1;
    w->supervisor = getpid();
    if (n < 2 || n > PS__MAX_WORKERS)
        return PS_EINVAL;
    int rc = ps__port_reserve(loop, host, port, &w->port);
    if (rc < 0)
        return rc;
    w->reserved_fd = rc;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 40)
        tmp = "/tmp";
    snprintf(w->dir, sizeof w->dir, "%s/pulsec-XXXXXX", tmp);
    if (!mkdtemp(w->dir)) { /* mode 0700: only this user reaches the workers' sockets */
        rc = -errno;
        close(w->reserved_fd);
        w->reserved_fd = -1;
        w->dir[0] = '\0';
        return rc;
    }
    w->procs = ps__calloc((size_t)n, sizeof *w->procs);
    for (int i = 0; i < n; i++)
        w->procs[i].backoff_ms = BACKOFF_MIN_MS;
    return 0;
}

static int proc_index(ps__workers *w, pid_t pid)
{
    for (int i = 0; i < w->n; i++)
        if (w->procs[i].pid == pid)
            return i;
    return -1;
}

/* In the child: becomes worker i and never returns. */
static void child_start(ps__workers *w, int i)
{
    /* A supervisor that dies without stopping us (SIGKILL) must not leave workers behind. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != w->supervisor)
        _exit(1);
    w->self = i;
    close(w->reserved_fd);
    w->reserved_fd = -1;
    if (w->ready_pipe[0] >= 0)
        close(w->ready_pipe[0]);
    w->ready_pipe[0] = -1;
    char tag[48];
    snprintf(tag, sizeof tag, "worker %d pid %d", i, (int)getpid());
    ps__log_set_tag(tag);
    w->cbs->run_worker(w->user, i);
    _exit(1); /* run_worker never returns; this is a guard */
}

static int fork_worker(ps__workers *w, int i)
{
    /* Buffered output would be written once more by every child's exit(). */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        PS__ERROR("fork worker %d: %s", i, strerror(errno));
        return rc;
    }
    if (pid == 0)
        child_start(w, i);
    w->procs[i].pid = pid;
    w->procs[i].started_ms = ps__now_ms();
    w->procs[i].restart_at = 0;
    return 0;
}

void ps__worker_ready(ps__workers *w, int rc)
{
    if (w->ready_pipe[1] < 0)
        return;
    int32_t msg[2] = {w->self, rc};
    ssize_t n;
    do {
        n = write(w->ready_pipe[1], msg, sizeof msg);
    } while (n < 0 && errno == EINTR);
    close(w->ready_pipe[1]);
    w->ready_pipe[1] = -1;
}

static void kill_all(ps__workers *w, int sig)
{
    for (int i = 0; i < w->n; i++)
        if (w->procs[i].pid > 0)
            kill(w->procs[i].pid, sig);
}

static bool any_running(const ps__workers *w)
{
    for (int i = 0; i < w->n; i++)
        if (w->procs[i].pid > 0)
            return true;
    return false;
}

static void describe_status(int status, char *out, size_t len)
{
    if (WIFEXITED(status))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, len, "ended (status %#x)", status);
}

/* Collects every child that exited; schedules restarts unless stopping. */
static void reap(ps__workers *w)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int i = proc_index(w, pid);
        if (i < 0)
            continue;
        ps__worker_proc *p = &w->procs[i];
        char what[96];
        describe_status(status, what, sizeof what);
        p->pid = 0;
        p->last_status = status;
        p->exited_clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (w->stopping) {
            if (!p->exited_clean) {
                w->failed = true;
                PS__ERROR("worker %d (pid %d) %s during the stop", i, (int)pid, what);
            } else {
                PS__INFO("worker %d (pid %d) stopped", i, (int)pid);
            }
            continue;
        }
        uint64_t now = ps__now_ms();
        if (now - p->started_ms >= HEALTHY_MS)
            p->backoff_ms = BACKOFF_MIN_MS;
        p->restart_at = now + p->backoff_ms;
        PS__WARN("worker %d (pid %d) %s; restarting it in %u ms", i, (int)pid, what, p->backoff_ms);
        p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
    }
}

int ps__workers_start(ps__workers *w, uint32_t timeout_ms)
{
    char tag[48];
    snprintf(tag, sizeof tag, "supervisor pid %d", (int)getpid());
    ps__log_set_tag(tag);
    sigset_t set;
    sig_block_set(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
    if (pipe2(w->ready_pipe, O_CLOEXEC) != 0)
        return -errno;
    int rc = 0;
    for (int i = 0; i < w->n && rc == 0; i++)
        rc = fork_worker(w, i);
    close(w->ready_pipe[1]);
    w->ready_pipe[1] = -1;
    /* Each worker reports once; a worker that dies first closes its end without a word. */
    int reported = 0;
    uint64_t deadline = ps__now_ms() + timeout_ms;
    while (rc == 0 && reported < w->n) {
        int32_t msg[2];
        uint64_t now = ps__now_ms();
        if (now >= deadline) {
            rc = UV_ETIMEDOUT;
            break;
        }
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(w->ready_pipe[0], &fds);
        struct timeval tv = {.tv_sec = (long)((deadline - now) / 1000),
                             .tv_usec = (long)((deadline - now) % 1000) * 1000};
        int r = select(w->ready_pipe[0] + 1, &fds, NULL, NULL, &tv);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        ssize_t got = read(w->ready_pipe[0], msg, sizeof msg);
        if (got == (ssize_t)sizeof msg) {
            reported++;
            if (msg[1] != 0)
                rc = msg[1];
        } else if (got == 0) {
            rc = PS_EWORKER; /* every writer is gone: a worker died before reporting */
        } else if (got < 0 && errno != EINTR) {
            rc = -errno;
        }
    }
    close(w->ready_pipe[0]);
    w->ready_pipe[0] = -1;
    if (rc != 0) {
        w->stopping = true;
        kill_all(w, SIGTERM);
        while (any_running(w)) {
            int status;
            pid_t pid = waitpid(-1, &status, 0);
            if (pid < 0 && errno != EINTR)
                break;
            int i = pid > 0 ? proc_index(w, pid) : -1;
            if (i >= 0)
                w->procs[i].pid = 0;
        }
        return rc;
    }
    PS__INFO("%d workers listening on port %d", w->n, w->port);
    return 0;
}

int ps__workers_supervise(ps__workers *w, uint32_t grace_ms)
{
    sigset_t set;
    sig_block_set(&set);
    uint64_t kill_at = 0;
    for (;;) {
        reap(w);
        if (w->stopping && !any_running(w))
            break;
        uint64_t now = ps__now_ms();
        uint64_t wake = now + 1000;
        for (int i = 0; i < w->n && !w->stopping; i++) {
            ps__worker_proc *p = &w->procs[i];
            if (p->pid == 0 && p->restart_at && p->restart_at <= now) {
                if (fork_worker(w, i) != 0)
                    p->restart_at = now + p->backoff_ms;
                else
                    PS__WARN("worker %d restarted (pid %d)", i, (int)p->pid);
            }
            if (p->pid == 0 && p->restart_at && p->restart_at < wake)
                wake = p->restart_at;
        }
        if (kill_at && now >= kill_at) {
            PS__WARN("workers still running %u ms after the stop: killing them", grace_ms);
            kill_all(w, SIGKILL);
            w->failed = true;
            kill_at = 0;
        }
        if (kill_at && kill_at < wake)
            wake = kill_at;
        uint64_t ms = wake > now ? wake - now : 0;
        struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                              .tv_nsec = (long)(ms % 1000) * 1000000};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &ts);
        if (sig == SIGHUP && w->hup_to_workers) {
            /* Each worker holds its own TLS context: each reloads the files itself. */
            PS__INFO("signal %d: passed on to %d workers", sig, w->n);
            kill_all(w, SIGHUP);
        } else if ((sig == SIGINT || sig == SIGTERM || sig == SIGHUP) && !w->stopping) {
            PS__INFO("signal %d: stopping %d workers", sig, w->n);
            w->stopping = true;
            kill_all(w, SIGTERM);
            kill_at = ps__now_ms() + grace_ms;
        }
    }
    return w->failed ? PS_EWORKER : 0;
}

void ps__workers_free(ps__workers *w, uint32_t grace_ms)
{
    if (w->self >= 0) {
        ps__workers_leave(w);
        ps__free(w->peers);
        w->peers = NULL;
        return;
    }
    if (w->procs && any_running(w)) {
        /* Never supervised (or interrupted): stop the workers here, boundedly. */
        w->stopping = true;
        kill_all(w, SIGTERM);
        uint64_t deadline = ps__now_ms() + grace_ms;
        while (any_running(w)) {
            reap(w);
            if (!any_running(w))
                break;
            if (ps__now_ms() >= deadline) {
                kill_all(w, SIGKILL);
                deadline = UINT64_MAX;
            }
            usleep(10000);
        }
    }
    if (w->reserved_fd >= 0)
        close(w->reserved_fd);
    w->reserved_fd = -1;
    if (w->dir[0]) {
        /* Workers remove their own sockets; a killed one leaves its file behind. */
        for (int i = 0; i < w->n; i++) {
            char path[96];
            snprintf(path, sizeof path, "%s/%d.sock", w->dir, i);
            unlink(path);
        }
        rmdir(w->dir);
        w->dir[0] = '\0';
    }
    ps__free(w->procs);
    w->procs = NULL;
}

/* ---- the mesh of pipes ----------------------------------------------------------------- */

static void sock_path(const ps__workers *w, int i, char *out, size_t len)
{
    snprintf(out, len, "%s/%d.sock", w->dir, i);
}

static void on_ipc_message(ps__ipc *p, const char *data, size_t len, ps__conn *conn)
{
    ps__workers *w = ps__ipc_data(p);
    if (len < WMSG_HEAD || (uint8_t)data[0] != WMSG_VERSION || (uint8_t)data[2] >= w->n) {
        PS__WARN("worker message refused: %s", len < WMSG_HEAD ? "truncated" : "bad header");
        if (conn)
            ps__conn_abort(conn);
        return;
    }
    if (conn)
        w->taken_over++;
    w->cbs->on_message(w->user, (uint8_t)data[1], (uint8_t)data[2], data + WMSG_HEAD,
                       len - WMSG_HEAD, conn);
}

/* A pipe to another worker broke (its process ended, or the connect failed). */
static void on_peer_close(ps__ipc *p)
{
    ps__workers *w = ps__ipc_data(p);
    for (int i = 0; w->peers && i < w->n; i++) {
        if (w->peers[i].ipc == p) {
            w->peers[i].ipc = NULL;
            w->peers[i].retry_at = ps__now_ms() + RECONNECT_MS;
        }
    }
}

static const ps__ipc_cbs ipc_cbs = {on_ipc_message, on_peer_close};

int ps__workers_join(ps__workers *w, uv_loop_t *loop, ps__listener *listener)
{
    char path[96];
    w->loop = loop;
    w->listener = listener;
    w->peers = ps__calloc((size_t)w->n, sizeof *w->peers);
    if (!w->max_queued)
        w->max_queued = 16u * 1024 * 1024;
    sock_path(w, w->self, path, sizeof path);
    int rc = 0;
    w->ipc = ps__ipc_listen(loop, path, listener, &ipc_cbs, w, &rc);
    return rc;
}

void ps__workers_leave(ps__workers *w)
{
    if (w->ipc) {
        char path[96];
        sock_path(w, w->self, path, sizeof path);
        ps__ipc_server_close(w->ipc);
        w->ipc = NULL;
        unlink(path);
    }
    for (int i = 0; w->peers && i < w->n; i++) {
        if (w->peers[i].ipc) {
            ps__ipc *p = w->peers[i].ipc;
            w->peers[i].ipc = NULL;
            ps__ipc_close(p);
        }
    }
}

bool ps__workers_busy(const ps__workers *w)
{
    return w->ipc != NULL;
}

/* The pipe to worker `target`, connecting (again) if needed; NULL while it is unreachable. */
static ps__ipc *peer(ps__workers *w, int target)
{
    ps__worker_peer *p = &w->peers[target];
    if (p->ipc && ps__ipc_failed(p->ipc)) {
        ps__ipc_close(p->ipc);
        p->ipc = NULL;
        p->retry_at = ps__now_ms() + RECONNECT_MS;
    }
    if (!p->ipc) {
        if (ps__now_ms() < p->retry_at)
            return NULL;
        char path[96];
        sock_path(w, target, path, sizeof path);
        p->ipc = ps__ipc_connect(w->loop, path, &ipc_cbs, w);
    }
    return p->ipc;
}

static bool target_valid(const ps__workers *w, int target)
{
    return w->peers && target >= 0 && target < w->n && target != w->self;
}

static void on_sent(void *user, ps__conn *pass, int status)
{
    ps__workers *w = user;
    if (status != 0)
        w->send_failed++;
}

int ps__worker_send(ps__workers *w, int target, int kind, const void *data, size_t len)
{
    if (!target_valid(w, target))
        return PS_EINVAL;
    ps__ipc *p = peer(w, target);
    if (!p) {
        w->send_failed++;
        return UV_ECONNREFUSED;
    }
    if (ps__ipc_queued(p) + len > w->max_queued) {
        w->send_failed++;
        return PS_ELIMIT;
    }
    uint8_t head[WMSG_HEAD] = {WMSG_VERSION, (uint8_t)kind, (uint8_t)w->self, 0};
    return ps__ipc_send(p, head, sizeof head, data, len, NULL, on_sent, w);
}

typedef struct hand_over {
    ps__workers *w;
    void (*failed)(ps__conn *c, void *user);
    void *user;
} hand_over;

static void on_handed(void *user, ps__conn *pass, int status)
{
    hand_over *h = user;
    if (status == 0) {
        h->w->handed_over++;
    } else {
        h->w->send_failed++;
        if (pass)
            h->failed(pass, h->user);
    }
    ps__free(h);
}

int ps__worker_hand_over(ps__workers *w, int target, int kind, ps__conn *c, const char *bytes,
                         size_t len, void (*failed)(ps__conn *c, void *user), void *user)
{
    if (!target_valid(w, target))
        return PS_EINVAL;
    ps__conn_pause(c);
    ps__ipc *p = peer(w, target);
    if (!p || ps__ipc_queued(p) + len > w->max_queued) {
        w->send_failed++;
        failed(c, user);
        return 0;
    }
    hand_over *h = ps__malloc(sizeof *h);
    h->w = w;
    h->failed = failed;
    h->user = user;
    uint8_t head[WMSG_HEAD] = {WMSG_VERSION, (uint8_t)kind, (uint8_t)w->self, 0};
    int rc = ps__ipc_send(p, head, sizeof head, bytes, len, c, on_handed, h);
    if (rc != 0) {
        ps__free(h);
        w->send_failed++;
        failed(c, user);
    }
    return 0;
}
