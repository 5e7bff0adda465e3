// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: buffer objects on TTM.
 *
 * The device is the source of truth for where a BO lives. Every native BO is
 * created on the device in SYSTEM placement first, so it has a device handle
 * before TTM places it:
 *  - TTM_PL_VRAM is a custom resource manager whose alloc() issues BO_MOVE to
 *    DEVICE and records the returned VRAM offset as the resource start; its
 *    usage accounting therefore mirrors the device's and -ENOSPC makes TTM
 *    evict (LRU) before the device would have to.
 *  - TTM_PL_TT is the device's SYSTEM placement with the tt pages attached as
 *    backing (ATTACH_BACKING); the move callback issues BO_MOVE to SYSTEM and
 *    TRANSFER_FROM_DEVICE so the pages are current after an eviction.
 *  - A BO_MOVED event makes the driver query the device (BO_QUERY) and bring
 *    TTM in line with it (sgpu_bo_revalidate()).
 */
#include <linux/dma-resv.h>
#include <linux/slab.h>

#include <drm/drm_gem_ttm_helper.h>
#include <drm/drm_managed.h>
#include <drm/drm_vma_manager.h>
#include <drm/ttm/ttm_placement.h>
#include <drm/ttm/ttm_range_manager.h>
#include <drm/ttm/ttm_tt.h>

#include "sgpu_drv.h"

#define SGPU_MAX_BO_SIZE	(4ULL << 30)

/* ------------------------------------------------------------------ VRAM manager */

/*
 * Move @bo on the device (resv held). Moves to DEVICE carry NO_EVICT: TTM is
 * the only evictor, so the device answers NO_SPACE (-ENOSPC) instead of
 * evicting other BOs behind TTM's back (their CPU mappings would stay stale
 * until the BO_MOVED event is processed). A move to the placement the device
 * already has (our view may lag an unprocessed BO_MOVED) is a silent no-op
 * that still reports the current offset.
 */
static int sgpu_hw_move(struct sgpu_bo *bo, u32 place)
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
		/* NO_SPACE / TOO_BIG: -ENOSPC, TTM evicts (LRU) and retries */
		ret = sgpu_hw_move(bo, SGHW_PLACEMENT_DEVICE);
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

/* ------------------------------------------------------------------ TTM device */

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

/*
 * Live device handles (native BOs and imports) per device: each is host
 * memory plus, for storage the device allocates, a memfd and a mapping in
 * the QEMU process. Beyond the limit BO_CREATE, dumb create and PRIME import
 * fail with -ENOSPC, as the device does when it is out of space.
 */
int sgpu_objects_reserve(struct sgpu_device *sdev)
{
	return sgpu_limit_get(&sdev->nobjects, READ_ONCE(sgpu_max_objects),
			      &sdev->limit_objects, -ENOSPC);
}

