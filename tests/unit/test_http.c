/*
 * http: the pure helpers (content types, query strings, static path resolution against a real
 * directory tree with hostile paths and symlinks), then the HTTP/1.1 server on a real socket:
 * health, keep-alive, pipelining, limits (431, 413), malformed requests (400), 404/405, static
 * files, and peers that vanish mid-conversation.
 */
#include "client.h"
#include "http.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

/* ---- content types and status texts --------------------------------------------------- */

TEST_IMPL(http_content_type)
{
    ASSERT_STR_EQ(ps__http_content_type("/index.html"), "text/html; charset=utf-8");
    ASSERT_STR_EQ(ps__http_content_type("/a/INDEX.HTM"), "text/html; charset=utf-8");
    ASSERT_STR_EQ(ps__http_content_type("/s.css"), "text/css; charset=utf-8");
    ASSERT_STR_EQ(ps__http_content_type("/app.js"), "text/javascript; charset=utf-8");
    ASSERT_STR_EQ(ps__http_content_type("/app.mjs"), "text/javascript; charset=utf-8");
    ASSERT_STR_EQ(ps__http_content_type("/d.json"), "application/json");
    ASSERT_STR_EQ(ps__http_content_type("/app.js.map"), "application/json");
    ASSERT_STR_EQ(ps__http_content_type("/t.txt"), "text/plain; charset=utf-8");
    ASSERT_STR_EQ(ps__http_content_type("/i.svg"), "image/svg+xml");
    ASSERT_STR_EQ(ps__http_content_type("/i.PNG"), "image/png");
    ASSERT_STR_EQ(ps__http_content_type("/i.jpg"), "image/jpeg");
    ASSERT_STR_EQ(ps__http_content_type("/i.jpeg"), "image/jpeg");
    ASSERT_STR_EQ(ps__http_content_type("/i.gif"), "image/gif");
    ASSERT_STR_EQ(ps__http_content_type("/i.webp"), "image/webp");
    ASSERT_STR_EQ(ps__http_content_type("/favicon.ico"), "image/x-icon");
    ASSERT_STR_EQ(ps__http_content_type("/m.wasm"), "application/wasm");
    ASSERT_STR_EQ(ps__http_content_type("/f.woff"), "font/woff");
    ASSERT_STR_EQ(ps__http_content_type("/f.woff2"), "font/woff2");
    ASSERT_STR_EQ(ps__http_content_type("/x.xml"), "application/xml");
    ASSERT_STR_EQ(ps__http_content_type("/x.pdf"), "application/pdf");
    /* Unknown, missing or misleading extensions. */
    ASSERT_STR_EQ(ps__http_content_type("/archive.tar.gz"), "application/octet-stream");
    ASSERT_STR_EQ(ps__http_content_type("/README"), "application/octet-stream");
    ASSERT_STR_EQ(ps__http_content_type("/dir.html/file"), "application/octet-stream");
    ASSERT_STR_EQ(ps__http_content_type("/x."), "application/octet-stream");
    ASSERT_STR_EQ(ps__http_content_type("/x.htmlx"), "application/octet-stream");
    ASSERT_STR_EQ(ps__http_content_type("/x.html.exe"), "application/octet-stream");
    ASSERT_STR_EQ(ps__http_content_type(""), "application/octet-stream");
    ASSERT_STR_EQ(ps__http_content_type("html"), "application/octet-stream");
    return 0;
}

TEST_IMPL(http_status_text)
{
    ASSERT_STR_EQ(ps__http_status_text(101), "Switching Protocols");
    ASSERT_STR_EQ(ps__http_status_text(200), "OK");
    ASSERT_STR_EQ(ps__http_status_text(400), "Bad Request");
    ASSERT_STR_EQ(ps__http_status_text(404), "Not Found");
    ASSERT_STR_EQ(ps__http_status_text(405), "Method Not Allowed");
    ASSERT_STR_EQ(ps__http_status_text(413), "Payload Too Large");
    ASSERT_STR_EQ(ps__http_status_text(426), "Upgrade Required");
    ASSERT_STR_EQ(ps__http_status_text(431), "Request Header Fields Too Large");
    ASSERT_STR_EQ(ps__http_status_text(503), "Service Unavailable");
    ASSERT_STR_EQ(ps__http_status_text(299), "Unknown");
    return 0;
}

