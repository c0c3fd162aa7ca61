/*
 * playground: a channel tester, like Pulse's own. The page mounts any number of tester
 * components; each attaches the view "/tester" and so has its own channel, which closes when the
 * tester is removed. On a tester's channel:
 *   client:notify-me      -> server:notify {n}                 (server emits)
 *   client:ask-me         -> server:ask request, 5 s timeout, then server:ask-result
 *                            {"status":"ok"|"timeout"|"closed"|"error", "payload"|"error"}
 *   client:ping {..}      -> server:pong {..}                   (client emits)
 *   client:request {..}   -> reply {"echo": .., "tester": n}    (client requests)
 * The view "/stats" pushes the server's live counters as its props every 250 ms, so the page
 * (and its tests) can see channels close on the server when testers go away.
 */
#include "../common/example.h"

#include <string.h>

typedef struct tester {
    ps_channel *channel;
    json_int_t n; /* tester number, from the page */
    json_int_t notifies;
} tester;

static void on_asked(ps_channel *ch, int status, json_t *payload, const char *error, void *user)
{
    json_t *result;
    if (status == PS_OK)
        result = json_pack("{s:s,s:O}", "status", "ok", "payload", payload);
    else if (status == PS_EREMOTE)
        result = json_pack("{s:s,s:s}", "status", "error", "error", error);
    else
        result = json_pack("{s:s}", "status", status == PS_ETIMEDOUT ? "timeout" : "closed");
    ps_emit(ch, "server:ask-result", result);
    json_decref(result);
}

static void on_event(ps_channel *ch, const char *ev, json_t *payload, ps_reply *reply, void *user)
{
    tester *t = user;
    if (strcmp(ev, "client:notify-me") == 0) {
        json_t *n = json_pack("{s:I,s:I}", "n", ++t->notifies, "tester", t->n);
        ps_emit(ch, "server:notify", n);
        json_decref(n);
    } else if (strcmp(ev, "client:ask-me") == 0) {
        json_t *q = json_pack("{s:s,s:I}", "question", "Are you there?", "tester", t->n);
        ps_request(ch, "server:ask", q, 5000, on_asked, t);
        json_decref(q);
    } else if (strcmp(ev, "client:ping") == 0) {
        ps_emit(ch, "server:pong", payload);
    } else if (strcmp(ev, "client:request") == 0 && reply) {
        json_t *answer = json_pack("{s:O,s:I}", "echo", payload, "tester", t->n);
        ps_reply_ok(reply, answer);
        json_decref(answer);
    }
}

static int tester_init(ps_view *view, json_t *props, void *user)
{
    tester *t = calloc(1, sizeof *t);
    ps_view_set_data(view, t, free);
    t->n = json_integer_value(json_object_get(props, "n"));
    t->channel = ps_channel_open(view);
    ps_on(t->channel, "*", on_event, t);
    json_t *p = json_pack("{s:s,s:I}", "channelId", ps_channel_id(t->channel), "n", t->n);
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

/* ---- /stats ---------------------------------------------------------------------------- */

typedef struct stats_view {
    uv_timer_t timer;
    ps_view *view;
} stats_view;

static json_t *stats_props(ps_server *srv)
{
    ps_server_stats st;
    ps_server_get_stats(srv, &st);
    return json_pack("{s:I,s:I,s:I,s:I}", "sessions", (json_int_t)st.sessions, "views",
                     (json_int_t)st.views, "channels", (json_int_t)st.channels, "connections",
                     (json_int_t)st.connections);
}

static void stats_tick(uv_timer_t *h)
{
    stats_view *sv = h->data;
    json_t *p = stats_props(ps_session_server(ps_view_session(sv->view)));
    if (!json_equal(p, ps_view_props(sv->view)))
        ps_view_set_props(sv->view, p);
    json_decref(p);
}

static void stats_on_close(uv_handle_t *h)
{
    free(h->data);
}

static void stats_free(void *data)
{
    stats_view *sv = data;
    uv_close((uv_handle_t *)&sv->timer, stats_on_close);
}

static int stats_init(ps_view *view, json_t *props, void *user)
{
    stats_view *sv = calloc(1, sizeof *sv);
    sv->view = view;
    ps_server *srv = ps_session_server(ps_view_session(view));
    uv_timer_init(ps_server_loop(srv), &sv->timer);
    sv->timer.data = sv;
    uv_timer_start(&sv->timer, stats_tick, 250, 250);
    ps_view_set_data(view, sv, stats_free);
    json_t *p = stats_props(srv);
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void setup(ps_server *srv)
{
    ps_view_type tester_type = {.init = tester_init};
    ps_view_type stats_type = {.init = stats_init};
    ps_route(srv, "/tester", &tester_type);
    ps_route(srv, "/stats", &stats_type);
}

int main(int argc, char **argv)
{
    return example_main(argc, argv, "playground", NULL, setup);
}
