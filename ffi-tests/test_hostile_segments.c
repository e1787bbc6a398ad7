/* Hostile segments: the shared object is untrusted (DESIGN.md "Untrusted
 * segment"). Objects with a bad header or a wrong real size are refused at
 * open with RB_ERR_INCOMPATIBLE before anything is mapped (no SIGBUS) and
 * without a byte written to them; impossible counters or length prefixes in
 * an open queue make the calls fail with RB_ERR_CORRUPT (or the legacy
 * failure value) instead of reading or writing out of bounds or waiting for
 * ever; and garbage sprayed over the data area while a producer and a
 * consumer process run crashes and hangs nobody. A healthy neighbour queue
 * keeps working throughout. */
#include "hostile_util.h"

#include <sys/stat.h>

#define BUF 1024u

/* ------------------------------------------------------------ helpers */

/* A fresh, valid, closed version-2 queue of 1024 bytes. */
static const char *fresh_queue(const char *tag) {
    const char *name = test_name(tag);
    ring_buffer_t *rb = ring_buffer_create_ex(name, BUF, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb != NULL);
    ring_buffer_close(rb);
    return name;
}

/* The object's bytes (at most `cap`), to prove that refusing it wrote
 * nothing; returns the length read, -1 if it cannot be read. */
static ssize_t snapshot(const char *name, unsigned char *buf, size_t cap) {
    char path[160];
    shm_path(path, sizeof path, name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat st;
    ssize_t n = -1;
    if (fstat(fd, &st) == 0) n = S_ISREG(st.st_mode) ? pread(fd, buf, cap, 0) : 0;
    close(fd);
    return n;
}

/* remove_if_unused in a child with a watchdog, so that a hang is reported
 * (exit 128 + SIGALRM) instead of suffered. Exit code: 0 for "removed",
 * 10 for "in use", 20 + (-code) for a negative code. */
static int remove_child(void *name) {
    int rc = ring_buffer_remove_if_unused(name);
    return rc == 1 ? 0 : rc == 0 ? 10 : 20 - rc;
}

/* Every way of opening `name` must refuse it with RB_ERR_INCOMPATIBLE and
 * leave its bytes alone; it can still be removed, being unused. A FIFO may
 * instead be refused by remove_if_unused as not a queue. */
static void refuse_object_ex(const char *name, const char *what, bool fifo) {
    static unsigned char before[8192], after[8192];
    int failures = rbt_failures;
    ssize_t n_before = snapshot(name, before, sizeof before);
    CHECK(n_before >= 0);

    /* Open-or-create (create, create_ex) among them: it must not replace it. */
    refuse_opening(name, RB_ERR_INCOMPATIBLE);
    EXPECT_NULL(ring_buffer_open_ex(name, RB_OPEN_ALLOW_FOREIGN_OWNER), RB_ERR_INCOMPATIBLE);

    ssize_t n_after = snapshot(name, after, sizeof after);
    CHECK_EQ(n_after, n_before);
    if (n_after == n_before && n_before > 0) CHECK(memcmp(before, after, (size_t)n_before) == 0);

    int removed = run_child(remove_child, (void *)name, 5);
    if (removed == 128 + SIGALRM)
        fprintf(stderr, "  ring_buffer_remove_if_unused() hung (killed after 5 s)\n");
    if (fifo && removed == 20 - RB_ERR_INCOMPATIBLE) removed = 0;
    CHECK_EQ(removed, 0);
    if (removed == 0) CHECK(fifo || !object_exists(name));
    if (rbt_failures != failures) fprintf(stderr, "  ^ with the object: %s\n", what);
    NEIGHBOUR_OK(what);
}

static void refuse_object(const char *name, const char *what) {
    refuse_object_ex(name, what, false);
}

/* Writes a hand-made object: a legacy header (magic, version, buffer_size,
 * name) padded with zeros to `size` bytes. */
static void handmade(const char *name, uint64_t magic, uint32_t version, uint32_t buffer_size,
                     size_t size) {
    char path[160];
    shm_path(path, sizeof path, name);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, (off_t)size) == 0);
    unsigned char hdr[200];
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr + HDR_MAGIC_OFF, &magic, 8);
    memcpy(hdr + HDR_VERSION_OFF, &version, 4);
    memcpy(hdr + HDR_SIZE_OFF, &buffer_size, 4);
    memcpy(hdr + HDR_NAME_OFF, name, strlen(name));
    size_t n = size < sizeof hdr ? size : sizeof hdr;
    REQUIRE(pwrite(fd, hdr, n, 0) == (ssize_t)n);
    close(fd);
}

/* ------------------------------------------------- refused at open */

