/*
 * common: allocation with an out-of-memory hook, byte buffers, random ids, UTF-8 validation,
 * URL and base64 helpers, error names and logging. Everything here is pure and loop-free so
 * that every other module, and every test, can use it.
 */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

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

void ps__random_sid(char out[PS__SID_LEN + 1])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t raw[PS__SID_LEN];
    ps__random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < PS__SID_LEN; i++)
        out[i] = alphabet[raw[i] & 63];
    out[PS__SID_LEN] = '\0';
}

/* ---- text ------------------------------------------------------------------------------ */

/* RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF. */
bool ps__utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
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

void ps__json_escape(ps__buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    ps__buf_appendc(b, '"');
    const char *run = s;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        ps__buf_append(b, run, (size_t)(p - run));
        if (c == 0)
            break;
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
        ps__buf_append(b, esc, n);
        run = p + 1;
    }
    ps__buf_appendc(b, '"');
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
#define PS__STR2(x) #x
#define PS__STR(x) PS__STR2(x)
    return PS__STR(PS_VERSION_MAJOR) "." PS__STR(PS_VERSION_MINOR) "." PS__STR(PS_VERSION_PATCH);
}

/* ---- logging --------------------------------------------------------------------------- */

static int log_level = PS_LOG_WARN;

void ps__log_set_level(int level)
{
    log_level = level;
}

void ps_set_log_level(ps_log_level level)
{
    ps__log_set_level((int)level);
}

uint64_t ps__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ps__log(int level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (level > log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pulsec %s: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], line);
}
