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

#endif
