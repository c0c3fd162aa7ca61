/*
 * fuzz_server: the whole stack at once. A real ps_server (with an app much like examples/echo:
 * namespaces "/" and "/admin", connect and message middleware, the "/echo" view with channels,
 * requests to the client and kept replies and acks) gets up to four client connections, each
 * fed from the input as if accepted by its listener. So every layer meets hostile input where it
 * meets it in production: HTTP, Engine.IO requests and polling payloads, the upgrade from
 * polling, WebSocket frames, Socket.IO packets and binary attachments, and the channel protocol;
 * and the graceful stop meets traffic in flight.
 *
 * Ids are deterministic: the target replaces getrandom(2) during an input, so that the k-th
 * random value of an input is k repeated (the first session id is "BBBBBBBBBBBBBBBBBBBB") and
 * seeds can poll, post and upgrade with a known sid. Timers of seconds never fire (an input
 * takes microseconds); zero-delay ones do.
 *
 * Input: segments separated by the marker FE FD C (C a control byte); the bytes before the
 * first marker go to connection 0 in one read.
 *   C bits 0-1  the connection (0-3; a new one is accepted when it has none or it closed)
 *   C bit 2     the client closes its side (FIN) after the segment
 *   C bits 3-5  read size (harness.c's fz_chunk_size)
 *   C bit 6     the server starts its graceful stop before the segment
 *
 * Checks, besides ASan/UBSan and the harness's (no connection or handle left): every view that
 * attached is disposed exactly once, every request and emit-with-ack completes exactly once
 * (their contexts are freed on completion, so a second completion is a use-after-free), every
 * kept reply and ack is handed back. And what the server sends is well-formed, whatever it was
 * sent: the link wraps ps__eio_send_packet(v) and ps__ws_send (-Wl,--wrap), so every Engine.IO text
 * packet is checked to be valid UTF-8 with a known type, every Socket.IO packet to decode with
 * ps__sio_decode, and every channel_message to decode with ps__envelope_decode.
 */
#include "channel.h"
#include "harness.h"

#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- deterministic ids ----------------------------------------------------------------- */

static bool fake_random;
static uint8_t random_counter;

ssize_t getrandom(void *buf, size_t n, unsigned int flags)
{
    if (!fake_random)
        return syscall(SYS_getrandom, buf, n, flags);
    memset(buf, ++random_counter, n);
    return (ssize_t)n;
}

/* ---- what the server sends ------------------------------------------------------------ */

int __real_ps__eio_send_packet(ps__eio *e, const char *packet, size_t len);
int __wrap_ps__eio_send_packet(ps__eio *e, const char *packet, size_t len);
int __real_ps__eio_send_packetv(ps__eio *e, const uv_buf_t *parts, size_t nparts);
int __wrap_ps__eio_send_packetv(ps__eio *e, const uv_buf_t *parts, size_t nparts);
int __real_ps__ws_send(ps__ws *ws, bool binary, const char *data, size_t len);
int __wrap_ps__ws_send(ps__ws *ws, bool binary, const char *data, size_t len);

static void bad_output(const char *what, const char *data, size_t len, const char *err)
{
    fprintf(stderr, "server sent %s (%s): %.*s\n", what, err ? err : "", (int)len, data);
    abort();
}

