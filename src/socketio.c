/*
 * socketio: the Socket.IO v5 codec and the namespace sockets of each Engine.IO session.
 *
 * A ps__sio_conn lives exactly as long as its Engine.IO session. Its sockets are freed when they
 * disconnect and nothing holds a reference (upper layers hold one across app callbacks, so an
 * app may disconnect a socket from inside its own event handler). Every emit-with-ack completes
 * exactly once: the ack arrives, its timer fires, or the socket closes, whichever is first.
 *
 * Recovery: a socket with a pid is also in the server's pid table. When its connection ends
 * for a reason a client comes back from, it is detached instead (conn NULL, in srv->detached,
 * its window timer running): sends go to its replay buffer only, acks stay pending. A CONNECT
 * with its pid on its namespace, and an offset the buffer can still serve, attaches it to that
 * connection. A pid whose socket is still attached elsewhere is checked first: the old
 * connection is probed (a ping with a short deadline); if it answers, the newcomer gets a fresh
 * socket, if it dies the socket detaches and the newcomer resumes it (`takeover`). The replay
 * buffer forgets what the client has read: at each pong, everything sent before its ping.
 */
#include "socketio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* The longest a takeover waits for the old connection to answer its probe. */
#define TAKEOVER_PROBE_MS 2000
/* While a connected socket keeps anything for a replay, a ping goes out within this, and at once
 * past REPLAY_PING_BYTES: its pong lets what it proves read go, so a socket keeps a couple of
 * seconds and at most about that many bytes of traffic, not a heartbeat's worth. */
#define REPLAY_PING_MS 2000
#define REPLAY_PING_BYTES (16 * 1024)

typedef struct reassembly {
    ps__sio_packet packet; /* the text part */
    ps__buf parts[PS__SIO_MAX_ATTACHMENTS];
    int nparts; /* of packet.attachments */
} reassembly;

/* A CONNECT with the pid of a socket still attached elsewhere, waiting for the probe. */
typedef struct takeover {
    ps__sio_socket *target; /* NULL once it went away */
    ps__sio_packet packet;  /* the CONNECT (its data holds a reference) */
    ps__timer *settle;      /* decides from the loop, never inside another connection's call */
} takeover;

struct ps__sio_conn {
    ps__sio_server *srv;
    ps__eio *eio;
    ps__list sockets;
    ps__timer *connect_timer;
    /* A binary packet being reassembled (allocated only then: idle connections are many). */
    struct reassembly *bin;
    struct takeover *takeover; /* allocated only while one waits */
};

enum { SOCK_CONNECTING, SOCK_CONNECTED, SOCK_DETACHED, SOCK_CLOSED };

struct ps__sio_socket {
    ps__sio_server *srv;
    ps__sio_conn *conn; /* NULL while detached */
    ps__list link;      /* in conn->sockets, or srv->detached, while not closed */
    char *nsp;
    char id[PS__SID_LEN + 1];
    void *up;
    int refs;
    int state;
    ps__list acks; /* pending_ack, oldest first */
    uint32_t nacks;
    int64_t next_ack_id;
    ps__buf early; /* messages sent during on_connect: [u8 binary][size_t len][bytes]... */
    json_t *deny;
    /* Recovery (recovers true): */
    bool recovers;
    bool ping_marked;      /* a ping is out; ping_mark is the last offset sent before it */
    bool settling;         /* resumed; waiting for the pong of a ping sent after the resume */
    bool settle_ping_sent; /* that ping went out */
    uint64_t ping_mark;
    ps__sio_socket *pid_next; /* pid table chain */
    ps__timer *window;        /* detached: the resume window (0 ms: end now) */
    const char *lost_reason;  /* why the transport went, static text */
    ps__sio_conn *waiter;     /* a connection whose takeover waits on this socket */
    ps__replay replay;
    char pid[PS__HEX_ID_LEN + 1];
};

typedef struct pending_ack {
    ps__list link;
    ps__sio_socket *sock;
    int64_t id;
    ps__timer *timer;
    ps__sio_ack_cb cb;
    void *user;
} pending_ack;

/* ---- codec ----------------------------------------------------------------------------- */

bool ps__sio_reserved_event(const char *name)
{
    if (name[0] != 'c' && name[0] != 'd' && name[0] != 'n' && name[0] != 'r')
        return false; /* the first letter rules out all six, for most names */
    static const char *reserved[] = {"connect",       "connect_error", "disconnect",
                                     "disconnecting", "newListener",   "removeListener"};
    for (size_t i = 0; i < PS__ARRAY_SIZE(reserved); i++)
        if (strcmp(name, reserved[i]) == 0)
            return true;
    return false;
}

