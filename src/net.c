/*
 * net: TCP listener and connections on libuv, plus self-freeing timers. Writes are copied into
 * one allocation together with their uv_write_t (libuv's echo-server pattern) so callers can
 * reuse their buffers at once. A connection's memory lives until libuv's close callback; upper
 * layers learn of the end exactly once through on_close.
 */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct write_req {
    uv_write_t req;
    ps__conn *conn;
    size_t len;
    char data[];
} write_req;

typedef struct shutdown_req {
    uv_shutdown_t req;
    ps__conn *conn;
} shutdown_req;

static void ipc_handoff_conn_gone(ps__conn *c);
static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ps__conn *c = (ps__conn *)h;
    buf->base = c->listener->readbuf;
    buf->len = PS__CONN_READ_BUDGET;
}

/* Reads run exactly when nobody wants them stopped. */
static void reading_update(ps__conn *c)
{
    if (c->closing)
        return; /* ps__conn_close stopped them; the linger reads on its own */
    if (c->paused || c->throttled || c->deferred || c->peer_done)
        uv_read_stop((uv_stream_t *)&c->tcp);
    else
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
}

/* No longer busy (closing, or its peer is done): out of the turns. */
static void undefer(ps__conn *c)
{
    ps__listener *l = c->listener;
    for (size_t i = 0; i < l->nbusy; i++) {
        if (l->busy[i] == c) {
            memmove(l->busy + i, l->busy + i + 1, (l->nbusy - i - 1) * sizeof *l->busy);
            l->nbusy--;
            break;
        }
    }
    c->deferred = false;
}
static void cork_drop(ps__conn *c);

static void conn_on_close(uv_handle_t *h)
{
    ps__conn *c = (ps__conn *)h;
    ps__listener *l = c->listener;
    if (c->handoff)
        ipc_handoff_conn_gone(c);
    if (c->cork)
        cork_drop(c);
    ps__list_remove(&c->link);
    l->nconns--;
    if (c->deferred)
        undefer(c);
    if (c->lingering)
        l->nlingering--;
    ps__timer_free(c->linger);
    if (c->cbs && c->cbs->on_close)
        c->cbs->on_close(c);
    if (c->filter)
        c->filter->ops->free(c);
    ps__free(c);
    if (l->on_conn_gone)
        l->on_conn_gone(l);
}

/* The start of each loop pass while connections are busy: the next ones in line may read. The
 * active idle handle also keeps the loop from blocking in poll while they wait, their input
 * ready in the kernel but not watched. */
static void give_turns(uv_idle_t *h)
{
    ps__listener *l = PS__CONTAINER_OF(h, ps__listener, turns);
    size_t n = l->nbusy < PS__CONN_BUSY_TURNS ? l->nbusy : PS__CONN_BUSY_TURNS;
    ps__conn *next[PS__CONN_BUSY_TURNS];
    memcpy(next, l->busy, n * sizeof *next);
    memmove(l->busy, l->busy + n, (l->nbusy - n) * sizeof *l->busy);
    l->nbusy -= n;
    for (size_t i = 0; i < n; i++) {
        next[i]->deferred = false;
        reading_update(next[i]);
    }
    if (l->nbusy == 0)
        uv_idle_stop(h);
}

static void defer(ps__conn *c)
{
    ps__listener *l = c->listener;
    if (l->handles < 2 || uv_is_closing((uv_handle_t *)&l->turns))
        return; /* no turns to wait for: the server is stopping (or a listener without them) */
    if (l->nbusy == l->busy_cap) {
        l->busy_cap = l->busy_cap ? 2 * l->busy_cap : 16;
        l->busy = ps__realloc(l->busy, l->busy_cap * sizeof *l->busy);
    }
    if (l->nbusy == 0)
        uv_idle_start(&l->turns, give_turns);
    l->busy[l->nbusy++] = c;
    c->deferred = true;
    reading_update(c);
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ps__conn *c = (ps__conn *)s;
    if (nread > 0) {
        if (c->closing)
            return;
        if (c->filter)
            c->filter->ops->on_read(c, buf->base, (size_t)nread);
        else if (c->cbs && c->cbs->on_read)
            c->cbs->on_read(c, buf->base, (size_t)nread);
        /* A full buffer means more may be waiting: that waits for the connection's turn. */
        if ((size_t)nread == buf->len && !c->closing && !c->deferred)
            defer(c);
        return;
    }
    if (nread == 0)
        return;
    /* EOF or error: the owner decides how to finish, but reads are over either way. */
    c->peer_done = true;
    uv_read_stop(s);
    if (c->deferred)
        undefer(c);
    if (!c->closing && c->cbs && c->cbs->on_eof)
        c->cbs->on_eof(c);
    else
        ps__conn_abort(c);
}

