/* Built by `make test` against an installed copy only (pkg-config), to prove
 * `make install` gives a usable library, header and ring_buffer.pc. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <ring_buffer.h>

int main(void) {
    char name[64];
    snprintf(name, sizeof name, "installed_%d", (int)getpid());
    ring_buffer_t *rb = ring_buffer_create_ex(name, 4096, 0, RB_CREATE_EXCLUSIVE);
    if (!rb) {
        fprintf(stderr, "create: %s\n", ring_buffer_strerror(ring_buffer_last_error()));
        return 1;
    }
    uint32_t len = 0;
    char buf[16];
    int ok = ring_buffer_put_msg(rb, "installed", 9, RB_NO_WAIT) == RB_OK &&
             ring_buffer_get_msg(rb, buf, sizeof buf, &len, RB_NO_WAIT) == RB_OK && len == 9 &&
             memcmp(buf, "installed", 9) == 0;
    printf("installed library %s: %s\n", ring_buffer_version(), ok ? "put/get ok" : "FAILED");
    ring_buffer_close(rb);
    ring_buffer_destroy(name);
    return ok ? 0 : 1;
}