void ps__sio_packet_clear(ps__sio_packet *p)
{
    json_decref(p->data);
    p->data = NULL;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The packet's head (type, attachments, namespace, ack id); *at is where its data begins. */
static int decode_head(const char *s, size_t len, ps__sio_packet *p, size_t *at, const char **err)
{
    size_t i = 0;
    p->data = NULL;
    p->id = -1;
    p->attachments = 0;
    strcpy(p->nsp, "/");
    if (len == 0 || s[0] < '0' || s[0] > '6') {
        *err = "invalid packet type";
        return -1;
    }
    p->type = s[i++] - '0';
    if (p->type == PS__SIO_BINARY_EVENT || p->type == PS__SIO_BINARY_ACK) {
        size_t start = i;
        int n = 0;
        while (i < len && is_digit(s[i]) && i - start < 4)
            n = n * 10 + (s[i++] - '0');
        if (i == start || i >= len || s[i] != '-') {
            *err = "invalid attachments";
            return -1;
        }
        i++;
        if (n < 1 || n > PS__SIO_MAX_ATTACHMENTS) {
            *err = "too many attachments";
            return -1;
        }
        p->attachments = n;
    }
    if (i < len && s[i] == '/') {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t n = i - start;
        if (n >= PS__SIO_MAX_NSP) {
            *err = "namespace too long";
            return -1;
        }
        memcpy(p->nsp, s + start, n);
        p->nsp[n] = '\0';
        if (memchr(p->nsp, '\0', n) || !ps__utf8_valid((const uint8_t *)p->nsp, n)) {
            *err = "invalid namespace";
            return -1;
        }
        if (i < len)
            i++; /* the comma */
    }
    if (i < len && is_digit(s[i])) {
        /* Ack ids are JavaScript numbers: every integer up to 2^53-1 (16 digits) is exact and
         * legal; larger ones would come back rounded, under another id. */
        int64_t id = 0;
        size_t start = i;
        while (i < len && is_digit(s[i])) {
            if (i - start >= 16) {
                *err = "invalid ack id";
                return -1;
            }
            id = id * 10 + (s[i++] - '0');
        }
        if (id > PS__SIO_MAX_ACK_ID) {
            *err = "invalid ack id";
            return -1;
        }
        p->id = id;
    }
    *at = i;
    return 0;
}

int ps__sio_decode(const char *s, size_t len, ps__sio_packet *p, const char **err)
{
    size_t i;
    if (decode_head(s, len, p, &i, err) != 0)
        return -1;
    if (i < len) {
        p->data = ps__json_parse(s + i, len - i);
        if (!p->data) {
            *err = "invalid JSON payload";
            return -1;
        }
    }
    switch (p->type) {
    case PS__SIO_CONNECT:
        if (p->data && !json_is_object(p->data))
            goto bad_payload;
        break;
    case PS__SIO_DISCONNECT:
        if (p->data)
            goto bad_payload;
        break;
    case PS__SIO_EVENT:
    case PS__SIO_BINARY_EVENT: {
        if (!json_is_array(p->data) || json_array_size(p->data) == 0)
            goto bad_payload;
        json_t *name = json_array_get(p->data, 0);
        if (!(json_is_string(name) && !ps__sio_reserved_event(json_string_value(name))) &&
            !json_is_number(name))
            goto bad_payload;
        break;
    }
    case PS__SIO_ACK:
    case PS__SIO_BINARY_ACK:
        if (!json_is_array(p->data) || p->id < 0)
            goto bad_payload;
        break;
    case PS__SIO_CONNECT_ERROR:
        if (!json_is_object(p->data) && !json_is_string(p->data))
            goto bad_payload;
        break;
    }
    return 0;
bad_payload:
    *err = "invalid payload";
    ps__sio_packet_clear(p);
    return -1;
}

void ps__sio_encode(ps__buf *out, int type, const char *nsp, int64_t id, const json_t *data)
{
    ps__sio_encode_binary(out, type, 0, nsp, id, data);
}

void ps__sio_encode_binary(ps__buf *out, int type, int attachments, const char *nsp, int64_t id,
                           const json_t *data)
{
    ps__buf_appendc(out, '4');
    ps__buf_appendc(out, (char)('0' + type));
    if (attachments > 0)
        ps__buf_printf(out, "%d-", attachments);
    if (nsp && strcmp(nsp, "/") != 0) {
        ps__buf_appends(out, nsp);
        ps__buf_appendc(out, ',');
    }
    if (id >= 0)
        ps__buf_printf(out, "%" PRId64, id);
    if (data)
        ps__json_append(out, data);
}

/* ---- binary values --------------------------------------------------------------------- */

json_t *ps_binary(const void *data, size_t len)
{
    ps__buf b64;
    ps__buf_init(&b64);
    ps__buf_reserve(&b64, 4 * ((len + 2) / 3) + 1);
    b64.len = ps__base64_encode(data, len, b64.base);
    json_t *v = json_pack("{s:s#}", "$binary", b64.base, (int)b64.len);
    ps__buf_free(&b64);
    return v;
}

bool ps_is_binary(const json_t *v)
{
    return json_is_object(v) && json_object_size(v) == 1 &&
           json_is_string(json_object_get(v, "$binary"));
}

void *ps_binary_data(const json_t *v, size_t *len)
{
    if (!ps_is_binary(v))
        return NULL;
    json_t *s = json_object_get(v, "$binary");
    ps__buf out;
    ps__buf_init(&out);
    if (ps__base64_decode(json_string_value(s), json_string_length(s), &out) < 0) {
        ps__buf_free(&out);
        return NULL;
    }
    return ps__buf_steal(&out, len);
}

/*
 * Copies v, letting `leaf` replace the values it claims (*claimed set; a NULL result is an
 * error that fails the whole copy) and descending into the arrays and objects it leaves.
 */
typedef json_t *(*leaf_fn)(json_t *v, void *ctx, bool *claimed);

static json_t *json_map(json_t *v, leaf_fn leaf, void *ctx)
{
    bool claimed = false;
    json_t *r = leaf(v, ctx, &claimed);
    if (claimed)
        return r;
    if (json_is_array(v)) {
        json_t *copy = json_array();
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *item = json_map(json_array_get(v, i), leaf, ctx);
            if (!item) {
                json_decref(copy);
                return NULL;
            }
            json_array_append_new(copy, item);
        }
        return copy;
    }
    if (json_is_object(v)) {
        json_t *copy = json_object();
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val)
        {
            json_t *item = json_map(val, leaf, ctx);
            if (!item) {
                json_decref(copy);
                return NULL;
            }
            json_object_set_new(copy, key, item);
        }
        return copy;
    }
    return json_incref(v);
}

typedef struct attachments {
    ps__buf *parts;
    int n;
} attachments;

/* Sending: a binary value becomes a placeholder, its bytes the next attachment. */
static json_t *to_placeholder(json_t *v, void *ctx, bool *claimed)
{
    attachments *a = ctx;
    if (!ps_is_binary(v))
        return NULL;
    *claimed = true;
    if (a->n == PS__SIO_MAX_ATTACHMENTS)
        return NULL;
    json_t *s = json_object_get(v, "$binary");
    ps__buf *part = &a->parts[a->n];
    ps__buf_init(part);
    if (ps__base64_decode(json_string_value(s), json_string_length(s), part) < 0) {
        ps__buf_free(part);
        return NULL;
    }
    return json_pack("{s:b,s:i}", "_placeholder", 1, "num", a->n++);
}

/* Receiving: a placeholder becomes the binary value of the attachment it names. */
static json_t *from_placeholder(json_t *v, void *ctx, bool *claimed)
{
    attachments *a = ctx;
    if (!json_is_object(v) || !json_is_true(json_object_get(v, "_placeholder")))
        return NULL;
    *claimed = true;
    json_t *num = json_object_get(v, "num");
    if (!json_is_integer(num) || json_integer_value(num) < 0 || json_integer_value(num) >= a->n)
        return NULL;
    ps__buf *part = &a->parts[json_integer_value(num)];
    return ps_binary(part->base ? part->base : "", part->len);
}

/* Whether v holds a binary value anywhere: a read-only walk, so that the common packet with none
 * is sent as it is instead of being copied. */
bool ps__json_has_binary(const json_t *v)
{
    if (ps_is_binary(v))
        return true;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (ps__json_has_binary(json_array_get(v, i)))
                return true;
    } else if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if (ps__json_has_binary(val))
                return true;
        }
    }
    return false;
}

/* Copies v with every binary value replaced by a placeholder; the bytes go to parts. Returns
 * NULL if there are too many or one is not valid base64. */
static json_t *deconstruct(json_t *v, ps__buf *parts, int *nparts)
{
    attachments a = {parts, *nparts};
    json_t *r = json_map(v, to_placeholder, &a);
    *nparts = a.n;
    return r;
}

