/*
 * sharegpu: the command ring and the event ring (docs/hardware.md 3, 7)
 *
 * Command ring: a bottom half fetches entries from CMD_HEAD + (commands in flight) to
 * CMD_TAIL and decodes them. Jobs (COPY, FILL, CHECKSUM) go to the engine (sharegpu-job.c),
 * up to queue-depth at a time; any other command starts only when nothing is in flight,
 * waits (without blocking) for the jobs of any device that use its buffer, and runs here
 * under the BQL. Completions are written in ring order, from this bottom half, which the
 * engine's done callback schedules. A TRANSFER's work on the main loop is bounded per run
 * (x-job-slice bytes); a long one runs in chunks across runs ("Execution of long
 * transfers").
 *
 * Event ring: the device is the producer. Backend events (moves, invalidations) and
 * command errors become ring entries; after drops a RESYNC event is owed and goes first.
 * A BO_MOVED that reports what a placing command of the same ring did to its own handle
 * carries SGHW_EVT_F_OWN_COMMAND (1.2).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "hw/pci/pci_device.h"
#include "trace.h"
#include "sharegpu.h"

#define SHAREGPU_BH_BUDGET 256          /* commands per bottom-half run */

/*
 * The placing command (BO_CREATE, BO_MOVE, BO_EVICT) whose backend events are being
 * delivered, if any: its device and the handle it placed. Commands run on the main loop
 * under the BQL, one at a time across all devices, so one record serves them all.
 */
static struct {
    SharegpuState *s;
    uint32_t handle;
} sharegpu_evt_cause;

/* ------------------------------------------------------------------ event ring */

static bool sharegpu_evt_room(SharegpuState *s)
{
    SharegpuRing *r = &s->evt;

    return r->size && ((r->tail + 1) & (r->size - 1)) != r->head;
}

/* Writes one entry at EVT_TAIL and advances it; false if full, disabled or a DMA error. */
static bool sharegpu_evt_write(SharegpuState *s, const struct sghw_event *ev)
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
    /*
     * The DMA may have reconfigured the ring (it can target another device's BAR0 only,
     * but stay defensive): recheck before advancing.
     */
    if (r->size) {
        r->tail = (r->tail + 1) & (r->size - 1);
    }
    return true;
}

/* After drops, the RESYNC event goes first as soon as there is room. */
void sharegpu_evt_flush_resync(SharegpuState *s)
{
    struct sghw_event ev = {
        .type = cpu_to_le32(SGHW_EVT_RESYNC),
        .vram_offset = cpu_to_le64(SGHW_INVALID_OFFSET),
        .generation = cpu_to_le64(s->evt_dropped),
    };

    if (!s->evt_resync || !sharegpu_evt_room(s)) {
        return;
    }
    if (sharegpu_evt_write(s, &ev)) {
        trace_sharegpu_event(s->name, SGHW_EVT_RESYNC, 0, 0, SGHW_INVALID_OFFSET, false);
        s->evt_resync = false;
        s->counters.events++;
        sharegpu_irq_raise(s, SGHW_INT_EVENT);
    }
}

void sharegpu_evt_push(SharegpuState *s, uint32_t type, uint32_t handle,
                       uint32_t placement, uint32_t flags, uint64_t offset,
                       uint64_t generation)
{
    struct sghw_event ev = {
        .type = cpu_to_le32(type),
        .handle = cpu_to_le32(handle),
        .placement = cpu_to_le32(placement),
        .flags = cpu_to_le32(flags),
        .vram_offset = cpu_to_le64(offset),
        .generation = cpu_to_le64(generation),
    };
    bool dropped;

    sharegpu_evt_flush_resync(s);
    /* nothing may overtake an owed RESYNC */
    dropped = s->evt_resync || !sharegpu_evt_write(s, &ev);
    trace_sharegpu_event(s->name, type, handle, placement, offset, dropped);
    if (dropped) {
        bool first = !(s->int_status & SGHW_INT_EVT_OVERFLOW);

        if (s->evt_dropped != UINT32_MAX) {
            s->evt_dropped++;
        }
        s->evt_resync = true;
        s->counters.events_dropped++;
        if (first) {
            sharegpu_irq_raise(s, SGHW_INT_EVT_OVERFLOW);
        }
        return;
    }
    s->counters.events++;
    sharegpu_irq_raise(s, SGHW_INT_EVENT);
}

