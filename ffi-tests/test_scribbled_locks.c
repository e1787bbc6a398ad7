/* Locks that survive garbage (issue 11, item 2): while producer and
 * consumer processes run on a queue, another process writes random bytes
 * over every byte of the extension block (the writer and reader locks, the
 * futex words, the journals and counters, its magic) and over the header's
 * counters (head, tail, readers, writers, ref_count, process_count, the
 * byte totals). No process may die (a signal, such as the SIGABRT of
 * glibc's robust mutex asserting on a scribbled lock word) or hang (every
 * call has a deadline, every process a watchdog), and every failure must be
 * a status code the call documents. Objects of earlier layouts are refused. The object's magic, version and size
 * stay, so that it still opens (a scribbled extension magic is refused as
 * RB_ERR_INCOMPATIBLE, which reopening children accept).
 *
 * Several rounds, each on a fresh queue: clean traffic first (it must
 * flow), then garbage. Half the children use the handle they inherited
 * across fork (they hold no flock of their own: only their mapping says
 * they are attached), half open the queue by name. */
#include "hostile_util.h"

#include <sys/mman.h>

#define BUF 4096u
#define PRODUCERS 2
#define CONSUMERS 2
#define KIDS (PRODUCERS + CONSUMERS + 1)
#define CALL_NS 5000000 /* every blocking call waits at most 5 ms */

/* Counters shared by one round's processes (MAP_SHARED | MAP_ANONYMOUS). */
struct round {
    volatile int stop;
    volatile int scribble;
    int ready; /* children past their open (atomic increments) */
    volatile long calls_clean, calls_scribbled;
    volatile long puts_ok, gets_ok, timeouts, corrupt, other_ok;
    volatile long unexpected; /* a status no call of its kind returns */
    volatile long scribbles;
    volatile pid_t kids[KIDS];
    ring_buffer_t *rb;
    const char *name;
};

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void unexpected(struct round *r, const char *call, int rc) {
    r->unexpected++;
    fprintf(stderr, "  pid %d: %s returned %d (%s)\n", (int)getpid(), call, rc,
            ring_buffer_strerror(rc));
}

/* Counts a call's outcome; `allowed` are the codes its contract may give
 * besides RB_OK, RB_ERR_TIMEOUT and RB_ERR_CORRUPT. */
static void outcome(struct round *r, const char *call, int rc, const int *allowed, int n) {
    if (r->scribble) r->calls_scribbled++;
    else r->calls_clean++;
    if (rc == RB_ERR_TIMEOUT) {
        r->timeouts++;
        return;
    }
    if (rc == RB_ERR_CORRUPT) {
        r->corrupt++;
        return;
    }
    if (rc >= 0) return;
    for (int i = 0; i < n; i++)
        if (rc == allowed[i]) {
            r->other_ok++;
            return;
        }
    unexpected(r, call, rc);
}

/* A scribbled `shutdown` word reads as a shut-down queue; scribbled
 * counters as a full or empty one. */
static const int PUT_CODES[] = {RB_ERR_FULL, RB_ERR_SHUTDOWN};
static const int GET_CODES[] = {RB_ERR_EMPTY, RB_ERR_SHUTDOWN, RB_ERR_BUFFER_TOO_SMALL};
static const int OPEN_CODES[] = {RB_ERR_INCOMPATIBLE};

/* Reopens the queue by name now and then (open validates the extension
 * block, which the scribbler also hits); keeps the old handle on failure. */
static ring_buffer_t *maybe_reopen(struct round *r, ring_buffer_t *rb, bool own, uint64_t *seed) {
    if (!own || xorshift(seed) % 64 != 0) return rb;
    ring_buffer_t *fresh_rb = ring_buffer_open(r->name);
    if (!fresh_rb) {
        outcome(r, "ring_buffer_open", ring_buffer_last_error(), OPEN_CODES, 1);
        return rb;
    }
    ring_buffer_close(rb);
    return fresh_rb;
}

