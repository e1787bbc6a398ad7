/* Compiled by build.rs against the freshly generated header: the build fails
 * if the header's structs drift from the legacy layout (docs/legacy-abi.md). */
#include <stddef.h>
#include "ring_buffer.h"

#define AT(type, field, offset) \
    _Static_assert(offsetof(type, field) == (offset), #type "." #field " moved")

AT(ring_buffer_t, magic, 0);
AT(ring_buffer_t, version, 8);
AT(ring_buffer_t, buffer_size, 12);
AT(ring_buffer_t, head, 16);
AT(ring_buffer_t, tail, 24);
AT(ring_buffer_t, readers, 32);
AT(ring_buffer_t, writers, 36);
AT(ring_buffer_t, ref_count, 40);
AT(ring_buffer_t, process_count, 44);
AT(ring_buffer_t, ref_mutex, 48);
AT(ring_buffer_t, name, 88);
AT(ring_buffer_t, creator_pid, 152);
AT(ring_buffer_t, total_bytes_written, 160);
AT(ring_buffer_t, total_bytes_read, 168);
AT(ring_buffer_t, padding, 176);
AT(ring_buffer_t, data, 200);
_Static_assert(sizeof(ring_buffer_t) == 200, "ring_buffer_t size");
_Static_assert(_Alignof(ring_buffer_t) == 8, "ring_buffer_t alignment");

AT(ring_buffer_ref_t, name, 0);
AT(ring_buffer_ref_t, size, 64);
AT(ring_buffer_ref_t, auto_cleanup, 68);
AT(ring_buffer_ref_t, creator_pid, 72);
_Static_assert(sizeof(ring_buffer_ref_t) == 76, "ring_buffer_ref_t size");

AT(ring_buffer_stats_t, buffer_size, 0);
AT(ring_buffer_stats_t, available_read, 4);
AT(ring_buffer_stats_t, available_write, 8);
AT(ring_buffer_stats_t, readers, 12);
AT(ring_buffer_stats_t, writers, 16);
AT(ring_buffer_stats_t, ref_count, 20);
AT(ring_buffer_stats_t, total_bytes_written, 24);
AT(ring_buffer_stats_t, total_bytes_read, 32);
AT(ring_buffer_stats_t, utilization, 40);
_Static_assert(sizeof(ring_buffer_stats_t) == 48, "ring_buffer_stats_t size");

_Static_assert(RING_BUFFER_MAGIC == 0x53414745424C4B52ULL, "magic");
_Static_assert(MAX_NAME_LEN == 64, "name field");
_Static_assert(RB_OK == 0 && RB_ERR_INVALID_ARG == -1 && RB_ERR_PANIC == -16, "status codes");
