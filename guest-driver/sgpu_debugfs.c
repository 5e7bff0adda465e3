// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: debugfs (BOs, counters) and fdinfo memory stats.
 */
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include <drm/drm_debugfs.h>
#include <drm/drm_file.h>
#include <drm/drm_print.h>

#include "sgpu_drv.h"

static const char *sgpu_domain_name(u32 d)
{
	switch (d) {
	case SHAREGPU_DOMAIN_VRAM:
		return "vram";
	case SHAREGPU_DOMAIN_SYSTEM:
		return "system";
	default:
		return "none";
	}
}

static int sgpu_debugfs_bos(struct seq_file *m, void *data)
{
	struct drm_debugfs_entry *entry = m->private;
	struct sgpu_device *sdev = to_sgpu(entry->dev);
	struct drm_gem_object *obj;
	struct sgpu_import *imp;
	struct sgpu_bo *bo;
	unsigned long idx;

	mutex_lock(&sdev->obj_lock);
	seq_puts(m, "hw_handle size domain vram_offset hw_place pin backing exported foreign_maps\n");
	list_for_each_entry(bo, &sdev->objects, link) {
		/* racy snapshot: fields change under the BO's resv */
		seq_printf(m, "%u %zu %s %#llx %u %u %u %u %u\n", bo->hw_handle,
			   bo->tbo.base.size, sgpu_domain_name(sgpu_bo_domain_unlocked(bo)),
			   READ_ONCE(bo->hw_offset), READ_ONCE(bo->hw_place),
			   READ_ONCE(bo->tbo.pin_count), READ_ONCE(bo->backing),
			   READ_ONCE(bo->exported), READ_ONCE(bo->foreign_maps));
	}
	seq_puts(m, "imports: hw_handle size kind mapped window backing invalidations\n");
	list_for_each_entry(imp, &sdev->imports, link) {
		seq_printf(m, "%u %zu %s %u %#llx %u %u\n", imp->hw_handle, imp->base.size,
			   imp->p2p ? "p2p" : imp->attach->dmabuf->exp_name,
			   READ_ONCE(imp->sgt) != NULL, READ_ONCE(imp->win_mapped) ?
			   imp->win_bar_off : SGHW_INVALID_OFFSET,
			   READ_ONCE(imp->backing), READ_ONCE(imp->invalidations));
	}
	mutex_unlock(&sdev->obj_lock);

	/* other VMs' buffers (sgpu_broker.c); freeing one takes it out under this lock first */
	seq_puts(m, "remote imports: hw_handle size access mapped window revoked reason invalidations\n");
	xa_lock(&sdev->handles);
	xa_for_each(&sdev->handles, idx, obj) {
		struct sgpu_remote *rem;

		if (!sgpu_is_remote(obj))
			continue;
		rem = to_sgpu_remote(obj);
		seq_printf(m, "%u %zu %s %u %#llx %u %u %u\n", rem->hw_handle, obj->size,
			   rem->writable ? "rw" : "ro", READ_ONCE(rem->win_mapped),
			   READ_ONCE(rem->win_mapped) ? rem->win_bar_off : SGHW_INVALID_OFFSET,
			   READ_ONCE(rem->revoked), READ_ONCE(rem->revoke_reason),
			   READ_ONCE(rem->invalidations));
	}
	xa_unlock(&sdev->handles);
	return 0;
}

