/*
 * test_channel: the session, view and channel layers driven over real sockets, from C app code
 * that does what the contracts promise to survive: closing a channel, a view or the whole
 * session from inside its own handler, ps_off inside a handler, emitting from dispose, answering
 * after close, first reply wins, and exactly-once completion of requests in every way they can
 * end. The client thread speaks raw Socket.IO frames (client.h); the server-side counters are
 * atomics because the client thread reads them after each round trip.
 */
#include "client.h"

#include <stdatomic.h>

/* ---- client side: the channel envelope over raw frames --------------------------------- */

static void send_msg(tc *c, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    ps__buf pkt;
    ps__buf_init(&pkt);
    ps__buf_printf(&pkt, "42[\"message\",%s]", s);
    tc_ws_text(c, pkt.base);
    ps__buf_free(&pkt);
    free(s);
    json_decref(msg);
}

/* Next "message" event from the server (pings are answered, other packets skipped). */
static json_t *read_msg(tc *c)
{
    for (;;) {
        char *text = tc_ws_read_text(c);
        if (strcmp(text, "2") == 0) {
            tc_ws_text(c, "3");
            ps__free(text);
            continue;
        }
        if (strncmp(text, "42[\"message\",", 13) == 0) {
            json_t *arr = json_loads(text + 2, JSON_ALLOW_NUL, NULL);
            ASSERT_NOT_NULL(arr);
            json_t *m = json_incref(json_array_get(arr, 1));
            json_decref(arr);
            ps__free(text);
            return m;
        }
        ps__free(text);
    }
}

static const char *str(json_t *m, const char *key)
{
    const char *s = json_string_value(json_object_get(m, key));
    ASSERT_NOT_NULL(s);
    return s;
}

/* Attaches `path` and returns the channel id from the ack's props (caller frees). */
static char *attach(tc *c, const char *path, const char *aid)
{
    send_msg(c, json_pack("{s:s,s:s,s:s,s:{}}", "type", "attach", "path", path, "attachId", aid,
                          "props"));
    json_t *ack = read_msg(c);
    ASSERT_STR_EQ(str(ack, "type"), "attach_ack");
    ASSERT_STR_EQ(str(ack, "attachId"), aid);
    char *id = ps__strdup(str(json_object_get(ack, "props"), "channelId"));
    ASSERT_EQ(strlen(id), 32);
    json_decref(ack);
    return id;
}

static void ch_event(tc *c, const char *ch, const char *event, const char *rid)
{
    json_t *m = json_pack("{s:s,s:s,s:s,s:n}", "type", "channel_message", "channel", ch, "event",
                          event, "payload");
    if (rid)
        json_object_set_new(m, "requestId", json_string(rid));
    send_msg(c, m);
}

/* Reads the response to `rid`: its payload (new reference), or NULL with *error set. */
static json_t *read_response(tc *c, const char *rid, char **error)
{
    json_t *m = read_msg(c);
    ASSERT_STR_EQ(str(m, "responseTo"), rid);
    json_t *payload = NULL;
    *error = NULL;
    if (json_object_get(m, "error"))
        *error = ps__strdup(str(m, "error"));
    else
        payload = json_incref(json_object_get(m, "payload"));
    json_decref(m);
    return payload;
}

static void expect_event(tc *c, const char *ch, const char *event)
{
    json_t *m = read_msg(c);
    ASSERT_STR_EQ(str(m, "channel"), ch);
    ASSERT_STR_EQ(str(m, "event"), event);
    json_decref(m);
}

/* ---- server side: a route whose handlers misbehave on purpose --------------------------- */

static struct {
    atomic_int second_listener_calls;
    atomic_int off_b_calls;
    atomic_int disposed;
    atomic_int data_freed;
    atomic_int after_close_rc;
    atomic_int race_second_rc;
    atomic_int kept_late_rc;
    atomic_int req_ok, req_timeout, req_closed, req_remote, req_twice;
    atomic_int denied_reached;
    atomic_int connect_seen;
} st;

