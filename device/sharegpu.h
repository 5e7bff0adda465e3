/*
 * sharegpu: private header of the device model (hw/misc/sharegpu/)
 *
 * One file per concept:
 *   sharegpu.c           QOM type, properties, BARs, BAR0 registers, interrupts, reset
 *   sharegpu-ring.c      command ring (fetch, decode, in-order completion, long transfers
 *                        in chunks)
 *                        and event ring (producer, RESYNC, delivery of backend events)
 *   sharegpu-cmd.c       command handlers and the device-side handle table
 *   sharegpu-job.c       asynchronous jobs (engine submission, done callbacks) and waits
 *                        for a buffer's jobs before a main-loop command touches it
 *   sharegpu-window.c    the import window (upper half of BAR2) and its mappings
 *   sharegpu-broker.c    the sharegpu-broker QOM object (the connection to the host's
 *                        cross-VM broker), query-sharegpu-broker
 *   sharegpu-remote.c    a device's side of cross-VM sharing: BROKER_* commands, broker
 *                        exports, remote imports (docs/hardware.md 13)
 *   sharegpu-qapi-events.c  QMP events, with the rate limit on guest-caused ones
 *   sharegpu-coherency.c the coherency-violation detector (check-coherency): dirty logging
 *                        fed to the backend's per-buffer model, violations reported
 *   sharegpu-qmp.c       QMP: query-sharegpu, x-sharegpu-move-bo
 *   sharegpu-hmp-cmds.c  HMP: info sharegpu, info sharegpu-broker, x_sharegpu_move_bo
 *   sharegpu-stubs.c     the monitor commands when the device is not built
 *
 * Buffer-object semantics live in the host backend (sharegpu-backend.h); the hardware
 * contract is docs/hardware.md / sharegpu_hw.h.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_MISC_SHAREGPU_H
#define HW_MISC_SHAREGPU_H

#include "qemu/queue.h"
#include "qom/object.h"
#include "hw/pci/pci_device.h"

#include "sharegpu_hw.h"
#include "sharegpu-backend.h"
#include "sharegpu-broker-client.h"

#define TYPE_SHAREGPU "sharegpu"
OBJECT_DECLARE_SIMPLE_TYPE(SharegpuState, SHAREGPU)

#define TYPE_SHAREGPU_WINDOW_MAP "sharegpu-window-map"
OBJECT_DECLARE_SIMPLE_TYPE(SharegpuWindowMap, SHAREGPU_WINDOW_MAP)
#define TYPE_SHAREGPU_WINDOW_BACKING "sharegpu-window-backing"
OBJECT_DECLARE_SIMPLE_TYPE(SharegpuWindowBacking, SHAREGPU_WINDOW_BACKING)

#define TYPE_SHAREGPU_BROKER "sharegpu-broker"
OBJECT_DECLARE_SIMPLE_TYPE(SharegpuBroker, SHAREGPU_BROKER)

/* -object sharegpu-broker: one connection to the host broker, shared by the devices linked */
struct SharegpuBroker {
    Object parent_obj;
    char *path;
    char *vm_name;
    sgbk_client *client;
    QEMUTimer *reconnect_timer;
    uint32_t users;       /* devices linked to it */
    uint64_t reconnects;
    uint64_t invalidations;
    uint64_t revocations;
    uint64_t denied;
    uint64_t acks_deferred;  /* invalidations acknowledged only after jobs on the old pages */
    QTAILQ_ENTRY(SharegpuBroker) next;
};

typedef struct SharegpuRemote SharegpuRemote;
/*
 * One INVALIDATE of the broker, acknowledged when the last holder puts it: the callback
 * holds it while it walks the devices, and each device holds it while its jobs still run on
 * the old pages of its remote import (sharegpu-remote.c). Main loop only.
 */
typedef struct SharegpuBrokerAck SharegpuBrokerAck;

typedef struct SharegpuMemEntry {
    uint64_t addr;
    uint32_t len;
} SharegpuMemEntry;

/* Device-side per-handle state: guest backing pages and the import window mapping. */
typedef struct SharegpuBo {
    uint32_t handle;
    SharegpuMemEntry *ents;
    uint32_t nents;
    uint64_t backing_bytes;
    SharegpuWindowMap *map;
    uint64_t map_off;  /* offset inside the import window */
    uint64_t map_size;
    /*
     * The range stays the import's after a move removed the mapping (map NULL) until the
     * guest unmaps it: an access there re-maps it (docs/hardware.md 4, "Faults").
     */
    bool map_faultable;
    uint64_t *coh_win_dirty;  /* check-coherency: window pages harvested, not yet given out */
    uint64_t coh_win_pages;
    SharegpuRemote *remote; /* remote import (handle has SGHW_REMOTE_HANDLE_BIT) */
} SharegpuBo;

