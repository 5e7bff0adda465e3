#include "mem/copy_engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "mem_test_util.h"

namespace sharegpu {
namespace {

using testing::RandomBytes;
using testing::TestBuffer;

const uint8_t* Bytes(const char* s) {
  return reinterpret_cast<const uint8_t*>(s);
}

// Makes the device's writes visible to the CPU (a no-op in coherent mode).
void Sync(const TestBuffer& b) {
  b.cache->WritebackAndDropAll(b.mem());
}

// The correctness rules hold in both cache modes: each is a function run once per mode.
#define SGPU_TEST_BOTH_MODES(name)       \
  TEST(CopyEngineTest, name##Coherent) { \
    name(CacheMode::kCoherent);          \
  }                                      \
  TEST(CopyEngineTest, name##Strict) {   \
    name(CacheMode::kStrict);            \
  }

// Rule: a copy moves exactly [src_off, +len) to [dst_off, +len), at unaligned offsets and
// across pages, and leaves every other destination byte alone.
void CopyUnalignedMultiPage(CacheMode mode) {
  TestBuffer src(8 * kPageSize, mode);
  TestBuffer dst(8 * kPageSize, mode);
  src.FillRandom(1);
  dst.FillRandom(2);
  const std::vector<uint8_t> s = src.Snapshot();
  std::vector<uint8_t> expected = dst.Snapshot();
  struct Case {
    uint64_t src_off, dst_off, len;
  };
  for (const Case& c : {Case{13, kPageSize + 5, 3 * kPageSize + 77}, Case{0, 0, 1},
                        Case{kPageSize - 1, 7 * kPageSize + 1, 2}, Case{5, 3, kPageSize}}) {
    ASSERT_EQ(CopyEngine::Copy(src.view(), c.src_off, dst.view(), c.dst_off, c.len), kOk);
    std::memcpy(expected.data() + c.dst_off, s.data() + c.src_off, c.len);
  }
  Sync(dst);
  EXPECT_EQ(dst.Snapshot(), expected);
  Sync(src);
  EXPECT_EQ(src.Snapshot(), s);
}
SGPU_TEST_BOTH_MODES(CopyUnalignedMultiPage)

// Rule: overlapping copies within one object behave like memmove, in both directions, also
// when the range spans several of the strict path's bounce chunks.
void OverlappingCopyIsMemmove(CacheMode mode) {
  struct Case {
    uint64_t src_off, dst_off, len;
  };
  for (const Case& c : {Case{1000, 1000 + 70001, 150000}, Case{1000 + 70001, 1000, 150000},
                        Case{10, 11, 5000}, Case{11, 10, 5000}, Case{64, 64, 9000}}) {
    TestBuffer buf(64 * kPageSize, mode);
    buf.FillRandom(3);
    std::vector<uint8_t> expected = buf.Snapshot();
    ASSERT_EQ(CopyEngine::Copy(buf.view(), c.src_off, buf.view(), c.dst_off, c.len), kOk);
    std::memmove(expected.data() + c.dst_off, expected.data() + c.src_off, c.len);
    Sync(buf);
    EXPECT_EQ(buf.Snapshot(), expected) << c.src_off << " -> " << c.dst_off;
  }
}
SGPU_TEST_BOTH_MODES(OverlappingCopyIsMemmove)

// Rule: Fill writes the repeated little-endian pattern over exactly [off, +len).
void FillPattern(CacheMode mode) {
  TestBuffer buf(4 * kPageSize, mode);
  buf.FillRandom(4);
  std::vector<uint8_t> expected = buf.Snapshot();
  const uint32_t pattern = 0x04030201;
  const uint64_t off = kPageSize - 8, len = 2 * kPageSize + 12;
  ASSERT_EQ(CopyEngine::Fill(buf.view(), off, len, pattern), kOk);
  for (uint64_t i = 0; i < len; i += 4) std::memcpy(expected.data() + off + i, &pattern, 4);
  Sync(buf);
  EXPECT_EQ(buf.Snapshot(), expected);
  EXPECT_EQ(buf.mem()[off], 0x01);
  EXPECT_EQ(buf.mem()[off + 3], 0x04);
}
SGPU_TEST_BOTH_MODES(FillPattern)

// Rule: Checksum is the CRC-32C of the device's view of the range.
void ChecksumOfRange(CacheMode mode) {
  TestBuffer buf(40 * kPageSize, mode);
  buf.FillRandom(5);
  for (uint64_t off : {uint64_t{0}, uint64_t{3}, kPageSize + 1}) {
    for (uint64_t len : {uint64_t{1}, uint64_t{9}, kPageSize, 30 * kPageSize + 7}) {
      auto crc = CopyEngine::Checksum(buf.view(), off, len);
      ASSERT_TRUE(crc.ok());
      EXPECT_EQ(*crc, Crc32cPortable(0, buf.mem() + off, len)) << off << "+" << len;
    }
  }
  const std::string digits = "123456789";
  std::memcpy(buf.mem() + 77, digits.data(), digits.size());
  buf.cache->Invalidate(buf.mem(), 0, buf.size());
  auto crc = CopyEngine::Checksum(buf.view(), 77, digits.size());
  ASSERT_TRUE(crc.ok());
  EXPECT_EQ(*crc, 0xE3069283u);
}
SGPU_TEST_BOTH_MODES(ChecksumOfRange)

// Rule: bad ranges are rejected before any byte moves: -EINVAL for len 0, a misaligned fill or
// a view without memory/cache, -ERANGE for ranges outside the object (overflow-safe).
void RejectedCallsChangeNothing(CacheMode mode) {
  TestBuffer a(2 * kPageSize, mode);
  TestBuffer b(2 * kPageSize, mode);
  a.FillRandom(6);
  b.FillRandom(7);
  const std::vector<uint8_t> a0 = a.Snapshot(), b0 = b.Snapshot();
  const uint64_t size = a.size();
  const uint64_t kMax = UINT64_MAX;

  EXPECT_EQ(CopyEngine::Copy(a.view(), 0, b.view(), 0, 0), -EINVAL);
  EXPECT_EQ(CopyEngine::Copy(a.view(), kMax - 1, b.view(), 0, 4), -ERANGE);
  EXPECT_EQ(CopyEngine::Copy(a.view(), 0, b.view(), kMax - 1, 4), -ERANGE);
  EXPECT_EQ(CopyEngine::Copy(a.view(), 8, b.view(), 0, kMax - 7), -ERANGE);
  EXPECT_EQ(CopyEngine::Copy(a.view(), size, b.view(), 0, 1), -ERANGE);
  EXPECT_EQ(CopyEngine::Copy(a.view(), 0, b.view(), 1, size), -ERANGE);
  EXPECT_EQ(CopyEngine::Copy(a.view(), 0, DeviceView{b.mem(), b.size(), nullptr}, 0, 1), -EINVAL);
  EXPECT_EQ(CopyEngine::Copy(DeviceView{nullptr, size, a.cache.get()}, 0, b.view(), 0, 1), -EINVAL);

  EXPECT_EQ(CopyEngine::Fill(b.view(), 0, 0, 0xffffffff), -EINVAL);
  EXPECT_EQ(CopyEngine::Fill(b.view(), 2, 8, 0xffffffff), -EINVAL);
  EXPECT_EQ(CopyEngine::Fill(b.view(), 4, 6, 0xffffffff), -EINVAL);
  EXPECT_EQ(CopyEngine::Fill(b.view(), kMax - 3, 8, 0xffffffff), -ERANGE);
  EXPECT_EQ(CopyEngine::Fill(b.view(), 4, kMax - 3, 0xffffffff), -ERANGE);
  EXPECT_EQ(CopyEngine::Fill(b.view(), size, 4, 0xffffffff), -ERANGE);
  EXPECT_EQ(CopyEngine::Fill(b.view(), size - 4, 8, 0xffffffff), -ERANGE);

  EXPECT_EQ(CopyEngine::Checksum(a.view(), 0, 0).status(), -EINVAL);
  EXPECT_EQ(CopyEngine::Checksum(a.view(), kMax - 1, 4).status(), -ERANGE);
  EXPECT_EQ(CopyEngine::Checksum(a.view(), 1, size).status(), -ERANGE);

  // Nothing reached memory or even the caches.
  EXPECT_EQ(a.cache->stats().valid_lines, 0u);
  EXPECT_EQ(b.cache->stats().valid_lines, 0u);
  Sync(a);
  Sync(b);
  EXPECT_EQ(a.Snapshot(), a0);
  EXPECT_EQ(b.Snapshot(), b0);

  // The exact end of the object is still in range.
  EXPECT_EQ(CopyEngine::Copy(a.view(), size - 3, b.view(), size - 3, 3), kOk);
  EXPECT_EQ(CopyEngine::Fill(b.view(), size - 4, 4, 0), kOk);
  EXPECT_TRUE(CopyEngine::Checksum(a.view(), size - 1, 1).ok());
}
SGPU_TEST_BOTH_MODES(RejectedCallsChangeNothing)

// Rule: a strict-mode copy obeys the destination's cache: the CPU sees the result only after
// a flush, while device jobs (checksum) already see it.
TEST(CopyEngineTest, StrictCopyInvisibleUntilFlush) {
  TestBuffer src(4 * kPageSize, CacheMode::kStrict);
  TestBuffer dst(4 * kPageSize, CacheMode::kStrict);
  src.FillRandom(8);
  const std::vector<uint8_t> s = src.Snapshot();
  const std::vector<uint8_t> d0 = dst.Snapshot();
  ASSERT_EQ(CopyEngine::Copy(src.view(), 0, dst.view(), 0, src.size()), kOk);
  EXPECT_EQ(dst.Snapshot(), d0) << "strict copy reached memory without a flush";
  auto crc = CopyEngine::Checksum(dst.view(), 0, dst.size());
  ASSERT_TRUE(crc.ok());
  EXPECT_EQ(*crc, Crc32c(0, s.data(), s.size()));
  dst.cache->Flush(dst.mem(), 0, dst.size());
  EXPECT_EQ(dst.Snapshot(), s);
}

// Rule: a strict-mode copy reads the source through its cache: stale after a CPU write until
// the source is invalidated.
TEST(CopyEngineTest, StrictCopyReadsStaleSourceUntilInvalidate) {
  TestBuffer src(kPageSize, CacheMode::kStrict);
  TestBuffer dst(kPageSize, CacheMode::kCoherent);
  src.FillRandom(9);
  const std::vector<uint8_t> old_src = src.Snapshot();
  ASSERT_EQ(CopyEngine::Copy(src.view(), 0, dst.view(), 0, kPageSize), kOk);
  EXPECT_EQ(dst.Snapshot(), old_src);
  std::memset(src.mem(), 0xcd, kPageSize);
  ASSERT_EQ(CopyEngine::Copy(src.view(), 0, dst.view(), 0, kPageSize), kOk);
  EXPECT_EQ(dst.Snapshot(), old_src);
  src.cache->Invalidate(src.mem(), 0, kPageSize);
  ASSERT_EQ(CopyEngine::Copy(src.view(), 0, dst.view(), 0, kPageSize), kOk);
  EXPECT_EQ(dst.Snapshot(), src.Snapshot());
}

// Rule: Crc32c is standard CRC-32C (RFC 3720 B.4 vectors and the "123456789" check value).
TEST(CopyEngineTest, Crc32cKnownVectors) {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<uint8_t>(i);
    dec[i] = static_cast<uint8_t>(31 - i);
  }
  for (auto* crc : {&Crc32c, &Crc32cPortable}) {
    EXPECT_EQ(crc(0, Bytes("123456789"), 9), 0xE3069283u);
    EXPECT_EQ(crc(0, zeros.data(), 32), 0x8A9136AAu);
    EXPECT_EQ(crc(0, ones.data(), 32), 0x62A8AB43u);
    EXPECT_EQ(crc(0, inc.data(), 32), 0x46DD794Eu);
    EXPECT_EQ(crc(0, dec.data(), 32), 0x113FDB5Cu);
    EXPECT_EQ(crc(0, nullptr, 0), 0u);
  }
}

// Rule: the seed chains calls, and the fast path equals the portable one for every length and
// alignment, including the long 3-way-interleaved blocks.
TEST(CopyEngineTest, Crc32cChainsAndMatchesPortable) {
  const std::vector<uint8_t> data = RandomBytes(3 * 3 * 8192 + 3 * 256 + 100, 10);
  for (uint64_t align = 0; align < 8; ++align) {
    for (uint64_t len : {uint64_t{0}, uint64_t{1}, uint64_t{7}, uint64_t{8}, uint64_t{255},
                         uint64_t{3 * 256}, uint64_t{3 * 256 + 9}, uint64_t{3 * 8192},
                         uint64_t{3 * 8192 + 3 * 256 + 13}, data.size() - 8}) {
      const uint8_t* p = data.data() + align;
      const uint32_t whole = Crc32c(0, p, len);
      EXPECT_EQ(whole, Crc32cPortable(0, p, len)) << align << "+" << len;
      const uint64_t cut = len / 3;
      EXPECT_EQ(Crc32c(Crc32c(0, p, cut), p + cut, len - cut), whole);
      EXPECT_EQ(Crc32cPortable(Crc32cPortable(0, p, cut), p + cut, len - cut), whole);
    }
  }
}

}  // namespace
}  // namespace sharegpu
