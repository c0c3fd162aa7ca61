/*
 * loadgen: drives any server that speaks Engine.IO v4 / Socket.IO v5 over WebSocket and the
 * channel envelope of DESIGN §3 (pulsec's examples/echo, bench/baseline-socketio) with one of
 * four scenarios, and reports one JSON line on stdout plus a readable summary on stderr:
 *
 *   rr       N connections attach the view and keep k "echo" requests in flight on their
 *            channel (or, with --rate, send at a fixed total rate): round trips/s and latency.
 *   events   the same with "echo" events, which the server emits back: echoes/s and latency.
 *   idle     N connections attach and hold; with --server-pid, the server's RSS before and
 *            while holding gives bytes per idle connection.
 *   connect  C connectors loop over TCP + WebSocket upgrade + CONNECT + attach + close:
 *            completed attaches/s and their latency.
 *
 * A run is: ramp (open and attach every connection, --connect-concurrency at a time), warmup
 * (traffic, not recorded), measure (recorded), done (every connection reset). Latency is
 * measured from the moment a message was due, so with --rate a server that falls behind is
 * charged for the queue it builds (no coordinated omission). The loadgen is single-threaded;
 * its own CPU use is reported so that a saturated loadgen is visible in the results.
 */
#include "conn.h"
#include "hist.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

typedef enum { SC_RR, SC_EVENTS, SC_IDLE, SC_CONNECT } scenario;
static const char *const scenario_names[] = {"rr", "events", "idle", "connect"};

/* --rate sends what is due every tick: one interval between messages, within these bounds. */
#define PACE_TICK_MIN_NS 100000
#define PACE_TICK_MAX_NS 1000000

typedef enum { PH_RAMP, PH_WARMUP, PH_MEASURE, PH_DONE } phase;

typedef struct opts {
    scenario sc;
    const char *host;
    int port;
    const char *sio_path;
    const char *view;
    unsigned conns;       /* connections (rr, events, idle) or connectors (connect) */
    unsigned inflight;    /* requests/events in flight per connection */
    double rate;          /* total messages/s, 0 = closed loop */
    double duration;      /* measured seconds (idle: hold) */
    double warmup;        /* seconds of unrecorded traffic before measuring */
    double ramp_timeout;  /* give up waiting for the ramp after this long */
    unsigned payload;     /* bytes of the payload's "data" string */
    unsigned concurrency; /* handshakes in progress at once during the ramp */
    int server_pid;       /* sample this process's RSS and CPU, 0 = no */
    const char *label;    /* copied to the JSON line ("server") */
    bool strict;          /* exit 3 on any error or zero throughput */
    double timeline;      /* print completions and worst latency every this many s, 0 = no */
    bool tls;             /* connect with TLS (wss://) */
    int more_pids[15];    /* further --server-pid: their CPU is added (a server's workers) */
    int nmore_pids;
} opts;

/* One connection's requests in flight: slot i is busy with id "i.gen[i]" sent at t[i]. */
typedef struct peer {
    lg_conn *c;
    unsigned busy;  /* slots in use */
    unsigned nfree; /* entries in freelist */
    uint16_t *freelist;
    uint32_t *gen;
    uint64_t *t; /* when the message was due (ns) */
} peer;

typedef struct proc_sample {
    double cpu_s;  /* utime + stime, -1 when unknown */
    double user_s; /* utime */
    long rss_kb;   /* VmRSS */
} proc_sample;

