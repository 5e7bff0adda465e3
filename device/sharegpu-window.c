/*
 * sharegpu: the import window, the upper half of BAR2 (docs/hardware.md 4)
 *
 * MAP_IMPORT maps an imported buffer's storage (the exporter's memfd, zero copy) into the
 * window; the mapping goes with UNMAP_IMPORT, the destruction of the import and reset. A move
 * of the buffer removes the mapping from the moving thread before the storage is copied
 * (the backend's invalidate hook; sharegpu-ring.c's event delivery when the mover did not
 * hold the BQL), but the range stays the import's: an access there is a fault that re-maps
 * the import to its new storage and is then carried out, so a guest that has not handled
 * BO_INVALIDATED yet loses no write (issue 9, defect 3). Parts of the window that belong to
 * no import read all-ones and ignore writes, counted and logged as guest errors.
 *
 * Many buffers share one memfd (the exporter's VRAM arena, the backend's system slabs), so a
 * mapping is an alias into one RAM region per memfd: QEMU holds a descriptor and an mmap per
 * memfd in use, not per mapped import, and a map costs O(log N) in the mapped imports.
 *
 * Remote imports (another VM's buffer, sharegpu-remote.c) are mapped the same way from the
 * memfd the broker gave; a read-only one (READ grant: the descriptor is O_RDONLY) is an I/O
 * region over a PROT_READ mapping of the same pages: reads see the exporter's bytes, zero
 * copy, and a write changes nothing and is logged as a guest error.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/stat.h>
#include "qemu/log.h"
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "exec/memory.h"
#include "trace.h"
#include "sharegpu.h"

/*
 * The RAM of one backing memfd, mapped whole: its own QOM object so that the RAMBlock (and
 * its dup of the memfd) lives until the last mapping and the last flatview reference drop.
 * Owned by those references; the device's table only points at it.
 */
struct SharegpuWindowBacking {
    Object parent_obj;
    MemoryRegion mr;
    GHashTable *table; /* the device's window_backings (a reference of its own) */
    char *key;
    SharegpuState *s;  /* read-only: for the guest-error log (outlived by the device) */
    uint8_t *ro_ptr;   /* read-only: the PROT_READ mapping of the whole file */
    uint64_t ro_size;
};

/* A window mapping of an import: an alias into its backing, which it holds a reference on. */
struct SharegpuWindowMap {
    Object parent_obj;
    MemoryRegion mr;
    SharegpuWindowBacking *backing;
    uint64_t backing_off;  /* where the import's bytes start in the backing */
};

MemoryRegion *sharegpu_window_backing(SharegpuBo *bo, uint64_t *offset)
{
    /* remote imports (another VM's pages) are no buffer of the coherency model */
    if (!bo || !bo->map || bo->remote) {
        return NULL;
    }
    *offset = bo->map->backing_off;
    return &bo->map->backing->mr;
}

static void sharegpu_window_backing_finalize(Object *obj)
{
    SharegpuWindowBacking *b = SHAREGPU_WINDOW_BACKING(obj);

    if (b->table) {
        /* a bigger backing of the same memfd may have replaced this one in the table */
        if (g_hash_table_lookup(b->table, b->key) == b) {
            g_hash_table_remove(b->table, b->key);
        }
        g_hash_table_unref(b->table);
    }
    g_free(b->key);
    if (b->ro_ptr) {
        munmap(b->ro_ptr, b->ro_size);
    }
}

static void sharegpu_window_map_finalize(Object *obj)
{
    SharegpuWindowMap *map = SHAREGPU_WINDOW_MAP(obj);

    if (map->backing) {
        object_unref(OBJECT(map->backing));
    }
}

static uint64_t sharegpu_window_ro_read(void *opaque, hwaddr addr, unsigned size)
{
    SharegpuWindowBacking *b = opaque;

    return ldn_le_p(b->ro_ptr + addr, size);
}

static void sharegpu_window_ro_write(void *opaque, hwaddr addr, uint64_t val, unsigned size)
{
    SharegpuWindowBacking *b = opaque;

    qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: write of %u bytes to a read-only import "
                  "(granted READ) at backing offset 0x%" HWADDR_PRIx ": ignored\n",
                  b->s ? b->s->name : "?", size, addr);
}

static const MemoryRegionOps sharegpu_window_ro_ops = {
    .read = sharegpu_window_ro_read,
    .write = sharegpu_window_ro_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
        .unaligned = true,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 8,
        .unaligned = true,
    },
};

