/*
 * session: public sessions on top of Socket.IO namespace sockets. A ps_session is created when
 * a CONNECT arrives, runs the connect middleware and the namespace hook, and is freed after its
 * socket disconnects: first the layer above disposes what the session owns, then the app's
 * disconnect hook runs, then the app's data destructor. The socket keeps a reference on the
 * session's behalf across every app callback, so the app may disconnect from inside one.
 *
 * With connection state recovery a socket may detach (transport gone, session kept) and resume
 * any number of times before it disconnects: the session is the same object throughout, with
 * the handshake it was created with (copied at the first detach, since the Engine.IO session
 * holding the original goes). The middleware does not run again on a resume: the pid, a
 * secret of the session, is what the client proves itself with.
 */
#include "session.h"

#include <stdio.h>

struct ps_handshake {
    const ps__eio_handshake *eio;
    json_t *auth;
    json_t *query;   /* decoded query parameters, filled on first use */
    json_t *cookies; /* parsed Cookie header, filled on first use */
};

struct ps_session {
    ps__sessions *layer;
    ps__sio_socket *sock;
    ps__namespace *nsp;
    ps__list link; /* in layer->sessions once accepted */
    ps_handshake hs;
    void *data;
    void (*free_data)(void *);
    void *ext_data;
    int refs; /* the socket's while connected, plus one per dispatch in progress */
    ps__eio_handshake *hs_copy; /* after a detach: hs.eio points here */
    bool accepted;
    bool closed;
};

struct ps_ack {
    ps__sio_socket *sock; /* referenced while the ack exists */
    int64_t id;
    bool sent;
    bool kept;
    bool in_callback;
};

/* ---- handshake ------------------------------------------------------------------------- */

const char *ps_handshake_header(const ps_handshake *hs, const char *name)
{
    return ps__http_headers_find(hs->eio->headers, hs->eio->nheaders, name);
}

const char *ps_handshake_query(const ps_handshake *hs, const char *name)
{
    ps_handshake *m = (ps_handshake *)hs;
    if (!m->query)
        m->query = json_object(); /* most apps never ask: no cost per session until then */
    json_t *cached = json_object_get(m->query, name);
    if (cached)
        return json_string_value(cached);
    ps__buf v;
    ps__buf_init(&v);
    const char *out = NULL;
    if (ps__http_query_get(hs->eio->query, name, &v)) {
        json_object_set_new(m->query, name, json_stringn_nocheck(ps__buf_cstr(&v), v.len));
        out = json_string_value(json_object_get(m->query, name));
    }
    ps__buf_free(&v);
    return out;
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * "a=1; b=2" (RFC 6265 §4.2.1), leniently: whitespace around names and values is dropped, and
 * a name that appears twice keeps its first value, which browsers send for the cookie with the
 * longest path (the most specific), so a cookie set on a broader path cannot shadow it.
 */
static void parse_cookies(ps_handshake *hs)
{
    const char *header = ps_handshake_header(hs, "Cookie");
    const char *p = header;
    while (p && *p) {
        const char *end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq) {
            const char *n = p, *ne = eq, *v = eq + 1, *ve = end;
            while (n < ne && ows(*n))
                n++;
            while (ne > n && ows(ne[-1]))
                ne--;
            while (v < ve && ows(*v))
                v++;
            while (ve > v && ows(ve[-1]))
                ve--;
            if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"')
                v++, ve--;
            char *name = ps__strndup(n, (size_t)(ne - n));
            if (*name && !json_object_get(hs->cookies, name))
                json_object_set_new(hs->cookies, name, json_stringn_nocheck(v, (size_t)(ve - v)));
            ps__free(name);
        }
        p = *end ? end + 1 : end;
    }
}

const char *ps_handshake_cookie(const ps_handshake *hs, const char *name)
{
    return json_string_value(json_object_get(ps_handshake_cookies(hs), name));
}

