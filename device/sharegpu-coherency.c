/*
 * sharegpu: the coherency-violation detector (property check-coherency, coherent=off)
 *
 * The device only feeds the host backend's per-buffer model (sgb_coherency_note,
 * host-backend/src/core/coherency.h) with each command that touches a buffer and the pages
 * of the buffer the guest CPU wrote since the previous one, from QEMU's dirty logging
 * (DIRTY_MEMORY_VGA) on the VRAM region and on the RAM behind the import-window mappings
 * (one region per exporter memfd, shared by the imports in it: sharegpu-window.c); it turns the
 * violations the backend returns into counters, a trace event, a log line and a QMP event
 * (SHAREGPU_COHERENCY_VIOLATION). It never changes what a command does.
 *
 * Dirty bits are harvested for a whole RAM region at a time: QEMU's snapshot clears whole
 * bitmap words, so a snapshot of one buffer's range would also clear its neighbours' bits.
 * RAM blocks start on a bitmap word and nothing else lies between the end of one and the
 * next word, so a whole-region snapshot touches no other region. The harvest runs in its
 * own bottom half, which DOORBELL schedules before the command ring's: a snapshot ends with
 * TCG's run_on_cpu (every vCPU finishes the write it is in), which drops the BQL, and
 * neither the ring's bottom half (its reentrancy guard engaged: a guest MMIO write to the
 * device would be refused) nor a command half done may be exposed to that. So the pages a
 * command sees are those the CPU wrote before the doorbell that posted it; pages harvested
 * and not asked for yet wait in per-device (VRAM) and per-import (window) bitmaps.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "exec/memory.h"
#include "qapi/qapi-events-sharegpu.h"
#include "trace.h"
#include "sharegpu.h"

#define SHAREGPU_COH_PAGE       SGHW_VRAM_ALIGN
#define SHAREGPU_COH_WORD_BYTES (64 * SHAREGPU_COH_PAGE)

static inline void sharegpu_coh_set(uint64_t *bits, uint64_t page)
{
    bits[page / 64] |= 1ULL << (page % 64);
}

static inline bool sharegpu_coh_test_clear(uint64_t *bits, uint64_t page)
{
    bool set = bits[page / 64] & (1ULL << (page % 64));

    bits[page / 64] &= ~(1ULL << (page % 64));
    return set;
}

/*
 * The CPU-written pages of mr [0, size) since the previous harvest, ORed into bits. Drops
 * the BQL for a while (see the top of the file): never from the ring's bottom half.
 */
static void sharegpu_coh_harvest(MemoryRegion *mr, uint64_t size, uint64_t *bits)
{
    DirtyBitmapSnapshot *snap;
    uint64_t word, off, len;

    snap = memory_region_snapshot_and_clear_dirty(mr, 0, size, DIRTY_MEMORY_VGA);
    for (word = 0; word < size; word += SHAREGPU_COH_WORD_BYTES) {
        len = MIN(SHAREGPU_COH_WORD_BYTES, size - word);
        if (!memory_region_snapshot_get_dirty(mr, snap, word, len)) {
            continue;
        }
        for (off = word; off < word + len; off += SHAREGPU_COH_PAGE) {
            if (memory_region_snapshot_get_dirty(mr, snap, off, SHAREGPU_COH_PAGE)) {
                sharegpu_coh_set(bits, off / SHAREGPU_COH_PAGE);
            }
        }
    }
    g_free(snap);
}

typedef struct SharegpuCohRegion {
    SharegpuState *owner;   /* VRAM of this device */
    MemoryRegion *mr;       /* else the RAM behind window mappings (referenced) */
} SharegpuCohRegion;

/* Hands a harvested backing's bits to every mapped import of s that lives in it. */
static void sharegpu_coh_window_distribute(SharegpuState *s, MemoryRegion *mr,
                                           const uint64_t *bits)
{
    GHashTableIter it;
    gpointer value;
    uint64_t off, p, first;

    if (!s->bos) {
        return;
    }
    g_hash_table_iter_init(&it, s->bos);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SharegpuBo *bo = value;

        if (!bo->coh_win_dirty || sharegpu_window_backing(bo, &off) != mr) {
            continue;
        }
        first = off / SHAREGPU_COH_PAGE;
        for (p = 0; p < bo->coh_win_pages; p++) {
            if (bits[(first + p) / 64] & (1ULL << ((first + p) % 64))) {
                sharegpu_coh_set(bo->coh_win_dirty, p);
            }
        }
    }
}