static ps__conn *conn_new(ps__listener *l)
{
    ps__conn *c = ps__calloc(1, sizeof *c);
    uv_tcp_init(l->loop, &c->tcp);
    c->listener = l;
    ps__list_insert_tail(&l->conns, &c->link);
    l->nconns++;
    return c;
}

/* A connection just accepted (from the listening socket or from an IPC pipe). */
static void conn_ready(ps__conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
    }
}

void ps__conn_start(ps__conn *c)
{
    reading_update(c);
}

static void listener_on_connection(uv_stream_t *server, int status)
{
    ps__listener *l = (ps__listener *)server;
    if (status < 0) {
        PS__WARN("accept: %s", uv_strerror(status));
        return;
    }
    ps__conn *c = conn_new(l);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_on_close);
        return;
    }
    conn_ready(c);
    l->on_conn(l, c);
    ps__conn_start(c);
}

int ps__listener_init(ps__listener *l, uv_loop_t *loop)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->port = -1;
    ps__list_init(&l->conns);
    ps__list_init(&l->dirty);
    int rc = uv_tcp_init(loop, &l->tcp);
    if (rc != 0)
        return rc;
    uv_idle_init(loop, &l->turns);
    l->handles = 2;
    return 0;
}

/*
 * A write to a peer that has gone away raises SIGPIPE, whose default action ends the whole
 * process; libuv writes with plain write(2), so nothing else prevents it. With the signal
 * ignored the write fails with EPIPE and only that connection ends. An application that chose
 * its own disposition keeps it.
 */
static void ignore_sigpipe(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
        sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

/*
 * host is an IPv4 or IPv6 address ("::1", also "[::1]") or a name. A name is resolved here,
 * synchronously (getaddrinfo through libuv without a callback), and the first address it gives
 * is bound: listening happens once, normally before the loop runs, and an asynchronous lookup
 * would make ps_server_listen unable to report a bad address. Numeric addresses never touch
 * the resolver.
 */
static int resolve_bind_address(uv_loop_t *loop, const char *host, int port,
                                struct sockaddr_storage *ss)
{
    char literal[64];
    size_t len = strlen(host);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']' && len - 2 < sizeof literal) {
        memcpy(literal, host + 1, len - 2);
        literal[len - 2] = '\0';
        host = literal;
    }
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    /* What cannot be a host name is refused without asking the resolver. */
    if (!*host ||
        strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") !=
            strlen(host))
        return UV_EINVAL;
    uv_getaddrinfo_t req;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    int rc = uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints);
    if (rc != 0)
        return rc;
    rc = UV_EAI_NONAME;
    for (struct addrinfo *ai = req.addrinfo; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        memcpy(ss, ai->ai_addr, ai->ai_addrlen);
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        rc = 0;
        break;
    }
    uv_freeaddrinfo(req.addrinfo);
    return rc;
}

int ps__listener_start(ps__listener *l, const char *host, int port, int backlog)
{
    struct sockaddr_storage ss;
    int rc;
    ignore_sigpipe();
    if ((rc = resolve_bind_address(l->loop, host, port, &ss)) != 0)
        return rc;
    if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) != 0)
        return rc;
    if ((rc = uv_listen((uv_stream_t *)&l->tcp, backlog, listener_on_connection)) != 0)
        return rc;
    int len = sizeof ss;
    if ((rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len)) != 0)
        return rc;
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    l->listening = true;
    return 0;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -errno;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/* A TCP socket bound to host:port with SO_REUSEADDR and SO_REUSEPORT; fd or UV_E*. */
static int reuseport_socket(uv_loop_t *loop, const char *host, int port)
{
    struct sockaddr_storage ss;
    int rc = resolve_bind_address(loop, host, port, &ss);
    if (rc != 0)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    socklen_t len =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, len) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int ps__port_reserve(uv_loop_t *loop, const char *host, int port, int *bound)
{
    int fd = reuseport_socket(loop, host, port);
    if (fd < 0)
        return fd;
    int p = bound_port(fd);
    if (p < 0) {
        close(fd);
        return p;
    }
    *bound = p;
    return fd;
}

int ps__listener_start_shared(ps__listener *l, const char *host, int port, int backlog)
{
    ignore_sigpipe();
    int fd = reuseport_socket(l->loop, host, port);
    if (fd < 0)
        return fd;
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    if ((rc = uv_listen((uv_stream_t *)&l->tcp, backlog, listener_on_connection)) != 0)
        return rc;
    if ((rc = bound_port(fd)) < 0)
        return rc;
    l->port = rc;
    l->listening = true;
    return 0;
}

int ps__loop_fork(uv_loop_t *loop)
{
    return uv_loop_fork(loop);
}

