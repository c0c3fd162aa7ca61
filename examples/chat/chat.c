/*
 * chat: the seed's chat example, multi-user. One room. Every browser tab attaches the view
 * "/chat" with {"name": ...}; the room's message list and members are the view's props, pushed to
 * every member on each change, while each member's chat widget talks over its own channel:
 *   client:send {text}   -> server:message {user,text,at} to every member
 *   (join / leave)       -> server:join / server:leave {user} to every member, props updated
 *   client:clear         -> server:confirm {question,timeoutMs} request (5 s timeout) to that
 *                           member; on {"confirm": true} the history is cleared for everyone,
 *                           otherwise server:notice says why not ("Cancelled" or "No answer
 *                           within 5 s: history kept").
 *
 * The room is shared by every process that serves it (--workers N, and every node on one Redis
 * with --redis URL): a change is never applied directly but published on the topic "chat:room",
 * and each process's subscription to it (ps_subscribe) applies it to that process's copy of the
 * room and pushes it to its own members; a single process just hears its own publishes. With
 * Redis the history (list chat:history) and the members (hash chat:members, name -> tabs) are
 * kept there as well, and a page attaching anywhere reads them, whatever its process missed.
 */
#include "../common/example.h"

#include <string.h>
#include <time.h>

#define MAX_MEMBERS 1024
#define MAX_HISTORY 200 /* the whole list travels in every props push: keep the newest */
#define CONFIRM_TIMEOUT_MS 5000
#define ROOM "chat:room"

typedef struct member {
    ps_view *view;
    ps_channel *channel;
    bool attached; /* false during init: no bridge on the client yet */
    char name[64];
} member;

static struct {
    ps_server *srv;
    json_t *messages; /* [{user, text, at}], newest last */
    json_t *counts;   /* {name: open tabs} of every process */
    member *members[MAX_MEMBERS];
    size_t nmembers; /* this process's */
} room;

static json_t *member_names(void)
{
    json_t *names = json_array();
    const char *name;
    json_t *n;
    json_object_foreach(room.counts, name, n) json_array_append_new(names, json_string(name));
    return names;
}

/* Pushes the room to this process's members, and `event` (if any) on their channels. */
static void broadcast(const char *event, json_t *payload)
{
    json_t *names = member_names();
    for (size_t i = 0; i < room.nmembers; i++) {
        member *m = room.members[i];
        json_t *props = json_pack("{s:s,s:s,s:O,s:O}", "channelId", ps_channel_id(m->channel), "me",
                                  m->name, "members", names, "messages", room.messages);
        ps_view_set_props(m->view, props);
        json_decref(props);
        if (event && m->attached)
            ps_emit(m->channel, event, payload);
    }
    json_decref(names);
}

static void count(const char *name, int delta)
{
    json_int_t n = json_integer_value(json_object_get(room.counts, name)) + delta;
    if (n > 0)
        json_object_set_new(room.counts, name, json_integer(n));
    else
        json_object_del(room.counts, name);
}

static void ignore_reply(ps_server *srv, int status, json_t *reply, void *user) {}

/* Fire and forget: without --redis (PS_EINVAL) or while Redis is down (PS_ECLOSED) the room
 * goes on in memory. */
static void redis(json_t *argv)
{
    ps_redis_command(room.srv, argv, ignore_reply, NULL);
    json_decref(argv);
}

/* The one place the room changes: every process hears every change here. */
static void on_room(ps_server *srv, const char *topic, const char *event, json_t *p, void *user)
{
    if (strcmp(event, "message") == 0) {
        json_array_append(room.messages, p);
        if (json_array_size(room.messages) > MAX_HISTORY)
            json_array_remove(room.messages, 0);
        broadcast("server:message", p);
    } else if (strcmp(event, "join") == 0 || strcmp(event, "leave") == 0) {
        const char *name = json_string_value(json_object_get(p, "user"));
        if (!name)
            return;
        count(name, event[0] == 'j' ? 1 : -1);
        broadcast(event[0] == 'j' ? "server:join" : "server:leave", p);
    } else if (strcmp(event, "cleared") == 0) {
        json_array_clear(room.messages);
        json_t *notice = json_pack("{s:s}", "text", "History cleared");
        broadcast("server:notice", notice);
        json_decref(notice);
    }
}

/* ---- Redis: what a page attaching anywhere reads -------------------------------------- */

static void on_history(ps_server *srv, int status, json_t *reply, void *user)
{
    if (status != PS_OK || !json_is_array(reply))
        return;
    json_t *messages = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(reply, i, v)
    {
        json_t *m = json_is_string(v) ? json_loads(json_string_value(v), 0, NULL) : NULL;
        if (json_is_object(m))
            json_array_append(messages, m);
        json_decref(m);
    }
    json_decref(room.messages);
    room.messages = messages;
    broadcast(NULL, NULL);
}

