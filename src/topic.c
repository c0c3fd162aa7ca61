/*
 * topic: the topic table of one process. A topic exists while it has members: the first
 * ps_join creates it (and tells ext.on_first, so that a broker subscribes), the last leave frees
 * it (ext.on_last). Each membership is one node in two lists, the topic's members in join order
 * and the channel's topics, so that a closing channel leaves all its topics in one walk. A
 * channel that never joins a topic costs nothing here: its list is allocated by its first join.
 *
 * Invariant: memberships never change while a delivery walks a member list (`publishing`);
 * sending to a channel runs no app code and closes nothing synchronously, so this holds by
 * construction and is asserted.
 */
#include "topic.h"

#include <assert.h>

struct ps__topic {
    ps__topic *hnext; /* hash chain */
    ps__list members; /* membership.topic_link, in join order */
    size_t nmembers;
    ps__list subs; /* ps_subscription.link, in subscription order */
    size_t nsubs;  /* of them, not removed */
    size_t len;
    char name[]; /* NUL-terminated */
};

typedef struct membership {
    ps__list topic_link; /* in topic->members */
    ps__list chan_link;  /* in chan_topics.list */
    ps__topic *topic;
    ps_channel *ch;
} membership;

struct ps_subscription {
    ps__list link; /* in topic->subs until freed */
    ps__topics *ts;
    ps__topic *topic;
    ps_topic_fn fn;
    void *user;
    bool removed; /* ps_unsubscribe'd; freed once no handler runs */
};

typedef struct chan_topics {
    ps__list list; /* membership.chan_link */
    size_t n;
} chan_topics;

/* ---- names ----------------------------------------------------------------------------- */

bool ps__topic_valid(const char *name, size_t len)
{
    return name && len > 0 && len <= PS__TOPIC_MAX && !memchr(name, '\0', len) &&
           ps__utf8_valid((const uint8_t *)name, len);
}

static bool event_valid(const char *event, size_t len)
{
    /* "__close__" would make every member's client drop a channel the server keeps open. */
    return event && len > 0 && len <= PS__MAX_CLIENT_ID && !memchr(event, '\0', len) &&
           ps__utf8_valid((const uint8_t *)event, len) &&
           !(len == 9 && memcmp(event, "__close__", 9) == 0);
}

/* ---- table ----------------------------------------------------------------------------- */

static size_t name_hash(const char *s, size_t len, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return (size_t)(h & (nbuckets - 1));
}

