/*
 * metrics: the Prometheus exposition byte for byte where it matters (a family's HELP and TYPE,
 * counters, cumulative histogram buckets, labels), every line well-formed, the histogram's
 * bucket edges, and the table of ps_server_stats fields kept complete: a field added to the
 * struct without its metric fails here. Prometheus's own tools check the real server's output in
 * tests/integration/metrics.test.mjs.
 */
#include "metrics.h"
#include "test.h"

#include <regex.h>

TEST_IMPL(metrics_stats_complete)
{
    /* ps_server_stats is only uint64_t counters and gauges; each needs its line in metrics.c. */
    ASSERT_EQ(ps__metrics_stats_count() * sizeof(uint64_t), sizeof(ps_server_stats));
    return 0;
}

TEST_IMPL(metrics_histogram)
{
    ps__histogram h = {0};
    ps__histogram_observe(&h, 50000);       /* exactly 50 us: in the first bucket (le is <=) */
    ps__histogram_observe(&h, 50001);       /* just above: the second */
    ps__histogram_observe(&h, 3000000);     /* 3 ms: le 0.005 */
    ps__histogram_observe(&h, 60000000000); /* a minute: +Inf only */
    ASSERT_EQ(h.buckets[0], 1);
    ASSERT_EQ(h.buckets[1], 1);
    ASSERT_EQ(h.buckets[6], 1);
    ASSERT_EQ(h.buckets[PS__HIST_BUCKETS], 1);
    ASSERT_EQ(h.count, 4);
    ASSERT_EQ(h.sum_ns, 50000 + 50001 + 3000000 + 60000000000ull);
    for (size_t i = 1; i < PS__HIST_BUCKETS; i++)
        ASSERT(ps__hist_bounds[i] > ps__hist_bounds[i - 1]);
    return 0;
}

static bool contains(const char *text, const char *line)
{
    return strstr(text, line) != NULL;
}

TEST_IMPL(metrics_render)
{
    ps__metrics_input in = {0};
    in.stats.connections = 3;
    in.stats.sessions = 2;
    in.stats.sessions_total = 41;
    in.stats.messages_in = 1000;
    in.stats.tls_handshakes = 9;
    in.queued_bytes = 12345;
    ps__histogram req = {0}, rtt = {0};
    ps__histogram_observe(&req, 200000); /* 0.2 ms */
    ps__histogram_observe(&req, 200000);
    ps__histogram_observe(&req, 70000000); /* 70 ms */
    ps__histogram_observe(&rtt, 1000000);  /* 1 ms */
    in.request_seconds = &req;
    in.server_request_seconds = &rtt;
    uint64_t outcomes[PS__REQ_OUTCOMES] = {5, 1, 2, 0, 0};
    in.server_requests = outcomes;
    in.start_time = 1700000000.5;
    ps__buf b;
    ps__buf_init(&b);
    ps__metrics_render(&b, &in);
    const char *t = ps__buf_cstr(&b);

    ASSERT(contains(t, "# HELP pulsec_connections TCP connections open now.\n"
                       "# TYPE pulsec_connections gauge\npulsec_connections 3\n"));
    ASSERT(contains(
        t, "# TYPE pulsec_sessions_accepted_total counter\npulsec_sessions_accepted_total 41\n"));
    ASSERT(contains(t, "pulsec_messages_received_total 1000\n"));
    ASSERT(contains(t, "pulsec_queued_bytes 12345\n"));
    char info[128];
    snprintf(info, sizeof info, "pulsec_build_info{version=\"%s\",worker=\"0\"} 1\n",
             ps_version_string());
    ASSERT(contains(t, info));
    ASSERT(contains(t, "pulsec_start_time_seconds 1700000000.500\n"));
    /* Without TLS its counters are left out; with it they are there. */
    ASSERT(!contains(t, "pulsec_tls_handshakes_total"));
    /* Buckets are cumulative, +Inf equals the count, the sum is in seconds. */
    ASSERT(contains(t, "# TYPE pulsec_request_duration_seconds histogram\n"));
    ASSERT(contains(t, "pulsec_request_duration_seconds_bucket{le=\"0.0001\"} 0\n"));
    ASSERT(contains(t, "pulsec_request_duration_seconds_bucket{le=\"0.00025\"} 2\n"));
    ASSERT(contains(t, "pulsec_request_duration_seconds_bucket{le=\"0.05\"} 2\n"));
    ASSERT(contains(t, "pulsec_request_duration_seconds_bucket{le=\"0.1\"} 3\n"));
    ASSERT(contains(t, "pulsec_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
    ASSERT(contains(t, "pulsec_request_duration_seconds_sum 0.070400000\n"));
    ASSERT(contains(t, "pulsec_request_duration_seconds_count 3\n"));
    ASSERT(contains(t, "pulsec_server_request_duration_seconds_count 1\n"));
    ASSERT(contains(t, "pulsec_server_requests_total{outcome=\"ok\"} 5\n"));
    ASSERT(contains(t, "pulsec_server_requests_total{outcome=\"timeout\"} 2\n"));
    ASSERT(contains(t, "pulsec_server_requests_total{outcome=\"cancelled\"} 0\n"));

    /* Every line is a comment or `name{labels} value`; every family announced once. */
    regex_t sample;
    ASSERT_EQ(regcomp(&sample,
                      "^[a-z_][a-z0-9_]*(\\{[a-z_]+=\"[^\"]*\"(,[a-z_]+=\"[^\"]*\")*\\})? "
                      "[0-9][0-9.e+-]*$",
                      REG_EXTENDED | REG_NOSUB),
              0);
    size_t lines = 0, types = 0;
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        ASSERT_NOT_NULL(nl);
        char line[256];
        size_t n = (size_t)(nl - p);
        ASSERT_LT(n, sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        if (strncmp(line, "# TYPE ", 7) == 0) {
            types++;
            char needle[300];
            snprintf(needle, sizeof needle, "\n%s\n", line);
            ASSERT(strstr(nl, needle) == NULL); /* not announced again below */
        } else if (line[0] != '#') {
            if (regexec(&sample, line, 0, NULL, 0) != 0)
                ps_test_fail(__FILE__, __LINE__, "malformed sample line: %s", line);
        }
        lines++;
        p = nl + 1;
    }
    regfree(&sample);
    ASSERT_GT(lines, 60);
    ASSERT_GT(types, 20);

    ps__buf_reset(&b);
    in.tls = true;
    in.tls_reloads = 2;
    in.worker = 3;
    ps__metrics_render(&b, &in);
    t = ps__buf_cstr(&b);
    ASSERT(contains(t, "pulsec_tls_handshakes_total 9\n"));
    ASSERT(contains(t, "pulsec_tls_reloads_total 2\n"));
    ASSERT(contains(t, "worker=\"3\""));
    ps__buf_free(&b);
    return 0;
}