static void corker_close(ps__listener *l);

static void listener_handle_closed(ps__listener *l)
{
    if (--l->handles > 0)
        return;
    ps__free(l->busy);
    l->busy = NULL;
    l->closed = true;
    if (l->on_closed)
        l->on_closed(l);
}

static void listener_on_close(uv_handle_t *h)
{
    listener_handle_closed((ps__listener *)h);
}

static void turns_on_close(uv_handle_t *h)
{
    listener_handle_closed(PS__CONTAINER_OF((uv_idle_t *)h, ps__listener, turns));
}

void ps__listener_close(ps__listener *l, void (*on_closed)(ps__listener *l))
{
    if (uv_is_closing((uv_handle_t *)&l->tcp)) {
        return;
    }
    l->on_closed = on_closed;
    l->listening = false;
    corker_close(l);
    /* What is left is the stop's: connections waiting for their turn all read now. */
    while (l->nbusy > 0)
        give_turns(&l->turns);
    uv_close((uv_handle_t *)&l->turns, turns_on_close);
    uv_close((uv_handle_t *)&l->tcp, listener_on_close);
}

/* ---- writes ---------------------------------------------------------------------------- */

static void ipc_drained(ps__conn *c);

/* Output went out: move a waiting hand-over on, resume reading a throttled connection. */
static void write_progress(ps__conn *c)
{
    if (c->handoff && c->write_queued == 0)
        ipc_drained(c);
    if (c->throttled && c->write_queued <= PS__CONN_HIGH_WATER / 2) {
        c->throttled = false;
        reading_update(c);
        if (c->filter && !c->paused && !c->closing)
            c->filter->ops->on_resume(c);
        if (!c->closing && c->cbs && c->cbs->on_drained)
            c->cbs->on_drained(c);
    }
}

static void conn_on_write(uv_write_t *req, int status)
{
    write_req *w = PS__CONTAINER_OF(req, write_req, req);
    ps__conn *c = w->conn;
    c->write_queued -= w->len;
    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        PS__DEBUG("write to %s: %s", c->peer, uv_strerror(status));
        ps__conn_abort(c);
    }
    ps__free(w);
    write_progress(c);
}

/* ---- corking ----------------------------------------------------------------------------- */

typedef struct cork_buf {
    ps__list link; /* in listener->dirty */
    ps__conn *conn;
    ps__buf data;
} cork_buf;

/* An idle handle, not a check or prepare one: while it is active the loop does not block in
 * its poll, and uv_backend_timeout() is 0, so a loop driven from outside (the Python binding's)
 * also runs the pass that flushes, when a publish came from outside any loop callback. */
struct corker {
    uv_idle_t idle;
    ps__listener *l;
    bool closing;
};

static int conn_write_now(ps__conn *c, const uv_buf_t *bufs, size_t n, size_t total);

static void cork_drop(ps__conn *c)
{
    cork_buf *k = c->cork;
    c->cork = NULL;
    c->write_queued -= k->data.len;
    ps__list_remove(&k->link);
    ps__buf_free(&k->data);
    ps__free(k);
}

/* Writes what c gathered, now, the normal way (try first, queue the rest). */
static void cork_flush_conn(ps__conn *c)
{
    cork_buf *k = c->cork;
    c->cork = NULL;
    ps__list_remove(&k->link);
    c->write_queued -= k->data.len;
    if (k->data.len) {
        uv_buf_t b = uv_buf_init(k->data.base, (unsigned)k->data.len);
        conn_write_now(c, &b, 1, k->data.len);
    }
    ps__buf_free(&k->data);
    ps__free(k);
    write_progress(c);
}

static void corks_flush(ps__listener *l)
{
    l->corked = false;
    while (!ps__list_empty(&l->dirty))
        cork_flush_conn(PS__CONTAINER_OF(l->dirty.next, cork_buf, link)->conn);
    if (l->corker && !l->corker->closing)
        uv_idle_stop(&l->corker->idle);
}

static void on_cork_idle(uv_idle_t *h)
{
    corks_flush(((struct corker *)h->data)->l);
}

void ps__listener_cork(ps__listener *l)
{
    if (l->corked || !l->listening)
        return;
    if (!l->corker) {
        l->corker = ps__calloc(1, sizeof *l->corker);
        l->corker->l = l;
        uv_idle_init(l->loop, &l->corker->idle);
        l->corker->idle.data = l->corker;
    }
    l->corked = true;
    uv_idle_start(&l->corker->idle, on_cork_idle);
}

static void corker_on_close(uv_handle_t *h)
{
    ps__free(h->data);
}

static void corker_close(ps__listener *l)
{
    corks_flush(l);
    if (!l->corker)
        return;
    struct corker *k = l->corker;
    l->corker = NULL;
    k->closing = true;
    uv_close((uv_handle_t *)&k->idle, corker_on_close);
}

