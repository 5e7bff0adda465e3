/*
 * sharegpu: emulated PCI GPU exposing buffer objects with dma-buf semantics
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
#include "qemu/cutils.h"
#include "qemu/queue.h"
#include "qemu/uuid.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sharegpu.h"
#include "qobject/qdict.h"
#include "qapi/util.h"
#include "qom/object.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/pcie.h"
#include "hw/pci/msix.h"
#include "hw/qdev-properties.h"
#include "migration/blocker.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "system/dma.h"
#include "trace.h"

#include "sharegpu_hw.h"
#include "sharegpu-backend.h"

#define TYPE_SHAREGPU "sharegpu"
OBJECT_DECLARE_SIMPLE_TYPE(SharegpuState, SHAREGPU)

#define TYPE_SHAREGPU_WINDOW_MAP "sharegpu-window-map"
OBJECT_DECLARE_SIMPLE_TYPE(SharegpuWindowMap, SHAREGPU_WINDOW_MAP)

#define SHAREGPU_VRAM_MIN (1 * MiB)
#define SHAREGPU_VRAM_MAX (16 * GiB)
#define SHAREGPU_VRAM_DEFAULT (64 * MiB)
/* host memory for SYSTEM placements, as virtio-gpu's max_hostmem (docs/user-guide.md) */
#define SHAREGPU_HOSTMEM_DEFAULT (1 * GiB)
#define SHAREGPU_BH_BUDGET 256          /* commands per bottom-half run */
/*
 * Jobs run on the main loop under the BQL (synchronously, until jobs move to engine
 * threads), so one bottom-half run must not do unbounded work: while it runs, no timer fires
 * and every vCPU that touches a device waits, and the guest freezes. A run stops after
 * x-job-slice bytes of job work; a job longer than SHAREGPU_JOB_CHUNK runs chunk by chunk
 * across runs (docs/hardware.md 3, "Execution").
 */
#define SHAREGPU_JOB_SLICE_DEFAULT (32 * MiB)
#define SHAREGPU_JOB_CHUNK (4 * MiB)
#define SHAREGPU_BOUNCE (256 * KiB)     /* transfer bounce buffer */
#define SHAREGPU_PCIE_CAP_OFFSET 0x80

/*
 * A window mapping of an import: its own QOM object, so that the MemoryRegion (and the
 * mmap of the exporter's memfd behind it) lives until the last flatview reference drops.
 */
struct SharegpuWindowMap {
    Object parent_obj;
    MemoryRegion mr;
};

typedef struct SharegpuMemEntry {
    uint64_t addr;
    uint32_t len;
} SharegpuMemEntry;

/* Device-side per-handle state: guest backing pages and the import window mapping. */
typedef struct SharegpuBo {
    uint32_t handle;
    SharegpuMemEntry *ents;
    uint32_t nents;
    uint64_t backing_bytes;
    SharegpuWindowMap *map;
    uint64_t map_off;  /* offset inside the import window */
    uint64_t map_size;
} SharegpuBo;

typedef struct SharegpuRing {
    uint64_t base;
    uint32_t size;
    uint32_t head;
    uint32_t tail;
} SharegpuRing;

/* A job being executed chunk by chunk across bottom-half runs. */
typedef struct SharegpuJobProgress {
    bool active;
    struct sgpu_hw_cmd cmd; /* decoded, validated as a whole before its first chunk */
    uint32_t index;         /* ring index */
    uint64_t done;          /* bytes executed */
} SharegpuJobProgress;

typedef struct SharegpuCountersState {
    uint64_t split_jobs;    /* jobs executed in chunks */
    uint64_t bh_yields;     /* bottom-half runs ended by the job slice */
    uint64_t commands;
    uint64_t command_errors;
    uint64_t interrupts;
    uint64_t events;
    uint64_t events_dropped;
} SharegpuCountersState;

struct SharegpuState {
    PCIDevice parent_obj;

    /* properties */
    uint64_t vram_size;
    bool coherent;
    uint64_t max_hostmem;
    uint64_t job_slice;

    /* resources */
    MemoryRegion mmio;
    MemoryRegion bar2;
    MemoryRegion vram;
    MemoryRegion import_win;
    MemoryRegion import_hole;
    QEMUBH *cmd_bh;
    QEMUBH *event_bh;
    Error *migration_blocker;
    sgpu_backend *backend;
    sgpu_device *dev;
    char *name;
    GHashTable *bos; /* handle -> SharegpuBo */
    QTAILQ_ENTRY(SharegpuState) next;

    /* registers */
    SharegpuRing cmd;
    SharegpuRing evt;
    uint64_t last_seqno;
    uint32_t status;
    uint32_t int_status;
    uint32_t int_mask;
    uint32_t error_code;
    uint32_t error_index;
    uint32_t error_count;
    uint32_t evt_dropped;
    bool evt_resync;   /* events were dropped: a RESYNC event is owed (docs/hardware.md 7) */
    uint32_t scratch;

    SharegpuJobProgress job;
    SharegpuCountersState counters;
};

static QTAILQ_HEAD(, SharegpuState) sharegpu_devices =
    QTAILQ_HEAD_INITIALIZER(sharegpu_devices);

/* ------------------------------------------------------------------ helpers */

static void sharegpu_backend_log(void *opaque, int level, const char *msg)
{
    switch (level) {
    case 4:
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s\n", msg);
        break;
    case 3:
        error_report("sharegpu backend: %s", msg);
        break;
    case 2:
        warn_report("sharegpu backend: %s", msg);
        break;
    default:
        qemu_log_mask(LOG_TRACE, "sharegpu backend: %s\n", msg);
        break;
    }
}

static uint32_t sharegpu_status_from_errno(int ret)
{
    switch (ret) {
    case 0:
        return SGPU_ST_OK;
    case -ENOENT:
        return SGPU_ST_BAD_HANDLE;
    case -ERANGE:
        return SGPU_ST_OUT_OF_RANGE;
    case -ENOSPC:
        return SGPU_ST_NO_SPACE;
    case -EBUSY:
        return SGPU_ST_BUSY;
    case -EINVAL:
        return SGPU_ST_INVALID;
    case -E2BIG:
        return SGPU_ST_TOO_BIG;
    case -EFAULT:
        return SGPU_ST_DMA_ERROR;
    default:
        return SGPU_ST_INTERNAL;
    }
}

static bool sharegpu_range_ok(uint64_t off, uint64_t len, uint64_t size)
{
    return len <= size && off <= size - len;
}

static bool sharegpu_ring_size_valid(uint32_t size)
{
    return size >= 2 && size <= SGPU_RING_MAX_ENTRIES && is_power_of_2(size);
}

static SharegpuState *sharegpu_find(const char *id)
{
    SharegpuState *s;

    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (g_strcmp0(DEVICE(s)->id, id) == 0 || g_strcmp0(s->name, id) == 0) {
            return s;
        }
    }
    return NULL;
}

static SharegpuBo *sharegpu_bo_get(SharegpuState *s, uint32_t handle, bool create)
{
    SharegpuBo *bo = g_hash_table_lookup(s->bos, GUINT_TO_POINTER(handle));

    if (!bo && create) {
        bo = g_new0(SharegpuBo, 1);
        bo->handle = handle;
        g_hash_table_insert(s->bos, GUINT_TO_POINTER(handle), bo);
    }
    return bo;
}

/* ------------------------------------------------------------------ interrupts */

static void sharegpu_update_intx(SharegpuState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    int level = !msix_enabled(pdev) && (s->int_status & s->int_mask) != 0;

    trace_sharegpu_intx(s->name, level);
    pci_set_irq(pdev, level);
}

static void sharegpu_raise(SharegpuState *s, uint32_t cause)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    s->int_status |= cause;
    if (!(cause & s->int_mask)) {
        return;
    }
    if (msix_enabled(pdev)) {
        if (cause & s->int_mask & (SGPU_INT_CMD | SGPU_INT_ERROR)) {
            trace_sharegpu_irq(s->name, cause, s->int_status, SGPU_MSIX_VEC_CMD);
            msix_notify(pdev, SGPU_MSIX_VEC_CMD);
            s->counters.interrupts++;
        }
        if (cause & s->int_mask & (SGPU_INT_EVENT | SGPU_INT_EVT_OVERFLOW)) {
            trace_sharegpu_irq(s->name, cause, s->int_status, SGPU_MSIX_VEC_EVENT);
            msix_notify(pdev, SGPU_MSIX_VEC_EVENT);
            s->counters.interrupts++;
        }
    } else {
        trace_sharegpu_irq(s->name, cause, s->int_status, -1);
        s->counters.interrupts++;
        sharegpu_update_intx(s);
    }
}

/* ------------------------------------------------------------------ event ring */

static bool sharegpu_evt_room(SharegpuState *s)
{
    SharegpuRing *r = &s->evt;

    return r->size && ((r->tail + 1) & (r->size - 1)) != r->head;
}

