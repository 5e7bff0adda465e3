// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: the BO ioctls (create, dumb create, mmap offset, move, pin, info,
 * CPU access, wait).
 *
 * Layer: the top, next to job submission (sgpu_job.c); calls BO/GEM objects
 * (sgpu_gem.c) and the command layer (BO_INFO's BO_QUERY).
 */
#include <linux/dma-resv.h>

#include <drm/drm_vma_manager.h>

#include "sgpu_drv.h"

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
	if (sgpu_is_remote(obj) && READ_ONCE(to_sgpu_remote(obj)->revoked)) {
		ret = -ENODEV;
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
		if (bo->broker_exported)
			args->flags |= SHAREGPU_BO_INFO_F_BROKER_EXPORTED;
	} else if (sgpu_is_remote(obj)) {
		struct sgpu_remote *rem = to_sgpu_remote(obj);

		args->hw_handle = rem->hw_handle;
		args->vram_offset = rem->win_mapped ? rem->win_bar_off : SGHW_INVALID_OFFSET;
		args->flags |= SHAREGPU_BO_INFO_F_IMPORTED | SHAREGPU_BO_INFO_F_REMOTE;
		if (!rem->writable)
			args->flags |= SHAREGPU_BO_INFO_F_READ_ONLY;
		if (rem->revoked) {
			args->flags |= SHAREGPU_BO_INFO_F_REVOKED;
			args->revoke_reason = rem->revoke_reason;
		}
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
	args->hw_placement = le32_to_cpu(info.placement);
	args->hw_vram_offset = le64_to_cpu(info.vram_offset);
	args->hw_generation = le64_to_cpu(info.generation);
	args->hw_pin_count = le32_to_cpu(info.pin_count);
out:
	drm_gem_object_put(obj);
	return ret;
}

int sgpu_ioctl_bo_cpu_access(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_bo_cpu_access *args = data;
	struct drm_gem_object *obj;
	enum dma_data_direction dir;
	struct sgpu_bo *bo;
	u32 rw = args->flags & (SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_WRITE);
	int ret;

	if (args->flags & ~(SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_WRITE |
			    SHAREGPU_CPU_ACCESS_END) || !rw)
		return -EINVAL;
	dir = rw == SHAREGPU_CPU_ACCESS_READ ? DMA_FROM_DEVICE :
	      rw == SHAREGPU_CPU_ACCESS_WRITE ? DMA_TO_DEVICE : DMA_BIDIRECTIONAL;
	obj = drm_gem_object_lookup(file, args->handle);
	if (obj && sgpu_is_remote(obj)) {
		/* another VM's pages, seen through the window: map them, or -ENODEV */
		ret = sgpu_remote_cpu_access(to_sgpu_remote(obj),
					     args->flags & SHAREGPU_CPU_ACCESS_END, dir);
		drm_gem_object_put(obj);
		return ret;
	}
	if (obj)
		drm_gem_object_put(obj);
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
