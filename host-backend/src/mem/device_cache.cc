#include "mem/device_cache.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace sharegpu {
namespace {

// The page-sized pieces of [off, off+len). A plain loop rather than a callback so that clang's
// thread-safety analysis sees the guarded accesses under the caller's lock.
struct PagePieces {
  PagePieces(uint64_t off, uint64_t len) : off(off), len(len) { Set(); }
  bool more() const { return done < len; }
  void Next() {
    done += n;
    Set();
  }
  void Set() {
    const uint64_t pos = off + done;
    page = pos / kPageSize;
    in = pos % kPageSize;
    n = std::min(len - done, kPageSize - in);
  }
  const uint64_t off, len;
  uint64_t done = 0;  // bytes before this piece
  uint64_t page = 0, in = 0, n = 0;
};

// Page indices [first, last] touched by [off, off+len); len > 0. Saturates rather than wraps
// so a barrier over a huge range still covers every cached line.
void PageSpan(uint64_t off, uint64_t len, uint64_t* first, uint64_t* last) {
  *first = off / kPageSize;
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  *last = (len - 1 > max - off ? max : off + len - 1) / kPageSize;
}

void MarkWritten(std::array<uint64_t, kPageSize / 64>& mask, uint64_t in, uint64_t n) {
  for (uint64_t i = in; i < in + n;) {
    if (i % 64 == 0 && in + n - i >= 64) {
      mask[i / 64] = ~uint64_t{0};
      i += 64;
    } else {
      mask[i / 64] |= uint64_t{1} << (i % 64);
      ++i;
    }
  }
}

bool IsWritten(const std::array<uint64_t, kPageSize / 64>& mask, uint64_t i) {
  return (mask[i / 64] >> (i % 64)) & 1;
}

// The repeated little-endian pattern, `phase` = absolute offset of dst[0] modulo 4.
void FillPattern(uint8_t* dst, uint64_t n, uint32_t pattern, uint64_t phase) {
  const unsigned shift = static_cast<unsigned>(phase % 4) * 8;
  const uint32_t p = shift == 0 ? pattern : (pattern >> shift) | (pattern << (32 - shift));
  const uint64_t word = (uint64_t{p} << 32) | p;
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) std::memcpy(dst + i, &word, 8);
  for (; i < n; ++i) dst[i] = static_cast<uint8_t>(p >> ((i % 4) * 8));
}

}  // namespace

std::unique_ptr<BufferCache> MakeCache(const CacheFactory& factory, CacheMode mode) {
  if (factory) return factory(mode);
  return std::make_unique<DeviceCache>(mode);
}

DeviceCache::Line& DeviceCache::FillLine(const uint8_t* mem, uint64_t page, bool fill) {
  auto [it, inserted] = lines_.try_emplace(page);
  Line& line = it->second;
  if (inserted) {
    line.data = std::make_unique_for_overwrite<uint8_t[]>(kPageSize);
    if (fill) std::memcpy(line.data.get(), mem + page * kPageSize, kPageSize);
  }
  return line;
}

void DeviceCache::WriteBack(uint8_t* mem, uint64_t page, Line& line) {
  if (!line.dirty) return;
  uint8_t* dst = mem + page * kPageSize;
  const uint8_t* src = line.data.get();
  // Only the written runs: the other bytes of the page may hold newer CPU data.
  uint64_t i = 0;
  while (i < kPageSize) {
    if (!IsWritten(line.written, i)) {
      i = (i % 64 == 0 && line.written[i / 64] == 0) ? i + 64 : i + 1;
      continue;
    }
    const uint64_t start = i;
    while (i < kPageSize && IsWritten(line.written, i)) {
      i = (i % 64 == 0 && line.written[i / 64] == ~uint64_t{0}) ? i + 64 : i + 1;
    }
    std::memcpy(dst + start, src + start, i - start);
  }
  line.written.fill(0);
  line.dirty = false;
  ++stats_.lines_written_back;
}

void DeviceCache::DeviceRead(const uint8_t* mem, uint64_t off, uint64_t len, uint8_t* out) {
  if (mode() == CacheMode::kCoherent) {
    std::memmove(out, mem + off, len);
    return;
  }
  std::lock_guard lock(mu_);
  for (PagePieces p(off, len); p.more(); p.Next()) {
    // Read-allocate: the line stays, so later CPU writes stay invisible until Invalidate().
    if (lines_.count(p.page) != 0) {
      ++stats_.read_hits;
    } else {
      ++stats_.read_misses;
    }
    std::memcpy(out + p.done, FillLine(mem, p.page).data.get() + p.in, p.n);
  }
}

void DeviceCache::DeviceWrite(uint8_t* mem, uint64_t off, uint64_t len, const uint8_t* in) {
  if (mode() == CacheMode::kCoherent) {
    std::memmove(mem + off, in, len);
    return;
  }
  std::lock_guard lock(mu_);
  for (PagePieces p(off, len); p.more(); p.Next()) {
    Line& line = FillLine(mem, p.page, /*fill=*/p.n != kPageSize);
    std::memcpy(line.data.get() + p.in, in + p.done, p.n);
    MarkWritten(line.written, p.in, p.n);
    line.dirty = true;
  }
}

void DeviceCache::DeviceFill(uint8_t* mem, uint64_t off, uint64_t len, uint32_t pattern) {
  if (mode() == CacheMode::kCoherent) {
    FillPattern(mem + off, len, pattern, off);
    return;
  }
  std::lock_guard lock(mu_);
  for (PagePieces p(off, len); p.more(); p.Next()) {
    Line& line = FillLine(mem, p.page, /*fill=*/p.n != kPageSize);
    FillPattern(line.data.get() + p.in, p.n, pattern, off + p.done);
    MarkWritten(line.written, p.in, p.n);
    line.dirty = true;
  }
}

void DeviceCache::Flush(uint8_t* mem, uint64_t off, uint64_t len) {
  std::lock_guard lock(mu_);
  ++stats_.flushes;
  if (len == 0) return;
  uint64_t first, last;
  PageSpan(off, len, &first, &last);
  for (auto it = lines_.lower_bound(first); it != lines_.end() && it->first <= last; ++it) {
    WriteBack(mem, it->first, it->second);
  }
}

void DeviceCache::Invalidate(uint8_t* mem, uint64_t off, uint64_t len) {
  std::lock_guard lock(mu_);
  ++stats_.invalidates;
  if (len == 0) return;
  uint64_t first, last;
  PageSpan(off, len, &first, &last);
  auto it = lines_.lower_bound(first);
  while (it != lines_.end() && it->first <= last) {
    WriteBack(mem, it->first, it->second);  // dropping a dirty line would lose device data
    it = lines_.erase(it);
  }
}

void DeviceCache::WritebackAndDropAll(uint8_t* mem) {
  std::lock_guard lock(mu_);
  for (auto& [page, line] : lines_) WriteBack(mem, page, line);
  lines_.clear();
}

DeviceCacheStats DeviceCache::stats() const {
  std::lock_guard lock(mu_);
  DeviceCacheStats s = stats_;
  s.valid_lines = lines_.size();
  s.dirty_lines = 0;
  for (const auto& [page, line] : lines_) s.dirty_lines += line.dirty ? 1 : 0;
  return s;
}

bool DeviceCache::HasDirtyLines() const {
  std::lock_guard lock(mu_);
  for (const auto& [page, line] : lines_) {
    if (line.dirty) return true;
  }
  return false;
}

}  // namespace sharegpu
