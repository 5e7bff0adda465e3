// Copy-engine bandwidth against plain memcpy, over the same memfd-backed buffers.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "mem/arena.h"
#include "mem/copy_engine.h"
#include "mem/device_cache.h"
#include "ratio_reporter.h"

namespace sharegpu {
namespace {

constexpr uint64_t kSize = 64ull << 20;

// Two 64 MiB buffers with their pages already faulted in, shared by every benchmark so that
// the candidate and the memcpy baseline move exactly the same pages.
struct Buffers {
  std::shared_ptr<Storage> src, dst;
};

const Buffers& GetBuffers() {
  static const Buffers buffers = [] {
    auto src = Storage::CreateSystem("bench-src", kSize);
    auto dst = Storage::CreateSystem("bench-dst", kSize);
    if (!src.ok() || !dst.ok()) {
      std::fprintf(stderr, "copy_bench: cannot create buffers: %d %d\n", src.status(),
                   dst.status());
      std::abort();
    }
    for (uint64_t i = 0; i < kSize; ++i) (*src)->data()[i] = static_cast<uint8_t>(i * 131);
    std::memset((*dst)->data(), 0, kSize);
    return Buffers{src.value(), dst.value()};
  }();
  return buffers;
}

void BM_Memcpy64MiB(benchmark::State& state) {
  const Buffers& b = GetBuffers();
  for (auto _ : state) {
    std::memcpy(b.dst->data(), b.src->data(), kSize);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kSize));
}

void BM_CopyEngineCoherent64MiB(benchmark::State& state) {
  const Buffers& b = GetBuffers();
  DeviceCache src_cache(CacheMode::kCoherent), dst_cache(CacheMode::kCoherent);
  const DeviceView src{b.src->data(), kSize, &src_cache};
  const DeviceView dst{b.dst->data(), kSize, &dst_cache};
  for (auto _ : state) {
    if (CopyEngine::Copy(src, 0, dst, 0, kSize) != kOk) state.SkipWithError("copy failed");
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kSize));
}

// The strict model's cost: the copy through per-page lines plus the flush/invalidate barriers
// that make it visible and leave the caches empty for the next iteration.
void BM_CopyEngineStrict64MiB(benchmark::State& state) {
  const Buffers& b = GetBuffers();
  DeviceCache src_cache(CacheMode::kStrict), dst_cache(CacheMode::kStrict);
  const DeviceView src{b.src->data(), kSize, &src_cache};
  const DeviceView dst{b.dst->data(), kSize, &dst_cache};
  for (auto _ : state) {
    if (CopyEngine::Copy(src, 0, dst, 0, kSize) != kOk) state.SkipWithError("copy failed");
    dst_cache.WritebackAndDropAll(dst.mem);
    src_cache.WritebackAndDropAll(src.mem);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kSize));
}

void BM_Checksum64MiB(benchmark::State& state) {
  const Buffers& b = GetBuffers();
  DeviceCache cache(CacheMode::kCoherent);
  const DeviceView src{b.src->data(), kSize, &cache};
  for (auto _ : state) {
    auto crc = CopyEngine::Checksum(src, 0, kSize);
    if (!crc.ok()) state.SkipWithError("checksum failed");
    benchmark::DoNotOptimize(crc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kSize));
}

BENCHMARK(BM_Memcpy64MiB)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CopyEngineCoherent64MiB)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CopyEngineStrict64MiB)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Checksum64MiB)->Unit(benchmark::kMillisecond);

const bool kRatiosRegistered = [] {
  using bench::RatioKind;
  bench::RegisterRatio("copy_engine_64MiB_vs_memcpy", "BM_CopyEngineCoherent64MiB",
                       "BM_Memcpy64MiB", RatioKind::kBandwidth);
  bench::RegisterRatio("copy_engine_strict_64MiB_vs_memcpy", "BM_CopyEngineStrict64MiB",
                       "BM_Memcpy64MiB", RatioKind::kBandwidth);
  bench::RegisterRatio("crc32c_vs_memcpy_64MiB", "BM_Checksum64MiB", "BM_Memcpy64MiB",
                       RatioKind::kBandwidth);
  return true;
}();

}  // namespace
}  // namespace sharegpu

SHAREGPU_BENCH_MAIN()
