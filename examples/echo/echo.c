/*
 * echo: the conformance fixture of pulsec. Tests, and anyone checking a Socket.IO client
 * against pulsec, run it; docs/PROTOCOL.md describes every behaviour.
 *
 * Default mode, on namespaces "/" and "/custom":
 *   - an event with an ack id is acked with its own arguments, except "handshake", acked with
 *     {"address", "cookies": {name: value or null for each name in the arguments},
 *     "authorization"} as ps_handshake_* see them;
 *   - "ask" [event, payload, timeout_ms] emits `event` with `payload` to the client with an ack
 *     and that timeout, then emits "ask:result" {"status":"ok","args":[...]} or
 *     {"status":"timeout"} (or "closed"), or {"status":"error","error":text} if the emit was
 *     refused (PS_ELIMIT: --max-pending unanswered);
 *   - "bye" makes the server disconnect the socket;
 *   - any other event except "message" is emitted back under its name with its arguments.
 *   - CONNECT auth {"deny": "text"} is refused with {"message":"text","data":{"code":"denied"}}.
 * --socketio-echo mode (the Socket.IO protocol test suite's server): on connect the server emits
 *   "auth" with the CONNECT auth object, and "message" is answered with "message-back".
 *
 * View "/echo" (default mode only): init opens one channel and sets props {"channelId": ID}.
 * On that channel:
 *   - event "echo" emits "echo" back with the payload; request "echo" replies with the payload;
 *   - request "fail" answers the error "failed: " + payload.text;
 *   - request "defer" replies with the payload after payload.ms milliseconds (deferred reply);
 *   - event "ask" {"event","payload","timeout_ms"} sends that request to the client, then emits
 *     "ask:result" {"status":"ok"|"timeout"|"closed","payload":...} or
 *     {"status":"error","error":text}; as a request, "ask" also replies {"ok": true} once the
 *     request is sent (or the error text when it cannot be);
 *   - event "close" closes the channel from the server;
 *   - request "stats" replies with the server's counters and the fixture's own (and the heap in
 *     use, glibc's mallinfo2, as "heap_bytes"): how many asks
 *     started and completed (by status), views disposed, and completions seen twice (always 0),
 *     plus "worker" (this process's worker index) and "pid";
 *   - --workers N runs N worker processes on the port (ps_server_opts.workers), --redis URL
 *     shares topics with other servers on that Redis (ps_server_opts.redis_url);
 *   - request "join" / "leave" {"topic": T} joins / leaves topic T and replies {"ok": true}
 *     (leaving a topic not joined too); an invalid topic or a limit gets an error reply;
 *   - request "publish" {"topic","event","payload","exceptSelf"} publishes event with payload
 *     to T (skipping this channel with exceptSelf) and replies {"ok": true} once published here;
 *   - request "stream" {"event": E, "count": N, "interval_ms": M} replies {"ok": true}, then
 *     emits E with {"n": i} for i = 1..N, one every M ms;
 *   - request "incr" {"key": K} adds one to the view's counter K and replies with the new
 *     value (a request handled twice shows); request "get" {"key": K} replies with its value.
 * "echo" is answered by a ps_on_raw handler (the payload's JSON text goes back as it came, no
 * json_t built); --json-api answers it with a ps_on handler and a json_t payload instead, so that
 * make bench can measure both APIs.
 *
 * Connection state recovery is on (window --resume-window, 60 s) except in the conformance
 * modes (--socketio-echo, --engine-echo), where the suites expect a CONNECT reply without pid;
 * the hooks count transport losses and resumes for "stats".
 */
#include "../common/example.h"

#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool socketio_echo;
static bool custom_allocator;

/* Long options without a letter of their own. */
enum { OPT_RESUME_WINDOW = 1000, OPT_MAX_REPLAY, OPT_MAX_DETACHED };
static bool json_api;

