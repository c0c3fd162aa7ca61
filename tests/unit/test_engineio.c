/*
 * engineio: the open packet byte for byte, the endpoint's answers to requests it cannot serve
 * (the reference server's JSON errors, and no hang for long-polling), Engine.IO packets from
 * the client, and the server-initiated heartbeat with millisecond timers.
 */
#include "client.h"
#include "engineio.h"

#include <time.h>

TEST_IMPL(eio_encode_open)
{
    ps__buf b;
    ps__buf_init(&b);
    ps__eio_config cfg = {
        .ping_interval_ms = 25000, .ping_timeout_ms = 20000, .max_payload = 1000000};
    /* SOCKETIO.md §4 rows 1 and 18. */
    ps__eio_encode_open(&b, "lv_VI97HAXpY6yYWAAAC", &cfg, false);
    ASSERT_STR_EQ(b.base,
                  "0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[],\"pingInterval\":25000,"
                  "\"pingTimeout\":20000,\"maxPayload\":1000000}");
    ps__buf_reset(&b);
    ps__eio_encode_open(&b, "X1XFcIyya4N_h2VNAAAA", &cfg, true);
    ASSERT_STR_EQ(b.base, "0{\"sid\":\"X1XFcIyya4N_h2VNAAAA\",\"upgrades\":[\"websocket\"],"
                          "\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}");
    /* Appends; extreme values print as plain decimal numbers. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "x");
    ps__eio_config big = {
        .ping_interval_ms = UINT32_MAX, .ping_timeout_ms = 1, .max_payload = SIZE_MAX};
    ps__eio_encode_open(&b, "s", &big, false);
    char want[256];
    snprintf(want, sizeof want,
             "x0{\"sid\":\"s\",\"upgrades\":[],\"pingInterval\":4294967295,\"pingTimeout\":1,"
             "\"maxPayload\":%zu}",
             (size_t)SIZE_MAX);
    ASSERT_STR_EQ(b.base, want);
    ps__buf_free(&b);
    /* The packet type characters. */
    ASSERT_EQ(PS__EIO_OPEN, '0');
    ASSERT_EQ(PS__EIO_CLOSE, '1');
    ASSERT_EQ(PS__EIO_PING, '2');
    ASSERT_EQ(PS__EIO_PONG, '3');
    ASSERT_EQ(PS__EIO_MESSAGE, '4');
    ASSERT_EQ(PS__EIO_UPGRADE, '5');
    ASSERT_EQ(PS__EIO_NOOP, '6');
    return 0;
}

/* ---- requests the endpoint refuses ----------------------------------------------------- */

static void expect_json_error(ts *t, const char *request, int status, const char *body)
{
    tresp r;
    int got = tc_request(t->port, request, &r);
    if (got != status)
        ps_test_fail(__FILE__, __LINE__, "%s\n-> %d %s", request, got, r.body.base);
    ASSERT_STR_EQ(r.body.base, body);
    tresp_free(&r);
}

#define UPGRADE_HEADERS                                                                            \
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"                                                \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

