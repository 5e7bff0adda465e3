// SPDX-License-Identifier: GPL-2.0
// Coherency end to end (docs/hardware.md section 8, rule S4): on the coherent=off device a
// missing barrier is observable as stale data in both directions, the barriers
// (DMA_BUF_IOCTL_SYNC on the exported dma-buf, or the driver's BO_CPU_ACCESS ioctl) make the
// data right; on the coherent device the same sequences are right without barriers.
// Jobs use SHAREGPU_SUBMIT_F_NO_CACHE_MAINT where the point is to observe the device cache
// (otherwise the driver's automatic flush/invalidate around each job hides it).
//
// The coherent=off device runs QEMU's coherency-violation detector (check-coherency=on,
// scripts/guest-tests.sh; docs/user-guide.md): every test states how many violations of
// each kind it makes on purpose (none unless it says so), and TearDown compares that with
// the device's counters read from the host (host agent, QMP query-sharegpu). A CPU read is
// invisible to the detector (dirty logging sees writes), so the tests that read the
// device's output without a barrier expect none.
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr size_t kSize = 64 * 1024;
constexpr uint32_t kNoMaint = SHAREGPU_SUBMIT_F_NO_CACHE_MAINT;

// The detector's counters of a device, per kind (QMP SharegpuCoherencyCounters).
struct Violations {
  uint64_t cpu_write_outside_access = 0;
  uint64_t job_read_unflushed_cpu_write = 0;
  uint64_t cpu_access_unflushed_job_write = 0;
};

class CoherencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nc_ = FindDev(false);
    co_ = FindDev(true);
    ASSERT_NE(nc_, nullptr) << "no sharegpu device with coherent=off (GET_INFO flags)";
    ASSERT_NE(co_, nullptr) << "no coherent sharegpu device";
    // the detector runs unless the run says otherwise (guest-tests.sh --coherency-check off,
    // or no host agent to ask): then only the data is checked
    detector_ = HostAgentAvailable() && CmdlineParam("sgputest.coherency_check") != "off";
    if (detector_) {
      ASSERT_NO_FATAL_FAILURE(ReadViolations(&before_));
    }
  }

  void TearDown() override {
    if (!detector_ || HasFatalFailure()) return;
    Violations after;
    ASSERT_NO_FATAL_FAILURE(ReadViolations(&after));
    EXPECT_EQ(after.cpu_write_outside_access - before_.cpu_write_outside_access,
              expect_.cpu_write_outside_access)
        << "cpu-write-outside-access violations on " << nc_->Describe();
    EXPECT_EQ(after.job_read_unflushed_cpu_write - before_.job_read_unflushed_cpu_write,
              expect_.job_read_unflushed_cpu_write)
        << "job-read-unflushed-cpu-write violations on " << nc_->Describe();
    EXPECT_EQ(after.cpu_access_unflushed_job_write - before_.cpu_access_unflushed_job_write,
              expect_.cpu_access_unflushed_job_write)
        << "cpu-access-unflushed-job-write violations on " << nc_->Describe();
  }

  void ReadViolations(Violations* v) {
    std::string reply;
    ASSERT_EQ(HostRequest("coherency " + nc_->pci, &reply), 0) << reply;
    unsigned long long a, b, c;
    ASSERT_EQ(sscanf(reply.c_str(), "%llu %llu %llu", &a, &b, &c), 3) << reply;
    *v = Violations{a, b, c};
  }

  // A VRAM BO holding `old` (written with barriers, so the device cache starts clean), with
  // the device cache primed: one NO_CACHE_MAINT checksum that must already be right.
  void MakePrimedBo(const Dev& d, ScopedBo& bo, const std::vector<uint8_t>& old) {
    ASSERT_EQ(bo.Create(d.fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
    uint8_t* p = bo.Map();
    ASSERT_NE(p, nullptr) << strerror(errno);
    ASSERT_EQ(CpuAccess(d.fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE), 0);
    memcpy(p, old.data(), kSize);
    ASSERT_EQ(CpuAccess(d.fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END), 0);
    ASSERT_EQ(Checksum(d.fd, bo.handle, 0, kSize, kNoMaint), Crc32c(old.data(), kSize))
        << "device does not see the barriered CPU write";
  }

  static std::vector<uint8_t> Bytes(uint32_t seed) {
    std::vector<uint8_t> v(kSize);
    FillRandom(v.data(), kSize, seed);
    return v;
  }

  Dev* nc_ = nullptr;
  Dev* co_ = nullptr;
  bool detector_ = false;
  Violations before_;
  Violations expect_;  // what the test does on purpose
};

TEST_F(CoherencyTest, DevicesReportCoherency) {
  EXPECT_EQ(nc_->info.hw_features & 1u, 0u) << nc_->Describe();
  EXPECT_NE(co_->info.hw_features & 1u, 0u) << co_->Describe();
  EXPECT_NE(nc_->fd, co_->fd);
}

// CPU -> device, barrier = DMA_BUF_IOCTL_SYNC on the BO's exported dma-buf.
TEST_F(CoherencyTest, CpuWriteStaleWithoutSyncRightWithDmaBufSync) {
  auto old_data = Bytes(1), new_data = Bytes(2), newer = Bytes(3);
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*nc_, bo, old_data));
  ScopedFd dmabuf(ExportFd(nc_->fd, bo.handle));
  ASSERT_GE(dmabuf.get(), 0);

  // no barrier: the device keeps serving its cached (old) lines
  memcpy(bo.map, new_data.data(), kSize);
  expect_.job_read_unflushed_cpu_write = 1;
  int64_t stale = Checksum(nc_->fd, bo.handle, 0, kSize, kNoMaint);
  EXPECT_EQ(stale, Crc32c(old_data.data(), kSize)) << "expected the checksum of the OLD contents";
  EXPECT_NE(stale, Crc32c(new_data.data(), kSize)) << "CPU write visible without a barrier";

  // barrier: SYNC_START|WRITE, write, SYNC_END|WRITE (end invalidates the device cache)
  ASSERT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE), 0);
  memcpy(bo.map, newer.data(), kSize);
  ASSERT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE), 0);
  EXPECT_EQ(Checksum(nc_->fd, bo.handle, 0, kSize, kNoMaint), Crc32c(newer.data(), kSize));
}

