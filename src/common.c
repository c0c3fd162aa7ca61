/*
 * common: allocation with an out-of-memory hook, byte buffers, random ids, UTF-8 validation,
 * URL and base64 helpers, error names and logging. Everything here is pure and loop-free so
 * that every other module, and every test, can use it.
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <yajl/yajl_parse.h>

static void *(*alloc_malloc)(size_t) = malloc;
static void *(*alloc_realloc)(void *, size_t) = realloc;
static void (*alloc_free)(void *) = free;

static void oom(size_t n)
{
    fprintf(stderr, "pulsec: out of memory allocating %zu bytes\n", n);
    abort();
}

void ps_set_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                      void (*free_fn)(void *))
{
    alloc_malloc = malloc_fn ? malloc_fn : malloc;
    alloc_realloc = realloc_fn ? realloc_fn : realloc;
    alloc_free = free_fn ? free_fn : free;
    json_set_alloc_funcs(alloc_malloc, alloc_free);
}

void *ps__trymalloc(size_t n)
{
    return alloc_malloc(n ? n : 1);
}

void *ps__tryrealloc(void *p, size_t n)
{
    return alloc_realloc(p, n ? n : 1);
}

void *ps__malloc(size_t n)
{
    void *p = ps__trymalloc(n);
    if (!p)
        oom(n);
    return p;
}

void *ps__calloc(size_t count, size_t n)
{
    if (n && count > SIZE_MAX / n)
        oom(SIZE_MAX);
    void *p = ps__malloc(count * n);
    memset(p, 0, count * n);
    return p;
}

void *ps__realloc(void *p, size_t n)
{
    void *q = ps__tryrealloc(p, n);
    if (!q)
        oom(n);
    return q;
}

void ps__free(void *p)
{
    if (p)
        alloc_free(p);
}

char *ps__strndup(const char *s, size_t n)
{
    char *d = ps__malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ps__strdup(const char *s)
{
    return s ? ps__strndup(s, strlen(s)) : NULL;
}

/* ---- buffers --------------------------------------------------------------------------- */

void ps__buf_init(ps__buf *b)
{
    b->base = NULL;
    b->len = b->cap = 0;
}

void ps__buf_free(ps__buf *b)
{
    ps__free(b->base);
    ps__buf_init(b);
}

void ps__buf_reset(ps__buf *b)
{
    b->len = 0;
    if (b->base)
        b->base[0] = '\0';
}

int ps__buf_tryreserve(ps__buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len)
        return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = ps__tryrealloc(b->base, cap);
    if (!p)
        return -1;
    b->base = p;
    b->cap = cap;
    return 0;
}

void ps__buf_reserve(ps__buf *b, size_t extra)
{
    if (ps__buf_tryreserve(b, extra) != 0)
        oom(b->len + extra);
}

void ps__buf_append(ps__buf *b, const void *data, size_t len)
{
    ps__buf_reserve(b, len);
    if (len)
        memcpy(b->base + b->len, data, len);
    b->len += len;
    b->base[b->len] = '\0';
}

void ps__buf_appendc(ps__buf *b, char c)
{
    ps__buf_append(b, &c, 1);
}

void ps__buf_appends(ps__buf *b, const char *s)
{
    ps__buf_append(b, s, strlen(s));
}

void ps__buf_printf(ps__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    ps__buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ps__buf_consume(ps__buf *b, size_t n)
{
    if (n >= b->len) {
        ps__buf_reset(b);
        return;
    }
    memmove(b->base, b->base + n, b->len - n);
    b->len -= n;
    b->base[b->len] = '\0';
}

char *ps__buf_steal(ps__buf *b, size_t *len)
{
    /* Terminated even when nothing was ever appended: a fresh allocation holds garbage. */
    char *p = (char *)ps__buf_cstr(b);
    if (len)
        *len = b->len;
    ps__buf_init(b);
    return p;
}

const char *ps__buf_cstr(ps__buf *b)
{
    if (!b->base)
        ps__buf_reserve(b, 0);
    b->base[b->len] = '\0';
    return b->base;
}

/* ---- ids ------------------------------------------------------------------------------- */

void ps__random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "pulsec: getrandom failed: %s\n", strerror(errno));
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