typedef struct SharegpuRing {
    uint64_t base;
    uint32_t size;
    uint32_t head;
    uint32_t tail;
} SharegpuRing;

/*
 * A command fetched from the ring and not completed yet: a job on the engine, or a job
 * that failed at submission and completes in its turn. Completions are written in ring
 * order. done/status/result are written by the engine thread under link->lock.
 */
typedef struct SharegpuInflight {
    struct sghw_cmd cmd;
    uint32_t index;     /* ring index */
    bool done;
    uint32_t status;
    uint64_t result;
} SharegpuInflight;

typedef struct SharegpuLink SharegpuLink;

/* A TRANSFER being executed chunk by chunk across bottom-half runs. */
typedef struct SharegpuJobProgress {
    bool active;
    struct sghw_cmd cmd; /* decoded, validated as a whole before its first chunk */
    uint32_t index;         /* ring index */
    uint64_t done;          /* bytes executed */
} SharegpuJobProgress;

typedef struct SharegpuCountersState {
    uint64_t split_jobs;    /* jobs executed in chunks */
    uint64_t bh_yields;     /* bottom-half runs ended by the job slice */
    uint64_t commands;
    uint64_t command_errors;
    uint64_t interrupts;
    uint64_t events;
    uint64_t events_dropped;
    uint64_t jobs_submitted;
    uint64_t buffer_waits;  /* main-loop commands that waited for a buffer's jobs */
    uint64_t irqs_dropped;  /* by x-sharegpu-drop-irq */
    uint64_t job_aborts;    /* JOB_ABORT writes accepted */
    uint64_t jobs_cancelled; /* job entries completed CANCELLED (by JOB_ABORT) */
    uint64_t qmp_events_suppressed; /* by the QMP event rate limit */
    uint64_t window_faults;  /* window accesses that re-mapped an import after a move */
    uint64_t window_stray;   /* window accesses to no import: ignored (writes), all-ones */
} SharegpuCountersState;

/* The rate-limited QMP events (sharegpu-qapi-events.c) */
typedef enum SharegpuQevKind {
    SHAREGPU_QEV_BO_MOVED,
    SHAREGPU_QEV_BO_INVALIDATED,
    SHAREGPU_QEV_ERROR,
    SHAREGPU_QEV_COHERENCY,      /* coherency violations: event and log line */
    SHAREGPU_QEV__MAX,
} SharegpuQevKind;

typedef struct SharegpuQevLimit {
    int64_t window_start; /* QEMU_CLOCK_REALTIME ns */
    uint32_t sent;        /* in this window */
    uint64_t suppressed;  /* since the last event sent */
} SharegpuQevLimit;

/* Violations found by the coherency detector (check-coherency), per kind. */
typedef struct SharegpuCoherencyCountersState {
    uint64_t violations[SGB_COH_KINDS];  /* enum sgb_coherency_kind */
    uint64_t reports_suppressed;         /* events and log lines over the rate limit */
} SharegpuCoherencyCountersState;

/* Events and log lines of the coherency detector per device and second (counters count all) */

struct SharegpuState {
    PCIDevice parent_obj;

    /* properties */
    uint64_t vram_size;
    bool coherent;
    uint64_t max_hostmem;
    uint64_t job_slice;
    uint64_t job_chunk;
    uint32_t queue_depth;
    char *engine;
    bool check_coherency;
    SharegpuBroker *broker;

    /* resources */
    MemoryRegion mmio;
    MemoryRegion bar2;
    MemoryRegion vram;
    MemoryRegion import_win;
    MemoryRegion import_hole;
    QEMUBH *cmd_bh;
    QEMUBH *event_bh;
    sgb_backend *backend;
    sgb_device *dev;
    char *name;
    GHashTable *bos; /* handle -> SharegpuBo */
    SharegpuQevLimit qev_limits[SHAREGPU_QEV__MAX];
    /* import window (sharegpu-window.c) */
    GHashTable *window_backings; /* "dev:ino" of a memfd -> SharegpuWindowBacking, weak */
    GTree *window_maps;          /* mapped SharegpuBo, ordered by map_off */
    /* cross-VM sharing (sharegpu-remote.c) */
    GHashTable *broker_exports;  /* local handle -> SharegpuBrokerExport */
    GHashTable *job_buffers;     /* backend handles of remote imports' job buffers (a set) */
    uint32_t next_remote;        /* remote import handle numbering (without the bit) */
    QTAILQ_ENTRY(SharegpuState) next;

