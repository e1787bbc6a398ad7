/* Messages longer than the ring (issue 14). Their bytes go into a side
 * object /dev/shm/sage_ringbuf_<queue>..<id> and a descriptor frame (length
 * prefix with bit 31 set) goes through the ring. Checked here through the C
 * API: whole round trips and the full size in RB_ERR_BUFFER_TOO_SMALL,
 * what legacy raw readers see (nothing they can take), several producer and
 * consumer processes, producers and consumers SIGKILLed at random instants
 * (at most the consumer's own item lost, orphans removed by
 * ring_buffer_reclaim and by the next open), ring_buffer_put_msgv and
 * ring_buffer_get_msg_fd (parts written once; an out-of-line message handed
 * over as a descriptor to map), RB_ERR_TOO_LARGE only when
 * the object cannot be written (a file size limit stands in for a full
 * /dev/shm), and nothing left in /dev/shm after normal use. Handles are
 * opened with RB_OPEN_NO_POOL (one-shot side objects) except in the last
 * part: the queue's pool of reused side objects ("..p<k>") and
 * ring_buffer_get_msg_lease (the bytes lent where they lie, valid after the
 * handle is closed, given back once; a forked child's copy frees nothing; a
 * consumer killed while holding one loses only its item, and
 * ring_buffer_reclaim frees its slot); and medium messages in slots from
 * handles opened with RB_OPEN_POOL_MEDIUM. */
#include "check.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#define RING 4096u

/* Message `seq` of producer `p` (2: only messages longer than the ring):
 * its length, and its bytes (the first 8 say
 * who and which; the rest follow from them). */
static uint32_t msg_len(uint32_t p, uint32_t seq) {
    if (p == 2) return 20000u + rbt_mix(seq) % 70000u; /* always out of line */
    return (rbt_mix(p * 7919u + seq) % 3u == 0) ? 100u + seq % 50u : 20000u + rbt_mix(seq + p) % 70000u;
}

static void fill(unsigned char *buf, uint32_t p, uint32_t seq, uint32_t len) {
    uint32_t x = p * 1000003u + seq;
    for (uint32_t i = 0; i < len; i++) buf[i] = (unsigned char)rbt_mix(x + i / 4) >> (8 * (i % 4));
    if (len >= 8) {
        memcpy(buf, &p, 4);
        memcpy(buf + 4, &seq, 4);
    }
}

static bool intact(const unsigned char *buf, uint32_t len, uint32_t *p, uint32_t *seq) {
    static unsigned char want[100000];
    if (len < 8) return false;
    memcpy(p, buf, 4);
    memcpy(seq, buf + 4, 4);
    if (len != msg_len(*p, *seq)) return false;
    fill(want, *p, *seq, len);
    return memcmp(want, buf, len) == 0;
}

/* Entries of /dev/shm now whose names start with queue `name`'s object
 * name and `sep`. */
static int entries(const char *name, const char *sep) {
    char stem[128];
    snprintf(stem, sizeof stem, "sage_ringbuf_%s%s", name, sep);
    DIR *d = opendir("/dev/shm");
    REQUIRE(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strncmp(e->d_name, stem, strlen(stem)) == 0) n++;
    closedir(d);
    return n;
}

/* The side objects of queue `name` (pool slots included). */
static int side_objects(const char *name) { return entries(name, ".."); }

/* At exit (also after a failed check), the side objects of this program's
 * queues go too: names "ct_<tag>_<pid>_<n>..<id>". */