/* Writes one entry at EVT_TAIL and advances it; false if full, disabled or a DMA error. */
static bool sharegpu_evt_write(SharegpuState *s, const struct sgpu_hw_event *ev)
{
    SharegpuRing *r = &s->evt;
    dma_addr_t addr;

    if (!sharegpu_evt_room(s)) {
        return false;
    }
    addr = r->base + (uint64_t)r->tail * sizeof(*ev);
    if (pci_dma_write(PCI_DEVICE(s), addr, ev, sizeof(*ev)) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: event ring DMA error at 0x%" PRIx64 "\n",
                      s->name, (uint64_t)addr);
        return false;
    }
    /* the DMA may have reconfigured the ring (it can target another device's BAR0 only,
     * but stay defensive): recheck before advancing */
    if (r->size) {
        r->tail = (r->tail + 1) & (r->size - 1);
    }
    return true;
}

/* After drops, the RESYNC event goes first as soon as there is room. */
static void sharegpu_evt_flush_resync(SharegpuState *s)
{
    struct sgpu_hw_event ev = {
        .type = cpu_to_le32(SGPU_EVT_RESYNC),
        .vram_offset = cpu_to_le64(SGPU_INVALID_OFFSET),
        .generation = cpu_to_le64(s->evt_dropped),
    };

    if (!s->evt_resync || !sharegpu_evt_room(s)) {
        return;
    }
    if (sharegpu_evt_write(s, &ev)) {
        trace_sharegpu_event(s->name, SGPU_EVT_RESYNC, 0, 0, SGPU_INVALID_OFFSET, false);
        s->evt_resync = false;
        s->counters.events++;
        sharegpu_raise(s, SGPU_INT_EVENT);
    }
}

static void sharegpu_push_event(SharegpuState *s, uint32_t type, uint32_t handle,
                                uint32_t placement, uint64_t offset, uint64_t generation)
{
    struct sgpu_hw_event ev = {
        .type = cpu_to_le32(type),
        .handle = cpu_to_le32(handle),
        .placement = cpu_to_le32(placement),
        .vram_offset = cpu_to_le64(offset),
        .generation = cpu_to_le64(generation),
    };
    bool dropped;

    sharegpu_evt_flush_resync(s);
    /* nothing may overtake an owed RESYNC */
    dropped = s->evt_resync || !sharegpu_evt_write(s, &ev);
    trace_sharegpu_event(s->name, type, handle, placement, offset, dropped);
    if (dropped) {
        bool first = !(s->int_status & SGPU_INT_EVT_OVERFLOW);

        if (s->evt_dropped != UINT32_MAX) {
            s->evt_dropped++;
        }
        s->evt_resync = true;
        s->counters.events_dropped++;
        if (first) {
            sharegpu_raise(s, SGPU_INT_EVT_OVERFLOW);
        }
        return;
    }
    s->counters.events++;
    sharegpu_raise(s, SGPU_INT_EVENT);
}

static void sharegpu_window_unmap(SharegpuState *s, SharegpuBo *bo)
{
    if (!bo->map) {
        return;
    }
    trace_sharegpu_import_unmap(s->name, bo->handle, bo->map_off);
    memory_region_del_subregion(&s->import_win, &bo->map->mr);
    /* the MR (a child of the map object) goes when the last flatview reference drops */
    object_unref(OBJECT(bo->map));
    bo->map = NULL;
    bo->map_off = 0;
    bo->map_size = 0;
}

static void sharegpu_bo_release(SharegpuState *s, uint32_t handle)
{
    SharegpuBo *bo = sharegpu_bo_get(s, handle, false);

    if (bo) {
        sharegpu_window_unmap(s, bo);
        g_hash_table_remove(s->bos, GUINT_TO_POINTER(handle));
    }
}

static void sharegpu_bo_free(gpointer data)
{
    SharegpuBo *bo = data;

    assert(!bo->map);
    g_free(bo->ents);
    g_free(bo);
}

/* Drains the backend's event queue for this device (main loop, BQL held). */
static void sharegpu_event_bh(void *opaque)
{
    SharegpuState *s = opaque;
    sgpu_event ev;

    if (!s->dev) {
        return;
    }
    while (sgpu_device_pop_event(s->dev, &ev) == 0) {
        if (ev.type == SGPU_EVENT_BO_INVALIDATED) {
            SharegpuBo *bo = sharegpu_bo_get(s, ev.handle, false);

            if (bo) {
                sharegpu_window_unmap(s, bo);
            }
            sharegpu_push_event(s, SGPU_EVT_BO_INVALIDATED, ev.handle, ev.placement,
                                SGPU_INVALID_OFFSET, ev.generation);
        } else if (ev.type == SGPU_EVENT_BO_MOVED) {
            sharegpu_push_event(s, SGPU_EVT_BO_MOVED, ev.handle, ev.placement,
                                ev.vram_offset, ev.generation);
        }
    }
}

/*
 * Delivers every device's queued backend events now (BQL held, no backend call in progress):
 * after anything that may move a buffer, so that importers' window mappings are gone and the
 * events are in the rings before the causing command completes (docs/hardware.md 4). Each
 * device's reentrancy guard is engaged as its own bottom half would (its event DMA must not
 * reach its own MMIO).
 */
static void sharegpu_drain_all_events(void)
{
    SharegpuState *s, *tmp;

    QTAILQ_FOREACH_SAFE(s, &sharegpu_devices, next, tmp) {
        MemReentrancyGuard *guard = &DEVICE(s)->mem_reentrancy_guard;
        bool engaged = guard->engaged_in_io;

        guard->engaged_in_io = true;
        sharegpu_event_bh(s);
        guard->engaged_in_io = engaged;
    }
}

/* Backend callback: any thread, backend locks possibly held. Only schedule. */
static void sharegpu_event_notify(void *opaque)
{
    SharegpuState *s = opaque;

    qemu_bh_schedule(s->event_bh);
}

/* ------------------------------------------------------------------ commands */

static void sharegpu_backing_free(SharegpuBo *bo)
{
    g_free(bo->ents);
    bo->ents = NULL;
    bo->nents = 0;
    bo->backing_bytes = 0;
}

static uint32_t sharegpu_cmd_attach_backing(SharegpuState *s, struct sgpu_hw_cmd *c)
{
    uint32_t n = c->arg;
    g_autofree struct sgpu_hw_mem_entry *raw = NULL;
    SharegpuMemEntry *ents;
    sgpu_bo_info info;
    uint64_t total = 0;
    SharegpuBo *bo;
    uint32_t i;
    int ret;

    ret = sgpu_bo_info_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (n == 0 || n > SGPU_MAX_MEM_ENTRIES) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: ATTACH_BACKING with %u entries\n",
                      s->name, n);
        return SGPU_ST_INVALID;
    }
    raw = g_new(struct sgpu_hw_mem_entry, n);
    if (pci_dma_read(PCI_DEVICE(s), c->off0, raw, sizeof(*raw) * n) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: cannot read sg list at 0x%" PRIx64 "\n",
                      s->name, c->off0);
        return SGPU_ST_DMA_ERROR;
    }
    ents = g_new(SharegpuMemEntry, n);
    for (i = 0; i < n; i++) {
        ents[i].addr = le64_to_cpu(raw[i].addr);
        ents[i].len = le32_to_cpu(raw[i].length);
        if (ents[i].len == 0 || ents[i].addr + ents[i].len < ents[i].addr) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: bad sg entry %u\n", s->name, i);
            g_free(ents);
            return SGPU_ST_INVALID;
        }
        total += ents[i].len;
    }
    bo = sharegpu_bo_get(s, c->handle, true);
    sharegpu_backing_free(bo);
    bo->ents = ents;
    bo->nents = n;
    bo->backing_bytes = total;
    c->result = total;
    return SGPU_ST_OK;
}

static uint32_t sharegpu_cmd_transfer(SharegpuState *s, struct sgpu_hw_cmd *c, bool to_device)
{
    SharegpuBo *bo = sharegpu_bo_get(s, c->handle, false);
    g_autofree uint8_t *buf = NULL;
    uint64_t bo_off = c->off0, back_off = c->off1, left = c->len;
    sgpu_bo_info info;
    uint32_t i = 0;
    uint64_t ent_start = 0;
    int ret;

    ret = sgpu_bo_info_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (!bo || !bo->nents) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: transfer on handle %u without backing\n",
                      s->name, c->handle);
        return SGPU_ST_NO_BACKING;
    }
    if (c->len == 0) {
        return SGPU_ST_INVALID;
    }
    if (!sharegpu_range_ok(bo_off, left, info.size) ||
        !sharegpu_range_ok(back_off, left, bo->backing_bytes)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: transfer out of range\n", s->name);
        return SGPU_ST_OUT_OF_RANGE;
    }
    /* find the entry containing back_off */
    while (ent_start + bo->ents[i].len <= back_off) {
        ent_start += bo->ents[i].len;
        i++;
    }
    buf = g_malloc(MIN(left, SHAREGPU_BOUNCE));
    while (left) {
        uint64_t in_ent = back_off - ent_start;
        uint64_t chunk = MIN(MIN(left, SHAREGPU_BOUNCE), bo->ents[i].len - in_ent);
        dma_addr_t gpa = bo->ents[i].addr + in_ent;

        if (to_device) {
            if (pci_dma_read(PCI_DEVICE(s), gpa, buf, chunk) != MEMTX_OK) {
                return SGPU_ST_DMA_ERROR;
            }
            ret = sgpu_bo_cpu_write(s->dev, c->handle, bo_off, buf, chunk);
        } else {
            ret = sgpu_bo_cpu_read(s->dev, c->handle, bo_off, buf, chunk);
            if (!ret && pci_dma_write(PCI_DEVICE(s), gpa, buf, chunk) != MEMTX_OK) {
                return SGPU_ST_DMA_ERROR;
            }
        }
        if (ret) {
            return sharegpu_status_from_errno(ret);
        }
        left -= chunk;
        bo_off += chunk;
        back_off += chunk;
        if (back_off - ent_start == bo->ents[i].len) {
            ent_start += bo->ents[i].len;
            i++;
        }
    }
    return SGPU_ST_OK;
}

