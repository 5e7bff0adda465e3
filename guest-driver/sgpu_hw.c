// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: command ring, event ring setup, interrupts (the command layer).
 *
 * Every ring slot has an owner record (struct sgpu_ring_slot). Completions are
 * processed in ring order from the command interrupt: a synchronous waiter gets
 * the completion copied and is woken, a job collects its results and the job's
 * final FENCE entry signals the job fence (the ring assigns the fence seqno
 * when it writes the job, keeps the job on sdev->inflight and signals it).
 *
 * A lost command interrupt must not leave a job's fence pending for ever: while
 * jobs are in flight the ring is also processed from a poll every
 * ring_poll_ms (the interrupt stays the fast path; the poll counts what it
 * found in ring_poll_completions), and a job fence's .signaled reads
 * LAST_SEQNO (sgpu_ring_job_completed()).
 *
 * Layer: the bottom. This file calls nothing of the driver above it: the
 * event interrupt only queues sdev->evt_work, whose function belongs to
 * sgpu_event.c, and a job fence's release reaches sgpu_job.c through its
 * dma_fence_ops.
 */
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/iopoll.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include <drm/drm_vma_manager.h>

#include "sgpu_drv.h"

#define SGPU_INT_ALL	(SGHW_INT_CMD | SGHW_INT_EVENT | SGHW_INT_ERROR | SGHW_INT_EVT_OVERFLOW)
#define SGPU_RING_POLL_MS	100

const char *sgpu_status_name(u32 status)
{
	const char *name = sghw_status_name(status);

	return name ? name : "?";
}

int sgpu_status_to_errno(u32 status)
{
	switch (status) {
	case SGHW_ST_OK:
		return 0;
	case SGHW_ST_BAD_HANDLE:
	case SGHW_ST_NOT_FOUND:
		return -ENOENT;
	case SGHW_ST_OUT_OF_RANGE:
		return -ERANGE;
	case SGHW_ST_NO_SPACE:
		return -ENOSPC;
	case SGHW_ST_BUSY:
		return -EBUSY;
	case SGHW_ST_TOO_BIG:
		return -E2BIG;
	case SGHW_ST_BAD_OPCODE:
	case SGHW_ST_INVALID:
	case SGHW_ST_NO_BACKING:
		return -EINVAL;
	case SGHW_ST_CANCELLED:
		return -ECANCELED;
	case SGHW_ST_NO_DEVICE:
		return -ENODEV;
	case SGHW_ST_ACCESS_DENIED:
		return -EACCES;
	case SGHW_ST_DMA_ERROR:
	case SGHW_ST_INTERNAL:
	default:
		return -EIO;
	}
}

static u32 sgpu_ring_free(struct sgpu_device *sdev)
{
	return (sdev->cmd_head - sdev->cmd_tail - 1) & (SGPU_CMD_RING_SIZE - 1);
}

/*
 * The job's final FENCE completed (ring_lock held): signal its hardware
 * fence. A job the timeout handler gave up on fails with -ETIMEDOUT whatever
 * the device says (its completion comes from JOB_ABORT).
 */
static void sgpu_ring_signal_job(struct sgpu_device *sdev, struct sgpu_job *job)
{
	spin_lock(&sdev->fence_lock);
	list_del_init(&job->link);
	if (job->hw_fence.seqno > sdev->fence_done)
		sdev->fence_done = job->hw_fence.seqno;
	/*
	 * .signaled may have signalled it already (every entry OK in LAST_SEQNO);
	 * a timeout that raced with that found a job that had completed.
	 */
	if (!test_bit(DMA_FENCE_FLAG_SIGNALED_BIT, &job->hw_fence.flags)) {
		if (job->timed_out)
			dma_fence_set_error(&job->hw_fence, -ETIMEDOUT);
		else if (job->status)
			dma_fence_set_error(&job->hw_fence, sgpu_status_to_errno(job->status));
		dma_fence_signal_locked(&job->hw_fence);
	}
	spin_unlock(&sdev->fence_lock);
	atomic64_inc(&sdev->jobs_completed);
	dma_fence_put(&job->hw_fence);	/* the ring's reference */
}

