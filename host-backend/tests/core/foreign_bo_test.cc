// Foreign buffers (sgb_bo_create_foreign): a buffer over pages another process owns, as the
// QEMU device makes one per cross-VM remote import (docs/broker.md). The "owner" here is the
// test itself: it holds the memfd and its own mapping and watches the pages change under jobs.
#include "sharegpu/backend-testing.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../job_recorder.h"
#include "core_test_util.h"
#include "mem/memfd.h"

namespace sharegpu::testing {
namespace {

constexpr uint64_t kPage = 4096;

// CRC-32C bit by bit, independent of the backend's (table or SSE4.2) implementation.
uint32_t ReferenceCrc32c(const uint8_t* p, size_t n) {
  uint32_t crc = ~0u;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
  }
  return ~crc;
}
uint32_t ReferenceCrc32c(const std::vector<uint8_t>& v) {
  return ReferenceCrc32c(v.data(), v.size());
}

TEST(ForeignBoReference, Crc32cMatchesTheStandardCheckValue) {
  const char* check = "123456789";
  EXPECT_EQ(ReferenceCrc32c(reinterpret_cast<const uint8_t*>(check), 9), 0xE3069283u);
}

// The owner's file: a sealed memfd with random bytes, mapped read-write by the test.
std::unique_ptr<Memfd> OwnerFile(uint64_t size, uint32_t seed) {
  auto m = Memfd::Create("foreign-owner", size);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  const std::vector<uint8_t> bytes = RandomBytes(size, seed);
  std::memcpy((*m)->data(), bytes.data(), size);
  return std::move(m).value();
}

std::vector<uint8_t> Pages(const Memfd& m, uint64_t off, uint64_t len) {
  return std::vector<uint8_t>(m.data() + off, m.data() + off + len);
}

// What a read-only grant of the broker hands out: a new O_RDONLY open of the same file.
OwnedFd ReadOnlyOpen(const Memfd& m) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", m.fd());
  OwnedFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd.valid()) << "open " << path << ": " << std::strerror(errno);
  return fd;
}

class ForeignBoTest : public ::testing::Test {
 protected:
  void TearDown() override { CloseDevice(); }

  // coherent 0: the strict device-cache model (sgb_device_config.coherent).
  void OpenDevice(int coherent = 1, uint64_t max_hostmem = 0) {
    ASSERT_EQ(sgb_backend_new(&backend_), 0);
    sgb_device_config cfg{};
    cfg.name = "foreign";
    cfg.vram_size = 2 * kMiB;
    cfg.coherent = coherent;
    cfg.max_hostmem = max_hostmem;
    ASSERT_EQ(sgb_device_create(backend_, &cfg, &dev_), 0);
  }
  void CloseDevice() {
    if (dev_) sgb_device_destroy(dev_);
    if (backend_) sgb_backend_unref(backend_);
    dev_ = nullptr;
    backend_ = nullptr;
  }

  uint32_t Foreign(int fd, uint64_t size, uint32_t flags) {
    uint32_t h = 0;
    EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, size, flags, &h), 0);
    return h;
  }
  uint32_t Local(const std::vector<uint8_t>& bytes) {
    uint32_t h = 0;
    EXPECT_EQ(sgb_bo_create(dev_, bytes.size(), SGB_PLACEMENT_SYSTEM, 0, &h), 0);
    EXPECT_EQ(sgb_bo_cpu_write(dev_, h, 0, bytes.data(), bytes.size()), 0);
    return h;
  }
  uint32_t Checksum(uint32_t h, uint64_t off, uint64_t len) {
    uint32_t crc = 0;
    EXPECT_EQ(sgb_job_checksum(dev_, h, off, len, &crc, nullptr), 0);
    return crc;
  }
  std::vector<uint8_t> CpuRead(uint32_t h, uint64_t off, uint64_t len) {
    std::vector<uint8_t> out(len);
    EXPECT_EQ(sgb_bo_cpu_read(dev_, h, off, out.data(), len), 0);
    return out;
  }
  sgb_bo_debug_info Info(uint32_t h) {
    sgb_bo_debug_info info{};
    EXPECT_EQ(sgb_bo_debug_info_get(dev_, h, &info), 0);
    return info;
  }

  sgb_backend* backend_ = nullptr;
  sgb_device* dev_ = nullptr;
};

