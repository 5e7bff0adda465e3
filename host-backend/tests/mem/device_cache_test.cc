#include "mem/device_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "mem_test_util.h"

namespace sharegpu {
namespace {

using testing::RandomBytes;
using testing::TestBuffer;

std::vector<uint8_t> DeviceReadAll(DeviceCache& cache, const uint8_t* mem, uint64_t off,
                                   uint64_t len) {
  std::vector<uint8_t> out(len);
  cache.DeviceRead(mem, off, len, out.data());
  return out;
}

std::vector<uint8_t> Slice(const std::vector<uint8_t>& v, uint64_t off, uint64_t len) {
  return std::vector<uint8_t>(v.begin() + static_cast<std::ptrdiff_t>(off),
                              v.begin() + static_cast<std::ptrdiff_t>(off + len));
}

// Rule: in strict mode a device write stays in the cache; memory (the CPU's view) changes
// only on Flush, and only for the flushed range.
TEST(DeviceCacheTest, StrictDeviceWriteInvisibleUntilFlush) {
  TestBuffer buf(4 * kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  buf.FillRandom(1);
  const std::vector<uint8_t> before = buf.Snapshot();
  const uint64_t off = kPageSize + 100, len = 2 * kPageSize;  // pages 1..3, partial at both ends
  const std::vector<uint8_t> data = RandomBytes(len, 2);
  cache.DeviceWrite(buf.mem(), off, len, data.data());

  EXPECT_EQ(buf.Snapshot(), before) << "device write reached memory without a flush";
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), off, len), data) << "device lost its own write";
  EXPECT_EQ(cache.stats().dirty_lines, 3u);
  EXPECT_TRUE(cache.HasDirtyLines());

  // A flush of other pages writes nothing back.
  cache.Flush(buf.mem(), 0, kPageSize);
  EXPECT_EQ(buf.Snapshot(), before);

  cache.Flush(buf.mem(), 0, buf.size());
  std::vector<uint8_t> expected = before;
  std::copy(data.begin(), data.end(), expected.begin() + off);
  EXPECT_EQ(buf.Snapshot(), expected);
  const DeviceCacheStats s = cache.stats();
  EXPECT_EQ(s.dirty_lines, 0u);
  EXPECT_EQ(s.valid_lines, 3u) << "flush must clean, not drop";
  EXPECT_EQ(s.lines_written_back, 3u);
  EXPECT_EQ(s.flushes, 2u);
  EXPECT_FALSE(cache.HasDirtyLines());
}

// Rule: flushing a range writes back exactly the lines it touches (here: one byte of page 2).
TEST(DeviceCacheTest, StrictFlushIsLimitedToItsRange) {
  TestBuffer buf(4 * kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  const std::vector<uint8_t> before = buf.Snapshot();
  const std::vector<uint8_t> data = RandomBytes(buf.size(), 3);
  cache.DeviceWrite(buf.mem(), 0, buf.size(), data.data());
  cache.Flush(buf.mem(), 2 * kPageSize + 17, 1);
  std::vector<uint8_t> expected = before;
  std::copy_n(data.begin() + 2 * kPageSize, kPageSize, expected.begin() + 2 * kPageSize);
  EXPECT_EQ(buf.Snapshot(), expected);
  EXPECT_EQ(cache.stats().dirty_lines, 3u);
  // A range running past UINT64_MAX saturates instead of wrapping to an empty range.
  cache.Flush(buf.mem(), kPageSize, UINT64_MAX);
  std::copy_n(data.begin() + kPageSize, 3 * kPageSize, expected.begin() + kPageSize);
  EXPECT_EQ(buf.Snapshot(), expected);
  EXPECT_EQ(cache.stats().dirty_lines, 1u);
}

// Rule: in strict mode a device read is served from the cache, so after the CPU writes memory
// the device keeps seeing the old bytes until Invalidate; a Flush does not refresh them.
TEST(DeviceCacheTest, StrictDeviceReadStaleAfterCpuWriteUntilInvalidate) {
  TestBuffer buf(2 * kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  buf.FillRandom(4);
  const std::vector<uint8_t> old_bytes = buf.Snapshot();
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 0, buf.size()), old_bytes);
  EXPECT_EQ(cache.stats().read_misses, 2u);

  const std::vector<uint8_t> cpu = RandomBytes(buf.size(), 5);
  std::memcpy(buf.mem(), cpu.data(), cpu.size());
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 0, buf.size()), old_bytes)
      << "device saw a CPU write without an invalidate";
  EXPECT_EQ(cache.stats().read_hits, 2u);
  cache.Flush(buf.mem(), 0, buf.size());
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 0, buf.size()), old_bytes);

  // Invalidating page 0 only refreshes page 0.
  cache.Invalidate(buf.mem(), 0, kPageSize);
  std::vector<uint8_t> expected = old_bytes;
  std::copy_n(cpu.begin(), kPageSize, expected.begin());
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 0, buf.size()), expected);
  cache.Invalidate(buf.mem(), 0, buf.size());
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 0, buf.size()), cpu);
  EXPECT_EQ(buf.Snapshot(), cpu) << "invalidating clean lines must not write memory";
  EXPECT_EQ(cache.stats().invalidates, 2u);
}