/* Process completed entries; ring_lock held. */
static void sgpu_ring_process_locked(struct sgpu_device *sdev, u32 hw_head, u32 cancel)
{
	bool progress = false;

	while (sdev->cmd_head != hw_head) {
		u32 i = sdev->cmd_head;
		struct sghw_cmd *c = &sdev->cmd_ring[i];
		struct sgpu_ring_slot *s = &sdev->slots[i];
		u32 status = cancel ? cancel : le32_to_cpu(READ_ONCE(c->status));

		if (status != SGHW_ST_OK)
			atomic64_inc(&sdev->cmd_errors);
		if (s->waiter) {
			struct sgpu_waiter *w = s->waiter;

			w->status = status;
			w->out_handle = le32_to_cpu(c->out_handle);
			w->result = le64_to_cpu(c->result);
			memcpy(w->uuid, c->uuid, sizeof(w->uuid));
			if (w->aux)
				memcpy(w->aux, sdev->aux + (size_t)i * SGPU_AUX_SIZE,
				       SGPU_AUX_SIZE);
			s->waiter = NULL;
			complete(&w->done);
		}
		if (s->job) {
			struct sgpu_job *job = s->job;

			if (status != SGHW_ST_OK && !job->status)
				job->status = status;
			if (s->res_idx >= 0)
				job->results[s->res_idx] = le64_to_cpu(c->result);
			if (s->last)
				sgpu_ring_signal_job(sdev, job);
			s->job = NULL;
		}
		sdev->cmd_head = (i + 1) & (SGPU_CMD_RING_SIZE - 1);
		progress = true;
	}
	if (progress)
		wake_up_all(&sdev->ring_wq);
}

/* Complete what the device completed: from the interrupt, the poll, waiters. */
void sgpu_ring_process(struct sgpu_device *sdev)
{
	unsigned long flags;
	bool cookie;
	u32 hw_head;

	/* job fences signal here: nothing in it may wait for a fence or allocate */
	cookie = dma_fence_begin_signalling();
	spin_lock_irqsave(&sdev->ring_lock, flags);
	if (!sdev->dead) {
		hw_head = sgpu_rd(sdev, SGHW_REG_CMD_HEAD) & (SGPU_CMD_RING_SIZE - 1);
		dma_rmb();
		sgpu_ring_process_locked(sdev, hw_head, 0);
	}
	spin_unlock_irqrestore(&sdev->ring_lock, flags);
	dma_fence_end_signalling(cookie);
}

/* LAST_SEQNO, read HI, LO, HI so that a carry between the halves is not torn. */
static u64 sgpu_last_seqno(struct sgpu_device *sdev)
{
	u32 hi, lo, again;
	int tries = 3;

	do {
		hi = sgpu_rd(sdev, SGHW_REG_LAST_SEQNO_HI);
		lo = sgpu_rd(sdev, SGHW_REG_LAST_SEQNO_LO);
		again = sgpu_rd(sdev, SGHW_REG_LAST_SEQNO_HI);
	} while (hi != again && --tries);
	return hi == again ? (u64)hi << 32 | lo : 0;
}

/*
 * The job fence's .signaled (as xe reads its seqno map): whether the device
 * completed every entry of @job without an error, from LAST_SEQNO and the
 * entries' completions, so a lost interrupt does not hide a completion from
 * dma_fence_is_signaled(). Lockless: it may run under the fence lock, which
 * ring processing takes. A failed, aborted or timed-out job is false here and
 * left to ring processing, which signals it with its error; results are
 * collected there too (sgpu_ring_collect_job()).
 */
bool sgpu_ring_job_completed(struct sgpu_device *sdev, struct sgpu_job *job)
{
	u64 last = smp_load_acquire(&job->ring_seqno);	/* after ring_first */
	u32 first = READ_ONCE(job->ring_first);
	u32 n = job->nhw, k;

	if (!last || READ_ONCE(sdev->dead) || READ_ONCE(job->timed_out))
		return false;
	if (sgpu_last_seqno(sdev) < last)
		return false;
	/* the completion writes precede LAST_SEQNO */
	dma_rmb();
	for (k = 0; k < n; k++) {
		const struct sghw_cmd *c = &sdev->cmd_ring[(first + k) & (SGPU_CMD_RING_SIZE - 1)];
		u64 seqno = last - n + 1 + k;
		u32 status;

		if (le64_to_cpu(READ_ONCE(c->seqno)) != seqno)
			continue;	/* processed and reused: job->status has it */
		status = le32_to_cpu(READ_ONCE(c->status));
		if (status != SGHW_ST_OK)
			return false;
	}
	/* an entry processed before its slot was reused recorded its failure here */
	smp_rmb();
	if (READ_ONCE(job->status))
		return false;
	atomic64_inc(&sdev->fence_seqno_signals);
	return true;
}