json_t *ps_handshake_cookies(const ps_handshake *hs)
{
    ps_handshake *m = (ps_handshake *)hs;
    if (!m->cookies) {
        m->cookies = json_object();
        parse_cookies(m);
    }
    return m->cookies;
}

bool ps_handshake_header_at(const ps_handshake *hs, size_t i, const char **name, const char **value)
{
    if (i >= hs->eio->nheaders)
        return false;
    *name = hs->eio->headers[i].name;
    *value = hs->eio->headers[i].value;
    return true;
}

const char *ps_handshake_query_string(const ps_handshake *hs)
{
    return hs->eio->query ? hs->eio->query : "";
}

json_t *ps_handshake_auth(const ps_handshake *hs)
{
    ps_handshake *m = (ps_handshake *)hs;
    if (!m->auth)
        m->auth = json_object();
    return m->auth;
}

const char *ps_handshake_address(const ps_handshake *hs)
{
    return hs->eio->address;
}

/* ---- acks ------------------------------------------------------------------------------ */

static void ack_free(ps_ack *ack)
{
    ps__sio_socket_unref(ack->sock);
    ps__free(ack);
}

ps_ack *ps_ack_keep(ps_ack *ack)
{
    ack->kept = true;
    return ack;
}

int ps_ack_send(ps_ack *ack, json_t *args)
{
    if (args && !json_is_array(args))
        return PS_EINVAL;
    int rc = PS_ECLOSED;
    if (!ack->sent) {
        ack->sent = true;
        rc = ps__sio_send_ack(ack->sock, ack->id, args);
    }
    if (!ack->in_callback)
        ack_free(ack);
    return rc;
}

/* ---- sessions -------------------------------------------------------------------------- */

static ps__sessions *layer_of(ps__sio_server *sio)
{
    return PS__CONTAINER_OF(sio, ps__sessions, sio);
}

static ps__namespace *find_nsp(ps__sessions *ss, const char *name)
{
    for (size_t i = 0; i < ss->nnsps; i++)
        if (strcmp(ss->nsps[i].name, name) == 0)
            return &ss->nsps[i];
    return NULL;
}

static bool sess_has_namespace(ps__sio_server *sio, const char *nsp)
{
    return find_nsp(layer_of(sio), nsp) != NULL;
}

static void session_free(ps_session *s)
{
    if (s->free_data)
        s->free_data(s->data);
    ps__free(s->hs_copy);
    json_decref(s->hs.auth);
    json_decref(s->hs.query);
    json_decref(s->hs.cookies);
    ps__free(s);
}

static int sess_on_connect(ps__sio_socket *sock, json_t *auth)
{
    ps__sessions *ss = layer_of(ps__sio_conn_server(ps__sio_socket_conn(sock)));
    ps_session *s = ps__calloc(1, sizeof *s);
    s->layer = ss;
    s->sock = sock;
    s->nsp = find_nsp(ss, ps__sio_socket_nsp(sock));
    ps__list_init(&s->link);
    s->hs.eio = ps__eio_get_handshake(ps__sio_conn_eio(ps__sio_socket_conn(sock)));
    s->hs.auth = json_incref(auth);
    s->refs = 1;
    ps__sio_socket_set_up(sock, s);
    int rc = 0;
    for (size_t i = 0; i < ss->nconnect_mw && rc == 0; i++)
        rc = ss->connect_mw[i].fn(s, &s->hs, ss->connect_mw[i].user);
    if (rc == 0 && s->nsp->hooks.connect)
        rc = s->nsp->hooks.connect(s, &s->hs, s->nsp->hooks.user);
    if (rc == 0 && ps__sio_socket_closed(sock))
        rc = PS_ECLOSED;
    if (rc != 0) {
        ps__sio_socket_set_up(sock, NULL);
        session_free(s);
        return rc;
    }
    /* Most clients send no auth: an empty object held by every idle session costs about 230
     * bytes, so once the connect hooks saw it, it is made again only if asked for (an app
     * that keeps it holds its own reference). */
    if (json_object_size(s->hs.auth) == 0) {
        json_decref(s->hs.auth);
        s->hs.auth = NULL;
    }
    s->accepted = true;
    ps__list_insert_tail(&ss->sessions, &s->link);
    return 0;
}

