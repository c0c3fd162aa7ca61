/*
 * replay: the offset/replay buffer of connection state recovery, driven directly: offsets,
 * replay after an offset, attachments kept with their event, the bound in bytes pushing whole
 * events out, confirmation, "offset too old" and "not an offset of ours", memory given back
 * when empty, and a long run through a small bound.
 */
#include "replay.h"
#include "test.h"

/* Collects what ps__replay_each gives as "offset:b|t:data;" text. */
static int collect(void *user, uint64_t offset, bool binary, const char *data, size_t len)
{
    ps__buf_printf(user, "%" PRIu64 ":%c:%.*s;", offset, binary ? 'b' : 't', (int)len, data);
    return 0;
}

static const char *replayed(ps__replay *r, uint64_t after, ps__buf *out)
{
    ps__buf_reset(out);
    ASSERT_EQ(ps__replay_each(r, after, collect, out), 0);
    return ps__buf_cstr(out);
}

static uint64_t push_event(ps__replay *r, const char *text)
{
    uint64_t off = ps__replay_take_offset(r);
    ps__replay_push(r, off, false, text, strlen(text));
    return off;
}

static int stop_at_second(void *user, uint64_t offset, bool binary, const char *data, size_t len)
{
    int *n = user;
    return ++*n == 2 ? 7 : 0;
}

TEST_IMPL(replay_offsets)
{
    ps__replay r;
    ps__replay_init(&r, 0);
    ps__buf out;
    ps__buf_init(&out);
    ASSERT_EQ(ps__replay_last_offset(&r), 0);
    ASSERT_EQ(ps__replay_allocated(&r), 0);
    /* Before any event: a client that saw none may resume; nothing to send. */
    ASSERT_EQ(ps__replay_check(&r, 0), 0);
    ASSERT_STR_EQ(replayed(&r, 0, &out), "");
    ASSERT_EQ(ps__replay_check(&r, 1), PS_ENOTFOUND);

    ASSERT_EQ(push_event(&r, "a"), 1);
    uint64_t two = ps__replay_take_offset(&r);
    ASSERT_EQ(two, 2);
    ASSERT_EQ(ps__replay_push(&r, two, false, "b", 1), 0);
    ASSERT_EQ(ps__replay_push(&r, two, true, "\x01\x02", 2), 0); /* its attachment */
    ASSERT_EQ(push_event(&r, "c"), 3);
    ASSERT_EQ(ps__replay_last_offset(&r), 3);
    ASSERT_EQ(ps__replay_held(&r), 4 * PS__REPLAY_RECORD_OVERHEAD + 5);
    ASSERT_GT(ps__replay_allocated(&r), 0);

    ASSERT_STR_EQ(replayed(&r, 0, &out), "1:t:a;2:t:b;2:b:\x01\x02;3:t:c;");
    ASSERT_STR_EQ(replayed(&r, 1, &out), "2:t:b;2:b:\x01\x02;3:t:c;");
    ASSERT_STR_EQ(replayed(&r, 3, &out), "");
    for (uint64_t after = 0; after <= 3; after++)
        ASSERT_EQ(ps__replay_check(&r, after), 0);
    ASSERT_EQ(ps__replay_check(&r, 4), PS_ENOTFOUND); /* never sent: forged */
    ASSERT_EQ(ps__replay_check(&r, UINT64_MAX), PS_ENOTFOUND);

    /* fn's non-zero return stops the walk. */
    int n = 0;
    ASSERT_EQ(ps__replay_each(&r, 0, stop_at_second, &n), 7);
    ASSERT_EQ(n, 2);

    /* Confirmation drops what the client has; older offsets are then too old. */
    ps__replay_confirm(&r, 2);
    ASSERT_STR_EQ(replayed(&r, 0, &out), "3:t:c;");
    ASSERT_EQ(ps__replay_check(&r, 1), PS_ELIMIT);
    ASSERT_EQ(ps__replay_check(&r, 2), 0);
    ASSERT_EQ(ps__replay_check(&r, 3), 0);
    /* Everything confirmed: the memory goes back; offsets go on. */
    ps__replay_confirm(&r, 3);
    ASSERT_EQ(ps__replay_allocated(&r), 0);
    ASSERT_EQ(ps__replay_held(&r), 0);
    ASSERT_EQ(ps__replay_check(&r, 3), 0);
    ASSERT_EQ(ps__replay_check(&r, 2), PS_ELIMIT);
    ASSERT_EQ(push_event(&r, "d"), 4);
    ASSERT_STR_EQ(replayed(&r, 3, &out), "4:t:d;");
    /* Confirming past what was sent never lets a future offset pass. */
    ps__replay_confirm(&r, 100);
    ASSERT_EQ(ps__replay_check(&r, 4), 0);
    ASSERT_EQ(ps__replay_check(&r, 5), PS_ENOTFOUND);

    ps__replay_free(&r);
    ps__buf_free(&out);
    return 0;
}