void sgpu_objects_unreserve(struct sgpu_device *sdev)
{
	atomic_dec(&sdev->nobjects);
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

static int sgpu_ttm_move(struct ttm_buffer_object *tbo, bool evict,
			 struct ttm_operation_ctx *ctx, struct ttm_resource *new_mem,
			 struct ttm_place *hop)
{
	struct sgpu_device *sdev = bdev_to_sgpu(tbo->bdev);
	struct sgpu_bo *bo = tbo_to_sgpu_bo(tbo);
	bool fresh = !tbo->resource;
	int ret = 0;

	if (READ_ONCE(sdev->dead))
		goto done;
	if (!fresh) {
		ret = ttm_bo_wait_ctx(tbo, ctx);
		if (ret)
			return ret;
	}

	switch (new_mem->mem_type) {
	case TTM_PL_VRAM:
		/* the VRAM manager has already moved it on the device */
		sgpu_bo_detach(bo);
		break;
	case TTM_PL_TT:
		if (bo->hw_place == SGHW_PLACEMENT_DEVICE) {
			ret = sgpu_hw_move(bo, SGHW_PLACEMENT_SYSTEM);
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
			ret = sgpu_hw_move(bo, SGHW_PLACEMENT_SYSTEM);
			if (ret)
				return ret;
		}
		sgpu_bo_detach(bo);
		break;
	}
	if (evict)
		atomic64_inc(&sdev->evictions);
	if (!fresh && tbo->base.dma_buf) {
		atomic64_inc(&sdev->move_notifies);
		dma_buf_move_notify(tbo->base.dma_buf);
	}
	WRITE_ONCE(bo->mem_type, new_mem->mem_type);
	if (new_mem->mem_type == TTM_PL_VRAM) {
		/*
		 * Idle (waited above, resv held) and detached: the tt pages
		 * are stale, give them back instead of keeping guest RAM for
		 * every BO that was ever evicted (ttm_bo_move_null keeps them).
		 */
		ttm_bo_move_sync_cleanup(tbo, new_mem);
		return 0;
	}
	ttm_bo_move_null(tbo, new_mem);
	return 0;
done:
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

static void sgpu_bo_destroy(struct ttm_buffer_object *tbo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(tbo->bdev);
	struct sgpu_bo *bo = tbo_to_sgpu_bo(tbo);

	mutex_lock(&sdev->obj_lock);
	list_del(&bo->link);
	mutex_unlock(&sdev->obj_lock);
	if (!READ_ONCE(sdev->dead))
		sgpu_hw_bo_destroy(sdev, bo->hw_handle);
	sgpu_objects_unreserve(sdev);
	drm_gem_object_release(&tbo->base);
	kfree(bo);
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
	struct ttm_resource_manager *man = &sdev->vram.man;

	ttm_resource_manager_set_used(man, false);
	ttm_resource_manager_evict_all(&sdev->bdev, man);
	ttm_resource_manager_cleanup(man);
	ttm_set_driver_manager(&sdev->bdev, TTM_PL_VRAM, NULL);
	ttm_range_man_fini(&sdev->bdev, TTM_PL_TT);
	ttm_device_fini(&sdev->bdev);
	drm_mm_takedown(&sdev->win_mm);
	xa_destroy(&sdev->handles);
}

int sgpu_ttm_init(struct sgpu_device *sdev)
{
	struct drm_device *drm = &sdev->drm;
	struct ttm_resource_manager *man = &sdev->vram.man;
	int ret;

	ret = ttm_device_init(&sdev->bdev, &sgpu_ttm_funcs, drm->dev,
			      drm->anon_inode->i_mapping, drm->vma_offset_manager,
			      false, false);
	if (ret)
		return ret;

	sdev->vram.size = sdev->vram_size;
	man->func = &sgpu_vram_mgr_func;
	man->use_tt = false;
	ttm_resource_manager_init(man, &sdev->bdev, sdev->vram_size >> PAGE_SHIFT);
	ttm_set_driver_manager(&sdev->bdev, TTM_PL_VRAM, man);
	ttm_resource_manager_set_used(man, true);

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

/* ------------------------------------------------------------------ BOs */

static void sgpu_bo_set_placement(struct sgpu_bo *bo, u32 domains)
{
	u32 n = 0;

	if (domains & SHAREGPU_DOMAIN_VRAM)
		bo->places[n++] = (struct ttm_place){ .mem_type = TTM_PL_VRAM };
	if (domains & SHAREGPU_DOMAIN_SYSTEM)
		bo->places[n++] = (struct ttm_place){ .mem_type = TTM_PL_TT };
	bo->placement.num_placement = n;
	bo->placement.placement = bo->places;
}

u32 sgpu_bo_domain(struct sgpu_bo *bo)
{
	if (!bo->tbo.resource)
		return 0;
	switch (bo->tbo.resource->mem_type) {
	case TTM_PL_VRAM:
		return SHAREGPU_DOMAIN_VRAM;
	default:
		return SHAREGPU_DOMAIN_SYSTEM;
	}
}

/* Without the resv: a snapshot for debugfs/fdinfo. */
u32 sgpu_bo_domain_unlocked(struct sgpu_bo *bo)
{
	switch (READ_ONCE(bo->mem_type)) {
	case TTM_PL_VRAM:
		return SHAREGPU_DOMAIN_VRAM;
	case TTM_PL_TT:
		return SHAREGPU_DOMAIN_SYSTEM;
	default:
		return 0;
	}
}

unsigned long sgpu_timeout_jiffies(s64 timeout_ns)
{
	u64 j = nsecs_to_jiffies64(timeout_ns);

	return min_t(u64, j, MAX_SCHEDULE_TIMEOUT - 1);
}

u64 sgpu_bo_vram_offset(struct sgpu_bo *bo)
{
	if (bo->tbo.resource && bo->tbo.resource->mem_type == TTM_PL_VRAM)
		return (u64)bo->tbo.resource->start << PAGE_SHIFT;
	return SGHW_INVALID_OFFSET;
}

struct sgpu_bo *sgpu_bo_create(struct sgpu_device *sdev, u64 size, u32 domains)
{
	struct sgpu_bo *bo;
	int ret;

	if (!size || size > SGPU_MAX_BO_SIZE || !domains || (domains & ~SHAREGPU_DOMAIN_MASK))
		return ERR_PTR(-EINVAL);
	size = PAGE_ALIGN(size);
	if ((domains == SHAREGPU_DOMAIN_VRAM) && size > sdev->vram_size)
		return ERR_PTR(-E2BIG);

	ret = sgpu_objects_reserve(sdev);
	if (ret)
		return ERR_PTR(ret);
	bo = kzalloc(sizeof(*bo), GFP_KERNEL);
	if (!bo) {
		sgpu_objects_unreserve(sdev);
		return ERR_PTR(-ENOMEM);
	}
	bo->tbo.base.funcs = &sgpu_bo_gem_funcs;
	drm_gem_private_object_init(&sdev->drm, &bo->tbo.base, size);
	INIT_LIST_HEAD(&bo->link);

	ret = sgpu_hw_bo_create(sdev, size, SGHW_PLACEMENT_SYSTEM, &bo->hw_handle, NULL);
	if (ret) {
		drm_gem_object_release(&bo->tbo.base);
		kfree(bo);
		sgpu_objects_unreserve(sdev);
		return ERR_PTR(ret);
	}
	bo->hw_place = SGHW_PLACEMENT_SYSTEM;
	bo->hw_offset = SGHW_INVALID_OFFSET;
	bo->mem_type = TTM_PL_SYSTEM;
	bo->domains = domains;
	mutex_lock(&sdev->obj_lock);
	list_add_tail(&bo->link, &sdev->objects);
	mutex_unlock(&sdev->obj_lock);

	sgpu_bo_set_placement(bo, domains);
	/* on failure TTM calls sgpu_bo_destroy() */
	ret = ttm_bo_init_validate(&sdev->bdev, &bo->tbo, ttm_bo_type_device, &bo->placement,
				   0, true, NULL, NULL, sgpu_bo_destroy);
	if (ret)
		return ERR_PTR(ret);
	/* from now on device events for this handle reach the BO */
	ret = xa_err(xa_store(&sdev->handles, bo->hw_handle, &bo->tbo.base, GFP_KERNEL));
	if (ret) {
		drm_gem_object_put(&bo->tbo.base);
		return ERR_PTR(ret);
	}
	return bo;
}

/* Validate into exactly one domain (resv held). */
static int sgpu_bo_validate_domain(struct sgpu_bo *bo, u32 domain, bool intr)
{
	struct ttm_operation_ctx ctx = { .interruptible = intr };
	struct ttm_place place = {
		.mem_type = domain == SHAREGPU_DOMAIN_VRAM ? TTM_PL_VRAM : TTM_PL_TT,
	};
	struct ttm_placement pl = { .num_placement = 1, .placement = &place };

	return ttm_bo_validate(&bo->tbo, &pl, &ctx);
}

int sgpu_bo_set_domain(struct sgpu_bo *bo, u32 domain, bool intr)
{
	if (domain != SHAREGPU_DOMAIN_VRAM && domain != SHAREGPU_DOMAIN_SYSTEM)
		return -EINVAL;
	if (bo->tbo.pin_count)
		return sgpu_bo_domain(bo) == domain ? 0 : -EBUSY;
	return sgpu_bo_validate_domain(bo, domain, intr);
}

/* resv held */
int sgpu_bo_pin(struct sgpu_bo *bo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);
	int ret;

	if (!bo->tbo.resource || bo->tbo.resource->mem_type == TTM_PL_SYSTEM) {
		ret = sgpu_bo_validate_domain(bo, SHAREGPU_DOMAIN_SYSTEM, true);
		if (ret)
			return ret;
	}
	ttm_bo_pin(&bo->tbo);
	ret = sgpu_hw_simple(sdev, SGHW_OP_BO_PIN, bo->hw_handle, 0, 0, 0, 0, NULL);
	if (ret)
		ttm_bo_unpin(&bo->tbo);
	return ret;
}

/* resv held */
void sgpu_bo_unpin(struct sgpu_bo *bo)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);

	if (WARN_ON(!bo->tbo.pin_count))
		return;
	if (!READ_ONCE(sdev->dead))
		sgpu_hw_simple(sdev, SGHW_OP_BO_UNPIN, bo->hw_handle, 0, 0, 0, 0, NULL);
	ttm_bo_unpin(&bo->tbo);
}