/* A read-only backing of the whole of `fd` (size st_size): never shared through the table. */
static SharegpuWindowBacking *sharegpu_window_backing_ro(SharegpuState *s, int fd,
                                                         uint64_t size, Error **errp)
{
    SharegpuWindowBacking *b;
    void *ptr = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);

    if (ptr == MAP_FAILED) {
        error_setg_errno(errp, errno, "sharegpu: read-only mmap of the import's memfd");
        return NULL;
    }
    b = SHAREGPU_WINDOW_BACKING(object_new(TYPE_SHAREGPU_WINDOW_BACKING));
    b->s = s;
    b->ro_ptr = ptr;
    b->ro_size = size;
    memory_region_init_io(&b->mr, OBJECT(b), &sharegpu_window_ro_ops, b,
                          "sharegpu.import-backing-ro", size);
    return b;
}

/*
 * The backing of `fd` covering [0, end), with a reference for the caller: the one in use,
 * or a new RAM region over a dup of the fd (sized to the memfd now, which covers `end`).
 * Read-only (!writable): a new I/O region over a read-only mapping, never shared.
 */
static SharegpuWindowBacking *sharegpu_window_backing_get(SharegpuState *s, int fd,
                                                          uint64_t end, bool writable,
                                                          Error **errp)
{
    SharegpuWindowBacking *b;
    g_autofree char *key = NULL;
    g_autofree char *name = NULL;
    struct stat st;
    int dup_fd;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "sharegpu: fstat of the import's memfd");
        return NULL;
    }
    if ((uint64_t)st.st_size < end) {
        error_setg(errp, "sharegpu: the import's memfd (%jd bytes) ends before 0x%" PRIx64,
                   (intmax_t)st.st_size, end);
        return NULL;
    }
    if (!writable) {
        return sharegpu_window_backing_ro(s, fd, st.st_size, errp);
    }
    key = g_strdup_printf("%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
    b = g_hash_table_lookup(s->window_backings, key);
    if (b && memory_region_size(&b->mr) >= end) {
        object_ref(OBJECT(b));
        return b;
    }
    /* The RAMBlock owns (and closes) its fd: give it a dup, the backend keeps its own. */
    dup_fd = qemu_dup(fd);
    if (dup_fd < 0) {
        error_setg_errno(errp, errno, "sharegpu: dup of the import's memfd");
        return NULL;
    }
    b = SHAREGPU_WINDOW_BACKING(object_new(TYPE_SHAREGPU_WINDOW_BACKING));
    name = g_strdup_printf("sharegpu.import-backing[%s]", key);
    if (!memory_region_init_ram_from_fd(&b->mr, OBJECT(b), name, st.st_size, RAM_SHARED,
                                        dup_fd, 0, errp)) {
        close(dup_fd);
        object_unref(OBJECT(b));
        return NULL;
    }
    b->table = g_hash_table_ref(s->window_backings);
    b->key = g_strdup(key);
    g_hash_table_replace(s->window_backings, g_steal_pointer(&key), b);
    trace_sharegpu_import_backing(s->name, b->key, st.st_size);
    return b;
}

static gint sharegpu_window_map_cmp(gconstpointer a, gconstpointer b, gpointer opaque)
{
    const SharegpuBo *x = a, *y = b;

    return x->map_off < y->map_off ? -1 : x->map_off > y->map_off;
}

typedef struct SharegpuWindowRange {
    uint64_t off;
    uint64_t size;
} SharegpuWindowRange;

/* g_tree_search: 0 for a mapping that overlaps the range (mappings never overlap). */
static gint sharegpu_window_overlap_search(gconstpointer key, gconstpointer data)
{
    const SharegpuBo *o = key;
    const SharegpuWindowRange *r = data;

    if (r->off + r->size <= o->map_off) {
        return -1;
    }
    return r->off >= o->map_off + o->map_size;
}

/* A mapping other than `self`'s that overlaps [off, off + size), or NULL. */
static SharegpuBo *sharegpu_window_overlap(SharegpuState *s, SharegpuBo *self, uint64_t off,
                                           uint64_t size)
{
    SharegpuWindowRange r = { .off = off, .size = size };
    SharegpuBo *o = g_tree_search(s->window_maps, sharegpu_window_overlap_search, &r);

    if (o && o == self) {
        /* the buffer's own mapping is replaced: look past it */
        g_tree_remove(s->window_maps, self);
        o = g_tree_search(s->window_maps, sharegpu_window_overlap_search, &r);
        g_tree_insert(s->window_maps, self, self);
    }
    return o;
}

