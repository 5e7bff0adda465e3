// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: the TTM device (struct ttm_device_funcs) and a BO's backing pages.
 *
 *  - TTM_PL_VRAM is the VRAM manager of sgpu_vram_mgr.c, which only admits
 *    a BO; the move callback moves it on the device (BO_MOVE to DEVICE) and
 *    unwinds that if a later step fails.
 *  - TTM_PL_TT is the device's SYSTEM placement with the tt pages attached as
 *    backing (ATTACH_BACKING); the move callback issues BO_MOVE to SYSTEM and
 *    TRANSFER_FROM_DEVICE so the pages are current after an eviction.
 *  - The tt pages of all devices are charged to one guest-RAM budget.
 *
 * Layer: above the VRAM manager and the command layer; BO/GEM objects
 * (sgpu_gem.c) and everything above them use it.
 */
#include <linux/dma-resv.h>
#include <linux/slab.h>

#include <drm/drm_managed.h>
#include <drm/drm_print.h>
#include <drm/ttm/ttm_placement.h>
#include <drm/ttm/ttm_range_manager.h>
#include <drm/ttm/ttm_tt.h>

#include "sgpu_drv.h"

/*
 * Guest RAM budget for BO pages, all sharegpu devices together. A tt is
 * charged when it is first populated and uncharged when it is destroyed (the
 * BO is destroyed or moves to VRAM, see sgpu_ttm_move()), so pages TTM
 * swapped out to shmem (still guest RAM: the guest has no swap) stay
 * charged. Over the budget populate fails with -ENOMEM, and the pages
 * are allocated with __GFP_RETRY_MAYFAIL whatever the caller's context says:
 * an allocation the guest cannot satisfy fails instead of waking the OOM
 * killer, which could not find the culprit anyway (TTM pages are in nobody's
 * RSS). The default budget is TTM's own page limit, half of RAM, which
 * amdgpu also uses as its default GTT size (amdgpu_ttm_init()).
 */
static atomic_long_t sgpu_tt_charged = ATOMIC_LONG_INIT(0);

struct sgpu_tt {
	struct ttm_tt tt;
	unsigned long charged;		/* pages charged to the budget */
};

unsigned long sgpu_tt_limit_pages(void)
{
	unsigned long mb = READ_ONCE(sgpu_sys_mem_limit_mb);

	return mb ? mb << (20 - PAGE_SHIFT) : ttm_tt_pages_limit();
}

unsigned long sgpu_tt_pages_all(void)
{
	return atomic_long_read(&sgpu_tt_charged);
}

static struct ttm_tt *sgpu_ttm_tt_create(struct ttm_buffer_object *tbo, u32 page_flags)
{
	struct sgpu_tt *stt;

	stt = kzalloc(sizeof(*stt), GFP_KERNEL);
	if (!stt)
		return NULL;
	if (ttm_sg_tt_init(&stt->tt, tbo, page_flags, ttm_cached)) {
		kfree(stt);
		return NULL;
	}
	return &stt->tt;
}

static void sgpu_tt_uncharge(struct sgpu_device *sdev, struct sgpu_tt *stt)
{
	if (!stt->charged)
		return;
	atomic_long_sub(stt->charged, &sgpu_tt_charged);
	atomic_long_sub(stt->charged, &sdev->tt_pages);
	stt->charged = 0;
}

static int sgpu_ttm_tt_populate(struct ttm_device *bdev, struct ttm_tt *tt,
				struct ttm_operation_ctx *ctx)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bdev);
	struct sgpu_tt *stt = container_of(tt, struct sgpu_tt, tt);
	struct ttm_operation_ctx mayfail = *ctx;
	bool charged_now = false;
	int ret;

	if (!stt->charged) {
		if (atomic_long_add_return(tt->num_pages, &sgpu_tt_charged) >
		    sgpu_tt_limit_pages()) {
			atomic_long_sub(tt->num_pages, &sgpu_tt_charged);
			atomic64_inc(&sdev->limit_mem);
			return -ENOMEM;
		}
		atomic_long_add(tt->num_pages, &sdev->tt_pages);
		stt->charged = tt->num_pages;
		charged_now = true;
	}
	mayfail.gfp_retry_mayfail = true;
	ret = ttm_pool_alloc(&bdev->pool, tt, &mayfail);
	if (ret && charged_now)
		sgpu_tt_uncharge(sdev, stt);
	return ret;
}