static void remove_own_side_objects(void) {
    if (getpid() != rbt_owner) return;
    char mark[32];
    snprintf(mark, sizeof mark, "_%d_", (int)getpid());
    DIR *d = opendir("/dev/shm");
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "sage_ringbuf_ct_", 16) == 0 && strstr(e->d_name, mark) &&
            strstr(e->d_name, "..")) {
            char path[512];
            snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

static ring_buffer_t *fresh_named(const char *tag, const char **name) {
    *name = test_name(tag);
    ring_buffer_t *rb = ring_buffer_create_ex(*name, RING, 0, RB_CREATE_EXCLUSIVE | RB_OPEN_NO_POOL);
    REQUIRE(rb != NULL);
    return rb;
}

static void done_named(ring_buffer_t *rb, const char *name) {
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    CHECK_EQ(side_objects(name), 0);
}

static unsigned char out[1u << 20];
static unsigned char in[1u << 20];

/* ------------------------------------------------------------ one process */

static void test_round_trip_and_sizes(void) {
    stage = "round trip";
    const char *name;
    ring_buffer_t *rb = fresh_named("large_rt", &name);
    for (uint32_t i = 0; i < sizeof in; i++) in[i] = (unsigned char)rbt_mix(i);
    CHECK_EQ(ring_buffer_put_msg(rb, in, sizeof in, RB_NO_WAIT), RB_OK);
    CHECK_EQ(side_objects(name), 1);
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    uint32_t len = 0;
    EXPECT_CODE(ring_buffer_get_msg(rb, out, 4096, &len, RB_NO_WAIT), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, sizeof in);
    len = 0;
    EXPECT_CODE(ring_buffer_get_msg(rb, NULL, 0, &len, RB_NO_WAIT), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, sizeof in);
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == sizeof in && memcmp(in, out, len) == 0);
    CHECK_EQ(side_objects(name), 0);
    /* The ring never held the bytes: the stats count the descriptor. */
    CHECK(ring_buffer_is_empty(rb));
    /* A full ring: a try-once put of a large message fails at once, writing
     * nothing out of line. */
    while (ring_buffer_put_msg(rb, in, 1000, RB_NO_WAIT) == RB_OK) {
    }
    while (ring_buffer_put_msg(rb, in, 0, RB_NO_WAIT) == RB_OK) {
    }
    EXPECT_CODE(ring_buffer_put_msg(rb, in, 50000, RB_NO_WAIT), RB_ERR_FULL);
    EXPECT_CODE(ring_buffer_put_msg(rb, in, 50000, 20 * 1000000LL), RB_ERR_TIMEOUT);
    CHECK_EQ(side_objects(name), 0);
    /* Items left queued go with the queue. */
    while (ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT) == RB_OK) {
    }
    CHECK_EQ(ring_buffer_put_msg(rb, in, 50000, RB_NO_WAIT), RB_OK);
    CHECK_EQ(ring_buffer_put_msg(rb, in, 60000, RB_NO_WAIT), RB_OK);
    CHECK_EQ(side_objects(name), 2);
    CHECK_EQ(ring_buffer_reclaim(name), 0); /* queued: not orphans */
    done_named(rb, name);
}

/* What the legacy wrapper and the raw calls see of a descriptor. */
static void test_legacy_readers(void) {
    stage = "legacy readers";
    const char *name;
    ring_buffer_t *rb = fresh_named("large_legacy", &name);
    CHECK_EQ(ring_buffer_put_msg(rb, in, 70000, RB_NO_WAIT), RB_OK);
    unsigned char prefix[4];
    CHECK_EQ(ring_buffer_peek(rb, prefix, 4), 4);
    uint32_t l = 0;
    memcpy(&l, prefix, 4);
    /* The wrapper's get: peek(4), then wait until 4 + L bytes are readable,
     * which never happens (L >= 2 GiB, the ring is 4 KiB): it keeps waiting
     * as on an empty queue, consuming nothing. */
    CHECK(l >= 0x80000000u);
    CHECK((uint64_t)ring_buffer_available_read(rb) < 4ull + l);
    /* The raw reads refuse to take it. */
    EXPECT_FAIL(ring_buffer_read(rb, out, 4), -1, RB_ERR_FRAMING);
    uint32_t d = l & 0x7fffffffu;
    EXPECT_FAIL(ring_buffer_read(rb, out, 4 + d), -1, RB_ERR_FRAMING);
    void *ptrs[4];
    uint32_t lens[4];
    EXPECT_FAIL(ring_buffer_read_batch(rb, ptrs, lens, 4), -1, RB_ERR_FRAMING);
    CHECK_EQ(ring_buffer_msg_count(rb), 1);
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    CHECK(len == 70000 && memcmp(in, out, len) == 0);
    done_named(rb, name);
}

