/*
 * server: the public lifecycle. Creation with bad options, new + free without listening (on its
 * own loop and on the app's), the thread-safe post (in order, on the loop thread, refused once
 * stopped), graceful stop with WebSocket clients (1001, the run returns, even when a client never
 * answers), idle HTTP connections closed on stop, stop by signal, and a port already in use.
 */
#include "client.h"

#include <signal.h>
#include <sys/socket.h>

TEST_IMPL(server_new_free)
{
    /* Defaults, its own loop, never listened: nothing leaks (LeakSanitizer), nothing hangs. */
    ps_server *srv = ps_server_new(NULL, NULL);
    ASSERT_NOT_NULL(srv);
    ASSERT_NOT_NULL(ps_server_loop(srv));
    ASSERT_EQ(ps_server_port(srv), -1);
    ps_server_stats st;
    ps_server_get_stats(srv, &st);
    ASSERT_EQ(st.connections, 0);
    ASSERT_EQ(st.sessions, 0);
    ps_server_free(srv);

    ps_server_opts o = {.port = 0, .path = "/rt/", .ping_interval_ms = 10};
    srv = ps_server_new(NULL, &o);
    ASSERT_NOT_NULL(srv);
    ps_namespace_hooks hooks = {0};
    ASSERT_EQ(ps_namespace(srv, "/admin", &hooks), 0);
    ASSERT_EQ(ps_namespace(srv, "/admin", NULL), 0);
    ps_server_free(srv);
    ps_server_free(NULL);

    /* Invalid options are refused (and logged), never half-built. */
    ps_server_opts bad_path = {.path = "socket.io"};
    ASSERT_NULL(ps_server_new(NULL, &bad_path));
    ps_server_opts bad_port = {.port = 65536};
    ASSERT_NULL(ps_server_new(NULL, &bad_port));
    ps_server_opts neg_port = {.port = -1};
    ASSERT_NULL(ps_server_new(NULL, &neg_port));
    ps_server_opts bad_dir = {.static_dir = "/nonexistent/pulsec/test"};
    ASSERT_NULL(ps_server_new(NULL, &bad_dir));
    return 0;
}

static void own_loop_client(void *arg)
{
    ps_server *srv = arg;
    tresp r;
    ASSERT_EQ(tc_request(ps_server_port(srv), "GET /healthz HTTP/1.1\r\n\r\n", &r), 200);
    tresp_free(&r);
    ts t = {.srv = srv};
    ts_stop(&t);
}

TEST_IMPL(server_own_loop)
{
    /* The server makes and owns its loop: run, stop from another thread, free. Whatever the
     * loop still held would leak, which LeakSanitizer reports in the asan build. */
    ps_server_opts o = {.host = "127.0.0.1", .port = 0};
    ps_server *srv = ps_server_new(NULL, &o);
    ASSERT_NOT_NULL(srv);
    ASSERT_EQ(ps_server_listen(srv), 0);
    uv_thread_t th;
    ASSERT_EQ(uv_thread_create(&th, own_loop_client, srv), 0);
    ASSERT_EQ(ps_server_run(srv), 0);
    ASSERT_EQ(uv_thread_join(&th), 0);
    ps_server_free(srv);
    return 0;
}

TEST_IMPL(server_new_free_app_loop)
{
    /* On the app's loop, freed before listening: the loop must be left clean. */
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ps_server *srv = ps_server_new(&loop, NULL);
    ASSERT_NOT_NULL(srv);
    ASSERT(ps_server_loop(srv) == &loop);
    ps_server_free(srv);
    PS_ASSERT_LOOP_CLEAN(&loop);
    return 0;
}

/* ---- posting from another thread ------------------------------------------------------- */

typedef struct post_state {
    uv_thread_t loop_thread;
    int ran[100];
    int nran;
    uv_sem_t done;
} post_state;

static post_state posts;

static void record(ps_server *srv, void *arg)
{
    uv_thread_t self = uv_thread_self();
    ASSERT(uv_thread_equal(&self, &posts.loop_thread));
    posts.ran[posts.nran++] = (int)(intptr_t)arg;
    if (posts.nran == 100)
        uv_sem_post(&posts.done);
}

static void post_client(ts *t)
{
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(ps_server_post(t->srv, record, (void *)(intptr_t)i), 0);
    ASSERT_EQ(ps_server_post(t->srv, NULL, NULL), PS_EINVAL);
    uv_sem_wait(&posts.done);
    ts_stop(t);
}

static void post_setup(ts *t)
{
    posts.loop_thread = uv_thread_self();
}

TEST_IMPL(server_post)
{
    ASSERT_EQ(uv_sem_init(&posts.done, 0), 0);
    ts_run(NULL, post_setup, post_client, NULL);
    ASSERT_EQ(posts.nran, 100);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(posts.ran[i], i);
    uv_sem_destroy(&posts.done);
    return 0;
}

static void never_run(ps_server *srv, void *arg)
{
    ps_test_fail(__FILE__, __LINE__, "a post accepted after stop ran");
}

static void on_stop_now(ps_server *srv, void *arg)
{
    ps_server_stop(srv);
    ps_server_stop(srv); /* idempotent */
}