/* ---- query strings --------------------------------------------------------------------- */

/* The value of `name` in `query`, or NULL when absent (static storage, overwritten per call). */
static const char *q(const char *query, const char *name)
{
    static char out[256];
    ps__buf b;
    ps__buf_init(&b);
    bool found = ps__http_query_get(query, name, &b);
    const char *r = NULL;
    if (found) {
        ASSERT_NOT_NULL(b.base);
        ASSERT_EQ(b.base[b.len], '\0');
        ASSERT_LT(b.len, sizeof out);
        memcpy(out, b.base, b.len + 1);
        r = out;
    }
    ps__buf_free(&b);
    return r;
}

TEST_IMPL(http_query_get)
{
    const char *eio = "EIO=4&transport=websocket&t=OkX1";
    ASSERT_STR_EQ(q(eio, "EIO"), "4");
    ASSERT_STR_EQ(q(eio, "transport"), "websocket");
    ASSERT_STR_EQ(q(eio, "t"), "OkX1");
    ASSERT_NULL(q(eio, "sid"));
    ASSERT_NULL(q(eio, "eio")); /* names are case-sensitive */
    ASSERT_NULL(q(eio, "trans"));
    ASSERT_NULL(q(eio, "transport=websocket"));
    ASSERT_NULL(q(eio, ""));
    ASSERT_NULL(q("", "a"));

    /* Decoding: escapes, '+' as a space, UTF-8, '=' inside a value. */
    ASSERT_STR_EQ(q("name=a%20b%2Bc+d", "name"), "a b+c d");
    ASSERT_STR_EQ(q("x=%E2%82%AC", "x"), "\xe2\x82\xac");
    ASSERT_STR_EQ(q("x=a=b=c", "x"), "a=b=c");
    ASSERT_STR_EQ(q("x=%26y%3D1&y=2", "x"), "&y=1");
    ASSERT_STR_EQ(q("x=%26y%3D1&y=2", "y"), "2");

    /* Empty and valueless parameters are present with an empty value. */
    ASSERT_STR_EQ(q("a=&b=1", "a"), "");
    ASSERT_STR_EQ(q("a&b=1", "a"), "");
    ASSERT_STR_EQ(q("b=1&a", "a"), "");
    ASSERT_STR_EQ(q("&&a=1&&", "a"), "1");
    ASSERT_STR_EQ(q("=1&a=2", "a"), "2");

    /* A repeated parameter: the first one wins. */
    ASSERT_STR_EQ(q("a=1&a=2", "a"), "1");
    ASSERT_STR_EQ(q("a&a=2", "a"), "");

    /* Names are compared as sent, not decoded. */
    ASSERT_NULL(q("%61=1", "a"));
    ASSERT_STR_EQ(q("%61=1", "%61"), "1");

    /* Bad or truncated escapes make the parameter unusable (reported as absent). */
    ASSERT_NULL(q("a=%zz", "a"));
    ASSERT_NULL(q("a=%2", "a"));
    ASSERT_NULL(q("a=abc%", "a"));
    ASSERT_STR_EQ(q("a=%zz&b=ok", "b"), "ok");

    /* %00 decodes to a NUL byte; the C string stops there. */
    ASSERT_STR_EQ(q("a=x%00y", "a"), "x");
    return 0;
}

