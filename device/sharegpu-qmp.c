/*
 * sharegpu: QMP commands (device/qapi/sharegpu.json)
 *
 * query-sharegpu shows every device's state, its jobs in flight included; x-sharegpu-move-bo
 * (a move as memory pressure would do it) and the engine's hold / stall / release and
 * drop-irq are fault injection for tests and debugging, hence unstable.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sharegpu.h"
#include "qemu/uuid.h"
#include "system/cpus.h"
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

/* Every handle of the device with the monitor's view of it; *count entries (may be NULL). */
static sgb_bo_debug_info *sharegpu_list_bos(SharegpuState *s, size_t *count)
{
    sgb_bo_debug_info *bos;
    size_t cap = 0;

    *count = 0;
    if (sgb_device_list_bos(s->dev, NULL, 0, &cap) || !cap) {
        return NULL;
    }
    bos = g_new0(sgb_bo_debug_info, cap);
    if (sgb_device_list_bos(s->dev, bos, cap, count)) {
        *count = 0;
    }
    *count = MIN(*count, cap);
    return bos;
}

static SharegpuJobInfoList *sharegpu_jobs_info(SharegpuState *s)
{
    static const char *const ops[] = { "COPY", "FILL", "CHECKSUM" };
    SharegpuJobInfoList *head = NULL, **tail = &head;
    g_autofree sgb_job_info *jobs = NULL;
    size_t count = 0, i;

    if (sgb_engine_list_jobs(s->dev, NULL, 0, &count) || !count) {
        return NULL;
    }
    jobs = g_new0(sgb_job_info, count);
    if (sgb_engine_list_jobs(s->dev, jobs, count, &count)) {
        return NULL;
    }
    for (i = 0; i < count; i++) {
        SharegpuJobInfo *j = g_new0(SharegpuJobInfo, 1);
        int state;

        j->fence = jobs[i].fence;
        j->opcode = g_strdup(jobs[i].op < ARRAY_SIZE(ops) ? ops[jobs[i].op] : "?");
        j->handle = jobs[i].handle;
        if (jobs[i].op == SGB_JOB_COPY) {
            j->has_handle2 = true;
            j->handle2 = jobs[i].handle2;
        }
        state = qapi_enum_parse(&SharegpuJobState_lookup, jobs[i].state, -1, NULL);
        j->state = state < 0 ? SHAREGPU_JOB_STATE_QUEUED : state;
        j->waits_for = jobs[i].deps_pending;
        QAPI_LIST_APPEND(tail, j);
    }
    return head;
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
        info->job_in_progress = g_new0(SharegpuTransferProgressInfo, 1);
        *info->job_in_progress = (SharegpuTransferProgressInfo) {
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
        .jobs_submitted = s->counters.jobs_submitted,
        .jobs_held = st.jobs_held,
        .jobs_waited = st.jobs_waited,
        .engine_loop_polls = st.engine_loop_polls,
        .engine_fallback_polls = st.engine_fallback_polls,
        .buffer_waits = s->counters.buffer_waits,
        .irqs_dropped = s->counters.irqs_dropped,
        .job_aborts = s->counters.job_aborts,
        .jobs_cancelled = s->counters.jobs_cancelled,
        .qmp_events_suppressed = s->counters.qmp_events_suppressed,
        .window_faults = s->counters.window_faults,
        .window_stray_accesses = s->counters.window_stray,
    };
    if (s->check_coherency) {
        info->coherency = g_new0(SharegpuCoherencyCounters, 1);
        *info->coherency = (SharegpuCoherencyCounters) {
            .cpu_write_outside_access =
                s->coh_counters.violations[SGB_COH_CPU_WRITE_OUTSIDE_ACCESS],
            .job_read_unflushed_cpu_write =
                s->coh_counters.violations[SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE],
            .cpu_access_unflushed_job_write =
                s->coh_counters.violations[SGB_COH_CPU_ACCESS_UNFLUSHED_JOB_WRITE],
            .reports_suppressed = s->coh_counters.reports_suppressed,
        };
    }
    info->engine = g_strdup(sgb_engine_kind(s->dev));
    info->queue_depth = s->queue_depth;
    info->ring_in_flight = s->inflight_count;
    info->waiting_for_buffer = s->idle_wait;
    info->jobs = sharegpu_jobs_info(s);

    bos = sharegpu_list_bos(s, &count);
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

/*
 * The vCPUs stand still for a host-forced move (docs/hardware.md 4, "Faults"): importers'
 * window mappings go before the copy, and a vCPU whose TLB still holds one must not write
 * through it into the old storage after the copy read it; paused vCPUs flush their TLBs
 * before they run again. The guest cannot prepare for a move it does not know of, as its
 * driver does for its own moves. Paused before any backend lock is taken (the pause drops
 * the BQL while it waits).
 */
void qmp_x_sharegpu_move_bo(const char *id, uint32_t handle, SharegpuPlacement placement,
                            Error **errp)
{
    SharegpuState *s = sharegpu_find(id);
    bool handled;
    uint32_t p = placement == SHAREGPU_PLACEMENT_DEVICE ? SGB_PLACEMENT_DEVICE
                                                        : SGB_PLACEMENT_SYSTEM;
    sgb_bo_debug_info info;
    int ret;

    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return;
    }
    pause_all_vcpus();
    s = sharegpu_find(id);   /* the BQL was dropped while the vCPUs stopped */
    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        goto out;
    }
    ret = sgb_bo_debug_info_get(s->dev, handle, &info);
    if (ret) {
        error_setg(errp, "sharegpu %s: handle %u: %s", id, handle, sgb_strerror(ret));
        goto out;
    }
    if (info.state.imported) {
        error_setg(errp, "sharegpu %s: handle %u is an import; move it on its exporter '%s'",
                   id, handle, info.exporter);
        goto out;
    }
    if (info.fences_pending) {
        /* the backend would block the main loop waiting for them (and a held job never ends) */
        error_setg(errp, "sharegpu %s: handle %u is in use by %u job(s) not yet complete; "
                   "release held jobs (x-sharegpu-release) and retry", id, handle,
                   info.fences_pending);
        goto out;
    }
    /* a broker-exported buffer relocates (system) or refuses (device) */
    ret = sharegpu_remote_move(s, handle, p, &handled);
    if (!handled) {
        ret = p == SGB_PLACEMENT_SYSTEM ? sgb_bo_evict(s->dev, handle)
                                         : sgb_bo_move(s->dev, handle, p, 0);
    }
    trace_sharegpu_monitor_move(s->name, handle, p, ret);
    sharegpu_evt_drain_all();
    if (ret) {
        error_setg(errp, "sharegpu %s: moving handle %u failed: %s", id, handle,
                   sgb_strerror(ret));
    }