/* Drains the backend's event queue for this device (main loop, BQL held). */
void sharegpu_evt_bh(void *opaque)
{
    SharegpuState *s = opaque;
    sgb_event ev;

    if (!s->dev) {
        return;
    }
    while (sgb_device_pop_event(s->dev, &ev) == 0) {
        if (ev.type == SGB_EVENT_BO_INVALIDATED) {
            SharegpuBo *bo = sharegpu_bo_lookup(s, ev.handle);

            if (bo) {
                /* already done by the invalidate hook when the mover held the BQL */
                sharegpu_window_invalidate(s, bo);
            }
            sharegpu_evt_push(s, SGHW_EVT_BO_INVALIDATED, ev.handle, ev.placement, 0,
                              SGHW_INVALID_OFFSET, ev.generation);
            sharegpu_qev_bo_invalidated(s, ev.handle, ev.generation);
        } else if (ev.type == SGB_EVENT_BO_MOVED) {
            /* its own handle only: other BOs a placement evicted are not "own" moves */
            uint32_t flags = sharegpu_evt_cause.s == s &&
                             sharegpu_evt_cause.handle == ev.handle ?
                             SGHW_EVT_F_OWN_COMMAND : 0;

            sharegpu_evt_push(s, SGHW_EVT_BO_MOVED, ev.handle, ev.placement, flags,
                              ev.vram_offset, ev.generation);
            sharegpu_qev_bo_moved(s, ev.handle, ev.placement, ev.vram_offset, flags != 0,
                                  ev.generation);
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
void sharegpu_evt_drain_all(void)
{
    SharegpuState *s, *tmp;

    QTAILQ_FOREACH_SAFE(s, &sharegpu_devices, next, tmp) {
        MemReentrancyGuard *guard = &DEVICE(s)->mem_reentrancy_guard;
        bool engaged = guard->engaged_in_io;

        guard->engaged_in_io = true;
        sharegpu_evt_bh(s);
        guard->engaged_in_io = engaged;
    }
}

/* Backend callback: any thread, backend locks possibly held. Only schedule. */
void sharegpu_evt_notify(void *opaque)
{
    SharegpuState *s = opaque;

    qemu_bh_schedule(s->event_bh);
}

/* ------------------------------------------------------------------ command ring */

/*
 * Executes a command that is not a long job and delivers the backend events it caused
 * (windows unmapped, events queued before it completes: docs/hardware.md 4). Events queued
 * before it (nothing should be pending: every command and monitor move drains) are
 * delivered first, so that only what this command did can be marked as its own.
 */
static uint32_t sharegpu_ring_execute(SharegpuState *s, struct sghw_cmd *c)
{
    uint32_t st;

    sharegpu_evt_drain_all();
    st = sharegpu_cmd_execute(s, c);
    if (c->opcode == SGHW_OP_BO_CREATE || c->opcode == SGHW_OP_BO_MOVE ||
        c->opcode == SGHW_OP_BO_EVICT || c->opcode == SGHW_OP_BROKER_EXPORT) {
        sharegpu_evt_cause.s = s;
        sharegpu_evt_cause.handle = c->opcode == SGHW_OP_BO_CREATE ? c->out_handle
                                                                   : c->handle;
    }
    sharegpu_evt_drain_all();
    sharegpu_evt_cause.s = NULL;
    return st;
}

static bool sharegpu_ring_fetch(SharegpuState *s, uint32_t idx, struct sghw_cmd *c)
{
    dma_addr_t addr = s->cmd.base + (uint64_t)idx * sizeof(*c);

    if (pci_dma_read(PCI_DEVICE(s), addr, c, sizeof(*c)) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: command ring DMA error at 0x%" PRIx64 "\n",
                      s->name, (uint64_t)addr);
        trace_sharegpu_ring_fault(s->name, idx, addr);
        s->status |= SGHW_STATUS_HALTED;
        s->error_code = SGHW_ST_DMA_ERROR;
        s->error_index = idx;
        s->error_count++;
        sharegpu_qev_error(s, idx, NULL, SGHW_ST_DMA_ERROR);
        return false;
    }
    c->opcode = le16_to_cpu(c->opcode);
    c->flags = le16_to_cpu(c->flags);
    c->handle = le32_to_cpu(c->handle);
    c->seqno = le64_to_cpu(c->seqno);
    c->handle2 = le32_to_cpu(c->handle2);
    c->arg = le32_to_cpu(c->arg);
    if (c->opcode != SGHW_OP_IMPORT) {
        c->off0 = le64_to_cpu(c->off0);
        c->off1 = le64_to_cpu(c->off1);
    }
    c->len = le64_to_cpu(c->len);
    c->out_handle = 0;
    c->result = 0;
    return true;
}

/*
 * Completes the command at ring index `idx`: writes its completion, records errors, moves
 * CMD_HEAD. Returns the interrupt causes to raise.
 */
static uint32_t sharegpu_ring_complete(SharegpuState *s, uint32_t idx,
                                       const struct sghw_cmd *c, uint32_t st)
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
    /* completion: bytes 48..63, and for EXPORT / BROKER_EXPORT the id in 24..39 */
    if ((c->opcode == SGHW_OP_EXPORT || c->opcode == SGHW_OP_BROKER_EXPORT) &&
        st == SGHW_ST_OK) {
        mr = pci_dma_write(pdev, addr + offsetof(struct sghw_cmd, uuid),
                           c->uuid, sizeof(c->uuid));
    }
    if (mr == MEMTX_OK) {
        mr = pci_dma_write(pdev, addr + offsetof(struct sghw_cmd, status),
                           &done, sizeof(done));
    }
    if (mr != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR,
                      "sharegpu: %s: completion DMA error at 0x%" PRIx64 "\n",
                      s->name, (uint64_t)addr);
        trace_sharegpu_ring_fault(s->name, idx, addr);
        s->status |= SGHW_STATUS_HALTED;
        st = SGHW_ST_DMA_ERROR;
    }
    if (st != SGHW_ST_OK) {
        s->error_code = st;
        s->error_index = idx;
        s->error_count++;
        s->counters.command_errors++;
        raise |= SGHW_INT_ERROR;
        sharegpu_evt_push(s, SGHW_EVT_ERROR, idx, st, 0, SGHW_INVALID_OFFSET, c->seqno);
        sharegpu_qev_error(s, idx, c, st);
    }
    s->last_seqno = c->seqno;
    if (!(s->status & SGHW_STATUS_HALTED)) {
        r->head = (r->head + 1) & (r->size - 1);
    }
    if ((c->flags & SGHW_CMD_F_IRQ) || c->opcode == SGHW_OP_FENCE) {
        raise |= SGHW_INT_CMD;
    }
    return raise;
}

