/*
 * metrics: the exposition is written by hand, one family after another (HELP, TYPE, samples),
 * since it is a few dozen lines of a simple text format; Prometheus's own tools check it in the
 * tests (promtool, the Python client's parser). Counter families end in _total, durations are
 * in seconds, sizes in bytes, as Prometheus's naming rules ask. The table of ps_server_stats
 * fields is the one place a new field needs a line; test_metrics fails until it has one.
 */
#include "metrics.h"

#include <inttypes.h>

typedef struct stat_metric {
    size_t offset; /* in ps_server_stats */
    const char *name;
    const char *type;
    const char *help;
} stat_metric;

#define STAT(field, name, type, help)                                                              \
    {                                                                                              \
        offsetof(ps_server_stats, field), name, type, help                                         \
    }

static const stat_metric stat_metrics[] = {
    STAT(connections, "pulsec_connections", "gauge", "TCP connections open now."),
    STAT(sessions, "pulsec_sessions", "gauge", "Socket.IO namespace connections open now."),
    STAT(views, "pulsec_views", "gauge", "Views attached now."),
    STAT(channels, "pulsec_channels", "gauge", "Channels open now."),
    STAT(sessions_total, "pulsec_sessions_accepted_total", "counter",
         "Socket.IO connections accepted since the server started."),
    STAT(messages_in, "pulsec_messages_received_total", "counter", "Socket.IO packets received."),
    STAT(messages_out, "pulsec_messages_sent_total", "counter", "Socket.IO packets sent."),
    STAT(messages_dropped, "pulsec_messages_dropped_total", "counter",
         "App messages dropped: unknown type, bad fields, closed channel."),
    STAT(protocol_errors, "pulsec_protocol_errors_total", "counter",
         "Connections closed for bad frames or packets."),
    STAT(slow_consumers, "pulsec_slow_consumers_total", "counter",
         "Sessions cut off for leaving max_queued_bytes unread."),
    STAT(refused, "pulsec_connections_refused_total", "counter",
         "Connections refused over max_connections."),
    STAT(ws_buffers, "pulsec_websocket_buffers", "gauge",
         "WebSockets holding framing buffers now (the others are idle)."),
    STAT(topics, "pulsec_topics", "gauge", "Topics with members in this process now."),
    STAT(topic_members, "pulsec_topic_members", "gauge", "Channel memberships of topics now."),
    STAT(published, "pulsec_publishes_total", "counter", "ps_publish calls in this process."),
    STAT(deliveries, "pulsec_topic_deliveries_total", "counter",
         "Channel events delivered to topic members in this process."),
    STAT(remote_out, "pulsec_remote_publishes_sent_total", "counter",
         "Publishes sent to other workers (and, with Redis, nodes)."),
    STAT(remote_in, "pulsec_remote_publishes_received_total", "counter",
         "Publishes received from other workers and nodes."),
    STAT(remote_lost, "pulsec_remote_publishes_lost_total", "counter",
         "Publishes that could not be sent to a worker or to Redis."),
    STAT(remote_invalid, "pulsec_remote_messages_invalid_total", "counter",
         "Messages from other workers or nodes refused as invalid."),
    STAT(handed_over, "pulsec_connections_handed_over_total", "counter",
         "Connections handed to the worker owning their session."),
    STAT(taken_over, "pulsec_connections_taken_over_total", "counter",
         "Connections taken from another worker."),
    STAT(redis_up, "pulsec_redis_up", "gauge", "1 while this process is connected to Redis."),
    STAT(redis_reconnects, "pulsec_redis_reconnects_total", "counter",
         "Times the Redis connection came back after being up."),
    STAT(unconnected, "pulsec_unconnected_sessions", "gauge",
         "Polling sessions without an accepted Socket.IO CONNECT now."),
    STAT(unconnected_closed, "pulsec_unconnected_sessions_closed_total", "counter",
         "Such sessions ended by max_unconnected(_per_address) or for never polling."),
    STAT(tls_handshakes, "pulsec_tls_handshakes_total", "counter", "TLS handshakes completed."),
    STAT(tls_failures, "pulsec_tls_handshake_failures_total", "counter",
         "TLS connections that failed before or during the handshake: bad input, plain HTTP, "
         "timeouts."),
    STAT(sessions_detached, "pulsec_sessions_detached", "gauge",
         "Sessions whose transport dropped, waiting for their client to resume them now."),
    STAT(sessions_resumed, "pulsec_sessions_resumed_total", "counter",
         "Reconnects that recovered their session."),
    STAT(resume_failed, "pulsec_resume_failed_total", "counter",
         "Reconnects asking for recovery that got a fresh session."),
    STAT(resume_overflow, "pulsec_resume_overflow_total", "counter",
         "Sessions ended because max_replay_bytes or max_detached_sessions left them unable to "
         "recover."),
};
/* One metric per field of ps_server_stats (all uint64_t): a field added there and not here fails
 * the build. */