/* ---- static files ---------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(content, f);
    fclose(f);
}

static void make_dir(const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ASSERT_EQ(mkdir(path, 0755), 0);
}

static void make_link(const char *target, const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ASSERT_EQ(symlink(target, path), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_tree(const char *dir)
{
    ASSERT_EQ(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/*
 * base/
 *   secret.txt              outside the root
 *   rootevil/f.txt          a sibling whose name starts with the root's name
 *   root/                   the static root
 *     index.html, a.txt, "sp ace.txt"
 *     sub/index.html, sub/b.css, sub/empty/ (no index.html)
 *     link_in -> a.txt      inside: allowed
 *     link_out -> ../secret.txt, link_dir_out -> .., link_prefix -> ../rootevil
 *     link_abs -> /etc/passwd
 */
typedef struct tree {
    char base[PATH_MAX];
    char root[PATH_MAX + 16];
} tree;

static void tree_make(tree *t)
{
    char tmpl[] = "/tmp/pulsec-test-XXXXXX";
    ASSERT_NOT_NULL(mkdtemp(tmpl));
    ASSERT_NOT_NULL(realpath(tmpl, t->base));
    snprintf(t->root, sizeof t->root, "%s/root", t->base);
    write_file(t->base, "secret.txt", "secret");
    make_dir(t->base, "rootevil");
    write_file(t->base, "rootevil/f.txt", "evil");
    make_dir(t->base, "root");
    write_file(t->root, "index.html", "<h1>home</h1>");
    write_file(t->root, "a.txt", "A");
    write_file(t->root, "sp ace.txt", "space");
    make_dir(t->root, "sub");
    write_file(t->root, "sub/index.html", "sub");
    write_file(t->root, "sub/b.css", "b{}");
    make_dir(t->root, "sub/empty");
    make_link("a.txt", t->root, "link_in");
    make_link("../secret.txt", t->root, "link_out");
    make_link("..", t->root, "link_dir_out");
    make_link("../rootevil", t->root, "link_prefix");
    make_link("/etc/passwd", t->root, "link_abs");
}

/* Resolves raw and checks the result is root + expect (or NULL when expect is NULL). */
static void resolves(const tree *t, const char *raw, const char *expect)
{
    char *got = ps__http_resolve_static(t->root, raw);
    if (!expect) {
        if (got)
            ps_test_fail(__FILE__, __LINE__, "%s resolved to %s, expected refusal", raw, got);
        return;
    }
    char want[2 * PATH_MAX];
    snprintf(want, sizeof want, "%s%s", t->root, expect);
    if (!got)
        ps_test_fail(__FILE__, __LINE__, "%s refused, expected %s", raw, want);
    ASSERT_STR_EQ(got, want);
    ps__free(got);
}