/* BO_CREATE in VRAM: on -ENOSPC evict unpinned local DEVICE BOs (largest first) and retry. */
static int sharegpu_create_evicting(SharegpuState *s, uint64_t size, uint32_t placement,
                                    uint32_t *handle)
{
    int ret = sgpu_bo_create(s->dev, size, placement, handle);

    while (ret == -ENOSPC && placement == SGPU_PLACEMENT_DEVICE) {
        g_autofree sgpu_bo_info *infos = NULL;
        size_t count = 0, cap, i, victim = SIZE_MAX;

        if (sgpu_device_list_bos(s->dev, NULL, 0, &count) || count == 0) {
            break;
        }
        cap = count;
        infos = g_new0(sgpu_bo_info, cap);
        if (sgpu_device_list_bos(s->dev, infos, cap, &count)) {
            break;
        }
        for (i = 0; i < MIN(cap, count); i++) {
            if (!infos[i].imported && !infos[i].pin_count &&
                infos[i].placement == SGPU_PLACEMENT_DEVICE &&
                (victim == SIZE_MAX || infos[i].size > infos[victim].size)) {
                victim = i;
            }
        }
        if (victim == SIZE_MAX || sgpu_bo_evict(s->dev, infos[victim].handle)) {
            break;
        }
        ret = sgpu_bo_create(s->dev, size, placement, handle);
    }
    return ret;
}

static uint32_t sharegpu_placement_result(SharegpuState *s, uint32_t handle, uint64_t *result)
{
    sgpu_bo_info info;
    int ret = sgpu_bo_info_get(s->dev, handle, &info);

    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    *result = info.placement == SGPU_PLACEMENT_DEVICE ? info.vram_offset : SGPU_INVALID_OFFSET;
    return SGPU_ST_OK;
}

static uint32_t sharegpu_cmd_move(SharegpuState *s, struct sgpu_hw_cmd *c, bool no_evict)
{
    sgpu_bo_info info;
    int ret;

    if (c->arg > SGPU_PLACEMENT_SYSTEM) {
        return SGPU_ST_INVALID;
    }
    ret = sgpu_bo_info_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (no_evict && info.imported) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BO_MOVE NO_EVICT of import %u\n",
                      s->name, c->handle);
        return SGPU_ST_INVALID;
    }
    /* NO_EVICT: the guest's memory manager is the only evictor (-ENOSPC -> NO_SPACE). */
    ret = sgpu_bo_move2(s->dev, c->handle, c->arg, no_evict ? SGPU_ALLOC_NO_EVICT : 0);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    return sharegpu_placement_result(s, c->handle, &c->result);
}

static uint32_t sharegpu_cmd_unmap_import(SharegpuState *s, struct sgpu_hw_cmd *c)
{
    SharegpuBo *bo;
    sgpu_bo_info info;
    int ret = sgpu_bo_info_get(s->dev, c->handle, &info);

    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (!info.imported) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: UNMAP_IMPORT of local handle %u\n",
                      s->name, c->handle);
        return SGPU_ST_BAD_HANDLE;
    }
    bo = sharegpu_bo_get(s, c->handle, false);
    c->result = bo && bo->map;
    if (bo) {
        sharegpu_window_unmap(s, bo);
    }
    return SGPU_ST_OK;
}

static uint32_t sharegpu_cmd_map_import(SharegpuState *s, struct sgpu_hw_cmd *c)
{
    SharegpuWindowMap *map;
    SharegpuBo *bo;
    sgpu_bo_info info;
    uint64_t fd_off, size;
    void *ptr;
    int fd, ret;
    g_autofree char *name = NULL;
    Error *err = NULL;
    GHashTableIter it;
    gpointer value;

    ret = sgpu_bo_info_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (!info.imported) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: MAP_IMPORT of local handle %u\n",
                      s->name, c->handle);
        return SGPU_ST_BAD_HANDLE;
    }
    size = ROUND_UP(info.size, qemu_real_host_page_size());
    if ((c->off0 & (qemu_real_host_page_size() - 1)) ||
        !sharegpu_range_ok(c->off0, size, s->vram_size)) {
        return SGPU_ST_OUT_OF_RANGE;
    }
    g_hash_table_iter_init(&it, s->bos);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SharegpuBo *o = value;

        if (o->map && o->handle != c->handle &&
            c->off0 < o->map_off + o->map_size && o->map_off < c->off0 + size) {
            return SGPU_ST_BUSY;
        }
    }
    ret = sgpu_bo_storage(s->dev, c->handle, &fd, &fd_off, &ptr, &size);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    size = ROUND_UP(size, qemu_real_host_page_size());
    if (!sharegpu_range_ok(c->off0, size, s->vram_size)) {
        return SGPU_ST_OUT_OF_RANGE;
    }
    bo = sharegpu_bo_get(s, c->handle, true);
    sharegpu_window_unmap(s, bo);

    map = SHAREGPU_WINDOW_MAP(object_new(TYPE_SHAREGPU_WINDOW_MAP));
    name = g_strdup_printf("sharegpu.import[%u]", c->handle);
    /* The RAMBlock owns (and closes) its fd: give it a dup, the backend keeps its own. */
    fd = qemu_dup(fd);
    if (fd < 0 ||
        !memory_region_init_ram_from_fd(&map->mr, OBJECT(map), name, size, RAM_SHARED,
                                        fd, fd_off, &err)) {
        if (fd < 0) {
            error_setg_errno(&err, errno, "sharegpu: dup of the import's memfd");
        } else {
            close(fd);
        }
        error_report_err(err);
        object_unref(OBJECT(map));
        return SGPU_ST_INTERNAL;
    }
    memory_region_add_subregion_overlap(&s->import_win, c->off0, &map->mr, 1);
    bo->map = map;
    bo->map_off = c->off0;
    bo->map_size = size;
    trace_sharegpu_import_map(s->name, c->handle, c->off0, size, fd_off);
    c->result = s->vram_size + c->off0;
    return SGPU_ST_OK;
}

static uint32_t sharegpu_cmd_query(SharegpuState *s, struct sgpu_hw_cmd *c)
{
    struct sgpu_hw_bo_info out = { 0 };
    SharegpuBo *bo = sharegpu_bo_get(s, c->handle, false);
    sgpu_bo_info info;
    uint32_t flags = 0;
    int ret;

    ret = sgpu_bo_info_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    flags |= info.imported ? SGPU_BO_F_IMPORTED : 0;
    flags |= info.exported ? SGPU_BO_F_EXPORTED : 0;
    flags |= bo && bo->nents ? SGPU_BO_F_BACKING : 0;
    flags |= bo && bo->map ? SGPU_BO_F_MAPPED : 0;
    out.size = cpu_to_le64(info.size);
    if (info.imported) {
        out.vram_offset = cpu_to_le64(bo && bo->map ? s->vram_size + bo->map_off
                                                   : SGPU_INVALID_OFFSET);
    } else {
        out.vram_offset = cpu_to_le64(info.placement == SGPU_PLACEMENT_DEVICE ?
                                      info.vram_offset : SGPU_INVALID_OFFSET);
    }
    out.generation = cpu_to_le64(info.generation);
    out.placement = cpu_to_le32(info.placement);
    out.pin_count = cpu_to_le32(info.pin_count);
    out.vmap_count = cpu_to_le32(info.vmap_count);
    out.attachments = cpu_to_le32(info.attachments);
    out.flags = cpu_to_le32(flags);
    out.live_mappings = cpu_to_le32(info.live_mappings);
    memcpy(out.uuid, info.uuid.bytes, sizeof(out.uuid));
    if (pci_dma_write(PCI_DEVICE(s), c->off0, &out, sizeof(out)) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BO_QUERY DMA error at 0x%" PRIx64 "\n",
                      s->name, c->off0);
        return SGPU_ST_DMA_ERROR;
    }
    c->result = info.size;
    return SGPU_ST_OK;
}

