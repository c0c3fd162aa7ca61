/*
 * engineio: one ps__eio per Engine.IO session, on either transport.
 *
 * Polling: packets wait in `outq` (joined by \x1e, the payload format) until a GET takes them;
 * a GET that finds nothing is held (deferred by http) until something is sent, at the latest
 * the next ping. Upgrade: a WebSocket with the session's sid is a probe ("2probe" -> "3probe")
 * until the client sends "5"; meanwhile GETs are answered with "6" so the client can pause
 * polling, and then the probe becomes the session's transport and the queue moves onto it.
 *
 * Lifetime: references from the session itself and from each WebSocket that points at it; the
 * layer above hears of the end exactly once (`notified`), always from a loop callback (the
 * WebSocket's close callback, or a zero-delay timer for polling), never from inside a call it
 * made. Heartbeat: one timer alternates between "next ping due" and "pong due".
 */
#include "engineio.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

enum { T_POLLING, T_WEBSOCKET };

/* A polling session that has no accepted CONNECT yet (max_unconnected). Allocated only for
 * those, and freed at the CONNECT. */
typedef struct unconnected {
    ps__list link;  /* in srv->never_polled or srv->polled */
    ps__list alink; /* in addr->sessions */
    struct ps__eio_addr *addr;
    ps__eio *e;
    uint64_t since; /* loop time of the handshake */
    bool polled;
} unconnected;

/* The unconnected sessions of one peer address. */
typedef struct ps__eio_addr {
    struct ps__eio_addr *next; /* hash chain */
    ps__list sessions;         /* unconnected.alink, oldest first */
    uint32_t n;
    char address[48];
} ps__eio_addr;

struct ps__eio {
    ps__eio_server *srv;
    int transport;
    ps__ws *ws;    /* the transport, once on WebSocket */
    ps__ws *probe; /* an upgrade candidate */
    ps__timer *upgrade_timer;
    bool upgrading;       /* the probe was answered: waiting for "5" */
    ps__http_conn *held;  /* a GET waiting for packets */
    ps__buf held_headers; /* its response headers (CORS depends on the request's Origin) */
    ps__timer *linger;    /* closed polling session kept to answer the next GET with "1" */
    ps__buf outq;         /* polling: packets not yet taken by a GET */
    void *up;
    ps__list link;      /* in srv->sessions while open */
    ps__eio *hnext;     /* sid hash chain, while open */
    ps__list beat_link; /* in srv->beat_wait or beat_pong while the heartbeat runs */
    uint64_t beat_due;  /* loop time of its next ping, or of its pong's deadline */
    ps__timer *notify_timer;
    unconnected *uc; /* polling session without a CONNECT yet */
    int refs;        /* the session's own, plus one per WebSocket pointing here */
    bool awaiting_pong;
    bool closed;
    bool notified;
    const char *close_reason;
    int peer_code; /* the close code of a WebSocket that ended from the client's side */
    ps__eio_handshake hs;
    char sid[PS__SID_LEN + 1];
};

static const char POLL_TYPE[] = "text/plain; charset=UTF-8";

/* ---- codec ----------------------------------------------------------------------------- */

void ps__eio_encode_open(ps__buf *out, const char *sid, const ps__eio_config *cfg, bool polling)
{
    ps__buf_printf(out,
                   "0{\"sid\":\"%s\",\"upgrades\":%s,\"pingInterval\":%u,\"pingTimeout\":%u,"
                   "\"maxPayload\":%zu}",
                   sid, polling ? "[\"websocket\"]" : "[]", cfg->ping_interval_ms,
                   cfg->ping_timeout_ms, cfg->max_payload);
}

int ps__eio_decode_payload(const char *body, size_t len, ps__eio_packet_fn fn, void *user)
{
    size_t i = 0;
    for (;;) {
        const char *sep = memchr(body + i, '\x1e', len - i);
        size_t end = sep ? (size_t)(sep - body) : len;
        if (end == i)
            return -1;
        int rc;
        if (body[i] == 'b') {
            ps__buf bin;
            ps__buf_init(&bin);
            if (ps__base64_decode(body + i + 1, end - i - 1, &bin) < 0) {
                ps__buf_free(&bin);
                return -1;
            }
            rc = fn(user, true, bin.base ? bin.base : "", bin.len);
            ps__buf_free(&bin);
        } else {
            rc = fn(user, false, body + i, end - i);
        }
        if (rc != 0)
            return rc;
        if (!sep)
            return 0;
        i = end + 1;
    }
}

/* Drops a default port (":80" for http, ":443" for https) from an authority's length, since
 * browsers leave it out of Origin and clients out of Host, but either may write it. */
static size_t strip_default_port(const char *auth, size_t len, bool https)
{
    const char *port = https ? ":443" : ":80";
    size_t plen = strlen(port);
    if (len > plen && memcmp(auth + len - plen, port, plen) == 0)
        return len - plen;
    return len;
}

static bool same_origin(const char *origin, const char *host, bool secure)
{
    if (!host || !*host)
        return false;
    bool https = ps__strncaseeq(origin, 8, "https://");
    if (!https && (secure || !ps__strncaseeq(origin, 7, "http://")))
        return false;
    const char *auth = origin + (https ? 8 : 7);
    size_t alen = strip_default_port(auth, strlen(auth), https);
    size_t hlen = strip_default_port(host, strlen(host), https);
    return alen > 0 && alen == hlen && strncasecmp(auth, host, alen) == 0;
}

ps__origin ps__eio_origin_check(const ps__eio_config *cfg, const char *origin, const char *host)
{
    if (!origin)
        return PS__ORIGIN_NONE;
    if (same_origin(origin, host, cfg->secure))
        return PS__ORIGIN_SAME;
    bool any = false;
    for (size_t i = 0; i < cfg->nallowed_origins; i++) {
        const char *a = cfg->allowed_origins[i];
        if (strcmp(a, "*") == 0)
            any = true;
        else if (ps__strcaseeq(a, origin))
            return PS__ORIGIN_LISTED;
    }
    return any ? PS__ORIGIN_ANY : PS__ORIGIN_REFUSED;
}

static bool trusted_peer(const ps__eio_config *cfg, const char *addr, size_t len)
{
    return cfg->ntrusted_proxies &&
           ps__cidr_match(cfg->trusted_proxies, cfg->ntrusted_proxies, addr, len);
}