static int on_connect(ps_session *s, const ps_handshake *hs, void *user)
{
    json_t *auth = ps_handshake_auth(hs);
    json_t *deny = json_object_get(auth, "deny");
    if (json_is_string(deny)) {
        json_t *data = json_pack("{s:s}", "code", "denied");
        int rc = ps_session_deny(s, json_string_value(deny), data);
        json_decref(data);
        return rc;
    }
    if (socketio_echo) {
        json_t *args = json_pack("[O]", auth);
        ps_session_emit(s, "auth", args);
        json_decref(args);
    }
    return 0;
}

static void on_ask_done(ps_session *s, int status, json_t *args, void *user)
{
    json_t *result;
    if (status == PS_OK)
        result = json_pack("{s:s,s:O}", "status", "ok", "args", args);
    else
        result = json_pack("{s:s}", "status", status == PS_ETIMEDOUT ? "timeout" : "closed");
    json_t *out = json_pack("[o]", result);
    ps_session_emit(s, "ask:result", out); /* PS_ECLOSED when the session is gone: fine */
    json_decref(out);
}

static void on_event(ps_session *s, const char *event, json_t *args, ps_ack *ack, void *user)
{
    if (socketio_echo) {
        if (strcmp(event, "message") == 0)
            ps_session_emit(s, "message-back", args);
        else if (ack)
            ps_ack_send(ack, args);
        return;
    }
    if (ack && strcmp(event, "handshake") == 0) {
        /* What the connect saw: args name the cookies to look up. */
        const ps_handshake *hs = ps_session_handshake(s);
        json_t *cookies = json_object();
        for (size_t i = 0; i < json_array_size(args); i++) {
            const char *name = json_string_value(json_array_get(args, i));
            const char *v = name ? ps_handshake_cookie(hs, name) : NULL;
            if (name)
                json_object_set_new(cookies, name, v ? json_string(v) : json_null());
        }
        const char *authz = ps_handshake_header(hs, "Authorization");
        json_t *out = json_pack("[{s:s,s:o,s:s?}]", "address", ps_handshake_address(hs), "cookies",
                                cookies, "authorization", authz);
        ps_ack_send(ack, out);
        json_decref(out);
    } else if (ack) {
        ps_ack_send(ack, args);
    } else if (strcmp(event, "ask") == 0) {
        const char *name = json_string_value(json_array_get(args, 0));
        json_t *payload = json_array_get(args, 1);
        json_int_t timeout = json_integer_value(json_array_get(args, 2));
        json_t *out = json_pack("[O]", payload ? payload : json_null());
        int rc = name ? ps_session_emit_ack(s, name, out, (uint32_t)timeout, on_ask_done, NULL)
                      : PS_EINVAL;
        if (rc != 0) {
            json_t *err = json_pack("[{s:s,s:s}]", "status", "error", "error", ps_strerror(rc));
            ps_session_emit(s, "ask:result", err);
            json_decref(err);
        }
        json_decref(out);
    } else if (strcmp(event, "bye") == 0) {
        ps_session_disconnect(s);
    } else if (strcmp(event, "message") != 0) {
        ps_session_emit(s, event, args);
    }
}

/* ---- the /echo view ------------------------------------------------------------------- */

typedef struct defer_reply defer_reply;
typedef struct ask_ctx ask_ctx;
typedef struct stream stream;
typedef struct echo_view {
    ps_channel *ch;
    defer_reply *defers; /* deferred replies still waiting for their timer */
    ask_ctx *asks;       /* every request sent, kept until the view is freed */
    stream *streams;     /* "stream" requests still emitting */
    json_t *counters;    /* "incr" / "get": key -> integer */
} echo_view;

/* A "stream" request's emitter: one event per tick of its timer. */
struct stream {
    uv_timer_t timer;
    echo_view *view;
    char *event;
    json_int_t next, count;
    uint64_t interval_ms;
    stream *next_stream;
};

/* Kept after completion so that a second completion would be seen and counted. */
struct ask_ctx {
    bool done;
    ask_ctx *next;
};

struct defer_reply {
    uv_timer_t timer;
    ps_reply *reply;
    json_t *payload;
    echo_view *view;
    defer_reply *prev, *next;
};

static struct {
    uint64_t asks_started, asks_ok, asks_timeout, asks_closed, asks_error, asks_twice;
    uint64_t views_disposed;
    uint64_t transport_lost, resumed;
} counters;

