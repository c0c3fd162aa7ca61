/*
 * view: one ps_view per attach. A session's views hang off its session slot in attach order.
 * A view is referenced by its session's list and by every dispatch in progress, so that an app
 * may end a session or a view from inside any callback: closing runs at once (dispose, channels,
 * data destructor), freeing waits for the last reference.
 */
#include "view.h"

#include <stdio.h>

enum { VIEW_INIT, VIEW_ATTACHED, VIEW_CLOSING, VIEW_CLOSED };

struct ps_view {
    ps__views *layer;
    ps_session *session;
    ps__route *route;
    char *attach_id;
    /* The props as JSON text (NULL: null): a jansson tree of even one member costs about 300
     * bytes, held by every idle view, while the text is sent again only after a recovered
     * reconnect. props_cache is the tree ps_view_props() decoded, kept once asked for. */
    char *props_text;
    json_t *props_cache;
    void *data;
    void (*free_data)(void *);
    void *ext_data;
    char *reject_error;
    ps__list link; /* in the session's views while not closed */
    int refs;
    int state;
    bool in_init;  /* inside the route's init callback */
    bool deferred; /* init returned without an answer: ps_view_accept/reject will give it */
};

typedef struct sess_views {
    ps__list views;
    size_t nviews;
    void *channel_data;
    bool resuming; /* resumed and not settled: an attach seen before may come again */
} sess_views;

/* ---- helpers --------------------------------------------------------------------------- */

static sess_views *session_views(ps_session *s, bool create)
{
    sess_views *sv = ps__session_ext_data(s);
    if (!sv && create) {
        sv = ps__calloc(1, sizeof *sv);
        ps__list_init(&sv->views);
        ps__session_set_ext_data(s, sv);
    }
    return sv;
}

static void send_view_message(ps_view *v, const char *type, const char *key, json_t *value)
{
    json_t *msg = json_pack("{s:s,s:s,s:O}", "type", type, "attachId", v->attach_id, key,
                            value ? value : json_null());
    ps__session_send_message(v->session, msg);
    json_decref(msg);
}

/* The props as a tree for one message: the cache, or decoded for it (release it after). */
static json_t *props_tree(const ps_view *v)
{
    if (v->props_cache)
        return json_incref(v->props_cache);
    return v->props_text ? ps__json_parse(v->props_text, strlen(v->props_text)) : json_null();
}

static void send_props(ps_view *v, const char *type)
{
    json_t *props = props_tree(v);
    send_view_message(v, type, "props", props);
    json_decref(props);
}

static void send_attach_error(ps_session *s, const char *attach_id, const char *error)
{
    json_t *msg =
        json_pack("{s:s,s:s,s:s}", "type", "attach_error", "attachId", attach_id, "error", error);
    ps__session_send_message(s, msg);
    json_decref(msg);
}