/* The handle a child uses: inherited, or its own (opened before the
 * scribbling starts, so it must open). */
static ring_buffer_t *handle(struct round *r, bool own) {
    if (!own) return r->rb;
    ring_buffer_t *rb = ring_buffer_open(r->name);
    if (!rb)
        fprintf(stderr, "  pid %d: ring_buffer_open: %s\n", (int)getpid(),
                ring_buffer_strerror(ring_buffer_last_error()));
    return rb;
}

static ring_buffer_t *ready(struct round *r, ring_buffer_t *rb) {
    __atomic_fetch_add(&r->ready, 1, __ATOMIC_SEQ_CST);
    return rb;
}

static int producer(struct round *r, bool own) {
    ring_buffer_t *rb = ready(r, handle(r, own));
    if (!rb) return 2;
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    unsigned char msg[4 + 200];
    while (!r->stop) {
        uint32_t len = 1 + (uint32_t)(xorshift(&seed) % 200);
        memset(msg + 4, (int)len, len);
        if (xorshift(&seed) % 8 == 0) {
            /* A legacy whole-frame write: -1 and the reason in last_error. */
            memcpy(msg, &len, 4);
            int n = ring_buffer_write(rb, msg, 4 + len);
            int rc = n == (int)(4 + len) ? RB_OK : ring_buffer_last_error();
            if (n != (int)(4 + len) && n != -1) unexpected(r, "ring_buffer_write (value)", n);
            outcome(r, "ring_buffer_write", rc, PUT_CODES, 2);
            if (rc == RB_OK) r->puts_ok++;
        } else {
            int64_t t = xorshift(&seed) % 4 == 0 ? RB_NO_WAIT : CALL_NS;
            int rc = ring_buffer_put_msg(rb, msg + 4, len, t);
            outcome(r, "ring_buffer_put_msg", rc, PUT_CODES, 2);
            if (rc == RB_OK) r->puts_ok++;
        }
        rb = maybe_reopen(r, rb, own, &seed);
    }
    if (own) ring_buffer_close(rb);
    return 0;
}

static int consumer(struct round *r, bool own) {
    ring_buffer_t *rb = ready(r, handle(r, own));
    if (!rb) return 2;
    uint64_t seed = 0x2545f4914f6cdd1dull ^ (uint64_t)getpid();
    unsigned char buf[BUF];
    uint32_t lens[16];
    while (!r->stop) {
        uint64_t pick = xorshift(&seed) % 8;
        int rc;
        if (pick == 0) {
            rc = ring_buffer_get_many(rb, buf, sizeof buf, lens, 16, CALL_NS);
            if (rc > 16) unexpected(r, "ring_buffer_get_many (count)", rc);
            outcome(r, "ring_buffer_get_many", rc > 0 ? RB_OK : rc, GET_CODES, 3);
            if (rc > 0) r->gets_ok++;
        } else if (pick == 1) {
            ring_buffer_stats_ex_t st;
            rc = ring_buffer_get_stats_ex_checked(rb, &st);
            outcome(r, "ring_buffer_get_stats_ex_checked", rc, NULL, 0);
            (void)ring_buffer_msg_count(rb);
            if (ring_buffer_available_read(rb) > BUF) unexpected(r, "available_read > size", 0);
        } else {
            uint32_t len = UINT32_MAX;
            int64_t t = pick == 2 ? RB_NO_WAIT : CALL_NS;
            rc = ring_buffer_get_msg(rb, buf, sizeof buf, &len, t);
            outcome(r, "ring_buffer_get_msg", rc, GET_CODES, 3);
            if (rc == RB_OK) {
                r->gets_ok++;
                if (len > BUF - 4) unexpected(r, "ring_buffer_get_msg (length)", (int)len);
            }
        }
        rb = maybe_reopen(r, rb, own, &seed);
    }
    if (own) ring_buffer_close(rb);
    return 0;
}

/* A value worth planting in a 32-bit word: what lock words, sleeper
 * counts and sequence words must survive. */
