/*
 * app: the smallest real use of an installed pulsec. It serves a view on a free port, asks its
 * own /healthz over a libuv TCP connection, checks the answer and the library's version against
 * the header it was compiled with, and stops. Exit status 0 means it all worked.
 */
#include <pulsec.h>
#include <stdio.h>
#include <string.h>

static ps_server *srv;
static uv_tcp_t client;
static uv_connect_t connect_req;
static uv_write_t write_req;
static char answer[1024];
static size_t answer_len;
static int status = 1;

static int widget_init(ps_view *view, json_t *props, void *user)
{
    ps_channel *ch = ps_channel_open(view);
    json_t *p = json_pack("{s:s}", "channelId", ps_channel_id(ch));
    ps_view_set_props(view, p);
    json_decref(p);
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(answer + answer_len, (unsigned)(sizeof answer - 1 - answer_len));
}

static void on_closed(uv_handle_t *h)
{
    ps_server_stop(srv);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n > 0) {
        answer_len += (size_t)n;
        answer[answer_len] = '\0';
        if (!strstr(answer, "{\"status\":\"ok\"}"))
            return;
        status = strncmp(answer, "HTTP/1.1 200 ", 13) == 0 ? 0 : 1;
    }
    uv_close((uv_handle_t *)&client, on_closed);
}

static void on_connect(uv_connect_t *req, int rc)
{
    static char get[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    uv_buf_t b = uv_buf_init(get, sizeof get - 1);
    if (rc != 0 || uv_write(&write_req, (uv_stream_t *)&client, &b, 1, NULL) != 0 ||
        uv_read_start((uv_stream_t *)&client, on_alloc, on_read) != 0)
        uv_close((uv_handle_t *)&client, on_closed);
}

int main(void)
{
    if (strcmp(ps_version_string(), PS_VERSION_STRING) != 0) {
        fprintf(stderr, "app: library %s, header %s\n", ps_version_string(), PS_VERSION_STRING);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    ps_server_opts opts = {.port = 0};
    srv = ps_server_new(&loop, &opts);
    ps_view_type widget = {.init = widget_init};
    if (!srv || ps_route(srv, "/widget", &widget) != 0 || ps_server_listen(srv) != 0)
        return 1;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", ps_server_port(srv), &addr);
    uv_tcp_init(&loop, &client);
    uv_tcp_connect(&connect_req, &client, (const struct sockaddr *)&addr, on_connect);
    uv_run(&loop, UV_RUN_DEFAULT);
    ps_server_free(srv);
    int clean = uv_loop_close(&loop) == 0;
    printf("app: pulsec %s, /healthz %s\n", ps_version_string(), status == 0 ? "ok" : "FAILED");
    return status == 0 && clean ? 0 : 1;
}