static void test_bad_headers(void) {
    const char *n;
    n = fresh_queue("magic");
    REQUIRE(poke_u64(n, HDR_MAGIC_OFF, 0x0123456789abcdefull));
    refuse_object(n, "wrong magic");
    n = fresh_queue("magicswap");
    REQUIRE(poke_u64(n, HDR_MAGIC_OFF, __builtin_bswap64((uint64_t)RING_BUFFER_MAGIC)));
    refuse_object(n, "byte-swapped magic");
    n = fresh_queue("magic0");
    REQUIRE(poke_u64(n, HDR_MAGIC_OFF, 0));
    refuse_object(n, "zero magic (half-made object)");

    uint32_t versions[] = {0, 3, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
        n = fresh_queue("version");
        REQUIRE(poke_u32(n, HDR_VERSION_OFF, versions[i]));
        refuse_object(n, "unknown version");
    }
    n = fresh_queue("version1");
    REQUIRE(poke_u32(n, HDR_VERSION_OFF, 1));
    refuse_object(n, "version 1 header on a version-2-sized object");

    uint32_t sizes[] = {0, 1, 1000, 1023, 1025, 512, 2048, 0x40000000u, 0x80000000u, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        n = fresh_queue("bufsize");
        REQUIRE(poke_u32(n, HDR_SIZE_OFF, sizes[i]));
        char what[80];
        snprintf(what, sizeof what, "buffer_size %u in a 1024-byte queue", sizes[i]);
        refuse_object(n, what);
    }

    /* Version-2 extension block overwritten. */
    n = fresh_queue("extmagic");
    REQUIRE(poke_u64(n, EXT_OFF(BUF), 0));
    refuse_object(n, "extension block magic zeroed");
    n = fresh_queue("extsize");
    REQUIRE(poke_u32(n, EXT_OFF(BUF) + 8, 4096));
    refuse_object(n, "extension block size field wrong");

    /* A version-2 object of libring_buffer 1.0: its 384-byte extension
     * block ("SAGEXT02") kept the positions in the header. Refused (its
     * size differs), never misread; with the new size but the old magic
     * too. */
    const uint64_t v1_0_magic = 0x5341474558543032ull;
    n = fresh_queue("v1_0");
    REQUIRE(poke_u64(n, EXT_OFF(BUF), v1_0_magic));
    REQUIRE(poke_u32(n, EXT_OFF(BUF) + 8, 384));
    truncate_object(n, (off_t)EXT_OFF(BUF) + 384);
    refuse_object(n, "a version-2 object laid out by libring_buffer 1.0");
    n = fresh_queue("v1_0_magic");
    REQUIRE(poke_u64(n, EXT_OFF(BUF), v1_0_magic));
    refuse_object(n, "the extension magic of libring_buffer 1.0");
}

static void test_wrong_real_size(void) {
    /* Truncated before open: the header promises more than the object has;
     * mapping and touching it would SIGBUS. */
    off_t cuts[] = {(off_t)v2_object_size(BUF) - 1, (off_t)EXT_OFF(BUF), 200 + BUF, 200 + BUF - 1,
                    4096, 200, 199, 16, 0};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        const char *n = fresh_queue("trunc");
        truncate_object(n, cuts[i]);
        char what[64];
        snprintf(what, sizeof what, "object truncated to %lld bytes", (long long)cuts[i]);
        refuse_object(n, what);
    }
    /* Grown: larger than the layout says is just as wrong. */
    const char *n = fresh_queue("grown");
    truncate_object(n, (off_t)v2_object_size(BUF) + 4096);
    refuse_object(n, "object larger than its layout");
    /* A 2 GiB buffer_size claimed by a small object: refused from fstat,
     * nothing of that size is mapped. */
    n = fresh_queue("claim2g");
    REQUIRE(poke_u32(n, HDR_SIZE_OFF, 0x80000000u));
    truncate_object(n, 200 + 4096);
    refuse_object(n, "2 GiB claimed, 4 KiB present");
}

static void test_handmade_objects(void) {
    /* Control: a correct legacy (version 1) object made by hand opens and
     * carries messages, so the refusals below are for the flaw alone. */
    const char *n = test_name("hand_v1");
    handmade(n, RING_BUFFER_MAGIC, 1, BUF, 200 + BUF);
    ring_buffer_t *rb = ring_buffer_open(n);
    CHECK(rb != NULL);
    if (rb) {
        char buf[8];
        uint32_t len = 0;
        CHECK_EQ(rb->version, 1);
        CHECK_EQ(ring_buffer_put_msg(rb, "v1", 2, 0), RB_OK);
        CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, 0), RB_OK);
        CHECK_EQ(len, 2);
        ring_buffer_close(rb);
    }
    ring_buffer_destroy(n);
    NEIGHBOUR_OK("a hand-made legacy object");

    n = test_name("hand_v1_512");
    handmade(n, RING_BUFFER_MAGIC, 1, 512, 200 + 512);
    refuse_object(n, "legacy object of 512 bytes (below the minimum)");
    n = test_name("hand_v1_short");
    handmade(n, RING_BUFFER_MAGIC, 1, BUF, 200 + 1000);
    refuse_object(n, "legacy object shorter than its buffer_size");
    n = test_name("hand_v1_long");
    handmade(n, RING_BUFFER_MAGIC, 1, BUF, 200 + 2048);
    refuse_object(n, "legacy object longer than its buffer_size");
    n = test_name("hand_v2_noext");
    handmade(n, RING_BUFFER_MAGIC, 2, BUF, (size_t)v2_object_size(BUF));
    refuse_object(n, "version-2 object with a zeroed extension block");
    n = test_name("hand_empty");
    handmade(n, 0, 0, 0, 0);
    refuse_object(n, "empty file");
    n = test_name("hand_zeros");
    handmade(n, 0, 0, 0, 200);
    refuse_object(n, "200 zero bytes");

    /* A FIFO planted at the name: opening must neither block nor accept. */
    n = test_name("fifo");
    char path[160];
    shm_path(path, sizeof path, n);
    REQUIRE(mkfifo(path, 0600) == 0);
    watchdog(20, "opening a FIFO planted at the object's path");
    refuse_object_ex(n, "a FIFO at the object's path", true);
    watchdog_off();
}