typedef struct run {
    opts o;
    uv_loop_t *loop;
    lg_net net;
    phase ph;
    uv_timer_t timer;   /* phase changes */
    uv_poll_t pacer;    /* --rate: a timerfd ticking every pace_tick ns; sends what is due */
    uint64_t pace_tick; /* ns between ticks */
    int pacer_fd;       /* the timerfd, -1 when not pacing */
    peer **peers;       /* rr/events: one per connection, NULL until attached */
    unsigned started;   /* connections started during the ramp */
    unsigned ready;     /* connections attached */
    unsigned failed;    /* ramp connections that never attached */
    char *data;         /* the payload's "data" string */
    lg_hist hist;
    uint64_t completed; /* round trips / echoes / attaches while measuring */
    uint64_t sent;      /* messages sent while measuring */
    uint64_t issued;    /* --rate: messages due so far */
    unsigned cursor;    /* --rate: next peer to try */
    uint64_t t_ramp, t_warmup, t_measure, t_end; /* hrtime at each phase start */
    uint64_t errors[LG_NERR];
    uint64_t error_replies;  /* error responses to our requests */
    uint64_t mismatches;     /* responses or echoes we cannot match */
    uint64_t channel_closed; /* __close__ from the server */
    struct rusage ru_measure, ru_end;
    proc_sample srv_before, srv_measure, srv_end;
    long rss_held_kb;              /* idle: server RSS while holding */
    double busy_measure, busy_end; /* CPU seconds the whole machine spent busy (/proc/stat) */
    uv_timer_t tl_timer;           /* --timeline */
    uint64_t tl_completed;         /* completions since the last timeline line */
    uint64_t tl_worst;             /* worst latency since then (ns) */
} run;

static run R;

/* ---- helpers --------------------------------------------------------------------------- */

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static double rusage_cpu(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 + (double)ru->ru_stime.tv_sec +
           ru->ru_stime.tv_usec / 1e6;
}

static proc_sample sample_proc(int pid)
{
    proc_sample s = {-1, -1, -1};
    if (pid <= 0)
        return s;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        char *p = strrchr(buf, ')');
        unsigned long ut, st;
        /* After "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime stime. */
        if (p &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2) {
            s.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
            s.user_s = (double)ut / (double)sysconf(_SC_CLK_TCK);
        }
    }
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f) {
        while (fgets(buf, sizeof buf, f))
            if (sscanf(buf, "VmRSS: %ld kB", &s.rss_kb) == 1)
                break;
        fclose(f);
    }
    return s;
}

/* The server's sample: the first --server-pid's, with the CPU of the others added. */
static proc_sample sample_server(void)
{
    proc_sample s = sample_proc(R.o.server_pid);
    for (int i = 0; i < R.o.nmore_pids && s.cpu_s >= 0; i++) {
        proc_sample m = sample_proc(R.o.more_pids[i]);
        if (m.cpu_s >= 0) {
            s.cpu_s += m.cpu_s;
            s.user_s += m.user_s;
        }
    }
    return s;
}

/* CPU seconds all cores spent outside idle and iowait since boot, or -1. */
static double machine_busy(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 5)
        return -1;
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

/* Parses "slot.gen" at p (bounded by end); returns the byte after it, or NULL. */
static const char *parse_id(const char *p, const char *end, unsigned *slot, uint32_t *gen)
{
    uint64_t a = 0, b = 0;
    const char *q = p;
    while (q < end && *q >= '0' && *q <= '9')
        a = a * 10 + (uint64_t)(*q++ - '0');
    if (q == p || q >= end || *q != '.')
        return NULL;
    const char *r = ++q;
    while (q < end && *q >= '0' && *q <= '9')
        b = b * 10 + (uint64_t)(*q++ - '0');
    if (q == r || q >= end || *q != '"' || a > 65535 || b > UINT32_MAX)
        return NULL;
    *slot = (unsigned)a;
    *gen = (uint32_t)b;
    return q;
}

static const char *find(const char *s, size_t n, const char *needle, size_t nlen)
{
    const char *p = memmem(s, n, needle, nlen);
    return p ? p + nlen : NULL;
}
#define FIND(s, n, lit) find((s), (n), (lit), sizeof(lit) - 1)

/* ---- sending (rr, events) -------------------------------------------------------------- */

static peer *peer_new(lg_conn *c, unsigned k)
{
    peer *p = calloc(1, sizeof *p);
    p->c = c;
    p->freelist = calloc(k, sizeof *p->freelist);
    p->gen = calloc(k, sizeof *p->gen);
    p->t = calloc(k, sizeof *p->t);
    if (!p->freelist || !p->gen || !p->t)
        abort();
    for (unsigned i = 0; i < k; i++)
        p->freelist[p->nfree++] = (uint16_t)(k - 1 - i);
    return p;
}

static void peer_free(peer *p)
{
    free(p->freelist);
    free(p->gen);
    free(p->t);
    free(p);
}