/*
 * Bring TTM's view of @bo in line with the device (after a BO_MOVED event the
 * driver did not ask for: host monitor fault injection or device-side eviction).
 */
int sgpu_bo_revalidate(struct sgpu_bo *bo)
{
	struct ttm_buffer_object *tbo = &bo->tbo;
	struct sgpu_device *sdev = bdev_to_sgpu(tbo->bdev);
	struct sghw_bo_info info;
	int mem, ret;

	dma_resv_lock(tbo->base.resv, NULL);
	ret = sgpu_hw_bo_query(sdev, bo->hw_handle, &info);
	if (ret)
		goto out;
	mem = tbo->resource ? tbo->resource->mem_type : -1;

	if (info.placement == SGHW_PLACEMENT_DEVICE) {
		if (mem == TTM_PL_VRAM && info.vram_offset == bo->hw_offset)
			goto out;	/* our own move */
		atomic64_inc(&sdev->unexpected_moves);
		drm_dbg_driver(&sdev->drm, "bo %u moved by the device to vram %#llx\n",
			       bo->hw_handle, info.vram_offset);
		bo->hw_place = SGHW_PLACEMENT_DEVICE;
		bo->hw_offset = info.vram_offset;
		if (mem == TTM_PL_VRAM) {
			ttm_bo_unmap_virtual(tbo);
			tbo->resource->start = info.vram_offset >> PAGE_SHIFT;
			if (tbo->base.dma_buf)
				dma_buf_move_notify(tbo->base.dma_buf);
			goto out;
		}
		/* adopt: the VRAM manager records the device's offset */
		ret = sgpu_bo_validate_domain(bo, SHAREGPU_DOMAIN_VRAM, false);
		if (ret) {
			/* TTM cannot account it: put it back where TTM has it */
			ret = sgpu_hw_move(bo, SGHW_PLACEMENT_SYSTEM);
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

void sgpu_handle_event(struct sgpu_device *sdev, const struct sghw_event *ev)
{
	struct drm_gem_object *obj;

	xa_lock(&sdev->handles);
	obj = xa_load(&sdev->handles, ev->handle);
	if (obj && !kref_get_unless_zero(&obj->refcount))
		obj = NULL;
	xa_unlock(&sdev->handles);

	switch (ev->type) {
	case SGHW_EVT_BO_MOVED:
		atomic64_inc(&sdev->evt_moved);
		if (obj && sgpu_is_bo(obj))
			sgpu_bo_revalidate(to_sgpu_bo(obj));
		break;
	case SGHW_EVT_BO_INVALIDATED:
		atomic64_inc(&sdev->evt_invalidated);
		if (obj && sgpu_is_import(obj)) {
			dma_resv_lock(obj->resv, NULL);
			sgpu_import_invalidate(to_sgpu_import(obj));
			dma_resv_unlock(obj->resv);
		}
		break;
	case SGHW_EVT_ERROR:
		atomic64_inc(&sdev->evt_error);
		drm_dbg_driver(&sdev->drm, "device error: ring index %u status %s\n",
			       ev->handle, sgpu_status_name(ev->placement));
		break;
	case SGHW_EVT_RESYNC:
		drm_dbg_driver(&sdev->drm, "events dropped (%llu): resync\n", ev->generation);
		sgpu_resync(sdev);
		break;
	default:
		drm_dbg_driver(&sdev->drm, "unknown event %u\n", ev->type);
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
			if (sgpu_is_bo(obj)) {
				sgpu_bo_revalidate(to_sgpu_bo(obj));
			} else if (sgpu_is_import(obj) && to_sgpu_import(obj)->p2p) {
				dma_resv_lock(obj->resv, NULL);
				sgpu_import_invalidate(to_sgpu_import(obj));
				dma_resv_unlock(obj->resv);
			}
			drm_gem_object_put(obj);
		}
		if (idx == ULONG_MAX)
			break;
		idx++;
	}
}

/* CPU access window (dma-buf begin/end_cpu_access and the BO_CPU_ACCESS ioctl). */
int sgpu_bo_cpu_access(struct sgpu_bo *bo, bool end, enum dma_data_direction dir)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);
	struct dma_resv *resv = bo->tbo.base.resv;
	u32 hwdir = dir == DMA_TO_DEVICE ? SGHW_DIR_TO_DEVICE :
		    dir == DMA_FROM_DEVICE ? SGHW_DIR_FROM_DEVICE : SGHW_DIR_BIDIRECTIONAL;
	long lret;
	int ret;

	ret = dma_resv_lock_interruptible(resv, NULL);
	if (ret)
		return ret;
	if (!end) {
		lret = dma_resv_wait_timeout(resv, dir == DMA_FROM_DEVICE ?
					     DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ,
					     true, MAX_SCHEDULE_TIMEOUT);
		if (lret < 0) {
			ret = lret;
			goto out;
		}
		if (bo->tbo.resource && bo->tbo.resource->mem_type == TTM_PL_SYSTEM &&
		    !bo->tbo.pin_count) {
			ret = sgpu_bo_validate_domain(bo, SHAREGPU_DOMAIN_SYSTEM, true);
			if (ret)
				goto out;
		}
		ret = sgpu_hw_simple(sdev, SGHW_OP_CPU_ACCESS_BEGIN, bo->hw_handle, hwdir,
				     0, 0, 0, NULL);
		if (!ret && bo->backing && dir != DMA_TO_DEVICE)
			ret = sgpu_bo_transfer(bo, false);
	} else {
		if (bo->backing && dir != DMA_FROM_DEVICE)
			ret = sgpu_bo_transfer(bo, true);
		if (!ret)
			ret = sgpu_hw_simple(sdev, SGHW_OP_CPU_ACCESS_END, bo->hw_handle, hwdir,
					     0, 0, 0, NULL);
	}
out:
	dma_resv_unlock(resv);
	return ret;
}

