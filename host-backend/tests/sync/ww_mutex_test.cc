#include "sync/ww_mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <latch>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"

#include "sync_test_util.h"

namespace sharegpu {
namespace {

using testing::MisuseRecorder;
using testing::RunThreadsBounded;
using testing::WaitUntil;

TEST(WwMutexTest, LockUnlockTracksHolderAndAcquired) {
  WwClass cls("basic");
  WwMutex a(cls), b(cls);
  WwAcquireCtx ctx(cls);
  EXPECT_FALSE(a.IsLocked());
  ASSERT_EQ(a.Lock(&ctx), 0);
  ASSERT_EQ(b.Lock(&ctx), 0);
  EXPECT_TRUE(a.IsLocked());
  EXPECT_TRUE(a.IsHeldByCurrentThread());
  EXPECT_EQ(a.holder_ctx(), &ctx);
  EXPECT_EQ(ctx.acquired(), 2u);
  ctx.Done();
  a.Unlock();
  EXPECT_FALSE(a.IsLocked());
  EXPECT_EQ(a.holder_ctx(), nullptr);
  EXPECT_EQ(ctx.acquired(), 1u);
  b.Unlock();
  EXPECT_EQ(ctx.acquired(), 0u);
}

// Contexts that hold more than the inline slots grow their held array on the heap, and a thread
// reuses the largest one for its next context: holes from out-of-order unlocks, a reused array,
// a smaller context after a bigger one, and a leaked context with a reused array all keep exact
// bookkeeping. Also: the holder-thread id (read inline in optimized builds) is per thread.
TEST(WwMutexTest, ManyLocksReuseTheHeldArrayAcrossContexts) {
  MisuseRecorder rec;
  WwClass cls("many");
  std::deque<WwMutex> mus;  // WwMutex does not move
  for (int i = 0; i < 3000; ++i) mus.emplace_back(cls);
  for (int round = 0; round < 3; ++round) {
    const int n = round == 1 ? 40 : 3000;
    WwAcquireCtx ctx(cls);
    for (int i = 0; i < n; ++i) ASSERT_EQ(mus[i].Lock(&ctx), 0);
    EXPECT_EQ(ctx.acquired(), static_cast<unsigned>(n));
    EXPECT_EQ(mus[n / 2].Lock(&ctx), -EALREADY);
    // Every other one, then the rest backwards (holes, then trailing slots).
    for (int i = 0; i < n; i += 2) mus[i].Unlock();
    for (int i = 0; i < n; i += 4) ASSERT_EQ(mus[i].Lock(&ctx), 0);  // refill some holes
    for (int i = n - 1; i >= 0; --i) {
      if (i % 2 == 1 || i % 4 == 0) mus[i].Unlock();
    }
    EXPECT_EQ(ctx.acquired(), 0u);
    for (int i = 0; i < n; ++i) EXPECT_FALSE(mus[i].IsLocked()) << i;
  }
  {
    WwAcquireCtx leaked(cls);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(mus[i].Lock(&leaked), 0);
    for (int i = 0; i < 50; ++i) mus[i].Unlock();
  }
  EXPECT_EQ(rec.Take(), (std::vector<WwMisuse>{WwMisuse::kContextDestroyedHoldingLocks}));
  for (int i = 50; i < 100; ++i) {
    EXPECT_TRUE(mus[i].IsHeldByCurrentThread()) << i;
    EXPECT_EQ(mus[i].holder_ctx(), nullptr) << i;
  }
  std::thread([&] {
    for (int i = 50; i < 100; ++i) EXPECT_FALSE(mus[i].IsHeldByCurrentThread()) << i;
    WwAcquireCtx other(cls);
    for (int i = 100; i < 200; ++i) ASSERT_EQ(mus[i].Lock(&other), 0);
    for (int i = 100; i < 200; ++i) mus[i].Unlock();
  }).join();
  for (int i = 50; i < 100; ++i) mus[i].Unlock();
  EXPECT_TRUE(rec.Take().empty());
  for (int i = 0; i < 200; ++i) EXPECT_FALSE(mus[i].IsLocked()) << i;
}

TEST(WwMutexTest, StampsIncreaseSoLaterContextsAreYounger) {
  WwClass cls("stamps");
  WwAcquireCtx first(cls);
  WwAcquireCtx second(cls);
  EXPECT_LT(first.stamp(), second.stamp());
}

TEST(WwMutexTest, RelockInSameContextReturnsEalready) {
  WwClass cls("already");
  WwMutex a(cls);
  WwAcquireCtx ctx(cls);
  ASSERT_EQ(a.Lock(&ctx), 0);
  EXPECT_EQ(a.Lock(&ctx), -EALREADY);
  EXPECT_EQ(ctx.acquired(), 1u);  // not counted twice
  EXPECT_FALSE(a.TryLock(&ctx));
  a.Unlock();
  EXPECT_FALSE(a.IsLocked());
}

TEST(WwMutexTest, TryLockNeverWaits) {
  WwClass cls("trylock");
  WwMutex a(cls);
  ASSERT_TRUE(a.TryLock());
  std::thread([&] { EXPECT_FALSE(a.TryLock()); }).join();
  a.Unlock();
  std::thread([&] {
    WwAcquireCtx ctx(cls);
    EXPECT_TRUE(a.TryLock(&ctx));
    EXPECT_EQ(a.holder_ctx(), &ctx);
    a.Unlock();
  }).join();
}

// Without a context it is a plain sleeping lock: exclusion, and no -EDEADLK ever.
TEST(WwMutexTest, ContextlessLockExcludesAndSleeps) {
  WwClass cls("plain");
  WwMutex a(cls);
  int counter = 0;  // plain int: a broken exclusion is a TSan report and a wrong total
  RunThreadsBounded(4, [&](int) {
    for (int i = 0; i < 500; ++i) {
      ASSERT_EQ(a.Lock(nullptr), 0);
      EXPECT_EQ(a.holder_ctx(), nullptr);
      ++counter;
      a.Unlock();
    }
  });
  EXPECT_EQ(counter, 2000);
}

TEST(WwMutexTest, ContextlessWaiterAcquiresOnlyAfterRelease) {
  WwClass cls("plain-wait");
  WwMutex a(cls);
  ASSERT_EQ(a.Lock(nullptr), 0);
  std::atomic<bool> released{false};
  std::latch started(1);
  std::thread waiter([&] {
    started.count_down();
    ASSERT_EQ(a.Lock(nullptr), 0);
    EXPECT_TRUE(released.load());
    a.Unlock();
  });
  started.wait();
  released.store(true);
  a.Unlock();
  waiter.join();
}

// Wait-die: a younger context holding locks dies at once on an older holder.
TEST(WwMutexTest, WaitDieYoungerDiesOnOlderHolder) {
  WwClass cls("wd", WwAlgorithm::kWaitDie);
  WwMutex a(cls), b(cls);
  WwAcquireCtx old_ctx(cls);
  WwAcquireCtx young(cls);
  ASSERT_EQ(a.Lock(&old_ctx), 0);
  ASSERT_EQ(b.Lock(&young), 0);
  EXPECT_EQ(a.Lock(&young), -EDEADLK);  // same thread: it would hang if it waited
  EXPECT_EQ(young.contended(), &a);
  EXPECT_EQ(young.backoffs(), 1u);
  EXPECT_EQ(young.acquired(), 1u);
  b.Unlock();
  a.Unlock();
  ASSERT_EQ(a.LockSlow(&young), 0);
  EXPECT_EQ(young.contended(), nullptr);
  a.Unlock();
}

// Wait-die: the older context waits for a younger holder instead of dying.
TEST(WwMutexTest, WaitDieOlderWaitsForYoungerHolder) {
  WwClass cls("wd-old", WwAlgorithm::kWaitDie);
  WwMutex a(cls), b(cls);
  WwAcquireCtx old_ctx(cls);
  ASSERT_EQ(a.Lock(&old_ctx), 0);
  std::latch young_holds_b(1);
  std::atomic<bool> young_released{false};
  std::thread young_thread([&] {
    WwAcquireCtx young(cls);
    ASSERT_EQ(b.Lock(&young), 0);
    young_holds_b.count_down();
    young_released.store(true);
    b.Unlock();
  });
  young_holds_b.wait();
  ASSERT_EQ(b.Lock(&old_ctx), 0);
  EXPECT_TRUE(young_released.load());
  EXPECT_EQ(old_ctx.backoffs(), 0u);
  young_thread.join();
  b.Unlock();
  a.Unlock();
}

// Wait-die and wound-wait: a context holding nothing never dies, it just waits.
TEST(WwMutexTest, ContextWithoutLocksWaitsInsteadOfDying) {
  for (WwAlgorithm alg : {WwAlgorithm::kWaitDie, WwAlgorithm::kWoundWait}) {
    WwClass cls("nolocks", alg);
    WwMutex a(cls);
    WwAcquireCtx old_ctx(cls);
    ASSERT_EQ(a.Lock(&old_ctx), 0);
    std::latch started(1);
    std::atomic<bool> released{false};
    std::thread young_thread([&] {
      WwAcquireCtx young(cls);
      started.count_down();
      EXPECT_EQ(a.Lock(&young), 0);
      EXPECT_TRUE(released.load());
      EXPECT_EQ(young.backoffs(), 0u);
      a.Unlock();
    });
    started.wait();
    released.store(true);
    a.Unlock();
    young_thread.join();
  }
}

// Wound-wait: an older context blocking on a younger holder wounds it; the younger one, asleep
// on an unrelated mutex, wakes up with -EDEADLK, unwinds, and the older proceeds.
TEST(WwMutexTest, WoundWaitOlderWoundsSleepingYounger) {
  WwClass cls("ww");
  WwMutex a(cls), b(cls), c(cls);
  WwAcquireCtx old_ctx(cls);
  ASSERT_EQ(c.Lock(nullptr), 0);  // young will sleep on c, held without context
  std::latch young_holds_b(1);
  std::latch c_released(1);
  std::thread young_thread([&] {
    WwAcquireCtx young(cls);
    ASSERT_EQ(b.Lock(&young), 0);
    young_holds_b.count_down();
    EXPECT_EQ(c.Lock(&young), -EDEADLK);  // woken by the wound, not by c's release
    EXPECT_EQ(young.contended(), &c);
    EXPECT_TRUE(young.wounded());
    b.Unlock();
    c_released.wait();
    ASSERT_EQ(c.LockSlow(&young), 0);
    EXPECT_FALSE(young.wounded());  // reset once it held nothing
    ASSERT_EQ(b.Lock(&young), 0);   // waits for old without wounding it
    b.Unlock();
    c.Unlock();
  });
  young_holds_b.wait();
  ASSERT_EQ(a.Lock(&old_ctx), 0);
  ASSERT_EQ(b.Lock(&old_ctx), 0);  // only possible after young backed off: c is still held
  EXPECT_EQ(old_ctx.backoffs(), 0u);
  c.Unlock();
  c_released.count_down();
  b.Unlock();
  a.Unlock();
  young_thread.join();
}

// Wound-wait: a wounded context dies only on a Lock() that would wait; free mutexes still lock.
TEST(WwMutexTest, WoundedContextDiesOnlyWhenItWouldWait) {
  WwClass cls("ww-wounded");
  WwMutex a(cls), b(cls), d(cls);
  std::latch old_holds_a(1);
  std::latch young_holds_b(1);
  std::thread old_thread([&] {
    WwAcquireCtx ctx(cls);  // older: created before young (young waits for old_holds_a)
    ASSERT_EQ(a.Lock(&ctx), 0);
    old_holds_a.count_down();
    young_holds_b.wait();
    ASSERT_EQ(b.Lock(&ctx), 0);  // wounds young, then sleeps until young unwinds
    b.Unlock();
    a.Unlock();
  });
  old_holds_a.wait();
  WwAcquireCtx young(cls);
  ASSERT_EQ(b.Lock(&young), 0);
  young_holds_b.count_down();
  ASSERT_TRUE(WaitUntil([&] { return young.wounded(); }));
  EXPECT_EQ(d.Lock(&young), 0);         // free: no need to wait, so no need to die
  EXPECT_EQ(a.Lock(&young), -EDEADLK);  // held by old: would wait, so back off
  EXPECT_EQ(young.contended(), &a);
  d.Unlock();
  b.Unlock();
  ASSERT_EQ(a.LockSlow(&young), 0);  // sleeps until old is done
  a.Unlock();
  old_thread.join();
}

// The full protocol: -EDEADLK, unlock everything, LockSlow the contended mutex, retry.
TEST(WwMutexTest, UnwindLockSlowAndRetry) {
  for (WwAlgorithm alg : {WwAlgorithm::kWaitDie, WwAlgorithm::kWoundWait}) {
    WwClass cls("retry", alg);
    WwMutex a(cls), b(cls), c(cls);
    std::latch old_holds_a(1);
    std::latch young_holds_bc(1);
    std::latch young_died(1);
    std::atomic<bool> old_done{false};
    std::thread old_thread([&] {
      WwAcquireCtx old_ctx(cls);
      ASSERT_EQ(a.Lock(&old_ctx), 0);
      old_holds_a.count_down();
      young_holds_bc.wait();
      if (alg == WwAlgorithm::kWoundWait) {
        ASSERT_EQ(b.Lock(&old_ctx), 0);  // wounds young; it will back off from a
      } else {
        young_died.wait();
      }
      old_done.store(true);
      if (alg == WwAlgorithm::kWoundWait) b.Unlock();
      a.Unlock();
    });
    old_holds_a.wait();
    WwAcquireCtx young(cls);
    ASSERT_EQ(b.Lock(&young), 0);
    ASSERT_EQ(c.Lock(&young), 0);
    young_holds_bc.count_down();
    ASSERT_EQ(a.Lock(&young), -EDEADLK);
    young_died.count_down();
    c.Unlock();
    b.Unlock();
    ASSERT_EQ(a.LockSlow(&young), 0);
    EXPECT_TRUE(old_done.load());  // LockSlow waited for the older holder
    ASSERT_EQ(b.Lock(&young), 0);
    ASSERT_EQ(c.Lock(&young), 0);
    EXPECT_EQ(young.acquired(), 3u);
    EXPECT_EQ(young.backoffs(), 1u);
    young.Done();
    a.Unlock();
    b.Unlock();
    c.Unlock();
    old_thread.join();
  }
}

// --- Misuse: each is reported once and the call fails with -EINVAL and no effect. ---

// Class mixing and use from another thread are checked only with SGB_WW_DEBUG (debug and
// sanitizer builds; see ww_mutex.h): their tests exist only in those builds (make check runs
// them under TSan and ASan), instead of showing up as skips in the optimized one.

// Gets `young` into the "-EDEADLK pending" state on `a` while it still holds `b`.
void MakeDeadlockPending(WwMutex& a, WwMutex& b, WwAcquireCtx& old_ctx, WwAcquireCtx& young) {
  ASSERT_EQ(a.Lock(&old_ctx), 0);
  ASSERT_EQ(b.Lock(&young), 0);
  ASSERT_EQ(a.Lock(&young), -EDEADLK);
}

TEST(WwMutexTest, MisuseLockAfterDeadlockWithoutUnwind) {
  MisuseRecorder rec;
  WwClass cls("misuse1", WwAlgorithm::kWaitDie);
  WwMutex a(cls), b(cls), c(cls);
  WwAcquireCtx old_ctx(cls), young(cls);
  MakeDeadlockPending(a, b, old_ctx, young);
  EXPECT_EQ(c.Lock(&young), -EINVAL);
  EXPECT_FALSE(c.IsLocked());
  EXPECT_EQ(a.LockSlow(&young), -EINVAL);  // also not before unwinding
  EXPECT_EQ(a.holder_ctx(), &old_ctx);
  EXPECT_EQ(rec.Take(), (std::vector<WwMisuse>{WwMisuse::kLockAfterDeadlockWithoutUnwind,
                                               WwMisuse::kLockAfterDeadlockWithoutUnwind}));
  EXPECT_EQ(young.acquired(), 1u);
  b.Unlock();
  a.Unlock();
}

TEST(WwMutexTest, MisuseWrongLockAfterDeadlock) {
  MisuseRecorder rec;
  WwClass cls("misuse2", WwAlgorithm::kWaitDie);
  WwMutex a(cls), b(cls), c(cls);
  WwAcquireCtx old_ctx(cls), young(cls);
  MakeDeadlockPending(a, b, old_ctx, young);
  b.Unlock();
  a.Unlock();
  EXPECT_EQ(c.Lock(&young), -EINVAL);
  EXPECT_EQ(c.LockSlow(&young), -EINVAL);
  EXPECT_FALSE(c.TryLock(&young));
  EXPECT_FALSE(c.IsLocked());
  EXPECT_EQ(rec.Take(), (std::vector<WwMisuse>{WwMisuse::kWrongLockAfterDeadlock,
                                               WwMisuse::kWrongLockAfterDeadlock,
                                               WwMisuse::kWrongLockAfterDeadlock}));
  EXPECT_EQ(young.contended(), &a);  // still pending: the right lock is still required
  ASSERT_EQ(a.LockSlow(&young), 0);
  EXPECT_TRUE(rec.Take().empty());
  a.Unlock();
}

TEST(WwMutexTest, MisuseSlowWithoutDeadlock) {
  MisuseRecorder rec;
  WwClass cls("misuse3");
  WwMutex a(cls);
  WwAcquireCtx ctx(cls);
  EXPECT_EQ(a.LockSlow(&ctx), -EINVAL);
  EXPECT_EQ(a.LockSlow(nullptr), -EINVAL);
  EXPECT_FALSE(a.IsLocked());
  EXPECT_EQ(rec.Take(), (std::vector<WwMisuse>{WwMisuse::kSlowWithoutDeadlock,
                                               WwMisuse::kSlowWithoutDeadlock}));
}

TEST(WwMutexTest, MisuseLockAfterDone) {
  MisuseRecorder rec;
  WwClass cls("misuse4");
  WwMutex a(cls), b(cls);
  WwAcquireCtx ctx(cls);
  ASSERT_EQ(a.Lock(&ctx), 0);
  ctx.Done();
  EXPECT_EQ(b.Lock(&ctx), -EINVAL);
  EXPECT_FALSE(b.TryLock(&ctx));
  EXPECT_FALSE(b.IsLocked());
  EXPECT_EQ(ctx.acquired(), 1u);
  EXPECT_EQ(rec.Take(),
            (std::vector<WwMisuse>{WwMisuse::kLockAfterDone, WwMisuse::kLockAfterDone}));
  a.Unlock();
}

#if SGB_WW_DEBUG
TEST(WwMutexTest, MisuseClassMismatch) {
  MisuseRecorder rec;
  WwClass cls1("misuse5a"), cls2("misuse5b");
  WwMutex m(cls2);
  WwAcquireCtx ctx(cls1);
  EXPECT_EQ(m.Lock(&ctx), -EINVAL);
  EXPECT_FALSE(m.IsLocked());
  EXPECT_EQ(ctx.acquired(), 0u);
  EXPECT_EQ(rec.Take(), (std::vector<WwMisuse>{WwMisuse::kClassMismatch}));
}
#endif  // SGB_WW_DEBUG

TEST(WwMutexTest, MisuseUnlockNotOwner) {
  MisuseRecorder rec;
  WwClass cls("misuse6");
  WwMutex a(cls);
  a.Unlock();  // not locked at all
  WwAcquireCtx ctx(cls);
  ASSERT_EQ(a.Lock(&ctx), 0);
  std::thread([&] { a.Unlock(); }).join();  // locked, but by another thread
  EXPECT_TRUE(a.IsHeldByCurrentThread());
  EXPECT_EQ(a.holder_ctx(), &ctx);
  EXPECT_EQ(ctx.acquired(), 1u);
  EXPECT_EQ(rec.Take(),
            (std::vector<WwMisuse>{WwMisuse::kUnlockNotOwner, WwMisuse::kUnlockNotOwner}));
  a.Unlock();
  EXPECT_TRUE(rec.Take().empty());
}

TEST(WwMutexTest, MisuseContextDestroyedHoldingLocks) {
  MisuseRecorder rec;
  WwClass cls("misuse7");
  WwMutex a(cls);
  {
    WwAcquireCtx ctx(cls);
    ASSERT_EQ(a.Lock(&ctx), 0);
  }
  EXPECT_EQ(rec.Take(), (std::vector<WwMisuse>{WwMisuse::kContextDestroyedHoldingLocks}));
  // The leaked lock is detached from the dead context but stays held by this thread.
  EXPECT_TRUE(a.IsHeldByCurrentThread());
  EXPECT_EQ(a.holder_ctx(), nullptr);
  a.Unlock();
  EXPECT_TRUE(rec.Take().empty());
}

#if SGB_WW_DEBUG
TEST(WwMutexTest, MisuseContextUsedFromOtherThread) {
  MisuseRecorder rec;
  WwClass cls("misuse8");
  WwMutex a(cls);
  WwAcquireCtx ctx(cls);
  std::thread([&] {
    EXPECT_EQ(a.Lock(&ctx), -EINVAL);
    EXPECT_FALSE(a.TryLock(&ctx));
  }).join();
  EXPECT_FALSE(a.IsLocked());
  EXPECT_EQ(rec.Take(), (std::vector<WwMisuse>{WwMisuse::kContextUsedFromOtherThread,
                                               WwMisuse::kContextUsedFromOtherThread}));
}
#endif  // SGB_WW_DEBUG

// Issue 9, defect 10: inside QEMU a misuse must be logged loudly and fail the call, never kill
// the VM. With the default handler (no recorder installed), each misuse below returns its
// error, logs an error line naming the misuse, counts, and the process goes on. (Before the
// fix the default handler aborted: this test died at the first misuse.)
struct LogCapture {
  LogCapture() { SetLogSink(&LogCapture::Sink, this); }
  ~LogCapture() { SetLogSink(nullptr, nullptr); }
  static void Sink(void* opaque, LogLevel level, const char* msg) {
    auto* self = static_cast<LogCapture*>(opaque);
    std::lock_guard lock(self->mu);
    if (level >= LogLevel::kError) self->errors.emplace_back(msg);
  }
  std::vector<std::string> Take() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    out.swap(errors);
    return out;
  }
  std::mutex mu;
  std::vector<std::string> errors;
};

TEST(WwMutexTest, DefaultMisuseHandlerLogsAndFailsWithoutAborting) {
  SetWwMisuseHandler(nullptr);  // the default, as in QEMU
  LogCapture log;
  WwClass cls("misuse-default");
  WwMutex a(cls), b(cls);
  const uint64_t before = WwMisuseCount();

  a.Unlock();  // not locked
  EXPECT_FALSE(a.IsLocked());
  {
    WwAcquireCtx ctx(cls);
    EXPECT_EQ(a.LockSlow(&ctx), -EINVAL);  // no -EDEADLK pending
    EXPECT_FALSE(a.IsLocked());
    ASSERT_EQ(a.Lock(&ctx), 0);
    ctx.Done();
    EXPECT_EQ(b.Lock(&ctx), -EINVAL);  // after Done()
    EXPECT_FALSE(b.IsLocked());
    // Destroyed while holding `a`: reported, and `a` is detached from the dead context.
  }
  EXPECT_TRUE(a.IsHeldByCurrentThread());
  EXPECT_EQ(a.holder_ctx(), nullptr);
  a.Unlock();
  EXPECT_FALSE(a.IsLocked());

  EXPECT_EQ(WwMisuseCount() - before, 4u);
  const std::vector<std::string> lines = log.Take();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines[0].find(WwMisuseName(WwMisuse::kUnlockNotOwner)), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find(WwMisuseName(WwMisuse::kSlowWithoutDeadlock)), std::string::npos)
      << lines[1];
  EXPECT_NE(lines[2].find(WwMisuseName(WwMisuse::kLockAfterDone)), std::string::npos) << lines[2];
  EXPECT_NE(lines[3].find(WwMisuseName(WwMisuse::kContextDestroyedHoldingLocks)),
            std::string::npos)
      << lines[3];
  for (const std::string& line : lines) {
    EXPECT_NE(line.find("ww_mutex misuse"), std::string::npos) << line;
  }

  // Still usable afterwards.
  WwAcquireCtx ctx(cls);
  ASSERT_EQ(a.Lock(&ctx), 0);
  a.Unlock();
}

// Misuse can still be made fatal on purpose (a debugging session, a test that wants it).
TEST(WwMutexTest, FatalMisuseHandlerAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        SetWwMisuseHandler(&WwMisuseFatalHandler);
        WwClass cls("misuse-fatal");
        WwMutex a(cls);
        a.Unlock();
      },
      "");
}

TEST(WwMutexTest, MisuseNamesAreDistinct) {
  EXPECT_STRNE(WwMisuseName(WwMisuse::kUnlockNotOwner), WwMisuseName(WwMisuse::kLockAfterDone));
  EXPECT_STRNE(WwMisuseName(WwMisuse::kSlowWithoutDeadlock), "?");
}

}  // namespace
}  // namespace sharegpu