static int sgpu_debugfs_counters(struct seq_file *m, void *data)
{
	struct drm_debugfs_entry *entry = m->private;
	struct sgpu_device *sdev = to_sgpu(entry->dev);

#define C(x) seq_printf(m, "%-18s %lld\n", #x, (long long)atomic64_read(&sdev->x))
	C(ww_backoffs);
	C(ww_contended);
	C(validate_retries);
	C(jobs_submitted);
	C(jobs_completed);
	C(job_timeouts);
	C(job_aborts);
	C(jobs_aborted);
	C(cmds);
	C(cmd_errors);
	C(irq_cmd);
	C(ring_poll_completions);
	C(fence_seqno_signals);
	C(irq_evt);
	C(events);
	C(evt_moved);
	C(evt_invalidated);
	C(evt_error);
	C(evt_revoked);
	C(evt_own_moves);
	C(evt_overflows);
	C(resyncs);
	C(vram_no_space);
	C(unexpected_moves);
	C(move_notifies);
	C(evictions);
	C(limit_kept);
	C(limit_active);
	C(limit_objects);
	C(limit_mem);
#undef C
	/* limits: live device handles, guest pages charged (this device, all devices) */
	seq_printf(m, "%-18s %d\n", "objects", atomic_read(&sdev->nobjects));
	seq_printf(m, "%-18s %ld\n", "tt_pages", atomic_long_read(&sdev->tt_pages));
	seq_printf(m, "%-18s %lu\n", "tt_pages_all", sgpu_tt_pages_all());
	seq_printf(m, "%-18s %lu\n", "tt_pages_limit", sgpu_tt_limit_pages());
	seq_printf(m, "%-18s %ld\n", "jobs_alive_all", sgpu_jobs_alive());
	seq_printf(m, "%-18s %llu\n", "vram_used",
		   ttm_resource_manager_usage(&sdev->vram.man));
	seq_printf(m, "%-18s %llu\n", "vram_size", sdev->vram_size);
	seq_printf(m, "%-18s %u\n", "hw_error_count", sgpu_rd(sdev, SGHW_REG_ERROR_COUNT));
	seq_printf(m, "%-18s %u\n", "hw_evt_dropped", sgpu_rd(sdev, SGHW_REG_EVT_DROPPED));
	seq_printf(m, "%-18s %u/%u\n", "ring_head_tail", READ_ONCE(sdev->cmd_head),
		   READ_ONCE(sdev->cmd_tail));
	return 0;
}

static int sgpu_debugfs_ttm(struct seq_file *m, void *data)
{
	struct drm_debugfs_entry *entry = m->private;
	struct sgpu_device *sdev = to_sgpu(entry->dev);
	struct drm_printer p = drm_seq_file_printer(m);

	ttm_resource_manager_debug(&sdev->vram.man, &p);
	return 0;
}

/* Writing anything runs the event-loss recovery (RESYNC) now: for tests. */
static ssize_t sgpu_debugfs_resync_write(struct file *f, const char __user *buf,
					 size_t len, loff_t *pos)
{
	struct sgpu_device *sdev = f->private_data;

	sgpu_resync(sdev);
	return len;
}

static const struct file_operations sgpu_debugfs_resync_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = sgpu_debugfs_resync_write,
	.llseek = noop_llseek,
};

/* The device's drm_sched job timeout in ms (0 = none): for tests of the recovery. */
static int sgpu_debugfs_timeout_get(void *data, u64 *val)
{
	*val = sgpu_sched_timeout_ms(data);
	return 0;
}

static int sgpu_debugfs_timeout_set(void *data, u64 val)
{
	return val > U32_MAX ? -EINVAL : sgpu_sched_set_timeout(data, val);
}

DEFINE_DEBUGFS_ATTRIBUTE(sgpu_debugfs_timeout_fops, sgpu_debugfs_timeout_get,
			 sgpu_debugfs_timeout_set, "%llu\n");

/*
 * Fault injection for tests: the next N moves into VRAM fail (-EIO) in the
 * TTM move callback after the device move, before TTM commits the placement.
 */
static int sgpu_debugfs_fail_vram_moves_get(void *data, u64 *val)
{
	struct sgpu_device *sdev = data;

	*val = atomic_read(&sdev->fail_vram_moves);
	return 0;
}

static int sgpu_debugfs_fail_vram_moves_set(void *data, u64 val)
{
	struct sgpu_device *sdev = data;

	if (val > INT_MAX)
		return -EINVAL;
	atomic_set(&sdev->fail_vram_moves, val);
	return 0;
}

DEFINE_DEBUGFS_ATTRIBUTE(sgpu_debugfs_fail_vram_moves_fops, sgpu_debugfs_fail_vram_moves_get,
			 sgpu_debugfs_fail_vram_moves_set, "%llu\n");

/*
 * The ring poll's period in ms (0 = off): for tests that prove a lost
 * interrupt is caught by the job fence's .signaled alone.
 */