    /* registers */
    SharegpuRing cmd;
    SharegpuRing evt;
    uint64_t last_seqno;
    uint32_t status;
    uint32_t int_status;
    uint32_t int_mask;
    uint32_t error_code;
    uint32_t error_index;
    uint32_t error_count;
    uint32_t evt_dropped;
    bool evt_resync;   /* events were dropped: a RESYNC event is owed (docs/hardware.md 7) */
    uint32_t scratch;

    SharegpuJobProgress job;
    SharegpuCountersState counters;

    /* asynchronous jobs (sharegpu-job.c) */
    SharegpuLink *link;
    bool engine_watched;        /* engine_fd is watched from the main loop */
    int engine_fd;
    SharegpuInflight *inflight; /* queue_depth slots, a ring from inflight_head */
    uint32_t inflight_head;
    uint32_t inflight_count;
    uint32_t epoch;             /* bumped at reset; under link->lock */
    bool idle_wait;             /* the command at the fetch index waits for a buffer */
    bool idle_fired;            /* under link->lock */
    uint32_t abort_left;        /* entries from the fetch index a JOB_ABORT covers: its jobs
                                   complete CANCELLED unsubmitted (docs/hardware.md 3) */
    bool staged_valid;          /* `staged` holds the fetched, not yet started command */
    struct sghw_cmd staged;
    bool drop_next_irq;         /* fault injection: swallow the next interrupt */

    /* coherency detector (sharegpu-coherency.c) */
    QEMUBH *coh_bh;             /* DOORBELL's harvest, before the ring's bottom half */
    uint64_t *coh_vram_dirty;   /* VRAM pages harvested, not yet given to their buffer */
    SharegpuCoherencyCountersState coh_counters;
};

/* Every realized sharegpu device of this QEMU (they share one backend). */
typedef QTAILQ_HEAD(, SharegpuState) SharegpuDeviceList;
extern SharegpuDeviceList sharegpu_devices;

static inline bool sharegpu_range_ok(uint64_t off, uint64_t len, uint64_t size)
{
    return len <= size && off <= size - len;
}

/* sharegpu.c */
void sharegpu_irq_raise(SharegpuState *s, uint32_t causes);
void sharegpu_log_sink(void *opaque, enum sgb_log_level level, const char *msg);

/* sharegpu-ring.c */
void sharegpu_ring_bh(void *opaque);
void sharegpu_job_finish(SharegpuState *s);
void sharegpu_evt_flush_resync(SharegpuState *s);
void sharegpu_evt_push(SharegpuState *s, uint32_t type, uint32_t handle,
                       uint32_t placement, uint32_t flags, uint64_t offset,
                       uint64_t generation);
void sharegpu_evt_bh(void *opaque);
void sharegpu_evt_notify(void *opaque);
void sharegpu_evt_drain_all(void);

/* sharegpu-job.c */
void sharegpu_job_init(SharegpuState *s);
void sharegpu_job_fini(SharegpuState *s);
void sharegpu_engine_watch_init(SharegpuState *s);
void sharegpu_engine_watch_fini(SharegpuState *s);
void sharegpu_job_reset(SharegpuState *s);
void sharegpu_job_abort(SharegpuState *s);
bool sharegpu_job_is_async(const struct sghw_cmd *c);
uint32_t sharegpu_job_submit(SharegpuState *s, const struct sghw_cmd *c, uint32_t slot);
bool sharegpu_job_await_idle(SharegpuState *s, const struct sghw_cmd *c);
/*
 * fn(s, opaque) on the main loop once every fence of the backend buffer `handle` has
 * signalled, s NULL if the device was reset or unrealized meanwhile. False (fn not called)
 * when nothing is pending now.
 */
typedef void SharegpuIdleFn(SharegpuState *s, void *opaque);
bool sharegpu_job_when_idle(SharegpuState *s, uint32_t handle, SharegpuIdleFn *fn,
                            void *opaque);
bool sharegpu_job_slot_done(SharegpuState *s, SharegpuInflight *out);

/* sharegpu-cmd.c */
uint32_t sharegpu_cmd_execute(SharegpuState *s, struct sghw_cmd *c);
uint32_t sharegpu_cmd_check_job(SharegpuState *s, const struct sghw_cmd *c);
uint32_t sharegpu_status_from_errno(int ret);
SharegpuBo *sharegpu_bo_lookup(SharegpuState *s, uint32_t handle);
SharegpuBo *sharegpu_bo_get(SharegpuState *s, uint32_t handle);
void sharegpu_bo_free(gpointer data);