out:
    resume_all_vcpus();
}

/* ------------------------------------------------------------------ engine fault injection */

void qmp_x_sharegpu_hold(const char *id, bool has_handle, uint32_t handle, bool has_ms,
                         uint32_t ms, Error **errp)
{
    SharegpuState *s = sharegpu_find(id);
    int ret;

    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return;
    }
    ret = sgb_engine_hold(s->dev, has_handle ? handle : 0, has_ms ? ms : 0);
    trace_sharegpu_monitor_engine(s->name, "hold", has_handle ? handle : 0, ret);
    if (ret) {
        error_setg(errp, "sharegpu %s: hold on handle %u: %s", id, handle, sgb_strerror(ret));
        return;
    }
    sharegpu_qev_fences_held(s, false, has_handle ? handle : 0, has_ms ? ms : 0);
}

void qmp_x_sharegpu_stall(const char *id, bool stall, Error **errp)
{
    SharegpuState *s = sharegpu_find(id);

    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return;
    }
    trace_sharegpu_monitor_engine(s->name, stall ? "stall" : "unstall", 0, 0);
    sgb_engine_stall(s->dev, stall);
    if (stall) {
        sharegpu_qev_fences_held(s, true, 0, 0);
    } else {
        sharegpu_qev_fences_released(s, true);
    }
}

void qmp_x_sharegpu_release(const char *id, Error **errp)
{
    SharegpuState *s = sharegpu_find(id);

    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return;
    }
    trace_sharegpu_monitor_engine(s->name, "release", 0, 0);
    sgb_engine_release(s->dev);
    sharegpu_qev_fences_released(s, false);
}

void qmp_x_sharegpu_drop_irq(const char *id, Error **errp)
{
    SharegpuState *s = sharegpu_find(id);

    if (!s) {
        error_setg(errp, "no sharegpu device '%s'", id);
        return;
    }
    trace_sharegpu_monitor_engine(s->name, "drop-irq", 0, 0);
    s->drop_next_irq = true;
}

/* ------------------------------------------------------------------ sharing graph */

static SharegpuPlacement sharegpu_qapi_placement(uint32_t placement)
{
    return placement == SGB_PLACEMENT_DEVICE ? SHAREGPU_PLACEMENT_DEVICE
                                             : SHAREGPU_PLACEMENT_SYSTEM;
}