/* The inverse, on a received packet. NULL when a placeholder names no attachment. */
static json_t *reconstruct(json_t *v, ps__buf *parts, int nparts)
{
    attachments a = {parts, nparts};
    return json_map(v, from_placeholder, &a);
}

static void parts_free(ps__buf *parts, int n)
{
    for (int i = 0; i < n; i++)
        ps__buf_free(&parts[i]);
}

/* ---- pid table ------------------------------------------------------------------------- */

static size_t pid_hash(const char *pid, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = pid; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (size_t)(h & (nbuckets - 1));
}

static void pid_add(ps__sio_server *ss, ps__sio_socket *s)
{
    if (ss->npids + 1 > ss->npid_buckets) {
        size_t n = ss->npid_buckets ? ss->npid_buckets * 2 : 64;
        ps__sio_socket **b = ps__calloc(n, sizeof *b);
        for (size_t i = 0; i < ss->npid_buckets; i++) {
            for (ps__sio_socket *e = ss->pids[i], *next; e; e = next) {
                next = e->pid_next;
                size_t h = pid_hash(e->pid, n);
                e->pid_next = b[h];
                b[h] = e;
            }
        }
        ps__free(ss->pids);
        ss->pids = b;
        ss->npid_buckets = n;
    }
    size_t h = pid_hash(s->pid, ss->npid_buckets);
    s->pid_next = ss->pids[h];
    ss->pids[h] = s;
    ss->npids++;
}

static void pid_remove(ps__sio_server *ss, ps__sio_socket *s)
{
    if (!ss->npid_buckets)
        return;
    ps__sio_socket **pp = &ss->pids[pid_hash(s->pid, ss->npid_buckets)];
    while (*pp && *pp != s)
        pp = &(*pp)->pid_next;
    if (*pp) {
        *pp = s->pid_next;
        ss->npids--;
    }
}

static ps__sio_socket *pid_find(ps__sio_server *ss, const char *pid)
{
    if (!ss->npid_buckets)
        return NULL;
    for (ps__sio_socket *s = ss->pids[pid_hash(pid, ss->npid_buckets)]; s; s = s->pid_next)
        if (strcmp(s->pid, pid) == 0)
            return s;
    return NULL;
}

/* ---- sockets --------------------------------------------------------------------------- */

static ps__sio_socket *find_socket(ps__sio_conn *c, const char *nsp)
{
    ps__list *pos;
    ps__list_foreach(pos, &c->sockets)
    {
        ps__sio_socket *s = PS__CONTAINER_OF(pos, ps__sio_socket, link);
        if (strcmp(s->nsp, nsp) == 0)
            return s;
    }
    return NULL;
}

void ps__sio_socket_ref(ps__sio_socket *s)
{
    s->refs++;
}

void ps__sio_socket_unref(ps__sio_socket *s)
{
    if (--s->refs > 0)
        return;
    ps__buf_free(&s->early);
    json_decref(s->deny);
    ps__replay_free(&s->replay);
    ps__free(s->nsp);
    ps__free(s);
}

static int eio_send(ps__eio *e, bool binary, const char *data, size_t len)
{
    return binary ? ps__eio_send_binary(e, data, len) : ps__eio_send_packet(e, data, len);
}

static void takeover_wake(ps__sio_conn *c);

/*
 * Keeps one record of event `offset` for a replay. A detached socket that loses records it may
 * still owe its client can never be resumed: it ends, from the loop (we may be deep inside an
 * app's emit). An attached one that holds a lot asks for a ping, whose pong lets it forget.
 */
static void keep_for_replay(ps__sio_socket *s, uint64_t offset, bool binary,
                            const ps__replay_part *parts, size_t n)
{
    bool was_empty = s->replay.held == 0;
    int lost = ps__replay_pushv(&s->replay, offset, binary, parts, n);
    if (s->state == SOCK_DETACHED) {
        if (lost) {
            s->srv->stats.resume_overflow++;
            s->recovers = false; /* no second count, no resume meanwhile */
            ps__timer_start(s->window, 0);
        }
        return;
    }
    if (!s->conn)
        return;
    size_t bound = s->srv->recovery.max_replay_bytes;
    size_t soon = bound && bound / 4 < REPLAY_PING_BYTES ? bound / 4 : REPLAY_PING_BYTES;
    if (was_empty)
        ps__eio_ping_within(s->conn->eio, REPLAY_PING_MS);
    else if (s->replay.held > soon)
        ps__eio_ping_soon(s->conn->eio);
}

/* Sends (or, before the CONNECT reply, keeps) one Engine.IO message; `offset` non-zero for the
 * parts of an event kept for a replay. A detached socket only keeps. What is kept counts as
 * sent even when the transport is closing under it (its socket detaches next), so that the app
 * does not take a session that is about to wait for its client for one that ended. */
static int send_message(ps__sio_socket *s, uint64_t offset, bool binary, const char *data,
                        size_t len)
{
    if (offset) {
        ps__replay_part part = {data, len};
        keep_for_replay(s, offset, binary, &part, 1);
    }
    if (s->state == SOCK_DETACHED)
        return 0;
    if (s->state == SOCK_CONNECTING) {
        uint8_t flag = binary;
        ps__buf_append(&s->early, &flag, 1);
        ps__buf_append(&s->early, &len, sizeof len);
        ps__buf_append(&s->early, data, len);
        return 0;
    }
    int rc = eio_send(s->conn->eio, binary, data, len);
    return offset ? 0 : rc;
}

/* The offset of a new EVENT, 0 if the socket keeps none. Appended to the packet's array as its
 * last element, which is where socket.io-client looks for it. */
static uint64_t add_offset(ps__sio_socket *s, ps__buf *packet)
{
    if (!s->recovers)
        return 0;
    char text[PS__REPLAY_OFFSET_MAX];
    uint64_t offset = s->replay.next;
    size_t n = ps__replay_take_offset_text(&s->replay, text);
    packet->len--; /* the array's ']' */
    ps__buf_reserve(packet, n + 4);
    ps__buf_append(packet, ",\"", 2);
    ps__buf_append(packet, text, n);
    ps__buf_append(packet, "\"]", 2);
    return offset;
}

/*
 * Encodes and sends a packet. Binary values in `data` ({"$binary": base64}) turn an EVENT or
 * ACK into its BINARY_ form: placeholders in the text packet, then each attachment in order.
 * Returns 0, UV_EPIPE when the session is closing, or PS_EINVAL for more than 10 attachments.
 */
