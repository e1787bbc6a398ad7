/* Hostile names and sizes: every invalid name or size is refused with the
 * exact status code (NULL + ring_buffer_last_error() for the calls that
 * return handles), nothing is left in /dev/shm, odd but valid names work the
 * same way through every call, extreme sizes (2 GiB, overflowing 32 bits)
 * are handled, and a full tmpfs is reported as RB_ERR_NO_SPACE at create
 * time instead of a SIGBUS later. After each case a healthy neighbour queue
 * must still carry a message. */
#include "hostile_util.h"

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

/* Every call that takes a name must refuse `name` with `code`, and create
 * nothing. */
static void refuse_name(const char *name, int code, const char *what) {
    int failures = rbt_failures;
    EXPECT_NULL(ring_buffer_create(name, 1024), code);
    EXPECT_NULL(ring_buffer_create(name, 0), code);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, 0), code);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE), code);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0600, RB_OPEN_ALLOW_FOREIGN_OWNER), code);
    EXPECT_NULL(ring_buffer_open(name), code);
    EXPECT_NULL(ring_buffer_open_ex(name, 0), code);
    EXPECT_NULL(ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER), code);
    EXPECT_LAST_ERROR(ring_buffer_destroy(name), code);
    EXPECT_CODE(ring_buffer_remove_if_unused(name), code);
    /* A ref naming it is refused the same way. */
    if (name && strnlen(name, MAX_NAME_LEN) < MAX_NAME_LEN) {
        ring_buffer_ref_t ref = ref_to(name);
        EXPECT_NULL(ring_buffer_from_ref(&ref), code);
    }
    if (rbt_failures != failures) fprintf(stderr, "  ^ while refusing the name %s\n", what);
    NEIGHBOUR_OK(what);
}

