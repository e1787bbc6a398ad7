/* `make bench` (C part): libring_buffer against the limit, side by side in
 * one run. Between real processes (fork), pinned to two cores and not, the
 * message API (put_msg/get_msg) and the legacy raw calls (ring_buffer_write/
 * read) are measured next to a reference lock-free single-producer
 * single-consumer ring in shared memory (spsc_ref.h: the same framing, head
 * and tail on their own cache lines, each side caching the other's index)
 * and, where its headers are installed, Boost.Interprocess message_queue
 * (boost_mq.cpp; otherwise a line says it was skipped). Also the in-process
 * cost of one put+get (next to the legacy library's unlocked write+read,
 * modelled in legacy_model.h), ring sizes 64 KiB to 4 MiB, and the blocking
 * round trip. Every configuration runs several times, interleaved, and the median
 * is reported; every cross-process run checks that each message arrived
 * exactly once and whole (counts and checksums), so a fast wrong answer
 * cannot pass for a result. The last table compares the medians with the
 * targets of issue 11 and DESIGN.md ("Targets").
 *
 * Environment: RB_BENCH_SECONDS scales the message counts (default 1);
 * RB_BENCH_VERBOSE=1 prints the sleep and wake-up counts of each run;
 * RB_BENCH_CSV=path writes every cross-process median there (make bench-c
 * draws docs/bench_c.png from it with bench/plot_bench_c.py);
 * RB_BENCH_AB=size[:ring] runs one comparison only (see bench/ab_libs.py). */
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ring_buffer.h"
#include "legacy_model.h"
#include "spsc_ref.h"
#ifdef RB_BENCH_BOOST
#include "boost_mq.h"
#define HAVE_BOOST 1
#else
#define HAVE_BOOST 0
#endif

/* Repetitions of every configuration (the median is reported). */
enum { REPS = 5, INPROC_REPS = 5 };
#define MAX_MSG 65536u

static double scale = 1.0;
static pid_t bench_pid;
/* The first two CPUs this process may run on, for the pinned runs. */
static int cpu_ids[2];
static int can_pin;

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* --------------------------------------------------------------- cleanup */

/* Every named object this run creates, removed at exit and on SIGINT/SIGTERM
 * (unlink is async-signal-safe), so an interrupted run leaves nothing. */
static char created[16][128];
static int created_count;

static void remove_created(void) {
    if (getpid() != bench_pid) return;
    for (int i = 0; i < created_count; i++) unlink(created[i]);
}

static void on_signal(int sig) {
    remove_created();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void remember(const char *path) {
    if (created_count < 16) snprintf(created[created_count++], sizeof created[0], "%s", path);
}

static void forget_all(void) {
    remove_created();
    created_count = 0;
}

static ring_buffer_t *create_queue(const char *name, uint32_t size) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/sage_ringbuf_%s", name);
    remember(path);
    ring_buffer_t *rb = ring_buffer_create_ex(name, size, 0, RB_CREATE_EXCLUSIVE);
    if (!rb) {
        fprintf(stderr, "create %s: %s\n", name, ring_buffer_strerror(ring_buffer_last_error()));
        exit(1);
    }
    return rb;
}

/* ------------------------------------------------------------ utilities */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof v[0], cmp_double);
    return v[n / 2];
}

static void find_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
        if (CPU_ISSET(c, &set)) cpu_ids[n++] = c;
    can_pin = n == 2;
}

/* Pins the calling process to the first (0) or second (1) CPU. */
static void pin_to(int which) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_ids[which], &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        _exit(6);
    }
}

/* Spin a little, then give the CPU away (two cores shared by many
 * processes): how the lock-free and legacy loops wait. */
static void backoff(unsigned *spins) {
    if (++*spins < 256)
        CPU_RELAX();
    else
        sched_yield();
}

/* A message: a fixed filler with (producer, sequence) stamped at its start
 * and again at its end, so a torn or misframed message shows. Checking
 * every payload byte is the stress suite's job (tests/stress.rs); here it
 * would cost more than the queue. Messages are at least 8 bytes. */
static uint64_t id_of(uint32_t producer, uint64_t seq) {
    return ((uint64_t)producer << 40) ^ seq;
}

static uint64_t fill(uint8_t *buf, uint32_t size, uint32_t producer, uint64_t seq) {
    uint64_t id = id_of(producer, seq);
    memcpy(buf, &id, 8);
    memcpy(buf + size - 8, &id, 8);
    return id;
}

static uint64_t verify(const uint8_t *buf, uint32_t size) {
    uint64_t head, tail;
    memcpy(&head, buf, 8);
    memcpy(&tail, buf + size - 8, 8);
    if (head != tail) {
        fprintf(stderr, "torn message: %llx != %llx\n", (unsigned long long)head, (unsigned long long)tail);
        _exit(3);
    }
    return head;
}

/* ------------------------------------------------- cross-process runs */

