/* Permissions (DESIGN.md "Security"): objects are created 0600 whatever the
 * umask unless a mode is given, and then get exactly that mode; an object
 * owned by another user is refused (RB_ERR_PERMISSION) instead of silently
 * opened, unless RB_OPEN_ALLOW_FOREIGN_OWNER says otherwise; another user
 * cannot open ours; a symbolic link planted at the object's path is never
 * followed (its target stays untouched); an exclusive create of an existing
 * name fails with RB_ERR_EXISTS. The other users are forked children that
 * drop to uid/gid 65534 ("nobody") and 65533. */
#include "hostile_util.h"

#include <grp.h>

#define NOBODY 65534
#define OTHER 65533

static uid_t owner_of(const char *name) {
    struct stat st;
    return object_stat(name, &st) ? st.st_uid : (uid_t)-1;
}

/* Creates `name` with `mode` under `mask` (legacy create, create_ex with
 * no flags, or an exclusive create_ex); checks the mode. */
enum how { LEGACY, OPEN_OR_CREATE, EXCLUSIVE };

static void expect_mode(const char *name, mode_t mask, uint32_t mode, mode_t expected,
                        enum how how) {
    mode_t old = umask(mask);
    ring_buffer_t *rb =
        how == LEGACY ? ring_buffer_create(name, 0)
                      : ring_buffer_create_ex(name, 1024, mode,
                                              how == EXCLUSIVE ? RB_CREATE_EXCLUSIVE : 0);
    umask(old);
    CHECK(rb != NULL);
    if (!rb) return;
    if (object_mode(name) != (int)expected)
        fprintf(stderr, "  mode %#o under umask %#o: got %#o, expected %#o\n", mode, mask,
                object_mode(name), expected);
    CHECK_EQ(object_mode(name), expected);
    CHECK_EQ(owner_of(name), geteuid());
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

static void test_modes(void) {
    expect_mode(test_name("m0640"), 077, 0640, 0640, OPEN_OR_CREATE);
    expect_mode(test_name("m0640x"), 077, 0640, 0640, EXCLUSIVE);
    expect_mode(test_name("m0default"), 077, 0, 0600, OPEN_OR_CREATE);
    expect_mode(test_name("m0defaultx"), 077, 0, 0600, EXCLUSIVE);
    expect_mode(test_name("mlegacy0"), 0, 0, 0600, LEGACY); /* not the legacy 0666 */
    expect_mode(test_name("mlegacy22"), 022, 0, 0600, LEGACY);
    expect_mode(test_name("mlegacy77"), 077, 0, 0600, LEGACY);
    expect_mode(test_name("mdefault0"), 0, 0, 0600, OPEN_OR_CREATE);
    expect_mode(test_name("m0666"), 022, 0666, 0666, OPEN_OR_CREATE);
    expect_mode(test_name("m0604"), 077, 0604, 0604, EXCLUSIVE);
    expect_mode(test_name("m0777"), 0777, 0777, 0777, EXCLUSIVE);
    expect_mode(test_name("m0400"), 0, 0400, 0400, OPEN_OR_CREATE);
    NEIGHBOUR_OK("modes");

    /* Bits beyond 0777 (setuid, setgid, sticky, file type) are refused. */
    uint32_t bad[] = {01000, 02000, 04000, 04600, 0100600, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *n = test_name("mbad");
        EXPECT_NULL(ring_buffer_create_ex(n, 1024, bad[i], RB_CREATE_EXCLUSIVE), RB_ERR_INVALID_ARG);
        EXPECT_NULL(ring_buffer_create_ex(n, 1024, bad[i], 0), RB_ERR_INVALID_ARG);
        CHECK(!object_exists(n));
    }

    /* Opening an existing queue through create_ex leaves its mode alone. */
    const char *n = test_name("mkeep");
    ring_buffer_t *a = ring_buffer_create_ex(n, 1024, 0640, RB_CREATE_EXCLUSIVE);
    REQUIRE(a);
    ring_buffer_t *b = ring_buffer_create_ex(n, 4096, 0666, 0);
    CHECK(b != NULL);
    if (b) CHECK_EQ(b->buffer_size, 1024);
    CHECK_EQ(object_mode(n), 0640);
    if (b) ring_buffer_close(b);
    ring_buffer_close(a);
    ring_buffer_destroy(n);
    NEIGHBOUR_OK("invalid modes");
}

/* ------------------------------------------------------ other users */

static bool can_switch_users;

/* In a child: becomes uid/gid `id` for good (supplementary groups dropped
 * first, then the group, then the user). */
static bool become(uid_t id) {
    if (setgroups(0, NULL) != 0 || setgid(id) != 0 || setuid(id) != 0) {
        printf("SKIP: cannot switch to uid %u: %s (the environment forbids it; outside the "
               "project)\n",
               (unsigned)id, strerror(errno));
        return false;
    }
    REQUIRE(getuid() == id && geteuid() == id && getegid() == id);
    return true;
}

struct foreign_create {
    const char *name;
    uint32_t mode;
};

static int create_as_nobody(void *p) {
    struct foreign_create *fc = p;
    if (!become(NOBODY)) return CHILD_SKIP;
    ring_buffer_t *rb = ring_buffer_create_ex(fc->name, 1024, fc->mode, RB_CREATE_EXCLUSIVE);
    if (!rb) {
        fprintf(stderr, "  create_ex as uid %d: %s\n", NOBODY,
                ring_buffer_strerror(ring_buffer_last_error()));
        return 1;
    }
    CHECK_EQ(ring_buffer_put_msg(rb, "planted", 7, RB_NO_WAIT), RB_OK);
    return 0; /* _exit unmaps; the object stays */
}

/* A name pre-created by another user: root (euid 0) refuses it by default,
 * though its mode would let root in anyway, and opens it when allowed to. */
static void test_foreign_object(uint32_t mode, const char *tag) {
    const char *name = test_name(tag);
    struct foreign_create fc = {name, mode};
    int failures = rbt_failures;
    int rc = run_child(create_as_nobody, &fc, 20);
    if (rc == CHILD_SKIP) return; /* the child said why */
    CHECK_EQ(rc, 0);
    if (rc != 0) return;
    CHECK_EQ(owner_of(name), NOBODY);
    int mode_before = object_mode(name);

    refuse_opening(name, RB_ERR_PERMISSION);
    EXPECT_NULL(ring_buffer_create(name, 0), RB_ERR_PERMISSION);

    /* Explicitly allowed: opens, and the planted message is there. */
    ring_buffer_t *rb = ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER);
    CHECK(rb != NULL);
    if (rb) {
        char buf[16];
        uint32_t len = 0;
        CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
        CHECK(len == 7 && memcmp(buf, "planted", 7) == 0);
        ring_buffer_close(rb);
    }
    rb = ring_buffer_create_ex(name, 1024, 0, RB_OPEN_ALLOW_FOREIGN_OWNER);
    CHECK(rb != NULL);
    if (rb) ring_buffer_close(rb);
    /* None of it took the object over. */
    CHECK_EQ(owner_of(name), NOBODY);
    CHECK_EQ(object_mode(name), mode_before);
    ring_buffer_destroy(name);
    if (rbt_failures != failures) fprintf(stderr, "  ^ with a queue of uid %d, mode %#o\n", NOBODY, mode);
    NEIGHBOUR_OK("a queue pre-created by another user");
}

