/*
 * broker: the publish codec shared by worker pipes and Redis, Redis URLs, and the Redis broker
 * on hiredis's async API (its libuv glue is in net.c, which owns every libuv call).
 */
#include "broker.h"

#include <hiredis/async.h>
#include <stdlib.h>

static void put16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static size_t get16(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

void ps__bmsg_encode(ps__buf *out, const ps__bmsg *m)
{
    uint8_t h[PS__BMSG_HEAD];
    memcpy(h, "PSB", 3);
    h[3] = PS__BMSG_VERSION;
    h[4] = m->flags;
    h[5] = m->worker;
    memcpy(h + 6, m->node, PS__NODE_ID_LEN);
    for (int i = 0; i < 8; i++)
        h[22 + i] = (uint8_t)(m->seq >> (56 - 8 * i));
    put16(h + 30, m->topic_len);
    put16(h + 32, m->event_len);
    for (int i = 0; i < 4; i++)
        h[34 + i] = (uint8_t)(m->payload_len >> (24 - 8 * i));
    ps__buf_reserve(out, sizeof h + m->topic_len + m->event_len + m->payload_len);
    ps__buf_append(out, h, sizeof h);
    ps__buf_append(out, m->topic, m->topic_len);
    ps__buf_append(out, m->event, m->event_len);
    ps__buf_append(out, m->payload, m->payload_len);
}

int ps__bmsg_decode(const char *data, size_t len, size_t max_len, ps__bmsg *m, const char **err)
{
    const uint8_t *h = (const uint8_t *)data;
    memset(m, 0, sizeof *m);
    if (len > max_len) {
        *err = "oversized";
        return -1;
    }
    if (len < 4 || memcmp(h, "PSB", 3) != 0) {
        *err = len < 4 ? "truncated" : "not a pulsec message";
        return -1;
    }
    if (h[3] != PS__BMSG_VERSION) {
        *err = "unknown version";
        return -1;
    }
    if (len < PS__BMSG_HEAD) {
        *err = "truncated";
        return -1;
    }
    m->version = h[3];
    m->flags = h[4];
    m->worker = h[5];
    memcpy(m->node, h + 6, PS__NODE_ID_LEN);
    for (int i = 0; i < 8; i++)
        m->seq = m->seq << 8 | h[22 + i];
    m->topic_len = get16(h + 30);
    m->event_len = get16(h + 32);
    for (int i = 0; i < 4; i++)
        m->payload_len = m->payload_len << 8 | h[34 + i];
    uint64_t want = (uint64_t)PS__BMSG_HEAD + m->topic_len + m->event_len + m->payload_len;
    if (want != len) {
        *err = want > len ? "truncated" : "trailing bytes";
        return -1;
    }
    if (m->payload_len == 0) {
        *err = "empty payload";
        return -1;
    }
    m->topic = data + PS__BMSG_HEAD;
    m->event = m->topic + m->topic_len;
    m->payload = m->event + m->event_len;
    if (!ps__topic_valid(m->topic, m->topic_len)) {
        *err = "invalid topic";
        return -1;
    }
    if (m->event_len == 0 || m->event_len > PS__MAX_CLIENT_ID ||
        memchr(m->event, '\0', m->event_len) ||
        !ps__utf8_valid((const uint8_t *)m->event, m->event_len)) {
        *err = "invalid event";
        return -1;
    }
    return 0;
}

/* ---- Redis URLs ------------------------------------------------------------------------ */

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Copies n bytes of s, URL-decoded, into out (size cap); false if it does not fit or is bad. */
static bool copy_decoded(char *out, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    long m = ps__url_decode(out, n, false);
    if (m < 0 || memchr(out, '\0', (size_t)m))
        return false;
    out[m] = '\0';
    return true;
}

int ps__redis_url_parse(const char *url, ps__redis_url *out, const char **err)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    *err = NULL;
    if (!url) {
        *err = "no URL";
        return -1;
    }
    const char *p;
    if (strncmp(url, "unix://", 7) == 0 || strncmp(url, "redis+unix://", 13) == 0) {
        out->unix_socket = true;
        p = url + (url[0] == 'u' ? 7 : 13);
        const char *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || p[0] != '/' || !copy_decoded(out->path, sizeof out->path, p, n)) {
            *err = "a unix socket URL needs an absolute path (unix:///run/redis.sock)";
            return -1;
        }
        while (q && *q) {
            q++;
            const char *amp = strchr(q, '&');
            size_t len = amp ? (size_t)(amp - q) : strlen(q);
            if (len > 3 && strncmp(q, "db=", 3) == 0 && all_digits(q + 3, len - 3) && len - 3 < 6)
                out->db = atoi(q + 3);
            else if (len > 9 && strncmp(q, "password=", 9) == 0 &&
                     copy_decoded(out->password, sizeof out->password, q + 9, len - 9))
                ;
            else {
                *err = "unknown parameter in a unix socket URL (db=N and password=P are known)";
                return -1;
            }
            q = amp;
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        *err = "the URL must start with redis:// or unix://";
        return -1;
    }
    p = url + 8;
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (!copy_decoded(out->user, sizeof out->user, p, (size_t)(colon - p)) ||
                !copy_decoded(out->password, sizeof out->password, colon + 1,
                              (size_t)(at - colon - 1))) {
                *err = "user or password too long or badly escaped";
                return -1;
            }
        } else if (!copy_decoded(out->password, sizeof out->password, p, (size_t)(at - p))) {
            *err = "password too long or badly escaped";
            return -1;
        }
        p = at + 1;
    }
    const char *hend;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb) {
            *err = "unterminated [IPv6 address]";
            return -1;
        }
        if ((size_t)(rb - p - 1) >= sizeof out->host || rb == p + 1) {
            *err = "bad host";
            return -1;
        }
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
        hend = rb + 1;
    } else {
        hend = memchr(p, ':', (size_t)(end - p));
        if (!hend)
            hend = end;
        if (hend == p || (size_t)(hend - p) >= sizeof out->host) {
            *err = "missing or too long host";
            return -1;
        }
        memcpy(out->host, p, (size_t)(hend - p));
    }
    if (hend < end) {
        if (*hend != ':' || !all_digits(hend + 1, (size_t)(end - hend - 1)) || end - hend - 1 > 5 ||
            (out->port = atoi(hend + 1)) < 1 || out->port > 65535) {
            *err = "bad port";
            return -1;
        }
    }
    if (*end == '/') {
        const char *d = end + 1;
        size_t n = strcspn(d, "?#");
        if (n > 0 && (!all_digits(d, n) || n > 5)) {
            *err = "the path must be a database number (/0)";
            return -1;
        }
        out->db = n ? atoi(d) : 0;
        end = d + n;
    }
    if (*end) {
        *err = "unexpected text after the database number";
        return -1;
    }
    return 0;
}

