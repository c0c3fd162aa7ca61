/*
 * test_topic: the topic table (src/topic.c). Names (pure), then a real server whose route opens
 * three channels and joins them to topics from init, so that memberships, limits, leave, the
 * leave-on-close and the wire bytes of a publish are all checked over a real socket: a publish
 * must reach each member as exactly the envelope ps_emit would have sent. Messages that other
 * processes deliver (ps__topics_deliver) are checked with hostile input: what Redis hands over
 * reaches no client unless it is one valid JSON value and a valid event name.
 */
#include "client.h"
#include "topic.h"

#include <stdatomic.h>

TEST_IMPL(topic_names)
{
    ASSERT(ps__topic_valid("a", 1));
    ASSERT(ps__topic_valid("room:42/ünï", strlen("room:42/ünï")));
    char big[PS_TOPIC_MAX + 2];
    memset(big, 'x', sizeof big);
    ASSERT(ps__topic_valid(big, PS_TOPIC_MAX));
    ASSERT(!ps__topic_valid(big, PS_TOPIC_MAX + 1));
    ASSERT(!ps__topic_valid("", 0));
    ASSERT(!ps__topic_valid(NULL, 3));
    ASSERT(!ps__topic_valid("a\0b", 3));
    ASSERT(!ps__topic_valid("\xff\xfe", 2));     /* not UTF-8 */
    ASSERT(!ps__topic_valid("\xc3", 1));         /* truncated sequence */
    ASSERT(!ps__topic_valid("\xed\xa0\x80", 3)); /* a surrogate */
    return 0;
}

/* ---- a route that joins from init ------------------------------------------------------ */

static struct {
    atomic_int rc_dup, rc_limit, rc_invalid, rc_null, rc_leave_missing, rc_closed_join;
    atomic_int rc_closed_leave, rc_topics_limit, rc_leave;
} st;

typedef struct topic_view {
    ps_channel *ch[3];
} topic_view;

static void topic_view_free(void *data)
{
    free(data);
}