static int send_packet(ps__sio_socket *s, int type, int64_t id, const json_t *data)
{
    ps__buf parts[PS__SIO_MAX_ATTACHMENTS];
    int nparts = 0;
    json_t *plain = NULL;
    if (data && (type == PS__SIO_EVENT || type == PS__SIO_ACK) && ps__json_has_binary(data)) {
        plain = deconstruct((json_t *)data, parts, &nparts);
        if (!plain) {
            parts_free(parts, nparts);
            return PS_EINVAL;
        }
        if (nparts > 0) {
            type = type == PS__SIO_EVENT ? PS__SIO_BINARY_EVENT : PS__SIO_BINARY_ACK;
            data = plain;
        }
    }
    ps__buf out;
    ps__buf_init(&out);
    ps__sio_encode_binary(&out, type, nparts, s->nsp, id, data);
    uint64_t offset = 0;
    if ((type == PS__SIO_EVENT || type == PS__SIO_BINARY_EVENT) && id < 0)
        offset = add_offset(s, &out);
    int rc;
    if (type == PS__SIO_CONNECT || type == PS__SIO_CONNECT_ERROR)
        /* The CONNECT reply must precede everything else in this namespace: it is never kept. */
        rc = ps__eio_send_packet(s->conn->eio, out.base, out.len);
    else
        rc = send_message(s, offset, false, out.base, out.len);
    for (int i = 0; i < nparts && rc == 0; i++)
        rc = send_message(s, offset, true, parts[i].base ? parts[i].base : "", parts[i].len);
    if (rc == 0)
        s->srv->stats.packets_out++;
    ps__buf_free(&out);
    parts_free(parts, nparts);
    json_decref(plain);
    return rc;
}

static void flush_early(ps__sio_socket *s)
{
    size_t off = 0;
    while (off + 1 + sizeof(size_t) <= s->early.len) {
        bool binary = s->early.base[off] != 0;
        size_t n;
        memcpy(&n, s->early.base + off + 1, sizeof n);
        off += 1 + sizeof n;
        eio_send(s->conn->eio, binary, s->early.base + off, n);
        off += n;
    }
    ps__buf_free(&s->early);
}

static void ack_complete(pending_ack *a, int status, json_t *args)
{
    ps__list_remove(&a->link);
    ps__timer_free(a->timer);
    ps__sio_socket *s = a->sock;
    s->nacks--;
    ps__sio_socket_ref(s);
    a->cb(s, status, args, a->user);
    ps__sio_socket_unref(s);
    ps__free(a);
}

static void ack_on_timeout(ps__timer *t, void *data)
{
    ack_complete(data, PS_ETIMEDOUT, NULL);
}

/* Disconnects a socket: fails its pending acks, tells the upper layer (if it had accepted the
 * socket), and drops the connection's reference (a detached socket's, its own). */
static void socket_close(ps__sio_socket *s, const char *reason)
{
    if (s->state == SOCK_CLOSED)
        return;
    bool was_accepted = s->state == SOCK_CONNECTED || s->state == SOCK_DETACHED;
    ps__sio_server *ss = s->srv;
    if (s->state == SOCK_DETACHED) {
        ss->stats.detached--;
        if (!reason) /* the app hears why the session went, not that its window passed */
            reason = s->lost_reason ? s->lost_reason : "transport close";
    }
    s->state = SOCK_CLOSED;
    ps__list_remove(&s->link);
    ss->stats.sockets--;
    if (s->pid[0])
        pid_remove(ss, s);
    ps__timer_free(s->window);
    s->window = NULL;
    if (s->waiter) {
        s->waiter->takeover->target = NULL;
        takeover_wake(s->waiter);
        s->waiter = NULL;
    }
    ps__replay_free(&s->replay);
    ps__sio_socket_ref(s);
    while (!ps__list_empty(&s->acks))
        ack_complete(PS__CONTAINER_OF(s->acks.next, pending_ack, link), PS_ECLOSED, NULL);
    if (was_accepted && ss->cbs->on_disconnect)
        ss->cbs->on_disconnect(s, reason);
    ps__sio_socket_unref(s);
    ps__sio_socket_unref(s); /* the connection's */
}

static void window_expired(ps__timer *t, void *data)
{
    socket_close(data, NULL);
}

/* Why a connection ended decides whether its client will want its sockets back: only a
 * transport that failed under them, not the client's own DISCONNECT, a protocol violation, a
 * slow consumer cut off, or the server stopping. */
static bool recoverable_reason(const char *reason)
{
    return strcmp(reason, "transport close") == 0 || strcmp(reason, "ping timeout") == 0 ||
           strcmp(reason, "client close") == 0;
}

/* The transport under a connected socket is gone: keep it for its client if we may. */
static void socket_lost(ps__sio_socket *s, const char *reason, bool client_left)
{
    ps__sio_server *ss = s->srv;
    if (!s->recovers || s->state != SOCK_CONNECTED || ss->shutting_down || client_left ||
        !recoverable_reason(reason)) {
        socket_close(s, reason);
        return;
    }
    if (ss->recovery.max_detached && ss->stats.detached >= ss->recovery.max_detached) {
        ss->stats.resume_overflow++;
        socket_close(s, reason);
        return;
    }
    ps__list_remove(&s->link);
    s->conn = NULL;
    s->state = SOCK_DETACHED;
    s->lost_reason = reason;
    s->ping_marked = false;
    s->settling = false;
    ps__list_insert_tail(&ss->detached, &s->link);
    ss->stats.detached++;
    s->window = ps__timer_new(ss->eio.loop, window_expired, s);
    ps__timer_start(s->window, ss->recovery.window_ms);
    if (ss->cbs->on_detach) {
        ps__sio_socket_ref(s);
        ss->cbs->on_detach(s, reason);
        ps__sio_socket_unref(s);
    }
    if (s->waiter && s->state == SOCK_DETACHED)
        takeover_wake(s->waiter); /* a takeover was waiting for exactly this */
}

/* An EVENT's data, [event, ...args]; NULL for a name or arguments an EVENT cannot carry. */
static json_t *event_data(const char *event, json_t *args)
{
    if (!event || ps__sio_reserved_event(event) || (args && !json_is_array(args)))
        return NULL;
    json_t *arr = json_array();
    json_array_append_new(arr, json_string(event));
    if (args)
        json_array_extend(arr, args);
    return arr;
}

int ps__sio_emit(ps__sio_socket *s, const char *event, json_t *args)
{
    if (s->state == SOCK_CLOSED)
        return PS_ECLOSED;
    json_t *arr = event_data(event, args);
    if (!arr)
        return PS_EINVAL;
    int rc = send_packet(s, PS__SIO_EVENT, -1, arr);
    json_decref(arr);
    return rc == 0 || rc == PS_EINVAL ? rc : PS_ECLOSED;
}

/*
 * The one place that frames a server EVENT from text: the head ("42", the namespace, the name)
 * is written on the stack and the arguments go out as they are, with no copy in between.
 */
