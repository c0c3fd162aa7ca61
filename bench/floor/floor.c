/*
 * floor: the least work that answers bench/loadgen correctly, as the floor that make bench puts
 * beside pulsec and Socket.IO (issue 15). One thread, level-triggered epoll, one read(2) per
 * readiness into one static buffer, frames unmasked in place, the request id and the payload
 * found by scanning the text (no JSON library, no tree), responses written into one static
 * buffer and sent with one write(2) per connection per read. Nothing is allocated per message:
 * a connection owns a small struct, plus a buffer only while it holds a partial frame or
 * unsent output.
 *
 * It speaks just what the loadgen uses: the WebSocket upgrade (no polling), the Engine.IO open
 * packet (it never pings), CONNECT on "/", `attach` (answered with one channel id per
 * connection), channel_message requests (answered with their payload) and events (emitted
 * back), ping/pong and close frames. It validates nothing beyond framing, so it is a bound, not
 * a server: what pulsec spends above it is the cost of pulsec's checks, layers and generality.
 *
 *   floor [--host 127.0.0.1] [--port 8000]   (--port 0: the kernel picks; other options ignored)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD 8192

typedef struct conn {
    int fd;
    bool ws;  /* past the upgrade */
    char *in; /* unconsumed input (a partial frame or request head), or NULL */
    size_t in_len;
    char *out; /* output the socket did not take, or NULL */
    size_t out_len;
    char channel[33];
} conn;

