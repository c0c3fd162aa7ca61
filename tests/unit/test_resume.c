/*
 * test_resume: connection state recovery on the wire (DESIGN §6), raw Socket.IO frames against
 * a real server: the pid in the CONNECT reply and the offset on every EVENT without an ack id;
 * a dropped transport detaching the session (hooks: transport_lost, not disconnect); a CONNECT
 * with pid and offset replaying what was missed (text and binary, what was sent while detached
 * included) before the CONNECT reply with the same sid and pid; the recovery keys kept from the
 * app's auth; a pong letting the server forget what the client has; and every refusal: unknown
 * pid, another namespace, an offset never sent or no longer kept, the window over, the replay
 * bound, the bound on detached sessions, and a pid offered while its session is alive (the old
 * connection answers the probe: nothing restored) or dead without a FIN (taken over).
 */
#include "client.h"

#include <stdatomic.h>

typedef struct app {
    atomic_int connects, disconnects, lost, resumed;
    atomic_int auth_had_recovery_keys; /* the app must never see pid/offset */
    char last_reason[64];
    ps_session *last; /* the last session accepted (loop thread only) */
    atomic_int rc;    /* what the last ts_on_loop action returned */
} app;

static void on_event(ps_session *s, const char *event, json_t *args, ps_ack *ack, void *user)
{
    if (strcmp(event, "echo") == 0)
        ps_session_emit(s, "echo", args);
}

static int on_connect(ps_session *s, const ps_handshake *hs, void *user)
{
    app *a = user;
    json_t *auth = ps_handshake_auth(hs);
    if (json_object_get(auth, "pid") || json_object_get(auth, "offset"))
        a->auth_had_recovery_keys++;
    a->connects++;
    a->last = s;
    ps_session_set_data(s, a, NULL);
    return 0;
}

static void on_disconnect(ps_session *s, const char *reason, void *user)
{
    app *a = user;
    snprintf(a->last_reason, sizeof a->last_reason, "%s", reason);
    a->disconnects++;
}

static void on_lost(ps_session *s, const char *reason, void *user)
{
    app *a = user;
    ASSERT(ps_session_detached(s));
    ASSERT(strcmp(reason, "transport close") == 0 || strcmp(reason, "ping timeout") == 0);
    /* The handshake outlives the Engine.IO session it came with. */
    ASSERT_STR_EQ(ps_handshake_address(ps_session_handshake(s)), "127.0.0.1");
    a->lost++;
}

static void on_resumed(ps_session *s, void *user)
{
    app *a = user;
    ASSERT(!ps_session_detached(s));
    a->resumed++;
}

static void setup(ts *t)
{
    ps_namespace_hooks hooks = {.connect = on_connect,
                                .event = on_event,
                                .disconnect = on_disconnect,
                                .user = t->user,
                                .transport_lost = on_lost,
                                .resumed = on_resumed};
    ASSERT_EQ(ps_namespace(t->srv, "/", &hooks), 0);
    ASSERT_EQ(ps_namespace(t->srv, "/admin", &hooks), 0);
}

/* ---- client side ----------------------------------------------------------------------- */

/* The next text frame, answering pings on the way. */
static char *next_text(tc *c)
{
    for (;;) {
        char *text = tc_ws_read_text(c);
        if (strcmp(text, "2") != 0)
            return text;
        tc_ws_text(c, "3");
        ps__free(text);
    }
}

static void expect_text(tc *c, const char *want)
{
    char *got = next_text(c);
    ASSERT_STR_EQ(got, want);
    ps__free(got);
}

typedef struct ids {
    char sid[PS__SID_LEN + 1];
    char pid[PS__HEX_ID_LEN + 1];
} ids;