static SharegpuGraphEdge *sharegpu_graph_edge(SharegpuState *s, const sgb_bo_debug_info *d,
                                              const char *target)
{
    SharegpuGraphEdge *e = g_new0(SharegpuGraphEdge, 1);
    SharegpuBo *dbo = sharegpu_bo_lookup(s, d->state.handle);

    e->source = g_strdup_printf("dev:%s", s->name);
    e->target = g_strdup(target);
    e->kind = d->state.imported ? SHAREGPU_GRAPH_EDGE_KIND_IMPORTS
                                : SHAREGPU_GRAPH_EDGE_KIND_OWNS;
    e->handle = d->state.handle;
    e->mapped = d->state.imported && dbo && dbo->map;
    if (e->mapped) {
        e->has_window_offset = true;
        e->window_offset = s->vram_size + dbo->map_off;
    }
    e->invalidations = d->invalidations;
    e->cache_dirty_lines = d->cache_dirty_lines;
    return e;
}

static SharegpuGraphNode *sharegpu_graph_buffer(const char *id, const char *label,
                                                const sgb_bo_debug_info *d)
{
    SharegpuGraphNode *n = g_new0(SharegpuGraphNode, 1);
    SharegpuGraphBuffer *b = &n->u.buffer;

    n->id = g_strdup(id);
    n->kind = SHAREGPU_GRAPH_NODE_KIND_BUFFER;
    n->label = g_strdup(label);
    b->size = d->state.size;
    b->placement = sharegpu_qapi_placement(d->state.placement);
    b->exported = d->state.exported;
    if (d->state.exported) {
        b->uuid = qemu_uuid_unparse_strdup((const QemuUUID *)d->state.uuid.bytes);
    }
    b->pin_count = d->state.pin_count;
    b->vmap_count = d->state.vmap_count;
    b->attachments = d->state.attachments;
    b->live_mappings = d->state.live_mappings;
    b->fences_pending = d->fences_pending;
    b->generation = d->state.generation;
    b->moves = d->moves;
    return n;
}

/*
 * Two passes: owners first (a buffer node per local handle; exported ones remembered by
 * UUID), then imports, which point at their owner's node. An import whose owner is not a
 * device of this QEMU gets a node of its own, named by UUID.
 */
SharegpuGraph *qmp_query_sharegpu_graph(Error **errp)
{
    SharegpuGraph *g = g_new0(SharegpuGraph, 1);
    SharegpuGraphNodeList **ntail = &g->nodes;
    SharegpuGraphEdgeList **etail = &g->edges;
    g_autoptr(GHashTable) by_uuid = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                          g_free, g_free);
    SharegpuState *s;
    int pass;

    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        SharegpuGraphNode *n = g_new0(SharegpuGraphNode, 1);
        sgb_device_stats st = { 0 };

        sgb_device_stats_get(s->dev, &st);
        n->id = g_strdup_printf("dev:%s", s->name);
        n->kind = SHAREGPU_GRAPH_NODE_KIND_DEVICE;
        n->label = g_strdup(s->name);
        n->u.device.coherent = st.coherent;
        n->u.device.vram_used = st.vram_used;
        QAPI_LIST_APPEND(ntail, n);
    }
    for (pass = 0; pass < 2; pass++) {
        QTAILQ_FOREACH(s, &sharegpu_devices, next) {
            size_t count, i;
            g_autofree sgb_bo_debug_info *bos = sharegpu_list_bos(s, &count);

            for (i = 0; i < count; i++) {
                const sgb_bo_debug_info *d = &bos[i];
                g_autofree char *uuid =
                    qemu_uuid_unparse_strdup((const QemuUUID *)d->state.uuid.bytes);
                g_autofree char *id = NULL;

                if (d->state.imported != (pass == 1)) {
                    continue;
                }
                if (!d->state.imported) {
                    g_autofree char *label = g_strdup_printf("%s #%u", s->name,
                                                             d->state.handle);

                    id = g_strdup_printf("buf:%s:%u", s->name, d->state.handle);
                    QAPI_LIST_APPEND(ntail, sharegpu_graph_buffer(id, label, d));
                    if (d->state.exported) {
                        g_hash_table_insert(by_uuid, g_strdup(uuid), g_strdup(id));
                    }
                } else if (g_hash_table_contains(by_uuid, uuid)) {
                    id = g_strdup(g_hash_table_lookup(by_uuid, uuid));
                } else {
                    id = g_strdup_printf("buf:uuid:%s", uuid);
                    QAPI_LIST_APPEND(ntail, sharegpu_graph_buffer(id, uuid, d));
                    g_hash_table_insert(by_uuid, g_strdup(uuid), g_strdup(id));
                }
                QAPI_LIST_APPEND(etail, sharegpu_graph_edge(s, d, id));
            }
        }
    }
    return g;
}
