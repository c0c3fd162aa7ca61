/*
 * channel: channels, listeners, requests and replies.
 *
 * Memory: a channel and its listeners stay allocated until their view is freed, so that the app
 * may hold their pointers (ps_channel_closed, ps_off) for the view's whole life; a closed
 * channel only leaves its session's lookup list. An incoming request is a reply_state shared by
 * the handler's ps_reply and every kept handle; closing the channel detaches reply states from
 * it, which turns late answers into no-ops. An outgoing request completes exactly once through
 * request_complete(): response, timer, or channel close, whichever comes first.
 *
 * Recovery (DESIGN §6, exactly once across a blip). Our requests keep their event and payload
 * so that a resume can send again those still unanswered (the client answers a repeat from
 * its memory). The client sends again its own unanswered requests right after the resume,
 * before it answers a ping sent after it: from the resume until that pong (`dedup`, settled by
 * the session layer), each channel has a request-id memory (reqmem), seeded with the requests
 * still running, so that a repeat is answered with the first answer or, while that one still
 * runs, not at all. Outside that window no repeat can come, so the memory costs nothing.
 */
#include "channel.h"
#include "reqmem.h"

#include <stdio.h>

struct ps_listener {
    ps__list link; /* in ch->listeners until the channel is freed */
    ps_channel *ch;
    char *event;
    ps_handler fn;      /* one of fn and raw */
    ps_raw_handler raw; /* gets the payload's JSON text */
    void *user;
    bool removed;
};

/*
 * A request being answered. It lives on the dispatcher's stack (no allocation per request)
 * until a handler keeps the reply: then it moves to the heap, with a copy of the id.
 */
typedef struct reply_state {
    ps__list link;    /* in ch->replies while the channel is open */
    ps_channel *ch;   /* NULL once the channel closed */
    char *request_id; /* borrowed from the message on the stack, owned on the heap */
    int refs;         /* the dispatch's handle and every kept handle */
    bool answered;
    bool on_heap;
    uint64_t started_ns; /* arrival, when the layer measures requests (0: not measured) */
} reply_state;

struct ps_reply {
    reply_state *st;
    bool kept;
};

typedef struct pending_req {
    ps__list link;
    ps_channel *ch;
    ps__timer *timer;
    ps_response_cb cb;
    void *user;
    uint64_t sent_ns; /* when the layer measures requests */
    char *event;      /* with recovery: to send it again after a resume */
    json_t *payload;  /* with recovery; NULL = null */
    char id[PS__HEX_ID_LEN + 1];
} pending_req;

/* Bounds of a channel's request-id memory while a resume settles (see the file comment). */
#define REQMEM_MAX_ENTRIES 4096
#define REQMEM_MAX_BYTES (1024 * 1024)

struct ps_channel {
    ps__channels *layer;
    ps_view *view;
    ps_session *session;
    ps__list view_link; /* in the view's channels until freed */
    ps__list open_link; /* in the session's open channels until closed */
    ps__list listeners;
    ps__list pending; /* our requests awaiting the client */
    ps__list replies; /* the client's requests awaiting us */
    size_t npending;
    size_t nreplies;
    void *ext;       /* the topic layer's memberships, allocated by the first ps_join */
    ps__reqmem *mem; /* while a resume settles, after the first request (see the top) */
    bool closed;
    char id[PS__HEX_ID_LEN + 1];
};

typedef struct view_channels {
    ps__list channels;
} view_channels;

typedef struct sess_channels {
    ps__list open;
    size_t nopen;
    bool dedup; /* resumed, not settled: requests may come again */
} sess_channels;

/* ---- envelope -------------------------------------------------------------------------- */

/* An optional field: absent or null is NULL; present, it must be a valid client string. */
static const char *opt_string(json_t *msg, const char *key, bool *bad)
{
    json_t *v = json_object_get(msg, key);
    if (!v || json_is_null(v))
        return NULL;
    const char *s = ps__client_string(msg, key);
    if (!s)
        *bad = true;
    return s;
}

int ps__envelope_decode(json_t *msg, ps__envelope *out, const char **err)
{
    bool bad = false;
    memset(out, 0, sizeof *out);
    if (!json_is_object(msg)) {
        *err = "message must be an object";
        return -1;
    }
    out->channel = opt_string(msg, "channel", &bad);
    if (!out->channel) {
        *err = "channel must be a non-empty string";
        return -1;
    }
    out->event = opt_string(msg, "event", &bad);
    out->request_id = opt_string(msg, "requestId", &bad);
    out->response_to = opt_string(msg, "responseTo", &bad);
    if (bad) {
        *err = "event, requestId and responseTo must be non-empty strings";
        return -1;
    }
    json_t *e = json_object_get(msg, "error");
    if (e && !json_is_null(e)) {
        if (!json_is_string(e)) {
            *err = "error must be a string";
            return -1;
        }
        out->error = json_string_value(e);
    }
    out->payload = json_object_get(msg, "payload");
    if (!out->payload)
        out->payload = json_null();
    if (out->response_to ? out->event != NULL : out->event == NULL) {
        *err = "a message needs exactly one of event and responseTo";
        return -1;
    }
    return 0;
}

