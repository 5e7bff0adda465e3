/*
 * sharegpu: emulated PCI GPU exposing buffer objects with dma-buf semantics
 *
 * This file: the QOM type and its properties, realize/unrealize, the BARs, the BAR0
 * registers, interrupts (MSI-X, INTx) and reset. The other concepts have their own file
 * (sharegpu.h lists them).
 *
 * The device model is thin: PCI identity, BARs, MSI-X/INTx, command and event rings in guest
 * memory, DMA, the monitor and tracing. Buffer-object semantics (placements, moves, sharing,
 * caches, the copy engine) live in the host backend (sharegpu/backend.h), one instance per
 * QEMU process shared by every sharegpu device, so that a BO exported by one device can be
 * imported by another with zero copy.
 *
 * The hardware contract is docs/hardware.md / sharegpu_hw.h.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "qemu/bitops.h"
#include "qemu/host-utils.h"
#include "qemu/log.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qapi/error.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/pcie.h"
#include "hw/pci/msix.h"
#include "hw/qdev-properties.h"
#include "hw/resettable.h"
#include "migration/vmstate.h"
#include "trace.h"
#include "sharegpu.h"

#define SHAREGPU_VRAM_MIN (1 * MiB)
#define SHAREGPU_VRAM_MAX (16 * GiB)
#define SHAREGPU_VRAM_DEFAULT (64 * MiB)
/* host memory for SYSTEM placements, as virtio-gpu's max_hostmem (docs/user-guide.md) */
#define SHAREGPU_HOSTMEM_DEFAULT (1 * GiB)
/*
 * Jobs run on the main loop under the BQL (synchronously, until jobs move to engine
 * threads), so one bottom-half run must not do unbounded work: while it runs, no timer fires
 * and every vCPU that touches a device waits, and the guest freezes. A run stops after
 * x-job-slice bytes of job work; a job longer than a chunk runs chunk by chunk across runs
 * (sharegpu-ring.c, docs/hardware.md 3, "Execution").
 */
#define SHAREGPU_JOB_SLICE_DEFAULT (32 * MiB)
#define SHAREGPU_JOB_CHUNK_DEFAULT (4 * MiB)
#define SHAREGPU_QUEUE_DEPTH_DEFAULT 16
#define SHAREGPU_QUEUE_DEPTH_MAX 256
#define SHAREGPU_PCIE_CAP_OFFSET 0x80

SharegpuDeviceList sharegpu_devices = QTAILQ_HEAD_INITIALIZER(sharegpu_devices);

void sharegpu_log_sink(void *opaque, enum sgb_log_level level, const char *msg)
{
    switch (level) {
    case SGB_LOG_GUEST_ERROR:
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s\n", msg);
        break;
    case SGB_LOG_ERROR:
        error_report("sharegpu backend: %s", msg);
        break;
    case SGB_LOG_WARNING:
        warn_report("sharegpu backend: %s", msg);
        break;
    case SGB_LOG_DEBUG:
    case SGB_LOG_INFO:
        qemu_log_mask(LOG_TRACE, "sharegpu backend: %s\n", msg);
        break;
    }
}

/* ------------------------------------------------------------------ interrupts */

static void sharegpu_irq_update_intx(SharegpuState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    int level = !msix_enabled(pdev) && (s->int_status & s->int_mask) != 0;

    trace_sharegpu_intx(s->name, level);
    pci_set_irq(pdev, level);
}

