#include "sync/ww_mutex.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__GLIBC__) && __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define SGB_WW_RSEQ 1
#endif

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <utility>

#include "common/log.h"

namespace sharegpu {
namespace {

std::atomic<uint64_t> g_misuse_count{0};

// Issue 9, defect 10: the backend runs inside QEMU, where a misuse must be reported loudly
// and fail the call (-EINVAL, no effect), never take the VM down.
void DefaultMisuseHandler(WwMisuse misuse, const char* detail) {
  Logf(LogLevel::kError,
       "ww_mutex misuse (%s): %s -- a bug in the caller; the call fails with -EINVAL "
       "(misuse #%llu in this process)",
       WwMisuseName(misuse), detail,
       static_cast<unsigned long long>(g_misuse_count.load(std::memory_order_relaxed)));
}

std::atomic<WwMisuseHandler> g_misuse_handler{&DefaultMisuseHandler};

void ReportMisuse(WwMisuse misuse, const char* detail) {
  g_misuse_count.fetch_add(1, std::memory_order_relaxed);
  g_misuse_handler.load(std::memory_order_acquire)(misuse, detail);
}

// __ww_ctx_less(): true when `a` is younger (bigger stamp) than `b`, i.e. `a` yields.
bool Younger(const WwAcquireCtx* a, const WwAcquireCtx* b) {
  return static_cast<int64_t>(a->stamp() - b->stamp()) > 0;
}

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

#if defined(__x86_64__)
// The spin bounds and the hand-off clock are read on every contended lock and unlock: the
// TSC (a few ns) instead of clock_gettime() (~27 ns on the CI kind of VM). Its rate is
// measured once against steady_clock (both run in real time, so a preemption during the
// measurement does not skew the ratio).
struct TscScale {
  TscScale() {
    const int64_t ns0 = SteadyNs();
    const uint64_t t0 = __builtin_ia32_rdtsc();
    int64_t ns1 = ns0;
    while (ns1 - ns0 < 50'000) ns1 = SteadyNs();
    const uint64_t t1 = __builtin_ia32_rdtsc();
    const double ticks_per_ns = static_cast<double>(t1 - t0) / static_cast<double>(ns1 - ns0);
    ns_per_tick_q32 = ticks_per_ns > 0.01 ? static_cast<uint64_t>(4294967296.0 / ticks_per_ns)
                                          : (uint64_t{1} << 32);
  }
  uint64_t ns_per_tick_q32;  // ns per tick, 32.32 fixed point
};

int64_t NowNs() {
  static const TscScale scale;
  const unsigned __int128 ns =
      static_cast<unsigned __int128>(__builtin_ia32_rdtsc()) * scale.ns_per_tick_q32;
  return static_cast<int64_t>(ns >> 32);
}
#else
int64_t NowNs() {
  return SteadyNs();
}
#endif

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// The fast paths (an uncontended Lock() and Unlock()) record who holds the mutex for the misuse
// checks and for spinners. Both reads below used to be calls into libc through the PLT
// (pthread_self() twice and sched_getcpu() once per lock/unlock pair). In ww_bench's
// 800-of-100k case these calls, the out-of-line helpers and their stack frames were about a
// third of the uncontended time (docs/performance.md, "The uncontended path").
[[gnu::always_inline]] inline int CurrentCpu() {
#if defined(SGB_WW_RSEQ)
  // glibc (2.35+) registers rseq for every thread; the kernel keeps cpu_id current there. This
  // is what sched_getcpu() reads, without the call.
  if (__rseq_size > 0) {
    const auto* rs = reinterpret_cast<const volatile struct rseq*>(
        static_cast<const char*>(__builtin_thread_pointer()) + __rseq_offset);
    const int cpu = static_cast<int>(rs->cpu_id);
    if (cpu >= 0) return cpu;
  }
#endif
  return sched_getcpu();
}

// std::this_thread::get_id() is pthread_self(), an out-of-line libc call. On x86-64 glibc,
// pthread_self() is the thread pointer (the TCB's self field, which equals %fs:0), so optimized
// builds read that inline. The mutex only compares these ids with each other (owner_thread_
// is never handed out), so all it needs is an id that is non-zero and unique among live
// threads, which the thread pointer is. Debug and sanitizer builds keep the library call.
[[gnu::always_inline]] inline std::thread::id SelfId() {
#if !SGB_WW_DEBUG && defined(__x86_64__) && defined(__GLIBC__) && defined(__GLIBCXX__)
  return std::thread::id(reinterpret_cast<pthread_t>(__builtin_thread_pointer()));
#else
  return std::this_thread::get_id();
#endif
}

// "Is the holder running?" (the kernel's owner->on_cpu) for spinners, without touching the
// holder's context (which may be gone by the time we look): a thread parked in a WwMutex
// counts itself in the slot of its thread id. A collision only ends a spin early.
struct alignas(64) SleepSlot {
  std::atomic<uint32_t> parked{0};
};
SleepSlot g_sleep_slots[64];

SleepSlot& SleepSlotOf(std::thread::id id) {
  return g_sleep_slots[std::hash<std::thread::id>{}(id) % 64];
}

// Spin limits: never longer than a sleep and a wake-up cost (tens of microseconds on the CI
// kind of VM); within that, twice the running average of successful spins plus a minimum.
// (No sched_yield() between looks: a yielding spinner is not queued, and on a busy machine a
// yield can take milliseconds while newcomers overtake it.)
constexpr int64_t kMaxSpinNs = 20'000;
constexpr int64_t kMinSpinNs = 500;
// A queued waiter yields its CPU for up to this long before it sleeps on its futex: the holder
// it waits for is often a runnable thread that was preempted (more threads than CPUs), and a
// yield lets it run without the cost of a sleep and of the unlocker's wake-up system call
// (Unpark() makes no system call for a waiter that is not asleep). Still queued, so the
// hand-off reaches it as well. Measured on the 2-vCPU CI kind with ww_bench's contention
// case: waiters that sleep at once are 5-10x slower there, because a vCPU whose threads all
// sleep halts and each wake-up then costs tens of microseconds.
constexpr int64_t kYieldNs = 100'000;

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

void FutexWakeOne(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr,
          0);
}

// A context that takes more than WwAcquireCtx::kInlineHeld locks grows its held array on the
// heap, doubling (for 800 locks: 7 allocations, frees and copies per context, about 1 % of
// ww_bench's 800-lock case in its profile). Each thread keeps the largest array its contexts
// used, up to kMaxSpareHeld slots, for its next context; freed at thread exit. Only the cold
// paths (growth, and destroying a context with a heap array) touch it.
constexpr unsigned kMaxSpareHeld = 4096;  // 32 KiB
struct SpareHeld {
  WwMutex** array = nullptr;
  unsigned cap = 0;
  ~SpareHeld() { delete[] array; }
};
thread_local SpareHeld t_spare_held;

WwMutex** TakeHeldArray(unsigned want, unsigned* cap) {
  SpareHeld& spare = t_spare_held;
  if (spare.cap >= want) {
    *cap = spare.cap;
    spare.cap = 0;
    return std::exchange(spare.array, nullptr);
  }
  *cap = want;
  return new WwMutex*[want];
}

void ReleaseHeldArray(WwMutex** array, unsigned cap) {
  SpareHeld& spare = t_spare_held;
  if (cap > spare.cap && cap <= kMaxSpareHeld) {
    std::swap(spare.array, array);
    spare.cap = cap;
  }
  delete[] array;
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

void WwMisuseFatalHandler(WwMisuse misuse, const char* detail) {
  Logf(LogLevel::kError, "ww_mutex misuse (%s): %s -- fatal (WwMisuseFatalHandler)",
       WwMisuseName(misuse), detail);
  std::abort();
}

uint64_t WwMisuseCount() {
  return g_misuse_count.load(std::memory_order_relaxed);
}

WwClass::WwClass(std::string name, WwAlgorithm algorithm, std::chrono::nanoseconds handoff_after)
    : name_(std::move(name)), algorithm_(algorithm), handoff_ns_(handoff_after.count()) {}

WwClass::Stats WwClass::stats() const {
  Stats s;
  s.spins_won = spins_won_.load(std::memory_order_relaxed);
  s.spins_lost = spins_lost_.load(std::memory_order_relaxed);
  s.sleeps = sleeps_.load(std::memory_order_relaxed);
  s.handoffs = handoffs_.load(std::memory_order_relaxed);
  return s;
}

namespace internal {

// As Rust's futex parker: kEmpty -> kParked (sleeping) or kNotified -> kEmpty (token taken).
void WwParker::Park() {
  if (state_.fetch_sub(1, std::memory_order_acquire) == kNotified) return;
  for (;;) {
    FutexWait(&state_, kParked);
    uint32_t expected = kNotified;
    if (state_.compare_exchange_strong(expected, kEmpty, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
      return;
    }
    // Spurious wake-up: still kParked.
  }
}

bool WwParker::TryConsume() {
  uint32_t expected = kNotified;
  return state_.compare_exchange_strong(expected, kEmpty, std::memory_order_acquire,
                                        std::memory_order_relaxed);
}

void WwParker::Unpark() {
  if (state_.exchange(kNotified, std::memory_order_release) == kParked) FutexWakeOne(&state_);
}

}  // namespace internal

WwAcquireCtx::WwAcquireCtx(WwClass& ww_class)
    : class_(ww_class),
      stamp_(ww_class.NextStamp()),
#if SGB_WW_DEBUG
      owner_(std::this_thread::get_id()),
#endif
      held_(held_inline_) {
}

WwAcquireCtx::~WwAcquireCtx() {
  if (acquired() != 0) {
    ReportMisuse(WwMisuse::kContextDestroyedHoldingLocks, "~WwAcquireCtx with locks held");
    // Detach the leaked locks so that no mutex names this dead context (waiters would read
    // it); they stay held by this thread as context-less locks and can still be unlocked.
    for (unsigned i = 0; i < held_used_; ++i) {
      WwMutex* m = held_[i];
      if (m == nullptr) continue;
      std::lock_guard lock(m->WaitLock());  // waiters read the holder's context under it
      uintptr_t s = m->state_.load();
      while (!m->state_.compare_exchange_weak(s, s & WwMutex::kFlags, std::memory_order_acq_rel)) {
      }
    }
    acquired_.store(0, std::memory_order_relaxed);
  }
  if (held_ != held_inline_) ReleaseHeldArray(held_, held_cap_);
}

// HeldPush, HeldRemove, Acquired and LockCommon are forced inline: they are the uncontended
// path, and as calls (with their frames) they cost about as much as the compare-exchange.
[[gnu::always_inline]] inline void WwAcquireCtx::HeldPush(WwMutex* m) {
  if (held_used_ == held_cap_) [[unlikely]] [&]() __attribute__((noinline, cold)) {
    const unsigned live = acquired_.load(std::memory_order_relaxed);  // m not counted yet
    if (live <= held_cap_ / 2) {
      // Compact in place (a sliding window of locks leaves holes at the front).
      unsigned n = 0;
      for (unsigned i = 0; i < held_used_; ++i) {
        if (WwMutex* h = held_[i]) {
          h->held_slot_ = n;
          held_[n++] = h;
        }
      }
      held_used_ = n;
    } else {
      unsigned cap = 0;
      WwMutex** bigger = TakeHeldArray(held_cap_ * 2, &cap);
      std::copy(held_, held_ + held_used_, bigger);
      if (held_ != held_inline_) ReleaseHeldArray(held_, held_cap_);
      held_ = bigger;
      held_cap_ = cap;
    }
  }();
  m->held_slot_ = held_used_;
  held_[held_used_++] = m;
}

[[gnu::always_inline]] inline void WwAcquireCtx::HeldRemove(WwMutex* m) {
  held_[m->held_slot_] = nullptr;
  if (acquired_.load(std::memory_order_relaxed) == 0) {
    held_used_ = 0;
  } else {
    while (held_used_ > 0 && held_[held_used_ - 1] == nullptr) --held_used_;
  }
}

void WwAcquireCtx::Done() {
  done_ = true;
}

static_assert(alignof(WwAcquireCtx) > 2, "WwMutex::state_ keeps flags in the low bits");

// The wait list is circular (waiters_->prev is the tail) to keep WwMutex small.
struct WwMutex::Waiter {
  WwAcquireCtx* ctx;
  internal::WwParker* parker;
  int64_t since_ns;  // when it queued: the hand-off clock
  // Set under the wait lock. handed: UnlockSlow() took it off the list and made it the holder
  // (state_ names it already). woken: it has been unparked since it last went to sleep, so
  // another unlock need not wake it again.
  bool handed = false;
  bool woken = false;
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
#if SGB_WW_DEBUG
  if (ctx->owner_ != std::this_thread::get_id()) {
    ReportMisuse(WwMisuse::kContextUsedFromOtherThread, "acquire context used by another thread");
    return false;
  }
  if (&ctx->class_ != &class_) {
    ReportMisuse(WwMisuse::kClassMismatch, "context and mutex belong to different WwClass");
    return false;
  }
#endif
  if (ctx->done_) {
    ReportMisuse(WwMisuse::kLockAfterDone, "lock after WwAcquireCtx::Done()");
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
  // Without debug checks, ValidateCtx(ctx, false) can only fail when done_ or contended_ is set.
  if (ctx != nullptr && (kWwDebugChecks || ctx->done_ || ctx->contended_ != nullptr) &&
      !ValidateCtx(ctx, /*slow=*/false)) {
    return -EINVAL;
  }
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
  // acq_rel: installing our context publishes it to waiters (see state_ in the header).
  if (!state_.compare_exchange_strong(expected, mine, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
    return false;
  }
  if (ctx != nullptr && ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  Acquired(ctx);
  return true;
}

[[gnu::always_inline]] inline int WwMutex::LockCommon(WwAcquireCtx* ctx) {
  const uintptr_t mine = reinterpret_cast<uintptr_t>(ctx) | kLocked;
  // Nobody can wound a context that holds nothing, so this cannot race with a wound.
  if (ctx != nullptr && ctx->acquired() == 0) {
    ctx->wounded_.store(false, std::memory_order_relaxed);
  }
  // Fast path: free and nobody waiting (so nobody to wound or kill): one compare-exchange,
  // without reading the mutex first (a read then a write would fetch a contended line twice).
  uintptr_t s = 0;
  if (state_.compare_exchange_strong(s, mine, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
    Acquired(ctx);
    return 0;
  }
  // Only ctx's own thread (this one) ever stores ctx into state_, so this is exact.
  if (ctx != nullptr && CtxOf(s) == ctx) return -EALREADY;
  return LockContended(ctx, mine);
}

bool WwMutex::HolderLooksRunning() const {
  const int cpu = owner_cpu_.load(std::memory_order_relaxed);
  if (cpu >= 0 && cpu == CurrentCpu()) return false;  // it was last seen where we run now
  const std::thread::id holder = owner_thread_.load(std::memory_order_relaxed);
  return holder == std::thread::id() ||  // handed over or being released: about to change
         SleepSlotOf(holder).parked.load(std::memory_order_relaxed) == 0;
}

// mutex_optimistic_spin() / ww_mutex_spin_on_owner(): wait for the holder to release while it
// is running, instead of sleeping (a sleep and a wake-up cost far more than a short hold).
// The spin is bounded (adaptively, per class), so deadlock detection is only deferred: a
// context in a cycle gives up its spin and goes through the wait list, where it wounds or
// dies. It stops early when this context is wounded (it must back off, which the slow path
// does) and when the holder looks asleep. It takes the mutex whenever it finds it free,
// whether or not waiters are queued (kWaiters) and whether or not this context holds other
// locks. Free with waiters queued means the first waiter was not yet due a hand-off (an
// unlock that finds it due hands the mutex over and never leaves it free), so this barging
// is bounded by WwClass::handoff_after(). Overtaking an older queued context is allowed: when
// the spinner took it from a state with waiters, the caller checks them under the wait lock
// (ww_mutex_set_context_fastpath()), so an older waiter wounds us (wound-wait) or a younger
// one dies (wait-die) as it does for any holder. (The kernel is stricter: a newcomer does
// not spin at all while waiters are queued, and a context holding locks does not spin on a
// context holder. This code does not restrict that; whether doing so would help the
// high-contention case has not been measured.)
// Returns true with the mutex taken; *taken_from is the state it was taken from.
bool WwMutex::SpinOnOwner(WwAcquireCtx* ctx, uintptr_t mine, uintptr_t* taken_from) {

  const int64_t avg = class_.spin_avg_ns_.load(std::memory_order_relaxed);
  const int64_t limit = std::clamp<int64_t>(2 * avg + kMinSpinNs, kMinSpinNs, kMaxSpinNs);
  const int64_t start = NowNs();
  int64_t now = start;
  for (unsigned i = 1;; ++i) {
    uintptr_t s = state_.load(std::memory_order_relaxed);
    if ((s & kLocked) == 0) {
      if (state_.compare_exchange_weak(s, s | mine, std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
        *taken_from = s;
        const int64_t took = NowNs() - start;
        class_.spin_avg_ns_.store(avg + (took - avg) / 8, std::memory_order_relaxed);
        class_.spins_won_.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      continue;
    }
    if (ctx != nullptr && ctx->wounded_.load(std::memory_order_relaxed) && ctx->acquired() > 0) {
      break;
    }
    if ((i & 15) == 1 && !HolderLooksRunning()) break;
    CpuRelax();
    if ((i & 15) == 0) {
      now = NowNs();
      if (now - start > limit) break;
    }
  }
  // Failed: pull the average towards what we spent, so that hopeless spins shrink the limit
  // only when the successful ones are short too.
  now = NowNs();
  class_.spin_avg_ns_.store(avg + (std::min(now - start, limit) - 2 * avg) / 8,
                            std::memory_order_relaxed);
  class_.spins_lost_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

int WwMutex::LockContended(WwAcquireCtx* ctx, uintptr_t mine) {
  uintptr_t taken_from = 0;
  if (SpinOnOwner(ctx, mine, &taken_from)) {
    Acquired(ctx);
    if (ctx != nullptr && (taken_from & kWaiters) != 0) {
      // We overtook queued waiters: those that must wound us or die learn it now.
      std::lock_guard lock(WaitLock());
      CheckWaiters(ctx);
    }
    return 0;
  }

  std::unique_lock lock(WaitLock());
  // Take it if it is free (barging: the first waiter was not yet due a hand-off when it was
  // released, and may not have run since), otherwise announce a waiter so that the holder
  // cannot release it, or vanish, without taking the wait lock.
  for (uintptr_t s = state_.load();;) {
    if ((s & kLocked) == 0) {
      if (state_.compare_exchange_weak(s, mine | (waiters_ != nullptr ? kWaiters : 0),
                                       std::memory_order_acq_rel)) {
        Acquired(ctx);
        if (ctx != nullptr) CheckWaiters(ctx);
        return 0;
      }
    } else if ((s & kWaiters) != 0 ||
               state_.compare_exchange_weak(s, s | kWaiters, std::memory_order_acq_rel)) {
      break;
    }
  }

  internal::WwParker local_parker;  // context-less waiters cannot be wounded: park locally
  Waiter waiter{ctx, ctx != nullptr ? &ctx->parker_ : &local_parker, NowNs()};
  if (int ret = AddWaiter(&waiter, ctx); ret != 0) {
    if (waiters_ == nullptr) SetWaitersFlag(false);
    return ret;
  }
  SleepSlot& slot = SleepSlotOf(SelfId());
  bool first = true;  // whether we were the first waiter when we got it
  for (;;) {
    if (waiter.handed) break;  // UnlockSlow() took us off the list and made us the holder
    const bool others = waiters_ != &waiter || waiter.next != &waiter;
    if (TryTake(mine, others)) {
      first = waiters_ == &waiter;
      RemoveWaiter(&waiter);
      break;
    }
    if (ctx != nullptr) {
      // Only while the mutex is held by someone else: its unlock wakes the next waiter, so
      // leaving the list here cannot strand the others.
      if (int ret = CheckKill(&waiter, ctx); ret != 0) {
        RemoveWaiter(&waiter);
        if (waiters_ == nullptr) SetWaitersFlag(false);
        return ret;
      }
    }
    waiter.woken = false;
    lock.unlock();
    slot.parked.fetch_add(1, std::memory_order_relaxed);  // spinners: this thread waits
    for (const int64_t until = NowNs() + kYieldNs;;) {
      if (waiter.parker->TryConsume()) break;
      if (NowNs() > until) {
        class_.sleeps_.fetch_add(1, std::memory_order_relaxed);
        waiter.parker->Park();
        break;
      }
      sched_yield();
    }
    slot.parked.fetch_sub(1, std::memory_order_relaxed);
    lock.lock();
  }
  Acquired(ctx);
  // Wound-wait: we overtook waiters that may be older than us; they may need to wound us.
  // (A hand-off goes to the first waiter, which overtook nobody.)
  if (ctx != nullptr && class_.algorithm() == WwAlgorithm::kWoundWait && !first) {
    CheckWaiters(ctx);
  }
  return 0;
}

bool WwMutex::TryTake(uintptr_t mine, bool more_waiters) {
  uintptr_t s = state_.load();
  while ((s & kLocked) == 0) {
    if (state_.compare_exchange_weak(s, mine | (more_waiters ? kWaiters : 0),
                                     std::memory_order_acq_rel)) {
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
[[gnu::always_inline]] inline void WwMutex::Acquired(WwAcquireCtx* ctx) {
  owner_thread_.store(SelfId(), std::memory_order_relaxed);
  owner_cpu_.store(CurrentCpu(), std::memory_order_relaxed);
  if (ctx == nullptr) return;
  // Only the owning thread writes acquired_; others just read it (no atomic RMW needed).
  ctx->HeldPush(this);
  ctx->acquired_.store(ctx->acquired_.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
  if (ctx->contended_ == this) ctx->contended_ = nullptr;
}

void WwMutex::Unlock() {
  const uintptr_t s = state_.load(std::memory_order_relaxed);
  if ((s & kLocked) == 0 ||
      owner_thread_.load(std::memory_order_relaxed) != SelfId()) {
    ReportMisuse(WwMisuse::kUnlockNotOwner, (s & kLocked) != 0
                                                ? "unlock of a mutex held by another thread"
                                                : "unlock of a free mutex");
    return;
  }
  if (WwAcquireCtx* ctx = CtxOf(s)) {  // our own context: the owner check above
    ctx->acquired_.store(ctx->acquired_.load(std::memory_order_relaxed) - 1,
                         std::memory_order_relaxed);
    ctx->HeldRemove(this);
  }
  owner_thread_.store(std::thread::id(), std::memory_order_relaxed);
  owner_cpu_.store(-1, std::memory_order_relaxed);
  // acq_rel, not just release: a waiter that read our context under the wait lock (stamp,
  // wound) and then left the list clears kWaiters without our taking the wait lock; its
  // clearing is what this compare-exchange reads, and the acquire orders those reads before
  // our context's destruction. (The reverted first attempt made this a release: that was the
  // ThreadSanitizer race in the wait-die and wound-wait stress tests.)
  uintptr_t expected = s & ~kWaiters;
  if (state_.compare_exchange_strong(expected, 0, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
    return;
  }
  UnlockSlow();
}

void WwMutex::UnlockSlow() {
  std::lock_guard lock(WaitLock());
  // kWaiters is set, so nobody else changes state_ without the wait lock: a plain store is
  // enough. The first waiter is still on the list because leaving it needs the wait lock.
  Waiter* first = waiters_;
  if (first == nullptr) {
    state_.store(0, std::memory_order_release);
    return;
  }
  if (NowNs() - first->since_ns >= class_.handoff_ns_) {
    // Hand-off: the first waiter has waited long enough; it becomes the holder right here, so
    // no newcomer can overtake it again. It finds `handed` set when it takes the wait lock,
    // which it must do before it can return (so the waiter and its context outlive this).
    RemoveWaiter(first);
    first->handed = true;
    state_.store(reinterpret_cast<uintptr_t>(first->ctx) | kLocked |
                     (waiters_ != nullptr ? kWaiters : 0),
                 std::memory_order_release);
    class_.handoffs_.fetch_add(1, std::memory_order_relaxed);
  } else {
    // Free, with the flag kept while anyone waits so that newcomers see the waiters (they may
    // still barge until the first waiter is due).
    state_.store(kWaiters, std::memory_order_release);
  }
  if (!first->woken) {
    first->woken = true;
    first->parker->Unpark();
  }
}

bool WwMutex::IsLocked() const {
  return (state_.load() & kLocked) != 0;
}

bool WwMutex::IsHeldByCurrentThread() const {
  return owner_thread_.load(std::memory_order_relaxed) == SelfId();
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
    // Wherever the holder sleeps, it must wake up and see the wound. (If it is a context of
    // this thread, the token only makes its next Park() return early: harmless.)
    hold_ctx->parker_.Unpark();
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
  // Striped wait locks (as futex hash buckets) keep WwMutex at 40 bytes: pools of 100k mutexes
  // stay cache- and TLB-friendly. At most one is held at a time, so sharing cannot deadlock.
  struct alignas(64) Stripe {
    std::mutex mu;
  };
  static Stripe stripes[256];
  const auto addr = reinterpret_cast<uintptr_t>(this);
  return stripes[(addr >> 4 ^ addr >> 12) % 256].mu;
}

}  // namespace sharegpu