static int topic_init(ps_view *view, json_t *props, void *user)
{
    topic_view *tv = calloc(1, sizeof *tv);
    ps_view_set_data(view, tv, topic_view_free);
    for (int i = 0; i < 3; i++)
        tv->ch[i] = ps_channel_open(view);
    /* ch0: a, b; ch1: a; ch2: nothing yet. max_topics_per_channel is 2, max_topics 3. */
    ASSERT_EQ(ps_join(tv->ch[0], "a"), 0);
    ASSERT_EQ(ps_join(tv->ch[0], "b"), 0);
    st.rc_dup = ps_join(tv->ch[0], "a");
    st.rc_limit = ps_join(tv->ch[0], "c");
    st.rc_invalid = ps_join(tv->ch[1], "");
    st.rc_null = ps_join(tv->ch[1], NULL);
    ASSERT_EQ(ps_join(tv->ch[1], "a"), 0);
    st.rc_leave_missing = ps_leave(tv->ch[1], "b");
    ASSERT_EQ(ps_join(tv->ch[2], "c"), 0);
    st.rc_topics_limit = ps_join(tv->ch[2], "d"); /* a, b, c exist: a fourth is over */
    st.rc_leave = ps_leave(tv->ch[2], "c");       /* frees topic c */
    ASSERT_EQ(ps_channel_close(tv->ch[2]), 0);
    st.rc_closed_join = ps_join(tv->ch[2], "a");
    st.rc_closed_leave = ps_leave(tv->ch[2], "a");
    json_t *p =
        json_pack("{s:s,s:s}", "c0", ps_channel_id(tv->ch[0]), "c1", ps_channel_id(tv->ch[1]));
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void setup_topics(ts *t)
{
    ps_view_type type = {.init = topic_init};
    ASSERT_EQ(ps_route(t->srv, "/topics", &type), 0);
}

/* ---- raw Socket.IO helpers ------------------------------------------------------------- */

static void send_msg(tc *c, const char *json)
{
    ps__buf pkt;
    ps__buf_init(&pkt);
    ps__buf_printf(&pkt, "42[\"message\",%s]", json);
    tc_ws_text(c, pkt.base);
    ps__buf_free(&pkt);
}

/* The next "message" packet's text (heartbeats answered). */
static char *read_packet(tc *c)
{
    for (;;) {
        char *text = tc_ws_read_text(c);
        if (strcmp(text, "2") == 0) {
            tc_ws_text(c, "3");
            ps__free(text);
            continue;
        }
        return text;
    }
}

static char c0[PS__HEX_ID_LEN + 1], c1[PS__HEX_ID_LEN + 1];

static void do_publish(ts *t)
{
    json_t *p = json_pack("{s:i,s:s}", "n", 1, "s", "é\"x");
    ASSERT_EQ(ps_publish(t->srv, "a", "news", p), 0);
    ASSERT_EQ(ps_publish(t->srv, "nobody-here", "news", p), 0);
    ASSERT_EQ(ps_publish(t->srv, "", "news", p), PS_EINVAL);
    ASSERT_EQ(ps_publish(t->srv, "a", "", p), PS_EINVAL);
    ASSERT_EQ(ps_publish(t->srv, "a", "__close__", p), PS_EINVAL);
    ASSERT_EQ(ps_publish(t->srv, "a", NULL, p), PS_EINVAL);
    ASSERT_EQ(ps_publish(t->srv, "b", "only-c0", NULL), 0);
    json_decref(p);
}

/* The test reaches the server's topic table as the topic layer does: through a channel. */
static ps__topics *the_topics;
static ps_channel *the_c0;

static void check_members(ts *t)
{
    ASSERT_EQ(ps__topics_members(the_topics, "a", 1), 2);
    ASSERT_EQ(ps__topics_members(the_topics, "b", 1), 1);
    ASSERT_EQ(ps__topics_members(the_topics, "c", 1), 0);
}

static int capture_mw(ps_session *s, ps_message *m, void *user)
{
    the_topics = ps__channel_layer(m->channel)->ext_user;
    if (strcmp(m->event, "i-am-c0") == 0)
        the_c0 = m->channel;
    return 0;
}

static void setup_capture(ts *t)
{
    setup_topics(t);
    ASSERT_EQ(ps_use_message(t->srv, capture_mw, NULL), 0);
}

static void do_except(ts *t)
{
    ASSERT_NOT_NULL(the_c0);
    ASSERT_EQ(ps_publish_except(t->srv, "a", "except", NULL, the_c0), 0);
}

static void do_hostile(ts *t)
{
    ps__topics *tt = the_topics;
    /* Refused: invalid JSON, trailing text, invalid UTF-8 inside a string, empty, bad events,
     * topics out of bounds. None of them reaches a client. */
    static const char *bad_payloads[] = {"{", "{}x", "\"\xff\"", "[1,]", "nul", "\"a\x01\""};
    for (size_t i = 0; i < PS__ARRAY_SIZE(bad_payloads); i++)
        ASSERT_EQ(
            ps__topics_deliver(tt, "a", 1, "ev", 2, bad_payloads[i], strlen(bad_payloads[i]), true),
            -1);
    ASSERT_EQ(ps__topics_deliver(tt, "a", 1, "ev", 2, "", 0, true), -1);
    ASSERT_EQ(ps__topics_deliver(tt, "a", 1, "__close__", 9, "1", 1, true), -1);
    ASSERT_EQ(ps__topics_deliver(tt, "a", 1, "", 0, "1", 1, true), -1);
    ASSERT_EQ(ps__topics_deliver(tt, "a", 1, "\xc3(", 2, "1", 1, true), -1);
    ASSERT_EQ(ps__topics_deliver(tt, "", 0, "ev", 2, "1", 1, true), -1);
    char big[PS_TOPIC_MAX + 1];
    memset(big, 't', sizeof big);
    ASSERT_EQ(ps__topics_deliver(tt, big, sizeof big, "ev", 2, "1", 1, true), -1);
    /* Accepted: reaches both members of "a", and a topic without members reaches nobody. */
    ASSERT_EQ(ps__topics_deliver(tt, "a", 1, "remote", 6, "[1, {\"k\": null}]", 16, true), 2);
    ASSERT_EQ(ps__topics_deliver(tt, "zzz", 3, "remote", 6, "1", 1, true), 0);
}

static void expect_event(tc *c, const char *ch, const char *event, const char *payload)
{
    char *text = read_packet(c);
    char want[512];
    snprintf(want, sizeof want,
             "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"%s\","
             "\"payload\":%s}]",
             ch, event, payload);
    ASSERT_STR_EQ(text, want);
    ps__free(text);
}

static void client_topics(ts *t)
{
    tc *c = tc_sio_connect(t);
    send_msg(c, "{\"type\":\"attach\",\"path\":\"/topics\",\"attachId\":\"v\"}");
    /* ch2, closed inside init, is told to the client (__close__) before the ack. */
    char *ack = read_packet(c);
    ASSERT(strstr(ack, "__close__") != NULL);
    ps__free(ack);
    ack = read_packet(c);
    ASSERT(strstr(ack, "attach_ack") != NULL);
    json_t *arr = json_loads(ack + 2, 0, NULL);
    ASSERT_NOT_NULL(arr);
    json_t *props = json_object_get(json_array_get(arr, 1), "props");
    snprintf(c0, sizeof c0, "%s", json_string_value(json_object_get(props, "c0")));
    snprintf(c1, sizeof c1, "%s", json_string_value(json_object_get(props, "c1")));
    json_decref(arr);
    ps__free(ack);

    ASSERT_EQ(st.rc_dup, 0);
    ASSERT_EQ(st.rc_limit, PS_ELIMIT);
    ASSERT_EQ(st.rc_invalid, PS_EINVAL);
    ASSERT_EQ(st.rc_null, PS_EINVAL);
    ASSERT_EQ(st.rc_leave_missing, PS_ENOTFOUND);
    ASSERT_EQ(st.rc_topics_limit, PS_ELIMIT);
    ASSERT_EQ(st.rc_leave, 0);
    ASSERT_EQ(st.rc_closed_join, PS_ECLOSED);
    ASSERT_EQ(st.rc_closed_leave, PS_ECLOSED);

    ps_server_stats s;
    ts_stats(t, &s);
    ASSERT_EQ(s.topics, 2);        /* a, b */
    ASSERT_EQ(s.topic_members, 3); /* c0:a, c0:b, c1:a */

    /* Tell the server which channel is c0 (the middleware remembers it); the request's answer
     * (null: no listener) says it was handled. */
    char m[256];
    snprintf(m, sizeof m,
             "{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"i-am-c0\","
             "\"requestId\":\"r1\"}",
             c0);
    send_msg(c, m);
    char *answer = read_packet(c);
    ASSERT(strstr(answer, "\"responseTo\":\"r1\"") != NULL);
    ps__free(answer);
    ts_on_loop(t, check_members);

    /* One publish, two members, in join order; the bytes are exactly ps_emit's envelope. */
    ts_on_loop(t, do_publish);
    expect_event(c, c0, "news", "{\"n\":1,\"s\":\"é\\\"x\"}");
    expect_event(c, c1, "news", "{\"n\":1,\"s\":\"é\\\"x\"}");
    expect_event(c, c0, "only-c0", "null");

    ts_on_loop(t, do_except);
    expect_event(c, c1, "except", "null");

    ts_on_loop(t, do_hostile);
    expect_event(c, c0, "remote", "[1, {\"k\": null}]");
    expect_event(c, c1, "remote", "[1, {\"k\": null}]");

    ts_stats(t, &s);
    ASSERT_EQ(s.published, 4); /* ps_publish calls with valid arguments, members or not */
    ASSERT_EQ(s.deliveries, 2 + 1 + 1 + 2);

    /* Detaching closes both channels, which leave every topic: the table empties. */
    send_msg(c, "{\"type\":\"detach\",\"attachId\":\"v\"}");
    for (int i = 0; i < 2; i++) {
        char *text = read_packet(c);
        ASSERT(strstr(text, "__close__") != NULL);
        ps__free(text);
    }
    ts_stats(t, &s);
    ASSERT_EQ(s.topics, 0);
    ASSERT_EQ(s.topic_members, 0);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(topic_table)
{
    /* Exact bytes: no recovery offsets. */
    ps_server_opts o = {
        .max_topics_per_channel = 2, .max_topics = 3, .resume_window_ms = PS_RESUME_OFF};
    ts_run(&o, setup_capture, client_topics, NULL);
    return 0;
}

/* ---- server-side subscriptions --------------------------------------------------------- */

static struct {
    int a_calls, b_calls, deep_calls, deep_rc;
    char last_event[32];
    json_int_t last_n;
    ps_subscription *b, *self;
} sb;

static void on_a(ps_server *srv, const char *topic, const char *event, json_t *payload, void *u)
{
    ASSERT_STR_EQ(topic, "s");
    sb.a_calls++;
    snprintf(sb.last_event, sizeof sb.last_event, "%s", event);
    sb.last_n = json_integer_value(json_object_get(payload, "n"));
    /* Unsubscribing the next handler of this very dispatch: it is not called. */
    if (strcmp(event, "drop-b") == 0)
        ps_unsubscribe(sb.b);
}

static void on_b(ps_server *srv, const char *topic, const char *event, json_t *payload, void *u)
{
    sb.b_calls++;
}

/* Publishes to its own topic from its handler: refused once nested 8 deep. */
static void on_deep(ps_server *srv, const char *topic, const char *event, json_t *payload, void *u)
{
    sb.deep_calls++;
    int rc = ps_publish(srv, "deep", "again", NULL);
    if (rc != 0)
        sb.deep_rc = rc;
}

static void on_self(ps_server *srv, const char *topic, const char *event, json_t *payload, void *u)
{
    ps_unsubscribe(sb.self); /* inside its own handler */
    ps_unsubscribe(sb.self); /* twice: harmless */
}

static void sub_checks(ts *t)
{
    ps_server_stats s0;
    ps_server_get_stats(t->srv, &s0);
    ASSERT_NULL(ps_subscribe(t->srv, "", on_a, NULL));
    ASSERT_NULL(ps_subscribe(t->srv, "s", NULL, NULL));
    ASSERT_NOT_NULL(ps_subscribe(t->srv, "s", on_a, NULL));
    sb.b = ps_subscribe(t->srv, "s", on_b, NULL);
    ps_server_stats ss;
    ps_server_get_stats(t->srv, &ss);
    ASSERT_EQ(ss.topics, s0.topics + 1); /* a subscription keeps its topic, with no member */
    ASSERT_EQ(ss.topic_members, s0.topic_members);

    json_t *p = json_pack("{s:i}", "n", 7);
    ASSERT_EQ(ps_publish(t->srv, "s", "local", p), 0);
    json_decref(p);
    ASSERT_EQ(sb.a_calls, 1);
    ASSERT_EQ(sb.b_calls, 1);
    ASSERT_STR_EQ(sb.last_event, "local");
    ASSERT_EQ(sb.last_n, 7);

    /* From another worker or node: the handler gets the parsed payload too. */
    ps__topics *tt = ps__channel_layer(the_c0)->ext_user;
    ASSERT_EQ(ps__topics_deliver(tt, "s", 1, "remote", 6, "{\"n\":9}", 7, true), 0);
    ASSERT_EQ(sb.a_calls, 2);
    ASSERT_STR_EQ(sb.last_event, "remote");
    ASSERT_EQ(sb.last_n, 9);
    ASSERT_EQ(ps__topics_deliver(tt, "s", 1, "remote", 6, "{\"n\":", 5, true), -1);
    ASSERT_EQ(sb.a_calls, 2);

    ASSERT_EQ(ps_publish(t->srv, "s", "drop-b", NULL), 0);
    ASSERT_EQ(sb.b_calls, 2); /* b ran for "local" and "remote" only */
    ASSERT_EQ(ps_publish(t->srv, "s", "after", NULL), 0);
    ASSERT_EQ(sb.a_calls, 4);

    ASSERT_NOT_NULL(ps_subscribe(t->srv, "deep", on_deep, NULL));
    ASSERT_EQ(ps_publish(t->srv, "deep", "first", NULL), 0);
    ASSERT_EQ(sb.deep_calls, 8);
    ASSERT_EQ(sb.deep_rc, PS_ELIMIT);

    sb.self = ps_subscribe(t->srv, "once", on_self, NULL);
    ps_server_get_stats(t->srv, &ss);
    size_t before = ss.topics;
    ASSERT_EQ(ps_publish(t->srv, "once", "x", NULL), 0);
    ps_server_get_stats(t->srv, &ss);
    ASSERT_EQ(ss.topics, before - 1); /* its last subscription gone: the topic is freed */
}

/* Attaches /topics and names c0 to the server (so that the checks reach the topic table). */
static void client_subscribe(ts *t)
{
    tc *c = tc_sio_connect(t);
    send_msg(c, "{\"type\":\"attach\",\"path\":\"/topics\",\"attachId\":\"v\"}");
    char *text = read_packet(c); /* __close__ of ch2 (closed in init) */
    ps__free(text);
    text = read_packet(c);
    json_t *arr = json_loads(text + 2, 0, NULL);
    ASSERT_NOT_NULL(arr);
    json_t *props = json_object_get(json_array_get(arr, 1), "props");
    char m[256];
    snprintf(m, sizeof m,
             "{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":\"i-am-c0\","
             "\"requestId\":\"r1\"}",
             json_string_value(json_object_get(props, "c0")));
    json_decref(arr);
    ps__free(text);
    send_msg(c, m);
    text = read_packet(c);
    ASSERT(strstr(text, "\"responseTo\":\"r1\"") != NULL);
    ps__free(text);
    ts_on_loop(t, sub_checks);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(topic_subscribe)
{
    the_c0 = NULL;
    ps_server_opts o = {.max_topics_per_channel = 2, .max_topics = 10};
    ts_run(&o, setup_capture, client_subscribe, NULL);
    return 0;
}