/* sharegpu-qapi-events.c */
bool sharegpu_qev_admit(SharegpuState *s, SharegpuQevKind kind, uint64_t *suppressed);
void sharegpu_qev_bo_moved(SharegpuState *s, uint32_t handle, uint32_t placement,
                           uint64_t vram_offset, bool own_command, uint64_t generation);
void sharegpu_qev_bo_invalidated(SharegpuState *s, uint32_t handle, uint64_t generation);
void sharegpu_qev_error(SharegpuState *s, uint32_t index, const struct sghw_cmd *c,
                        uint32_t status);
void sharegpu_qev_fences_held(SharegpuState *s, bool stall, uint32_t handle, uint32_t ms);
void sharegpu_qev_fences_released(SharegpuState *s, bool stall);
void sharegpu_qev_reset(SharegpuState *s, bool job_abort, uint32_t jobs_cancelled);

/* sharegpu-window.c */
void sharegpu_window_init(SharegpuState *s);
void sharegpu_window_fini(SharegpuState *s);
/* The RAM region behind an import's window mapping and the import's offset in it, or NULL */
MemoryRegion *sharegpu_window_backing(SharegpuBo *bo, uint64_t *offset);
uint32_t sharegpu_window_map_import(SharegpuState *s, struct sghw_cmd *c);
uint32_t sharegpu_window_unmap_import(SharegpuState *s, struct sghw_cmd *c);
void sharegpu_window_unmap(SharegpuState *s, SharegpuBo *bo);
void sharegpu_window_invalidate(SharegpuState *s, SharegpuBo *bo);
void sharegpu_window_invalidate_hook(void *opaque, uint32_t handle);
void sharegpu_window_unmap_all(SharegpuState *s);
uint32_t sharegpu_window_check(SharegpuState *s, SharegpuBo *bo, uint64_t off, uint64_t size);
uint32_t sharegpu_window_map_fd(SharegpuState *s, SharegpuBo *bo, uint64_t off, int fd,
                                uint64_t fd_off, uint64_t size, bool writable);

/* sharegpu-broker.c */
bool sharegpu_broker_connected(SharegpuBroker *b);
void sharegpu_broker_ack_hold(SharegpuBrokerAck *ack);
void sharegpu_broker_ack_put(SharegpuBrokerAck *ack);
const char *sharegpu_revoke_reason_name(uint32_t reason);

/* sharegpu-remote.c */
void sharegpu_remote_init(SharegpuState *s);
void sharegpu_remote_reset(SharegpuState *s);
uint32_t sharegpu_remote_cmd(SharegpuState *s, struct sghw_cmd *c);
bool sharegpu_remote_handle(const struct sghw_cmd *c);
uint32_t sharegpu_remote_job_handles(SharegpuState *s, const struct sghw_cmd *c,
                                     sgb_job *job);
uint32_t sharegpu_remote_check_transfer(SharegpuState *s, const struct sghw_cmd *c);
bool sharegpu_remote_hidden(SharegpuState *s, const struct sghw_cmd *c);
int sharegpu_remote_move(SharegpuState *s, uint32_t handle, uint32_t placement,
                         bool *handled);
void sharegpu_remote_destroyed(SharegpuState *s, uint32_t handle);
bool sharegpu_remote_exported(SharegpuState *s, uint32_t handle);
bool sharegpu_remote_invalidate(SharegpuState *s, const sgbk_id *id, uint64_t generation,
                                SharegpuBrokerAck *ack);
void sharegpu_remote_revoke(SharegpuState *s, const sgbk_id *id, uint32_t reason);
void sharegpu_broker_export_release_ok(SharegpuState *s, const sgbk_id *id,
                                       uint64_t generation);
void sharegpu_broker_exports_lost(SharegpuState *s);
void sharegpu_broker_export_refused(SharegpuState *s, const sgbk_id *id, int err);
typedef struct SharegpuBrokerExportInfoList SharegpuBrokerExportInfoList;
typedef struct SharegpuBrokerImportInfoList SharegpuBrokerImportInfoList;
void sharegpu_broker_list(SharegpuState *s, SharegpuBrokerExportInfoList ***etail,
                          SharegpuBrokerImportInfoList ***itail);

/* sharegpu-coherency.c */
void sharegpu_coherency_init(SharegpuState *s);
void sharegpu_coherency_fini(SharegpuState *s);
void sharegpu_coherency_cmd(SharegpuState *s, const struct sghw_cmd *c);
void sharegpu_coherency_job(SharegpuState *s, const struct sghw_cmd *c);
void sharegpu_coherency_doorbell(SharegpuState *s);

#endif
