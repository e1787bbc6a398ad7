/* Every legacy function of docs/legacy-abi.md: its success path, its error paths
 * with the legacy return convention (-1 / NULL / 0 / true) AND the reason in
 * ring_buffer_last_error(), and the deliberate fixes of the legacy defects
 * (robust ref mutex, dec_ref to zero keeps the handle, mode 0600, strict
 * names, validated objects, legacy version-1 objects still usable).
 *
 * Every failing call goes through an EXPECT_* check of check.h, whose
 * prime_last_error() plants a different last error first, so a check of
 * ring_buffer_last_error() proves that this very call set it (the last error
 * is not cleared by successes). */
#include "check.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

/* ------------------------------------------------------------ helpers */

static void fill_pattern(unsigned char *buf, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(seed * 31u + i * 7u + (i >> 8));
}

/* ------------------------------------------------------------ names, sizes */

static void test_create_names_and_sizes(void) {
    stage = "create: names and sizes";
    EXPECT_NULL(ring_buffer_create(NULL, 1024), RB_ERR_INVALID_ARG);
    EXPECT_NULL(ring_buffer_create("", 1024), RB_ERR_INVALID_NAME);
    EXPECT_NULL(ring_buffer_create("a/b", 1024), RB_ERR_INVALID_NAME);
    EXPECT_NULL(ring_buffer_create("/lead", 1024), RB_ERR_INVALID_NAME);
    EXPECT_NULL(ring_buffer_create("..", 1024), RB_ERR_INVALID_NAME);
    EXPECT_NULL(ring_buffer_create("bad\nname", 1024), RB_ERR_INVALID_NAME);
    /* 64 bytes is one too many (name[64] keeps the NUL); far longer too. */
    const char *n64 = sized_name(64);
    EXPECT_NULL(ring_buffer_create(n64, 1024), RB_ERR_INVALID_NAME);
    CHECK(!object_exists(n64));
    const char *n100 = sized_name(100);
    EXPECT_NULL(ring_buffer_create(n100, 1024), RB_ERR_INVALID_NAME);
    /* 63 bytes is the longest valid name. */
    const char *n63 = sized_name(63);
    ring_buffer_t *rb = ring_buffer_create(n63, 1024);
    CHECK(rb != NULL);
    if (rb) {
        CHECK(strcmp(rb->name, n63) == 0);
        CHECK(object_exists(n63));
        ring_buffer_close(rb);
    }
    ring_buffer_destroy(n63);
    CHECK(!object_exists(n63));

    /* Above 2^31 the size cannot be rounded to a uint32_t power of two. */
    const char *big = test_name("big");
    EXPECT_NULL(ring_buffer_create(big, 2147483649u), RB_ERR_INVALID_ARG);
    EXPECT_NULL(ring_buffer_create(big, UINT32_MAX), RB_ERR_INVALID_ARG);
    CHECK(!object_exists(big));

    /* Legacy rounding: next power of two, at least 1024; 0 means 1024. */
    const struct { uint32_t ask, got; } sizes[] = {
        {0, 1024}, {1, 1024}, {1000, 1024}, {1024, 1024}, {1025, 2048}, {4096, 4096}, {5000, 8192},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const char *n = test_name("size");
        ring_buffer_t *q = ring_buffer_create(n, sizes[i].ask);
        CHECK(q != NULL);
        if (!q) continue;
        CHECK_EQ(q->buffer_size, sizes[i].got);
        ring_buffer_stats_t st;
        ring_buffer_get_stats(q, &st);
        CHECK_EQ(st.buffer_size, sizes[i].got);
        CHECK_EQ(ring_buffer_available_write(q), sizes[i].got - 1);
        ring_buffer_close(q);
        ring_buffer_destroy(n);
    }
}

/* ------------------------------------------------------------ create/open/close/destroy */

