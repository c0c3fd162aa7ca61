/*
 * websocket: the accept key (RFC 6455 §1.3), then RFC 6455 on a real socket through the
 * Engine.IO endpoint: handshake checks, masking (1002), UTF-8 (1007), size limit (1009),
 * fragmentation, ping/pong, the close handshake, frames pipelined behind the handshake, and
 * clients that vanish mid-frame.
 */
#include "client.h"
#include "websocket.h"

TEST_IMPL(ws_accept_key)
{
    char out[29];
    /* RFC 6455 §1.3. */
    ps__ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
    ASSERT_STR_EQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* Another key, the expected value computed independently (Python hashlib). */
    ps__ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", out);
    ASSERT_STR_EQ(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    ps__ws_accept_key("", out);
    ASSERT_STR_EQ(out, "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");
    return 0;
}

static const char *const EIO_PATH = "/socket.io/?EIO=4&transport=websocket";

/* ---- handshake ------------------------------------------------------------------------- */

static int raw_upgrade(ts *t, const char *request, tresp *r)
{
    tc *c = tc_connect(t->port);
    tc_sends(c, request);
    tc_read_response(c, r);
    tc_free(c);
    return r->status;
}

static void handshake_client(ts *t)
{
    char sid[PS__SID_LEN + 1], sid2[PS__SID_LEN + 1];
    tc *c = tc_eio_open(t, sid);
    tc *c2 = tc_eio_open(t, sid2);
    ASSERT(strcmp(sid, sid2) != 0);
    tc_free(c2);
    tc_free(c);

    tresp r;
    /* Keys of the wrong length, not base64, or missing. */
    static const char *bad_keys[] = {
        "Sec-WebSocket-Key: short==\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n",
        "",
    };
    for (size_t i = 0; i < PS__ARRAY_SIZE(bad_keys); i++) {
        char req[512];
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n%s"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 EIO_PATH, bad_keys[i]);
        ASSERT_EQ(raw_upgrade(t, req, &r), 400);
        tresp_free(&r);
    }
    /* Version other than 13: 426 naming the one supported. */
    char req[512];
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
             EIO_PATH);
    ASSERT_EQ(raw_upgrade(t, req, &r), 426);
    char v[16];
    ASSERT(tresp_header(&r, "Sec-WebSocket-Version", v, sizeof v));
    ASSERT_STR_EQ(v, "13");
    tresp_free(&r);
    /* Header tokens are case-insensitive and may sit in lists. */
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, UPGRADE\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             EIO_PATH);
    ASSERT_EQ(raw_upgrade(t, req, &r), 101);
    char accept[64];
    ASSERT(tresp_header(&r, "Sec-WebSocket-Accept", accept, sizeof accept));
    ASSERT_STR_EQ(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    tresp_free(&r);
    /* An upgrade anywhere but the Engine.IO path: 404, no takeover. */
    ASSERT_EQ(raw_upgrade(t,
                          "GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n",
                          &r),
              404);
    tresp_free(&r);
    /* POST with upgrade headers: refused. */
    snprintf(req, sizeof req,
             "POST %s HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "Content-Length: 0\r\n\r\n",
             EIO_PATH);
    ASSERT_GE(raw_upgrade(t, req, &r), 400);
    tresp_free(&r);
    ts_stop(t);
}

TEST_IMPL(ws_handshake)
{
    ts_run(NULL, NULL, handshake_client, NULL);
    return 0;
}

/* ---- protocol errors ------------------------------------------------------------------- */

/* Opens a session, sends `frame` bytes, expects close `code`, then checks the server still
 * serves a new session. */
static void expect_close_after(ts *t, const void *frame, size_t len, int code)
{
    char sid[PS__SID_LEN + 1];
    tc *c = tc_eio_open(t, sid);
    tc_send(c, frame, len);
    int got = tc_ws_expect_close(c);
    if (got != code) {
        fprintf(stderr, "after sending ");
        ps_test_print_bytes(stderr, frame, len > 16 ? 16 : len);
        fputc('\n', stderr);
        ps_test_fail(__FILE__, __LINE__, "close code %d, expected %d", got, code);
    }
    tc_free(c);
}

