#include "mem/arena.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <iterator>

#include "common/log.h"

namespace sharegpu {

Result<std::unique_ptr<Arena>> Arena::Create(const std::string& name, uint64_t size) {
  auto memfd = Memfd::Create(name, size);
  if (!memfd) return Result<std::unique_ptr<Arena>>::Error(memfd.status());
  return std::unique_ptr<Arena>(new Arena(std::move(memfd).value()));
}

Arena::Arena(std::unique_ptr<Memfd> memfd) : memfd_(std::move(memfd)) {
  std::lock_guard lock(mu_);
  free_.emplace(0, memfd_->size());
}

Result<ArenaRange> Arena::Allocate(uint64_t size) {
  if (size == 0) return Result<ArenaRange>::Error(-EINVAL);
  // The arena size is page-aligned, so anything not larger rounds up without overflow.
  if (size > memfd_->size()) return Result<ArenaRange>::Error(-E2BIG);
  const uint64_t need = PageAlignUp(size);

  std::lock_guard lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    const uint64_t offset = it->first;
    const uint64_t rest = it->second - need;
    free_.erase(it);
    if (rest > 0) free_.emplace(offset + need, rest);
    allocated_.emplace(offset, need);
    used_ += need;
    return ArenaRange{offset, need};
  }
  return Result<ArenaRange>::Error(-ENOSPC);
}

void Arena::Free(ArenaRange range) {
  std::lock_guard lock(mu_);
  auto it = allocated_.find(range.offset);
  if (it == allocated_.end() || it->second != range.size) {
    // A double free or a forged range: merging it into the free list would hand the same
    // pages out twice, so it is refused.
    Logf(LogLevel::kError, "arena: free of unknown range [0x%llx, +0x%llx) ignored",
         static_cast<unsigned long long>(range.offset),
         static_cast<unsigned long long>(range.size));
    return;
  }
  allocated_.erase(it);
  used_ -= range.size;

  uint64_t offset = range.offset;
  uint64_t size = range.size;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && next->first == offset + size) {
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += size;
      return;
    }
  }
  free_.emplace_hint(next, offset, size);
}

uint64_t Arena::used() const {
  std::lock_guard lock(mu_);
  return used_;
}

uint64_t Arena::largest_free() const {
  std::lock_guard lock(mu_);
  uint64_t largest = 0;
  for (const auto& [offset, size] : free_) largest = std::max(largest, size);
  return largest;
}

const char* PlacementName(Placement placement) {
  switch (placement) {
    case Placement::kDevice:
      return "DEVICE";
    case Placement::kSystem:
      return "SYSTEM";
  }
  return "?";
}

Result<std::shared_ptr<Storage>> Storage::CreateDevice(Arena& arena, uint64_t size) {
  auto range = arena.Allocate(size);
  if (!range) return Result<std::shared_ptr<Storage>>::Error(range.status());
  std::shared_ptr<Storage> s(new Storage(Placement::kDevice, range->size,
                                         arena.data() + range->offset, range->offset,
                                         arena.memfd().fd()));
  s->arena_ = &arena;
  return s;
}

Result<std::shared_ptr<Storage>> Storage::CreatePooled(SystemPool& pool, uint64_t size) {
  auto range = pool.Allocate(size);
  if (!range) return Result<std::shared_ptr<Storage>>::Error(range.status());
  std::shared_ptr<Storage> s(
      new Storage(Placement::kSystem, range->size, range->data, range->offset, pool.fd()));
  s->pool_ = &pool;
  return s;
}

Result<std::shared_ptr<Storage>> Storage::CreateSystem(const std::string& name, uint64_t size) {
  auto memfd = Memfd::Create(name, size);
  if (!memfd) return Result<std::shared_ptr<Storage>>::Error(memfd.status());
  std::unique_ptr<Memfd> own = std::move(memfd).value();
  std::shared_ptr<Storage> s(
      new Storage(Placement::kSystem, own->size(), own->data(), 0, own->fd()));
  s->own_ = std::move(own);
  return s;
}

Result<std::shared_ptr<Storage>> Storage::CreateForeign(OwnedFd fd, uint64_t size,
                                                        bool writable) {
  using R = Result<std::shared_ptr<Storage>>;
  if (!fd.valid()) return R::Error(-EBADF);
  if (size == 0 || !IsPageAligned(size)) return R::Error(-EINVAL);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return R::Error(-errno);
  // Only a regular file has pages that stay put (no device, pipe or socket semantics).
  if (!S_ISREG(st.st_mode)) return R::Error(-EBADF);
  // Never past the end: touching such a page would SIGBUS.
  if (st.st_size < 0 || size > static_cast<uint64_t>(st.st_size)) return R::Error(-EINVAL);
  // Owned before mapping, so that nothing below can leak the mapping or the descriptor.
  auto pages = std::make_unique<ForeignPages>();
  pages->fd = std::move(fd);
  pages->writable = writable;
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED, pages->fd.get(), 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    Logf(LogLevel::kError, "mmap of a foreign file (%llu bytes, %s): errno %d",
         static_cast<unsigned long long>(size), writable ? "read-write" : "read-only", err);
    // EPERM: write-sealed; EACCES: not open for writing (or reading): both the caller's rights
    return R::Error(err == EPERM ? -EACCES : -err);
  }
  pages->data = static_cast<uint8_t*>(p);
  pages->size = size;
  std::shared_ptr<Storage> s(
      new Storage(Placement::kSystem, size, pages->data, 0, pages->fd.get()));
  s->foreign_ = std::move(pages);
  return s;
}

Storage::ForeignPages::~ForeignPages() {
  if (data != nullptr) ::munmap(data, size);
}

Storage::Storage(Placement placement, uint64_t size, uint8_t* data, uint64_t offset, int fd)
    : placement_(placement), size_(size), data_(data), offset_(offset), fd_(fd) {}

Storage::~Storage() {
  if (arena_ != nullptr) arena_->Free(ArenaRange{offset_, size_});
  if (pool_ != nullptr) pool_->Free(PoolRange{offset_, size_, data_});
}

}  // namespace sharegpu