/* Gathers bufs for c until the pass ends; the bytes count as queued at once. */
static int cork_append(ps__conn *c, const uv_buf_t *bufs, size_t n, size_t total)
{
    if (!c->cork) {
        c->cork = ps__calloc(1, sizeof *c->cork);
        c->cork->conn = c;
        ps__buf_init(&c->cork->data);
        ps__list_insert_tail(&c->listener->dirty, &c->cork->link);
    }
    ps__buf_reserve(&c->cork->data, total);
    for (size_t i = 0; i < n; i++)
        ps__buf_append(&c->cork->data, bufs[i].base, bufs[i].len);
    c->write_queued += total;
    if (c->write_queued > PS__CONN_HIGH_WATER && !c->throttled) {
        c->throttled = true;
        reading_update(c);
    }
    return 0;
}

static int writev_raw(ps__conn *c, const uv_buf_t *bufs, size_t n)
{
    if (c->closing)
        return UV_EPIPE;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    /* Gathered output is written first: once a connection holds some, everything joins it. */
    if (c->cork || (c->listener && c->listener->corked && !c->handoff))
        return cork_append(c, bufs, n, total);
    return conn_write_now(c, bufs, n, total);
}

static int conn_write_now(ps__conn *c, const uv_buf_t *bufs, size_t n, size_t total)
{
    /* Most writes fit the socket buffer at once: trying first spares the copy, the allocation,
     * and libuv's epoll re-registration after every queued write (BENCHMARKS.md). Only when
     * nothing is queued, so that bytes stay in order. */
    size_t done = 0;
    if (c->write_queued == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)n);
        if (r > 0)
            done = (size_t)r;
        else if (r != UV_EAGAIN && r != UV_ENOSYS) {
            ps__conn_abort(c);
            return r;
        }
        if (done == total)
            return 0;
    }
    write_req *w = ps__malloc(sizeof *w + total - done);
    w->conn = c;
    w->len = total - done;
    size_t off = 0, skip = done;
    for (size_t i = 0; i < n; i++) {
        size_t from = skip < bufs[i].len ? skip : bufs[i].len;
        skip -= from;
        memcpy(w->data + off, bufs[i].base + from, bufs[i].len - from);
        off += bufs[i].len - from;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write);
    if (rc != 0) {
        ps__free(w);
        ps__conn_abort(c);
        return rc;
    }
    c->write_queued += w->len;
    if (c->write_queued > PS__CONN_HIGH_WATER && !c->throttled) {
        c->throttled = true;
        reading_update(c);
    }
    return 0;
}

int ps__conn_writev(ps__conn *c, const uv_buf_t *bufs, size_t n)
{
    if (c->filter)
        return c->closing ? UV_EPIPE : c->filter->ops->writev(c, bufs, n);
    return writev_raw(c, bufs, n);
}

int ps__conn_write(ps__conn *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return ps__conn_writev(c, &b, 1);
}

int ps__conn_write_raw(ps__conn *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return writev_raw(c, &b, 1);
}

void ps__conn_deliver(ps__conn *c, const char *data, size_t len)
{
    if (!c->closing && c->cbs && c->cbs->on_read)
        c->cbs->on_read(c, data, len);
}

void ps__conn_deliver_eof(ps__conn *c)
{
    if (c->closing)
        return;
    if (c->cbs && c->cbs->on_eof)
        c->cbs->on_eof(c);
    else
        ps__conn_abort(c);
}

/* ---- closing --------------------------------------------------------------------------- */

static bool ipc_handoff_defers_abort(ps__conn *c);

void ps__conn_abort(ps__conn *c)
{
    c->closing = true;
    if (c->handoff && ipc_handoff_defers_abort(c))
        return;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

static void linger_expired(ps__timer *t, void *data)
{
    ps__conn_abort(data);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    shutdown_req *s = PS__CONTAINER_OF(req, shutdown_req, req);
    ps__conn *c = s->conn;
    ps__free(s);
    if (status < 0 || c->peer_done || uv_is_closing((uv_handle_t *)&c->tcp)) {
        ps__conn_abort(c);
        return;
    }
    /* Our FIN is out; conn_on_read drops whatever still comes and aborts on the peer's EOF. */
    if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read) != 0) {
        ps__conn_abort(c);
        return;
    }
    c->lingering = true;
    c->listener->nlingering++;
    if (ps__timer_due_in(c->linger) > PS__CONN_LINGER_MS)
        ps__timer_start(c->linger, PS__CONN_LINGER_MS);
}