/* ------------------------------------------------------------------ GEM funcs */

static void sgpu_bo_gem_free(struct drm_gem_object *obj)
{
	struct sgpu_bo *bo = to_sgpu_bo(obj);
	struct sgpu_device *sdev = to_sgpu(obj->dev);

	xa_erase(&sdev->handles, bo->hw_handle);
	if (bo->user_pins) {
		dma_resv_lock(obj->resv, NULL);
		while (bo->user_pins) {
			bo->user_pins--;
			sgpu_bo_unpin(bo);
		}
		dma_resv_unlock(obj->resv);
	}
	ttm_bo_put(&bo->tbo);
}

static enum drm_gem_object_status sgpu_bo_gem_status(struct drm_gem_object *obj)
{
	struct sgpu_bo *bo = to_sgpu_bo(obj);

	if (bo->tbo.resource && bo->tbo.resource->mem_type != TTM_PL_SYSTEM)
		return DRM_GEM_OBJECT_RESIDENT;
	return 0;
}

static size_t sgpu_bo_gem_rss(struct drm_gem_object *obj)
{
	struct sgpu_bo *bo = to_sgpu_bo(obj);

	if (bo->tbo.resource && bo->tbo.resource->mem_type != TTM_PL_SYSTEM)
		return obj->size;
	return 0;
}