/* Parses a CONNECT reply `prefix{"sid":..,"pid":..}`. */
static void parse_reply(const char *text, const char *prefix, ids *out)
{
    size_t n = strlen(prefix);
    if (strncmp(text, prefix, n) != 0)
        ps_test_fail(__FILE__, __LINE__, "expected a CONNECT reply %s{...}, got %s", prefix, text);
    json_t *o = json_loads(text + n, 0, NULL);
    ASSERT_NOT_NULL(o);
    ASSERT_EQ(json_object_size(o), 2);
    const char *sid = json_string_value(json_object_get(o, "sid"));
    const char *pid = json_string_value(json_object_get(o, "pid"));
    ASSERT_NOT_NULL(sid);
    ASSERT_NOT_NULL(pid);
    ASSERT_EQ(strlen(pid), PS__HEX_ID_LEN);
    for (const char *p = pid; *p; p++)
        ASSERT((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
    snprintf(out->sid, sizeof out->sid, "%s", sid);
    snprintf(out->pid, sizeof out->pid, "%s", pid);
    json_decref(o);
}

/* Engine.IO open, then CONNECT (`connect` is the packet, "40" or "40{...}"); the reply. */
static tc *open_with(ts *t, const char *connect, const char *prefix, ids *out)
{
    char eio[PS__SID_LEN + 1];
    tc *c = tc_eio_open(t, eio);
    tc_ws_text(c, connect);
    if (out) {
        char *reply = next_text(c);
        parse_reply(reply, prefix, out);
        ps__free(reply);
    }
    return c;
}

static tc *open_resume(ts *t, const ids *who, const char *offset)
{
    ps__buf pkt;
    ps__buf_init(&pkt);
    if (offset)
        ps__buf_printf(&pkt, "40{\"pid\":\"%s\",\"offset\":\"%s\",\"token\":1}", who->pid, offset);
    else
        ps__buf_printf(&pkt, "40{\"pid\":\"%s\",\"token\":1}", who->pid);
    tc *c = open_with(t, pkt.base, NULL, NULL);
    ps__buf_free(&pkt);
    return c;
}

/* The server's counters, read on the loop thread, until `pred` holds (5 s at most). */
static void wait_stats(ts *t, bool (*pred)(const ps_server_stats *st), const char *what)
{
    ps_server_stats st;
    for (int i = 0; i < 500; i++) {
        ts_stats(t, &st);
        if (pred(&st))
            return;
        usleep(10000);
    }
    ps_test_fail(__FILE__, __LINE__, "timed out waiting for %s (detached %" PRIu64 ")", what,
                 st.sessions_detached);
}

static bool one_detached(const ps_server_stats *st)
{
    return st->sessions_detached == 1;
}

static bool none_detached(const ps_server_stats *st)
{
    return st->sessions_detached == 0;
}

static void wait_int(atomic_int *v, int want, const char *what)
{
    for (int i = 0; i < 500 && *v != want; i++)
        usleep(10000);
    if (*v != want)
        ps_test_fail(__FILE__, __LINE__, "%s: %d, want %d", what, (int)*v, want);
}

/* ---- loop-side actions ----------------------------------------------------------------- */

static void emit_while_detached(ts *t)
{
    app *a = t->user;
    ASSERT(ps_session_detached(a->last));
    json_t *args = json_pack("[s]", "missed");
    a->rc = ps_session_emit(a->last, "news", args);
    json_decref(args);
    json_t *bin = json_pack("[o]", ps_binary("\x01\x02\x03", 3));
    ps_session_emit(a->last, "bin", bin);
    json_decref(bin);
}

static void emit_many(ts *t)
{
    app *a = t->user;
    char text[200];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    for (int i = 0; i < 50; i++) {
        json_t *args = json_pack("[s]", text);
        ps_session_emit(a->last, "big", args);
        json_decref(args);
    }
}

/* ---- the wire of a recovery ------------------------------------------------------------ */

static void wire_client(ts *t)
{
    app *a = t->user;
    ids first;
    tc *c = open_with(t, "40{\"token\":1}", "40", &first);
    /* Every EVENT without an ack id carries the next offset as its last element. */
    tc_ws_text(c, "42[\"echo\",\"a\"]");
    expect_text(c, "42[\"echo\",\"a\",\"1\"]");
    tc_ws_text(c, "42[\"echo\",{\"b\":2}]");
    expect_text(c, "42[\"echo\",{\"b\":2},\"2\"]");
    tc_ws_text(c, "42[\"echo\",\"c\"]");
    expect_text(c, "42[\"echo\",\"c\",\"3\"]");

    /* The transport drops without a close handshake: the session waits, no disconnect. */
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "the session to detach");
    ASSERT_EQ(a->lost, 1);
    ASSERT_EQ(a->disconnects, 0);
    ps_server_stats st;
    ts_stats(t, &st);
    ASSERT_EQ(st.sessions, 1);
    /* What the server sends meanwhile is kept (binary too). */
    ts_on_loop(t, emit_while_detached);
    ASSERT_EQ(a->rc, 0);

    /* Back with the last offset seen: the rest, in order, then the same sid and pid. */
    c = open_resume(t, &first, "1");
    expect_text(c, "42[\"echo\",{\"b\":2},\"2\"]");
    expect_text(c, "42[\"echo\",\"c\",\"3\"]");
    expect_text(c, "42[\"news\",\"missed\",\"4\"]");
    expect_text(c, "451-[\"bin\",{\"_placeholder\":true,\"num\":0},\"5\"]");
    tframe f;
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_BINARY);
    ASSERT_MEM_EQ(f.payload.base, f.payload.len, "\x01\x02\x03", 3);
    tframe_free(&f);
    char *reply = next_text(c);
    ids again;
    parse_reply(reply, "40", &again);
    ps__free(reply);
    ASSERT_STR_EQ(again.sid, first.sid);
    ASSERT_STR_EQ(again.pid, first.pid);
    wait_int(&a->resumed, 1, "resumed hook");
    ASSERT_EQ(a->connects, 1); /* the middleware and connect hook do not run again */
    ASSERT_EQ(a->auth_had_recovery_keys, 0);
    ts_stats(t, &st);
    ASSERT_EQ(st.sessions_resumed, 1);
    ASSERT_EQ(st.sessions_detached, 0);
    ASSERT_EQ(st.sessions_total, 1);
    /* Offsets go on. */
    tc_ws_text(c, "42[\"echo\",\"d\"]");
    expect_text(c, "42[\"echo\",\"d\",\"6\"]");

    /* A second drop, back with the last offset: nothing to replay. */
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "the second detach");
    c = open_resume(t, &first, "6");
    reply = next_text(c);
    parse_reply(reply, "40", &again);
    ps__free(reply);
    ASSERT_STR_EQ(again.sid, first.sid);

    /* The client's own DISCONNECT ends the session at once: no waiting for it. */
    tc_ws_text(c, "41");
    wait_int(&a->disconnects, 1, "disconnect hook");
    ASSERT_STR_EQ(a->last_reason, "client namespace disconnect");
    ASSERT_EQ(a->lost, 2);
    tc_free(c);
    wait_stats(t, none_detached, "nothing detached");
    ts_stats(t, &st);
    ASSERT_EQ(st.sessions, 0);

    /* A drop before any event: back with no offset at all. */
    ids third;
    c = open_with(t, "40", "40", &third);
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "the third detach");
    c = open_resume(t, &third, NULL);
    reply = next_text(c);
    parse_reply(reply, "40", &again);
    ps__free(reply);
    ASSERT_STR_EQ(again.sid, third.sid);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(resume_wire)
{
    app a = {0};
    ps_server_opts o = {.shutdown_grace_ms = 300};
    ts_run(&o, setup, wire_client, &a);
    /* The second session was detached when the server stopped: it ended then. */
    ASSERT_EQ(a.disconnects, 2);
    ASSERT_EQ(a.auth_had_recovery_keys, 0);
    return 0;
}