void ps__conn_close(ps__conn *c)
{
    if (c->closing)
        return;
    if (c->filter)
        c->filter->ops->on_close(c);
    if (c->cork)
        cork_flush_conn(c); /* the FIN goes after everything written before it (close_notify) */
    c->closing = true;
    if (c->deferred)
        undefer(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    shutdown_req *s = ps__malloc(sizeof *s);
    s->conn = c;
    if (uv_shutdown(&s->req, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0) {
        ps__free(s);
        ps__conn_abort(c);
        return;
    }
    /* The shutdown completes only once every queued byte is written, which a peer that never
     * reads prevents: the deadline covers the flush and the linger after it. */
    uint32_t ms = c->listener->close_timeout_ms;
    c->linger = ps__timer_new(c->tcp.loop, linger_expired, c);
    ps__timer_start(c->linger, ms ? ms : PS__CONN_CLOSE_TIMEOUT_MS);
}

void ps__conn_pause(ps__conn *c)
{
    c->paused = true;
    reading_update(c);
}

void ps__conn_resume(ps__conn *c)
{
    bool was = c->paused;
    c->paused = false;
    reading_update(c);
    if (was && c->filter && !c->closing && !c->throttled)
        c->filter->ops->on_resume(c); /* what it decrypted or kept while paused */
}

/* ---- IPC ------------------------------------------------------------------------------- */

/*
 * A pipe's messages wait in `queue` until they are handed to libuv in order; a message that
 * carries a connection also waits until that connection's own output has been written (its
 * bytes must reach the peer before the new owner's), and holds every later message behind it.
 * The connection points back at its message (handoff) from the send on, so that a connection
 * that closes meanwhile fails its message instead of leaving it a dangling pointer, and so that
 * a connection whose descriptor libuv is sending is not closed under it.
 */
enum { IPC_CONNECTING, IPC_OPEN, IPC_CLOSING };

struct ps__ipc {
    uv_pipe_t pipe; /* first: libuv hands this pointer back */
    uv_connect_t connect_req;
    const ps__ipc_cbs *cbs;
    void *data;
    ps__ipc_server *server; /* the server that accepted it, or NULL for a connecting pipe */
    ps__listener *adopt;    /* where passed connections go */
    ps__list link;          /* in server->pipes */
    ps__list queue;         /* ipc_msg not yet handed to libuv */
    size_t queued;          /* bytes queued or being written */
    int state;
    bool failed;      /* connect failed or the pipe broke */
    bool user_closed; /* ps__ipc_close: no on_close */
    ps__buf in;       /* bytes read, not yet a whole frame */
};

struct ps__ipc_server {
    uv_pipe_t pipe;
    ps__listener *adopt;
    const ps__ipc_cbs *cbs;
    void *data;
    ps__list pipes; /* accepted ps__ipc */
    bool closing;
};

typedef struct ipc_msg {
    uv_write_t req;
    ps__list link; /* in p->queue until handed to libuv */
    ps__ipc *p;
    ps__conn *pass;  /* NULL once the connection closed */
    bool inflight;   /* handed to libuv */
    bool abort_pass; /* the connection was aborted while its descriptor was being sent */
    void (*done)(void *user, ps__conn *pass, int status);
    void *user;
    size_t len;
    char data[];
} ipc_msg;

#define IPC_FRAME_HEAD 5

static void ipc_msg_finish(ipc_msg *m, int status)
{
    ps__conn *pass = m->pass;
    m->p->queued -= m->len;
    if (pass)
        pass->handoff = NULL;
    if (status == 0 && pass) {
        /* Sent: the receiver has its own descriptor; ours just goes (no FIN: close(2) of one
         * of several descriptors of a socket ends nothing). */
        ps__conn_abort(pass);
        pass = NULL;
    } else if (pass && m->abort_pass) {
        ps__conn_abort(pass);
        pass = NULL;
    }
    m->done(m->user, pass, status);
    ps__free(m);
}

static void ipc_fail(ps__ipc *p);

static void ipc_on_write(uv_write_t *req, int status)
{
    ipc_msg *m = PS__CONTAINER_OF(req, ipc_msg, req);
    ps__ipc *p = m->p;
    ipc_msg_finish(m, status);
    if (status != 0 && status != UV_ECANCELED)
        ipc_fail(p);
}

static void ipc_pump(ps__ipc *p)
{
    while (p->state == IPC_OPEN && !ps__list_empty(&p->queue)) {
        ipc_msg *m = PS__CONTAINER_OF(p->queue.next, ipc_msg, link);
        if (m->pass && m->pass->write_queued > 0)
            return; /* resumed by ipc_drained */
        ps__list_remove(&m->link);
        m->inflight = true;
        uv_buf_t b = uv_buf_init(m->data, (unsigned)m->len);
        int rc = m->pass ? uv_write2(&m->req, (uv_stream_t *)&p->pipe, &b, 1,
                                     (uv_stream_t *)&m->pass->tcp, ipc_on_write)
                         : uv_write(&m->req, (uv_stream_t *)&p->pipe, &b, 1, ipc_on_write);
        if (rc != 0) {
            m->inflight = false;
            ps__list_insert_tail(&p->queue, &m->link); /* failed with the rest, in order */
            ipc_fail(p);
            return;
        }
    }
}

static void ipc_drained(ps__conn *c)
{
    ipc_msg *m = c->handoff;
    if (!m->inflight)
        ipc_pump(m->p);
}

static void ipc_handoff_conn_gone(ps__conn *c)
{
    ipc_msg *m = c->handoff;
    c->handoff = NULL;
    m->pass = NULL;
    if (!m->inflight) {
        ps__list_remove(&m->link);
        ps__ipc *p = m->p;
        ipc_msg_finish(m, UV_ECONNRESET);
        ipc_pump(p);
    }
}

static bool ipc_handoff_defers_abort(ps__conn *c)
{
    if (!c->handoff->inflight)
        return false;
    c->handoff->abort_pass = true;
    return true;
}

static void ipc_on_closed(uv_handle_t *h)
{
    ps__ipc *p = (ps__ipc *)h;
    while (!ps__list_empty(&p->queue)) {
        ipc_msg *m = PS__CONTAINER_OF(p->queue.next, ipc_msg, link);
        ps__list_remove(&m->link);
        ipc_msg_finish(m, UV_ECANCELED);
    }
    if (!p->user_closed && p->cbs->on_close)
        p->cbs->on_close(p);
    ps__list_remove(&p->link);
    ps__buf_free(&p->in);
    ps__free(p);
}

static void ipc_close(ps__ipc *p)
{
    if (p->state == IPC_CLOSING)
        return;
    p->state = IPC_CLOSING;
    uv_close((uv_handle_t *)&p->pipe, ipc_on_closed);
}

static void ipc_fail(ps__ipc *p)
{
    p->failed = true;
    ipc_close(p);
}

static void ipc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ps__ipc *p = (ps__ipc *)h;
    ps__buf_reserve(&p->in, 64 * 1024);
    buf->base = p->in.base + p->in.len;
    buf->len = p->in.cap - p->in.len - 1;
}

/* Accepts the descriptor that came with a frame as a connection of the adopting listener. */
static ps__conn *ipc_take_conn(ps__ipc *p)
{
    if (!p->adopt || uv_pipe_pending_count(&p->pipe) == 0 ||
        uv_pipe_pending_type(&p->pipe) != UV_TCP)
        return NULL;
    ps__conn *c = conn_new(p->adopt);
    if (uv_accept((uv_stream_t *)&p->pipe, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_on_close);
        return NULL;
    }
    conn_ready(c);
    return c;
}

static void ipc_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ps__ipc *p = (ps__ipc *)s;
    if (nread < 0) {
        ipc_fail(p);
        return;
    }
    p->in.len += (size_t)nread;
    size_t off = 0;
    while (p->state != IPC_CLOSING && p->in.len - off >= IPC_FRAME_HEAD) {
        const uint8_t *h = (const uint8_t *)p->in.base + off;
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len > PS__IPC_MAX_MESSAGE || h[4] > 1) {
            PS__WARN("ipc: bad frame (%u bytes, flag %u): closing the pipe", len, h[4]);
            ipc_fail(p);
            return;
        }
        if (p->in.len - off < IPC_FRAME_HEAD + (size_t)len)
            break;
        ps__conn *c = NULL;
        if (h[4]) {
            c = ipc_take_conn(p);
            if (!c) {
                PS__WARN("ipc: a frame announced a connection that did not come");
                ipc_fail(p);
                return;
            }
        }
        off += IPC_FRAME_HEAD + len;
        p->cbs->on_message(p, (const char *)h + IPC_FRAME_HEAD, len, c);
    }
    if (p->state != IPC_CLOSING)
        ps__buf_consume(&p->in, off);
}