static void test_invalid_names(void) {
    char long64[65], long200[201], path[300];
    memset(long64, 'x', 64);
    long64[64] = 0;
    memset(long200, 'y', 200);
    long200[200] = 0;

    refuse_name(NULL, RB_ERR_INVALID_ARG, "NULL");
    refuse_name("", RB_ERR_INVALID_NAME, "\"\" (empty)");
    refuse_name(long64, RB_ERR_INVALID_NAME, "64 bytes");
    refuse_name(long200, RB_ERR_INVALID_NAME, "200 bytes");
    /* 63 of those bytes would be a valid name: nothing may be created under
     * a silently truncated name either. */
    long64[63] = 0;
    CHECK(!object_exists(long64));
    long200[63] = 0;
    CHECK(!object_exists(long200));

    /* Exactly 64 readable bytes and no NUL: the library may read those 64
     * and no further (ASan/valgrind catch a strlen past the block). */
    char *unterminated = malloc(64);
    REQUIRE(unterminated);
    memset(unterminated, 'z', 64);
    refuse_name(unterminated, RB_ERR_INVALID_NAME, "64 bytes without NUL");
    free(unterminated);

    const char *slashes[] = {"a/b", "/", "/etc/passwd", "ct_dir/", "x/../../tmp/evil"};
    for (size_t i = 0; i < sizeof slashes / sizeof *slashes; i++)
        refuse_name(slashes[i], RB_ERR_INVALID_NAME, slashes[i]);
    const char *dots[] = {"..", "...", "a..b", "..hidden", "trailing..", "../x", "../../../tmp/x"};
    for (size_t i = 0; i < sizeof dots / sizeof *dots; i++)
        refuse_name(dots[i], RB_ERR_INVALID_NAME, dots[i]);
    const char *controls[] = {"a\nb", "\x01", "tab\there", "\x1b[31mred", "cr\r", "del\x7f"};
    for (size_t i = 0; i < sizeof controls / sizeof *controls; i++)
        refuse_name(controls[i], RB_ERR_INVALID_NAME, "a name with a control character");

    /* A path escape must not remove anything outside /dev/shm. */
    snprintf(path, sizeof path, "/tmp/ct_victim_%d", (int)getpid());
    register_path(path);
    int fd = open(path, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    char escape[128];
    snprintf(escape, sizeof escape, "../../../tmp/ct_victim_%d", (int)getpid());
    EXPECT_LAST_ERROR(ring_buffer_destroy(escape), RB_ERR_INVALID_NAME);
    CHECK_EQ(ring_buffer_remove_if_unused(escape), RB_ERR_INVALID_NAME);
    CHECK(access(path, F_OK) == 0);
    unlink(path);
}

/* A valid but unusual name must behave exactly like an ordinary one through
 * create, open, refs, remove_if_unused and destroy. */
static void valid_name_cycle(const char *name, const char *what) {
    int failures = rbt_failures;
    struct stat st;
    register_object(name);
    size_t n = strlen(name);

    ring_buffer_t *a = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    CHECK(a != NULL);
    if (!a) {
        fprintf(stderr, "  create_ex(%s): %s\n", what,
                ring_buffer_strerror(ring_buffer_last_error()));
        return;
    }
    CHECK_EQ(memcmp(a->name, name, n + 1), 0); /* the header keeps the exact bytes */
    CHECK_EQ(a->buffer_size, 1024);
    CHECK(object_stat(name, &st) && S_ISREG(st.st_mode)); /* exactly that file name */
    CHECK_EQ(st.st_size, v2_object_size(1024));
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE), RB_ERR_EXISTS);

    ring_buffer_t *b = ring_buffer_open(name);
    CHECK(b != NULL);
    ring_buffer_t *c = ring_buffer_create(name, 4096); /* legacy: opens, size ignored */
    CHECK(c != NULL);
    if (c) CHECK_EQ(c->buffer_size, 1024);
    if (b) {
        uint32_t len = 0;
        char buf[16];
        CHECK_EQ(ring_buffer_put_msg(a, "odd", 3, 0), RB_OK);
        CHECK_EQ(ring_buffer_get_msg(b, buf, sizeof buf, &len, 0), RB_OK);
        CHECK(len == 3 && memcmp(buf, "odd", 3) == 0);
    }
    ring_buffer_ref_t *ref = ring_buffer_get_ref(a);
    CHECK(ref != NULL);
    if (ref) {
        CHECK_EQ(memcmp(ref->name, name, n + 1), 0);
        ring_buffer_t *r = ring_buffer_from_ref(ref);
        CHECK(r != NULL);
        if (r) ring_buffer_close(r);
        ring_buffer_release_ref(ref);
    }

    CHECK_EQ(ring_buffer_remove_if_unused(name), 0); /* in use by us */
    CHECK(object_exists(name));
    ring_buffer_close(a);
    if (b) ring_buffer_close(b);
    if (c) ring_buffer_close(c);
    CHECK_EQ(ring_buffer_remove_if_unused(name), 1);
    CHECK(!object_exists(name));
    CHECK_EQ(ring_buffer_remove_if_unused(name), RB_ERR_NOT_FOUND);
    EXPECT_NULL(ring_buffer_open(name), RB_ERR_NOT_FOUND);

    a = ring_buffer_create(name, 0);
    CHECK(a != NULL);
    CHECK(object_exists(name));
    ring_buffer_destroy(name);
    CHECK(!object_exists(name));
    if (a) {
        uint32_t len = 0;
        char buf[16];
        CHECK_EQ(ring_buffer_put_msg(a, "after", 5, 0), RB_OK); /* mapped handles keep working */
        CHECK_EQ(ring_buffer_get_msg(a, buf, sizeof buf, &len, 0), RB_OK);
        CHECK_EQ(len, 5);
        ring_buffer_close(a);
    }
    EXPECT_LAST_ERROR(ring_buffer_destroy(name), RB_ERR_NOT_FOUND);
    if (rbt_failures != failures) fprintf(stderr, "  ^ with the valid name %s\n", what);
    NEIGHBOUR_OK(what);
}

static void test_valid_odd_names(void) {
    char name[64];
    int pid = (int)getpid();

    /* Longest valid name: 63 bytes. */
    int n = snprintf(name, sizeof name, "ct_n63_%d_", pid);
    memset(name + n, 'q', (size_t)(63 - n));
    name[63] = 0;
    CHECK_EQ(strlen(name), 63);
    valid_name_cycle(name, "63 bytes");

    struct {
        const char *fmt, *what;
    } odd[] = {
        {"ct_\xff\xfe_%d", "non-UTF-8 bytes ff fe"},
        {"ct_\xc0\x80_%d", "overlong NUL encoding c0 80"},
        {"ct_\x80\xbf\xf8_%d", "stray continuation bytes"},
        {"ct_\xc3\xa9t\xc3\xa9_%d", "UTF-8 \"ete\" with accents"},
        {"ct single.dots %d", "spaces and single dots"},
        {"ct_*?[]~$`'\"_%d", "shell metacharacters"},
        {"-ct_dash_%d", "leading dash"},
    };
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        snprintf(name, sizeof name, odd[i].fmt, pid);
        valid_name_cycle(name, odd[i].what);
    }
}

static void check_object_size(const char *name, uint32_t buffer_size) {
    off_t size = object_size(name);
    CHECK(size >= 0);
    CHECK_EQ(size, v2_object_size(buffer_size));
}

