/*
 * replay: the offset/replay buffer of Socket.IO connection state recovery (DESIGN §6), for one
 * session. Every server EVENT without an ack id gets the session's next offset (1, 2, 3, ...;
 * the client echoes the last one it saw when it reconnects) and its bytes are kept here, with
 * its attachments, until the client is known to have them or the bound in bytes pushes them
 * out. After a reconnect from offset X, every record after X is sent again in order, provided
 * none of them was pushed out.
 *
 * A codec-like module: no I/O, no timers, no libuv. Memory is taken with the first record and
 * given back whenever the buffer empties, so an idle session holds none; in between it is a list
 * of chunks, so that keeping an event never copies those kept before it.
 */
#ifndef PS_REPLAY_H
#define PS_REPLAY_H

#include "common.h"

typedef struct ps__replay_chunk ps__replay_chunk;

typedef struct ps__replay {
    ps__replay_chunk *first; /* records oldest first: [u64 offset][u32 len][u8 binary][bytes] */
    ps__replay_chunk *last;
    size_t held;       /* bytes held by records, headers included */
    size_t allocated;  /* bytes of the chunks */
    size_t chunk_size; /* the next chunk's size: grows while busy, shrinks when emptied */
    size_t max_bytes;  /* bound on the bytes held; 0 = none */
    uint64_t next;     /* the offset the next event gets */
    uint64_t floor;    /* every offset <= floor is gone (confirmed or pushed out) */
    uint8_t next_len;  /* next_text: `next` in decimal, kept to count up without dividing */
    char next_text[21];
} ps__replay;

/* Bytes a record takes beyond its data. */
#define PS__REPLAY_RECORD_OVERHEAD 13
/* Longest offset text: the digits of a uint64_t (the client sees at most 16: 2^53). */
#define PS__REPLAY_OFFSET_MAX 20

void ps__replay_init(ps__replay *r, size_t max_bytes);
void ps__replay_free(ps__replay *r);

/* Takes the offset of a new event (the first is 1). Inline, as the next one: for every event. */
static inline uint64_t ps__replay_take_offset(ps__replay *r)
{
    /* next_text + 1, in place: the last digit in nine cases out of ten. */
    int i = r->next_len - 1;
    while (i >= 0 && r->next_text[i] == '9')
        r->next_text[i--] = '0';
    if (i >= 0) {
        r->next_text[i]++;
    } else {
        memmove(r->next_text + 1, r->next_text, r->next_len);
        r->next_text[0] = '1';
        r->next_len++;
    }
    return r->next++;
}
/* The same, with its decimal text copied to `text` (not terminated); returns its length. Inline:
 * it runs for every event sent. */
static inline size_t ps__replay_take_offset_text(ps__replay *r, char text[PS__REPLAY_OFFSET_MAX])
{
    size_t n = r->next_len;
    for (size_t i = 0; i < n; i++)
        text[i] = r->next_text[i];
    ps__replay_take_offset(r);
    return n;
}
/* The last offset taken; 0 before any. */
uint64_t ps__replay_last_offset(const ps__replay *r);

/* A piece of a record: records may be kept from several buffers without copying them first. */
typedef struct ps__replay_part {
    const void *base;
    size_t len;
} ps__replay_part;

/*
 * Keeps one record of the event `offset` (its text packet, or one of its attachments, in the
 * order they are sent); offsets must not decrease. Records that do not fit under max_bytes
 * push the oldest events out, whole. Returns 0, or 1 when an event not yet confirmed went
 * (possibly this one: a record larger than the bound is not kept, nor are the rest of its
 * event): a reconnect from before it can no longer be replayed (see ps__replay_check).
 */
int ps__replay_push(ps__replay *r, uint64_t offset, bool binary, const void *data, size_t len);
/* The same for a record made of n pieces, kept one after the other. */
int ps__replay_pushv(ps__replay *r, uint64_t offset, bool binary, const ps__replay_part *parts,
                     size_t n);

/* The client has everything through `offset`: those records are dropped. */
void ps__replay_confirm(ps__replay *r, uint64_t offset);

/*
 * Whether a client whose last offset is `after` (0: it saw none) can be given everything it
 * missed: 0; PS_ENOTFOUND when `after` is not an offset this session sent (a later one, from a
 * forged or foreign pid); PS_ELIMIT when an event after it was pushed out or confirmed away.
 */
int ps__replay_check(const ps__replay *r, uint64_t after);

/*
 * Calls fn for every record after offset `after`, oldest first. fn returning non-zero stops
 * the walk and is returned; otherwise 0. fn must not change r.
 */
typedef int (*ps__replay_fn)(void *user, uint64_t offset, bool binary, const char *data,
                             size_t len);
int ps__replay_each(const ps__replay *r, uint64_t after, ps__replay_fn fn, void *user);

/* Bytes allocated now (0 when empty). */
size_t ps__replay_allocated(const ps__replay *r);
/* Bytes held by records now, headers included. */
size_t ps__replay_held(const ps__replay *r);

/* Writes `offset` as the client sees it (decimal digits, NUL-terminated); returns the length. */
size_t ps__replay_format_offset(uint64_t offset, char out[PS__REPLAY_OFFSET_MAX + 1]);
/* Parses an offset sent back by a client: 1 to 16 decimal digits, no sign or leading zero (a
 * lone "0" is refused too: offsets start at 1). Returns false for anything else. */
bool ps__replay_parse_offset(const char *s, size_t len, uint64_t *out);

#endif