static ps__ipc *ipc_new(uv_loop_t *loop, const ps__ipc_cbs *cbs, void *data)
{
    ps__ipc *p = ps__calloc(1, sizeof *p);
    uv_pipe_init(loop, &p->pipe, 1);
    p->cbs = cbs;
    p->data = data;
    ps__list_init(&p->link);
    ps__list_init(&p->queue);
    ps__buf_init(&p->in);
    return p;
}

static void ipc_on_connect(uv_connect_t *req, int status)
{
    ps__ipc *p = PS__CONTAINER_OF(req, ps__ipc, connect_req);
    if (p->state == IPC_CLOSING)
        return;
    if (status != 0) {
        ipc_fail(p);
        return;
    }
    p->state = IPC_OPEN;
    /* Connecting pipes only send, but reading shows when the other side goes away. */
    uv_read_start((uv_stream_t *)&p->pipe, ipc_alloc, ipc_on_read);
    ipc_pump(p);
}

ps__ipc *ps__ipc_connect(uv_loop_t *loop, const char *path, const ps__ipc_cbs *cbs, void *data)
{
    ps__ipc *p = ipc_new(loop, cbs, data);
    p->state = IPC_CONNECTING;
    uv_pipe_connect(&p->connect_req, &p->pipe, path, ipc_on_connect);
    return p;
}

