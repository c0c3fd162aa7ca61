/*
 * broker: topics beyond one process (DESIGN §5), beside the topic layer. The message codec
 * (pure) that carries a publish between the workers of a node (worker pipes) and between nodes
 * (Redis pub/sub) is here; so is the Redis broker.
 *
 * A message is binary, big-endian, self-delimited only by its container:
 *
 *   0  "PSB"        magic
 *   3  u8 version   PS__BMSG_VERSION; any other is refused ("unknown version")
 *   4  u8 flags     bit 0: the payload holds binary values ({"$binary": ...})
 *   5  u8 worker    the publishing worker's index (0 in a single process)
 *   6  16 bytes     the publishing node's id (random per ps_server_listen)
 *  22  u64 seq      per publisher, from 1: order and gaps can be read off it
 *  30  u16 topic length, 32 u16 event length, 34 u32 payload length
 *  38  topic, event, then the payload's JSON text; nothing after it
 *
 * Every length is explicit, so a message cut anywhere (payload included) or with bytes after
 * its end is refused, whatever its container did to it.
 */
#ifndef PS_BROKER_H
#define PS_BROKER_H

#include "topic.h"

#define PS__BMSG_VERSION 1
#define PS__BMSG_HEAD 38
#define PS__BMSG_BINARY 1u
#define PS__NODE_ID_LEN 16

typedef struct ps__bmsg {
    uint8_t version;
    uint8_t flags;
    uint8_t worker;
    uint8_t node[PS__NODE_ID_LEN];
    uint64_t seq;
    const char *topic;
    size_t topic_len;
    const char *event;
    size_t event_len;
    const char *payload;
    size_t payload_len;
} ps__bmsg;

/* Appends the encoding of m (its version field is ignored: PS__BMSG_VERSION is written). */
void ps__bmsg_encode(ps__buf *out, const ps__bmsg *m);
/*
 * Decodes one message of `len` bytes; pointers in m borrow from data. Refuses (-1, *err set to
 * a static reason) anything longer than max_len ("oversized"), shorter than its header or its
 * own lengths ("truncated"), longer than them ("trailing bytes"), with another magic ("not a
 * pulsec message") or version ("unknown version"), an invalid topic or event name, or an empty
 * payload. The payload is not parsed
 * here (ps__topics_deliver checks it where it matters).
 */
int ps__bmsg_decode(const char *data, size_t len, size_t max_len, ps__bmsg *m, const char **err);

/* ---- Redis ----------------------------------------------------------------------------- */

/*
 * Where Redis is: redis://[[user]:password@]host[:port][/db] (host a name, an IPv4 address or
 * an [IPv6] one; port 6379, db 0 by default) or unix:///path/to/redis.sock[?db=N&password=P]
 * (also redis+unix://). Percent-escapes are decoded in user, password and path. Pub/sub in
 * Redis ignores the database: db selects where the app's commands (ps_redis_command) go.
 */
typedef struct ps__redis_url {
    bool unix_socket;
    char host[256];
    int port;
    char path[108]; /* sun_path */
    int db;
    char user[64];
    char password[256];
} ps__redis_url;

/* Parses a URL (pure). 0, or -1 with *err set to a static reason. */
int ps__redis_url_parse(const char *url, ps__redis_url *out, const char **err);

typedef struct ps__broker_cfg {
    ps__redis_url url;
    const char *prefix;  /* Redis channels are "<prefix>:<topic>"; NULL = "pulsec" */
    size_t max_queued;   /* bytes sent to Redis and not yet answered; beyond: refused; 8 MiB */
    uint32_t timeout_ms; /* connect, and answer to each PING, within this; 3000 */
} ps__broker_cfg;

typedef struct ps__broker_cbs {
    /* A message on one of our topics' channels (prefix removed): not yet decoded or checked. */
    void (*on_message)(void *user, const char *topic, size_t tlen, const char *data, size_t len);
    void (*on_up)(void *user);   /* optional: connected, and every topic subscribed again */
    void (*on_down)(void *user); /* optional: was up, is not any more */
} ps__broker_cbs;

typedef struct ps__broker_stats {
    uint64_t published;    /* PUBLISH commands sent */
    uint64_t dropped_down; /* publishes refused while not connected */
    uint64_t dropped_full; /* publishes refused because max_queued were unanswered */
    uint64_t unconfirmed;  /* PUBLISH sent but the connection broke before Redis answered */
    uint64_t received;     /* messages on our channels */
    uint64_t invalid;      /* messages on channels that are not ours, or not strings */
    uint64_t ups;          /* times the broker came up */
    uint64_t reconnects;   /* of those, after having been up before */
} ps__broker_stats;

typedef struct ps__broker ps__broker;
struct redisReply;
/* An app command's answer: 0 + the reply (borrowed), or PS_ECLOSED + NULL (connection lost). */
typedef void (*ps__broker_reply_cb)(void *user, int status, const struct redisReply *reply);

/*
 * Starts connecting (and keeps doing so with a backoff while Redis is away). `topics` is read
 * to subscribe again every topic with members after each (re)connect.
 */
ps__broker *ps__broker_new(uv_loop_t *loop, const ps__broker_cfg *cfg, const ps__broker_cbs *cbs,
                           void *user, ps__topics *topics);
/* A topic got its first / lost its last member here. */
void ps__broker_subscribe(ps__broker *b, const char *topic, size_t len);
void ps__broker_unsubscribe(ps__broker *b, const char *topic, size_t len);
/* PUBLISH `msg` (an encoded ps__bmsg) on the topic's channel: 0, or PS_ECLOSED (not connected)
 * / PS_ELIMIT (max_queued unanswered): the publish is dropped, and counted, either way. */
int ps__broker_publish(ps__broker *b, const char *topic, size_t tlen, const char *msg, size_t len);
/* One command on the publishing connection; cb exactly once unless this returns non-zero
 * (PS_ECLOSED while down, PS_ELIMIT when max_queued are unanswered). */
int ps__broker_command(ps__broker *b, int argc, const char **argv, const size_t *lens,
                       ps__broker_reply_cb cb, void *user);
bool ps__broker_up(const ps__broker *b);
const ps__broker_stats *ps__broker_get_stats(const ps__broker *b);
/*
 * Disconnects and frees, on the loop. With grace_ms, a broker that is up first writes what was
 * sent and waits for its answers (grace_ms at most); then, or at once without, pending commands
 * complete with PS_ECLOSED.
 */
void ps__broker_close(ps__broker *b, uint32_t grace_ms);

#endif
