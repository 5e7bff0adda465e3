// One device's memory: its VRAM arena, the LRU of buffer objects placed in it, eviction
// when VRAM is full (what TTM's resource manager + LRU do), and the budget of host memory its
// SYSTEM storage may hold (virtio-gpu's max_hostmem). Shared by the device and its buffer
// objects (which may outlive the device while another device imports them).
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "mem/arena.h"
#include "mem/device_cache.h"
#include "mem/system_pool.h"

namespace sharegpu {

class BufferObject;

struct MemoryStats {
  uint64_t evictions = 0;
  uint64_t moves = 0;
  uint64_t ghosts_pending = 0;  // old storage waiting for BOOKKEEP fences
  uint64_t hostmem_used = 0;    // bytes of SYSTEM storage alive now (ghosts included)
  uint64_t hostmem_limit = 0;   // 0: unlimited
  uint64_t hostmem_peak = 0;    // the most hostmem_used has ever been
  SystemPoolStats system_pool;  // where SYSTEM storage lives (zero before the first one)
};

// Bytes of host memory held in SYSTEM storage, against a limit (0: unlimited). Thread-safe.
// Shared by the memory manager and by every storage it charged: a storage can outlive the
// manager (a stale mapping keeps it), and it must still uncharge into live memory. It points
// at nothing, so holding it creates no ownership cycle.
class HostMemoryBudget {
 public:
  explicit HostMemoryBudget(uint64_t limit) : limit_(limit) {}
  HostMemoryBudget(const HostMemoryBudget&) = delete;
  HostMemoryBudget& operator=(const HostMemoryBudget&) = delete;

  // Adds `bytes` unless that would take the total over the limit (then nothing changes).
  // Atomic as a whole: racing charges can never pass the limit together.
  bool TryCharge(uint64_t bytes);
  void Uncharge(uint64_t bytes);
  // Whether TryCharge(bytes) would succeed now: a hint only (others may charge meanwhile).
  bool Fits(uint64_t bytes) const { return FitsNextTo(used(), bytes); }

  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  // Written so that it cannot overflow.
  bool FitsNextTo(uint64_t used, uint64_t bytes) const {
    return limit_ == 0 || (bytes <= limit_ && used <= limit_ - bytes);
  }

  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
  std::atomic<uint64_t> peak_{0};
};

class MemoryManager : public std::enable_shared_from_this<MemoryManager> {
 public:
  // max_hostmem: bytes of SYSTEM storage this manager may hold at once; 0: unlimited.
  // cache_factory: the device's kind of buffer cache (its engine's; empty: the model).
  static Result<std::shared_ptr<MemoryManager>> Create(const std::string& name, uint64_t vram_size,
                                                       CacheMode cache_mode,
                                                       uint64_t max_hostmem = 0,
                                                       CacheFactory cache_factory = {});
  MemoryManager(std::string name, std::shared_ptr<Arena> arena, CacheMode cache_mode,
                uint64_t max_hostmem = 0, CacheFactory cache_factory = {});

  const std::string& name() const { return name_; }
  CacheMode cache_mode() const { return cache_mode_; }
  const CacheFactory& cache_factory() const { return cache_factory_; }
  // A new cache of one buffer on this device (its kind and mode).
  std::unique_ptr<BufferCache> CreateCache() const {
    return MakeCache(cache_factory_, cache_mode_);
  }
  Arena& arena() const { return *arena_; }

  // New storage in `placement`. For DEVICE, evicts least-recently-used unpinned buffers
  // (whose reservation can be trylocked; never `requester`) to SYSTEM until the range fits.
  // The returned storage keeps the arena alive. With may_evict false, a full VRAM is -ENOSPC
  // (the caller's own memory manager - the guest's TTM - decides what to evict).
  // SYSTEM storage is a range of the manager's system pool (one sparse memfd, created on the
  // first SYSTEM allocation), so SYSTEM buffers cost no descriptor each.
  // SYSTEM storage (eviction victims' too) is charged to the host memory budget, page-rounded,
  // until the storage is destroyed; over the limit the allocation is -ENOSPC. A victim whose
  // eviction the budget refuses stays in VRAM, and a DEVICE allocation that could evict
  // nothing is -ENOSPC.
  Result<std::shared_ptr<Storage>> AllocateStorage(Placement placement, uint64_t size,
                                                   const BufferObject* requester,
                                                   bool may_evict = true);

  // SYSTEM storage in a sealed memfd of its own (Storage::CreateSystem), exactly the
  // page-rounded size: what a buffer shared with another process (the cross-VM broker,
  // docs/broker.md) needs, since whoever holds the descriptor can map the whole file.
  // Charged to the host memory budget as pool storage is (-ENOSPC over the limit).
  Result<std::shared_ptr<Storage>> AllocateOwnStorage(uint64_t size);

  // LRU of DEVICE-placed buffers; most recently used at the back. O(1) each (an index by
  // address beside the list).
  void LruTouch(const std::shared_ptr<BufferObject>& bo);
  void LruRemove(const BufferObject* bo);

  // Move listener: the device turns moves of its buffers into guest events.
  void SetMoveListener(std::function<void(BufferObject&)> listener);
  void NotifyMoved(BufferObject& bo);

  void CountMove() { moves_.fetch_add(1, std::memory_order_relaxed); }
  void GhostAdded() { ghosts_.fetch_add(1, std::memory_order_relaxed); }
  void GhostReleased() { ghosts_.fetch_sub(1, std::memory_order_relaxed); }
  MemoryStats stats() const;
  // For whoever must watch the charge after the manager is gone (tests of BO lifetimes).
  std::shared_ptr<const HostMemoryBudget> hostmem_budget() const { return hostmem_; }

 private:
  Result<std::shared_ptr<Storage>> AllocateSystemStorage(uint64_t size, bool own = false);
  Result<std::shared_ptr<SystemPool>> Pool();
  // The `max` oldest live LRU entries (dead ones met on the way are dropped).
  std::vector<std::shared_ptr<BufferObject>> LruCandidates(size_t max);

  const std::string name_;
  const std::shared_ptr<Arena> arena_;
  const CacheMode cache_mode_;
  const CacheFactory cache_factory_;
  const std::shared_ptr<HostMemoryBudget> hostmem_;
  // Under lru_mu_ no strong reference to a buffer may be made and dropped: it could be the
  // last one, and ~BufferObject takes lru_mu_ (LruRemove). Entries are found by address.
  struct LruEntry {
    const BufferObject* bo;  // identity only, never dereferenced
    std::weak_ptr<BufferObject> ref;
  };
  mutable std::mutex lru_mu_;
  std::list<LruEntry> lru_ SGB_GUARDED_BY(lru_mu_);
  std::unordered_map<const BufferObject*, std::list<LruEntry>::iterator> lru_index_
      SGB_GUARDED_BY(lru_mu_);
  mutable std::mutex pool_mu_;
  std::shared_ptr<SystemPool> pool_ SGB_GUARDED_BY(pool_mu_);
  std::mutex listener_mu_;
  std::function<void(BufferObject&)> move_listener_ SGB_GUARDED_BY(listener_mu_);
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> moves_{0};
  std::atomic<uint64_t> ghosts_{0};
};

}  // namespace sharegpu
