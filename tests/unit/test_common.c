/*
 * common: byte buffers, the intrusive list, UTF-8 validation, URL decoding, base64, random ids,
 * error names, and the JSON parser. Pure functions, tested byte for byte with hostile inputs.
 */
#include "common.h"
#include "test.h"

#include <locale.h>
#include <stdlib.h>

#define U8(s) (const uint8_t *)(s), (sizeof(s) - 1)

TEST_IMPL(common_buf)
{
    ps__buf b;
    ps__buf_init(&b);
    ASSERT_NULL(b.base);
    ASSERT_EQ(b.len, 0);
    ASSERT_STR_EQ(ps__buf_cstr(&b), "");
    ASSERT_NOT_NULL(b.base);

    ps__buf_append(&b, "abc", 3);
    ps__buf_appendc(&b, 'd');
    ps__buf_appends(&b, "ef");
    ps__buf_printf(&b, "-%d-%s", 42, "x");
    ASSERT_MEM_EQ(b.base, b.len, "abcdef-42-x", 11);
    ASSERT_EQ(b.base[b.len], '\0');

    /* Embedded NULs are bytes like any other. */
    ps__buf_append(&b, "\0z", 2);
    ASSERT_MEM_EQ(b.base, b.len, "abcdef-42-x\0z", 13);

    ps__buf_consume(&b, 3);
    ASSERT_MEM_EQ(b.base, b.len, "def-42-x\0z", 10);
    ASSERT_EQ(b.base[b.len], '\0');
    ps__buf_consume(&b, 100);
    ASSERT_EQ(b.len, 0);
    ASSERT_STR_EQ(b.base, "");

    /* Growth across many doublings keeps every byte. */
    for (int i = 0; i < 10000; i++)
        ps__buf_appendc(&b, (char)('a' + i % 26));
    ASSERT_EQ(b.len, 10000);
    ASSERT_GE(b.cap, 10001);
    for (int i = 0; i < 10000; i++)
        ASSERT_EQ(b.base[i], 'a' + i % 26);

    /* An empty printf appends nothing. */
    size_t before = b.len;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-zero-length"
    ps__buf_printf(&b, "");
#pragma GCC diagnostic pop
    ASSERT_EQ(b.len, before);

    ps__buf_reset(&b);
    ASSERT_EQ(b.len, 0);
    ASSERT_STR_EQ(b.base, "");
    ps__buf_appends(&b, "kept");
    size_t len = 0;
    char *stolen = ps__buf_steal(&b, &len);
    ASSERT_EQ(len, 4);
    ASSERT_STR_EQ(stolen, "kept");
    ASSERT_NULL(b.base);
    ASSERT_EQ(b.len, 0);
    ps__free(stolen);

    /* Stealing an empty buffer still hands out a valid, empty string. */
    stolen = ps__buf_steal(&b, &len);
    ASSERT_EQ(len, 0);
    ASSERT_STR_EQ(stolen, "");
    ps__free(stolen);

    /* A peer-chosen size that cannot be represented fails instead of wrapping around. */
    ps__buf_appends(&b, "x");
    ASSERT_EQ(ps__buf_tryreserve(&b, SIZE_MAX), -1);
    ASSERT_EQ(ps__buf_tryreserve(&b, SIZE_MAX - 1), -1);
    ASSERT_EQ(ps__buf_tryreserve(&b, SIZE_MAX / 2), -1);
    ASSERT_EQ(ps__buf_tryreserve(&b, 100), 0);
    ASSERT_GE(b.cap, 102);
    ASSERT_STR_EQ(b.base, "x");
    ps__buf_free(&b);
    ASSERT_NULL(b.base);
    ps__buf_free(&b); /* idempotent */

    char *d = ps__strndup("hello", 3);
    ASSERT_STR_EQ(d, "hel");
    ps__free(d);
    ASSERT_NULL(ps__strdup(NULL));
    d = ps__strdup("");
    ASSERT_STR_EQ(d, "");
    ps__free(d);
    ps__free(NULL);
    char *z = ps__calloc(16, 4);
    for (int i = 0; i < 64; i++)
        ASSERT_EQ(z[i], 0);
    z = ps__realloc(z, 128);
    ps__free(z);
    return 0;
}

typedef struct item {
    int v;
    ps__list link;
} item;

