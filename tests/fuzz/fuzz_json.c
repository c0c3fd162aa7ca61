/*
 * fuzz_json: ps__json_parse (yajl building jansson values, the Socket.IO decoder's parser)
 * against jansson's own json_loadb with the flags it replaced (JSON_DECODE_ANY |
 * JSON_ALLOW_NUL, and JSON_DECODE_INT_AS_REAL when an integer is beyond int64).
 *
 * Checks: both accept or both refuse every input (with one exception, the NUL below), and
 * what they accept is the same value: same types, same strings byte for byte, same keys, same
 * numbers (an integer beyond int64 is a real in both; jansson then makes every number of the
 * text a real, so an integer and a real of equal value match).
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
    json_decref(ref);
    json_decref(ours);
    return 0;
}