void ps__eio_client_address(const ps__eio_config *cfg, const char *peer,
                            const ps__http_header *headers, size_t nheaders, char *out, size_t size)
{
    const char *best = peer;
    size_t best_len = strlen(peer);
    /* Each trusted hop appended the address it saw; the first untrusted one, from the right, is
     * as far as the chain of trust reaches. Anything unparsable ends it too. */
    for (size_t i = nheaders; i-- > 0 && trusted_peer(cfg, best, best_len);) {
        if (!ps__strcaseeq(headers[i].name, "X-Forwarded-For"))
            continue;
        const char *v = headers[i].value;
        const char *end = v + strlen(v);
        while (end > v && trusted_peer(cfg, best, best_len)) {
            const char *start = end;
            while (start > v && start[-1] != ',')
                start--;
            const char *a = start, *b = end;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            ps__cidr probe;
            char tmp[64];
            if ((size_t)(b - a) >= sizeof tmp)
                goto done;
            memcpy(tmp, a, (size_t)(b - a));
            tmp[b - a] = '\0';
            if (strchr(tmp, '/') || !ps__cidr_parse(tmp, &probe))
                goto done;
            best = a;
            best_len = (size_t)(b - a);
            end = start > v ? start - 1 : v;
        }
    }
done:
    snprintf(out, size, "%.*s", (int)best_len, best);
}

/* The host the browser addressed, for the same-origin check. */
static const char *request_host(const ps__eio_config *cfg, const ps__http_req *req)
{
    const char *peer = ps__http_peer(req);
    const char *fwd = ps__http_header_get(req, "X-Forwarded-Host");
    if (fwd && trusted_peer(cfg, peer, strlen(peer))) {
        /* The nearest proxy's value is the last one. Only used for comparison, so the
         * pointer into the header is enough once surrounding spaces are gone. */
        const char *comma = strrchr(fwd, ',');
        fwd = comma ? comma + 1 : fwd;
        while (*fwd == ' ' || *fwd == '\t')
            fwd++;
        return fwd;
    }
    return ps__http_header_get(req, "Host");
}

static ps__origin request_origin(const ps__eio_config *cfg, const ps__http_req *req)
{
    return ps__eio_origin_check(cfg, ps__http_header_get(req, "Origin"), request_host(cfg, req));
}

/* ---- sid table ------------------------------------------------------------------------- */

static size_t sid_hash(const char *sid, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = sid; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (size_t)(h & (nbuckets - 1));
}

static void table_grow(ps__eio_server *es)
{
    size_t n = es->nbuckets ? es->nbuckets * 2 : 256;
    ps__eio **b = ps__calloc(n, sizeof *b);
    for (size_t i = 0; i < es->nbuckets; i++) {
        for (ps__eio *e = es->buckets[i], *next; e; e = next) {
            next = e->hnext;
            size_t h = sid_hash(e->sid, n);
            e->hnext = b[h];
            b[h] = e;
        }
    }
    ps__free(es->buckets);
    es->buckets = b;
    es->nbuckets = n;
}

static void table_add(ps__eio_server *es, ps__eio *e)
{
    if (es->nsessions + 1 > es->nbuckets)
        table_grow(es);
    size_t h = sid_hash(e->sid, es->nbuckets);
    e->hnext = es->buckets[h];
    es->buckets[h] = e;
}