static void unmasked_client(ts *t)
{
    ps__buf f;
    ps__buf_init(&f);
    tc_ws_frame(&f, true, WS_TEXT, "40", 2, false);
    expect_close_after(t, f.base, f.len, 1002);
    /* Unmasked control frames too. */
    ps__buf_reset(&f);
    tc_ws_frame(&f, true, WS_PING, "x", 1, false);
    expect_close_after(t, f.base, f.len, 1002);
    /* Reserved bits without an extension, reserved opcodes, fragmented control frames,
     * control frames over 125 bytes, a continuation with nothing to continue. */
    ps__buf_reset(&f);
    tc_ws_frame(&f, true, WS_TEXT, "40", 2, true);
    f.base[0] |= 0x40;
    expect_close_after(t, f.base, f.len, 1002);
    ps__buf_reset(&f);
    tc_ws_frame(&f, true, 3, "x", 1, true);
    expect_close_after(t, f.base, f.len, 1002);
    ps__buf_reset(&f);
    tc_ws_frame(&f, true, 11, "x", 1, true);
    expect_close_after(t, f.base, f.len, 1002);
    ps__buf_reset(&f);
    tc_ws_frame(&f, false, WS_PING, "x", 1, true);
    expect_close_after(t, f.base, f.len, 1002);
    char big[200];
    memset(big, 'p', sizeof big);
    ps__buf_reset(&f);
    tc_ws_frame(&f, true, WS_PING, big, sizeof big, true);
    expect_close_after(t, f.base, f.len, 1002);
    ps__buf_reset(&f);
    tc_ws_frame(&f, true, WS_CONT, "x", 1, true);
    expect_close_after(t, f.base, f.len, 1002);
    /* A new message while a fragmented one is unfinished. */
    ps__buf_reset(&f);
    tc_ws_frame(&f, false, WS_TEXT, "4", 1, true);
    tc_ws_frame(&f, true, WS_TEXT, "2", 1, true);
    expect_close_after(t, f.base, f.len, 1002);
    ps__buf_free(&f);
    ts_stop(t);
}

TEST_IMPL(ws_unmasked_frame)
{
    ps_server_opts o = {.shutdown_grace_ms = 300};
    ts_run(&o, NULL, unmasked_client, NULL);
    return 0;
}

static void utf8_client(ts *t)
{
    static const char *bad[] = {
        "4\xff",         "42[\"\xc0\xaf\"]", "42[\"\xed\xa0\x80\"]", "42[\"\xf4\x90\x80\x80\"]",
        "42[\"a\xc3\"]",
    };
    ps__buf f;
    ps__buf_init(&f);
    for (size_t i = 0; i < PS__ARRAY_SIZE(bad); i++) {
        ps__buf_reset(&f);
        tc_ws_frame(&f, true, WS_TEXT, bad[i], strlen(bad[i]), true);
        expect_close_after(t, f.base, f.len, 1007);
    }
    /* A multibyte character split across two fragments is valid. */
    tc *c = tc_sio_connect(t);
    ps__buf_reset(&f);
    tc_ws_frame(&f, false, WS_TEXT, "421[\"\xe2\x82", 7, true);
    tc_ws_frame(&f, true, WS_CONT, "\xac\"]", 3, true);
    tc_send(c, f.base, f.len);
    tc_ws_expect_text(c, "431[]");
    /* Invalid UTF-8 assembled from fragments is caught on the whole message. */
    ps__buf_reset(&f);
    tc_ws_frame(&f, false, WS_TEXT, "42[\"\xe2", 5, true);
    tc_ws_frame(&f, true, WS_CONT, "x\"]", 3, true);
    tc_send(c, f.base, f.len);
    ASSERT_EQ(tc_ws_expect_close(c), 1007);
    tc_free(c);
    ps__buf_free(&f);
    ts_stop(t);
}

TEST_IMPL(ws_invalid_utf8)
{
    ps_server_opts o = {.shutdown_grace_ms = 300};
    ts_run(&o, NULL, utf8_client, NULL);
    return 0;
}