typedef enum { IMPL_MSG, IMPL_LEGACY, IMPL_REF, IMPL_BOOST, IMPL_LEGACY_LIB } impl_t;
static const char *const impl_label[] = {"put_msg/get_msg", "legacy write/read", "reference ring",
                                         "Boost mq", "legacy library"};

/* Results and the start signal, shared with the forked workers. */
typedef struct {
    atomic_int ready;
    atomic_int go;
    atomic_int producers_left;
    atomic_ullong received;
    atomic_ullong checksum;
} shared_t;

typedef struct {
    impl_t impl;
    int producers, consumers;
    uint32_t size, ring;
    int pinned;
    uint64_t total;
    char name[64];
    spsc_ring_t *ref; /* IMPL_REF: mapped before the fork */
} run_t;

/* Forked workers die with the benchmark instead of blocking for ever. */
static void die_with_parent(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != bench_pid) _exit(1);
}

static void wait_go(shared_t *s) {
    atomic_fetch_add(&s->ready, 1);
    while (!atomic_load(&s->go)) sched_yield();
}

static uint8_t *message_buffer(void) {
    uint8_t *buf = malloc(MAX_MSG + 8);
    if (!buf) _exit(2);
    memset(buf, 0x5a, MAX_MSG + 8);
    return buf;
}

/* The library's or Boost's handle of one process of a run (the reference
 * ring's state differs by side: each side makes its own). */
typedef struct {
    ring_buffer_t *rb;
#if HAVE_BOOST
    boost_mq_t *mq;
#endif
} endpoint_t;

static endpoint_t open_endpoint(const run_t *run) {
    endpoint_t ep = {0};
    switch (run->impl) {
    case IMPL_MSG:
    case IMPL_LEGACY:
        if (!(ep.rb = ring_buffer_open(run->name))) _exit(2);
        break;
    case IMPL_BOOST:
#if HAVE_BOOST
        if (!(ep.mq = boost_mq_open(run->name))) _exit(2);
#endif
        break;
    case IMPL_REF:
        break;
    case IMPL_LEGACY_LIB: /* in-process only */
        _exit(2);
    }
    return ep;
}

static void close_endpoint(endpoint_t *ep) {
    if (ep->rb) ring_buffer_close(ep->rb);
#if HAVE_BOOST
    if (ep->mq) boost_mq_close(ep->mq);
#endif
}

static void producer(const run_t *run, shared_t *s, uint32_t id, uint64_t count) {
    die_with_parent();
    if (run->pinned) pin_to(0);
    uint8_t *buf = message_buffer();
    uint32_t size = run->size;
    endpoint_t ep = open_endpoint(run);
    ring_buffer_t *rb = ep.rb;
    spsc_producer_t ref = {0}; /* set below when used (GCC cannot tell) */
    if (run->impl == IMPL_REF) ref = spsc_producer(run->ref);
    wait_go(s);
    unsigned spins = 0;
    for (uint64_t seq = 0; seq < count; seq++) {
        switch (run->impl) {
        case IMPL_MSG:
            fill(buf, size, id, seq);
            if (ring_buffer_put_msg(rb, buf, size, RB_WAIT_FOREVER) != RB_OK) _exit(4);
            break;
        case IMPL_LEGACY:
            /* Legacy framing: one write of prefix + payload, retried while full. */
            memcpy(buf, &size, 4);
            fill(buf + 4, size, id, seq);
            while (ring_buffer_write(rb, buf, size + 4) < 0) backoff(&spins);
            spins = 0;
            break;
        case IMPL_REF:
            fill(buf, size, id, seq);
            while (!spsc_put(&ref, buf, size)) backoff(&spins);
            spins = 0;
            break;
        case IMPL_BOOST:
#if HAVE_BOOST
            fill(buf, size, id, seq);
            if (boost_mq_send(ep.mq, buf, size) != 0) _exit(4);
#endif
            break;
        case IMPL_LEGACY_LIB: /* in-process only */
            _exit(2);
        }
    }
    atomic_fetch_sub(&s->producers_left, 1);
    close_endpoint(&ep);
    _exit(0);
}

