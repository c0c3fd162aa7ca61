/*
 * fanout: the topic scenarios of make bench (bench/scenarios/scale.mjs), on the loadgen's
 * connections (conn.h). N subscriber connections attach the view, send the request
 * `join {"topic": T}` on their channel and wait for its answer; one publisher connection then
 * sends `publish {"topic": T, "event": "tick", "payload": {"t": NS, "s": SEQ, "d": DATA}}`
 * requests, k in flight (or paced at --rate), and every subscriber counts the "tick" events it
 * receives and their latency from the moment the publisher sent them (one clock: this process).
 *
 * Subscribers may be on another server than the publisher (--sub-port): the cross-node
 * scenario, publish -> Redis -> another node -> its subscribers. Both the echo fixture and the
 * Socket.IO baseline answer join and publish (the baseline with io.to(room).emit).
 *
 * One JSON line on stdout: deliveries/s, publishes/s, delivery latency percentiles, deliveries
 * missing (publishes x subscribers - deliveries, over the measured window's publishes), the
 * loadgen's CPU and, with --server-pid (repeatable), the summed CPU of those processes.
 */
#include "conn.h"
#include "hist.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_PIDS 16

/* DRAIN: publishing has stopped; deliveries on their way still count for a moment. */
typedef enum { PH_RAMP, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE } phase;

static struct {
    /* options */
    const char *host, *topic, *label;
    int port, sub_port;
    unsigned subs, inflight, concurrency, payload;
    double rate, duration, warmup, ramp_timeout;
    int pids[MAX_PIDS];
    int npids;
    /* state */
    uv_loop_t *loop;
    lg_net pub_net, sub_net;
    lg_conn *pub;
    phase ph;
    uv_timer_t timer, pacer;
    unsigned started, joined, failed;
    unsigned pending; /* publishes in flight */
    uint64_t seq;
    uint64_t measure_seq0, measure_seq1; /* publishes sent while measuring: [seq0, seq1) */
    uint64_t published, acked, deliveries, delivered_measured, errors, closed;
    uint64_t issued, t_pace0;
    uint64_t t_measure, t_end;
    lg_hist hist;
    struct rusage ru0, ru1;
    double srv0, srv1, usr0, usr1, busy0, busy1;
    char *data;
} F;

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* utime + stime of pid in seconds; with user_only, utime alone. */
static double cpu_of(int pid, bool user_only)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(user_only ? ut : ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double servers_cpu(bool user_only)
{
    double t = 0;
    for (int i = 0; i < F.npids; i++)
        t += cpu_of(F.pids[i], user_only);
    return t;
}

static double machine_busy(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) < 5)
        v[0] = 0;
    fclose(f);
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double rusage_cpu(const struct rusage *r)
{
    return (double)r->ru_utime.tv_sec + r->ru_utime.tv_usec / 1e6 + (double)r->ru_stime.tv_sec +
           r->ru_stime.tv_usec / 1e6;
}

/* ---- publishing ------------------------------------------------------------------------ */

static void publish_one(void)
{
    if (!F.pub || !lg_conn_ready(F.pub))
        return;
    char msg[512 + 65536];
    int n = snprintf(msg, sizeof msg,
                     "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":"
                     "\"publish\",\"payload\":{\"topic\":\"%s\",\"event\":\"tick\",\"payload\":"
                     "{\"t\":%" PRIu64 ",\"s\":%" PRIu64 ",\"d\":\"%s\"}},\"requestId\":\"p%" PRIu64
                     "\"}]",
                     lg_conn_channel(F.pub), F.topic, uv_hrtime(), F.seq, F.data, F.seq);
    if (lg_conn_send(F.pub, msg, (size_t)n) != 0)
        return;
    F.seq++;
    F.pending++;
    F.published++;
}

static void fill(void)
{
    while (F.rate == 0 && F.pending < F.inflight && (F.ph == PH_WARMUP || F.ph == PH_MEASURE))
        publish_one();
}

static void on_pace(uv_timer_t *t)
{
    /* Publish i is due at t_pace0 + i / rate; a tick of 1 ms sends what is due. */
    uint64_t due = (uint64_t)(secs(uv_hrtime() - F.t_pace0) * F.rate);
    while (F.issued < due && F.pending < F.inflight && (F.ph == PH_WARMUP || F.ph == PH_MEASURE)) {
        publish_one();
        F.issued++;
    }
}

