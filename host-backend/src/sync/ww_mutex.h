// Wait/wound mutexes with acquire contexts, modelled on the kernel's ww_mutex
// (kernel/locking/ww_mutex.h, Documentation/locking/ww-mutex-design.rst).
//
// Protocol (rule S6): a context locks a set of WwMutex in any order. lock() may return
// -EDEADLK: the caller must then unlock *every* lock it holds in this context and call
// lock_slow() on the contended mutex (it sleeps until the mutex is free, without deadlock
// detection), then retry the rest. -EALREADY means the context already holds that mutex.
// As in the kernel, a context that holds no lock never gets -EDEADLK (it cannot be part of a
// deadlock cycle; it simply waits), and an older context only wounds a younger holder while
// it holds locks itself. A wounded context backs off only when its next Lock() would wait.
//
// Misuse that the kernel catches with DEBUG_WW_MUTEX_SLOWPATH / lockdep is detected here too
// and reported through the misuse handler (see SetWwMisuseHandler); the offending call then
// fails with -EINVAL and has no effect:
//   - after -EDEADLK, locking anything other than the contended mutex (slowpath rule),
//     or locking while still holding locks (must unwind first),
//   - lock_slow() when the context has seen no -EDEADLK, or on a mutex that is not the
//     contended one,
//   - locking with a context after WwAcquireCtx::Done(),
//   - mixing WwClass instances between a context and a mutex,
//   - unlocking a mutex that the calling thread does not hold,
//   - destroying a context that still holds locks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "common/thread_annotations.h"

namespace sharegpu {

enum class WwAlgorithm {
  kWoundWait,  // default (as dma_resv's reservation_ww_class): an older context wounds the holder
  kWaitDie,    // a younger context dies (-EDEADLK) instead of waiting on an older one
};

enum class WwMisuse {
  kLockAfterDeadlockWithoutUnwind,  // locks still held when retrying after -EDEADLK
  kWrongLockAfterDeadlock,          // next lock after -EDEADLK is not the contended one
  kSlowWithoutDeadlock,             // lock_slow with no pending -EDEADLK
  kLockAfterDone,                   // locking after WwAcquireCtx::Done()
  kClassMismatch,                   // context and mutex of different WwClass
  kUnlockNotOwner,                  // unlock by a thread/context that does not hold it
  kContextDestroyedHoldingLocks,    // ~WwAcquireCtx with locks still held
  kContextUsedFromOtherThread,      // an acquire context belongs to one thread
};

const char* WwMisuseName(WwMisuse misuse);

// Called for every detected misuse. The default handler logs and aborts (a WARN is a bug);
// tests install a recording handler. Returns the previous handler; nullptr restores the default.
using WwMisuseHandler = void (*)(WwMisuse misuse, const char* detail);
WwMisuseHandler SetWwMisuseHandler(WwMisuseHandler handler);

// A lock class: contexts and mutexes of one class may be locked together. Stamps are unique
// and increase, so the context with the smaller stamp is the older one and wins.
class WwClass {
 public:
  explicit WwClass(std::string name, WwAlgorithm algorithm = WwAlgorithm::kWoundWait);
  WwClass(const WwClass&) = delete;
  WwClass& operator=(const WwClass&) = delete;

  const std::string& name() const { return name_; }
  WwAlgorithm algorithm() const { return algorithm_; }
  uint64_t NextStamp() { return next_stamp_.fetch_add(1, std::memory_order_relaxed); }

 private:
  std::string name_;
  WwAlgorithm algorithm_;
  std::atomic<uint64_t> next_stamp_{1};
};

class WwMutex;

namespace internal {
// A one-token park/unpark primitive (a sticky wake-up, like a task's wake_up_process()):
// Unpark() before Park() makes Park() return at once, so no wake-up is ever lost.
class WwParker {
 public:
  void Park();
  void Unpark();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool token_ SGB_GUARDED_BY(mu_) = false;
};
}  // namespace internal

// One locking transaction (ww_acquire_ctx). Lives on one thread's stack.
class WwAcquireCtx {
 public:
  explicit WwAcquireCtx(WwClass& ww_class);
  ~WwAcquireCtx();  // reports kContextDestroyedHoldingLocks if anything is still held
  WwAcquireCtx(const WwAcquireCtx&) = delete;
  WwAcquireCtx& operator=(const WwAcquireCtx&) = delete;

  // ww_acquire_done(): no more locks will be taken in this context.
  void Done();

  WwClass& ww_class() const { return class_; }
  uint64_t stamp() const { return stamp_; }
  unsigned acquired() const { return acquired_.load(std::memory_order_relaxed); }
  // The mutex that returned -EDEADLK and that must be taken with LockSlow() next.
  WwMutex* contended() const { return contended_; }
  // How many -EDEADLK back-offs this context went through (stress tests and debugfs).
  uint64_t backoffs() const { return backoffs_; }
  // Whether an older context has wounded this one (wound-wait); cleared once nothing is held.
  bool wounded() const { return wounded_.load(std::memory_order_relaxed); }

