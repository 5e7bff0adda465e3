// One sharegpu device as the backend sees it: a memory manager (VRAM arena + LRU), a table of
// handles (local buffer objects, or imports of other devices' exports), a fence timeline for
// jobs, the device's event queue, and counters. Every guest-chosen value (handle, offset,
// length, placement, uuid) is validated here before anything is touched.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "core/buffer_object.h"
#include "core/dma_buf.h"
#include "core/memory_manager.h"
#include "engine/engine.h"
#include "sharegpu/backend.h"
#include "sync/fence.h"

namespace sharegpu {

class Backend;

struct DeviceConfig {
  std::string name;
  uint64_t vram_size = 0;
  CacheMode cache_mode = CacheMode::kCoherent;
  uint64_t max_hostmem = 0;  // bytes of SYSTEM storage the device may hold; 0: unlimited
  std::string engine = "cpu";  // where jobs run (engine/cpu_engine.h CreateEngine)
};

// A job as the ring names it: handle is COPY's and FILL's destination and CHECKSUM's source,
// handle2 COPY's source; off is the offset in handle, off2 in handle2.
struct JobRequest {
  JobOp op = JobOp::kCopy;
  uint32_t handle = 0;
  uint32_t handle2 = 0;
  uint64_t off = 0;
  uint64_t off2 = 0;
  uint64_t len = 0;
  uint32_t pattern = 0;
};

// Which fences an await waits for: a read waits for writers, a write for readers and
// writers, a placement change (move, evict) for every fence (rule S7b).
enum class AwaitFor : uint8_t { kRead = 0, kWrite = 1, kPlacement = 2 };

// The device's event queue and the counter its callbacks update. Owned by the device and
// shared with the callbacks the device registers elsewhere (its imports' move_notify, its
// memory manager's move listener), which run with locks of others held (the moved buffer's
// reservation, the listener lock): they hold this, never the device, so the device's last
// reference can never be dropped inside them (~Device closes its imports, which takes
// reservations, and clears the listener). It points at nothing, so holding it makes no cycle.
class DeviceEvents {
 public:
  static constexpr size_t kMaxEvents = 4096;
  void Push(const sgb_event& ev);  // drops the oldest when full; calls the notify function
  Status Pop(sgb_event* out);      // -EAGAIN when empty
  void Clear();
  void SetNotify(sgb_event_notify_fn fn, void* opaque);
  // The device's synchronous hook for an import being invalidated (sgb_invalidate_fn): runs
  // in the moving thread before the storage is copied. Under its own lock, so that clearing
  // it waits for a call in progress.
  void Invalidating(uint32_t handle);
  void SetInvalidateHook(sgb_invalidate_fn fn, void* opaque);
  std::atomic<uint64_t> move_notifies{0};
  std::atomic<uint64_t> dropped{0};

 private:
  std::mutex mu_;
  std::deque<sgb_event> events_ SGB_GUARDED_BY(mu_);
  sgb_event_notify_fn notify_fn_ SGB_GUARDED_BY(mu_) = nullptr;
  void* notify_opaque_ SGB_GUARDED_BY(mu_) = nullptr;
  std::mutex hook_mu_;
  sgb_invalidate_fn hook_fn_ SGB_GUARDED_BY(hook_mu_) = nullptr;
  void* hook_opaque_ SGB_GUARDED_BY(hook_mu_) = nullptr;
};

// What an import's move_notify updates: shared by the import record and that callback (which
// its attachment holds, so it must not hold the record: a cycle). Points at nothing.
struct ImportStatus {
  std::atomic<uint64_t> invalidations{0};
  std::atomic<uint32_t> handle{0};
};

// An import of another device's export: a dynamic attachment and the mapping the device
// uses for jobs, re-made lazily after a move_notify.
struct ImportRecord {
  std::shared_ptr<DmaBuf> dmabuf;
  AttachmentRef attachment;
  MappingRef mapping;  // guarded by dmabuf->resv()
  const std::shared_ptr<ImportStatus> status = std::make_shared<ImportStatus>();
  uint32_t pins = 0;  // pins taken through this import (guarded by dmabuf->resv()); dropped
                      // when the import goes, so a closed import never pins the exporter
  // Set (under dmabuf->resv()) when the import starts closing: from then on nothing maps or
  // pins through it (a job that looked the handle up before the close fails with -ENOENT),
  // so the close's unmap is the last and its detach cannot be refused.
  bool closed = false;
};

class Device : public std::enable_shared_from_this<Device> {
 public:
  static constexpr uint64_t kMinVram = uint64_t{1} << 20;
  static constexpr uint64_t kMaxVram = uint64_t{16} << 30;
  static constexpr size_t kMaxEvents = DeviceEvents::kMaxEvents;

