/* Two processes streaming framed messages through a small ring, the way the
 * legacy Python wrapper frames them: one ring_buffer_write of 4 + L bytes
 * (4-byte little-endian L, then L payload bytes), and on the other side
 * ring_buffer_peek(4) to learn L, then ring_buffer_read(4 + L).
 *
 * Three variants share one framing:
 *   legacy write  -> legacy peek/read
 *   legacy write  -> ring_buffer_get_msg      (new reader, legacy writer)
 *   put_msg       -> legacy peek/read         (legacy reader, new writer)
 * Every payload byte is derived from (sequence, index), so the consumer
 * verifies each one, and the lengths (0 up to the largest frame the ring
 * holds) come from the sequence number too, so lost, duplicated, reordered
 * or torn messages are all detected. A 4096-byte ring wraps thousands of
 * times. */
#include "check.h"

#include <sched.h>

#define RING 4096u
#define MAX_PAYLOAD (RING - 1 - 4) /* one byte always stays free */

static unsigned count; /* messages per variant */

/* Payload length of message `seq`: mostly small, regularly empty, some
 * large ones, and now and then the largest frame the ring can hold (it only
 * fits once the ring is completely drained). */
static uint32_t msg_len(uint32_t seq) {
    uint32_t h = rbt_mix(seq + 1);
    if (seq % 97 == 0) return 0;
    if (seq % 1009 == 500) return MAX_PAYLOAD;
    if (seq % 13 == 0) return 1000 + h % 2000;
    return h % 300;
}

static unsigned char msg_byte(uint32_t seq, uint32_t i) {
    return (unsigned char)(rbt_mix(seq * 2654435761u) + i * 131u + (i >> 8));
}

static void make_frame(uint32_t seq, unsigned char *frame) {
    uint32_t len = msg_len(seq);
    frame[0] = (unsigned char)len;
    frame[1] = (unsigned char)(len >> 8);
    frame[2] = (unsigned char)(len >> 16);
    frame[3] = (unsigned char)(len >> 24);
    for (uint32_t i = 0; i < len; i++) frame[4 + i] = msg_byte(seq, i);
}

/* Index of the first wrong payload byte, or -1. */
static long first_bad_byte(uint32_t seq, const unsigned char *payload, uint32_t len) {
    for (uint32_t i = 0; i < len; i++)
        if (payload[i] != msg_byte(seq, i)) return (long)i;
    return -1;
}

enum writer_kind { LEGACY_WRITE, PUT_MSG };
enum reader_kind { LEGACY_READ, GET_MSG };

/* Child: opens the queue by name and streams `count` messages. Exit code 0
 * on success, otherwise a code saying what went wrong. */
static void producer(const char *name, enum writer_kind kind) {
    ring_buffer_t *rb = ring_buffer_open(name);
    if (!rb) _exit(10);
    static unsigned char frame[4 + MAX_PAYLOAD];
    for (uint32_t seq = 0; seq < count; seq++) {
        make_frame(seq, frame);
        uint32_t len = msg_len(seq);
        if (kind == LEGACY_WRITE) {
            /* The legacy wrapper's put: retry while the ring is full. */
            int rc;
            while ((rc = ring_buffer_write(rb, frame, 4 + len)) < 0) {
                if (ring_buffer_last_error() != RB_ERR_FULL) _exit(11);
                sched_yield();
            }
            if (rc != (int)(4 + len)) _exit(12);
        } else {
            if (ring_buffer_put_msg(rb, frame + 4, len, RB_WAIT_FOREVER) != RB_OK) _exit(13);
        }
    }
    ring_buffer_close(rb);
    _exit(0);
}

/* Parent: consumes and verifies `count` messages; returns how many were
 * right before the first wrong one (== count when all were right). */