int ps__sio_emit_text(ps__sio_socket *s, const char *event, const char *args, size_t len)
{
    if (s->state == SOCK_CLOSED)
        return PS_ECLOSED;
    /* Every channel envelope is a "message" on the main namespace: its head is a constant. */
    static const char message_head[] = "42[\"message\",";
    bool constant = s->state != SOCK_CONNECTING && s->nsp[0] == '/' && s->nsp[1] == '\0' &&
                    strcmp(event, "message") == 0;
    char stack[128];
    ps__buf head = {stack, 0, sizeof stack};
    if (constant) {
        head.base = (char *)message_head;
        head.len = sizeof message_head - 1;
    } else {
        /* An escape takes at most six bytes per byte of the name. Early messages (kept until
         * the CONNECT reply) are stored whole, and a long name is rare: the heap for both. */
        size_t need = 8 + strlen(s->nsp) + 6 * strlen(event);
        if (need > sizeof stack || s->state == SOCK_CONNECTING)
            ps__buf_init(&head);
        ps__sio_encode(&head, PS__SIO_EVENT, s->nsp, -1, NULL);
        ps__buf_appendc(&head, '[');
        ps__json_escape(&head, event);
        ps__buf_appendc(&head, ',');
    }
    /* The array's end: with recovery, the event's offset first (its last element). */
    char tail[PS__REPLAY_OFFSET_MAX + 5] = "]";
    size_t ntail = 1;
    uint64_t offset = 0;
    if (s->recovers) {
        offset = s->replay.next;
        ntail = 2 + ps__replay_take_offset_text(&s->replay, tail + 2);
        memcpy(tail, ",\"", 2);
        memcpy(tail + ntail, "\"]", 2);
        ntail += 2;
    }
    ps__replay_part kept[3] = {{head.base, head.len}, {args, len}, {tail, ntail}};
    if (offset)
        keep_for_replay(s, offset, false, kept, 3);
    int rc = 0;
    if (s->state == SOCK_CONNECTING) {
        ps__buf_append(&head, args, len);
        ps__buf_append(&head, tail, ntail);
        rc = send_message(s, 0, false, head.base, head.len);
    } else if (s->state == SOCK_CONNECTED) {
        uv_buf_t parts[3] = {uv_buf_init(head.base, (unsigned)head.len),
                             uv_buf_init((char *)args, (unsigned)len),
                             uv_buf_init(tail, (unsigned)ntail)};
        rc = ps__eio_send_packetv(s->conn->eio, parts, 3);
        if (offset)
            rc = 0; /* kept: see send_message */
    }
    if (rc == 0)
        s->srv->stats.packets_out++;
    if (!constant && head.base != stack)
        ps__buf_free(&head);
    return rc == 0 ? 0 : PS_ECLOSED;
}

int ps__sio_emit_ack(ps__sio_socket *s, const char *event, json_t *args, uint32_t timeout_ms,
                     ps__sio_ack_cb cb, void *user)
{
    if (s->state == SOCK_CLOSED || (!s->recovers && s->conn && ps__eio_closed(s->conn->eio)))
        return PS_ECLOSED;
    json_t *arr = cb ? event_data(event, args) : NULL;
    if (!arr)
        return PS_EINVAL;
    /* A client that never acknowledges would otherwise make every emit cost memory for good. */
    uint32_t max = s->srv->max_acks;
    if (max && s->nacks >= max) {
        json_decref(arr);
        return PS_ELIMIT;
    }
    int64_t id = s->next_ack_id;
    /* Detached: the event is lost, as on a connection that died unnoticed; acks are never
     * replayed (Socket.IO's rule: the client could not tell a replay from a new request). */
    int rc = send_packet(s, PS__SIO_EVENT, id, arr);
    json_decref(arr);
    if (rc == PS_EINVAL)
        return rc;
    /* Sent, or lost with a session that is ending: either way the callback is owed. */
    pending_ack *a = ps__calloc(1, sizeof *a);
    a->sock = s;
    a->id = s->next_ack_id++;
    a->cb = cb;
    a->user = user;
    ps__list_insert_tail(&s->acks, &a->link);
    s->nacks++;
    if (timeout_ms) {
        a->timer = ps__timer_new(s->srv->eio.loop, ack_on_timeout, a);
        ps__timer_start(a->timer, timeout_ms);
    }
    return 0;
}

int ps__sio_send_ack(ps__sio_socket *s, int64_t id, json_t *args)
{
    if (s->state == SOCK_CLOSED)
        return PS_ECLOSED;
    if (args && !json_is_array(args))
        return PS_EINVAL;
    json_t *empty = args ? NULL : json_array();
    int rc = send_packet(s, PS__SIO_ACK, id, args ? args : empty);
    json_decref(empty);
    return rc == 0 || rc == PS_EINVAL ? rc : PS_ECLOSED;
}

int ps__sio_disconnect(ps__sio_socket *s)
{
    if (s->state == SOCK_CLOSED)
        return PS_ECLOSED;
    if (s->state != SOCK_DETACHED)
        send_packet(s, PS__SIO_DISCONNECT, -1, NULL);
    s->lost_reason = NULL;
    socket_close(s, "server namespace disconnect");
    return 0;
}

void ps__sio_socket_deny(ps__sio_socket *s, const char *message, json_t *data)
{
    json_decref(s->deny);
    s->deny = json_pack("{s:s}", "message", message ? message : "Not authorized");
    if (data)
        json_object_set(s->deny, "data", data);
}

bool ps__sio_socket_closed(const ps__sio_socket *s)
{
    return s->state == SOCK_CLOSED;
}

bool ps__sio_socket_detached(const ps__sio_socket *s)
{
    return s->state == SOCK_DETACHED;
}

bool ps__sio_socket_recovers(const ps__sio_socket *s)
{
    return s->recovers;
}

size_t ps__sio_socket_queued(const ps__sio_socket *s)
{
    if (s->state == SOCK_DETACHED)
        return ps__replay_held(&s->replay);
    return s->conn ? ps__eio_queued(s->conn->eio) : 0;
}

void ps__sio_socket_set_up(ps__sio_socket *s, void *up)
{
    s->up = up;
}

void *ps__sio_socket_up(const ps__sio_socket *s)
{
    return s->up;
}

const char *ps__sio_socket_id(const ps__sio_socket *s)
{
    return s->id;
}

const char *ps__sio_socket_nsp(const ps__sio_socket *s)
{
    return s->nsp;
}

ps__sio_conn *ps__sio_socket_conn(const ps__sio_socket *s)
{
    return s->conn;
}

/* ---- connections ----------------------------------------------------------------------- */

ps__eio *ps__sio_conn_eio(const ps__sio_conn *c)
{
    return c->eio;
}

ps__sio_server *ps__sio_conn_server(const ps__sio_conn *c)
{
    return c->srv;
}

