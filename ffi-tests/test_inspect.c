/* Looking at queues from outside (what `sage-queue list`/`stat` use):
 * ring_buffer_inspect reports owner, mode, size, header fields, attached
 * processes and whether the creator lives, without attaching (process_count
 * unchanged, no flock: remove_if_unused still sees the queue unused);
 * ring_buffer_attached_pids lists who has it open; ring_buffer_check_name
 * applies the name rule; ring_buffer_object_dir/_prefix name the objects. */
#include "check.h"

#include <fcntl.h>

/* An info filled with a sentinel, to see that failures leave it alone. */
static ring_buffer_info_t sentinel_info(void) {
    ring_buffer_info_t info;
    memset(&info, 0xAB, sizeof info);
    return info;
}

static bool untouched(const ring_buffer_info_t *info) {
    ring_buffer_info_t s = sentinel_info();
    return memcmp(info, &s, sizeof s) == 0;
}

static void test_names_and_paths(void) {
    CHECK_EQ(ring_buffer_check_name("jobs"), RB_OK);
    CHECK_EQ(ring_buffer_check_name("a.b-c_d é"), RB_OK);
    EXPECT_CODE(ring_buffer_check_name(""), RB_ERR_INVALID_NAME);
    EXPECT_CODE(ring_buffer_check_name("a/b"), RB_ERR_INVALID_NAME);
    EXPECT_CODE(ring_buffer_check_name(".."), RB_ERR_INVALID_NAME);
    EXPECT_CODE(ring_buffer_check_name("a\nb"), RB_ERR_INVALID_NAME);
    char long_name[65];
    memset(long_name, 'x', 64);
    long_name[64] = 0;
    EXPECT_CODE(ring_buffer_check_name(long_name), RB_ERR_INVALID_NAME);
    long_name[63] = 0;
    CHECK_EQ(ring_buffer_check_name(long_name), RB_OK);
    EXPECT_CODE(ring_buffer_check_name(NULL), RB_ERR_INVALID_ARG);

    CHECK(strcmp(ring_buffer_object_dir(), "/dev/shm") == 0);
    CHECK(strcmp(ring_buffer_object_prefix(), "sage_ringbuf_") == 0);
    char joined[128];
    snprintf(joined, sizeof joined, "%s/%s", ring_buffer_object_dir(), ring_buffer_object_prefix());
    CHECK(strcmp(joined, SHM_PREFIX) == 0);
}

static void test_bad_arguments(void) {
    ring_buffer_info_t info = sentinel_info();
    EXPECT_CODE(ring_buffer_inspect(NULL, &info), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_inspect("a/b", &info), RB_ERR_INVALID_NAME);
    const char *missing = test_name("missing");
    EXPECT_CODE(ring_buffer_inspect(missing, &info), RB_ERR_NOT_FOUND);
    CHECK(untouched(&info));
    const char *name = test_name("nullinfo");
    ring_buffer_t *rb = ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb != NULL);
    EXPECT_CODE(ring_buffer_inspect(name, NULL), RB_ERR_INVALID_ARG);
    pid_t pids[4];
    EXPECT_CODE(ring_buffer_attached_pids(missing, pids, 4), RB_ERR_NOT_FOUND);
    EXPECT_CODE(ring_buffer_attached_pids(name, NULL, 4), RB_ERR_INVALID_ARG);
    EXPECT_CODE(ring_buffer_attached_pids(NULL, pids, 4), RB_ERR_INVALID_ARG);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
}

