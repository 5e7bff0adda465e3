// SPDX-License-Identifier: GPL-2.0
// Negative uAPI tests: invalid ioctls (bad handles, sizes, flags/pad, job ranges,
// placements, fences) fail with the documented errno, change no byte, and leave the device
// working.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr size_t kSize = 16 * 1024;
constexpr uint32_t kBadHandle = 0x7fff0001;

class NegativeTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    ASSERT_LT(static_cast<size_t>(GetParam()), Devices().size()) << "device missing";
    d_ = &Devices()[GetParam()];
    ASSERT_EQ(bo_.Create(d_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
    ASSERT_EQ(Fill(d_->fd, bo_.handle, 0, kSize, 0x600df00d), 0);
  }
  void TearDown() override {
    if (!bo_.handle) return;
    // nothing any rejected call did changed the BO, and the device still runs jobs
    EXPECT_EQ(Checksum(d_->fd, bo_.handle, 0, kSize), PatternCrc(0x600df00d, kSize))
        << "a rejected call changed the BO";
  }
  int SubmitOne(drm_sharegpu_cmd c, uint32_t flags = SHAREGPU_SUBMIT_F_WAIT) {
    return Submit(d_->fd, &c, 1, flags);
  }
  drm_sharegpu_cmd Cmd(uint32_t op) {
    drm_sharegpu_cmd c{};
    c.op = op;
    c.dst_handle = c.src_handle = bo_.handle;
    c.size = 4096;
    if (op == SHAREGPU_CMD_COPY) c.src_offset = 8192;
    return c;
  }
  Dev* d_ = nullptr;
  ScopedBo bo_;
};

TEST_P(NegativeTest, BoCreateRejectsBadArguments) {
  auto create = [&](uint64_t size, uint32_t domains, uint32_t flags = 0, uint32_t pad = 0) {
    drm_sharegpu_bo_create c{};
    c.size = size;
    c.domains = domains;
    c.flags = flags;
    c.pad = pad;
    int ret = Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_BO_CREATE, &c);
    if (!ret) GemClose(d_->fd, c.handle);
    return ret;
  };
  EXPECT_EQ(create(0, SHAREGPU_DOMAIN_VRAM), -EINVAL) << "size 0";
  EXPECT_EQ(create(4096, 0), -EINVAL) << "no domain";
  EXPECT_EQ(create(4096, 0x80), -EINVAL) << "unknown domain bit";
  EXPECT_EQ(create(4096, SHAREGPU_DOMAIN_VRAM | 4), -EINVAL) << "unknown domain bit";
  EXPECT_EQ(create(4096, SHAREGPU_DOMAIN_VRAM, 1), -EINVAL) << "flags";
  EXPECT_EQ(create(4096, SHAREGPU_DOMAIN_VRAM, 0, 1), -EINVAL) << "pad";
  EXPECT_EQ(create((4ull << 30) + 1, SHAREGPU_DOMAIN_SYSTEM), -EINVAL) << "above 4 GiB";
  EXPECT_EQ(create(~0ull, SHAREGPU_DOMAIN_SYSTEM), -EINVAL) << "size overflow";
  EXPECT_EQ(create(d_->info.vram_size * 2, SHAREGPU_DOMAIN_VRAM), -E2BIG) << "VRAM-only > VRAM";
  EXPECT_EQ(create(1, SHAREGPU_DOMAIN_VRAM), 0) << "1 byte rounds up";
}

TEST_P(NegativeTest, BadHandlesAreEnoent) {
  drm_sharegpu_bo_mmap_offset mo{};
  mo.handle = kBadHandle;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &mo), -ENOENT);
  mo.handle = 0;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &mo), -ENOENT) << "handle 0";
  drm_sharegpu_bo_info bi{};
  EXPECT_EQ(BoInfo(d_->fd, kBadHandle, &bi), -ENOENT);
  EXPECT_EQ(BoMove(d_->fd, kBadHandle, SHAREGPU_DOMAIN_SYSTEM), -ENOENT);
  EXPECT_EQ(BoPin(d_->fd, kBadHandle, false), -ENOENT);
  EXPECT_EQ(CpuAccess(d_->fd, kBadHandle, SHAREGPU_CPU_ACCESS_READ), -ENOENT);
  EXPECT_EQ(WaitBo(d_->fd, kBadHandle, 0), -ENOENT);
  EXPECT_EQ(ExportFd(d_->fd, kBadHandle), -ENOENT);
  drm_sharegpu_cmd c = Cmd(SHAREGPU_CMD_CHECKSUM);
  c.src_handle = kBadHandle;
  EXPECT_EQ(SubmitOne(c), -ENOENT);
  c = Cmd(SHAREGPU_CMD_FILL);
  c.dst_handle = kBadHandle;
  EXPECT_EQ(SubmitOne(c), -ENOENT);
  c = Cmd(SHAREGPU_CMD_COPY);
  c.src_handle = kBadHandle;
  EXPECT_EQ(SubmitOne(c), -ENOENT);
  // a closed handle is gone
  uint32_t h = 0;
  ASSERT_EQ(BoCreate(*d_, 4096, SHAREGPU_DOMAIN_VRAM, &h), 0);
  GemClose(d_->fd, h);
  EXPECT_EQ(BoInfo(d_->fd, h, &bi), -ENOENT);
  // handles are per file
  ScopedFd other(Reopen(*d_));
  ASSERT_GE(other.get(), 0);
  EXPECT_EQ(BoInfo(other.get(), bo_.handle, &bi), -ENOENT) << "handle leaked across files";
}