/*
 * A message's payload as the handlers want it: the tree for ps_on's, the JSON text for
 * ps_on_raw's. Whichever the message did not arrive as is made on first use, at most once.
 */
typedef struct msg_payload {
    json_t *tree;     /* borrowed, or made here (own_tree) */
    const char *text; /* borrowed, or text_buf's */
    size_t len;
    bool own_tree;
    ps__buf text_buf;
} msg_payload;

static json_t *payload_tree(msg_payload *pl)
{
    if (!pl->tree) {
        /* The text was scanned already: parsing it cannot fail. */
        pl->tree = pl->len ? ps__json_parse(pl->text, pl->len) : NULL;
        if (!pl->tree)
            pl->tree = json_null();
        pl->own_tree = true;
    }
    return pl->tree;
}

static const char *payload_text(msg_payload *pl, size_t *len)
{
    if (!pl->text) {
        ps__buf_init(&pl->text_buf);
        ps__json_append(&pl->text_buf, pl->tree);
        pl->text = ps__buf_cstr(&pl->text_buf);
        pl->len = pl->text_buf.len;
    }
    *len = pl->len;
    return pl->text;
}

static void payload_done(msg_payload *pl)
{
    if (pl->own_tree)
        json_decref(pl->tree);
    ps__buf_free(&pl->text_buf);
}

/* ---- sending --------------------------------------------------------------------------- */

static json_t *envelope(const char *channel)
{
    return json_pack("{s:s,s:s}", "type", "channel_message", "channel", channel);
}

static int send_envelope(ps_session *s, json_t *env)
{
    int rc = ps__session_send_message(s, env);
    json_decref(env);
    return rc;
}

/*
 * The hot path writes the envelope's text directly: building a json_t per message only to
 * serialise it at once cost more than the rest of the channel layer (BENCHMARKS.md). Payloads
 * holding binary values still go through json_t, which turns them into attachments.
 */
static ps__channels *layer_of(ps_session *s)
{
    return PS__CONTAINER_OF(ps__views_of_session(s), ps__channels, views);
}

/* The envelope is written into the layer's one buffer, reused message after message: sending
 * never calls back into this layer, so one buffer serves every session of the server. */
static ps__buf *text_begin(ps_session *s, const char *channel)
{
    ps__buf *b = &layer_of(s)->out;
    ps__buf_reset(b);
    ps__buf_reserve(b, 256);
    PS__BUF_PUT_LIT(b, "{\"type\":\"channel_message\",\"channel\":");
    ps__json_escape(b, channel);
    return b;
}

/* A literal field name ("," and quotes included), appended without strlen. */
#define PUT_KEY(b, lit)                                                                            \
    do {                                                                                           \
        ps__buf_reserve((b), sizeof(lit));                                                         \
        PS__BUF_PUT_LIT((b), lit);                                                                 \
    } while (0)

static int text_send(ps_session *s, ps__buf *b)
{
    ps__buf_appendc(b, '}');
    int rc = ps__session_send_message_text(s, b->base, b->len);
    /* One huge message must not pin its allocation for the server's life. */
    if (b->cap > 64 * 1024)
        ps__buf_free(b);
    return rc;
}

/* Appends a payload given as a tree (NULL = null) or, when text is set, as JSON text. */
static void append_payload(ps__buf *b, json_t *payload, const char *text, size_t len)
{
    if (text)
        ps__buf_append(b, text, len);
    else if (payload)
        ps__json_append(b, payload);
    else
        ps__buf_appends(b, "null");
}

static int send_event(ps_channel *ch, const char *event, json_t *payload, const char *text,
                      size_t len, const char *request_id)
{
    if (!text && payload && ps__json_has_binary(payload)) {
        json_t *env = envelope(ch->id);
        json_object_set_new(env, "event", json_string(event));
        json_object_set(env, "payload", payload);
        if (request_id)
            json_object_set_new(env, "requestId", json_string(request_id));
        return send_envelope(ch->session, env);
    }
    ps__buf *b = text_begin(ch->session, ch->id);
    PUT_KEY(b, ",\"event\":");
    ps__json_escape(b, event);
    PUT_KEY(b, ",\"payload\":");
    append_payload(b, payload, text, len);
    if (request_id) {
        PUT_KEY(b, ",\"requestId\":");
        ps__json_escape(b, request_id);
    }
    return text_send(ch->session, b);
}