void ps__sio_conn_close(ps__sio_conn *c, int ws_code, const char *reason)
{
    if (!ps__eio_closed(c->eio) && ws_code != PS__WS_NORMAL && ws_code != PS__WS_GOING_AWAY)
        c->srv->stats.protocol_errors++;
    ps__eio_close(c->eio, ws_code, reason);
}

static void connect_timeout(ps__timer *t, void *data)
{
    ps__sio_conn_close(data, PS__WS_NORMAL, "connect timeout");
}

static void stop_connect_timer(ps__sio_conn *c)
{
    if (c->connect_timer) {
        ps__timer_free(c->connect_timer);
        c->connect_timer = NULL;
    }
}

static void *sio_on_open(ps__eio *e, void *user)
{
    ps__sio_server *ss = user;
    ps__sio_conn *c = ps__calloc(1, sizeof *c);
    c->srv = ss;
    c->eio = e;
    ps__list_init(&c->sockets);
    if (ss->connect_timeout_ms && !ss->engine_echo) {
        c->connect_timer = ps__timer_new(ss->eio.loop, connect_timeout, c);
        ps__timer_start(c->connect_timer, ss->connect_timeout_ms);
    }
    return c;
}

static void send_connect_error(ps__sio_conn *c, const char *nsp, const char *message)
{
    json_t *err = json_pack("{s:s}", "message", message);
    ps__buf out;
    ps__buf_init(&out);
    ps__sio_encode(&out, PS__SIO_CONNECT_ERROR, nsp, -1, err);
    ps__eio_send_packet(c->eio, out.base, out.len);
    c->srv->stats.packets_out++;
    ps__buf_free(&out);
    json_decref(err);
}

static void send_connect_reply(ps__sio_socket *s)
{
    json_t *ok = s->recovers ? json_pack("{s:s,s:s}", "sid", s->id, "pid", s->pid)
                             : json_pack("{s:s}", "sid", s->id);
    send_packet(s, PS__SIO_CONNECT, -1, ok);
    json_decref(ok);
}

/* A new socket for a CONNECT (`auth` borrowed, recovery keys removed). */
static void connect_fresh(ps__sio_conn *c, const char *nsp, json_t *auth)
{
    ps__sio_server *ss = c->srv;
    ps__sio_socket *s = ps__calloc(1, sizeof *s);
    s->srv = ss;
    s->conn = c;
    s->nsp = ps__strdup(nsp);
    s->refs = 1; /* the connection's */
    s->state = SOCK_CONNECTING;
    ps__list_init(&s->acks);
    ps__random_sid(s->id);
    /* With workers the id names its worker, as Engine.IO sids do: a client coming back
     * quotes it (pulsec_resume) so that its handshake reaches the worker holding its pid. */
    if (ss->eio.cfg.sid_worker)
        ps__id_set_worker(s->id, ss->eio.cfg.sid_worker - 1);
    if (ss->recovery.window_ms) {
        s->recovers = true;
        ps__random_hex_id(s->pid);
        ps__replay_init(&s->replay, ss->recovery.max_replay_bytes);
    }
    ps__list_insert_tail(&c->sockets, &s->link);
    ss->stats.sockets++;
    ss->stats.sockets_total++;
    ps__sio_socket_ref(s);
    int rc = ss->cbs->on_connect(s, auth);
    if (s->state == SOCK_CLOSED) {
        /* The connection ended during the hook. */
    } else if (rc != 0) {
        if (!s->deny)
            ps__sio_socket_deny(s, NULL, NULL);
        send_packet(s, PS__SIO_CONNECT_ERROR, -1, s->deny);
        s->recovers = false;
        s->pid[0] = '\0';
        socket_close(s, "connect refused");
    } else {
        if (s->recovers)
            pid_add(ss, s);
        send_connect_reply(s);
        s->state = SOCK_CONNECTED;
        flush_early(s);
        ps__eio_connected(c->eio);
        stop_connect_timer(c);
    }
    ps__sio_socket_unref(s);
}

/* Attaches a detached socket to connection c: what its client missed after `after`, then the
 * CONNECT reply with the same sid and pid. */
static int replay_record(void *user, uint64_t offset, bool binary, const char *data, size_t len)
{
    ps__sio_socket *s = user;
    eio_send(s->conn->eio, binary, data, len);
    if (!binary)
        s->srv->stats.packets_out++;
    return 0;
}

static void resume_socket(ps__sio_conn *c, ps__sio_socket *s, uint64_t after)
{
    ps__sio_server *ss = c->srv;
    ps__timer_free(s->window);
    s->window = NULL;
    ps__list_remove(&s->link);
    ss->stats.detached--;
    s->conn = c;
    s->state = SOCK_CONNECTED;
    s->lost_reason = NULL;
    ps__list_insert_tail(&c->sockets, &s->link);
    ps__replay_each(&s->replay, after, replay_record, s);
    send_connect_reply(s);
    s->settling = true;
    s->settle_ping_sent = false;
    ss->stats.resumed++;
    ps__eio_connected(c->eio);
    stop_connect_timer(c);
    if (ss->cbs->on_resume) {
        ps__sio_socket_ref(s);
        ss->cbs->on_resume(s);
        ps__sio_socket_unref(s);
    }
}

enum { RESUME_NO, RESUME_DONE, RESUME_WAITING };

/* Takes the recovery keys out of a CONNECT's auth object (the app sees only its own), into
 * *pid (NULL if none or not a string) and *offset (0 if none; false if present and invalid). */
static bool take_recovery_keys(json_t *auth, char pid[PS__HEX_ID_LEN + 1], uint64_t *offset)
{
    bool ok = true;
    pid[0] = '\0';
    *offset = 0;
    json_t *p = json_object_get(auth, "pid");
    if (json_is_string(p) && json_string_length(p) == PS__HEX_ID_LEN)
        memcpy(pid, json_string_value(p), PS__HEX_ID_LEN + 1);
    else if (p)
        ok = false;
    json_t *o = json_object_get(auth, "offset");
    if (o && !json_is_null(o) &&
        !(json_is_string(o) &&
          ps__replay_parse_offset(json_string_value(o), json_string_length(o), offset)))
        ok = false;
    json_object_del(auth, "pid");
    json_object_del(auth, "offset");
    return ok;
}

/*
 * A CONNECT with a pid: resume its socket, or start a takeover of it, or (RESUME_NO) leave the
 * CONNECT to make a fresh socket. Nothing but the pid's own socket on the same namespace is
 * ever restored; a wrong pid or namespace restores nothing and disturbs nothing.
 */