static ps__topic *table_find(ps__topics *ts, const char *name, size_t len)
{
    if (!ts->nbuckets)
        return NULL;
    for (ps__topic *t = ts->buckets[name_hash(name, len, ts->nbuckets)]; t; t = t->hnext)
        if (t->len == len && memcmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

static void table_grow(ps__topics *ts)
{
    size_t n = ts->nbuckets ? ts->nbuckets * 2 : 64;
    ps__topic **b = ps__calloc(n, sizeof *b);
    for (size_t i = 0; i < ts->nbuckets; i++) {
        for (ps__topic *t = ts->buckets[i], *next; t; t = next) {
            next = t->hnext;
            size_t h = name_hash(t->name, t->len, n);
            t->hnext = b[h];
            b[h] = t;
        }
    }
    ps__free(ts->buckets);
    ts->buckets = b;
    ts->nbuckets = n;
}

static ps__topic *topic_new(ps__topics *ts, const char *name, size_t len)
{
    if (ts->ntopics + 1 > ts->nbuckets)
        table_grow(ts);
    ps__topic *t = ps__malloc(sizeof *t + len + 1);
    ps__list_init(&t->members);
    t->nmembers = 0;
    ps__list_init(&t->subs);
    t->nsubs = 0;
    t->len = len;
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    size_t h = name_hash(name, len, ts->nbuckets);
    t->hnext = ts->buckets[h];
    ts->buckets[h] = t;
    ts->ntopics++;
    if (ts->ext.on_first)
        ts->ext.on_first(ts->ext.user, t->name, t->len);
    return t;
}

static void topic_free(ps__topics *ts, ps__topic *t)
{
    ps__topic **pp = &ts->buckets[name_hash(t->name, t->len, ts->nbuckets)];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    ts->ntopics--;
    if (ts->ext.on_last)
        ts->ext.on_last(ts->ext.user, t->name, t->len);
    ps__free(t);
}

static void membership_remove(ps__topics *ts, membership *m, chan_topics *ct)
{
    assert(ts->publishing == 0);
    ps__topic *t = m->topic;
    ps__list_remove(&m->topic_link);
    ps__list_remove(&m->chan_link);
    t->nmembers--;
    ct->n--;
    ts->nmembers--;
    ps__free(m);
    if (t->nmembers == 0 && ps__list_empty(&t->subs))
        topic_free(ts, t);
}

/* ---- joining --------------------------------------------------------------------------- */

static ps__topics *layer_of(const ps_channel *ch)
{
    return ps__channel_layer(ch)->ext_user;
}

static membership *find_membership(chan_topics *ct, const char *name, size_t len)
{
    ps__list *pos;
    if (!ct)
        return NULL;
    ps__list_foreach(pos, &ct->list)
    {
        membership *m = PS__CONTAINER_OF(pos, membership, chan_link);
        if (m->topic->len == len && memcmp(m->topic->name, name, len) == 0)
            return m;
    }
    return NULL;
}

/* What ps_join and ps_leave check first: 0 with the topic's length, or their error. */
static int topic_args(ps_channel *ch, const char *topic, size_t *len)
{
    if (!ch || !topic)
        return PS_EINVAL;
    *len = strlen(topic);
    if (!ps__topic_valid(topic, *len))
        return PS_EINVAL;
    return ps_channel_closed(ch) ? PS_ECLOSED : 0;
}

int ps_join(ps_channel *ch, const char *topic)
{
    size_t len;
    int rc = topic_args(ch, topic, &len);
    if (rc)
        return rc;
    ps__topics *ts = layer_of(ch);
    chan_topics *ct = ps__channel_ext_data(ch);
    if (find_membership(ct, topic, len))
        return 0;
    if (ts->max_per_channel && ct && ct->n >= ts->max_per_channel)
        return PS_ELIMIT;
    ps__topic *t = table_find(ts, topic, len);
    if (!t && ts->max_topics && ts->ntopics >= ts->max_topics)
        return PS_ELIMIT;
    if (!ct) {
        ct = ps__calloc(1, sizeof *ct);
        ps__list_init(&ct->list);
        ps__channel_set_ext_data(ch, ct);
    }
    if (!t)
        t = topic_new(ts, topic, len);
    membership *m = ps__malloc(sizeof *m);
    m->topic = t;
    m->ch = ch;
    ps__list_insert_tail(&t->members, &m->topic_link);
    ps__list_insert_tail(&ct->list, &m->chan_link);
    t->nmembers++;
    ct->n++;
    ts->nmembers++;
    return 0;
}

int ps_leave(ps_channel *ch, const char *topic)
{
    size_t len;
    int rc = topic_args(ch, topic, &len);
    if (rc)
        return rc;
    chan_topics *ct = ps__channel_ext_data(ch);
    membership *m = find_membership(ct, topic, len);
    if (!m)
        return PS_ENOTFOUND;
    membership_remove(layer_of(ch), m, ct);
    return 0;
}

/* The channel layer's close hook: leave everything, free the channel's list. */
static void on_channel_close(ps_channel *ch, void *user)
{
    ps__topics *ts = user;
    chan_topics *ct = ps__channel_ext_data(ch);
    while (!ps__list_empty(&ct->list))
        membership_remove(ts, PS__CONTAINER_OF(ct->list.next, membership, chan_link), ct);
    ps__free(ct);
    ps__channel_set_ext_data(ch, NULL);
}

/* ---- server-side subscriptions --------------------------------------------------------- */

ps_subscription *ps__topics_subscribe(ps__topics *ts, const char *topic, ps_topic_fn fn, void *user)
{
    if (!topic || !fn)
        return NULL;
    size_t len = strlen(topic);
    if (!ps__topic_valid(topic, len))
        return NULL;
    ps__topic *t = table_find(ts, topic, len);
    if (!t)
        t = topic_new(ts, topic, len);
    ps_subscription *sub = ps__calloc(1, sizeof *sub);
    sub->ts = ts;
    sub->topic = t;
    sub->fn = fn;
    sub->user = user;
    ps__list_insert_tail(&t->subs, &sub->link);
    t->nsubs++;
    return sub;
}

/* Frees the removed subscriptions of t once no handler runs; frees t if nothing is left. */
static void subs_sweep(ps__topics *ts, ps__topic *t)
{
    if (ts->dispatching > 0)
        return;
    ps__list *pos, *tmp;
    ps__list_foreach_safe(pos, tmp, &t->subs)
    {
        ps_subscription *sub = PS__CONTAINER_OF(pos, ps_subscription, link);
        if (sub->removed) {
            ps__list_remove(&sub->link);
            ps__free(sub);
        }
    }
    if (t->nmembers == 0 && ps__list_empty(&t->subs))
        topic_free(ts, t);
}

void ps_unsubscribe(ps_subscription *sub)
{
    if (!sub || sub->removed)
        return;
    sub->removed = true;
    sub->topic->nsubs--;
    if (sub->ts->dispatching > 0)
        sub->ts->unswept++;
    else
        subs_sweep(sub->ts, sub->topic);
}

static void subs_call(ps__topics *ts, ps__topic *t, const char *event, json_t *payload)
{
    if (t->nsubs == 0)
        return;
    ts->dispatching++;
    /* Subscriptions added by a handler wait for the next publish, as listeners do. */
    ps__list *last = t->subs.prev;
    for (ps__list *pos = t->subs.next; pos != &t->subs; pos = pos->next) {
        ps_subscription *sub = PS__CONTAINER_OF(pos, ps_subscription, link);
        if (!sub->removed)
            sub->fn(ts->server, t->name, event, payload ? payload : json_null(), sub->user);
        if (pos == last)
            break;
    }
    ts->dispatching--;
    /* What handlers unsubscribed (of any topic) is freed once the outermost one returned. */
    if (ts->dispatching == 0 && ts->unswept > 0) {
        ts->unswept = 0;
        for (size_t i = 0; i < ts->nbuckets; i++)
            for (ps__topic *u = ts->buckets[i], *next; u; u = next) {
                next = u->hnext;
                subs_sweep(ts, u);
            }
    }
}

/* ---- delivering ------------------------------------------------------------------------ */

/* Appends ",\"event\":E,\"payload\":" + payload + "}": the part every member's message shares. */
static void build_tail(ps__buf *tail, const char *event, size_t elen, const char *payload,
                       size_t plen)
{
    ps__buf ev;
    ps__buf_init(&ev);
    ps__buf_append(&ev, event, elen); /* NUL-terminated for the escaper */
    ps__buf_reserve(tail, elen + plen + 32);
    ps__buf_appends(tail, ",\"event\":");
    ps__json_escape(tail, ev.base);
    ps__buf_appends(tail, ",\"payload\":");
    ps__buf_append(tail, payload, plen);
    ps__buf_appendc(tail, '}');
    ps__buf_free(&ev);
}

static long deliver_text(ps__topics *ts, ps__topic *t, const char *tail, size_t len,
                         ps_channel *except)
{
    long n = 0;
    ps__list *pos;
    if (ts->before_send)
        ts->before_send(ts->before_send_user);
    ts->publishing++;
    ps__list_foreach(pos, &t->members)
    {
        membership *m = PS__CONTAINER_OF(pos, membership, topic_link);
        if (m->ch == except)
            continue;
        if (ps__channel_send_tail(m->ch, &ts->scratch, tail, len) == 0)
            n++;
    }
    ts->publishing--;
    ts->deliveries += (uint64_t)n;
    return n;
}

/* Payloads with binary values go through json_t per member: they become attachments. */
static long deliver_json(ps__topics *ts, ps__topic *t, const char *event, json_t *payload,
                         ps_channel *except)
{
    long n = 0;
    ps__list *pos;
    if (ts->before_send)
        ts->before_send(ts->before_send_user);
    ts->publishing++;
    ps__list_foreach(pos, &t->members)
    {
        membership *m = PS__CONTAINER_OF(pos, membership, topic_link);
        if (m->ch != except && ps_emit(m->ch, event, payload) == 0)
            n++;
    }
    ts->publishing--;
    ts->deliveries += (uint64_t)n;
    return n;
}

int ps__topics_publish(ps__topics *ts, const char *topic, const char *event, json_t *payload,
                       ps_channel *except)
{
    if (!topic || !event)
        return PS_EINVAL;
    size_t tlen = strlen(topic), elen = strlen(event);
    if (!ps__topic_valid(topic, tlen) || !event_valid(event, elen))
        return PS_EINVAL;
    if (ts->depth >= 8)
        return PS_ELIMIT; /* a subscription handler publishing to its own topic */
    ts->published++;
    ps__topic *t = table_find(ts, topic, tlen);
    bool binary = payload && ps__json_has_binary(payload);
    if (!t && !ts->ext.on_publish)
        return 0;
    ps__buf text;
    ps__buf_init(&text);
    if (payload)
        ps__json_append(&text, payload);
    else
        ps__buf_appends(&text, "null");
    if (t && binary) {
        deliver_json(ts, t, event, payload, except);
    } else if (t) {
        ps__buf tail;
        ps__buf_init(&tail);
        build_tail(&tail, event, elen, text.base, text.len);
        deliver_text(ts, t, tail.base, tail.len, except);
        ps__buf_free(&tail);
    }
    if (ts->ext.on_publish)
        ts->ext.on_publish(ts->ext.user, topic, tlen, event, text.base, text.len, binary);
    ps__buf_free(&text);
    if (t) {
        ts->depth++;
        subs_call(ts, t, event, payload);
        ts->depth--;
    }
    return 0;
}

long ps__topics_deliver(ps__topics *ts, const char *topic, size_t tlen, const char *event,
                        size_t elen, const char *payload, size_t plen, bool untrusted)
{
    if (!ps__topic_valid(topic, tlen) || !event_valid(event, elen) || plen == 0)
        return -1;
    ps__topic *t = table_find(ts, topic, tlen);
    if (!t && !untrusted)
        return 0;
    /* What arrives from Redis is embedded in clients' frames only once it is known to be one
     * JSON value (UTF-8 included): anything else could break every member's stream. The parse
     * is once per process per message, like the serialisation it replaces. */
    json_t *value = NULL;
    bool binary = memmem(payload, plen, "\"$binary\"", 9) != NULL;
    if (untrusted || binary || (t && t->nsubs > 0)) {
        value = ps__json_parse(payload, plen);
        if (!value)
            return -1;
        binary = ps__json_has_binary(value);
    }
    long n = 0;
    if (t && binary) {
        ps__buf ev;
        ps__buf_init(&ev);
        ps__buf_append(&ev, event, elen);
        n = deliver_json(ts, t, ev.base, value, NULL);
        ps__buf_free(&ev);
    } else if (t) {
        ps__buf tail;
        ps__buf_init(&tail);
        build_tail(&tail, event, elen, payload, plen);
        n = deliver_text(ts, t, tail.base, tail.len, NULL);
        ps__buf_free(&tail);
    }
    if (t && t->nsubs > 0) {
        ps__buf ev;
        ps__buf_init(&ev);
        ps__buf_append(&ev, event, elen);
        ts->depth++;
        subs_call(ts, t, ev.base, value);
        ts->depth--;
        ps__buf_free(&ev);
    }
    json_decref(value);
    return n;
}

void ps__topics_foreach(ps__topics *ts, void (*fn)(void *user, const char *topic, size_t len),
                        void *user)
{
    for (size_t i = 0; i < ts->nbuckets; i++)
        for (ps__topic *t = ts->buckets[i]; t; t = t->hnext)
            fn(user, t->name, t->len);
}

size_t ps__topics_members(ps__topics *ts, const char *topic, size_t len)
{
    ps__topic *t = table_find(ts, topic, len);
    return t ? t->nmembers : 0;
}

/* ---- layer ----------------------------------------------------------------------------- */

void ps__topics_init(ps__topics *ts, ps__channels *channels)
{
    memset(ts, 0, sizeof *ts);
    ts->channels = channels;
    ps__buf_init(&ts->scratch);
    channels->on_channel_close = on_channel_close;
    channels->ext_user = ts;
}

void ps__topics_free(ps__topics *ts)
{
    /* Channels close (and leave) before the server is freed; nothing should be left. */
    for (size_t i = 0; i < ts->nbuckets; i++) {
        while (ts->buckets[i]) {
            ps__topic *t = ts->buckets[i];
            ts->buckets[i] = t->hnext;
            while (!ps__list_empty(&t->members)) {
                membership *m = PS__CONTAINER_OF(t->members.next, membership, topic_link);
                ps__list_remove(&m->topic_link);
                ps__list_remove(&m->chan_link);
                ps__free(m);
            }
            while (!ps__list_empty(&t->subs)) {
                ps_subscription *sub = PS__CONTAINER_OF(t->subs.next, ps_subscription, link);
                ps__list_remove(&sub->link);
                ps__free(sub);
            }
            ps__free(t);
        }
    }
    ps__free(ts->buckets);
    ps__buf_free(&ts->scratch);
    memset(ts, 0, sizeof *ts);
}

void ps__topics_set_ext(ps__topics *ts, const ps__topic_ext *ext)
{
    ts->ext = *ext;
}
