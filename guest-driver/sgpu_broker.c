// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: sharing buffers between VMs through the host broker (device
 * contract 1.6, docs/hardware.md section 13; uAPI in sharegpu_drm.h).
 *
 * Exporter side: BROKER_EXPORT gives a native BO's storage to the broker. The
 * device keeps a broker-exported BO in SYSTEM storage of its own, so the
 * driver moves it to the SYSTEM domain first and keeps it there (placement
 * SYSTEM only) until it is unexported or the export is lost (BO_REVOKED with
 * SGHW_EVT_F_EXPORT).
 *
 * Importer side: BROKER_IMPORT gives a remote import handle; its GEM object
 * (struct sgpu_remote) is mapped to user space through the device's import
 * window (zero copy: the window shows the exporting VM's pages). BO_INVALIDATED
 * drops the mapping (the next fault or CPU access maps it again); BO_REVOKED
 * kills it: from then on every fault is SIGBUS and every mmap, CPU access and
 * job -ENODEV, without waiting for anyone (as vfio-pci's dma-buf revoke).
 *
 * Layer: below the ioctl table, the job submission and the event dispatch;
 * calls BO/GEM objects (sgpu_gem.c) and the command layer.
 */
#include <linux/delay.h>
#include <linux/dma-resv.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/string.h>

#include <drm/drm_print.h>
#include <drm/drm_vma_manager.h>

#include "sgpu_drv.h"

/* BROKER_IMPORT racing with the BO_DESTROY of the same device handle: retries */
#define SGPU_BROKER_IMPORT_RETRIES	1000

static bool sgpu_peer_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/*
 * Check a uAPI VM name into @out (a struct sghw_peer_name in SGPU_AUX_SIZE
 * bytes). @want: a name is required; else the field must be all zero.
 */
static int sgpu_peer_name(const char *peer, bool want, u8 *out)
{
	size_t len = strnlen(peer, SHAREGPU_BROKER_NAME_LEN), i;

	BUILD_BUG_ON(sizeof(struct sghw_peer_name) != SHAREGPU_BROKER_NAME_LEN);
	BUILD_BUG_ON(SHAREGPU_BROKER_NAME_LEN > SGPU_AUX_SIZE);
	memset(out, 0, SGPU_AUX_SIZE);
	if (!want)
		return memchr_inv(peer, 0, SHAREGPU_BROKER_NAME_LEN) ? -EINVAL : 0;
	if (!len || len == SHAREGPU_BROKER_NAME_LEN)
		return -EINVAL;
	for (i = 0; i < len; i++)
		if (!sgpu_peer_char_ok(peer[i]))
			return -EINVAL;
	if (memchr_inv(peer + len, 0, SHAREGPU_BROKER_NAME_LEN - len))
		return -EINVAL;
	memcpy(out, peer, len);
	return 0;
}

static bool sgpu_has_broker(struct drm_device *dev)
{
	return to_sgpu(dev)->features & SGHW_FEAT_BROKER;
}

/*
 * The exporter ioctls' arguments checked (@bad: flags or pad set; @want_peer:
 * @peer must name a VM, else be all zero; its sghw_peer_name goes to @name),
 * then the broker feature, then the BO: a native BO of this file, returned
 * with its reservation locked.
 */
static struct sgpu_bo *sgpu_broker_lock_bo(struct drm_device *dev, struct drm_file *file,
					   u32 handle, bool bad, u32 right, const char *peer,
					   bool want_peer, u8 *name)
{
	struct drm_gem_object *obj;
	int ret;

	if (bad || right > SHAREGPU_BROKER_RIGHT_READ_WRITE)
		return ERR_PTR(-EINVAL);
	if (peer) {
		ret = sgpu_peer_name(peer, want_peer, name);
		if (ret)
			return ERR_PTR(ret);
	}
	if (!sgpu_has_broker(dev))
		return ERR_PTR(-EOPNOTSUPP);
	obj = drm_gem_object_lookup(file, handle);
	if (!obj)
		return ERR_PTR(-ENOENT);
	if (!sgpu_is_bo(obj)) {
		drm_gem_object_put(obj);
		return ERR_PTR(-EINVAL);
	}
	ret = dma_resv_lock_interruptible(obj->resv, NULL);
	if (ret) {
		drm_gem_object_put(obj);
		return ERR_PTR(ret);
	}
	return to_sgpu_bo(obj);
}

static void sgpu_broker_unlock_bo(struct sgpu_bo *bo)
{
	dma_resv_unlock(bo->tbo.base.resv);
	drm_gem_object_put(&bo->tbo.base);
}

/* The BO is no longer broker-exported (resv held): its own placement again. */
static void sgpu_bo_broker_clear(struct sgpu_bo *bo)
{
	bo->broker_exported = false;
	memset(bo->broker_id, 0, sizeof(bo->broker_id));
	sgpu_bo_set_placement(bo, bo->domains);
}

int sgpu_ioctl_broker_export(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_broker_export *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	u8 name[SGPU_AUX_SIZE] __aligned(8);
	struct sgpu_waiter w = { .aux_in = name };
	struct sghw_cmd cmd;
	struct sgpu_bo *bo;
	int ret;

	bo = sgpu_broker_lock_bo(dev, file, args->handle, args->flags || args->pad, args->right,
				 args->peer, args->right != SHAREGPU_BROKER_RIGHT_NONE, name);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	if (!bo->broker_exported) {
		/* the device keeps it in SYSTEM storage of its own from now on */
		ret = sgpu_bo_set_domain(bo, SHAREGPU_DOMAIN_SYSTEM, true);
		if (ret)
			goto out;
		sgpu_bo_set_placement(bo, SHAREGPU_DOMAIN_SYSTEM);
	}
	sgpu_cmd_fill(&cmd, SGHW_OP_BROKER_EXPORT, bo->hw_handle, 0, args->right, 0, 0, 0);
	ret = sgpu_cmd_sync(sdev, &cmd, &w);
	if (ret) {
		if (!bo->broker_exported)
			sgpu_bo_broker_clear(bo);
		goto out;
	}
	bo->broker_exported = true;
	memcpy(bo->broker_id, w.uuid, sizeof(bo->broker_id));
	memcpy(args->id, w.uuid, sizeof(args->id));
	args->size = w.result;
out:
	sgpu_broker_unlock_bo(bo);
	return ret;
}

int sgpu_ioctl_broker_grant(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_broker_grant *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	u8 name[SGPU_AUX_SIZE] __aligned(8);
	struct sgpu_waiter w = { .aux_in = name };
	struct sghw_cmd cmd;
	struct sgpu_bo *bo;
	int ret;

	bo = sgpu_broker_lock_bo(dev, file, args->handle, args->flags || args->pad, args->right,
				 args->peer, true, name);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	if (!bo->broker_exported) {
		ret = -EINVAL;
		goto out;
	}
	sgpu_cmd_fill(&cmd, SGHW_OP_BROKER_GRANT, bo->hw_handle, 0, args->right, 0, 0, 0);
	ret = sgpu_cmd_sync(sdev, &cmd, &w);
out:
	sgpu_broker_unlock_bo(bo);
	return ret;
}

int sgpu_ioctl_broker_unexport(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_broker_unexport *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	struct sgpu_bo *bo;
	int ret;

	bo = sgpu_broker_lock_bo(dev, file, args->handle, args->flags, 0, NULL, false, NULL);
	if (IS_ERR(bo))
		return PTR_ERR(bo);
	if (!bo->broker_exported) {
		ret = -EINVAL;
		goto out;
	}
	ret = sgpu_hw_simple(sdev, SGHW_OP_BROKER_UNEXPORT, bo->hw_handle, 0, 0, 0, 0, NULL);
	if (!ret)
		sgpu_bo_broker_clear(bo);
out:
	sgpu_broker_unlock_bo(bo);
	return ret;
}

/* BO_REVOKED with SGHW_EVT_F_EXPORT: the broker connection lost the export. */
void sgpu_bo_broker_lost(struct sgpu_bo *bo)
{
	dma_resv_lock(bo->tbo.base.resv, NULL);
	if (bo->broker_exported)
		sgpu_bo_broker_clear(bo);
	dma_resv_unlock(bo->tbo.base.resv);
}

/* ------------------------------------------------------------------ remote imports */

/* resv held */
int sgpu_remote_usable(struct sgpu_remote *rem)
{
	dma_resv_assert_held(rem->base.resv);
	return rem->revoked ? -ENODEV : 0;
}

/* The import is dead (resv held): nothing maps it any more. */
void sgpu_remote_revoke(struct sgpu_remote *rem, u32 reason)
{
	struct sgpu_device *sdev = to_sgpu(rem->base.dev);

	dma_resv_assert_held(rem->base.resv);
	if (!rem->revoked)
		drm_dbg_driver(&sdev->drm, "remote import %#x revoked (reason %u)\n",
			       rem->hw_handle, reason);
	if (!rem->revoked || reason)
		rem->revoke_reason = reason;
	rem->revoked = true;
	/* the device removed the window mapping before the event */
	rem->win_mapped = false;
	drm_vma_node_unmap(&rem->base.vma_node, sdev->drm.anon_inode->i_mapping);
}

/*
 * The exporter moved the buffer (resv held): drop the CPU mappings; the next
 * fault maps the new storage. UNMAP_IMPORT is idempotent (a lost event).
 */
void sgpu_remote_invalidate(struct sgpu_remote *rem)
{
	struct sgpu_device *sdev = to_sgpu(rem->base.dev);

	dma_resv_assert_held(rem->base.resv);
	rem->invalidations++;
	drm_vma_node_unmap(&rem->base.vma_node, sdev->drm.anon_inode->i_mapping);
	if (rem->win_mapped) {
		rem->win_mapped = false;
		if (!rem->revoked && !READ_ONCE(sdev->dead))
			sgpu_hw_simple(sdev, SGHW_OP_UNMAP_IMPORT, rem->hw_handle, 0, 0, 0, 0,
				       NULL);
	}
}

/* Map it in the import window (resv held). */
static int sgpu_remote_map(struct sgpu_remote *rem)
{
	struct sgpu_device *sdev = to_sgpu(rem->base.dev);
	int ret;

	if (rem->revoked)
		return -ENODEV;
	if (rem->win_mapped)
		return 0;
	ret = sgpu_hw_map_import(sdev, &rem->win, rem->base.size, rem->hw_handle,
				 &rem->win_bar_off);
	if (ret == -ENODEV)	/* revoked, its event still on the way */
		sgpu_remote_revoke(rem, 0);
	if (ret)
		return ret;
	rem->win_mapped = true;
	return 0;
}

/*
 * begin/end_cpu_access on another VM's pages, the same two-way barrier as on
 * a local BO for what this VM's device did: begin waits for this VM's jobs
 * on the import and, on a non-coherent device, flushes their writes still in
 * its cache to the shared pages; end after a CPU write invalidates that cache
 * so the device's next read sees the write. The other VM's caches are its own
 * driver's to maintain (docs/broker.md, "Jobs across VMs").
 */
int sgpu_remote_cpu_access(struct sgpu_remote *rem, bool end,
			   enum dma_data_direction dir)
{
	struct sgpu_device *sdev = to_sgpu(rem->base.dev);
	struct dma_resv *resv = rem->base.resv;
	int ret;

	ret = dma_resv_lock_interruptible(resv, NULL);
	if (ret)
		return ret;
	if (end) {
		ret = sgpu_remote_usable(rem);
		if (!ret && !sdev->coherent && dir != DMA_FROM_DEVICE)
			ret = sgpu_hw_simple(sdev, SGHW_OP_CACHE_INVALIDATE, rem->hw_handle,
					     0, 0, 0, rem->base.size, NULL);
		goto out;
	}
	ret = sgpu_cpu_access_wait(resv, dir);
	if (!ret)
		ret = sgpu_remote_map(rem);
	if (!ret && !sdev->coherent)
		ret = sgpu_hw_simple(sdev, SGHW_OP_CACHE_FLUSH, rem->hw_handle, 0, 0, 0,
				     rem->base.size, NULL);
out:
	dma_resv_unlock(resv);
	return ret;
}

static vm_fault_t sgpu_remote_fault(struct vm_fault *vmf)
{
	struct drm_gem_object *obj = vmf->vma->vm_private_data;
	struct sgpu_remote *rem = to_sgpu_remote(obj);
	vm_fault_t vret;

	if (dma_resv_lock_interruptible(obj->resv, NULL))
		return VM_FAULT_NOPAGE;
	if (sgpu_remote_map(rem))
		vret = VM_FAULT_SIGBUS;
	else
		vret = sgpu_win_insert_pfn(vmf, rem->win_bar_off);
	dma_resv_unlock(obj->resv);
	return vret;
}

static const struct vm_operations_struct sgpu_remote_vm_ops = {
	.fault = sgpu_remote_fault,
	.open = drm_gem_vm_open,
	.close = drm_gem_vm_close,
};

static int sgpu_remote_mmap(struct drm_gem_object *obj, struct vm_area_struct *vma)
{
	struct sgpu_remote *rem = to_sgpu_remote(obj);

	if (READ_ONCE(rem->revoked))
		return -ENODEV;
	if (!rem->writable) {
		/* a READ grant: mapped read-only, never made writable later */
		if (vma->vm_flags & VM_WRITE)
			return -EACCES;
		vm_flags_clear(vma, VM_MAYWRITE);
	}
	vm_flags_set(vma, VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_page_prot = pgprot_writecombine(vm_get_page_prot(vma->vm_flags));
	return 0;
}

static void sgpu_remote_free(struct drm_gem_object *obj)
{
	struct sgpu_remote *rem = to_sgpu_remote(obj);
	struct sgpu_device *sdev = to_sgpu(obj->dev);

	mutex_lock(&sdev->broker_lock);
	xa_cmpxchg(&sdev->handles, rem->hw_handle, obj, NULL, GFP_KERNEL);
	if (!READ_ONCE(sdev->dead)) {
		if (rem->win_mapped && !rem->revoked)
			sgpu_hw_simple(sdev, SGHW_OP_UNMAP_IMPORT, rem->hw_handle, 0, 0, 0, 0,
				       NULL);
		sgpu_hw_bo_destroy(sdev, rem->hw_handle);	/* releases the import */
	}
	mutex_unlock(&sdev->broker_lock);
	if (drm_mm_node_allocated(&rem->win)) {
		mutex_lock(&sdev->win_lock);
		drm_mm_remove_node(&rem->win);
		mutex_unlock(&sdev->win_lock);
	}
	sgpu_objects_unreserve(sdev);
	drm_gem_object_release(obj);
	kfree(rem);
}

static enum drm_gem_object_status sgpu_remote_status(struct drm_gem_object *obj)
{
	return DRM_GEM_OBJECT_RESIDENT;
}

const struct drm_gem_object_funcs sgpu_remote_gem_funcs = {
	.free = sgpu_remote_free,
	.mmap = sgpu_remote_mmap,
	.vm_ops = &sgpu_remote_vm_ops,
	.status = sgpu_remote_status,
};

/*
 * The object of device handle @handle (broker_lock held): a new reference to
 * the existing one, a new one, or -EAGAIN when the existing one is being
 * freed (its BO_DESTROY is waiting for broker_lock).
 */
static struct drm_gem_object *sgpu_remote_get(struct sgpu_device *sdev, u32 handle,
					      u64 size, bool writable)
{
	struct drm_gem_object *obj;
	struct sgpu_remote *rem;
	int ret;

	lockdep_assert_held(&sdev->broker_lock);
	xa_lock(&sdev->handles);
	obj = xa_load(&sdev->handles, handle);
	if (obj && !kref_get_unless_zero(&obj->refcount))
		obj = ERR_PTR(-EAGAIN);
	xa_unlock(&sdev->handles);
	if (obj) {
		if (!IS_ERR(obj) && !sgpu_is_remote(obj)) {
			drm_gem_object_put(obj);
			return ERR_PTR(-EIO);
		}
		return obj;
	}

	ret = sgpu_objects_reserve(sdev);
	if (ret)
		return ERR_PTR(ret);
	rem = kzalloc(sizeof(*rem), GFP_KERNEL);
	if (!rem) {
		sgpu_objects_unreserve(sdev);
		return ERR_PTR(-ENOMEM);
	}
	obj = &rem->base;
	obj->funcs = &sgpu_remote_gem_funcs;
	drm_gem_private_object_init(&sdev->drm, obj, size);
	rem->hw_handle = handle;
	rem->writable = writable;
	ret = xa_err(xa_store(&sdev->handles, handle, obj, GFP_KERNEL));
	if (ret) {
		drm_gem_object_release(obj);
		kfree(rem);
		sgpu_objects_unreserve(sdev);
		return ERR_PTR(ret);
	}
	return obj;
}

int sgpu_ioctl_broker_import(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct drm_sharegpu_broker_import *args = data;
	struct sgpu_device *sdev = to_sgpu(dev);
	struct drm_gem_object *obj;
	struct sgpu_waiter w = {};
	struct sghw_cmd cmd;
	unsigned int tries = 0;
	bool created;
	u64 size;
	int ret;

	if (args->flags || args->pad)
		return -EINVAL;
	if (!sgpu_has_broker(dev))
		return -EOPNOTSUPP;
again:
	mutex_lock(&sdev->broker_lock);
	sgpu_cmd_fill(&cmd, SGHW_OP_BROKER_IMPORT, 0, 0, 0, 0, 0, 0);
	memcpy(cmd.uuid, args->id, sizeof(cmd.uuid));
	ret = sgpu_cmd_sync(sdev, &cmd, &w);
	if (ret) {
		mutex_unlock(&sdev->broker_lock);
		return ret;
	}
	size = w.result & ~(u64)SGHW_BROKER_IMPORT_WRITABLE;
	if (!(w.out_handle & SGHW_REMOTE_HANDLE_BIT) || !size || !PAGE_ALIGNED(size)) {
		drm_err(&sdev->drm, "BROKER_IMPORT: bad handle %#x or size %#llx\n",
			w.out_handle, size);
		mutex_unlock(&sdev->broker_lock);
		return -EIO;
	}
	created = !xa_load(&sdev->handles, w.out_handle);
	obj = sgpu_remote_get(sdev, w.out_handle, size,
			      w.result & SGHW_BROKER_IMPORT_WRITABLE);
	if (IS_ERR(obj) && created)	/* release what the device made for us */
		sgpu_hw_bo_destroy(sdev, w.out_handle);
	mutex_unlock(&sdev->broker_lock);
	if (obj == ERR_PTR(-EAGAIN) && ++tries < SGPU_BROKER_IMPORT_RETRIES) {
		usleep_range(100, 1000);	/* let the dying object's free run */
		goto again;
	}
	if (IS_ERR(obj))
		return PTR_ERR(obj) == -EAGAIN ? -EBUSY : PTR_ERR(obj);
	args->size = size;
	args->out_flags = to_sgpu_remote(obj)->writable ? SHAREGPU_BROKER_IMPORT_WRITABLE : 0;
	ret = drm_gem_handle_create(file, obj, &args->handle);
	drm_gem_object_put(obj);
	return ret;
}