typedef struct app_view {
    ps_view *view;
    ps_channel *ch;
    ps_listener *off_a, *off_b;
    ps_reply *kept;
    bool done[8]; /* per outgoing request: completed already */
    int nreq;
} app_view;

static void on_response(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    bool *done = user;
    if (*done) {
        st.req_twice++;
        return;
    }
    *done = true;
    switch (status) {
    case PS_OK: st.req_ok++; break;
    case PS_ETIMEDOUT: st.req_timeout++; break;
    case PS_ECLOSED: st.req_closed++; break;
    case PS_EREMOTE:
        st.req_remote++;
        ASSERT_STR_EQ(error, "nope");
        break;
    default: ASSERT(0);
    }
    /* Whatever ended the request, the channel pointer is still valid here. */
    ASSERT_STR_EQ(ps_channel_id(ch), ps_channel_id(ch));
}

static void app_view_free(void *data)
{
    app_view *av = data;
    if (av->kept) {
        /* A kept reply must be handed back even when its channel is long gone. */
        st.kept_late_rc = ps_reply_ok(av->kept, NULL);
        av->kept = NULL;
    }
    st.data_freed++;
    free(av);
}

static void on_event(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                     void *user)
{
    app_view *av = user;
    if (strcmp(event, "close-me") == 0) {
        ASSERT_EQ(ps_channel_close(ch), 0);
        ASSERT_EQ(ps_channel_close(ch), PS_ECLOSED);
        ASSERT(ps_channel_closed(ch));
        st.after_close_rc = ps_emit(ch, "late", NULL);
        ASSERT_NULL(ps_on(ch, "x", on_event, av));
        if (reply)
            ASSERT_EQ(ps_reply_ok(reply, NULL), PS_ECLOSED);
        ASSERT_EQ(ps_request(ch, "q", NULL, 0, on_response, &av->done[0]), PS_ECLOSED);
    } else if (strcmp(event, "race") == 0 && reply) {
        json_t *v = json_string("first"); /* borrowed by ps_reply_ok */
        ASSERT_EQ(ps_reply_ok(reply, v), 0);
        json_decref(v);
    } else if (strcmp(event, "keep") == 0 && reply) {
        av->kept = ps_reply_keep(reply);
    } else if (strcmp(event, "view-close") == 0) {
        /* The data destructor runs inside ps_view_close: `av` is gone after it, the view and
         * the channel stay valid until this handler returns. */
        ps_view *view = av->view;
        ASSERT_EQ(ps_view_close(view), 0);
        ASSERT(ps_view_closed(view));
        ASSERT(ps_channel_closed(ch));
        ASSERT_EQ(ps_view_close(view), PS_ECLOSED);
    } else if (strcmp(event, "disconnect") == 0) {
        ps_session *s = ps_view_session(av->view);
        ASSERT_EQ(ps_session_disconnect(s), 0);
        ASSERT(ps_channel_closed(ch));
        ASSERT_EQ(ps_emit(ch, "late", NULL), PS_ECLOSED);
    } else if (strcmp(event, "ask") == 0 && av->nreq < 8) {
        /* payload: timeout in ms */
        json_int_t ms = json_integer_value(payload);
        bool *done = &av->done[av->nreq++];
        ASSERT_EQ(ps_request(ch, "q", NULL, (uint32_t)ms, on_response, done), 0);
    }
}

/* The second listener of each event: must never see what the first closed or removed. */
static void second_listener(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                            void *user)
{
    app_view *av = user;
    if (strcmp(event, "close-me") == 0 || strcmp(event, "view-close") == 0 ||
        strcmp(event, "disconnect") == 0)
        st.second_listener_calls++;
    if (strcmp(event, "race") == 0 && reply) {
        json_t *v = json_string("second");
        st.race_second_rc = ps_reply_ok(reply, v);
        json_decref(v);
    }
    (void)av;
}

