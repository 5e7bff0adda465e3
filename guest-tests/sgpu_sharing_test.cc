// SPDX-License-Identifier: GPL-2.0
// Sharing end to end: PRIME export on one sharegpu, import on the other (zero copy, p2p by
// UUID), sharegpu <-> vgem in both directions, sync_file export/import on the dma-buf, and
// implicit synchronisation between the two devices through the shared reservation.
#include <errno.h>
#include <fcntl.h>
#include <linux/udmabuf.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr int64_t kSec = 1000ll * 1000 * 1000;

class SharingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = FindDev(true);
    b_ = FindDev(false);
    ASSERT_NE(a_, nullptr) << "need a coherent sharegpu";
    ASSERT_NE(b_, nullptr) << "need a non-coherent sharegpu";
  }

  // BO with random contents written through the exporter's mapping (with barriers).
  void MakeDataBo(const Dev& d, ScopedBo& bo, size_t size, uint32_t seed, uint32_t* crc,
                  uint32_t domains = SHAREGPU_DOMAIN_VRAM) {
    ASSERT_EQ(bo.Create(d.fd, size, domains), 0);
    ASSERT_NE(bo.Map(), nullptr) << strerror(errno);
    ASSERT_EQ(CpuAccess(d.fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE), 0);
    FillRandom(bo.map, size, seed);
    *crc = Crc32c(bo.map, size);
    ASSERT_EQ(CpuAccess(d.fd, bo.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END), 0);
  }

  void ZeroCopy(const Dev& exp, const Dev& imp);

  Dev* a_ = nullptr;
  Dev* b_ = nullptr;
};

void SharingTest::ZeroCopy(const Dev& exp, const Dev& imp) {
  constexpr size_t kSize = 1 << 20;
  ScopedBo x, y;
  uint32_t crc = 0;
  ASSERT_NO_FATAL_FAILURE(MakeDataBo(exp, x, kSize, 42, &crc));

  drm_sharegpu_info before{}, after{};
  ASSERT_EQ(GetInfo(imp.fd, &before), 0);
  ScopedFd fd(ExportFd(exp.fd, x.handle));
  ASSERT_GE(fd.get(), 0) << "PRIME handle->fd: " << strerror(-fd.get());
  uint32_t h = 0;
  ASSERT_EQ(ImportFd(imp.fd, fd.get(), &h), 0);
  y.Adopt(imp.fd, h, kSize);

  // the importer's job reads the exporter's data
  EXPECT_EQ(Checksum(imp.fd, y.handle, 0, kSize), crc);

  drm_sharegpu_bo_info xi{}, yi{};
  ASSERT_EQ(BoInfo(exp.fd, x.handle, &xi), 0);
  ASSERT_EQ(BoInfo(imp.fd, y.handle, &yi), 0);
  EXPECT_TRUE(xi.flags & SHAREGPU_BO_INFO_F_EXPORTED) << std::hex << xi.flags;
  EXPECT_TRUE(yi.flags & SHAREGPU_BO_INFO_F_IMPORTED) << std::hex << yi.flags;
  EXPECT_TRUE(yi.flags & SHAREGPU_BO_INFO_F_P2P) << "import is not peer-to-peer (a copy?)";
  EXPECT_EQ(yi.size, xi.size);
  // no duplicate VRAM on the importer
  ASSERT_EQ(GetInfo(imp.fd, &after), 0);
  EXPECT_EQ(after.vram_used, before.vram_used) << "importer allocated VRAM for an import";

  // zero copy both ways: importer's device write is the exporter's data
  ASSERT_EQ(Fill(imp.fd, y.handle, 8192, 4096, 0xfeedbeef), 0);
  EXPECT_EQ(Checksum(exp.fd, x.handle, 8192, 4096), PatternCrc(0xfeedbeef, 4096));
  // and the exporter CPU sees it through its own mapping (with a read barrier)
  ASSERT_EQ(CpuAccess(exp.fd, x.handle, SHAREGPU_CPU_ACCESS_READ), 0);
  EXPECT_EQ(reinterpret_cast<uint32_t*>(x.map)[8192 / 4 + 17], 0xfeedbeefu);
  ASSERT_EQ(CpuAccess(exp.fd, x.handle, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), 0);

  // the importer's CPU mapping (import window) shows the same bytes
  uint8_t* p = y.Map();
  ASSERT_NE(p, nullptr) << strerror(errno);
  EXPECT_EQ(reinterpret_cast<uint32_t*>(p)[8192 / 4], 0xfeedbeefu);
  EXPECT_EQ(memcmp(p, x.map, 8192), 0);
  ASSERT_EQ(BoInfo(imp.fd, y.handle, &yi), 0);
  EXPECT_NE(yi.vram_offset, kNoOffset) << "import not mapped in the import window";
}

