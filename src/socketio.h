/*
 * socketio: Socket.IO v5 on Engine.IO sessions. A pure packet codec (text grammar of
 * SOCKETIO.md §3.2, with every validity rule the reference decoder applies) and the per-session
 * state: namespace sockets, CONNECT/CONNECT_ERROR/DISCONNECT, events, and acknowledgements in
 * both directions with exactly-once completion. Binary packets (placeholders + attachments)
 * both ways: binary values appear to the layers above as {"$binary": base64} JSON objects.
 *
 * Connection state recovery (DESIGN §6), when on: the CONNECT reply carries a pid, every EVENT
 * without an ack id a trailing offset, and a socket whose transport drops is detached instead
 * of disconnected: it keeps its id, its pending acks and (through the layers above) everything
 * the session owns, and what is sent meanwhile waits in its replay buffer. A CONNECT carrying
 * its pid and last offset within the resume window attaches it to the new connection: the
 * missed packets go out, then the CONNECT reply with the same sid and pid.
 */
#ifndef PS_SOCKETIO_H
#define PS_SOCKETIO_H

#include "engineio.h"
#include "replay.h"

enum {
    PS__SIO_CONNECT = 0,
    PS__SIO_DISCONNECT = 1,
    PS__SIO_EVENT = 2,
    PS__SIO_ACK = 3,
    PS__SIO_CONNECT_ERROR = 4,
    PS__SIO_BINARY_EVENT = 5,
    PS__SIO_BINARY_ACK = 6,
};

#define PS__SIO_MAX_NSP 256
#define PS__SIO_MAX_ATTACHMENTS 10
/* Number.MAX_SAFE_INTEGER: the largest ack id a JavaScript peer can send exactly. */
#define PS__SIO_MAX_ACK_ID ((INT64_C(1) << 53) - 1)

typedef struct ps__sio_packet {
    int type;
    char nsp[PS__SIO_MAX_NSP]; /* "/" when absent */
    int64_t id;                /* ack id (0..PS__SIO_MAX_ACK_ID), -1 when absent */
    int attachments;           /* binary packets only */
    json_t *data;              /* new reference, or NULL when absent */
} ps__sio_packet;

/*
 * Decodes one Socket.IO text packet (the Engine.IO message payload, without its '4').
 * Returns 0, or -1 with *err set to a static reason; on success the caller clears the packet.
 */
int ps__sio_decode(const char *s, size_t len, ps__sio_packet *p, const char **err);
void ps__sio_packet_clear(ps__sio_packet *p);
/* Appends the Engine.IO text packet "4" + Socket.IO packet. `data` may be NULL. */
void ps__sio_encode(ps__buf *out, int type, const char *nsp, int64_t id, const json_t *data);
/* Same, with the "N-" attachment count of BINARY_EVENT/BINARY_ACK when attachments > 0. */
void ps__sio_encode_binary(ps__buf *out, int type, int attachments, const char *nsp, int64_t id,
                           const json_t *data);
/* True for the event names the client refuses to receive (connect, disconnect, ...). */
bool ps__sio_reserved_event(const char *name);

typedef struct ps__sio_conn ps__sio_conn;
typedef struct ps__sio_socket ps__sio_socket;
typedef struct ps__sio_server ps__sio_server;

/* Completion of an emit with ack: exactly once, with 0 + args, PS_ETIMEDOUT or PS_ECLOSED. */
typedef void (*ps__sio_ack_cb)(ps__sio_socket *s, int status, json_t *args, void *user);

typedef struct ps__sio_cbs {
    /* Does this namespace exist? */
    bool (*has_namespace)(ps__sio_server *ss, const char *nsp);
    /* A client asks to join; set the upper object with ps__sio_socket_set_up. Return 0 to
     * accept or non-zero to refuse with ps__sio_socket_deny's message (the socket is then
     * freed without on_disconnect). Packets emitted meanwhile are sent after the CONNECT reply. */
    int (*on_connect)(ps__sio_socket *s, json_t *auth);
    /* An event: `packet` is the whole array [name, args...] (borrowed), so the arguments start
     * at index 1; ack_id -1 when the client wants no acknowledgement. */
    void (*on_event)(ps__sio_socket *s, const char *name, json_t *packet, int64_t ack_id);
    /* The socket is gone (client DISCONNECT, server disconnect, or session end); pending acks
     * have completed with PS_ECLOSED already. Called once per accepted socket. */
    void (*on_disconnect)(ps__sio_socket *s, const char *reason);
    /* The connection ended and every socket on it was disconnected or detached. */
    void (*on_conn_close)(ps__sio_conn *c);
    /* Optional, the hot path: an EVENT whose data was scanned and checked but not built. `ix`
     * indexes the data array [name, args...] (ix->top) and the members of its first argument
     * (ix->subs, sub_of 1); ix->text is the whole array. Return true when handled, or false,
     * before doing anything, to have it built and delivered by on_event instead. */
    bool (*on_event_raw)(ps__sio_socket *s, const char *name, const ps__json_index *ix,
                         int64_t ack_id);
    /* Recovery, optional: the socket's transport is gone and the socket waits for its client
     * (ps__sio_socket_detached); `reason` is why the transport went. on_disconnect follows
     * once, when the socket really ends. */
    void (*on_detach)(ps__sio_socket *s, const char *reason);
    /* Recovery, optional: the client came back; the missed packets and the CONNECT reply have
     * been sent, and the socket is connected again. */
    void (*on_resume)(ps__sio_socket *s);
    /* Recovery, optional: after a resume, the pong to a ping sent after it: the client has read
     * the replay and the CONNECT reply, and what it sent when it read them has arrived. */
    void (*on_resume_settled)(ps__sio_socket *s);
} ps__sio_cbs;