TEST_P(NegativeTest, PadAndFlagsMustBeZero) {
  drm_sharegpu_bo_mmap_offset mo{};
  mo.handle = bo_.handle;
  mo.pad = 1;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &mo), -EINVAL);
  drm_sharegpu_bo_pin p{};
  p.handle = bo_.handle;
  p.flags = 2;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_BO_PIN, &p), -EINVAL) << "pin flags";
  p.flags = 0;
  p.pad = 1;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_BO_PIN, &p), -EINVAL) << "pin pad";
  EXPECT_EQ(CpuAccess(d_->fd, bo_.handle, 0), -EINVAL) << "cpu access without READ/WRITE";
  EXPECT_EQ(CpuAccess(d_->fd, bo_.handle, SHAREGPU_CPU_ACCESS_END), -EINVAL);
  EXPECT_EQ(CpuAccess(d_->fd, bo_.handle, SHAREGPU_CPU_ACCESS_READ | 8), -EINVAL);
  EXPECT_EQ(WaitBo(d_->fd, bo_.handle, 0, 2), -EINVAL) << "wait_bo flags";
  EXPECT_EQ(WaitBo(d_->fd, bo_.handle, -1), -EINVAL) << "negative timeout";
  drm_sharegpu_cmd c = Cmd(SHAREGPU_CMD_CHECKSUM);
  EXPECT_EQ(Submit(d_->fd, &c, 1, SHAREGPU_SUBMIT_F_MASK + 1), -EINVAL) << "submit flag";
  EXPECT_EQ(Submit(d_->fd, &c, 1, 1u << 31), -EINVAL) << "submit flag";
}

TEST_P(NegativeTest, SubmitRejectsBadJobs) {
  drm_sharegpu_cmd c = Cmd(SHAREGPU_CMD_CHECKSUM);
  c.src_offset = kSize - 16;
  c.size = 32;
  EXPECT_EQ(SubmitOne(c), -ERANGE) << "checksum past the end";
  c.src_offset = kSize;
  c.size = 4;
  EXPECT_EQ(SubmitOne(c), -ERANGE) << "offset == size";
  c.src_offset = ~0ull - 8;
  c.size = 16;
  EXPECT_EQ(SubmitOne(c), -ERANGE) << "offset + size overflows";
  c.src_offset = 0;
  c.size = 0;
  EXPECT_EQ(SubmitOne(c), -ERANGE) << "size 0";
  c.size = ~0ull;
  EXPECT_EQ(SubmitOne(c), -ERANGE) << "huge size";

  c = Cmd(SHAREGPU_CMD_FILL);
  c.size = 6;
  EXPECT_EQ(SubmitOne(c), -EINVAL) << "fill size not a multiple of 4";
  c.size = 4096;
  c.dst_offset = kSize - 4092;
  EXPECT_EQ(SubmitOne(c), -ERANGE) << "fill past the end";

  c = Cmd(SHAREGPU_CMD_COPY);
  c.dst_offset = 0;
  c.src_offset = 2048;
  EXPECT_EQ(SubmitOne(c), -EINVAL) << "overlapping copy within one BO";
  c.src_offset = kSize - 100;
  EXPECT_EQ(SubmitOne(c), -ERANGE) << "copy source past the end";

  c = Cmd(0);
  EXPECT_EQ(SubmitOne(c), -EINVAL) << "op 0";
  c = Cmd(77);
  EXPECT_EQ(SubmitOne(c), -EINVAL) << "unknown op";

  // one bad command rejects the whole job (the good FILL before it must not run)
  drm_sharegpu_cmd two[2] = {Cmd(SHAREGPU_CMD_FILL), Cmd(SHAREGPU_CMD_CHECKSUM)};
  two[0].pattern = 0xdeaddead;
  two[1].src_offset = kSize;
  EXPECT_EQ(Submit(d_->fd, two, 2, SHAREGPU_SUBMIT_F_WAIT), -ERANGE);

  drm_sharegpu_submit s{};
  s.cmds = reinterpret_cast<uintptr_t>(&c);
  s.num_cmds = 0;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s), -EINVAL) << "0 commands";
  s.num_cmds = SHAREGPU_MAX_CMDS + 1;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s), -EINVAL) << "too many commands";
  s.cmds = 8;
  s.num_cmds = 1;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s), -EFAULT) << "bad user pointer";
}

