#include "core/memory_manager.h"

#include "common/log.h"
#include "core/buffer_object.h"

namespace sharegpu {

Result<std::shared_ptr<MemoryManager>> MemoryManager::Create(const std::string& name,
                                                             uint64_t vram_size,
                                                             CacheMode cache_mode) {
  using R = Result<std::shared_ptr<MemoryManager>>;
  auto arena = Arena::Create("sharegpu-vram:" + name, vram_size);
  if (!arena) return R::Error(arena.status());
  return std::make_shared<MemoryManager>(name, std::shared_ptr<Arena>(std::move(arena).value()),
                                         cache_mode);
}

MemoryManager::MemoryManager(std::string name, std::shared_ptr<Arena> arena, CacheMode cache_mode)
    : name_(std::move(name)), arena_(std::move(arena)), cache_mode_(cache_mode) {}

namespace {
// Storage whose lifetime also pins what it was carved from (the arena).
struct StorageHolder {
  std::shared_ptr<Arena> arena;
  std::shared_ptr<Storage> storage;
  ~StorageHolder() { storage.reset(); }  // free the range before the arena can go
};
}  // namespace

Result<std::shared_ptr<Storage>> MemoryManager::AllocateStorage(Placement placement, uint64_t size,
                                                                const BufferObject* requester,
                                                                bool may_evict) {
  using R = Result<std::shared_ptr<Storage>>;
  if (placement == Placement::kSystem) return Storage::CreateSystem("sharegpu-bo:" + name_, size);
  if (placement != Placement::kDevice) return R::Error(-EINVAL);

  for (;;) {
    auto storage = Storage::CreateDevice(*arena_, size);
    if (storage) {
      auto holder = std::make_shared<StorageHolder>();
      holder->arena = arena_;
      holder->storage = std::move(storage).value();
      Storage* raw = holder->storage.get();
      return std::shared_ptr<Storage>(holder, raw);
    }
    if (storage.status() != -ENOSPC || !may_evict) return storage;

    // VRAM is full: evict the least recently used buffer we can lock without waiting.
    std::vector<std::shared_ptr<BufferObject>> candidates;  // released after lru_mu_
    {
      std::lock_guard lock(lru_mu_);
      for (auto it = lru_.begin(); it != lru_.end();) {
        if (auto bo = it->ref.lock()) {
          candidates.push_back(std::move(bo));
          ++it;
        } else {
          it = lru_.erase(it);
        }
      }
    }
    bool evicted = false;
    for (const auto& victim : candidates) {
      if (victim.get() == requester || victim->pin_count() > 0) continue;
      if (!victim->resv().TryLock()) continue;  // busy or ours: not a victim now
      Status err = victim->placement() == Placement::kDevice ? victim->Move(Placement::kSystem)
                                                             : -EAGAIN;
      victim->resv().Unlock();
      if (err == kOk) {
        evictions_.fetch_add(1, std::memory_order_relaxed);
        Logf(LogLevel::kDebug, "%s: evicted %s to make room for %llu bytes", name_.c_str(),
             victim->name().c_str(), static_cast<unsigned long long>(size));
        evicted = true;
        break;
      }
    }
    if (!evicted) return R::Error(-ENOSPC);
  }
}

void MemoryManager::LruTouch(const std::shared_ptr<BufferObject>& bo) {
  std::lock_guard lock(lru_mu_);
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    if (it->bo == bo.get()) {
      lru_.erase(it);
      break;
    }
  }
  lru_.push_back({bo.get(), bo});
}

void MemoryManager::LruRemove(const BufferObject* bo) {
  std::lock_guard lock(lru_mu_);
  lru_.remove_if([bo](const LruEntry& e) { return e.bo == bo || e.ref.expired(); });
}

void MemoryManager::SetMoveListener(std::function<void(BufferObject&)> listener) {
  std::lock_guard lock(listener_mu_);
  move_listener_ = std::move(listener);
}

void MemoryManager::NotifyMoved(BufferObject& bo) {
  std::lock_guard lock(listener_mu_);
  if (move_listener_) move_listener_(bo);
}

MemoryStats MemoryManager::stats() const {
  return {evictions_.load(std::memory_order_relaxed), moves_.load(std::memory_order_relaxed),
          ghosts_.load(std::memory_order_relaxed)};
}

}  // namespace sharegpu
