/*
 * sharegpu: HMP commands (info sharegpu, info sharegpu-graph, info sharegpu-broker,
 * x_sharegpu_move_bo and the engine fault injection x_sharegpu_hold / _stall / _release /
 * _drop_irq), on top of the QMP ones
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sharegpu.h"
#include "qapi/util.h"
#include "qobject/qdict.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "sharegpu_hw.h"

static const char *sharegpu_status_name(uint32_t st)
{
    const char *name = sghw_status_name(st);

    return name ? name : "?";
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
        SharegpuJobInfoList *j;

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
        monitor_printf(mon, "            split transfers %" PRIu64 " slice yields %" PRIu64
                       " jobs submitted %" PRIu64 " held %" PRIu64 " waited %" PRIu64
                       " buffer waits %" PRIu64 " irqs dropped %" PRIu64 "\n",
                       c->split_jobs, c->bh_yields, c->jobs_submitted, c->jobs_held,
                       c->jobs_waited, c->buffer_waits, c->irqs_dropped);
        monitor_printf(mon, "            job aborts %" PRIu64 " (jobs cancelled %" PRIu64
                       ") qmp events suppressed %" PRIu64 " window faults %" PRIu64
                       " stray window accesses %" PRIu64 "\n", c->job_aborts,
                       c->jobs_cancelled, c->qmp_events_suppressed, c->window_faults,
                       c->window_stray_accesses);
        if (i->coherency) {
            monitor_printf(mon, "  coherency violations: cpu-write-outside-access %" PRIu64
                           " job-read-unflushed-cpu-write %" PRIu64
                           " cpu-access-unflushed-job-write %" PRIu64
                           " (not reported, rate limit: %" PRIu64 ")\n",
                           i->coherency->cpu_write_outside_access,
                           i->coherency->job_read_unflushed_cpu_write,
                           i->coherency->cpu_access_unflushed_job_write,
                           i->coherency->reports_suppressed);
        }
        monitor_printf(mon, "  engine %s, queue depth %u: %u ring entries in flight%s\n",
                       i->engine, i->queue_depth, i->ring_in_flight,
                       i->waiting_for_buffer ? ", next command waits for a buffer" : "");
        if (c->engine_loop_polls || c->engine_fallback_polls) {
            monitor_printf(mon, "  engine event fd: main-loop polls %" PRIu64
                           ", fallback polls %" PRIu64 "\n",
                           c->engine_loop_polls, c->engine_fallback_polls);
        }
        for (j = i->jobs; j; j = j->next) {
            SharegpuJobInfo *job = j->value;

            monitor_printf(mon, "    job fence %" PRIu64 ": %s handle %u", job->fence,
                           job->opcode, job->handle);
            if (job->has_handle2) {
                monitor_printf(mon, " from %u", job->handle2);
            }
            monitor_printf(mon, " %s", SharegpuJobState_str(job->state));
            if (job->waits_for) {
                monitor_printf(mon, " (for %u fence(s) of other devices)", job->waits_for);
            }
            monitor_printf(mon, "\n");
        }
        if (i->job_in_progress) {
            monitor_printf(mon, "  transfer in progress: ring index %u opcode 0x%x, %" PRIu64
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

void hmp_x_sharegpu_move_bo(Monitor *mon, const QDict *qdict)
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
    qmp_x_sharegpu_move_bo(id, handle, placement, &err);
    hmp_handle_error(mon, err);
}

void hmp_x_sharegpu_hold(Monitor *mon, const QDict *qdict)
{
    const char *id = qdict_get_str(qdict, "id");
    int64_t handle = qdict_get_try_int(qdict, "handle", 0);
    int64_t ms = qdict_get_try_int(qdict, "ms", 0);
    Error *err = NULL;

    if (handle < 0 || handle > UINT32_MAX || ms < 0 || ms > UINT32_MAX) {
        monitor_printf(mon, "invalid handle %" PRId64 " or time %" PRId64 " ms\n",
                       handle, ms);
        return;
    }
    qmp_x_sharegpu_hold(id, true, handle, true, ms, &err);
    hmp_handle_error(mon, err);
}

void hmp_x_sharegpu_stall(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    qmp_x_sharegpu_stall(qdict_get_str(qdict, "id"), qdict_get_bool(qdict, "stall"), &err);
    hmp_handle_error(mon, err);
}

void hmp_x_sharegpu_release(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    qmp_x_sharegpu_release(qdict_get_str(qdict, "id"), &err);
    hmp_handle_error(mon, err);
}

void hmp_x_sharegpu_drop_irq(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    qmp_x_sharegpu_drop_irq(qdict_get_str(qdict, "id"), &err);
    hmp_handle_error(mon, err);
}

void hmp_info_sharegpu_graph(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;
    g_autoptr(SharegpuGraph) g = qmp_query_sharegpu_graph(&err);
    SharegpuGraphNodeList *n;
    SharegpuGraphEdgeList *e;

    if (hmp_handle_error(mon, err)) {
        return;
    }
    for (n = g->nodes; n; n = n->next) {
        SharegpuGraphNode *node = n->value;

        if (node->kind == SHAREGPU_GRAPH_NODE_KIND_DEVICE) {
            monitor_printf(mon, "device %s: %s, vram used %" PRIu64 " KiB\n", node->id,
                           node->u.device.coherent ? "coherent" : "non-coherent",
                           node->u.device.vram_used / KiB);
            continue;
        }
        monitor_printf(mon, "buffer %s (%s): %" PRIu64 " bytes %s, pin %u vmap %u attach %u "
                       "mapped %u fences %u gen %" PRIu64 " moves %" PRIu64 "%s%s\n",
                       node->id, node->label, node->u.buffer.size,
                       SharegpuPlacement_str(node->u.buffer.placement),
                       node->u.buffer.pin_count, node->u.buffer.vmap_count,
                       node->u.buffer.attachments, node->u.buffer.live_mappings,
                       node->u.buffer.fences_pending, node->u.buffer.generation,
                       node->u.buffer.moves, node->u.buffer.exported ? " exported " : "",
                       node->u.buffer.uuid ? node->u.buffer.uuid : "");
    }
    for (e = g->edges; e; e = e->next) {
        SharegpuGraphEdge *edge = e->value;

        monitor_printf(mon, "%s -%s-> %s handle %u", edge->source,
                       SharegpuGraphEdgeKind_str(edge->kind), edge->target, edge->handle);
        if (edge->mapped) {
            monitor_printf(mon, " mapped@0x%" PRIx64, edge->window_offset);
        }
        if (edge->kind == SHAREGPU_GRAPH_EDGE_KIND_IMPORTS) {
            monitor_printf(mon, " invalidations %" PRIu64, edge->invalidations);
        }
        if (edge->cache_dirty_lines) {
            monitor_printf(mon, " dirty lines %u", edge->cache_dirty_lines);
        }
        monitor_printf(mon, "\n");
    }
}

void hmp_info_sharegpu_broker(Monitor *mon, const QDict *qdict)
{
    const char *id = qdict_get_try_str(qdict, "id");
    Error *err = NULL;
    g_autoptr(SharegpuBrokerInfoList) list = qmp_query_sharegpu_broker(id, &err);
    SharegpuBrokerInfoList *l;

    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (!list) {
        monitor_printf(mon, "no sharegpu-broker objects\n");
        return;
    }
    for (l = list; l; l = l->next) {
        SharegpuBrokerInfo *b = l->value;
        SharegpuBrokerExportInfoList *e;
        SharegpuBrokerImportInfoList *i;
        strList *d;

        monitor_printf(mon, "sharegpu-broker %s: vm-name %s, socket %s, %s, reconnects %"
                       PRIu64 ", invalidations %" PRIu64 ", revocations %" PRIu64
                       ", denied %" PRIu64 ", acks deferred %" PRIu64 "\n", b->id,
                       b->vm_name, b->path, b->connected ? "connected" : "DISCONNECTED",
                       b->reconnects, b->invalidations, b->revocations, b->denied,
                       b->acks_deferred);
        monitor_printf(mon, "  devices:");
        for (d = b->devices; d; d = d->next) {
            monitor_printf(mon, " %s", d->value);
        }
        monitor_printf(mon, "\n");
        for (e = b->exports; e; e = e->next) {
            SharegpuBrokerGrantInfoList *g;

            monitor_printf(mon, "  export %s: %s handle %u size %" PRIu64 " generation %"
                           PRIu64 "%s, grants:", e->value->broker_id, e->value->device,
                           e->value->handle, e->value->size, e->value->generation,
                           e->value->moving ? " (moving: old storage held)" : "");
            for (g = e->value->grants; g; g = g->next) {
                monitor_printf(mon, " %s:%s", g->value->peer, g->value->writable ? "rw" : "ro");
            }
            monitor_printf(mon, "%s\n", e->value->grants ? "" : " none");
        }
        for (i = b->imports; i; i = i->next) {
            SharegpuBrokerImportInfo *v = i->value;

            monitor_printf(mon, "  import %s: %s handle 0x%x size %" PRIu64 " %s generation %"
                           PRIu64, v->broker_id, v->device, v->handle, v->size,
                           v->writable ? "rw" : "ro", v->generation);
            if (v->has_window_offset) {
                monitor_printf(mon, " mapped at window 0x%" PRIx64, v->window_offset);
            }
            if (v->job_buffer) {
                monitor_printf(mon, " job-buffer");
            }
            if (v->acks_pending) {
                monitor_printf(mon, " acks-pending %u (jobs on the old pages)",
                               v->acks_pending);
            }
            if (v->has_revoked) {
                monitor_printf(mon, " REVOKED (%s)", SharegpuRevokeReason_str(v->revoked));
            }
            monitor_printf(mon, "\n");
        }
        monitor_printf(mon, "  the broker's view (peers, exports with grants and importers, "
                       "imports):\n");
        monitor_printf(mon, "%s", b->broker_status);
    }
}
