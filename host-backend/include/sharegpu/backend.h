/*
 * sharegpu host backend: the C API the QEMU device (and any other C user) calls.
 *
 * Conventions
 *  - Every function returns 0 or a negative errno (sgb_strerror() names it); no C++
 *    exception ever crosses this boundary.
 *  - Objects are opaque. Pointers passed in are trusted to come from this API; everything a
 *    guest can choose (BO handles, offsets, lengths, placements, UUIDs, fds) is validated on
 *    every call and rejected with a clear error (-ENOENT unknown handle, -ERANGE range outside
 *    the BO, -EINVAL bad argument, -E2BIG size too large, -ENOSPC no VRAM or host memory
 *    budget (max_hostmem) exhausted, -EBUSY pinned, -EDEADLK would self-deadlock, -ENOLCK lock
 *    rule violated).
 *  - Thread-safety: all functions may be called from any thread. Calls on one device are
 *    serialized by the caller (QEMU: the ring bottom half / monitor under the BQL).
 *  - Ownership: what a create or new call returns is owned by the caller and released with the
 *    matching destroy or unref call. File descriptors returned through an out parameter are owned by the
 *    caller (close them). Descriptors passed in are borrowed (dup'd if kept).
 *
 * Model (docs/semantics.md has the rules): a backend owns devices; a device owns a VRAM arena
 * (one memfd mapped by the device's BAR) and a table of BO handles. A handle names either a
 * local BO or an import of another device's export. Jobs (copy/fill/checksum) run through
 * the device's cache model: with coherent=false, device writes stay in a device cache until
 * flushed and device reads see cached data until invalidated.
 */
#ifndef SHAREGPU_BACKEND_H
#define SHAREGPU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sgb_backend sgb_backend;
typedef struct sgb_device sgb_device;

enum sgb_placement {
    SGB_PLACEMENT_DEVICE = 0, /* VRAM: a range of the device's arena (BAR2) */
    SGB_PLACEMENT_SYSTEM = 1, /* host memory of its own */
};

/* Directions, as enum dma_data_direction. */
enum sgb_dir {
    SGB_DIR_BIDIRECTIONAL = 0,
    SGB_DIR_TO_DEVICE = 1,   /* CPU writes, device reads */
    SGB_DIR_FROM_DEVICE = 2, /* device writes, CPU reads */
};

typedef struct sgb_uuid {
    uint8_t bytes[16];
} sgb_uuid;

typedef struct sgb_device_config {
    const char *name;   /* for logs and the monitor (QEMU: the device id); copied */
    uint64_t vram_size; /* bytes, page multiple, 1 MiB .. 16 GiB */
    int coherent;       /* 1: coherent; 0: strict device-cache emulation */
    /* Host memory budget (as virtio-gpu's max_hostmem): bytes of SYSTEM-placement storage this
     * device's BOs may hold at once; 0: unlimited (what an initialiser omitting it gives).
     * Each SYSTEM storage counts at its page-rounded size from allocation until it is freed:
     * BOs created in SYSTEM, moved or evicted there (evictions that make room in VRAM and
     * moves made through an import included), and old storage a move keeps for pending
     * fences or stale mappings. Not counted: the VRAM arena (vram_size bounds it) and imports
     * (they use the exporter's storage, charged to the exporter). An allocation over the
     * budget fails with -ENOSPC and changes nothing: a create fails, a move or evict leaves
     * the BO where it was, a victim the budget cannot take stays in VRAM with its contents
     * (so a DEVICE allocation that can evict nothing else fails with -ENOSPC). */
    uint64_t max_hostmem;
    /* Where the device's jobs run: "cpu" (the default; NULL is "cpu"): a worker thread per
     * device running the copy engine through the cache model. -ENODEV (logged, naming what is
     * missing) for an engine this build cannot start. */
    const char *engine;
} sgb_device_config;

/* What a BO is now: the state commands act on (BO_QUERY, placement results). Cheap: no walk
 * over fences or cache lines. */
