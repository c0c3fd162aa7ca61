/*
 * test_worker: what workers are built of, in one process. The worker index stamped into ids;
 * the publish codec between workers and nodes (every hostile shape refused); net's IPC pipes
 * (order, a large message, a missing peer, a hostile frame) and the hand-over of a live TCP
 * connection through one, with its first bytes, to a second listener that answers on it; and
 * http's halt at a head that cfg->route gives away, with the head rebuilt and every later
 * byte kept. The supervisor and real workers are covered by tests/integration/workers.test.mjs.
 */
#include "broker.h"
#include "client.h"
#include "worker.h"

#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>

TEST_IMPL(worker_ids)
{
    for (int w = 0; w < PS__MAX_WORKERS; w++) {
        char sid[PS__SID_LEN + 1];
        ps__random_sid(sid);
        ps__id_set_worker(sid, w);
        ASSERT_EQ(ps__id_worker(sid), w);
        ASSERT_EQ(strlen(sid), PS__SID_LEN);
    }
    ASSERT_EQ(ps__id_worker(""), -1);
    ASSERT_EQ(ps__id_worker(NULL), -1);
    ASSERT_EQ(ps__id_worker("~abc"), -1);
    ASSERT_EQ(ps__id_worker("%41"), -1);
    ASSERT_EQ(ps__id_worker("Ab"), 0);
    ASSERT_EQ(ps__id_worker("_x"), 63);
    return 0;
}

/* ---- the publish codec ----------------------------------------------------------------- */

static void encode(ps__buf *out, const char *topic, const char *event, const char *payload)
{
    ps__bmsg m = {.flags = 0,
                  .worker = 3,
                  .seq = 0x0102030405060708ull,
                  .topic = topic,
                  .topic_len = strlen(topic),
                  .event = event,
                  .event_len = strlen(event),
                  .payload = payload,
                  .payload_len = strlen(payload)};
    memset(m.node, 0xab, sizeof m.node);
    ps__buf_reset(out);
    ps__bmsg_encode(out, &m);
}

static const char *refuse(const void *data, size_t len, size_t max)
{
    ps__bmsg m;
    const char *err = NULL;
    ASSERT_EQ(ps__bmsg_decode(data, len, max, &m, &err), -1);
    ASSERT_NOT_NULL(err);
    return err;
}

TEST_IMPL(broker_codec)
{
    ps__buf b;
    ps__buf_init(&b);
    encode(&b, "room:1", "news", "{\"a\":[1,2]}");
    ASSERT_EQ(b.len, PS__BMSG_HEAD + 6 + 4 + 11);
    ASSERT_EQ(PS__BMSG_HEAD, 38);
    ASSERT_MEM_EQ(b.base, 4, "PSB\x01", 4);
    ps__bmsg m;
    const char *err = NULL;
    ASSERT_EQ(ps__bmsg_decode(b.base, b.len, 1 << 20, &m, &err), 0);
    ASSERT_EQ(m.version, PS__BMSG_VERSION);
    ASSERT_EQ(m.worker, 3);
    ASSERT_EQ(m.seq, 0x0102030405060708ull);
    ASSERT_EQ(m.node[0], 0xab);
    ASSERT_EQ(m.node[15], 0xab);
    ASSERT_MEM_EQ(m.topic, m.topic_len, "room:1", 6);
    ASSERT_MEM_EQ(m.event, m.event_len, "news", 4);
    ASSERT_MEM_EQ(m.payload, m.payload_len, "{\"a\":[1,2]}", 11);

    /* Cut at every length, payload included: refused, never read past the end (ASan). */
    for (size_t n = 0; n < b.len; n++) {
        char *copy = ps__malloc(n ? n : 1);
        memcpy(copy, b.base, n);
        ASSERT_STR_EQ(refuse(copy, n, 1 << 20), "truncated");
        ps__free(copy);
    }
    /* A byte too many. */
    ps__buf_appendc(&b, '1');
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "trailing bytes");
    encode(&b, "room:1", "news", "{\"a\":[1,2]}");
    /* Oversized, unknown version, another magic. */
    ASSERT_STR_EQ(refuse(b.base, b.len, b.len - 1), "oversized");
    b.base[3] = 2;
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "unknown version");
    b.base[3] = 0;
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "unknown version");
    b.base[3] = PS__BMSG_VERSION;
    b.base[0] = 'X';
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "not a pulsec message");
    /* Lengths that point past the end. */
    encode(&b, "t", "e", "1");
    b.base[30] = (char)0xff;
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "truncated");
    encode(&b, "t", "e", "1");
    b.base[33] = 2; /* the event would swallow the payload */
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "truncated");
    encode(&b, "t", "e", "1");
    b.base[34] = 1; /* a payload of 16 MiB */
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "truncated");
    encode(&b, "t", "e", "");
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "empty payload");
    /* Invalid names. */
    encode(&b, "t\xff", "e", "1");
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "invalid topic");
    char big[PS_TOPIC_MAX + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    encode(&b, big, "e", "1");
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "invalid topic");
    encode(&b, "t", "\xc3", "1");
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "invalid event");
    /* A zero-length topic reads as no topic. */
    encode(&b, "", "e", "1");
    ASSERT_STR_EQ(refuse(b.base, b.len, 1 << 20), "invalid topic");
    ps__buf_free(&b);
    return 0;
}