/*
 * The job's fence has signalled (maybe through .signaled, before the ring was
 * processed): process the ring until the job's entries are, so its status and
 * results are collected. Process context.
 */
int sgpu_ring_collect_job(struct sgpu_device *sdev, struct sgpu_job *job)
{
	bool collected;

	collected = wait_event_timeout(sdev->ring_wq,
				       ({ sgpu_ring_process(sdev);
					  list_empty_careful(&job->link) ||
					  READ_ONCE(sdev->dead); }),
				       SGPU_CMD_TIMEOUT);
	return collected ? 0 : -ETIMEDOUT;
}

static void sgpu_ring_poll_arm(struct sgpu_device *sdev)
{
	unsigned int ms = READ_ONCE(sdev->ring_poll_ms);

	if (ms)
		schedule_delayed_work(&sdev->ring_poll, msecs_to_jiffies(ms));
}

/* Set the poll's period; 0 stops it (a poll already queued is cancelled). */
int sgpu_ring_set_poll(struct sgpu_device *sdev, unsigned int ms)
{
	WRITE_ONCE(sdev->ring_poll_ms, ms);
	if (!ms)
		cancel_delayed_work_sync(&sdev->ring_poll);
	else if (!sgpu_ring_jobs_idle(sdev))
		sgpu_ring_poll_arm(sdev);
	return 0;
}

/* No job is on the ring (written and not yet completed). */
bool sgpu_ring_jobs_idle(struct sgpu_device *sdev)
{
	unsigned long flags;
	bool idle;

	spin_lock_irqsave(&sdev->fence_lock, flags);
	idle = list_empty(&sdev->inflight);
	spin_unlock_irqrestore(&sdev->fence_lock, flags);
	return idle;
}

static void sgpu_ring_poll_work(struct work_struct *work)
{
	struct sgpu_device *sdev = container_of(to_delayed_work(work), struct sgpu_device,
						ring_poll);
	bool busy;
	u32 head;

	head = READ_ONCE(sdev->cmd_head);
	sgpu_ring_process(sdev);
	if (READ_ONCE(sdev->cmd_head) != head)
		atomic64_inc(&sdev->ring_poll_completions);
	busy = !sgpu_ring_jobs_idle(sdev);
	if (busy && !READ_ONCE(sdev->dead))
		sgpu_ring_poll_arm(sdev);
}

/*
 * Reserve @n slots, fill them and ring the doorbell. Slot owners are set by
 * @setup under the ring lock. Sleeps while the ring is full.
 */
static int sgpu_ring_write(struct sgpu_device *sdev, struct sghw_cmd *cmds, u32 n,
			   struct sgpu_waiter *w, s16 *res_idx, struct sgpu_job *job)
{
	unsigned long flags;
	u32 k;
	int ret;

