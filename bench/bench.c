/* `make bench` (C part): throughput and latency of libring_buffer between
 * real processes, through the new message API and through the legacy raw
 * calls, side by side in one run. Every configuration also checks that every
 * message arrived exactly once (counts and checksums), so a fast wrong answer
 * cannot pass for a result.
 *
 * Environment: RB_BENCH_SECONDS scales the message counts (default 1). */
#define _GNU_SOURCE
#include <math.h>
#include <signal.h>
#include <sched.h>
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

/* Ring size for the throughput runs (RB_BENCH_RING overrides). */
static uint32_t ring_bytes = 1u << 20;

/* Every queue this run creates, removed at exit and on SIGINT/SIGTERM (with
 * unlink, which is async-signal-safe), so an interrupted run leaves nothing. */
static char created[8][96];
static int created_count;
static pid_t bench_pid;

static void remove_created(void) {
    if (getpid() != bench_pid) return;
    for (int i = 0; i < created_count; i++) unlink(created[i]);
}

static void on_signal(int sig) {
    remove_created();
    signal(sig, SIG_DFL);
    raise(sig);
}

static ring_buffer_t *create_queue(const char *name, uint32_t size) {
    if (created_count < 8) snprintf(created[created_count++], 96, "/dev/shm/sage_ringbuf_%s", name);
    ring_buffer_t *rb = ring_buffer_create_ex(name, size, 0, RB_CREATE_EXCLUSIVE);
    if (!rb) {
        fprintf(stderr, "create %s: %s\n", name, ring_buffer_strerror(ring_buffer_last_error()));
        exit(1);
    }
    return rb;
}

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

/* Results and the start signal, shared with the forked workers. */
typedef struct {
    atomic_int ready;
    atomic_int go;
    atomic_int producers_left;
    atomic_ullong received;
    atomic_ullong checksum;
} shared_t;

static shared_t *shared_new(void) {
    shared_t *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) abort();
    memset(s, 0, sizeof *s);
    return s;
}

/* A message: a fixed filler with (producer, sequence) stamped at its start
 * and again at its end, so a torn or misframed message shows. Checking every
 * payload byte is the stress suite's job (tests/stress.rs); here it would
 * cost more than the queue and the benchmark would time itself. */
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

/* Forked workers die with the benchmark instead of blocking for ever. */
static void die_with_parent(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != bench_pid) _exit(1);
}

static void wait_go(shared_t *s) {
    die_with_parent();
    atomic_fetch_add(&s->ready, 1);
    while (!atomic_load(&s->go)) sched_yield();
}

typedef enum { API_MESSAGES, API_LEGACY } api_t;

static void producer(const char *name, shared_t *s, api_t api, uint32_t id, uint32_t size, uint64_t count) {
    ring_buffer_t *rb = ring_buffer_open(name);
    if (!rb) _exit(2);
    uint8_t buf[4096 + 4];
    memset(buf, 0x5a, sizeof buf);
    wait_go(s);
    for (uint64_t seq = 0; seq < count; seq++) {
        if (api == API_MESSAGES) {
            fill(buf, size, id, seq);
            if (ring_buffer_put_msg(rb, buf, size, RB_WAIT_FOREVER) != RB_OK) _exit(4);
        } else {
            /* Legacy framing: one write of prefix + payload, retried while full. */
            memcpy(buf, &size, 4);
            fill(buf + 4, size, id, seq);
            while (ring_buffer_write(rb, buf, size + 4) < 0) sched_yield();
        }
    }
    atomic_fetch_sub(&s->producers_left, 1);
    ring_buffer_close(rb);
    _exit(0);
}

