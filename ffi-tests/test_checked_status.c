/* Status-returning forms of the calls that answer a number (msg_count,
 * unfinished_tasks, available_write, stats_ex): a failure is a code, never a
 * plausible 0, and the output is written only on success. And
 * ring_buffer_close_remove_if_unused, what auto_cleanup needs: it removes
 * the object its handle opened, never a newer queue that took the name. */
#include "hostile_util.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#define RING 4096u
/* Offsets in the extension block (layout.rs: Extension { identity 64,
 * signals 64, writer 128, reader 128 }; Side { lock 40, own 8, messages 8,
 * ... }), restated on purpose as in hostile_util.h. */
#define EXT_WRITER_MESSAGES (128 + 48)
#define EXT_READER_MESSAGES (256 + 48)
#define SENTINEL 0xDEADBEEFCAFEull

static off_t ext_offset(uint32_t buffer_size) {
    return (off_t)((200 + (uint64_t)buffer_size + 63) & ~(uint64_t)63);
}

static void test_checked_counts(void) {
    stage = "checked counts";
    const char *name = test_name("checked");
    ring_buffer_t *rb = ring_buffer_create_ex(name, RING, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb);
    uint64_t n = SENTINEL;
    uint32_t room = 7;
    CHECK_EQ(ring_buffer_msg_count_checked(rb, &n), RB_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(ring_buffer_put_msg(rb, "abc", 3, 0), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, "de", 2, 0), RB_OK);
    CHECK_EQ(ring_buffer_msg_count_checked(rb, &n), RB_OK);
    CHECK_EQ(n, 2);
    CHECK_EQ(ring_buffer_available_write_checked(rb, &room), RB_OK);
    CHECK_EQ(room, RING - 1 - (4 + 3) - (4 + 2));
    CHECK_EQ(ring_buffer_unfinished_tasks_checked(rb, &n), RB_OK);
    CHECK_EQ(n, 2);
    ring_buffer_stats_ex_t st;
    memset(&st, 0, sizeof st);
    CHECK_EQ(ring_buffer_get_stats_ex_checked(rb, &st), RB_OK);
    CHECK_EQ(st.buffer_size, RING);
    CHECK_EQ(st.messages_queued, 2);
    CHECK_EQ(st.attached_processes, 1);

    /* NULL outputs and bad handles: a code, the output untouched. */
    EXPECT_CODE(ring_buffer_msg_count_checked(rb, NULL), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_unfinished_tasks_checked(rb, NULL), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_available_write_checked(rb, NULL), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_get_stats_ex_checked(rb, NULL), RB_ERR_INVALID_ARG);
    ring_buffer_t *bogus = (ring_buffer_t *)&st;
    n = SENTINEL;
    room = 7;
    EXPECT_CODE(ring_buffer_msg_count_checked(NULL, &n), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_msg_count_checked(bogus, &n), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_unfinished_tasks_checked(bogus, &n), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_available_write_checked(bogus, &room), RB_ERR_INVALID_ARG);
    CHECK_EQ(n, SENTINEL);
    CHECK_EQ(room, 7);
    ring_buffer_stats_ex_t untouched;
    memset(&untouched, 0xAB, sizeof untouched);
    ring_buffer_stats_ex_t copy = untouched;
    EXPECT_CODE(ring_buffer_get_stats_ex_checked(bogus, &untouched), RB_ERR_INVALID_ARG);
    CHECK(memcmp(&copy, &untouched, sizeof copy) == 0);

    /* More messages consumed than published: somebody wrote the counters.
     * The unchecked form can only say 0 (what an empty queue says); the
     * checked form says corrupt. */
    REQUIRE(poke_u64(name, ext_offset(RING) + EXT_READER_MESSAGES, 5));
    REQUIRE(poke_u64(name, ext_offset(RING) + EXT_WRITER_MESSAGES, 2));
    n = SENTINEL;
    EXPECT_CODE(ring_buffer_msg_count_checked(rb, &n), RB_ERR_CORRUPT);
    CHECK_EQ(n, SENTINEL);
    EXPECT_FAIL(ring_buffer_msg_count(rb), 0, RB_ERR_CORRUPT);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* A version-1 object, as the legacy library made it: no task counts. */
static void test_checked_on_legacy_object(void) {
    stage = "checked on a legacy object";
    const char *name = test_name("checkedv1");
    char shm_name[96];
    snprintf(shm_name, sizeof shm_name, "/sage_ringbuf_%s", name);
    int fd = shm_open(shm_name, O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, 200 + 1024) == 0);
    close(fd);
    REQUIRE(poke_u64(name, HDR_MAGIC_OFF, RING_BUFFER_MAGIC));
    REQUIRE(poke_u32(name, HDR_VERSION_OFF, 1));
    REQUIRE(poke_u32(name, HDR_SIZE_OFF, 1024));
    ring_buffer_t *rb = ring_buffer_open(name);
    REQUIRE(rb);
    uint64_t n = SENTINEL;
    EXPECT_CODE(ring_buffer_unfinished_tasks_checked(rb, &n), RB_ERR_INCOMPATIBLE);
    CHECK_EQ(n, SENTINEL);
    /* The unchecked form answers 0, which looks like "all done". */
    EXPECT_FAIL(ring_buffer_unfinished_tasks(rb), 0, RB_ERR_INCOMPATIBLE);
    CHECK_EQ(ring_buffer_msg_count_checked(rb, &n), RB_OK);
    CHECK_EQ(n, 0);
    ring_buffer_close(rb);
}

