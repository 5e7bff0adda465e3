// Modelled on the kernel's lib/test-ww_mutex.c (test_abba, test_cycle, stress_inorder_work,
// stress_reorder_work, stress_one_work), for both algorithms. Every test checks mutual
// exclusion (a per-mutex holder count that must be 0 on acquisition, plus plain counters that
// TSan watches) and completion (RunThreadsBounded fails on a deadlock or lost wake-up).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <memory>
#include <random>
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
