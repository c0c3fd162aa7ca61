/*
 * server: the composition root. Owns the options, the listener, the HTTP configuration and the
 * session layer, wires them together, and runs the graceful stop: stop accepting, close every
 * WebSocket with 1001, close idle HTTP connections, abort whatever is left after the grace
 * period, then release the server's own handles so that the loop runs out of work.
 */
#include "broker.h"
#include "metrics.h"
#include "worker.h"

#include <hiredis/hiredis.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct post_item {
    ps__list link;
    ps_post_fn fn;
    void *arg;
} post_item;

/* Other threads see only the mutex, the list and `closed`; the async handle exists from
 * ps_server_listen until the stop, so that a server that never listened holds no handle. */
typedef struct post_queue {
    uv_async_t async;
    uv_mutex_t mu;
    ps__list items;
    ps_server *srv;
    bool has_async;
    bool closed; /* the stop began: posts are refused */
} post_queue;

struct ps_server {
    uv_loop_t *loop;
    uv_loop_t *own_loop; /* non-NULL when the server created the loop */
    ps_server_opts opts;
    char *host;
    char *path;
    char **origins;    /* copy of opts.allowed_origins, NULL-terminated */
    ps__cidr *proxies; /* opts.trusted_proxies, parsed */
    ps__listener listener;
    ps__http_config http;
    ps__sessions sessions;
    ps__channels channels;
    ps__topics topics;
    ps__tls *tls; /* NULL: plain HTTP */
    /* GET /metrics: on the main port (metrics_on_main), or on a listener of its own. */
    bool metrics_on_main;
    char *metrics_host;  /* metrics_listen's host; NULL: no listener of its own */
    int metrics_port;    /* its port (0: any; with workers, worker i takes port + i) */
    bool metrics_inited; /* metrics_listener's handle exists */
    ps__listener metrics_listener;
    ps__http_config metrics_http;
    ps__histogram hist_requests;
    ps__histogram hist_server_requests;
    double start_time;
    post_queue *posts;
    uv_signal_t *signals[3]; /* SIGINT, SIGTERM, and SIGHUP with TLS */
    ps__timer *grace;
    uint64_t refused;
    bool listening;
    bool listener_failed; /* its handle exists but never listened */
    int listen_rc;        /* why */
    bool stopping;
    bool stopped; /* every handle released */
    /* Workers (worker.h): in the supervisor `supervising`; in a worker workers.self >= 0. */
    ps__workers workers;
    bool supervising;
    uint8_t node[PS__NODE_ID_LEN]; /* this node's id in every publish it sends */
    uint64_t pub_seq;              /* publishes this process sent to others */
    uint64_t remote_out, remote_in, remote_lost, remote_invalid;
    /* Redis (broker.h): made when this process starts serving, closed by the stop. */
    ps__broker_cfg redis;
    char *redis_prefix;
    bool has_redis;
    ps__broker *broker;
    uint64_t redis_reconnects; /* of brokers closed already */
};

static bool in_worker(const ps_server *srv)
{
    return srv->workers.self >= 0;
}

static void apply_defaults(ps_server_opts *o)
{
    if (!o->ping_interval_ms)
        o->ping_interval_ms = 25000;
    if (!o->ping_timeout_ms)
        o->ping_timeout_ms = 20000;
    if (!o->connect_timeout_ms)
        o->connect_timeout_ms = 45000;
    if (!o->shutdown_grace_ms)
        o->shutdown_grace_ms = 2000;
    if (!o->ws_idle_release_ms)
        o->ws_idle_release_ms = 1000;
    if (!o->max_payload)
        o->max_payload = 1024 * 1024;
    if (!o->max_header_size)
        o->max_header_size = 8 * 1024;
    if (!o->max_body_size)
        o->max_body_size = 1024 * 1024;
    if (!o->backlog)
        o->backlog = 511;
    if (!o->max_queued_bytes)
        o->max_queued_bytes = 4 * 1024 * 1024;
    if (!o->max_connections)
        o->max_connections = 10000;
    if (!o->max_views_per_session)
        o->max_views_per_session = 64;
    if (!o->max_channels_per_session)
        o->max_channels_per_session = 256;
    if (!o->max_pending_requests)
        o->max_pending_requests = 1024;
    if (!o->idle_timeout_ms)
        o->idle_timeout_ms = 30000;
    if (!o->close_timeout_ms)
        o->close_timeout_ms = PS__CONN_CLOSE_TIMEOUT_MS;
    if (!o->max_unconnected)
        o->max_unconnected = 4096;
    if (!o->max_unconnected_per_address)
        o->max_unconnected_per_address = 256;
    if (!o->tls_handshake_timeout_ms)
        o->tls_handshake_timeout_ms = 10000;
    if (!o->max_topics_per_channel)
        o->max_topics_per_channel = 64;
    if (!o->max_topics)
        o->max_topics = 100000;
    if (!o->resume_window_ms)
        o->resume_window_ms = 60000;
    if (!o->max_replay_bytes)
        o->max_replay_bytes = 256 * 1024;
    if (!o->max_detached_sessions)
        o->max_detached_sessions = 1024;
}

/* "/socket.io/" also owns "/socket.io" and anything below it, as the reference does. `target`
 * is a path or a raw request target (the query then follows a '?'). */
static bool on_engine_path(const ps_server *srv, const char *target)
{
    size_t plen = strlen(srv->path);
    size_t cmp = srv->path[plen - 1] == '/' ? plen - 1 : plen;
    return strncmp(target, srv->path, cmp) == 0 &&
           (target[cmp] == '\0' || target[cmp] == '/' || target[cmp] == '?');
}

/* ---- metrics ---------------------------------------------------------------------------- */

