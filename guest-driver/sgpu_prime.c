// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: dynamic dma-buf exporter and importer.
 *
 * Exporter: a sharegpu importer on another device gets a peer-to-peer mapping
 * of the BO where it lies (BAR2 for VRAM) and, at the device level, imports the
 * buffer by UUID (EXPORT here, IMPORT there). Any other importer gets the tt
 * pages: the BO is moved to SYSTEM placement, the pages are brought up to date
 * (TRANSFER_FROM_DEVICE) and jobs keep them in sync while the mapping lives.
 *
 * Importer: dma_buf_dynamic_attach() with move_notify; the mapping is created
 * lazily under the reservation lock before the next job and dropped again on
 * move_notify. Foreign buffers (vgem, udmabuf, ...) become a device SYSTEM BO
 * whose backing is the attachment's DMA addresses.
 */
#include <linux/dma-mapping.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include <drm/drm_prime.h>
#include <drm/drm_vma_manager.h>
#include <drm/ttm/ttm_tt.h>

#include "sgpu_drv.h"

static bool sgpu_attach_is_sgpu(struct dma_buf_attachment *attach)
{
	return attach->importer_ops == &sgpu_importer_ops;
}

/* ------------------------------------------------------------------ exporter */

static int sgpu_dmabuf_attach(struct dma_buf *buf, struct dma_buf_attachment *attach)
{
	struct drm_gem_object *obj = buf->priv;
	struct sgpu_device *sdev = to_sgpu(obj->dev);
	struct sgpu_bo *bo = to_sgpu_bo(obj);
	struct sgpu_waiter w = {};
	struct sghw_cmd cmd;
	int ret = 0;

	if (!sgpu_attach_is_sgpu(attach)) {
		attach->peer2peer = false;
		return 0;
	}
	if (!(sdev->features & SGHW_FEAT_SHARING))
		return 0;
	dma_resv_lock(obj->resv, NULL);
	if (!bo->uuid_valid) {
		sgpu_cmd_fill(&cmd, SGHW_OP_EXPORT, bo->hw_handle, 0, 0, 0, 0, 0);
		ret = sgpu_cmd_sync(sdev, &cmd, &w);
		if (!ret) {
			memcpy(bo->uuid, w.uuid, sizeof(bo->uuid));
			bo->uuid_valid = true;
		}
	}
	dma_resv_unlock(obj->resv);
	return ret;
}

static int sgpu_dmabuf_pin(struct dma_buf_attachment *attach)
{
	struct sgpu_bo *bo = to_sgpu_bo(attach->dmabuf->priv);
	struct ttm_operation_ctx ctx = { .interruptible = true };
	struct ttm_place place = { .mem_type = TTM_PL_TT };
	struct ttm_placement pl = { .num_placement = 1, .placement = &place };
	int ret;

	dma_resv_assert_held(attach->dmabuf->resv);
	if (!sgpu_attach_is_sgpu(attach) && !bo->tbo.pin_count) {
		/* pages for everybody else */
		ret = ttm_bo_validate(&bo->tbo, &pl, &ctx);
		if (ret)
			return ret;
	}
	return sgpu_bo_pin(bo);
}

static void sgpu_dmabuf_unpin(struct dma_buf_attachment *attach)
{
	sgpu_bo_unpin(to_sgpu_bo(attach->dmabuf->priv));
}

static struct sg_table *sgpu_map_vram(struct sgpu_device *sdev, struct sgpu_bo *bo,
				      struct dma_buf_attachment *attach,
				      enum dma_data_direction dir)
{
	u64 size = bo->tbo.base.size, off = sgpu_bo_vram_offset(bo);
	unsigned int n = DIV_ROUND_UP(size, SZ_1G), i;
	struct scatterlist *sg;
	struct sg_table *sgt;

