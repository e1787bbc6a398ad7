/* Boost.Interprocess message_queue behind a small C interface, for the C
 * benchmark (bench.c). boost_mq.cpp implements it; the Makefile compiles and
 * links it, and defines RB_BENCH_BOOST, only where the Boost headers are
 * installed: without them bench.c prints a line saying Boost was skipped. */
#ifndef RB_BENCH_BOOST_MQ_H
#define RB_BENCH_BOOST_MQ_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct boost_mq boost_mq_t;

/* Creates queue `name` (exclusive) for `max_msgs` messages of at most
 * `max_size` bytes; NULL on failure (the reason on stderr). */
boost_mq_t *boost_mq_create(const char *name, uint32_t max_msgs, uint32_t max_size);
/* Opens an existing queue; NULL on failure. */
boost_mq_t *boost_mq_open(const char *name);
/* Blocking send: 0, or -1 on failure. */
int boost_mq_send(boost_mq_t *q, const void *data, uint32_t len);
/* Non-blocking send: 1 sent, 0 full, -1 failure. */
int boost_mq_try_send(boost_mq_t *q, const void *data, uint32_t len);
/* Blocking receive into buf (cap bytes): the length, or -1. */
int64_t boost_mq_receive(boost_mq_t *q, void *buf, uint32_t cap);
/* Non-blocking receive: the length, -2 if empty, -1 on failure. */
int64_t boost_mq_try_receive(boost_mq_t *q, void *buf, uint32_t cap);
void boost_mq_close(boost_mq_t *q);
void boost_mq_remove(const char *name);

#ifdef __cplusplus
}
#endif

#endif
