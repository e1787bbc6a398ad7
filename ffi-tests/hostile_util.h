/* Helpers shared by the hostile-input, permission and hygiene tests, on top
 * of check.h: the queue layout restated, a healthy "neighbour" queue that
 * must keep working after every hostile case, raw access to queue objects
 * (what a misbehaving or malicious process sharing /dev/shm can do), and
 * forked children with alarms. Include after nothing else: it pulls in
 * check.h. */
#ifndef RB_HOSTILE_UTIL_H
#define RB_HOSTILE_UTIL_H

#include "check.h"

#include <fcntl.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

/* Layout facts from DESIGN.md / layout.rs, restated here on purpose: the
 * tests craft objects by hand and must not take them from the library. */
#define HDR_MAGIC_OFF 0
#define HDR_VERSION_OFF 8
#define HDR_SIZE_OFF 12
#define HDR_HEAD_OFF 16
#define HDR_TAIL_OFF 24
#define HDR_NAME_OFF 88
#define DATA_OFF 200
#define EXT_SIZE 640
/* In the extension block of a version-2 object (which starts at
 * EXT_OFF(buffer_size)): the authoritative tail and head, each alone on its
 * cache line (and a line of padding after each); the header's head/tail
 * there are a mirror. */
#define EXT_OFF(bs) ((200u + (bs) + 63u) & ~63u)
#define EXT_TAIL_OFF 384
#define EXT_HEAD_OFF 512

/* Exact object size of a version-2 queue with this data area. */
static inline uint64_t v2_object_size(uint64_t buffer_size) {
    return ((200 + buffer_size + 63) & ~(uint64_t)63) + EXT_SIZE;
}

/* A healthy queue living next to the hostile ones: after every hostile case
 * one message must still go through it. */
static ring_buffer_t *rbt_neighbour;
static unsigned rbt_neighbour_seq;

static inline void neighbour_open(void) {
    rbt_neighbour = ring_buffer_create_ex(test_name("neighbour"), 4096, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rbt_neighbour != NULL);
}

static inline bool neighbour_roundtrip(void) {
    char msg[48], got[64];
    uint32_t len = 0;
    int n = snprintf(msg, sizeof msg, "neighbour message %u from %d", ++rbt_neighbour_seq,
                     (int)getpid());
    int rc = ring_buffer_put_msg(rbt_neighbour, msg, (uint32_t)n, RB_NO_WAIT);
    if (rc != RB_OK) {
        fprintf(stderr, "  neighbour put_msg: %d (%s)\n", rc, ring_buffer_strerror(rc));
        return false;
    }
    rc = ring_buffer_get_msg(rbt_neighbour, got, sizeof got, &len, RB_NO_WAIT);
    if (rc != RB_OK || len != (uint32_t)n || memcmp(got, msg, (size_t)n) != 0) {
        fprintf(stderr, "  neighbour get_msg: %d (%s), len %u\n", rc, ring_buffer_strerror(rc),
                len);
        return false;
    }
    return ring_buffer_msg_count(rbt_neighbour) == 0;
}

#define NEIGHBOUR_OK(after)                                                        \
    do {                                                                           \
        rbt_checks++;                                                              \
        if (!neighbour_roundtrip()) {                                              \
            rbt_failures++;                                                        \
            fprintf(stderr, "%s:%d: healthy neighbour queue broken after %s\n",    \
                    __FILE__, __LINE__, after);                                    \
        }                                                                          \
    } while (0)

/* A ref naming `name` (shorter than 64 bytes), as any process can make one. */
static inline ring_buffer_ref_t ref_to(const char *name) {
    ring_buffer_ref_t ref;
    memset(&ref, 0, sizeof ref);
    memcpy(ref.name, name, strlen(name));
    return ref;
}

/* Every way of opening the existing `name` must refuse it with `code`:
 * open, open_ex, the open-or-create of create and create_ex, and a ref
 * naming it; an exclusive create fails with RB_ERR_EXISTS instead (the name
 * is taken). Callers add the calls their case answers differently (flags
 * allowing a foreign owner, create's size 0). */
static inline void refuse_opening(const char *name, int code) {
    EXPECT_NULL(ring_buffer_open(name), code);
    EXPECT_NULL(ring_buffer_open_ex(name, 0), code);
    EXPECT_NULL(ring_buffer_create(name, 1024), code);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, 0), code);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE), RB_ERR_EXISTS);
    ring_buffer_ref_t ref = ref_to(name);
    EXPECT_NULL(ring_buffer_from_ref(&ref), code);
}

/* Runs `fn(arg)` in a forked child with an alarm() watchdog; returns the
 * child's exit code (128 + signal if it died). The child leaves with _exit,
 * so the parent's atexit cleanup never runs twice. A child reports its own
 * CHECK failures on stderr and through a non-zero exit code. */
static inline int run_child(int (*fn)(void *), void *arg, unsigned watchdog_s) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int failures_before = rbt_failures; /* inherited from the parent */
        signal(SIGALRM, SIG_DFL);             /* the parent reports a child's hang */
        alarm(watchdog_s);
        int rc = fn(arg);
        _exit(rc ? rc : (rbt_failures > failures_before ? 1 : 0));
    }
    return wait_child(pid);
}

/* Exit code a child uses for "cannot run here, for a reason outside the
 * project" (it prints the reason). */
#define CHILD_SKIP 77

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Maps the whole object of queue `name` read-write, as another process
 * sharing /dev/shm could; returns NULL on failure. */
static inline unsigned char *map_object(const char *name, size_t *size) {
    char path[160];
    shm_path(path, sizeof path, name);
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0)
        p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return NULL;
    *size = (size_t)st.st_size;
    return p;
}

/* pwrite(2) of a little value into the object of queue `name`. */
static inline bool poke(const char *name, off_t off, const void *bytes, size_t n) {
    char path[160];
    shm_path(path, sizeof path, name);
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = pwrite(fd, bytes, n, off) == (ssize_t)n;
    close(fd);
    return ok;
}

static inline bool poke_u32(const char *name, off_t off, uint32_t v) {
    return poke(name, off, &v, sizeof v);
}

static inline bool poke_u64(const char *name, off_t off, uint64_t v) {
    return poke(name, off, &v, sizeof v);
}

#endif