static void table_remove(ps__eio_server *es, ps__eio *e)
{
    ps__eio **pp = &es->buckets[sid_hash(e->sid, es->nbuckets)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    e->hnext = NULL;
}

static ps__eio *table_find(ps__eio_server *es, const char *sid)
{
    if (!es->nbuckets)
        return NULL;
    for (ps__eio *e = es->buckets[sid_hash(sid, es->nbuckets)]; e; e = e->hnext)
        if (strcmp(e->sid, sid) == 0)
            return e;
    return NULL;
}

/* ---- sessions without a CONNECT ------------------------------------------------------- */

/*
 * Every polling handshake makes a session that outlives its HTTP request, so without a bound a
 * client could make them as fast as it can send GETs (400,000 in 16 s took 366 MB). Until its
 * CONNECT is accepted a polling session counts against max_unconnected, in all and for its
 * peer address, and one beyond ends the oldest of them: first among those that never polled
 * (a real client polls at once; an attacker that does must hold a connection per held GET),
 * then the oldest of all. A session that never polls ends after PS__EIO_FIRST_POLL_MS.
 */

static size_t addr_hash(const char *a, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = a; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (size_t)(h % nbuckets);
}

static ps__eio_addr *addr_find(ps__eio_server *es, const char *address)
{
    if (!es->addrs)
        return NULL;
    for (ps__eio_addr *a = es->addrs[addr_hash(address, es->naddr_buckets)]; a; a = a->next)
        if (strcmp(a->address, address) == 0)
            return a;
    return NULL;
}

static ps__eio_addr *addr_get(ps__eio_server *es, const char *address)
{
    ps__eio_addr *a = addr_find(es, address);
    if (a)
        return a;
    if (!es->addrs) {
        es->naddr_buckets = 256;
        es->addrs = ps__calloc(es->naddr_buckets, sizeof *es->addrs);
    }
    ps__eio_addr **head = &es->addrs[addr_hash(address, es->naddr_buckets)];
    a = ps__calloc(1, sizeof *a);
    ps__list_init(&a->sessions);
    snprintf(a->address, sizeof a->address, "%s", address);
    a->next = *head;
    *head = a;
    return a;
}

static void addr_put(ps__eio_server *es, ps__eio_addr *a)
{
    if (a->n > 0)
        return;
    ps__eio_addr **pp = &es->addrs[addr_hash(a->address, es->naddr_buckets)];
    while (*pp != a)
        pp = &(*pp)->next;
    *pp = a->next;
    ps__free(a);
}

static void uc_remove(ps__eio *e)
{
    unconnected *uc = e->uc;
    if (!uc)
        return;
    e->uc = NULL;
    ps__eio_server *es = e->srv;
    ps__list_remove(&uc->link);
    ps__list_remove(&uc->alink);
    es->nunconnected--;
    uc->addr->n--;
    addr_put(es, uc->addr);
    ps__free(uc);
}

static void first_poll_fire(ps__timer *t, void *data);

static void first_poll_arm(ps__eio_server *es)
{
    if (ps__list_empty(&es->never_polled) || es->shutting_down)
        return;
    unconnected *oldest = PS__CONTAINER_OF(es->never_polled.next, unconnected, link);
    uint64_t now = ps__now_ms(), due = oldest->since + PS__EIO_FIRST_POLL_MS;
    if (!es->first_poll)
        es->first_poll = ps__timer_new(es->loop, first_poll_fire, es);
    if (!ps__timer_active(es->first_poll))
        ps__timer_start(es->first_poll, due > now ? due - now : 0);
}

static void mark_closed(ps__eio *e, const char *reason);
static void poll_finish(ps__eio *e, bool may_linger, bool client_closed);

/* Ends a session without a CONNECT: nobody above knows it, and its client has nothing to learn
 * (its next request gets "Session ID unknown"), so it does not linger. */
static void drop_unconnected(ps__eio *e, const char *reason)
{
    e->srv->unconnected_closed++;
    PS__DEBUG("session %s from %s: %s", e->sid, e->hs.address, reason);
    mark_closed(e, reason);
    if (e->transport == T_WEBSOCKET)
        ps__ws_close(e->ws, PS__WS_POLICY, reason); /* notify_closed follows from its close */
    else
        poll_finish(e, false, false);
}

static void first_poll_fire(ps__timer *t, void *data)
{
    ps__eio_server *es = data;
    uint64_t now = ps__now_ms();
    while (!ps__list_empty(&es->never_polled)) {
        unconnected *oldest = PS__CONTAINER_OF(es->never_polled.next, unconnected, link);
        if (now - oldest->since < PS__EIO_FIRST_POLL_MS)
            break;
        drop_unconnected(oldest->e, "no poll");
    }
    first_poll_arm(es);
}

/* The oldest never-polled session in `list` (linked by alink if by_addr), else the oldest. */
static ps__eio *uc_victim(ps__list *list, bool by_addr)
{
    ps__list *pos;
    ps__list_foreach(pos, list)
    {
        unconnected *uc = by_addr ? PS__CONTAINER_OF(pos, unconnected, alink)
                                  : PS__CONTAINER_OF(pos, unconnected, link);
        if (!uc->polled)
            return uc->e;
    }
    return ps__list_empty(list) ? NULL
                                : (by_addr ? PS__CONTAINER_OF(list->next, unconnected, alink)->e
                                           : PS__CONTAINER_OF(list->next, unconnected, link)->e);
}

/* Makes room for one more unconnected session from `address`. */
static void uc_make_room(ps__eio_server *es, const char *address)
{
    uint32_t per = es->cfg.max_unconnected_per_address, all = es->cfg.max_unconnected;
    ps__eio_addr *a;
    while (per && (a = addr_find(es, address)) && a->n >= per)
        drop_unconnected(uc_victim(&a->sessions, true), "too many unconnected sessions");
    while (all && es->nunconnected >= all) {
        /* Those that never polled first, wherever they come from. */
        ps__list *list = ps__list_empty(&es->never_polled) ? &es->polled : &es->never_polled;
        drop_unconnected(PS__CONTAINER_OF(list->next, unconnected, link)->e,
                         "too many unconnected sessions");
    }
}

static void uc_add(ps__eio *e)
{
    ps__eio_server *es = e->srv;
    unconnected *uc = ps__calloc(1, sizeof *uc);
    uc->e = e;
    uc->since = ps__now_ms();
    uc->addr = addr_get(es, e->hs.address);
    uc->addr->n++;
    ps__list_insert_tail(&uc->addr->sessions, &uc->alink);
    ps__list_insert_tail(&es->never_polled, &uc->link);
    es->nunconnected++;
    e->uc = uc;
    first_poll_arm(es);
}

/* The client polled (a GET or an upgrade probe): it can receive what the server sends. */
static void uc_polled(ps__eio *e)
{
    unconnected *uc = e->uc;
    if (!uc || uc->polled)
        return;
    uc->polled = true;
    ps__list_remove(&uc->link);
    ps__list_insert_tail(&e->srv->polled, &uc->link);
}

void ps__eio_connected(ps__eio *e)
{
    uc_remove(e);
}

/* ---- handshake snapshot ---------------------------------------------------------------- */

/* A page that only "*" let in must not be authenticated by what its browser attached on its
 * own: such headers are left out of the snapshot the app sees. */
static bool credential_header(const char *name)
{
    return ps__strcaseeq(name, "Cookie") || ps__strcaseeq(name, "Authorization");
}

static void handshake_copy(ps__eio_handshake *hs, const ps__eio_config *cfg,
                           const ps__http_req *req)
{
    bool hide = request_origin(cfg, req) == PS__ORIGIN_ANY;
    size_t total = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        total += strlen(req->headers[i].name) + strlen(req->headers[i].value) + 2;
    hs->strings = ps__malloc(total ? total : 1);
    hs->headers = ps__calloc(req->nheaders ? req->nheaders : 1, sizeof *hs->headers);
    char *p = hs->strings;
    size_t k = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (hide && credential_header(req->headers[i].name))
            continue;
        size_t n = strlen(req->headers[i].name) + 1, v = strlen(req->headers[i].value) + 1;
        memcpy(p, req->headers[i].name, n);
        hs->headers[k].name = p;
        p += n;
        memcpy(p, req->headers[i].value, v);
        hs->headers[k].value = p;
        p += v;
        k++;
    }
    hs->nheaders = k;
    hs->url = ps__strdup(req->url);
    hs->query = ps__strdup(req->query);
    ps__eio_client_address(cfg, ps__http_peer(req), req->headers, req->nheaders, hs->address,
                           sizeof hs->address);
}

static void handshake_free(ps__eio_handshake *hs)
{
    ps__free(hs->strings);
    ps__free(hs->headers);
    ps__free(hs->url);
    ps__free(hs->query);
}

/* ---- lifetime -------------------------------------------------------------------------- */

static void beat_stop(ps__eio *e);

static void eio_unref(ps__eio *e)
{
    if (--e->refs > 0)
        return;
    beat_stop(e);
    ps__timer_free(e->notify_timer);
    ps__timer_free(e->upgrade_timer);
    ps__timer_free(e->linger);
    ps__buf_free(&e->outq);
    ps__buf_free(&e->held_headers);
    handshake_free(&e->hs);
    ps__free(e);
}

/* Tells the layer above, once, and drops the session's own reference. */
static void notify_closed(ps__eio *e)
{
    if (e->notified)
        return;
    e->notified = true;
    e->srv->cbs->on_close(e, e->close_reason ? e->close_reason : "transport close");
    e->up = NULL;
    eio_unref(e);
}

static void notify_timer_fire(ps__timer *t, void *data)
{
    notify_closed(data);
}