	if (WARN_ON(n == 0 || n >= SGPU_CMD_RING_SIZE))
		return -EINVAL;
again:
	spin_lock_irqsave(&sdev->ring_lock, flags);
	if (sdev->dead) {
		spin_unlock_irqrestore(&sdev->ring_lock, flags);
		return -ENODEV;
	}
	if (sgpu_ring_free(sdev) < n) {
		spin_unlock_irqrestore(&sdev->ring_lock, flags);
		ret = wait_event_timeout(sdev->ring_wq,
					 READ_ONCE(sdev->dead) ||
					 ({ sgpu_ring_process(sdev);
					    sgpu_ring_free(sdev) >= n; }),
					 SGPU_CMD_TIMEOUT);
		if (!ret) {
			drm_err(&sdev->drm, "command ring stuck (head %u tail %u)\n",
				sdev->cmd_head, sdev->cmd_tail);
			return -ETIMEDOUT;
		}
		goto again;
	}
	if (job) {
		job->hw_fence.seqno = ++sdev->fence_seqno;
		WRITE_ONCE(job->ring_first, sdev->cmd_tail);
		/* .signaled reads ring_first after a non-zero ring_seqno */
		smp_store_release(&job->ring_seqno, sdev->cmd_seqno + n);
		spin_lock(&sdev->fence_lock);
		list_add_tail(&job->link, &sdev->inflight);
		spin_unlock(&sdev->fence_lock);
	}
	for (k = 0; k < n; k++) {
		u32 i = (sdev->cmd_tail + k) & (SGPU_CMD_RING_SIZE - 1);
		struct sghw_cmd *c = &sdev->cmd_ring[i];
		struct sgpu_ring_slot *s = &sdev->slots[i];

		*c = cmds[k];
		c->seqno = cpu_to_le64(++sdev->cmd_seqno);
		c->status = cpu_to_le32(SGHW_ST_PENDING);
		c->out_handle = 0;
		c->result = 0;
		s->waiter = NULL;
		s->job = job;
		s->res_idx = res_idx ? res_idx[k] : -1;
		s->last = job && k == n - 1;
		if (w && k == n - 1) {
			w->slot = i;
			s->waiter = w;
			c->flags |= cpu_to_le16(SGHW_CMD_F_IRQ);
			/* BO_QUERY writes to this slot's aux buffer */
			if (c->opcode == cpu_to_le16(SGHW_OP_BO_QUERY))
				c->off0 = cpu_to_le64(sdev->aux_dma + (u64)i * SGPU_AUX_SIZE);
			/* an argument in guest memory (BROKER_*: the peer name) */
			if (w->aux_in) {
				memcpy(sdev->aux + (size_t)i * SGPU_AUX_SIZE, w->aux_in,
				       SGPU_AUX_SIZE);
				c->off0 = cpu_to_le64(sdev->aux_dma + (u64)i * SGPU_AUX_SIZE);
			}
		}
	}
	sdev->cmd_tail = (sdev->cmd_tail + n) & (SGPU_CMD_RING_SIZE - 1);
	atomic64_add(n, &sdev->cmds);
	/* entries must be visible before the tail moves */
	dma_wmb();
	sgpu_wr(sdev, SGHW_REG_CMD_TAIL, sdev->cmd_tail);
	sgpu_wr(sdev, SGHW_REG_DOORBELL, 1);
	spin_unlock_irqrestore(&sdev->ring_lock, flags);
	if (job)
		sgpu_ring_poll_arm(sdev);
	return 0;
}

int sgpu_cmd_sync(struct sgpu_device *sdev, struct sghw_cmd *cmd, struct sgpu_waiter *w)
{
	unsigned long flags, left;
	int ret;

	init_completion(&w->done);
	w->status = SGHW_ST_PENDING;
	ret = sgpu_ring_write(sdev, cmd, 1, w, NULL, NULL);
	if (ret)
		return ret;
	/*
	 * Not interruptible: callers hold TTM state mid-move. The polling
	 * fallback covers a lost interrupt.
	 */
	left = wait_for_completion_timeout(&w->done, HZ / 10);
	while (!left) {
		sgpu_ring_process(sdev);
		left = wait_for_completion_timeout(&w->done, SGPU_CMD_TIMEOUT);
		if (left)
			break;
		spin_lock_irqsave(&sdev->ring_lock, flags);
		if (sdev->slots[w->slot].waiter == w) {
			sdev->slots[w->slot].waiter = NULL;
			spin_unlock_irqrestore(&sdev->ring_lock, flags);
			drm_err(&sdev->drm, "command op %#x timed out\n", le16_to_cpu(cmd->opcode));
			return -ETIMEDOUT;
		}
		spin_unlock_irqrestore(&sdev->ring_lock, flags);
		wait_for_completion(&w->done);
		break;
	}
	if (w->status != SGHW_ST_OK) {
		drm_dbg_driver(&sdev->drm, "op %#x handle %u: %s\n", le16_to_cpu(cmd->opcode),
			       le32_to_cpu(cmd->handle), sgpu_status_name(w->status));
		return sgpu_status_to_errno(w->status);
	}
	return 0;
}

int sgpu_cmd_async(struct sgpu_device *sdev, struct sghw_cmd *cmd)
{
	return sgpu_ring_write(sdev, cmd, 1, NULL, NULL, NULL);
}

