// The device cache of one buffer object on one device, behind every cache barrier of the
// backend (rule S4: the barriers are invalidate-before-use and flush-after, in both
// directions). BufferCache is the interface the core's barriers use; which implementation a
// buffer gets is its device's engine's choice (Engine::cache_factory(): the model below for
// the cpu engine, the buffer's GL resource for the virgl engine, engine/virgl_engine.h).
//
// DeviceCache is the explicit device-cache model the cpu engine runs jobs through:
// kCoherent: device reads and writes go straight to memory; Flush/Invalidate cost nothing.
// kStrict:   the device has a private, page-granular write-back cache per buffer object.
//   - a device write lands in the cache line (filled from memory first) and marks it dirty;
//     memory - and so the CPU - sees it only after Flush();
//   - a device read is served from a cached line when there is one, so after the CPU wrote
//     memory the device keeps seeing the old bytes until Invalidate();
//   - Invalidate() writes dirty lines back before dropping them: device-written data is only
//     ever delayed, never lost.
//   - write-back stores only the bytes the device wrote (a per-byte dirty mask, like the byte
//     enables of a real cache), so CPU writes elsewhere in the same page are not clobbered and
//     nothing is ever written outside the ranges the device wrote.
// `mem` must be backed in whole pages (Storage always is): a line fill reads its whole page.
// Thread-safe: device jobs and CPU barriers may race.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "mem/memfd.h"

namespace sharegpu {

enum class CacheMode : uint8_t { kCoherent = 0, kStrict = 1 };

struct DeviceCacheStats {
  uint64_t valid_lines = 0;
  uint64_t dirty_lines = 0;
  uint64_t flushes = 0;      // Flush() calls
  uint64_t invalidates = 0;  // Invalidate() calls
  uint64_t lines_written_back = 0;
  uint64_t read_hits = 0;
  uint64_t read_misses = 0;
};

// A device's cache of one buffer. `mem` is the buffer's memory as the caller reaches it now
// (the storage's pages, or an importer's mapping of them); ranges are the caller's to
// bounds-check. Every implementation writes back only bytes the device wrote.
class BufferCache {
 public:
  virtual ~BufferCache() = default;
  BufferCache(const BufferCache&) = delete;
  BufferCache& operator=(const BufferCache&) = delete;

  CacheMode mode() const { return mode_; }

  // Write back what the device wrote in [off, off+len) (whole lines: pages); it stays cached.
  virtual void Flush(uint8_t* mem, uint64_t off, uint64_t len) = 0;
  // Write back what the device wrote in the range's lines, then drop them: the device's next
  // read of them comes from memory.
  virtual void Invalidate(uint8_t* mem, uint64_t off, uint64_t len) = 0;
  // Whole-buffer clean+invalidate: before a move copies memory (afterwards `mem` is no longer
  // the buffer's), and on reset. Nothing cached for `mem` survives it.
  virtual void WritebackAndDropAll(uint8_t* mem) = 0;

  // valid_lines / dirty_lines describe the cache now (lines: pages); the rest count since
  // construction. WritebackAndDropAll() counts as neither a flush nor an invalidate.
  virtual DeviceCacheStats stats() const = 0;
  virtual bool HasDirtyLines() const = 0;

 protected:
  explicit BufferCache(CacheMode mode) : mode_(mode) {}

 private:
  const CacheMode mode_;
};

// Makes the cache of one buffer on a device; empty: the model (DeviceCache). Self-contained:
// it may be called after the engine that handed it out is gone (a buffer outlives its device
// while another device imports it).
using CacheFactory = std::function<std::unique_ptr<BufferCache>(CacheMode)>;
std::unique_ptr<BufferCache> MakeCache(const CacheFactory& factory, CacheMode mode);

// The model (see the top of this file).
class DeviceCache final : public BufferCache {
 public:
  explicit DeviceCache(CacheMode mode) : BufferCache(mode) {}

  // Device-side accesses of `len` bytes at `off` of the buffer whose memory is `mem`
  // (mem_size bytes). Ranges are the caller's to bounds-check.
  void DeviceRead(const uint8_t* mem, uint64_t off, uint64_t len, uint8_t* out);
  void DeviceWrite(uint8_t* mem, uint64_t off, uint64_t len, const uint8_t* in);
  void DeviceFill(uint8_t* mem, uint64_t off, uint64_t len, uint32_t pattern);

  // Write dirty lines of [off, off+len) back to mem; they stay valid (clean).
  void Flush(uint8_t* mem, uint64_t off, uint64_t len) override;
  // Write back dirty lines of the range, then drop every line of it.
  void Invalidate(uint8_t* mem, uint64_t off, uint64_t len) override;
  void WritebackAndDropAll(uint8_t* mem) override;

  DeviceCacheStats stats() const override;
  bool HasDirtyLines() const override;

 private:
  struct Line {
    bool dirty = false;
    std::unique_ptr<uint8_t[]> data;                 // kPageSize bytes
    std::array<uint64_t, kPageSize / 64> written{};  // bit i: byte i is device-written
  };
  // The line of `page`, filled from memory when it was not cached (`fill` false: the caller
  // overwrites the whole page, so reading memory would be wasted).
  Line& FillLine(const uint8_t* mem, uint64_t page, bool fill = true) SGB_REQUIRES(mu_);
  void WriteBack(uint8_t* mem, uint64_t page, Line& line) SGB_REQUIRES(mu_);

  mutable std::mutex mu_;
  std::map<uint64_t, Line> lines_ SGB_GUARDED_BY(mu_);  // page index -> line
  DeviceCacheStats stats_ SGB_GUARDED_BY(mu_);
};

}  // namespace sharegpu