/* ---- IPC and hand-over ----------------------------------------------------------------- */

static struct {
    ps__listener front;  /* where the client connects */
    ps__listener back;   /* where handed-over connections go */
    ps__ipc_server *srv; /* back's pipe */
    ps__ipc *pipe;       /* front -> back */
    ps__ipc *missing;    /* to a path nobody listens on */
    int messages;
    int expect_next;
    size_t big_len;
    int done_ok, done_failed;
    int missing_failed;
    bool closing;
} ipc;

static void back_on_read(ps__conn *c, const char *data, size_t len)
{
    /* The new owner reads what the client sends after the hand-over: echo it. */
    ps__conn_write(c, data, len);
}

static void back_on_eof(ps__conn *c)
{
    ps__conn_close(c);
}

static const ps__conn_cbs back_cbs = {.on_read = back_on_read, .on_eof = back_on_eof};

static void teardown(void);

static void on_ipc_message(ps__ipc *p, const char *data, size_t len, ps__conn *conn)
{
    if (conn) {
        /* The bytes that came with it, then what the client sends later, on the same socket. */
        ASSERT_MEM_EQ(data, len, "first bytes", 11);
        conn->cbs = &back_cbs;
        char reply[64];
        int n = snprintf(reply, sizeof reply, "got:%.*s;", (int)len, data);
        ps__conn_write(conn, reply, (size_t)n);
        ps__conn_start(conn);
        return;
    }
    if (len > 1000) {
        ipc.big_len = len;
        for (size_t i = 0; i < len; i++)
            ASSERT_EQ((uint8_t)data[i], (uint8_t)(i * 7));
        return;
    }
    int n = atoi(data);
    ASSERT_EQ(n, ipc.expect_next);
    ipc.expect_next++;
    ipc.messages++;
}

static const ps__ipc_cbs ipc_cbs = {on_ipc_message, NULL};

static void on_done(void *user, ps__conn *pass, int status)
{
    if (status == 0)
        ipc.done_ok++;
    else
        ipc.done_failed++;
    ASSERT_NULL(pass);
}

static void on_missing_done(void *user, ps__conn *pass, int status)
{
    ASSERT_NE(status, 0);
    ipc.missing_failed++;
}

static void front_on_conn(ps__listener *l, ps__conn *c)
{
    /* Handed over at once, with "first bytes" as the input already read. */
    c->cbs = NULL;
    ASSERT_EQ(ps__ipc_send(ipc.pipe, "", 0, "first bytes", 11, c, on_done, NULL), 0);
}

static void listener_closed(ps__listener *l) {}

static void teardown(void)
{
    if (ipc.closing)
        return;
    ipc.closing = true;
    ps__ipc_close(ipc.pipe);
    ps__ipc_server_close(ipc.srv);
    ps__listener_close(&ipc.front, listener_closed);
    ps__listener_close(&ipc.back, listener_closed);
}

static int ipc_port;
static char ipc_path[128];

static void ipc_client(void *arg)
{
    uv_loop_t *loop = arg;
    (void)loop;
    tc *c = tc_connect(ipc_port);
    /* The connection was accepted by `front` and answered by `back`, in another "process". */
    const char want[] = "got:first bytes;";
    while (c->in.len < sizeof want - 1)
        ASSERT_GT(tc_fill(c), 0);
    ASSERT_MEM_EQ(c->in.base, sizeof want - 1, want, sizeof want - 1);
    ps__buf_consume(&c->in, sizeof want - 1);
    tc_sends(c, "later");
    while (c->in.len < 5)
        ASSERT_GT(tc_fill(c), 0);
    ASSERT_MEM_EQ(c->in.base, 5, "later", 5);
    tc_free(c);
}

