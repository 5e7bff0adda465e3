/*
 * sharegpu: QMP events (device/qapi/sharegpu.json, "sharegpu events")
 *
 * What the guest can cause in a loop (moves, invalidations, command errors) goes through a
 * per-device, per-kind limit of SHAREGPU_QEV_PER_SECOND events in each second; the next
 * event sent carries the count left out, so a monitor client never loses track and QEMU
 * never spends its main loop writing to a slow monitor. Monitor-caused events and resets
 * are always sent.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/timer.h"
#include "qapi/qapi-events-sharegpu.h"
#include "trace.h"
#include "sharegpu.h"

#define SHAREGPU_QEV_PER_SECOND 64

/* True when an event of `kind` may go out now; *suppressed = how many were left out. */
bool sharegpu_qev_admit(SharegpuState *s, SharegpuQevKind kind, uint64_t *suppressed)
{
    SharegpuQevLimit *l = &s->qev_limits[kind];
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);

    if (now - l->window_start >= NANOSECONDS_PER_SECOND) {
        l->window_start = now;
        l->sent = 0;
    }
    if (l->sent >= SHAREGPU_QEV_PER_SECOND) {
        l->suppressed++;
        s->counters.qmp_events_suppressed++;
        trace_sharegpu_qmp_event_suppressed(s->name, kind);
        return false;
    }
    l->sent++;
    *suppressed = l->suppressed;
    l->suppressed = 0;
    return true;
}

void sharegpu_qev_bo_moved(SharegpuState *s, uint32_t handle, uint32_t placement,
                           uint64_t vram_offset, bool own_command, uint64_t generation)
{
    bool in_vram = placement == SGHW_PLACEMENT_DEVICE;
    uint64_t suppressed;

    if (sharegpu_qev_admit(s, SHAREGPU_QEV_BO_MOVED, &suppressed)) {
        qapi_event_send_sharegpu_bo_moved(s->name, handle,
                                          in_vram ? SHAREGPU_PLACEMENT_DEVICE :
                                                    SHAREGPU_PLACEMENT_SYSTEM,
                                          in_vram, vram_offset,
                                          own_command ? SHAREGPU_MOVE_CAUSE_COMMAND :
                                                        SHAREGPU_MOVE_CAUSE_OTHER,
                                          generation, suppressed);
    }
}

void sharegpu_qev_bo_invalidated(SharegpuState *s, uint32_t handle, uint64_t generation)
{
    uint64_t suppressed;

    if (sharegpu_qev_admit(s, SHAREGPU_QEV_BO_INVALIDATED, &suppressed)) {
        qapi_event_send_sharegpu_bo_invalidated(s->name, handle, generation, suppressed);
    }
}

void sharegpu_qev_error(SharegpuState *s, uint32_t index, const struct sghw_cmd *c,
                        uint32_t status)
{
    const char *op = c ? sghw_opcode_name(c->opcode) : NULL;
    const char *st = sghw_status_name(status);
    uint64_t suppressed;

    if (sharegpu_qev_admit(s, SHAREGPU_QEV_ERROR, &suppressed)) {
        qapi_event_send_sharegpu_device_error(s->name, index, c ? c->seqno : 0,
                                              op ? op : "?",
                                              st ? st : "?",
                                              !!(s->status & SGHW_STATUS_HALTED),
                                              suppressed);
    }
}

void sharegpu_qev_fences_held(SharegpuState *s, bool stall, uint32_t handle, uint32_t ms)
{
    qapi_event_send_sharegpu_fences_held(s->name,
                                         stall ? SHAREGPU_HOLD_KIND_STALL :
                                                 SHAREGPU_HOLD_KIND_HOLD,
                                         handle != 0, handle, ms != 0, ms);
}

void sharegpu_qev_fences_released(SharegpuState *s, bool stall)
{
    qapi_event_send_sharegpu_fences_released(s->name, stall ? SHAREGPU_HOLD_KIND_STALL :
                                                              SHAREGPU_HOLD_KIND_HOLD);
}

void sharegpu_qev_reset(SharegpuState *s, bool job_abort, uint32_t jobs_cancelled)
{
    qapi_event_send_sharegpu_device_reset(s->name,
                                          job_abort ? SHAREGPU_RESET_KIND_JOB_ABORT :
                                                      SHAREGPU_RESET_KIND_DEVICE,
                                          job_abort, jobs_cancelled);
}
