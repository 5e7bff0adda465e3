// Locking many objects at once: ww_mutex with an acquire context and -EDEADLK back-off against
// the std::lock algorithm (libstdc++'s __lock_impl for many mutexes: lock one, try_lock the
// rest, on failure release everything, yield, and start again from the one that failed).
//
// Each iteration locks and then unlocks 800 distinct objects picked at random (in random order)
// from a pool of 100,000, on 1, 2 and 4 threads. Both variants use the same pre-generated sets
// (per thread index) and the same pool size, and run the same thread counts.
//
// High contention: 8 threads lock sets of 4 out of 16 objects (each object on its own cache
// line, as separate buffers are), where back-off spends its time retrying.
//
// Fairness: the same 8-thread high-contention load for a fixed time, each thread counting the
// sets it completed; `ratio ww_fairness_4_of_16_t8` is the worst thread's count over the best
// thread's (1.0 = perfectly even). Google Benchmark gives every thread the same number of
// iterations, so this one runs its own threads, once, and prints its line at exit (after the
// time ratios).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "ratio_reporter.h"
#include "sync/ww_mutex.h"

namespace sharegpu {
namespace {

constexpr int kPoolSize = 100'000;
constexpr int kSetSize = 800;
constexpr int kSetsPerThread = 32;
constexpr int kMaxThreads = 4;

// The high-contention case.
constexpr int kHotPoolSize = 16;
constexpr int kHotSetSize = 4;
constexpr int kHotThreads = 8;
constexpr int kHotSetsPerThread = 256;
constexpr auto kFairnessRun = std::chrono::milliseconds(500);

using Set = std::vector<int>;

// Random sets of `set_size` distinct ids (in random order) out of `pool_size`, per thread.
std::vector<std::vector<Set>>* MakeSets(int threads, int sets_per_thread, int pool_size,
                                        int set_size, uint32_t seed) {
  auto* all = new std::vector<std::vector<Set>>(threads);
  std::vector<int> ids(pool_size);
  for (int t = 0; t < threads; ++t) {
    std::mt19937 rng(seed + t);
    for (int k = 0; k < sets_per_thread; ++k) {
      std::iota(ids.begin(), ids.end(), 0);
      for (int i = 0; i < set_size; ++i) {  // partial Fisher-Yates: distinct, random order
        std::uniform_int_distribution<int> pick(i, pool_size - 1);
        std::swap(ids[i], ids[pick(rng)]);
      }
      (*all)[t].emplace_back(ids.begin(), ids.begin() + set_size);
    }
  }
  return all;
}

// Sets for thread t: the same for both variants, generated once.
const std::vector<Set>& SetsFor(int thread) {
  static const auto* const sets = MakeSets(kMaxThreads, kSetsPerThread, kPoolSize, kSetSize, 0x5eed);
  return (*sets)[thread];
}

const std::vector<Set>& HotSetsFor(int thread) {
  static const auto* const sets =
      MakeSets(kHotThreads, kHotSetsPerThread, kHotPoolSize, kHotSetSize, 0xf00d);
  return (*sets)[thread];
}

WwClass& BenchClass() {
  static WwClass* const cls = new WwClass("bench", WwAlgorithm::kWoundWait);
  return *cls;
}

// Contiguous, like the std::mutex pool (vector(n) constructs in place; never resized).
struct WwSlot {
  WwSlot() : mu(BenchClass()) {}
  WwMutex mu;
};
using WwPoolT = std::vector<WwSlot>;

WwPoolT& WwPool() {
  static auto* const pool = new WwPoolT(kPoolSize);
  return *pool;
}

std::vector<std::mutex>& StdPool() {
  static auto* const pool = new std::vector<std::mutex>(kPoolSize);
  return *pool;
}

// High contention: one object per cache line for both variants (no false sharing).
struct alignas(64) HotWwSlot {
  HotWwSlot() : mu(BenchClass()) {}
  WwMutex mu;
};
struct alignas(64) HotStdSlot {
  std::mutex mu;
  void lock() { mu.lock(); }
  bool try_lock() { return mu.try_lock(); }
  void unlock() { mu.unlock(); }
};

std::vector<HotWwSlot>& HotWwPool() {
  static auto* const pool = new std::vector<HotWwSlot>(kHotPoolSize);
  return *pool;
}

std::vector<HotStdSlot>& HotStdPool() {
  static auto* const pool = new std::vector<HotStdSlot>(kHotPoolSize);
  return *pool;
}

// The ww_mutex protocol: on -EDEADLK drop everything, sleep on the contended lock with
// LockSlow, and go around again (the contended lock is already ours).
template <typename Pool>
void WwLockUnlock(Pool& pool, const Set& set) {
  WwAcquireCtx ctx(BenchClass());
  int contended = -1;
  for (;;) {
    size_t failed = set.size();
    for (size_t i = 0; i < set.size(); ++i) {
      const int id = set[i];
      if (id == contended) continue;
      if (pool[id].mu.Lock(&ctx) == -EDEADLK) {
        failed = i;
        break;
      }
    }
    if (failed == set.size()) break;
    for (size_t i = 0; i < failed; ++i) {
      if (set[i] != contended) pool[set[i]].mu.Unlock();
    }
    if (contended >= 0) pool[contended].mu.Unlock();
    contended = set[failed];
    pool[contended].mu.LockSlow(&ctx);
  }
  ctx.Done();
  for (int id : set) pool[id].mu.Unlock();
}

// std::lock for N mutexes as libstdc++ implements it.
template <typename Pool>
void StdLockUnlock(Pool& pool, const Set& set) {
  const size_t n = set.size();
  size_t first = 0;
  for (;;) {
    pool[set[first]].lock();
    size_t k = 1;
    for (; k < n; ++k) {
      if (!pool[set[(first + k) % n]].try_lock()) break;
    }
    if (k == n) break;
    for (size_t u = 0; u < k; ++u) pool[set[(first + u) % n]].unlock();
    std::this_thread::yield();
    first = (first + k) % n;
  }
  for (int id : set) pool[id].unlock();
}

void BM_WwLock(benchmark::State& state) {
  auto& pool = WwPool();
  const auto& sets = SetsFor(state.thread_index());
  size_t k = 0;
  for (auto _ : state) WwLockUnlock(pool, sets[k++ % sets.size()]);
  state.SetItemsProcessed(state.iterations() * kSetSize);
}

void BM_StdLock(benchmark::State& state) {
  auto& pool = StdPool();
  const auto& sets = SetsFor(state.thread_index());
  size_t k = 0;
  for (auto _ : state) StdLockUnlock(pool, sets[k++ % sets.size()]);
  state.SetItemsProcessed(state.iterations() * kSetSize);
}

void BM_WwLockHot(benchmark::State& state) {
  auto& pool = HotWwPool();
  const auto& sets = HotSetsFor(state.thread_index());
  size_t k = 0;
  const WwClass::Stats before = BenchClass().stats();
  for (auto _ : state) WwLockUnlock(pool, sets[k++ % sets.size()]);
  state.SetItemsProcessed(state.iterations() * kHotSetSize);
  if (state.thread_index() == 0) {
    // Where the contended locks went (all threads, per completed set of this thread x 8).
    const WwClass::Stats after = BenchClass().stats();
    const double sets = static_cast<double>(state.iterations()) * kHotThreads;
    state.counters["spin_won/set"] = static_cast<double>(after.spins_won - before.spins_won) / sets;
    state.counters["spin_lost/set"] =
        static_cast<double>(after.spins_lost - before.spins_lost) / sets;
    state.counters["sleeps/set"] = static_cast<double>(after.sleeps - before.sleeps) / sets;
    state.counters["handoffs/set"] = static_cast<double>(after.handoffs - before.handoffs) / sets;
  }
}

void BM_StdLockHot(benchmark::State& state) {
  auto& pool = HotStdPool();
  const auto& sets = HotSetsFor(state.thread_index());
  size_t k = 0;
  for (auto _ : state) StdLockUnlock(pool, sets[k++ % sets.size()]);
  state.SetItemsProcessed(state.iterations() * kHotSetSize);
}

// kHotThreads threads run the high-contention load for kFairnessRun; returns the worst
// thread's completed sets over the best thread's.
template <typename Pool, typename LockUnlock>
double MeasureFairness(Pool& pool, LockUnlock lock_unlock, uint64_t* total) {
  std::vector<uint64_t> done(kHotThreads, 0);
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kHotThreads; ++t) {
    threads.emplace_back([&, t] {
      const auto& sets = HotSetsFor(t);
      ready.fetch_add(1);
      while (ready.load() < kHotThreads) std::this_thread::yield();
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        lock_unlock(pool, sets[n % sets.size()]);
        ++n;
      }
      done[t] = n;
    });
  }
  while (ready.load() < kHotThreads) std::this_thread::yield();
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < kFairnessRun) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a timer, not synchronisation
  }
  stop.store(true);
  for (auto& th : threads) th.join();
  const auto [lo, hi] = std::minmax_element(done.begin(), done.end());
  *total = 0;
  for (uint64_t n : done) *total += n;
  return *hi == 0 ? 0.0 : static_cast<double>(*lo) / static_cast<double>(*hi);
}