/* ---- refusals ---------------------------------------------------------------------------- */

static void refused_client(ts *t)
{
    app *a = t->user;
    ps_server_stats st;
    ids s1;
    tc *c = open_with(t, "40", "40", &s1);
    tc_ws_text(c, "42[\"echo\",1]");
    expect_text(c, "42[\"echo\",1,\"1\"]");
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "detach");

    /* A forged pid restores nothing: a fresh session, the app's auth without the keys. */
    ids forged = s1, got;
    memcpy(forged.pid, "0123456789abcdef0123456789abcdef", PS__HEX_ID_LEN);
    c = open_resume(t, &forged, "1");
    char *reply = next_text(c);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT(strcmp(got.sid, s1.sid) != 0);
    ASSERT(strcmp(got.pid, s1.pid) != 0);
    ASSERT_EQ(a->connects, 2);
    ASSERT_EQ(a->auth_had_recovery_keys, 0);
    tc_ws_text(c, "41");
    tc_free(c);
    /* Malformed keys are no better. */
    c = open_with(t, "40{\"pid\":42,\"offset\":[1]}", "40", &got);
    ASSERT(strcmp(got.sid, s1.sid) != 0);
    tc_ws_text(c, "41");
    tc_free(c);

    /* The right pid on another namespace restores nothing, and disturbs nothing. */
    ps__buf pkt;
    ps__buf_init(&pkt);
    ps__buf_printf(&pkt, "40/admin,{\"pid\":\"%s\",\"offset\":\"1\"}", s1.pid);
    c = open_with(t, pkt.base, "40/admin,", &got);
    ASSERT(strcmp(got.pid, s1.pid) != 0);
    tc_ws_text(c, "41/admin,");
    tc_free(c);
    ts_stats(t, &st);
    ASSERT_EQ(st.sessions_detached, 1);
    ASSERT_EQ(st.resume_failed, 3);

    /* An offset it never sent: fresh, and the session (which can never be served) ends. */
    c = open_resume(t, &s1, "7");
    reply = next_text(c);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT(strcmp(got.sid, s1.sid) != 0);
    wait_stats(t, none_detached, "the session with a bad offset to end");
    tc_ws_text(c, "41");
    tc_free(c);

    /* The pid of a session that ended restores nothing either (a replayed pid). */
    c = open_resume(t, &s1, "1");
    reply = next_text(c);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT(strcmp(got.sid, s1.sid) != 0);
    tc_ws_text(c, "41");
    tc_free(c);

    /* An offset no longer kept: the client had confirmed it (a pong after it), or said so. */
    ids s2;
    c = open_with(t, "40", "40", &s2);
    tc_ws_text(c, "42[\"echo\",2]");
    expect_text(c, "42[\"echo\",2,\"1\"]");
    /* The next ping's pong: the server may forget event 1. */
    char *ping = tc_ws_read_text(c);
    ASSERT_STR_EQ(ping, "2");
    ps__free(ping);
    tc_ws_text(c, "3");
    tc_ws_text(c, "42[\"echo\",3]"); /* in order behind the pong: it was read */
    expect_text(c, "42[\"echo\",3,\"2\"]");
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "detach of s2");
    c = open_resume(t, &s2, NULL); /* "from the start": event 1 is gone */
    reply = next_text(c);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT(strcmp(got.sid, s2.sid) != 0);
    wait_stats(t, none_detached, "s2 to end");
    tc_ws_text(c, "41");
    tc_free(c);

    ps__buf_free(&pkt);
    ts_stop(t);
}

