// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu: DRM render driver for the emulated sharegpu PCI device.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/slab.h>

#include <drm/drm_drv.h>
#include <drm/drm_file.h>
#include <drm/drm_gem.h>
#include <drm/drm_gem_ttm_helper.h>
#include <drm/drm_ioctl.h>
#include <drm/drm_managed.h>
#include <drm/drm_prime.h>
#include <drm/drm_print.h>

#include "sgpu_drv.h"

unsigned int sgpu_max_kept_jobs = SGPU_DEF_MAX_KEPT_JOBS;
module_param_named(max_kept_jobs, sgpu_max_kept_jobs, uint, 0644);
MODULE_PARM_DESC(max_kept_jobs, "SUBMIT_F_KEEP records a file may hold (-EBUSY beyond)");

unsigned int sgpu_max_active_jobs = SGPU_DEF_MAX_ACTIVE_JOBS;
module_param_named(max_active_jobs, sgpu_max_active_jobs, uint, 0644);
MODULE_PARM_DESC(max_active_jobs, "jobs a file may have in flight (-EAGAIN beyond)");

unsigned int sgpu_max_objects = SGPU_DEF_MAX_OBJECTS;
module_param_named(max_objects, sgpu_max_objects, uint, 0644);
MODULE_PARM_DESC(max_objects, "live BOs + imports per device (-ENOSPC beyond)");

unsigned int sgpu_sys_mem_limit_mb;
module_param_named(sys_mem_limit_mb, sgpu_sys_mem_limit_mb, uint, 0644);
MODULE_PARM_DESC(sys_mem_limit_mb,
		 "guest RAM for BO pages, all devices (-ENOMEM beyond; 0 = TTM's limit, half of RAM)");

unsigned int sgpu_job_timeout_ms = 10000;
module_param_named(job_timeout_ms, sgpu_job_timeout_ms, uint, 0444);
MODULE_PARM_DESC(job_timeout_ms,
		 "a job not complete after this is aborted (-ETIMEDOUT; 0 = never; per device in debugfs sharegpu_job_timeout_ms)");

static int sgpu_ioctl_get_info(struct drm_device *dev, void *data, struct drm_file *file)
{
	struct sgpu_device *sdev = to_sgpu(dev);
	struct drm_sharegpu_info *args = data;

	memset(args, 0, sizeof(*args));
	args->vram_size = sdev->vram_size;
	args->import_window_size = sdev->win_size;
	args->vram_used = ttm_resource_manager_usage(&sdev->vram.man);
	args->hw_version = sdev->version;
	args->hw_features = sdev->features;
	if (sdev->coherent)
		args->flags |= SHAREGPU_INFO_F_COHERENT;
	if (sdev->msix)
		args->flags |= SHAREGPU_INFO_F_MSIX;
	return 0;
}