static void sess_on_event(ps__sio_socket *sock, const char *name, json_t *packet, int64_t ack_id)
{
    ps_session *s = ps__sio_socket_up(sock);
    ps__sessions *ss = s->layer;
    if (ss->ext.on_message && strcmp(name, "message") == 0 && strcmp(s->nsp->name, "/") == 0) {
        ps__session_ref(s);
        ss->ext.on_message(s, packet, ack_id, ss->ext.user);
        ps__session_unref(s);
        return;
    }
    json_t *args = json_array();
    for (size_t i = 1; i < json_array_size(packet); i++)
        json_array_append(args, json_array_get(packet, i));
    ps_ack *ack = NULL;
    if (ack_id >= 0) {
        ack = ps__calloc(1, sizeof *ack);
        ack->sock = sock;
        ack->id = ack_id;
        ack->in_callback = true;
        ps__sio_socket_ref(sock);
    }
    if (s->nsp->hooks.event)
        s->nsp->hooks.event(s, name, args, ack, s->nsp->hooks.user);
    if (ack) {
        ack->in_callback = false;
        if (!ack->sent && !ack->kept)
            ps_ack_send(ack, NULL); /* the client must never wait forever */
        else if (ack->sent)
            ack_free(ack);
        /* kept and unsent: the app owns it now */
    }
    json_decref(args);
}

static void sess_on_disconnect(ps__sio_socket *sock, const char *reason)
{
    ps_session *s = ps__sio_socket_up(sock);
    if (!s)
        return;
    ps__sessions *ss = s->layer;
    s->closed = true;
    ps__list_remove(&s->link);
    if (ss->ext.on_session_close)
        ss->ext.on_session_close(s, ss->ext.user);
    if (s->nsp->hooks.disconnect)
        s->nsp->hooks.disconnect(s, reason, s->nsp->hooks.user);
    ps__sio_socket_set_up(sock, NULL);
    ps__session_unref(s);
}

/* The main namespace's "message" events go up unbuilt when the layer above reads them so;
 * every other event is built and delivered by sess_on_event. */
static bool sess_on_event_raw(ps__sio_socket *sock, const char *name, const ps__json_index *ix,
                              int64_t ack_id)
{
    ps_session *s = ps__sio_socket_up(sock);
    ps__sessions *ss = s->layer;
    if (!ss->ext.on_message_raw || strcmp(name, "message") != 0 || strcmp(s->nsp->name, "/") != 0)
        return false;
    ps__session_ref(s);
    ss->ext.on_message_raw(s, ix, ack_id, ss->ext.user);
    ps__session_unref(s);
    return true;
}

static void sess_on_detach(ps__sio_socket *sock, const char *reason)
{
    ps_session *s = ps__sio_socket_up(sock);
    if (!s)
        return;
    if (!s->hs_copy) {
        s->hs_copy = ps__eio_handshake_dup(s->hs.eio);
        s->hs.eio = s->hs_copy;
    }
    if (s->nsp->hooks.transport_lost) {
        ps__session_ref(s);
        s->nsp->hooks.transport_lost(s, reason, s->nsp->hooks.user);
        ps__session_unref(s);
    }
}

static void sess_on_resume(ps__sio_socket *sock)
{
    ps_session *s = ps__sio_socket_up(sock);
    if (!s)
        return;
    ps__sessions *ss = s->layer;
    ps__session_ref(s);
    if (ss->ext.on_session_resume)
        ss->ext.on_session_resume(s, ss->ext.user);
    if (!s->closed && s->nsp->hooks.resumed)
        s->nsp->hooks.resumed(s, s->nsp->hooks.user);
    ps__session_unref(s);
}