TEST_IMPL(replay_bound)
{
    const size_t rec = PS__REPLAY_RECORD_OVERHEAD + 10;
    ps__replay r;
    ps__replay_init(&r, 3 * rec);
    ps__buf out;
    ps__buf_init(&out);
    ASSERT_EQ(push_event(&r, "0123456789"), 1);
    ASSERT_EQ(push_event(&r, "abcdefghij"), 2);
    uint64_t three = ps__replay_take_offset(&r);
    ASSERT_EQ(ps__replay_push(&r, three, false, "ABCDEFGHIJ", 10), 0);
    ASSERT_EQ(ps__replay_held(&r), 3 * rec);
    /* A fourth record: the oldest event goes, and the push says so. */
    uint64_t four = ps__replay_take_offset(&r);
    ASSERT_EQ(ps__replay_push(&r, four, false, "klmnopqrst", 10), 1);
    ASSERT_LE(ps__replay_held(&r), 3 * rec);
    ASSERT_EQ(ps__replay_check(&r, 0), PS_ELIMIT); /* offset too old */
    ASSERT_EQ(ps__replay_check(&r, 1), 0);
    ASSERT_STR_EQ(replayed(&r, 1, &out), "2:t:abcdefghij;3:t:ABCDEFGHIJ;4:t:klmnopqrst;");

    /* An event with an attachment: each record makes room by pushing out the oldest event. */
    uint64_t five = ps__replay_take_offset(&r);
    ASSERT_EQ(ps__replay_push(&r, five, false, "hdr", 3), 1);
    ASSERT_EQ(ps__replay_push(&r, five, true, "bin", 3), 1);
    ASSERT_STR_EQ(replayed(&r, 0, &out), "4:t:klmnopqrst;5:t:hdr;5:b:bin;");
    /* ...and an event goes whole, with its attachments. */
    uint64_t six = ps__replay_take_offset(&r);
    ASSERT_EQ(ps__replay_push(&r, six, false, "0123456789", 10), 1);
    ASSERT_STR_EQ(replayed(&r, 0, &out), "5:t:hdr;5:b:bin;6:t:0123456789;");
    uint64_t seven0 = ps__replay_take_offset(&r);
    ASSERT_EQ(ps__replay_push(&r, seven0, false, "0123456789", 10), 1);
    ASSERT_STR_EQ(replayed(&r, 0, &out), "6:t:0123456789;7:t:0123456789;");
    ASSERT_EQ(ps__replay_check(&r, 5), 0);
    ASSERT_EQ(ps__replay_check(&r, 4), PS_ELIMIT);

    /* A record larger than the bound is not kept; neither is the rest of its event, and
     * everything before it is unreachable. */
    uint64_t seven = ps__replay_take_offset(&r);
    char big[200];
    memset(big, 'x', sizeof big);
    ASSERT_EQ(ps__replay_push(&r, seven, false, big, sizeof big), 1);
    ASSERT_EQ(ps__replay_push(&r, seven, true, "b", 1), 1);
    ASSERT_EQ(ps__replay_held(&r), 0);
    ASSERT_EQ(ps__replay_allocated(&r), 0);
    ASSERT_EQ(ps__replay_check(&r, 7), PS_ELIMIT);
    ASSERT_EQ(ps__replay_check(&r, 8), 0);
    uint64_t eight = push_event(&r, "ok");
    ASSERT_STR_EQ(replayed(&r, 8, &out), "9:t:ok;");
    ASSERT_EQ(eight, 9);

    /* The first records of an event fit, its last attachment pushes the event itself out. */
    ps__replay_confirm(&r, 9);
    uint64_t ten = ps__replay_take_offset(&r);
    ASSERT_EQ(ps__replay_push(&r, ten, false, "0123456789", 10), 0);
    ASSERT_EQ(ps__replay_push(&r, ten, true, "0123456789", 10), 0);
    ASSERT_EQ(ps__replay_push(&r, ten, true, "0123456789", 10), 0);
    ASSERT_EQ(ps__replay_push(&r, ten, true, "0123456789", 10), 1);
    ASSERT_EQ(ps__replay_held(&r), 0);
    ASSERT_EQ(ps__replay_check(&r, 9), PS_ELIMIT);
    ASSERT_EQ(ps__replay_check(&r, 10), 0);

    ps__replay_free(&r);
    ps__buf_free(&out);
    return 0;
}