/* `size` must be refused by both create calls, leaving nothing behind. */
static void refuse_size(uint32_t size) {
    const char *name = test_name("badsize");
    int failures = rbt_failures;
    EXPECT_NULL(ring_buffer_create(name, size), RB_ERR_INVALID_ARG);
    EXPECT_NULL(ring_buffer_create_ex(name, size, 0, 0), RB_ERR_INVALID_ARG);
    EXPECT_NULL(ring_buffer_create_ex(name, size, 0, RB_CREATE_EXCLUSIVE), RB_ERR_INVALID_ARG);
    CHECK(!object_exists(name));
    if (rbt_failures != failures) fprintf(stderr, "  ^ with size %u (%#x)\n", size, size);
    NEIGHBOUR_OK("an invalid size");
}

static void expect_rounded(ring_buffer_t *rb, const char *name, uint32_t expected) {
    CHECK(rb != NULL);
    if (!rb) {
        fprintf(stderr, "  create %s: %s\n", name, ring_buffer_strerror(ring_buffer_last_error()));
        return;
    }
    CHECK_EQ(rb->buffer_size, expected);
    check_object_size(name, expected);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

static void test_small_and_overflowing_sizes(void) {
    const char *n;
    /* Legacy create: 0 means the 1024-byte minimum. */
    n = test_name("size0");
    expect_rounded(ring_buffer_create(n, 0), n, 1024);
    n = test_name("size1");
    expect_rounded(ring_buffer_create(n, 1), n, 1024);
    n = test_name("size2");
    expect_rounded(ring_buffer_create(n, 2), n, 1024);
    n = test_name("size1025");
    expect_rounded(ring_buffer_create(n, 1025), n, 2048);
    /* create_ex: 0 is an error, 1 rounds up. */
    n = test_name("ex0");
    EXPECT_NULL(ring_buffer_create_ex(n, 0, 0, RB_CREATE_EXCLUSIVE), RB_ERR_INVALID_ARG);
    EXPECT_NULL(ring_buffer_create_ex(n, 0, 0, 0), RB_ERR_INVALID_ARG);
    CHECK(!object_exists(n));
    n = test_name("ex1");
    expect_rounded(ring_buffer_create_ex(n, 1, 0, RB_CREATE_EXCLUSIVE), n, 1024);
    n = test_name("ex2");
    expect_rounded(ring_buffer_create_ex(n, 2, 0, RB_CREATE_EXCLUSIVE), n, 1024);
    NEIGHBOUR_OK("small sizes");

    /* Above 2^31 the next power of two does not fit in 32 bits; from
     * 2^32 - 200 on, 200 + size wraps around in 32-bit arithmetic. */
    uint32_t bad[] = {0x80000001u, 0xC0000000u, 0xFFFFFF00u, 0xFFFFFF37u, 0xFFFFFF38u,
                      0xFFFFFF39u, 0xFFFFFFC0u, 0xFFFFFFFEu, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) refuse_size(bad[i]);

    /* Unknown flag bits are refused too (and create nothing). */
    n = test_name("badflags");
    EXPECT_NULL(ring_buffer_create_ex(n, 1024, 0, 16), RB_ERR_INVALID_ARG); /* 4: NO_POOL, 8: POOL_MEDIUM */
    EXPECT_NULL(ring_buffer_create_ex(n, 1024, 0, 0x80000000u), RB_ERR_INVALID_ARG);
    EXPECT_NULL(ring_buffer_open_ex(n, RB_CREATE_EXCLUSIVE), RB_ERR_INVALID_ARG);
    CHECK(!object_exists(n));
    NEIGHBOUR_OK("unknown flags");
}

/* One message through a queue of `size` bytes, then its removal. */
static void two_gib(ring_buffer_t *rb, const char *name, const char *what) {
    int failures = rbt_failures;
    CHECK(rb != NULL);
    if (!rb) {
        fprintf(stderr, "  %s: %s\n", what, ring_buffer_strerror(ring_buffer_last_error()));
        return;
    }
    CHECK_EQ(rb->buffer_size, 0x80000000u);
    check_object_size(name, 0x80000000u);
    CHECK_EQ(ring_buffer_available_write(rb), 0x7FFFFFFFu);
    const char msg[] = "two gibibytes of ring for eleven bytes";
    char buf[64];
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_put_msg(rb, msg, sizeof msg, 0), RB_OK);
    CHECK_EQ(ring_buffer_available_read(rb), 4 + sizeof msg);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, 0), RB_OK);
    CHECK(len == sizeof msg && memcmp(buf, msg, sizeof msg) == 0);
    ring_buffer_destroy(name);
    CHECK(!object_exists(name));
    ring_buffer_close(rb);
    if (rbt_failures != failures) fprintf(stderr, "  ^ %s\n", what);
    NEIGHBOUR_OK(what);
}