TEST_IMPL(common_list)
{
    ps__list head, *pos, *tmp;
    ps__list_init(&head);
    ASSERT(ps__list_empty(&head));
    item items[5];
    for (int i = 0; i < 5; i++) {
        items[i].v = i;
        ps__list_insert_tail(&head, &items[i].link);
    }
    ASSERT(!ps__list_empty(&head));
    int expect = 0;
    ps__list_foreach(pos, &head)
    {
        ASSERT_EQ(PS__CONTAINER_OF(pos, item, link)->v, expect);
        expect++;
    }
    ASSERT_EQ(expect, 5);

    /* Removing while iterating with the safe variant; removal twice is harmless. */
    ps__list_foreach_safe(pos, tmp, &head)
    {
        item *it = PS__CONTAINER_OF(pos, item, link);
        if (it->v % 2 == 0) {
            ps__list_remove(pos);
            ps__list_remove(pos);
        }
    }
    int seen[2], n = 0;
    ps__list_foreach(pos, &head)
    {
        ASSERT_LT(n, 2);
        seen[n++] = PS__CONTAINER_OF(pos, item, link)->v;
    }
    ASSERT_EQ(n, 2);
    ASSERT_EQ(seen[0], 1);
    ASSERT_EQ(seen[1], 3);
    ps__list_remove(&items[1].link);
    ps__list_remove(&items[3].link);
    ASSERT(ps__list_empty(&head));
    ASSERT_EQ(PS__ARRAY_SIZE(items), 5);
    return 0;
}

TEST_IMPL(common_utf8)
{
    /* Valid: ASCII, every sequence length, the boundaries of each length. */
    ASSERT(ps__utf8_valid(U8("")));
    ASSERT(ps__utf8_valid(U8("hello, world")));
    ASSERT(ps__utf8_valid(U8("\x00")));
    ASSERT(ps__utf8_valid(U8("\x7f")));
    ASSERT(ps__utf8_valid(U8("\xc2\x80")));         /* U+0080 */
    ASSERT(ps__utf8_valid(U8("h\xc3\xa9llo")));     /* é */
    ASSERT(ps__utf8_valid(U8("\xdf\xbf")));         /* U+07FF */
    ASSERT(ps__utf8_valid(U8("\xe0\xa0\x80")));     /* U+0800 */
    ASSERT(ps__utf8_valid(U8("\xe2\x82\xac")));     /* € */
    ASSERT(ps__utf8_valid(U8("\xed\x9f\xbf")));     /* U+D7FF, just below the surrogates */
    ASSERT(ps__utf8_valid(U8("\xee\x80\x80")));     /* U+E000, just above them */
    ASSERT(ps__utf8_valid(U8("\xef\xbf\xbf")));     /* U+FFFF */
    ASSERT(ps__utf8_valid(U8("\xf0\x90\x80\x80"))); /* U+10000 */
    ASSERT(ps__utf8_valid(U8("\xf0\x9f\x98\x80"))); /* 😀 */
    ASSERT(ps__utf8_valid(U8("\xf4\x8f\xbf\xbf"))); /* U+10FFFF */
    ASSERT(ps__utf8_valid(U8("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"))); /* κόσμε */

    /* Overlong encodings. */
    ASSERT(!ps__utf8_valid(U8("\xc0\x80")));
    ASSERT(!ps__utf8_valid(U8("\xc0\xaf")));
    ASSERT(!ps__utf8_valid(U8("\xc1\xbf")));
    ASSERT(!ps__utf8_valid(U8("\xe0\x80\xaf")));
    ASSERT(!ps__utf8_valid(U8("\xe0\x9f\xbf")));
    ASSERT(!ps__utf8_valid(U8("\xf0\x80\x80\xaf")));
    ASSERT(!ps__utf8_valid(U8("\xf0\x8f\xbf\xbf")));

    /* UTF-16 surrogates, alone and paired (CESU-8). */
    ASSERT(!ps__utf8_valid(U8("\xed\xa0\x80")));
    ASSERT(!ps__utf8_valid(U8("\xed\xbf\xbf")));
    ASSERT(!ps__utf8_valid(U8("\xed\xa0\xbd\xed\xb8\x80")));

    /* Above U+10FFFF, and lead bytes that can never appear. */
    ASSERT(!ps__utf8_valid(U8("\xf4\x90\x80\x80")));
    ASSERT(!ps__utf8_valid(U8("\xf7\xbf\xbf\xbf")));
    ASSERT(!ps__utf8_valid(U8("\xf8\x88\x80\x80\x80")));
    ASSERT(!ps__utf8_valid(U8("\xfc\x84\x80\x80\x80\x80")));
    ASSERT(!ps__utf8_valid(U8("\xfe")));
    ASSERT(!ps__utf8_valid(U8("\xff")));

    /* Stray continuation bytes and truncated sequences, also at the very end. */
    ASSERT(!ps__utf8_valid(U8("\x80")));
    ASSERT(!ps__utf8_valid(U8("a\xbf")));
    ASSERT(!ps__utf8_valid(U8("\xc3")));
    ASSERT(!ps__utf8_valid(U8("abc\xc3")));
    ASSERT(!ps__utf8_valid(U8("\xe2\x82")));
    ASSERT(!ps__utf8_valid(U8("\xf0\x9f\x98")));
    ASSERT(!ps__utf8_valid(U8("\xc3(")));
    ASSERT(!ps__utf8_valid(U8("\xe2(\xa1")));
    ASSERT(!ps__utf8_valid(U8("\xe2\x82(")));
    ASSERT(!ps__utf8_valid(U8("\xf0\x9f(\x80")));
    ASSERT(!ps__utf8_valid(U8("\xc3\xa9\xc3")));

    /* The length bounds the scan: a valid prefix of a longer buffer, and a sequence cut by len. */
    const uint8_t euro[] = {0xe2, 0x82, 0xac};
    ASSERT(ps__utf8_valid(euro, 3));
    ASSERT(!ps__utf8_valid(euro, 2));
    ASSERT(!ps__utf8_valid(euro, 1));
    ASSERT(ps__utf8_valid(euro, 0));

    /* Every single byte: valid exactly when it is ASCII. */
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        ASSERT_EQ(ps__utf8_valid(&byte, 1), c < 0x80);
    }
    return 0;
}

