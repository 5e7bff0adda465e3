// The virgl engine's device: libvirglrenderer on EGL surfaceless (llvmpipe here). Every test
// runs on the real renderer; CI installs what it needs, so an initialisation failure fails.
#include "engine/virgl_renderer.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <cstring>
#include <future>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "mem/copy_engine.h"

namespace sharegpu {
namespace {

constexpr uint64_t kSize = 2 << 20;

std::vector<uint8_t> RandomBytes(uint64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

class VirglRendererTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = VirglRenderer::Get();
    ASSERT_TRUE(r.ok()) << "virglrenderer did not initialise (" << r.status()
                        << "): install libvirglrenderer1, libegl-mesa0, libgl1-mesa-dri";
    renderer_ = *r;
  }

  // A resource over `pages` whose GL side holds the same bytes.
  VirglRenderer::BufferResource Resource(std::vector<uint8_t>& pages) {
    auto res = renderer_->CreateBuffer(pages.data(), pages.size());
    EXPECT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(renderer_->Upload(*res, 0, pages.size()), kOk);
    return std::move(res).value();
  }

  // Waits (bounded by the future) until every job submitted so far has completed.
  void Drain() {
    std::promise<void> done;
    ASSERT_EQ(renderer_->Fence([&] { done.set_value(); }), kOk);
    ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  }

  std::shared_ptr<VirglRenderer> renderer_;
};

TEST_F(VirglRendererTest, OneRendererPerProcess) {
  auto again = VirglRenderer::Get();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), renderer_.get());
}

TEST_F(VirglRendererTest, UploadThenDownloadRoundTripsARange) {
  auto bytes = RandomBytes(kSize, 1);
  std::vector<uint8_t> pages = bytes;
  auto res = Resource(pages);
  std::fill(pages.begin(), pages.end(), 0);
  // Only the range written back comes back.
  ASSERT_EQ(renderer_->Download(res, 8192 + 12, 100000), kOk);
  EXPECT_EQ(std::memcmp(pages.data() + 8192 + 12, bytes.data() + 8192 + 12, 100000), 0);
  EXPECT_EQ(pages[8192 + 11], 0);
  EXPECT_EQ(pages[8192 + 12 + 100000], 0);
}

// Rule S4 on a real non-coherent device, device -> CPU: a job's output stays on the GL side
// until written back.
TEST_F(VirglRendererTest, CopyOutputIsInvisibleToTheCpuUntilDownload) {
  auto src_bytes = RandomBytes(kSize, 2);
  std::vector<uint8_t> src = src_bytes;
  std::vector<uint8_t> dst(kSize, 0);
  auto rs = Resource(src);
  auto rd = Resource(dst);
  ASSERT_EQ(renderer_->Copy(rs, 100, rd, 4096, 65536), kOk);
  Drain();
  EXPECT_EQ(std::count(dst.begin(), dst.end(), 0), static_cast<long>(kSize))
      << "the copy reached the pages without a write-back";
  ASSERT_EQ(renderer_->Download(rd, 0, kSize), kOk);
  EXPECT_EQ(std::memcmp(dst.data() + 4096, src_bytes.data() + 100, 65536), 0);
  EXPECT_EQ(dst[4095], 0);
  EXPECT_EQ(dst[4096 + 65536], 0);
}

// Rule S4, CPU -> device: a CPU write to the pages is not seen by a job until uploaded.
TEST_F(VirglRendererTest, CpuWriteIsInvisibleToAJobUntilUpload) {
  auto old_bytes = RandomBytes(kSize, 3);
  auto new_bytes = RandomBytes(kSize, 4);
  std::vector<uint8_t> src = old_bytes;
  std::vector<uint8_t> dst(kSize, 0);
  auto rs = Resource(src);
  auto rd = Resource(dst);
  src = new_bytes;  // the CPU writes the pages, no barrier
  ASSERT_EQ(renderer_->Copy(rs, 0, rd, 0, kSize), kOk);
  ASSERT_EQ(renderer_->Download(rd, 0, kSize), kOk);
  EXPECT_EQ(dst, old_bytes) << "the job saw the CPU's write without an upload";
  ASSERT_EQ(renderer_->Upload(rs, 0, kSize), kOk);
  ASSERT_EQ(renderer_->Copy(rs, 0, rd, 0, kSize), kOk);
  ASSERT_EQ(renderer_->Download(rd, 0, kSize), kOk);
  EXPECT_EQ(dst, new_bytes);
}

TEST_F(VirglRendererTest, FillSpansSeveralInlineWrites) {
  std::vector<uint8_t> pages(kSize, 0xee);
  auto res = Resource(pages);
  const uint64_t off = 4, len = (1 << 20) + 4096;  // more than one 256 KiB command
  ASSERT_EQ(renderer_->Fill(res, off, len, 0x11223344), kOk);
  ASSERT_EQ(renderer_->Download(res, 0, kSize), kOk);
  for (uint64_t i = off; i < off + len; i += 4) {
    uint32_t v;
    std::memcpy(&v, pages.data() + i, 4);
    ASSERT_EQ(v, 0x11223344u) << "at " << i;
  }
  EXPECT_EQ(pages[off - 1], 0xee);
  EXPECT_EQ(pages[off + len], 0xee);
}

