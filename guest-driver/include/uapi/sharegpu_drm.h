/* SPDX-License-Identifier: MIT */
/*
 * sharegpu DRM driver uAPI.
 *
 * Usable from the kernel and from userspace (include the libdrm/kernel "drm.h" first, or
 * let this header include it). All structures use fixed-size types, are 64-bit aligned and
 * padded explicitly; every pad/flags field that is not defined must be zero (-EINVAL).
 */
#ifndef _UAPI_SHAREGPU_DRM_H_
#define _UAPI_SHAREGPU_DRM_H_

#include "drm.h"

#if defined(__cplusplus)
extern "C" {
#endif

#define DRM_SHAREGPU_GET_INFO		0x00
#define DRM_SHAREGPU_BO_CREATE		0x01
#define DRM_SHAREGPU_BO_MMAP_OFFSET	0x02
#define DRM_SHAREGPU_SUBMIT		0x03
#define DRM_SHAREGPU_WAIT_BO		0x04
#define DRM_SHAREGPU_WAIT_JOB		0x05
#define DRM_SHAREGPU_BO_MOVE		0x06
#define DRM_SHAREGPU_BO_PIN		0x07
#define DRM_SHAREGPU_BO_INFO		0x08
#define DRM_SHAREGPU_BO_CPU_ACCESS	0x09
#define DRM_SHAREGPU_BROKER_EXPORT	0x0a
#define DRM_SHAREGPU_BROKER_GRANT	0x0b
#define DRM_SHAREGPU_BROKER_UNEXPORT	0x0c
#define DRM_SHAREGPU_BROKER_IMPORT	0x0d

/* ------------------------------------------------------------------ GET_INFO */
#define SHAREGPU_INFO_F_COHERENT	(1u << 0) /* device caches are coherent */
#define SHAREGPU_INFO_F_MSIX		(1u << 1) /* driver uses MSI-X */

struct drm_sharegpu_info {
	__u64 vram_size;	/* out: bytes of VRAM (BAR2 lower half) */
	__u64 import_window_size; /* out */
	__u64 vram_used;	/* out: bytes TTM accounts in VRAM */
	__u32 hw_version;	/* out: VERSION register */
	__u32 hw_features;	/* out: FEATURES register (SGHW_FEAT_*) */
	__u32 flags;		/* out: SHAREGPU_INFO_F_* */
	__u32 pad;
};

/* ------------------------------------------------------------------ BOs */
/* Placement domains (BO_CREATE.domains, BO_MOVE.domain, BO_INFO.domain). */
#define SHAREGPU_DOMAIN_VRAM		(1u << 0)
#define SHAREGPU_DOMAIN_SYSTEM		(1u << 1)
#define SHAREGPU_DOMAIN_MASK		(SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM)

/*
 * BO_CREATE: size is rounded up to the page size (max 4 GiB). domains: VRAM, SYSTEM or
 * both (VRAM preferred, SYSTEM when VRAM is full; evictable to SYSTEM either way).
 * -ENOSPC: the device already has max_objects live BOs + imports (module parameter,
 * default 16384; PRIME import and dumb buffers fail the same way). -ENOMEM: the pages a
 * SYSTEM placement needs do not fit the guest-RAM budget of all sharegpu devices
 * (sys_mem_limit_mb, default half of RAM); every placement in SYSTEM (BO_MOVE, a job's
 * validation, an eviction) fails the same way, a CPU fault with SIGBUS.
 */
struct drm_sharegpu_bo_create {
	__u64 size;		/* in */
	__u32 domains;		/* in: SHAREGPU_DOMAIN_* */
	__u32 flags;		/* in: must be 0 */
	__u32 handle;		/* out: GEM handle */
	__u32 pad;
	__u64 vram_offset;	/* out: BAR2 offset if placed in VRAM, else ~0 */
};

struct drm_sharegpu_bo_mmap_offset {
	__u32 handle;		/* in */
	__u32 pad;
	__u64 offset;		/* out: fake offset for mmap() on the DRM fd */
};

/* BO_INFO: driver (TTM) view and device view (BO_QUERY) of a BO. */
#define SHAREGPU_BO_INFO_F_IMPORTED	(1u << 0) /* imported dma-buf */
#define SHAREGPU_BO_INFO_F_EXPORTED	(1u << 1) /* exported as dma-buf */
#define SHAREGPU_BO_INFO_F_P2P		(1u << 2) /* imported from another sharegpu */
#define SHAREGPU_BO_INFO_F_PINNED	(1u << 3)
#define SHAREGPU_BO_INFO_F_REMOTE	(1u << 4) /* imported from another VM (BROKER_IMPORT) */
#define SHAREGPU_BO_INFO_F_READ_ONLY	(1u << 5) /* remote import with a READ grant */
#define SHAREGPU_BO_INFO_F_REVOKED	(1u << 6) /* remote import revoked: maps fail -ENODEV */
#define SHAREGPU_BO_INFO_F_BROKER_EXPORTED (1u << 7) /* BO exported to other VMs */

struct drm_sharegpu_bo_info {
	__u32 handle;		/* in */
	__u32 flags;		/* out: SHAREGPU_BO_INFO_F_* */
	__u64 size;		/* out */
	__u32 domain;		/* out: driver view, one SHAREGPU_DOMAIN_* (0 = none) */
	__u32 hw_placement;	/* out: device view (SGPU_PLACEMENT_HW_*) */
	__u64 vram_offset;	/* out: driver view, BAR2 offset or ~0 */
	__u64 hw_vram_offset;	/* out: device view */
	__u64 hw_generation;	/* out: device move generation */
	__u32 hw_handle;	/* out: device handle */
	__u32 pin_count;	/* out: driver pin count */
	__u32 hw_pin_count;	/* out */
	/* out: why a remote import was revoked (F_REVOKED): 1 unexported, 2 exporting VM gone,
	 * 3 grant withdrawn or changed, 4 invalidation not acknowledged in time, 5 broker gone,
	 * 0 unknown (seen from a command's -ENODEV before the event); 0 when not revoked
	 */
	__u32 revoke_reason;
};

/* BO_MOVE (for tests): validate the BO into one domain. -EBUSY if pinned. */
struct drm_sharegpu_bo_move {
	__u32 handle;		/* in */
	__u32 domain;		/* in: exactly one SHAREGPU_DOMAIN_* */
	__u64 vram_offset;	/* out: new BAR2 offset or ~0 */
};

/* BO_PIN (for tests): pin in the current placement (TTM and device), or unpin. */
#define SHAREGPU_PIN_F_UNPIN		(1u << 0)
struct drm_sharegpu_bo_pin {
	__u32 handle;		/* in */
	__u32 flags;		/* in: SHAREGPU_PIN_F_* */
	__u32 pin_count;	/* out: new driver pin count */
	__u32 pad;
};

/*
 * BO_CPU_ACCESS: begin/end a CPU access window on a BO mapped with mmap() (the same
 * barriers as DMA_BUF_IOCTL_SYNC on an exported dma-buf): waits for the device, then issues
 * CPU_ACCESS_BEGIN/END (cache flush/invalidate) and, for SYSTEM BOs, TRANSFER_FROM_DEVICE
 * (begin, read) / TRANSFER_TO_DEVICE (end, write).
 */
#define SHAREGPU_CPU_ACCESS_READ	(1u << 0)
#define SHAREGPU_CPU_ACCESS_WRITE	(1u << 1)
#define SHAREGPU_CPU_ACCESS_END		(1u << 2) /* else begin */
struct drm_sharegpu_bo_cpu_access {
	__u32 handle;		/* in */
	__u32 flags;		/* in */
};

/*
 * ------------------------------------------------------------------ sharing between VMs
 * Through the host's sharegpu-broker (docs/user-guide.md "Sharing between VMs"); the device
 * must be connected to one (GET_INFO.hw_features has SGHW_FEAT_BROKER, bit 8), else every
 * BROKER_* ioctl fails with -EOPNOTSUPP (after its arguments were checked: -EINVAL first).
 *
 * VMs are named by their broker name (QEMU's vm-name): 1..31 characters of [A-Za-z0-9._-],
 * NUL-terminated, the rest of the 32 bytes zero. Buffers are named by a 128-bit broker id.
 *
 * BROKER_EXPORT: hands a BO's storage to the broker (zero copy) and returns its id; the BO
 * stays in the SYSTEM domain while exported (BO_MOVE to VRAM: -EBUSY). With right != 0 the
 * named VM is granted that right in the same step. Exporting again returns the same id.
 * -ENOENT: no such handle; -EINVAL: not a native BO of this device, bad right/name/flags;
 * -EBUSY: pinned in VRAM; -ENODEV: the broker connection is down.
 *
 * BROKER_GRANT: grants (right 1, 2) or withdraws (right 0) a VM's right on a BO exported
 * with BROKER_EXPORT; withdrawing or changing a right revokes that VM's current import.
 * Withdrawing a grant that does not exist succeeds (nothing to withdraw). -EINVAL also
 * when the BO is not broker-exported.
 *
 * BROKER_UNEXPORT: the id dies, every import of it is revoked; the BO is unchanged.
 * -EINVAL when the BO is not broker-exported.
 *
 * BROKER_IMPORT: a GEM handle for the buffer of another VM (zero copy: mmap() through
 * BO_MMAP_OFFSET maps the exporter's pages through the device's import window; a READ
 * grant can only be mapped without PROT_WRITE, -EACCES otherwise). Importing the same id
 * again gives a handle of the same object. -ENOENT: unknown id; -EACCES: this VM holds no
 * grant; -ENODEV: revoked or no broker connection; -EBUSY: an invalidation of it is still
 * being acknowledged (retry).
 *
 * The exporter's CPU writes reach the importer at BO_CPU_ACCESS end (as for any SYSTEM BO);
 * the importer's BO_CPU_ACCESS begin maps the import again if the exporter moved it. When the
 * exporter moves the buffer the import is invalidated (the next access re-maps the new
 * storage). When it is revoked (unexported, grant withdrawn, exporting VM gone, broker gone)
 * every later mmap fault gets SIGBUS, and BO_MMAP_OFFSET, BO_CPU_ACCESS, mmap() and jobs
 * fail with -ENODEV; GEM_CLOSE releases it. Jobs (SUBMIT) run on the exporter's pages, zero
 * copy (device contract 1.7); one that writes a READ grant fails with -EACCES. A job that
 * writes an import must complete before the exporting VM relocates the buffer.
 */
#define SHAREGPU_BROKER_RIGHT_NONE	0
#define SHAREGPU_BROKER_RIGHT_READ	1
#define SHAREGPU_BROKER_RIGHT_READ_WRITE 2
#define SHAREGPU_BROKER_NAME_LEN	32
#define SHAREGPU_BROKER_ID_LEN		16

struct drm_sharegpu_broker_export {
	__u32 handle;		/* in: native BO */
	__u32 right;		/* in: SHAREGPU_BROKER_RIGHT_* of the first grant */
	char peer[SHAREGPU_BROKER_NAME_LEN]; /* in: VM name with right != 0, else zeros */
	__u8 id[SHAREGPU_BROKER_ID_LEN]; /* out: broker id */
	__u64 size;		/* out: exported bytes */
	__u32 flags;		/* in: must be 0 */
	__u32 pad;
};

struct drm_sharegpu_broker_grant {
	__u32 handle;		/* in: broker-exported BO */
	__u32 right;		/* in: SHAREGPU_BROKER_RIGHT_*, NONE withdraws */
	char peer[SHAREGPU_BROKER_NAME_LEN]; /* in */
	__u32 flags;		/* in: must be 0 */
	__u32 pad;
};

struct drm_sharegpu_broker_unexport {
	__u32 handle;		/* in */
	__u32 flags;		/* in: must be 0 */
};

#define SHAREGPU_BROKER_IMPORT_WRITABLE	(1u << 0) /* out_flags: READ_WRITE grant */
struct drm_sharegpu_broker_import {
	__u8 id[SHAREGPU_BROKER_ID_LEN]; /* in */
	__u32 flags;		/* in: must be 0 */
	__u32 handle;		/* out: GEM handle */
	__u64 size;		/* out */
	__u32 out_flags;	/* out: SHAREGPU_BROKER_IMPORT_* */
	__u32 pad;
};

/* ------------------------------------------------------------------ jobs */
#define SHAREGPU_CMD_COPY		1 /* dst_handle@dst_offset <- src_handle@src_offset */
#define SHAREGPU_CMD_FILL		2 /* dst_handle@dst_offset, size multiple of 4 */
#define SHAREGPU_CMD_CHECKSUM		3 /* CRC32C of src_handle@src_offset -> result */

struct drm_sharegpu_cmd {
	__u32 op;		/* SHAREGPU_CMD_* */
	__u32 pattern;		/* FILL */
	__u32 dst_handle;	/* COPY, FILL */
	__u32 src_handle;	/* COPY, CHECKSUM */
	__u64 dst_offset;
	__u64 src_offset;
	__u64 size;		/* bytes, nonzero */
	__u64 result;		/* out (SUBMIT_F_WAIT only): CHECKSUM CRC32C */
};

#define SHAREGPU_MAX_CMDS		64	/* hence at most 128 distinct BOs per job */

#define SHAREGPU_SUBMIT_F_IN_FENCE	(1u << 0) /* wait for in_fence_fd (sync_file) */
#define SHAREGPU_SUBMIT_F_OUT_FENCE	(1u << 1) /* return a sync_file in out_fence_fd */
#define SHAREGPU_SUBMIT_F_WAIT		(1u << 2) /* wait for completion, write back results */
#define SHAREGPU_SUBMIT_F_KEEP		(1u << 3) /* keep results for WAIT_JOB */
#define SHAREGPU_SUBMIT_F_NO_IMPLICIT	(1u << 4) /* skip implicit (dma_resv) sync */
#define SHAREGPU_SUBMIT_F_NO_CACHE_MAINT (1u << 5) /* no automatic flush/invalidate */
#define SHAREGPU_SUBMIT_F_MASK		0x3f

/*
 * SUBMIT errors of the per-file limits (module parameters):
 * -EAGAIN: the file already has max_active_jobs (default 64) jobs in flight; a job counts
 *          from SUBMIT until its fence signals (waiting for dependencies included). Transient:
 *          retry (libdrm's drmIoctl() does) or wait for an earlier job first.
 * -EBUSY:  SUBMIT_F_KEEP and the file already holds max_kept_jobs (default 256) records
 *          that WAIT_JOB has not collected yet (close releases them too).
 */
/*
 * Explicit synchronisation (SUBMIT in_syncs / out_syncs): a syncobj, binary (point 0) or
 * a timeline point (the driver has DRIVER_SYNCOBJ_TIMELINE), or, in in_syncs only, a
 * sync_file fd (SHAREGPU_SYNC_F_SYNC_FILE). An in-sync must already have a fence (no
 * wait-before-submit): -EINVAL otherwise. The job runs when every in-fence and every
 * implicit fence has signalled; the submitting thread does not wait for them.
 */
#define SHAREGPU_SYNC_F_SYNC_FILE	(1u << 0) /* handle is a sync_file fd (in only) */
#define SHAREGPU_MAX_SYNCS		64

struct drm_sharegpu_sync {
	__u32 handle;		/* syncobj handle, or sync_file fd */
	__u32 flags;		/* SHAREGPU_SYNC_F_* */
	__u64 point;		/* timeline point; 0 = binary syncobj */
};

struct drm_sharegpu_submit {
	__u64 cmds;		/* in: user pointer to struct drm_sharegpu_cmd[num_cmds] */
	__u32 num_cmds;		/* in: 1 .. SHAREGPU_MAX_CMDS */
	__u32 flags;		/* in: SHAREGPU_SUBMIT_F_* */
	__s32 in_fence_fd;	/* in: with SUBMIT_F_IN_FENCE */
	__s32 out_fence_fd;	/* out: with SUBMIT_F_OUT_FENCE */
	__u32 in_syncobj;	/* in: syncobj handle to wait for, 0 = none */
	__u32 out_syncobj;	/* in: syncobj handle to replace with the job fence, 0 = none */
	__u64 job_id;		/* out: nonzero; WAIT_JOB argument */
	__u64 in_syncs;		/* in: user pointer to struct drm_sharegpu_sync[num_in_syncs] */
	__u64 out_syncs;	/* in: user pointer to struct drm_sharegpu_sync[num_out_syncs] */
	__u32 num_in_syncs;	/* in: 0 .. SHAREGPU_MAX_SYNCS */
	__u32 num_out_syncs;	/* in: 0 .. SHAREGPU_MAX_SYNCS */
};

/* WAIT_BO: wait until the BO is idle (or idle for CPU reads with WAIT_BO_F_WRITERS). */
#define SHAREGPU_WAIT_BO_F_WRITERS	(1u << 0)
struct drm_sharegpu_wait_bo {
	__u32 handle;		/* in */
	__u32 flags;		/* in */
	__s64 timeout_ns;	/* in: relative; 0 = poll; -ETIME when busy after it */
};

/*
 * WAIT_JOB: wait for a job of this file. Results of a SUBMIT_F_KEEP job are copied to
 * results (num_results u64s, in command order) and the job's record is released (the
 * only way besides close: records count against max_kept_jobs).
 */
struct drm_sharegpu_wait_job {
	__u64 job_id;		/* in */
	__s64 timeout_ns;	/* in: relative; -ETIME when still busy */
	__u64 results;		/* in: user pointer to __u64[num_results], may be 0 */
	__u32 num_results;	/* in */
	__u32 status;		/* out: 0 ok, else the first device status != OK */
	/* out: the job fence's error: 0, -ETIMEDOUT (the job hung and was aborted),
	 * -ECANCELED (dropped by the abort of a hung job), -EIO...
	 */
	__s32 error;
	__u32 pad;
};

#define DRM_IOCTL_SHAREGPU_GET_INFO \
	DRM_IOR(DRM_COMMAND_BASE + DRM_SHAREGPU_GET_INFO, struct drm_sharegpu_info)
#define DRM_IOCTL_SHAREGPU_BO_CREATE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_BO_CREATE, struct drm_sharegpu_bo_create)
#define DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_BO_MMAP_OFFSET, struct drm_sharegpu_bo_mmap_offset)
#define DRM_IOCTL_SHAREGPU_SUBMIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_SUBMIT, struct drm_sharegpu_submit)
#define DRM_IOCTL_SHAREGPU_WAIT_BO \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SHAREGPU_WAIT_BO, struct drm_sharegpu_wait_bo)
#define DRM_IOCTL_SHAREGPU_WAIT_JOB \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_WAIT_JOB, struct drm_sharegpu_wait_job)
#define DRM_IOCTL_SHAREGPU_BO_MOVE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_BO_MOVE, struct drm_sharegpu_bo_move)
#define DRM_IOCTL_SHAREGPU_BO_PIN \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_BO_PIN, struct drm_sharegpu_bo_pin)
#define DRM_IOCTL_SHAREGPU_BO_INFO \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_BO_INFO, struct drm_sharegpu_bo_info)
#define DRM_IOCTL_SHAREGPU_BO_CPU_ACCESS \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SHAREGPU_BO_CPU_ACCESS, struct drm_sharegpu_bo_cpu_access)

#define DRM_IOCTL_SHAREGPU_BROKER_EXPORT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_BROKER_EXPORT, struct drm_sharegpu_broker_export)
#define DRM_IOCTL_SHAREGPU_BROKER_GRANT \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SHAREGPU_BROKER_GRANT, struct drm_sharegpu_broker_grant)
#define DRM_IOCTL_SHAREGPU_BROKER_UNEXPORT \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SHAREGPU_BROKER_UNEXPORT, \
		struct drm_sharegpu_broker_unexport)
#define DRM_IOCTL_SHAREGPU_BROKER_IMPORT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SHAREGPU_BROKER_IMPORT, struct drm_sharegpu_broker_import)

#if defined(__cplusplus)
}
#endif

#endif /* _UAPI_SHAREGPU_DRM_H_ */