TEST_F(SharingTest, ExportCoherentImportNonCoherentZeroCopy) { ZeroCopy(*a_, *b_); }
TEST_F(SharingTest, ExportNonCoherentImportCoherentZeroCopy) { ZeroCopy(*b_, *a_); }

TEST_F(SharingTest, ImportOwnExportAndImportTwiceGiveSameHandles) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, 65536, SHAREGPU_DOMAIN_VRAM), 0);
  ScopedFd fd(ExportFd(a_->fd, x.handle));
  ASSERT_GE(fd.get(), 0);
  uint32_t same = 0, y1 = 0, y2 = 0;
  ASSERT_EQ(ImportFd(a_->fd, fd.get(), &same), 0);
  EXPECT_EQ(same, x.handle);
  ASSERT_EQ(ImportFd(b_->fd, fd.get(), &y1), 0);
  ASSERT_EQ(ImportFd(b_->fd, fd.get(), &y2), 0);
  EXPECT_EQ(y1, y2);
  GemClose(b_->fd, y1);
}

TEST_F(SharingTest, VgemExportSharegpuImport) {
  ScopedFd vgem(OpenVgem());
  ASSERT_GE(vgem.get(), 0) << "no vgem card node (CONFIG_DRM_VGEM)";
  drm_mode_create_dumb cd{};
  cd.width = 256;
  cd.height = 64;
  cd.bpp = 32;
  ASSERT_EQ(Ioctl(vgem.get(), DRM_IOCTL_MODE_CREATE_DUMB, &cd), 0);
  drm_mode_map_dumb md{};
  md.handle = cd.handle;
  ASSERT_EQ(Ioctl(vgem.get(), DRM_IOCTL_MODE_MAP_DUMB, &md), 0);
  auto* m = static_cast<uint8_t*>(
      mmap(nullptr, cd.size, PROT_READ | PROT_WRITE, MAP_SHARED, vgem.get(), md.offset));
  ASSERT_NE(m, MAP_FAILED);
  FillRandom(m, cd.size, 77);
  uint32_t crc = Crc32c(m, cd.size);
  ScopedFd fd(ExportFd(vgem.get(), cd.handle));
  ASSERT_GE(fd.get(), 0);

  for (Dev* d : {a_, b_}) {
    SCOPED_TRACE(d->Describe());
    uint32_t h = 0;
    ASSERT_EQ(ImportFd(d->fd, fd.get(), &h), 0);
    drm_sharegpu_bo_info bi{};
    ASSERT_EQ(BoInfo(d->fd, h, &bi), 0);
    EXPECT_TRUE(bi.flags & SHAREGPU_BO_INFO_F_IMPORTED);
    EXPECT_FALSE(bi.flags & SHAREGPU_BO_INFO_F_P2P);
    EXPECT_EQ(Checksum(d->fd, h, 0, cd.size), crc) << "device does not read the vgem pages";
    // device writes land in the vgem pages
    uint32_t pat = d == a_ ? 0x7e57a000u : 0x7e57b000u;
    ASSERT_EQ(Fill(d->fd, h, 1024, 2048, pat), 0);
    ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ), 0);
    EXPECT_EQ(reinterpret_cast<uint32_t*>(m)[1024 / 4], pat);
    EXPECT_EQ(reinterpret_cast<uint32_t*>(m)[3072 / 4 - 1], pat);
    ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);
    for (size_t i = 1024; i < 3072; i += 4) memcpy(m + i, &pat, 4);  // keep crc in step
    crc = Crc32c(m, cd.size);
    GemClose(d->fd, h);
  }
  munmap(m, cd.size);
  drm_mode_destroy_dumb dd{};
  dd.handle = cd.handle;
  Ioctl(vgem.get(), DRM_IOCTL_MODE_DESTROY_DUMB, &dd);
}