static int send_response(ps_session *s, const char *channel, const char *request_id,
                         json_t *payload, const char *text, size_t len, const char *error)
{
    if (!error && !text && payload && ps__json_has_binary(payload)) {
        json_t *env = envelope(channel);
        json_object_set_new(env, "responseTo", json_string(request_id));
        json_object_set(env, "payload", payload);
        return send_envelope(s, env);
    }
    ps__buf *b = text_begin(s, channel);
    PUT_KEY(b, ",\"responseTo\":");
    ps__json_escape(b, request_id);
    if (error) {
        PUT_KEY(b, ",\"error\":");
        /* A WebSocket text frame must be UTF-8, or the client drops the whole connection. */
        ps__json_escape(b, ps__utf8_valid((const uint8_t *)error, strlen(error)) ? error : "error");
    } else {
        PUT_KEY(b, ",\"payload\":");
        append_payload(b, payload, text, len);
    }
    return text_send(s, b);
}

/* ---- replies (the client's requests) --------------------------------------------------- */

static void reply_state_unref(reply_state *st)
{
    if (--st->refs > 0)
        return;
    if (st->ch)
        st->ch->nreplies--;
    ps__list_remove(&st->link);
    if (st->on_heap) {
        ps__free(st->request_id);
        ps__free(st);
    }
}

/* While a resume settles: keeps the answer to `rid` for a repeat, as "e" + error text or
 * "p" + the payload's JSON (a tree, or text). */
static void remember(ps_channel *ch, const char *rid, json_t *payload, const char *text, size_t len,
                     const char *error)
{
    if (!ch || !ch->mem)
        return;
    ps__buf b;
    ps__buf_init(&b);
    if (error) {
        ps__buf_appendc(&b, 'e');
        ps__buf_appends(&b, error);
    } else {
        ps__buf_appendc(&b, 'p');
        append_payload(&b, payload, text, len);
    }
    ps__reqmem_answer(ch->mem, rid, b.base, b.len);
    ps__buf_free(&b);
}

/* Sends a response to the client's request `rid` on `ch` (known, open or not), remembering
 * it while a resume settles. */
static int answer(ps_session *s, ps_channel *ch, const char *channel, const char *rid,
                  json_t *payload, const char *text, size_t len, const char *error)
{
    remember(ch, rid, payload, text, len, error);
    return send_response(s, channel, rid, payload, text, len, error);
}

/* A repeat of an answered request: the same answer again. */
static void answer_again(ps_session *s, const char *channel, const char *rid, const char *kept,
                         size_t len)
{
    if (!kept || len == 0)
        return; /* too large to keep: the first answer went, a second never does */
    if (kept[0] == 'e') {
        char *error = ps__strndup(kept + 1, len - 1);
        send_response(s, channel, rid, NULL, NULL, 0, error);
        ps__free(error);
        return;
    }
    json_t *payload = ps__json_parse(kept + 1, len - 1);
    send_response(s, channel, rid, payload, NULL, 0, NULL);
    json_decref(payload);
}

static int reply_answer(reply_state *st, json_t *payload, const char *text, size_t len,
                        const char *error)
{
    if (!st->ch)
        return PS_ECLOSED;
    if (st->answered)
        return PS_EALREADY;
    st->answered = true;
    ps__histogram *h = st->ch->layer->request_seconds;
    if (h && st->started_ns)
        ps__histogram_observe(h, ps__now_ns() - st->started_ns);
    return answer(st->ch->session, st->ch, st->ch->id, st->request_id, payload, text, len, error);
}

ps_reply *ps_reply_keep(ps_reply *reply)
{
    reply_state *st = reply->st;
    if (!st->on_heap) {
        /* The first keep moves the state off the dispatcher's stack. `reply` is then the
         * dispatch's own handle, shared by every listener, so they all follow it. */
        reply_state *heap = ps__malloc(sizeof *heap);
        *heap = *st;
        heap->on_heap = true;
        heap->request_id = ps__strdup(st->request_id);
        ps__list_init(&heap->link);
        if (st->ch) {
            ps__list_insert_tail(&st->link, &heap->link); /* just before st: st's place */
            ps__list_remove(&st->link);
        }
        st->refs = 0; /* the dispatcher's reference moved with it */
        reply->st = st = heap;
    }
    ps_reply *kept = ps__malloc(sizeof *kept);
    kept->st = st;
    kept->kept = true;
    st->refs++;
    return kept;
}

static int reply_finish(ps_reply *reply, json_t *payload, const char *text, size_t len,
                        const char *error)
{
    int rc = reply_answer(reply->st, payload, text, len, error);
    if (reply->kept) {
        reply_state_unref(reply->st);
        ps__free(reply);
    }
    return rc;
}

int ps_reply_ok(ps_reply *reply, json_t *payload)
{
    return reply_finish(reply, payload, NULL, 0, NULL);
}

/* Whether json must be checked: not when it is the payload being dispatched, which was. */
static bool needs_check(ps_channel *ch, const char *json, size_t len)
{
    return !ch || json != ch->layer->checked.p || len != ch->layer->checked.len;
}