TEST_P(NegativeTest, SubmitRejectsBadFencesAndSyncobjs) {
  drm_sharegpu_cmd c = Cmd(SHAREGPU_CMD_CHECKSUM);
  EXPECT_EQ(Submit(d_->fd, &c, 1, SHAREGPU_SUBMIT_F_WAIT | SHAREGPU_SUBMIT_F_IN_FENCE, nullptr,
                   -1),
            -EINVAL)
      << "in-fence -1";
  ScopedFd notfence(open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(Submit(d_->fd, &c, 1, SHAREGPU_SUBMIT_F_WAIT | SHAREGPU_SUBMIT_F_IN_FENCE, nullptr,
                   notfence.get()),
            -EINVAL)
      << "in-fence is not a sync_file";
  drm_sharegpu_submit s{};
  s.cmds = reinterpret_cast<uintptr_t>(&c);
  s.num_cmds = 1;
  s.in_syncobj = 0x4242;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s), -ENOENT) << "unknown in_syncobj";
  s.in_syncobj = 0;
  s.out_syncobj = 0x4242;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s), -ENOENT) << "unknown out_syncobj";
}

TEST_P(NegativeTest, WaitJobRejectsBadArguments) {
  EXPECT_EQ(WaitJob(d_->fd, 0, 0), -EINVAL) << "job 0";
  EXPECT_EQ(WaitJob(d_->fd, 1ull << 60, 0), -EINVAL) << "never issued";
  drm_sharegpu_wait_job w{};
  w.job_id = 1;
  w.timeout_ns = -5;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_WAIT_JOB, &w), -EINVAL) << "negative timeout";
  w.timeout_ns = 0;
  w.num_results = SHAREGPU_MAX_CMDS + 1;
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_WAIT_JOB, &w), -EINVAL) << "too many results";
}

TEST_P(NegativeTest, BadPlacementsAndPins) {
  EXPECT_EQ(BoMove(d_->fd, bo_.handle, 0), -EINVAL) << "no domain";
  EXPECT_EQ(BoMove(d_->fd, bo_.handle, SHAREGPU_DOMAIN_MASK), -EINVAL) << "two domains";
  EXPECT_EQ(BoMove(d_->fd, bo_.handle, 4), -EINVAL) << "unknown domain";
  EXPECT_EQ(BoMove(d_->fd, bo_.handle, 0x80000000u), -EINVAL);
  EXPECT_EQ(BoPin(d_->fd, bo_.handle, true), -EINVAL) << "unbalanced unpin";
  ASSERT_EQ(BoPin(d_->fd, bo_.handle, false), 0);
  EXPECT_EQ(BoMove(d_->fd, bo_.handle, SHAREGPU_DOMAIN_SYSTEM), -EBUSY) << "pinned";
  ASSERT_EQ(BoPin(d_->fd, bo_.handle, true), 0);
  EXPECT_EQ(BoPin(d_->fd, bo_.handle, true), -EINVAL) << "unbalanced unpin";
  // a SYSTEM-only BO cannot be placed in... anything is allowed by BO_MOVE; imports cannot move
  if (Devices().size() >= 2) {
    Dev* other = &Devices()[GetParam() == 0 ? 1 : 0];
    ScopedFd fd(ExportFd(d_->fd, bo_.handle));
    ASSERT_GE(fd.get(), 0);
    uint32_t h = 0;
    ASSERT_EQ(ImportFd(other->fd, fd.get(), &h), 0);
    EXPECT_EQ(BoMove(other->fd, h, SHAREGPU_DOMAIN_SYSTEM), -EINVAL) << "move of an import";
    EXPECT_EQ(BoPin(other->fd, h, false), -EINVAL) << "pin of an import";
    EXPECT_EQ(CpuAccess(other->fd, h, SHAREGPU_CPU_ACCESS_READ), -EINVAL)
        << "BO_CPU_ACCESS on an import (use the dma-buf)";
    GemClose(other->fd, h);
  }
}

TEST_P(NegativeTest, PrimeAndUnknownIoctls) {
  uint32_t h = 0;
  EXPECT_EQ(ImportFd(d_->fd, -1, &h), -EBADF) << "fd -1";
  ScopedFd notbuf(open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(ImportFd(d_->fd, notbuf.get(), &h), -EINVAL) << "not a dma-buf";
  drm_sharegpu_info info{};
  EXPECT_EQ(Ioctl(d_->fd, DRM_IOWR(DRM_COMMAND_BASE + 0x30, drm_sharegpu_info), &info), -EINVAL)
      << "unknown driver ioctl";
  // mmap beyond the BO through its fake offset
  drm_sharegpu_bo_mmap_offset mo{};
  mo.handle = bo_.handle;
  ASSERT_EQ(Ioctl(d_->fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &mo), 0);
  void* p = mmap(nullptr, kSize * 4, PROT_READ, MAP_SHARED, d_->fd, mo.offset);
  EXPECT_EQ(p, MAP_FAILED) << "mmap larger than the BO succeeded";
  if (p != MAP_FAILED) munmap(p, kSize * 4);
}

INSTANTIATE_TEST_SUITE_P(Dev, NegativeTest, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return "dev" + std::to_string(i.param);
                         });

}  // namespace