static long decode(char *buf, const char *in, bool plus)
{
    size_t n = strlen(in);
    memcpy(buf, in, n + 1);
    return ps__url_decode(buf, n, plus);
}

TEST_IMPL(common_url_decode)
{
    char buf[64];
    ASSERT_EQ(decode(buf, "", false), 0);
    ASSERT_EQ(decode(buf, "plain", false), 5);
    ASSERT_STR_EQ(buf, "plain");
    ASSERT_EQ(decode(buf, "a%20b", false), 3);
    ASSERT_STR_EQ(buf, "a b");
    ASSERT_EQ(decode(buf, "%41%62%2f%2F", false), 4);
    ASSERT_STR_EQ(buf, "Ab//");
    ASSERT_EQ(decode(buf, "%e2%82%AC", false), 3);
    ASSERT_STR_EQ(buf, "\xe2\x82\xac");
    ASSERT_EQ(decode(buf, "a+b", false), 3);
    ASSERT_STR_EQ(buf, "a+b");
    ASSERT_EQ(decode(buf, "a+b%2B", true), 4);
    ASSERT_STR_EQ(buf, "a b+");
    /* %00 decodes to a NUL byte that the length accounts for (callers must look for it). */
    ASSERT_EQ(decode(buf, "a%00b", false), 3);
    ASSERT_MEM_EQ(buf, 3, "a\0b", 3);
    /* %25 yields a literal '%' which is not decoded a second time. */
    ASSERT_EQ(decode(buf, "%2541", false), 3);
    ASSERT_STR_EQ(buf, "%41");

    /* Bad and truncated escapes. */
    ASSERT_EQ(decode(buf, "%", false), -1);
    ASSERT_EQ(decode(buf, "abc%", false), -1);
    ASSERT_EQ(decode(buf, "%4", false), -1);
    ASSERT_EQ(decode(buf, "abc%4", true), -1);
    ASSERT_EQ(decode(buf, "%zz", false), -1);
    ASSERT_EQ(decode(buf, "%4g", false), -1);
    ASSERT_EQ(decode(buf, "%g4", false), -1);
    ASSERT_EQ(decode(buf, "%%41", false), -1);
    ASSERT_EQ(decode(buf, "% 1", false), -1);
    ASSERT_EQ(decode(buf, "%-1", false), -1);
    ASSERT_EQ(decode(buf, "%+1", true), -1);

    /* The length, not a NUL, ends the input: an escape cut by len is truncated. */
    strcpy(buf, "%41");
    ASSERT_EQ(ps__url_decode(buf, 2, false), -1);
    strcpy(buf, "ab%41");
    ASSERT_EQ(ps__url_decode(buf, 2, false), 2);
    ASSERT_MEM_EQ(buf, 2, "ab", 2);
    return 0;
}

