/*
 * test.h: the assertions of pulsec's C test suite (libuv's task.h, pared down). Every test is a
 * function `int run_test_NAME(void)` defined with TEST_IMPL(NAME) and listed in test-list.h;
 * runner.c runs one test per process. A failed assertion prints file:line and both sides, then
 * ends the process with status 1 at once (from any thread): a failing test never limps on into
 * a second, confusing failure, and ctest sees the exit status.
 */
#ifndef PS_TEST_H
#define PS_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define TEST_IMPL(name)                                                                            \
    int run_test_##name(void);                                                                     \
    int run_test_##name(void)

/* Where fixtures (tests/fixtures) live; CMake passes the source path. */
#ifndef PS_TEST_FIXTURES
#define PS_TEST_FIXTURES "tests/fixtures"
#endif

void ps_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/* Prints `len` bytes, escaping what is not printable, for failure messages. */
void ps_test_print_bytes(FILE *f, const void *data, size_t len);
void ps_test_fail_mem(const char *file, int line, const char *what, const void *a, size_t alen,
                      const void *b, size_t blen) __attribute__((noreturn));

#define ASSERT(expr)                                                                               \
    do {                                                                                           \
        if (!(expr))                                                                               \
            ps_test_fail(__FILE__, __LINE__, "assertion failed: %s", #expr);                       \
    } while (0)

/* Integer comparisons: both sides are shown as signed 64-bit values. */
#define PS__ASSERT_INT(a, op, b)                                                                   \
    do {                                                                                           \
        int64_t a_ = (int64_t)(a);                                                                 \
        int64_t b_ = (int64_t)(b);                                                                 \
        if (!(a_ op b_))                                                                           \
            ps_test_fail(__FILE__, __LINE__, "%s %s %s: %" PRId64 " vs %" PRId64, #a, #op, #b, a_, \
                         b_);                                                                      \
    } while (0)

#define ASSERT_EQ(a, b) PS__ASSERT_INT(a, ==, b)
#define ASSERT_NE(a, b) PS__ASSERT_INT(a, !=, b)
#define ASSERT_LT(a, b) PS__ASSERT_INT(a, <, b)
#define ASSERT_LE(a, b) PS__ASSERT_INT(a, <=, b)
#define ASSERT_GT(a, b) PS__ASSERT_INT(a, >, b)
#define ASSERT_GE(a, b) PS__ASSERT_INT(a, >=, b)

#define ASSERT_NULL(p)                                                                             \
    do {                                                                                           \
        const void *p_ = (p);                                                                      \
        if (p_ != NULL)                                                                            \
            ps_test_fail(__FILE__, __LINE__, "%s is not NULL", #p);                                \
    } while (0)

#define ASSERT_NOT_NULL(p)                                                                         \
    do {                                                                                           \
        if ((p) == NULL)                                                                           \
            ps_test_fail(__FILE__, __LINE__, "%s is NULL", #p);                                    \
    } while (0)

/* NUL-terminated strings; NULL on either side fails unless both are NULL. */
#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a);                                                                      \
        const char *b_ = (b);                                                                      \
        if (!(a_ == b_ || (a_ && b_ && strcmp(a_, b_) == 0)))                                      \
            ps_test_fail_mem(__FILE__, __LINE__, #a " == " #b, a_, a_ ? strlen(a_) : 0, b_,        \
                             b_ ? strlen(b_) : 0);                                                 \
    } while (0)

/* Byte ranges of possibly different lengths, compared for exact equality. */
#define ASSERT_MEM_EQ(a, alen, b, blen)                                                            \
    do {                                                                                           \
        const void *a_ = (a);                                                                      \
        const void *b_ = (b);                                                                      \
        size_t al_ = (alen), bl_ = (blen);                                                         \
        if (al_ != bl_ || (al_ > 0 && memcmp(a_, b_, al_) != 0))                                   \
            ps_test_fail_mem(__FILE__, __LINE__, #a " == " #b, a_, al_, b_, bl_);                  \
    } while (0)

/*
 * Ends every test that ran a loop: no handle may still be open (each open one is named, then the
 * test fails), pending close callbacks run, and uv_loop_close() must succeed. A leaked timer or
 * socket therefore fails the test; LeakSanitizer in the asan build catches leaked memory.
 */
void ps_test_assert_loop_clean(uv_loop_t *loop, const char *file, int line);
#define PS_ASSERT_LOOP_CLEAN(loop) ps_test_assert_loop_clean((loop), __FILE__, __LINE__)

#endif