static void poll_respond(ps__eio *e, const char *body, size_t len)
{
    ps__http_conn *hc = e->held;
    e->held = NULL;
    ps__http_deferred_respond(hc, 200, POLL_TYPE, body, len, ps__buf_cstr(&e->held_headers));
}

/* Marks the session closed and detaches it from the server; the transport ends separately. */
static void mark_closed(ps__eio *e, const char *reason)
{
    e->closed = true;
    if (!e->close_reason)
        e->close_reason = reason;
    beat_stop(e);
    ps__list_remove(&e->link);
    table_remove(e->srv, e);
    e->srv->nsessions--;
    uc_remove(e);
    if (e->probe) {
        ps__ws *probe = e->probe;
        e->probe = NULL;
        ps__ws_close(probe, PS__WS_NORMAL, reason);
    }
}

/* ---- heartbeat ------------------------------------------------------------------------- */

static int send_any(ps__eio *e, bool binary, const char *data, size_t len);

static void beat_fire(ps__timer *t, void *data);

/* Arms the server's heartbeat timer for `due` unless it fires before that already. */
static void beat_arm(ps__eio_server *es, uint64_t due)
{
    uint64_t now = ps__loop_now(es->loop);
    if (ps__timer_active(es->beat) && es->beat_at <= due)
        return;
    es->beat_at = due;
    ps__timer_start(es->beat, due > now ? due - now : 0);
}

/*
 * Puts a session on a heartbeat list, due at `due` (loop time). beat_wait and beat_pong take
 * their sessions in the order of their deadlines since every session waits as long there;
 * beat_early, for the rare shorter waits asked from above (ps__eio_ping_within, ps__eio_probe),
 * is kept sorted, searched from its end (its waits are mostly alike too).
 */
static void beat_put(ps__eio *e, ps__list *list, uint64_t due)
{
    ps__eio_server *es = e->srv;
    if (ps__list_empty(&e->beat_link) && es->nbeating++ == 0)
        es->beat = ps__timer_new(es->loop, beat_fire, es);
    ps__list_remove(&e->beat_link);
    e->beat_due = due;
    ps__list *after = list->prev;
    if (list == &es->beat_early)
        while (after != list && PS__CONTAINER_OF(after, ps__eio, beat_link)->beat_due > due)
            after = after->prev;
    ps__list_insert_tail(after->next, &e->beat_link);
    beat_arm(es, due);
}

/* (Re)schedules a session's heartbeat: its next ping, or with `pong`, its pong's deadline. */
static void beat_schedule(ps__eio *e, bool pong)
{
    ps__eio_server *es = e->srv;
    beat_put(e, pong ? &es->beat_pong : &es->beat_wait,
             ps__loop_now(es->loop) + (pong ? es->cfg.ping_timeout_ms : es->cfg.ping_interval_ms));
}

static void beat_stop(ps__eio *e)
{
    ps__eio_server *es = e->srv;
    if (ps__list_empty(&e->beat_link))
        return;
    ps__list_remove(&e->beat_link);
    if (--es->nbeating == 0) {
        ps__timer_free(es->beat);
        es->beat = NULL;
    }
}

static ps__eio *beat_head(ps__list *l, uint64_t now)
{
    if (ps__list_empty(l))
        return NULL;
    ps__eio *e = PS__CONTAINER_OF(l->next, ps__eio, beat_link);
    return e->beat_due <= now ? e : NULL;
}

/* Sends a ping whose pong is due at `deadline`, kept on `list`. */
static void ping(ps__eio *e, ps__list *list, uint64_t deadline)
{
    e->awaiting_pong = true;
    beat_put(e, list, deadline); /* first: the send may end the session (a slow consumer) */
    e->refs++;
    send_any(e, false, "2", 1);
    if (!e->closed && e->srv->cbs->on_heartbeat)
        e->srv->cbs->on_heartbeat(e, false);
    eio_unref(e);
}

static void beat_min(ps__list *l, uint64_t *due)
{
    if (!ps__list_empty(l)) {
        uint64_t d = PS__CONTAINER_OF(l->next, ps__eio, beat_link)->beat_due;
        if (d < *due)
            *due = d;
    }
}

/* Every session whose pong is overdue ends; every one whose ping is due gets it. */
static void beat_fire(ps__timer *t, void *data)
{
    ps__eio_server *es = data;
    uint64_t now = ps__loop_now(es->loop);
    uint64_t deadline = now + es->cfg.ping_timeout_ms;
    ps__eio *e;
    while ((e = beat_head(&es->beat_pong, now))) {
        beat_stop(e);
        ps__eio_close(e, PS__WS_NORMAL, "ping timeout");
    }
    while ((e = beat_head(&es->beat_early, now))) {
        if (e->awaiting_pong) {
            beat_stop(e);
            ps__eio_close(e, PS__WS_NORMAL, "ping timeout");
        } else {
            ping(e, &es->beat_pong, deadline);
        }
    }
    while ((e = beat_head(&es->beat_wait, now)))
        ping(e, &es->beat_pong, deadline);
    if (!es->beat)
        return; /* the last session went */
    uint64_t due = UINT64_MAX;
    beat_min(&es->beat_wait, &due);
    beat_min(&es->beat_pong, &due);
    beat_min(&es->beat_early, &due);
    if (due != UINT64_MAX) {
        es->beat_at = due;
        ps__timer_start(es->beat, due > now ? due - now : 0);
    }
}

void ps__eio_ping_soon(ps__eio *e)
{
    if (e->closed || e->awaiting_pong)
        return;
    ps__eio_server *es = e->srv;
    ping(e, &es->beat_pong, ps__loop_now(es->loop) + es->cfg.ping_timeout_ms);
}

void ps__eio_ping_within(ps__eio *e, uint32_t ms)
{
    if (e->closed || e->awaiting_pong)
        return;
    uint64_t due = ps__loop_now(e->srv->loop) + ms;
    if (ps__list_empty(&e->beat_link) || e->beat_due > due)
        beat_put(e, &e->srv->beat_early, due);
}

void ps__eio_probe(ps__eio *e, uint32_t deadline_ms)
{
    if (e->closed)
        return;
    ps__eio_server *es = e->srv;
    uint64_t due = ps__loop_now(es->loop) + deadline_ms;
    if (!e->awaiting_pong)
        ping(e, &es->beat_early, due);
    else if (e->beat_due > due)
        beat_put(e, &es->beat_early, due);
}

