// SPDX-License-Identifier: GPL-2.0
// Asynchronous jobs end to end (docs/hardware.md 1.3, issue 8): with a job held pending on
// the host (x-sharegpu-hold through the host agent), its fence stays unsignalled, implicit
// sync makes another device's job on the shared buffer wait for it and then read its data,
// DMA_BUF_IOCTL_SYNC START waits for it, and a move requested meanwhile completes after it
// with the data intact. Holds are released well inside the driver's command timeout.
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <string>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr size_t kSize = 256 * 1024;
constexpr auto kNotYet = std::chrono::milliseconds(300);  // "still blocked" observation

class AsyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HostAgentAvailable()) GTEST_SKIP() << "no host agent (sgputest.host=1 missing)";
    a_ = FindDev(true);
    b_ = FindDev(false);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
  }
  void TearDown() override {
    if (held_) Host("release " + a_->pci);
  }

  void Host(const std::string& req) {
    std::string reply;
    int ret = HostRequest(req, &reply);
    ASSERT_EQ(ret, 0) << req << ": " << reply;
  }
  void Hold(const std::string& extra = "") {
    Host("hold " + a_->pci + extra);
    held_ = true;
  }
  void Release() {
    Host("release " + a_->pci);
    held_ = false;
  }
  // A FILL on A's buffer, queued (not waited for); its sync_file.
  int SubmitFill(uint32_t handle, uint32_t pattern) {
    drm_sharegpu_cmd c = FillCmd(handle, kSize, pattern);
    drm_sharegpu_submit out{};
    int ret = Submit(a_->fd, &c, 1, SHAREGPU_SUBMIT_F_OUT_FENCE, &out);
    return ret ? ret : out.out_fence_fd;
  }

  Dev* a_ = nullptr;
  Dev* b_ = nullptr;
  bool held_ = false;
};

TEST_F(AsyncTest, HeldJobKeepsItsFencePendingUntilReleased) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x11223344));
  ASSERT_GE(fence.get(), 0);
  EXPECT_EQ(WaitFenceFd(fence.get(), kNotYet.count()), 0) << "a held job's fence signalled";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(WaitFenceFd(fence.get(), 10000), 1);
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x11223344, kSize));
}

// Device B's job on its import of A's buffer waits for A's held job (implicit sync through
// the reservation object) and reads A's data, not the old contents.
TEST_F(AsyncTest, ImplicitSyncAcrossDevicesReadsTheHeldWritersData) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0x0bad0bad), 0);
  ScopedFd dmabuf(ExportFd(a_->fd, x.handle));
  ASSERT_GE(dmabuf.get(), 0);
  uint32_t h = 0;
  ASSERT_EQ(ImportFd(b_->fd, dmabuf.get(), &h), 0);
  ScopedBo y;
  y.Adopt(b_->fd, h, kSize);

  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x600d600d));
  ASSERT_GE(fence.get(), 0);
  auto crc = std::async(std::launch::async, [&] { return Checksum(b_->fd, y.handle, 0, kSize); });
  EXPECT_EQ(crc.wait_for(kNotYet), std::future_status::timeout)
      << "B's job completed while A's write was still pending";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(crc.get(), PatternCrc(0x600d600d, kSize));
  EXPECT_EQ(WaitFenceFd(fence.get(), 10000), 1);
}

// DMA_BUF_IOCTL_SYNC START (a CPU read) blocks while a writer is pending, returns after it.
TEST_F(AsyncTest, DmaBufSyncStartWaitsForAHeldWriter) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ScopedFd dmabuf(ExportFd(a_->fd, x.handle));
  ASSERT_GE(dmabuf.get(), 0);
  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x5a5a5a5a));
  ASSERT_GE(fence.get(), 0);
  auto sync = std::async(std::launch::async, [&] {
    return DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
  });
  EXPECT_EQ(sync.wait_for(kNotYet), std::future_status::timeout)
      << "SYNC START returned while the writer was held";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(sync.get(), 0);
  uint8_t* p = x.Map();
  ASSERT_NE(p, nullptr);
  uint32_t c = 0;
  ASSERT_EQ(ProbeCrc(p, kSize, &c), 0);
  EXPECT_EQ(c, PatternCrc(0x5a5a5a5a, kSize)) << "CPU read after SYNC START";
  EXPECT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);
}

// A move requested while the job that writes the buffer is held completes after it; the
// job's data is in the new placement.
TEST_F(AsyncTest, MoveRequestedWhileAJobIsHeldKeepsItsData) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM), 0);
  ASSERT_EQ(BoMove(a_->fd, x.handle, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x7e57da7a));
  ASSERT_GE(fence.get(), 0);
  auto move = std::async(std::launch::async,
                         [&] { return BoMove(a_->fd, x.handle, SHAREGPU_DOMAIN_SYSTEM); });
  EXPECT_EQ(move.wait_for(kNotYet), std::future_status::timeout)
      << "the move completed while the job writing the buffer was held";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(move.get(), 0);
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(BoInfo(a_->fd, x.handle, &info), 0);
  EXPECT_EQ(info.vram_offset, kNoOffset) << "not in system memory after the move";
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x7e57da7a, kSize));
}

// A lost completion interrupt does not hang the job's waiter: the driver's ring poll finds
// the completion (debugfs ring_poll_completions counts it).
TEST_F(AsyncTest, LostInterruptDoesNotHangAWaiter) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  const int64_t polled = Counter(*a_, "ring_poll_completions");
  ASSERT_GE(polled, 0) << "debugfs counter ring_poll_completions missing";
  ASSERT_NO_FATAL_FAILURE(Host("drop-irq " + a_->pci));
  ScopedFd fence(SubmitFill(x.handle, 0x10571e57));
  ASSERT_GE(fence.get(), 0);
  EXPECT_EQ(WaitFenceFd(fence.get(), 10000), 1) << "the job's fence hung after a lost interrupt";
  EXPECT_GT(Counter(*a_, "ring_poll_completions"), polled);
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x10571e57, kSize));
}

}  // namespace