/* --------------------------------------- corrupt state in an open queue */

/* A queue open through the library, and the same object mapped raw as a
 * misbehaving process would. */
struct victim {
    const char *name;
    ring_buffer_t *rb;
    unsigned char *raw;
    size_t raw_size;
    volatile uint64_t *head, *tail;
};

static struct victim open_victim(const char *tag) {
    struct victim v;
    v.name = test_name(tag);
    v.rb = ring_buffer_create_ex(v.name, BUF, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(v.rb != NULL);
    v.raw = map_object(v.name, &v.raw_size);
    REQUIRE(v.raw != NULL && v.raw_size == v2_object_size(BUF));
    /* The authoritative counters of a version-2 object. */
    v.head = (volatile uint64_t *)(v.raw + EXT_OFF(BUF) + EXT_HEAD_OFF);
    v.tail = (volatile uint64_t *)(v.raw + EXT_OFF(BUF) + EXT_TAIL_OFF);
    return v;
}

static void close_victim(struct victim *v) {
    munmap(v->raw, v->raw_size);
    ring_buffer_close(v->rb);
    ring_buffer_destroy(v->name);
}

/* Blocking calls on a corrupt queue must fail at once, not wait for ever:
 * run in a child with a watchdog so a hang is reported, not suffered. */
struct blocking_arg {
    ring_buffer_t *rb;
    int put; /* 1: put_msg, 0: get_msg */
    int expected;
};

static int blocking_child(void *p) {
    struct blocking_arg *a = p;
    char buf[64];
    uint32_t len = 0;
    int rc = a->put ? ring_buffer_put_msg(a->rb, "x", 1, RB_WAIT_FOREVER)
                    : ring_buffer_get_msg(a->rb, buf, sizeof buf, &len, RB_WAIT_FOREVER);
    if (rc != a->expected) {
        fprintf(stderr, "  %s_msg(wait forever) on a corrupt queue: %d (%s), expected %d\n",
                a->put ? "put" : "get", rc, ring_buffer_strerror(rc), a->expected);
        return 1;
    }
    return 0;
}

static void expect_blocking(ring_buffer_t *rb, int put, int expected, const char *what) {
    struct blocking_arg a = {rb, put, expected};
    int rc = run_child(blocking_child, &a, 5);
    if (rc == 128 + SIGALRM)
        fprintf(stderr, "  %s_msg(wait forever) hung on %s\n", put ? "put" : "get", what);
    CHECK_EQ(rc, 0);
}

/* With impossible head/tail, every data call fails with RB_ERR_CORRUPT (or
 * its legacy failure value with that last error) and stores nothing. Each
 * call meets the corrupt counters afresh (a call that wrongly succeeded
 * would otherwise overwrite them and hide the next call's behaviour), and
 * the counters must be unchanged after each. */
#define ON_CORRUPT(v, stmt)                                                        \
    do {                                                                           \
        *(v)->head = bad_head;                                                     \
        *(v)->tail = bad_tail;                                                     \
        stmt;                                                                      \
        CHECK((v)->head[0] == bad_head && (v)->tail[0] == bad_tail);               \
    } while (0)

/* `head_only`: only the consumers' position was written. Producers then
 * work from their cached copy of it, which says there is room, and never
 * look at the consumers' cache line until that copy says "full" (issue 11:
 * each side reads the other's position only when its cache says full or
 * empty): the message puts go ahead, touching only their own side, and are
 * not checked here; everything that reads head (the legacy write, the
 * status calls, every consumer) still reports the corruption. */
static void expect_corrupt_counters(struct victim *v, const char *what, bool head_only) {
    int failures = rbt_failures;
    ring_buffer_t *rb = v->rb;
    const uint64_t bad_head = *v->head, bad_tail = *v->tail;
    char buf[2048];
    uint32_t len = 12345, lens[4] = {0};
    const void *datas[2] = {"ab", "cd"};
    uint32_t dlens[2] = {2, 2};

    ON_CORRUPT(v, CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT),
                           RB_ERR_CORRUPT));
    CHECK_EQ(len, 12345); /* out-parameter untouched on failure */
    ON_CORRUPT(v, CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, 20000000),
                           RB_ERR_CORRUPT));
    ON_CORRUPT(v, CHECK_EQ(ring_buffer_get_many(rb, buf, sizeof buf, lens, 4, RB_NO_WAIT),
                           RB_ERR_CORRUPT));
    if (!head_only) {
        ON_CORRUPT(v, CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, RB_NO_WAIT), RB_ERR_CORRUPT));
        ON_CORRUPT(v, CHECK_EQ(ring_buffer_put_msg(rb, "x", 1, 20000000), RB_ERR_CORRUPT));
        ON_CORRUPT(v, CHECK_EQ(ring_buffer_put_many(rb, datas, dlens, 2, RB_NO_WAIT),
                               RB_ERR_CORRUPT));
        ON_CORRUPT(v, CHECK_EQ(ring_buffer_put_packed(rb, "abcd", dlens, 2, RB_NO_WAIT),
                               RB_ERR_CORRUPT));
    }
    ON_CORRUPT(v, CHECK_EQ(ring_buffer_wait_readable(rb, RB_NO_WAIT), RB_ERR_CORRUPT));
    ON_CORRUPT(v, CHECK_EQ(ring_buffer_wait_readable(rb, 20000000), RB_ERR_CORRUPT));
    ON_CORRUPT(v, CHECK_EQ(ring_buffer_wait_writable(rb, 1, RB_NO_WAIT), RB_ERR_CORRUPT));
    ON_CORRUPT(v, CHECK_EQ(ring_buffer_wait_writable(rb, 1, 20000000), RB_ERR_CORRUPT));
    ON_CORRUPT(v, expect_blocking(rb, 0, RB_ERR_CORRUPT, what));
    if (!head_only) ON_CORRUPT(v, expect_blocking(rb, 1, RB_ERR_CORRUPT, what));

    ON_CORRUPT(v, EXPECT_FAIL(ring_buffer_write(rb, "abcd", 4), -1, RB_ERR_CORRUPT));
    ON_CORRUPT(v, EXPECT_FAIL(ring_buffer_read(rb, buf, 4), -1, RB_ERR_CORRUPT));
    ON_CORRUPT(v, EXPECT_FAIL(ring_buffer_peek(rb, buf, 4), -1, RB_ERR_CORRUPT));
    ON_CORRUPT(v, EXPECT_FAIL(ring_buffer_write_batch(rb, datas, dlens, 2), -1, RB_ERR_CORRUPT));
    void *chunks[4] = {0};
    uint32_t clens[4] = {0};
    ON_CORRUPT(v, EXPECT_FAIL(ring_buffer_read_batch(rb, chunks, clens, 4), -1, RB_ERR_CORRUPT));
    for (int i = 0; i < 4; i++) free(chunks[i]); /* (NULL unless the call wrongly succeeded) */
    CHECK(chunks[0] == NULL);

    /* Whatever the status calls answer, it stays within the ring. */
    ON_CORRUPT(v, CHECK(ring_buffer_available_read(rb) < BUF));
    ON_CORRUPT(v, CHECK(ring_buffer_available_write(rb) < BUF));
    ring_buffer_stats_t st;
    memset(&st, 0, sizeof st);
    ON_CORRUPT(v, ring_buffer_get_stats(rb, &st));
    CHECK(st.available_read < BUF && st.utilization >= 0.0 && st.utilization < 1.0);

    /* head > tail can never be a transient view (tail never falls behind a
     * head read before it): the status calls report it as corruption. */
    if (bad_head > bad_tail) {
        ON_CORRUPT(v, EXPECT_FAIL(ring_buffer_available_read(rb), 0, RB_ERR_CORRUPT));
        ON_CORRUPT(v, EXPECT_FAIL(ring_buffer_available_write(rb), 0, RB_ERR_CORRUPT));
        ON_CORRUPT(v, EXPECT_LAST_ERROR(CHECK(ring_buffer_is_empty(rb)), RB_ERR_CORRUPT));
        ON_CORRUPT(v, EXPECT_LAST_ERROR(CHECK(ring_buffer_is_full(rb)), RB_ERR_CORRUPT));
        memset(&st, 0xab, sizeof st);
        ON_CORRUPT(v, EXPECT_LAST_ERROR(ring_buffer_get_stats(rb, &st), RB_ERR_CORRUPT));
        CHECK_EQ(st.buffer_size, 0xabababab); /* left untouched on failure */
        ring_buffer_stats_ex_t sx;
        memset(&sx, 0xab, sizeof sx);
        ON_CORRUPT(v, EXPECT_LAST_ERROR(ring_buffer_get_stats_ex(rb, &sx), RB_ERR_CORRUPT));
        CHECK_EQ(sx.buffer_size, 0xabababab);
    }
    if (rbt_failures != failures) fprintf(stderr, "  ^ with %s\n", what);
}

