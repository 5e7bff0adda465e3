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
// Fairness and contention (as the kernel's mutex): a locker that finds the mutex held spins,
// for a bounded and adaptive time, while the holder looks like it is running (it is not
// parked in a WwMutex and was not last seen on the spinner's own CPU); then it queues and
// sleeps. A newcomer may take the mutex ahead of sleeping waiters (barging) only until the
// first waiter has waited WwClass::handoff_after(): from then on an unlock hands the mutex
// directly to that waiter, so a tight lock/unlock loop cannot starve it.
//
// Misuse that the kernel catches with DEBUG_WW_MUTEX_SLOWPATH / lockdep is detected here too
// and reported through the misuse handler (see SetWwMisuseHandler); the offending call then
// fails with -EINVAL and has no effect. Checked in every build (they read only state the
// lock keeps anyway):
//   - after -EDEADLK, locking anything other than the contended mutex (slowpath rule),
//     or locking while still holding locks (must unwind first),
//   - lock_slow() when the context has seen no -EDEADLK, or on a mutex that is not the
//     contended one,
//   - locking with a context after WwAcquireCtx::Done(),
//   - unlocking a mutex that the calling thread does not hold,
//   - destroying a context that still holds locks (its locks are detached from it and stay
//     held by the thread as context-less locks, so that no mutex names a dead context).
// Checked only where kWwDebugChecks is true (debug and sanitizer builds: they need per-context
// bookkeeping that correctness does not, the creating thread and the class on every lock):
//   - mixing WwClass instances between a context and a mutex,
//   - using a context from a thread other than the one that created it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "common/thread_annotations.h"

// SGB_WW_DEBUG selects the debug-only misuse checks (see above): on in unoptimized and
// sanitizer builds, off in optimized ones (meson's default debugoptimized build, which the
// benchmarks use). -DSGB_WW_DEBUG=0/1 overrides; every translation unit of one build must
// agree (it changes WwAcquireCtx's layout).
#ifndef SGB_WW_DEBUG
#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SGB_WW_DEBUG 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SGB_WW_DEBUG 1
#endif
#endif
#endif
#ifndef SGB_WW_DEBUG
#define SGB_WW_DEBUG 0
#endif

namespace sharegpu {

inline constexpr bool kWwDebugChecks = SGB_WW_DEBUG != 0;

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

// Called for every detected misuse. The default handler logs it at error level (it is a bug
// in the caller, as a WARN in the kernel) and returns: the offending call then fails with
// -EINVAL and has no effect. It never aborts: inside QEMU a misuse must not kill the VM
// (issue 9, defect 10). WwMisuseFatalHandler logs and aborts, for a debugging session or a
// test that wants misuse to be fatal; tests install a recording handler. Returns the previous
// handler; nullptr restores the default.
using WwMisuseHandler = void (*)(WwMisuse misuse, const char* detail);
WwMisuseHandler SetWwMisuseHandler(WwMisuseHandler handler);
void WwMisuseFatalHandler(WwMisuse misuse, const char* detail);
// How many misuses have been reported in this process (whatever the handler).
uint64_t WwMisuseCount();

// A lock class: contexts and mutexes of one class may be locked together. Stamps are unique
// and increase, so the context with the smaller stamp is the older one and wins.
class WwClass {
 public:
  // How long the first waiter may be overtaken by newcomers (barging) before unlocks hand it
  // the mutex.
  static constexpr std::chrono::nanoseconds kDefaultHandoffAfter = std::chrono::microseconds(500);

  explicit WwClass(std::string name, WwAlgorithm algorithm = WwAlgorithm::kWoundWait,
                   std::chrono::nanoseconds handoff_after = kDefaultHandoffAfter);
  WwClass(const WwClass&) = delete;
  WwClass& operator=(const WwClass&) = delete;

  const std::string& name() const { return name_; }
  WwAlgorithm algorithm() const { return algorithm_; }
  std::chrono::nanoseconds handoff_after() const { return std::chrono::nanoseconds(handoff_ns_); }
  uint64_t NextStamp() { return next_stamp_.fetch_add(1, std::memory_order_relaxed); }

  // Contention statistics of the class's mutexes (relaxed counters, slow paths only).
  struct Stats {
    uint64_t spins_won = 0;    // contended locks taken while spinning on a running holder
    uint64_t spins_lost = 0;   // spins that gave up and queued
    uint64_t sleeps = 0;       // times a waiter parked
    uint64_t handoffs = 0;     // unlocks that handed the mutex to a waiter past handoff_after
  };
  Stats stats() const;

 private:
  friend class WwMutex;
  std::string name_;
  WwAlgorithm algorithm_;
  int64_t handoff_ns_;
  std::atomic<uint64_t> next_stamp_{1};
  // Adaptive spinning: a running average of how long successful spins took (ns), shared by
  // the class's mutexes (updated only on the slow path, racy by design).
  alignas(64) std::atomic<int64_t> spin_avg_ns_{1000};
  std::atomic<uint64_t> spins_won_{0}, spins_lost_{0}, sleeps_{0}, handoffs_{0};
};

class WwMutex;

namespace internal {
// A one-token park/unpark primitive (a sticky wake-up, like a task's wake_up_process()):
// Unpark() before Park() makes Park() return at once, so no wake-up is ever lost. One futex
// word. Park() may also return spuriously; callers re-check their condition.
// Lifetime: WwMutex only unparks a parker while holding the wait lock of a mutex on which
// the parker's owner is queued or that its context holds, so the owner cannot have returned
// and freed it (it takes that wait lock before leaving).
class WwParker {
 public:
  void Park();
  bool TryConsume();  // takes a pending token without sleeping
  void Unpark();

