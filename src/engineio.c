/*
 * engineio: one ps__eio per Engine.IO session, owned by its WebSocket (the ps__eio is freed
 * from the WebSocket's close callback, which is also where the layer above hears of the end, so
 * that notification is never re-entrant). Heartbeat: one timer alternates between "next ping
 * due" and "pong due", as the reference server does, at millisecond resolution.
 */
#include "engineio.h"

#include <stdio.h>
#include <stdlib.h>

struct ps__eio {
    ps__eio_server *srv;
    ps__ws *ws;
    void *up;
    ps__list link;
    ps__timer *heartbeat;
    bool awaiting_pong;
    bool closed;
    const char *close_reason;
    ps__eio_handshake hs;
    char sid[PS__SID_LEN + 1];
};

/* ---- codec ----------------------------------------------------------------------------- */

void ps__eio_encode_open(ps__buf *out, const char *sid, const ps__eio_config *cfg, bool polling)
{
    ps__buf_printf(out,
                   "0{\"sid\":\"%s\",\"upgrades\":%s,\"pingInterval\":%u,\"pingTimeout\":%u,"
                   "\"maxPayload\":%zu}",
                   sid, polling ? "[\"websocket\"]" : "[]", cfg->ping_interval_ms,
                   cfg->ping_timeout_ms, cfg->max_payload);
}

/* ---- handshake snapshot ---------------------------------------------------------------- */

static void handshake_copy(ps__eio_handshake *hs, const ps__http_req *req, const char *address)
{
    size_t total = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        total += strlen(req->headers[i].name) + strlen(req->headers[i].value) + 2;
    hs->strings = ps__malloc(total ? total : 1);
    hs->headers = ps__calloc(req->nheaders ? req->nheaders : 1, sizeof *hs->headers);
    hs->nheaders = req->nheaders;
    char *p = hs->strings;
    for (size_t i = 0; i < req->nheaders; i++) {
        size_t n = strlen(req->headers[i].name) + 1, v = strlen(req->headers[i].value) + 1;
        memcpy(p, req->headers[i].name, n);
        hs->headers[i].name = p;
        p += n;
        memcpy(p, req->headers[i].value, v);
        hs->headers[i].value = p;
        p += v;
    }
    hs->url = ps__strdup(req->url);
    hs->query = ps__strdup(req->query);
    snprintf(hs->address, sizeof hs->address, "%s", address);
}

static void handshake_free(ps__eio_handshake *hs)
{
    ps__free(hs->strings);
    ps__free(hs->headers);
    ps__free(hs->url);
    ps__free(hs->query);
}

/* ---- heartbeat ------------------------------------------------------------------------- */

static void heartbeat_fire(ps__timer *t, void *data)
{
    ps__eio *e = data;
    if (e->closed)
        return;
    if (e->awaiting_pong) {
        ps__eio_close(e, PS__WS_NORMAL, "ping timeout");
        return;
    }
    e->awaiting_pong = true;
    ps__ws_send(e->ws, false, "2", 1);
    ps__timer_start(t, e->srv->cfg.ping_timeout_ms);
}

/* ---- WebSocket callbacks --------------------------------------------------------------- */

static void eio_on_ws_message(ps__ws *ws, bool binary, const char *data, size_t len)
{
    ps__eio *e = ps__ws_data(ws);
    if (e->closed)
        return;
    if (binary) {
        e->srv->cbs->on_message(e, true, data, len);
        return;
    }
    if (len == 0) {
        ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "parse error");
        return;
    }
    switch (data[0]) {
    case PS__EIO_MESSAGE:
        e->srv->cbs->on_message(e, false, data + 1, len - 1);
        break;
    case PS__EIO_PONG:
        if (e->awaiting_pong) {
            e->awaiting_pong = false;
            ps__timer_start(e->heartbeat, e->srv->cfg.ping_interval_ms);
        }
        break;
    case PS__EIO_CLOSE:
        ps__eio_close(e, PS__WS_NORMAL, "client close");
        break;
    case PS__EIO_PING:
        /* v4 clients never ping outside an upgrade probe. */
        ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "invalid heartbeat direction");
        break;
    default:
        ps__eio_close(e, PS__WS_PROTOCOL_ERROR, "parse error");
        break;
    }
}

static void eio_on_ws_close(ps__ws *ws, int code)
{
    ps__eio *e = ps__ws_data(ws);
    if (!e->close_reason) {
        /* Errors found by the layers above were counted there; these were found below. */
        if (code == PS__WS_PROTOCOL_ERROR || code == PS__WS_INVALID_DATA || code == PS__WS_TOO_BIG)
            e->srv->ws_errors++;
        e->close_reason = "transport close";
    }
    e->closed = true;
    ps__list_remove(&e->link);
    e->srv->nsessions--;
    e->srv->cbs->on_close(e, e->close_reason);
    ps__timer_free(e->heartbeat);
    handshake_free(&e->hs);
    ps__free(e);
}

