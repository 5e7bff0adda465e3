// The virgl engine's device: libvirglrenderer on EGL surfaceless (llvmpipe here). Every test
// runs on the real renderer; CI installs what it needs, so an initialisation failure fails.
#include "engine/virgl_renderer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <mutex>
#include <random>
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