/* After the counters are put back, the queue must work as before: a
 * refused call left no trace in the shared state. */
static void expect_recovered(struct victim *v, uint64_t head, uint64_t tail, const char *what) {
    *v->head = head;
    *v->tail = tail;
    char buf[64];
    uint32_t len = 0;
    int failures = rbt_failures;
    CHECK_EQ(ring_buffer_put_msg(v->rb, "again", 5, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_get_msg(v->rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 5 && memcmp(buf, "again", 5) == 0);
    CHECK_EQ(ring_buffer_msg_count(v->rb), 0);
    if (rbt_failures != failures) fprintf(stderr, "  ^ after repairing %s\n", what);
    NEIGHBOUR_OK(what);
}

static void test_corrupt_counters(void) {
    struct {
        int64_t head_delta, tail_delta; /* from the (equal) counters after warm-up */
        uint64_t head_abs, tail_abs;    /* used instead when both deltas are 0 */
        const char *what;
    } cases[] = {
        {8, 0, 0, 0, "head > tail"},
        {1, 0, 0, 0, "head = tail + 1"},
        {0, 0, UINT64_MAX, 5, "head near 2^64, tail small"},
        {0, BUF + 1, 0, 0, "tail - head = buffer_size + 1"},
        {0, (int64_t)1 << 40, 0, 0, "tail - head = 2^40"},
        {0, 0, 0, UINT64_MAX, "tail - head = 2^64 - 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* A fresh queue per case, so that one case cannot spoil the next. */
        struct victim v = open_victim("counters");
        char buf[64];
        uint32_t len;
        /* Some traffic first, so the counters are past the start of the
         * ring and every cached copy of them is warm. */
        for (int k = 0; k < 150; k++) {
            REQUIRE(ring_buffer_put_msg(v.rb, "warm-up", 7, 0) == RB_OK);
            REQUIRE(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, 0) == RB_OK);
        }
        const uint64_t h = *v.head, t = *v.tail;
        REQUIRE(h == t && h == 150 * 11);
        if (cases[i].head_delta || cases[i].tail_delta) {
            *v.head = h + (uint64_t)cases[i].head_delta;
            *v.tail = t + (uint64_t)cases[i].tail_delta;
        } else {
            *v.head = cases[i].head_abs;
            *v.tail = cases[i].tail_abs;
        }
        int failures = rbt_failures;
        expect_corrupt_counters(&v, cases[i].what, *v.tail == t);
        /* Recovery means something only if the corrupt state was refused:
         * a call that went ahead moved state that restoring the header
         * cannot bring back, and would be reported twice. */
        if (rbt_failures == failures)
            expect_recovered(&v, h, t, cases[i].what);
        else
            fprintf(stderr, "  (recovery after \"%s\" not checked: the corrupt state was "
                            "not refused)\n",
                    cases[i].what);
        close_victim(&v);
    }
}

/* Offset in the raw object of stream position `pos`. */
static size_t data_at(uint64_t pos) {
    return DATA_OFF + (size_t)(pos & (BUF - 1));
}

static void set_prefix(struct victim *v, uint64_t pos, uint32_t value) {
    for (int i = 0; i < 4; i++) v->raw[data_at(pos + (uint64_t)i)] = (unsigned char)(value >> (8 * i));
}

static void test_corrupt_prefixes(void) {
    struct victim v = open_victim("prefix");
    char buf[2048];
    uint32_t len = 0, lens[4];
    /* Move the stream so that the prefix straddles the end of the ring. */
    for (int i = 0; i < 93; i++) {
        REQUIRE(ring_buffer_put_msg(v.rb, "seven..", 7, 0) == RB_OK);
        REQUIRE(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, 0) == RB_OK);
    }
    REQUIRE((*v.head & (BUF - 1)) == 1023);

    /* A prefix larger than the whole ring can never have been written. */
    uint32_t huge[] = {BUF - 4, BUF, 0x80000000u, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof huge / sizeof *huge; i++) {
        uint64_t head = *v.head, tail = *v.tail;
        REQUIRE(ring_buffer_put_msg(v.rb, "hello", 5, 0) == RB_OK);
        set_prefix(&v, head, huge[i]);
        char what[64];
        snprintf(what, sizeof what, "a length prefix of %u in a %u-byte ring", huge[i], BUF);
        int failures = rbt_failures;
        len = 777;
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_ERR_CORRUPT);
        CHECK_EQ(len, 777);
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, 20000000), RB_ERR_CORRUPT);
        CHECK_EQ(ring_buffer_get_many(v.rb, buf, sizeof buf, lens, 4, RB_NO_WAIT), RB_ERR_CORRUPT);
        expect_blocking(v.rb, 0, RB_ERR_CORRUPT, what);
        CHECK_EQ(*v.head, head); /* nothing consumed */
        /* The legacy raw calls do not interpret frames: they still move
         * bytes, within bounds. */
        unsigned char raw4[4];
        CHECK_EQ(ring_buffer_peek(v.rb, raw4, 4), 4);
        CHECK_EQ((uint32_t)raw4[0] | (uint32_t)raw4[1] << 8 | (uint32_t)raw4[2] << 16 |
                     (uint32_t)raw4[3] << 24,
                 huge[i]);
        if (rbt_failures != failures) fprintf(stderr, "  ^ with %s\n", what);
        /* Put the prefix back: the message comes out intact. */
        set_prefix(&v, head, 5);
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
        CHECK(len == 5 && memcmp(buf, "hello", 5) == 0);
        CHECK_EQ(*v.tail, tail + 9);
        expect_recovered(&v, *v.head, *v.tail, what);
    }

    /* The second message of a batch is the corrupt one: get_many hands out
     * the first, then the next call reports the corruption. */
    {
        uint64_t head = *v.head;
        REQUIRE(ring_buffer_put_msg(v.rb, "first", 5, 0) == RB_OK);
        REQUIRE(ring_buffer_put_msg(v.rb, "second", 6, 0) == RB_OK);
        set_prefix(&v, head + 9, 0xFFFFFF00u);
        CHECK_EQ(ring_buffer_get_many(v.rb, buf, sizeof buf, lens, 4, RB_NO_WAIT), 1);
        CHECK(lens[0] == 5 && memcmp(buf, "first", 5) == 0);
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_ERR_CORRUPT);
        set_prefix(&v, head + 9, 6);
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
        CHECK(len == 6 && memcmp(buf, "second", 6) == 0);
        NEIGHBOUR_OK("a corrupt prefix in the middle of a batch");
    }

    /* A prefix larger than what is queued, in a queue whose producers only
     * ever wrote whole messages (so the stream ends on a frame boundary):
     * the frame runs past the end of the data, which no writer produced. */
    uint32_t past[] = {6, 100, BUF - 5};
    for (size_t i = 0; i < sizeof past / sizeof *past; i++) {
        uint64_t head = *v.head, tail = *v.tail;
        REQUIRE(ring_buffer_put_msg(v.rb, "hello", 5, 0) == RB_OK);
        set_prefix(&v, head, past[i]);
        char what[80];
        snprintf(what, sizeof what, "a length prefix of %u with 5 payload bytes queued", past[i]);
        int failures = rbt_failures;
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_ERR_CORRUPT);
        CHECK_EQ(ring_buffer_get_many(v.rb, buf, sizeof buf, lens, 4, RB_NO_WAIT), RB_ERR_CORRUPT);
        expect_blocking(v.rb, 0, RB_ERR_CORRUPT, what);
        CHECK_EQ(*v.head, head);
        if (rbt_failures != failures) fprintf(stderr, "  ^ with %s\n", what);
        set_prefix(&v, head, 5);
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
        CHECK(len == 5 && memcmp(buf, "hello", 5) == 0);
        CHECK_EQ(*v.tail, tail + 9);
        NEIGHBOUR_OK(what);
    }

    /* The boundary of that rule: a legacy producer may write a prefix and
     * its payload in two ring_buffer_write calls. In between, the frame also
     * runs past the queued bytes, and that is not corruption. */
    {
        uint32_t prefix = 10;
        CHECK_EQ(ring_buffer_write(v.rb, &prefix, 4), 4);
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_ERR_EMPTY);
        CHECK_EQ(ring_buffer_write(v.rb, "0123456789", 10), 10);
        CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
        CHECK(len == 10 && memcmp(buf, "0123456789", 10) == 0);
        NEIGHBOUR_OK("a legacy prefix written apart from its payload");
    }
    close_victim(&v);
}

