// The C API from C++17: including ring_buffer.h must give C linkage (the
// header's extern "C" guards; without them nothing below would link), and
// a small RAII wrapper shows the idiomatic use: a move-only owner that
// closes in its destructor, exceptions carrying the status code, timeouts
// as std::chrono durations, and get() that grows its buffer when the
// library reports RB_ERR_BUFFER_TOO_SMALL.
#include "check.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// C linkage and the exact C signatures, checked by the compiler.
static_assert(std::is_same_v<decltype(&ring_buffer_put_msg),
                             int (*)(ring_buffer_t *, const void *, uint32_t, int64_t)>);
static_assert(std::is_same_v<decltype(&ring_buffer_get_msg),
                             int (*)(ring_buffer_t *, void *, uint32_t, uint32_t *, int64_t)>);
static_assert(std::is_same_v<decltype(&ring_buffer_create_ex),
                             ring_buffer_t *(*)(const char *, uint32_t, uint32_t, uint32_t)>);
static_assert(sizeof(ring_buffer_t) == 200 && alignof(ring_buffer_t) == 8);
static_assert(sizeof(ring_buffer_ref_t) == 76 && sizeof(ring_buffer_stats_t) == 48);
static_assert(RB_ERR_PANIC == -16);

namespace sage {

// A failed call: the status code and the library's text for it.
class Error : public std::runtime_error {
  public:
    explicit Error(int code)
        : std::runtime_error(ring_buffer_strerror(code)), code_(code) {}
    int code() const noexcept { return code_; }

  private:
    int code_;
};

// Owns one handle; closes it when destroyed. Move-only, like a file.
class Queue {
  public:
    static Queue create(const std::string &name, uint32_t size, uint32_t mode = 0,
                        uint32_t flags = RB_CREATE_EXCLUSIVE) {
        ring_buffer_t *rb = ring_buffer_create_ex(name.c_str(), size, mode, flags);
        if (!rb) throw Error(ring_buffer_last_error());
        return Queue(rb);
    }

    static Queue open(const std::string &name) {
        ring_buffer_t *rb = ring_buffer_open_ex(name.c_str(), 0);
        if (!rb) throw Error(ring_buffer_last_error());
        return Queue(rb);
    }

    Queue(Queue &&other) noexcept : rb_(std::exchange(other.rb_, nullptr)) {}
    Queue &operator=(Queue &&other) noexcept {
        if (this != &other) {
            reset();
            rb_ = std::exchange(other.rb_, nullptr);
        }
        return *this;
    }
    Queue(const Queue &) = delete;
    Queue &operator=(const Queue &) = delete;
    ~Queue() { reset(); }

    // false when the queue stayed full for the whole timeout.
    bool put(std::string_view msg,
             std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1)) {
        int rc = ring_buffer_put_msg(rb_, msg.data(), static_cast<uint32_t>(msg.size()),
                                     timeout.count());
        if (rc == RB_OK) return true;
        if (rc == RB_ERR_FULL || rc == RB_ERR_TIMEOUT) return false;
        throw Error(rc);
    }

    // nullopt when nothing arrived within the timeout.
    std::optional<std::string> get(
        std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1)) {
        for (;;) {
            uint32_t len = 0;
            int rc = ring_buffer_get_msg(rb_, buf_.data(), static_cast<uint32_t>(buf_.size()),
                                         &len, timeout.count());
            if (rc == RB_OK) return std::string(buf_.data(), len);
            if (rc == RB_ERR_EMPTY || rc == RB_ERR_TIMEOUT) return std::nullopt;
            if (rc != RB_ERR_BUFFER_TOO_SMALL) throw Error(rc);
            ++grew_;
            buf_.resize(len); // nothing was consumed: retry with room for it
        }
    }

    uint64_t size() const { return ring_buffer_msg_count(rb_); }
    uint32_t capacity() const { return rb_->buffer_size; } // the mapped header
    ring_buffer_t *handle() const noexcept { return rb_; }
    int buffer_growths() const noexcept { return grew_; }

    void reset() noexcept {
        if (rb_) ring_buffer_close(std::exchange(rb_, nullptr));
    }

  private:
    explicit Queue(ring_buffer_t *rb) : rb_(rb), buf_(64) {}
    ring_buffer_t *rb_;
    std::vector<char> buf_;
    int grew_ = 0;
};

} // namespace sage

// The plain C calls, from C++.
static void test_plain_calls() {
    const char *name = test_name("cpp_plain");
    ring_buffer_t *rb = ring_buffer_create_ex(name, 4096, 0, RB_CREATE_EXCLUSIVE);
    REQUIRE(rb != nullptr);
    CHECK_EQ(rb->version, RING_BUFFER_VERSION);
    CHECK_EQ(rb->buffer_size, 4096);
    const std::string msg = "hello from C++";
    CHECK_EQ(ring_buffer_put_msg(rb, msg.data(), static_cast<uint32_t>(msg.size()), RB_NO_WAIT),
             RB_OK);
    char buf[64] = {};
    uint32_t len = 0;
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_OK);
    CHECK_EQ(len, msg.size());
    CHECK(std::string(buf, len) == msg);
    CHECK_EQ(ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT), RB_ERR_EMPTY);
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    CHECK(ring_buffer_open(name) == nullptr);
    CHECK_EQ(ring_buffer_last_error(), RB_ERR_NOT_FOUND);
}