void sharegpu_irq_raise(SharegpuState *s, uint32_t cause)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    s->int_status |= cause;
    if (!(cause & s->int_mask)) {
        return;
    }
    if (s->drop_next_irq && (cause & (SGHW_INT_CMD | SGHW_INT_ERROR))) {
        /* fault injection: a lost interrupt; INT_STATUS still says what happened */
        s->drop_next_irq = false;
        s->counters.irqs_dropped++;
        trace_sharegpu_irq_dropped(s->name, cause);
        return;
    }
    if (msix_enabled(pdev)) {
        if (cause & s->int_mask & (SGHW_INT_CMD | SGHW_INT_ERROR)) {
            trace_sharegpu_irq(s->name, cause, s->int_status, SGHW_MSIX_VEC_CMD);
            msix_notify(pdev, SGHW_MSIX_VEC_CMD);
            s->counters.interrupts++;
        }
        if (cause & s->int_mask & (SGHW_INT_EVENT | SGHW_INT_EVT_OVERFLOW)) {
            trace_sharegpu_irq(s->name, cause, s->int_status, SGHW_MSIX_VEC_EVENT);
            msix_notify(pdev, SGHW_MSIX_VEC_EVENT);
            s->counters.interrupts++;
        }
    } else {
        trace_sharegpu_irq(s->name, cause, s->int_status, -1);
        s->counters.interrupts++;
        sharegpu_irq_update_intx(s);
    }
}

/* ------------------------------------------------------------------ BAR0 registers */

static bool sharegpu_reg_ring_idle(SharegpuRing *r)
{
    return r->size == 0 || r->head == r->tail;
}

static bool sharegpu_reg_ring_size_valid(uint32_t size)
{
    return size >= 2 && size <= SGHW_RING_MAX_ENTRIES && is_power_of_2(size);
}

static void sharegpu_update_status(SharegpuState *s)
{
    s->status &= ~(SGHW_STATUS_CMD_ENABLED | SGHW_STATUS_EVT_ENABLED);
    s->status |= SGHW_STATUS_READY;
    s->status |= s->cmd.size ? SGHW_STATUS_CMD_ENABLED : 0;
    s->status |= s->evt.size ? SGHW_STATUS_EVT_ENABLED : 0;
}

static uint32_t sharegpu_features(SharegpuState *s)
{
    return (s->coherent ? SGHW_FEAT_COHERENT : 0) | SGHW_FEAT_MSIX | SGHW_FEAT_SHARING |
           SGHW_FEAT_IMPORT_WINDOW | SGHW_FEAT_COPY_ENGINE | SGHW_FEAT_SYSTEM_PAGES |
           SGHW_FEAT_JOB_ABORT | SGHW_FEAT_WINDOW_FAULT |
           (s->broker ? SGHW_FEAT_BROKER : 0);
}

static uint64_t sharegpu_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
    SharegpuState *s = opaque;
    uint64_t val = 0;

    switch (addr) {
    case SGHW_REG_VERSION:
        val = SGHW_VERSION;
        break;
    case SGHW_REG_FEATURES:
        val = sharegpu_features(s);
        break;
    case SGHW_REG_VRAM_SIZE_LO:
    case SGHW_REG_IMPORT_WIN_LO:
    case SGHW_REG_IMPORT_WIN_SIZE_LO:
        val = (uint32_t)s->vram_size;
        break;
    case SGHW_REG_VRAM_SIZE_HI:
    case SGHW_REG_IMPORT_WIN_HI:
    case SGHW_REG_IMPORT_WIN_SIZE_HI:
        val = s->vram_size >> 32;
        break;
    case SGHW_REG_STATUS:
        val = s->status;
        break;
    case SGHW_REG_SCRATCH:
        val = s->scratch;
        break;
    case SGHW_REG_QUEUE_DEPTH:
        val = s->queue_depth;
        break;
    case SGHW_REG_CMD_BASE_LO:
        val = (uint32_t)s->cmd.base;
        break;
    case SGHW_REG_CMD_BASE_HI:
        val = s->cmd.base >> 32;
        break;
    case SGHW_REG_CMD_SIZE:
        val = s->cmd.size;
        break;
    case SGHW_REG_CMD_HEAD:
        val = s->cmd.head;
        break;
    case SGHW_REG_CMD_TAIL:
        val = s->cmd.tail;
        break;
    case SGHW_REG_LAST_SEQNO_LO:
        val = (uint32_t)s->last_seqno;
        break;
    case SGHW_REG_LAST_SEQNO_HI:
        val = s->last_seqno >> 32;
        break;
    case SGHW_REG_EVT_BASE_LO:
        val = (uint32_t)s->evt.base;
        break;
    case SGHW_REG_EVT_BASE_HI:
        val = s->evt.base >> 32;
        break;
    case SGHW_REG_EVT_SIZE:
        val = s->evt.size;
        break;
    case SGHW_REG_EVT_HEAD:
        val = s->evt.head;
        break;
    case SGHW_REG_EVT_TAIL:
        val = s->evt.tail;
        break;
    case SGHW_REG_EVT_DROPPED:
        val = s->evt_dropped;
        break;
    case SGHW_REG_INT_STATUS:
        val = s->int_status;
        break;
    case SGHW_REG_INT_MASK:
        val = s->int_mask;
        break;
    case SGHW_REG_ERROR_CODE:
        val = s->error_code;
        break;
    case SGHW_REG_ERROR_INDEX:
        val = s->error_index;
        break;
    case SGHW_REG_ERROR_COUNT:
        val = s->error_count;
        break;
    default:
        break;
    }
    trace_sharegpu_mmio_read(s->name, addr, val);
    return val;
}

