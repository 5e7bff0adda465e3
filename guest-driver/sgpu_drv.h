/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sharegpu DRM driver: shared definitions.
 */
#ifndef SGPU_DRV_H
#define SGPU_DRV_H

#include <linux/completion.h>
#include <linux/dma-buf.h>
#include <linux/dma-fence.h>
#include <linux/kref.h>
#include <linux/pci.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include <drm/drm_device.h>
#include <drm/drm_exec.h>
#include <drm/drm_file.h>
#include <drm/drm_gem.h>
#include <drm/drm_mm.h>
#include <drm/gpu_scheduler.h>
#include <drm/ttm/ttm_bo.h>
#include <drm/ttm/ttm_device.h>
#include <drm/ttm/ttm_placement.h>
#include <drm/ttm/ttm_resource.h>

#include "sharegpu_hw.h"
#include "sharegpu_drm.h"

#define SGPU_DRIVER_NAME	"sharegpu"
#define SGPU_CMD_RING_SIZE	1024
#define SGPU_EVT_RING_SIZE	256
#define SGPU_AUX_SIZE		64	/* per-slot DMA scratch (BO_QUERY) */
#define SGPU_CMD_TIMEOUT	(10 * HZ)
#define SGPU_MAX_BO_SIZE	(4ULL << 30)
/*
 * Ring entries of a job: per command 2 invalidates, the op, a flush; per
 * object 2 transfers + 2 maintenance; the final FENCE. A job has at most two
 * objects per command.
 */
#define SGPU_JOB_ENTRIES(ncmds, nobjs)	((ncmds) * 4 + (nobjs) * 4 + 1)
#define SGPU_MAX_JOB_ENTRIES	SGPU_JOB_ENTRIES(SHAREGPU_MAX_CMDS, 2 * SHAREGPU_MAX_CMDS)

/*
 * Limits (module parameters, see docs/user-guide.md "Limits"): what one file
 * or the guest as a whole may hold through sharegpu objects.
 */
#define SGPU_DEF_MAX_KEPT_JOBS		256	/* per file, SUBMIT_F_KEEP: -EBUSY */
#define SGPU_DEF_MAX_ACTIVE_JOBS	64	/* per file, in flight: -EAGAIN */
#define SGPU_DEF_MAX_OBJECTS		16384	/* per device, BOs + imports: -ENOSPC */
extern unsigned int sgpu_max_kept_jobs;
extern unsigned int sgpu_max_active_jobs;
extern unsigned int sgpu_max_objects;
extern unsigned int sgpu_sys_mem_limit_mb;	/* 0: ttm_tt_pages_limit() */
extern unsigned int sgpu_job_timeout_ms;	/* initial drm_sched timeout of a device */

struct sgpu_job;

/* A synchronous command waiter (lives on the caller's stack). */
struct sgpu_waiter {
	struct completion done;
	u32 slot;
	u32 status;
	u32 out_handle;
	u64 result;
	u8 uuid[16];
	void *aux;	/* the slot's aux buffer, valid until done */
	const void *aux_in; /* SGPU_AUX_SIZE bytes copied to the slot's aux buffer, off0 */
};

struct sgpu_ring_slot {
	struct sgpu_waiter *waiter;
	struct sgpu_job *job;	/* the job the entry belongs to */
	s16 res_idx;		/* job result index, -1 = none */
	bool last;		/* the job's final FENCE entry: signal */
};

struct sgpu_vram_mgr {
	struct ttm_resource_manager man;
	u64 size;
	atomic64_t frees;		/* VRAM resources of moved BOs freed (room made) */
};

struct sgpu_device {
	struct drm_device drm;
	struct ttm_device bdev;
	struct pci_dev *pdev;
	void __iomem *mmio;

	u32 version;
	u32 features;
	bool coherent;
	bool msix;
	u64 vram_size;
	resource_size_t bar2_base;	/* CPU physical address of BAR2 */
	resource_size_t bar2_len;
	u64 win_offset;			/* import window offset in BAR2 */
	u64 win_size;

	/* command ring */
	spinlock_t ring_lock;		/* slots, tail, head, dead */
	struct sghw_cmd *cmd_ring;
	dma_addr_t cmd_dma;
	void *aux;
	dma_addr_t aux_dma;
	struct sgpu_ring_slot *slots;
	u32 cmd_head;			/* software head: entries processed */
	u32 cmd_tail;
	u64 cmd_seqno;
	bool dead;
	wait_queue_head_t ring_wq;
	struct delayed_work ring_poll;	/* while jobs are in flight: a lost interrupt */
	unsigned int ring_poll_ms;	/* its period; 0 = off (debugfs, for tests) */

