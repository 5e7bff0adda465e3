// Asynchronous jobs (issue 8 §6): throughput with 1, 8 and 64 jobs in flight, the submit ->
// fence latency of a job on each engine against running the same work directly on the
// caller's thread (what the device did before jobs became asynchronous), and the virgl engine against the cpu
// engine for FILL and COPY of 64 KiB and 16 MiB (strict devices: the virgl side keeps the
// results in GL, as the cpu side keeps them in its cache model).
#include <benchmark/benchmark.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <memory>
#include <mutex>
#include <vector>

#include "core/backend.h"
#include "core/device.h"
#include "mem/copy_engine.h"
#include "mem/device_cache.h"
#include "ratio_reporter.h"

namespace sharegpu {
namespace {

constexpr uint64_t kJobSize = 64 << 10;
constexpr int kJobsPerIteration = 64;

// A device with kJobsPerIteration buffers of kJobSize, shared by the benchmarks.
struct Bench {
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Device> dev;
  std::vector<uint32_t> bos;
};

Bench& GetBench() {
  static Bench bench = [] {
    Bench b;
    b.backend = Backend::Create();
    DeviceConfig cfg;
    cfg.name = "engine-bench";
    cfg.vram_size = 16 << 20;
    auto dev = Device::Create(b.backend, cfg);
    if (!dev.ok()) {
      std::fprintf(stderr, "engine_bench: cannot create the device: %d\n", dev.status());
      std::abort();
    }
    b.dev = dev.value();
    for (int i = 0; i < kJobsPerIteration; ++i) {
      auto h = b.dev->CreateBo(kJobSize, Placement::kDevice);
      if (!h.ok()) std::abort();
      b.bos.push_back(*h);
    }
    return b;
  }();
  return bench;
}

// Counts done callbacks; Wait(n) returns once n jobs completed since the last Reset.
struct Completions {
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  int errors = 0;
  void Add(Status status) {
    std::lock_guard lock(mu);
    ++done;
    errors += status != kOk;
    cv.notify_all();
  }
  void WaitAtLeast(int n) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done >= n; });
  }
};

// kJobsPerIteration FILL jobs per iteration, at most `window` of them in flight.
void BM_JobsInFlight(benchmark::State& state) {
  Bench& b = GetBench();
  const int window = static_cast<int>(state.range(0));
  for (auto _ : state) {
    Completions c;
    for (int i = 0; i < kJobsPerIteration; ++i) {
      if (i >= window) c.WaitAtLeast(i - window + 1);
      JobRequest req{JobOp::kFill, b.bos[i], 0, 0, 0, kJobSize, static_cast<uint32_t>(i)};
      auto seqno = b.dev->Submit(req, [&c](uint64_t, Status s, uint64_t) { c.Add(s); });
      if (!seqno.ok()) {
        state.SkipWithError("submit failed");
        return;
      }
    }
    c.WaitAtLeast(kJobsPerIteration);
    if (c.errors) state.SkipWithError("a job failed");
  }
  state.SetItemsProcessed(state.iterations() * kJobsPerIteration);
}
BENCHMARK(BM_JobsInFlight)->Arg(1)->Arg(8)->Arg(64)->UseRealTime();

// One 4 KiB FILL: submitted, waited for through its done callback.
void BM_SubmitToFence(benchmark::State& state) {
  Bench& b = GetBench();
  for (auto _ : state) {
    Completions c;
    JobRequest req{JobOp::kFill, b.bos[0], 0, 0, 0, 4096, 7};
    if (!b.dev->Submit(req, [&c](uint64_t, Status s, uint64_t) { c.Add(s); }).ok()) {
      state.SkipWithError("submit failed");
      return;
    }
    c.WaitAtLeast(1);
  }
}
BENCHMARK(BM_SubmitToFence)->UseRealTime();

