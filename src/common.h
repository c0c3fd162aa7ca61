/*
 * common: what every layer of pulsec shares and nothing else. Allocation with an out-of-memory
 * hook (internal code never checks for NULL, peer-sized allocations use ps__trymalloc), a growable
 * byte buffer, an intrusive doubly linked list, random ids and logging. No libuv, no sockets.
 */
#ifndef PS_COMMON_H
#define PS_COMMON_H

#include "pulsec.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PS__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PS__CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))
#define PS__STRLIT(s) (s), (sizeof(s) - 1)

/* ---- memory ---------------------------------------------------------------------------- */

void *ps__malloc(size_t n);
void *ps__calloc(size_t count, size_t n);
void *ps__realloc(void *p, size_t n);
/* Returns NULL instead of aborting: for sizes a peer chose (bodies, messages). */
void *ps__trymalloc(size_t n);
void *ps__tryrealloc(void *p, size_t n);
void ps__free(void *p);
char *ps__strdup(const char *s);
char *ps__strndup(const char *s, size_t n);

/* ---- byte buffer ----------------------------------------------------------------------- */

typedef struct ps__buf {
    char *base; /* NUL-terminated when len > 0 or after ps__buf_cstr */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
} ps__buf;

void ps__buf_init(ps__buf *b);
void ps__buf_free(ps__buf *b);
void ps__buf_reset(ps__buf *b);
/* Grows to hold at least `extra` more bytes (+1 for a terminating NUL); aborts on OOM. */
void ps__buf_reserve(ps__buf *b, size_t extra);
/* Same, but fails with -1 instead of aborting when the peer chose the size. */
int ps__buf_tryreserve(ps__buf *b, size_t extra);
void ps__buf_append(ps__buf *b, const void *data, size_t len);
void ps__buf_appendc(ps__buf *b, char c);
void ps__buf_appends(ps__buf *b, const char *s);
/* Appends into room already reserved (ps__buf_reserve): no checks, and no NUL written, so a run
 * of these ends with ps__buf_terminate. For the hot paths that reserve once for a message. */