void ps__random_hex_id(char out[PS__HEX_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[PS__HEX_ID_LEN / 2];
    ps__random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[PS__HEX_ID_LEN] = '\0';
}

static const char sid_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void ps__id_set_worker(char *id, int worker)
{
    id[0] = sid_alphabet[worker & 63];
}

int ps__id_worker(const char *id)
{
    const char *p = id && id[0] ? strchr(sid_alphabet, id[0]) : NULL;
    return p ? (int)(p - sid_alphabet) : -1;
}

void ps__random_sid(char out[PS__SID_LEN + 1])
{
    const char *alphabet = sid_alphabet;
    uint8_t raw[PS__SID_LEN];
    ps__random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < PS__SID_LEN; i++)
        out[i] = alphabet[raw[i] & 63];
    out[PS__SID_LEN] = '\0';
}

/* ---- text ------------------------------------------------------------------------------ */

/* One multi-byte sequence at s[0] (s[0] >= 0x80) of RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF. Returns its length, or 0 when invalid or cut off by `left`. */
static size_t utf8_seq(const uint8_t *s, size_t left)
{
    uint8_t c = s[0];
    size_t n;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) {
        n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (left <= n)
        return 0;
    for (size_t k = 1; k <= n; k++) {
        uint8_t cc = s[k];
        if ((cc & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n + 1;
}

/* Eight bytes at a time while they are ASCII, which channel messages mostly are: about a
 * tenth of the byte-by-byte loop's instructions (BENCHMARKS.md). */
bool ps__utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_seq(s + i, len - i);
        if (!n)
            return false;
        i += n;
    }
    return true;
}

bool ps__strcaseeq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

bool ps__strncaseeq(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long ps__url_decode(char *s, size_t len, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            s[o++] = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            s[o++] = ' ';
        } else {
            s[o++] = c;
        }
    }
    if (o < len)
        s[o] = '\0';
    return (long)o;
}

size_t ps__base64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long ps__base64_decode(const char *in, size_t n, ps__buf *out)
{
    if (n % 4 != 0)
        return -1;
    size_t start = out->len;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64val(in[i + k])) < 0) {
                return -1;
            }
        }
        uint32_t w = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) | ((uint32_t)v[2] << 6) |
                     (uint32_t)v[3];
        char bytes[3] = {(char)(w >> 16), (char)(w >> 8), (char)w};
        ps__buf_append(out, bytes, (size_t)(3 - pad));
    }
    return (long)(out->len - start);
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
/* Flags the bytes of a word below n (n <= 128), or equal to c: the classic SWAR tests. A
 * borrow can flag a byte above a flagged one, never below, so the lowest flag is exact. */
#define HAS_LESS(w, n) (((w)-ONES * (n)) & ~(w)&HIGHS)
#define HAS_BYTE(w, c) HAS_LESS((w) ^ (ONES * (c)), 1)

/* The length of the run at p of bytes a JSON string holds as they are, eight at a time: no
 * quote, backslash or control byte; `ascii` stops at bytes >= 0x80 too. */