/* Write a job's ring image; the ring holds a reference to its hardware fence. */
int sgpu_ring_submit_job(struct sgpu_device *sdev, struct sgpu_job *job)
{
	int ret;

	if (WARN_ON(!job->nhw))
		return -EINVAL;
	/* the final entry is the FENCE that signals the job */
	job->hw[job->nhw - 1].opcode = cpu_to_le16(SGHW_OP_FENCE);
	job->res_idx[job->nhw - 1] = -1;
	dma_fence_get(&job->hw_fence);
	ret = sgpu_ring_write(sdev, job->hw, job->nhw, NULL, job->res_idx, job);
	if (ret)
		dma_fence_put(&job->hw_fence);
	return ret;
}

/* A ring entry from CPU-order values (the ring is little-endian, contract 1). */
void sgpu_cmd_fill(struct sghw_cmd *c, u16 op, u32 handle, u32 handle2, u32 arg,
		   u64 off0, u64 off1, u64 len)
{
	memset(c, 0, sizeof(*c));
	c->opcode = cpu_to_le16(op);
	c->handle = cpu_to_le32(handle);
	c->handle2 = cpu_to_le32(handle2);
	c->arg = cpu_to_le32(arg);
	c->off0 = cpu_to_le64(off0);
	c->off1 = cpu_to_le64(off1);
	c->len = cpu_to_le64(len);
}

int sgpu_hw_simple(struct sgpu_device *sdev, u16 op, u32 handle, u32 arg,
		   u64 off0, u64 off1, u64 len, u64 *result)
{
	struct sgpu_waiter w = {};
	struct sghw_cmd cmd;
	int ret;

	sgpu_cmd_fill(&cmd, op, handle, 0, arg, off0, off1, len);
	ret = sgpu_cmd_sync(sdev, &cmd, &w);
	if (result)
		*result = w.result;
	return ret;
}

/*
 * BO_CREATE. DEVICE placements carry NO_EVICT (contract 1.1): TTM is the only
 * evictor, the device must not move other BOs behind its back.
 */
int sgpu_hw_bo_create(struct sgpu_device *sdev, u64 size, u32 place, u32 *handle, u64 *offset)
{
	struct sgpu_waiter w = {};
	struct sghw_cmd cmd;
	int ret;

	sgpu_cmd_fill(&cmd, SGHW_OP_BO_CREATE, 0, 0, place, 0, 0, size);
	if (place == SGHW_PLACEMENT_DEVICE)
		cmd.flags = cpu_to_le16(SGHW_CMD_F_NO_EVICT);
	ret = sgpu_cmd_sync(sdev, &cmd, &w);
	if (ret)
		return ret;
	*handle = w.out_handle;
	if (offset)
		*offset = w.result;
	return 0;
}

void sgpu_hw_bo_destroy(struct sgpu_device *sdev, u32 handle)
{
	struct sghw_cmd cmd;

	if (!handle)
		return;
	sgpu_cmd_fill(&cmd, SGHW_OP_BO_DESTROY, handle, 0, 0, 0, 0, 0);
	sgpu_cmd_async(sdev, &cmd);
}

/*
 * BO_MOVE of a local BO; @offset gets the new VRAM offset or ~0. A move to the
 * current placement completes OK with the current offset and produces no
 * BO_MOVED event and no generation bump (contract 1.1): the completion is all
 * there is, nothing may wait for an event. SGHW_CMD_F_NO_EVICT is only valid
 * for moves to DEVICE.
 */
int sgpu_hw_bo_move(struct sgpu_device *sdev, u32 handle, u32 place, u16 flags, u64 *offset)
{
	struct sgpu_waiter w = {};
	struct sghw_cmd cmd;
	int ret;

	if (WARN_ON((flags & SGHW_CMD_F_NO_EVICT) && place != SGHW_PLACEMENT_DEVICE))
		return -EINVAL;
	sgpu_cmd_fill(&cmd, SGHW_OP_BO_MOVE, handle, 0, place, 0, 0, 0);
	cmd.flags = cpu_to_le16(flags);
	ret = sgpu_cmd_sync(sdev, &cmd, &w);
	if (ret)
		return ret;
	if (offset)
		*offset = w.result;
	return 0;
}

/* BO_QUERY; @info is the device's record as it is (little-endian fields). */
/*
 * MAP_IMPORT of import @handle (@size bytes) at @win, a range of the import
 * window allocated at the first call and kept until the owner frees it;
 * *@bar_off = the BAR2 offset of the mapping.
 */