typedef struct sgb_bo_state {
    uint32_t handle;
    uint32_t imported;       /* 1: import of another device's export */
    uint64_t size;
    uint32_t placement;      /* enum sgb_placement of the current storage */
    uint32_t pin_count;
    uint32_t vmap_count;
    uint32_t attachments;    /* on the buffer, all devices */
    uint32_t live_mappings;  /* on the buffer, all devices */
    uint32_t exported;       /* 1 when exported; uuid valid */
    uint64_t vram_offset;    /* offset in the *owning* device's arena when DEVICE, else ~0 */
    uint64_t generation;     /* bumps on every move */
    sgb_uuid uuid;
} sgb_bo_state;

/* The monitor's view of a BO: its state plus history and the cache/fence picture (walks
 * the reservation's fences and the device cache: for debugging, not per command). */
typedef struct sgb_bo_debug_info {
    sgb_bo_state state;
    uint64_t moves;
    uint64_t invalidations;  /* move_notify calls received (imports) */
    uint32_t fences_pending; /* unsignalled fences in the reservation */
    uint32_t cache_dirty_lines;
    uint32_t cache_valid_lines;
    uint32_t foreign;        /* 1: pages another process owns (sgb_bo_create_foreign) */
    char exporter[32];       /* owning device's name */
} sgb_bo_debug_info;

typedef struct sgb_device_stats {
    uint64_t vram_size;
    uint64_t vram_used;
    uint32_t bo_count;
    uint32_t import_count;
    uint32_t coherent;
    uint32_t reserved0;
    uint64_t jobs;
    uint64_t job_errors;
    uint64_t bytes_copied;
    uint64_t evictions;
    uint64_t moves;
    uint64_t exports;
    uint64_t imports;
    uint64_t move_notifies;   /* received by this device's imports */
    uint64_t cache_flushes;
    uint64_t cache_invalidates;
    uint64_t ww_backoffs;     /* -EDEADLK back-offs taken by this device's jobs */
    uint64_t fences_emitted;
    uint64_t last_fence;      /* seqno of the newest signalled job fence */
    uint64_t hostmem_used;    /* bytes charged to the host memory budget now (max_hostmem) */
    uint64_t hostmem_limit;   /* the device's max_hostmem; 0: unlimited */
    uint32_t jobs_in_flight;  /* submitted, fence not signalled yet */
    uint32_t jobs_max_in_flight;
    uint64_t jobs_held;       /* completions held by fault injection (sgb_engine_hold) */
    uint64_t jobs_waited;     /* jobs that waited for another timeline's fence (implicit sync) */
    /* engines with an event fd (sgb_engine_watch_begin; virgl: process-wide figures): polls
     * the event loop asked for, and those the engine made itself after a fence waited */
    uint64_t engine_loop_polls;
    uint64_t engine_fallback_polls;
} sgb_device_stats;

enum sgb_event_type {
    SGB_EVENT_BO_MOVED = 1,       /* a local BO changed placement/offset (move or eviction) */
    SGB_EVENT_BO_INVALIDATED = 2, /* an import's mapping was invalidated (move_notify) */
};

typedef struct sgb_event {
    uint32_t type;
    uint32_t handle;
    uint32_t placement;
    uint32_t reserved0;
    uint64_t vram_offset; /* new offset for BO_MOVED to DEVICE, else ~0 */
    uint64_t generation;
} sgb_event;

/* Called (from any thread, possibly with backend locks held: do not call back into the
 * backend from it; schedule work instead) when new events are queued for the device. */
typedef void (*sgb_event_notify_fn)(void *opaque);

/* An import of the device is being invalidated (its exporter's buffer moves): called in the
 * thread that moves it, with the exporter's reservation held, BEFORE the storage is copied and
 * before SGB_EVENT_BO_INVALIDATED is queued. Whoever maps the import's storage for CPU access
 * (QEMU: the import window) drops that mapping here, so that no write through it can land in
 * the old storage after the copy read it. Do not call back into the backend from it. */