static void test_two_gib(void) {
    /* RING_BUFFER_MAX_SIZE really allocates 2 GiB of tmpfs (posix_fallocate);
     * one queue at a time, each removed before the next. */
    const char *n = test_name("max_ex");
    two_gib(ring_buffer_create_ex(n, 0x80000000u, 0, RB_CREATE_EXCLUSIVE), n, "create_ex 2^31");
    n = test_name("max_legacy");
    two_gib(ring_buffer_create(n, 0x80000000u), n, "create 2^31");
    n = test_name("max_round");
    two_gib(ring_buffer_create_ex(n, 0x40000001u, 0, 0), n, "create_ex 2^30 + 1 (rounded up)");
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* In a private mount namespace with a 64 KiB tmpfs on /dev/shm: a 1 MiB
 * queue must fail at create time with RB_ERR_NO_SPACE, leave nothing behind,
 * and queues that did get created must be fully backed (writing every byte
 * of their ring raises no SIGBUS). */
static int tmpfs_full_child(void *unused) {
    (void)unused;
    if (unshare(CLONE_NEWNS) != 0) {
        printf("SKIP tmpfs-full case: unshare(CLONE_NEWNS) failed: %s (needs CAP_SYS_ADMIN; "
               "a property of this machine, not of the project)\n",
               strerror(errno));
        return CHILD_SKIP;
    }
    /* A propagation change ignores source and type; "none" instead of NULL
     * only because valgrind checks them as strings. */
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0) {
        printf("SKIP tmpfs-full case: making / private failed: %s (outside the project)\n",
               strerror(errno));
        return CHILD_SKIP;
    }
    if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=1777") != 0) {
        printf("SKIP tmpfs-full case: mounting a 64k tmpfs on /dev/shm failed: %s "
               "(outside the project)\n",
               strerror(errno));
        return CHILD_SKIP;
    }
    struct statvfs before, after;
    REQUIRE(statvfs("/dev/shm", &before) == 0);
    REQUIRE(count_dir_entries("/dev/shm") == 0);

    const char *big = test_name("full");
    EXPECT_NULL(ring_buffer_create_ex(big, 1u << 20, 0, RB_CREATE_EXCLUSIVE), RB_ERR_NO_SPACE);
    EXPECT_NULL(ring_buffer_create_ex(big, 1u << 20, 0, 0), RB_ERR_NO_SPACE);
    EXPECT_NULL(ring_buffer_create(big, 1u << 20), RB_ERR_NO_SPACE);
    CHECK(!object_exists(big));
    CHECK_EQ(count_dir_entries("/dev/shm"), 0);
    REQUIRE(statvfs("/dev/shm", &after) == 0);
    CHECK_EQ(after.f_bfree, before.f_bfree); /* the failed attempts hold no pages */
    NEIGHBOUR_OK("RB_ERR_NO_SPACE (inside the child)");

    /* Fill the tmpfs with 8 KiB queues until it refuses one. */
    ring_buffer_t *qs[32];
    int made = 0, last_err = RB_OK;
    while (made < 32) {
        ring_buffer_t *q = ring_buffer_create_ex(test_name("fill"), 8192, 0, RB_CREATE_EXCLUSIVE);
        if (!q) {
            last_err = ring_buffer_last_error();
            break;
        }
        qs[made++] = q;
    }
    CHECK(made >= 1);
    CHECK_EQ(last_err, RB_ERR_NO_SPACE);
    CHECK_EQ(count_dir_entries("/dev/shm"), made);
    /* Every page of every ring is written, twice round the ring: an object
     * whose pages were not reserved would SIGBUS here. */
    char payload[1000];
    memset(payload, 0x5a, sizeof payload);
    for (int i = 0; i < made; i++) {
        int put = 0, got = 0;
        for (int round = 0; round < 2; round++) {
            while (ring_buffer_put_msg(qs[i], payload, sizeof payload, 0) == RB_OK) put++;
            char buf[1000];
            uint32_t len;
            while (ring_buffer_get_msg(qs[i], buf, sizeof buf, &len, 0) == RB_OK) got++;
        }
        CHECK(put >= 16);
        CHECK_EQ(got, put);
        ring_buffer_close(qs[i]);
    }
    NEIGHBOUR_OK("filling the tmpfs (inside the child)");
    return 0;
}

static void test_tmpfs_full(void) {
    int rc = run_child(tmpfs_full_child, NULL, 60);
    if (rc == CHILD_SKIP) return; /* the child printed why */
    CHECK_EQ(rc, 0);
    NEIGHBOUR_OK("the tmpfs-full child");
}

int main(void) {
    rbt_init();
    double t0 = now_s();
    neighbour_open();
    test_invalid_names();
    test_valid_odd_names();
    test_small_and_overflowing_sizes();
    test_tmpfs_full();
    test_two_gib();
    ring_buffer_close(rbt_neighbour);
    printf("test_hostile_names_sizes: %.1f s\n", now_s() - t0);
    return rbt_finish("test_hostile_names_sizes");
}
