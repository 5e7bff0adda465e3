/*
 * sharegpu: command handlers (docs/hardware.md 3, 5) and the device-side handle table
 *
 * sharegpu_cmd_execute() runs one decoded command and returns its status; the ring
 * (sharegpu-ring.c) fetches, completes and splits long jobs. Buffer-object semantics are
 * the backend's: a handler validates what the backend cannot see (guest memory, backing,
 * flags), calls it and maps its -errno to a status. MAP_IMPORT / UNMAP_IMPORT are in
 * sharegpu-window.c.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "qemu/log.h"
#include "qemu/error-report.h"
#include "hw/pci/pci_device.h"
#include "sharegpu.h"

#define SHAREGPU_BOUNCE (256 * KiB)     /* transfer bounce buffer */

uint32_t sharegpu_status_from_errno(int ret)
{
    switch (ret) {
    case 0:
        return SGHW_ST_OK;
    case -ENOENT:
        return SGHW_ST_BAD_HANDLE;
    case -ERANGE:
        return SGHW_ST_OUT_OF_RANGE;
    case -ENOSPC:
        return SGHW_ST_NO_SPACE;
    case -EBUSY:
        return SGHW_ST_BUSY;
    case -EINVAL:
        return SGHW_ST_INVALID;
    case -E2BIG:
        return SGHW_ST_TOO_BIG;
    case -EFAULT:
        return SGHW_ST_DMA_ERROR;
    case -ECANCELED:
        return SGHW_ST_CANCELLED;  /* a job JOB_ABORT dropped before it started */
    case -EACCES:
        return SGHW_ST_ACCESS_DENIED;  /* a write into a READ-only remote import's pages */
    default:
        return SGHW_ST_INTERNAL;
    }
}

/* ------------------------------------------------------------------ handle table */

/*
 * An entry exists only for a handle the backend knows: ATTACH_BACKING and MAP_IMPORT create
 * it after checking the handle, BO_DESTROY and reset remove it.
 */
SharegpuBo *sharegpu_bo_lookup(SharegpuState *s, uint32_t handle)
{
    return g_hash_table_lookup(s->bos, GUINT_TO_POINTER(handle));
}

SharegpuBo *sharegpu_bo_get(SharegpuState *s, uint32_t handle)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, handle);

    if (!bo) {
        bo = g_new0(SharegpuBo, 1);
        bo->handle = handle;
        g_hash_table_insert(s->bos, GUINT_TO_POINTER(handle), bo);
    }
    return bo;
}

static void sharegpu_bo_remove(SharegpuState *s, uint32_t handle)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, handle);

    if (bo) {
        sharegpu_window_unmap(s, bo);
        g_hash_table_remove(s->bos, GUINT_TO_POINTER(handle));
    }
}

void sharegpu_bo_free(gpointer data)
{
    SharegpuBo *bo = data;

    assert(!bo->map);
    g_free(bo->ents);
    g_free(bo->coh_win_dirty);
    g_free(bo);
}

/* ------------------------------------------------------------------ backing, transfers */

static void sharegpu_backing_free(SharegpuBo *bo)
{
    g_free(bo->ents);
    bo->ents = NULL;
    bo->nents = 0;
    bo->backing_bytes = 0;
}

static uint32_t sharegpu_cmd_attach_backing(SharegpuState *s, struct sghw_cmd *c)
{
    uint32_t n = c->arg;
    g_autofree struct sghw_mem_entry *raw = NULL;
    SharegpuMemEntry *ents;
    sgb_bo_state info;
    uint64_t total = 0;
    SharegpuBo *bo;
    uint32_t i;
    int ret;

    /* nothing in the backend uses the handle: this is its existence check */
    ret = sgb_bo_state_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (n == 0 || n > SGHW_MAX_MEM_ENTRIES) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: ATTACH_BACKING with %u entries\n",
                      s->name, n);
        return SGHW_ST_INVALID;
    }
    raw = g_new(struct sghw_mem_entry, n);
    if (pci_dma_read(PCI_DEVICE(s), c->off0, raw, sizeof(*raw) * n) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: cannot read sg list at 0x%" PRIx64 "\n",
                      s->name, c->off0);
        return SGHW_ST_DMA_ERROR;
    }
    ents = g_new(SharegpuMemEntry, n);
    for (i = 0; i < n; i++) {
        ents[i].addr = le64_to_cpu(raw[i].addr);
        ents[i].len = le32_to_cpu(raw[i].length);
        if (ents[i].len == 0 || ents[i].addr + ents[i].len < ents[i].addr) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: bad sg entry %u\n", s->name, i);
            g_free(ents);
            return SGHW_ST_INVALID;
        }
        total += ents[i].len;
    }
    bo = sharegpu_bo_get(s, c->handle);
    sharegpu_backing_free(bo);
    bo->ents = ents;
    bo->nents = n;
    bo->backing_bytes = total;
    c->result = total;
    return SGHW_ST_OK;
}

