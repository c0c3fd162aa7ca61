/*
 * socketio: the Socket.IO v5 codec and the namespace sockets of each Engine.IO session.
 *
 * A ps__sio_conn lives exactly as long as its Engine.IO session; its sockets are freed when they
 * disconnect and nothing holds a reference (upper layers hold one across app callbacks, so an
 * app may disconnect a socket from inside its own event handler). Every emit-with-ack completes
 * exactly once: the ack arrives, its timer fires, or the socket closes, whichever is first.
 */
#include "socketio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct reassembly {
    ps__sio_packet packet; /* the text part */
    ps__buf parts[PS__SIO_MAX_ATTACHMENTS];
    int nparts; /* of packet.attachments */
} reassembly;

struct ps__sio_conn {
    ps__sio_server *srv;
    ps__eio *eio;
    ps__list sockets;
    ps__timer *connect_timer;
    /* A binary packet being reassembled (allocated only then: idle connections are many). */
    struct reassembly *bin;
};

enum { SOCK_CONNECTING, SOCK_CONNECTED, SOCK_CLOSED };

struct ps__sio_socket {
    ps__sio_conn *conn;
    ps__list link; /* in conn->sockets while not closed */
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
    ps__free(s->nsp);
    ps__free(s);
}

static int eio_send(ps__eio *e, bool binary, const char *data, size_t len)
{
    return binary ? ps__eio_send_binary(e, data, len) : ps__eio_send_packet(e, data, len);
}

/* Sends (or, before the CONNECT reply, keeps) one Engine.IO message. */
static int send_message(ps__sio_socket *s, bool binary, const char *data, size_t len)
{
    if (s->state == SOCK_CONNECTING) {
        uint8_t flag = binary;
        ps__buf_append(&s->early, &flag, 1);
        ps__buf_append(&s->early, &len, sizeof len);
        ps__buf_append(&s->early, data, len);
        return 0;
    }
    return eio_send(s->conn->eio, binary, data, len);
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
    /* The CONNECT reply must precede everything else in this namespace: it is never kept. */
    int rc = type == PS__SIO_CONNECT || type == PS__SIO_CONNECT_ERROR
                 ? ps__eio_send_packet(s->conn->eio, out.base, out.len)
                 : send_message(s, false, out.base, out.len);
    for (int i = 0; i < nparts && rc == 0; i++)
        rc = send_message(s, true, parts[i].base ? parts[i].base : "", parts[i].len);
    if (rc == 0)
        s->conn->srv->stats.packets_out++;
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
 * socket), and drops the connection's reference. */
static void socket_close(ps__sio_socket *s, const char *reason)
{
    if (s->state == SOCK_CLOSED)
        return;
    bool was_connected = s->state == SOCK_CONNECTED;
    s->state = SOCK_CLOSED;
    ps__list_remove(&s->link);
    s->conn->srv->stats.sockets--;
    ps__sio_socket_ref(s);
    while (!ps__list_empty(&s->acks))
        ack_complete(PS__CONTAINER_OF(s->acks.next, pending_ack, link), PS_ECLOSED, NULL);
    if (was_connected && s->conn->srv->cbs->on_disconnect)
        s->conn->srv->cbs->on_disconnect(s, reason);
    ps__sio_socket_unref(s);
    ps__sio_socket_unref(s); /* the connection's reference */
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
    if (s->state != SOCK_CONNECTING && s->nsp[0] == '/' && s->nsp[1] == '\0' &&
        strcmp(event, "message") == 0) {
        uv_buf_t parts[3] = {uv_buf_init((char *)message_head, sizeof message_head - 1),
                             uv_buf_init((char *)args, (unsigned)len), uv_buf_init("]", 1)};
        int rc = ps__eio_send_packetv(s->conn->eio, parts, 3);
        if (rc == 0)
            s->conn->srv->stats.packets_out++;
        return rc == 0 ? 0 : PS_ECLOSED;
    }
    char stack[128];
    ps__buf head = {stack, 0, sizeof stack};
    /* An escape takes at most six bytes per byte of the name. Early messages (kept until the
     * CONNECT reply) are stored whole, and a long name is rare: the heap for both. */
    size_t need = 8 + strlen(s->nsp) + 6 * strlen(event);
    if (need > sizeof stack || s->state == SOCK_CONNECTING)
        ps__buf_init(&head);
    ps__sio_encode(&head, PS__SIO_EVENT, s->nsp, -1, NULL);
    ps__buf_appendc(&head, '[');
    ps__json_escape(&head, event);
    ps__buf_appendc(&head, ',');
    int rc;
    if (s->state == SOCK_CONNECTING) {
        ps__buf_append(&head, args, len);
        ps__buf_appendc(&head, ']');
        rc = send_message(s, false, head.base, head.len);
    } else {
        uv_buf_t parts[3] = {uv_buf_init(head.base, (unsigned)head.len),
                             uv_buf_init((char *)args, (unsigned)len), uv_buf_init("]", 1)};
        rc = ps__eio_send_packetv(s->conn->eio, parts, 3);
    }
    if (rc == 0)
        s->conn->srv->stats.packets_out++;
    if (head.base != stack)
        ps__buf_free(&head);
    return rc == 0 ? 0 : PS_ECLOSED;
}

