/*
 * test_broker: Redis URLs (pure), and the broker against Debian's redis-server, started by the
 * test on a unix socket in a temporary directory: ps_redis_command replies (string, integer,
 * array, nil, error), argument checks, and exactly-once completion when Redis is killed with
 * a command still pending (BLPOP), then the reconnect once Redis is back.
 */
#include "broker.h"
#include "client.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static void url_ok(const char *url, bool unix_socket, const char *host_or_path, int port, int db,
                   const char *user, const char *password)
{
    ps__redis_url u;
    const char *err = "unset";
    if (ps__redis_url_parse(url, &u, &err) != 0)
        ps_test_fail(__FILE__, __LINE__, "%s refused: %s", url, err);
    ASSERT_EQ(u.unix_socket, unix_socket);
    ASSERT_STR_EQ(unix_socket ? u.path : u.host, host_or_path);
    if (!unix_socket)
        ASSERT_EQ(u.port, port);
    ASSERT_EQ(u.db, db);
    ASSERT_STR_EQ(u.user, user);
    ASSERT_STR_EQ(u.password, password);
}

static void url_bad(const char *url)
{
    ps__redis_url u;
    const char *err = NULL;
    if (ps__redis_url_parse(url, &u, &err) == 0)
        ps_test_fail(__FILE__, __LINE__, "%s accepted", url ? url : "(null)");
    ASSERT_NOT_NULL(err);
}

TEST_IMPL(redis_url)
{
    url_ok("redis://localhost", false, "localhost", 6379, 0, "", "");
    url_ok("redis://127.0.0.1:7000/3", false, "127.0.0.1", 7000, 3, "", "");
    url_ok("redis://[::1]:6380/0", false, "::1", 6380, 0, "", "");
    url_ok("redis://:s3cr%40t@redis.internal/2", false, "redis.internal", 6379, 2, "", "s3cr@t");
    url_ok("redis://app:pw@h:1/", false, "h", 1, 0, "app", "pw");
    url_ok("unix:///run/redis/redis.sock", true, "/run/redis/redis.sock", 0, 0, "", "");
    url_ok("unix:///tmp/r%20s.sock?db=5&password=p", true, "/tmp/r s.sock", 0, 5, "", "p");
    url_ok("redis+unix:///r.sock?db=1", true, "/r.sock", 0, 1, "", "");
    url_bad(NULL);
    url_bad("");
    url_bad("http://localhost");
    url_bad("redis://");
    url_bad("redis://:6379");
    url_bad("redis://h:0");
    url_bad("redis://h:65536");
    url_bad("redis://h:12x");
    url_bad("redis://h/x");
    url_bad("redis://h/1/2");
    url_bad("redis://[::1");
    url_bad("redis://h:1/0?timeout=3");
    url_bad("unix://relative.sock");
    url_bad("unix://");
    url_bad("unix:///r.sock?db=x");
    url_bad("unix:///r.sock?nope=1");
    url_bad("unix:///r%00.sock");
    char long_host[300];
    memset(long_host, 'h', sizeof long_host);
    memcpy(long_host, "redis://", 8);
    long_host[sizeof long_host - 1] = '\0';
    url_bad(long_host);
    return 0;
}

/* ---- against a real redis-server ------------------------------------------------------- */

static char dir[64], sock[96];
static pid_t redis_pid;

static bool redis_answers(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        char buf[16] = {0};
        struct timeval tv = {.tv_sec = 1};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ok = write(fd, "PING\r\n", 6) == 6 && read(fd, buf, sizeof buf - 1) > 0 &&
             strcmp(buf, "+PONG\r\n") == 0;
    }
    close(fd);
    return ok;
}

static void redis_start(void)
{
    redis_pid = fork();
    ASSERT_GE(redis_pid, 0);
    if (redis_pid == 0) {
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock,
               "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir,
               "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && !redis_answers(); i++)
        usleep(10000);
    ASSERT(redis_answers());
}

static void redis_kill(void)
{
    kill(redis_pid, SIGKILL);
    int status;
    waitpid(redis_pid, &status, 0);
    redis_pid = 0;
}

static struct {
    atomic_int step;
    atomic_int get_ok, int_ok, arr_ok, nil_ok, err_ok, blpop_calls, blpop_status, after_ok;
    atomic_int einval, eclosed_sync;
} st;

static void on_set(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_OK);
    ASSERT_STR_EQ(json_string_value(reply), "OK");
}

static void on_get(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_OK);
    ASSERT_STR_EQ(json_string_value(reply), "v é");
    st.get_ok++;
}

static void on_incr(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_OK);
    ASSERT_EQ(json_integer_value(reply), 1);
    st.int_ok++;
}

static void on_lrange(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_OK);
    ASSERT_EQ(json_array_size(reply), 2);
    ASSERT_STR_EQ(json_string_value(json_array_get(reply, 0)), "b");
    ASSERT_STR_EQ(json_string_value(json_array_get(reply, 1)), "a");
    st.arr_ok++;
}

static void on_ok(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_OK);
}

static void on_nil(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_OK);
    ASSERT(json_is_null(reply));
    st.nil_ok++;
}

static void on_error(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_EREMOTE);
    ASSERT(strstr(json_string_value(reply), "ERR") != NULL);
    st.err_ok++;
}

