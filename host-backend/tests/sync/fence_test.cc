#include "sync/fence.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <latch>
#include <set>
#include <thread>
#include <vector>

#include "sync_test_util.h"

namespace sharegpu {
namespace {

using namespace std::chrono_literals;
using testing::RunThreadsBounded;

TEST(FenceTest, TimelineHandsOutIncreasingSeqnos) {
  FenceTimeline tl("tl");
  FenceRef a = tl.CreateFence();
  FenceRef b = tl.CreateFence();
  EXPECT_EQ(a->context(), tl.context());
  EXPECT_EQ(b->context(), tl.context());
  EXPECT_LT(a->seqno(), b->seqno());
  EXPECT_TRUE(b->IsLaterThan(*a));
  EXPECT_FALSE(a->IsLaterThan(*b));
  EXPECT_EQ(a->timeline_name(), "tl");
  FenceTimeline other("other");
  EXPECT_FALSE(other.CreateFence()->IsLaterThan(*a));  // different context: never later
}

TEST(FenceTest, TimelineContextsAreGloballyUnique) {
  constexpr int kThreads = 4, kPer = 200;
  std::vector<std::vector<uint64_t>> seen(kThreads);
  RunThreadsBounded(kThreads, [&](int t) {
    for (int i = 0; i < kPer; ++i) seen[t].push_back(FenceTimeline("t").context());
  });
  std::set<uint64_t> all;
  for (auto& v : seen) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), size_t{kThreads * kPer});
  EXPECT_EQ(all.count(0), 0u);
}

TEST(FenceTest, CallbacksRunExactlyOnceAtSignal) {
  FenceTimeline tl("cb");
  FenceRef f = tl.CreateFence();
  int a = 0, b = 0;
  ASSERT_EQ(f->AddCallback([&](const Fence& fence) {
    EXPECT_TRUE(fence.IsSignaled());  // callbacks run after the state is signalled
    ++a;
  }),
            0);
  ASSERT_EQ(f->AddCallback([&](const Fence&) { ++b; }), 0);
  EXPECT_EQ(a + b, 0);
  EXPECT_FALSE(f->IsSignaled());
  EXPECT_EQ(f->Signal(), 0);
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 1);
  EXPECT_EQ(f->Signal(), -EINVAL);
  EXPECT_EQ(f->SignalWithError(-EIO), -EINVAL);
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 1);
  EXPECT_EQ(f->error(), 0);  // the late SignalWithError had no effect
}

TEST(FenceTest, AddCallbackOnSignalledFenceReturnsEnoent) {
  FenceTimeline tl("late");
  FenceRef f = tl.CreateFence();
  ASSERT_EQ(f->Signal(), 0);
  bool called = false;
  EXPECT_EQ(f->AddCallback([&](const Fence&) { called = true; }), -ENOENT);
  EXPECT_FALSE(called);
}

// Racing AddCallback against Signal: every callback that was accepted runs exactly once, and
// every rejected one never runs.
TEST(FenceTest, ConcurrentAddCallbackAndSignalRunEachAcceptedOnce) {
  for (int round = 0; round < 20; ++round) {
    FenceTimeline tl("race");
    FenceRef f = tl.CreateFence();
    constexpr int kAdders = 3, kPer = 50;
    std::atomic<int> accepted{0}, runs{0};
    std::latch go(kAdders + 1);
    RunThreadsBounded(kAdders + 1, [&](int t) {
      go.arrive_and_wait();
      if (t == kAdders) {
        EXPECT_EQ(f->Signal(), 0);
        return;
      }
      for (int i = 0; i < kPer; ++i) {
        if (f->AddCallback([&](const Fence&) { ++runs; }) == 0) ++accepted;
      }
    });
    EXPECT_EQ(runs.load(), accepted.load());
  }
}

TEST(FenceTest, WaitTimesOutWithEtime) {
  FenceTimeline tl("wait");
  FenceRef f = tl.CreateFence();
  EXPECT_EQ(f->Wait(0ns), -ETIME);
  EXPECT_EQ(f->Wait(1ms), -ETIME);
  ASSERT_EQ(f->Signal(), 0);
  EXPECT_EQ(f->Wait(0ns), 0);
  EXPECT_EQ(f->Wait(), 0);
}

TEST(FenceTest, WaitWakesWhenSignalledFromAnotherThread) {
  FenceTimeline tl("wake");
  FenceRef f = tl.CreateFence();
  std::latch waiting(2);
  auto forever = std::async(std::launch::async, [&] {
    waiting.count_down();
    return f->Wait();
  });
  auto bounded = std::async(std::launch::async, [&] {
    waiting.count_down();
    return f->Wait(testing::kDeadlockTimeout);
  });
  waiting.wait();
  ASSERT_EQ(f->Signal(), 0);
  ASSERT_EQ(forever.wait_for(testing::kDeadlockTimeout), std::future_status::ready);
  EXPECT_EQ(forever.get(), 0);
  EXPECT_EQ(bounded.get(), 0);
}

TEST(FenceTest, ErrorIsReportedOnlyOnceSignalled) {
  FenceTimeline tl("err");
  FenceRef f = tl.CreateFence();
  EXPECT_EQ(f->SetError(0), -EINVAL);
  EXPECT_EQ(f->SetError(5), -EINVAL);
  EXPECT_EQ(f->SetError(-EIO), 0);
  EXPECT_EQ(f->error(), 0);  // still unsignalled
  ASSERT_EQ(f->Signal(), 0);
  EXPECT_EQ(f->error(), -EIO);
  EXPECT_EQ(f->SetError(-EFAULT), -EINVAL);
  EXPECT_EQ(f->error(), -EIO);

  FenceRef g = tl.CreateFence();
  EXPECT_EQ(g->SignalWithError(0), -EINVAL);
  EXPECT_FALSE(g->IsSignaled());
  Status seen = 1;
  ASSERT_EQ(g->AddCallback([&](const Fence& fence) { seen = fence.error(); }), 0);
  EXPECT_EQ(g->SignalWithError(-EFAULT), 0);
  EXPECT_EQ(seen, -EFAULT);
  EXPECT_EQ(g->error(), -EFAULT);
}

TEST(FenceTest, DestroyingUnsignalledFenceCancelsCallbacksOnce) {
  FenceTimeline tl("cancel");
  FenceRef f = tl.CreateFence();
  int runs = 0;
  Status seen = 0;
  ASSERT_EQ(f->AddCallback([&](const Fence& fence) {
    ++runs;
    seen = fence.error();
  }),
            0);
  f.reset();
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(seen, -ECANCELED);

  FenceRef signalled = tl.CreateFence();
  int later = 0;
  ASSERT_EQ(signalled->AddCallback([&](const Fence&) { ++later; }), 0);
  ASSERT_EQ(signalled->Signal(), 0);
  signalled.reset();
  EXPECT_EQ(later, 1);  // not run again by the destructor
}

TEST(FenceTest, CallbackMayQueryTheFence) {
  // Callbacks run without the fence lock held: re-entering the fence must not deadlock.
  FenceTimeline tl("reenter");
  FenceRef f = tl.CreateFence();
  Status added = 0;
  ASSERT_EQ(f->AddCallback([&](const Fence& fence) {
    added = const_cast<Fence&>(fence).AddCallback([](const Fence&) {});
  }),
            0);
  auto done = std::async(std::launch::async, [&] { return f->Signal(); });
  ASSERT_EQ(done.wait_for(testing::kDeadlockTimeout), std::future_status::ready);
  EXPECT_EQ(done.get(), 0);
  EXPECT_EQ(added, -ENOENT);
}

}  // namespace
}  // namespace sharegpu