static void serve_metrics(ps_server *srv, ps__http_req *req)
{
    if (req->method_id != HTTP_GET && req->method_id != HTTP_HEAD) {
        ps__http_respond(req, 405, "text/plain; charset=utf-8",
                         PS__STRLIT("405 Method Not Allowed\n"), "Allow: GET, HEAD\r\n");
        return;
    }
    ps__metrics_input in = {
        .queued_bytes = ps__eio_server_queued(&srv->sessions.sio.eio),
        .request_seconds = &srv->hist_requests,
        .server_request_seconds = &srv->hist_server_requests,
        .server_requests = srv->channels.server_requests,
        .tls = srv->tls != NULL,
        .tls_reloads = srv->tls ? ps__tls_get_stats(srv->tls)->reloads : 0,
        .start_time = srv->start_time,
        .worker = ps_server_worker(srv),
    };
    ps_server_get_stats(srv, &in.stats);
    ps__buf body;
    ps__buf_init(&body);
    ps__metrics_render(&body, &in);
    ps__http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", body.base, body.len,
                     "Cache-Control: no-store\r\n");
    ps__buf_free(&body);
}

static bool metrics_on_request(void *user, ps__http_req *req)
{
    if (strcmp(req->path, "/metrics") != 0)
        return false; /* 404 (and /healthz is http's own) */
    serve_metrics(user, req);
    return true;
}

/* The metrics address is for a scraper, not for the world: a small bound, no parsing first. */
#define METRICS_MAX_CONNECTIONS 64

static void metrics_on_conn(ps__listener *l, ps__conn *c)
{
    ps_server *srv = l->data;
    if (l->nconns - l->nlingering > METRICS_MAX_CONNECTIONS) {
        ps__conn_close(c);
        return;
    }
    ps__http_attach(c, &srv->metrics_http);
}

/* "127.0.0.1:9100", "[::1]:9100", "localhost:0" into a host (allocated) and a port. */
static int parse_listen_address(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535)
        return -1;
    const char *h = s;
    size_t hlen = (size_t)(colon - s);
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return -1;
        h++;
        hlen -= 2;
    } else if (memchr(h, ':', hlen)) {
        return -1; /* IPv6 needs its brackets here */
    }
    *host = ps__strndup(h, hlen);
    *port = (int)p;
    return 0;
}

static bool server_on_request(void *user, ps__http_req *req)
{
    ps_server *srv = user;
    if (srv->metrics_on_main && strcmp(req->path, "/metrics") == 0) {
        serve_metrics(srv, req);
        return true;
    }
    if (!on_engine_path(srv, req->path))
        return false;
    ps__eio_handle_request(&srv->sessions.sio.eio, req);
    return true;
}

/* A polling POST carries up to max_payload of packets; other bodies max_body_size. */
static size_t server_body_limit(void *user, const char *url)
{
    ps_server *srv = user;
    return on_engine_path(srv, url) ? srv->opts.max_payload : srv->opts.max_body_size;
}

/* ---- workers: routing, hand-over, publishes ------------------------------------------- */

/*
 * A polling request or an upgrade whose sid names another worker goes to that worker; so does
 * the handshake of a client coming back for its session (connection state recovery), which
 * quotes its last Socket.IO id as `pulsec_resume`: the worker that made the id holds the pid.
 */
static int server_route(void *user, const ps__http_req *req)
{
    ps_server *srv = user;
    /* A TLS connection stays where its handshake was (see ps_server_new): a sid of another
     * worker is then just unknown here. */
    if (srv->tls || !on_engine_path(srv, req->path))
        return -1;
    ps__buf sid;
    ps__buf_init(&sid);
    int target = -1;
    if (ps__http_query_get(req->query, "sid", &sid) ||
        ps__http_query_get(req->query, "pulsec_resume", &sid)) {
        int w = ps__id_worker(sid.base);
        if (w >= 0 && w < srv->workers.n && w != srv->workers.self)
            target = w;
    }
    ps__buf_free(&sid);
    return target;
}

/* The worker that owns the session cannot be reached (it died, or is restarting): so the
 * session is gone, and the client hears what it would hear from the owner itself. */
static void hand_over_failed(ps__conn *c, void *user)
{
    static const char body[] = "{\"code\":1,\"message\":\"Session ID unknown\"}";
    char head[160];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     sizeof body - 1);
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)n), uv_buf_init((char *)body, sizeof body - 1)};
    ps__conn_writev(c, bufs, 2);
    ps__conn_close(c);
}

static void server_hand_over(void *user, ps__conn *c, const char *bytes, size_t len, int target)
{
    ps_server *srv = user;
    if (ps__worker_hand_over(&srv->workers, target, PS__WMSG_HTTP, c, bytes, len, hand_over_failed,
                             srv) != 0)
        hand_over_failed(c, srv);
}

/* A publish from another worker (trusted: ours) or from Redis (checked, and ignored when this
 * node sent it: its own workers had it through their pipes). `topic` is the Redis channel's
 * topic, which the message must repeat; NULL from a worker. */
static void deliver_remote(ps_server *srv, const char *data, size_t len, bool untrusted,
                           const char *topic, size_t tlen)
{
    ps__bmsg m;
    const char *err;
    size_t max = srv->opts.max_payload + PS__BMSG_HEAD + PS__TOPIC_MAX + PS__MAX_CLIENT_ID;
    err = NULL;
    if (ps__bmsg_decode(data, len, max, &m, &err) == 0 && untrusted &&
        memcmp(m.node, srv->node, sizeof srv->node) == 0)
        return;
    if (!err && topic && (tlen != m.topic_len || memcmp(topic, m.topic, tlen) != 0))
        err = "topic differs from its channel";
    if (err || ps__topics_deliver(&srv->topics, m.topic, m.topic_len, m.event, m.event_len,
                                  m.payload, m.payload_len, untrusted) < 0) {
        srv->remote_invalid++;
        PS__DEBUG("remote publish refused: %s", err ? err : "invalid payload");
        return;
    }
    srv->remote_in++;
}