/* ---- phases ---------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void enter_done(void)
{
    if (F.ph == PH_DONE)
        return;
    F.ph = PH_DONE;
    uv_timer_stop(&F.timer);
    uv_close((uv_handle_t *)&F.timer, NULL);
    uv_timer_stop(&F.pacer);
    uv_close((uv_handle_t *)&F.pacer, NULL);
    lg_net_abort_all(&F.pub_net);
    lg_net_abort_all(&F.sub_net);
    lg_net_close(&F.pub_net);
    lg_net_close(&F.sub_net);
}

static void enter_measure(void)
{
    F.ph = PH_MEASURE;
    lg_hist_init(&F.hist);
    F.t_measure = uv_hrtime();
    F.measure_seq0 = F.seq;
    F.delivered_measured = 0;
    getrusage(RUSAGE_SELF, &F.ru0);
    F.srv0 = servers_cpu(false);
    F.usr0 = servers_cpu(true);
    F.busy0 = machine_busy();
    uv_timer_start(&F.timer, on_timer, (uint64_t)(F.duration * 1000), 0);
}

static void enter_warmup(void)
{
    F.ph = PH_WARMUP;
    if (F.rate > 0) {
        F.t_pace0 = uv_hrtime();
        uv_timer_start(&F.pacer, on_pace, 1, 1);
    }
    fill();
    uv_timer_start(&F.timer, on_timer, (uint64_t)(F.warmup * 1000), 0);
}

static void on_timer(uv_timer_t *t)
{
    switch (F.ph) {
    case PH_RAMP:
        fprintf(stderr, "fanout: ramp timed out: %u of %u subscribers joined\n", F.joined, F.subs);
        enter_warmup();
        break;
    case PH_WARMUP: enter_measure(); break;
    case PH_MEASURE:
        F.ph = PH_DRAIN;
        F.measure_seq1 = F.seq;
        F.t_end = uv_hrtime();
        getrusage(RUSAGE_SELF, &F.ru1);
        F.srv1 = servers_cpu(false);
        F.usr1 = servers_cpu(true);
        F.busy1 = machine_busy();
        /* Deliveries of the measured publishes still on their way count, for 5 s at most. */
        uv_timer_start(&F.timer, on_timer, 5000, 0);
        break;
    case PH_DRAIN: enter_done(); break;
    case PH_DONE: break;
    }
}

static void maybe_start(void)
{
    if (F.ph == PH_RAMP && F.joined + F.failed >= F.subs && F.pub && lg_conn_ready(F.pub)) {
        uv_timer_stop(&F.timer);
        enter_warmup();
    }
}

static void start_sub(void)
{
    if (F.started < F.subs) {
        F.started++;
        lg_conn_start(&F.sub_net, &F.sub_net);
    }
}

/* ---- hooks ----------------------------------------------------------------------------- */

static void on_ready(lg_conn *c)
{
    if (c == F.pub) {
        maybe_start();
        return;
    }
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\",\"event\":"
                     "\"join\",\"payload\":{\"topic\":\"%s\"},\"requestId\":\"j\"}]",
                     lg_conn_channel(c), F.topic);
    lg_conn_send(c, msg, (size_t)n);
}

static const char *find(const char *s, size_t n, const char *lit)
{
    const char *p = memmem(s, n, lit, strlen(lit));
    return p ? p + strlen(lit) : NULL;
}