/* A process running the legacy library on a version-2 queue moves the
 * header's head/tail itself, while this library keeps the authoritative
 * counters in the extension block and only mirrors them there (every legacy
 * and status call brings the copies up to date, never ahead of the real
 * counters). The next legacy or status call finds a copy ahead of the real
 * counter and refuses with RB_ERR_CORRUPT, storing nothing; once the header
 * is put back, everything works and the mirror follows again. */
static void test_header_counters_moved_by_another_library(void) {
    struct victim v = open_victim("foreign");
    volatile uint64_t *hdr_head = (volatile uint64_t *)(v.raw + HDR_HEAD_OFF);
    volatile uint64_t *hdr_tail = (volatile uint64_t *)(v.raw + HDR_TAIL_OFF);
    char buf[64];
    uint32_t len = 0;
    uint64_t n = 0;
    int failures = rbt_failures;
    REQUIRE(ring_buffer_put_msg(v.rb, "abc", 3, RB_NO_WAIT) == RB_OK);
    CHECK_EQ(ring_buffer_available_read(v.rb), 7);
    CHECK(*hdr_tail == 7 && *hdr_head == 0);

    /* A legacy writer "published" 10 more bytes in the header only. */
    *hdr_tail = 17;
    EXPECT_FAIL(ring_buffer_write(v.rb, "abcd", 4), -1, RB_ERR_CORRUPT);
    EXPECT_FAIL(ring_buffer_read(v.rb, buf, 7), -1, RB_ERR_CORRUPT);
    EXPECT_FAIL(ring_buffer_peek(v.rb, buf, 4), -1, RB_ERR_CORRUPT);
    EXPECT_FAIL(ring_buffer_available_read(v.rb), 0, RB_ERR_CORRUPT);
    EXPECT_CODE(ring_buffer_msg_count_checked(v.rb, &n), RB_ERR_CORRUPT);
    CHECK(*hdr_tail == 17 && *v.tail == 7 && *v.head == 0);

    /* A legacy reader "consumed" 5 bytes in the header only. */
    *hdr_tail = 7;
    *hdr_head = 5;
    EXPECT_FAIL(ring_buffer_read(v.rb, buf, 7), -1, RB_ERR_CORRUPT);
    ring_buffer_stats_t st;
    memset(&st, 0xab, sizeof st);
    EXPECT_LAST_ERROR(ring_buffer_get_stats(v.rb, &st), RB_ERR_CORRUPT);
    CHECK_EQ(st.buffer_size, 0xabababab);
    CHECK(*hdr_head == 5 && *v.head == 0);

    /* Put back: the message is still there, and the copies follow. */
    *hdr_head = 0;
    CHECK_EQ(ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 3 && memcmp(buf, "abc", 3) == 0);
    CHECK_EQ(ring_buffer_write(v.rb, "abcd", 4), 4);
    CHECK(*hdr_head == 7 && *hdr_tail == 11);
    if (rbt_failures != failures) fprintf(stderr, "  ^ with header counters moved by another library\n");
    close_victim(&v);
    NEIGHBOUR_OK("header counters moved by another library");
}