static uint32_t nasty(struct round *r, uint64_t *seed) {
    uint64_t x = xorshift(seed);
    switch (x % 10) {
    case 0: return 0;
    case 1: return UINT32_MAX;
    case 2: return 0x80000000u;
    case 3: return 1;          /* init: alive, never attached */
    case 4: return 0x80000001u;
    case 5: return (uint32_t)r->kids[(x >> 8) % KIDS]; /* a live, attached process */
    case 6: return (uint32_t)r->kids[(x >> 8) % KIDS] | 0x80000000u;
    case 7: return (uint32_t)getpid(); /* the scribbler: alive, maps the object */
    default: return (uint32_t)(x >> 32);
    }
}

static int scribbler(struct round *r) {
    size_t size = 0;
    unsigned char *raw = map_object(r->name, &size);
    ready(r, NULL);
    if (!raw || size != v2_object_size(BUF)) return 2;
    /* Header counters: head, tail, readers, writers, ref_count,
     * process_count [16, 48) and the byte totals [160, 176). */
    static const struct { unsigned off, len; } areas[] = {
        {EXT_OFF(BUF), EXT_SIZE}, {16, 32}, {160, 16}};
    uint64_t seed = 0xdeadbeefcafef00dull ^ (uint64_t)getpid();
    while (!r->scribble && !r->stop) usleep(500);
    while (!r->stop) {
        uint64_t x = xorshift(&seed);
        unsigned a = x % 8 < 6 ? 0 : 1 + (unsigned)(x >> 3) % 2; /* mostly the extension */
        unsigned char *base = raw + areas[a].off;
        unsigned len = areas[a].len;
        switch ((x >> 8) % 4) {
        case 0: /* every byte of the area at once */
            for (unsigned i = 0; i < len; i++) base[i] = (unsigned char)xorshift(&seed);
            break;
        case 1: { /* a run of random bytes */
            unsigned off = (unsigned)(x >> 16) % len, n = 1 + (unsigned)(x >> 40) % 24;
            for (unsigned i = 0; i < n && off + i < len; i++) base[off + i] = (unsigned char)xorshift(&seed);
            break;
        }
        default: { /* a nasty value into an aligned word */
            unsigned off = ((unsigned)(x >> 16) % len) & ~3u;
            uint32_t v = nasty(r, &seed);
            memcpy(base + off, &v, 4);
            break;
        }
        }
        r->scribbles++;
        if (r->scribbles % 8 == 0) usleep((useconds_t)(xorshift(&seed) % 2000));
    }
    munmap(raw, size);
    return 0;
}

static int run_role(struct round *r, int i) {
    if (i < PRODUCERS) return producer(r, i % 2 == 1);
    if (i < PRODUCERS + CONSUMERS) return consumer(r, i % 2 == 1);
    return scribbler(r);
}