int sgpu_hw_map_import(struct sgpu_device *sdev, struct drm_mm_node *win, u64 size,
		       u32 handle, u64 *bar_off)
{
	int ret;

	if (!(sdev->features & SGHW_FEAT_IMPORT_WINDOW))
		return -EOPNOTSUPP;
	if (!drm_mm_node_allocated(win)) {
		mutex_lock(&sdev->win_lock);
		ret = drm_mm_insert_node(&sdev->win_mm, win, size >> PAGE_SHIFT);
		mutex_unlock(&sdev->win_lock);
		if (ret)
			return ret;
	}
	return sgpu_hw_simple(sdev, SGHW_OP_MAP_IMPORT, handle, 0, win->start << PAGE_SHIFT,
			      0, 0, bar_off);
}

/* A CPU fault on an import mapped at BAR2 offset @bar_off: its page. */
vm_fault_t sgpu_win_insert_pfn(struct vm_fault *vmf, u64 bar_off)
{
	struct vm_area_struct *vma = vmf->vma;
	struct drm_gem_object *obj = vma->vm_private_data;
	struct sgpu_device *sdev = to_sgpu(obj->dev);
	unsigned long pgoff;

	pgoff = ((vmf->address - vma->vm_start) >> PAGE_SHIFT) +
		vma->vm_pgoff - drm_vma_node_start(&obj->vma_node);
	if (pgoff >= obj->size >> PAGE_SHIFT)
		return VM_FAULT_SIGBUS;
	return vmf_insert_pfn(vma, vmf->address,
			      ((sdev->bar2_base + bar_off) >> PAGE_SHIFT) + pgoff);
}

int sgpu_hw_bo_query(struct sgpu_device *sdev, u32 handle, struct sghw_bo_info *info)
{
	u8 buf[SGPU_AUX_SIZE] __aligned(8);
	struct sgpu_waiter w = { .aux = buf };
	struct sghw_cmd cmd;
	int ret;

	BUILD_BUG_ON(sizeof(*info) > SGPU_AUX_SIZE);
	sgpu_cmd_fill(&cmd, SGHW_OP_BO_QUERY, handle, 0, 0, 0, 0, 0);
	ret = sgpu_cmd_sync(sdev, &cmd, &w);
	if (ret)
		return ret;
	memcpy(info, buf, sizeof(*info));
	return 0;
}

struct sgpu_ents {
	struct sghw_mem_entry *e;
	unsigned long n;
};

static int sgpu_ents_add(struct sgpu_ents *ents, u64 addr, u32 len)
{
	struct sghw_mem_entry *last = ents->n ? &ents->e[ents->n - 1] : NULL;

	if (last && le64_to_cpu(last->addr) + le32_to_cpu(last->length) == addr &&
	    (u64)le32_to_cpu(last->length) + len <= U32_MAX) {
		le32_add_cpu(&last->length, len);
		return 0;
	}
	if (ents->n >= SGHW_MAX_MEM_ENTRIES)
		return -E2BIG;
	ents->e[ents->n].addr = cpu_to_le64(addr);
	ents->e[ents->n].length = cpu_to_le32(len);
	ents->e[ents->n].padding = 0;
	ents->n++;
	return 0;
}

/*
 * ATTACH_BACKING from either a DMA-mapped sg table or an array of page DMA
 * addresses. Contiguous ranges are merged.
 */
