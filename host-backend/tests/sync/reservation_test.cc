#include "sync/reservation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "sync_test_util.h"

namespace sharegpu {
namespace {

using namespace std::chrono_literals;

class LogCapture {
 public:
  LogCapture() { SetLogSink(&LogCapture::Sink, this); }
  ~LogCapture() { SetLogSink(nullptr, nullptr); }
  size_t errors() const {
    std::lock_guard lock(mu_);
    return errors_;
  }

 private:
  static void Sink(void* opaque, LogLevel level, const char*) {
    auto* self = static_cast<LogCapture*>(opaque);
    std::lock_guard lock(self->mu_);
    if (level >= LogLevel::kError) ++self->errors_;
  }
  mutable std::mutex mu_;
  size_t errors_ = 0;
};

bool Contains(const std::vector<FenceRef>& v, const FenceRef& f) {
  return std::find(v.begin(), v.end(), f) != v.end();
}

// Locks for the test body; the ww lock is only needed by the mutating/reading calls.
struct Held {
  explicit Held(ReservationObject& r) : resv(r) { EXPECT_EQ(resv.Lock(nullptr), 0); }
  ~Held() { resv.Unlock(); }
  ReservationObject& resv;
};

TEST(ReservationTest, UsageNamesAndOrder) {
  EXPECT_STREQ(ResvUsageName(ResvUsage::kKernel), "kernel");
  EXPECT_STREQ(ResvUsageName(ResvUsage::kBookkeep), "bookkeep");
  EXPECT_LT(ResvUsage::kKernel, ResvUsage::kWrite);
  EXPECT_LT(ResvUsage::kWrite, ResvUsage::kRead);
  EXPECT_LT(ResvUsage::kRead, ResvUsage::kBookkeep);
  EXPECT_EQ(&ReservationWwClass(), &ReservationWwClass());
  EXPECT_EQ(ReservationWwClass().algorithm(), WwAlgorithm::kWoundWait);
}

TEST(ReservationTest, QueryReturnsFencesWithUsageUpTo) {
  ReservationObject resv;
  Held held(resv);
  FenceTimeline k("k"), w("w"), r("r"), b("b");
  FenceRef fk = k.CreateFence(), fw = w.CreateFence(), fr = r.CreateFence(), fb = b.CreateFence();
  ASSERT_EQ(resv.ReserveFences(4), 0);
  ASSERT_EQ(resv.AddFence(fb, ResvUsage::kBookkeep), 0);
  ASSERT_EQ(resv.AddFence(fr, ResvUsage::kRead), 0);
  ASSERT_EQ(resv.AddFence(fw, ResvUsage::kWrite), 0);
  ASSERT_EQ(resv.AddFence(fk, ResvUsage::kKernel), 0);
  auto kernel = resv.Fences(ResvUsage::kKernel);
  auto write = resv.Fences(ResvUsage::kWrite);
  auto read = resv.Fences(ResvUsage::kRead);
  auto all = resv.Fences(ResvUsage::kBookkeep);
  EXPECT_EQ(kernel, std::vector<FenceRef>{fk});
  EXPECT_EQ(write.size(), 2u);
  EXPECT_TRUE(Contains(write, fk) && Contains(write, fw));
  EXPECT_EQ(read.size(), 3u);
  EXPECT_FALSE(Contains(read, fb));
  EXPECT_EQ(all.size(), 4u);
  EXPECT_EQ(resv.FenceCount(), 4u);
  EXPECT_EQ(resv.Entries().size(), 4u);
}

TEST(ReservationTest, AddFenceWithoutReservedSlotFailsWithEnospc) {
  ReservationObject resv;
  Held held(resv);
  FenceTimeline tl("a"), other("b");
  EXPECT_EQ(resv.AddFence(tl.CreateFence(), ResvUsage::kWrite), -ENOSPC);
  EXPECT_EQ(resv.FenceCount(), 0u);
  ASSERT_EQ(resv.ReserveFences(1), 0);
  EXPECT_EQ(resv.AddFence(tl.CreateFence(), ResvUsage::kWrite), 0);
  EXPECT_EQ(resv.AddFence(other.CreateFence(), ResvUsage::kWrite), -ENOSPC);  // slot used up
  EXPECT_EQ(resv.FenceCount(), 1u);
}

TEST(ReservationTest, LaterFenceOfSameContextReplacesWithoutASlot) {
  ReservationObject resv;
  Held held(resv);
  FenceTimeline tl("t"), other("o");
  FenceRef f1 = tl.CreateFence(), f2 = tl.CreateFence(), f3 = tl.CreateFence(),
           f4 = tl.CreateFence();
  ASSERT_EQ(resv.ReserveFences(1), 0);
  ASSERT_EQ(resv.AddFence(f1, ResvUsage::kRead), 0);
  // Same context, later, same usage: replaces; no slot is consumed.
  ASSERT_EQ(resv.AddFence(f2, ResvUsage::kRead), 0);
  ASSERT_EQ(resv.FenceCount(), 1u);
  EXPECT_EQ(resv.Entries()[0].fence, f2);
  // Later and stronger (WRITE <= READ): replaces and takes the new usage.
  ASSERT_EQ(resv.AddFence(f3, ResvUsage::kWrite), 0);
  ASSERT_EQ(resv.FenceCount(), 1u);
  EXPECT_EQ(resv.Entries()[0].fence, f3);
  EXPECT_EQ(resv.Entries()[0].usage, ResvUsage::kWrite);
  // Later but weaker (READ after WRITE) must not hide the write: appended, needs a slot.
  EXPECT_EQ(resv.AddFence(f4, ResvUsage::kRead), -ENOSPC);
  ASSERT_EQ(resv.ReserveFences(1), 0);
  ASSERT_EQ(resv.AddFence(f4, ResvUsage::kRead), 0);
  EXPECT_EQ(resv.FenceCount(), 2u);
  EXPECT_EQ(resv.Fences(ResvUsage::kWrite), std::vector<FenceRef>{f3});
  // An earlier fence of the same context does not replace a later one.
  EXPECT_EQ(resv.AddFence(f1, ResvUsage::kWrite), -ENOSPC);
  EXPECT_EQ(resv.Fences(ResvUsage::kWrite), std::vector<FenceRef>{f3});
}

TEST(ReservationTest, SignalledFenceSlotIsReused) {
  ReservationObject resv;
  Held held(resv);
  FenceTimeline a("a"), b("b");
  FenceRef fa = a.CreateFence();
  ASSERT_EQ(resv.ReserveFences(1), 0);
  ASSERT_EQ(resv.AddFence(fa, ResvUsage::kWrite), 0);
  ASSERT_EQ(fa->Signal(), 0);
  FenceRef fb = b.CreateFence();
  EXPECT_EQ(resv.AddFence(fb, ResvUsage::kRead), 0);  // no slot left, but fa's is free
  EXPECT_EQ(resv.FenceCount(), 1u);
  EXPECT_EQ(resv.Fences(ResvUsage::kBookkeep), std::vector<FenceRef>{fb});
}

TEST(ReservationTest, MutationsAndQueriesRequireTheLock) {
  LogCapture logs;
  ReservationObject resv;
  FenceTimeline tl("t");
  EXPECT_EQ(resv.ReserveFences(1), -ENOLCK);
  EXPECT_EQ(resv.AddFence(tl.CreateFence(), ResvUsage::kWrite), -ENOLCK);
  EXPECT_TRUE(resv.Fences(ResvUsage::kBookkeep).empty());
  EXPECT_EQ(logs.errors(), 3u);
  // Held by another thread is not held by us.
  std::latch locked(1), done(1);
  std::thread holder([&] {
    ASSERT_EQ(resv.Lock(nullptr), 0);
    locked.count_down();
    done.wait();
    resv.Unlock();
  });
  locked.wait();
  EXPECT_FALSE(resv.IsHeld());
  EXPECT_EQ(resv.ReserveFences(1), -ENOLCK);
  EXPECT_EQ(resv.AddFence(tl.CreateFence(), ResvUsage::kWrite), -ENOLCK);
  EXPECT_EQ(logs.errors(), 5u);
  done.count_down();
  holder.join();
  EXPECT_EQ(resv.FenceCount(), 0u);
}

TEST(ReservationTest, TestSignaledAndWaitDoNotNeedTheLock) {
  ReservationObject resv;
  FenceTimeline w("w"), r("r");
  FenceRef fw = w.CreateFence(), fr = r.CreateFence();
  {
    Held held(resv);
    ASSERT_EQ(resv.ReserveFences(2), 0);
    ASSERT_EQ(resv.AddFence(fw, ResvUsage::kWrite), 0);
    ASSERT_EQ(resv.AddFence(fr, ResvUsage::kRead), 0);
  }
  // Another thread holds the ww lock throughout: the queries must not need it.
  std::latch locked(1), release(1);
  std::thread holder([&] {
    ASSERT_EQ(resv.Lock(nullptr), 0);
    locked.count_down();
    release.wait();
    resv.Unlock();
  });
  locked.wait();
  EXPECT_FALSE(resv.TestSignaled(ResvUsage::kWrite));
  EXPECT_TRUE(resv.TestSignaled(ResvUsage::kKernel));  // no kernel fences
  EXPECT_EQ(resv.WaitTimeout(ResvUsage::kWrite, 1ms), -ETIME);
  ASSERT_EQ(fw->Signal(), 0);
  EXPECT_TRUE(resv.TestSignaled(ResvUsage::kWrite));
  EXPECT_FALSE(resv.TestSignaled(ResvUsage::kRead));
  EXPECT_EQ(resv.WaitTimeout(ResvUsage::kWrite, 0ns), 0);
  EXPECT_EQ(resv.WaitTimeout(ResvUsage::kRead, 1ms), -ETIME);
  std::latch waiting(1);
  auto waiter = std::async(std::launch::async, [&] {
    waiting.count_down();
    return resv.WaitTimeout(ResvUsage::kRead, testing::kDeadlockTimeout);
  });
  waiting.wait();
  ASSERT_EQ(fr->Signal(), 0);
  EXPECT_EQ(waiter.get(), 0);
  EXPECT_TRUE(resv.TestSignaled(ResvUsage::kBookkeep));
  release.count_down();
  holder.join();
}

// Implicit sync (dma_resv_usage_rw): a reader waits for writers only, a writer for everybody
// that reads or writes, and nobody doing implicit sync waits for BOOKKEEP.
TEST(ReservationTest, ImplicitSyncQueryUsesUsageForAccess) {
  EXPECT_EQ(UsageForAccess(/*write=*/false), ResvUsage::kWrite);
  EXPECT_EQ(UsageForAccess(/*write=*/true), ResvUsage::kRead);
  ReservationObject resv;
  Held held(resv);
  FenceTimeline w("w"), r("r"), b("b");
  FenceRef fw = w.CreateFence(), fr = r.CreateFence(), fb = b.CreateFence();
  ASSERT_EQ(resv.ReserveFences(3), 0);
  ASSERT_EQ(resv.AddFence(fw, ResvUsage::kWrite), 0);
  ASSERT_EQ(resv.AddFence(fr, ResvUsage::kRead), 0);
  ASSERT_EQ(resv.AddFence(fb, ResvUsage::kBookkeep), 0);
  EXPECT_EQ(resv.Fences(UsageForAccess(false)), std::vector<FenceRef>{fw});
  auto for_write = resv.Fences(UsageForAccess(true));
  EXPECT_EQ(for_write.size(), 2u);
  EXPECT_TRUE(Contains(for_write, fw) && Contains(for_write, fr));
  EXPECT_FALSE(Contains(for_write, fb));
  ASSERT_EQ(fw->Signal(), 0);
  EXPECT_TRUE(resv.TestSignaled(UsageForAccess(false)));  // a new reader can go
  EXPECT_FALSE(resv.TestSignaled(UsageForAccess(true)));  // a writer still waits for fr
  ASSERT_EQ(fr->Signal(), 0);
  EXPECT_TRUE(resv.TestSignaled(UsageForAccess(true)));  // fb (BOOKKEEP) does not count
  EXPECT_FALSE(resv.TestSignaled(ResvUsage::kBookkeep));
}

}  // namespace
}  // namespace sharegpu