  static Result<std::shared_ptr<Device>> Create(std::shared_ptr<Backend> backend,
                                                DeviceConfig config);
  Device(std::shared_ptr<Backend> backend, DeviceConfig config, std::shared_ptr<MemoryManager> mm,
         std::unique_ptr<Engine> engine);
  ~Device();
  // Stops the engine: queued jobs are cancelled (their done callbacks run with -ECANCELED),
  // the running one finishes; later submissions fail with -ESHUTDOWN. Idempotent.
  void Shutdown();

  const std::string& name() const { return config_.name; }
  CacheMode cache_mode() const { return config_.cache_mode; }
  MemoryManager& memory() const { return *mm_; }

  // flags: SGB_ALLOC_* (validated by the caller).
  Result<uint32_t> CreateBo(uint64_t size, Placement placement, uint32_t flags = 0);
  // sgb_bo_create_foreign: a buffer over bytes [0, size) of `fd` (borrowed: dup'd), pages
  // another process owns; flags SGB_FOREIGN_* (validated by the caller).
  Result<uint32_t> CreateForeignBo(int fd, uint64_t size, uint32_t flags);
  Status DestroyBo(uint32_t handle);
  Status Reset();  // drops every handle
  Result<sgb_bo_state> State(uint32_t handle);
  Result<sgb_bo_debug_info> DebugInfo(uint32_t handle);  // walks fences and cache lines
  // The coherency detector: one command on a handle's buffer (an import's is the
  // exporter's), classified by the buffer's CoherencyTracker (core/coherency.h).
  Result<std::vector<sgb_coherency_report>> NoteCoherency(const sgb_coherency_input& note);
  std::vector<sgb_bo_debug_info> ListBos(size_t* count);

  Status Move(uint32_t handle, Placement placement, uint32_t flags = 0);
  // sgb_bo_own_storage: flags SGB_OWN_* (validated by the caller); local handles only.
  Status OwnStorage(uint32_t handle, uint32_t flags);
  Status Pin(uint32_t handle);
  Status Unpin(uint32_t handle);
  Status CpuRead(uint32_t handle, uint64_t off, void* dst, uint64_t len);
  Status CpuWrite(uint32_t handle, uint64_t off, const void* src, uint64_t len);
  Status BeginCpuAccess(uint32_t handle, DmaDirection dir);
  Status EndCpuAccess(uint32_t handle, DmaDirection dir);
  Status CacheFlush(uint32_t handle, uint64_t off, uint64_t len);
  Status CacheInvalidate(uint32_t handle, uint64_t off, uint64_t len);

  // Jobs, asynchronous: lock every buffer involved (ww, with back-off), take the engine's view
  // of each, gather the unsignalled fences the job must wait for (implicit sync), put the
  // job's fence in each reservation (written buffer WRITE, read buffer READ), unlock and queue
  // it on the engine. `done` runs once, on the engine's thread, after the fence signalled
  // and the job's buffers were let go: with the fence's seqno, the job's status and, for
  // CHECKSUM, its CRC-32C. Returns the seqno; on an error nothing was queued and `done` is
  // not called.
  using SubmitDone = std::function<void(uint64_t seqno, Status status, uint64_t result)>;
  Result<uint64_t> Submit(const JobRequest& req, SubmitDone done);
  // 0: nothing to wait for now (cb not kept); 1: cb runs (any thread) once every fence of the
  // handle's reservation that `what` waits for has signalled; or a negative errno.
  Status AwaitIdle(uint32_t handle, AwaitFor what, std::function<void()> cb);
  Engine& engine() const { return *engine_; }
  // Fault injection: 0 for every job of this device, else the jobs (of this device) that
  // touch the handle's buffer.
  Status HoldCompletions(uint32_t handle, std::chrono::milliseconds duration);
  // Job-timeout recovery that keeps every buffer (JOB_ABORT, docs/hardware.md 3): the jobs
  // not started are cancelled (no effect on any buffer; fence error and done status
  // -ECANCELED), the running or held one finishes, stall and holds end (Engine::AbortAll).
  // Returns how many were cancelled; `wait`: after every job submitted so far completed.
  size_t AbortJobs(bool wait) { return engine_->AbortAll(wait); }