static void too_big_client(ts *t)
{
    enum { MAX = 1024 };
    char *big = ps__malloc(4 * MAX);
    memset(big, 'a', 4 * MAX);
    memcpy(big, "42[\"", 4);
    ps__buf f;
    ps__buf_init(&f);

    /* One frame over the limit. */
    tc_ws_frame(&f, true, WS_TEXT, big, MAX + 1, true);
    expect_close_after(t, f.base, f.len, 1009);
    /* A frame announcing 2^62 bytes: refused from its header alone, nothing of it allocated. */
    ps__buf_reset(&f);
    const uint8_t huge[] = {0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    expect_close_after(t, huge, sizeof huge, 1009);
    /* A 64-bit length with its top bit set is malformed, not big: 1002, before the size. */
    const uint8_t top[] = {0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3, 4};
    expect_close_after(t, top, sizeof top, 1002);
    /* Announced over the limit by one byte, with a 16-bit length, header alone. */
    const uint8_t over[] = {0x81, 0xfe, (MAX + 1) >> 8, (MAX + 1) & 0xff, 1, 2, 3, 4};
    expect_close_after(t, over, sizeof over, 1009);
    /* A continuation announcing what takes the message over the limit. */
    ps__buf_reset(&f);
    tc_ws_frame(&f, false, WS_TEXT, big, 1000, true);
    const uint8_t cont[] = {0x80, 0xfe, 0, 25, 1, 2, 3, 4};
    ps__buf_append(&f, cont, sizeof cont);
    expect_close_after(t, f.base, f.len, 1009);
    /* The huge header again, split over two writes. */
    char sid[PS__SID_LEN + 1];
    tc *c = tc_eio_open(t, sid);
    tc_send(c, huge, 5);
    usleep(10 * 1000);
    tc_send(c, huge + 5, sizeof huge - 5);
    ASSERT_EQ(tc_ws_expect_close(c), 1009);
    tc_free(c);
    /* Fragments that are small alone but add up past the limit. */
    ps__buf_reset(&f);
    tc_ws_frame(&f, false, WS_TEXT, big, 600, true);
    tc_ws_frame(&f, true, WS_CONT, big + 600, 600, true);
    expect_close_after(t, f.base, f.len, 1009);

    /* Exactly the limit is accepted: a whole Socket.IO event of MAX bytes, acknowledged. */
    c = tc_sio_connect(t);
    ps__buf msg;
    ps__buf_init(&msg);
    ps__buf_appends(&msg, "421[\"");
    while (msg.len < MAX - 2)
        ps__buf_appendc(&msg, 'x');
    ps__buf_appends(&msg, "\"]");
    ASSERT_EQ(msg.len, MAX);
    ps__buf_reset(&f);
    tc_ws_frame(&f, true, WS_TEXT, msg.base, msg.len, true);
    tc_send(c, f.base, f.len);
    tc_ws_expect_text(c, "431[]");
    tc_free(c);
    ps__buf_free(&msg);
    ps__buf_free(&f);
    ps__free(big);
    ts_stop(t);
}

TEST_IMPL(ws_message_too_big)
{
    ps_server_opts o = {.max_payload = 1024, .shutdown_grace_ms = 300};
    ts_run(&o, NULL, too_big_client, NULL);
    return 0;
}

/* ---- data frames, control frames ------------------------------------------------------- */

static void fragmented_client(ts *t)
{
    tc *c = tc_sio_connect(t);
    ps__buf f;
    ps__buf_init(&f);
    /* "421["hello"]" in four fragments with a ping in the middle: the pong comes first, then
     * the acknowledgement of the reassembled event. */
    tc_ws_frame(&f, false, WS_TEXT, "42", 2, true);
    tc_ws_frame(&f, false, WS_CONT, "1[\"he", 5, true);
    tc_ws_frame(&f, false, WS_CONT, "", 0, true);
    tc_ws_frame(&f, true, WS_PING, "mid", 3, true);
    tc_ws_frame(&f, true, WS_CONT, "llo\"]", 5, true);
    tc_send(c, f.base, f.len);
    tframe fr;
    ASSERT(tc_ws_read(c, &fr));
    ASSERT_EQ(fr.opcode, WS_PONG);
    ASSERT_MEM_EQ(fr.payload.base, fr.payload.len, "mid", 3);
    tframe_free(&fr);
    tc_ws_expect_text(c, "431[]");

    /* The same fragments, one byte per write. */
    ps__buf_reset(&f);
    tc_ws_frame(&f, false, WS_TEXT, "422[", 4, true);
    tc_ws_frame(&f, true, WS_CONT, "\"x\"]", 4, true);
    for (size_t i = 0; i < f.len; i++)
        tc_send(c, f.base + i, 1);
    tc_ws_expect_text(c, "432[]");

    /* Several whole messages in one write. */
    ps__buf_reset(&f);
    for (int i = 3; i < 6; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "42%d[\"m\"]", i);
        tc_ws_frame(&f, true, WS_TEXT, m, (size_t)n, true);
    }
    tc_send(c, f.base, f.len);
    tc_ws_expect_text(c, "433[]");
    tc_ws_expect_text(c, "434[]");
    tc_ws_expect_text(c, "435[]");
    ps__buf_free(&f);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(ws_fragmented)
{
    ts_run(NULL, NULL, fragmented_client, NULL);
    return 0;
}

static void ping_client(ts *t)
{
    char sid[PS__SID_LEN + 1];
    tc *c = tc_eio_open(t, sid);
    static const char *payloads[] = {"", "abc", "\x00\xff\x01"};
    static const size_t lens[] = {0, 3, 3};
    for (size_t i = 0; i < 3; i++) {
        tc_ws_send(c, true, WS_PING, payloads[i], lens[i], true);
        tframe f;
        ASSERT(tc_ws_read(c, &f));
        ASSERT_EQ(f.opcode, WS_PONG);
        ASSERT(f.fin);
        ASSERT_MEM_EQ(f.payload.base, f.payload.len, payloads[i], lens[i]);
        tframe_free(&f);
    }
    /* 125 bytes, the largest control payload. */
    char p125[125];
    memset(p125, 'q', sizeof p125);
    tc_ws_send(c, true, WS_PING, p125, sizeof p125, true);
    tframe f;
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_PONG);
    ASSERT_MEM_EQ(f.payload.base, f.payload.len, p125, sizeof p125);
    tframe_free(&f);
    /* An unsolicited pong is ignored. */
    tc_ws_send(c, true, WS_PONG, "u", 1, true);
    tc_ws_send(c, true, WS_PING, "after", 5, true);
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_PONG);
    ASSERT_MEM_EQ(f.payload.base, f.payload.len, "after", 5);
    tframe_free(&f);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(ws_ping_pong)
{
    ts_run(NULL, NULL, ping_client, NULL);
    return 0;
}