	sgt = kzalloc(sizeof(*sgt), GFP_KERNEL);
	if (!sgt || sg_alloc_table(sgt, n, GFP_KERNEL)) {
		kfree(sgt);
		return ERR_PTR(-ENOMEM);
	}
	for_each_sgtable_sg(sgt, sg, i) {
		u64 len = min_t(u64, size - (u64)i * SZ_1G, SZ_1G);
		dma_addr_t addr;

		addr = dma_map_resource(attach->dev, sdev->bar2_base + off + (u64)i * SZ_1G,
					len, dir, DMA_ATTR_SKIP_CPU_SYNC);
		if (dma_mapping_error(attach->dev, addr)) {
			struct scatterlist *s2;
			unsigned int j;

			for_each_sgtable_sg(sgt, s2, j) {
				if (j == i)
					break;
				dma_unmap_resource(attach->dev, sg_dma_address(s2),
						   sg_dma_len(s2), dir, DMA_ATTR_SKIP_CPU_SYNC);
			}
			sg_free_table(sgt);
			kfree(sgt);
			return ERR_PTR(-EIO);
		}
		sg_set_page(sg, NULL, len, 0);
		sg_dma_address(sg) = addr;
		sg_dma_len(sg) = len;
	}
	return sgt;
}

static struct sg_table *sgpu_dmabuf_map(struct dma_buf_attachment *attach,
					enum dma_data_direction dir)
{
	struct drm_gem_object *obj = attach->dmabuf->priv;
	struct sgpu_device *sdev = to_sgpu(obj->dev);
	struct sgpu_bo *bo = to_sgpu_bo(obj);
	bool p2p = sgpu_attach_is_sgpu(attach) && attach->peer2peer;
	struct sg_table *sgt;
	struct ttm_tt *tt;
	int ret;

	dma_resv_assert_held(obj->resv);
	if (!p2p && sgpu_bo_domain(bo) != SHAREGPU_DOMAIN_SYSTEM) {
		if (bo->tbo.pin_count)
			return ERR_PTR(-EBUSY);
		ret = sgpu_bo_set_domain(bo, SHAREGPU_DOMAIN_SYSTEM, true);
		if (ret)
			return ERR_PTR(ret);
	}
	if (sgpu_bo_domain(bo) == SHAREGPU_DOMAIN_VRAM)
		return sgpu_map_vram(sdev, bo, attach, dir);

	if (bo->tbo.resource->mem_type != TTM_PL_TT) {
		ret = sgpu_bo_set_domain(bo, SHAREGPU_DOMAIN_SYSTEM, true);
		if (ret)
			return ERR_PTR(ret);
	}
	tt = bo->tbo.ttm;
	if (!p2p) {
		/* hand the pages over up to date */
		ret = sgpu_bo_transfer(bo, false);
		if (ret)
			return ERR_PTR(ret);
	}
	sgt = drm_prime_pages_to_sg(obj->dev, tt->pages, tt->num_pages);
	if (IS_ERR(sgt))
		return sgt;
	ret = dma_map_sgtable(attach->dev, sgt, dir, DMA_ATTR_SKIP_CPU_SYNC);
	if (ret) {
		sg_free_table(sgt);
		kfree(sgt);
		return ERR_PTR(ret);
	}
	if (!p2p)
		bo->foreign_maps++;
	return sgt;
}

static void sgpu_dmabuf_unmap(struct dma_buf_attachment *attach, struct sg_table *sgt,
			      enum dma_data_direction dir)
{
	struct drm_gem_object *obj = attach->dmabuf->priv;
	struct sgpu_bo *bo = to_sgpu_bo(obj);
	bool p2p = sgpu_attach_is_sgpu(attach) && attach->peer2peer;
	struct scatterlist *sg;
	unsigned int i;

	if (sgt->sgl && !sg_page(sgt->sgl)) {
		for_each_sgtable_sg(sgt, sg, i)
			dma_unmap_resource(attach->dev, sg_dma_address(sg), sg_dma_len(sg),
					   dir, DMA_ATTR_SKIP_CPU_SYNC);
	} else {
		dma_unmap_sgtable(attach->dev, sgt, dir, DMA_ATTR_SKIP_CPU_SYNC);
		if (!p2p && bo->foreign_maps) {
			bo->foreign_maps--;
			/* the importer may have written the pages */
			if (dir != DMA_FROM_DEVICE && bo->backing)
				sgpu_bo_transfer(bo, true);
		}
	}
	sg_free_table(sgt);
	kfree(sgt);
}

static int sgpu_dmabuf_begin_cpu_access(struct dma_buf *buf, enum dma_data_direction dir)
{
	return sgpu_bo_cpu_access(to_sgpu_bo(buf->priv), false, dir);
}

static int sgpu_dmabuf_end_cpu_access(struct dma_buf *buf, enum dma_data_direction dir)
{
	return sgpu_bo_cpu_access(to_sgpu_bo(buf->priv), true, dir);
}