typedef void (*sgb_invalidate_fn)(void *opaque, uint32_t handle);

/* Logging: backend diagnostics. */
enum sgb_log_level {
    SGB_LOG_DEBUG = 0,
    SGB_LOG_INFO = 1,
    SGB_LOG_WARNING = 2,
    SGB_LOG_ERROR = 3,
    SGB_LOG_GUEST_ERROR = 4, /* bad input from the guest (QEMU: LOG_GUEST_ERROR) */
};
typedef void (*sgb_log_fn)(void *opaque, enum sgb_log_level level, const char *msg);
void sgb_set_log_handler(sgb_log_fn fn, void *opaque);

const char *sgb_strerror(int err);

/* --- backend ------------------------------------------------------------------------------ */
int sgb_backend_new(sgb_backend **out);
void sgb_backend_unref(sgb_backend *backend);
/* The process-wide instance every sharegpu device in one QEMU shares (created on first use,
 * destroyed with the last unref). */
int sgb_backend_get_shared(sgb_backend **out);

/* --- devices ------------------------------------------------------------------------------ */
int sgb_device_create(sgb_backend *backend, const sgb_device_config *config,
                       sgb_device **out);
/* Destroys the device's handles (imports detach; exported BOs live on while imported). */
void sgb_device_destroy(sgb_device *dev);
/* Drops every handle of the device, as destroy does, but keeps the device. */
int sgb_device_reset(sgb_device *dev);
/* The arena memfd (borrowed: valid while the device lives), for the BAR. */
int sgb_device_vram_fd(sgb_device *dev);
const char *sgb_device_name(sgb_device *dev);
int sgb_device_stats_get(sgb_device *dev, sgb_device_stats *out);
void sgb_device_set_event_notify(sgb_device *dev, sgb_event_notify_fn fn, void *opaque);
/* NULL clears it (and waits for a call in progress to return). */
void sgb_device_set_invalidate_hook(sgb_device *dev, sgb_invalidate_fn fn, void *opaque);
/* 0 and *out filled, or -EAGAIN when no event is queued. */
int sgb_device_pop_event(sgb_device *dev, sgb_event *out);
/* Fills up to `cap` entries, sets *count to the number of handles (may exceed cap). */
int sgb_device_list_bos(sgb_device *dev, sgb_bo_debug_info *out, size_t cap, size_t *count);

/* --- buffer objects ------------------------------------------------------------------------ */
#define SGB_MAX_BO_SIZE (1ULL << 32)
/* Allocation flags (sgb_bo_create / sgb_bo_move); unknown bits are -EINVAL. */
#define SGB_ALLOC_NO_EVICT (1u << 0) /* DEVICE placement: -ENOSPC instead of evicting others */
int sgb_bo_create(sgb_device *dev, uint64_t size, uint32_t placement, uint32_t flags,
                  uint32_t *handle);
int sgb_bo_destroy(sgb_device *dev, uint32_t handle);
int sgb_bo_state_get(sgb_device *dev, uint32_t handle, sgb_bo_state *out);
int sgb_bo_debug_info_get(sgb_device *dev, uint32_t handle, sgb_bo_debug_info *out);
/* Move to a placement (-EBUSY when pinned; contents preserved). */
int sgb_bo_move(sgb_device *dev, uint32_t handle, uint32_t placement, uint32_t flags);
/* Storage of its own, for a buffer another process maps (the cross-VM broker, docs/broker.md):
 * with SGB_OWN_KEEP, moves the buffer (a local handle) into SYSTEM storage that is a sealed
 * memfd of exactly its pages (sgb_bo_storage: that memfd, offset 0) unless it is there
 * already, and keeps it there: a move to DEVICE is then -EBUSY and one to SYSTEM changes
 * nothing. SGB_OWN_KEEP | SGB_OWN_RELOCATE: into new storage of its own even if it has some
 * (a move: generation, BO_MOVED, importers invalidated). 0: lifts the constraint, the buffer
 * stays where it is. -EBUSY pinned, -ENOSPC over max_hostmem, -EINVAL for an import. */
