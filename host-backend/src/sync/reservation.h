// Reservation object (dma_resv): one WwMutex guarding a buffer's state plus its fences,
// each tagged with a usage. Usages are ordered KERNEL < WRITE < READ < BOOKKEEP, and a query
// for usage U sees every fence whose usage is <= U (dma_resv_iter semantics):
//   - KERNEL: memory management (moves, clears); everybody waits for these.
//   - WRITE: implicit-sync writers; readers wait for KERNEL+WRITE.
//   - READ: implicit-sync readers; writers wait for everything up to READ.
//   - BOOKKEEP: not for implicit sync; only memory management (freeing storage) waits on it.
// Methods that change or read fences require the lock held by the calling thread; violations
// return -ENOLCK and are logged, never corrupt state.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "sync/fence.h"
#include "sync/ww_mutex.h"

namespace sharegpu {

enum class ResvUsage : uint8_t { kKernel = 0, kWrite = 1, kRead = 2, kBookkeep = 3 };
const char* ResvUsageName(ResvUsage usage);

// dma_resv_usage_rw(): what an access must wait for. A write waits for READ (all readers and
// writers), a read waits for WRITE (writers only).
inline ResvUsage UsageForAccess(bool write) {
  return write ? ResvUsage::kRead : ResvUsage::kWrite;
}

// The process-wide class of all reservation locks (reservation_ww_class).
WwClass& ReservationWwClass();

class ReservationObject {
 public:
  struct Entry {
    FenceRef fence;
    ResvUsage usage;
  };

  explicit ReservationObject(WwClass& ww_class = ReservationWwClass());
  ReservationObject(const ReservationObject&) = delete;
  ReservationObject& operator=(const ReservationObject&) = delete;

  WwMutex& lock() { return lock_; }
  [[nodiscard]] int Lock(WwAcquireCtx* ctx) { return lock_.Lock(ctx); }
  int LockSlow(WwAcquireCtx* ctx) { return lock_.LockSlow(ctx); }
  [[nodiscard]] bool TryLock() { return lock_.TryLock(nullptr); }
  void Unlock() { lock_.Unlock(); }
  bool IsHeld() const { return lock_.IsHeldByCurrentThread(); }

  // dma_resv_reserve_fences(): makes room for n more fences so AddFence cannot fail.
  Status ReserveFences(unsigned n);
  // dma_resv_add_fence(): replaces an unsignalled-or-not fence from the same context when the
  // new one is later, otherwise appends (consuming a reserved slot; without one: -ENOSPC).
  // Signalled fences are pruned opportunistically.
  Status AddFence(FenceRef fence, ResvUsage usage);
  // All fences with usage <= `usage` (held required; otherwise empty and logged).
  std::vector<FenceRef> Fences(ResvUsage usage) const;
  std::vector<Entry> Entries() const;  // for debug views; held required

  // Lock-free-for-the-caller queries (take the internal fence-list lock, not the ww lock), as
  // dma_resv_test_signaled / dma_resv_wait_timeout work under RCU without the resv lock.
  bool TestSignaled(ResvUsage usage) const;
  // 0 when every fence with usage <= `usage` signalled within timeout, -ETIME otherwise.
  Status WaitTimeout(ResvUsage usage, std::chrono::nanoseconds timeout) const;
  size_t FenceCount() const;

 private:
  WwMutex lock_;
  mutable std::mutex fences_mu_;  // leaf lock: protects the list for lock-free readers
  std::vector<Entry> fences_ SGB_GUARDED_BY(fences_mu_);
  unsigned reserved_ SGB_GUARDED_BY(fences_mu_) = 0;
};

}  // namespace sharegpu
