// Modelled on the kernel's lib/test-ww_mutex.c (test_abba, test_cycle, stress_inorder_work,
// stress_reorder_work, stress_one_work), for both algorithms. Every test checks mutual
// exclusion (a per-mutex holder count that must be 0 on acquisition, plus plain counters that
// TSan watches) and completion (RunThreadsBounded fails on a deadlock or lost wake-up).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "sync/ww_mutex.h"
#include "sync_test_util.h"

namespace sharegpu {
namespace {

using testing::RunThreadsBounded;

struct Guarded {
  explicit Guarded(WwClass& cls) : mu(cls) {}
  WwMutex mu;
  std::atomic<int> holders{0};
  uint64_t value = 0;  // only touched under mu
};

using Pool = std::vector<std::unique_ptr<Guarded>>;

Pool MakePool(WwClass& cls, int n) {
  Pool pool;
  for (int i = 0; i < n; ++i) pool.push_back(std::make_unique<Guarded>(cls));
  return pool;
}

void Acquired(Guarded* g) {
  EXPECT_EQ(g->holders.fetch_add(1), 0) << "two holders at once";
}
void Release(Guarded* g) {
  g->holders.fetch_sub(1);
  g->mu.Unlock();
}

// Locks all of `set` (duplicates allowed) with the -EDEADLK back-off protocol and returns the
// locks held, in acquisition order. Asserts the protocol's return codes. `prelocked` (in `set`)
// was already taken with LockSlow after a back-off.
std::vector<Guarded*> LockAll(const std::vector<Guarded*>& set, WwAcquireCtx& ctx,
                              Guarded* prelocked = nullptr) {
  std::vector<Guarded*> held;
  if (prelocked != nullptr) held.push_back(prelocked);
  Guarded* contended = prelocked;
  for (;;) {
    bool restarted = false;
    for (Guarded* g : set) {
      if (g == contended) continue;  // taken by LockSlow already
      int err = g->mu.Lock(&ctx);
      if (err == -EALREADY) continue;
      if (err == -EDEADLK) {
        EXPECT_EQ(ctx.contended(), &g->mu);
        for (auto it = held.rbegin(); it != held.rend(); ++it) Release(*it);
        held.clear();
        EXPECT_EQ(ctx.acquired(), 0u);
        EXPECT_EQ(g->mu.LockSlow(&ctx), 0);
        Acquired(g);
        held.push_back(g);
        contended = g;
        restarted = true;
        break;
      }
      EXPECT_EQ(err, 0);
      Acquired(g);
      held.push_back(g);
    }
    if (!restarted) return held;
  }
}

void TouchAndUnlock(std::vector<Guarded*>& held) {
  for (Guarded* g : held) ++g->value;
  for (auto it = held.rbegin(); it != held.rend(); ++it) Release(*it);
  held.clear();
}

uint64_t Sum(const Pool& pool) {
  uint64_t sum = 0;
  for (const auto& g : pool) sum += g->value;
  return sum;
}

const char* AlgName(WwAlgorithm alg) {
  return alg == WwAlgorithm::kWoundWait ? "wound-wait" : "wait-die";
}

// stress_inorder_work: every thread locks the same mutexes in the same order.
void InOrder(WwAlgorithm alg) {
  WwClass cls("inorder", alg);
  constexpr int kThreads = 4, kLocks = 8, kIters = 500;
  Pool pool = MakePool(cls, kLocks);
  std::vector<Guarded*> set;
  for (auto& g : pool) set.push_back(g.get());
  RunThreadsBounded(kThreads, [&](int) {
    for (int i = 0; i < kIters; ++i) {
      WwAcquireCtx ctx(cls);
      auto held = LockAll(set, ctx);
      ctx.Done();
      EXPECT_EQ(held.size(), static_cast<size_t>(kLocks));
      TouchAndUnlock(held);
    }
  });
  EXPECT_EQ(Sum(pool), uint64_t{kThreads} * kIters * kLocks) << AlgName(alg);
}

// stress_reorder_work: every thread locks a random subset in a random order.
void Reorder(WwAlgorithm alg) {
  WwClass cls("reorder", alg);
  constexpr int kThreads = 4, kLocks = 16, kPerIter = 8, kIters = 800;
  Pool pool = MakePool(cls, kLocks);
  std::atomic<uint64_t> expected{0};
  RunThreadsBounded(kThreads, [&](int t) {
    std::mt19937 rng(1234 + t);
    std::vector<Guarded*> all;
    for (auto& g : pool) all.push_back(g.get());
    for (int i = 0; i < kIters; ++i) {
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<Guarded*> set(all.begin(), all.begin() + kPerIter);
      WwAcquireCtx ctx(cls);
      auto held = LockAll(set, ctx);
      ctx.Done();
      EXPECT_EQ(held.size(), static_cast<size_t>(kPerIter));
      expected += held.size();
      TouchAndUnlock(held);
    }
  });
  EXPECT_EQ(Sum(pool), expected.load()) << AlgName(alg);
}

// test_abba: two threads take A and B in opposite order after both hold their first lock, so
// there is a real cycle. Without resolution one of them must see -EDEADLK (the younger one);
// with resolution both must finish.
void Abba(WwAlgorithm alg, bool resolve) {
  WwClass cls("abba", alg);
  Pool pool = MakePool(cls, 2);
  std::barrier both_hold_first(2);
  int results[2] = {0, 0};
  uint64_t stamps[2] = {0, 0};
  RunThreadsBounded(2, [&](int t) {
    Guarded* first = pool[t].get();
    Guarded* second = pool[1 - t].get();
    WwAcquireCtx ctx(cls);
    stamps[t] = ctx.stamp();
    ASSERT_EQ(first->mu.Lock(&ctx), 0);
    Acquired(first);
    both_hold_first.arrive_and_wait();
    int err = second->mu.Lock(&ctx);
    results[t] = err;
    if (err == -EDEADLK) {
      Release(first);
      if (resolve) {
        ASSERT_EQ(second->mu.LockSlow(&ctx), 0);
        Acquired(second);
        ASSERT_EQ(first->mu.Lock(&ctx), 0);
        Acquired(first);
        Release(first);
        Release(second);
      }
      return;
    }
    ASSERT_EQ(err, 0);
    Acquired(second);
    Release(second);
    Release(first);
  });
  const int younger = stamps[0] > stamps[1] ? 0 : 1;
  EXPECT_EQ(results[younger], -EDEADLK) << AlgName(alg) << ": missed ABBA deadlock";
  EXPECT_EQ(results[1 - younger], 0) << AlgName(alg) << ": the older context must not back off";
}

// test_cycle: N threads each lock their own mutex, then their neighbour's. With everyone
// holding their own first (barrier), the cycle is real and must be broken by back-off.
void Cycle(WwAlgorithm alg) {
  WwClass cls("cycle", alg);
  constexpr int kThreads = 4, kRounds = 20;
  for (int round = 0; round < kRounds; ++round) {
    Pool pool = MakePool(cls, kThreads);
    std::barrier all_hold_own(kThreads);
    std::atomic<uint64_t> backoffs{0};
    RunThreadsBounded(kThreads, [&](int t) {
      Guarded* own = pool[t].get();
      Guarded* next = pool[(t + 1) % kThreads].get();
      WwAcquireCtx ctx(cls);
      ASSERT_EQ(own->mu.Lock(&ctx), 0);
      Acquired(own);
      std::vector<Guarded*> held{own};
      all_hold_own.arrive_and_wait();
      int err = next->mu.Lock(&ctx);
      if (err == -EDEADLK) {
        Release(own);
        held.clear();
        ASSERT_EQ(next->mu.LockSlow(&ctx), 0);
        Acquired(next);
        held = LockAll({next, own}, ctx, /*prelocked=*/next);  // further back-offs inside
      } else {
        ASSERT_EQ(err, 0);
        Acquired(next);
        held.push_back(next);
      }
      ctx.Done();
      EXPECT_EQ(held.size(), 2u);
      backoffs += ctx.backoffs();
      TouchAndUnlock(held);
    });
    EXPECT_EQ(Sum(pool), uint64_t{2} * kThreads) << AlgName(alg);
    EXPECT_GE(backoffs.load(), 1u) << AlgName(alg) << ": a real cycle needs a back-off";
  }
}

// stress_one_work + a shared-pool mix: many threads, random sets of 1..8 from a small pool,
// some threads also take single locks without a context.
void Stress(WwAlgorithm alg) {
  WwClass cls("stress", alg);
  constexpr int kThreads = 8, kLocks = 24, kIters = 500;
  Pool pool = MakePool(cls, kLocks);
  std::atomic<uint64_t> expected{0};
  RunThreadsBounded(kThreads, [&](int t) {
    std::mt19937 rng(99 + t);
    std::uniform_int_distribution<int> pick(0, kLocks - 1), count(1, 8);
    for (int i = 0; i < kIters; ++i) {
      if (t % 4 == 3 && i % 2 == 0) {  // context-less single lock
        Guarded* g = pool[pick(rng)].get();
        ASSERT_EQ(g->mu.Lock(nullptr), 0);
        Acquired(g);
        ++g->value;
        ++expected;
        Release(g);
        continue;
      }
      std::vector<Guarded*> set;
      for (int k = count(rng); k > 0; --k) set.push_back(pool[pick(rng)].get());  // dups too
      WwAcquireCtx ctx(cls);
      auto held = LockAll(set, ctx);
      ctx.Done();
      expected += held.size();
      TouchAndUnlock(held);
    }
  });
  EXPECT_EQ(Sum(pool), expected.load()) << AlgName(alg);
}

// Fairness (hand-off): two threads lock and unlock one mutex in a tight loop (a little work
// while holding it, none between unlock and the next lock, no pacing); a third thread must
// still get it, 20 times. Without a hand-off the loops re-take the mutex (barging) every time
// before the woken waiter runs, for as long as the scheduler lets them: the old code was
// overtaken 1,300-1,900 times per wait (90th percentile) and waited up to seconds. Each round
// starts while a loop holds the mutex, so the waiter finds it busy and queues; the test checks
// that this interleaving happened (the waiter found it held, and the loops took it while the
// waiter waited, in some round).
struct StarveResult {
  std::vector<uint64_t> overtaken;  // per round: loop acquisitions while the waiter waited
  std::chrono::steady_clock::duration worst_wait{0};
  int found_busy = 0;  // rounds whose Lock() started while a loop held the mutex
  double loop_rate_per_us = 0;  // the loops' fastest pace, acquisitions per us, no waiter
};

StarveResult RunStarvation(WwClass& cls, bool waiter_ctx) {
  using Clock = std::chrono::steady_clock;
  constexpr int kLoopers = 2, kRounds = 20, kWorkPerHold = 200;
  constexpr auto kGiveUp = std::chrono::seconds(5);  // per round: ends an unfair run early
  Guarded g(cls);
  std::atomic<uint64_t> work{0};
  std::atomic<bool> done{false};
  std::atomic<uint64_t> looper_acquisitions{0};
  StarveResult result;
  RunThreadsBounded(kLoopers + 1, [&](int t) {
    if (t < kLoopers) {
      while (!done.load(std::memory_order_relaxed)) {
        EXPECT_EQ(g.mu.Lock(nullptr), 0);
        Acquired(&g);
        ++g.value;
        looper_acquisitions.fetch_add(1, std::memory_order_relaxed);  // counted while held
        for (int i = 0; i < kWorkPerHold; ++i) work.store(work.load() + 1);
        Release(&g);
      }
      return;
    }
    for (int r = 0; r < kRounds; ++r) {
      // Start while the loops run (they took the mutex twice since we last looked).
      for (const uint64_t seen = looper_acquisitions.load();
           looper_acquisitions.load() < seen + 2;) {
        std::this_thread::yield();
      }
      std::optional<WwAcquireCtx> ctx;
      if (waiter_ctx) ctx.emplace(cls);
      const uint64_t before = looper_acquisitions.load();
      if (g.mu.IsLocked()) ++result.found_busy;
      const auto start = Clock::now();
      EXPECT_EQ(g.mu.Lock(ctx ? &*ctx : nullptr), 0);
      const auto waited = Clock::now() - start;
      Acquired(&g);
      ++g.value;
      result.overtaken.push_back(looper_acquisitions.load() - before);
      result.worst_wait = std::max(result.worst_wait, waited);
      Release(&g);
      if (waited > kGiveUp) break;
    }
    // Then the loops' pace by themselves, in five windows of 1,000 acquisitions: the fastest,
    // as a preemption of a loop only slows a window down (what a wait of a given length lets
    // through at most). After the rounds: measured before them it changed how the immediate
    // hand-off rounds interleave (p90 37-132 against 2).
    for (int w = 0; w < 5; ++w) {
      const uint64_t from = looper_acquisitions.load();
      const auto t0 = Clock::now();
      while (looper_acquisitions.load() < from + 1000) std::this_thread::yield();
      const uint64_t n = looper_acquisitions.load() - from;
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (us > 0) result.loop_rate_per_us = std::max(result.loop_rate_per_us, n / us);
    }
    done.store(true);
  });
  EXPECT_EQ(g.value, looper_acquisitions.load() + result.overtaken.size());
  std::vector<uint64_t> sorted = result.overtaken;
  std::sort(sorted.begin(), sorted.end());
  const WwClass::Stats st = cls.stats();
  std::printf("[ stats    ] %s waiter: rounds=%zu worst_wait_ms=%.2f overtaken per wait: "
              "median=%llu p90=%llu max=%llu (loop acquisitions in all: %llu, %.2f per us "
              "alone), found busy %d; hand-offs %llu, spins won %llu lost %llu, sleeps %llu\n",
              waiter_ctx ? "context" : "context-less", sorted.size(),
              std::chrono::duration<double, std::milli>(result.worst_wait).count(),
              static_cast<unsigned long long>(sorted.empty() ? 0 : sorted[sorted.size() / 2]),
              static_cast<unsigned long long>(sorted.empty() ? 0 : sorted[sorted.size() * 9 / 10]),
              static_cast<unsigned long long>(sorted.empty() ? 0 : sorted.back()),
              static_cast<unsigned long long>(looper_acquisitions.load()),
              result.loop_rate_per_us, result.found_busy,
              static_cast<unsigned long long>(st.handoffs),
              static_cast<unsigned long long>(st.spins_won),
              static_cast<unsigned long long>(st.spins_lost),
              static_cast<unsigned long long>(st.sleeps));
  EXPECT_EQ(sorted.size(), static_cast<size_t>(kRounds));
  // The interleaving the test exists for: the waiter mostly found the mutex held by a loop,
  // and the loops did take it while the waiter waited.
  EXPECT_GE(result.found_busy, kRounds / 4) << "the waiter did not compete with the loops";
  EXPECT_GT(sorted.empty() ? 0 : sorted.back(), 0u) << "the loops never overtook the waiter";
  return result;
}

// Immediate hand-off (handoff_after = 0): once queued, the waiter is overtaken at most by the
// holder's thread once and by what runs before it queues (bounded by the spin limit, and by
// a preemption of the waiter before it queues: the count starts before Lock()). Without a
// hand-off it is overtaken hundreds to thousands of times per wait. The 90th percentile is
// the sharp figure: alone it is 1-7 (40 runs under ASan), with the default delay 24-705.
// The median is not (0-13 with either): under ASan beside other test binaries on 2 cores one
// run measured median 17, p90 26, and failed the median bound of 8 it had then.
void WaiterNotStarvedImmediateHandoff(bool waiter_ctx) {
  WwClass cls("starve-handoff-0", WwAlgorithm::kWoundWait, std::chrono::nanoseconds(0));
  StarveResult r = RunStarvation(cls, waiter_ctx);
  std::sort(r.overtaken.begin(), r.overtaken.end());
  ASSERT_FALSE(r.overtaken.empty());
  EXPECT_LE(r.overtaken[r.overtaken.size() * 9 / 10], 30u) << "90th percentile";
  EXPECT_GT(cls.stats().handoffs, 0u) << "no unlock handed the mutex over";
}

// The default hand-off delay: a bounded wait. Generous for a loaded 2-core machine and the
// sanitizers: a hand-off costs the delay plus one wake-up or yield.
void WaiterNotStarvedDefaultHandoff(bool waiter_ctx) {
  WwClass cls("starve-default");
  StarveResult r = RunStarvation(cls, waiter_ctx);
  EXPECT_LT(r.worst_wait, std::chrono::milliseconds(500)) << "waiter starved";
  // Overtakes per wait are what the loops take during the hand-off delay: their pace times
  // the delay, measured in the same run (a fixed count does not hold across machines: one
  // fresh 2-core machine measured p90 1,023 against a bound of 1,000, at 1.8 acquisitions
  // per microsecond; ~0.5 per us elsewhere gave ~250). Three times that plus 100 covers a
  // preemption before the waiter queues; a waiter that is never handed the mutex is
  // overtaken for as long as it waits (the old barging code: seconds).
  // ImmediateHandoffBoundsOvertakes* is the sharp test.
  std::sort(r.overtaken.begin(), r.overtaken.end());
  ASSERT_FALSE(r.overtaken.empty());
  ASSERT_GT(r.loop_rate_per_us, 0.0);
  const double delay_us =
      std::chrono::duration<double, std::micro>(cls.handoff_after()).count();
  const double bound = 3 * r.loop_rate_per_us * delay_us + 100;
  EXPECT_LE(static_cast<double>(r.overtaken[r.overtaken.size() * 9 / 10]), bound)
      << "90th percentile, against the loops' pace of " << r.loop_rate_per_us << " per us";
}

// Bounded adaptive spinning: two threads (started together) take turns on one mutex with short
// holds; a locker that finds it held by the other, running, thread takes it by spinning
// instead of queueing. They go on until that has happened 100 times, or give up after
// 2,000,000 rounds each (seconds, even under TSan): the test then fails.
TEST(WwMutexStressTest, ContendedLockIsTakenBySpinningOnARunningHolder) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs two CPUs";
  WwClass cls("spin");
  Guarded g(cls);
  std::barrier start(2);
  std::atomic<uint64_t> rounds{0};
  RunThreadsBounded(2, [&](int) {
    start.arrive_and_wait();
    for (int i = 0; i < 2'000'000 && cls.stats().spins_won < 100; ++i) {
      WwAcquireCtx ctx(cls);
      ASSERT_EQ(g.mu.Lock(&ctx), 0);
      Acquired(&g);
      for (int k = 0; k < 20; ++k) ++g.value;  // a short hold: a spin should outlast it
      Release(&g);
      rounds.fetch_add(1, std::memory_order_relaxed);
    }
  });
  EXPECT_EQ(g.value, 20 * rounds.load());
  const WwClass::Stats st = cls.stats();
  std::printf("[ stats    ] rounds %llu: spins won %llu lost %llu, sleeps %llu\n",
              static_cast<unsigned long long>(rounds.load()),
              static_cast<unsigned long long>(st.spins_won),
              static_cast<unsigned long long>(st.spins_lost),
              static_cast<unsigned long long>(st.sleeps));
  EXPECT_GE(st.spins_won, 100u) << "contended locks were not taken by spinning";
}

TEST(WwMutexStressTest, WaiterNotStarvedByTightLockLoop) {
  WaiterNotStarvedDefaultHandoff(/*waiter_ctx=*/false);
}
TEST(WwMutexStressTest, ContextWaiterNotStarvedByTightLockLoop) {
  WaiterNotStarvedDefaultHandoff(/*waiter_ctx=*/true);
}
TEST(WwMutexStressTest, ImmediateHandoffBoundsOvertakes) {
  WaiterNotStarvedImmediateHandoff(/*waiter_ctx=*/false);
}
TEST(WwMutexStressTest, ImmediateHandoffBoundsOvertakesContext) {
  WaiterNotStarvedImmediateHandoff(/*waiter_ctx=*/true);
}

TEST(WwMutexStressTest, InOrderWoundWait) {
  InOrder(WwAlgorithm::kWoundWait);
}
TEST(WwMutexStressTest, InOrderWaitDie) {
  InOrder(WwAlgorithm::kWaitDie);
}
TEST(WwMutexStressTest, ReorderWoundWait) {
  Reorder(WwAlgorithm::kWoundWait);
}
TEST(WwMutexStressTest, ReorderWaitDie) {
  Reorder(WwAlgorithm::kWaitDie);
}
TEST(WwMutexStressTest, AbbaWoundWait) {
  Abba(WwAlgorithm::kWoundWait, /*resolve=*/false);
}
TEST(WwMutexStressTest, AbbaWaitDie) {
  Abba(WwAlgorithm::kWaitDie, /*resolve=*/false);
}
TEST(WwMutexStressTest, AbbaResolvedWoundWait) {
  Abba(WwAlgorithm::kWoundWait, true);
}
TEST(WwMutexStressTest, AbbaResolvedWaitDie) {
  Abba(WwAlgorithm::kWaitDie, true);
}
TEST(WwMutexStressTest, CycleWoundWait) {
  Cycle(WwAlgorithm::kWoundWait);
}
TEST(WwMutexStressTest, CycleWaitDie) {
  Cycle(WwAlgorithm::kWaitDie);
}
TEST(WwMutexStressTest, ManyThreadsWoundWait) {
  Stress(WwAlgorithm::kWoundWait);
}
TEST(WwMutexStressTest, ManyThreadsWaitDie) {
  Stress(WwAlgorithm::kWaitDie);
}

}  // namespace
}  // namespace sharegpu
