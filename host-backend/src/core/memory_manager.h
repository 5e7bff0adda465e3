// One device's memory: its VRAM arena, the LRU of buffer objects placed in it, and eviction
// when VRAM is full (what TTM's resource manager + LRU do). Shared by the device and its
// buffer objects (which may outlive the device while another device imports them).
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "mem/arena.h"
#include "mem/device_cache.h"

namespace sharegpu {

class BufferObject;

struct MemoryStats {
  uint64_t evictions = 0;
  uint64_t moves = 0;
  uint64_t ghosts_pending = 0;  // old storage waiting for BOOKKEEP fences
};

class MemoryManager : public std::enable_shared_from_this<MemoryManager> {
 public:
  static Result<std::shared_ptr<MemoryManager>> Create(const std::string& name, uint64_t vram_size,
                                                       CacheMode cache_mode);
  MemoryManager(std::string name, std::shared_ptr<Arena> arena, CacheMode cache_mode);

  const std::string& name() const { return name_; }
  CacheMode cache_mode() const { return cache_mode_; }
  Arena& arena() const { return *arena_; }

  // New storage in `placement`. For DEVICE, evicts least-recently-used unpinned buffers
  // (whose reservation can be trylocked; never `requester`) to SYSTEM until the range fits.
  // The returned storage keeps the arena alive. With may_evict false, a full VRAM is -ENOSPC
  // (the caller's own memory manager - the guest's TTM - decides what to evict).
  Result<std::shared_ptr<Storage>> AllocateStorage(Placement placement, uint64_t size,
                                                   const BufferObject* requester,
                                                   bool may_evict = true);

  // LRU of DEVICE-placed buffers; most recently used at the back.
  void LruTouch(const std::shared_ptr<BufferObject>& bo);
  void LruRemove(const BufferObject* bo);

  // Move listener: the device turns moves of its buffers into guest events.
  void SetMoveListener(std::function<void(BufferObject&)> listener);
  void NotifyMoved(BufferObject& bo);

  void CountMove() { moves_.fetch_add(1, std::memory_order_relaxed); }
  void GhostAdded() { ghosts_.fetch_add(1, std::memory_order_relaxed); }
  void GhostReleased() { ghosts_.fetch_sub(1, std::memory_order_relaxed); }
  MemoryStats stats() const;

 private:
  const std::string name_;
  const std::shared_ptr<Arena> arena_;
  const CacheMode cache_mode_;
  // Under lru_mu_ no strong reference to a buffer may be made and dropped: it could be the
  // last one, and ~BufferObject takes lru_mu_ (LruRemove). Entries are found by address.
  struct LruEntry {
    const BufferObject* bo;  // identity only, never dereferenced
    std::weak_ptr<BufferObject> ref;
  };
  mutable std::mutex lru_mu_;
  std::list<LruEntry> lru_ SGPU_GUARDED_BY(lru_mu_);
  std::mutex listener_mu_;
  std::function<void(BufferObject&)> move_listener_ SGPU_GUARDED_BY(listener_mu_);
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> moves_{0};
  std::atomic<uint64_t> ghosts_{0};
};

}  // namespace sharegpu
