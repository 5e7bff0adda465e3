// A buffer object: page-granular contents in DEVICE (VRAM arena) or SYSTEM storage, a
// reservation object, the owning device's cache of it, and the exporter side of dma-buf
// (it implements ExporterOps; its DmaBuf is created on first export and cached).
// A foreign buffer (CreateForeign) lives in pages another process owns: it never moves
// (Move, MoveToOwnStorage: -EBUSY) and is never exported (-EPERM); a read-only one must never
// be written (Device refuses writing jobs and CPU writes; with no device write, its caches
// hold no dirty line, so no barrier writes it back).
//
// Rules (docs/semantics.md): Move/Pin/Unpin need the reservation held; a pinned buffer never
// moves (-EBUSY); a move waits for every fence of the reservation (any usage), writes back
// and drops every device cache of the buffer, copies the contents, tells importers with live
// mappings (move_notify) and keeps the old storage while a stale mapping points at it.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "core/coherency.h"
#include "core/dma_buf.h"
#include "core/memory_manager.h"
#include "mem/copy_engine.h"
#include "sync/reservation.h"

namespace sharegpu {

class BufferObject final : public ExporterOps, public std::enable_shared_from_this<BufferObject> {
 public:
  static constexpr uint64_t kMaxSize = uint64_t{1} << 32;

  // size: 1 .. kMaxSize, rounded up to pages.
  static Result<std::shared_ptr<BufferObject>> Create(std::shared_ptr<MemoryManager> mm,
                                                      uint64_t size, Placement placement,
                                                      std::string name, bool may_evict = true);
  // Over bytes [0, size) of a file another process owns (Storage::CreateForeign: takes `fd`;
  // its errors), not charged to the host memory budget. -E2BIG over kMaxSize.
  static Result<std::shared_ptr<BufferObject>> CreateForeign(std::shared_ptr<MemoryManager> mm,
                                                             OwnedFd fd, uint64_t size,
                                                             bool writable, std::string name);
  ~BufferObject() override;

  const std::string& name() const { return name_; }
  ReservationObject& resv() { return resv_; }
  MemoryManager& memory_manager() const { return *mm_; }

  // --- reservation held ---
  // may_evict false: -ENOSPC rather than evicting other buffers to make room.
  // While keep_own() is set, a move to DEVICE is -EBUSY and a move to SYSTEM changes nothing.
  Status Move(Placement target, bool may_evict = true);
  // Into SYSTEM storage of its own (a sealed memfd of exactly the buffer's pages: what a
  // buffer shared with another process needs, docs/broker.md) unless it is there already
  // (relocate: always into new storage), and sets keep_own(). A move as Move's: contents
  // kept, generation bumped, importers notified, the old storage retired (S7b); -EBUSY when
  // pinned.
  Status MoveToOwnStorage(bool relocate);
  void set_keep_own(bool keep) { keep_own_.store(keep, std::memory_order_relaxed); }
  bool keep_own() const { return keep_own_.load(std::memory_order_relaxed); }
  Status PinPlacement();
  Status UnpinPlacement();
  Placement placement() const;         // also fine unlocked for display
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  DeviceView View() { return {storage_->data(), size_, cache_.get()}; }
  // The owning device's cache barriers on a range (CACHE_FLUSH / CACHE_INVALIDATE commands).
  Status CacheFlush(uint64_t off, uint64_t len);
  Status CacheInvalidate(uint64_t off, uint64_t len);

  // --- reservation not held ---
  // dma_buf_begin/end_cpu_access for this buffer whether or not it is exported: wait for the
  // conflicting fences, then flush (CPU reads) / invalidate (CPU writes) all device caches.
  Status BeginCpuAccessUnlocked(DmaDirection dir);
  Status EndCpuAccessUnlocked(DmaDirection dir);
  // Export on first call, the same DmaBuf afterwards while it lives; -EPERM when foreign
  // (importers would map, pin or move pages this process does not own).
  Result<std::shared_ptr<DmaBuf>> GetOrExport();
  std::shared_ptr<DmaBuf> exported() const;

