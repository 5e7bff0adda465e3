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
    case WwMisuse::kLockAfterDeadlockWithoutUnwind: return "lock after -EDEADLK without unwind";
    case WwMisuse::kWrongLockAfterDeadlock: return "wrong lock after -EDEADLK";
    case WwMisuse::kSlowWithoutDeadlock: return "lock_slow without -EDEADLK";
    case WwMisuse::kLockAfterDone: return "lock after acquire done";
    case WwMisuse::kClassMismatch: return "ww_class mismatch";
    case WwMisuse::kUnlockNotOwner: return "unlock by non-owner";
    case WwMisuse::kContextDestroyedHoldingLocks: return "context destroyed holding locks";
    case WwMisuse::kContextUsedFromOtherThread: return "context used from another thread";
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
  cv_.wait(lock, [this]() SGPU_REQUIRES(mu_) { return token_; });
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
    std::lock_guard lock(m->mu_);
    m->owner_ctx_ = nullptr;
  }
  acquired_.store(0, std::memory_order_relaxed);
}

void WwAcquireCtx::Done() { done_ = true; }

struct WwMutex::Waiter {
  WwAcquireCtx* ctx;
  internal::WwParker* parker;
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
};

WwMutex::WwMutex(WwClass& ww_class) : class_(ww_class) {}