static void on_blpop(ps_server *srv, int status, json_t *reply, void *user)
{
    st.blpop_calls++;
    st.blpop_status = status;
    ASSERT_NULL(reply);
}

static void on_after(ps_server *srv, int status, json_t *reply, void *user)
{
    ASSERT_EQ(status, PS_OK);
    st.after_ok++;
}

static int command(ps_server *srv, ps_redis_cb cb, const char *fmt)
{
    json_t *argv = json_loads(fmt, 0, NULL);
    ASSERT_NOT_NULL(argv);
    int rc = ps_redis_command(srv, argv, cb, NULL);
    json_decref(argv);
    return rc;
}

static void wait_up(ts *t)
{
    for (int i = 0; i < 1000; i++) {
        ps_server_stats s;
        ts_stats(t, &s);
        if (s.redis_up)
            return;
        usleep(10000);
    }
    ps_test_fail(__FILE__, __LINE__, "the broker never came up");
}

static void do_commands(ts *t)
{
    ASSERT_EQ(command(t->srv, on_set, "[\"SET\", \"k\", \"v é\"]"), 0);
    ASSERT_EQ(command(t->srv, on_get, "[\"GET\", \"k\"]"), 0);
    ASSERT_EQ(command(t->srv, on_incr, "[\"INCR\", \"n\"]"), 0);
    ASSERT_EQ(command(t->srv, NULL, "[\"RPUSH\", \"l\", \"x\"]"), PS_EINVAL);
    ASSERT_EQ(command(t->srv, on_set, "[]"), PS_EINVAL);
    ASSERT_EQ(command(t->srv, on_set, "[\"GET\", 1]"), PS_EINVAL);
    ASSERT_EQ(command(t->srv, on_set, "{\"a\":1}"), PS_EINVAL);
    ASSERT_EQ(command(t->srv, on_ok, "[\"LPUSH\", \"l\", \"a\"]"), 0);
    ASSERT_EQ(command(t->srv, on_nil, "[\"GET\", \"missing\"]"), 0);
    ASSERT_EQ(command(t->srv, on_error, "[\"NOSUCHCOMMAND\"]"), 0);
}

static void do_push_b(ts *t)
{
    ASSERT_EQ(command(t->srv, on_ok, "[\"LPUSH\", \"l\", \"b\"]"), 0);
    ASSERT_EQ(command(t->srv, on_lrange, "[\"LRANGE\", \"l\", \"0\", \"-1\"]"), 0);
}

static void do_blpop(ts *t)
{
    /* Blocks in Redis until the connection dies: the callback must come exactly once. */
    ASSERT_EQ(command(t->srv, on_blpop, "[\"BLPOP\", \"never\", \"0\"]"), 0);
}

static void do_while_down(ts *t)
{
    st.eclosed_sync = command(t->srv, on_after, "[\"PING\"]");
}

static void do_after(ts *t)
{
    ASSERT_EQ(command(t->srv, on_after, "[\"PING\"]"), 0);
}

static void client_broker(ts *t)
{
    wait_up(t);
    ts_on_loop(t, do_commands);
    ts_on_loop(t, do_push_b);
    for (int i = 0; i < 500 && st.arr_ok < 1; i++)
        usleep(10000);
    ASSERT_EQ(st.get_ok, 1);
    ASSERT_EQ(st.int_ok, 1);
    ASSERT_EQ(st.nil_ok, 1);
    ASSERT_EQ(st.err_ok, 1);
    ASSERT_EQ(st.arr_ok, 1);
    ts_on_loop(t, do_blpop);
    usleep(100000);
    ASSERT_EQ(st.blpop_calls, 0);
    redis_kill();
    for (int i = 0; i < 500 && st.blpop_calls == 0; i++)
        usleep(10000);
    ASSERT_EQ(st.blpop_calls, 1);
    ASSERT_EQ(st.blpop_status, PS_ECLOSED);
    ts_on_loop(t, do_while_down);
    ASSERT_EQ(st.eclosed_sync, PS_ECLOSED);
    redis_start();
    wait_up(t);
    ts_on_loop(t, do_after);
    for (int i = 0; i < 500 && st.after_ok == 0; i++)
        usleep(10000);
    ASSERT_EQ(st.after_ok, 1);
    ASSERT_EQ(st.blpop_calls, 1); /* still exactly once */
    ps_server_stats s;
    ts_stats(t, &s);
    ASSERT_EQ(s.redis_up, 1);
    ASSERT_GE(s.redis_reconnects, 1);
    ts_stop(t);
}

TEST_IMPL(broker_redis)
{
    snprintf(dir, sizeof dir, "/tmp/pulsec-test-redis-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    redis_start();
    char url[160];
    snprintf(url, sizeof url, "unix://%s", sock);
    ps_server_opts o = {.redis_url = url, .redis_timeout_ms = 1000};
    ts_run(&o, NULL, client_broker, NULL);
    if (redis_pid)
        redis_kill();
    unlink(sock);
    rmdir(dir);
    /* Without Redis configured, commands are refused. */
    ps_server *srv = ps_server_new(NULL, NULL);
    ASSERT_EQ(command(srv, on_after, "[\"PING\"]"), PS_EINVAL);
    ps_server_free(srv);
    /* An URL that does not parse refuses the server. */
    ps_server_opts bad = {.redis_url = "redis://h:0"};
    ASSERT_NULL(ps_server_new(NULL, &bad));
    return 0;
}