static void on_message(lg_conn *c, const char *json, size_t len)
{
    const char *end = json + len;
    if (c == F.pub) {
        if (find(json, len, "\"responseTo\":\"p")) {
            F.pending--;
            F.acked++;
            if (find(json, len, "\"error\""))
                F.errors++;
            fill();
        }
        return;
    }
    const char *q;
    if ((q = find(json, len, "\"event\":\"tick\""))) {
        const char *t = find(q, (size_t)(end - q), "\"t\":");
        if (!t)
            return;
        uint64_t sent = strtoull(t, NULL, 10);
        F.deliveries++;
        if (F.ph == PH_MEASURE || F.ph == PH_DRAIN) {
            const char *s = find(q, (size_t)(end - q), "\"s\":");
            uint64_t seq = s ? strtoull(s, NULL, 10) : 0;
            if (seq >= F.measure_seq0 && (F.ph == PH_MEASURE || seq < F.measure_seq1)) {
                F.delivered_measured++;
                lg_hist_record(&F.hist, (uv_hrtime() - sent) / 1000);
                if (F.ph == PH_DRAIN &&
                    F.delivered_measured >= (F.measure_seq1 - F.measure_seq0) * F.joined)
                    uv_timer_start(&F.timer, on_timer, 0, 0); /* everything arrived: done */
            }
        }
        return;
    }
    if (find(json, len, "\"responseTo\":\"j\"")) {
        if (find(json, len, "\"ok\":true")) {
            F.joined++;
        } else {
            F.failed++;
            F.errors++;
        }
        start_sub();
        maybe_start();
    }
}

static void on_closed(lg_conn *c, lg_err why)
{
    if (c == F.pub)
        F.pub = NULL;
    if (F.ph == PH_DONE)
        return;
    F.closed++;
    if (F.ph == PH_RAMP && c != F.pub && !lg_conn_ready(c)) {
        F.failed++;
        start_sub();
        maybe_start();
    }
}

static const lg_hooks hooks = {on_ready, on_message, on_closed};

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: fanout [options]\n"
               "  --host ADDR        servers' address (127.0.0.1)\n"
               "  --port N           the publisher's server (8000)\n"
               "  --sub-port N       the subscribers' server (--port)\n"
               "  -c, --subs N       subscriber connections (1000)\n"
               "  -k, --inflight K   publish requests in flight (8)\n"
               "  -r, --rate R       publishes/s, paced (0 = closed loop)\n"
               "  -d, --duration S   measured seconds (5)\n"
               "  -w, --warmup S     unmeasured seconds first (1)\n"
               "  --payload BYTES    size of the payload's data string (32)\n"
               "  --topic T          topic (bench)\n"
               "  --concurrency N    handshakes at once during the ramp (256)\n"
               "  --server-pid PID   add this process's CPU to the server's (repeatable)\n"
               "  --label NAME       server name for the JSON line\n");
}