/* RB_ERR_TOO_LARGE only when the side object cannot be written: a file size
 * limit (RLIMIT_FSIZE, as a full /dev/shm would) in a child. */
static void test_no_room(void) {
    stage = "no room for the side object";
    const char *name;
    ring_buffer_t *rb = fresh_named("large_noroom", &name);
    pid_t pid = fork_child(valgrind_scaled(30));
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {256 * 1024, 256 * 1024};
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(2);
        if (ring_buffer_put_msg(rb, in, 300000, RB_WAIT_FOREVER) != RB_ERR_TOO_LARGE) _exit(3);
        if (ring_buffer_last_error() != RB_ERR_TOO_LARGE) _exit(4);
        if (ring_buffer_put_msg(rb, in, 200000, RB_WAIT_FOREVER) != RB_OK) _exit(5);
        _exit(0);
    }
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(side_objects(name), 1);
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, 200000);
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_ERR_EMPTY);
    done_named(rb, name);
}

/* ring_buffer_put_msgv (parts written back to back, never joined) and
 * ring_buffer_get_msg_fd (an out-of-line message handed over as its side
 * object's descriptor instead of a copy). */
static void test_gathered_and_fd(void) {
    stage = "put_msgv and get_msg_fd";
    const char *name;
    ring_buffer_t *rb = fresh_named("large_fd", &name);
    const void *parts[3] = {"head", in, "tail"};
    uint32_t lens[3] = {4, 100, 4};
    CHECK_EQ(ring_buffer_put_msgv(rb, parts, lens, 3, RB_NO_WAIT), RB_OK);
    lens[1] = 300000;
    CHECK_EQ(ring_buffer_put_msgv(rb, parts, lens, 3, RB_NO_WAIT), RB_OK);
    CHECK_EQ(side_objects(name), 1);
    int fd = 7;
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg_fd(rb, out, sizeof out, &len, &fd, RB_NO_WAIT), RB_OK);
    CHECK(len == 108 && fd == -1);
    CHECK(memcmp(out, "head", 4) == 0 && memcmp(out + 4, in, 100) == 0 && memcmp(out + 104, "tail", 4) == 0);
    CHECK_EQ(ring_buffer_get_msg_fd(rb, NULL, 0, &len, &fd, RB_NO_WAIT), RB_OK);
    CHECK(len == 300008 && fd >= 0);
    CHECK_EQ(side_objects(name), 0); /* the name is gone; the descriptor keeps the bytes */
    if (fd >= 0) {
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        CHECK(m != MAP_FAILED);
        if (m != MAP_FAILED) {
            CHECK(memcmp(m, "head", 4) == 0 && memcmp(m + 4, in, 300000) == 0);
            CHECK(memcmp(m + 300004, "tail", 4) == 0);
            m[0] = 'H'; /* private: allowed, and seen by nobody else */
            munmap(m, len);
        }
        close(fd);
    }
    /* In the ring but larger than `cap`: the size needed, nothing consumed,
     * `*out_fd` untouched. */
    lens[1] = 100;
    CHECK_EQ(ring_buffer_put_msgv(rb, parts, lens, 3, RB_NO_WAIT), RB_OK);
    fd = 7;
    EXPECT_CODE(ring_buffer_get_msg_fd(rb, out, 10, &len, &fd, RB_NO_WAIT), RB_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, 108);
    CHECK_EQ(fd, 7);
    CHECK_EQ(ring_buffer_get_msg_fd(rb, out, sizeof out, &len, &fd, RB_NO_WAIT), RB_OK);
    CHECK(len == 108 && fd == -1);
    /* Bad arguments. */
    EXPECT_CODE(ring_buffer_put_msgv(rb, parts, lens, 0, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_put_msgv(rb, NULL, lens, 3, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_get_msg_fd(rb, out, sizeof out, &len, NULL, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_get_msg_fd(rb, out, sizeof out, &len, &fd, RB_NO_WAIT), RB_ERR_EMPTY);
    done_named(rb, name);
}

/* ------------------------------------------------------------ processes */

#define PRODUCERS 2
#define CONSUMERS 2
#define PER_PRODUCER 40u

static void test_many_processes(void) {
    stage = "two producers, two consumers";
    const char *name;
    ring_buffer_t *rb = fresh_named("large_mp", &name);
    /* seen[p][seq], and each consumer's last seq per producer (order). */
    uint8_t *seen = shared_memory(PRODUCERS * PER_PRODUCER);
    pid_t kids[PRODUCERS + CONSUMERS];
    for (int c = 0; c < CONSUMERS; c++) {
        kids[c] = fork_child(valgrind_scaled(60));
        if (kids[c] == 0) {
            ring_buffer_t *q = ring_buffer_open_ex(name, RB_OPEN_NO_POOL);
            if (!q) _exit(2);
            int64_t last[PRODUCERS] = {-1, -1};
            for (;;) {
                uint32_t len = 0, p, seq;
                int rc = ring_buffer_get_msg(q, out, sizeof out, &len, RB_WAIT_FOREVER);
                if (rc == RB_ERR_SHUTDOWN) break;
                if (rc != RB_OK) _exit(3);
                if (!intact(out, len, &p, &seq) || p >= PRODUCERS || seq >= PER_PRODUCER) _exit(4);
                if ((int64_t)seq <= last[p]) _exit(5);
                last[p] = seq;
                __atomic_add_fetch(&seen[p * PER_PRODUCER + seq], 1, __ATOMIC_RELAXED);
            }
            ring_buffer_close(q);
            _exit(0);
        }
    }
    for (int p = 0; p < PRODUCERS; p++) {
        pid_t pid = fork_child(valgrind_scaled(60));
        if (pid == 0) {
            ring_buffer_t *q = ring_buffer_open_ex(name, RB_OPEN_NO_POOL);
            if (!q) _exit(2);
            for (uint32_t seq = 0; seq < PER_PRODUCER; seq++) {
                uint32_t len = msg_len((uint32_t)p, seq);
                fill(in, (uint32_t)p, seq, len);
                if (ring_buffer_put_msg(q, in, len, RB_WAIT_FOREVER) != RB_OK) _exit(3);
            }
            ring_buffer_close(q);
            _exit(0);
        }
        kids[CONSUMERS + p] = pid;
    }
    watchdog(valgrind_scaled(60), "two producers, two consumers of large messages");
    for (int p = 0; p < PRODUCERS; p++) CHECK_EQ(wait_child(kids[CONSUMERS + p]), 0);
    /* Consumers drain, then see the shutdown. */
    while (ring_buffer_msg_count(rb) > 0) usleep(1000);
    CHECK_EQ(ring_buffer_shutdown(rb), RB_OK);
    for (int c = 0; c < CONSUMERS; c++) CHECK_EQ(wait_child(kids[c]), 0);
    watchdog_off();
    int once = 0;
    for (uint32_t i = 0; i < PRODUCERS * PER_PRODUCER; i++) once += seen[i] == 1;
    CHECK_EQ(once, PRODUCERS * PER_PRODUCER);
    munmap(seen, PRODUCERS * PER_PRODUCER);
    done_named(rb, name);
}

/* A producer SIGKILLed at a random instant (usually blocked on a full ring
 * with its next side object named and unpublished): what it published
 * arrives whole and in order; its orphan goes with ring_buffer_reclaim. */
static void test_producer_killed(void) {
    stage = "producer killed";
    for (int round = 0; round < 6; round++) {
        const char *name;
        ring_buffer_t *rb = fresh_named("large_kp", &name);
        uint32_t who = round % 2 ? 2 : 0;
        pid_t pid = fork_child(valgrind_scaled(60));
        if (pid == 0) {
            ring_buffer_t *q = ring_buffer_open_ex(name, RB_OPEN_NO_POOL);
            if (!q) _exit(2);
            for (uint32_t seq = 0;; seq++) {
                uint32_t len = msg_len(who, seq);
                fill(in, who, seq, len);
                if (ring_buffer_put_msg(q, in, len, RB_WAIT_FOREVER) != RB_OK) _exit(3);
            }
        }
        watchdog(valgrind_scaled(60), "producer killed: receiving");
        uint32_t next = 0, len = 0, p, seq;
        for (int i = 0; i < 3 + round; i++) {
            CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_WAIT_FOREVER), RB_OK);
            CHECK(intact(out, len, &p, &seq) && p == who && seq == next);
            next++;
        }
        /* Odd rounds: long enough for the producer to fill the ring and
         * wait for room with its next side object named (an orphan once
         * killed); even rounds: a random instant while it writes. */
        usleep(round % 2 ? (useconds_t)valgrind_scaled(100) * 1000u
                         : (useconds_t)(rbt_mix((uint32_t)round) % 3000u));
        kill(pid, SIGKILL);
        CHECK_EQ(wait_child(pid), 128 + SIGKILL);
        while (ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT) == RB_OK) {
            CHECK(intact(out, len, &p, &seq) && p == who && seq == next);
            next++;
        }
        watchdog_off();
        /* At most the one it was about to publish is left, an orphan; a
         * producer of only large messages blocked on the full ring had
         * named it. */
        CHECK(side_objects(name) <= 1);
        if (round % 2) CHECK_EQ(side_objects(name), 1);
        int had = side_objects(name);
        CHECK_EQ(ring_buffer_reclaim(name), had);
        CHECK_EQ(side_objects(name), 0);
        done_named(rb, name);
    }
}