/* ---- the Redis broker ------------------------------------------------------------------ */

/*
 * Two connections: `pub` for PUBLISH, PING and the app's commands, `sub` in subscribe mode.
 * The broker is up once both are connected (and, if configured, authenticated and on their
 * database) and every topic with local members has been subscribed again. Anything that goes
 * wrong (a connect failing or timing out, a disconnect, a PING unanswered for timeout_ms, AUTH
 * refused) takes both down; a timer connects again after a backoff (100 ms doubling to 5 s,
 * with jitter), resolving the host name anew each time.
 *
 * hiredis frees a context right after calling its connect callback with an error, or its
 * disconnect callback: our pointer is cleared there. A context freed from inside one of its own
 * callbacks is only freed once that callback returns, running its pending callbacks then: so
 * the broker itself is freed by a zero-delay timer after ps__broker_close, when every hiredis
 * call stack has unwound, and callbacks of dropped contexts find ac->data == NULL.
 */
enum { B_IDLE, B_RESOLVING, B_CONNECTING, B_UP, B_DOWN, B_CLOSED };

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PING_EVERY_MS 1000
#define SUBSCRIBE_BATCH 256

struct ps__broker {
    uv_loop_t *loop;
    ps__broker_cfg cfg;
    char *prefix;
    ps__broker_cbs cbs;
    void *user;
    ps__topics *topics;
    redisAsyncContext *pub, *sub;
    bool pub_ready, sub_ready;
    int state;
    ps__resolve_req *resolving;
    ps__timer *timer; /* connect deadline, then pings, then the backoff while down */
    bool reaping;     /* the free is scheduled */
    uint32_t backoff_ms;
    uint64_t ping_sent;   /* loop ms of the PING outstanding, 0 = none */
    size_t inflight;      /* bytes of commands sent and not answered */
    const char *down_why; /* for the log */
    ps__buf chan;         /* scratch: prefix + ":" + topic */
    ps__broker_stats stats;
};