static inline void ps__buf_put(ps__buf *b, const void *data, size_t len)
{
    memcpy(b->base + b->len, data, len);
    b->len += len;
}
static inline void ps__buf_terminate(ps__buf *b)
{
    b->base[b->len] = '\0';
}
#define PS__BUF_PUT_LIT(b, lit) ps__buf_put((b), (lit), sizeof(lit) - 1)
void ps__buf_printf(ps__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (consumed input). */
void ps__buf_consume(ps__buf *b, size_t n);
/* Hands the allocation to the caller (who frees it with ps__free) and empties b. */
char *ps__buf_steal(ps__buf *b, size_t *len);
const char *ps__buf_cstr(ps__buf *b);

/* ---- intrusive list (circular, with a sentinel head) ----------------------------------- */

typedef struct ps__list {
    struct ps__list *prev;
    struct ps__list *next;
} ps__list;

static inline void ps__list_init(ps__list *h)
{
    h->prev = h->next = h;
}
static inline bool ps__list_empty(const ps__list *h)
{
    return h->next == h;
}
static inline void ps__list_insert_tail(ps__list *h, ps__list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}
/* Safe on a node that was already removed (it then points at itself). */
static inline void ps__list_remove(ps__list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define ps__list_foreach(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define ps__list_foreach_safe(pos, tmp, head)                                                      \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

/* ---- ids ------------------------------------------------------------------------------- */

/* Fills buf with n bytes from the kernel CSPRNG (getrandom); aborts if the kernel refuses. */
void ps__random_bytes(void *buf, size_t n);
/* 32 lowercase hex characters + NUL: channel and request ids (DESIGN §3). */
#define PS__HEX_ID_LEN 32
void ps__random_hex_id(char out[PS__HEX_ID_LEN + 1]);
/* 20 URL-safe base64 characters + NUL: Engine.IO and Socket.IO sids. */
#define PS__SID_LEN 20
void ps__random_sid(char out[PS__SID_LEN + 1]);
/*
 * The worker that owns an id: the first character of a sid (URL-safe base64, 64 values) names a
 * worker index (0..63) when the server runs workers. Any layer that routes by id (polling
 * requests today, session recovery tomorrow) stamps and reads it with these.
 */
void ps__id_set_worker(char *id, int worker);
/* The index the id's first character names, or -1 if it is not a sid character. */
int ps__id_worker(const char *id);

/* ---- text helpers ---------------------------------------------------------------------- */

bool ps__utf8_valid(const uint8_t *s, size_t len);
bool ps__strcaseeq(const char *a, const char *b);
bool ps__strncaseeq(const char *a, size_t alen, const char *b);
/* Decodes %XX and (if plus_is_space) '+' in place; returns the new length or -1 on a bad escape. */
long ps__url_decode(char *s, size_t len, bool plus_is_space);
/* Encodes bytes as standard base64 with padding into out (4*ceil(n/3)+1 bytes); returns length. */
size_t ps__base64_encode(const uint8_t *in, size_t n, char *out);
/* Decodes standard base64 (with padding), appending to out; returns the length or -1. */
long ps__base64_decode(const char *in, size_t n, ps__buf *out);
/* Appends s as a JSON string literal (quotes included); s must be valid UTF-8. */
void ps__json_escape(ps__buf *b, const char *s);
/* Appends the compact JSON text of v (ps__JSON_FLAGS). */
void ps__json_append(ps__buf *b, const json_t *v);
/* Parses one JSON text (any value at the top) as jansson's json_loadb(JSON_DECODE_ANY |
 * JSON_ALLOW_NUL) would, only faster; beyond int64, integers become reals. NULL if invalid. */
json_t *ps__json_parse(const char *s, size_t len);
/*
 * Scanning without a tree. A span is the text of one JSON value (a string's quotes included).
 * ps__json_scan accepts exactly the texts ps__json_parse accepts and, with an index, records
 * the spans of the root's children (for an object: key, value, key, value...) and of the
 * children of the root's child number `sub_of` (-1: none). Counts go on past the arrays'
 * capacity, so a count above it means "more than were recorded". Returns 0 or -1.
 */
typedef struct ps__json_span {
    const char *p;
    size_t len;
} ps__json_span;
#define PS__JSON_INDEX_TOP 8
#define PS__JSON_INDEX_SUB 32
typedef struct ps__json_index {
    int sub_of;         /* in */
    char root;          /* '[' or '{' when the root is a container, else 0 */
    char sub;           /* the same for child sub_of */
    ps__json_span text; /* the whole text scanned */
    uint64_t top_esc;   /* bit i: span i of top is a string written with an escape */
    uint64_t sub_esc;   /* the same for subs */
    size_t ntop;        /* spans of the root's children (keys count) */
    size_t nsub;
    ps__json_span top[PS__JSON_INDEX_TOP];
    ps__json_span subs[PS__JSON_INDEX_SUB];
} ps__json_index;
int ps__json_scan(const char *s, size_t len, ps__json_index *ix);
/* Unescapes the inside of a scanned string (no quotes) into out (at least len bytes). */
size_t ps__json_unescape(const char *s, size_t len, char *out);
/* Whether a scanned value is the string literal `lit` written without escapes. */
bool ps__json_span_is(ps__json_span v, const char *lit, size_t n);
/* The value of `key` among an object's recorded members (last duplicate wins); p NULL if
 * absent. `esc` is the index's escape bits for these spans (UINT64_MAX when unknown). */
ps__json_span ps__json_member(const ps__json_span *members, size_t n, uint64_t esc, const char *key,
                              size_t klen);
/* Compact JSON, keys in insertion order (what the Socket.IO JS encoder produces). */
#define PS__JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY)

/* ---- logging --------------------------------------------------------------------------- */

void ps__log_set_level(int level);
/* A process-wide tag printed in every line ("worker 1 pid 1234"); NULL or "" for none. */
void ps__log_set_tag(const char *tag);
void ps__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define PS__ERROR(...) ps__log(PS_LOG_ERROR, __VA_ARGS__)
#define PS__WARN(...) ps__log(PS_LOG_WARN, __VA_ARGS__)
#define PS__INFO(...) ps__log(PS_LOG_INFO, __VA_ARGS__)
#define PS__DEBUG(...) ps__log(PS_LOG_DEBUG, __VA_ARGS__)

/* Monotonic milliseconds, for logs and stats (timers use the loop clock). */
uint64_t ps__now_ms(void);
/* Monotonic nanoseconds, for latency histograms. */
uint64_t ps__now_ns(void);

/* ---- latency histograms (GET /metrics) ---------------------------------------------- */

/* Upper bounds of the buckets in seconds, ascending: 50 us to 10 s (Prometheus's "le"). */
#define PS__HIST_BUCKETS 17
extern const double ps__hist_bounds[PS__HIST_BUCKETS];
typedef struct ps__histogram {
    uint64_t
        buckets[PS__HIST_BUCKETS + 1]; /* observations per bucket, not cumulative; last: +Inf */
    uint64_t count;
    uint64_t sum_ns;
} ps__histogram;
void ps__histogram_observe(ps__histogram *h, uint64_t ns);

/* ---- trusted proxies ------------------------------------------------------------------- */

/* An address block ("10.0.0.0/8", "::1", "192.0.2.7"); IPv4 is held IPv4-mapped. */
typedef struct ps__cidr {
    uint8_t addr[16];
    uint8_t bits; /* prefix length over the 128-bit form */
} ps__cidr;
/* False when s is not an address, optionally with a /prefix. */
bool ps__cidr_parse(const char *s, ps__cidr *out);
/* Whether the textual address addr[0..len) lies in one of the n blocks (false if no address). */
bool ps__cidr_match(const ps__cidr *list, size_t n, const char *addr, size_t len);

#endif
