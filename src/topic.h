/*
 * topic: named groups of channels inside one process, beside the channel layer (DESIGN §5).
 * ps_join/ps_leave add and remove memberships; a closing channel leaves every topic it joined.
 * A publish writes its event and payload as JSON text once, into the tail of the channel
 * envelope (",\"event\":E,\"payload\":P}"), and each member's message is only its own head
 * ("{\"type\":\"channel_message\",\"channel\":ID") plus that shared tail: the serialisation is
 * paid once per process, not once per recipient. What carries publishes to other processes
 * (worker pipes, Redis) plugs in through ps__topic_ext; messages arriving from there come back
 * in through ps__topics_deliver.
 */
#ifndef PS_TOPIC_H
#define PS_TOPIC_H

#include "channel.h"

typedef struct ps__topic ps__topic;

/* The layers that carry topics beyond this process. Every hook is optional. */
typedef struct ps__topic_ext {
    /* A topic got its first local member / lost its last one (subscribe, unsubscribe). */
    void (*on_first)(void *user, const char *topic, size_t len);
    void (*on_last)(void *user, const char *topic, size_t len);
    /* A local publish, after local delivery: `payload` is its JSON text (binary values still in
     * their {"$binary": ...} form, `binary` says whether there are any). */
    void (*on_publish)(void *user, const char *topic, size_t tlen, const char *event,
                       const char *payload, size_t plen, bool binary);
    void *user;
} ps__topic_ext;

typedef struct ps__topics {
    ps__channels *channels;
    ps__topic **buckets; /* name -> topic, chained; a power of two */
    size_t nbuckets;
    size_t ntopics;           /* topics with at least one member */
    uint64_t nmembers;        /* memberships */
    uint32_t max_per_channel; /* 0 = no bound */
    uint32_t max_topics;      /* 0 = no bound */
    uint64_t published;       /* local publishes */
    uint64_t deliveries;      /* channel events sent to members */
    int publishing;           /* depth of deliveries under way (memberships must not change) */
    ps__topic_ext ext;
    ps__buf scratch;              /* one member's message, reused */
    void (*before_send)(void *u); /* optional: called once before a delivery to many members */
    void *before_send_user;
    ps_server *server; /* handed to ps_subscribe's handlers */
    int depth;         /* publishes nested in subscription handlers */
    int dispatching;   /* subscription handlers on the stack (ps_unsubscribe defers frees) */
    size_t unswept;    /* subscriptions removed while handlers ran, not yet freed */
} ps__topics;

/* Longest topic name in bytes (PS_TOPIC_MAX in pulsec.h). */
#define PS__TOPIC_MAX PS_TOPIC_MAX

void ps__topics_init(ps__topics *ts, ps__channels *channels);
/* Frees the table. Every channel must have closed (and so left) before. */
void ps__topics_free(ps__topics *ts);
void ps__topics_set_ext(ps__topics *ts, const ps__topic_ext *ext);

/* A valid topic name: 1..PS_TOPIC_MAX bytes of UTF-8 (pure). */
bool ps__topic_valid(const char *name, size_t len);

/*
 * Publishes to the members in this process, skipping `except` (may be NULL), then hands the
 * publish to ext.on_publish. 0, PS_EINVAL (topic or event invalid).
 */
int ps__topics_publish(ps__topics *ts, const char *topic, const char *event, json_t *payload,
                       ps_channel *except);

/*
 * Delivers a publish that another process made: topic, event and payload as received. With
 * `untrusted` (Redis), the event must be valid UTF-8 and the payload one valid JSON value, or the
 * message is refused. Returns the members it reached (>= 0), or -1 when refused.
 */
long ps__topics_deliver(ps__topics *ts, const char *topic, size_t tlen, const char *event,
                        size_t elen, const char *payload, size_t plen, bool untrusted);

/* ps_subscribe (server.c passes its table). */
ps_subscription *ps__topics_subscribe(ps__topics *ts, const char *topic, ps_topic_fn fn,
                                      void *user);

/* Calls fn for every topic with members (re-subscribing after a broker reconnect). */
void ps__topics_foreach(ps__topics *ts, void (*fn)(void *user, const char *topic, size_t len),
                        void *user);

/* Members of a topic in this process (0 when it has none; subscriptions do not count). */
size_t ps__topics_members(ps__topics *ts, const char *topic, size_t len);

#endif