/* The header's identity fields rewritten under an open handle: the library
 * keeps using what it validated at open (the mapping's real size), never the
 * new buffer_size, so a full trip round the ring stays inside it. */
static void test_header_rewritten_while_open(void) {
    struct victim v = open_victim("rewritten");
    poke_u64(v.name, HDR_MAGIC_OFF, 0);
    poke_u32(v.name, HDR_VERSION_OFF, 7);
    poke_u32(v.name, HDR_SIZE_OFF, 0x80000000u);
    int failures = rbt_failures;
    char msg[100], buf[128];
    uint32_t len = 0;
    long ok = 0;
    for (int i = 0; i < 64; i++) { /* 64 x 104 bytes: round the 1024-byte ring 6 times */
        memset(msg, 'a' + i % 26, sizeof msg);
        if (ring_buffer_put_msg(v.rb, msg, sizeof msg, RB_NO_WAIT) == RB_OK &&
            ring_buffer_get_msg(v.rb, buf, sizeof buf, &len, RB_NO_WAIT) == RB_OK &&
            len == sizeof msg && memcmp(buf, msg, sizeof msg) == 0)
            ok++;
    }
    CHECK_EQ(ok, 64);
    CHECK(*v.head < 64 * 104 + 1 && *v.tail == *v.head);
    /* A new opener sees the bad header and refuses it. */
    EXPECT_NULL(ring_buffer_open(v.name), RB_ERR_INCOMPATIBLE);
    /* The name field without a NUL: a ref copies at most 63 bytes of it and
     * terminates them. */
    memset(v.raw + HDR_NAME_OFF, 'N', 64);
    ring_buffer_ref_t *ref = ring_buffer_get_ref(v.rb);
    CHECK(ref != NULL);
    if (ref) {
        CHECK_EQ(strnlen(ref->name, sizeof ref->name), 63);
        ring_buffer_release_ref(ref);
    }
    if (rbt_failures != failures) fprintf(stderr, "  ^ with the header rewritten under an open handle\n");
    close_victim(&v);
    NEIGHBOUR_OK("the header rewritten under an open handle");
}

