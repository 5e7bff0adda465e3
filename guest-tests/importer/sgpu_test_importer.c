// SPDX-License-Identifier: GPL-2.0
/*
 * sgpu_test_importer: a foreign (non-sharegpu) dynamic dma-buf importer, for
 * the guest tests only; see sgpu_test_importer.h for the interface.
 *
 * The guest kernel has no other dynamic importer (vgem attaches statically,
 * which pins), and sharegpu's own importer unmaps inside move_notify. This
 * one behaves as amdgpu does: move_notify only marks the mapping stale, the
 * unmap comes later. The dma-buf contract allows it ("mappings stay valid
 * and are not directly affected by this callback"); what an exporter must
 * not do is rely on the unmap for anything the move needs.
 */
#include <linux/dma-buf.h>
#include <linux/dma-direct.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/highmem.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "sgpu_test_importer.h"

struct sgpu_ti {
	struct mutex lock;		/* attach/detach; taken outside the resv */
	struct dma_buf *buf;
	struct dma_buf_attachment *attach;
	struct sg_table *sgt;		/* under the resv */
	bool stale;			/* under the resv */
	u32 move_notifies;		/* under the resv */
};

static struct miscdevice sgpu_ti_misc;

static void sgpu_ti_move_notify(struct dma_buf_attachment *attach)
{
	struct sgpu_ti *ti = attach->importer_priv;

	dma_resv_assert_held(attach->dmabuf->resv);
	ti->move_notifies++;
	if (ti->sgt)
		ti->stale = true;	/* unmapped lazily, as amdgpu does */
}

static const struct dma_buf_attach_ops sgpu_ti_attach_ops = {
	.allow_peer2peer = false,
	.move_notify = sgpu_ti_move_notify,
};

/* resv held */
static void sgpu_ti_unmap_locked(struct sgpu_ti *ti)
{
	if (!ti->sgt)
		return;
	dma_buf_unmap_attachment(ti->attach, ti->sgt, DMA_BIDIRECTIONAL);
	ti->sgt = NULL;
	ti->stale = false;
}

static int sgpu_ti_import(struct sgpu_ti *ti, int fd)
{
	struct dma_buf_attachment *attach;
	struct dma_buf *buf;
	int ret = 0;

	mutex_lock(&ti->lock);
	if (ti->attach) {
		ret = -EBUSY;
		goto out;
	}
	buf = dma_buf_get(fd);
	if (IS_ERR(buf)) {
		ret = PTR_ERR(buf);
		goto out;
	}
	attach = dma_buf_dynamic_attach(buf, sgpu_ti_misc.this_device, &sgpu_ti_attach_ops, ti);
	if (IS_ERR(attach)) {
		dma_buf_put(buf);
		ret = PTR_ERR(attach);
		goto out;
	}
	ti->buf = buf;
	ti->attach = attach;
	ti->move_notifies = 0;
out:
	mutex_unlock(&ti->lock);
	return ret;
}

static int sgpu_ti_map(struct sgpu_ti *ti)
{
	struct sg_table *sgt;
	int ret = 0;

	dma_resv_lock(ti->buf->resv, NULL);
	if (ti->stale)
		sgpu_ti_unmap_locked(ti);
	if (!ti->sgt) {
		sgt = dma_buf_map_attachment(ti->attach, DMA_BIDIRECTIONAL);
		if (IS_ERR(sgt))
			ret = PTR_ERR(sgt);
		else
			ti->sgt = sgt;
	}
	dma_resv_unlock(ti->buf->resv);
	return ret;
}

/* Write the pattern through the mapping's DMA addresses, as a device would. */
static int sgpu_ti_write(struct sgpu_ti *ti, const struct sgpu_ti_write *w)
{
	struct device *dev = sgpu_ti_misc.this_device;
	u64 pos = 0, end = w->offset + w->size;
	struct scatterlist *sg;
	unsigned int i;
	int ret = 0;

	if ((w->offset | w->size) & 3 || end < w->offset || end > ti->buf->size)
		return -EINVAL;
	dma_resv_lock(ti->buf->resv, NULL);
	if (!ti->sgt || ti->stale) {
		ret = ti->sgt ? -ESTALE : -ENXIO;
		goto out;
	}
	for_each_sgtable_dma_sg(ti->sgt, sg, i) {
		u64 len = sg_dma_len(sg), from = max(pos, w->offset), to = min(pos + len, end);
		phys_addr_t base = dma_to_phys(dev, sg_dma_address(sg));

		while (from < to) {
			phys_addr_t pa = base + (from - pos);
			u32 in_page = offset_in_page(pa);
			u32 n = min_t(u64, to - from, PAGE_SIZE - in_page), k;
			u32 *p = kmap_local_page(pfn_to_page(PHYS_PFN(pa)));

			for (k = 0; k < n; k += 4)
				p[(in_page + k) / 4] = w->pattern;
			kunmap_local(p);
			from += n;
		}
		pos += len;
	}
out:
	dma_resv_unlock(ti->buf->resv);
	return ret;
}