static void server_on_worker_message(void *user, int kind, int from, const char *data, size_t len,
                                     ps__conn *c)
{
    ps_server *srv = user;
    if (kind == PS__WMSG_HTTP && c) {
        if (srv->stopping) {
            ps__conn_abort(c);
            return;
        }
        ps__http_attach(c, &srv->http);
        c->cbs->on_read(c, data, len);
        ps__conn_start(c);
        return;
    }
    if (c)
        ps__conn_abort(c);
    if (kind == PS__WMSG_PUBLISH)
        deliver_remote(srv, data, len, false, NULL, 0);
}

/* A local publish, after local delivery: every other worker of this node gets it. */
static void server_on_publish(void *user, const char *topic, size_t tlen, const char *event,
                              const char *payload, size_t plen, bool binary)
{
    ps_server *srv = user;
    if (!in_worker(srv) && !srv->broker)
        return;
    ps__bmsg m = {
        .flags = binary ? PS__BMSG_BINARY : 0,
        .worker = (uint8_t)(in_worker(srv) ? srv->workers.self : 0),
        .seq = ++srv->pub_seq,
        .topic = topic,
        .topic_len = tlen,
        .event = event,
        .event_len = strlen(event),
        .payload = payload,
        .payload_len = plen,
    };
    memcpy(m.node, srv->node, sizeof m.node);
    int others = (in_worker(srv) ? srv->workers.n - 1 : 0) + (srv->broker ? 1 : 0);
    if (plen > srv->opts.max_payload) {
        srv->remote_lost += (uint64_t)others; /* every receiver would refuse it */
        return;
    }
    ps__buf msg;
    ps__buf_init(&msg);
    ps__bmsg_encode(&msg, &m);
    for (int i = 0; in_worker(srv) && i < srv->workers.n; i++) {
        if (i == srv->workers.self)
            continue;
        if (ps__worker_send(&srv->workers, i, PS__WMSG_PUBLISH, msg.base, msg.len) == 0)
            srv->remote_out++;
        else
            srv->remote_lost++;
    }
    if (srv->broker) {
        if (ps__broker_publish(srv->broker, topic, tlen, msg.base, msg.len) == 0)
            srv->remote_out++;
        else
            srv->remote_lost++;
    }
    ps__buf_free(&msg);
}

/* A fan-out is about to write to many members: gather each member's output until the end of
 * this loop pass, so that a burst of publishes costs each member one write (net.h). */
static void server_cork(void *user)
{
    ps_server *srv = user;
    if (srv->listening && !srv->supervising)
        ps__listener_cork(&srv->listener);
}

/* ---- Redis ----------------------------------------------------------------------------- */

static void server_on_first(void *user, const char *topic, size_t len)
{
    ps_server *srv = user;
    if (srv->broker)
        ps__broker_subscribe(srv->broker, topic, len);
}

static void server_on_last(void *user, const char *topic, size_t len)
{
    ps_server *srv = user;
    if (srv->broker)
        ps__broker_unsubscribe(srv->broker, topic, len);
}

static void server_on_redis_message(void *user, const char *topic, size_t tlen, const char *data,
                                    size_t len)
{
    deliver_remote(user, data, len, true, topic, tlen);
}

static const ps__broker_cbs broker_cbs = {server_on_redis_message, NULL, NULL};

/* GET /healthz: with Redis, whether this process is connected to it. A node whose Redis is
 * down still serves its own clients (and its workers' topics), so it stays 200: a load balancer
 * taking every node out when Redis fails would turn a partial outage into a total one. */
static int server_health(void *user, ps__buf *body)
{
    ps_server *srv = user;
    if (!srv->has_redis) {
        ps__buf_appends(body, "{\"status\":\"ok\"}");
        return 200;
    }
    bool up = ps__broker_up(srv->broker);
    ps__buf_printf(body, "{\"status\":\"%s\",\"redis\":\"%s\"}", up ? "ok" : "degraded",
                   up ? "up" : "down");
    return 200;
}

static json_t *reply_json(const redisReply *r)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        /* Redis strings are bytes; JSON strings must be UTF-8. */
        return ps__utf8_valid((const uint8_t *)r->str, r->len) ? json_stringn(r->str, r->len)
                                                               : ps_binary(r->str, r->len);
    case REDIS_REPLY_INTEGER: return json_integer((json_int_t)r->integer);
    case REDIS_REPLY_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; i < r->elements; i++)
            json_array_append_new(a, reply_json(r->element[i]));
        return a;
    }
    default: return json_null();
    }
}

typedef struct redis_call {
    ps_server *srv;
    ps_redis_cb cb;
    void *user;
} redis_call;

static void on_redis_reply(void *user, int status, const redisReply *reply)
{
    redis_call *c = user;
    json_t *j = reply ? reply_json(reply) : NULL;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        status = PS_EREMOTE;
    c->cb(c->srv, status, j, c->user);
    json_decref(j);
    ps__free(c);
}

int ps_redis_command(ps_server *srv, json_t *argv, ps_redis_cb cb, void *user)
{
    size_t n = json_array_size(argv);
    if (!srv || !srv->has_redis || !cb || n == 0 || n > 1024)
        return PS_EINVAL;
    if (!srv->broker)
        return PS_ECLOSED;
    const char *args[1024];
    size_t lens[1024];
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(argv, i);
        if (!json_is_string(a))
            return PS_EINVAL;
        args[i] = json_string_value(a);
        lens[i] = json_string_length(a);
    }
    redis_call *c = ps__malloc(sizeof *c);
    *c = (redis_call){srv, cb, user};
    int rc = ps__broker_command(srv->broker, (int)n, args, lens, on_redis_reply, c);
    if (rc != 0)
        ps__free(c);
    return rc;
}

