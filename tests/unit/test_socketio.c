/*
 * socketio: the packet codec against tests/fixtures/socketio-packets.json (shared with the JS
 * tests) and generated limits, decoding from exact-size buffers so that any read past the end
 * is caught by ASan; then Socket.IO on a real socket: CONNECT, namespaces, events and acks,
 * reserved names and binary packets refused, the connect timeout.
 */
#include "client.h"
#include "socketio.h"

/* ---- fixtures -------------------------------------------------------------------------- */

static json_t *load_fixtures(void)
{
    json_error_t err;
    json_t *root = json_load_file(PS_TEST_FIXTURES "/socketio-packets.json", JSON_ALLOW_NUL, &err);
    if (!root)
        ps_test_fail(__FILE__, __LINE__, "fixtures: %s line %d: %s", PS_TEST_FIXTURES, err.line,
                     err.text);
    return root;
}

/* Decodes from a heap copy of exactly len bytes (no NUL after it). */
static int decode_exact(const char *s, size_t len, ps__sio_packet *p, const char **err)
{
    char *copy = ps__malloc(len ? len : 1);
    memcpy(copy, s, len);
    *err = NULL;
    int rc = ps__sio_decode(copy, len, p, err);
    ps__free(copy);
    return rc;
}

static void print_vector(const char *what, const char *s, size_t len)
{
    fprintf(stderr, "%s: ", what);
    ps_test_print_bytes(stderr, s, len);
    fputc('\n', stderr);
}

/* Checks a decoded packet against a fixture object's type/nsp/id/attachments/data. */
static void check_fields(const ps__sio_packet *p, json_t *v, const char *s, size_t len)
{
    const char *nsp = json_string_value(json_object_get(v, "nsp"));
    json_t *id = json_object_get(v, "id");
    json_t *att = json_object_get(v, "attachments");
    json_t *data = json_object_get(v, "data");
    bool ok = p->type == json_integer_value(json_object_get(v, "type")) &&
              strcmp(p->nsp, nsp ? nsp : "/") == 0 && p->id == (id ? json_integer_value(id) : -1) &&
              p->attachments == (att ? json_integer_value(att) : 0) &&
              (data ? p->data && json_equal(p->data, data) : p->data == NULL);
    if (!ok) {
        print_vector("vector", s, len);
        char *got = p->data ? json_dumps(p->data, PS__JSON_FLAGS) : NULL;
        fprintf(stderr, "decoded: type %d nsp %s id %" PRId64 " attachments %d data %s\n", p->type,
                p->nsp, p->id, p->attachments, got ? got : "(none)");
        free(got);
        ps_test_fail(__FILE__, __LINE__, "decoded fields differ from the fixture");
    }
}

TEST_IMPL(sio_encode)
{
    json_t *root = load_fixtures();
    json_t *vectors = json_object_get(root, "encode");
    ASSERT_GE(json_array_size(vectors), 15);
    size_t i;
    json_t *v;
    int rows_seen = 0;
    json_array_foreach(vectors, i, v)
    {
        const char *nsp = json_string_value(json_object_get(v, "nsp"));
        json_t *id = json_object_get(v, "id");
        const char *wire = json_string_value(json_object_get(v, "wire"));
        size_t wire_len = json_string_length(json_object_get(v, "wire"));
        ASSERT_NOT_NULL(wire);
        if (json_object_get(v, "row"))
            rows_seen |= 1 << json_integer_value(json_object_get(v, "row"));
        ps__buf b;
        ps__buf_init(&b);
        ps__buf_appends(&b, "prefix:"); /* encode appends */
        ps__sio_encode(&b, (int)json_integer_value(json_object_get(v, "type")), nsp,
                       id ? json_integer_value(id) : -1, json_object_get(v, "data"));
        if (b.len != 7 + wire_len || memcmp(b.base + 7, wire, wire_len) != 0) {
            fprintf(stderr, "vector %zu (%s)\n", i, json_string_value(json_object_get(v, "what")));
            ASSERT_MEM_EQ(b.base + 7, b.len - 7, wire, wire_len);
        }
        ASSERT_MEM_EQ(b.base, 7, "prefix:", 7);
        /* A NULL namespace means "/". */
        if (!nsp) {
            ps__buf c;
            ps__buf_init(&c);
            ps__sio_encode(&c, (int)json_integer_value(json_object_get(v, "type")), "/",
                           id ? json_integer_value(id) : -1, json_object_get(v, "data"));
            ASSERT_MEM_EQ(c.base, c.len, wire, wire_len);
            ps__buf_free(&c);
        }
        ps__buf_free(&b);

        /* And back: what we send, we (and so the reference decoder's rules) accept. */
        ASSERT_EQ(wire[0], '4');
        ps__sio_packet p;
        const char *err;
        if (decode_exact(wire + 1, wire_len - 1, &p, &err) != 0) {
            print_vector("encoded vector does not decode", wire, wire_len);
            ps_test_fail(__FILE__, __LINE__, "decode: %s", err);
        }
        check_fields(&p, v, wire, wire_len);
        ps__sio_packet_clear(&p);
        ASSERT_NULL(p.data);
    }
    /* SOCKETIO.md §4 rows 2 to 12 are all there. */
    for (int row = 2; row <= 12; row++)
        if (!(rows_seen & (1 << row)))
            ps_test_fail(__FILE__, __LINE__, "row %d of SOCKETIO.md §4 missing from fixtures", row);
    json_decref(root);
    return 0;
}