// Jobs and CPU access reach the owner's pages themselves: CHECKSUM reads what the owner
// wrote, FILL, COPY and cpu_write land where the owner sees them, COPY reads them back out.
TEST_F(ForeignBoTest, JobsTouchTheOwnersPagesZeroCopy) {
  OpenDevice();
  auto owner = OwnerFile(4 * kPage, 1);
  ASSERT_NE(owner, nullptr);
  const std::vector<uint8_t> original = Pages(*owner, 0, 4 * kPage);
  const uint32_t f = Foreign(owner->fd(), 4 * kPage, SGB_FOREIGN_WRITABLE);
  ASSERT_NE(f, 0u);
  EXPECT_EQ(Info(f).foreign, 1u);

  EXPECT_EQ(Checksum(f, 0, 4 * kPage), ReferenceCrc32c(original));
  EXPECT_EQ(Checksum(f, kPage + 8, 100), ReferenceCrc32c(original.data() + kPage + 8, 100));
  EXPECT_EQ(CpuRead(f, 0, 4 * kPage), original);

  // FILL page 1: the owner sees it, the other pages are untouched.
  ASSERT_EQ(sgb_job_fill(dev_, f, kPage, kPage, 0xC0FFEE11u, nullptr), 0);
  EXPECT_EQ(Pages(*owner, kPage, kPage), PatternBytes(kPage, 0xC0FFEE11u));
  EXPECT_EQ(Pages(*owner, 0, kPage),
            std::vector<uint8_t>(original.begin(), original.begin() + kPage));
  EXPECT_EQ(Pages(*owner, 2 * kPage, 2 * kPage),
            std::vector<uint8_t>(original.begin() + 2 * kPage, original.end()));

  // COPY local -> foreign page 2.
  const std::vector<uint8_t> local_bytes = RandomBytes(kPage, 2);
  const uint32_t local = Local(local_bytes);
  ASSERT_EQ(sgb_job_copy(dev_, local, 0, f, 2 * kPage, kPage, nullptr), 0);
  EXPECT_EQ(Pages(*owner, 2 * kPage, kPage), local_bytes);

  // The owner writes page 3; COPY foreign -> local brings exactly that back.
  const std::vector<uint8_t> owner_bytes = RandomBytes(kPage, 3);
  std::memcpy(owner->data() + 3 * kPage, owner_bytes.data(), kPage);
  ASSERT_EQ(sgb_job_copy(dev_, f, 3 * kPage, local, 0, kPage, nullptr), 0);
  EXPECT_EQ(CpuRead(local, 0, kPage), owner_bytes);
  EXPECT_EQ(Checksum(f, 3 * kPage, kPage), ReferenceCrc32c(owner_bytes));

  // CPU writes land in the same pages.
  const std::vector<uint8_t> cpu_bytes = RandomBytes(300, 4);
  ASSERT_EQ(sgb_bo_cpu_write(dev_, f, 10, cpu_bytes.data(), cpu_bytes.size()), 0);
  EXPECT_EQ(Pages(*owner, 10, cpu_bytes.size()), cpu_bytes);

  // Its storage is the backend's own duplicate of the owner's file, at offset 0.
  int fd = -1;
  uint64_t off = 1, size = 0;
  void* host = nullptr;
  ASSERT_EQ(sgb_bo_storage(dev_, f, &fd, &off, &host, &size), 0);
  EXPECT_NE(fd, owner->fd());
  EXPECT_EQ(off, 0u);
  EXPECT_EQ(size, 4 * kPage);
  EXPECT_EQ(std::memcmp(host, owner->data(), 4 * kPage), 0);
  EXPECT_EQ(Info(local).foreign, 0u);
}

