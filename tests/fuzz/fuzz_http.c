/*
 * fuzz_http: bytes from a client on one HTTP connection, through http.c as the server runs it:
 * http-parser with pulsec's callbacks, the header and body limits, keep-alive and pipelining,
 * dispatch (/healthz, the layer above, static files below a temporary root, 404), deferred
 * responses with input stashed behind them, static files sent in chunks, pipelined requests
 * waiting while more than PS__CONN_HIGH_WATER of output is unread, and the WebSocket upgrade
 * with frames pipelined behind the handshake.
 *
 * Input: one option byte, then the bytes the client sends.
 *   bits 0-2  read size (harness.c's fz_chunk_size: whole, 1, 2, 3, 7, 16, 100, 1000)
 *   bit 3     small limits (512-byte headers, 64-byte bodies) instead of 8 KiB / 64 KiB
 *   bit 4     the client closes its side (FIN) after sending
 *   bit 5     a deferred response is answered at the end of the input, not after each read
 *
 * What the layer above does, by path: /ws upgrades (echo), /defer defers the answer, /q reads
 * query parameters and headers back, /json answers a JSON error, /keep answers 204; anything
 * else falls through to http.c. Paths below /big take bodies of up to 1 MiB.
 */
#include "harness.h"

#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static char static_root[PATH_MAX];
static char scratch_dir[PATH_MAX];

typedef struct target {
    fz_env *env;
    ps__http_config cfg;
    ps__http_conn *deferred; /* a response owed, until answered or aborted */
    unsigned deferrals;
    unsigned aborts;
    unsigned answered;
} target;

static target T;

/* ---- the layer above ------------------------------------------------------------------- */

static void on_deferred_abort(void *user)
{
    target *t = user;
    FZ_CHECK(t->deferred != NULL);
    t->deferred = NULL;
    t->aborts++;
}

static void answer_deferred(target *t)
{
    /* Answering replays the stashed input, which may defer again: answer at most a few. */
    for (int i = 0; i < 4 && t->deferred; i++) {
        ps__http_conn *hc = t->deferred;
        t->deferred = NULL;
        t->answered++;
        ps__http_deferred_respond(hc, 200, "text/plain", PS__STRLIT("late"), NULL);
    }
}

static void echo_query(ps__http_req *req)
{
    static const char *const names[] = {"EIO", "transport", "sid", "t", "", "a b", "%"};
    ps__buf body, v;
    ps__buf_init(&body);
    ps__buf_init(&v);
    for (size_t i = 0; i < PS__ARRAY_SIZE(names); i++) {
        if (ps__http_query_get(req->query, names[i], &v)) {
            /* The decoded value is NUL-terminated at its length and may itself hold NULs. */
            FZ_CHECK(v.base && v.base[v.len] == '\0');
            ps__buf_printf(&body, "%s=", names[i]);
            ps__buf_append(&body, v.base, v.len);
            ps__buf_appendc(&body, '\n');
        }
    }
    static const char *const headers[] = {"Host", "Origin", "Content-Type", "cookie", ""};
    for (size_t i = 0; i < PS__ARRAY_SIZE(headers); i++) {
        const char *h = ps__http_header_get(req, headers[i]);
        if (h)
            ps__buf_printf(&body, "%s: %s\n", headers[i], h);
    }
    bool ka = ps__http_header_has_token(req, "Connection", "keep-alive");
    bool up = ps__http_header_has_token(req, "Upgrade", "websocket");
    ps__buf_printf(&body, "%d%d %s %zu\n", ka, up, ps__http_peer(req), req->body_len);
    ps__http_respond(req, 200, ps__http_content_type(req->path), body.base, body.len, NULL);
    ps__buf_free(&v);
    ps__buf_free(&body);
}

static bool on_request(void *user, ps__http_req *req)
{
    target *t = user;
    /* What http.c hands up: a path that starts with '/', terminated strings. */
    FZ_CHECK(req->path[0] == '/' || strcmp(req->method, "OPTIONS") == 0);
    FZ_CHECK(req->url && req->query && req->body && req->method);
    FZ_CHECK(strncmp(req->url, req->path, strlen(req->path)) == 0);
    for (size_t i = 0; i < req->nheaders; i++)
        FZ_CHECK(req->headers[i].name && req->headers[i].value);
    FZ_CHECK(req->body_len <=
             (strncmp(req->url, "/big", 4) == 0 ? 1024u * 1024 : t->cfg.max_body_size));

    if (strcmp(req->path, "/ws") == 0) {
        ps__ws_opts wo = {.max_message = 1024, .close_timeout_ms = 50};
        fz_ws_upgrade(t->env, req, &wo);
        return true;
    }
    if (strcmp(req->path, "/defer") == 0 && !t->deferred) {
        t->deferred = ps__http_defer(req, on_deferred_abort, t);
        t->deferrals++;
        return true;
    }
    if (strncmp(req->path, "/q", 2) == 0) {
        echo_query(req);
        return true;
    }
    if (strcmp(req->path, "/json") == 0) {
        ps__http_respond_json_error(req, 400, 3, "Bad request");
        return true;
    }
    if (strcmp(req->path, "/keep") == 0) {
        ps__http_respond(req, 204, NULL, NULL, 0, "X-Fuzz: 1\r\n");
        return true;
    }
    return false;
}

