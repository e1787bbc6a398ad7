// Boost.Interprocess message_queue for the C benchmark (see boost_mq.h).
// Compiled only where the Boost headers are installed (Makefile).
#include "boost_mq.h"

#include <boost/interprocess/ipc/message_queue.hpp>

#include <cstdio>
#include <exception>

namespace bip = boost::interprocess;

struct boost_mq {
    bip::message_queue mq;
    template <class... A>
    explicit boost_mq(A &&...args) : mq(static_cast<A &&>(args)...) {}
};

boost_mq_t *boost_mq_create(const char *name, uint32_t max_msgs, uint32_t max_size) {
    try {
        return new boost_mq(bip::create_only, name, max_msgs, max_size);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "boost message_queue create %s: %s\n", name, e.what());
        return nullptr;
    }
}

boost_mq_t *boost_mq_open(const char *name) {
    try {
        return new boost_mq(bip::open_only, name);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "boost message_queue open %s: %s\n", name, e.what());
        return nullptr;
    }
}

int boost_mq_send(boost_mq_t *q, const void *data, uint32_t len) {
    try {
        q->mq.send(data, len, 0);
        return 0;
    } catch (const std::exception &) {
        return -1;
    }
}

int boost_mq_try_send(boost_mq_t *q, const void *data, uint32_t len) {
    try {
        return q->mq.try_send(data, len, 0) ? 1 : 0;
    } catch (const std::exception &) {
        return -1;
    }
}

int64_t boost_mq_receive(boost_mq_t *q, void *buf, uint32_t cap) {
    try {
        bip::message_queue::size_type got = 0;
        unsigned int prio = 0;
        q->mq.receive(buf, cap, got, prio);
        return static_cast<int64_t>(got);
    } catch (const std::exception &) {
        return -1;
    }
}

int64_t boost_mq_try_receive(boost_mq_t *q, void *buf, uint32_t cap) {
    try {
        bip::message_queue::size_type got = 0;
        unsigned int prio = 0;
        return q->mq.try_receive(buf, cap, got, prio) ? static_cast<int64_t>(got) : -2;
    } catch (const std::exception &) {
        return -1;
    }
}

void boost_mq_close(boost_mq_t *q) {
    delete q;
}

void boost_mq_remove(const char *name) {
    bip::message_queue::remove(name);
}