static void consumer(const run_t *run, shared_t *s) {
    die_with_parent();
    if (run->pinned) pin_to(1);
    uint8_t *buf = message_buffer();
    uint32_t size = run->size;
    endpoint_t ep = open_endpoint(run);
    ring_buffer_t *rb = ep.rb;
    spsc_consumer_t ref = {0}; /* set below when used (GCC cannot tell) */
    if (run->impl == IMPL_REF) ref = spsc_consumer(run->ref);
    uint64_t n = 0, sum = 0;
    unsigned spins = 0;
    wait_go(s);
    for (;;) {
        uint32_t len = 0;
        if (run->impl == IMPL_MSG) {
            int rc = ring_buffer_get_msg(rb, buf, MAX_MSG, &len, RB_WAIT_FOREVER);
            if (rc == RB_ERR_SHUTDOWN) break;
            if (rc != RB_OK || len != size) _exit(5);
            sum += verify(buf, size);
        } else if (run->impl == IMPL_LEGACY) {
            /* Fixed-size records: read exactly one, spinning politely while
             * empty; stop once every producer is done and nothing is left. */
            if (ring_buffer_read(rb, buf, size + 4) < 0) {
                if (atomic_load(&s->producers_left) == 0 && ring_buffer_available_read(rb) == 0) break;
                backoff(&spins);
                continue;
            }
            spins = 0;
            sum += verify(buf + 4, size);
        } else if (run->impl == IMPL_REF) {
            /* One producer: exactly `total` messages come. */
            if (n == run->total) break;
            int rc = spsc_get(&ref, buf, MAX_MSG, &len);
            if (rc == 0) {
                backoff(&spins);
                continue;
            }
            spins = 0;
            if (rc < 0 || len != size) _exit(5);
            sum += verify(buf, size);
        } else {
#if HAVE_BOOST
            int64_t got = boost_mq_receive(ep.mq, buf, MAX_MSG);
            if (got == 0) break; /* the end mark the benchmark sends */
            if (got != (int64_t)size) _exit(5);
            sum += verify(buf, size);
#endif
        }
        n++;
    }
    atomic_fetch_add(&s->received, n);
    atomic_fetch_add(&s->checksum, sum);
    close_endpoint(&ep);
    _exit(0);
}

/* Messages per run: about 128 MiB of frames, between 2,000 and 1 M (times
 * RB_BENCH_SECONDS). */
static uint64_t messages_for(uint32_t size) {
    uint64_t n = (uint64_t)(128.0 * 1024 * 1024 / (size + 4));
    if (n > 1000000) n = 1000000;
    if (n < 2000) n = 2000;
    n = (uint64_t)(n * scale);
    return n < 100 ? 100 : n;
}

/* One run; returns messages per second (0 if anything arrived wrong). */
static double throughput(impl_t impl, int producers, int consumers, uint32_t size, uint32_t ring, int pinned) {
    static unsigned serial;
    run_t run = {impl, producers, consumers, size, ring, pinned, 0, "", NULL};
    snprintf(run.name, sizeof run.name, "bench_%d_%u", (int)getpid(), serial++);
    uint64_t per = messages_for(size) / producers;
    run.total = per * producers;
    ring_buffer_t *rb = NULL;
#if HAVE_BOOST
    boost_mq_t *mq = NULL;
    char boost_name[80];
#endif
    switch (impl) {
    case IMPL_MSG:
    case IMPL_LEGACY:
        rb = create_queue(run.name, ring);
        break;
    case IMPL_REF:
        if (!(run.ref = spsc_create(ring))) exit(1);
        break;
    case IMPL_BOOST:
#if HAVE_BOOST
        /* About the same bytes as the ring: slots of `size` bytes. */
        snprintf(boost_name, sizeof boost_name, "%s", run.name);
        {
            char path[128];
            snprintf(path, sizeof path, "/dev/shm/%s", boost_name);
            remember(path);
        }
        uint32_t slots = ring / (size + 4);
        mq = boost_mq_create(boost_name, slots ? slots : 1, size);
        if (!mq) exit(1);
#endif
        break;
    case IMPL_LEGACY_LIB: /* in-process only */
        abort();
    }
    shared_t *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) abort();
    memset(s, 0, sizeof *s);
    atomic_store(&s->producers_left, producers);
    uint64_t expect_sum = 0;
    for (int p = 0; p < producers; p++)
        for (uint64_t q = 0; q < per; q++) expect_sum += id_of(p, q);
    pid_t pids[64];
    int n = 0;
    for (int c = 0; c < consumers; c++)
        if ((pids[n++] = fork()) == 0) consumer(&run, s);
    for (int p = 0; p < producers; p++)
        if ((pids[n++] = fork()) == 0) producer(&run, s, p, per);
    while (atomic_load(&s->ready) < n) sched_yield();
    double start = now_s();
    atomic_store(&s->go, 1);
    int failed = 0;
    for (int i = consumers; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        failed |= !WIFEXITED(st) || WEXITSTATUS(st);
    }
    if (impl == IMPL_MSG) ring_buffer_shutdown(rb);
#if HAVE_BOOST
    /* One end mark per consumer. */
    if (impl == IMPL_BOOST)
        for (int c = 0; c < consumers; c++) boost_mq_send(mq, "", 0);