/* ------------------------------------------------------------------ long jobs */

/* Bytes of main-loop work a command does (what the job slice counts). */
static uint64_t sharegpu_job_bytes(const struct sghw_cmd *c)
{
    switch (c->opcode) {
    case SGHW_OP_TRANSFER_TO_DEVICE:
    case SGHW_OP_TRANSFER_FROM_DEVICE:
        return c->len;
    default:
        return 0;
    }
}

/* Transfers that run in chunks: every byte is touched once, in any order. */
static bool sharegpu_job_splittable(SharegpuState *s, const struct sghw_cmd *c)
{
    return (c->opcode == SGHW_OP_TRANSFER_TO_DEVICE ||
            c->opcode == SGHW_OP_TRANSFER_FROM_DEVICE) && c->len > s->job_chunk;
}

/*
 * Runs chunks of the job in progress while *budget lasts (UINT64_MAX: to the end).
 * SGHW_ST_PENDING: budget spent, job not finished.
 */
static uint32_t sharegpu_job_advance(SharegpuState *s, uint64_t *budget)
{
    SharegpuJobProgress *job = &s->job;

    while (job->done < job->cmd.len) {
        struct sghw_cmd part = job->cmd;
        uint64_t n = MIN(job->cmd.len - job->done, s->job_chunk);
        uint32_t st;

        if (*budget == 0) {
            return SGHW_ST_PENDING;
        }
        part.off0 += job->done;
        part.off1 += job->done;
        part.len = n;
        st = sharegpu_cmd_execute(s, &part);
        sharegpu_evt_drain_all();
        trace_sharegpu_job_chunk(s->name, job->index, job->done, n, st);
        if (st != SGHW_ST_OK) {
            return st;
        }
        job->done += n;
        *budget -= MIN(*budget, n);
    }
    return SGHW_ST_OK;
}

/* Finishes the job in progress, however long it is (reset: it completes first). */
void sharegpu_job_finish(SharegpuState *s)
{
    uint64_t unlimited = UINT64_MAX;
    uint32_t st;

    if (!s->job.active) {
        return;
    }
    st = sharegpu_job_advance(s, &unlimited);
    s->job.active = false;
    sharegpu_irq_raise(s, sharegpu_ring_complete(s, s->job.index, &s->job.cmd, st));
}

/* Writes the completions of the commands in flight that are done, in ring order. */
static uint32_t sharegpu_ring_retire(SharegpuState *s)
{
    SharegpuInflight e;
    uint32_t raise = 0;

    while (sharegpu_job_slot_done(s, &e)) {
        e.cmd.result = e.result;
        if (e.status == SGHW_ST_CANCELLED) {
            s->counters.jobs_cancelled++;
        }
        s->inflight_head = (s->inflight_head + 1) % s->queue_depth;
        s->inflight_count--;
        raise |= sharegpu_ring_complete(s, e.index, &e.cmd, e.status);
    }
    return raise;
}

/*
 * The entry at the fetch index leaves it (started, executed or cancelled); true when a
 * JOB_ABORT covers it.
 */
