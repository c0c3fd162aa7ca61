/*
 * replay: records appended at `len`, dropped from `head`. Dropping moves `head` only; the held
 * bytes move back to the start of the allocation once the dropped part is at least as large
 * as what is held (so each byte is moved at most once per time it is held), and the
 * allocation is freed as soon as nothing is held. Offsets of held records are increasing and
 * all greater than `floor`.
 */
#include "replay.h"

typedef struct record {
    uint64_t offset;
    uint32_t len;
    bool binary;
    const char *data;
} record;

static void read_record(const ps__replay *r, size_t at, record *rec)
{
    const char *p = r->base + at;
    memcpy(&rec->offset, p, 8);
    memcpy(&rec->len, p + 8, 4);
    rec->binary = p[12] != 0;
    rec->data = p + PS__REPLAY_RECORD_OVERHEAD;
}

void ps__replay_init(ps__replay *r, size_t max_bytes)
{
    memset(r, 0, sizeof *r);
    r->max_bytes = max_bytes;
    r->next = 1;
}

void ps__replay_free(ps__replay *r)
{
    ps__free(r->base);
    r->base = NULL;
    r->head = r->len = r->cap = 0;
}

uint64_t ps__replay_take_offset(ps__replay *r)
{
    return r->next++;
}

uint64_t ps__replay_last_offset(const ps__replay *r)
{
    return r->next - 1;
}

size_t ps__replay_allocated(const ps__replay *r)
{
    return r->cap;
}

size_t ps__replay_held(const ps__replay *r)
{
    return r->len - r->head;
}

/* After records were dropped from the front. */
static void settle(ps__replay *r)
{
    if (r->head == r->len) {
        ps__replay_free(r);
    } else if (r->head >= r->len - r->head) {
        memmove(r->base, r->base + r->head, r->len - r->head);
        r->len -= r->head;
        r->head = 0;
    }
}

/* Drops the oldest event (every record of its offset). */
static void drop_oldest(ps__replay *r)
{
    record rec;
    read_record(r, r->head, &rec);
    uint64_t offset = rec.offset;
    while (r->head < r->len) {
        read_record(r, r->head, &rec);
        if (rec.offset != offset)
            break;
        r->head += PS__REPLAY_RECORD_OVERHEAD + rec.len;
    }
    if (offset > r->floor)
        r->floor = offset;
}

int ps__replay_push(ps__replay *r, uint64_t offset, bool binary, const void *data, size_t len)
{
    if (offset <= r->floor)
        return 1; /* the rest of an event that was pushed out already */
    size_t need = PS__REPLAY_RECORD_OVERHEAD + len;
    int lost = 0;
    if (r->max_bytes && (len > UINT32_MAX || need > r->max_bytes)) {
        r->head = r->len;
        r->floor = offset;
        settle(r);
        return 1;
    }
    while (r->max_bytes && ps__replay_held(r) + need > r->max_bytes) {
        drop_oldest(r);
        lost = 1;
    }
    if (offset <= r->floor) { /* its own first records went to make room */
        settle(r);
        return 1;
    }
    if (lost)
        settle(r);
    if (r->len + need > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + need)
            cap *= 2;
        r->base = ps__realloc(r->base, cap);
        r->cap = cap;
    }
    char *p = r->base + r->len;
    uint32_t n = (uint32_t)len;
    uint8_t b = binary;
    memcpy(p, &offset, 8);
    memcpy(p + 8, &n, 4);
    memcpy(p + 12, &b, 1);
    if (len)
        memcpy(p + PS__REPLAY_RECORD_OVERHEAD, data, len);
    r->len += need;
    return lost;
}

void ps__replay_confirm(ps__replay *r, uint64_t offset)
{
    record rec;
    while (r->head < r->len) {
        read_record(r, r->head, &rec);
        if (rec.offset > offset)
            break;
        r->head += PS__REPLAY_RECORD_OVERHEAD + rec.len;
    }
    if (offset > r->floor)
        r->floor = offset < r->next ? offset : r->next - 1;
    settle(r);
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
    for (size_t at = r->head; at < r->len; at += PS__REPLAY_RECORD_OVERHEAD + rec.len) {
        read_record(r, at, &rec);
        if (rec.offset <= after)
            continue;
        int rc = fn(user, rec.offset, rec.binary, rec.data, rec.len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Written by hand: it runs for every event sent, and snprintf costs more than the rest. */
size_t ps__replay_format_offset(uint64_t offset, char out[PS__REPLAY_OFFSET_MAX + 1])
{
    char tmp[PS__REPLAY_OFFSET_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + offset % 10);
        offset /= 10;
    } while (offset);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
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