TEST_IMPL(sio_decode_valid)
{
    json_t *root = load_fixtures();
    json_t *vectors = json_object_get(root, "decode_valid");
    ASSERT_GE(json_array_size(vectors), 30);
    size_t i;
    json_t *v;
    json_array_foreach(vectors, i, v)
    {
        json_t *pk = json_object_get(v, "packet");
        const char *s = json_string_value(pk);
        size_t len = json_string_length(pk);
        ps__sio_packet p;
        const char *err;
        if (decode_exact(s, len, &p, &err) != 0) {
            print_vector("valid vector refused", s, len);
            ps_test_fail(__FILE__, __LINE__, "decode: %s", err);
        }
        check_fields(&p, v, s, len);
        ps__sio_packet_clear(&p);
        ps__sio_packet_clear(&p); /* idempotent */

        /* Every truncation decodes or fails cleanly, never reading past its length. */
        for (size_t cut = 0; cut < len; cut++) {
            ps__sio_packet q;
            if (decode_exact(s, cut, &q, &err) == 0)
                ps__sio_packet_clear(&q);
            else
                ASSERT_NOT_NULL(err);
        }
    }
    json_decref(root);
    return 0;
}

TEST_IMPL(sio_decode_invalid)
{
    json_t *root = load_fixtures();
    json_t *vectors = json_object_get(root, "decode_invalid");
    ASSERT_GE(json_array_size(vectors), 50);
    size_t i;
    json_t *v;
    json_array_foreach(vectors, i, v)
    {
        json_t *pk = json_object_get(v, "packet");
        const char *s = json_string_value(pk);
        size_t len = json_string_length(pk);
        ps__sio_packet p;
        const char *err;
        if (decode_exact(s, len, &p, &err) == 0) {
            print_vector("invalid vector accepted", s, len);
            fprintf(stderr, "why it is invalid: %s\n",
                    json_string_value(json_object_get(v, "why")));
            ps_test_fail(__FILE__, __LINE__, "decoded as type %d nsp %s id %" PRId64, p.type, p.nsp,
                         p.id);
        }
        ASSERT_NOT_NULL(err);
        /* A failed decode owns nothing (LeakSanitizer checks no payload leaked). */
        ASSERT_NULL(p.data);
    }
    json_decref(root);
    return 0;
}

static int decode_str(const char *s, ps__sio_packet *p)
{
    const char *err;
    return decode_exact(s, strlen(s), p, &err);
}

