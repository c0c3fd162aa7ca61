/*
 * net: TCP listener and connections on libuv, plus self-freeing timers. Writes are copied into
 * one allocation together with their uv_write_t (libuv's echo-server pattern) so callers can
 * reuse their buffers at once. A connection's memory lives until libuv's close callback; upper
 * layers learn of the end exactly once through on_close.
 */
#include "net.h"

#include <signal.h>

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

static void conn_on_close(uv_handle_t *h)
{
    ps__conn *c = (ps__conn *)h;
    ps__listener *l = c->listener;
    ps__list_remove(&c->link);
    l->nconns--;
    if (c->linger) {
        l->nlingering--;
        ps__timer_free(c->linger);
    }
    if (c->cbs && c->cbs->on_close)
        c->cbs->on_close(c);
    ps__free(c);
    if (l->on_conn_gone)
        l->on_conn_gone(l);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ps__conn *c = (ps__conn *)h;
    buf->base = c->listener->readbuf;
    buf->len = sizeof c->listener->readbuf;
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ps__conn *c = (ps__conn *)s;
    if (nread > 0) {
        if (!c->closing && c->cbs && c->cbs->on_read)
            c->cbs->on_read(c, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    /* EOF or error: the owner decides how to finish, but reads are over either way. */
    c->peer_done = true;
    uv_read_stop(s);
    if (!c->closing && c->cbs && c->cbs->on_eof)
        c->cbs->on_eof(c);
    else
        ps__conn_abort(c);
}

static void listener_on_connection(uv_stream_t *server, int status)
{
    ps__listener *l = (ps__listener *)server;
    if (status < 0) {
        PS__WARN("accept: %s", uv_strerror(status));
        return;
    }
    ps__conn *c = ps__calloc(1, sizeof *c);
    uv_tcp_init(l->loop, &c->tcp);
    c->listener = l;
    ps__list_insert_tail(&l->conns, &c->link);
    l->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
    }
    l->on_conn(l, c);
    if (!c->closing)
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
}

int ps__listener_init(ps__listener *l, uv_loop_t *loop)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->port = -1;
    ps__list_init(&l->conns);
    return uv_tcp_init(loop, &l->tcp);
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

static void listener_on_close(uv_handle_t *h)
{
    ps__listener *l = (ps__listener *)h;
    l->closed = true;
    if (l->on_closed)
        l->on_closed(l);
}

void ps__listener_close(ps__listener *l, void (*on_closed)(ps__listener *l))
{
    if (uv_is_closing((uv_handle_t *)&l->tcp)) {
        return;
    }
    l->on_closed = on_closed;
    l->listening = false;
    uv_close((uv_handle_t *)&l->tcp, listener_on_close);
}

/* ---- writes ---------------------------------------------------------------------------- */

static void conn_on_write(uv_write_t *req, int status)
{
    write_req *w = PS__CONTAINER_OF(req, write_req, req);
    ps__conn *c = w->conn;
    c->write_queued -= w->len;
    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        PS__DEBUG("write to %s: %s", c->peer, uv_strerror(status));
        ps__conn_abort(c);
    }
    if (c->throttled && c->write_queued <= PS__CONN_HIGH_WATER / 2) {
        c->throttled = false;
        if (!c->paused && !c->closing)
            uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
    }
    ps__free(w);
}

int ps__conn_writev(ps__conn *c, const uv_buf_t *bufs, size_t n)
{
    if (c->closing)
        return UV_EPIPE;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
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
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    return 0;
}

int ps__conn_write(ps__conn *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return ps__conn_writev(c, &b, 1);
}

/* ---- closing --------------------------------------------------------------------------- */

void ps__conn_abort(ps__conn *c)
{
    c->closing = true;
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
    c->linger = ps__timer_new(c->tcp.loop, linger_expired, c);
    c->listener->nlingering++;
    ps__timer_start(c->linger, PS__CONN_LINGER_MS);
}

void ps__conn_close(ps__conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    shutdown_req *s = ps__malloc(sizeof *s);
    s->conn = c;
    if (uv_shutdown(&s->req, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0) {
        ps__free(s);
        ps__conn_abort(c);
    }
}

void ps__conn_pause(ps__conn *c)
{
    if (!c->paused && !c->closing)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->paused = true;
}

void ps__conn_resume(ps__conn *c)
{
    if (c->paused && !c->closing && !c->throttled)
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
    c->paused = false;
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
