/* Hostile handles and calls. Handles: NULL, closed, closed twice, closed
 * while another thread is inside a call, used after another process
 * destroyed the queue (still works), and pointers the library never handed
 * out (stack, heap copies of a real queue, made-up addresses, addresses
 * inside a real mapping): every call answers RB_ERR_INVALID_ARG (or its
 * legacy failure value with that last error) without dereferencing them.
 * Calls: zero and oversized lengths (refused without touching the caller's
 * buffer), capacities too small, NULL out-parameters, negative timeouts
 * (wait for ever) and huge ones (must not overflow into "expired"). A
 * healthy neighbour queue keeps working after each case. */
#include "hostile_util.h"

#include <pthread.h>
#include <stdatomic.h>

/* ----------------------------------------------------------- handles */

/* Every call taking a handle must refuse `h` with RB_ERR_INVALID_ARG,
 * without waiting and without writing to any out-parameter. */
static void refuse_handle(ring_buffer_t *h, const char *what) {
    int failures = rbt_failures;
    char buf[64];
    uint32_t len = 4242, lens[2] = {4242, 4242};
    const void *datas[1] = {"x"};
    uint32_t dlens[1] = {1};
    watchdog(20, what); /* a call that waits on a bogus handle ends it here */

    CHECK_EQ(ring_buffer_put_msg(h, "x", 1, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_msg(h, "x", 1, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_msg(h, buf, sizeof buf, &len, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_msg(h, buf, sizeof buf, &len, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    CHECK_EQ(len, 4242);
    CHECK_EQ(ring_buffer_put_many(h, datas, dlens, 1, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_packed(h, "x", dlens, 1, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_many(h, buf, sizeof buf, lens, 2, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    CHECK_EQ(lens[0], 4242);
    CHECK_EQ(ring_buffer_shutdown(h), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_is_shutdown(h), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_attached_processes(h), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_task_done(h), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_join(h, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_join(h, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_wait_readable(h, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_wait_writable(h, 1, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_msg_count(h), 0, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_unfinished_tasks(h), 0, RB_ERR_INVALID_ARG);

    /* Legacy calls: their failure values, and the reason as last error. */
    EXPECT_FAIL(ring_buffer_write(h, "abcd", 4), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read(h, buf, 4), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_peek(h, buf, 4), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_available_read(h), 0, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_available_write(h), 0, RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(CHECK(ring_buffer_is_empty(h)), RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(CHECK(ring_buffer_is_full(h)), RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(CHECK(ring_buffer_get_ref(h) == NULL), RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_inc_ref(h), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_dec_ref(h), -1, RB_ERR_INVALID_ARG);
    ring_buffer_stats_t st;
    memset(&st, 0x5c, sizeof st);
    EXPECT_LAST_ERROR(ring_buffer_get_stats(h, &st), RB_ERR_INVALID_ARG);
    CHECK_EQ(st.buffer_size, 0x5c5c5c5c);
    ring_buffer_stats_ex_t sx;
    memset(&sx, 0x5c, sizeof sx);
    EXPECT_LAST_ERROR(ring_buffer_get_stats_ex(h, &sx), RB_ERR_INVALID_ARG);
    CHECK_EQ(sx.version, 0x5c5c5c5c);
    EXPECT_LAST_ERROR(ring_buffer_reset_stats(h), RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write_batch(h, datas, dlens, 1), -1, RB_ERR_INVALID_ARG);
    void *chunks[2] = {NULL, NULL};
    EXPECT_FAIL(ring_buffer_read_batch(h, chunks, lens, 2), -1, RB_ERR_INVALID_ARG);
    CHECK(chunks[0] == NULL);
    EXPECT_LAST_ERROR(ring_buffer_close(h), RB_ERR_INVALID_ARG);
    watchdog_off();
    if (rbt_failures != failures) fprintf(stderr, "  ^ with the handle: %s\n", what);
    NEIGHBOUR_OK(what);
}

/* One message through `rb`. */
static bool roundtrip(ring_buffer_t *rb, const char *msg) {
    char buf[128];
    uint32_t len = 0, n = (uint32_t)strlen(msg);
    return ring_buffer_put_msg(rb, msg, n, RB_NO_WAIT) == RB_OK &&
           ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT) == RB_OK && len == n &&
           memcmp(buf, msg, n) == 0;
}

static void test_null_closed_double_closed(void) {
    refuse_handle(NULL, "NULL");

    const char *name = test_name("closed");
    ring_buffer_t *a = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    ring_buffer_t *b = ring_buffer_open(name);
    REQUIRE(a && b && a != b);
    CHECK(roundtrip(a, "before close"));
    ring_buffer_close(a);
    refuse_handle(a, "closed");
    /* refuse_handle closed it a second time; once more for good measure. */
    EXPECT_LAST_ERROR(ring_buffer_close(a), RB_ERR_INVALID_ARG);
    refuse_handle(a, "closed twice");
    /* Another handle on the same queue is not affected by any of that. */
    CHECK(roundtrip(b, "the other handle"));
    CHECK_EQ(ring_buffer_attached_processes(b), 1);
    ring_buffer_close(b);
    ring_buffer_destroy(name);
}

/* Not handles at all: the registry must answer without dereferencing. A
 * faithful copy of a live queue (on the stack or on the heap) is not a
 * handle either, and must be left untouched. */
static void test_made_up_pointers(void) {
    const char *name = test_name("real");
    ring_buffer_t *real = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(real);
    REQUIRE(ring_buffer_put_msg(real, "queued", 6, 0) == RB_OK);
    size_t size = (size_t)v2_object_size(1024);

    ring_buffer_t local;
    memcpy(&local, real, sizeof local);
    ring_buffer_t pristine_local = local;
    refuse_handle(&local, "the address of a local copy of a live header");
    CHECK(memcmp(&local, &pristine_local, sizeof local) == 0);

    unsigned char *heap = malloc(size), *pristine = malloc(size);
    REQUIRE(heap && pristine);
    memcpy(heap, real, size);
    memcpy(pristine, heap, size);
    refuse_handle((ring_buffer_t *)heap, "malloc'ed copy of a live queue object");
    CHECK(memcmp(heap, pristine, size) == 0);
    free(heap);
    free(pristine);

    int word = 0;
    refuse_handle((ring_buffer_t *)&word, "the address of an int");
    refuse_handle((ring_buffer_t *)0x1000, "(ring_buffer_t *)0x1000");
    refuse_handle((ring_buffer_t *)(uintptr_t)0xdeadbeef, "(ring_buffer_t *)0xdeadbeef");
    refuse_handle((ring_buffer_t *)(uintptr_t)-8, "(ring_buffer_t *)-8");
    refuse_handle((ring_buffer_t *)(uintptr_t)1, "(ring_buffer_t *)1");
    refuse_handle((ring_buffer_t *)((char *)real + 8), "8 bytes into a live mapping");
    refuse_handle((ring_buffer_t *)((char *)real + 200), "the data area of a live mapping");
    refuse_handle((ring_buffer_t *)((char *)real - 4096), "the page before a live mapping");
    refuse_handle((ring_buffer_t *)(void *)refuse_handle, "a function's address");

    /* The real handle survived all of it, message included. */
    char buf[16];
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg(real, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 6 && memcmp(buf, "queued", 6) == 0);
    ring_buffer_close(real);
    ring_buffer_destroy(name);
}

/* A thread blocked in get_msg while another thread closes the handle: the
 * call in progress finishes normally (the mapping stays until it returns),
 * later calls see a closed handle. */
struct closer_arg {
    ring_buffer_t *rb;
    int rc;
    uint32_t len;
    char buf[32];
    atomic_int started;
};

static void *blocked_getter(void *p) {
    struct closer_arg *a = p;
    atomic_store(&a->started, 1);
    a->rc = ring_buffer_get_msg(a->rb, a->buf, sizeof a->buf, &a->len, RB_WAIT_FOREVER);
    return NULL;
}

static void test_close_during_call(void) {
    const char *name = test_name("closing");
    ring_buffer_t *a = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    ring_buffer_t *b = ring_buffer_open(name);
    REQUIRE(a && b);
    struct closer_arg arg = {.rb = a, .rc = 999};
    pthread_t t;
    watchdog(20, "get_msg(wait forever) in one thread, handle closed by another, then a put "
                 "through a second handle");
    REQUIRE(pthread_create(&t, NULL, blocked_getter, &arg) == 0);
    while (!atomic_load(&arg.started)) usleep(1000);
    usleep(100000); /* let it go to sleep inside the library */
    ring_buffer_close(a);
    CHECK_EQ(ring_buffer_put_msg(a, "x", 1, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_msg(b, "wake up", 7, RB_NO_WAIT), RB_OK);
    pthread_join(t, NULL);
    watchdog_off();
    CHECK_EQ(arg.rc, RB_OK);
    CHECK(arg.len == 7 && memcmp(arg.buf, "wake up", 7) == 0);
    refuse_handle(a, "closed while another thread was inside get_msg");
    ring_buffer_close(b);
    ring_buffer_destroy(name);
}

static int destroy_child(void *name) {
    ring_buffer_destroy(name);
    return object_exists(name) ? 1 : 0;
}

static int put_child(void *rb) {
    return ring_buffer_put_msg(rb, "from a child", 12, RB_NO_WAIT) == RB_OK ? 0 : 1;
}

/* Another process unlinks the queue: handles open before keep working, in
 * this process and in children that inherited them; the name is free for
 * a new, unrelated queue. */
static void test_use_after_destroy(void) {
    const char *name = test_name("destroyed");
    ring_buffer_t *rb = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb);
    CHECK_EQ(ring_buffer_put_msg(rb, "before", 6, RB_NO_WAIT), RB_OK);
    CHECK_EQ(run_child(destroy_child, (void *)name, 10), 0);
    CHECK(!object_exists(name));

    char buf[32];
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 6 && memcmp(buf, "before", 6) == 0);
    CHECK(roundtrip(rb, "after destroy"));
    CHECK_EQ(run_child(put_child, rb, 10), 0);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 12 && memcmp(buf, "from a child", 12) == 0);
    CHECK_EQ(ring_buffer_attached_processes(rb), 1);
    ring_buffer_stats_ex_t sx;
    memset(&sx, 0, sizeof sx);
    ring_buffer_get_stats_ex(rb, &sx);
    CHECK_EQ(sx.buffer_size, 1024);

    EXPECT_NULL(ring_buffer_open(name), RB_ERR_NOT_FOUND);
    CHECK_EQ(ring_buffer_remove_if_unused(name), RB_ERR_NOT_FOUND);
    EXPECT_LAST_ERROR(ring_buffer_destroy(name), RB_ERR_NOT_FOUND);
    /* dec_ref to zero must not remove a newer queue that took the name. */
    ring_buffer_t *fresh = ring_buffer_create_ex(name, 2048, 0, RB_CREATE_EXCLUSIVE);
    CHECK(fresh != NULL);
    if (fresh) {
        CHECK_EQ(ring_buffer_put_msg(rb, "old queue", 9, RB_NO_WAIT), RB_OK);
        CHECK_EQ(ring_buffer_msg_count(fresh), 0);
        CHECK_EQ(ring_buffer_msg_count(rb), 1);
        CHECK_EQ(ring_buffer_dec_ref(rb), 0);
        CHECK(object_exists(name));
        CHECK(roundtrip(fresh, "the new queue"));
        ring_buffer_close(fresh);
    }
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    NEIGHBOUR_OK("use after destroy by another process");
}

static void test_hostile_refs(void) {
    ring_buffer_ref_t ref;
    EXPECT_NULL(ring_buffer_from_ref(NULL), RB_ERR_INVALID_ARG);
    memset(&ref, 'x', sizeof ref); /* name without a NUL */
    EXPECT_NULL(ring_buffer_from_ref(&ref), RB_ERR_INVALID_NAME);
    memset(&ref, 0, sizeof ref);
    EXPECT_NULL(ring_buffer_from_ref(&ref), RB_ERR_INVALID_NAME);
    strcpy(ref.name, "../etc/x");
    EXPECT_NULL(ring_buffer_from_ref(&ref), RB_ERR_INVALID_NAME);
    snprintf(ref.name, sizeof ref.name, "%s", test_name("noref"));
    EXPECT_NULL(ring_buffer_from_ref(&ref), RB_ERR_NOT_FOUND);
    ring_buffer_release_ref(NULL);
    NEIGHBOUR_OK("hostile refs");
}

/* ------------------------------------------------------------- calls */

static ring_buffer_t *calls_q;

static void drain(ring_buffer_t *rb) {
    char buf[2048];
    uint32_t len;
    while (ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT) == RB_OK) {
    }
    while (ring_buffer_read(rb, buf, 1) == 1) {
    }
}

static void test_zero_lengths(void) {
    ring_buffer_t *rb = calls_q;
    char buf[8];
    uint32_t len = 99;
    /* An empty message is a message. */
    CHECK_EQ(ring_buffer_put_msg(rb, NULL, 0, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, "ignored", 0, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_msg_count(rb), 2);
    CHECK_EQ(ring_buffer_get_msg(rb, NULL, 0, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, 0);
    len = 99;
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, 0);
    /* NULL data with a length is refused. */
    CHECK_EQ(ring_buffer_put_msg(rb, NULL, 5, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    /* Legacy raw calls: 0 bytes is an argument error. */
    EXPECT_FAIL(ring_buffer_write(rb, "abc", 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write(rb, NULL, 3), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read(rb, buf, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_peek(rb, buf, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read(rb, NULL, 3), -1, RB_ERR_INVALID_ARG);
    const void *zp[2] = {"a", "b"};
    uint32_t zl[2] = {0, 0};
    EXPECT_FAIL(ring_buffer_write_batch(rb, zp, zl, 2), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write_batch(rb, zp, zl, 0), -1, RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_available_read(rb), 0);
    NEIGHBOUR_OK("zero lengths");
}

static void test_oversized_lengths(void) {
    ring_buffer_t *rb = calls_q; /* 1024 bytes: one byte stays free, 4 are the prefix */
    static char big[2048];
    memset(big, 'b', sizeof big);
    char *small = malloc(16); /* oversized lengths must be refused before a read */
    REQUIRE(small);
    memset(small, 's', 16);
    char buf[2048];
    uint32_t len = 0;

    /* Lengths beyond the ring are messages that go out of line (issue 14):
     * the caller's buffer must be readable for `len` bytes, as for any put
     * (a length beyond it is the caller's bug, which no C API can detect). */
    CHECK_EQ(ring_buffer_put_msg(rb, big, 1020, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, big, 2048, 1000000), RB_OK);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, 1019, &len, RB_NO_WAIT), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, 1020);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, 1020);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 2048 && memcmp(buf, big, 2048) == 0);
    CHECK_EQ(ring_buffer_put_msg(rb, big, 1019, RB_NO_WAIT), RB_OK); /* the largest inline */
    CHECK_EQ(ring_buffer_get_msg(rb, buf, 1019, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, 1019);

    const void *datas[3] = {"abc", big, "xyz"};
    uint32_t lens[3] = {3, 1500, 3};
    CHECK_EQ(ring_buffer_put_many(rb, datas, lens, 3, RB_NO_WAIT), 1); /* stops before the large one */
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 3 && memcmp(buf, "abc", 3) == 0);
    const void *sdatas[2] = {small, small};
    uint32_t slens[2] = {0xFFFFFFFFu, 0xFFFFFFFFu};
    /* Packed lengths whose sum overflows 32 bits: refused before a read. */
    uint32_t plens[2] = {0xFFFFFFFFu, 2};
    CHECK_EQ(ring_buffer_put_packed(rb, small, plens, 2, RB_NO_WAIT), RB_ERR_TOO_LARGE);
    CHECK_EQ(ring_buffer_msg_count(rb), 0); /* nothing of a refused batch went in */

    /* Legacy raw calls. */
    EXPECT_FAIL(ring_buffer_write(rb, small, 0xFFFFFFFFu), -1, RB_ERR_TOO_LARGE);
    EXPECT_FAIL(ring_buffer_write(rb, big, 1024), -1, RB_ERR_TOO_LARGE);
    EXPECT_FAIL(ring_buffer_write_batch(rb, sdatas, slens, 2), -1, RB_ERR_TOO_LARGE);
    /* A whole frame written raw (prefix 1019, then 1019 bytes) fills the
     * ring exactly and keeps the stream framed, so message counts stay
     * exact for the rest of the program. */
    uint32_t prefix = 1019;
    memcpy(big, &prefix, 4);
    CHECK_EQ(ring_buffer_write(rb, big, 1023), 1023);
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    EXPECT_FAIL(ring_buffer_write(rb, "x", 1), -1, RB_ERR_FULL);
    CHECK(ring_buffer_is_full(rb));
    EXPECT_FAIL(ring_buffer_read(rb, buf, 1024), -1, RB_ERR_EMPTY);
    EXPECT_FAIL(ring_buffer_read(rb, small, 0xFFFFFFFFu), -1, RB_ERR_EMPTY);
    EXPECT_FAIL(ring_buffer_peek(rb, small, 0xFFFFFFFFu), -1, RB_ERR_EMPTY);
    for (int i = 0; i < 16; i++) CHECK_EQ(small[i], 's'); /* not written */
    CHECK_EQ(ring_buffer_read(rb, buf, 1023), 1023);
    CHECK(memcmp(buf, big, 1023) == 0);
    free(small);
    drain(rb);
    NEIGHBOUR_OK("oversized lengths");
}

static void test_small_capacities(void) {
    ring_buffer_t *rb = calls_q;
    const char msg[] = "eleven byte"; /* 11 bytes without the NUL */
    uint32_t len = 0, lens[4] = {0};
    CHECK_EQ(ring_buffer_put_msg(rb, msg, 11, RB_NO_WAIT), RB_OK);

    /* Exactly 5 bytes on the heap: a copy past them is caught by ASan. */
    char *five = malloc(5);
    REQUIRE(five);
    memset(five, '-', 5);
    CHECK_EQ(ring_buffer_get_msg(rb, five, 5, &len, RB_NO_WAIT), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, 11);
    CHECK(memcmp(five, "-----", 5) == 0);
    len = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, NULL, 0, &len, RB_NO_WAIT), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, 11);
    len = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, five, 5, &len, RB_WAIT_FOREVER), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, 11);
    CHECK_EQ(ring_buffer_get_many(rb, five, 5, lens, 4, RB_NO_WAIT), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(lens[0], 11);
    CHECK_EQ(ring_buffer_msg_count(rb), 1); /* nothing consumed */
    free(five);

    char *exact = malloc(11);
    REQUIRE(exact);
    CHECK_EQ(ring_buffer_get_msg(rb, exact, 11, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 11 && memcmp(exact, msg, 11) == 0);
    free(exact);

    /* get_many stops before the message that would overflow. */
    CHECK_EQ(ring_buffer_put_msg(rb, "aaaa", 4, 0), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, "bbbb", 4, 0), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, "cccc", 4, 0), RB_OK);
    char *ten = malloc(10);
    REQUIRE(ten);
    CHECK_EQ(ring_buffer_get_many(rb, ten, 10, lens, 4, RB_NO_WAIT), 2);
    CHECK(lens[0] == 4 && lens[1] == 4 && memcmp(ten, "aaaabbbb", 8) == 0);
    CHECK_EQ(ring_buffer_get_many(rb, ten, 10, lens, 1, RB_NO_WAIT), 1);
    CHECK(lens[0] == 4 && memcmp(ten, "cccc", 4) == 0);
    free(ten);
    NEIGHBOUR_OK("capacities too small");
}

static void test_null_out_parameters(void) {
    ring_buffer_t *rb = calls_q;
    char buf[16];
    uint32_t len = 0, lens[2];
    CHECK_EQ(ring_buffer_put_msg(rb, "kept", 4, RB_NO_WAIT), RB_OK);

    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, NULL, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_msg(rb, NULL, 16, &len, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, NULL, RB_WAIT_FOREVER), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_many(rb, buf, sizeof buf, NULL, 2, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_many(rb, NULL, 16, lens, 2, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_get_many(rb, buf, sizeof buf, lens, 0, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    const void *datas[2] = {"a", NULL};
    uint32_t dl[2] = {1, 1};
    CHECK_EQ(ring_buffer_put_many(rb, NULL, dl, 1, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_many(rb, datas, NULL, 1, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_many(rb, datas, dl, 0, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_many(rb, datas, dl, 2, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_packed(rb, NULL, dl, 2, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_put_packed(rb, "ab", NULL, 2, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(ring_buffer_get_stats(rb, NULL), RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(ring_buffer_get_stats_ex(rb, NULL), RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write_batch(rb, NULL, dl, 1), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write_batch(rb, datas, NULL, 1), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write_batch(rb, datas, dl, 2), -1, RB_ERR_INVALID_ARG);
    void *chunks[2];
    EXPECT_FAIL(ring_buffer_read_batch(rb, NULL, lens, 2), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read_batch(rb, chunks, NULL, 2), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read_batch(rb, chunks, lens, 0), -1, RB_ERR_INVALID_ARG);
    /* None of it consumed or added anything. */
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 4 && memcmp(buf, "kept", 4) == 0);
    CHECK_EQ(ring_buffer_available_read(rb), 0);
    NEIGHBOUR_OK("NULL out-parameters");
}

/* A helper thread acting on the queue after a delay. */
struct later {
    ring_buffer_t *rb;
    int action; /* 0: put a message, 1: get a message, 2: task_done, 3: shutdown */
    int rc;
};

static void *act_later(void *p) {
    struct later *l = p;
    usleep(300000);
    char buf[2048];
    uint32_t len;
    switch (l->action) {
    case 0: l->rc = ring_buffer_put_msg(l->rb, "late", 4, RB_NO_WAIT); break;
    case 1: l->rc = ring_buffer_get_msg(l->rb, buf, sizeof buf, &len, RB_NO_WAIT); break;
    case 2: l->rc = ring_buffer_task_done(l->rb); break;
    default: l->rc = ring_buffer_shutdown(l->rb); break;
    }
    return NULL;
}

static void start_later(pthread_t *t, struct later *l, ring_buffer_t *rb, int action) {
    l->rb = rb;
    l->action = action;
    l->rc = 999;
    REQUIRE(pthread_create(t, NULL, act_later, l) == 0);
}

static void test_timeouts(void) {
    ring_buffer_t *rb = calls_q;
    char buf[2048];
    uint32_t len = 0, lens[4];
    pthread_t t;
    struct later l;
    watchdog(30, "negative timeouts with a message queued");

    /* Earlier cases consumed messages without task_done: close those tasks
     * so that the counts below are this case's own. */
    while (ring_buffer_unfinished_tasks(rb) > 0 && ring_buffer_task_done(rb) == RB_OK) {
    }
    CHECK_EQ(ring_buffer_unfinished_tasks(rb), 0);

    /* Negative: wait for ever, which with a message queued means not at all. */
    int64_t negative[] = {-1, -2, -1000000000, INT64_MIN};
    for (size_t i = 0; i < sizeof negative / sizeof *negative; i++) {
        CHECK_EQ(ring_buffer_put_msg(rb, "neg", 3, negative[i]), RB_OK);
        CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, negative[i]), RB_OK);
        CHECK_EQ(len, 3);
        CHECK_EQ(ring_buffer_put_msg(rb, "neg", 3, negative[i]), RB_OK);
        CHECK_EQ(ring_buffer_get_many(rb, buf, sizeof buf, lens, 4, negative[i]), 1);
    }
    /* Messages were consumed without task_done, so join with a negative
     * timeout would wait for ever: mark them done first. */
    CHECK_EQ(ring_buffer_unfinished_tasks(rb), 8);
    for (int k = 0; k < 8; k++) CHECK_EQ(ring_buffer_task_done(rb), RB_OK);
    CHECK_EQ(ring_buffer_join(rb, RB_WAIT_FOREVER), RB_OK);
    CHECK_EQ(ring_buffer_join(rb, INT64_MIN), RB_OK);

    /* Huge: the deadline is centuries away, never "already expired". */
    int64_t huge[] = {INT64_MAX, INT64_MAX - 1, 1000000000000000000ll, (int64_t)1 << 62};
    for (size_t i = 0; i < sizeof huge / sizeof *huge; i++) {
        CHECK_EQ(ring_buffer_put_msg(rb, "huge", 4, huge[i]), RB_OK);
        CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, huge[i]), RB_OK);
        CHECK_EQ(ring_buffer_task_done(rb), RB_OK);
        CHECK_EQ(ring_buffer_join(rb, huge[i]), RB_OK);
    }
    /* ... and waits until the event instead of failing at once. */
    watchdog(30, "get_msg(INT64_MAX) on an empty queue, put 0.3 s later by another thread");
    double t0 = now_s();
    start_later(&t, &l, rb, 0);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, INT64_MAX), RB_OK);
    CHECK(len == 4 && memcmp(buf, "late", 4) == 0);
    CHECK(now_s() - t0 >= 0.25);
    pthread_join(t, NULL);
    CHECK_EQ(l.rc, RB_OK);

    watchdog(30, "get_many(INT64_MAX) on an empty queue, put 0.3 s later by another thread");
    t0 = now_s();
    start_later(&t, &l, rb, 0);
    CHECK_EQ(ring_buffer_get_many(rb, buf, sizeof buf, lens, 4, INT64_MAX), 1);
    CHECK(now_s() - t0 >= 0.25);
    pthread_join(t, NULL);

    /* put_msg(INT64_MAX) on a full queue waits for a consumer. */
    static char fill[1019];
    memset(fill, 'f', sizeof fill);
    CHECK_EQ(ring_buffer_put_msg(rb, fill, sizeof fill, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, RB_NO_WAIT), RB_ERR_FULL);
    watchdog(30, "put_msg(INT64_MAX) on a full queue, drained 0.3 s later by another thread");
    t0 = now_s();
    start_later(&t, &l, rb, 1);
    CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, INT64_MAX), RB_OK);
    CHECK(now_s() - t0 >= 0.25);
    pthread_join(t, NULL);
    CHECK_EQ(l.rc, RB_OK);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, 1);

    /* join(INT64_MAX) waits for the last task_done. */
    /* Four messages since the last join: three done now, the last later. */
    CHECK_EQ(ring_buffer_unfinished_tasks(rb), 4);
    for (int k = 0; k < 3; k++) CHECK_EQ(ring_buffer_task_done(rb), RB_OK);
    CHECK_EQ(ring_buffer_unfinished_tasks(rb), 1);
    watchdog(30, "join(INT64_MAX), last task_done 0.3 s later by another thread");
    t0 = now_s();
    start_later(&t, &l, rb, 2);
    CHECK_EQ(ring_buffer_join(rb, INT64_MAX), RB_OK);
    CHECK(now_s() - t0 >= 0.25);
    pthread_join(t, NULL);
    CHECK_EQ(l.rc, RB_OK);

    /* A short positive timeout still expires (after at least its length). */
    watchdog(30, "get_msg with a 0.1 s timeout on an empty queue");
    t0 = now_s();
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, 100000000), RB_ERR_TIMEOUT);
    CHECK(now_s() - t0 >= 0.09);
    CHECK_EQ(ring_buffer_join(rb, 1), RB_OK);
    watchdog_off();
    NEIGHBOUR_OK("negative and huge timeouts");
}

/* A consumer waiting with INT64_MAX is released by a shutdown: the wait
 * ends with RB_ERR_SHUTDOWN instead of lasting centuries. */
static void test_huge_timeout_shutdown(void) {
    const char *name = test_name("shut");
    ring_buffer_t *rb = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb);
    pthread_t t;
    struct later l;
    char buf[16];
    uint32_t len;
    watchdog(30, "get_msg(INT64_MAX) ended by a shutdown 0.3 s later in another thread");
    start_later(&t, &l, rb, 3);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, INT64_MAX), RB_ERR_SHUTDOWN);
    pthread_join(t, NULL);
    CHECK_EQ(l.rc, RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, INT64_MAX), RB_ERR_SHUTDOWN);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_WAIT_FOREVER), RB_ERR_SHUTDOWN);
    watchdog_off();
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    NEIGHBOUR_OK("a huge timeout ended by shutdown");
}

int main(void) {
    rbt_init();
    double t0 = now_s();
    neighbour_open();
    test_null_closed_double_closed();
    test_made_up_pointers();
    test_close_during_call();
    test_use_after_destroy();
    test_hostile_refs();

    const char *name = test_name("calls");
    calls_q = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(calls_q);
    test_zero_lengths();
    test_oversized_lengths();
    test_small_capacities();
    test_null_out_parameters();
    test_timeouts();
    test_huge_timeout_shutdown();
    ring_buffer_close(calls_q);
    ring_buffer_destroy(name);

    ring_buffer_close(rbt_neighbour);
    printf("test_hostile_handles_calls: %.1f s\n", now_s() - t0);
    return rbt_finish("test_hostile_handles_calls");
}