/* ---- packets from the client ----------------------------------------------------------- */

/* One packet from either transport. Returns -1 when it ended the session for a violation. */
static int on_packet(ps__eio *e, bool binary, const char *data, size_t len)
{
    if (e->closed)
        return 0;
    if (binary) {
        e->srv->cbs->on_message(e, true, data, len);
        return 0;
    }
    if (len == 0) {
        ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "parse error");
        return -1;
    }
    switch (data[0]) {
    case PS__EIO_MESSAGE: e->srv->cbs->on_message(e, false, data + 1, len - 1); return 0;
    case PS__EIO_PONG:
        if (e->awaiting_pong && len == 1) {
            e->awaiting_pong = false;
            beat_schedule(e, false);
            if (e->srv->cbs->on_heartbeat)
                e->srv->cbs->on_heartbeat(e, true);
        }
        return 0;
    case PS__EIO_CLOSE: ps__eio_close(e, PS__WS_NORMAL, "client close"); return 0;
    case PS__EIO_PING:
        /* v4 clients never ping outside an upgrade probe. */
        ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "invalid heartbeat direction");
        return -1;
    default: ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "parse error"); return -1;
    }
}

/* ---- the session's WebSocket ----------------------------------------------------------- */

static void eio_on_ws_message(ps__ws *ws, bool binary, const char *data, size_t len)
{
    on_packet(ps__ws_data(ws), binary, data, len);
}

static void eio_on_ws_close(ps__ws *ws, int code)
{
    ps__eio *e = ps__ws_data(ws);
    if (!e->closed) {
        /* Errors found by the layers above were counted there; these were found below. */
        if (code == PS__WS_PROTOCOL_ERROR || code == PS__WS_INVALID_DATA || code == PS__WS_TOO_BIG)
            e->srv->ws_errors++;
        e->peer_code = code;
        mark_closed(e, "transport close");
    }
    e->ws = NULL;
    notify_closed(e);
    eio_unref(e); /* the WebSocket's */
}

static const ps__ws_cbs eio_ws_cbs = {eio_on_ws_message, eio_on_ws_close};

/* ---- sending --------------------------------------------------------------------------- */

/* Answers the held GET with everything queued (plus a noop while an upgrade is under way). */
static void poll_flush(ps__eio *e)
{
    if (!e->held)
        return;
    if (e->upgrading) {
        if (e->outq.len)
            ps__buf_appendc(&e->outq, '\x1e');
        ps__buf_appendc(&e->outq, PS__EIO_NOOP);
    }
    if (e->outq.len == 0)
        return;
    ps__buf out = e->outq;
    ps__buf_init(&e->outq);
    poll_respond(e, out.base, out.len);
    ps__buf_free(&out);
}

static void poll_queue(ps__eio *e, bool binary, const char *data, size_t len)
{
    if (e->outq.len)
        ps__buf_appendc(&e->outq, '\x1e');
    if (binary) {
        ps__buf_appendc(&e->outq, 'b');
        ps__buf_reserve(&e->outq, 4 * ((len + 2) / 3) + 1);
        e->outq.len += ps__base64_encode((const uint8_t *)data, len, e->outq.base + e->outq.len);
    } else {
        ps__buf_append(&e->outq, data, len);
    }
    poll_flush(e);
}

static int send_any(ps__eio *e, bool binary, const char *data, size_t len)
{
    if (e->transport == T_WEBSOCKET)
        return ps__ws_send(e->ws, binary, data, len);
    poll_queue(e, binary, data, len);
    return 0;
}

static void linger_end(ps__eio *e)
{
    if (!e->linger)
        return;
    ps__timer_free(e->linger);
    e->linger = NULL;
    table_remove(e->srv, e);
    ps__list_remove(&e->link);
    eio_unref(e);
}

static void linger_fire(ps__timer *t, void *data)
{
    linger_end(data);
}

/*
 * The server ended a polling session that had no GET waiting: the reference answers the next
 * GET with "1" (the client then reports a close, not an error), so the sid stays known, closed,
 * for as long as a healthy client takes to poll again (bounded by the heartbeat).
 */
static void linger(ps__eio *e)
{
    e->refs++;
    table_add(e->srv, e);
    ps__list_insert_tail(&e->srv->lingering, &e->link);
    e->linger = ps__timer_new(e->srv->loop, linger_fire, e);
    ps__timer_start(e->linger, e->srv->cfg.ping_interval_ms + e->srv->cfg.ping_timeout_ms);
}

/*
 * Ends a polling session's transport side: the client learns from a "1" in its poll (the
 * reference answers a held GET with it at once); with no GET held, a session the server ended
 * lingers to tell the next one. A client that closed itself (a "1" in its POST) needs no news:
 * its held GET just ends with a noop, as the specification says. The layer above hears of it
 * from the loop.
 */
static void poll_finish(ps__eio *e, bool may_linger, bool client_closed)
{
    ps__buf_free(&e->outq);
    if (e->held)
        poll_respond(e, client_closed ? "6" : "1", 1);
    else if (may_linger)
        linger(e);
    e->notify_timer = ps__timer_new(e->srv->loop, notify_timer_fire, e);
    ps__timer_start(e->notify_timer, 0);
}

/*
 * A client that does not read would make the server hold everything sent to it. Past
 * max_queued it is cut off: no close handshake (it would queue behind the same unread bytes),
 * and the session ends as for any disconnect, so its channels close and requests complete.
 */
static int check_backlog(ps__eio *e, int rc)
{
    size_t limit = e->srv->cfg.max_queued;
    if (rc != 0 || !limit || e->closed || ps__eio_queued(e) <= limit)
        return rc;
    e->srv->slow_consumers++;
    PS__INFO("session %s: %zu bytes unread, disconnecting a slow consumer", e->sid,
             ps__eio_queued(e));
    mark_closed(e, "slow consumer");
    if (e->transport == T_WEBSOCKET)
        ps__ws_abort(e->ws); /* notify_closed follows from its close callback */
    else
        poll_finish(e, false, false);
    return UV_EPIPE;
}

int ps__eio_send_packet(ps__eio *e, const char *packet, size_t len)
{
    if (e->closed)
        return UV_EPIPE;
    return check_backlog(e, send_any(e, false, packet, len));
}