static bool sharegpu_window_map_at(SharegpuState *s, SharegpuBo *bo, uint64_t off,
                                   uint32_t *status);

/*
 * Where an access of the window's background at addr goes: into the import whose range it
 * is, re-mapped first when a move removed its mapping (a fault). NULL: the access belongs
 * to no import (logged and counted; reads all-ones, writes are ignored).
 */
static uint8_t *sharegpu_window_fault(SharegpuState *s, hwaddr addr, unsigned size,
                                      bool write, MemoryRegion **mr, uint64_t *mr_off)
{
    SharegpuBo *bo = s->window_maps ? sharegpu_window_overlap(s, NULL, addr, size) : NULL;
    uint32_t st = SGHW_ST_OK;

    if (bo && bo->map_faultable && addr + size <= bo->map_off + bo->map_size &&
        sharegpu_window_map_at(s, bo, bo->map_off, &st)) {
        s->counters.window_faults++;
        trace_sharegpu_import_fault(s->name, bo->handle, addr, write);
        *mr = &bo->map->backing->mr;
        *mr_off = bo->map->backing_off + (addr - bo->map_off);
        return (uint8_t *)memory_region_get_ram_ptr(*mr) + *mr_off;
    }
    s->counters.window_stray++;
    qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: import window %s of %u bytes at 0x%"
                  HWADDR_PRIx " %s (%s)\n", s->name, write ? "write" : "read", size, addr,
                  write ? "ignored" : "reads all-ones",
                  !bo ? "no import mapped there" : st != SGHW_ST_OK ?
                  "re-mapping the moved import failed" : "straddles the import's end");
    return NULL;
}

static uint64_t sharegpu_window_hole_read(void *opaque, hwaddr addr, unsigned size)
{
    MemoryRegion *mr;
    uint64_t mr_off;
    uint8_t *p = sharegpu_window_fault(opaque, addr, size, false, &mr, &mr_off);

    return p ? ldn_le_p(p, size) : ~0ULL;
}

static void sharegpu_window_hole_write(void *opaque, hwaddr addr, uint64_t val,
                                       unsigned size)
{
    MemoryRegion *mr;
    uint64_t mr_off;
    uint8_t *p = sharegpu_window_fault(opaque, addr, size, true, &mr, &mr_off);

    if (p) {
        stn_le_p(p, size, val);
        /* as if it had gone through the mapping: dirty logging (the detector) sees it */
        memory_region_set_dirty(mr, mr_off, size);
    }
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
    s->window_backings = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    s->window_maps = g_tree_new_full(sharegpu_window_map_cmp, NULL, NULL, NULL);
}

/* After every mapping is gone; backings still referenced by flatviews outlive this. */
void sharegpu_window_fini(SharegpuState *s)
{
    if (s->window_maps) {
        g_tree_destroy(s->window_maps);
        s->window_maps = NULL;
    }
    if (s->window_backings) {
        g_hash_table_unref(s->window_backings);
        s->window_backings = NULL;
    }
}

/* Removes the mapping from the memory map; the range stays the import's (faultable). */
static void sharegpu_window_drop_map(SharegpuState *s, SharegpuBo *bo)
{
    if (!bo->map) {
        return;
    }
    trace_sharegpu_import_unmap(s->name, bo->handle, bo->map_off);
    memory_region_del_subregion(&s->import_win, &bo->map->mr);
    /* the MR (a child of the map object) goes when the last flatview reference drops */
    object_unref(OBJECT(bo->map));
    bo->map = NULL;
}

/* UNMAP_IMPORT, the import's destruction, reset: the mapping and the range go. */
void sharegpu_window_unmap(SharegpuState *s, SharegpuBo *bo)
{
    if (!bo->map && !bo->map_faultable) {
        return;
    }
    g_tree_remove(s->window_maps, bo);
    sharegpu_window_drop_map(s, bo);
    bo->map_faultable = false;
    bo->map_off = 0;
    bo->map_size = 0;
}

/* The import's storage moves: its mapping goes, its range stays for the next access. */
void sharegpu_window_invalidate(SharegpuState *s, SharegpuBo *bo)
{
    if (bo->map) {
        sharegpu_window_drop_map(s, bo);
        bo->map_faultable = true;
    }
}

/*
 * The backend's invalidate hook (sgb_device_set_invalidate_hook): in the thread that moves
 * the buffer, before the copy. Only a thread holding the BQL may change the memory map;
 * otherwise the BO_INVALIDATED event's delivery removes the mapping later. Calls nothing in
 * the backend (the exporter's reservation is held).
 */
