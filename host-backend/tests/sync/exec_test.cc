#include "sync/exec.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "sync_test_util.h"

namespace sharegpu {
namespace {

bool AnyLocked(const std::vector<ReservationObject*>& objs) {
  for (auto* o : objs) {
    if (o->lock().IsLocked()) return true;
  }
  return false;
}

TEST(ExecTest, LocksASetWithDuplicatesAndUnlocksOnScopeExit) {
  ReservationObject a, b, c;
  {
    ExecContext exec(ExecFlags::kIgnoreDuplicates);
    std::vector<ReservationObject*> objs{&a, &b, &a, &c, &b};
    ASSERT_EQ(exec.Run([&](ExecContext& e) {
      for (auto* r : objs) {
        if (Status err = e.Lock(*r); err != 0) return err;
      }
      return 0;
    }),
              0);
    EXPECT_EQ(exec.locked().size(), 3u);  // each object once
    EXPECT_TRUE(a.IsHeld() && b.IsHeld() && c.IsHeld());
    EXPECT_EQ(a.lock().holder_ctx(), &exec.ticket());
    EXPECT_EQ(exec.retries(), 0u);
  }
  EXPECT_FALSE(AnyLocked({&a, &b, &c}));
}

TEST(ExecTest, DuplicateWithoutIgnoreFlagFailsAndUnlocks) {
  ReservationObject a, b;
  ExecContext exec;
  EXPECT_EQ(exec.Run([&](ExecContext& e) {
    for (auto* r : {&a, &b, &a}) {
      if (Status err = e.Lock(*r); err != 0) return err;
    }
    return 0;
  }),
            -EALREADY);
  EXPECT_TRUE(exec.locked().empty());
  EXPECT_FALSE(AnyLocked({&a, &b}));
}

TEST(ExecTest, BodyErrorUnlocksEverything) {
  ReservationObject a, b;
  ExecContext exec;
  EXPECT_EQ(exec.Run([&](ExecContext& e) {
    EXPECT_EQ(e.Lock(a), 0);
    EXPECT_EQ(e.Lock(b), 0);
    return -ENOMEM;
  }),
            -ENOMEM);
  EXPECT_FALSE(AnyLocked({&a, &b}));
}

TEST(ExecTest, FiniUnlocksEarly) {
  ReservationObject a;
  ExecContext exec;
  ASSERT_EQ(exec.Run([&](ExecContext& e) { return e.Lock(a); }), 0);
  EXPECT_TRUE(a.lock().IsLocked());
  exec.Fini();
  EXPECT_FALSE(a.lock().IsLocked());
  EXPECT_TRUE(exec.locked().empty());
}

TEST(ExecTest, PrepareReservesFenceSlots) {
  ReservationObject a;
  ExecContext exec;
  ASSERT_EQ(exec.Run([&](ExecContext& e) { return e.Prepare(a, 2); }), 0);
  FenceTimeline t1("t1"), t2("t2"), t3("t3");
  EXPECT_EQ(a.AddFence(t1.CreateFence(), ResvUsage::kWrite), 0);
  EXPECT_EQ(a.AddFence(t2.CreateFence(), ResvUsage::kRead), 0);
  EXPECT_EQ(a.AddFence(t3.CreateFence(), ResvUsage::kRead), -ENOSPC);
}

// An older context holds X. The exec (younger) locks Y and then blocks on X. The older one then
// wants Y: in wound-wait it wounds the exec, in wait-die the exec dies at once on X. Either way
// the exec must back off, LockSlow X, re-run the body and finish, with exactly one retry.
void ForcedContention(WwClass& cls) {
  ReservationObject x(cls), y(cls);
  const bool wound_wait = cls.algorithm() == WwAlgorithm::kWoundWait;
  // exec_died: wait-die only. The old context must keep X until the exec has tried X and died;
  // releasing X as soon as the exec holds Y (as this test once did) let the exec sometimes
  // take X uncontended: no retry, a failure seen under TSan's scheduling.
  std::latch old_holds_x(1), exec_holds_y(1), exec_died(1);
  std::atomic<bool> old_done{false};
  std::thread old_thread([&] {
    WwAcquireCtx old_ctx(cls);  // stamp taken before the exec exists: older
    ASSERT_EQ(x.Lock(&old_ctx), 0);
    old_holds_x.count_down();
    exec_holds_y.wait();
    if (wound_wait) {
      ASSERT_EQ(y.Lock(&old_ctx), 0);  // possible only once the exec backed off
      y.Unlock();
    } else {
      exec_died.wait();
    }
    old_done.store(true);
    x.Unlock();
  });
  old_holds_x.wait();
  int passes = 0;
  {
    ExecContext exec(ExecFlags::kNone, cls);
    ASSERT_EQ(exec.Run([&](ExecContext& e) {
      ++passes;
      if (Status err = e.Lock(y); err != 0) return err;
      if (passes == 1) exec_holds_y.count_down();
      if (Status err = e.Lock(x); err != 0) {
        EXPECT_EQ(err, -EDEADLK);
        EXPECT_EQ(passes, 1);
        if (!wound_wait) exec_died.count_down();
        return err;
      }
      return 0;
    }),
              0);
    EXPECT_EQ(exec.retries(), 1u);
    EXPECT_EQ(passes, 2);
    EXPECT_TRUE(old_done.load());
    EXPECT_TRUE(x.IsHeld() && y.IsHeld());
    EXPECT_EQ(exec.locked().size(), 2u);
  }
  EXPECT_FALSE(AnyLocked({&x, &y}));
  old_thread.join();
}

TEST(ExecTest, ContentionWithOlderContextForcesRetryWoundWait) {
  ForcedContention(ReservationWwClass());
}

TEST(ExecTest, ContentionWithOlderContextForcesRetryWaitDie) {
  WwClass cls("exec-wait-die", WwAlgorithm::kWaitDie);
  ForcedContention(cls);
}

// Many execs over a shared pool in random orders: all complete, none overlaps another.
TEST(ExecTest, ConcurrentExecsCompleteAndExclude) {
  constexpr int kObjs = 12, kThreads = 4, kIters = 100;
  std::vector<std::unique_ptr<ReservationObject>> pool;
  std::vector<int> counters(kObjs, 0);  // guarded by the objects' locks; TSan checks it
  for (int i = 0; i < kObjs; ++i) pool.push_back(std::make_unique<ReservationObject>());
  std::atomic<int> total{0};
  testing::RunThreadsBounded(kThreads, [&](int t) {
    uint32_t seed = 7 + t;
    for (int i = 0; i < kIters; ++i) {
      std::vector<int> idx;
      for (int k = 0; k < 5; ++k) {
        seed = seed * 1103515245 + 12345;
        idx.push_back(static_cast<int>((seed >> 16) % kObjs));
      }
      ExecContext exec(ExecFlags::kIgnoreDuplicates);
      ASSERT_EQ(exec.Run([&](ExecContext& e) {
        for (int j : idx) {
          if (Status err = e.Lock(*pool[j]); err != 0) return err;
        }
        return 0;
      }),
                0);
      for (auto* r : exec.locked()) {
        for (int j = 0; j < kObjs; ++j) {
          if (pool[j].get() == r) ++counters[j];
        }
      }
      total += static_cast<int>(exec.locked().size());
    }
  });
  int sum = 0;
  for (int c : counters) sum += c;
  EXPECT_EQ(sum, total.load());
}

}  // namespace
}  // namespace sharegpu
