/* Legacy consuming reads of a framed stream never split or merge messages.
 *
 * The legacy Python wrapper's get() is two calls, peek(4) then
 * read(4 + L). With two consumers both may peek the same L, and the second
 * read then took bytes of the next message(s): messages lost and corrupted.
 * Now a consuming read of a stream that holds only whole frames must take
 * exactly one whole frame, or exactly a prefix (the single-consumer
 * read(4)-then-read(L) pattern), or exactly the rest of the frame whose
 * prefix was taken; anything else fails with -1 and RB_ERR_FRAMING, nothing
 * consumed, and the wrapper's retry loop peeks again. Streams that ever held
 * bytes that are not whole frames (raw byte streams, a prefix written apart
 * from its payload) keep the legacy byte semantics. */
#include "check.h"

#include <stdatomic.h>
#include <sys/mman.h>

#define RING 4096u

/* ------------------------------------------------------------ one process */

static void put_frame(ring_buffer_t *rb, const char *payload) {
    unsigned char frame[256];
    uint32_t len = (uint32_t)strlen(payload);
    memcpy(frame, &len, 4); /* little-endian on every supported target */
    memcpy(frame + 4, payload, len);
    CHECK_EQ(ring_buffer_write(rb, frame, 4 + len), 4 + len);
}