static const struct drm_ioctl_desc sgpu_ioctls[] = {
	DRM_IOCTL_DEF_DRV(SHAREGPU_GET_INFO, sgpu_ioctl_get_info, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BO_CREATE, sgpu_ioctl_bo_create, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BO_MMAP_OFFSET, sgpu_ioctl_bo_mmap_offset, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_SUBMIT, sgpu_ioctl_submit, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_WAIT_BO, sgpu_ioctl_wait_bo, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_WAIT_JOB, sgpu_ioctl_wait_job, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BO_MOVE, sgpu_ioctl_bo_move, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BO_PIN, sgpu_ioctl_bo_pin, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BO_INFO, sgpu_ioctl_bo_info, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BO_CPU_ACCESS, sgpu_ioctl_bo_cpu_access, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BROKER_EXPORT, sgpu_ioctl_broker_export, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BROKER_GRANT, sgpu_ioctl_broker_grant, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BROKER_UNEXPORT, sgpu_ioctl_broker_unexport, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(SHAREGPU_BROKER_IMPORT, sgpu_ioctl_broker_import, DRM_RENDER_ALLOW),
};

static int sgpu_open(struct drm_device *dev, struct drm_file *file)
{
	struct sgpu_file *sfile;
	int ret;

	sfile = kzalloc(sizeof(*sfile), GFP_KERNEL);
	if (!sfile)
		return -ENOMEM;
	kref_init(&sfile->ref);
	ret = sgpu_file_open_jobs(to_sgpu(dev), sfile);
	if (ret) {
		kfree(sfile);
		return ret;
	}
	file->driver_priv = sfile;
	return 0;
}

static void sgpu_postclose(struct drm_device *dev, struct drm_file *file)
{
	struct sgpu_file *sfile = file->driver_priv;

	sgpu_file_release_jobs(sfile);
	sgpu_file_put(sfile);
}

static const struct file_operations sgpu_fops = {
	.owner = THIS_MODULE,
	DRM_GEM_FOPS,
	.show_fdinfo = drm_show_fdinfo,
};

static const struct drm_driver sgpu_drm_driver = {
	.driver_features = DRIVER_GEM | DRIVER_RENDER | DRIVER_SYNCOBJ |
			   DRIVER_SYNCOBJ_TIMELINE,
	.open = sgpu_open,
	.postclose = sgpu_postclose,
	.ioctls = sgpu_ioctls,
	.num_ioctls = ARRAY_SIZE(sgpu_ioctls),
	.fops = &sgpu_fops,
	.gem_prime_import = sgpu_gem_prime_import,
	.dumb_create = sgpu_dumb_create,
	.dumb_map_offset = drm_gem_dumb_map_offset,
	.show_fdinfo = sgpu_show_fdinfo,
	.debugfs_init = sgpu_debugfs_init,
	.name = SGPU_DRIVER_NAME,
	.desc = "sharegpu dma-buf sharing GPU",
	.major = 1,
	.minor = 0,
	.patchlevel = 0,
};

static int sgpu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct sgpu_device *sdev;
	struct drm_device *drm;
	int ret;

	sdev = devm_drm_dev_alloc(&pdev->dev, &sgpu_drm_driver, struct sgpu_device, drm);
	if (IS_ERR(sdev))
		return PTR_ERR(sdev);
	drm = &sdev->drm;
	sdev->pdev = pdev;
	pci_set_drvdata(pdev, sdev);
	xa_init(&sdev->handles);
	INIT_LIST_HEAD(&sdev->objects);
	INIT_LIST_HEAD(&sdev->imports);
	ret = drmm_mutex_init(drm, &sdev->obj_lock);
	if (ret)
		return ret;
	ret = drmm_mutex_init(drm, &sdev->broker_lock);
	if (ret)
		return ret;
	ret = drmm_mutex_init(drm, &sdev->win_lock);
	if (ret)
		return ret;

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	pci_set_master(pdev);
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;

	sdev->mmio = pcim_iomap_region(pdev, SGHW_BAR_MMIO, SGPU_DRIVER_NAME);
	if (IS_ERR(sdev->mmio))
		return PTR_ERR(sdev->mmio);
	ret = pcim_request_region(pdev, SGHW_BAR_VRAM, SGPU_DRIVER_NAME);
	if (ret)
		return ret;

	sdev->version = sgpu_rd(sdev, SGHW_REG_VERSION);
	if ((sdev->version >> 16) != SGHW_VERSION_MAJOR) {
		drm_err(drm, "unsupported device version %#x\n", sdev->version);
		return -ENODEV;
	}
	sdev->features = sgpu_rd(sdev, SGHW_REG_FEATURES);
	sdev->coherent = sdev->features & SGHW_FEAT_COHERENT;
	sdev->vram_size = sgpu_rd(sdev, SGHW_REG_VRAM_SIZE_LO) |
			  (u64)sgpu_rd(sdev, SGHW_REG_VRAM_SIZE_HI) << 32;
	sdev->win_offset = sgpu_rd(sdev, SGHW_REG_IMPORT_WIN_LO) |
			   (u64)sgpu_rd(sdev, SGHW_REG_IMPORT_WIN_HI) << 32;
	sdev->win_size = sgpu_rd(sdev, SGHW_REG_IMPORT_WIN_SIZE_LO) |
			 (u64)sgpu_rd(sdev, SGHW_REG_IMPORT_WIN_SIZE_HI) << 32;
	sdev->bar2_base = pci_resource_start(pdev, SGHW_BAR_VRAM);
	sdev->bar2_len = pci_resource_len(pdev, SGHW_BAR_VRAM);
	if (!sdev->vram_size || sdev->vram_size > sdev->bar2_len ||
	    sdev->win_offset + sdev->win_size > sdev->bar2_len) {
		drm_err(drm, "inconsistent BAR2 (%pa) / VRAM size %llu\n", &sdev->bar2_len,
			sdev->vram_size);
		return -ENODEV;
	}

	sgpu_event_init(sdev);
	ret = sgpu_hw_init(sdev);
	if (ret)
		return ret;
	ret = sgpu_sched_init(sdev);
	if (ret)
		goto err_hw;
	ret = sgpu_ttm_init(sdev);
	if (ret)
		goto err_sched;
	ret = drm_dev_register(drm, 0);
	if (ret)
		goto err_sched;

	drm_info(drm, "sharegpu %u.%u: %llu MiB VRAM, features %#x (%scoherent), %s\n",
		 sdev->version >> 16, sdev->version & 0xffff, sdev->vram_size >> 20,
		 sdev->features, sdev->coherent ? "" : "non-", sdev->msix ? "MSI-X" : "INTx");
	return 0;

err_sched:
	sgpu_hw_fini(sdev);
	sgpu_sched_fini(sdev);
	return ret;
err_hw:
	sgpu_hw_fini(sdev);
	return ret;
}

static void sgpu_remove(struct pci_dev *pdev)
{
	struct sgpu_device *sdev = pci_get_drvdata(pdev);

	drm_dev_unplug(&sdev->drm);
	/* cancels the jobs on the ring; drm_sched then sees their fences signal */
	sgpu_hw_fini(sdev);
	sgpu_sched_fini(sdev);
}

static void sgpu_shutdown(struct pci_dev *pdev)
{
	struct sgpu_device *sdev = pci_get_drvdata(pdev);

	sgpu_wr(sdev, SGHW_REG_INT_MASK, 0);
}

static const struct pci_device_id sgpu_pci_ids[] = {
	{ PCI_DEVICE(SGHW_PCI_VENDOR_ID, SGHW_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, sgpu_pci_ids);

static struct pci_driver sgpu_pci_driver = {
	.name = SGPU_DRIVER_NAME,
	.id_table = sgpu_pci_ids,
	.probe = sgpu_probe,
	.remove = sgpu_remove,
	.shutdown = sgpu_shutdown,
};
module_pci_driver(sgpu_pci_driver);

MODULE_DESCRIPTION("sharegpu DRM driver");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS(DMA_BUF);
