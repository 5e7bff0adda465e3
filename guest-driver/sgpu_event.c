// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: device events (docs/hardware.md 7).
 *
 * The event interrupt (sgpu_hw.c) only queues the worker set up here; the
 * worker consumes the event ring and dispatches each event:
 *  - BO_MOVED makes the driver bring TTM in line with the device
 *    (sgpu_bo_revalidate()): the device is the source of truth for where a BO
 *    lives. A move the driver's own command made (SGHW_EVT_F_OWN_COMMAND,
 *    contract 1.2) was recorded from the command's completion: no BO_QUERY;
 *  - BO_INVALIDATED drops an import's mapping (dma-buf move_notify semantics),
 *    also of a remote import (another VM's buffer, sgpu_broker.c);
 *  - BO_REVOKED kills a remote import, or (SGHW_EVT_F_EXPORT) says that a BO's
 *    broker export was lost;
 *  - RESYNC (events were lost) does both for every object (sgpu_resync()).
 *
 * Layer: above BO/GEM objects (sgpu_gem.c), the VRAM manager and PRIME
 * (sgpu_prime.c), whose policy it applies; the command layer never calls it.
 */
#include <linux/dma-resv.h>
#include <linux/workqueue.h>

#include <drm/drm_print.h>

#include "sgpu_drv.h"

/*
 * TTM agrees with what the driver's own commands did to @bo on the device
 * (resv held): in VRAM at the offset the last move reported, or not in VRAM
 * after a move to SYSTEM. Only a TTM move that failed after its device move
 * leaves them apart.
 */
static bool sgpu_bo_own_view_settled(struct sgpu_bo *bo)
{
	struct ttm_resource *res = bo->tbo.resource;
	bool vram = res && res->mem_type == TTM_PL_VRAM;

	if (bo->hw_place != SGHW_PLACEMENT_DEVICE)
		return !vram;
	return vram && res->start == bo->hw_offset >> PAGE_SHIFT;
}

/*
 * Bring TTM's view of @bo in line with the device (after a BO_MOVED event the
 * driver did not ask for: host monitor fault injection or device-side eviction).
 * @own: the event reports a move of the driver's own command (contract 1.2):
 * sgpu_bo_hw_move() recorded its result under the resv, so unless TTM's view
 * disagrees with that record there is nothing to ask the device.
 */
static int sgpu_bo_revalidate(struct sgpu_bo *bo, bool own)
{
	struct ttm_buffer_object *tbo = &bo->tbo;
	struct sgpu_device *sdev = bdev_to_sgpu(tbo->bdev);
	struct sghw_bo_info info;
	u64 vram_offset;
	int mem, ret = 0;

	dma_resv_lock(tbo->base.resv, NULL);
	if (own && sgpu_bo_own_view_settled(bo)) {
		atomic64_inc(&sdev->evt_own_moves);
		goto out;
	}
	ret = sgpu_hw_bo_query(sdev, bo->hw_handle, &info);
	if (ret)
		goto out;
	mem = tbo->resource ? tbo->resource->mem_type : -1;
	vram_offset = le64_to_cpu(info.vram_offset);

	if (le32_to_cpu(info.placement) == SGHW_PLACEMENT_DEVICE) {
		if (mem == TTM_PL_VRAM && vram_offset == bo->hw_offset)
			goto out;	/* our own move */
		atomic64_inc(&sdev->unexpected_moves);
		drm_dbg_driver(&sdev->drm, "bo %u moved by the device to vram %#llx\n",
			       bo->hw_handle, vram_offset);
		bo->hw_place = SGHW_PLACEMENT_DEVICE;
		bo->hw_offset = vram_offset;
		if (mem == TTM_PL_VRAM) {
			ttm_bo_unmap_virtual(tbo);
			tbo->resource->start = vram_offset >> PAGE_SHIFT;
			if (tbo->base.dma_buf)
				dma_buf_move_notify(tbo->base.dma_buf);
			goto out;
		}
		/* adopt: the VRAM manager records the device's offset */
		ret = sgpu_bo_validate_domain(bo, SHAREGPU_DOMAIN_VRAM, false);
		if (ret) {
			/* TTM cannot account it: put it back where TTM has it */
			ret = sgpu_bo_hw_move(bo, SGHW_PLACEMENT_SYSTEM);
		}
	} else {
		if (mem != TTM_PL_VRAM)
			goto out;
		atomic64_inc(&sdev->unexpected_moves);
		drm_dbg_driver(&sdev->drm, "bo %u evicted by the device\n", bo->hw_handle);
		bo->hw_place = SGHW_PLACEMENT_SYSTEM;
		bo->hw_offset = SGHW_INVALID_OFFSET;
		ttm_bo_unmap_virtual(tbo);
		if (tbo->pin_count) {
			drm_warn(&sdev->drm, "pinned bo %u moved by the device\n", bo->hw_handle);
			goto out;
		}
		ret = sgpu_bo_validate_domain(bo, SHAREGPU_DOMAIN_SYSTEM, false);
	}
out:
	dma_resv_unlock(tbo->base.resv);
	return ret;
}

/* An import's storage moved (or may have): drop its mapping. */
static void sgpu_event_invalidate_import(struct drm_gem_object *obj)
{
	dma_resv_lock(obj->resv, NULL);
	if (sgpu_is_remote(obj))
		sgpu_remote_invalidate(to_sgpu_remote(obj));
	else
		sgpu_import_invalidate(to_sgpu_import(obj));
	dma_resv_unlock(obj->resv);
}

static void sgpu_event_revoked(struct drm_gem_object *obj, const struct sghw_event *ev)
{
	if (le32_to_cpu(ev->flags) & SGHW_EVT_F_EXPORT) {
		if (sgpu_is_bo(obj))
			sgpu_bo_broker_lost(to_sgpu_bo(obj));
		return;
	}
	if (!sgpu_is_remote(obj))
		return;
	dma_resv_lock(obj->resv, NULL);
	sgpu_remote_revoke(to_sgpu_remote(obj), le32_to_cpu(ev->placement));
	dma_resv_unlock(obj->resv);
}

static void sgpu_handle_event(struct sgpu_device *sdev, const struct sghw_event *ev)
{
	u32 type = le32_to_cpu(ev->type), handle = le32_to_cpu(ev->handle);
	struct drm_gem_object *obj;

	xa_lock(&sdev->handles);
	obj = xa_load(&sdev->handles, handle);
	if (obj && !kref_get_unless_zero(&obj->refcount))
		obj = NULL;
	xa_unlock(&sdev->handles);

	switch (type) {
	case SGHW_EVT_BO_MOVED:
		atomic64_inc(&sdev->evt_moved);
		if (obj && sgpu_is_bo(obj))
			sgpu_bo_revalidate(to_sgpu_bo(obj), le32_to_cpu(ev->flags) &
					   SGHW_EVT_F_OWN_COMMAND);
		break;
	case SGHW_EVT_BO_INVALIDATED:
		atomic64_inc(&sdev->evt_invalidated);
		if (obj && (sgpu_is_import(obj) || sgpu_is_remote(obj)))
			sgpu_event_invalidate_import(obj);
		break;
	case SGHW_EVT_BO_REVOKED:
		atomic64_inc(&sdev->evt_revoked);
		if (obj)
			sgpu_event_revoked(obj, ev);
		break;
	case SGHW_EVT_ERROR:
		atomic64_inc(&sdev->evt_error);
		drm_dbg_driver(&sdev->drm, "device error: ring index %u status %s\n",
			       handle, sgpu_status_name(le32_to_cpu(ev->placement)));
		break;
	case SGHW_EVT_RESYNC:
		drm_dbg_driver(&sdev->drm, "events dropped (%llu): resync\n",
			       le64_to_cpu(ev->generation));
		sgpu_resync(sdev);
		break;
	default:
		drm_dbg_driver(&sdev->drm, "unknown event %u\n", type);
		break;
	}
	if (obj)
		drm_gem_object_put(obj);
}

/*
 * Events were lost (RESYNC): any BO_MOVED / BO_INVALIDATED may be among them.
 * Re-query every native BO and reconcile TTM as for an unexpected BO_MOVED,
 * and drop every import's window mapping as for BO_INVALIDATED (the next
 * access maps it again). Runs from the event worker.
 */
void sgpu_resync(struct sgpu_device *sdev)
{
	struct drm_gem_object *obj;
	unsigned long idx = 0;

	atomic64_inc(&sdev->resyncs);
	for (;;) {
		xa_lock(&sdev->handles);
		obj = xa_find(&sdev->handles, &idx, ULONG_MAX, XA_PRESENT);
		if (obj && !kref_get_unless_zero(&obj->refcount))
			obj = ERR_PTR(-ENOENT);	/* being freed: skip it */
		xa_unlock(&sdev->handles);
		if (!obj || READ_ONCE(sdev->dead))
			break;
		if (!IS_ERR(obj)) {
			if (sgpu_is_bo(obj))
				sgpu_bo_revalidate(to_sgpu_bo(obj), false);
			else if ((sgpu_is_import(obj) && to_sgpu_import(obj)->p2p) ||
				 sgpu_is_remote(obj))
				sgpu_event_invalidate_import(obj);
			drm_gem_object_put(obj);
		}
		if (idx == ULONG_MAX)
			break;
		idx++;
	}
}

static void sgpu_events_work(struct work_struct *work)
{
	struct sgpu_device *sdev = container_of(work, struct sgpu_device, evt_work);
	u32 tail;

	for (;;) {
		if (READ_ONCE(sdev->dead))
			return;
		/*
		 * Events were dropped: the device owes a RESYNC and writes it
		 * when EVT_HEAD is written and the ring has room. Write the
		 * head even if there is nothing to consume, so the RESYNC of a
		 * drop that did not fill the ring (DMA error) is not stuck.
		 */
		if (atomic_xchg(&sdev->evt_overflow, 0))
			sgpu_wr(sdev, SGHW_REG_EVT_HEAD, sdev->evt_head);
		tail = sgpu_rd(sdev, SGHW_REG_EVT_TAIL) & (SGPU_EVT_RING_SIZE - 1);
		if (tail == sdev->evt_head)
			break;
		dma_rmb();
		while (sdev->evt_head != tail) {
			struct sghw_event ev = sdev->evt_ring[sdev->evt_head];

			sdev->evt_head = (sdev->evt_head + 1) & (SGPU_EVT_RING_SIZE - 1);
			sgpu_wr(sdev, SGHW_REG_EVT_HEAD, sdev->evt_head);
			atomic64_inc(&sdev->events);
			sgpu_handle_event(sdev, &ev);
		}
	}
}

/* Before the interrupts are enabled (sgpu_hw_init()). */
void sgpu_event_init(struct sgpu_device *sdev)
{
	INIT_WORK(&sdev->evt_work, sgpu_events_work);
}