// Rule: Invalidate writes dirty lines back before dropping them: device data is never lost.
TEST(DeviceCacheTest, InvalidateWritesBackDirtyLinesFirst) {
  TestBuffer buf(4 * kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  const std::vector<uint8_t> before = buf.Snapshot();
  const uint64_t off = 300, len = 2 * kPageSize + 500;
  const std::vector<uint8_t> data = RandomBytes(len, 6);
  cache.DeviceWrite(buf.mem(), off, len, data.data());
  cache.Invalidate(buf.mem(), 0, buf.size());
  std::vector<uint8_t> expected = before;
  std::copy(data.begin(), data.end(), expected.begin() + off);
  EXPECT_EQ(buf.Snapshot(), expected);
  const DeviceCacheStats s = cache.stats();
  EXPECT_EQ(s.valid_lines, 0u);
  EXPECT_EQ(s.dirty_lines, 0u);
  EXPECT_EQ(s.lines_written_back, 3u);
}

// Rule: WritebackAndDropAll is a whole-buffer clean+invalidate.
TEST(DeviceCacheTest, WritebackAndDropAllCleansAndInvalidates) {
  TestBuffer buf(3 * kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  const std::vector<uint8_t> data = RandomBytes(kPageSize, 7);
  cache.DeviceWrite(buf.mem(), 2 * kPageSize, kPageSize, data.data());
  (void)DeviceReadAll(cache, buf.mem(), 0, kPageSize);  // a clean line as well
  cache.WritebackAndDropAll(buf.mem());
  EXPECT_EQ(Slice(buf.Snapshot(), 2 * kPageSize, kPageSize), data);
  EXPECT_EQ(cache.stats().valid_lines, 0u);
  // Dropped: the device now sees new CPU data in page 0.
  buf.mem()[5] ^= 0xff;
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 5, 1)[0], buf.mem()[5]);
}

// Rule: a partial-line device write keeps the rest of the line (filled from memory), and
// write-back stores only the written bytes, so CPU data elsewhere in the page survives.
TEST(DeviceCacheTest, PartialLineWriteKeepsRestOfLine) {
  TestBuffer buf(2 * kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  buf.FillRandom(8);
  const std::vector<uint8_t> before = buf.Snapshot();
  const uint64_t off = kPageSize - 6, len = 10;  // straddles the page boundary
  const std::vector<uint8_t> data = RandomBytes(len, 9);
  cache.DeviceWrite(buf.mem(), off, len, data.data());
  std::vector<uint8_t> expected = before;
  std::copy(data.begin(), data.end(), expected.begin() + off);
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 0, buf.size()), expected);

  // The CPU writes another part of page 0 while the line is dirty.
  buf.mem()[100] = static_cast<uint8_t>(before[100] ^ 0x5a);
  expected[100] = buf.mem()[100];
  cache.Flush(buf.mem(), 0, buf.size());
  EXPECT_EQ(buf.Snapshot(), expected);
}