int sgpu_hw_attach_backing(struct sgpu_device *sdev, u32 handle, struct sg_table *sgt,
			   dma_addr_t *addrs, unsigned long npages, u64 *total)
{
	struct sgpu_ents ents = {};
	struct scatterlist *sg;
	dma_addr_t ents_dma;
	unsigned long max, i;
	size_t bytes;
	int ret = 0;

	max = sgt ? sgt->nents : npages;
	if (!max)
		return -EINVAL;
	max = min_t(unsigned long, max, SGHW_MAX_MEM_ENTRIES);
	bytes = max * sizeof(*ents.e);
	ents.e = dma_alloc_coherent(&sdev->pdev->dev, bytes, &ents_dma, GFP_KERNEL);
	if (!ents.e)
		return -ENOMEM;

	if (sgt) {
		for_each_sgtable_dma_sg(sgt, sg, i) {
			ret = sgpu_ents_add(&ents, sg_dma_address(sg), sg_dma_len(sg));
			if (ret)
				goto out;
		}
	} else {
		for (i = 0; i < npages; i++) {
			ret = sgpu_ents_add(&ents, addrs[i], PAGE_SIZE);
			if (ret)
				goto out;
		}
	}
	ret = sgpu_hw_simple(sdev, SGHW_OP_ATTACH_BACKING, handle, ents.n, ents_dma, 0, 0,
			     total);
	if (ret == -ETIMEDOUT) {
		/*
		 * The command is still in the ring and the device will read
		 * the list when it gets there: freeing it now would let the
		 * device attach whatever reuses the memory as the BO's
		 * backing. Leak it (a ring stuck for SGPU_CMD_TIMEOUT is rare).
		 */
		dev_warn_ratelimited(sdev->drm.dev,
				     "leaking %zu bytes of a timed-out ATTACH_BACKING\n", bytes);
		return ret;
	}
out:
	dma_free_coherent(&sdev->pdev->dev, bytes, ents.e, ents_dma);
	return ret;
}

/* ------------------------------------------------------------------ interrupts */

static irqreturn_t sgpu_irq_cmd(int irq, void *arg)
{
	struct sgpu_device *sdev = arg;
	u32 st = sgpu_rd(sdev, SGHW_REG_INT_STATUS) & (SGHW_INT_CMD | SGHW_INT_ERROR);

	if (!st && !sdev->msix)
		return IRQ_NONE;
	if (st)
		sgpu_wr(sdev, SGHW_REG_INT_ACK, st);
	atomic64_inc(&sdev->irq_cmd);
	sgpu_ring_process(sdev);
	return IRQ_HANDLED;
}

static irqreturn_t sgpu_irq_evt(int irq, void *arg)
{
	struct sgpu_device *sdev = arg;
	u32 st = sgpu_rd(sdev, SGHW_REG_INT_STATUS) & (SGHW_INT_EVENT | SGHW_INT_EVT_OVERFLOW);

	if (!st && !sdev->msix)
		return IRQ_NONE;
	if (st)
		sgpu_wr(sdev, SGHW_REG_INT_ACK, st);
	if (st & SGHW_INT_EVT_OVERFLOW) {
		atomic64_inc(&sdev->evt_overflows);
		atomic_set(&sdev->evt_overflow, 1);
	}
	atomic64_inc(&sdev->irq_evt);
	queue_work(system_unbound_wq, &sdev->evt_work);
	return IRQ_HANDLED;
}

static irqreturn_t sgpu_irq_legacy(int irq, void *arg)
{
	irqreturn_t r1, r2;

	r1 = sgpu_irq_cmd(irq, arg);
	r2 = sgpu_irq_evt(irq, arg);
	return (r1 == IRQ_HANDLED || r2 == IRQ_HANDLED) ? IRQ_HANDLED : IRQ_NONE;
}

static int sgpu_irq_init(struct sgpu_device *sdev)
{
	struct pci_dev *pdev = sdev->pdev;
	int nvec, ret;

	nvec = pci_alloc_irq_vectors(pdev, SGHW_MSIX_VECTORS, SGHW_MSIX_VECTORS,
				     PCI_IRQ_MSIX);
	if (nvec == SGHW_MSIX_VECTORS) {
		sdev->msix = true;
		ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, SGHW_MSIX_VEC_CMD),
				       sgpu_irq_cmd, 0, "sharegpu-cmd", sdev);
		if (ret)
			return ret;
		return devm_request_irq(&pdev->dev,
					pci_irq_vector(pdev, SGHW_MSIX_VEC_EVENT),
					sgpu_irq_evt, 0, "sharegpu-evt", sdev);
	}
	drm_info(&sdev->drm, "MSI-X unavailable (%d), using INTx\n", nvec);
	nvec = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_INTX | PCI_IRQ_MSI);
	if (nvec < 0)
		return nvec;
	return devm_request_irq(&pdev->dev, pci_irq_vector(pdev, 0), sgpu_irq_legacy,
				IRQF_SHARED, "sharegpu", sdev);
}

static int sgpu_hw_reset(struct sgpu_device *sdev)
{
	u32 st;

	sgpu_wr(sdev, SGHW_REG_RESET, SGHW_RESET_MAGIC);
	return readl_poll_timeout(sdev->mmio + SGHW_REG_STATUS, st,
				  st & SGHW_STATUS_READY, 100, 1000000);
}

