/* The legacy ABI, checked at run time from C: every offset, size and
 * alignment of the three legacy structs (docs/legacy-abi.md), the constants, and
 * the header a freshly created queue has in shared memory, read directly
 * through the handle as legacy callers (and the legacy Python wrapper) do.
 *
 * build.rs already has static asserts for the offsets; this program checks
 * them again in the configuration the tests are built with (gnu11, the
 * sanitizers), reports every mismatch instead of stopping at the first, and
 * covers what a static assert cannot: the mapped bytes of a live queue. */
#include "check.h"

#include <fcntl.h>
#include <stdalign.h>
#include <stddef.h>
#include <sys/stat.h>

#define OFF(type, field, expected) CHECK_EQ(offsetof(type, field), (expected))
#define FIELD_SIZE(type, field, expected) CHECK_EQ(sizeof(((type *)0)->field), (expected))

static void check_ring_buffer_t(void) {
    OFF(ring_buffer_t, magic, 0);
    OFF(ring_buffer_t, version, 8);
    OFF(ring_buffer_t, buffer_size, 12);
    OFF(ring_buffer_t, head, 16);
    OFF(ring_buffer_t, tail, 24);
    OFF(ring_buffer_t, readers, 32);
    OFF(ring_buffer_t, writers, 36);
    OFF(ring_buffer_t, ref_count, 40);
    OFF(ring_buffer_t, process_count, 44);
    OFF(ring_buffer_t, ref_mutex, 48);
    OFF(ring_buffer_t, name, 88);
    OFF(ring_buffer_t, creator_pid, 152);
    OFF(ring_buffer_t, total_bytes_written, 160);
    OFF(ring_buffer_t, total_bytes_read, 168);
    OFF(ring_buffer_t, padding, 176);
    OFF(ring_buffer_t, data, 200);

    FIELD_SIZE(ring_buffer_t, magic, 8);
    FIELD_SIZE(ring_buffer_t, version, 4);
    FIELD_SIZE(ring_buffer_t, buffer_size, 4);
    FIELD_SIZE(ring_buffer_t, head, 8);
    FIELD_SIZE(ring_buffer_t, tail, 8);
    FIELD_SIZE(ring_buffer_t, readers, 4);
    FIELD_SIZE(ring_buffer_t, writers, 4);
    FIELD_SIZE(ring_buffer_t, ref_count, 4);
    FIELD_SIZE(ring_buffer_t, process_count, 4);
    FIELD_SIZE(ring_buffer_t, ref_mutex, 40);
    FIELD_SIZE(ring_buffer_t, name, 64);
    FIELD_SIZE(ring_buffer_t, creator_pid, 4);
    FIELD_SIZE(ring_buffer_t, total_bytes_written, 8);
    FIELD_SIZE(ring_buffer_t, total_bytes_read, 8);
    FIELD_SIZE(ring_buffer_t, padding, 24);
    /* The mutex type the header uses is the platform's own. */
    CHECK_EQ(sizeof(pthread_mutex_t), 40);

    CHECK_EQ(sizeof(ring_buffer_t), 200);
    CHECK_EQ(_Alignof(ring_buffer_t), 8);
    CHECK_EQ(sizeof(ring_buffer_t), RING_BUFFER_HEADER_SIZE);
}

static void check_ring_buffer_ref_t(void) {
    OFF(ring_buffer_ref_t, name, 0);
    OFF(ring_buffer_ref_t, size, 64);
    OFF(ring_buffer_ref_t, auto_cleanup, 68);
    OFF(ring_buffer_ref_t, creator_pid, 72);
    FIELD_SIZE(ring_buffer_ref_t, name, 64);
    FIELD_SIZE(ring_buffer_ref_t, size, 4);
    FIELD_SIZE(ring_buffer_ref_t, auto_cleanup, 1);
    FIELD_SIZE(ring_buffer_ref_t, creator_pid, 4);
    CHECK_EQ(sizeof(ring_buffer_ref_t), 76);
    CHECK_EQ(_Alignof(ring_buffer_ref_t), 4);
}

