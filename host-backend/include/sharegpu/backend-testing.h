/*
 * sharegpu host backend: calls only tests and benchmarks use. Not part of the API the QEMU
 * device builds against (it includes only sharegpu/backend.h); same conventions.
 */
#ifndef SHAREGPU_BACKEND_TESTING_H
#define SHAREGPU_BACKEND_TESTING_H

#include "sharegpu/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A second reference to a backend (released with sgb_backend_unref). */
sgb_backend *sgb_backend_ref(sgb_backend *backend);
/* The VRAM arena as the BAR maps it (borrowed: valid while the device lives). */
uint64_t sgb_device_vram_size(sgb_device *dev);
void *sgb_device_vram_ptr(sgb_device *dev);
/* Descriptors the process has open now (/proc/self/fd; 0 when unreadable): what tests and the
 * scale benchmark compare before and after creating thousands of buffers. */
size_t sgb_process_open_fds(void);

#ifdef __cplusplus
}
#endif

#endif /* SHAREGPU_BACKEND_TESTING_H */
