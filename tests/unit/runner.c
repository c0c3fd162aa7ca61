/*
 * runner: the one binary of the C suite, libuv style.
 *
 *   pulsec_tests            lists every test name, one a line
 *   pulsec_tests NAME       runs that test in this process; exit 0 = pass, 1 = fail
 *   pulsec_tests --all      runs every test, each in a forked child, and prints TAP
 *
 * CMake registers each name as its own ctest test (with a TIMEOUT), so isolation and timeouts
 * come from ctest; --all is for a quick run by hand.
 *
 * The runner deliberately leaves SIGPIPE at its default: a server that writes to a vanished
 * peer without guarding against it must die here as it would in an application.
 */
#include "test.h"

#include <stdarg.h>
#include <sys/wait.h>

#define TEST_DECLARE(name) int run_test_##name(void);
#define TASK_LIST_START                                                                            \
    static const struct test_entry {                                                               \
        const char *name;                                                                          \
        int (*fn)(void);                                                                           \
    } tests[] = {
#define TEST_ENTRY(name) {#name, run_test_##name},
#define TASK_LIST_END                                                                              \
    }                                                                                              \
    ;
#include "test-list.h"

/* ---- failure reporting ----------------------------------------------------------------- */

void ps_test_print_bytes(FILE *f, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (!p) {
        fputs("(null)", f);
        return;
    }
    fputc('"', f);
    size_t shown = len > 512 ? 512 : len;
    for (size_t i = 0; i < shown; i++) {
        if (p[i] == '"' || p[i] == '\\')
            fprintf(f, "\\%c", p[i]);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            fputc(p[i], f);
        else
            fprintf(f, "\\x%02x", p[i]);
    }
    fputc('"', f);
    if (shown < len)
        fprintf(f, "... (%zu bytes)", len);
}

void ps_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    fflush(stdout);
    /* _exit: other threads may still be running, and atexit handlers (LeakSanitizer) would
     * only add noise to a test that failed already. */
    _exit(1);
}

void ps_test_fail_mem(const char *file, int line, const char *what, const void *a, size_t alen,
                      const void *b, size_t blen)
{
    fprintf(stderr, "%s:%d: %s\n  left:  ", file, line, what);
    ps_test_print_bytes(stderr, a, alen);
    fprintf(stderr, " (%zu bytes)\n  right: ", alen);
    ps_test_print_bytes(stderr, b, blen);
    fprintf(stderr, " (%zu bytes)\n", blen);
    fflush(stderr);
    _exit(1);
}

/* ---- loop hygiene ---------------------------------------------------------------------- */

static void count_open(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        return;
    fprintf(stderr, "  leaked handle: %s (%s)\n", uv_handle_type_name(uv_handle_get_type(h)),
            uv_is_active(h) ? "active" : "inactive");
    (*(int *)arg)++;
}

void ps_test_assert_loop_clean(uv_loop_t *loop, const char *file, int line)
{
    int open = 0;
    uv_walk(loop, count_open, &open);
    if (open)
        ps_test_fail(file, line, "%d handle(s) still open on the loop", open);
    /* Handles that are closing still owe their close callbacks. */
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    if (rc != 0)
        ps_test_fail(file, line, "uv_loop_close: %s", uv_err_name(rc));
}

/* ---- main ------------------------------------------------------------------------------ */

static const struct test_entry *find(const char *name)
{
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (strcmp(tests[i].name, name) == 0)
            return &tests[i];
    return NULL;
}

static int run_all(void)
{
    size_t n = sizeof tests / sizeof tests[0], failed = 0;
    printf("1..%zu\n", n);
    for (size_t i = 0; i < n; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0)
            _exit(tests[i].fn() == 0 ? 0 : 1);
        int status = 0;
        waitpid(pid, &status, 0);
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok)
            failed++;
        printf("%s %zu - %s\n", ok ? "ok" : "not ok", i + 1, tests[i].name);
    }
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) {
        for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (strcmp(argv[1], "--all") == 0)
        return run_all();
    const struct test_entry *t = find(argv[1]);
    if (!t) {
        fprintf(stderr, "no test named %s (run without arguments for the list)\n", argv[1]);
        return 2;
    }
    int rc = t->fn();
    if (rc == 0)
        printf("ok %s\n", t->name);
    else
        fprintf(stderr, "not ok %s\n", t->name);
    return rc == 0 ? 0 : 1;
}