// A buffer over fewer pages than the file: only those are the buffer's.
TEST_F(ForeignBoTest, CoversTheFirstSizeBytesOfALargerFile) {
  OpenDevice();
  auto owner = OwnerFile(3 * kPage, 5);
  ASSERT_NE(owner, nullptr);
  const uint32_t f = Foreign(owner->fd(), kPage, SGB_FOREIGN_WRITABLE);
  EXPECT_EQ(Checksum(f, 0, kPage), ReferenceCrc32c(owner->data(), kPage));
  uint32_t crc = 0;
  EXPECT_EQ(sgb_job_checksum(dev_, f, 0, 2 * kPage, &crc, nullptr), -ERANGE);
  sgb_bo_state state{};
  ASSERT_EQ(sgb_bo_state_get(dev_, f, &state), 0);
  EXPECT_EQ(state.size, kPage);
}

// Read-only: every write (FILL, COPY into it, cpu_write, a submitted job) is -EACCES before
// anything is queued, and the bytes stay; reads work. On a strict device too, where the
// barriers would write back dirty lines through the PROT_READ mapping if there were any.
class ForeignBoReadOnlyTest : public ForeignBoTest, public ::testing::WithParamInterface<int> {};

TEST_P(ForeignBoReadOnlyTest, WritesRefusedReadsWork) {
  OpenDevice(GetParam());
  auto owner = OwnerFile(2 * kPage, 6);
  ASSERT_NE(owner, nullptr);
  const std::vector<uint8_t> original = Pages(*owner, 0, 2 * kPage);
  OwnedFd ro = ReadOnlyOpen(*owner);
  ASSERT_TRUE(ro.valid());
  uint32_t f = 0;
  // A writable mapping over a read-only grant is the descriptor's to refuse.
  EXPECT_EQ(sgb_bo_create_foreign(dev_, ro.get(), 2 * kPage, SGB_FOREIGN_WRITABLE, &f), -EACCES);
  ASSERT_EQ(sgb_bo_create_foreign(dev_, ro.get(), 2 * kPage, 0, &f), 0);
  ro.Reset();  // borrowed: the backend has its own duplicate

  const std::vector<uint8_t> local_bytes = RandomBytes(kPage, 7);
  const uint32_t local = Local(local_bytes);
  EXPECT_EQ(sgb_job_fill(dev_, f, 0, kPage, 0x11111111u, nullptr), -EACCES);
  EXPECT_EQ(sgb_job_copy(dev_, local, 0, f, 0, kPage, nullptr), -EACCES);
  EXPECT_EQ(sgb_job_copy(dev_, f, 0, f, kPage, kPage, nullptr), -EACCES);
  EXPECT_EQ(sgb_bo_cpu_write(dev_, f, 0, local_bytes.data(), 16), -EACCES);
  JobRecorder log;
  uint64_t fence = 0;
  sgb_job fill{SGB_JOB_FILL, f, 0, 0x22222222u, 0, 0, kPage};
  EXPECT_EQ(sgb_job_submit(dev_, &fill, JobRecorder::CDone, &log, &fence), -EACCES);
  EXPECT_EQ(fence, 0u);

  // Reads: CHECKSUM, COPY out of it, cpu_read; then every barrier, in every direction.
  EXPECT_EQ(Checksum(f, 0, 2 * kPage), ReferenceCrc32c(original));
  ASSERT_EQ(sgb_job_copy(dev_, f, kPage, local, 0, kPage, nullptr), 0);
  ASSERT_EQ(sgb_bo_begin_cpu_access(dev_, local, SGB_DIR_FROM_DEVICE), 0);  // strict: flush
  EXPECT_EQ(CpuRead(local, 0, kPage),
            std::vector<uint8_t>(original.begin() + kPage, original.end()));
  EXPECT_EQ(CpuRead(f, 0, 2 * kPage), original);
  for (uint32_t dir : {SGB_DIR_BIDIRECTIONAL, SGB_DIR_TO_DEVICE, SGB_DIR_FROM_DEVICE}) {
    EXPECT_EQ(sgb_bo_begin_cpu_access(dev_, f, dir), 0);
    EXPECT_EQ(sgb_bo_end_cpu_access(dev_, f, dir), 0);
  }
  EXPECT_EQ(sgb_bo_cache_flush(dev_, f, 0, 2 * kPage), 0);
  EXPECT_EQ(sgb_bo_cache_invalidate(dev_, f, 0, 2 * kPage), 0);
  EXPECT_EQ(Info(f).cache_dirty_lines, 0u);

  // Nothing refused was queued: no done ran.
  EXPECT_TRUE(log.Get().empty());
  EXPECT_EQ(Pages(*owner, 0, 2 * kPage), original);
  ASSERT_EQ(sgb_bo_destroy(dev_, f), 0);
  EXPECT_EQ(Pages(*owner, 0, 2 * kPage), original);
}

