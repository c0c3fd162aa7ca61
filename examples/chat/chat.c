/*
 * chat: the seed's chat example, multi-user. One room for the whole server. Every browser tab
 * attaches the view "/chat" with {"name": ...}; the room keeps the message list and pushes it to
 * every member as view props (the server-rendered list), while each member's chat widget talks
 * over its own channel:
 *   client:send {text}   -> appended, then server:message {user,text,at} to every member
 *   (join / leave)       -> server:join / server:leave {user} to every member, props updated
 *   client:clear         -> server:confirm {question,timeoutMs} request (5 s timeout) to that
 *                           member; on {"confirm": true} the history is cleared for everyone,
 *                           otherwise server:notice says why not ("Cancelled" or "No answer
 *                           within 5 s: history kept").
 */
#include "../common/example.h"

#include <string.h>
#include <time.h>

#define MAX_MEMBERS 1024
#define MAX_HISTORY 200 /* the whole list travels in every props push: keep the newest */
#define CONFIRM_TIMEOUT_MS 5000

typedef struct member {
    ps_view *view;
    ps_channel *channel;
    char name[64];
} member;

static struct {
    json_t *messages; /* [{user, text, at}] */
    member *members[MAX_MEMBERS];
    size_t nmembers;
} room;

static json_t *member_names(void)
{
    json_t *names = json_array();
    for (size_t i = 0; i < room.nmembers; i++)
        json_array_append_new(names, json_string(room.members[i]->name));
    return names;
}

/* Pushes the server-rendered state to every member and `event` (if any) on every channel but
 * `skip`'s: a member still in init has no attach_ack yet, so its client has no bridge. */
static void broadcast(const char *event, json_t *payload, const member *skip)
{
    json_t *names = member_names();
    for (size_t i = 0; i < room.nmembers; i++) {
        member *m = room.members[i];
        json_t *props = json_pack("{s:s,s:s,s:O,s:O}", "channelId", ps_channel_id(m->channel), "me",
                                  m->name, "members", names, "messages", room.messages);
        ps_view_set_props(m->view, props);
        json_decref(props);
        if (event && m != skip)
            ps_emit(m->channel, event, payload);
    }
    json_decref(names);
}

static void on_send(ps_channel *ch, const char *ev, json_t *payload, ps_reply *r, void *user)
{
    member *m = user;
    const char *text = json_string_value(json_object_get(payload, "text"));
    if (!text || !*text || strlen(text) > 2000)
        return;
    json_t *msg = json_pack("{s:s,s:s,s:I}", "user", m->name, "text", text, "at",
                            (json_int_t)time(NULL) * 1000);
    json_array_append(room.messages, msg);
    if (json_array_size(room.messages) > MAX_HISTORY)
        json_array_remove(room.messages, 0);
    broadcast("server:message", msg, NULL);
    json_decref(msg);
}

static void on_confirmed(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    const char *why = NULL;
    if (status == PS_OK && json_is_true(json_object_get(payload, "confirm"))) {
        json_array_clear(room.messages);
        json_t *notice = json_pack("{s:s}", "text", "History cleared");
        broadcast("server:notice", notice, NULL);
        json_decref(notice);
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
    broadcast("server:join", who, m);
    json_decref(who);
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
    broadcast("server:leave", who, NULL);
    json_decref(who);
}

static void setup(ps_server *srv)
{
    room.messages = json_array();
    ps_view_type chat = {.init = chat_init, .dispose = chat_dispose};
    ps_route(srv, "/chat", &chat);
}

int main(int argc, char **argv)
{
    int rc = example_main(argc, argv, "chat", NULL, setup);
    json_decref(room.messages);
    return rc;
}