static void server_on_conn(ps__listener *l, ps__conn *c)
{
    ps_server *srv = l->data;
    if (l->nconns - l->nlingering > srv->opts.max_connections) {
        /* Refused before any parsing or upgrade: the answer is all this connection costs. */
        srv->refused++;
        if (srv->tls) {
            /* No HTTP before a handshake, and a handshake is the CPU this refusal saves. */
            ps__conn_close(c);
            return;
        }
        char head[160];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 503 Service Unavailable\r\nDate: %s\r\nContent-Length: 0\r\n"
                         "Connection: close\r\nRetry-After: 1\r\n\r\n",
                         ps__http_date());
        ps__conn_write(c, head, (size_t)n);
        ps__conn_close(c);
        return;
    }
    if (srv->tls)
        ps__tls_attach(srv->tls, c);
    ps__http_attach(c, &srv->http);
}

/* ---- posting from other threads -------------------------------------------------------- */

static void posts_run(uv_async_t *h)
{
    post_queue *q = (post_queue *)h;
    ps__list batch;
    ps__list_init(&batch);
    uv_mutex_lock(&q->mu);
    if (!ps__list_empty(&q->items)) {
        batch.next = q->items.next;
        batch.prev = q->items.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        ps__list_init(&q->items);
    }
    uv_mutex_unlock(&q->mu);
    while (!ps__list_empty(&batch)) {
        post_item *it = PS__CONTAINER_OF(batch.next, post_item, link);
        ps__list_remove(&it->link);
        if (q->srv)
            it->fn(q->srv, it->arg);
        ps__free(it);
    }
}

static void posts_on_close(uv_handle_t *h)
{
    /* Items accepted before the stop began still run: a 0 from ps_server_post is a promise. */
    posts_run((uv_async_t *)h);
}