static void client_close_client(ts *t)
{
    char sid[PS__SID_LEN + 1];
    /* The client starts the close handshake: the server echoes the code and closes TCP. */
    tc *c = tc_eio_open(t, sid);
    const uint8_t bye[] = {0x03, 0xe8, 'b', 'y', 'e'};
    tc_ws_send(c, true, WS_CLOSE, bye, sizeof bye, true);
    tframe f;
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_CLOSE);
    ASSERT_GE(f.payload.len, 2);
    ASSERT_EQ(((uint8_t)f.payload.base[0] << 8) | (uint8_t)f.payload.base[1], 1000);
    tframe_free(&f);
    tc_expect_eof(c);
    tc_free(c);
    /* A close without a code, and with a code that may not be sent (1005): no crash. */
    c = tc_eio_open(t, sid);
    tc_ws_send(c, true, WS_CLOSE, "", 0, true);
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_CLOSE);
    tframe_free(&f);
    tc_expect_eof(c);
    tc_free(c);
    c = tc_eio_open(t, sid);
    const uint8_t bad[] = {0x03, 0xed};
    tc_ws_send(c, true, WS_CLOSE, bad, sizeof bad, true);
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_CLOSE);
    tframe_free(&f);
    tc_expect_eof(c);
    tc_free(c);
    /* A one-byte close payload is a protocol error. */
    c = tc_eio_open(t, sid);
    tc_ws_send(c, true, WS_CLOSE, "x", 1, true);
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_CLOSE);
    ASSERT_EQ(((uint8_t)f.payload.base[0] << 8) | (uint8_t)f.payload.base[1], 1002);
    tframe_free(&f);
    tc_expect_eof(c);
    tc_free(c);
    /* Data after the client's close frame is ignored. */
    c = tc_eio_open(t, sid);
    ps__buf b;
    ps__buf_init(&b);
    tc_ws_frame(&b, true, WS_CLOSE, bye, 2, true);
    tc_ws_frame(&b, true, WS_TEXT, "40", 2, true);
    tc_send_try(c, b.base, b.len);
    ps__buf_free(&b);
    ASSERT(tc_ws_read(c, &f));
    ASSERT_EQ(f.opcode, WS_CLOSE);
    tframe_free(&f);
    tc_expect_eof(c);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(ws_client_close)
{
    ts_run(NULL, NULL, client_close_client, NULL);
    return 0;
}