static void consumer(const char *name, shared_t *s, api_t api, uint32_t size) {
    ring_buffer_t *rb = ring_buffer_open(name);
    if (!rb) _exit(2);
    uint8_t buf[4096 + 4];
    uint64_t n = 0, sum = 0;
    wait_go(s);
    for (;;) {
        if (api == API_MESSAGES) {
            uint32_t len = 0;
            int rc = ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_WAIT_FOREVER);
            if (rc == RB_ERR_SHUTDOWN) break;
            if (rc != RB_OK || len != size) _exit(5);
            sum += verify(buf, size);
        } else {
            /* Fixed-size records: read exactly one, spinning politely while
             * empty; stop once every producer is done and nothing is left. */
            if (ring_buffer_read(rb, buf, size + 4) < 0) {
                if (atomic_load(&s->producers_left) == 0 && ring_buffer_available_read(rb) == 0) break;
                sched_yield();
                continue;
            }
            sum += verify(buf + 4, size);
        }
        n++;
    }
    atomic_fetch_add(&s->received, n);
    atomic_fetch_add(&s->checksum, sum);
    ring_buffer_close(rb);
    _exit(0);
}

/* Runs one configuration; returns messages per second (0 if wrong). */
static double throughput(api_t api, int producers, int consumers, uint32_t size, uint64_t total) {
    char name[64];
    snprintf(name, sizeof name, "bench_%d_%d%d_%u", (int)getpid(), producers, consumers, size);
    ring_buffer_t *rb = create_queue(name, ring_bytes);
    shared_t *s = shared_new();
    uint64_t per = total / producers, expect_sum = 0;
    atomic_store(&s->producers_left, producers);
    for (int p = 0; p < producers; p++)
        for (uint64_t q = 0; q < per; q++) expect_sum += id_of(p, q);
    pid_t pids[64];
    int n = 0;
    for (int c = 0; c < consumers; c++)
        if ((pids[n++] = fork()) == 0) consumer(name, s, api, size);
    for (int p = 0; p < producers; p++)
        if ((pids[n++] = fork()) == 0) producer(name, s, api, p, size, per);
    while (atomic_load(&s->ready) < n) sched_yield();
    double start = now_s();
    atomic_store(&s->go, 1);
    int failed = 0;
    for (int i = consumers; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        failed |= !WIFEXITED(st) || WEXITSTATUS(st);
    }
    if (api == API_MESSAGES) ring_buffer_shutdown(rb);
    for (int i = 0; i < consumers; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        failed |= !WIFEXITED(st) || WEXITSTATUS(st);
    }
    double secs = now_s() - start;
    uint64_t got = atomic_load(&s->received), sum = atomic_load(&s->checksum);
    if (getenv("RB_BENCH_VERBOSE")) {
        ring_buffer_stats_ex_t st;
        ring_buffer_get_stats_ex(rb, &st);
        fprintf(stderr, "  [%s %d->%d] producer sleeps %llu, consumer sleeps %llu, wake-ups %llu, per message %.4f\n",
                api == API_MESSAGES ? "msg" : "legacy", producers, consumers,
                (unsigned long long)st.producer_waits, (unsigned long long)st.consumer_waits,
                (unsigned long long)st.wakeups, (double)(st.producer_waits + st.consumer_waits) / (got ? got : 1));
    }
    int exact = !failed && got == per * producers && sum == expect_sum;
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    munmap(s, sizeof *s);
    if (!exact) {
        fprintf(stderr, "  %d->%d %uB: WRONG: %llu of %llu messages, checksum %s\n", producers, consumers, size,
                (unsigned long long)got, (unsigned long long)(per * producers), sum == expect_sum ? "ok" : "bad");
        return 0;
    }
    return got / secs;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Ping-pong between two processes over two queues, blocking gets: the
 * round trip put -> get -> put -> get. Fills median and p99 in microseconds. */
static void round_trip(int rounds, double *median_us, double *p99_us) {
    char a[64], b[64];
    snprintf(a, sizeof a, "bench_rt_a_%d", (int)getpid());
    snprintf(b, sizeof b, "bench_rt_b_%d", (int)getpid());
    ring_buffer_t *ping = create_queue(a, 65536);
    ring_buffer_t *pong = create_queue(b, 65536);
    pid_t child = fork();
    if (child == 0) {
        die_with_parent();
        char buf[64];
        uint32_t len;
        for (int i = 0; i < rounds; i++) {
            if (ring_buffer_get_msg(ping, buf, sizeof buf, &len, RB_WAIT_FOREVER) != RB_OK) _exit(2);
            if (ring_buffer_put_msg(pong, buf, len, RB_WAIT_FOREVER) != RB_OK) _exit(2);
        }
        _exit(0);
    }
    uint64_t *samples = malloc(sizeof(uint64_t) * rounds);
    char buf[64] = "ping";
    uint32_t len;
    for (int i = 0; i < rounds; i++) {
        uint64_t t0 = now_ns();
        ring_buffer_put_msg(ping, buf, 32, RB_WAIT_FOREVER);
        ring_buffer_get_msg(pong, buf, sizeof buf, &len, RB_WAIT_FOREVER);
        samples[i] = now_ns() - t0;
    }
    waitpid(child, NULL, 0);
    qsort(samples, rounds, sizeof *samples, cmp_u64);
    *median_us = samples[rounds / 2] / 1e3;
    *p99_us = samples[(int)(rounds * 0.99)] / 1e3;
    free(samples);
    ring_buffer_close(ping);
    ring_buffer_close(pong);
    ring_buffer_destroy(a);
    ring_buffer_destroy(b);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    bench_pid = getpid();
    atexit(remove_created);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double scale = getenv("RB_BENCH_SECONDS") ? atof(getenv("RB_BENCH_SECONDS")) : 1.0;
    if (getenv("RB_BENCH_RING")) ring_bytes = (uint32_t)strtoul(getenv("RB_BENCH_RING"), NULL, 0);
    uint64_t n1 = (uint64_t)(4000000 * scale), n4 = (uint64_t)(4000000 * scale);
    printf("libring_buffer %s C benchmark (%ld CPUs), ring %u KiB, processes via fork\n", ring_buffer_version(),
           sysconf(_SC_NPROCESSORS_ONLN), ring_bytes / 1024);
    printf("%-34s %16s %16s %8s\n", "configuration", "put_msg/get_msg", "legacy wr/rd", "ratio");
    struct {
        int p, c;
        uint32_t size;
        uint64_t n;
        const char *target;
    } cfgs[] = {{1, 1, 512, n1, ">= 4 M/s"}, {4, 4, 64, n4, ">= 2 M/s"}};
    /* Each configuration runs RUNS times, the two APIs interleaved, and the
     * median is reported with the range: two shared cores are noisy. */
    enum { RUNS = 3 };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        double m[RUNS], l[RUNS];
        for (int r = 0; r < RUNS; r++) {
            m[r] = throughput(API_MESSAGES, cfgs[i].p, cfgs[i].c, cfgs[i].size, cfgs[i].n);
            l[r] = throughput(API_LEGACY, cfgs[i].p, cfgs[i].c, cfgs[i].size, cfgs[i].n);
        }
        qsort(m, RUNS, sizeof m[0], cmp_double);
        qsort(l, RUNS, sizeof l[0], cmp_double);
        char label[64];
        snprintf(label, sizeof label, "%d->%d processes, %u-byte messages", cfgs[i].p, cfgs[i].c, cfgs[i].size);
        printf("%-34s %12.2f M/s %12.2f M/s %7.2fx   (target %s, exact delivery checked)\n", label,
               m[RUNS / 2] / 1e6, l[RUNS / 2] / 1e6, l[RUNS / 2] > 0 ? m[RUNS / 2] / l[RUNS / 2] : INFINITY,
               cfgs[i].target);
        printf("%-34s   (%.2f..%.2f)     (%.2f..%.2f)   median of %d runs\n", "", m[0] / 1e6, m[RUNS - 1] / 1e6,
               l[0] / 1e6, l[RUNS - 1] / 1e6, RUNS);
    }
    double med, p99;
    round_trip((int)(100000 * scale), &med, &p99);
    printf("%-34s median %.1f us, p99 %.1f us (blocking put_msg/get_msg, two processes)\n", "round trip put->get->put->get",
           med, p99);
    return 0;
}