// The same 4 KiB fill run directly by the caller through the cache model (the baseline).
void BM_DirectFill(benchmark::State& state) {
  auto storage = Storage::CreateSystem("engine-bench-direct", kJobSize);
  if (!storage.ok()) {
    state.SkipWithError("no storage");
    return;
  }
  DeviceCache cache(CacheMode::kCoherent);
  const DeviceView view{(*storage)->data(), kJobSize, &cache};
  for (auto _ : state) {
    if (CopyEngine::Fill(view, 0, 4096, 7) != kOk) state.SkipWithError("fill failed");
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_DirectFill)->UseRealTime();

// A strict device on `engine` with two buffers of `size`: FILL or COPY submitted and waited
// for, one per iteration.
std::shared_ptr<Device> EngineDevice(const std::string& engine) {
  static std::map<std::string, std::shared_ptr<Device>> devices;
  auto it = devices.find(engine);
  if (it != devices.end()) return it->second;
  DeviceConfig cfg;
  cfg.name = "engine-bench-" + engine;
  cfg.vram_size = 64 << 20;
  cfg.cache_mode = CacheMode::kStrict;
  cfg.engine = engine;
  auto dev = Device::Create(GetBench().backend, cfg);
  std::shared_ptr<Device> d = dev.ok() ? dev.value() : nullptr;
  devices[engine] = d;
  return d;
}

void EngineJob(benchmark::State& state, const std::string& engine, JobOp op) {
  const uint64_t size = static_cast<uint64_t>(state.range(0));
  auto dev = EngineDevice(engine);
  if (!dev) {
    state.SkipWithError(("engine " + engine + " unavailable").c_str());
    return;
  }
  auto a = dev->CreateBo(size, Placement::kDevice);
  auto b = dev->CreateBo(size, Placement::kDevice);
  if (!a.ok() || !b.ok()) {
    state.SkipWithError("no buffers");
    return;
  }
  for (auto _ : state) {
    Completions c;
    JobRequest req = op == JobOp::kFill ? JobRequest{JobOp::kFill, *a, 0, 0, 0, size, 0x5a5a5a5a}
                                        : JobRequest{JobOp::kCopy, *b, *a, 0, 0, size, 0};
    if (!dev->Submit(req, [&c](uint64_t, Status s, uint64_t) { c.Add(s); }).ok()) {
      state.SkipWithError("submit failed");
      break;
    }
    c.WaitAtLeast(1);
    if (c.errors) {
      state.SkipWithError("job failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  (void)dev->DestroyBo(*a);
  (void)dev->DestroyBo(*b);
}

void BM_FillCpu(benchmark::State& state) { EngineJob(state, "cpu", JobOp::kFill); }
void BM_FillVirgl(benchmark::State& state) { EngineJob(state, "virgl", JobOp::kFill); }
void BM_CopyCpu(benchmark::State& state) { EngineJob(state, "cpu", JobOp::kCopy); }
void BM_CopyVirgl(benchmark::State& state) { EngineJob(state, "virgl", JobOp::kCopy); }
BENCHMARK(BM_FillCpu)->Arg(64 << 10)->Arg(16 << 20)->UseRealTime();
// 4 KiB: the virgl engine's submit -> fence latency (BM_SubmitToFence is the cpu engine's)
BENCHMARK(BM_FillVirgl)->Arg(4096)->Arg(64 << 10)->Arg(16 << 20)->UseRealTime();
BENCHMARK(BM_CopyCpu)->Arg(64 << 10)->Arg(16 << 20)->UseRealTime();
BENCHMARK(BM_CopyVirgl)->Arg(64 << 10)->Arg(16 << 20)->UseRealTime();

const bool registered = [] {
  using bench::RatioKind;
  bench::RegisterRatio("jobs_in_flight_8_vs_1", "BM_JobsInFlight/8/real_time",
                       "BM_JobsInFlight/1/real_time", RatioKind::kBandwidth);
  bench::RegisterRatio("jobs_in_flight_64_vs_1", "BM_JobsInFlight/64/real_time",
                       "BM_JobsInFlight/1/real_time", RatioKind::kBandwidth);
  bench::RegisterRatio("submit_to_fence_latency_cpu_vs_direct", "BM_SubmitToFence/real_time",
                       "BM_DirectFill/real_time", RatioKind::kTime);
  bench::RegisterRatio("submit_to_fence_latency_virgl_vs_direct", "BM_FillVirgl/4096/real_time",
                       "BM_DirectFill/real_time", RatioKind::kTime);
  for (const char* op : {"Fill", "Copy"}) {
    for (const char* size : {"65536", "16777216"}) {
      const std::string lower = op == std::string("Fill") ? "fill" : "copy";
      const std::string label = std::string(size) == "65536" ? "64KiB" : "16MiB";
      bench::RegisterRatio("virgl_vs_cpu_" + lower + "_" + label,
                           std::string("BM_") + op + "Virgl/" + size + "/real_time",
                           std::string("BM_") + op + "Cpu/" + size + "/real_time",
                           RatioKind::kBandwidth);
    }
  }
  return true;
}();

}  // namespace
}  // namespace sharegpu

SHAREGPU_BENCH_MAIN()