/* What another user may do with a queue that is not theirs. */
struct outsider {
    const char *name;
    uid_t uid;
    bool world_writable; /* the object's mode lets anybody read and write */
};

static int outsider_child(void *p) {
    struct outsider *o = p;
    if (!become(o->uid)) return CHILD_SKIP;
    const char *name = o->name;
    /* Refused by mode (EACCES) or, when the mode allows, by owner. */
    refuse_opening(name, RB_ERR_PERMISSION);
    /* The sticky /dev/shm keeps others from removing it. */
    EXPECT_LAST_ERROR(ring_buffer_destroy(name), RB_ERR_PERMISSION);
    CHECK(object_exists(name));
    if (o->world_writable) {
        /* The owner check is what refused it; allowed, it opens. Its owner
         * has it open, so it is not removed either. */
        CHECK_EQ(ring_buffer_remove_if_unused(name), 0);
        ring_buffer_t *rb = ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER);
        CHECK(rb != NULL);
        if (rb) {
            CHECK_EQ(ring_buffer_put_msg(rb, "from outside", 12, RB_NO_WAIT), RB_OK);
            ring_buffer_close(rb);
        }
    } else {
        /* The mode refuses it even when a foreign owner is allowed. */
        EXPECT_NULL(ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER), RB_ERR_PERMISSION);
        EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, RB_OPEN_ALLOW_FOREIGN_OWNER),
                    RB_ERR_PERMISSION);
        EXPECT_CODE(ring_buffer_remove_if_unused(name), RB_ERR_PERMISSION);
    }
    return 0;
}