static inline __attribute__((always_inline)) size_t plain_run(const uint8_t *p, size_t n,
                                                              bool ascii)
{
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        uint64_t m = HAS_LESS(w, 0x20) | HAS_BYTE(w, '"') | HAS_BYTE(w, '\\');
        if (ascii)
            m |= w & HIGHS;
        if (m && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
            return i + ((size_t)__builtin_ctzll(m) >> 3); /* the first byte is the lowest */
        if (m)
            break; /* big-endian: the loop below finds it */
    }
    while (i < n && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\' && (!ascii || p[i] < 0x80))
        i++;
    return i;
}

void ps__json_escape(ps__buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = strlen(s);
    ps__buf_reserve(b, len + 2);
    b->base[b->len++] = '"';
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    for (;;) {
        size_t run = plain_run(p, (size_t)(end - p), false);
        ps__buf_put(b, p, run);
        p += run;
        if (p == end)
            break;
        /* An escape takes up to six bytes for one: room for them and what is left. */
        ps__buf_reserve(b, 6 + (size_t)(end - p));
        unsigned char c = *p++;
        char esc[6] = {'\\', (char)c};
        size_t n = 2;
        switch (c) {
        case '"':
        case '\\': break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            n = 6;
        }
        ps__buf_put(b, esc, n);
    }
    b->base[b->len++] = '"';
    ps__buf_terminate(b);
}

static int json_append_cb(const char *buffer, size_t size, void *data)
{
    ps__buf_append(data, buffer, size);
    return 0;
}

void ps__json_append(ps__buf *b, const json_t *v)
{
    json_dump_callback(v, json_append_cb, b, PS__JSON_FLAGS);
}

/* ---- JSON parsing ---------------------------------------------------------------------- */

/*
 * jansson's parser costs about 2.5 us for a 180-byte channel message, 40% of a round trip
 * (BENCHMARKS.md); yajl's lexer builds the same jansson tree in a third of that. What jansson
 * accepted is kept: strict UTF-8, no lone surrogate escapes, NUL allowed in strings but not in
 * keys, the last of duplicate keys wins, nesting up to 2048, and an integer beyond int64
 * becomes a real (JavaScript's number) instead of an error.
 */
#define PS__JSON_MAX_DEPTH 2048

typedef struct json_builder {
    json_t *root;
    json_t **stack; /* open containers, innermost last */
    size_t depth, cap;
    json_t *inline_stack[16];
    ps__buf key; /* the pending object key: yajl's pointer dies with its next string */
    yajl_handle h;
    bool finishing;  /* inside yajl_complete_parse: the text has been read to its end */
    size_t root_end; /* where the top-level value ended in the text, or SIZE_MAX */
} json_builder;

/* The top-level value is complete. yajl misses a string left open after it ("1 \"x"), so
 * what follows it is checked here: the offset is exact while yajl_parse runs; a value that
 * completes only in yajl_complete_parse (a number) ends the text. */
static void jb_root_done(json_builder *b)
{
    if (!b->finishing)
        b->root_end = yajl_get_bytes_consumed(b->h);
}

static int jb_add(json_builder *b, json_t *v)
{
    if (!v)
        return 0;
    if (b->depth == 0) {
        b->root = v;
        if (!json_is_array(v) && !json_is_object(v))
            jb_root_done(b);
        return 1;
    }
    json_t *top = b->stack[b->depth - 1];
    if (json_is_array(top))
        return json_array_append_new(top, v) == 0;
    return json_object_setn_new_nocheck(top, b->key.base, b->key.len, v) == 0;
}

static int jb_open(json_builder *b, json_t *container)
{
    if (b->depth == PS__JSON_MAX_DEPTH) {
        json_decref(container);
        return 0;
    }
    if (!jb_add(b, container))
        return 0;
    if (b->depth == b->cap) {
        size_t cap = b->cap * 4;
        json_t **stack = ps__malloc(cap * sizeof *stack);
        memcpy(stack, b->stack, b->depth * sizeof *stack);
        if (b->stack != b->inline_stack)
            ps__free(b->stack);
        b->stack = stack;
        b->cap = cap;
    }
    b->stack[b->depth++] = container;
    return 1;
}

static int jb_close(void *ctx)
{
    json_builder *b = ctx;
    if (--b->depth == 0)
        jb_root_done(b);
    return 1;
}

static int jb_null(void *ctx)
{
    return jb_add(ctx, json_null());
}

static int jb_boolean(void *ctx, int v)
{
    return jb_add(ctx, json_boolean(v));
}

static locale_t c_numeric;
static uv_once_t c_numeric_once = UV_ONCE_INIT;

static void c_numeric_init(void)
{
    c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static int jb_number(void *ctx, const char *s, size_t len)
{
    char small[64];
    char *text = len < sizeof small ? small : ps__malloc(len + 1);
    memcpy(text, s, len);
    text[len] = '\0';
    json_t *v = NULL;
    if (!strpbrk(text, ".eE")) {
        errno = 0;
        long long n = strtoll(text, NULL, 10);
        if (errno != ERANGE)
            v = json_integer(n);
    }
    if (!v) {
        /* In the C locale whatever the application set: JSON's decimal point is '.'. */
        uv_once(&c_numeric_once, c_numeric_init);
        errno = 0;
        double d = strtod_l(text, NULL, c_numeric);
        if (!(errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL)))
            v = json_real(d); /* underflow to 0 or a subnormal is fine, as for jansson */
    }
    if (text != small)
        ps__free(text);
    return jb_add(ctx, v);
}

static int jb_string(void *ctx, const unsigned char *s, size_t len)
{
    return jb_add(ctx, json_stringn_nocheck((const char *)s, len));
}

static int jb_start_map(void *ctx)
{
    return jb_open(ctx, json_object());
}

static int jb_map_key(void *ctx, const unsigned char *s, size_t len)
{
    json_builder *b = ctx;
    if (memchr(s, '\0', len))
        return 0;
    ps__buf_reset(&b->key);
    ps__buf_append(&b->key, s, len);
    return 1;
}

static int jb_start_array(void *ctx)
{
    return jb_open(ctx, json_array());
}

static const yajl_callbacks json_builder_cbs = {
    .yajl_null = jb_null,
    .yajl_boolean = jb_boolean,
    .yajl_number = jb_number,
    .yajl_string = jb_string,
    .yajl_start_map = jb_start_map,
    .yajl_map_key = jb_map_key,
    .yajl_end_map = jb_close,
    .yajl_start_array = jb_start_array,
    .yajl_end_array = jb_close,
};

/*
 * yajl turns a lone high surrogate escape into '?' and pairs a high surrogate with whatever
 * \u follows; jansson refused both, and a string must stay what the client sent. Escapes
 * occur only inside strings, and "\\" is consumed whole, so a scan from one backslash to the
 * next sees every \u escape of valid JSON.
 */
static unsigned hex4(const char *p)
{
    unsigned u = 0;
    for (int i = 0; i < 4; i++) {
        int d = hexval(p[i]);
        if (d < 0)
            return 0; /* not an escape yajl accepts: it fails the parse itself */
        u = u << 4 | (unsigned)d;
    }
    return u;
}

static bool surrogates_paired(const char *s, size_t len)
{
    size_t i = 0;
    for (;;) {
        const char *p = i < len ? memchr(s + i, '\\', len - i) : NULL;
        if (!p)
            return true;
        i = (size_t)(p - s);
        if (len - i < 6 || s[i + 1] != 'u') {
            i += 2;
            continue;
        }
        unsigned u = hex4(s + i + 2);
        i += 6;
        if (u >= 0xDC00 && u <= 0xDFFF)
            return false;
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (len - i < 6 || s[i] != '\\' || s[i + 1] != 'u')
                return false;
            unsigned low = hex4(s + i + 2);
            if (low < 0xDC00 || low > 0xDFFF)
                return false;
            i += 6;
        }
    }
}