int ps_server_post(ps_server *srv, ps_post_fn fn, void *arg)
{
    post_queue *q = srv->posts;
    if (!fn)
        return PS_EINVAL;
    post_item *it = ps__malloc(sizeof *it);
    it->fn = fn;
    it->arg = arg;
    uv_mutex_lock(&q->mu);
    if (q->closed) {
        uv_mutex_unlock(&q->mu);
        ps__free(it);
        return PS_ECLOSED;
    }
    ps__list_insert_tail(&q->items, &it->link);
    if (q->has_async)
        uv_async_send(&q->async);
    uv_mutex_unlock(&q->mu);
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

ps_server *ps_server_new(uv_loop_t *loop, const ps_server_opts *opts)
{
    ps_server_opts o = {0};
    if (opts)
        o = *opts;
    apply_defaults(&o);
    const char *path = o.path ? o.path : "/socket.io/";
    if (path[0] != '/' || o.port < 0 || o.port > 65535) {
        PS__ERROR("invalid options: path must start with '/', port must be 0..65535");
        return NULL;
    }
    if (o.workers > PS__MAX_WORKERS) {
        PS__ERROR("invalid options: at most %d workers", PS__MAX_WORKERS);
        return NULL;
    }
    ps__redis_url rurl;
    const char *rerr = NULL;
    if (o.redis_url && ps__redis_url_parse(o.redis_url, &rurl, &rerr) != 0) {
        PS__ERROR("invalid options: redis_url %s: %s", o.redis_url, rerr);
        return NULL;
    }
    if (o.redis_prefix && (!*o.redis_prefix || strlen(o.redis_prefix) > 64)) {
        PS__ERROR("invalid options: redis_prefix must be 1..64 bytes");
        return NULL;
    }
    char *metrics_host = NULL;
    int metrics_port = 0;
    if (o.metrics_listen && parse_listen_address(o.metrics_listen, &metrics_host, &metrics_port)) {
        PS__ERROR("invalid options: metrics_listen \"%s\" is not HOST:PORT", o.metrics_listen);
        return NULL;
    }
    ps__free(metrics_host); /* parsed again below, once nothing else can fail */
    if (o.workers > 1 && o.metrics && !o.metrics_listen) {
        /* On the main port a scrape would reach whichever worker the kernel picked. */
        PS__ERROR("invalid options: metrics with workers need metrics_listen (worker i serves "
                  "them on its port + i)");
        return NULL;
    }
    if (o.workers > 1 && o.tls_cert_file && !o.websocket_only) {
        /* A polling request that reaches another worker than its session's is handed over
         * with its socket; a TLS connection's keys live in the OpenSSL state of the worker that
         * did the handshake and cannot follow it. WebSocket sessions never move. */
        PS__ERROR("invalid options: TLS with workers needs websocket_only (long-polling requests "
                  "move between workers, TLS connections cannot); or terminate TLS in front");
        return NULL;
    }
    size_t nproxies = 0;
    while (o.trusted_proxies && o.trusted_proxies[nproxies])
        nproxies++;
    ps__cidr *proxies = nproxies ? ps__calloc(nproxies, sizeof *proxies) : NULL;
    for (size_t i = 0; i < nproxies; i++) {
        if (!ps__cidr_parse(o.trusted_proxies[i], &proxies[i])) {
            PS__ERROR("invalid options: trusted proxy \"%s\" is not an address or CIDR block",
                      o.trusted_proxies[i]);
            ps__free(proxies);
            return NULL;
        }
    }
    if (!o.tls_cert_file != !o.tls_key_file) {
        PS__ERROR("invalid options: TLS needs both tls_cert_file and tls_key_file");
        ps__free(proxies);
        return NULL;
    }
    char *root = NULL;
    if (o.static_dir) {
        char real[PATH_MAX];
        if (!realpath(o.static_dir, real)) {
            PS__ERROR("static directory %s: not found", o.static_dir);
            ps__free(proxies);
            return NULL;
        }
        root = ps__strdup(real);
    }
    ps__tls *tls = NULL;
    if (o.tls_cert_file) {
        char err[256];
        /* The loop is only needed for handshake timers, made per connection later. */
        tls = ps__tls_new(loop, o.tls_cert_file, o.tls_key_file, o.tls_handshake_timeout_ms, err,
                          sizeof err);
        if (!tls) {
            PS__ERROR("TLS: %s", err);
            ps__free(proxies);
            ps__free(root);
            return NULL;
        }
    }
    ps_server *srv = ps__calloc(1, sizeof *srv);
    if (!loop) {
        srv->own_loop = ps__malloc(sizeof *srv->own_loop);
        uv_loop_init(srv->own_loop);
        loop = srv->own_loop;
    }
    srv->tls = tls;
    if (tls)
        ps__tls_set_loop(tls, loop);
    if (o.metrics_listen)
        parse_listen_address(o.metrics_listen, &srv->metrics_host, &srv->metrics_port);
    srv->metrics_on_main = o.metrics && !o.metrics_listen;
    srv->opts.metrics_listen = NULL; /* the caller's string */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    srv->start_time = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    srv->opts.tls_cert_file = srv->opts.tls_key_file = NULL; /* the caller's strings */
    srv->loop = loop;
    srv->opts = o;
    srv->host = ps__strdup(o.host ? o.host : "127.0.0.1");
    srv->path = ps__strdup(path);
    srv->opts.host = srv->host;
    srv->opts.path = srv->path;
    srv->opts.static_dir = root;
    srv->http.static_root = root;
    srv->http.max_header_size = o.max_header_size;
    srv->http.max_body_size = o.max_body_size;
    srv->http.body_limit = server_body_limit;
    srv->http.idle_timeout_ms = o.idle_timeout_ms == UINT32_MAX ? 0 : o.idle_timeout_ms;
    srv->http.on_request = server_on_request;
    srv->http.user = srv;

    ps__eio_config ec = {
        .ping_interval_ms = o.ping_interval_ms,
        .ping_timeout_ms = o.ping_timeout_ms,
        .max_payload = o.max_payload,
        .close_timeout_ms = o.shutdown_grace_ms,
        .polling = !o.websocket_only,
        .max_queued = o.max_queued_bytes == SIZE_MAX ? 0 : o.max_queued_bytes,
        .ws_idle_release_ms = o.ws_idle_release_ms == UINT32_MAX ? 0 : o.ws_idle_release_ms,
        .max_unconnected = o.max_unconnected == UINT32_MAX ? 0 : o.max_unconnected,
        .max_unconnected_per_address =
            o.max_unconnected_per_address == UINT32_MAX ? 0 : o.max_unconnected_per_address,
    };
    if (o.allowed_origins) {
        size_t n = 0;
        while (o.allowed_origins[n])
            n++;
        srv->origins = ps__calloc(n + 1, sizeof *srv->origins);
        for (size_t i = 0; i < n; i++)
            srv->origins[i] = ps__strdup(o.allowed_origins[i]);
        ec.allowed_origins = srv->origins;
        ec.nallowed_origins = n;
    }
    srv->proxies = proxies;
    ec.secure = tls != NULL;
    ec.trusted_proxies = proxies;
    ec.ntrusted_proxies = nproxies;
    srv->opts.trusted_proxies = NULL; /* not kept: the caller's array */
    ps__sessions_init(&srv->sessions, srv, loop, &ec, o.connect_timeout_ms);
    srv->sessions.sio.engine_echo = o.engineio_echo;
    if (o.resume_window_ms != PS_RESUME_OFF && !o.engineio_echo) {
        srv->sessions.sio.recovery.window_ms = o.resume_window_ms;
        srv->sessions.sio.recovery.max_replay_bytes =
            o.max_replay_bytes == SIZE_MAX ? 0 : o.max_replay_bytes;
        srv->sessions.sio.recovery.max_detached =
            o.max_detached_sessions == UINT32_MAX ? 0 : o.max_detached_sessions;
    }
    ps__channels_init(&srv->channels, &srv->sessions);
    if (o.metrics || o.metrics_listen) {
        srv->channels.request_seconds = &srv->hist_requests;
        srv->channels.server_request_seconds = &srv->hist_server_requests;
    }
    srv->channels.views.max_views =
        o.max_views_per_session == UINT32_MAX ? 0 : o.max_views_per_session;
    srv->channels.max_channels =
        o.max_channels_per_session == UINT32_MAX ? 0 : o.max_channels_per_session;
    srv->channels.max_pending = o.max_pending_requests == UINT32_MAX ? 0 : o.max_pending_requests;
    srv->sessions.sio.max_acks = srv->channels.max_pending;
    ps__topics_init(&srv->topics, &srv->channels);
    srv->topics.max_per_channel =
        o.max_topics_per_channel == UINT32_MAX ? 0 : o.max_topics_per_channel;
    srv->topics.max_topics = o.max_topics == UINT32_MAX ? 0 : o.max_topics;
    ps__topic_ext tx = {.on_first = server_on_first,
                        .on_last = server_on_last,
                        .on_publish = server_on_publish,
                        .user = srv};
    if (o.redis_url) {
        srv->has_redis = true;
        srv->redis_prefix = o.redis_prefix ? ps__strdup(o.redis_prefix) : NULL;
        srv->opts.redis_url = NULL; /* parsed into srv->redis; not kept */
        srv->opts.redis_prefix = srv->redis_prefix;
        srv->redis = (ps__broker_cfg){.url = rurl,
                                      .prefix = srv->redis_prefix,
                                      .max_queued = o.max_redis_queued,
                                      .timeout_ms = o.redis_timeout_ms};
        srv->http.health = server_health;
    }
    ps__topics_set_ext(&srv->topics, &tx);
    srv->topics.server = srv;
    srv->topics.before_send = server_cork;
    srv->topics.before_send_user = srv;
    srv->workers.self = -1;
    ps__random_bytes(srv->node, sizeof srv->node);

    srv->posts = ps__calloc(1, sizeof *srv->posts);
    srv->posts->srv = srv;
    ps__list_init(&srv->posts->items);
    uv_mutex_init(&srv->posts->mu);
    return srv;
}

static void run_worker(void *user, int index);
static const ps__worker_cbs worker_cbs = {server_on_worker_message, run_worker};

/* The supervisor's listen: reserve the port, fork the workers, wait until they listen. */
static int supervisor_listen(ps_server *srv)
{
    int rc = ps__workers_prepare(&srv->workers, srv->loop, (int)srv->opts.workers, srv->host,
                                 srv->opts.port, &worker_cbs, srv);
    srv->workers.hup_to_workers = srv->tls != NULL;
    if (rc == 0)
        rc = ps__workers_start(&srv->workers, 20000);
    if (rc != 0) {
        ps__workers_free(&srv->workers, srv->opts.shutdown_grace_ms);
        srv->listener_failed = true;
        srv->listen_rc = rc;
        return rc;
    }
    srv->supervising = true;
    srv->listening = true;
    uv_mutex_lock(&srv->posts->mu);
    srv->posts->closed = true; /* nothing runs a loop here: see ps_server_listen */
    uv_mutex_unlock(&srv->posts->mu);
    return 0;
}

int ps_server_listen(ps_server *srv)
{
    if (srv->stopping)
        return PS_ECLOSED;
    if (srv->listening)
        return 0;
    if (srv->listener_failed)
        return srv->listen_rc; /* the handle is spent: binding it again is not allowed */
    if (srv->opts.workers > 1 && !in_worker(srv))
        return supervisor_listen(srv);
    if (srv->metrics_host) {
        /* First, so that a metrics address that cannot be bound fails the listen as a whole. */
        ps__listener_init(&srv->metrics_listener, srv->loop);
        srv->metrics_inited = true;
        srv->metrics_listener.on_conn = metrics_on_conn;
        srv->metrics_listener.data = srv;
        srv->metrics_http = (ps__http_config){
            .max_header_size = srv->opts.max_header_size,
            .max_body_size = 4096,
            .idle_timeout_ms = 10000,
            .on_request = metrics_on_request,
            .user = srv,
        };
        int port =
            srv->metrics_port ? srv->metrics_port + (in_worker(srv) ? srv->workers.self : 0) : 0;
        int mrc = ps__listener_start(&srv->metrics_listener, srv->metrics_host, port, 64);
        if (mrc != 0) {
            PS__ERROR("metrics address %s:%d: %s", srv->metrics_host, port, ps_strerror(mrc));
            srv->listener_failed = true;
            srv->listen_rc = mrc;
            ps__listener_init(&srv->listener, srv->loop); /* closed with the rest by the stop */
            return mrc;
        }
    }
    /* Handles are made here, not in ps_server_new, so that a server freed before listening
     * leaves nothing on a loop it does not own (and a supervisor forks from a bare loop). */
    ps__listener_init(&srv->listener, srv->loop);
    srv->listener.on_conn = server_on_conn;
    srv->listener.data = srv;
    srv->listener.close_timeout_ms = srv->opts.close_timeout_ms;
    int rc = in_worker(srv)
                 ? ps__listener_start_shared(&srv->listener, srv->host, srv->workers.port,
                                             srv->opts.backlog)
                 : ps__listener_start(&srv->listener, srv->host, srv->opts.port, srv->opts.backlog);
    if (rc == 0 && in_worker(srv))
        rc = ps__workers_join(&srv->workers, srv->loop, &srv->listener);
    if (rc != 0) {
        srv->listener_failed = true;
        srv->listen_rc = rc;
        return rc;
    }
    if (srv->has_redis)
        srv->broker = ps__broker_new(srv->loop, &srv->redis, &broker_cbs, srv, &srv->topics);
    if (in_worker(srv)) {
        srv->http.route = server_route;
        srv->http.hand_over = server_hand_over;
        srv->sessions.sio.eio.cfg.sid_worker = (uint8_t)(srv->workers.self + 1);
    }
    srv->listening = true;
    post_queue *q = srv->posts;
    uv_async_init(srv->loop, &q->async, posts_run);
    uv_mutex_lock(&q->mu);
    q->has_async = true;
    if (!ps__list_empty(&q->items))
        uv_async_send(&q->async);
    uv_mutex_unlock(&q->mu);
    return 0;
}

int ps_server_metrics_port(const ps_server *srv)
{
    return srv->metrics_inited && srv->metrics_listener.listening ? srv->metrics_listener.port : -1;
}

int ps_server_port(const ps_server *srv)
{
    if (srv->supervising)
        return srv->workers.port;
    return srv->listening ? srv->listener.port : -1;
}

int ps_server_worker(const ps_server *srv)
{
    if (srv->supervising)
        return -1;
    return in_worker(srv) ? srv->workers.self : 0;
}

uv_loop_t *ps_server_loop(const ps_server *srv)
{
    return srv->loop;
}

static void signal_on_close(uv_handle_t *h)
{
    ps__free(h);
}

/* The last step of a stop: nothing of ours may keep the loop alive after this. */
static void maybe_finish(ps_server *srv)
{
    if (srv->stopped || !srv->stopping || srv->listener.nconns > 0 || !srv->listener.closed)
        return;
    if (srv->metrics_inited && (srv->metrics_listener.nconns > 0 || !srv->metrics_listener.closed))
        return;
    srv->stopped = true;
    if (srv->broker) {
        /* Only now: the views disposed by the stop have said goodbye through it (publishes,
         * the app's own commands), and those get written and answered first. */
        srv->redis_reconnects += ps__broker_get_stats(srv->broker)->reconnects;
        ps__broker_close(srv->broker, srv->opts.shutdown_grace_ms);
        srv->broker = NULL;
    }
    ps__timer_free(srv->grace);
    srv->grace = NULL;
    for (int i = 0; i < 3; i++) {
        if (srv->signals[i]) {
            uv_close((uv_handle_t *)srv->signals[i], signal_on_close);
            srv->signals[i] = NULL;
        }
    }
    post_queue *q = srv->posts;
    if (q->has_async)
        uv_close((uv_handle_t *)&q->async, posts_on_close);
}

static void on_listener_closed(ps__listener *l)
{
    maybe_finish(l->data);
}

static void on_conn_gone(ps__listener *l)
{
    maybe_finish(l->data);
}

static void grace_expired(ps__timer *t, void *data)
{
    ps_server *srv = data;
    ps__list *pos, *tmp;
    ps__list_foreach_safe(pos, tmp, &srv->listener.conns)
    {
        ps__conn_abort(PS__CONTAINER_OF(pos, ps__conn, link));
    }
    if (srv->metrics_inited) {
        ps__list_foreach_safe(pos, tmp, &srv->metrics_listener.conns)
        {
            ps__conn_abort(PS__CONTAINER_OF(pos, ps__conn, link));
        }
    }
}

void ps_server_stop(ps_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    uv_mutex_lock(&srv->posts->mu);
    srv->posts->closed = true;
    uv_mutex_unlock(&srv->posts->mu);
    if (!srv->listening && !srv->listener_failed) {
        srv->stopped = true; /* never listened: no handle, no connection */
        return;
    }
    if (srv->opts.workers > 1 && !in_worker(srv)) {
        /* A supervisor has no listener of its own; a failed supervisor_listen freed its workers
         * already (and left srv->listener a bare struct, which must not be closed). */
        if (srv->supervising)
            ps__workers_free(&srv->workers, srv->opts.shutdown_grace_ms);
        srv->stopped = true;
        return;
    }
    srv->listener.on_conn_gone = on_conn_gone;
    ps__listener_close(&srv->listener, on_listener_closed);
    if (srv->metrics_inited) {
        srv->metrics_listener.on_conn_gone = on_conn_gone;
        ps__listener_close(&srv->metrics_listener, on_listener_closed);
        ps__http_close_idle(&srv->metrics_listener);
    }
    if (in_worker(srv))
        ps__workers_leave(&srv->workers);
    ps__sessions_shutdown(&srv->sessions);
    ps__http_close_idle(&srv->listener);
    srv->grace = ps__timer_new(srv->loop, grace_expired, srv);
    /* The WebSocket close handshakes have their own timeout of the same length; this one
     * catches connections stuck in a flush. */
    ps__timer_start(srv->grace, srv->opts.shutdown_grace_ms + 500);
    maybe_finish(srv);
}

int ps_server_reload_tls(ps_server *srv)
{
    if (!srv->tls)
        return PS_EINVAL;
    char err[256];
    if (ps__tls_reload(srv->tls, err, sizeof err) != 0) {
        PS__ERROR("TLS reload failed, keeping the current certificate: %s", err);
        return PS_EINVAL;
    }
    PS__INFO("TLS certificate reloaded");
    return 0;
}

static void on_signal(uv_signal_t *h, int signum)
{
    ps_server *srv = h->data;
    if (signum == SIGHUP) {
        ps_server_reload_tls(srv);
        return;
    }
    PS__INFO("signal %d: stopping", signum);
    ps_server_stop(srv);
}

static void start_signals(ps_server *srv)
{
    int signums[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < (srv->tls ? 3 : 2); i++) {
        srv->signals[i] = ps__malloc(sizeof(uv_signal_t));
        uv_signal_init(srv->loop, srv->signals[i]);
        srv->signals[i]->data = srv;
        uv_signal_start(srv->signals[i], on_signal, signums[i]);
    }
}

int ps_server_run(ps_server *srv)
{
    int rc = ps_server_listen(srv);
    if (rc != 0)
        return rc;
    if (srv->supervising) {
        rc = ps__workers_supervise(&srv->workers, srv->opts.shutdown_grace_ms + 3000);
        ps__workers_free(&srv->workers, srv->opts.shutdown_grace_ms);
        srv->stopped = true;
        return rc;
    }
    start_signals(srv);
    if (srv->opts.worker_start)
        srv->opts.worker_start(srv, 0, srv->opts.worker_user);
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return 0;
}

/* A worker process's whole life, in the child after fork (see worker.h). */
static void run_worker(void *user, int index)
{
    ps_server *srv = user;
    /* A worker restarted later is forked from the supervisor, whose state is not a worker's. */
    srv->supervising = false;
    srv->listening = false;
    srv->listener_failed = false;
    srv->stopping = false;
    srv->stopped = false;
    srv->posts->closed = false;
    int rc = ps__loop_fork(srv->loop);
    if (rc == 0)
        rc = ps_server_listen(srv);
    ps__worker_ready(&srv->workers, rc);
    if (rc != 0) {
        PS__ERROR("cannot listen: %s", ps_strerror(rc));
        exit(1);
    }
    start_signals(srv);
    /* The supervisor forked with these blocked; now that the loop's handlers are in place a
     * pending SIGTERM stops this worker gracefully. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    if (srv->opts.worker_start)
        srv->opts.worker_start(srv, index, srv->opts.worker_user);
    uv_run(srv->loop, UV_RUN_DEFAULT);
    ps_server_free(srv);
    fflush(NULL);
    exit(0);
}

void ps_server_free(ps_server *srv)
{
    if (!srv)
        return;
    if (srv->supervising)
        ps__workers_free(&srv->workers, srv->opts.shutdown_grace_ms);
    else if (in_worker(srv))
        ps__workers_free(&srv->workers, 0);
    if (!srv->stopped) {
        /* Never listened (or stop not run to its end): release the handles ourselves. */
        if (!srv->stopping)
            ps_server_stop(srv);
        if (srv->own_loop)
            uv_run(srv->own_loop, UV_RUN_DEFAULT);
    }
    if (srv->own_loop) {
        uv_run(srv->own_loop, UV_RUN_NOWAIT);
        if (uv_loop_close(srv->own_loop) != 0)
            PS__WARN("loop still has open handles at ps_server_free");
        ps__free(srv->own_loop);
    }
    /* Items posted but never run (the server never listened) are dropped with the queue. */
    while (!ps__list_empty(&srv->posts->items)) {
        post_item *it = PS__CONTAINER_OF(srv->posts->items.next, post_item, link);
        ps__list_remove(&it->link);
        ps__free(it);
    }
    uv_mutex_destroy(&srv->posts->mu);
    ps__free(srv->posts);
    ps__channels_free(&srv->channels);
    ps__topics_free(&srv->topics);
    ps__sessions_free(&srv->sessions);
    for (size_t i = 0; srv->origins && srv->origins[i]; i++)
        ps__free(srv->origins[i]);
    ps__free(srv->origins);
    ps__free(srv->proxies);
    ps__free(srv->redis_prefix);
    ps__tls_free(srv->tls);
    ps__free(srv->metrics_host);
    ps__free(srv->host);
    ps__free(srv->path);
    ps__free(srv->http.static_root);
    ps__free(srv);
}