typedef struct ps__sio_stats {
    uint64_t packets_in;
    uint64_t packets_out;
    uint64_t protocol_errors;
    uint64_t sockets; /* detached ones included */
    uint64_t sockets_total;
    uint64_t detached;        /* sockets waiting for their client now */
    uint64_t resumed;         /* recoveries that succeeded */
    uint64_t resume_failed;   /* CONNECTs with a pid answered with a fresh socket */
    uint64_t resume_overflow; /* sockets that could not wait for their client: a bound */
} ps__sio_stats;

/* Connection state recovery settings; window_ms 0 = off. */
typedef struct ps__sio_recovery {
    uint32_t window_ms;      /* how long a detached socket waits for its client */
    size_t max_replay_bytes; /* per socket; 0 = no bound */
    uint32_t max_detached;   /* sockets waiting at once; 0 = no bound */
} ps__sio_recovery;

struct ps__sio_server {
    ps__eio_server eio;
    const ps__sio_cbs *cbs;
    void *user;
    uint32_t connect_timeout_ms;
    uint32_t max_acks; /* unanswered emits with ack per socket; 0 = no bound */
    bool engine_echo;  /* conformance mode: echo Engine.IO messages, no Socket.IO */
    ps__sio_recovery recovery;
    ps__sio_stats stats;
    ps__list detached;     /* detached sockets, oldest first */
    ps__sio_socket **pids; /* pid -> socket, every socket with a pid */
    size_t npid_buckets;   /* a power of two, or 0 */
    size_t npids;
    bool shutting_down;
};

void ps__sio_server_init(ps__sio_server *ss, uv_loop_t *loop, const ps__eio_config *cfg,
                         uint32_t connect_timeout_ms, const ps__sio_cbs *cbs, void *user);
void ps__sio_server_free(ps__sio_server *ss);
/* Server stop: detached sockets end (on_disconnect), then every connection is closed. */
void ps__sio_server_shutdown(ps__sio_server *ss);

/* Sockets (one per namespace joined on a connection). */
int ps__sio_emit(ps__sio_socket *s, const char *event, json_t *args);
/*
 * Emits `event` with arguments already encoded: `args` is the JSON text of the argument list
 * without its brackets ("1,{...}"), and must hold no binary value. Saves building a json_t for
 * messages whose text is easy to write directly (the channel envelope).
 */
int ps__sio_emit_text(ps__sio_socket *s, const char *event, const char *args, size_t len);
/* Whether v holds a binary value ({"$binary": ...}) anywhere. */
bool ps__json_has_binary(const json_t *v);
/* Returns 0, PS_ECLOSED, PS_EINVAL, or PS_ELIMIT with max_acks unanswered (cb never called). */
int ps__sio_emit_ack(ps__sio_socket *s, const char *event, json_t *args, uint32_t timeout_ms,
                     ps__sio_ack_cb cb, void *user);
int ps__sio_send_ack(ps__sio_socket *s, int64_t id, json_t *args);
/* Sends DISCONNECT and disconnects the socket (on_disconnect follows, maybe re-entrantly). */
int ps__sio_disconnect(ps__sio_socket *s);
void ps__sio_socket_deny(ps__sio_socket *s, const char *message, json_t *data);
bool ps__sio_socket_closed(const ps__sio_socket *s);
void ps__sio_socket_set_up(ps__sio_socket *s, void *up);
void *ps__sio_socket_up(const ps__sio_socket *s);
const char *ps__sio_socket_id(const ps__sio_socket *s);
const char *ps__sio_socket_nsp(const ps__sio_socket *s);
/* The socket's connection; NULL while it is detached. */
ps__sio_conn *ps__sio_socket_conn(const ps__sio_socket *s);
/* Recovery: waiting for its client to come back (transport gone, socket not ended). */
bool ps__sio_socket_detached(const ps__sio_socket *s);
/* Recovery: whether the socket has a pid (it can be resumed). */
bool ps__sio_socket_recovers(const ps__sio_socket *s);
/* Bytes sent and not yet taken by the client: the transport's queue, or while detached the
 * replay buffer. */
size_t ps__sio_socket_queued(const ps__sio_socket *s);
/* Keeps the socket's memory alive across app callbacks that may disconnect it. */
void ps__sio_socket_ref(ps__sio_socket *s);
void ps__sio_socket_unref(ps__sio_socket *s);

ps__eio *ps__sio_conn_eio(const ps__sio_conn *c);
ps__sio_server *ps__sio_conn_server(const ps__sio_conn *c);
/* Ends the whole connection (every namespace), e.g. for a protocol violation. */
void ps__sio_conn_close(ps__sio_conn *c, int ws_code, const char *reason);

#endif