static void sgpu_ttm_tt_unpopulate(struct ttm_device *bdev, struct ttm_tt *tt)
{
	ttm_pool_free(&bdev->pool, tt);
}

static void sgpu_ttm_tt_destroy(struct ttm_device *bdev, struct ttm_tt *tt)
{
	struct sgpu_tt *stt = container_of(tt, struct sgpu_tt, tt);

	sgpu_tt_uncharge(bdev_to_sgpu(bdev), stt);
	ttm_tt_fini(tt);
	kfree(stt);
}

static void sgpu_evict_flags(struct ttm_buffer_object *tbo, struct ttm_placement *placement)
{
	static struct ttm_place tt_place = { .mem_type = TTM_PL_TT };
	static struct ttm_place sys_place = { .mem_type = TTM_PL_SYSTEM };

	placement->num_placement = 1;
	if (tbo->resource && tbo->resource->mem_type == TTM_PL_VRAM)
		placement->placement = &tt_place;
	else
		placement->placement = &sys_place;
}

static int sgpu_bo_attach_tt(struct sgpu_bo *bo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);
	struct ttm_tt *tt = bo->tbo.ttm;
	int ret;

	if (!tt || !tt->dma_address || !ttm_tt_is_populated(tt))
		return -EINVAL;
	ret = sgpu_hw_attach_backing(sdev, bo->hw_handle, NULL, tt->dma_address,
				     tt->num_pages, NULL);
	if (!ret)
		bo->backing = true;
	return ret;
}

static void sgpu_bo_detach(struct sgpu_bo *bo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);

	if (!bo->backing)
		return;
	sgpu_hw_simple(sdev, SGHW_OP_DETACH_BACKING, bo->hw_handle, 0, 0, 0, 0, NULL);
	bo->backing = false;
}

/* Copy between the device storage and the attached tt pages (whole BO). */
int sgpu_bo_transfer(struct sgpu_bo *bo, bool to_device)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);
	u64 size = bo->tbo.base.size;
	int ret;

	if (!bo->backing)
		return -EINVAL;
	if (to_device) {
		/* ... and drop lines that would hide the new memory contents */
		ret = sgpu_hw_simple(sdev, SGHW_OP_TRANSFER_TO_DEVICE, bo->hw_handle, 0, 0, 0,
				     size, NULL);
		if (!ret && !sdev->coherent)
			ret = sgpu_hw_simple(sdev, SGHW_OP_CACHE_INVALIDATE, bo->hw_handle, 0,
					     0, 0, size, NULL);
	} else {
		/*
		 * TRANSFER_* access the BO's memory, not the device cache
		 * (contract 1.1, section 5): on a non-coherent device write
		 * dirty job lines back first or the pages miss them.
		 */
		ret = 0;
		if (!sdev->coherent)
			ret = sgpu_hw_simple(sdev, SGHW_OP_CACHE_FLUSH, bo->hw_handle, 0, 0, 0,
					     size, NULL);
		if (!ret)
			ret = sgpu_hw_simple(sdev, SGHW_OP_TRANSFER_FROM_DEVICE, bo->hw_handle,
					     0, 0, 0, size, NULL);
	}
	return ret;
}

/*
 * Into VRAM: the device copy (BO_MOVE to DEVICE, with NO_EVICT: TTM is the
 * only evictor), then the resource gets the device's offset. Importers were
 * notified and the BO is idle. A failure after the device moved is unwound
 * here, so TTM (which then frees @new_mem and keeps the old resource) and
 * the device agree.
 */