  // Submit and wait for completion (tools, tests, the C API's sgb_job_copy & co).
  Status Copy(uint32_t src, uint64_t src_off, uint32_t dst, uint64_t dst_off, uint64_t len,
              uint64_t* fence);
  Status Fill(uint32_t dst, uint64_t off, uint64_t len, uint32_t pattern, uint64_t* fence);
  Result<uint32_t> Checksum(uint32_t src, uint64_t off, uint64_t len, uint64_t* fence);

  Status Export(uint32_t handle, sgb_uuid* uuid, int* fd);
  Result<uint32_t> ImportDmaBuf(const std::shared_ptr<DmaBuf>& dmabuf);
  Status StorageOf(uint32_t handle, int* memfd, uint64_t* offset, void** host, uint64_t* size);

  void SetEventNotify(sgb_event_notify_fn fn, void* opaque);
  void SetInvalidateHook(sgb_invalidate_fn fn, void* opaque);
  Status PopEvent(sgb_event* out);
  sgb_device_stats Stats() const;
  FenceTimeline& timeline() { return timeline_; }

 private:
  struct Entry {
    std::shared_ptr<BufferObject> bo;      // local buffer
    std::shared_ptr<DmaBuf> exported;      // keeps an export alive while the handle lives
    std::shared_ptr<ImportRecord> import;  // or an import
  };
  using HandleTable = std::unordered_map<uint32_t, Entry>;

  Result<Entry> Lookup(uint32_t handle) const;
  uint32_t InsertLocked(Entry entry) SGB_REQUIRES(table_mu_);
  // A new local buffer's name ("<device>/<kind><serial>") and its handle.
  std::string NewBoName(const char* kind) const;
  uint32_t InsertLocal(const std::shared_ptr<BufferObject>& bo);
  // Every removal from table_ goes through here (keeps the indexes below exact).
  Entry EraseLocked(HandleTable::iterator it) SGB_REQUIRES(table_mu_);
  static ReservationObject& ResvOf(const Entry& e);
  // Reservation held: the engine's view of a handle (maps an import if needed).
  Result<DeviceView> View(Entry& e);
  Status ReleaseImport(const std::shared_ptr<ImportRecord>& import);
  Result<uint64_t> SubmitAndWait(const JobRequest& req, uint64_t* fence);
  Status GuestError(Status err, const char* fmt, ...) const __attribute__((format(printf, 3, 4)));

  const std::shared_ptr<Backend> backend_;
  const DeviceConfig config_;
  const std::shared_ptr<MemoryManager> mm_;
  FenceTimeline timeline_;
  std::unique_ptr<Engine> engine_;  // stopped before anything its jobs use goes
  std::mutex submit_mu_;  // under the jobs' reservation locks; above the engine's lock

  mutable std::mutex table_mu_;  // leaf for lookups; never held across a resv lock
  HandleTable table_ SGB_GUARDED_BY(table_mu_);  // O(1) lookups by handle
  // Which handle imports a buffer (one import per buffer): import lookups without a scan.
  std::unordered_map<const DmaBuf*, uint32_t> import_handles_ SGB_GUARDED_BY(table_mu_);
  uint32_t bo_count_ SGB_GUARDED_BY(table_mu_) = 0;
  uint32_t next_handle_ SGB_GUARDED_BY(table_mu_) = 1;

  const std::shared_ptr<DeviceEvents> events_ = std::make_shared<DeviceEvents>();

  struct Counters {
    std::atomic<uint64_t> jobs{0}, job_errors{0}, bytes_copied{0}, exports{0}, imports{0},
        cache_flushes{0}, cache_invalidates{0}, ww_backoffs{0}, fences_emitted{0},
        last_fence{0};
  };
  mutable Counters counters_;
};

}  // namespace sharegpu
