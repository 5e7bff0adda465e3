// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: the VRAM resource manager (TTM_PL_VRAM).
 *
 * The device is the source of truth for where a BO lives and it allocates
 * VRAM itself. The manager's alloc() therefore issues BO_MOVE to DEVICE and
 * records the returned VRAM offset as the resource start; its usage
 * accounting mirrors the device's, and -ENOSPC makes TTM evict (LRU) before
 * the device would have to.
 *
 * Layer: below the TTM device callbacks (sgpu_ttm.c) and the event handling
 * (sgpu_event.c), which use sgpu_bo_hw_move(); calls only the command layer.
 */
#include <linux/dma-resv.h>
#include <linux/slab.h>

#include <drm/drm_print.h>

#include "sgpu_drv.h"

/* The exported BO is about to move: every dynamic importer drops its mapping (resv held). */
void sgpu_bo_move_notify(struct sgpu_bo *bo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);

	dma_resv_assert_held(bo->tbo.base.resv);
	if (!bo->tbo.base.dma_buf)
		return;
	atomic64_inc(&sdev->move_notifies);
	dma_buf_move_notify(bo->tbo.base.dma_buf);
}

/*
 * Move @bo on the device (resv held). Moves to DEVICE carry NO_EVICT: TTM is
 * the only evictor, so the device answers NO_SPACE (-ENOSPC) instead of
 * evicting other BOs behind TTM's back (their CPU mappings would stay stale
 * until the BO_MOVED event is processed). A move to the placement the device
 * already has (our view may lag an unprocessed BO_MOVED) is a silent no-op
 * that still reports the current offset.
 */
int sgpu_bo_hw_move(struct sgpu_bo *bo, u32 place)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);
	u16 flags = place == SGHW_PLACEMENT_DEVICE ? SGHW_CMD_F_NO_EVICT : 0;
	u64 off = SGHW_INVALID_OFFSET;
	int ret;

	dma_resv_assert_held(bo->tbo.base.resv);
	ret = sgpu_hw_bo_move(sdev, bo->hw_handle, place, flags, &off);
	if (ret)
		return ret;
	bo->hw_place = place;
	bo->hw_offset = place == SGHW_PLACEMENT_DEVICE ? off : SGHW_INVALID_OFFSET;
	return 0;
}

static int sgpu_vram_alloc(struct ttm_resource_manager *man, struct ttm_buffer_object *tbo,
			   const struct ttm_place *place, struct ttm_resource **res)
{
	struct sgpu_vram_mgr *mgr = container_of(man, struct sgpu_vram_mgr, man);
	struct sgpu_device *sdev = bdev_to_sgpu(tbo->bdev);
	struct sgpu_bo *bo = tbo_to_sgpu_bo(tbo);
	struct ttm_resource *r;
	long lret;
	int ret;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;

	if (bo->hw_place != SGHW_PLACEMENT_DEVICE) {
		if (ttm_resource_manager_usage(man) + tbo->base.size > mgr->size) {
			ret = -ENOSPC;
			goto err;
		}
		/* nobody may be using the old storage while the device moves it */
		lret = dma_resv_wait_timeout(tbo->base.resv, DMA_RESV_USAGE_BOOKKEEP, false,
					     MAX_SCHEDULE_TIMEOUT);
		if (lret < 0) {
			ret = lret;
			goto err;
		}
		/* importers let go before the storage is copied (sgpu_ttm_move()) */
		if (tbo->resource)
			sgpu_bo_move_notify(bo);
		/* NO_SPACE / TOO_BIG: -ENOSPC, TTM evicts (LRU) and retries */
		ret = sgpu_bo_hw_move(bo, SGHW_PLACEMENT_DEVICE);
		if (ret == -E2BIG)
			ret = -ENOSPC;
		if (ret == -ENOSPC)
			atomic64_inc(&sdev->vram_no_space);
		if (ret)
			goto err;
	}
	/* else: the device already put it there (revalidation adopts it) */

	ttm_resource_init(tbo, place, r);
	r->start = bo->hw_offset >> PAGE_SHIFT;
	*res = r;
	drm_dbg_driver(&sdev->drm, "bo %u -> vram %#llx\n", bo->hw_handle, bo->hw_offset);
	return 0;
err:
	kfree(r);
	return ret;
}

static void sgpu_vram_free(struct ttm_resource_manager *man, struct ttm_resource *res)
{
	ttm_resource_fini(man, res);
	kfree(res);
}

static bool sgpu_vram_intersects(struct ttm_resource_manager *man, struct ttm_resource *res,
				 const struct ttm_place *place, size_t size)
{
	return true;
}

static bool sgpu_vram_compatible(struct ttm_resource_manager *man, struct ttm_resource *res,
				 const struct ttm_place *place, size_t size)
{
	return true;
}

static void sgpu_vram_debug(struct ttm_resource_manager *man, struct drm_printer *p)
{
	struct sgpu_vram_mgr *mgr = container_of(man, struct sgpu_vram_mgr, man);

	drm_printf(p, "vram: size %llu used %llu\n", mgr->size,
		   ttm_resource_manager_usage(man));
}

static const struct ttm_resource_manager_func sgpu_vram_mgr_func = {
	.alloc = sgpu_vram_alloc,
	.free = sgpu_vram_free,
	.intersects = sgpu_vram_intersects,
	.compatible = sgpu_vram_compatible,
	.debug = sgpu_vram_debug,
};

/* Set up the manager for the device's VRAM (its size read from VRAM_SIZE). */
void sgpu_vram_mgr_init(struct sgpu_device *sdev)
{
	struct ttm_resource_manager *man = &sdev->vram.man;

	sdev->vram.size = sdev->vram_size;
	man->func = &sgpu_vram_mgr_func;
	man->use_tt = false;
	ttm_resource_manager_init(man, &sdev->bdev, sdev->vram_size >> PAGE_SHIFT);
	ttm_set_driver_manager(&sdev->bdev, TTM_PL_VRAM, man);
	ttm_resource_manager_set_used(man, true);
}

/* Evict everything left in VRAM and take the manager down. */
void sgpu_vram_mgr_fini(struct sgpu_device *sdev)
{
	struct ttm_resource_manager *man = &sdev->vram.man;

	ttm_resource_manager_set_used(man, false);
	ttm_resource_manager_evict_all(&sdev->bdev, man);
	ttm_resource_manager_cleanup(man);
	ttm_set_driver_manager(&sdev->bdev, TTM_PL_VRAM, NULL);
}