static int sgpu_dmabuf_mmap(struct dma_buf *buf, struct vm_area_struct *vma)
{
	return drm_gem_prime_mmap(buf->priv, vma);
}

static int sgpu_dmabuf_vmap(struct dma_buf *buf, struct iosys_map *map)
{
	struct sgpu_bo *bo = to_sgpu_bo(buf->priv);
	int ret;

	dma_resv_assert_held(buf->resv);
	ret = sgpu_bo_pin(bo);
	if (ret)
		return ret;
	ret = ttm_bo_vmap(&bo->tbo, map);
	if (ret)
		sgpu_bo_unpin(bo);
	return ret;
}

static void sgpu_dmabuf_vunmap(struct dma_buf *buf, struct iosys_map *map)
{
	struct sgpu_bo *bo = to_sgpu_bo(buf->priv);

	dma_resv_assert_held(buf->resv);
	ttm_bo_vunmap(&bo->tbo, map);
	sgpu_bo_unpin(bo);
}

const struct dma_buf_ops sgpu_dmabuf_ops = {
	.attach = sgpu_dmabuf_attach,
	.pin = sgpu_dmabuf_pin,
	.unpin = sgpu_dmabuf_unpin,
	.map_dma_buf = sgpu_dmabuf_map,
	.unmap_dma_buf = sgpu_dmabuf_unmap,
	.release = drm_gem_dmabuf_release,
	.begin_cpu_access = sgpu_dmabuf_begin_cpu_access,
	.end_cpu_access = sgpu_dmabuf_end_cpu_access,
	.mmap = sgpu_dmabuf_mmap,
	.vmap = sgpu_dmabuf_vmap,
	.vunmap = sgpu_dmabuf_vunmap,
};

struct dma_buf *sgpu_gem_prime_export(struct drm_gem_object *obj, int flags)
{
	DEFINE_DMA_BUF_EXPORT_INFO(exp_info);
	struct dma_buf *buf;

	if (!sgpu_is_bo(obj))
		return ERR_PTR(-EINVAL);
	exp_info.ops = &sgpu_dmabuf_ops;
	exp_info.size = obj->size;
	exp_info.flags = flags;
	exp_info.priv = obj;
	exp_info.resv = obj->resv;
	buf = drm_gem_dmabuf_export(obj->dev, &exp_info);
	if (!IS_ERR(buf))
		to_sgpu_bo(obj)->exported = true;
	return buf;
}

/* ------------------------------------------------------------------ importer */

/*
 * The exporter moved the buffer (or events were lost): drop our mapping
 * (resv held). The device removes the window mapping itself before the
 * moving command completes; UNMAP_IMPORT is idempotent (contract 1.1: OK,
 * result 0, when nothing is mapped), so unmapping unconditionally also
 * covers a mapping whose BO_INVALIDATED was lost, and the next MAP_IMPORT
 * at the same window offset cannot find it busy.
 */
void sgpu_import_invalidate(struct sgpu_import *imp)
{
	struct sgpu_device *sdev = to_sgpu(imp->base.dev);

	dma_resv_assert_held(imp->base.resv);
	imp->invalidations++;
	if (imp->win_mapped) {
		imp->win_mapped = false;
		drm_vma_node_unmap(&imp->base.vma_node, sdev->drm.anon_inode->i_mapping);
		if (!READ_ONCE(sdev->dead))
			sgpu_hw_simple(sdev, SGHW_OP_UNMAP_IMPORT, imp->hw_handle, 0, 0, 0, 0,
				       NULL);
	}
	if (imp->sgt) {
		if (imp->backing) {
			sgpu_hw_simple(sdev, SGHW_OP_DETACH_BACKING, imp->hw_handle, 0, 0, 0, 0,
				       NULL);
			imp->backing = false;
		}
		dma_buf_unmap_attachment(imp->attach, imp->sgt, DMA_BIDIRECTIONAL);
		imp->sgt = NULL;
	}
}

static void sgpu_move_notify(struct dma_buf_attachment *attach)
{
	struct sgpu_import *imp = attach->importer_priv;

	atomic64_inc(&to_sgpu(imp->base.dev)->move_notifies);
	sgpu_import_invalidate(imp);
}

const struct dma_buf_attach_ops sgpu_importer_ops = {
	.allow_peer2peer = true,
	.move_notify = sgpu_move_notify,
};

