/* ring_buffer_wait_readable / ring_buffer_wait_writable: waits that consume
 * and reserve nothing. Every status code (bad handles, a length that can
 * never fit, timeouts with lower bounds only since the machine is shared,
 * shutdown), readiness seen without taking anything, and waiters in several
 * forked processes woken by another process's put or get and by shutdown.
 * Legacy (version 1) objects are covered in test_legacy_api.c. */
#include "check.h"

#include <time.h>

/* Waits until `n` processes sleep in the kernel on the consumer (or, with
 * `producers`, producer) side, as the statistics report; false if they
 * never do. */
static bool sleepers(ring_buffer_t *rb, uint32_t n, bool producers) {
    for (int i = 0; i < (under_valgrind() ? 3000 : 1000); i++) {
        ring_buffer_stats_ex_t ex;
        ring_buffer_get_stats_ex(rb, &ex);
        if ((producers ? ex.sleeping_producers : ex.sleeping_consumers) >= n) return true;
        sleep_ms(10);
    }
    return false;
}

/* Children that each wait (readable, or writable for `len` bytes) with no
 * timeout and exit 0 if the wait returned `expect`; 10 + code otherwise. */
static void spawn_waiters(const char *name, pid_t *pids, int n, bool writable, uint32_t len, int expect) {
    for (int i = 0; i < n; i++) {
        pids[i] = fork_child(valgrind_scaled(60));
        if (pids[i] == 0) {
            ring_buffer_t *c = ring_buffer_open(name);
            if (!c) _exit(2);
            int rc = writable ? ring_buffer_wait_writable(c, len, RB_WAIT_FOREVER)
                              : ring_buffer_wait_readable(c, RB_WAIT_FOREVER);
            _exit(rc == expect ? 0 : 10 - rc);
        }
    }
}

/* ------------------------------------------------------------ arguments */