static int try_resume(ps__sio_conn *c, ps__sio_packet *p, const char *pid, uint64_t offset,
                      bool offset_ok, bool may_take_over)
{
    ps__sio_server *ss = c->srv;
    ps__sio_socket *s = pid[0] ? pid_find(ss, pid) : NULL;
    if (!s || !s->recovers || strcmp(s->nsp, p->nsp) != 0)
        return RESUME_NO;
    int rc = offset_ok ? ps__replay_check(&s->replay, offset) : PS_EINVAL;
    if (s->state == SOCK_DETACHED) {
        if (rc != 0) {
            /* Its client can never be given what it missed: the session ends now. */
            s->recovers = false;
            ps__timer_start(s->window, 0);
            return RESUME_NO;
        }
        resume_socket(c, s, offset);
        return RESUME_DONE;
    }
    if (s->state != SOCK_CONNECTED || rc != 0 || !may_take_over || s->waiter || c->takeover)
        return RESUME_NO;
    /* Attached elsewhere: either its client is back on a new connection and the old one is
     * dead without our knowing (no FIN came), or someone replays its pid. The old connection
     * decides: an answer within the probe keeps the session where it is. */
    takeover *t = ps__calloc(1, sizeof *t);
    t->target = s;
    t->packet = *p;
    json_incref(p->data);
    c->takeover = t;
    s->waiter = c;
    stop_connect_timer(c);
    uint32_t probe = ss->eio.cfg.ping_timeout_ms;
    ps__eio_probe(s->conn->eio, probe < TAKEOVER_PROBE_MS ? probe : TAKEOVER_PROBE_MS);
    return RESUME_WAITING;
}

static void takeover_free(ps__sio_conn *c)
{
    takeover *t = c->takeover;
    if (!t)
        return;
    if (t->target)
        t->target->waiter = NULL;
    ps__timer_free(t->settle);
    ps__sio_packet_clear(&t->packet);
    ps__free(t);
    c->takeover = NULL;
}

static void connect_packet(ps__sio_conn *c, ps__sio_packet *p, bool may_take_over);

/* The takeover's target detached, answered its probe, or ended: decide from the loop. */
static void takeover_settle(ps__timer *tm, void *data)
{
    ps__sio_conn *c = data;
    takeover *t = c->takeover;
    ps__sio_packet p = t->packet;
    t->packet.data = NULL;
    takeover_free(c);
    connect_packet(c, &p, false);
    ps__sio_packet_clear(&p);
}

static void takeover_wake(ps__sio_conn *c)
{
    takeover *t = c->takeover;
    if (!t->settle) {
        t->settle = ps__timer_new(c->srv->eio.loop, takeover_settle, c);
        ps__timer_start(t->settle, 0);
    }
}

static void connect_packet(ps__sio_conn *c, ps__sio_packet *p, bool may_take_over)
{
    ps__sio_server *ss = c->srv;
    if (find_socket(c, p->nsp)) {
        ps__sio_conn_close(c, PS__WS_POLICY, "namespace already joined");
        return;
    }
    if (!ss->cbs->has_namespace(ss, p->nsp)) {
        send_connect_error(c, p->nsp, "Invalid namespace");
        return;
    }
    json_t *auth;
    if (ss->recovery.window_ms && json_object_get(p->data, "pid")) {
        /* A copy loses the recovery keys: a takeover keeps the packet as it came. */
        auth = json_copy(p->data);
        char pid[PS__HEX_ID_LEN + 1];
        uint64_t offset;
        bool ok = take_recovery_keys(auth, pid, &offset);
        int rc = try_resume(c, p, pid, offset, ok, may_take_over);
        if (rc != RESUME_NO) {
            json_decref(auth);
            return;
        }
        ss->stats.resume_failed++;
    } else {
        auth = p->data ? json_incref(p->data) : json_object();
    }
    connect_fresh(c, p->nsp, auth);
    json_decref(auth);
}

static void on_connect_packet(ps__sio_conn *c, ps__sio_packet *p)
{
    if (c->takeover && strcmp(c->takeover->packet.nsp, p->nsp) == 0) {
        ps__sio_conn_close(c, PS__WS_POLICY, "namespace already joined");
        return;
    }
    connect_packet(c, p, true);
}

/* One complete packet (binary ones reassembled, their attachments as binary values). */
static void dispatch_packet(ps__sio_conn *c, ps__sio_packet *p)
{
    ps__sio_server *ss = c->srv;
    ps__sio_socket *s = NULL;
    switch (p->type) {
    case PS__SIO_CONNECT: on_connect_packet(c, p); break;
    case PS__SIO_DISCONNECT:
        if ((s = find_socket(c, p->nsp)))
            socket_close(s, "client namespace disconnect");
        break;
    case PS__SIO_EVENT:
    case PS__SIO_BINARY_EVENT: {
        if (!(s = find_socket(c, p->nsp))) {
            ps__sio_conn_close(c, PS__WS_POLICY, "namespace not joined");
            break;
        }
        json_t *name = json_array_get(p->data, 0);
        char numbuf[32];
        const char *ev = json_string_value(name);
        if (!ev) {
            snprintf(numbuf, sizeof numbuf, "%.17g", json_number_value(name));
            ev = numbuf;
        }
        ps__sio_socket_ref(s);
        ss->cbs->on_event(s, ev, p->data, p->id);
        ps__sio_socket_unref(s);
        break;
    }
    case PS__SIO_ACK:
    case PS__SIO_BINARY_ACK: {
        if (!(s = find_socket(c, p->nsp))) {
            ps__sio_conn_close(c, PS__WS_POLICY, "namespace not joined");
            break;
        }
        ps__list *pos;
        ps__list_foreach(pos, &s->acks)
        {
            pending_ack *a = PS__CONTAINER_OF(pos, pending_ack, link);
            if (a->id == p->id) {
                ack_complete(a, 0, p->data);
                break;
            }
        }
        break; /* an unknown ack id is ignored, as the reference does */
    }
    default: ps__sio_conn_close(c, PS__WS_PROTOCOL_ERROR, "parse error"); break;
    }
}

static void bin_reset(ps__sio_conn *c)
{
    if (!c->bin)
        return;
    ps__sio_packet_clear(&c->bin->packet);
    parts_free(c->bin->parts, c->bin->nparts);
    ps__free(c->bin);
    c->bin = NULL;
}

/* An attachment of the binary packet being reassembled. */
static void on_attachment(ps__sio_conn *c, const char *data, size_t len)
{
    reassembly *r = c->bin;
    if (!r) {
        ps__sio_conn_close(c, PS__WS_PROTOCOL_ERROR, "unexpected binary message");
        return;
    }
    ps__buf *part = &r->parts[r->nparts++];
    ps__buf_init(part);
    ps__buf_append(part, data, len);
    if (r->nparts < r->packet.attachments)
        return;
    json_t *data_json = reconstruct(r->packet.data, r->parts, r->nparts);
    if (!data_json) {
        bin_reset(c);
        ps__sio_conn_close(c, PS__WS_PROTOCOL_ERROR, "invalid placeholder");
        return;
    }
    ps__sio_packet p = r->packet;
    p.data = data_json;
    bin_reset(c);
    dispatch_packet(c, &p);
    ps__sio_packet_clear(&p);
}