#endif
    for (int i = 0; i < consumers; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        failed |= !WIFEXITED(st) || WEXITSTATUS(st);
    }
    double secs = now_s() - start;
    uint64_t got = atomic_load(&s->received), sum = atomic_load(&s->checksum);
    if (rb && getenv("RB_BENCH_VERBOSE")) {
        ring_buffer_stats_ex_t st;
        ring_buffer_get_stats_ex(rb, &st);
        fprintf(stderr, "  [%s %d->%d %uB] producer sleeps %llu, consumer sleeps %llu, wake-ups %llu\n",
                impl_label[impl], producers, consumers, size, (unsigned long long)st.producer_waits,
                (unsigned long long)st.consumer_waits, (unsigned long long)st.wakeups);
    }
    int exact = !failed && got == run.total && sum == expect_sum;
    if (rb) {
        ring_buffer_close(rb);
        ring_buffer_destroy(run.name);
    }
    if (run.ref) spsc_destroy(run.ref);
#if HAVE_BOOST
    if (mq) {
        boost_mq_close(mq);
        boost_mq_remove(boost_name);
    }
#endif
    forget_all();
    munmap(s, sizeof *s);
    if (!exact) {
        fprintf(stderr, "  %s %d->%d %uB: WRONG: %llu of %llu messages, checksum %s\n", impl_label[impl], producers,
                consumers, size, (unsigned long long)got, (unsigned long long)run.total,
                sum == expect_sum ? "ok" : "bad");
        return 0;
    }
    return got / secs;
}

/* The widest spread (fastest / slowest of the REPS runs of one
 * configuration) the reference ring showed: it does the same work every
 * run, so a wide spread means the machine itself changed speed. */
static double ref_spread = 1.0;

/* Rows of the CSV (RB_BENCH_CSV) that bench/plot_bench_c.py draws, each
 * tagged with the table it belongs to. */
static FILE *csv;
static const char *section = "";

/* Medians of REPS runs of each implementation in `impls`, interleaved. */
static void measure(const impl_t *impls, int k, int producers, int consumers, uint32_t size, uint32_t ring,
                    int pinned, double *out) {
    double v[4][REPS];
    for (int r = 0; r < REPS; r++)
        for (int i = 0; i < k; i++) v[i][r] = throughput(impls[i], producers, consumers, size, ring, pinned);
    for (int i = 0; i < k; i++) {
        out[i] = median(v[i], REPS);
        if (impls[i] == IMPL_REF && v[i][0] > 0 && v[i][REPS - 1] > 0) {
            /* median() sorted the runs */
            double spread = v[i][REPS - 1] / v[i][0];
            if (spread > ref_spread) ref_spread = spread;
        }
        if (csv)
            fprintf(csv, "%s,%d,%d,%u,%u,%d,%s,%.0f\n", section, producers, consumers, size, ring, pinned,
                    impl_label[impls[i]], out[i]);
    }
}

/* ------------------------------------------------------ in-process cost */

/* Nanoseconds per put+get pair of `size` bytes, one thread, median. */
static double inproc(impl_t impl, uint32_t size) {
    uint8_t *buf = message_buffer(), *out = message_buffer();
    const uint32_t ring = 1u << 20;
    const uint64_t iters = (uint64_t)(1000000 * scale) + 1000;
    char name[64];
    snprintf(name, sizeof name, "bench_inproc_%d_%d", (int)getpid(), (int)impl);
    ring_buffer_t *rb = NULL, *model = NULL;
    spsc_ring_t *r = NULL;
    spsc_producer_t p;
    spsc_consumer_t c;
#if HAVE_BOOST
    boost_mq_t *mq = NULL;
#endif
    switch (impl) {
    case IMPL_MSG:
    case IMPL_LEGACY:
        rb = create_queue(name, ring);
        break;
    case IMPL_LEGACY_LIB:
        if (!(model = legacy_model_create(ring))) exit(1);
        break;
    case IMPL_REF:
        if (!(r = spsc_create(ring))) exit(1);
        p = spsc_producer(r);
        c = spsc_consumer(r);
        break;
    case IMPL_BOOST:
#if HAVE_BOOST
    {
        char path[128];
        snprintf(path, sizeof path, "/dev/shm/%s", name);
        remember(path);
        if (!(mq = boost_mq_create(name, 64, size))) exit(1);
    }
#endif
    break;
    }
    memcpy(buf, &size, 4);
    double v[INPROC_REPS + 1];
    int wrong = 0;
    /* Round 0 goes once round the ring (and at least the timed count) and
     * is not counted: it faults in the pages and warms the caches. */
    for (int rep = 0; rep <= INPROC_REPS; rep++) {
        uint64_t round_iters = rep ? iters : iters + ring / (size + 4);
        double start = now_s();
        for (uint64_t i = 0; i < round_iters; i++) {
            uint32_t len = 0;
            switch (impl) {
            case IMPL_MSG:
                wrong |= ring_buffer_put_msg(rb, buf, size, RB_NO_WAIT) != RB_OK;
                wrong |= ring_buffer_get_msg(rb, out, MAX_MSG, &len, RB_NO_WAIT) != RB_OK || len != size;
                break;
            case IMPL_LEGACY:
                wrong |= ring_buffer_write(rb, buf, size + 4) != (int)(size + 4);
                wrong |= ring_buffer_read(rb, out, size + 4) != (int)(size + 4);
                break;
            case IMPL_LEGACY_LIB:
                wrong |= legacy_model_write(model, buf, size + 4) != (int)(size + 4);
                wrong |= legacy_model_read(model, out, size + 4) != (int)(size + 4);
                break;
            case IMPL_REF:
                wrong |= spsc_put(&p, buf, size) != 1;
                wrong |= spsc_get(&c, out, MAX_MSG, &len) != 1 || len != size;
                break;
            case IMPL_BOOST:
#if HAVE_BOOST
                wrong |= boost_mq_try_send(mq, buf, size) != 1;
                wrong |= boost_mq_try_receive(mq, out, MAX_MSG) != (int64_t)size;
#endif
                break;
            }
        }
        v[rep] = (now_s() - start) * 1e9 / round_iters;
    }
    if (rb) {
        ring_buffer_close(rb);
        ring_buffer_destroy(name);
    }
    if (r) spsc_destroy(r);
    if (model) legacy_model_destroy(model);
#if HAVE_BOOST
    if (mq) {
        boost_mq_close(mq);
        boost_mq_remove(name);
    }
#endif
    forget_all();
    free(buf);
    free(out);
    if (wrong) {
        fprintf(stderr, "  in-process %s: a call failed\n", impl_label[impl]);
        return NAN;
    }
    return median(v + 1, INPROC_REPS);
}

