/* The reference the C benchmark measures libring_buffer against: a
 * lock-free single-producer single-consumer ring in shared memory, about as
 * fast as a cross-process byte queue gets. Same framing as libring_buffer (a
 * 4-byte little-endian length, then the payload, wrapping round a
 * power-of-two data area); head and tail each alone on its cache line; each
 * side keeps, in its own process, its position and a cached copy of the
 * other's, and loads the other's line only when that copy says full
 * (producer) or empty (consumer). No locks, no sleeping, no crash repair, one
 * producer and one consumer only: the hardware limit, not a queue to use. */
#ifndef RB_BENCH_SPSC_REF_H
#define RB_BENCH_SPSC_REF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

typedef struct {
    _Alignas(64) _Atomic uint64_t head; /* bytes consumed: the consumer's line */
    _Alignas(64) _Atomic uint64_t tail; /* bytes published: the producer's line */
    _Alignas(64) uint64_t size;         /* data bytes, a power of two; read only */
    _Alignas(64) unsigned char data[];
} spsc_ring_t;

/* A ring of `size` data bytes (a power of two) in an anonymous shared
 * mapping, which processes forked afterwards share. NULL on failure. */
static inline spsc_ring_t *spsc_create(uint64_t size) {
    void *p = mmap(NULL, sizeof(spsc_ring_t) + size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    spsc_ring_t *r = p;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    r->size = size;
    return r;
}

static inline void spsc_destroy(spsc_ring_t *r) {
    munmap(r, sizeof(spsc_ring_t) + r->size);
}

/* Process-local ends: own position and cached copy of the other's. */
typedef struct {
    spsc_ring_t *r;
    uint64_t tail, cached_head;
} spsc_producer_t;

typedef struct {
    spsc_ring_t *r;
    uint64_t head, cached_tail;
} spsc_consumer_t;

static inline spsc_producer_t spsc_producer(spsc_ring_t *r) {
    spsc_producer_t p = {r, atomic_load_explicit(&r->tail, memory_order_relaxed),
                         atomic_load_explicit(&r->head, memory_order_acquire)};
    return p;
}

static inline spsc_consumer_t spsc_consumer(spsc_ring_t *r) {
    spsc_consumer_t c = {r, atomic_load_explicit(&r->head, memory_order_relaxed),
                         atomic_load_explicit(&r->tail, memory_order_acquire)};
    return c;
}

static inline void spsc_copy_in(spsc_ring_t *r, uint64_t pos, const void *src, size_t len) {
    size_t at = (size_t)(pos & (r->size - 1)), first = len < r->size - at ? len : r->size - at;
    memcpy(r->data + at, src, first);
    memcpy(r->data, (const unsigned char *)src + first, len - first);
}

static inline void spsc_copy_out(const spsc_ring_t *r, uint64_t pos, void *dst, size_t len) {
    size_t at = (size_t)(pos & (r->size - 1)), first = len < r->size - at ? len : r->size - at;
    memcpy(dst, r->data + at, first);
    memcpy((unsigned char *)dst + first, r->data, len - first);
}

/* Puts one message: 1, or 0 if it does not fit now. */
static inline int spsc_put(spsc_producer_t *p, const void *msg, uint32_t len) {
    uint64_t frame = 4 + (uint64_t)len;
    if (p->tail + frame - p->cached_head > p->r->size) {
        /* Acquire pairs with the consumer's release of head: it has copied
         * those bytes out, they may be overwritten. */
        p->cached_head = atomic_load_explicit(&p->r->head, memory_order_acquire);
        if (p->tail + frame - p->cached_head > p->r->size) return 0;
    }
    spsc_copy_in(p->r, p->tail, &len, 4);
    spsc_copy_in(p->r, p->tail + 4, msg, len);
    p->tail += frame;
    atomic_store_explicit(&p->r->tail, p->tail, memory_order_release);
    return 1;
}

/* Takes one message into `buf`: 1 (its length in *len), 0 if none is
 * queued, -1 if it is longer than `cap` (nothing taken). */
static inline int spsc_get(spsc_consumer_t *c, void *buf, uint32_t cap, uint32_t *len) {
    if (c->cached_tail - c->head < 4) {
        /* Acquire pairs with the producer's release of tail: whole frames
         * are published, so a visible prefix has its payload with it. */
        c->cached_tail = atomic_load_explicit(&c->r->tail, memory_order_acquire);
        if (c->cached_tail - c->head < 4) return 0;
    }
    uint32_t n;
    spsc_copy_out(c->r, c->head, &n, 4);
    if (n > cap) return -1;
    spsc_copy_out(c->r, c->head + 4, buf, n);
    c->head += 4 + (uint64_t)n;
    atomic_store_explicit(&c->r->head, c->head, memory_order_release);
    *len = n;
    return 1;
}

#endif