TEST_F(VirglRendererTest, ChecksumReadsTheDeviceSideNotThePages) {
  auto bytes = RandomBytes(kSize, 5);
  std::vector<uint8_t> pages = bytes;
  auto res = Resource(pages);
  std::fill(pages.begin(), pages.end(), 0x5a);  // not uploaded
  auto crc = renderer_->Checksum(res, 4096, 300000);
  ASSERT_TRUE(crc.ok()) << crc.status();
  EXPECT_EQ(*crc, Crc32c(0, bytes.data() + 4096, 300000));
  EXPECT_NE(*crc, Crc32c(0, pages.data() + 4096, 300000));
}

TEST_F(VirglRendererTest, FencesSignalInSubmissionOrderAfterTheirJobs) {
  std::vector<uint8_t> a(kSize, 1), b(kSize, 0);
  auto ra = Resource(a);
  auto rb = Resource(b);
  const uint64_t before = renderer_->fences_signalled();
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> last;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(renderer_->Copy(ra, 0, rb, 0, kSize), kOk);
    ASSERT_EQ(renderer_->Fence([&, i] {
      std::lock_guard lock(mu);
      order.push_back(i);
      if (i == 2) last.set_value();
    }),
              kOk);
  }
  ASSERT_EQ(last.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  std::lock_guard lock(mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(renderer_->fences_signalled() - before, 3u);
}

// An event loop watches the poll fd (as QEMU's main loop does): fences signal through its
// WatchReady calls, one poll per fence at least (each Drain waits for its fence first).
TEST_F(VirglRendererTest, AnEventLoopServesThePollFd) {
  const int fd = renderer_->WatchBegin();
  ASSERT_GE(fd, 0);
  std::atomic<bool> stop{false};
  std::atomic<int> readable{0};
  std::thread loop([&] {
    while (!stop.load()) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 10) > 0 && (p.revents & POLLIN)) {
        readable.fetch_add(1);
        renderer_->WatchReady();
      }
    }
  });
  const uint64_t loop_before = renderer_->loop_polls();
  std::vector<uint8_t> pages(kSize, 0);
  auto res = Resource(pages);
  constexpr int kFences = 8;
  for (int i = 0; i < kFences; ++i) {
    ASSERT_EQ(renderer_->Fill(res, 0, kSize, 0x1000u + i), kOk);
    Drain();
  }
  stop.store(true);
  loop.join();
  renderer_->WatchEnd();
  EXPECT_GE(readable.load(), kFences);
  EXPECT_GE(renderer_->loop_polls() - loop_before, static_cast<uint64_t>(kFences));
}

// With a watch open the worker does not watch the fd itself: when the loop never serves it,
// a fence signals only through the fallback poll. After WatchEnd the worker watches again.
TEST_F(VirglRendererTest, AnUnservedWatchFallsBackAndWatchEndRestoresTheWorker) {
  ASSERT_GE(renderer_->WatchBegin(), 0);
  const uint64_t loop_before = renderer_->loop_polls();
  const uint64_t fallback_before = renderer_->fallback_polls();
  std::vector<uint8_t> pages(kSize, 0);
  auto res = Resource(pages);
  ASSERT_EQ(renderer_->Fill(res, 0, kSize, 0xfa11bacc), kOk);
  Drain();
  EXPECT_GT(renderer_->fallback_polls(), fallback_before) << "the worker watched the fd itself";
  renderer_->WatchEnd();

  const uint64_t fallback_after = renderer_->fallback_polls();
  ASSERT_EQ(renderer_->Fill(res, 0, kSize, 0x5e1f0000), kOk);
  Drain();
  EXPECT_EQ(renderer_->fallback_polls(), fallback_after) << "no watch: the worker polls the fd";
  EXPECT_EQ(renderer_->loop_polls(), loop_before);
}

TEST_F(VirglRendererTest, BadArgumentsChangeNothing) {
  auto bytes = RandomBytes(kSize, 6);
  std::vector<uint8_t> a = bytes, b(kSize, 0);
  auto ra = Resource(a);
  auto rb = Resource(b);
  EXPECT_EQ(renderer_->Copy(ra, 0, rb, 0, 0), -EINVAL);
  EXPECT_EQ(renderer_->Copy(ra, kSize - 10, rb, 0, 11), -ERANGE);
  EXPECT_EQ(renderer_->Copy(ra, 0, rb, ~uint64_t{0}, 16), -ERANGE);
  EXPECT_EQ(renderer_->Fill(rb, 2, 8, 1), -EINVAL);
  EXPECT_EQ(renderer_->Fill(rb, 0, 6, 1), -EINVAL);
  EXPECT_EQ(renderer_->Fill(rb, kSize - 4, 8, 1), -ERANGE);
  EXPECT_EQ(renderer_->Upload(ra, kSize, 1), -ERANGE);
  EXPECT_EQ(renderer_->Download(ra, 0, 0), -ERANGE);
  EXPECT_FALSE(renderer_->Checksum(ra, 0, kSize + 1).ok());
  EXPECT_FALSE(renderer_->CreateBuffer(nullptr, 4096).ok());
  EXPECT_FALSE(renderer_->CreateBuffer(a.data(), 0).ok());
  ASSERT_EQ(renderer_->Download(rb, 0, kSize), kOk);
  EXPECT_EQ(std::count(b.begin(), b.end(), 0), static_cast<long>(kSize));
  ASSERT_EQ(renderer_->Download(ra, 0, kSize), kOk);
  EXPECT_EQ(a, bytes);
}

}  // namespace
}  // namespace sharegpu