const char *ps__client_string(json_t *msg, const char *key)
{
    json_t *v = json_object_get(msg, key);
    const char *s = json_string_value(v);
    if (!s || json_string_length(v) == 0 || json_string_length(v) > PS__MAX_CLIENT_ID ||
        strlen(s) != json_string_length(v))
        return NULL;
    return s;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

void ps__view_ref(ps_view *v)
{
    v->refs++;
}

void ps__view_unref(ps_view *v)
{
    if (--v->refs > 0)
        return;
    if (v->layer->ext.on_view_free)
        v->layer->ext.on_view_free(v, v->layer->ext.user);
    json_decref(v->props_cache);
    ps__free(v->props_text);
    ps__free(v->attach_id);
    ps__free(v->reject_error);
    ps__free(v);
}

static void view_close(ps_view *v, bool run_dispose)
{
    if (v->state >= VIEW_CLOSING)
        return;
    bool was_attached = v->state == VIEW_ATTACHED;
    v->state = VIEW_CLOSING;
    ps__view_ref(v);
    if (run_dispose && was_attached && v->route->type.dispose)
        v->route->type.dispose(v, v->route->type.user);
    if (v->layer->ext.on_view_closed)
        v->layer->ext.on_view_closed(v, v->layer->ext.user);
    v->state = VIEW_CLOSED;
    ps__list_remove(&v->link);
    v->layer->nviews--;
    ((sess_views *)ps__session_ext_data(v->session))->nviews--;
    if (v->free_data) {
        void (*fn)(void *) = v->free_data;
        v->free_data = NULL;
        fn(v->data);
    }
    v->data = NULL;
    ps__view_unref(v); /* the session list's */
    ps__view_unref(v);
}

static ps_view *find_view(sess_views *sv, const char *attach_id)
{
    ps__list *pos;
    if (!sv)
        return NULL;
    ps__list_foreach(pos, &sv->views)
    {
        ps_view *v = PS__CONTAINER_OF(pos, ps_view, link);
        if (strcmp(v->attach_id, attach_id) == 0)
            return v;
    }
    return NULL;
}

static ps__route *find_route(ps__views *vs, const char *path)
{
    for (size_t i = 0; i < vs->nroutes; i++)
        if (strcmp(vs->routes[i].path, path) == 0)
            return &vs->routes[i];
    return NULL;
}

static void on_attach(ps__views *vs, ps_session *s, json_t *msg)
{
    const char *aid = ps__client_string(msg, "attachId");
    if (!aid) {
        vs->dropped++;
        return;
    }
    const char *path = ps__client_string(msg, "path");
    if (!path) {
        send_attach_error(s, aid, "Invalid attach: path must be a non-empty string");
        return;
    }
    ps__route *route = find_route(vs, path);
    if (!route) {
        char err[PS__MAX_CLIENT_ID + 32];
        snprintf(err, sizeof err, "Unknown path: %s", path);
        send_attach_error(s, aid, err);
        return;
    }
    sess_views *sv = session_views(s, true);
    ps_view *known = find_view(sv, aid);
    if (known && sv->resuming && known->route == route) {
        /* After a recovered reconnect the client sends again an attach it had no answer to:
         * answered once, now if it was, later (the deferred answer) if not. */
        if (known->state == VIEW_ATTACHED)
            send_props(known, "attach_ack");
        return;
    }
    if (known) {
        send_attach_error(s, aid, "Duplicate attachId");
        return;
    }
    if (vs->max_views && sv->nviews >= vs->max_views) {
        send_attach_error(s, aid, "Too many views");
        return;
    }
    ps_view *v = ps__calloc(1, sizeof *v);
    v->layer = vs;
    v->session = s;
    v->route = route;
    v->attach_id = ps__strdup(aid);
    v->refs = 1;
    v->state = VIEW_INIT;
    ps__list_insert_tail(&sv->views, &v->link);
    sv->nviews++;
    vs->nviews++;

    json_t *props = json_object_get(msg, "props");
    ps__view_ref(v);
    v->in_init = true;
    int rc =
        route->type.init ? route->type.init(v, props ? props : json_null(), route->type.user) : 0;
    v->in_init = false;
    if (v->state == VIEW_INIT) {
        if (rc != 0) {
            v->deferred = false;
            send_attach_error(s, aid, v->reject_error ? v->reject_error : "Attach refused");
            view_close(v, false);
        } else if (!v->deferred) {
            v->state = VIEW_ATTACHED;
            send_props(v, "attach_ack");
        }
    }
    ps__view_unref(v);
}

static void on_detach(ps__views *vs, ps_session *s, json_t *msg)
{
    const char *aid = ps__client_string(msg, "attachId");
    ps_view *v = aid ? find_view(session_views(s, false), aid) : NULL;
    if (!v) {
        vs->dropped++;
        return;
    }
    view_close(v, true);
}

static void views_on_message(ps_session *s, json_t *packet, int64_t ack_id, void *user)
{
    ps__views *vs = user;
    if (ack_id >= 0)
        ps__session_send_ack(s, ack_id, NULL); /* the envelope protocol has its own replies */
    json_t *msg = json_array_get(packet, 1);
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (json_array_size(packet) != 2 || !json_is_object(msg) || !type) {
        vs->dropped++;
        return;
    }
    if (strcmp(type, "channel_message") == 0 && vs->ext.on_channel_message)
        vs->ext.on_channel_message(s, msg, vs->ext.user);
    else if (strcmp(type, "attach") == 0)
        on_attach(vs, s, msg);
    else if (strcmp(type, "detach") == 0)
        on_detach(vs, s, msg);
    else
        vs->dropped++;
}

/*
 * The hot path: a channel_message goes to the channel layer as spans, the envelope never built.
 * Any other shape is built and takes views_on_message, which decides it as before.
 */
static void views_on_message_raw(ps_session *s, const ps__json_index *ix, int64_t ack_id,
                                 void *user)
{
    ps__views *vs = user;
    if (ix->ntop == 2 && ix->sub == '{' && ix->nsub <= PS__JSON_INDEX_SUB &&
        vs->ext.on_channel_message_raw &&
        ps__json_span_is(ps__json_member(ix->subs, ix->nsub, ix->sub_esc, PS__STRLIT("type")),
                         PS__STRLIT("channel_message"))) {
        if (ack_id >= 0)
            ps__session_send_ack(s, ack_id, NULL);
        vs->ext.on_channel_message_raw(s, ix->top[1], ix->subs, ix->nsub, ix->sub_esc,
                                       vs->ext.user);
        return;
    }
    json_t *packet = ps__json_parse(ix->text.p, ix->text.len);
    views_on_message(s, packet, ack_id, user);
    json_decref(packet);
}

static void views_on_session_close(ps_session *s, void *user)
{
    ps__views *vs = user;
    sess_views *sv = session_views(s, false);
    if (!sv)
        return;
    /* Newest first, as a component tree unmounts children before parents. */
    while (!ps__list_empty(&sv->views))
        view_close(PS__CONTAINER_OF(sv->views.prev, ps_view, link), true);
    if (vs->ext.on_session_free)
        vs->ext.on_session_free(s, vs->ext.user);
    ps__session_set_ext_data(s, NULL);
    ps__free(sv);
}

static void views_on_session_resume(ps_session *s, void *user)
{
    ps__views *vs = user;
    session_views(s, true)->resuming = true;
    if (vs->ext.on_session_resume)
        vs->ext.on_session_resume(s, vs->ext.user);
}

static void views_on_session_settled(ps_session *s, void *user)
{
    ps__views *vs = user;
    sess_views *sv = session_views(s, false);
    if (sv)
        sv->resuming = false;
    if (vs->ext.on_session_settled)
        vs->ext.on_session_settled(s, vs->ext.user);
}

/* ---- layer ----------------------------------------------------------------------------- */

void ps__views_init(ps__views *vs, ps__sessions *sessions)
{
    memset(vs, 0, sizeof *vs);
    vs->sessions = sessions;
}

void ps__views_free(ps__views *vs)
{
    for (size_t i = 0; i < vs->nroutes; i++)
        ps__free(vs->routes[i].path);
    ps__free(vs->routes);
}

void ps__views_set_ext(ps__views *vs, const ps__view_ext *ext)
{
    vs->ext = *ext;
}

int ps__views_add_route(ps__views *vs, const char *path, const ps_view_type *type)
{
    if (!path || path[0] == '\0' || strlen(path) > PS__MAX_CLIENT_ID || !type)
        return PS_EINVAL;
    if (find_route(vs, path))
        return PS_EEXIST;
    /* Routes are registered before serving; the session layer starts routing "message" to us
     * with the first one, which leaves the raw event free for apps without views. */
    if (vs->nroutes == 0) {
        ps__session_ext ext = {
            .on_message = views_on_message,
            .on_session_close = views_on_session_close,
            .user = vs,
            .on_message_raw = views_on_message_raw,
            .on_session_resume = views_on_session_resume,
            .on_session_settled = views_on_session_settled,
        };
        ps__sessions_set_ext(vs->sessions, &ext);
    }
    vs->routes = ps__realloc(vs->routes, (vs->nroutes + 1) * sizeof *vs->routes);
    vs->routes[vs->nroutes].path = ps__strdup(path);
    vs->routes[vs->nroutes].type = *type;
    vs->nroutes++;
    return 0;
}

ps__views *ps__view_layer(const ps_view *v)
{
    return v->layer;
}

/* The views layer registered itself as the sessions' extension with its first route. */
ps__views *ps__views_of_session(const ps_session *s)
{
    return ps__session_layer(s)->ext.user;
}

void *ps__view_ext_data(const ps_view *v)
{
    return v->ext_data;
}

void ps__view_set_ext_data(ps_view *v, void *data)
{
    v->ext_data = data;
}

void *ps__views_session_data(const ps_session *s)
{
    sess_views *sv = ps__session_ext_data(s);
    return sv ? sv->channel_data : NULL;
}

void ps__views_set_session_data(ps_session *s, void *data)
{
    session_views(s, true)->channel_data = data;
}

bool ps__view_closing(const ps_view *v)
{
    return v->state >= VIEW_CLOSING;
}

/* ---- public ---------------------------------------------------------------------------- */

int ps_view_reject(ps_view *v, const char *error)
{
    if (v->state >= VIEW_CLOSING)
        return PS_ECLOSED;
    ps__free(v->reject_error);
    v->reject_error = ps__strdup(error ? error : "Attach refused");
    if (v->deferred && !v->in_init) {
        v->deferred = false;
        send_attach_error(v->session, v->attach_id, v->reject_error);
        view_close(v, false);
    }
    return PS_EDENIED;
}

int ps_view_defer(ps_view *v)
{
    if (!v->in_init || v->state != VIEW_INIT)
        return PS_EINVAL;
    v->deferred = true;
    return 0;
}

int ps_view_accept(ps_view *v)
{
    if (v->state >= VIEW_CLOSING)
        return PS_ECLOSED;
    if (!v->deferred || v->in_init)
        return PS_EINVAL;
    v->deferred = false;
    v->state = VIEW_ATTACHED;
    send_props(v, "attach_ack");
    return 0;
}

int ps_view_set_props(ps_view *v, json_t *props)
{
    if (v->state >= VIEW_CLOSING)
        return PS_ECLOSED;
    char *text = NULL;
    if (props && !json_is_null(props)) {
        ps__buf b;
        ps__buf_init(&b);
        ps__json_append(&b, props);
        text = ps__strndup(b.base, b.len);
        ps__buf_free(&b);
    }
    ps__free(v->props_text);
    v->props_text = text;
    json_decref(v->props_cache);
    v->props_cache = NULL;
    if (v->state == VIEW_ATTACHED)
        send_view_message(v, "view_props", "props", props ? props : json_null());
    return 0;
}

json_t *ps_view_props(const ps_view *v)
{
    ps_view *m = (ps_view *)v;
    if (!m->props_cache)
        m->props_cache = props_tree(v);
    return m->props_cache;
}

const char *ps_view_path(const ps_view *v)
{
    return v->route->path;
}

ps_session *ps_view_session(const ps_view *v)
{
    return v->session;
}

bool ps_view_closed(const ps_view *v)
{
    return v->state >= VIEW_CLOSING;
}

int ps_view_close(ps_view *v)
{
    if (v->state >= VIEW_CLOSING)
        return PS_ECLOSED;
    view_close(v, true);
    return 0;
}

void ps_view_set_data(ps_view *v, void *data, void (*free_fn)(void *))
{
    v->data = data;
    v->free_data = free_fn;
}

void *ps_view_data(const ps_view *v)
{
    return v->data;
}