/* Re-map lazily before a job (resv held). */
int sgpu_import_prepare(struct sgpu_import *imp)
{
	struct sgpu_device *sdev = to_sgpu(imp->base.dev);
	struct sg_table *sgt;
	long lret;
	int ret;

	dma_resv_assert_held(imp->base.resv);
	if (!imp->sgt) {
		sgt = dma_buf_map_attachment(imp->attach, DMA_BIDIRECTIONAL);
		if (IS_ERR(sgt))
			return PTR_ERR(sgt);
		imp->sgt = sgt;
	}
	if (!imp->p2p && !imp->backing) {
		ret = sgpu_hw_attach_backing(sdev, imp->hw_handle, imp->sgt, NULL, 0, NULL);
		if (ret)
			return ret;
		imp->backing = true;
	}
	/* the exporter's move (kernel) fences must be done before we touch it */
	lret = dma_resv_wait_timeout(imp->base.resv, DMA_RESV_USAGE_KERNEL, true,
				     MAX_SCHEDULE_TIMEOUT);
	return lret < 0 ? lret : 0;
}

/* p2p import: map it in our import window (resv held). */
static int sgpu_import_map_window(struct sgpu_import *imp)
{
	struct sgpu_device *sdev = to_sgpu(imp->base.dev);
	int ret;

	if (imp->win_mapped)
		return 0;
	ret = sgpu_import_prepare(imp);
	if (ret)
		return ret;
	ret = sgpu_hw_map_import(sdev, &imp->win, imp->base.size, imp->hw_handle,
				 &imp->win_bar_off);
	if (ret)
		return ret;
	imp->win_mapped = true;
	return 0;
}

static vm_fault_t sgpu_import_fault(struct vm_fault *vmf)
{
	struct drm_gem_object *obj = vmf->vma->vm_private_data;
	struct sgpu_import *imp = to_sgpu_import(obj);
	vm_fault_t vret;

	if (dma_resv_lock_interruptible(obj->resv, NULL))
		return VM_FAULT_NOPAGE;
	if (sgpu_import_map_window(imp))
		vret = VM_FAULT_SIGBUS;
	else
		vret = sgpu_win_insert_pfn(vmf, imp->win_bar_off);
	dma_resv_unlock(obj->resv);
	return vret;
}

static const struct vm_operations_struct sgpu_import_vm_ops = {
	.fault = sgpu_import_fault,
	.open = drm_gem_vm_open,
	.close = drm_gem_vm_close,
};