TEST_IMPL(sio_decode_limits)
{
    ps__sio_packet p;
    ps__buf b;
    ps__buf_init(&b);

    /* Namespace: 255 bytes accepted, 256 and far more refused. */
    for (size_t n = 254; n <= 257; n++) {
        ps__buf_reset(&b);
        ps__buf_appends(&b, "2/");
        for (size_t k = 1; k < n; k++)
            ps__buf_appendc(&b, 'n');
        ps__buf_appends(&b, ",[\"a\"]");
        int rc = decode_str(b.base, &p);
        if (n <= 255) {
            ASSERT_EQ(rc, 0);
            ASSERT_EQ(strlen(p.nsp), n);
            ps__sio_packet_clear(&p);
        } else {
            ASSERT_EQ(rc, -1);
        }
    }
    ps__buf_reset(&b);
    ps__buf_appends(&b, "0/");
    for (int k = 0; k < 100000; k++)
        ps__buf_appendc(&b, 'n');
    ASSERT_EQ(decode_str(b.base, &p), -1);

    /* Ack ids: everything up to 2^53-1 accepted; more, or 17 digits, refused (no int64
     * overflow either). */
    ASSERT_EQ(decode_str("3123456789012345[]", &p), 0);
    ASSERT_EQ(p.id, 123456789012345);
    ps__sio_packet_clear(&p);
    ASSERT_EQ(decode_str("31000000000000000[]", &p), 0);
    ASSERT_EQ(p.id, INT64_C(1000000000000000));
    ps__sio_packet_clear(&p);
    ASSERT_EQ(decode_str("39007199254740991[]", &p), 0);
    ASSERT_EQ(p.id, PS__SIO_MAX_ACK_ID);
    ps__sio_packet_clear(&p);
    ASSERT_EQ(decode_str("2/admin,9007199254740991[\"a\"]", &p), 0);
    ASSERT_EQ(p.id, PS__SIO_MAX_ACK_ID);
    ps__sio_packet_clear(&p);
    ASSERT_EQ(decode_str("30000000000000012[]", &p), 0); /* 16 digits, leading zeros */
    ASSERT_EQ(p.id, 12);
    ps__sio_packet_clear(&p);
    ASSERT_EQ(decode_str("39007199254740992[]", &p), -1);
    ASSERT_EQ(decode_str("312345678901234567[]", &p), -1);
    ASSERT_EQ(decode_str("399999999999999999999999[]", &p), -1);
    ASSERT_EQ(decode_str("2/admin,9999999999999999[\"a\"]", &p), -1);
    ASSERT_EQ(decode_str("2000000000000000001[\"a\"]", &p), -1); /* 18 digits, value 1 */

    /* Attachments: 1 to 10 accepted, anything else refused. */
    for (int n = 0; n <= 12; n++) {
        char s[64];
        snprintf(s, sizeof s, "5%d-[\"a\"]", n);
        int rc = decode_str(s, &p);
        if (n >= 1 && n <= 10) {
            ASSERT_EQ(rc, 0);
            ASSERT_EQ(p.attachments, n);
            ASSERT_EQ(p.type, PS__SIO_BINARY_EVENT);
            ps__sio_packet_clear(&p);
        } else {
            ASSERT_EQ(rc, -1);
        }
        snprintf(s, sizeof s, "6%d-7[]", n);
        rc = decode_str(s, &p);
        ASSERT_EQ(rc, n >= 1 && n <= 10 ? 0 : -1);
        if (rc == 0) {
            ASSERT_EQ(p.id, 7);
            ps__sio_packet_clear(&p);
        }
    }

    /* Deep nesting is refused by the JSON parser's depth limit, not by a stack overflow. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "2[\"deep\",");
    for (int k = 0; k < 100000; k++)
        ps__buf_appendc(&b, '[');
    for (int k = 0; k < 100000; k++)
        ps__buf_appendc(&b, ']');
    ps__buf_appendc(&b, ']');
    ASSERT_EQ(decode_str(b.base, &p), -1);

    /* A large, flat payload is fine. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "2[\"big\"");
    for (int k = 0; k < 50000; k++)
        ps__buf_printf(&b, ",%d", k);
    ps__buf_appendc(&b, ']');
    ASSERT_EQ(decode_str(b.base, &p), 0);
    ASSERT_EQ(json_array_size(p.data), 50001);
    ps__sio_packet_clear(&p);

    /* Every byte value after a valid prefix: never a crash, and control bytes never valid. */
    for (int c = 0; c < 256; c++) {
        char s[8] = {'2', (char)c, '[', '"', 'a', '"', ']', 0};
        if (ps__sio_decode(s, 7, &p, &(const char *){NULL}) == 0) {
            ASSERT(c == '/' || (c >= '0' && c <= '9') || c == ' ' || c == '\t' || c == '\n' ||
                   c == '\r');
            ps__sio_packet_clear(&p);
        }
    }
    ps__buf_free(&b);
    return 0;
}

TEST_IMPL(sio_reserved_event)
{
    static const char *reserved[] = {"connect",       "connect_error", "disconnect",
                                     "disconnecting", "newListener",   "removeListener"};
    for (size_t i = 0; i < PS__ARRAY_SIZE(reserved); i++)
        ASSERT(ps__sio_reserved_event(reserved[i]));
    static const char *fine[] = {
        "", "message", "Connect", "connect ", "disconnected", "newlistener", "error", "ping"};
    for (size_t i = 0; i < PS__ARRAY_SIZE(fine); i++)
        ASSERT(!ps__sio_reserved_event(fine[i]));
    return 0;
}