static uint32_t sharegpu_cmd_detach_backing(SharegpuState *s, struct sghw_cmd *c)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
    sgb_bo_state info;
    int ret;

    if (bo && bo->nents) {
        sharegpu_backing_free(bo);
        return SGHW_ST_OK;
    }
    /* no backing: the backend tells an unknown handle (BAD_HANDLE) from a bare one */
    ret = sgb_bo_state_get(s->dev, c->handle, &info);
    return ret ? sharegpu_status_from_errno(ret) : SGHW_ST_NO_BACKING;
}

static uint32_t sharegpu_cmd_transfer(SharegpuState *s, struct sghw_cmd *c, bool to_device)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
    g_autofree uint8_t *buf = NULL;
    uint64_t bo_off = c->off0, back_off = c->off1, left = c->len;
    sgb_bo_state info;
    uint32_t i = 0;
    uint64_t ent_start = 0;
    int ret;

    /* the size is needed up front: a transfer fails before it copies anything */
    ret = sgb_bo_state_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (!bo || !bo->nents) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: transfer on handle %u without backing\n",
                      s->name, c->handle);
        return SGHW_ST_NO_BACKING;
    }
    if (c->len == 0) {
        return SGHW_ST_INVALID;
    }
    if (!sharegpu_range_ok(bo_off, left, info.size) ||
        !sharegpu_range_ok(back_off, left, bo->backing_bytes)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: transfer out of range\n", s->name);
        return SGHW_ST_OUT_OF_RANGE;
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
                return SGHW_ST_DMA_ERROR;
            }
            ret = sgb_bo_cpu_write(s->dev, c->handle, bo_off, buf, chunk);
        } else {
            ret = sgb_bo_cpu_read(s->dev, c->handle, bo_off, buf, chunk);
            if (!ret && pci_dma_write(PCI_DEVICE(s), gpa, buf, chunk) != MEMTX_OK) {
                return SGHW_ST_DMA_ERROR;
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
    return SGHW_ST_OK;
}

/* ------------------------------------------------------------------ placement */

static uint32_t sharegpu_placement_result(SharegpuState *s, uint32_t handle, uint64_t *result)
{
    sgb_bo_state info;
    int ret = sgb_bo_state_get(s->dev, handle, &info);

    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    *result = info.placement == SGB_PLACEMENT_DEVICE ? info.vram_offset : SGHW_INVALID_OFFSET;
    return SGHW_ST_OK;
}

/*
 * Eviction to make room in VRAM is the backend's (its LRU); NO_EVICT leaves it to the
 * guest's memory manager (-ENOSPC -> NO_SPACE).
 */
static uint32_t sharegpu_cmd_create(SharegpuState *s, struct sghw_cmd *c, bool no_evict)
{
    int ret;

    if (c->arg > SGB_PLACEMENT_SYSTEM || c->len == 0) {
        return SGHW_ST_INVALID;
    }
    if (c->len > SGB_MAX_BO_SIZE ||
        (c->arg == SGB_PLACEMENT_DEVICE && c->len > s->vram_size)) {
        return SGHW_ST_TOO_BIG;
    }
    ret = sgb_bo_create(s->dev, c->len, c->arg, no_evict ? SGB_ALLOC_NO_EVICT : 0,
                          &c->out_handle);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    return sharegpu_placement_result(s, c->out_handle, &c->result);
}

static uint32_t sharegpu_cmd_move(SharegpuState *s, struct sghw_cmd *c, bool no_evict)
{
    bool handled;
    int ret;

    if (c->arg > SGB_PLACEMENT_SYSTEM) {
        return SGHW_ST_INVALID;
    }
    if (no_evict) {
        sgb_bo_state info;

        ret = sgb_bo_state_get(s->dev, c->handle, &info);
        if (ret) {
            return sharegpu_status_from_errno(ret);
        }
        if (info.imported) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BO_MOVE NO_EVICT of import %u\n",
                          s->name, c->handle);
            return SGHW_ST_INVALID;
        }
    }
    /* a broker-exported buffer relocates (SYSTEM) or refuses (DEVICE: BUSY) */
    ret = sharegpu_remote_move(s, c->handle, c->arg, &handled);
    if (!handled) {
        ret = sgb_bo_move(s->dev, c->handle, c->arg, no_evict ? SGB_ALLOC_NO_EVICT : 0);
    }
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    return sharegpu_placement_result(s, c->handle, &c->result);
}

