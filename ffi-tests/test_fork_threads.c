/* fork() while other threads are inside library calls. The process-wide
 * handle registry lock used to be copied into the child held by a thread
 * that does not exist there, and the child hung for ever in its first
 * create/open/close. Here two threads create, use and close queues without
 * pause while the main thread forks children that must each create, open,
 * use, close and remove a queue of their own within their alarm. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

static atomic_int stop_threads;
static atomic_long thread_rounds;

/* Makes the calls that do little but take the registry lock, without
 * pause: counts on an open handle (its read lock) and closes of a pointer
 * that is not a handle (its write lock). No system calls: a thread inside
 * mmap/munmap would only serialise with fork() itself. */
static void *churn(void *arg) {
    ring_buffer_t *rb = arg;
    int not_a_handle = 0;
    while (!atomic_load(&stop_threads)) {
        (void)ring_buffer_msg_count(rb);
        ring_buffer_close((ring_buffer_t *)&not_a_handle);
        atomic_fetch_add(&thread_rounds, 1);
    }
    return NULL;
}

/* The child's whole life: a queue of its own, used and removed. The name
 * is the parent's pid and the child's number, unique to this run (a child's
 * own pid may repeat one of an earlier, killed run). */
static int child_main(const char *name) {
    ring_buffer_t *rb = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    if (!rb) return 10;
    ring_buffer_t *other = ring_buffer_open(name);
    if (!other) return 11;
    if (ring_buffer_put_msg(rb, "hello", 5, 0) != RB_OK) return 12;
    char buf[8];
    uint32_t len = 0;
    if (ring_buffer_get_msg(other, buf, sizeof buf, &len, 0) != RB_OK || len != 5) return 13;
    ring_buffer_close(other);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    return 0;
}

int main(void) {
    rbt_init();
    const unsigned children = under_valgrind() ? 40 : 200;
    watchdog(valgrind_scaled(120), "forking while threads are inside calls");
    pthread_t threads[2];
    const char *names[2] = {test_name("forkt"), test_name("forkt")};
    ring_buffer_t *handles[2];
    for (int i = 0; i < 2; i++) {
        handles[i] = ring_buffer_create(names[i], 1024);
        REQUIRE(handles[i]);
        REQUIRE(pthread_create(&threads[i], NULL, churn, handles[i]) == 0);
    }
    unsigned hung = 0, failed = 0;
    for (unsigned i = 0; i < children; i++) {
        char name[64];
        snprintf(name, sizeof name, "ct_forkc_%d_%u", (int)getpid(), i);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL); /* a hang kills the child; the parent counts it */
            alarm(valgrind_scaled(3));
            _exit(child_main(name));
        }
        int rc = wait_child(pid);
        if (rc == 128 + SIGALRM) hung++;
        else if (rc != 0) {
            failed++;
            fprintf(stderr, "  child %u failed with exit code %d\n", i, rc);
        }
        char path[96];
        shm_path(path, sizeof path, name);
        unlink(path); /* what a hung or failed child left behind */
    }
    atomic_store(&stop_threads, 1);
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
    printf("  %u children forked during %ld thread rounds: %u hung, %u failed\n", children,
           atomic_load(&thread_rounds), hung, failed);
    CHECK_EQ(hung, 0);
    CHECK_EQ(failed, 0);
    CHECK(atomic_load(&thread_rounds) > 0);
    for (int i = 0; i < 2; i++) {
        ring_buffer_close(handles[i]);
        ring_buffer_destroy(names[i]);
    }
    return rbt_finish("test_fork_threads");
}