static bool sharegpu_ring_take(SharegpuState *s)
{
    s->staged_valid = false;
    if (!s->abort_left) {
        return false;
    }
    s->abort_left--;
    return true;
}

/*
 * Queues the job at ring index `idx` (which a previous job may not have left yet); a job
 * that a JOB_ABORT covers takes its slot, to complete in order, but never reaches the engine.
 */
static void sharegpu_ring_start_job(SharegpuState *s, uint32_t idx, struct sghw_cmd *c,
                                    bool aborted)
{
    uint32_t slot = (s->inflight_head + s->inflight_count) % s->queue_depth;
    SharegpuInflight *e = &s->inflight[slot];
    uint32_t st;

    /* the slot is complete before the engine can see it: its callback may come at once */
    *e = (SharegpuInflight) { .cmd = *c, .index = idx };
    s->inflight_count++;
    if (aborted) {
        trace_sharegpu_job_cancelled(s->name, idx);
        e->done = true;
        e->status = SGHW_ST_CANCELLED;
        return;
    }
    s->counters.jobs_submitted++;
    sharegpu_evt_drain_all();
    st = sharegpu_job_submit(s, c, slot);
    /* an import mapped for the job may have moved the exporter's buffer */
    sharegpu_evt_drain_all();
    if (st != SGHW_ST_PENDING) {
        e->done = true;   /* not on the engine: nobody else writes it */
        e->status = st;
    }
}

/* The command ring's bottom half: DOORBELL and the engine's completions schedule it. */
void sharegpu_ring_bh(void *opaque)
{
    SharegpuState *s = opaque;
    SharegpuRing *r = &s->cmd;
    SharegpuJobProgress *job = &s->job;
    uint32_t raise = 0;
    int budget = SHAREGPU_BH_BUDGET;
    uint64_t job_budget = s->job_slice;

    while (s->dev && r->size && !(s->status & SGHW_STATUS_HALTED)) {
        uint32_t st;

        raise |= sharegpu_ring_retire(s);
        if (!job->active) {
            struct sghw_cmd c;
            uint32_t idx = (r->head + s->inflight_count) & (r->size - 1);

            if (idx == r->tail || (s->status & SGHW_STATUS_HALTED)) {
                /* all read: an abort covers nothing past a CMD_TAIL moved back */
                s->abort_left = idx == r->tail ? 0 : s->abort_left;
                break;
            }
            if (!s->staged_valid) {
                if (budget-- == 0) {
                    qemu_bh_schedule(s->cmd_bh);
                    break;
                }
                if (!sharegpu_ring_fetch(s, idx, &s->staged)) {
                    raise |= SGHW_INT_ERROR;
                    break;
                }
                s->staged_valid = true;
                trace_sharegpu_cmd(s->name, idx, s->staged.opcode, s->staged.flags,
                                   s->staged.handle, s->staged.seqno);
            }
            c = s->staged;
            if (sharegpu_job_is_async(&c)) {
                if (s->inflight_count == s->queue_depth) {
                    break;      /* a completion reschedules us */
                }
                sharegpu_ring_start_job(s, idx, &c, sharegpu_ring_take(s));
                continue;
            }
            /* everything else runs after every earlier command, on idle buffers */
            if (s->inflight_count || sharegpu_job_await_idle(s, &c)) {
                break;          /* a completion or the buffer's last fence reschedules us */
            }
            sharegpu_ring_take(s);     /* not a job: JOB_ABORT leaves it alone */
            if (!sharegpu_job_splittable(s, &c)) {
                st = sharegpu_ring_execute(s, &c);
                raise |= sharegpu_ring_complete(s, idx, &c, st);
                job_budget -= MIN(job_budget, sharegpu_job_bytes(&c));
                if (job_budget == 0 && r->head != r->tail) {
                    s->counters.bh_yields++;
                    qemu_bh_schedule(s->cmd_bh);
                    break;
                }
                continue;
            }
            st = sharegpu_cmd_check_job(s, &c);
            if (st != SGHW_ST_OK) {
                raise |= sharegpu_ring_complete(s, idx, &c, st);
                continue;
            }
            *job = (SharegpuJobProgress) { .active = true, .cmd = c, .index = idx };
            s->counters.split_jobs++;
        }
        st = sharegpu_job_advance(s, &job_budget);
        if (st == SGHW_ST_PENDING) {
            s->counters.bh_yields++;
            qemu_bh_schedule(s->cmd_bh);
            break;
        }
        job->active = false;
        raise |= sharegpu_ring_complete(s, job->index, &job->cmd, st);
    }
    if (raise) {
        sharegpu_irq_raise(s, raise);
    }
}