#define STATS_FIELD(f)                                                                             \
    {                                                                                              \
#f, offsetof(ps_server_stats, f)                                                           \
    }
static const struct {
    const char *name;
    size_t offset;
} STATS_FIELDS[] = {
    STATS_FIELD(connections),
    STATS_FIELD(sessions),
    STATS_FIELD(views),
    STATS_FIELD(channels),
    STATS_FIELD(sessions_total),
    STATS_FIELD(messages_in),
    STATS_FIELD(messages_out),
    STATS_FIELD(messages_dropped),
    STATS_FIELD(protocol_errors),
    STATS_FIELD(slow_consumers),
    STATS_FIELD(refused),
    STATS_FIELD(ws_buffers),
    STATS_FIELD(topics),
    STATS_FIELD(topic_members),
    STATS_FIELD(published),
    STATS_FIELD(deliveries),
    STATS_FIELD(remote_out),
    STATS_FIELD(remote_in),
    STATS_FIELD(remote_lost),
    STATS_FIELD(remote_invalid),
    STATS_FIELD(handed_over),
    STATS_FIELD(taken_over),
    STATS_FIELD(redis_up),
    STATS_FIELD(redis_reconnects),
    STATS_FIELD(unconnected),
    STATS_FIELD(unconnected_closed),
    STATS_FIELD(tls_handshakes),
    STATS_FIELD(tls_failures),
    STATS_FIELD(sessions_detached),
    STATS_FIELD(sessions_resumed),
    STATS_FIELD(resume_failed),
    STATS_FIELD(resume_overflow),
};
#undef STATS_FIELD
/* Every field is a uint64_t: a field added to the struct and not here fails the build. */
_Static_assert(PS__ARRAY_SIZE(STATS_FIELDS) * sizeof(uint64_t) == sizeof(ps_server_stats),
               "STATS_FIELDS must list every field of ps_server_stats");

