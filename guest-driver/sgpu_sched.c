// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: the job scheduler and job objects. One drm_sched per device ring,
 * one entity per file.
 *
 * SUBMIT (sgpu_job.c) builds a job's ring image while its BOs are locked,
 * gives the job its dependencies (in-fences, the implicit fences of every
 * reservation) and pushes it. run_job() writes the image to the ring once they
 * have signalled, holding none of the submitter's locks. The ring signals the
 * job's hardware fence (sgpu_hw.c); drm_sched then signals the finished fence,
 * the one userspace and the reservations see. A dependency on a fence of this
 * same scheduler only waits until that job is on the ring (drm_sched): the
 * ring completes in order.
 *
 * Timeout (module parameter job_timeout_ms, per device debugfs
 * sharegpu_job_timeout_ms): the ring is processed first, a lost interrupt is
 * not a hang. Otherwise, like amdgpu and xe without resubmission: stop the
 * scheduler, abort every job on the ring in the device (JOB_ABORT, contract
 * 1.4: handles and buffer contents stay), wait for the ring to drain, restart
 * the scheduler with each job's real outcome. The hung job fails with
 * -ETIMEDOUT, the jobs the device dropped with -ECANCELED, those that had
 * completed keep their result; jobs not yet on the ring run afterwards.
 */
#include <linux/slab.h>

#include "sgpu_drv.h"

/* Ring entries jobs may use at once; the rest is left to synchronous commands. */
#define SGPU_SCHED_CREDITS	(SGPU_CMD_RING_SIZE - 64)
static_assert(SGPU_MAX_JOB_ENTRIES <= SGPU_SCHED_CREDITS);

/* How long recovery waits for the device to complete the aborted jobs. */
#define SGPU_ABORT_DRAIN_TRIES	100	/* of HZ / 10 */

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

static const char *sgpu_hw_fence_driver_name(struct dma_fence *f)
{
	return SGPU_DRIVER_NAME;
}

static const char *sgpu_hw_fence_timeline_name(struct dma_fence *f)
{
	struct sgpu_job *job = container_of(f, struct sgpu_job, hw_fence);

	return dev_name(job->sdev->drm.dev);
}

/* The last reference is gone: free_job() released everything else. */
static void sgpu_hw_fence_release(struct dma_fence *f)
{
	atomic_long_dec(&sgpu_jobs_allocated);
	dma_fence_free(f);
}

/* Read from the device: a lost interrupt does not hide a completed job. */
static bool sgpu_hw_fence_signaled(struct dma_fence *f)
{
	struct sgpu_job *job = container_of(f, struct sgpu_job, hw_fence);

	return sgpu_ring_job_completed(job->sdev, job);
}

static const struct dma_fence_ops sgpu_hw_fence_ops = {
	.get_driver_name = sgpu_hw_fence_driver_name,
	.get_timeline_name = sgpu_hw_fence_timeline_name,
	.signaled = sgpu_hw_fence_signaled,
	.release = sgpu_hw_fence_release,
};

/* A job with one reference (the submitter's, then drm_sched's until free_job()). */
struct sgpu_job *sgpu_job_alloc(struct sgpu_device *sdev, struct sgpu_file *sfile)
{
	struct sgpu_job *job = kzalloc(sizeof(*job), GFP_KERNEL);

	if (!job)
		return NULL;
	atomic_long_inc(&sgpu_jobs_allocated);
	job->sdev = sdev;
	kref_get(&sfile->ref);
	job->sfile = sfile;
	INIT_LIST_HEAD(&job->link);
	/* the seqno is assigned in ring order when run_job() writes the job */
	dma_fence_init(&job->hw_fence, &sgpu_hw_fence_ops, &sdev->fence_lock,
		       sdev->fence_context, 0);
	return job;
}

/* Drop the submitter's/drm_sched's reference and what only it needed. */
void sgpu_job_put(struct sgpu_job *job)
{
	u32 i;

	for (i = 0; i < job->nobjs; i++)
		drm_gem_object_put(job->objs[i]);
	kvfree(job->objs);
	job->objs = NULL;
	job->nobjs = 0;
	kvfree(job->hw);
	kvfree(job->res_idx);
	job->hw = NULL;
	job->res_idx = NULL;
	sgpu_file_put(job->sfile);
	job->sfile = NULL;
	dma_fence_put(&job->hw_fence);
}

static struct dma_fence *sgpu_sched_run_job(struct drm_sched_job *sched_job)
{
	struct sgpu_job *job = to_sgpu_job(sched_job);
	bool cookie;
	int ret;

	/* a dependency failed or the file is gone: leave the buffers alone */
	if (unlikely(sched_job->s_fence->finished.error))
		return NULL;
	cookie = dma_fence_begin_signalling();
	ret = sgpu_ring_submit_job(job->sdev, job);
	dma_fence_end_signalling(cookie);
	if (ret)
		return ERR_PTR(ret);
	atomic64_inc(&job->sdev->jobs_submitted);
	/* drm_sched's reference, dropped when it has taken its own */
	return dma_fence_get(&job->hw_fence);
}

/* Wait until every job on the ring completed; false if the device never did. */
static bool sgpu_sched_drain_ring(struct sgpu_device *sdev)
{
	int i;

	for (i = 0; i < SGPU_ABORT_DRAIN_TRIES; i++) {
		sgpu_ring_process(sdev);
		if (sgpu_ring_jobs_idle(sdev) || READ_ONCE(sdev->dead))
			return true;
		wait_event_timeout(sdev->ring_wq, sgpu_ring_jobs_idle(sdev), HZ / 10);
	}
	return sgpu_ring_jobs_idle(sdev);
}