static uint32_t sharegpu_cmd_pin(SharegpuState *s, struct sghw_cmd *c, bool pin)
{
    sgb_bo_state info;
    int ret;

    ret = pin ? sgb_bo_pin(s->dev, c->handle) : sgb_bo_unpin(s->dev, c->handle);
    if (!ret && !sgb_bo_state_get(s->dev, c->handle, &info)) {
        c->result = info.pin_count;
    }
    return sharegpu_status_from_errno(ret);
}

static uint32_t sharegpu_cmd_query(SharegpuState *s, struct sghw_cmd *c)
{
    struct sghw_bo_info out = { 0 };
    SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
    sgb_bo_state info;
    uint32_t flags = 0;
    int ret;

    ret = sgb_bo_state_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    flags |= info.imported ? SGHW_BO_F_IMPORTED : 0;
    flags |= info.exported ? SGHW_BO_F_EXPORTED : 0;
    flags |= bo && bo->nents ? SGHW_BO_F_BACKING : 0;
    flags |= bo && bo->map ? SGHW_BO_F_MAPPED : 0;
    flags |= sharegpu_remote_exported(s, c->handle) ? SGHW_BO_F_BROKER_EXPORTED : 0;
    out.size = cpu_to_le64(info.size);
    if (info.imported) {
        out.vram_offset = cpu_to_le64(bo && bo->map ? s->vram_size + bo->map_off
                                                   : SGHW_INVALID_OFFSET);
    } else {
        out.vram_offset = cpu_to_le64(info.placement == SGB_PLACEMENT_DEVICE ?
                                      info.vram_offset : SGHW_INVALID_OFFSET);
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
        return SGHW_ST_DMA_ERROR;
    }
    c->result = info.size;
    return SGHW_ST_OK;
}

/* ------------------------------------------------------------------ dispatch */