TEST_F(SharingTest, SharegpuExportVgemImport) {
  ScopedFd vgem(OpenVgem());
  ASSERT_GE(vgem.get(), 0) << "no vgem card node (CONFIG_DRM_VGEM)";
  for (Dev* d : {a_, b_}) {
    SCOPED_TRACE(d->Describe());
    constexpr size_t kSize = 128 * 1024;
    ScopedBo x;
    uint32_t crc = 0;
    ASSERT_NO_FATAL_FAILURE(MakeDataBo(*d, x, kSize, 99, &crc));
    x.Unmap();
    ScopedFd fd(ExportFd(d->fd, x.handle));
    ASSERT_GE(fd.get(), 0);
    uint32_t vh = 0;
    ASSERT_EQ(ImportFd(vgem.get(), fd.get(), &vh), 0) << "vgem cannot attach a sharegpu export";

    // a non-p2p importer holds a static (pinned, system pages) attachment
    drm_sharegpu_bo_info xi{};
    ASSERT_EQ(BoInfo(d->fd, x.handle, &xi), 0);
    EXPECT_TRUE(xi.flags & SHAREGPU_BO_INFO_F_PINNED) << std::hex << xi.flags;
    EXPECT_EQ(xi.domain, SHAREGPU_DOMAIN_SYSTEM);

    auto* m = static_cast<uint8_t*>(mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd.get(), 0));
    ASSERT_NE(m, MAP_FAILED);
    ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ), 0);
    EXPECT_EQ(Crc32c(m, kSize), crc) << "data read back through the dma-buf differs";
    ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);

    // the exporter's device writes while vgem is attached reach the shared pages
    ASSERT_EQ(Fill(d->fd, x.handle, 0, 4096, 0xabad1dea), 0);
    ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ), 0);
    EXPECT_EQ(reinterpret_cast<uint32_t*>(m)[100], 0xabad1deau);
    ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);
    munmap(m, kSize);

    GemClose(vgem.get(), vh);
    ASSERT_EQ(BoInfo(d->fd, x.handle, &xi), 0);
    EXPECT_FALSE(xi.flags & SHAREGPU_BO_INFO_F_PINNED) << "vgem detach left the BO pinned";
  }
}

// EXPORT_SYNC_FILE: the dma-buf's write fence is the exporter's job fence.
TEST_F(SharingTest, ExportSyncFileTracksJob) {
  constexpr size_t kSize = 8 << 20;
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ScopedFd fd(ExportFd(a_->fd, x.handle));
  ASSERT_GE(fd.get(), 0);
  std::vector<drm_sharegpu_cmd> cmds(SHAREGPU_MAX_CMDS);
  for (size_t i = 0; i < cmds.size(); i++) {
    cmds[i] = drm_sharegpu_cmd{};
    cmds[i].op = SHAREGPU_CMD_FILL;
    cmds[i].dst_handle = x.handle;
    cmds[i].size = kSize;
    cmds[i].pattern = 0x51000000u + i;
  }
  drm_sharegpu_submit s{};
  ASSERT_EQ(Submit(a_->fd, cmds.data(), cmds.size(), SHAREGPU_SUBMIT_F_OUT_FENCE, &s), 0);
  ScopedFd job_fence(s.out_fence_fd);
  ScopedFd sf(ExportSyncFile(fd.get(), DMA_BUF_SYNC_READ));  // fences a reader waits for
  ASSERT_GE(sf.get(), 0) << strerror(-sf.get());

  sync_file_info info{};
  sync_fence_info fences[4]{};
  info.num_fences = 4;
  info.sync_fence_info = reinterpret_cast<uintptr_t>(fences);
  ASSERT_EQ(Ioctl(sf.get(), SYNC_IOC_FILE_INFO, &info), 0);
  ASSERT_GE(info.num_fences, 1u);
  bool pending = !FenceSignaled(sf.get());
  printf("[ info     ] exported sync_file (%s) %s when taken\n", fences[0].driver_name,
         pending ? "pending" : "signalled");
  // the job's public fence is drm_sched's finished fence: same driver and timeline
  sync_file_info job_info{};
  sync_fence_info job_fences[1]{};
  job_info.num_fences = 1;
  job_info.sync_fence_info = reinterpret_cast<uintptr_t>(job_fences);
  ASSERT_EQ(Ioctl(job_fence.get(), SYNC_IOC_FILE_INFO, &job_info), 0);
  if (strcmp(fences[0].driver_name, job_fences[0].driver_name) != 0 ||
      strcmp(fences[0].obj_name, job_fences[0].obj_name) != 0) {
    // only acceptable when the job had already finished (signalled fences are not exported)
    EXPECT_STREQ(fences[0].driver_name, "stub");
    EXPECT_TRUE(FenceSignaled(job_fence.get())) << "exported fence is not the job's";
  }

  ASSERT_EQ(WaitFenceFd(sf.get(), 30000), 1) << "exported sync_file never signalled";
  EXPECT_TRUE(FenceSignaled(job_fence.get())) << "sync_file signalled before the job fence";
  EXPECT_EQ(WaitBo(a_->fd, x.handle, 0, SHAREGPU_WAIT_BO_F_WRITERS), 0);
  auto* m = static_cast<uint32_t*>(mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd.get(), 0));
  ASSERT_NE(m, MAP_FAILED);
  ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ), 0);
  EXPECT_EQ(m[0], 0x51000000u + SHAREGPU_MAX_CMDS - 1);
  EXPECT_EQ(m[kSize / 4 - 1], 0x51000000u + SHAREGPU_MAX_CMDS - 1);
  ASSERT_EQ(DmaBufSync(fd.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);
  munmap(m, kSize);
}