/* ------------------------------------------------------------ round trip */

/* After a ping-pong's timed loop (`samples`, one per round): this process's
 * affinity back to `old`, the child reaped, median and p99 in microseconds. */
static void rt_finish(uint64_t *samples, int rounds, const cpu_set_t *old, pid_t child, double *median_us,
                      double *p99_us) {
    sched_setaffinity(0, sizeof *old, old);
    waitpid(child, NULL, 0);
    qsort(samples, rounds, sizeof *samples, cmp_u64);
    *median_us = samples[rounds / 2] / 1e3;
    *p99_us = samples[(int)(rounds * 0.99)] / 1e3;
    free(samples);
}

/* Ping-pong between two processes over two queues, blocking gets: the
 * round trip put -> get -> put -> get. Fills median and p99 in microseconds. */
static void round_trip(int rounds, int pinned, double *median_us, double *p99_us) {
    char a[64], b[64];
    snprintf(a, sizeof a, "bench_rt_a_%d", (int)getpid());
    snprintf(b, sizeof b, "bench_rt_b_%d", (int)getpid());
    ring_buffer_t *ping = create_queue(a, 65536);
    ring_buffer_t *pong = create_queue(b, 65536);
    pid_t child = fork();
    if (child == 0) {
        die_with_parent();
        if (pinned) pin_to(1);
        char buf[64];
        uint32_t len;
        for (int i = 0; i < rounds; i++) {
            if (ring_buffer_get_msg(ping, buf, sizeof buf, &len, RB_WAIT_FOREVER) != RB_OK) _exit(2);
            if (ring_buffer_put_msg(pong, buf, len, RB_WAIT_FOREVER) != RB_OK) _exit(2);
        }
        _exit(0);
    }
    cpu_set_t old;
    sched_getaffinity(0, sizeof old, &old);
    if (pinned) pin_to(0);
    uint64_t *samples = malloc(sizeof(uint64_t) * rounds);
    char buf[64] = "ping";
    uint32_t len;
    for (int i = 0; i < rounds; i++) {
        uint64_t t0 = now_ns();
        ring_buffer_put_msg(ping, buf, 32, RB_WAIT_FOREVER);
        ring_buffer_get_msg(pong, buf, sizeof buf, &len, RB_WAIT_FOREVER);
        samples[i] = now_ns() - t0;
    }
    rt_finish(samples, rounds, &old, child, median_us, p99_us);
    ring_buffer_close(ping);
    ring_buffer_close(pong);
    ring_buffer_destroy(a);
    ring_buffer_destroy(b);
    forget_all();
}

/* The same ping-pong over two reference rings, each side spinning (pause
 * hint) instead of blocking: the hardware's own round trip (the lines of
 * two rings crossing between the cores twice), measured in the same run as
 * the blocking one, so that its figure can be read against the machine's
 * state. Median and p99 in microseconds; NAN if the rings cannot be made. */