static void on_transport_lost(ps_session *s, const char *reason, void *user)
{
    counters.transport_lost++;
}

static void on_resumed(ps_session *s, void *user)
{
    counters.resumed++;
}

static void defer_unlink(defer_reply *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        d->view->defers = d->next;
    if (d->next)
        d->next->prev = d->prev;
}

static void defer_on_close(uv_handle_t *h)
{
    defer_reply *d = h->data;
    json_decref(d->payload);
    free(d);
}

static void defer_fire(uv_timer_t *t)
{
    defer_reply *d = t->data;
    defer_unlink(d);
    ps_reply_ok(d->reply, d->payload);
    uv_close((uv_handle_t *)&d->timer, defer_on_close);
}

/* Runs after the view's channels closed: answers still owed become no-ops, but each kept reply
 * handle must still be handed back exactly once. */
static void stream_on_close(uv_handle_t *h)
{
    stream *st = h->data;
    free(st->event);
    free(st);
}

static void stream_end(stream *st)
{
    echo_view *ev = st->view;
    for (stream **pp = &ev->streams; *pp; pp = &(*pp)->next_stream) {
        if (*pp == st) {
            *pp = st->next_stream;
            break;
        }
    }
    uv_timer_stop(&st->timer);
    uv_close((uv_handle_t *)&st->timer, stream_on_close);
}

static void stream_tick(uv_timer_t *t)
{
    stream *st = t->data;
    json_t *p = json_pack("{s:I}", "n", st->next);
    int rc = ps_emit(st->view->ch, st->event, p);
    json_decref(p);
    if (rc != 0 || st->next++ >= st->count)
        stream_end(st);
    else
        uv_timer_start(&st->timer, stream_tick, st->interval_ms, 0);
}

static void start_stream(ps_channel *ch, echo_view *ev, json_t *payload, ps_reply *reply)
{
    const char *event = json_string_value(json_object_get(payload, "event"));
    json_int_t count = json_integer_value(json_object_get(payload, "count"));
    json_int_t interval = json_integer_value(json_object_get(payload, "interval_ms"));
    if (!event || !*event || count < 0 || interval < 0) {
        ps_reply_error(reply, "stream needs event (string), count and interval_ms (>= 0)");
        return;
    }
    json_t *ok = json_pack("{s:b}", "ok", 1);
    ps_reply_ok(reply, ok);
    json_decref(ok);
    if (count == 0)
        return;
    stream *st = calloc(1, sizeof *st);
    st->view = ev;
    st->event = strdup(event);
    st->next = 1;
    st->count = count;
    st->interval_ms = (uint64_t)interval;
    st->next_stream = ev->streams;
    ev->streams = st;
    uv_timer_init(ps_server_loop(ps_session_server(ps_view_session(ps_channel_view(ch)))),
                  &st->timer);
    st->timer.data = st;
    uv_timer_start(&st->timer, stream_tick, st->interval_ms, 0);
}

static void on_counter(echo_view *ev, const char *event, json_t *payload, ps_reply *reply)
{
    const char *key = json_string_value(json_object_get(payload, "key"));
    if (!key) {
        ps_reply_error(reply, "key must be a string");
        return;
    }
    json_int_t n = json_integer_value(json_object_get(ev->counters, key));
    if (strcmp(event, "incr") == 0) {
        if (!ev->counters) /* made at the first incr: most views never count */
            ev->counters = json_object();
        json_object_set_new(ev->counters, key, json_integer(++n));
    }
    json_t *v = json_integer(n);
    ps_reply_ok(reply, v);
    json_decref(v);
}

static void echo_view_free(void *data)
{
    echo_view *ev = data;
    while (ev->streams)
        stream_end(ev->streams);
    json_decref(ev->counters);
    while (ev->defers) {
        defer_reply *d = ev->defers;
        defer_unlink(d);
        ps_reply_ok(d->reply, NULL);
        uv_timer_stop(&d->timer);
        uv_close((uv_handle_t *)&d->timer, defer_on_close);
    }
    while (ev->asks) {
        ask_ctx *a = ev->asks;
        ev->asks = a->next;
        free(a);
    }
    free(ev);
}