// IMPORT_SYNC_FILE: a foreign (sw_sync) write fence on the dma-buf holds back the importer's
// job (implicit sync) until it signals.
TEST_F(SharingTest, ImportSyncFileBlocksImporterJobUntilSignalled) {
  constexpr size_t kSize = 64 * 1024;
  ScopedFd tl(SwSyncTimeline());
  ASSERT_GE(tl.get(), 0) << "sw_sync unavailable (CONFIG_SW_SYNC, debugfs): "
                         << strerror(-tl.get());
  ScopedBo x, y;
  uint32_t crc = 0;
  ASSERT_NO_FATAL_FAILURE(MakeDataBo(*a_, x, kSize, 5, &crc));
  ScopedFd fd(ExportFd(a_->fd, x.handle));
  ASSERT_GE(fd.get(), 0);
  uint32_t h = 0;
  ASSERT_EQ(ImportFd(b_->fd, fd.get(), &h), 0);
  y.Adopt(b_->fd, h, kSize);
  ASSERT_EQ(Checksum(b_->fd, y.handle, 0, kSize), crc);

  ScopedFd fence(SwSyncFence(tl.get(), 1));
  ASSERT_GE(fence.get(), 0);
  ASSERT_EQ(ImportSyncFile(fd.get(), fence.get(), DMA_BUF_SYNC_WRITE), 0);
  EXPECT_EQ(WaitBo(b_->fd, y.handle, 0), -ETIME) << "importer does not see the imported fence";
  EXPECT_EQ(WaitBo(a_->fd, x.handle, 0), -ETIME) << "exporter does not see the imported fence";
  ScopedFd exported(ExportSyncFile(fd.get(), DMA_BUF_SYNC_READ));
  ASSERT_GE(exported.get(), 0);
  EXPECT_FALSE(FenceSignaled(exported.get()));

  ScopedFd done(eventfd(0, EFD_CLOEXEC));
  std::atomic<int64_t> result{-1};
  std::thread t([&] {
    result = Checksum(b_->fd, y.handle, 0, kSize);
    uint64_t one = 1;
    ssize_t r = write(done.get(), &one, sizeof(one));
    (void)r;
  });
  // still blocked while the fence is unsignalled (a wrong early completion is caught here)
  EXPECT_EQ(WaitFenceFd(done.get(), 300), 0) << "importer job ran before the fence signalled";
  ASSERT_EQ(SwSyncInc(tl.get(), 1), 0);
  int r = WaitFenceFd(done.get(), 30000);
  if (r != 1) {
    t.detach();
    FAIL() << "importer job still blocked 30 s after the fence signalled";
  }
  t.join();
  EXPECT_EQ(result.load(), crc);
  EXPECT_EQ(WaitFenceFd(exported.get(), 1000), 1);
  EXPECT_EQ(WaitBo(b_->fd, y.handle, 10 * kSec), 0);
}