 private:
  friend class WwMutex;
  WwClass& class_;
  const uint64_t stamp_;
  const std::thread::id owner_;
  std::atomic<unsigned> acquired_{0};
  std::atomic<bool> wounded_{false};  // set by an older context that wants one of our locks
  bool done_ = false;
  WwMutex* contended_ = nullptr;
  uint64_t backoffs_ = 0;
  // Where this context sleeps while waiting in Lock(): one per context (not per mutex), so a
  // wounding context can wake it whatever mutex it is blocked on (wake_up_process(owner)).
  internal::WwParker parker_;
  // Intrusive list of the mutexes held in this context; only the owning thread touches it.
  // Lets ~WwAcquireCtx detach leaked locks instead of leaving dangling owner pointers.
  WwMutex* held_head_ = nullptr;
};

class SGB_CAPABILITY("mutex") WwMutex {
 public:
  explicit WwMutex(WwClass& ww_class);
  ~WwMutex();
  WwMutex(const WwMutex&) = delete;
  WwMutex& operator=(const WwMutex&) = delete;

  // ww_mutex_lock(). ctx may be nullptr: a plain sleeping lock that never returns -EDEADLK.
  // Returns 0, -EDEADLK (back off: unlock everything, then LockSlow(this)), -EALREADY
  // (ctx already holds it), or -EINVAL after a reported misuse.
  [[nodiscard]] int Lock(WwAcquireCtx* ctx);
  // ww_mutex_lock_slow(): after -EDEADLK and with no locks held in ctx, sleep until this
  // contended mutex is ours. Returns 0, or -EINVAL after a reported misuse.
  int LockSlow(WwAcquireCtx* ctx);
  // ww_mutex_trylock(): never sleeps; true when acquired.
  [[nodiscard]] bool TryLock(WwAcquireCtx* ctx = nullptr);
  void Unlock();

  bool IsLocked() const;
  // True when the calling thread holds it (dma_resv_assert_held / lockdep_is_held).
  bool IsHeldByCurrentThread() const;
  // The holding context, or nullptr (unlocked, or held without a context).
  const WwAcquireCtx* holder_ctx() const;
  WwClass& ww_class() const { return class_; }

 private:
  friend class WwAcquireCtx;
  struct Waiter;  // lives on the stack of a thread blocked in Lock()

  bool ValidateCtx(WwAcquireCtx* ctx, bool slow);
  int LockCommon(WwAcquireCtx* ctx);
  void Acquired(WwAcquireCtx* ctx);
  bool TryTake(uintptr_t mine, bool more_waiters);
  void SetWaitersFlag(bool waiters);
  int AddWaiter(Waiter* w, WwAcquireCtx* ctx);
  void RemoveWaiter(Waiter* w);
  int CheckKill(Waiter* w, WwAcquireCtx* ctx);
  void CheckWaiters(WwAcquireCtx* ctx);
  bool Die(Waiter* cur, WwAcquireCtx* ctx);
  bool Wound(WwAcquireCtx* ww_ctx, WwAcquireCtx* hold_ctx);
  int Kill(WwAcquireCtx* ctx);
  void UnlockSlow();
  Waiter* PrevWaiter(Waiter* w) const;
  Waiter* NextWaiter(Waiter* w) const;
  // The kernel's wait_lock: guards the wait list and every state_ change while kWaiters is
  // set. Taken from a striped table; the private helpers above run with it held.
  std::mutex& WaitLock() const;

  // state_: the holding context's address | kLocked | kWaiters (kernel: owner | MUTEX_FLAG_*).
  // Locking and unlocking without waiters is one compare-exchange; with kWaiters set every
  // transition happens under WaitLock(), so a waiter that sees the holder's context can rely on it
  // staying alive (the holder must take it to unlock).
  static constexpr uintptr_t kLocked = 1;
  static constexpr uintptr_t kWaiters = 2;
  static constexpr uintptr_t kFlags = kLocked | kWaiters;
  static WwAcquireCtx* CtxOf(uintptr_t state) {
    return reinterpret_cast<WwAcquireCtx*>(state & ~kFlags);
  }

  WwClass& class_;
  std::atomic<uintptr_t> state_{0};
  // Written only by the holder (and cleared before it releases), so a thread comparing it with
  // its own id gets a reliable answer without any lock.
  std::atomic<std::thread::id> owner_thread_{};
  // Wait list, guarded by WaitLock(): context waiters ordered by stamp (oldest first),
  // context-less ones in FIFO order between them, as __ww_mutex_add_waiter() keeps it.
  // Circular (waiters_->prev is the tail). Non-empty => kWaiters.
  Waiter* waiters_ = nullptr;
  // Links in the holding context's held list (ctx->held_head_); only the holding thread
  // touches them, and a handover between holders goes through state_.
  WwMutex* held_prev_ = nullptr;
  WwMutex* held_next_ = nullptr;
};

}  // namespace sharegpu
