/*
 * sharegpu: QMP commands (device/qapi/sharegpu.json)
 *
 * query-sharegpu shows every device's state; x-sharegpu-move-bo is fault injection for
 * tests (a move as memory pressure would do it), hence unstable.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sharegpu.h"
#include "qemu/uuid.h"
#include "trace.h"
#include "sharegpu.h"

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

static SharegpuInfo *sharegpu_info(SharegpuState *s)
{
    SharegpuInfo *info = g_new0(SharegpuInfo, 1);
    SharegpuBoInfoList **tail = &info->bos;
    sgb_device_stats st = { 0 };
    g_autofree sgb_bo_debug_info *bos = NULL;
    size_t count = 0, i;
    uint32_t inflight;

    sgb_device_stats_get(s->dev, &st);
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
    info->halted = !!(s->status & SGHW_STATUS_HALTED);
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

    if (sgb_device_list_bos(s->dev, NULL, 0, &count) == 0 && count) {
        size_t cap = count;

        bos = g_new0(sgb_bo_debug_info, cap);
        if (sgb_device_list_bos(s->dev, bos, cap, &count)) {
            count = 0;
        }
        count = MIN(count, cap);
    } else {
        count = 0;
    }
    for (i = 0; i < count; i++) {
        sgb_bo_debug_info *d = &bos[i];
        const sgb_bo_state *b = &d->state;
        SharegpuBo *dbo = sharegpu_bo_lookup(s, b->handle);
        SharegpuBoInfo *bi = g_new0(SharegpuBoInfo, 1);

        bi->handle = b->handle;
        bi->size = b->size;
        bi->placement = b->placement == SGB_PLACEMENT_DEVICE ? SHAREGPU_PLACEMENT_DEVICE
                                                              : SHAREGPU_PLACEMENT_SYSTEM;
        if (b->placement == SGB_PLACEMENT_DEVICE) {
            bi->has_vram_offset = true;
            bi->vram_offset = b->vram_offset;
        }
        bi->imported = b->imported;
        bi->exported = b->exported;
        if (b->exported || b->imported) {
            bi->uuid = qemu_uuid_unparse_strdup((QemuUUID *)b->uuid.bytes);
        }
        bi->exporter = g_strndup(d->exporter, sizeof(d->exporter));
        bi->pin_count = b->pin_count;
        bi->vmap_count = b->vmap_count;
        bi->attachments = b->attachments;
        bi->live_mappings = b->live_mappings;
        bi->fences_pending = d->fences_pending;
        bi->generation = b->generation;
        bi->moves = d->moves;
        bi->invalidations = d->invalidations;
        bi->cache_dirty_lines = d->cache_dirty_lines;
        bi->cache_valid_lines = d->cache_valid_lines;
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

void qmp_x_sharegpu_move_bo(const char *id, uint32_t handle, SharegpuPlacement placement,
                            Error **errp)
{
    SharegpuState *s = sharegpu_find(id);
    uint32_t p = placement == SHAREGPU_PLACEMENT_DEVICE ? SGB_PLACEMENT_DEVICE
                                                        : SGB_PLACEMENT_SYSTEM;
    sgb_bo_debug_info info;
    int ret;

    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return;
    }
    ret = sgb_bo_debug_info_get(s->dev, handle, &info);
    if (ret) {
        error_setg(errp, "sharegpu %s: handle %u: %s", id, handle, sgb_strerror(ret));
        return;
    }
    if (info.state.imported) {
        error_setg(errp, "sharegpu %s: handle %u is an import; move it on its exporter '%s'",
                   id, handle, info.exporter);
        return;
    }
    ret = p == SGB_PLACEMENT_SYSTEM ? sgb_bo_evict(s->dev, handle)
                                     : sgb_bo_move(s->dev, handle, p, 0);
    trace_sharegpu_monitor_move(s->name, handle, p, ret);
    sharegpu_evt_drain_all();
    if (ret) {
        error_setg(errp, "sharegpu %s: moving handle %u failed: %s", id, handle,
                   sgb_strerror(ret));
    }
}