int sgpu_hw_init(struct sgpu_device *sdev)
{
	struct device *dev = &sdev->pdev->dev;
	int ret;

	spin_lock_init(&sdev->ring_lock);
	spin_lock_init(&sdev->fence_lock);
	init_waitqueue_head(&sdev->ring_wq);
	INIT_DELAYED_WORK(&sdev->ring_poll, sgpu_ring_poll_work);
	sdev->ring_poll_ms = SGPU_RING_POLL_MS;
	INIT_LIST_HEAD(&sdev->inflight);
	sdev->fence_context = dma_fence_context_alloc(1);

	ret = sgpu_hw_reset(sdev);
	if (ret) {
		drm_err(&sdev->drm, "device not ready after reset\n");
		return ret;
	}

	sdev->cmd_ring = dmam_alloc_coherent(dev, SGPU_CMD_RING_SIZE * sizeof(struct sghw_cmd),
					     &sdev->cmd_dma, GFP_KERNEL);
	sdev->aux = dmam_alloc_coherent(dev, SGPU_CMD_RING_SIZE * SGPU_AUX_SIZE,
					&sdev->aux_dma, GFP_KERNEL);
	sdev->evt_ring = dmam_alloc_coherent(dev,
					     SGPU_EVT_RING_SIZE * sizeof(struct sghw_event),
					     &sdev->evt_dma, GFP_KERNEL);
	sdev->slots = devm_kcalloc(dev, SGPU_CMD_RING_SIZE, sizeof(*sdev->slots), GFP_KERNEL);
	if (!sdev->cmd_ring || !sdev->aux || !sdev->evt_ring || !sdev->slots)
		return -ENOMEM;

	sgpu_wr(sdev, SGHW_REG_CMD_BASE_LO, lower_32_bits(sdev->cmd_dma));
	sgpu_wr(sdev, SGHW_REG_CMD_BASE_HI, upper_32_bits(sdev->cmd_dma));
	sgpu_wr(sdev, SGHW_REG_CMD_SIZE, SGPU_CMD_RING_SIZE);
	sgpu_wr(sdev, SGHW_REG_EVT_BASE_LO, lower_32_bits(sdev->evt_dma));
	sgpu_wr(sdev, SGHW_REG_EVT_BASE_HI, upper_32_bits(sdev->evt_dma));
	sgpu_wr(sdev, SGHW_REG_EVT_SIZE, SGPU_EVT_RING_SIZE);
	if (sgpu_rd(sdev, SGHW_REG_CMD_SIZE) != SGPU_CMD_RING_SIZE ||
	    sgpu_rd(sdev, SGHW_REG_EVT_SIZE) != SGPU_EVT_RING_SIZE) {
		drm_err(&sdev->drm, "ring setup rejected\n");
		return -EIO;
	}
	sdev->cmd_head = 0;
	sdev->cmd_tail = 0;
	sdev->evt_head = 0;

	ret = sgpu_irq_init(sdev);
	if (ret)
		return ret;
	sgpu_wr(sdev, SGHW_REG_INT_ACK, SGPU_INT_ALL);
	sgpu_wr(sdev, SGHW_REG_INT_MASK, SGPU_INT_ALL);

	/* prove the ring and the interrupt path */
	ret = sgpu_hw_simple(sdev, SGHW_OP_NOP, 0, 0, 0, 0, 0, NULL);
	if (ret)
		drm_err(&sdev->drm, "NOP failed: %d\n", ret);
	return ret;
}

/* Stop the device: cancel everything outstanding. Called on remove. */
void sgpu_hw_fini(struct sgpu_device *sdev)
{
	unsigned long flags;

	sgpu_ring_process(sdev);
	sgpu_wr(sdev, SGHW_REG_INT_MASK, 0);
	spin_lock_irqsave(&sdev->ring_lock, flags);
	sgpu_ring_process_locked(sdev, sdev->cmd_tail, SGHW_ST_CANCELLED);
	sdev->dead = true;
	spin_unlock_irqrestore(&sdev->ring_lock, flags);
	wake_up_all(&sdev->ring_wq);
	cancel_delayed_work_sync(&sdev->ring_poll);
	cancel_work_sync(&sdev->evt_work);
	sgpu_hw_reset(sdev);
}