// CPU -> device, barrier = the driver's BO_CPU_ACCESS ioctl.
TEST_F(CoherencyTest, CpuWriteStaleWithoutBarrierRightWithCpuAccessIoctl) {
  auto old_data = Bytes(4), new_data = Bytes(5), newer = Bytes(6);
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*nc_, bo, old_data));

  memcpy(bo.map, new_data.data(), kSize);
  expect_.job_read_unflushed_cpu_write = 1;
  int64_t stale = Checksum(nc_->fd, bo.handle, 0, kSize, kNoMaint);
  EXPECT_EQ(stale, Crc32c(old_data.data(), kSize));
  EXPECT_NE(stale, Crc32c(new_data.data(), kSize));

  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE), 0);
  memcpy(bo.map, newer.data(), kSize);
  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END),
            0);
  EXPECT_EQ(Checksum(nc_->fd, bo.handle, 0, kSize, kNoMaint), Crc32c(newer.data(), kSize));
}

// device -> CPU, barrier = DMA_BUF_IOCTL_SYNC START|READ (flushes the device cache).
TEST_F(CoherencyTest, DeviceWriteStaleWithoutSyncRightWithDmaBufSync) {
  auto old_data = Bytes(7);
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*nc_, bo, old_data));
  ScopedFd dmabuf(ExportFd(nc_->fd, bo.handle));
  ASSERT_GE(dmabuf.get(), 0);

  ASSERT_EQ(Fill(nc_->fd, bo.handle, 0, kSize, 0xc0ffee01, kNoMaint), 0);
  uint32_t seen = Crc32c(bo.map, kSize);
  EXPECT_EQ(seen, Crc32c(old_data.data(), kSize)) << "expected the OLD contents without a barrier";
  EXPECT_NE(seen, PatternCrc(0xc0ffee01, kSize)) << "device write visible without a barrier";

  ASSERT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ), 0);
  EXPECT_EQ(Crc32c(bo.map, kSize), PatternCrc(0xc0ffee01, kSize));
  EXPECT_EQ(reinterpret_cast<uint32_t*>(bo.map)[kSize / 8], 0xc0ffee01u);
  ASSERT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);
}