int ps__eio_send_packetv(ps__eio *e, const uv_buf_t *parts, size_t nparts)
{
    if (e->closed)
        return UV_EPIPE;
    int rc = 0;
    if (e->transport == T_WEBSOCKET) {
        rc = ps__ws_sendv(e->ws, false, parts, nparts);
    } else {
        ps__buf b;
        ps__buf_init(&b);
        for (size_t i = 0; i < nparts; i++)
            ps__buf_append(&b, parts[i].base, parts[i].len);
        poll_queue(e, false, b.base ? b.base : "", b.len);
        ps__buf_free(&b);
    }
    return check_backlog(e, rc);
}

int ps__eio_send_binary(ps__eio *e, const char *data, size_t len)
{
    if (e->closed)
        return UV_EPIPE;
    return check_backlog(e, send_any(e, true, data, len));
}

/* A normal close the client did not cause: the only kind whose news waits for its next GET.
 * (After a ping timeout the reference forgets the sid at once; errors are answered 400.) */
static bool server_initiated(int code, const char *reason)
{
    return (code == PS__WS_NORMAL || code == PS__WS_GOING_AWAY) &&
           strcmp(reason, "client close") != 0 && strcmp(reason, "transport close") != 0 &&
           strcmp(reason, "ping timeout") != 0;
}

void ps__eio_close(ps__eio *e, int code, const char *reason)
{
    if (e->closed)
        return;
    mark_closed(e, reason);
    if (e->transport == T_WEBSOCKET) {
        ps__ws_close(e->ws, code, reason); /* notify_closed follows from its close callback */
        return;
    }
    poll_finish(e, server_initiated(code, reason) && !e->srv->shutting_down,
                strcmp(reason, "client close") == 0);
}

/* ---- upgrade --------------------------------------------------------------------------- */

static int send_on_ws(void *user, bool binary, const char *data, size_t len)
{
    ps__ws_send(user, binary, data, len);
    return 0;
}

static void probe_on_message(ps__ws *ws, bool binary, const char *data, size_t len)
{
    ps__eio *e = ps__ws_data(ws);
    if (e->closed || e->probe != ws)
        return;
    if (!binary && len == 6 && memcmp(data, "2probe", 6) == 0 && !e->upgrading) {
        ps__ws_send(ws, false, "3probe", 6);
        e->upgrading = true;
        poll_flush(e); /* a held GET gets "6": the client pauses polling */
        return;
    }
    if (!binary && len == 1 && data[0] == PS__EIO_UPGRADE && e->upgrading) {
        ps__timer_stop(e->upgrade_timer);
        e->probe = NULL;
        e->upgrading = false;
        e->transport = T_WEBSOCKET;
        e->ws = ws;
        ps__ws_set_cbs(ws, &eio_ws_cbs, e);
        if (e->held)
            poll_respond(e, "6", 1);
        /* What waited for a GET now goes on the WebSocket, in order: the queue is a payload. */
        ps__buf q = e->outq;
        ps__buf_init(&e->outq);
        if (q.len)
            ps__eio_decode_payload(q.base, q.len, send_on_ws, ws);
        ps__buf_free(&q);
        return;
    }
    /* Anything else on a probe aborts the upgrade; the session stays on polling. */
    e->probe = NULL;
    e->upgrading = false;
    ps__timer_stop(e->upgrade_timer);
    ps__ws_close(ws, PS__WS_PROTOCOL_ERROR, "invalid upgrade");
}

static void probe_on_close(ps__ws *ws, int code)
{
    ps__eio *e = ps__ws_data(ws);
    if (e->probe == ws) {
        e->probe = NULL;
        e->upgrading = false;
        ps__timer_stop(e->upgrade_timer);
    }
    eio_unref(e);
}

static const ps__ws_cbs probe_ws_cbs = {probe_on_message, probe_on_close};

static void upgrade_timeout(ps__timer *t, void *data)
{
    ps__eio *e = data;
    if (!e->probe)
        return;
    ps__ws *probe = e->probe;
    e->probe = NULL;
    e->upgrading = false;
    ps__ws_close(probe, PS__WS_NORMAL, "upgrade timeout");
}

/* ---- requests -------------------------------------------------------------------------- */

/* CORS grants for the origins that need one (same-origin pages and programs need none). */
static void cors_headers(ps__buf *out, const ps__eio_config *cfg, const ps__http_req *req)
{
    switch (request_origin(cfg, req)) {
    case PS__ORIGIN_LISTED:
        ps__buf_printf(out,
                       "Access-Control-Allow-Origin: %s\r\n"
                       "Access-Control-Allow-Credentials: true\r\n"
                       "Vary: Origin\r\n",
                       ps__http_header_get(req, "Origin"));
        break;
    case PS__ORIGIN_ANY: ps__buf_appends(out, "Access-Control-Allow-Origin: *\r\n"); break;
    default: break;
    }
}

static void respond_error(ps__http_req *req, const ps__eio_config *cfg, int status, int code,
                          const char *message)
{
    ps__buf extra, body;
    ps__buf_init(&extra);
    ps__buf_init(&body);
    cors_headers(&extra, cfg, req);
    ps__buf_printf(&body, "{\"code\":%d,\"message\":", code);
    ps__json_escape(&body, message);
    ps__buf_appendc(&body, '}');
    ps__http_respond(req, status, "application/json", body.base, body.len, ps__buf_cstr(&extra));
    ps__buf_free(&body);
    ps__buf_free(&extra);
}

static void respond_poll(ps__http_req *req, const ps__eio_config *cfg, const char *ctype,
                         const char *body, size_t len)
{
    ps__buf extra;
    ps__buf_init(&extra);
    ps__buf_appends(&extra, "Cache-Control: no-store\r\n");
    cors_headers(&extra, cfg, req);
    ps__http_respond(req, 200, ctype, body, len, extra.base);
    ps__buf_free(&extra);
}

static ps__eio *session_new(ps__eio_server *es, ps__http_req *req, int transport)
{
    ps__eio *e = ps__calloc(1, sizeof *e);
    e->srv = es;
    e->transport = transport;
    e->refs = 1;
    ps__list_init(&e->link);
    ps__list_init(&e->beat_link);
    handshake_copy(&e->hs, &es->cfg, req);
    ps__random_sid(e->sid);
    if (es->cfg.sid_worker)
        ps__id_set_worker(e->sid, es->cfg.sid_worker - 1);
    return e;
}

/* Registers a new session and starts its life: open packet sent by the caller first. */
static void session_start(ps__eio_server *es, ps__eio *e)
{
    ps__list_insert_tail(&es->sessions, &e->link);
    table_add(es, e);
    es->nsessions++;
    beat_schedule(e, false);
    e->up = es->cbs->on_open(e, es->user);
}

