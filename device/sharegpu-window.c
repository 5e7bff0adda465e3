/*
 * sharegpu: the import window, the upper half of BAR2 (docs/hardware.md 4)
 *
 * MAP_IMPORT maps an imported buffer's storage (the exporter's memfd, zero copy) into the
 * window; the mapping goes with UNMAP_IMPORT, a move of the buffer (sharegpu-ring.c
 * delivers the backend's invalidation), the destruction of the import and reset. Unmapped
 * parts read all-ones and ignore writes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "exec/memory.h"
#include "trace.h"
#include "sharegpu.h"

/*
 * A window mapping of an import: its own QOM object, so that the MemoryRegion (and the
 * mmap of the exporter's memfd behind it) lives until the last flatview reference drops.
 */
struct SharegpuWindowMap {
    Object parent_obj;
    MemoryRegion mr;
};

static uint64_t sharegpu_window_hole_read(void *opaque, hwaddr addr, unsigned size)
{
    return ~0ULL;
}

static void sharegpu_window_hole_write(void *opaque, hwaddr addr, uint64_t val,
                                       unsigned size)
{
}

static const MemoryRegionOps sharegpu_window_hole_ops = {
    .read = sharegpu_window_hole_read,
    .write = sharegpu_window_hole_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

/* The window container with its all-ones background; realize puts it into BAR2. */
void sharegpu_window_init(SharegpuState *s)
{
    memory_region_init(&s->import_win, OBJECT(s), "sharegpu-import-window", s->vram_size);
    memory_region_init_io(&s->import_hole, OBJECT(s), &sharegpu_window_hole_ops, s,
                          "sharegpu-import-hole", s->vram_size);
    memory_region_add_subregion_overlap(&s->import_win, 0, &s->import_hole, 0);
}

void sharegpu_window_unmap(SharegpuState *s, SharegpuBo *bo)
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

/* One memory-map change for all of them (docs/hardware.md 4, "Memory map"). */
void sharegpu_window_unmap_all(SharegpuState *s)
{
    GHashTableIter it;
    gpointer value;

    memory_region_transaction_begin();
    g_hash_table_iter_init(&it, s->bos);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        sharegpu_window_unmap(s, value);
    }
    memory_region_transaction_commit();
}

/* MAP_IMPORT / UNMAP_IMPORT: BAD_HANDLE for unknown and local handles. */
static uint32_t sharegpu_window_get_import(SharegpuState *s, uint32_t handle, const char *op,
                                           sgb_bo_state *info)
{
    int ret = sgb_bo_state_get(s->dev, handle, info);

    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (!info->imported) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s of local handle %u\n",
                      s->name, op, handle);
        return SGHW_ST_BAD_HANDLE;
    }
    return SGHW_ST_OK;
}

uint32_t sharegpu_window_map_import(SharegpuState *s, struct sghw_cmd *c)
{
    SharegpuWindowMap *map;
    SharegpuBo *bo;
    sgb_bo_state info;
    uint64_t fd_off, size;
    void *ptr;
    int fd, ret;
    g_autofree char *name = NULL;
    Error *err = NULL;
    GHashTableIter it;
    gpointer value;
    uint32_t st;

    st = sharegpu_window_get_import(s, c->handle, "MAP_IMPORT", &info);
    if (st != SGHW_ST_OK) {
        return st;
    }
    size = ROUND_UP(info.size, qemu_real_host_page_size());
    if ((c->off0 & (qemu_real_host_page_size() - 1)) ||
        !sharegpu_range_ok(c->off0, size, s->vram_size)) {
        return SGHW_ST_OUT_OF_RANGE;
    }
    g_hash_table_iter_init(&it, s->bos);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SharegpuBo *o = value;

        if (o->map && o->handle != c->handle &&
            c->off0 < o->map_off + o->map_size && o->map_off < c->off0 + size) {
            return SGHW_ST_BUSY;
        }
    }
    ret = sgb_bo_storage(s->dev, c->handle, &fd, &fd_off, &ptr, &size);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    size = ROUND_UP(size, qemu_real_host_page_size());
    if (!sharegpu_range_ok(c->off0, size, s->vram_size)) {
        return SGHW_ST_OUT_OF_RANGE;
    }
    bo = sharegpu_bo_get(s, c->handle);
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
        return SGHW_ST_INTERNAL;
    }
    memory_region_add_subregion_overlap(&s->import_win, c->off0, &map->mr, 1);
    bo->map = map;
    bo->map_off = c->off0;
    bo->map_size = size;
    trace_sharegpu_import_map(s->name, c->handle, c->off0, size, fd_off);
    c->result = s->vram_size + c->off0;
    return SGHW_ST_OK;
}

uint32_t sharegpu_window_unmap_import(SharegpuState *s, struct sghw_cmd *c)
{
    SharegpuBo *bo;
    sgb_bo_state info;
    uint32_t st = sharegpu_window_get_import(s, c->handle, "UNMAP_IMPORT", &info);

    if (st != SGHW_ST_OK) {
        return st;
    }
    bo = sharegpu_bo_lookup(s, c->handle);
    c->result = bo && bo->map;
    if (bo) {
        sharegpu_window_unmap(s, bo);
    }
    return SGHW_ST_OK;
}

static const TypeInfo sharegpu_window_types[] = {
    {
        .name = TYPE_SHAREGPU_WINDOW_MAP,
        .parent = TYPE_OBJECT,
        .instance_size = sizeof(SharegpuWindowMap),
    },
};

DEFINE_TYPES(sharegpu_window_types)