#define SGB_OWN_KEEP (1u << 0)
#define SGB_OWN_RELOCATE (1u << 1)
int sgb_bo_own_storage(sgb_device *dev, uint32_t handle, uint32_t flags);
/* Evict a DEVICE BO to SYSTEM (what VRAM pressure does). */
int sgb_bo_evict(sgb_device *dev, uint32_t handle);
int sgb_bo_pin(sgb_device *dev, uint32_t handle);
int sgb_bo_unpin(sgb_device *dev, uint32_t handle);

/* CPU-side access to the BO's memory (no device cache involved): what the guest CPU sees
 * through a mapping, and what TRANSFER commands copy to/from guest pages. */
int sgb_bo_cpu_read(sgb_device *dev, uint32_t handle, uint64_t off, void *dst, uint64_t len);
int sgb_bo_cpu_write(sgb_device *dev, uint32_t handle, uint64_t off, const void *src,
                      uint64_t len);
/* CPU-access barriers (dma_buf_begin/end_cpu_access) over every device cache of the buffer. */
int sgb_bo_begin_cpu_access(sgb_device *dev, uint32_t handle, uint32_t dir);
int sgb_bo_end_cpu_access(sgb_device *dev, uint32_t handle, uint32_t dir);
/* This device's cache of the BO: write back dirty lines / write back and drop lines. */
int sgb_bo_cache_flush(sgb_device *dev, uint32_t handle, uint64_t off, uint64_t len);
int sgb_bo_cache_invalidate(sgb_device *dev, uint32_t handle, uint64_t off, uint64_t len);

/* --- jobs ----------------------------------------------------------------------------------
 * Jobs are asynchronous, as on a GPU. sgb_job_submit looks up and locks every buffer of the
 * job, records the unsignalled fences it must wait for (implicit sync: a written buffer waits
 * for its readers and writers, a read buffer for its writers), adds the job's fence to each
 * buffer's reservation (WRITE for the written buffer, READ for read ones), unlocks and queues
 * the job on the device's engine; it returns at once with the fence's seqno on the device
 * timeline in *fence. The storage stays valid while the job runs because a move, an eviction
 * or a CPU access waits for the fence first.
 * `done` is called exactly once, on the engine's thread (never from inside sgb_job_submit),
 * after the fence signalled, with the job's status (0 or a negative errno) and its result
 * (CHECKSUM: the CRC-32C; else 0). Jobs of one device complete in submission order. When
 * sgb_job_submit fails, nothing was queued and `done` is not called. */
enum sgb_job_op {
    SGB_JOB_COPY = 0,
    SGB_JOB_FILL = 1,     /* off, len multiples of 4 */
    SGB_JOB_CHECKSUM = 2,
};

typedef struct sgb_job {
    uint32_t op;      /* enum sgb_job_op */
    uint32_t handle;  /* COPY and FILL: destination; CHECKSUM: source */
    uint32_t handle2; /* COPY: source */
    uint32_t pattern; /* FILL: 32-bit little-endian pattern */
    uint64_t off;     /* offset in handle */
    uint64_t off2;    /* COPY: offset in handle2 */
    uint64_t len;
} sgb_job;

typedef void (*sgb_job_done_fn)(void *opaque, uint64_t fence, int status, uint64_t result);
int sgb_job_submit(sgb_device *dev, const sgb_job *job, sgb_job_done_fn done, void *opaque,
                   uint64_t *fence);

/* Submit and wait for completion (tools and tests; a device model uses sgb_job_submit). */
int sgb_job_copy(sgb_device *dev, uint32_t src, uint64_t src_off, uint32_t dst,
                  uint64_t dst_off, uint64_t len, uint64_t *fence);
