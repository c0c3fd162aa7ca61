/*
 * http: one ps__http_conn per accepted TCP connection until it is upgraded or closed. The
 * request being parsed is accumulated in a few buffers (url, headers as name\0value\0 pairs,
 * body) and dispatched on message completion; responses are written synchronously, in order,
 * so pipelined requests need no queue. Limits are enforced while parsing, before any buffer can
 * grow past them.
 *
 * A connection sometimes has to wait before it answers the next request: a long-poll is held,
 * more than PS__CONN_HIGH_WATER of its output is unread (a client that pipelines requests and
 * never reads would otherwise make us queue every answer), or a static file is still going out
 * in chunks. Meanwhile its input is stashed unparsed; parsing goes on when the wait ends.
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 100
#define MAX_STATIC_FILE (64u * 1024 * 1024)
/* Static files larger than this go out in chunks of it, each once the output has drained. */
#define STATIC_CHUNK (256u * 1024)

struct ps__http_conn {
    ps__conn *conn;
    const ps__http_config *cfg;
    http_parser parser;
    ps__buf url;
    ps__buf hbuf;                /* name\0value\0 ... */
    size_t hoff[MAX_HEADERS][2]; /* offsets of name and value in hbuf */
    size_t nheaders;
    bool in_value;       /* the last header callback was a value */
    size_t header_bytes; /* request line + headers so far */
    ps__buf body;
    size_t body_max;  /* this request's body limit */
    int error_status; /* a limit was hit: answer this and close */
    bool message_done;
    bool taken; /* handed over by an upgrade */
    bool closing;
    const char *rest; /* bytes after an upgrade request */
    size_t rest_len;
    /* A deferred response (a long-poll GET): input is stashed until it is answered. */
    bool deferred;
    bool deferred_keep_alive;
    bool deferred_head;
    void (*on_abort)(void *user);
    void *abort_user;
    ps__buf stash;   /* input not parsed yet: it waits for the connection (see above) */
    ps__timer *idle; /* idle_timeout_ms: armed while waiting for (the rest of) a request */
    bool in_request; /* bytes of a request have arrived */
    int route;       /* >= 0: cfg->route chose to hand the connection over at this head */
    bool eof;        /* the peer sent FIN while the connection was waiting: close after */
    /* A static file going out in STATIC_CHUNK pieces. */
    int file_fd; /* -1 when none */
    uint64_t file_left;
    bool file_keep_alive; /* the connection serves another request after it */
};

static void hc_on_read(ps__conn *c, const char *data, size_t len);
static void hc_on_eof(ps__conn *c);
static void hc_on_close(ps__conn *c);
static void hc_on_drained(ps__conn *c);
static const ps__conn_cbs hc_cbs = {.on_read = hc_on_read,
                                    .on_eof = hc_on_eof,
                                    .on_close = hc_on_close,
                                    .on_drained = hc_on_drained};

/* Whether the next request must wait for output to drain first. */
static bool hc_output_busy(const ps__http_conn *hc)
{
    return hc->file_fd >= 0 || hc->conn->throttled;
}

/* The peer went away (or the server closes) while a response was owed: tell its owner once. */
static void hc_abort_deferred(ps__http_conn *hc)
{
    if (!hc->deferred)
        return;
    hc->deferred = false;
    void (*fn)(void *) = hc->on_abort;
    hc->on_abort = NULL;
    if (fn)
        fn(hc->abort_user);
}

/* ---- small public helpers -------------------------------------------------------------- */

const char *ps__http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

const char *ps__http_content_type(const char *path)
{
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".wasm", "application/wasm"},
        {".woff", "font/woff"},
        {".woff2", "font/woff2"},
        {".xml", "application/xml"},
        {".pdf", "application/pdf"},
    };
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash)) {
        for (size_t i = 0; i < PS__ARRAY_SIZE(types); i++)
            if (ps__strcaseeq(dot, types[i].ext))
                return types[i].type;
    }
    return "application/octet-stream";
}

const char *ps__http_headers_find(const ps__http_header *headers, size_t n, const char *name)
{
    const char *found = NULL;
    for (size_t i = 0; i < n; i++)
        if (ps__strcaseeq(headers[i].name, name))
            found = headers[i].value;
    return found;
}

const char *ps__http_header_get(const ps__http_req *req, const char *name)
{
    return ps__http_headers_find(req->headers, req->nheaders, name);
}