static int sgpu_bo_gem_vmap(struct drm_gem_object *obj, struct iosys_map *map)
{
	return ttm_bo_vmap(&to_sgpu_bo(obj)->tbo, map);
}

static void sgpu_bo_gem_vunmap(struct drm_gem_object *obj, struct iosys_map *map)
{
	ttm_bo_vunmap(&to_sgpu_bo(obj)->tbo, map);
}

const struct drm_gem_object_funcs sgpu_bo_gem_funcs = {
	.free = sgpu_bo_gem_free,
	.export = sgpu_gem_prime_export,
	.vmap = sgpu_bo_gem_vmap,
	.vunmap = sgpu_bo_gem_vunmap,
	.mmap = drm_gem_ttm_mmap,
	.print_info = drm_gem_ttm_print_info,
	.status = sgpu_bo_gem_status,
	.rss = sgpu_bo_gem_rss,
};

/* ------------------------------------------------------------------ ioctls */

int sgpu_ioctl_bo_create(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_bo_create *args = data;
	struct sgpu_bo *bo;
	int ret;

	if (args->flags || args->pad)
		return -EINVAL;
	bo = sgpu_bo_create(to_sgpu(dev), args->size, args->domains);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	args->vram_offset = sgpu_bo_vram_offset(bo);
	ret = drm_gem_handle_create(file, &bo->tbo.base, &args->handle);
	drm_gem_object_put(&bo->tbo.base);
	return ret;
}