static void test_rules(void) {
    stage = "framing rules";
    const char *name = test_name("frules");
    ring_buffer_t *rb = ring_buffer_create(name, RING);
    REQUIRE(rb);
    char buf[64];
    put_frame(rb, "hello");
    CHECK_EQ(ring_buffer_put_msg(rb, "world!!", 7, 0), RB_OK);
    /* Part of a prefix, a prefix and part of the payload, two frames: no. */
    EXPECT_FAIL(ring_buffer_read(rb, buf, 3), -1, RB_ERR_FRAMING);
    EXPECT_FAIL(ring_buffer_read(rb, buf, 6), -1, RB_ERR_FRAMING);
    EXPECT_FAIL(ring_buffer_read(rb, buf, 4 + 5 + 4 + 7), -1, RB_ERR_FRAMING);
    CHECK_EQ(ring_buffer_available_read(rb), 4 + 5 + 4 + 7); /* nothing consumed */
    /* Peeking is free. */
    CHECK_EQ(ring_buffer_peek(rb, buf, 6), 6);
    /* read(4) then read(L): the single-consumer legacy pattern. */
    CHECK_EQ(ring_buffer_read(rb, buf, 4), 4);
    EXPECT_FAIL(ring_buffer_read(rb, buf, 4), -1, RB_ERR_FRAMING); /* 5 payload bytes left */
    CHECK_EQ(ring_buffer_read(rb, buf, 5), 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    /* peek(4) then read(4 + L): the wrapper's get. */
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_peek(rb, &len, 4), 4);
    CHECK_EQ(len, 7);
    CHECK_EQ(ring_buffer_read(rb, buf, 4 + len), 4 + 7);
    CHECK(memcmp(buf + 4, "world!!", 7) == 0);
    EXPECT_FAIL(ring_buffer_read(rb, buf, 4), -1, RB_ERR_EMPTY);
    /* read_batch drains whole frames only. */
    put_frame(rb, "abc");
    put_frame(rb, "defgh");
    void *chunks[4] = {0};
    uint32_t lens[4] = {0};
    CHECK_EQ(ring_buffer_read_batch(rb, chunks, lens, 4), 1);
    CHECK_EQ(lens[0], 4 + 3 + 4 + 5);
    free(chunks[0]);
    /* A message count that stayed exact through all of it. */
    CHECK_EQ(ring_buffer_msg_count(rb), 0);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

static void test_raw_streams_keep_byte_semantics(void) {
    stage = "raw streams";
    char buf[64];
    /* Bytes that were never framed. */
    const char *name = test_name("fraw");
    ring_buffer_t *rb = ring_buffer_create(name, RING);
    REQUIRE(rb);
    CHECK_EQ(ring_buffer_write(rb, "hello world", 11), 11);
    CHECK_EQ(ring_buffer_read(rb, buf, 5), 5);
    CHECK_EQ(ring_buffer_read(rb, buf + 5, 6), 6);
    CHECK(memcmp(buf, "hello world", 11) == 0);
    /* ... and from then on the stream is bytes, framed writes or not. */
    put_frame(rb, "framed");
    CHECK_EQ(ring_buffer_read(rb, buf, 2), 2);
    CHECK_EQ(ring_buffer_read(rb, buf, 8), 8);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);

    /* A legacy producer writing prefix and payload in two calls, a legacy
     * consumer reading them in any pieces. */
    name = test_name("ftwo");
    rb = ring_buffer_create(name, RING);
    REQUIRE(rb);
    uint32_t len = 6;
    CHECK_EQ(ring_buffer_write(rb, &len, 4), 4);
    CHECK_EQ(ring_buffer_write(rb, "abcdef", 6), 6);
    CHECK_EQ(ring_buffer_read(rb, buf, 2), 2);
    CHECK_EQ(ring_buffer_read(rb, buf, 5), 5);
    CHECK_EQ(ring_buffer_read(rb, buf, 3), 3);
    CHECK_EQ(ring_buffer_msg_count(rb), 0);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* ------------------------------------------------------------ processes */

#define PRODUCERS 2
#define CONSUMERS 3
#define MAX_PER_PRODUCER 20000

struct tally {
    atomic_uint seen[PRODUCERS][MAX_PER_PRODUCER];
    atomic_uint corrupt;
    atomic_uint received;
};

static unsigned per_producer;

static uint32_t payload_len(unsigned producer, unsigned seq) {
    uint32_t h = rbt_mix(producer * 1000003u + seq);
    return 8 + (h % 13 == 0 ? h % 1500 : h % 120);
}

static unsigned char payload_byte(unsigned producer, unsigned seq, uint32_t i) {
    return (unsigned char)(rbt_mix(producer * 7919u + seq * 31u) + i * 17u);
}

/* The legacy wrapper's put: check the free space, write(4 + L), retry. */
static int producer(const char *name, unsigned id) {
    ring_buffer_t *rb = ring_buffer_open(name);
    if (!rb) return 20;
    unsigned char frame[4 + 8 + 1500];
    for (unsigned seq = 0; seq < per_producer; seq++) {
        uint32_t len = payload_len(id, seq);
        memcpy(frame, &len, 4);
        uint32_t ids[2] = {id, seq};
        memcpy(frame + 4, ids, 8);
        for (uint32_t i = 8; i < len; i++) frame[4 + i] = payload_byte(id, seq, i);
        for (;;) {
            if (ring_buffer_available_write(rb) >= 4 + len && ring_buffer_write(rb, frame, 4 + len) == (int)(4 + len))
                break;
            usleep(50);
        }
    }
    ring_buffer_close(rb);
    return 0;
}

/* The legacy wrapper's get: peek(4), then read(4 + L); on -1 try again. */
static int consumer(const char *name, struct tally *t, unsigned total) {
    ring_buffer_t *rb = ring_buffer_open(name);
    if (!rb) return 30;
    unsigned char buf[4 + 8 + 1500 + 64];
    while (atomic_load(&t->received) < total) {
        uint32_t len = 0;
        if (ring_buffer_peek(rb, &len, 4) != 4) {
            usleep(50);
            continue;
        }
        if (len > sizeof buf - 4 || ring_buffer_read(rb, buf, 4 + len) != (int)(4 + len)) {
            usleep(10);
            continue;
        }
        uint32_t ids[2];
        if (len < 8) {
            atomic_fetch_add(&t->corrupt, 1);
            atomic_fetch_add(&t->received, 1);
            continue;
        }
        memcpy(ids, buf + 4, 8);
        bool ok = ids[0] < PRODUCERS && ids[1] < per_producer && len == payload_len(ids[0], ids[1]);
        for (uint32_t i = 8; ok && i < len; i++) ok = buf[4 + i] == payload_byte(ids[0], ids[1], i);
        if (ok) atomic_fetch_add(&t->seen[ids[0]][ids[1]], 1);
        else atomic_fetch_add(&t->corrupt, 1);
        atomic_fetch_add(&t->received, 1);
    }
    ring_buffer_close(rb);
    return 0;
}

static void test_many_wrapper_consumers(void) {
    per_producer = under_valgrind() ? 1500 : MAX_PER_PRODUCER;
    unsigned total = PRODUCERS * per_producer;
    watchdog(valgrind_scaled(120), "wrapper producers and consumers");
    const char *name = test_name("fmulti");
    ring_buffer_t *rb = ring_buffer_create(name, RING);
    REQUIRE(rb);
    struct tally *t = shared_memory(sizeof *t);
    pid_t pids[PRODUCERS + CONSUMERS];
    for (unsigned i = 0; i < PRODUCERS + CONSUMERS; i++) {
        pids[i] = fork_child(valgrind_scaled(110));
        if (pids[i] == 0) _exit(i < PRODUCERS ? producer(name, i) : consumer(name, t, total));
    }
    for (unsigned i = 0; i < PRODUCERS + CONSUMERS; i++) CHECK_EQ(wait_child(pids[i]), 0);
    unsigned lost = 0, duplicated = 0;
    for (unsigned p = 0; p < PRODUCERS; p++)
        for (unsigned s = 0; s < per_producer; s++) {
            unsigned n = atomic_load(&t->seen[p][s]);
            lost += n == 0;
            duplicated += n > 1;
        }
    printf("  %u wrapper-framed messages, %d producers, %d consumers: %u lost, %u duplicated, %u corrupt\n",
           total, PRODUCERS, CONSUMERS, lost, duplicated, atomic_load(&t->corrupt));
    CHECK_EQ(lost, 0);
    CHECK_EQ(duplicated, 0);
    CHECK_EQ(atomic_load(&t->corrupt), 0);
    CHECK_EQ(atomic_load(&t->received), total);
    CHECK_EQ(ring_buffer_available_read(rb), 0);
    munmap(t, sizeof *t);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    watchdog_off();
}

int main(void) {
    rbt_init();
    watchdog(valgrind_scaled(30), "start");
    test_rules();
    test_raw_streams_keep_byte_semantics();
    test_many_wrapper_consumers();
    return rbt_finish("test_legacy_framed_reads");
}