static void ipc_check(uv_timer_t *t)
{
    /* Until every message arrived and the client is done. */
    if (ipc.messages < 1000 || ipc.big_len == 0 || ipc.missing_failed == 0 || ipc.done_ok < 1002)
        return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    teardown();
}

static uv_thread_t client_thread;

TEST_IMPL(net_ipc_hand_over)
{
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    snprintf(ipc_path, sizeof ipc_path, "/tmp/pulsec-test-%d.sock", (int)getpid());
    ASSERT_EQ(ps__listener_init(&ipc.front, &loop), 0);
    ASSERT_EQ(ps__listener_init(&ipc.back, &loop), 0);
    ipc.front.on_conn = front_on_conn;
    ASSERT_EQ(ps__listener_start(&ipc.front, "127.0.0.1", 0, 16), 0);
    ipc_port = ipc.front.port;
    int rc = -1;
    ipc.srv = ps__ipc_listen(&loop, ipc_path, &ipc.back, &ipc_cbs, NULL, &rc);
    ASSERT_NOT_NULL(ipc.srv);
    ASSERT_EQ(rc, 0);
    ipc.pipe = ps__ipc_connect(&loop, ipc_path, &ipc_cbs, NULL);
    /* Queued before the connect completes; delivered in order. */
    for (int i = 0; i < 1000; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "%d", i);
        ASSERT_EQ(ps__ipc_send(ipc.pipe, m, (size_t)n + 1, NULL, 0, NULL, on_done, NULL), 0);
    }
    size_t big = 1024 * 1024;
    char *data = ps__malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)(uint8_t)(i * 7);
    ASSERT_EQ(ps__ipc_send(ipc.pipe, data, 100, data + 100, big - 100, NULL, on_done, NULL), 0);
    ps__free(data);
    ASSERT_GT(ps__ipc_queued(ipc.pipe), big);
    ASSERT_EQ(ps__ipc_send(ipc.pipe, "x", 1, NULL, PS__IPC_MAX_MESSAGE, NULL, on_done, NULL),
              UV_E2BIG);
    /* Nobody listens there: the send fails (later, through done), the pipe shows failed. */
    ipc.missing = ps__ipc_connect(&loop, "/tmp/pulsec-test-nobody.sock", &ipc_cbs, NULL);
    ASSERT_EQ(ps__ipc_send(ipc.missing, "x", 1, NULL, 0, NULL, on_missing_done, NULL), 0);

    uv_timer_t check;
    uv_timer_init(&loop, &check);
    uv_timer_start(&check, ipc_check, 10, 10);
    ASSERT_EQ(uv_thread_create(&client_thread, ipc_client, &loop), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_thread_join(&client_thread);
    ASSERT_EQ(ipc.messages, 1000);
    ASSERT_EQ(ipc.big_len, big);
    ASSERT_EQ(ipc.done_ok, 1002);
    ASSERT_EQ(ipc.done_failed, 0);
    ASSERT_EQ(ipc.missing_failed, 1);
    unlink(ipc_path);
    PS_ASSERT_LOOP_CLEAN(&loop);
    return 0;
}

/* A frame announcing more than PS__IPC_MAX_MESSAGE, or a connection that never comes, ends the
 * pipe that sent it; the server goes on accepting. */
static struct {
    int messages;
    ps__ipc_server *srv;
} bad;

static void bad_on_message(ps__ipc *p, const char *data, size_t len, ps__conn *conn)
{
    bad.messages++;
    ASSERT_NULL(conn);
}

static const ps__ipc_cbs bad_cbs = {bad_on_message, NULL};

static void bad_client(void *arg)
{
    const char *path = arg;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    static const uint8_t frames[][6] = {
        {0xff, 0xff, 0xff, 0xff, 0, 'x'}, /* 4 GiB */
        {0, 0, 0, 1, 2, 'x'},             /* flag 2 */
        {0, 0, 0, 1, 1, 'x'},             /* a connection announced, none sent */
        {0, 0, 0, 1, 0, 'k'},             /* a good one */
    };
    for (size_t i = 0; i < PS__ARRAY_SIZE(frames); i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        ASSERT_EQ(write(fd, frames[i], sizeof frames[i]), (ssize_t)sizeof frames[i]);
        char b;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (i < 3)
            ASSERT_EQ(read(fd, &b, 1), 0); /* closed by the server */
        close(fd);
    }
}

static void bad_check(uv_timer_t *t)
{
    if (bad.messages < 1)
        return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    ps__ipc_server_close(bad.srv);
}

