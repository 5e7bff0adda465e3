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
#include "hw/pci/pci_device.h"
#include "sharegpu.h"

#define SHAREGPU_BOUNCE (256 * KiB)     /* transfer bounce buffer */

uint32_t sharegpu_status_from_errno(int ret)
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

    /* nothing in the backend uses the handle: this is its existence check */
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
    bo = sharegpu_bo_get(s, c->handle);
    sharegpu_backing_free(bo);
    bo->ents = ents;
    bo->nents = n;
    bo->backing_bytes = total;
    c->result = total;
    return SGPU_ST_OK;
}

static uint32_t sharegpu_cmd_detach_backing(SharegpuState *s, struct sgpu_hw_cmd *c)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
    sgpu_bo_info info;
    int ret;

    if (bo && bo->nents) {
        sharegpu_backing_free(bo);
        return SGPU_ST_OK;
    }
    /* no backing: the backend tells an unknown handle (BAD_HANDLE) from a bare one */
    ret = sgpu_bo_info_get(s->dev, c->handle, &info);
    return ret ? sharegpu_status_from_errno(ret) : SGPU_ST_NO_BACKING;
}

static uint32_t sharegpu_cmd_transfer(SharegpuState *s, struct sgpu_hw_cmd *c, bool to_device)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
    g_autofree uint8_t *buf = NULL;
    uint64_t bo_off = c->off0, back_off = c->off1, left = c->len;
    sgpu_bo_info info;
    uint32_t i = 0;
    uint64_t ent_start = 0;
    int ret;

    /* the size is needed up front: a transfer fails before it copies anything */
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

/* ------------------------------------------------------------------ placement */

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

/*
 * Eviction to make room in VRAM is the backend's (its LRU); NO_EVICT leaves it to the
 * guest's memory manager (-ENOSPC -> NO_SPACE).
 */
static uint32_t sharegpu_cmd_create(SharegpuState *s, struct sgpu_hw_cmd *c, bool no_evict)
{
    int ret;

    if (c->arg > SGPU_PLACEMENT_SYSTEM || c->len == 0) {
        return SGPU_ST_INVALID;
    }
    if (c->len > SGPU_MAX_BO_SIZE ||
        (c->arg == SGPU_PLACEMENT_DEVICE && c->len > s->vram_size)) {
        return SGPU_ST_TOO_BIG;
    }
    ret = sgpu_bo_create2(s->dev, c->len, c->arg, no_evict ? SGPU_ALLOC_NO_EVICT : 0,
                          &c->out_handle);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    return sharegpu_placement_result(s, c->out_handle, &c->result);
}

static uint32_t sharegpu_cmd_move(SharegpuState *s, struct sgpu_hw_cmd *c, bool no_evict)
{
    int ret;

    if (c->arg > SGPU_PLACEMENT_SYSTEM) {
        return SGPU_ST_INVALID;
    }
    if (no_evict) {
        sgpu_bo_info info;

        ret = sgpu_bo_info_get(s->dev, c->handle, &info);
        if (ret) {
            return sharegpu_status_from_errno(ret);
        }
        if (info.imported) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BO_MOVE NO_EVICT of import %u\n",
                          s->name, c->handle);
            return SGPU_ST_INVALID;
        }
    }
    ret = sgpu_bo_move2(s->dev, c->handle, c->arg, no_evict ? SGPU_ALLOC_NO_EVICT : 0);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    return sharegpu_placement_result(s, c->handle, &c->result);
}

static uint32_t sharegpu_cmd_pin(SharegpuState *s, struct sgpu_hw_cmd *c, bool pin)
{
    sgpu_bo_info info;
    int ret;

    ret = pin ? sgpu_bo_pin(s->dev, c->handle) : sgpu_bo_unpin(s->dev, c->handle);
    if (!ret && !sgpu_bo_info_get(s->dev, c->handle, &info)) {
        c->result = info.pin_count;
    }
    return sharegpu_status_from_errno(ret);
}

static uint32_t sharegpu_cmd_query(SharegpuState *s, struct sgpu_hw_cmd *c)
{
    struct sgpu_hw_bo_info out = { 0 };
    SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
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

/* ------------------------------------------------------------------ dispatch */

/* Executes one command; fills c->out_handle / c->result (and c->uuid for EXPORT). */
uint32_t sharegpu_cmd_execute(SharegpuState *s, struct sgpu_hw_cmd *c)
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
        return sharegpu_cmd_create(s, c, no_evict);
    case SGPU_OP_BO_DESTROY:
        ret = sgpu_bo_destroy(s->dev, c->handle);
        if (!ret) {
            sharegpu_bo_remove(s, c->handle);
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
    case SGPU_OP_BO_UNPIN:
        return sharegpu_cmd_pin(s, c, c->opcode == SGPU_OP_BO_PIN);
    case SGPU_OP_ATTACH_BACKING:
        return sharegpu_cmd_attach_backing(s, c);
    case SGPU_OP_DETACH_BACKING:
        return sharegpu_cmd_detach_backing(s, c);
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
        return sharegpu_window_map_import(s, c);
    case SGPU_OP_UNMAP_IMPORT:
        return sharegpu_window_unmap_import(s, c);
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: unknown opcode 0x%x\n",
                      s->name, c->opcode);
        return SGPU_ST_BAD_OPCODE;
    }
    return sharegpu_status_from_errno(ret);
}

/* ------------------------------------------------------------------ long jobs */

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
 * Everything the handlers above would reject in any chunk of a split job (COPY, FILL,
 * TRANSFER_*), checked before the first chunk runs, so that a job either fails without
 * side effects or runs to the end (as an unsplit one does).
 */
uint32_t sharegpu_cmd_check_job(SharegpuState *s, const struct sgpu_hw_cmd *c)
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
        SharegpuBo *bo = sharegpu_bo_lookup(s, c->handle);
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