int ps__sio_emit_ack(ps__sio_socket *s, const char *event, json_t *args, uint32_t timeout_ms,
                     ps__sio_ack_cb cb, void *user)
{
    if (s->state == SOCK_CLOSED || ps__eio_closed(s->conn->eio))
        return PS_ECLOSED;
    json_t *arr = cb ? event_data(event, args) : NULL;
    if (!arr)
        return PS_EINVAL;
    /* A client that never acknowledges would otherwise make every emit cost memory for good. */
    uint32_t max = s->conn->srv->max_acks;
    if (max && s->nacks >= max) {
        json_decref(arr);
        return PS_ELIMIT;
    }
    int64_t id = s->next_ack_id;
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
        a->timer = ps__timer_new(ps__eio_get_server(s->conn->eio)->loop, ack_on_timeout, a);
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
    send_packet(s, PS__SIO_DISCONNECT, -1, NULL);
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

static void on_connect_packet(ps__sio_conn *c, ps__sio_packet *p)
{
    ps__sio_server *ss = c->srv;
    if (find_socket(c, p->nsp)) {
        ps__sio_conn_close(c, PS__WS_POLICY, "namespace already joined");
        return;
    }
    if (!ss->cbs->has_namespace(ss, p->nsp)) {
        json_t *err = json_pack("{s:s}", "message", "Invalid namespace");
        ps__buf out;
        ps__buf_init(&out);
        ps__sio_encode(&out, PS__SIO_CONNECT_ERROR, p->nsp, -1, err);
        ps__eio_send_packet(c->eio, out.base, out.len);
        ss->stats.packets_out++;
        ps__buf_free(&out);
        json_decref(err);
        return;
    }
    ps__sio_socket *s = ps__calloc(1, sizeof *s);
    s->conn = c;
    s->nsp = ps__strdup(p->nsp);
    s->refs = 1; /* the connection's */
    s->state = SOCK_CONNECTING;
    ps__list_init(&s->acks);
    ps__random_sid(s->id);
    ps__list_insert_tail(&c->sockets, &s->link);
    ss->stats.sockets++;
    ss->stats.sockets_total++;
    json_t *auth = p->data ? json_incref(p->data) : json_object();
    ps__sio_socket_ref(s);
    int rc = ss->cbs->on_connect(s, auth);
    json_decref(auth);
    if (s->state == SOCK_CLOSED) {
        /* The connection ended during the hook. */
    } else if (rc != 0) {
        if (!s->deny)
            ps__sio_socket_deny(s, NULL, NULL);
        send_packet(s, PS__SIO_CONNECT_ERROR, -1, s->deny);
        socket_close(s, "connect refused");
    } else {
        json_t *ok = json_pack("{s:s}", "sid", s->id);
        send_packet(s, PS__SIO_CONNECT, -1, ok);
        json_decref(ok);
        s->state = SOCK_CONNECTED;
        flush_early(s);
        ps__eio_connected(c->eio);
        if (c->connect_timer) {
            ps__timer_free(c->connect_timer);
            c->connect_timer = NULL;
        }
    }
    ps__sio_socket_unref(s);
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

static void sio_on_close(ps__eio *e, const char *reason)
{
    ps__sio_conn *c = ps__eio_up(e);
    if (!c)
        return;
    while (!ps__list_empty(&c->sockets))
        socket_close(PS__CONTAINER_OF(c->sockets.next, ps__sio_socket, link), reason);
    ps__timer_free(c->connect_timer);
    bin_reset(c);
    if (c->srv->cbs->on_conn_close)
        c->srv->cbs->on_conn_close(c);
    ps__free(c);
}

static const ps__eio_cbs sio_eio_cbs = {sio_on_open, sio_on_message, sio_on_close};

void ps__sio_server_init(ps__sio_server *ss, uv_loop_t *loop, const ps__eio_config *cfg,
                         uint32_t connect_timeout_ms, const ps__sio_cbs *cbs, void *user)
{
    memset(ss, 0, sizeof *ss);
    ps__eio_server_init(&ss->eio, loop, cfg, &sio_eio_cbs, ss);
    ss->cbs = cbs;
    ss->user = user;
    ss->connect_timeout_ms = connect_timeout_ms;
}
