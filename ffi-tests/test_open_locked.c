/* Opening a queue whose object another process holds under an exclusive
 * flock (the lock remove_if_unused takes for a moment; a foreign or stopped
 * process may hold it for ever). Open and create used to wait in a blocking
 * flock, uninterruptibly and for ever. Now an object of another user is
 * refused with RB_ERR_PERMISSION before any call that can wait, and for an
 * object of ours the wait is bounded and ends with RB_ERR_TIMEOUT. The
 * watchdog turns a hang into a failure. */
#include "hostile_util.h"

#include <sys/file.h>

/* Forks a child that takes LOCK_EX on the object of `name` and holds it
 * until killed; returns once the lock is held. */
static pid_t hold_exclusive(const char *name) {
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t pid = fork_child(120);
    if (pid == 0) {
        char path[160];
        shm_path(path, sizeof path, name);
        int fd = open(path, O_RDWR | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_EX) != 0) _exit(3);
        char ok = 1;
        if (write(ready[1], &ok, 1) != 1) _exit(4);
        for (;;) pause();
    }
    close(ready[1]);
    char ok = 0;
    REQUIRE(read(ready[0], &ok, 1) == 1 && ok == 1);
    close(ready[0]);
    return pid;
}

static void release(pid_t holder) {
    kill(holder, SIGKILL);
    CHECK_EQ(wait_child(holder), 128 + SIGKILL);
}

static void test_own_object_bounded_wait(void) {
    watchdog(valgrind_scaled(30), "open of an exclusively locked queue of ours");
    const char *name = test_name("oplk");
    ring_buffer_t *rb = ring_buffer_create_ex(name, 4096, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb);
    CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, 0), RB_OK);
    ring_buffer_close(rb);
    pid_t holder = hold_exclusive(name);
    double t0 = now_s();
    EXPECT_NULL(ring_buffer_open(name), RB_ERR_TIMEOUT);
    EXPECT_NULL(ring_buffer_open_ex(name, 0), RB_ERR_TIMEOUT);
    EXPECT_NULL(ring_buffer_create(name, 4096), RB_ERR_TIMEOUT);
    EXPECT_NULL(ring_buffer_create_ex(name, 4096, 0, 0), RB_ERR_TIMEOUT);
    /* An exclusive create fails at once: the name is taken. */
    EXPECT_NULL(ring_buffer_create_ex(name, 4096, 0, RB_CREATE_EXCLUSIVE), RB_ERR_EXISTS);
    /* A liveness question never waits either (remove_if_unused tries). */
    CHECK_EQ(ring_buffer_remove_if_unused(name), 0);
    printf("  four opens of a locked queue gave up after %.2f s in all\n", now_s() - t0);
    release(holder);
    /* Released: the queue opens, its message intact. */
    rb = ring_buffer_open(name);
    REQUIRE(rb);
    uint64_t n = 0;
    CHECK_EQ(ring_buffer_msg_count_checked(rb, &n), RB_OK);
    CHECK_EQ(n, 1);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    watchdog_off();
}

static void test_foreign_object_refused_at_once(void) {
    if (geteuid() != 0) {
        /* Planting an object owned by another user takes root (chown). */
        printf("  not root: the foreign-owner case needs chown and is not run here\n");
        return;
    }
    watchdog(valgrind_scaled(10), "open of an exclusively locked foreign queue");
    const char *name = test_name("opfor");
    ring_buffer_t *rb = ring_buffer_create_ex(name, 4096, 0666, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb);
    ring_buffer_close(rb);
    char path[160];
    shm_path(path, sizeof path, name);
    REQUIRE(chown(path, 65534, 65534) == 0);
    REQUIRE(chmod(path, 0666) == 0);
    pid_t holder = hold_exclusive(name);
    EXPECT_NULL(ring_buffer_open(name), RB_ERR_PERMISSION);
    EXPECT_NULL(ring_buffer_create(name, 4096), RB_ERR_PERMISSION);
    EXPECT_NULL(ring_buffer_open_ex(name, 0), RB_ERR_PERMISSION);
    /* Asked to open foreign queues, it waits (bounded) like for ours. */
    EXPECT_NULL(ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER), RB_ERR_TIMEOUT);
    release(holder);
    rb = ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER);
    CHECK(rb != NULL);
    if (rb) ring_buffer_close(rb);
    ring_buffer_destroy(name);
    watchdog_off();
}

int main(void) {
    rbt_init();
    test_own_object_bounded_wait();
    test_foreign_object_refused_at_once();
    return rbt_finish("test_open_locked");
}