int ps_reply_raw(ps_reply *reply, const char *json, size_t len)
{
    if (!reply || !json ||
        (needs_check(reply->st->ch, json, len) && ps__json_scan(json, len, NULL) != 0))
        return PS_EINVAL;
    return reply_finish(reply, NULL, json, len, NULL);
}

int ps_reply_error(ps_reply *reply, const char *error)
{
    return reply_finish(reply, NULL, NULL, 0, error ? error : "error");
}

/* ---- requests (ours) ------------------------------------------------------------------- */

static void request_complete(pending_req *pr, int status, json_t *payload, const char *error)
{
    ps_channel *ch = pr->ch;
    ps__list_remove(&pr->link);
    ch->npending--;
    ps__timer_free(pr->timer);
    int outcome = status == PS_OK          ? PS__REQ_OK
                  : status == PS_EREMOTE   ? PS__REQ_ERROR
                  : status == PS_ETIMEDOUT ? PS__REQ_TIMEOUT
                  : status == PS_ECANCELED ? PS__REQ_CANCELLED
                                           : PS__REQ_CLOSED;
    ch->layer->server_requests[outcome]++;
    if (pr->sent_ns && (outcome == PS__REQ_OK || outcome == PS__REQ_ERROR))
        ps__histogram_observe(ch->layer->server_request_seconds, ps__now_ns() - pr->sent_ns);
    ps__view_ref(ch->view);
    pr->cb(ch, status, payload, error, pr->user);
    ps__view_unref(ch->view);
    ps__free(pr->event);
    json_decref(pr->payload);
    ps__free(pr);
}

static void request_on_timeout(ps__timer *t, void *data)
{
    request_complete(data, PS_ETIMEDOUT, NULL, NULL);
}

int ps_request(ps_channel *ch, const char *event, json_t *payload, uint32_t timeout_ms,
               ps_response_cb cb, void *user)
{
    if (!ch)
        return PS_EINVAL;
    if (ch->closed || ps__view_closing(ch->view) || ps__session_closed(ch->session))
        return PS_ECLOSED;
    if (!event || !*event || !cb || !ps__utf8_valid((const uint8_t *)event, strlen(event)))
        return PS_EINVAL;
    if (ch->layer->max_pending && ch->npending >= ch->layer->max_pending)
        return PS_ELIMIT;
    pending_req *pr = ps__calloc(1, sizeof *pr);
    pr->ch = ch;
    pr->cb = cb;
    pr->user = user;
    if (ch->layer->server_request_seconds)
        pr->sent_ns = ps__now_ns();
    ps__random_hex_id(pr->id);
    if (ps__session_recovers(ch->session)) {
        pr->event = ps__strdup(event);
        pr->payload = payload ? json_incref(payload) : NULL;
    }
    ps__list_insert_tail(&ch->pending, &pr->link);
    ch->npending++;
    if (timeout_ms) {
        pr->timer = ps__timer_new(ps__session_loop(ch->session), request_on_timeout, pr);
        ps__timer_start(pr->timer, timeout_ms);
    }
    send_event(ch, event, payload, NULL, 0, pr->id);
    return 0;
}

int ps_request_cancel(ps_channel *ch, ps_response_cb cb, void *user)
{
    if (!ch || !cb)
        return PS_EINVAL;
    ps__list *pos;
    ps__list_foreach(pos, &ch->pending)
    {
        pending_req *pr = PS__CONTAINER_OF(pos, pending_req, link);
        if (pr->cb == cb && pr->user == user) {
            request_complete(pr, PS_ECANCELED, NULL, NULL);
            return 0;
        }
    }
    return PS_ENOTFOUND;
}

/* ---- channels -------------------------------------------------------------------------- */

static void channel_close(ps_channel *ch, bool tell_client)
{
    if (ch->closed)
        return;
    ch->closed = true;
    ps__reqmem_free(ch->mem);
    ch->mem = NULL;
    ps__list_remove(&ch->open_link);
    ((sess_channels *)ps__views_session_data(ch->session))->nopen--;
    ch->layer->nchannels--;
    ps__view_ref(ch->view);
    while (!ps__list_empty(&ch->replies)) {
        reply_state *st = PS__CONTAINER_OF(ch->replies.next, reply_state, link);
        st->ch = NULL;
        ps__list_remove(&st->link);
        ch->nreplies--;
    }
    ps__list *pos;
    ps__list_foreach(pos, &ch->listeners)
    {
        PS__CONTAINER_OF(pos, ps_listener, link)->removed = true;
    }
    if (ch->ext && ch->layer->on_channel_close)
        ch->layer->on_channel_close(ch, ch->layer->ext_user);
    if (tell_client)
        send_event(ch, "__close__", NULL, NULL, 0, NULL);
    while (!ps__list_empty(&ch->pending))
        request_complete(PS__CONTAINER_OF(ch->pending.next, pending_req, link), PS_ECLOSED, NULL,
                         NULL);
    ps__view_unref(ch->view);
}