static void on_members(ps_server *srv, int status, json_t *reply, void *user)
{
    if (status != PS_OK || !json_is_array(reply))
        return;
    json_object_clear(room.counts);
    for (size_t i = 0; i + 1 < json_array_size(reply); i += 2) {
        const char *name = json_string_value(json_array_get(reply, i));
        const char *tabs = json_string_value(json_array_get(reply, i + 1));
        json_int_t n = tabs ? atoll(tabs) : 0;
        if (name && n > 0)
            json_object_set_new(room.counts, name, json_integer(n));
    }
    broadcast(NULL, NULL);
}

static void refresh_from_redis(void)
{
    json_t *h = json_pack("[s,s,s,s]", "LRANGE", "chat:history", "0", "-1");
    ps_redis_command(room.srv, h, on_history, NULL);
    json_decref(h);
    json_t *m = json_pack("[s,s]", "HGETALL", "chat:members");
    ps_redis_command(room.srv, m, on_members, NULL);
    json_decref(m);
}

/* ---- members' channels ---------------------------------------------------------------- */

static void on_send(ps_channel *ch, const char *ev, json_t *payload, ps_reply *r, void *user)
{
    member *m = user;
    const char *text = json_string_value(json_object_get(payload, "text"));
    if (!text || !*text || strlen(text) > 2000)
        return;
    json_t *msg = json_pack("{s:s,s:s,s:I}", "user", m->name, "text", text, "at",
                            (json_int_t)time(NULL) * 1000);
    char *line = json_dumps(msg, JSON_COMPACT);
    redis(json_pack("[s,s,s]", "RPUSH", "chat:history", line));
    redis(json_pack("[s,s,s,s]", "LTRIM", "chat:history", "-200", "-1"));
    free(line);
    ps_publish(room.srv, ROOM, "message", msg);
    json_decref(msg);
}

static void on_confirmed(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    const char *why = NULL;
    if (status == PS_OK && json_is_true(json_object_get(payload, "confirm"))) {
        redis(json_pack("[s,s]", "DEL", "chat:history"));
        ps_publish(room.srv, ROOM, "cleared", NULL);
        return;
    }
    if (status == PS_OK || status == PS_EREMOTE)
        why = "Cancelled";
    else if (status == PS_ETIMEDOUT)
        why = "No answer within 5 s: history kept";
    if (why) { /* PS_ECLOSED: the member left, nobody to tell */
        json_t *notice = json_pack("{s:s}", "text", why);
        ps_emit(ch, "server:notice", notice);
        json_decref(notice);
    }
}

static void on_clear(ps_channel *ch, const char *ev, json_t *payload, ps_reply *r, void *user)
{
    json_t *q = json_pack("{s:s,s:i}", "question", "Clear the history for everyone?", "timeoutMs",
                          CONFIRM_TIMEOUT_MS);
    ps_request(ch, "server:confirm", q, CONFIRM_TIMEOUT_MS, on_confirmed, NULL);
    json_decref(q);
}

static int chat_init(ps_view *view, json_t *props, void *user)
{
    const char *name = json_string_value(json_object_get(props, "name"));
    if (!name || !*name || strlen(name) >= sizeof(((member *)0)->name))
        return ps_view_reject(view, "A name of 1 to 63 bytes is required");
    if (room.nmembers == MAX_MEMBERS)
        return ps_view_reject(view, "The room is full");
    member *m = calloc(1, sizeof *m);
    ps_view_set_data(view, m, free);
    m->view = view;
    snprintf(m->name, sizeof m->name, "%s", name);
    m->channel = ps_channel_open(view);
    ps_on(m->channel, "client:send", on_send, m);
    ps_on(m->channel, "client:clear", on_clear, m);
    room.members[room.nmembers++] = m;
    json_t *who = json_pack("{s:s}", "user", m->name);
    redis(json_pack("[s,s,s,s]", "HINCRBY", "chat:members", m->name, "1"));
    ps_publish(room.srv, ROOM, "join", who); /* sets this view's props too, here */
    json_decref(who);
    m->attached = true;
    refresh_from_redis();
    return 0;
}

static void chat_dispose(ps_view *view, void *user)
{
    member *m = ps_view_data(view);
    for (size_t i = 0; i < room.nmembers; i++) {
        if (room.members[i] == m) {
            room.members[i] = room.members[--room.nmembers];
            break;
        }
    }
    json_t *who = json_pack("{s:s}", "user", m->name);
    redis(json_pack("[s,s,s,s]", "HINCRBY", "chat:members", m->name, "-1"));
    ps_publish(room.srv, ROOM, "leave", who);
    json_decref(who);
}

static void setup(ps_server *srv)
{
    room.srv = srv;
    room.messages = json_array();
    room.counts = json_object();
    ps_view_type chat = {.init = chat_init, .dispose = chat_dispose};
    ps_route(srv, "/chat", &chat);
    ps_subscribe(srv, ROOM, on_room, NULL);
}

int main(int argc, char **argv)
{
    int rc = example_main(argc, argv, "chat", NULL, setup);
    json_decref(room.messages);
    json_decref(room.counts);
    return rc;
}
