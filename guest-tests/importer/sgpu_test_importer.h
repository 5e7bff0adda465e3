/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sgpu_test_importer: a foreign dynamic dma-buf importer for the guest tests
 * (/dev/sgpu_test_importer, one import per open file).
 *
 * Like amdgpu, it does not drop its mapping in move_notify: it only marks it
 * stale and unmaps at its next use (or on UNMAP, DETACH, close). WRITE is a
 * device write through the mapping's DMA addresses; it refuses a stale
 * mapping with -ESTALE, as a device would only run after re-validating.
 */
#ifndef SGPU_TEST_IMPORTER_H
#define SGPU_TEST_IMPORTER_H

#include <linux/ioctl.h>
#include <linux/types.h>

struct sgpu_ti_write {
	__u64 offset;		/* bytes, multiple of 4 */
	__u64 size;		/* bytes, multiple of 4 */
	__u32 pattern;		/* 32-bit pattern, as the FILL command */
	__u32 pad;
};

struct sgpu_ti_info {
	__u32 mapped;		/* a mapping is held */
	__u32 stale;		/* ... and move_notify made it stale */
	__u32 move_notifies;	/* move_notify calls since IMPORT */
	__u32 pad;
};

#define SGPU_TI_IOC_IMPORT	_IOW('S', 0x40, __s32)	/* dma-buf fd: dynamic attach */
#define SGPU_TI_IOC_MAP		_IO('S', 0x41)		/* map (resv held) */
#define SGPU_TI_IOC_WRITE	_IOW('S', 0x42, struct sgpu_ti_write)
#define SGPU_TI_IOC_UNMAP	_IO('S', 0x43)		/* the lazy unmap, now */
#define SGPU_TI_IOC_INFO	_IOR('S', 0x44, struct sgpu_ti_info)

#endif /* SGPU_TEST_IMPORTER_H */