WwMutex::~WwMutex() {
  std::lock_guard lock(mu_);
  if (locked_ || waiters_head_ != nullptr) {
    Logf(LogLevel::kError, "ww_mutex (%s) destroyed while %s", class_.name().c_str(),
         waiters_head_ != nullptr ? "contended" : "held");
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
  std::lock_guard lock(mu_);
  if (locked_) return false;
  if (ctx != nullptr && ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  TakeLocked(ctx);
  if (ctx != nullptr) CheckWaiters(ctx);
  return true;
}

int WwMutex::LockCommon(WwAcquireCtx* ctx) {
  std::unique_lock lock(mu_);
  if (ctx != nullptr) {
    if (owner_ctx_ == ctx) return -EALREADY;
    // Nobody can wound a context that holds nothing, so this cannot race with a wound.
    if (ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  }
  if (!locked_) {
    TakeLocked(ctx);
    if (ctx != nullptr) CheckWaiters(ctx);
    return 0;
  }

  internal::WwParker local_parker;  // context-less waiters cannot be wounded: park locally
  Waiter waiter{ctx, ctx != nullptr ? &ctx->parker_ : &local_parker};
  if (int ret = AddWaiter(&waiter, ctx); ret != 0) return ret;
  for (;;) {
    if (!locked_) break;
    if (ctx != nullptr) {
      // Only while the mutex is held by someone else: its unlock wakes the next waiter, so
      // leaving the list here cannot strand the others.
      if (int ret = CheckKill(&waiter, ctx); ret != 0) {
        RemoveWaiter(&waiter);
        return ret;
      }
    }
    lock.unlock();
    waiter.parker->Park();
    lock.lock();
  }
  const bool first = waiters_head_ == &waiter;
  RemoveWaiter(&waiter);
  TakeLocked(ctx);
  // Wound-wait: we overtook waiters that may be older than us; they may need to wound us.
  if (ctx != nullptr && class_.algorithm() == WwAlgorithm::kWoundWait && !first) {
    CheckWaiters(ctx);
  }
  return 0;
}

void WwMutex::TakeLocked(WwAcquireCtx* ctx) {
  locked_ = true;
  owner_thread_ = std::this_thread::get_id();
  if (ctx == nullptr) return;
  owner_ctx_ = ctx;
  ctx->acquired_.fetch_add(1, std::memory_order_relaxed);
  if (ctx->contended_ == this) ctx->contended_ = nullptr;
  held_prev_ = nullptr;
  held_next_ = ctx->held_head_;
  if (held_next_ != nullptr) held_next_->held_prev_ = this;
  ctx->held_head_ = this;
}

void WwMutex::Unlock() {
  std::lock_guard lock(mu_);
  if (!locked_ || owner_thread_ != std::this_thread::get_id()) {
    ReportMisuse(WwMisuse::kUnlockNotOwner,
                 locked_ ? "unlock of a mutex held by another thread" : "unlock of a free mutex");
    return;
  }
  if (WwAcquireCtx* ctx = owner_ctx_) {
    if (held_prev_ != nullptr) {
      held_prev_->held_next_ = held_next_;
    } else {
      ctx->held_head_ = held_next_;
    }
    if (held_next_ != nullptr) held_next_->held_prev_ = held_prev_;
    held_prev_ = held_next_ = nullptr;
    ctx->acquired_.fetch_sub(1, std::memory_order_relaxed);
    owner_ctx_ = nullptr;
  }
  locked_ = false;
  owner_thread_ = std::thread::id();
  // Wake the first waiter; it is still on the list because leaving it needs mu_.
  if (waiters_head_ != nullptr) waiters_head_->parker->Unpark();
}

bool WwMutex::IsLocked() const {
  std::lock_guard lock(mu_);
  return locked_;
}

bool WwMutex::IsHeldByCurrentThread() const {
  std::lock_guard lock(mu_);
  return locked_ && owner_thread_ == std::this_thread::get_id();
}

const WwAcquireCtx* WwMutex::holder_ctx() const {
  std::lock_guard lock(mu_);
  return owner_ctx_;
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
  // hold_ctx cannot go away: it holds this mutex and unlocking it needs mu_, which we hold.
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
  for (Waiter* cur = waiters_head_; cur != nullptr; cur = cur->next) {
    if (cur->ctx == nullptr) continue;
    if (Die(cur, ctx) || Wound(cur->ctx, ctx)) break;
  }
}

int WwMutex::CheckKill(Waiter* w, WwAcquireCtx* ctx) {
  if (ctx->acquired() == 0) return 0;
  if (class_.algorithm() == WwAlgorithm::kWoundWait) {
    return ctx->wounded_.load(std::memory_order_relaxed) ? Kill(ctx) : 0;
  }
  if (owner_ctx_ != nullptr && Younger(ctx, owner_ctx_)) return Kill(ctx);
  // The list is stamp-ordered: any context waiter ahead of us is older.
  for (Waiter* cur = w->prev; cur != nullptr; cur = cur->prev) {
    if (cur->ctx != nullptr) return Kill(ctx);
  }
  return 0;
}

int WwMutex::AddWaiter(Waiter* w, WwAcquireCtx* ctx) {
  Waiter* pos = nullptr;  // insert before this one; nullptr = at the tail
  if (ctx != nullptr) {
    const bool wait_die = class_.algorithm() == WwAlgorithm::kWaitDie;
    for (Waiter* cur = waiters_tail_; cur != nullptr; cur = cur->prev) {
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
  w->next = pos;
  w->prev = pos != nullptr ? pos->prev : waiters_tail_;
  if (w->prev != nullptr) {
    w->prev->next = w;
  } else {
    waiters_head_ = w;
  }
  if (pos != nullptr) {
    pos->prev = w;
  } else {
    waiters_tail_ = w;
  }
  // Wound-wait: blocking on a younger holder wounds it so that we can proceed.
  if (ctx != nullptr && class_.algorithm() == WwAlgorithm::kWoundWait) Wound(ctx, owner_ctx_);
  return 0;
}

void WwMutex::RemoveWaiter(Waiter* w) {
  if (w->prev != nullptr) {
    w->prev->next = w->next;
  } else {
    waiters_head_ = w->next;
  }
  if (w->next != nullptr) {
    w->next->prev = w->prev;
  } else {
    waiters_tail_ = w->prev;
  }
  w->prev = w->next = nullptr;
}

}  // namespace sharegpu