  BufferCache& cache() { return *cache_; }
  // Fixed for the buffer's life (a foreign buffer never changes storage).
  bool foreign() const { return foreign_; }
  bool read_only() const { return read_only_; }
  unsigned pin_count() const { return pin_count_.load(std::memory_order_relaxed); }
  uint64_t generation() const { return generation_.load(std::memory_order_relaxed); }
  uint64_t moves() const { return moves_.load(std::memory_order_relaxed); }
  // Device-memory offset for display and the device's BAR (~0 when SYSTEM); held or racy.
  uint64_t vram_offset() const;
  // Handle of this buffer on its owning device (0: none); set by the device.
  std::atomic<uint32_t> owner_handle{0};
  // The coherency detector's view of this buffer (any device's notes, core/coherency.h):
  // classifies one command with the pages the CPU wrote since the previous note.
  std::vector<CoherencyTracker::Report> NoteCoherency(const sgb_coherency_input& note,
                                                      const std::vector<bool>& dirty);
  // How long a move waits for in-flight writers (WRITE fences) before giving up (-EBUSY).
  void set_move_wait_timeout(std::chrono::nanoseconds t) { move_wait_timeout_ = t; }

  // --- ExporterOps ---
  uint64_t size() const override { return size_; }
  bool IsDynamic() const override { return true; }
  Status Pin(Attachment& attachment) override;
  void Unpin(Attachment& attachment) override;
  Result<SgTable> Map(Attachment& attachment, DmaDirection dir) override;
  void Unmap(Attachment& attachment, const SgTable& sgt, DmaDirection dir) override;
  Status BeginCpuAccess(DmaBuf& dmabuf, DmaDirection dir) override;
  Status EndCpuAccess(DmaBuf& dmabuf, DmaDirection dir) override;
  Result<uint8_t*> Vmap() override;
  void Vunmap(uint8_t* vaddr) override;
  Result<uint8_t*> VmapLocal() override;

  // How many times the exporter's Vmap ran (the core refcounts: tests check it is once).
  uint64_t exporter_vmaps() const { return exporter_vmaps_.load(std::memory_order_relaxed); }

  BufferObject(std::shared_ptr<MemoryManager> mm, uint64_t size, std::string name,
               std::shared_ptr<Storage> storage);

 private:
  bool ReachableBy(const Attachment& attachment) const;
  void RetireStorage(std::shared_ptr<Storage> old);
  void ForEachCache(const std::function<void(BufferCache&)>& fn);
  Status CpuBarrier(bool begin, DmaDirection dir);
  // Move's common part: wait for the fences, copy into `fresh`, switch, notify.
  Status MoveInto(Placement target, bool may_evict, bool own);

  const std::shared_ptr<MemoryManager> mm_;
  const uint64_t size_;
  const std::string name_;
  ReservationObject resv_;
  const std::unique_ptr<BufferCache> cache_;  // the owning device's, of its engine's kind
  std::shared_ptr<Storage> storage_;  // guarded by resv_
  const bool foreign_;    // storage_ is, for good: it never moves
  const bool read_only_;  // storage_ is mapped PROT_READ
  std::atomic<Placement> placement_;
  std::atomic<uint64_t> vram_offset_;
  std::atomic<unsigned> pin_count_{0};
  std::atomic<uint64_t> generation_{1};
  std::atomic<uint64_t> moves_{0};
  std::atomic<uint64_t> exporter_vmaps_{0};
  std::atomic<bool> keep_own_{false};
  std::chrono::nanoseconds move_wait_timeout_{std::chrono::seconds(5)};
  std::mutex coherency_mu_;  // leaf
  CoherencyTracker coherency_ SGB_GUARDED_BY(coherency_mu_);
  mutable std::mutex dmabuf_mu_;
  std::weak_ptr<DmaBuf> dmabuf_;  // guarded by dmabuf_mu_
};

}  // namespace sharegpu
