// The C API: every entry point survives NULL and bad values, the shared backend is shared.
#include "sharegpu/backend-testing.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core_test_util.h"

namespace sharegpu::testing {
namespace {

constexpr uint64_t kPage = 4096;

sgb_device* NewDevice(sgb_backend* backend, const char* name, int coherent = 1,
                       uint64_t max_hostmem = 0) {
  sgb_device_config cfg{name, 2 * kMiB, coherent, max_hostmem, nullptr};
  sgb_device* dev = nullptr;
  EXPECT_EQ(sgb_device_create(backend, &cfg, &dev), 0);
  return dev;
}

TEST(CApiTest, NullAndBadArgumentsReturnErrors) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device* dev = NewDevice(backend, "capi");
  ASSERT_NE(dev, nullptr);
  uint32_t h = 0;
  ASSERT_EQ(sgb_bo_create(dev, 8192, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  std::vector<uint8_t> bytes = RandomBytes(8192, 1);
  ASSERT_EQ(sgb_bo_cpu_write(dev, h, 0, bytes.data(), bytes.size()), 0);

  uint8_t buf[16] = {};
  uint32_t out_handle = 0, crc = 0;
  uint64_t fence = 0;
  sgb_uuid uuid{};
  sgb_bo_state info{};
  sgb_device_stats stats{};
  sgb_event ev{};
  size_t count = 0;
  const uint32_t bad = 0xdead;
  const uint64_t huge = ~uint64_t{0};

  // Backend.
  EXPECT_EQ(sgb_backend_new(nullptr), -EINVAL);
  EXPECT_EQ(sgb_backend_get_shared(nullptr), -EINVAL);
  EXPECT_EQ(sgb_backend_ref(nullptr), nullptr);
  sgb_backend_unref(nullptr);
  // Device creation.
  sgb_device* d2 = nullptr;
  sgb_device_config cfg{"x", 2 * kMiB, 1, 0, nullptr};
  EXPECT_EQ(sgb_device_create(nullptr, &cfg, &d2), -EINVAL);
  EXPECT_EQ(sgb_device_create(backend, nullptr, &d2), -EINVAL);
  EXPECT_EQ(sgb_device_create(backend, &cfg, nullptr), -EINVAL);
  for (uint64_t size : {uint64_t{0}, uint64_t{4096}, kMiB + 1, uint64_t{1} << 40, huge}) {
    sgb_device_config bad_cfg{"x", size, 1, 0, nullptr};
    EXPECT_EQ(sgb_device_create(backend, &bad_cfg, &d2), -EINVAL) << size;
  }
  EXPECT_EQ(d2, nullptr);
  sgb_device_config unnamed{nullptr, 2 * kMiB, 0, 0, nullptr};
  ASSERT_EQ(sgb_device_create(backend, &unnamed, &d2), 0);
  EXPECT_STRNE(sgb_device_name(d2), "");
  sgb_device_destroy(d2);
  sgb_device_destroy(nullptr);
  // Device accessors with NULL.
  EXPECT_EQ(sgb_device_reset(nullptr), -EINVAL);
  EXPECT_EQ(sgb_device_vram_fd(nullptr), -EINVAL);
  EXPECT_EQ(sgb_device_vram_size(nullptr), 0u);
  EXPECT_EQ(sgb_device_vram_ptr(nullptr), nullptr);
  EXPECT_STREQ(sgb_device_name(nullptr), "");
  EXPECT_EQ(sgb_device_stats_get(nullptr, &stats), -EINVAL);
  EXPECT_EQ(sgb_device_stats_get(dev, nullptr), -EINVAL);
  sgb_device_set_event_notify(nullptr, nullptr, nullptr);
  EXPECT_EQ(sgb_device_pop_event(nullptr, &ev), -EINVAL);
  EXPECT_EQ(sgb_device_pop_event(dev, nullptr), -EINVAL);
  EXPECT_EQ(sgb_device_pop_event(dev, &ev), -EAGAIN);
  EXPECT_EQ(sgb_device_list_bos(nullptr, nullptr, 0, &count), -EINVAL);
  EXPECT_EQ(sgb_device_list_bos(dev, nullptr, 4, &count), -EINVAL);
  EXPECT_EQ(sgb_device_list_bos(dev, nullptr, 0, nullptr), 0);
  EXPECT_EQ(sgb_device_list_bos(dev, nullptr, 0, &count), 0);
  EXPECT_EQ(count, 1u);
  // Buffer objects.
  EXPECT_EQ(sgb_bo_create(nullptr, 4096, SGB_PLACEMENT_SYSTEM, 0, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_create(dev, 4096, SGB_PLACEMENT_SYSTEM, 0, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_create(dev, 4096, 2, 0, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_create(dev, 4096, ~0u, 0, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_create(dev, 0, SGB_PLACEMENT_SYSTEM, 0, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_create(dev, SGB_MAX_BO_SIZE + 1, SGB_PLACEMENT_SYSTEM, 0, &out_handle), -E2BIG);
  EXPECT_EQ(sgb_bo_create(dev, huge, SGB_PLACEMENT_DEVICE, 0, &out_handle), -E2BIG);
  EXPECT_EQ(sgb_bo_destroy(nullptr, h), -EINVAL);
  EXPECT_EQ(sgb_bo_destroy(dev, bad), -ENOENT);
  EXPECT_EQ(sgb_bo_state_get(nullptr, h, &info), -EINVAL);
  EXPECT_EQ(sgb_bo_state_get(dev, h, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_state_get(dev, bad, &info), -ENOENT);
  sgb_bo_debug_info debug_info{};
  EXPECT_EQ(sgb_bo_debug_info_get(nullptr, h, &debug_info), -EINVAL);
  EXPECT_EQ(sgb_bo_debug_info_get(dev, h, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_debug_info_get(dev, bad, &debug_info), -ENOENT);
  EXPECT_EQ(sgb_bo_move(nullptr, h, SGB_PLACEMENT_SYSTEM, 0), -EINVAL);
  EXPECT_EQ(sgb_bo_move(dev, h, 7, 0), -EINVAL);
  EXPECT_EQ(sgb_bo_move(dev, h, SGB_PLACEMENT_SYSTEM, 1u << 7), -EINVAL);  // unknown flag
  EXPECT_EQ(sgb_bo_create(dev, 4096, SGB_PLACEMENT_SYSTEM, 1u << 7, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_move(dev, bad, SGB_PLACEMENT_SYSTEM, 0), -ENOENT);
  EXPECT_EQ(sgb_bo_evict(nullptr, h), -EINVAL);
  EXPECT_EQ(sgb_bo_evict(dev, bad), -ENOENT);
  EXPECT_EQ(sgb_bo_pin(nullptr, h), -EINVAL);
  EXPECT_EQ(sgb_bo_pin(dev, bad), -ENOENT);
  EXPECT_EQ(sgb_bo_unpin(nullptr, h), -EINVAL);
  EXPECT_EQ(sgb_bo_unpin(dev, bad), -ENOENT);
  EXPECT_EQ(sgb_bo_unpin(dev, h), -EINVAL);  // not pinned
  EXPECT_EQ(sgb_bo_cpu_read(nullptr, h, 0, buf, 1), -EINVAL);
  EXPECT_EQ(sgb_bo_cpu_read(dev, h, 0, nullptr, 1), -EINVAL);
  EXPECT_EQ(sgb_bo_cpu_read(dev, bad, 0, buf, 1), -ENOENT);
  EXPECT_EQ(sgb_bo_cpu_read(dev, h, huge, buf, 2), -ERANGE);
  EXPECT_EQ(sgb_bo_cpu_read(dev, h, 8190, buf, 4), -ERANGE);
  EXPECT_EQ(sgb_bo_cpu_write(nullptr, h, 0, buf, 1), -EINVAL);
  EXPECT_EQ(sgb_bo_cpu_write(dev, h, 0, nullptr, 1), -EINVAL);
  EXPECT_EQ(sgb_bo_cpu_write(dev, bad, 0, buf, 1), -ENOENT);
  EXPECT_EQ(sgb_bo_cpu_write(dev, h, 16, buf, huge - 8), -ERANGE);
  EXPECT_EQ(sgb_bo_begin_cpu_access(nullptr, h, SGB_DIR_BIDIRECTIONAL), -EINVAL);
  EXPECT_EQ(sgb_bo_begin_cpu_access(dev, h, 3), -EINVAL);
  EXPECT_EQ(sgb_bo_begin_cpu_access(dev, bad, SGB_DIR_BIDIRECTIONAL), -ENOENT);
  EXPECT_EQ(sgb_bo_end_cpu_access(nullptr, h, SGB_DIR_BIDIRECTIONAL), -EINVAL);
  EXPECT_EQ(sgb_bo_end_cpu_access(dev, h, ~0u), -EINVAL);
  EXPECT_EQ(sgb_bo_end_cpu_access(dev, bad, SGB_DIR_BIDIRECTIONAL), -ENOENT);
  EXPECT_EQ(sgb_bo_cache_flush(nullptr, h, 0, 1), -EINVAL);
  EXPECT_EQ(sgb_bo_cache_flush(dev, bad, 0, 1), -ENOENT);
  EXPECT_EQ(sgb_bo_cache_flush(dev, h, huge, 2), -ERANGE);
  EXPECT_EQ(sgb_bo_cache_flush(dev, h, 0, 0), -EINVAL);
  EXPECT_EQ(sgb_bo_cache_invalidate(nullptr, h, 0, 1), -EINVAL);
  EXPECT_EQ(sgb_bo_cache_invalidate(dev, bad, 0, 1), -ENOENT);
  EXPECT_EQ(sgb_bo_cache_invalidate(dev, h, 4096, huge), -ERANGE);
  // Jobs.
  EXPECT_EQ(sgb_job_copy(nullptr, h, 0, h, 4096, 4, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_copy(dev, bad, 0, h, 0, 4, &fence), -ENOENT);
  EXPECT_EQ(sgb_job_copy(dev, h, 0, bad, 0, 4, &fence), -ENOENT);
  EXPECT_EQ(sgb_job_copy(dev, h, huge, h, 0, 4, &fence), -ERANGE);
  EXPECT_EQ(sgb_job_copy(dev, h, 0, h, 0, 0, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_fill(nullptr, h, 0, 4, 1, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_fill(dev, bad, 0, 4, 1, &fence), -ENOENT);
  EXPECT_EQ(sgb_job_fill(dev, h, 2, 4, 1, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_fill(dev, h, 8192, 4, 1, nullptr), -ERANGE);
  EXPECT_EQ(sgb_job_checksum(nullptr, h, 0, 4, &crc, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_checksum(dev, h, 0, 4, nullptr, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_checksum(dev, bad, 0, 4, &crc, &fence), -ENOENT);
  EXPECT_EQ(sgb_job_checksum(dev, h, 4, huge, &crc, nullptr), -ERANGE);
  // Sharing.
  EXPECT_EQ(sgb_bo_export(nullptr, h, &uuid, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_export(dev, bad, &uuid, nullptr), -ENOENT);
  EXPECT_EQ(sgb_bo_import_uuid(nullptr, &uuid, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_import_uuid(dev, nullptr, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_import_uuid(dev, &uuid, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_import_uuid(dev, &uuid, &out_handle), -ENOENT);  // all-zero uuid
  EXPECT_EQ(sgb_bo_import_fd(nullptr, 0, &out_handle), -EINVAL);
  EXPECT_EQ(sgb_bo_import_fd(dev, 0, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_import_fd(dev, -1, &out_handle), -EBADF);
  EXPECT_EQ(sgb_bo_import_fd(dev, 1 << 30, &out_handle), -EBADF);
  EXPECT_EQ(sgb_bo_import_fd(dev, sgb_device_vram_fd(dev), &out_handle), -ENOENT);
  EXPECT_EQ(sgb_bo_storage(nullptr, h, nullptr, nullptr, nullptr, nullptr), -EINVAL);
  EXPECT_EQ(sgb_bo_storage(dev, bad, nullptr, nullptr, nullptr, nullptr), -ENOENT);
  EXPECT_EQ(sgb_bo_storage(dev, h, nullptr, nullptr, nullptr, nullptr), 0);  // all optional
  // Error names.
  EXPECT_STRNE(sgb_strerror(-ENOLCK), "");
  EXPECT_STRNE(sgb_strerror(-12345), nullptr);
  EXPECT_STREQ(sgb_strerror(0), "success");

  // None of that touched the buffer or created anything.
  std::vector<uint8_t> now(bytes.size());
  ASSERT_EQ(sgb_bo_cpu_read(dev, h, 0, now.data(), now.size()), 0);
  EXPECT_EQ(now, bytes);
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_EQ(stats.bo_count, 1u);
  EXPECT_EQ(stats.import_count, 0u);
  EXPECT_EQ(stats.bytes_copied, 0u);
  sgb_bo_debug_info debug{};
  ASSERT_EQ(sgb_bo_debug_info_get(dev, h, &debug), 0);
  EXPECT_EQ(debug.moves, 0u);
  EXPECT_EQ(debug.state.pin_count, 0u);
  EXPECT_EQ(debug.state.exported, 0u);

  sgb_device_destroy(dev);
  sgb_backend_unref(backend);
}

TEST(CApiTest, SharedBackendIsShared) {
  sgb_backend* s1 = nullptr;
  sgb_backend* s2 = nullptr;
  ASSERT_EQ(sgb_backend_get_shared(&s1), 0);
  ASSERT_EQ(sgb_backend_get_shared(&s2), 0);
  ASSERT_NE(s1, nullptr);
  EXPECT_EQ(s1, s2);
  sgb_backend* own = nullptr;
  ASSERT_EQ(sgb_backend_new(&own), 0);
  EXPECT_NE(own, s1);

  // Devices on the two references share one export registry.
  sgb_device* a = NewDevice(s1, "A");
  sgb_device* b = NewDevice(s2, "B");
  sgb_device* c = NewDevice(own, "C");
  ASSERT_TRUE(a && b && c);
  uint32_t h = 0;
  ASSERT_EQ(sgb_bo_create(a, 4096, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  auto bytes = RandomBytes(4096, 9);
  ASSERT_EQ(sgb_bo_cpu_write(a, h, 0, bytes.data(), bytes.size()), 0);
  sgb_uuid uuid{};
  int fd = -1;
  ASSERT_EQ(sgb_bo_export(a, h, &uuid, &fd), 0);
  uint32_t hb = 0, hc = 0;
  ASSERT_EQ(sgb_bo_import_uuid(b, &uuid, &hb), 0);
  std::vector<uint8_t> got(4096);
  ASSERT_EQ(sgb_bo_cpu_read(b, hb, 0, got.data(), got.size()), 0);
  EXPECT_EQ(got, bytes);
  // A separate backend does not know the shared one's exports.
  EXPECT_EQ(sgb_bo_import_uuid(c, &uuid, &hc), -ENOENT);
  EXPECT_EQ(sgb_bo_import_fd(c, fd, &hc), -ENOENT);
  close(fd);

  // The devices hold references: dropping ours keeps the shared backend alive for them...
  sgb_backend_unref(s2);
  sgb_backend* s3 = nullptr;
  ASSERT_EQ(sgb_backend_get_shared(&s3), 0);
  EXPECT_EQ(s3, s1);
  sgb_backend_unref(s3);
  sgb_backend_unref(s1);
  // ... and the registry still works through them.
  uint32_t hb2 = 0;
  ASSERT_EQ(sgb_bo_import_uuid(b, &uuid, &hb2), 0);
  EXPECT_EQ(hb2, hb);
  sgb_device_destroy(b);
  sgb_device_destroy(a);
  // With the last reference gone, the next get_shared must build a fresh one (a stale
  // pointer to the freed instance would show under ASan).
  sgb_backend* fresh = nullptr;
  ASSERT_EQ(sgb_backend_get_shared(&fresh), 0);
  sgb_device* d = NewDevice(fresh, "D");
  ASSERT_NE(d, nullptr);
  uint32_t hd = 0;
  EXPECT_EQ(sgb_bo_import_uuid(d, &uuid, &hd), -ENOENT);
  sgb_device_destroy(d);
  sgb_backend_unref(fresh);
  sgb_device_destroy(c);
  sgb_backend_unref(own);
}

uint64_t HostmemUsed(sgb_device* dev) {
  sgb_device_stats stats{};
  EXPECT_EQ(sgb_device_stats_get(dev, &stats), 0);
  return stats.hostmem_used;
}

// max_hostmem bounds the SYSTEM memory a guest can make the device hold: over it a create or
// an eviction fails with -ENOSPC and changes nothing; freeing a buffer makes room again.
TEST(CApiTest, HostMemoryLimitRefusesAndReports) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device* dev = NewDevice(backend, "budget", 1, 8 * kPage);
  ASSERT_NE(dev, nullptr);
  sgb_device_stats stats{};
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_EQ(stats.hostmem_limit, 8 * kPage);
  EXPECT_EQ(stats.hostmem_used, 0u);

  uint32_t five = 0, three = 0, four = 0, refused = 0;
  ASSERT_EQ(sgb_bo_create(dev, 5 * kPage, SGB_PLACEMENT_SYSTEM, 0, &five), 0);
  EXPECT_EQ(HostmemUsed(dev), 5 * kPage);
  EXPECT_EQ(sgb_bo_create(dev, 4 * kPage, SGB_PLACEMENT_SYSTEM, 0, &refused), -ENOSPC);
  EXPECT_EQ(HostmemUsed(dev), 5 * kPage);
  ASSERT_EQ(sgb_bo_create(dev, 3 * kPage - 100, SGB_PLACEMENT_SYSTEM, 0, &three), 0);
  EXPECT_EQ(HostmemUsed(dev), 8 * kPage);  // page-rounded: the budget is exactly full
  EXPECT_EQ(sgb_bo_create(dev, 1, SGB_PLACEMENT_SYSTEM, 0, &refused), -ENOSPC);
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_EQ(stats.bo_count, 2u);

  ASSERT_EQ(sgb_bo_destroy(dev, five), 0);
  EXPECT_EQ(HostmemUsed(dev), 3 * kPage);
  ASSERT_EQ(sgb_bo_create(dev, 4 * kPage, SGB_PLACEMENT_SYSTEM, 0, &four), 0);
  EXPECT_EQ(HostmemUsed(dev), 7 * kPage);

  // Evicting a 2-page VRAM buffer needs 2 pages of host memory; 1 is left.
  uint32_t vram = 0;
  ASSERT_EQ(sgb_bo_create(dev, 2 * kPage, SGB_PLACEMENT_DEVICE, 0, &vram), 0);
  std::vector<uint8_t> bytes = RandomBytes(2 * kPage, 41);
  ASSERT_EQ(sgb_bo_cpu_write(dev, vram, 0, bytes.data(), bytes.size()), 0);
  EXPECT_EQ(sgb_bo_evict(dev, vram), -ENOSPC);
  EXPECT_STRNE(sgb_strerror(-ENOSPC), "");
  sgb_bo_debug_info debug{};
  ASSERT_EQ(sgb_bo_debug_info_get(dev, vram, &debug), 0);
  EXPECT_EQ(debug.state.placement, uint32_t{SGB_PLACEMENT_DEVICE});
  EXPECT_EQ(debug.moves, 0u);
  sgb_bo_state info{};
  std::vector<uint8_t> now(bytes.size());
  ASSERT_EQ(sgb_bo_cpu_read(dev, vram, 0, now.data(), now.size()), 0);
  EXPECT_EQ(now, bytes);
  EXPECT_EQ(HostmemUsed(dev), 7 * kPage);

  ASSERT_EQ(sgb_bo_destroy(dev, four), 0);
  ASSERT_EQ(sgb_bo_evict(dev, vram), 0);
  ASSERT_EQ(sgb_bo_state_get(dev, vram, &info), 0);
  EXPECT_EQ(info.placement, uint32_t{SGB_PLACEMENT_SYSTEM});
  ASSERT_EQ(sgb_bo_cpu_read(dev, vram, 0, now.data(), now.size()), 0);
  EXPECT_EQ(now, bytes);
  EXPECT_EQ(HostmemUsed(dev), 5 * kPage);

  // A reset drops every handle and so every charge.
  ASSERT_EQ(sgb_device_reset(dev), 0);
  EXPECT_EQ(HostmemUsed(dev), 0u);
  sgb_device_destroy(dev);
  sgb_backend_unref(backend);
}

// Storage of its own (docs/broker.md): a sealed memfd of exactly the buffer's pages, kept
// while the constraint holds; relocation is a move into a new one; contents survive.
TEST(CApiTest, OwnStorageIsASealedMemfdOfItsOwn) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device* dev = NewDevice(backend, "own", 1, 16 * kPage);
  ASSERT_NE(dev, nullptr);
  uint32_t vram = 0, other = 0, imp = 0;
  ASSERT_EQ(sgb_bo_create(dev, 3 * kPage - 10, SGB_PLACEMENT_DEVICE, 0, &vram), 0);
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_SYSTEM, 0, &other), 0);
  std::vector<uint8_t> bytes = RandomBytes(3 * kPage - 10, 7);
  ASSERT_EQ(sgb_bo_cpu_write(dev, vram, 0, bytes.data(), bytes.size()), 0);
  EXPECT_EQ(sgb_bo_own_storage(dev, vram, SGB_OWN_RELOCATE), -EINVAL);
  EXPECT_EQ(sgb_bo_own_storage(dev, vram, 4), -EINVAL);

  ASSERT_EQ(sgb_bo_pin(dev, vram), 0);
  EXPECT_EQ(sgb_bo_own_storage(dev, vram, SGB_OWN_KEEP), -EBUSY);
  ASSERT_EQ(sgb_bo_unpin(dev, vram), 0);
  ASSERT_EQ(sgb_bo_own_storage(dev, vram, SGB_OWN_KEEP), 0);
  sgb_bo_state info{};
  ASSERT_EQ(sgb_bo_state_get(dev, vram, &info), 0);
  EXPECT_EQ(info.placement, uint32_t{SGB_PLACEMENT_SYSTEM});
  EXPECT_EQ(info.generation, 2u);
  int fd = -1, other_fd = -1;
  uint64_t off = 1, size = 0;
  void* ptr = nullptr;
  ASSERT_EQ(sgb_bo_storage(dev, vram, &fd, &off, &ptr, &size), 0);
  ASSERT_EQ(sgb_bo_storage(dev, other, &other_fd, nullptr, nullptr, nullptr), 0);
  EXPECT_NE(fd, other_fd);  // not the system pool
  EXPECT_EQ(off, 0u);
  EXPECT_EQ(lseek(fd, 0, SEEK_END), off_t(3 * kPage));
  int seals = fcntl(fd, F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
            F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_EQ(seals & F_SEAL_WRITE, 0);
  EXPECT_EQ(std::memcmp(ptr, bytes.data(), bytes.size()), 0);
  EXPECT_EQ(HostmemUsed(dev), 4 * kPage);  // charged as pool storage is

  // Kept: DEVICE is refused, SYSTEM (and asking again) changes nothing.
  EXPECT_EQ(sgb_bo_move(dev, vram, SGB_PLACEMENT_DEVICE, 0), -EBUSY);
  EXPECT_EQ(sgb_bo_move(dev, vram, SGB_PLACEMENT_SYSTEM, 0), 0);
  ASSERT_EQ(sgb_bo_own_storage(dev, vram, SGB_OWN_KEEP), 0);
  ASSERT_EQ(sgb_bo_state_get(dev, vram, &info), 0);
  EXPECT_EQ(info.generation, 2u);

  // Relocation: new memfd, same bytes, generation bumped.
  ASSERT_EQ(sgb_bo_own_storage(dev, vram, SGB_OWN_KEEP | SGB_OWN_RELOCATE), 0);
  int fd2 = -1;
  ASSERT_EQ(sgb_bo_storage(dev, vram, &fd2, &off, &ptr, nullptr), 0);
  EXPECT_EQ(lseek(fd2, 0, SEEK_END), off_t(3 * kPage));
  EXPECT_EQ(off, 0u);
  EXPECT_EQ(std::memcmp(ptr, bytes.data(), bytes.size()), 0);
  ASSERT_EQ(sgb_bo_state_get(dev, vram, &info), 0);
  EXPECT_EQ(info.generation, 3u);

  // Imports cannot: the storage is the exporter's.
  sgb_uuid uuid{};
  ASSERT_EQ(sgb_bo_export(dev, other, &uuid, nullptr), 0);
  sgb_device* dev2 = NewDevice(backend, "own2");
  ASSERT_EQ(sgb_bo_import_uuid(dev2, &uuid, &imp), 0);
  EXPECT_EQ(sgb_bo_own_storage(dev2, imp, SGB_OWN_KEEP), -EINVAL);

  // Lifted: it may go to VRAM again.
  ASSERT_EQ(sgb_bo_own_storage(dev, vram, 0), 0);
  ASSERT_EQ(sgb_bo_move(dev, vram, SGB_PLACEMENT_DEVICE, 0), 0);
  std::vector<uint8_t> now(bytes.size());
  ASSERT_EQ(sgb_bo_cpu_read(dev, vram, 0, now.data(), now.size()), 0);
  EXPECT_EQ(now, bytes);
  sgb_device_destroy(dev2);
  sgb_device_destroy(dev);
  sgb_backend_unref(backend);
}

// A config that never mentions max_hostmem means no limit (as QEMU without the property).
TEST(CApiTest, ZeroHostMemoryLimitMeansUnlimited) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device_config cfg{};
  cfg.name = "unlimited";
  cfg.vram_size = 2 * kMiB;
  cfg.coherent = 1;
  sgb_device* dev = nullptr;
  ASSERT_EQ(sgb_device_create(backend, &cfg, &dev), 0);
  uint32_t handles[3] = {};
  for (uint32_t& h : handles) {  // untouched memfd pages cost nothing
    ASSERT_EQ(sgb_bo_create(dev, SGB_MAX_BO_SIZE, SGB_PLACEMENT_SYSTEM, 0, &h), 0);
  }
  sgb_device_stats stats{};
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_EQ(stats.hostmem_limit, 0u);
  EXPECT_EQ(stats.hostmem_used, 3 * SGB_MAX_BO_SIZE);
  for (uint32_t h : handles) ASSERT_EQ(sgb_bo_destroy(dev, h), 0);
  EXPECT_EQ(HostmemUsed(dev), 0u);
  sgb_device_destroy(dev);
  sgb_backend_unref(backend);
}

}  // namespace
}  // namespace sharegpu::testing

namespace sharegpu::testing {
namespace {

size_t OpenFds() { return sgb_process_open_fds(); }

// Buffers in SYSTEM placement are ranges of one pool memfd per device: creating, evicting
// and destroying thousands of them opens no descriptor, and zero-copy storage is the pool's
// descriptor at a page-aligned offset of each buffer's own.
TEST(CApiTest, SystemBuffersHoldNoDescriptorEach) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device* dev = NewDevice(backend, "fds");
  ASSERT_NE(dev, nullptr);
  uint32_t first = 0;
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_SYSTEM, 0, &first), 0);  // the pool
  const size_t before = OpenFds();
  std::vector<uint32_t> handles;
  for (int i = 0; i < 2000; ++i) {
    uint32_t h = 0;
    ASSERT_EQ(sgb_bo_create(dev, kPage * (1 + i % 2), SGB_PLACEMENT_SYSTEM, 0, &h), 0) << i;
    handles.push_back(h);
  }
  for (int i = 0; i < 64; ++i) {  // 2 MiB of VRAM, 64 KiB each: the later ones evict
    uint32_t h = 0;
    ASSERT_EQ(sgb_bo_create(dev, 16 * kPage, SGB_PLACEMENT_DEVICE, 0, &h), 0) << i;
    handles.push_back(h);
  }
  sgb_device_stats stats{};
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_GT(stats.evictions, 0u);
  EXPECT_EQ(OpenFds(), before);

  int fd0 = -1, fd1 = -1;
  uint64_t off0 = 1, off1 = 1, size = 0;
  void *p0 = nullptr, *p1 = nullptr;
  ASSERT_EQ(sgb_bo_storage(dev, handles[0], &fd0, &off0, &p0, &size), 0);
  ASSERT_EQ(sgb_bo_storage(dev, handles[1], &fd1, &off1, &p1, &size), 0);
  EXPECT_EQ(fd0, fd1);
  EXPECT_NE(off0, off1);
  EXPECT_EQ(off0 % kPage, 0u);
  EXPECT_EQ(off1 % kPage, 0u);
  EXPECT_EQ(size, 2 * kPage);
  // The bytes behind the descriptor and offset are the buffer's.
  std::vector<uint8_t> bytes = RandomBytes(2 * kPage, 7);
  ASSERT_EQ(sgb_bo_cpu_write(dev, handles[1], 0, bytes.data(), bytes.size()), 0);
  std::vector<uint8_t> via_fd(bytes.size());
  ASSERT_EQ(pread(fd1, via_fd.data(), via_fd.size(), static_cast<off_t>(off1)),
            static_cast<ssize_t>(via_fd.size()));
  EXPECT_EQ(via_fd, bytes);

  for (uint32_t h : handles) ASSERT_EQ(sgb_bo_destroy(dev, h), 0);
  EXPECT_EQ(OpenFds(), before);
  sgb_device_destroy(dev);
  sgb_backend_unref(backend);
}

// An export holds a descriptor only once one was asked for, and only until the export ends.
TEST(CApiTest, ExportDescriptorClosedWhenExportEnds) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device* a = NewDevice(backend, "a");
  sgb_device* b = NewDevice(backend, "b");
  ASSERT_TRUE(a && b);
  uint32_t h = 0, imp = 0, by_uuid = 0, imp2 = 0;
  ASSERT_EQ(sgb_bo_create(a, kPage, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  ASSERT_EQ(sgb_bo_create(a, kPage, SGB_PLACEMENT_DEVICE, 0, &by_uuid), 0);
  const size_t before = OpenFds();
  sgb_uuid uuid{};
  ASSERT_EQ(sgb_bo_export(a, by_uuid, &uuid, nullptr), 0);
  ASSERT_EQ(sgb_bo_import_uuid(b, &uuid, &imp2), 0);
  EXPECT_EQ(OpenFds(), before);  // by UUID: no descriptor at all

  int fd = -1;
  ASSERT_EQ(sgb_bo_export(a, h, &uuid, &fd), 0);
  EXPECT_EQ(OpenFds(), before + 2);  // the registry's identity and the caller's dup
  ASSERT_EQ(sgb_bo_import_fd(b, fd, &imp), 0);
  close(fd);
  EXPECT_EQ(OpenFds(), before + 1);
  ASSERT_EQ(sgb_bo_destroy(a, h), 0);
  EXPECT_EQ(OpenFds(), before + 1);  // the import keeps the export
  ASSERT_EQ(sgb_bo_destroy(b, imp), 0);
  EXPECT_EQ(OpenFds(), before);
  EXPECT_EQ(sgb_bo_import_uuid(b, &uuid, &imp), -ENOENT);
  sgb_device_destroy(b);
  sgb_device_destroy(a);
  sgb_backend_unref(backend);
}

// ------------------------------------------------------------------ asynchronous jobs

// What sgb_job_submit's done callbacks reported, in the order they ran.
// A backend with one device, released at scope exit (also when an assertion returns early).
struct BackendWithDevice {
  sgb_backend* backend = nullptr;
  sgb_device* dev = nullptr;
  explicit BackendWithDevice(const char* name) {
    if (sgb_backend_new(&backend) == 0) dev = NewDevice(backend, name);
  }
  BackendWithDevice(const BackendWithDevice&) = delete;
  BackendWithDevice& operator=(const BackendWithDevice&) = delete;
  ~BackendWithDevice() {
    if (dev) sgb_device_destroy(dev);
    if (backend) sgb_backend_unref(backend);
  }
  // For tests of what destroy itself does.
  void DestroyDevice() {
    sgb_device_destroy(dev);
    dev = nullptr;
  }
};

struct JobLog {
  struct Entry {
    uint64_t fence;
    int status;
    uint64_t result;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Entry> entries;

  static void Done(void* opaque, uint64_t fence, int status, uint64_t result) {
    auto* log = static_cast<JobLog*>(opaque);
    std::lock_guard lock(log->mu);
    log->entries.push_back({fence, status, result});
    log->cv.notify_all();
  }
  // Bounded: false when fewer than n arrived within `wait`.
  bool WaitFor(size_t n, std::chrono::milliseconds wait = std::chrono::seconds(20)) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, wait, [&] { return entries.size() >= n; });
  }
  std::vector<Entry> Get() {
    std::lock_guard lock(mu);
    return entries;
  }
};

// Polls sgb_engine_list_jobs until the job with `fence` shows `state`; the deadline fails.
::testing::AssertionResult WaitForJobState(sgb_device* dev, uint64_t fence, const char* state,
                                           sgb_job_info* out = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (;;) {
    sgb_job_info jobs[16];
    size_t count = 0;
    if (int err = sgb_engine_list_jobs(dev, jobs, 16, &count)) {
      return ::testing::AssertionFailure() << "sgb_engine_list_jobs: " << err;
    }
    for (size_t i = 0; i < count && i < 16; ++i) {
      if (jobs[i].fence == fence && std::strcmp(jobs[i].state, state) == 0) {
        if (out) *out = jobs[i];
        return ::testing::AssertionSuccess();
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return ::testing::AssertionFailure() << "job " << fence << " never showed " << state;
    }
    std::this_thread::yield();
  }
}

// sgb_job_submit returns at once with the fence's seqno; done reports that seqno, the status
// and, for CHECKSUM, the CRC sgb_job_checksum computes; an error at execution arrives
// through done too.
TEST(CApiJobTest, SubmitDoneReportsFenceStatusAndChecksum) {
  BackendWithDevice b("submit");
  ASSERT_NE(b.dev, nullptr);
  sgb_device* dev = b.dev;
  uint32_t h = 0;
  ASSERT_EQ(sgb_bo_create(dev, 2 * kPage, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  std::vector<uint8_t> bytes = RandomBytes(2 * kPage, 11);
  ASSERT_EQ(sgb_bo_cpu_write(dev, h, 0, bytes.data(), bytes.size()), 0);
  uint32_t crc = 0;
  ASSERT_EQ(sgb_job_checksum(dev, h, 0, bytes.size(), &crc, nullptr), 0);
  ASSERT_EQ(crc, Crc(bytes));

  JobLog log;
  constexpr size_t kJobs = 32;
  std::vector<uint64_t> fences;
  sgb_job sum{SGB_JOB_CHECKSUM, h, 0, 0, 0, 0, bytes.size()};
  for (size_t i = 0; i < kJobs; ++i) {
    uint64_t fence = 0;
    ASSERT_EQ(sgb_job_submit(dev, &sum, JobLog::Done, &log, &fence), 0);
    if (!fences.empty()) {
      EXPECT_GT(fence, fences.back());
    }
    fences.push_back(fence);
  }
  // An execution error: accepted by sgb_job_submit, reported by done.
  sgb_job beyond{SGB_JOB_FILL, h, 0, 0x01020304u, 2 * kPage, 0, 4};
  ASSERT_EQ(sgb_job_submit(dev, &beyond, JobLog::Done, &log, nullptr), 0);
  sgb_job fill{SGB_JOB_FILL, h, 0, 0x0a0b0c0du, 0, 0, kPage};
  uint64_t fill_fence = 0;
  ASSERT_EQ(sgb_job_submit(dev, &fill, JobLog::Done, &log, &fill_fence), 0);
  ASSERT_TRUE(log.WaitFor(kJobs + 2));
  std::vector<JobLog::Entry> got = log.Get();
  ASSERT_EQ(got.size(), kJobs + 2);
  std::string wrong_fences;
  for (size_t i = 0; i < kJobs; ++i) {
    if (got[i].fence != fences[i]) {
      wrong_fences += " " + std::to_string(fences[i]) + "->" + std::to_string(got[i].fence);
    }
    EXPECT_EQ(got[i].status, 0) << i;
    EXPECT_EQ(got[i].result, crc) << i;
  }
  EXPECT_EQ(wrong_fences, "") << "done reported another fence than sgb_job_submit returned "
                                 "(submitted->reported)";
  EXPECT_EQ(got[kJobs].status, -ERANGE);
  EXPECT_EQ(got[kJobs].fence, fences.back() + 1);
  EXPECT_EQ(got[kJobs + 1].status, 0);
  EXPECT_EQ(got[kJobs + 1].fence, fill_fence);
  EXPECT_EQ(got[kJobs + 1].result, 0u);
  std::vector<uint8_t> want = bytes;
  std::memcpy(want.data(), PatternBytes(kPage, 0x0a0b0c0du).data(), kPage);
  ASSERT_EQ(sgb_job_checksum(dev, h, 0, want.size(), &crc, nullptr), 0);
  EXPECT_EQ(crc, Crc(want));
  sgb_device_stats stats{};
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_GE(stats.jobs_max_in_flight, 1u);
  EXPECT_EQ(stats.job_errors, 1u);
}

// Refused submissions queue nothing and never call done.
TEST(CApiJobTest, SubmitRejectsBadArguments) {
  BackendWithDevice b("submit-bad");
  ASSERT_NE(b.dev, nullptr);
  sgb_device* dev = b.dev;
  uint32_t h = 0;
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_SYSTEM, 0, &h), 0);
  JobLog log;
  uint64_t fence = 0;
  sgb_job ok{SGB_JOB_FILL, h, 0, 1, 0, 0, kPage};
  EXPECT_EQ(sgb_job_submit(dev, &ok, nullptr, &log, &fence), -EINVAL);  // no done
  sgb_job bad_op = ok;
  bad_op.op = 3;
  EXPECT_EQ(sgb_job_submit(dev, &bad_op, JobLog::Done, &log, &fence), -EINVAL);
  bad_op.op = 0xffffffffu;
  EXPECT_EQ(sgb_job_submit(dev, &bad_op, JobLog::Done, &log, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_submit(dev, nullptr, JobLog::Done, &log, &fence), -EINVAL);
  EXPECT_EQ(sgb_job_submit(nullptr, &ok, JobLog::Done, &log, &fence), -EINVAL);
  sgb_job unknown = ok;
  unknown.handle = 0xdead;
  EXPECT_EQ(sgb_job_submit(dev, &unknown, JobLog::Done, &log, &fence), -ENOENT);
  sgb_job copy_unknown_src{SGB_JOB_COPY, h, 0xdead, 0, 0, 0, kPage};
  EXPECT_EQ(sgb_job_submit(dev, &copy_unknown_src, JobLog::Done, &log, &fence), -ENOENT);
  EXPECT_EQ(fence, 0u);
  // A good job after them: its done is the first and only one (completion is in order).
  uint64_t good = 0;
  ASSERT_EQ(sgb_job_submit(dev, &ok, JobLog::Done, &log, &good), 0);
  ASSERT_TRUE(log.WaitFor(1));
  b.DestroyDevice();  // no job left: nothing more can be called
  std::vector<JobLog::Entry> got = log.Get();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status, 0);
  EXPECT_GT(good, 0u);
}

// sgb_engine_hold keeps a job's completion pending: sgb_engine_list_jobs shows it "held"
// with its handles; sgb_engine_release completes it.
TEST(CApiJobTest, HoldListAndRelease) {
  BackendWithDevice b("hold");
  ASSERT_NE(b.dev, nullptr);
  sgb_device* dev = b.dev;
  EXPECT_STREQ(sgb_engine_kind(dev), "cpu");
  uint32_t src = 0, dst = 0;
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_DEVICE, 0, &src), 0);
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_SYSTEM, 0, &dst), 0);
  std::vector<uint8_t> bytes = RandomBytes(kPage, 12);
  ASSERT_EQ(sgb_bo_cpu_write(dev, src, 0, bytes.data(), bytes.size()), 0);
  EXPECT_EQ(sgb_engine_hold(dev, 0xdead, 0), -ENOENT);
  ASSERT_EQ(sgb_engine_hold(dev, 0, 0), 0);

  JobLog log;
  uint64_t fence = 0;
  sgb_job copy{SGB_JOB_COPY, dst, src, 0, 0, 0, kPage};
  ASSERT_EQ(sgb_job_submit(dev, &copy, JobLog::Done, &log, &fence), 0);
  sgb_job_info info{};
  ASSERT_TRUE(WaitForJobState(dev, fence, "held", &info));
  EXPECT_EQ(info.op, uint32_t{SGB_JOB_COPY});
  EXPECT_EQ(info.handle, dst);
  EXPECT_EQ(info.handle2, src);
  EXPECT_EQ(info.deps_pending, 0u);
  size_t count = 0;
  ASSERT_EQ(sgb_engine_list_jobs(dev, nullptr, 0, &count), 0);
  EXPECT_EQ(count, 1u);
  sgb_device_stats stats{};
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_EQ(stats.jobs_in_flight, 1u);
  EXPECT_EQ(stats.jobs_held, 1u);
  EXPECT_FALSE(log.WaitFor(1, std::chrono::milliseconds(200))) << "completed while held";

  ASSERT_EQ(sgb_engine_release(dev), 0);
  ASSERT_TRUE(log.WaitFor(1));
  EXPECT_EQ(log.Get()[0].fence, fence);
  EXPECT_EQ(log.Get()[0].status, 0);
  ASSERT_EQ(sgb_engine_list_jobs(dev, nullptr, 0, &count), 0);
  EXPECT_EQ(count, 0u);
  std::vector<uint8_t> out(kPage);
  ASSERT_EQ(sgb_bo_cpu_read(dev, dst, 0, out.data(), out.size()), 0);
  EXPECT_EQ(out, bytes);
  ASSERT_EQ(sgb_device_stats_get(dev, &stats), 0);
  EXPECT_EQ(stats.jobs_held, 1u);

  EXPECT_EQ(sgb_engine_stall(nullptr, 1), -EINVAL);
  EXPECT_EQ(sgb_engine_hold(nullptr, 0, 0), -EINVAL);
  EXPECT_EQ(sgb_engine_release(nullptr), -EINVAL);
  EXPECT_EQ(sgb_engine_list_jobs(nullptr, nullptr, 0, &count), -EINVAL);
  EXPECT_EQ(sgb_engine_list_jobs(dev, nullptr, 4, &count), -EINVAL);
  EXPECT_STREQ(sgb_engine_kind(nullptr), "");
}

// sgb_engine_abort: a stalled job is cancelled (done with -ECANCELED before the call
// returns, the buffer untouched); a held one completes with its status; SGB_ABORT_NOWAIT
// returns at once and the completion follows; bad arguments are -EINVAL.
TEST(CApiJobTest, AbortCancelsUnstartedAndFinishesHeld) {
  BackendWithDevice b("abort");
  ASSERT_NE(b.dev, nullptr);
  sgb_device* dev = b.dev;
  uint32_t h = 0;
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  std::vector<uint8_t> bytes = RandomBytes(kPage, 13);
  ASSERT_EQ(sgb_bo_cpu_write(dev, h, 0, bytes.data(), bytes.size()), 0);
  uint32_t cancelled = 99;
  ASSERT_EQ(sgb_engine_abort(dev, 0, &cancelled), 0);  // idle: nothing to do
  EXPECT_EQ(cancelled, 0u);

  JobLog log;
  uint64_t f_stalled = 0, f_held = 0, f_nowait = 0;
  sgb_job fill{SGB_JOB_FILL, h, 0, 0x13579bdfu, 0, 0, kPage};
  ASSERT_EQ(sgb_engine_stall(dev, 1), 0);
  ASSERT_EQ(sgb_job_submit(dev, &fill, JobLog::Done, &log, &f_stalled), 0);
  ASSERT_TRUE(WaitForJobState(dev, f_stalled, "stalled", nullptr));
  ASSERT_EQ(sgb_engine_abort(dev, 0, &cancelled), 0);
  EXPECT_EQ(cancelled, 1u);
  ASSERT_EQ(log.Get().size(), 1u);  // waited: no WaitFor
  EXPECT_EQ(log.Get()[0].fence, f_stalled);
  EXPECT_EQ(log.Get()[0].status, -ECANCELED);
  std::vector<uint8_t> out(kPage);
  ASSERT_EQ(sgb_bo_cpu_read(dev, h, 0, out.data(), out.size()), 0);
  EXPECT_EQ(out, bytes);

  ASSERT_EQ(sgb_engine_hold(dev, 0, 0), 0);
  ASSERT_EQ(sgb_job_submit(dev, &fill, JobLog::Done, &log, &f_held), 0);
  ASSERT_TRUE(WaitForJobState(dev, f_held, "held", nullptr));
  ASSERT_EQ(sgb_engine_abort(dev, 0, nullptr), 0);
  ASSERT_EQ(log.Get().size(), 2u);
  EXPECT_EQ(log.Get()[1].fence, f_held);
  EXPECT_EQ(log.Get()[1].status, 0);
  ASSERT_EQ(sgb_bo_cpu_read(dev, h, 0, out.data(), out.size()), 0);
  std::vector<uint8_t> want(kPage);
  for (size_t i = 0; i < kPage; ++i) want[i] = static_cast<uint8_t>(0x13579bdfu >> (i % 4 * 8));
  EXPECT_EQ(out, want);

  ASSERT_EQ(sgb_engine_stall(dev, 1), 0);
  ASSERT_EQ(sgb_job_submit(dev, &fill, JobLog::Done, &log, &f_nowait), 0);
  ASSERT_TRUE(WaitForJobState(dev, f_nowait, "stalled", nullptr));
  ASSERT_EQ(sgb_engine_abort(dev, SGB_ABORT_NOWAIT, &cancelled), 0);
  EXPECT_EQ(cancelled, 1u);
  ASSERT_TRUE(log.WaitFor(3));
  EXPECT_EQ(log.Get()[2].fence, f_nowait);
  EXPECT_EQ(log.Get()[2].status, -ECANCELED);

  EXPECT_EQ(sgb_engine_abort(nullptr, 0, nullptr), -EINVAL);
  EXPECT_EQ(sgb_engine_abort(dev, 0x80, nullptr), -EINVAL);
}

void CountIdle(void* opaque) {
  auto* log = static_cast<JobLog*>(opaque);
  JobLog::Done(log, 0, 0, 0);
}

// sgb_bo_await_idle: 0 when idle, 1 and a later call while a job is held, errors for bad
// arguments.
TEST(CApiJobTest, AwaitIdleCallsBackAfterRelease) {
  BackendWithDevice b("await");
  ASSERT_NE(b.dev, nullptr);
  sgb_device* dev = b.dev;
  uint32_t h = 0;
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  JobLog idle;
  EXPECT_EQ(sgb_bo_await_idle(dev, h, SGB_AWAIT_WRITE, CountIdle, &idle), 0);
  EXPECT_EQ(sgb_bo_await_idle(dev, 0xdead, SGB_AWAIT_READ, CountIdle, &idle), -ENOENT);
  EXPECT_EQ(sgb_bo_await_idle(dev, h, 3, CountIdle, &idle), -EINVAL);
  EXPECT_EQ(sgb_bo_await_idle(dev, h, SGB_AWAIT_READ, nullptr, &idle), -EINVAL);
  EXPECT_EQ(sgb_bo_await_idle(nullptr, h, SGB_AWAIT_READ, CountIdle, &idle), -EINVAL);

  ASSERT_EQ(sgb_engine_hold(dev, h, 0), 0);
  JobLog log;
  uint64_t fence = 0;
  sgb_job fill{SGB_JOB_FILL, h, 0, 0x99999999u, 0, 0, kPage};
  ASSERT_EQ(sgb_job_submit(dev, &fill, JobLog::Done, &log, &fence), 0);
  ASSERT_TRUE(WaitForJobState(dev, fence, "held"));
  EXPECT_EQ(sgb_bo_await_idle(dev, h, SGB_AWAIT_READ, CountIdle, &idle), 1);
  EXPECT_FALSE(idle.WaitFor(1, std::chrono::milliseconds(200))) << "called while held";
  ASSERT_EQ(sgb_engine_release(dev), 0);
  ASSERT_TRUE(idle.WaitFor(1));
  ASSERT_TRUE(log.WaitFor(1));
  EXPECT_EQ(idle.Get().size(), 1u);
}

// The engine is chosen by name: NULL and "cpu" are the cpu engine; an unknown one fails
// device creation with -ENODEV.
TEST(CApiJobTest, UnknownEngineRefused) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device* dev = nullptr;
  sgb_device_config bad{"noengine", 2 * kMiB, 1, 0, "nonsense"};
  EXPECT_EQ(sgb_device_create(backend, &bad, &dev), -ENODEV);
  EXPECT_EQ(dev, nullptr);
  sgb_device_config cpu{"cpuengine", 2 * kMiB, 1, 0, "cpu"};
  ASSERT_EQ(sgb_device_create(backend, &cpu, &dev), 0);
  EXPECT_STREQ(sgb_engine_kind(dev), "cpu");
  sgb_device_destroy(dev);
  sgb_backend_unref(backend);
}

// Destroying a device whose engine is stalled cancels its queued jobs: every done is called
// with -ECANCELED, in submission order, before sgb_device_destroy returns - even while an
// importer keeps the exported buffer (and so the device's memory) alive.
TEST(CApiJobTest, DestroyCancelsQueuedJobsBeforeReturning) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device* dev = NewDevice(backend, "doomed");
  sgb_device* other = NewDevice(backend, "importer");
  ASSERT_TRUE(dev && other);
  uint32_t h = 0, imported = 0;
  ASSERT_EQ(sgb_bo_create(dev, kPage, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  sgb_uuid uuid{};
  ASSERT_EQ(sgb_bo_export(dev, h, &uuid, nullptr), 0);
  ASSERT_EQ(sgb_bo_import_uuid(other, &uuid, &imported), 0);
  ASSERT_EQ(sgb_engine_stall(dev, 1), 0);
  JobLog log;
  std::vector<uint64_t> fences;
  for (uint32_t i = 0; i < 3; ++i) {
    sgb_job fill{SGB_JOB_FILL, h, 0, 0x10u + i, 0, 0, kPage};
    uint64_t fence = 0;
    ASSERT_EQ(sgb_job_submit(dev, &fill, JobLog::Done, &log, &fence), 0);
    fences.push_back(fence);
  }
  ASSERT_TRUE(WaitForJobState(dev, fences[0], "stalled"));
  EXPECT_TRUE(log.Get().empty());

  sgb_device_destroy(dev);
  std::vector<JobLog::Entry> got = log.Get();  // no wait: destroy has returned
  ASSERT_EQ(got.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i].fence, fences[i]);
    EXPECT_EQ(got[i].status, -ECANCELED) << i;
  }
  // The cancelled writes never happened, and their fences do not keep the importer waiting.
  std::vector<uint8_t> out(kPage, 0xff);
  ASSERT_EQ(sgb_bo_begin_cpu_access(other, imported, SGB_DIR_FROM_DEVICE), 0);
  ASSERT_EQ(sgb_bo_cpu_read(other, imported, 0, out.data(), out.size()), 0);
  EXPECT_EQ(out, std::vector<uint8_t>(kPage, 0));
  ASSERT_EQ(sgb_bo_end_cpu_access(other, imported, SGB_DIR_FROM_DEVICE), 0);
  sgb_device_destroy(other);
  sgb_backend_unref(backend);
}

}  // namespace
}  // namespace sharegpu::testing