static void broker_connect(ps__broker *b);
static void go_down(ps__broker *b, const char *why);

static void chan_name(ps__broker *b, const char *topic, size_t len)
{
    ps__buf_reset(&b->chan);
    ps__buf_appends(&b->chan, b->prefix);
    ps__buf_appendc(&b->chan, ':');
    ps__buf_append(&b->chan, topic, len);
}

static void broker_free(ps__broker *b)
{
    ps__timer_free(b->timer);
    ps__buf_free(&b->chan);
    ps__free(b->prefix);
    ps__free(b);
}

static void free_ctx(redisAsyncContext **pp)
{
    redisAsyncContext *ac = *pp;
    *pp = NULL;
    if (ac) {
        ac->data = NULL; /* its callbacks, run now with NULL replies, must not find us */
        redisAsyncFree(ac);
    }
}

/* Both contexts go; the pending callbacks they run see ac->data == NULL. */
static void drop_contexts(ps__broker *b)
{
    b->pub_ready = b->sub_ready = false;
    free_ctx(&b->pub);
    free_ctx(&b->sub);
    b->inflight = 0;
    b->ping_sent = 0;
}

static void on_timer(ps__timer *t, void *data);

static void arm(ps__broker *b, uint64_t ms)
{
    ps__timer_start(b->timer, ms);
}

static void go_down(ps__broker *b, const char *why)
{
    if (b->state == B_DOWN || b->state == B_CLOSED)
        return;
    bool was_up = b->state == B_UP;
    b->state = B_DOWN;
    if (b->resolving) {
        ps__resolve_cancel(b->resolving);
        b->resolving = NULL;
    }
    drop_contexts(b); /* may run app callbacks (PS_ECLOSED), which may close the broker */
    if (b->state == B_CLOSED)
        return;
    if (was_up) {
        PS__WARN("redis broker down: %s; local delivery goes on, reconnecting", why);
        b->backoff_ms = BACKOFF_MIN_MS;
        if (b->cbs.on_down)
            b->cbs.on_down(b->user);
    } else {
        PS__DEBUG("redis broker: %s; next try in %u ms", why, b->backoff_ms);
    }
    b->down_why = why;
    /* Jitter, so that many nodes do not all reconnect in the same millisecond. */
    uint32_t r;
    ps__random_bytes(&r, sizeof r);
    uint64_t delay = b->backoff_ms - b->backoff_ms / 5 + r % (b->backoff_ms / 5 * 2 + 1);
    arm(b, delay);
    b->backoff_ms = b->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b->backoff_ms * 2;
}

/* ---- subscriptions --------------------------------------------------------------------- */

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ps__broker *b = ac->data;
    redisReply *reply = r;
    if (!b || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    redisReply *kind = reply->element[0], *chan = reply->element[1], *data = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING ||
        strcmp(kind->str, "message") != 0)
        return;
    size_t plen = strlen(b->prefix);
    if (data->type != REDIS_REPLY_STRING || chan->len <= plen + 1 ||
        memcmp(chan->str, b->prefix, plen) != 0 || chan->str[plen] != ':') {
        b->stats.invalid++;
        return;
    }
    b->stats.received++;
    b->cbs.on_message(b->user, chan->str + plen + 1, chan->len - plen - 1, data->str, data->len);
}

/* One SUBSCRIBE or UNSUBSCRIBE naming many channels (argv[0] is the command). */
typedef struct batch {
    ps__broker *b;
    const char *cmd;
    const char **argv;
    size_t *lens;
    char **owned;
    int n;
} batch;

