// Devices on each engine (DeviceConfig::engine "cpu" and "virgl"): the engine-agnostic job
// tests run on both (results of FILL / COPY / CHECKSUM, completion in submission order, the
// coherency barriers of a strict device in both directions, moves with unflushed device
// writes, a coherent device), then sharing across engines and what only the virgl engine has
// (its cache is the buffer's GL resource). The virgl cases run on the real renderer; where
// virglrenderer cannot initialise they are skipped with the reason printed.
#include "../job_recorder.h"
#include "engine/virgl_engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/backend.h"
#include "core/buffer_object.h"
#include "core/device.h"
#include "engine/cpu_engine.h"
#include "engine/virgl_renderer.h"
#include "mem/copy_engine.h"

namespace sharegpu {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr std::chrono::seconds kDeadline{30};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// `pattern` little-endian from a 4-aligned offset.
std::vector<uint8_t> PatternBytes(size_t n, uint32_t pattern) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(pattern >> ((i % 4) * 8));
  return v;
}

uint32_t Crc(const std::vector<uint8_t>& v, size_t off = 0, size_t len = SIZE_MAX) {
  len = std::min(len, v.size() - off);
  return Crc32c(0, v.data() + off, len);
}

void Put(std::vector<uint8_t>& dst, size_t off, const std::vector<uint8_t>& src) {
  std::copy(src.begin(), src.end(), dst.begin() + static_cast<ptrdiff_t>(off));
}

using Recorder = JobRecorder;

// The renderer, kept from the first test to the last (re-initialising EGL per test costs
// time, not coverage), or why it cannot run here.
class VirglEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    auto renderer = VirglRenderer::Get();
    if (renderer) {
      renderer_ = std::move(renderer).value();
    } else {
      unavailable_ = "virglrenderer did not initialise (" + std::to_string(renderer.status()) +
                     "; needs libvirglrenderer1, libegl-mesa0, libgl1-mesa-dri)";
    }
  }
  void TearDown() override { renderer_.reset(); }
  const std::string& unavailable() const { return unavailable_; }

 private:
  std::shared_ptr<VirglRenderer> renderer_;
  std::string unavailable_;
};

VirglEnvironment* const g_virgl_env = static_cast<VirglEnvironment*>(
    ::testing::AddGlobalTestEnvironment(new VirglEnvironment));

// "" when the virgl engine can run here, else why not.
const std::string& VirglUnavailable() { return g_virgl_env->unavailable(); }

class EngineFixture {
 protected:
  // A device on `engine`; nullptr (and a failure) when it cannot be made.
  std::shared_ptr<Device> NewDevice(const std::string& name, CacheMode mode,
                                    const std::string& engine, uint64_t vram = 4 * kMiB) {
    DeviceConfig cfg;
    cfg.name = name;
    cfg.vram_size = vram;
    cfg.cache_mode = mode;
    cfg.engine = engine;
    auto dev = Device::Create(backend_, cfg);
    EXPECT_TRUE(dev.ok()) << engine << ": " << dev.status();
    return dev.ok() ? dev.value() : nullptr;
  }
  static uint32_t NewBo(Device& dev, uint64_t size, Placement p) {
    auto h = dev.CreateBo(size, p);
    EXPECT_TRUE(h.ok()) << h.status();
    return h.ok() ? *h : 0;
  }
  static std::vector<uint8_t> Read(Device& dev, uint32_t h, uint64_t len, uint64_t off = 0) {
    std::vector<uint8_t> out(len);
    EXPECT_EQ(dev.CpuRead(h, off, out.data(), len), kOk);
    return out;
  }
  static void Write(Device& dev, uint32_t h, const std::vector<uint8_t>& bytes,
                    uint64_t off = 0) {
    ASSERT_EQ(dev.CpuWrite(h, off, bytes.data(), bytes.size()), kOk);
  }
  static uint32_t Checksum(Device& dev, uint32_t h, uint64_t len, uint64_t off = 0) {
    auto crc = dev.Checksum(h, off, len, nullptr);
    EXPECT_TRUE(crc.ok()) << crc.status();
    return crc.ok() ? *crc : 0;
  }
  std::shared_ptr<DmaBuf> DmaBufOf(Device& exporter, uint32_t h) {
    sgb_uuid uuid{};
    EXPECT_EQ(exporter.Export(h, &uuid, nullptr), kOk);
    auto dmabuf = backend_->LookupUuid(uuid);
    EXPECT_TRUE(dmabuf.ok());
    return dmabuf.ok() ? dmabuf.value() : nullptr;
  }
  uint32_t Share(Device& exporter, uint32_t h, Device& importer) {
    auto dmabuf = DmaBufOf(exporter, h);
    if (!dmabuf) return 0;
    auto imported = importer.ImportDmaBuf(dmabuf);
    EXPECT_TRUE(imported.ok()) << imported.status();
    return imported.ok() ? *imported : 0;
  }
  // The device's cache of its own buffer `h`.
  BufferCache* CacheOf(Device& dev, uint32_t h) {
    auto dmabuf = DmaBufOf(dev, h);
    auto* bo = dmabuf ? dynamic_cast<BufferObject*>(&dmabuf->exporter()) : nullptr;
    return bo ? &bo->cache() : nullptr;
  }
  static uint32_t DirtyLines(Device& dev, uint32_t h) {
    auto info = dev.DebugInfo(h);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->cache_dirty_lines : 0;
  }