/* Executes one command; fills c->out_handle / c->result (and c->uuid for EXPORT). */
static uint32_t sharegpu_cmd_dispatch(SharegpuState *s, struct sghw_cmd *c)
{
    sgb_uuid uuid;
    bool no_evict, handled;
    int ret = 0;

    if (c->flags & ~(SGHW_CMD_F_IRQ | SGHW_CMD_F_NO_EVICT)) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: undefined flags 0x%x\n",
                      s->name, c->flags);
        return SGHW_ST_INVALID;
    }
    no_evict = c->flags & SGHW_CMD_F_NO_EVICT;
    if (no_evict && c->opcode != SGHW_OP_BO_CREATE && c->opcode != SGHW_OP_BO_MOVE) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: NO_EVICT on opcode 0x%x\n",
                      s->name, c->opcode);
        return SGHW_ST_INVALID;
    }
    if (sharegpu_remote_hidden(s, c)) {
        return SGHW_ST_BAD_HANDLE;
    }
    /* BROKER_* and anything on a remote import handle (docs/hardware.md 13) */
    if (sharegpu_remote_handle(c)) {
        return sharegpu_remote_cmd(s, c);
    }

    switch (c->opcode) {
    case SGHW_OP_NOP:
        return SGHW_ST_OK;
    case SGHW_OP_BO_CREATE:
        return sharegpu_cmd_create(s, c, no_evict);
    case SGHW_OP_BO_DESTROY:
        sharegpu_remote_destroyed(s, c->handle);  /* a broker export goes with it */
        ret = sgb_bo_destroy(s->dev, c->handle);
        if (!ret) {
            sharegpu_bo_remove(s, c->handle);
        }
        break;
    case SGHW_OP_BO_QUERY:
        return sharegpu_cmd_query(s, c);
    case SGHW_OP_BO_MOVE:
        return sharegpu_cmd_move(s, c, no_evict);
    case SGHW_OP_BO_EVICT:
        ret = sharegpu_remote_move(s, c->handle, SGB_PLACEMENT_SYSTEM, &handled);
        if (!handled) {
            ret = sgb_bo_evict(s->dev, c->handle);
        }
        break;
    case SGHW_OP_BO_PIN:
    case SGHW_OP_BO_UNPIN:
        return sharegpu_cmd_pin(s, c, c->opcode == SGHW_OP_BO_PIN);
    case SGHW_OP_ATTACH_BACKING:
        return sharegpu_cmd_attach_backing(s, c);
    case SGHW_OP_DETACH_BACKING:
        return sharegpu_cmd_detach_backing(s, c);
    case SGHW_OP_TRANSFER_TO_DEVICE:
    case SGHW_OP_TRANSFER_FROM_DEVICE:
        return sharegpu_cmd_transfer(s, c, c->opcode == SGHW_OP_TRANSFER_TO_DEVICE);
    case SGHW_OP_COPY:
    case SGHW_OP_FILL:
    case SGHW_OP_CHECKSUM:
        /* jobs never run here: the ring queues them on the engine (sharegpu-job.c) */
        error_report("sharegpu: %s: job opcode 0x%x reached the synchronous path",
                     s->name, c->opcode);
        return SGHW_ST_INTERNAL;
    case SGHW_OP_FENCE:
        c->result = c->seqno;
        return SGHW_ST_OK;
    case SGHW_OP_CACHE_FLUSH:
        ret = sgb_bo_cache_flush(s->dev, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_CACHE_INVALIDATE:
        ret = sgb_bo_cache_invalidate(s->dev, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_CPU_ACCESS_BEGIN:
    case SGHW_OP_CPU_ACCESS_END:
        if (c->arg > SGHW_DIR_FROM_DEVICE) {
            return SGHW_ST_INVALID;
        }
        ret = c->opcode == SGHW_OP_CPU_ACCESS_BEGIN ?
              sgb_bo_begin_cpu_access(s->dev, c->handle, c->arg) :
              sgb_bo_end_cpu_access(s->dev, c->handle, c->arg);
        break;
    case SGHW_OP_EXPORT:
        ret = sgb_bo_export(s->dev, c->handle, &uuid, NULL);
        if (!ret) {
            memcpy(c->uuid, uuid.bytes, sizeof(c->uuid));
        }
        break;
    case SGHW_OP_IMPORT:
        memcpy(uuid.bytes, c->uuid, sizeof(uuid.bytes));
        ret = sgb_bo_import_uuid(s->dev, &uuid, &c->out_handle);
        if (ret == -ENOENT) {
            return SGHW_ST_NOT_FOUND;
        }
        break;
    case SGHW_OP_MAP_IMPORT:
        return sharegpu_window_map_import(s, c);
    case SGHW_OP_UNMAP_IMPORT:
        return sharegpu_window_unmap_import(s, c);
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: unknown opcode 0x%x\n",
                      s->name, c->opcode);
        return SGHW_ST_BAD_OPCODE;
    }
    return sharegpu_status_from_errno(ret);
}

uint32_t sharegpu_cmd_execute(SharegpuState *s, struct sghw_cmd *c)
{
    uint32_t st = sharegpu_cmd_dispatch(s, c);

    if (st == SGHW_ST_OK) {
        sharegpu_coherency_cmd(s, c);
    }
    return st;
}

/* ------------------------------------------------------------------ long jobs */

/*
 * Everything sharegpu_cmd_transfer() would reject in any chunk of a split TRANSFER, in its
 * order, checked before the first chunk runs, so that a transfer either fails without side
 * effects or runs to the end (as an unsplit one does).
 */
uint32_t sharegpu_cmd_check_job(SharegpuState *s, const struct sghw_cmd *c)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
    sgb_bo_state info;
    int ret;

    if (c->flags & ~SGHW_CMD_F_IRQ) {
        return SGHW_ST_INVALID;
    }
    if (sharegpu_remote_hidden(s, c)) {
        return SGHW_ST_BAD_HANDLE;
    }
    if (c->handle & SGHW_REMOTE_HANDLE_BIT) {
        return sharegpu_remote_check_transfer(s, c);  /* not OK: no transfers on them */
    }
    ret = sgb_bo_state_get(s->dev, c->handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (!bo || !bo->nents) {
        return SGHW_ST_NO_BACKING;
    }
    return sharegpu_range_ok(c->off0, c->len, info.size) &&
           sharegpu_range_ok(c->off1, c->len, bo->backing_bytes) ? SGHW_ST_OK
                                                                  : SGHW_ST_OUT_OF_RANGE;
}