INSTANTIATE_TEST_SUITE_P(CacheModes, ForeignBoReadOnlyTest, ::testing::Values(1, 0),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return std::string(p.param ? "Coherent" : "Strict");
                         });

// The owner's pages never move: every move, the eviction and own_storage are -EBUSY, export
// -EPERM; placement SYSTEM, nothing charged to max_hostmem (the owner pays for its memory).
TEST_F(ForeignBoTest, NeverMovesNorExports) {
  OpenDevice(1, kPage);  // max_hostmem of one page: a 4-page foreign buffer still fits
  auto owner = OwnerFile(4 * kPage, 8);
  ASSERT_NE(owner, nullptr);
  const std::vector<uint8_t> original = Pages(*owner, 0, 4 * kPage);
  const uint32_t f = Foreign(owner->fd(), 4 * kPage, SGB_FOREIGN_WRITABLE);
  ASSERT_NE(f, 0u);
  sgb_device_stats stats{};
  ASSERT_EQ(sgb_device_stats_get(dev_, &stats), 0);
  EXPECT_EQ(stats.hostmem_used, 0u);
  EXPECT_EQ(stats.bo_count, 1u);

  EXPECT_EQ(sgb_bo_move(dev_, f, SGB_PLACEMENT_DEVICE, 0), -EBUSY);
  EXPECT_EQ(sgb_bo_move(dev_, f, SGB_PLACEMENT_SYSTEM, 0), -EBUSY);
  EXPECT_EQ(sgb_bo_evict(dev_, f), -EBUSY);
  EXPECT_EQ(sgb_bo_own_storage(dev_, f, SGB_OWN_KEEP), -EBUSY);
  EXPECT_EQ(sgb_bo_own_storage(dev_, f, SGB_OWN_KEEP | SGB_OWN_RELOCATE), -EBUSY);
  EXPECT_EQ(sgb_bo_own_storage(dev_, f, 0), -EBUSY);
  sgb_uuid uuid{};
  int fd = -1;
  EXPECT_EQ(sgb_bo_export(dev_, f, &uuid, &fd), -EPERM);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(sgb_bo_export(dev_, f, &uuid, nullptr), -EPERM);

  sgb_bo_state state{};
  ASSERT_EQ(sgb_bo_state_get(dev_, f, &state), 0);
  EXPECT_EQ(state.placement, uint32_t{SGB_PLACEMENT_SYSTEM});
  EXPECT_EQ(state.vram_offset, ~uint64_t{0});
  EXPECT_EQ(state.generation, 1u);
  EXPECT_EQ(state.exported, 0u);
  EXPECT_EQ(state.imported, 0u);
  EXPECT_EQ(state.size, 4 * kPage);
  ASSERT_EQ(sgb_device_stats_get(dev_, &stats), 0);
  EXPECT_EQ(stats.moves, 0u);
  EXPECT_EQ(stats.hostmem_used, 0u);
  EXPECT_EQ(Pages(*owner, 0, 4 * kPage), original);
  EXPECT_EQ(Checksum(f, 0, 4 * kPage), ReferenceCrc32c(original));
}

