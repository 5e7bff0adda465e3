// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: buffer objects (struct sgpu_bo) and their GEM object functions.
 *
 * Every native BO is created on the device in SYSTEM placement first, so it
 * has a device handle before TTM places it (sgpu_ttm.c, sgpu_vram_mgr.c).
 * This file holds the BO's life cycle (create, destroy, the per-device object
 * limit), its placement policy (domains, validation, pinning) and the CPU
 * access window of dma-buf begin/end_cpu_access and the BO_CPU_ACCESS ioctl.
 *
 * Layer: above TTM (sgpu_ttm.c) and the command layer; used by the ioctls,
 * PRIME, jobs and event handling. The GEM funcs name the PRIME exporter
 * (.export), an ops-table reference, not a call.
 */
#include <linux/dma-resv.h>
#include <linux/slab.h>

#include <drm/drm_gem_ttm_helper.h>
#include <drm/ttm/ttm_placement.h>

#include "sgpu_drv.h"


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

void sgpu_bo_set_placement(struct sgpu_bo *bo, u32 domains)
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

u64 sgpu_bo_vram_offset(struct sgpu_bo *bo)
{
	if (bo->tbo.resource && bo->tbo.resource->mem_type == TTM_PL_VRAM)
		return (u64)bo->tbo.resource->start << PAGE_SHIFT;
	return SGHW_INVALID_OFFSET;
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

struct sgpu_bo *sgpu_bo_create(struct sgpu_device *sdev, u64 size, u32 domains)
{
	static const struct ttm_place sys_place = { .mem_type = TTM_PL_SYSTEM };
	struct ttm_placement sys_placement = { .num_placement = 1, .placement = &sys_place };
	struct ttm_operation_ctx ctx = { .interruptible = true };
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
	/*
	 * SYSTEM first (no pages, nothing to move: the device created it
	 * there), then where it belongs, so that a refusal by the device
	 * falls back as for any other BO (sgpu_bo_validate()). On failure
	 * TTM calls sgpu_bo_destroy().
	 */
	bo->fresh = true;
	ret = ttm_bo_init_reserved(&sdev->bdev, &bo->tbo, ttm_bo_type_device, &sys_placement,
				   0, &ctx, NULL, NULL, sgpu_bo_destroy);
	if (ret)
		return ERR_PTR(ret);
	ret = sgpu_bo_validate(bo, &bo->placement, &ctx);
	bo->fresh = false;
	ttm_bo_unreserve(&bo->tbo);
	if (ret) {
		ttm_bo_put(&bo->tbo);
		return ERR_PTR(ret);
	}
	/* from now on device events for this handle reach the BO */
	ret = xa_err(xa_store(&sdev->handles, bo->hw_handle, &bo->tbo.base, GFP_KERNEL));
	if (ret) {
		drm_gem_object_put(&bo->tbo.base);
		return ERR_PTR(ret);
	}
	return bo;
}

/*
 * ttm_bo_validate() with the device's say on VRAM (resv held). The device
 * allocates VRAM itself, in the TTM move callback, and may refuse (NO_SPACE)
 * what the VRAM manager's accounting admitted: fragmentation, or storage of
 * BOs destroyed here but still imported elsewhere. The move then fails with
 * -ENOSPC and marks the BO refused; validating again, the manager refuses it
 * too until VRAM is freed, so TTM takes the next placement or evicts (LRU)
 * and asks the device again, as when the manager's alloc moved the BO (a
 * large BO in fragmented VRAM may need thousands of rounds, one eviction
 * each). Every new refusal needs a VRAM resource freed first, so there are
 * at most as many as VRAM has pages unless other BOs fill VRAM again: the
 * bound only stops such a livelock.
 */
int sgpu_bo_validate(struct sgpu_bo *bo, struct ttm_placement *pl, struct ttm_operation_ctx *ctx)
{
	u64 n = 0, max = bdev_to_sgpu(bo->tbo.bdev)->vram_size >> PAGE_SHIFT;
	int ret;

	dma_resv_assert_held(bo->tbo.base.resv);
	do {
		ret = ttm_bo_validate(&bo->tbo, pl, ctx);
	} while (ret == -ENOSPC && bo->vram_refused && ++n < max);
	bo->vram_refused = false;
	return ret;
}

/* Validate into exactly one domain (resv held). */
int sgpu_bo_validate_domain(struct sgpu_bo *bo, u32 domain, bool intr)
{
	struct ttm_operation_ctx ctx = { .interruptible = intr };
	struct ttm_place place = {
		.mem_type = domain == SHAREGPU_DOMAIN_VRAM ? TTM_PL_VRAM : TTM_PL_TT,
	};
	struct ttm_placement pl = { .num_placement = 1, .placement = &place };

	return sgpu_bo_validate(bo, &pl, &ctx);
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
 * begin_cpu_access waits (resv held): a CPU read for the device's writers, a
 * CPU write for every user; interruptible.
 */
int sgpu_cpu_access_wait(struct dma_resv *resv, enum dma_data_direction dir)
{
	long lret;

	lret = dma_resv_wait_timeout(resv, dir == DMA_FROM_DEVICE ?
				     DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ,
				     true, MAX_SCHEDULE_TIMEOUT);
	return lret < 0 ? lret : 0;
}

/*
 * CPU access window (dma-buf begin/end_cpu_access and the BO_CPU_ACCESS ioctl).
 *
 * A SYSTEM BO with backing has two copies, the device's storage and the guest
 * pages the CPU maps; one of them is the truth. Without foreign mappings it is
 * the device's (jobs write there): begin brings it to the pages for every
 * direction, since a write-only access may write part of the BO and end
 * pushes the whole of it back. With foreign mappings it is the pages (jobs
 * transfer around themselves, sgpu_job.c autosync): begin must not copy the
 * device's older bytes over what a foreign importer wrote.
 */
int sgpu_bo_cpu_access(struct sgpu_bo *bo, bool end, enum dma_data_direction dir)
{
	struct sgpu_device *sdev = bdev_to_sgpu(bo->tbo.bdev);
	struct dma_resv *resv = bo->tbo.base.resv;
	u32 hwdir = dir == DMA_TO_DEVICE ? SGHW_DIR_TO_DEVICE :
		    dir == DMA_FROM_DEVICE ? SGHW_DIR_FROM_DEVICE : SGHW_DIR_BIDIRECTIONAL;
	int ret;

	ret = dma_resv_lock_interruptible(resv, NULL);
	if (ret)
		return ret;
	if (!end) {
		ret = sgpu_cpu_access_wait(resv, dir);
		if (ret)
			goto out;
		if (bo->tbo.resource && bo->tbo.resource->mem_type == TTM_PL_SYSTEM &&
		    !bo->tbo.pin_count) {
			ret = sgpu_bo_validate_domain(bo, SHAREGPU_DOMAIN_SYSTEM, true);
			if (ret)
				goto out;
		}
		ret = sgpu_hw_simple(sdev, SGHW_OP_CPU_ACCESS_BEGIN, bo->hw_handle, hwdir,
				     0, 0, 0, NULL);
		if (!ret && bo->backing && !bo->foreign_maps)
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