static void on_held_abort(void *user)
{
    ps__eio *e = user;
    e->held = NULL;
    /* The reference closes a session whose pending GET the client gave up on. */
    ps__eio_close(e, PS__WS_NORMAL, "transport close");
}

static int on_posted_packet(void *user, bool binary, const char *data, size_t len)
{
    return on_packet(user, binary, data, len);
}

static void handle_poll(ps__eio_server *es, ps__http_req *req, ps__eio *e)
{
    if (e->closed) { /* lingering: see linger() */
        if (req->method_id == HTTP_GET)
            respond_poll(req, &es->cfg, POLL_TYPE, "1", 1);
        else
            respond_error(req, &es->cfg, 400, 1, "Session ID unknown");
        linger_end(e);
        return;
    }
    if (e->transport != T_POLLING) {
        respond_error(req, &es->cfg, 400, 3, "Bad request");
        return;
    }
    if (req->method_id == HTTP_GET) {
        if (e->held) {
            /* Two GETs at once: a broken or hostile client. End the session. */
            ps__eio_close(e, PS__WS_POLICY, "multiple polling requests");
            respond_error(req, &es->cfg, 400, 3, "Bad request");
            return;
        }
        uc_polled(e);
        e->held = ps__http_defer(req, on_held_abort, e);
        ps__buf_reset(&e->held_headers);
        ps__buf_appends(&e->held_headers, "Cache-Control: no-store\r\n");
        cors_headers(&e->held_headers, &es->cfg, req);
        poll_flush(e);
        return;
    }
    if (req->method_id != HTTP_POST) {
        respond_error(req, &es->cfg, 400, 3, "Bad request");
        return;
    }
    const char *ctype = ps__http_header_get(req, "Content-Type");
    if (ctype && strncmp(ctype, "application/octet-stream", 24) == 0) {
        ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "binary payload");
        respond_error(req, &es->cfg, 400, 3, "Bad request");
        return;
    }
    if (req->body_len > es->cfg.max_payload) {
        ps__eio_close(e, PS__WS_TOO_BIG, "payload too large");
        respond_error(req, &es->cfg, 413, 3, "Payload too large");
        return;
    }
    /* The upper layer may close (even free on its side) while packets are handled: keep the
     * session's memory until this request is answered. */
    e->refs++;
    int rc = ps__eio_decode_payload(req->body, req->body_len, on_posted_packet, e);
    if (rc == 0) {
        respond_poll(req, &es->cfg, "text/html", "ok", 2); /* also when a "1" closed it */
    } else {
        if (!e->closed)
            ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "parse error");
        respond_error(req, &es->cfg, 400, 3, "Bad request");
    }
    eio_unref(e);
}

static void refused_on_message(ps__ws *ws, bool binary, const char *data, size_t len) {}

static void refused_on_close(ps__ws *ws, int code) {}

static const ps__ws_cbs refused_ws_cbs = {refused_on_message, refused_on_close};

static void handle_ws(ps__eio_server *es, ps__http_req *req, ps__eio *e)
{
    ps__ws_opts wo = {.max_message = es->cfg.max_payload,
                      .close_timeout_ms = es->cfg.close_timeout_ms,
                      .pool = &es->wspool};
    if (e) {
        /* An upgrade: only a polling session with no probe under way. */
        if (e->closed) {
            respond_error(req, &es->cfg, 400, 1, "Session ID unknown");
            return;
        }
        if (e->transport != T_POLLING || e->probe) {
            /* The reference accepts a second WebSocket for a session that has upgraded (or is
             * upgrading) and closes it at once: the client sees a WebSocket that ends, not a
             * failed handshake. It never touches the session. */
            ps__ws *extra = ps__ws_upgrade(req, &wo, &refused_ws_cbs, NULL);
            if (extra)
                ps__ws_close(extra, PS__WS_POLICY, "session already upgraded");
            return;
        }
        ps__ws *ws = ps__ws_upgrade(req, &wo, &probe_ws_cbs, e);
        if (!ws)
            return;
        uc_polled(e);
        e->refs++;
        e->probe = ws;
        if (!e->upgrade_timer)
            e->upgrade_timer = ps__timer_new(es->loop, upgrade_timeout, e);
        ps__timer_start(e->upgrade_timer,
                        es->cfg.upgrade_timeout_ms ? es->cfg.upgrade_timeout_ms : 10000);
        ps__ws_start(ws);
        return;
    }
    e = session_new(es, req, T_WEBSOCKET);
    e->ws = ps__ws_upgrade(req, &wo, &eio_ws_cbs, e);
    if (!e->ws) {
        eio_unref(e);
        return;
    }
    e->refs++; /* the WebSocket's */
    ps__buf open;
    ps__buf_init(&open);
    ps__eio_encode_open(&open, e->sid, &es->cfg, false);
    ps__ws_send(e->ws, false, open.base, open.len);
    ps__buf_free(&open);
    session_start(es, e);
    ps__ws_start(e->ws);
}