static void sharegpu_reg_ring_base(SharegpuState *s, SharegpuRing *r, bool hi,
                                   uint32_t val, uint64_t align, const char *what)
{
    uint64_t base = hi ? deposit64(r->base, 32, 32, val) : deposit64(r->base, 0, 32, val);

    if (!sharegpu_reg_ring_idle(r)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s base written while busy\n",
                      s->name, what);
        return;
    }
    if (base & (align - 1)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s base 0x%" PRIx64 " misaligned\n",
                      s->name, what, base);
        base &= ~(align - 1);
    }
    r->base = base;
}

static void sharegpu_reg_ring_size(SharegpuState *s, SharegpuRing *r, uint32_t val,
                                   const char *what)
{
    if (!sharegpu_reg_ring_idle(r)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s size written while busy\n",
                      s->name, what);
        return;
    }
    if (val != 0 && !sharegpu_reg_ring_size_valid(val)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: invalid %s size %u\n",
                      s->name, what, val);
        val = 0;
    }
    r->size = val;
    r->head = 0;
    r->tail = 0;
    sharegpu_update_status(s);
}

static void sharegpu_reset(SharegpuState *s);

static void sharegpu_mmio_write(void *opaque, hwaddr addr, uint64_t val64, unsigned size)
{
    SharegpuState *s = opaque;
    uint32_t val = val64;

    trace_sharegpu_mmio_write(s->name, addr, val);
    switch (addr) {
    case SGHW_REG_RESET:
        if (val != SGHW_RESET_MAGIC) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: bad reset value 0x%x\n",
                          s->name, val);
            return;
        }
        sharegpu_reset(s);
        break;
    case SGHW_REG_JOB_ABORT:
        if (val != SGHW_JOB_ABORT_MAGIC) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: bad job abort value 0x%x\n",
                          s->name, val);
            return;
        }
        sharegpu_job_abort(s);
        break;
    case SGHW_REG_SCRATCH:
        s->scratch = val;
        break;
    case SGHW_REG_CMD_BASE_LO:
    case SGHW_REG_CMD_BASE_HI:
        sharegpu_reg_ring_base(s, &s->cmd, addr == SGHW_REG_CMD_BASE_HI, val,
                               sizeof(struct sghw_cmd), "command ring");
        break;
    case SGHW_REG_CMD_SIZE:
        sharegpu_reg_ring_size(s, &s->cmd, val, "command ring");
        if (sharegpu_reg_ring_idle(&s->cmd)) {
            s->abort_left = 0;  /* new indices: an old abort names none of them */
        }
        break;
    case SGHW_REG_CMD_TAIL:
        if (!s->cmd.size || val >= s->cmd.size) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: command tail %u out of range\n",
                          s->name, val);
            return;
        }
        s->cmd.tail = val;
        break;
    case SGHW_REG_DOORBELL:
        if (!s->cmd.size) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: doorbell with ring disabled\n",
                          s->name);
            return;
        }
        sharegpu_coherency_doorbell(s);   /* the ring's bottom half, after a harvest */
        break;
    case SGHW_REG_EVT_BASE_LO:
    case SGHW_REG_EVT_BASE_HI:
        sharegpu_reg_ring_base(s, &s->evt, addr == SGHW_REG_EVT_BASE_HI, val,
                               sizeof(struct sghw_event), "event ring");
        break;
    case SGHW_REG_EVT_SIZE:
        /* the event ring is producer-driven: busy means events pending for the driver */
        s->evt.head = s->evt.tail;
        sharegpu_reg_ring_size(s, &s->evt, val, "event ring");
        sharegpu_evt_flush_resync(s);
        break;
    case SGHW_REG_EVT_HEAD:
        if (!s->evt.size || val >= s->evt.size) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: event head %u out of range\n",
                          s->name, val);
            return;
        }
        s->evt.head = val;
        sharegpu_evt_flush_resync(s);
        break;
    case SGHW_REG_INT_MASK:
        s->int_mask = val & (SGHW_INT_CMD | SGHW_INT_EVENT | SGHW_INT_ERROR |
                             SGHW_INT_EVT_OVERFLOW);
        sharegpu_irq_update_intx(s);
        break;
    case SGHW_REG_INT_ACK:
        s->int_status &= ~val;
        sharegpu_irq_update_intx(s);
        break;
    default:
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: write to read-only/unknown register 0x%" HWADDR_PRIx "\n",
                      s->name, addr);
        break;
    }
}

