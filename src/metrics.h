/*
 * metrics: GET /metrics, the Prometheus text exposition format (version 0.0.4) of a server's
 * counters and gauges (every field of ps_server_stats), its queued bytes, the TLS counters, and
 * two latency histograms: client requests handled by the server and the server's requests to
 * clients. Beside server: it renders numbers the server gathers and does no I/O itself.
 */
#ifndef PS_METRICS_H
#define PS_METRICS_H

#include "channel.h"

typedef struct ps__metrics_input {
    ps_server_stats stats;
    uint64_t queued_bytes; /* output accepted and not yet written or polled, all sessions */
    const ps__histogram *request_seconds;
    const ps__histogram *server_request_seconds;
    const uint64_t *server_requests; /* [PS__REQ_OUTCOMES] */
    bool tls;
    uint64_t tls_reloads;
    double start_time; /* Unix time the server was created */
    int worker;        /* this process's worker index (0 without workers) */
} ps__metrics_input;

/* Appends the whole exposition to out. */
void ps__metrics_render(ps__buf *out, const ps__metrics_input *in);
/* How many ps_server_stats fields have a metric (a test compares with the struct's size). */
size_t ps__metrics_stats_count(void);

#endif