static void off_a(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply, void *user)
{
    app_view *av = user;
    ps_off(av->off_a);
    ps_off(av->off_a); /* idempotent */
    ps_off(av->off_b); /* the next listener of this very dispatch */
}

static void off_b(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply, void *user)
{
    st.off_b_calls++;
}

static void on_forbidden(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                         void *user)
{
    if (strcmp(event, "forbidden") == 0)
        st.denied_reached++;
}

static int app_init(ps_view *view, json_t *props, void *user)
{
    app_view *av = calloc(1, sizeof *av);
    av->view = view;
    ps_view_set_data(view, av, app_view_free);
    av->ch = ps_channel_open(view);
    ps_on(av->ch, "*", on_event, av);
    ps_on(av->ch, "*", second_listener, av);
    av->off_a = ps_on(av->ch, "off", off_a, av);
    av->off_b = ps_on(av->ch, "off", off_b, av);
    ps_on(av->ch, "forbidden", on_forbidden, av);
    json_t *p = json_pack("{s:s}", "channelId", ps_channel_id(av->ch));
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void app_dispose(ps_view *view, void *user)
{
    app_view *av = ps_view_data(view);
    st.disposed++;
    /* Emitting from dispose works (the channels close only after it); when the session itself
     * is ending there is nobody to send to, and emit says so instead of failing otherwise. */
    if (!ps_channel_closed(av->ch)) {
        int rc = ps_emit(av->ch, "bye", NULL);
        ASSERT(rc == 0 || rc == PS_ECLOSED);
    }
    ASSERT_NULL(ps_channel_open(view));
}

static int deny_forbidden(ps_session *s, ps_message *m, void *user)
{
    if (strcmp(m->event, "forbidden") == 0) {
        m->deny_error = "nope";
        return PS_EDENIED;
    }
    return 0;
}

static void setup_app(ts *t)
{
    ps_view_type type = {.init = app_init, .dispose = app_dispose};
    ASSERT_EQ(ps_route(t->srv, "/app", &type), 0);
    ASSERT_EQ(ps_route(t->srv, "/app", &type), PS_EEXIST);
    ASSERT_EQ(ps_use_message(t->srv, deny_forbidden, NULL), 0);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void client_reentrancy(ts *t)
{
    tc *c = tc_sio_connect(t);
    char *ch = attach(c, "/app", "v1");
    char *err;

    /* First reply wins; the second listener's answer is refused with PS_EALREADY. */
    ch_event(c, ch, "race", "r1");
    json_t *p = read_response(c, "r1", &err);
    ASSERT_STR_EQ(json_string_value(p), "first");
    json_decref(p);
    ASSERT_EQ(st.race_second_rc, PS_EALREADY);

    /* ps_off of itself and of the next listener, inside the dispatch. */
    ch_event(c, ch, "off", NULL);
    ch_event(c, ch, "off", NULL);
    ch_event(c, ch, "race", "r2"); /* a round trip: both "off" events were handled */
    json_decref(read_response(c, "r2", &err));
    ASSERT_EQ(st.off_b_calls, 0);

    /* A kept reply: the client hears nothing until the channel closes. */
    ch_event(c, ch, "keep", "r3");

    /* Closing the channel inside its own handler: later listeners are skipped. */
    ch_event(c, ch, "close-me", "r4");
    expect_event(c, ch, "__close__");
    ASSERT_EQ(st.after_close_rc, PS_ECLOSED);
    ASSERT_EQ(st.second_listener_calls, 0);
    /* The request whose handler closed the channel gets no answer; the next one is refused. */
    ch_event(c, ch, "race", "r5");
    ASSERT_NULL(read_response(c, "r5", &err));
    ASSERT_STR_EQ(err, "Channel closed");
    ps__free(err);
    ps__free(ch);

    /* Closing the view inside a handler: dispose emits, then __close__. */
    ch = attach(c, "/app", "v2");
    ch_event(c, ch, "view-close", NULL);
    expect_event(c, ch, "bye");
    expect_event(c, ch, "__close__");
    ASSERT_EQ(st.disposed, 1); /* v2 only: v1 is still attached */
    ps__free(ch);

    /* Message middleware: a denied request gets the middleware's text. */
    ch = attach(c, "/app", "v3");
    ch_event(c, ch, "forbidden", "r6");
    ASSERT_NULL(read_response(c, "r6", &err));
    ASSERT_STR_EQ(err, "nope");
    ps__free(err);
    ch_event(c, ch, "forbidden", NULL); /* denied event: dropped, no listener runs */
    ch_event(c, ch, "race", "r7");
    json_decref(read_response(c, "r7", &err));
    ASSERT_EQ(st.denied_reached, 0);

    /* Disconnecting the whole session from inside a handler: DISCONNECT goes out first, and
     * nothing follows it (the disposes' emits find the session closed). */
    ch_event(c, ch, "disconnect", NULL);
    char *text = tc_ws_read_text(c);
    ASSERT_STR_EQ(text, "41");
    ps__free(text);
    ps__free(ch);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(channel_reentrancy)
{
    memset(&st, 0, sizeof st);
    ps_server_opts o = {0};
    ts_run(&o, setup_app, client_reentrancy, NULL);
    ASSERT_EQ(st.second_listener_calls, 0);
    ASSERT_EQ(st.disposed, 3);
    ASSERT_EQ(st.data_freed, 3);
    ASSERT_EQ(st.kept_late_rc, PS_ECLOSED);
    return 0;
}

static void answer(tc *c, const char *ch, const char *rid, bool error)
{
    json_t *m =
        json_pack("{s:s,s:s,s:s}", "type", "channel_message", "channel", ch, "responseTo", rid);
    if (error)
        json_object_set_new(m, "error", json_string("nope"));
    else
        json_object_set_new(m, "payload", json_true());
    send_msg(c, m);
}

/* Reads the server's request "q" and returns its request id (caller frees). */
static char *read_request(tc *c, const char *ch)
{
    json_t *m = read_msg(c);
    ASSERT_STR_EQ(str(m, "channel"), ch);
    ASSERT_STR_EQ(str(m, "event"), "q");
    char *rid = ps__strdup(str(m, "requestId"));
    ASSERT_EQ(strlen(rid), 32);
    json_decref(m);
    return rid;
}

static void ask(tc *c, const char *ch, int timeout_ms)
{
    send_msg(c, json_pack("{s:s,s:s,s:s,s:i}", "type", "channel_message", "channel", ch, "event",
                          "ask", "payload", timeout_ms));
}

static void client_requests(ts *t)
{
    tc *c = tc_sio_connect(t);
    char *ch = attach(c, "/app", "v1");
    char *err;

    ask(c, ch, 0); /* answered */
    char *rid = read_request(c, ch);
    answer(c, ch, rid, false);
    ps__free(rid);

    ask(c, ch, 0); /* answered with an error */
    rid = read_request(c, ch);
    answer(c, ch, rid, true);
    ps__free(rid);

    ask(c, ch, 50); /* timed out; the late answer must not complete it again */
    rid = read_request(c, ch);
    usleep(200 * 1000);
    answer(c, ch, rid, false);
    answer(c, ch, rid, false);
    ps__free(rid);

    ask(c, ch, 0); /* pending when the client vanishes: closed */
    ps__free(read_request(c, ch));
    ask(c, ch, 60000); /* pending with a timeout: closed, and its timer must not fire later */
    ps__free(read_request(c, ch));

    ch_event(c, ch, "race", "sync");
    json_decref(read_response(c, "sync", &err));
    ASSERT_EQ(st.req_ok, 1);
    ASSERT_EQ(st.req_remote, 1);
    ASSERT_EQ(st.req_timeout, 1);
    ASSERT_EQ(st.req_closed, 0);
    ps__free(ch);
    tc_close(c, true); /* vanish: RST, no close handshake */
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(channel_requests_exactly_once)
{
    memset(&st, 0, sizeof st);
    ps_server_opts o = {0};
    ts_run(&o, setup_app, client_requests, NULL);
    ASSERT_EQ(st.req_ok, 1);
    ASSERT_EQ(st.req_remote, 1);
    ASSERT_EQ(st.req_timeout, 1);
    ASSERT_EQ(st.req_closed, 2);
    ASSERT_EQ(st.req_twice, 0);
    ASSERT_EQ(st.disposed, 1);
    ASSERT_EQ(st.data_freed, 1);
    return 0;
}

/* ---- connect middleware and the handshake ---------------------------------------------- */

static int check_handshake(ps_session *s, const ps_handshake *hs, void *user)
{
    st.connect_seen++;
    json_t *auth = ps_handshake_auth(hs);
    ASSERT(json_is_object(auth));
    const char *who = ps_handshake_query(hs, "who");
    const char *cookie = ps_handshake_cookie(hs, "session");
    ASSERT_STR_EQ(ps_handshake_address(hs), "127.0.0.1");
    if (json_is_true(json_object_get(auth, "deny")))
        return ps_session_deny(s, "not you", json_object_get(auth, "deny"));
    ASSERT_STR_EQ(who, "a b");
    ASSERT_STR_EQ(cookie, "xyz");
    ASSERT_STR_EQ(ps_handshake_header(hs, "x-custom"), "yes");
    ASSERT_NULL(ps_handshake_query(hs, "missing"));
    ASSERT_NULL(ps_handshake_cookie(hs, "missing"));
    ps_session_set_data(s, ps__strdup("data"), ps__free);
    return 0;
}

static int second_mw(ps_session *s, const ps_handshake *hs, void *user)
{
    /* Runs only after the first accepted, and sees its data. */
    ASSERT_STR_EQ(ps_session_data(s), "data");
    return 0;
}

static void setup_mw(ts *t)
{
    setup_app(t);
    ASSERT_EQ(ps_use_connect(t->srv, check_handshake, NULL), 0);
    ASSERT_EQ(ps_use_connect(t->srv, second_mw, NULL), 0);
}

static tc *connect_with(ts *t, const char *connect_packet)
{
    tc *c = tc_connect(t->port);
    /* Hand-made upgrade: the harness's handshake sends no cookie or custom header. */
    uint8_t raw[16];
    char key[25];
    ps__random_bytes(raw, sizeof raw);
    ps__base64_encode(raw, sizeof raw, key);
    ps__buf req;
    ps__buf_init(&req);
    ps__buf_printf(&req,
                   "GET /socket.io/?who=a+b&EIO=4&transport=websocket HTTP/1.1\r\n"
                   "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "Cookie: theme=dark; session=xyz\r\nX-Custom: yes\r\n\r\n",
                   key);
    tc_send(c, req.base, req.len);
    ps__buf_free(&req);
    tresp r;
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 101);
    tresp_free(&r);
    ps__free(tc_ws_read_text(c)); /* open packet */
    tc_ws_text(c, connect_packet);
    return c;
}

static void client_mw(ts *t)
{
    tc *c = connect_with(t, "40{\"deny\":true}");
    char *text = tc_ws_read_text(c);
    ASSERT_STR_EQ(text, "44{\"message\":\"not you\",\"data\":true}");
    ps__free(text);
    tc_free(c);

    c = connect_with(t, "40");
    text = tc_ws_read_text(c);
    ASSERT_EQ(strncmp(text, "40{\"sid\":", 9), 0);
    ps__free(text);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(session_connect_middleware)
{
    memset(&st, 0, sizeof st);
    ps_server_opts o = {0};
    ts_run(&o, setup_mw, client_mw, NULL);
    ASSERT_EQ(st.connect_seen, 2);
    return 0;
}

/* ---- the raw-payload API (ps_on_raw, ps_reply_raw, ps_emit_raw) ------------------------- */

static struct {
    char text[256];    /* the payload text the raw listener of "both" saw */
    int tree_calls;    /* the json_t listener of "both" */
    int tree_is_array; /* and whether its payload was the array sent */
    int bad_rc, keep_rc;
    ps_reply *kept;
} raw;

static void raw_echo(ps_channel *ch, const char *event, const char *payload, size_t len,
                     ps_reply *reply, void *user)
{
    if (reply)
        ASSERT_EQ(ps_reply_raw(reply, payload, len), 0);
    else
        ASSERT_EQ(ps_emit_raw(ch, "echo", payload, len), 0);
}

static void raw_both(ps_channel *ch, const char *event, const char *payload, size_t len,
                     ps_reply *reply, void *user)
{
    ASSERT(len < sizeof raw.text);
    memcpy(raw.text, payload, len);
    raw.text[len] = '\0';
}

static void tree_both(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                      void *user)
{
    raw.tree_calls++;
    raw.tree_is_array = json_is_array(payload) && json_array_size(payload) == 2;
    ps_reply_ok(reply, payload);
}

static void raw_bad(ps_channel *ch, const char *event, const char *payload, size_t len,
                    ps_reply *reply, void *user)
{
    raw.bad_rc = ps_reply_raw(reply, "{\"unclosed\":", 12); /* not sent, still owed */
    ASSERT_EQ(ps_emit_raw(ch, "x", "nul", 3), PS_EINVAL);
    ASSERT_EQ(ps_emit_raw(ch, "x", "\"\xc3\x28\"", 4), PS_EINVAL); /* invalid UTF-8 */
    ASSERT_EQ(ps_reply_raw(reply, "{\"ok\" : [1, 2.5e3, \"\\u00e9\"]}", 29), 0);
}

static void raw_keep(ps_channel *ch, const char *event, const char *payload, size_t len,
                     ps_reply *reply, void *user)
{
    raw.kept = ps_reply_keep(reply); /* moves the reply state off the dispatcher's stack */
}

static void raw_late(ps_channel *ch, const char *event, const char *payload, size_t len,
                     ps_reply *reply, void *user)
{
    raw.keep_rc = ps_reply_raw(raw.kept, "\"late\"", 6);
    raw.kept = NULL;
}

static int raw_init(ps_view *view, json_t *props, void *user)
{
    ps_channel *ch = ps_channel_open(view);
    ASSERT_NOT_NULL(ps_on_raw(ch, "echo", raw_echo, NULL));
    ASSERT_NOT_NULL(ps_on_raw(ch, "both", raw_both, NULL));
    ASSERT_NOT_NULL(ps_on(ch, "both", tree_both, NULL));
    ASSERT_NOT_NULL(ps_on_raw(ch, "bad", raw_bad, NULL));
    ASSERT_NOT_NULL(ps_on_raw(ch, "keep", raw_keep, NULL));
    ASSERT_NOT_NULL(ps_on_raw(ch, "late", raw_late, NULL));
    ASSERT(ps_on_raw(ch, "", raw_echo, NULL) == NULL);
    ASSERT(ps_on_raw(ch, "x", NULL, NULL) == NULL);
    json_t *p = json_pack("{s:s}", "channelId", ps_channel_id(ch));
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void setup_raw(ts *t)
{
    ps_view_type type = {.init = raw_init};
    ASSERT_EQ(ps_route(t->srv, "/raw", &type), 0);
}

/* Sends the envelope text as written (spacing, key order and escapes are the client's). */
static void send_text(tc *c, const char *envelope)
{
    ps__buf pkt;
    ps__buf_init(&pkt);
    ps__buf_printf(&pkt, "42[\"message\",%s]", envelope);
    tc_ws_text(c, pkt.base);
    ps__buf_free(&pkt);
}

static void client_raw(ts *t)
{
    tc *c = tc_sio_connect(t);
    char *ch = attach(c, "/raw", "r1");
    char *err;
    ps__buf b;
    ps__buf_init(&b);

    /* A request's payload comes back byte for byte, spaces and escapes included. */
    ps__buf_printf(&b,
                   "{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"echo\","
                   "\"requestId\":\"r\",\"payload\": {\"a\" : [1, 2e3], \"s\":\"\\u00e9\\n\"} }",
                   ch);
    send_text(c, b.base);
    char *text = tc_ws_read_text(c);
    ASSERT(strstr(text, "\"responseTo\":\"r\",\"payload\":{\"a\" : [1, 2e3], "
                        "\"s\":\"\\u00e9\\n\"}}") != NULL);
    ps__free(text);

    /* An event comes back as an event; escaped keys and a duplicate (the last wins) are read
     * as the tree path reads them; no payload is null. */
    ps__buf_reset(&b);
    ps__buf_printf(&b,
                   "{\"type\":\"channel_message\",\"chan\\u006eel\":\"%s\",\"event\":\"nope\","
                   "\"event\":\"echo\",\"payload\":7}",
                   ch);
    send_text(c, b.base);
    json_t *m = read_msg(c);
    ASSERT_STR_EQ(str(m, "event"), "echo");
    ASSERT_EQ(json_integer_value(json_object_get(m, "payload")), 7);
    json_decref(m);
    ps__buf_reset(&b);
    ps__buf_printf(&b,
                   "{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"echo\","
                   "\"requestId\":\"n\"}",
                   ch);
    send_text(c, b.base);
    json_t *p = read_response(c, "n", &err);
    ASSERT(json_is_null(p));
    json_decref(p);

    /* A raw and a json_t listener on one event: each gets the payload its way. */
    ps__buf_reset(&b);
    ps__buf_printf(&b,
                   "{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"both\","
                   "\"requestId\":\"b\",\"payload\":[true, null]}",
                   ch);
    send_text(c, b.base);
    p = read_response(c, "b", &err);
    ASSERT(json_is_array(p));
    json_decref(p);
    ASSERT_STR_EQ(raw.text, "[true, null]");
    ASSERT_EQ(raw.tree_calls, 1);
    ASSERT_EQ(raw.tree_is_array, 1);

    /* Invalid JSON is refused and the request stays owed; the next answer is sent. */
    ch_event(c, ch, "bad", "x");
    p = read_response(c, "x", &err);
    ASSERT_EQ(raw.bad_rc, PS_EINVAL);
    ASSERT_EQ(json_array_size(json_object_get(p, "ok")), 3);
    json_decref(p);

    /* A kept raw reply answered from another handler. */
    ch_event(c, ch, "keep", "k");
    ch_event(c, ch, "late", NULL);
    p = read_response(c, "k", &err);
    ASSERT_STR_EQ(json_string_value(p), "late");
    ASSERT_EQ(raw.keep_rc, 0);
    json_decref(p);

    /* What the hot path leaves to the tree path is still answered as before. */
    ps__buf_reset(&b);
    ps__buf_printf(&b,
                   "{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"echo\","
                   "\"requestId\":\"e\",\"error\":5}",
                   ch);
    send_text(c, b.base);
    p = read_response(c, "e", &err);
    ASSERT(p == NULL);
    ASSERT_STR_EQ(err, "Invalid message: error must be a string");
    ps__free(err);

    ps__buf_free(&b);
    ps__free(ch);
    tc_close(c, false);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(channel_raw_api)
{
    memset(&raw, 0, sizeof raw);
    ps_server_opts o = {0};
    ts_run(&o, setup_raw, client_raw, NULL);
    return 0;
}

/* ---- what a view and a session keep: props as a copy, auth made again when empty --------- */

static struct {
    int inits, set_again, auth_empty, auth_kept;
} kept;

static void props_event(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                        void *user)
{
    ps_view *view = ps_channel_view(ch);
    /* After the connect hooks: an empty auth is made again when asked for, a sent one kept. */
    json_t *auth = ps_handshake_auth(ps_session_handshake(ps_view_session(view)));
    ASSERT(json_is_object(auth));
    if (json_object_size(auth) == 0)
        kept.auth_empty++;
    else if (json_integer_value(json_object_get(auth, "k")) == 7)
        kept.auth_kept++;
    ASSERT(ps_handshake_auth(ps_session_handshake(ps_view_session(view))) == auth);
    json_t *props = ps_view_props(view);
    ASSERT_EQ(json_integer_value(json_object_get(props, "n")), 1);
    ASSERT(ps_view_props(view) == props); /* decoded once, then kept */
    json_t *p = json_pack("{s:i}", "n", 2);
    ASSERT_EQ(ps_view_set_props(view, p), 0);
    json_decref(p);
    ASSERT_EQ(json_integer_value(json_object_get(ps_view_props(view), "n")), 2);
    kept.set_again++;
    ps_reply_ok(reply, NULL);
}

static int props_init(ps_view *view, json_t *props, void *user)
{
    kept.inits++;
    ASSERT(json_is_null(ps_view_props(view)));
    ps_channel *ch = ps_channel_open(view);
    ps_on(ch, "again", props_event, NULL);
    /* A copy: what the app changes afterwards is not what the view has. */
    json_t *p =
        json_pack("{s:s,s:i,s:s#}", "channelId", ps_channel_id(ch), "n", 1, "nul", "a\0b", (int)3);
    ASSERT_EQ(ps_view_set_props(view, p), 0);
    json_object_set_new(p, "n", json_integer(99));
    json_decref(p);
    return 0;
}

static void setup_props(ts *t)
{
    ps_view_type type = {.init = props_init};
    ASSERT_EQ(ps_route(t->srv, "/props", &type), 0);
}

static void props_round(tc *c)
{
    send_msg(c, json_pack("{s:s,s:s,s:s}", "type", "attach", "path", "/props", "attachId", "p1"));
    json_t *ack = read_msg(c);
    ASSERT_STR_EQ(str(ack, "type"), "attach_ack");
    json_t *props = json_object_get(ack, "props");
    ASSERT_EQ(json_integer_value(json_object_get(props, "n")), 1);
    ASSERT_EQ(json_string_length(json_object_get(props, "nul")), 3);
    ASSERT_EQ(memcmp(json_string_value(json_object_get(props, "nul")), "a\0b", 3), 0);
    char *ch = ps__strdup(str(props, "channelId"));
    json_decref(ack);
    ch_event(c, ch, "again", "r1");
    json_t *m = read_msg(c);
    ASSERT_STR_EQ(str(m, "type"), "view_props");
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(m, "props"), "n")), 2);
    json_decref(m);
    char *err = NULL;
    json_t *r = read_response(c, "r1", &err);
    ASSERT_NULL(err);
    json_decref(r);
    ps__free(ch);
}

static void client_props(ts *t)
{
    tc *c = tc_sio_connect(t);
    props_round(c);
    tc_free(c);
    c = connect_with(t, "40{\"k\":7}");
    char *text = tc_ws_read_text(c);
    ASSERT_EQ(strncmp(text, "40{\"sid\":", 9), 0);
    ps__free(text);
    props_round(c);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(view_props_and_auth_kept)
{
    memset(&kept, 0, sizeof kept);
    ps_server_opts o = {0};
    ts_run(&o, setup_props, client_props, NULL);
    ASSERT_EQ(kept.inits, 2);
    ASSERT_EQ(kept.set_again, 2);
    ASSERT_EQ(kept.auth_empty, 1);
    ASSERT_EQ(kept.auth_kept, 1);
    return 0;
}
