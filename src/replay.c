/*
 * replay: records are appended to the last chunk (a new one when it is full: a record never
 * spans two) and dropped from the first; a chunk is freed as soon as nothing in it is held, and
 * the list ends when the buffer empties. Chunks start at the size of the first record (an idle
 * session keeps one or two records until a pong) and double while the session is busy, up to
 * CHUNK_MAX; when the buffer empties the next size halves. Offsets of held records are
 * increasing and all greater than `floor`.
 */
#include "replay.h"

#define CHUNK_MIN 256
#define CHUNK_MAX (16 * 1024)

struct ps__replay_chunk {
    ps__replay_chunk *next;
    uint64_t last; /* offset of its last record */
    size_t head;   /* first byte still held */
    size_t len;    /* end of the last record */
    size_t cap;
    char data[];
};

typedef struct record {
    uint64_t offset;
    uint32_t len;
    bool binary;
    const char *data;
} record;

static size_t read_record(const char *p, record *rec)
{
    memcpy(&rec->offset, p, 8);
    memcpy(&rec->len, p + 8, 4);
    rec->binary = p[12] != 0;
    rec->data = p + PS__REPLAY_RECORD_OVERHEAD;
    return PS__REPLAY_RECORD_OVERHEAD + rec->len;
}

void ps__replay_init(ps__replay *r, size_t max_bytes)
{
    memset(r, 0, sizeof *r);
    r->max_bytes = max_bytes;
    r->chunk_size = CHUNK_MIN;
    r->next = 1;
    r->next_text[0] = '1';
    r->next_len = 1;
}

void ps__replay_free(ps__replay *r)
{
    for (ps__replay_chunk *c = r->first, *next; c; c = next) {
        next = c->next;
        ps__free(c);
    }
    r->first = r->last = NULL;
    r->held = r->allocated = 0;
}

uint64_t ps__replay_last_offset(const ps__replay *r)
{
    return r->next - 1;
}

size_t ps__replay_allocated(const ps__replay *r)
{
    return r->allocated;
}

size_t ps__replay_held(const ps__replay *r)
{
    return r->held;
}

/* Frees the first chunk once nothing in it is held; an empty buffer then holds no memory. */
static void release_front(ps__replay *r)
{
    while (r->first && r->first->head == r->first->len) {
        ps__replay_chunk *c = r->first;
        r->first = c->next;
        r->allocated -= sizeof *c + c->cap;
        ps__free(c);
    }
    if (!r->first) {
        r->last = NULL;
        if (r->chunk_size > CHUNK_MIN)
            r->chunk_size /= 2;
    }
}

/* Drops the oldest record. */
static void drop_one(ps__replay *r, record *rec)
{
    ps__replay_chunk *c = r->first;
    size_t n = read_record(c->data + c->head, rec);
    c->head += n;
    r->held -= n;
    release_front(r);
}

/* Drops the oldest event (every record of its offset). */
static void drop_oldest(ps__replay *r)
{
    record rec;
    read_record(r->first->data + r->first->head, &rec);
    uint64_t offset = rec.offset;
    while (r->first) {
        read_record(r->first->data + r->first->head, &rec);
        if (rec.offset != offset)
            break;
        drop_one(r, &rec);
    }
    if (offset > r->floor)
        r->floor = offset;
}

/* Room for `need` bytes at the end of the last chunk (a new chunk if it has not). */
static char *reserve(ps__replay *r, size_t need)
{
    ps__replay_chunk *c = r->last;
    if (c && c->cap - c->len >= need)
        return c->data + c->len;
    size_t cap = r->first ? r->chunk_size : need;
    if (r->first && r->chunk_size < CHUNK_MAX)
        r->chunk_size *= 2;
    if (cap < need)
        cap = need;
    ps__replay_chunk *n = ps__malloc(sizeof *n + cap);
    n->next = NULL;
    n->head = n->len = 0;
    n->cap = cap;
    r->allocated += sizeof *n + cap;
    if (c)
        c->next = n;
    else
        r->first = n;
    r->last = n;
    return n->data;
}

int ps__replay_push(ps__replay *r, uint64_t offset, bool binary, const void *data, size_t len)
{
    ps__replay_part part = {data, len};
    return ps__replay_pushv(r, offset, binary, &part, 1);
}

int ps__replay_pushv(ps__replay *r, uint64_t offset, bool binary, const ps__replay_part *parts,
                     size_t n)
{
    if (offset <= r->floor)
        return 1; /* the rest of an event that was pushed out already */
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += parts[i].len;
    size_t need = PS__REPLAY_RECORD_OVERHEAD + len;
    int lost = 0;
    if (r->max_bytes && (len > UINT32_MAX || need > r->max_bytes)) {
        ps__replay_free(r);
        r->floor = offset;
        return 1;
    }
    while (r->max_bytes && r->held + need > r->max_bytes) {
        drop_oldest(r);
        lost = 1;
    }
    if (offset <= r->floor) /* its own first records went to make room */
        return 1;
    char *p = reserve(r, need);
    uint32_t total = (uint32_t)len;
    uint8_t b = binary;
    memcpy(p, &offset, 8);
    memcpy(p + 8, &total, 4);
    memcpy(p + 12, &b, 1);
    p += PS__REPLAY_RECORD_OVERHEAD;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len)
            memcpy(p, parts[i].base, parts[i].len);
        p += parts[i].len;
    }
    r->last->len += need;
    r->last->last = offset;
    r->held += need;
    return lost;
}

void ps__replay_confirm(ps__replay *r, uint64_t offset)
{
    /* Whole chunks first, without reading their records. */
    while (r->first && r->first->last <= offset) {
        r->held -= r->first->len - r->first->head;
        r->first->head = r->first->len;
        release_front(r);
    }
    record rec;
    while (r->first) {
        read_record(r->first->data + r->first->head, &rec);
        if (rec.offset > offset)
            break;
        drop_one(r, &rec);
    }
    if (offset > r->floor)
        r->floor = offset < r->next ? offset : r->next - 1;
}

int ps__replay_check(const ps__replay *r, uint64_t after)
{
    if (after > ps__replay_last_offset(r))
        return PS_ENOTFOUND;
    if (after < r->floor)
        return PS_ELIMIT;
    return 0;
}

int ps__replay_each(const ps__replay *r, uint64_t after, ps__replay_fn fn, void *user)
{
    record rec;
    for (const ps__replay_chunk *c = r->first; c; c = c->next) {
        for (size_t at = c->head; at < c->len;) {
            at += read_record(c->data + at, &rec);
            if (rec.offset <= after)
                continue;
            int rc = fn(user, rec.offset, rec.binary, rec.data, rec.len);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* Written by hand: it runs for every event sent, and snprintf costs more than the rest. */
size_t ps__replay_format_offset(uint64_t offset, char out[PS__REPLAY_OFFSET_MAX + 1])
{
    char tmp[PS__REPLAY_OFFSET_MAX];
    char *p = tmp + sizeof tmp;
    do {
        *--p = (char)('0' + offset % 10);
        offset /= 10;
    } while (offset);
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

bool ps__replay_parse_offset(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 16 || s[0] == '0')
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}