json_t *ps__json_parse(const char *s, size_t len)
{
    /* yajl also takes \v and \f for white space; JSON has neither outside strings, nor raw
     * control characters inside them. */
    if (memchr(s, '\v', len) || memchr(s, '\f', len))
        return NULL;
    if (!ps__utf8_valid((const uint8_t *)s, len) || !surrogates_paired(s, len))
        return NULL;
    json_builder b = {.cap = PS__ARRAY_SIZE(b.inline_stack), .root_end = SIZE_MAX};
    b.stack = b.inline_stack;
    ps__buf_init(&b.key);
    yajl_handle h = b.h = yajl_alloc(&json_builder_cbs, NULL, &b);
    /* Checked above, strictly (yajl's check lets overlong forms and surrogates through). */
    yajl_config(h, yajl_dont_validate_strings, 1);
    bool ok = yajl_parse(h, (const unsigned char *)s, len) == yajl_status_ok;
    b.finishing = true;
    ok = ok && yajl_complete_parse(h) == yajl_status_ok && b.root;
    for (size_t i = b.root_end; ok && i < len; i++)
        ok = s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r';
    yajl_free(h);
    ps__buf_free(&b.key);
    if (b.stack != b.inline_stack)
        ps__free(b.stack);
    if (!ok) {
        json_decref(b.root);
        return NULL;
    }
    return b.root;
}