static void batch_flush(batch *bt)
{
    if (bt->n <= 1)
        return;
    if (bt->b->sub)
        redisAsyncCommandArgv(bt->b->sub, on_sub_reply, NULL, bt->n, bt->argv, bt->lens);
    for (int i = 1; i < bt->n; i++)
        ps__free(bt->owned[i]);
    bt->n = 1;
}

static void batch_add(void *user, const char *topic, size_t len)
{
    batch *bt = user;
    chan_name(bt->b, topic, len);
    bt->owned[bt->n] = ps__buf_steal(&bt->b->chan, &bt->lens[bt->n]);
    bt->argv[bt->n] = bt->owned[bt->n];
    bt->n++;
    if (bt->n == SUBSCRIBE_BATCH + 1)
        batch_flush(bt);
}

static void resubscribe_all(ps__broker *b)
{
    const char *argv[SUBSCRIBE_BATCH + 1];
    size_t lens[SUBSCRIBE_BATCH + 1];
    char *owned[SUBSCRIBE_BATCH + 1];
    batch bt = {b, "SUBSCRIBE", argv, lens, owned, 1};
    argv[0] = "SUBSCRIBE";
    lens[0] = 9;
    ps__topics_foreach(b->topics, batch_add, &bt);
    batch_flush(&bt);
}

static void sub_one(ps__broker *b, const char *cmd, const char *topic, size_t len)
{
    if (b->state != B_UP || !b->sub)
        return; /* (re)subscribed with all the others once up */
    chan_name(b, topic, len);
    redisAsyncCommand(b->sub, on_sub_reply, NULL, "%s %b", cmd, b->chan.base, b->chan.len);
}

void ps__broker_subscribe(ps__broker *b, const char *topic, size_t len)
{
    sub_one(b, "SUBSCRIBE", topic, len);
}

void ps__broker_unsubscribe(ps__broker *b, const char *topic, size_t len)
{
    sub_one(b, "UNSUBSCRIBE", topic, len);
}

/* ---- connecting ------------------------------------------------------------------------ */

static void become_up(ps__broker *b)
{
    b->state = B_UP;
    b->backoff_ms = BACKOFF_MIN_MS;
    if (b->stats.ups++ > 0)
        b->stats.reconnects++;
    resubscribe_all(b);
    if (b->cfg.url.unix_socket)
        PS__INFO("redis broker up (%s)", b->cfg.url.path);
    else
        PS__INFO("redis broker up (%s port %d)", b->cfg.url.host, b->cfg.url.port);
    arm(b, PING_EVERY_MS);
    if (b->cbs.on_up)
        b->cbs.on_up(b->user);
}

/* AUTH and SELECT answers: anything but OK means this Redis will not serve us. */
static void on_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ps__broker *b = ac->data;
    redisReply *reply = r;
    if (!b || !reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        PS__WARN("redis refused %s: %s", (const char *)privdata, reply->str);
        go_down(b, "refused AUTH or SELECT");
        return;
    }
    if (strcmp(privdata, "last") == 0 || strcmp(privdata, "SELECT") == 0) {
        if (ac == b->pub)
            b->pub_ready = true;
        else if (ac == b->sub)
            b->sub_ready = true;
        if (b->pub_ready && b->sub_ready && b->state == B_CONNECTING)
            become_up(b);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    ps__broker *b = ac->data;
    if (!b)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        if (ac == b->pub)
            b->pub = NULL;
        else if (ac == b->sub)
            b->sub = NULL;
        go_down(b, "connect failed");
    }
}

static void schedule_reap(ps__broker *b);

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    ps__broker *b = ac->data;
    if (!b)
        return;
    if (ac == b->pub)
        b->pub = NULL;
    else if (ac == b->sub)
        b->sub = NULL;
    if (b->state == B_CLOSED) {
        if (!b->pub && !b->sub)
            schedule_reap(b); /* the closing flush is done */
        return;
    }
    go_down(b, "connection lost");
}