int sgb_job_fill(sgb_device *dev, uint32_t dst, uint64_t off, uint64_t len, uint32_t pattern,
                  uint64_t *fence);
int sgb_job_checksum(sgb_device *dev, uint32_t src, uint64_t off, uint64_t len,
                      uint32_t *crc32c, uint64_t *fence);

/* Waiting without blocking: what a device model does before a command that reads, writes or
 * moves a buffer (TRANSFER, CPU access, BO_MOVE) while jobs, its own or another device's,
 * may still use it. Returns 0 when nothing is pending now (fn not kept), 1 when fn(opaque)
 * will be called once, from whichever thread signals the last such fence, or a negative
 * errno (-ENOENT unknown handle, -EINVAL bad `what`). */
enum sgb_await {
    SGB_AWAIT_READ = 0,      /* the buffer's writers */
    SGB_AWAIT_WRITE = 1,     /* its readers and writers */
    SGB_AWAIT_PLACEMENT = 2, /* every fence (a move or eviction, rule S7b) */
};
typedef void (*sgb_idle_fn)(void *opaque);
int sgb_bo_await_idle(sgb_device *dev, uint32_t handle, uint32_t what, sgb_idle_fn fn,
                      void *opaque);

/* --- engine fault injection and inspection (monitor) --------------------------------------
 * A stalled engine starts no job. A held completion: the job has run but its fence (and
 * every later fence of the device) stays unsignalled, so every "fence still pending" case
 * can be made on purpose. hold: handle 0 = every job of the device, else the jobs of this
 * device that touch the handle's buffer; ms 0 = until released. release ends every hold
 * and the stall of the device. */
int sgb_engine_stall(sgb_device *dev, int stalled);
int sgb_engine_hold(sgb_device *dev, uint32_t handle, uint32_t ms);
int sgb_engine_release(sgb_device *dev);
/* Job-timeout recovery that keeps every buffer (the device's JOB_ABORT): every job of the
 * device submitted so far that has not started (queued, waiting for another device's fence,
 * behind the stall) is cancelled: it touches no buffer, its fence signals with -ECANCELED
 * (so nothing waiting for it blocks) and its `done` runs with -ECANCELED, in submission order
 * as always. A job running, or with its completion held, finishes with its own status; the
 * stall and every hold end (as sgb_engine_release). Later submissions are not affected.
 * *cancelled (optional): how many were cancelled. Without SGB_ABORT_NOWAIT it returns once
 * every job submitted before the call has completed (its `done` returned): never call it so
 * from a `done` callback. With it, it returns at once and the completions come as usual (what
 * a device model on its main loop does). */
#define SGB_ABORT_NOWAIT (1u << 0)
int sgb_engine_abort(sgb_device *dev, uint32_t flags, uint32_t *cancelled);

typedef struct sgb_job_info {
    uint64_t fence;       /* seqno on the device timeline */
    uint32_t op;          /* enum sgb_job_op */
    uint32_t handle;
    uint32_t handle2;     /* COPY: source; else 0 */
    uint32_t deps_pending; /* other timelines' fences it still waits for */
    char state[12];       /* "queued", "waiting", "stalled", "running", "held" */
} sgb_job_info;
/* The device's jobs in flight, oldest first: fills up to `cap`, *count = how many there are. */
int sgb_engine_list_jobs(sgb_device *dev, sgb_job_info *out, size_t cap, size_t *count);
/* The engine's kind ("cpu", ...): static storage. */
const char *sgb_engine_kind(sgb_device *dev);