static void request_errors_client(ts *t)
{
    const char *version = "{\"code\":5,\"message\":\"Unsupported protocol version\"}";
    const char *transport = "{\"code\":0,\"message\":\"Transport unknown\"}";
    expect_json_error(t, "GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\n" UPGRADE_HEADERS,
                      400, version);
    expect_json_error(t, "GET /socket.io/?transport=websocket HTTP/1.1\r\n" UPGRADE_HEADERS, 400,
                      version);
    expect_json_error(t, "GET /socket.io/?EIO=%34&transport=polling HTTP/1.1\r\n\r\n", 400,
                      transport);
    expect_json_error(t, "GET /socket.io/?EIO=4&EIO=3&transport=polling HTTP/1.1\r\n\r\n", 400,
                      transport);
    expect_json_error(t, "GET /socket.io/?EIO=4&transport=polling&t=N8hyd6w HTTP/1.1\r\n\r\n", 400,
                      transport);
    expect_json_error(t,
                      "POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\n"
                      "Content-Length: 2\r\n\r\n40",
                      400, transport);
    expect_json_error(t, "GET /socket.io/?EIO=4 HTTP/1.1\r\n\r\n", 400, transport);
    expect_json_error(t, "GET /socket.io?EIO=4&transport=polling HTTP/1.1\r\n\r\n", 400, transport);
    expect_json_error(t, "GET /socket.io/x/y?EIO=4&transport=polling HTTP/1.1\r\n\r\n", 400,
                      transport);
    expect_json_error(
        t, "GET /socket.io/?EIO=4&transport=websocket&sid=abc HTTP/1.1\r\n" UPGRADE_HEADERS, 400,
        "{\"code\":1,\"message\":\"Session ID unknown\"}");
    expect_json_error(t, "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\r\n", 400,
                      "{\"code\":3,\"message\":\"Bad request\"}");
    expect_json_error(t, "GET /socket.io/?EIO=4&transport=%zz HTTP/1.1\r\n\r\n", 400, transport);

    /* Only the endpoint's own path: a longer name is someone else's (404). */
    tresp r;
    ASSERT_EQ(tc_request(t->port, "GET /socket.iox/?EIO=4&transport=polling HTTP/1.1\r\n\r\n", &r),
              404);
    tresp_free(&r);

    /* Refused polling does not end a keep-alive connection. */
    tc *c = tc_connect(t->port);
    tc_sends(c, "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 400);
    char ct[64];
    ASSERT(tresp_header(&r, "Content-Type", ct, sizeof ct));
    ASSERT_STR_EQ(ct, "application/json");
    tresp_free(&r);
    tc_sends(c, "GET /healthz HTTP/1.1\r\n\r\n");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(eio_request_errors)
{
    /* WebSocket only: polling requests are refused like a disabled transport. */
    ps_server_opts o = {.websocket_only = true};
    ts_run(&o, NULL, request_errors_client, NULL);
    return 0;
}

/* ---- packets from the client ----------------------------------------------------------- */

static void packets_client(ts *t)
{
    static const struct {
        const char *packet;
        int code;
    } cases[] = {
        {"", 1002},  /* empty text message */
        {"2", 1002}, /* a v4 client never pings */
        {"2probe", 1002}, {"5", 1002}, {"6", 1002}, {"7", 1002},
        {"x", 1002},      {"0", 1002}, {"4", 1002}, /* a message with an empty Socket.IO packet */
        {"1", 1000}, /* Engine.IO close: the server closes the WebSocket normally */
    };
    char sid[PS__SID_LEN + 1];
    for (size_t i = 0; i < PS__ARRAY_SIZE(cases); i++) {
        tc *c = tc_eio_open(t, sid);
        tc_ws_send(c, true, WS_TEXT, cases[i].packet, strlen(cases[i].packet), true);
        int code = tc_ws_expect_close(c);
        if (code != cases[i].code)
            ps_test_fail(__FILE__, __LINE__, "packet \"%s\": close %d, expected %d",
                         cases[i].packet, code, cases[i].code);
        tc_free(c);
    }
    /* An unsolicited pong is harmless. */
    tc *c = tc_sio_connect(t);
    tc_ws_text(c, "3");
    tc_ws_text(c, "421[]");
    /* "421[]" is not a valid event (no name): the connection is closed, after the pong. */
    ASSERT_EQ(tc_ws_expect_close(c), 1002);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(eio_packets)
{
    ps_server_opts o = {.shutdown_grace_ms = 300};
    ts_run(&o, NULL, packets_client, NULL);
    return 0;
}

/* ---- heartbeat ------------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void heartbeat_client(ts *t)
{
    char sid[PS__SID_LEN + 1];
    /* Lower bounds are measured from a moment before the server's timer started (libuv counts
     * whole milliseconds, so allow 1 ms early); upper bounds leave room for a loaded machine
     * but stay far below the whole second a coarse timer would take. */
    uint64_t start = now_ms();
    tc *c = tc_eio_open(t, sid);
    /* Pings every 60 ms as long as the client answers: the interval restarts at each pong. */
    for (int i = 0; i < 4; i++) {
        tc_ws_expect_text(c, "2");
        uint64_t at = now_ms();
        ASSERT_GE(at - start, 59);
        ASSERT_LT(at - start, 60 + 300);
        usleep(20 * 1000);
        start = now_ms();
        tc_ws_text(c, "3");
    }
    /* Then silence: the next ping goes unanswered and the session ends pingTimeout later. */
    tc_ws_expect_text(c, "2");
    ASSERT_EQ(tc_ws_expect_close(c), 1000);
    uint64_t waited = now_ms() - start;
    ASSERT_GE(waited, 60 + 100 - 1);
    ASSERT_LT(waited, 60 + 100 + 300);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(eio_heartbeat)
{
    ps_server_opts o = {.ping_interval_ms = 60, .ping_timeout_ms = 100, .shutdown_grace_ms = 300};
    ts_run(&o, NULL, heartbeat_client, NULL);
    return 0;
}

/* ---- origins and proxies (DESIGN §8) --------------------------------------------------- */

TEST_IMPL(eio_origin_check)
{
    ps__eio_config cfg = {0};
    /* Default: programs and the server's own pages only. */
    ASSERT_EQ(ps__eio_origin_check(&cfg, NULL, "app.test"), PS__ORIGIN_NONE);
    ASSERT_EQ(ps__eio_origin_check(&cfg, NULL, NULL), PS__ORIGIN_NONE);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://app.test", "app.test"), PS__ORIGIN_SAME);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://127.0.0.1:8000", "127.0.0.1:8000"),
              PS__ORIGIN_SAME);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "HTTP://App.Test:8000", "app.test:8000"), PS__ORIGIN_SAME);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://[::1]:8000", "[::1]:8000"), PS__ORIGIN_SAME);
    /* Default ports may be written on either side. */
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://app.test", "app.test:80"), PS__ORIGIN_SAME);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "https://app.test:443", "app.test"), PS__ORIGIN_SAME);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "https://app.test", "app.test:80"), PS__ORIGIN_REFUSED);
    /* Behind a TLS-terminating proxy the page is https, the server plain: same origin. */
    ASSERT_EQ(ps__eio_origin_check(&cfg, "https://app.test", "app.test"), PS__ORIGIN_SAME);
    /* Everything else is another origin. */
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://evil.test", "app.test"), PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://app.test:8001", "app.test:8000"),
              PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://app.test.evil.test", "app.test"),
              PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://evil@app.test", "app.test"), PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "null", "app.test"), PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://", ""), PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://app.test", NULL), PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "ws://app.test", "app.test"), PS__ORIGIN_REFUSED);
    /* A TLS port: an http page is not the server's own. */
    cfg.secure = true;
    ASSERT_EQ(ps__eio_origin_check(&cfg, "https://app.test", "app.test"), PS__ORIGIN_SAME);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://app.test", "app.test"), PS__ORIGIN_REFUSED);
    cfg.secure = false;
    /* A list adds origins; "*" admits the rest without credentials. */
    char *list[] = {"http://good.test", "https://second.test:8443"};
    cfg.allowed_origins = list;
    cfg.nallowed_origins = 2;
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://good.test", "app.test"), PS__ORIGIN_LISTED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "HTTP://GOOD.test", "app.test"), PS__ORIGIN_LISTED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "https://second.test:8443", "x"), PS__ORIGIN_LISTED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "https://good.test", "app.test"), PS__ORIGIN_REFUSED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://app.test", "app.test"), PS__ORIGIN_SAME);
    char *star[] = {"http://good.test", "*"};
    cfg.allowed_origins = star;
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://good.test", "app.test"), PS__ORIGIN_LISTED);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "http://evil.test", "app.test"), PS__ORIGIN_ANY);
    ASSERT_EQ(ps__eio_origin_check(&cfg, "null", "app.test"), PS__ORIGIN_ANY);
    ASSERT_EQ(ps__eio_origin_check(&cfg, NULL, "app.test"), PS__ORIGIN_NONE);
    return 0;
}