/*
 * drm_sched_stop() detached every pending job from its hardware fence (and
 * drm_sched_start() would fail them all with -ECANCELED): give each its own
 * hardware fence back, whose error now says what the device did.
 */
static void sgpu_sched_reattach(struct sgpu_device *sdev)
{
	struct drm_sched_job *s_job;

	list_for_each_entry(s_job, &sdev->sched.pending_list, list) {
		struct sgpu_job *job = to_sgpu_job(s_job);

		if (s_job->s_fence->parent)
			continue;
		if (dma_fence_is_signaled(&job->hw_fence) && job->hw_fence.error)
			atomic64_inc(&sdev->jobs_aborted);
		/* as drm_sched_fence_set_parent(): published after the reference */
		smp_store_release(&s_job->s_fence->parent, dma_fence_get(&job->hw_fence));
	}
}

static enum drm_gpu_sched_stat sgpu_sched_timedout_job(struct drm_sched_job *sched_job)
{
	struct sgpu_job *job = to_sgpu_job(sched_job);
	struct sgpu_device *sdev = job->sdev;
	unsigned long flags;

	/* a lost interrupt is not a hang */
	sgpu_ring_process(sdev);
	drm_sched_stop(&sdev->sched, sched_job);
	if (dma_fence_is_signaled(&job->hw_fence) || READ_ONCE(sdev->dead))
		goto restart;
	if (!(sdev->features & SGHW_FEAT_JOB_ABORT)) {
		drm_warn_once(&sdev->drm, "job timed out; the device cannot abort jobs (< 1.4)\n");
		goto restart;
	}

	atomic64_inc(&sdev->job_timeouts);
	drm_warn(&sdev->drm, "job %u of %s (ring seqno %llu) timed out after %u ms: aborting the jobs on the ring\n",
		 job->id, sched_job->s_fence->sched->name, job->ring_seqno,
		 jiffies_to_msecs(sdev->sched.timeout));
	spin_lock_irqsave(&sdev->ring_lock, flags);
	job->timed_out = true;
	spin_unlock_irqrestore(&sdev->ring_lock, flags);
	atomic64_inc(&sdev->job_aborts);
	sgpu_wr(sdev, SGHW_REG_JOB_ABORT, SGHW_JOB_ABORT_MAGIC);
	if (!sgpu_sched_drain_ring(sdev))
		drm_err(&sdev->drm, "jobs still on the ring %u ms after JOB_ABORT\n",
			jiffies_to_msecs(SGPU_ABORT_DRAIN_TRIES * (HZ / 10)));
restart:
	sgpu_sched_reattach(sdev);
	drm_sched_start(&sdev->sched);
	return DRM_GPU_SCHED_STAT_NOMINAL;
}

static void sgpu_sched_free_job(struct drm_sched_job *sched_job)
{
	struct sgpu_job *job = to_sgpu_job(sched_job);
	struct sgpu_file *sfile = job->sfile;
	struct dma_fence *done;

	done = rcu_dereference_protected(job->done, true);
	WRITE_ONCE(job->error, done ? done->error : 0);
	/* WAIT_JOB reads error once it sees done NULL (pairs with its smp_rmb()) */
	smp_wmb();
	RCU_INIT_POINTER(job->done, NULL);
	dma_fence_put(done);
	drm_sched_job_cleanup(sched_job);
	/* an unkept job can no longer be named; a kept one waits for WAIT_JOB */
	if (!job->kept && xa_cmpxchg(&sfile->jobs, job->id, job, NULL, 0) == job)
		dma_fence_put(&job->hw_fence);
	sgpu_job_put(job);
}

static const struct drm_sched_backend_ops sgpu_sched_ops = {
	.run_job = sgpu_sched_run_job,
	.timedout_job = sgpu_sched_timedout_job,
	.free_job = sgpu_sched_free_job,
};

static long sgpu_sched_timeout_jiffies(unsigned int ms)
{
	return ms ? msecs_to_jiffies(ms) : MAX_SCHEDULE_TIMEOUT;
}

int sgpu_sched_init(struct sgpu_device *sdev)
{
	const struct drm_sched_init_args args = {
		.ops = &sgpu_sched_ops,
		.num_rqs = DRM_SCHED_PRIORITY_COUNT,
		.credit_limit = SGPU_SCHED_CREDITS,
		.timeout = sgpu_sched_timeout_jiffies(READ_ONCE(sgpu_job_timeout_ms)),
		.name = dev_name(sdev->drm.dev),
		.dev = sdev->drm.dev,
	};

	return drm_sched_init(&sdev->sched, &args);
}

void sgpu_sched_fini(struct sgpu_device *sdev)
{
	drm_sched_fini(&sdev->sched);
}

/*
 * For tests and debugging: the next timer armed uses it (drm_sched reads the
 * field whenever it arms the timeout). 0 = no timeout.
 */
int sgpu_sched_set_timeout(struct sgpu_device *sdev, unsigned int ms)
{
	if (ms > 600000)
		return -EINVAL;
	WRITE_ONCE(sdev->sched.timeout, sgpu_sched_timeout_jiffies(ms));
	return 0;
}

unsigned int sgpu_sched_timeout_ms(struct sgpu_device *sdev)
{
	long t = READ_ONCE(sdev->sched.timeout);

	return t == MAX_SCHEDULE_TIMEOUT ? 0 : jiffies_to_msecs(t);
}
