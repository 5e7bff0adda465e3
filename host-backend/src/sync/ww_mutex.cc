#include "sync/ww_mutex.h"

#include <cstdlib>

#include "common/log.h"

namespace sharegpu {
namespace {

void DefaultMisuseHandler(WwMisuse misuse, const char* detail) {
  Logf(LogLevel::kError, "ww_mutex misuse (%s): %s", WwMisuseName(misuse), detail);
  std::abort();  // a WARN in the kernel; here a bug in the caller that must not go unnoticed
}

std::atomic<WwMisuseHandler> g_misuse_handler{&DefaultMisuseHandler};

void ReportMisuse(WwMisuse misuse, const char* detail) {
  g_misuse_handler.load(std::memory_order_acquire)(misuse, detail);
}

// __ww_ctx_less(): true when `a` is younger (bigger stamp) than `b`, i.e. `a` yields.
bool Younger(const WwAcquireCtx* a, const WwAcquireCtx* b) {
  return static_cast<int64_t>(a->stamp() - b->stamp()) > 0;
}

}  // namespace

const char* WwMisuseName(WwMisuse misuse) {
  switch (misuse) {
    case WwMisuse::kLockAfterDeadlockWithoutUnwind:
      return "lock after -EDEADLK without unwind";
    case WwMisuse::kWrongLockAfterDeadlock:
      return "wrong lock after -EDEADLK";
    case WwMisuse::kSlowWithoutDeadlock:
      return "lock_slow without -EDEADLK";
    case WwMisuse::kLockAfterDone:
      return "lock after acquire done";
    case WwMisuse::kClassMismatch:
      return "ww_class mismatch";
    case WwMisuse::kUnlockNotOwner:
      return "unlock by non-owner";
    case WwMisuse::kContextDestroyedHoldingLocks:
      return "context destroyed holding locks";
    case WwMisuse::kContextUsedFromOtherThread:
      return "context used from another thread";
  }
  return "?";
}

WwMisuseHandler SetWwMisuseHandler(WwMisuseHandler handler) {
  if (handler == nullptr) handler = &DefaultMisuseHandler;
  return g_misuse_handler.exchange(handler, std::memory_order_acq_rel);
}

WwClass::WwClass(std::string name, WwAlgorithm algorithm)
    : name_(std::move(name)), algorithm_(algorithm) {}

namespace internal {

void WwParker::Park() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this]() SGB_REQUIRES(mu_) { return token_; });
  token_ = false;
}

void WwParker::Unpark() {
  // Notifying under mu_: the parked thread may destroy the parker as soon as it can run.
  std::lock_guard lock(mu_);
  token_ = true;
  cv_.notify_one();
}

}  // namespace internal

WwAcquireCtx::WwAcquireCtx(WwClass& ww_class)
    : class_(ww_class), stamp_(ww_class.NextStamp()), owner_(std::this_thread::get_id()) {}

WwAcquireCtx::~WwAcquireCtx() {
  if (acquired() == 0) return;
  ReportMisuse(WwMisuse::kContextDestroyedHoldingLocks, "~WwAcquireCtx with locks held");
  // The handler returned (a test): detach the leaked locks so that no mutex points at this
  // dead context; they stay held by this thread as plain locks and can still be unlocked.
  while (WwMutex* m = held_head_) {
    held_head_ = m->held_next_;
    m->held_prev_ = m->held_next_ = nullptr;
    std::lock_guard lock(m->WaitLock());  // waiters read the holder's context under it
    uintptr_t s = m->state_.load();
    while (!m->state_.compare_exchange_weak(s, s & WwMutex::kFlags)) {
    }
  }
  acquired_.store(0, std::memory_order_relaxed);
}

void WwAcquireCtx::Done() {
  done_ = true;
}

static_assert(alignof(WwAcquireCtx) > 2, "WwMutex::state_ keeps flags in the low bits");

// The wait list is circular (waiters_->prev is the tail) to keep WwMutex small.
struct WwMutex::Waiter {
  WwAcquireCtx* ctx;
  internal::WwParker* parker;
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
};

WwMutex::WwMutex(WwClass& ww_class) : class_(ww_class) {}

WwMutex::~WwMutex() {
  std::lock_guard lock(WaitLock());
  const uintptr_t s = state_.load();
  if (s != 0 || waiters_ != nullptr) {
    Logf(LogLevel::kError, "ww_mutex (%s) destroyed while %s", class_.name().c_str(),
         waiters_ != nullptr ? "contended" : "held");
  }
}