/* Executes one command; fills c->out_handle / c->result (and c->uuid for EXPORT). */
static uint32_t sharegpu_execute(SharegpuState *s, struct sgpu_hw_cmd *c)
{
    uint64_t fence = 0;
    sgpu_uuid uuid;
    uint32_t crc = 0;
    bool no_evict;
    int ret = 0;

    if (c->flags & ~(SGPU_CMD_F_IRQ | SGPU_CMD_F_NO_EVICT)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: undefined flags 0x%x\n",
                      s->name, c->flags);
        return SGPU_ST_INVALID;
    }
    no_evict = c->flags & SGPU_CMD_F_NO_EVICT;
    if (no_evict && c->opcode != SGPU_OP_BO_CREATE && c->opcode != SGPU_OP_BO_MOVE) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: NO_EVICT on opcode 0x%x\n",
                      s->name, c->opcode);
        return SGPU_ST_INVALID;
    }

    switch (c->opcode) {
    case SGPU_OP_NOP:
        return SGPU_ST_OK;
    case SGPU_OP_BO_CREATE:
        if (c->arg > SGPU_PLACEMENT_SYSTEM || c->len == 0) {
            return SGPU_ST_INVALID;
        }
        if (c->len > SGPU_MAX_BO_SIZE ||
            (c->arg == SGPU_PLACEMENT_DEVICE && c->len > s->vram_size)) {
            return SGPU_ST_TOO_BIG;
        }
        if (no_evict && c->arg == SGPU_PLACEMENT_DEVICE) {
            ret = sgpu_bo_create2(s->dev, c->len, c->arg, SGPU_ALLOC_NO_EVICT,
                                  &c->out_handle);
        } else {
            ret = sharegpu_create_evicting(s, c->len, c->arg, &c->out_handle);
        }
        if (ret) {
            break;
        }
        return sharegpu_placement_result(s, c->out_handle, &c->result);
    case SGPU_OP_BO_DESTROY:
        ret = sgpu_bo_destroy(s->dev, c->handle);
        if (!ret) {
            sharegpu_bo_release(s, c->handle);
        }
        break;
    case SGPU_OP_BO_QUERY:
        return sharegpu_cmd_query(s, c);
    case SGPU_OP_BO_MOVE:
        return sharegpu_cmd_move(s, c, no_evict);
    case SGPU_OP_BO_EVICT:
        ret = sgpu_bo_evict(s->dev, c->handle);
        break;
    case SGPU_OP_BO_PIN:
    case SGPU_OP_BO_UNPIN: {
        sgpu_bo_info info;

        ret = c->opcode == SGPU_OP_BO_PIN ? sgpu_bo_pin(s->dev, c->handle)
                                          : sgpu_bo_unpin(s->dev, c->handle);
        if (!ret && !sgpu_bo_info_get(s->dev, c->handle, &info)) {
            c->result = info.pin_count;
        }
        break;
    }
    case SGPU_OP_ATTACH_BACKING:
        return sharegpu_cmd_attach_backing(s, c);
    case SGPU_OP_DETACH_BACKING: {
        SharegpuBo *bo = sharegpu_bo_get(s, c->handle, false);
        sgpu_bo_info info;

        ret = sgpu_bo_info_get(s->dev, c->handle, &info);
        if (ret) {
            break;
        }
        if (!bo || !bo->nents) {
            return SGPU_ST_NO_BACKING;
        }
        sharegpu_backing_free(bo);
        return SGPU_ST_OK;
    }
    case SGPU_OP_TRANSFER_TO_DEVICE:
    case SGPU_OP_TRANSFER_FROM_DEVICE:
        return sharegpu_cmd_transfer(s, c, c->opcode == SGPU_OP_TRANSFER_TO_DEVICE);
    case SGPU_OP_COPY:
        if (c->len == 0) {
            return SGPU_ST_INVALID;
        }
        if (c->handle == c->handle2 &&
            c->off0 < c->off1 + c->len && c->off1 < c->off0 + c->len) {
            return SGPU_ST_INVALID;
        }
        /* TODO(backend.h): jobs are treated as complete when the call returns. */
        ret = sgpu_job_copy(s->dev, c->handle2, c->off1, c->handle, c->off0, c->len, &fence);
        break;
    case SGPU_OP_FILL:
        if (c->len == 0 || (c->len & 3)) {
            return SGPU_ST_INVALID;
        }
        ret = sgpu_job_fill(s->dev, c->handle, c->off0, c->len, c->arg, &fence);
        break;
    case SGPU_OP_CHECKSUM:
        if (c->len == 0) {
            return SGPU_ST_INVALID;
        }
        ret = sgpu_job_checksum(s->dev, c->handle, c->off0, c->len, &crc, &fence);
        c->result = crc;
        break;
    case SGPU_OP_FENCE:
        c->result = c->seqno;
        return SGPU_ST_OK;
    case SGPU_OP_CACHE_FLUSH:
        ret = sgpu_bo_cache_flush(s->dev, c->handle, c->off0, c->len);
        break;
    case SGPU_OP_CACHE_INVALIDATE:
        ret = sgpu_bo_cache_invalidate(s->dev, c->handle, c->off0, c->len);
        break;
    case SGPU_OP_CPU_ACCESS_BEGIN:
    case SGPU_OP_CPU_ACCESS_END:
        if (c->arg > SGPU_DIR_HW_FROM_DEVICE) {
            return SGPU_ST_INVALID;
        }
        ret = c->opcode == SGPU_OP_CPU_ACCESS_BEGIN ?
              sgpu_bo_begin_cpu_access(s->dev, c->handle, c->arg) :
              sgpu_bo_end_cpu_access(s->dev, c->handle, c->arg);
        break;
    case SGPU_OP_EXPORT:
        ret = sgpu_bo_export(s->dev, c->handle, &uuid, NULL);
        if (!ret) {
            memcpy(c->uuid, uuid.bytes, sizeof(c->uuid));
        }
        break;
    case SGPU_OP_IMPORT:
        memcpy(uuid.bytes, c->uuid, sizeof(uuid.bytes));
        ret = sgpu_bo_import_uuid(s->dev, &uuid, &c->out_handle);
        if (ret == -ENOENT) {
            return SGPU_ST_NOT_FOUND;
        }
        break;
    case SGPU_OP_MAP_IMPORT:
        return sharegpu_cmd_map_import(s, c);
    case SGPU_OP_UNMAP_IMPORT:
        return sharegpu_cmd_unmap_import(s, c);
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: unknown opcode 0x%x\n",
                      s->name, c->opcode);
        return SGPU_ST_BAD_OPCODE;
    }
    return sharegpu_status_from_errno(ret);
}

/* Bytes of job work a command does (what the job slice counts). */
static uint64_t sharegpu_job_bytes(const struct sgpu_hw_cmd *c)
{
    switch (c->opcode) {
    case SGPU_OP_COPY:
    case SGPU_OP_FILL:
    case SGPU_OP_CHECKSUM:
    case SGPU_OP_TRANSFER_TO_DEVICE:
    case SGPU_OP_TRANSFER_FROM_DEVICE:
        return c->len;
    default:
        return 0;
    }
}

/* Range jobs that may run in chunks: every byte is touched once, in any order. */
static bool sharegpu_job_splittable(const struct sgpu_hw_cmd *c)
{
    return (c->opcode == SGPU_OP_COPY || c->opcode == SGPU_OP_FILL ||
            c->opcode == SGPU_OP_TRANSFER_TO_DEVICE ||
            c->opcode == SGPU_OP_TRANSFER_FROM_DEVICE) && c->len > SHAREGPU_JOB_CHUNK;
}

static uint32_t sharegpu_check_bo_range(SharegpuState *s, uint32_t handle, uint64_t off,
                                        uint64_t len)
{
    sgpu_bo_info info;
    int ret = sgpu_bo_info_get(s->dev, handle, &info);

    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    return sharegpu_range_ok(off, len, info.size) ? SGPU_ST_OK : SGPU_ST_OUT_OF_RANGE;
}

/*
 * Everything a split job's chunks would reject, checked before the first chunk runs, so that
 * a job either fails without side effects or runs to the end (as an unsplit one does).
 */
static uint32_t sharegpu_job_validate(SharegpuState *s, const struct sgpu_hw_cmd *c)
{
    uint32_t st = SGPU_ST_OK;

    if (c->flags & ~SGPU_CMD_F_IRQ) {
        return SGPU_ST_INVALID;
    }
    switch (c->opcode) {
    case SGPU_OP_FILL:
        if (c->len & 3) {
            return SGPU_ST_INVALID;
        }
        return sharegpu_check_bo_range(s, c->handle, c->off0, c->len);
    case SGPU_OP_COPY:
        if (c->handle == c->handle2 &&
            c->off0 < c->off1 + c->len && c->off1 < c->off0 + c->len) {
            return SGPU_ST_INVALID;
        }
        st = sharegpu_check_bo_range(s, c->handle, c->off0, c->len);
        return st ? st : sharegpu_check_bo_range(s, c->handle2, c->off1, c->len);
    default: { /* TRANSFER_*: the checks of sharegpu_cmd_transfer(), in its order */
        SharegpuBo *bo = sharegpu_bo_get(s, c->handle, false);
        sgpu_bo_info info;
        int ret = sgpu_bo_info_get(s->dev, c->handle, &info);

        if (ret) {
            return sharegpu_status_from_errno(ret);
        }
        if (!bo || !bo->nents) {
            return SGPU_ST_NO_BACKING;
        }
        return sharegpu_range_ok(c->off0, c->len, info.size) &&
               sharegpu_range_ok(c->off1, c->len, bo->backing_bytes) ? SGPU_ST_OK
                                                                      : SGPU_ST_OUT_OF_RANGE;
    }
    }
}

/*
 * Runs chunks of the job in progress while *budget lasts (UINT64_MAX: to the end).
 * SGPU_ST_PENDING: budget spent, job not finished.
 */