/* ---- on the wire ----------------------------------------------------------------------- */

static void on_asked(ps_session *s, int status, json_t *args, void *user)
{
    json_t *out = json_pack("[i]", status);
    ps_session_emit(s, "asked", out);
    json_decref(out);
}

static void on_event(ps_session *s, const char *event, json_t *args, ps_ack *ack, void *user)
{
    if (strcmp(event, "ask") == 0) {
        /* N emits with ack; the return codes come back in one "rcs" event. */
        json_t *rcs = json_array();
        for (json_int_t i = 0; i < json_integer_value(json_array_get(args, 0)); i++)
            json_array_append_new(
                rcs, json_integer(ps_session_emit_ack(s, "q", NULL, 0, on_asked, NULL)));
        json_t *out = json_pack("[o]", rcs);
        ps_session_emit(s, "rcs", out);
        json_decref(out);
    } else if (strcmp(event, "echo") == 0)
        ASSERT_EQ(ps_session_emit(s, "echo", args), 0);
    else if (strcmp(event, "bye") == 0)
        ps_session_disconnect(s);
    else if (ack && strcmp(event, "ack-me") == 0)
        ps_ack_send(ack, args);
    /* Anything else with an ack id is acknowledged empty by pulsec itself. */
}

static int deny_connect(ps_session *s, const ps_handshake *hs, void *user)
{
    json_t *auth = ps_handshake_auth(hs);
    if (json_object_get(auth, "deny"))
        return ps_session_deny(s, "not authorized", json_object_get(auth, "deny"));
    return 0;
}

static void sio_setup(ts *t)
{
    ps_namespace_hooks hooks = {.event = on_event};
    ASSERT_EQ(ps_namespace(t->srv, "/", &hooks), 0);
    ASSERT_EQ(ps_namespace(t->srv, "/admin", &hooks), 0);
    ASSERT_EQ(ps_namespace(t->srv, "admin", &hooks), PS_EINVAL);
    ASSERT_EQ(ps_namespace(t->srv, "/a,b", &hooks), PS_EINVAL);
    ASSERT_EQ(ps_use_connect(t->srv, deny_connect, NULL), 0);
}

static char *expect_prefix(tc *c, const char *prefix)
{
    char *got = tc_ws_read_text(c);
    if (strncmp(got, prefix, strlen(prefix)) != 0)
        ps_test_fail(__FILE__, __LINE__, "expected %s..., got %s", prefix, got);
    return got;
}

