// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: job submission (SUBMIT, WAIT_JOB).
 *
 * A job is a list of COPY/FILL/CHECKSUM commands over a set of BOs. SUBMIT
 * locks the BOs with drm_exec (every -EDEADLK backoff is counted), validates
 * them (native BOs placed, imports mapped), builds the ring image (commands
 * plus cache maintenance/transfers and a final FENCE) and hands the job to the
 * device's scheduler (sgpu_sched.c) with its dependencies: the in-fences
 * (sync_files, binary and timeline syncobjs) and, unless the submitter opted
 * out, the implicit fences of every BO's reservation; KERNEL (move) fences
 * always. Nothing waits for them here. The job's finished fence goes into
 * every reservation with WRITE or READ usage and to the out-syncs.
 */
#include <linux/dma-fence.h>
#include <linux/dma-fence-chain.h>
#include <linux/dma-resv.h>
#include <linux/file.h>
#include <linux/slab.h>
#include <linux/sync_file.h>
#include <linux/uaccess.h>

#include <drm/drm_syncobj.h>

#include "sgpu_drv.h"

#define SGPU_MAX_JOB_OBJS	(2 * SHAREGPU_MAX_CMDS)

static_assert(SGPU_MAX_JOB_ENTRIES < SGPU_CMD_RING_SIZE);

struct sgpu_submit_obj {
	struct drm_gem_object *obj;
	u32 hw_handle;
	bool write;
	bool autosync;	/* guest pages are the truth: transfer around the job */
};

/* An out-sync: the syncobj and, for a timeline point, the chain node allocated up front. */
struct sgpu_out_sync {
	struct drm_syncobj *syncobj;
	struct dma_fence_chain *chain;
	u64 point;
};