/* A consumer SIGKILLed at a random instant loses at most the item it had
 * taken; the queue's next open removes that item's orphan. */
static void test_consumer_killed(void) {
    stage = "consumer killed";
    enum { N = 40 };
    uint8_t *seen = shared_memory(N);
    for (int round = 0; round < 6; round++) {
        const char *name;
        ring_buffer_t *rb = fresh_named("large_kc", &name);
        memset(seen, 0, N);
        for (uint32_t seq = 0; seq < N; seq++) {
            uint32_t len = msg_len(1, seq);
            fill(in, 1, seq, len);
            CHECK_EQ(ring_buffer_put_msg(rb, in, len, RB_NO_WAIT), RB_OK);
        }
        pid_t pid = fork_child(valgrind_scaled(60));
        if (pid == 0) {
            ring_buffer_t *q = ring_buffer_open_ex(name, RB_OPEN_NO_POOL);
            if (!q) _exit(2);
            for (;;) {
                uint32_t len = 0, p, seq;
                if (ring_buffer_get_msg(q, out, sizeof out, &len, RB_WAIT_FOREVER) != RB_OK) _exit(3);
                if (!intact(out, len, &p, &seq) || seq >= N) _exit(4);
                seen[seq]++;
            }
        }
        usleep(500 + (useconds_t)(rbt_mix((uint32_t)round + 99) % 4000u));
        kill(pid, SIGKILL);
        CHECK_EQ(wait_child(pid), 128 + SIGKILL);
        /* The next user (this open) removes the orphan, if any. */
        ring_buffer_t *again = ring_buffer_open_ex(name, RB_OPEN_NO_POOL);
        CHECK(again != NULL);
        uint32_t len = 0, p, seq;
        while (ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT) == RB_OK) {
            CHECK(intact(out, len, &p, &seq) && seq < N);
            if (seq < N) seen[seq]++;
        }
        int missing = 0, twice = 0;
        for (int i = 0; i < N; i++) {
            missing += seen[i] == 0;
            twice += seen[i] > 1;
        }
        CHECK(missing <= 1);
        CHECK_EQ(twice, 0);
        if (again) ring_buffer_close(again);
        CHECK_EQ(side_objects(name), 0);
        done_named(rb, name);
    }
    munmap(seen, N);
}