// Destroying the handle with a job still in flight (its completion held): the job keeps the
// mapping and the descriptor, completes with the right result once released, and then both
// go. No descriptor is left behind by a plain create/destroy or by the whole test.
TEST_F(ForeignBoTest, DestroyWithJobInFlightKeepsPagesUntilItCompletes) {
  const size_t at_start = sgb_process_open_fds();
  {
    auto owner = OwnerFile(2 * kPage, 9);
    ASSERT_NE(owner, nullptr);
    OpenDevice();
    const std::vector<uint8_t> local_bytes = RandomBytes(kPage, 10);
    const uint32_t local = Local(local_bytes);
    const size_t base = sgb_process_open_fds();

    uint32_t f = Foreign(owner->fd(), 2 * kPage, SGB_FOREIGN_WRITABLE);
    EXPECT_EQ(sgb_process_open_fds(), base + 1);  // the backend's duplicate
    ASSERT_EQ(sgb_bo_destroy(dev_, f), 0);
    EXPECT_EQ(sgb_process_open_fds(), base);

    f = Foreign(owner->fd(), 2 * kPage, SGB_FOREIGN_WRITABLE);
    ASSERT_EQ(sgb_engine_hold(dev_, f, 0), 0);
    JobRecorder log;
    sgb_job copy{SGB_JOB_COPY, f, local, 0, 0, 0, kPage};
    sgb_job sum{SGB_JOB_CHECKSUM, f, 0, 0, 0, 0, 2 * kPage};
    ASSERT_EQ(sgb_job_submit(dev_, &copy, JobRecorder::CDone, &log, nullptr), 0);
    ASSERT_EQ(sgb_job_submit(dev_, &sum, JobRecorder::CDone, &log, nullptr), 0);
    ASSERT_EQ(sgb_bo_destroy(dev_, f), 0);
    sgb_bo_state state{};
    EXPECT_EQ(sgb_bo_state_get(dev_, f, &state), -ENOENT);
    EXPECT_FALSE(log.WaitFor(1, std::chrono::milliseconds(100))) << "completed while held";
    EXPECT_EQ(sgb_process_open_fds(), base + 1) << "the jobs in flight lost their pages";

    ASSERT_EQ(sgb_engine_release(dev_), 0);
    ASSERT_TRUE(log.WaitFor(2));
    const std::vector<JobRecorder::Completion> got = log.Get();
    EXPECT_EQ(got[0].status, 0);
    EXPECT_EQ(got[1].status, 0);
    std::vector<uint8_t> want = local_bytes;
    want.resize(2 * kPage);
    std::memcpy(want.data() + kPage, owner->data() + kPage, kPage);
    EXPECT_EQ(Pages(*owner, 0, kPage), local_bytes);
    EXPECT_EQ(got[1].result, ReferenceCrc32c(want));
    // A job's buffers are let go before its done runs: the last reference went with them.
    EXPECT_EQ(sgb_process_open_fds(), base);
    CloseDevice();
  }
  EXPECT_EQ(sgb_process_open_fds(), at_start);
}

