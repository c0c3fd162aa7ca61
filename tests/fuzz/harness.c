/*
 * harness: fake accepted connections for the fuzz targets (see harness.h). The ps__conn is built
 * the way net.c's listener_on_connection builds one, minus accept(): its uv_tcp_t wraps one end
 * of a socketpair, so libuv writes, shutdowns and closes behave as on TCP, and net.c's own close
 * callback unlinks and frees it.
 */
#include "harness.h"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

static fz_env env_storage;
static uv_loop_t loop_storage;
static bool env_ready;
static bool show_output; /* PULSEC_FUZZ_SHOW=1: what the server wrote goes to stderr */

fz_env *fz_env_get(void)
{
    fz_env *env = &env_storage;
    if (env_ready)
        return env;
    env_ready = true;
    show_output = getenv("PULSEC_FUZZ_SHOW") != NULL;
    ps__log_set_level(-1); /* hostile input makes every layer log; the fuzzer wants speed */
    signal(SIGPIPE, SIG_IGN);
    FZ_CHECK(uv_loop_init(&loop_storage) == 0);
    env->loop = &loop_storage;
    /* Only the fields connections use: the list, the count and the read buffer. */
    memset(&env->listener, 0, sizeof env->listener);
    env->listener.loop = env->loop;
    ps__list_init(&env->listener.conns);
    for (int i = 0; i < FZ_MAX_CONNS; i++)
        env->slots[i] = (fz_slot){.conn = NULL, .listener = NULL, .peer_fd = -1};
    return env;
}

size_t fz_chunk_size(uint8_t sel)
{
    static const size_t sizes[8] = {SIZE_MAX, 1, 2, 3, 7, 16, 100, 1000};
    return sizes[sel & 7];
}

/* ---- connections ----------------------------------------------------------------------- */

static bool on_list(ps__listener *l, ps__conn *c)
{
    ps__list *pos;
    ps__list_foreach(pos, &l->conns)
    {
        if (pos == &c->link)
            return true;
    }
    return false;
}

/* Frees the slots of connections that are gone (their close callback freed them). */
static void reap_slots(fz_env *env)
{
    for (int i = 0; i < FZ_MAX_CONNS; i++) {
        fz_slot *s = &env->slots[i];
        if (s->conn && !on_list(s->listener, s->conn)) {
            close(s->peer_fd);
            *s = (fz_slot){.conn = NULL, .listener = NULL, .peer_fd = -1};
        }
    }
}

ps__conn *fz_conn_new(fz_env *env, ps__listener *l)
{
    if (!l)
        l = &env->listener;
    reap_slots(env);
    fz_slot *slot = NULL;
    for (int i = 0; i < FZ_MAX_CONNS && !slot; i++)
        if (!env->slots[i].conn)
            slot = &env->slots[i];
    if (!slot)
        return NULL;
    int sv[2];
    FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    ps__conn *c = ps__calloc(1, sizeof *c);
    FZ_CHECK(uv_tcp_init(env->loop, &c->tcp) == 0);
    FZ_CHECK(uv_tcp_open(&c->tcp, sv[0]) == 0);
    c->listener = l;
    ps__list_insert_tail(&l->conns, &c->link);
    l->nconns++;
    snprintf(c->peer, sizeof c->peer, "127.0.0.1");
    *slot = (fz_slot){.conn = c, .listener = l, .peer_fd = sv[1]};
    return c;
}

bool fz_conn_alive(fz_env *env, ps__conn *c)
{
    for (int i = 0; i < FZ_MAX_CONNS; i++)
        if (env->slots[i].conn == c)
            return on_list(env->slots[i].listener, c);
    return false;
}

/* Reads and drops what the connections wrote, so that their socket buffers never fill. */
static void drain_peers(fz_env *env)
{
    static char sink[64 * 1024];
    for (int i = 0; i < FZ_MAX_CONNS; i++) {
        if (env->slots[i].peer_fd < 0)
            continue;
        ssize_t n;
        while ((n = read(env->slots[i].peer_fd, sink, sizeof sink)) > 0) {
            env->out_bytes += (size_t)n;
            if (show_output) {
                fprintf(stderr, "[conn %d wrote %zd bytes]\n", i, n);
                fwrite(sink, 1, (size_t)n, stderr);
                fputc('\n', stderr);
            }
        }
    }
}

void fz_loop_turn(fz_env *env)
{
    drain_peers(env);
    uv_run(env->loop, UV_RUN_NOWAIT);
    drain_peers(env);
}

