/*
 * view: routes, attach/detach and props (DESIGN §3 view messages, §4.2). Decodes every
 * "message" envelope of the main namespace, answers attach/detach itself, and hands
 * channel_message envelopes to the channel layer above through ps__view_ext. Owns the views of
 * each session and their lifecycle: dispose exactly once, then the channel layer closes the
 * view's channels, then the app's data destructor, then the memory.
 */
#ifndef PS_VIEW_H
#define PS_VIEW_H

#include "session.h"

typedef struct ps__views ps__views;

/* The channel layer's hooks into views. */
typedef struct ps__view_ext {
    /* A decoded channel_message envelope (object, borrowed) from session s. */
    void (*on_channel_message)(ps_session *s, json_t *msg, void *user);
    /* After dispose: close every channel of the view (the session may be closed already). */
    void (*on_view_closed)(ps_view *v, void *user);
    /* Free the channels' memory; the view itself is freed next. */
    void (*on_view_free)(ps_view *v, void *user);
    /* The session is gone (all its views freed already): free per-session channel state. */
    void (*on_session_free)(ps_session *s, void *user);
    void *user;
    /* Optional: a channel_message envelope scanned but not built: `msg` is its text, `members`
     * its n spans (key, value, ...) and their escape bits (see ps__json_index). */
    void (*on_channel_message_raw)(ps_session *s, ps__json_span msg, const ps__json_span *members,
                                   size_t n, uint64_t esc, void *user);
    /* Recovery, optional: the session resumed / settled (ps__session_ext). */
    void (*on_session_resume)(ps_session *s, void *user);
    void (*on_session_settled)(ps_session *s, void *user);
} ps__view_ext;

typedef struct ps__route {
    char *path;
    ps_view_type type;
} ps__route;

struct ps__views {
    ps__sessions *sessions;
    ps__route *routes;
    size_t nroutes;
    ps__view_ext ext;
    uint64_t nviews;
    uint64_t dropped;   /* messages dropped: bad envelope, unknown type, unknown view */
    uint32_t max_views; /* per session; 0 = no bound */
};

void ps__views_init(ps__views *vs, ps__sessions *sessions);
void ps__views_free(ps__views *vs);
void ps__views_set_ext(ps__views *vs, const ps__view_ext *ext);
int ps__views_add_route(ps__views *vs, const char *path, const ps_view_type *type);
ps__views *ps__view_layer(const ps_view *v);
ps__views *ps__views_of_session(const ps_session *s);

/* Per-view and per-session slots for the channel layer. */
void *ps__view_ext_data(const ps_view *v);
void ps__view_set_ext_data(ps_view *v, void *data);
void *ps__views_session_data(const ps_session *s);
void ps__views_set_session_data(ps_session *s, void *data);

/* True from the start of dispose on: no new requests or channels. */
bool ps__view_closing(const ps_view *v);
/* Keeps a view's memory across app callbacks that may dispose it. */
void ps__view_ref(ps_view *v);
void ps__view_unref(ps_view *v);

/* Longest attachId, path or client-made id accepted. */
#define PS__MAX_CLIENT_ID 256
/* msg[key] when it is a string a client may use as an id or path: non-empty, at most
 * PS__MAX_CLIENT_ID bytes, no NUL; otherwise NULL. */
const char *ps__client_string(json_t *msg, const char *key);

#endif