static void test_outsider(uint32_t mode, uid_t owner, const char *tag) {
    const char *name = test_name(tag);
    int failures = rbt_failures;
    ring_buffer_t *rb;
    if (owner == 0) {
        rb = ring_buffer_create_ex(name, 1024, mode, RB_CREATE_EXCLUSIVE);
        REQUIRE(rb);
    } else {
        /* Owned by `nobody`, attacked by uid 65533. */
        struct foreign_create fc = {name, mode};
        int rc = run_child(create_as_nobody, &fc, 20);
        if (rc == CHILD_SKIP) return; /* the child said why */
        REQUIRE(rc == 0);
        rb = ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER);
        REQUIRE(rb);
        char buf[16];
        uint32_t len;
        REQUIRE(ring_buffer_get_msg(rb, buf, sizeof buf, &len, 0) == RB_OK);
    }
    struct outsider o = {name, owner == 0 ? NOBODY : OTHER, (mode & 0006) == 0006};
    int rc = run_child(outsider_child, &o, 20);
    if (rc == CHILD_SKIP) {
        ring_buffer_close(rb);
        ring_buffer_destroy(name);
        return;
    }
    CHECK_EQ(rc, 0);
    /* Still there, same mode and owner, and working for its owner. */
    CHECK(object_exists(name));
    CHECK_EQ(object_mode(name), mode);
    CHECK_EQ(owner_of(name), owner);
    char buf[32];
    uint32_t len = 0;
    if (o.world_writable) {
        CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
        CHECK(len == 12 && memcmp(buf, "from outside", 12) == 0);
    }
    CHECK_EQ(ring_buffer_msg_count(rb), 0);
    CHECK_EQ(ring_buffer_put_msg(rb, "mine", 4, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    if (rbt_failures != failures)
        fprintf(stderr, "  ^ outsider case: owner %u, mode %#o\n", (unsigned)owner, mode);
    NEIGHBOUR_OK("another user trying our queue");
}

/* ----------------------------------------------------------- symlinks */

static ssize_t read_file(const char *path, unsigned char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = pread(fd, buf, cap, 0);
    close(fd);
    return n;
}

/* Every call must refuse the link at `name` without following it. */
static void refuse_symlink(const char *name, const char *what) {
    int failures = rbt_failures;
    refuse_opening(name, RB_ERR_PERMISSION);
    EXPECT_NULL(ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER), RB_ERR_PERMISSION);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0666, RB_OPEN_ALLOW_FOREIGN_OWNER),
                RB_ERR_PERMISSION);
    CHECK_EQ(ring_buffer_remove_if_unused(name), RB_ERR_PERMISSION);
    /* The link itself is still there. */
    struct stat st;
    CHECK(object_stat(name, &st) && S_ISLNK(st.st_mode));
    if (rbt_failures != failures) fprintf(stderr, "  ^ with a symlink to %s\n", what);
}