/*
 * Only aligned 4-byte accesses reach the handlers (docs/hardware.md 2); .valid rejects the
 * others, which read 0 and are dropped on write. max_access_size is 8, not 4: with 4, the
 * memory core would split an aligned 8-byte access from qtest, KVM or another device's DMA
 * into two register accesses (TCG would not). .accepts refuses 8 on every path.
 */
static bool sharegpu_mmio_accepts(void *opaque, hwaddr addr, unsigned size, bool is_write,
                                  MemTxAttrs attrs)
{
    return size != 8;
}

static const MemoryRegionOps sharegpu_mmio_ops = {
    .read = sharegpu_mmio_read,
    .write = sharegpu_mmio_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 8,
        .accepts = sharegpu_mmio_accepts,
    },
    .impl = {
        .min_access_size = 4,
        .max_access_size = 4,
    },
};

/* ------------------------------------------------------------------ reset / lifecycle */

/* The RESET register and PCI/system reset (docs/hardware.md 9). */
static void sharegpu_reset(SharegpuState *s)
{
    trace_sharegpu_reset(s->name);
    sharegpu_qev_reset(s, false, 0);
    qemu_bh_cancel(s->cmd_bh);
    /* a reset takes effect between two commands: the one being executed completes first */
    sharegpu_job_finish(s);
    sharegpu_job_reset(s);
    s->drop_next_irq = false;
    sharegpu_window_unmap_all(s);
    sharegpu_remote_reset(s);
    g_hash_table_remove_all(s->bos);
    if (s->dev) {
        sgb_event stale;
        int ret = sgb_device_reset(s->dev);

        if (ret) {
            error_report("sharegpu: %s: backend reset failed: %s", s->name,
                         sgb_strerror(ret));
        }
        /* events produced by the reset itself are stale for the new driver instance */
        while (sgb_device_pop_event(s->dev, &stale) == 0) {
            continue;
        }
    }
    memset(&s->cmd, 0, sizeof(s->cmd));
    memset(&s->evt, 0, sizeof(s->evt));
    s->last_seqno = 0;
    s->status = 0;
    s->int_status = 0;
    s->int_mask = 0;
    s->error_code = 0;
    s->error_index = 0;
    s->error_count = 0;
    s->evt_dropped = 0;
    s->evt_resync = false;
    s->scratch = 0;
    sharegpu_update_status(s);
    sharegpu_irq_update_intx(s);
}

/*
 * Everything in the hold phase, where the legacy hook ran: the job in progress still DMAs
 * its completion, before the PCI bus (in its own, later, hold) clears bus mastering.
 */