static redisAsyncContext *open_ctx(ps__broker *b, const char *ip, bool is_pub)
{
    const ps__redis_url *u = &b->cfg.url;
    redisAsyncContext *ac =
        u->unix_socket ? redisAsyncConnectUnix(u->path) : redisAsyncConnect(ip, u->port);
    if (!ac)
        return NULL;
    if (ac->err) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = b;
    if (ps__redis_attach(ac, b->loop) != 0) {
        ac->data = NULL;
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Queued now, written once connected: hiredis pipelines them. The last setup step of each
     * connection marks it ready. */
    bool select = is_pub && u->db != 0;
    if (u->password[0]) {
        const char *tag = select ? "AUTH" : "last";
        if (u->user[0])
            redisAsyncCommand(ac, on_setup_reply, (void *)tag, "AUTH %s %s", u->user, u->password);
        else
            redisAsyncCommand(ac, on_setup_reply, (void *)tag, "AUTH %s", u->password);
    }
    if (select)
        redisAsyncCommand(ac, on_setup_reply, (void *)"SELECT", "SELECT %d", u->db);
    if (!u->password[0] && !select)
        redisAsyncCommand(ac, on_setup_reply, (void *)"last", "PING");
    return ac;
}

static void connect_to(ps__broker *b, const char *ip)
{
    b->state = B_CONNECTING;
    b->pub = open_ctx(b, ip, true);
    b->sub = b->pub ? open_ctx(b, ip, false) : NULL;
    if (!b->pub || !b->sub) {
        go_down(b, "connect failed");
        return;
    }
    arm(b, b->cfg.timeout_ms);
}

static void on_resolved(void *user, int status, const char *ip)
{
    ps__broker *b = user;
    b->resolving = NULL;
    if (status != 0) {
        PS__DEBUG("redis host %s: %s", b->cfg.url.host, uv_strerror(status));
        go_down(b, "host name not resolved");
        return;
    }
    connect_to(b, ip);
}

static void broker_connect(ps__broker *b)
{
    b->state = B_RESOLVING;
    if (b->cfg.url.unix_socket) {
        connect_to(b, NULL);
        return;
    }
    b->resolving = ps__resolve(b->loop, b->cfg.url.host, on_resolved, b);
    if (!b->resolving) {
        go_down(b, "host name not resolved");
        return;
    }
    arm(b, b->cfg.timeout_ms);
}

static void on_pong(redisAsyncContext *ac, void *r, void *privdata)
{
    ps__broker *b = ac->data;
    if (b && r)
        b->ping_sent = 0;
}

static void on_timer(ps__timer *t, void *data)
{
    ps__broker *b = data;
    switch (b->state) {
    case B_RESOLVING:
    case B_CONNECTING: go_down(b, "Redis did not answer in time"); break;
    case B_DOWN: broker_connect(b); break;
    case B_CLOSED: /* the closing flush took too long */
        drop_contexts(b);
        schedule_reap(b);
        break;
    case B_UP: {
        uint64_t now = ps__now_ms();
        if (b->ping_sent && now - b->ping_sent >= b->cfg.timeout_ms) {
            go_down(b, "Redis did not answer a PING in time");
            return;
        }
        if (!b->ping_sent) {
            b->ping_sent = now ? now : 1;
            redisAsyncCommand(b->pub, on_pong, NULL, "PING");
        }
        arm(b, PING_EVERY_MS);
        break;
    }
    default: break;
    }
}

/* ---- publishing and commands ----------------------------------------------------------- */

static void on_published(redisAsyncContext *ac, void *r, void *privdata)
{
    ps__broker *b = ac->data;
    size_t len = (size_t)(uintptr_t)privdata;
    if (!b)
        return; /* dropped with its context (counted by drop_contexts' caller) */
    b->inflight -= len < b->inflight ? len : b->inflight;
    if (!r)
        b->stats.unconfirmed++;
}

int ps__broker_publish(ps__broker *b, const char *topic, size_t tlen, const char *msg, size_t len)
{
    if (b->state != B_UP || !b->pub) {
        b->stats.dropped_down++;
        return PS_ECLOSED;
    }
    if (b->inflight + len > b->cfg.max_queued) {
        b->stats.dropped_full++;
        return PS_ELIMIT;
    }
    chan_name(b, topic, tlen);
    if (redisAsyncCommand(b->pub, on_published, (void *)(uintptr_t)len, "PUBLISH %b %b",
                          b->chan.base, b->chan.len, msg, len) != REDIS_OK) {
        b->stats.dropped_down++;
        return PS_ECLOSED;
    }
    b->inflight += len;
    b->stats.published++;
    return 0;
}

typedef struct command {
    ps__broker *b;
    size_t len;
    ps__broker_reply_cb cb;
    void *user;
} command;

/* Exactly once per command: with the reply, or NULL when its context went first. */
static void on_command_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    command *c = privdata;
    if (ac->data)
        c->b->inflight -= c->len < c->b->inflight ? c->len : c->b->inflight;
    c->cb(c->user, r ? 0 : PS_ECLOSED, r);
    ps__free(c);
}