bool ps__http_header_has_token(const ps__http_req *req, const char *name, const char *token)
{
    size_t tlen = strlen(token);
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!ps__strcaseeq(req->headers[i].name, name))
            continue;
        const char *p = req->headers[i].value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *start = p;
            while (*p && *p != ',')
                p++;
            const char *end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if ((size_t)(end - start) == tlen && ps__strncaseeq(start, tlen, token))
                return true;
        }
    }
    return false;
}

bool ps__http_query_get(const char *query, const char *name, ps__buf *out)
{
    size_t nlen = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t plen = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq ? (size_t)(eq - p) : plen;
        if (klen == nlen && memcmp(p, name, nlen) == 0) {
            ps__buf_reset(out);
            if (eq)
                ps__buf_append(out, eq + 1, plen - klen - 1);
            else
                ps__buf_reserve(out, 0);
            long n = ps__url_decode(out->base, out->len, true);
            if (n < 0)
                return false;
            out->len = (size_t)n;
            out->base[n] = '\0';
            return true;
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

char *ps__http_resolve_static(const char *root, const char *raw_path)
{
    size_t n = strlen(raw_path);
    char *path = ps__strndup(raw_path, n);
    long dlen = ps__url_decode(path, n, false);
    char *result = NULL;
    if (dlen < 0 || memchr(path, '\0', (size_t)dlen) || path[0] != '/')
        goto out;
    /* Refuse any ".." segment outright, whatever realpath would make of it. */
    for (const char *seg = path; seg && *seg;) {
        while (*seg == '/')
            seg++;
        const char *end = strchr(seg, '/');
        size_t slen = end ? (size_t)(end - seg) : strlen(seg);
        if ((slen == 2 && seg[0] == '.' && seg[1] == '.') || memchr(seg, '\\', slen))
            goto out;
        seg = end;
    }
    ps__buf full;
    ps__buf_init(&full);
    ps__buf_appends(&full, root);
    ps__buf_appends(&full, path);
    struct stat st;
    if (stat(full.base, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (full.base[full.len - 1] != '/')
            ps__buf_appendc(&full, '/');
        ps__buf_appends(&full, "index.html");
    }
    char real[PATH_MAX];
    if (realpath(full.base, real)) {
        size_t rlen = strlen(root);
        /* Inside means root itself or below a '/' that follows it ("/" ends in one already). */
        if (strncmp(real, root, rlen) == 0 &&
            (real[rlen] == '/' || real[rlen] == '\0' || (rlen > 0 && root[rlen - 1] == '/')))
            result = ps__strdup(real);
    }
    ps__buf_free(&full);
out:
    ps__free(path);
    return result;
}

/* ---- responses ------------------------------------------------------------------------- */

/* RFC 9110 §5.6.7's IMF-fixdate, by hand: strftime's day and month names follow the locale.
 * Formatted once per second per thread (each server's loop runs on one thread). */
const char *ps__http_date(void)
{
    static _Thread_local char text[64]; /* 29 used; room for what -Wformat-truncation imagines */
    static _Thread_local time_t last = -1;
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        last = now;
    }
    return text;
}

void ps__http_respond(ps__http_req *req, int status, const char *content_type, const char *body,
                      size_t body_len, const char *extra_headers)
{
    ps__http_conn *hc = req->hc;
    if (req->answered || hc->closing)
        return;
    req->answered = true;
    if (status >= 400 && req->upgrade)
        req->keep_alive = false;
    ps__buf head;
    ps__buf_init(&head);
    ps__buf_printf(&head,
                   "HTTP/1.1 %d %s\r\n"
                   "Date: %s\r\n"
                   "Content-Length: %zu\r\n"
                   "Connection: %s\r\n",
                   status, ps__http_status_text(status), ps__http_date(), body_len,
                   req->keep_alive ? "keep-alive" : "close");
    if (content_type)
        ps__buf_printf(&head, "Content-Type: %s\r\n", content_type);
    if (extra_headers)
        ps__buf_appends(&head, extra_headers);
    ps__buf_appends(&head, "\r\n");
    uv_buf_t bufs[2] = {uv_buf_init(head.base, (unsigned)head.len),
                        uv_buf_init((char *)body, (unsigned)body_len)};
    bool head_only = req->method_id == HTTP_HEAD;
    ps__conn_writev(hc->conn, bufs, head_only || !body ? 1 : 2);
    ps__buf_free(&head);
}

void ps__http_respond_json_error(ps__http_req *req, int status, int code, const char *message)
{
    ps__buf body;
    ps__buf_init(&body);
    ps__buf_printf(&body, "{\"code\":%d,\"message\":", code);
    ps__json_escape(&body, message);
    ps__buf_appendc(&body, '}');
    ps__http_respond(req, status, "application/json", body.base, body.len, NULL);
    ps__buf_free(&body);
}

static void respond_text(ps__http_req *req, int status, const char *extra)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, ps__http_status_text(status));
    ps__http_respond(req, status, "text/plain; charset=utf-8", body, (size_t)n, extra);
}