static void sess_on_resume_settled(ps__sio_socket *sock)
{
    ps_session *s = ps__sio_socket_up(sock);
    if (!s || !s->layer->ext.on_session_settled)
        return;
    ps__session_ref(s);
    s->layer->ext.on_session_settled(s, s->layer->ext.user);
    ps__session_unref(s);
}

static const ps__sio_cbs sess_sio_cbs = {
    .has_namespace = sess_has_namespace,
    .on_connect = sess_on_connect,
    .on_event = sess_on_event,
    .on_disconnect = sess_on_disconnect,
    .on_event_raw = sess_on_event_raw,
    .on_detach = sess_on_detach,
    .on_resume = sess_on_resume,
    .on_resume_settled = sess_on_resume_settled,
};

void ps__session_ref(ps_session *s)
{
    s->refs++;
}

void ps__session_unref(ps_session *s)
{
    if (--s->refs == 0)
        session_free(s);
}

int ps__session_send_message(ps_session *s, json_t *msg)
{
    if (s->closed)
        return PS_ECLOSED;
    json_t *args = json_pack("[O]", msg);
    int rc = ps__sio_emit(s->sock, "message", args);
    json_decref(args);
    return rc;
}

uv_loop_t *ps__session_loop(const ps_session *s)
{
    return s->layer->sio.eio.loop;
}

int ps__session_send_message_text(ps_session *s, const char *msg, size_t len)
{
    if (s->closed)
        return PS_ECLOSED;
    return ps__sio_emit_text(s->sock, "message", msg, len);
}

int ps__session_send_ack(ps_session *s, int64_t id, json_t *args)
{
    if (s->closed)
        return PS_ECLOSED;
    return ps__sio_send_ack(s->sock, id, args);
}

/* ---- layer ----------------------------------------------------------------------------- */

void ps__sessions_init(ps__sessions *ss, ps_server *server, uv_loop_t *loop,
                       const ps__eio_config *cfg, uint32_t connect_timeout_ms)
{
    memset(ss, 0, sizeof *ss);
    ps__sio_server_init(&ss->sio, loop, cfg, connect_timeout_ms, &sess_sio_cbs, ss);
    ss->server = server;
    ps__list_init(&ss->sessions);
    ps_namespace_hooks none = {0};
    ss->nsps = ps__calloc(1, sizeof *ss->nsps);
    ss->nsps[0].name = ps__strdup("/");
    ss->nsps[0].hooks = none;
    ss->nnsps = 1;
}

void ps__sessions_free(ps__sessions *ss)
{
    ps__sio_server_free(&ss->sio);
    for (size_t i = 0; i < ss->nnsps; i++)
        ps__free(ss->nsps[i].name);
    ps__free(ss->nsps);
    ps__free(ss->connect_mw);
}

void ps__sessions_set_ext(ps__sessions *ss, const ps__session_ext *ext)
{
    ss->ext = *ext;
}

void ps__sessions_shutdown(ps__sessions *ss)
{
    ps__sio_server_shutdown(&ss->sio);
}

void ps__sessions_stats(const ps__sessions *ss, ps_server_stats *out)
{
    out->sessions = ss->sio.stats.sockets;
    out->sessions_total = ss->sio.stats.sockets_total;
    out->messages_in = ss->sio.stats.packets_in;
    out->messages_out = ss->sio.stats.packets_out;
    out->protocol_errors = ss->sio.stats.protocol_errors + ss->sio.eio.ws_errors;
    out->sessions_detached = ss->sio.stats.detached;
    out->sessions_resumed = ss->sio.stats.resumed;
    out->resume_failed = ss->sio.stats.resume_failed;
    out->resume_overflow = ss->sio.stats.resume_overflow;
}

ps__sessions *ps__session_layer(const ps_session *s)
{
    return s->layer;
}

