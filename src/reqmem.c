/*
 * reqmem: a chained hash table of entries, each also on one of two lists in the order it got
 * there: `running` (by arrival) and `answered` (by answer), so that eviction takes the head of
 * `answered`, else of `running`, in constant time. The id is stored inline after the entry.
 */
#include "reqmem.h"

typedef struct entry {
    struct entry *hnext;
    ps__list link; /* in running or answered */
    uint64_t hash;
    char *answer;
    size_t alen;
    int state;
    size_t idlen;
    char id[]; /* NUL-terminated */
} entry;

struct ps__reqmem {
    entry **buckets;
    size_t nbuckets; /* a power of two, or 0 */
    size_t count;
    size_t bytes; /* entries and answers allocated */
    size_t max_entries;
    size_t max_bytes;
    ps__list running;
    ps__list answered;
};

static uint64_t hash_id(const char *id, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
    return h;
}

ps__reqmem *ps__reqmem_new(size_t max_entries, size_t max_bytes)
{
    ps__reqmem *m = ps__calloc(1, sizeof *m);
    m->max_entries = max_entries;
    m->max_bytes = max_bytes;
    ps__list_init(&m->running);
    ps__list_init(&m->answered);
    return m;
}

static entry **slot(const ps__reqmem *m, const char *id, size_t n, uint64_t h)
{
    if (!m->nbuckets)
        return NULL;
    entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->idlen == n && memcmp((*pp)->id, id, n) == 0))
        pp = &(*pp)->hnext;
    return pp;
}

static void entry_free(ps__reqmem *m, entry *e)
{
    ps__list_remove(&e->link);
    m->bytes -= sizeof *e + e->idlen + 1 + e->alen;
    m->count--;
    ps__free(e->answer);
    ps__free(e);
}

static void unlink_entry(ps__reqmem *m, entry *e)
{
    entry **pp = slot(m, e->id, e->idlen, e->hash);
    *pp = e->hnext;
    entry_free(m, e);
}

void ps__reqmem_free(ps__reqmem *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->hnext;
            ps__free(e->answer);
            ps__free(e);
        }
    }
    ps__free(m->buckets);
    ps__free(m);
}

static void grow(ps__reqmem *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    entry **b = ps__calloc(n, sizeof *b);
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    ps__free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

/* Makes room for `extra` more bytes and one more entry, never evicting `keep`. */
static void evict(ps__reqmem *m, size_t extra, bool one_more, const entry *keep)
{
    for (;;) {
        bool over = (m->max_entries && one_more && m->count + 1 > m->max_entries) ||
                    (m->max_bytes && m->bytes + extra > m->max_bytes);
        if (!over)
            return;
        ps__list *victim = NULL;
        ps__list *lists[2] = {&m->answered, &m->running};
        for (int i = 0; i < 2 && !victim; i++) {
            ps__list *pos;
            ps__list_foreach(pos, lists[i])
            {
                if (PS__CONTAINER_OF(pos, entry, link) != keep) {
                    victim = pos;
                    break;
                }
            }
        }
        if (!victim)
            return;
        unlink_entry(m, PS__CONTAINER_OF(victim, entry, link));
    }
}

int ps__reqmem_begin(ps__reqmem *m, const char *id, const char **answer, size_t *len)
{
    size_t n = strlen(id);
    uint64_t h = hash_id(id, n);
    entry **pp = slot(m, id, n, h);
    if (pp && *pp) {
        entry *e = *pp;
        if (e->state == PS__REQ_ANSWERED) {
            if (answer)
                *answer = e->answer;
            if (len)
                *len = e->alen;
        }
        return e->state;
    }
    size_t size = sizeof(entry) + n + 1;
    evict(m, size, true, NULL);
    if (m->count + 1 > m->nbuckets)
        grow(m);
    entry *e = ps__malloc(size);
    memset(e, 0, sizeof *e);
    e->hash = h;
    e->idlen = n;
    e->state = PS__REQ_RUNNING;
    memcpy(e->id, id, n + 1);
    entry **head = &m->buckets[h & (m->nbuckets - 1)];
    e->hnext = *head;
    *head = e;
    ps__list_insert_tail(&m->running, &e->link);
    m->count++;
    m->bytes += size;
    return PS__REQ_NEW;
}

void ps__reqmem_answer(ps__reqmem *m, const char *id, const char *answer, size_t len)
{
    size_t n = strlen(id);
    entry **pp = slot(m, id, n, hash_id(id, n));
    if (!pp || !*pp || (*pp)->state != PS__REQ_RUNNING)
        return;
    entry *e = *pp;
    e->state = PS__REQ_ANSWERED;
    ps__list_remove(&e->link);
    ps__list_insert_tail(&m->answered, &e->link);
    if (m->max_bytes && sizeof *e + n + 1 + len > m->max_bytes)
        return; /* never fits: remembered as answered, without its bytes */
    evict(m, len, false, e);
    e->answer = ps__malloc(len ? len : 1);
    memcpy(e->answer, answer, len);
    e->alen = len;
    m->bytes += len;
}

void ps__reqmem_forget(ps__reqmem *m, const char *id)
{
    size_t n = strlen(id);
    entry **pp = slot(m, id, n, hash_id(id, n));
    if (pp && *pp)
        unlink_entry(m, *pp);
}

size_t ps__reqmem_count(const ps__reqmem *m)
{
    return m->count;
}

size_t ps__reqmem_bytes(const ps__reqmem *m)
{
    return m->bytes;
}