// Rule: a strict-mode fill is cached like a write; the pattern is little-endian and phased by
// the absolute offset.
TEST(DeviceCacheTest, StrictFillInvisibleUntilFlush) {
  TestBuffer buf(3 * kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  buf.FillRandom(10);
  const std::vector<uint8_t> before = buf.Snapshot();
  const uint32_t pattern = 0xa1b2c3d4;
  const uint64_t off = 40, len = 2 * kPageSize + 8;
  cache.DeviceFill(buf.mem(), off, len, pattern);
  EXPECT_EQ(buf.Snapshot(), before);
  cache.Flush(buf.mem(), 0, buf.size());
  std::vector<uint8_t> expected = before;
  for (uint64_t i = off; i < off + len; ++i) {
    expected[i] = static_cast<uint8_t>(pattern >> (8 * (i % 4)));
  }
  EXPECT_EQ(buf.Snapshot(), expected);
}

// Rule: in coherent mode every device access goes straight to memory and no lines exist.
TEST(DeviceCacheTest, CoherentModeEverythingImmediatelyVisible) {
  TestBuffer buf(2 * kPageSize, CacheMode::kCoherent);
  DeviceCache& cache = *buf.cache;
  const std::vector<uint8_t> data = RandomBytes(kPageSize, 11);
  cache.DeviceWrite(buf.mem(), 7, kPageSize, data.data());
  EXPECT_EQ(Slice(buf.Snapshot(), 7, kPageSize), data);
  buf.mem()[3] = 0x42;
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 3, 1)[0], 0x42);
  buf.mem()[3] = 0x43;
  EXPECT_EQ(DeviceReadAll(cache, buf.mem(), 3, 1)[0], 0x43);
  cache.DeviceFill(buf.mem(), kPageSize, 8, 0x01020304);
  EXPECT_EQ(buf.mem()[kPageSize], 0x04);
  EXPECT_EQ(buf.mem()[kPageSize + 7], 0x01);
  cache.Flush(buf.mem(), 0, buf.size());
  cache.Invalidate(buf.mem(), 0, buf.size());
  const DeviceCacheStats s = cache.stats();
  EXPECT_EQ(s.valid_lines, 0u);
  EXPECT_EQ(s.dirty_lines, 0u);
  EXPECT_EQ(s.read_hits + s.read_misses, 0u);
  EXPECT_EQ(s.lines_written_back, 0u);
  EXPECT_EQ(s.flushes, 1u);
  EXPECT_EQ(s.invalidates, 1u);
  EXPECT_FALSE(cache.HasDirtyLines());
}

// Rule: device jobs racing with CPU barriers lose no device write. Each writer owns a range
// (straddling page boundaries, so writers share lines) and writes generations 1..N; after the
// last barrier memory holds generation N everywhere.
TEST(DeviceCacheTest, ConcurrentWritesAndBarriersLoseNothing) {
  constexpr int kWriters = 3;
  constexpr int kGenerations = 200;
  constexpr uint64_t kRange = kPageSize + 1000;
  TestBuffer buf(kWriters * kRange + kPageSize, CacheMode::kStrict);
  DeviceCache& cache = *buf.cache;
  std::atomic<int> writers_done{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::vector<uint8_t> data(kRange);
      for (int g = 1; g <= kGenerations; ++g) {
        std::fill(data.begin(), data.end(), static_cast<uint8_t>(g));
        cache.DeviceWrite(buf.mem(), w * kRange, kRange, data.data());
        std::vector<uint8_t> back(kRange);
        cache.DeviceRead(buf.mem(), w * kRange, kRange, back.data());
        EXPECT_EQ(back, data) << "writer " << w << " generation " << g;
      }
      writers_done.fetch_add(1);
    });
  }
  threads.emplace_back([&] {
    for (uint64_t i = 0; writers_done.load() < kWriters; ++i) {
      if (i % 2 == 0) {
        cache.Flush(buf.mem(), 0, buf.size());
      } else {
        cache.Invalidate(buf.mem(), (i % 5) * kPageSize / 2, 2 * kPageSize);
      }
    }
  });
  for (auto& t : threads) t.join();
  cache.Invalidate(buf.mem(), 0, buf.size());
  const std::vector<uint8_t> mem = buf.Snapshot();
  for (uint64_t i = 0; i < kWriters * kRange; ++i) {
    ASSERT_EQ(mem[i], kGenerations) << "byte " << i;
  }
  EXPECT_EQ(cache.stats().valid_lines, 0u);
}

}  // namespace
}  // namespace sharegpu