static uint32_t sharegpu_job_advance(SharegpuState *s, uint64_t *budget)
{
    SharegpuJobProgress *job = &s->job;

    while (job->done < job->cmd.len) {
        struct sgpu_hw_cmd part = job->cmd;
        uint64_t n = MIN(job->cmd.len - job->done, SHAREGPU_JOB_CHUNK);
        uint32_t st;

        if (*budget == 0) {
            return SGPU_ST_PENDING;
        }
        part.off0 += job->done;
        if (part.opcode != SGPU_OP_FILL) {
            part.off1 += job->done;
        }
        part.len = n;
        st = sharegpu_execute(s, &part);
        sharegpu_drain_all_events();
        trace_sharegpu_job_chunk(s->name, job->index, job->done, n, st);
        if (st != SGPU_ST_OK) {
            return st;
        }
        job->done += n;
        *budget -= MIN(*budget, n);
    }
    return SGPU_ST_OK;
}

/*
 * Completes the command at ring index `idx`: writes its completion, records errors, moves
 * CMD_HEAD. Returns the interrupt causes to raise.
 */
static uint32_t sharegpu_cmd_complete(SharegpuState *s, uint32_t idx,
                                      const struct sgpu_hw_cmd *c, uint32_t st)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    SharegpuRing *r = &s->cmd;
    dma_addr_t addr = r->base + (uint64_t)idx * sizeof(*c);
    uint32_t raise = 0;
    struct {
        uint32_t status;
        uint32_t out_handle;
        uint64_t result;
    } QEMU_PACKED done = {
        .status = cpu_to_le32(st),
        .out_handle = cpu_to_le32(c->out_handle),
        .result = cpu_to_le64(c->result),
    };
    MemTxResult mr = MEMTX_OK;

    trace_sharegpu_cmd_done(s->name, idx, c->opcode, st, c->out_handle, c->result);
    s->counters.commands++;
    /* completion: bytes 48..63, and for EXPORT the uuid in 24..39 */
    if (c->opcode == SGPU_OP_EXPORT && st == SGPU_ST_OK) {
        mr = pci_dma_write(pdev, addr + offsetof(struct sgpu_hw_cmd, uuid),
                           c->uuid, sizeof(c->uuid));
    }
    if (mr == MEMTX_OK) {
        mr = pci_dma_write(pdev, addr + offsetof(struct sgpu_hw_cmd, status),
                           &done, sizeof(done));
    }
    if (mr != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: completion DMA error at 0x%" PRIx64 "\n",
                      s->name, (uint64_t)addr);
        trace_sharegpu_ring_fault(s->name, idx, addr);
        s->status |= SGPU_STATUS_HALTED;
        st = SGPU_ST_DMA_ERROR;
    }
    if (st != SGPU_ST_OK) {
        s->error_code = st;
        s->error_index = idx;
        s->error_count++;
        s->counters.command_errors++;
        raise |= SGPU_INT_ERROR;
        sharegpu_push_event(s, SGPU_EVT_ERROR, idx, st, SGPU_INVALID_OFFSET, c->seqno);
    }
    s->last_seqno = c->seqno;
    if (!(s->status & SGPU_STATUS_HALTED)) {
        r->head = (r->head + 1) & (r->size - 1);
    }
    if ((c->flags & SGPU_CMD_F_IRQ) || c->opcode == SGPU_OP_FENCE) {
        raise |= SGPU_INT_CMD;
    }
    return raise;
}

/* Finishes the job in progress, however long it is (reset: it completes first). */
static void sharegpu_job_finish(SharegpuState *s)
{
    uint64_t unlimited = UINT64_MAX;
    uint32_t st;

    if (!s->job.active) {
        return;
    }
    st = sharegpu_job_advance(s, &unlimited);
    s->job.active = false;
    sharegpu_raise(s, sharegpu_cmd_complete(s, s->job.index, &s->job.cmd, st));
}

static bool sharegpu_cmd_fetch(SharegpuState *s, uint32_t idx, struct sgpu_hw_cmd *c)
{
    dma_addr_t addr = s->cmd.base + (uint64_t)idx * sizeof(*c);

    if (pci_dma_read(PCI_DEVICE(s), addr, c, sizeof(*c)) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: command ring DMA error at 0x%" PRIx64 "\n",
                      s->name, (uint64_t)addr);
        trace_sharegpu_ring_fault(s->name, idx, addr);
        s->status |= SGPU_STATUS_HALTED;
        s->error_code = SGPU_ST_DMA_ERROR;
        s->error_index = idx;
        s->error_count++;
        return false;
    }
    c->opcode = le16_to_cpu(c->opcode);
    c->flags = le16_to_cpu(c->flags);
    c->handle = le32_to_cpu(c->handle);
    c->seqno = le64_to_cpu(c->seqno);
    c->handle2 = le32_to_cpu(c->handle2);
    c->arg = le32_to_cpu(c->arg);
    if (c->opcode != SGPU_OP_IMPORT) {
        c->off0 = le64_to_cpu(c->off0);
        c->off1 = le64_to_cpu(c->off1);
    }
    c->len = le64_to_cpu(c->len);
    c->out_handle = 0;
    c->result = 0;
    return true;
}

static void sharegpu_cmd_bh(void *opaque)
{
    SharegpuState *s = opaque;
    SharegpuRing *r = &s->cmd;
    SharegpuJobProgress *job = &s->job;
    uint32_t raise = 0;
    int budget = SHAREGPU_BH_BUDGET;
    uint64_t job_budget = s->job_slice;

    while (s->dev && r->size && !(s->status & SGPU_STATUS_HALTED) && r->head != r->tail) {
        uint32_t st;

        if (!job->active) {
            struct sgpu_hw_cmd c;
            uint32_t idx = r->head;

            if (budget-- == 0) {
                qemu_bh_schedule(s->cmd_bh);
                break;
            }
            if (!sharegpu_cmd_fetch(s, idx, &c)) {
                raise |= SGPU_INT_ERROR;
                break;
            }
            trace_sharegpu_cmd(s->name, idx, c.opcode, c.flags, c.handle, c.seqno);
            if (!sharegpu_job_splittable(&c)) {
                st = sharegpu_execute(s, &c);
                /* moves it caused: windows unmapped and events queued before it completes */
                sharegpu_drain_all_events();
                raise |= sharegpu_cmd_complete(s, idx, &c, st);
                job_budget -= MIN(job_budget, sharegpu_job_bytes(&c));
                if (job_budget == 0 && r->head != r->tail) {
                    s->counters.bh_yields++;
                    qemu_bh_schedule(s->cmd_bh);
                    break;
                }
                continue;
            }
            st = sharegpu_job_validate(s, &c);
            if (st != SGPU_ST_OK) {
                raise |= sharegpu_cmd_complete(s, idx, &c, st);
                continue;
            }
            *job = (SharegpuJobProgress) { .active = true, .cmd = c, .index = idx };
            s->counters.split_jobs++;
        }
        st = sharegpu_job_advance(s, &job_budget);
        if (st == SGPU_ST_PENDING) {
            s->counters.bh_yields++;
            qemu_bh_schedule(s->cmd_bh);
            break;
        }
        job->active = false;
        raise |= sharegpu_cmd_complete(s, job->index, &job->cmd, st);
    }
    if (raise) {
        sharegpu_raise(s, raise);
    }
}

/* ------------------------------------------------------------------ MMIO */

static bool sharegpu_ring_idle(SharegpuRing *r)
{
    return r->size == 0 || r->head == r->tail;
}

static void sharegpu_update_status(SharegpuState *s)
{
    s->status &= ~(SGPU_STATUS_CMD_ENABLED | SGPU_STATUS_EVT_ENABLED);
    s->status |= SGPU_STATUS_READY;
    s->status |= s->cmd.size ? SGPU_STATUS_CMD_ENABLED : 0;
    s->status |= s->evt.size ? SGPU_STATUS_EVT_ENABLED : 0;
}

static uint32_t sharegpu_features(SharegpuState *s)
{
    return (s->coherent ? SGPU_FEAT_COHERENT : 0) | SGPU_FEAT_MSIX | SGPU_FEAT_SHARING |
           SGPU_FEAT_IMPORT_WINDOW | SGPU_FEAT_COPY_ENGINE | SGPU_FEAT_SYSTEM_PAGES;
}