/* ------------------------------------------ garbage during live traffic */

#define STORM_BUF 4096u

/* Counters shared by the storm's processes (MAP_SHARED | MAP_ANONYMOUS). */
struct storm {
    volatile int stop;
    volatile int spray;
    volatile long puts_ok, put_timeouts, put_other;
    volatile long gets_ok, get_timeouts, get_corrupt, get_other, resyncs;
    volatile long sprays;
    volatile long bad_len;
    ring_buffer_t *rb;
    const char *name;
};

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int storm_producer(void *p) {
    struct storm *s = p;
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    unsigned char msg[300];
    while (!s->stop) {
        uint32_t len = (uint32_t)(xorshift(&seed) % sizeof msg);
        memset(msg, (int)(len & 0xff), len);
        int rc = ring_buffer_put_msg(s->rb, msg, len, 5000000);
        /* Garbage in the data area never touches the counters, so a producer
         * only ever succeeds or times out. */
        if (rc == RB_OK)
            s->puts_ok++;
        else if (rc == RB_ERR_TIMEOUT)
            s->put_timeouts++;
        else {
            s->put_other++;
            fprintf(stderr, "  storm producer: put_msg returned %d (%s)\n", rc,
                    ring_buffer_strerror(rc));
        }
    }
    return 0;
}

static int storm_consumer(void *p) {
    struct storm *s = p;
    unsigned char buf[STORM_BUF];
    uint32_t lens[16];
    uint64_t seed = 0x2545f4914f6cdd1dull ^ (uint64_t)getpid();
    int stalled = 0; /* timeouts in a row */
    while (!s->stop) {
        uint32_t len = UINT32_MAX;
        int rc;
        if (xorshift(&seed) % 4 == 0) {
            rc = ring_buffer_get_many(s->rb, buf, sizeof buf, lens, 16, 5000000);
            if (rc > 0) {
                uint64_t sum = 0;
                for (int i = 0; i < rc; i++) sum += lens[i];
                if (rc > 16 || sum > sizeof buf) s->bad_len++;
                rc = RB_OK;
            }
        } else {
            rc = ring_buffer_get_msg(s->rb, buf, sizeof buf, &len, 5000000);
            if (rc == RB_OK && len > STORM_BUF - 5) s->bad_len++;
        }
        if (rc == RB_OK) {
            s->gets_ok++;
            stalled = 0;
        } else if (rc == RB_ERR_TIMEOUT && ++stalled < 20) {
            s->get_timeouts++;
        } else if (rc == RB_ERR_CORRUPT || rc == RB_ERR_TIMEOUT) {
            /* Stuck on a garbage prefix (reported, or waited on because it
             * reaches past the queued bytes): drain the raw bytes with the
             * legacy call to get going again (the stream restarts at the
             * tail, where producers always leave a frame boundary). */
            if (rc == RB_ERR_CORRUPT) s->get_corrupt++;
            else s->get_timeouts++;
            stalled = 0;
            void *chunks[8];
            uint32_t clens[8];
            int n = ring_buffer_read_batch(s->rb, chunks, clens, 8);
            if (n < -1 || n > 8) s->get_other++;
            for (int i = 0; i < n; i++) {
                if (clens[i] == 0 || clens[i] > 1024) s->bad_len++;
                free(chunks[i]);
            }
            s->resyncs++;
        } else {
            s->get_other++;
            fprintf(stderr, "  storm consumer: get returned %d (%s)\n", rc,
                    ring_buffer_strerror(rc));
        }
        /* Status calls on the sprayed queue must answer within range. */
        if (ring_buffer_available_read(s->rb) >= STORM_BUF) s->bad_len++;
        (void)ring_buffer_msg_count(s->rb);
    }
    return 0;
}