int ps__broker_command(ps__broker *b, int argc, const char **argv, const size_t *lens,
                       ps__broker_reply_cb cb, void *user)
{
    if (b->state != B_UP || !b->pub)
        return PS_ECLOSED;
    size_t len = 0;
    for (int i = 0; i < argc; i++)
        len += lens[i] + 16;
    if (b->inflight + len > b->cfg.max_queued)
        return PS_ELIMIT;
    command *c = ps__malloc(sizeof *c);
    *c = (command){b, len, cb, user};
    if (redisAsyncCommandArgv(b->pub, on_command_reply, c, argc, argv, lens) != REDIS_OK) {
        ps__free(c);
        return PS_ECLOSED;
    }
    b->inflight += len;
    return 0;
}

/* ---- life ------------------------------------------------------------------------------ */

ps__broker *ps__broker_new(uv_loop_t *loop, const ps__broker_cfg *cfg, const ps__broker_cbs *cbs,
                           void *user, ps__topics *topics)
{
    ps__broker *b = ps__calloc(1, sizeof *b);
    b->loop = loop;
    b->cfg = *cfg;
    b->prefix = ps__strdup(cfg->prefix ? cfg->prefix : "pulsec");
    b->cfg.prefix = b->prefix;
    if (!b->cfg.max_queued)
        b->cfg.max_queued = 8u * 1024 * 1024;
    if (!b->cfg.timeout_ms)
        b->cfg.timeout_ms = 3000;
    b->cbs = *cbs;
    b->user = user;
    b->topics = topics;
    b->backoff_ms = BACKOFF_MIN_MS;
    ps__buf_init(&b->chan);
    b->timer = ps__timer_new(loop, on_timer, b);
    broker_connect(b);
    return b;
}

bool ps__broker_up(const ps__broker *b)
{
    return b && b->state == B_UP;
}

const ps__broker_stats *ps__broker_get_stats(const ps__broker *b)
{
    return &b->stats;
}

static void reap(ps__timer *t, void *data)
{
    ps__timer_free(t);
    broker_free(data);
}

static void schedule_reap(ps__broker *b)
{
    if (b->reaping)
        return;
    b->reaping = true;
    ps__timer_stop(b->timer);
    ps__timer *t = ps__timer_new(b->loop, reap, b);
    ps__timer_start(t, 0);
}

void ps__broker_close(ps__broker *b, uint32_t grace_ms)
{
    if (!b || b->state == B_CLOSED)
        return;
    bool flush = b->state == B_UP && b->pub && grace_ms > 0;
    b->state = B_CLOSED;
    if (b->resolving) {
        ps__resolve_cancel(b->resolving);
        b->resolving = NULL;
    }
    ps__timer_stop(b->timer);
    free_ctx(&b->sub);
    if (flush) {
        /* What a stop sent last (members leaving, their publishes) is written and answered
         * first, for grace_ms at most; hiredis disconnects once nothing is pending. */
        redisAsyncDisconnect(b->pub);
        if (b->pub)
            arm(b, grace_ms);
        else
            schedule_reap(b);
        return;
    }
    drop_contexts(b);
    schedule_reap(b);
}