ps_channel *ps_channel_open(ps_view *view)
{
    if (ps__view_closing(view))
        return NULL;
    ps__channels *cs = PS__CONTAINER_OF(ps__view_layer(view), ps__channels, views);
    ps_session *s = ps_view_session(view);
    view_channels *vc = ps__view_ext_data(view);
    if (!vc) {
        vc = ps__calloc(1, sizeof *vc);
        ps__list_init(&vc->channels);
        ps__view_set_ext_data(view, vc);
    }
    sess_channels *sc = ps__views_session_data(s);
    if (!sc) {
        sc = ps__calloc(1, sizeof *sc);
        ps__list_init(&sc->open);
        ps__views_set_session_data(s, sc);
    }
    if (cs->max_channels && sc->nopen >= cs->max_channels)
        return NULL;
    ps_channel *ch = ps__calloc(1, sizeof *ch);
    ch->layer = cs;
    ch->view = view;
    ch->session = s;
    ps__list_init(&ch->listeners);
    ps__list_init(&ch->pending);
    ps__list_init(&ch->replies);
    ps__random_hex_id(ch->id);
    ps__list_insert_tail(&vc->channels, &ch->view_link);
    ps__list_insert_tail(&sc->open, &ch->open_link);
    sc->nopen++;
    cs->nchannels++;
    return ch;
}

const char *ps_channel_id(const ps_channel *ch)
{
    return ch->id;
}

bool ps_channel_closed(const ps_channel *ch)
{
    return ch->closed;
}

ps_view *ps_channel_view(const ps_channel *ch)
{
    return ch->view;
}

int ps_channel_close(ps_channel *ch)
{
    if (!ch)
        return PS_EINVAL;
    if (ch->closed)
        return PS_ECLOSED;
    channel_close(ch, true);
    return 0;
}

static ps_listener *add_listener(ps_channel *ch, const char *event, ps_handler fn,
                                 ps_raw_handler raw, void *user)
{
    if (!ch || ch->closed || !event || !*event || !(fn || raw))
        return NULL;
    ps_listener *l = ps__calloc(1, sizeof *l);
    l->ch = ch;
    l->event = ps__strdup(event);
    l->fn = fn;
    l->raw = raw;
    l->user = user;
    ps__list_insert_tail(&ch->listeners, &l->link);
    return l;
}

ps_listener *ps_on(ps_channel *ch, const char *event, ps_handler h, void *user)
{
    return add_listener(ch, event, h, NULL, user);
}

ps_listener *ps_on_raw(ps_channel *ch, const char *event, ps_raw_handler h, void *user)
{
    return add_listener(ch, event, NULL, h, user);
}

void ps_off(ps_listener *l)
{
    if (l)
        l->removed = true;
}

int ps_emit(ps_channel *ch, const char *event, json_t *payload)
{
    if (!ch)
        return PS_EINVAL;
    if (ch->closed)
        return PS_ECLOSED;
    if (!event || !*event || !ps__utf8_valid((const uint8_t *)event, strlen(event)))
        return PS_EINVAL;
    return send_event(ch, event, payload, NULL, 0, NULL) == 0 ? 0 : PS_ECLOSED;
}

int ps_emit_raw(ps_channel *ch, const char *event, const char *json, size_t len)
{
    if (!ch)
        return PS_EINVAL;
    if (ch->closed)
        return PS_ECLOSED;
    if (!event || !*event || !ps__utf8_valid((const uint8_t *)event, strlen(event)) || !json ||
        (needs_check(ch, json, len) && ps__json_scan(json, len, NULL) != 0))
        return PS_EINVAL;
    return send_event(ch, event, NULL, json, len, NULL) == 0 ? 0 : PS_ECLOSED;
}

void *ps__channel_ext_data(const ps_channel *ch)
{
    return ch->ext;
}

void ps__channel_set_ext_data(ps_channel *ch, void *data)
{
    ch->ext = data;
}

ps__channels *ps__channel_layer(const ps_channel *ch)
{
    return ch->layer;
}

int ps__channel_send_tail(ps_channel *ch, ps__buf *scratch, const char *tail, size_t len)
{
    if (ch->closed)
        return PS_ECLOSED;
    ps__buf_reset(scratch);
    ps__buf_reserve(scratch, 64 + len);
    ps__buf_appends(scratch, "{\"type\":\"channel_message\",\"channel\":\"");
    ps__buf_append(scratch, ch->id, PS__HEX_ID_LEN);
    ps__buf_appendc(scratch, '"');
    ps__buf_append(scratch, tail, len);
    return ps__session_send_message_text(ch->session, scratch->base, scratch->len) == 0
               ? 0
               : PS_ECLOSED;
}