static int sgpu_ttm_move_to_vram(struct sgpu_bo *bo, struct ttm_resource *new_mem)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);
	struct ttm_resource *old = bo->tbo.resource;
	bool moved = false;
	int ret, err;

	if (bo->hw_place != SGHW_PLACEMENT_DEVICE) {
		/*
		 * With foreign mappings the tt pages are the truth (see
		 * sgpu_bo_cpu_access()). A dynamic importer may unmap only
		 * after the move (move_notify does not make it unmap, amdgpu
		 * unmaps lazily), and that unmap finds the BO detached: the
		 * pages must reach the device before its copy is moved.
		 */
		if (bo->backing && bo->foreign_maps) {
			ret = sgpu_bo_transfer(bo, true);
			if (ret)
				return ret;
		}
		ret = sgpu_bo_hw_move(bo, SGHW_PLACEMENT_DEVICE);
		if (ret == -E2BIG)
			ret = -ENOSPC;
		if (ret == -ENOSPC)
			sgpu_vram_refused(bo);
		if (ret)
			return ret;
		moved = true;
	}
	if (atomic_add_unless(&sdev->fail_vram_moves, -1, 0)) {
		ret = -EIO;
		goto undo;
	}
	sgpu_vram_res_place(new_mem, bo->hw_offset);
	sgpu_bo_detach(bo);
	drm_dbg_driver(&sdev->drm, "bo %u -> vram %#llx\n", bo->hw_handle, bo->hw_offset);
	return 0;

undo:
	if (!moved)
		return ret;
	/* back to SYSTEM (contents preserved), the tt pages attached again */
	err = sgpu_bo_hw_move(bo, SGHW_PLACEMENT_SYSTEM);
	if (!err && old && old->mem_type == TTM_PL_TT)
		err = sgpu_bo_attach_tt(bo);
	if (err)
		drm_err(&sdev->drm, "bo %u: undoing a failed move into vram: %d\n",
			bo->hw_handle, err);
	return ret;
}

static int sgpu_ttm_move(struct ttm_buffer_object *tbo, bool evict,
			 struct ttm_operation_ctx *ctx, struct ttm_resource *new_mem,
			 struct ttm_place *hop)
{
	struct sgpu_device *sdev = bdev_to_sgpu(tbo->bdev);
	struct sgpu_bo *bo = tbo_to_sgpu_bo(tbo);
	bool fresh = !tbo->resource || bo->fresh;
	bool to_vram = new_mem->mem_type == TTM_PL_VRAM;
	int ret = 0;

	if (READ_ONCE(sdev->dead))
		goto done;
	if (!fresh) {
		/* nobody may be using the old storage while the device moves it */
		ret = ttm_bo_wait_ctx(tbo, ctx);
		if (ret)
			return ret;
	}
	/*
	 * Importers first, as amdgpu and xe do: their mappings (a p2p
	 * importer's CPU mapping of its import window included) must be gone
	 * before the storage is copied, or their writes land in the old one.
	 * A BO the device already moved into VRAM (revalidation adopts it)
	 * does not move again: its importers were told by the device.
	 */
	if (!fresh && !(to_vram && bo->hw_place == SGHW_PLACEMENT_DEVICE))
		sgpu_bo_move_notify(bo);