static void early_frames_client(ts *t)
{
    /* The client pipelines its CONNECT behind the handshake, in the same segment: the open
     * packet must still come first, then the CONNECT reply. */
    ps__buf f;
    ps__buf_init(&f);
    tc_ws_frame(&f, true, WS_TEXT, "40", 2, true);
    tc_ws_frame(&f, true, WS_TEXT, "421[\"x\"]", 8, true);
    tc *c = tc_connect(t->port);
    tc_ws_handshake(c, EIO_PATH, f.base, f.len);
    char *open = tc_ws_read_text(c);
    ASSERT_EQ(open[0], '0');
    ps__free(open);
    char *reply = tc_ws_read_text(c);
    ASSERT_EQ(strncmp(reply, "40{\"sid\":\"", 10), 0);
    ps__free(reply);
    tc_ws_expect_text(c, "431[]");
    tc_free(c);
    ps__buf_free(&f);
    ts_stop(t);
}

TEST_IMPL(ws_early_frames)
{
    ts_run(NULL, NULL, early_frames_client, NULL);
    return 0;
}

static void mid_frame_client(ts *t)
{
    char sid[PS__SID_LEN + 1];
    ps__buf f;
    ps__buf_init(&f);
    tc_ws_frame(&f, true, WS_TEXT, "421[\"0123456789012345678901234567890123456789\"]", 48, true);
    /* Cut after the header, inside the mask key, inside the payload; by FIN and by RST. */
    size_t cuts[] = {1, 2, 4, 10, 20};
    for (size_t i = 0; i < PS__ARRAY_SIZE(cuts); i++) {
        for (int reset = 0; reset < 2; reset++) {
            tc *c = tc_eio_open(t, sid);
            tc_send(c, f.base, cuts[i]);
            tc_close(c, reset);
            tc_free(c);
        }
    }
    /* Mid-handshake too. */
    tc *c = tc_connect(t->port);
    tc_sends(c, "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nUpgrade: webs");
    tc_close(c, false);
    tc_free(c);
    /* After a CONNECT, with the session established. */
    c = tc_sio_connect(t);
    tc_send(c, f.base, 10);
    tc_close(c, true);
    tc_free(c);
    /* The server still serves. */
    c = tc_sio_connect(t);
    tc_ws_text(c, "421[\"still\"]");
    tc_ws_expect_text(c, "431[]");
    tc_free(c);
    ps__buf_free(&f);
    ts_stop(t);
}

TEST_IMPL(ws_close_mid_frame)
{
    ts_run(NULL, NULL, mid_frame_client, NULL);
    return 0;
}

/* ---- idle WebSockets give their wslay context back ---------------------------------------- */

enum { RELEASE_MS = 40 };

static uint64_t ws_buffers(ts *t)
{
    ps_server_stats st;
    ts_stats(t, &st);
    return st.ws_buffers;
}