static void ipc_server_on_connection(uv_stream_t *server, int status)
{
    ps__ipc_server *s = (ps__ipc_server *)server;
    if (status < 0 || s->closing)
        return;
    ps__ipc *p = ipc_new(server->loop, s->cbs, s->data);
    p->server = s;
    p->adopt = s->adopt;
    p->state = IPC_OPEN;
    ps__list_insert_tail(&s->pipes, &p->link);
    if (uv_accept(server, (uv_stream_t *)&p->pipe) != 0) {
        p->user_closed = true;
        ipc_close(p);
        return;
    }
    uv_read_start((uv_stream_t *)&p->pipe, ipc_alloc, ipc_on_read);
}

static void ipc_server_on_closed(uv_handle_t *h)
{
    ps__free(h);
}

ps__ipc_server *ps__ipc_listen(uv_loop_t *loop, const char *path, ps__listener *adopt,
                               const ps__ipc_cbs *cbs, void *data, int *rc)
{
    ps__ipc_server *s = ps__calloc(1, sizeof *s);
    s->adopt = adopt;
    s->cbs = cbs;
    s->data = data;
    ps__list_init(&s->pipes);
    uv_pipe_init(loop, &s->pipe, 0);
    /* A predecessor killed before it could clean up leaves its socket file: take the path over
     * (the directory is private, so nothing else can have put a file there). */
    unlink(path);
    *rc = uv_pipe_bind(&s->pipe, path);
    if (*rc == 0)
        *rc = uv_listen((uv_stream_t *)&s->pipe, 64, ipc_server_on_connection);
    if (*rc != 0) {
        uv_close((uv_handle_t *)&s->pipe, ipc_server_on_closed);
        return NULL;
    }
    return s;
}

void ps__ipc_server_close(ps__ipc_server *s)
{
    s->closing = true;
    ps__list *pos, *tmp;
    ps__list_foreach_safe(pos, tmp, &s->pipes)
    {
        ps__ipc *p = PS__CONTAINER_OF(pos, ps__ipc, link);
        /* Unlinked now: libuv may run the server's close callback (which frees the list's
         * head) before the pipes' own. */
        ps__list_remove(&p->link);
        p->server = NULL;
        p->user_closed = true;
        ipc_close(p);
    }
    uv_close((uv_handle_t *)&s->pipe, ipc_server_on_closed);
}

int ps__ipc_send(ps__ipc *p, const void *head, size_t hlen, const void *body, size_t blen,
                 ps__conn *pass, void (*done)(void *user, ps__conn *pass, int status), void *user)
{
    size_t len = hlen + blen;
    if (p->state == IPC_CLOSING || p->failed)
        return UV_EPIPE;
    if (len > PS__IPC_MAX_MESSAGE)
        return UV_E2BIG;
    if (pass && (pass->closing || pass->handoff))
        return UV_EINVAL;
    ipc_msg *m = ps__malloc(sizeof *m + IPC_FRAME_HEAD + len);
    m->p = p;
    m->pass = pass;
    m->inflight = false;
    m->abort_pass = false;
    m->done = done;
    m->user = user;
    m->len = IPC_FRAME_HEAD + len;
    uint8_t *f = (uint8_t *)m->data;
    f[0] = (uint8_t)(len >> 24);
    f[1] = (uint8_t)(len >> 16);
    f[2] = (uint8_t)(len >> 8);
    f[3] = (uint8_t)len;
    f[4] = pass != NULL;
    memcpy(m->data + IPC_FRAME_HEAD, head, hlen);
    if (blen)
        memcpy(m->data + IPC_FRAME_HEAD + hlen, body, blen);
    if (pass) {
        ps__conn_pause(pass);
        pass->handoff = m;
    }
    p->queued += m->len;
    ps__list_insert_tail(&p->queue, &m->link);
    ipc_pump(p);
    return 0;
}

size_t ps__ipc_queued(const ps__ipc *p)
{
    return p->queued;
}

bool ps__ipc_failed(const ps__ipc *p)
{
    return p->failed || p->state == IPC_CLOSING;
}