static int sgpu_import_mmap(struct drm_gem_object *obj, struct vm_area_struct *vma)
{
	struct sgpu_import *imp = to_sgpu_import(obj);
	int ret;

	if (!imp->p2p) {
		vma->vm_private_data = NULL;
		vma->vm_ops = NULL;
		ret = dma_buf_mmap(obj->dma_buf, vma, 0);
		if (!ret) {
			vm_flags_set(vma, VM_DONTEXPAND);
			drm_gem_object_put(obj);
		}
		return ret;
	}
	vm_flags_set(vma, VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_page_prot = pgprot_writecombine(vm_get_page_prot(vma->vm_flags));
	return 0;
}

static void sgpu_import_free(struct drm_gem_object *obj)
{
	struct sgpu_import *imp = to_sgpu_import(obj);
	struct sgpu_device *sdev = to_sgpu(obj->dev);
	struct dma_buf *buf = imp->attach->dmabuf;

	xa_cmpxchg(&sdev->handles, imp->hw_handle, obj, NULL, GFP_KERNEL);
	mutex_lock(&sdev->obj_lock);
	list_del(&imp->link);
	mutex_unlock(&sdev->obj_lock);

	dma_resv_lock(obj->resv, NULL);
	sgpu_import_invalidate(imp);	/* UNMAP_IMPORT included */
	dma_resv_unlock(obj->resv);
	if (drm_mm_node_allocated(&imp->win)) {
		mutex_lock(&sdev->win_lock);
		drm_mm_remove_node(&imp->win);
		mutex_unlock(&sdev->win_lock);
	}
	if (!READ_ONCE(sdev->dead))
		sgpu_hw_bo_destroy(sdev, imp->hw_handle);
	sgpu_objects_unreserve(sdev);
	dma_buf_detach(buf, imp->attach);
	dma_buf_put(buf);
	drm_gem_object_release(obj);
	kfree(imp);
}

static enum drm_gem_object_status sgpu_import_status(struct drm_gem_object *obj)
{
	return DRM_GEM_OBJECT_RESIDENT;
}

const struct drm_gem_object_funcs sgpu_import_gem_funcs = {
	.free = sgpu_import_free,
	.mmap = sgpu_import_mmap,
	.vm_ops = &sgpu_import_vm_ops,
	.status = sgpu_import_status,
};

static struct drm_gem_object *sgpu_find_import(struct sgpu_device *sdev, struct dma_buf *buf)
{
	struct sgpu_import *imp;
	struct drm_gem_object *found = NULL;

	mutex_lock(&sdev->obj_lock);
	list_for_each_entry(imp, &sdev->imports, link) {
		if (imp->attach->dmabuf != buf)
			continue;
		if (kref_get_unless_zero(&imp->base.refcount))
			found = &imp->base;
		break;
	}
	mutex_unlock(&sdev->obj_lock);
	return found;
}

struct drm_gem_object *sgpu_gem_prime_import(struct drm_device *dev, struct dma_buf *buf)
{
	struct sgpu_device *sdev = to_sgpu(dev);
	struct dma_buf_attachment *attach;
	struct drm_gem_object *obj;
	struct sgpu_import *imp;
	bool p2p = false;
	int ret;

	if (buf->ops == &sgpu_dmabuf_ops) {
		obj = buf->priv;
		if (obj->dev == dev) {
			/* same device: the very same object */
			drm_gem_object_get(obj);
			return obj;
		}
		p2p = (sdev->features & SGHW_FEAT_SHARING) &&
		      (to_sgpu(obj->dev)->features & SGHW_FEAT_SHARING);
	}
	/* one object per dma-buf and device: the device import handle is shared */
	obj = sgpu_find_import(sdev, buf);
	if (obj)
		return obj;

	ret = sgpu_objects_reserve(sdev);
	if (ret)
		return ERR_PTR(ret);
	imp = kzalloc(sizeof(*imp), GFP_KERNEL);
	if (!imp) {
		sgpu_objects_unreserve(sdev);
		return ERR_PTR(-ENOMEM);
	}
	obj = &imp->base;
	obj->funcs = &sgpu_import_gem_funcs;
	drm_gem_private_object_init(dev, obj, buf->size);
	obj->resv = buf->resv;
	imp->p2p = p2p;
	INIT_LIST_HEAD(&imp->link);

	attach = dma_buf_dynamic_attach(buf, dev->dev, &sgpu_importer_ops, imp);
	if (IS_ERR(attach)) {
		ret = PTR_ERR(attach);
		goto err_free;
	}
	imp->attach = attach;

	if (p2p) {
		struct sgpu_bo *exp = to_sgpu_bo(buf->priv);
		struct sgpu_waiter w = {};
		struct sghw_cmd cmd;

		sgpu_cmd_fill(&cmd, SGHW_OP_IMPORT, 0, 0, 0, 0, 0, 0);
		dma_resv_lock(buf->resv, NULL);
		ret = exp->uuid_valid ? 0 : -EIO;
		memcpy(cmd.uuid, exp->uuid, sizeof(cmd.uuid));
		dma_resv_unlock(buf->resv);
		if (!ret)
			ret = sgpu_cmd_sync(sdev, &cmd, &w);
		if (ret)
			goto err_detach;
		imp->hw_handle = w.out_handle;
	} else {
		ret = sgpu_hw_bo_create(sdev, PAGE_ALIGN(buf->size), SGHW_PLACEMENT_SYSTEM,
					&imp->hw_handle, NULL);
		if (ret)
			goto err_detach;
	}
	ret = xa_err(xa_store(&sdev->handles, imp->hw_handle, obj, GFP_KERNEL));
	if (ret)
		goto err_destroy;

	get_dma_buf(buf);
	obj->import_attach = attach;
	mutex_lock(&sdev->obj_lock);
	list_add_tail(&imp->link, &sdev->imports);
	mutex_unlock(&sdev->obj_lock);
	drm_dbg_driver(dev, "imported %s dma-buf (%zu bytes) as hw handle %u\n",
		       p2p ? "sharegpu (p2p)" : buf->exp_name, buf->size, imp->hw_handle);
	return obj;

err_destroy:
	sgpu_hw_bo_destroy(sdev, imp->hw_handle);
err_detach:
	dma_buf_detach(buf, attach);
err_free:
	drm_gem_object_release(obj);
	kfree(imp);
	sgpu_objects_unreserve(sdev);
	return ERR_PTR(ret);
}
