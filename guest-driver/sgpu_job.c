// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: job submission, fences, drm_exec locking, sync_file/syncobj.
 *
 * A job is a list of COPY/FILL/CHECKSUM commands over a set of BOs. The BOs are
 * locked with drm_exec (every -EDEADLK backoff is counted), validated (native
 * BOs placed, imports mapped), foreign fences waited for (implicit sync; our
 * own fences are ordered by the in-order ring), then the commands plus cache
 * maintenance/transfers and a final FENCE are written to the ring. The job's
 * fence is signalled from the command interrupt and added to every BO's
 * reservation with WRITE or READ usage.
 */
#include <linux/dma-fence.h>
#include <linux/dma-resv.h>
#include <linux/file.h>
#include <linux/slab.h>
#include <linux/sync_file.h>
#include <linux/uaccess.h>

#include <drm/drm_syncobj.h>

#include "sgpu_drv.h"

#define SGPU_MAX_JOB_OBJS	(2 * SHAREGPU_MAX_CMDS)

static_assert(SGPU_MAX_JOB_ENTRIES < SGPU_CMD_RING_SIZE);

static const char *sgpu_fence_driver_name(struct dma_fence *f)
{
	return SGPU_DRIVER_NAME;
}

static const char *sgpu_fence_timeline_name(struct dma_fence *f)
{
	struct sgpu_job *job = container_of(f, struct sgpu_job, base);

	return dev_name(job->sdev->drm.dev);
}

/* Job structures allocated and not yet released (all devices): debugfs jobs_alive. */
static atomic_long_t sgpu_jobs_allocated = ATOMIC_LONG_INIT(0);

long sgpu_jobs_alive(void)
{
	return atomic_long_read(&sgpu_jobs_allocated);
}

static void sgpu_file_free(struct kref *ref)
{
	kfree(container_of(ref, struct sgpu_file, ref));
}

void sgpu_file_put(struct sgpu_file *sfile)
{
	kref_put(&sfile->ref, sgpu_file_free);
}

/* The last reference (ring, sync_file, syncobj, dma_resv, kept record) is gone. */
static void sgpu_fence_release(struct dma_fence *f)
{
	struct sgpu_job *job = container_of(f, struct sgpu_job, base);

	if (job->sfile)
		sgpu_file_put(job->sfile);
	atomic_long_dec(&sgpu_jobs_allocated);
	dma_fence_free(f);
}

static const struct dma_fence_ops sgpu_fence_ops = {
	.get_driver_name = sgpu_fence_driver_name,
	.get_timeline_name = sgpu_fence_timeline_name,
	.release = sgpu_fence_release,
};

struct sgpu_submit_obj {
	struct drm_gem_object *obj;
	u32 hw_handle;
	bool write;
	bool autosync;	/* guest pages are the truth: transfer around the job */
};

struct sgpu_submit {
	struct sgpu_device *sdev;
	struct drm_file *file;
	struct drm_sharegpu_cmd *cmds;
	u32 ncmds;
	u32 flags;
	struct sgpu_submit_obj objs[SGPU_MAX_JOB_OBJS];
	u32 nobjs;
	struct sghw_cmd *hw;
	s16 *res_idx;
	u32 nhw;
};

static int sgpu_submit_add_obj(struct sgpu_submit *s, u32 handle, bool write, u32 *idx)
{
	struct drm_gem_object *obj;
	u32 i;

	obj = drm_gem_object_lookup(s->file, handle);
	if (!obj)
		return -ENOENT;
	for (i = 0; i < s->nobjs; i++) {
		if (s->objs[i].obj == obj) {
			drm_gem_object_put(obj);
			s->objs[i].write |= write;
			*idx = i;
			return 0;
		}
	}
	if (WARN_ON(s->nobjs >= SGPU_MAX_JOB_OBJS)) {
		drm_gem_object_put(obj);
		return -EINVAL;
	}
	s->objs[s->nobjs].obj = obj;
	s->objs[s->nobjs].write = write;
	*idx = s->nobjs++;
	return 0;
}

