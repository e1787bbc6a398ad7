/* Resource hygiene: 10,000 cycles of create/open/put/get/close/destroy
 * (1,000 under valgrind, RB_UNDER_VALGRIND=1), including the failure paths
 * that acquire something before they fail (an exclusive create of a taken
 * name builds a whole object first; an open of a corrupt object holds a
 * descriptor and a lock), must leave this process's file descriptors
 * (/proc/self/fd), mappings (/proc/self/maps) and /dev/shm entries exactly
 * as before. A second run inside a private mount namespace, on a tmpfs of
 * its own, also checks that every tmpfs block comes back. */
#include "hostile_util.h"

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    REQUIRE(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* Lines of /proc/self/maps; `*shm` gets those that map a /dev/shm object
 * (a queue leaked by the library would be one of them). */
static int count_maps(int *shm) {
    FILE *f = fopen("/proc/self/maps", "re");
    REQUIRE(f);
    int n = 0;
    *shm = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        n++;
        if (strstr(line, " /dev/shm/")) ++*shm;
    }
    fclose(f);
    return n;
}

/* Under AddressSanitizer and valgrind the allocator maps memory of its own
 * as the program runs (ASan's size-class regions and quarantine, valgrind's
 * client arenas), so the total line count of /proc/self/maps moves without
 * any leak. There the /dev/shm mappings must still match exactly and the
 * total may only grow by this much (a leak per cycle would be thousands). */
#if defined(__SANITIZE_ADDRESS__)
#define ALLOCATOR_NOISE 1
#else
#define ALLOCATOR_NOISE 0
#endif
#define ALLOCATOR_MAPS_SLACK 32

/* The /dev/shm entries whose names contain `tag`, concatenated in
 * directory order into `out` (a fingerprint of the set); their number. */
static int shm_entries(const char *tag, char *out, size_t cap) {
    DIR *d = opendir("/dev/shm");
    REQUIRE(d);
    int n = 0;
    size_t used = 0;
    out[0] = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || (tag && !strstr(e->d_name, tag))) continue;
        n++;
        int w = snprintf(out + used, cap - used, "%s\n", e->d_name);
        if (w > 0 && (size_t)w < cap - used) used += (size_t)w;
    }
    closedir(d);
    return n;
}

struct tally {
    long bad;     /* calls that did not answer as they must */
    long handled; /* messages that went through */
};

/* Counts a deviation; prints the first few with their cycle. */
#define EXPECT_CYCLE(cond, cycle)                                                  \
    do {                                                                           \
        if (!(cond)) {                                                             \
            if (t->bad++ < 5)                                                      \
                fprintf(stderr, "%s:%d: cycle %ld: %s\n", __FILE__, __LINE__,      \
                        (long)(cycle), #cond);                                     \
        }                                                                          \
    } while (0)

/* One cycle on queue `name`; `corrupt` names an object that must be
 * refused, `missing` one that does not exist. */
static void cycle(long i, const char *name, const char *corrupt, const char *missing,
                  struct tally *t) {
    char msg[64], buf[64];
    uint32_t len = 0;
    int n = snprintf(msg, sizeof msg, "cycle %ld", i);
    ring_buffer_t *a = (i & 1) ? ring_buffer_create(name, 4096)
                               : ring_buffer_create_ex(name, 4096, 0, RB_CREATE_EXCLUSIVE);
    EXPECT_CYCLE(a != NULL, i);
    if (!a) return;
    ring_buffer_t *b = ring_buffer_open(name);
    EXPECT_CYCLE(b != NULL, i);
    EXPECT_CYCLE(ring_buffer_put_msg(a, msg, (uint32_t)n, RB_NO_WAIT) == RB_OK, i);
    if (b) {
        EXPECT_CYCLE(ring_buffer_get_msg(b, buf, sizeof buf, &len, RB_NO_WAIT) == RB_OK, i);
        EXPECT_CYCLE(len == (uint32_t)n && memcmp(buf, msg, len) == 0, i);
        t->handled++;
    }
    /* Failure paths that acquire something first. */
    EXPECT_CYCLE(ring_buffer_create_ex(name, 4096, 0, RB_CREATE_EXCLUSIVE) == NULL &&
                     ring_buffer_last_error() == RB_ERR_EXISTS,
                 i);
    EXPECT_CYCLE(ring_buffer_open(corrupt) == NULL &&
                     ring_buffer_last_error() == RB_ERR_INCOMPATIBLE,
                 i);
    EXPECT_CYCLE(ring_buffer_open(missing) == NULL && ring_buffer_last_error() == RB_ERR_NOT_FOUND,
                 i);
    EXPECT_CYCLE(ring_buffer_remove_if_unused(name) == 0, i);
    /* Calls that allocate or read /proc on the side, now and then. */
    if (i % 8 == 0) {
        ring_buffer_ref_t *ref = ring_buffer_get_ref(a);
        EXPECT_CYCLE(ref != NULL, i);
        ring_buffer_t *c = ref ? ring_buffer_from_ref(ref) : NULL;
        EXPECT_CYCLE(c != NULL, i);
        ring_buffer_release_ref(ref);
        if (c) ring_buffer_close(c);
        ring_buffer_stats_ex_t sx;
        memset(&sx, 0, sizeof sx);
        ring_buffer_get_stats_ex(a, &sx);
        EXPECT_CYCLE(sx.attached_processes == 1 && sx.buffer_size == 4096, i);
    }
    ring_buffer_close(a);
    if (b) ring_buffer_close(b);
    /* Alternate the two ways of removing. */
    if (i & 2)
        ring_buffer_destroy(name);
    else
        EXPECT_CYCLE(ring_buffer_remove_if_unused(name) == 1, i);
    EXPECT_CYCLE(!object_exists(name), i);
}

/* A persistent object that every open must refuse (wrong magic). */
static void make_corrupt(const char *name) {
    ring_buffer_t *rb = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb);
    ring_buffer_close(rb);
    REQUIRE(poke_u64(name, HDR_MAGIC_OFF, 0x4e4f542041205142ull));
}