/* Waits until the server holds `n` contexts; fails after 100 release periods. */
static void await_buffers(ts *t, uint64_t n)
{
    for (int i = 0; i < 200 && ws_buffers(t) != n; i++)
        uv_sleep(RELEASE_MS / 2);
    ASSERT_EQ(ws_buffers(t), n);
}

/* Quiet for several release periods, the context must still be held (half a frame or message
 * would be lost with it). */
static void expect_held_while_quiet(ts *t, uint64_t n)
{
    uv_sleep(RELEASE_MS * 5);
    ASSERT_EQ(ws_buffers(t), n);
}

static void idle_release_client(ts *t)
{
    tc *a = tc_sio_connect(t);
    tc *b = tc_sio_connect(t);
    await_buffers(t, 0);

    /* A message in, its answer out, on a fresh context; the other connection stays idle. */
    tc_ws_text(a, "421[\"x\"]");
    tc_ws_expect_text(a, "431[]");
    await_buffers(t, 0);

    /* Control frames too. */
    tc_ws_send(b, true, WS_PING, "p", 1, true);
    tframe f;
    ASSERT(tc_ws_read(b, &f));
    ASSERT_EQ(f.opcode, WS_PONG);
    tframe_free(&f);
    await_buffers(t, 0);

    /* Half a frame header, then half a payload, then half a fragmented message: held. */
    ps__buf fr;
    ps__buf_init(&fr);
    tc_ws_frame(&fr, true, WS_TEXT, "422[\"header\"]", 13, true);
    tc_send(a, fr.base, 1);
    expect_held_while_quiet(t, 1);
    tc_send(a, fr.base + 1, 7);
    expect_held_while_quiet(t, 1);
    tc_send(a, fr.base + 8, fr.len - 8);
    tc_ws_expect_text(a, "432[]");
    ps__buf_reset(&fr);
    tc_ws_send(b, false, WS_TEXT, "423[\"frag", 9, true);
    expect_held_while_quiet(t, 1);
    tc_ws_send(b, true, WS_PING, "mid", 3, true); /* a control frame between fragments */
    ASSERT(tc_ws_read(b, &f));
    ASSERT_EQ(f.opcode, WS_PONG);
    tframe_free(&f);
    expect_held_while_quiet(t, 1);
    tc_ws_send(b, true, WS_CONT, "mented\"]", 8, true);
    tc_ws_expect_text(b, "433[]");
    await_buffers(t, 0);

    /* Output to an idle connection is framed without a context: the heartbeat's pings. */
    char *ping = tc_ws_read_text(a);
    ASSERT_STR_EQ(ping, "2");
    ps__free(ping);
    ping = tc_ws_read_text(b);
    ASSERT_STR_EQ(ping, "2");
    ps__free(ping);
    ASSERT_EQ(ws_buffers(t), 0);
    /* The pongs take contexts; an acknowledged event behind each shows they were read. */
    tc_ws_text(a, "3");
    tc_ws_text(b, "3");
    tc_ws_text(a, "424[\"x\"]");
    tc_ws_text(b, "425[\"x\"]");
    tc_ws_expect_text(a, "434[]");
    tc_ws_expect_text(b, "435[]");
    await_buffers(t, 0);

    /* The close handshake on a fresh context, and a connection vanishing without one. */
    const uint8_t bye[] = {0x03, 0xe8};
    tc_ws_send(a, true, WS_CLOSE, bye, sizeof bye, true);
    ASSERT(tc_ws_read(a, &f));
    ASSERT_EQ(f.opcode, WS_CLOSE);
    tframe_free(&f);
    tc_expect_eof(a);
    tc_free(a);
    tc_close(b, true);
    tc_free(b);
    ps__buf_free(&fr);
    await_buffers(t, 0);
    ts_stop(t);
}

TEST_IMPL(ws_idle_release)
{
    /* The heartbeat is slow enough not to interfere before the last step, even on a loaded
     * machine. */
    ps_server_opts o = {.ws_idle_release_ms = RELEASE_MS, .ping_interval_ms = 5000};
    ts_run(&o, NULL, idle_release_client, NULL);
    return 0;
}