static void on_ask_response(ps_channel *ch, int status, json_t *payload, const char *error,
                            void *user)
{
    ask_ctx *ctx = user;
    if (ctx->done) {
        counters.asks_twice++;
        return;
    }
    ctx->done = true;
    json_t *result;
    switch (status) {
    case PS_OK:
        counters.asks_ok++;
        result = json_pack("{s:s,s:O}", "status", "ok", "payload", payload);
        break;
    case PS_ETIMEDOUT:
        counters.asks_timeout++;
        result = json_pack("{s:s,s:n}", "status", "timeout", "payload");
        break;
    case PS_ECLOSED:
        counters.asks_closed++;
        result = json_pack("{s:s,s:n}", "status", "closed", "payload");
        break;
    default:
        counters.asks_error++;
        result = json_pack("{s:s,s:s}", "status", "error", "error", error ? error : "");
        break;
    }
    ps_emit(ch, "ask:result", result); /* PS_ECLOSED once the channel is gone: expected */
    json_decref(result);
}

static json_t *stats_json(ps_server *srv)
{
    ps_server_stats st;
    ps_server_get_stats(srv, &st);
    json_t *j = json_object();
    const char *name;
    uint64_t value;
    for (size_t i = 0; ps_server_stats_field(&st, i, &name, &value); i++)
        json_object_set_new(j, name, json_integer((json_int_t)value));
    json_object_set_new(
        j, "asks",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "started", (json_int_t)counters.asks_started, "ok",
                  (json_int_t)counters.asks_ok, "timeout", (json_int_t)counters.asks_timeout,
                  "closed", (json_int_t)counters.asks_closed, "error",
                  (json_int_t)counters.asks_error, "twice", (json_int_t)counters.asks_twice));
    json_object_set_new(j, "views_disposed", json_integer((json_int_t)counters.views_disposed));
    json_object_set_new(j, "transport_lost", json_integer((json_int_t)counters.transport_lost));
    /* glibc's heap in use: what benchmarks divide by sessions (RSS keeps what was freed). */
    json_object_set_new(j, "heap_bytes", json_integer((json_int_t)mallinfo2().uordblks));
    json_object_set_new(j, "resumed", json_integer((json_int_t)counters.resumed));
    json_object_set_new(j, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(j, "worker", json_integer(ps_server_worker(srv)));
    return j;
}

/* Replies {"ok": true} for rc 0, or the error text of rc. */
static void reply_rc(ps_reply *reply, int rc)
{
    if (rc != 0) {
        ps_reply_error(reply, ps_strerror(rc));
        return;
    }
    json_t *ok = json_pack("{s:b}", "ok", 1);
    ps_reply_ok(reply, ok);
    json_decref(ok);
}

static void on_topic_request(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply)
{
    const char *topic = json_string_value(json_object_get(payload, "topic"));
    if (!topic) {
        ps_reply_error(reply, "topic must be a string");
        return;
    }
    if (strcmp(event, "join") == 0) {
        reply_rc(reply, ps_join(ch, topic));
    } else if (strcmp(event, "leave") == 0) {
        int rc = ps_leave(ch, topic);
        reply_rc(reply, rc == PS_ENOTFOUND ? 0 : rc);
    } else {
        const char *name = json_string_value(json_object_get(payload, "event"));
        json_t *p = json_object_get(payload, "payload");
        bool except = json_is_true(json_object_get(payload, "exceptSelf"));
        ps_server *srv = ps_session_server(ps_view_session(ps_channel_view(ch)));
        reply_rc(reply, ps_publish_except(srv, topic, name, p, except ? ch : NULL));
    }
}

/* "ask": a request to the client; as a request itself, answered {"ok": true} once sent (a
 * client that must know its ask arrived, across a reconnect, sends it as a request). */