/* ---- incoming -------------------------------------------------------------------------- */

static ps_channel *find_open(ps_session *s, const char *id)
{
    sess_channels *sc = ps__views_session_data(s);
    ps__list *pos;
    if (!sc)
        return NULL;
    ps__list_foreach(pos, &sc->open)
    {
        ps_channel *ch = PS__CONTAINER_OF(pos, ps_channel, open_link);
        if (strcmp(ch->id, id) == 0)
            return ch;
    }
    return NULL;
}

static void dispatch(ps_channel *ch, const char *event, msg_payload *pl, const char *request_id)
{
    reply_state local = {.ch = ch, .request_id = (char *)request_id, .refs = 1};
    ps_reply handle = {0};
    if (request_id && ch->layer->request_seconds)
        local.started_ns = ps__now_ns();
    if (request_id) {
        ps__list_insert_tail(&ch->replies, &local.link);
        ch->nreplies++;
        handle.st = &local;
    }
    /* Listeners added during dispatch wait for the next event, as in an EventEmitter. */
    ps__list *last = ch->listeners.prev;
    for (ps__list *pos = ch->listeners.next; pos != &ch->listeners && !ch->closed;
         pos = pos->next) {
        ps_listener *l = PS__CONTAINER_OF(pos, ps_listener, link);
        const char *le = l->event;
        bool match = (le[0] == event[0] && strcmp(le, event) == 0) || (le[0] == '*' && !le[1]);
        if (!l->removed && match) {
            ps_reply *r = request_id ? &handle : NULL;
            if (l->raw) {
                size_t len;
                const char *text = payload_text(pl, &len);
                /* The handler may answer with this very text: checked already. */
                ps__json_span saved = ch->layer->checked;
                ch->layer->checked = (ps__json_span){text, len};
                l->raw(ch, event, text, len, r, l->user);
                ch->layer->checked = saved;
            } else {
                l->fn(ch, event, payload_tree(pl), r, l->user);
            }
        }
        if (pos == last)
            break;
    }
    if (request_id) {
        reply_state *st = handle.st; /* on the heap if a handler kept the reply */
        if (!st->answered && st->refs == 1)
            reply_answer(st, NULL, NULL, 0, NULL);
        reply_state_unref(st);
    }
}

/* What ps__envelope_decode gives, with the payload as a tree or as text (pl). */
static void handle_envelope(ps__channels *cs, ps_session *s, const ps__envelope *env,
                            msg_payload *pl)
{
    ps_channel *ch = find_open(s, env->channel);
    if (env->response_to) {
        if (ch) {
            ps__list *pos;
            ps__list_foreach(pos, &ch->pending)
            {
                pending_req *pr = PS__CONTAINER_OF(pos, pending_req, link);
                if (strcmp(pr->id, env->response_to) == 0) {
                    request_complete(pr, env->error ? PS_EREMOTE : PS_OK,
                                     env->error ? NULL : payload_tree(pl), env->error);
                    return;
                }
            }
        }
        cs->dropped++;
        return;
    }
    if (!ch) {
        /* Unknown, closed or another session's: indistinguishable on purpose. */
        cs->dropped++;
        if (env->request_id)
            send_response(s, env->channel, env->request_id, NULL, NULL, 0, "Channel closed");
        return;
    }
    if (strcmp(env->event, "__close__") == 0) {
        channel_close(ch, true); /* DESIGN §4.1: the client hears __close__ however it closed */
        return;
    }
    if (env->request_id && ((sess_channels *)ps__views_session_data(s))->dedup) {
        if (!ch->mem)
            ch->mem = ps__reqmem_new(REQMEM_MAX_ENTRIES, REQMEM_MAX_BYTES);
        const char *kept = NULL;
        size_t len = 0;
        switch (ps__reqmem_begin(ch->mem, env->request_id, &kept, &len)) {
        case PS__REQ_RUNNING: return; /* its first run answers it */
        case PS__REQ_ANSWERED: answer_again(s, env->channel, env->request_id, kept, len); return;
        default: break;
        }
    }
    if (env->request_id && cs->max_pending && ch->nreplies >= cs->max_pending) {
        cs->dropped++;
        answer(s, ch, env->channel, env->request_id, NULL, NULL, 0, "Too many pending requests");
        return;
    }
    ps_view *view = ch->view;
    ps__view_ref(view);
    int rc = 0;
    ps_message m = {
        .channel = ch,
        .event = env->event,
        .is_request = env->request_id != NULL,
    };
    if (cs->nmessage_mw)
        m.payload = payload_tree(pl);
    for (size_t i = 0; i < cs->nmessage_mw && rc == 0 && !ch->closed; i++)
        rc = cs->message_mw[i].fn(s, &m, cs->message_mw[i].user);
    if (rc != 0 || ch->closed) {
        if (env->request_id)
            answer(s, ch, env->channel, env->request_id, NULL, NULL, 0,
                   ch->closed     ? "Channel closed"
                   : m.deny_error ? m.deny_error
                                  : "denied");
    } else {
        dispatch(ch, env->event, pl, env->request_id);
    }
    ps__view_unref(view);
}