double g_ww_fairness = -1;

void BM_WwFairness(benchmark::State& state) {
  for (auto _ : state) {
    uint64_t total = 0;
    g_ww_fairness = MeasureFairness(
        HotWwPool(), [](auto& pool, const Set& set) { WwLockUnlock(pool, set); }, &total);
    state.counters["worst_vs_best"] = g_ww_fairness;
    state.counters["sets"] = static_cast<double>(total);
  }
  static const bool registered = [] {
    std::atexit([] {
      if (g_ww_fairness >= 0) std::printf("ratio ww_fairness_4_of_16_t8 %.3f\n", g_ww_fairness);
    });
    return true;
  }();
  (void)registered;
}

// The same figure for the back-off baseline (information only: no ratio line).
void BM_StdFairness(benchmark::State& state) {
  for (auto _ : state) {
    uint64_t total = 0;
    state.counters["worst_vs_best"] = MeasureFairness(
        HotStdPool(), [](auto& pool, const Set& set) { StdLockUnlock(pool, set); }, &total);
    state.counters["sets"] = static_cast<double>(total);
  }
}

BENCHMARK(BM_WwLock)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_StdLock)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_WwLockHot)->Threads(kHotThreads)->UseRealTime();
BENCHMARK(BM_StdLockHot)->Threads(kHotThreads)->UseRealTime();
BENCHMARK(BM_WwFairness)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StdFairness)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

const bool kRatiosRegistered = [] {
  for (int t : {1, 2, 4}) {
    const std::string suffix = "/real_time/threads:" + std::to_string(t);
    bench::RegisterRatio("ww_lock_800_of_100k_t" + std::to_string(t), "BM_WwLock" + suffix,
                         "BM_StdLock" + suffix, bench::RatioKind::kTime);
  }
  const std::string hot = "/real_time/threads:" + std::to_string(kHotThreads);
  bench::RegisterRatio("ww_lock_4_of_16_t8", "BM_WwLockHot" + hot, "BM_StdLockHot" + hot,
                       bench::RatioKind::kTime);
  return true;
}();

}  // namespace
}  // namespace sharegpu

SHAREGPU_BENCH_MAIN()