void sharegpu_window_invalidate_hook(void *opaque, uint32_t handle)
{
    SharegpuState *s = opaque;
    SharegpuBo *bo;

    if (!bql_locked() || !s->bos) {
        return;
    }
    bo = sharegpu_bo_lookup(s, handle);
    if (bo) {
        sharegpu_window_invalidate(s, bo);
    }
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

/*
 * Maps [fd_off, fd_off + size) of `fd` at `off` in the window for `bo` (replacing its
 * mapping or faultable range). The caller checked the range against the window and overlaps;
 * size is a page multiple.
 */
uint32_t sharegpu_window_map_fd(SharegpuState *s, SharegpuBo *bo, uint64_t off, int fd,
                                uint64_t fd_off, uint64_t size, bool writable)
{
    SharegpuWindowBacking *backing;
    SharegpuWindowMap *map;
    g_autofree char *name = NULL;
    Error *err = NULL;

    backing = sharegpu_window_backing_get(s, fd, fd_off + size, writable, &err);
    if (!backing) {
        error_report_err(err);
        return SGHW_ST_INTERNAL;
    }
    sharegpu_window_unmap(s, bo);

    map = SHAREGPU_WINDOW_MAP(object_new(TYPE_SHAREGPU_WINDOW_MAP));
    map->backing = backing;
    map->backing_off = fd_off;
    name = g_strdup_printf("sharegpu.import[%u]", bo->handle);
    memory_region_init_alias(&map->mr, OBJECT(map), name, &backing->mr, fd_off, size);
    memory_region_add_subregion_overlap(&s->import_win, off, &map->mr, 1);
    bo->map = map;
    bo->map_off = off;
    bo->map_size = size;
    g_tree_insert(s->window_maps, bo, bo);
    trace_sharegpu_import_map(s->name, bo->handle, off, size, fd_off);
    return SGHW_ST_OK;
}

/*
 * Maps local import `bo` (its current storage) at window offset `off`, checked by the caller.
 * False with *status set when the backend or the memfd refuse.
 */
static bool sharegpu_window_map_at(SharegpuState *s, SharegpuBo *bo, uint64_t off,
                                   uint32_t *status)
{
    uint64_t fd_off, size;
    void *ptr;
    int fd, ret;

    ret = sgb_bo_storage(s->dev, bo->handle, &fd, &fd_off, &ptr, &size);
    if (ret) {
        *status = sharegpu_status_from_errno(ret);
        return false;
    }
    size = ROUND_UP(size, qemu_real_host_page_size());
    if (!sharegpu_range_ok(off, size, s->vram_size)) {
        *status = SGHW_ST_OUT_OF_RANGE;
        return false;
    }
    *status = sharegpu_window_map_fd(s, bo, off, fd, fd_off, size, true);
    return *status == SGHW_ST_OK;
}

/* Whether [off, off + size) is page-aligned, inside the window and free (but for `bo`). */
uint32_t sharegpu_window_check(SharegpuState *s, SharegpuBo *bo, uint64_t off, uint64_t size)
{
    if ((off & (qemu_real_host_page_size() - 1)) ||
        !sharegpu_range_ok(off, size, s->vram_size)) {
        return SGHW_ST_OUT_OF_RANGE;
    }
    if (sharegpu_window_overlap(s, bo, off, size)) {
        return SGHW_ST_BUSY;
    }
    return SGHW_ST_OK;
}

uint32_t sharegpu_window_map_import(SharegpuState *s, struct sghw_cmd *c)
{
    sgb_bo_state info;
    uint64_t size;
    uint32_t st;

    st = sharegpu_window_get_import(s, c->handle, "MAP_IMPORT", &info);
    if (st != SGHW_ST_OK) {
        return st;
    }
    size = ROUND_UP(info.size, qemu_real_host_page_size());
    st = sharegpu_window_check(s, sharegpu_bo_lookup(s, c->handle), c->off0, size);
    if (st != SGHW_ST_OK) {
        return st;
    }
    if (!sharegpu_window_map_at(s, sharegpu_bo_get(s, c->handle), c->off0, &st)) {
        return st;
    }
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
        .instance_finalize = sharegpu_window_map_finalize,
    },
    {
        .name = TYPE_SHAREGPU_WINDOW_BACKING,
        .parent = TYPE_OBJECT,
        .instance_size = sizeof(SharegpuWindowBacking),
        .instance_finalize = sharegpu_window_backing_finalize,
    },
};

DEFINE_TYPES(sharegpu_window_types)