static void start_ask(ps_channel *ch, echo_view *ev, json_t *payload, ps_reply *reply)
{
    const char *name = json_string_value(json_object_get(payload, "event"));
    json_int_t timeout = json_integer_value(json_object_get(payload, "timeout_ms"));
    ask_ctx *ctx = calloc(1, sizeof *ctx);
    counters.asks_started++;
    int rc = ps_request(ch, name, json_object_get(payload, "payload"),
                        timeout > 0 ? (uint32_t)timeout : 0, on_ask_response, ctx);
    if (rc == 0) {
        ctx->next = ev->asks;
        ev->asks = ctx;
        if (reply) {
            json_t *ok = json_pack("{s:b}", "ok", 1);
            ps_reply_ok(reply, ok);
            json_decref(ok);
        }
        return;
    }
    counters.asks_started--;
    free(ctx);
    if (reply) {
        ps_reply_error(reply, ps_strerror(rc));
        return;
    }
    json_t *result = json_pack("{s:s,s:s}", "status", "error", "error", ps_strerror(rc));
    ps_emit(ch, "ask:result", result);
    json_decref(result);
}

static void on_channel_event(ps_channel *ch, const char *event, json_t *payload, ps_reply *reply,
                             void *user)
{
    echo_view *ev = user;
    if (strcmp(event, "echo") == 0) {
        if (reply)
            ps_reply_ok(reply, payload);
        else
            ps_emit(ch, "echo", payload);
    } else if (strcmp(event, "fail") == 0 && reply) {
        const char *text = json_string_value(json_object_get(payload, "text"));
        char err[512];
        snprintf(err, sizeof err, "failed: %s", text ? text : "");
        ps_reply_error(reply, err);
    } else if (strcmp(event, "defer") == 0 && reply) {
        defer_reply *d = calloc(1, sizeof *d);
        d->reply = ps_reply_keep(reply);
        d->payload = json_incref(payload);
        d->view = ev;
        d->next = ev->defers;
        if (d->next)
            d->next->prev = d;
        ev->defers = d;
        uv_timer_init(ps_server_loop(ps_session_server(ps_view_session(ps_channel_view(ch)))),
                      &d->timer);
        d->timer.data = d;
        json_int_t ms = json_integer_value(json_object_get(payload, "ms"));
        uv_timer_start(&d->timer, defer_fire, ms > 0 ? (uint64_t)ms : 0, 0);
    } else if (strcmp(event, "ask") == 0) {
        start_ask(ch, ev, payload, reply);
    } else if (strcmp(event, "close") == 0 && !reply) {
        ps_channel_close(ch);
    } else if ((strcmp(event, "join") == 0 || strcmp(event, "leave") == 0 ||
                strcmp(event, "publish") == 0) &&
               reply) {
        on_topic_request(ch, event, payload, reply);
    } else if (strcmp(event, "stream") == 0 && reply) {
        start_stream(ch, ev, payload, reply);
    } else if ((strcmp(event, "incr") == 0 || strcmp(event, "get") == 0) && reply) {
        on_counter(ev, event, payload, reply);
    } else if (strcmp(event, "stats") == 0 && reply) {
        json_t *st = stats_json(ps_session_server(ps_view_session(ps_channel_view(ch))));
        ps_reply_ok(reply, st);
        json_decref(st);
    }
}

/* The raw-payload handler of every event: "echo" answers with the text as it came; the other
 * events, which want fields of their payload, get it parsed. One listener per channel, as
 * "*" was: a listener per event would cost an idle connection half a kilobyte. */
