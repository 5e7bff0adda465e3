#include "mem/arena.h"

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

Storage::Storage(Placement placement, uint64_t size, uint8_t* data, uint64_t offset, int fd)
    : placement_(placement), size_(size), data_(data), offset_(offset), fd_(fd) {}

Storage::~Storage() {
  if (arena_ != nullptr) arena_->Free(ArenaRange{offset_, size_});
  if (pool_ != nullptr) pool_->Free(PoolRange{offset_, size_, data_});
}

}  // namespace sharegpu
