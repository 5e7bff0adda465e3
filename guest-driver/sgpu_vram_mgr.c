// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: the VRAM resource manager (TTM_PL_VRAM).
 *
 * The device is the source of truth for where a BO lives and it allocates
 * VRAM itself, in BO_MOVE to DEVICE. The manager's alloc() only admits a BO
 * by its usage accounting, which mirrors the device's (-ENOSPC makes TTM
 * evict, LRU, before the device would have to); the TTM move callback
 * (sgpu_ttm.c) issues BO_MOVE and records the device's offset as the
 * resource start (sgpu_vram_res_place()).
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

/* A VRAM resource; placed once the device has put the BO at res.start. */
struct sgpu_vram_res {
	struct ttm_resource res;
	bool placed;
};

/* The move callback placed the BO on the device at @offset (resv held). */
void sgpu_vram_res_place(struct ttm_resource *res, u64 offset)
{
	res->start = offset >> PAGE_SHIFT;
	container_of(res, struct sgpu_vram_res, res)->placed = true;
}

/* The device answered NO_SPACE to moving @bo into VRAM (resv held). */
void sgpu_vram_refused(struct sgpu_bo *bo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);

	atomic64_inc(&sdev->vram_no_space);
	bo->vram_refused = true;
	bo->vram_refused_frees = atomic64_read(&sdev->vram.frees);
}

/*
 * Admit @tbo to VRAM by the accounting only: the device move itself is the
 * TTM move callback's (sgpu_ttm.c), where a failure can be unwound, as the
 * copy is in amdgpu and xe. -ENOSPC makes TTM try the next placement or
 * evict (LRU) and retry; so does a refusal by the device since nothing was
 * freed (sgpu_bo_validate()). A BO the device already has in VRAM (moved by
 * the device, revalidation adopts it) gets its offset at once.
 */
static int sgpu_vram_alloc(struct ttm_resource_manager *man, struct ttm_buffer_object *tbo,
			   const struct ttm_place *place, struct ttm_resource **res)
{
	struct sgpu_vram_mgr *mgr = container_of(man, struct sgpu_vram_mgr, man);
	struct sgpu_bo *bo = tbo_to_sgpu_bo(tbo);
	struct sgpu_vram_res *r;

	if (bo->hw_place != SGHW_PLACEMENT_DEVICE) {
		if (ttm_resource_manager_usage(man) + tbo->base.size > mgr->size)
			return -ENOSPC;
		if (bo->vram_refused && bo->vram_refused_frees == atomic64_read(&mgr->frees))
			return -ENOSPC;
	}
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	ttm_resource_init(tbo, place, &r->res);
	if (bo->hw_place == SGHW_PLACEMENT_DEVICE)
		r->res.start = bo->hw_offset >> PAGE_SHIFT;
	*res = &r->res;
	return 0;
}

static void sgpu_vram_free(struct ttm_resource_manager *man, struct ttm_resource *res)
{
	struct sgpu_vram_mgr *mgr = container_of(man, struct sgpu_vram_mgr, man);
	struct sgpu_vram_res *r = container_of(res, struct sgpu_vram_res, res);

	if (r->placed)
		atomic64_inc(&mgr->frees);
	ttm_resource_fini(man, res);
	kfree(r);
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
	atomic64_set(&sdev->vram.frees, 0);
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