// Implicit sync between devices: A's long write job, then B's read of the import (no explicit
// fence) must see A's final data. The exported sync_file shows A's job was still pending.
TEST_F(SharingTest, ImplicitSyncImporterJobWaitsForExporterWrite) {
  constexpr size_t kSize = 8 << 20;
  ScopedBo x, y;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0x00000000), 0);
  ScopedFd fd(ExportFd(a_->fd, x.handle));
  ASSERT_GE(fd.get(), 0);
  uint32_t h = 0;
  ASSERT_EQ(ImportFd(b_->fd, fd.get(), &h), 0);
  y.Adopt(b_->fd, h, kSize);
  ASSERT_EQ(Checksum(b_->fd, y.handle, 0, kSize), PatternCrc(0, kSize));

  int proved = 0;
  for (int round = 0; round < 3; round++) {
    std::vector<drm_sharegpu_cmd> cmds(SHAREGPU_MAX_CMDS);
    uint32_t last = 0;
    for (size_t i = 0; i < cmds.size(); i++) {
      cmds[i] = drm_sharegpu_cmd{};
      cmds[i].op = SHAREGPU_CMD_FILL;
      cmds[i].dst_handle = x.handle;
      cmds[i].size = kSize;
      cmds[i].pattern = last = 0xa0000000u + round * 0x100 + i;
    }
    drm_sharegpu_submit s{};
    ASSERT_EQ(Submit(a_->fd, cmds.data(), cmds.size(), SHAREGPU_SUBMIT_F_OUT_FENCE, &s), 0);
    ScopedFd a_fence(s.out_fence_fd);
    bool pending = !FenceSignaled(a_fence.get());
    int64_t got = Checksum(b_->fd, y.handle, 0, kSize);  // implicit: waits for A's fence
    EXPECT_TRUE(FenceSignaled(a_fence.get())) << "B's job completed before A's write job";
    ASSERT_EQ(got, PatternCrc(last, kSize)) << "B read data older than A's final write (round "
                                           << round << ")";
    if (pending) proved++;
  }
  printf("[ info     ] A's job was still pending at B's submit in %d/3 rounds\n", proved);
}

// Explicit cross-device sync: A's out-fence as B's in-fence, implicit sync disabled.
TEST_F(SharingTest, ExplicitFenceAcrossDevices) {
  constexpr size_t kSize = 8 << 20;
  ScopedBo x, y;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ScopedFd fd(ExportFd(a_->fd, x.handle));
  ASSERT_GE(fd.get(), 0);
  uint32_t h = 0;
  ASSERT_EQ(ImportFd(b_->fd, fd.get(), &h), 0);
  y.Adopt(b_->fd, h, kSize);
  std::vector<drm_sharegpu_cmd> cmds(32);
  for (size_t i = 0; i < cmds.size(); i++) {
    cmds[i] = drm_sharegpu_cmd{};
    cmds[i].op = SHAREGPU_CMD_FILL;
    cmds[i].dst_handle = x.handle;
    cmds[i].size = kSize;
    cmds[i].pattern = 0xe0000000u + i;
  }
  drm_sharegpu_submit s{};
  ASSERT_EQ(Submit(a_->fd, cmds.data(), cmds.size(), SHAREGPU_SUBMIT_F_OUT_FENCE, &s), 0);
  ScopedFd a_fence(s.out_fence_fd);
  drm_sharegpu_cmd c{};
  c.op = SHAREGPU_CMD_CHECKSUM;
  c.src_handle = y.handle;
  c.size = kSize;
  ASSERT_EQ(Submit(b_->fd, &c, 1,
                   SHAREGPU_SUBMIT_F_WAIT | SHAREGPU_SUBMIT_F_IN_FENCE |
                       SHAREGPU_SUBMIT_F_NO_IMPLICIT,
                   nullptr, a_fence.get()),
            0);
  EXPECT_EQ(static_cast<uint32_t>(c.result), PatternCrc(0xe0000000u + 31, kSize));
}