static const char *client_address(const ps__eio_config *cfg, const char *peer, const char *xff1,
                                  const char *xff2)
{
    static char out[48];
    ps__http_header h[3] = {
        {"Host", "app.test"}, {"X-Forwarded-For", xff1}, {"x-forwarded-for", xff2}};
    size_t n = xff2 ? 3 : xff1 ? 2 : 1;
    ps__eio_client_address(cfg, peer, h, n, out, sizeof out);
    return out;
}

TEST_IMPL(eio_client_address)
{
    ps__eio_config cfg = {0};
    /* Nobody trusted: the header is the client's word, ignored. */
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "203.0.113.9", NULL), "127.0.0.1");
    ps__cidr proxies[2];
    ASSERT(ps__cidr_parse("127.0.0.1", &proxies[0]));
    ASSERT(ps__cidr_parse("10.0.0.0/8", &proxies[1]));
    cfg.trusted_proxies = proxies;
    cfg.ntrusted_proxies = 2;
    /* From a trusted proxy: its header names the client. */
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "203.0.113.9", NULL), "203.0.113.9");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", " 203.0.113.9 ", NULL), "203.0.113.9");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "2001:db8::7", NULL), "2001:db8::7");
    /* Read from the right through trusted hops; what the client itself wrote further left is
     * not believed. */
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.1.1", NULL),
                  "203.0.113.9");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "10.2.2.2,10.1.1.1", NULL), "10.2.2.2");
    /* Several headers are one list, in order. */
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "198.51.100.1", "10.3.3.3"), "198.51.100.1");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "198.51.100.1", "198.51.100.2"),
                  "198.51.100.2");
    /* Garbage ends the chain at the last trusted hop. */
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "unknown", NULL), "127.0.0.1");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "203.0.113.9, nonsense, 10.1.1.1", NULL),
                  "10.1.1.1");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "", NULL), "127.0.0.1");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", ",,", NULL), "127.0.0.1");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", "10.0.0.0/8", NULL), "127.0.0.1");
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1",
                                 "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc:dddd",
                                 NULL),
                  "127.0.0.1");
    /* An untrusted peer's header counts for nothing, whatever it says. */
    ASSERT_STR_EQ(client_address(&cfg, "192.0.2.1", "203.0.113.9", NULL), "192.0.2.1");
    /* No header: the peer. */
    ASSERT_STR_EQ(client_address(&cfg, "127.0.0.1", NULL, NULL), "127.0.0.1");
    return 0;
}