static uint64_t sharegpu_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
    SharegpuState *s = opaque;
    uint64_t val = 0;

    if (size != 4 || (addr & 3)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: bad read size %u at 0x%" HWADDR_PRIx "\n",
                      s->name, size, addr);
        return 0;
    }
    switch (addr) {
    case SGPU_REG_VERSION:
        val = SGPU_VERSION;
        break;
    case SGPU_REG_FEATURES:
        val = sharegpu_features(s);
        break;
    case SGPU_REG_VRAM_SIZE_LO:
    case SGPU_REG_IMPORT_WIN_LO:
    case SGPU_REG_IMPORT_WIN_SIZE_LO:
        val = (uint32_t)s->vram_size;
        break;
    case SGPU_REG_VRAM_SIZE_HI:
    case SGPU_REG_IMPORT_WIN_HI:
    case SGPU_REG_IMPORT_WIN_SIZE_HI:
        val = s->vram_size >> 32;
        break;
    case SGPU_REG_STATUS:
        val = s->status;
        break;
    case SGPU_REG_SCRATCH:
        val = s->scratch;
        break;
    case SGPU_REG_CMD_BASE_LO:
        val = (uint32_t)s->cmd.base;
        break;
    case SGPU_REG_CMD_BASE_HI:
        val = s->cmd.base >> 32;
        break;
    case SGPU_REG_CMD_SIZE:
        val = s->cmd.size;
        break;
    case SGPU_REG_CMD_HEAD:
        val = s->cmd.head;
        break;
    case SGPU_REG_CMD_TAIL:
        val = s->cmd.tail;
        break;
    case SGPU_REG_LAST_SEQNO_LO:
        val = (uint32_t)s->last_seqno;
        break;
    case SGPU_REG_LAST_SEQNO_HI:
        val = s->last_seqno >> 32;
        break;
    case SGPU_REG_EVT_BASE_LO:
        val = (uint32_t)s->evt.base;
        break;
    case SGPU_REG_EVT_BASE_HI:
        val = s->evt.base >> 32;
        break;
    case SGPU_REG_EVT_SIZE:
        val = s->evt.size;
        break;
    case SGPU_REG_EVT_HEAD:
        val = s->evt.head;
        break;
    case SGPU_REG_EVT_TAIL:
        val = s->evt.tail;
        break;
    case SGPU_REG_EVT_DROPPED:
        val = s->evt_dropped;
        break;
    case SGPU_REG_INT_STATUS:
        val = s->int_status;
        break;
    case SGPU_REG_INT_MASK:
        val = s->int_mask;
        break;
    case SGPU_REG_ERROR_CODE:
        val = s->error_code;
        break;
    case SGPU_REG_ERROR_INDEX:
        val = s->error_index;
        break;
    case SGPU_REG_ERROR_COUNT:
        val = s->error_count;
        break;
    default:
        break;
    }
    trace_sharegpu_mmio_read(s->name, addr, val);
    return val;
}

static void sharegpu_ring_write_base(SharegpuState *s, SharegpuRing *r, bool hi,
                                     uint32_t val, uint64_t align, const char *what)
{
    uint64_t base = hi ? deposit64(r->base, 32, 32, val) : deposit64(r->base, 0, 32, val);

    if (!sharegpu_ring_idle(r)) {
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

static void sharegpu_ring_write_size(SharegpuState *s, SharegpuRing *r, uint32_t val,
                                     const char *what)
{
    if (!sharegpu_ring_idle(r)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s size written while busy\n",
                      s->name, what);
        return;
    }
    if (val != 0 && !sharegpu_ring_size_valid(val)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: invalid %s size %u\n",
                      s->name, what, val);
        val = 0;
    }
    r->size = val;
    r->head = 0;
    r->tail = 0;
    sharegpu_update_status(s);
}

static void sharegpu_soft_reset(SharegpuState *s);

static void sharegpu_mmio_write(void *opaque, hwaddr addr, uint64_t val64, unsigned size)
{
    SharegpuState *s = opaque;
    uint32_t val = val64;

    if (size != 4 || (addr & 3)) {
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: bad write size %u at 0x%" HWADDR_PRIx "\n",
                      s->name, size, addr);
        return;
    }
    trace_sharegpu_mmio_write(s->name, addr, val);
    switch (addr) {
    case SGPU_REG_RESET:
        if (val != SGPU_RESET_MAGIC) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: bad reset value 0x%x\n",
                          s->name, val);
            return;
        }
        sharegpu_soft_reset(s);
        break;
    case SGPU_REG_SCRATCH:
        s->scratch = val;
        break;
    case SGPU_REG_CMD_BASE_LO:
    case SGPU_REG_CMD_BASE_HI:
        sharegpu_ring_write_base(s, &s->cmd, addr == SGPU_REG_CMD_BASE_HI, val,
                                 sizeof(struct sgpu_hw_cmd), "command ring");
        break;
    case SGPU_REG_CMD_SIZE:
        sharegpu_ring_write_size(s, &s->cmd, val, "command ring");
        break;
    case SGPU_REG_CMD_TAIL:
        if (!s->cmd.size || val >= s->cmd.size) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: command tail %u out of range\n",
                          s->name, val);
            return;
        }
        s->cmd.tail = val;
        break;
    case SGPU_REG_DOORBELL:
        if (!s->cmd.size) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: doorbell with ring disabled\n",
                          s->name);
            return;
        }
        qemu_bh_schedule(s->cmd_bh);
        break;
    case SGPU_REG_EVT_BASE_LO:
    case SGPU_REG_EVT_BASE_HI:
        sharegpu_ring_write_base(s, &s->evt, addr == SGPU_REG_EVT_BASE_HI, val,
                                 sizeof(struct sgpu_hw_event), "event ring");
        break;
    case SGPU_REG_EVT_SIZE:
        /* the event ring is producer-driven: busy means events pending for the driver */
        s->evt.head = s->evt.tail;
        sharegpu_ring_write_size(s, &s->evt, val, "event ring");
        sharegpu_evt_flush_resync(s);
        break;
    case SGPU_REG_EVT_HEAD:
        if (!s->evt.size || val >= s->evt.size) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: event head %u out of range\n",
                          s->name, val);
            return;
        }
        s->evt.head = val;
        sharegpu_evt_flush_resync(s);
        break;
    case SGPU_REG_INT_MASK:
        s->int_mask = val & (SGPU_INT_CMD | SGPU_INT_EVENT | SGPU_INT_ERROR |
                             SGPU_INT_EVT_OVERFLOW);
        sharegpu_update_intx(s);
        break;
    case SGPU_REG_INT_ACK:
        s->int_status &= ~val;
        sharegpu_update_intx(s);
        break;
    default:
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: write to read-only/unknown register 0x%" HWADDR_PRIx "\n",
                      s->name, addr);
        break;
    }
}

