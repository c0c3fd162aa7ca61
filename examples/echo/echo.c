/*
 * echo: the conformance fixture of pulsec. Tests, and anyone checking a Socket.IO client
 * against pulsec, run it; docs/PROTOCOL.md describes every behaviour.
 *
 * Default mode, on namespaces "/" and "/custom":
 *   - an event with an ack id is acked with its own arguments;
 *   - "ask" [event, payload, timeout_ms] emits `event` with `payload` to the client with an ack
 *     and that timeout, then emits "ask:result" {"status":"ok","args":[...]} or
 *     {"status":"timeout"} (or "closed");
 *   - "bye" makes the server disconnect the socket;
 *   - any other event except "message" is emitted back under its name with its arguments.
 *   - CONNECT auth {"deny": "text"} is refused with {"message":"text","data":{"code":"denied"}}.
 * --socketio-echo mode (the Socket.IO protocol test suite's server): on connect the server emits
 *   "auth" with the CONNECT auth object, and "message" is answered with "message-back".
 */
#include <pulsec.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool socketio_echo;

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
    if (ack) {
        ps_ack_send(ack, args);
    } else if (strcmp(event, "ask") == 0) {
        const char *name = json_string_value(json_array_get(args, 0));
        json_t *payload = json_array_get(args, 1);
        json_int_t timeout = json_integer_value(json_array_get(args, 2));
        json_t *out = json_pack("[O]", payload ? payload : json_null());
        if (!name || ps_session_emit_ack(s, name, out, (uint32_t)timeout, on_ask_done, NULL) != 0) {
            json_t *err = json_pack("[{s:s}]", "status", "error");
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

static void usage(FILE *f)
{
    fprintf(f,
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
            "  --verbose               log connections and errors\n");
}

int main(int argc, char **argv)
{
    ps_server_opts opts = {.host = "127.0.0.1", .port = 8000};
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
        {"verbose", no_argument, 0, 'v'},
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
        case 'v': ps_set_log_level(PS_LOG_DEBUG); break;
        default: usage(ch == '?' && optopt == 0 ? stdout : stderr); return ch == '?' ? 0 : 2;
        }
    }
    ps_server *srv = ps_server_new(NULL, &opts);
    if (!srv)
        return 2;
    ps_namespace_hooks hooks = {.connect = on_connect, .event = on_event};
    ps_namespace(srv, "/", &hooks);
    ps_namespace(srv, "/custom", &hooks);
    int rc = ps_server_listen(srv);
    if (rc != 0) {
        fprintf(stderr, "echo: cannot listen on %s:%d: %s\n", opts.host, opts.port,
                ps_strerror(rc));
        ps_server_free(srv);
        return 1;
    }
    printf("listening on http://%s:%d\n", opts.host, ps_server_port(srv));
    fflush(stdout);
    rc = ps_server_run(srv);
    ps_server_free(srv);
    return rc == 0 ? 0 : 1;
}