TEST_IMPL(resume_refused)
{
    app a = {0};
    ps_server_opts o = {.shutdown_grace_ms = 300, .ping_interval_ms = 300};
    ts_run(&o, setup, refused_client, &a);
    ASSERT_EQ(a.auth_had_recovery_keys, 0);
    return 0;
}

static void expiry_client(ts *t)
{
    app *a = t->user;
    tc *c;
    char *reply;
    ids got;
    /* The window passes: the session ends with the reason its transport went. */
    int before = a->disconnects; /* 0 */
    ids s3;
    c = open_with(t, "40", "40", &s3);
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "detach of s3");
    wait_stats(t, none_detached, "the window to pass");
    wait_int(&a->disconnects, before + 1, "disconnect after the window");
    ASSERT_STR_EQ(a->last_reason, "transport close");
    c = open_resume(t, &s3, NULL);
    reply = next_text(c);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT(strcmp(got.sid, s3.sid) != 0);
    tc_ws_text(c, "41");
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(resume_window_expiry)
{
    app a = {0};
    ps_server_opts o = {.shutdown_grace_ms = 300, .resume_window_ms = 200};
    ts_run(&o, setup, expiry_client, &a);
    ASSERT_EQ(a.disconnects, 2); /* the expired session, then the fresh one */
    return 0;
}