	/* hardware fences: the ring's, one per job written to it */
	u64 fence_context;
	spinlock_t fence_lock;
	u64 fence_seqno;		/* under ring_lock */
	u64 fence_done;			/* last signalled fence seqno */
	struct list_head inflight;	/* jobs on the ring, under fence_lock */

	/* the job scheduler of the ring (sgpu_sched.c) */
	struct drm_gpu_scheduler sched;

	/* events */
	struct sghw_event *evt_ring;
	dma_addr_t evt_dma;
	u32 evt_head;
	struct work_struct evt_work;
	atomic_t evt_overflow;		/* INT_EVT_OVERFLOW seen: kick the owed RESYNC */

	/* hw handle -> struct drm_gem_object (native BOs and imports) */
	struct xarray handles;

	struct sgpu_vram_mgr vram;

	/* limits: live device handles (BOs + imports), guest pages charged to BOs */
	atomic_t nobjects;
	atomic_long_t tt_pages;

	/*
	 * Fault injection (debugfs sharegpu_fail_vram_moves): the next N moves
	 * into VRAM fail with -EIO in the TTM move callback once the device has
	 * moved the BO, before TTM records the new placement (the callback
	 * moves it back).
	 */
	atomic_t fail_vram_moves;

	/* remote imports (sgpu_broker.c): BROKER_IMPORT against their BO_DESTROY */
	struct mutex broker_lock;

	/* import window address space */
	struct mutex win_lock;		/* protects win_mm */
	struct drm_mm win_mm;

	/* debugfs list of all objects */
	struct mutex obj_lock;		/* protects objects, imports */
	struct list_head objects;	/* struct sgpu_bo */
	struct list_head imports;	/* struct sgpu_import */

	/* counters (debugfs) */
	atomic64_t ww_backoffs;		/* every -EDEADLK backoff of SUBMIT's drm_exec */
	atomic64_t ww_contended;	/* ... of them with the object locked by another */
	atomic64_t validate_retries;
	atomic64_t jobs_submitted;
	atomic64_t jobs_completed;
	atomic64_t job_timeouts;	/* drm_sched timeouts that found a hung job */
	atomic64_t job_aborts;		/* JOB_ABORT writes (recovery) */
	atomic64_t jobs_aborted;	/* jobs failed by a recovery (the hung one included) */
	atomic64_t irq_cmd;
	atomic64_t ring_poll_completions; /* completions the poll found (no interrupt) */
	atomic64_t fence_seqno_signals;	/* job fences .signaled found done in LAST_SEQNO */
	atomic64_t irq_evt;
	atomic64_t events;
	atomic64_t evt_moved;
	atomic64_t evt_invalidated;
	atomic64_t evt_error;
	atomic64_t evt_revoked;		/* BO_REVOKED: remote imports and lost broker exports */
	atomic64_t evt_own_moves;	/* own-command BO_MOVED settled without BO_QUERY */
	atomic64_t evt_overflows;	/* INT_EVT_OVERFLOW interrupts */
	atomic64_t resyncs;		/* RESYNC events handled */
	atomic64_t vram_no_space;	/* NO_EVICT BO_MOVE to DEVICE refused: TTM evicts */
	atomic64_t unexpected_moves;
	atomic64_t move_notifies;
	atomic64_t evictions;
	atomic64_t cmd_errors;
	atomic64_t cmds;
	/* requests refused by a limit */
	atomic64_t limit_kept;
	atomic64_t limit_active;
	atomic64_t limit_objects;
	atomic64_t limit_mem;
};

/* Take one of @count unless that exceeds @limit: then count a refusal, return @err. */
static inline int sgpu_limit_get(atomic_t *count, unsigned int limit, atomic64_t *refused,
				 int err)
{
	if (atomic_inc_return(count) > limit) {
		atomic_dec(count);
		atomic64_inc(refused);
		return err;
	}
	return 0;
}

/* A uAPI timeout in ns as a wait timeout in jiffies (never MAX_SCHEDULE_TIMEOUT). */
static inline unsigned long sgpu_timeout_jiffies(s64 timeout_ns)
{
	u64 j = nsecs_to_jiffies64(timeout_ns);

	return min_t(u64, j, MAX_SCHEDULE_TIMEOUT - 1);
}