static char rbuf[256 * 1024]; /* input of the current read (plus a carried partial frame) */
static char wbuf[512 * 1024]; /* responses of the current read */
static size_t wlen;
static int ep;
static unsigned long long nconns;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void conn_free(conn *c)
{
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Writes wbuf (and whatever was pending first); keeps the rest and waits for EPOLLOUT. */
static void flush(conn *c)
{
    if (wlen == 0)
        return;
    if (c->out) {
        c->out = realloc(c->out, c->out_len + wlen);
        memcpy(c->out + c->out_len, wbuf, wlen);
        c->out_len += wlen;
        wlen = 0;
        return;
    }
    ssize_t n = write(c->fd, wbuf, wlen);
    if (n < 0)
        n = errno == EAGAIN ? 0 : (ssize_t)wlen; /* a dead peer: its EOF comes next */
    if ((size_t)n < wlen) {
        c->out_len = wlen - (size_t)n;
        c->out = malloc(c->out_len);
        memcpy(c->out, wbuf + n, c->out_len);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    wlen = 0;
}

static void put(const void *p, size_t n)
{
    if (wlen + n <= sizeof wbuf) {
        memcpy(wbuf + wlen, p, n);
        wlen += n;
    }
}
#define PUTS(s) put(s, sizeof(s) - 1)

/* A server frame: FIN + opcode, unmasked, 16-bit length at most (what the loadgen gets). */
static void frame(int opcode, const char *a, size_t alen, const char *b, size_t blen, const char *c,
                  size_t clen)
{
    size_t len = alen + blen + clen;
    uint8_t h[4] = {(uint8_t)(0x80 | opcode)};
    if (len < 126) {
        h[1] = (uint8_t)len;
        put(h, 2);
    } else {
        h[1] = 126, h[2] = (uint8_t)(len >> 8), h[3] = (uint8_t)len;
        put(h, 4);
    }
    put(a, alen);
    put(b, blen);
    put(c, clen);
}

/* The end of the JSON value starting at p (an object, array, string or scalar). */
static const char *value_end(const char *p, const char *end)
{
    int depth = 0;
    for (; p < end; p++) {
        char ch = *p;
        if (ch == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            if (depth == 0)
                return p + 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (depth-- == 0)
                return p;
            if (depth == 0)
                return p + 1;
        } else if (depth == 0 && ch == ',') {
            return p;
        }
    }
    return end;
}

static const char *find(const char *s, size_t n, const char *needle, size_t nlen)
{
    const char *p = memmem(s, n, needle, nlen);
    return p ? p + nlen : NULL;
}
#define FIND(s, n, lit) find(s, n, lit, sizeof(lit) - 1)

/* One Engine.IO text packet from the client. */
static void on_text(conn *c, const char *s, size_t n)
{
    if (n == 2 && s[0] == '4' && s[1] == '0') {
        char reply[64];
        int k = snprintf(reply, sizeof reply, "40{\"sid\":\"floor%015llx\"}", nconns);
        frame(1, reply, (size_t)k, NULL, 0, NULL, 0);
        return;
    }
    if (n < 3 || s[0] != '4' || s[1] != '2')
        return; /* pong, or nothing the loadgen sends */
    const char *end = s + n, *q;
    if ((q = FIND(s, n, "\"requestId\":\""))) {
        const char *rid_end = memchr(q, '"', (size_t)(end - q));
        const char *pl = FIND(s, n, "\"payload\":");
        if (!rid_end || !pl)
            return;
        const char *pl_end = value_end(pl, end);
        char head[128];
        int k = snprintf(head, sizeof head,
                         "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\","
                         "\"responseTo\":\"%.*s\",\"payload\":",
                         c->channel, (int)(rid_end - q), q);
        frame(1, head, (size_t)k, pl, (size_t)(pl_end - pl), "}]", 2);
    } else if ((q = FIND(s, n, "\"type\":\"channel_message\""))) {
        const char *pl = FIND(s, n, "\"payload\":");
        if (!pl)
            return;
        const char *pl_end = value_end(pl, end);
        char head[128];
        int k = snprintf(head, sizeof head,
                         "42[\"message\",{\"type\":\"channel_message\",\"channel\":\"%s\","
                         "\"event\":\"echo\",\"payload\":",
                         c->channel);
        frame(1, head, (size_t)k, pl, (size_t)(pl_end - pl), "}]", 2);
    } else if ((q = FIND(s, n, "\"attachId\":\""))) {
        const char *aid_end = memchr(q, '"', (size_t)(end - q));
        if (!aid_end)
            return;
        char msg[256];
        int k = snprintf(msg, sizeof msg,
                         "42[\"message\",{\"type\":\"attach_ack\",\"attachId\":\"%.*s\","
                         "\"props\":{\"channelId\":\"%s\"}}]",
                         (int)(aid_end - q), q, c->channel);
        frame(1, msg, (size_t)k, NULL, 0, NULL, 0);
    }
}

/* Frames in p[0..n); returns the bytes consumed (a partial frame stays), or -1 to close. */
static ssize_t on_frames(conn *c, char *p, size_t n)
{
    size_t off = 0;
    while (n - off >= 2) {
        uint8_t *h = (uint8_t *)p + off;
        size_t hl = 2, len = h[1] & 0x7f;
        if (len == 126)
            hl = 4;
        else if (len == 127)
            hl = 10;
        if (!(h[1] & 0x80))
            return -1; /* client frames are masked */
        if (n - off < hl + 4)
            break;
        if (len == 126)
            len = (size_t)h[2] << 8 | h[3];
        else if (len == 127)
            return -1; /* the loadgen never sends 64 KiB */
        if (n - off < hl + 4 + len)
            break;
        uint8_t *mask = h + hl, *d = mask + 4;
        for (size_t i = 0; i < len; i++)
            d[i] ^= mask[i & 3];
        int opcode = h[0] & 0x0f;
        if (opcode == 1)
            on_text(c, (char *)d, len);
        else if (opcode == 9)
            frame(10, (char *)d, len, NULL, 0, NULL, 0);
        else if (opcode == 8) {
            frame(8, (char *)d, len < 2 ? 0 : 2, NULL, 0, NULL, 0);
            flush(c);
            return -1;
        }
        off += hl + 4 + len;
    }
    return (ssize_t)off;
}

static void accept_key(const char *key, size_t len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char text[128];
    if (len > 64)
        len = 64;
    memcpy(text, key, len);
    memcpy(text + len, guid, sizeof guid - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(text, len + sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

/* The request head; returns its length once complete, 0 while incomplete, -1 to close. */
static ssize_t on_head(conn *c, const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return n > MAX_HEAD ? -1 : 0;
    const char *key = FIND(p, (size_t)(end - p), "Sec-WebSocket-Key: ");
    if (!key)
        return -1;
    const char *key_end = memchr(key, '\r', (size_t)(end + 2 - key));
    char acc[29];
    accept_key(key, (size_t)(key_end - key), acc);
    char resp[160];
    int k = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     acc);
    put(resp, (size_t)k);
    char open[160];
    k = snprintf(open, sizeof open,
                 "0{\"sid\":\"floor%015llx\",\"upgrades\":[],\"pingInterval\":25000,"
                 "\"pingTimeout\":20000,\"maxPayload\":1000000}",
                 nconns);
    frame(1, open, (size_t)k, NULL, 0, NULL, 0);
    snprintf(c->channel, sizeof c->channel, "%032llx", nconns);
    c->ws = true;
    return end + 4 - p;
}

static void on_readable(conn *c)
{
    size_t have = 0;
    if (c->in) { /* a partial frame or head from the last read goes first */
        memcpy(rbuf, c->in, c->in_len);
        have = c->in_len;
        free(c->in);
        c->in = NULL;
    }
    ssize_t r = read(c->fd, rbuf + have, sizeof rbuf - have);
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
            return;
        conn_free(c);
        return;
    }
    size_t n = have + (size_t)r, off = 0;
    if (!c->ws) {
        ssize_t k = on_head(c, rbuf, n);
        if (k < 0) {
            conn_free(c);
            return;
        }
        off = (size_t)k;
    }
    if (c->ws) {
        ssize_t k = on_frames(c, rbuf + off, n - off);
        if (k < 0) {
            flush(c);
            conn_free(c);
            return;
        }
        off += (size_t)k;
    }
    flush(c);
    if (off < n) {
        c->in_len = n - off;
        c->in = malloc(c->in_len);
        memcpy(c->in, rbuf + off, c->in_len);
    }
}

static void on_writable(conn *c)
{
    ssize_t n = write(c->fd, c->out, c->out_len);
    if (n < 0 && errno != EAGAIN) {
        conn_free(c);
        return;
    }
    if (n > 0) {
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    if (c->out_len == 0) {
        free(c->out);
        c->out = NULL;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 8000;
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--host") == 0)
            host = argv[++i];
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("inet_pton");
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0)
        die("bind/listen");
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    printf("listening on http://%s:%d\n", host, ntohs(sa.sin_port));
    fflush(stdout);
    if ((ep = epoll_create1(0)) < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event evs[256];
    for (;;) {
        int k = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < k; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    nconns++;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                on_writable(c);
            else
                on_readable(c);
        }
    }
}