int sgpu_dumb_create(struct drm_file *file, struct drm_device *dev,
		     struct drm_mode_create_dumb *args)
{
	struct sgpu_bo *bo;
	u64 pitch, size;
	int ret;

	if (!args->width || !args->height || !args->bpp || args->bpp > 128)
		return -EINVAL;
	pitch = ALIGN((u64)args->width * DIV_ROUND_UP(args->bpp, 8), 64);
	size = pitch * args->height;
	if (pitch > U32_MAX || size > SGPU_MAX_BO_SIZE)
		return -EINVAL;
	bo = sgpu_bo_create(to_sgpu(dev), size, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	args->pitch = pitch;
	args->size = bo->tbo.base.size;
	ret = drm_gem_handle_create(file, &bo->tbo.base, &args->handle);
	drm_gem_object_put(&bo->tbo.base);
	return ret;
}

int sgpu_ioctl_bo_mmap_offset(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_bo_mmap_offset *args = data;
	struct drm_gem_object *obj;
	int ret;

	if (args->pad)
		return -EINVAL;
	obj = drm_gem_object_lookup(file, args->handle);
	if (!obj)
		return -ENOENT;
	if (sgpu_is_import(obj) && !to_sgpu_import(obj)->p2p) {
		/* CPU access to foreign buffers: mmap the dma-buf fd instead */
		ret = -EOPNOTSUPP;
		goto out;
	}
	ret = drm_gem_create_mmap_offset(obj);
	if (!ret)
		args->offset = drm_vma_node_offset_addr(&obj->vma_node);
out:
	drm_gem_object_put(obj);
	return ret;
}

static struct sgpu_bo *sgpu_lookup_bo(struct drm_file *file, u32 handle)
{
	struct drm_gem_object *obj = drm_gem_object_lookup(file, handle);