bool ps__session_closed(const ps_session *s)
{
    return s->closed || ps__sio_socket_closed(s->sock);
}

bool ps__session_recovers(const ps_session *s)
{
    return !s->closed && ps__sio_socket_recovers(s->sock);
}

bool ps_session_detached(const ps_session *s)
{
    return !s->closed && ps__sio_socket_detached(s->sock);
}

void *ps__session_ext_data(const ps_session *s)
{
    return s->ext_data;
}

void ps__session_set_ext_data(ps_session *s, void *data)
{
    s->ext_data = data;
}

/* ---- public ---------------------------------------------------------------------------- */

int ps__sessions_add_namespace(ps__sessions *ss, const char *name, const ps_namespace_hooks *hooks)
{
    if (!name || name[0] != '/' || strlen(name) >= PS__SIO_MAX_NSP || strchr(name, ','))
        return PS_EINVAL;
    ps__namespace *n = find_nsp(ss, name);
    if (!n) {
        ss->nsps = ps__realloc(ss->nsps, (ss->nnsps + 1) * sizeof *ss->nsps);
        n = &ss->nsps[ss->nnsps++];
        n->name = ps__strdup(name);
    }
    ps_namespace_hooks none = {0};
    n->hooks = hooks ? *hooks : none;
    return 0;
}

int ps__sessions_use_connect(ps__sessions *ss, ps_connect_fn fn, void *user)
{
    if (!fn)
        return PS_EINVAL;
    ss->connect_mw = ps__realloc(ss->connect_mw, (ss->nconnect_mw + 1) * sizeof *ss->connect_mw);
    ss->connect_mw[ss->nconnect_mw].fn = fn;
    ss->connect_mw[ss->nconnect_mw].user = user;
    ss->nconnect_mw++;
    return 0;
}

int ps_session_deny(ps_session *s, const char *message, json_t *data)
{
    ps__sio_socket_deny(s->sock, message, data);
    return PS_EDENIED;
}

int ps_session_emit(ps_session *s, const char *event, json_t *args)
{
    return ps__sio_emit(s->sock, event, args);
}

typedef struct emit_ack_ctx {
    ps_session *s;
    ps_ack_cb cb;
    void *user;
} emit_ack_ctx;

static void on_emit_ack(ps__sio_socket *sock, int status, json_t *args, void *user)
{
    emit_ack_ctx *ctx = user;
    ctx->cb(ctx->s, status, args, ctx->user);
    ps__free(ctx);
}

int ps_session_emit_ack(ps_session *s, const char *event, json_t *args, uint32_t timeout_ms,
                        ps_ack_cb cb, void *user)
{
    if (!cb)
        return PS_EINVAL;
    emit_ack_ctx *ctx = ps__malloc(sizeof *ctx);
    ctx->s = s;
    ctx->cb = cb;
    ctx->user = user;
    int rc = ps__sio_emit_ack(s->sock, event, args, timeout_ms, on_emit_ack, ctx);
    if (rc != 0)
        ps__free(ctx);
    return rc;
}

size_t ps_session_queued(const ps_session *s)
{
    if (s->closed)
        return 0;
    return ps__sio_socket_queued(s->sock);
}

int ps_session_disconnect(ps_session *s)
{
    return ps__sio_disconnect(s->sock);
}

const char *ps_session_id(const ps_session *s)
{
    return ps__sio_socket_id(s->sock);
}

const char *ps_session_namespace(const ps_session *s)
{
    return s->nsp->name;
}

const ps_handshake *ps_session_handshake(const ps_session *s)
{
    return &s->hs;
}

ps_server *ps_session_server(const ps_session *s)
{
    return s->layer->server;
}

void ps_session_set_data(ps_session *s, void *data, void (*free_fn)(void *))
{
    s->data = data;
    s->free_data = free_fn;
}

void *ps_session_data(const ps_session *s)
{
    return s->data;
}