/* Answers an error outside any dispatched request (limits, parse errors), then closes. */
static void respond_fatal(ps__http_conn *hc, int status)
{
    ps__http_req req = {.hc = hc, .keep_alive = false, .method_id = -1};
    respond_text(&req, status, NULL);
    hc->closing = true;
    ps__conn_close(hc->conn);
}

ps__conn *ps__http_take_conn(ps__http_req *req, const char **rest, size_t *rest_len)
{
    ps__http_conn *hc = req->hc;
    if (hc->idle)
        ps__timer_stop(hc->idle);
    req->answered = true;
    hc->taken = true;
    *rest = hc->rest;
    *rest_len = hc->rest_len;
    ps__conn *c = hc->conn;
    c->cbs = NULL;
    c->data = NULL;
    return c;
}

/* ---- static files ---------------------------------------------------------------------- */

static void serve_static(ps__http_req *req, const char *root)
{
    if (req->method_id != HTTP_GET && req->method_id != HTTP_HEAD) {
        respond_text(req, 405, "Allow: GET, HEAD\r\n");
        return;
    }
    char *file = ps__http_resolve_static(root, req->path);
    if (!file) {
        respond_text(req, 404, NULL);
        return;
    }
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_STATIC_FILE) {
        if (fd >= 0)
            close(fd);
        ps__free(file);
        respond_text(req, 404, NULL);
        return;
    }
    /* Static files are the demo pages' few bundles: reading them synchronously keeps this simple
     * and costs the loop far less than a single TLS handshake would. */
    size_t size = (size_t)st.st_size;
    static const char headers[] = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n";
    if (req->method_id == HTTP_HEAD || size > STATIC_CHUNK) {
        /* Written whole, a large file would sit in memory for as long as the client takes to
         * read it, once per request it pipelines: it goes out a chunk at a time instead
         * (pump_file, once dispatch is over). */
        ps__http_respond(req, 200, ps__http_content_type(file), NULL, size, headers);
        ps__http_conn *hc = req->hc;
        if (req->method_id == HTTP_HEAD) {
            close(fd);
        } else {
            hc->file_fd = fd;
            hc->file_left = size;
            hc->file_keep_alive = req->keep_alive;
            req->keep_alive = true; /* dispatch must not close under the file: pump_file will */
        }
        ps__free(file);
        return;
    }
    char *data = ps__malloc(size ? size : 1);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, data + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size)
        respond_text(req, 500, NULL);
    else
        ps__http_respond(req, 200, ps__http_content_type(file), data, size, headers);
    ps__free(data);
    ps__free(file);
}

static void file_done(ps__http_conn *hc)
{
    close(hc->file_fd);
    hc->file_fd = -1;
    hc->file_left = 0;
}

/*
 * Writes chunks of the file being served until it is all out or the output is over
 * PS__CONN_HIGH_WATER (hc_on_drained then calls again). After the last chunk the connection
 * closes or serves the next request. A file that shrank under us ends the connection: its
 * Content-Length can no longer be kept.
 */
static void pump_file(ps__http_conn *hc)
{
    char *chunk = NULL;
    while (hc->file_left > 0 && !hc->conn->throttled && !hc->closing) {
        size_t n = hc->file_left < STATIC_CHUNK ? (size_t)hc->file_left : STATIC_CHUNK;
        if (!chunk)
            chunk = ps__malloc(STATIC_CHUNK);
        ssize_t r;
        do
            r = read(hc->file_fd, chunk, n);
        while (r < 0 && errno == EINTR);
        if (r <= 0) {
            PS__WARN("static file shrank while being sent to %s", hc->conn->peer);
            hc->closing = true;
            ps__conn_abort(hc->conn);
            break;
        }
        hc->file_left -= (size_t)r;
        ps__conn_write(hc->conn, chunk, (size_t)r);
    }
    ps__free(chunk);
    if (hc->closing || hc->file_left > 0)
        return;
    file_done(hc);
    if (!hc->file_keep_alive) {
        hc->closing = true;
        ps__conn_close(hc->conn);
    }
}

