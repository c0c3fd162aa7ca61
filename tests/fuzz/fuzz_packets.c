/*
 * fuzz_packets: the pure codecs below the session layers, on bytes as a client sends them.
 *
 *   - The input as a polling payload (ps__eio_decode_payload): every text packet that is an
 *     Engine.IO message ('4') goes on to ps__sio_decode, binary ones were base64 (checked
 *     against ps__base64_encode).
 *   - The input as one Socket.IO packet (ps__sio_decode). What decodes is encoded again
 *     (ps__sio_encode_binary, the encoder of every packet the server sends) and must decode to
 *     the same packet, and encoding that must give the same bytes: the encoder's output is
 *     canonical.
 *   - The input as base64 (ps__base64_decode): what decodes re-encodes to text that decodes to
 *     the same bytes.
 *   - The input as text for ps__utf8_valid, compared with a plain RFC 3629 validator, and for
 *     ps__url_decode, compared with a plain decoder.
 */
#include "harness.h"
#include "socketio.h"

/* ---- Socket.IO round trip -------------------------------------------------------------- */

static void sio_round_trip(const char *s, size_t len)
{
    ps__sio_packet p;
    const char *err = NULL;
    if (ps__sio_decode(s, len, &p, &err) != 0) {
        FZ_CHECK(err != NULL);
        FZ_CHECK(p.data == NULL); /* nothing for the caller to clear */
        return;
    }
    FZ_CHECK(p.type >= PS__SIO_CONNECT && p.type <= PS__SIO_BINARY_ACK);
    FZ_CHECK(p.nsp[0] == '/' && strlen(p.nsp) < PS__SIO_MAX_NSP && !strchr(p.nsp, ','));
    FZ_CHECK(p.id >= -1 && p.id < (INT64_C(1) << 53));
    bool binary = p.type == PS__SIO_BINARY_EVENT || p.type == PS__SIO_BINARY_ACK;
    FZ_CHECK(binary ? p.attachments >= 1 && p.attachments <= PS__SIO_MAX_ATTACHMENTS
                    : p.attachments == 0);
    if (p.type == PS__SIO_EVENT || p.type == PS__SIO_BINARY_EVENT) {
        FZ_CHECK(json_is_array(p.data) && json_array_size(p.data) > 0);
        json_t *name = json_array_get(p.data, 0);
        if (json_is_string(name))
            FZ_CHECK(!ps__sio_reserved_event(json_string_value(name)));
    }

    ps__buf out;
    ps__buf_init(&out);
    ps__sio_encode_binary(&out, p.type, p.attachments, p.nsp, p.id, p.data);
    FZ_CHECK(out.len >= 2 && out.base[0] == '4');

    ps__sio_packet q;
    err = NULL;
    if (ps__sio_decode(out.base + 1, out.len - 1, &q, &err) != 0) {
        fprintf(stderr, "re-encoded packet does not decode (%s): %.*s\n", err, (int)out.len,
                out.base);
        abort();
    }
    FZ_CHECK(q.type == p.type);
    FZ_CHECK(q.attachments == p.attachments);
    FZ_CHECK(strcmp(q.nsp, p.nsp) == 0);
    FZ_CHECK(q.id == p.id);
    FZ_CHECK((q.data == NULL) == (p.data == NULL));
    FZ_CHECK(!p.data || json_equal(p.data, q.data));

    ps__buf again;
    ps__buf_init(&again);
    ps__sio_encode_binary(&again, q.type, q.attachments, q.nsp, q.id, q.data);
    FZ_CHECK(again.len == out.len && memcmp(again.base, out.base, out.len) == 0);

    ps__buf_free(&again);
    ps__buf_free(&out);
    ps__sio_packet_clear(&q);
    ps__sio_packet_clear(&p);
}

/* ---- base64 ---------------------------------------------------------------------------- */