// On a non-coherent device the device cache model applies to foreign pages as to local ones:
// a FILL stays in the cache until CACHE_FLUSH, and the owner's later writes are seen by jobs
// only after CACHE_INVALIDATE.
TEST_F(ForeignBoTest, StrictDeviceCachesForeignPagesUntilBarriers) {
  OpenDevice(0);
  auto owner = OwnerFile(2 * kPage, 11);
  ASSERT_NE(owner, nullptr);
  const std::vector<uint8_t> original = Pages(*owner, 0, 2 * kPage);
  const uint32_t f = Foreign(owner->fd(), 2 * kPage, SGB_FOREIGN_WRITABLE);

  ASSERT_EQ(sgb_job_fill(dev_, f, 0, 2 * kPage, 0x5A5AA5A5u, nullptr), 0);
  EXPECT_EQ(Pages(*owner, 0, 2 * kPage), original) << "device write visible without a flush";
  EXPECT_EQ(Info(f).cache_dirty_lines, 2u);
  EXPECT_EQ(Checksum(f, 0, 2 * kPage), ReferenceCrc32c(PatternBytes(2 * kPage, 0x5A5AA5A5u)));
  ASSERT_EQ(sgb_bo_cache_flush(dev_, f, 0, kPage), 0);
  EXPECT_EQ(Pages(*owner, 0, kPage), PatternBytes(kPage, 0x5A5AA5A5u));
  EXPECT_EQ(Pages(*owner, kPage, kPage),
            std::vector<uint8_t>(original.begin() + kPage, original.end()));
  ASSERT_EQ(sgb_bo_cache_flush(dev_, f, kPage, kPage), 0);
  EXPECT_EQ(Pages(*owner, 0, 2 * kPage), PatternBytes(2 * kPage, 0x5A5AA5A5u));

  // The owner writes page 0; the device keeps its (clean) cached line until invalidated.
  const std::vector<uint8_t> owner_bytes = RandomBytes(kPage, 12);
  std::memcpy(owner->data(), owner_bytes.data(), kPage);
  EXPECT_EQ(Checksum(f, 0, kPage), ReferenceCrc32c(PatternBytes(kPage, 0x5A5AA5A5u)));
  ASSERT_EQ(sgb_bo_cache_invalidate(dev_, f, 0, kPage), 0);
  EXPECT_EQ(Checksum(f, 0, kPage), ReferenceCrc32c(owner_bytes));
  EXPECT_EQ(Pages(*owner, 0, kPage), owner_bytes);
}

// Bad sizes, flags and descriptors are refused with the documented errors, and a refusal
// leaves no handle and no descriptor behind.
TEST_F(ForeignBoTest, BadInputRefused) {
  OpenDevice();
  auto owner = OwnerFile(2 * kPage, 13);
  ASSERT_NE(owner, nullptr);
  const int fd = owner->fd();
  const size_t fds = sgb_process_open_fds();
  uint32_t h = 0;
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, 0, 0, &h), -EINVAL);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, kPage + 1, 0, &h), -EINVAL);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, kPage - 1, 0, &h), -EINVAL);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, 3 * kPage, 0, &h), -EINVAL);  // past the file
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, SGB_MAX_BO_SIZE + kPage, 0, &h), -E2BIG);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, kPage, 2, &h), -EINVAL);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, kPage, 0x80000000u, &h), -EINVAL);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, -1, kPage, 0, &h), -EINVAL);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, kPage, 0, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_create_foreign(nullptr, fd, kPage, 0, &h), -EINVAL);

  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, pipe_fds[0], kPage, 0, &h), -EBADF);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  EXPECT_EQ(sgb_bo_create_foreign(dev_, pipe_fds[0], kPage, 0, &h), -EBADF);  // not open
  OwnedFd dir(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir.valid());
  EXPECT_EQ(sgb_bo_create_foreign(dev_, dir.get(), kPage, 0, &h), -EBADF);
  dir.Reset();
  // An O_PATH descriptor of the right file: no pages to map through it.
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  OwnedFd opath(::open(path, O_PATH | O_CLOEXEC));
  ASSERT_TRUE(opath.valid());
  EXPECT_EQ(sgb_bo_create_foreign(dev_, opath.get(), kPage, 0, &h), -EBADF);
  opath.Reset();

  EXPECT_EQ(h, 0u);
  sgb_device_stats stats{};
  ASSERT_EQ(sgb_device_stats_get(dev_, &stats), 0);
  EXPECT_EQ(stats.bo_count, 0u);
  EXPECT_EQ(sgb_process_open_fds(), fds);
  // The exact size of the file is fine.
  EXPECT_EQ(sgb_bo_create_foreign(dev_, fd, 2 * kPage, 0, &h), 0);
}

}  // namespace
}  // namespace sharegpu::testing