static void check_ring_buffer_stats_t(void) {
    OFF(ring_buffer_stats_t, buffer_size, 0);
    OFF(ring_buffer_stats_t, available_read, 4);
    OFF(ring_buffer_stats_t, available_write, 8);
    OFF(ring_buffer_stats_t, readers, 12);
    OFF(ring_buffer_stats_t, writers, 16);
    OFF(ring_buffer_stats_t, ref_count, 20);
    OFF(ring_buffer_stats_t, total_bytes_written, 24);
    OFF(ring_buffer_stats_t, total_bytes_read, 32);
    OFF(ring_buffer_stats_t, utilization, 40);
    FIELD_SIZE(ring_buffer_stats_t, utilization, 8);
    CHECK_EQ(sizeof(ring_buffer_stats_t), 48);
    CHECK_EQ(_Alignof(ring_buffer_stats_t), 8);
}

/* The extended stats promise that their first 48 bytes read as a
 * ring_buffer_stats_t (header comment of get_stats_ex). */
static void check_ring_buffer_stats_ex_t(void) {
    OFF(ring_buffer_stats_ex_t, buffer_size, 0);
    OFF(ring_buffer_stats_ex_t, available_read, 4);
    OFF(ring_buffer_stats_ex_t, available_write, 8);
    OFF(ring_buffer_stats_ex_t, readers, 12);
    OFF(ring_buffer_stats_ex_t, writers, 16);
    OFF(ring_buffer_stats_ex_t, ref_count, 20);
    OFF(ring_buffer_stats_ex_t, total_bytes_written, 24);
    OFF(ring_buffer_stats_ex_t, total_bytes_read, 32);
    OFF(ring_buffer_stats_ex_t, utilization, 40);
    OFF(ring_buffer_stats_ex_t, version, 48);
    CHECK_EQ(sizeof(ring_buffer_stats_ex_t) % 8, 0);
}

static void check_constants(void) {
    /* "SAGEBLKR" read as a big-endian integer. */
    CHECK(RING_BUFFER_MAGIC == 0x53414745424C4B52ULL);
    const unsigned char be[8] = {'S', 'A', 'G', 'E', 'B', 'L', 'K', 'R'};
    uint64_t from_text = 0;
    for (int i = 0; i < 8; i++) from_text = (from_text << 8) | be[i];
    CHECK(from_text == (uint64_t)RING_BUFFER_MAGIC);
    CHECK_EQ(MAX_NAME_LEN, 64);
    CHECK_EQ(RING_BUFFER_HEADER_SIZE, 200);
    CHECK_EQ(RING_BUFFER_MIN_SIZE, 1024);
    CHECK(RING_BUFFER_MAX_SIZE == 2147483648ULL);
    CHECK_EQ(RING_BUFFER_FRAME_PREFIX, 4);
    CHECK_EQ(RING_BUFFER_VERSION, 2);
    CHECK_EQ(RING_BUFFER_VERSION_LEGACY, 1);
    CHECK_EQ(RB_CREATE_EXCLUSIVE, 1);
    CHECK_EQ(RB_OPEN_ALLOW_FOREIGN_OWNER, 2);
    CHECK_EQ(RB_WAIT_FOREVER, -1);
    CHECK_EQ(RB_NO_WAIT, 0);
    /* Status codes are ABI: fixed values, in order. */
    const int all[] = ring_buffer_status_t_ALL;
    CHECK_EQ(sizeof all / sizeof all[0], 18);
    for (int i = 0; i < 18; i++) CHECK_EQ(all[i], -i);
    CHECK_EQ(RB_ERR_INCOMPATIBLE, -7);
    CHECK_EQ(RB_ERR_BUFFER_TOO_SMALL, -13);
    CHECK_EQ(RB_ERR_PANIC, -16);
    CHECK_EQ(RB_ERR_FRAMING, -17);
}