static int sgpu_ti_open(struct inode *inode, struct file *f)
{
	struct sgpu_ti *ti = kzalloc(sizeof(*ti), GFP_KERNEL);

	if (!ti)
		return -ENOMEM;
	mutex_init(&ti->lock);
	f->private_data = ti;
	return 0;
}

static int sgpu_ti_release(struct inode *inode, struct file *f)
{
	struct sgpu_ti *ti = f->private_data;

	if (ti->attach) {
		dma_resv_lock(ti->buf->resv, NULL);
		sgpu_ti_unmap_locked(ti);
		dma_resv_unlock(ti->buf->resv);
		dma_buf_detach(ti->buf, ti->attach);
		dma_buf_put(ti->buf);
	}
	mutex_destroy(&ti->lock);
	kfree(ti);
	return 0;
}

static long sgpu_ti_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct sgpu_ti *ti = f->private_data;
	void __user *uarg = (void __user *)arg;
	struct sgpu_ti_write w;
	struct sgpu_ti_info info;
	int fd, ret;

	if (cmd == SGPU_TI_IOC_IMPORT) {
		if (get_user(fd, (int __user *)uarg))
			return -EFAULT;
		return sgpu_ti_import(ti, fd);
	}
	mutex_lock(&ti->lock);
	if (!ti->attach) {
		ret = -ENXIO;
		goto out;
	}
	switch (cmd) {
	case SGPU_TI_IOC_MAP:
		ret = sgpu_ti_map(ti);
		break;
	case SGPU_TI_IOC_WRITE:
		ret = copy_from_user(&w, uarg, sizeof(w)) ? -EFAULT : sgpu_ti_write(ti, &w);
		break;
	case SGPU_TI_IOC_UNMAP:
		dma_resv_lock(ti->buf->resv, NULL);
		sgpu_ti_unmap_locked(ti);
		dma_resv_unlock(ti->buf->resv);
		ret = 0;
		break;
	case SGPU_TI_IOC_INFO:
		memset(&info, 0, sizeof(info));
		dma_resv_lock(ti->buf->resv, NULL);
		info.mapped = !!ti->sgt;
		info.stale = ti->stale;
		info.move_notifies = ti->move_notifies;
		dma_resv_unlock(ti->buf->resv);
		ret = copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
		break;
	default:
		ret = -ENOTTY;
	}
out:
	mutex_unlock(&ti->lock);
	return ret;
}

static const struct file_operations sgpu_ti_fops = {
	.owner = THIS_MODULE,
	.open = sgpu_ti_open,
	.release = sgpu_ti_release,
	.unlocked_ioctl = sgpu_ti_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice sgpu_ti_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "sgpu_test_importer",
	.fops = &sgpu_ti_fops,
	.mode = 0666,
};

static int __init sgpu_ti_init(void)
{
	int ret = misc_register(&sgpu_ti_misc);

	if (ret)
		return ret;
	/* the misc device is the importer's DMA device (dma-direct: no IOMMU in the guest) */
	ret = dma_coerce_mask_and_coherent(sgpu_ti_misc.this_device, DMA_BIT_MASK(64));
	if (ret)
		misc_deregister(&sgpu_ti_misc);
	return ret;
}

static void __exit sgpu_ti_exit(void)
{
	misc_deregister(&sgpu_ti_misc);
}

module_init(sgpu_ti_init);
module_exit(sgpu_ti_exit);
MODULE_DESCRIPTION("sharegpu guest tests: a lazily unmapping dynamic dma-buf importer");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS(DMA_BUF);
