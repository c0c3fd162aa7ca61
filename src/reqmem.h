/*
 * reqmem: the request-id memory of exactly-once requests across a reconnect (DESIGN §6), for
 * one channel. After a recovered reconnect a client sends again the requests it has no answer
 * to, some of which the server has handled or is handling: the memory knows each request id
 * seen, as running (its handler has not answered yet) or answered (with the bytes of the first
 * answer), so that a repeat is answered from memory or, while the first still runs, not at all.
 *
 * Bounded in entries and in answer bytes; when full, the oldest answered entry goes first
 * (then the oldest running one). An answer larger than the byte bound is not kept: its entry
 * stays answered, without bytes, and a repeat then gets no answer (never a second run).
 * A codec-like module: no I/O, no timers.
 */
#ifndef PS_REQMEM_H
#define PS_REQMEM_H

#include "common.h"

typedef struct ps__reqmem ps__reqmem;

enum {
    PS__REQ_NEW = 0,     /* first sight: now recorded as running */
    PS__REQ_RUNNING = 1, /* seen, not answered yet */
    PS__REQ_ANSWERED = 2 /* seen and answered */
};

/* max_entries / max_bytes 0 = no bound. */
ps__reqmem *ps__reqmem_new(size_t max_entries, size_t max_bytes);
void ps__reqmem_free(ps__reqmem *m);

/*
 * Looks `id` up. Unknown: records it as running and returns PS__REQ_NEW. Known: returns its
 * state; for an answered one *answer and *len give the stored answer (NULL, 0 when it was not
 * kept), valid until the next call that changes m. answer and len may be NULL.
 */
int ps__reqmem_begin(ps__reqmem *m, const char *id, const char **answer, size_t *len);

/* Records that `id` was answered with these bytes (copied), if it is still remembered and
 * running; a second answer is ignored (the first one wins). */
void ps__reqmem_answer(ps__reqmem *m, const char *id, const char *answer, size_t len);

/* Forgets `id` (a request refused before it ran, so that a repeat is handled afresh). */
void ps__reqmem_forget(ps__reqmem *m, const char *id);

/* Entries remembered now, and bytes allocated for them (entries and answers). */
size_t ps__reqmem_count(const ps__reqmem *m);
size_t ps__reqmem_bytes(const ps__reqmem *m);

#endif