static void sharegpu_reset_hold(Object *obj, ResetType type)
{
    sharegpu_reset(SHAREGPU(obj));
}

static void sharegpu_teardown(SharegpuState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    /* first: engine callbacks (this device's, other devices' fences) no longer reach us */
    sharegpu_job_fini(s);
    if (s->cmd_bh) {
        qemu_bh_delete(s->cmd_bh);
        s->cmd_bh = NULL;
    }
    s->job.active = false;
    if (s->dev) {
        sgb_device_set_invalidate_hook(s->dev, NULL, NULL);
    }
    if (s->bos) {
        sharegpu_window_unmap_all(s);
        sharegpu_remote_reset(s);
        g_hash_table_destroy(s->bos);
        s->bos = NULL;
    }
    if (s->broker_exports) {
        g_hash_table_destroy(s->broker_exports);
        s->broker_exports = NULL;
        g_hash_table_destroy(s->job_buffers);
        s->job_buffers = NULL;
    }
    if (s->broker) {
        s->broker->users--;
    }
    sharegpu_window_fini(s);
    if (s->dev) {
        sharegpu_engine_watch_fini(s);
        sgb_device_set_event_notify(s->dev, NULL, NULL);
        sgb_device_destroy(s->dev);
        s->dev = NULL;
    }
    /* after the notify callback is gone: nothing can schedule it any more */
    if (s->event_bh) {
        qemu_bh_delete(s->event_bh);
        s->event_bh = NULL;
    }
    if (s->backend) {
        sgb_backend_unref(s->backend);
        s->backend = NULL;
    }
    if (msix_present(pdev)) {
        msix_uninit_exclusive_bar(pdev);
    }
    if (pci_is_express(pdev)) {
        pcie_cap_exit(pdev);
    }
    sharegpu_coherency_fini(s);
    g_free(s->name);
    s->name = NULL;
}