static inline struct sgpu_device *to_sgpu(struct drm_device *drm)
{
	return container_of(drm, struct sgpu_device, drm);
}

static inline struct sgpu_device *bdev_to_sgpu(struct ttm_device *bdev)
{
	return container_of(bdev, struct sgpu_device, bdev);
}

static inline u32 sgpu_rd(struct sgpu_device *sdev, u32 reg)
{
	return readl(sdev->mmio + reg);
}

static inline void sgpu_wr(struct sgpu_device *sdev, u32 reg, u32 val)
{
	writel(val, sdev->mmio + reg);
}

/* A native BO: TTM-managed, created on this device. */
struct sgpu_bo {
	struct ttm_buffer_object tbo;	/* tbo.base is the GEM object */
	struct ttm_placement placement;
	struct ttm_place places[2];
	u32 domains;			/* SHAREGPU_DOMAIN_* allowed */
	u32 hw_handle;
	u32 hw_place;			/* enum sghw_placement, device view */
	u64 hw_offset;			/* VRAM offset when hw_place is DEVICE */
	u32 mem_type;			/* TTM_PL_*, for lockless readers (debugfs) */
	bool backing;			/* ATTACH_BACKING of the tt pages done */
	bool fresh;			/* being created: no contents, nobody has it */
	/*
	 * The device refused a move into VRAM (NO_SPACE) when vram.frees was
	 * vram_refused_frees: the VRAM manager refuses this BO until VRAM is
	 * freed, so TTM falls back or evicts (sgpu_bo_validate()).
	 */
	bool vram_refused;
	u64 vram_refused_frees;
	u32 user_pins;			/* BO_PIN ioctl pins (under resv) */
	u32 foreign_maps;		/* live dma-buf mappings of non-sharegpu importers */
	bool exported;
	bool broker_exported;		/* BROKER_EXPORT done (resv); placement SYSTEM only */
	u8 broker_id[16];
	bool uuid_valid;
	u8 uuid[16];
	struct iosys_map vmap;		/* dma-buf vmap */
	struct list_head link;		/* sdev->objects */
};

/* An imported dma-buf from anything but this very device. */
struct sgpu_import {
	struct drm_gem_object base;
	struct dma_buf_attachment *attach;
	bool p2p;			/* exporter is another sharegpu: IMPORT by UUID */
	u32 hw_handle;
	struct sg_table *sgt;		/* current mapping, NULL after move_notify */
	bool backing;			/* !p2p: ATTACH_BACKING of sgt done */
	struct drm_mm_node win;		/* p2p: import window range */
	bool win_mapped;		/* p2p: MAP_IMPORT done */
	u64 win_bar_off;		/* BAR2 offset of the mapping */
	u32 invalidations;
	struct list_head link;
};

/*
 * A remote import: another VM's buffer through the host broker (BROKER_IMPORT),
 * seen through this device's import window (sgpu_broker.c). Under its resv.
 */
struct sgpu_remote {
	struct drm_gem_object base;
	u32 hw_handle;			/* SGHW_REMOTE_HANDLE_BIT set */
	bool writable;			/* READ_WRITE grant */
	bool revoked;			/* BO_REVOKED (or NO_DEVICE): everything -ENODEV */
	u32 revoke_reason;		/* enum sghw_revoke_reason */
	bool win_mapped;		/* MAP_IMPORT done */
	u64 win_bar_off;
	struct drm_mm_node win;
	u32 invalidations;
};

extern const struct drm_gem_object_funcs sgpu_bo_gem_funcs;
extern const struct drm_gem_object_funcs sgpu_import_gem_funcs;
extern const struct drm_gem_object_funcs sgpu_remote_gem_funcs;
extern const struct dma_buf_ops sgpu_dmabuf_ops;
extern const struct dma_buf_attach_ops sgpu_importer_ops;

static inline bool sgpu_is_bo(struct drm_gem_object *obj)
{
	return obj->funcs == &sgpu_bo_gem_funcs;
}

static inline bool sgpu_is_import(struct drm_gem_object *obj)
{
	return obj->funcs == &sgpu_import_gem_funcs;
}

static inline bool sgpu_is_remote(struct drm_gem_object *obj)
{
	return obj->funcs == &sgpu_remote_gem_funcs;
}

static inline struct sgpu_remote *to_sgpu_remote(struct drm_gem_object *obj)
{
	return container_of(obj, struct sgpu_remote, base);
}