struct sgpu_submit {
	struct sgpu_device *sdev;
	struct drm_file *file;
	struct drm_sharegpu_cmd *cmds;
	u32 ncmds;
	u32 flags;
	struct sgpu_submit_obj objs[SGPU_MAX_JOB_OBJS];
	u32 nobjs;
	struct sgpu_job *job;		/* hw, res_idx, nhw: the ring image */
	struct dma_fence *in_fences[SHAREGPU_MAX_SYNCS + 2];
	u32 nin;
	struct sgpu_out_sync out[SHAREGPU_MAX_SYNCS + 1];
	u32 nout;
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

static int sgpu_submit_prepare_obj(struct sgpu_submit *s, struct sgpu_submit_obj *so)
{
	struct drm_gem_object *obj = so->obj;
	struct ttm_operation_ctx ctx = { .interruptible = true };
	int ret;

	if (sgpu_is_bo(obj)) {
		struct sgpu_bo *bo = to_sgpu_bo(obj);

		if (!bo->tbo.pin_count) {
			ret = sgpu_bo_validate(bo, &bo->placement, &ctx);
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
	} else if (sgpu_is_remote(obj)) {
		struct sgpu_remote *rem = to_sgpu_remote(obj);

		/* contract 1.7: the job runs on the exporter's pages */
		ret = sgpu_remote_usable(rem);
		if (ret)
			return ret;
		if (so->write && !rem->writable)
			return -EACCES;
		so->hw_handle = rem->hw_handle;
		so->autosync = false;
	} else {
		return -EINVAL;
	}
	return 0;
}

static void sgpu_emit(struct sgpu_submit *s, u16 op, u32 handle, u32 handle2, u32 arg,
		      u64 off0, u64 off1, u64 len, s16 res)
{
	struct sgpu_job *job = s->job;

	if (WARN_ON_ONCE(job->nhw >= job->max_hw))
		return;
	sgpu_cmd_fill(&job->hw[job->nhw], op, handle, handle2, arg, off0, off1, len);
	job->res_idx[job->nhw] = res;
	job->nhw++;
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

	s->job->nhw = 0;
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
				/*
				 * Count every -EDEADLK backoff, and apart the
				 * ones where another context holds the object:
				 * DEBUG_WW_MUTEX_SLOWPATH also injects -EDEADLK
				 * on a lock it has just released.
				 */
				if (unlikely(drm_exec_is_contended(exec))) {
					atomic64_inc(&sdev->ww_backoffs);
					if (dma_resv_is_locked(exec->contended->resv))
						atomic64_inc(&sdev->ww_contended);
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

/* One in-fence (a reference) from a sync_file fd or a syncobj (point). */
static int sgpu_submit_add_in(struct sgpu_submit *s, const struct drm_sharegpu_sync *in)
{
	struct dma_fence *fence;
	int ret;

	if (in->flags & ~SHAREGPU_SYNC_F_SYNC_FILE || WARN_ON(s->nin >= ARRAY_SIZE(s->in_fences)))
		return -EINVAL;
	if (in->flags & SHAREGPU_SYNC_F_SYNC_FILE) {
		if (in->point)
			return -EINVAL;
		fence = sync_file_get_fence(in->handle);
		if (!fence)
			return -EINVAL;
	} else {
		ret = drm_syncobj_find_fence(s->file, in->handle, in->point, 0, &fence);
		if (ret)
			return ret;
	}
	s->in_fences[s->nin++] = fence;
	return 0;
}

static int sgpu_submit_add_out(struct sgpu_submit *s, const struct drm_sharegpu_sync *out)
{
	struct sgpu_out_sync *o;

	if (out->flags || WARN_ON(s->nout >= ARRAY_SIZE(s->out)))
		return -EINVAL;
	o = &s->out[s->nout];
	o->syncobj = drm_syncobj_find(s->file, out->handle);
	if (!o->syncobj)
		return -ENOENT;
	o->point = out->point;
	s->nout++;
	if (out->point) {
		o->chain = dma_fence_chain_alloc();
		if (!o->chain)
			return -ENOMEM;
	}
	return 0;
}

/* A user array of syncs, each given to @add. */
static int sgpu_submit_sync_array(struct sgpu_submit *s, u64 uptr, u32 n,
				  int (*add)(struct sgpu_submit *s,
					     const struct drm_sharegpu_sync *sync))
{
	struct drm_sharegpu_sync *syncs;
	u32 i;
	int ret = 0;

	if (!n)
		return 0;
	syncs = memdup_array_user(u64_to_user_ptr(uptr), n, sizeof(*syncs));
	if (IS_ERR(syncs))
		return PTR_ERR(syncs);
	for (i = 0; !ret && i < n; i++)
		ret = add(s, &syncs[i]);
	kfree(syncs);
	return ret;
}

/* The legacy single in/out fields and the in_syncs/out_syncs arrays. */
static int sgpu_submit_syncs(struct sgpu_submit *s, struct drm_sharegpu_submit *args)
{
	struct drm_sharegpu_sync one;
	int ret;

	if (args->num_in_syncs > SHAREGPU_MAX_SYNCS || args->num_out_syncs > SHAREGPU_MAX_SYNCS)
		return -EINVAL;
	if (args->flags & SHAREGPU_SUBMIT_F_IN_FENCE) {
		one = (struct drm_sharegpu_sync){ .handle = args->in_fence_fd,
						  .flags = SHAREGPU_SYNC_F_SYNC_FILE };
		ret = sgpu_submit_add_in(s, &one);
		if (ret)
			return ret;
	}
	if (args->in_syncobj) {
		one = (struct drm_sharegpu_sync){ .handle = args->in_syncobj };
		ret = sgpu_submit_add_in(s, &one);
		if (ret)
			return ret;
	}
	if (args->out_syncobj) {
		one = (struct drm_sharegpu_sync){ .handle = args->out_syncobj };
		ret = sgpu_submit_add_out(s, &one);
		if (ret)
			return ret;
	}
	ret = sgpu_submit_sync_array(s, args->in_syncs, args->num_in_syncs, sgpu_submit_add_in);
	if (ret)
		return ret;
	return sgpu_submit_sync_array(s, args->out_syncs, args->num_out_syncs,
				      sgpu_submit_add_out);
}

static void sgpu_submit_put_syncs(struct sgpu_submit *s)
{
	u32 i;

	for (i = 0; i < s->nin; i++)
		dma_fence_put(s->in_fences[i]);
	for (i = 0; i < s->nout; i++) {
		dma_fence_chain_free(s->out[i].chain);
		drm_syncobj_put(s->out[i].syncobj);
	}
}

/*
 * The scheduler dependencies of a locked, prepared job: the in-fences (their
 * references move to the job) and every reservation's fences the job must
 * follow.
 */
static int sgpu_submit_deps(struct sgpu_submit *s)
{
	struct drm_sched_job *sched_job = &s->job->sched;
	u32 i;
	int ret;

	for (; s->nin; s->nin--) {
		ret = drm_sched_job_add_dependency(sched_job, s->in_fences[s->nin - 1]);
		s->in_fences[s->nin - 1] = NULL;
		if (ret)
			return ret;
	}
	for (i = 0; i < s->nobjs; i++) {
		struct drm_gem_object *obj = s->objs[i].obj;

		/* kernel (move) fences always, the rest unless userspace opted out */
		ret = drm_sched_job_add_resv_dependencies(sched_job, obj->resv,
							  DMA_RESV_USAGE_KERNEL);
		if (!ret && !(s->flags & SHAREGPU_SUBMIT_F_NO_IMPLICIT))
			ret = drm_sched_job_add_implicit_dependencies(sched_job, obj,
								      s->objs[i].write);
		if (ret)
			return ret;
	}
	return 0;
}

/* The job keeps the BO references until free_job(): handles may close meanwhile. */
static int sgpu_submit_give_objs(struct sgpu_submit *s)
{
	struct sgpu_job *job = s->job;
	u32 i;

	job->objs = kvmalloc_array(s->nobjs, sizeof(*job->objs), GFP_KERNEL);
	if (!job->objs)
		return -ENOMEM;
	for (i = 0; i < s->nobjs; i++) {
		job->objs[i] = s->objs[i].obj;
		drm_gem_object_get(job->objs[i]);
	}
	job->nobjs = s->nobjs;
	return 0;
}

static void sgpu_submit_signal_outs(struct sgpu_submit *s, struct dma_fence *fence)
{
	u32 i;

	for (i = 0; i < s->nout; i++) {
		if (s->out[i].chain) {
			drm_syncobj_add_point(s->out[i].syncobj, s->out[i].chain, fence,
					      s->out[i].point);
			s->out[i].chain = NULL;	/* the syncobj owns it */
		} else {
			drm_syncobj_replace_fence(s->out[i].syncobj, fence);
		}
	}
}

/*
 * The job's fence signalled: it no longer counts against the file's limit.
 * free_job() may already be running on another CPU (it only needs the fence's
 * signalled bit), so the callback holds references of its own: the file's and
 * the job's (its hardware fence).
 */
static void sgpu_job_active_done(struct dma_fence *f, struct dma_fence_cb *cb)
{
	struct sgpu_job *job = container_of(cb, struct sgpu_job, active_cb);

	atomic_dec(&job->active_file->active);
	sgpu_file_put(job->active_file);
	dma_fence_put(&job->hw_fence);
}

/*
 * Per-file limit on jobs in flight: a job counts from the moment SUBMIT
 * accepts its arguments until its fence signals (it may wait for its
 * dependencies meanwhile, holding BO references and kernel memory). Beyond
 * the limit SUBMIT fails with -EAGAIN, as xe_exec_ioctl() does for a full
 * long-running ring and i915's execbuffer for O_NONBLOCK throttling: the
 * condition is transient, libdrm's drmIoctl() retries it.
 *
 * SUBMIT_F_KEEP records are capped per file with -EBUSY instead (not
 * transient, like BO_PIN's pin limit): only WAIT_JOB or close releases one.
 */
int sgpu_ioctl_submit(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_submit *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	struct sgpu_file *sfile = file->driver_priv;
	struct sync_file *sync_file = NULL;
	struct sgpu_job *job = NULL;
	struct dma_fence *finished;
	struct sgpu_submit *s;
	struct drm_exec exec;
	bool sched_init = false;
	bool kept = false;
	bool active;
	int out_fd = -1;
	u32 id = 0;
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
	ret = sgpu_submit_syncs(s, args);
	if (ret)
		goto out_put;
	if (args->flags & SHAREGPU_SUBMIT_F_KEEP) {
		ret = sgpu_limit_get(&sfile->kept, READ_ONCE(sgpu_max_kept_jobs),
				     &sdev->limit_kept, -EBUSY);
		if (ret)
			goto out_put;
		kept = true;
	}

	job = sgpu_job_alloc(sdev, sfile);
	if (!job) {
		ret = -ENOMEM;
		goto out_put;
	}
	s->job = job;
	job->nres = s->ncmds;
	job->kept = kept;
	/*
	 * Sized for this job: the maximum (49 KiB) made every SUBMIT an
	 * order-4 allocation, and a vmalloc() once memory was fragmented.
	 */
	job->max_hw = SGPU_JOB_ENTRIES(s->ncmds, s->nobjs);
	job->hw = kvmalloc_array(job->max_hw, sizeof(*job->hw), GFP_KERNEL);
	job->res_idx = kvmalloc_array(job->max_hw, sizeof(*job->res_idx), GFP_KERNEL);
	if (!job->hw || !job->res_idx) {
		ret = -ENOMEM;
		goto out_put;
	}
	ret = sgpu_submit_give_objs(s);
	if (ret)
		goto out_put;
	/* the job_id, reserved now so that nothing can fail once the job is armed */
	ret = xa_alloc_cyclic(&sfile->jobs, &id, NULL, xa_limit_32b, &sfile->next_id,
			      GFP_KERNEL);
	if (ret < 0)
		goto out_put;
	job->id = id;
	if (args->flags & SHAREGPU_SUBMIT_F_OUT_FENCE) {
		out_fd = get_unused_fd_flags(O_CLOEXEC);
		if (out_fd < 0) {
			ret = out_fd;
			goto out_put;
		}
	}

	ret = sgpu_submit_lock(s, &exec);
	if (ret)
		goto out_put;
	sgpu_submit_build(s);
	ret = drm_sched_job_init(&job->sched, &sfile->entity, job->nhw, sfile, file->client_id);
	if (ret)
		goto out_unlock;
	sched_init = true;
	ret = sgpu_submit_deps(s);
	if (ret)
		goto out_unlock;
	/* nothing may fail from here on */
	drm_sched_job_arm(&job->sched);
	sched_init = false;
	finished = &job->sched.s_fence->finished;
	rcu_assign_pointer(job->done, dma_fence_get(finished));
	for (i = 0; i < s->nobjs; i++)
		dma_resv_add_fence(s->objs[i].obj->resv, finished,
				   s->objs[i].write ? DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ);
	dma_fence_get(finished);	/* ours, for the out-syncs and SUBMIT_F_WAIT */
	dma_fence_get(&job->hw_fence);	/* ours: free_job() may run as soon as it is pushed */
	/* sfile->jobs names the job until free_job() (or WAIT_JOB when kept) */
	dma_fence_get(&job->hw_fence);
	/* into the slot reserved above: needs no memory */
	xa_store(&sfile->jobs, id, job, GFP_NOWAIT);
	WRITE_ONCE(sfile->max_id, max(READ_ONCE(sfile->max_id), id));
	id = 0;
	kept = false;
	/* registered first, so the count drops before any waiter of the fence wakes */
	kref_get(&sfile->ref);
	job->active_file = sfile;
	dma_fence_get(&job->hw_fence);
	if (dma_fence_add_callback(finished, &job->active_cb, sgpu_job_active_done))
		sgpu_job_active_done(finished, &job->active_cb);
	active = false;
	drm_sched_entity_push_job(&job->sched);
	drm_exec_fini(&exec);
	args->job_id = job->id;

	sgpu_submit_signal_outs(s, finished);
	ret = 0;
	if (out_fd >= 0) {
		sync_file = sync_file_create(finished);
		if (sync_file) {
			fd_install(out_fd, sync_file->file);
			args->out_fence_fd = out_fd;
			out_fd = -1;
		} else {
			/* the job runs; only its sync_file is missing */
			ret = -ENOMEM;
		}
	}
	if (!ret && (args->flags & SHAREGPU_SUBMIT_F_WAIT)) {
		ret = dma_fence_wait(finished, true);
		/*
		 * Another waiter's .signaled (a WAIT_JOB of this job) may have
		 * signalled the fence before the ring was processed: collect
		 * the job's status and results first.
		 */
		if (!ret && !list_empty_careful(&job->link))
			ret = sgpu_ring_collect_job(sdev, job);
		if (!ret) {
			for (i = 0; i < s->ncmds; i++)
				if (s->cmds[i].op == SHAREGPU_CMD_CHECKSUM)
					s->cmds[i].result = job->results[i];
			if (copy_to_user(u64_to_user_ptr(args->cmds), s->cmds,
					 s->ncmds * sizeof(*s->cmds)))
				ret = -EFAULT;
			else if (job->status)
				ret = sgpu_status_to_errno(job->status);
			else
				ret = finished->error;
		}
	}
	dma_fence_put(finished);
	dma_fence_put(&job->hw_fence);
	job = NULL;	/* drm_sched's now */
	goto out_put;

out_unlock:
	drm_exec_fini(&exec);
out_put:
	if (job) {
		if (sched_init)
			drm_sched_job_cleanup(&job->sched);
		sgpu_job_put(job);
	}
	if (id)
		xa_release(&sfile->jobs, id);
	if (kept)
		atomic_dec(&sfile->kept);
	if (out_fd >= 0)
		put_unused_fd(out_fd);
	sgpu_submit_put_syncs(s);
	for (i = 0; i < s->nobjs; i++)
		drm_gem_object_put(s->objs[i].obj);
out_free:
	if (active)
		atomic_dec(&sfile->active);
	kfree(s->cmds);
	kvfree(s);
	return ret;
}

/* Look a job up by id with a hardware-fence reference (which keeps it allocated). */
static struct sgpu_job *sgpu_job_lookup(struct sgpu_file *sfile, u32 id)
{
	struct sgpu_job *job;

	xa_lock(&sfile->jobs);
	job = xa_load(&sfile->jobs, id);
	if (job)
		dma_fence_get(&job->hw_fence);
	xa_unlock(&sfile->jobs);
	return job;
}

/*
 * Wait for the job's finished fence. Between slices the job's hardware fence
 * is asked (its .signaled reads LAST_SEQNO), so a lost interrupt does not hold
 * the waiter even with the ring poll off.
 */
static long sgpu_job_wait(struct sgpu_job *job, struct dma_fence *done, long timeout)
{
	const long slice_max = msecs_to_jiffies(100);
	long left = timeout, ret;

	do {
		long slice = min(left, slice_max);

		/* signalling the hardware fence signals done (drm_sched's callback) */
		dma_fence_is_signaled(&job->hw_fence);
		ret = dma_fence_wait_timeout(done, true, slice);
		if (ret)
			return ret;
		if (left != MAX_SCHEDULE_TIMEOUT)
			left -= slice;
	} while (left > 0);
	return 0;
}

int sgpu_ioctl_wait_job(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_wait_job *args = data;
	struct sgpu_file *sfile = file->driver_priv;
	struct dma_fence *done;
	struct sgpu_job *job;
	long ret = 0;

	if (!args->job_id || args->job_id > U32_MAX || args->timeout_ns < 0 ||
	    args->num_results > SHAREGPU_MAX_CMDS)
		return -EINVAL;

	job = sgpu_job_lookup(sfile, args->job_id);
	if (!job) {
		/* not named any more: done if it was ever issued */
		if (args->job_id > READ_ONCE(sfile->max_id))
			return -EINVAL;
		args->status = 0;
		args->error = 0;
		return 0;
	}
	rcu_read_lock();
	done = dma_fence_get_rcu_safe(&job->done);
	rcu_read_unlock();
	if (done) {
		ret = sgpu_job_wait(job, done, sgpu_timeout_jiffies(args->timeout_ns));
		args->error = done->error;
		dma_fence_put(done);
		if (ret == 0) {
			ret = -ETIME;
			goto out;
		}
		if (ret < 0)
			goto out;
		ret = 0;
	} else {
		smp_rmb();	/* free_job() wrote error before clearing done */
		args->error = READ_ONCE(job->error);
	}
	if (job->kept) {
		/* the fence may have signalled before the ring was processed */
		ret = sgpu_ring_collect_job(to_sgpu(dev), job);
		if (ret)
			goto out;
	}
	args->status = job->status;
	if (job->kept) {
		if (args->num_results && args->results &&
		    copy_to_user(u64_to_user_ptr(args->results), job->results,
				 min(args->num_results, job->nres) * sizeof(u64))) {
			ret = -EFAULT;
			goto out;
		}
		if (xa_cmpxchg(&sfile->jobs, args->job_id, job, NULL, 0) == job) {
			atomic_dec(&sfile->kept);
			dma_fence_put(&job->hw_fence);
		}
	}
out:
	dma_fence_put(&job->hw_fence);
	return ret;
}

int sgpu_file_open_jobs(struct sgpu_device *sdev, struct sgpu_file *sfile)
{
	struct drm_gpu_scheduler *sched = &sdev->sched;

	xa_init_flags(&sfile->jobs, XA_FLAGS_ALLOC1);
	atomic_set(&sfile->kept, 0);
	atomic_set(&sfile->active, 0);
	return drm_sched_entity_init(&sfile->entity, DRM_SCHED_PRIORITY_NORMAL, &sched, 1, NULL);
}

/* The file is closing: its queued jobs are flushed or killed, its records dropped. */
void sgpu_file_release_jobs(struct sgpu_file *sfile)
{
	struct sgpu_job *job;
	unsigned long idx;

	drm_sched_entity_destroy(&sfile->entity);
	xa_for_each(&sfile->jobs, idx, job) {
		if (xa_cmpxchg(&sfile->jobs, idx, job, NULL, 0) == job)
			dma_fence_put(&job->hw_fence);
	}
}