/* ---- bounds ------------------------------------------------------------------------------ */

static bool overflowed(const ps_server_stats *st)
{
    return st->resume_overflow >= 1 && st->sessions_detached == 0;
}

static bool overflowed_twice(const ps_server_stats *st)
{
    return st->resume_overflow >= 2;
}

static void bounds_client(ts *t)
{
    app *a = t->user;
    /* More than max_replay_bytes sent while detached: the session cannot be recovered and
     * ends at once. */
    ids s1, got;
    tc *c = open_with(t, "40", "40", &s1);
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "detach");
    ts_on_loop(t, emit_many);
    wait_stats(t, overflowed, "the replay bound to end the session");
    wait_int(&a->disconnects, 1, "disconnect after the overflow");
    c = open_resume(t, &s1, NULL);
    char *reply = next_text(c);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT(strcmp(got.sid, s1.sid) != 0);
    tc_ws_text(c, "41");
    tc_free(c);

    /* max_detached_sessions = 1: a second session dropping then ends at once. */
    ids s2, s3;
    tc *c2 = open_with(t, "40", "40", &s2);
    tc *c3 = open_with(t, "40", "40", &s3);
    tc_close(c2, true);
    tc_free(c2);
    wait_stats(t, one_detached, "the first drop to wait");
    tc_close(c3, true);
    tc_free(c3);
    wait_stats(t, overflowed_twice, "the second drop to end");
    ps_server_stats st;
    ts_stats(t, &st);
    ASSERT_EQ(st.sessions_detached, 1);
    ts_stop(t);
}

TEST_IMPL(resume_bounds)
{
    app a = {0};
    ps_server_opts o = {
        .shutdown_grace_ms = 300, .max_replay_bytes = 4096, .max_detached_sessions = 1};
    ts_run(&o, setup, bounds_client, &a);
    return 0;
}

/* ---- a pid offered while its session is attached ---------------------------------------- */

static void takeover_client(ts *t)
{
    app *a = t->user;
    ids s1, got;
    tc *alive = open_with(t, "40", "40", &s1);
    tc_ws_text(alive, "42[\"echo\",1]");
    expect_text(alive, "42[\"echo\",1,\"1\"]");

    /* Someone replays the pid while its client is alive: the server probes the old connection,
     * which answers, so the newcomer gets a fresh session and the old one carries on. */
    tc *replayer = open_resume(t, &s1, "1");
    char *ping = tc_ws_read_text(alive);
    ASSERT_STR_EQ(ping, "2");
    ps__free(ping);
    tc_ws_text(alive, "3");
    char *reply = next_text(replayer);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT(strcmp(got.sid, s1.sid) != 0);
    tc_ws_text(alive, "42[\"echo\",2]");
    expect_text(alive, "42[\"echo\",2,\"2\"]");
    tc_ws_text(replayer, "41");
    tc_free(replayer);
    ASSERT_EQ(a->lost, 0);

    /* Now the old connection is dead without the server knowing (no FIN, no answer): the
     * client comes back on a new one, the probe goes unanswered, and the session moves. */
    tc *back = open_resume(t, &s1, "1");
    ping = tc_ws_read_text(alive);
    ASSERT_STR_EQ(ping, "2"); /* the probe, left unanswered */
    ps__free(ping);
    expect_text(back, "42[\"echo\",2,\"2\"]");
    reply = next_text(back);
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT_STR_EQ(got.sid, s1.sid);
    ASSERT_STR_EQ(got.pid, s1.pid);
    wait_int(&a->resumed, 1, "resumed after the takeover");
    ASSERT_EQ(a->lost, 1);
    tc_ws_text(back, "42[\"echo\",3]");
    expect_text(back, "42[\"echo\",3,\"3\"]");
    tc_free(alive);
    tc_free(back);
    ts_stop(t);
}