// A udmabuf (guest memfd pages) imported by each device: its jobs read the pages and write
// them, and the CPU sees the write in the memfd, next to bytes the job did not touch.
TEST_F(SharingTest, UdmabufImportIsReadAndWrittenByTheDevice) {
  constexpr size_t kSize = 64 * 1024;
  ScopedFd ufd(open("/dev/udmabuf", O_RDWR | O_CLOEXEC));
  ASSERT_GE(ufd.get(), 0) << "/dev/udmabuf: " << strerror(errno) << " (CONFIG_UDMABUF)";
  for (Dev* d : {a_, b_}) {
    SCOPED_TRACE(d->Describe());
    ScopedFd mfd(memfd_create("sgputest", MFD_ALLOW_SEALING | MFD_CLOEXEC));
    ASSERT_GE(mfd.get(), 0);
    ASSERT_EQ(ftruncate(mfd.get(), kSize), 0);
    ASSERT_EQ(fcntl(mfd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, mfd.get(), 0);
    ASSERT_NE(p, MAP_FAILED);
    auto* m = static_cast<uint8_t*>(p);
    FillRandom(m, kSize, 77);
    const uint8_t untouched = m[4096];
    udmabuf_create uc{};
    uc.memfd = mfd.get();
    uc.size = kSize;
    uc.flags = UDMABUF_FLAGS_CLOEXEC;
    ScopedFd buf(ioctl(ufd.get(), UDMABUF_CREATE, &uc));
    ASSERT_GE(buf.get(), 0) << "UDMABUF_CREATE: " << strerror(errno);
    uint32_t h = 0;
    ASSERT_EQ(ImportFd(d->fd, buf.get(), &h), 0);
    ScopedBo imp;
    imp.Adopt(d->fd, h, kSize);
    EXPECT_EQ(Checksum(d->fd, h, 0, kSize), Crc32c(m, kSize)) << "device read the pages";
    ASSERT_EQ(Fill(d->fd, h, 0, 4096, 0x12345678), 0);
    ASSERT_EQ(DmaBufSync(buf.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ), 0);
    uint32_t first;
    memcpy(&first, m, sizeof(first));
    EXPECT_EQ(first, 0x12345678u) << "the device's write is not in the memfd";
    EXPECT_EQ(m[4096], untouched) << "the device wrote past its range";
    EXPECT_EQ(DmaBufSync(buf.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);
    munmap(p, kSize);
  }
}

// fdinfo (drm_show_fdinfo): the standard keys and the driver's memory and limit figures.
TEST_F(SharingTest, FdinfoShowsTheFilesMemoryAndObjects) {
  ScopedFd f(Reopen(*a_));
  ASSERT_GE(f.get(), 0);
  ScopedBo v, s;
  ASSERT_EQ(v.Create(f.get(), 1 << 20, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(s.Create(f.get(), 64 << 10, SHAREGPU_DOMAIN_SYSTEM), 0);
  ASSERT_EQ(Fill(f.get(), v.handle, 0, 4096, 1), 0);  // placed
  ASSERT_EQ(Fill(f.get(), s.handle, 0, 4096, 1), 0);
  const std::string info = ReadFile("/proc/self/fdinfo/" + std::to_string(f.get()));
  auto value = [&](const std::string& key) -> std::string {
    size_t pos = info.find("\n" + key + ":");
    if (pos == std::string::npos) return "";
    pos = info.find_first_not_of(" \t", pos + key.size() + 2);
    return info.substr(pos, info.find('\n', pos) - pos);
  };
  EXPECT_EQ(value("drm-driver"), "sharegpu") << info;
  EXPECT_FALSE(value("drm-client-id").empty()) << info;
  EXPECT_EQ(value("drm-pdev"), a_->pci) << info;
  EXPECT_GE(atoll(value("drm-memory-vram").c_str()), 1024) << info;
  EXPECT_GE(atoll(value("drm-memory-system").c_str()), 64) << info;
  EXPECT_EQ(value("drm-sharegpu-objects"), "2") << info;
  EXPECT_EQ(value("drm-sharegpu-jobs-active"), "0") << info;
  EXPECT_EQ(value("drm-sharegpu-jobs-kept"), "0") << info;
}

}  // namespace
