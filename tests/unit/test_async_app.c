/*
 * test_async_app: the calls an asynchronous app needs (the Python binding is one): a view
 * whose attach is answered after init returned (ps_view_defer, ps_view_accept, a late
 * ps_view_reject, and the view going away while deferred), a request abandoned by the server
 * (ps_request_cancel), and handshakes read whole (ps_handshake_header_at, _query_string,
 * _cookies). Real server, raw Socket.IO frames from the client thread (client.h); the late
 * answers are given on the loop thread through ts_on_loop, outside any pulsec callback, as an
 * event loop of the app's own would.
 */
#include "client.h"

#include <stdatomic.h>

/* ---- client side ----------------------------------------------------------------------- */

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

static json_t *read_msg(tc *c)
{
    for (;;) {
        char *text = tc_ws_read_text(c);
        if (strcmp(text, "2") == 0) {
            tc_ws_text(c, "3");
        } else if (strncmp(text, "42[\"message\",", 13) == 0) {
            json_t *arr = json_loads(text + 2, 0, NULL);
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

static void send_attach(tc *c, const char *path, const char *aid)
{
    send_msg(c, json_pack("{s:s,s:s,s:s,s:n}", "type", "attach", "path", path, "attachId", aid,
                          "props"));
}

static void ch_event(tc *c, const char *ch, const char *event, const char *rid)
{
    json_t *m = json_pack("{s:s,s:s,s:s,s:n}", "type", "channel_message", "channel", ch, "event",
                          event, "payload");
    if (rid)
        json_object_set_new(m, "requestId", json_string(rid));
    send_msg(c, m);
}

/* ---- server side ----------------------------------------------------------------------- */

enum { NSLOTS = 4 };

/* One deferred view, as the app keeps it until it answers. */
typedef struct slot {
    ps_view *view; /* NULL once its data destructor ran */
    ps_channel *ch;
} slot;

static struct {
    slot slots[NSLOTS];
    int nslots;
    atomic_int disposed, freed;
    atomic_int accept_plain_rc, defer_plain_rc;
    atomic_int completions, cancelled, second_cancel_rc, inside_cancel;
    atomic_int headers_seen, enumerated_ok;
    atomic_int rc; /* whatever the last ts_on_loop call returned */
} st;

static void slot_free(void *data)
{
    slot *s = data;
    s->view = NULL;
    st.freed++;
}

static int later_init(ps_view *view, json_t *props, void *user)
{
    ASSERT(st.nslots < NSLOTS);
    slot *s = &st.slots[st.nslots++];
    s->view = view;
    s->ch = ps_channel_open(view);
    ASSERT_NOT_NULL(s->ch);
    ps_view_set_data(view, s, slot_free);
    ASSERT_EQ(ps_view_accept(view), PS_EINVAL); /* not deferred */
    ASSERT_EQ(ps_view_defer(view), 0);
    ASSERT_EQ(ps_view_defer(view), 0);          /* harmless: still one answer owed */
    ASSERT_EQ(ps_view_accept(view), PS_EINVAL); /* init is still running */
    return 0;
}

static void later_dispose(ps_view *view, void *user)
{
    st.disposed++;
}

static void on_response(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    st.completions++;
    if (status == PS_ECANCELED)
        st.cancelled++;
}

static int token; /* the `user` of the server's request */

static void on_event(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                     void *user)
{
    if (strcmp(event, "ask") == 0) {
        ASSERT_EQ(ps_request(ch, "q", NULL, 0, on_response, &token), 0);
    } else if (strcmp(event, "cancel") == 0) {
        int before = st.completions;
        ASSERT_EQ(ps_request_cancel(ch, on_response, &token), 0);
        st.inside_cancel = st.completions - before; /* the callback ran inside the call */
        st.second_cancel_rc = ps_request_cancel(ch, on_response, &token);
        ASSERT_EQ(ps_request_cancel(ch, NULL, &token), PS_EINVAL);
    }
}

static int now_init(ps_view *view, json_t *props, void *user)
{
    ps_channel *ch = ps_channel_open(view);
    ps_on(ch, "*", on_event, NULL);
    json_t *p = json_pack("{s:s}", "channelId", ps_channel_id(ch));
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void setup(ts *t)
{
    ps_view_type later = {.init = later_init, .dispose = later_dispose};
    ps_view_type now = {.init = now_init};
    ASSERT_EQ(ps_route(t->srv, "/later", &later), 0);
    ASSERT_EQ(ps_route(t->srv, "/now", &now), 0);
}

/* ---- deferred attach ------------------------------------------------------------------- */

static void accept_slot0(ts *t)
{
    slot *s = &st.slots[0];
    json_t *p = json_pack("{s:s,s:b}", "channelId", ps_channel_id(s->ch), "late", 1);
    ASSERT_EQ(ps_view_set_props(s->view, p), 0);
    json_decref(p);
    st.rc = ps_view_accept(s->view);
    st.accept_plain_rc = ps_view_accept(s->view); /* attached now: nothing to accept */
    st.defer_plain_rc = ps_view_defer(s->view);   /* outside init */
}

static void reject_slot1(ts *t)
{
    st.rc = ps_view_reject(st.slots[1].view, "not today");
}

static void client_deferred(ts *t)
{
    tc *c = tc_sio_connect(t);

    /* Deferred, then accepted from the loop: the ack carries the props set meanwhile. */
    send_attach(c, "/later", "a");
    send_attach(c, "/now", "sync"); /* a round trip: "a" has been through init by now */
    json_t *m = read_msg(c);
    ASSERT_STR_EQ(str(m, "type"), "attach_ack"); /* "a" sent nothing yet */
    ASSERT_STR_EQ(str(m, "attachId"), "sync");
    json_decref(m);
    ts_on_loop(t, accept_slot0);
    ASSERT_EQ(st.rc, 0);
    m = read_msg(c);
    ASSERT_STR_EQ(str(m, "type"), "attach_ack");
    ASSERT_STR_EQ(str(m, "attachId"), "a");
    json_t *props = json_object_get(m, "props");
    ASSERT_STR_EQ(str(props, "channelId"), ps_channel_id(st.slots[0].ch));
    ASSERT(json_is_true(json_object_get(props, "late")));
    json_decref(m);
    ASSERT_EQ(st.accept_plain_rc, PS_EINVAL);
    ASSERT_EQ(st.defer_plain_rc, PS_EINVAL);

    /* Deferred, then rejected from the loop: attach_error, the channel's __close__ first. */
    send_attach(c, "/later", "b");
    send_attach(c, "/now", "sync2");
    json_decref(read_msg(c));
    ts_on_loop(t, reject_slot1);
    ASSERT_EQ(st.rc, PS_EDENIED);
    m = read_msg(c);
    ASSERT_STR_EQ(str(m, "type"), "attach_error");
    ASSERT_STR_EQ(str(m, "attachId"), "b");
    ASSERT_STR_EQ(str(m, "error"), "not today");
    json_decref(m);
    m = read_msg(c);
    ASSERT_STR_EQ(str(m, "event"), "__close__");
    json_decref(m);
    ASSERT_NULL(st.slots[1].view); /* its data destructor ran */
    ASSERT_EQ(st.freed, 1);

    /* Detached while deferred: the data destructor says so, dispose never runs. */
    send_attach(c, "/later", "c");
    send_msg(c, json_pack("{s:s,s:s}", "type", "detach", "attachId", "c"));
    send_attach(c, "/now", "sync3");
    for (;;) { /* the deferred view's channel closes: __close__, then the ack */
        m = read_msg(c);
        bool ack = strcmp(str(m, "type"), "attach_ack") == 0;
        json_decref(m);
        if (ack)
            break;
    }
    ASSERT_NULL(st.slots[2].view);
    ASSERT_EQ(st.freed, 2);

    /* Deferred when the client vanishes: the same, at the session's end. */
    send_attach(c, "/later", "d");
    send_attach(c, "/now", "sync4");
    json_decref(read_msg(c));
    ASSERT_NOT_NULL(st.slots[3].view);
    tc_close(c, true);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(view_deferred_attach)
{
    memset(&st, 0, sizeof st);
    ps_server_opts o = {0};
    ts_run(&o, setup, client_deferred, NULL);
    ASSERT_EQ(st.nslots, 4);
    ASSERT_NULL(st.slots[3].view);
    ASSERT_EQ(st.freed, 4);
    ASSERT_EQ(st.disposed, 1); /* only "a" ever attached */
    return 0;
}

/* ---- request cancel -------------------------------------------------------------------- */

static void cancel_missing(ts *t)
{
    st.rc = ps_request_cancel(NULL, on_response, &token);
}

static void client_cancel(ts *t)
{
    tc *c = tc_sio_connect(t);
    send_attach(c, "/now", "v");
    json_t *m = read_msg(c);
    char *ch = ps__strdup(str(json_object_get(m, "props"), "channelId"));
    json_decref(m);

    ch_event(c, ch, "ask", NULL);
    m = read_msg(c);
    ASSERT_STR_EQ(str(m, "event"), "q");
    char *rid = ps__strdup(str(m, "requestId"));
    json_decref(m);
    ch_event(c, ch, "cancel", NULL);
    /* The late answer to the cancelled request is dropped, never a second completion. */
    send_msg(c, json_pack("{s:s,s:s,s:s,s:b}", "type", "channel_message", "channel", ch,
                          "responseTo", rid, "payload", 1));
    ch_event(c, ch, "sync", "r1"); /* a round trip: everything above was handled */
    m = read_msg(c);
    ASSERT_STR_EQ(str(m, "responseTo"), "r1");
    json_decref(m);
    ps_server_stats stats;
    ts_stats(t, &stats);
    ASSERT_EQ(stats.messages_dropped, 1);
    ts_on_loop(t, cancel_missing);
    ASSERT_EQ(st.rc, PS_EINVAL);
    ps__free(rid);
    ps__free(ch);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(channel_request_cancel)
{
    memset(&st, 0, sizeof st);
    ps_server_opts o = {0};
    ts_run(&o, setup, client_cancel, NULL);
    ASSERT_EQ(st.completions, 1);
    ASSERT_EQ(st.cancelled, 1);
    ASSERT_EQ(st.inside_cancel, 1);
    ASSERT_EQ(st.second_cancel_rc, PS_ENOTFOUND);
    return 0;
}

/* ---- whole handshakes ------------------------------------------------------------------ */

static int read_handshake(ps_session *s, const ps_handshake *hs, void *user)
{
    const char *name, *value;
    size_t n = 0;
    bool custom = false, host_first = false;
    while (ps_handshake_header_at(hs, n, &name, &value)) {
        if (n == 0)
            host_first = strcmp(name, "Host") == 0 && strcmp(value, "127.0.0.1") == 0;
        if (strcmp(name, "X-Custom") == 0 && strcmp(value, "yes") == 0)
            custom = true;
        n++;
    }
    name = value = "untouched";
    ASSERT(!ps_handshake_header_at(hs, n, &name, &value));
    ASSERT_STR_EQ(name, "untouched");
    st.headers_seen = (int)n;
    ASSERT_STR_EQ(ps_handshake_query_string(hs), "who=a+b&n=%31&EIO=4&transport=websocket");
    json_t *cookies = ps_handshake_cookies(hs);
    ASSERT_EQ(json_object_size(cookies), 2);
    ASSERT_STR_EQ(json_string_value(json_object_get(cookies, "theme")), "dark");
    ASSERT_STR_EQ(json_string_value(json_object_get(cookies, "session")), "xyz");
    /* The same parse as the lookup by name. */
    ASSERT_EQ(ps_handshake_cookie(hs, "session"),
              json_string_value(json_object_get(cookies, "session")));
    if (custom && host_first)
        st.enumerated_ok = 1;
    return 0;
}

static void setup_handshake(ts *t)
{
    ASSERT_EQ(ps_use_connect(t->srv, read_handshake, NULL), 0);
}

static void client_handshake(ts *t)
{
    tc *c = tc_connect(t->port);
    uint8_t raw[16];
    char key[25];
    ps__random_bytes(raw, sizeof raw);
    ps__base64_encode(raw, sizeof raw, key);
    ps__buf req;
    ps__buf_init(&req);
    ps__buf_printf(&req,
                   "GET /socket.io/?who=a+b&n=%%31&EIO=4&transport=websocket HTTP/1.1\r\n"
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
    tc_ws_text(c, "40");
    char *text = tc_ws_read_text(c);
    ASSERT_EQ(strncmp(text, "40{\"sid\":", 9), 0);
    ps__free(text);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(session_handshake_whole)
{
    memset(&st, 0, sizeof st);
    ps_server_opts o = {0};
    ts_run(&o, setup_handshake, client_handshake, NULL);
    ASSERT_EQ(st.headers_seen, 7);
    ASSERT_EQ(st.enumerated_ok, 1);
    return 0;
}
