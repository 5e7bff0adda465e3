// Issue 9's torture test at the backend's C API (torture.h). A GoogleTest binary with its own
// main, for the flags of a replay or a soak:
//   --seed N       run only seed N (every test of the binary; the random-seed test too)
//   --seconds S    bound of each seed's random phase (default 2; the negative run: half)
//   --ops N        also stop after N operations (a shorter replay)
//   --threads N    worker threads (default 6)
//   --verbose      print every operation as it happens
//   --require-virgl  fail instead of falling back to cpu devices when virgl cannot start
// Each run prints its seed and a summary; a mismatch prints the seed, the last 50 operations,
// the buffer, the byte range and the bytes expected and got.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "sharegpu/backend.h"
#include "torture.h"

namespace sharegpu::torture {
namespace {

struct Flags {
  bool have_seed = false;
  uint64_t seed = 0;
  double seconds = 2.0;
  bool have_seconds = false;
  uint64_t ops = 0;
  int threads = 6;
  bool verbose = false;
  bool require_virgl = false;
  bool close_waits = false;
};
Flags g_flags;

// Keeps the process's virgl renderer up across the runs (each run makes and destroys its own
// backend and devices), so that every run starts from the same descriptor count; also says
// whether virgl can run here at all.
class VirglKeeper : public ::testing::Environment {
 public:
  void SetUp() override {
    if (sgb_backend_new(&backend_) != 0) return;
    sgb_device_config cfg{};
    cfg.name = "torture-virgl-keeper";
    cfg.vram_size = 1u << 20;
    cfg.coherent = 0;
    cfg.engine = "virgl";
    int rc = sgb_device_create(backend_, &cfg, &dev_);
    if (rc == 0) {
      available_ = true;
    } else {
      why_ = sgb_strerror(rc);
    }
  }
  void TearDown() override {
    if (dev_) sgb_device_destroy(dev_);
    if (backend_) sgb_backend_unref(backend_);
    dev_ = nullptr;
    backend_ = nullptr;
  }
  bool available() const { return available_; }
  const std::string& why() const { return why_; }