/* Everything about a live queue, and that looking did not attach. */
static void test_live_queue(void) {
    const char *name = test_name("live");
    ring_buffer_t *rb = ring_buffer_create_ex(name, 3000, 0640, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb != NULL);
    const char msg[] = "hello";
    REQUIRE(ring_buffer_put_msg(rb, msg, sizeof msg, 0) == RB_OK);
    uint32_t processes_before = rb->process_count;

    ring_buffer_info_t info = sentinel_info();
    CHECK_EQ(ring_buffer_inspect(name, &info), RB_OK);
    struct stat st;
    REQUIRE(object_stat(name, &st));
    CHECK_EQ(info.object_size, st.st_size);
    CHECK_EQ(info.owner_uid, geteuid());
    CHECK_EQ(info.mode, st.st_mode);
    CHECK(S_ISREG(info.mode));
    CHECK_EQ(info.mode & 07777, 0640);
    CHECK_EQ(info.modified_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    CHECK_EQ(info.header_status, RB_OK);
    CHECK_EQ(info.version, RING_BUFFER_VERSION);
    CHECK_EQ(info.buffer_size, 4096);
    CHECK_EQ(info.creator_pid, getpid());
    CHECK_EQ(info.creator_alive, 1);
    CHECK_EQ(info.tail - info.head, RING_BUFFER_FRAME_PREFIX + sizeof msg);
    CHECK_EQ(info.attached_processes, 1);
    CHECK_EQ(rb->process_count, processes_before);

    pid_t pids[4] = {0};
    CHECK_EQ(ring_buffer_attached_pids(name, pids, 4), 1);
    CHECK_EQ(pids[0], getpid());
    CHECK_EQ(ring_buffer_attached_pids(name, NULL, 0), 1);

    /* A second process attached: both listed, sorted. */
    int to_child[2], to_parent[2];
    REQUIRE(pipe(to_child) == 0 && pipe(to_parent) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ring_buffer_t *mine = ring_buffer_open(name);
        char c = mine ? 'o' : 'x';
        if (write(to_parent[1], &c, 1) != 1) _exit(2);
        if (read(to_child[0], &c, 1) != 1) _exit(3);
        ring_buffer_close(mine);
        _exit(mine ? 0 : 1);
    }
    char c = 0;
    REQUIRE(read(to_parent[0], &c, 1) == 1 && c == 'o');
    CHECK_EQ(ring_buffer_attached_pids(name, pids, 4), 2);
    pid_t lo = getpid() < child ? getpid() : child, hi = getpid() < child ? child : getpid();
    CHECK_EQ(pids[0], lo);
    CHECK_EQ(pids[1], hi);
    pid_t one = 0;
    CHECK_EQ(ring_buffer_attached_pids(name, &one, 1), 2); /* the count, the first pid */
    CHECK_EQ(one, lo);
    CHECK_EQ(ring_buffer_inspect(name, &info), RB_OK);
    CHECK_EQ(info.attached_processes, 2);
    REQUIRE(write(to_child[1], "q", 1) == 1);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Inspecting took no lock: once we close, the queue is unused. */
    ring_buffer_close(rb);
    CHECK_EQ(ring_buffer_inspect(name, &info), RB_OK);
    CHECK_EQ(info.attached_processes, 0);
    CHECK_EQ(ring_buffer_attached_pids(name, pids, 4), 0);
    CHECK_EQ(ring_buffer_remove_if_unused(name), 1);
    CHECK(!object_exists(name));
}

static void test_dead_creator(void) {
    const char *name = test_name("orphan");
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) _exit(ring_buffer_create_ex(name, 1024, 0, RB_CREATE_EXCLUSIVE) ? 0 : 1);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ring_buffer_info_t info = sentinel_info();
    CHECK_EQ(ring_buffer_inspect(name, &info), RB_OK);
    CHECK_EQ(info.creator_pid, child);
    CHECK_EQ(info.creator_alive, 0);
    CHECK_EQ(info.attached_processes, 0);
    ring_buffer_destroy(name);
}

/* Objects that are not queues: reported, not refused. */
static void test_not_queues(void) {
    const char *name = test_name("garbage");
    char path[160];
    shm_path(path, sizeof path, name);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    char junk[300];
    memset(junk, 'j', sizeof junk);
    REQUIRE(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    ring_buffer_info_t info = sentinel_info();
    CHECK_EQ(ring_buffer_inspect(name, &info), RB_OK);
    CHECK_EQ(info.header_status, RB_ERR_INCOMPATIBLE);
    CHECK_EQ(info.version, 0);
    CHECK_EQ(info.object_size, 300);
    CHECK_EQ(info.creator_alive, -1);
    unlink(path);

    /* A real header whose object was truncated: fields read, verdict bad. */
    const char *cut = test_name("cut");
    ring_buffer_t *rb = ring_buffer_create_ex(cut, 1024, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb != NULL);
    ring_buffer_close(rb);
    truncate_object(cut, 200 + 1024);
    CHECK_EQ(ring_buffer_inspect(cut, &info), RB_OK);
    CHECK_EQ(info.header_status, RB_ERR_INCOMPATIBLE);
    CHECK_EQ(info.version, RING_BUFFER_VERSION);
    CHECK_EQ(info.buffer_size, 1024);
    CHECK_EQ(info.object_size, 200 + 1024);
    ring_buffer_destroy(cut);

    /* A directory at the path. */
    const char *dir = test_name("dir");
    shm_path(path, sizeof path, dir);
    REQUIRE(mkdir(path, 0700) == 0);
    CHECK_EQ(ring_buffer_inspect(dir, &info), RB_OK);
    CHECK_EQ(info.header_status, RB_ERR_INCOMPATIBLE);
    CHECK(S_ISDIR(info.mode));
    rmdir(path);
}

int main(void) {
    rbt_init();
    test_names_and_paths();
    test_bad_arguments();
    test_live_queue();
    test_dead_creator();
    test_not_queues();
    return rbt_finish("test_inspect");
}