static bool sgpu_range_ok(struct drm_gem_object *obj, u64 off, u64 len)
{
	return len && off < obj->size && len <= obj->size - off;
}

static int sgpu_submit_check(struct sgpu_submit *s)
{
	u32 i, d, r;
	int ret;

	for (i = 0; i < s->ncmds; i++) {
		struct drm_sharegpu_cmd *c = &s->cmds[i];

		c->result = 0;
		switch (c->op) {
		case SHAREGPU_CMD_COPY:
			ret = sgpu_submit_add_obj(s, c->dst_handle, true, &d);
			if (!ret)
				ret = sgpu_submit_add_obj(s, c->src_handle, false, &r);
			if (ret)
				return ret;
			if (!sgpu_range_ok(s->objs[d].obj, c->dst_offset, c->size) ||
			    !sgpu_range_ok(s->objs[r].obj, c->src_offset, c->size))
				return -ERANGE;
			if (d == r && c->dst_offset < c->src_offset + c->size &&
			    c->src_offset < c->dst_offset + c->size)
				return -EINVAL;
			break;
		case SHAREGPU_CMD_FILL:
			ret = sgpu_submit_add_obj(s, c->dst_handle, true, &d);
			if (ret)
				return ret;
			if (!sgpu_range_ok(s->objs[d].obj, c->dst_offset, c->size))
				return -ERANGE;
			if (c->size & 3)
				return -EINVAL;
			break;
		case SHAREGPU_CMD_CHECKSUM:
			ret = sgpu_submit_add_obj(s, c->src_handle, false, &r);
			if (ret)
				return ret;
			if (!sgpu_range_ok(s->objs[r].obj, c->src_offset, c->size))
				return -ERANGE;
			break;
		default:
			return -EINVAL;
		}
	}
	return 0;
}

/* Wait for fences of other contexts (implicit sync); resv locked. */
static int sgpu_wait_foreign(struct sgpu_device *sdev, struct dma_resv *resv,
			     enum dma_resv_usage usage)
{
	struct dma_resv_iter cursor;
	struct dma_fence *fence;
	long ret;

	dma_resv_for_each_fence(&cursor, resv, usage, fence) {
		if (fence->context == sdev->fence_context)
			continue;
		ret = dma_fence_wait(fence, true);
		if (ret)
			return ret;
	}
	return 0;
}

static int sgpu_submit_prepare_obj(struct sgpu_submit *s, struct sgpu_submit_obj *so)
{
	struct drm_gem_object *obj = so->obj;
	struct ttm_operation_ctx ctx = { .interruptible = true };
	int ret;

	if (sgpu_is_bo(obj)) {
		struct sgpu_bo *bo = to_sgpu_bo(obj);

		if (!bo->tbo.pin_count) {
			ret = ttm_bo_validate(&bo->tbo, &bo->placement, &ctx);
			if (ret)
				return ret;
		}
		so->hw_handle = bo->hw_handle;
		so->autosync = bo->foreign_maps && bo->backing;
	} else if (sgpu_is_import(obj)) {
		struct sgpu_import *imp = to_sgpu_import(obj);

		ret = sgpu_import_prepare(imp);
		if (ret)
			return ret;
		so->hw_handle = imp->hw_handle;
		so->autosync = !imp->p2p;
	} else {
		return -EINVAL;
	}

	/* kernel (move) fences always, the rest unless userspace opted out */
	ret = sgpu_wait_foreign(s->sdev, obj->resv, DMA_RESV_USAGE_KERNEL);
	if (ret)
		return ret;
	if (!(s->flags & SHAREGPU_SUBMIT_F_NO_IMPLICIT))
		ret = sgpu_wait_foreign(s->sdev, obj->resv, so->write ?
					DMA_RESV_USAGE_READ : DMA_RESV_USAGE_WRITE);
	return ret;
}