static void test_wrapper() {
    const std::string name = test_name("cpp_raii");
    ring_buffer_t *raw = nullptr;
    {
        sage::Queue q = sage::Queue::create(name, 2000);
        raw = q.handle();
        CHECK(raw != nullptr);
        CHECK_EQ(q.capacity(), 2048);
        CHECK(q.put("one"));
        CHECK(q.put(std::string(1000, 'x'))); // larger than get()'s first buffer
        CHECK(q.put(""));
        CHECK_EQ(q.size(), 3);
        CHECK(q.get() == std::optional<std::string>("one"));
        CHECK(q.get() == std::optional<std::string>(std::string(1000, 'x')));
        CHECK_EQ(q.buffer_growths(), 1);
        CHECK(q.get() == std::optional<std::string>(""));
        CHECK(!q.get(std::chrono::nanoseconds(0)).has_value());
        auto t0 = std::chrono::steady_clock::now();
        CHECK(!q.get(std::chrono::milliseconds(50)).has_value());
        CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(50));

        // Fill it: a bounded put reports the full queue instead of throwing.
        while (q.put(std::string(500, 'f'), std::chrono::nanoseconds(0))) {
        }
        CHECK_EQ(q.size(), 4); // 4 frames of 504 bytes in 2047
        CHECK(!q.put(std::string(500, 'g'), std::chrono::milliseconds(10)));

        // Moving transfers ownership; the moved-from object owns nothing.
        sage::Queue moved = std::move(q);
        CHECK(q.handle() == nullptr);
        CHECK(moved.handle() == raw);
        CHECK(moved.get(std::chrono::nanoseconds(0)) == std::optional<std::string>(std::string(500, 'f')));

        // A message longer than the ring goes out of line (issue 14): put
        // succeeds, and get returns it whole, after those queued before it.
        CHECK(moved.put(std::string(4096, 'z')));
        for (int i = 0; i < 3; i++)
            CHECK(moved.get(std::chrono::nanoseconds(0)) == std::optional<std::string>(std::string(500, 'f')));
        CHECK(moved.get(std::chrono::nanoseconds(0)) == std::optional<std::string>(std::string(4096, 'z')));
        bool threw = false;
        // Exclusive create of an existing name throws RB_ERR_EXISTS.
        threw = false;
        try {
            sage::Queue dup = sage::Queue::create(name, 1024);
        } catch (const sage::Error &e) {
            threw = true;
            CHECK_EQ(e.code(), RB_ERR_EXISTS);
        }
        CHECK(threw);
    }
    // The destructor closed the handle: the library no longer knows it
    // (nothing was mapped since, so the address was not reused).
    CHECK_EQ(ring_buffer_msg_count(raw), 0);
    CHECK_EQ(ring_buffer_last_error(), RB_ERR_INVALID_ARG);

    // Missing queue.
    bool threw = false;
    try {
        sage::Queue::open(name + "_missing");
    } catch (const sage::Error &e) {
        threw = true;
        CHECK_EQ(e.code(), RB_ERR_NOT_FOUND);
    }
    CHECK(threw);
    ring_buffer_destroy(name.c_str());
}

// Request/reply between two processes through two wrapped queues.
static void test_two_processes() {
    const std::string requests = test_name("cpp_req");
    const std::string replies = test_name("cpp_rep");
    sage::Queue req = sage::Queue::create(requests, 4096);
    sage::Queue rep = sage::Queue::create(replies, 4096);
    const int n = under_valgrind() ? 200 : 2000;
    pid_t pid = fork_child(valgrind_scaled(60)); // never outlives a dead parent
    if (pid == 0) {
        int code = 0;
        try {
            sage::Queue in = sage::Queue::open(requests);
            sage::Queue out = sage::Queue::open(replies);
            for (int i = 0; i < n; i++) {
                std::optional<std::string> m = in.get();
                if (!m || *m != "req " + std::to_string(i)) {
                    code = 1;
                    break;
                }
                out.put("rep " + std::to_string(i) + std::string(static_cast<size_t>(i % 300), '.'));
            }
        } catch (const sage::Error &) {
            code = 2;
        }
        _exit(code);
    }
    alarm(valgrind_scaled(60));
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        req.put("req " + std::to_string(i));
        std::optional<std::string> r = rep.get();
        ok = r && *r == "rep " + std::to_string(i) + std::string(static_cast<size_t>(i % 300), '.');
    }
    CHECK(ok);
    CHECK_EQ(wait_child(pid), 0);
    alarm(0);
    req.reset();
    rep.reset();
    ring_buffer_destroy(requests.c_str());
    ring_buffer_destroy(replies.c_str());
}

int main() {
    rbt_init();
    test_plain_calls();
    try {
        test_wrapper();
        test_two_processes();
    } catch (const std::exception &e) {
        fprintf(stderr, "unexpected exception: %s\n", e.what());
        CHECK(false);
    }
    return rbt_finish("test_cpp");
}