/* ---- JSON scanning ------------------------------------------------------------------- */

/*
 * The hot path reads a packet's envelope without building it: ps__json_scan checks the whole
 * text against exactly what ps__json_parse accepts (fuzz_json compares the two on every input)
 * and records where the root's children, and the children of one of them, begin and end.
 * Runs of bytes that a string may hold as they are go eight at a time (plain_run); anything
 * else takes the slow branch.
 */

/* A number's text is valid JSON grammar already; this is ps__json_parse's range rule: an
 * integer beyond int64 becomes a real, and a real that overflows is refused. */
static bool number_in_range(const char *s, size_t len)
{
    size_t digits = len - (s[0] == '-');
    if (digits <= 18 && !memchr(s, '.', len) && !memchr(s, 'e', len) && !memchr(s, 'E', len))
        return true;
    char small[64];
    char *text = len < sizeof small ? small : ps__malloc(len + 1);
    memcpy(text, s, len);
    text[len] = '\0';
    bool ok = true;
    if (!strpbrk(text, ".eE")) {
        errno = 0;
        (void)strtoll(text, NULL, 10);
        if (errno != ERANGE)
            goto out;
    }
    uv_once(&c_numeric_once, c_numeric_init);
    errno = 0;
    double d = strtod_l(text, NULL, c_numeric);
    ok = !(errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL));
out:
    if (text != small)
        ps__free(text);
    return ok;
}

/* The string whose opening quote is at *pp; on success *pp is past its closing quote. A key
 * may not hold U+0000 (ps__json_parse refuses such keys). */
static inline __attribute__((always_inline)) bool
scan_string(const uint8_t **pp, const uint8_t *end, bool key, bool *escaped)
{
    const uint8_t *p = *pp + 1;
    for (;;) {
        p += plain_run(p, (size_t)(end - p), true);
        if (p >= end)
            return false;
        uint8_t c = *p;
        if (c == '"') {
            *pp = p + 1;
            return true;
        }
        if (c == '\\') {
            *escaped = true;
            if (end - p < 2)
                return false;
            uint8_t e = p[1];
            if (e != 'u') {
                if (!(e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                      e == 'r' || e == 't'))
                    return false;
                p += 2;
                continue;
            }
            if (end - p < 6)
                return false;
            unsigned u = 0;
            for (int i = 0; i < 4; i++) {
                int d = hexval((char)p[2 + i]);
                if (d < 0)
                    return false;
                u = u << 4 | (unsigned)d;
            }
            p += 6;
            if ((u == 0 && key) || (u >= 0xDC00 && u <= 0xDFFF))
                return false;
            if (u >= 0xD800 && u <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
                    return false;
                unsigned low = 0;
                for (int i = 0; i < 4; i++) {
                    int d = hexval((char)p[2 + i]);
                    if (d < 0)
                        return false;
                    low = low << 4 | (unsigned)d;
                }
                if (low < 0xDC00 || low > 0xDFFF)
                    return false;
                p += 6;
            }
            continue;
        }
        if (c < 0x20)
            return false;
        size_t n = utf8_seq(p, (size_t)(end - p));
        if (!n)
            return false;
        p += n;
    }
}

static bool scan_number(const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp, *start = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return false;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return false;
    }
    if (p < end && *p == '.') {
        const uint8_t *f = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == f)
            return false;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const uint8_t *x = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == x)
            return false;
    }
    if (!number_in_range((const char *)start, (size_t)(p - start)))
        return false;
    *pp = p;
    return true;
}