static void sgpu_emit(struct sgpu_submit *s, u16 op, u32 handle, u32 handle2, u32 arg,
		      u64 off0, u64 off1, u64 len, s16 res)
{
	sgpu_cmd_fill(&s->hw[s->nhw], op, handle, handle2, arg, off0, off1, len);
	s->res_idx[s->nhw] = res;
	s->nhw++;
}

static u32 sgpu_handle_of(struct sgpu_submit *s, u32 gem_handle)
{
	struct drm_gem_object *obj = drm_gem_object_lookup(s->file, gem_handle);
	u32 i, h = 0;

	/* the lookup succeeded in sgpu_submit_check(); find our entry */
	for (i = 0; obj && i < s->nobjs; i++)
		if (s->objs[i].obj == obj)
			h = s->objs[i].hw_handle;
	if (obj)
		drm_gem_object_put(obj);
	return h;
}

static void sgpu_submit_build(struct sgpu_submit *s)
{
	bool maint = !s->sdev->coherent && !(s->flags & SHAREGPU_SUBMIT_F_NO_CACHE_MAINT);
	u32 i;

	s->nhw = 0;
	/*
	 * Autosync transfers are the driver's own: TRANSFER_* access memory,
	 * not the device cache (contract 1.1, section 5), so on a non-coherent
	 * device they get their cache maintenance whatever NO_CACHE_MAINT says.
	 */
	for (i = 0; i < s->nobjs; i++) {
		if (!s->objs[i].autosync)
			continue;
		sgpu_emit(s, SGHW_OP_TRANSFER_TO_DEVICE, s->objs[i].hw_handle, 0, 0,
			  0, 0, s->objs[i].obj->size, -1);
		if (!s->sdev->coherent)
			sgpu_emit(s, SGHW_OP_CACHE_INVALIDATE, s->objs[i].hw_handle, 0, 0,
				  0, 0, s->objs[i].obj->size, -1);
	}
	for (i = 0; i < s->ncmds; i++) {
		struct drm_sharegpu_cmd *c = &s->cmds[i];
		u32 dst = 0, src = 0;

		if (c->op != SHAREGPU_CMD_CHECKSUM)
			dst = sgpu_handle_of(s, c->dst_handle);
		if (c->op != SHAREGPU_CMD_FILL)
			src = sgpu_handle_of(s, c->src_handle);
		if (maint && src)
			sgpu_emit(s, SGHW_OP_CACHE_INVALIDATE, src, 0, 0, c->src_offset, 0,
				  c->size, -1);
		if (maint && dst)
			sgpu_emit(s, SGHW_OP_CACHE_INVALIDATE, dst, 0, 0, c->dst_offset, 0,
				  c->size, -1);
		switch (c->op) {
		case SHAREGPU_CMD_COPY:
			sgpu_emit(s, SGHW_OP_COPY, dst, src, 0, c->dst_offset, c->src_offset,
				  c->size, -1);
			break;
		case SHAREGPU_CMD_FILL:
			sgpu_emit(s, SGHW_OP_FILL, dst, 0, c->pattern, c->dst_offset, 0,
				  c->size, -1);
			break;
		case SHAREGPU_CMD_CHECKSUM:
			sgpu_emit(s, SGHW_OP_CHECKSUM, src, 0, 0, c->src_offset, 0, c->size, i);
			break;
		}
		if (maint && dst)
			sgpu_emit(s, SGHW_OP_CACHE_FLUSH, dst, 0, 0, c->dst_offset, 0, c->size, -1);
	}
	for (i = 0; i < s->nobjs; i++) {
		if (!s->objs[i].autosync || !s->objs[i].write)
			continue;
		/* the job's writes may still sit in the device cache */
		if (!s->sdev->coherent)
			sgpu_emit(s, SGHW_OP_CACHE_FLUSH, s->objs[i].hw_handle, 0, 0,
				  0, 0, s->objs[i].obj->size, -1);
		sgpu_emit(s, SGHW_OP_TRANSFER_FROM_DEVICE, s->objs[i].hw_handle, 0, 0,
			  0, 0, s->objs[i].obj->size, -1);
	}
	/* the final FENCE (opcode set by sgpu_ring_submit_job()) */
	sgpu_emit(s, SGHW_OP_FENCE, 0, 0, 0, 0, 0, 0, -1);
}