  std::shared_ptr<Backend> backend_ = Backend::Create();
};

// ------------------------------------------------------------------ on each engine

class EngineJobTest : public EngineFixture, public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "virgl" && !VirglUnavailable().empty()) {
      GTEST_SKIP() << "virgl engine: " << VirglUnavailable();
    }
  }
  std::shared_ptr<Device> NewDevice(const std::string& name, CacheMode mode,
                                    uint64_t vram = 4 * kMiB) {
    return EngineFixture::NewDevice(name, mode, GetParam(), vram);
  }
};

TEST_P(EngineJobTest, DeviceRunsOnTheEngineAskedFor) {
  auto dev = NewDevice("kind", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  EXPECT_STREQ(dev->engine().kind(), GetParam().c_str());
  uint32_t h = NewBo(*dev, kPage, Placement::kDevice);
  BufferCache* cache = CacheOf(*dev, h);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(dynamic_cast<VirglCache*>(cache) != nullptr, GetParam() == "virgl");
  EXPECT_EQ(dynamic_cast<DeviceCache*>(cache) != nullptr, GetParam() == "cpu");
}

// FILL, COPY (between buffers, across pages, unaligned; within one buffer both ways, which
// overlaps) and CHECKSUM compute what memory-level reference code computes, on both cache
// modes (strict: read after the begin barrier).
TEST_P(EngineJobTest, FillCopyChecksumResults) {
  for (CacheMode mode : {CacheMode::kCoherent, CacheMode::kStrict}) {
    SCOPED_TRACE(mode == CacheMode::kStrict ? "strict" : "coherent");
    auto dev = NewDevice("results", mode);
    ASSERT_TRUE(dev);
    constexpr uint64_t kSize = 16 * kPage;
    uint32_t a = NewBo(*dev, kSize, Placement::kDevice);
    uint32_t b = NewBo(*dev, kSize, Placement::kSystem);
    std::vector<uint8_t> ma = RandomBytes(kSize, 1), mb = RandomBytes(kSize, 2);
    Write(*dev, a, ma);
    Write(*dev, b, mb);

    ASSERT_EQ(dev->Fill(a, 4 * 1000, 4 * 3000, 0xa1b2c3d4u, nullptr), kOk);
    Put(ma, 4 * 1000, PatternBytes(4 * 3000, 0xa1b2c3d4u));
    ASSERT_EQ(dev->Copy(a, 1234, b, 7 * kPage + 5, 3 * kPage + 77, nullptr), kOk);
    Put(mb, 7 * kPage + 5, std::vector<uint8_t>(ma.begin() + 1234,
                                                ma.begin() + 1234 + 3 * kPage + 77));
    // Overlapping, destination after the source, then before it (memmove both ways).
    ASSERT_EQ(dev->Copy(b, 100, b, 100 + 2 * kPage + 3, 5 * kPage, nullptr), kOk);
    std::memmove(mb.data() + 100 + 2 * kPage + 3, mb.data() + 100, 5 * kPage);
    ASSERT_EQ(dev->Copy(b, 9 * kPage, b, 8 * kPage + 11, 4 * kPage, nullptr), kOk);
    std::memmove(mb.data() + 8 * kPage + 11, mb.data() + 9 * kPage, 4 * kPage);
    // Within one buffer, no overlap.
    ASSERT_EQ(dev->Copy(a, 0, a, 12 * kPage, kPage, nullptr), kOk);
    std::memmove(ma.data() + 12 * kPage, ma.data(), kPage);

    EXPECT_EQ(Checksum(*dev, a, kSize), Crc(ma));
    EXPECT_EQ(Checksum(*dev, b, kSize), Crc(mb));
    EXPECT_EQ(Checksum(*dev, b, 12345, 333), Crc(mb, 333, 12345));
    ASSERT_EQ(dev->BeginCpuAccess(a, DmaDirection::kFromDevice), kOk);
    ASSERT_EQ(dev->BeginCpuAccess(b, DmaDirection::kFromDevice), kOk);
    EXPECT_EQ(Read(*dev, a, kSize), ma);
    EXPECT_EQ(Read(*dev, b, kSize), mb);
    ASSERT_EQ(dev->EndCpuAccess(a, DmaDirection::kFromDevice), kOk);
    ASSERT_EQ(dev->EndCpuAccess(b, DmaDirection::kFromDevice), kOk);
  }
}

// The copy engine's argument rules hold on every engine, and a refused job changes nothing.
TEST_P(EngineJobTest, BadJobsFailAndChangeNothing) {
  auto dev = NewDevice("bad", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  uint32_t a = NewBo(*dev, 2 * kPage, Placement::kDevice);
  const auto bytes = RandomBytes(2 * kPage, 3);
  Write(*dev, a, bytes);
  EXPECT_EQ(dev->Fill(a, 2, 8, 1, nullptr), -EINVAL);   // misaligned
  EXPECT_EQ(dev->Fill(a, 0, 6, 1, nullptr), -EINVAL);   // misaligned length
  EXPECT_EQ(dev->Fill(a, 0, 0, 1, nullptr), -EINVAL);   // empty
  EXPECT_EQ(dev->Fill(a, kPage, 2 * kPage, 1, nullptr), -ERANGE);
  EXPECT_EQ(dev->Copy(a, 1, a, 0, 2 * kPage, nullptr), -ERANGE);
  EXPECT_EQ(dev->Checksum(a, ~uint64_t{0} - 2, 8, nullptr).status(), -ERANGE);
  ASSERT_EQ(dev->BeginCpuAccess(a, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, a, 2 * kPage), bytes);
  EXPECT_GE(dev->Stats().job_errors, 6u);
}

// Completions arrive in submission order and each job sees the ones before it: a chain of
// FILL a -> COPY a to b -> CHECKSUM b, submitted without waiting.
TEST_P(EngineJobTest, JobsCompleteInSubmissionOrder) {
  constexpr size_t kJobs = 30;
  auto dev = NewDevice("order", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  uint32_t a = NewBo(*dev, 2 * kPage, Placement::kDevice);
  uint32_t b = NewBo(*dev, 2 * kPage, Placement::kSystem);
  Recorder rec;
  std::vector<uint64_t> seqnos;
  std::vector<uint32_t> want(kJobs, 0);
  for (size_t i = 0; i < kJobs; ++i) {
    const uint32_t pattern = 0x51000000u + uint32_t(i);
    JobRequest req;
    switch (i % 3) {
      case 0: req = JobRequest{JobOp::kFill, a, 0, 0, 0, 2 * kPage, pattern}; break;
      case 1: req = JobRequest{JobOp::kCopy, b, a, 0, 0, 2 * kPage, 0}; break;
      default:
        req = JobRequest{JobOp::kChecksum, b, 0, 0, 0, 2 * kPage, 0};
        want[i] = Crc(PatternBytes(2 * kPage, pattern - 2));
        break;
    }
    auto seqno = dev->Submit(req, rec.SubmitDone(i));
    ASSERT_TRUE(seqno.ok()) << seqno.status();
    if (!seqnos.empty()) {
      EXPECT_GT(*seqno, seqnos.back());
    }
    seqnos.push_back(*seqno);
  }
  ASSERT_TRUE(rec.WaitFor(kJobs));
  std::vector<Recorder::Completion> done = rec.Get();
  ASSERT_EQ(done.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].seqno, seqnos[i]);
    EXPECT_EQ(done[i].status, kOk) << i;
    if (i % 3 == 2) {
      EXPECT_EQ(done[i].result, want[i]) << i;
    }
  }
  dev->engine().Drain();
  EXPECT_EQ(dev->Stats().last_fence, seqnos.back());
}

// Device -> CPU on a strict device: a job's write is not in memory until a barrier writes it
// back (CACHE_FLUSH of a range, begin_cpu_access); the write-back stores only what the job
// wrote, so CPU writes around it in the same pages survive.
TEST_P(EngineJobTest, StrictDeviceWriteReachesCpuOnlyThroughBarriers) {
  auto dev = NewDevice("strict", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  constexpr uint64_t kSize = 4 * kPage;
  uint32_t h = NewBo(*dev, kSize, Placement::kDevice);
  const auto old_bytes = RandomBytes(kSize, 10);
  Write(*dev, h, old_bytes);
  ASSERT_EQ(dev->Fill(h, 0, kSize, 0x5a5aa5a5u, nullptr), kOk);
  EXPECT_EQ(Read(*dev, h, kSize), old_bytes) << "device write visible without a barrier";
  EXPECT_EQ(DirtyLines(*dev, h), 4u);

  // CACHE_FLUSH of the second page only.
  ASSERT_EQ(dev->CacheFlush(h, kPage, kPage), kOk);
  auto expect = old_bytes;
  Put(expect, kPage, PatternBytes(kPage, 0x5a5aa5a5u));
  EXPECT_EQ(Read(*dev, h, kSize), expect);
  EXPECT_EQ(DirtyLines(*dev, h), 3u);
  // begin_cpu_access: everything.
  ASSERT_EQ(dev->BeginCpuAccess(h, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, h, kSize), PatternBytes(kSize, 0x5a5aa5a5u));
  ASSERT_EQ(dev->EndCpuAccess(h, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(DirtyLines(*dev, h), 0u);

  // Sub-page device writes and CPU writes in the same pages, neither seeing the other: the
  // write-back brings exactly the device's bytes.
  ASSERT_EQ(dev->Fill(h, 100 * 4, 50 * 4, 0x01020304u, nullptr), kOk);       // page 0
  ASSERT_EQ(dev->Fill(h, kPage - 8, 16, 0x0a0b0c0du, nullptr), kOk);         // pages 0-1
  const auto cpu = RandomBytes(64, 11);
  Write(*dev, h, cpu, 1000);            // page 0, after the first fill
  Write(*dev, h, cpu, kPage + 100);     // page 1
  ASSERT_EQ(dev->BeginCpuAccess(h, DmaDirection::kFromDevice), kOk);
  expect = PatternBytes(kSize, 0x5a5aa5a5u);
  Put(expect, 400, PatternBytes(200, 0x01020304u));
  Put(expect, kPage - 8, PatternBytes(16, 0x0a0b0c0du));
  Put(expect, 1000, cpu);
  Put(expect, kPage + 100, cpu);
  EXPECT_EQ(Read(*dev, h, kSize), expect);
}

// CPU -> device on a strict device: once the device has read a range it keeps its copy, so a
// CPU write is not seen by a job until CACHE_INVALIDATE or end_cpu_access; the invalidate
// writes back what the device wrote first.
TEST_P(EngineJobTest, StrictCpuWriteReachesDeviceOnlyThroughBarriers) {
  auto dev = NewDevice("strict", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  constexpr uint64_t kSize = 2 * kPage;
  uint32_t h = NewBo(*dev, kSize, Placement::kDevice);
  const auto old_bytes = RandomBytes(kSize, 20);
  const auto new_bytes = RandomBytes(kSize, 21);
  Write(*dev, h, old_bytes);
  const uint32_t old_crc = Checksum(*dev, h, kSize);  // the device caches the buffer
  ASSERT_EQ(old_crc, Crc(old_bytes));
  Write(*dev, h, new_bytes);
  EXPECT_EQ(Checksum(*dev, h, kSize), old_crc) << "device saw a CPU write without a barrier";

  // CACHE_INVALIDATE of the second page: the device sees the new bytes there only.
  ASSERT_EQ(dev->CacheInvalidate(h, kPage, kPage), kOk);
  EXPECT_EQ(Checksum(*dev, h, kPage), Crc(old_bytes, 0, kPage));
  EXPECT_EQ(Checksum(*dev, h, kPage, kPage), Crc(new_bytes, kPage, kPage));
  // end_cpu_access after a CPU write: all of it.
  ASSERT_EQ(dev->BeginCpuAccess(h, DmaDirection::kToDevice), kOk);
  Write(*dev, h, new_bytes);
  ASSERT_EQ(dev->EndCpuAccess(h, DmaDirection::kToDevice), kOk);
  EXPECT_EQ(Checksum(*dev, h, kSize), Crc(new_bytes));

  // A job's write is written back, not dropped, by an invalidate; a copy reads what the
  // device sees (old, cached) until the invalidate.
  ASSERT_EQ(dev->Fill(h, 0, kPage, 0x0badf00du, nullptr), kOk);
  ASSERT_EQ(dev->CacheInvalidate(h, 0, kSize), kOk);
  auto expect = new_bytes;
  Put(expect, 0, PatternBytes(kPage, 0x0badf00du));
  EXPECT_EQ(Read(*dev, h, kSize), expect);
  EXPECT_EQ(Checksum(*dev, h, kSize), Crc(expect));
  uint32_t other = NewBo(*dev, kSize, Placement::kSystem);
  const auto cpu2 = RandomBytes(kSize, 22);
  Write(*dev, h, cpu2);  // the device has h cached: a copy still moves `expect`
  ASSERT_EQ(dev->Copy(h, 0, other, 0, kSize, nullptr), kOk);
  ASSERT_EQ(dev->BeginCpuAccess(other, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, other, kSize), expect);
}

// A move copies memory: every device's unflushed writes reach it first (WritebackAndDropAll),
// nothing cached for the old storage survives, and jobs go on over the new storage.
TEST_P(EngineJobTest, MoveKeepsUnflushedDeviceWrites) {
  auto dev = NewDevice("move", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  constexpr uint64_t kSize = 4 * kPage;
  uint32_t h = NewBo(*dev, kSize, Placement::kDevice);
  auto bytes = RandomBytes(kSize, 30);
  Write(*dev, h, bytes);
  ASSERT_EQ(dev->Fill(h, kPage + 8, 2 * kPage, 0xfeedc0deu, nullptr), kOk);
  Put(bytes, kPage + 8, PatternBytes(2 * kPage, 0xfeedc0deu));
  ASSERT_GT(DirtyLines(*dev, h), 0u);
  ASSERT_EQ(dev->Move(h, Placement::kSystem), kOk);
  EXPECT_EQ(Read(*dev, h, kSize), bytes);  // no barrier: the move wrote them back
  auto info = dev->DebugInfo(h);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->cache_dirty_lines, 0u);
  EXPECT_EQ(info->cache_valid_lines, 0u);
  if (auto* vc = dynamic_cast<VirglCache*>(CacheOf(*dev, h))) {
    EXPECT_FALSE(vc->has_resource()) << "a resource over the old storage survived the move";
  }
  // The new storage: the device reads memory afresh and writes it on the next barrier.
  const auto cpu = RandomBytes(kPage, 31);
  Write(*dev, h, cpu, 3 * kPage);
  Put(bytes, 3 * kPage, cpu);
  EXPECT_EQ(Checksum(*dev, h, kSize), Crc(bytes));
  ASSERT_EQ(dev->Fill(h, 0, kPage, 0x12345678u, nullptr), kOk);
  Put(bytes, 0, PatternBytes(kPage, 0x12345678u));
  ASSERT_EQ(dev->Move(h, Placement::kDevice), kOk);
  EXPECT_EQ(Read(*dev, h, kSize), bytes);
  EXPECT_EQ(Checksum(*dev, h, kSize), Crc(bytes));
}

// A coherent device needs no barrier in either direction, and its writes never touch bytes
// around them.
TEST_P(EngineJobTest, CoherentDeviceNeedsNoBarrier) {
  auto dev = NewDevice("coherent", CacheMode::kCoherent);
  ASSERT_TRUE(dev);
  constexpr uint64_t kSize = 2 * kPage;
  uint32_t h = NewBo(*dev, kSize, Placement::kDevice);
  const auto old_bytes = RandomBytes(kSize, 40);
  const auto new_bytes = RandomBytes(kSize, 41);
  Write(*dev, h, old_bytes);
  EXPECT_EQ(Checksum(*dev, h, kSize), Crc(old_bytes));
  Write(*dev, h, new_bytes);
  EXPECT_EQ(Checksum(*dev, h, kSize), Crc(new_bytes));
  ASSERT_EQ(dev->Fill(h, 8, kPage, 0x5a5aa5a5u, nullptr), kOk);
  auto expect = new_bytes;
  Put(expect, 8, PatternBytes(kPage, 0x5a5aa5a5u));
  EXPECT_EQ(Read(*dev, h, kSize), expect);
  uint32_t other = NewBo(*dev, kSize, Placement::kSystem);
  Write(*dev, other, old_bytes);
  ASSERT_EQ(dev->Copy(h, 3, other, 5, kPage, nullptr), kOk);
  auto expect_other = old_bytes;
  std::copy(expect.begin() + 3, expect.begin() + 3 + kPage, expect_other.begin() + 5);
  EXPECT_EQ(Read(*dev, other, kSize), expect_other);
  EXPECT_EQ(DirtyLines(*dev, h), 0u);
  EXPECT_EQ(DirtyLines(*dev, other), 0u);
}

// Barriers racing jobs in flight (CACHE_FLUSH / CACHE_INVALIDATE do not wait for fences):
// every job's write still reaches memory, once, whole.
TEST_P(EngineJobTest, BarriersRacingJobsLoseNothing) {
  constexpr size_t kJobs = 64;
  constexpr uint64_t kSlice = kPage / 2;  // two jobs per page: partial lines everywhere
  constexpr uint64_t kSize = kJobs * kSlice;
  auto dev = NewDevice("race", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  uint32_t h = NewBo(*dev, kSize, Placement::kDevice);
  Write(*dev, h, std::vector<uint8_t>(kSize, 0));
  Recorder rec;
  std::atomic<bool> stop{false};
  std::thread barriers([&] {
    for (unsigned i = 0; !stop.load(); ++i) {
      const uint64_t off = (i * 3 % kJobs) * kSlice;
      if (i % 2) {
        EXPECT_EQ(dev->CacheFlush(h, off, 3 * kSlice > kSize - off ? kSize - off : 3 * kSlice),
                  kOk);
      } else {
        EXPECT_EQ(dev->CacheInvalidate(h, off, kSlice), kOk);
      }
    }
  });
  for (size_t i = 0; i < kJobs; ++i) {
    JobRequest req{JobOp::kFill, h, 0, i * kSlice, 0, kSlice, 0x01010101u * uint32_t(i + 1)};
    ASSERT_TRUE(dev->Submit(req, rec.SubmitDone(i)).ok());
  }
  const bool all_done = rec.WaitFor(kJobs);
  stop.store(true);
  barriers.join();
  ASSERT_TRUE(all_done);
  ASSERT_EQ(dev->BeginCpuAccess(h, DmaDirection::kFromDevice), kOk);
  std::vector<uint8_t> expect(kSize);
  for (size_t i = 0; i < kJobs; ++i) {
    Put(expect, i * kSlice, PatternBytes(kSlice, 0x01010101u * uint32_t(i + 1)));
  }
  EXPECT_EQ(Read(*dev, h, kSize), expect);
  EXPECT_EQ(Checksum(*dev, h, kSize), Crc(expect));
}

// Device::AbortJobs on each engine: jobs behind the stall never reach the engine's
// Execute (no buffer changes, not even in the device cache), a held job completes with its
// result and data, and the device goes on working.
TEST_P(EngineJobTest, AbortCancelsUnstartedAndFinishesHeld) {
  auto dev = NewDevice("abort", CacheMode::kStrict);
  ASSERT_TRUE(dev);
  constexpr uint64_t kSize = 4 * kPage;
  uint32_t a = NewBo(*dev, kSize, Placement::kDevice);
  uint32_t b = NewBo(*dev, kSize, Placement::kSystem);
  const std::vector<uint8_t> ma = RandomBytes(kSize, 51), mb = RandomBytes(kSize, 52);
  Write(*dev, a, ma);
  Write(*dev, b, mb);
  Recorder rec;
  auto submit = [&](const JobRequest& req, size_t index) {
    auto seqno = dev->Submit(req, rec.SubmitDone(index));
    EXPECT_TRUE(seqno.ok()) << seqno.status();
    return seqno.ok() ? *seqno : 0;
  };

  dev->engine().Stall(true);
  submit(JobRequest{JobOp::kFill, a, 0, 0, 0, kSize, 0xfeedf00du}, 0);
  submit(JobRequest{JobOp::kCopy, b, a, 0, 0, kSize, 0}, 1);
  submit(JobRequest{JobOp::kChecksum, a, 0, 0, 0, kSize, 0}, 2);
  EXPECT_EQ(dev->AbortJobs(/*wait=*/true), 3u);
  std::vector<Recorder::Completion> done = rec.Get();
  ASSERT_EQ(done.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(done[i].status, -ECANCELED) << i;
  EXPECT_EQ(DirtyLines(*dev, a), 0u);
  EXPECT_EQ(DirtyLines(*dev, b), 0u);
  ASSERT_EQ(dev->BeginCpuAccess(a, DmaDirection::kFromDevice), kOk);
  ASSERT_EQ(dev->BeginCpuAccess(b, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, a, kSize), ma);
  EXPECT_EQ(Read(*dev, b, kSize), mb);
  ASSERT_EQ(dev->EndCpuAccess(a, DmaDirection::kFromDevice), kOk);
  ASSERT_EQ(dev->EndCpuAccess(b, DmaDirection::kFromDevice), kOk);

  ASSERT_EQ(dev->HoldCompletions(0, std::chrono::milliseconds(0)), kOk);
  uint64_t held = submit(JobRequest{JobOp::kFill, a, 0, 0, 0, kSize, 0x0a0b0c0du}, 3);
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  bool is_held = false;
  while (!is_held && std::chrono::steady_clock::now() < deadline) {
    for (const JobInfo& info : dev->engine().InFlight()) {
      is_held |= info.seqno == held && info.state == "held";
    }
    if (!is_held) std::this_thread::yield();
  }
  ASSERT_TRUE(is_held) << "the FILL never reached its held completion";
  submit(JobRequest{JobOp::kCopy, b, a, 0, 0, kSize, 0}, 4);
  EXPECT_EQ(dev->AbortJobs(/*wait=*/true), 1u);
  done = rec.Get();
  ASSERT_EQ(done.size(), 5u);
  EXPECT_EQ(done[3].status, kOk);
  EXPECT_EQ(done[4].status, -ECANCELED);
  EXPECT_EQ(Checksum(*dev, a, kSize), Crc(PatternBytes(kSize, 0x0a0b0c0du)));
  ASSERT_EQ(dev->BeginCpuAccess(b, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, b, kSize), mb) << "the cancelled COPY ran";
  ASSERT_EQ(dev->EndCpuAccess(b, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(dev->Copy(a, 0, b, 0, kSize, nullptr), kOk);
  EXPECT_EQ(Checksum(*dev, b, kSize), Crc(PatternBytes(kSize, 0x0a0b0c0du)));
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineJobTest, ::testing::Values("cpu", "virgl"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// ------------------------------------------------------------------ across engines

struct EnginePair {
  const char* exporter;
  const char* importer;
};

class CrossEngineTest : public EngineFixture, public ::testing::TestWithParam<EnginePair> {
 protected:
  void SetUp() override {
    const EnginePair p = GetParam();
    if ((std::string(p.exporter) == "virgl" || std::string(p.importer) == "virgl") &&
        !VirglUnavailable().empty()) {
      GTEST_SKIP() << "virgl engine: " << VirglUnavailable();
    }
  }
};

// Devices on different engines share buffers: the importer's cache of the buffer is of its
// own engine's kind, and the exporter's barriers act on it (a device write through the import
// reaches the CPU on the exporter's begin_cpu_access; a CPU write reaches the importer's jobs
// on the exporter's end_cpu_access). A job mixes an import and a local buffer.
TEST_P(CrossEngineTest, ImportOfAnotherEnginesExport) {
  const EnginePair p = GetParam();
  auto exp = NewDevice("exp", CacheMode::kCoherent, p.exporter);
  auto imp = NewDevice("imp", CacheMode::kStrict, p.importer);
  ASSERT_TRUE(exp && imp);
  constexpr uint64_t kSize = 2 * kPage;
  uint32_t he = NewBo(*exp, kSize, Placement::kDevice);
  const auto old_bytes = RandomBytes(kSize, 50);
  Write(*exp, he, old_bytes);
  uint32_t hi = Share(*exp, he, *imp);
  ASSERT_NE(hi, 0u);

  ASSERT_EQ(imp->Fill(hi, 0, kSize, 0x0badcafeu, nullptr), kOk);
  EXPECT_EQ(Read(*exp, he, kSize), old_bytes) << "importer's write visible without a barrier";
  ASSERT_EQ(exp->BeginCpuAccess(he, DmaDirection::kFromDevice), kOk);
  const auto pattern = PatternBytes(kSize, 0x0badcafeu);
  EXPECT_EQ(Read(*exp, he, kSize), pattern);
  ASSERT_EQ(exp->EndCpuAccess(he, DmaDirection::kFromDevice), kOk);

  const uint32_t cached = Checksum(*imp, hi, kSize);
  ASSERT_EQ(cached, Crc(pattern));
  const auto new_bytes = RandomBytes(kSize, 51);
  Write(*exp, he, new_bytes);
  EXPECT_EQ(Checksum(*imp, hi, kSize), cached) << "importer saw a CPU write without a barrier";
  ASSERT_EQ(exp->BeginCpuAccess(he, DmaDirection::kToDevice), kOk);
  ASSERT_EQ(exp->EndCpuAccess(he, DmaDirection::kToDevice), kOk);
  EXPECT_EQ(Checksum(*imp, hi, kSize), Crc(new_bytes));

  // The importer copies the import into a buffer of its own and back into the import.
  uint32_t local = NewBo(*imp, kSize, Placement::kDevice);
  ASSERT_EQ(imp->Copy(hi, 0, local, 0, kSize, nullptr), kOk);
  EXPECT_EQ(Checksum(*imp, local, kSize), Crc(new_bytes));
  ASSERT_EQ(imp->Fill(local, 0, kPage, 0x600d600du, nullptr), kOk);
  ASSERT_EQ(imp->Copy(local, 0, hi, kPage, kPage, nullptr), kOk);
  ASSERT_EQ(imp->CacheFlush(hi, 0, kSize), kOk);
  auto expect = new_bytes;
  Put(expect, kPage, PatternBytes(kPage, 0x600d600du));
  EXPECT_EQ(Read(*exp, he, kSize), expect);

  // The exporter moves the buffer with the importer's write unflushed: it survives, and the
  // importer's next job maps the new storage.
  ASSERT_EQ(imp->Fill(hi, 0, kPage, 0x77777777u, nullptr), kOk);
  Put(expect, 0, PatternBytes(kPage, 0x77777777u));
  ASSERT_EQ(exp->Move(he, Placement::kSystem), kOk);
  EXPECT_EQ(Read(*exp, he, kSize), expect);
  EXPECT_EQ(Checksum(*imp, hi, kSize), Crc(expect));
  EXPECT_EQ(Checksum(*exp, he, kSize), Crc(expect));
}

INSTANTIATE_TEST_SUITE_P(
    Pairs, CrossEngineTest,
    ::testing::Values(EnginePair{"cpu", "virgl"}, EnginePair{"virgl", "cpu"},
                      EnginePair{"virgl", "virgl"}),
    [](const ::testing::TestParamInfo<EnginePair>& info) {
      return std::string(info.param.exporter) + "_to_" + info.param.importer;
    });

// ------------------------------------------------------------------ virgl only

class VirglEngineTest : public EngineFixture, public ::testing::Test {
 protected:
  void SetUp() override {
    if (!VirglUnavailable().empty()) GTEST_SKIP() << "virgl engine: " << VirglUnavailable();
  }
};

// The GL resource is the cache: it is made by the first job, and its lines are what jobs read
// (valid) and wrote (dirty); a flush downloads, an invalidate drops, a reset of the device's
// handles leaves it to the buffer's lifetime.
TEST_F(VirglEngineTest, TheBuffersGlResourceIsTheDeviceCache) {
  auto dev = NewDevice("virgl", CacheMode::kStrict, "virgl");
  ASSERT_TRUE(dev);
  constexpr uint64_t kSize = 8 * kPage;
  uint32_t h = NewBo(*dev, kSize, Placement::kDevice);
  auto bytes = RandomBytes(kSize, 60);
  Write(*dev, h, bytes);
  auto* cache = dynamic_cast<VirglCache*>(CacheOf(*dev, h));
  ASSERT_NE(cache, nullptr);
  EXPECT_FALSE(cache->has_resource());
  ASSERT_EQ(dev->Fill(h, 0, 2 * kPage + 4, 0x1u, nullptr), kOk);
  Put(bytes, 0, PatternBytes(2 * kPage + 4, 0x1u));
  EXPECT_TRUE(cache->has_resource());
  DeviceCacheStats s = cache->stats();
  EXPECT_EQ(s.dirty_lines, 3u);
  EXPECT_EQ(s.valid_lines, 3u);
  // A read of pages 2..3: page 2 is partly cached (its written bytes), so both miss; the
  // upload brings only the stale bytes (the written ones stay).
  EXPECT_EQ(Checksum(*dev, h, 2 * kPage, 2 * kPage), Crc(bytes, 2 * kPage, 2 * kPage));
  s = cache->stats();
  EXPECT_EQ(s.valid_lines, 4u);
  EXPECT_EQ(s.dirty_lines, 3u);
  EXPECT_EQ(s.read_misses, 2u);
  EXPECT_EQ(s.read_hits, 0u);
  EXPECT_EQ(Checksum(*dev, h, kPage, kPage), Crc(bytes, kPage, kPage));
  EXPECT_EQ(cache->stats().read_hits, 1u);
  ASSERT_EQ(dev->CacheFlush(h, 0, kSize), kOk);
  s = cache->stats();
  EXPECT_EQ(s.dirty_lines, 0u);
  EXPECT_EQ(s.valid_lines, 4u);
  EXPECT_EQ(s.lines_written_back, 3u);
  EXPECT_EQ(Read(*dev, h, kSize), bytes);
  ASSERT_EQ(dev->CacheInvalidate(h, kPage, 1), kOk);  // drops the whole line
  EXPECT_EQ(cache->stats().valid_lines, 3u);
}

// virgl buffer resources hold at most 1 GiB: a job on a larger buffer fails, the device
// goes on.
TEST_F(VirglEngineTest, BuffersOverOneGiBFailTheirJobs) {
  auto dev = NewDevice("big", CacheMode::kStrict, "virgl");
  ASSERT_TRUE(dev);
  uint32_t big = NewBo(*dev, (uint64_t{1} << 30) + kPage, Placement::kSystem);
  ASSERT_NE(big, 0u);
  EXPECT_EQ(dev->Fill(big, 0, kPage, 1, nullptr), -E2BIG);
  uint32_t small = NewBo(*dev, kPage, Placement::kSystem);
  ASSERT_EQ(dev->Fill(small, 0, kPage, 0x42424242u, nullptr), kOk);
  EXPECT_EQ(Checksum(*dev, small, kPage), Crc(PatternBytes(kPage, 0x42424242u)));
}

TEST(CreateEngineTest, KindsAndTheirErrors) {
  auto cpu = CreateEngine("cpu", "e-cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_STREQ((*cpu)->kind(), "cpu");
  EXPECT_EQ(CreateEngine("gpu-of-dreams", "e-none").status(), -ENODEV);
  auto virgl = CreateEngine("virgl", "e-virgl");
  if (VirglUnavailable().empty()) {
    ASSERT_TRUE(virgl.ok()) << virgl.status();
    EXPECT_STREQ((*virgl)->kind(), "virgl");
    EXPECT_TRUE((*virgl)->cache_factory());
  } else {
    EXPECT_EQ(virgl.status(), -ENODEV);
  }
  EXPECT_FALSE((*cpu)->cache_factory());  // the model
}

// RangeSet, the bookkeeping behind the virgl cache's valid and written bytes.
TEST(RangeSetTest, AddRemoveCoveredGapsPages) {
  RangeSet s;
  s.Add(10, 20);
  s.Add(30, 40);
  s.Add(20, 25);  // merges with [10, 20)
  auto covered = s.Covered(0, 100);
  ASSERT_EQ(covered.size(), 2u);
  EXPECT_EQ(covered[0].begin, 10u);
  EXPECT_EQ(covered[0].end, 25u);
  EXPECT_EQ(covered[1].begin, 30u);
  auto gaps = s.Gaps(12, 35);
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].begin, 25u);
  EXPECT_EQ(gaps[0].end, 30u);
  s.Remove(15, 32);
  covered = s.Covered(0, 100);
  ASSERT_EQ(covered.size(), 2u);
  EXPECT_EQ(covered[0].end, 15u);
  EXPECT_EQ(covered[1].begin, 32u);
  EXPECT_EQ(covered[1].end, 40u);
  s.Add(0, 100);
  EXPECT_EQ(s.Covered(0, 1000).size(), 1u);
  EXPECT_EQ(s.PagesTouched(), 1u);
  s.Add(kPage - 1, 3 * kPage + 1);
  EXPECT_EQ(s.PagesTouched(), 4u);
  s.Remove(0, 4 * kPage);
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(s.Gaps(5, 5).empty());
}

}  // namespace
}  // namespace sharegpu