static void base64_round_trip(const char *s, size_t len)
{
    ps__buf bin;
    ps__buf_init(&bin);
    long n = ps__base64_decode(s, len, &bin);
    if (n < 0) {
        ps__buf_free(&bin);
        return;
    }
    FZ_CHECK((size_t)n == bin.len);
    FZ_CHECK(len % 4 == 0 && (size_t)n <= len / 4 * 3 && (size_t)n + 2 >= len / 4 * 3);
    char *text = malloc(4 * ((bin.len + 2) / 3) + 1);
    FZ_CHECK(text);
    size_t tlen = ps__base64_encode((const uint8_t *)bin.base, bin.len, text);
    FZ_CHECK(tlen == len);
    ps__buf back;
    ps__buf_init(&back);
    FZ_CHECK(ps__base64_decode(text, tlen, &back) == n);
    FZ_CHECK(n == 0 || memcmp(back.base, bin.base, bin.len) == 0);
    ps__buf_free(&back);
    free(text);
    ps__buf_free(&bin);
}

/* ---- Engine.IO payloads ---------------------------------------------------------------- */

static int on_payload_packet(void *user, bool binary, const char *data, size_t len)
{
    unsigned *count = user;
    (*count)++;
    FZ_CHECK(data != NULL);
    if (binary)
        return 0;
    FZ_CHECK(len > 0 && !memchr(data, '\x1e', len));
    if (data[0] == PS__EIO_MESSAGE)
        sio_round_trip(data + 1, len - 1);
    /* A callback's non-zero answer stops the walk and is returned as is. */
    return data[0] == PS__EIO_CLOSE ? 7 : 0;
}

static void payload(const char *s, size_t len)
{
    unsigned count = 0;
    int rc = ps__eio_decode_payload(s, len, on_payload_packet, &count);
    FZ_CHECK(rc == 0 || rc == -1 || rc == 7);
    if (rc == 0) {
        /* One packet per separator, plus one. */
        unsigned seps = 0;
        for (size_t i = 0; i < len; i++)
            seps += s[i] == '\x1e';
        FZ_CHECK(count == seps + 1);
    }
}

/* ---- text helpers, against plain reference versions ----------------------------------- */

/* RFC 3629 §4 table, byte by byte. */
static bool utf8_reference(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c <= 0x7F) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c == 0xE0) {
            n = 2, lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            n = 2;
        } else if (c == 0xED) {
            n = 2, hi = 0x9F;
        } else if (c == 0xF0) {
            n = 3, lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            n = 3;
        } else if (c == 0xF4) {
            n = 3, hi = 0x8F;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return false;
        i += n + 1;
    }
    return true;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void url_decode_check(const char *s, size_t len, bool plus)
{
    char *a = malloc(len + 1), *b = malloc(len + 1);
    FZ_CHECK(a && b);
    memcpy(a, s, len);
    long n = ps__url_decode(a, len, plus);
    size_t o = 0;
    bool ok = true;
    for (size_t i = 0; i < len && ok; i++) {
        if (s[i] == '%') {
            if (i + 2 < len && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
                b[o++] = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
                i += 2;
            } else {
                ok = false;
            }
        } else {
            b[o++] = plus && s[i] == '+' ? ' ' : s[i];
        }
    }
    FZ_CHECK(ok ? n == (long)o : n == -1);
    if (ok)
        FZ_CHECK(memcmp(a, b, o) == 0 && (o == len || a[o] == '\0'));
    free(a);
    free(b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ps__log_set_level(-1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Each decoder gets its own exact-size copy, so that reading past the end is caught. */
    char *s = malloc(size ? size : 1);
    FZ_CHECK(s);
    memcpy(s, data, size);
    payload(s, size);
    sio_round_trip(s, size);
    base64_round_trip(s, size);
    FZ_CHECK(ps__utf8_valid((const uint8_t *)s, size) == utf8_reference(data, size));
    url_decode_check(s, size, false);
    url_decode_check(s, size, true);
    free(s);
    return 0;
}