static void round_trip_ref(int rounds, int pinned, double *median_us, double *p99_us) {
    *median_us = *p99_us = NAN;
    spsc_ring_t *ping = spsc_create(65536), *pong = spsc_create(65536);
    if (!ping || !pong) {
        if (ping) spsc_destroy(ping);
        if (pong) spsc_destroy(pong);
        return;
    }
    pid_t child = fork();
    if (child == 0) {
        die_with_parent();
        if (pinned) pin_to(1);
        spsc_consumer_t in = spsc_consumer(ping);
        spsc_producer_t out = spsc_producer(pong);
        char buf[64];
        uint32_t len;
        for (int i = 0; i < rounds; i++) {
            while (spsc_get(&in, buf, sizeof buf, &len) != 1) CPU_RELAX();
            while (!spsc_put(&out, buf, len)) CPU_RELAX();
        }
        _exit(0);
    }
    cpu_set_t old;
    sched_getaffinity(0, sizeof old, &old);
    if (pinned) pin_to(0);
    spsc_producer_t out = spsc_producer(ping);
    spsc_consumer_t in = spsc_consumer(pong);
    uint64_t *samples = malloc(sizeof(uint64_t) * rounds);
    char buf[64] = "ping";
    uint32_t len;
    for (int i = 0; i < rounds; i++) {
        uint64_t t0 = now_ns();
        while (!spsc_put(&out, buf, 32)) CPU_RELAX();
        while (spsc_get(&in, buf, sizeof buf, &len) != 1) CPU_RELAX();
        samples[i] = now_ns() - t0;
    }
    rt_finish(samples, rounds, &old, child, median_us, p99_us);
    spsc_destroy(ping);
    spsc_destroy(pong);
}

/* --------------------------------------------------------------- report */

static const char *verdict(double value, double bound, int at_least) {
    if (isnan(value) || value == 0) return "n/a";
    return (at_least ? value >= bound : value <= bound) ? "met" : "MISSED";
}

static void target_row(const char *what, double value, const char *unit, const char *cmp, double bound,
                       int at_least) {
    char v[32], b[32];
    if (isnan(value) || value == 0)
        snprintf(v, sizeof v, "n/a");
    else
        snprintf(v, sizeof v, "%.2f%s", value, unit);
    snprintf(b, sizeof b, "%s %.2f%s", cmp, bound, unit);
    printf("  %-58s %12s   %-12s %s\n", what, v, b, verdict(value, bound, at_least));
}

static double ratio(double a, double b) {
    return (a > 0 && b > 0) ? a / b : NAN;
}

/* `impl` 1 -> 1 at 512 B through a `small` ring against a `large` one,
 * measured in pairs (one run of each, back to back) and given as the
 * median of the pairs' ratios: the machine changes speed for seconds at a
 * time, and a table row measured a minute after another can compare two
 * machine states (the reference ring moved 9 and 23 M/s in two rows of one
 * run), a pair rarely does. */