static inline struct sgpu_bo *to_sgpu_bo(struct drm_gem_object *obj)
{
	return container_of(obj, struct sgpu_bo, tbo.base);
}

static inline struct sgpu_bo *tbo_to_sgpu_bo(struct ttm_buffer_object *tbo)
{
	return container_of(tbo, struct sgpu_bo, tbo);
}

static inline struct sgpu_import *to_sgpu_import(struct drm_gem_object *obj)
{
	return container_of(obj, struct sgpu_import, base);
}

struct sgpu_file;

/*
 * A job. Two fences: hw_fence is the ring's (signalled by sgpu_hw.c when the
 * job's final FENCE entry completes); sched.s_fence->finished is the public one
 * (sync_file, syncobj, dma_resv), signalled by drm_sched after hw_fence or with
 * an error if the job never ran. The memory lives as long as hw_fence: the
 * submit path and drm_sched hold references until free_job(), the ring while
 * the job is on it, sfile->jobs while the job can be named by WAIT_JOB.
 */
struct sgpu_job {
	struct dma_fence hw_fence;	/* must be first (dma_fence_free) */
	struct drm_sched_job sched;
	struct sgpu_device *sdev;
	struct sgpu_file *sfile;	/* reference until free_job() */
	u32 id;				/* job_id, key in sfile->jobs */
	bool kept;			/* SUBMIT_F_KEEP: in sfile->jobs until WAIT_JOB */
	bool timed_out;			/* under ring_lock: signal hw_fence with -ETIMEDOUT */
	struct dma_fence __rcu *done;	/* the finished fence, until free_job() */
	struct dma_fence_cb active_cb;	/* on done: drops active_file->active */
	struct sgpu_file *active_file;	/* the callback's own reference */
	int error;			/* the finished fence's error, set by free_job() */
	struct list_head link;		/* sdev->inflight while on the ring */
	struct drm_gem_object **objs;	/* references until free_job() */
	u32 nobjs;
	struct sghw_cmd *hw;		/* the ring image, built at SUBMIT */
	s16 *res_idx;
	u32 nhw;
	u32 max_hw;			/* entries allocated for hw and res_idx */
	u64 ring_seqno;			/* of the final FENCE entry; 0 = not on the ring */
	u32 ring_first;			/* ring index of the job's first entry */
	u32 status;			/* first non-OK device status */
	u32 nres;
	u64 results[SHAREGPU_MAX_CMDS];
};

static inline struct sgpu_job *to_sgpu_job(struct drm_sched_job *sched_job)
{
	return container_of(sched_job, struct sgpu_job, sched);
}

/*
 * Per drm_file state. Jobs hold a reference until drm_sched frees them, so
 * the active count they drop then outlives the file.
 */
struct sgpu_file {
	struct kref ref;
	struct drm_sched_entity entity;	/* this file's queue on the device scheduler */
	struct xarray jobs;		/* job_id -> struct sgpu_job (hw_fence reference) */
	u32 next_id;			/* xa_alloc_cyclic() cursor */
	u32 max_id;			/* largest job_id issued (WAIT_JOB of a finished job) */
	atomic_t kept;			/* SUBMIT_F_KEEP records in jobs */
	atomic_t active;		/* jobs from SUBMIT entry until freed */
};