static bool is_string(const json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

static void check_sio_packet(const char *data, size_t len)
{
    ps__sio_packet p;
    const char *err = NULL;
    if (ps__sio_decode(data, len, &p, &err) != 0)
        bad_output("an invalid Socket.IO packet", data, len, err);
    json_t *msg = json_array_get(p.data, 1);
    if (p.type == PS__SIO_EVENT && is_string(json_array_get(p.data, 0), "message") &&
        is_string(json_object_get(msg, "type"), "channel_message")) {
        ps__envelope env;
        if (ps__envelope_decode(msg, &env, &err) != 0)
            bad_output("an invalid channel envelope", data, len, err);
    }
    ps__sio_packet_clear(&p);
}

int __wrap_ps__eio_send_packet(ps__eio *e, const char *packet, size_t len)
{
    if (len == 0 || packet[0] < PS__EIO_OPEN || packet[0] > PS__EIO_NOOP)
        bad_output("an invalid Engine.IO packet", packet, len, NULL);
    if (!ps__utf8_valid((const uint8_t *)packet, len))
        bad_output("invalid UTF-8", packet, len, NULL);
    if (packet[0] == PS__EIO_MESSAGE)
        check_sio_packet(packet + 1, len - 1);
    return __real_ps__eio_send_packet(e, packet, len);
}

/* The vectored send, joined and checked as one packet. */
int __wrap_ps__eio_send_packetv(ps__eio *e, const uv_buf_t *parts, size_t nparts)
{
    ps__buf b;
    ps__buf_init(&b);
    for (size_t i = 0; i < nparts; i++)
        ps__buf_append(&b, parts[i].base, parts[i].len);
    const char *packet = ps__buf_cstr(&b);
    if (b.len == 0 || packet[0] != PS__EIO_MESSAGE)
        bad_output("an invalid Engine.IO packet", packet, b.len, NULL);
    if (!ps__utf8_valid((const uint8_t *)packet, b.len))
        bad_output("invalid UTF-8", packet, b.len, NULL);
    check_sio_packet(packet + 1, b.len - 1);
    ps__buf_free(&b);
    return __real_ps__eio_send_packetv(e, parts, nparts);
}

int __wrap_ps__ws_send(ps__ws *ws, bool binary, const char *data, size_t len)
{
    if (!binary && !ps__utf8_valid((const uint8_t *)data, len))
        bad_output("a text frame of invalid UTF-8", data, len, NULL);
    return __real_ps__ws_send(ws, binary, data, len);
}

/* ---- the app --------------------------------------------------------------------------- */

static struct {
    unsigned views_attached, views_disposed, views_freed;
    unsigned requests, requests_done;
    unsigned asks, asks_done;
    unsigned sessions_connected, sessions_disconnected;
} n;

typedef struct done_ctx {
    unsigned *counter;
} done_ctx;

static done_ctx *done_new(unsigned *started, unsigned *counter)
{
    done_ctx *d = malloc(sizeof *d);
    FZ_CHECK(d);
    d->counter = counter;
    (*started)++;
    return d;
}

/* Frees the context: a second completion of the same request reads freed memory. */
static void done_complete(done_ctx *d)
{
    (*d->counter)++;
    free(d);
}

typedef struct sess_data {
    ps_ack *kept; /* one kept acknowledgement, answered by the next event or at disconnect */
} sess_data;

static void sess_data_free(void *p)
{
    sess_data *sd = p;
    FZ_CHECK(sd->kept == NULL); /* the disconnect hook answered it */
    free(sd);
}

static int connect_mw(ps_session *s, const ps_handshake *hs, void *user)
{
    json_t *auth = ps_handshake_auth(hs);
    json_t *deny = json_object_get(auth, "deny");
    ps_handshake_header(hs, "cookie");
    ps_handshake_cookie(hs, "io");
    ps_handshake_query(hs, "EIO");
    ps_handshake_address(hs);
    if (json_is_string(deny))
        return ps_session_deny(s, json_string_value(deny), auth);
    sess_data *sd = calloc(1, sizeof *sd);
    FZ_CHECK(sd);
    ps_session_set_data(s, sd, sess_data_free);
    return 0;
}

static int ns_connect(ps_session *s, const ps_handshake *hs, void *user)
{
    n.sessions_connected++;
    /* Queued until the CONNECT reply is out (socketio.c's early queue), binary included. */
    json_t *args = json_pack("[s,o]", ps_session_namespace(s), ps_binary("\x01\x02", 2));
    ps_session_emit(s, "welcome", args);
    json_decref(args);
    return 0;
}

static void on_ack_done(ps_session *s, int status, json_t *args, void *user)
{
    FZ_CHECK(status == PS_OK ? json_is_array(args) : args == NULL);
    done_complete(user);
}

static void on_event(ps_session *s, const char *event, json_t *args, ps_ack *ack, void *user)
{
    FZ_CHECK(json_is_array(args));
    sess_data *sd = ps_session_data(s);
    if (sd && sd->kept) {
        ps_ack_send(sd->kept, args);
        sd->kept = NULL;
    }
    if (ack && strcmp(event, "keep") == 0 && sd) {
        sd->kept = ps_ack_keep(ack);
    } else if (ack) {
        ps_ack_send(ack, args);
    } else if (strcmp(event, "ask") == 0) {
        const char *name = json_string_value(json_array_get(args, 0));
        json_int_t timeout = json_integer_value(json_array_get(args, 1));
        done_ctx *d = done_new(&n.asks, &n.asks_done);
        if (ps_session_emit_ack(s, name ? name : "ask", json_array_get(args, 2),
                                timeout > 0 ? 1000 : 0, on_ack_done, d) != 0) {
            n.asks--;
            free(d);
        }
    } else if (strcmp(event, "bye") == 0) {
        ps_session_disconnect(s);
    } else {
        ps_session_emit(s, event, args);
    }
}

static void on_disconnect(ps_session *s, const char *reason, void *user)
{
    FZ_CHECK(reason != NULL);
    n.sessions_disconnected++;
    sess_data *sd = ps_session_data(s);
    if (sd && sd->kept) {
        ps_ack_send(sd->kept, NULL); /* PS_ECLOSED, and the handle is freed */
        sd->kept = NULL;
    }
}

static int message_mw(ps_session *s, ps_message *msg, void *user)
{
    FZ_CHECK(msg->channel && msg->event && msg->payload);
    if (strcmp(msg->event, "forbidden") == 0) {
        msg->deny_error = "forbidden here";
        return 1;
    }
    return 0;
}

typedef struct view_data {
    ps_view *view;
    ps_reply *kept[4]; /* kept replies, answered by "flush" or when the view is freed */
    size_t nkept;
    ps_listener *off_me;
} view_data;

static void view_data_free(void *p)
{
    view_data *vd = p;
    for (size_t i = 0; i < vd->nkept; i++)
        ps_reply_ok(vd->kept[i], NULL);
    n.views_freed++;
    free(vd);
}

static void on_response(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    FZ_CHECK(status != PS_EREMOTE || error != NULL);
    done_complete(user);
}

static void on_channel_event(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                             void *user)
{
    view_data *vd = user;
    FZ_CHECK(payload != NULL && !ps_channel_closed(ch));
    if (strcmp(event, "echo") == 0) {
        if (reply)
            ps_reply_ok(reply, payload);
        else
            ps_emit(ch, "echo", payload);
    } else if (strcmp(event, "fail") == 0 && reply) {
        ps_reply_error(reply, json_string_value(payload) ? json_string_value(payload) : "failed");
    } else if (strcmp(event, "keep") == 0 && reply && vd->nkept < PS__ARRAY_SIZE(vd->kept)) {
        vd->kept[vd->nkept++] = ps_reply_keep(reply);
    } else if (strcmp(event, "flush") == 0) {
        for (size_t i = 0; i < vd->nkept; i++)
            ps_reply_ok(vd->kept[i], payload);
        vd->nkept = 0;
    } else if (strcmp(event, "ask") == 0) {
        done_ctx *d = done_new(&n.requests, &n.requests_done);
        const char *name = json_string_value(json_object_get(payload, "event"));
        if (ps_request(ch, name ? name : "ask", json_object_get(payload, "payload"),
                       json_is_true(json_object_get(payload, "timeout")) ? 1000 : 0, on_response,
                       d) != 0) {
            n.requests--;
            free(d);
        }
    } else if (strcmp(event, "close") == 0) {
        ps_channel_close(ch);
    } else if (strcmp(event, "closeview") == 0) {
        ps_view_close(vd->view);
    } else if (strcmp(event, "open") == 0) {
        ps_channel *more = ps_channel_open(vd->view);
        if (more) {
            ps_on(more, "*", on_channel_event, vd);
            json_t *p = json_pack("{s:s}", "channelId", ps_channel_id(more));
            ps_view_set_props(vd->view, p);
            json_decref(p);
        }
    } else if (strcmp(event, "off") == 0) {
        ps_off(vd->off_me);
    } else if (strcmp(event, "disconnect") == 0) {
        ps_session_disconnect(ps_view_session(vd->view));
    }
}

static int view_init(ps_view *view, json_t *props, void *user)
{
    FZ_CHECK(props != NULL);
    view_data *vd = calloc(1, sizeof *vd);
    FZ_CHECK(vd);
    vd->view = view;
    ps_view_set_data(view, vd, view_data_free);
    ps_channel *ch = ps_channel_open(view);
    if (!ch)
        return ps_view_reject(view, "Too many channels");
    ps_on(ch, "*", on_channel_event, vd);
    vd->off_me = ps_on(ch, "echo", on_channel_event, vd);
    if (json_is_true(json_object_get(props, "reject")))
        return ps_view_reject(view, "rejected");
    json_t *p = json_pack("{s:s,s:O}", "channelId", ps_channel_id(ch), "echo", props);
    ps_view_set_props(view, p);
    json_decref(p);
    n.views_attached++;
    return 0;
}

static void view_dispose(ps_view *view, void *user)
{
    n.views_disposed++;
    FZ_CHECK(n.views_disposed <= n.views_attached);
}

/* ---- one server per input -------------------------------------------------------------- */

static fz_env *env;

static void find_listener(uv_handle_t *h, void *arg)
{
    /* Before any connection exists, the server's only TCP handle is its listener (whose
     * uv_tcp_t is its first member, net.h). */
    if (uv_handle_get_type(h) == UV_TCP)
        *(ps__listener **)arg = (ps__listener *)h;
}

static ps_server *server_new(void)
{
    static const char *const origins[] = {"http://ok.example", NULL};
    ps_server_opts o = {
        .port = 0,
        .max_payload = 4096,
        .max_header_size = 2048,
        .max_body_size = 4096,
        .allowed_origins = origins,
        .max_views_per_session = 4,
        .max_channels_per_session = 6,
        .max_pending_requests = 3,
        /* Small enough that a few polling handshakes reach them (sessions ended unconnected). */
        .max_unconnected = 3,
        .max_unconnected_per_address = 2,
    };
    ps_server *srv = ps_server_new(env->loop, &o);
    FZ_CHECK(srv);
    static const ps_namespace_hooks main_hooks = {
        .connect = ns_connect, .event = on_event, .disconnect = on_disconnect};
    static const ps_namespace_hooks admin_hooks = {
        .connect = ns_connect, .event = on_event, .disconnect = on_disconnect};
    FZ_CHECK(ps_namespace(srv, "/", &main_hooks) == 0);
    FZ_CHECK(ps_namespace(srv, "/admin", &admin_hooks) == 0);
    FZ_CHECK(ps_use_connect(srv, connect_mw, NULL) == 0);
    FZ_CHECK(ps_use_message(srv, message_mw, NULL) == 0);
    static const ps_view_type echo_view = {view_init, view_dispose, NULL};
    FZ_CHECK(ps_route(srv, "/echo", &echo_view) == 0);
    FZ_CHECK(ps_server_listen(srv) == 0);
    return srv;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    env = fz_env_get();
    return 0;
}

static const uint8_t MARKER[2] = {0xfe, 0xfd};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&n, 0, sizeof n);
    fake_random = true;
    ps_server *srv = server_new();
    /* After the server's own draws (its node id): the first session id is "BBB..." again. */
    random_counter = 0;
    ps__listener *l = NULL;
    uv_walk(env->loop, find_listener, &l);
    FZ_CHECK(l && l->listening && l->data != NULL);

    ps__conn *conns[4] = {NULL};
    bool stopping = false;
    uint8_t ctl = 0; /* the first segment: connection 0, one read */
    const uint8_t *p = data, *end = data + size;
    for (;;) {
        const uint8_t *m = p;
        while (m + 3 <= end && !(m[0] == MARKER[0] && m[1] == MARKER[1]))
            m++;
        const uint8_t *seg_end = m + 3 <= end ? m : end;
        if ((ctl & 64) && !stopping) {
            stopping = true;
            ps_server_stop(srv);
            fz_loop_turn(env);
        }
        ps__conn **c = &conns[ctl & 3];
        if ((!*c || !fz_conn_alive(env, *c)) && !stopping) {
            *c = fz_conn_new(env, l);
            if (*c)
                l->on_conn(l, *c);
        }
        if (*c && fz_conn_alive(env, *c)) {
            fz_conn_read_chunked(env, *c, p, (size_t)(seg_end - p), fz_chunk_size(ctl >> 3));
            if (ctl & 4)
                fz_conn_eof(env, *c);
        }
        if (seg_end == end)
            break;
        ctl = seg_end[2];
        p = seg_end + 3;
    }

    /* The clients vanish, then the server stops; nothing may be left on the loop. */
    fz_conns_abort(env);
    if (!stopping)
        ps_server_stop(srv);
    for (int i = 0; i < 256 && uv_loop_alive(env->loop); i++)
        fz_loop_turn(env);
    for (int i = 0; i < FZ_MAX_CONNS; i++)
        FZ_CHECK(env->slots[i].conn == NULL); /* the listener is about to be freed */
    ps_server_free(srv);
    fz_env_finish(env);
    fake_random = false;

    FZ_CHECK(n.views_disposed == n.views_attached);
    FZ_CHECK(n.views_freed >= n.views_disposed);
    FZ_CHECK(n.requests_done == n.requests);
    FZ_CHECK(n.asks_done == n.asks);
    FZ_CHECK(n.sessions_disconnected == n.sessions_connected);
    return 0;
}