static void on_channel_raw(ps_channel *ch, const char *event, const char *payload, size_t len,
                           ps_reply *reply, void *user)
{
    if (strcmp(event, "echo") == 0) {
        if (reply)
            ps_reply_raw(reply, payload, len);
        else
            ps_emit_raw(ch, "echo", payload, len);
        return;
    }
    json_t *p = json_loadb(payload, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    on_channel_event(ch, event, p ? p : json_null(), reply, user);
    json_decref(p);
}

static int echo_view_init(ps_view *view, json_t *props, void *user)
{
    echo_view *ev = calloc(1, sizeof *ev);
    ps_view_set_data(view, ev, echo_view_free);
    ev->ch = ps_channel_open(view);
    if (!ev->ch)
        return ps_view_reject(view, "Too many channels");
    if (json_api)
        ps_on(ev->ch, "*", on_channel_event, ev);
    else
        ps_on_raw(ev->ch, "*", on_channel_raw, ev);
    json_t *p = json_pack("{s:s}", "channelId", ps_channel_id(ev->ch));
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void echo_view_dispose(ps_view *view, void *user)
{
    counters.views_disposed++;
}

/* ---- --custom-allocator -------------------------------------------------------------- */

/*
 * --custom-allocator (the integration tests' PULSEC_TEST_ALLOCATOR=1): every allocation of
 * pulsec and of jansson goes through ps_set_allocator to these, which put a header before each
 * block. Memory released by the wrong allocator cannot pass unnoticed: free() of one of these
 * blocks is no block glibc (or AddressSanitizer) handed out, and a block from malloc() has no
 * header here; either aborts. At exit every block must have come back.
 */
#define CA_MAGIC 0x70756c7365632a41ull
typedef struct ca_head {
    uint64_t magic;
    uint64_t size; /* keeps the header 16 bytes: blocks stay aligned as malloc's are */
} ca_head;
static uint64_t ca_live;

static ca_head *ca_head_of(void *p, const char *what)
{
    ca_head *h = (ca_head *)p - 1;
    if (h->magic != CA_MAGIC) {
        fprintf(stderr, "echo: %s of %p, which the custom allocator did not hand out\n", what, p);
        abort();
    }
    return h;
}

static void *ca_malloc(size_t n)
{
    ca_head *h = malloc(sizeof *h + n);
    if (!h)
        return NULL;
    h->magic = CA_MAGIC;
    h->size = n;
    ca_live++;
    return h + 1;
}

static void *ca_realloc(void *p, size_t n)
{
    if (!p)
        return ca_malloc(n);
    ca_head *h = realloc(ca_head_of(p, "realloc"), sizeof *h + n);
    if (!h)
        return NULL;
    h->size = n;
    return h + 1;
}

static void ca_free(void *p)
{
    if (!p)
        return;
    ca_head *h = ca_head_of(p, "free");
    h->magic = 0;
    ca_live--;
    free(h);
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: echo [options]\n"
        "  --host ADDR             bind address (127.0.0.1)\n"
        "  --port N                port, 0 = any free port (8000)\n"
        "  --static DIR            serve static files from DIR\n"
        "  --path PATH             Socket.IO endpoint (/socket.io/)\n"
        "  --ping-interval MS      Engine.IO ping interval (25000)\n"
        "  --ping-timeout MS       Engine.IO pong deadline (20000)\n"
        "  --max-payload BYTES     largest message accepted (1048576)\n"
        "  --connect-timeout MS    Socket.IO CONNECT deadline (45000)\n"
        "  --socketio-echo         Socket.IO test-suite behaviour (see source)\n"
        "  --engine-echo           pure Engine.IO server echoing every message (use with\n"
        "                          --path /engine.io/)\n"
        "  --websocket-only        refuse HTTP long-polling\n"
        "  --max-queued BYTES      unread output per client before it is cut off (4 MiB)\n"
        "  --max-connections N     open connections; more get 503 (10000)\n"
        "  --max-views N           views per session (64)\n"
        "  --max-channels N        open channels per session (256)\n"
        "  --max-pending N         requests in flight per channel and direction (1024)\n"
        "  --idle-timeout MS       HTTP request / keep-alive idle bound (30000)\n"
        "  --shutdown-grace MS     how long a stop waits for close replies (2000)\n"
        "  --close-timeout MS      a closing connection's output and FIN, at most (10000)\n"
        "  --max-unconnected N     polling sessions without a CONNECT (4096)\n"
        "  --max-unconnected-per-address N   ... from one address (256)\n"
        "  --ws-idle-release MS    kept for compatibility (no longer has an effect)\n"
        "  --max-topics-per-channel N  topics one channel may join (64)\n"
        "  --max-topics N          distinct topics with members in one process (100000)\n"
        "  --workers N             worker processes serving the port (1)\n"
        "  --resume-window MS      how long a dropped session waits for its client\n"
        "                          (60000; 0 = no recovery; off in the conformance modes)\n"
        "  --max-replay BYTES      kept per session for a replay (262144)\n"
        "  --max-detached N        dropped sessions waiting at once (1024)\n"
        "  --redis URL             share topics through Redis (redis://host:port/db or\n"
        "                          unix:///path/redis.sock)\n"
        "  --redis-prefix P        Redis channel names P:<topic> (pulsec)\n"
        "  --redis-timeout MS      Redis must connect and answer each PING within (3000)\n"
        "  --max-redis-queued B    bytes sent to Redis and not yet answered (8 MiB)\n"
        "  --origin ORIGIN         also allow this browser origin (repeatable; \"*\" = any,\n"
        "                          without credentials); without it only pages of the\n"
        "                          server's own origin may connect\n"
        "  --trusted-proxy ADDR    believe X-Forwarded-For from this address or CIDR block\n"
        "                          (repeatable)\n"
        "  --json-api              answer \"echo\" with a json_t handler (ps_on), not ps_on_raw\n"
        "  --verbose               log connections and errors\n"
        "  --log-json              log as JSON lines on stderr\n"
        "  --custom-allocator      allocate through ps_set_allocator with checked headers\n"
        "  --metrics               serve GET /metrics (Prometheus text format)\n"
        "  --metrics-listen ADDR   serve it on HOST:PORT instead of the main port\n"
        "  --tls-cert PEM          HTTPS/WSS with this certificate chain (needs --tls-key;\n"
        "                          SIGHUP reloads both)\n"
        "  --tls-key PEM           the certificate's private key\n"
        "  --tls-handshake-timeout MS  a TLS handshake must be done within (10000)\n");
}

int main(int argc, char **argv)
{
    ps_server_opts opts = {.host = "127.0.0.1", .port = 8000};
    static const char *origins[17];
    size_t norigins = 0;
    static const char *proxies[17];
    size_t nproxies = 0;
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"static", required_argument, 0, 's'},
        {"path", required_argument, 0, 'P'},
        {"ping-interval", required_argument, 0, 'i'},
        {"ping-timeout", required_argument, 0, 't'},
        {"max-payload", required_argument, 0, 'm'},
        {"connect-timeout", required_argument, 0, 'c'},
        {"socketio-echo", no_argument, 0, 'E'},
        {"engine-echo", no_argument, 0, 'G'},
        {"websocket-only", no_argument, 0, 'W'},
        {"origin", required_argument, 0, 'O'},
        {"max-queued", required_argument, 0, 'q'},
        {"max-connections", required_argument, 0, 'n'},
        {"max-views", required_argument, 0, 'V'},
        {"max-channels", required_argument, 0, 'C'},
        {"max-pending", required_argument, 0, 'R'},
        {"idle-timeout", required_argument, 0, 'I'},
        {"shutdown-grace", required_argument, 0, 'g'},
        {"ws-idle-release", required_argument, 0, 'L'},
        {"close-timeout", required_argument, 0, 'K'},
        {"max-unconnected", required_argument, 0, 'U'},
        {"max-unconnected-per-address", required_argument, 0, 'A'},
        {"max-topics-per-channel", required_argument, 0, 'T'},
        {"max-topics", required_argument, 0, 'X'},
        {"trusted-proxy", required_argument, 0, 'Y'},
        {"workers", required_argument, 0, 'w'},
        {"redis", required_argument, 0, 'r'},
        {"redis-prefix", required_argument, 0, 'x'},
        {"redis-timeout", required_argument, 0, 'y'},
        {"max-redis-queued", required_argument, 0, 'z'},
        {"json-api", no_argument, 0, 'j'},
        {"resume-window", required_argument, 0, OPT_RESUME_WINDOW},
        {"max-replay", required_argument, 0, OPT_MAX_REPLAY},
        {"max-detached", required_argument, 0, OPT_MAX_DETACHED},
        {"verbose", no_argument, 0, 'v'},
        {"log-json", no_argument, 0, 'J'},
        {"custom-allocator", no_argument, 0, 'Q'},
        {"metrics", no_argument, 0, 'M'},
        {"metrics-listen", required_argument, 0, 'N'},
        {"tls-cert", required_argument, 0, 'e'},
        {"tls-key", required_argument, 0, 'k'},
        {"tls-handshake-timeout", required_argument, 0, 'H'},
        {"help", no_argument, 0, '?'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opts.host = optarg; break;
        case 'p': opts.port = atoi(optarg); break;
        case 's': opts.static_dir = optarg; break;
        case 'P': opts.path = optarg; break;
        case 'i': opts.ping_interval_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 't': opts.ping_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'm': opts.max_payload = strtoull(optarg, NULL, 10); break;
        case 'c': opts.connect_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'E': socketio_echo = true; break;
        case 'j': json_api = true; break;
        case 'G': opts.engineio_echo = true; break;
        case 'W': opts.websocket_only = true; break;
        case 'q': opts.max_queued_bytes = strtoull(optarg, NULL, 10); break;
        case 'n': opts.max_connections = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'V': opts.max_views_per_session = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'C': opts.max_channels_per_session = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'R': opts.max_pending_requests = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'I': opts.idle_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'g': opts.shutdown_grace_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'L': opts.ws_idle_release_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'K': opts.close_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'U': opts.max_unconnected = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'A': opts.max_unconnected_per_address = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'T': opts.max_topics_per_channel = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'X': opts.max_topics = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'w': opts.workers = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'r': opts.redis_url = optarg; break;
        case 'x': opts.redis_prefix = optarg; break;
        case 'y': opts.redis_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'z': opts.max_redis_queued = strtoull(optarg, NULL, 10); break;
        case OPT_RESUME_WINDOW: opts.resume_window_ms = example_resume_window(optarg); break;
        case OPT_MAX_REPLAY: opts.max_replay_bytes = strtoull(optarg, NULL, 10); break;
        case OPT_MAX_DETACHED:
            opts.max_detached_sessions = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'O':
            if (norigins + 1 < sizeof origins / sizeof origins[0])
                origins[norigins++] = optarg;
            opts.allowed_origins = origins;
            break;
        case 'Y':
            if (nproxies + 1 < sizeof proxies / sizeof proxies[0])
                proxies[nproxies++] = optarg;
            opts.trusted_proxies = proxies;
            break;
        case 'v': ps_set_log_level(PS_LOG_DEBUG); break;
        case 'J': ps_set_log_fn(example_log_json, "echo"); break;
        case 'Q': custom_allocator = true; break;
        case 'M': opts.metrics = true; break;
        case 'N': opts.metrics_listen = optarg; break;
        case 'e': opts.tls_cert_file = optarg; break;
        case 'k': opts.tls_key_file = optarg; break;
        case 'H': opts.tls_handshake_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        default: usage(ch == '?' && optopt == 0 ? stdout : stderr); return ch == '?' ? 0 : 2;
        }
    }
    if (custom_allocator)
        ps_set_allocator(ca_malloc, ca_realloc, ca_free); /* before any server, as it must be */
    if ((socketio_echo || opts.engineio_echo) && !opts.resume_window_ms)
        opts.resume_window_ms = PS_RESUME_OFF; /* the suites expect a bare {"sid"} */
    ps_server *srv = ps_server_new(NULL, &opts);
    if (!srv)
        return 2;
    ps_namespace_hooks hooks = {.connect = on_connect,
                                .event = on_event,
                                .transport_lost = on_transport_lost,
                                .resumed = on_resumed};
    ps_namespace(srv, "/", &hooks);
    ps_namespace(srv, "/custom", &hooks);
    if (!socketio_echo) {
        ps_view_type echo_type = {.init = echo_view_init, .dispose = echo_view_dispose};
        ps_route(srv, "/echo", &echo_type);
    }
    int rc = example_serve(srv, "echo", &opts);
    if (custom_allocator && ca_live != 0) {
        fprintf(stderr, "echo: %" PRIu64 " blocks of the custom allocator never freed\n", ca_live);
        return 1;
    }
    return rc;
}