	switch (new_mem->mem_type) {
	case TTM_PL_VRAM:
		ret = sgpu_ttm_move_to_vram(bo, new_mem);
		if (ret)
			return ret;
		break;
	case TTM_PL_TT:
		if (bo->hw_place == SGHW_PLACEMENT_DEVICE) {
			ret = sgpu_bo_hw_move(bo, SGHW_PLACEMENT_SYSTEM);
			if (ret)
				return ret;
		}
		ret = sgpu_bo_attach_tt(bo);
		if (ret)
			return ret;
		if (!fresh) {
			ret = sgpu_bo_transfer(bo, false);
			if (ret)
				return ret;
		}
		break;
	default:
		if (bo->hw_place == SGHW_PLACEMENT_DEVICE) {
			ret = sgpu_bo_hw_move(bo, SGHW_PLACEMENT_SYSTEM);
			if (ret)
				return ret;
		}
		sgpu_bo_detach(bo);
		break;
	}
	if (evict)
		atomic64_inc(&sdev->evictions);
	WRITE_ONCE(bo->mem_type, new_mem->mem_type);
	if (to_vram && !bo->foreign_maps) {
		/*
		 * Idle (waited above, resv held) and detached: the tt pages
		 * are stale, give them back instead of keeping guest RAM for
		 * every BO that was ever evicted (ttm_bo_move_null keeps them).
		 * Pages a lazy importer still maps stay until the BO moves or
		 * dies, so a stale mapping never reaches reused memory.
		 */
		ttm_bo_move_sync_cleanup(tbo, new_mem);
		return 0;
	}
	ttm_bo_move_null(tbo, new_mem);
	return 0;
done:
	if (to_vram && bo->hw_place == SGHW_PLACEMENT_DEVICE)
		sgpu_vram_res_place(new_mem, bo->hw_offset);
	WRITE_ONCE(bo->mem_type, new_mem->mem_type);
	ttm_bo_move_null(tbo, new_mem);
	return 0;
}

static void sgpu_delete_mem_notify(struct ttm_buffer_object *tbo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(tbo->bdev);

	if (!READ_ONCE(sdev->dead))
		sgpu_bo_detach(tbo_to_sgpu_bo(tbo));
}

static void sgpu_swap_notify(struct ttm_buffer_object *tbo)
{
	sgpu_delete_mem_notify(tbo);
}

static int sgpu_io_mem_reserve(struct ttm_device *bdev, struct ttm_resource *mem)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bdev);

	switch (mem->mem_type) {
	case TTM_PL_SYSTEM:
	case TTM_PL_TT:
		return 0;
	case TTM_PL_VRAM:
		mem->bus.offset = sdev->bar2_base + ((u64)mem->start << PAGE_SHIFT);
		mem->bus.is_iomem = true;
		mem->bus.caching = ttm_write_combined;
		return 0;
	default:
		return -EINVAL;
	}
}

static struct ttm_device_funcs sgpu_ttm_funcs = {
	.ttm_tt_create = sgpu_ttm_tt_create,
	.ttm_tt_populate = sgpu_ttm_tt_populate,
	.ttm_tt_unpopulate = sgpu_ttm_tt_unpopulate,
	.ttm_tt_destroy = sgpu_ttm_tt_destroy,
	.eviction_valuable = ttm_bo_eviction_valuable,
	.evict_flags = sgpu_evict_flags,
	.move = sgpu_ttm_move,
	.delete_mem_notify = sgpu_delete_mem_notify,
	.swap_notify = sgpu_swap_notify,
	.io_mem_reserve = sgpu_io_mem_reserve,
};

static void sgpu_ttm_fini(struct drm_device *drm, void *arg)
{
	struct sgpu_device *sdev = to_sgpu(drm);

	sgpu_vram_mgr_fini(sdev);
	ttm_range_man_fini(&sdev->bdev, TTM_PL_TT);
	ttm_device_fini(&sdev->bdev);
	drm_mm_takedown(&sdev->win_mm);
	xa_destroy(&sdev->handles);
}

int sgpu_ttm_init(struct sgpu_device *sdev)
{
	struct drm_device *drm = &sdev->drm;
	int ret;

	ret = ttm_device_init(&sdev->bdev, &sgpu_ttm_funcs, drm->dev,
			      drm->anon_inode->i_mapping, drm->vma_offset_manager,
			      false, false);
	if (ret)
		return ret;

	sgpu_vram_mgr_init(sdev);

	/* SYSTEM placement with backing: bounded by guest RAM */
	ret = ttm_range_man_init(&sdev->bdev, TTM_PL_TT, true, totalram_pages());
	if (ret) {
		ttm_set_driver_manager(&sdev->bdev, TTM_PL_VRAM, NULL);
		ttm_device_fini(&sdev->bdev);
		return ret;
	}
	drm_mm_init(&sdev->win_mm, 0, sdev->win_size >> PAGE_SHIFT);
	return drmm_add_action_or_reset(drm, sgpu_ttm_fini, NULL);
}