static void one_round(int n, double scribble_s) {
    struct round *r = shared_memory(sizeof *r);
    r->name = test_name("scribbled");
    r->rb = ring_buffer_create_ex(r->name, BUF, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(r->rb != NULL);

    unsigned kid_alarm = valgrind_scaled(20);
    for (int i = 0; i < KIDS; i++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL); /* a hang ends here, reported as a signal exit */
            alarm(kid_alarm);
            _exit(run_role(r, i));
        }
        r->kids[i] = pid;
    }
    watchdog(kid_alarm + 10, "the scribbled-locks round (parent waiting for its processes)");
    /* Clean traffic first, every child in: it must flow. */
    double t0 = now_s();
    while (__atomic_load_n(&r->ready, __ATOMIC_SEQ_CST) < KIDS && now_s() - t0 < valgrind_scaled(10))
        usleep(1000);
    CHECK_EQ(__atomic_load_n(&r->ready, __ATOMIC_SEQ_CST), KIDS);
    t0 = now_s();
    while (r->gets_ok < 100 && now_s() - t0 < valgrind_scaled(10)) usleep(1000);
    CHECK(r->gets_ok >= 100);
    r->scribble = 1;
    t0 = now_s();
    while (now_s() - t0 < scribble_s) {
        NEIGHBOUR_OK("garbage scribbled over another queue's locks and counters");
        usleep(20000);
    }
    r->stop = 1;
    int died = 0;
    for (int i = 0; i < KIDS; i++) {
        int rc = wait_child(r->kids[i]);
        if (rc != 0) {
            died++;
            fprintf(stderr, "  round %d: %s %d exited with %d%s\n", n,
                    i < PRODUCERS ? "producer" : i < PRODUCERS + CONSUMERS ? "consumer" : "scribbler",
                    i, rc, rc > 128 ? " (killed by a signal: crashed, or hung past its watchdog)" : "");
        }
    }
    CHECK_EQ(died, 0);
    watchdog_off();
    printf("round %d: %ld calls clean, %ld under %ld scribbles; %ld puts, %ld gets, "
           "%ld timeouts, %ld corrupt, %ld other codes, %ld unexpected\n",
           n, r->calls_clean, r->calls_scribbled, r->scribbles, r->puts_ok, r->gets_ok, r->timeouts,
           r->corrupt, r->other_ok, r->unexpected);
    CHECK_EQ(r->unexpected, 0);
    CHECK(r->scribbles > 0);
    CHECK(r->calls_scribbled > 0);

    /* The scribbled queue still answers, with a status, in bounded time. */
    watchdog(valgrind_scaled(10), "calls on the scribbled queue after the round");
    char buf[BUF];
    uint32_t len;
    int rc = ring_buffer_get_msg(r->rb, buf, sizeof buf, &len, CALL_NS);
    CHECK(rc == RB_OK || rc == RB_ERR_EMPTY || rc == RB_ERR_CORRUPT || rc == RB_ERR_TIMEOUT ||
          rc == RB_ERR_SHUTDOWN || rc == RB_ERR_BUFFER_TOO_SMALL);
    rc = ring_buffer_put_msg(r->rb, "x", 1, CALL_NS);
    CHECK(rc == RB_OK || rc == RB_ERR_FULL || rc == RB_ERR_CORRUPT || rc == RB_ERR_TIMEOUT ||
          rc == RB_ERR_SHUTDOWN);
    watchdog_off();
    done(r->rb);
    munmap(r, sizeof *r);
}

/* Objects of the earlier version-2 layouts are refused by every opener,
 * never misread: "SAGEXT02" (1.0: positions in the header; its block was
 * smaller, and here its magic on a block of today's size) and "SAGEXT03"
 * (today's size and positions, but glibc robust mutexes where the locks
 * now are). */
static void test_previous_layouts_are_refused(void) {
    static const uint64_t magics[] = {0x5341474558543032ull, 0x5341474558543033ull};
    for (size_t i = 0; i < sizeof magics / sizeof magics[0]; i++) {
        const char *name = test_name("oldlayout");
        ring_buffer_t *rb = ring_buffer_create_ex(name, BUF, 0, RB_CREATE_EXCLUSIVE);
        REQUIRE(rb != NULL);
        ring_buffer_close(rb);
        REQUIRE(poke_u64(name, EXT_OFF(BUF), magics[i]));
        refuse_opening(name, RB_ERR_INCOMPATIBLE);
        CHECK_EQ(ring_buffer_remove_if_unused(name), 1);
        NEIGHBOUR_OK("an object of an earlier layout refused");
    }
}

int main(void) {
    rbt_init();
    neighbour_open();
    test_previous_layouts_are_refused();
    int rounds = under_valgrind() ? 2 : 4;
    double scribble_s = under_valgrind() ? 1.5 : 0.5;
    for (int n = 1; n <= rounds; n++) one_round(n, scribble_s);
    NEIGHBOUR_OK("the scribbled-locks rounds");
    ring_buffer_close(rbt_neighbour);
    return rbt_finish("test_scribbled_locks");
}
