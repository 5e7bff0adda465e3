#include "mem/system_pool.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iterator>

#include "common/log.h"

namespace sharegpu {

Result<std::unique_ptr<SystemPool>> SystemPool::Create(const std::string& name) {
  using R = Result<std::unique_ptr<SystemPool>>;
  OwnedFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) {
    Status err = -errno;
    Logf(LogLevel::kError, "memfd_create(%s): errno %d", name.c_str(), -err);
    return R::Error(err);
  }
  // Growing stays possible; shrinking never (a mapping of a range must not SIGBUS).
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) return R::Error(-errno);
  return std::unique_ptr<SystemPool>(new SystemPool(name, std::move(fd)));
}

SystemPool::~SystemPool() {
  for (const Segment& s : segments_) ::munmap(s.base, s.size);
}

Status SystemPool::GrowLocked(uint64_t need) {
  // Doubling: the new segment is as large as the file so far (64 MiB first, 4 GiB at most
  // unless one allocation needs more).
  uint64_t seg = std::max({need, kFirstSegment, std::min(file_size_, kMaxSegment)});
  if (file_size_ + seg > Memfd::kMaxSize) {
    seg = need;
    if (file_size_ + seg > Memfd::kMaxSize) return -ENOSPC;
  }
  const uint64_t offset = file_size_;
  if (::ftruncate(fd_.get(), static_cast<off_t>(offset + seg)) != 0) return -errno;
  // From here on the file is longer whatever happens (it cannot shrink): a failed mapping
  // leaves a hole nobody allocates from.
  file_size_ = offset + seg;
  void* p = ::mmap(nullptr, seg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_.get(),
                   static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    Status err = -errno;
    Logf(LogLevel::kError, "%s: mmap of %llu bytes at %llu: errno %d", name_.c_str(),
         static_cast<unsigned long long>(seg), static_cast<unsigned long long>(offset), -err);
    return err;
  }
  segments_.push_back(Segment{offset, seg, static_cast<uint8_t*>(p)});
  InsertFreeLocked(offset, seg);
  return kOk;
}

const SystemPool::Segment& SystemPool::SegmentOfLocked(uint64_t offset) const {
  auto it = std::upper_bound(segments_.begin(), segments_.end(), offset,
                             [](uint64_t off, const Segment& s) { return off < s.offset; });
  return *std::prev(it);  // callers pass offsets of allocated ranges: always inside one
}

bool SystemPool::IsSegmentStartLocked(uint64_t offset) const {
  auto it = std::lower_bound(segments_.begin(), segments_.end(), offset,
                             [](const Segment& s, uint64_t off) { return s.offset < off; });
  return it != segments_.end() && it->offset == offset;
}

void SystemPool::EraseFreeLocked(std::map<uint64_t, uint64_t>::iterator it) {
  free_by_size_.erase({it->second, it->first});
  free_.erase(it);
}

void SystemPool::InsertFreeLocked(uint64_t offset, uint64_t size) {
  // Coalesce with neighbours, but never across a segment boundary: the two sides are
  // mapped at unrelated addresses.
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && next->first == offset + size && !IsSegmentStartLocked(next->first)) {
    size += next->second;
    auto after = std::next(next);
    EraseFreeLocked(next);
    next = after;
  }
  if (next != free_.begin() && !IsSegmentStartLocked(offset)) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      size += prev->second;
      EraseFreeLocked(prev);
    }
  }
  free_.emplace(offset, size);
  free_by_size_.emplace(size, offset);
}

Result<PoolRange> SystemPool::Allocate(uint64_t size) {
  using R = Result<PoolRange>;
  if (size == 0) return R::Error(-EINVAL);
  if (size > Memfd::kMaxSize) return R::Error(-E2BIG);
  const uint64_t need = PageAlignUp(size);

  std::lock_guard lock(mu_);
  auto fit = free_by_size_.lower_bound({need, 0});
  if (fit == free_by_size_.end()) {
    // Whatever stops the file from growing (no memory for the mapping, a file-size limit)
    // is the host being out of room for SYSTEM storage: -ENOSPC, which the device reports
    // to the guest as NO_SPACE (the guest's ioctl fails with -ENOSPC).
    if (Status err = GrowLocked(need)) {
      Logf(LogLevel::kWarn, "%s: cannot grow by %llu bytes: errno %d", name_.c_str(),
           static_cast<unsigned long long>(need), -err);
      return R::Error(-ENOSPC);
    }
    fit = free_by_size_.lower_bound({need, 0});
    if (fit == free_by_size_.end()) return R::Error(-ENOSPC);
  }
  const uint64_t offset = fit->second;
  const uint64_t rest = fit->first - need;
  EraseFreeLocked(free_.find(offset));
  if (rest > 0) {
    free_.emplace(offset + need, rest);
    free_by_size_.emplace(rest, offset + need);
  }
  allocated_.emplace(offset, need);
  used_ += need;
  const Segment& seg = SegmentOfLocked(offset);
  return PoolRange{offset, need, seg.base + (offset - seg.offset)};
}

void SystemPool::Free(const PoolRange& range) {
  std::lock_guard lock(mu_);
  auto it = allocated_.find(range.offset);
  if (it == allocated_.end() || it->second != range.size) {
    Logf(LogLevel::kError, "%s: free of unknown range [0x%llx, +0x%llx) ignored", name_.c_str(),
         static_cast<unsigned long long>(range.offset),
         static_cast<unsigned long long>(range.size));
    return;
  }
  allocated_.erase(it);
  used_ -= range.size;
  // The pages go back to the host now, and whoever gets the range next reads zeros.
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(range.offset), static_cast<off_t>(range.size)) != 0) {
    const Segment& seg = SegmentOfLocked(range.offset);
    std::memset(seg.base + (range.offset - seg.offset), 0, range.size);
  }
  InsertFreeLocked(range.offset, range.size);
}

SystemPoolStats SystemPool::stats() const {
  std::lock_guard lock(mu_);
  SystemPoolStats s;
  s.used = used_;
  s.file_size = file_size_;
  s.segments = segments_.size();
  s.free_ranges = free_.size();
  s.allocations = allocated_.size();
  return s;
}

}  // namespace sharegpu