bool ps_server_stats_field(const ps_server_stats *st, size_t i, const char **name, uint64_t *value)
{
    if (i >= PS__ARRAY_SIZE(STATS_FIELDS))
        return false;
    *name = STATS_FIELDS[i].name;
    memcpy(value, (const char *)st + STATS_FIELDS[i].offset, sizeof *value);
    return true;
}

void ps_server_get_stats(const ps_server *srv, ps_server_stats *out)
{
    memset(out, 0, sizeof *out);
    out->connections = srv->listener.nconns - srv->listener.nlingering;
    ps__sessions_stats(&srv->sessions, out);
    out->views = srv->channels.views.nviews;
    out->channels = srv->channels.nchannels;
    out->messages_dropped = srv->channels.dropped + srv->channels.views.dropped;
    out->slow_consumers = srv->sessions.sio.eio.slow_consumers;
    out->ws_buffers = srv->sessions.sio.eio.wspool.nholding;
    out->unconnected = srv->sessions.sio.eio.nunconnected;
    out->unconnected_closed = srv->sessions.sio.eio.unconnected_closed;
    out->refused = srv->refused;
    out->topics = srv->topics.ntopics;
    out->topic_members = srv->topics.nmembers;
    out->published = srv->topics.published;
    out->deliveries = srv->topics.deliveries;
    out->remote_out = srv->remote_out;
    out->remote_in = srv->remote_in;
    out->remote_lost = srv->remote_lost;
    out->remote_invalid = srv->remote_invalid;
    out->handed_over = srv->workers.handed_over;
    out->taken_over = srv->workers.taken_over;
    out->redis_up = ps__broker_up(srv->broker);
    out->redis_reconnects =
        srv->redis_reconnects + (srv->broker ? ps__broker_get_stats(srv->broker)->reconnects : 0);
    if (srv->tls) {
        const ps__tls_stats *ts = ps__tls_get_stats(srv->tls);
        out->tls_handshakes = ts->handshakes;
        out->tls_failures = ts->failures;
    }
}