/*
 * DOORBELL's bottom half when check-coherency is on (not guarded: see the top of the file):
 * harvests the VRAM of every device running the detector and this device's window
 * mappings, then runs the command ring. The BQL may drop inside each snapshot, so the
 * regions are listed (and referenced) first and looked up again afterwards.
 */
static void sharegpu_coh_harvest_bh(void *opaque)
{
    SharegpuState *s = opaque;
    g_autoptr(GArray) regions = g_array_new(false, true, sizeof(SharegpuCohRegion));
    SharegpuCohRegion r;
    SharegpuState *o;
    GHashTableIter it;
    gpointer value;
    guint i;

    QTAILQ_FOREACH(o, &sharegpu_devices, next) {
        if (o->check_coherency && o->coh_vram_dirty) {
            r = (SharegpuCohRegion) { .owner = o };
            object_ref(OBJECT(o));
            g_array_append_val(regions, r);
        }
    }
    if (s->bos) {
        g_hash_table_iter_init(&it, s->bos);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
            SharegpuBo *bo = value;
            uint64_t off;
            MemoryRegion *mr = sharegpu_window_backing(bo, &off);
            bool listed = false;

            for (i = 0; mr && i < regions->len; i++) {
                listed |= g_array_index(regions, SharegpuCohRegion, i).mr == mr;
            }
            if (mr && bo->coh_win_dirty && !listed) {
                r = (SharegpuCohRegion) { .mr = mr };
                memory_region_ref(mr);
                g_array_append_val(regions, r);
            }
        }
    }
    for (i = 0; i < regions->len; i++) {
        SharegpuCohRegion *reg = &g_array_index(regions, SharegpuCohRegion, i);

        if (reg->owner) {
            o = reg->owner;
            if (o->coh_vram_dirty) {   /* NULL once unrealized */
                g_autofree uint64_t *bits =
                    g_new0(uint64_t, o->vram_size / SHAREGPU_COH_PAGE / 64 + 1);
                uint64_t w;

                sharegpu_coh_harvest(&o->vram, o->vram_size, bits);
                for (w = 0; o->coh_vram_dirty && w <= o->vram_size / SHAREGPU_COH_PAGE / 64;
                     w++) {
                    o->coh_vram_dirty[w] |= bits[w];
                }
            }
            object_unref(OBJECT(o));
        } else {
            uint64_t size = memory_region_size(reg->mr);
            g_autofree uint64_t *bits =
                g_new0(uint64_t, size / SHAREGPU_COH_PAGE / 64 + 2);

            sharegpu_coh_harvest(reg->mr, size, bits);
            /* to the imports mapped in it now (looked up again: the BQL was dropped) */
            sharegpu_coh_window_distribute(s, reg->mr, bits);
            memory_region_unref(reg->mr);
        }
    }
    if (s->cmd_bh) {
        qemu_bh_schedule(s->cmd_bh);
    }
}

void sharegpu_coherency_doorbell(SharegpuState *s)
{
    qemu_bh_schedule(s->check_coherency ? s->coh_bh : s->cmd_bh);
}

/* The device whose VRAM holds an import's buffer, if it runs the detector. */
static SharegpuState *sharegpu_coh_exporter(SharegpuState *s, uint32_t handle)
{
    sgb_bo_debug_info info;
    SharegpuState *o;

    if (sgb_bo_debug_info_get(s->dev, handle, &info)) {
        return NULL;
    }
    QTAILQ_FOREACH(o, &sharegpu_devices, next) {
        if (o->check_coherency && o->coh_vram_dirty && !strcmp(o->name, info.exporter)) {
            return o;
        }
    }
    return NULL;
}

/*
 * The pages of handle's buffer the CPU wrote since they were last given out, through the
 * VRAM of the device that owns it (when that device runs the detector) and through this
 * device's import window, as harvested before the doorbell. NULL if the handle is unknown.
 */