void ps__eio_handle_request(ps__eio_server *es, ps__http_req *req)
{
    ps__buf v, sid;
    ps__buf_init(&v);
    ps__buf_init(&sid);
    ps__origin origin = request_origin(&es->cfg, req);
    if (req->method_id == HTTP_OPTIONS) {
        /* CORS preflight for polling from an allowed origin. */
        ps__buf extra;
        ps__buf_init(&extra);
        cors_headers(&extra, &es->cfg, req);
        if (extra.len)
            ps__buf_appends(&extra, "Access-Control-Allow-Methods: GET, POST\r\n"
                                    "Access-Control-Allow-Headers: content-type\r\n");
        int status = extra.len ? 204 : origin == PS__ORIGIN_REFUSED ? 403 : 400;
        ps__http_respond(req, status, NULL, NULL, 0, ps__buf_cstr(&extra));
        ps__buf_free(&extra);
        goto out;
    }
    if (!ps__http_query_get(req->query, "EIO", &v) || strcmp(v.base, "4") != 0) {
        respond_error(req, &es->cfg, 400, 5, "Unsupported protocol version");
        goto out;
    }
    bool ws = false;
    if (!ps__http_query_get(req->query, "transport", &v) ||
        !((ws = strcmp(v.base, "websocket") == 0) ||
          (es->cfg.polling && strcmp(v.base, "polling") == 0))) {
        respond_error(req, &es->cfg, 400, 0, "Transport unknown");
        goto out;
    }
    if (origin == PS__ORIGIN_REFUSED) {
        respond_error(req, &es->cfg, 403, 4, "Forbidden");
        goto out;
    }
    ps__eio *e = NULL;
    if (ps__http_query_get(req->query, "sid", &sid)) {
        e = table_find(es, sid.base);
        if (!e) {
            respond_error(req, &es->cfg, 400, 1, "Session ID unknown");
            goto out;
        }
    }
    if (ws && !req->upgrade) {
        respond_error(req, &es->cfg, 400, 3, "Bad request");
        goto out;
    }
    if (!e && es->shutting_down) {
        ps__http_respond(req, 503, "text/plain; charset=utf-8", PS__STRLIT("shutting down\n"),
                         NULL);
        goto out;
    }
    if (ws) {
        handle_ws(es, req, e);
    } else if (e) {
        handle_poll(es, req, e);
    } else if (req->method_id != HTTP_GET) {
        respond_error(req, &es->cfg, 400, 2, "Bad handshake method");
    } else {
        e = session_new(es, req, T_POLLING);
        uc_make_room(es, e->hs.address); /* the client's, from X-Forwarded-For behind a proxy */
        ps__buf open;
        ps__buf_init(&open);
        ps__eio_encode_open(&open, e->sid, &es->cfg, true);
        respond_poll(req, &es->cfg, POLL_TYPE, open.base, open.len);
        ps__buf_free(&open);
        session_start(es, e);
        uc_add(e);
    }
out:
    ps__buf_free(&v);
    ps__buf_free(&sid);
}

/* ---- server ---------------------------------------------------------------------------- */

void ps__eio_server_init(ps__eio_server *es, uv_loop_t *loop, const ps__eio_config *cfg,
                         const ps__eio_cbs *cbs, void *user)
{
    memset(es, 0, sizeof *es);
    es->loop = loop;
    es->cfg = *cfg;
    es->cbs = cbs;
    es->user = user;
    ps__list_init(&es->sessions);
    ps__list_init(&es->beat_wait);
    ps__list_init(&es->beat_pong);
    ps__list_init(&es->beat_early);
    ps__list_init(&es->lingering);
    ps__list_init(&es->never_polled);
    ps__list_init(&es->polled);
    ps__ws_pool_init(&es->wspool, loop, cfg->ws_idle_release_ms);
}

void ps__eio_server_free(ps__eio_server *es)
{
    ps__timer_free(es->first_poll);
    es->first_poll = NULL;
    ps__free(es->addrs); /* empty: every session was closed (and left it) before this */
    es->addrs = NULL;
    ps__free(es->buckets);
    es->buckets = NULL;
    es->nbuckets = 0;
}

void ps__eio_server_shutdown(ps__eio_server *es)
{
    es->shutting_down = true;
    ps__timer_free(es->first_poll);
    es->first_poll = NULL;
    while (!ps__list_empty(&es->lingering))
        linger_end(PS__CONTAINER_OF(es->lingering.next, ps__eio, link));
    while (!ps__list_empty(&es->sessions)) {
        ps__eio *e = PS__CONTAINER_OF(es->sessions.next, ps__eio, link);
        ps__eio_close(e, PS__WS_GOING_AWAY, "server shutdown");
    }
}

size_t ps__eio_server_queued(const ps__eio_server *es)
{
    size_t total = 0;
    ps__list *pos;
    ps__list_foreach(pos, &es->sessions)
    {
        total += ps__eio_queued(PS__CONTAINER_OF(pos, ps__eio, link));
    }
    return total;
}

/* ---- accessors ------------------------------------------------------------------------- */

bool ps__eio_closed(const ps__eio *e)
{
    return e->closed;
}

bool ps__eio_client_left(const ps__eio *e)
{
    /* 1000: the client said it is done; 1001: its page went away (a browser closes its
     * WebSockets so when a tab closes or navigates); 1002/1007/1009: its frames broke the
     * protocol. A network failure sends no close frame at all (1006), and socket.io-client,
     * when it gives a connection up itself (its ping timeout), one without a code (1005). */
    return e->peer_code == PS__WS_NORMAL || e->peer_code == PS__WS_GOING_AWAY ||
           e->peer_code == PS__WS_PROTOCOL_ERROR || e->peer_code == PS__WS_INVALID_DATA ||
           e->peer_code == PS__WS_TOO_BIG;
}

size_t ps__eio_queued(const ps__eio *e)
{
    return e->transport == T_WEBSOCKET && e->ws ? ps__ws_queued(e->ws) : e->outq.len;
}

const char *ps__eio_transport(const ps__eio *e)
{
    return e->transport == T_WEBSOCKET ? "websocket" : "polling";
}

void *ps__eio_up(const ps__eio *e)
{
    return e->up;
}

const char *ps__eio_sid(const ps__eio *e)
{
    return e->sid;
}

const ps__eio_handshake *ps__eio_get_handshake(const ps__eio *e)
{
    return &e->hs;
}

ps__eio_handshake *ps__eio_handshake_dup(const ps__eio_handshake *hs)
{
    size_t strings = 0;
    for (size_t i = 0; i < hs->nheaders; i++)
        strings += strlen(hs->headers[i].name) + strlen(hs->headers[i].value) + 2;
    size_t url = hs->url ? strlen(hs->url) + 1 : 0, query = hs->query ? strlen(hs->query) + 1 : 0;
    size_t total = sizeof *hs + hs->nheaders * sizeof *hs->headers + strings + url + query;
    ps__eio_handshake *out = ps__malloc(total);
    char *p = (char *)(out + 1);
    memcpy(out->address, hs->address, sizeof out->address);
    out->nheaders = hs->nheaders;
    out->headers = (ps__http_header *)p;
    p += hs->nheaders * sizeof *hs->headers;
    out->strings = p;
    for (size_t i = 0; i < hs->nheaders; i++) {
        size_t n = strlen(hs->headers[i].name) + 1, v = strlen(hs->headers[i].value) + 1;
        out->headers[i].name = memcpy(p, hs->headers[i].name, n);
        p += n;
        out->headers[i].value = memcpy(p, hs->headers[i].value, v);
        p += v;
    }
    out->url = url ? memcpy(p, hs->url, url) : NULL;
    p += url;
    out->query = query ? memcpy(p, hs->query, query) : NULL;
    return out;
}

ps__eio_server *ps__eio_get_server(const ps__eio *e)
{
    return e->srv;
}
