/*
 * conn: one load-generator client connection on libuv. It does what socket.io-client does with
 * transports: ["websocket"] and what pulsec-client does to attach a view, and nothing more:
 * TCP connect, HTTP Upgrade to WebSocket (framing and masking by wslay), the Engine.IO open
 * packet, answers to pings, the Socket.IO CONNECT of namespace "/", then
 * {"type":"attach","path":VIEW,...} and the attach_ack whose props carry channelId. From then on
 * the scenario sends text messages and sees every "message" event as raw JSON, so the hot path
 * never builds a JSON tree.
 *
 * Sends are queued in wslay and written once per loop iteration (a uv_check handle flushes every
 * connection that queued something), so a burst of replies to one read goes out in one write.
 * With TLS (lg_net_use_tls), OpenSSL sits between the socket and all of that through memory BIOs:
 * what is queued is encrypted at the flush, and what is read is decrypted before it is parsed.
 */
#ifndef LG_CONN_H
#define LG_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <wslay/wslay.h>

#define LG_MAX_ID 127 /* longest channel id kept */

/* Why a connection ended. LG_OK: we closed it (graceful or abort) after it was ready. */
#define LG_ERR_MAP(XX)                                                                             \
    XX(OK, "ok")                                                                                   \
    XX(CONNECT, "tcp connect failed")                                                              \
    XX(HTTP, "websocket upgrade refused")                                                          \
    XX(PROTO, "protocol error")                                                                    \
    XX(REFUSED, "connect_error or attach_error")                                                   \
    XX(CLOSED, "closed by the server")                                                             \
    XX(IO, "socket error")                                                                         \
    XX(ABORTED, "aborted before ready")

typedef enum lg_err {
#define XX(name, text) LG_E##name,
    LG_ERR_MAP(XX)
#undef XX
        LG_NERR
} lg_err;

const char *lg_err_name(lg_err e);
const char *lg_err_text(lg_err e);

typedef struct lg_conn lg_conn;

typedef struct lg_hooks {
    /* attach_ack arrived; lg_conn_channel(c) is the channel id. */
    void (*ready)(lg_conn *c);
    /* A Socket.IO event arrived on a ready connection: `json` is the packet's JSON array text,
     * e.g. ["message",{...}], not NUL-terminated, valid during the call. */
    void (*message)(lg_conn *c, const char *json, size_t len);
    /* The connection is closed; called exactly once, then c is freed. */
    void (*closed)(lg_conn *c, lg_err why);
} lg_hooks;

/* What every connection of a run shares: the loop, the target, the flush list. */
typedef struct lg_net {
    uv_loop_t *loop;
    struct sockaddr_storage addr; /* server address */
    char host[128];               /* Host header */
    char sio_path[128];           /* Engine.IO path, with trailing slash */
    char view_path[128];          /* view attached by every connection */
    const lg_hooks *hooks;
    uv_check_t flusher;  /* writes what the iteration queued */
    lg_conn *dirty;      /* connections with queued frames */
    lg_conn *all;        /* every connection not yet freed */
    uint64_t mask_state; /* xorshift state for WebSocket masking keys */
    size_t open;         /* connections not yet freed */
    void *tls;           /* SSL_CTX * once lg_net_use_tls ran: every connection speaks TLS */
    char readbuf[65536]; /* shared: every read is consumed before the next */
    char plain[16384];   /* shared: one decrypted TLS record at a time */
} lg_net;

int lg_net_init(lg_net *n, uv_loop_t *loop, const char *host, int port, const char *sio_path,
                const char *view_path, const lg_hooks *hooks);
void lg_net_close(lg_net *n);
/* Makes every later connection TLS (wss://): TLS 1.2+, ALPN http/1.1, the server's certificate
 * is not verified (a load generator on loopback measures cost, not trust). 0 or -1. */
int lg_net_use_tls(lg_net *n);
/* Resets every open connection (their `closed` hooks follow from the loop). */
void lg_net_abort_all(lg_net *n);

/* Starts connecting; hooks run later. `data` is the scenario's pointer. */
lg_conn *lg_conn_start(lg_net *n, void *data);
void *lg_conn_data(const lg_conn *c);
void lg_conn_set_data(lg_conn *c, void *data);
const char *lg_conn_channel(const lg_conn *c);
/* hrtime (ns) when lg_conn_start ran. */
uint64_t lg_conn_started(const lg_conn *c);
bool lg_conn_ready(const lg_conn *c);
/* Queues one WebSocket text message (an Engine.IO packet, e.g. "42[...]"); copied. Returns 0, or
 * -1 when the connection is not ready or is closing. */
int lg_conn_send(lg_conn *c, const char *text, size_t len);
/* graceful: send a WebSocket close (1000) and let the server close TCP (so TIME_WAIT stays on
 * its side); otherwise reset the TCP connection now. `closed` follows either way. */
void lg_conn_close(lg_conn *c, bool graceful);

#endif