static const MemoryRegionOps sharegpu_mmio_ops = {
    .read = sharegpu_mmio_read,
    .write = sharegpu_mmio_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

/* Unmapped parts of the import window: read all-ones, ignore writes. */
static uint64_t sharegpu_hole_read(void *opaque, hwaddr addr, unsigned size)
{
    return ~0ULL;
}

static void sharegpu_hole_write(void *opaque, hwaddr addr, uint64_t val, unsigned size)
{
}

static const MemoryRegionOps sharegpu_hole_ops = {
    .read = sharegpu_hole_read,
    .write = sharegpu_hole_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

/* ------------------------------------------------------------------ reset / lifecycle */

static void sharegpu_release_all_maps(SharegpuState *s)
{
    GHashTableIter it;
    gpointer value;

    /* one memory-map change for all of them (docs/hardware.md 4, "Memory map") */
    memory_region_transaction_begin();
    g_hash_table_iter_init(&it, s->bos);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        sharegpu_window_unmap(s, value);
    }
    memory_region_transaction_commit();
    g_hash_table_remove_all(s->bos);
}

static void sharegpu_soft_reset(SharegpuState *s)
{
    trace_sharegpu_reset(s->name);
    qemu_bh_cancel(s->cmd_bh);
    /* a reset takes effect between two commands: the one being executed completes first */
    sharegpu_job_finish(s);
    sharegpu_release_all_maps(s);
    if (s->dev) {
        int ret = sgpu_device_reset(s->dev);

        if (ret) {
            error_report("sharegpu: %s: backend reset failed: %s", s->name,
                         sgpu_strerror(ret));
        }
        /* events produced by the reset itself are stale for the new driver instance */
        while (sgpu_device_pop_event(s->dev, &(sgpu_event){ 0 }) == 0) {
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
    sharegpu_update_intx(s);
}

static void sharegpu_reset(DeviceState *dev)
{
    sharegpu_soft_reset(SHAREGPU(dev));
}

static void sharegpu_teardown(SharegpuState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    if (s->cmd_bh) {
        qemu_bh_delete(s->cmd_bh);
        s->cmd_bh = NULL;
    }
    s->job.active = false;
    if (s->bos) {
        sharegpu_release_all_maps(s);
        g_hash_table_destroy(s->bos);
        s->bos = NULL;
    }
    if (s->dev) {
        sgpu_device_set_event_notify(s->dev, NULL, NULL);
        sgpu_device_destroy(s->dev);
        s->dev = NULL;
    }
    /* after the notify callback is gone: nothing can schedule it any more */
    if (s->event_bh) {
        qemu_bh_delete(s->event_bh);
        s->event_bh = NULL;
    }
    if (s->backend) {
        sgpu_backend_unref(s->backend);
        s->backend = NULL;
    }
    if (msix_present(pdev)) {
        msix_uninit_exclusive_bar(pdev);
    }
    if (pci_is_express(pdev)) {
        pcie_cap_exit(pdev);
    }
    migrate_del_blocker(&s->migration_blocker);
    g_free(s->name);
    s->name = NULL;
}

static void sharegpu_realize(PCIDevice *pdev, Error **errp)
{
    SharegpuState *s = SHAREGPU(pdev);
    DeviceState *d = DEVICE(pdev);
    sgpu_device_config cfg;
    Error *err = NULL;
    int ret, i, vram_fd;

    if (s->vram_size < SHAREGPU_VRAM_MIN || s->vram_size > SHAREGPU_VRAM_MAX ||
        !is_power_of_2(s->vram_size)) {
        error_setg(errp, "sharegpu: vram-size must be a power of two in [%" PRIu64
                   ", %" PRIu64 "] bytes, got %" PRIu64,
                   (uint64_t)SHAREGPU_VRAM_MIN, (uint64_t)SHAREGPU_VRAM_MAX, s->vram_size);
        return;
    }
    if (s->job_slice < SGPU_VRAM_ALIGN) {
        error_setg(errp, "sharegpu: x-job-slice must be at least %u bytes", SGPU_VRAM_ALIGN);
        return;
    }
    s->name = d->id ? g_strdup(d->id) : object_get_canonical_path(OBJECT(s));
    trace_sharegpu_realize(s->name, s->vram_size, s->coherent);

    error_setg(&s->migration_blocker,
               "sharegpu: device state (VRAM arena, buffer objects, rings) is not migratable");
    if (migrate_add_blocker(&s->migration_blocker, errp) < 0) {
        g_free(s->name);
        s->name = NULL;
        return;
    }

    pci_config_set_interrupt_pin(pdev->config, 1);
    if (pci_is_express(pdev)) {
        if (pcie_endpoint_cap_init(pdev, SHAREGPU_PCIE_CAP_OFFSET) < 0) {
            error_setg(errp, "sharegpu: cannot add the PCIe capability");
            goto fail;
        }
    }

    sgpu_set_log_handler(sharegpu_backend_log, NULL);
    ret = sgpu_backend_get_shared(&s->backend);
    if (ret) {
        error_setg(errp, "sharegpu: backend: %s", sgpu_strerror(ret));
        goto fail;
    }
    cfg = (sgpu_device_config) {
        .name = s->name,
        .vram_size = s->vram_size,
        .coherent = s->coherent,
        .max_hostmem = s->max_hostmem,
    };
    ret = sgpu_device_create(s->backend, &cfg, &s->dev);
    if (ret) {
        error_setg(errp, "sharegpu: cannot create backend device: %s", sgpu_strerror(ret));
        goto fail;
    }

    s->bos = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, sharegpu_bo_free);
    s->cmd_bh = qemu_bh_new_guarded(sharegpu_cmd_bh, s, &d->mem_reentrancy_guard);
    s->event_bh = qemu_bh_new_guarded(sharegpu_event_bh, s, &d->mem_reentrancy_guard);
    sgpu_device_set_event_notify(s->dev, sharegpu_event_notify, s);

    /* BAR0 */
    memory_region_init_io(&s->mmio, OBJECT(s), &sharegpu_mmio_ops, s, "sharegpu-mmio",
                          SGPU_MMIO_SIZE);
    pci_register_bar(pdev, SGPU_BAR_MMIO, PCI_BASE_ADDRESS_SPACE_MEMORY, &s->mmio);

    /* BAR2: [0, vram) the arena memfd, [vram, 2 * vram) the import window */
    memory_region_init(&s->bar2, OBJECT(s), "sharegpu-bar2", 2 * s->vram_size);
    /* The RAMBlock owns (and closes) its fd: give it a dup, the backend keeps its own. */
    vram_fd = qemu_dup(sgpu_device_vram_fd(s->dev));
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
    memory_region_init(&s->import_win, OBJECT(s), "sharegpu-import-window", s->vram_size);
    memory_region_init_io(&s->import_hole, OBJECT(s), &sharegpu_hole_ops, s,
                          "sharegpu-import-hole", s->vram_size);
    memory_region_add_subregion_overlap(&s->import_win, 0, &s->import_hole, 0);
    memory_region_add_subregion(&s->bar2, s->vram_size, &s->import_win);
    pci_register_bar(pdev, SGPU_BAR_VRAM,
                     PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_64 |
                     PCI_BASE_ADDRESS_MEM_PREFETCH, &s->bar2);

    /* BAR4: MSI-X; INTx stays as the fallback */
    if (msix_init_exclusive_bar(pdev, SGPU_MSIX_VECTORS, SGPU_BAR_MSIX, errp)) {
        goto fail;
    }
    for (i = 0; i < SGPU_MSIX_VECTORS; i++) {
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

/* ------------------------------------------------------------------ monitor */

static SharegpuInfo *sharegpu_info(SharegpuState *s)
{
    SharegpuInfo *info = g_new0(SharegpuInfo, 1);
    SharegpuBoInfoList **tail = &info->bos;
    sgpu_device_stats st = { 0 };
    g_autofree sgpu_bo_info *bos = NULL;
    size_t count = 0, i;
    uint32_t inflight;

    sgpu_device_stats_get(s->dev, &st);
    info->id = g_strdup(DEVICE(s)->id ? DEVICE(s)->id : "");
    info->qom_path = object_get_canonical_path(OBJECT(s));
    info->coherent = s->coherent;
    info->vram_size = s->vram_size;
    info->vram_used = st.vram_used;
    info->hostmem_used = st.hostmem_used;
    info->hostmem_limit = st.hostmem_limit;
    info->bo_count = st.bo_count;
    info->import_count = st.import_count;
    info->cmd_ring = g_new0(SharegpuRingInfo, 1);
    *info->cmd_ring = (SharegpuRingInfo) {
        .enabled = s->cmd.size != 0, .base = s->cmd.base, .size = s->cmd.size,
        .head = s->cmd.head, .tail = s->cmd.tail,
    };
    info->event_ring = g_new0(SharegpuRingInfo, 1);
    *info->event_ring = (SharegpuRingInfo) {
        .enabled = s->evt.size != 0, .base = s->evt.base, .size = s->evt.size,
        .head = s->evt.head, .tail = s->evt.tail,
    };
    inflight = s->cmd.size ? ((s->cmd.tail - s->cmd.head) & (s->cmd.size - 1)) : 0;
    info->last_seqno = s->last_seqno;
    info->fences_in_flight = inflight;
    info->int_status = s->int_status;
    info->int_mask = s->int_mask;
    info->halted = !!(s->status & SGPU_STATUS_HALTED);
    info->last_error = s->error_code;
    if (s->job.active) {
        info->job_in_progress = g_new0(SharegpuJobProgressInfo, 1);
        *info->job_in_progress = (SharegpuJobProgressInfo) {
            .index = s->job.index, .opcode = s->job.cmd.opcode,
            .done = s->job.done, .len = s->job.cmd.len,
        };
    }
    info->counters = g_new0(SharegpuCounters, 1);
    *info->counters = (SharegpuCounters) {
        .split_jobs = s->counters.split_jobs,
        .bh_yields = s->counters.bh_yields,
        .commands = s->counters.commands,
        .command_errors = s->counters.command_errors,
        .interrupts = s->counters.interrupts,
        .events = s->counters.events,
        .events_dropped = s->counters.events_dropped,
        .jobs = st.jobs,
        .job_errors = st.job_errors,
        .bytes_copied = st.bytes_copied,
        .evictions = st.evictions,
        .moves = st.moves,
        .exports = st.exports,
        .imports = st.imports,
        .move_notifies = st.move_notifies,
        .cache_flushes = st.cache_flushes,
        .cache_invalidates = st.cache_invalidates,
        .ww_backoffs = st.ww_backoffs,
        .fences_emitted = st.fences_emitted,
        .last_fence = st.last_fence,
    };

    if (sgpu_device_list_bos(s->dev, NULL, 0, &count) == 0 && count) {
        size_t cap = count;

        bos = g_new0(sgpu_bo_info, cap);
        if (sgpu_device_list_bos(s->dev, bos, cap, &count)) {
            count = 0;
        }
        count = MIN(count, cap);
    } else {
        count = 0;
    }
    for (i = 0; i < count; i++) {
        sgpu_bo_info *b = &bos[i];
        SharegpuBo *dbo = sharegpu_bo_get(s, b->handle, false);
        SharegpuBoInfo *bi = g_new0(SharegpuBoInfo, 1);

        bi->handle = b->handle;
        bi->size = b->size;
        bi->placement = b->placement == SGPU_PLACEMENT_DEVICE ? SHAREGPU_PLACEMENT_DEVICE
                                                              : SHAREGPU_PLACEMENT_SYSTEM;
        if (b->placement == SGPU_PLACEMENT_DEVICE) {
            bi->has_vram_offset = true;
            bi->vram_offset = b->vram_offset;
        }
        bi->imported = b->imported;
        bi->exported = b->exported;
        if (b->exported || b->imported) {
            bi->uuid = qemu_uuid_unparse_strdup((QemuUUID *)b->uuid.bytes);
        }
        bi->exporter = g_strndup(b->exporter, sizeof(b->exporter));
        bi->pin_count = b->pin_count;
        bi->vmap_count = b->vmap_count;
        bi->attachments = b->attachments;
        bi->live_mappings = b->live_mappings;
        bi->fences_pending = b->fences_pending;
        bi->generation = b->generation;
        bi->moves = b->moves;
        bi->invalidations = b->invalidations;
        bi->cache_dirty_lines = b->cache_dirty_lines;
        bi->cache_valid_lines = b->cache_valid_lines;
        if (dbo) {
            bi->backing_entries = dbo->nents;
            bi->backing_bytes = dbo->backing_bytes;
            if (dbo->map) {
                bi->has_window_offset = true;
                bi->window_offset = s->vram_size + dbo->map_off;
            }
        }
        QAPI_LIST_APPEND(tail, bi);
    }
    return info;
}

SharegpuInfoList *qmp_query_sharegpu(const char *id, Error **errp)
{
    SharegpuInfoList *head = NULL, **tail = &head;
    SharegpuState *s;

    if (id && !sharegpu_find(id)) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return NULL;
    }
    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (id && g_strcmp0(DEVICE(s)->id, id) && g_strcmp0(s->name, id)) {
            continue;
        }
        QAPI_LIST_APPEND(tail, sharegpu_info(s));
    }
    return head;
}

void qmp_sharegpu_move_bo(const char *id, uint32_t handle, SharegpuPlacement placement,
                          Error **errp)
{
    SharegpuState *s = sharegpu_find(id);
    uint32_t p = placement == SHAREGPU_PLACEMENT_DEVICE ? SGPU_PLACEMENT_DEVICE
                                                        : SGPU_PLACEMENT_SYSTEM;
    sgpu_bo_info info;
    int ret;

    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return;
    }
    ret = sgpu_bo_info_get(s->dev, handle, &info);
    if (ret) {
        error_setg(errp, "sharegpu %s: handle %u: %s", id, handle, sgpu_strerror(ret));
        return;
    }
    if (info.imported) {
        error_setg(errp, "sharegpu %s: handle %u is an import; move it on its exporter '%s'",
                   id, handle, info.exporter);
        return;
    }
    ret = p == SGPU_PLACEMENT_SYSTEM ? sgpu_bo_evict(s->dev, handle)
                                     : sgpu_bo_move(s->dev, handle, p);
    trace_sharegpu_monitor_move(s->name, handle, p, ret);
    sharegpu_drain_all_events();
    if (ret) {
        error_setg(errp, "sharegpu %s: moving handle %u failed: %s", id, handle,
                   sgpu_strerror(ret));
    }
}

static const char *sharegpu_status_name(uint32_t st)
{
    static const char *const names[] = {
        "OK", "BAD_OPCODE", "BAD_HANDLE", "OUT_OF_RANGE", "NO_SPACE", "BUSY", "INVALID",
        "DMA_ERROR", "NOT_FOUND", "TOO_BIG", "NO_BACKING", "CANCELLED", "INTERNAL",
    };
    return st < ARRAY_SIZE(names) ? names[st] : "?";
}

void hmp_info_sharegpu(Monitor *mon, const QDict *qdict)
{
    const char *id = qdict_get_try_str(qdict, "id");
    Error *err = NULL;
    g_autoptr(SharegpuInfoList) list = qmp_query_sharegpu(id, &err);
    SharegpuInfoList *l;

    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (!list) {
        monitor_printf(mon, "no sharegpu devices\n");
        return;
    }
    for (l = list; l; l = l->next) {
        SharegpuInfo *i = l->value;
        SharegpuCounters *c = i->counters;
        SharegpuBoInfoList *b;

        monitor_printf(mon, "sharegpu %s (%s): %s, vram %" PRIu64 " MiB, used %" PRIu64
                       " KiB, %u BOs, %u imports\n",
                       i->id[0] ? i->id : "<no id>", i->qom_path,
                       i->coherent ? "coherent" : "non-coherent (strict caches)",
                       i->vram_size / MiB, i->vram_used / KiB, i->bo_count, i->import_count);
        monitor_printf(mon, "  host memory (system placements): %" PRIu64 " of %" PRIu64
                       " KiB\n", i->hostmem_used / KiB, i->hostmem_limit / KiB);
        monitor_printf(mon, "  cmd ring: %s base 0x%" PRIx64 " size %u head %u tail %u, "
                       "last seqno %" PRIu64 ", in flight %u%s\n",
                       i->cmd_ring->enabled ? "on" : "off", i->cmd_ring->base,
                       i->cmd_ring->size, i->cmd_ring->head, i->cmd_ring->tail,
                       i->last_seqno, i->fences_in_flight, i->halted ? ", HALTED" : "");
        monitor_printf(mon, "  event ring: %s base 0x%" PRIx64 " size %u head %u tail %u; "
                       "irq status 0x%x mask 0x%x; last error %s\n",
                       i->event_ring->enabled ? "on" : "off", i->event_ring->base,
                       i->event_ring->size, i->event_ring->head, i->event_ring->tail,
                       i->int_status, i->int_mask, sharegpu_status_name(i->last_error));
        monitor_printf(mon, "  counters: commands %" PRIu64 " (errors %" PRIu64 ") irqs %"
                       PRIu64 " events %" PRIu64 " (dropped %" PRIu64 ") jobs %" PRIu64
                       " (errors %" PRIu64 ") bytes %" PRIu64 "\n",
                       c->commands, c->command_errors, c->interrupts, c->events,
                       c->events_dropped, c->jobs, c->job_errors, c->bytes_copied);
        monitor_printf(mon, "            moves %" PRIu64 " evictions %" PRIu64 " exports %"
                       PRIu64 " imports %" PRIu64 " move-notifies %" PRIu64 " flushes %"
                       PRIu64 " invalidates %" PRIu64 " ww-backoffs %" PRIu64
                       " fences %" PRIu64 " (last %" PRIu64 ")\n",
                       c->moves, c->evictions, c->exports, c->imports, c->move_notifies,
                       c->cache_flushes, c->cache_invalidates, c->ww_backoffs,
                       c->fences_emitted, c->last_fence);
        monitor_printf(mon, "            split jobs %" PRIu64 " slice yields %" PRIu64 "\n",
                       c->split_jobs, c->bh_yields);
        if (i->job_in_progress) {
            monitor_printf(mon, "  job in progress: ring index %u opcode 0x%x, %" PRIu64
                           " of %" PRIu64 " bytes done\n",
                           i->job_in_progress->index, i->job_in_progress->opcode,
                           i->job_in_progress->done, i->job_in_progress->len);
        }
        if (!i->bos) {
            monitor_printf(mon, "  no buffer objects\n");
        }
        for (b = i->bos; b; b = b->next) {
            SharegpuBoInfo *bo = b->value;

            monitor_printf(mon, "  bo %u: %" PRIu64 " bytes %s", bo->handle, bo->size,
                           SharegpuPlacement_str(bo->placement));
            if (bo->has_vram_offset) {
                monitor_printf(mon, "@0x%" PRIx64, bo->vram_offset);
            }
            monitor_printf(mon, " pin %u vmap %u attach %u mapped %u fences %u gen %" PRIu64
                           " cache dirty/valid %u/%u",
                           bo->pin_count, bo->vmap_count, bo->attachments, bo->live_mappings,
                           bo->fences_pending, bo->generation, bo->cache_dirty_lines,
                           bo->cache_valid_lines);
            if (bo->imported) {
                monitor_printf(mon, " imported from %s", bo->exporter);
            }
            if (bo->uuid) {
                monitor_printf(mon, " %s %s", bo->exported ? "exported" : "uuid", bo->uuid);
            }
            if (bo->backing_entries) {
                monitor_printf(mon, " backing %u ents/%" PRIu64 " bytes",
                               bo->backing_entries, bo->backing_bytes);
            }
            if (bo->has_window_offset) {
                monitor_printf(mon, " window@0x%" PRIx64, bo->window_offset);
            }
            monitor_printf(mon, "\n");
        }
    }
}

void hmp_sharegpu_move_bo(Monitor *mon, const QDict *qdict)
{
    const char *id = qdict_get_str(qdict, "id");
    int64_t handle = qdict_get_int(qdict, "handle");
    const char *pstr = qdict_get_str(qdict, "placement");
    Error *err = NULL;
    int placement;

    placement = qapi_enum_parse(&SharegpuPlacement_lookup, pstr, -1, &err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (handle <= 0 || handle > UINT32_MAX) {
        monitor_printf(mon, "invalid handle %" PRId64 "\n", handle);
        return;
    }
    qmp_sharegpu_move_bo(id, handle, placement, &err);
    hmp_handle_error(mon, err);
}

/* ------------------------------------------------------------------ QOM */

static const Property sharegpu_properties[] = {
    DEFINE_PROP_SIZE("vram-size", SharegpuState, vram_size, SHAREGPU_VRAM_DEFAULT),
    DEFINE_PROP_BOOL("coherent", SharegpuState, coherent, true),
    DEFINE_PROP_SIZE("max-hostmem", SharegpuState, max_hostmem, SHAREGPU_HOSTMEM_DEFAULT),
    /* bytes of job work per main-loop turn; for tests and tuning (docs/user-guide.md) */
    DEFINE_PROP_SIZE("x-job-slice", SharegpuState, job_slice, SHAREGPU_JOB_SLICE_DEFAULT),
};

static void sharegpu_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = sharegpu_realize;
    k->exit = sharegpu_exit;
    k->vendor_id = SGPU_PCI_VENDOR_ID;
    k->device_id = SGPU_PCI_DEVICE_ID;
    k->revision = SGPU_PCI_REVISION;
    k->class_id = SGPU_PCI_CLASS;
    k->subsystem_vendor_id = SGPU_PCI_SUBVENDOR_ID;
    k->subsystem_id = SGPU_PCI_SUBDEVICE_ID;
    dc->desc = "sharegpu emulated GPU (buffer objects with dma-buf semantics)";
    set_bit(DEVICE_CATEGORY_DISPLAY, dc->categories);
    device_class_set_props(dc, sharegpu_properties);
    device_class_set_legacy_reset(dc, sharegpu_reset);
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
    {
        .name = TYPE_SHAREGPU_WINDOW_MAP,
        .parent = TYPE_OBJECT,
        .instance_size = sizeof(SharegpuWindowMap),
    },
};

DEFINE_TYPES(sharegpu_types)