	if (!obj)
		return ERR_PTR(-ENOENT);
	if (!sgpu_is_bo(obj)) {
		drm_gem_object_put(obj);
		return ERR_PTR(-EINVAL);
	}
	return to_sgpu_bo(obj);
}

int sgpu_ioctl_bo_move(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_bo_move *args = data;
	struct sgpu_bo *bo;
	int ret;

	if (args->domain != SHAREGPU_DOMAIN_VRAM && args->domain != SHAREGPU_DOMAIN_SYSTEM)
		return -EINVAL;
	bo = sgpu_lookup_bo(file, args->handle);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	ret = dma_resv_lock_interruptible(bo->tbo.base.resv, NULL);
	if (ret)
		goto out;
	ret = sgpu_bo_set_domain(bo, args->domain, true);
	args->vram_offset = sgpu_bo_vram_offset(bo);
	dma_resv_unlock(bo->tbo.base.resv);
out:
	drm_gem_object_put(&bo->tbo.base);
	return ret;
}

int sgpu_ioctl_bo_pin(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_bo_pin *args = data;
	struct sgpu_bo *bo;
	int ret;

	if (args->flags & ~SHAREGPU_PIN_F_UNPIN || args->pad)
		return -EINVAL;
	bo = sgpu_lookup_bo(file, args->handle);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	ret = dma_resv_lock_interruptible(bo->tbo.base.resv, NULL);
	if (ret)
		goto out;
	if (args->flags & SHAREGPU_PIN_F_UNPIN) {
		if (!bo->user_pins) {
			ret = -EINVAL;
		} else {
			bo->user_pins--;
			sgpu_bo_unpin(bo);
		}
	} else if (bo->user_pins >= 64) {
		ret = -EBUSY;
	} else {
		ret = sgpu_bo_pin(bo);
		if (!ret)
			bo->user_pins++;
	}
	args->pin_count = bo->tbo.pin_count;
	dma_resv_unlock(bo->tbo.base.resv);
out:
	drm_gem_object_put(&bo->tbo.base);
	return ret;
}

int sgpu_ioctl_bo_info(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_bo_info *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	struct sghw_bo_info info = {};
	struct drm_gem_object *obj;
	u32 handle = args->handle;
	int ret;

	obj = drm_gem_object_lookup(file, handle);
	if (!obj)
		return -ENOENT;
	memset(args, 0, sizeof(*args));
	args->handle = handle;
	args->size = obj->size;
	ret = dma_resv_lock_interruptible(obj->resv, NULL);
	if (ret)
		goto out;
	if (sgpu_is_bo(obj)) {
		struct sgpu_bo *bo = to_sgpu_bo(obj);

		args->hw_handle = bo->hw_handle;
		args->domain = sgpu_bo_domain(bo);
		args->vram_offset = sgpu_bo_vram_offset(bo);
		args->pin_count = bo->tbo.pin_count;
		if (bo->tbo.pin_count)
			args->flags |= SHAREGPU_BO_INFO_F_PINNED;
		if (obj->dma_buf || bo->exported)
			args->flags |= SHAREGPU_BO_INFO_F_EXPORTED;
	} else {
		struct sgpu_import *imp = to_sgpu_import(obj);

		args->hw_handle = imp->hw_handle;
		args->domain = imp->p2p ? 0 : SHAREGPU_DOMAIN_SYSTEM;
		args->vram_offset = imp->win_mapped ? imp->win_bar_off : SGHW_INVALID_OFFSET;
		args->flags |= SHAREGPU_BO_INFO_F_IMPORTED;
		if (imp->p2p)
			args->flags |= SHAREGPU_BO_INFO_F_P2P;
	}
	ret = sgpu_hw_bo_query(sdev, args->hw_handle, &info);
	dma_resv_unlock(obj->resv);
	if (ret)
		goto out;
	args->hw_placement = info.placement;
	args->hw_vram_offset = info.vram_offset;
	args->hw_generation = info.generation;
	args->hw_pin_count = info.pin_count;
out:
	drm_gem_object_put(obj);
	return ret;
}

int sgpu_ioctl_bo_cpu_access(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_bo_cpu_access *args = data;
	enum dma_data_direction dir;
	struct sgpu_bo *bo;
	u32 rw = args->flags & (SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_WRITE);
	int ret;

	if (args->flags & ~(SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_WRITE |
			    SHAREGPU_CPU_ACCESS_END) || !rw)
		return -EINVAL;
	dir = rw == SHAREGPU_CPU_ACCESS_READ ? DMA_FROM_DEVICE :
	      rw == SHAREGPU_CPU_ACCESS_WRITE ? DMA_TO_DEVICE : DMA_BIDIRECTIONAL;
	bo = sgpu_lookup_bo(file, args->handle);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	ret = sgpu_bo_cpu_access(bo, args->flags & SHAREGPU_CPU_ACCESS_END, dir);
	drm_gem_object_put(&bo->tbo.base);
	return ret;
}

int sgpu_ioctl_wait_bo(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_wait_bo *args = data;
	struct drm_gem_object *obj;
	unsigned long timeout;
	long ret;

	if (args->flags & ~SHAREGPU_WAIT_BO_F_WRITERS || args->timeout_ns < 0)
		return -EINVAL;
	obj = drm_gem_object_lookup(file, args->handle);
	if (!obj)
		return -ENOENT;
	timeout = sgpu_timeout_jiffies(args->timeout_ns);
	ret = dma_resv_wait_timeout(obj->resv, args->flags & SHAREGPU_WAIT_BO_F_WRITERS ?
				    DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ, true, timeout);
	drm_gem_object_put(obj);
	if (ret == 0)
		return -ETIME;
	return ret < 0 ? ret : 0;
}