TEST_IMPL(replay_long_run)
{
    /* Many events through a small bound, confirmed in steps: the held bytes stay bounded, what
     * is held is always the newest events, and nothing is corrupted by the moves. */
    ps__replay r;
    ps__replay_init(&r, 4096);
    ps__buf out;
    ps__buf_init(&out);
    char text[64];
    for (int i = 1; i <= 20000; i++) {
        int n = snprintf(text, sizeof text, "event-%d-%.*s", i, i % 40,
                         "0123456789012345678901234567890123456789");
        uint64_t off = ps__replay_take_offset(&r);
        ASSERT_EQ(off, (uint64_t)i);
        ps__replay_push(&r, off, false, text, (size_t)n);
        ASSERT_LE(ps__replay_held(&r), 4096);
        if (i % 97 == 0)
            ps__replay_confirm(&r, off - 3);
    }
    uint64_t last = ps__replay_last_offset(&r);
    ASSERT_EQ(ps__replay_check(&r, last - 5), 0);
    replayed(&r, last - 2, &out);
    char want[256];
    snprintf(want, sizeof want, "19999:t:event-19999-%.*s;20000:t:event-20000-%.*s;", 19999 % 40,
             "0123456789012345678901234567890123456789", 20000 % 40,
             "0123456789012345678901234567890123456789");
    ASSERT_STR_EQ(strstr(ps__buf_cstr(&out), "19999:"), want);
    ps__replay_free(&r);
    ps__buf_free(&out);
    return 0;
}

TEST_IMPL(replay_offset_text)
{
    char buf[PS__REPLAY_OFFSET_MAX + 1];
    ASSERT_EQ(ps__replay_format_offset(1, buf), 1);
    ASSERT_STR_EQ(buf, "1");
    ASSERT_EQ(ps__replay_format_offset(9007199254740991ull, buf), 16);
    ASSERT_STR_EQ(buf, "9007199254740991");
    ASSERT_EQ(ps__replay_format_offset(UINT64_MAX, buf), 20);
    ASSERT_STR_EQ(buf, "18446744073709551615");
    ps__replay_format_offset(1234567890, buf);
    ASSERT_STR_EQ(buf, "1234567890");

    /* Offsets taken with their text count up in decimal, carries included. */
    ps__replay r;
    ps__replay_init(&r, 0);
    char want[32];
    for (uint64_t i = 1; i <= 100001; i++) {
        ASSERT_EQ(r.next, i);
        size_t n = ps__replay_take_offset_text(&r, buf);
        int wn = snprintf(want, sizeof want, "%" PRIu64, i);
        ASSERT_MEM_EQ(buf, n, want, (size_t)wn);
    }
    ASSERT_EQ(ps__replay_take_offset(&r), 100002); /* the plain take counts too */
    size_t n = ps__replay_take_offset_text(&r, buf);
    ASSERT_MEM_EQ(buf, n, "100003", 6);
    ps__replay_free(&r);

    uint64_t v = 0;
    ASSERT(ps__replay_parse_offset(PS__STRLIT("17"), &v));
    ASSERT_EQ(v, 17);
    ASSERT(ps__replay_parse_offset(PS__STRLIT("9007199254740991"), &v));
    ASSERT_EQ(v, 9007199254740991ull);
    const char *bad[] = {
        "", "0", "01", "-1", "+1", "1.5", "1e3", " 1", "1 ", "abc", "12345678901234567", "0x10"};
    for (size_t i = 0; i < PS__ARRAY_SIZE(bad); i++)
        ASSERT(!ps__replay_parse_offset(bad[i], strlen(bad[i]), &v));
    ASSERT(!ps__replay_parse_offset("1\0002", 3, &v));
    return 0;
}
