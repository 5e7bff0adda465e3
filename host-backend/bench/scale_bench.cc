// Scale: the per-operation cost of create, export, import, destroy and a 4 KiB job with 64k
// buffers alive against the same with 1k, through the C API (what QEMU calls), and the
// process's descriptor count and heap per buffer at both sizes.
//
// The world for N: two devices; N buffers of 4 KiB in SYSTEM placement on device a, a
// quarter of them exported (by UUID, as the QEMU device does) and imported into device b.
// Each benchmark iteration does a batch of kBatch operations of one kind, timed alone
// (manual time: the thread's CPU time); what the batch created is destroyed, untimed, so N
// stays N.
//
// Prints `ratio scale_<op>_64k_vs_1k VALUE` (targets <= 2.0), `ratio scale_fds_64k_vs_1k`
// (descriptors open after building the 64k world / after the 1k one; target 1.0) and
// `ratio scale_heap_per_bo_64k_vs_1k`, then one `scale:` line with the absolute figures.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ratio_reporter.h"
#include "sharegpu/backend-testing.h"

namespace {

constexpr uint64_t kBoSize = 4096;
constexpr int kBatch = 256;
constexpr int kSmall = 1024, kLarge = 65536;

void Check(int err, const char* what) {
  if (err != 0) {
    std::fprintf(stderr, "scale_bench: %s: %s\n", what, sgb_strerror(err));
    std::abort();
  }
}

struct Figures {
  size_t fds = 0;
  double heap_per_bo = 0;     // C++ heap bytes per 4 KiB SYSTEM buffer
  double heap_per_share = 0;  // per export + import of one of them
  double build_seconds = 0;
};
std::map<int, Figures>& AllFigures() {
  static std::map<int, Figures> figures;
  return figures;
}

class World {
 public:
  explicit World(int n) : n_(n) {
    auto t0 = std::chrono::steady_clock::now();
    Check(sgb_backend_new(&backend_), "backend");
    sgb_device_config ca{"scale-a", 64 << 20, 1, 0, nullptr}, cb{"scale-b", 64 << 20, 1, 0, nullptr};
    Check(sgb_device_create(backend_, &ca, &a_), "device a");
    Check(sgb_device_create(backend_, &cb, &b_), "device b");
    Figures& f = AllFigures()[n];
    size_t heap0 = mallinfo2().uordblks;
    bos_.resize(n);
    for (uint32_t& h : bos_) Check(sgb_bo_create(a_, kBoSize, SGB_PLACEMENT_SYSTEM, 0, &h), "create");
    size_t heap1 = mallinfo2().uordblks;
    // Touched once, so that jobs measure the job and not the first fault of a page.
    const uint32_t one = 1;
    for (uint32_t h : bos_) Check(sgb_bo_cpu_write(a_, h, 0, &one, sizeof(one)), "touch");
    for (int i = 0; i < n; i += 4) {
      sgb_uuid uuid;
      uint32_t imported;
      Check(sgb_bo_export(a_, bos_[i], &uuid, nullptr), "export");
      Check(sgb_bo_import_uuid(b_, &uuid, &imported), "import");
    }
    size_t heap2 = mallinfo2().uordblks;
    f.fds = sgb_process_open_fds();
    f.heap_per_bo = double(heap1 - heap0) / n;
    f.heap_per_share = double(heap2 - heap1) / ((n + 3) / 4);
    f.build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  ~World() {
    sgb_device_destroy(b_);
    sgb_device_destroy(a_);
    sgb_backend_unref(backend_);
  }
  int n() const { return n_; }
  sgb_device* a() const { return a_; }
  sgb_device* b() const { return b_; }
  uint32_t Background(size_t i) const { return bos_[i % bos_.size()]; }

 private:
  int n_;
  sgb_backend* backend_ = nullptr;
  sgb_device* a_ = nullptr;
  sgb_device* b_ = nullptr;
  std::vector<uint32_t> bos_;
};

// One world at a time: the benchmarks are registered grouped by N.
World& WorldFor(int n) {
  static std::unique_ptr<World> world;
  if (!world || world->n() != n) {
    world.reset();
    world = std::make_unique<World>(n);
  }
  return *world;
}

// Thread CPU time, not wall time: the figure is what an operation costs, and other load on
// the cores (CI shares them) does not count. Cache and TLB misses, which do grow with N, do.
struct Clock {
  using time_point = double;
  static double now() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
  }
};
double Since(double t0) { return Clock::now() - t0; }

std::vector<uint32_t> CreateBatch(sgb_device* dev) {
  std::vector<uint32_t> hs(kBatch);
  for (uint32_t& h : hs) Check(sgb_bo_create(dev, kBoSize, SGB_PLACEMENT_SYSTEM, 0, &h), "create");
  return hs;
}
void DestroyBatch(sgb_device* dev, const std::vector<uint32_t>& hs) {
  for (uint32_t h : hs) Check(sgb_bo_destroy(dev, h), "destroy");
}

enum class Op { kCreate, kExport, kImport, kDestroy, kJob };

void BM_Scale(benchmark::State& state, Op op) {
  World& w = WorldFor(static_cast<int>(state.range(0)));
  size_t cursor = 0;
  double total = 0;
  for (auto _ : state) {
    double t = 0;
    switch (op) {
      case Op::kCreate: {
        auto t0 = Clock::now();
        std::vector<uint32_t> hs = CreateBatch(w.a());
        t = Since(t0);
        DestroyBatch(w.a(), hs);
        break;
      }
      case Op::kDestroy: {
        std::vector<uint32_t> hs = CreateBatch(w.a());
        auto t0 = Clock::now();
        DestroyBatch(w.a(), hs);
        t = Since(t0);
        break;
      }
      case Op::kExport:
      case Op::kImport: {
        std::vector<uint32_t> hs = CreateBatch(w.a());
        std::vector<sgb_uuid> uuids(kBatch);
        std::vector<uint32_t> imported(kBatch);
        auto t0 = Clock::now();
        for (int i = 0; i < kBatch; ++i) Check(sgb_bo_export(w.a(), hs[i], &uuids[i], nullptr), "export");
        if (op == Op::kExport) t = Since(t0);
        t0 = Clock::now();
        for (int i = 0; i < kBatch; ++i) Check(sgb_bo_import_uuid(w.b(), &uuids[i], &imported[i]), "import");
        if (op == Op::kImport) t = Since(t0);
        DestroyBatch(w.b(), imported);
        DestroyBatch(w.a(), hs);
        break;
      }
      case Op::kJob: {
        auto t0 = Clock::now();
        for (int i = 0; i < kBatch; ++i) {
          cursor = cursor * 6364136223846793005ull + 1442695040888963407ull;  // spread out
          uint64_t fence;
          Check(sgb_job_fill(w.a(), w.Background(cursor >> 33), 0, kBoSize,
                             static_cast<uint32_t>(cursor), &fence),
                "fill");
        }
        t = Since(t0);
        break;
      }
    }
    state.SetIterationTime(t);
    total += t;
  }
  if (state.iterations() > 0) {
    state.counters["us_per_op"] = total * 1e6 / (double(kBatch) * double(state.iterations()));
  }
}

const char* OpName(Op op) {
  switch (op) {
    case Op::kCreate: return "create";
    case Op::kExport: return "export";
    case Op::kImport: return "import";
    case Op::kDestroy: return "destroy";
    case Op::kJob: return "job4k";
  }
  return "?";
}

const bool kRegistered = [] {
  const Op ops[] = {Op::kCreate, Op::kExport, Op::kImport, Op::kDestroy, Op::kJob};
  for (int n : {kSmall, kLarge}) {
    for (Op op : ops) {
      benchmark::RegisterBenchmark((std::string("BM_Scale_") + OpName(op)).c_str(), BM_Scale, op)
          ->Arg(n)
          ->UseManualTime();
    }
  }
  for (Op op : ops) {
    std::string name = OpName(op);
    sharegpu::bench::RegisterRatio(
        "scale_" + name + "_64k_vs_1k", "BM_Scale_" + name + "/65536/manual_time",
        "BM_Scale_" + name + "/1024/manual_time", sharegpu::bench::RatioKind::kTime);
  }
  return true;
}();

}  // namespace

int main(int argc, char** argv) {
  int rc = sharegpu::bench::RunBenchmarksAndPrintRatios(argc, argv);
  auto& f = AllFigures();
  if (f.count(kSmall) && f.count(kLarge)) {
    const Figures& s = f[kSmall];
    const Figures& l = f[kLarge];
    std::printf("ratio scale_fds_64k_vs_1k %.3f\n", double(l.fds) / double(s.fds));
    std::printf("ratio scale_heap_per_bo_64k_vs_1k %.3f\n", l.heap_per_bo / s.heap_per_bo);
    std::printf("scale: open fds after 1k / 64k SYSTEM buffers: %zu / %zu; heap per 4 KiB "
                "SYSTEM buffer: %.0f / %.0f bytes; per export+import: %.0f / %.0f bytes; "
                "world build: %.2f / %.2f s\n",
                s.fds, l.fds, s.heap_per_bo, l.heap_per_bo, s.heap_per_share, l.heap_per_share,
                s.build_seconds, l.build_seconds);
    std::fflush(stdout);
  }
  return rc;
}