_Static_assert(PS__ARRAY_SIZE(stat_metrics) * sizeof(uint64_t) == sizeof(ps_server_stats),
               "stat_metrics must list every field of ps_server_stats");

size_t ps__metrics_stats_count(void)
{
    return PS__ARRAY_SIZE(stat_metrics);
}

static void family(ps__buf *out, const char *name, const char *type, const char *help)
{
    ps__buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(ps__buf *out, const char *name, uint64_t v)
{
    ps__buf_printf(out, "%s %" PRIu64 "\n", name, v);
}

static void histogram(ps__buf *out, const char *name, const char *help, const ps__histogram *h)
{
    static const ps__histogram empty;
    if (!h)
        h = &empty;
    family(out, name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < PS__HIST_BUCKETS; i++) {
        cumulative += h->buckets[i];
        ps__buf_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, ps__hist_bounds[i],
                       cumulative);
    }
    cumulative += h->buckets[PS__HIST_BUCKETS];
    ps__buf_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cumulative);
    ps__buf_printf(out, "%s_sum %.9f\n", name, (double)h->sum_ns / 1e9);
    ps__buf_printf(out, "%s_count %" PRIu64 "\n", name, h->count);
}

void ps__metrics_render(ps__buf *out, const ps__metrics_input *in)
{
    family(out, "pulsec_build_info", "gauge",
           "The pulsec library version and this process's worker index, as labels.");
    ps__buf_printf(out, "pulsec_build_info{version=\"%s\",worker=\"%d\"} 1\n", ps_version_string(),
                   in->worker);
    family(out, "pulsec_start_time_seconds", "gauge",
           "When the server was created, in seconds since the Unix epoch.");
    ps__buf_printf(out, "pulsec_start_time_seconds %.3f\n", in->start_time);
    for (size_t i = 0; i < PS__ARRAY_SIZE(stat_metrics); i++) {
        const stat_metric *m = &stat_metrics[i];
        if (!in->tls && strncmp(m->name, "pulsec_tls_", 11) == 0)
            continue;
        uint64_t v;
        memcpy(&v, (const char *)&in->stats + m->offset, sizeof v);
        family(out, m->name, m->type, m->help);
        sample(out, m->name, v);
    }
    if (in->tls) {
        family(out, "pulsec_tls_reloads_total", "counter",
               "Certificate reloads that succeeded (SIGHUP, ps_server_reload_tls).");
        sample(out, "pulsec_tls_reloads_total", in->tls_reloads);
    }
    family(out, "pulsec_queued_bytes", "gauge",
           "Bytes sent to clients and not yet written to their sockets (or taken by a poll).");
    sample(out, "pulsec_queued_bytes", in->queued_bytes);
    histogram(out, "pulsec_request_duration_seconds",
              "Client requests on channels, from arrival to the answer sent.", in->request_seconds);
    histogram(out, "pulsec_server_request_duration_seconds",
              "The server's requests to clients (ps_request), from sending to the answer.",
              in->server_request_seconds);
    static const char *const outcomes[PS__REQ_OUTCOMES] = {"ok", "error", "timeout", "closed",
                                                           "cancelled"};
    family(out, "pulsec_server_requests_total", "counter",
           "The server's requests to clients (ps_request) that completed, by outcome.");
    for (int i = 0; i < PS__REQ_OUTCOMES; i++)
        ps__buf_printf(out, "pulsec_server_requests_total{outcome=\"%s\"} %" PRIu64 "\n",
                       outcomes[i], in->server_requests ? in->server_requests[i] : 0);
}