static void sharegpu_realize(PCIDevice *pdev, Error **errp)
{
    SharegpuState *s = SHAREGPU(pdev);
    DeviceState *d = DEVICE(pdev);
    sgb_device_config cfg;
    Error *err = NULL;
    int ret, i, vram_fd;

    if (s->vram_size < SHAREGPU_VRAM_MIN || s->vram_size > SHAREGPU_VRAM_MAX ||
        !is_power_of_2(s->vram_size)) {
        error_setg(errp, "sharegpu: vram-size must be a power of two in [%" PRIu64
                   ", %" PRIu64 "] bytes, got %" PRIu64,
                   (uint64_t)SHAREGPU_VRAM_MIN, (uint64_t)SHAREGPU_VRAM_MAX, s->vram_size);
        return;
    }
    if (s->queue_depth < 1 || s->queue_depth > SHAREGPU_QUEUE_DEPTH_MAX) {
        error_setg(errp, "sharegpu: queue-depth must be in [1, %u], got %u",
                   SHAREGPU_QUEUE_DEPTH_MAX, s->queue_depth);
        return;
    }
    if (!s->engine) {
        s->engine = g_strdup("cpu");
    }
    if (!*s->engine) {
        error_setg(errp, "sharegpu: engine must name an execution engine (cpu, virgl)");
        return;
    }
    if (s->check_coherency && s->coherent) {
        error_setg(errp, "sharegpu: check-coherency=on needs coherent=off (a coherent "
                   "device has no barriers to check)");
        return;
    }
    if (s->job_slice < SGHW_VRAM_ALIGN) {
        error_setg(errp, "sharegpu: x-job-slice must be at least %u bytes", SGHW_VRAM_ALIGN);
        return;
    }
    if (s->job_chunk < SGHW_VRAM_ALIGN) {
        error_setg(errp, "sharegpu: x-job-chunk must be at least %u bytes", SGHW_VRAM_ALIGN);
        return;
    }
    s->name = d->id ? g_strdup(d->id) : object_get_canonical_path(OBJECT(s));
    trace_sharegpu_realize(s->name, s->vram_size, s->coherent);
    if (s->broker) {
        s->broker->users++;  /* undone by the teardown, also on the failure path */
    }

    pci_config_set_interrupt_pin(pdev->config, 1);
    if (pci_is_express(pdev)) {
        if (pcie_endpoint_cap_init(pdev, SHAREGPU_PCIE_CAP_OFFSET) < 0) {
            error_setg(errp, "sharegpu: cannot add the PCIe capability");
            goto fail;
        }
    }

    sgb_set_log_handler(sharegpu_log_sink, NULL);
    ret = sgb_backend_get_shared(&s->backend);
    if (ret) {
        error_setg(errp, "sharegpu: backend: %s", sgb_strerror(ret));
        goto fail;
    }
    cfg = (sgb_device_config) {
        .name = s->name,
        .vram_size = s->vram_size,
        .coherent = s->coherent,
        .max_hostmem = s->max_hostmem,
        .engine = s->engine,
    };
    ret = sgb_device_create(s->backend, &cfg, &s->dev);
    if (ret == -ENODEV) {
        error_setg(errp, "sharegpu: engine '%s' is not available in this build "
                   "(engines: cpu, virgl where libvirglrenderer and EGL work); "
                   "the host log says why", s->engine);
        goto fail;
    }
    if (ret) {
        error_setg(errp, "sharegpu: cannot create backend device: %s", sgb_strerror(ret));
        goto fail;
    }
    sharegpu_job_init(s);
    sharegpu_engine_watch_init(s);

    s->bos = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, sharegpu_bo_free);
    sharegpu_remote_init(s);
    s->cmd_bh = qemu_bh_new_guarded(sharegpu_ring_bh, s, &d->mem_reentrancy_guard);
    s->event_bh = qemu_bh_new_guarded(sharegpu_evt_bh, s, &d->mem_reentrancy_guard);
    sgb_device_set_event_notify(s->dev, sharegpu_evt_notify, s);
    sgb_device_set_invalidate_hook(s->dev, sharegpu_window_invalidate_hook, s);

    /* BAR0 */
    memory_region_init_io(&s->mmio, OBJECT(s), &sharegpu_mmio_ops, s, "sharegpu-mmio",
                          SGHW_MMIO_SIZE);
    pci_register_bar(pdev, SGHW_BAR_MMIO, PCI_BASE_ADDRESS_SPACE_MEMORY, &s->mmio);

    /* BAR2: [0, vram) the arena memfd, [vram, 2 * vram) the import window */
    memory_region_init(&s->bar2, OBJECT(s), "sharegpu-bar2", 2 * s->vram_size);
    /* The RAMBlock owns (and closes) its fd: give it a dup, the backend keeps its own. */
    vram_fd = qemu_dup(sgb_device_vram_fd(s->dev));
    if (vram_fd < 0) {
        error_setg_errno(errp, errno, "sharegpu: cannot dup the VRAM arena fd");
        goto fail;
    }
    if (!memory_region_init_ram_from_fd(&s->vram, OBJECT(s), "sharegpu-vram", s->vram_size,
                                        RAM_SHARED, vram_fd, 0, &err)) {
        close(vram_fd);
        error_propagate_prepend(errp, err, "sharegpu: cannot map the VRAM arena: ");
        goto fail;
    }
    memory_region_add_subregion(&s->bar2, 0, &s->vram);
    sharegpu_coherency_init(s);
    sharegpu_window_init(s);
    memory_region_add_subregion(&s->bar2, s->vram_size, &s->import_win);
    pci_register_bar(pdev, SGHW_BAR_VRAM,
                     PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_64 |
                     PCI_BASE_ADDRESS_MEM_PREFETCH, &s->bar2);

    /* BAR4: MSI-X; INTx stays as the fallback */
    if (msix_init_exclusive_bar(pdev, SGHW_MSIX_VECTORS, SGHW_BAR_MSIX, errp)) {
        goto fail;
    }
    for (i = 0; i < SGHW_MSIX_VECTORS; i++) {
        msix_vector_use(pdev, i);
    }

    sharegpu_update_status(s);
    QTAILQ_INSERT_TAIL(&sharegpu_devices, s, next);
    return;