static unsigned consume(ring_buffer_t *rb, enum reader_kind kind, const char *variant) {
    static unsigned char frame[4 + MAX_PAYLOAD];
    for (uint32_t seq = 0; seq < count; seq++) {
        uint32_t want = msg_len(seq), len = 0;
        const unsigned char *payload = frame + 4;
        if (kind == LEGACY_READ) {
            /* The legacy wrapper's get: peek the length, then read it all. */
            while (ring_buffer_peek(rb, frame, 4) < 0) {
                if (ring_buffer_last_error() != RB_ERR_EMPTY) {
                    fprintf(stderr, "%s: peek failed with %d at message %u\n", variant,
                            ring_buffer_last_error(), seq);
                    return seq;
                }
                sched_yield();
            }
            len = (uint32_t)frame[0] | (uint32_t)frame[1] << 8 | (uint32_t)frame[2] << 16 |
                  (uint32_t)frame[3] << 24;
            if (len != want) {
                fprintf(stderr, "%s: message %u has length %u, expected %u\n", variant, seq, len,
                        want);
                return seq;
            }
            /* Writes are all or nothing, so once the prefix is visible the
             * whole frame is: the read must succeed at the first try. */
            int rc = ring_buffer_read(rb, frame, 4 + len);
            if (rc != (int)(4 + len)) {
                fprintf(stderr, "%s: read(4 + %u) returned %d (error %d) at message %u\n",
                        variant, len, rc, ring_buffer_last_error(), seq);
                return seq;
            }
        } else {
            int rc = ring_buffer_get_msg(rb, frame + 4, MAX_PAYLOAD, &len, RB_WAIT_FOREVER);
            if (rc != RB_OK || len != want) {
                fprintf(stderr, "%s: get_msg returned %d, length %u (expected %u) at message %u\n",
                        variant, rc, len, want, seq);
                return seq;
            }
        }
        long bad = first_bad_byte(seq, payload, len);
        if (bad >= 0) {
            fprintf(stderr, "%s: message %u (length %u): byte %ld is wrong\n", variant, seq, len,
                    bad);
            return seq;
        }
    }
    return count;
}

static void run_variant(enum writer_kind wk, enum reader_kind rk, const char *variant) {
    const char *name = test_name(variant);
    ring_buffer_t *rb = ring_buffer_create(name, RING);
    REQUIRE(rb != NULL);
    REQUIRE(rb->buffer_size == RING);

    alarm(valgrind_scaled(120));
    pid_t pid = fork_child(valgrind_scaled(120)); /* never outlives a dead parent */
    if (pid == 0) producer(name, wk);

    unsigned ok = consume(rb, rk, variant);
    CHECK_EQ(ok, count);
    if (ok != count) kill(pid, SIGKILL); /* it may be blocked on a full ring */
    CHECK_EQ(wait_child(pid), 0);
    alarm(0);

    /* Everything consumed, and the library's own accounting agrees: the
     * framing trackers count raw legacy writes and reads as messages. */
    uint64_t bytes = 0;
    for (uint32_t seq = 0; seq < count; seq++) bytes += 4 + msg_len(seq);
    CHECK(ring_buffer_is_empty(rb));
    CHECK_EQ(ring_buffer_available_read(rb), 0);
    CHECK_EQ(ring_buffer_msg_count(rb), 0);
    CHECK_EQ(rb->head, bytes);
    CHECK_EQ(rb->tail, bytes);
    CHECK(bytes > 100ull * RING); /* the ring wrapped many times */
    ring_buffer_stats_ex_t ex;
    memset(&ex, 0, sizeof ex);
    ring_buffer_get_stats_ex(rb, &ex);
    CHECK_EQ(ex.total_bytes_written, bytes);
    CHECK_EQ(ex.total_bytes_read, bytes);
    CHECK_EQ(ex.messages_in, count);
    CHECK_EQ(ex.messages_out, count);
    CHECK_EQ(ex.messages_queued, 0);
    CHECK_EQ(ex.readers, 0);
    CHECK_EQ(ex.writers, 0);
    /* Most bytes ever queued: never more than the ring holds. (No lower
     * bound beyond "something was queued": the consumer may drain a frame
     * before the producer samples head.) */
    CHECK(ex.high_water_bytes <= RING - 1);
    CHECK(ex.high_water_bytes > 0);

    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

int main(void) {
    rbt_init();
    count = under_valgrind() ? 2000 : 20000;
    /* The lengths cover what the test claims: empty and maximal frames. */
    int has_zero = 0, has_max = 0;
    for (uint32_t s = 0; s < count; s++) {
        has_zero |= msg_len(s) == 0;
        has_max |= msg_len(s) == MAX_PAYLOAD;
    }
    CHECK(has_zero && has_max);

    run_variant(LEGACY_WRITE, LEGACY_READ, "legacy_to_legacy");
    run_variant(LEGACY_WRITE, GET_MSG, "legacy_to_getmsg");
    run_variant(PUT_MSG, LEGACY_READ, "putmsg_to_legacy");
    return rbt_finish("test_legacy_stream");
}