static size_t body_limit(void *user, const char *url)
{
    target *t = user;
    return strncmp(url, "/big", 4) == 0 ? 1024u * 1024 : t->cfg.max_body_size;
}

/* ---- the static root ------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FZ_CHECK(f);
    fputs(content, f);
    fclose(f);
}

static void write_sized(const char *dir, const char *name, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FZ_CHECK(f);
    for (size_t i = 0; i < size; i++)
        fputc('a' + (int)(i % 26), f);
    fclose(f);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void remove_scratch(void)
{
    nftw(scratch_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * scratch/www is the root: files, a directory with an index, one without, a symlink that stays
 * inside and two that leave it (to a file and to a directory beside the root).
 */
static void make_static_root(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch_dir, sizeof scratch_dir, "%s/pulsec-fuzz-http-XXXXXX", tmp ? tmp : "/tmp");
    FZ_CHECK(mkdtemp(scratch_dir));
    atexit(remove_scratch);
    char path[PATH_MAX], target_path[PATH_MAX];
    snprintf(path, sizeof path, "%s/www", scratch_dir);
    FZ_CHECK(mkdir(path, 0700) == 0);
    FZ_CHECK(realpath(path, static_root));
    write_file(static_root, "index.html", "<!doctype html><title>root</title>");
    write_file(static_root, "app.js", "console.log(1)");
    write_file(static_root, "style.css", "body{}");
    write_file(static_root, "with space.txt", "space");
    write_file(static_root, "empty.json", "");
    /* Larger than http.c's chunk (256 KiB), and larger than the 1 MiB output bound. */
    write_sized(static_root, "big.js", 300 * 1024);
    write_sized(static_root, "huge.bin", 1200 * 1024);
    snprintf(path, sizeof path, "%s/sub", static_root);
    FZ_CHECK(mkdir(path, 0700) == 0);
    write_file(path, "index.html", "<p>sub</p>");
    write_file(path, "data.json", "{\"a\":1}");
    snprintf(path, sizeof path, "%s/noindex", static_root);
    FZ_CHECK(mkdir(path, 0700) == 0);
    write_file(scratch_dir, "secret.txt", "outside the root");
    snprintf(path, sizeof path, "%s/inside", static_root);
    FZ_CHECK(symlink("app.js", path) == 0);
    snprintf(path, sizeof path, "%s/leak", static_root);
    snprintf(target_path, sizeof target_path, "%s/secret.txt", scratch_dir);
    FZ_CHECK(symlink(target_path, path) == 0);
    snprintf(path, sizeof path, "%s/up", static_root);
    FZ_CHECK(symlink(scratch_dir, path) == 0);
}

/* Whatever ps__http_resolve_static returns must be the root or below it. */
static void check_resolve(const char *raw)
{
    char *file = ps__http_resolve_static(static_root, raw);
    if (!file)
        return;
    size_t n = strlen(static_root);
    FZ_CHECK(strncmp(file, static_root, n) == 0 && (file[n] == '/' || file[n] == '\0'));
    FZ_CHECK(strstr(file, "secret") == NULL);
    ps__free(file);
}

/* ---- entry points ---------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    T.env = fz_env_get();
    make_static_root();
    T.cfg.static_root = static_root;
    T.cfg.body_limit = body_limit;
    T.cfg.on_request = on_request;
    T.cfg.user = &T;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    data++, size--;
    const uint8_t *orig = data;
    size_t orig_size = size;
    bool small = opt & 8;
    T.cfg.max_header_size = small ? 512 : 8192;
    T.cfg.max_body_size = small ? 64 : 64 * 1024;
    T.deferred = NULL;
    T.deferrals = T.aborts = T.answered = 0;

    ps__conn *c = fz_conn_new(T.env, NULL);
    ps__http_attach(c, &T.cfg);
    size_t chunk = fz_chunk_size(opt);
    while (size > 0) {
        size_t n = size < chunk ? size : chunk;
        if (!fz_conn_read(T.env, c, data, n))
            break;
        /* Pipelined answers wait while the output is over the bound: at most the bound plus
         * one file chunk and one small answer are ever queued. */
        FZ_CHECK(c->write_queued <= PS__CONN_HIGH_WATER + 512 * 1024);
        data += n;
        size -= n;
        if (!(opt & 32))
            answer_deferred(&T);
    }
    if (opt & 16)
        fz_conn_eof(T.env, c);
    answer_deferred(&T);
    /* Let queued answers drain, so that what waited behind them (chunks of a file, pipelined
     * requests, a FIN) is handled too. */
    for (int i = 0; i < 256 && fz_conn_alive(T.env, c) && c->write_queued > 0; i++) {
        fz_loop_turn(T.env);
        answer_deferred(&T);
    }
    fz_env_finish(T.env);
    /* Every deferral ended exactly once: answered or aborted. */
    FZ_CHECK(T.deferred == NULL);
    FZ_CHECK(T.answered + T.aborts == T.deferrals);

    /* The path resolver on its own, with the request bytes as a path (up to the first NUL). */
    char path[512];
    size_t n = orig_size < sizeof path - 1 ? orig_size : sizeof path - 1;
    memcpy(path, orig, n);
    path[n] = '\0';
    check_resolve(path);
    return 0;
}