/* Sends one message on p, due at `due` (ns); false when p has no free slot or is gone. */
static bool send_one(peer *p, uint64_t due)
{
    if (!p->c || p->nfree == 0)
        return false;
    unsigned slot = p->freelist[--p->nfree];
    uint32_t gen = ++p->gen[slot];
    char msg[512 + 65536];
    int n;
    if (R.o.sc == SC_RR)
        n = snprintf(msg, sizeof msg,
                     "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\","
                     "\"event\":\"echo\",\"payload\":{\"id\":\"%u.%u\",\"data\":\"%s\"},"
                     "\"requestId\":\"%u.%u\"}]",
                     lg_conn_channel(p->c), slot, gen, R.data, slot, gen);
    else
        n = snprintf(msg, sizeof msg,
                     "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\","
                     "\"event\":\"echo\",\"payload\":{\"id\":\"%u.%u\",\"data\":\"%s\"}}]",
                     lg_conn_channel(p->c), slot, gen, R.data);
    if (lg_conn_send(p->c, msg, (size_t)n) != 0) {
        p->freelist[p->nfree++] = (uint16_t)slot;
        return false;
    }
    p->t[slot] = due;
    p->busy++;
    if (R.ph == PH_MEASURE)
        R.sent++;
    return true;
}

static void fill(peer *p)
{
    uint64_t now = uv_hrtime();
    while (send_one(p, now))
        ;
}

/* A response or echo for "slot.gen" arrived on p. */
static void complete(peer *p, unsigned slot, uint32_t gen)
{
    if (slot >= R.o.inflight || p->gen[slot] != gen || p->t[slot] == 0) {
        R.mismatches++;
        return;
    }
    uint64_t now = uv_hrtime();
    if (R.ph == PH_MEASURE) {
        lg_hist_record(&R.hist, (now - p->t[slot]) / 1000);
        if (now - p->t[slot] > R.tl_worst)
            R.tl_worst = now - p->t[slot];
        R.tl_completed++;
        R.completed++;
    }
    p->t[slot] = 0;
    p->busy--;
    p->freelist[p->nfree++] = (uint16_t)slot;
    if (R.o.rate == 0 && (R.ph == PH_WARMUP || R.ph == PH_MEASURE))
        send_one(p, now);
}

/* The hot path: scans the event's JSON text instead of parsing it. Both servers send
 * {"type":"channel_message","channel":ID,"responseTo":RID,"payload":{"id":RID,...}} for a
 * response and {...,"event":"echo","payload":{"id":...}} for an echo. */
static void on_message(lg_conn *c, const char *json, size_t len)
{
    peer *p = lg_conn_data(c);
    const char *end = json + len;
    unsigned slot, slot2;
    uint32_t gen, gen2;
    const char *q;
    if (!p)
        return;
    if ((q = FIND(json, len, "\"responseTo\":\""))) {
        if (!parse_id(q, end, &slot, &gen)) {
            R.mismatches++;
            return;
        }
        if (FIND(q, (size_t)(end - q), "\"error\":")) {
            R.error_replies++;
        } else {
            const char *id = FIND(q, (size_t)(end - q), "\"id\":\"");
            if (!id || !parse_id(id, end, &slot2, &gen2) || slot2 != slot || gen2 != gen) {
                R.mismatches++;
                return;
            }
        }
        complete(p, slot, gen);
    } else if ((q = FIND(json, len, "\"event\":\""))) {
        if (end - q >= 5 && memcmp(q, "echo\"", 5) == 0) {
            const char *id = FIND(q, (size_t)(end - q), "\"id\":\"");
            if (id && parse_id(id, end, &slot, &gen))
                complete(p, slot, gen);
            else
                R.mismatches++;
        } else if (end - q >= 10 && memcmp(q, "__close__\"", 10) == 0) {
            R.channel_closed++;
        }
    }
}