static const ps__ws_cbs eio_ws_cbs = {eio_on_ws_message, eio_on_ws_close};

/* ---- requests -------------------------------------------------------------------------- */

void ps__eio_server_init(ps__eio_server *es, uv_loop_t *loop, const ps__eio_config *cfg,
                         const ps__eio_cbs *cbs, void *user)
{
    memset(es, 0, sizeof *es);
    es->loop = loop;
    es->cfg = *cfg;
    es->cbs = cbs;
    es->user = user;
    ps__list_init(&es->sessions);
}

void ps__eio_handle_request(ps__eio_server *es, ps__http_req *req)
{
    ps__buf v;
    ps__buf_init(&v);
    if (!ps__http_query_get(req->query, "EIO", &v) || strcmp(v.base, "4") != 0) {
        ps__http_respond_json_error(req, 400, 5, "Unsupported protocol version");
        goto out;
    }
    if (!ps__http_query_get(req->query, "transport", &v) || strcmp(v.base, "websocket") != 0) {
        /* Long-polling is not implemented yet: refuse it the way the reference refuses a
         * disabled transport, so clients fail fast instead of hanging. */
        ps__http_respond_json_error(req, 400, 0, "Transport unknown");
        goto out;
    }
    if (ps__http_query_get(req->query, "sid", &v)) {
        /* Every session is WebSocket-only, so there is nothing to upgrade: the sid is unknown. */
        ps__http_respond_json_error(req, 400, 1, "Session ID unknown");
        goto out;
    }
    if (!req->upgrade) {
        ps__http_respond_json_error(req, 400, 3, "Bad request");
        goto out;
    }
    if (es->shutting_down) {
        ps__http_respond(req, 503, "text/plain; charset=utf-8", PS__STRLIT("shutting down\n"),
                         NULL);
        goto out;
    }
    ps__eio *e = ps__calloc(1, sizeof *e);
    e->srv = es;
    ps__list_init(&e->link);
    handshake_copy(&e->hs, req, "");
    ps__ws_opts wo = {.max_message = es->cfg.max_payload,
                      .close_timeout_ms = es->cfg.close_timeout_ms};
    e->ws = ps__ws_upgrade(req, &wo, &eio_ws_cbs, e);
    if (!e->ws) {
        handshake_free(&e->hs);
        ps__free(e);
        goto out;
    }
    snprintf(e->hs.address, sizeof e->hs.address, "%s", ps__ws_peer(e->ws));
    ps__random_sid(e->sid);
    ps__list_insert_tail(&es->sessions, &e->link);
    es->nsessions++;
    e->heartbeat = ps__timer_new(es->loop, heartbeat_fire, e);

    ps__buf open;
    ps__buf_init(&open);
    ps__eio_encode_open(&open, e->sid, &es->cfg, false);
    ps__ws_send(e->ws, false, open.base, open.len);
    ps__buf_free(&open);
    ps__timer_start(e->heartbeat, es->cfg.ping_interval_ms);
    e->up = es->cbs->on_open(e, es->user);
    ps__ws_start(e->ws);
out:
    ps__buf_free(&v);
}

void ps__eio_server_shutdown(ps__eio_server *es)
{
    es->shutting_down = true;
    ps__list *pos, *tmp;
    ps__list_foreach_safe(pos, tmp, &es->sessions)
    {
        ps__eio *e = PS__CONTAINER_OF(pos, ps__eio, link);
        ps__eio_close(e, PS__WS_GOING_AWAY, "server shutdown");
    }
}

/* ---- sessions -------------------------------------------------------------------------- */

int ps__eio_send_packet(ps__eio *e, const char *packet, size_t len)
{
    if (e->closed)
        return UV_EPIPE;
    return ps__ws_send(e->ws, false, packet, len);
}

int ps__eio_send_binary(ps__eio *e, const char *data, size_t len)
{
    if (e->closed)
        return UV_EPIPE;
    return ps__ws_send(e->ws, true, data, len);
}

void ps__eio_close(ps__eio *e, int code, const char *reason)
{
    if (e->closed)
        return;
    e->closed = true;
    e->close_reason = reason;
    ps__timer_stop(e->heartbeat);
    ps__ws_close(e->ws, code, reason);
}

bool ps__eio_closed(const ps__eio *e)
{
    return e->closed;
}

size_t ps__eio_queued(const ps__eio *e)
{
    return ps__ws_queued(e->ws);
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

ps__eio_server *ps__eio_get_server(const ps__eio *e)
{
    return e->srv;
}