bool fz_conn_read(fz_env *env, ps__conn *c, const uint8_t *data, size_t len)
{
    if (!fz_conn_alive(env, c) || c->closing)
        return false;
    /* A connection throttled by unread output is not read from until libuv has written it. */
    for (int i = 0; i < 64 && c->throttled && fz_conn_alive(env, c); i++)
        fz_loop_turn(env);
    if (!fz_conn_alive(env, c) || c->closing || c->paused || c->throttled)
        return false;
    if (len > 0 && c->cbs && c->cbs->on_read) {
        char *copy = malloc(len);
        FZ_CHECK(copy);
        memcpy(copy, data, len);
        c->cbs->on_read(c, copy, len);
        free(copy);
    }
    fz_loop_turn(env);
    return fz_conn_alive(env, c) && !c->closing;
}

bool fz_conn_read_chunked(fz_env *env, ps__conn *c, const uint8_t *data, size_t len, size_t chunk)
{
    while (len > 0) {
        size_t n = len < chunk ? len : chunk;
        if (!fz_conn_read(env, c, data, n))
            return false;
        data += n;
        len -= n;
    }
    return fz_conn_alive(env, c) && !c->closing;
}

void fz_conn_eof(fz_env *env, ps__conn *c)
{
    if (!fz_conn_alive(env, c))
        return;
    /* net.c's conn_on_read for nread == UV_EOF. */
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (!c->closing && c->cbs && c->cbs->on_eof)
        c->cbs->on_eof(c);
    else
        ps__conn_abort(c);
    fz_loop_turn(env);
}

void fz_conns_abort(fz_env *env)
{
    for (int i = 0; i < FZ_MAX_CONNS; i++) {
        fz_slot *s = &env->slots[i];
        if (s->conn && on_list(s->listener, s->conn))
            ps__conn_abort(s->conn);
    }
    /* Close callbacks may close more handles (timers); each turn runs one generation. */
    for (int i = 0; i < 64 && uv_loop_alive(env->loop); i++) {
        bool live = false;
        for (int k = 0; k < FZ_MAX_CONNS; k++)
            live |= env->slots[k].conn && on_list(env->slots[k].listener, env->slots[k].conn);
        if (!live)
            break;
        fz_loop_turn(env);
    }
    reap_slots(env);
}

static void count_handle(uv_handle_t *h, void *arg)
{
    size_t *n = arg;
    (*n)++;
    fprintf(stderr, "fuzz: handle left open: %s%s\n", uv_handle_type_name(uv_handle_get_type(h)),
            uv_is_closing(h) ? " (closing)" : "");
}

void fz_env_finish(fz_env *env)
{
    fz_conns_abort(env);
    for (int i = 0; i < 64 && uv_loop_alive(env->loop); i++)
        fz_loop_turn(env);
    size_t left = 0;
    uv_walk(env->loop, count_handle, &left);
    FZ_CHECK(left == 0);
    for (int i = 0; i < FZ_MAX_CONNS; i++)
        FZ_CHECK(env->slots[i].conn == NULL);
    FZ_CHECK(env->listener.nconns == 0);
    FZ_CHECK(env->ws_opened == env->ws_closed);
    env->out_bytes = 0;
    env->ws_opened = env->ws_closed = 0;
}

/* ---- an echo WebSocket ----------------------------------------------------------------- */

static void echo_on_message(ps__ws *ws, bool binary, const char *data, size_t len)
{
    /* websocket.h promises text is valid UTF-8. */
    FZ_CHECK(binary || ps__utf8_valid((const uint8_t *)data, len));
    if (!binary && len == 5 && memcmp(data, "close", 5) == 0)
        ps__ws_close(ws, PS__WS_NORMAL, "bye");
    else if (!binary && len == 5 && memcmp(data, "abort", 5) == 0)
        ps__ws_abort(ws);
    else
        ps__ws_send(ws, binary, data, len);
}

static void echo_on_close(ps__ws *ws, int code)
{
    fz_env *env = ps__ws_data(ws);
    env->ws_closed++;
    FZ_CHECK(env->ws_closed <= env->ws_opened);
    FZ_CHECK(code >= 1000 && code <= 4999);
}

static const ps__ws_cbs echo_cbs = {echo_on_message, echo_on_close};

ps__ws *fz_ws_upgrade(fz_env *env, ps__http_req *req, const ps__ws_opts *opts)
{
    ps__ws *ws = ps__ws_upgrade(req, opts, &echo_cbs, env);
    if (!ws)
        return NULL;
    env->ws_opened++;
    ps__ws_start(ws);
    return ws;
}