/* --- event-loop integration ---------------------------------------------------------------
 * An engine may complete through a file descriptor the embedding program's event loop should
 * watch: the virgl engine's is virglrenderer's poll fd (one per process, shared by every
 * virgl device; QEMU's main loop watches it as virtio-gpu-virgl does). watch_begin returns
 * it (>= 0, owned by the backend, valid until the matching watch_end), or -ENOENT when the
 * device's engine has none. While a watch is open the backend no longer watches the fd
 * itself: call watch_ready (any thread, never blocks) each time it is readable; it drains
 * the fd and has the renderer collect the completions, which reach the device as every job
 * completion does (its done callback). Should the loop not call it (blocked in a synchronous
 * wait), the renderer polls by itself once a fence has waited 100 ms
 * (engine_fallback_polls). Every watch_begin needs a watch_end before sgb_device_destroy. */
int sgb_engine_watch_begin(sgb_device *dev);
void sgb_engine_watch_ready(sgb_device *dev);
void sgb_engine_watch_end(sgb_device *dev);

/* --- sharing ------------------------------------------------------------------------------ */
/* Export: *uuid names the buffer backend-wide; *fd (optional, caller-owned) is a descriptor
 * for the export that sgb_bo_import_fd accepts. Exporting twice gives the same uuid. */
int sgb_bo_export(sgb_device *dev, uint32_t handle, sgb_uuid *uuid, int *fd);
/* Import into `dev`. Importing a device's own export returns the same handle; importing the
 * same buffer twice returns the same import handle. -ENOENT for an unknown uuid/fd. */
int sgb_bo_import_uuid(sgb_device *dev, const sgb_uuid *uuid, uint32_t *handle);
int sgb_bo_import_fd(sgb_device *dev, int fd, uint32_t *handle);
/* A buffer over pages another process owns (a remote import from the cross-VM broker,
 * docs/broker.md). `fd` is borrowed: the backend keeps its own duplicate and one MAP_SHARED
 * mapping of bytes [0, size) (PROT_READ|PROT_WRITE with SGB_FOREIGN_WRITABLE, else PROT_READ).
 * size: a page multiple, 1 page .. the BO size limit, at most the file's size (fstat).
 * Jobs, CPU read/write, cpu-access barriers and cache commands work as on a local buffer
 * (zero copy: they touch the same pages); writes (FILL/COPY destination, cpu_write) to a
 * read-only one are -EACCES before anything is queued. It never moves: move, evict and
 * own_storage are -EBUSY; its placement reads SYSTEM; export is -EPERM. Not charged to the
 * device's max_hostmem (the owner's memory). sgb_bo_storage answers the backend's duplicate
 * at offset 0. sgb_bo_destroy releases the handle; jobs in flight keep the mapping until they
 * finish. -EINVAL bad size/flags/fd (fd < 0), -E2BIG size over SGB_MAX_BO_SIZE, -EBADF fd not
 * open or not a regular file (a memfd, a tmpfs file), -EACCES SGB_FOREIGN_WRITABLE over a
 * descriptor not open for writing (a read-only grant) or write-sealed. */
#define SGB_FOREIGN_WRITABLE (1u << 0)
int sgb_bo_create_foreign(sgb_device *dev, int fd, uint64_t size, uint32_t flags,
                          uint32_t *handle);
/* Where the bytes of a handle live right now, for zero-copy mapping by the device model:
 * the memfd (borrowed), the offset in it and the host pointer. For an import this maps the
 * attachment (if not mapped since the last invalidation). */
int sgb_bo_storage(sgb_device *dev, uint32_t handle, int *memfd, uint64_t *offset,
                    void **host_ptr, uint64_t *size);

/* --- coherency-violation detector (QEMU check-coherency, docs/user-guide.md) ---------------
 * The device model tells the backend, per buffer, which commands touched it and which of its
 * pages the guest CPU wrote since the previous note (dirty logging); the backend keeps the
 * buffer's state (open CPU-access windows, pages the CPU wrote that no closing barrier made
 * visible to device caches, pages jobs wrote that no opening barrier published) and returns
 * the violations the note reveals, at most one per kind, each with the page range and the
 * last commands that touched the buffer. It only observes: no buffer, cache or fence changes.
 * State is per buffer (an import shares its exporter's), starts clean at SGB_COH_TRACK and
 * again whenever the buffer moved (its generation changed: the device caches were written
 * back and dropped, and the dirty pages the caller harvested belong to the old storage). */