void ps__ipc_close(ps__ipc *p)
{
    p->user_closed = true;
    ipc_close(p);
}

void *ps__ipc_data(const ps__ipc *p)
{
    return p->data;
}

/* ---- name resolution and hiredis's event glue ------------------------------------------ */

/*
 * hiredis connects with getaddrinfo() on the calling thread, which blocks the loop for as long
 * as DNS takes: names are resolved here first, on libuv's thread pool, and hiredis only ever
 * gets a numeric address.
 */
struct ps__resolve_req {
    uv_getaddrinfo_t req;
    ps__resolve_cb cb; /* NULL once cancelled */
    void *user;
};

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    ps__resolve_req *r = PS__CONTAINER_OF(req, ps__resolve_req, req);
    char ip[64] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
        else
            uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    }
    if (res)
        uv_freeaddrinfo(res);
    if (r->cb)
        r->cb(r->user, status == 0 && !ip[0] ? UV_EAI_NONAME : status, ip);
    ps__free(r);
}

ps__resolve_req *ps__resolve(uv_loop_t *loop, const char *host, ps__resolve_cb cb, void *user)
{
    ps__resolve_req *r = ps__calloc(1, sizeof *r);
    r->cb = cb;
    r->user = user;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(loop, &r->req, on_resolved, host, NULL, &hints);
    if (rc != 0) {
        ps__free(r);
        return NULL;
    }
    return r;
}

void ps__resolve_cancel(ps__resolve_req *r)
{
    r->cb = NULL;
    uv_cancel((uv_req_t *)&r->req); /* on_resolved still runs (UV_ECANCELED) and frees it */
}

/*
 * hiredis's libuv adapter as Debian ships it (0.14) drops a poll callback that reports an error
 * (status != 0): a connect refused by a remote host, or a socket reset, then leaves hiredis
 * waiting forever for an event that has already come. The adapter's own hooks are replaced by
 * ones that, like later hiredis releases, hand such an error to hiredis as the events it was
 * waiting for, so that its read or write fails and it reports the disconnect.
 */
static void redis_poll(uv_poll_t *handle, int status, int events)
{
    redisLibuvEvents *p = handle->data;
    int ev = status ? p->events : events;
    if (p->context && (ev & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->context);
}

static void redis_update(redisLibuvEvents *p)
{
    if (p->events)
        uv_poll_start(&p->handle, p->events, redis_poll);
    else
        uv_poll_stop(&p->handle);
}

static void redis_add_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events |= UV_READABLE;
    redis_update(p);
}

static void redis_del_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events &= ~UV_READABLE;
    redis_update(p);
}

static void redis_add_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events |= UV_WRITABLE;
    redis_update(p);
}

static void redis_del_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events &= ~UV_WRITABLE;
    redis_update(p);
}

int ps__redis_attach(struct redisAsyncContext *ac, uv_loop_t *loop)
{
    if (redisLibuvAttach(ac, loop) != REDIS_OK)
        return UV_ENOMEM;
    ac->ev.addRead = redis_add_read;
    ac->ev.delRead = redis_del_read;
    ac->ev.addWrite = redis_add_write;
    ac->ev.delWrite = redis_del_write;
    return 0;
}

/* ---- timers ---------------------------------------------------------------------------- */

struct ps__timer {
    uv_timer_t h;
    ps__timer_cb cb;
    void *data;
};

static void timer_fire(uv_timer_t *h)
{
    ps__timer *t = (ps__timer *)h;
    t->cb(t, t->data);
}

ps__timer *ps__timer_new(uv_loop_t *loop, ps__timer_cb cb, void *data)
{
    ps__timer *t = ps__malloc(sizeof *t);
    uv_timer_init(loop, &t->h);
    t->cb = cb;
    t->data = data;
    return t;
}

void ps__timer_start(ps__timer *t, uint64_t ms)
{
    /* The loop's cached clock can be a whole callback batch old; timers promise milliseconds. */
    uv_update_time(t->h.loop);
    uv_timer_start(&t->h, timer_fire, ms, 0);
}

void ps__timer_stop(ps__timer *t)
{
    uv_timer_stop(&t->h);
}

bool ps__timer_active(const ps__timer *t)
{
    return uv_is_active((const uv_handle_t *)&t->h);
}

uint64_t ps__timer_due_in(const ps__timer *t)
{
    return uv_timer_get_due_in(&t->h);
}

static void timer_on_close(uv_handle_t *h)
{
    ps__free(h);
}

void ps__timer_free(ps__timer *t)
{
    if (!t)
        return;
    uv_timer_stop(&t->h);
    uv_close((uv_handle_t *)&t->h, timer_on_close);
}

uint64_t ps__loop_now(uv_loop_t *loop)
{
    return uv_now(loop);
}
