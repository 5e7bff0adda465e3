#include "mem/copy_engine.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include "mem/memfd.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace sharegpu {
namespace {

constexpr uint32_t kCrc32cPoly = 0x82f63b78;  // Castagnoli, reflected

// ---- Portable CRC-32C: slicing-by-8 ----

using SliceTables = std::array<std::array<uint32_t, 256>, 8>;

constexpr SliceTables MakeSliceTables() {
  SliceTables t{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kCrc32cPoly : c >> 1;
    t[0][n] = c;
  }
  for (uint32_t n = 0; n < 256; ++n) {
    for (int k = 1; k < 8; ++k) t[k][n] = (t[k - 1][n] >> 8) ^ t[0][t[k - 1][n] & 0xff];
  }
  return t;
}

constexpr SliceTables kSlice = MakeSliceTables();

uint64_t LoadLe64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // unaligned-safe; the backend only targets little-endian hosts
  return v;
}

uint32_t Crc32cSliceBy8(uint32_t crc, const uint8_t* p, uint64_t len) {
  for (; len > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --len) {
    crc = (crc >> 8) ^ kSlice[0][(crc ^ *p++) & 0xff];
  }
  for (; len >= 8; len -= 8, p += 8) {
    const uint64_t v = LoadLe64(p) ^ crc;
    crc = kSlice[7][v & 0xff] ^ kSlice[6][(v >> 8) & 0xff] ^ kSlice[5][(v >> 16) & 0xff] ^
          kSlice[4][(v >> 24) & 0xff] ^ kSlice[3][(v >> 32) & 0xff] ^ kSlice[2][(v >> 40) & 0xff] ^
          kSlice[1][(v >> 48) & 0xff] ^ kSlice[0][v >> 56];
  }
  for (; len > 0; --len) crc = (crc >> 8) ^ kSlice[0][(crc ^ *p++) & 0xff];
  return crc;
}

#if defined(__x86_64__)
// ---- SSE4.2 CRC-32C: three independent streams hide the crc32 instruction's 3-cycle latency;
// their results are combined by "appending zeros" through precomputed GF(2) operators (Mark
// Adler's crc32c.c scheme). ----

constexpr uint64_t kLongBlock = 8192;
constexpr uint64_t kShortBlock = 256;

using Gf2Matrix = std::array<uint32_t, 32>;
using ShiftTables = std::array<std::array<uint32_t, 256>, 4>;

constexpr uint32_t Gf2Times(const Gf2Matrix& mat, uint32_t vec) {
  uint32_t sum = 0;
  for (int i = 0; vec != 0; ++i, vec >>= 1) {
    if (vec & 1) sum ^= mat[i];
  }
  return sum;
}

constexpr Gf2Matrix Gf2Square(const Gf2Matrix& mat) {
  Gf2Matrix sq{};
  for (int n = 0; n < 32; ++n) sq[n] = Gf2Times(mat, mat[n]);
  return sq;
}

// The operator that feeds `len` zero bytes through the CRC register.
constexpr Gf2Matrix ZerosOperator(uint64_t len) {
  Gf2Matrix op{};  // one zero bit
  op[0] = kCrc32cPoly;
  for (int n = 1; n < 32; ++n) op[n] = uint32_t{1} << (n - 1);
  for (int i = 0; i < 3; ++i) op = Gf2Square(op);  // eight zero bits: one byte
  Gf2Matrix result{};
  for (int n = 0; n < 32; ++n) result[n] = uint32_t{1} << n;  // identity
  bool first = true;
  for (; len != 0; len >>= 1, op = Gf2Square(op)) {
    if ((len & 1) == 0) continue;
    if (first) {
      result = op;
      first = false;
    } else {
      Gf2Matrix combined{};
      for (int n = 0; n < 32; ++n) combined[n] = Gf2Times(op, result[n]);
      result = combined;
    }
  }
  return result;
}

constexpr ShiftTables MakeShiftTables(uint64_t len) {
  const Gf2Matrix op = ZerosOperator(len);
  ShiftTables t{};
  for (uint32_t n = 0; n < 256; ++n) {
    for (int k = 0; k < 4; ++k) t[k][n] = Gf2Times(op, n << (8 * k));
  }
  return t;
}

constexpr ShiftTables kShiftLong = MakeShiftTables(kLongBlock);
constexpr ShiftTables kShiftShort = MakeShiftTables(kShortBlock);

uint32_t Shift(const ShiftTables& t, uint32_t crc) {
  return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
}

template <uint64_t kBlock>
__attribute__((target("sse4.2"))) inline void Crc3Way(uint64_t& crc0, const uint8_t*& p,
                                                      uint64_t& len, const ShiftTables& t) {
  while (len >= 3 * kBlock) {
    uint64_t crc1 = 0, crc2 = 0;
    const uint8_t* end = p + kBlock;
    do {
      crc0 = _mm_crc32_u64(crc0, LoadLe64(p));
      crc1 = _mm_crc32_u64(crc1, LoadLe64(p + kBlock));
      crc2 = _mm_crc32_u64(crc2, LoadLe64(p + 2 * kBlock));
      p += 8;
    } while (p < end);
    crc0 = Shift(t, static_cast<uint32_t>(crc0)) ^ crc1;
    crc0 = Shift(t, static_cast<uint32_t>(crc0)) ^ crc2;
    p += 2 * kBlock;
    len -= 3 * kBlock;
  }
}