static void engine_echo(ps__eio *e, bool binary, const char *data, size_t len)
{
    if (binary) {
        ps__eio_send_binary(e, data, len);
        return;
    }
    ps__buf out;
    ps__buf_init(&out);
    ps__buf_appendc(&out, PS__EIO_MESSAGE);
    ps__buf_append(&out, data, len);
    ps__eio_send_packet(e, out.base, out.len);
    ps__buf_free(&out);
}

/*
 * The hot path: an EVENT whose data is scanned (every byte checked as ps__sio_decode would)
 * and handed up without a tree. Anything unusual (a long or numeric name, a namespace not
 * joined, a layer above that declines) returns false before any effect, and the packet takes
 * the ordinary path, which decides it as it always did.
 */
static bool try_event_raw(ps__sio_conn *c, const char *s, size_t len)
{
    ps__sio_packet p;
    size_t at;
    const char *err = NULL;
    if (len < 2 || s[0] != '0' + PS__SIO_EVENT || decode_head(s, len, &p, &at, &err) != 0 ||
        at >= len)
        return false;
    ps__json_index ix = {.sub_of = 1};
    if (ps__json_scan(s + at, len - at, &ix) != 0 || ix.root != '[' || ix.ntop == 0 ||
        ix.ntop > PS__JSON_INDEX_TOP)
        return false;
    ps__json_span name = ix.top[0];
    char ev[66];
    if (name.p[0] != '"' || name.len - 2 >= sizeof ev)
        return false;
    size_t n = ps__json_unescape(name.p + 1, name.len - 2, ev);
    ev[n] = '\0';
    if (strlen(ev) != n || ps__sio_reserved_event(ev))
        return false;
    ps__sio_socket *sock = find_socket(c, p.nsp);
    if (!sock)
        return false;
    ps__sio_socket_ref(sock);
    bool done = c->srv->cbs->on_event_raw(sock, ev, &ix, p.id);
    ps__sio_socket_unref(sock);
    return done;
}

static void sio_on_message(ps__eio *e, bool binary, const char *data, size_t len)
{
    ps__sio_conn *c = ps__eio_up(e);
    ps__sio_server *ss = c->srv;
    if (ss->engine_echo) {
        engine_echo(e, binary, data, len);
        return;
    }
    if (binary) {
        on_attachment(c, data, len);
        return;
    }
    ss->stats.packets_in++;
    if (c->bin) {
        /* The reference decoder holds one reconstruction at a time: no interleaving. */
        bin_reset(c);
        ps__sio_conn_close(c, PS__WS_PROTOCOL_ERROR, "attachments expected");
        return;
    }
    if (ss->cbs->on_event_raw && try_event_raw(c, data, len))
        return;
    ps__sio_packet p;
    const char *err = NULL;
    if (ps__sio_decode(data, len, &p, &err) != 0) {
        PS__DEBUG("socket.io packet from %s refused: %s", ps__eio_get_handshake(e)->address, err);
        ps__sio_conn_close(c, PS__WS_PROTOCOL_ERROR, "parse error");
        return;
    }
    if (p.type == PS__SIO_BINARY_EVENT || p.type == PS__SIO_BINARY_ACK) {
        c->bin = ps__calloc(1, sizeof *c->bin);
        c->bin->packet = p;
        return;
    }
    dispatch_packet(c, &p);
    ps__sio_packet_clear(&p);
}

/*
 * Pings and pongs: a pong proves the client read everything sent before its ping, so each
 * socket forgets what it kept for a replay up to there, a resumed socket is settled by the
 * pong of a ping sent after the resume, and a takeover waiting on a socket here learns that
 * this connection is alive.
 */
static void sio_on_heartbeat(ps__eio *e, bool pong)
{
    ps__sio_conn *c = ps__eio_up(e);
    if (!c)
        return;
    ps__list *pos, *tmp;
    ps__list_foreach_safe(pos, tmp, &c->sockets)
    {
        ps__sio_socket *s = PS__CONTAINER_OF(pos, ps__sio_socket, link);
        if (!s->recovers)
            continue;
        if (!pong) {
            s->ping_marked = true;
            s->ping_mark = ps__replay_last_offset(&s->replay);
            if (s->settling)
                s->settle_ping_sent = true;
            continue;
        }
        if (s->ping_marked) {
            ps__replay_confirm(&s->replay, s->ping_mark);
            s->ping_marked = false;
            if (s->replay.held)
                ps__eio_ping_within(e, REPLAY_PING_MS);
        }
        if (s->waiter)
            takeover_wake(s->waiter);
        if (s->settling && s->settle_ping_sent) {
            s->settling = false;
            if (c->srv->cbs->on_resume_settled) {
                ps__sio_socket_ref(s);
                c->srv->cbs->on_resume_settled(s);
                ps__sio_socket_unref(s);
            }
        }
    }
}

static void sio_on_close(ps__eio *e, const char *reason)
{
    ps__sio_conn *c = ps__eio_up(e);
    if (!c)
        return;
    takeover_free(c);
    bool left = ps__eio_client_left(e);
    while (!ps__list_empty(&c->sockets))
        socket_lost(PS__CONTAINER_OF(c->sockets.next, ps__sio_socket, link), reason, left);
    ps__timer_free(c->connect_timer);
    bin_reset(c);
    if (c->srv->cbs->on_conn_close)
        c->srv->cbs->on_conn_close(c);
    ps__free(c);
}

static const ps__eio_cbs sio_eio_cbs = {sio_on_open, sio_on_message, sio_on_close,
                                        sio_on_heartbeat};

void ps__sio_server_init(ps__sio_server *ss, uv_loop_t *loop, const ps__eio_config *cfg,
                         uint32_t connect_timeout_ms, const ps__sio_cbs *cbs, void *user)
{
    memset(ss, 0, sizeof *ss);
    ps__eio_server_init(&ss->eio, loop, cfg, &sio_eio_cbs, ss);
    ss->cbs = cbs;
    ss->user = user;
    ss->connect_timeout_ms = connect_timeout_ms;
    ps__list_init(&ss->detached);
}

void ps__sio_server_free(ps__sio_server *ss)
{
    ps__free(ss->pids);
    ss->pids = NULL;
    ss->npid_buckets = 0;
    ps__eio_server_free(&ss->eio);
}

void ps__sio_server_shutdown(ps__sio_server *ss)
{
    ss->shutting_down = true;
    while (!ps__list_empty(&ss->detached))
        socket_close(PS__CONTAINER_OF(ss->detached.next, ps__sio_socket, link), "server shutdown");
    ps__eio_server_shutdown(&ss->eio);
}
