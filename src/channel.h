/*
 * channel: the top layer. Channels owned by views, their ids, listeners, emit, requests with
 * exactly-once completion in both directions, replies (immediate, deferred, first wins), the
 * per-message middleware stack, and the channel_message envelope of DESIGN §3.
 */
#ifndef PS_CHANNEL_H
#define PS_CHANNEL_H

#include "view.h"

/* How the server's requests to clients (ps_request) ended. */
enum {
    PS__REQ_OK,
    PS__REQ_ERROR,
    PS__REQ_TIMEOUT,
    PS__REQ_CLOSED,
    PS__REQ_CANCELLED,
    PS__REQ_OUTCOMES
};

typedef struct ps__channels {
    ps__views views;
    struct {
        ps_message_fn fn;
        void *user;
    } * message_mw;
    size_t nmessage_mw;
    uint64_t nchannels;
    uint64_t dropped;      /* channel messages dropped: bad fields, closed or unknown channel */
    uint32_t max_channels; /* open channels per session; 0 = no bound */
    uint32_t max_pending;  /* requests in flight per channel and direction; 0 = no bound */
    /* GET /metrics: NULL when not measured (then no clock is read per request). */
    ps__histogram *request_seconds;             /* client requests, arrival to answer sent */
    ps__histogram *server_request_seconds;      /* ps_request, sent to answered (ok or error) */
    uint64_t server_requests[PS__REQ_OUTCOMES]; /* ps_request completions by outcome */
    /* The layer beside channels (topics): told when a channel with ext data closes. */
    void (*on_channel_close)(ps_channel *ch, void *user);
    void *ext_user;
    ps__buf out;           /* the envelope being sent, reused from message to message */
    ps__json_span checked; /* the payload text a raw handler runs with (valid JSON) */
} ps__channels;

void ps__channels_init(ps__channels *cs, ps__sessions *sessions);
void ps__channels_free(ps__channels *cs);
int ps__channels_use_message(ps__channels *cs, ps_message_fn fn, void *user);

/* Per-channel slot for the layer beside channels; on_channel_close runs while it is set. */
void *ps__channel_ext_data(const ps_channel *ch);
void ps__channel_set_ext_data(ps_channel *ch, void *data);
ps__channels *ps__channel_layer(const ps_channel *ch);
/*
 * Sends an event whose envelope tail was written once for many channels (a topic publish):
 * `tail` is ",\"event\":E,\"payload\":P}", the head with this channel's id goes in front,
 * built in `scratch`. Returns 0 or PS_ECLOSED.
 */
int ps__channel_send_tail(ps_channel *ch, ps__buf *scratch, const char *tail, size_t len);

/*
 * Envelope decoding (pure). Fills `out` from a channel_message object; returns 0, or -1 with
 * *err set when a field is missing or of the wrong type. Pointers borrow from msg.
 */
typedef struct ps__envelope {
    const char *channel;
    const char *event;       /* NULL for a response */
    const char *request_id;  /* with event: a request */
    const char *response_to; /* a response to one of our requests */
    const char *error;       /* with response_to: an error response */
    json_t *payload;         /* borrowed; JSON null when absent */
} ps__envelope;
int ps__envelope_decode(json_t *msg, ps__envelope *out, const char **err);
/*
 * The same, from the n scanned members of the object (ps__json_index spans, key then value,
 * and their escape bits `esc`),
 * without a tree, for the plainly valid envelope: 0 with `out` (its strings copied into `bufs`,
 * error NULL) and the payload's span ("null" when absent), or -1 when ps__envelope_decode must
 * decide: a field missing or of the wrong kind, an error text, or a key written with escapes.
 */
typedef struct ps__envelope_bufs {
    char channel[PS__MAX_CLIENT_ID + 1];
    char event[PS__MAX_CLIENT_ID + 1];
    char request_id[PS__MAX_CLIENT_ID + 1];
    char response_to[PS__MAX_CLIENT_ID + 1];
} ps__envelope_bufs;
int ps__envelope_scan(const ps__json_span *members, size_t n, uint64_t esc, ps__envelope *out,
                      ps__envelope_bufs *bufs, ps__json_span *payload);

#endif