// device -> CPU, barrier = BO_CPU_ACCESS READ.
TEST_F(CoherencyTest, DeviceWriteStaleWithoutBarrierRightWithCpuAccessIoctl) {
  auto old_data = Bytes(8);
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*nc_, bo, old_data));

  ASSERT_EQ(Fill(nc_->fd, bo.handle, 4096, kSize - 8192, 0x5eed5eed, kNoMaint), 0);
  uint32_t seen = Crc32c(bo.map, kSize);
  EXPECT_EQ(seen, Crc32c(old_data.data(), kSize));

  std::vector<uint8_t> want = old_data;
  for (size_t i = 4096; i < kSize - 4096; i += 4) memcpy(&want[i], "\xed\x5e\xed\x5e", 4);
  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ), 0);
  EXPECT_EQ(Crc32c(bo.map, kSize), Crc32c(want.data(), kSize))
      << "flush must publish exactly the device-written range";
  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), 0);
}

// device -> CPU, the CPU writing instead of reading: without an opening barrier its write
// lands in memory under the job's dirty cache lines, and the flush that a later barrier does
// writes them back over it. Dirty logging sees this one (a write), unlike the reads above.
TEST_F(CoherencyTest, CpuWriteOverUnflushedJobOutputIsLost) {
  auto old_data = Bytes(13);
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*nc_, bo, old_data));

  ASSERT_EQ(Fill(nc_->fd, bo.handle, 0, kSize, 0x600dcafe, kNoMaint), 0);
  memset(static_cast<uint8_t*>(bo.map) + 4096, 0x77, 4096);
  expect_.cpu_access_unflushed_job_write = 1;
  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ), 0);
  EXPECT_EQ(Crc32c(bo.map, kSize), PatternCrc(0x600dcafe, kSize))
      << "the flush must write the job's lines back over the CPU's unbarriered write";
  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), 0);
}

// A write-only CPU access to a VRAM BO after a job, done right: begin (publishes the job's
// lines), write, end (invalidates) -- and a job reading the result sees it. No violation.
TEST_F(CoherencyTest, CpuWriteAfterJobRightWithBarriers) {
  auto old_data = Bytes(14), new_data = Bytes(15);
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*nc_, bo, old_data));
  ASSERT_EQ(Fill(nc_->fd, bo.handle, 0, kSize, 0x12121212, kNoMaint), 0);
  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE), 0);
  memcpy(bo.map, new_data.data(), kSize);
  ASSERT_EQ(CpuAccess(nc_->fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END),
            0);
  EXPECT_EQ(Checksum(nc_->fd, bo.handle, 0, kSize, kNoMaint), Crc32c(new_data.data(), kSize));
}