bool WwMutex::ValidateCtx(WwAcquireCtx* ctx, bool slow) {
  if (ctx->owner_ != std::this_thread::get_id()) {
    ReportMisuse(WwMisuse::kContextUsedFromOtherThread, "acquire context used by another thread");
    return false;
  }
  if (ctx->done_) {
    ReportMisuse(WwMisuse::kLockAfterDone, "lock after WwAcquireCtx::Done()");
    return false;
  }
  if (&ctx->class_ != &class_) {
    ReportMisuse(WwMisuse::kClassMismatch, "context and mutex belong to different WwClass");
    return false;
  }
  if (slow && ctx->contended_ == nullptr) {
    ReportMisuse(WwMisuse::kSlowWithoutDeadlock, "LockSlow() without a pending -EDEADLK");
    return false;
  }
  if (ctx->contended_ != nullptr) {
    if (ctx->acquired() > 0) {
      ReportMisuse(WwMisuse::kLockAfterDeadlockWithoutUnwind,
                   "locking after -EDEADLK while still holding locks");
      return false;
    }
    if (ctx->contended_ != this) {
      ReportMisuse(WwMisuse::kWrongLockAfterDeadlock,
                   "after -EDEADLK the contended mutex must be locked first");
      return false;
    }
  }
  return true;
}

int WwMutex::Lock(WwAcquireCtx* ctx) {
  if (ctx != nullptr && !ValidateCtx(ctx, /*slow=*/false)) return -EINVAL;
  return LockCommon(ctx);
}

int WwMutex::LockSlow(WwAcquireCtx* ctx) {
  if (ctx == nullptr) {
    ReportMisuse(WwMisuse::kSlowWithoutDeadlock, "LockSlow() without a context");
    return -EINVAL;
  }
  if (!ValidateCtx(ctx, /*slow=*/true)) return -EINVAL;
  // ctx holds nothing now, so LockCommon() neither wounds nor dies: a plain sleeping wait.
  return LockCommon(ctx);
}