/* The mapped header of a queue this library creates, read field by field
 * through the handle, which the legacy ABI defines as the header's address. */
static void check_mapped_header(void) {
    const char *name = test_name("layout");
    ring_buffer_t *rb = ring_buffer_create(name, 3000); /* rounds to 4096 */
    REQUIRE(rb != NULL);

    /* The handle is the start of the mapping: page aligned, hence aligned
     * for every field. */
    CHECK_EQ((uintptr_t)rb % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
    CHECK(rb->magic == (uint64_t)RING_BUFFER_MAGIC);
    /* In memory (little-endian x86_64) the magic reads "RKLBEGAS". */
    CHECK(memcmp(&rb->magic, "RKLBEGAS", 8) == 0);
    CHECK_EQ(rb->version, RING_BUFFER_VERSION);
    CHECK_EQ(rb->version, 2);
    CHECK_EQ(rb->buffer_size, 4096);
    CHECK_EQ(rb->head, 0);
    CHECK_EQ(rb->tail, 0);
    CHECK_EQ(rb->readers, 0);
    CHECK_EQ(rb->writers, 0);
    CHECK_EQ(rb->ref_count, 1);
    CHECK_EQ(rb->process_count, 1);
    CHECK_EQ(rb->creator_pid, getpid());
    CHECK(strcmp(rb->name, name) == 0);
    /* NUL-padded to the end of the field, as legacy strncpy left it. */
    int padded = 1;
    for (size_t i = strlen(name); i < MAX_NAME_LEN; i++) padded &= rb->name[i] == 0;
    CHECK(padded);
    CHECK_EQ(rb->total_bytes_written, 0);
    CHECK_EQ(rb->total_bytes_read, 0);
    int zero_padding = 1;
    for (size_t i = 0; i < sizeof rb->padding; i++) zero_padding &= rb->padding[i] == 0;
    CHECK(zero_padding);
    CHECK((char *)rb->data == (char *)rb + 200);

    /* The object holds at least the legacy header and data area (legacy
     * openers map exactly that much); any extension lies beyond it. */
    struct stat st;
    REQUIRE(object_stat(name, &st));
    CHECK(st.st_size >= 200 + 4096);
    CHECK(S_ISREG(st.st_mode));

    /* head/tail at 16/24 hold the byte counters and the bytes sit at
     * data[tail & (size-1)]: what a legacy reader of the mapping sees after
     * a write and a read through the library. (On this version-2 object the
     * authoritative counters live in the extension block, each on its side's
     * own cache line, and every legacy call that moves bytes and every status
     * call brings these header fields up to date: DESIGN.md, "Compatibility".) */
    const char msg[] = "0123456789";
    CHECK_EQ(ring_buffer_write(rb, msg, 10), 10);
    CHECK_EQ(rb->tail, 10);
    CHECK_EQ(rb->head, 0);
    CHECK(memcmp(rb->data, msg, 10) == 0);
    char out[10];
    CHECK_EQ(ring_buffer_read(rb, out, 4), 4);
    CHECK_EQ(rb->head, 4);
    /* The byte totals at 160/168 are statistics (not authoritative like
     * head/tail): after ring_buffer_get_stats the header fields hold what
     * it reported, for programs that read them directly. */
    ring_buffer_stats_t st_now;
    ring_buffer_get_stats(rb, &st_now);
    CHECK_EQ(st_now.total_bytes_written, 10);
    CHECK_EQ(st_now.total_bytes_read, 4);
    CHECK_EQ(rb->total_bytes_written, 10);
    CHECK_EQ(rb->total_bytes_read, 4);
    CHECK_EQ(ring_buffer_available_read(rb), rb->tail - rb->head);

    /* A framed message lands as a 4-byte little-endian length, then the
     * payload, right at the tail. */
    uint64_t at = rb->tail;
    CHECK_EQ(ring_buffer_put_msg(rb, "abc", 3, RB_NO_WAIT), RB_OK);
    const unsigned char *d = (const unsigned char *)rb->data;
    CHECK(d[at] == 3 && d[at + 1] == 0 && d[at + 2] == 0 && d[at + 3] == 0);
    CHECK(memcmp(d + at + 4, "abc", 3) == 0);
    /* The message calls leave the header alone (producers and consumers then
     * share no line of it); the next status call mirrors the new tail. */
    CHECK_EQ(ring_buffer_available_read(rb), at + 7 - rb->head);
    CHECK_EQ(rb->tail, at + 7);
    CHECK_EQ(rb->total_bytes_written, at + 7);

    /* A legacy read that finds too few bytes and a write that finds the ring
     * full move nothing and leave the header's line alone (a poller must
     * not keep taking it from the other side): the mirror stays where the
     * last call that moved bytes or looked at the status left it. */
    uint32_t room = ring_buffer_available_write(rb);
    CHECK_EQ(ring_buffer_put_msg(rb, "de", 2, RB_NO_WAIT), RB_OK);
    CHECK_EQ(rb->tail, at + 7);
    static char big[8192];
    CHECK(ring_buffer_read(rb, big, sizeof big) < 0);
    CHECK(room > 6 && ring_buffer_write(rb, big, room - 5) < 0);
    CHECK_EQ(rb->tail, at + 7);
    CHECK_EQ(rb->readers, 0);
    CHECK_EQ(rb->writers, 0);
    /* The next call that moves bytes brings it up to date (the stream is
     * raw since the 10-byte write: any length may be read). */
    uint64_t head_before = rb->head;
    CHECK_EQ(ring_buffer_read(rb, big, 7), 7);
    CHECK_EQ(rb->tail, at + 13);
    CHECK_EQ(rb->head, head_before + 7);
    CHECK_EQ(rb->readers, 0);

    /* get_ref increments the shared ref_count, visible in the header. */
    ring_buffer_ref_t *ref = ring_buffer_get_ref(rb);
    CHECK(ref != NULL);
    CHECK_EQ(rb->ref_count, 2);
    ring_buffer_release_ref(ref);

    /* A second handle is a second mapping of the same object: a different
     * address, the same bytes, and process_count counts it. */
    ring_buffer_t *rb2 = ring_buffer_open(name);
    REQUIRE(rb2 != NULL);
    CHECK(rb2 != rb);
    CHECK_EQ(rb->process_count, 2);
    CHECK_EQ(rb2->process_count, 2);
    CHECK_EQ(rb2->tail, rb->tail);
    CHECK(memcmp(rb2->data, rb->data, 16) == 0);
    CHECK_EQ(rb2->creator_pid, getpid());
    ring_buffer_close(rb2);
    CHECK_EQ(rb->process_count, 1);

    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* A second creator process sees the same header through its own mapping;
 * creator_pid stays the creator's. */
static void check_header_from_child(void) {
    const char *name = test_name("layout_child");
    ring_buffer_t *rb = ring_buffer_create(name, 1024);
    REQUIRE(rb != NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ring_buffer_t *c = ring_buffer_open(name);
        int ok = c != NULL && c->creator_pid == parent && c->buffer_size == 1024 &&
                 c->process_count == 2 && c->version == 2 && strcmp(c->name, name) == 0;
        if (c) ring_buffer_close(c);
        _exit(ok ? 0 : 1);
    }
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(rb->process_count, 1);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

int main(void) {
    rbt_init();
    check_ring_buffer_t();
    check_ring_buffer_ref_t();
    check_ring_buffer_stats_t();
    check_ring_buffer_stats_ex_t();
    check_constants();
    check_mapped_header();
    check_header_from_child();
    return rbt_finish("test_layout");
}
