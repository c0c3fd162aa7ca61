/*
 * fuzz_json: ps__json_parse (yajl building jansson values, the Socket.IO decoder's parser)
 * against jansson's own json_loadb with the flags it replaced (JSON_DECODE_ANY |
 * JSON_ALLOW_NUL, and JSON_DECODE_INT_AS_REAL when an integer is beyond int64).
 *
 * Checks: both accept or both refuse every input (with one exception, the NUL below), and
 * what they accept is the same value: same types, same strings byte for byte, same keys, same
 * numbers (an integer beyond int64 is a real in both; jansson then makes every number of the
 * text a real, so an integer and a real of equal value match).
 *
 * And ps__json_scan, the tree-less scanner of the hot path, against ps__json_parse: it accepts
 * exactly what the parser accepts, and every span it records parses, on its own, to the value
 * the tree holds at that place (for objects: the unescaped key names the member).
 */
#include "harness.h"

static void check_same(const json_t *a, const json_t *b, int depth)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            FZ_CHECK(json_integer_value(a) == json_integer_value(b));
        else
            FZ_CHECK(json_number_value(a) == json_number_value(b));
        return;
    }
    FZ_CHECK(json_typeof(a) == json_typeof(b));
    switch (json_typeof(a)) {
    case JSON_STRING:
        FZ_CHECK(json_string_length(a) == json_string_length(b));
        FZ_CHECK(memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0);
        break;
    case JSON_ARRAY:
        FZ_CHECK(json_array_size(a) == json_array_size(b));
        for (size_t i = 0; i < json_array_size(a); i++)
            check_same(json_array_get(a, i), json_array_get(b, i), depth + 1);
        break;
    case JSON_OBJECT: {
        FZ_CHECK(json_object_size(a) == json_object_size(b));
        const char *key;
        json_t *va;
        json_object_foreach((json_t *)a, key, va)
        {
            json_t *vb = json_object_get(b, key);
            FZ_CHECK(vb != NULL);
            check_same(va, vb, depth + 1);
        }
        break;
    }
    default: break; /* true, false, null: the type says it all */
    }
}

static json_t *span_value(ps__json_span v)
{
    json_t *j = ps__json_parse(v.p, v.len);
    FZ_CHECK(j != NULL);
    return j;
}

/* The spans of container `c` (recorded n of them, at most cap) against its tree. */
static void check_spans(const json_t *c, char type, const ps__json_span *spans, size_t n,
                        size_t cap, uint64_t esc)
{
    FZ_CHECK(type == (json_is_array(c) ? '[' : json_is_object(c) ? '{' : 0));
    if (json_is_array(c)) {
        FZ_CHECK(n == json_array_size(c));
        for (size_t i = 0; i < n && i < cap; i++) {
            json_t *v = span_value(spans[i]);
            check_same(v, json_array_get(c, i), 0);
            json_decref(v);
        }
    } else if (json_is_object(c)) {
        FZ_CHECK(n % 2 == 0 && n / 2 >= json_object_size(c)); /* duplicates count in n */
        if (n > cap)
            return;
        for (size_t i = 0; i < n; i += 2) {
            json_t *k = span_value(spans[i]);
            FZ_CHECK(json_is_string(k));
            /* The last duplicate is the tree's value, and what ps__json_member finds. */
            ps__json_span last =
                ps__json_member(spans, n, esc, json_string_value(k), json_string_length(k));
            FZ_CHECK(last.p != NULL);
            json_t *v = span_value(last);
            check_same(v, json_object_get(c, json_string_value(k)), 0);
            json_decref(v);
            json_decref(k);
        }
    } else {
        FZ_CHECK(n == 0);
    }
}

static void check_scan(const char *s, size_t size, const json_t *tree)
{
    FZ_CHECK((ps__json_scan(s, size, NULL) == 0) == (tree != NULL));
    for (int sub_of = -1; sub_of < 3; sub_of++) {
        ps__json_index ix = {.sub_of = sub_of};
        FZ_CHECK((ps__json_scan(s, size, &ix) == 0) == (tree != NULL));
        if (!tree)
            continue;
        check_spans(tree, ix.root, ix.top, ix.ntop, PS__JSON_INDEX_TOP, ix.top_esc);
        const json_t *child = json_is_array(tree) ? json_array_get(tree, (size_t)sub_of) : NULL;
        if (sub_of >= 0 && child && ix.ntop <= PS__JSON_INDEX_TOP)
            check_spans(child, ix.sub, ix.subs, ix.nsub, PS__JSON_INDEX_SUB, ix.sub_esc);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ps__log_set_level(-1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    json_error_t jerr;
    json_t *ref = json_loadb(s, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!ref && strstr(jerr.text, "too big"))
        ref =
            json_loadb(s, size, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
    json_t *ours = ps__json_parse(s, size);
    if (memchr(s, '\0', size)) {
        /* No JSON text holds a raw NUL. jansson takes one after a top-level number ("1\0") as
         * the end of the text: that one difference is jansson's bug. */
        FZ_CHECK(!ours);
        check_scan(s, size, ours);
        json_decref(ref);
        return 0;
    }
    if (!ref != !ours) {
        fprintf(stderr, "jansson %s (%s), ps__json_parse %s: %.*s\n", ref ? "accepts" : "refuses",
                ref ? "-" : jerr.text, ours ? "accepts" : "refuses", (int)size, s);
        abort();
    }
    if (ref)
        check_same(ours, ref, 0);
    check_scan(s, size, ours);
    json_decref(ref);
    json_decref(ours);
    return 0;
}