fail:
    sharegpu_teardown(s);
}

static void sharegpu_exit(PCIDevice *pdev)
{
    SharegpuState *s = SHAREGPU(pdev);

    trace_sharegpu_unrealize(s->name);
    QTAILQ_REMOVE(&sharegpu_devices, s, next);
    pci_set_irq(pdev, 0);
    sharegpu_teardown(s);
}

/* ------------------------------------------------------------------ QOM */

static const Property sharegpu_properties[] = {
    DEFINE_PROP_SIZE("vram-size", SharegpuState, vram_size, SHAREGPU_VRAM_DEFAULT),
    DEFINE_PROP_BOOL("coherent", SharegpuState, coherent, true),
    /* report coherency violations (coherent=off only; docs/user-guide.md) */
    DEFINE_PROP_BOOL("check-coherency", SharegpuState, check_coherency, false),
    DEFINE_PROP_SIZE("max-hostmem", SharegpuState, max_hostmem, SHAREGPU_HOSTMEM_DEFAULT),
    /* where jobs run (docs/engines.md) and how many may be in flight */
    DEFINE_PROP_STRING("engine", SharegpuState, engine),
    DEFINE_PROP_UINT32("queue-depth", SharegpuState, queue_depth,
                       SHAREGPU_QUEUE_DEPTH_DEFAULT),
    /* bytes of job work per main-loop turn; for tests and tuning (docs/user-guide.md) */
    DEFINE_PROP_SIZE("x-job-slice", SharegpuState, job_slice, SHAREGPU_JOB_SLICE_DEFAULT),
    /* a longer TRANSFER runs in chunks of this size, one or more per main-loop turn */
    DEFINE_PROP_SIZE("x-job-chunk", SharegpuState, job_chunk, SHAREGPU_JOB_CHUNK_DEFAULT),
    /* the host broker for sharing with other VMs (docs/hardware.md 13, docs/broker.md) */
    DEFINE_PROP_LINK("broker", SharegpuState, broker, TYPE_SHAREGPU_BROKER,
                     SharegpuBroker *),
};

/*
 * Never migratable: the state (VRAM arena, buffers, sharing between devices) lives in the
 * host backend. QEMU marks such devices in their vmsd (nvme, ufs, virtio-crypto); migration
 * blockers are for devices whose migratability depends on configuration or run time.
 */
static const VMStateDescription sharegpu_vmstate = {
    .name = TYPE_SHAREGPU,
    .unmigratable = 1,
};

static void sharegpu_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    ResettableClass *rc = RESETTABLE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = sharegpu_realize;
    k->exit = sharegpu_exit;
    k->vendor_id = SGHW_PCI_VENDOR_ID;
    k->device_id = SGHW_PCI_DEVICE_ID;
    k->revision = SGHW_PCI_REVISION;
    k->class_id = SGHW_PCI_CLASS;
    k->subsystem_vendor_id = SGHW_PCI_SUBVENDOR_ID;
    k->subsystem_id = SGHW_PCI_SUBDEVICE_ID;
    dc->desc = "sharegpu emulated GPU (buffer objects with dma-buf semantics)";
    set_bit(DEVICE_CATEGORY_DISPLAY, dc->categories);
    device_class_set_props(dc, sharegpu_properties);
    dc->vmsd = &sharegpu_vmstate;
    rc->phases.hold = sharegpu_reset_hold;
}

static const TypeInfo sharegpu_types[] = {
    {
        .name = TYPE_SHAREGPU,
        .parent = TYPE_PCI_DEVICE,
        .instance_size = sizeof(SharegpuState),
        .class_init = sharegpu_class_init,
        .interfaces = (InterfaceInfo[]) {
            { INTERFACE_PCIE_DEVICE },
            { INTERFACE_CONVENTIONAL_PCI_DEVICE },
            { },
        },
    },
};

DEFINE_TYPES(sharegpu_types)
