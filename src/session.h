/*
 * session: ps_session, one accepted Socket.IO namespace connection, and what surrounds it: the
 * namespace registry with the app's hooks, the connect middleware stack, handshake accessors,
 * and raw events with acknowledgements. The view and channel layer above plugs in through
 * ps__session_ext: it receives the main namespace's "message" events and hears of every
 * session's end before the app's disconnect hook runs.
 */
#ifndef PS_SESSION_H
#define PS_SESSION_H

#include "socketio.h"

typedef struct ps__sessions ps__sessions;

/* The layer above sessions (views and channels). */
typedef struct ps__session_ext {
    /* A "message" event on the main namespace: `packet` is ["message", args...] (borrowed), one
     * argument expected, of any JSON type; ack_id -1 when none. */
    void (*on_message)(ps_session *s, json_t *packet, int64_t ack_id, void *user);
    /* The session is ending: dispose everything it owns. */
    void (*on_session_close)(ps_session *s, void *user);
    void *user;
    /* Optional: the same "message" event scanned but not built (ps__sio_cbs.on_event_raw's
     * index: ix->top[0] is the name, ix->top[1...] the arguments, ix->subs the members of the
     * first). When set, every "message" on the main namespace comes here instead. */
    void (*on_message_raw)(ps_session *s, const ps__json_index *ix, int64_t ack_id, void *user);
    /* Recovery, optional: the session's client came back (the missed messages went out
     * first, then the CONNECT reply). */
    void (*on_session_resume)(ps_session *s, void *user);
    /* Recovery, optional: after a resume, the client has read it and what it sent in answer
     * (its repeated requests) has arrived (see ps__sio_cbs.on_resume_settled). */
    void (*on_session_settled)(ps_session *s, void *user);
} ps__session_ext;

typedef struct ps__namespace {
    char *name;
    ps_namespace_hooks hooks;
} ps__namespace;

typedef struct ps__connect_mw {
    ps_connect_fn fn;
    void *user;
} ps__connect_mw;

struct ps__sessions {
    ps__sio_server sio;
    ps_server *server; /* handed back by ps_session_server() */
    ps__namespace *nsps;
    size_t nnsps;
    ps__connect_mw *connect_mw;
    size_t nconnect_mw;
    ps__list sessions;
    ps__session_ext ext;
};

void ps__sessions_init(ps__sessions *ss, ps_server *server, uv_loop_t *loop,
                       const ps__eio_config *cfg, uint32_t connect_timeout_ms);
void ps__sessions_free(ps__sessions *ss);
void ps__sessions_set_ext(ps__sessions *ss, const ps__session_ext *ext);
/* Starts the end of every connection (server stop). */
void ps__sessions_shutdown(ps__sessions *ss);
int ps__sessions_add_namespace(ps__sessions *ss, const char *name, const ps_namespace_hooks *hooks);
int ps__sessions_use_connect(ps__sessions *ss, ps_connect_fn fn, void *user);
ps__sessions *ps__session_layer(const ps_session *s);
bool ps__session_closed(const ps_session *s);
/* Recovery is on for the session: it may detach and resume. */
bool ps__session_recovers(const ps_session *s);
/* Per-session slot for the layer above; freed by that layer in on_session_close. */
void *ps__session_ext_data(const ps_session *s);
void ps__session_set_ext_data(ps_session *s, void *data);
/* Keeps a session's memory across calls that may end it (app callbacks). */
void ps__session_ref(ps_session *s);
void ps__session_unref(ps_session *s);
/* Emits the "message" event with `msg` (borrowed) as its one argument. 0 or PS_ECLOSED. */
int ps__session_send_message(ps_session *s, json_t *msg);
/* Same, with the message already encoded as JSON text (no binary values). */
int ps__session_send_message_text(ps_session *s, const char *msg, size_t len);
uv_loop_t *ps__session_loop(const ps_session *s);
int ps__session_send_ack(ps_session *s, int64_t id, json_t *args);
/* Stats (ps_server_get_stats) */
void ps__sessions_stats(const ps__sessions *ss, ps_server_stats *out);

#endif