static void on_channel_message(ps_session *s, json_t *msg, void *user)
{
    ps__channels *cs = user;
    ps__envelope env;
    const char *err = NULL;
    if (ps__envelope_decode(msg, &env, &err) != 0) {
        cs->dropped++;
        bool bad = false;
        const char *channel = opt_string(msg, "channel", &bad);
        const char *rid = opt_string(msg, "requestId", &bad);
        if (channel && rid && !opt_string(msg, "responseTo", &bad)) {
            char text[128];
            snprintf(text, sizeof text, "Invalid message: %s", err);
            send_response(s, channel, rid, NULL, NULL, 0, text);
        }
        return;
    }
    msg_payload pl = {.tree = env.payload};
    handle_envelope(cs, s, &env, &pl);
    payload_done(&pl);
}

/*
 * An optional client string from its scanned value, as opt_string reads it from a tree: 1 with
 * *out NULL when absent (v.p NULL) or null, 1 with *out set (copied into buf) when valid, 0
 * when bad.
 */
static int span_string(ps__json_span v, char buf[PS__MAX_CLIENT_ID + 1], const char **out)
{
    *out = NULL;
    if (!v.p || (v.len == 4 && memcmp(v.p, "null", 4) == 0))
        return 1;
    /* Unescaped, a string is at least a sixth of its text. */
    if (v.p[0] != '"' || v.len < 3 || v.len - 2 > 6 * PS__MAX_CLIENT_ID)
        return 0;
    const char *in = v.p + 1;
    size_t len = v.len - 2;
    char tmp[6 * PS__MAX_CLIENT_ID];
    if (memchr(in, '\\', len)) {
        len = ps__json_unescape(in, len, tmp);
        in = tmp;
    }
    if (len == 0 || len > PS__MAX_CLIENT_ID || memchr(in, '\0', len))
        return 0;
    memcpy(buf, in, len);
    buf[len] = '\0';
    *out = buf;
    return 1;
}

enum { F_CHANNEL, F_EVENT, F_REQUEST_ID, F_RESPONSE_TO, F_ERROR, F_PAYLOAD, F_COUNT };

/* The envelope's fields among the members, in one pass from the last (the last duplicate
 * wins); false when a key is written with escapes, which the tree path then reads. */
static bool envelope_fields(const ps__json_span *m, size_t n, uint64_t esc,
                            ps__json_span f[F_COUNT])
{
    static const struct {
        const char *name;
        size_t len;
    } names[F_COUNT] = {{"channel", 7},     {"event", 5}, {"requestId", 9},
                        {"responseTo", 10}, {"error", 5}, {"payload", 7}};
    memset(f, 0, F_COUNT * sizeof *f);
    for (size_t i = n & ~(size_t)1; i > 0; i -= 2) {
        if (i - 2 >= 64 || (esc >> (i - 2) & 1))
            return false;
        ps__json_span k = m[i - 2];
        for (int j = 0; j < F_COUNT; j++) {
            if (k.len == names[j].len + 2 && memcmp(k.p + 1, names[j].name, names[j].len) == 0) {
                if (!f[j].p)
                    f[j] = m[i - 1];
                break;
            }
        }
    }
    return true;
}

int ps__envelope_scan(const ps__json_span *m, size_t n, uint64_t esc, ps__envelope *env,
                      ps__envelope_bufs *b, ps__json_span *payload)
{
    memset(env, 0, sizeof *env);
    ps__json_span f[F_COUNT];
    if (!envelope_fields(m, n, esc, f))
        return -1;
    ps__json_span error = f[F_ERROR];
    bool plain = (!error.p || (error.len == 4 && memcmp(error.p, "null", 4) == 0)) &&
                 span_string(f[F_CHANNEL], b->channel, &env->channel) && env->channel &&
                 span_string(f[F_EVENT], b->event, &env->event) &&
                 span_string(f[F_REQUEST_ID], b->request_id, &env->request_id) &&
                 span_string(f[F_RESPONSE_TO], b->response_to, &env->response_to) &&
                 (env->response_to ? env->event == NULL : env->event != NULL);
    if (!plain)
        return -1;
    *payload = f[F_PAYLOAD].p ? f[F_PAYLOAD] : (ps__json_span){"null", 4};
    return 0;
}

/*
 * The hot path: the envelope read from its spans, no tree built for it (nor for the payload,
 * unless a json_t handler or middleware wants one). What this does not decide as plainly
 * valid (bad fields, an error text, a key written with escapes) is built and goes through
 * on_channel_message, which decides it as it always did; fuzz_envelope compares the two.
 */