TEST_IMPL(net_ipc_hostile_frames)
{
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    char path[128];
    snprintf(path, sizeof path, "/tmp/pulsec-test-bad-%d.sock", (int)getpid());
    int rc;
    bad.srv = ps__ipc_listen(&loop, path, NULL, &bad_cbs, NULL, &rc);
    ASSERT_NOT_NULL(bad.srv);
    uv_timer_t check;
    uv_timer_init(&loop, &check);
    uv_timer_start(&check, bad_check, 10, 10);
    uv_thread_t th;
    ASSERT_EQ(uv_thread_create(&th, bad_client, path), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_thread_join(&th);
    ASSERT_EQ(bad.messages, 1);
    unlink(path);
    PS_ASSERT_LOOP_CLEAN(&loop);
    return 0;
}

/* ---- http: halting at a head given away ------------------------------------------------ */

static struct {
    ps__listener l;
    ps__http_config cfg;
    ps__buf got;
    int routed, requests;
    int port;
} hh;

static int hh_route(void *user, const ps__http_req *req)
{
    /* Only /away is given away, and only once its head is complete: the body is unread. */
    if (strcmp(req->path, "/away") != 0)
        return -1;
    ASSERT_EQ(req->body_len, 0);
    ASSERT_STR_EQ(ps__http_header_get(req, "X-Long"), "v");
    return 7;
}

static void hh_hand_over(void *user, ps__conn *c, const char *bytes, size_t len, int route)
{
    ASSERT_EQ(route, 7);
    hh.routed++;
    ps__buf_append(&hh.got, bytes, len);
    ps__conn_write(c, PS__STRLIT("handed"));
    ps__conn_close(c);
}

static bool hh_on_request(void *user, ps__http_req *req)
{
    hh.requests++;
    ps__http_respond(req, 200, "text/plain", PS__STRLIT("here"), NULL);
    return true;
}

static void hh_on_conn(ps__listener *l, ps__conn *c)
{
    ps__http_attach(c, &hh.cfg);
}

static void hh_client(void *arg)
{
    tc *c = tc_connect(hh.port);
    /* A request handled here, then one given away, sent in pieces (the head spans reads), with
     * a body and a pipelined request behind it. */
    tc_sends(c, "GET /here HTTP/1.1\r\nHost: h\r\n\r\n");
    tresp r;
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);
    tc_sends(c, "POST /away?sid=1 HTTP/1.1\r\nHo");
    usleep(20000);
    tc_sends(c, "st: h\r\nX-Long:   v\r\nContent-Length: 4\r\n\r");
    usleep(20000);
    tc_sends(c, "\nbodyGET /next HTTP/1.1\r\n\r\n");
    while (c->in.len < 6) {
        if (tc_fill(c) <= 0)
            break;
    }
    ASSERT_MEM_EQ(c->in.base, c->in.len, "handed", 6);
    tc_free(c);
}

static void hh_closed(ps__listener *l) {}

static void hh_check(uv_timer_t *t)
{
    if (hh.routed == 0 || hh.l.nconns > 0)
        return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    ps__listener_close(&hh.l, hh_closed);
}

TEST_IMPL(http_hand_over)
{
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ps__buf_init(&hh.got);
    hh.cfg = (ps__http_config){.max_header_size = 8192,
                               .max_body_size = 1024,
                               .on_request = hh_on_request,
                               .route = hh_route,
                               .hand_over = hh_hand_over};
    ASSERT_EQ(ps__listener_init(&hh.l, &loop), 0);
    hh.l.on_conn = hh_on_conn;
    ASSERT_EQ(ps__listener_start(&hh.l, "127.0.0.1", 0, 16), 0);
    hh.port = hh.l.port;
    uv_timer_t check;
    uv_timer_init(&loop, &check);
    uv_timer_start(&check, hh_check, 10, 10);
    uv_thread_t th;
    ASSERT_EQ(uv_thread_create(&th, hh_client, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_thread_join(&th);
    ASSERT_EQ(hh.requests, 1); /* /here only: /away and /next went with the hand-over */
    ASSERT_EQ(hh.routed, 1);
    const char want[] = "POST /away?sid=1 HTTP/1.1\r\nHost: h\r\nX-Long: v\r\n"
                        "Content-Length: 4\r\n\r\nbodyGET /next HTTP/1.1\r\n\r\n";
    ASSERT_MEM_EQ(hh.got.base, hh.got.len, want, sizeof want - 1);
    ps__buf_free(&hh.got);
    PS_ASSERT_LOOP_CLEAN(&loop);
    return 0;
}