static int storm_sprayer(void *p) {
    struct storm *s = p;
    size_t size = 0;
    unsigned char *raw = map_object(s->name, &size);
    if (!raw) return 2;
    uint64_t seed = 0xdeadbeefcafef00dull ^ (uint64_t)getpid();
    while (!s->spray && !s->stop) usleep(1000);
    while (!s->stop) {
        uint64_t r = xorshift(&seed);
        if (r % 64 == 0) {
            memset(raw + DATA_OFF, (int)(r >> 8), STORM_BUF); /* everything at once */
        } else {
            size_t off = (size_t)(r >> 16) % STORM_BUF, n = 1 + (size_t)(r >> 40) % 64;
            if (off + n > STORM_BUF) n = STORM_BUF - off;
            for (size_t i = 0; i < n; i++) raw[DATA_OFF + off + i] = (unsigned char)xorshift(&seed);
        }
        s->sprays++;
        if (s->sprays % 16 == 0) usleep(100);
    }
    munmap(raw, size);
    return 0;
}

static void test_garbage_storm(void) {
    struct storm *s = shared_memory(sizeof *s);
    s->name = test_name("storm");
    s->rb = ring_buffer_create_ex(s->name, STORM_BUF, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(s->rb != NULL);

    int (*roles[3])(void *) = {storm_producer, storm_consumer, storm_sprayer};
    const char *role_names[3] = {"producer", "consumer", "sprayer"};
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            signal(SIGALRM, SIG_DFL);
            alarm(60); /* a hang inside the library ends here, reported below */
            _exit(roles[i](s));
        }
    }
    /* Clean traffic first, then garbage; the neighbour is tried meanwhile.
     * The children's own watchdogs (60 s) fire first if one of them hangs. */
    watchdog(150, "the garbage storm (parent waiting for its three processes)");
    double t0 = now_s();
    while (s->gets_ok < 200 && now_s() - t0 < 20) usleep(1000);
    CHECK(s->gets_ok >= 200);
    s->spray = 1;
    double storm_s = under_valgrind() ? 3.0 : 1.5;
    t0 = now_s();
    while (now_s() - t0 < storm_s) {
        NEIGHBOUR_OK("garbage sprayed over another queue (during the storm)");
        usleep(50000);
    }
    s->stop = 1;
    for (int i = 0; i < 3; i++) {
        int rc = wait_child(pids[i]);
        if (rc != 0) fprintf(stderr, "  storm %s exited with %d\n", role_names[i], rc);
        CHECK_EQ(rc, 0);
    }
    watchdog_off();
    printf("garbage storm: %ld puts, %ld gets, %ld corrupt (resynced), %ld get/%ld put timeouts, "
           "%ld sprays\n",
           s->puts_ok, s->gets_ok, s->get_corrupt, s->get_timeouts, s->put_timeouts, s->sprays);
    CHECK(s->puts_ok > 0);
    CHECK(s->sprays > 0);
    CHECK_EQ(s->put_other, 0);
    CHECK_EQ(s->get_other, 0);
    CHECK_EQ(s->bad_len, 0);

    /* The sprayed queue still answers (anything but a crash or a hang). */
    watchdog(20, "get_msg on the sprayed queue after the storm");
    char buf[STORM_BUF];
    uint32_t len;
    int rc = ring_buffer_get_msg(s->rb, buf, sizeof buf, &len, RB_NO_WAIT);
    CHECK(rc == RB_OK || rc == RB_ERR_EMPTY || rc == RB_ERR_CORRUPT);
    watchdog_off();
    ring_buffer_close(s->rb);
    ring_buffer_destroy(s->name);
    NEIGHBOUR_OK("the garbage storm");
    munmap((void *)s, sizeof *s);
}

int main(void) {
    rbt_init();
    double t0 = now_s();
    neighbour_open();
    test_bad_headers();
    test_wrong_real_size();
    test_handmade_objects();
    test_corrupt_counters();
    test_corrupt_prefixes();
    test_header_rewritten_while_open();
    test_header_counters_moved_by_another_library();
    test_garbage_storm();
    ring_buffer_close(rbt_neighbour);
    printf("test_hostile_segments: %.1f s\n", now_s() - t0);
    return rbt_finish("test_hostile_segments");
}