int ps_publish_except(ps_server *srv, const char *topic, const char *event, json_t *payload,
                      ps_channel *except)
{
    if (!srv)
        return PS_EINVAL;
    if (srv->stopped || srv->supervising)
        return PS_ECLOSED;
    return ps__topics_publish(&srv->topics, topic, event, payload, except);
}

ps_subscription *ps_subscribe(ps_server *srv, const char *topic, ps_topic_fn fn, void *user)
{
    return srv ? ps__topics_subscribe(&srv->topics, topic, fn, user) : NULL;
}

int ps_publish(ps_server *srv, const char *topic, const char *event, json_t *payload)
{
    return ps_publish_except(srv, topic, event, payload, NULL);
}

int ps_route(ps_server *srv, const char *path, const ps_view_type *type)
{
    return ps__views_add_route(&srv->channels.views, path, type);
}

int ps_use_message(ps_server *srv, ps_message_fn fn, void *user)
{
    return ps__channels_use_message(&srv->channels, fn, user);
}

int ps_namespace(ps_server *srv, const char *name, const ps_namespace_hooks *hooks)
{
    return ps__sessions_add_namespace(&srv->sessions, name, hooks);
}

int ps_use_connect(ps_server *srv, ps_connect_fn fn, void *user)
{
    return ps__sessions_use_connect(&srv->sessions, fn, user);
}
