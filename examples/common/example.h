/*
 * example.h: the command line every example server shares (--host, --port, --static, ...), so
 * that each example's own file is only its app. Header-only: examples are single files.
 */
#ifndef PS_EXAMPLE_H
#define PS_EXAMPLE_H

#include <pulsec.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*example_setup_fn)(ps_server *srv);

/* --log-json: one JSON object per line on stderr, for log collectors. */
static inline void example_log_json(ps_log_level level, const char *message, void *user)
{
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    json_t *line =
        json_pack("{s:s+,s:s,s:s,s:s}", "time", ts, "Z", "level", ps_log_level_name(level),
                  "logger", (const char *)user, "msg", message);
    if (!line) /* not UTF-8: keep the line, lose the odd bytes */
        line = json_pack("{s:s+,s:s,s:s,s:s}", "time", ts, "Z", "level", ps_log_level_name(level),
                         "logger", (const char *)user, "msg", "(message not valid UTF-8)");
    json_dumpf(line, stderr, JSON_COMPACT);
    fputc('\n', stderr);
    fflush(stderr);
    json_decref(line);
}

/* --resume-window MS: 0 means no recovery (PS_RESUME_OFF), as users of the flag expect. */
static inline uint32_t example_resume_window(const char *arg)
{
    unsigned long ms = strtoul(arg, NULL, 10);
    return ms == 0 || ms >= PS_RESUME_OFF ? PS_RESUME_OFF : (uint32_t)ms;
}

/* Listens, prints "listening on http(s)://HOST:PORT" (what tests wait for), runs until SIGINT
 * or SIGTERM (SIGHUP reloads a TLS certificate), frees the server. Returns the exit status. */
static inline int example_serve(ps_server *srv, const char *name, const ps_server_opts *opts)
{
    int rc = ps_server_listen(srv);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot listen on %s:%d: %s\n", name, opts->host, opts->port,
                ps_strerror(rc));
        ps_server_free(srv);
        return 1;
    }
    /* An IPv6 address goes in brackets in a URL. */
    bool v6 = strchr(opts->host, ':') && opts->host[0] != '[';
    printf("listening on %s://%s%s%s:%d\n", opts->tls_cert_file ? "https" : "http", v6 ? "[" : "",
           opts->host, v6 ? "]" : "", ps_server_port(srv));
    if (ps_server_metrics_port(srv) >= 0) {
        /* The metrics address's host as given: metrics_listen is "HOST:PORT". */
        const char *colon = strrchr(opts->metrics_listen, ':');
        printf("metrics on http://%.*s:%d/metrics\n", (int)(colon - opts->metrics_listen),
               opts->metrics_listen, ps_server_metrics_port(srv));
    }
    fflush(stdout);
    rc = ps_server_run(srv);
    ps_server_free(srv);
    return rc == 0 ? 0 : 1;
}

/* Parses the common flags, creates the server, lets `setup` register routes, prints
 * "listening on http://HOST:PORT" and runs until SIGINT/SIGTERM. Returns the exit status. */
static inline int example_main(int argc, char **argv, const char *name, const char *static_dir,
                               example_setup_fn setup)
{
    ps_server_opts opts = {.host = "127.0.0.1", .port = 8000, .static_dir = static_dir};
    static const char *origins[17]; /* up to 16 --origin flags, NULL-terminated */
    size_t norigins = 0;
    const char *env_port = getenv("PORT");
    if (env_port)
        opts.port = atoi(env_port);
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"static", required_argument, 0, 's'},
        {"ping-interval", required_argument, 0, 'i'},
        {"ping-timeout", required_argument, 0, 't'},
        {"origin", required_argument, 0, 'O'},
        {"workers", required_argument, 0, 'w'},
        {"redis", required_argument, 0, 'r'},
        {"resume-window", required_argument, 0, 1000},
        {"verbose", no_argument, 0, 'v'},
        {"log-json", no_argument, 0, 'J'},
        {"metrics", no_argument, 0, 'M'},
        {"metrics-listen", required_argument, 0, 'N'},
        {"tls-cert", required_argument, 0, 'C'},
        {"tls-key", required_argument, 0, 'K'},
        {"help", no_argument, 0, '?'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opts.host = optarg; break;
        case 'p': opts.port = atoi(optarg); break;
        case 's': opts.static_dir = optarg; break;
        case 'i': opts.ping_interval_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 't': opts.ping_timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'O':
            if (norigins + 1 >= sizeof origins / sizeof origins[0]) {
                fprintf(stderr, "%s: at most 16 --origin flags\n", name);
                return 2;
            }
            origins[norigins++] = optarg;
            opts.allowed_origins = origins;
            break;
        case 'w': opts.workers = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'r': opts.redis_url = optarg; break;
        case 1000: opts.resume_window_ms = example_resume_window(optarg); break;
        case 'v': ps_set_log_level(PS_LOG_DEBUG); break;
        case 'J': ps_set_log_fn(example_log_json, (void *)name); break;
        case 'M': opts.metrics = true; break;
        case 'N': opts.metrics_listen = optarg; break;
        case 'C': opts.tls_cert_file = optarg; break;
        case 'K': opts.tls_key_file = optarg; break;
        default:
            fprintf(stderr,
                    "usage: %s [--host ADDR] [--port N] [--static DIR] [--ping-interval MS]\n"
                    "       [--ping-timeout MS] [--origin ORIGIN]... [--workers N] [--redis URL]\n"
                    "       [--verbose] [--log-json] [--tls-cert PEM --tls-key PEM]\n"
                    "       [--metrics] [--metrics-listen HOST:PORT] [--resume-window MS]\n"
                    "  --origin: another browser origin allowed to connect (\"*\" = any, without\n"
                    "  credentials); without it only the server's own pages may connect\n",
                    name);
            return 2;
        }
    }
    ps_server *srv = ps_server_new(NULL, &opts);
    if (!srv)
        return 2;
    setup(srv);
    return example_serve(srv, name, &opts);
}

#endif