static uint64_t *sharegpu_coh_dirty(SharegpuState *s, uint32_t handle, uint64_t *pages)
{
    SharegpuState *owner = s;
    SharegpuBo *bo;
    sgb_bo_state st;
    uint64_t *bits, p, first;

    if (sgb_bo_state_get(s->dev, handle, &st)) {
        return NULL;
    }
    *pages = st.size / SHAREGPU_COH_PAGE;
    bits = g_new0(uint64_t, DIV_ROUND_UP(*pages, 64) + 1);
    if (st.imported) {
        owner = sharegpu_coh_exporter(s, handle);
    }
    if (owner && st.placement == SGB_PLACEMENT_DEVICE &&
        sharegpu_range_ok(st.vram_offset, st.size, owner->vram_size)) {
        first = st.vram_offset / SHAREGPU_COH_PAGE;
        for (p = 0; p < *pages; p++) {
            if (sharegpu_coh_test_clear(owner->coh_vram_dirty, first + p)) {
                sharegpu_coh_set(bits, p);
            }
        }
    }
    bo = sharegpu_bo_lookup(s, handle);
    if (bo && bo->coh_win_dirty) {
        for (p = 0; p < *pages && p < bo->coh_win_pages; p++) {
            if (sharegpu_coh_test_clear(bo->coh_win_dirty, p)) {
                sharegpu_coh_set(bits, p);
            }
        }
    }
    return bits;
}

static void sharegpu_coh_report(SharegpuState *s, uint32_t handle,
                                const sgb_coherency_report *r)
{
    SharegpuCoherencyCommandList *history = NULL;
    g_autoptr(GString) hist = g_string_new("");
    uint64_t off = r->first_page * SHAREGPU_COH_PAGE;
    uint64_t len = (r->last_page - r->first_page + 1) * SHAREGPU_COH_PAGE;
    const char *exporter = r->imported ? r->exporter : NULL;
    uint64_t suppressed;
    int i;

    if (r->kind >= SGB_COH_KINDS) {
        return;
    }
    s->coh_counters.violations[r->kind]++;
    trace_sharegpu_coherency_violation(s->name, handle, r->kind, off, len, r->pages);
    /* the QMP events' limit per device and kind: a guest loop could flood the monitor */
    if (!sharegpu_qev_admit(s, SHAREGPU_QEV_COHERENCY, &suppressed)) {
        s->coh_counters.reports_suppressed++;
        return;
    }
    for (i = MIN(r->history_len, SGB_COH_HISTORY) - 1; i >= 0; i--) {
        SharegpuCoherencyCommand *cmd = g_new0(SharegpuCoherencyCommand, 1);

        cmd->opcode = r->history[i].opcode;
        cmd->seqno = r->history[i].seqno;
        QAPI_LIST_PREPEND(history, cmd);
    }
    for (i = 0; i < MIN(r->history_len, SGB_COH_HISTORY); i++) {
        g_string_append_printf(hist, "%s0x%02x@%" PRIu64, i ? " " : "",
                               r->history[i].opcode, r->history[i].seqno);
    }
    qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: coherency violation %s: handle %u%s%s, "
                  "bytes [0x%" PRIx64 ", 0x%" PRIx64 ") (%" PRIu64 " pages), "
                  "last commands (opcode@seqno): %s\n",
                  s->name, SharegpuCoherencyKind_str(r->kind), handle,
                  exporter ? " imported from " : "", exporter ? exporter : "",
                  off, off + len, r->pages, hist->str);
    qapi_event_send_sharegpu_coherency_violation(s->name, handle, exporter, r->kind, off, len,
                                                 r->pages, history, suppressed);
    qapi_free_SharegpuCoherencyCommandList(history);
}

static void sharegpu_coh_note(SharegpuState *s, const struct sghw_cmd *c, uint32_t op,
                              uint32_t handle, uint64_t off, uint64_t len)
{
    sgb_coherency_report rep[SGB_COH_KINDS];
    g_autofree uint64_t *dirty = NULL;
    sgb_coherency_input in = {
        .op = op,
        .handle = handle,
        .dir = op == SGB_COH_CPU_BEGIN || op == SGB_COH_CPU_END ? c->arg : 0,
        .opcode = c->opcode,
        .seqno = c->seqno,
        .off = off,
        .len = len,
    };
    size_t n = 0, i;
    uint64_t pages = 0;

    dirty = sharegpu_coh_dirty(s, handle, &pages);
    if (!dirty) {
        return;
    }
    in.dirty = dirty;
    in.dirty_pages = pages;
    if (sgb_coherency_note(s->dev, &in, rep, ARRAY_SIZE(rep), &n)) {
        return;
    }
    for (i = 0; i < MIN(n, ARRAY_SIZE(rep)); i++) {
        sharegpu_coh_report(s, handle, &rep[i]);
    }
}