static bool scan_literal(const uint8_t **pp, const uint8_t *end, const char *lit, size_t n)
{
    if ((size_t)(end - *pp) < n || memcmp(*pp, lit, n) != 0)
        return false;
    *pp += n;
    return true;
}

#define SKIP_WS(p, end)                                                                            \
    while ((p) < (end) && (*(p) == ' ' || *(p) == '\t' || *(p) == '\n' || *(p) == '\r'))           \
    (p)++

static inline void span_put(ps__json_span *spans, size_t *n, size_t cap, const uint8_t *a,
                            const uint8_t *b, uint64_t *esc, bool escaped)
{
    if (*n < cap)
        spans[*n] = (ps__json_span){(const char *)a, (size_t)(b - a)};
    if (escaped && *n < 64)
        *esc |= 1ull << *n;
    (*n)++;
}

/* The scanner's body, made twice by the compiler: with an index (the hot path) and without
 * (a text only checked), so that neither pays for the other's tests. */
static inline __attribute__((always_inline)) int scan(const char *text, size_t len,
                                                      ps__json_index *ix)
{
    const uint8_t *p = (const uint8_t *)text, *end = p + len;
    uint8_t stack[PS__JSON_MAX_DEPTH]; /* '[' or '{' of each open container */
    size_t depth = 0, child = 0;       /* child: index of the root's current child */
    const uint8_t *start1 = NULL, *start2 = NULL;
    int sub_of = ix ? ix->sub_of : -1;
    bool escaped = false; /* the key just scanned held an escape */
    if (ix) {
        ix->root = ix->sub = 0;
        ix->ntop = ix->nsub = 0;
        ix->top_esc = ix->sub_esc = 0;
        ix->text = (ps__json_span){text, len};
    }
    SKIP_WS(p, end);
value:
    if (ix) {
        if (depth == 1)
            start1 = p;
        else if (depth == 2 && (int)child == sub_of)
            start2 = p;
    }
    if (p >= end)
        return -1;
    switch (*p) {
    case '{':
    case '[':
        if (depth == PS__JSON_MAX_DEPTH)
            return -1;
        if (ix && depth == 0)
            ix->root = (char)*p;
        else if (ix && depth == 1 && (int)child == sub_of)
            ix->sub = (char)*p;
        stack[depth++] = *p++;
        SKIP_WS(p, end);
        if (p < end && *p == (stack[depth - 1] == '[' ? ']' : '}')) {
            p++;
            depth--;
            goto after;
        }
        if (stack[depth - 1] == '{')
            goto key;
        goto value;
    case '"':
        if (!scan_string(&p, end, false, &escaped))
            return -1;
        break;
    case 't':
        if (!scan_literal(&p, end, "true", 4))
            return -1;
        break;
    case 'f':
        if (!scan_literal(&p, end, "false", 5))
            return -1;
        break;
    case 'n':
        if (!scan_literal(&p, end, "null", 4))
            return -1;
        break;
    default:
        if (!scan_number(&p, end))
            return -1;
    }
after:
    if (ix) {
        /* Escape bits are for keys, which member lookups compare; values need none. */
        if (depth == 1)
            span_put(ix->top, &ix->ntop, PS__ARRAY_SIZE(ix->top), start1, p, &ix->top_esc, false);
        else if (depth == 2 && (int)child == sub_of)
            span_put(ix->subs, &ix->nsub, PS__ARRAY_SIZE(ix->subs), start2, p, &ix->sub_esc, false);
    }
    if (depth == 0) {
        SKIP_WS(p, end);
        return p == end ? 0 : -1;
    }
    SKIP_WS(p, end);
    if (p >= end)
        return -1;
    uint8_t open = stack[depth - 1];
    if (*p == ',') {
        p++;
        if (depth == 1 && open == '[')
            child++;
        SKIP_WS(p, end);
        if (open == '[')
            goto value;
        if (depth == 1)
            child++;
        goto key;
    }
    if (*p != (open == '[' ? ']' : '}'))
        return -1;
    p++;
    depth--;
    goto after;
key:
    if (ix) {
        if (depth == 1)
            start1 = p;
        else if (depth == 2 && (int)child == sub_of)
            start2 = p;
    }
    escaped = false;
    if (p >= end || *p != '"' || !scan_string(&p, end, true, &escaped))
        return -1;
    if (ix) {
        if (depth == 1)
            span_put(ix->top, &ix->ntop, PS__ARRAY_SIZE(ix->top), start1, p, &ix->top_esc, escaped);
        else if (depth == 2 && (int)child == sub_of)
            span_put(ix->subs, &ix->nsub, PS__ARRAY_SIZE(ix->subs), start2, p, &ix->sub_esc,
                     escaped);
    }
    SKIP_WS(p, end);
    if (p >= end || *p != ':')
        return -1;
    p++;
    SKIP_WS(p, end);
    goto value;
}