int main(int argc, char **argv)
{
    F.host = "127.0.0.1";
    F.topic = "bench";
    F.port = 8000;
    F.subs = 1000;
    F.inflight = 8;
    F.concurrency = 256;
    F.payload = 32;
    F.duration = 5;
    F.warmup = 1;
    F.ramp_timeout = 120;
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'},
        {"sub-port", required_argument, 0, 'P'},
        {"subs", required_argument, 0, 'c'},
        {"inflight", required_argument, 0, 'k'},
        {"rate", required_argument, 0, 'r'},
        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"payload", required_argument, 0, 'b'},
        {"topic", required_argument, 0, 't'},
        {"concurrency", required_argument, 0, 'C'},
        {"server-pid", required_argument, 0, 'S'},
        {"label", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:k:r:d:w:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': F.host = optarg; break;
        case 'p': F.port = atoi(optarg); break;
        case 'P': F.sub_port = atoi(optarg); break;
        case 'c': F.subs = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'k': F.inflight = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': F.rate = strtod(optarg, NULL); break;
        case 'd': F.duration = strtod(optarg, NULL); break;
        case 'w': F.warmup = strtod(optarg, NULL); break;
        case 'b': F.payload = (unsigned)strtoul(optarg, NULL, 10); break;
        case 't': F.topic = optarg; break;
        case 'C': F.concurrency = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'S':
            if (F.npids < MAX_PIDS)
                F.pids[F.npids++] = atoi(optarg);
            break;
        case 'L': F.label = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!F.sub_port)
        F.sub_port = F.port;
    if (F.subs == 0 || F.inflight == 0 || F.payload > 65536 || F.duration <= 0) {
        usage(stderr);
        return 2;
    }
    if (F.rate > 0 && F.inflight < 64)
        F.inflight = 64;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    F.data = malloc(F.payload + 1);
    memset(F.data, 'x', F.payload);
    F.data[F.payload] = '\0';
    F.loop = uv_default_loop();
    if (lg_net_init(&F.pub_net, F.loop, F.host, F.port, "/socket.io/", "/echo", &hooks) != 0 ||
        lg_net_init(&F.sub_net, F.loop, F.host, F.sub_port, "/socket.io/", "/echo", &hooks) != 0) {
        fprintf(stderr, "fanout: bad address\n");
        return 2;
    }
    uv_timer_init(F.loop, &F.timer);
    uv_timer_init(F.loop, &F.pacer);
    F.ph = PH_RAMP;
    uv_timer_start(&F.timer, on_timer, (uint64_t)(F.ramp_timeout * 1000), 0);
    F.pub = lg_conn_start(&F.pub_net, NULL);
    for (unsigned i = 0; i < F.concurrency && i < F.subs; i++)
        start_sub();
    uv_run(F.loop, UV_RUN_DEFAULT);

    double el = secs(F.t_end - F.t_measure);
    uint64_t pubs = F.measure_seq1 - F.measure_seq0;
    uint64_t expected = pubs * F.joined;
    double lg_cpu = el > 0 ? (rusage_cpu(&F.ru1) - rusage_cpu(&F.ru0)) / el : 0;
    double srv_cpu = el > 0 && F.npids ? (F.srv1 - F.srv0) / el : -1;
    double dps = el > 0 ? (double)F.delivered_measured / el : 0;
    json_t *out = json_pack(
        "{s:s,s:s,s:I,s:I,s:f,s:f,s:I,s:I,s:f,s:f,s:f,s:{s:I,s:I,s:I,s:I,s:I},s:I,s:I,s:f,s:f}",
        "scenario", "fanout", "server", F.label ? F.label : "server", "subscribers",
        (json_int_t)F.joined, "inflight", (json_int_t)F.inflight, "rate", F.rate, "duration_s", el,
        "publishes", (json_int_t)pubs, "deliveries", (json_int_t)F.delivered_measured,
        "deliveries_per_sec", dps, "publishes_per_sec", el > 0 ? (double)pubs / el : 0, "per_sec",
        dps, "latency_us", "p50", (json_int_t)lg_hist_quantile(&F.hist, 0.5), "p90",
        (json_int_t)lg_hist_quantile(&F.hist, 0.9), "p99",
        (json_int_t)lg_hist_quantile(&F.hist, 0.99), "p999",
        (json_int_t)lg_hist_quantile(&F.hist, 0.999), "max", (json_int_t)F.hist.max, "missing",
        (json_int_t)(expected > F.delivered_measured ? expected - F.delivered_measured : 0),
        "errors", (json_int_t)(F.errors + F.failed), "loadgen_cpu", lg_cpu, "machine_cpu",
        el > 0 ? (F.busy1 - F.busy0) / el : 0);
    if (srv_cpu >= 0) {
        json_object_set_new(out, "server_cpu", json_real(srv_cpu));
        json_object_set_new(out, "server_cpu_user", json_real((F.usr1 - F.usr0) / el));
        if (dps > 0)
            json_object_set_new(out, "server_us_per_delivery", json_real(srv_cpu * 1e6 / dps));
    }
    char *line = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
    printf("%s\n", line);
    free(line);
    json_decref(out);
    fprintf(stderr,
            "%s fanout: %u subscribers, %.1f s: %.0f publishes/s, %.0f deliveries/s; latency "
            "p50 %.3f ms p99 %.3f ms; missing %" PRIu64 ", errors %" PRIu64
            "; server CPU %.0f%% (-100: not sampled), loadgen CPU %.0f%%\n",
            F.label ? F.label : "server", F.joined, el, el > 0 ? (double)pubs / el : 0, dps,
            lg_hist_quantile(&F.hist, 0.5) / 1e3, lg_hist_quantile(&F.hist, 0.99) / 1e3,
            expected > F.delivered_measured ? expected - F.delivered_measured : 0,
            F.errors + F.failed, srv_cpu * 100, lg_cpu * 100);
    free(F.data);
    uv_loop_close(F.loop);
    return F.joined == 0 || F.delivered_measured == 0 ? 3 : 0;
}