static void b64(const char *in, const char *expect)
{
    char out[64];
    size_t n = ps__base64_encode((const uint8_t *)in, strlen(in), out);
    ASSERT_EQ(n, strlen(expect));
    ASSERT_STR_EQ(out, expect);
}

TEST_IMPL(common_base64)
{
    /* RFC 4648 §10. */
    b64("", "");
    b64("f", "Zg==");
    b64("fo", "Zm8=");
    b64("foo", "Zm9v");
    b64("foob", "Zm9vYg==");
    b64("fooba", "Zm9vYmE=");
    b64("foobar", "Zm9vYmFy");

    /* Every alphabet position, including '+' and '/' (standard, not URL-safe, alphabet). */
    const uint8_t all[] = {0x00, 0x10, 0x83, 0x10, 0x51, 0x87, 0x20, 0x92, 0x8b, 0x30, 0xd3, 0x8f,
                           0x41, 0x14, 0x93, 0x51, 0x55, 0x97, 0x61, 0x96, 0x9b, 0x71, 0xd7, 0x9f,
                           0x82, 0x18, 0xa3, 0x92, 0x59, 0xa7, 0xa2, 0x9a, 0xab, 0xb2, 0xdb, 0xaf,
                           0xc3, 0x1c, 0xb3, 0xd3, 0x5d, 0xb7, 0xe3, 0x9e, 0xbb, 0xf3, 0xdf, 0xbf};
    char out[128];
    size_t n = ps__base64_encode(all, sizeof all, out);
    ASSERT_EQ(n, 64);
    ASSERT_STR_EQ(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");

    const uint8_t high[] = {0xff, 0xff, 0xff, 0xfb, 0xef};
    n = ps__base64_encode(high, sizeof high, out);
    ASSERT_STR_EQ(out, "////++8=");
    ASSERT_EQ(n, 8);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts n ids and fails if two are equal. */
static void assert_unique(char **ids, size_t n)
{
    qsort(ids, n, sizeof *ids, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            ps_test_fail(__FILE__, __LINE__, "duplicate id %s", ids[i]);
}

TEST_IMPL(common_random_ids)
{
    enum { N = 10000 };
    static char hex[N][PS__HEX_ID_LEN + 1];
    static char sid[N][PS__SID_LEN + 1];
    static char *ptrs[N];
    int hexcount[16] = {0};

    for (int i = 0; i < N; i++) {
        memset(hex[i], 'X', sizeof hex[i]);
        ps__random_hex_id(hex[i]);
        ASSERT_EQ(strlen(hex[i]), PS__HEX_ID_LEN);
        for (int k = 0; k < PS__HEX_ID_LEN; k++) {
            char c = hex[i][k];
            ASSERT((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
            hexcount[c <= '9' ? c - '0' : c - 'a' + 10]++;
        }
        ptrs[i] = hex[i];
    }
    assert_unique(ptrs, N);
    /* 320000 hex digits: each of the 16 expected 20000 times; a broken generator is far off. */
    for (int d = 0; d < 16; d++) {
        ASSERT_GT(hexcount[d], 18000);
        ASSERT_LT(hexcount[d], 22000);
    }

    for (int i = 0; i < N; i++) {
        memset(sid[i], 'X', sizeof sid[i]);
        ps__random_sid(sid[i]);
        ASSERT_EQ(strlen(sid[i]), PS__SID_LEN);
        for (int k = 0; k < PS__SID_LEN; k++) {
            char c = sid[i][k];
            ASSERT((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_');
        }
        ptrs[i] = sid[i];
    }
    assert_unique(ptrs, N);

    /* Raw bytes: a large request is filled completely (not one all-zero tail). */
    uint8_t raw[4096] = {0};
    ps__random_bytes(raw, sizeof raw);
    int zeros = 0;
    for (size_t i = 0; i < sizeof raw; i++)
        zeros += raw[i] == 0;
    ASSERT_LT(zeros, 64);
    ps__random_bytes(raw, 0);
    return 0;
}

TEST_IMPL(common_errors)
{
    ASSERT_STR_EQ(ps_err_name(0), "PS_OK");
    ASSERT_STR_EQ(ps_strerror(0), "success");
    ASSERT_STR_EQ(ps_err_name(PS_ECLOSED), "PS_ECLOSED");
    ASSERT_STR_EQ(ps_err_name(PS_ETIMEDOUT), "PS_ETIMEDOUT");
    ASSERT_STR_EQ(ps_err_name(PS_EREMOTE), "PS_EREMOTE");
    ASSERT_STR_EQ(ps_err_name(PS_EDENIED), "PS_EDENIED");
    ASSERT_STR_EQ(ps_err_name(PS_EINVAL), "PS_EINVAL");
    ASSERT_STR_EQ(ps_err_name(PS_ELIMIT), "PS_ELIMIT");
    ASSERT_STR_EQ(ps_err_name(PS_ENOTFOUND), "PS_ENOTFOUND");
    ASSERT_STR_EQ(ps_err_name(PS_EEXIST), "PS_EEXIST");
    ASSERT_STR_EQ(ps_strerror(PS_ECLOSED), "channel, view or session is closed");
    ASSERT_STR_EQ(ps_strerror(PS_ETIMEDOUT), "request timed out");

    /* Every code of the map: a name with the PS_ prefix, a text, inside pulsec's own range. */
#define CHECK(name, value, text)                                                                   \
    ASSERT_STR_EQ(ps_err_name(value), "PS_" #name);                                                \
    ASSERT_STR_EQ(ps_strerror(value), text);                                                       \
    ASSERT_LE(value, -30000);                                                                      \
    ASSERT_GT(value, -31000);
    PS_ERRNO_MAP(CHECK)
#undef CHECK

    /* libuv codes pass through to libuv's own names and texts. */
    ASSERT_STR_EQ(ps_err_name(UV_EADDRINUSE), "EADDRINUSE");
    ASSERT_STR_EQ(ps_strerror(UV_EADDRINUSE), uv_strerror(UV_EADDRINUSE));
    ASSERT_STR_EQ(ps_err_name(UV_ECANCELED), "ECANCELED");
    ASSERT_STR_EQ(ps_err_name(UV_EOF), "EOF");
    /* Every libuv code: libuv's own name and text. */
#define CHECK_UV(name, text)                                                                       \
    ASSERT_STR_EQ(ps_err_name(UV_##name), #name);                                                  \
    ASSERT_STR_EQ(ps_strerror(UV_##name), text);
    UV_ERRNO_MAP(CHECK_UV)
#undef CHECK_UV
    /* A code nobody defined: static text, never NULL (libuv would allocate a string per call
     * and leak it, which LeakSanitizer reports). */
    ASSERT_STR_EQ(ps_err_name(-29999), "UNKNOWN");
    ASSERT_STR_EQ(ps_strerror(-29999), "unknown error");
    ASSERT_STR_EQ(ps_err_name(12345), "UNKNOWN");
    ASSERT_STR_EQ(ps_strerror(-31000), "unknown error");
    ASSERT(ps_strerror(-29999) == ps_strerror(-29998));
    ASSERT_STR_EQ(ps_version_string(), "0.1.0");
    return 0;
}

TEST_IMPL(common_strcase)
{
    ASSERT(ps__strcaseeq("Upgrade", "upgrade"));
    ASSERT(ps__strcaseeq("", ""));
    ASSERT(!ps__strcaseeq("upgrade", "upgrades"));
    ASSERT(ps__strncaseeq("WebSocket, x", 9, "websocket"));
    ASSERT(!ps__strncaseeq("WebSocket", 8, "websocket"));
    ASSERT(!ps__strncaseeq("WebSockets", 10, "websocket"));
    ASSERT(ps__strncaseeq("", 0, ""));
    return 0;
}

/* The parser of every incoming packet: what jansson's json_loadb accepted, as jansson values
 * (fuzz_json compares the two on arbitrary input; these are the cases worth naming). */
TEST_IMPL(common_json_parse)
{
    static const struct {
        const char *text;
        const char *canonical; /* compact dump of the value, NULL: must be refused */
    } cases[] = {
        {"{\"a\":1,\"b\":[true,false,null],\"c\":\"x\"}",
         "{\"a\":1,\"b\":[true,false,null],\"c\":\"x\"}"},
        {" \t\r\n[ 1 , 2 ]\n ", "[1,2]"},
        {"42", "42"},
        {"\"s\"", "\"s\""},
        {"-0", "0"},
        {"2.5e3", "2500.0"},
        {"{\"k\":1,\"k\":2}", "{\"k\":2}"}, /* the last duplicate wins */
        {"\"\\u00e9\\ud83d\\ude00\\n\"", "\"\xc3\xa9\xf0\x9f\x98\x80\\n\""}, /* escapes decoded */
        {"9223372036854775807", "9223372036854775807"},
        {"9223372036854775808", "9.2233720368547758e18"}, /* beyond int64: a real */
        {"1e-400", "0.0"},                                /* underflow is zero */
        {"", NULL},
        {"   ", NULL},
        {"[1,]", NULL},
        {"{\"a\":1,}", NULL},
        {"01", NULL},
        {"1.", NULL},
        {"-", NULL},
        {"1e400", NULL},       /* overflow */
        {"[1] x", NULL},       /* trailing garbage */
        {"1 \"open", NULL},    /* an unterminated string after the value (yajl misses it) */
        {"\"a\" \"b\"", NULL}, /* two values */
        {"tru", NULL},
        {"// c\n1", NULL}, /* no comments */
        {"\v1", NULL},     /* \v and \f are not JSON white space */
        {"\f1", NULL},
        {"\"\\ud800\"", NULL},          /* a lone high surrogate */
        {"\"\\udc00\"", NULL},          /* a lone low surrogate */
        {"\"\\ud800\\u0041\"", NULL},   /* high followed by something else */
        {"\"\\ud800x\\udc00\"", NULL},  /* the low half not at once */
        {"\"\xc0\x80\"", NULL},         /* overlong UTF-8 */
        {"\"\xed\xa0\x80\"", NULL},     /* an encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", NULL}, /* beyond U+10FFFF */
        {"\"a\x01\"", NULL},            /* a raw control character */
        {"{\"k\\u0000\":1}", NULL},     /* NUL in a key */
    };
    for (size_t i = 0; i < PS__ARRAY_SIZE(cases); i++) {
        json_t *v = ps__json_parse(cases[i].text, strlen(cases[i].text));
        if (!cases[i].canonical) {
            if (v)
                ps_test_fail(__FILE__, __LINE__, "accepted: %s", cases[i].text);
            continue;
        }
        if (!v)
            ps_test_fail(__FILE__, __LINE__, "refused: %s", cases[i].text);
        char *dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        ASSERT_STR_EQ(dump, cases[i].canonical);
        free(dump);
        json_decref(v);
    }

    /* NUL inside a string is kept (length-aware); the string is not cut there. */
    json_t *v = ps__json_parse(PS__STRLIT("\"a\\u0000b\""));
    ASSERT(v);
    ASSERT_EQ(json_string_length(v), 3);
    ASSERT_MEM_EQ(json_string_value(v), 3, "a\0b", 3);
    json_decref(v);

    /* Integers beyond int64 become reals one by one; the others stay integers. */
    v = ps__json_parse(PS__STRLIT("[1,-99999999999999999999]"));
    ASSERT(json_is_integer(json_array_get(v, 0)));
    ASSERT(json_is_real(json_array_get(v, 1)));
    json_decref(v);

    /* Nesting: 2048 levels parse, 2049 do not; and deep input never overflows a stack. */
    for (int depth = 2048; depth <= 100000; depth = depth == 2048 ? 2049 : 100000) {
        ps__buf b;
        ps__buf_init(&b);
        for (int k = 0; k < depth; k++)
            ps__buf_appendc(&b, '[');
        for (int k = 0; k < depth; k++)
            ps__buf_appendc(&b, ']');
        v = ps__json_parse(b.base, b.len);
        ASSERT_EQ(v != NULL, depth == 2048);
        json_decref(v);
        ps__buf_free(&b);
        if (depth == 100000)
            break;
    }

    /* The decimal point is '.' whatever locale the application set. */
    if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        v = ps__json_parse(PS__STRLIT("1.5"));
        ASSERT(v && json_real_value(v) == 1.5);
        json_decref(v);
        setlocale(LC_NUMERIC, "C");
    }
    return 0;
}

TEST_IMPL(common_cidr)
{
    ps__cidr list[4];
    ASSERT(ps__cidr_parse("10.0.0.0/8", &list[0]));
    ASSERT(ps__cidr_parse("192.0.2.7", &list[1]));
    ASSERT(ps__cidr_parse("::1", &list[2]));
    ASSERT(ps__cidr_parse("2001:db8::/32", &list[3]));
#define IN(s) ps__cidr_match(list, 4, s, strlen(s))
    ASSERT(IN("10.1.2.3"));
    ASSERT(IN("10.255.255.255"));
    ASSERT(!IN("11.0.0.1"));
    ASSERT(IN("192.0.2.7"));
    ASSERT(!IN("192.0.2.8"));
    ASSERT(IN("::1"));
    ASSERT(!IN("::2"));
    ASSERT(IN("2001:db8:1::5"));
    ASSERT(!IN("2001:db9::1"));
    /* A dual-stack listener sees IPv4 peers IPv4-mapped: they match IPv4 entries. */
    ASSERT(IN("::ffff:10.9.8.7"));
    ASSERT(IN("::ffff:192.0.2.7"));
    ASSERT(!IN(""));
    ASSERT(!IN("not an address"));
    ASSERT(!IN("10.1.2.3:80"));
    ASSERT(ps__cidr_match(list, 4, "10.1.2.3x", 8)); /* the length bounds the text */
#undef IN
    /* Odd prefixes and rejects. */
    ps__cidr c;
    ASSERT(ps__cidr_parse("0.0.0.0/0", &c));
    ASSERT(ps__cidr_match(&c, 1, "203.0.113.9", 11));
    ASSERT(!ps__cidr_match(&c, 1, "2001:db8::1", 11));
    ASSERT(ps__cidr_parse("172.16.0.0/12", &c));
    ASSERT(ps__cidr_match(&c, 1, "172.31.255.1", 12));
    ASSERT(!ps__cidr_match(&c, 1, "172.32.0.1", 10));
    ASSERT(!ps__cidr_parse("10.0.0.0/33", &c));
    ASSERT(!ps__cidr_parse("::/129", &c));
    ASSERT(!ps__cidr_parse("10.0.0.0/", &c));
    ASSERT(!ps__cidr_parse("10.0.0.0/8x", &c));
    ASSERT(!ps__cidr_parse("10.0.0/8", &c));
    ASSERT(!ps__cidr_parse("localhost", &c));
    ASSERT(!ps__cidr_parse("", &c));
    return 0;
}

static int log_calls;
static ps_log_level log_seen_level;
static char log_seen[128];

static void capture_log(ps_log_level level, const char *message, void *user)
{
    log_calls++;
    log_seen_level = level;
    snprintf(log_seen, sizeof log_seen, "%s|%s", (const char *)user, message);
}

TEST_IMPL(common_log_fn)
{
    ps_set_log_fn(capture_log, "u");
    ps_set_log_level(PS_LOG_INFO);
    PS__WARN("value %d", 42);
    ASSERT_EQ(log_calls, 1);
    ASSERT_EQ(log_seen_level, PS_LOG_WARN);
    ASSERT_STR_EQ(log_seen, "u|value 42");
    PS__DEBUG("below the threshold");
    ASSERT_EQ(log_calls, 1);
    PS__INFO("info");
    ASSERT_EQ(log_calls, 2);
    ASSERT_EQ(log_seen_level, PS_LOG_INFO);
    ASSERT_STR_EQ(ps_log_level_name(PS_LOG_ERROR), "error");
    ASSERT_STR_EQ(ps_log_level_name(PS_LOG_DEBUG), "debug");
    ps_set_log_fn(NULL, NULL);
    ps_set_log_level(PS_LOG_ERROR);
    PS__ERROR("to stderr again");
    ASSERT_EQ(log_calls, 2);
    return 0;
}