/*
 * Files and layers (one concept per file; a file calls only files below it):
 *
 *   sgpu_drv.c       PCI probe/remove, drm_driver, ioctl table, per-file state
 *   sgpu_debugfs.c   debugfs files, fdinfo
 *   sgpu_ioctl.c     BO ioctls
 *   sgpu_job.c       SUBMIT and WAIT_JOB: drm_exec locking, ring image, dependencies
 *   sgpu_sched.c     drm_sched: job objects, run_job, timeout and recovery, free_job
 *   sgpu_event.c     event worker, dispatch, revalidation, RESYNC
 *   sgpu_broker.c    sharing between VMs: broker export/grant, remote imports
 *   sgpu_prime.c     dma-buf exporter and importer
 *   sgpu_gem.c       BO life cycle, placement policy, pinning, CPU access, GEM funcs
 *   sgpu_ttm.c       TTM device funcs, tt pages budget, backing attach/transfer
 *   sgpu_vram_mgr.c  TTM_PL_VRAM resource manager, sgpu_bo_hw_move()
 *   sgpu_hw.c        command ring, completions, job fence signalling, IRQs
 *
 * Calls before the split (sgpu_bo.c held TTM, VRAM manager, BOs, ioctls and
 * event handling); "<->" are the cycles:
 *
 *   sgpu_hw.c  <-> sgpu_bo.c     (IRQ worker -> sgpu_handle_event())
 *   sgpu_hw.c  <-> sgpu_job.c    (completion -> sgpu_job_signal())
 *   sgpu_bo.c  <-> sgpu_prime.c  (event dispatch -> sgpu_import_invalidate())
 *   sgpu_job.c  -> sgpu_bo.c, sgpu_prime.c
 *   sgpu_debugfs.c, sgpu_drv.c -> sgpu_bo.c, sgpu_job.c, ...
 *
 * After: every arrow points down (as nm shows on the objects; sgpu_drv.c's
 * module parameters, read by several files, left out).
 *
 *   drv -> debugfs, ioctl, job, prime, ttm, event (init), hw
 *   debugfs -> event (resync), job (jobs_alive), gem, ttm
 *   ioctl -> broker, gem, prime (sgpu_is_import()), hw
 *   job -> sched, broker, prime, gem, hw
 *   sched -> hw
 *   event -> broker, prime, gem, vram_mgr, hw
 *   broker -> gem, hw
 *   prime -> gem, ttm, hw
 *   gem -> ttm, hw
 *   ttm -> vram_mgr, hw
 *   vram_mgr -> hw
 *   (sgpu_hw.c calls no other driver file)
 *
 * Upward references remain only as data: the event interrupt queues
 * sdev->evt_work (its function is sgpu_event.c's), a job's hardware fence
 * release is in its dma_fence_ops (sgpu_sched.c), and the BO GEM funcs name
 * the PRIME exporter (.export).
 */

/* sgpu_hw.c: the command layer */
int sgpu_hw_init(struct sgpu_device *sdev);
void sgpu_hw_fini(struct sgpu_device *sdev);
void sgpu_cmd_fill(struct sghw_cmd *c, u16 op, u32 handle, u32 handle2, u32 arg,
		   u64 off0, u64 off1, u64 len);
int sgpu_cmd_sync(struct sgpu_device *sdev, struct sghw_cmd *cmd,
		  struct sgpu_waiter *w);
int sgpu_cmd_async(struct sgpu_device *sdev, struct sghw_cmd *cmd);
int sgpu_ring_submit_job(struct sgpu_device *sdev, struct sgpu_job *job);
void sgpu_ring_process(struct sgpu_device *sdev);
bool sgpu_ring_jobs_idle(struct sgpu_device *sdev);
bool sgpu_ring_job_completed(struct sgpu_device *sdev, struct sgpu_job *job);
int sgpu_ring_collect_job(struct sgpu_device *sdev, struct sgpu_job *job);
int sgpu_ring_set_poll(struct sgpu_device *sdev, unsigned int ms);
int sgpu_status_to_errno(u32 status);
const char *sgpu_status_name(u32 status);
int sgpu_hw_bo_create(struct sgpu_device *sdev, u64 size, u32 place, u32 *handle,
		      u64 *offset);
void sgpu_hw_bo_destroy(struct sgpu_device *sdev, u32 handle);
int sgpu_hw_simple(struct sgpu_device *sdev, u16 op, u32 handle, u32 arg,
		   u64 off0, u64 off1, u64 len, u64 *result);
int sgpu_hw_bo_query(struct sgpu_device *sdev, u32 handle, struct sghw_bo_info *info);
int sgpu_hw_map_import(struct sgpu_device *sdev, struct drm_mm_node *win, u64 size,
		       u32 handle, u64 *bar_off);
vm_fault_t sgpu_win_insert_pfn(struct vm_fault *vmf, u64 bar_off);
int sgpu_hw_bo_move(struct sgpu_device *sdev, u32 handle, u32 place, u16 flags, u64 *offset);
int sgpu_hw_attach_backing(struct sgpu_device *sdev, u32 handle, struct sg_table *sgt,
			   dma_addr_t *addrs, unsigned long npages, u64 *total);

/* sgpu_vram_mgr.c: the VRAM resource manager */
void sgpu_vram_mgr_init(struct sgpu_device *sdev);
void sgpu_vram_mgr_fini(struct sgpu_device *sdev);
int sgpu_bo_hw_move(struct sgpu_bo *bo, u32 place);
void sgpu_bo_move_notify(struct sgpu_bo *bo);
void sgpu_vram_res_place(struct ttm_resource *res, u64 offset);
void sgpu_vram_refused(struct sgpu_bo *bo);