 private:
  sgb_backend* backend_ = nullptr;
  sgb_device* dev_ = nullptr;
  bool available_ = false;
  std::string why_;
};
VirglKeeper* g_virgl = nullptr;

bool UseVirgl() {
  if (g_virgl->available()) return true;
  if (g_flags.require_virgl) {
    ADD_FAILURE() << "virgl engine unavailable (" << g_virgl->why() << ") and --require-virgl";
  } else {
    std::printf("torture: virgl engine unavailable (%s): cpu devices only\n",
                g_virgl->why().c_str());
  }
  return false;
}

// Backend diagnostics: refused moves (-EBUSY: pinned, or fences still pending) are guest
// errors the run makes on purpose; warnings and errors are shown.
void LogHandler(void*, sgb_log_level level, const char* msg) {
  if (level == SGB_LOG_WARNING || level == SGB_LOG_ERROR || g_flags.verbose) {
    std::fprintf(stderr, "backend log %d: %s\n", static_cast<int>(level), msg);
  }
}

Options BaseOptions(uint64_t seed, double default_seconds) {
  Options o;
  o.seed = seed;
  o.seconds = g_flags.have_seconds ? g_flags.seconds : default_seconds;
  o.max_ops = g_flags.ops;
  o.threads = g_flags.threads;
  o.verbose = g_flags.verbose;
  o.close_waits_for_jobs = g_flags.close_waits;
  return o;
}

std::vector<uint64_t> Seeds(std::vector<uint64_t> fixed) {
  if (g_flags.have_seed) return {g_flags.seed};
  return fixed;
}

Report RunPrinted(const Options& o, const char* what) {
  std::printf("torture %s: seed %llu, %.1f s, %d threads (rerun: --seed %llu)\n", what,
              static_cast<unsigned long long>(o.seed), o.seconds, o.threads,
              static_cast<unsigned long long>(o.seed));
  std::fflush(stdout);
  Report r = Run(o);
  std::printf("torture %s: %s\n", what, r.Summary().c_str());
  std::fflush(stdout);
  for (const std::string& f : r.failures) ADD_FAILURE() << f;
  return r;
}

// With every barrier the rules require: zero mismatches, and (`interleavings`) the
// interleavings the run exists for happened, summed over its seeds.
void ExpectCleanRuns(const std::vector<uint64_t>& seeds, double default_seconds,
                     bool interleavings) {
  const bool virgl = UseVirgl();
  Report sum;
  for (uint64_t seed : seeds) {
    Options o = BaseOptions(seed, default_seconds);
    o.devices = StandardDevices(virgl, false);
    Report r = RunPrinted(o, "with barriers");
    EXPECT_EQ(r.mismatches, 0u) << r.first_mismatch;
    EXPECT_GT(r.ops, 0u);
    sum.moves += r.moves;
    sum.moves_with_jobs_in_flight += r.moves_with_jobs_in_flight;
    sum.moves_with_dirty_caches += r.moves_with_dirty_caches;
    sum.moves_refused_pinned += r.moves_refused_pinned;
    sum.evictions += r.evictions;
    sum.move_notifies += r.move_notifies;
    sum.jobs_on_imports += r.jobs_on_imports;
    sum.cross_engine_jobs += r.cross_engine_jobs;
    sum.implicit_sync_jobs += r.implicit_sync_jobs;
    sum.jobs_waited += r.jobs_waited;
    sum.jobs_held += r.jobs_held;
    sum.checksums += r.checksums;
    sum.cpu_reads += r.cpu_reads;
    sum.closes_with_jobs_in_flight += r.closes_with_jobs_in_flight;
  }
  // A bounded replay need not reach every interleaving, nor one seed on a slow (sanitizer)
  // build; the fixed seeds together must.
  if (g_flags.ops || !interleavings) return;
  EXPECT_GT(sum.checksums, 0u);
  EXPECT_GT(sum.cpu_reads, 0u);
  EXPECT_GT(sum.moves_with_jobs_in_flight, 0u) << "no move waited for jobs in flight";
  EXPECT_GT(sum.moves_with_dirty_caches, 0u) << "no move met unflushed device writes";
  EXPECT_GT(sum.moves_refused_pinned, 0u) << "no move met a pin";
  EXPECT_GT(sum.evictions, 0u) << "no eviction under VRAM pressure";
  EXPECT_GT(sum.move_notifies, 0u) << "no move invalidated an importer's mapping";
  EXPECT_GT(sum.jobs_on_imports, 0u);
  if (virgl) {
    EXPECT_GT(sum.cross_engine_jobs, 0u) << "no job on a buffer of the other engine";
  }
  EXPECT_GT(sum.implicit_sync_jobs, 0u) << "no job was ordered by implicit sync alone";
  EXPECT_GT(sum.jobs_waited, 0u) << "no job waited for another device's fence";
  EXPECT_GT(sum.jobs_held, 0u) << "no completion was held";
  EXPECT_GT(sum.closes_with_jobs_in_flight, 0u) << "no import was closed under its jobs";
}

TEST(TortureTest, FixedSeedsZeroMismatches) { ExpectCleanRuns(Seeds({1, 2, 3}), 2.0, true); }

TEST(TortureTest, RandomSeedZeroMismatches) {
  ExpectCleanRuns(Seeds({std::random_device{}() | 0x100000000ull}), 2.0, false);
}

// The oracle can see: the same seeds with the barriers left out, every device strict, must
// report mismatches (a device write not yet in memory, a device reading stale lines).
TEST(TortureTest, WithoutBarriersStrictDevicesShowMismatches) {
  const bool virgl = UseVirgl();
  for (uint64_t seed : Seeds({1, 2, 3})) {
    Options o = BaseOptions(seed, 1.0);
    o.devices = StandardDevices(virgl, true);
    o.barriers = false;
    Report r = RunPrinted(o, "without barriers");
    EXPECT_GT(r.mismatches, 0u) << "seed " << seed
                                << ": barriers left out on strict devices, yet no mismatch: "
                                   "the oracle does not see";
  }
}

}  // namespace
}  // namespace sharegpu::torture

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using sharegpu::torture::g_flags;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seed") {
      g_flags.have_seed = true;
      g_flags.seed = std::strtoull(value("--seed"), nullptr, 0);
    } else if (a == "--seconds") {
      g_flags.have_seconds = true;
      g_flags.seconds = std::strtod(value("--seconds"), nullptr);
    } else if (a == "--ops") {
      g_flags.ops = std::strtoull(value("--ops"), nullptr, 0);
    } else if (a == "--threads") {
      g_flags.threads = std::atoi(value("--threads"));
    } else if (a == "--verbose") {
      g_flags.verbose = true;
    } else if (a == "--close-waits") {
      g_flags.close_waits = true;
    } else if (a == "--require-virgl") {
      g_flags.require_virgl = true;
    } else {
      std::fprintf(stderr,
                   "unknown argument %s (--seed N, --seconds S, --ops N, --threads N, "
                   "--verbose, --require-virgl, and gtest's flags)\n",
                   a.c_str());
      return 2;
    }
  }
  if (g_flags.threads < 1) g_flags.threads = 1;
  sgb_set_log_handler(sharegpu::torture::LogHandler, nullptr);
  sharegpu::torture::g_virgl = static_cast<sharegpu::torture::VirglKeeper*>(
      ::testing::AddGlobalTestEnvironment(new sharegpu::torture::VirglKeeper));
  return RUN_ALL_TESTS();
}
