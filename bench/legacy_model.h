/* What issue 11 measures the in-process cost of put_msg+get_msg against:
 * the legacy library's raw write and read, which take no lock and advance
 * `head` and `tail` with plain loads and stores (LEGACY_ABI.md, "Legacy
 * defects": not safe with more than one writer or reader). The legacy
 * library itself is not part of this tree, so this is a model of its two
 * calls as LEGACY_ABI.md describes them, on the same header
 * (`ring_buffer_t`, 200 bytes, then the data area): the magic checked, the
 * room or the queued bytes computed from `head` and `tail`, all or nothing,
 * `writers`/`readers` marked while inside, the bytes copied in at most two
 * pieces, the position and the byte total advanced. One process, one
 * thread: the software cost of a call, nothing else. */
#ifndef RB_BENCH_LEGACY_MODEL_H
#define RB_BENCH_LEGACY_MODEL_H

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "ring_buffer.h"

/* A header and `size` data bytes (a power of two) in an anonymous mapping.
 * NULL on failure. */
static inline ring_buffer_t *legacy_model_create(uint32_t size) {
    void *p = mmap(NULL, sizeof(ring_buffer_t) + size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    ring_buffer_t *rb = p;
    rb->magic = RING_BUFFER_MAGIC;
    rb->version = 1;
    rb->buffer_size = size;
    return rb;
}

static inline void legacy_model_destroy(ring_buffer_t *rb) {
    munmap(rb, sizeof(ring_buffer_t) + rb->buffer_size);
}

/* `len` bytes in, all or nothing: `len`, or -1 (one byte always stays
 * free, as `ring_buffer_available_write` says). */
static inline int legacy_model_write(ring_buffer_t *rb, const void *data, uint32_t len) {
    if (!rb || !data || len == 0 || rb->magic != RING_BUFFER_MAGIC) return -1;
    uint64_t head = rb->head, tail = rb->tail;
    uint32_t size = rb->buffer_size;
    if (size - (uint32_t)(tail - head) - 1 < len) return -1;
    rb->writers++;
    uint32_t at = (uint32_t)(tail & (size - 1)), first = len < size - at ? len : size - at;
    memcpy(rb->data + at, data, first);
    memcpy(rb->data, (const char *)data + first, len - first);
    rb->tail = tail + len;
    rb->total_bytes_written += len;
    rb->writers--;
    return (int)len;
}

/* `len` bytes out, all or nothing: `len`, or -1. */
static inline int legacy_model_read(ring_buffer_t *rb, void *data, uint32_t len) {
    if (!rb || !data || len == 0 || rb->magic != RING_BUFFER_MAGIC) return -1;
    uint64_t head = rb->head, tail = rb->tail;
    uint32_t size = rb->buffer_size;
    if ((uint32_t)(tail - head) < len) return -1;
    rb->readers++;
    uint32_t at = (uint32_t)(head & (size - 1)), first = len < size - at ? len : size - at;
    memcpy(data, rb->data + at, first);
    memcpy((char *)data + first, rb->data, len - first);
    rb->head = head + len;
    rb->total_bytes_read += len;
    rb->readers--;
    return (int)len;
}

#endif
