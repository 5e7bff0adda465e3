/*
 * sharegpu-demo: the host backend's story in one run, through the C API exactly as the QEMU
 * device uses it: two devices (one strict-cache), export on one, zero-copy import on the
 * other, a move with move_notify, and the coherency barriers with and without.
 * Exits non-zero if anything does not behave as described.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sharegpu/backend.h"

#define CHECK(call)                                                                     \
    do {                                                                                \
        int err_ = (call);                                                              \
        if (err_) {                                                                     \
            fprintf(stderr, "demo: %s failed: %s\n", #call, sgb_strerror(err_));       \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static void expect(int ok, const char *what)
{
    printf("  %-62s %s\n", what, ok ? "yes" : "NO");
    if (!ok) {
        exit(1);
    }
}

static void show(sgb_device *dev, uint32_t handle)
{
    sgb_bo_state info;
    CHECK(sgb_bo_state_get(dev, handle, &info));
    printf("  %s handle %u: %s, %llu bytes, %s, gen %llu, attachments %u, live mappings %u\n",
           sgb_device_name(dev), handle, info.imported ? "import" : "local",
           (unsigned long long)info.size,
           info.placement == SGB_PLACEMENT_DEVICE ? "VRAM" : "system",
           (unsigned long long)info.generation, info.attachments, info.live_mappings);
}

int main(void)
{
    enum { SIZE = 64 * 1024 };
    sgb_backend *backend;
    sgb_device *a, *b;
    sgb_device_config ca = { .name = "g0", .vram_size = 16 << 20, .coherent = 1 };
    sgb_device_config cb = { .name = "g1", .vram_size = 16 << 20, .coherent = 0 };
    uint32_t bo, imported, crc_a, crc_b, crc_before;
    sgb_uuid uuid;
    sgb_event ev;
    int fd = -1;
    unsigned char *buf = malloc(SIZE), *readback = malloc(SIZE);

    CHECK(sgb_backend_new(&backend));
    CHECK(sgb_device_create(backend, &ca, &a));
    CHECK(sgb_device_create(backend, &cb, &b));
    printf("two devices: g0 (coherent), g1 (coherent=off: strict device cache)\n");

    printf("\n1. export on g0, import on g1 (zero copy)\n");
    CHECK(sgb_bo_create(a, SIZE, SGB_PLACEMENT_DEVICE, 0, &bo));
    for (int i = 0; i < SIZE; i++) {
        buf[i] = (unsigned char)(i * 7 + 3);
    }
    CHECK(sgb_bo_cpu_write(a, bo, 0, buf, SIZE));
    CHECK(sgb_bo_export(a, bo, &uuid, &fd));
    CHECK(sgb_bo_import_fd(b, fd, &imported));
    close(fd);
    CHECK(sgb_job_checksum(a, bo, 0, SIZE, &crc_a, NULL));
    CHECK(sgb_job_checksum(b, imported, 0, SIZE, &crc_b, NULL));
    void *pa, *pb;
    CHECK(sgb_bo_storage(a, bo, NULL, NULL, &pa, NULL));
    CHECK(sgb_bo_storage(b, imported, NULL, NULL, &pb, NULL));
    show(a, bo);
    show(b, imported);
    expect(pa == pb, "g1's import maps g0's storage (same host pages)");
    expect(crc_a == crc_b, "g1's checksum job reads g0's bytes");

    printf("\n2. g0 evicts the buffer to system memory: g1 gets move_notify\n");
    CHECK(sgb_bo_evict(a, bo));
    expect(sgb_device_pop_event(b, &ev) == 0 && ev.type == SGB_EVENT_BO_INVALIDATED,
           "g1 received BO_INVALIDATED for its import");
    CHECK(sgb_job_checksum(b, imported, 0, SIZE, &crc_b, NULL));
    CHECK(sgb_bo_storage(b, imported, NULL, NULL, &pb, NULL));
    show(a, bo);
    expect(pb != pa, "g1 re-mapped lazily onto the new storage");
    expect(crc_b == crc_a, "contents survived the move");

    printf("\n3. coherency barriers on g1 (strict cache)\n");
    for (int i = 0; i < SIZE; i++) {
        buf[i] ^= 0x5a;
    }
    CHECK(sgb_job_checksum(b, imported, 0, SIZE, &crc_before, NULL));
    CHECK(sgb_bo_cpu_write(a, bo, 0, buf, SIZE));
    CHECK(sgb_job_checksum(b, imported, 0, SIZE, &crc_b, NULL));
    expect(crc_b == crc_before, "without end_cpu_access g1 still sees its stale cached copy");
    CHECK(sgb_bo_begin_cpu_access(a, bo, SGB_DIR_TO_DEVICE));
    CHECK(sgb_bo_end_cpu_access(a, bo, SGB_DIR_TO_DEVICE));
    CHECK(sgb_job_checksum(b, imported, 0, SIZE, &crc_b, NULL));
    CHECK(sgb_job_checksum(a, bo, 0, SIZE, &crc_a, NULL));
    expect(crc_b == crc_a && crc_b != crc_before, "after the barrier g1 sees the CPU's bytes");

    CHECK(sgb_job_fill(b, imported, 0, SIZE, 0xdeadbeef, NULL));
    CHECK(sgb_bo_cpu_read(a, bo, 0, readback, SIZE));
    expect(memcmp(readback, buf, SIZE) == 0,
           "g1's fill is not visible to the CPU without a barrier");
    CHECK(sgb_bo_begin_cpu_access(a, bo, SGB_DIR_FROM_DEVICE));
    CHECK(sgb_bo_cpu_read(a, bo, 0, readback, SIZE));
    CHECK(sgb_bo_end_cpu_access(a, bo, SGB_DIR_FROM_DEVICE));
    expect(readback[0] == 0xef && readback[SIZE - 1] == 0xde,
           "after begin_cpu_access the CPU sees g1's fill");

    printf("\n4. a pinned buffer refuses to move\n");
    CHECK(sgb_bo_pin(a, bo));
    expect(sgb_bo_move(a, bo, SGB_PLACEMENT_DEVICE, 0) == -EBUSY,
           "move of a pinned buffer: -EBUSY");
    CHECK(sgb_bo_unpin(a, bo));
    CHECK(sgb_bo_move(a, bo, SGB_PLACEMENT_DEVICE, 0));
    show(a, bo);

    CHECK(sgb_bo_destroy(b, imported));
    CHECK(sgb_bo_destroy(a, bo));
    sgb_device_destroy(b);
    sgb_device_destroy(a);
    sgb_backend_unref(backend);
    free(buf);
    free(readback);
    printf("\ndemo: all steps behaved as described\n");
    return 0;
}