void sharegpu_coherency_cmd(SharegpuState *s, const struct sghw_cmd *c)
{
    MemoryRegion *win;
    uint64_t win_off;
    SharegpuBo *bo;

    if (!s->check_coherency) {
        return;
    }
    switch (c->opcode) {
    case SGHW_OP_BO_CREATE:
        sharegpu_coh_note(s, c, SGB_COH_TRACK, c->out_handle, 0, 0);
        break;
    case SGHW_OP_CPU_ACCESS_BEGIN:
        sharegpu_coh_note(s, c, SGB_COH_CPU_BEGIN, c->handle, 0, 0);
        break;
    case SGHW_OP_CPU_ACCESS_END:
        sharegpu_coh_note(s, c, SGB_COH_CPU_END, c->handle, 0, 0);
        break;
    case SGHW_OP_CACHE_FLUSH:
        sharegpu_coh_note(s, c, SGB_COH_CACHE_FLUSH, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_CACHE_INVALIDATE:
        sharegpu_coh_note(s, c, SGB_COH_CACHE_INVALIDATE, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_TRANSFER_TO_DEVICE:
        sharegpu_coh_note(s, c, SGB_COH_TRANSFER_TO_DEVICE, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_TRANSFER_FROM_DEVICE:
        sharegpu_coh_note(s, c, SGB_COH_TRANSFER_FROM_DEVICE, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_BO_MOVE:
    case SGHW_OP_BO_EVICT:
        sharegpu_coh_note(s, c, SGB_COH_CHECK, c->handle, 0, 0);
        break;
    case SGHW_OP_IMPORT:
        /* the buffer's state is its exporter's: start it if no detector has seen it yet */
        sharegpu_coh_note(s, c, SGB_COH_CHECK, c->out_handle, 0, 0);
        break;
    case SGHW_OP_MAP_IMPORT:
        /* a new mapping's RAM block starts all dirty: track writes from here on */
        bo = sharegpu_bo_lookup(s, c->handle);
        win = sharegpu_window_backing(bo, &win_off);
        if (win) {
            /*
             * Logging counts its users, one per mapping; the backing goes with its last
             * mapping. The reset is word-granular: writes of neighbours in the same backing
             * since the last doorbell may be dropped (a missed report, never a false one).
             */
            memory_region_set_log(win, true, DIRTY_MEMORY_VGA);
            memory_region_reset_dirty(win, win_off, bo->map_size, DIRTY_MEMORY_VGA);
            g_free(bo->coh_win_dirty);
            bo->coh_win_pages = bo->map_size / SHAREGPU_COH_PAGE;
            bo->coh_win_dirty = g_new0(uint64_t, bo->coh_win_pages / 64 + 1);
        }
        sharegpu_coh_note(s, c, SGB_COH_CHECK, c->handle, 0, 0);
        break;
    default:
        break;
    }
}

void sharegpu_coherency_job(SharegpuState *s, const struct sghw_cmd *c)
{
    if (!s->check_coherency) {
        return;
    }
    switch (c->opcode) {
    case SGHW_OP_COPY:
        sharegpu_coh_note(s, c, SGB_COH_JOB_READ, c->handle2, c->off1, c->len);
        sharegpu_coh_note(s, c, SGB_COH_JOB_WRITE, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_FILL:
        sharegpu_coh_note(s, c, SGB_COH_JOB_WRITE, c->handle, c->off0, c->len);
        break;
    case SGHW_OP_CHECKSUM:
        sharegpu_coh_note(s, c, SGB_COH_JOB_READ, c->handle, c->off0, c->len);
        break;
    default:
        break;
    }
}

/* After the VRAM region exists (realize; the property was validated first). */
void sharegpu_coherency_init(SharegpuState *s)
{
    if (!s->check_coherency) {
        return;
    }
    s->coh_vram_dirty = g_new0(uint64_t, s->vram_size / SHAREGPU_COH_PAGE / 64 + 1);
    s->coh_bh = qemu_bh_new(sharegpu_coh_harvest_bh, s);
    memory_region_set_log(&s->vram, true, DIRTY_MEMORY_VGA);
    /* a new RAM block starts all dirty */
    memory_region_reset_dirty(&s->vram, 0, s->vram_size, DIRTY_MEMORY_VGA);
}

void sharegpu_coherency_fini(SharegpuState *s)
{
    if (s->coh_bh) {
        qemu_bh_delete(s->coh_bh);
        s->coh_bh = NULL;
    }
    g_free(s->coh_vram_dirty);
    s->coh_vram_dirty = NULL;
}