static void on_pace(uv_poll_t *h, int status, int events)
{
    uint64_t expirations;
    if (read(R.pacer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        return;
    uint64_t now = uv_hrtime();
    /* Message i is due at t_warmup + i / rate. */
    uint64_t due = (uint64_t)(secs(now - R.t_warmup) * R.o.rate) + 1;
    unsigned n = R.o.conns, tried = 0;
    while (R.issued < due && tried < n) {
        peer *p = R.peers[R.cursor];
        R.cursor = (R.cursor + 1) % n;
        uint64_t t_due = R.t_warmup + (uint64_t)((double)R.issued * 1e9 / R.o.rate);
        /* Lateness below one tick is our timer's granularity, not the server's doing. */
        if (t_due < now && now - t_due <= R.pace_tick)
            t_due = now;
        if (p && send_one(p, t_due)) {
            R.issued++;
            tried = 0;
        } else {
            tried++;
        }
    }
}

/* ---- phases ---------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);
static void start_connection(void);

static void enter_done(void)
{
    R.ph = PH_DONE;
    R.t_end = uv_hrtime();
    getrusage(RUSAGE_SELF, &R.ru_end);
    R.srv_end = sample_server();
    R.busy_end = machine_busy();
    if (R.o.sc == SC_IDLE) {
        R.rss_held_kb = R.srv_end.rss_kb;
        R.completed = R.ready;
    }
    uv_timer_stop(&R.timer);
    uv_close((uv_handle_t *)&R.timer, NULL);
    uv_close((uv_handle_t *)&R.tl_timer, NULL);
    if (R.pacer_fd >= 0) {
        uv_poll_stop(&R.pacer);
        uv_close((uv_handle_t *)&R.pacer, NULL);
    }
    lg_net_abort_all(&R.net);
    lg_net_close(&R.net);
}

static void on_timeline(uv_timer_t *t)
{
    fprintf(stderr, "  t=%6.2fs %8.0f/s worst %9.3f ms\n", secs(uv_hrtime() - R.t_measure),
            (double)R.tl_completed / R.o.timeline, (double)R.tl_worst / 1e6);
    R.tl_completed = 0;
    R.tl_worst = 0;
}

static void enter_measure(void)
{
    R.ph = PH_MEASURE;
    lg_hist_init(&R.hist);
    R.completed = R.sent = 0;
    R.t_measure = uv_hrtime();
    getrusage(RUSAGE_SELF, &R.ru_measure);
    R.srv_measure = sample_server();
    R.busy_measure = machine_busy();
    uv_timer_start(&R.timer, on_timer, (uint64_t)(R.o.duration * 1000), 0);
    if (R.o.timeline > 0) {
        uint64_t every = (uint64_t)(R.o.timeline * 1000);
        uv_timer_start(&R.tl_timer, on_timeline, every, every);
    }
}

/* Paces --rate with a timerfd rather than libuv's millisecond timers, so that sends are spread
 * over each millisecond instead of leaving in one burst, and without spinning a core. A message
 * is charged from the moment it was due, except for lateness below one tick. */
static void start_pacer(void)
{
    double interval = 1e9 / R.o.rate;
    R.pace_tick = interval < PACE_TICK_MIN_NS   ? PACE_TICK_MIN_NS
                  : interval > PACE_TICK_MAX_NS ? PACE_TICK_MAX_NS
                                                : (uint64_t)interval;
    struct itimerspec its = {{0, (long)R.pace_tick}, {0, (long)R.pace_tick}};
    R.pacer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (R.pacer_fd < 0 || timerfd_settime(R.pacer_fd, 0, &its, NULL) != 0 ||
        uv_poll_init(R.loop, &R.pacer, R.pacer_fd) != 0) {
        perror("loadgen: timerfd");
        exit(1);
    }
    uv_poll_start(&R.pacer, UV_READABLE, on_pace);
}

static void enter_warmup(void)
{
    R.ph = PH_WARMUP;
    R.t_warmup = uv_hrtime();
    if (R.o.sc == SC_RR || R.o.sc == SC_EVENTS) {
        if (R.o.rate > 0)
            start_pacer();
        else
            for (unsigned i = 0; i < R.o.conns; i++)
                if (R.peers[i])
                    fill(R.peers[i]);
    }
    /* idle: the warmup is the settle time before the first RSS sample. */
    uv_timer_start(&R.timer, on_timer, (uint64_t)(R.o.warmup * 1000), 0);
}

static void on_timer(uv_timer_t *t)
{
    switch (R.ph) {
    case PH_RAMP:
        fprintf(stderr, "loadgen: ramp timed out with %u of %u connections attached\n", R.ready,
                R.o.conns);
        enter_warmup();
        break;
    case PH_WARMUP: enter_measure(); break;
    case PH_MEASURE: enter_done(); break;
    case PH_DONE: break;
    }
}

static void ramp_progress(void)
{
    if (R.ph == PH_RAMP && R.ready + R.failed >= R.o.conns) {
        uv_timer_stop(&R.timer);
        enter_warmup();
    }
}

static void start_connection(void)
{
    if (R.o.sc == SC_CONNECT) {
        lg_conn_start(&R.net, NULL);
        return;
    }
    if (R.started >= R.o.conns)
        return;
    R.started++;
    lg_conn_start(&R.net, NULL);
}

/* ---- connection hooks ------------------------------------------------------------------ */

static unsigned peer_index(void)
{
    return R.ready - 1;
}

static void on_ready(lg_conn *c)
{
    if (R.o.sc == SC_CONNECT) {
        if (R.ph == PH_MEASURE) {
            lg_hist_record(&R.hist, (uv_hrtime() - lg_conn_started(c)) / 1000);
            R.completed++;
        }
        lg_conn_set_data(c, &R); /* marks it as one that attached */
        lg_conn_close(c, true);
        if (R.ph != PH_DONE)
            start_connection();
        return;
    }
    R.ready++;
    if (R.o.sc == SC_RR || R.o.sc == SC_EVENTS) {
        peer *p = peer_new(c, R.o.inflight);
        R.peers[peer_index()] = p;
        lg_conn_set_data(c, p);
        if (R.ph == PH_WARMUP || R.ph == PH_MEASURE) {
            if (R.o.rate == 0)
                fill(p);
        }
    }
    start_connection();
    ramp_progress();
}

static void on_closed(lg_conn *c, lg_err why)
{
    void *data = lg_conn_data(c);
    if (R.o.sc == SC_CONNECT) {
        if (why != LG_EOK && R.ph != PH_DONE)
            R.errors[why]++;
        if (!data && R.ph != PH_DONE)
            start_connection(); /* a connector whose attempt failed tries again */
        return;
    }
    if (data && (R.o.sc == SC_RR || R.o.sc == SC_EVENTS)) {
        peer *p = data;
        p->c = NULL;
    }
    if (R.ph == PH_DONE)
        return;
    R.errors[why == LG_EOK ? LG_ECLOSED : why]++;
    if (R.ph == PH_RAMP && !data && why != LG_EOK) {
        R.failed++;
        start_connection();
        ramp_progress();
    }
}

static const lg_hooks hooks = {on_ready, on_message, on_closed};

/* ---- report ---------------------------------------------------------------------------- */

static uint64_t total_errors(void)
{
    uint64_t n = R.error_replies + R.mismatches + R.channel_closed;
    for (int i = 1; i < LG_NERR; i++)
        n += R.errors[i];
    return n;
}

static int report(void)
{
    double elapsed = secs(R.t_end - R.t_measure);
    double per_sec = elapsed > 0 ? (double)R.completed / elapsed : 0;
    double lg_cpu = elapsed > 0 ? (rusage_cpu(&R.ru_end) - rusage_cpu(&R.ru_measure)) / elapsed : 0;
    const char *unit = R.o.sc == SC_RR       ? "round_trips/s"
                       : R.o.sc == SC_EVENTS ? "echoes/s"
                       : R.o.sc == SC_IDLE   ? "connections"
                                             : "connects/s";
    uint64_t errors = total_errors();

    json_t *out = json_object();
    json_object_set_new(out, "scenario", json_string(scenario_names[R.o.sc]));
    if (R.o.label)
        json_object_set_new(out, "server", json_string(R.o.label));
    json_object_set_new(out, "conns", json_integer(R.o.conns));
    if (R.o.sc == SC_RR || R.o.sc == SC_EVENTS) {
        json_object_set_new(out, "inflight", json_integer(R.o.inflight));
        json_object_set_new(out, "rate", json_real(R.o.rate));
        json_object_set_new(out, "payload_bytes", json_integer(R.o.payload));
    }
    json_object_set_new(out, "connected",
                        json_integer(R.o.sc == SC_CONNECT ? R.completed : R.ready));
    if (R.o.sc != SC_CONNECT)
        json_object_set_new(out, "ramp_s", json_real(secs(R.t_warmup - R.t_ramp)));
    json_object_set_new(out, "duration_s", json_real(elapsed));
    json_object_set_new(out, "completed", json_integer((json_int_t)R.completed));
    json_object_set_new(out, "per_sec", json_real(R.o.sc == SC_IDLE ? 0 : per_sec));
    json_object_set_new(out, "unit", json_string(unit));
    if (R.o.sc != SC_IDLE) {
        json_t *lat = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "p50",
                                (json_int_t)lg_hist_quantile(&R.hist, 0.50), "p90",
                                (json_int_t)lg_hist_quantile(&R.hist, 0.90), "p99",
                                (json_int_t)lg_hist_quantile(&R.hist, 0.99), "p999",
                                (json_int_t)lg_hist_quantile(&R.hist, 0.999), "min",
                                (json_int_t)(R.hist.count ? R.hist.min : 0), "max",
                                (json_int_t)R.hist.max, "mean", lg_hist_mean(&R.hist));
        json_object_set_new(out, "latency_us", lat);
    }
    json_object_set_new(out, "errors", json_integer((json_int_t)errors));
    json_t *detail = json_object();
    for (int i = 1; i < LG_NERR; i++)
        if (R.errors[i])
            json_object_set_new(detail, lg_err_name((lg_err)i),
                                json_integer((json_int_t)R.errors[i]));
    if (R.error_replies)
        json_object_set_new(detail, "error_replies", json_integer((json_int_t)R.error_replies));
    if (R.mismatches)
        json_object_set_new(detail, "mismatches", json_integer((json_int_t)R.mismatches));
    if (R.channel_closed)
        json_object_set_new(detail, "channel_closed", json_integer((json_int_t)R.channel_closed));
    json_object_set_new(out, "error_detail", detail);
    json_object_set_new(out, "loadgen_cpu", json_real(lg_cpu));
    if (R.busy_measure >= 0 && R.busy_end >= 0 && elapsed > 0)
        json_object_set_new(out, "machine_cpu", json_real((R.busy_end - R.busy_measure) / elapsed));
    if (R.o.server_pid > 0) {
        json_t *srv = json_object();
        json_object_set_new(srv, "pid", json_integer(R.o.server_pid));
        if (R.srv_end.cpu_s >= 0 && elapsed > 0) {
            json_object_set_new(srv, "cpu",
                                json_real((R.srv_end.cpu_s - R.srv_measure.cpu_s) / elapsed));
            json_object_set_new(srv, "cpu_user",
                                json_real((R.srv_end.user_s - R.srv_measure.user_s) / elapsed));
        }
        json_object_set_new(srv, "rss_before_kb", json_integer(R.srv_before.rss_kb));
        json_object_set_new(srv, "rss_end_kb", json_integer(R.srv_end.rss_kb));
        if (R.o.sc == SC_IDLE) {
            json_object_set_new(srv, "rss_held_kb", json_integer(R.rss_held_kb));
            if (R.ready > 0)
                json_object_set_new(
                    srv, "bytes_per_conn",
                    json_real((double)(R.rss_held_kb - R.srv_before.rss_kb) * 1024.0 / R.ready));
        }
        json_object_set_new(out, "server_proc", srv);
    }
    char *line = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
    printf("%s\n", line);
    fflush(stdout);
    free(line);
    json_decref(out);

    const char *who = R.o.label ? R.o.label : "server";
    switch (R.o.sc) {
    case SC_RR:
    case SC_EVENTS:
        fprintf(stderr,
                "%s %s: %u conns x %u in flight%s, %.1f s: %.0f %s; latency p50 %.3f ms, "
                "p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",
                who, scenario_names[R.o.sc], R.ready, R.o.inflight, R.o.rate > 0 ? " (paced)" : "",
                elapsed, per_sec, unit, lg_hist_quantile(&R.hist, 0.5) / 1e3,
                lg_hist_quantile(&R.hist, 0.99) / 1e3, lg_hist_quantile(&R.hist, 0.999) / 1e3,
                R.hist.max / 1e3);
        break;
    case SC_IDLE:
        fprintf(stderr, "%s idle: %u of %u connections attached in %.1f s, held %.1f s", who,
                R.ready, R.o.conns, secs(R.t_warmup - R.t_ramp), elapsed);
        if (R.o.server_pid > 0 && R.ready > 0)
            fprintf(stderr, "; server RSS %ld -> %ld kB = %.0f bytes per connection",
                    R.srv_before.rss_kb, R.rss_held_kb,
                    (double)(R.rss_held_kb - R.srv_before.rss_kb) * 1024.0 / R.ready);
        fprintf(stderr, "\n");
        break;
    case SC_CONNECT:
        fprintf(
            stderr,
            "%s connect: %u connectors, %.1f s: %.0f connects/s (handshake + CONNECT + attach); "
            "latency p50 %.3f ms, p99 %.3f ms\n",
            who, R.o.conns, elapsed, per_sec, lg_hist_quantile(&R.hist, 0.5) / 1e3,
            lg_hist_quantile(&R.hist, 0.99) / 1e3);
        break;
    }
    fprintf(stderr, "  errors %llu", (unsigned long long)errors);
    for (int i = 1; i < LG_NERR; i++)
        if (R.errors[i])
            fprintf(stderr, ", %s: %llu", lg_err_text((lg_err)i), (unsigned long long)R.errors[i]);
    if (R.error_replies)
        fprintf(stderr, ", error replies: %llu", (unsigned long long)R.error_replies);
    if (R.mismatches)
        fprintf(stderr, ", unmatched: %llu", (unsigned long long)R.mismatches);
    if (R.channel_closed)
        fprintf(stderr, ", channels closed by server: %llu", (unsigned long long)R.channel_closed);
    fprintf(stderr, "; loadgen CPU %.0f%%", lg_cpu * 100);
    if (R.o.server_pid > 0 && R.srv_end.cpu_s >= 0 && elapsed > 0)
        fprintf(stderr, ", server CPU %.0f%%",
                (R.srv_end.cpu_s - R.srv_measure.cpu_s) / elapsed * 100);
    fprintf(stderr, "\n");

    if (!R.o.strict)
        return 0;
    bool ok = errors == 0 && (R.o.sc == SC_IDLE ? R.ready == R.o.conns : R.completed > 0);
    return ok ? 0 : 3;
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: loadgen rr|events|idle|connect [options]\n"
               "  --host ADDR              server address (127.0.0.1)\n"
               "  --port N                 server port (8000)\n"
               "  --path PATH              Engine.IO path (/socket.io/)\n"
               "  --view PATH              view every connection attaches (/echo)\n"
               "  -c, --conns N            connections; connect: parallel connectors (100)\n"
               "  -k, --inflight K         messages in flight per connection (1; 64 with --rate)\n"
               "  -r, --rate R             total messages/s, paced (rr, events); 0 = closed loop\n"
               "  -d, --duration S         measured seconds; idle: seconds held (5)\n"
               "  -w, --warmup S           unrecorded seconds first; idle: settle time (1)\n"
               "  --payload BYTES          size of the payload's data string (32)\n"
               "  --connect-concurrency N  handshakes in progress at once in the ramp (256)\n"
               "  --ramp-timeout S         stop waiting for the ramp after S seconds (120)\n"
               "  --server-pid PID         sample the server's RSS and CPU (/proc); repeated, the\n"
               "                           CPU of the others is added (a server's workers)\n"
               "  --label NAME             server name for the JSON line\n"
               "  --strict                 exit 3 on any error or zero throughput\n"
               "  --timeline S             print throughput and worst latency every S seconds\n"
               "  --tls                    wss:// (TLS 1.2+, certificate not verified)\n");
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int parse_opts(int argc, char **argv, opts *o)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'},
        {"path", required_argument, 0, 'P'},
        {"view", required_argument, 0, 'V'},
        {"conns", required_argument, 0, 'c'},
        {"inflight", required_argument, 0, 'k'},
        {"rate", required_argument, 0, 'r'},
        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"payload", required_argument, 0, 'b'},
        {"connect-concurrency", required_argument, 0, 'C'},
        {"ramp-timeout", required_argument, 0, 'T'},
        {"server-pid", required_argument, 0, 'S'},
        {"label", required_argument, 0, 'L'},
        {"strict", no_argument, 0, 's'},
        {"timeline", required_argument, 0, 't'},
        {"tls", no_argument, 0, 'Z'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (opts){.host = "127.0.0.1",
                .port = 8000,
                .sio_path = "/socket.io/",
                .view = "/echo",
                .conns = 100,
                .duration = 5,
                .warmup = 1,
                .ramp_timeout = 120,
                .payload = 32,
                .concurrency = 256};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:k:r:d:w:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = atoi(optarg); break;
        case 'P': o->sio_path = optarg; break;
        case 'V': o->view = optarg; break;
        case 'c': o->conns = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'k': o->inflight = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': o->rate = strtod(optarg, NULL); break;
        case 'd': o->duration = strtod(optarg, NULL); break;
        case 'w': o->warmup = strtod(optarg, NULL); break;
        case 'b': o->payload = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'C': o->concurrency = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'T': o->ramp_timeout = strtod(optarg, NULL); break;
        case 'S':
            if (!o->server_pid)
                o->server_pid = atoi(optarg);
            else if (o->nmore_pids < (int)(sizeof o->more_pids / sizeof o->more_pids[0]))
                o->more_pids[o->nmore_pids++] = atoi(optarg);
            break;
        case 'L': o->label = optarg; break;
        case 's': o->strict = true; break;
        case 't': o->timeline = strtod(optarg, NULL); break;
        case 'Z': o->tls = true; break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (optind != argc - 1)
        return -1;
    int i;
    for (i = 0; i < 4; i++)
        if (strcmp(argv[optind], scenario_names[i]) == 0)
            break;
    if (i == 4)
        return -1;
    o->sc = (scenario)i;
    if (o->inflight == 0)
        o->inflight = o->rate > 0 ? 64 : 1;
    if (o->conns == 0 || o->inflight > 4096 || o->payload > 65536 || o->duration <= 0 ||
        o->concurrency == 0 || o->port <= 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_opts(argc, argv, &R.o) != 0) {
        usage(stderr);
        return 2;
    }
    raise_nofile();
    R.loop = uv_default_loop();
    if (lg_net_init(&R.net, R.loop, R.o.host, R.o.port, R.o.sio_path, R.o.view, &hooks) != 0) {
        fprintf(stderr, "loadgen: bad address %s\n", R.o.host);
        return 2;
    }
    if (R.o.tls && lg_net_use_tls(&R.net) != 0) {
        fprintf(stderr, "loadgen: no TLS context\n");
        return 2;
    }
    R.data = malloc(R.o.payload + 1);
    memset(R.data, 'x', R.o.payload);
    R.data[R.o.payload] = '\0';
    if (R.o.sc == SC_RR || R.o.sc == SC_EVENTS)
        R.peers = calloc(R.o.conns, sizeof *R.peers);
    uv_timer_init(R.loop, &R.timer);
    uv_timer_init(R.loop, &R.tl_timer);
    R.pacer_fd = -1;
    R.srv_before = sample_server();
    R.t_ramp = uv_hrtime();

    if (R.o.sc == SC_CONNECT) {
        for (unsigned i = 0; i < R.o.conns; i++)
            start_connection();
        enter_warmup();
    } else {
        R.ph = PH_RAMP;
        uv_timer_start(&R.timer, on_timer, (uint64_t)(R.o.ramp_timeout * 1000), 0);
        unsigned first = R.o.concurrency < R.o.conns ? R.o.concurrency : R.o.conns;
        for (unsigned i = 0; i < first; i++)
            start_connection();
    }
    uv_run(R.loop, UV_RUN_DEFAULT);

    int rc = report();
    if (R.peers) {
        for (unsigned i = 0; i < R.o.conns; i++)
            if (R.peers[i])
                peer_free(R.peers[i]);
        free(R.peers);
    }
    free(R.data);
    if (R.pacer_fd >= 0)
        close(R.pacer_fd);
    uv_loop_close(R.loop);
    return rc;
}
