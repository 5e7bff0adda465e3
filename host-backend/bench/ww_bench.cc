// Locking many objects at once: ww_mutex with an acquire context and -EDEADLK back-off against
// the std::lock algorithm (libstdc++'s __lock_impl for many mutexes: lock one, try_lock the
// rest, on failure release everything, yield, and start again from the one that failed).
//
// Each iteration locks and then unlocks 800 distinct objects picked at random (in random order)
// from a pool of 100,000, on 1, 2 and 4 threads. Both variants use the same pre-generated sets
// (per thread index) and the same pool size, and run the same thread counts.
#include <benchmark/benchmark.h>

#include <algorithm>
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

using Set = std::vector<int>;

// Sets for thread t: the same for both variants, generated once.
const std::vector<Set>& SetsFor(int thread) {
  static const auto* const sets = [] {
    auto* all = new std::vector<std::vector<Set>>(kMaxThreads);
    std::vector<int> ids(kPoolSize);
    for (int t = 0; t < kMaxThreads; ++t) {
      std::mt19937 rng(0x5eed + t);
      for (int k = 0; k < kSetsPerThread; ++k) {
        std::iota(ids.begin(), ids.end(), 0);
        for (int i = 0; i < kSetSize; ++i) {  // partial Fisher-Yates: distinct, random order
          std::uniform_int_distribution<int> pick(i, kPoolSize - 1);
          std::swap(ids[i], ids[pick(rng)]);
        }
        (*all)[t].emplace_back(ids.begin(), ids.begin() + kSetSize);
      }
    }
    return all;
  }();
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

// The ww_mutex protocol: on -EDEADLK drop everything, sleep on the contended lock with
// LockSlow, and go around again (the contended lock is already ours).
void WwLockUnlock(WwPoolT& pool, const Set& set) {
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
void StdLockUnlock(std::vector<std::mutex>& pool, const Set& set) {
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

BENCHMARK(BM_WwLock)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_StdLock)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();

const bool kRatiosRegistered = [] {
  for (int t : {1, 2, 4}) {
    const std::string suffix = "/real_time/threads:" + std::to_string(t);
    bench::RegisterRatio("ww_lock_800_of_100k_t" + std::to_string(t), "BM_WwLock" + suffix,
                         "BM_StdLock" + suffix, bench::RatioKind::kTime);
  }
  return true;
}();

}  // namespace
}  // namespace sharegpu

SHAREGPU_BENCH_MAIN()