TEST_IMPL(http_resolve_static)
{
    tree t;
    tree_make(&t);

    resolves(&t, "/", "/index.html");
    resolves(&t, "/index.html", "/index.html");
    resolves(&t, "/a.txt", "/a.txt");
    resolves(&t, "//a.txt", "/a.txt");
    resolves(&t, "/./a.txt", "/a.txt");
    resolves(&t, "/%61.txt", "/a.txt");
    resolves(&t, "/sp%20ace.txt", "/sp ace.txt");
    resolves(&t, "/sp+ace.txt", NULL); /* '+' is only a space in queries */
    resolves(&t, "/sub", "/sub/index.html");
    resolves(&t, "/sub/", "/sub/index.html");
    resolves(&t, "/sub/b.css", "/sub/b.css");
    resolves(&t, "/sub/empty", NULL);
    resolves(&t, "/sub/empty/", NULL);
    resolves(&t, "/missing", NULL);
    resolves(&t, "/a.txt/", NULL);
    resolves(&t, "/a.txt/x", NULL);

    /* Traversal, plain and encoded, and ".." even where it would stay inside. */
    resolves(&t, "/../secret.txt", NULL);
    resolves(&t, "/..", NULL);
    resolves(&t, "/sub/../a.txt", NULL);
    resolves(&t, "/sub/..", NULL);
    resolves(&t, "/%2e%2e/secret.txt", NULL);
    resolves(&t, "/%2E%2E/secret.txt", NULL);
    resolves(&t, "/.%2e/secret.txt", NULL);
    resolves(&t, "/%2e./secret.txt", NULL);
    resolves(&t, "/..%2fsecret.txt", NULL);
    resolves(&t, "/..%2Fsecret.txt", NULL);
    resolves(&t, "/sub%2f..%2f..%2fsecret.txt", NULL);
    resolves(&t, "/%2f..%2f..%2fsecret.txt", NULL);
    resolves(&t, "/%252e%252e/secret.txt", NULL); /* double encoding is not decoded twice */
    resolves(&t, "/../root/a.txt", NULL);
    resolves(&t, "/../rootevil/f.txt", NULL);

    /* NUL bytes and backslashes. */
    resolves(&t, "/a.txt%00", NULL);
    resolves(&t, "/a.txt%00.html", NULL);
    resolves(&t, "/%00", NULL);
    resolves(&t, "/..\\secret.txt", NULL);
    resolves(&t, "/%5c..%5csecret.txt", NULL);
    resolves(&t, "/sub\\b.css", NULL);
    resolves(&t, "/sub%5cb.css", NULL);

    /* Malformed: no leading slash, bad escapes. */
    resolves(&t, "a.txt", NULL);
    resolves(&t, "", NULL);
    resolves(&t, "%2fa.txt", "/a.txt"); /* decoded, it does start with '/' */
    resolves(&t, "/%zz", NULL);
    resolves(&t, "/a.txt%", NULL);
    resolves(&t, "/a.txt%2", NULL);

    /* Symlinks: inside is served (as its target), anything whose real path leaves is not. */
    resolves(&t, "/link_in", "/a.txt");
    resolves(&t, "/link_out", NULL);
    resolves(&t, "/link_dir_out/secret.txt", NULL);
    resolves(&t, "/link_dir_out", NULL);
    resolves(&t, "/link_dir_out/root/a.txt", "/a.txt"); /* leaves and comes back: inside */
    resolves(&t, "/link_prefix/f.txt", NULL);
    resolves(&t, "/link_abs", NULL);

    /* The file system root as the static root: everything real below it is inside. */
    char abs[2 * PATH_MAX];
    snprintf(abs, sizeof abs, "%s/a.txt", t.root);
    char *got = ps__http_resolve_static("/", abs);
    ASSERT_STR_EQ(got, abs);
    ps__free(got);
    snprintf(abs, sizeof abs, "%s/link_out", t.root);
    got = ps__http_resolve_static("/", abs);
    snprintf(abs, sizeof abs, "%s/secret.txt", t.base);
    ASSERT_STR_EQ(got, abs);
    ps__free(got);
    ASSERT_NULL(ps__http_resolve_static("/", "/nonexistent-pulsec-test"));

    rm_tree(t.base);
    return 0;
}

/* ---- the server: health, keep-alive, pipelining ---------------------------------------- */

static void expect_header(const tresp *r, const char *name, const char *value)
{
    char got[256];
    if (!tresp_header(r, name, got, sizeof got))
        ps_test_fail(__FILE__, __LINE__, "no %s header in:\n%s", name, r->head.base);
    ASSERT_STR_EQ(got, value);
}