/* ------------------------------------------------------------ the pool */

/* Pool slots ("..p<k>") of queue `name` now. */
static int slot_files(const char *name) { return entries(name, "..p"); }

static ring_buffer_t *fresh_pooled(const char *tag, const char **name) {
    *name = test_name(tag);
    ring_buffer_t *rb = ring_buffer_create_ex(*name, RING, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb != NULL);
    return rb;
}

static void put_seq(ring_buffer_t *rb, uint32_t seq, uint32_t len) {
    fill(in, 1, seq, len);
    CHECK_EQ(ring_buffer_put_msg(rb, in, len, RB_NO_WAIT), RB_OK);
}

/* Whether `data` holds message `seq` of put_seq, `len` bytes long. */
static bool lent_intact(const void *data, uint32_t len, uint32_t seq) {
    static unsigned char want[200000];
    if (!data || len > sizeof want) return false;
    fill(want, 1, seq, len);
    return memcmp(want, data, len) == 0;
}

static void test_leases(void) {
    stage = "leases";
    const char *name;
    ring_buffer_t *rb = fresh_pooled("lease", &name);
    unsigned char small[64];
    uint32_t len = 0;
    void *data = NULL;
    ring_buffer_lease_t *lease = NULL, *second = NULL;
    /* In the ring: copied into the buffer, nothing lent. */
    put_seq(rb, 0, 40);
    CHECK_EQ(ring_buffer_get_msg_lease(rb, small, sizeof small, &len, &data, &lease, RB_NO_WAIT), RB_OK);
    CHECK(len == 40 && data == small && lease == NULL && lent_intact(small, 40, 0));
    put_seq(rb, 1, 1000);
    data = small;
    EXPECT_CODE(ring_buffer_get_msg_lease(rb, small, sizeof small, &len, &data, &lease, RB_NO_WAIT),
                RB_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 1000 && data == small);
    CHECK_EQ(ring_buffer_get_msg_lease(rb, out, sizeof out, &len, &data, &lease, RB_NO_WAIT), RB_OK);
    CHECK(len == 1000 && data == out && lease == NULL && lent_intact(out, 1000, 1));
    /* Out of line: lent where it lies (a page-aligned slot), writable. */
    put_seq(rb, 2, 100000);
    CHECK_EQ(slot_files(name), 1);
    CHECK_EQ(ring_buffer_get_msg_lease(rb, NULL, 0, &len, &data, &lease, RB_NO_WAIT), RB_OK);
    CHECK(len == 100000 && lease != NULL && ((uintptr_t)data & 4095) == 0);
    CHECK(lent_intact(data, len, 2));
    ((unsigned char *)data)[len - 1] ^= 0xff;
    ((unsigned char *)data)[len - 1] ^= 0xff;
    /* Held: the next message takes another slot; given back: reused. */
    put_seq(rb, 3, 100000);
    CHECK_EQ(slot_files(name), 2);
    void *data2 = NULL;
    CHECK_EQ(ring_buffer_get_msg_lease(rb, NULL, 0, &len, &data2, &second, RB_NO_WAIT), RB_OK);
    CHECK(second != NULL && second != lease && lent_intact(data2, len, 3));
    CHECK_EQ(ring_buffer_lease_release(second), RB_OK);
    EXPECT_CODE(ring_buffer_lease_release(second), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_lease_release((ring_buffer_lease_t *)small), RB_ERR_INVALID_ARG);
    CHECK_EQ(ring_buffer_lease_release(NULL), RB_OK);
    put_seq(rb, 4, 100000);
    CHECK_EQ(slot_files(name), 2);
    /* Copied out of a slot (get_msg) and handed over as a file of its own
     * (get_msg_fd): the slot is freed either way. */
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    CHECK(lent_intact(out, len, 4));
    put_seq(rb, 5, 100000);
    int fd = -1;
    CHECK_EQ(ring_buffer_get_msg_fd(rb, NULL, 0, &len, &fd, RB_NO_WAIT), RB_OK);
    CHECK(len == 100000 && fd >= 0);
    if (fd >= 0) {
        CHECK_EQ(pread(fd, out, len, 0), (ssize_t)len);
        CHECK(lent_intact(out, len, 5));
        close(fd);
    }
    put_seq(rb, 6, 100000);
    CHECK_EQ(slot_files(name), 2);
    CHECK_EQ(side_objects(name), 2);
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    /* A one-shot side object (a producer without the pool) is lent too,
     * privately mapped; its name is gone already. */
    ring_buffer_t *one_shot = ring_buffer_open_ex(name, RB_OPEN_NO_POOL);
    CHECK(one_shot != NULL);
    if (one_shot) {
        put_seq(one_shot, 7, 200000);
        ring_buffer_close(one_shot);
    }
    CHECK_EQ(side_objects(name) - slot_files(name), 1);
    CHECK_EQ(ring_buffer_get_msg_lease(rb, NULL, 0, &len, &data2, &second, RB_NO_WAIT), RB_OK);
    CHECK(second != NULL && len == 200000 && lent_intact(data2, len, 7));
    CHECK_EQ(side_objects(name) - slot_files(name), 0);
    if (second) ((unsigned char *)data2)[0] = 0; /* copy on write: allowed */
    CHECK_EQ(ring_buffer_lease_release(second), RB_OK);
    /* Bad arguments. */
    EXPECT_CODE(ring_buffer_get_msg_lease(rb, NULL, 0, &len, &data, NULL, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_get_msg_lease(rb, NULL, 10, &len, &data, &second, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_get_msg_lease(NULL, NULL, 0, &len, &data, &second, RB_NO_WAIT), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_get_msg_lease(rb, NULL, 0, &len, &data2, &second, RB_NO_WAIT), RB_ERR_EMPTY);
    /* The first lease's bytes outlive the handle and the queue's name. */
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    CHECK(lent_intact(data, 100000, 2));
    CHECK_EQ(ring_buffer_lease_release(lease), RB_OK);
    CHECK_EQ(side_objects(name), 0);
}

/* A child forked while the parent holds leases on every slot: giving its
 * copies back frees nothing (the parent's bytes stay), and a consumer
 * SIGKILLed while holding a lease loses only its item: ring_buffer_reclaim
 * frees its slot. */
static void test_leases_across_processes(void) {
    stage = "leases across processes";
    enum { SLOTS = 8 };
    const char *name;
    ring_buffer_t *rb = fresh_pooled("lease_fork", &name);
    ring_buffer_lease_t *leases[SLOTS] = {0};
    void *data[SLOTS] = {0};
    uint32_t len = 0;
    for (uint32_t i = 0; i < SLOTS; i++) put_seq(rb, i, 50000);
    CHECK_EQ(slot_files(name), SLOTS);
    for (uint32_t i = 0; i < SLOTS; i++)
        CHECK_EQ(ring_buffer_get_msg_lease(rb, NULL, 0, &len, &data[i], &leases[i], RB_NO_WAIT), RB_OK);
    pid_t pid = fork_child(valgrind_scaled(30));
    if (pid == 0) {
        for (int i = 0; i < SLOTS; i++)
            if (ring_buffer_lease_release(leases[i]) != RB_OK) _exit(2);
        _exit(0);
    }
    CHECK_EQ(wait_child(pid), 0);
    /* Every slot is still the parent's: this one goes to a one-shot object. */
    put_seq(rb, 100, 50000);
    CHECK_EQ(side_objects(name) - slot_files(name), 1);
    for (uint32_t i = 0; i < SLOTS; i++) CHECK(lent_intact(data[i], 50000, i));
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    CHECK(lent_intact(out, len, 100));
    for (uint32_t i = 0; i < SLOTS; i++) CHECK_EQ(ring_buffer_lease_release(leases[i]), RB_OK);

    /* A consumer killed while it holds a lease. */
    put_seq(rb, 200, 50000);
    put_seq(rb, 201, 50000);
    volatile uint32_t *got = shared_memory(sizeof *got);
    pid = fork_child(valgrind_scaled(30));
    if (pid == 0) {
        ring_buffer_t *q = ring_buffer_open(name);
        ring_buffer_lease_t *mine = NULL;
        void *bytes = NULL;
        uint32_t n = 0;
        if (!q || ring_buffer_get_msg_lease(q, NULL, 0, &n, &bytes, &mine, RB_WAIT_FOREVER) != RB_OK) _exit(2);
        *got = 1;
        for (;;) pause();
    }
    while (!*got) usleep(1000);
    kill(pid, SIGKILL);
    CHECK_EQ(wait_child(pid), 128 + SIGKILL);
    CHECK_EQ(ring_buffer_reclaim(name), 1);
    CHECK_EQ(ring_buffer_get_msg(rb, out, sizeof out, &len, RB_NO_WAIT), RB_OK);
    CHECK(lent_intact(out, len, 201));
    munmap((void *)got, sizeof *got);
    done_named(rb, name);
}

/* Medium messages (RING_BUFFER_POOLED_FROM bytes or more that fit in the
 * ring) take a free slot from a handle opened with RB_OPEN_POOL_MEDIUM, and
 * the ring from any other: lent by ring_buffer_get_msg_lease, copied by
 * ring_buffer_get_msg, in order either way. */
static void test_medium_messages(void) {
    stage = "medium messages";
    const char *name = test_name("medium");
    const uint32_t ring = 1u << 20, medium = RING_BUFFER_POOLED_FROM + 1000;
    ring_buffer_t *plain = ring_buffer_create_ex(name, ring, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(plain != NULL);
    ring_buffer_t *pooled = ring_buffer_open_ex(name, RB_OPEN_POOL_MEDIUM);
    REQUIRE(pooled != NULL);
    ring_buffer_t *no_pool = ring_buffer_open_ex(name, RB_OPEN_POOL_MEDIUM | RB_OPEN_NO_POOL);
    REQUIRE(no_pool != NULL);
    put_seq(pooled, 0, RING_BUFFER_POOLED_FROM - 1); /* shorter: the ring */
    CHECK_EQ(slot_files(name), 0);
    put_seq(pooled, 1, medium);
    put_seq(pooled, 2, medium);
    CHECK_EQ(slot_files(name), 2);
    put_seq(plain, 3, medium);
    put_seq(no_pool, 4, medium);
    CHECK_EQ(slot_files(name), 2);
    CHECK_EQ(side_objects(name), 2);
    uint32_t len = 0;
    void *data = NULL;
    ring_buffer_lease_t *lease = NULL;
    static unsigned char buf[1u << 20];
    for (uint32_t seq = 0; seq < 5; seq++) {
        bool lent_from_slot = seq == 1 || seq == 2;
        if (seq == 2) {
            /* Copied out by the plain get, its slot freed. */
            CHECK_EQ(ring_buffer_get_msg(plain, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
            CHECK(len == medium && lent_intact(buf, len, seq));
            continue;
        }
        CHECK_EQ(ring_buffer_get_msg_lease(plain, buf, sizeof buf, &len, &data, &lease, RB_NO_WAIT), RB_OK);
        CHECK((lease != NULL) == lent_from_slot && lent_intact(data, len, seq));
        CHECK_EQ(ring_buffer_lease_release(lease), RB_OK);
    }
    EXPECT_CODE(ring_buffer_get_msg(plain, buf, sizeof buf, &len, RB_NO_WAIT), RB_ERR_EMPTY);
    CHECK_EQ(ring_buffer_reclaim(name), 0);
    ring_buffer_close(pooled);
    ring_buffer_close(no_pool);
    done_named(plain, name);
}

int main(void) {
    rbt_init();
    atexit(remove_own_side_objects);
    test_round_trip_and_sizes();
    test_legacy_readers();
    test_no_room();
    test_gathered_and_fd();
    test_many_processes();
    test_producer_killed();
    test_consumer_killed();
    test_leases();
    test_leases_across_processes();
    test_medium_messages();
    return rbt_finish("test_large_messages");
}