TEST_IMPL(server_post_after_stop)
{
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ps_server *srv = ps_server_new(&loop, NULL);
    ASSERT_NOT_NULL(srv);
    ASSERT_EQ(ps_server_post(srv, on_stop_now, NULL), 0);
    ASSERT_EQ(ps_server_run(srv), 0);
    /* Stopped and the loop returned: posting is refused, fn never runs. */
    ASSERT_EQ(ps_server_post(srv, never_run, NULL), PS_ECLOSED);
    ASSERT_EQ(ps_server_listen(srv), PS_ECLOSED);
    ps_server_free(srv);
    PS_ASSERT_LOOP_CLEAN(&loop);
    return 0;
}

/* ---- graceful stop --------------------------------------------------------------------- */

static void stop_ws_client(ts *t)
{
    tc *ws = tc_sio_connect(t);
    char sid[PS__SID_LEN + 1];
    tc *raw = tc_eio_open(t, sid);  /* an Engine.IO session with no namespace yet */
    tc *idle = tc_connect(t->port); /* a keep-alive HTTP connection between requests */
    tc_sends(idle, "GET /healthz HTTP/1.1\r\n\r\n");
    tresp r;
    tc_read_response(idle, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);

    ts_stop(t);
    ASSERT_EQ(tc_ws_expect_close(ws), 1001);
    ASSERT_EQ(tc_ws_expect_close(raw), 1001);
    tc_expect_eof(idle);
    tc_free(ws);
    tc_free(raw);
    tc_free(idle);

    /* The listener is gone: new connections are refused. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_NE(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
}

TEST_IMPL(server_stop_ws)
{
    ps_server_opts o = {.shutdown_grace_ms = 1000};
    uint64_t start = uv_hrtime();
    ts_run(&o, NULL, stop_ws_client, NULL);
    /* Every peer answered: the stop did not wait for the grace period. */
    ASSERT_LT((uv_hrtime() - start) / 1000000, 1000);
    return 0;
}

static void stop_silent_client(ts *t)
{
    tc *polite = tc_sio_connect(t);
    tc *silent = tc_sio_connect(t);
    ts_stop(t);
    ASSERT_EQ(tc_ws_expect_close(polite), 1001);
    /* Reads the close frame but never answers: the server gives up after the grace period. */
    tframe f;
    ASSERT(tc_ws_read(silent, &f));
    ASSERT_EQ(f.opcode, WS_CLOSE);
    ASSERT_EQ(((uint8_t)f.payload.base[0] << 8) | (uint8_t)f.payload.base[1], 1001);
    tframe_free(&f);
    uint64_t start = uv_hrtime();
    tc_expect_eof(silent);
    uint64_t ms = (uv_hrtime() - start) / 1000000;
    ASSERT_LT(ms, 2000);
    tc_free(polite);
    tc_free(silent);
}

TEST_IMPL(server_stop_silent_client)
{
    ps_server_opts o = {.shutdown_grace_ms = 200};
    uint64_t start = uv_hrtime();
    ts_run(&o, NULL, stop_silent_client, NULL);
    ASSERT_LT((uv_hrtime() - start) / 1000000, 3000);
    return 0;
}

static void signal_client(ts *t)
{
    tc *ws = tc_sio_connect(t);
    ASSERT_EQ(kill(getpid(), SIGTERM), 0);
    ASSERT_EQ(tc_ws_expect_close(ws), 1001);
    tc_free(ws);
}

TEST_IMPL(server_stop_signal)
{
    ps_server_opts o = {.shutdown_grace_ms = 500};
    ts_run(&o, NULL, signal_client, NULL);
    return 0;
}

TEST_IMPL(server_port_in_use)
{
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ps_server *a = ps_server_new(&loop, NULL);
    ASSERT_EQ(ps_server_listen(a), 0);
    ps_server_opts o = {.port = ps_server_port(a)};
    ps_server *b = ps_server_new(&loop, &o);
    ASSERT_EQ(ps_server_listen(b), UV_EADDRINUSE);
    ASSERT_EQ(ps_server_port(b), -1);
    ASSERT_EQ(ps_server_run(b), UV_EADDRINUSE);
    /* Both stop and release everything. */
    ps_server_stop(a);
    ps_server_stop(b);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ps_server_free(a);
    ps_server_free(b);
    PS_ASSERT_LOOP_CLEAN(&loop);
    return 0;
}

TEST_IMPL(server_stats_fields)
{
    /* Every field, in declaration order, by its own name and with its own value. */
    ps_server_stats st;
    uint64_t *raw = (uint64_t *)&st;
    size_t n = sizeof st / sizeof(uint64_t);
    for (size_t i = 0; i < n; i++)
        raw[i] = 1000 + i;
    const char *name = NULL;
    uint64_t value = 0;
    size_t i = 0;
    for (; ps_server_stats_field(&st, i, &name, &value); i++) {
        ASSERT_NOT_NULL(name);
        ASSERT_EQ(value, 1000 + i);
    }
    ASSERT_EQ(i, n);
    ASSERT(ps_server_stats_field(&st, 0, &name, &value));
    ASSERT_STR_EQ(name, "connections");
    ASSERT(ps_server_stats_field(&st, n - 1, &name, &value));
    ASSERT_STR_EQ(name, "resume_overflow");
    st.tls_failures = 77;
    for (i = 0; ps_server_stats_field(&st, i, &name, &value); i++)
        if (strcmp(name, "tls_failures") == 0)
            ASSERT_EQ(value, 77);
    ASSERT(!ps_server_stats_field(&st, n, &name, &value));
    return 0;
}
