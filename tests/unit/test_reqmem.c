/*
 * reqmem: the request-id memory of exactly-once requests, driven directly: new / running /
 * answered, the first answer kept for repeats, both bounds and which entry they push out,
 * forgetting, and a table of thousands of ids.
 */
#include "reqmem.h"
#include "test.h"

TEST_IMPL(reqmem_states)
{
    ps__reqmem *m = ps__reqmem_new(0, 0);
    const char *answer = NULL;
    size_t len = 99;
    ASSERT_EQ(ps__reqmem_begin(m, "r1", &answer, &len), PS__REQ_NEW);
    ASSERT_EQ(ps__reqmem_count(m), 1);
    /* A repeat while the first still runs. */
    ASSERT_EQ(ps__reqmem_begin(m, "r1", &answer, &len), PS__REQ_RUNNING);
    ps__reqmem_answer(m, "r1", PS__STRLIT("{\"n\":1}"));
    ASSERT_EQ(ps__reqmem_begin(m, "r1", &answer, &len), PS__REQ_ANSWERED);
    ASSERT_MEM_EQ(answer, len, "{\"n\":1}", 7);
    /* The first answer wins. */
    ps__reqmem_answer(m, "r1", PS__STRLIT("{\"n\":2}"));
    ASSERT_EQ(ps__reqmem_begin(m, "r1", &answer, &len), PS__REQ_ANSWERED);
    ASSERT_MEM_EQ(answer, len, "{\"n\":1}", 7);
    /* Ids are exact strings; NULL out-pointers are fine; an empty answer is an answer. */
    ASSERT_EQ(ps__reqmem_begin(m, "r10", NULL, NULL), PS__REQ_NEW);
    ASSERT_EQ(ps__reqmem_begin(m, "R1", NULL, NULL), PS__REQ_NEW);
    ps__reqmem_answer(m, "R1", "", 0);
    ASSERT_EQ(ps__reqmem_begin(m, "R1", &answer, &len), PS__REQ_ANSWERED);
    ASSERT_EQ(len, 0);
    ASSERT_EQ(ps__reqmem_count(m), 3);
    /* Answering an unknown id does nothing. */
    ps__reqmem_answer(m, "nope", PS__STRLIT("x"));
    ASSERT_EQ(ps__reqmem_count(m), 3);
    /* Forgetting makes the next sight new again. */
    ps__reqmem_forget(m, "r1");
    ps__reqmem_forget(m, "never seen");
    ASSERT_EQ(ps__reqmem_begin(m, "r1", NULL, NULL), PS__REQ_NEW);
    ps__reqmem_free(m);
    ps__reqmem_free(NULL);
    return 0;
}

TEST_IMPL(reqmem_bounds)
{
    char id[48];
    /* The entry bound pushes out the oldest answered entry first, then the oldest running. */
    ps__reqmem *m = ps__reqmem_new(3, 0);
    ps__reqmem_begin(m, "a", NULL, NULL);
    ps__reqmem_begin(m, "b", NULL, NULL);
    ps__reqmem_begin(m, "c", NULL, NULL);
    ps__reqmem_answer(m, "c", PS__STRLIT("C"));
    ps__reqmem_answer(m, "b", PS__STRLIT("B"));
    ASSERT_EQ(ps__reqmem_begin(m, "d", NULL, NULL), PS__REQ_NEW); /* "c" goes */
    ASSERT_EQ(ps__reqmem_count(m), 3);
    ASSERT_EQ(ps__reqmem_begin(m, "a", NULL, NULL), PS__REQ_RUNNING);
    ASSERT_EQ(ps__reqmem_begin(m, "b", NULL, NULL), PS__REQ_ANSWERED);
    ASSERT_EQ(ps__reqmem_begin(m, "d", NULL, NULL), PS__REQ_RUNNING);
    ASSERT_EQ(ps__reqmem_begin(m, "e", NULL, NULL), PS__REQ_NEW); /* "b" goes */
    ASSERT_EQ(ps__reqmem_begin(m, "f", NULL, NULL), PS__REQ_NEW); /* then "a", running */
    ASSERT_EQ(ps__reqmem_count(m), 3);
    ASSERT_EQ(ps__reqmem_begin(m, "d", NULL, NULL), PS__REQ_RUNNING);
    ps__reqmem_free(m);

    /* The byte bound: answers push out older answered entries; one that never fits is not
     * kept, its entry stays answered (a repeat is not run again). */
    m = ps__reqmem_new(0, 600);
    char answer[100];
    memset(answer, 'y', sizeof answer);
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof id, "id-%d", i);
        ASSERT_EQ(ps__reqmem_begin(m, id, NULL, NULL), PS__REQ_NEW);
        ps__reqmem_answer(m, id, answer, sizeof answer);
        ASSERT_LE(ps__reqmem_bytes(m), 600);
    }
    const char *a = NULL;
    size_t alen = 0;
    ASSERT_EQ(ps__reqmem_begin(m, "id-49", &a, &alen), PS__REQ_ANSWERED);
    ASSERT_MEM_EQ(a, alen, answer, sizeof answer);
    ASSERT_EQ(ps__reqmem_begin(m, "id-0", NULL, NULL), PS__REQ_NEW); /* long gone */
    ASSERT_EQ(ps__reqmem_begin(m, "huge", NULL, NULL), PS__REQ_NEW);
    char huge[1000];
    memset(huge, 'z', sizeof huge);
    ps__reqmem_answer(m, "huge", huge, sizeof huge);
    ASSERT_EQ(ps__reqmem_begin(m, "huge", &a, &alen), PS__REQ_ANSWERED);
    ASSERT_NULL(a);
    ASSERT_EQ(alen, 0);
    ASSERT_LE(ps__reqmem_bytes(m), 600);
    ps__reqmem_free(m);

    /* Many ids: the table grows and every one is found. */
    m = ps__reqmem_new(0, 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "%032x", i * 2654435761u);
        ASSERT_EQ(ps__reqmem_begin(m, id, NULL, NULL), PS__REQ_NEW);
        if (i % 2)
            ps__reqmem_answer(m, id, id, strlen(id));
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "%032x", i * 2654435761u);
        ASSERT_EQ(ps__reqmem_begin(m, id, &a, &alen), i % 2 ? PS__REQ_ANSWERED : PS__REQ_RUNNING);
        if (i % 2)
            ASSERT_MEM_EQ(a, alen, id, strlen(id));
    }
    ASSERT_EQ(ps__reqmem_count(m), 5000);
    ps__reqmem_free(m);
    return 0;
}