struct snapshot {
    int fds, maps, shm_maps, entries;
    char listing[8192];
};

static void take(struct snapshot *s, const char *tag) {
    s->fds = count_fds();
    s->maps = count_maps(&s->shm_maps);
    s->entries = shm_entries(tag, s->listing, sizeof s->listing);
}

/* Runs `cycles` cycles after a warm-up and compares the resources before
 * and after; `tag` selects the /dev/shm entries compared (NULL: all). */
static void run_cycles(long cycles, const char *tag, const char *where) {
    const char *name = test_name("hyg");
    const char *corrupt = test_name("hyg_corrupt");
    const char *missing = test_name("hyg_missing");
    make_corrupt(corrupt);
    struct tally t = {0, 0};

    /* Warm-up: allocator arenas, the handle registry, thread-locals. */
    for (long i = 0; i < 64; i++) cycle(i, name, corrupt, missing, &t);
    struct snapshot before, after;
    take(&before, tag);
    double t0 = now_s();
    for (long i = 0; i < cycles; i++) cycle(i, name, corrupt, missing, &t);
    double dt = now_s() - t0;
    take(&after, tag);

    printf("%s: %ld cycles in %.2f s; fds %d -> %d, maps %d -> %d (of /dev/shm %d -> %d), "
           "/dev/shm entries %d -> %d\n",
           where, cycles, dt, before.fds, after.fds, before.maps, after.maps, before.shm_maps,
           after.shm_maps, before.entries, after.entries);
    CHECK_EQ(t.bad, 0);
    CHECK_EQ(t.handled, cycles + 64);
    CHECK_EQ(after.fds, before.fds);
    CHECK_EQ(after.shm_maps, before.shm_maps);
    if (ALLOCATOR_NOISE || under_valgrind()) {
        CHECK(after.maps >= before.maps - ALLOCATOR_MAPS_SLACK &&
              after.maps <= before.maps + ALLOCATOR_MAPS_SLACK);
    } else {
        CHECK_EQ(after.maps, before.maps);
    }
    CHECK_EQ(after.entries, before.entries);
    CHECK(strcmp(after.listing, before.listing) == 0);
    ring_buffer_destroy(corrupt);
    NEIGHBOUR_OK(where);
}

/* The same inside a private mount namespace with a tmpfs of its own on
 * /dev/shm: there every entry and every block is ours to account for. */
struct private_arg {
    long cycles;
};

static int private_child(void *p) {
    struct private_arg *a = p;
    if (unshare(CLONE_NEWNS) != 0) {
        printf("SKIP private-tmpfs pass: unshare(CLONE_NEWNS): %s (needs CAP_SYS_ADMIN; "
               "outside the project)\n",
               strerror(errno));
        return CHILD_SKIP;
    }
    /* A propagation change ignores source and type; "none" instead of NULL
     * only because valgrind checks them as strings. */
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=1777") != 0) {
        printf("SKIP private-tmpfs pass: mount: %s (outside the project)\n", strerror(errno));
        return CHILD_SKIP;
    }
    /* The neighbour lives in the real /dev/shm, still mapped here. */
    struct statvfs before, after;
    REQUIRE(statvfs("/dev/shm", &before) == 0);
    char listing[256];
    CHECK_EQ(shm_entries(NULL, listing, sizeof listing), 0);
    run_cycles(a->cycles, NULL, "private tmpfs");
    REQUIRE(statvfs("/dev/shm", &after) == 0);
    CHECK_EQ(shm_entries(NULL, listing, sizeof listing), 0);
    printf("private tmpfs: free blocks %llu -> %llu\n", (unsigned long long)before.f_bfree,
           (unsigned long long)after.f_bfree);
    CHECK_EQ(after.f_bfree, before.f_bfree);
    CHECK_EQ(after.f_ffree, before.f_ffree);
    return 0;
}

int main(void) {
    rbt_init();
    double t0 = now_s();
    neighbour_open();
    bool vg = under_valgrind();
    char tag[32];
    snprintf(tag, sizeof tag, "_%d_", (int)getpid()); /* this process's queues */
    run_cycles(vg ? 1000 : 10000, tag, "/dev/shm");

    struct private_arg pa = {vg ? 200 : 2000};
    int rc = run_child(private_child, &pa, 240);
    if (rc != CHILD_SKIP) CHECK_EQ(rc, 0);
    NEIGHBOUR_OK("the private-tmpfs pass");

    ring_buffer_close(rbt_neighbour);
    printf("test_resource_hygiene: %.1f s\n", now_s() - t0);
    return rbt_finish("test_resource_hygiene");
}
