/*
 * fuzz_envelope: the channel_message envelope of DESIGN §3 (ps__envelope_decode) and binary
 * values ({"$binary": base64}: ps_is_binary, ps_binary_data, ps_binary) on JSON a client could
 * send. The input is parsed as the Socket.IO decoder does (ps__json_parse: any value, NULs in
 * strings allowed); what fails to parse is done.
 *
 * Checks: a decoded envelope has a non-empty channel, exactly one of event and responseTo,
 * non-empty strings where present, a payload (JSON null when absent), and every pointer it holds
 * is borrowed from the message itself. Every binary value in the document decodes, and its
 * bytes make a binary value that decodes to the same bytes. Every string, written by
 * ps__json_escape, reads back as itself.
 *
 * Differential: the hot path's tree-less decoder (ps__envelope_scan over ps__json_scan's spans)
 * against ps__envelope_decode on the tree. When the scanner decodes an envelope, the tree
 * decodes the same one: the same strings, no error, and a payload span that parses to the
 * tree's payload. When it declines, the tree refuses the envelope, or it carries an error, or
 * one of its keys is written with escapes (all decided by the tree path in the server).
 */
#include "harness.h"
#include "channel.h"

/* A field of the envelope is the message's own string, or absent. */
static void check_field(json_t *msg, const char *key, const char *field)
{
    json_t *v = json_object_get(msg, key);
    if (!field) {
        FZ_CHECK(!json_is_string(v) || strcmp(key, "error") == 0);
        return;
    }
    FZ_CHECK(json_is_string(v) && json_string_value(v) == field);
    FZ_CHECK(strcmp(key, "error") == 0 || field[0] != '\0');
}

static void check_envelope(json_t *msg)
{
    ps__envelope env;
    const char *err = NULL;
    if (ps__envelope_decode(msg, &env, &err) != 0) {
        FZ_CHECK(err != NULL && err[0] != '\0');
        return;
    }
    FZ_CHECK(json_is_object(msg));
    FZ_CHECK(env.channel != NULL);
    FZ_CHECK((env.event == NULL) != (env.response_to == NULL));
    check_field(msg, "channel", env.channel);
    check_field(msg, "event", env.event);
    check_field(msg, "requestId", env.request_id);
    check_field(msg, "responseTo", env.response_to);
    if (env.error)
        check_field(msg, "error", env.error);
    FZ_CHECK(env.payload != NULL);
    json_t *payload = json_object_get(msg, "payload");
    FZ_CHECK(payload ? env.payload == payload : json_is_null(env.payload));
}

static void check_binary(const json_t *v)
{
    size_t len = 0;
    void *bytes = ps_binary_data(v, &len);
    if (!ps_is_binary(v)) {
        FZ_CHECK(bytes == NULL);
        return;
    }
    if (!bytes)
        return; /* not valid base64 */
    json_t *again = ps_binary(bytes, len);
    FZ_CHECK(ps_is_binary(again));
    size_t len2 = 0;
    void *bytes2 = ps_binary_data(again, &len2);
    FZ_CHECK(bytes2 && len2 == len && memcmp(bytes, bytes2, len) == 0);
    json_decref(again);
    free(bytes2);
    free(bytes);
}

/* ps__json_escape (the channel envelopes' text path) must write a literal that reads back as s. */
static void check_escape(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) != json_string_length(v))
        return; /* a C string ends at its first NUL */
    ps__buf b;
    ps__buf_init(&b);
    ps__json_escape(&b, s);
    json_error_t jerr;
    json_t *back = json_loadb(b.base, b.len, JSON_DECODE_ANY, &jerr);
    if (!back || !json_equal(back, v)) {
        fprintf(stderr, "ps__json_escape wrote %.*s (%s)\n", (int)b.len, b.base, jerr.text);
        abort();
    }
    json_decref(back);
    ps__buf_free(&b);
}

/* Every value of the document, depth-first. */
static void walk(json_t *v, int depth)
{
    check_binary(v);
    check_escape(v);
    if (depth > 64)
        return;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            walk(json_array_get(v, i), depth + 1);
    } else if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val)
        {
            check_envelope(val); /* envelopes nested anywhere, as in a batch */
            walk(val, depth + 1);
        }
    }
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_scan(const char *text, size_t len, json_t *msg)
{
    /* As the hot path sees it: the second element of the event array ["message", {...}]. */
    ps__buf packet;
    ps__buf_init(&packet);
    ps__buf_appends(&packet, "[0,");
    ps__buf_append(&packet, text, len);
    ps__buf_appendc(&packet, ']');
    ps__json_index ix = {.sub_of = 1};
    FZ_CHECK(ps__json_scan(packet.base, packet.len, &ix) == 0); /* the parser took it */
    if (ix.sub != '{' || ix.nsub > PS__JSON_INDEX_SUB) {
        ps__buf_free(&packet);
        return; /* the hot path needs an object whose members were all recorded */
    }
    ps__envelope fast, tree;
    ps__envelope_bufs bufs;
    ps__json_span payload;
    const char *err = NULL;
    int frc = ps__envelope_scan(ix.subs, ix.nsub, ix.sub_esc, &fast, &bufs, &payload);
    int trc = ps__envelope_decode(msg, &tree, &err);
    if (frc != 0) {
        /* Declined: the tree refuses it, or it has an error text, or a key with escapes. */
        FZ_CHECK(trc != 0 || tree.error != NULL || ix.sub_esc != 0);
        ps__buf_free(&packet);
        return;
    }
    FZ_CHECK(trc == 0 && tree.error == NULL);
    FZ_CHECK(same_str(fast.channel, tree.channel) && same_str(fast.event, tree.event) &&
             same_str(fast.request_id, tree.request_id) &&
             same_str(fast.response_to, tree.response_to));
    json_t *p = ps__json_parse(payload.p, payload.len);
    FZ_CHECK(p && json_equal(p, tree.payload));
    json_decref(p);
    ps__buf_free(&packet);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ps__log_set_level(-1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *msg = ps__json_parse((const char *)data, size);
    if (!msg)
        return 0;
    check_envelope(msg);
    check_scan((const char *)data, size, msg);
    walk(msg, 0);
    json_decref(msg);
    return 0;
}