/* ---- parsing --------------------------------------------------------------------------- */

static void request_reset(ps__http_conn *hc)
{
    ps__buf_reset(&hc->url);
    ps__buf_reset(&hc->hbuf);
    ps__buf_reset(&hc->body);
    hc->nheaders = 0;
    hc->in_value = false;
    hc->header_bytes = 0;
    hc->message_done = false;
}

static int count_header_bytes(ps__http_conn *hc, size_t len)
{
    hc->header_bytes += len;
    if (hc->header_bytes > hc->cfg->max_header_size) {
        hc->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    ps__http_conn *hc = p->data;
    request_reset(hc);
    hc->in_request = true;
    return 0;
}

/* Waiting for a request again (after a response, at the start): the idle bound applies. */
static void idle_arm(ps__http_conn *hc)
{
    hc->in_request = false;
    if (hc->idle)
        ps__timer_start(hc->idle, hc->cfg->idle_timeout_ms);
}

static void idle_fire(ps__timer *t, void *data)
{
    ps__http_conn *hc = data;
    if (hc->closing || hc->taken || hc->deferred)
        return;
    if (hc->in_request)
        respond_fatal(hc, 408); /* a request that never completes: slowloris or a dead peer */
    else {
        hc->closing = true;
        ps__conn_close(hc->conn);
    }
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    ps__http_conn *hc = p->data;
    if (count_header_bytes(hc, len))
        return -1;
    ps__buf_append(&hc->url, at, len);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    ps__http_conn *hc = p->data;
    if (count_header_bytes(hc, len))
        return -1;
    if (hc->in_value || hc->nheaders == 0) {
        if (hc->nheaders == MAX_HEADERS) {
            hc->error_status = 431;
            return -1;
        }
        if (hc->nheaders > 0)
            ps__buf_appendc(&hc->hbuf, '\0');
        hc->hoff[hc->nheaders][0] = hc->hbuf.len;
        hc->hoff[hc->nheaders][1] = SIZE_MAX;
        hc->nheaders++;
        hc->in_value = false;
    }
    ps__buf_append(&hc->hbuf, at, len);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    ps__http_conn *hc = p->data;
    if (count_header_bytes(hc, len))
        return -1;
    if (!hc->in_value) {
        ps__buf_appendc(&hc->hbuf, '\0');
        hc->hoff[hc->nheaders - 1][1] = hc->hbuf.len;
        hc->in_value = true;
    }
    ps__buf_append(&hc->hbuf, at, len);
    return 0;
}

static void req_build(ps__http_conn *hc, ps__http_req *req, ps__http_header *headers,
                      ps__buf *pathbuf);

static size_t body_limit(ps__http_conn *hc)
{
    if (hc->cfg->body_limit)
        return hc->cfg->body_limit(hc->cfg->user, ps__buf_cstr(&hc->url));
    return hc->cfg->max_body_size;
}

static int on_headers_complete(http_parser *p)
{
    ps__http_conn *hc = p->data;
    hc->body_max = body_limit(hc);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > hc->body_max) {
        hc->error_status = 413;
        return -1;
    }
    /* An empty value after the last field still needs its terminator and offset. */
    if (hc->nheaders > 0 && !hc->in_value) {
        ps__buf_appendc(&hc->hbuf, '\0');
        hc->hoff[hc->nheaders - 1][1] = hc->hbuf.len;
    }
    if (hc->cfg->route) {
        ps__http_header headers[MAX_HEADERS];
        ps__http_req req;
        ps__buf pathbuf;
        req_build(hc, &req, headers, &pathbuf);
        hc->route = hc->cfg->route(hc->cfg->user, &req);
        ps__buf_free(&pathbuf);
        if (hc->route >= 0)
            return -1; /* halts right after the head: hc_on_read hands the connection over */
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    ps__http_conn *hc = p->data;
    if (hc->body.len + len > hc->body_max) {
        hc->error_status = 413;
        return -1;
    }
    ps__buf_append(&hc->body, at, len);
    return 0;
}

static void dispatch(ps__http_conn *hc);

static int on_message_complete(http_parser *p)
{
    ps__http_conn *hc = p->data;
    hc->message_done = true;
    if (p->upgrade)
        return 0; /* dispatched after http_parser_execute returns, with the leftover bytes */
    dispatch(hc);
    /* Stop parsing after a response that closes the connection (or a takeover), and while the
     * next answer has to wait. */
    return hc->closing || hc->taken || hc->deferred || hc_output_busy(hc) ? -1 : 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* The request parsed so far (the body only once it is complete), for dispatch and route. */
static void req_build(ps__http_conn *hc, ps__http_req *req, ps__http_header *headers,
                      ps__buf *pathbuf)
{
    ps__buf_reserve(&hc->hbuf, 0);
    ps__buf_reserve(&hc->url, 0);
    for (size_t i = 0; i < hc->nheaders; i++) {
        headers[i].name = hc->hbuf.base + hc->hoff[i][0];
        headers[i].value = hc->hoff[i][1] == SIZE_MAX ? "" : hc->hbuf.base + hc->hoff[i][1];
    }
    /* The path is copied out: the url buffer keeps the whole target. */
    char *url = hc->url.base;
    ps__buf_init(pathbuf);
    char *q = strchr(url, '?');
    ps__buf_append(pathbuf, url, q ? (size_t)(q - url) : strlen(url));
    ps__buf_reserve(pathbuf, 0);
    *req = (ps__http_req){
        .hc = hc,
        .method = http_method_str(hc->parser.method),
        .method_id = hc->parser.method,
        .url = url,
        .path = pathbuf->base,
        .query = q ? q + 1 : "",
        .headers = headers,
        .nheaders = hc->nheaders,
        .body = hc->body.base ? hc->body.base : "",
        .body_len = hc->body.len,
        .upgrade = hc->parser.upgrade,
        .keep_alive = http_should_keep_alive(&hc->parser) && !hc->parser.upgrade,
    };
}

static void dispatch(ps__http_conn *hc)
{
    ps__http_header headers[MAX_HEADERS];
    ps__http_req req;
    ps__buf pathbuf;
    req_build(hc, &req, headers, &pathbuf);
    if (req.path[0] != '/' && strcmp(req.method, "OPTIONS") != 0) {
        req.keep_alive = false;
        respond_text(&req, 400, NULL);
    } else if (strcmp(req.path, "/healthz") == 0) {
        if ((req.method_id == HTTP_GET || req.method_id == HTTP_HEAD) && hc->cfg->health) {
            ps__buf body;
            ps__buf_init(&body);
            int status = hc->cfg->health(hc->cfg->user, &body);
            ps__http_respond(&req, status, "application/json", body.base, body.len,
                             "Cache-Control: no-store\r\n");
            ps__buf_free(&body);
        } else if (req.method_id == HTTP_GET || req.method_id == HTTP_HEAD)
            ps__http_respond(&req, 200, "application/json", PS__STRLIT("{\"status\":\"ok\"}"),
                             "Cache-Control: no-store\r\n");
        else
            respond_text(&req, 405, "Allow: GET, HEAD\r\n");
    } else if (hc->cfg->on_request && hc->cfg->on_request(hc->cfg->user, &req)) {
        /* answered or taken by the layer above */
    } else if (req.upgrade) {
        req.keep_alive = false;
        respond_text(&req, 404, NULL);
    } else if (hc->cfg->static_root) {
        serve_static(&req, hc->cfg->static_root);
    } else {
        respond_text(&req, 404, NULL);
    }
    if (!req.answered)
        respond_text(&req, 500, NULL);
    ps__buf_free(&pathbuf);
    if (!hc->taken && !req.keep_alive) {
        hc->closing = true;
        ps__conn_close(hc->conn);
    } else if (!hc->taken && !hc->deferred) {
        idle_arm(hc);
    }
}

static void hc_free(ps__http_conn *hc)
{
    if (hc->file_fd >= 0)
        close(hc->file_fd);
    ps__timer_free(hc->idle);
    ps__buf_free(&hc->stash);
    ps__buf_free(&hc->url);
    ps__buf_free(&hc->hbuf);
    ps__buf_free(&hc->body);
    ps__free(hc);
}

/*
 * The parser stopped at the last byte of a head that cfg->route gave away: `rest` starts at
 * that LF (http-parser halts on it without consuming it). The head is rebuilt from its parsed
 * fields, which is the same request to any HTTP/1.1 parser; the bytes after it go as they are.
 */
static void hand_over(ps__http_conn *hc, const char *rest, size_t rest_len)
{
    ps__buf out;
    ps__buf_init(&out);
    ps__buf_reserve(&hc->url, 0);
    ps__buf_printf(&out, "%s %s HTTP/%u.%u\r\n", http_method_str(hc->parser.method), hc->url.base,
                   hc->parser.http_major, hc->parser.http_minor);
    for (size_t i = 0; i < hc->nheaders; i++) {
        ps__buf_appends(&out, hc->hbuf.base + hc->hoff[i][0]);
        ps__buf_appends(&out, ": ");
        if (hc->hoff[i][1] != SIZE_MAX)
            ps__buf_appends(&out, hc->hbuf.base + hc->hoff[i][1]);
        ps__buf_appends(&out, "\r\n");
    }
    ps__buf_appends(&out, "\r\n");
    if (rest_len > 0 && rest[0] == '\n')
        ps__buf_append(&out, rest + 1, rest_len - 1);
    int route = hc->route;
    ps__conn *c = hc->conn;
    const ps__http_config *cfg = hc->cfg;
    ps__conn_pause(c);
    c->cbs = NULL;
    c->data = NULL;
    hc_free(hc);
    cfg->hand_over(cfg->user, c, out.base, out.len, route);
    ps__buf_free(&out);
}

/* Whether input must wait in the stash rather than be parsed now. */
static bool hc_waiting(const ps__http_conn *hc)
{
    return hc->deferred || hc_output_busy(hc) || hc->stash.len > 0;
}

/* Parses input (dispatching what completes). Returns false if an upgrade or a hand-over took the
 * connection: hc is freed then. */
static bool parse(ps__http_conn *hc, const char *data, size_t len)
{
    ps__conn *c = hc->conn;
    size_t n = http_parser_execute(&hc->parser, &settings, data, len);
    if (hc->route >= 0 && HTTP_PARSER_ERRNO(&hc->parser) == HPE_CB_headers_complete) {
        hand_over(hc, data + n, len - n);
        return false;
    }
    if (hc->taken) {
        hc_free(hc);
        return false;
    }
    if (hc->closing)
        return true;
    if (hc->deferred || hc_output_busy(hc)) {
        /* Parsing stopped right after the request just answered; the rest waits, with a parser
         * reset from the callback's halt. */
        if (n < len)
            ps__buf_append(&hc->stash, data + n, len - n);
        http_parser_init(&hc->parser, HTTP_REQUEST);
        return true;
    }
    if (hc->parser.upgrade && hc->message_done) {
        hc->rest = data + n;
        hc->rest_len = len - n;
        dispatch(hc);
        if (hc->taken) {
            hc_free(hc);
            return false;
        }
        return true;
    }
    if (n != len || HTTP_PARSER_ERRNO(&hc->parser) != HPE_OK) {
        int status = hc->error_status;
        if (!status)
            status = HTTP_PARSER_ERRNO(&hc->parser) == HPE_HEADER_OVERFLOW ? 431 : 400;
        PS__DEBUG("http %s: %s -> %d", c->peer, http_errno_name(HTTP_PARSER_ERRNO(&hc->parser)),
                  status);
        respond_fatal(hc, status);
    }
    return true;
}

/*
 * The connection may have stopped waiting (a long-poll answered, output drained, a file sent):
 * parse what was stashed meanwhile, which may make it wait again. A FIN that came while it
 * waited closes it once everything sent before the FIN is answered. A loop, not recursion: a
 * fast reader can take a thousand pipelined files in one go.
 */
static void hc_continue(ps__http_conn *hc)
{
    ps__conn *c = hc->conn;
    for (;;) {
        if (hc->file_fd >= 0)
            pump_file(hc);
        if (hc->deferred || hc_output_busy(hc) || hc->closing)
            return;
        if (hc->stash.len == 0)
            break;
        ps__buf stash = hc->stash;
        ps__buf_init(&hc->stash);
        bool alive = parse(hc, stash.base, stash.len);
        ps__buf_free(&stash);
        if (!alive)
            return;
    }
    if (hc->eof) {
        hc->closing = true;
        ps__conn_close(c);
    }
}

static void hc_on_read(ps__conn *c, const char *data, size_t len)
{
    ps__http_conn *hc = c->data;
    if (hc->closing)
        return;
    if (hc_waiting(hc)) {
        /* Behind a held long-poll or unread output: parsed once the wait is over, so that
         * responses keep their order. Bounded like any request would be. */
        if (hc->stash.len + len > hc->cfg->max_header_size + hc->cfg->max_body_size) {
            hc_abort_deferred(hc);
            hc->closing = true;
            ps__conn_abort(c);
            return;
        }
        ps__buf_append(&hc->stash, data, len);
        return;
    }
    if (parse(hc, data, len))
        hc_continue(hc);
}

static void hc_on_eof(ps__conn *c)
{
    ps__http_conn *hc = c->data;
    if (!hc->deferred && (hc_output_busy(hc) || hc->stash.len > 0)) {
        /* A client may send its last requests and FIN at once: they are still answered. */
        hc->eof = true;
        return;
    }
    hc_abort_deferred(hc);
    hc->closing = true;
    ps__conn_close(c);
}

static void hc_on_close(ps__conn *c)
{
    hc_abort_deferred(c->data);
    hc_free(c->data);
}

/* Output went over PS__CONN_HIGH_WATER and has drained to half of it: the client is reading. */
static void hc_on_drained(ps__conn *c)
{
    ps__http_conn *hc = c->data;
    if (hc->closing)
        return;
    /* Progress: the idle bound counts from here (a slow reader is not an idle one). */
    if (hc->idle && ps__timer_active(hc->idle) && !hc->in_request)
        ps__timer_start(hc->idle, hc->cfg->idle_timeout_ms);
    hc_continue(hc);
}

const char *ps__http_peer(const ps__http_req *req)
{
    return req->hc->conn->peer;
}

ps__http_conn *ps__http_defer(ps__http_req *req, void (*on_abort)(void *user), void *user)
{
    ps__http_conn *hc = req->hc;
    req->answered = true;
    hc->deferred = true;
    hc->deferred_keep_alive = req->keep_alive;
    hc->deferred_head = req->method_id == HTTP_HEAD;
    hc->on_abort = on_abort;
    hc->abort_user = user;
    if (hc->idle)
        ps__timer_stop(hc->idle); /* held on purpose: the heartbeat bounds it */
    req->keep_alive = true;       /* the connection stays open until the answer */
    return hc;
}

void ps__http_deferred_respond(ps__http_conn *hc, int status, const char *content_type,
                               const char *body, size_t body_len, const char *extra_headers)
{
    if (!hc->deferred)
        return;
    hc->deferred = false;
    hc->on_abort = NULL;
    ps__http_req req = {
        .hc = hc,
        .keep_alive = hc->deferred_keep_alive,
        .method_id = hc->deferred_head ? HTTP_HEAD : HTTP_GET,
    };
    ps__http_respond(&req, status, content_type, body, body_len, extra_headers);
    if (!req.keep_alive) {
        hc->closing = true;
        ps__conn_close(hc->conn);
        return;
    }
    idle_arm(hc);
    hc_continue(hc);
}

void ps__http_attach(ps__conn *c, const ps__http_config *cfg)
{
    ps__http_conn *hc = ps__calloc(1, sizeof *hc);
    hc->conn = c;
    hc->cfg = cfg;
    hc->route = -1;
    hc->file_fd = -1;
    http_parser_init(&hc->parser, HTTP_REQUEST);
    hc->parser.data = hc;
    c->cbs = &hc_cbs;
    c->data = hc;
    if (cfg->idle_timeout_ms) {
        hc->idle = ps__timer_new(c->tcp.loop, idle_fire, hc);
        idle_arm(hc);
    }
}

void ps__http_close_idle(ps__listener *l)
{
    ps__list *pos, *tmp;
    ps__list_foreach_safe(pos, tmp, &l->conns)
    {
        ps__conn *c = PS__CONTAINER_OF(pos, ps__conn, link);
        if (c->cbs == &hc_cbs) {
            ((ps__http_conn *)c->data)->closing = true;
            ps__conn_close(c);
        }
    }
}
