/* Minimal harness for the C API tests: checks that count failures instead of
 * stopping, unique queue names, and removal of every queue a test created, at
 * exit and on fatal signals (with unlink(2), which is async-signal-safe).
 * Also what several tests need: the paths and stat(2) of queue objects,
 * checks that a failing call set the thread's last error (EXPECT_*), and
 * watchdogs (scaled for valgrind where asked). Every test program includes
 * it; what one does not use is marked unused, so -Werror builds it. */
#ifndef RB_CHECK_H
#define RB_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ring_buffer.h"

static int rbt_checks;
static int rbt_failures;

#define CHECK(cond)                                                              \
    do {                                                                         \
        rbt_checks++;                                                            \
        if (!(cond)) {                                                           \
            rbt_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_EQ(actual, expected)                                               \
    do {                                                                         \
        long long rbt_a = (long long)(actual), rbt_e = (long long)(expected);    \
        rbt_checks++;                                                            \
        if (rbt_a != rbt_e) {                                                    \
            rbt_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, expected %s == %lld\n", \
                    __FILE__, __LINE__, #actual, rbt_a, #expected, rbt_e);       \
        }                                                                        \
    } while (0)

/* Stops the program (after cleanup) when a precondition of the rest fails. */
#define REQUIRE(cond)                                                            \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* Object paths of the queues this program created, removed at exit. */
#define RBT_MAX_NAMES 512
static char rbt_paths[RBT_MAX_NAMES][96];
static int rbt_path_count;
static pid_t rbt_owner;

static void rbt_unlink_all(void) {
    if (getpid() != rbt_owner) return; /* forked children leave cleanup to the parent */
    for (int i = 0; i < rbt_path_count; i++) unlink(rbt_paths[i]);
}

static void rbt_on_signal(int sig) {
    rbt_unlink_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Call first in main(). */
static void rbt_init(void) {
    rbt_owner = getpid();
    atexit(rbt_unlink_all);
    int sigs[] = {SIGINT, SIGTERM, SIGABRT, SIGALRM, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], rbt_on_signal);
    setvbuf(stdout, NULL, _IONBF, 0);
}

#define SHM_PREFIX "/dev/shm/sage_ringbuf_"

/* The path of the object of queue `name`. */
__attribute__((unused)) static void shm_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, SHM_PREFIX "%s", name);
}

/* Registers the object of a name not made by test_name() (odd bytes,
 * exact lengths) for removal at exit and on fatal signals. */
__attribute__((unused)) static void register_object(const char *name) {
    REQUIRE(rbt_path_count < RBT_MAX_NAMES);
    shm_path(rbt_paths[rbt_path_count++], sizeof rbt_paths[0], name);
}

/* Registers any other path this program may leave behind. */
__attribute__((unused)) static void register_path(const char *path) {
    REQUIRE(rbt_path_count < RBT_MAX_NAMES && strlen(path) < sizeof rbt_paths[0]);
    memcpy(rbt_paths[rbt_path_count++], path, strlen(path) + 1);
}

/* A fresh queue name ("ct_<tag>_<pid>_<n>", at most 63 bytes), registered
 * for removal. The returned string stays valid until exit. */
__attribute__((unused)) static const char *test_name(const char *tag) {
    static char names[RBT_MAX_NAMES][64];
    static int count;
    REQUIRE(count < RBT_MAX_NAMES);
    char *name = names[count++];
    snprintf(name, 64, "ct_%.24s_%d_%d", tag, (int)getpid(), count);
    register_object(name);
    return name;
}

/* A name of exactly `len` bytes (24 <= len < 128; above 63 an invalid one),
 * unique to this process and registered for removal. The returned string
 * stays valid until exit. */
__attribute__((unused)) static const char *sized_name(size_t len) {
    static char names[8][128];
    static int used;
    REQUIRE(used < 8 && len < sizeof names[0] && len >= 24);
    char *n = names[used++];
    int k = snprintf(n, sizeof names[0], "ct_sized_%d_%d_", (int)getpid(), used);
    while ((size_t)k < len) n[k++] = 'x';
    n[len] = 0;
    register_object(n);
    return n;
}

/* lstat(2) of the object of queue `name`: whatever is at its path (a
 * planted link itself, never its target); false if nothing is. */
__attribute__((unused)) static bool object_stat(const char *name, struct stat *st) {
    char path[160];
    shm_path(path, sizeof path, name);
    return lstat(path, st) == 0;
}

__attribute__((unused)) static bool object_exists(const char *name) {
    struct stat st;
    return object_stat(name, &st);
}

/* The object's size in bytes, -1 if there is none. */
__attribute__((unused)) static off_t object_size(const char *name) {
    struct stat st;
    return object_stat(name, &st) ? st.st_size : -1;
}

/* The object's permission bits (07777), -1 if there is none. */
__attribute__((unused)) static int object_mode(const char *name) {
    struct stat st;
    return object_stat(name, &st) ? (int)(st.st_mode & 07777) : -1;
}

/* truncate(2) of the object of queue `name` behind the library's back. */
__attribute__((unused)) static void truncate_object(const char *name, off_t size) {
    char path[160];
    shm_path(path, sizeof path, name);
    REQUIRE(truncate(path, size) == 0);
}

/* Plants a last error different from `code` (RB_ERR_INVALID_ARG for
 * RB_ERR_INVALID_NAME, RB_ERR_INVALID_NAME for anything else), so that a
 * check of ring_buffer_last_error() after the call under test proves that
 * this very call set it (successes never clear it). */
__attribute__((unused)) static void prime_last_error(int code) {
    if (code == RB_ERR_INVALID_NAME) {
        REQUIRE(ring_buffer_open(NULL) == NULL);
        REQUIRE(ring_buffer_last_error() == RB_ERR_INVALID_ARG);
    } else {
        REQUIRE(ring_buffer_open("") == NULL);
        REQUIRE(ring_buffer_last_error() == RB_ERR_INVALID_NAME);
    }
}

/* `stmt` (a call whose failure value is -1, 0, NULL, or nothing) must
 * leave `code` as this thread's last error. */
#define EXPECT_LAST_ERROR(stmt, code)                                            \
    do {                                                                         \
        prime_last_error(code);                                                  \
        stmt;                                                                    \
        CHECK_EQ(ring_buffer_last_error(), (code));                              \
    } while (0)

/* `expr` must return `value` (its failure value) and set `code`. */
#define EXPECT_FAIL(expr, value, code) EXPECT_LAST_ERROR(CHECK_EQ((expr), (value)), code)

/* `expr` (a call returning a status) must return `code` and set it. */
#define EXPECT_CODE(expr, code) EXPECT_FAIL(expr, code, code)

/* `expr` (a handle-returning call) must fail with NULL and `code`. A handle
 * returned by mistake is closed, so that later cases stay independent. */
#define EXPECT_NULL(expr, code)                                                  \
    do {                                                                         \
        prime_last_error(code);                                                  \
        ring_buffer_t *rbt_h = (expr);                                           \
        int rbt_err = ring_buffer_last_error();                                  \
        CHECK(rbt_h == NULL);                                                    \
        CHECK_EQ(rbt_err, (code));                                               \
        if (rbt_h) ring_buffer_close(rbt_h);                                     \
    } while (0)

/* True under valgrind: the Makefile runs it with RB_UNDER_VALGRIND=1 (an
 * empty value or "0" means not). */
__attribute__((unused)) static bool under_valgrind(void) {
    const char *v = getenv("RB_UNDER_VALGRIND");
    return v && *v && strcmp(v, "0") != 0;
}

/* `secs`, or ten times as much under valgrind, which runs everything about
 * 20x slower: for limits on work that slows down with it. */
__attribute__((unused)) static unsigned valgrind_scaled(unsigned secs) {
    return under_valgrind() ? secs * 10 : secs;
}

/* What the program is doing, printed if the watchdog fires. */
__attribute__((unused)) static const char *volatile stage = "start";

/* write(2) of a string to stderr (async-signal-safe). */
__attribute__((unused)) static void say(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

__attribute__((unused)) static void rbt_on_watchdog(int sig) {
    say("WATCHDOG: no progress within the time limit in: ");
    say((const char *)stage);
    say("\n");
    rbt_on_signal(sig);
}

/* A hang must fail the test, not block it: SIGALRM in `secs` seconds names
 * `what` on stderr, then the harness's cleanup ends the program. The limit is
 * taken as given, also under valgrind: pass valgrind_scaled(secs) where it
 * must grow there. */
__attribute__((unused)) static void watchdog(unsigned secs, const char *what) {
    stage = what;
    signal(SIGALRM, rbt_on_watchdog);
    alarm(secs);
}

__attribute__((unused)) static void watchdog_off(void) { alarm(0); }

/* fork(2) for a test child, which gets alarm(alarm_secs) so that it never
 * outlives a dead parent; returns 0 in the child, its pid in the parent. */
__attribute__((unused)) static pid_t fork_child(unsigned alarm_secs) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) alarm(alarm_secs);
    return pid;
}

/* `size` bytes shared with the children this process forks (MAP_SHARED |
 * MAP_ANONYMOUS), zero-filled as every anonymous mapping is; munmap when done. */
__attribute__((unused)) static void *shared_memory(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    return p;
}

/* Waits for a child; returns its exit code, or 128 + signal. */
__attribute__((unused)) static int wait_child(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* CLOCK_MONOTONIC in nanoseconds. */
__attribute__((unused)) static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleeps `ms` milliseconds, through signals. */
__attribute__((unused)) static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A new queue of `size` bytes under a fresh test name (exclusive create). */
__attribute__((unused)) static ring_buffer_t *fresh(const char *tag, uint32_t size) {
    ring_buffer_t *rb = ring_buffer_create_ex(test_name(tag), size, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb != NULL);
    return rb;
}

/* Closes and removes a queue made by fresh(). */
__attribute__((unused)) static void done(ring_buffer_t *rb) {
    char name[MAX_NAME_LEN];
    memcpy(name, rb->name, sizeof name);
    name[MAX_NAME_LEN - 1] = 0;
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* A 32-bit integer hash (lowbias32): the tests derive message lengths and
 * payload bytes from sequence numbers with it, so a consumer can check every
 * byte it receives. */
__attribute__((unused)) static uint32_t rbt_mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* Prints the summary; the value to return from main(). */
static int rbt_finish(const char *program) {
    printf("%s: %d checks, %d failed\n", program, rbt_checks, rbt_failures);
    return rbt_failures ? 1 : 0;
}

#endif