static void test_create_open_close_destroy(void) {
    stage = "create/open/close/destroy";
    const char *name = test_name("life");
    ring_buffer_t *rb = ring_buffer_create(name, 2048);
    REQUIRE(rb != NULL);
    CHECK_EQ(rb->ref_count, 1);
    CHECK_EQ(rb->process_count, 1);

    /* Successes leave the last error alone. */
    prime_last_error(RB_ERR_NOT_FOUND);
    int before = ring_buffer_last_error();
    CHECK_EQ(ring_buffer_write(rb, "x", 1), 1);
    char c;
    CHECK_EQ(ring_buffer_read(rb, &c, 1), 1);
    CHECK_EQ(ring_buffer_last_error(), before);

    /* create of an existing name opens it: size ignored, no new ref. */
    ring_buffer_t *again = ring_buffer_create(name, 65536);
    CHECK(again != NULL);
    if (again) {
        CHECK(again != rb);
        CHECK_EQ(again->buffer_size, 2048);
        CHECK_EQ(rb->process_count, 2);
        CHECK_EQ(rb->ref_count, 1);
        /* Same object: bytes written through one handle read through the other. */
        CHECK_EQ(ring_buffer_write(again, "hello", 5), 5);
        char buf[5];
        CHECK_EQ(ring_buffer_read(rb, buf, 5), 5);
        CHECK(memcmp(buf, "hello", 5) == 0);
        ring_buffer_close(again);
        CHECK_EQ(rb->process_count, 1);
    }

    ring_buffer_t *op = ring_buffer_open(name);
    CHECK(op != NULL);
    if (op) {
        CHECK_EQ(op->buffer_size, 2048);
        CHECK_EQ(rb->process_count, 2);
        ring_buffer_close(op);
    }
    CHECK_EQ(rb->process_count, 1);

    /* open: bad arguments and a missing object. */
    EXPECT_NULL(ring_buffer_open(NULL), RB_ERR_INVALID_ARG);
    EXPECT_NULL(ring_buffer_open(""), RB_ERR_INVALID_NAME);
    EXPECT_NULL(ring_buffer_open("x/y"), RB_ERR_INVALID_NAME);
    EXPECT_NULL(ring_buffer_open(sized_name(64)), RB_ERR_INVALID_NAME);
    const char *missing = test_name("missing");
    EXPECT_NULL(ring_buffer_open(missing), RB_ERR_NOT_FOUND);
    CHECK(!object_exists(missing));

    /* destroy: unlinks; the mapped handle keeps working. */
    ring_buffer_destroy(name);
    CHECK(!object_exists(name));
    CHECK_EQ(ring_buffer_write(rb, "abc", 3), 3);
    char out[3];
    CHECK_EQ(ring_buffer_read(rb, out, 3), 3);
    CHECK(memcmp(out, "abc", 3) == 0);
    EXPECT_NULL(ring_buffer_open(name), RB_ERR_NOT_FOUND);
    EXPECT_LAST_ERROR(ring_buffer_destroy(name), RB_ERR_NOT_FOUND);
    EXPECT_LAST_ERROR(ring_buffer_destroy(NULL), RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(ring_buffer_destroy(""), RB_ERR_INVALID_NAME);
    EXPECT_LAST_ERROR(ring_buffer_destroy("a/b"), RB_ERR_INVALID_NAME);

    ring_buffer_close(rb);
    /* Double close: recognised, ignored, reported. */
    EXPECT_LAST_ERROR(ring_buffer_close(rb), RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(ring_buffer_close(NULL), RB_ERR_INVALID_ARG);
}

/* ------------------------------------------------------------ bad handles */

/* After ring_buffer_close (and for NULL and pointers the library never
 * handed out) every function returns its error value with
 * RB_ERR_INVALID_ARG, without dereferencing the pointer. */
static void check_bad_handle(ring_buffer_t *bad, const char *what) {
    stage = what;
    char buf[16] = {0};
    EXPECT_FAIL(ring_buffer_write(bad, "abc", 3), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read(bad, buf, 3), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_peek(bad, buf, 3), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_available_read(bad), 0, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_available_write(bad), 0, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_is_empty(bad), true, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_is_full(bad), true, RB_ERR_INVALID_ARG);
    EXPECT_LAST_ERROR(CHECK(ring_buffer_get_ref(bad) == NULL), RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_inc_ref(bad), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_dec_ref(bad), -1, RB_ERR_INVALID_ARG);
    ring_buffer_stats_t st;
    memset(&st, 0xA5, sizeof st);
    EXPECT_LAST_ERROR(ring_buffer_get_stats(bad, &st), RB_ERR_INVALID_ARG);
    unsigned char untouched = 1;
    for (size_t i = 0; i < sizeof st; i++) untouched &= ((unsigned char *)&st)[i] == 0xA5;
    CHECK(untouched);
    EXPECT_LAST_ERROR(ring_buffer_reset_stats(bad), RB_ERR_INVALID_ARG);
    const void *parts[1] = {"abc"};
    uint32_t lens[1] = {3};
    EXPECT_FAIL(ring_buffer_write_batch(bad, parts, lens, 1), -1, RB_ERR_INVALID_ARG);
    void *chunks[4] = {0};
    uint32_t clens[4] = {0};
    EXPECT_FAIL(ring_buffer_read_batch(bad, chunks, clens, 4), -1, RB_ERR_INVALID_ARG);
    CHECK(chunks[0] == NULL);
    EXPECT_LAST_ERROR(ring_buffer_close(bad), RB_ERR_INVALID_ARG);
}

static void test_bad_handles(void) {
    check_bad_handle(NULL, "NULL handle");

    /* A closed handle. Nothing is mapped between the close and the checks,
     * so the address cannot have been reused by a new mapping. */
    const char *name = test_name("closed");
    ring_buffer_t *rb = ring_buffer_create(name, 1024);
    REQUIRE(rb != NULL);
    CHECK_EQ(ring_buffer_write(rb, "data", 4), 4);
    ring_buffer_close(rb);
    check_bad_handle(rb, "closed handle");
    /* The queue itself stays, with its bytes. */
    ring_buffer_t *re = ring_buffer_open(name);
    CHECK(re != NULL);
    if (re) {
        CHECK_EQ(ring_buffer_available_read(re), 4);
        ring_buffer_close(re);
    }

    /* A page nobody may touch: any dereference would crash the test. */
    long page = sysconf(_SC_PAGESIZE);
    void *guard = mmap(NULL, (size_t)page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(guard != MAP_FAILED);
    check_bad_handle((ring_buffer_t *)guard, "PROT_NONE handle");
    munmap(guard, (size_t)page);

    /* A perfect copy of a live header, on the heap: a library that trusted
     * the magic instead of its own records would accept it. */
    ring_buffer_t *live = ring_buffer_open(name);
    REQUIRE(live != NULL);
    ring_buffer_t *copy = malloc(sizeof(ring_buffer_t) + 1024);
    REQUIRE(copy != NULL);
    memcpy(copy, live, sizeof(ring_buffer_t) + 1024);
    check_bad_handle(copy, "heap copy of a header");
    free(copy);

    /* A local struct, and a pointer into the middle of a live mapping. */
    ring_buffer_t local;
    memset(&local, 0, sizeof local);
    local.magic = RING_BUFFER_MAGIC;
    local.version = 2;
    local.buffer_size = 1024;
    check_bad_handle(&local, "local struct");
    check_bad_handle((ring_buffer_t *)((char *)live + 64), "interior pointer");
    /* The real handle was not disturbed by any of that. */
    CHECK_EQ(ring_buffer_available_read(live), 4);
    ring_buffer_close(live);
    ring_buffer_destroy(name);
}

/* ------------------------------------------------------------ write/read/peek */

static void test_write_read_peek(void) {
    stage = "write/read/peek";
    const char *name = test_name("rw");
    ring_buffer_t *rb = ring_buffer_create(name, 1024);
    REQUIRE(rb != NULL);
    unsigned char in[1100], out[1100];
    fill_pattern(in, sizeof in, 1);

    CHECK(ring_buffer_is_empty(rb));
    CHECK(!ring_buffer_is_full(rb));
    CHECK_EQ(ring_buffer_available_read(rb), 0);
    CHECK_EQ(ring_buffer_available_write(rb), 1023); /* one byte stays free */

    /* Bad arguments. */
    EXPECT_FAIL(ring_buffer_write(rb, in, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write(rb, NULL, 5), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write(rb, NULL, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read(rb, out, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read(rb, NULL, 5), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_peek(rb, out, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_peek(rb, NULL, 5), -1, RB_ERR_INVALID_ARG);
    /* Reading from an empty ring. */
    EXPECT_FAIL(ring_buffer_read(rb, out, 1), -1, RB_ERR_EMPTY);
    EXPECT_FAIL(ring_buffer_peek(rb, out, 1), -1, RB_ERR_EMPTY);

    CHECK_EQ(ring_buffer_write(rb, in, 100), 100);
    CHECK_EQ(ring_buffer_available_read(rb), 100);
    CHECK_EQ(ring_buffer_available_write(rb), 923);
    CHECK(!ring_buffer_is_empty(rb));

    /* Read/peek of more than queued: -1, nothing consumed. */
    EXPECT_FAIL(ring_buffer_read(rb, out, 101), -1, RB_ERR_EMPTY);
    EXPECT_FAIL(ring_buffer_peek(rb, out, 101), -1, RB_ERR_EMPTY);
    CHECK_EQ(ring_buffer_available_read(rb), 100);

    /* Peek does not consume: twice the same bytes. */
    memset(out, 0, sizeof out);
    CHECK_EQ(ring_buffer_peek(rb, out, 60), 60);
    CHECK(memcmp(out, in, 60) == 0);
    memset(out, 0, sizeof out);
    CHECK_EQ(ring_buffer_peek(rb, out, 100), 100);
    CHECK(memcmp(out, in, 100) == 0);
    CHECK_EQ(ring_buffer_available_read(rb), 100);
    CHECK_EQ(rb->head, 0);

    CHECK_EQ(ring_buffer_read(rb, out, 40), 40);
    CHECK(memcmp(out, in, 40) == 0);
    CHECK_EQ(ring_buffer_read(rb, out, 60), 60);
    CHECK(memcmp(out, in + 40, 60) == 0);
    CHECK(ring_buffer_is_empty(rb));

    /* Fill to the brim: 1023 bytes, starting at offset 100 so the copy
     * wraps around the end of the data area. */
    CHECK_EQ(ring_buffer_write(rb, in, 1023), 1023);
    CHECK(ring_buffer_is_full(rb));
    CHECK_EQ(ring_buffer_available_write(rb), 0);
    EXPECT_FAIL(ring_buffer_write(rb, in, 1), -1, RB_ERR_FULL);
    CHECK_EQ(ring_buffer_available_read(rb), 1023);
    memset(out, 0, sizeof out);
    CHECK_EQ(ring_buffer_peek(rb, out, 1023), 1023);
    CHECK(memcmp(out, in, 1023) == 0);
    CHECK_EQ(ring_buffer_read(rb, out, 1023), 1023);
    CHECK(memcmp(out, in, 1023) == 0);
    CHECK_EQ(rb->head, 1123);
    CHECK_EQ(rb->tail, 1123);

    /* All or nothing: a write larger than the free space writes nothing. */
    CHECK_EQ(ring_buffer_write(rb, in, 1000), 1000);
    uint64_t tail = rb->tail;
    EXPECT_FAIL(ring_buffer_write(rb, in, 24), -1, RB_ERR_FULL);
    CHECK_EQ(rb->tail, tail);
    CHECK_EQ(ring_buffer_available_read(rb), 1000);
    CHECK_EQ(ring_buffer_write(rb, in + 1000, 23), 23); /* exactly the free space */
    CHECK(ring_buffer_is_full(rb));
    CHECK_EQ(ring_buffer_read(rb, out, 1023), 1023);
    CHECK(memcmp(out, in, 1023) == 0);

    /* More than the ring can ever hold: still -1, and "too large". */
    EXPECT_FAIL(ring_buffer_write(rb, in, 1024), -1, RB_ERR_TOO_LARGE);
    EXPECT_FAIL(ring_buffer_write(rb, in, 1100), -1, RB_ERR_TOO_LARGE);
    CHECK(ring_buffer_is_empty(rb));

    /* Byte-exact wrap at every offset of a small window. */
    int wrap_ok = 1;
    for (unsigned i = 0; i < 300; i++) {
        uint32_t len = 1 + (i * 37) % 700;
        fill_pattern(in, len, i);
        if (ring_buffer_write(rb, in, len) != (int)len) wrap_ok = 0;
        memset(out, 0, len);
        if (ring_buffer_read(rb, out, len) != (int)len || memcmp(in, out, len) != 0) wrap_ok = 0;
    }
    CHECK(wrap_ok);
    CHECK(ring_buffer_is_empty(rb));

    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* ------------------------------------------------------------ stats */

static void test_stats(void) {
    stage = "stats";
    const char *name = test_name("stats");
    ring_buffer_t *rb = ring_buffer_create(name, 4096);
    REQUIRE(rb != NULL);
    unsigned char buf[1000];
    fill_pattern(buf, sizeof buf, 3);
    CHECK_EQ(ring_buffer_write(rb, buf, 1000), 1000);
    CHECK_EQ(ring_buffer_read(rb, buf, 200), 200);

    ring_buffer_stats_t st;
    memset(&st, 0xFF, sizeof st);
    ring_buffer_get_stats(rb, &st);
    CHECK_EQ(st.buffer_size, 4096);
    CHECK_EQ(st.available_read, 800);
    CHECK_EQ(st.available_write, 4095 - 800);
    CHECK_EQ(st.readers, 0);
    CHECK_EQ(st.writers, 0);
    CHECK_EQ(st.ref_count, 1);
    CHECK_EQ(st.total_bytes_written, 1000);
    CHECK_EQ(st.total_bytes_read, 200);
    CHECK(fabs(st.utilization - 800.0 / 4096.0) < 1e-12);

    EXPECT_LAST_ERROR(ring_buffer_get_stats(rb, NULL), RB_ERR_INVALID_ARG);

    ring_buffer_reset_stats(rb);
    ring_buffer_get_stats(rb, &st);
    CHECK_EQ(st.total_bytes_written, 0);
    CHECK_EQ(st.total_bytes_read, 0);
    CHECK_EQ(rb->total_bytes_written, 0);
    CHECK_EQ(rb->total_bytes_read, 0);
    /* Only the totals reset, not the queue. */
    CHECK_EQ(st.available_read, 800);
    CHECK_EQ(ring_buffer_read(rb, buf, 800), 800);
    ring_buffer_get_stats(rb, &st);
    CHECK_EQ(st.total_bytes_read, 800);
    CHECK_EQ(st.available_read, 0);
    CHECK(st.utilization == 0.0);

    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* ------------------------------------------------------------ batches */

static void test_batches(void) {
    stage = "write_batch/read_batch";
    const char *name = test_name("batch");
    ring_buffer_t *rb = ring_buffer_create(name, 4096);
    REQUIRE(rb != NULL);

    const void *parts[4] = {"abc", NULL, "", "defgh"};
    uint32_t lens[4] = {3, 0, 0, 5};
    CHECK_EQ(ring_buffer_write_batch(rb, parts, lens, 4), 8);
    char out[16] = {0};
    CHECK_EQ(ring_buffer_read(rb, out, 8), 8);
    CHECK(memcmp(out, "abcdefgh", 8) == 0);

    /* Bad arguments. */
    EXPECT_FAIL(ring_buffer_write_batch(rb, parts, lens, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write_batch(rb, NULL, lens, 4), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_write_batch(rb, parts, NULL, 4), -1, RB_ERR_INVALID_ARG);
    const void *nullpart[2] = {"ab", NULL};
    uint32_t nulllens[2] = {2, 3};
    EXPECT_FAIL(ring_buffer_write_batch(rb, nullpart, nulllens, 2), -1, RB_ERR_INVALID_ARG);
    const void *empties[2] = {"", ""};
    uint32_t zero[2] = {0, 0};
    EXPECT_FAIL(ring_buffer_write_batch(rb, empties, zero, 2), -1, RB_ERR_INVALID_ARG);
    CHECK(ring_buffer_is_empty(rb));

    /* All or nothing: with 200 bytes queued, 3000 + 1000 exceed the 3895
     * free bytes (but would fit an empty ring: "full", not "too large"). */
    static unsigned char a[3000], b[1200];
    fill_pattern(a, sizeof a, 10);
    fill_pattern(b, sizeof b, 11);
    CHECK_EQ(ring_buffer_write(rb, a, 200), 200);
    const void *big[2] = {a, b};
    uint32_t biglens[2] = {3000, 1000};
    EXPECT_FAIL(ring_buffer_write_batch(rb, big, biglens, 2), -1, RB_ERR_FULL);
    CHECK_EQ(ring_buffer_available_read(rb), 200);
    CHECK_EQ(rb->tail, 208);
    CHECK_EQ(ring_buffer_read(rb, a, 200), 200);
    /* Together larger than the ring can ever hold. */
    biglens[1] = 1200;
    EXPECT_FAIL(ring_buffer_write_batch(rb, big, biglens, 2), -1, RB_ERR_TOO_LARGE);
    CHECK(ring_buffer_is_empty(rb));
    CHECK_EQ(rb->tail, 208);

    /* read_batch of an empty queue: 0 chunks, not an error. */
    void *chunks[8];
    uint32_t clens[8];
    CHECK_EQ(ring_buffer_read_batch(rb, chunks, clens, 8), 0);
    EXPECT_FAIL(ring_buffer_read_batch(rb, chunks, clens, 0), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read_batch(rb, NULL, clens, 8), -1, RB_ERR_INVALID_ARG);
    EXPECT_FAIL(ring_buffer_read_batch(rb, chunks, NULL, 8), -1, RB_ERR_INVALID_ARG);

    /* 2500 bytes queued across the end of the ring (tail starts at 208 + a
     * 3000-byte advance) drain as 1024 + 1024 + 452, each malloc'ed. */
    static unsigned char fill[3000];
    CHECK_EQ(ring_buffer_write(rb, fill, 3000), 3000);
    CHECK_EQ(ring_buffer_read(rb, fill, 3000), 3000);
    static unsigned char src[2500], got[2500];
    fill_pattern(src, sizeof src, 12);
    const void *p1[2] = {src, src + 1000};
    uint32_t l1[2] = {1000, 1500};
    CHECK_EQ(ring_buffer_write_batch(rb, p1, l1, 2), 2500);
    int n = ring_buffer_read_batch(rb, chunks, clens, 8);
    CHECK_EQ(n, 3);
    size_t at = 0;
    for (int i = 0; i < n && i < 8; i++) {
        CHECK(chunks[i] != NULL);
        CHECK(clens[i] <= 1024);
        if (at + clens[i] <= sizeof got) memcpy(got + at, chunks[i], clens[i]);
        at += clens[i];
        free(chunks[i]); /* the caller frees with plain free() */
    }
    if (n == 3) {
        CHECK_EQ(clens[0], 1024);
        CHECK_EQ(clens[1], 1024);
        CHECK_EQ(clens[2], 452);
    }
    CHECK_EQ(at, 2500);
    CHECK(memcmp(got, src, 2500) == 0);
    CHECK(ring_buffer_is_empty(rb));

    /* At most max_batch_count chunks: the rest stays queued. */
    CHECK_EQ(ring_buffer_write(rb, src, 2500), 2500);
    n = ring_buffer_read_batch(rb, chunks, clens, 2);
    CHECK_EQ(n, 2);
    for (int i = 0; i < n && i < 2; i++) {
        CHECK_EQ(clens[i], 1024);
        CHECK(memcmp(chunks[i], src + 1024 * i, 1024) == 0);
        free(chunks[i]);
    }
    CHECK_EQ(ring_buffer_available_read(rb), 452);
    n = ring_buffer_read_batch(rb, chunks, clens, 2);
    CHECK_EQ(n, 1);
    if (n == 1) {
        CHECK_EQ(clens[0], 452);
        CHECK(memcmp(chunks[0], src + 2048, 452) == 0);
        free(chunks[0]);
    }
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* ------------------------------------------------------------ helpers */

static void test_power_helpers(void) {
    stage = "power-of-two helpers";
    CHECK_EQ(next_power_of_2(0), 1);
    CHECK_EQ(next_power_of_2(1), 1);
    CHECK_EQ(next_power_of_2(2), 2);
    CHECK_EQ(next_power_of_2(3), 4);
    CHECK_EQ(next_power_of_2(1023), 1024);
    CHECK_EQ(next_power_of_2(1024), 1024);
    CHECK_EQ(next_power_of_2(1025), 2048);
    CHECK_EQ(next_power_of_2(0x40000001u), 0x80000000u);
    CHECK_EQ(next_power_of_2(0x80000000u), 0x80000000u);
    CHECK_EQ(next_power_of_2(0x80000001u), 0);
    CHECK_EQ(next_power_of_2(UINT32_MAX), 0);
    CHECK(!is_power_of_2(0));
    CHECK(is_power_of_2(1));
    CHECK(is_power_of_2(2));
    CHECK(!is_power_of_2(3));
    CHECK(is_power_of_2(1024));
    CHECK(!is_power_of_2(1025));
    CHECK(is_power_of_2(0x80000000u));
    CHECK(!is_power_of_2(UINT32_MAX));
}

/* ------------------------------------------------------------ refs */

static void test_refs(void) {
    stage = "refs";
    const char *name = test_name("ref");
    ring_buffer_t *rb = ring_buffer_create(name, 3000);
    REQUIRE(rb != NULL);

    ring_buffer_ref_t *ref = ring_buffer_get_ref(rb);
    REQUIRE(ref != NULL);
    CHECK(strcmp(ref->name, name) == 0);
    CHECK_EQ(ref->size, 4096);
    CHECK(ref->auto_cleanup == false);
    CHECK_EQ(ref->creator_pid, getpid());
    CHECK_EQ(rb->ref_count, 2);

    ring_buffer_t *viaref = ring_buffer_from_ref(ref);
    CHECK(viaref != NULL);
    CHECK_EQ(rb->ref_count, 3);
    CHECK_EQ(rb->process_count, 2);
    if (viaref) {
        CHECK_EQ(ring_buffer_write(viaref, "r", 1), 1);
        char c = 0;
        CHECK_EQ(ring_buffer_read(rb, &c, 1), 1);
        CHECK_EQ(c, 'r');
        ring_buffer_close(viaref);
    }
    ring_buffer_release_ref(ref);
    ring_buffer_release_ref(NULL); /* allowed */

    /* A ref is plain malloc'ed memory: free() is as good as release_ref. */
    ring_buffer_ref_t *ref2 = ring_buffer_get_ref(rb);
    CHECK(ref2 != NULL);
    CHECK_EQ(rb->ref_count, 4);
    free(ref2);

    CHECK_EQ(ring_buffer_inc_ref(rb), 5);
    CHECK_EQ(ring_buffer_dec_ref(rb), 4);
    CHECK_EQ(ring_buffer_dec_ref(rb), 3);
    CHECK_EQ(ring_buffer_dec_ref(rb), 2);
    CHECK_EQ(ring_buffer_dec_ref(rb), 1);
    CHECK(object_exists(name));

    /* from_ref: bad refs. */
    EXPECT_NULL(ring_buffer_from_ref(NULL), RB_ERR_INVALID_ARG);
    ring_buffer_ref_t fake;
    memset(&fake, 0, sizeof fake);
    EXPECT_NULL(ring_buffer_from_ref(&fake), RB_ERR_INVALID_NAME); /* empty name */
    memset(fake.name, 'x', sizeof fake.name);                     /* unterminated */
    EXPECT_NULL(ring_buffer_from_ref(&fake), RB_ERR_INVALID_NAME);
    snprintf(fake.name, sizeof fake.name, "a/b");
    EXPECT_NULL(ring_buffer_from_ref(&fake), RB_ERR_INVALID_NAME);
    snprintf(fake.name, sizeof fake.name, "%s", test_name("noref"));
    EXPECT_NULL(ring_buffer_from_ref(&fake), RB_ERR_NOT_FOUND);
    CHECK_EQ(rb->ref_count, 1); /* failed from_refs took no reference */

    /* (b) dec_ref to zero removes the name, but unlike the legacy library
     * the handle stays usable until ring_buffer_close. */
    CHECK_EQ(ring_buffer_dec_ref(rb), 0);
    CHECK(!object_exists(name));
    CHECK_EQ(ring_buffer_write(rb, "alive", 5), 5);
    char out[8] = {0};
    CHECK_EQ(ring_buffer_peek(rb, out, 5), 5);
    CHECK_EQ(ring_buffer_read(rb, out, 5), 5);
    CHECK(memcmp(out, "alive", 5) == 0);
    CHECK_EQ(ring_buffer_put_msg(rb, "m", 1, RB_NO_WAIT), RB_OK);
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, 1);
    ring_buffer_stats_t st;
    memset(&st, 0, sizeof st);
    ring_buffer_get_stats(rb, &st);
    CHECK_EQ(st.buffer_size, 4096);
    CHECK_EQ(st.ref_count, 0);
    EXPECT_NULL(ring_buffer_open(name), RB_ERR_NOT_FOUND);
    /* Going "below zero" neither wraps nor fails. */
    CHECK_EQ(ring_buffer_dec_ref(rb), 0);
    ring_buffer_close(rb); /* the legacy library crashed here */
    EXPECT_LAST_ERROR(ring_buffer_close(rb), RB_ERR_INVALID_ARG);

    /* dec_ref to zero removes only its own object, never a newer queue that
     * took the same name after the old one was destroyed. */
    const char *reused = test_name("reused");
    ring_buffer_t *old = ring_buffer_create(reused, 1024);
    REQUIRE(old != NULL);
    ring_buffer_destroy(reused);
    ring_buffer_t *newer = ring_buffer_create(reused, 2048);
    REQUIRE(newer != NULL);
    CHECK(object_exists(reused));
    CHECK_EQ(ring_buffer_dec_ref(old), 0);
    CHECK(object_exists(reused));
    ring_buffer_t *check = ring_buffer_open(reused);
    CHECK(check != NULL);
    if (check) {
        CHECK_EQ(check->buffer_size, 2048);
        ring_buffer_close(check);
    }
    ring_buffer_close(old);
    ring_buffer_close(newer);
    ring_buffer_destroy(reused);
}

/* (a) A process that dies holding the ref mutex must not wedge inc_ref and
 * dec_ref (the legacy mutex was not robust: they blocked for ever). */
static void test_robust_ref_mutex(int kill_it) {
    const char *name = test_name(kill_it ? "robust_kill" : "robust_exit");
    ring_buffer_t *rb = ring_buffer_create(name, 1024);
    REQUIRE(rb != NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* The child's inherited mapping is the same shared header. */
        if (pthread_mutex_lock(&rb->ref_mutex) != 0) _exit(3);
        if (kill_it) raise(SIGKILL);
        _exit(0); /* exits holding the lock */
    }
    int status = wait_child(pid);
    CHECK_EQ(status, kill_it ? 128 + SIGKILL : 0);
    watchdog(valgrind_scaled(20), kill_it ? "inc_ref after the holder was SIGKILLed"
                                          : "inc_ref after the holder exited holding it");
    CHECK_EQ(ring_buffer_inc_ref(rb), 2);
    CHECK_EQ(ring_buffer_dec_ref(rb), 1);
    ring_buffer_ref_t *ref = ring_buffer_get_ref(rb);
    CHECK(ref != NULL);
    ring_buffer_release_ref(ref);
    CHECK_EQ(ring_buffer_dec_ref(rb), 1);
    /* The mutex is consistent again, for a later locker in another process. */
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int rc = pthread_mutex_lock(&rb->ref_mutex);
        if (rc != 0) _exit(10 + rc % 100);
        pthread_mutex_unlock(&rb->ref_mutex);
        _exit(0);
    }
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(ring_buffer_inc_ref(rb), 2);
    watchdog_off();
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* ------------------------------------------------------------ objects */

/* (c) New objects are 0600 whatever the umask (legacy: 0666). */
static void test_mode(void) {
    stage = "mode 0600 with umask 0";
    mode_t old = umask(0);
    const char *name = test_name("mode");
    ring_buffer_t *rb = ring_buffer_create(name, 1024);
    umask(old);
    REQUIRE(rb != NULL);
    struct stat st;
    REQUIRE(object_stat(name, &st));
    CHECK_EQ(st.st_mode & 07777, 0600);
    CHECK_EQ(st.st_uid, geteuid());
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* Writes a file at the object path of `name`: `size` bytes, starting with
 * a header of the given magic, version and buffer_size. */
static void plant_object(const char *name, off_t size, uint64_t magic, uint32_t version,
                         uint32_t buffer_size) {
    char path[160];
    shm_path(path, sizeof path, name);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, size) == 0);
    ring_buffer_t hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.magic = magic;
    hdr.version = version;
    hdr.buffer_size = buffer_size;
    hdr.ref_count = 1;
    hdr.process_count = 1;
    snprintf(hdr.name, sizeof hdr.name, "%s", name);
    size_t n = size < (off_t)sizeof hdr ? (size_t)size : sizeof hdr;
    REQUIRE(pwrite(fd, &hdr, n, 0) == (ssize_t)n);
    close(fd);
}

/* Opening must refuse the object (NULL, RB_ERR_INCOMPATIBLE) before mapping
 * beyond its end: a SIGBUS would kill the test. */
static void expect_incompatible(const char *name, const char *what) {
    stage = what;
    off_t size = object_size(name);
    EXPECT_NULL(ring_buffer_open(name), RB_ERR_INCOMPATIBLE);
    EXPECT_NULL(ring_buffer_open_ex(name, 0), RB_ERR_INCOMPATIBLE);
    /* create must not "repair" (overwrite) somebody's object either. */
    EXPECT_NULL(ring_buffer_create(name, 1024), RB_ERR_INCOMPATIBLE);
    CHECK_EQ(object_size(name), size);
}

static void test_bad_objects(void) {
    const char *n;
    n = test_name("badmagic");
    plant_object(n, 200 + 1024, 0x5341474542414421ULL, 1, 1024);
    expect_incompatible(n, "bad magic");

    n = test_name("badver");
    plant_object(n, 200 + 1024, RING_BUFFER_MAGIC, 3, 1024);
    expect_incompatible(n, "unknown version");

    n = test_name("ver0");
    plant_object(n, 200 + 1024, RING_BUFFER_MAGIC, 0, 1024);
    expect_incompatible(n, "version 0");

    n = test_name("notpow2");
    plant_object(n, 200 + 1000, RING_BUFFER_MAGIC, 1, 1000);
    expect_incompatible(n, "buffer_size not a power of two");

    n = test_name("small");
    plant_object(n, 200 + 512, RING_BUFFER_MAGIC, 1, 512);
    expect_incompatible(n, "buffer_size below 1024");

    n = test_name("zero");
    plant_object(n, 200, RING_BUFFER_MAGIC, 1, 0);
    expect_incompatible(n, "buffer_size 0");

    /* A header promising more data than the object holds: legacy mapped
     * 200 + buffer_size and died of SIGBUS on the first access. */
    n = test_name("short");
    plant_object(n, 200 + 1024, RING_BUFFER_MAGIC, 1, 1 << 20);
    expect_incompatible(n, "header larger than the object");

    n = test_name("long");
    plant_object(n, 200 + 1024 + 1, RING_BUFFER_MAGIC, 1, 1024);
    expect_incompatible(n, "object larger than its header says");

    n = test_name("tiny");
    plant_object(n, 100, RING_BUFFER_MAGIC, 1, 1024);
    expect_incompatible(n, "object shorter than a header");

    n = test_name("empty");
    plant_object(n, 0, 0, 0, 0);
    expect_incompatible(n, "empty object");

    /* A real queue truncated behind the library's back. */
    const char *names[4];
    const off_t cut[4] = {0, 150, 200 + 2048, 200 + 1024};
    for (int i = 0; i < 4; i++) {
        names[i] = test_name("trunc");
        ring_buffer_t *rb = ring_buffer_create(names[i], 2048);
        REQUIRE(rb != NULL);
        CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, RB_NO_WAIT), RB_OK);
        ring_buffer_close(rb);
        truncate_object(names[i], cut[i]);
        expect_incompatible(names[i], "truncated queue");
    }
    /* ... and one grown behind its back. */
    n = test_name("grown");
    ring_buffer_t *rb = ring_buffer_create(n, 1024);
    REQUIRE(rb != NULL);
    ring_buffer_close(rb);
    truncate_object(n, object_size(n) + 4096);
    expect_incompatible(n, "grown queue");

    /* A symbolic link planted at the object path is never followed. */
    stage = "planted symlink";
    n = test_name("symlink");
    char target[64];
    snprintf(target, sizeof target, "/tmp/ct_symlink_target_%d", (int)getpid());
    int fd = open(target, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "x", 1) == 1);
    close(fd);
    char path[160];
    shm_path(path, sizeof path, n);
    REQUIRE(symlink(target, path) == 0);
    ring_buffer_t *s = ring_buffer_open(n);
    CHECK(s == NULL);
    CHECK_EQ(ring_buffer_last_error(), RB_ERR_PERMISSION);
    s = ring_buffer_create(n, 1024);
    CHECK(s == NULL);
    CHECK_EQ(ring_buffer_last_error(), RB_ERR_PERMISSION);
    struct stat st;
    CHECK(stat(target, &st) == 0 && st.st_size == 1);
    if (s) ring_buffer_close(s);
    unlink(path);
    unlink(target);
}

/* ------------------------------------------------------------ legacy objects */

/* (e) An object exactly as the legacy C library created it: version 1,
 * 200 + buffer_size bytes, a process-shared (non-robust) mutex at 48. The
 * returned mapping plays the legacy process that created it. */
static ring_buffer_t *make_legacy_object(const char *name, uint32_t buffer_size) {
    char shm_name[96];
    snprintf(shm_name, sizeof shm_name, "/sage_ringbuf_%s", name);
    int fd = shm_open(shm_name, O_CREAT | O_EXCL | O_RDWR, 0666);
    REQUIRE(fd >= 0);
    size_t total = sizeof(ring_buffer_t) + buffer_size;
    REQUIRE(ftruncate(fd, (off_t)total) == 0);
    ring_buffer_t *h = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(h != MAP_FAILED);
    close(fd);
    memset(h, 0, sizeof *h);
    h->magic = RING_BUFFER_MAGIC;
    h->version = 1;
    h->buffer_size = buffer_size;
    h->head = 0;
    h->tail = 0;
    h->readers = 0;
    h->writers = 0;
    h->ref_count = 1;
    h->process_count = 1;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&h->ref_mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    strncpy(h->name, name, MAX_NAME_LEN - 1);
    h->creator_pid = getpid();
    h->total_bytes_written = 0;
    h->total_bytes_read = 0;
    return h;
}

/* The legacy library's write and read, as it did them: an unlocked space
 * check, a copy that wraps, then the counter. */
static int legacy_lib_write(ring_buffer_t *h, const void *data, uint32_t len) {
    uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
    uint32_t size = h->buffer_size, used = (uint32_t)(tail - head);
    if (len == 0 || len > size - used - 1) return -1;
    uint32_t pos = (uint32_t)(tail & (size - 1)), first = size - pos < len ? size - pos : len;
    memcpy(h->data + pos, data, first);
    memcpy(h->data, (const char *)data + first, len - first);
    __atomic_store_n(&h->tail, tail + len, __ATOMIC_RELEASE);
    h->total_bytes_written += len;
    return (int)len;
}

static int legacy_lib_read(ring_buffer_t *h, void *data, uint32_t len, int consume) {
    uint64_t head = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    uint32_t size = h->buffer_size;
    if (len == 0 || tail - head < len) return -1;
    uint32_t pos = (uint32_t)(head & (size - 1)), first = size - pos < len ? size - pos : len;
    memcpy(data, h->data + pos, first);
    memcpy((char *)data + first, h->data, len - first);
    if (consume) {
        __atomic_store_n(&h->head, head + len, __ATOMIC_RELEASE);
        h->total_bytes_read += len;
    }
    return (int)len;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t stream_len(unsigned seq) { return seq % 11 == 0 ? 0 : (seq * 97u) % 700u; }

static void test_legacy_object(void) {
    stage = "legacy version-1 object";
    const char *name = test_name("legacy");
    ring_buffer_t *h = make_legacy_object(name, 1024);
    CHECK_EQ(object_size(name), 200 + 1024);

    ring_buffer_t *rb = ring_buffer_open(name);
    REQUIRE(rb != NULL);
    CHECK(rb != h);
    CHECK_EQ(rb->version, 1);
    CHECK_EQ(rb->buffer_size, 1024);
    CHECK_EQ(h->process_count, 2); /* visible to the legacy process */
    /* The library must not have grown or rewritten the legacy object. */
    CHECK_EQ(object_size(name), 200 + 1024);
    CHECK_EQ(ring_buffer_available_write(rb), 1023);

    /* Legacy raw calls. */
    unsigned char in[900], out[900];
    fill_pattern(in, sizeof in, 21);
    CHECK_EQ(ring_buffer_write(rb, in, 700), 700);
    CHECK_EQ(ring_buffer_peek(rb, out, 700), 700);
    CHECK(memcmp(in, out, 700) == 0);
    CHECK_EQ(ring_buffer_read(rb, out, 700), 700);
    CHECK(memcmp(in, out, 700) == 0);
    EXPECT_FAIL(ring_buffer_read(rb, out, 1), -1, RB_ERR_EMPTY);
    CHECK_EQ(ring_buffer_write(rb, in, 900), 900); /* wraps */
    EXPECT_FAIL(ring_buffer_write(rb, in, 200), -1, RB_ERR_FULL);
    /* ... and what the legacy process sees of them. */
    CHECK_EQ(h->tail, 1600);
    CHECK_EQ(legacy_lib_read(h, out, 900, 1), 900);
    CHECK(memcmp(in, out, 900) == 0);
    CHECK_EQ(h->head, 1600);

    /* New message calls on a legacy object, both directions against the
     * legacy library's own code. */
    unsigned char frame[4 + 700];
    for (unsigned seq = 0; seq < 40; seq++) {
        uint32_t len = stream_len(seq);
        put_le32(frame, len);
        fill_pattern(frame + 4, len, seq);
        CHECK_EQ(legacy_lib_write(h, frame, 4 + len), (int)(4 + len));
        CHECK_EQ(ring_buffer_msg_count(rb), 1);
        uint32_t got = 12345;
        CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &got, RB_NO_WAIT), RB_OK);
        CHECK_EQ(got, len);
        CHECK(memcmp(out, frame + 4, len) == 0);

        CHECK_EQ(ring_buffer_put_msg(rb, frame + 4, len, RB_NO_WAIT), RB_OK);
        unsigned char pre[4];
        CHECK_EQ(legacy_lib_read(h, pre, 4, 0), 4);
        CHECK_EQ(le32(pre), len);
        CHECK_EQ(legacy_lib_read(h, frame, 4 + len, 1), (int)(4 + len));
        CHECK(memcmp(frame + 4, out, len) == 0);
    }
    CHECK_EQ(ring_buffer_msg_count(rb), 0);
    uint32_t got = 0;
    EXPECT_FAIL(ring_buffer_get_msg(rb, out, sizeof out, &got, RB_NO_WAIT), RB_ERR_EMPTY,
                RB_ERR_EMPTY);
    /* Bounded waits work on a legacy object too (no futex words there). */
    EXPECT_FAIL(ring_buffer_get_msg(rb, out, sizeof out, &got, 30 * 1000000LL), RB_ERR_TIMEOUT,
                RB_ERR_TIMEOUT);
    /* The waits that consume nothing work there too: a half-written frame
     * (the legacy producer's prefix only) is not a message yet; the whole
     * one is, and stays queued. */
    EXPECT_CODE(ring_buffer_wait_readable(rb, RB_NO_WAIT), RB_ERR_TIMEOUT);
    EXPECT_CODE(ring_buffer_wait_readable(rb, 30 * 1000000LL), RB_ERR_TIMEOUT);
    put_le32(frame, 8);
    memcpy(frame + 4, "legacy!!", 8);
    CHECK_EQ(legacy_lib_write(h, frame, 4), 4);
    EXPECT_CODE(ring_buffer_wait_readable(rb, 30 * 1000000LL), RB_ERR_TIMEOUT);
    CHECK_EQ(legacy_lib_write(h, frame + 4, 8), 8);
    CHECK_EQ(ring_buffer_wait_readable(rb, RB_WAIT_FOREVER), RB_OK);
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    CHECK_EQ(ring_buffer_wait_writable(rb, 1010, RB_NO_WAIT), RB_ERR_TIMEOUT); /* 1011 bytes free */
    CHECK_EQ(ring_buffer_wait_writable(rb, 100, RB_WAIT_FOREVER), RB_OK);
    EXPECT_CODE(ring_buffer_wait_writable(rb, 1020, RB_WAIT_FOREVER), RB_ERR_TOO_LARGE);
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &got, RB_NO_WAIT), RB_OK);
    CHECK(got == 8 && memcmp(out, "legacy!!", 8) == 0);

    /* What needs the new extension block says so instead of pretending. */
    EXPECT_FAIL(ring_buffer_shutdown(rb), RB_ERR_INCOMPATIBLE, RB_ERR_INCOMPATIBLE);
    CHECK_EQ(ring_buffer_is_shutdown(rb), 0);
    EXPECT_FAIL(ring_buffer_task_done(rb), RB_ERR_INCOMPATIBLE, RB_ERR_INCOMPATIBLE);
    EXPECT_FAIL(ring_buffer_join(rb, 0), RB_ERR_INCOMPATIBLE, RB_ERR_INCOMPATIBLE);
    EXPECT_FAIL(ring_buffer_unfinished_tasks(rb), 0, RB_ERR_INCOMPATIBLE);
    ring_buffer_stats_ex_t ex;
    memset(&ex, 0xFF, sizeof ex);
    ring_buffer_get_stats_ex(rb, &ex);
    CHECK_EQ(ex.version, 1);
    CHECK_EQ(ex.buffer_size, 1024);
    CHECK_EQ(ex.messages_queued, 0);
    CHECK_EQ(ex.shutdown, 0);
    CHECK_EQ(ring_buffer_attached_processes(rb), 1);

    /* The legacy (non-robust) ref mutex still works as a mutex. */
    CHECK_EQ(ring_buffer_inc_ref(rb), 2);
    CHECK_EQ(h->ref_count, 2);
    CHECK_EQ(ring_buffer_dec_ref(rb), 1);
    ring_buffer_ref_t *ref = ring_buffer_get_ref(rb);
    CHECK(ref != NULL);
    if (ref) {
        CHECK(strcmp(ref->name, name) == 0);
        CHECK_EQ(ref->size, 1024);
        CHECK_EQ(ref->creator_pid, getpid());
        ring_buffer_release_ref(ref);
    }
    CHECK_EQ(ring_buffer_dec_ref(rb), 1);

    /* One writer process running the legacy library's code, one reader
     * using the new blocking get (which must notice writes that wake
     * nobody), then the reverse. */
    watchdog(valgrind_scaled(60), "legacy object: legacy writer -> get_msg");
    const unsigned count = under_valgrind() ? 200 : 2000;
    pid_t pid = fork_child(valgrind_scaled(60)); /* never outlives a dead parent */
    if (pid == 0) {
        unsigned char f[4 + 700];
        for (unsigned seq = 0; seq < count; seq++) {
            uint32_t len = stream_len(seq);
            put_le32(f, len);
            fill_pattern(f + 4, len, seq);
            while (legacy_lib_write(h, f, 4 + len) < 0) sched_yield();
        }
        _exit(0);
    }
    int ok = 1;
    for (unsigned seq = 0; seq < count && ok; seq++) {
        uint32_t len = 0;
        int rc = ring_buffer_get_msg(rb, out, sizeof out, &len, RB_WAIT_FOREVER);
        unsigned char want[700];
        fill_pattern(want, stream_len(seq), seq);
        if (rc != RB_OK || len != stream_len(seq) || memcmp(out, want, len) != 0) {
            fprintf(stderr, "legacy writer -> get_msg: message %u: rc %d len %u\n", seq, rc, len);
            ok = 0;
        }
    }
    CHECK(ok);
    CHECK_EQ(wait_child(pid), 0);

    watchdog(valgrind_scaled(60), "legacy object: put_msg -> legacy reader");
    pid = fork_child(valgrind_scaled(60));
    if (pid == 0) {
        unsigned char f[4 + 700], want[700];
        for (unsigned seq = 0; seq < count; seq++) {
            unsigned char pre[4];
            while (legacy_lib_read(h, pre, 4, 0) < 0) sched_yield();
            uint32_t len = le32(pre);
            if (len != stream_len(seq) || legacy_lib_read(h, f, 4 + len, 1) != (int)(4 + len))
                _exit(1);
            fill_pattern(want, len, seq);
            if (memcmp(f + 4, want, len) != 0) _exit(2);
        }
        _exit(0);
    }
    int put_ok = 1;
    for (unsigned seq = 0; seq < count; seq++) {
        unsigned char p[700];
        fill_pattern(p, stream_len(seq), seq);
        if (ring_buffer_put_msg(rb, p, stream_len(seq), RB_WAIT_FOREVER) != RB_OK) put_ok = 0;
    }
    CHECK(put_ok);
    CHECK_EQ(wait_child(pid), 0);
    watchdog_off();
    CHECK(ring_buffer_is_empty(rb));

    ring_buffer_close(rb);
    CHECK_EQ(h->process_count, 1);
    munmap(h, sizeof(ring_buffer_t) + 1024);
    ring_buffer_destroy(name);
    CHECK(!object_exists(name));
}

int main(void) {
    rbt_init();
    test_create_names_and_sizes();
    test_create_open_close_destroy();
    test_bad_handles();
    test_write_read_peek();
    test_stats();
    test_batches();
    test_power_helpers();
    test_refs();
    test_robust_ref_mutex(1);
    test_robust_ref_mutex(0);
    test_mode();
    test_bad_objects();
    test_legacy_object();
    return rbt_finish("test_legacy_api");
}