int ps__json_scan(const char *text, size_t len, ps__json_index *ix)
{
    return ix ? scan(text, len, ix) : scan(text, len, NULL);
}

size_t ps__json_unescape(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        char e = s[++i];
        switch (e) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            uint32_t u = hex4(s + i + 1);
            i += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                uint32_t low = hex4(s + i + 3);
                i += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00);
            }
            if (u < 0x80) {
                out[o++] = (char)u;
            } else if (u < 0x800) {
                out[o++] = (char)(0xC0 | u >> 6);
                out[o++] = (char)(0x80 | (u & 0x3F));
            } else if (u < 0x10000) {
                out[o++] = (char)(0xE0 | u >> 12);
                out[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (u & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | u >> 18);
                out[o++] = (char)(0x80 | ((u >> 12) & 0x3F));
                out[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (u & 0x3F));
            }
            break;
        }
        default: out[o++] = e; /* " \\ / */
        }
    }
    return o;
}

bool ps__json_span_is(ps__json_span v, const char *lit, size_t n)
{
    return v.len == n + 2 && v.p[0] == '"' && memcmp(v.p + 1, lit, n) == 0;
}

ps__json_span ps__json_member(const ps__json_span *members, size_t n, uint64_t esc, const char *key,
                              size_t klen)
{
    /* The last of duplicate keys wins, as in ps__json_parse. A key with escapes is compared
     * unescaped; a plain one as it is. */
    for (size_t i = n & ~(size_t)1; i > 0; i -= 2) {
        ps__json_span k = members[i - 2];
        if (k.len == klen + 2 && memcmp(k.p + 1, key, klen) == 0 && !memchr(key, '\\', klen))
            return members[i - 1];
        /* An escape makes the text longer than the key it spells, at most six times. Keys the
         * scanner saw without one (their bit clear in esc) need no second look. */
        bool maybe = i - 2 >= 64 || (esc >> (i - 2) & 1);
        if (maybe && k.len > klen + 2 && k.len - 2 <= 6 * klen &&
            memchr(k.p + 1, '\\', k.len - 2)) {
            char small[256];
            char *buf = k.len - 2 <= sizeof small ? small : ps__malloc(k.len - 2);
            size_t ul = ps__json_unescape(k.p + 1, k.len - 2, buf);
            bool same = ul == klen && memcmp(buf, key, klen) == 0;
            if (buf != small)
                ps__free(buf);
            if (same)
                return members[i - 1];
        }
    }
    return (ps__json_span){NULL, 0};
}

/* ---- errors ---------------------------------------------------------------------------- */

/* libuv describes a code it does not know with a string it allocates on every call and never
 * frees, so only libuv's own codes are handed to it: the texts stay static, as promised. */
#define PS__UV_CASE(name, text) case UV_##name:
#define PS__UV_ERRNO_CASES UV_ERRNO_MAP(PS__UV_CASE)

const char *ps_strerror(int err)
{
    switch (err) {
    case 0: return "success";
#define PS__ERR_TEXT(name, value, text)                                                            \
    case value: return text;
        PS_ERRNO_MAP(PS__ERR_TEXT)
#undef PS__ERR_TEXT
        PS__UV_ERRNO_CASES
        return uv_strerror(err);
    default: return "unknown error";
    }
}