static void connect_client(ts *t)
{
    tc *c = tc_sio_connect(t);
    /* Events and acks on "/". */
    tc_ws_text(c, "42[\"echo\",1,\"two\",{\"3\":[4]}]");
    tc_ws_expect_text(c, "42[\"echo\",1,\"two\",{\"3\":[4]}]");
    tc_ws_text(c, "427[\"ack-me\",\"x\",null]");
    tc_ws_expect_text(c, "437[\"x\",null]");
    tc_ws_text(c, "428[\"unhandled\"]");
    tc_ws_expect_text(c, "438[]");
    tc_ws_text(c, "42[\"unhandled\"]"); /* no answer: the next answer is for the next event */
    tc_ws_text(c, "42[5,\"numeric name\"]");
    tc_ws_text(c, "429[\"ack-me\",\"\xc3\xa9\"]");
    tc_ws_expect_text(c, "439[\"\xc3\xa9\"]");
    /* An ack for an id the server never used is ignored. */
    tc_ws_text(c, "43123[\"x\"]");

    /* A second namespace on the same connection, then an unknown one. */
    tc_ws_text(c, "40/admin,");
    char *r = expect_prefix(c, "40/admin,{\"sid\":\"");
    ps__free(r);
    tc_ws_text(c, "42/admin,[\"echo\",\"adm\"]");
    tc_ws_expect_text(c, "42/admin,[\"echo\",\"adm\"]");
    tc_ws_text(c, "40/nope,");
    tc_ws_expect_text(c, "44/nope,{\"message\":\"Invalid namespace\"}");
    tc_ws_text(c, "40/nope");
    tc_ws_expect_text(c, "44/nope,{\"message\":\"Invalid namespace\"}");
    /* Refused by the connect middleware, with data. */
    tc_ws_text(c, "40/admin2,{\"deny\":{\"code\":7}}");
    tc_ws_expect_text(c, "44/admin2,{\"message\":\"Invalid namespace\"}");

    /* Leaving /admin: nothing comes back, and the connection still serves "/". */
    tc_ws_text(c, "41/admin,");
    tc_ws_text(c, "4210[\"ack-me\",1]");
    tc_ws_expect_text(c, "4310[1]");
    /* The server disconnects a socket on request. */
    tc_ws_text(c, "42[\"bye\"]");
    tc_ws_expect_text(c, "41");
    /* Now "/" is not joined: an event there is a protocol violation. */
    tc_ws_text(c, "42[\"echo\"]");
    ASSERT_EQ(tc_ws_expect_close(c), 1008);
    tc_free(c);

    /* Joining the same namespace twice closes the connection. */
    c = tc_sio_connect(t);
    tc_ws_text(c, "40");
    ASSERT_EQ(tc_ws_expect_close(c), 1008);
    tc_free(c);

    /* Connect refused by middleware: CONNECT_ERROR, the session stays open for a retry. */
    char sid[PS__SID_LEN + 1];
    c = tc_eio_open(t, sid);
    tc_ws_text(c, "40{\"deny\":{\"code\":7}}");
    tc_ws_expect_text(c, "44{\"message\":\"not authorized\",\"data\":{\"code\":7}}");
    tc_ws_text(c, "40{\"token\":\"ok\"}");
    r = expect_prefix(c, "40{\"sid\":\"");
    ps__free(r);
    tc_free(c);

    /* An event before any CONNECT. */
    c = tc_eio_open(t, sid);
    tc_ws_text(c, "42[\"echo\"]");
    ASSERT_EQ(tc_ws_expect_close(c), 1008);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(sio_connect)
{
    /* The wire without recovery: bare {"sid"} replies, events without offsets (test_resume.c
     * has the wire with it). */
    ps_server_opts o = {.shutdown_grace_ms = 300, .resume_window_ms = PS_RESUME_OFF};
    ts_run(&o, sio_setup, connect_client, NULL);
    return 0;
}

static void refused_client(ts *t)
{
    static const char *bad[] = {
        "42[\"disconnect\"]",
        "42[\"connect\"]",
        "42[\"newListener\",1]",
        "421[\"removeListener\"]",
        "42[]",
        "42",
        "42{}",
        "43[]",
        "40[]",
        "41{}",
        "47",
        "42[\"a\"",
        "42[\"a\"]x",
        "450-[\"a\"]",
        "4511-[\"a\"]",
    };
    for (size_t i = 0; i < PS__ARRAY_SIZE(bad); i++) {
        tc *c = tc_sio_connect(t);
        tc_ws_text(c, bad[i]);
        int code = tc_ws_expect_close(c);
        if (code != 1002)
            ps_test_fail(__FILE__, __LINE__, "%s: close %d, expected 1002", bad[i], code);
        tc_free(c);
    }
    /* Binary packets: an attachment completes its header packet (acked here with the empty ack
     * of a namespace without an event hook), also when the attachment comes in fragments. */
    const uint8_t blob[] = {1, 2, 3, 4};
    tc *c = tc_sio_connect(t);
    tc_ws_text(c, "451-1[\"baz\",{\"_placeholder\":true,\"num\":0}]");
    tc_ws_send(c, true, WS_BINARY, blob, sizeof blob, true);
    tc_ws_expect_text(c, "431[]");
    tc_ws_text(c, "451-2[\"baz\",{\"x\":{\"_placeholder\":true,\"num\":0}}]");
    tc_ws_send(c, false, WS_BINARY, blob, 2, true);
    tc_ws_send(c, true, WS_CONT, blob + 2, 2, true);
    tc_ws_expect_text(c, "432[]");
    /* A binary message nobody announced. */
    tc_ws_send(c, true, WS_BINARY, blob, sizeof blob, true);
    ASSERT_EQ(tc_ws_expect_close(c), 1002);
    tc_free(c);
    /* A text packet while an attachment is still owed. */
    c = tc_sio_connect(t);
    tc_ws_text(c, "451-[\"baz\",{\"_placeholder\":true,\"num\":0}]");
    tc_ws_text(c, "421[\"fine\"]");
    ASSERT_EQ(tc_ws_expect_close(c), 1002);
    tc_free(c);
    /* A placeholder for an attachment that does not exist. */
    c = tc_sio_connect(t);
    tc_ws_text(c, "461-15[\"bar\",{\"_placeholder\":true,\"num\":1}]");
    tc_ws_send(c, true, WS_BINARY, blob, sizeof blob, true);
    ASSERT_EQ(tc_ws_expect_close(c), 1002);
    tc_free(c);
    /* Before CONNECT. */
    char sid[PS__SID_LEN + 1];
    c = tc_eio_open(t, sid);
    tc_ws_send(c, true, WS_BINARY, blob, sizeof blob, true);
    ASSERT_EQ(tc_ws_expect_close(c), 1002);
    tc_free(c);
    /* Other clients are unaffected. */
    c = tc_sio_connect(t);
    tc_ws_text(c, "421[\"fine\"]");
    tc_ws_expect_text(c, "431[]");
    /* Every refusal was counted; only the client still connected is a session. */
    ps_server_stats st;
    ts_stats(t, &st);
    ASSERT_EQ(st.protocol_errors, PS__ARRAY_SIZE(bad) + 4);
    ASSERT_EQ(st.sessions, 1);
    ASSERT_EQ(st.connections, 1);
    ASSERT_EQ(st.sessions_total, PS__ARRAY_SIZE(bad) + 4);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(sio_refused_packets)
{
    ps_server_opts o = {.shutdown_grace_ms = 300};
    ts_run(&o, NULL, refused_client, NULL);
    return 0;
}

static void connect_timeout_client(ts *t)
{
    char sid[PS__SID_LEN + 1];
    uint64_t start = uv_hrtime();
    tc *c = tc_eio_open(t, sid);
    ASSERT_EQ(tc_ws_expect_close(c), 1000);
    uint64_t ms = (uv_hrtime() - start) / 1000000;
    ASSERT_GE(ms, 99);
    ASSERT_LT(ms, 100 + 300);
    tc_free(c);
    /* A CONNECT in time cancels the deadline. */
    c = tc_sio_connect(t);
    usleep(250 * 1000);
    tc_ws_text(c, "421[\"still here\"]");
    tc_ws_expect_text(c, "431[]");
    tc_free(c);
    /* A refused CONNECT does not. */
    c = tc_eio_open(t, sid);
    tc_ws_text(c, "40/nope,");
    tc_ws_expect_text(c, "44/nope,{\"message\":\"Invalid namespace\"}");
    ASSERT_EQ(tc_ws_expect_close(c), 1000);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(sio_connect_timeout)
{
    ps_server_opts o = {.connect_timeout_ms = 100, .shutdown_grace_ms = 300};
    ts_run(&o, NULL, connect_timeout_client, NULL);
    return 0;
}

/* Emits with ack are bounded per socket like channel requests (max_pending_requests). */
static void ack_bound_client(ts *t)
{
    tc *c = tc_sio_connect(t);
    char want[128];
    snprintf(want, sizeof want, "42[\"rcs\",[0,0,0,%d,%d]]", PS_ELIMIT, PS_ELIMIT);
    tc_ws_text(c, "42[\"ask\",5]");
    tc_ws_expect_text(c, "420[\"q\"]");
    tc_ws_expect_text(c, "421[\"q\"]");
    tc_ws_expect_text(c, "422[\"q\"]");
    tc_ws_expect_text(c, want);
    /* An ack frees one slot: the next ask gets one through, under the next id. */
    tc_ws_text(c, "431[]");
    tc_ws_expect_text(c, "42[\"asked\",0]");
    tc_ws_text(c, "42[\"ask\",2]");
    tc_ws_expect_text(c, "423[\"q\"]");
    snprintf(want, sizeof want, "42[\"rcs\",[0,%d]]", PS_ELIMIT);
    tc_ws_expect_text(c, want);
    /* The bound is per socket: another connection has its own. */
    tc *d = tc_sio_connect(t);
    tc_ws_text(d, "42[\"ask\",3]");
    tc_ws_expect_text(d, "420[\"q\"]");
    tc_ws_expect_text(d, "421[\"q\"]");
    tc_ws_expect_text(d, "422[\"q\"]");
    tc_ws_expect_text(d, "42[\"rcs\",[0,0,0]]");
    tc_free(d);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(sio_ack_bound)
{
    ps_server_opts o = {.max_pending_requests = 3,
                        .shutdown_grace_ms = 300,
                        .resume_window_ms = PS_RESUME_OFF}; /* exact bytes: no offsets */
    ts_run(&o, sio_setup, ack_bound_client, NULL);
    return 0;
}