static void healthz_client(ts *t)
{
    tresp r;
    ASSERT_EQ(tc_request(t->port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    ASSERT_STR_EQ(r.body.base, "{\"status\":\"ok\"}");
    expect_header(&r, "Content-Type", "application/json");
    expect_header(&r, "Content-Length", "15");
    expect_header(&r, "Connection", "keep-alive");
    expect_header(&r, "Cache-Control", "no-store");
    tresp_free(&r);

    /* HEAD: the same head, no body; the next response on the connection follows at once. */
    tc *c = tc_connect(t->port);
    tc_sends(c, "HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
    tc_read_head_response(c, &r);
    ASSERT_EQ(r.status, 200);
    expect_header(&r, "Content-Length", "15");
    tresp_free(&r);
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body.base, "{\"status\":\"ok\"}");
    tresp_free(&r);
    tc_free(c);

    /* A query string does not change the route; other methods are refused. */
    ASSERT_EQ(tc_request(t->port, "GET /healthz?probe=1 HTTP/1.1\r\n\r\n", &r), 200);
    tresp_free(&r);
    ASSERT_EQ(tc_request(t->port, "POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r), 405);
    expect_header(&r, "Allow", "GET, HEAD");
    tresp_free(&r);
    ASSERT_EQ(tc_request(t->port, "DELETE /healthz HTTP/1.1\r\n\r\n", &r), 405);
    tresp_free(&r);
    ts_stop(t);
}

TEST_IMPL(http_healthz)
{
    ts_run(NULL, NULL, healthz_client, NULL);
    return 0;
}

static void keep_alive_client(ts *t)
{
    tc *c = tc_connect(t->port);
    tresp r;
    for (int i = 0; i < 3; i++) {
        tc_sends(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        tc_read_response(c, &r);
        ASSERT_EQ(r.status, 200);
        expect_header(&r, "Connection", "keep-alive");
        tresp_free(&r);
        tc_sends(c, "GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n");
        tc_read_response(c, &r);
        ASSERT_EQ(r.status, 404);
        expect_header(&r, "Connection", "keep-alive");
        tresp_free(&r);
    }
    /* A body the server ignores is consumed, not mistaken for the next request. */
    tc_sends(c, "POST /nothing-here HTTP/1.1\r\nContent-Length: 21\r\n\r\nGET /healthz HTTP/1.1");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 404);
    tresp_free(&r);
    tc_sends(c, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    expect_header(&r, "Connection", "close");
    tresp_free(&r);
    tc_expect_eof(c);
    tc_free(c);

    /* HTTP/1.0 closes by default and keeps alive on request. */
    c = tc_connect(t->port);
    tc_sends(c, "GET /healthz HTTP/1.0\r\n\r\n");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    expect_header(&r, "Connection", "close");
    tresp_free(&r);
    tc_expect_eof(c);
    tc_free(c);
    c = tc_connect(t->port);
    tc_sends(c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    tc_read_response(c, &r);
    expect_header(&r, "Connection", "keep-alive");
    tresp_free(&r);
    tc_sends(c, "GET /healthz HTTP/1.0\r\n\r\n");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);
    tc_expect_eof(c);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(http_keep_alive)
{
    ts_run(NULL, NULL, keep_alive_client, NULL);
    return 0;
}

static void pipelined_client(ts *t)
{
    tc *c = tc_connect(t->port);
    /* Five requests in one write, the last one closing; answers must come back in order. */
    tc_sends(c, "GET /healthz HTTP/1.1\r\n\r\n"
                "GET /missing HTTP/1.1\r\n\r\n"
                "POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                "GET /healthz?x HTTP/1.1\r\n\r\n"
                "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    int expect[] = {200, 404, 405, 200, 200};
    for (size_t i = 0; i < PS__ARRAY_SIZE(expect); i++) {
        tresp r;
        tc_read_response(c, &r);
        ASSERT_EQ(r.status, expect[i]);
        tresp_free(&r);
    }
    tc_expect_eof(c);
    tc_free(c);

    /* A request cut at every possible byte boundary, then the next one in the same segment. */
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
    size_t n = strlen(req);
    c = tc_connect(t->port);
    for (size_t cut = 1; cut < n; cut += 7) {
        tc_send(c, req, cut);
        usleep(1000);
        tc_send(c, req + cut, n - cut);
        tresp r;
        tc_read_response(c, &r);
        ASSERT_EQ(r.status, 200);
        tresp_free(&r);
    }
    /* One byte per write. */
    for (size_t i = 0; i < n; i++)
        tc_send(c, req + i, 1);
    tresp r;
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(http_pipelined)
{
    ts_run(NULL, NULL, pipelined_client, NULL);
    return 0;
}

/* ---- limits ---------------------------------------------------------------------------- */

/* Sends `req` on a fresh connection; expects `status` and then the server closing. */
static void expect_fatal(ts *t, const char *req, size_t len, int status)
{
    tc *c = tc_connect(t->port);
    tc_send(c, req, len);
    tresp r;
    tc_read_response(c, &r);
    if (r.status != status)
        ps_test_fail(__FILE__, __LINE__, "expected %d, got:\n%s", status, r.head.base);
    expect_header(&r, "Connection", "close");
    tresp_free(&r);
    tc_expect_eof(c);
    tc_free(c);
}

static void big_request(ps__buf *b, size_t header_bytes)
{
    ps__buf_reset(b);
    ps__buf_appends(b, "GET /healthz HTTP/1.1\r\nX-Big: ");
    for (size_t i = 0; i < header_bytes; i++)
        ps__buf_appendc(b, 'a');
    ps__buf_appends(b, "\r\n\r\n");
}

static void header_limit_client(ts *t)
{
    ps__buf b;
    ps__buf_init(&b);
    /* Under the default 8 KiB: fine. */
    big_request(&b, 7000);
    tc *c = tc_connect(t->port);
    tc_send(c, b.base, b.len);
    tresp r;
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);
    tc_free(c);
    /* Over it, in one value, and in the request target. */
    big_request(&b, 9000);
    expect_fatal(t, b.base, b.len, 431);
    ps__buf_reset(&b);
    ps__buf_appends(&b, "GET /");
    for (int i = 0; i < 9000; i++)
        ps__buf_appendc(&b, 'u');
    ps__buf_appends(&b, " HTTP/1.1\r\n\r\n");
    expect_fatal(t, b.base, b.len, 431);
    /* Many small headers adding up. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 90; i++)
        ps__buf_printf(&b, "X-H%d: %0100d\r\n", i, i);
    ps__buf_appends(&b, "\r\n");
    expect_fatal(t, b.base, b.len, 431);
    /* More than 100 header fields, each tiny. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 101; i++)
        ps__buf_printf(&b, "h%d:v\r\n", i);
    ps__buf_appends(&b, "\r\n");
    expect_fatal(t, b.base, b.len, 431);
    /* Exactly 100 are accepted. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 100; i++)
        ps__buf_printf(&b, "h%d:v\r\n", i);
    ps__buf_appends(&b, "\r\n");
    c = tc_connect(t->port);
    tc_send(c, b.base, b.len);
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);
    tc_free(c);
    /* The limit is per request, not per connection: many requests under it in a row. */
    big_request(&b, 5000);
    c = tc_connect(t->port);
    for (int i = 0; i < 4; i++) {
        tc_send(c, b.base, b.len);
        tc_read_response(c, &r);
        ASSERT_EQ(r.status, 200);
        tresp_free(&r);
    }
    tc_free(c);
    ps__buf_free(&b);
    ts_stop(t);
}

TEST_IMPL(http_header_too_large)
{
    ts_run(NULL, NULL, header_limit_client, NULL);
    return 0;
}

static void body_limit_client(ts *t)
{
    /* Announced too large: refused before any body is read. */
    const char *big = "POST /upload HTTP/1.1\r\nContent-Length: 1025\r\n\r\n";
    expect_fatal(t, big, strlen(big), 413);
    const char *huge = "POST /upload HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n";
    expect_fatal(t, huge, strlen(huge), 413);

    /* Exactly the limit is accepted (and answered 404: nothing lives at /upload). */
    ps__buf b;
    ps__buf_init(&b);
    ps__buf_appends(&b, "POST /upload HTTP/1.1\r\nContent-Length: 1024\r\n\r\n");
    for (int i = 0; i < 1024; i++)
        ps__buf_appendc(&b, 'b');
    tresp r;
    ASSERT_EQ(tc_request(t->port, b.base, &r), 404);
    tresp_free(&r);

    /* Chunked: no length up front, refused once the chunks add up past the limit. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        ps__buf_appends(&b, "190\r\n"); /* 400 bytes */
        for (int k = 0; k < 400; k++)
            ps__buf_appendc(&b, 'c');
        ps__buf_appends(&b, "\r\n");
    }
    ps__buf_appends(&b, "0\r\n\r\n");
    expect_fatal(t, b.base, b.len, 413);

    /* Chunked under the limit is fine. */
    ps__buf_reset(&b);
    ps__buf_appends(&b, "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n0\r\n\r\n");
    ASSERT_EQ(tc_request(t->port, b.base, &r), 404);
    tresp_free(&r);
    ps__buf_free(&b);
    ts_stop(t);
}

TEST_IMPL(http_body_too_large)
{
    ps_server_opts o = {.max_body_size = 1024};
    ts_run(&o, NULL, body_limit_client, NULL);
    return 0;
}

static void bad_request_client(ts *t)
{
    static const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/1.1 extra\r\n\r\n",
        "GET / FTP/1.1\r\n\r\n",
        "GET nopath HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET http://example.com/healthz HTTP/1.1\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\nBad(Name): x\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x01\x02\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "\r\n\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
    };
    for (size_t i = 0; i < PS__ARRAY_SIZE(bad); i++) {
        tc *c = tc_connect(t->port);
        tc_sends(c, bad[i]);
        tresp r;
        tc_read_response(c, &r);
        if (r.status != 400) {
            fprintf(stderr, "request %zu: ", i);
            ps_test_print_bytes(stderr, bad[i], strlen(bad[i]));
            fputc('\n', stderr);
            ps_test_fail(__FILE__, __LINE__, "expected 400, got %d", r.status);
        }
        expect_header(&r, "Connection", "close");
        tresp_free(&r);
        tc_expect_eof(c);
        tc_free(c);
    }
    /* A good request after a bad one on another connection: the server is unharmed. */
    tresp r;
    ASSERT_EQ(tc_request(t->port, "GET /healthz HTTP/1.1\r\n\r\n", &r), 200);
    tresp_free(&r);
    /* A request that follows a complete good one in the same segment but is broken. */
    tc *c = tc_connect(t->port);
    tc_sends(c, "GET /healthz HTTP/1.1\r\n\r\nBROKEN\r\n\r\n");
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 200);
    tresp_free(&r);
    tc_read_response(c, &r);
    ASSERT_EQ(r.status, 400);
    tresp_free(&r);
    tc_expect_eof(c);
    tc_free(c);
    ts_stop(t);
}

TEST_IMPL(http_bad_request)
{
    ts_run(NULL, NULL, bad_request_client, NULL);
    return 0;
}

/* ---- static files through the server --------------------------------------------------- */

static void static_client(ts *t)
{
    tresp r;
    ASSERT_EQ(tc_request(t->port, "GET / HTTP/1.1\r\n\r\n", &r), 200);
    ASSERT_STR_EQ(r.body.base, "<h1>home</h1>");
    expect_header(&r, "Content-Type", "text/html; charset=utf-8");
    expect_header(&r, "X-Content-Type-Options", "nosniff");
    tresp_free(&r);
    ASSERT_EQ(tc_request(t->port, "GET /sub/b.css HTTP/1.1\r\n\r\n", &r), 200);
    ASSERT_STR_EQ(r.body.base, "b{}");
    expect_header(&r, "Content-Type", "text/css; charset=utf-8");
    tresp_free(&r);
    ASSERT_EQ(tc_request(t->port, "GET /sub/?v=1 HTTP/1.1\r\n\r\n", &r), 200);
    ASSERT_STR_EQ(r.body.base, "sub");
    tresp_free(&r);
    ASSERT_EQ(tc_request(t->port, "GET /link_in HTTP/1.1\r\n\r\n", &r), 200);
    ASSERT_STR_EQ(r.body.base, "A");
    tresp_free(&r);
    tc *c = tc_connect(t->port);
    tc_sends(c, "HEAD /index.html HTTP/1.1\r\n\r\nGET /a.txt HTTP/1.1\r\n\r\n");
    tc_read_head_response(c, &r);
    ASSERT_EQ(r.status, 200);
    expect_header(&r, "Content-Length", "13");
    tresp_free(&r);
    tc_read_response(c, &r);
    ASSERT_STR_EQ(r.body.base, "A");
    tresp_free(&r);
    tc_free(c);

    static const char *refused[] = {
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/link_out",
        "/link_dir_out/secret.txt",
        "/a.txt%00.html",
        "/..\\secret.txt",
        "/link_prefix/f.txt",
        "/link_abs",
        "/sub/empty/",
        "/missing",
    };
    for (size_t i = 0; i < PS__ARRAY_SIZE(refused); i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\n\r\n", refused[i]);
        int status = tc_request(t->port, req, &r);
        if (status != 404)
            ps_test_fail(__FILE__, __LINE__, "%s: expected 404, got %d with body %s", refused[i],
                         status, r.body.base);
        ASSERT(strstr(r.body.base, "secret") == NULL);
        tresp_free(&r);
    }
    ASSERT_EQ(tc_request(t->port, "POST /a.txt HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r), 405);
    expect_header(&r, "Allow", "GET, HEAD");
    tresp_free(&r);
    ts_stop(t);
}

TEST_IMPL(http_static_files)
{
    tree t;
    tree_make(&t);
    ps_server_opts o = {.static_dir = t.root};
    ts_run(&o, NULL, static_client, NULL);
    /* A static directory that does not exist is refused at creation. */
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/nope", t.base);
    ps_server_opts bad = {.static_dir = missing};
    ASSERT_NULL(ps_server_new(NULL, &bad));
    rm_tree(t.base);
    return 0;
}

/* ---- peers that vanish ----------------------------------------------------------------- */

static void peer_gone_client(ts *t)
{
    ps__buf b;
    ps__buf_init(&b);
    for (int i = 0; i < 200; i++)
        ps__buf_appends(&b, "GET /healthz HTTP/1.1\r\n\r\n");
    /* Closed without reading: the server's writes meet a reset socket (EPIPE). */
    for (int round = 0; round < 5; round++) {
        tc *c = tc_connect(t->port);
        tc_send(c, b.base, b.len);
        tc_close(c, false);
        tc_free(c);
        c = tc_connect(t->port);
        tc_send(c, b.base, b.len);
        tc_close(c, true);
        tc_free(c);
    }
    /* Half a request, then gone. */
    tc *c = tc_connect(t->port);
    tc_sends(c, "GET /healthz HTTP/1.1\r\nHost: x");
    tc_close(c, false);
    tc_free(c);
    /* The server is still there. */
    usleep(50 * 1000);
    tresp r;
    ASSERT_EQ(tc_request(t->port, "GET /healthz HTTP/1.1\r\n\r\n", &r), 200);
    tresp_free(&r);
    ps__buf_free(&b);
    ts_stop(t);
}

TEST_IMPL(http_peer_gone)
{
    ts_run(NULL, NULL, peer_gone_client, NULL);
    return 0;
}

TEST_IMPL(http_date)
{
    const char *d = ps__http_date();
    /* "Sun, 06 Nov 1994 08:49:37 GMT": 29 characters, English names whatever the locale. */
    ASSERT_EQ(strlen(d), 29);
    struct tm tm = {0};
    const char *end = strptime(d, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    ASSERT_NOT_NULL(end);
    ASSERT_EQ(*end, '\0');
    time_t t = timegm(&tm);
    time_t now = time(NULL);
    ASSERT_LE(t, now);
    ASSERT_GE(t, now - 2);
    ASSERT(strstr("Sun,Mon,Tue,Wed,Thu,Fri,Sat", (char[4]){d[0], d[1], d[2], 0}) != NULL);
    return 0;
}