static void test_symlinks(void) {
    static unsigned char before[4096], after[4096];
    char link_path[160], target_path[160];

    /* A link to a real, valid queue of ours: following it would work, so
     * only the refusal to follow can make these fail. */
    const char *target = test_name("symtarget");
    ring_buffer_t *t = ring_buffer_create_ex(target, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(t);
    REQUIRE(ring_buffer_put_msg(t, "target", 6, 0) == RB_OK);
    ring_buffer_close(t);
    shm_path(target_path, sizeof target_path, target);
    struct stat st_before, st_after;
    REQUIRE(stat(target_path, &st_before) == 0);
    ssize_t n_before = read_file(target_path, before, sizeof before);
    REQUIRE(n_before > 0);

    const char *link_name = test_name("symlink");
    shm_path(link_path, sizeof link_path, link_name);
    REQUIRE(symlink(target_path, link_path) == 0);
    refuse_symlink(link_name, "a valid queue");
    CHECK_EQ(read_file(target_path, after, sizeof after), n_before);
    CHECK(memcmp(before, after, (size_t)n_before) == 0); /* not a byte written */
    CHECK(stat(target_path, &st_after) == 0);
    CHECK(st_after.st_mode == st_before.st_mode && st_after.st_uid == st_before.st_uid);
    CHECK_EQ(st_after.st_size, st_before.st_size);
    /* The target, opened by its own name, is intact and unused. */
    t = ring_buffer_open(target);
    CHECK(t != NULL);
    if (t) {
        char buf[16];
        uint32_t len = 0;
        CHECK_EQ(ring_buffer_attached_processes(t), 1);
        CHECK_EQ(ring_buffer_get_msg(t, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
        CHECK(len == 6 && memcmp(buf, "target", 6) == 0);
        ring_buffer_close(t);
    }
    /* destroy(link) removes the link, never the target. */
    ring_buffer_destroy(link_name);
    CHECK(!object_exists(link_name));
    CHECK(object_exists(target));
    ring_buffer_destroy(target);
    NEIGHBOUR_OK("a symlink to a valid queue");

    /* A dangling link: creating through it would make the target. */
    char dangling[160];
    snprintf(dangling, sizeof dangling, "/dev/shm/ct_dangling_%d", (int)getpid());
    register_path(dangling);
    link_name = test_name("dangling");
    shm_path(link_path, sizeof link_path, link_name);
    REQUIRE(symlink(dangling, link_path) == 0);
    refuse_symlink(link_name, "nowhere (dangling)");
    CHECK(access(dangling, F_OK) != 0 && errno == ENOENT);
    ring_buffer_destroy(link_name);
    NEIGHBOUR_OK("a dangling symlink");

    /* A link to a file elsewhere that somebody cares about. */
    char victim[160];
    snprintf(victim, sizeof victim, "/tmp/ct_precious_%d", (int)getpid());
    register_path(victim);
    int fd = open(victim, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "precious\n", 9) == 9);
    close(fd);
    link_name = test_name("victimlink");
    shm_path(link_path, sizeof link_path, link_name);
    REQUIRE(symlink(victim, link_path) == 0);
    refuse_symlink(link_name, "a file outside /dev/shm");
    CHECK_EQ(read_file(victim, after, sizeof after), 9);
    CHECK(memcmp(after, "precious\n", 9) == 0);
    ring_buffer_destroy(link_name);
    CHECK(access(victim, F_OK) == 0);
    unlink(victim);
    NEIGHBOUR_OK("a symlink to a file outside /dev/shm");
}

static void test_exclusive(void) {
    const char *name = test_name("excl");
    ring_buffer_t *a = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(a);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE), RB_ERR_EXISTS);
    EXPECT_NULL(ring_buffer_create_ex(name, 8192, 0640, RB_CREATE_EXCLUSIVE), RB_ERR_EXISTS);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0,
                                      RB_CREATE_EXCLUSIVE | RB_OPEN_ALLOW_FOREIGN_OWNER),
                RB_ERR_EXISTS);
    ring_buffer_close(a);
    /* Closed but not removed: still exists. */
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE), RB_ERR_EXISTS);
    ring_buffer_destroy(name);
    a = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    CHECK(a != NULL);
    if (a) ring_buffer_close(a);
    ring_buffer_destroy(name);

    /* Any file at the name counts, queue or not. */
    name = test_name("exclfile");
    char path[160];
    shm_path(path, sizeof path, name);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    EXPECT_NULL(ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE), RB_ERR_EXISTS);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 0); /* left as it was */
    ring_buffer_destroy(name);
    NEIGHBOUR_OK("exclusive creates of existing names");
}

int main(void) {
    rbt_init();
    double t0 = now_s();
    neighbour_open();
    test_modes();
    test_exclusive();
    test_symlinks();

    can_switch_users = geteuid() == 0;
    if (!can_switch_users) {
        printf("SKIP other-user cases: not running as root (euid %u), so no other uid can be "
               "taken (a property of the environment, not of the project)\n",
               (unsigned)geteuid());
    } else {
        test_foreign_object(0, "foreign");
        test_foreign_object(0666, "foreign666");
        test_outsider(0600, 0, "ours0600");
        test_outsider(0640, 0, "ours0640");
        test_outsider(0666, 0, "ours0666");
        test_outsider(0666, NOBODY, "nobody666");
        test_outsider(0600, NOBODY, "nobody600");
    }
    ring_buffer_close(rbt_neighbour);
    printf("test_permissions: %.1f s\n", now_s() - t0);
    return rbt_finish("test_permissions");
}