bool WwMutex::TryLock(WwAcquireCtx* ctx) {
  if (ctx != nullptr && !ValidateCtx(ctx, /*slow=*/false)) return false;
  // Succeeds only from "free, no waiters", so there is nobody to wound or to kill.
  uintptr_t expected = 0;
  const uintptr_t mine = reinterpret_cast<uintptr_t>(ctx) | kLocked;
  if (!state_.compare_exchange_strong(expected, mine)) {
    return false;
  }
  if (ctx != nullptr && ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  Acquired(ctx);
  return true;
}

int WwMutex::LockCommon(WwAcquireCtx* ctx) {
  const uintptr_t mine = reinterpret_cast<uintptr_t>(ctx) | kLocked;
  if (ctx != nullptr) {
    // Only ctx's own thread (this one) ever stores ctx into state_, so this is exact.
    if (CtxOf(state_.load()) == ctx) return -EALREADY;
    // Nobody can wound a context that holds nothing, so this cannot race with a wound.
    if (ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  }
  // Fast path: free and nobody waiting. With no waiters there is nobody to wound or kill.
  uintptr_t expected = 0;
  if (state_.compare_exchange_strong(expected, mine)) {
    Acquired(ctx);
    return 0;
  }

  std::unique_lock lock(WaitLock());
  // Take it if it is free (waiters may have been woken but not run yet), otherwise announce a
  // waiter so that the holder cannot release it, or vanish, without taking the wait lock.
  for (uintptr_t s = state_.load();;) {
    if ((s & kLocked) == 0) {
      if (state_.compare_exchange_weak(s, mine | (waiters_ != nullptr ? kWaiters : 0))) {
        Acquired(ctx);
        if (ctx != nullptr) CheckWaiters(ctx);
        return 0;
      }
    } else if ((s & kWaiters) != 0 || state_.compare_exchange_weak(s, s | kWaiters)) {
      break;
    }
  }

  internal::WwParker local_parker;  // context-less waiters cannot be wounded: park locally
  Waiter waiter{ctx, ctx != nullptr ? &ctx->parker_ : &local_parker};
  if (int ret = AddWaiter(&waiter, ctx); ret != 0) {
    if (waiters_ == nullptr) SetWaitersFlag(false);
    return ret;
  }
  for (;;) {
    const bool others = waiters_ != &waiter || waiter.next != &waiter;
    if (TryTake(mine, others)) break;
    if (ctx != nullptr) {
      // Only while the mutex is held by someone else: its unlock wakes the next waiter, so
      // leaving the list here cannot strand the others.
      if (int ret = CheckKill(&waiter, ctx); ret != 0) {
        RemoveWaiter(&waiter);
        if (waiters_ == nullptr) SetWaitersFlag(false);
        return ret;
      }
    }
    lock.unlock();
    waiter.parker->Park();
    lock.lock();
  }
  const bool first = waiters_ == &waiter;
  RemoveWaiter(&waiter);
  Acquired(ctx);
  // Wound-wait: we overtook waiters that may be older than us; they may need to wound us.
  if (ctx != nullptr && class_.algorithm() == WwAlgorithm::kWoundWait && !first) {
    CheckWaiters(ctx);
  }
  return 0;
}

bool WwMutex::TryTake(uintptr_t mine, bool more_waiters) {
  uintptr_t s = state_.load();
  while ((s & kLocked) == 0) {
    if (state_.compare_exchange_weak(s, mine | (more_waiters ? kWaiters : 0))) {
      return true;
    }
  }
  return false;
}

void WwMutex::SetWaitersFlag(bool waiters) {
  uintptr_t s = state_.load();
  while (!state_.compare_exchange_weak(s, waiters ? (s | kWaiters) : (s & ~kWaiters))) {
  }
}

// ww_mutex_lock_acquired(): bookkeeping by the new holder, after state_ names it.
void WwMutex::Acquired(WwAcquireCtx* ctx) {
  if (ctx == nullptr) {
    owner_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    return;
  }
  owner_thread_.store(ctx->owner_, std::memory_order_relaxed);  // validated: our thread
  // Only the owning thread writes acquired_; others just read it (no atomic RMW needed).
  ctx->acquired_.store(ctx->acquired_.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
  if (ctx->contended_ == this) ctx->contended_ = nullptr;
  held_prev_ = nullptr;
  held_next_ = ctx->held_head_;
  if (held_next_ != nullptr) held_next_->held_prev_ = this;
  ctx->held_head_ = this;
}

void WwMutex::Unlock() {
  const uintptr_t s = state_.load();
  if ((s & kLocked) == 0 ||
      owner_thread_.load(std::memory_order_relaxed) != std::this_thread::get_id()) {
    ReportMisuse(WwMisuse::kUnlockNotOwner, (s & kLocked) != 0
                                                ? "unlock of a mutex held by another thread"
                                                : "unlock of a free mutex");
    return;
  }
  if (WwAcquireCtx* ctx = CtxOf(s)) {
    if (held_prev_ != nullptr) {
      held_prev_->held_next_ = held_next_;
    } else {
      ctx->held_head_ = held_next_;
    }
    if (held_next_ != nullptr) held_next_->held_prev_ = held_prev_;
    held_prev_ = held_next_ = nullptr;
    ctx->acquired_.store(ctx->acquired_.load(std::memory_order_relaxed) - 1,
                         std::memory_order_relaxed);
  }
  owner_thread_.store(std::thread::id(), std::memory_order_relaxed);
  uintptr_t expected = s & ~kWaiters;
  if (state_.compare_exchange_strong(expected, 0)) {
    return;
  }
  UnlockSlow();
}

void WwMutex::UnlockSlow() {
  std::lock_guard lock(WaitLock());
  // kWaiters is set, so nobody else changes state_ without the wait lock: a plain store is
  // enough. The flag stays while anyone waits so that newcomers queue up behind it too.
  state_.store(waiters_ != nullptr ? kWaiters : 0);
  // Wake the first waiter; it is still on the list because leaving it needs the wait lock.
  if (waiters_ != nullptr) waiters_->parker->Unpark();
}

bool WwMutex::IsLocked() const {
  return (state_.load() & kLocked) != 0;
}

bool WwMutex::IsHeldByCurrentThread() const {
  return owner_thread_.load(std::memory_order_relaxed) == std::this_thread::get_id();
}

const WwAcquireCtx* WwMutex::holder_ctx() const {
  return CtxOf(state_.load());
}

int WwMutex::Kill(WwAcquireCtx* ctx) {
  if (ctx->acquired() == 0) return 0;
  ctx->contended_ = this;
  ++ctx->backoffs_;
  return -EDEADLK;
}

bool WwMutex::Die(Waiter* cur, WwAcquireCtx* ctx) {
  if (class_.algorithm() != WwAlgorithm::kWaitDie) return false;
  // Only the first context waiter can hold other locks (the others were told to die
  // already), so waking it is enough; it sees an older context ahead and backs off.
  if (cur->ctx->acquired() > 0 && Younger(cur->ctx, ctx)) cur->parker->Unpark();
  return true;
}

bool WwMutex::Wound(WwAcquireCtx* ww_ctx, WwAcquireCtx* hold_ctx) {
  // hold_ctx cannot go away: it holds this mutex and, with kWaiters set, unlocking it needs
  // the wait lock, which we hold.
  if (hold_ctx == nullptr) return false;
  if (ww_ctx->acquired() > 0 && Younger(hold_ctx, ww_ctx)) {
    hold_ctx->wounded_.store(true, std::memory_order_relaxed);
    // Wherever the holder sleeps, it must wake up and see the wound.
    if (hold_ctx->owner_ != std::this_thread::get_id()) hold_ctx->parker_.Unpark();
    return true;
  }
  return false;
}

void WwMutex::CheckWaiters(WwAcquireCtx* ctx) {
  for (Waiter* cur = waiters_; cur != nullptr; cur = NextWaiter(cur)) {
    if (cur->ctx == nullptr) continue;
    if (Die(cur, ctx) || Wound(cur->ctx, ctx)) break;
  }
}

int WwMutex::CheckKill(Waiter* w, WwAcquireCtx* ctx) {
  if (ctx->acquired() == 0) return 0;
  if (class_.algorithm() == WwAlgorithm::kWoundWait) {
    return ctx->wounded_.load(std::memory_order_relaxed) ? Kill(ctx) : 0;
  }
  const WwAcquireCtx* holder = CtxOf(state_.load());
  if (holder != nullptr && Younger(ctx, holder)) return Kill(ctx);
  // The list is stamp-ordered: any context waiter ahead of us is older.
  for (Waiter* cur = PrevWaiter(w); cur != nullptr; cur = PrevWaiter(cur)) {
    if (cur->ctx != nullptr) return Kill(ctx);
  }
  return 0;
}

int WwMutex::AddWaiter(Waiter* w, WwAcquireCtx* ctx) {
  Waiter* pos = nullptr;  // insert before this one; nullptr = at the tail
  if (ctx != nullptr) {
    const bool wait_die = class_.algorithm() == WwAlgorithm::kWaitDie;
    for (Waiter* cur = waiters_ != nullptr ? waiters_->prev : nullptr; cur != nullptr;
         cur = PrevWaiter(cur)) {
      if (cur->ctx == nullptr) continue;  // skipped so context-less waiters do not starve
      if (Younger(ctx, cur->ctx)) {
        // Wait-die: no point queueing behind an older context; we would die when it locks.
        if (wait_die) {
          if (int ret = Kill(ctx); ret != 0) return ret;
        }
        break;
      }
      pos = cur;
      Die(cur, ctx);  // wait-die: younger waiters behind us must die
    }
  }
  if (waiters_ == nullptr) {
    waiters_ = w->next = w->prev = w;
  } else {
    Waiter* before = pos != nullptr ? pos : waiters_;  // at the tail = before the head
    w->next = before;
    w->prev = before->prev;
    before->prev->next = w;
    before->prev = w;
    if (pos == waiters_) waiters_ = w;
  }
  // Wound-wait: blocking on a younger holder wounds it so that we can proceed.
  if (ctx != nullptr && class_.algorithm() == WwAlgorithm::kWoundWait) {
    Wound(ctx, CtxOf(state_.load()));
  }
  return 0;
}

void WwMutex::RemoveWaiter(Waiter* w) {
  if (w->next == w) {
    waiters_ = nullptr;
  } else {
    w->prev->next = w->next;
    w->next->prev = w->prev;
    if (waiters_ == w) waiters_ = w->next;
  }
  w->prev = w->next = nullptr;
}

WwMutex::Waiter* WwMutex::PrevWaiter(Waiter* w) const {
  return w == waiters_ ? nullptr : w->prev;
}

WwMutex::Waiter* WwMutex::NextWaiter(Waiter* w) const {
  return w->next == waiters_ ? nullptr : w->next;
}

std::mutex& WwMutex::WaitLock() const {
  // Striped wait locks (as futex hash buckets) keep WwMutex at 48 bytes: pools of 100k mutexes
  // stay cache- and TLB-friendly. At most one is held at a time, so sharing cannot deadlock.
  struct alignas(64) Stripe {
    std::mutex mu;
  };
  static Stripe stripes[256];
  const auto addr = reinterpret_cast<uintptr_t>(this);
  return stripes[(addr >> 4 ^ addr >> 12) % 256].mu;
}

}  // namespace sharegpu