static void test_bad_arguments(void) {
    stage = "bad handles and lengths";
    EXPECT_CODE(ring_buffer_wait_readable(NULL, 0), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_wait_writable(NULL, 1, 0), RB_ERR_INVALID_ARG);
    int local = 0;
    ring_buffer_t *made_up = (ring_buffer_t *)&local;
    EXPECT_CODE(ring_buffer_wait_readable(made_up, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_wait_writable(made_up, 1, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);

    ring_buffer_t *rb = fresh("wait_args", 1024);
    /* The ring holds 1023 bytes: a 1019-byte message (plus its 4-byte
     * prefix) is the largest that fits inside; longer ones go out of line
     * (issue 14) and need room for their descriptor frame only. */
    CHECK_EQ(ring_buffer_wait_writable(rb, 1019, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_wait_writable(rb, 1020, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_wait_writable(rb, UINT32_MAX, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, RB_NO_WAIT), RB_OK);
    static char fill[1014];
    CHECK_EQ(ring_buffer_put_msg(rb, fill, sizeof fill, RB_NO_WAIT), RB_OK); /* 0 bytes free */
    EXPECT_CODE(ring_buffer_wait_writable(rb, 1020, RB_NO_WAIT), RB_ERR_TIMEOUT);
    char drain[1100];
    uint32_t got = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, drain, sizeof drain, &got, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_get_msg(rb, drain, sizeof drain, &got, RB_NO_WAIT), RB_OK);
    char name[MAX_NAME_LEN];
    memcpy(name, rb->name, sizeof name);
    ring_buffer_close(rb);
    EXPECT_CODE(ring_buffer_wait_readable(rb, 0), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_wait_writable(rb, 1, 0), RB_ERR_INVALID_ARG);
    ring_buffer_destroy(name);
}

/* ------------------------------------------------------------ one process */

static void test_readiness_without_consuming(void) {
    stage = "readiness in one process";
    ring_buffer_t *rb = fresh("wait_one", 1024);
    unsigned char buf[1024];
    memset(buf, 0x5a, sizeof buf);
    uint32_t len = 0;

    /* Empty: timeout 0 answers at once, a bounded wait waits it out. */
    EXPECT_CODE(ring_buffer_wait_readable(rb, RB_NO_WAIT), RB_ERR_TIMEOUT);
    int64_t t0 = now_ns();
    EXPECT_CODE(ring_buffer_wait_readable(rb, 150000000LL), RB_ERR_TIMEOUT);
    CHECK(now_ns() - t0 >= 150000000LL);
    ring_buffer_stats_ex_t ex;
    ring_buffer_get_stats_ex(rb, &ex);
    CHECK(ex.consumer_waits >= 1); /* it slept on the consumers' futex */
    CHECK_EQ(ex.sleeping_consumers, 0);

    /* A queued message: readable, again and again, and still queued. */
    CHECK_EQ(ring_buffer_put_msg(rb, "hello", 5, RB_NO_WAIT), RB_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(ring_buffer_wait_readable(rb, RB_NO_WAIT), RB_OK);
        CHECK_EQ(ring_buffer_wait_readable(rb, RB_WAIT_FOREVER), RB_OK);
        CHECK_EQ(ring_buffer_wait_readable(rb, 1000000LL), RB_OK);
    }
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    ring_buffer_get_stats_ex(rb, &ex);
    CHECK_EQ(ex.messages_out, 0);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0);
    EXPECT_CODE(ring_buffer_wait_readable(rb, RB_NO_WAIT), RB_ERR_TIMEOUT);

    /* Writable is about this length now: 1000 bytes queued leave 23. */
    CHECK_EQ(ring_buffer_put_msg(rb, buf, 996, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_available_write(rb), 23);
    CHECK_EQ(ring_buffer_wait_writable(rb, 19, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_wait_writable(rb, 0, RB_WAIT_FOREVER), RB_OK);
    EXPECT_CODE(ring_buffer_wait_writable(rb, 20, RB_NO_WAIT), RB_ERR_TIMEOUT);
    t0 = now_ns();
    EXPECT_CODE(ring_buffer_wait_writable(rb, 100, 150000000LL), RB_ERR_TIMEOUT);
    CHECK(now_ns() - t0 >= 150000000LL);
    ring_buffer_get_stats_ex(rb, &ex);
    CHECK(ex.producer_waits >= 1);
    CHECK_EQ(ex.sleeping_producers, 0);
    /* Nothing was reserved: the room is all still there for a put. */
    CHECK_EQ(ring_buffer_available_write(rb), 23);
    CHECK_EQ(ring_buffer_put_msg(rb, buf, 19, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_msg_count(rb), 2);
    done(rb);
}

/* ------------------------------------------------------------ processes */

static void test_waiters_in_other_processes(void) {
    enum { N = 3 };
    pid_t pids[N];
    unsigned char buf[1024];
    memset(buf, 0x11, sizeof buf);
    uint32_t len = 0;

    /* Three processes wait for a message; one put in this process wakes
     * them all, and none of them takes it. */
    ring_buffer_t *rb = fresh("wait_read_procs", 1024);
    watchdog(valgrind_scaled(60), "wait_readable in 3 processes, woken by a put");
    spawn_waiters(rb->name, pids, N, false, 0, RB_OK);
    CHECK(sleepers(rb, N, false));
    CHECK_EQ(ring_buffer_put_msg(rb, "one", 3, RB_NO_WAIT), RB_OK);
    for (int i = 0; i < N; i++) CHECK_EQ(wait_child(pids[i]), 0);
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 3 && memcmp(buf, "one", 3) == 0);
    watchdog_off();
    done(rb);

    /* A put from another process wakes a waiter here. */
    rb = fresh("wait_read_remote", 1024);
    watchdog(valgrind_scaled(60), "wait_readable woken by another process's put");
    pid_t pid = fork_child(valgrind_scaled(60));
    if (pid == 0) {
        ring_buffer_t *c = ring_buffer_open(rb->name);
        if (!c || !sleepers(c, 1, false)) _exit(2);
        _exit(ring_buffer_put_msg(c, "remote", 6, RB_NO_WAIT) == RB_OK ? 0 : 1);
    }
    CHECK_EQ(ring_buffer_wait_readable(rb, RB_WAIT_FOREVER), RB_OK);
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    watchdog_off();
    done(rb);

    /* Three processes wait for room on a full ring; a get here wakes them
     * all, and none of them reserves it: the room is still there. */
    rb = fresh("wait_write_procs", 1024);
    CHECK_EQ(ring_buffer_put_msg(rb, buf, 1000, RB_NO_WAIT), RB_OK);
    watchdog(valgrind_scaled(60), "wait_writable in 3 processes, woken by a get");
    spawn_waiters(rb->name, pids, N, true, 500, RB_OK);
    CHECK(sleepers(rb, N, true));
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    for (int i = 0; i < N; i++) CHECK_EQ(wait_child(pids[i]), 0);
    CHECK_EQ(ring_buffer_available_write(rb), 1023);
    CHECK_EQ(ring_buffer_put_msg(rb, buf, 1019, RB_NO_WAIT), RB_OK);
    watchdog_off();
    done(rb);

    /* A waiter for room stays asleep while what is freed is not enough. */
    rb = fresh("wait_write_len", 1024);
    CHECK_EQ(ring_buffer_put_msg(rb, buf, 400, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, buf, 400, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, buf, 100, RB_NO_WAIT), RB_OK); /* 111 bytes left */
    watchdog(valgrind_scaled(60), "wait_writable for more room than one get frees");
    spawn_waiters(rb->name, pids, 1, true, 700, RB_OK);
    CHECK(sleepers(rb, 1, true));
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK); /* 515 free */
    sleep_ms(100);
    CHECK_EQ(waitpid(pids[0], NULL, WNOHANG), 0); /* still waiting */
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK); /* 919 free */
    CHECK_EQ(wait_child(pids[0]), 0);
    watchdog_off();
    done(rb);

    /* A bounded wait in another process times out when nothing comes. */
    rb = fresh("wait_timeout_proc", 1024);
    watchdog(valgrind_scaled(60), "bounded wait_readable in another process");
    pid = fork_child(valgrind_scaled(60));
    if (pid == 0) {
        ring_buffer_t *c = ring_buffer_open(rb->name);
        if (!c) _exit(2);
        int64_t start = now_ns();
        int rc = ring_buffer_wait_readable(c, 200000000LL);
        _exit(rc == RB_ERR_TIMEOUT && now_ns() - start >= 200000000LL ? 0 : 1);
    }
    CHECK_EQ(wait_child(pid), 0);
    watchdog_off();
    done(rb);
}

/* ------------------------------------------------------------ shutdown */

static void test_shutdown(void) {
    enum { N = 2 };
    pid_t readers[N], writers[N];
    unsigned char buf[1024];
    memset(buf, 0x22, sizeof buf);
    uint32_t len = 0;

    /* Waiters of both kinds in other processes, asleep with no timeout,
     * wake with RB_ERR_SHUTDOWN. (Readers and writers on two queues: one
     * queue is never both empty and full.) */
    ring_buffer_t *empty = fresh("wait_shut_empty", 1024);
    ring_buffer_t *full = fresh("wait_shut_full", 1024);
    CHECK_EQ(ring_buffer_put_msg(full, buf, 1000, RB_NO_WAIT), RB_OK);
    watchdog(valgrind_scaled(60), "waiters of both kinds woken by shutdown");
    spawn_waiters(empty->name, readers, N, false, 0, RB_ERR_SHUTDOWN);
    spawn_waiters(full->name, writers, N, true, 100, RB_ERR_SHUTDOWN);
    CHECK(sleepers(empty, N, false));
    CHECK(sleepers(full, N, true));
    CHECK_EQ(ring_buffer_shutdown(empty), RB_OK);
    CHECK_EQ(ring_buffer_shutdown(full), RB_OK);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(wait_child(readers[i]), 0);
        CHECK_EQ(wait_child(writers[i]), 0);
    }
    watchdog_off();

    /* After shutdown: readable while anything is left to drain (a get
     * would succeed), then RB_ERR_SHUTDOWN at once; writable never. */
    watchdog(valgrind_scaled(20), "waits on a shut-down queue");
    CHECK_EQ(ring_buffer_wait_readable(full, RB_WAIT_FOREVER), RB_OK);
    EXPECT_CODE(ring_buffer_wait_writable(full, 1, RB_WAIT_FOREVER), RB_ERR_SHUTDOWN);
    EXPECT_CODE(ring_buffer_wait_writable(empty, 1, RB_NO_WAIT), RB_ERR_SHUTDOWN);
    CHECK_EQ(ring_buffer_get_msg(full, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    EXPECT_CODE(ring_buffer_wait_readable(full, RB_WAIT_FOREVER), RB_ERR_SHUTDOWN);
    EXPECT_CODE(ring_buffer_wait_readable(full, RB_NO_WAIT), RB_ERR_SHUTDOWN);
    EXPECT_CODE(ring_buffer_wait_readable(empty, 1000000000LL), RB_ERR_SHUTDOWN);
    watchdog_off();
    done(empty);
    done(full);
}

int main(void) {
    rbt_init();
    test_bad_arguments();
    test_readiness_without_consuming();
    test_waiters_in_other_processes();
    test_shutdown();
    return rbt_finish("test_wait");
}