/* ---- polling sessions without a CONNECT ------------------------------------------------ */

/* A polling handshake on a keep-alive connection; copies the sid out. */
static void poll_handshake(tc *c, char sid[PS__SID_LEN + 1])
{
    tresp r;
    tc_sends(c, "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    const char *p = strstr(r.body.base, "\"sid\":\"");
    ASSERT_NOT_NULL(p);
    memcpy(sid, p + 7, PS__SID_LEN);
    sid[PS__SID_LEN] = '\0';
    tresp_free(&r);
}

static int poll_status(tc *c, const char *method, const char *sid, const char *body)
{
    char req[256];
    snprintf(req, sizeof req,
             "%s /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nContent-Length: %zu\r\n"
             "\r\n%s",
             method, sid, strlen(body), body);
    tc_sends(c, req);
    tresp r;
    tc_read_response(c, &r);
    int status = r.status;
    tresp_free(&r);
    return status;
}

static void unconnected_client(ts *t)
{
    /* Five handshakes from one address with a bound of three: the first two are ended, the
     * next GET of the first is "Session ID unknown". */
    tc *c = tc_connect(t->port);
    char sids[6][PS__SID_LEN + 1];
    for (int i = 0; i < 5; i++)
        poll_handshake(c, sids[i]);
    ps_server_stats st;
    ts_stats(t, &st);
    ASSERT_EQ(st.unconnected, 3);
    ASSERT_EQ(st.unconnected_closed, 2);
    ASSERT_EQ(poll_status(c, "GET", sids[0], ""), 400);
    ASSERT_EQ(poll_status(c, "POST", sids[1], "40"), 400);
    /* A CONNECT takes a session out of the count; a poll protects it from the next ones. */
    ASSERT_EQ(poll_status(c, "POST", sids[2], "40"), 200);
    tc *held = tc_connect(t->port);
    char get[128];
    snprintf(get, sizeof get, "GET /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\n\r\n",
             sids[3]);
    tc_sends(held, get); /* held: nothing is queued for it */
    usleep(50 * 1000);
    ts_stats(t, &st);
    ASSERT_EQ(st.unconnected, 2);
    poll_handshake(c, sids[5]);
    poll_handshake(c, sids[5]);
    ts_stats(t, &st);
    ASSERT_EQ(st.unconnected, 3);
    ASSERT_EQ(st.unconnected_closed, 3); /* sids[4], which never polled, went first */
    ASSERT_EQ(poll_status(c, "GET", sids[4], ""), 400);
    tc_free(held);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(eio_unconnected)
{
    ps_server_opts o = {.max_unconnected_per_address = 3, .shutdown_grace_ms = 300};
    ts_run(&o, NULL, unconnected_client, NULL);
    return 0;
}
