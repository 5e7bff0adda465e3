// One device's SYSTEM storage: a single sparse memfd, grown as needed, that buffer objects in
// SYSTEM placement get page-aligned ranges of (as DEVICE buffers get ranges of the VRAM
// arena). The number of file descriptors and mappings the process holds therefore does not
// depend on the number of buffers: one descriptor per pool, one mapping per segment.
//
// Growth never moves what is allocated: the file is extended (ftruncate) and the new part is
// mapped as a new segment at its own address, so host pointers of live ranges stay valid; a
// range never crosses a segment. Segments double (64 MiB first), so a pool holding B bytes
// has O(log B) segments. Freed ranges are punched out of the file (FALLOC_FL_PUNCH_HOLE):
// their host memory goes back at once and the next user reads zeros, as from a fresh memfd.
// Best-fit allocation over a size-ordered free set: O(log N) per allocation and free.
// Thread-safe. The file is sealed against shrinking so a mapping (the device's import window
// maps ranges of it by descriptor and offset) can never SIGBUS.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/owned_fd.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "mem/memfd.h"

namespace sharegpu {

struct PoolRange {
  uint64_t offset = 0;  // in the pool's file
  uint64_t size = 0;    // page multiple
  uint8_t* data = nullptr;
};

struct SystemPoolStats {
  uint64_t used = 0;         // bytes in allocated ranges
  uint64_t file_size = 0;    // bytes of file (sparse: only used pages are backed)
  uint64_t segments = 0;     // mappings
  uint64_t free_ranges = 0;  // fragments of the free space
  uint64_t allocations = 0;  // live ranges
};

class SystemPool {
 public:
  static constexpr uint64_t kFirstSegment = uint64_t{64} << 20;
  static constexpr uint64_t kMaxSegment = uint64_t{4} << 30;

  static Result<std::unique_ptr<SystemPool>> Create(const std::string& name);
  ~SystemPool();
  SystemPool(const SystemPool&) = delete;
  SystemPool& operator=(const SystemPool&) = delete;

  // PageAlignUp(size) zeroed bytes; -EINVAL for 0, -E2BIG over Memfd::kMaxSize, -ENOSPC when
  // the file cannot grow or the growth cannot be mapped (logged with the real errno).
  Result<PoolRange> Allocate(uint64_t size);
  // Returns a range from Allocate (its pages are released). Unknown ranges are logged and
  // ignored, as the arena does.
  void Free(const PoolRange& range);

  int fd() const { return fd_.get(); }
  SystemPoolStats stats() const;

 private:
  struct Segment {
    uint64_t offset;
    uint64_t size;
    uint8_t* base;
  };
  SystemPool(std::string name, OwnedFd fd) : name_(std::move(name)), fd_(std::move(fd)) {}
  Status GrowLocked(uint64_t need) SGB_REQUIRES(mu_);
  const Segment& SegmentOfLocked(uint64_t offset) const SGB_REQUIRES(mu_);
  bool IsSegmentStartLocked(uint64_t offset) const SGB_REQUIRES(mu_);
  void InsertFreeLocked(uint64_t offset, uint64_t size) SGB_REQUIRES(mu_);
  void EraseFreeLocked(std::map<uint64_t, uint64_t>::iterator it) SGB_REQUIRES(mu_);

  const std::string name_;
  const OwnedFd fd_;
  mutable std::mutex mu_;
  std::vector<Segment> segments_ SGB_GUARDED_BY(mu_);  // by offset, contiguous in the file
  uint64_t file_size_ SGB_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, uint64_t> free_ SGB_GUARDED_BY(mu_);                 // offset -> size
  std::set<std::pair<uint64_t, uint64_t>> free_by_size_ SGB_GUARDED_BY(mu_);  // (size, offset)
  std::unordered_map<uint64_t, uint64_t> allocated_ SGB_GUARDED_BY(mu_);  // offset -> size
  uint64_t used_ SGB_GUARDED_BY(mu_) = 0;
};

}  // namespace sharegpu