TEST_IMPL(resume_takeover)
{
    app a = {0};
    /* The probe's deadline is the ping timeout (2 s at most). */
    ps_server_opts o = {.shutdown_grace_ms = 300, .ping_timeout_ms = 300};
    ts_run(&o, setup, takeover_client, &a);
    return 0;
}

/* ---- the heartbeat asked for sooner -------------------------------------------------------- */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void heartbeat_client(ts *t)
{
    app *a = t->user;
    ids s1, got;
    tc *c = open_with(t, "40", "40", &s1);
    /* An event kept for a replay asks for a ping within 2 s (not the 30 s interval), so that
     * its pong lets the server forget it. */
    uint64_t start = now_ms();
    tc_ws_text(c, "42[\"echo\",1]");
    char *m = tc_ws_read_text(c);
    ASSERT_STR_EQ(m, "42[\"echo\",1,\"1\"]");
    ps__free(m);
    m = tc_ws_read_text(c); /* within the 5 s the client waits */
    ASSERT_STR_EQ(m, "2");
    ps__free(m);
    ASSERT_GE(now_ms() - start, 2000 - 1);
    tc_ws_text(c, "3");

    /* A takeover probes the old connection with a pong deadline of 2 s, not the 20 s ping
     * timeout: left unanswered, the session moves to the newcomer. */
    start = now_ms();
    tc *back = open_resume(t, &s1, "1");
    m = tc_ws_read_text(c);
    ASSERT_STR_EQ(m, "2"); /* the probe, left unanswered */
    ps__free(m);
    char *reply = tc_ws_read_text(back); /* within 5 s */
    parse_reply(reply, "40", &got);
    ps__free(reply);
    ASSERT_GE(now_ms() - start, 2000 - 1);
    ASSERT_STR_EQ(got.sid, s1.sid);
    wait_int(&a->resumed, 1, "resumed after the probe");
    tc_ws_text(back, "42[\"echo\",2]");
    expect_text(back, "42[\"echo\",2,\"2\"]");
    tc_free(c);
    tc_free(back);
    ts_stop(t);
}

TEST_IMPL(resume_heartbeat)
{
    app a = {0};
    ps_server_opts o = {
        .shutdown_grace_ms = 300, .ping_interval_ms = 30000, .ping_timeout_ms = 20000};
    ts_run(&o, setup, heartbeat_client, &a);
    return 0;
}

/* ---- a page that goes away ------------------------------------------------------------- */

