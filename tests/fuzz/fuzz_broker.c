/*
 * fuzz_broker: what arrives from Redis (and other workers) before anything reaches a client:
 * ps__bmsg_decode on any bytes, and ps__redis_url_parse on the same bytes as a URL.
 *
 * Checks: a decoded message's pointers lie inside the input, in order, and its lengths add up
 * to the input's exactly; its topic and event are valid names; encoding it again gives the
 * input back, byte for byte (the codec has one encoding per message). A refusal always says
 * why. A parsed URL has a host (TCP, port 1..65535) or an absolute path (unix socket), and every
 * string it fills is NUL-terminated within its field.
 */
#include "harness.h"
#include "broker.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ps__log_set_level(-1);
    return 0;
}

static void check_url(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    memcpy(url, data, size);
    url[size] = '\0';
    ps__redis_url u;
    const char *err = NULL;
    if (ps__redis_url_parse(url, &u, &err) != 0) {
        FZ_CHECK(err && err[0]);
    } else if (u.unix_socket) {
        FZ_CHECK(u.path[0] == '/' && memchr(u.path, '\0', sizeof u.path));
    } else {
        FZ_CHECK(u.host[0] && memchr(u.host, '\0', sizeof u.host));
        FZ_CHECK(u.port >= 1 && u.port <= 65535);
    }
    FZ_CHECK(memchr(u.user, '\0', sizeof u.user) && memchr(u.password, '\0', sizeof u.password));
    FZ_CHECK(u.db >= 0);
    free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A heap copy exactly the input's size, so that any read past it is reported. */
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    ps__bmsg m;
    const char *err = NULL;
    if (ps__bmsg_decode(copy, size, 1 << 20, &m, &err) != 0) {
        FZ_CHECK(err && err[0]);
    } else {
        FZ_CHECK(m.topic == copy + PS__BMSG_HEAD);
        FZ_CHECK(m.event == m.topic + m.topic_len && m.payload == m.event + m.event_len);
        FZ_CHECK(PS__BMSG_HEAD + m.topic_len + m.event_len + m.payload_len == size);
        FZ_CHECK(m.payload_len > 0 && ps__topic_valid(m.topic, m.topic_len));
        FZ_CHECK(m.event_len > 0 && ps__utf8_valid((const uint8_t *)m.event, m.event_len));
        ps__buf again;
        ps__buf_init(&again);
        ps__bmsg_encode(&again, &m);
        FZ_CHECK(again.len == size && memcmp(again.base, copy, size) == 0);
        ps__buf_free(&again);
    }
    free(copy);
    check_url(data, size);
    return 0;
}
