/*
 * broker: the publish codec shared by worker pipes and Redis.
 */
#include "broker.h"

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