enum sgb_coherency_op {
    SGB_COH_TRACK = 0,            /* start from a clean state (BO_CREATE); dirty ignored */
    SGB_COH_CPU_BEGIN = 1,        /* CPU_ACCESS_BEGIN, dir */
    SGB_COH_CPU_END = 2,          /* CPU_ACCESS_END, dir */
    SGB_COH_CACHE_FLUSH = 3,      /* off, len */
    SGB_COH_CACHE_INVALIDATE = 4, /* off, len */
    SGB_COH_JOB_READ = 5,         /* a job reads off, len (COPY source, CHECKSUM) */
    SGB_COH_JOB_WRITE = 6,        /* a job writes off, len (COPY destination, FILL) */
    SGB_COH_TRANSFER_TO_DEVICE = 7,   /* guest pages -> buffer memory: a CPU write */
    SGB_COH_TRANSFER_FROM_DEVICE = 8, /* buffer memory -> guest pages: a CPU read */
    SGB_COH_CHECK = 9,            /* only classify the dirty pages (other commands) */
};
enum sgb_coherency_kind {
    SGB_COH_CPU_WRITE_OUTSIDE_ACCESS = 0,     /* CPU wrote with no write window open */
    SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE = 1, /* a job read CPU-written pages before a
                                                 closing barrier (END / CACHE_INVALIDATE) */
    SGB_COH_CPU_ACCESS_UNFLUSHED_JOB_WRITE = 2, /* the CPU wrote (dirty logging) or read
                                                   (TRANSFER_FROM_DEVICE) job-written pages
                                                   before an opening barrier (BEGIN /
                                                   CACHE_FLUSH) */
    SGB_COH_KINDS = 3,
};
#define SGB_COH_HISTORY 4
typedef struct sgb_coherency_cmd {
    uint32_t opcode; /* the caller's (QEMU: the ring opcode) */
    uint32_t reserved0;
    uint64_t seqno;  /* the caller's (QEMU: the ring seqno) */
} sgb_coherency_cmd;
typedef struct sgb_coherency_input {
    uint32_t op;      /* enum sgb_coherency_op */
    uint32_t handle;
    uint32_t dir;     /* CPU_BEGIN / CPU_END: enum sgb_dir */
    uint32_t opcode;  /* recorded in the history */
    uint64_t seqno;   /* recorded in the history */
    uint64_t off;     /* CACHE_*, JOB_*, TRANSFER_*: the range */
    uint64_t len;
    /* pages of the buffer the CPU wrote since the previous note: bit i (word i / 64, bit
     * i % 64) = page i; NULL = none seen. dirty_pages: bits in the array, must equal the
     * buffer's page count (else -EINVAL) */
    const uint64_t *dirty;
    uint64_t dirty_pages;
} sgb_coherency_input;
typedef struct sgb_coherency_report {
    uint32_t kind;        /* enum sgb_coherency_kind */
    uint32_t history_len; /* valid entries in history, oldest first (the note's command last) */
    uint64_t first_page;  /* page range of the violation, inclusive, in the buffer */
    uint64_t last_page;
    uint64_t pages;       /* pages in the range that violate */
    sgb_coherency_cmd history[SGB_COH_HISTORY];
    uint32_t imported;    /* the handle is an import: exporter names the owning device */
    uint32_t reserved0;
    char exporter[32];
} sgb_coherency_report;
/* Up to SGB_COH_KINDS reports in out[0 .. cap); *count = how many the note revealed. */
int sgb_coherency_note(sgb_device *dev, const sgb_coherency_input *in,
                       sgb_coherency_report *out, size_t cap, size_t *count);

#ifdef __cplusplus
}
#endif

#endif /* SHAREGPU_BACKEND_H */