static void going_away_client(ts *t)
{
    app *a = t->user;
    ids s1;
    tc *c = open_with(t, "40", "40", &s1);
    /* A browser closing the tab: close frame 1001. Its pid went with the page: no waiting. */
    tc_ws_send(c, true, WS_CLOSE, "\x03\xe9", 2, true);
    tc_close(c, false);
    wait_int(&a->disconnects, 1, "disconnect at once");
    ASSERT_EQ(a->lost, 0);
    ps_server_stats st;
    ts_stats(t, &st);
    ASSERT_EQ(st.sessions_detached, 0);
    tc_free(c);
    /* A normal closure (1000): the client says it is done. */
    c = open_with(t, "40", "40", &s1);
    tc_ws_send(c, true, WS_CLOSE, "\x03\xe8", 2, true);
    tc_close(c, false);
    wait_int(&a->disconnects, 2, "disconnect at once after 1000");
    ASSERT_EQ(a->lost, 0);
    tc_free(c);
    /* Closing without a code (what socket.io-client does after its own ping timeout) still
     * leaves the session waiting for it. */
    c = open_with(t, "40", "40", &s1);
    tc_ws_send(c, true, WS_CLOSE, "", 0, true);
    tc_close(c, false);
    wait_stats(t, one_detached, "detach after a close without a code");
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(resume_going_away)
{
    app a = {0};
    ps_server_opts o = {.shutdown_grace_ms = 300};
    ts_run(&o, setup, going_away_client, &a);
    return 0;
}

/* ---- exactly once: requests and attaches sent again after a resume ----------------------- */

typedef struct room {
    app base;
    atomic_int counted, slow_runs, asks_done, asks_twice;
    ps_reply *slow; /* loop thread */
    ps_channel *ch; /* loop thread */
    char channel[PS__HEX_ID_LEN + 1];
} room;

static void on_ask_done(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    room *r = user;
    ASSERT_EQ(status, PS_OK);
    if (r->asks_done++)
        r->asks_twice++;
}

static void on_room_event(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                          void *user)
{
    room *r = user;
    if (strcmp(event, "count") == 0 && reply) {
        json_t *v = json_integer(++r->counted);
        ps_reply_ok(reply, v);
        json_decref(v);
    } else if (strcmp(event, "slow") == 0 && reply) {
        r->slow_runs++;
        r->slow = ps_reply_keep(reply);
    } else if (strcmp(event, "ask") == 0 && !reply) {
        ASSERT_EQ(ps_request(ch, "q", payload, 0, on_ask_done, r), 0);
    }
}

static int room_init(ps_view *view, json_t *props, void *user)
{
    room *r = user;
    r->ch = ps_channel_open(view);
    snprintf(r->channel, sizeof r->channel, "%s", ps_channel_id(r->ch));
    ps_on(r->ch, "*", on_room_event, r);
    json_t *p = json_pack("{s:s}", "channelId", ps_channel_id(r->ch));
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void room_setup(ts *t)
{
    setup(t);
    ps_view_type type = {.init = room_init, .user = t->user};
    ASSERT_EQ(ps_route(t->srv, "/room", &type), 0);
}

static void answer_slow(ts *t)
{
    room *r = t->user;
    json_t *v = json_string("late");
    ASSERT_EQ(ps_reply_ok(r->slow, v), 0);
    json_decref(v);
    r->slow = NULL;
}

/* Reads until a "message" event whose JSON contains `needle`; returns the text (ps__free). */
static char *next_message_with(tc *c, const char *needle)
{
    for (;;) {
        char *text = next_text(c);
        if (strstr(text, needle))
            return text;
        ps__free(text);
    }
}

static void send_text(tc *c, const char *fmt, const char *a)
{
    ps__buf b;
    ps__buf_init(&b);
    ps__buf_printf(&b, fmt, a, a);
    tc_ws_text(c, b.base);
    ps__buf_free(&b);
}

#define REQ(ch, ev, rid)                                                                           \
    "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"" ev              \
    "\",\"payload\":null,\"requestId\":\"" rid "\"}]"

static void once_client(ts *t)
{
    room *r = t->user;
    ids s1;
    tc *c = open_with(t, "40", "40", &s1);
    tc_ws_text(c, "42[\"message\",{\"type\":\"attach\",\"path\":\"/room\",\"attachId\":\"v1\","
                  "\"props\":null}]");
    char *ack = next_message_with(c, "attach_ack");
    ps__free(ack);
    const char *ch = r->channel;
    send_text(c, REQ(ch, "count", "c1"), ch);
    char *m = next_message_with(c, "\"responseTo\":\"c1\"");
    ASSERT(strstr(m, "\"payload\":1"));
    ps__free(m);
    send_text(c, REQ(ch, "slow", "s1"), ch); /* kept: still running at the cut */
    send_text(c,
              "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"ask\","
              "\"payload\":{\"x\":1}}]",
              ch);
    m = next_message_with(c, "\"event\":\"q\"");
    char *rid = strstr(m, "\"requestId\":\"");
    ASSERT_NOT_NULL(rid);
    char qid[PS__HEX_ID_LEN + 1];
    memcpy(qid, rid + 13, PS__HEX_ID_LEN);
    qid[PS__HEX_ID_LEN] = '\0';
    /* The offset of this last message is the client's last offset. */
    char *off = strrchr(m, ',');
    char offset[24];
    snprintf(offset, sizeof offset, "%.*s", (int)strcspn(off + 2, "\""), off + 2);
    ps__free(m);
    tc_close(c, true);
    tc_free(c);
    wait_stats(t, one_detached, "detach");

    c = open_resume(t, &s1, offset);
    char *reply = next_text(c);
    ids again;
    parse_reply(reply, "40", &again);
    ps__free(reply);
    ASSERT_STR_EQ(again.sid, s1.sid);
    /* Our unanswered request comes again, with its id. */
    m = next_message_with(c, "\"event\":\"q\"");
    ASSERT(strstr(m, qid));
    ps__free(m);
    /* The client repeats its unanswered request: still running, so not run again. */
    send_text(c, REQ(ch, "slow", "s1"), ch);
    /* An attach repeated now is answered again, not refused. */
    tc_ws_text(c, "42[\"message\",{\"type\":\"attach\",\"path\":\"/room\",\"attachId\":\"v1\","
                  "\"props\":null}]");
    m = next_message_with(c, "attach_ack");
    ASSERT(strstr(m, r->channel));
    ps__free(m);
    ASSERT_EQ(r->slow_runs, 1);
    /* The first run answers; a repeat after it gets the same answer from memory. */
    ts_on_loop(t, answer_slow);
    m = next_message_with(c, "\"responseTo\":\"s1\"");
    ASSERT(strstr(m, "\"payload\":\"late\""));
    ps__free(m);
    send_text(c, REQ(ch, "slow", "s1"), ch);
    m = next_message_with(c, "\"responseTo\":\"s1\"");
    ASSERT(strstr(m, "\"payload\":\"late\""));
    ps__free(m);
    ASSERT_EQ(r->slow_runs, 1);
    /* A request never seen is handled as usual. */
    send_text(c, REQ(ch, "count", "c2"), ch);
    m = next_message_with(c, "\"responseTo\":\"c2\"");
    ASSERT(strstr(m, "\"payload\":2"));
    ps__free(m);
    /* Our request, answered twice (its first sending and its repeat): completed once. */
    ps__buf b;
    ps__buf_init(&b);
    ps__buf_printf(&b,
                   "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\",\"responseTo\":"
                   "\"%s\",\"payload\":\"yes\"}]",
                   ch, qid);
    tc_ws_text(c, b.base);
    tc_ws_text(c, b.base);
    ps__buf_free(&b);
    send_text(c, REQ(ch, "count", "c3"), ch); /* in order behind both answers */
    m = next_message_with(c, "\"responseTo\":\"c3\"");
    ps__free(m);
    ASSERT_EQ(r->asks_done, 1);
    ASSERT_EQ(r->asks_twice, 0);

    /* The pong of a ping sent after the resume settles it: repeats are new requests again. */
    char *ping = tc_ws_read_text(c);
    ASSERT_STR_EQ(ping, "2");
    ps__free(ping);
    tc_ws_text(c, "3");
    tc_ws_text(c, "42[\"message\",{\"type\":\"attach\",\"path\":\"/room\",\"attachId\":\"v1\","
                  "\"props\":null}]");
    m = next_message_with(c, "attach_error");
    ASSERT(strstr(m, "Duplicate attachId"));
    ps__free(m);
    send_text(c, REQ(ch, "slow", "s1"), ch);
    wait_int(&r->slow_runs, 2, "a repeat after the settle runs as a new request");
    ts_on_loop(t, answer_slow);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(resume_exactly_once)
{
    room r = {0};
    ps_server_opts o = {.shutdown_grace_ms = 300, .ping_interval_ms = 400};
    ts_run(&o, room_setup, once_client, &r);
    return 0;
}