static void test_close_remove_if_unused(void) {
    stage = "close_remove_if_unused";
    /* Unused: removed. */
    const char *a = test_name("cru");
    ring_buffer_t *rb = ring_buffer_create_ex(a, RING, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb);
    CHECK_EQ(ring_buffer_close_remove_if_unused(rb), 1);
    CHECK(!object_exists(a));
    /* The handle is closed whatever the answer. */
    EXPECT_CODE(ring_buffer_close_remove_if_unused(rb), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_close_remove_if_unused(NULL), RB_ERR_INVALID_ARG);

    /* In use by another handle (in this process or another): kept. */
    const char *b = test_name("cru");
    rb = ring_buffer_create_ex(b, RING, 0, RB_CREATE_EXCLUSIVE);
    ring_buffer_t *other = ring_buffer_open(b);
    REQUIRE(rb && other);
    CHECK_EQ(ring_buffer_close_remove_if_unused(rb), 0);
    CHECK(object_exists(b));
    CHECK_EQ(ring_buffer_close_remove_if_unused(other), 1);
    CHECK(!object_exists(b));

    /* The name was removed and taken by a newer queue with messages:
     * closing the old handle must not remove it (close + remove by name
     * did). */
    const char *c = test_name("cru");
    ring_buffer_t *old = ring_buffer_create_ex(c, RING, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(old);
    ring_buffer_destroy(c);
    ring_buffer_t *newer = ring_buffer_create_ex(c, RING, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(newer);
    CHECK_EQ(ring_buffer_put_msg(newer, "keep", 4, 0), RB_OK);
    ring_buffer_close(newer);
    CHECK_EQ(ring_buffer_close_remove_if_unused(old), 0);
    CHECK(object_exists(c));
    ring_buffer_t *again = ring_buffer_open(c);
    REQUIRE(again);
    char buf[8];
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg(again, buf, sizeof buf, &len, 0), RB_OK);
    CHECK(len == 4 && memcmp(buf, "keep", 4) == 0);
    CHECK_EQ(ring_buffer_close_remove_if_unused(again), 1);
    CHECK(!object_exists(c));
}

int main(void) {
    rbt_init();
    watchdog(valgrind_scaled(60), "start");
    test_checked_counts();
    test_checked_on_legacy_object();
    test_close_remove_if_unused();
    return rbt_finish("test_checked_status");
}