/*
 * Lock every BO with drm_exec and prepare it. Returns 0 with all locks held.
 * Validation that failed because an eviction ran into ww contention is
 * retried from scratch a few times.
 */
static int sgpu_submit_lock(struct sgpu_submit *s, struct drm_exec *exec)
{
	struct sgpu_device *sdev = s->sdev;
	int attempt, ret = 0;
	u32 i;

	for (attempt = 0; attempt < 4; attempt++) {
		drm_exec_init(exec, DRM_EXEC_INTERRUPTIBLE_WAIT, s->nobjs);
		drm_exec_until_all_locked(exec) {
			for (i = 0; i < s->nobjs; i++) {
				ret = drm_exec_prepare_obj(exec, s->objs[i].obj, 1);
				/* count every -EDEADLK backoff of the ww acquire context */
				if (unlikely(drm_exec_is_contended(exec))) {
					atomic64_inc(&sdev->ww_backoffs);
					drm_exec_retry_on_contention(exec);
				}
				if (ret)
					goto fail;
			}
		}
		for (i = 0; i < s->nobjs; i++) {
			ret = sgpu_submit_prepare_obj(s, &s->objs[i]);
			if (ret)
				break;
		}
		for (i = 0; !ret && i < s->nobjs; i++)
			/* validation may have used the slot drm_exec reserved */
			ret = dma_resv_reserve_fences(s->objs[i].obj->resv, 1);
		if (!ret)
			return 0;
fail:
		drm_exec_fini(exec);
		if (ret != -ENOMEM && ret != -ENOSPC && ret != -EDEADLK)
			break;
		atomic64_inc(&sdev->validate_retries);
	}
	return ret;
}