const char *ps_err_name(int err)
{
    switch (err) {
    case 0: return "PS_OK";
#define PS__ERR_NAME(name, value, text)                                                            \
    case value: return "PS_" #name;
        PS_ERRNO_MAP(PS__ERR_NAME)
#undef PS__ERR_NAME
        PS__UV_ERRNO_CASES
        return uv_err_name(err);
    default: return "UNKNOWN";
    }
}

const char *ps_version_string(void)
{
    return PS_VERSION_STRING;
}

/* ---- logging --------------------------------------------------------------------------- */

static int log_level = PS_LOG_WARN;
static ps_log_fn log_fn;
static void *log_user;
static char log_tag[64];

void ps__log_set_level(int level)
{
    log_level = level;
}

void ps__log_set_tag(const char *tag)
{
    snprintf(log_tag, sizeof log_tag, "%s%s%s", tag && *tag ? " [" : "", tag ? tag : "",
             tag && *tag ? "]" : "");
}

void ps_set_log_level(ps_log_level level)
{
    ps__log_set_level((int)level);
}

void ps_set_log_fn(ps_log_fn fn, void *user)
{
    log_fn = fn;
    log_user = user;
}

uint64_t ps__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t ps__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *ps_log_level_name(ps_log_level level)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    return names[level < 0 ? 0 : level > 3 ? 3 : level];
}

void ps__log(int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (level < PS_LOG_ERROR)
        level = PS_LOG_ERROR;
    if (level > PS_LOG_DEBUG)
        level = PS_LOG_DEBUG;
    if (log_fn && log_tag[0]) {
        /* A worker's lines say which worker, also to the app's log function. */
        char tagged[1100];
        snprintf(tagged, sizeof tagged, "%s %s", log_tag + 1, line);
        log_fn((ps_log_level)level, tagged, log_user);
    } else if (log_fn) {
        log_fn((ps_log_level)level, line, log_user);
    } else {
        fprintf(stderr, "pulsec%s %s: %s\n", log_tag, ps_log_level_name((ps_log_level)level), line);
    }
}

/* ---- latency histograms --------------------------------------------------------------- */

const double ps__hist_bounds[PS__HIST_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10,
};

void ps__histogram_observe(ps__histogram *h, uint64_t ns)
{
    double s = (double)ns / 1e9;
    size_t i = 0;
    while (i < PS__HIST_BUCKETS && s > ps__hist_bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_ns += ns;
}

/* ---- trusted proxies ------------------------------------------------------------------- */

/* IPv4 addresses are kept as IPv4-mapped IPv6 (::ffff:a.b.c.d), so that a peer seen by a
 * dual-stack listener in that form matches a plain IPv4 entry, and one comparison serves both. */
static bool parse_ip(const char *s, size_t len, uint8_t out[16], bool *v4)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof tmp)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, tmp, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        *v4 = true;
        return true;
    }
    if (inet_pton(AF_INET6, tmp, out) != 1)
        return false;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    *v4 = memcmp(out, mapped, 12) == 0;
    return true;
}

bool ps__cidr_parse(const char *s, ps__cidr *out)
{
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    bool v4;
    if (!parse_ip(s, alen, out->addr, &v4))
        return false;
    unsigned bits = v4 ? 32 : 128;
    if (slash) {
        char *end;
        errno = 0;
        unsigned long n = strtoul(slash + 1, &end, 10);
        if (!slash[1] || *end || errno || n > bits)
            return false;
        bits = (unsigned)n;
    }
    out->bits = (uint8_t)(v4 ? bits + 96 : bits);
    return true;
}

static bool cidr_contains(const ps__cidr *c, const uint8_t addr[16])
{
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, addr, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

bool ps__cidr_match(const ps__cidr *list, size_t n, const char *addr, size_t len)
{
    uint8_t a[16];
    bool v4;
    if (!parse_ip(addr, len, a, &v4))
        return false;
    for (size_t i = 0; i < n; i++)
        if (cidr_contains(&list[i], a))
            return true;
    return false;
}