/* sgpu_ttm.c: TTM device, tt pages, backing */
int sgpu_ttm_init(struct sgpu_device *sdev);
int sgpu_bo_transfer(struct sgpu_bo *bo, bool to_device);
unsigned long sgpu_tt_limit_pages(void);
unsigned long sgpu_tt_pages_all(void);

/* sgpu_gem.c: BO/GEM objects */
int sgpu_objects_reserve(struct sgpu_device *sdev);
void sgpu_objects_unreserve(struct sgpu_device *sdev);
struct sgpu_bo *sgpu_bo_create(struct sgpu_device *sdev, u64 size, u32 domains);
void sgpu_bo_set_placement(struct sgpu_bo *bo, u32 domains);
int sgpu_bo_validate(struct sgpu_bo *bo, struct ttm_placement *placement,
		     struct ttm_operation_ctx *ctx);
int sgpu_bo_validate_domain(struct sgpu_bo *bo, u32 domain, bool interruptible);
int sgpu_bo_set_domain(struct sgpu_bo *bo, u32 domain, bool interruptible);
int sgpu_bo_pin(struct sgpu_bo *bo);
void sgpu_bo_unpin(struct sgpu_bo *bo);
int sgpu_cpu_access_wait(struct dma_resv *resv, enum dma_data_direction dir);
int sgpu_bo_cpu_access(struct sgpu_bo *bo, bool end, enum dma_data_direction dir);
u32 sgpu_bo_domain(struct sgpu_bo *bo);
u32 sgpu_bo_domain_unlocked(struct sgpu_bo *bo);
u64 sgpu_bo_vram_offset(struct sgpu_bo *bo);

/* sgpu_prime.c: dma-buf exporter and importer */
struct dma_buf *sgpu_gem_prime_export(struct drm_gem_object *obj, int flags);
struct drm_gem_object *sgpu_gem_prime_import(struct drm_device *dev, struct dma_buf *buf);
int sgpu_import_prepare(struct sgpu_import *imp);
void sgpu_import_invalidate(struct sgpu_import *imp);

/* sgpu_broker.c: sharing between VMs */
int sgpu_ioctl_broker_export(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_broker_grant(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_broker_unexport(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_broker_import(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_remote_usable(struct sgpu_remote *rem);
int sgpu_remote_cpu_access(struct sgpu_remote *rem, bool end,
			   enum dma_data_direction dir);
void sgpu_remote_invalidate(struct sgpu_remote *rem);
void sgpu_remote_revoke(struct sgpu_remote *rem, u32 reason);
void sgpu_bo_broker_lost(struct sgpu_bo *bo);

/* sgpu_event.c: device events */
void sgpu_event_init(struct sgpu_device *sdev);
void sgpu_resync(struct sgpu_device *sdev);

/* sgpu_ioctl.c: BO ioctls */
int sgpu_ioctl_bo_create(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_bo_mmap_offset(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_bo_move(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_bo_pin(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_bo_info(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_bo_cpu_access(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_wait_bo(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_dumb_create(struct drm_file *file, struct drm_device *dev,
		     struct drm_mode_create_dumb *args);

/* sgpu_sched.c: the job scheduler and job objects */
int sgpu_sched_init(struct sgpu_device *sdev);
void sgpu_sched_fini(struct sgpu_device *sdev);
int sgpu_sched_set_timeout(struct sgpu_device *sdev, unsigned int ms);
unsigned int sgpu_sched_timeout_ms(struct sgpu_device *sdev);
struct sgpu_job *sgpu_job_alloc(struct sgpu_device *sdev, struct sgpu_file *sfile);
void sgpu_job_put(struct sgpu_job *job);
void sgpu_file_put(struct sgpu_file *sfile);
long sgpu_jobs_alive(void);

/* sgpu_job.c: job submission */
int sgpu_ioctl_submit(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_ioctl_wait_job(struct drm_device *dev, void *data, struct drm_file *file);
int sgpu_file_open_jobs(struct sgpu_device *sdev, struct sgpu_file *sfile);
void sgpu_file_release_jobs(struct sgpu_file *sfile);

/* sgpu_debugfs.c */
void sgpu_debugfs_init(struct drm_minor *minor);
void sgpu_show_fdinfo(struct drm_printer *p, struct drm_file *file);

#endif /* SGPU_DRV_H */