static int sgpu_debugfs_ring_poll_get(void *data, u64 *val)
{
	struct sgpu_device *sdev = data;

	*val = READ_ONCE(sdev->ring_poll_ms);
	return 0;
}

static int sgpu_debugfs_ring_poll_set(void *data, u64 val)
{
	struct sgpu_device *sdev = data;

	return val > 60000 ? -EINVAL : sgpu_ring_set_poll(sdev, val);
}

DEFINE_DEBUGFS_ATTRIBUTE(sgpu_debugfs_ring_poll_fops, sgpu_debugfs_ring_poll_get,
			 sgpu_debugfs_ring_poll_set, "%llu\n");

void sgpu_debugfs_init(struct drm_minor *minor)
{
	struct drm_device *dev = minor->dev;

	drm_debugfs_add_file(dev, "sharegpu_bos", sgpu_debugfs_bos, NULL);
	drm_debugfs_add_file(dev, "sharegpu_counters", sgpu_debugfs_counters, NULL);
	drm_debugfs_add_file(dev, "sharegpu_vram", sgpu_debugfs_ttm, NULL);
	debugfs_create_file("sharegpu_resync", 0200, minor->debugfs_root, to_sgpu(dev),
			    &sgpu_debugfs_resync_fops);
	debugfs_create_file_unsafe("sharegpu_job_timeout_ms", 0600, minor->debugfs_root,
				   to_sgpu(dev), &sgpu_debugfs_timeout_fops);
	debugfs_create_file_unsafe("sharegpu_fail_vram_moves", 0600, minor->debugfs_root,
				   to_sgpu(dev), &sgpu_debugfs_fail_vram_moves_fops);
	debugfs_create_file_unsafe("sharegpu_ring_poll_ms", 0600, minor->debugfs_root,
				   to_sgpu(dev), &sgpu_debugfs_ring_poll_fops);
}

/*
 * fdinfo: drm-total-/drm-resident-/drm-shared-<region> for vram and system,
 * and the file's share of the limits: drm-sharegpu-objects (GEM handles),
 * drm-sharegpu-jobs-active (jobs in flight), drm-sharegpu-jobs-kept
 * (SUBMIT_F_KEEP records not yet collected by WAIT_JOB).
 */
void sgpu_show_fdinfo(struct drm_printer *p, struct drm_file *file)
{
	struct sgpu_file *sfile = file->driver_priv;
	struct drm_memory_stats stats[2] = {};
	struct drm_gem_object *obj;
	unsigned int handles = 0;
	int id;

	spin_lock(&file->table_lock);
	idr_for_each_entry(&file->object_idr, obj, id) {
		struct drm_memory_stats *s;
		u32 domain = SHAREGPU_DOMAIN_SYSTEM;

		handles++;
		if (sgpu_is_bo(obj))
			domain = sgpu_bo_domain_unlocked(to_sgpu_bo(obj));
		s = &stats[domain == SHAREGPU_DOMAIN_VRAM ? 0 : 1];
		if (obj->handle_count > 1)
			s->shared += obj->size;
		else
			s->private += obj->size;
		if (!sgpu_is_bo(obj) || domain) {
			s->resident += obj->size;
			if (obj->resv && !dma_resv_test_signaled(obj->resv, DMA_RESV_USAGE_BOOKKEEP))
				s->active += obj->size;
		}
	}
	spin_unlock(&file->table_lock);
	drm_print_memory_stats(p, &stats[0], DRM_GEM_OBJECT_RESIDENT, "vram");
	drm_print_memory_stats(p, &stats[1], DRM_GEM_OBJECT_RESIDENT, "system");
	/* legacy keys (amdgpu style) */
	drm_printf(p, "drm-memory-vram:\t%llu KiB\n", stats[0].resident >> 10);
	drm_printf(p, "drm-memory-system:\t%llu KiB\n", stats[1].resident >> 10);
	drm_printf(p, "drm-sharegpu-objects:\t%u\n", handles);
	drm_printf(p, "drm-sharegpu-jobs-active:\t%d\n", atomic_read(&sfile->active));
	drm_printf(p, "drm-sharegpu-jobs-kept:\t%d\n", atomic_read(&sfile->kept));
}
