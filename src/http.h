/*
 * http: HTTP/1.1 on a net connection, parsed with http-parser. It keeps connections alive,
 * serves GET /healthz and static files, enforces header and body limits, and hands every other
 * request to the layer above through one callback, which may answer it or take the connection
 * over (the WebSocket upgrade).
 */
#ifndef PS_HTTP_H
#define PS_HTTP_H

#include "tls.h"

#include <http_parser.h>

typedef struct ps__http_conn ps__http_conn;

typedef struct ps__http_header {
    const char *name; /* as sent; compare case-insensitively */
    const char *value;
} ps__http_header;

/* A complete request. Valid only during the on_request callback. */
typedef struct ps__http_req {
    ps__http_conn *hc;
    const char *method; /* "GET" */
    int method_id;      /* http_parser's HTTP_GET, ... */
    const char *url;    /* raw request target */
    const char *path;   /* raw path, without the query */
    const char *query;  /* raw query after '?', "" when none */
    ps__http_header *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
    bool upgrade;    /* Upgrade requested (Connection: upgrade) */
    bool keep_alive; /* the connection may serve another request */
    bool answered;   /* a response was written or the connection was taken */
} ps__http_req;

typedef struct ps__http_config {
    char *static_root;      /* realpath of the static directory, or NULL */
    size_t max_header_size; /* request line + headers */
    size_t max_body_size;
    /* Optional: a different body limit for some paths (the Engine.IO endpoint takes payloads
     * of up to its max_payload); gets the raw request target. */
    size_t (*body_limit)(void *user, const char *url);
    /* A connection must complete each request within this time, and may sit idle between
     * requests no longer (408 / close). 0 = no bound. Long-polls are exempt while held. */
    uint32_t idle_timeout_ms;
    /* Called for every request except /healthz; return true if it answered or took the
     * connection, false to fall through to static files and 404. */
    bool (*on_request)(void *user, ps__http_req *req);
    /*
     * Optional (workers): asked as soon as a request's head is complete, before its body is
     * read (req->body is empty): a value >= 0 makes http give the connection up to hand_over
     * instead of handling the request; -1 goes on. Asked again for every request of a
     * keep-alive connection.
     */
    int (*route)(void *user, const ps__http_req *req);
    /* Takes the connection (reads paused, HTTP state gone) with `bytes`: this request's head,
     * rebuilt from what was parsed, then every byte read after it (body, pipelined requests),
     * to be processed by the target as if it had read them itself. Valid during the call. */
    void (*hand_over)(void *user, ps__conn *c, const char *bytes, size_t len, int route);
    /* Optional: the body of GET /healthz (JSON) and its status; default {"status":"ok"}, 200. */
    int (*health)(void *user, ps__buf *body);
    void *user;
} ps__http_config;

/* Takes ownership of a freshly accepted connection. */
void ps__http_attach(ps__conn *c, const ps__http_config *cfg);

const char *ps__http_header_get(const ps__http_req *req, const char *name);
/* The value of the last header called `name` (case-insensitive) in a list, or NULL. */
const char *ps__http_headers_find(const ps__http_header *headers, size_t n, const char *name);
/* True if a comma-separated header (Connection) contains token, case-insensitively. */
bool ps__http_header_has_token(const ps__http_req *req, const char *name, const char *token);
/* Copies the value of query parameter `name` (URL-decoded) into out; false if absent. */
bool ps__http_query_get(const char *query, const char *name, ps__buf *out);

/* The client's address as text. */
const char *ps__http_peer(const ps__http_req *req);

/* Writes a complete response. `extra_headers` is either NULL or CRLF-terminated lines. */
void ps__http_respond(ps__http_req *req, int status, const char *content_type, const char *body,
                      size_t body_len, const char *extra_headers);
/* A JSON error body {"code":N,"message":"..."} as Engine.IO servers answer. */
void ps__http_respond_json_error(ps__http_req *req, int status, int code, const char *message);
/*
 * Detaches the TCP connection from HTTP for an upgrade. Returns the connection (its callbacks
 * must be replaced by the caller right away) and the bytes that followed the request, which
 * belong to the new protocol. The HTTP state is freed; req stays readable until on_request
 * returns.
 */
ps__conn *ps__http_take_conn(ps__http_req *req, const char **rest, size_t *rest_len);

/* Closes every connection of the listener that is still plain HTTP (graceful shutdown). */
void ps__http_close_idle(ps__listener *l);

/*
 * Defers the answer to req (a long-poll): the connection stays open and stashes what else it
 * receives. Answer later with ps__http_deferred_respond. If the peer goes away or the server
 * closes the connection first, on_abort(user) runs once instead, and the handle is dead.
 */
ps__http_conn *ps__http_defer(ps__http_req *req, void (*on_abort)(void *user), void *user);
void ps__http_deferred_respond(ps__http_conn *hc, int status, const char *content_type,
                               const char *body, size_t body_len, const char *extra_headers);

const char *ps__http_status_text(int status);
/* The current time as HTTP writes it in a Date header ("Sun, 06 Nov 1994 08:49:37 GMT"). */
const char *ps__http_date(void);
/* Content-Type for a file name, by extension; "application/octet-stream" if unknown. */
const char *ps__http_content_type(const char *path);
/*
 * Resolves a request path below root (both realpath'd), refusing "..", NUL and anything whose
 * real path leaves root (symlinks). Returns a malloc'd absolute path or NULL.
 */
char *ps__http_resolve_static(const char *root, const char *raw_path);

#endif