// Default submissions (driver cache maintenance) are right on the non-coherent device.
TEST_F(CoherencyTest, DriverCacheMaintenanceAroundJobs) {
  auto data = Bytes(9);
  ScopedBo a, b;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*nc_, a, data));
  ASSERT_EQ(b.Create(nc_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(Fill(nc_->fd, a.handle, 0, 4096, 0x11223344), 0);
  ASSERT_EQ(Copy(nc_->fd, b.handle, 0, a.handle, 0, kSize), 0);
  memcpy(data.data(), std::vector<uint32_t>(1024, 0x11223344).data(), 4096);
  EXPECT_EQ(Checksum(nc_->fd, b.handle, 0, kSize), Crc32c(data.data(), kSize));
  // a maintained job flushes: the CPU sees it after only waiting for the BO
  ASSERT_NE(b.Map(), nullptr);
  ASSERT_EQ(WaitBo(nc_->fd, b.handle, 10ll * 1000 * 1000 * 1000), 0);
  EXPECT_EQ(Crc32c(b.map, kSize), Crc32c(data.data(), kSize));
}

// SYSTEM-placed BOs (device storage + guest pages) are right with barriers on both devices.
TEST_F(CoherencyTest, SystemBoRightWithBarriersOnBothDevices) {
  for (Dev* d : {nc_, co_}) {
    SCOPED_TRACE(d->Describe());
    auto data = Bytes(10);
    ScopedBo bo;
    ASSERT_EQ(bo.Create(d->fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
    ASSERT_NE(bo.Map(), nullptr);
    ASSERT_EQ(CpuAccess(d->fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE), 0);
    memcpy(bo.map, data.data(), kSize);
    ASSERT_EQ(CpuAccess(d->fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END), 0);
    EXPECT_EQ(Checksum(d->fd, bo.handle, 0, kSize), Crc32c(data.data(), kSize));
    ASSERT_EQ(Fill(d->fd, bo.handle, 0, kSize, 0xabcdef01), 0);
    ASSERT_EQ(CpuAccess(d->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ), 0);
    EXPECT_EQ(Crc32c(bo.map, kSize), PatternCrc(0xabcdef01, kSize));
    ASSERT_EQ(CpuAccess(d->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), 0);
  }
}

// A write-only CPU access to part of a SYSTEM BO keeps the rest of a job's output (issue 9,
// defect 2): begin brings the device's bytes to the pages whatever the direction, because end
// pushes the whole BO back. Through BO_CPU_ACCESS and through DMA_BUF_IOCTL_SYNC.
TEST_F(CoherencyTest, PartialCpuWriteOfASystemBoKeepsTheJobsOutput) {
  std::vector<uint8_t> want(kSize, 0xaa);
  memset(want.data() + 4096, 0x55, 16);
  for (Dev* d : {nc_, co_}) {
    for (bool via_dmabuf : {false, true}) {
      SCOPED_TRACE(d->Describe() + (via_dmabuf ? " DMA_BUF_IOCTL_SYNC" : " BO_CPU_ACCESS"));
      ScopedBo bo;
      ASSERT_EQ(bo.Create(d->fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
      ScopedFd dmabuf(ExportFd(d->fd, bo.handle));
      ASSERT_GE(dmabuf.get(), 0);
      uint8_t* p = bo.Map();
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(Fill(d->fd, bo.handle, 0, kSize, 0xaaaaaaaa), 0);
      if (via_dmabuf)
        ASSERT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE), 0);
      else
        ASSERT_EQ(CpuAccess(d->fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE), 0);
      memset(p + 4096, 0x55, 16);
      if (via_dmabuf)
        ASSERT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE), 0);
      else
        ASSERT_EQ(CpuAccess(d->fd, bo.handle,
                            SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END),
                  0);
      EXPECT_EQ(Checksum(d->fd, bo.handle, 0, kSize), Crc32c(want.data(), kSize))
          << "the CPU's partial write replaced the job's output with stale page contents";
    }
  }
}

// The coherent device: the very same sequences are right with no barrier at all.
TEST_F(CoherencyTest, CoherentDeviceRightWithoutBarriers) {
  auto old_data = Bytes(11), new_data = Bytes(12);
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakePrimedBo(*co_, bo, old_data));

  memcpy(bo.map, new_data.data(), kSize);
  EXPECT_EQ(Checksum(co_->fd, bo.handle, 0, kSize, kNoMaint), Crc32c(new_data.data(), kSize))
      << "coherent device served stale data";

  ASSERT_EQ(Fill(co_->fd, bo.handle, 0, kSize, 0x0badcafe, kNoMaint), 0);
  EXPECT_EQ(Crc32c(bo.map, kSize), PatternCrc(0x0badcafe, kSize))
      << "device write not visible on the coherent device";
}

}  // namespace