static void on_channel_message_raw(ps_session *s, ps__json_span msg, const ps__json_span *m,
                                   size_t n, uint64_t esc, void *user)
{
    ps__channels *cs = user;
    ps__envelope env;
    ps__envelope_bufs bufs;
    ps__json_span p;
    if (ps__envelope_scan(m, n, esc, &env, &bufs, &p) != 0) {
        json_t *tree = ps__json_parse(msg.p, msg.len);
        on_channel_message(s, tree, user);
        json_decref(tree);
        return;
    }
    msg_payload pl = {.text = p.p, .len = p.len};
    handle_envelope(cs, s, &env, &pl);
    payload_done(&pl);
}

/* ---- view and session hooks ------------------------------------------------------------ */

static void on_view_closed(ps_view *v, void *user)
{
    view_channels *vc = ps__view_ext_data(v);
    if (!vc)
        return;
    ps__list *pos;
    ps__list_foreach(pos, &vc->channels)
    {
        channel_close(PS__CONTAINER_OF(pos, ps_channel, view_link), true);
    }
}

static void on_view_free(ps_view *v, void *user)
{
    view_channels *vc = ps__view_ext_data(v);
    if (!vc)
        return;
    while (!ps__list_empty(&vc->channels)) {
        ps_channel *ch = PS__CONTAINER_OF(vc->channels.next, ps_channel, view_link);
        ps__list_remove(&ch->view_link);
        while (!ps__list_empty(&ch->listeners)) {
            ps_listener *l = PS__CONTAINER_OF(ch->listeners.next, ps_listener, link);
            ps__list_remove(&l->link);
            ps__free(l->event);
            ps__free(l);
        }
        ps__free(ch);
    }
    ps__free(vc);
    ps__view_set_ext_data(v, NULL);
}

static void on_session_free(ps_session *s, void *user)
{
    ps__free(ps__views_session_data(s));
}

/*
 * The session's client is back. Our unanswered requests go again (the replay may have carried
 * some of them already: the client answers a repeat once), and the dedup window opens, with
 * the client's requests still running as its first entries.
 */
static void on_session_resume(ps_session *s, void *user)
{
    sess_channels *sc = ps__views_session_data(s);
    if (!sc)
        return;
    sc->dedup = true;
    ps__list *pos, *p;
    ps__list_foreach(pos, &sc->open)
    {
        ps_channel *ch = PS__CONTAINER_OF(pos, ps_channel, open_link);
        ps__list_foreach(p, &ch->replies)
        {
            reply_state *st = PS__CONTAINER_OF(p, reply_state, link);
            if (st->answered)
                continue;
            if (!ch->mem)
                ch->mem = ps__reqmem_new(REQMEM_MAX_ENTRIES, REQMEM_MAX_BYTES);
            ps__reqmem_begin(ch->mem, st->request_id, NULL, NULL);
        }
        ps__list_foreach(p, &ch->pending)
        {
            pending_req *pr = PS__CONTAINER_OF(p, pending_req, link);
            if (pr->event)
                send_event(ch, pr->event, pr->payload, NULL, 0, pr->id);
        }
    }
}

static void on_session_settled(ps_session *s, void *user)
{
    sess_channels *sc = ps__views_session_data(s);
    if (!sc)
        return;
    sc->dedup = false;
    ps__list *pos;
    ps__list_foreach(pos, &sc->open)
    {
        ps_channel *ch = PS__CONTAINER_OF(pos, ps_channel, open_link);
        ps__reqmem_free(ch->mem);
        ch->mem = NULL;
    }
}

void ps__channels_init(ps__channels *cs, ps__sessions *sessions)
{
    memset(cs, 0, sizeof *cs);
    ps__views_init(&cs->views, sessions);
    ps__view_ext ext = {
        .on_channel_message = on_channel_message,
        .on_view_closed = on_view_closed,
        .on_view_free = on_view_free,
        .on_session_free = on_session_free,
        .user = cs,
        .on_channel_message_raw = on_channel_message_raw,
        .on_session_resume = on_session_resume,
        .on_session_settled = on_session_settled,
    };
    ps__views_set_ext(&cs->views, &ext);
}

void ps__channels_free(ps__channels *cs)
{
    ps__views_free(&cs->views);
    ps__buf_free(&cs->out);
    ps__free(cs->message_mw);
}

int ps__channels_use_message(ps__channels *cs, ps_message_fn fn, void *user)
{
    if (!fn)
        return PS_EINVAL;
    cs->message_mw = ps__realloc(cs->message_mw, (cs->nmessage_mw + 1) * sizeof *cs->message_mw);
    cs->message_mw[cs->nmessage_mw].fn = fn;
    cs->message_mw[cs->nmessage_mw].user = user;
    cs->nmessage_mw++;
    return 0;
}