static int sgpu_wait_in_fences(struct sgpu_submit *s, struct drm_sharegpu_submit *args)
{
	struct dma_fence *fence;
	int ret;

	if (args->flags & SHAREGPU_SUBMIT_F_IN_FENCE) {
		fence = sync_file_get_fence(args->in_fence_fd);
		if (!fence)
			return -EINVAL;
		ret = dma_fence_wait(fence, true);
		dma_fence_put(fence);
		if (ret)
			return ret;
	}
	if (args->in_syncobj) {
		ret = drm_syncobj_find_fence(s->file, args->in_syncobj, 0, 0, &fence);
		if (ret)
			return ret;
		ret = dma_fence_wait(fence, true);
		dma_fence_put(fence);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Per-file limit on jobs in flight: a job counts from the moment SUBMIT
 * accepts its arguments (it may then wait for in-fences, holding BO
 * references and kernel memory) until its fence signals. Beyond the limit
 * SUBMIT fails with -EAGAIN, as xe_exec_ioctl() does for a full long-running
 * ring and i915's execbuffer for O_NONBLOCK throttling: the condition is
 * transient, libdrm's drmIoctl() retries it.
 *
 * SUBMIT_F_KEEP records are capped per file with -EBUSY instead (not
 * transient, like BO_PIN's pin limit): only WAIT_JOB or close releases one.
 */
int sgpu_ioctl_submit(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_submit *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	struct sgpu_file *sfile = file->driver_priv;
	struct drm_syncobj *out_syncobj = NULL;
	struct sync_file *sync_file = NULL;
	struct sgpu_job *job = NULL;
	struct sgpu_submit *s;
	struct drm_exec exec;
	bool kept = false;
	bool active;
	int out_fd = -1;
	u32 i;
	int ret;

	if (args->flags & ~SHAREGPU_SUBMIT_F_MASK || !args->num_cmds ||
	    args->num_cmds > SHAREGPU_MAX_CMDS)
		return -EINVAL;
	ret = sgpu_limit_get(&sfile->active, READ_ONCE(sgpu_max_active_jobs),
			     &sdev->limit_active, -EAGAIN);
	if (ret)
		return ret;
	active = true;

	s = kvzalloc(sizeof(*s), GFP_KERNEL);
	if (!s) {
		atomic_dec(&sfile->active);
		return -ENOMEM;
	}
	s->sdev = sdev;
	s->file = file;
	s->flags = args->flags;
	s->ncmds = args->num_cmds;
	s->cmds = memdup_array_user(u64_to_user_ptr(args->cmds), s->ncmds, sizeof(*s->cmds));
	if (IS_ERR(s->cmds)) {
		ret = PTR_ERR(s->cmds);
		s->cmds = NULL;
		goto out_free;
	}
	ret = sgpu_submit_check(s);
	if (ret)
		goto out_put;

	if (args->out_syncobj) {
		out_syncobj = drm_syncobj_find(file, args->out_syncobj);
		if (!out_syncobj) {
			ret = -ENOENT;
			goto out_put;
		}
	}
	if (args->flags & SHAREGPU_SUBMIT_F_KEEP) {
		ret = sgpu_limit_get(&sfile->kept, READ_ONCE(sgpu_max_kept_jobs),
				     &sdev->limit_kept, -EBUSY);
		if (ret)
			goto out_put;
		kept = true;
	}
	ret = sgpu_wait_in_fences(s, args);
	if (ret)
		goto out_put;

	/* the ring image only once the in-fences are done: waiting is cheap */
	s->hw = kvmalloc_array(SGPU_MAX_JOB_ENTRIES, sizeof(*s->hw), GFP_KERNEL);
	s->res_idx = kvmalloc_array(SGPU_MAX_JOB_ENTRIES, sizeof(*s->res_idx), GFP_KERNEL);
	if (!s->hw || !s->res_idx) {
		ret = -ENOMEM;
		goto out_put;
	}
	job = kzalloc(sizeof(*job), GFP_KERNEL);
	if (!job) {
		ret = -ENOMEM;
		goto out_put;
	}
	atomic_long_inc(&sgpu_jobs_allocated);
	job->sdev = sdev;
	job->nres = s->ncmds;
	INIT_LIST_HEAD(&job->link);
	/* the seqno is assigned in ring order when the job is written */
	dma_fence_init(&job->base, &sgpu_fence_ops, &sdev->fence_lock, sdev->fence_context, 0);

	if (args->flags & SHAREGPU_SUBMIT_F_OUT_FENCE) {
		out_fd = get_unused_fd_flags(O_CLOEXEC);
		if (out_fd < 0) {
			ret = out_fd;
			goto out_put;
		}
		sync_file = sync_file_create(&job->base);
		if (!sync_file) {
			ret = -ENOMEM;
			goto out_put;
		}
	}

	ret = sgpu_submit_lock(s, &exec);
	if (ret)
		goto out_put;
	sgpu_submit_build(s);

	/* from here the job owns the active count: dropped when its fence signals */
	kref_get(&sfile->ref);
	job->sfile = sfile;
	dma_fence_get(&job->base);	/* for the ring */
	ret = sgpu_ring_submit_job(sdev, s->hw, s->res_idx, s->nhw, job);
	if (ret) {
		job->sfile = NULL;
		sgpu_file_put(sfile);
		dma_fence_put(&job->base);
		drm_exec_fini(&exec);
		goto out_put;
	}
	active = false;
	atomic64_inc(&sdev->jobs_submitted);
	for (i = 0; i < s->nobjs; i++)
		dma_resv_add_fence(s->objs[i].obj->resv, &job->base,
				   s->objs[i].write ? DMA_RESV_USAGE_WRITE :
				   DMA_RESV_USAGE_READ);
	drm_exec_fini(&exec);

	args->job_id = job->base.seqno;
	if (out_syncobj)
		drm_syncobj_replace_fence(out_syncobj, &job->base);
	if (sync_file) {
		fd_install(out_fd, sync_file->file);
		args->out_fence_fd = out_fd;
		sync_file = NULL;
		out_fd = -1;
	}
	if (kept) {
		ret = xa_err(xa_store(&sfile->jobs, job->base.seqno, &job->base, GFP_KERNEL));
		if (ret)
			atomic_dec(&sfile->kept);
		else
			dma_fence_get(&job->base);
		kept = false;
	}
	if (args->flags & SHAREGPU_SUBMIT_F_WAIT) {
		ret = dma_fence_wait(&job->base, true);
		if (!ret) {
			for (i = 0; i < s->ncmds; i++)
				if (s->cmds[i].op == SHAREGPU_CMD_CHECKSUM)
					s->cmds[i].result = job->results[i];
			if (copy_to_user(u64_to_user_ptr(args->cmds), s->cmds,
					 s->ncmds * sizeof(*s->cmds)))
				ret = -EFAULT;
			else if (job->status)
				ret = sgpu_status_to_errno(job->status);
		}
	}
	goto out_put;

out_put:
	if (kept)
		atomic_dec(&sfile->kept);
	if (sync_file)
		fput(sync_file->file);
	if (out_fd >= 0)
		put_unused_fd(out_fd);
	if (job)
		dma_fence_put(&job->base);
	if (out_syncobj)
		drm_syncobj_put(out_syncobj);
	for (i = 0; i < s->nobjs; i++)
		drm_gem_object_put(s->objs[i].obj);
out_free:
	if (active)
		atomic_dec(&sfile->active);
	kvfree(s->hw);
	kvfree(s->res_idx);
	kfree(s->cmds);
	kvfree(s);
	return ret;
}

static struct sgpu_job *sgpu_find_inflight(struct sgpu_device *sdev, u64 seqno)
{
	struct sgpu_job *job, *found = NULL;

	spin_lock_irq(&sdev->fence_lock);
	list_for_each_entry(job, &sdev->inflight, link) {
		if (job->base.seqno == seqno) {
			found = job;
			dma_fence_get(&job->base);
			break;
		}
	}
	spin_unlock_irq(&sdev->fence_lock);
	return found;
}

int sgpu_ioctl_wait_job(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_wait_job *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	struct sgpu_file *sfile = file->driver_priv;
	struct dma_fence *f;
	struct sgpu_job *job;
	bool kept = false;
	long ret;

	if (!args->job_id || args->timeout_ns < 0 || args->num_results > SHAREGPU_MAX_CMDS)
		return -EINVAL;

	xa_lock(&sfile->jobs);
	f = xa_load(&sfile->jobs, args->job_id);
	if (f) {
		dma_fence_get(f);
		kept = true;
	}
	xa_unlock(&sfile->jobs);
	job = f ? container_of(f, struct sgpu_job, base) :
	      sgpu_find_inflight(sdev, args->job_id);
	if (!job) {
		/* not in flight: done if it was ever issued */
		if (args->job_id > READ_ONCE(sdev->fence_seqno))
			return -EINVAL;
		args->status = 0;
		return 0;
	}
	ret = dma_fence_wait_timeout(&job->base, true, sgpu_timeout_jiffies(args->timeout_ns));
	if (ret == 0) {
		ret = -ETIME;
		goto out;
	}
	if (ret < 0)
		goto out;
	ret = 0;
	args->status = job->status;
	if (kept) {
		if (args->num_results && args->results &&
		    copy_to_user(u64_to_user_ptr(args->results), job->results,
				 min(args->num_results, job->nres) * sizeof(u64))) {
			ret = -EFAULT;
			goto out;
		}
		f = xa_erase(&sfile->jobs, args->job_id);
		if (f) {
			atomic_dec(&sfile->kept);
			dma_fence_put(f);
		}
	}
out:
	dma_fence_put(&job->base);
	return ret;
}

void sgpu_file_release_jobs(struct sgpu_file *sfile)
{
	struct dma_fence *f;
	unsigned long idx;

	xa_for_each(&sfile->jobs, idx, f)
		dma_fence_put(f);
	xa_destroy(&sfile->jobs);
}