static double ring_ratio_paired(impl_t impl, uint32_t small, uint32_t large, int pinned) {
    double r[REPS];
    for (int i = 0; i < REPS; i++) {
        double a = throughput(impl, 1, 1, 512, small, pinned);
        r[i] = ratio(a, throughput(impl, 1, 1, 512, large, pinned));
        if (isnan(r[i])) return NAN;
    }
    return median(r, REPS);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    bench_pid = getpid();
    atexit(remove_created);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (getenv("RB_BENCH_SECONDS")) scale = atof(getenv("RB_BENCH_SECONDS"));
    find_cpus();
    if (getenv("RB_BENCH_AB")) {
        /* One comparison for bench/ab_libs.py: the reference ring, ours,
         * the reference ring again (1 -> 1, pinned where possible), so the
         * caller can tell the machine's speed state from the reference. */
        uint32_t size = 0, ring = 1u << 20;
        if (sscanf(getenv("RB_BENCH_AB"), "%u:%u", &size, &ring) < 1 || size == 0 || size > MAX_MSG ||
            (ring & (ring - 1)) != 0) {
            fprintf(stderr, "RB_BENCH_AB=size[:ring] (size 1..%u, ring a power of two)\n", MAX_MSG);
            return 2;
        }
        double ref1 = throughput(IMPL_REF, 1, 1, size, ring, can_pin);
        double ours = throughput(IMPL_MSG, 1, 1, size, ring, can_pin);
        double ref2 = throughput(IMPL_REF, 1, 1, size, ring, can_pin);
        printf("ab %.0f %.0f %.0f\n", ours, ref1, ref2);
        return 0;
    }
    if (getenv("RB_BENCH_CSV")) {
        if (!(csv = fopen(getenv("RB_BENCH_CSV"), "w"))) {
            perror(getenv("RB_BENCH_CSV"));
            return 1;
        }
        fprintf(csv, "section,producers,consumers,size,ring,pinned,implementation,messages_per_s\n");
    }
    printf("libring_buffer %s C benchmark: %ld CPUs online, processes via fork, median of %d runs (in-process: %d)\n",
           ring_buffer_version(), sysconf(_SC_NPROCESSORS_ONLN), REPS, INPROC_REPS);
    if (!can_pin) printf("pinned runs skipped: this process may run on fewer than 2 CPUs\n");
    if (!HAVE_BOOST)
        printf("Boost.Interprocess message_queue skipped: its headers (boost/interprocess) are not installed "
               "(make bench-c BOOST_INCLUDE=<dir> points at another copy)\n");

    /* In-process cost of one put+get. */
    /* "legacy library": the legacy library's unlocked write and read, as
     * bench/legacy_model.h models them (issue 11's yardstick); "legacy
     * write/read": this library's legacy calls. */
    printf("\nin-process cost of one put+get (ns, one thread, ring 1 MiB)\n");
    printf("  %-8s %16s %18s %16s %16s %12s\n", "size", impl_label[IMPL_MSG], impl_label[IMPL_LEGACY],
           impl_label[IMPL_LEGACY_LIB], impl_label[IMPL_REF], impl_label[IMPL_BOOST]);
    const uint32_t inproc_sizes[] = {8, 64, 512, 4096};
    double inproc_msg64 = NAN, inproc_model64 = NAN;
    for (size_t i = 0; i < sizeof inproc_sizes / sizeof *inproc_sizes; i++) {
        uint32_t size = inproc_sizes[i];
        double m = inproc(IMPL_MSG, size), l = inproc(IMPL_LEGACY, size), lib = inproc(IMPL_LEGACY_LIB, size);
        double r = inproc(IMPL_REF, size), b = HAVE_BOOST ? inproc(IMPL_BOOST, size) : NAN;
        if (size == 64) inproc_msg64 = m, inproc_model64 = lib;
        printf("  %5u B  %16.1f %18.1f %16.1f %16.1f %12.1f\n", size, m, l, lib, r, b);
    }

    /* 1 -> 1 processes, pinned and not, message sizes 8 B .. 64 KiB. */
    section = "sizes";
    const uint32_t sizes[] = {8, 64, 512, 4096, 65536};
    enum { NSIZES = sizeof sizes / sizeof *sizes };
    const uint32_t ring = 1u << 20;
    double pinned_msg[NSIZES] = {0}, pinned_ref[NSIZES] = {0}, unpinned_msg512 = 0;
    impl_t one_to_one[3] = {IMPL_MSG, IMPL_REF, IMPL_BOOST};
    int k1 = HAVE_BOOST ? 3 : 2;
    for (int pinned = can_pin; pinned >= 0; pinned--) {
        printf("\n1 -> 1 processes, %s, ring 1 MiB (M messages/s; ratio = ours / reference ring)\n",
               pinned ? "pinned to 2 cores" : "not pinned");
        printf("  %-8s %16s %16s %12s %8s\n", "size", impl_label[IMPL_MSG], impl_label[IMPL_REF], impl_label[IMPL_BOOST],
               "ratio");
        for (int i = 0; i < NSIZES; i++) {
            double v[3] = {0, 0, 0};
            measure(one_to_one, k1, 1, 1, sizes[i], ring, pinned, v);
            if (pinned) pinned_msg[i] = v[0], pinned_ref[i] = v[1];
            if (!pinned && sizes[i] == 512) unpinned_msg512 = v[0];
            printf("  %5u B  %16.3f %16.3f %12.3f %7.2fx   (%.0f MB/s ours)\n", sizes[i], v[0] / 1e6, v[1] / 1e6,
                   HAVE_BOOST ? v[2] / 1e6 : NAN, ratio(v[0], v[1]), v[0] * sizes[i] / 1e6);
        }
    }

    /* Ring sizes, 512-byte messages. */
    section = "rings";
    const uint32_t rings[] = {1u << 16, 1u << 18, 1u << 20, 1u << 22};
    double by_ring[4] = {0};
    printf("\nring sizes, 1 -> 1 %s, 512-byte messages (M messages/s)\n", can_pin ? "pinned" : "not pinned");
    printf("  %-8s %16s %16s %8s\n", "ring", impl_label[IMPL_MSG], impl_label[IMPL_REF], "ratio");
    for (int i = 0; i < 4; i++) {
        double v[2];
        measure(one_to_one, 2, 1, 1, 512, rings[i], can_pin, v);
        by_ring[i] = v[0];
        printf("  %5u KiB %15.3f %16.3f %7.2fx\n", rings[i] / 1024, v[0] / 1e6, v[1] / 1e6, ratio(v[0], v[1]));
    }
    double ring_ratio = ring_ratio_paired(IMPL_MSG, rings[0], rings[3], can_pin);
    double ring_ratio_ref = ring_ratio_paired(IMPL_REF, rings[0], rings[3], can_pin);
    printf("  64 KiB / 4 MiB, median of %d back-to-back pairs: put_msg/get_msg %.2fx (the table's rows: %.2fx), "
           "reference ring %.2fx\n",
           REPS, ring_ratio, ratio(by_ring[0], by_ring[3]), ring_ratio_ref);

    /* Legacy raw calls against the message calls, large records. */
    section = "legacy";
    const uint32_t big[] = {512, 4096, 65536};
    double legacy_ratio_4k = NAN;
    printf("\nlegacy write/read of fixed records vs put_msg/get_msg, 1 -> 1 %s, ring 1 MiB (M messages/s)\n",
           can_pin ? "pinned" : "not pinned");
    printf("  %-8s %16s %18s %8s\n", "size", impl_label[IMPL_MSG], impl_label[IMPL_LEGACY], "legacy/msg");
    for (int i = 0; i < 3; i++) {
        impl_t both[2] = {IMPL_MSG, IMPL_LEGACY};
        double v[2];
        measure(both, 2, 1, 1, big[i], ring, can_pin, v);
        if (big[i] == 4096) legacy_ratio_4k = ratio(v[1], v[0]);
        printf("  %5u B  %16.3f %18.3f %9.2fx\n", big[i], v[0] / 1e6, v[1] / 1e6, ratio(v[1], v[0]));
    }

    /* Many producers and consumers, 64-byte messages, not pinned. */
    section = "many";
    double mpmc_msg = 0, mpmc_boost = 0;
    const int shapes[2][2] = {{4, 4}, {8, 1}};
    printf("\nmany processes, 64-byte messages, not pinned, ring 1 MiB (M messages/s)\n");
    printf("  %-8s %16s %18s %12s\n", "shape", impl_label[IMPL_MSG], impl_label[IMPL_LEGACY], impl_label[IMPL_BOOST]);
    for (int i = 0; i < 2; i++) {
        impl_t many[3] = {IMPL_MSG, IMPL_LEGACY, IMPL_BOOST};
        double v[3] = {0, 0, 0};
        measure(many, HAVE_BOOST ? 3 : 2, shapes[i][0], shapes[i][1], 64, ring, 0, v);
        if (i == 0) mpmc_msg = v[0], mpmc_boost = v[2];
        printf("  %d -> %d   %16.3f %18.3f %12.3f\n", shapes[i][0], shapes[i][1], v[0] / 1e6, v[1] / 1e6,
               HAVE_BOOST ? v[2] / 1e6 : NAN);
    }

    /* Blocking round trip. */
    double rt_med, rt_p99, rtp_med = NAN, rtp_p99 = NAN;
    int rounds = (int)(50000 * scale) + 100;
    double ref_med, ref_p99, refp_med = NAN, refp_p99 = NAN;
    round_trip(rounds, 0, &rt_med, &rt_p99);
    round_trip_ref(rounds, 0, &ref_med, &ref_p99);
    if (can_pin) {
        round_trip(rounds, 1, &rtp_med, &rtp_p99);
        round_trip_ref(rounds, 1, &refp_med, &refp_p99);
    }
    printf("\nround trip put->get->put->get, 32 bytes (us): blocking put_msg/get_msg; the reference ring, spinning\n");
    printf("  not pinned: median %.2f, p99 %.2f   reference: median %.2f, p99 %.2f\n", rt_med, rt_p99, ref_med,
           ref_p99);
    if (can_pin)
        printf("  pinned:     median %.2f, p99 %.2f   reference: median %.2f, p99 %.2f\n", rtp_med, rtp_p99, refp_med,
               refp_p99);

    printf("\ntargets (issue 11 and DESIGN.md; medians of this run)\n");
    target_row("in-process put+get 64 B, ours / legacy library write+read", ratio(inproc_msg64, inproc_model64), "x",
               "<=", 1.5, 0);
    target_row("pinned 1->1 64 B, ours / reference ring", ratio(pinned_msg[1], pinned_ref[1]), "x", ">=", 0.7, 1);
    target_row("pinned 1->1 512 B, ours / reference ring", ratio(pinned_msg[2], pinned_ref[2]), "x", ">=", 0.9, 1);
    target_row("4->4 64 B, ours / Boost message_queue", HAVE_BOOST ? ratio(mpmc_msg, mpmc_boost) : NAN, "x", ">=",
               1.0, 1);
    target_row("legacy write/read 4 KiB records / put_msg+get_msg", legacy_ratio_4k, "x", ">=", 0.9, 1);
    target_row("1->1 512 B, 64 KiB ring / 4 MiB ring (paired runs)", ring_ratio, "x", ">=", 0.7, 1);
    printf("  %-58s %11.2fx   (the hardware's own, no target)\n", "  the same for the reference ring", ring_ratio_ref);
    target_row("blocking round trip p50, pinned (us)", rtp_med, "", "<=", 1.0, 0);
    printf("  %-58s %12.2f   (the machine's floor in this run, no target)\n",
           "  the reference ring's spinning round trip p50, pinned (us)", refp_med);
    target_row("1->1 512 B not pinned, put_msg/get_msg (M/s)", unpinned_msg512 / 1e6, "", ">=", 4.0, 1);
    target_row("4->4 64 B not pinned, put_msg/get_msg (M/s)", mpmc_msg / 1e6, "", ">=", 2.0, 1);
    printf("\nsteadiness: the reference ring's fastest run of one configuration was %.1fx its slowest%s\n", ref_spread,
           ref_spread > 2 ? " (the machine changed speed during this run: its ratios mix machine states; run again)"
                          : "");
    if (csv) fclose(csv);
    return 0;
}