__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t crc, const uint8_t* p,
                                                       uint64_t len) {
  uint64_t c = crc;
  for (; len > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --len) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  }
  Crc3Way<kLongBlock>(c, p, len, kShiftLong);
  Crc3Way<kShortBlock>(c, p, len, kShiftShort);
  for (; len >= 8; len -= 8, p += 8) c = _mm_crc32_u64(c, LoadLe64(p));
  for (; len > 0; --len) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return static_cast<uint32_t>(c);
}

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}
#endif  // __x86_64__

bool IsCoherent(const DeviceView& v) {
  return v.cache->mode() == CacheMode::kCoherent;
}

// The model cache of a view; nullptr without memory or with another engine's cache.
DeviceCache* ModelOf(const DeviceView& v) {
  return v.mem ? dynamic_cast<DeviceCache*>(v.cache) : nullptr;
}

// Bounce-buffer size for jobs that go through the strict cache model.
constexpr uint64_t kChunk = 64 * 1024;

}  // namespace

uint32_t Crc32cPortable(uint32_t seed, const uint8_t* data, uint64_t len) {
  return ~Crc32cSliceBy8(~seed, data, len);
}

uint32_t Crc32c(uint32_t seed, const uint8_t* data, uint64_t len) {
#if defined(__x86_64__)
  if (HaveSse42()) return ~Crc32cSse42(~seed, data, len);
#endif
  return Crc32cPortable(seed, data, len);
}

Status CopyEngine::Copy(const DeviceView& src, uint64_t src_off, const DeviceView& dst,
                        uint64_t dst_off, uint64_t len) {
  if (len == 0) return -EINVAL;
  DeviceCache* src_cache = ModelOf(src);
  DeviceCache* dst_cache = ModelOf(dst);
  if (!src_cache || !dst_cache) return -EINVAL;
  if (!RangeFits(src_off, len, src.size) || !RangeFits(dst_off, len, dst.size)) return -ERANGE;

  if (IsCoherent(src) && IsCoherent(dst)) {
    std::memmove(dst.mem + dst_off, src.mem + src_off, len);
    return kOk;
  }
  // Through a bounce buffer, chunk by chunk; when the destination starts inside the source,
  // back to front, so that no chunk overwrites source bytes not yet read (memmove semantics).
  const auto s = reinterpret_cast<uintptr_t>(src.mem + src_off);
  const auto d = reinterpret_cast<uintptr_t>(dst.mem + dst_off);
  const bool backwards = d > s && d - s < len;
  const uint64_t chunk = std::min(len, kChunk);
  auto buf = std::make_unique_for_overwrite<uint8_t[]>(chunk);
  for (uint64_t done = 0; done < len;) {
    const uint64_t n = std::min(chunk, len - done);
    const uint64_t pos = backwards ? len - done - n : done;
    src_cache->DeviceRead(src.mem, src_off + pos, n, buf.get());
    dst_cache->DeviceWrite(dst.mem, dst_off + pos, n, buf.get());
    done += n;
  }
  return kOk;
}

Status CopyEngine::Fill(const DeviceView& dst, uint64_t off, uint64_t len, uint32_t pattern) {
  if (len == 0) return -EINVAL;
  DeviceCache* cache = ModelOf(dst);
  if (!cache) return -EINVAL;
  if (off % 4 != 0 || len % 4 != 0) return -EINVAL;
  if (!RangeFits(off, len, dst.size)) return -ERANGE;
  cache->DeviceFill(dst.mem, off, len, pattern);
  return kOk;
}

Result<uint32_t> CopyEngine::Checksum(const DeviceView& src, uint64_t off, uint64_t len) {
  if (len == 0) return Result<uint32_t>::Error(-EINVAL);
  DeviceCache* cache = ModelOf(src);
  if (!cache) return Result<uint32_t>::Error(-EINVAL);
  if (!RangeFits(off, len, src.size)) return Result<uint32_t>::Error(-ERANGE);
  if (IsCoherent(src)) return Crc32c(0, src.mem + off, len);
  const uint64_t chunk = std::min(len, kChunk);
  auto buf = std::make_unique_for_overwrite<uint8_t[]>(chunk);
  uint32_t crc = 0;
  for (uint64_t done = 0; done < len;) {
    const uint64_t n = std::min(chunk, len - done);
    cache->DeviceRead(src.mem, off + done, n, buf.get());
    crc = Crc32c(crc, buf.get(), n);
    done += n;
  }
  return crc;
}

}  // namespace sharegpu