 private:
  static constexpr uint32_t kEmpty = 0, kNotified = 1, kParked = ~0u;
  std::atomic<uint32_t> state_{kEmpty};
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
  void HeldPush(WwMutex* m);
  void HeldRemove(WwMutex* m);

  WwClass& class_;
  const uint64_t stamp_;
#if SGB_WW_DEBUG
  const std::thread::id owner_;  // for kContextUsedFromOtherThread
#endif
  std::atomic<unsigned> acquired_{0};
  std::atomic<bool> wounded_{false};  // set by an older context that wants one of our locks
  bool done_ = false;
  WwMutex* contended_ = nullptr;
  uint64_t backoffs_ = 0;
  // Where this context sleeps while waiting in Lock(): one per context (not per mutex), so a
  // wounding context can wake it whatever mutex it is blocked on (wake_up_process(owner)).
  internal::WwParker parker_;
  // The mutexes held in this context, by slot (WwMutex::held_slot_; freed slots are null and
  // trailing ones are dropped); only the owning thread touches it. Kept in every build: a
  // misuse is not fatal by default, so ~WwAcquireCtx must be able to detach leaked locks
  // rather than leave mutexes naming a dead context (which waiters would then read). An array
  // in the context, not a list through the mutexes, so that locking writes no other mutex's
  // cache line.
  static constexpr unsigned kInlineHeld = 8;
  WwMutex** held_;
  unsigned held_used_ = 0;  // slots in use, null ones included
  unsigned held_cap_ = kInlineHeld;
  WwMutex* held_inline_[kInlineHeld];
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
  int LockContended(WwAcquireCtx* ctx, uintptr_t mine);
  bool SpinOnOwner(WwAcquireCtx* ctx, uintptr_t mine, uintptr_t* taken_from);
  bool HolderLooksRunning() const;
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
  // Locking and unlocking without waiters is one compare-exchange.
  //
  // Who may dereference the holder's context (its stamp, wounded_, parker_): only a thread
  // that holds WaitLock() and has read state_ under it while kWaiters was set. The holding
  // context stays alive because of the protocol, not because of a reference: a context is
  // destroyed only after every mutex stops naming it, and state_ stops naming it only
  //   - by its own Unlock(), which cannot clear kLocked while kWaiters is set without taking
  //     WaitLock() (UnlockSlow), and kWaiters is cleared only under WaitLock();
  //   - by ~WwAcquireCtx detaching a leaked lock, also under WaitLock().
  // A waiter that leaves the list (killed, or the last one taking the mutex) may clear kWaiters
  // while the holder keeps it; the holder's fast unlock then reads that clearing with an
  // acquire (its compare-exchange is acq_rel), so the waiter's reads and writes of the context
  // still happen before the context goes.
  // Every store that installs a context in state_ is a release (compare-exchange acq_rel, or
  // the hand-off's store under WaitLock() of a queued waiter's context), so the reader also
  // sees the context's construction. We chose this over publishing the holder's stamp in the
  // mutex: wound-wait must also reach the holder's wounded_ flag and wake its parker wherever
  // it sleeps, so a waiter needs the context itself, and the rule above is what makes that
  // safe. Spinners run without WaitLock(): they read only state_, owner_thread_ and owner_cpu_
  // and never dereference a context. (The reverted first attempt let a waiter compare stamps
  // with a context read outside this rule; ThreadSanitizer caught it.)
  static constexpr uintptr_t kLocked = 1;
  static constexpr uintptr_t kWaiters = 2;
  static constexpr uintptr_t kFlags = kLocked | kWaiters;
  static WwAcquireCtx* CtxOf(uintptr_t state) {
    return reinterpret_cast<WwAcquireCtx*>(state & ~kFlags);
  }

  WwClass& class_;
  std::atomic<uintptr_t> state_{0};
  // Written only by the holder (and cleared before it releases), so a thread comparing it with
  // its own id gets a reliable answer without any lock. Spinners also read it (and
  // owner_cpu_) to guess whether the holder runs: a hint, never dereferenced.
  std::atomic<std::thread::id> owner_thread_{};
  std::atomic<int32_t> owner_cpu_{-1};
  uint32_t held_slot_ = 0;  // index in the holding context's held_ array (holder only)
  // Wait list, guarded by WaitLock(): context waiters ordered by stamp (oldest first),
  // context-less ones in FIFO order between them, as __ww_mutex_add_waiter() keeps it.
  // Circular (waiters_->prev is the tail). Non-empty => kWaiters.
  Waiter* waiters_ = nullptr;
};

}  // namespace sharegpu
