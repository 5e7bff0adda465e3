// SPDX-License-Identifier: GPL-2.0
// Moves into VRAM (issue 9, defects 6 and 7), on both devices (coherent and not):
//  - a foreign dynamic importer (guest-tests/importer: it unmaps lazily, after move_notify,
//    as amdgpu does) writes through its mapping while the BO is in SYSTEM placement; the BO
//    goes back to VRAM; the importer's bytes must be what the device then has;
//  - a move into VRAM that fails after TTM allocated the resource (fault injection, debugfs
//    sharegpu_fail_vram_moves) leaves device and TTM agreeing on the placement and the
//    contents intact for the CPU and the device.
// Linked into sgpu_invalidation_test (the runner's list of binaries is fixed).
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "importer/sgpu_test_importer.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr size_t kSize = 256 * 1024;
constexpr uint32_t kOld = 0xa5a5a5a5, kNew = 0x3c3c0ff0;

std::vector<uint32_t> Words(uint32_t pattern) { return std::vector<uint32_t>(kSize / 4, pattern); }
uint32_t CrcOf(const std::vector<uint32_t>& w) { return Crc32c(w.data(), w.size() * 4); }
void Put(std::vector<uint32_t>* w, size_t off, size_t size, uint32_t pattern) {
  for (size_t i = off / 4; i < (off + size) / 4; i++) (*w)[i] = pattern;
}

class VramMoveTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    d_ = FindDev(GetParam());
    ASSERT_NE(d_, nullptr) << "need a " << (GetParam() ? "" : "non-") << "coherent sharegpu";
  }
  // BO in `domain` with kOld everywhere (a FILL job, waited for).
  void MakeBo(ScopedBo* bo, uint32_t domain) {
    ASSERT_EQ(bo->Create(d_->fd, kSize, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM), 0);
    ASSERT_EQ(BoMove(d_->fd, bo->handle, domain), 0);
    ASSERT_EQ(Fill(d_->fd, bo->handle, 0, kSize, kOld), 0);
    ASSERT_EQ(WaitBo(d_->fd, bo->handle, 10'000'000'000ll), 0);
  }
  // TTM's placement and the device's agree (and, in VRAM, on the offset too).
  void ExpectAgree(const ScopedBo& bo, uint32_t domain, const char* when) {
    SCOPED_TRACE(when);
    drm_sharegpu_bo_info i{};
    ASSERT_EQ(BoInfo(d_->fd, bo.handle, &i), 0);
    EXPECT_EQ(i.domain, domain) << "TTM's placement";
    // the device's placement: 0 DEVICE (VRAM), 1 SYSTEM (hardware.md, BO_CREATE)
    EXPECT_EQ(i.hw_placement, domain == SHAREGPU_DOMAIN_VRAM ? 0u : 1u)
        << "the device's placement (TTM says domain " << i.domain << ")";
    if (domain == SHAREGPU_DOMAIN_VRAM) {
      EXPECT_EQ(i.vram_offset, i.hw_vram_offset);
    }
  }
  Dev* d_ = nullptr;
};

struct Importer {
  ScopedFd fd;
  int Open() {
    fd.reset(open("/dev/sgpu_test_importer", O_RDWR | O_CLOEXEC));
    return fd.get() < 0 ? -errno : 0;
  }
  int Io(unsigned long req, void* arg) { return Ioctl(fd.get(), req, arg); }
  // Export `bo`, import it dynamically and map it (which moves it to SYSTEM placement).
  void ImportAndMap(const Dev& d, const ScopedBo& bo) {
    ScopedFd buf(ExportFd(d.fd, bo.handle));
    ASSERT_GE(buf.get(), 0);
    ASSERT_EQ(Open(), 0) << "/dev/sgpu_test_importer (guest-tests/importer module)";
    int f = buf.get();
    ASSERT_EQ(Io(SGPU_TI_IOC_IMPORT, &f), 0);
    ASSERT_EQ(Io(SGPU_TI_IOC_MAP, nullptr), 0);
  }
  sgpu_ti_info Info() {
    sgpu_ti_info i{};
    EXPECT_EQ(Io(SGPU_TI_IOC_INFO, &i), 0);
    return i;
  }
};

// The importer maps the BO (which moves it to SYSTEM placement), writes through its mapping,
// and still holds the mapping when the BO goes back to VRAM: move_notify only marked it
// stale. The exporter must push the pages to the device before the move; the importer's
// later unmap finds the BO in VRAM and must not be what saves its bytes.
TEST_P(VramMoveTest, LazyForeignImporterWritesSurviveReturnToVram) {
  ScopedBo bo;
  Importer imp;
  ASSERT_NO_FATAL_FAILURE(MakeBo(&bo, SHAREGPU_DOMAIN_VRAM));
  ASSERT_NO_FATAL_FAILURE(imp.ImportAndMap(*d_, bo));
  ASSERT_NO_FATAL_FAILURE(ExpectAgree(bo, SHAREGPU_DOMAIN_SYSTEM, "mapped by the importer"));

  sgpu_ti_write w{kSize / 4, kSize / 2, kNew, 0};
  ASSERT_EQ(imp.Io(SGPU_TI_IOC_WRITE, &w), 0);
  std::vector<uint32_t> want = Words(kOld);
  Put(&want, w.offset, w.size, kNew);

  const uint32_t notifies = imp.Info().move_notifies;
  ASSERT_EQ(BoMove(d_->fd, bo.handle, SHAREGPU_DOMAIN_VRAM), 0);
  sgpu_ti_info i = imp.Info();
  EXPECT_GT(i.move_notifies, notifies) << "the importer was not notified of the move";
  EXPECT_TRUE(i.mapped && i.stale) << "the importer should still hold its (stale) mapping";
  EXPECT_EQ(imp.Io(SGPU_TI_IOC_WRITE, &w), -ESTALE);
  ASSERT_NO_FATAL_FAILURE(ExpectAgree(bo, SHAREGPU_DOMAIN_VRAM, "back in VRAM"));

  EXPECT_EQ(Checksum(d_->fd, bo.handle, 0, kSize), CrcOf(want))
      << "the device lost the importer's writes (it has "
      << (Checksum(d_->fd, bo.handle, 0, kSize) == CrcOf(Words(kOld)) ? "only the old bytes"
                                                                       : "other bytes")
      << ")";
  ASSERT_EQ(imp.Io(SGPU_TI_IOC_UNMAP, nullptr), 0);  // the lazy unmap, after the move
  EXPECT_EQ(Checksum(d_->fd, bo.handle, 0, kSize), CrcOf(want)) << "after the importer's unmap";
  ASSERT_NE(bo.Map(), nullptr);
  ASSERT_EQ(CpuAccess(d_->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ), 0);
  EXPECT_EQ(Crc32c(bo.map, kSize), CrcOf(want)) << "the CPU's view";
  ASSERT_EQ(CpuAccess(d_->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), 0);

  // and a second round trip with a fresh mapping: the importer sees what the device has
  ASSERT_EQ(imp.Io(SGPU_TI_IOC_MAP, nullptr), 0);
  sgpu_ti_write w2{0, 4096, kOld ^ kNew, 0};
  ASSERT_EQ(imp.Io(SGPU_TI_IOC_WRITE, &w2), 0);
  Put(&want, w2.offset, w2.size, w2.pattern);
  bo.Unmap();
  ASSERT_EQ(BoMove(d_->fd, bo.handle, SHAREGPU_DOMAIN_VRAM), 0);
  EXPECT_EQ(Checksum(d_->fd, bo.handle, 0, kSize), CrcOf(want)) << "second round trip";
}

// The same with an importer that unmaps before the move (as sharegpu's own importer does in
// move_notify): the unmap's transfer keeps the bytes, before and after the fix alike.
TEST_P(VramMoveTest, ForeignImporterUnmappingFirstKeepsItsWrites) {
  ScopedBo bo;
  Importer imp;
  ASSERT_NO_FATAL_FAILURE(MakeBo(&bo, SHAREGPU_DOMAIN_VRAM));
  ASSERT_NO_FATAL_FAILURE(imp.ImportAndMap(*d_, bo));
  sgpu_ti_write w{0, kSize / 2, kNew, 0};
  ASSERT_EQ(imp.Io(SGPU_TI_IOC_WRITE, &w), 0);
  std::vector<uint32_t> want = Words(kOld);
  Put(&want, w.offset, w.size, kNew);
  ASSERT_EQ(imp.Io(SGPU_TI_IOC_UNMAP, nullptr), 0);
  ASSERT_EQ(BoMove(d_->fd, bo.handle, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectAgree(bo, SHAREGPU_DOMAIN_VRAM, "back in VRAM"));
  EXPECT_EQ(Checksum(d_->fd, bo.handle, 0, kSize), CrcOf(want));
}

// A move into VRAM that fails after the resource was allocated (injected in the TTM move
// callback, after the device copy) is unwound: TTM and the device both still say SYSTEM,
// the CPU sees the device's bytes, its writes reach the device, and the next move works.
TEST_P(VramMoveTest, FailedVramMoveLeavesDeviceAndTtmAgreeing) {
  ScopedBo bo;
  ASSERT_NO_FATAL_FAILURE(MakeBo(&bo, SHAREGPU_DOMAIN_SYSTEM));
  ASSERT_NO_FATAL_FAILURE(ExpectAgree(bo, SHAREGPU_DOMAIN_SYSTEM, "before"));
  ASSERT_EQ(WriteDebugfs(*d_, "sharegpu_fail_vram_moves", "1"), 0)
      << d_->debugfs_dir() << "/sharegpu_fail_vram_moves";
  const int ret = BoMove(d_->fd, bo.handle, SHAREGPU_DOMAIN_VRAM);
  const std::string left = ReadFile(d_->debugfs_dir() + "/sharegpu_fail_vram_moves");
  WriteDebugfs(*d_, "sharegpu_fail_vram_moves", "0");
  ASSERT_EQ(ret, -EIO) << "the injected failure";
  EXPECT_EQ(left, "0\n") << "the injection was not consumed";
  ASSERT_NO_FATAL_FAILURE(ExpectAgree(bo, SHAREGPU_DOMAIN_SYSTEM, "after the failed move"));

  std::vector<uint32_t> want = Words(kOld);
  ASSERT_NE(bo.Map(), nullptr);
  ASSERT_EQ(CpuAccess(d_->fd, bo.handle, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_WRITE), 0);
  EXPECT_EQ(Crc32c(bo.map, kSize), CrcOf(want)) << "the CPU does not see the device's bytes";
  memset(static_cast<uint8_t*>(bo.map) + kSize / 2, 0x3c, kSize / 2);
  Put(&want, kSize / 2, kSize / 2, 0x3c3c3c3c);
  ASSERT_EQ(CpuAccess(d_->fd, bo.handle,
                      SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END),
            0);
  bo.Unmap();
  EXPECT_EQ(Checksum(d_->fd, bo.handle, 0, kSize), CrcOf(want))
      << "the device does not have the CPU's bytes";
  ASSERT_NO_FATAL_FAILURE(ExpectAgree(bo, SHAREGPU_DOMAIN_SYSTEM, "after a job"));

  ASSERT_EQ(BoMove(d_->fd, bo.handle, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectAgree(bo, SHAREGPU_DOMAIN_VRAM, "after the next move"));
  EXPECT_EQ(Checksum(d_->fd, bo.handle, 0, kSize), CrcOf(want)) << "after the next move";
}

INSTANTIATE_TEST_SUITE_P(Devices, VramMoveTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Coherent" : "NonCoherent";
                         });

}  // namespace
